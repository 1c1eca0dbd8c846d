"""The high-level binding: overrides on ``contextvars``, pools, ``asyncify``, futures.

How the pieces fit (see the package README for the user's view):

* **Overrides.** A ``ContextVar`` holds a ``_Snap``: an immutable ``dict`` (key ->
  Python value) and, beside it, the matching C ``asyncify_context*`` built with
  ``asyncify_context_with_ptr`` (O(log n) per change in C; the dict copy is O(n) in
  Python, n being the number of keys). Each Python value is stored in C as a
  pointer value: the binding ``Py_IncRef``\\ s it, passes its address, and gives
  the library one module-level release callback that ``Py_DecRef``\\ s it (ctypes
  takes the GIL). The C context is freed when its ``_Snap`` is collected; the
  library releases a value when no context, table or task holds it any more.
* **Calls.** Each call records ``(fn, args, kwargs, contextvars.copy_context())``
  in ``_calls`` under an integer id, and submits ONE module-level work callback
  with ``arg = id`` and ``opts.context`` = the caller's C context. The worker runs
  ``ctx.run(fn, *args, **kwargs)`` and stores the return value or exception in
  the record (never through the C result pointer).
* **Completion.** ``asyncify()`` calls complete through one completion queue per
  event loop (its eventfd registered with ``loop.add_reader``, drained in batches);
  ``submit()`` futures complete through an ``on_done`` callback on the worker (no
  extra thread hop; the handle is DETACHED and releases itself).
* **Workers.** Pools made by the binding (the default one included) have
  start/stop hooks that give each worker one lasting Python thread state.
"""

from __future__ import annotations

import asyncio
import atexit
import builtins
import concurrent.futures
import contextvars
import ctypes
import dataclasses
import functools
import inspect
import itertools
import os
import struct
import sys
import threading
import time
import types
import weakref
from collections.abc import Mapping
from concurrent.futures._base import (  # the states a Future moves through
    CANCELLED,
    CANCELLED_AND_NOTIFIED,
    FINISHED,
    PENDING,
    RUNNING,
)
from ctypes import byref, c_int32, c_size_t, c_uint32, c_uint64, c_void_p, sizeof
from typing import TYPE_CHECKING, Any, Callable, TypeVar, overload

from . import _anyio_compat, _ffi, _timeouts

try:  # names the running async library (asyncio, trio, AnyIO's backends) when installed
    import sniffio as _sniffio
except ImportError:  # pragma: no cover - asyncio, then trio, are tried by hand
    _sniffio = None
from ._errors import (
    Error,
    ForkedError,
    InvalidArgumentError,
    NotFoundError,
    ShutDownError,
    WouldDeadlockError,
    check,
    error_for,
)
from ._ffi import fast, lib, plib

# ---------------------------------------------------------------------------
# Process-wide state
# ---------------------------------------------------------------------------


class _Lifecycle:
    closing = False  # atexit began: new calls are refused
    finalized = False  # atexit done: C contexts are no longer freed (leaked at exit)
    fork_generation = 0  # bumped in a forked child: parent pools are unusable there
    exit_timeout: float | None = 5.0  # seconds atexit waits for running Python calls (None: forever)
    live_workers = 0  # worker threads holding a thread state (start hook ran, stop hook not yet)


_life = _Lifecycle()
_workers_cv = threading.Condition(threading.Lock())
_tls = threading.local()

_MISSING: Any = object()

if TYPE_CHECKING:
    from collections.abc import Coroutine

    if sys.version_info >= (3, 10):
        from typing import ParamSpec
    else:  # typing_extensions: needed by type checkers only, never imported at run time
        from typing_extensions import ParamSpec

    _P = ParamSpec("_P")
    _R = TypeVar("_R")

# ---------------------------------------------------------------------------
# Python values as C pointer values
# ---------------------------------------------------------------------------

_incref = _ffi.Py_IncRef
_decref = _ffi.Py_DecRef


def _release_value(ptr, _decref=_decref):
    # The library calls this exactly once per stored value, on whichever thread
    # drops the last table/context/task holding it; ctypes holds the GIL here.
    if ptr:
        _decref(ptr)


#: The ONE release function of every Python value the binding hands to C.
_RELEASE = _ffi.immortal(_ffi.FREE_FN(_release_value))
_RELEASE_ADDR: int = ctypes.cast(_RELEASE, c_void_p).value  # type: ignore[assignment]


class ForeignPointer(int):
    """A pointer value set by C code, exposed as its address (never dereferenced)."""

    def __repr__(self) -> str:
        return f"ForeignPointer(0x{int(self):x})"


def _key_bytes(key: str) -> bytes:
    if not isinstance(key, str):
        raise TypeError(f"override keys are str, not {type(key).__name__}")
    # surrogatepass: a key that is not valid UTF-8 reaches the library, which
    # refuses it with ASYNCIFY_E_INVALID_ARGUMENT and its own message.
    kb = key.encode("utf-8", "surrogatepass")
    if b"\0" in kb:
        raise InvalidArgumentError(_ffi.E_INVALID_ARGUMENT, f"casyncify: the key {key!r} contains a NUL character")
    return kb


