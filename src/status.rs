//! Status codes: the one vocabulary shared by the engine and the C ABI.
//!
//! `asyncify_status` is a plain `int32_t` with `#define`d values, so C, C++ and
//! ctypes all see an integer and an unknown value is never undefined behaviour.
//! `>= 0` are outcomes, `< 0` are errors.
#![allow(non_camel_case_types)]

use std::ffi::CStr;

/// A status code, what almost every function returns: `>= 0` an outcome, `< 0`
/// an error, whose message asyncify_last_error() then gives. It is a plain
/// `int32_t` with `#define`d values rather than an enum, so a value from a newer
/// library is still just an integer; asyncify_status_str() names any value.
pub type asyncify_status = i32;

/// Success. For a task (asyncify_poll(), asyncify_wait(), `on_done`, a
/// completion): it ran and its work function returned 0.
pub const ASYNCIFY_OK: asyncify_status = 0;
/// The task is queued or running, or has finished but its `on_done` has not
/// returned yet (asyncify_poll()).
pub const ASYNCIFY_PENDING: asyncify_status = 1;
/// The work function returned a non-zero code, delivered as `code` (for a task,
/// and from asyncify_context_run()).
pub const ASYNCIFY_FAILED: asyncify_status = 2;
/// The task was cancelled before it started, so it never ran, or abandoned while
/// running (asyncify_cancel(), or a pool's shutdown for a queued task).
pub const ASYNCIFY_CANCELLED: asyncify_status = 3;
/// A wait ran out of time (asyncify_wait(), asyncify_wait_any(),
/// asyncify_cq_wait()) or a pool's shutdown did not finish in time
/// (asyncify_pool_free(), asyncify_pool_close(), asyncify_shutdown()); the
/// tasks go on.
pub const ASYNCIFY_TIMEOUT: asyncify_status = 4;
/// The task's start deadline (`start_within_ms` of ::asyncify_submit_options)
/// passed before it started, so it never ran (outcome of a task).
pub const ASYNCIFY_EXPIRED: asyncify_status = 5;
/// A pointer the function requires was NULL.
pub const ASYNCIFY_E_NULL: asyncify_status = -1;
/// A bad value: an empty or non-UTF-8 key, a `size` or `struct_size` too small
/// for any published layout, non-zero bytes past the fields this library knows,
/// an unknown flag, a value of the other kind (bytes where a pointer is read, or
/// the reverse), or a value the function documents as refused.
pub const ASYNCIFY_E_INVALID_ARGUMENT: asyncify_status = -2;
/// A handle that is 0, was never issued, or was released already (by
/// asyncify_release(), or by itself for a detached task).
pub const ASYNCIFY_E_INVALID_HANDLE: asyncify_status = -3;
/// The key is not set in what the function reads (the thread's table and the
/// global layer, a context, or the global layer alone).
pub const ASYNCIFY_E_NOT_FOUND: asyncify_status = -4;
/// The caller's buffer is too small; `*out_len` holds the size needed.
pub const ASYNCIFY_E_BUFFER_TOO_SMALL: asyncify_status = -5;
/// The pool is shut down (asyncify_submit() after its shutdown began), or the
/// completion queue was freed while asyncify_cq_wait() waited on it.
pub const ASYNCIFY_E_SHUT_DOWN: asyncify_status = -6;
/// The pool's queue is full: `max_queued` tasks of the pool are waiting to start
/// already (only when the pool was given a bound).
pub const ASYNCIFY_E_BUSY: asyncify_status = -7;
/// The call would wait for itself, so it did nothing: a task, or its `on_done`,
/// waiting for its own handle, or a pool shut down from one of its own workers.
pub const ASYNCIFY_E_WOULD_DEADLOCK: asyncify_status = -8;
/// asyncify_scope_exit() with a token that is not the innermost open scope of
/// the calling thread (or task): out of LIFO order, from another thread or from
/// another task. Nothing changed.
pub const ASYNCIFY_E_SCOPE_MISMATCH: asyncify_status = -9;
/// The handle was made in the parent process before `fork()`; the child cannot
/// use it.
pub const ASYNCIFY_E_FORKED: asyncify_status = -10;
/// An internal error (a bug of the library) caught at the boundary;
/// asyncify_last_error() has its text. The library keeps working.
pub const ASYNCIFY_E_PANIC: asyncify_status = -11;
/// A resource ran out: memory, handle slots, worker threads (no worker could be
/// started for a pool that has none) or file descriptors (asyncify_cq_new()).
pub const ASYNCIFY_E_OUT_OF_MEMORY: asyncify_status = -12;

