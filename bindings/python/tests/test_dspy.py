"""A real DSPy program through casyncify.asyncify.

Skipped when DSPy is not installed, except under `make test`, which installs it and sets
CASYNCIFY_REQUIRE_DSPY=1 so that a missing DSPy fails instead."""

from __future__ import annotations

import asyncio
import os

import casyncify
import pytest
from conftest import run

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


def test_readme_example_the_context_is_captured_when_the_call_runs(make_pool):
    """The README's DSPy example: a call made a task inside ``with dspy.context(lm=...)``
    runs with that LM; a bare coroutine made in the block and awaited after it runs
    with the default LM (the context is captured when the coroutine first runs)."""
    default_lm = DummyLM([{"answer": "default"}] * 10)
    block_lm = DummyLM([{"answer": "block"}] * 10)
    qa = dspy.Predict("question -> answer")
    aqa = casyncify.asyncify(qa, pool=make_pool(2))

    async def main():
        with dspy.context(lm=block_lm):
            big = asyncio.ensure_future(aqa(question="What is asyncify?"))  # the README's way
            bare = aqa(question="made in the block, awaited after it")
        small = aqa(question="And casyncify?")
        return [p.answer for p in await asyncio.gather(big, small, bare)]

    with dspy.context(lm=default_lm):
        assert run(main()) == ["block", "default", "default"]
