//! Pools and the limit (contract sections 5 and 6.1).
//!
//! A pool pointer from `asyncify_pool_new` belongs to the caller until
//! `asyncify_pool_free` consumes it. Handles outlive their pool. The default
//! pool (a NULL pool argument) is created on first use, with a limit of 8 or
//! `ASYNCIFY_MAX_WORKERS` from the environment.

use std::ffi::{c_char, c_void, CStr};
use std::time::Duration;

use super::task_abi::asyncify_handle;
use super::{
    fail, guard, init_struct, required_out, timeout_arg, versioned_arg, write_out,
    write_versioned_out, FfiResult,
};
use crate::latency::Summary;
use crate::pool::{default_pool, Pool, PoolOptions, DEFAULT_KEEP_ALIVE};
use crate::status::*;

/// A pool's thread hook (`on_thread_start`, `on_thread_stop` of
/// ::asyncify_pool_options), called with the pool's `hook_data` on the worker
/// thread itself: the start hook before its first task, the stop hook before it
/// exits, after what code on the worker set outside tasks was released; no user
/// code runs on that thread afterwards. A binding prepares each worker once this
/// way. It must not unwind.
pub type asyncify_thread_hook = Option<extern "C" fn(user_data: *mut c_void)>;

/// A task hook of a pool (`on_task_start`, `on_task_end` of
/// ::asyncify_pool_options), called on the worker that runs the task, with the
/// task's table installed and no lock held.
///
/// `hook_data` is the pool's `hook_data`, `handle` the task's, `status`
/// `ASYNCIFY_PENDING` at the start and the task's outcome at the end;
/// `queue_wait_ns` is the time from submit to the start, `run_ns` the time
/// from the start to the work function's return (0 at the start). (Since 0.2.)
pub type asyncify_task_hook = Option<
    extern "C" fn(
        hook_data: *mut c_void,
        handle: asyncify_handle,
        status: asyncify_status,
        queue_wait_ns: u64,
        run_ns: u64,
    ),
>;

/// Pool flag: an abandoned (cancelled while running) work function gives its
/// slot back at once, as AnyIO does, so a new task may start beside it. By
/// default it keeps the slot until it returns, so the limit also bounds
/// abandoned work.
pub const ASYNCIFY_POOL_RELEASE_SLOT_ON_ABANDON: u32 = 1;

/// Pool flag: record each task's queue wait and run time in histograms, read
/// with asyncify_pool_latency(); it costs three clock reads per task (at its
/// submit, start and end) and two histogram records. (Since 0.2.)
pub const ASYNCIFY_POOL_RECORD_LATENCY: u32 = 2;

const KNOWN_POOL_FLAGS: u32 = ASYNCIFY_POOL_RELEASE_SLOT_ON_ABANDON | ASYNCIFY_POOL_RECORD_LATENCY;

