"""Process exit with calls still running: never a crash, hang or abort.

Each scenario runs in a fresh interpreter (a subprocess) and checks its exit status and stderr. The
interpreter ends a worker thread that tries to take the GIL once finalization has begun (CPython
3.9-3.13 call pthread_exit there); that must end the thread quietly, not abort the process with
"FATAL: exception not rethrown". Each scenario runs CASYNCIFY_EXIT_RUNS times (3 here, 20 in
`make stress`), as the failure depended on timing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import PACKAGE_ROOT

RUNS = int(os.environ.get("CASYNCIFY_EXIT_RUNS", "3"))

PRELUDE = f"""
import asyncio, os, sys, threading, time
if not os.environ.get("CASYNCIFY_TEST_INSTALLED"):
    sys.path.insert(0, {str(PACKAGE_ROOT)!r})
import casyncify
casyncify.configure(exit_timeout=0.3)
started = threading.Event()
"""

# A call that keeps waking up: each wake-up re-takes the GIL.
SLEEPER = """
def work():
    started.set()
    while True:
        time.sleep(0.005)
"""

# The README's advice: poll cancel_requested() (a ctypes call: the GIL is dropped and re-taken).
POLLER = """
def work():
    started.set()
    while not casyncify.cancel_requested():
        time.sleep(0.001)
"""

ASYNCIO_MAIN = """
async def main():
    asyncio.ensure_future(casyncify.asyncify(work)())
    await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
asyncio.run(main())
print("main done", flush=True)
"""

SUBMIT_MAIN = """
future = casyncify.submit(work)
assert started.wait(10)
print("main done", flush=True)
"""

# A closed limiter, still held, with a call running and one waiting for it: its C
# limiter goes with the object, during the interpreter's teardown.
LIMITED_MAIN = """
lim = casyncify.Limiter(1, name="at-exit")
ex = casyncify.Executor(limiter=lim)
running = ex.submit(work)
waiting = ex.submit(work)
assert started.wait(10)
lim.close()
print("main done", flush=True)
"""

# Values set on a worker outside any call (a done-callback of a submit() future runs there) are
# released while the worker still has its thread state, before its stop hook.
SET_ON_WORKER = """
class Value:
    def __del__(self):
        pass

def noop():
    return 1

def on_done(future):
    casyncify.set("set-on-worker", Value())

pool = casyncify.Pool(2, keep_alive=0.05)
for _ in range(20):
    f = pool.submit(noop)
    f.add_done_callback(on_done)
    f.result()
time.sleep(0.3)  # the workers leave on keep-alive
pool.close()
print("main done", flush=True)
"""


def run_script(body: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    script = textwrap.dedent(PRELUDE) + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ.copy(),
    )


def check_clean_exit(proc: subprocess.CompletedProcess, expected: int = 0) -> None:
    detail = f"exit status {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    assert proc.returncode == expected, detail
    assert "FATAL" not in proc.stderr and "Fatal Python error" not in proc.stderr, detail
    assert "main done" in proc.stdout or expected != 0, detail


@pytest.mark.parametrize(
    "work, main",
    [
        (SLEEPER, ASYNCIO_MAIN),
        (POLLER, ASYNCIO_MAIN),
        (SLEEPER, SUBMIT_MAIN),
        (POLLER, SUBMIT_MAIN),
        (SLEEPER, LIMITED_MAIN),
    ],
    ids=[
        "asyncify-sleeping",
        "asyncify-polling-cancel",
        "submit-sleeping",
        "submit-polling-cancel",
        "closed-limiter-sleeping",
    ],
)
def test_exit_with_a_call_still_running_exits_zero(work: str, main: str) -> None:
    for _ in range(RUNS):
        check_clean_exit(run_script(work + main))


def test_exit_after_ctrl_c_with_a_call_still_running_is_a_normal_keyboard_interrupt() -> None:
    body = (
        SLEEPER
        + """
future = casyncify.submit(work)
assert started.wait(10)
print("running", flush=True)
time.sleep(60)
"""
    )
    script = textwrap.dedent(PRELUDE) + textwrap.dedent(body)
    for _ in range(RUNS):
        proc = subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "running"
        time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        # CPython ends an uncaught KeyboardInterrupt by re-raising SIGINT on itself: that status, and
        # no other signal (an abort would be SIGABRT).
        assert proc.returncode == -signal.SIGINT, (proc.returncode, err)
        assert "KeyboardInterrupt" in err and "FATAL" not in err, err


def test_values_set_on_a_worker_outside_calls_are_released_before_it_exits() -> None:
    for _ in range(RUNS):
        check_clean_exit(run_script(SET_ON_WORKER))


def test_deep_recursion_works_on_a_worker_as_on_the_main_thread() -> None:
    """Workers get the platform's default stack (8 MiB on most systems), not 2 MiB: repr() of a
    20,000-deep list recurses in C (about 3 MiB of stack), which overflowed a 2 MiB worker."""
    body = """
sys.setrecursionlimit(1000000)
nested = []
for _ in range(20000):
    nested = [nested]
expected = len(repr(nested))  # fine on the main thread's stack
assert casyncify.submit(lambda: len(repr(nested))).result(timeout=60) == expected
with casyncify.Pool(1) as pool:
    assert pool.submit(lambda: len(repr(nested))).result(timeout=60) == expected
print("main done", flush=True)
"""
    check_clean_exit(run_script(body))


def test_pools_follow_threading_stack_size() -> None:
    """A program that raised threading.stack_size() gets that stack on the workers of the pools made
    after it: repr() of an 80,000-deep list needs more than 8 MiB."""
    body = """
import threading
sys.setrecursionlimit(1000000)
threading.stack_size(64 << 20)
nested = []
for _ in range(80000):
    nested = [nested]
with casyncify.Pool(1) as pool:
    assert pool.submit(lambda: len(repr(nested))).result(timeout=60) > 0
print("main done", flush=True)
"""
    check_clean_exit(run_script(body))
