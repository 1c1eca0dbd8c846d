//! Status text, the per-thread last error, and the version.

use std::ffi::c_char;

use super::{guard_value, write_out, LAST_ERROR};
use crate::status::*;

/// The version of the library loaded at run time.
///
/// A program built against a newer minor version's header may call functions an
/// older library lacks; comparing this with the header's `ASYNCIFY_VERSION_*`
/// macros tells which library it runs with.
///
/// @return `"MAJOR.MINOR.PATCH"`, equal to `ASYNCIFY_VERSION_STRING` of the
/// header the library was built with: a static string, never NULL, not to be
/// freed. This function cannot fail.
#[no_mangle]
pub extern "C" fn asyncify_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const c_char
}

/// The fixed text of a status code, for messages and logs.
///
/// @param s Any value, known to this library or not.
/// @return A static NUL-terminated text such as `"ASYNCIFY_E_NULL: a required
/// pointer was NULL"`, or `"unknown asyncify status"` for a value this library
/// does not know: never NULL, not to be freed. This function cannot fail and
/// leaves the thread's last error alone.
#[no_mangle]
pub extern "C" fn asyncify_status_str(s: asyncify_status) -> *const c_char {
    describe(s).as_ptr()
}

/// Copies the calling thread's last error message into `buf`.
///
/// Each thread has its own message: that of the latest call on this thread that
/// returned an error (`< 0`), such as `"asyncify_release: the handle is zero,
/// unknown, released or stale"`. Successful calls leave it alone, and so does
/// this function, even when it fails. Read it right after the failing call: a
/// later failing call on this thread replaces it, including one made by a
/// callback that the library runs on this thread.
///
/// @param buf Where the NUL-terminated message goes; NULL is allowed with `cap`
/// 0, a size query.
/// @param cap The size of `buf` in bytes.
/// @param out_len Nullable: receives the size of the message, terminator
/// included (also with `ASYNCIFY_E_BUFFER_TOO_SMALL`). It is 1, an empty
/// message, when no call on this thread has failed yet.
/// @retval ASYNCIFY_OK The message was copied.
/// @retval ASYNCIFY_E_BUFFER_TOO_SMALL `cap` is below the size needed, which
/// `*out_len` then holds; a size query (`buf` NULL, `cap` 0) returns this.
/// @retval ASYNCIFY_E_NULL `buf` is NULL while `cap` is large enough.
/// @retval ASYNCIFY_E_PANIC An internal error.
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
