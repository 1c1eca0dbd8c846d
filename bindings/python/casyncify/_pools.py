"""Pools and the calls made on them: ``Pool``, the default pool, ``submit``,
``Executor`` and ``asyncify``.

Pools made by the binding (the default one included) have start/stop hooks
that give each worker one lasting Python thread state. A call is submitted
with the caller's C context (its overrides) and the one work callback of
``_calls``; ``submit()`` returns a ``TaskFuture`` completed by ``DONE``;
``asyncify()`` awaits the call under asyncio (a completion queue per loop,
``_loops``) or trio (``_trio``, imported only when trio runs). A call with a
limiter or a start deadline (``_limits.CallLimits``) is submitted through
``_limits.submit_limited``; one without them takes the plain path, unchanged.
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import contextvars
import dataclasses
import functools
import inspect
import itertools
import os
import sys
import threading
import time
from ctypes import byref, c_uint64
from typing import TYPE_CHECKING, Any, Callable, overload

from . import _anyio_compat, _ffi, _loops, lowlevel
from ._calls import DONE, SUBMIT_DEFAULTS, TASK_START, WORK, WORK_TIMED, Call, LoopCall, TaskFuture, ids, registry
from ._convert import name_bytes, seconds
from ._errors import ForkedError, ShutDownError, WouldDeadlockError, error_for
from ._ffi import fast, lib, plib
from ._lifecycle import SLICE, after_fork_in_child, life, open_pools, worker, worker_started, worker_stopped
from ._limits import CallLimits, Latency, Limiter, LimiterChoice, submit_limited
from ._loops import loop_state, running_library
from ._overrides import ROOT, current, merge_settings

if TYPE_CHECKING:
    from collections.abc import Coroutine

    if sys.version_info >= (3, 10):
        from typing import ParamSpec
    else:  # typing_extensions: needed by type checkers only, never imported at run time
        from typing_extensions import ParamSpec
    from typing import TypeVar

    _P = ParamSpec("_P")
    _R = TypeVar("_R")

__all__ = [
    "UNBOUNDED", "Stats", "Pool", "default_pool", "configure", "stats", "submit", "Executor", "asyncify",
    "HOOK_START", "HOOK_STOP", "is_async_callable",
]  # fmt: skip

_MISSING: Any = object()

# ---------------------------------------------------------------------------
# Workers: one lasting thread state each
# ---------------------------------------------------------------------------


def _thread_start(data: int | None) -> None:
    # Start hook of every pool made by the binding: one lasting thread state per
    # worker (the ctypes callback that calls us created it; this extra Ensure
    # keeps it after the callback returns, with the GIL released).
    try:
        worker.gilstate = _ffi.PyGILState_Ensure()
        worker.pool = data
        worker_started()
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


def _thread_stop(data: int | None) -> None:
    try:
        # What code on this worker set outside any call (a done-callback of a
        # submit() future, say) lives in the thread's own context; drop it now,
        # while the thread state is whole: freed during the thread state's
        # teardown, its C context's release would call into a dying thread state.
        current.set(ROOT)
        gilstate = worker.__dict__.pop("gilstate", None)
        worker.pool = None
        if gilstate is not None:
            _ffi.PyGILState_Release(gilstate)  # the callback's own release then deletes the thread state
    finally:
        worker_stopped()


#: The start and stop hooks of the binding's pools (``hook_data``: the pool's serial).
HOOK_START = _ffi.immortal(_ffi.THREAD_HOOK(_thread_start))
HOOK_STOP = _ffi.immortal(_ffi.THREAD_HOOK(_thread_stop))

# ---------------------------------------------------------------------------
# Pools
# ---------------------------------------------------------------------------

#: A pool limit meaning "no limit" (2**32-1).
UNBOUNDED = _ffi.UINT32_MAX


def _u32(name: str, n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{name} must be an int, not {type(n).__name__}")
    if not 0 <= n <= _ffi.UINT32_MAX:
        raise ValueError(f"{name} must be between 0 and {_ffi.UINT32_MAX} (UNBOUNDED), got {n}")
    return n


@dataclasses.dataclass(frozen=True)
class Stats:
    """A pool's counters (``asyncify_pool_stats``); exact when the pool is quiet: then
    submitted = completed + failed + cancelled + abandoned + expired. ``queue_wait``
    (submit, a wait for a limiter included, to the start) and ``run`` (start to return)
    are the pool's latency figures when it records them (``record_latency``), else None.
    """

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
    expired: int = 0  # start deadline passed before it started (never ran)
    queue_wait: Latency | None = None
    run: Latency | None = None


_pool_serials = itertools.count(1)


class Pool:
    """A pool of worker threads running at most ``max_workers`` calls at once.

    ``with casyncify.Pool(4) as pool:`` shuts it down on exit (queued calls are
    cancelled, running ones waited for); its memory goes with the object.
    ``UNBOUNDED`` (2**32-1) means no limit, 0 pauses the pool. ``record_latency=True``
    records each call's queue wait and run time (``stats().queue_wait``/``.run``, and
    ``casyncify.queue_wait()`` inside a call), at the cost of two clock reads and one
    hook per call.
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
        record_latency: bool = False,
    ):
        opts = lowlevel.pool_options_init()
        opts.max_workers = _u32("max_workers", max_workers)
        opts.max_queued = _u32("max_queued", max_queued)
        if keep_alive is not None:
            ms = int(keep_alive * 1000)
            if ms <= 0:
                raise ValueError("keep_alive must be positive (seconds)")
            opts.keep_alive_ms = _u32("keep_alive (ms)", ms)
        if release_slot_on_abandon:
            opts.flags |= _ffi.POOL_RELEASE_SLOT_ON_ABANDON
        #: The work callback of this pool's calls: WORK_TIMED keeps the queue wait
        #: that the start hook gives (recording pools only: the hook costs a callback).
        self._work = WORK
        if record_latency:
            opts.flags |= _ffi.POOL_RECORD_LATENCY
            opts.on_task_start = TASK_START
            self._work = WORK_TIMED
        self._records = bool(record_latency)
        name = name_bytes("thread_name", thread_name)
        opts.thread_name = name
        # Workers get what threading gives a new thread: threading.stack_size()
        # when the program set it, else the platform's default (0).
        opts.stack_size = threading.stack_size()
        self._serial = next(_pool_serials)
        if thread_hooks:
            opts.on_thread_start = HOOK_START
            opts.on_thread_stop = HOOK_STOP
            opts.hook_data = self._serial
        self._ptr: int | None = lowlevel.pool_new_ex(opts)
        self._closing: int | None = None  # the pointer while close() waits (or was interrupted)
        self._closers = 0  # close() calls waiting on _closing: the last one ends the closing
        # The pointer once closed: the pool's memory goes with this object (__del__), so
        # a thread holding the object may pass its pointer to the library without a lock
        # (after a close, the library refuses it with E_SHUT_DOWN).
        self._shut: int | None = None
        self._generation = life.fork_generation
        self._lock = threading.RLock()  # between close() calls (the closers' count)
        open_pools.add(self)

    # -- the pointer, guarded (alive while this object is) ----------------------

    def _pointer(self) -> int:
        if self._generation != life.fork_generation:
            raise ForkedError(_ffi.E_FORKED, "casyncify: this Pool was created by the parent process before fork()")
        ptr = self._ptr
        if ptr is None:
            raise ShutDownError(_ffi.E_SHUT_DOWN, "casyncify: the pool is closed")
        return ptr

    def _submit(self, cid: int, lim: Limiter | None = None, ms: int = 0, limited: bool = False) -> int:
        """Submit the call registered as ``cid``, detached, completed by ``DONE``; returns the handle.
        ``limited``: with the limiter ``lim`` (None: none) and the deadline ``ms`` (0: none)."""
        opts = _ffi.SubmitOptions.from_buffer_copy(SUBMIT_DEFAULTS)
        opts.on_done = DONE
        opts.flags = _ffi.SUBMIT_DETACHED
        opts.on_done_data = cid
        opts.context = current.get(ROOT).ptr
        h = c_uint64()
        if life.closing:
            raise ShutDownError(_ffi.E_SHUT_DOWN, "casyncify: the interpreter is exiting")
        opts.pool = self._pointer()
        if limited:
            status = submit_limited(self._work, cid, opts, byref(opts), byref(h), lim, ms)
        else:
            status = fast.asyncify_submit(self._work, cid, byref(opts), byref(h))
        if status < 0:
            raise error_for(status)
        return int(h.value)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> TaskFuture:
        """Run ``fn(*args, **kwargs)`` on this pool with the caller's overrides."""
        return self._future(fn, args, kwargs, None)

    def _future(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], limits: CallLimits | None
    ) -> TaskFuture:
        """``submit()``, with ``limits`` (None: none)."""
        lim = None if limits is None else limits.pick()  # in the submitter's context
        rec = Call(fn, args, kwargs, contextvars.copy_context(), self)
        fut = rec.fut = TaskFuture()
        cid = next(ids)
        registry[cid] = rec
        try:
            if limits is None:
                fut._handle = self._submit(cid)
            else:
                rec.limits = (lim, limits.start_within)
                fut._handle = self._submit(cid, lim, limits.ms, True)
        except BaseException:
            registry.pop(cid, None)
            raise
        return fut

    def asyncify(
        self, fn: Callable[_P, _R], *, limiter: LimiterChoice = None, start_within: float | None = None
    ) -> Callable[_P, Coroutine[Any, Any, _R]]:
        """``casyncify.asyncify(fn, pool=self, limiter=..., start_within=...)``."""
        return asyncify(fn, pool=self, limiter=limiter, start_within=start_within)

    # -- configuration and counters ------------------------------------------

    @property
    def max_workers(self) -> int:
        """The pool's limit (settable: raising it starts queued calls at once)."""
        return lowlevel.get_max_workers(self._pointer())

    @max_workers.setter
    def max_workers(self, n: int) -> None:
        n = _u32("max_workers", n)
        lowlevel.set_max_workers(self._pointer(), n)

    @property
    def records_latency(self) -> bool:
        """Whether the pool records queue wait and run time (``record_latency``)."""
        return self._records

    def stats(self) -> Stats:
        """The pool's counters now, and its latency figures when it records them."""
        queue_wait = run = None
        ptr = self._pointer()
        s = lowlevel.stats(ptr)
        if self._records:
            queue_wait = Latency.from_c(lowlevel.pool_latency(ptr, _ffi.LATENCY_QUEUE_WAIT))
            run = Latency.from_c(lowlevel.pool_latency(ptr, _ffi.LATENCY_RUN))
        return Stats(
            s.limit, s.threads, s.idle_threads, s.queued, s.running,
            s.submitted, s.completed, s.failed, s.cancelled, s.abandoned, s.expired, queue_wait, run,
        )  # fmt: skip

    @property
    def closed(self) -> bool:
        """Whether ``close()`` began (new calls get ``ShutDownError``)."""
        return self._ptr is None

    # -- lifetime ---------------------------------------------------------------

    def close(self, timeout: float | None = None) -> bool:
        """Shut the pool down: new calls get ``ShutDownError``, queued calls are
        cancelled (here), running ones are waited for up to ``timeout`` seconds
        (None or ``inf``: as long as they take; ``nan``: ``ValueError``), and the
        workers end. True when none was left running. Idempotent. From a worker of
        this pool: ``WouldDeadlockError``. The pool's memory goes with this object.

        The wait wakes every 100 ms, so Ctrl-C gets through; a
        ``KeyboardInterrupt`` leaves the pool closing (closed to new calls, not
        yet freed): ``close()`` again resumes the wait, and exit or garbage
        collection frees it.
        """
        timeout = seconds("timeout", timeout)  # checked before anything changes
        with self._lock:
            ptr = self._ptr or self._closing
            if ptr is None:
                return True
            if self._generation != life.fork_generation:
                self._pointer()  # raises ForkedError
            if worker.pool == self._serial:
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
            # The last closer ends the closing: another one may still be waiting.
            last = self._closers == 0 and self._closing == ptr
            if last:
                self._closing, self._shut = None, ptr
        if last:
            open_pools.discard(self)
            quiet = quiet or lowlevel.pool_close(ptr, 0)
        return quiet

    @staticmethod
    def _wait_closed(ptr: int, timeout: float | None) -> bool:
        """Shut the pool down and wait, in slices, until it is quiet (True) or ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = SLICE if deadline is None else min(SLICE, max(0.0, deadline - time.monotonic()))
            if lowlevel.pool_close(ptr, left):  # GIL released: running calls need it
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __copy__(self) -> Pool:
        raise TypeError("a casyncify.Pool cannot be copied (it owns its C pool): share the object")

    def __deepcopy__(self, memo: Any) -> Pool:
        return self.__copy__()

    def __del__(
        self,
        _life: Any = life,
        _worker: Any = worker,
        _threading: Any = threading,
        _free: Any = lib.asyncify_pool_free,
        _pfree: Any = plib.asyncify_pool_free,
    ) -> None:
        # Reached only once no call of this pool is pending (each record holds
        # its pool) and no thread holds it, so nothing queued is cancelled here and
        # nobody passes its pointer any more. Globals are bound as defaults: this
        # may run during interpreter teardown.
        ptr = (
            getattr(self, "_ptr", None)
            or getattr(self, "_closing", None)  # an interrupted close
            or getattr(self, "_shut", None)  # closed
        )
        if not ptr or _life.finalized or self._generation != _life.fork_generation:
            return
        self._ptr = self._closing = self._shut = None
        if _worker.pool == self._serial:
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
    """The binding's default pool (created on first use: limit 8 or ``ASYNCIFY_MAX_WORKERS``;
    it records latency when the environment has ``ASYNCIFY_RECORD_LATENCY=1``)."""
    global _default
    pool = _default
    if pool is not None and pool._ptr is not None:
        return pool
    if life.closing:
        raise ShutDownError(_ffi.E_SHUT_DOWN, "casyncify: the interpreter is exiting")
    # First use, or closed by the user. Made with no lock held: making a pool
    # may run any Python (a GC finalizer that itself calls default_pool()).
    record = os.environ.get("ASYNCIFY_RECORD_LATENCY") == "1"  # as the library's own default pool
    fresh: Pool | None = Pool(_default_max_workers(), thread_name="casyncify", record_latency=record)
    with _default_lock:
        if _default is None or _default._ptr is None:
            _default, fresh = fresh, None
        pool = _default
    if fresh is not None:  # another thread published its pool first
        fresh.close(0)
    assert pool is not None
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
        exit_seconds = seconds("exit_timeout", exit_timeout)  # inf: wait for as long as calls run
    if max_workers is not None:
        default_pool().max_workers = max_workers
    if exit_timeout is not None:
        life.exit_timeout = exit_seconds
    if settings:
        merge_settings(settings)


def stats(pool: Pool | None = None) -> Stats:
    """The counters of ``pool`` (default: the default pool)."""
    return (pool or default_pool()).stats()


def _forget_parent() -> None:
    global _default, _default_lock
    _default = None
    _default_lock = threading.Lock()


after_fork_in_child(_forget_parent)

# ---------------------------------------------------------------------------
# concurrent.futures: submit() and Executor
# ---------------------------------------------------------------------------


def submit(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> TaskFuture:
    """Run ``fn(*args, **kwargs)`` on the default pool with the caller's overrides."""
    return default_pool().submit(fn, *args, **kwargs)


