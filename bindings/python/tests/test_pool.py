"""Pools, stats, configure, thread hooks, bad input."""

from __future__ import annotations

import dataclasses
import threading
import time

import casyncify
import pytest
from casyncify import lowlevel as ll
from conftest import eventually


def test_stats_is_a_dataclass_with_exact_counts(make_pool, gate):
    pool = make_pool(1)
    s = pool.stats()
    assert dataclasses.is_dataclass(s)
    assert s == casyncify.Stats(limit=1, threads=0, idle_threads=0, queued=0, running=0,
                                submitted=0, completed=0, failed=0, cancelled=0, abandoned=0)  # fmt: skip
    pool.submit(lambda: 1).result(5)
    f = pool.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        f.result(5)
    pool.submit(gate.block)
    assert gate.started.wait(5)
    pool.submit(lambda: None).cancel()
    s = pool.stats()
    assert (s.running, s.queued) == (1, 0)
    gate.open()
    assert eventually(lambda: pool.stats().running == 0)
    s = pool.stats()
    assert (s.submitted, s.completed, s.failed, s.cancelled, s.abandoned) == (4, 2, 1, 1, 0)
    assert s.threads == 1 and s.limit == 1


def test_default_pool_stats_and_configure():
    pool = casyncify.default_pool()
    assert casyncify.stats() == pool.stats() or casyncify.stats().limit == pool.max_workers
    before = pool.max_workers
    try:
        casyncify.configure(max_workers=3)
        assert pool.max_workers == 3 and casyncify.stats().limit == 3
    finally:
        casyncify.configure(max_workers=before)
    assert casyncify.default_pool() is pool


def test_pool_context_manager_frees_on_exit():
    with casyncify.Pool(2) as pool:
        assert pool.submit(lambda: "x").result(5) == "x"
        assert not pool.closed
    assert pool.closed
    with pytest.raises(casyncify.ShutDownError) as e:
        pool.submit(lambda: 1)
    assert e.value.status == ll.E_SHUT_DOWN == -6 and e.value.message
    with pytest.raises(casyncify.ShutDownError):
        pool.stats()
    assert pool.close() is True, "closing twice is harmless"


def test_a_closed_pool_refuses_its_pointer_until_the_object_goes():
    # The asyncio path submits with the pool's pointer and no lock: a close()
    # between its read of the pointer and the library call must leave the memory
    # alive (the library refuses the submit), freed only with the Pool object.
    import gc
    import weakref

    pool = casyncify.Pool(1)
    ptr = pool._ptr
    assert pool.close(5) is True and pool.closed
    opts = ll.submit_options_init()
    opts.pool = ptr
    with pytest.raises(casyncify.ShutDownError):
        ll.submit(ll.WORK_FN(lambda arg, res: 0), 1, opts)
    assert ll.pool_close(ptr, 0) is True, "still a pool, shut down"
    gone = weakref.ref(pool)
    del pool
    gc.collect()
    assert gone() is None, "nothing else holds the object: its memory went with it"


def test_a_pool_cannot_be_copied():
    # A copy would shut down and free the same C pool again when collected.
    import copy

    pool = casyncify.Pool(1)
    with pytest.raises(TypeError, match="cannot be copied"):
        copy.copy(pool)
    with pytest.raises(TypeError, match="cannot be copied"):
        copy.deepcopy([pool])
    assert pool.submit(lambda: "still mine").result(5) == "still mine"
    assert pool.close(5) is True


def _submit_from_a_loop(wrapped, outcomes: list[str], go: threading.Barrier) -> None:
    import asyncio

    async def main() -> None:
        go.wait()
        for _ in range(200):
            try:
                outcomes.append(await wrapped())
            except casyncify.ShutDownError:
                outcomes.append("shut")
            except asyncio.CancelledError:
                outcomes.append("cancelled")  # queued when the close came

    asyncio.run(main())


def _submit_plainly(pool: casyncify.Pool, outcomes: list[str], go: threading.Barrier) -> None:
    import concurrent.futures

    go.wait()
    for _ in range(200):
        try:
            outcomes.append(pool.submit(lambda: "ok").result(5))
        except casyncify.ShutDownError:
            outcomes.append("shut")
        except concurrent.futures.CancelledError:
            outcomes.append("cancelled")  # queued when the close came


