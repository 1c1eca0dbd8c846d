"""Event loops: which async library runs this thread, and asyncio's completions.

``asyncify()`` calls under asyncio complete through one completion queue per
event loop: its eventfd registered with ``loop.add_reader``, drained in batches
of 64, so a burst of completions costs one wake-up of the loop. Nothing here
holds a loop: a loop dropped with calls pending is still collected, and those
calls then complete into nothing. (trio's side is ``_trio``.)
"""

from __future__ import annotations

import asyncio
import struct
import sys
import weakref
from ctypes import byref, c_size_t, c_uint64, c_void_p, sizeof
from typing import Any, Callable

from . import _anyio_compat, _ffi, lowlevel
from ._calls import SUBMIT_DEFAULTS, Call, LoopCall, expired_error, registry
from ._ffi import plib
from ._lifecycle import after_fork_in_child, life

try:  # names the running async library (asyncio, trio, AnyIO's backends) when installed
    import sniffio
except ImportError:  # pragma: no cover - asyncio, then trio, are tried by hand
    sniffio = None  # type: ignore[assignment]  # an optional dependency

__all__ = ["LoopState", "loop_state", "running_library"]

_BATCH = 64


class LoopState:
    """One event loop's completion queue, its fd in ``loop.add_reader``.

    Nothing here holds the loop (``loop_ref`` is weak): the loop owns its state
    (through its reader callback and ``_loops``, a weak-keyed map), never the
    reverse, so a loop dropped with calls pending is still collected;
    ``_loop_gone`` then detaches those calls and frees the queue.
    """

    __slots__ = (
        "cq", "fd", "batch", "count", "pending", "wakeups", "generation", "loop_ref", "__weakref__",
        "opts", "opts_ref", "handle", "handle_ref", "raw", "marks", "arg", "drain_args", "token_ref",
        "context_ptr", "pool_ptr",
    )  # fmt: skip

    def __init__(self) -> None:
        cq = lowlevel.cq_new()
        try:
            self.fd = lowlevel.cq_fd(cq)
        except BaseException:
            plib.asyncify_cq_free(cq)
            raise
        self.cq = cq
        self.batch = (_ffi.Completion * _BATCH)()
        self.raw = memoryview(self.batch).cast("B")  # the same bytes, read with _COMPLETIONS
        self.count = c_size_t()
        #: id -> record of this loop's calls not yet completed.
        self.pending: dict[int, LoopCall] = {}
        self.wakeups = 0  # times the loop woke for this queue
        self.generation = life.fork_generation
        self.loop_ref: Callable[[], asyncio.AbstractEventLoop | None] = _no_loop  # weakref.ref(loop) once registered
        # The submit options and handle of this loop's calls, made once: only the
        # loop's thread submits through them, with the GIL held from the field
        # writes to the end of the (PyDLL) asyncify_submit, which copies them.
        # Detached: a handle releases itself once its completion is queued, so
        # draining costs no release call; handles are generation-checked, so
        # cancelling one that already finished is a harmless E_INVALID_HANDLE.
        self.opts = opts = _ffi.SubmitOptions.from_buffer_copy(SUBMIT_DEFAULTS)
        opts.cq = self.cq
        opts.flags = _ffi.SUBMIT_DETACHED
        self.opts_ref = byref(opts)
        #: What ``opts.context`` and ``opts.pool`` hold (written only when they change).
        self.context_ptr: int | None = None
        self.pool_ptr: int | None = None
        self.handle = c_uint64()
        self.handle_ref = byref(self.handle)
        #: The arguments of ``_ffi.raw``'s calls, made once: the call id given to
        #: ``asyncify_submit`` (set before each submit), and ``asyncify_cq_drain``'s.
        self.arg = c_void_p()
        self.drain_args = (c_void_p(self.cq), byref(self.batch), c_size_t(_BATCH), byref(self.count))
        #: The AnyIO marks of this loop's calls made outside any AnyIO cancel scope,
        #: made once (``_anyio_compat.asyncio_marks``).
        self.marks: list[Any] = [None]
        #: A weak reference to the loop's AnyIO token, which the loop owns (it is an
        #: argument of the loop's reader); None until AnyIO is seen.
        self.token_ref: Callable[[], Any] | None = None

    def own_token(self, loop: asyncio.AbstractEventLoop) -> Callable[[], Any] | None:
        """``token_ref``, made on first use from ``loop`` (this state's loop, on its
        thread; AnyIO imported); None without AnyIO's hooks."""
        if self.token_ref is None:
            token = _anyio_compat.loop_token(loop)
            if token is None:
                return None
            try:
                token_ref = weakref.ref(token)
            except TypeError:  # an AnyIO whose tokens take no weak reference: no marks
                _anyio_compat.warn_once("anyio", "anyio.lowlevel.EventLoopToken takes no weak reference")
                return None
            # The loop owns the token through its reader's arguments (never this
            # state: _loops and the finalizer hold it, and must not hold the loop);
            # add_reader replaces the reader, so the fd is never without one.
            loop.add_reader(self.fd, _drain, self, token)
            self.token_ref = token_ref
        return self.token_ref

    def free(self) -> None:
        """Free the queue (its fd closes with it); idempotent."""
        if self.cq and not life.finalized and self.generation == life.fork_generation:
            cq, self.cq = self.cq, 0
            self.drain_args[0].value = None  # a late drain gets E_NULL, never the freed queue
            plib.asyncify_cq_free(cq)