/// Options for asyncify_pool_new_ex(), a versioned struct: prepare it with
/// asyncify_pool_options_init(), which sets the limit to 8 and every other field
/// to its all-zero default, then set the fields you need.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct asyncify_pool_options {
    /// The size of the layout the caller was built with; set by
    /// asyncify_pool_options_init().
    pub struct_size: u32,
    /// The limit: how many work functions of the pool run at once (8 after
    /// asyncify_pool_options_init()); 0 pauses the pool, `UINT32_MAX` is unbounded
    /// (any limit above 65,535 lets 65,535 callables run at once).
    pub max_workers: u32,
    /// 0: no bound (the default); otherwise asyncify_submit() returns
    /// `ASYNCIFY_E_BUSY` while this many tasks wait to start.
    pub max_queued: u32,
    /// How long an idle worker waits for work before it exits, in milliseconds;
    /// 0: the default, 10 s.
    pub keep_alive_ms: u32,
    /// `ASYNCIFY_POOL_*` bits; 0 by default.
    pub flags: u32,
    /// The worker threads' name prefix, NUL-terminated UTF-8, copied (workers are
    /// named `prefix-N`); NULL: `"asyncify"`.
    pub thread_name: *const c_char,
    /// Nullable: run on each worker thread when it starts, before any task (see
    /// ::asyncify_thread_hook).
    pub on_thread_start: asyncify_thread_hook,
    /// Nullable: run on each worker thread before it exits (see
    /// ::asyncify_thread_hook).
    pub on_thread_stop: asyncify_thread_hook,
    /// Passed to the hooks; it stays the caller's and must stay valid until the
    /// pool's shutdown has returned `ASYNCIFY_OK`.
    pub hook_data: *mut c_void,
    /// The stack size of each worker thread in bytes; 0: the platform's
    /// default for new threads (on glibc it follows `RLIMIT_STACK`, 8 MiB on
    /// most systems), so code recurses on a worker as on any other thread.
    /// Below `PTHREAD_STACK_MIN`: `ASYNCIFY_E_INVALID_ARGUMENT`. (Since 0.2.)
    pub stack_size: usize,
    /// Nullable: run on the worker right before each work function (and
    /// before a task another worker runs while waiting for it), with the
    /// task's table installed, `status` `ASYNCIFY_PENDING` and `run_ns` 0: a
    /// tracing binding reads the submitter's trace id here. It must not
    /// unwind. (Since 0.2.)
    pub on_task_start: asyncify_task_hook,
    /// Nullable: run on the worker right after each work function returned,
    /// still with the task's table installed, with the status the task gets
    /// (`OK`, `FAILED`, or `CANCELLED` for an abandoned one, reported when
    /// its work function returns), its queue wait and its run time. It must
    /// not unwind. (Since 0.2.)
    pub on_task_end: asyncify_task_hook,
}

// SAFETY: repr(C), all fields valid when zero (NULL name, no hooks, stack
// size 0 = the default); the ends are the 0.1 layout's and today's.
unsafe impl super::Versioned for asyncify_pool_options {
    const NAME: &'static str = "asyncify_pool_options";
    const LAYOUT_ENDS: &'static [usize] = &[
        std::mem::offset_of!(asyncify_pool_options, hook_data) + std::mem::size_of::<*mut c_void>(),
        std::mem::offset_of!(asyncify_pool_options, on_task_end)
            + std::mem::size_of::<asyncify_task_hook>(),
    ];
}

/// A pool's counters, from asyncify_stats(); exact when the pool is quiet. It
/// only ever grows by appending fields: set `struct_size` to `sizeof` before the
/// call.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct asyncify_pool_stats {
    /// In: the size of the caller's struct. Out: how many bytes were filled.
    pub struct_size: u32,
    /// The limit (`max_workers`).
    pub limit: u32,
    /// Worker threads alive, those on their way out included.
    pub threads: u32,
    /// Of those, the ones parked waiting for work.
    pub idle_threads: u32,
    /// Tasks waiting to start: in the queue, or waiting for their limiter.
    pub queued: u64,
    /// Work functions running, abandoned ones included (for a moment also a
    /// worker skipping a cancelled task it took from the queue).
    pub running: u64,
    /// Tasks accepted by asyncify_submit() since the pool was made.
    pub submitted: u64,
    /// Tasks whose work function returned 0.
    pub completed: u64,
    /// Tasks whose work function returned non-zero.
    pub failed: u64,
    /// Tasks cancelled before they started (they never ran).
    pub cancelled: u64,
    /// Tasks cancelled while running.
    pub abandoned: u64,
    /// Tasks whose start deadline passed before they started (they never
    /// ran). Once the pool is quiet, submitted = completed + failed + cancelled
    /// + abandoned + expired. (Since 0.2.)
    pub expired: u64,
}