class _Snap:
    """One immutable override mapping plus its C context (freed with it)."""

    __slots__ = ("values", "ptr", "__weakref__")

    def __init__(self, values: dict, ptr: int):
        self.values = values
        self.ptr = ptr

    def __del__(self, _free=plib.asyncify_context_free, _life=_life):
        ptr = self.ptr
        if ptr and not _life.finalized:
            self.ptr = None
            _free(ptr)

    def with_(self, key: str, value: Any) -> _Snap:
        kb = _key_bytes(key)
        # Everything that can raise (a str subclass whose __hash__ fails, say)
        # comes before the C call: once C holds the value, nothing may fail.
        values = dict(self.values)
        values[key] = value
        out = c_void_p()
        _incref(value)  # this reference now belongs to the C value
        status = plib.asyncify_context_with_ptr(self.ptr, kb, id(value), _RELEASE, byref(out))
        if status < 0:
            err = error_for(status)  # read the message before anything else calls in
            _decref(id(value))  # on error the caller keeps the pointer
            raise err
        return _Snap(values, out.value)

    def without(self, key: str) -> _Snap:
        kb = _key_bytes(key)
        if key not in self.values:
            raise NotFoundError(_ffi.E_NOT_FOUND, f"casyncify.remove: no override {key!r}")
        values = dict(self.values)
        del values[key]
        out = c_void_p()
        check(plib.asyncify_context_without(self.ptr, kb, byref(out)))
        return _Snap(values, out.value)


def _empty_context() -> int:
    out = c_void_p()
    check(plib.asyncify_context_empty(byref(out)))
    return out.value  # type: ignore[return-value]


#: The mapping of a context that never set anything.
_ROOT = _Snap({}, _empty_context())
_state: contextvars.ContextVar[_Snap] = contextvars.ContextVar("casyncify.overrides")
_globals: dict = {}  # configure(**settings): replaced, never mutated (copy on write)
_globals_lock = threading.Lock()


def set(key: str, value: Any) -> None:  # noqa: A001 - the API is casyncify.set
    """Set ``key`` to ``value`` in the current context (this asyncio task / thread).

    Any Python object; calls made from here on get the very same object.
    """
    _state.set(_state.get(_ROOT).with_(key, value))


def remove(key: str) -> None:
    """Remove ``key`` from the current context; ``NotFoundError`` (a ``KeyError``) if absent."""
    _state.set(_state.get(_ROOT).without(key))


def get(key: str, default: Any = None) -> Any:
    """The value the current context sees for ``key``.

    Order: the overrides of this context (``set``/``context``), then the
    process-wide settings (``configure(**settings)``), then what C code put in
    this thread's table or in the library's global layer: C bytes come back as
    ``bytes``, a C pointer as a ``ForeignPointer`` (its address).
    """
    snap = _state.get(_ROOT)
    value = snap.values.get(key, _MISSING)
    if value is not _MISSING:
        return value
    value = _globals.get(key, _MISSING)
    if value is not _MISSING:
        return value
    return _c_lookup(key, default, snap is _ROOT)


def _settable(key: str) -> bool:
    """Whether the library accepts ``key`` at all (not empty, no NUL, UTF-8)."""
    if not key or "\0" in key:
        return False
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


def _c_lookup(key: str, default: Any, own_values: bool) -> Any:
    """Read ``key`` from this thread's C table (then the C global layer).

    Pointers whose release function is the binding's are Python objects set from
    Python; any other pointer is foreign and only its address is returned. When
    this context has Python-side overrides (``own_values`` false), the Python
    mapping is authoritative for the binding's own values: one that is in the
    C table but not in the mapping was removed from Python, so it is skipped.
    """
    if not isinstance(key, str):
        raise TypeError(f"override keys are str, not {type(key).__name__}")
    if not _settable(key):
        return default  # nothing can be stored under a key the library refuses
    kb = key.encode("utf-8")
    ptr = c_void_p()
    rel = c_void_p()
    status = plib.asyncify_override_get_ptr_ex(kb, byref(ptr), byref(rel))
    if status == _ffi.OK:
        if rel.value == _RELEASE_ADDR and ptr.value:
            return ctypes.cast(ptr, ctypes.py_object).value if own_values else default
        return ForeignPointer(ptr.value or 0)
    if status == _ffi.E_NOT_FOUND:
        return default
    if status == _ffi.E_INVALID_ARGUMENT:  # a bytes value (or a key the library refuses)
        return _c_bytes(kb, default)
    check(status)
    return default


def _c_bytes(kb: bytes, default: Any) -> Any:
    n = c_size_t(0)
    while True:
        status = plib.asyncify_override_get(kb, None, 0, byref(n))
        if status in (_ffi.E_INVALID_ARGUMENT, _ffi.E_NOT_FOUND):
            return default  # a key refused by the library, or removed meanwhile
        if status not in (_ffi.OK, _ffi.E_BUFFER_TOO_SMALL):
            check(status)
        if n.value == 0:
            return b""
        buf = ctypes.create_string_buffer(n.value)
        status = plib.asyncify_override_get(kb, buf, n.value, byref(n))
        if status == _ffi.OK:
            return buf.raw[: n.value]
        if status != _ffi.E_BUFFER_TOO_SMALL:  # the global layer changed meanwhile: retry
            check(status)


def overrides() -> Mapping[str, Any]:
    """A read-only dict view of the current context's overrides (Python-set keys)."""
    return types.MappingProxyType(_state.get(_ROOT).values)


class context:
    """``with casyncify.context(k=v, ...):`` like ``dspy.context``.

    Sets the keys for the block and restores the exact previous mapping on exit
    (``ContextVar.reset``). Nests; works in threads and asyncio tasks alike.
    A positional mapping allows keys that are not identifiers.
    """

    __slots__ = ("_items", "_tokens")

    def __init__(self, mapping: Mapping[str, Any] | None = None, /, **kwargs: Any):
        items = dict(mapping) if mapping else {}
        items.update(kwargs)
        self._items = items
        self._tokens: list = []

    def __enter__(self) -> context:
        snap = _state.get(_ROOT)
        for key, value in self._items.items():
            snap = snap.with_(key, value)
        self._tokens.append(_state.set(snap))
        return self

    def __exit__(self, *exc: object) -> None:
        _state.reset(self._tokens.pop())


