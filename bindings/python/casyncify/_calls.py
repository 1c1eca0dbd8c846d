"""A call: its record, how it runs on a worker, and how its outcome gets out.

Each call records ``(fn, args, kwargs, contextvars.copy_context())`` in
``registry`` under an integer id and submits ONE module-level work callback
(``WORK``) with ``arg = id``. The worker runs ``ctx.run(fn, *args, **kwargs)``
and keeps the return value or exception in the record (never through the C
result pointer). ``submit()`` futures (``TaskFuture``) and trio waiters are
completed by the ``on_done`` callback ``DONE``; asyncio calls by their loop's
completion queue (``_loops``). Pools that record latency submit ``WORK_TIMED``
instead, which keeps the call's queue wait (given by their ``on_task_start``
hook, ``TASK_START``) for ``queue_wait()`` while the call runs.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import itertools
import threading
import time
import weakref
from concurrent.futures._base import (  # the states a Future moves through
    CANCELLED,
    CANCELLED_AND_NOTIFIED,
    FINISHED,
    PENDING,
    RUNNING,
)
from typing import Any, Callable

from . import _anyio_compat, _ffi, lowlevel
from ._convert import milliseconds, seconds
from ._errors import ExpiredError, WouldDeadlockError, check
from ._ffi import fast, lib, plib
from ._lifecycle import after_fork_in_child, worker
from ._overrides import ROOT, current

__all__ = [
    "Call", "LoopCall", "registry", "ids", "WORK", "WORK_TIMED", "TASK_START", "DONE", "SUBMIT_DEFAULTS",
    "TaskFuture", "call", "cancel_requested", "queue_wait", "expired_error",
]  # fmt: skip

#: Submit options with the library's defaults, copied for each submission.
SUBMIT_DEFAULTS = lowlevel.submit_options_init()


def _outcome(rec: Call | LoopCall) -> Any:
    """The call's result, or its exception re-raised (the same object)."""
    exc = rec.exc
    if exc is not None:
        # Dropped from the record and this frame before it propagates: the
        # traceback keeps the frame, which must not hold it in a cycle.
        rec.exc = None
        try:
            raise exc
        finally:
            exc = None
    return rec.result


class Call:
    """One call: what to run, in which context, and where its outcome goes.

    ``fut`` is a ``TaskFuture`` (``submit``) or a trio waiter (an ``asyncify`` call
    under asyncio has a ``LoopCall`` record instead). ``marks`` are the AnyIO/trio
    worker-thread marks set around ``fn`` (``_anyio_compat``). ``limits`` (set only
    for a call with a limiter or a start deadline) is ``(limiter or None,
    start_within seconds)``, for the message of ``ExpiredError``.
    """

    __slots__ = (
        "fn", "args", "kwargs", "ctx", "result", "exc", "fut", "handle", "abandoned", "pool", "marks", "limits",
    )  # fmt: skip
    limits: tuple[Any, float]  # set only when used: no cost on the plain path

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        ctx: contextvars.Context,
        pool: object,
    ) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.ctx = ctx
        self.result: Any = None
        self.exc: BaseException | None = None
        self.fut: Any = None  # TaskFuture or a trio Waiter
        self.handle = 0
        self.abandoned = False
        self.pool = pool  # keeps the Pool object alive while the call is pending
        self.marks: tuple[Any, ...] | None = None

    outcome = _outcome


class LoopCall(weakref.ref[Any]):
    """The record of an ``asyncify`` call under asyncio: a ``Call`` (the same fields)
    that is itself the weak reference to the asyncio future its task awaits (a
    pending call must not keep a dropped event loop alive). One object instead of a
    record and a weak reference: fewer allocations on the hottest path. Made, and
    its fields set (those ``Call()`` sets), inline by ``asyncify``'s wrapper."""

    __slots__ = ("fn", "args", "kwargs", "ctx", "result", "exc", "handle", "abandoned", "pool", "marks", "limits")
    fut: Any = None  # read by _work: not a TaskFuture
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    ctx: contextvars.Context
    handle: int
    abandoned: bool
    pool: object
    result: Any
    exc: BaseException | None
    marks: tuple[Any, ...] | None
    limits: tuple[Any, float]  # set only when used

    outcome = _outcome