/// A pool of worker threads with a limit on how many work functions run at
/// once. Made by asyncify_pool_new() or asyncify_pool_new_ex(), the caller's
/// until asyncify_pool_free(). A NULL pool argument means the default pool,
/// made on first use with a limit of 8 or `ASYNCIFY_MAX_WORKERS` from the
/// environment. Threads start as tasks need them and leave after the keep-alive
/// when idle.
// On a line pair of its own: a submit reads it, and workers may write the
// caller's data beside it (a completion counter): a shared line would cost
// the submitting thread a cache miss per task.
#[repr(align(128))]
pub struct asyncify_pool {
    inner: Pool,
}

/// The pool behind a possibly NULL pool pointer.
pub(crate) fn pool_or_default<'a>(pool: *mut asyncify_pool) -> &'a Pool {
    if pool.is_null() {
        default_pool()
    } else {
        // SAFETY: a non-NULL pool pointer came from `asyncify_pool_new` and has
        // not been freed (the caller's promise, as with `free()`).
        unsafe { &(*pool).inner }
    }
}

/// Prepares `*opts` for asyncify_pool_new_ex(): zeroes `size` bytes, sets
/// `struct_size` to `size` and `max_workers` to 8; every other field takes its
/// all-zero default.
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
pub extern "C" fn asyncify_pool_options_init(
    opts: *mut asyncify_pool_options,
    size: usize,
) -> asyncify_status {
    guard("asyncify_pool_options_init", || {
        let opts = required_out(opts, "opts")?;
        // SAFETY: the caller promises `size` writable bytes at `opts`.
        unsafe {
            init_struct(opts, size)?;
            (*opts).max_workers = crate::pool::DEFAULT_MAX_WORKERS;
        }
        Ok(ASYNCIFY_OK)
    })
}

/// Creates a pool that runs at most `max_workers` work functions at once, with
/// the other options at their defaults. No thread starts before the first task.
///
/// @param max_workers The limit; 0 pauses the pool, `UINT32_MAX` is unbounded
///   (any limit above 65,535 lets 65,535 callables run at once).
/// @param out Receives the pool, the caller's until asyncify_pool_free().
/// @retval ASYNCIFY_OK `*out` is set.
/// @retval ASYNCIFY_E_NULL `out` is NULL.
/// @retval ASYNCIFY_E_PANIC An internal error.
#[no_mangle]
pub extern "C" fn asyncify_pool_new(
    max_workers: u32,
    out: *mut *mut asyncify_pool,
) -> asyncify_status {
    guard("asyncify_pool_new", || {
        let out = required_out(out, "out")?;
        let pool = Box::new(asyncify_pool {
            inner: Pool::new(max_workers),
        });
        write_out(out, Box::into_raw(pool));
        Ok(ASYNCIFY_OK)
    })
}

