//! The override table of the calling thread.
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

/// Gives a pointer back to its owner to free: the release function of a pointer
/// value, and a task's `free_arg` and `free_result`.
///
/// Called exactly once per pointer, never with NULL and with no library lock
/// held, on whichever thread lets go of the pointer (each function that can
/// cause a call says which). It may call the library; it must not unwind.
pub type asyncify_free_fn = Option<extern "C" fn(ptr: *mut c_void)>;

/// Makes a task's own copy of a pointer value set with
/// asyncify_override_set_ptr_ex(), so that per-task state (a usage tracker, say)
/// is never shared between tasks.
///
/// Called with the value's pointer once per task that receives the value, on the
/// thread that installs the task's table (the worker, or the caller of
/// asyncify_context_run()) before the work function runs, with no lock held.
/// The task sees the returned pointer instead, and it is released with the
/// value's release function when the task's table is restored (a NULL copy is
/// never released). It must not unwind.
pub type asyncify_clone_fn = Option<extern "C" fn(ptr: *mut c_void) -> *mut c_void>;

/// Key flag (asyncify_override_set_ex(), asyncify_override_set_ptr_ex()): the
/// value is readable on this thread only; it is never copied into submitted
/// tasks or captured contexts.
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

/// Sets `key` to a copy of `len` bytes in the calling thread's table.
///
/// What a task submitted afterwards from this thread sees; tasks submitted
/// earlier keep the value they were given. Inside a task the change stays in the
/// task. A pointer value that `key` held is released if no other table, context
/// or task holds it, possibly on this thread before the call returns.
///
/// @param key The key: a non-empty NUL-terminated UTF-8 string, read during
/// the call only.
/// @param value The bytes, copied; the caller keeps owning them. NULL is
/// allowed when `len` is 0.
/// @param len The number of bytes at `value`.
/// @retval ASYNCIFY_OK The key is set.
/// @retval ASYNCIFY_E_NULL `key` is NULL; or `value` is NULL and `len` is not
/// 0.
/// @retval ASYNCIFY_E_INVALID_ARGUMENT `key` is empty or not UTF-8.
/// @retval ASYNCIFY_E_PANIC An internal error.
#[no_mangle]
pub extern "C" fn asyncify_override_set(
    key: *const c_char,
    value: *const c_void,
    len: usize,
) -> asyncify_status {
    guard("asyncify_override_set", || set_bytes(key, value, len, 0))
}

/// Like asyncify_override_set(), with flags: `ASYNCIFY_KEY_LOCAL` keeps the key
/// on this thread (not copied into tasks or contexts).
///
/// Setting a key with or without the flag replaces its value and its locality.
///
/// @param key The key: a non-empty NUL-terminated UTF-8 string, read during
/// the call only.
/// @param value The bytes, copied; NULL is allowed when `len` is 0.
/// @param len The number of bytes at `value`.
/// @param flags `ASYNCIFY_KEY_*` bits, or 0.
/// @retval ASYNCIFY_OK The key is set.
/// @retval ASYNCIFY_E_NULL `key` is NULL; or `value` is NULL and `len` is not
/// 0.
/// @retval ASYNCIFY_E_INVALID_ARGUMENT `key` is empty or not UTF-8; or
/// `flags` has an unknown bit.
/// @retval ASYNCIFY_E_PANIC An internal error.
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

/// Sets `key` to the opaque pointer `ptr` in the calling thread's table.
///
/// On success the pointer belongs to the library: tables, contexts and tasks
/// share it, and `release` is called on it exactly once, when the last of them
/// holding it is gone, on whichever thread drops that one (never with NULL).
/// Readers get the pointer itself; the library never dereferences it. On error
/// the caller keeps owning `ptr`.
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
pub extern "C" fn asyncify_override_set_ptr(
    key: *const c_char,
    ptr: *mut c_void,
    release: asyncify_free_fn,
) -> asyncify_status {
    guard("asyncify_override_set_ptr", || {
        set_ptr(key, ptr, release, None, 0)
    })
}

