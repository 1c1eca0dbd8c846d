"""Cost of the override API with 1, 10, 100 and 1,000 keys in the current context.

* ``get(key)`` of a key set in the context (a hit), and of a key that is not
  (a miss: it falls through to the settings and the C table);
* ``set(key, value)`` overwriting one key of the context;
* ``overrides()`` and a read of one key through it.

The best of ``ROUNDS`` runs of ``N`` operations each, in µs per operation (the
best, not the median: on a shared machine it is what moves least between runs).

    ASYNCIFY_LIBRARY=target/release/libasyncify.so python bindings/python/benchmarks/bench_overrides.py
"""

from __future__ import annotations

import contextvars
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import casyncify  # noqa: E402

ROUNDS = 7
N = 20_000
SIZES = (1, 10, 100, 1000)


def per_op(op: Callable[[], object]) -> float:
    """The best µs per call of ``op`` over ``ROUNDS`` runs of ``N`` calls."""
    runs = []
    for _ in range(ROUNDS):
        t = time.perf_counter()
        for _ in range(N):
            op()
        runs.append((time.perf_counter() - t) / N * 1e6)
    return min(runs)


def measure(keys: int) -> dict[str, float]:
    """The figures for a context holding ``keys`` keys (run in a fresh contextvars context)."""
    for i in range(keys):
        casyncify.set(f"key{i}", i)
    last = f"key{keys - 1}"
    get = casyncify.get
    return {
        "get hit": per_op(lambda: get(last)),
        "get miss": per_op(lambda: get("absent")),
        "set": per_op(lambda: casyncify.set(last, 0)),
        "overrides()[k]": per_op(lambda: casyncify.overrides()[last]),
    }


def main() -> None:
    rows = {n: contextvars.copy_context().run(measure, n) for n in SIZES}
    names = list(rows[SIZES[0]])
    print(f"| µs per op (Python {sys.version.split()[0]}) | " + " | ".join(f"{n} keys" for n in SIZES) + " |")
    print("|---|" + "---|" * len(SIZES))
    for name in names:
        print(f"| `{name}` | " + " | ".join(f"{rows[n][name]:.2f}" for n in SIZES) + " |")


if __name__ == "__main__":
    main()
