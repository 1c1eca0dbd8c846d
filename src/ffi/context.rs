//! Contexts: snapshots of a table as values.
//!
//! A context is immutable and reference-counted inside: `with`/`without`
//! return a new context in O(log n) and leave the old one unchanged (like
//! Python's `contextvars`). Each context pointer is owned by the caller until
//! `asyncify_context_free`; a task submitted with a context keeps its own
//! reference, so the caller may free its pointer right after `asyncify_submit`.

use std::ffi::{c_char, c_void, CString};
use std::sync::Arc;

use super::overrides::{asyncify_free_fn, copy_bytes_out, ptr_of};
use super::task_abi::asyncify_work_fn;
use super::{bytes_arg, fail, guard, key_arg, required, required_out, write_out, Fail, FfiResult};
use crate::overrides::{self, Frame, Installed};
use crate::status::*;
use crate::table::{PtrValue, Table, Value};

/// An immutable snapshot of an override table, like a Python `contextvars`
/// context: made by asyncify_context_capture(), asyncify_context_empty() and
/// derived with asyncify_context_with() and its kin, read with
/// asyncify_context_get() and its kin, installed by asyncify_context_run() or
/// asyncify_submit() (`opts.context`). Each pointer is the caller's until
/// asyncify_context_free(); contexts, tables and tasks share their values, so
/// making one costs O(1) or O(log n) and freeing one releases only values that
/// nothing else holds. It never changes, so any thread may read it at any time.
pub struct asyncify_context {
    pub(crate) table: Table,
}

/// The context behind a non-NULL pointer.
pub(crate) fn context_ref<'a>(ctx: *const asyncify_context) -> Result<&'a asyncify_context, Fail> {
    let ctx = required(ctx, "ctx")?;
    // SAFETY: a non-NULL context pointer came from this library and has not
    // been freed (the caller's promise, as with `free()`).
    Ok(unsafe { &*ctx })
}

fn hand_out(table: Table, out: *mut *mut asyncify_context) -> FfiResult {
    write_out(out, Box::into_raw(Box::new(asyncify_context { table })));
    Ok(ASYNCIFY_OK)
}

/// Captures the calling thread's table in O(1): what a task submitted now would
/// get (local keys excluded; the global layer is not part of it).
///
/// The event-loop pattern: capture at call time, submit later with
/// `opts.context` from the loop's thread. Clone functions are not run here but
/// when a task installs the context.
///
/// @param out Receives the new context, the caller's until
/// asyncify_context_free().
/// @retval ASYNCIFY_OK `*out` is set.
/// @retval ASYNCIFY_E_NULL `out` is NULL.
/// @retval ASYNCIFY_E_PANIC An internal error.
#[no_mangle]
pub extern "C" fn asyncify_context_capture(out: *mut *mut asyncify_context) -> asyncify_status {
    guard("asyncify_context_capture", || {
        let out = required_out(out, "out")?;
        hand_out(overrides::snapshot(), out)
    })
}

/// Makes a context with no keys.
///
/// @param out Receives the new context, the caller's until
/// asyncify_context_free().
/// @retval ASYNCIFY_OK `*out` is set.
/// @retval ASYNCIFY_E_NULL `out` is NULL.
/// @retval ASYNCIFY_E_PANIC An internal error.
#[no_mangle]
pub extern "C" fn asyncify_context_empty(out: *mut *mut asyncify_context) -> asyncify_status {
    guard("asyncify_context_empty", || {
        let out = required_out(out, "out")?;
        hand_out(Table::new(), out)
    })
}

fn derive(
    ctx: *const asyncify_context,
    out: *mut *mut asyncify_context,
    key: *const c_char,
    change: impl FnOnce(&mut Table, &str),
) -> FfiResult {
    let ctx = context_ref(ctx)?;
    let out = required_out(out, "out")?;
    let key = key_arg(key)?;
    let mut table = ctx.table.clone();
    change(&mut table, key);
    hand_out(table, out)
}

/// Makes a new context: `ctx` with `key` set to a copy of `len` bytes, in
/// O(log n). `ctx` is unchanged and still the caller's.
///
/// @param ctx The context, read only.
/// @param key The key: a non-empty NUL-terminated UTF-8 string, read during
/// the call only.
/// @param value The bytes, copied; NULL is allowed when `len` is 0.
/// @param len The number of bytes at `value`.
/// @param out Receives the new context, the caller's until
/// asyncify_context_free().
/// @retval ASYNCIFY_OK `*out` is set.
/// @retval ASYNCIFY_E_NULL `ctx`, `out` or `key` is NULL, or `value` is NULL
/// and `len` is not 0.
/// @retval ASYNCIFY_E_INVALID_ARGUMENT `key` is empty or not UTF-8.
/// @retval ASYNCIFY_E_PANIC An internal error.
#[no_mangle]
pub extern "C" fn asyncify_context_with(
    ctx: *const asyncify_context,
    key: *const c_char,
    value: *const c_void,
    len: usize,
    out: *mut *mut asyncify_context,
) -> asyncify_status {
    guard("asyncify_context_with", || {
        let bytes = bytes_arg(value as *const u8, len, "value")?;
        derive(ctx, out, key, |t, k| {
            t.insert(k, Arc::new(Value::Bytes(bytes.into())));
        })
    })
}

