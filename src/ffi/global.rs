//! The global layer: process-wide defaults under every thread's table, like
//! `dspy.configure`. These functions are a module of their own so that the
//! header lists them last, after the per-thread API they fall back from.

use std::ffi::{c_char, c_void};

use super::table::asyncify_free_fn;
use super::{bytes_arg, fail, guard, key_arg};
use crate::overrides;
use crate::status::*;
use crate::table::{PtrValue, Value};

/// Sets `key` to a copy of `len` bytes in the global layer: a process-wide
/// default (like `dspy.configure`) that every thread and running task reads
/// where its own table has no such key, live.
#[no_mangle]
pub extern "C" fn asyncify_global_set(
    key: *const c_char,
    value: *const c_void,
    len: usize,
) -> asyncify_status {
    guard("asyncify_global_set", || {
        let key = key_arg(key)?;
        let bytes = bytes_arg(value as *const u8, len, "value")?;
        overrides::global_set(key, Value::Bytes(bytes.into()));
        Ok(ASYNCIFY_OK)
    })
}

/// Sets `key` to an opaque pointer in the global layer; `release` is called
/// once when the global layer and every reader are done with it. A pointer a
/// thread has read stays valid until its task ends or, outside tasks, until
/// the thread reads that key again or changes its table.
#[no_mangle]
pub extern "C" fn asyncify_global_set_ptr(
    key: *const c_char,
    ptr: *mut c_void,
    release: asyncify_free_fn,
) -> asyncify_status {
    guard("asyncify_global_set_ptr", || {
        let key = key_arg(key)?;
        overrides::global_set(key, Value::Ptr(PtrValue::new(ptr, release)));
        Ok(ASYNCIFY_OK)
    })
}

/// Removes `key` from the global layer; `ASYNCIFY_E_NOT_FOUND` when absent.
#[no_mangle]
pub extern "C" fn asyncify_global_remove(key: *const c_char) -> asyncify_status {
    guard("asyncify_global_remove", || {
        let key = key_arg(key)?;
        if overrides::global_remove(key) {
            Ok(ASYNCIFY_OK)
        } else {
            Err(fail(
                ASYNCIFY_E_NOT_FOUND,
                format!("no global value for key \"{key}\""),
            ))
        }
    })
}
