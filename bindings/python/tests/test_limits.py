"""Limiters, start deadlines and latency: casyncify.Limiter and KeyedLimiter over
asyncify_limiter_*, start_within and ExpiredError, Stats' expired and percentiles,
queue_wait() inside a call.

Timing bounds are generous (the suite runs on 2 noisy cores). Rate admissions and
expiries are observed while the test only sleeps or awaits: nothing here waits on
a handle to make the library progress."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import gc
import math
import statistics
import threading
import time
import weakref
from collections.abc import Awaitable, Callable

import casyncify
import pytest
from casyncify import _ffi
from conftest import eventually, require, run
from test_lifecycle import run_script


class Concurrency:
    """Counts, inside the callables, how many run at once (``most``) and which ran."""

    def __init__(self):
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0
        self.ran = []

    def run(self, tag=None, seconds=0.03):
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
            self.ran.append(tag)
        time.sleep(seconds)
        with self.lock:
            self.now -= 1
        return tag


# ---------------------------------------------------------------------------
# Limiter: the object
# ---------------------------------------------------------------------------


def test_limiter_settings_stats_and_repr():
    lim = casyncify.Limiter(4, rate=10, burst=2, name="gpt-4o")
    assert (lim.name, lim.max_running, lim.rate, lim.burst) == ("gpt-4o", 4, 10.0, 2)
    assert repr(lim) == "<casyncify.Limiter 'gpt-4o' max_running=4 rate=10/s burst=2>"
    s = lim.stats()
    assert (s.name, s.max_running, s.rate, s.burst) == ("gpt-4o", 4, 10.0, 2)
    assert (s.waiting, s.running, s.admitted, s.expired, s.cancelled_waiting) == (0, 0, 0, 0, 0)
    assert s.queue_wait == s.run == casyncify.Latency(0, 0.0, 0.0, 0.0, 0.0, 0.0)
    lim.set(rate=None)
    assert (lim.max_running, lim.rate, lim.burst) == (4, 0.0, 2), "what set() is not given stays"
    lim.set(max_running=None)
    assert lim.stats().max_running == casyncify.UNBOUNDED
    assert repr(lim) == "<casyncify.Limiter 'gpt-4o' max_running=None>"
    lim.close()
    lim.close()  # idempotent
    assert lim.closed and repr(lim) == "<casyncify.Limiter 'gpt-4o' closed>"
    with pytest.raises(casyncify.ShutDownError, match="closed"):
        lim.stats()
    with pytest.raises(casyncify.ShutDownError):
        lim.set(max_running=1)
    with casyncify.Limiter() as unnamed:
        assert unnamed.max_running == casyncify.UNBOUNDED and unnamed.name == ""
    assert unnamed.closed


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_running": -1}, ValueError),
        ({"max_running": 2**32}, ValueError),
        ({"max_running": 1.5}, TypeError),
        ({"max_running": True}, TypeError),
        ({"rate": -1}, ValueError),
        ({"rate": math.nan}, ValueError),
        ({"rate": math.inf}, ValueError),
        ({"rate": "10"}, TypeError),
        ({"burst": 0}, ValueError),
        ({"burst": 1.0}, TypeError),
        ({"name": b"x"}, TypeError),
        ({"name": "a\0b"}, ValueError),
    ],
)
def test_limiter_refuses_bad_settings(kwargs, error):
    with pytest.raises(error):
        casyncify.Limiter(**kwargs)
    lim = casyncify.Limiter(1)
    if "name" not in kwargs:
        with pytest.raises(error):
            lim.set(**kwargs)
        assert (lim.max_running, lim.rate, lim.burst) == (1, 0.0, 1), "a refused set() changes nothing"


def test_a_limiter_is_freed_with_its_object_and_calls_keep_theirs(make_pool, gate):
    pool = make_pool(2)
    lim = casyncify.Limiter(1, name="held")
    ex = casyncify.Executor(pool=pool, limiter=lim)
    holding = ex.submit(gate.block)
    assert gate.started.wait(5)
    waiting = ex.submit(lambda: "ran after close")
    assert eventually(lambda: lim.stats().waiting == 1)
    lim.close()  # the calls keep the C limiter: the waiting one is still admitted later
    with pytest.raises(casyncify.ShutDownError):
        ex.submit(lambda: None)
    gate.open()
    assert holding.result(5) == "gate" and waiting.result(5) == "ran after close"

    dropped = casyncify.Limiter(1)
    assert casyncify.asyncify(lambda: 1, pool=pool, limiter=dropped) is not None
    ref = weakref.ref(dropped)
    del dropped
    gc.collect()
    assert ref() is None, "nothing of the binding keeps a Limiter alive"


def test_a_closed_limiter_refuses_calls_and_is_freed_with_its_object(monkeypatch):
    # Limited calls are submitted with the limiter's pointer and no lock: a close()
    # between the pointer's read and the library call must leave the C limiter
    # alive, freed only with the Limiter object.
    from casyncify import lowlevel as ll

    freed: list[int] = []
    life, free = casyncify.Limiter.__del__.__defaults__

    def recording_free(ptr: int) -> int:
        freed.append(ptr)
        return free(ptr)

    monkeypatch.setattr(casyncify.Limiter.__del__, "__defaults__", (life, recording_free))
    lim = casyncify.Limiter(3, name="closing")
    ptr = lim._ptr
    lim.close()
    assert lim.closed and lim._ptr == ptr and freed == [], "close() frees nothing"
    with pytest.raises(casyncify.ShutDownError, match="closed"):
        casyncify.Executor(limiter=lim).submit(lambda: None)
    assert ll.limiter_stats_get(ptr).max_running == 3, "still a limiter after close()"
    gone = weakref.ref(lim)
    del lim
    gc.collect()
    assert gone() is None and freed == [ptr], "freed once, with the object"


def test_a_limiter_cannot_be_copied():
    # A copy would free the same C limiter again when collected.
    import copy

    lim = casyncify.Limiter(1)
    with pytest.raises(TypeError, match="cannot be copied"):
        copy.copy(lim)
    with pytest.raises(TypeError, match="cannot be copied"):
        copy.deepcopy({"lim": lim})
    assert lim.stats().max_running == 1


def _until_refused(call: Callable[[], Awaitable[str]], outcomes: list[str], go: threading.Barrier) -> None:
    """On this thread's own loop, awaits ``call()`` until the limiter refuses one;
    what each gave, in order."""

    async def main() -> None:
        go.wait(10)
        for _ in range(100_000):
            try:
                outcomes.append(await call())
            except casyncify.ShutDownError:
                outcomes.append("shut")
                return
            except BaseException as e:  # noqa: BLE001 - reported by the test's assertion
                outcomes.append(f"error: {e!r}")
                return

    asyncio.run(main())


def test_limited_calls_racing_a_close_get_a_result_or_shut_down_error(make_pool):
    # Submitters on several threads (two asyncio loops and an executor) call until
    # their limiter refuses them, while another thread closes it once each has had
    # a result: every call returns its result (it got in before the close, or
    # raced it) or raises ShutDownError (it came after); nothing crashes or is
    # lost, and a refused thread's calls had all succeeded before.
    pool = make_pool(2)
    for _ in range(20):
        lim = casyncify.Limiter(2)
        wrapped = casyncify.asyncify(lambda: "ok", pool=pool, limiter=lim)
        ex = casyncify.Executor(pool=pool, limiter=lim)
        outcomes: list[list[str]] = [[], [], []]
        go = threading.Barrier(4)

        async def plainly(ex: casyncify.Executor = ex) -> str:  # blocks its own thread's loop: nothing else runs there
            return ex.submit(lambda: "ok").result(5)

        threads = [
            threading.Thread(target=_until_refused, args=(wrapped, outcomes[0], go)),
            threading.Thread(target=_until_refused, args=(wrapped, outcomes[1], go)),
            threading.Thread(target=_until_refused, args=(plainly, outcomes[2], go)),
        ]
        for t in threads:
            t.start()
        go.wait(10)
        assert eventually(lambda seen=outcomes: all(seen)), "each thread had a result"
        lim.close()
        for t in threads:
            t.join(10)
            assert not t.is_alive()
        for seen in outcomes:
            assert seen[-1] == "shut" and len(seen) >= 2, seen[-3:]
            assert seen[:-1] == ["ok"] * (len(seen) - 1), [x for x in seen if x != "ok"]


# ---------------------------------------------------------------------------
# The cap: shared by pools and threads, raised, waiters cancelled
# ---------------------------------------------------------------------------


def test_a_limiter_of_cap_2_shared_by_3_pools_and_4_threads(make_pool):
    lim = casyncify.Limiter(2, name="shared")
    pools = [make_pool(3) for _ in range(3)]
    limited = Concurrency()
    beside = []  # (limited calls waiting, limited calls running) seen by calls without the limiter

    def unlimited():
        s = lim.stats()
        beside.append((s.waiting, limited.now))

    def submitter(t):
        futures = []
        for i in range(6):
            pool = pools[(t + i) % 3]
            futures.append(casyncify.Executor(pool=pool, limiter=lim).submit(limited.run, (t, i)))
            futures.append(pool.submit(unlimited))
        concurrent.futures.wait(futures, timeout=20)
        for f in futures:
            f.result(0)

    def asyncio_submitter(t):
        async def main():
            calls = [casyncify.asyncify(limited.run, pool=pools[i % 3], limiter=lim)((t, i)) for i in range(6)] + [
                casyncify.asyncify(unlimited, pool=pools[i % 3])() for i in range(6)
            ]
            await asyncio.gather(*calls)

        run(main())

    errors = []

    def guarded(target, t):
        try:
            target(t)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=guarded, args=(submitter, t)) for t in range(3)]
    threads.append(threading.Thread(target=guarded, args=(asyncio_submitter, 3)))
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert not errors, errors
    assert len(limited.ran) == 24 and len(beside) == 24
    assert limited.most == 2, f"{limited.most} calls held a limiter of cap 2 at once"
    assert any(waiting > 0 for waiting, _ in beside), "calls without the limiter ran while limited ones waited"
    s = lim.stats()
    assert (s.admitted, s.waiting, s.running) == (24, 0, 0)


def test_raising_the_cap_admits_waiting_calls_at_once(make_pool):
    pool = make_pool(4)
    lim = casyncify.Limiter(0, name="paused")  # 0: paused
    ex = casyncify.Executor(pool=pool, limiter=lim)
    futures = [ex.submit(time.monotonic) for _ in range(3)]
    time.sleep(0.1)
    assert not any(f.done() for f in futures), "a paused limiter admits nothing"
    assert lim.stats().waiting == 3 and pool.stats().queued == 3
    raised = time.monotonic()
    lim.set(max_running=3)
    started = [f.result(5) for f in futures]
    assert max(started) - raised < 0.25, f"admitted {max(started) - raised:.3f} s after the cap was raised"


@pytest.mark.parametrize("library", ["asyncio", "trio"])
def test_cancelling_a_call_that_waits_for_its_limiter(library, make_pool, gate):
    pool = make_pool(2)
    lim = casyncify.Limiter(1, name="one")
    ran = []
    hold = casyncify.asyncify(gate.block, pool=pool, limiter=lim)
    never = casyncify.asyncify(lambda: ran.append("never"), pool=pool, limiter=lim)

    if library == "asyncio":

        async def main():
            holder = asyncio.ensure_future(hold())
            await asyncio.sleep(0)
            assert await asyncio.to_thread(gate.started.wait, 5)
            waiter = asyncio.ensure_future(never())
            while lim.stats().waiting == 0:
                await asyncio.sleep(0.005)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            gate.open()
            assert await holder == "gate"

        run(main())
    else:
        trio = require("trio")

        async def main():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(hold)
                while not gate.started.is_set():
                    await trio.sleep(0.005)
                with trio.move_on_after(0.1) as scope:
                    await never()
                assert scope.cancelled_caught
                gate.open()

        trio.run(main)
    time.sleep(0.05)
    assert ran == [], "a call cancelled while it waited for its limiter never runs"
    s = lim.stats()
    assert (s.cancelled_waiting, s.admitted, s.running) == (1, 1, 0)
    assert pool.stats().cancelled == 1


# ---------------------------------------------------------------------------
# The rate
# ---------------------------------------------------------------------------


def test_a_rate_of_20_per_second_spaces_40_starts_over_2_seconds(make_pool):
    pool = make_pool(8)
    lim = casyncify.Limiter(rate=20, burst=1, name="20/s")
    ex = casyncify.Executor(pool=pool, limiter=lim)
    t0 = time.monotonic()
    futures = [ex.submit(time.monotonic) for _ in range(40)]
    while not all(f.done() for f in futures) and time.monotonic() - t0 < 10:  # only sleeps meanwhile
        time.sleep(0.05)
    starts = sorted(f.result(0) for f in futures)
    total = starts[-1] - t0
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    print(f"40 starts at 20/s: {total:.3f} s, gaps median {statistics.median(gaps) * 1e3:.1f} ms, "
          f"min {min(gaps) * 1e3:.1f} ms, max {max(gaps) * 1e3:.1f} ms")  # fmt: skip
    assert 1.85 <= total <= 3.0, f"40 calls at 20/s (burst 1) took {total:.3f} s, not about 1.95 s"
    assert 0.04 <= statistics.median(gaps) <= 0.065
    for k, start in enumerate(starts):  # a token every 50 ms, the first one at once: never early
        assert start - t0 >= k * 0.05 - 0.01, f"start {k} came {k * 0.05 - (start - t0):.3f} s early"
        assert start - t0 <= k * 0.05 + 0.5, f"start {k} came {start - t0 - k * 0.05:.3f} s late"
    assert lim.stats().admitted == 40


# ---------------------------------------------------------------------------
# Start deadlines
# ---------------------------------------------------------------------------


def _spawn_all(library, fns):
    """Run the async functions ``fns`` concurrently under ``library``; returns when all are done."""
    if library == "asyncio":

        async def main():
            await asyncio.gather(*(fn() for fn in fns))

        return run(main())
    if library == "trio":
        trio = require("trio")

        async def main():
            with trio.fail_after(20):
                async with trio.open_nursery() as nursery:
                    for fn in fns:
                        nursery.start_soon(fn)

        return trio.run(main)
    anyio = require("anyio")

    async def main():
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                for fn in fns:
                    tg.start_soon(fn)

    return anyio.run(main, backend=library.split("-")[1])


@pytest.mark.parametrize("library", ["asyncio", "trio", "anyio-asyncio", "anyio-trio"])
def test_a_start_deadline_on_a_paused_pool_raises_expired_error_on_time(library, make_pool):
    pool = make_pool(0)  # paused: nothing ever starts
    ran = []
    acall = casyncify.asyncify(lambda: ran.append(1), pool=pool, start_within=0.05)
    outcomes = []

    async def one():
        t = time.monotonic()
        try:
            await acall()
        except casyncify.ExpiredError as e:
            outcomes.append((time.monotonic() - t, e))

    _spawn_all(library, [one] * 10)
    assert len(outcomes) == 10, "every call raised ExpiredError"
    for elapsed, e in outcomes:
        assert 0.045 <= elapsed <= 0.6, f"expired after {elapsed:.3f} s, not about 0.05 s"
        assert isinstance(e, TimeoutError) and isinstance(e, casyncify.Error)
        assert not isinstance(e, (asyncio.CancelledError, concurrent.futures.CancelledError))
        assert (e.status, e.start_within, e.limiter) == (_ffi.EXPIRED, 0.05, "")
        assert "did not start within 0.05 s" in str(e)
    assert ran == [], "an expired call never runs"
    s = pool.stats()
    assert (s.submitted, s.expired, s.queued) == (10, 10, 0)


def test_a_start_deadline_while_waiting_for_a_limiter_and_through_futures(make_pool, gate):
    pool = make_pool(4)
    lim = casyncify.Limiter(1, name="busy")
    holding = casyncify.Executor(pool=pool, limiter=lim).submit(gate.block)
    assert gate.started.wait(5)
    fut = casyncify.Executor(pool=pool, limiter=lim, start_within=0.05).submit(lambda: "never")
    with pytest.raises(casyncify.ExpiredError) as e:
        fut.result(5)
    assert e.value.limiter == "busy" and "limiter 'busy'" in str(e.value)
    assert not fut.cancelled() and isinstance(fut.exception(0), casyncify.ExpiredError)

    async def main():
        with pytest.raises(casyncify.ExpiredError):
            await casyncify.asyncify(lambda: "never", pool=pool, limiter=lim, start_within=0.05)()

    run(main())
    gate.open()
    assert holding.result(5) == "gate"
    s = lim.stats()
    assert (s.expired, s.admitted, s.waiting) == (2, 1, 0)
    assert pool.stats().expired == 2


def test_a_running_call_is_never_interrupted_by_its_deadline(make_pool):
    pool = make_pool(1)

    async def main():
        return await casyncify.asyncify(lambda: time.sleep(0.2) or "done", pool=pool, start_within=0.05)()

    assert run(main()) == "done"
    assert pool.stats().expired == 0


@pytest.mark.parametrize(
    ("seconds", "ms"), [(0.05, 50), (0.0501, 51), (1e-9, 1), (1, 1000), (2.5, 2500), ((2**32 - 1) / 1000, 2**32 - 1)]
)
def test_start_within_is_rounded_up_to_whole_milliseconds(seconds, ms):
    from casyncify._convert import deadline_ms

    assert deadline_ms("start_within", seconds) == ms


@pytest.mark.parametrize(
    ("value", "error"),
    [(0, ValueError), (-1, ValueError), (math.nan, ValueError), (math.inf, ValueError),
     (4294967.296, ValueError), ("1", TypeError), (True, TypeError)],
)  # fmt: skip
def test_start_within_refuses_what_is_not_a_positive_finite_number(value, error):
    with pytest.raises(error, match="start_within"):
        casyncify.asyncify(lambda: None, start_within=value)
    with pytest.raises(error, match="start_within"):
        casyncify.Executor(start_within=value)


def test_limiter_refuses_what_is_not_a_limiter_or_a_function():
    with pytest.raises(TypeError, match="limiter"):
        casyncify.asyncify(lambda: None, limiter="gpt-4o")

    async def main():
        with pytest.raises(TypeError, match="not a casyncify.Limiter"):
            await casyncify.asyncify(lambda: None, limiter=lambda: "gpt-4o")()

    run(main())


# ---------------------------------------------------------------------------
# Latency: stats() percentiles and queue_wait()
# ---------------------------------------------------------------------------


def test_stats_percentiles_of_10_calls_of_20_ms_on_1_worker(make_pool):
    pool = make_pool(1, record_latency=True)
    assert pool.records_latency
    lim = casyncify.Limiter(name="measured")
    seen = []

    def call():
        seen.append(casyncify.queue_wait())
        time.sleep(0.02)

    ex = casyncify.Executor(pool=pool, limiter=lim)
    futures = [ex.submit(call) for _ in range(10)]
    for f in futures:
        f.result(10)
    assert eventually(lambda: pool.stats().running == 0)
    s = pool.stats()
    q, r = s.queue_wait, s.run
    print(f"queue wait p50 {q.p50 * 1e3:.1f} ms p90 {q.p90 * 1e3:.1f} max {q.max * 1e3:.1f}; "
          f"run p50 {r.p50 * 1e3:.1f} ms")  # fmt: skip
    assert q.count == r.count == 10
    assert 0.06 <= q.p50 <= 0.3, f"queue-wait p50 {q.p50:.3f} s, not about 0.1 s"
    assert q.p50 <= q.p90 <= q.p99 <= q.max * 1.05 and q.max >= 0.15
    assert 0.018 <= r.p50 <= 0.08, f"run p50 {r.p50:.3f} s, not about 0.02 s"
    assert 0.19 <= r.total <= 0.8 and abs(r.mean - r.total / 10) < 1e-12
    assert lim.stats().queue_wait.count == 10 and lim.stats().run.count == 10
    # queue_wait() inside each call is the value the library recorded for it.
    assert all(w is not None for w in seen)
    assert abs(max(seen) - q.max) < 1e-6
    assert sorted(seen) == seen, "on 1 worker each call waited longer than the one before"


def test_pools_that_do_not_record_latency(make_pool):
    pool = make_pool(1)
    assert not pool.records_latency
    assert pool.submit(casyncify.queue_wait).result(5) is None
    assert casyncify.queue_wait() is None, "outside a call"
    s = pool.stats()
    assert s.queue_wait is None and s.run is None and s.expired == 0


def test_the_default_pool_records_latency_with_the_environment_variable():
    code = """
        import casyncify
        assert casyncify.submit(casyncify.queue_wait).result(5) is not None
        s = casyncify.stats()
        assert s.queue_wait.count == 1 and s.run.count == 1, s
        print("recorded")
    """
    out = run_script(code, env={"ASYNCIFY_RECORD_LATENCY": "1"})
    assert out.returncode == 0 and "recorded" in out.stdout, out.stderr
    out = run_script(
        "import casyncify; assert casyncify.stats().queue_wait is None", env={"ASYNCIFY_RECORD_LATENCY": "0"}
    )
    assert out.returncode == 0, out.stderr


def test_interpreter_exit_with_calls_waiting_for_a_limiter():
    """Calls waiting for a paused limiter, and limiters alive at exit: the process exits
    cleanly and promptly (the pools' shutdown cancels the waiting calls)."""
    code = """
        import casyncify
        lim = casyncify.Limiter(0, name="paused")
        keyed = casyncify.KeyedLimiter("model", max_running=0)
        ex = casyncify.Executor(limiter=lim)
        futures = [ex.submit(print, "never") for _ in range(3)]
        with casyncify.context(model="m"):
            futures.append(casyncify.Executor(limiter=keyed).submit(print, "never"))
        print("exiting")
    """
    t = time.monotonic()
    out = run_script(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "exiting\n" and out.stderr == ""
    assert time.monotonic() - t < 10


# ---------------------------------------------------------------------------
# A limiter chosen from the caller's context
# ---------------------------------------------------------------------------


def test_a_keyed_limiter_gives_each_model_its_own_cap(make_pool):
    pool = make_pool(8)
    per_model = casyncify.KeyedLimiter("model", max_running=1)
    counts = {"a": Concurrency(), "b": Concurrency(), None: Concurrency()}
    overlap = Concurrency()  # all calls: a and b must run beside each other

    def work(i):
        model = casyncify.get("model")
        with overlap.lock:
            overlap.now += 1
            overlap.most = max(overlap.most, overlap.now)
        counts[model].run(i, 0.03)
        with overlap.lock:
            overlap.now -= 1
        return model

    awork = casyncify.asyncify(work, pool=pool, limiter=per_model)

    async def main():
        tasks = []
        for model in ("a", "b"):
            with casyncify.context(model=model):  # tasks copy the context: each sees its model
                tasks += [asyncio.ensure_future(awork(i)) for i in range(4)]
        tasks += [asyncio.ensure_future(awork(i)) for i in range(3)]  # no model: no limiter
        return await asyncio.gather(*tasks)

    assert run(main()) == ["a"] * 4 + ["b"] * 4 + [None] * 3
    assert counts["a"].most == 1 and counts["b"].most == 1, "one at a time per model"
    assert counts[None].most == 3, "calls whose key value is None have no limiter"
    assert overlap.most >= 2, "the models' calls ran beside each other"
    lims = per_model.limiters()
    assert sorted(lims) == ["a", "b"] and lims["a"] is per_model["a"] and lims["a"].name == "a"
    assert lims["a"].stats().admitted == 4 and lims["b"].stats().admitted == 4
    with casyncify.context(model="a"):
        assert per_model() is lims["a"]
    per_model.close()
    assert lims["a"].closed and per_model.limiters() == {}
    with casyncify.context(model="a"):
        fresh = per_model()
    assert fresh is not lims["a"] and not fresh.closed


def test_a_limiter_function_of_any_context_variable_and_make(make_pool):
    pool = make_pool(4)
    tenant = contextvars.ContextVar("tenant", default="free")
    caps = {"free": 1, "paid": 3}
    per_tenant = casyncify.KeyedLimiter(tenant.get, lambda t: casyncify.Limiter(caps[t], name=f"tenant {t}"))
    counts = {t: Concurrency() for t in caps}

    def work():
        counts[tenant.get()].run()

    ex = casyncify.Executor(pool=pool, limiter=per_tenant)  # picked at each submit, in the submitter's context
    futures = [ex.submit(work) for _ in range(4)]
    tenant.set("paid")
    futures += [ex.submit(work) for _ in range(6)]
    for f in futures:
        f.result(10)
    assert counts["free"].most == 1 and counts["paid"].most == 3
    assert per_tenant["paid"].name == "tenant paid" and per_tenant["paid"].max_running == 3
    with pytest.raises(TypeError, match="not hashable"):
        per_tenant[["unhashable"]]
    with pytest.raises(TypeError, match="not both"):
        casyncify.KeyedLimiter("model", lambda v: casyncify.Limiter(), max_running=2)
    with pytest.raises(TypeError, match="must return a casyncify.Limiter"):
        casyncify.KeyedLimiter("model", lambda v: None)["x"]
    with pytest.raises(ValueError):
        casyncify.KeyedLimiter("model", rate=-1)
    with pytest.raises(TypeError):
        casyncify.KeyedLimiter(42)


def test_a_keyed_limiter_under_trio(make_pool):
    trio = require("trio")
    pool = make_pool(4)
    per_model = casyncify.KeyedLimiter("model", max_running=1)
    counts = {"a": Concurrency(), "b": Concurrency()}
    awork = casyncify.asyncify(lambda: counts[casyncify.get("model")].run(), pool=pool, limiter=per_model)

    async def one(model):
        with casyncify.context(model=model):
            await awork()

    async def main():
        async with trio.open_nursery() as nursery:
            for model in ("a", "b") * 3:
                nursery.start_soon(one, model)

    trio.run(main)
    assert counts["a"].most == counts["b"].most == 1
    assert len(counts["a"].ran) == len(counts["b"].ran) == 3


def test_keyed_limiter_replaces_a_closed_limiter_once_under_a_race() -> None:
    # Two threads find the same closed limiter and both make a new one: both
    # must end up with the one that was stored (a second replacement once
    # removed the first thread's fresh limiter, so the cap was not shared).
    made = threading.Barrier(2)

    def make(value: object) -> casyncify.Limiter:
        with contextlib.suppress(threading.BrokenBarrierError):
            made.wait(timeout=2)  # both threads are past the lookup here
        return casyncify.Limiter(1)

    keyed = casyncify.KeyedLimiter("model", make)
    made.abort()
    first = keyed["gpt"]
    made.reset()
    first.close()
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        got = list(ex.map(lambda _: keyed["gpt"], range(2)))
    assert got[0] is got[1]
    assert not got[0].closed
    assert keyed["gpt"] is got[0]
