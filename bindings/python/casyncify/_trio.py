"""``asyncify()`` under trio (bare ``trio.run`` or AnyIO's trio backend).

Imported on first use under trio, so that trio stays optional.

A call is submitted like a ``submit()`` future: detached, with the binding's
``on_done`` callback, which runs on the worker (or on the cancelling thread).
There it hands the wake-up to trio with ``TrioToken.run_sync_soon`` — thread-safe,
no casyncify lock held — and the task, parked in ``wait_task_rescheduled``, is
rescheduled on trio's thread and reads the outcome from the call's record.

Cancellation means what it means under asyncio: the abort callback cancels the
call in the library (a queued call never runs; a running one is abandoned and
``casyncify.cancel_requested()`` turns true inside it) and lets the task go at
once. It also fills the register read by ``trio.from_thread.check_cancelled``.
"""

from __future__ import annotations

from typing import Any, Callable

import trio

from . import _anyio_compat, _ffi
from ._calls import Call, expired_error, ids, registry
from ._errors import CancelledError
from ._ffi import plib

__all__ = ["Waiter", "call"]


class Waiter:
    """The trio side of one call: which task to wake, through which run's token."""

    __slots__ = ("task", "token", "status", "cancel_register")

    def __init__(self, task: trio.lowlevel.Task, token: trio.lowlevel.TrioToken):
        self.task: trio.lowlevel.Task | None = task  # None once aborted or woken
        self.token = token
        self.status: int | None = None
        self.cancel_register: list[Any] = [None]  # trio.from_thread.check_cancelled reads [0]

    def wake(self, status: int) -> None:
        """The call is terminal (any thread). Must not raise: called from C."""
        self.status = status
        try:
            self.token.run_sync_soon(self._reschedule)
        except trio.RunFinishedError:
            pass  # the run is over: the call completes into nothing

    def _reschedule(self) -> None:
        # On trio's thread. An aborted task is no longer waiting: leave it be.
        task, self.task = self.task, None
        if task is not None:
            trio.lowlevel.reschedule(task)


async def call(rec: Call, submit: Callable[[int], int]) -> Any:
    """Run the call ``rec`` and wait for it in the current trio task. ``submit(id)``
    is its pool's: it submits the call of that id detached, with ``DONE``, and
    returns the handle."""
    await trio.lowlevel.checkpoint_if_cancelled()  # cancelled already: nothing is submitted
    waiter = Waiter(trio.lowlevel.current_task(), trio.lowlevel.current_trio_token())
    rec.fut = waiter
    rec.marks = _anyio_compat.trio_marks(waiter.token, waiter.cancel_register)
    cid = next(ids)
    registry[cid] = rec
    try:
        handle = submit(cid)
    except BaseException:
        registry.pop(cid, None)
        raise

    def abort(raise_cancel: Any) -> trio.lowlevel.Abort:
        # Queued: it never runs. Running: abandoned; the task goes now.
        waiter.cancel_register[0] = raise_cancel
        waiter.task = None
        rec.abandoned = True
        plib.asyncify_cancel(handle)  # a detached handle: harmless once completed
        return trio.lowlevel.Abort.SUCCEEDED

    # Nothing yields between the submit and here, so the wake-up, which runs on
    # trio's thread, always finds the task parked.
    await trio.lowlevel.wait_task_rescheduled(abort)
    if waiter.status == _ffi.CANCELLED:  # by a pool shutdown, not by this task
        raise CancelledError(_ffi.CANCELLED, "casyncify: the call was cancelled by its pool's shutdown")
    if waiter.status == _ffi.EXPIRED:  # its start deadline passed: it never ran
        raise expired_error(rec)
    return rec.outcome()