/// Creates a pool as `opts` says. No thread starts before the first task.
///
/// @param opts Nullable: options from asyncify_pool_options_init(); NULL for
/// the defaults (a limit of 8). `thread_name` is copied; `hook_data` must
/// outlive the pool.
/// @param out Receives the pool, the caller's until asyncify_pool_free().
/// @retval ASYNCIFY_OK `*out` is set.
/// @retval ASYNCIFY_E_NULL `out` is NULL.
/// @retval ASYNCIFY_E_INVALID_ARGUMENT `opts->struct_size` is too small or
/// bytes past the known fields are not zero, `flags` has an unknown bit,
/// `thread_name` is not UTF-8, or `stack_size` is non-zero and below
/// `PTHREAD_STACK_MIN`.
/// @retval ASYNCIFY_E_PANIC An internal error.
#[no_mangle]
pub extern "C" fn asyncify_pool_new_ex(
    opts: *const asyncify_pool_options,
    out: *mut *mut asyncify_pool,
) -> asyncify_status {
    guard("asyncify_pool_new_ex", || {
        let out = required_out(out, "out")?;
        let mut options = PoolOptions::default();
        if let Some(o) = versioned_arg(opts, &mut None)? {
            let unknown = o.flags & !KNOWN_POOL_FLAGS;
            if unknown != 0 {
                return Err(fail(
                    ASYNCIFY_E_INVALID_ARGUMENT,
                    format!("unknown pool flags 0x{unknown:x}"),
                ));
            }
            if !o.thread_name.is_null() {
                // SAFETY: the caller promises a NUL-terminated string, valid
                // for the call; it is copied.
                let name = unsafe { CStr::from_ptr(o.thread_name) };
                options.thread_name = name
                    .to_str()
                    .map_err(|_| {
                        fail(
                            ASYNCIFY_E_INVALID_ARGUMENT,
                            "thread_name is not valid UTF-8",
                        )
                    })?
                    .to_string();
            }
            options.max_workers = o.max_workers;
            options.max_queued = o.max_queued;
            options.keep_alive = match o.keep_alive_ms {
                0 => DEFAULT_KEEP_ALIVE,
                ms => Duration::from_millis(u64::from(ms)),
            };
            options.release_slot_on_abandon = o.flags & ASYNCIFY_POOL_RELEASE_SLOT_ON_ABANDON != 0;
            options.record_latency = o.flags & ASYNCIFY_POOL_RECORD_LATENCY != 0;
            options.on_thread_start = o.on_thread_start;
            options.on_thread_stop = o.on_thread_stop;
            options.hook_data = o.hook_data as usize;
            if o.stack_size != 0 {
                let least = crate::sys::min_stack_size();
                if o.stack_size < least {
                    return Err(fail(
                        ASYNCIFY_E_INVALID_ARGUMENT,
                        format!(
                            "stack_size {} is below this platform's minimum of {least} bytes (0: the default)",
                            o.stack_size
                        ),
                    ));
                }
            }
            options.stack_size = o.stack_size;
            options.on_task_start = o.on_task_start;
            options.on_task_end = o.on_task_end;
        }
        let pool = Box::new(asyncify_pool {
            inner: Pool::with_options(options),
        });
        write_out(out, Box::into_raw(pool));
        Ok(ASYNCIFY_OK)
    })
}

fn shutdown(function: &str, pool: &Pool, timeout_ms: i64) -> FfiShutdown {
    match pool.shutdown(timeout_arg(timeout_ms)) {
        Ok(true) => FfiShutdown::Done(ASYNCIFY_OK),
        Ok(false) => FfiShutdown::Done(ASYNCIFY_TIMEOUT),
        Err(e) => FfiShutdown::Refused(fail(
            e.status(),
            format!(
                "{function} was called from a worker thread of that pool: it would wait for itself"
            ),
        )),
    }
}

enum FfiShutdown {
    Done(asyncify_status),
    Refused(super::Fail),
}

/// Shuts the pool down, waiting up to `timeout_ms`, and frees it.
///
/// New submissions get `ASYNCIFY_E_SHUT_DOWN` from now on, and queued tasks
/// are cancelled on this thread (`free_arg`, then `on_done` with `CANCELLED` or
/// a completion to their queue). Running work functions, abandoned ones
/// included, are waited for with every callback they cause, then every worker
/// thread leaves (its stop hook included) and is joined. After `OK` no callback of the pool fires any more. After `TIMEOUT`
/// the rest finish on their own, their threads free themselves, and the pool's
/// memory goes when the last one does.
///
/// The pool is consumed in both cases: do not use `pool` again. Handles of its
/// tasks stay valid.
///
/// @note From a worker thread of that pool (a task or callback of its own)
/// the call would wait for itself: it returns `ASYNCIFY_E_WOULD_DEADLOCK`, and
/// the pool is neither shut down nor freed.
///
/// @param pool The pool to free.
/// @param timeout_ms How long to wait for running work, in milliseconds;
/// negative: forever.
/// @retval ASYNCIFY_OK Every worker has left and was joined; the pool is
/// freed.
/// @retval ASYNCIFY_TIMEOUT Work still runs; the pool is consumed all the
/// same.
/// @retval ASYNCIFY_E_NULL `pool` is NULL (NULL never means the default pool
/// here: see asyncify_shutdown()).
/// @retval ASYNCIFY_E_WOULD_DEADLOCK Called from a worker of `pool`; nothing
/// changes.
/// @retval ASYNCIFY_E_PANIC An internal error.
#[no_mangle]
pub extern "C" fn asyncify_pool_free(pool: *mut asyncify_pool, timeout_ms: i64) -> asyncify_status {
    guard("asyncify_pool_free", || {
        let pool = required_out(pool, "pool")?;
        // SAFETY: a non-NULL pool pointer came from `asyncify_pool_new` and has
        // not been freed (the caller's promise).
        match shutdown("asyncify_pool_free", unsafe { &(*pool).inner }, timeout_ms) {
            FfiShutdown::Refused(f) => Err(f),
            FfiShutdown::Done(status) => {
                // SAFETY: as above; the pointer is consumed here, once.
                drop(unsafe { Box::from_raw(pool) });
                Ok(status)
            }
        }
    })
}

