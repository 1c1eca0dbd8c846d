"""casyncify: Python binding of asyncify (run blocking calls on a bounded pool of
worker threads without losing the caller's context), over ctypes.

    import asyncio, casyncify

    def work(question):
        return f"{casyncify.get('model')} answers {question}"

    async def main():
        awork = casyncify.asyncify(work)
        with casyncify.context(model="gpt-4o"):
            print(await awork("q1"))          # gpt-4o answers q1

    asyncio.run(main())
"""

from . import lowlevel
from ._calls import TaskFuture, call, cancel_requested, queue_wait
from ._errors import (
    BufferTooSmallError,
    BusyError,
    CancelledError,
    Error,
    ExpiredError,
    ForkedError,
    InvalidArgumentError,
    InvalidHandleError,
    NotFoundError,
    NullError,
    OutOfMemoryError,
    PanicError,
    ScopeMismatchError,
    ShutDownError,
    TimeoutError,
    WouldDeadlockError,
)
from ._ffi import VERSION as LIBRARY_VERSION
from ._ffi import library_path
from ._limits import KeyedLimiter, Latency, Limiter, LimiterStats
from ._overrides import ForeignPointer, context, get, overrides, remove
from ._overrides import set as set  # noqa: A004 - casyncify.set(key, value)
from ._pools import UNBOUNDED, Executor, Pool, Stats, asyncify, configure, default_pool, stats, submit

__version__ = "0.1.0"

# `set` is left out of __all__ so that a star import does not shadow the builtin.
__all__ = [
    "asyncify", "submit", "Executor", "Pool", "TaskFuture", "Stats", "UNBOUNDED",
    "get", "remove", "overrides", "context", "call", "cancel_requested",
    "configure", "stats", "default_pool", "ForeignPointer", "lowlevel",
    "Error", "NullError", "InvalidArgumentError", "InvalidHandleError", "NotFoundError",
    "BufferTooSmallError", "ShutDownError", "BusyError", "WouldDeadlockError",
    "ScopeMismatchError", "ForkedError", "PanicError", "OutOfMemoryError",
    "CancelledError", "TimeoutError", "LIBRARY_VERSION", "library_path",
    "Limiter", "KeyedLimiter", "LimiterStats", "Latency", "ExpiredError", "queue_wait",
]  # fmt: skip
