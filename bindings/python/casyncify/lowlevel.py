"""Thin, typed wrappers of every function of ``include/asyncify.h``.

One Python function per C function, same name without the ``asyncify_`` prefix.
Error statuses (< 0) raise the matching ``casyncify.Error`` subclass with the
library's ``asyncify_last_error`` text; outcomes are returned. Pointers
(contexts, pools, queues, values) are plain ints; the caller owns what the C
function says it owns. ``lib`` (GIL released during calls) and ``plib`` (GIL
held) are the raw ctypes handles with ``argtypes``/``restype`` set for every
exported function; structures and callback types are re-exported from here.

Everything here acts on the *C* state of the calling thread (its override
table, the global layer), not on the ``contextvars`` overrides of the
high-level API.
"""

from __future__ import annotations

import ctypes
from _ctypes import CFuncPtr
from collections.abc import Sequence
from ctypes import byref, c_int32, c_size_t, c_uint32, c_uint64, c_void_p, sizeof

from . import _ffi
from ._convert import copy_out, key_bytes, milliseconds
from ._errors import TimeoutError, check
from ._ffi import (  # noqa: F401 - re-exported: the status codes, flags, types and handles
    CANCELLED,
    CLONE_FN,
    DONE_FN,
    E_BUFFER_TOO_SMALL,
    E_BUSY,
    E_FORKED,
    E_INVALID_ARGUMENT,
    E_INVALID_HANDLE,
    E_NOT_FOUND,
    E_NULL,
    E_OUT_OF_MEMORY,
    E_PANIC,
    E_SCOPE_MISMATCH,
    E_SHUT_DOWN,
    E_WOULD_DEADLOCK,
    EXPIRED,
    FAILED,
    FREE_FN,
    KEY_LOCAL,
    LATENCY_QUEUE_WAIT,
    LATENCY_RUN,
    OK,
    PENDING,
    POOL_RECORD_LATENCY,
    POOL_RELEASE_SLOT_ON_ABANDON,
    SUBMIT_DETACHED,
    SUBMIT_EMPTY_CONTEXT,
    THREAD_HOOK,
    TIMEOUT,
    VISIT_FN,
    WORK_FN,
    Completion,
    Latency,
    LimiterOptions,
    LimiterStats,
    PoolOptions,
    PoolStats,
    SubmitOptions,
    lib,
    plib,
)


def _nullable(ftype: type[CFuncPtr], f: CFuncPtr | None) -> CFuncPtr:
    """ctypes refuses None for a function pointer argument: NULL is ``ftype()``."""
    return ftype() if f is None else f


# -- errors and version -----------------------------------------------------


def status_str(status: int) -> str:
    """``asyncify_status_str``: the fixed text of a status (also for unknown values)."""
    return _ffi.status_str(status)


def last_error() -> str:
    """``asyncify_last_error``: this thread's last error message ('' when none)."""
    return _ffi.last_error()


def version() -> str:
    """``asyncify_version``."""
    return _ffi.VERSION


# -- the calling thread's override table --------------------------------------


def override_set(key: str, value: bytes, flags: int = 0) -> None:
    """``asyncify_override_set`` / ``_set_ex``: a copy of ``value`` (bytes-like)."""
    data = bytes(value)
    if flags:
        check(plib.asyncify_override_set_ex(key_bytes(key), data, len(data), flags))
    else:
        check(plib.asyncify_override_set(key_bytes(key), data, len(data)))


def override_set_ptr(
    key: str, ptr: int, release: CFuncPtr | None = None, clone: CFuncPtr | None = None, flags: int = 0
) -> None:
    """``asyncify_override_set_ptr`` / ``_set_ptr_ex``. ``release``/``clone`` are
    ``FREE_FN``/``CLONE_FN`` instances (keep them alive as long as C may call them)."""
    if clone is not None or flags:
        check(
            plib.asyncify_override_set_ptr_ex(
                key_bytes(key), ptr, _nullable(FREE_FN, release), _nullable(CLONE_FN, clone), flags
            )
        )
    else:
        check(plib.asyncify_override_set_ptr(key_bytes(key), ptr, _nullable(FREE_FN, release)))


