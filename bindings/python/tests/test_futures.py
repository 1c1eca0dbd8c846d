"""submit() and Executor: concurrent.futures on the pool, carrying the submitter's overrides."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import threading
import time

import casyncify
import pytest
from conftest import eventually, run


def test_submit_returns_a_future_with_the_result():
    casyncify.set("k", "v")
    fut = casyncify.submit(lambda a, *, b: (a, b, casyncify.get("k")), 1, b=2)
    assert isinstance(fut, concurrent.futures.Future)
    assert fut.result(5) == (1, 2, "v")
    assert fut.done() and not fut.cancelled()


def test_submit_exception_is_the_same_object():
    err = KeyError("nope")

    def failing():
        raise err

    fut = casyncify.submit(failing)
    assert fut.exception(5) is err
    with pytest.raises(KeyError) as e:
        fut.result()
    assert e.value is err


def test_future_cancel_queued_never_runs(make_pool, gate):
    pool = make_pool(1)
    ran = []
    pool.submit(gate.block)
    fut = pool.submit(ran.append, 1)
    callbacks = []
    fut.add_done_callback(callbacks.append)
    assert fut.cancel() is True
    assert fut.cancelled() and fut.done() and callbacks == [fut]
    with pytest.raises(concurrent.futures.CancelledError):
        fut.result(1)
    gate.open()
    assert eventually(lambda: pool.stats().running == 0 and pool.stats().queued == 0)
    assert ran == []
    assert pool.stats().cancelled == 1


def test_future_cancel_running_abandons(make_pool):
    pool = make_pool(1)
    started = threading.Event()
    saw = threading.Event()

    def long_call():
        started.set()
        time.sleep(0.6)  # not looking: cancel must not wait for this
        if casyncify.cancel_requested():
            saw.set()

    fut = pool.submit(long_call)
    assert started.wait(5)
    t = time.perf_counter()
    assert fut.cancel() is True, "unlike ThreadPoolExecutor, a running call is abandoned"
    with pytest.raises(concurrent.futures.CancelledError):
        fut.result(1)
    assert time.perf_counter() - t < 0.25
    assert saw.wait(2)
    assert fut.cancel() is True, "cancelling twice is harmless"


def test_cancel_after_completion_is_refused():
    fut = casyncify.submit(lambda: 5)
    assert fut.result(5) == 5
    assert fut.cancel() is False
    assert not fut.cancelled()


def test_wait_and_as_completed(make_pool):
    pool = make_pool(4)
    futs = [pool.submit(time.sleep, 0.01 * (i % 3)) for i in range(12)]
    done = list(concurrent.futures.as_completed(futs, timeout=10))
    assert sorted(map(id, done)) == sorted(map(id, futs))
    d, nd = concurrent.futures.wait(futs, timeout=5)
    assert len(d) == 12 and not nd


def test_wait_sees_a_cancel(make_pool, gate):
    pool = make_pool(1)
    pool.submit(gate.block)
    fut = pool.submit(lambda: None)
    waiter = threading.Thread(target=lambda: concurrent.futures.wait([fut], timeout=5))
    waiter.start()
    time.sleep(0.02)
    fut.cancel()
    waiter.join(2)
    assert not waiter.is_alive(), "wait() was woken by the cancel"


def test_executor_carries_overrides_through_run_in_executor():
    ex = casyncify.Executor()

    async def main():
        loop = asyncio.get_running_loop()
        with casyncify.context(model="A"):
            a = loop.run_in_executor(ex, casyncify.get, "model")
        with casyncify.context(model="B"):
            b = loop.run_in_executor(ex, casyncify.get, "model")
        return await asyncio.gather(a, b)

    assert run(main()) == ["A", "B"]
    ex.shutdown()


def test_executor_with_its_own_pool_honours_the_limit():
    active = peak = 0
    lock = threading.Lock()

    def task(i):
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.02)
        with lock:
            active -= 1
        return i

    with casyncify.Executor(max_workers=2) as ex:
        assert list(ex.map(task, range(8))) == list(range(8))
        pool = ex._pool
    assert peak == 2
    assert pool.closed, "shutdown freed the executor's own pool"
    with pytest.raises(RuntimeError):
        ex.submit(task, 1)


def test_executor_shutdown_cancel_futures(make_pool, gate):
    pool = make_pool(1)
    ex = casyncify.Executor(pool=pool)
    ex.submit(gate.block)
    assert gate.started.wait(5)
    queued = [ex.submit(lambda: None) for _ in range(3)]
    threading.Timer(0.05, gate.open).start()
    ex.shutdown(wait=True, cancel_futures=True)
    assert all(f.cancelled() for f in queued)
    assert not pool.closed, "a pool given to the executor stays open"


def test_executor_arguments():
    with pytest.raises(ValueError):
        casyncify.Executor(max_workers=2, pool=casyncify.default_pool())
    with pytest.raises(ValueError):
        casyncify.Executor(max_workers=0)


def test_done_callbacks_run_once(make_pool):
    pool = make_pool(2)
    seen = []
    futs = [pool.submit(lambda i=i: i) for i in range(20)]
    for f in futs:
        f.add_done_callback(lambda f: seen.append(f.result()))
    concurrent.futures.wait(futs, timeout=5)
    assert eventually(lambda: len(seen) == 20)
    assert sorted(seen) == list(range(20))


def _garbage_after_failed_results(submit) -> int:
    """Objects only the cycle collector frees after five submit(...).result() that raised."""

    def boom():
        raise ValueError("boom")

    gc.collect()
    gc.disable()
    try:
        for _ in range(5):
            fut = submit(boom)
            try:
                fut.result(5)
            except ValueError:
                pass
            del fut
        return gc.collect()
    finally:
        gc.enable()


def test_a_result_that_raises_leaves_no_reference_cycle(make_pool):
    with concurrent.futures.ThreadPoolExecutor(1) as executor:
        baseline = _garbage_after_failed_results(executor.submit)
    assert _garbage_after_failed_results(make_pool(1).submit) <= baseline == 0
    assert _garbage_after_failed_results(casyncify.submit) == 0
