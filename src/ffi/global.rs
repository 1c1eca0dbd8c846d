//! The global layer: process-wide defaults under every thread's table, like
//! `dspy.configure`. These functions are a module of their own so that the
//! header lists them last, after the per-thread API they fall back from.

use std::ffi::{c_char, c_void};

use super::overrides::asyncify_free_fn;
use super::{bytes_arg, fail, guard, key_arg};
use crate::overrides;
use crate::status::*;
use crate::table::{PtrValue, Value};

/// Sets `key` to a copy of `len` bytes in the global layer: a process-wide
/// default, like `dspy.configure`.
///
/// Every thread and every task reads the global layer where its own table has no
/// such key, live: a running task that did not override `key` sees this change.
/// Values in the global layer are never copied into tasks or contexts. A pointer
/// value that `key` held is released once no reader holds it.
///
/// @param key The key: a non-empty NUL-terminated UTF-8 string, read during
/// the call only.
/// @param value The bytes, copied; NULL is allowed when `len` is 0.
/// @param len The number of bytes at `value`.
/// @retval ASYNCIFY_OK The key is set.
/// @retval ASYNCIFY_E_NULL `key` is NULL; or `value` is NULL and `len` is not
/// 0.
/// @retval ASYNCIFY_E_INVALID_ARGUMENT `key` is empty or not UTF-8.
/// @retval ASYNCIFY_E_PANIC An internal error.
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

/// Sets `key` to the opaque pointer `ptr` in the global layer.
///
/// On success the pointer belongs to the library: `release` is called on it
/// exactly once, when the global layer no longer holds it and no reader does,
/// on whichever thread lets go last (never with NULL). A pointer a thread has
/// read stays valid until its task ends or, outside tasks, until that thread
/// reads the key again or changes its table. On error the caller keeps owning
/// `ptr`.
///
/// @param key The key: a non-empty NUL-terminated UTF-8 string, read during
/// the call only.
/// @param ptr The pointer; NULL is allowed (and is then never released).
/// @param release Nullable: called once on `ptr` when the value is dropped.
/// @retval ASYNCIFY_OK The key is set.
/// @retval ASYNCIFY_E_NULL `key` is NULL.
/// @retval ASYNCIFY_E_INVALID_ARGUMENT `key` is empty or not UTF-8.
/// @retval ASYNCIFY_E_PANIC An internal error.
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

/// Removes `key` from the global layer; threads' own tables are untouched.
///
/// A pointer value is released once no reader holds it.
///
/// @param key The key: a non-empty NUL-terminated UTF-8 string, read during
/// the call only.
/// @retval ASYNCIFY_OK Removed.
/// @retval ASYNCIFY_E_NOT_FOUND The global layer has no such key.
/// @retval ASYNCIFY_E_NULL `key` is NULL.
/// @retval ASYNCIFY_E_INVALID_ARGUMENT `key` is empty or not UTF-8.
/// @retval ASYNCIFY_E_PANIC An internal error.
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
