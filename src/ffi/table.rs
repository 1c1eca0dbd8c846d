//! The override table of the calling thread (contract section 2).
//!
//! Each thread has its own table; a thread created outside the library starts
//! empty. Inside a task the table is the task's snapshot: changes stay in the
//! task. Values are bytes (copied in) or opaque pointers with a release
//! function called exactly once, by whichever thread drops the last table that
//! holds the value.

use std::ffi::{c_char, c_void};
use std::sync::Arc;

use super::{bytes_arg, fail, guard, key_arg, required_out, write_out, Fail, FfiResult};
use crate::overrides;
use crate::status::*;
use crate::table::{PtrValue, Value};

// The global layer's functions are declared in `global` (the header lists
// them last); Rust callers keep reaching them here.
pub use super::global::{asyncify_global_remove, asyncify_global_set, asyncify_global_set_ptr};

/// Releases an opaque pointer value, an argument or a result.
pub type asyncify_free_fn = Option<extern "C" fn(ptr: *mut c_void)>;

/// Makes a task's own copy of a pointer value; called once per task that
/// receives the value, on the thread that installs the task.
pub type asyncify_clone_fn = Option<extern "C" fn(ptr: *mut c_void) -> *mut c_void>;

/// Key flag: the value stays on this thread and is never copied into
/// submitted tasks or captured contexts.
pub const ASYNCIFY_KEY_LOCAL: u32 = 1;

fn key_flags(flags: u32) -> Result<bool, Fail> {
    if flags & !ASYNCIFY_KEY_LOCAL != 0 {
        return Err(fail(
            ASYNCIFY_E_INVALID_ARGUMENT,
            format!("unknown key flags 0x{:x}", flags & !ASYNCIFY_KEY_LOCAL),
        ));
    }
    Ok(flags & ASYNCIFY_KEY_LOCAL != 0)
}

fn lookup(key: &str) -> Result<Arc<Value>, Fail> {
    overrides::get(key).ok_or_else(|| {
        fail(
            ASYNCIFY_E_NOT_FOUND,
            format!("no override for key \"{key}\""),
        )
    })
}

fn kind_mismatch(key: &str, is: &str) -> Fail {
    fail(
        ASYNCIFY_E_INVALID_ARGUMENT,
        format!("the value of \"{key}\" is {is}; use the other get function"),
    )
}

/// Sets `key` to a copy of `len` bytes at `value` (NULL allowed when `len` is
/// 0) in the calling thread's table. The caller keeps owning `value`.
#[no_mangle]
pub extern "C" fn asyncify_override_set(
    key: *const c_char,
    value: *const c_void,
    len: usize,
) -> asyncify_status {
    guard("asyncify_override_set", || set_bytes(key, value, len, 0))
}

/// Like `asyncify_override_set`, with `ASYNCIFY_KEY_*` flags.
#[no_mangle]
pub extern "C" fn asyncify_override_set_ex(
    key: *const c_char,
    value: *const c_void,
    len: usize,
    flags: u32,
) -> asyncify_status {
    guard("asyncify_override_set_ex", || {
        set_bytes(key, value, len, flags)
    })
}

fn set_bytes(key: *const c_char, value: *const c_void, len: usize, flags: u32) -> FfiResult {
    let key = key_arg(key)?;
    let local = key_flags(flags)?;
    let bytes = bytes_arg(value as *const u8, len, "value")?;
    overrides::set(key, Value::Bytes(bytes.into()), local);
    Ok(ASYNCIFY_OK)
}

/// Sets `key` to the opaque pointer `ptr`. The tables own it from now on:
/// `release` (nullable) is called on it exactly once, when the last table or
/// task holding it is gone, on whichever thread drops it (never with NULL).
/// On error the caller keeps owning `ptr`.
#[no_mangle]
pub extern "C" fn asyncify_override_set_ptr(
    key: *const c_char,
    ptr: *mut c_void,
    release: asyncify_free_fn,
) -> asyncify_status {
    guard("asyncify_override_set_ptr", || {
        set_ptr(key, ptr, release, None, 0)
    })
}

