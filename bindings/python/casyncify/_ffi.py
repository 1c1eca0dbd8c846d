"""The one ctypes layer: every declaration of ``include/asyncify.h``, made once.

The status codes and flags, the callback types, the structures and the
signature of every exported function, set on the loaded library (``_library``);
the few CPython C-API functions the binding calls; and the library's own error
reporting (``last_error``, ``status_str``). The high-level API and ``lowlevel``
both call C through the handles declared here.

Two handles on the same library are kept:

* ``lib`` (``ctypes.CDLL``) releases the GIL around the call: for everything
  that may block (waits, pool shutdown, pool creation) or run foreign code.
* ``plib`` (``ctypes.PyDLL``) keeps the GIL: for the short, never-blocking calls
  on the hot path (submit, cancel, release, drain, contexts, overrides). A call
  that releases the GIL on a busy interpreter may have to wait a whole switch
  interval (5 ms) to get it back; these calls take well under a microsecond.
  Holding the GIL is safe because the library runs no user code under its own
  locks (contract section 1), so no library lock is ever held by a thread that
  waits for the GIL.

Both handles get the same ``argtypes``/``restype`` for every exported function.
"""

from __future__ import annotations

import ctypes
import sys
import warnings
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_bool,
    c_char_p,
    c_int32,
    c_size_t,
    c_uint32,
    c_uint64,
    c_void_p,
)
from typing import TYPE_CHECKING, TypeVar

from . import _library

if TYPE_CHECKING:
    from _ctypes import _CDataType

__all__ = ["lib", "plib", "library_path"]

# ---------------------------------------------------------------------------
# Status codes (asyncify.h: #define ASYNCIFY_*)
# ---------------------------------------------------------------------------

OK = 0
PENDING = 1
FAILED = 2
CANCELLED = 3
TIMEOUT = 4
EXPIRED = 5
E_NULL = -1
E_INVALID_ARGUMENT = -2
E_INVALID_HANDLE = -3
E_NOT_FOUND = -4
E_BUFFER_TOO_SMALL = -5
E_SHUT_DOWN = -6
E_BUSY = -7
E_WOULD_DEADLOCK = -8
E_SCOPE_MISMATCH = -9
E_FORKED = -10
E_PANIC = -11
E_OUT_OF_MEMORY = -12

POOL_RELEASE_SLOT_ON_ABANDON = 1
POOL_RECORD_LATENCY = 2
LATENCY_QUEUE_WAIT = 1
LATENCY_RUN = 2
KEY_LOCAL = 1
SUBMIT_DETACHED = 1
SUBMIT_EMPTY_CONTEXT = 2
UINT32_MAX = 0xFFFFFFFF

# ---------------------------------------------------------------------------
# Function pointer types
# ---------------------------------------------------------------------------

#: void (*asyncify_free_fn)(void *ptr)
FREE_FN = CFUNCTYPE(None, c_void_p)
#: int32_t (*asyncify_work_fn)(void *arg, void **out_result)
WORK_FN = CFUNCTYPE(c_int32, c_void_p, POINTER(c_void_p))
#: void (*asyncify_done_fn)(void *user_data, asyncify_handle, asyncify_status, void *result, int32_t code)
DONE_FN = CFUNCTYPE(None, c_void_p, c_uint64, c_int32, c_void_p, c_int32)
#: void (*asyncify_thread_hook)(void *user_data)
THREAD_HOOK = CFUNCTYPE(None, c_void_p)
#: void (*asyncify_task_hook)(void *hook_data, asyncify_handle, asyncify_status, uint64_t queue_wait_ns,
#:                             uint64_t run_ns)
TASK_HOOK = CFUNCTYPE(None, c_void_p, c_uint64, c_int32, c_uint64, c_uint64)
#: void *(*asyncify_clone_fn)(void *ptr)
CLONE_FN = CFUNCTYPE(c_void_p, c_void_p)

#: int32_t (*asyncify_visit_fn)(void *user_data, const char *key, size_t key_len,
#:                               int32_t is_ptr, const void *value, size_t len)
VISIT_FN = CFUNCTYPE(c_int32, c_void_p, c_void_p, c_size_t, c_int32, c_void_p, c_size_t)

# The binding's own callbacks are declared with ``void *`` where the header has
# ``void **``: same ABI, and ctypes then hands Python a plain int instead of
# building a pointer object on every call.
WORK_FN_FAST = CFUNCTYPE(c_int32, c_void_p, c_void_p)

# ---------------------------------------------------------------------------
# Structures (field for field as in asyncify.h)
# ---------------------------------------------------------------------------