def override_set_ex(key: str, value: bytes, flags: int) -> None:
    """``asyncify_override_set_ex`` (``KEY_LOCAL``: never copied into tasks)."""
    data = bytes(value)
    check(plib.asyncify_override_set_ex(key_bytes(key), data, len(data), flags))


def override_set_ptr_ex(
    key: str, ptr: int, release: CFuncPtr | None = None, clone: CFuncPtr | None = None, flags: int = 0
) -> None:
    """``asyncify_override_set_ptr_ex``."""
    release_fn, clone_fn = _nullable(FREE_FN, release), _nullable(CLONE_FN, clone)
    check(plib.asyncify_override_set_ptr_ex(key_bytes(key), ptr, release_fn, clone_fn, flags))


def override_get(key: str) -> bytes:
    """``asyncify_override_get``: the bytes of ``key`` (``NotFoundError`` if unset,
    ``InvalidArgumentError`` if it holds a pointer)."""
    kb = key_bytes(key)
    return copy_out(lambda buf, cap, n: plib.asyncify_override_get(kb, buf, cap, n))


def override_get_ptr(key: str) -> int:
    """``asyncify_override_get_ptr``: the address stored under ``key``."""
    out = c_void_p()
    check(plib.asyncify_override_get_ptr(key_bytes(key), byref(out)))
    return out.value or 0


def override_get_ptr_ex(key: str) -> tuple[int, int]:
    """``asyncify_override_get_ptr_ex``: ``(address, release function address or 0)``."""
    out = c_void_p()
    rel = c_void_p()
    check(plib.asyncify_override_get_ptr_ex(key_bytes(key), byref(out), byref(rel)))
    return out.value or 0, rel.value or 0


def override_remove(key: str) -> None:
    """``asyncify_override_remove`` (``NotFoundError`` if absent)."""
    check(plib.asyncify_override_remove(key_bytes(key)))


def override_clear() -> None:
    """``asyncify_override_clear``."""
    check(plib.asyncify_override_clear())


def override_count() -> int:
    """``asyncify_override_count``."""
    n = c_size_t()
    check(plib.asyncify_override_count(byref(n)))
    return n.value


def scope_enter() -> int:
    """``asyncify_scope_enter``: a token for ``scope_exit``."""
    token = c_uint64()
    check(plib.asyncify_scope_enter(byref(token)))
    return token.value


def scope_exit(token: int) -> None:
    """``asyncify_scope_exit`` (``ScopeMismatchError`` out of LIFO order)."""
    check(plib.asyncify_scope_exit(token))


# -- the global layer -----------------------------------------------------------


def global_set(key: str, value: bytes) -> None:
    """``asyncify_global_set``."""
    data = bytes(value)
    check(plib.asyncify_global_set(key_bytes(key), data, len(data)))


def global_set_ptr(key: str, ptr: int, release: CFuncPtr | None = None) -> None:
    """``asyncify_global_set_ptr``."""
    check(plib.asyncify_global_set_ptr(key_bytes(key), ptr, _nullable(FREE_FN, release)))


def global_remove(key: str) -> None:
    """``asyncify_global_remove``."""
    check(plib.asyncify_global_remove(key_bytes(key)))


# -- contexts (free each with context_free) -------------------------------------


def context_capture() -> int:
    """``asyncify_context_capture``."""
    out = c_void_p()
    check(plib.asyncify_context_capture(byref(out)))
    return out.value or 0


def context_empty() -> int:
    """``asyncify_context_empty``."""
    out = c_void_p()
    check(plib.asyncify_context_empty(byref(out)))
    return out.value or 0


def context_with(ctx: int, key: str, value: bytes) -> int:
    """``asyncify_context_with``: a new context."""
    data = bytes(value)
    out = c_void_p()
    check(plib.asyncify_context_with(ctx, key_bytes(key), data, len(data), byref(out)))
    return out.value or 0


