#!/usr/bin/env python3
"""P1 and P2 of PERFORMANCE.md: the Python binding (casyncify) next to
asyncio.to_thread (8-thread default executor), ThreadPoolExecutor(8) through
loop.run_in_executor, and dspy.asyncify where dspy is importable.

P1: 20,000 no-op calls ``await wrapper()``, gathered in chunks of 1,000, limit 8: calls/s.
P2: 10,000 sequential round trips ``await wrapper()``: p50 and p99 in µs.

Each implementation runs in its own event loop per repetition (a small warm-up
first); repetitions are interleaved across implementations. Median of the
repetitions, with the spread. bench/suite (``make bench``) runs this script
with ``--machine`` and puts its figures in the one table.

    python3 bench/python_peers.py                 # a markdown table
    python3 bench/python_peers.py --machine       # lines for bench/suite
    python3 bench/python_peers.py --reps 3 --only casyncify to_thread

casyncify is imported from bindings/python with ASYNCIFY_LIBRARY (default:
target/release/libasyncify.so). dspy is used only if ``import dspy`` works;
BENCH_DSPY=1 installs it with pip first when this interpreter is a venv.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 8
P1_CALLS = 20_000
P1_CHUNK = 1_000
P2_ROUNDS = 10_000
IMPLS = ["casyncify", "to_thread", "tpe", "dspy"]
NAMES = {
    "casyncify": "casyncify.asyncify",
    "to_thread": "asyncio.to_thread",
    "tpe": "ThreadPoolExecutor(8)",
    "dspy": "dspy.asyncify",
}


def noop():
    return None


def load_casyncify():
    os.environ.setdefault("ASYNCIFY_LIBRARY", str(ROOT / "target" / "release" / "libasyncify.so"))
    os.environ.setdefault("ASYNCIFY_MAX_WORKERS", str(LIMIT))
    path = ROOT / "bindings" / "python"
    if path.is_dir() and str(path) not in sys.path:
        sys.path.insert(0, str(path))
    import casyncify  # noqa: PLC0415

    return casyncify


def load_dspy():
    try:
        import dspy  # noqa: PLC0415
    except Exception as e:  # noqa: BLE001 - any import failure means "skip"
        if os.environ.get("BENCH_DSPY") != "1":
            raise ImportError(f"dspy not importable ({type(e).__name__}: {e}); BENCH_DSPY=1 installs it") from e
        if sys.prefix == sys.base_prefix:
            raise ImportError("BENCH_DSPY=1 but this Python is not a venv; not installing dspy") from e
        print("BENCH_DSPY=1: pip install dspy into", sys.prefix, file=sys.stderr)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "dspy"],
            check=True,
            stdout=sys.stderr,
        )
        import dspy  # noqa: PLC0415
    return dspy


def factory(impl: str, mods: dict):
    """An async setup: returns (make_call, executor to shut down or None) inside a running loop."""

    async def setup():
        loop = asyncio.get_running_loop()
        if impl == "casyncify":
            return mods["casyncify"].asyncify(noop), None
        if impl == "to_thread":
            ex = concurrent.futures.ThreadPoolExecutor(LIMIT)
            loop.set_default_executor(ex)
            return (lambda: asyncio.to_thread(noop)), ex
        if impl == "tpe":
            ex = concurrent.futures.ThreadPoolExecutor(LIMIT)
            return (lambda: loop.run_in_executor(ex, noop)), ex
        if impl == "dspy":
            dspy = mods["dspy"]
            # dspy.asyncify's CapacityLimiter follows settings.async_max_workers (default 8).
            if getattr(dspy.settings, "async_max_workers", LIMIT) != LIMIT:
                dspy.settings.configure(async_max_workers=LIMIT)
            return dspy.asyncify(noop), None
        raise ValueError(impl)

    return setup


async def p1(make_call) -> float:
    t = time.perf_counter()
    for _ in range(P1_CALLS // P1_CHUNK):
        await asyncio.gather(*(make_call() for _ in range(P1_CHUNK)))
    return P1_CALLS / (time.perf_counter() - t)


async def p2(make_call, rounds: int) -> tuple[float, float]:
    lat = []
    clock = time.perf_counter_ns
    for _ in range(rounds):
        t = clock()
        await make_call()
        lat.append((clock() - t) / 1e3)
    lat.sort()
    return lat[len(lat) // 2], lat[min(len(lat) - 1, len(lat) * 99 // 100)]


def one_rep(impl: str, mods: dict, rounds: int) -> tuple[float, tuple[float, float]]:
    async def main():
        make_call, ex = await factory(impl, mods)()
        try:
            # Warm-up: start the workers, fill the caches.
            await asyncio.gather(*(make_call() for _ in range(200)))
            await p2(make_call, 200)
            rate = await p1(make_call)
            lat = await p2(make_call, rounds)
            return rate, lat
        finally:
            if ex is not None:
                ex.shutdown(wait=True)

    return asyncio.run(main())


def spread(v: list[float]) -> float:
    m = statistics.median(v)
    return 0.0 if len(v) < 2 or m == 0 else (max(v) - min(v)) / 2 / m * 100


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=P2_ROUNDS, help="P2 round trips per repetition")
    ap.add_argument("--machine", action="store_true", help="print lines for bench/suite")
    ap.add_argument("--only", nargs="*", choices=IMPLS, help="implementations to run")
    args = ap.parse_args()
    impls = args.only or IMPLS

    mods: dict = {}
    skipped: dict[str, str] = {}
    if "casyncify" in impls:
        try:
            mods["casyncify"] = load_casyncify()
        except Exception as e:  # noqa: BLE001 - report any failure as a skip
            skipped["casyncify"] = f"casyncify not importable ({type(e).__name__}: {e})"
    if "dspy" in impls:
        try:
            mods["dspy"] = load_dspy()
        except Exception as e:  # noqa: BLE001
            skipped["dspy"] = str(e)

    run = [i for i in impls if i not in skipped]
    rates: dict[str, list[float]] = {i: [] for i in run}
    lats: dict[str, list[tuple[float, float]]] = {i: [] for i in run}
    failed: dict[str, str] = {}
    print(f"Python peers: {', '.join(run) or 'none'}; {args.reps} reps", file=sys.stderr)
    t0 = time.perf_counter()
    for rep in range(args.reps):
        for impl in run:
            if impl in failed:
                continue
            try:
                rate, lat = one_rep(impl, mods, args.rounds)
            except Exception as e:  # noqa: BLE001 - a peer that breaks is reported, not fatal
                failed[impl] = f"failed: {type(e).__name__}: {e}"
                continue
            rates[impl].append(rate)
            lats[impl].append(lat)
        print(f"  rep {rep + 1}/{args.reps} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    skipped.update(failed)

    if args.machine:
        print(f"PYTHON {platform.python_implementation()} {platform.python_version()}")
        for impl in impls:
            if impl in skipped:
                print(f"P1 {impl} skipped {skipped[impl]}")
                print(f"P2 {impl} skipped {skipped[impl]}")
                continue
            print(f"P1 {impl} ok " + " ".join(f"{r:.1f}" for r in rates[impl]))
            print(f"P2 {impl} ok " + " ".join(f"{a:.2f},{b:.2f}" for a, b in lats[impl]))
        return 0

    print(f"| Python {platform.python_version()}, {args.reps} reps | P1 calls/s | P2 p50 µs | P2 p99 µs |")
    print("|---|---|---|---|")
    for impl in impls:
        if impl in skipped:
            print(f"| {NAMES[impl]} | skipped: {skipped[impl]} | | |")
            continue
        r = rates[impl]
        p50 = [a for a, _ in lats[impl]]
        p99 = [b for _, b in lats[impl]]
        print(
            f"| {NAMES[impl]} | {statistics.median(r):,.0f} ±{spread(r):.0f}% "
            f"| {statistics.median(p50):.1f} ±{spread(p50):.0f}% | {statistics.median(p99):.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