class Completion(Structure):
    """``asyncify_completion``."""

    _fields_ = [
        ("handle", c_uint64),
        ("status", c_int32),
        ("code", c_int32),
        ("result", c_void_p),
        ("user_data", c_void_p),
    ]


class PoolOptions(Structure):
    """``asyncify_pool_options``: prepare with ``asyncify_pool_options_init``."""

    _fields_ = [
        ("struct_size", c_uint32),
        ("max_workers", c_uint32),
        ("max_queued", c_uint32),
        ("keep_alive_ms", c_uint32),
        ("flags", c_uint32),
        ("thread_name", c_char_p),
        ("on_thread_start", THREAD_HOOK),
        ("on_thread_stop", THREAD_HOOK),
        ("hook_data", c_void_p),
        ("stack_size", c_size_t),  # since 0.2
        ("on_task_start", TASK_HOOK),  # since 0.2
        ("on_task_end", TASK_HOOK),  # since 0.2
    ]


class Latency(Structure):
    """``asyncify_latency``: set ``struct_size`` before ``asyncify_pool_latency``."""

    _fields_ = [
        ("struct_size", c_uint32),
        ("count", c_uint64),
        ("p50_ns", c_uint64),
        ("p90_ns", c_uint64),
        ("p99_ns", c_uint64),
        ("max_ns", c_uint64),
        ("sum_ns", c_uint64),
    ]


class PoolStats(Structure):
    """``asyncify_pool_stats``: set ``struct_size`` before ``asyncify_stats``."""

    _fields_ = [
        ("struct_size", c_uint32),
        ("limit", c_uint32),
        ("threads", c_uint32),
        ("idle_threads", c_uint32),
        ("queued", c_uint64),
        ("running", c_uint64),
        ("submitted", c_uint64),
        ("completed", c_uint64),
        ("failed", c_uint64),
        ("cancelled", c_uint64),
        ("abandoned", c_uint64),
        ("expired", c_uint64),  # since 0.2
    ]


class LimiterOptions(Structure):
    """``asyncify_limiter_options``: prepare with ``asyncify_limiter_options_init``."""

    _fields_ = [
        ("struct_size", c_uint32),
        ("max_running", c_uint32),
        ("rate_per_s", ctypes.c_double),
        ("burst", c_uint32),
        ("name", c_char_p),
    ]


class LimiterStats(Structure):
    """``asyncify_limiter_stats``: set ``struct_size`` before ``asyncify_limiter_stats_get``."""

    _fields_ = [
        ("struct_size", c_uint32),
        ("max_running", c_uint32),
        ("waiting", c_uint64),
        ("running", c_uint64),
        ("admitted", c_uint64),
        ("expired", c_uint64),
        ("cancelled_waiting", c_uint64),
    ]


class SubmitOptions(Structure):
    """``asyncify_submit_options``: prepare with ``asyncify_submit_options_init``."""

    _fields_ = [
        ("struct_size", c_uint32),
        ("flags", c_uint32),
        ("on_done", DONE_FN),
        ("on_done_data", c_void_p),
        ("free_arg", FREE_FN),
        ("free_result", FREE_FN),
        ("pool", c_void_p),
        ("cq", c_void_p),
        ("context", c_void_p),
        ("limiter", c_void_p),  # since 0.2
        ("start_within_ms", c_uint32),  # since 0.2
    ]


# ---------------------------------------------------------------------------
# Signatures: every function exported by libasyncify (nm -D --defined-only)
# ---------------------------------------------------------------------------

_S = c_int32  # asyncify_status
_P = c_void_p  # opaque struct pointers (asyncify_context*, asyncify_pool*, asyncify_cq*)
_PP = POINTER(c_void_p)

