"""What a type checker infers for casyncify's API (checked by mypy --strict; never run).

Each ``assert_type`` is an error if the inferred type differs."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, Optional

import casyncify
from typing_extensions import assert_type


def f(x: int, *, name: str = "") -> str:
    return name * x


async def main() -> None:
    af = casyncify.asyncify(f)
    coro = af(1)
    _ = assert_type(coro, Coroutine[Any, Any, str])
    coro.close()
    assert_type(await af(2, name="a"), str)

    @casyncify.asyncify
    def g(a: bytes) -> int:
        return len(a)

    assert_type(await g(b"x"), int)

    @casyncify.asyncify(pool=casyncify.default_pool())
    def h(a: float, b: float = 0.0) -> list[float]:
        return [a, b]

    assert_type(await h(1.0), list[float])

    with casyncify.Pool(2) as pool:
        assert_type(await pool.asyncify(f)(3), str)
        assert_type(await casyncify.asyncify(f, pool=pool)(3), str)


async def limits() -> None:
    lim = casyncify.Limiter(2, rate=1.5, burst=2, name="gpt-4o")
    assert_type(await casyncify.asyncify(f, limiter=lim, start_within=0.5)(1), str)
    per_model = casyncify.KeyedLimiter("model", max_running=2)
    assert_type(await casyncify.asyncify(f, limiter=per_model)(1), str)
    assert_type(per_model(), Optional[casyncify.Limiter])
    assert_type(per_model["gpt-4o"], casyncify.Limiter)

    @casyncify.asyncify(limiter=lambda: None, start_within=1)
    def k(a: str) -> bytes:
        return a.encode()

    assert_type(await k("x"), bytes)
    assert_type(await casyncify.Pool(1).asyncify(f, limiter=lim)(2), str)
    assert_type(lim.stats().queue_wait.p50, float)
    assert_type(casyncify.stats().queue_wait, Optional[casyncify.Latency])
    assert_type(casyncify.queue_wait(), Optional[float])
    assert_type(casyncify.Executor(limiter=per_model, start_within=2.0).submit(f, 1), casyncify.TaskFuture)
