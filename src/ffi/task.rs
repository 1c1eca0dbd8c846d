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
//! thread for `CANCELLED`, on the thread that noticed for `EXPIRED` (the
//! library's timer thread or a worker). No library lock is held while any user function
//! runs, so callbacks may call any function of the library.

use std::ffi::c_void;

use super::context::{asyncify_context, context_ref};
use super::cq::{asyncify_cq, queue_ref};
use super::limiter::{asyncify_limiter, limiter_ref};
use super::overrides::asyncify_free_fn;
use super::pool::{asyncify_pool, pool_or_default};
use super::{
    fail, guard, init_struct, required, required_out, timeout_arg, versioned_arg, write_out,
};
use crate::overrides;
use crate::status::*;
use crate::table::Table;
use crate::task::{self, PlainCalls, TaskSpec};

pub use super::task_abi::{asyncify_done_fn, asyncify_handle, asyncify_work_fn};

/// Submit flag: the handle releases itself once the task is terminal (after
/// `on_done` returned or the completion was queued), so nothing is left to
/// release; `out_handle` may then be NULL. A result that neither `on_done` nor a
/// completion queue takes goes to `free_result`.
pub const ASYNCIFY_SUBMIT_DETACHED: u32 = 1;
/// Submit flag: the task runs with an empty table instead of a snapshot of the
/// caller's (the global layer still shows through). Excludes a `context` in
/// ::asyncify_submit_options.
pub const ASYNCIFY_SUBMIT_EMPTY_CONTEXT: u32 = 2;
const KNOWN_SUBMIT_FLAGS: u32 = ASYNCIFY_SUBMIT_DETACHED | ASYNCIFY_SUBMIT_EMPTY_CONTEXT;

/// Options for asyncify_submit(), a versioned struct: prepare it with
/// asyncify_submit_options_init(), then set the fields you need. All-zero
/// fields are the defaults.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct asyncify_submit_options {
    /// The size of the layout the caller was built with; set by
    /// asyncify_submit_options_init().
    pub struct_size: u32,
    /// `ASYNCIFY_SUBMIT_*` bits; 0 by default.
    pub flags: u32,
    /// Nullable: called exactly once with the terminal status and the result (see
    /// ::asyncify_done_fn for its thread). When set, the result goes to it and `cq`
    /// is not used.
    pub on_done: asyncify_done_fn,
    /// Passed to `on_done` as its `user_data`, or as `user_data` of the completion
    /// queued to `cq`; it stays the caller's.
    pub on_done_data: *mut c_void,
    /// Nullable: called on a non-NULL `arg` when the task never runs (cancelled
    /// while queued: on the cancelling thread, before `on_done`), or after an
    /// abandoned work function returns (on that worker). Not called when the task
    /// runs to its end, nor when asyncify_submit() fails.
    pub free_arg: asyncify_free_fn,
    /// Nullable: called on a non-NULL result nobody can receive any more (the handle
    /// released or detached before the result was taken, the task abandoned, its
    /// queue freed before the completion was drained), on the thread that makes it
    /// unreachable: the worker, the releasing thread, or asyncify_cq_free()'s.
    pub free_result: asyncify_free_fn,
    /// The pool to run on; NULL: the default pool.
    pub pool: *mut asyncify_pool,
    /// Nullable: without `on_done`, the completion (status, code, result,
    /// `on_done_data`) goes to this queue for asyncify_cq_drain(). The task keeps
    /// its own reference: the queue may be freed first, and the completion then
    /// stays on the handle.
    pub cq: *mut asyncify_cq,
    /// NULL: the task gets a snapshot of the calling thread's table at submit.
    /// Otherwise it runs with this context; the task keeps its own reference, so
    /// the caller may free its pointer right after asyncify_submit() returns.
    pub context: *const asyncify_context,
    /// Nullable: the task first waits, FIFO among this limiter's tasks, until the
    /// limiter admits it, then enters the pool's queue; it holds a place of the
    /// limiter until its work function returns. The task keeps its own reference:
    /// the limiter may be freed first. (Since 0.2.)
    pub limiter: *const asyncify_limiter,
    /// 0: no deadline. Otherwise a task that has not started this many
    /// milliseconds after asyncify_submit() never runs: it completes with
    /// ::ASYNCIFY_EXPIRED (`free_arg`, then `on_done`, on the thread that noticed:
    /// the library's timer thread or a worker), whatever else happens in the
    /// pool. A running task is never interrupted. (Since 0.2.)
    pub start_within_ms: u32,
}