/// The fixed text of a status code; unknown values get a text too.
pub fn describe(status: asyncify_status) -> &'static CStr {
    match status {
        ASYNCIFY_OK => c"ASYNCIFY_OK: success",
        ASYNCIFY_PENDING => c"ASYNCIFY_PENDING: the task is queued or running",
        ASYNCIFY_FAILED => c"ASYNCIFY_FAILED: the work function returned a non-zero code",
        ASYNCIFY_CANCELLED => {
            c"ASYNCIFY_CANCELLED: cancelled before it started, or abandoned while running"
        }
        ASYNCIFY_TIMEOUT => c"ASYNCIFY_TIMEOUT: the wait ran out of time; the task goes on",
        ASYNCIFY_EXPIRED => {
            c"ASYNCIFY_EXPIRED: the task's start deadline passed before it started; it never ran"
        }
        ASYNCIFY_E_NULL => c"ASYNCIFY_E_NULL: a required pointer was NULL",
        ASYNCIFY_E_INVALID_ARGUMENT => c"ASYNCIFY_E_INVALID_ARGUMENT: a bad value",
        ASYNCIFY_E_INVALID_HANDLE => {
            c"ASYNCIFY_E_INVALID_HANDLE: unknown, released or stale handle"
        }
        ASYNCIFY_E_NOT_FOUND => c"ASYNCIFY_E_NOT_FOUND: no such override key",
        ASYNCIFY_E_BUFFER_TOO_SMALL => {
            c"ASYNCIFY_E_BUFFER_TOO_SMALL: the buffer is too small; *out_len holds the size needed"
        }
        ASYNCIFY_E_SHUT_DOWN => c"ASYNCIFY_E_SHUT_DOWN: the pool is shut down",
        ASYNCIFY_E_BUSY => c"ASYNCIFY_E_BUSY: the pool's queue is full",
        ASYNCIFY_E_WOULD_DEADLOCK => {
            c"ASYNCIFY_E_WOULD_DEADLOCK: the wait or free could never finish"
        }
        ASYNCIFY_E_SCOPE_MISMATCH => {
            c"ASYNCIFY_E_SCOPE_MISMATCH: scope exit out of LIFO order, from another thread or task"
        }
        ASYNCIFY_E_FORKED => c"ASYNCIFY_E_FORKED: the handle belongs to the parent of a fork()",
        ASYNCIFY_E_PANIC => c"ASYNCIFY_E_PANIC: internal error caught at the boundary",
        ASYNCIFY_E_OUT_OF_MEMORY => c"ASYNCIFY_E_OUT_OF_MEMORY: allocation failed",
        _ => c"unknown asyncify status",
    }
}

/// An error of the engine, before the C layer adds its argument checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Unknown, released or stale handle.
    InvalidHandle,
    /// A handle from the parent of a `fork()`.
    Forked,
    /// The pool is shut down.
    ShutDown,
    /// The pool's queue bound is reached.
    Busy,
    /// The wait or free could never finish.
    WouldDeadlock,
    /// Out of memory, or out of handle slots.
    OutOfMemory,
    /// No worker thread could be started and the pool has none.
    NoWorkerThread,
}

impl Error {
    /// The C status code for this error.
    pub fn status(self) -> asyncify_status {
        match self {
            Error::InvalidHandle => ASYNCIFY_E_INVALID_HANDLE,
            Error::Forked => ASYNCIFY_E_FORKED,
            Error::ShutDown => ASYNCIFY_E_SHUT_DOWN,
            Error::Busy => ASYNCIFY_E_BUSY,
            Error::WouldDeadlock => ASYNCIFY_E_WOULD_DEADLOCK,
            Error::OutOfMemory | Error::NoWorkerThread => ASYNCIFY_E_OUT_OF_MEMORY,
        }
    }
}