#: name -> (restype, argtypes), as the header declares it.
SIGNATURES: dict[str, tuple[type[_CDataType] | None, list[type[_CDataType]]]] = {
    # errors and version
    "asyncify_status_str": (c_char_p, [c_int32]),
    "asyncify_last_error": (_S, [c_void_p, c_size_t, POINTER(c_size_t)]),
    "asyncify_version": (c_char_p, []),
    # the override table
    "asyncify_override_set": (_S, [c_char_p, c_void_p, c_size_t]),
    "asyncify_override_set_ex": (_S, [c_char_p, c_void_p, c_size_t, c_uint32]),
    "asyncify_override_set_ptr": (_S, [c_char_p, c_void_p, FREE_FN]),
    "asyncify_override_set_ptr_ex": (_S, [c_char_p, c_void_p, FREE_FN, CLONE_FN, c_uint32]),
    "asyncify_override_get": (_S, [c_char_p, c_void_p, c_size_t, POINTER(c_size_t)]),
    "asyncify_override_get_ptr": (_S, [c_char_p, _PP]),
    "asyncify_override_get_ptr_ex": (_S, [c_char_p, _PP, _PP]),
    "asyncify_override_remove": (_S, [c_char_p]),
    "asyncify_override_clear": (_S, []),
    "asyncify_override_count": (_S, [POINTER(c_size_t)]),
    "asyncify_scope_enter": (_S, [POINTER(c_uint64)]),
    "asyncify_scope_exit": (_S, [c_uint64]),
    # the global layer
    "asyncify_global_set": (_S, [c_char_p, c_void_p, c_size_t]),
    "asyncify_global_set_ptr": (_S, [c_char_p, c_void_p, FREE_FN]),
    "asyncify_global_remove": (_S, [c_char_p]),
    # contexts
    "asyncify_context_capture": (_S, [_PP]),
    "asyncify_context_empty": (_S, [_PP]),
    "asyncify_context_with": (_S, [_P, c_char_p, c_void_p, c_size_t, _PP]),
    "asyncify_context_with_ptr": (_S, [_P, c_char_p, c_void_p, FREE_FN, _PP]),
    "asyncify_context_without": (_S, [_P, c_char_p, _PP]),
    "asyncify_context_run": (_S, [_P, WORK_FN, c_void_p, _PP, POINTER(c_int32)]),
    "asyncify_context_free": (_S, [_P]),
    "asyncify_context_get": (_S, [_P, c_char_p, c_void_p, c_size_t, POINTER(c_size_t)]),
    "asyncify_context_get_ptr": (_S, [_P, c_char_p, _PP]),
    "asyncify_context_get_ptr_ex": (_S, [_P, c_char_p, _PP, _PP]),
    "asyncify_context_count": (_S, [_P, POINTER(c_size_t)]),
    "asyncify_context_visit": (_S, [_P, VISIT_FN, c_void_p]),
    # limiters
    "asyncify_limiter_options_init": (_S, [POINTER(LimiterOptions), c_size_t]),
    "asyncify_limiter_new": (_S, [POINTER(LimiterOptions), _PP]),
    "asyncify_limiter_set": (_S, [_P, c_uint32, ctypes.c_double, c_uint32]),
    "asyncify_limiter_stats_get": (_S, [_P, POINTER(LimiterStats)]),
    "asyncify_limiter_latency": (_S, [_P, c_uint32, POINTER(Latency)]),
    "asyncify_limiter_free": (_S, [_P]),
    # completion queues
    "asyncify_cq_new": (_S, [_PP]),
    "asyncify_cq_fd": (_S, [_P, POINTER(c_int32)]),
    "asyncify_cq_wait": (_S, [_P, ctypes.c_int64]),
    "asyncify_cq_drain": (_S, [_P, POINTER(Completion), c_size_t, POINTER(c_size_t)]),
    "asyncify_cq_free": (_S, [_P]),
    # pools
    "asyncify_pool_new": (_S, [c_uint32, _PP]),
    "asyncify_pool_options_init": (_S, [POINTER(PoolOptions), c_size_t]),
    "asyncify_pool_new_ex": (_S, [POINTER(PoolOptions), _PP]),
    "asyncify_stats": (_S, [_P, POINTER(PoolStats)]),
    "asyncify_pool_latency": (_S, [_P, c_uint32, POINTER(Latency)]),
    "asyncify_pool_free": (_S, [_P, ctypes.c_int64]),
    "asyncify_pool_close": (_S, [_P, ctypes.c_int64]),
    "asyncify_shutdown": (_S, [ctypes.c_int64]),
    "asyncify_set_max_workers": (_S, [_P, c_uint32]),
    "asyncify_get_max_workers": (_S, [_P, POINTER(c_uint32)]),
    # tasks
    "asyncify_submit_options_init": (_S, [POINTER(SubmitOptions), c_size_t]),
    "asyncify_submit": (_S, [WORK_FN, c_void_p, POINTER(SubmitOptions), POINTER(c_uint64)]),
    "asyncify_poll": (_S, [c_uint64, _PP, POINTER(c_int32)]),
    "asyncify_wait": (_S, [c_uint64, ctypes.c_int64, _PP, POINTER(c_int32)]),
    "asyncify_wait_any": (_S, [POINTER(c_uint64), c_size_t, ctypes.c_int64, POINTER(c_size_t)]),
    "asyncify_release": (_S, [c_uint64]),
    "asyncify_cancel": (_S, [c_uint64]),
    "asyncify_cancel_requested": (c_bool, []),
}

