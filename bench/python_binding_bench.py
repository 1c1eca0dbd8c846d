"""casyncify.asyncify next to the Python peers it replaces, limit 8 everywhere.

Peers: dspy.asyncify (anyio.to_thread.run_sync with a CapacityLimiter, context
copied per call) when DSPy is installed, anyio.to_thread.run_sync when AnyIO
is, asyncio.to_thread (default executor), loop.run_in_executor on a
ThreadPoolExecutor(8), and casyncify's Executor through run_in_executor.

Workloads (median of ROUNDS runs):
  burst     N no-op calls gathered at once: calls per second
  latency   one no-op call awaited at a time: microseconds per round trip
  snapshot  like burst, with 1,000 overrides set in the caller's context

    python3 bench/python_peers.py            # needs the built library
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import statistics
import sys
import time
from pathlib import Path

try:
    import casyncify
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bindings" / "python"))
    import casyncify

LIMIT = 8
N = 5000
SEQ = 1000
ROUNDS = 5


def noop():
    return None


def peers():
    out = {}
    pool = casyncify.Pool(LIMIT)
    out["casyncify.asyncify"] = casyncify.asyncify(noop, pool=pool)
    ex = casyncify.Executor(pool=pool)

    async def cex():
        return await asyncio.get_running_loop().run_in_executor(ex, noop)

    out["casyncify.Executor + run_in_executor"] = cex
    try:
        import dspy  # noqa: F401
        from dspy.utils.asyncify import asyncify as dspy_asyncify

        dspy.settings.async_max_workers = LIMIT  # type: ignore[attr-defined]
        out["dspy.asyncify"] = dspy_asyncify(noop)
    except Exception:  # noqa: BLE001 - DSPy is optional
        pass
    try:
        import anyio.to_thread

        limiter = None

        async def anyio_call():
            nonlocal limiter
            if limiter is None:
                limiter = anyio.CapacityLimiter(LIMIT)
            return await anyio.to_thread.run_sync(noop, limiter=limiter, abandon_on_cancel=True)

        out["anyio.to_thread.run_sync"] = anyio_call
    except ImportError:
        pass
    tpe = concurrent.futures.ThreadPoolExecutor(LIMIT)

    async def tpe_call():
        return await asyncio.get_running_loop().run_in_executor(tpe, noop)

    out["run_in_executor(ThreadPoolExecutor)"] = tpe_call

    async def to_thread():
        return await asyncio.to_thread(noop)

    out["asyncio.to_thread"] = to_thread
    return out


async def burst(call, n: int, keys: int = 0) -> float:
    if keys:
        for i in range(keys):
            casyncify.set(f"k{i}", i)
    t = time.perf_counter()
    await asyncio.gather(*[call() for _ in range(n)])
    return n / (time.perf_counter() - t)


async def latency(call, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        await call()
    return (time.perf_counter() - t) / n * 1e6


def measure(call, what: str) -> float:
    def one():
        if what == "burst":
            return asyncio.run(burst(call, N))
        if what == "snapshot":
            return asyncio.run(burst(call, N, keys=1000))
        return asyncio.run(latency(call, SEQ))

    one()  # warm up
    return statistics.median(one() for _ in range(ROUNDS))


def main() -> None:
    print(f"python {sys.version.split()[0]}, limit {LIMIT}, median of {ROUNDS}; burst = {N} calls gathered")
    print(f"{'peer':<40}{'burst calls/s':>15}{'round trip us':>15}{'1k-key burst/s':>16}")
    for name, call in peers().items():
        b = measure(call, "burst")
        lat = measure(call, "latency")
        snap = measure(call, "snapshot")
        print(f"{name:<40}{b:>15,.0f}{lat:>15.1f}{snap:>16,.0f}")


if __name__ == "__main__":
    main()