# ---------------------------------------------------------------------------
# Calls: records, the work callback, completion callbacks
# ---------------------------------------------------------------------------


class _Call:
    """One call: what to run, in which context, and where its outcome goes.

    ``fut`` is a ``TaskFuture`` (``submit``), a weak reference to the asyncio
    future the awaiting task holds (``asyncify`` under asyncio: a pending call
    must not keep a dropped event loop alive), or a trio waiter. ``marks`` are
    the AnyIO/trio worker-thread marks set around ``fn`` (``_anyio_compat``).
    """

    __slots__ = ("fn", "args", "kwargs", "ctx", "result", "exc", "fut", "handle", "abandoned", "pool", "marks")

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        ctx: contextvars.Context,
        pool: Pool | None,
    ) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.ctx = ctx
        self.result: Any = None
        self.exc: BaseException | None = None
        self.fut: Any = None  # TaskFuture, weakref to an asyncio future, or a trio Waiter
        self.handle = 0
        self.abandoned = False
        self.pool = pool  # keeps the Pool object alive while the call is pending
        self.marks: tuple[Any, ...] | None = None

    def outcome(self) -> Any:
        """The call's result, or its exception re-raised (the same object)."""
        exc = self.exc
        if exc is not None:
            # Dropped from the record and this frame before it propagates: the
            # traceback keeps the frame, which must not hold it in a cycle.
            self.exc = None
            try:
                raise exc
            finally:
                exc = None
        return self.result


_calls: dict[int, _Call] = {}
_ids = itertools.count(1)


def _work(arg, _out, _calls=_calls):
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


_WORK = _ffi.immortal(_ffi.WORK_FN_FAST(_work))


def _done(data, handle, status, result, code, _calls=_calls):
    # on_done of submit() futures: on the worker for OK/FAILED, on the
    # cancelling (or shutting-down) thread for CANCELLED. Must not raise.
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
        else:
            fut._force_cancel()
    except BaseException:  # noqa: BLE001 - a done-callback of the future failed; never unwind into C
        pass


_DONE = _ffi.immortal(_ffi.DONE_FN(_done))


def _thread_start(data):
    # Start hook of every pool made by the binding: one lasting thread state per
    # worker (the ctypes callback that calls us created it; this extra Ensure
    # keeps it after the callback returns, with the GIL released).
    try:
        _tls.gilstate = _ffi.PyGILState_Ensure()
        _tls.pool = data
        with _workers_cv:
            _life.live_workers += 1
        _tls.counted = True
        _name_thread()
    except BaseException:  # noqa: BLE001
        pass


def _name_thread() -> None:
    """Give threading's view of a worker its OS name ("casyncify-3"), not "Dummy-N"."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/comm") as f:
            name = f.read().strip()
        if name:
            threading.current_thread().name = name
    except OSError:
        pass


def _thread_stop(data):
    try:
        # What code on this worker set outside any call (a done-callback of a
        # submit() future, say) lives in the thread's own context; drop it now,
        # while the thread state is whole: freed during the thread state's
        # teardown, its C context's release would call into a dying thread state.
        _state.set(_ROOT)
        state = _tls.__dict__.pop("gilstate", None)
        _tls.pool = None
        if state is not None:
            _ffi.PyGILState_Release(state)  # the callback's own release then deletes the thread state
    finally:
        if _tls.__dict__.pop("counted", False):
            with _workers_cv:  # the last thing this worker does in Python
                _life.live_workers -= 1
                _workers_cv.notify_all()


_HOOK_START = _ffi.immortal(_ffi.THREAD_HOOK(_thread_start))
_HOOK_STOP = _ffi.immortal(_ffi.THREAD_HOOK(_thread_stop))


def cancel_requested() -> bool:
    """Inside a call: True once it was cancelled (abandoned), so it may stop early."""
    return bool(plib.asyncify_cancel_requested())


# ---------------------------------------------------------------------------
# Pools
# ---------------------------------------------------------------------------

UNBOUNDED = _ffi.UINT32_MAX


def _u32(name: str, n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{name} must be an int, not {type(n).__name__}")
    if not 0 <= n <= _ffi.UINT32_MAX:
        raise ValueError(f"{name} must be between 0 and {_ffi.UINT32_MAX} (UNBOUNDED), got {n}")
    return n


@dataclasses.dataclass(frozen=True)
class Stats:
    """A pool's counters (``asyncify_pool_stats``); exact when the pool is quiet."""

    limit: int
    threads: int
    idle_threads: int
    queued: int
    running: int
    submitted: int
    completed: int  # work returned normally
    failed: int  # work raised
    cancelled: int  # cancelled before it started
    abandoned: int  # cancelled while running


#: Seconds: every wait of the binding in Python wakes at least this often, so
#: that Ctrl-C (a KeyboardInterrupt, raised between two C calls) gets through.
_SLICE = 0.1


_seconds = _timeouts.seconds


_SUBMIT_TEMPLATE = _ffi.SubmitOptions()
check(plib.asyncify_submit_options_init(byref(_SUBMIT_TEMPLATE), sizeof(_SUBMIT_TEMPLATE)))
_pool_serials = itertools.count(1)
_open_pools: weakref.WeakSet[Pool] = weakref.WeakSet()


