//! Status text, the per-thread last error, and the version.

use std::ffi::c_char;

use super::{guard_value, write_out, LAST_ERROR};
use crate::status::*;

/// The library's version, `"MAJOR.MINOR.PATCH"`; equals `ASYNCIFY_VERSION_STRING`
/// of the header it was built with. Static; never NULL.
#[no_mangle]
pub extern "C" fn asyncify_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const c_char
}

/// The fixed text of a status code. Never NULL, also for unknown values; the
/// text is static and must not be freed.
#[no_mangle]
pub extern "C" fn asyncify_status_str(s: asyncify_status) -> *const c_char {
    describe(s).as_ptr()
}

/// Copies the calling thread's last error message (NUL-terminated) into
/// `buf`. `*out_len` (nullable) receives the size needed, terminator included.
/// `buf` may be NULL when `cap` is 0 (a size query). Returns
/// `ASYNCIFY_E_BUFFER_TOO_SMALL` when `cap` is smaller than the size needed.
/// The message is empty when no call on this thread has failed yet. This
/// function never changes the stored message, even when it fails.
#[no_mangle]
pub extern "C" fn asyncify_last_error(
    buf: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> asyncify_status {
    guard_value("asyncify_last_error", ASYNCIFY_E_PANIC, || {
        let message = LAST_ERROR
            .try_with(|e| e.borrow().clone())
            .unwrap_or_default();
        let text = message.as_bytes_with_nul();
        let needed = text.len();
        if cap < needed {
            write_out(out_len, needed);
            return ASYNCIFY_E_BUFFER_TOO_SMALL;
        }
        if buf.is_null() {
            return ASYNCIFY_E_NULL;
        }
        // SAFETY: `buf` is non-NULL and the caller promises `cap >= needed`
        // writable bytes there.
        unsafe { std::ptr::copy_nonoverlapping(text.as_ptr(), buf as *mut u8, needed) };
        write_out(out_len, needed);
        ASYNCIFY_OK
    })
}