#: id -> the record of every call not yet completed.
registry: dict[int, Call | LoopCall] = {}
#: The ids of calls (one counter for the process).
ids = itertools.count(1)


def _work(arg: int, _out: int | None, _calls: dict[int, Call | LoopCall] = registry) -> int:
    # Runs on a worker (or inline in a waiting task, or in call()). Must not raise.
    rec = _calls.get(arg)
    if rec is None or rec.abandoned:
        return 0  # the awaiter is gone (cancelled, or its loop was collected)
    if type(rec.fut) is TaskFuture and not rec.fut._start():
        return 0  # the future was cancelled between the start and here
    # No other local than `rec`, deleted below: the exception's traceback keeps
    # this frame, which must not keep the record (and so the exception) in a cycle.
    try:
        if rec.marks is None:
            rec.result = rec.ctx.run(rec.fn, *rec.args, **rec.kwargs)
        else:
            rec.result = rec.ctx.run(_anyio_compat.run_marked, rec.marks, rec.fn, rec.args, rec.kwargs)
        return 0
    except BaseException as e:  # noqa: BLE001 - delivered to the caller as is
        rec.exc = e
        del rec  # the traceback holds this frame: no cycle through the record
        return 1


#: The one work callback of every call the binding submits (``arg``: the call's id).
WORK = _ffi.immortal(_ffi.WORK_FN_FAST(_work))


def _task_start(_data: int | None, _handle: int, _status: int, queue_wait_ns: int, _run_ns: int) -> None:
    # on_task_start of pools that record latency: on the worker, right before the
    # work function (WORK_TIMED), which takes the value. Must not raise.
    try:
        worker.started_wait_ns = queue_wait_ns
    except BaseException:  # noqa: BLE001 - never unwind into C
        pass


#: The ``on_task_start`` hook of pools that record latency.
TASK_START = _ffi.immortal(_ffi.TASK_HOOK(_task_start))


def _work_timed(arg: int, out: int | None, _worker: Any = worker) -> int:
    # WORK on pools that record latency: the queue wait the start hook just gave is
    # this call's while it runs (a call run inline inside it has its own, then this
    # one's again).
    outer = _worker.call_wait_ns
    _worker.call_wait_ns = _worker.started_wait_ns
    try:
        return _work(arg, out)
    finally:
        _worker.call_wait_ns = outer


#: The work callback of calls on pools that record latency.
WORK_TIMED = _ffi.immortal(_ffi.WORK_FN_FAST(_work_timed))


def queue_wait() -> float | None:
    """Inside a call on a pool that records latency (``Pool(record_latency=True)``, or
    the default pool with ``ASYNCIFY_RECORD_LATENCY=1``): the seconds this call waited
    from its submit (its wait for a limiter included) to its start, as the library
    measured it. None anywhere else."""
    ns = worker.call_wait_ns
    return None if ns is None else ns / 1e9


def expired_error(rec: Call | LoopCall) -> ExpiredError:
    """The exception of a call whose start deadline passed (it never ran)."""
    lim, within = getattr(rec, "limits", (None, 0.0))
    name = "" if lim is None else lim.name
    waited = f"for the limiter {name!r} or " if lim is not None else "for "
    return ExpiredError(
        _ffi.EXPIRED,
        f"casyncify: the call did not start within {within:g} s (it waited {waited}a worker), so it never ran",
        within,
        name,
    )


