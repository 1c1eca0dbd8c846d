"""asyncify() under trio, AnyIO (both backends) and uvloop; AnyIO's and trio's
worker-thread functions inside a call.

Skipped when trio/AnyIO/uvloop are not installed, except under `make test-python`
(CASYNCIFY_REQUIRE_DSPY=1), which installs them and makes a missing one fail."""

from __future__ import annotations

import asyncio
import threading
import time

import casyncify
import pytest
from casyncify import _anyio_compat, _calls, _loops
from conftest import eventually, require

trio = require("trio")
anyio = require("anyio")

#: The ways to run an async main: (name, runner(afn) -> result).
RUNNERS = {
    "trio": lambda afn: trio.run(_fail_after_trio, afn),
    "anyio-trio": lambda afn: anyio.run(_fail_after_anyio, afn, backend="trio"),
    "anyio-asyncio": lambda afn: anyio.run(_fail_after_anyio, afn, backend="asyncio"),
}
ANYIO_BACKENDS = ["asyncio", "trio"]


async def _fail_after_trio(afn):
    with trio.fail_after(20):  # a hang fails the test instead of the suite
        return await afn()


async def _fail_after_anyio(afn):
    with anyio.fail_after(20):
        return await afn()


def run_anyio(afn, backend: str):
    return anyio.run(_fail_after_anyio, afn, backend=backend)


# ---------------------------------------------------------------------------
# 1. asyncify under trio (bare and through AnyIO), asyncio and uvloop still work
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("runner", RUNNERS)
def test_result_context_and_exception_under_each_loop(runner, make_pool):
    pool = make_pool(2)
    err = KeyError("boom")

    def work(x):
        return x * 2, casyncify.get("model"), threading.current_thread() is threading.main_thread()

    def failing():
        raise err

    async def main():
        with casyncify.context(model="gpt"):
            got = await casyncify.asyncify(work, pool=pool)(21)
        try:
            await casyncify.asyncify(failing, pool=pool)()
        except KeyError as e:
            return got, e

    got, caught = RUNNERS[runner](main)
    assert got == (42, "gpt", False), "ran on a worker with the caller's overrides"
    assert caught is err, "the very exception object"
    assert eventually(lambda: not _calls.registry), "no record left behind"


def test_many_concurrent_calls_under_trio(make_pool):
    pool = make_pool(4)
    acall = casyncify.asyncify(lambda i: (i, casyncify.get("i")), pool=pool)
    results = []

    async def one(i):
        with casyncify.context(i=i):
            results.append(await acall(i))

    async def main():
        async with trio.open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(one, i)

    RUNNERS["trio"](main)
    assert sorted(results) == [(i, i) for i in range(200)]
    assert eventually(lambda: not _calls.registry)


def test_uvloop_still_works(make_pool):
    uvloop = require("uvloop")
    pool = make_pool(2)

    async def main():
        with casyncify.context(k="uv"):
            return await asyncio.gather(*[casyncify.asyncify(casyncify.get, pool=pool)("k") for _ in range(20)])

    assert uvloop.run(asyncio.wait_for(main(), 20)) == ["uv"] * 20


def test_no_event_loop_is_a_clear_error():
    coro = casyncify.asyncify(lambda: 1)()
    with pytest.raises(RuntimeError, match="no running event loop"):
        coro.send(None)


@pytest.mark.parametrize("backend", ANYIO_BACKENDS)
def test_cancel_scope_queued_call_never_runs(backend, make_pool, gate):
    pool = make_pool(1)
    ran = []
    ablock = casyncify.asyncify(gate.block, pool=pool)
    afn = casyncify.asyncify(lambda: ran.append(1), pool=pool)

    async def main():
        async with anyio.create_task_group() as tg:
            tg.start_soon(ablock)
            await anyio.sleep(0.05)
            with anyio.move_on_after(0.05) as scope:
                await afn()  # queued behind the blocker
            assert scope.cancelled_caught
            gate.open()
        await anyio.sleep(0.05)

    before = pool.stats()
    run_anyio(main, backend)
    assert ran == [], "a cancelled queued call never runs"
    after = pool.stats()
    assert after.cancelled - before.cancelled == 1


