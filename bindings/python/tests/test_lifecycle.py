"""Loading, the declared ABI, interpreter exit, fork."""

from __future__ import annotations

import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time

import casyncify
import pytest
from casyncify import _ffi
from casyncify import lowlevel as ll
from conftest import PACKAGE_ROOT, REPO_ROOT

HEADER = REPO_ROOT / "include" / "asyncify.h"


def run_script(code: str, timeout: float = 20, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_ROOT), full_env.get("PYTHONPATH", "")])
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


def header_functions() -> set[str]:
    text = HEADER.read_text()
    return set(re.findall(r"^(?:asyncify_status|const char \*|bool)\s*(asyncify_\w+)\(", text, re.M))


@pytest.mark.skipif(not HEADER.exists(), reason="needs the repository's include/asyncify.h")
def test_every_function_of_the_header_is_declared_and_wrapped():
    declared = header_functions()
    assert len(declared) >= 46
    assert declared == set(_ffi.SIGNATURES)
    for name in declared:
        for handle in (_ffi.lib, _ffi.plib):
            f = getattr(handle, name)
            assert f.argtypes is not None and f.restype is not None or name == "asyncify_version"
        assert callable(ll.WRAPPED[name])


@pytest.mark.skipif(shutil.which("nm") is None, reason="needs nm")
def test_every_exported_symbol_is_declared():
    out = subprocess.run(
        ["nm", "-D", "--defined-only", _ffi.library_path], check=False, capture_output=True, text=True
    ).stdout
    exported = {line.split()[-1] for line in out.splitlines() if " asyncify_" in line}
    assert exported == set(_ffi.SIGNATURES)


def test_import_error_names_every_path_tried(tmp_path):
    pkg = tmp_path / "site" / "casyncify"
    shutil.copytree(PACKAGE_ROOT / "casyncify", pkg, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    r = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", "import casyncify"],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(pkg.parent), "ASYNCIFY_LIBRARY": "/nonexistent/libasyncify.so"},
        timeout=20,
    )
    assert r.returncode != 0
    assert "ImportError" in r.stderr
    assert "/nonexistent/libasyncify.so (ASYNCIFY_LIBRARY)" in r.stderr
    assert f"{pkg}/libasyncify.abi3.so (package directory)" in r.stderr
    assert "target/release/libasyncify.so (repository target/release)" in r.stderr


def test_library_is_found_through_the_environment_variable():
    r = run_script("import casyncify; print(casyncify.library_path)", env={"ASYNCIFY_LIBRARY": _ffi.library_path})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == _ffi.library_path


def test_interpreter_exit_refuses_cancels_and_waits():
    r = run_script(
        """
        import atexit, threading, time, casyncify
        pool = casyncify.Pool(1)
        started = threading.Event()
        def running():
            started.set()
            time.sleep(0.3)
            print("running call finished", flush=True)
        pool.submit(running)
        started.wait(10)  # running, not queued, when exit begins (a loaded machine is slow)
        pool.submit(print, "queued call ran", flush=True)
        casyncify.submit(time.sleep, 0.1)
        import casyncify._lifecycle as lifecycle
        def after_casyncify():
            try:
                casyncify.submit(print, "refused?")
            except casyncify.ShutDownError as e:
                print("refused after exit began:", e.status, flush=True)
        # atexit runs handlers last-in first-out: make this one run after casyncify's.
        atexit.unregister(lifecycle._at_exit)
        atexit.register(after_casyncify)
        atexit.register(lifecycle._at_exit)
        print("main done", flush=True)
        """
    )
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "main done" in out and "running call finished" in out
    assert "queued call ran" not in out
    assert "refused after exit began: -6" in out
    assert "Fatal" not in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_interpreter_exit_wait_is_bounded():
    t = time.perf_counter()
    r = run_script(
        """
        import time, casyncify
        casyncify.configure(exit_timeout=0.3)
        casyncify.submit(time.sleep, 30)
        time.sleep(0.05)
        print("main done", flush=True)
        """
    )
    elapsed = time.perf_counter() - t
    assert r.returncode == 0, r.stderr
    assert elapsed < 3, "exit waited exit_timeout (0.3 s), not for the 30 s call nor the 5 s default"
    assert "Fatal" not in r.stderr, r.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_multiprocessing_fork_child_uses_its_own_default_pool():
    r = run_script(
        """
        import asyncio, multiprocessing as mp, casyncify
        parent_pool = casyncify.Pool(2)
        with casyncify.context(k="parent"):
            assert casyncify.submit(casyncify.get, "k").result(5) == "parent"  # the default pool has workers
            assert parent_pool.submit(casyncify.get, "k").result(5) == "parent"

        def child(q):
            out = []
            with casyncify.context(k="child"):
                out.append(casyncify.submit(casyncify.get, "k").result(5))
                out.append(asyncio.run(casyncify.asyncify(casyncify.get)("k")))
            try:
                parent_pool.submit(print)
            except casyncify.ForkedError as e:
                out.append(("forked", e.status))
            q.put(out)

        ctx = mp.get_context("fork")
        q = ctx.Queue()
        p = ctx.Process(target=child, args=(q,))
        p.start()
        print(q.get(timeout=10))
        p.join(10)
        print("exitcode", p.exitcode)
        print(casyncify.submit(lambda: "parent still works").result(5))
        """
    )
    assert r.returncode == 0, r.stderr
    assert "['child', 'child', ('forked', -10)]" in r.stdout
    assert "exitcode 0" in r.stdout
    assert "parent still works" in r.stdout


