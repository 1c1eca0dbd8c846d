"""casyncify demo: an asyncio program fans out blocking calls with different overrides.

Each asyncio task enters its own ``casyncify.context(model=..., user=...)`` and
awaits several calls of a blocking function through ``casyncify.asyncify``.
The calls run on a pool of 4 worker threads, interleaved with the other tasks'
calls, and each one reports what it saw -- through the Python API and through
the C table that C code called from it would read. Then: a call cancelled while
queued never runs, one cancelled while running is abandoned.

    cargo build --release
    python3 examples/demo.py            # (or: make demo)
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import random
import sys
import threading
import time
from pathlib import Path

try:
    import casyncify
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bindings" / "python"))
    import casyncify
from casyncify import lowlevel


def c_side(key: str):
    """What C code running in this call would read for ``key`` (asyncify_override_get_ptr_ex)."""
    ptr, _release = lowlevel.override_get_ptr_ex(key)
    return ctypes.cast(ptr, ctypes.py_object).value  # a binding value: the Python object itself


def answer(question: str) -> dict:
    """A blocking "LM call": sleeps, then reports the overrides it ran with."""
    time.sleep(random.uniform(0.02, 0.08))
    return {
        "question": question,
        "model": casyncify.get("model"),
        "user": casyncify.get("user"),
        "model_in_c": c_side("model"),
        "thread": threading.current_thread().name,
    }


async def session(aanswer, model: str, user: str, questions: list[str]) -> list[dict]:
    with casyncify.context(model=model, user=user):
        # Fan out: all of this session's calls at once, interleaved with the other sessions.
        return await asyncio.gather(*[aanswer(q) for q in questions])


async def main() -> int:
    random.seed(7)
    with casyncify.Pool(4, thread_name="demo") as pool:
        aanswer = casyncify.asyncify(answer, pool=pool)
        sessions = [("gpt-4o", "ada"), ("llama-3", "grace"), ("claude", "alan")]
        t = time.perf_counter()
        results = await asyncio.gather(
            *[session(aanswer, m, u, [f"{u}-q{i}" for i in range(4)]) for m, u in sessions]
        )
        elapsed = time.perf_counter() - t

        print(f"12 calls from 3 concurrent sessions on a pool of {pool.max_workers} workers ({elapsed:.2f} s)\n")
        print(f"{'call':<10} {'expected':<18} {'seen (Python)':<18} {'seen by C code':<15} worker")
        wrong = 0
        for (model, user), calls in zip(sessions, results):
            for r in calls:
                ok = r["model"] == r["model_in_c"] == model and r["user"] == user
                wrong += not ok
                print(
                    f"{r['question']:<10} {model + '/' + user:<18} {r['model'] + '/' + r['user']:<18} "
                    f"{r['model_in_c']:<15} {r['thread']}  {'ok' if ok else 'WRONG'}"
                )
        print(f"\nevery call saw its own session's overrides: {'yes' if wrong == 0 else f'NO ({wrong} wrong)'}")
        print(f"outside the sessions: model={casyncify.get('model')!r}")

        # Cancellation: a queued call never runs; a running one is abandoned at once.
        gate = threading.Event()
        ran = []
        blocker = asyncio.ensure_future(casyncify.asyncify(gate.wait, pool=pool)(5))
        others = [asyncio.ensure_future(casyncify.asyncify(gate.wait, pool=pool)(5)) for _ in range(3)]
        queued = asyncio.ensure_future(casyncify.asyncify(ran.append, pool=pool)("queued call"))
        await asyncio.sleep(0.05)
        queued.cancel()
        t = time.perf_counter()
        blocker.cancel()  # running: the awaiter is released at once
        await asyncio.gather(queued, blocker, return_exceptions=True)
        released = time.perf_counter() - t
        gate.set()
        await asyncio.gather(*others)
        s = pool.stats()
        print(f"\ncancelled while queued -> ran: {bool(ran)}")
        print(f"cancelled while running -> awaiter released in {released * 1000:.1f} ms")
        print(
            f"pool stats: submitted={s.submitted} completed={s.completed} "
            f"cancelled={s.cancelled} abandoned={s.abandoned}"
        )
        return 0 if wrong == 0 and not ran else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(asyncio.run(main()))