/// Like `asyncify_override_set_ptr`, with `ASYNCIFY_KEY_*` flags and a clone
/// function (nullable): each task that receives the value gets
/// `clone(ptr)` instead, released with `release` when the task's table is
/// restored (for per-task state such as a usage tracker).
#[no_mangle]
pub extern "C" fn asyncify_override_set_ptr_ex(
    key: *const c_char,
    ptr: *mut c_void,
    release: asyncify_free_fn,
    clone: asyncify_clone_fn,
    flags: u32,
) -> asyncify_status {
    guard("asyncify_override_set_ptr_ex", || {
        set_ptr(key, ptr, release, clone, flags)
    })
}

fn set_ptr(
    key: *const c_char,
    ptr: *mut c_void,
    release: asyncify_free_fn,
    clone: asyncify_clone_fn,
    flags: u32,
) -> FfiResult {
    let key = key_arg(key)?;
    let local = key_flags(flags)?;
    overrides::set(
        key,
        Value::Ptr(PtrValue::with_clone(ptr, release, clone)),
        local,
    );
    Ok(ASYNCIFY_OK)
}

/// Copies the bytes of `key` into `buf` and their length into `*out_len`.
/// `buf` may be NULL when `cap` is 0 (a size query). Returns
/// `ASYNCIFY_E_BUFFER_TOO_SMALL` (with `*out_len` set) when `cap` is too small,
/// `ASYNCIFY_E_NOT_FOUND` when the key is not set, and
/// `ASYNCIFY_E_INVALID_ARGUMENT` when its value is a pointer.
#[no_mangle]
pub extern "C" fn asyncify_override_get(
    key: *const c_char,
    buf: *mut c_void,
    cap: usize,
    out_len: *mut usize,
) -> asyncify_status {
    guard("asyncify_override_get", || {
        let key = key_arg(key)?;
        let out_len = required_out(out_len, "out_len")?;
        if cap > 0 {
            required_out(buf, "buf (NULL is allowed only with cap 0)")?;
        }
        copy_bytes_out(key, &*lookup(key)?, buf, cap, out_len)
    })
}

/// Copies the bytes value of `key` to `buf` (checked: non-NULL when `cap > 0`)
/// and its length to `out_len`, or says why not.
pub(crate) fn copy_bytes_out(
    key: &str,
    value: &Value,
    buf: *mut c_void,
    cap: usize,
    out_len: *mut usize,
) -> FfiResult {
    let Some(bytes) = value.as_bytes() else {
        return Err(kind_mismatch(key, "a pointer"));
    };
    if cap < bytes.len() {
        write_out(out_len, bytes.len());
        return Err(fail(
            ASYNCIFY_E_BUFFER_TOO_SMALL,
            format!(
                "the value of \"{key}\" has {} bytes, the buffer {cap}",
                bytes.len()
            ),
        ));
    }
    if !bytes.is_empty() {
        // SAFETY: `buf` is non-NULL (the caller checked it, as `cap >= len >
        // 0`) and the C caller promises `cap` writable bytes there.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf as *mut u8, bytes.len()) };
    }
    write_out(out_len, bytes.len());
    Ok(ASYNCIFY_OK)
}

fn get_ptr(key: *const c_char) -> Result<(*mut c_void, asyncify_free_fn), Fail> {
    let key = key_arg(key)?;
    ptr_of(key, &*lookup(key)?)
}

/// The pointer value of `key` and its release function, or why not.
pub(crate) fn ptr_of(key: &str, value: &Value) -> Result<(*mut c_void, asyncify_free_fn), Fail> {
    match value {
        Value::Ptr(p) => Ok((p.ptr(), p.release_fn())),
        Value::Bytes(_) => Err(kind_mismatch(key, "bytes")),
    }
}

