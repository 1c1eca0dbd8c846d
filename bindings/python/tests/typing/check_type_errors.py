"""Calls a type checker must reject (mypy --strict --warn-unused-ignores; never run).

Each line carries the error mypy must report: an ignore that is not needed
(the error went away) is itself an error under ``warn_unused_ignores``."""

from __future__ import annotations

import casyncify


def f(x: int) -> str:
    return str(x)


async def main() -> None:
    af = casyncify.asyncify(f)
    await af("one")  # type: ignore[arg-type]
    await af()  # type: ignore[call-arg]
    await af(1, 2)  # type: ignore[call-arg]
    await af(1, y=2)  # type: ignore[call-arg]
    n: int = await af(1)  # type: ignore[assignment]
    s: str = af(1)  # type: ignore[assignment]
    await casyncify.Pool(1).asyncify(f)(b"x")  # type: ignore[arg-type]
    await casyncify.asyncify(pool=None)(f)(None)  # type: ignore[arg-type]
    await casyncify.asyncify(f, limiter="gpt-4o")(1)  # type: ignore[call-overload]
    await casyncify.asyncify(f, start_within="1s")(1)  # type: ignore[call-overload]
    await casyncify.asyncify(f, limiter=str)(1)  # type: ignore[arg-type]
    casyncify.Limiter(2, 10.0)  # type: ignore[misc]
    print(n, s)