/// Like asyncify_override_set_ptr(), with flags and a clone function.
///
/// With `clone`, each task that receives the value gets `clone(ptr)` instead,
/// made on the thread that installs the task and released with `release` when
/// the task's table is restored (see ::asyncify_clone_fn); the original stays in
/// the table it was set in. On error the caller keeps owning `ptr`.
///
/// @param key The key: a non-empty NUL-terminated UTF-8 string, read during
/// the call only.
/// @param ptr The pointer; NULL is allowed.
/// @param release Nullable: called once on `ptr`, and on each clone, when it is
/// dropped.
/// @param clone Nullable: makes each task's own copy.
/// @param flags `ASYNCIFY_KEY_*` bits, or 0.
/// @retval ASYNCIFY_OK The key is set.
/// @retval ASYNCIFY_E_NULL `key` is NULL.
/// @retval ASYNCIFY_E_INVALID_ARGUMENT `key` is empty or not UTF-8; or
/// `flags` has an unknown bit.
/// @retval ASYNCIFY_E_PANIC An internal error.
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

/// Copies the bytes value of `key` into `buf` and its length into `*out_len`.
///
/// Reads the calling thread's table (its local keys first), then, when the key
/// is not there, the global layer. Inside a task that is the task's table.
///
/// @param key The key: a non-empty NUL-terminated UTF-8 string, read during
/// the call only.
/// @param buf Where the bytes go (no terminator is added); NULL is allowed with
/// `cap` 0, a size query.
/// @param cap The size of `buf` in bytes.
/// @param out_len Receives the value's length in bytes, also with
/// `ASYNCIFY_E_BUFFER_TOO_SMALL`.
/// @retval ASYNCIFY_OK Copied (an empty value with `cap` 0 too).
/// @retval ASYNCIFY_E_BUFFER_TOO_SMALL `cap` is below the value's length,
/// which `*out_len` then holds; nothing is copied.
/// @retval ASYNCIFY_E_NOT_FOUND The key is set neither here nor globally.
/// @retval ASYNCIFY_E_NULL `key` is NULL; or `out_len` is NULL, or `buf` is
/// NULL with `cap` above 0.
/// @retval ASYNCIFY_E_INVALID_ARGUMENT `key` is empty or not UTF-8; or the
/// value is a pointer: use asyncify_override_get_ptr().
/// @retval ASYNCIFY_E_PANIC An internal error.
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

/// Writes the pointer value of `key` to `*out_ptr`.
///
/// Reads the calling thread's table (its local keys first), then the global
/// layer. The pointer still belongs to the library: do not release it. It stays
/// valid while the calling thread's table (or, in a task, the task) holds the
/// value; a pointer read from the global layer stays valid until the task ends
/// or, outside tasks, until this thread reads that key again or changes its
/// table, even if the global layer drops it meanwhile. A key set with a clone
/// function gives a task its own clone.
///
/// @param key The key: a non-empty NUL-terminated UTF-8 string, read during
/// the call only.
/// @param out_ptr Receives the pointer.
/// @retval ASYNCIFY_OK `*out_ptr` is set.
/// @retval ASYNCIFY_E_NOT_FOUND The key is set neither here nor globally.
/// @retval ASYNCIFY_E_NULL `key` is NULL; or `out_ptr` is NULL.
/// @retval ASYNCIFY_E_INVALID_ARGUMENT `key` is empty or not UTF-8; or the
/// value is bytes: use asyncify_override_get().
/// @retval ASYNCIFY_E_PANIC An internal error.
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