class Executor(concurrent.futures.Executor):
    """A ``concurrent.futures.Executor`` whose calls carry the submitter's overrides.

    ``Executor()`` uses the default pool, ``Executor(max_workers=n)`` a pool of its
    own (freed by ``shutdown``), ``Executor(pool=p)`` an existing pool. Works with
    ``loop.run_in_executor(casyncify.Executor(), fn)``. ``limiter`` and
    ``start_within`` apply to each of its calls as in ``asyncify()`` (a function given
    as ``limiter`` is called at each ``submit``, in the submitter's context).
    """

    def __init__(
        self,
        max_workers: int | None = None,
        pool: Pool | None = None,
        *,
        limiter: LimiterChoice = None,
        start_within: float | None = None,
    ):
        if max_workers is not None and pool is not None:
            raise ValueError("give max_workers or pool, not both")
        self._limits = CallLimits.of(limiter, start_within)
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
        self._pending: builtins.set[concurrent.futures.Future[Any]] = builtins.set()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> TaskFuture:
        """Run ``fn(*args, **kwargs)`` on the executor's pool; a ``TaskFuture``."""
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if life.closing:
                raise RuntimeError("cannot schedule new futures after interpreter shutdown")
            fut = (self._pool or default_pool())._future(fn, args, kwargs, self._limits)
            self._pending.add(fut)
        fut.add_done_callback(self._pending.discard)
        return fut

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new calls; ``cancel_futures`` cancels queued ones; ``wait`` waits for the rest
        (and frees the executor's own pool)."""
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
# asyncify()
# ---------------------------------------------------------------------------

_raw_submit = _ffi.raw.asyncify_submit  # only prebuilt ctypes arguments: see _ffi.raw
_get_running_loop = asyncio._get_running_loop
_asyncio_marks = _anyio_compat.asyncio_marks
try:  # names the running async library (asyncio, trio, AnyIO's backends) when installed
    import sniffio as _sniffio

    _sniffio_cvar = _sniffio.current_async_library_cvar
except ImportError:  # pragma: no cover - then running_library() asks asyncio and trio
    _sniffio = None  # type: ignore[assignment]
_modules = sys.modules
_copy_context = contextvars.copy_context


def is_async_callable(fn: object) -> bool:
    """An ``async def`` function, or an object whose ``__call__`` is one."""
    if inspect.iscoroutinefunction(fn):
        return True
    if inspect.isroutine(fn) or isinstance(fn, type):
        return False  # a class builds an instance: its own __call__ is not what runs
    return inspect.iscoroutinefunction(getattr(type(fn), "__call__", None))  # noqa: B004 - the type's own __call__


@overload
def asyncify(
    fn: Callable[_P, _R],
    *,
    pool: Pool | None = None,
    limiter: LimiterChoice = None,
    start_within: float | None = None,
) -> Callable[_P, Coroutine[Any, Any, _R]]: ...
@overload
def asyncify(
    *, pool: Pool | None = None, limiter: LimiterChoice = None, start_within: float | None = None
) -> Callable[[Callable[_P, _R]], Callable[_P, Coroutine[Any, Any, _R]]]: ...
def asyncify(
    fn: Any = _MISSING,
    *,
    pool: Pool | None = None,
    limiter: LimiterChoice = None,
    start_within: float | None = None,
) -> Any:
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

    ``limiter``: a ``Limiter`` each call holds while it runs, or a function called
    at each call, in the caller's context, that returns the call's limiter or None
    (a ``KeyedLimiter``: one limiter per model, say). ``start_within``: seconds; a call
    not started by then (waiting for its limiter or a worker) never runs and raises
    ``ExpiredError``.
    """
    if fn is _MISSING:
        return functools.partial(asyncify, pool=pool, limiter=limiter, start_within=start_within)
    if not callable(fn):
        raise TypeError(f"asyncify() needs a callable, not {type(fn).__name__}")
    if is_async_callable(fn):
        raise TypeError(f"{fn!r} is already a coroutine function: await it directly")
    limits = CallLimits.of(limiter, start_within)  # None: the plain path

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        # The asyncio path is inline (no coroutine of its own): every call runs it.
        if life.closing:
            raise ShutDownError(_ffi.E_SHUT_DOWN, "casyncify: the interpreter is exiting")
        p = pool
        if p is None:
            p = _default
            if p is None or p._ptr is None:
                p = default_pool()
        lim = None if limits is None else limits.pick()  # in the caller's context
        loop = _get_running_loop()
        # asyncio, and sniffio (when installed) names no other library here
        # (trio, AnyIO's trio backend, trio-asyncio's trio mode).
        clean = loop is not None and (
            _sniffio is None or (_sniffio.thread_local.name is None and _sniffio_cvar.get() is None)
        )
        if not clean:  # not surely asyncio
            if running_library() == "trio":
                from . import _trio

                trec = Call(fn, args, kwargs, _copy_context(), p)
                if limits is None:
                    return await _trio.call(trec, p._submit)
                trec.limits = (lim, limits.start_within)
                return await _trio.call(trec, functools.partial(p._submit, lim=lim, ms=limits.ms, limited=True))
            loop = asyncio.get_running_loop()
        state = _loops._last_state()
        if state is None or state.loop_ref() is not loop or not state.cq:
            state = loop_state(loop)
        fut = loop.create_future()
        # The record is a weak reference to the future, which this frame holds:
        # the record (in the registry) must not hold the loop.
        rec = LoopCall(fut)
        rec.fn = fn
        rec.args = args
        rec.kwargs = kwargs
        rec.ctx = _copy_context()
        rec.result = None
        rec.exc = None
        rec.handle = 0
        rec.abandoned = False
        rec.pool = p
        rec.marks = None
        if "anyio" in _modules:  # AnyIO's worker-thread marks (_anyio_compat)
            token_ref = state.token_ref or state.own_token(loop)
            if token_ref is not None:
                marks = state.marks[0]
                keys = _anyio_compat._task_keys
                if marks is None or not clean or keys is None or keys:
                    marks = _asyncio_marks(token_ref, clean, state.marks)
                # (Else inline, the common case: no AnyIO task, so no cancel scope
                # to look up, and sniffio unset: this loop's marks, made already.)
                rec.marks = marks
        cid = next(ids)
        registry[cid] = rec
        state.pending[cid] = rec
        try:  # Pool._submit, inline, with this loop's preset options
            opts = state.opts
            opts.on_done_data = cid
            ptr = current.get(ROOT).ptr
            if ptr != state.context_ptr:  # ctypes field writes cost: only on a change
                opts.context = state.context_ptr = ptr
            # No lock: the pool's memory lives as long as `p` (see Pool._shut); a
            # close() meanwhile makes the library refuse the submit (E_SHUT_DOWN).
            ptr = p._ptr
            if ptr is None or p._generation != life.fork_generation:
                ptr = p._pointer()  # raises ShutDownError or ForkedError
            if ptr != state.pool_ptr:
                opts.pool = state.pool_ptr = ptr
            if limits is None:
                arg = state.arg
                arg.value = cid
                status = _raw_submit(p._work, arg, state.opts_ref, state.handle_ref)
            else:
                rec.limits = (lim, limits.start_within)
                status = submit_limited(p._work, cid, opts, state.opts_ref, state.handle_ref, lim, limits.ms)
            if status < 0:
                raise error_for(status)
            rec.handle = state.handle.value
        except BaseException:
            registry.pop(cid, None)
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
        if rec.exc is None:
            return rec.result
        return rec.outcome()

    functools.update_wrapper(wrapper, fn, updated=())
    return wrapper
