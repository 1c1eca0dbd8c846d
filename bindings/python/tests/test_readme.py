"""Every Python example of the READMEs (this binding's and the repository's) runs as
written: each ```python block, in a fresh interpreter, against this checkout's package.

Blocks that need what a test cannot have (an OpenAI key) are listed in NOT_RUN with
where they are tested instead; a listed block that no longer exists fails the test."""

from __future__ import annotations

import os
import re

import pytest
from conftest import PACKAGE_ROOT, REPO_ROOT, require
from test_lifecycle import run_script

READMES = {"README.md": REPO_ROOT / "README.md", "bindings/python/README.md": PACKAGE_ROOT / "README.md"}

#: A line that marks a block not run here -> why (and where it is tested).
NOT_RUN = {
    'dspy.configure(lm=dspy.LM("openai/gpt-4o-mini"))': "calls OpenAI: tests/test_dspy.py runs it with DummyLMs",
}

#: A line of a block -> what its output must contain.
EXPECTED = {
    'per_model = casyncify.KeyedLimiter("model", max_running=2, rate=10)': ["gpt-4o calls waited", "gpt-4o: q3"],
    'per_model = casyncify.KeyedLimiter("model", max_running=1)': ["['gpt-4o', 'llama']"],
    "acall = casyncify.asyncify(call_gpt4, limiter=gpt4)": ["gpt-4o: 6 admitted, 0 waiting, cap 2"],
    "paused = casyncify.Pool(0)": ["expired after 0.05 s", "\n1\n"],
    "with casyncify.Pool(1, record_latency=True) as pool:": ["queue wait p50"],
}


def python_blocks() -> list[tuple[str, int, str]]:
    """``(readme, line, code)`` of every ```python block."""
    blocks = []
    for name, path in READMES.items():
        text = path.read_text()
        for m in re.finditer(r"^```python\n(.*?)^```$", text, re.M | re.S):
            blocks.append((name, text[: m.start()].count("\n") + 1, m.group(1)))
    return blocks


BLOCKS = python_blocks()


def test_every_block_is_found_and_the_lists_are_current():
    assert len(BLOCKS) >= 9
    codes = [code for _, _, code in BLOCKS]
    for line in list(NOT_RUN) + list(EXPECTED):
        assert any(line in code for code in codes), f"no README block has the line {line!r} any more"


@pytest.mark.parametrize(("readme", "line", "code"), BLOCKS, ids=[f"{r}:{n}" for r, n, _ in BLOCKS])
def test_readme_python_example_runs(readme, line, code):
    for marker, why in NOT_RUN.items():
        if marker in code:
            pytest.skip(f"not run: {why}")
    if "dspy" in code:
        require("dspy")
    if "opentelemetry" in code:
        require("opentelemetry.trace")
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    if os.environ.get("CASYNCIFY_TEST_INSTALLED"):  # the installed package, not this checkout's
        env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")
    out = run_script(code, timeout=120, env=env)
    assert out.returncode == 0, f"{readme}, line {line}:\n{out.stdout}\n{out.stderr}"
    for marker, expected in EXPECTED.items():
        if marker in code:
            for text in expected:
                assert text in out.stdout, f"{readme}, line {line}: no {text!r} in\n{out.stdout}"
