"""Test setup: import the package from this checkout unless told to test the installed one.

    ASYNCIFY_LIBRARY=$PWD/target/release/libasyncify.so python -m pytest bindings/python/tests -q

CASYNCIFY_TEST_INSTALLED=1 tests the ``casyncify`` installed in the interpreter instead.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import threading
import time
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
REPO_ROOT = PACKAGE_ROOT.parent.parent
if not os.environ.get("CASYNCIFY_TEST_INSTALLED"):
    sys.path.insert(0, str(PACKAGE_ROOT))

import casyncify  # noqa: E402


def require(name: str):
    """Import an optional test dependency: skip without it, except under `make
    test-python` (CASYNCIFY_REQUIRE_DSPY=1), which installs them all, so there a
    missing one fails instead."""
    if os.environ.get("CASYNCIFY_REQUIRE_DSPY") == "1":
        import importlib

        return importlib.import_module(name)
    return pytest.importorskip(name)


def run(coro, timeout: float = 20.0):
    """asyncio.run with a safety timeout, so a hang fails the test instead of the suite."""

    async def guarded():
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(guarded())


def eventually(predicate, timeout: float = 3.0, step: float = 0.005) -> bool:
    """Poll ``predicate`` (collecting garbage each time) until true or timeout."""
    deadline = time.monotonic() + timeout
    while True:
        gc.collect()
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(step)


class Gate:
    """A blocker for a pool: ``gate.block`` runs until ``gate.open()``."""

    def __init__(self):
        self.started = threading.Event()
        self.release = threading.Event()

    def block(self, *_a, **_k):
        self.started.set()
        if not self.release.wait(10):
            raise RuntimeError("gate never opened")
        return "gate"

    def open(self):
        self.release.set()


@pytest.fixture
def make_pool():
    pools = []

    def make(n: int = 4, **kw) -> casyncify.Pool:
        p = casyncify.Pool(n, **kw)
        pools.append(p)
        return p

    yield make
    for p in pools:
        p.close(timeout=10)


@pytest.fixture
def gate():
    g = Gate()
    yield g
    g.open()


@pytest.fixture(autouse=True)
def clean_overrides():
    """Each test starts, and leaves the next one, without casyncify overrides."""
    from casyncify import _overrides

    token = _overrides.current.set(_overrides.ROOT)
    yield
    _overrides.current.reset(token)