/// Writes the pointer value of `key` to `*out_ptr`. It stays valid while the
/// calling thread's table (or, in a task, the task) still holds the value.
#[no_mangle]
pub extern "C" fn asyncify_override_get_ptr(
    key: *const c_char,
    out_ptr: *mut *mut c_void,
) -> asyncify_status {
    guard("asyncify_override_get_ptr", || {
        let out_ptr = required_out(out_ptr, "out_ptr")?;
        let (ptr, _) = get_ptr(key)?;
        write_out(out_ptr, ptr);
        Ok(ASYNCIFY_OK)
    })
}

/// Like `asyncify_override_get_ptr`, and also writes the release function the
/// value was set with (NULL if none) to `*out_release`, so a binding can tell
/// its own values from pointers set by other code.
#[no_mangle]
pub extern "C" fn asyncify_override_get_ptr_ex(
    key: *const c_char,
    out_ptr: *mut *mut c_void,
    out_release: *mut asyncify_free_fn,
) -> asyncify_status {
    guard("asyncify_override_get_ptr_ex", || {
        let out_ptr = required_out(out_ptr, "out_ptr")?;
        let out_release = required_out(out_release, "out_release")?;
        let (ptr, release) = get_ptr(key)?;
        write_out(out_ptr, ptr);
        write_out(out_release, release);
        Ok(ASYNCIFY_OK)
    })
}

/// Removes `key` from the calling thread's table; `ASYNCIFY_E_NOT_FOUND` when
/// it is not set.
#[no_mangle]
pub extern "C" fn asyncify_override_remove(key: *const c_char) -> asyncify_status {
    guard("asyncify_override_remove", || {
        let key = key_arg(key)?;
        if overrides::remove(key) {
            Ok(ASYNCIFY_OK)
        } else {
            Err(fail(
                ASYNCIFY_E_NOT_FOUND,
                format!("no override for key \"{key}\""),
            ))
        }
    })
}

/// Empties the calling thread's table. Open scopes still restore what they
/// remembered.
#[no_mangle]
pub extern "C" fn asyncify_override_clear() -> asyncify_status {
    guard("asyncify_override_clear", || {
        overrides::clear();
        Ok(ASYNCIFY_OK)
    })
}

/// Writes the number of keys in the calling thread's table to `*out_count`.
#[no_mangle]
pub extern "C" fn asyncify_override_count(out_count: *mut usize) -> asyncify_status {
    guard("asyncify_override_count", || {
        let out_count = required_out(out_count, "out_count")?;
        write_out(out_count, overrides::count());
        Ok(ASYNCIFY_OK)
    })
}

/// Remembers the calling thread's table (like `dspy.context()`); the token
/// restores it with `asyncify_scope_exit`. Scopes are per thread and per task.
#[no_mangle]
pub extern "C" fn asyncify_scope_enter(out_token: *mut u64) -> asyncify_status {
    guard("asyncify_scope_enter", || {
        let out_token = required_out(out_token, "out_token")?;
        write_out(out_token, overrides::scope_enter());
        Ok(ASYNCIFY_OK)
    })
}

/// Restores exactly the table remembered by `token`. It must be the innermost
/// open scope of this thread (or task): otherwise `ASYNCIFY_E_SCOPE_MISMATCH`
/// and nothing changes. Token 0 is never valid (`ASYNCIFY_E_INVALID_ARGUMENT`).
#[no_mangle]
pub extern "C" fn asyncify_scope_exit(token: u64) -> asyncify_status {
    guard("asyncify_scope_exit", || {
        if token == 0 {
            return Err(fail(
                ASYNCIFY_E_INVALID_ARGUMENT,
                "token 0 is never a scope",
            ));
        }
        overrides::scope_exit(token).map_err(|_| {
            fail(
                ASYNCIFY_E_SCOPE_MISMATCH,
                "the token is not the innermost open scope of this thread or task (LIFO order, same thread, same task)",
            )
        })?;
        Ok(ASYNCIFY_OK)
    })
}
