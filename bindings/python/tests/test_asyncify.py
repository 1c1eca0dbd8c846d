"""asyncify(): the dspy.asyncify contract, on asyncio, through a completion queue per loop."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import math
import threading
import time
import traceback

import casyncify
import pytest
from casyncify import _calls, _loops
from casyncify import lowlevel as ll
from conftest import Gate, eventually, run
from test_overrides import c_view


def test_result_args_kwargs_and_metadata(make_pool):
    def add(a, b, *, scale=1):
        """adds"""
        return (a + b) * scale

    aadd = casyncify.asyncify(add, pool=make_pool(2))
    assert asyncio.iscoroutinefunction(aadd)
    assert aadd.__name__ == "add" and aadd.__doc__ == "adds" and aadd.__wrapped__ is add
    assert run(aadd(1, 2, scale=10)) == 30

    @casyncify.asyncify
    def default_pool_fn():
        return threading.current_thread() is threading.main_thread()

    assert run(default_pool_fn()) is False, "ran on a worker thread"


def test_snapshot_at_call_time_queued(make_pool, gate):
    pool = make_pool(1)
    afn = casyncify.asyncify(lambda: (casyncify.get("k"), c_view("k")), pool=pool)
    ablock = casyncify.asyncify(gate.block, pool=pool)

    async def main():
        blocker = asyncio.create_task(ablock())
        casyncify.set("k", 1)
        call = asyncio.ensure_future(afn())  # captured now, while k == 1
        await asyncio.sleep(0.05)
        assert pool.stats().queued == 1, "the call is queued behind the blocker"
        casyncify.set("k", 2)  # later changes by the caller...
        casyncify.remove("k")
        gate.open()
        assert await blocker == "gate"
        return await call

    assert run(main()) == (1, 1), "...are invisible to the queued call, in Python and in C"


def test_snapshot_at_call_time_running(make_pool):
    pool = make_pool(1)
    started, proceed = threading.Event(), threading.Event()

    def fn():
        started.set()
        proceed.wait(5)
        return casyncify.get("k"), c_view("k")

    afn = casyncify.asyncify(fn, pool=pool)

    async def main():
        with casyncify.context(k="at call"):
            call = asyncio.ensure_future(afn())
            await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
            casyncify.set("k", "changed while running")
        proceed.set()
        return await call

    assert run(main()) == ("at call", "at call")


def test_snapshot_at_call_time_from_plain_threads(make_pool, gate):
    pool = make_pool(1)
    pool.submit(gate.block)
    casyncify.set("k", 1)
    fut = pool.submit(lambda: (casyncify.get("k"), c_view("k")))
    casyncify.set("k", 2)
    gate.open()
    assert fut.result(5) == (1, 1)


def test_no_leak_in_either_direction(make_pool):
    pool = make_pool(1)  # one worker: the second call reuses the thread of the first

    def messy():
        casyncify.set("a", "from task")  # Python side
        casyncify.remove("keep")
        casyncify.context(b="open scope").__enter__()  # a scope never closed
        ll.override_set("c_key", b"from task")  # C side, this thread's table
        ll.scope_enter()  # a C scope never closed
        return dict(casyncify.overrides()), ll.override_count()

    def observe():
        return dict(casyncify.overrides()), c_view("a"), c_view("c_key"), c_view("keep"), ll.override_count()

    amessy = casyncify.asyncify(messy, pool=pool)
    aobserve = casyncify.asyncify(observe, pool=pool)

    async def main():
        with casyncify.context(keep="caller", a="caller"):
            inside, count = await amessy()
            assert inside == {"a": "from task", "b": "open scope"}
            assert count == 3
            # Nothing reached the caller...
            assert dict(casyncify.overrides()) == {"keep": "caller", "a": "caller"}
            assert c_view("c_key") is None
        # ...nor the next call on the same worker, which sees only its own submitter's table.
        with casyncify.context(other=1):
            return await aobserve()

    mapping, a, c_key, keep, count = run(main())
    assert mapping == {"other": 1}
    assert (a, c_key, keep) == (None, None, None)
    assert count == 1


def test_nested_asyncify_inherits_the_workers_overrides(make_pool):
    pool = make_pool(2)
    ainner = casyncify.asyncify(lambda: (dict(casyncify.overrides()), c_view("outer"), c_view("inner")), pool=pool)

    def outer():
        casyncify.set("inner", "set by the outer call")
        # A nested event loop on the worker thread, as a sync DSPy program calling an async one would.
        return asyncio.run(ainner())

    aouter = casyncify.asyncify(outer, pool=pool)

    async def main():
        with casyncify.context(outer="caller"):
            return await aouter()

    mapping, c_outer, c_inner = run(main())
    assert mapping == {"outer": "caller", "inner": "set by the outer call"}
    assert (c_outer, c_inner) == ("caller", "set by the outer call"), "C code sees the same table"


def test_nested_submit_at_limit_one_runs_inline(make_pool):
    pool = make_pool(1)

    def inner():
        return casyncify.get("k"), threading.get_ident()

    def outer():
        casyncify.set("k", "outer's change")
        fut = pool.submit(inner)  # queued: the only worker is this one
        return fut.result(5), threading.get_ident()

    (k, inner_thread), outer_thread = run(casyncify.asyncify(outer, pool=pool)())
    assert k == "outer's change"
    assert inner_thread == outer_thread, "the waiting worker ran it inline instead of deadlocking"


@pytest.mark.parametrize("limit,n", [(4, 10), (8, 15)])
def test_limit_dspy_timing(make_pool, limit, n):
    """DSPy's own check: n tasks of 0.5 s under a limit take between
    floor(n/limit)*0.5 and ceil(n/limit)*0.5 + 1.0 seconds."""
    pool = make_pool(limit)
    active = 0
    peak = 0
    lock = threading.Lock()

    def task():
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.5)
        with lock:
            active -= 1

    atask = casyncify.asyncify(task, pool=pool)

    async def main():
        t = time.perf_counter()
        await asyncio.gather(*[atask() for _ in range(n)])
        return time.perf_counter() - t

    elapsed = run(main())
    assert math.floor(n / limit) * 0.5 < elapsed < math.ceil(n / limit) * 0.5 + 1.0
    assert peak == limit


def test_fifo_order(make_pool, gate):
    pool = make_pool(1)
    order = []
    ablock = casyncify.asyncify(gate.block, pool=pool)
    arecord = casyncify.asyncify(order.append, pool=pool)

    async def main():
        blocker = asyncio.create_task(ablock())
        await asyncio.sleep(0.02)
        tasks = [asyncio.create_task(arecord(i)) for i in range(30)]
        await asyncio.sleep(0.02)  # all submitted, in creation order
        gate.open()
        await asyncio.gather(blocker, *tasks)

    run(main())
    assert order == list(range(30))


def test_cancel_queued_never_runs(make_pool, gate):
    pool = make_pool(1)
    ran = []
    ablock = casyncify.asyncify(gate.block, pool=pool)
    afn = casyncify.asyncify(lambda: ran.append(1), pool=pool)

    async def main():
        blocker = asyncio.create_task(ablock())
        await asyncio.sleep(0.02)
        call = asyncio.create_task(afn())
        await asyncio.sleep(0.02)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        gate.open()
        await blocker
        await asyncio.sleep(0.05)

    before = pool.stats()
    run(main())
    assert ran == []
    after = pool.stats()
    assert after.cancelled - before.cancelled == 1
    assert after.completed - before.completed == 1  # the blocker only


def test_cancel_running_releases_the_awaiter_at_once(make_pool):
    pool = make_pool(1)
    started = threading.Event()
    saw_cancel = threading.Event()

    def long_call():
        started.set()
        time.sleep(0.6)  # busy, not looking: the awaiter must not wait for this
        if casyncify.cancel_requested():
            saw_cancel.set()
        return "ran to the end"

    along = casyncify.asyncify(long_call, pool=pool)

    async def main():
        call = asyncio.create_task(along())
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
        assert not casyncify.cancel_requested(), "false outside a call"
        t = time.perf_counter()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        return time.perf_counter() - t

    released_after = run(main())
    assert released_after < 0.25, "the awaiter did not wait for the 0.6 s call"
    assert saw_cancel.wait(2), "cancel_requested() became true inside the abandoned call"
    assert eventually(lambda: pool.stats().running == 0)
    assert pool.stats().abandoned == 1


def test_wait_for_timeout_abandons(make_pool):
    pool = make_pool(1)
    stop = threading.Event()

    def slow():
        while not casyncify.cancel_requested():
            time.sleep(0.005)
        stop.set()

    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(casyncify.asyncify(slow, pool=pool)(), 0.05)

    run(main())
    assert stop.wait(2)


def test_exception_reraised_as_the_same_object(make_pool):
    err = ValueError("boom")

    def failing():
        raise err

    async def main():
        try:
            await casyncify.asyncify(failing, pool=make_pool(1))()
        except ValueError as e:
            return e

    caught = run(main())
    assert caught is err
    frames = [f.name for f in traceback.extract_tb(caught.__traceback__)]
    assert "failing" in frames, "the worker's traceback is kept"
    assert make_pool.__class__  # keep fixtures alive


def test_base_exceptions_are_delivered_too(make_pool):
    def exit_call():
        raise SystemExit(3)

    async def main():
        try:
            await casyncify.asyncify(exit_call, pool=make_pool(1))()
        except SystemExit as e:
            return e.code

    assert run(main()) == 3, "a BaseException raised by the call reaches the awaiter"


def test_two_threads_with_their_own_loops_share_one_pool(make_pool):
    pool = make_pool(3)

    def who():
        time.sleep(0.001)
        return casyncify.get("thread"), c_view("thread")

    awho = casyncify.asyncify(who, pool=pool)
    results: dict[str, list] = {}
    errors = []

    def thread_body(name: str):
        async def main():
            with casyncify.context(thread=name):
                return await asyncio.gather(*[awho() for _ in range(150)])

        try:
            results[name] = run(main())
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=thread_body, args=(n,)) for n in ("A", "B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    for name in ("A", "B"):
        assert results[name] == [(name, name)] * 150


def test_a_burst_of_completions_costs_one_wakeup(make_pool):
    pool = make_pool(8)
    go = threading.Event()
    await_go = casyncify.asyncify(go.wait, pool=pool)

    async def main():
        state = _loops.loop_state(asyncio.get_running_loop())
        calls = [asyncio.ensure_future(await_go(5)) for _ in range(50)]
        await asyncio.sleep(0.02)  # every call submitted; none can finish before `go`
        wakeups = state.wakeups
        go.set()
        time.sleep(0.3)  # the loop is busy while they all complete
        assert await asyncio.gather(*calls) == [True] * 50
        return state.wakeups - wakeups, state

    woke, state = run(main())
    assert woke == 1, f"one wake-up drained all 50 completions (woke {woke} times)"
    assert not state.pending


def test_an_interrupt_in_a_woken_task_loses_no_other_completion(make_pool, gate):
    """Should a task woken by a drain raise KeyboardInterrupt, the tasks of the
    completions after it in the same batch are still woken."""
    pool = make_pool(1)
    ablock = casyncify.asyncify(gate.block, pool=pool)
    anoop = casyncify.asyncify(lambda: True, pool=pool)

    async def interrupting():
        await anoop()
        raise KeyboardInterrupt

    async def main():
        blocker = asyncio.ensure_future(ablock())
        assert await asyncio.to_thread(gate.started.wait, 5)
        calls = [asyncio.ensure_future(anoop()) for _ in range(10)]
        bad = asyncio.ensure_future(interrupting())
        calls += [asyncio.ensure_future(anoop()) for _ in range(10)]
        await asyncio.sleep(0.02)  # every call submitted, in this order, behind the blocker
        gate.open()
        time.sleep(0.3)  # the loop is busy while all 22 complete, in order: one drain takes them
        return bad, await asyncio.gather(blocker, *calls)

    loop = asyncio.new_event_loop()
    try:
        task = loop.create_task(main())
        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(task)
        done, _ = loop.run_until_complete(asyncio.wait({task}, timeout=10))
        assert task in done, "the calls after the interrupt were never woken"
        bad, results = task.result()
        assert results == ["gate"] + [True] * 20, "the 10 calls after the interrupt were woken too"
        assert isinstance(bad.exception(), KeyboardInterrupt)
    finally:
        loop.close()


def test_a_task_cancelled_with_a_message_gets_it(make_pool, gate):
    ablock = casyncify.asyncify(gate.block, pool=make_pool(1))

    async def main():
        task = asyncio.ensure_future(ablock())
        assert await asyncio.to_thread(gate.started.wait, 5)
        task.cancel("enough")
        try:
            await task
        except asyncio.CancelledError as e:
            return e.args
        finally:
            gate.open()

    assert run(main()) == ("enough",)


def test_records_and_handles_are_cleaned_up(make_pool):
    pool = make_pool(4)

    async def main():
        calls = [casyncify.asyncify(time.sleep, pool=pool)(0.001) for _ in range(200)]
        await asyncio.gather(*calls)
        state = _loops.loop_state(asyncio.get_running_loop())
        return dict(state.pending)

    assert run(main()) == {}
    assert eventually(lambda: not _calls.registry)


def test_loop_gone_frees_its_queue(make_pool):
    loop = asyncio.new_event_loop()
    loop.run_until_complete(casyncify.asyncify(lambda: 1, pool=make_pool(1))())
    state = _loops.loop_state(loop)
    loop.close()
    del loop
    assert eventually(lambda: state.cq == 0), "the loop was collected: its queue is freed"


def test_contextvars_of_other_libraries_follow_the_call(make_pool):
    """DSPy 3 keeps dspy.context() overrides in a ContextVar; any ContextVar flows."""
    thread_local_overrides = contextvars.ContextVar("context_overrides", default={})  # noqa: B039 - as DSPy

    class Settings:  # the shape of dspy.settings
        def __getattr__(self, name):
            return thread_local_overrides.get().get(name)

        def context(self, **kw):
            import contextlib

            @contextlib.contextmanager
            def cm():
                token = thread_local_overrides.set({**thread_local_overrides.get(), **kw})
                try:
                    yield
                finally:
                    thread_local_overrides.reset(token)

            return cm()

    settings = Settings()
    program = casyncify.asyncify(lambda q: f"{settings.lm}:{q}", pool=make_pool(2))

    async def main():
        async def one(lm, q):
            with settings.context(lm=lm):
                await asyncio.sleep(0)
                return await program(q)

        return await asyncio.gather(one("gpt-4o", 1), one("llama", 2), program(3))

    assert run(main()) == ["gpt-4o:1", "llama:2", "None:3"]


def test_shutdown_of_the_pool_cancels_queued_awaiters(gate):
    pool = casyncify.Pool(1)
    ablock = casyncify.asyncify(gate.block, pool=pool)
    afn = casyncify.asyncify(lambda: "ran", pool=pool)

    async def main():
        blocker = asyncio.create_task(ablock())
        await asyncio.sleep(0.02)
        queued = asyncio.create_task(afn())
        await asyncio.sleep(0.02)
        closer = threading.Thread(target=pool.close)
        closer.start()
        await asyncio.sleep(0.05)
        gate.open()
        assert await blocker == "gate"
        with pytest.raises(asyncio.CancelledError):
            await queued
        closer.join(5)
        with pytest.raises(casyncify.ShutDownError) as e:
            await afn()
        assert e.value.status == ll.E_SHUT_DOWN

    run(main())


def test_many_calls_release_everything(make_pool):
    gc.collect()
    pool = make_pool(4)
    afn = casyncify.asyncify(lambda i: i * 2, pool=pool)

    async def main():
        with casyncify.context(x=object()):
            return await asyncio.gather(*[afn(i) for i in range(2000)])

    assert run(main()) == [i * 2 for i in range(2000)]
    s = pool.stats()
    assert s.submitted == s.completed == 2000 and s.queued == 0
    assert Gate  # imported helper used elsewhere


def test_stress_threads_loops_submits_and_cancels(make_pool):
    """Four threads, each with its own loop, racing calls, futures and cancels on one
    pool: every call that completes saw its own thread's overrides, nothing leaks."""
    import random

    pool = make_pool(3)
    errors: list = []

    def thread_body(seed: int):
        rnd = random.Random(seed)
        aget = casyncify.asyncify(lambda: (time.sleep(rnd.random() * 0.002), casyncify.get("k"))[1], pool=pool)

        async def main():
            for _ in range(25):
                with casyncify.context(k=seed):
                    calls = [asyncio.ensure_future(aget()) for _ in range(16)]
                    await asyncio.sleep(rnd.random() * 0.003)
                    for c in calls:
                        if rnd.random() < 0.3:
                            c.cancel()
                    for r in await asyncio.gather(*calls, return_exceptions=True):
                        if not (r == seed or isinstance(r, asyncio.CancelledError)):
                            errors.append(r)
                    futs = [pool.submit(casyncify.get, "k") for _ in range(8)]
                for f in futs[::3]:
                    f.cancel()
                for f in futs:
                    if not f.cancelled() and f.result(5) != seed:
                        errors.append(("future", f.result()))

        try:
            run(main(), timeout=30)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=thread_body, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert eventually(lambda: pool.stats().running == 0 and pool.stats().queued == 0)
    s = pool.stats()
    assert s.submitted == s.completed + s.failed + s.cancelled + s.abandoned
    assert eventually(lambda: not _calls.registry), "every record was dropped"