class Pool:
    """A pool of worker threads running at most ``max_workers`` calls at once.

    ``with casyncify.Pool(4) as pool:`` frees it on exit (queued calls are
    cancelled, running ones waited for). ``UNBOUNDED`` (2**32-1) means no limit,
    0 pauses the pool.
    """

    def __init__(
        self,
        max_workers: int = 8,
        *,
        max_queued: int = 0,
        keep_alive: float | None = None,
        release_slot_on_abandon: bool = False,
        thread_name: str = "casyncify",
        thread_hooks: bool = True,
    ):
        opts = _ffi.PoolOptions()
        check(plib.asyncify_pool_options_init(byref(opts), sizeof(opts)))
        opts.max_workers = _u32("max_workers", max_workers)
        opts.max_queued = _u32("max_queued", max_queued)
        if keep_alive is not None:
            ms = int(keep_alive * 1000)
            if ms <= 0:
                raise ValueError("keep_alive must be positive (seconds)")
            opts.keep_alive_ms = _u32("keep_alive (ms)", ms)
        if release_slot_on_abandon:
            opts.flags = _ffi.POOL_RELEASE_SLOT_ON_ABANDON
        if not isinstance(thread_name, str):
            raise TypeError(f"thread_name must be a str, not {type(thread_name).__name__}")
        if "\0" in thread_name:
            raise ValueError("thread_name must not contain a NUL character")  # C would cut it there
        name = thread_name.encode()
        opts.thread_name = name
        # Workers get what threading gives a new thread: threading.stack_size()
        # when the program set it, else the platform's default (0).
        opts.stack_size = threading.stack_size()
        self._serial = next(_pool_serials)
        if thread_hooks:
            opts.on_thread_start = _HOOK_START
            opts.on_thread_stop = _HOOK_STOP
            opts.hook_data = self._serial
        out = c_void_p()
        check(lib.asyncify_pool_new_ex(byref(opts), byref(out)))
        self._ptr: int | None = out.value
        self._closing: int | None = None  # the pointer while close() waits (or was interrupted)
        self._closers = 0  # close() calls waiting on _closing: the last one frees it
        self._generation = _life.fork_generation
        self._lock = threading.RLock()
        _open_pools.add(self)

    # -- the pointer, guarded -------------------------------------------------

    def _pointer(self) -> int:
        if self._generation != _life.fork_generation:
            raise ForkedError(_ffi.E_FORKED, "casyncify: this Pool was created by the parent process before fork()")
        ptr = self._ptr
        if ptr is None:
            raise ShutDownError(_ffi.E_SHUT_DOWN, "casyncify: the pool is closed")
        return ptr

    def _submit(self, rec: _Call, cid: int, cq: int | None) -> int:
        """Submit ``rec`` (registered as ``cid``); returns the handle."""
        snap = _state.get(_ROOT)
        opts = _ffi.SubmitOptions.from_buffer_copy(_SUBMIT_TEMPLATE)
        if cq is None:
            opts.on_done = _DONE
            opts.flags = _ffi.SUBMIT_DETACHED
        else:
            opts.cq = cq
        opts.on_done_data = cid
        opts.context = snap.ptr
        h = c_uint64()
        if _life.closing:
            raise ShutDownError(_ffi.E_SHUT_DOWN, "casyncify: the interpreter is exiting")
        with self._lock:  # close() cannot free the pool under this submit
            opts.pool = self._pointer()
            status = fast.asyncify_submit(_WORK, cid, byref(opts), byref(h))
            if status < 0:
                raise error_for(status)
        return h.value

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> TaskFuture:
        """Run ``fn(*args, **kwargs)`` on this pool with the caller's overrides."""
        rec = _Call(fn, args, kwargs, contextvars.copy_context(), self)
        fut = rec.fut = TaskFuture()
        cid = next(_ids)
        _calls[cid] = rec
        try:
            fut._handle = self._submit(rec, cid, None)
        except BaseException:
            _calls.pop(cid, None)
            raise
        return fut

    def asyncify(self, fn: Callable[_P, _R]) -> Callable[_P, Coroutine[Any, Any, _R]]:
        """``casyncify.asyncify(fn, pool=self)``."""
        return asyncify(fn, pool=self)

    # -- configuration and counters ------------------------------------------

    @property
    def max_workers(self) -> int:
        n = c_uint32()
        with self._lock:
            check(plib.asyncify_get_max_workers(self._pointer(), byref(n)))
        return n.value

    @max_workers.setter
    def max_workers(self, n: int) -> None:
        n = _u32("max_workers", n)
        with self._lock:
            check(plib.asyncify_set_max_workers(self._pointer(), n))

    def stats(self) -> Stats:
        s = _ffi.PoolStats()
        s.struct_size = sizeof(s)
        with self._lock:
            check(plib.asyncify_stats(self._pointer(), byref(s)))
        return Stats(
            s.limit, s.threads, s.idle_threads, s.queued, s.running,
            s.submitted, s.completed, s.failed, s.cancelled, s.abandoned,
        )  # fmt: skip

    @property
    def closed(self) -> bool:
        return self._ptr is None

    # -- lifetime ---------------------------------------------------------------

    def close(self, timeout: float | None = None) -> bool:
        """Shut the pool down and free it: new calls get ``ShutDownError``, queued
        calls are cancelled (here), running ones are waited for up to ``timeout``
        seconds (None or ``inf``: as long as they take; ``nan``: ``ValueError``).
        True when none was left running. Idempotent. From a worker of this pool:
        ``WouldDeadlockError``.

        The wait wakes every 100 ms, so Ctrl-C gets through; a
        ``KeyboardInterrupt`` leaves the pool closing (closed to new calls, not
        yet freed): ``close()`` again resumes the wait, and exit or garbage
        collection frees it.
        """
        timeout = _seconds("timeout", timeout)  # checked before anything changes
        with self._lock:
            ptr = self._ptr or self._closing
            if ptr is None:
                return True
            if self._generation != _life.fork_generation:
                self._pointer()  # raises ForkedError
            if getattr(_tls, "pool", None) == self._serial:
                raise WouldDeadlockError(
                    _ffi.E_WOULD_DEADLOCK, "casyncify: a pool cannot be closed from its own worker"
                )
            self._ptr, self._closing = None, ptr
            self._closers += 1
        try:
            quiet = self._wait_closed(ptr, timeout)
        except BaseException:  # KeyboardInterrupt between two slices, say: stay closing
            with self._lock:
                self._closers -= 1
            raise
        with self._lock:
            self._closers -= 1
            # The last closer frees: another one may still be waiting on the pointer.
            free = self._closers == 0 and self._closing == ptr
            if free:
                self._closing = None
        if free:
            _open_pools.discard(self)
            status = lib.asyncify_pool_free(ptr, 0)  # after a quiet close: frees at once
            check(status)
            quiet = quiet or status == _ffi.OK
        return quiet

    @staticmethod
    def _wait_closed(ptr: int, timeout: float | None) -> bool:
        """Shut the pool down and wait, in slices, until it is quiet (True) or ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = _SLICE if deadline is None else min(_SLICE, max(0.0, deadline - time.monotonic()))
            status = lib.asyncify_pool_close(ptr, int(left * 1000))  # GIL released: running calls need it
            if status == _ffi.OK:
                return True
            check(status)
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(
        self, _life=_life, _tls=_tls, _threading=threading, _free=lib.asyncify_pool_free, _pfree=plib.asyncify_pool_free
    ):
        # Reached only once no call of this pool is pending (each record holds
        # its pool), so nothing queued is cancelled here. Globals are bound as
        # defaults: this may run during interpreter teardown.
        ptr = getattr(self, "_ptr", None) or getattr(self, "_closing", None)  # open, or an interrupted close
        if not ptr or _life.finalized or self._generation != _life.fork_generation:
            return
        self._ptr = self._closing = None
        if getattr(_tls, "pool", None) == self._serial:
            # Freeing from one's own worker would wait for itself: hand it off.
            _threading.Thread(target=_free, args=(ptr, 0), daemon=True).start()
        else:
            _pfree(ptr, 0)  # timeout 0: never blocks

    def __repr__(self) -> str:
        state = "closed" if self._ptr is None else f"max_workers={self.max_workers}"
        return f"<casyncify.Pool #{self._serial} {state}>"


_default: Pool | None = None
_default_lock = threading.Lock()


def _default_max_workers() -> int:
    env = os.environ.get("ASYNCIFY_MAX_WORKERS", "").strip()
    try:
        return _u32("ASYNCIFY_MAX_WORKERS", int(env)) if env else 8
    except ValueError:
        return 8


def default_pool() -> Pool:
    """The binding's default pool (created on first use: limit 8 or ``ASYNCIFY_MAX_WORKERS``)."""
    global _default
    pool = _default
    if pool is not None and pool._ptr is not None:
        return pool
    if _life.closing:
        raise ShutDownError(_ffi.E_SHUT_DOWN, "casyncify: the interpreter is exiting")
    # First use, or closed by the user. Made with no lock held: making a pool
    # may run any Python (a GC finalizer that itself calls default_pool()).
    fresh: Pool | None = Pool(_default_max_workers(), thread_name="casyncify")
    with _default_lock:
        if _default is None or _default._ptr is None:
            _default, fresh = fresh, None
        pool = _default
    if fresh is not None:  # another thread published its pool first
        fresh.close(0)
    return pool


