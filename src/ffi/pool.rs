//! Pools and the limit (contract sections 5 and 6.1).
//!
//! A pool pointer from `asyncify_pool_new` belongs to the caller until
//! `asyncify_pool_free` consumes it. Handles outlive their pool. The default
//! pool (a NULL pool argument) is created on first use, with a limit of 8 or
//! `ASYNCIFY_MAX_WORKERS` from the environment.

use std::ffi::{c_char, c_void, CStr};
use std::time::Duration;

use super::{fail, guard, init_struct, required_out, timeout_arg, versioned_arg, write_out};
use crate::pool::{default_pool, Pool, PoolOptions, DEFAULT_KEEP_ALIVE};
use crate::status::*;

/// A function run on each worker thread of a pool (start or stop hook).
pub type asyncify_thread_hook = Option<extern "C" fn(user_data: *mut c_void)>;

/// Pool flag: an abandoned callable gives its slot back at once (AnyIO's
/// behaviour) instead of holding it until it returns.
pub const ASYNCIFY_POOL_RELEASE_SLOT_ON_ABANDON: u32 = 1;

/// Options for `asyncify_pool_new_ex`. Prepare with `asyncify_pool_options_init`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct asyncify_pool_options {
    /// Set by `asyncify_pool_options_init`.
    pub struct_size: u32,
    /// The limit (default 8): 0 pauses the pool, `UINT32_MAX` is unbounded.
    pub max_workers: u32,
    /// 0: unbounded (default); else `asyncify_submit` returns
    /// `ASYNCIFY_E_BUSY` while this many tasks wait.
    pub max_queued: u32,
    /// How long an idle worker waits before it exits; 0: the default (10 s).
    pub keep_alive_ms: u32,
    /// `ASYNCIFY_POOL_*` bits.
    pub flags: u32,
    /// Worker thread name prefix, copied; NULL: "asyncify".
    pub thread_name: *const c_char,
    /// Nullable: run on each worker thread when it starts, before any task.
    pub on_thread_start: asyncify_thread_hook,
    /// Nullable: run on each worker thread before it exits.
    pub on_thread_stop: asyncify_thread_hook,
    /// Passed to the hooks.
    pub hook_data: *mut c_void,
    /// The stack size of each worker thread in bytes; 0: the platform's
    /// default for new threads (on glibc it follows `RLIMIT_STACK`, 8 MiB on
    /// most systems), so code recurses on a worker as on any other thread.
    /// Below `PTHREAD_STACK_MIN`: `ASYNCIFY_E_INVALID_ARGUMENT`. (Since 0.2.)
    pub stack_size: usize,
}

// SAFETY: repr(C), all fields valid when zero (NULL name, no hooks, stack
// size 0 = the default); the ends are the 0.1 layout's and today's.
unsafe impl super::Versioned for asyncify_pool_options {
    const NAME: &'static str = "asyncify_pool_options";
    const LAYOUT_ENDS: &'static [usize] = &[
        std::mem::offset_of!(asyncify_pool_options, hook_data) + std::mem::size_of::<*mut c_void>(),
        std::mem::offset_of!(asyncify_pool_options, stack_size) + std::mem::size_of::<usize>(),
    ];
}

/// A pool's counters; exact when the pool is quiet. Append-only: set
/// `struct_size` to `sizeof` before `asyncify_stats`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct asyncify_pool_stats {
    /// In: the size of the caller's struct. Out: how many bytes were filled.
    pub struct_size: u32,
    /// The limit.
    pub limit: u32,
    /// Worker threads alive.
    pub threads: u32,
    /// Of those, parked waiting for work.
    pub idle_threads: u32,
    /// Tasks waiting to start.
    pub queued: u64,
    /// Callables running (abandoned ones included).
    pub running: u64,
    /// Tasks accepted by `asyncify_submit`.
    pub submitted: u64,
    /// Tasks whose work function returned 0.
    pub completed: u64,
    /// Tasks whose work function returned non-zero.
    pub failed: u64,
    /// Tasks cancelled before they started.
    pub cancelled: u64,
    /// Tasks cancelled while running.
    pub abandoned: u64,
}

/// A pool of worker threads with a limit on how many callables run at once.
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

/// Prepares `*opts` with the defaults (limit 8, everything else off); `size`
/// is `sizeof(*opts)`.
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

/// Creates a pool that runs at most `max_workers` callables at once (0 pauses
/// it, `UINT32_MAX` is unbounded). Free it with `asyncify_pool_free`.
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