/// Shuts the pool down as asyncify_pool_free() does, without freeing it; it may
/// be called again.
///
/// New submissions get `ASYNCIFY_E_SHUT_DOWN` from now on, and queued tasks
/// are cancelled on this thread (`free_arg`, then `on_done` with `CANCELLED` or
/// a completion to their queue). Running work functions, abandoned ones
/// included, are waited for with every callback they cause, then every worker
/// thread leaves (its stop hook included) and is joined. Waiting in short slices (calling again after `TIMEOUT`) lets a caller
/// handle signals between them. After `OK`, asyncify_pool_free() frees at once.
/// (Since 0.2.)
///
/// @param pool The pool.
/// @param timeout_ms How long to wait for running work, in milliseconds;
/// negative: forever.
/// @retval ASYNCIFY_OK No work function runs and every worker has left and
/// was joined.
/// @retval ASYNCIFY_TIMEOUT Work still runs; the shutdown goes on.
/// @retval ASYNCIFY_E_NULL `pool` is NULL.
/// @retval ASYNCIFY_E_WOULD_DEADLOCK Called from a worker of `pool`; nothing
/// changes.
/// @retval ASYNCIFY_E_PANIC An internal error.
#[no_mangle]
pub extern "C" fn asyncify_pool_close(
    pool: *mut asyncify_pool,
    timeout_ms: i64,
) -> asyncify_status {
    guard("asyncify_pool_close", || {
        let pool = required_out(pool, "pool")?;
        // SAFETY: a non-NULL pool pointer came from `asyncify_pool_new` and has
        // not been freed (the caller's promise).
        match shutdown("asyncify_pool_close", unsafe { &(*pool).inner }, timeout_ms) {
            FfiShutdown::Refused(f) => Err(f),
            FfiShutdown::Done(status) => Ok(status),
        }
    })
}

/// Shuts the default pool down as asyncify_pool_close() does.
///
/// New submissions get `ASYNCIFY_E_SHUT_DOWN` from now on, and queued tasks
/// are cancelled on this thread (`free_arg`, then `on_done` with `CANCELLED` or
/// a completion to their queue). Running work functions, abandoned ones
/// included, are waited for with every callback they cause, then every worker
/// thread leaves (its stop hook included) and is joined. Later submissions to the default pool get `ASYNCIFY_E_SHUT_DOWN`
/// for the rest of the process (a child made by `fork()` gets a fresh default
/// pool). It may be called again.
///
/// @param timeout_ms How long to wait for running work, in milliseconds;
/// negative: forever.
/// @retval ASYNCIFY_OK No work function runs and every worker has left and
/// was joined.
/// @retval ASYNCIFY_TIMEOUT Work still runs; the shutdown goes on.
/// @retval ASYNCIFY_E_WOULD_DEADLOCK Called from a worker of the default
/// pool; nothing changes.
/// @retval ASYNCIFY_E_PANIC An internal error.
#[no_mangle]
pub extern "C" fn asyncify_shutdown(timeout_ms: i64) -> asyncify_status {
    guard("asyncify_shutdown", || {
        match shutdown("asyncify_shutdown", default_pool(), timeout_ms) {
            FfiShutdown::Refused(f) => Err(f),
            FfiShutdown::Done(status) => Ok(status),
        }
    })
}