def _no_loop() -> None:
    return None


#: One ``asyncify_completion`` (handle, status, code, result, user_data) as
#: bytes: unpacking a batch at once is cheaper than a ctypes view per field.
_COMPLETIONS = struct.Struct("@QiiPP")  # native: the C layout
assert _COMPLETIONS.size == sizeof(_ffi.Completion)


def _drain(state: LoopState, _token: Any = None, _calls: dict[int, Call | LoopCall] = registry) -> None:
    """The fd is readable: move every waiting completion to its future, in batches.
    (``_token``: the loop's AnyIO token, kept here only to be owned by the loop.)"""
    state.wakeups += 1
    raw = state.raw
    count = state.count
    drain_args = state.drain_args
    drain = _ffi.raw.asyncify_cq_drain
    pending = state.pending
    unpack = _COMPLETIONS.iter_unpack
    size = _COMPLETIONS.size
    cancelled = _ffi.CANCELLED
    while True:
        drain(*drain_args)  # (cq, batch, _BATCH, &count), made once
        n = count.value
        for _handle, status, _code, _result, cid in unpack(raw[: n * size]):
            rec = pending.pop(cid, None)
            _calls.pop(cid, None)
            if rec is None:
                continue
            rec.handle = 0
            fut = rec()  # the record is the weak reference to the future
            if fut is None or fut.done():  # its task is gone, or was cancelled
                continue
            if status < cancelled:  # OK or FAILED: the outcome is in the record
                fut.set_result(None)
            elif status == cancelled:  # cancelled by a pool shutdown, not by our awaiter
                fut.cancel()
            else:  # EXPIRED: its start deadline passed; it never ran. Raised by outcome()
                rec.exc = expired_error(rec)  # (in the future, it would keep a cycle with its traceback)
                fut.set_result(None)
        if n < _BATCH:
            return


def _loop_gone(state: LoopState) -> None:
    """The loop was collected: its pending calls complete into nothing; free its queue."""
    if state.generation != life.fork_generation:
        return  # a queue of the parent process: never touched in a forked child
    pending = list(state.pending.items())
    state.pending.clear()
    for cid, rec in pending:
        registry.pop(cid, None)  # a call that has not started yet will not run Python
        rec.abandoned = True
        handle, rec.handle = rec.handle, 0
        if handle:  # detached (LoopState): nothing to release
            plib.asyncify_cancel(handle)  # queued: never runs; running: cancel_requested()
    state.free()


#: event loop -> its LoopState. Weak keys, so no lock: an entry goes with its
#: loop (the removal runs from GC, at any allocation, and must never wait).
_loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopState] = weakref.WeakKeyDictionary()


def _no_state() -> LoopState | None:
    return None


#: A weak reference to the last loop's state (held weakly: a dropped loop's
#: state must go with it): the next call on that loop skips the weak-keyed map.
_last_state: Callable[[], LoopState | None] = _no_state


def loop_state(loop: asyncio.AbstractEventLoop) -> LoopState:
    """The completion queue of ``loop`` (made and registered on first use)."""
    global _last_state
    state = _last_state()
    if state is not None and state.loop_ref() is loop and state.cq:
        return state
    state = _loops.get(loop)
    if state is None:
        state = _new_loop_state(loop)
    _last_state = weakref.ref(state)
    return state


def _new_loop_state(loop: asyncio.AbstractEventLoop) -> LoopState:
    # No lock is held from here on: add_reader and the allocations below may run
    # any Python (GC finalizers of other loops included).
    state = LoopState()
    try:
        loop.add_reader(state.fd, _drain, state)
    except BaseException:
        state.free()
        raise
    winner = _loops.setdefault(loop, state)  # one dict operation: atomic under the GIL
    if winner is not state:  # another thread registered this loop first (it cannot run it, though)
        loop.remove_reader(state.fd)
        state.free()
        return winner
    state.loop_ref = weakref.ref(loop)
    weakref.finalize(loop, _loop_gone, state)
    return state


_get_running_loop = asyncio._get_running_loop


def running_library() -> str:
    """The async library running in this thread: "asyncio" or "trio".

    sniffio when installed (it knows AnyIO's backends and trio-asyncio), else an
    asyncio running loop, else a trio run. ``RuntimeError`` for none or another.
    """
    name: str | None
    if sniffio is not None:
        try:
            name = sniffio.current_async_library()
        except sniffio.AsyncLibraryNotFoundError:
            name = None
    elif _get_running_loop() is not None:
        name = "asyncio"
    else:
        name = _trio_running()
    if name in ("asyncio", "trio"):
        return name
    if name is None:
        raise RuntimeError("casyncify.asyncify: no running event loop (asyncio or trio) in this thread")
    raise RuntimeError(f"casyncify.asyncify runs under asyncio or trio, not {name}")


def _trio_running() -> str | None:
    trio: Any = sys.modules.get("trio")
    if trio is None:
        return None
    try:
        trio.lowlevel.current_trio_token()
    except RuntimeError:
        return None
    return "trio"


def _forget_parent() -> None:
    global _last_state
    _loops.clear()
    _last_state = _no_state


after_fork_in_child(_forget_parent)