/// Creates a pool as `opts` says (NULL: the defaults). Free it with
/// `asyncify_pool_free`.
#[no_mangle]
pub extern "C" fn asyncify_pool_new_ex(
    opts: *const asyncify_pool_options,
    out: *mut *mut asyncify_pool,
) -> asyncify_status {
    guard("asyncify_pool_new_ex", || {
        let out = required_out(out, "out")?;
        let mut options = PoolOptions::default();
        if let Some(o) = versioned_arg(opts)? {
            let unknown = o.flags & !ASYNCIFY_POOL_RELEASE_SLOT_ON_ABANDON;
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

/// Shuts the pool down and frees it: new submissions get
/// `ASYNCIFY_E_SHUT_DOWN`, queued tasks are cancelled (on this thread), and
/// running callables are waited for up to `timeout_ms` (< 0: forever) with
/// every callback they cause and the exit of every worker thread. Returns
/// `OK` once the workers are joined, or `TIMEOUT` if some still run (they
/// finish on their own and their threads free themselves). Always consumes `pool`, except from a worker
/// thread of that pool: `ASYNCIFY_E_WOULD_DEADLOCK`, and nothing is freed.
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

/// Begins the shutdown of `pool` as `asyncify_pool_free` does (new
/// submissions get `ASYNCIFY_E_SHUT_DOWN`, queued tasks are cancelled on this
/// thread) and waits up to `timeout_ms` (< 0: forever) without freeing it.
/// Returns `OK` once no callable runs and every worker thread has left and
/// been joined, `TIMEOUT` before that; it may be called again (waiting in
/// short slices lets a caller handle signals between them). From a worker
/// thread of that pool: `ASYNCIFY_E_WOULD_DEADLOCK`. After `OK`,
/// `asyncify_pool_free` frees at once. (Since 0.2.)
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

/// Shuts the default pool down, as `asyncify_pool_free` does (without freeing
/// it): later submissions to the default pool get `ASYNCIFY_E_SHUT_DOWN`.
#[no_mangle]
pub extern "C" fn asyncify_shutdown(timeout_ms: i64) -> asyncify_status {
    guard("asyncify_shutdown", || {
        match shutdown("asyncify_shutdown", default_pool(), timeout_ms) {
            FfiShutdown::Refused(f) => Err(f),
            FfiShutdown::Done(status) => Ok(status),
        }
    })
}

/// Sets the limit of `pool` (NULL: the default pool). Raising it starts
/// waiting tasks at once; lowering it interrupts nothing; 0 pauses the pool;
/// `UINT32_MAX` is unbounded.
#[no_mangle]
pub extern "C" fn asyncify_set_max_workers(pool: *mut asyncify_pool, n: u32) -> asyncify_status {
    guard("asyncify_set_max_workers", || {
        pool_or_default(pool).set_max_workers(n);
        Ok(ASYNCIFY_OK)
    })
}

/// Writes the limit of `pool` (NULL: the default pool) to `*out_n`.
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

/// Fills `*out` with the counters of `pool` (NULL: the default pool), up to
/// `min(out->struct_size, sizeof(asyncify_pool_stats))` bytes, and sets
/// `out->struct_size` to the bytes filled. `struct_size` must be at least 4.
#[no_mangle]
pub extern "C" fn asyncify_stats(
    pool: *mut asyncify_pool,
    out: *mut asyncify_pool_stats,
) -> asyncify_status {
    guard("asyncify_stats", || {
        let out = required_out(out, "out")?;
        // SAFETY: the caller promises a writable stats struct of at least
        // `struct_size` bytes at `out`, whose first field is `struct_size`.
        let size = unsafe { (out as *const u32).read_unaligned() } as usize;
        if size < 4 {
            return Err(fail(
                ASYNCIFY_E_INVALID_ARGUMENT,
                format!("out->struct_size is {size}: set it to sizeof(asyncify_pool_stats)"),
            ));
        }
        let s = pool_or_default(pool).stats();
        let ours = std::mem::size_of::<asyncify_pool_stats>();
        let filled = size.min(ours);
        let stats = asyncify_pool_stats {
            struct_size: filled as u32,
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
        };
        // SAFETY: `filled` bytes fit both our struct and the caller's.
        unsafe {
            std::ptr::copy_nonoverlapping(
                &stats as *const asyncify_pool_stats as *const u8,
                out as *mut u8,
                filled,
            )
        };
        Ok(ASYNCIFY_OK)
    })
}
