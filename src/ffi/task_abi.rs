//! What a task is made of, for the C ABI: its handle and the types of its
//! work and completion functions. Shared by submit (`task`), contexts
//! (`asyncify_context_run`) and completion queues, which otherwise need
//! nothing of each other.

use std::ffi::c_void;

use crate::status::asyncify_status;

/// A task's handle, from asyncify_submit(): a generation-checked id, never 0.
///
/// It stays valid until asyncify_release(), or for a detached task until the
/// task is terminal; it outlives the task's pool. Any other value (0, forged,
/// released, stale) is refused with `ASYNCIFY_E_INVALID_HANDLE`, never undefined
/// behaviour.
pub type asyncify_handle = u64;

/// A task's work function (asyncify_submit(); also asyncify_context_run()).
///
/// Called once with the `arg` given to asyncify_submit() and `out_result`
/// pointing at a NULL result it may replace. It returns 0 for success
/// (`ASYNCIFY_OK`); anything else is a failure code (`ASYNCIFY_FAILED`, the code
/// delivered as `code`). It runs on a worker thread of the task's pool with the
/// submitter's table installed, or on another worker of that pool that waits
/// for it while it is still queued and so runs it in the waiter's slot. It may
/// call the library (asyncify_cancel_requested() tells it that it was
/// cancelled); it must not unwind.
pub type asyncify_work_fn =
    Option<extern "C" fn(arg: *mut c_void, out_result: *mut *mut c_void) -> i32>;

/// A task's completion callback (`on_done` of ::asyncify_submit_options),
/// called exactly once per task with its terminal status.
///
/// `OK` and `FAILED` are reported on the thread that ran the task (a worker,
/// after its own table was restored), `CANCELLED` on the thread that cancelled
/// it: the caller of asyncify_cancel(), or of the pool's shutdown for a queued
/// task. `user_data` is the task's `on_done_data`, `result` its result (now the
/// callee's; NULL when cancelled or when the work function stored none), and
/// `code` the work function's return value (0 when cancelled).
/// asyncify_poll() and asyncify_wait() show the terminal status only after this
/// returns, so a waiter may then free `user_data`. It may call the library,
/// asyncify_release() of its own handle included (a wait for its own task
/// returns `ASYNCIFY_E_WOULD_DEADLOCK`); it must not unwind.
pub type asyncify_done_fn = Option<
    extern "C" fn(
        user_data: *mut c_void,
        handle: asyncify_handle,
        status: asyncify_status,
        result: *mut c_void,
        code: i32,
    ),
>;
