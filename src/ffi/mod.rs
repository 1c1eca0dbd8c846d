//! The C ABI. Every exported function is an ordinary `extern "C"` body that
//! hands its work to [`guard`], which turns an error into a status code plus a
//! message for `asyncify_last_error`, and a panic into `ASYNCIFY_E_PANIC`.
//! This module owns every raw-pointer conversion of the crate; each `unsafe`
//! block states the caller's promise it relies on.
//!
//! Conventions, for every function (see the README, "API conventions"):
//! - the return value is an `asyncify_status`: `>= 0` an outcome, `< 0` an error;
//! - a required pointer that is NULL gives `ASYNCIFY_E_NULL`;
//! - output pointers are written only when the status is `>= 0` (except
//!   `*out_len` with `ASYNCIFY_E_BUFFER_TOO_SMALL`);
//! - the library never calls a free or release function with NULL.

#![allow(non_camel_case_types)]
// The C ABI is raw pointers by nature: this module and its children are where
// the crate's `unsafe` lives (with the platform calls of `sys`).
#![allow(unsafe_code)]

use std::any::Any;
use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::status::*;

// cbindgen reads these modules in declaration order, and that order is the
// reading order of the functions in include/asyncify.h: conventions (status
// text, last error, version), the override table, submit and completion,
// pools, limiters, contexts, completion queues, then the global layer. The blank lines
// keep rustfmt from sorting them.
pub mod error;

pub mod overrides;

pub mod task_abi;

pub mod task;

pub mod pool;

pub mod limiter;

pub mod context;

pub mod cq;

pub mod global;

/// An error on its way to the caller: a status and the text for
/// `asyncify_last_error`.
pub(crate) struct Fail {
    status: asyncify_status,
    message: String,
}

pub(crate) type FfiResult = Result<asyncify_status, Fail>;

pub(crate) fn fail(status: asyncify_status, message: impl Into<String>) -> Fail {
    Fail {
        status,
        message: message.into(),
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        let message = match e {
            Error::InvalidHandle => "the handle is zero, unknown, released or stale",
            Error::Forked => "the handle was made by the parent process before fork()",
            Error::ShutDown => "the pool is shut down",
            Error::Busy => "the pool's queue is full",
            Error::WouldDeadlock => "this call would wait for itself",
            Error::OutOfMemory => "out of memory or out of handle slots",
            Error::NoWorkerThread => {
                "no worker thread could be started (a thread or memory limit) and the pool has none"
            }
        };
        fail(e.status(), message)
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(function: &str, message: &str) {
    let text = format!("{function}: {message}").replace('\0', " ");
    let text = CString::new(text).unwrap_or_default();
    let _ = LAST_ERROR.try_with(|e| *e.borrow_mut() = text);
}

fn panic_text(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic")
}

/// Runs the body of the exported function `function`: an `Err` becomes its
/// status and message, a panic becomes `ASYNCIFY_E_PANIC`.
pub(crate) fn guard(function: &str, body: impl FnOnce() -> FfiResult) -> asyncify_status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(status)) => status,
        Ok(Err(f)) => {
            set_last_error(function, &f.message);
            f.status
        }
        Err(payload) => {
            set_last_error(
                function,
                &format!(
                    "internal error (please report it): {}",
                    panic_text(&*payload)
                ),
            );
            ASYNCIFY_E_PANIC
        }
    }
}

/// Like [`guard`] for the few functions that return a value other than a
/// status: a panic gives `fallback`.
pub(crate) fn guard_value<T>(function: &str, fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|payload| {
        set_last_error(
            function,
            &format!(
                "internal error (please report it): {}",
                panic_text(&*payload)
            ),
        );
        fallback
    })
}

/// A required pointer: `ASYNCIFY_E_NULL` naming `what` when NULL.
pub(crate) fn required<T>(ptr: *const T, what: &str) -> Result<*const T, Fail> {
    if ptr.is_null() {
        Err(fail(ASYNCIFY_E_NULL, format!("{what} is NULL")))
    } else {
        Ok(ptr)
    }
}

