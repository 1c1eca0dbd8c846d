//! Contexts: snapshots of a table as values (contract 6.2).
//!
//! A context is immutable and reference-counted inside: `with`/`without`
//! return a new context in O(log n) and leave the old one unchanged (like
//! Python's `contextvars`). Each context pointer is owned by the caller until
//! `asyncify_context_free`; a task submitted with a context keeps its own
//! reference, so the caller may free its pointer right after `asyncify_submit`.

use std::ffi::{c_char, c_void};
use std::sync::Arc;

use super::table::asyncify_free_fn;
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