def context_with_ptr(ctx: int, key: str, ptr: int, release: CFuncPtr | None = None) -> int:
    """``asyncify_context_with_ptr``: a new context."""
    out = c_void_p()
    check(plib.asyncify_context_with_ptr(ctx, key_bytes(key), ptr, _nullable(FREE_FN, release), byref(out)))
    return out.value or 0


def context_without(ctx: int, key: str) -> int:
    """``asyncify_context_without``: a new context."""
    out = c_void_p()
    check(plib.asyncify_context_without(ctx, key_bytes(key), byref(out)))
    return out.value or 0


def context_run(ctx: int, fn: CFuncPtr, arg: int | None = None) -> tuple[int, int, int]:
    """``asyncify_context_run`` with a ``WORK_FN``: ``(status, result, code)``."""
    result = c_void_p()
    code = c_int32()
    status = check(lib.asyncify_context_run(ctx, fn, arg, byref(result), byref(code)))
    return status, result.value or 0, code.value


def context_free(ctx: int) -> None:
    """``asyncify_context_free``."""
    check(plib.asyncify_context_free(ctx))


def context_get(ctx: int, key: str) -> bytes:
    """``asyncify_context_get``: the bytes of ``key`` in ``ctx`` (``NotFoundError`` if
    absent, ``InvalidArgumentError`` for a pointer value)."""
    kb = key_bytes(key)
    return copy_out(lambda buf, cap, n: plib.asyncify_context_get(ctx, kb, buf, cap, n))


def context_get_ptr(ctx: int, key: str) -> int:
    """``asyncify_context_get_ptr``: the address stored under ``key`` in ``ctx``."""
    out = c_void_p()
    check(plib.asyncify_context_get_ptr(ctx, key_bytes(key), byref(out)))
    return out.value or 0


def context_get_ptr_ex(ctx: int, key: str) -> tuple[int, int]:
    """``asyncify_context_get_ptr_ex``: ``(address, release function address or 0)``."""
    out = c_void_p()
    rel = c_void_p()
    check(plib.asyncify_context_get_ptr_ex(ctx, key_bytes(key), byref(out), byref(rel)))
    return out.value or 0, rel.value or 0


def context_count(ctx: int) -> int:
    """``asyncify_context_count``: the number of keys in ``ctx``."""
    n = c_size_t()
    check(plib.asyncify_context_count(ctx, byref(n)))
    return n.value


def context_visit(ctx: int) -> list[tuple[str, bytes | int]]:
    """``asyncify_context_visit``: ``[(key, bytes value or pointer address), ...]`` in key order."""
    items: list[tuple[str, bytes | int]] = []

    def visit(_data: int | None, key: int, key_len: int, is_ptr: int, value: int | None, length: int) -> int:
        name = ctypes.string_at(key, key_len).decode("utf-8", "surrogateescape")
        if is_ptr:
            items.append((name, value or 0))
        else:
            items.append((name, ctypes.string_at(value, length) if value and length else b""))
        return 0

    check(lib.asyncify_context_visit(ctx, VISIT_FN(visit), None))
    return items


# -- limiters (free each with limiter_free) -------------------------------------


def limiter_options_init() -> LimiterOptions:
    """``asyncify_limiter_options_init``: options with the defaults (no cap, no rate)."""
    opts = LimiterOptions()
    check(plib.asyncify_limiter_options_init(byref(opts), sizeof(opts)))
    return opts


def limiter_new(opts: LimiterOptions) -> int:
    """``asyncify_limiter_new``: a limiter, for ``SubmitOptions.limiter``."""
    out = c_void_p()
    check(plib.asyncify_limiter_new(byref(opts), byref(out)))
    return out.value or 0


def limiter_set(lim: int, max_running: int, rate_per_s: float = 0.0, burst: int = 0) -> None:
    """``asyncify_limiter_set``: the cap and the rate, for every pool at once."""
    check(plib.asyncify_limiter_set(lim, max_running, rate_per_s, burst))