#: Functions added in 0.2 that the binding itself does not use: a library without
#: them still loads (``has(name)`` says whether the loaded one exports them). The
#: other 0.2 functions are required: ``Pool.close`` waits with
#: ``asyncify_pool_close``, overrides are read back with the context readers,
#: ``Limiter`` is made of the limiter functions, ``Pool.stats`` reads latency.
SINCE_0_2 = frozenset({"asyncify_context_get", "asyncify_context_get_ptr_ex"})

# The binding submits its own work callback, declared with WORK_FN_FAST; the
# argument type of asyncify_submit / asyncify_context_run must accept it.
_FAST_SUBMIT: dict[str, tuple[type[_CDataType] | None, list[type[_CDataType]]]] = {
    "asyncify_submit": (_S, [WORK_FN_FAST, c_void_p, POINTER(SubmitOptions), POINTER(c_uint64)]),
    "asyncify_context_run": (_S, [_P, WORK_FN_FAST, c_void_p, _PP, POINTER(c_int32)]),
}

# ---------------------------------------------------------------------------
# The library, declared
# ---------------------------------------------------------------------------

lib, plib, library_path = _library.load(name for name in SIGNATURES if name not in SINCE_0_2)


def has(name: str) -> bool:
    """Whether the loaded library exports ``name``."""
    return hasattr(lib, name)


for _name, (_restype, _argtypes) in SIGNATURES.items():
    if not has(_name):
        continue
    for _h in (lib, plib):
        _f = getattr(_h, _name)
        _f.restype = _restype
        _f.argtypes = _argtypes

#: ``plib`` functions taking the binding's fast work callback type.
fast = ctypes.PyDLL(library_path)
for _name, (_restype, _argtypes) in _FAST_SUBMIT.items():
    _f = getattr(fast, _name)
    _f.restype = _restype
    _f.argtypes = _argtypes
del _name, _restype, _argtypes, _h, _f

#: The hottest two calls of ``asyncify()`` under asyncio (``asyncify_submit`` and
#: ``asyncify_cq_drain``, GIL held) without ``argtypes``: the caller passes only
#: ctypes objects it made once (a ``c_void_p`` for each pointer or id, ``byref``
#: for each out-parameter), so no argument is converted per call (213 instead of
#: 600 ns for a drain). Nothing else may call through this handle.
raw = ctypes.PyDLL(library_path)
raw.asyncify_submit.restype = _S
raw.asyncify_cq_drain.restype = _S

VERSION: str = lib.asyncify_version().decode()
if not VERSION.startswith("0."):  # pragma: no cover - guards a future ABI break
    raise ImportError(f"casyncify: {library_path} is asyncify {VERSION}; this binding speaks the 0.x ABI")

# ---------------------------------------------------------------------------
# The CPython C API used by the binding (GIL-holding PyDLL)
# ---------------------------------------------------------------------------

pyapi = ctypes.pythonapi
Py_IncRef = pyapi.Py_IncRef
Py_IncRef.argtypes = [ctypes.py_object]
Py_IncRef.restype = None
Py_DecRef = pyapi.Py_DecRef
Py_DecRef.argtypes = [c_void_p]
Py_DecRef.restype = None
PyGILState_Ensure = pyapi.PyGILState_Ensure
PyGILState_Ensure.argtypes = []
PyGILState_Ensure.restype = ctypes.c_int
PyGILState_Release = pyapi.PyGILState_Release
PyGILState_Release.argtypes = [ctypes.c_int]
PyGILState_Release.restype = None


_T = TypeVar("_T")


def immortal(obj: _T) -> _T:
    """Keep ``obj`` alive for the life of the process (one leaked reference).

    Used for the module-level ctypes callbacks: C may call them late (a context
    freed during interpreter teardown), so their thunks must never be freed.
    """
    Py_IncRef(obj)
    return obj


def last_error() -> str:
    """This thread's last error message from the library ('' when none)."""
    n = c_size_t(0)
    plib.asyncify_last_error(None, 0, ctypes.byref(n))
    if n.value <= 1:
        return ""
    buf = ctypes.create_string_buffer(n.value)
    plib.asyncify_last_error(buf, n.value, ctypes.byref(n))
    return buf.value.decode("utf-8", "replace")


def status_str(status: int) -> str:
    """``asyncify_status_str``: the fixed text of a status (also for unknown values)."""
    text: bytes = plib.asyncify_status_str(status)
    return text.decode("utf-8", "replace")


if sys.platform == "win32":  # pragma: no cover
    warnings.warn("casyncify is only tested on Linux", RuntimeWarning, stacklevel=2)