/// Makes a new context: `ctx` with `key` set to the opaque pointer `ptr`, in
/// O(log n). `ctx` is unchanged and still the caller's.
///
/// On success the pointer belongs to the library: `release` is called on it
/// exactly once, when the last context, table or task holding it is gone, on
/// whichever thread drops that one (never with NULL). On error the caller keeps
/// owning `ptr`.
///
/// @param ctx The context, read only.
/// @param key The key: a non-empty NUL-terminated UTF-8 string, read during
/// the call only.
/// @param ptr The pointer; NULL is allowed (and is then never released).
/// @param release Nullable: called once on `ptr` when the value is dropped.
/// @param out Receives the new context, the caller's until
/// asyncify_context_free().
/// @retval ASYNCIFY_OK `*out` is set.
/// @retval ASYNCIFY_E_NULL `ctx`, `out` or `key` is NULL.
/// @retval ASYNCIFY_E_INVALID_ARGUMENT `key` is empty or not UTF-8.
/// @retval ASYNCIFY_E_PANIC An internal error.
#[no_mangle]
pub extern "C" fn asyncify_context_with_ptr(
    ctx: *const asyncify_context,
    key: *const c_char,
    ptr: *mut c_void,
    release: asyncify_free_fn,
    out: *mut *mut asyncify_context,
) -> asyncify_status {
    guard("asyncify_context_with_ptr", || {
        derive(ctx, out, key, |t, k| {
            t.insert(k, Arc::new(Value::Ptr(PtrValue::new(ptr, release))));
        })
    })
}

/// Makes a new context: `ctx` without `key`, in O(log n) (the same content
/// when the key is absent; still a new pointer to free). `ctx` is unchanged and
/// still the caller's.
///
/// @param ctx The context, read only.
/// @param key The key: a non-empty NUL-terminated UTF-8 string, read during
/// the call only.
/// @param out Receives the new context, the caller's until
/// asyncify_context_free().
/// @retval ASYNCIFY_OK `*out` is set.
/// @retval ASYNCIFY_E_NULL `ctx`, `out` or `key` is NULL.
/// @retval ASYNCIFY_E_INVALID_ARGUMENT `key` is empty or not UTF-8.
/// @retval ASYNCIFY_E_PANIC An internal error.
#[no_mangle]
pub extern "C" fn asyncify_context_without(
    ctx: *const asyncify_context,
    key: *const c_char,
    out: *mut *mut asyncify_context,
) -> asyncify_status {
    guard("asyncify_context_without", || {
        derive(ctx, out, key, |t, k| {
            t.remove(k);
        })
    })
}

/// Runs `fn(arg)` on the calling thread, now, with `ctx` installed as the
/// thread's table (as a task would see it), then restores the thread's own
/// table.
///
/// Clone functions of `ctx`'s values run here before `fn`, and what `fn` set
/// or left in a scope is dropped here afterwards (its pointer values released
/// on this thread when nothing else holds them). `fn` is not a task: inside a
/// task, asyncify_cancel_requested() in it still answers for that task.
///
/// @note The library never frees the result: pass `out_result` unless `fn`
/// stores none.
///
/// @param ctx The context, read only.
/// @param fn The work function, called once on this thread.
/// @param arg Passed to `fn`; it stays the caller's.
/// @param out_result Nullable: receives what `fn` stored in its result, which
/// is the caller's.
/// @param out_code Nullable: receives `fn`'s return value.
/// @retval ASYNCIFY_OK `fn` returned 0.
/// @retval ASYNCIFY_FAILED `fn` returned non-zero (see `*out_code`).
/// @retval ASYNCIFY_E_NULL `ctx` or `fn` is NULL; `fn` did not run.
/// @retval ASYNCIFY_E_PANIC An internal error.
#[no_mangle]
pub extern "C" fn asyncify_context_run(
    ctx: *const asyncify_context,
    r#fn: asyncify_work_fn,
    arg: *mut c_void,
    out_result: *mut *mut c_void,
    out_code: *mut i32,
) -> asyncify_status {
    guard("asyncify_context_run", || {
        let ctx = context_ref(ctx)?;
        let Some(work) = r#fn else {
            return Err(fail(ASYNCIFY_E_NULL, "fn is NULL"));
        };
        let mut result: *mut c_void = std::ptr::null_mut();
        let code = {
            let _frame = Installed::new(Frame::for_task(&ctx.table));
            work(arg, &mut result)
        };
        write_out(out_result, result);
        write_out(out_code, code);
        Ok(if code == 0 {
            ASYNCIFY_OK
        } else {
            ASYNCIFY_FAILED
        })
    })
}

