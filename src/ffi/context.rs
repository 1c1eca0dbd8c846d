//! Contexts: snapshots of a table as values (contract 6.2).
//!
//! A context is immutable and reference-counted inside: `with`/`without`
//! return a new context in O(log n) and leave the old one unchanged (like
//! Python's `contextvars`). Each context pointer is owned by the caller until
//! `asyncify_context_free`; a task submitted with a context keeps its own
//! reference, so the caller may free its pointer right after `asyncify_submit`.

use std::ffi::{c_char, c_void, CString};
use std::sync::Arc;

use super::table::{asyncify_free_fn, copy_bytes_out, ptr_of};
use super::task::asyncify_work_fn;
use super::{bytes_arg, fail, guard, key_arg, required, required_out, write_out, Fail, FfiResult};
use crate::overrides::{self, Frame, Installed};
use crate::status::*;
use crate::table::{PtrValue, Table, Value};

/// An immutable snapshot of an override table.
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

/// Captures the calling thread's table (what a task submitted now would get;
/// local keys excluded) in O(1). Free it with `asyncify_context_free`.
#[no_mangle]
pub extern "C" fn asyncify_context_capture(out: *mut *mut asyncify_context) -> asyncify_status {
    guard("asyncify_context_capture", || {
        let out = required_out(out, "out")?;
        hand_out(overrides::snapshot(), out)
    })
}

/// A context with no keys.
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

/// A new context: `ctx` with `key` set to a copy of `len` bytes. `ctx` is
/// unchanged and still owned by the caller.
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

/// A new context: `ctx` with `key` set to the opaque pointer `ptr`, which the
/// contexts and tables holding it own from now on (`release`, nullable, is
/// called once when the last one is gone). On error the caller keeps `ptr`.
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

/// A new context: `ctx` without `key` (equal to `ctx` when the key is absent).
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

/// Runs `fn(arg)` on the calling thread with `ctx` installed as its table
/// (as a task would see it), then restores the thread's own table. Returns
/// `OK` or `FAILED` as the function did; `out_result` and `out_code` are
/// nullable. The result is the caller's.
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

/// Frees a context pointer. Values it held are released when no other
/// context, table or task holds them.
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

/// Like `asyncify_override_get`, reading `ctx` instead of the calling
/// thread's table (the global layer is not consulted): copies the bytes value
/// of `key` to `buf` and its length to `*out_len`; `ASYNCIFY_E_NOT_FOUND`
/// when absent, `ASYNCIFY_E_BUFFER_TOO_SMALL` (with `*out_len` set) when it
/// does not fit, `ASYNCIFY_E_INVALID_ARGUMENT` for a pointer value. (Since 0.2.)
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

/// Like `asyncify_override_get_ptr`, reading `ctx`: writes the pointer value
/// of `key` to `*out`. It stays valid while `ctx` (or another holder) keeps
/// the value. (Since 0.2.)
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

/// Like `asyncify_context_get_ptr`, and also writes the value's release
/// function (NULL if none) to `*out_release`. (Since 0.2.)
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

/// Writes the number of keys in `ctx` to `*out`. (Since 0.2.)
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

/// Called by `asyncify_context_visit` once per key: `key` is NUL-terminated
/// and `key_len` bytes long; a bytes value is `len` bytes at `value`, a
/// pointer value (`is_ptr` 1) is `value` itself with `len` 0. Everything
/// passed is valid only during the call. Return non-zero to stop.
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
/// lock held (a context never changes, so `fn` may use the library freely),
/// until `fn` returns non-zero. (Since 0.2.)
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
