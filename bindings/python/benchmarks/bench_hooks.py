"""Per-call cost of a worker thread with and without the thread-state hooks.

A ctypes callback on a thread Python did not create builds and tears down a
Python thread state on every call. casyncify's pools give each worker one
lasting thread state (pool start/stop hooks). This measures both:

* end to end through the binding (submit() round trip, submit() and asyncify()
  throughput) on a pool with hooks and on one made with ``thread_hooks=False``;
* one bare ctypes work callback per task, submitted through the low-level API.

    ASYNCIFY_LIBRARY=target/release/libasyncify.so python bindings/python/benchmarks/bench_hooks.py
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import casyncify  # noqa: E402
from casyncify import _pools  # noqa: E402
from casyncify import lowlevel as ll  # noqa: E402

ROUNDS = 5


def noop():
    return None


def seq_latency(pool: casyncify.Pool, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        pool.submit(noop).result()
    return (time.perf_counter() - t) / n * 1e6


def burst_throughput(pool: casyncify.Pool, n: int) -> float:
    t = time.perf_counter()
    futs = [pool.submit(noop) for _ in range(n)]
    for f in futs:
        f.result()
    return n / (time.perf_counter() - t)


def asyncio_throughput(pool: casyncify.Pool, n: int) -> float:
    anoop = casyncify.asyncify(noop, pool=pool)

    async def run():
        t = time.perf_counter()
        await asyncio.gather(*[anoop() for _ in range(n)])
        return n / (time.perf_counter() - t)

    return asyncio.run(run())


def bare_callback_round_trip(lasting: bool, n: int = 10000) -> float:
    """Submit a no-op ctypes WORK_FN through the low-level API n times in a row
    (submit, wait with the GIL released, release): exactly one Python callback
    per task, on a worker thread created by the library."""
    cb = ll.WORK_FN(lambda arg, out: 0)
    opts = ll.pool_options_init()
    opts.max_workers = 1
    if lasting:
        opts.on_thread_start = _pools.HOOK_START
        opts.on_thread_stop = _pools.HOOK_STOP
        opts.hook_data = 0
    pool = ll.pool_new_ex(opts)
    try:
        sub = ll.submit_options_init()
        sub.pool = pool
        for _ in range(100):  # warm up: the worker exists
            h = ll.submit(cb, None, sub)
            ll.wait(h, want_result=False)
            ll.release(h)
        t = time.perf_counter()
        for _ in range(n):
            h = ll.submit(cb, None, sub)
            ll.wait(h, want_result=False)
            ll.release(h)
        return (time.perf_counter() - t) / n * 1e6
    finally:
        ll.pool_free(pool)


def main() -> None:
    rows = []
    for hooks in (True, False):
        with casyncify.Pool(4, thread_hooks=hooks) as pool:
            seq_latency(pool, 2000)  # warm up
            seq = statistics.median(seq_latency(pool, 5000) for _ in range(ROUNDS))
            burst = statistics.median(burst_throughput(pool, 20000) for _ in range(ROUNDS))
            aio = statistics.median(asyncio_throughput(pool, 20000) for _ in range(ROUNDS))
        rows.append((hooks, seq, burst, aio))
    print(f"python {sys.version.split()[0]}, library {casyncify.library_path}, median of {ROUNDS}")
    print(f"{'worker thread state':<30}{'submit() round trip':>20}{'submit() calls/s':>18}{'asyncify calls/s':>18}")
    for hooks, seq, burst, aio in rows:
        label = "lasting (start/stop hooks)" if hooks else "per call (no hooks)"
        print(f"{label:<30}{seq:>17.1f} us{burst:>18,.0f}{aio:>18,.0f}")
    print()
    print("one bare ctypes work callback per task (low-level submit + wait + release, 1 worker):")
    lasting = statistics.median(bare_callback_round_trip(True) for _ in range(ROUNDS))
    per_call = statistics.median(bare_callback_round_trip(False) for _ in range(ROUNDS))
    print(
        f"  per-call thread state: {per_call:.1f} us   lasting thread state: {lasting:.1f} us"
        f"   difference: {per_call - lasting:.1f} us per callback"
    )


if __name__ == "__main__":
    main()