/// Frees a context pointer. Its values are released when no other context,
/// table or task holds them, possibly on this thread before the call returns.
/// Tasks submitted with it keep their own reference.
///
/// @param ctx The context; do not use it again.
/// @retval ASYNCIFY_OK Freed.
/// @retval ASYNCIFY_E_NULL `ctx` is NULL.
/// @retval ASYNCIFY_E_PANIC An internal error.
#[no_mangle]
pub extern "C" fn asyncify_context_free(ctx: *mut asyncify_context) -> asyncify_status {
    guard("asyncify_context_free", || {
        let ctx = required_out(ctx, "ctx")?;
        // SAFETY: a non-NULL context pointer came from this library and is
        // freed here once (the caller's promise).
        drop(unsafe { Box::from_raw(ctx) });
        Ok(ASYNCIFY_OK)
    })
}

/// The value of `key` in `ctx` (the global layer is not consulted).
fn context_value(ctx: *const asyncify_context, key: &str) -> Result<Arc<Value>, Fail> {
    context_ref(ctx)?.table.get(key).cloned().ok_or_else(|| {
        fail(
            ASYNCIFY_E_NOT_FOUND,
            format!("the context has no key \"{key}\""),
        )
    })
}

/// Like asyncify_override_get(), reading `ctx` instead of the calling thread's
/// table (the global layer is not consulted): copies the bytes value of `key`
/// into `buf` and its length into `*out_len`. (Since 0.2.)
///
/// @param ctx The context, read only.
/// @param key The key: a non-empty NUL-terminated UTF-8 string, read during
/// the call only.
/// @param buf Where the bytes go (no terminator is added); NULL is allowed with
/// `cap` 0, a size query.
/// @param cap The size of `buf` in bytes.
/// @param out_len Receives the value's length, also with
/// `ASYNCIFY_E_BUFFER_TOO_SMALL`.
/// @retval ASYNCIFY_OK Copied.
/// @retval ASYNCIFY_E_BUFFER_TOO_SMALL `cap` is below the value's length,
/// which `*out_len` then holds; nothing is copied.
/// @retval ASYNCIFY_E_NOT_FOUND `ctx` has no such key.
/// @retval ASYNCIFY_E_NULL `ctx`, `key` or `out_len` is NULL, or `buf` is
/// NULL with `cap` above 0.
/// @retval ASYNCIFY_E_INVALID_ARGUMENT `key` is empty or not UTF-8, or the
/// value is a pointer.
/// @retval ASYNCIFY_E_PANIC An internal error.
#[no_mangle]
pub extern "C" fn asyncify_context_get(
    ctx: *const asyncify_context,
    key: *const c_char,
    buf: *mut c_void,
    cap: usize,
    out_len: *mut usize,
) -> asyncify_status {
    guard("asyncify_context_get", || {
        let key = key_arg(key)?;
        let out_len = required_out(out_len, "out_len")?;
        if cap > 0 {
            required_out(buf, "buf (NULL is allowed only with cap 0)")?;
        }
        copy_bytes_out(key, &*context_value(ctx, key)?, buf, cap, out_len)
    })
}

/// Like asyncify_override_get_ptr(), reading `ctx`: writes the pointer value of
/// `key` to `*out`. The pointer is still the library's: do not release it. It
/// stays valid at least until `ctx` is freed. (Since 0.2.)
///
/// @param ctx The context, read only.
/// @param key The key: a non-empty NUL-terminated UTF-8 string, read during
/// the call only.
/// @param out Receives the pointer.
/// @retval ASYNCIFY_OK `*out` is set.
/// @retval ASYNCIFY_E_NOT_FOUND `ctx` has no such key.
/// @retval ASYNCIFY_E_NULL `ctx`, `key` or `out` is NULL.
/// @retval ASYNCIFY_E_INVALID_ARGUMENT `key` is empty or not UTF-8, or the
/// value is bytes.
/// @retval ASYNCIFY_E_PANIC An internal error.
#[no_mangle]
pub extern "C" fn asyncify_context_get_ptr(
    ctx: *const asyncify_context,
    key: *const c_char,
    out: *mut *mut c_void,
) -> asyncify_status {
    guard("asyncify_context_get_ptr", || {
        let out = required_out(out, "out")?;
        let key = key_arg(key)?;
        let (ptr, _) = ptr_of(key, &*context_value(ctx, key)?)?;
        write_out(out, ptr);
        Ok(ASYNCIFY_OK)
    })
}