def test_submits_racing_a_close_get_a_result_or_shut_down_error():
    # Submitters on several threads (asyncio loops and plain submit()) while
    # another thread closes the pool: each call returns its result, or raises
    # ShutDownError (submitted after the close) or a cancellation (queued when it
    # came); nothing crashes and nothing is lost.
    for _ in range(20):
        pool = casyncify.Pool(2)
        wrapped = casyncify.asyncify(lambda: "ok", pool=pool)
        outcomes: list[str] = []
        go = threading.Barrier(4)
        threads = [
            threading.Thread(target=_submit_from_a_loop, args=(wrapped, outcomes, go)),
            threading.Thread(target=_submit_from_a_loop, args=(wrapped, outcomes, go)),
            threading.Thread(target=_submit_plainly, args=(pool, outcomes, go)),
        ]
        for t in threads:
            t.start()
        go.wait()
        time.sleep(0.002)
        assert pool.close(5) is True
        for t in threads:
            t.join(10)
            assert not t.is_alive()
        assert len(outcomes) == 600
        assert set(outcomes) <= {"ok", "shut", "cancelled"}, set(outcomes)


def test_close_waits_for_running_and_cancels_queued(gate):
    pool = casyncify.Pool(1)
    running = pool.submit(gate.block)
    assert gate.started.wait(5)
    queued = pool.submit(lambda: "never")
    threading.Timer(0.1, gate.open).start()
    t = time.perf_counter()
    assert pool.close(timeout=5) is True
    assert time.perf_counter() - t >= 0.05, "waited for the running call"
    assert running.result(0) == "gate"
    assert queued.cancelled()


def test_close_with_a_timeout_returns_false_while_calls_run(gate):
    pool = casyncify.Pool(1)
    pool.submit(gate.block)
    assert gate.started.wait(5)
    assert pool.close(timeout=0.05) is False
    gate.open()


def test_close_from_its_own_worker_is_refused(make_pool):
    pool = make_pool(1)
    fut = pool.submit(pool.close)
    with pytest.raises(casyncify.WouldDeadlockError) as e:
        fut.result(5)
    assert e.value.status == ll.E_WOULD_DEADLOCK
    assert not pool.closed


def test_max_workers_property_raise_and_pause(make_pool):
    pool = make_pool(0)  # paused
    fut = pool.submit(lambda: "ran")
    time.sleep(0.05)
    assert not fut.done() and pool.stats().queued == 1
    pool.max_workers = 2  # raising starts queued calls at once
    assert fut.result(5) == "ran"
    assert pool.max_workers == 2
    pool.max_workers = casyncify.UNBOUNDED
    assert pool.max_workers == 2**32 - 1


def test_queue_bound_gives_busy(make_pool, gate):
    pool = make_pool(1, max_queued=1)
    pool.submit(gate.block)
    assert gate.started.wait(5)
    pool.submit(lambda: None)
    with pytest.raises(casyncify.BusyError) as e:
        pool.submit(lambda: None)
    assert e.value.status == ll.E_BUSY and e.value.message


def test_bad_pool_arguments(make_pool):
    with pytest.raises(ValueError):
        casyncify.Pool(-1)
    with pytest.raises(ValueError):
        casyncify.Pool(2**32)
    with pytest.raises(TypeError):
        casyncify.Pool("4")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        casyncify.Pool(1, keep_alive=0)
    pool = make_pool(1)
    with pytest.raises(ValueError):
        pool.max_workers = -3
    with pytest.raises(TypeError):
        casyncify.asyncify(42)  # type: ignore[arg-type]


def test_thread_hooks_give_workers_a_lasting_thread_state():
    local = threading.local()

    def visit():
        n = getattr(local, "n", 0) + 1  # threading.local lives in the thread state
        local.n = n
        return n, threading.get_ident()

    with casyncify.Pool(1) as pool:
        runs = [pool.submit(visit).result(5) for _ in range(5)]
    assert len({ident for _, ident in runs}) == 1, "one worker"
    assert [n for n, _ in runs] == [1, 2, 3, 4, 5], "its thread state survived between calls"

    with casyncify.Pool(1, thread_hooks=False) as pool:
        runs = [pool.submit(visit).result(5) for _ in range(5)]
    assert [n for n, _ in runs] == [1] * 5, "without hooks each call gets a fresh thread state"