def test_interpreter_exit_with_an_infinite_exit_timeout_waits_for_running_calls():
    r = run_script(
        """
        import time, casyncify
        casyncify.configure(exit_timeout=float("inf"))
        def running():
            time.sleep(0.3)
            print("running call finished", flush=True)
        casyncify.submit(running)
        time.sleep(0.05)
        print("main done", flush=True)
        """
    )
    assert r.returncode == 0, r.stderr
    assert "main done" in r.stdout and "running call finished" in r.stdout
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr, r.stderr


def test_ctrl_c_ends_the_exit_wait():
    import signal

    code = textwrap.dedent(
        """
        import threading, time, casyncify
        casyncify.configure(exit_timeout=60)
        started = threading.Event()
        def work():
            started.set()
            t = time.monotonic()
            while not casyncify.cancel_requested() and time.monotonic() - t < 30:
                time.sleep(0.01)
        casyncify.submit(work)
        started.wait(5)
        print("main done", flush=True)
        """
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout.readline().strip() == "main done"
        time.sleep(0.5)  # exit is waiting for the call now (up to 60 s)
        t = time.perf_counter()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert time.perf_counter() - t < 5, "the exit wait woke for Ctrl-C"
    assert "KeyboardInterrupt" in err and "Fatal" not in err, err


def test_one_timeout_rule_for_the_high_level_api_and_lowlevel(gate):
    """None and inf wait as long as it takes, below 0 is a poll, nan is refused: the
    same in lowlevel's waits as in TaskFuture and Pool.close (a negative timeout once
    meant "forever" in lowlevel and "poll" elsewhere)."""
    import math

    from casyncify import _convert

    ms = [_convert.milliseconds("t", t) for t in (None, math.inf, -1, -0.5, 0, 0.25, 2, 1e300)]
    assert ms == [-1, -1, 0, 0, 0, 250, 2000, 2**63 - 1], "the one conversion both APIs use"
    paused = ll.pool_new(0)  # its tasks stay queued
    opts = ll.submit_options_init()
    opts.pool = paused
    work = ll.WORK_FN(lambda _arg, _out: 0)
    handle = ll.submit(work, None, opts)
    pool = casyncify.Pool(1)
    running = pool.submit(gate.block)
    assert gate.started.wait(5)
    try:
        t = time.monotonic()
        with pytest.raises(casyncify.TimeoutError):
            ll.wait(handle, -1)
        with pytest.raises(concurrent.futures.TimeoutError):
            running.result(timeout=-1)
        assert pool.close(timeout=-1) is False, "the running call was not waited for"
        assert time.monotonic() - t < 2, "below 0 is a poll everywhere, never a wait forever"
        with pytest.raises(ValueError, match="nan"):
            ll.wait(handle, math.nan)
        with pytest.raises(ValueError, match="nan"):
            pool.close(math.nan)
        with pytest.raises(ValueError, match="nan"):
            running.result(timeout=math.nan)
    finally:
        gate.open()
        ll.pool_free(paused)
        ll.release(handle)
    assert running.result(timeout=math.inf) == "gate", "inf: as long as it takes (once an OverflowError)"
    assert pool.close(timeout=None) is True