def _done(
    data: int, handle: int, status: int, result: int | None, code: int, _calls: dict[int, Call | LoopCall] = registry
) -> None:
    # on_done of submit() futures and trio calls: on the worker for OK/FAILED,
    # on the cancelling (or shutting-down) thread for CANCELLED, on the thread that
    # noticed (the library's timer or a worker) for EXPIRED. Must not raise.
    rec = _calls.pop(data, None)
    if rec is None:
        return
    fut = rec.fut
    try:
        if type(fut) is not TaskFuture:
            fut.wake(status)  # a trio call: its task reads the outcome from the record
        elif status == _ffi.OK:
            fut.set_result(rec.result)
        elif status == _ffi.FAILED:
            exc = rec.exc
            rec.exc = None
            fut.set_exception(exc)
        elif status == _ffi.EXPIRED:
            fut.set_exception(expired_error(rec))
        else:
            fut._force_cancel()
    except BaseException:  # noqa: BLE001 - a done-callback of the future failed; never unwind into C
        pass


#: The ``on_done`` callback of detached calls (``arg``: the call's id).
DONE = _ffi.immortal(_ffi.DONE_FN(_done))


class TaskFuture(concurrent.futures.Future[Any]):
    """A ``concurrent.futures.Future`` of a call on a pool.

    ``cancel()`` follows ``asyncify`` rather than ``ThreadPoolExecutor``: a queued
    call never runs; a running one is abandoned (the future is cancelled at once,
    the function runs to its end with ``cancel_requested()`` true).
    ``result()``/``exception()`` called from a worker of the pool run a
    still-queued call inline, so nested waits cannot deadlock.
    """

    _handle = 0
    # Future's own state, made by its __init__ (not in its type stub).
    _condition: threading.Condition
    _state: str
    _invoke_callbacks: Callable[[], None]

    def _start(self) -> bool:
        with self._condition:
            if self._state == PENDING:
                self._state = RUNNING
                return True
            return False

    def _force_cancel(self) -> None:
        with self._condition:
            if self._state in (FINISHED, CANCELLED, CANCELLED_AND_NOTIFIED):
                return
            self._state = CANCELLED
            self._condition.notify_all()
        self._invoke_callbacks()
        self.set_running_or_notify_cancel()  # CANCELLED -> CANCELLED_AND_NOTIFIED, wakes wait()/as_completed()

    def cancel(self) -> bool:
        """Cancel the call: True unless it already finished (a running call is abandoned)."""
        with self._condition:
            if self._state == FINISHED:
                return False
            if self._state in (CANCELLED, CANCELLED_AND_NOTIFIED):
                return True
        if self._handle:
            plib.asyncify_cancel(self._handle)  # CANCELLED: DONE already ran, here
        return self.cancelled()

    def _left(self, timeout: float | None) -> float | None:
        """``timeout`` (the binding's one rule) for the stdlib wait, after running a
        still-queued call of this worker's pool inline (from a worker)."""
        timeout = seconds("timeout", timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._state in (PENDING, RUNNING) and self._handle and worker.pool is not None:
            status = lib.asyncify_wait(self._handle, milliseconds("timeout", timeout), None, None)
            if status == _ffi.E_WOULD_DEADLOCK:
                raise WouldDeadlockError(status, _ffi.last_error())
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def result(self, timeout: float | None = None) -> Any:
        """The call's return value (its exception re-raised), waiting up to ``timeout``
        seconds (None or ``inf``: as long as it takes; below 0: a poll; ``nan``: ``ValueError``)."""
        try:
            return super().result(self._left(timeout))
        finally:
            # The raised exception's traceback keeps this frame: it must not keep
            # the future, which keeps the exception (a cycle, as the stdlib avoids).
            del self

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The call's exception (None if it returned), waiting as ``result`` does."""
        return super().exception(self._left(timeout))


def call(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Run ``fn(*args, **kwargs)`` here, with the current overrides installed as
    this thread's C table (``asyncify_context_run``), so C code it calls sees them.
    """
    rec = Call(fn, args, kwargs, contextvars.copy_context(), None)
    cid = next(ids)
    registry[cid] = rec
    try:
        status = fast.asyncify_context_run(current.get(ROOT).ptr, WORK, cid, None, None)
    finally:
        registry.pop(cid, None)
    check(status)
    return rec.outcome()


def cancel_requested() -> bool:
    """Inside a call: True once it was cancelled (abandoned), so it may stop early."""
    return bool(plib.asyncify_cancel_requested())


after_fork_in_child(registry.clear)