/// A required output pointer.
pub(crate) fn required_out<T>(ptr: *mut T, what: &str) -> Result<*mut T, Fail> {
    required(ptr as *const T, what).map(|p| p as *mut T)
}

/// Writes `value` to an output pointer the caller promised is valid.
pub(crate) fn write_out<T>(out: *mut T, value: T) {
    if !out.is_null() {
        // SAFETY: every caller passes an output pointer that the C caller
        // promised points to writable memory for a T (the ABI's contract);
        // NULL was ruled out above.
        unsafe { out.write(value) };
    }
}

/// A key: non-NULL, non-empty, UTF-8.
pub(crate) fn key_arg<'a>(key: *const c_char) -> Result<&'a str, Fail> {
    let key = required(key, "key")?;
    // SAFETY: the caller promises `key` is a NUL-terminated string that stays
    // valid for the duration of the call.
    let bytes = unsafe { CStr::from_ptr(key) };
    let key = bytes
        .to_str()
        .map_err(|_| fail(ASYNCIFY_E_INVALID_ARGUMENT, "key is not valid UTF-8"))?;
    if key.is_empty() {
        return Err(fail(ASYNCIFY_E_INVALID_ARGUMENT, "key is empty"));
    }
    Ok(key)
}

/// `len` bytes at `ptr` (NULL allowed when `len` is 0), borrowed for the call.
pub(crate) fn bytes_arg<'a>(ptr: *const u8, len: usize, what: &str) -> Result<&'a [u8], Fail> {
    if len == 0 {
        return Ok(&[]);
    }
    let ptr = required(ptr, what)?;
    // SAFETY: the caller promises `len` readable bytes at `ptr` for the call.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// A versioned input struct: `#[repr(C)]`, its first field a `u32
/// struct_size`, new fields only ever appended, and every field's default its
/// all-zero value (NULL, 0, no function).
///
/// # Safety
/// An all-zero `Self` is valid, so is any value a C caller can store in its
/// fields (integers, floats, raw pointers, nullable function pointers), and
/// `LAYOUT_ENDS` are true offsets of `Self`.
pub(crate) unsafe trait Versioned: Copy {
    /// The struct's name in messages.
    const NAME: &'static str;
    /// Where the last field of each published layout ends, oldest first; the
    /// last entry is the end of the current layout's last field.
    const LAYOUT_ENDS: &'static [usize];
}

/// A nullable versioned input struct. A caller built against an older
/// header passes that layout's size: the fields it has are read, the others
/// keep their defaults (a copy is made then). The size counts up to the end
/// of the last field it covers (tail padding may be there or not); every
/// byte past the fields read must be zero, so a field this library does not
/// know is never silently ignored. The struct is read in place when it is
/// this library's own layout, aligned (the common case), else copied into
/// `spare`.
pub(crate) fn versioned_arg<T: Versioned>(
    ptr: *const T,
    spare: &mut Option<T>,
) -> Result<Option<&T>, Fail> {
    if ptr.is_null() {
        return Ok(None);
    }
    let bytes = ptr as *const u8;
    // SAFETY: the caller promises a valid struct whose first field is its
    // size, with `struct_size` readable bytes.
    let size = unsafe { (bytes as *const u32).read_unaligned() } as usize;
    let end = *T::LAYOUT_ENDS.last().expect("a published layout");
    if size == std::mem::size_of::<T>() {
        // The layout of this library's own header: used as it is, once the
        // bytes after the last field (where a later header could have put a
        // field) are checked to be zero.
        // SAFETY: `size` readable bytes at `ptr`, as promised.
        let padding = unsafe { std::slice::from_raw_parts(bytes.add(end), size - end) };
        if padding.iter().all(|&b| b == 0) {
            return Ok(Some(if ptr.is_aligned() {
                // SAFETY: as above, and aligned; every field type of a
                // `Versioned` struct is valid for any bit pattern it can hold
                // (the trait's promise); the caller keeps it for the call.
                unsafe { &*ptr }
            } else {
                // SAFETY: as above, read byte-wise.
                spare.insert(unsafe { ptr.read_unaligned() })
            }));
        }
    }
    let Some(&covered) = T::LAYOUT_ENDS.iter().rev().find(|&&end| end <= size) else {
        return Err(fail(
            ASYNCIFY_E_INVALID_ARGUMENT,
            format!(
                "{}.struct_size is {size}, at least {} expected (use the _init function)",
                T::NAME,
                T::LAYOUT_ENDS[0]
            ),
        ));
    };
    // SAFETY: as above: `size >= covered` readable bytes at `ptr`.
    let tail = unsafe { std::slice::from_raw_parts(bytes.add(covered), size - covered) };
    if tail.iter().any(|&b| b != 0) {
        return Err(fail(
            ASYNCIFY_E_INVALID_ARGUMENT,
            format!(
                "{} has non-zero bytes beyond the {covered} this library reads",
                T::NAME
            ),
        ));
    }
    // SAFETY: an all-zero `T` is valid (the trait's promise).
    let mut out: T = unsafe { std::mem::zeroed() };
    // SAFETY: `covered` bytes are readable at `ptr` and fit in `T` (it is at
    // most the end of `T`'s last field); `out` is a distinct local.
    unsafe { std::ptr::copy_nonoverlapping(bytes, &mut out as *mut T as *mut u8, covered) };
    Ok(Some(spare.insert(out)))
}

/// Prepares a versioned struct: zeroes its `size` bytes and sets
/// `struct_size`. `size` may be the size of an older published layout (a
/// program built against an older header), never less.
///
/// # Safety
/// `ptr` is non-NULL and points to `size` writable bytes.
pub(crate) unsafe fn init_struct<T: Versioned>(ptr: *mut T, size: usize) -> FfiResult {
    let least = T::LAYOUT_ENDS[0];
    if size < least || size > u32::MAX as usize {
        return Err(fail(
            ASYNCIFY_E_INVALID_ARGUMENT,
            format!(
                "size {size} is not a valid size for {} (at least {least}); pass sizeof(*opts)",
                T::NAME
            ),
        ));
    }
    // SAFETY: the caller promises `size` writable bytes at `ptr`.
    unsafe {
        std::ptr::write_bytes(ptr as *mut u8, 0, size);
        (ptr as *mut u32).write_unaligned(size as u32);
    }
    Ok(ASYNCIFY_OK)
}

/// Writes `value` to a versioned output struct (its first field a `u32
/// struct_size`): `min(out->struct_size, sizeof(T))` bytes, with `struct_size`
/// set to the bytes filled, so a caller built with an older, shorter struct
/// gets the fields it knows.
pub(crate) fn write_versioned_out<T: Copy>(out: *mut T, mut value: T, what: &str) -> FfiResult {
    // SAFETY: the caller promises a writable struct of at least `struct_size`
    // bytes at `out` (checked non-NULL), whose first field is `struct_size`.
    let size = unsafe { (out as *const u32).read_unaligned() } as usize;
    if size < 4 {
        return Err(fail(
            ASYNCIFY_E_INVALID_ARGUMENT,
            format!("out->struct_size is {size}: set it to sizeof({what})"),
        ));
    }
    let filled = size.min(std::mem::size_of::<T>());
    // SAFETY: `value` is a local T whose first field is a u32.
    unsafe { (&mut value as *mut T as *mut u32).write_unaligned(filled as u32) };
    // SAFETY: `filled` bytes fit both `value` and the caller's struct.
    unsafe {
        std::ptr::copy_nonoverlapping(&value as *const T as *const u8, out as *mut u8, filled)
    };
    Ok(ASYNCIFY_OK)
}

/// `timeout_ms < 0` is forever.
pub(crate) fn timeout_arg(timeout_ms: i64) -> Option<std::time::Duration> {
    u64::try_from(timeout_ms)
        .ok()
        .map(std::time::Duration::from_millis)
}