def limiter_stats_get(lim: int) -> LimiterStats:
    """``asyncify_limiter_stats_get``."""
    out = LimiterStats()
    out.struct_size = sizeof(out)
    check(plib.asyncify_limiter_stats_get(lim, byref(out)))
    return out


def limiter_latency(lim: int, which: int) -> Latency:
    """``asyncify_limiter_latency``: ``LATENCY_QUEUE_WAIT`` or ``LATENCY_RUN`` figures of
    the limiter's tasks on pools that record latency."""
    out = Latency()
    out.struct_size = sizeof(out)
    check(plib.asyncify_limiter_latency(lim, which, byref(out)))
    return out


def limiter_free(lim: int) -> None:
    """``asyncify_limiter_free`` (its tasks keep it alive until they are done)."""
    check(plib.asyncify_limiter_free(lim))


# -- completion queues ------------------------------------------------------------


def cq_new() -> int:
    """``asyncify_cq_new``."""
    out = c_void_p()
    check(plib.asyncify_cq_new(byref(out)))
    return out.value or 0


def cq_fd(cq: int) -> int:
    """``asyncify_cq_fd``: readable while completions wait (do not read or close it)."""
    fd = c_int32()
    check(plib.asyncify_cq_fd(cq, byref(fd)))
    return fd.value


def cq_wait(cq: int, timeout: float | None = None) -> bool:
    """``asyncify_cq_wait``: True when a completion is ready, False on timeout."""
    return check(lib.asyncify_cq_wait(cq, milliseconds("timeout", timeout))) == OK


def cq_drain(cq: int, cap: int = 64) -> list[tuple[int, int, int, int, int]]:
    """``asyncify_cq_drain``: ``[(handle, status, code, result, user_data), ...]``."""
    batch = (Completion * cap)()
    n = c_size_t()
    check(plib.asyncify_cq_drain(cq, batch, cap, byref(n)))
    return [(c.handle, c.status, c.code, c.result or 0, c.user_data or 0) for c in batch[: n.value]]


def cq_free(cq: int) -> None:
    """``asyncify_cq_free``."""
    check(plib.asyncify_cq_free(cq))


# -- pools (None: the library's own default pool) -------------------------------


def pool_options_init() -> PoolOptions:
    """``asyncify_pool_options_init``: options with the defaults."""
    opts = PoolOptions()
    check(plib.asyncify_pool_options_init(byref(opts), sizeof(opts)))
    return opts


def pool_new(max_workers: int) -> int:
    """``asyncify_pool_new``. Worker threads get no Python thread state of their own:
    prefer ``casyncify.Pool`` for Python callables."""
    out = c_void_p()
    check(lib.asyncify_pool_new(max_workers, byref(out)))
    return out.value or 0


def pool_new_ex(opts: PoolOptions | None = None) -> int:
    """``asyncify_pool_new_ex``."""
    out = c_void_p()
    check(lib.asyncify_pool_new_ex(byref(opts) if opts is not None else None, byref(out)))
    return out.value or 0


def stats(pool: int | None = None) -> PoolStats:
    """``asyncify_stats``."""
    s = PoolStats()
    s.struct_size = sizeof(s)
    check(plib.asyncify_stats(pool, byref(s)))
    return s


def pool_latency(pool: int | None, which: int) -> Latency:
    """``asyncify_pool_latency``: ``LATENCY_QUEUE_WAIT`` or ``LATENCY_RUN`` figures of a pool made
    with ``POOL_RECORD_LATENCY`` (``NotFoundError`` for one that does not record)."""
    out = Latency()
    out.struct_size = sizeof(out)
    check(plib.asyncify_pool_latency(pool, which, byref(out)))
    return out


def pool_free(pool: int, timeout: float | None = None) -> bool:
    """``asyncify_pool_free``: True (``OK``) or False (``TIMEOUT``: some still run)."""
    return check(lib.asyncify_pool_free(pool, milliseconds("timeout", timeout))) == OK