def test_async_callables_are_refused_like_async_functions():
    async def coro_fn():
        return 1

    class AsyncCallable:
        async def __call__(self):
            return 1

    class SyncCallable:
        def __call__(self):
            return "sync"

    class HasAsyncCall:  # the class itself is a sync callable (it builds an instance)
        async def __call__(self):
            return 1

    for fn in (coro_fn, AsyncCallable(), AsyncCallable().__call__):
        with pytest.raises(TypeError, match="already a coroutine function"):
            casyncify.asyncify(fn)
    assert run(casyncify.asyncify(SyncCallable())()) == "sync"
    assert isinstance(run(casyncify.asyncify(HasAsyncCall)()), HasAsyncCall)


def test_asyncify_of_none_is_a_type_error(make_pool):
    with pytest.raises(TypeError, match="needs a callable"):
        casyncify.asyncify(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="needs a callable"):
        casyncify.asyncify(None, pool=make_pool(1))  # type: ignore[arg-type]
    decorate = casyncify.asyncify(pool=make_pool(1))  # no function: a decorator
    assert run(decorate(lambda: 5)()) == 5


def test_no_lock_is_held_while_add_reader_may_run_gc_finalizers():
    """A loop's first call registers its queue with loop.add_reader, which may run
    any Python: here it collects an older loop, whose cleanup must not wait on a
    lock held by the registration (a deadlock before: a non-reentrant lock)."""
    from test_lifecycle import run_script

    proc = run_script(
        """
        import asyncio, gc, casyncify
        gc.disable()  # the old loop goes only in the gc.collect() inside add_reader

        class CollectingLoop(asyncio.SelectorEventLoop):
            victims = []
            def add_reader(self, *args):
                CollectingLoop.victims.clear()  # the old loop is now garbage (a cycle)
                gc.collect()  # runs its finalizers here, inside the registration
                return super().add_reader(*args)

        old = asyncio.new_event_loop()
        assert old.run_until_complete(casyncify.asyncify(lambda: 1)()) == 1
        old.close()
        old.cycle = old
        CollectingLoop.victims.append(old)
        del old
        new = CollectingLoop()
        print(new.run_until_complete(casyncify.asyncify(lambda: 2)()))
        new.close()
        """,
        timeout=20,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "2", proc.stderr


def _asyncio_loop():
    return asyncio.new_event_loop()


def _uvloop_loop():
    from conftest import require

    return require("uvloop").new_event_loop()


# (loop factory, which loops are closed before being dropped). uvloop never frees
# a loop dropped unclosed, with or without casyncify (its handles keep it), so
# there every loop is closed; asyncio's are half closed, half just dropped.
DEAD_LOOP_KINDS = {"asyncio": (_asyncio_loop, lambda i: i % 2), "uvloop": (_uvloop_loop, lambda i: True)}


@pytest.mark.filterwarnings("ignore::ResourceWarning")  # the unclosed loops, on purpose
@pytest.mark.parametrize("kind", DEAD_LOOP_KINDS)
def test_loops_dropped_with_pending_calls_are_collected_with_everything_of_theirs(kind, make_pool, gate):
    import logging
    import os
    import weakref

    new_loop, closes = DEAD_LOOP_KINDS[kind]
    pool = make_pool(2)
    ablock = casyncify.asyncify(gate.block, pool=pool)
    logging.getLogger("asyncio").disabled = True  # "Task was destroyed but it is pending!"
    try:
        warm = new_loop()  # a library's one-time fds (uvloop keeps two) are not a leak
        warm.run_until_complete(asyncio.sleep(0))
        warm.close()
        del warm
        gc.collect()
        fds = len(os.listdir("/proc/self/fd"))
        loops, states = [], []
        for i in range(200):
            loop = new_loop()

            async def start():
                asyncio.ensure_future(ablock())  # pending when the loop stops
                await asyncio.sleep(0)

            loop.run_until_complete(start())
            states.append(weakref.ref(_loops.loop_state(loop)))
            if closes(i):
                loop.close()  # closed, then dropped; the others are just dropped
            loops.append(weakref.ref(loop))
            del loop, start
        assert pool.stats().submitted == 200, "each loop left a call pending (some are collected already)"
        gc.collect()  # every loop is garbage now: their queued calls are cancelled before the gate opens
        gate.open()
        assert eventually(lambda: pool.stats().running == 0 and pool.stats().queued == 0, timeout=10)
        assert eventually(lambda: all(r() is None for r in loops), timeout=10), "every loop was collected"
        assert eventually(lambda: all(r() is None for r in states)), "and its queue state"
        assert not _calls.registry, "no call record is left"
        assert eventually(lambda: len(os.listdir("/proc/self/fd")) <= fds), "no fd is left (eventfds, selectors)"
        assert pool.stats().completed <= 2, "the queued calls of the dead loops never ran"
    finally:
        logging.getLogger("asyncio").disabled = False
