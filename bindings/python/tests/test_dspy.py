"""A real DSPy program through casyncify.asyncify.

Skipped when DSPy is not installed, except under `make test`, which installs it and sets
CASYNCIFY_REQUIRE_DSPY=1 so that a missing DSPy fails instead."""

from __future__ import annotations

import asyncio
import os

import pytest
from conftest import run

import casyncify

if os.environ.get("CASYNCIFY_REQUIRE_DSPY") == "1":
    import dspy
else:
    dspy = pytest.importorskip("dspy")
from dspy.utils import DummyLM  # noqa: E402


def test_dspy_program_sees_its_own_dspy_context(make_pool):
    lm_a = DummyLM([{"answer": "from A"}] * 20)
    lm_b = DummyLM([{"answer": "from B"}] * 20)
    qa = dspy.Predict("question -> answer")
    aqa = casyncify.asyncify(qa, pool=make_pool(4))
    alm = casyncify.asyncify(lambda: dspy.settings.lm, pool=make_pool(2))

    async def ask(lm, question):
        with dspy.context(lm=lm):  # DSPy keeps this in a ContextVar: the call inherits it
            await asyncio.sleep(0)
            prediction = await aqa(question=question)
            return prediction.answer, (await alm()) is lm

    async def main():
        return await asyncio.gather(*[ask(lm, str(i)) for i, lm in enumerate([lm_a, lm_b, lm_a, lm_b])])

    assert run(main()) == [("from A", True), ("from B", True), ("from A", True), ("from B", True)]
