//! Status codes: the one vocabulary shared by the engine and the C ABI.
//!
//! `asyncify_status` is a plain `int32_t` with `#define`d values, so C, C++ and
//! ctypes all see an integer and an unknown value is never undefined behaviour.
//! `>= 0` are outcomes, `< 0` are errors.
#![allow(non_camel_case_types)]

use std::ffi::CStr;

/// A status code: `>= 0` an outcome, `< 0` an error.
pub type asyncify_status = i32;

/// Success; for a task: finished and its work function returned 0.
pub const ASYNCIFY_OK: asyncify_status = 0;
/// The task is queued or running.
pub const ASYNCIFY_PENDING: asyncify_status = 1;
/// The work function returned a non-zero code (delivered as `code`).
pub const ASYNCIFY_FAILED: asyncify_status = 2;
/// Cancelled before it started, or abandoned while running.
pub const ASYNCIFY_CANCELLED: asyncify_status = 3;
/// A wait ran out of time; the task goes on.
pub const ASYNCIFY_TIMEOUT: asyncify_status = 4;
/// A required pointer was NULL.
pub const ASYNCIFY_E_NULL: asyncify_status = -1;
/// A bad value: empty or non-UTF-8 key, bad `struct_size`, non-zero unknown
/// bytes, a value of the other kind (bytes vs pointer), an unknown flag.
pub const ASYNCIFY_E_INVALID_ARGUMENT: asyncify_status = -2;
/// An unknown, released or stale handle.
pub const ASYNCIFY_E_INVALID_HANDLE: asyncify_status = -3;
/// No such override key.
pub const ASYNCIFY_E_NOT_FOUND: asyncify_status = -4;
/// The copy-out buffer is too small; `*out_len` holds the size needed.
pub const ASYNCIFY_E_BUFFER_TOO_SMALL: asyncify_status = -5;
/// The pool is shut down.
pub const ASYNCIFY_E_SHUT_DOWN: asyncify_status = -6;
/// The pool's queue is full (only when a queue bound is set).
pub const ASYNCIFY_E_BUSY: asyncify_status = -7;
/// A wait or free that could never finish.
pub const ASYNCIFY_E_WOULD_DEADLOCK: asyncify_status = -8;
/// `asyncify_scope_exit` out of LIFO order, from another thread or another task.
pub const ASYNCIFY_E_SCOPE_MISMATCH: asyncify_status = -9;
/// The handle belongs to the parent of a `fork()`.
pub const ASYNCIFY_E_FORKED: asyncify_status = -10;
/// An internal error caught at the boundary.
pub const ASYNCIFY_E_PANIC: asyncify_status = -11;
/// An allocation failed.
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
