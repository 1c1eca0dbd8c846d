"""One exception hierarchy for every status code of the library."""

from __future__ import annotations

import builtins
import concurrent.futures

from . import _ffi

__all__ = [
    "Error",
    "NullError",
    "InvalidArgumentError",
    "InvalidHandleError",
    "NotFoundError",
    "BufferTooSmallError",
    "ShutDownError",
    "BusyError",
    "WouldDeadlockError",
    "ScopeMismatchError",
    "ForkedError",
    "PanicError",
    "OutOfMemoryError",
    "CancelledError",
    "TimeoutError",
    "ExpiredError",
    "check",
    "error_for",
]


class Error(Exception):
    """A status code of the library with its ``asyncify_last_error`` text.

    ``status`` is the ``ASYNCIFY_*`` value (an int), ``message`` the detail the
    library stored for the failing call (read on the same thread, right after it).
    """

    def __init__(self, status: int, message: str = ""):
        super().__init__(status, message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        name = _ffi.status_str(self.status)
        return f"{self.message} [{name}]" if self.message else name


class NullError(Error, ValueError):
    """ASYNCIFY_E_NULL: a required pointer was NULL."""


class InvalidArgumentError(Error, ValueError):
    """ASYNCIFY_E_INVALID_ARGUMENT: empty or non-UTF-8 key, bad struct size, unknown flag..."""


class InvalidHandleError(Error, ValueError):
    """ASYNCIFY_E_INVALID_HANDLE: unknown, released or stale handle."""


class NotFoundError(Error, KeyError):
    """ASYNCIFY_E_NOT_FOUND: no such override key."""

    __str__ = Error.__str__  # not KeyError's repr()


class BufferTooSmallError(Error):
    """ASYNCIFY_E_BUFFER_TOO_SMALL."""


class ShutDownError(Error, RuntimeError):
    """ASYNCIFY_E_SHUT_DOWN: the pool is shut down (or the interpreter is exiting)."""


class BusyError(Error):
    """ASYNCIFY_E_BUSY: the pool's queue is full."""


class WouldDeadlockError(Error, RuntimeError):
    """ASYNCIFY_E_WOULD_DEADLOCK: a wait or free that could never finish."""


class ScopeMismatchError(Error, RuntimeError):
    """ASYNCIFY_E_SCOPE_MISMATCH: scope exit out of LIFO order or from another thread/task."""


class ForkedError(Error, RuntimeError):
    """ASYNCIFY_E_FORKED: the handle (or pool) belongs to the parent of a fork()."""


class PanicError(Error, RuntimeError):
    """ASYNCIFY_E_PANIC: an internal error of the library, caught at the boundary."""


class OutOfMemoryError(Error, MemoryError):
    """ASYNCIFY_E_OUT_OF_MEMORY."""


class CancelledError(Error, concurrent.futures.CancelledError):
    """ASYNCIFY_CANCELLED seen by a low-level wait: also a ``concurrent.futures.CancelledError``.

    (The asyncio API raises ``asyncio.CancelledError`` itself; futures raise the
    ``concurrent.futures`` one.)
    """


class TimeoutError(Error, builtins.TimeoutError):  # noqa: A001 - mirrors the builtin on purpose
    """ASYNCIFY_TIMEOUT: a wait ran out of time (the task goes on). Also a builtin ``TimeoutError``."""


class ExpiredError(Error, builtins.TimeoutError):
    """ASYNCIFY_EXPIRED: the call did not start within its ``start_within`` seconds, so
    it never ran (its function was not called; nothing of it is left to wait for).

    Why these bases:

    * ``casyncify.Error``: it is a status of the library (``status == 5``), caught by
      ``except casyncify.Error`` like every other.
    * the builtin ``TimeoutError``: a deadline passed, and code that already handles
      running out of time (``except TimeoutError``, retry policies that retry timeouts)
      handles this one too. Not ``casyncify.TimeoutError``, whose call goes on: an
      expired call is over, and a handler written for a wait that timed out would
      wrongly expect its result later.
    * not a cancellation (``asyncio.CancelledError``, trio's ``Cancelled``,
      ``concurrent.futures.CancelledError``): those mean *the awaiting task or scope*
      is being cancelled and are handled as such by asyncio, trio, AnyIO and task
      groups (swallowed by a cancel scope, propagated as the task's own cancellation,
      ``future.cancelled()`` true). Here nobody cancelled the caller: the call failed
      to start, an ordinary exception its caller may catch, retry or report.

    ``start_within`` is the deadline in seconds, ``limiter`` the name of the limiter
    the call was given ('' without one).
    """

    def __init__(self, status: int, message: str = "", start_within: float = 0.0, limiter: str = ""):
        super().__init__(status, message)
        self.start_within = start_within
        self.limiter = limiter


_BY_STATUS: dict[int, type[Error]] = {
    _ffi.E_NULL: NullError,
    _ffi.E_INVALID_ARGUMENT: InvalidArgumentError,
    _ffi.E_INVALID_HANDLE: InvalidHandleError,
    _ffi.E_NOT_FOUND: NotFoundError,
    _ffi.E_BUFFER_TOO_SMALL: BufferTooSmallError,
    _ffi.E_SHUT_DOWN: ShutDownError,
    _ffi.E_BUSY: BusyError,
    _ffi.E_WOULD_DEADLOCK: WouldDeadlockError,
    _ffi.E_SCOPE_MISMATCH: ScopeMismatchError,
    _ffi.E_FORKED: ForkedError,
    _ffi.E_PANIC: PanicError,
    _ffi.E_OUT_OF_MEMORY: OutOfMemoryError,
    _ffi.CANCELLED: CancelledError,
    _ffi.TIMEOUT: TimeoutError,
    _ffi.EXPIRED: ExpiredError,
}


def error_for(status: int, message: str | None = None) -> Error:
    """The exception for ``status``; ``message`` defaults to this thread's last error."""
    if message is None:
        message = _ffi.last_error()
    return _BY_STATUS.get(status, Error)(status, message)


def check(status: int) -> int:
    """Raise for an error status (< 0); return outcomes (>= 0) unchanged.

    Call it right after the failing C call, on the same thread: the message is
    the library's thread-local ``asyncify_last_error``.
    """
    if status < 0:
        raise error_for(status)
    return status