@pytest.mark.parametrize("backend", ANYIO_BACKENDS)
def test_cancel_scope_running_call_is_abandoned(backend, make_pool):
    pool = make_pool(1)
    started = threading.Event()
    saw_cancel = threading.Event()

    def long_call():
        started.set()
        time.sleep(0.6)  # busy, not looking: the awaiter must not wait for this
        if casyncify.cancel_requested():
            saw_cancel.set()

    along = casyncify.asyncify(long_call, pool=pool)

    async def main():
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(along)
                await anyio.to_thread.run_sync(started.wait, 5)
                t = time.perf_counter()
                scope.cancel()
        return time.perf_counter() - t

    released_after = run_anyio(main, backend)
    assert released_after < 0.3, "the awaiter did not wait for the 0.6 s call"
    assert saw_cancel.wait(2), "cancel_requested() became true inside the abandoned call"
    assert eventually(lambda: pool.stats().running == 0)
    assert pool.stats().abandoned == 1


def test_bare_trio_move_on_after_abandons(make_pool):
    pool = make_pool(1)
    stopped = threading.Event()

    def slow():
        while not casyncify.cancel_requested():
            time.sleep(0.005)
        stopped.set()

    async def main():
        with trio.move_on_after(0.05) as scope:
            await casyncify.asyncify(slow, pool=pool)()
        return scope.cancelled_caught

    assert RUNNERS["trio"](main) is True
    assert stopped.wait(2)


def test_trio_already_cancelled_submits_nothing(make_pool):
    pool = make_pool(1)
    ran = []

    async def main():
        with trio.CancelScope() as scope:
            scope.cancel()
            await casyncify.asyncify(lambda: ran.append(1), pool=pool)()

    RUNNERS["trio"](main)
    assert ran == [] and pool.stats().submitted == 0


def test_trio_pool_shutdown_cancels_queued_awaiters(gate):
    pool = casyncify.Pool(1)
    ablock = casyncify.asyncify(gate.block, pool=pool)
    afn = casyncify.asyncify(lambda: "ran", pool=pool)
    outcome = {}

    async def queued():
        try:
            await afn()
        except casyncify.CancelledError as e:
            outcome["queued"] = e

    async def main():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ablock)
            await trio.sleep(0.02)
            nursery.start_soon(queued)
            await trio.sleep(0.02)
            closer = threading.Thread(target=pool.close)
            closer.start()
            await trio.sleep(0.05)
            gate.open()
        closer.join(5)

    RUNNERS["trio"](main)
    assert isinstance(outcome.get("queued"), casyncify.CancelledError)


# ---------------------------------------------------------------------------
# 2. AnyIO's (and trio's) worker-thread functions inside a call
# ---------------------------------------------------------------------------


async def _on_the_loop(x):
    await anyio.sleep(0)
    return x, threading.current_thread() is threading.main_thread()


def _from_thread_calls():
    """What a call does through anyio.from_thread: run_sync, run, check_cancelled."""
    return (
        anyio.from_thread.run_sync(lambda: threading.current_thread() is threading.main_thread()),
        anyio.from_thread.run(_on_the_loop, "async"),
        anyio.from_thread.check_cancelled(),
    )


@pytest.mark.parametrize("backend", ANYIO_BACKENDS)
def test_from_thread_run_and_run_sync_reach_the_callers_loop(backend, make_pool):
    pool = make_pool(2)

    work = _from_thread_calls

    async def main():
        return await casyncify.asyncify(work, pool=pool)(), await anyio.to_thread.run_sync(work)

    ours, anyios = run_anyio(main, backend)
    assert ours == anyios == (True, ("async", True), None), "as inside anyio.to_thread.run_sync"