/// Like asyncify_context_get_ptr(), and also writes the value's release
/// function to `*out_release`, so that a binding can tell its own values from
/// pointers set by other code. (Since 0.2.)
///
/// @param ctx The context, read only.
/// @param key The key: a non-empty NUL-terminated UTF-8 string, read during
/// the call only.
/// @param out Receives the pointer (still the library's).
/// @param out_release Receives the release function, NULL if none.
/// @retval ASYNCIFY_OK Both are set.
/// @retval ASYNCIFY_E_NOT_FOUND `ctx` has no such key.
/// @retval ASYNCIFY_E_NULL `ctx`, `key`, `out` or `out_release` is NULL.
/// @retval ASYNCIFY_E_INVALID_ARGUMENT `key` is empty or not UTF-8, or the
/// value is bytes.
/// @retval ASYNCIFY_E_PANIC An internal error.
#[no_mangle]
pub extern "C" fn asyncify_context_get_ptr_ex(
    ctx: *const asyncify_context,
    key: *const c_char,
    out: *mut *mut c_void,
    out_release: *mut asyncify_free_fn,
) -> asyncify_status {
    guard("asyncify_context_get_ptr_ex", || {
        let out = required_out(out, "out")?;
        let out_release = required_out(out_release, "out_release")?;
        let key = key_arg(key)?;
        let (ptr, release) = ptr_of(key, &*context_value(ctx, key)?)?;
        write_out(out, ptr);
        write_out(out_release, release);
        Ok(ASYNCIFY_OK)
    })
}

/// Counts the keys of `ctx`. (Since 0.2.)
///
/// @param ctx The context, read only.
/// @param out Receives the number of keys.
/// @retval ASYNCIFY_OK `*out` is set.
/// @retval ASYNCIFY_E_NULL `ctx` or `out` is NULL.
/// @retval ASYNCIFY_E_PANIC An internal error.
#[no_mangle]
pub extern "C" fn asyncify_context_count(
    ctx: *const asyncify_context,
    out: *mut usize,
) -> asyncify_status {
    guard("asyncify_context_count", || {
        let out = required_out(out, "out")?;
        write_out(out, context_ref(ctx)?.table.len());
        Ok(ASYNCIFY_OK)
    })
}

/// Called by asyncify_context_visit() once per key, on the thread that called
/// it: `key` is NUL-terminated and `key_len` bytes long; a bytes value is `len`
/// bytes at `value`, a pointer value (`is_ptr` 1) is `value` itself, still the
/// library's, with `len` 0. Everything passed is valid only during the call.
/// Return non-zero to stop the walk. It may call the library; it must not
/// unwind.
pub type asyncify_visit_fn = Option<
    extern "C" fn(
        user_data: *mut c_void,
        key: *const c_char,
        key_len: usize,
        is_ptr: i32,
        value: *const c_void,
        len: usize,
    ) -> i32,
>;

/// Calls `fn` once per key of `ctx`, in key order, on this thread and with no
/// lock held, until `fn` returns non-zero. (Since 0.2.)
///
/// A context never changes, so `fn` may use the library freely, even free
/// `ctx`: the walk holds its own references.
///
/// @param ctx The context, read only.
/// @param fn The visitor (see ::asyncify_visit_fn).
/// @param user_data Passed to `fn`; it stays the caller's.
/// @retval ASYNCIFY_OK The walk ended, at its end or where `fn` stopped it.
/// @retval ASYNCIFY_E_NULL `ctx` or `fn` is NULL.
/// @retval ASYNCIFY_E_PANIC An internal error.
#[no_mangle]
pub extern "C" fn asyncify_context_visit(
    ctx: *const asyncify_context,
    r#fn: asyncify_visit_fn,
    user_data: *mut c_void,
) -> asyncify_status {
    guard("asyncify_context_visit", || {
        let Some(visit) = r#fn else {
            return Err(fail(ASYNCIFY_E_NULL, "fn is NULL"));
        };
        // The entries are this call's own references: `ctx` may be freed by
        // the callback without pulling them from under the walk.
        for (key, value) in context_ref(ctx)?.table.entries() {
            let c_key = CString::new(key.as_bytes()).expect("keys never hold a NUL");
            let (is_ptr, ptr, len) = match &*value {
                Value::Bytes(b) => (0, b.as_ptr() as *const c_void, b.len()),
                Value::Ptr(p) => (1, p.ptr() as *const c_void, 0),
            };
            if visit(user_data, c_key.as_ptr(), key.len(), is_ptr, ptr, len) != 0 {
                break;
            }
        }
        Ok(ASYNCIFY_OK)
    })
}