// SAFETY: repr(C), all fields valid when zero (no callbacks, NULL pool,
// queue, context and limiter, no deadline); the 0.1 layout ends at `context`.
unsafe impl super::Versioned for asyncify_submit_options {
    const NAME: &'static str = "asyncify_submit_options";
    const LAYOUT_ENDS: &'static [usize] = &[
        std::mem::offset_of!(asyncify_submit_options, context)
            + std::mem::size_of::<*const asyncify_context>(),
        std::mem::offset_of!(asyncify_submit_options, start_within_ms) + std::mem::size_of::<u32>(),
    ];
}

/// What a NULL `opts` of asyncify_submit() means: every field its default.
const DEFAULT_SUBMIT_OPTIONS: asyncify_submit_options = asyncify_submit_options {
    struct_size: std::mem::size_of::<asyncify_submit_options>() as u32,
    flags: 0,
    on_done: None,
    on_done_data: std::ptr::null_mut(),
    free_arg: None,
    free_result: None,
    pool: std::ptr::null_mut(),
    cq: std::ptr::null_mut(),
    context: std::ptr::null(),
    limiter: std::ptr::null(),
    start_within_ms: 0,
};

/// Prepares `*opts` for asyncify_submit(): zeroes `size` bytes (every field
/// takes its default) and sets `struct_size` to `size`.
///
/// @param opts The struct to prepare.
/// @param size `sizeof(*opts)`, the size of the layout the caller was built
/// with.
/// @retval ASYNCIFY_OK Prepared.
/// @retval ASYNCIFY_E_NULL `opts` is NULL.
/// @retval ASYNCIFY_E_INVALID_ARGUMENT `size` is smaller than the first
/// published layout, or above `UINT32_MAX`; nothing is written.
/// @retval ASYNCIFY_E_PANIC An internal error.
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

