//! Pools and the limit (contract sections 5 and 6.1).
//!
//! A pool pointer from `asyncify_pool_new` belongs to the caller until
//! `asyncify_pool_free` consumes it. Handles outlive their pool. The default
//! pool (a NULL pool argument) is created on first use, with a limit of 8 or
//! `ASYNCIFY_MAX_WORKERS` from the environment.

use super::{fail, guard, required_out, timeout_arg, write_out};
use crate::pool::{default_pool, Pool};
use crate::status::*;

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
/// every callback they cause. Returns `OK`, or `TIMEOUT` if some still run
/// (they finish on their own). Always consumes `pool`, except from a worker
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