def configure(max_workers: int | None = None, *, exit_timeout: float | None = None, **settings: Any) -> None:
    """Process-wide configuration, like ``dspy.configure``.

    ``max_workers``: the default pool's limit (raising it starts queued calls at
    once). ``exit_timeout``: how long interpreter exit waits for running calls.
    Other keywords are process-wide settings: ``get(key)`` falls back to them
    when the current context has no override.
    """
    # Everything is checked before anything changes.
    if max_workers is not None:
        max_workers = _u32("max_workers", max_workers)
    if exit_timeout is not None:
        if float(exit_timeout) < 0:
            raise ValueError(f"exit_timeout must not be negative, got {exit_timeout}")
        exit_seconds = _seconds("exit_timeout", exit_timeout)  # inf: wait for as long as calls run
    if max_workers is not None:
        default_pool().max_workers = max_workers
    if exit_timeout is not None:
        _life.exit_timeout = exit_seconds
    if settings:
        _merge_globals(settings)


def _merge_globals(settings: dict) -> None:
    """Copy on write; the lock only guards the swap (the copy may run GC finalizers)."""
    global _globals
    while True:
        old = _globals
        new = dict(old)
        new.update(settings)
        with _globals_lock:
            if _globals is old:
                _globals = new
                return


def stats(pool: Pool | None = None) -> Stats:
    """The counters of ``pool`` (default: the default pool)."""
    return (pool or default_pool()).stats()


# ---------------------------------------------------------------------------
# concurrent.futures: submit() and Executor
# ---------------------------------------------------------------------------