/// Sets the limit of `pool`.
///
/// Raising it starts waiting tasks at once; lowering it interrupts nothing
/// (extra workers leave as they become idle); 0 pauses the pool; `UINT32_MAX`
/// is unbounded.
///
/// @param pool The pool; NULL: the default pool.
/// @param n The new limit.
/// @retval ASYNCIFY_OK Set.
/// @retval ASYNCIFY_E_PANIC An internal error.
#[no_mangle]
pub extern "C" fn asyncify_set_max_workers(pool: *mut asyncify_pool, n: u32) -> asyncify_status {
    guard("asyncify_set_max_workers", || {
        pool_or_default(pool).set_max_workers(n);
        Ok(ASYNCIFY_OK)
    })
}

/// Reads the limit of `pool`.
///
/// @param pool The pool; NULL: the default pool.
/// @param out_n Receives the limit.
/// @retval ASYNCIFY_OK `*out_n` is set.
/// @retval ASYNCIFY_E_NULL `out_n` is NULL.
/// @retval ASYNCIFY_E_PANIC An internal error.
#[no_mangle]
pub extern "C" fn asyncify_get_max_workers(
    pool: *mut asyncify_pool,
    out_n: *mut u32,
) -> asyncify_status {
    guard("asyncify_get_max_workers", || {
        let out_n = required_out(out_n, "out_n")?;
        write_out(out_n, pool_or_default(pool).max_workers());
        Ok(ASYNCIFY_OK)
    })
}

/// Reads the counters of `pool`.
///
/// Fills `min(out->struct_size, sizeof(asyncify_pool_stats))` bytes of `*out`
/// and sets `out->struct_size` to the bytes filled, so a program built with an
/// older, shorter struct gets the fields it knows.
///
/// @param pool The pool; NULL: the default pool.
/// @param out The counters; set `out->struct_size = sizeof *out` first.
/// @retval ASYNCIFY_OK `*out` is filled.
/// @retval ASYNCIFY_E_NULL `out` is NULL.
/// @retval ASYNCIFY_E_INVALID_ARGUMENT `out->struct_size` is below 4.
/// @retval ASYNCIFY_E_PANIC An internal error.
#[no_mangle]
pub extern "C" fn asyncify_stats(
    pool: *mut asyncify_pool,
    out: *mut asyncify_pool_stats,
) -> asyncify_status {
    guard("asyncify_stats", || {
        let out = required_out(out, "out")?;
        let s = pool_or_default(pool).stats();
        write_versioned_out(
            out,
            asyncify_pool_stats {
                struct_size: 0,
                limit: s.limit,
                threads: s.threads,
                idle_threads: s.idle_threads,
                queued: s.queued,
                running: s.running,
                submitted: s.submitted,
                completed: s.completed,
                failed: s.failed,
                cancelled: s.cancelled,
                abandoned: s.abandoned,
                expired: s.expired,
            },
            "asyncify_pool_stats",
        )
    })
}