def test_workers_leave_after_keep_alive_and_run_the_stop_hook():
    from casyncify import _lifecycle

    with casyncify.Pool(2, keep_alive=0.05) as pool:
        before = _lifecycle.life.live_workers
        pool.submit(time.sleep, 0.01).result(5)
        assert eventually(lambda: pool.stats().threads == 0, timeout=3)
        assert eventually(lambda: _lifecycle.life.live_workers <= before), "the stop hook dropped its thread state"


def test_low_level_errors_carry_status_and_message():
    with pytest.raises(casyncify.InvalidHandleError) as e:
        ll.release(0)
    assert e.value.status == -3 and "asyncify_release" in e.value.message
    with pytest.raises(casyncify.InvalidHandleError):
        ll.poll(123456789)
    with pytest.raises(casyncify.InvalidArgumentError) as e:
        ll.scope_exit(0)
    assert e.value.status == -2
    t1 = ll.scope_enter()
    t2 = ll.scope_enter()
    with pytest.raises(casyncify.ScopeMismatchError) as e:
        ll.scope_exit(t1)  # out of LIFO order: refused, nothing changes
    assert e.value.status == ll.E_SCOPE_MISMATCH
    ll.scope_exit(t2)
    ll.scope_exit(t1)
    with pytest.raises(casyncify.NotFoundError) as e:
        ll.override_get("no such key")
    assert e.value.status == -4 and isinstance(e.value, KeyError)
    assert "ASYNCIFY_E_NOT_FOUND" in str(e.value)
    err = casyncify.Error(-7, "custom")
    assert (err.status, err.message) == (-7, "custom")


def test_low_level_task_round_trip():
    out = []
    cb = ll.WORK_FN(lambda arg, res: out.append(arg) or 7)
    h = ll.submit(cb, 42)
    status, result, code = ll.wait(h, 5)
    assert (status, code, out) == (ll.FAILED, 7, [42])
    ll.release(h)
    with pytest.raises(casyncify.InvalidHandleError):
        ll.release(h)  # double release
    opts = ll.submit_options_init()
    pool = ll.pool_new(0)  # paused: the task stays queued
    opts.pool = pool
    h = ll.submit(cb, 1, opts)
    with pytest.raises(casyncify.TimeoutError) as e:
        ll.wait(h, 0.01)
    assert isinstance(e.value, TimeoutError) and e.value.status == ll.TIMEOUT
    assert ll.cancel(h) == ll.CANCELLED
    assert ll.poll(h)[0] == ll.CANCELLED
    ll.release(h)
    assert ll.pool_free(pool, 1) is True


def test_low_level_context_readers_and_pool_close():
    empty = ll.context_empty()
    ctx = ll.context_with(empty, "b", b"bytes")
    ctx2 = ll.context_with_ptr(ctx, "a", 0x1234)
    try:
        assert ll.context_count(ctx2) == 2
        assert ll.context_get(ctx2, "b") == b"bytes"
        assert ll.context_get_ptr(ctx2, "a") == 0x1234
        assert ll.context_get_ptr_ex(ctx2, "a") == (0x1234, 0)
        assert ll.context_visit(ctx2) == [("a", 0x1234), ("b", b"bytes")]
        with pytest.raises(casyncify.NotFoundError):
            ll.context_get(ctx2, "c")
    finally:
        ll.context_free(ctx2)
        ll.context_free(ctx)
        ll.context_free(empty)
    pool = ll.pool_new(1)
    assert ll.pool_close(pool, 1) is True  # quiet: joined; callable again
    assert ll.pool_close(pool, 1) is True
    assert ll.pool_free(pool, 0) is True


def test_thread_name_is_checked():
    with pytest.raises(ValueError, match="NUL"):
        casyncify.Pool(1, thread_name="bad\0name")
    with pytest.raises(TypeError):
        casyncify.Pool(1, thread_name=b"bytes")  # type: ignore[arg-type]