@pytest.mark.parametrize("backend", ANYIO_BACKENDS)
def test_from_thread_check_cancelled_raises_once_the_scope_is_cancelled(backend, make_pool):
    pool = make_pool(1)
    seen = {}

    def watcher(name):
        def run():
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    anyio.from_thread.check_cancelled()
                except BaseException as e:  # noqa: BLE001 - the backend's cancellation class
                    seen[name] = type(e)
                    return
                time.sleep(0.005)

        return run

    async def main():
        cancelled = anyio.get_cancelled_exc_class()
        with anyio.move_on_after(0.1):
            await casyncify.asyncify(watcher("casyncify"), pool=pool)()
        with anyio.move_on_after(0.1):
            await anyio.to_thread.run_sync(watcher("anyio"), abandon_on_cancel=True)
        return cancelled

    cancelled = run_anyio(main, backend)
    assert eventually(lambda: len(seen) == 2, timeout=5)
    assert seen == {"casyncify": cancelled, "anyio": cancelled}


def test_from_thread_under_plain_asyncio_inside_and_outside_a_cancel_scope(make_pool):
    # asyncio.run, not anyio.run: calls outside any AnyIO cancel scope share their
    # loop's marks; one inside a scope still gets the scope.
    pool = make_pool(1)
    seen = {}

    work = _from_thread_calls

    def watcher():
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                anyio.from_thread.check_cancelled()
            except BaseException as e:  # noqa: BLE001 - the backend's cancellation class
                seen["scope"] = type(e)
                return
            time.sleep(0.005)

    async def main():
        f = casyncify.asyncify(work, pool=pool)
        before = await f(), await f()
        with anyio.move_on_after(0.1):
            await casyncify.asyncify(watcher, pool=pool)()
        return before, await f(), await anyio.to_thread.run_sync(work), anyio.get_cancelled_exc_class()

    (first, second), after, anyios, cancelled = asyncio.run(main())
    assert first == second == after == anyios == (True, ("async", True), None)
    assert eventually(lambda: "scope" in seen, timeout=5)
    assert seen["scope"] is cancelled


def test_bare_trio_from_thread_functions(make_pool):
    pool = make_pool(1)

    async def on_loop():
        await trio.sleep(0)
        return threading.current_thread() is threading.main_thread()

    def work():
        return trio.from_thread.run_sync(lambda: "sync"), trio.from_thread.run(on_loop)

    async def main():
        return await casyncify.asyncify(work, pool=pool)()

    assert RUNNERS["trio"](main) == ("sync", True)


@pytest.mark.parametrize("backend", ANYIO_BACKENDS)
def test_the_marks_are_cleared_after_the_call(backend, make_pool):
    pool = make_pool(1)

    def plain():
        try:
            anyio.from_thread.run_sync(lambda: None)
        except RuntimeError as e:  # NoEventLoopError: not an AnyIO worker thread any more
            return type(e).__name__
        return "still marked"

    async def main():
        await casyncify.asyncify(lambda: anyio.from_thread.run_sync(lambda: None), pool=pool)()
        return pool.submit(plain).result(5)  # the same worker, a call without marks

    assert run_anyio(main, backend) != "still marked"


def test_sniffio_sees_no_async_library_inside_a_call(make_pool):
    sniffio = require("sniffio")
    pool = make_pool(1)

    def probe():
        try:
            return sniffio.current_async_library()
        except sniffio.AsyncLibraryNotFoundError:
            return None

    async def main():
        sniffio.current_async_library_cvar.set("asyncio")  # as AnyIO's from_thread tasks have it
        return await casyncify.asyncify(probe, pool=pool)()

    assert run_anyio(main, "asyncio") is None


def test_the_private_hooks_are_still_there():
    problems = _anyio_compat.check()
    assert not problems, (
        "AnyIO or trio changed the worker-thread state casyncify marks (see casyncify/_anyio_compat.py); "
        "from_thread calls inside casyncify calls would need a token: " + "; ".join(problems)
    )


@pytest.mark.parametrize("runner", RUNNERS)
def test_the_loop_is_found_without_sniffio_too(runner, make_pool, monkeypatch):
    monkeypatch.setattr(_loops, "sniffio", None)  # as when sniffio is not installed
    pool = make_pool(1)

    async def main():
        return await casyncify.asyncify(lambda: "found", pool=pool)()

    assert RUNNERS[runner](main) == "found"
    assert asyncio.run(main()) == "found"
