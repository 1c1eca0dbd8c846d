"""What a type checker infers for casyncify's API (checked by mypy --strict; never run).

Each ``assert_type`` is an error if the inferred type differs."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

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