/// Runs `fn(arg)` on a pool's worker thread with a snapshot of the calling
/// thread's table installed, and returns at once with its handle.
///
/// The snapshot is the caller's table as it is now (local keys excluded), taken
/// in O(1); the task's own changes stay in the task. `opts` chooses the pool,
/// another table (`context`, `ASYNCIFY_SUBMIT_EMPTY_CONTEXT`) and how the
/// completion is delivered: to `on_done`, to a completion queue `cq`, or kept on
/// the handle for asyncify_poll() / asyncify_wait(). Tasks start in FIFO order,
/// at most the pool's limit at once.
///
/// Ownership: `arg` stays the caller's, to keep valid while the work function
/// may use it, unless the task never runs or is abandoned: then `free_arg`
/// gets it (once the task is known never to run, or after the abandoned work
/// function returns) and the caller must not free it. The result moves
/// exactly once, to `on_done`, to the queue, or to the first poll or wait that
/// asks for it, and otherwise to `free_result`. A context in `opts` is
/// referenced: the caller still frees its own pointer. The handle must be
/// released with asyncify_release() unless the task is detached.
///
/// Threads: `fn` runs on a worker (see ::asyncify_work_fn), `on_done` as
/// ::asyncify_done_fn says; on error nothing runs and no callback is called,
/// not even `free_arg`.
///
/// @param fn The work function.
/// @param arg Passed to `fn`; the library never dereferences it.
/// @param opts Nullable: options from asyncify_submit_options_init(); NULL for
/// the defaults (the default pool, the caller's table, the result kept on the
/// handle).
/// @param out_handle Receives the handle; may be NULL only with
/// `ASYNCIFY_SUBMIT_DETACHED`.
/// @retval ASYNCIFY_OK Accepted: it will run, or be cancelled.
/// @retval ASYNCIFY_E_NULL `fn` is NULL, or `out_handle` is NULL without
/// `ASYNCIFY_SUBMIT_DETACHED`.
/// @retval ASYNCIFY_E_INVALID_ARGUMENT `opts->struct_size` is too small or
/// bytes past the known fields are not zero, `opts->flags` has an unknown
/// bit, or `ASYNCIFY_SUBMIT_EMPTY_CONTEXT` comes with a `context`.
/// @retval ASYNCIFY_E_SHUT_DOWN The pool's shutdown has begun.
/// @retval ASYNCIFY_E_BUSY The pool has `max_queued` tasks waiting already.
/// @retval ASYNCIFY_E_OUT_OF_MEMORY No handle slot is left, or no worker
/// thread could be started while the pool has none to run the task.
/// @retval ASYNCIFY_E_PANIC An internal error.
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
        if let Some(o) = plain_options(opts, out_handle) {
            let calls = PlainCalls {
                work,
                arg,
                on_done: o.on_done,
                on_done_data: o.on_done_data,
                detached: o.flags & ASYNCIFY_SUBMIT_DETACHED != 0,
            };
            let pool = pool_or_default(o.pool);
            let snapshot = overrides::snapshot();
            let handle = if o.limiter.is_null() {
                pool.submit_plain(calls, snapshot)?
            } else {
                pool.submit_plain_limited(calls, limiter_ref(o.limiter), snapshot)?
            };
            write_out(out_handle, handle);
            return Ok(ASYNCIFY_OK);
        }
        let mut spare = None;
        let o = match own_layout(opts) {
            Some(o) => o,
            None => versioned_arg(opts, &mut spare)?.unwrap_or(&DEFAULT_SUBMIT_OPTIONS),
        };
        let flags = o.flags;
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
        let context = o.context;
        let empty = flags & ASYNCIFY_SUBMIT_EMPTY_CONTEXT != 0;
        if empty && !context.is_null() {
            return Err(fail(
                ASYNCIFY_E_INVALID_ARGUMENT,
                "ASYNCIFY_SUBMIT_EMPTY_CONTEXT and a context exclude each other",
            ));
        }
        // Each pointer read once: the caller's struct is not copied.
        let (cq, limiter) = (o.cq, o.limiter);
        let cq = if cq.is_null() {
            None
        } else {
            Some(queue_ref(cq)?.clone())
        };
        let pool = pool_or_default(o.pool);
        let snapshot = if empty {
            Table::new()
        } else if context.is_null() {
            overrides::snapshot()
        } else {
            context_ref(context)?.table.clone()
        };
        let limiter = (!limiter.is_null()).then(|| limiter_ref(limiter));
        let spec = TaskSpec::new(work, arg)
            .limiter(limiter)
            .start_within_ms(o.start_within_ms)
            .on_done(o.on_done, o.on_done_data)
            .free_fns(o.free_arg, o.free_result)
            .detached(detached)
            .completion_queue(cq);
        let handle = pool.submit(spec, snapshot)?;
        write_out(out_handle, handle);
        Ok(ASYNCIFY_OK)
    })
}

/// The options of a plain task, the common case, recognised before anything
/// else is looked at: NULL, or this library's own layout (see
/// [`own_layout`]) with no flag but `ASYNCIFY_SUBMIT_DETACHED` and no
/// completion queue, context, deadline or free function (a limiter is
/// allowed: see `Pool::submit_plain_limited`); and
/// `out_handle` given unless detached. None otherwise: the general path
/// reads such options or explains what is wrong with them.
#[inline(always)]
fn plain_options<'a>(
    opts: *const asyncify_submit_options,
    out_handle: *mut asyncify_handle,
) -> Option<&'a asyncify_submit_options> {
    if opts.is_null() {
        return (!out_handle.is_null()).then_some(&DEFAULT_SUBMIT_OPTIONS);
    }
    let o = own_layout(opts)?;
    let general = o.cq as usize
        | o.context as usize
        | o.free_arg.map_or(0, |f| f as usize)
        | o.free_result.map_or(0, |f| f as usize)
        | o.start_within_ms as usize
        | (o.flags & !ASYNCIFY_SUBMIT_DETACHED) as usize;
    let handle_ok = o.flags & ASYNCIFY_SUBMIT_DETACHED != 0 || !out_handle.is_null();
    (general == 0 && handle_ok).then_some(o)
}