def pool_close(pool: int, timeout: float | None = None) -> bool:
    """``asyncify_pool_close``: begins the shutdown and waits without freeing; True
    (``OK``: quiet and joined) or False (``TIMEOUT``); may be called again."""
    return check(lib.asyncify_pool_close(pool, milliseconds("timeout", timeout))) == OK


def shutdown(timeout: float | None = None) -> bool:
    """``asyncify_shutdown``: shuts the library's default pool down."""
    return check(lib.asyncify_shutdown(milliseconds("timeout", timeout))) == OK


def set_max_workers(pool: int | None, n: int) -> None:
    """``asyncify_set_max_workers``."""
    check(plib.asyncify_set_max_workers(pool, n))


def get_max_workers(pool: int | None = None) -> int:
    """``asyncify_get_max_workers``."""
    n = c_uint32()
    check(plib.asyncify_get_max_workers(pool, byref(n)))
    return n.value


# -- tasks ---------------------------------------------------------------------------


def submit_options_init() -> SubmitOptions:
    """``asyncify_submit_options_init``: options with the defaults."""
    opts = SubmitOptions()
    check(plib.asyncify_submit_options_init(byref(opts), sizeof(opts)))
    return opts


def submit(fn: CFuncPtr, arg: int | None = None, opts: SubmitOptions | None = None) -> int:
    """``asyncify_submit`` with a ``WORK_FN``: the handle (0 with ``SUBMIT_DETACHED``)."""
    h = c_uint64()
    check(plib.asyncify_submit(fn, arg, byref(opts) if opts is not None else None, byref(h)))
    return h.value


def poll(handle: int, want_result: bool = True) -> tuple[int, int, int]:
    """``asyncify_poll``: ``(status, result, code)``; status is PENDING/OK/FAILED/CANCELLED."""
    result = c_void_p()
    code = c_int32()
    status = check(plib.asyncify_poll(handle, byref(result) if want_result else None, byref(code)))
    return status, result.value or 0, code.value


def wait(handle: int, timeout: float | None = None, want_result: bool = True) -> tuple[int, int, int]:
    """``asyncify_wait``: ``(status, result, code)``; raises ``casyncify.TimeoutError``
    (a builtin ``TimeoutError``) when the time runs out (the task goes on)."""
    result = c_void_p()
    code = c_int32()
    ms = milliseconds("timeout", timeout)
    status = check(lib.asyncify_wait(handle, ms, byref(result) if want_result else None, byref(code)))
    if status == TIMEOUT:
        raise TimeoutError(TIMEOUT, f"asyncify_wait: handle {handle} still pending after {timeout} s")
    return status, result.value or 0, code.value


def wait_any(handles: Sequence[int], timeout: float | None = None) -> int:
    """``asyncify_wait_any``: the index of the first terminal handle; raises
    ``casyncify.TimeoutError`` when the time runs out."""
    arr = (c_uint64 * len(handles))(*handles)
    index = c_size_t()
    status = check(lib.asyncify_wait_any(arr, len(handles), milliseconds("timeout", timeout), byref(index)))
    if status == TIMEOUT:
        raise TimeoutError(TIMEOUT, f"asyncify_wait_any: none of {len(handles)} handles finished in {timeout} s")
    return index.value


def release(handle: int) -> None:
    """``asyncify_release``."""
    check(plib.asyncify_release(handle))


def cancel(handle: int) -> int:
    """``asyncify_cancel``: CANCELLED, or OK/FAILED when the function had already returned."""
    return check(plib.asyncify_cancel(handle))


def cancel_requested() -> bool:
    """``asyncify_cancel_requested``."""
    return bool(plib.asyncify_cancel_requested())


# Every exported C function has a wrapper here (checked by the tests).
WRAPPED = {name: globals()[name[len("asyncify_") :]] for name in _ffi.SIGNATURES}