/// Like asyncify_override_get_ptr(), and also gives the release function the
/// value was set with, so that a binding can tell its own values from pointers
/// set by other code.
///
/// @param key The key: a non-empty NUL-terminated UTF-8 string, read during
/// the call only.
/// @param out_ptr Receives the pointer (still the library's).
/// @param out_release Receives the release function, NULL if none.
/// @retval ASYNCIFY_OK Both are set.
/// @retval ASYNCIFY_E_NOT_FOUND The key is set neither here nor globally.
/// @retval ASYNCIFY_E_NULL `key` is NULL; or `out_ptr` or `out_release` is
/// NULL.
/// @retval ASYNCIFY_E_INVALID_ARGUMENT `key` is empty or not UTF-8; or the
/// value is bytes.
/// @retval ASYNCIFY_E_PANIC An internal error.
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

/// Removes `key` from the calling thread's table (local or not).
///
/// The global layer is untouched: a global value of that key shows through
/// afterwards. A pointer value is released if nothing else holds it, possibly on
/// this thread before the call returns.
///
/// @param key The key: a non-empty NUL-terminated UTF-8 string, read during
/// the call only.
/// @retval ASYNCIFY_OK Removed.
/// @retval ASYNCIFY_E_NOT_FOUND The thread's table has no such key.
/// @retval ASYNCIFY_E_NULL `key` is NULL.
/// @retval ASYNCIFY_E_INVALID_ARGUMENT `key` is empty or not UTF-8.
/// @retval ASYNCIFY_E_PANIC An internal error.
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

/// Empties the calling thread's table, local keys included (the global layer is
/// untouched).
///
/// Open scopes still restore what they remembered. Pointer values nothing else
/// holds are released, possibly on this thread before the call returns.
///
/// @retval ASYNCIFY_OK The table is empty.
/// @retval ASYNCIFY_E_PANIC An internal error.
#[no_mangle]
pub extern "C" fn asyncify_override_clear() -> asyncify_status {
    guard("asyncify_override_clear", || {
        overrides::clear();
        Ok(ASYNCIFY_OK)
    })
}

/// Counts the keys of the calling thread's table, local keys included and the
/// global layer aside.
///
/// @param out_count Receives the number of keys.
/// @retval ASYNCIFY_OK `*out_count` is set.
/// @retval ASYNCIFY_E_NULL `out_count` is NULL.
/// @retval ASYNCIFY_E_PANIC An internal error.
#[no_mangle]
pub extern "C" fn asyncify_override_count(out_count: *mut usize) -> asyncify_status {
    guard("asyncify_override_count", || {
        let out_count = required_out(out_count, "out_count")?;
        write_out(out_count, overrides::count());
        Ok(ASYNCIFY_OK)
    })
}

/// Remembers the calling thread's table (local keys included), like entering
/// `with dspy.context(...)`: asyncify_scope_exit() with the token restores it
/// exactly.
///
/// Scopes nest and belong to the thread, or inside a task to the task: a task
/// starts with none, and a scope it leaves open ends with it.
///
/// @param out_token Receives the scope's token, never 0 and never reused.
/// @retval ASYNCIFY_OK `*out_token` is set.
/// @retval ASYNCIFY_E_NULL `out_token` is NULL.
/// @retval ASYNCIFY_E_PANIC An internal error.
#[no_mangle]
pub extern "C" fn asyncify_scope_enter(out_token: *mut u64) -> asyncify_status {
    guard("asyncify_scope_enter", || {
        let out_token = required_out(out_token, "out_token")?;
        write_out(out_token, overrides::scope_enter());
        Ok(ASYNCIFY_OK)
    })
}

/// Restores exactly the table remembered by `token`, closing that scope.
///
/// The scope must be the innermost open one of this thread (or task). Values set
/// since the scope began are dropped, and pointer values nothing else holds are
/// released, possibly on this thread before the call returns.
///
/// @param token From asyncify_scope_enter() on this thread (or in this task).
/// @retval ASYNCIFY_OK Restored.
/// @retval ASYNCIFY_E_SCOPE_MISMATCH `token` is not the innermost open scope
/// here (out of LIFO order, exited already, from another thread or another
/// task); nothing changes.
/// @retval ASYNCIFY_E_INVALID_ARGUMENT `token` is 0, never a scope.
/// @retval ASYNCIFY_E_PANIC An internal error.
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