def test_close_timeouts_inf_waits_forever_and_nan_is_refused(gate):
    pool = casyncify.Pool(1)
    running = pool.submit(gate.block)
    assert gate.started.wait(5)
    for bad in (float("nan"), "soon", [1]):
        with pytest.raises((ValueError, TypeError)):
            pool.close(bad)  # type: ignore[arg-type]
    assert not pool.closed and pool.submit(lambda: 1), "a refused close() changes nothing"
    closer = threading.Thread(target=lambda: results.append(pool.close(float("inf"))))
    results: list = []
    closer.start()
    closer.join(0.4)
    assert closer.is_alive() and not results, "inf: still waiting for the running call"
    gate.open()
    closer.join(5)
    assert results == [True] and running.result(0) == "gate"


def test_keyboard_interrupt_during_close_leaves_the_pool_closing(gate):
    import _thread

    from casyncify import _lifecycle

    pool = casyncify.Pool(1)
    running = pool.submit(gate.block)
    assert gate.started.wait(5)
    threading.Timer(0.3, _thread.interrupt_main).start()  # Ctrl-C while close() waits
    t = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        pool.close()  # no timeout: only the interrupt ends this wait
    assert time.perf_counter() - t < 2, "the wait woke for Ctrl-C (it wakes every 100 ms)"
    assert pool.closed and pool in _lifecycle.open_pools, "closing, not freed: exit would still close it"
    with pytest.raises(casyncify.ShutDownError):
        pool.submit(lambda: 1)
    gate.open()
    assert pool.close(5) is True, "close() again resumes the wait, then frees"
    assert running.result(0) == "gate" and pool not in _lifecycle.open_pools
    assert pool.close() is True


def test_configure_checks_every_argument_before_changing_anything():
    from casyncify import _lifecycle

    limit = casyncify.default_pool().max_workers
    exit_timeout = _lifecycle.life.exit_timeout
    bad_calls = [
        dict(max_workers=limit + 1, exit_timeout=float("nan"), configure_probe=1),
        dict(max_workers=-1, exit_timeout=1.0, configure_probe=1),
        dict(max_workers=limit + 1, exit_timeout=-1, configure_probe=1),
        dict(exit_timeout="soon", configure_probe=1),
    ]
    for kwargs in bad_calls:
        with pytest.raises((ValueError, TypeError)):
            casyncify.configure(**kwargs)
        assert casyncify.default_pool().max_workers == limit
        assert _lifecycle.life.exit_timeout == exit_timeout
        assert casyncify.get("configure_probe") is None
    try:
        casyncify.configure(exit_timeout=float("inf"))
        assert _lifecycle.life.exit_timeout is None, "inf: exit waits for as long as calls run"
    finally:
        _lifecycle.life.exit_timeout = exit_timeout


def test_making_the_default_pool_holds_no_lock_a_finalizer_may_need():
    """Making a pool may run GC finalizers; one that uses the default pool must not
    wait on a lock held while the default pool is being made (a deadlock before)."""
    from test_lifecycle import run_script

    proc = run_script(
        """
        import gc, casyncify
        from casyncify import _pools
        gc.disable()

        class UsesCasyncifyWhenCollected:
            def __del__(self):
                print("finalizer:", casyncify.submit(lambda: "ok").result(5), flush=True)

        class CollectingPool(_pools.Pool):
            def __init__(self, *args, **kwargs):
                junk = UsesCasyncifyWhenCollected()
                junk.cycle = junk
                del junk
                if not getattr(CollectingPool, "done", False):
                    CollectingPool.done = True
                    gc.collect()  # runs the finalizer here, while the default pool is being made
                super().__init__(*args, **kwargs)

        _pools.Pool = CollectingPool
        print("main:", casyncify.submit(lambda: "ok").result(5), flush=True)
        casyncify.configure(**{"k": 1})
        print("get:", casyncify.get("k"), flush=True)
        """,
        timeout=20,
    )
    assert proc.returncode == 0, proc.stderr
    assert "finalizer: ok" in proc.stdout and "main: ok" in proc.stdout and "get: 1" in proc.stdout