/// `opts` read in place when it is this library's own layout, aligned, with
/// zero bytes after its last field (where a later header could put one), as
/// nearly every caller's is: no copy, and no look at older layouts. None:
/// NULL, or anything else, which `versioned_arg` reads or refuses.
#[inline(always)]
fn own_layout<'a>(opts: *const asyncify_submit_options) -> Option<&'a asyncify_submit_options> {
    const SIZE: usize = std::mem::size_of::<asyncify_submit_options>();
    const END: usize = std::mem::offset_of!(asyncify_submit_options, start_within_ms) + 4;
    if opts.is_null() || !opts.is_aligned() {
        return None;
    }
    // SAFETY: a non-NULL, aligned `opts` points at a struct whose first field
    // is its size, with that many readable bytes (the caller's promise).
    if unsafe { (*opts).struct_size } as usize != SIZE {
        return None;
    }
    // The tail padding after the last field: 4 bytes where pointers have 8.
    let tail = match SIZE - END {
        0 => 0,
        // SAFETY: as above: these bytes are inside the struct, at an offset
        // of a multiple of 4 in an aligned struct.
        4 => unsafe { (opts as *const u8).add(END).cast::<u32>().read() },
        _ => return None,
    };
    // SAFETY: as above, with this library's own size: the whole struct, in
    // which every field is valid for any bits it can hold.
    (tail == 0).then(|| unsafe { &*opts })
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

/// The task's status now, without blocking.
///
/// The first call that passes `out_result` and sees `OK` or `FAILED` receives
/// the result, which is then the caller's; every other call gets NULL, as does
/// every call when the result went to `on_done` or a completion queue. The
/// handle stays valid: release it when done.
///
/// @param h The task's handle.
/// @param out_result Nullable: receives the result, or NULL.
/// @param out_code Nullable: receives the work function's return value for
/// `OK`/`FAILED`, 0 otherwise.
/// @retval ASYNCIFY_PENDING Queued or running, or finished with `on_done`
/// still running.
/// @retval ASYNCIFY_OK The work function returned 0.
/// @retval ASYNCIFY_FAILED The work function returned a non-zero code.
/// @retval ASYNCIFY_CANCELLED Cancelled before it ran, or abandoned.
/// @retval ASYNCIFY_EXPIRED Its start deadline passed before it started; it
/// never ran.
/// @retval ASYNCIFY_E_INVALID_HANDLE `h` is 0, unknown, released or stale.
/// @retval ASYNCIFY_E_FORKED `h` was made by the parent before `fork()`.
/// @retval ASYNCIFY_E_PANIC An internal error.
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

/// Waits until the task is terminal (its `on_done` returned) or `timeout_ms`
/// runs out; then as asyncify_poll().
///
/// Called on a worker of the task's pool while the task is still queued, it runs
/// the task on this thread, in this worker's slot, so that nested waits cannot
/// deadlock a full pool; its callbacks then run here too. The result moves as
/// for asyncify_poll(): the first call that passes `out_result` and sees `OK` or
/// `FAILED` receives it, and it is then the caller's.
///
/// @param h The task's handle.
/// @param timeout_ms How long to wait in milliseconds; negative: forever; 0:
/// do not wait.
/// @param out_result Nullable: receives the result, or NULL.
/// @param out_code Nullable: receives the work function's return value for
/// `OK`/`FAILED`, 0 otherwise.
/// @retval ASYNCIFY_OK The work function returned 0.
/// @retval ASYNCIFY_FAILED The work function returned a non-zero code.
/// @retval ASYNCIFY_CANCELLED Cancelled before it ran, or abandoned.
/// @retval ASYNCIFY_EXPIRED Its start deadline passed before it started; it
/// never ran.
/// @retval ASYNCIFY_TIMEOUT Not terminal in time; the task goes on.
/// @retval ASYNCIFY_E_WOULD_DEADLOCK The caller is that task's work function
/// or its `on_done`: the wait could never end.
/// @retval ASYNCIFY_E_INVALID_HANDLE `h` is 0, unknown, released or stale.
/// @retval ASYNCIFY_E_FORKED `h` was made by the parent before `fork()`.
/// @retval ASYNCIFY_E_PANIC An internal error.
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

/// Waits until at least one of `n` tasks is terminal, or `timeout_ms` runs out.
///
/// Nothing is received or released: poll or wait the handle found for its
/// result. Called on a worker of a pool, it runs a still-queued task of the list
/// that belongs to that pool on this thread, as asyncify_wait() does.
///
/// @param hs The handles, read during the call only.
/// @param n How many handles `hs` holds; at least 1.
/// @param timeout_ms How long to wait in milliseconds; negative: forever; 0:
/// do not wait.
/// @param out_index Receives the index in `hs` of the first terminal task, in
/// list order (with `OK` only).
/// @retval ASYNCIFY_OK One is terminal: `*out_index` says which.
/// @retval ASYNCIFY_TIMEOUT None is terminal in time.
/// @retval ASYNCIFY_E_NULL `hs` or `out_index` is NULL.
/// @retval ASYNCIFY_E_INVALID_ARGUMENT `n` is 0.
/// @retval ASYNCIFY_E_INVALID_HANDLE A handle is 0, unknown, released or
/// stale.
/// @retval ASYNCIFY_E_FORKED A handle was made by the parent before `fork()`.
/// @retval ASYNCIFY_E_WOULD_DEADLOCK Every handle is that of the calling task
/// (from its work function or its `on_done`).
/// @retval ASYNCIFY_E_PANIC An internal error.
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

/// Cancels the task, unless its work function has returned already.
///
/// A queued task never runs: `free_arg` and then `on_done` (`CANCELLED`) are
/// called on this thread before this returns (without `on_done`, the
/// completion goes to its queue). A running task is abandoned: waiters see
/// `CANCELLED` at once and `on_done` is called here, while the work function
/// runs on to its end (asyncify_cancel_requested() turns true in it); then, on
/// its worker, its result goes to `free_result` and `arg` to `free_arg`. An
/// abandoned task keeps its pool slot until it returns, unless the pool has
/// `ASYNCIFY_POOL_RELEASE_SLOT_ON_ABANDON`. The handle stays valid either way:
/// release it when done.
///
/// @param h The task's handle.
/// @retval ASYNCIFY_CANCELLED The task is cancelled (now, or before).
/// @retval ASYNCIFY_EXPIRED The task had expired (its start deadline passed):
/// nothing changes.
/// @retval ASYNCIFY_OK The work function had returned 0: nothing changes.
/// @retval ASYNCIFY_FAILED The work function had returned non-zero: nothing
/// changes.
/// @retval ASYNCIFY_E_INVALID_HANDLE `h` is 0, unknown, released or stale.
/// @retval ASYNCIFY_E_FORKED `h` was made by the parent before `fork()`.
/// @retval ASYNCIFY_E_PANIC An internal error.
#[no_mangle]
pub extern "C" fn asyncify_cancel(h: asyncify_handle) -> asyncify_status {
    guard("asyncify_cancel", || Ok(task::cancel(h)?.status))
}

/// Releases the handle; the task itself is not affected.
///
/// A pending task goes on and its callbacks still run. A result not received
/// yet goes to `free_result`: on this thread if the task is terminal, else on
/// its worker when it finishes. After this, `h` is invalid.
///
/// @param h The task's handle (not a detached task's, which releases itself).
/// @retval ASYNCIFY_OK Released.
/// @retval ASYNCIFY_E_INVALID_HANDLE `h` is 0, unknown, stale, or released
/// already (a double release, or a detached task's handle).
/// @retval ASYNCIFY_E_FORKED `h` was made by the parent before `fork()`.
/// @retval ASYNCIFY_E_PANIC An internal error.
#[no_mangle]
pub extern "C" fn asyncify_release(h: asyncify_handle) -> asyncify_status {
    guard("asyncify_release", || {
        task::release(h)?;
        Ok(ASYNCIFY_OK)
    })
}

/// Whether the task running on this thread has been cancelled, so that long
/// work can stop early (its result will be freed, not delivered).
///
/// Call it from a work function, or code it calls, on the thread running the
/// task. It does not return a status.
///
/// @return true once the task running on the calling thread has been cancelled;
/// false before that, and on a thread that runs no task. An internal error
/// gives false.
#[no_mangle]
pub extern "C" fn asyncify_cancel_requested() -> bool {
    super::guard_value("asyncify_cancel_requested", false, task::cancel_requested)
}