class TaskFuture(concurrent.futures.Future):
    """A ``concurrent.futures.Future`` of a call on a pool.

    ``cancel()`` follows ``asyncify`` rather than ``ThreadPoolExecutor``: a queued
    call never runs; a running one is abandoned (the future is cancelled at once,
    the function runs to its end with ``cancel_requested()`` true).
    ``result()``/``exception()`` called from a worker of the pool run a
    still-queued call inline (contract 5.4), so nested waits cannot deadlock.
    """

    _handle = 0

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
        with self._condition:
            if self._state == FINISHED:
                return False
            if self._state in (CANCELLED, CANCELLED_AND_NOTIFIED):
                return True
        if self._handle:
            plib.asyncify_cancel(self._handle)  # CANCELLED: _done already ran, here
        return self.cancelled()

    def _help(self, timeout: float | None) -> None:
        if self._state in (PENDING, RUNNING) and self._handle and getattr(_tls, "pool", None) is not None:
            ms = _timeouts.milliseconds("timeout", timeout)
            status = lib.asyncify_wait(self._handle, ms, None, None)
            if status == _ffi.E_WOULD_DEADLOCK:
                raise WouldDeadlockError(status, _ffi.last_error())

    def result(self, timeout: float | None = None) -> Any:
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            self._help(timeout)
            return super().result(None if deadline is None else max(0.0, deadline - time.monotonic()))
        finally:
            # The raised exception's traceback keeps this frame: it must not keep
            # the future, which keeps the exception (a cycle, as the stdlib avoids).
            self = None  # noqa: PLW0642

    def exception(self, timeout: float | None = None) -> BaseException | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        self._help(timeout)
        return super().exception(None if deadline is None else max(0.0, deadline - time.monotonic()))


def submit(fn: Callable, /, *args: Any, **kwargs: Any) -> TaskFuture:
    """Run ``fn(*args, **kwargs)`` on the default pool with the caller's overrides."""
    return default_pool().submit(fn, *args, **kwargs)


class Executor(concurrent.futures.Executor):
    """A ``concurrent.futures.Executor`` whose calls carry the submitter's overrides.

    ``Executor()`` uses the default pool, ``Executor(max_workers=n)`` a pool of its
    own (freed by ``shutdown``), ``Executor(pool=p)`` an existing pool. Works with
    ``loop.run_in_executor(casyncify.Executor(), fn)``.
    """

    def __init__(self, max_workers: int | None = None, pool: Pool | None = None):
        if max_workers is not None and pool is not None:
            raise ValueError("give max_workers or pool, not both")
        if max_workers is not None:
            if max_workers <= 0:
                raise ValueError("max_workers must be greater than 0")
            self._pool: Pool | None = Pool(max_workers)
            self._owns_pool = True
        else:
            self._pool = pool
            self._owns_pool = False
        self._shutdown = False
        self._lock = threading.Lock()
        self._pending: builtins.set[TaskFuture] = builtins.set()

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> TaskFuture:
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if _life.closing:
                raise RuntimeError("cannot schedule new futures after interpreter shutdown")
            fut = (self._pool or default_pool()).submit(fn, *args, **kwargs)
            self._pending.add(fut)
        fut.add_done_callback(self._pending.discard)
        return fut

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            pending = list(self._pending)
        if cancel_futures:
            for f in pending:
                if not f.running():
                    f.cancel()
        if wait:
            concurrent.futures.wait(pending)
        if self._owns_pool and self._pool is not None:
            self._pool.close(None if wait else 0)


# ---------------------------------------------------------------------------
# asyncio: asyncify() and one completion queue per event loop
# ---------------------------------------------------------------------------

_BATCH = 64


class _LoopState:
    """One event loop's completion queue, its fd in ``loop.add_reader``.

    Nothing here holds the loop (``loop_ref`` is weak): the loop owns its state
    (through its reader callback and ``_loops``, a weak-keyed map), never the reverse, so a loop
    dropped with calls pending is still collected; ``_loop_gone`` then detaches
    those calls and frees the queue.
    """

    __slots__ = (
        "cq", "fd", "batch", "count", "pending", "wakeups", "completions", "generation", "loop_ref", "__weakref__",
        "opts", "opts_ref", "handle", "handle_ref", "raw",
    )  # fmt: skip

    def __init__(self):
        cq = c_void_p()
        check(plib.asyncify_cq_new(byref(cq)))
        fd = c_int32()
        status = plib.asyncify_cq_fd(cq, byref(fd))
        if status < 0:
            err = error_for(status)
            plib.asyncify_cq_free(cq)
            raise err
        self.cq: int = cq.value  # type: ignore[assignment]
        self.fd = fd.value
        self.batch = (_ffi.Completion * _BATCH)()
        self.raw = memoryview(self.batch).cast("B")  # the same bytes, read with _COMPLETIONS
        self.count = c_size_t()
        self.pending: dict[int, _Call] = {}
        self.wakeups = 0  # times the loop woke for this queue
        self.completions = 0
        self.generation = _life.fork_generation
        self.loop_ref: Callable = lambda: None  # weakref.ref(loop), set once registered
        # The submit options and handle of this loop's calls, made once: only the
        # loop's thread submits through them, with the GIL held from the field
        # writes to the end of the (PyDLL) asyncify_submit, which copies them.
        # Detached: a handle releases itself once its completion is queued, so
        # draining costs no release call; handles are generation-checked, so
        # cancelling one that already finished is a harmless E_INVALID_HANDLE.
        self.opts = opts = _ffi.SubmitOptions.from_buffer_copy(_SUBMIT_TEMPLATE)
        opts.cq = self.cq
        opts.flags = _ffi.SUBMIT_DETACHED
        self.opts_ref = byref(opts)
        self.handle = c_uint64()
        self.handle_ref = byref(self.handle)

    def drain(self) -> None:
        _drain(self)

    def free(self) -> None:
        """Free the queue (its fd closes with it); idempotent."""
        if self.cq and not _life.finalized and self.generation == _life.fork_generation:
            cq, self.cq = self.cq, 0
            plib.asyncify_cq_free(cq)