/// Latency figures of a pool, from asyncify_pool_latency(), in nanoseconds.
/// Percentiles come from a histogram whose buckets are within 1.6 % of the
/// values in them; `count`, `max_ns` and `sum_ns` are exact when the pool is
/// quiet. It only ever grows by appending fields: set `struct_size` to
/// `sizeof` before the call. (Since 0.2.)
#[repr(C)]
#[derive(Clone, Copy)]
pub struct asyncify_latency {
    /// In: the size of the caller's struct. Out: how many bytes were filled.
    pub struct_size: u32,
    /// Values recorded (tasks started, or whose work function returned).
    pub count: u64,
    /// The median.
    pub p50_ns: u64,
    /// The 90th percentile.
    pub p90_ns: u64,
    /// The 99th percentile.
    pub p99_ns: u64,
    /// The largest value.
    pub max_ns: u64,
    /// The sum of every value (it wraps only past 584 years of summed time).
    pub sum_ns: u64,
}

/// For asyncify_pool_latency(): from submit to the task's start (the time a
/// task waited in the queue). The start is read as a worker takes the task
/// from the queue, tens of nanoseconds before its work function is called.
/// (Since 0.2.)
pub const ASYNCIFY_LATENCY_QUEUE_WAIT: u32 = 1;
/// For asyncify_pool_latency(): from the task's start to its work function's
/// return (abandoned ones included, when they return). (Since 0.2.)
pub const ASYNCIFY_LATENCY_RUN: u32 = 2;

/// Reads a latency histogram of `pool`.
///
/// Recorded for pools made with ::ASYNCIFY_POOL_RECORD_LATENCY (and for the
/// default pool when the environment has `ASYNCIFY_RECORD_LATENCY=1`), without
/// a lock; runs of a queued task by a waiting worker of its pool count too.
/// Fills `min(out->struct_size, sizeof(asyncify_latency))` bytes of `*out` and
/// sets `out->struct_size` to the bytes filled. (Since 0.2.)
///
/// @param pool The pool; NULL: the default pool.
/// @param which ::ASYNCIFY_LATENCY_QUEUE_WAIT or ::ASYNCIFY_LATENCY_RUN.
/// @param out The figures; set `out->struct_size = sizeof *out` first.
/// @retval ASYNCIFY_OK `*out` is filled.
/// @retval ASYNCIFY_E_NULL `out` is NULL.
/// @retval ASYNCIFY_E_INVALID_ARGUMENT `which` is neither value, or
///         `out->struct_size` is below 4.
/// @retval ASYNCIFY_E_NOT_FOUND The pool does not record latency.
/// @retval ASYNCIFY_E_PANIC An internal error.
#[no_mangle]
pub extern "C" fn asyncify_pool_latency(
    pool: *mut asyncify_pool,
    which: u32,
    out: *mut asyncify_latency,
) -> asyncify_status {
    guard("asyncify_pool_latency", || {
        let out = required_out(out, "out")?;
        let Some((queue_wait, run)) = pool_or_default(pool).latency() else {
            return Err(fail(
                ASYNCIFY_E_NOT_FOUND,
                "the pool does not record latency (make it with ASYNCIFY_POOL_RECORD_LATENCY)",
            ));
        };
        write_latency(which, queue_wait, run, out)
    })
}

/// Writes the histogram `which` asks for (of `queue_wait` and `run`) to `out`.
pub(crate) fn write_latency(
    which: u32,
    queue_wait: Summary,
    run: Summary,
    out: *mut asyncify_latency,
) -> FfiResult {
    let s = match which {
        ASYNCIFY_LATENCY_QUEUE_WAIT => queue_wait,
        ASYNCIFY_LATENCY_RUN => run,
        other => {
            return Err(fail(
                ASYNCIFY_E_INVALID_ARGUMENT,
                format!(
                    "which is {other}: ASYNCIFY_LATENCY_QUEUE_WAIT (1) or ASYNCIFY_LATENCY_RUN (2)"
                ),
            ))
        }
    };
    write_versioned_out(
        out,
        asyncify_latency {
            struct_size: 0,
            count: s.count,
            p50_ns: s.p50,
            p90_ns: s.p90,
            p99_ns: s.p99,
            max_ns: s.max,
            sum_ns: s.sum,
        },
        "asyncify_latency",
    )
}
