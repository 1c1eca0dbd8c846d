//! Submitting work and observing it (contract sections 3 to 5).
//!
//! Ownership: `arg` stays the caller's unless the task never runs or is
//! abandoned, in which case `free_arg` gets it. The result moves exactly once:
//! to `on_done` if set, else to the first `asyncify_poll`/`asyncify_wait` that
//! passes a non-NULL `out_result` and returns `OK` or `FAILED`; a result no one
//! can receive goes to `free_result`.
//!
//! Threads: `on_done` runs on the worker (after the worker's table has been
//! restored) for `OK`/`FAILED`, and on the cancelling (or shutting-down)
//! thread for `CANCELLED`. No library lock is held while any user function
//! runs, so callbacks may call any function of the library.

use std::ffi::c_void;

use super::context::{asyncify_context, context_ref};
use super::cq::{asyncify_cq, queue_ref};
use super::pool::{asyncify_pool, pool_or_default};
use super::table::asyncify_free_fn;
use super::{
    fail, guard, init_struct, required, required_out, timeout_arg, versioned_arg, write_out,
};
use crate::overrides;
use crate::status::*;
use crate::table::Table;
use crate::task::{self, TaskSpec};

/// A task's handle: a generation-checked id; 0 is never valid.
pub type asyncify_handle = u64;

/// The work function: returns 0 for success, anything else is a failure code.
/// It may store a result in `*out_result`.
pub type asyncify_work_fn =
    Option<extern "C" fn(arg: *mut c_void, out_result: *mut *mut c_void) -> i32>;

/// Called exactly once per task with its terminal status.
pub type asyncify_done_fn = Option<
    extern "C" fn(
        user_data: *mut c_void,
        handle: asyncify_handle,
        status: asyncify_status,
        result: *mut c_void,
        code: i32,
    ),
>;

/// Submit flag: the handle releases itself once the task is terminal (after
/// `on_done`); `out_handle` may then be NULL.
pub const ASYNCIFY_SUBMIT_DETACHED: u32 = 1;
/// Submit flag: run with an empty table instead of the caller's.
pub const ASYNCIFY_SUBMIT_EMPTY_CONTEXT: u32 = 2;
const KNOWN_SUBMIT_FLAGS: u32 = ASYNCIFY_SUBMIT_DETACHED | ASYNCIFY_SUBMIT_EMPTY_CONTEXT;

/// Options for `asyncify_submit`. Prepare with `asyncify_submit_options_init`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct asyncify_submit_options {
    /// Set by `asyncify_submit_options_init`.
    pub struct_size: u32,
    /// `ASYNCIFY_SUBMIT_*` bits.
    pub flags: u32,
    /// Nullable: called exactly once with the terminal status.
    pub on_done: asyncify_done_fn,
    /// Passed to `on_done`.
    pub on_done_data: *mut c_void,
    /// Nullable: called on `arg` when the task will never run, or after an
    /// abandoned work function returns.
    pub free_arg: asyncify_free_fn,
    /// Nullable: called on a result no one can receive.
    pub free_result: asyncify_free_fn,
    /// NULL: the default pool.
    pub pool: *mut asyncify_pool,
    /// NULL: none. Without `on_done`, the completion goes to this queue.
    pub cq: *mut asyncify_cq,
    /// NULL: snapshot the calling thread's table now. Otherwise the task runs
    /// with this context (it keeps its own reference).
    pub context: *const asyncify_context,
}

// SAFETY: repr(C), all fields valid when zero (no callbacks, NULL pool,
// queue and context); one published layout so far.
unsafe impl super::Versioned for asyncify_submit_options {
    const NAME: &'static str = "asyncify_submit_options";
    const LAYOUT_ENDS: &'static [usize] = &[std::mem::offset_of!(asyncify_submit_options, context)
        + std::mem::size_of::<*const asyncify_context>()];
}

/// Prepares `*opts` with the defaults; `size` is `sizeof(*opts)`.
#[no_mangle]
pub extern "C" fn asyncify_submit_options_init(
    opts: *mut asyncify_submit_options,
    size: usize,
) -> asyncify_status {
    guard("asyncify_submit_options_init", || {
        let opts = required_out(opts, "opts")?;
        // SAFETY: the caller promises `size` writable bytes at `opts`.
        unsafe { init_struct(opts, size) }
    })
}