#: One ``asyncify_completion`` (handle, status, code, result, user_data) as
#: bytes: unpacking a batch at once is cheaper than a ctypes view per field.
_COMPLETIONS = struct.Struct("@QiiPP")  # native: the C layout
assert _COMPLETIONS.size == sizeof(_ffi.Completion)


def _drain(state: _LoopState, _calls=_calls) -> None:
    """The fd is readable: move every waiting completion to its future, in batches."""
    state.wakeups += 1
    batch = state.batch
    raw = state.raw
    count = state.count
    count_ref = byref(count)
    cq = state.cq
    drain = plib.asyncify_cq_drain
    pending = state.pending
    unpack = _COMPLETIONS.iter_unpack
    size = _COMPLETIONS.size
    cancelled = _ffi.CANCELLED
    while True:
        drain(cq, batch, _BATCH, count_ref)
        n = count.value
        state.completions += n
        for _handle, status, _code, _result, cid in unpack(raw[: n * size]):
            rec = pending.pop(cid, None)
            _calls.pop(cid, None)
            if rec is None:
                continue
            rec.handle = 0
            fut = rec.fut()
            if fut is None or fut.done():  # its task is gone, or was cancelled
                continue
            if status == cancelled:  # cancelled by a pool shutdown, not by our awaiter
                fut.cancel()
            else:
                fut.set_result(None)  # the outcome is in the record
        if n < _BATCH:
            return


def _loop_gone(state: _LoopState) -> None:
    """The loop was collected: its pending calls complete into nothing; free its queue."""
    if state.generation != _life.fork_generation:
        return  # a queue of the parent process: never touched in a forked child
    pending = list(state.pending.items())
    state.pending.clear()
    for cid, rec in pending:
        _calls.pop(cid, None)  # a call that has not started yet will not run Python
        rec.abandoned = True
        handle, rec.handle = rec.handle, 0
        if handle:  # detached (_LoopState): nothing to release
            plib.asyncify_cancel(handle)  # queued: never runs; running: cancel_requested()
    state.free()


#: event loop -> its _LoopState. Weak keys, so no lock: an entry goes with its
#: loop (the removal runs from GC, at any allocation, and must never wait).
_loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = weakref.WeakKeyDictionary()


def _no_state() -> None:
    return None


#: A weak reference to the last loop's state (held weakly: a dropped loop's
#: state must go with it): the next call on that loop skips the weak-keyed map.
_last_state: Callable[[], _LoopState | None] = _no_state


def _loop_state(loop: asyncio.AbstractEventLoop) -> _LoopState:
    global _last_state
    state = _last_state()
    if state is not None and state.loop_ref() is loop and state.cq:
        return state
    state = _loops.get(loop)
    if state is None:
        state = _new_loop_state(loop)
    _last_state = weakref.ref(state)
    return state


def _new_loop_state(loop: asyncio.AbstractEventLoop) -> _LoopState:
    # No lock is held from here on: add_reader and the allocations below may run
    # any Python (GC finalizers of other loops included).
    state = _LoopState()
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


def _async_library() -> str:
    """The async library running in this thread: "asyncio" or "trio".

    sniffio when installed (it knows AnyIO's backends and trio-asyncio), else an
    asyncio running loop, else a trio run.
    """
    if _sniffio is not None:
        try:
            name = _sniffio.current_async_library()
        except _sniffio.AsyncLibraryNotFoundError:
            name = None
    elif asyncio._get_running_loop() is not None:
        name = "asyncio"
    else:
        name = _trio_running()
    if name in ("asyncio", "trio"):
        return name
    if name is None:
        raise RuntimeError("casyncify.asyncify: no running event loop (asyncio or trio) in this thread")
    raise RuntimeError(f"casyncify.asyncify runs under asyncio or trio, not {name}")


def _trio_running() -> str | None:
    trio = sys.modules.get("trio")
    if trio is None:
        return None
    try:
        trio.lowlevel.current_trio_token()
    except RuntimeError:
        return None
    return "trio"


if _sniffio is not None:
    _sniffio_local = _sniffio.thread_local
    _sniffio_cvar = _sniffio.current_async_library_cvar
_get_running_loop = asyncio._get_running_loop
_current_task = asyncio.current_task
_fast_submit = fast.asyncify_submit
_copy_context = contextvars.copy_context


def _is_async_callable(fn: Any) -> bool:
    """An ``async def`` function, or an object whose ``__call__`` is one."""
    if inspect.iscoroutinefunction(fn):
        return True
    if inspect.isroutine(fn) or isinstance(fn, type):
        return False  # a class builds an instance: its own __call__ is not what runs
    return inspect.iscoroutinefunction(getattr(type(fn), "__call__", None))  # noqa: B004 - the type's own __call__


@overload
def asyncify(fn: Callable[_P, _R], *, pool: Pool | None = None) -> Callable[_P, Coroutine[Any, Any, _R]]: ...
@overload
def asyncify(*, pool: Pool | None = None) -> Callable[[Callable[_P, _R]], Callable[_P, Coroutine[Any, Any, _R]]]: ...
def asyncify(fn: Any = _MISSING, *, pool: Pool | None = None) -> Any:
    """Like ``dspy.asyncify``: an ``async def`` wrapper running ``fn`` on a pool.

    Each call snapshots the caller's context (``contextvars``: casyncify's
    overrides, DSPy's settings, any ContextVar) at call time, runs
    ``fn(*args, **kwargs)`` on a worker with it, and returns its result or
    re-raises its exception (the same object). Cancelling the awaiting task
    (asyncio) or its cancel scope (trio, AnyIO) cancels a queued call (it never
    runs) or abandons a running one (the awaiter is released at once;
    ``cancel_requested()`` is true inside). Inside the call, AnyIO's and trio's
    ``from_thread`` functions reach the caller's loop as in their worker threads.
    Usable as ``@asyncify`` or ``@asyncify(pool=p)``.
    """
    if fn is _MISSING:
        return functools.partial(asyncify, pool=pool)
    if not callable(fn):
        raise TypeError(f"asyncify() needs a callable, not {type(fn).__name__}")
    if _is_async_callable(fn):
        raise TypeError(f"{fn!r} is already a coroutine function: await it directly")

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        # The asyncio path is inline (no coroutine of its own): every call runs it.
        if _life.closing:
            raise ShutDownError(_ffi.E_SHUT_DOWN, "casyncify: the interpreter is exiting")
        loop = _get_running_loop()
        if loop is None or (
            _sniffio is not None and (_sniffio_local.name is not None or _sniffio_cvar.get() is not None)
        ):
            # Not surely asyncio: sniffio names another library (trio, AnyIO's trio
            # backend, trio-asyncio's trio mode), or no asyncio loop runs.
            if _async_library() == "trio":
                from . import _trio

                return await _trio.call(pool, fn, args, kwargs)
            loop = asyncio.get_running_loop()
        state = _loop_state(loop)
        p = pool
        if p is None:
            p = _default
            if p is None or p._ptr is None:
                p = default_pool()
        rec = _Call(fn, args, kwargs, _copy_context(), p)
        fut = loop.create_future()
        rec.fut = weakref.ref(fut)  # this frame holds the future; the record must not hold the loop
        if "anyio" in sys.modules:
            rec.marks = _anyio_compat.asyncio_marks(state.loop_ref, _current_task())
        cid = next(_ids)
        _calls[cid] = rec
        state.pending[cid] = rec
        try:  # Pool._submit, inline, with this loop's preset options
            opts = state.opts
            opts.on_done_data = cid
            opts.context = _state.get(_ROOT).ptr
            with p._lock:  # close() cannot free the pool under this submit
                ptr = p._ptr
                if ptr is None or p._generation != _life.fork_generation:
                    ptr = p._pointer()  # raises ShutDownError or ForkedError
                opts.pool = ptr
                status = _fast_submit(_WORK, cid, state.opts_ref, state.handle_ref)
            if status < 0:
                raise error_for(status)
            rec.handle = state.handle.value
        except BaseException:
            _calls.pop(cid, None)
            state.pending.pop(cid, None)
            raise
        try:
            await fut
        except BaseException:
            # Cancelled, or this coroutine closed (its task dropped with its loop).
            # Queued: it never runs. Running: abandoned; the awaiter goes now.
            rec.abandoned = True
            if rec.handle:
                plib.asyncify_cancel(rec.handle)
            raise
        return rec.outcome()

    functools.update_wrapper(wrapper, fn, updated=())
    return wrapper


def call(fn: Callable, /, *args: Any, **kwargs: Any) -> Any:
    """Run ``fn(*args, **kwargs)`` here, with the current overrides installed as
    this thread's C table (``asyncify_context_run``), so C code it calls sees them.
    """
    rec = _Call(fn, args, kwargs, contextvars.copy_context(), None)
    cid = next(_ids)
    _calls[cid] = rec
    try:
        status = fast.asyncify_context_run(_state.get(_ROOT).ptr, _WORK, cid, None, None)
    finally:
        _calls.pop(cid, None)
    check(status)
    return rec.outcome()


# ---------------------------------------------------------------------------
# Interpreter exit and fork
# ---------------------------------------------------------------------------


def _at_exit() -> None:
    """Refuse new calls, cancel queued ones, wait (bounded) for running ones and
    for every worker to drop its thread state, so that no worker touches a
    finalizing interpreter. Every wait wakes each 100 ms: Ctrl-C ends it."""
    _life.closing = True
    timeout = _life.exit_timeout
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        for pool in list(_open_pools):
            try:
                pool.close(None if deadline is None else max(0.0, deadline - time.monotonic()))
            except Error:
                pass
        _wait_for_workers(deadline)
        time.sleep(0.01)  # let the last worker finish returning from its stop hook
    finally:
        _life.finalized = True


def _wait_for_workers(deadline: float | None) -> None:
    """Wait until no worker holds a thread state, or ``deadline`` (None: no limit), in slices."""
    with _workers_cv:
        while _life.live_workers > 0:
            left = _SLICE if deadline is None else min(_SLICE, deadline - time.monotonic())
            if left <= 0:
                return
            _workers_cv.wait(left)


atexit.register(_at_exit)


def _after_fork_child() -> None:
    # The parent's pools and queues have no workers here (README, fork()): forget
    # them without freeing; the child's default pool is made on first use.
    global _default, _workers_cv, _default_lock, _globals_lock, _last_state
    _life.fork_generation += 1
    _life.live_workers = 0
    _default = None
    _open_pools.clear()
    _loops.clear()
    _last_state = _no_state
    _calls.clear()
    _workers_cv = threading.Condition(threading.Lock())
    _default_lock = threading.Lock()
    _globals_lock = threading.Lock()
    _tls.__dict__.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_child)