/// Runs `fn(arg)` on a pool with a snapshot of the calling thread's table
/// installed. Never blocks. `opts` NULL means the defaults; `out_handle` may
/// be NULL only with `ASYNCIFY_SUBMIT_DETACHED`. On failure nothing runs, no
/// callback is called, and the caller still owns `arg`.
#[no_mangle]
pub extern "C" fn asyncify_submit(
    r#fn: asyncify_work_fn,
    arg: *mut c_void,
    opts: *const asyncify_submit_options,
    out_handle: *mut asyncify_handle,
) -> asyncify_status {
    guard("asyncify_submit", || {
        let Some(work) = r#fn else {
            return Err(fail(ASYNCIFY_E_NULL, "fn is NULL"));
        };
        let opts = versioned_arg(opts)?;
        let flags = opts.map_or(0, |o| o.flags);
        if flags & !KNOWN_SUBMIT_FLAGS != 0 {
            return Err(fail(
                ASYNCIFY_E_INVALID_ARGUMENT,
                format!("unknown flags 0x{:x}", flags & !KNOWN_SUBMIT_FLAGS),
            ));
        }
        let detached = flags & ASYNCIFY_SUBMIT_DETACHED != 0;
        if !detached {
            required(
                out_handle,
                "out_handle (required unless ASYNCIFY_SUBMIT_DETACHED)",
            )?;
        }
        let context = opts.map_or(std::ptr::null(), |o| o.context);
        let empty = flags & ASYNCIFY_SUBMIT_EMPTY_CONTEXT != 0;
        if empty && !context.is_null() {
            return Err(fail(
                ASYNCIFY_E_INVALID_ARGUMENT,
                "ASYNCIFY_SUBMIT_EMPTY_CONTEXT and a context exclude each other",
            ));
        }
        let cq = opts.map_or(std::ptr::null_mut(), |o| o.cq);
        let cq = if cq.is_null() {
            None
        } else {
            Some(queue_ref(cq)?.clone())
        };
        let pool = pool_or_default(opts.map_or(std::ptr::null_mut(), |o| o.pool));
        let spec = TaskSpec::new(work, arg)
            .on_done(
                opts.and_then(|o| o.on_done),
                opts.map_or(std::ptr::null_mut(), |o| o.on_done_data),
            )
            .free_fns(
                opts.and_then(|o| o.free_arg),
                opts.and_then(|o| o.free_result),
            )
            .detached(detached)
            .completion_queue(cq);
        let snapshot = if empty {
            Table::new()
        } else if context.is_null() {
            overrides::snapshot()
        } else {
            context_ref(context)?.table.clone()
        };
        let handle = pool.submit(spec, snapshot)?;
        write_out(out_handle, handle);
        Ok(ASYNCIFY_OK)
    })
}

fn write_observed(
    seen: task::Observed,
    out_result: *mut *mut c_void,
    out_code: *mut i32,
) -> asyncify_status {
    write_out(out_result, seen.result);
    write_out(out_code, seen.code);
    seen.status
}

/// The task's status now, without blocking: `PENDING`, `OK`, `FAILED` or
/// `CANCELLED`. `out_result` and `out_code` are nullable; the result moves to
/// the first call that asks for it and sees `OK`/`FAILED` (later calls get NULL).
#[no_mangle]
pub extern "C" fn asyncify_poll(
    h: asyncify_handle,
    out_result: *mut *mut c_void,
    out_code: *mut i32,
) -> asyncify_status {
    guard("asyncify_poll", || {
        let seen = task::poll(h, !out_result.is_null())?;
        Ok(write_observed(seen, out_result, out_code))
    })
}

/// Waits until the task is terminal or `timeout_ms` (< 0: forever) runs out
/// (`ASYNCIFY_TIMEOUT`; the task goes on). Outputs as for `asyncify_poll`. A
/// task waiting for its own handle gets `ASYNCIFY_E_WOULD_DEADLOCK`; a task
/// waiting for a still-queued task of its own pool runs it inline.
#[no_mangle]
pub extern "C" fn asyncify_wait(
    h: asyncify_handle,
    timeout_ms: i64,
    out_result: *mut *mut c_void,
    out_code: *mut i32,
) -> asyncify_status {
    guard("asyncify_wait", || {
        let seen = task::wait(h, timeout_arg(timeout_ms), !out_result.is_null())?;
        Ok(write_observed(seen, out_result, out_code))
    })
}

/// Waits until at least one of the `n` handles at `hs` is terminal: `OK`
/// with the index of the first terminal one (in list order) in
/// `*out_index`, or `TIMEOUT` after `timeout_ms` (< 0: forever). Nothing is
/// received or released: poll or wait the handle for its result.
#[no_mangle]
pub extern "C" fn asyncify_wait_any(
    hs: *const asyncify_handle,
    n: usize,
    timeout_ms: i64,
    out_index: *mut usize,
) -> asyncify_status {
    guard("asyncify_wait_any", || {
        let hs = required(hs, "hs")?;
        let out_index = required_out(out_index, "out_index")?;
        if n == 0 {
            return Err(fail(
                ASYNCIFY_E_INVALID_ARGUMENT,
                "n is 0: nothing to wait for",
            ));
        }
        // SAFETY: the caller promises `n` readable handles at `hs`.
        let handles = unsafe { std::slice::from_raw_parts(hs, n) };
        match task::wait_any(handles, timeout_arg(timeout_ms))? {
            Some(i) => {
                write_out(out_index, i);
                Ok(ASYNCIFY_OK)
            }
            None => Ok(ASYNCIFY_TIMEOUT),
        }
    })
}

/// Cancels the task. Queued: it never runs, `free_arg` then `on_done`
/// (`CANCELLED`) are called on this thread. Running: it is abandoned (waiters
/// see `CANCELLED` at once, `on_done` is called here, the work function runs
/// to its end and its result and arg are then freed). Returns `CANCELLED`
/// when the task is now cancelled, `OK`/`FAILED` when it had already returned.
#[no_mangle]
pub extern "C" fn asyncify_cancel(h: asyncify_handle) -> asyncify_status {
    guard("asyncify_cancel", || Ok(task::cancel(h)?.status))
}

/// Frees the handle. A pending task goes on; its result goes to `free_result`.
#[no_mangle]
pub extern "C" fn asyncify_release(h: asyncify_handle) -> asyncify_status {
    guard("asyncify_release", || {
        task::release(h)?;
        Ok(ASYNCIFY_OK)
    })
}

/// Inside a task: true once the task has been cancelled, so long work can stop
/// early (its result will be freed). False outside tasks.
#[no_mangle]
pub extern "C" fn asyncify_cancel_requested() -> bool {
    super::guard_value("asyncify_cancel_requested", false, task::cancel_requested)
}
