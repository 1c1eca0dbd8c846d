//! Completion queues (contract 6.3): a task submitted with a `cq` and no
//! `on_done` delivers its completion, result included, into the queue. An
//! event loop watches `asyncify_cq_fd` (readable while completions wait) and
//! drains many completions per wake-up.
//!
//! Do not read the fd yourself: `asyncify_cq_drain` makes it unreadable once
//! the queue is empty. Unregister it from your loop before
//! `asyncify_cq_free`, which closes it.

use std::ffi::c_void;
use std::sync::Arc;

use super::task::asyncify_handle;
use super::{fail, guard, required_out, timeout_arg, write_out, Fail};
use crate::cq::{CompletionQueue, WaitEnd};
use crate::status::*;

/// A completion queue.
pub struct asyncify_cq {
    pub(crate) queue: Arc<CompletionQueue>,
}

/// One completion drained from a queue.
#[repr(C)]
pub struct asyncify_completion {
    /// The task's handle (still to be released, unless the task was detached).
    pub handle: asyncify_handle,
    /// `ASYNCIFY_OK`, `ASYNCIFY_FAILED` or `ASYNCIFY_CANCELLED`.
    pub status: asyncify_status,
    /// The work function's return value.
    pub code: i32,
    /// The result, now yours (NULL when none).
    pub result: *mut c_void,
    /// The task's `on_done_data`.
    pub user_data: *mut c_void,
}

/// The queue behind a non-NULL pointer.
pub(crate) fn queue_ref<'a>(cq: *const asyncify_cq) -> Result<&'a Arc<CompletionQueue>, Fail> {
    let cq = super::required(cq, "cq")?;
    // SAFETY: a non-NULL queue pointer came from `asyncify_cq_new` and has not
    // been freed (the caller's promise, as with `free()`).
    Ok(unsafe { &(*cq).queue })
}

/// Creates a completion queue. Free it with `asyncify_cq_free`.
#[no_mangle]
pub extern "C" fn asyncify_cq_new(out: *mut *mut asyncify_cq) -> asyncify_status {
    guard("asyncify_cq_new", || {
        let out = required_out(out, "out")?;
        let queue = CompletionQueue::new().map_err(|e| {
            fail(
                ASYNCIFY_E_OUT_OF_MEMORY,
                format!("cannot create an eventfd: {e}"),
            )
        })?;
        let cq = Box::new(asyncify_cq {
            queue: Arc::new(queue),
        });
        write_out(out, Box::into_raw(cq));
        Ok(ASYNCIFY_OK)
    })
}

/// Writes the queue's file descriptor to `*out_fd`: readable while
/// completions wait (for poll/epoll/`loop.add_reader`/`uv_poll`). Owned by the
/// queue; do not read or close it.
#[no_mangle]
pub extern "C" fn asyncify_cq_fd(cq: *const asyncify_cq, out_fd: *mut i32) -> asyncify_status {
    guard("asyncify_cq_fd", || {
        let queue = queue_ref(cq)?;
        let out_fd = required_out(out_fd, "out_fd")?;
        write_out(out_fd, queue.fd());
        Ok(ASYNCIFY_OK)
    })
}

/// Waits until at least one completion is ready (`OK`) or `timeout_ms` (< 0:
/// forever) runs out (`TIMEOUT`). Does not drain. `ASYNCIFY_E_SHUT_DOWN` when
/// the queue is freed meanwhile from another thread.
#[no_mangle]
pub extern "C" fn asyncify_cq_wait(cq: *mut asyncify_cq, timeout_ms: i64) -> asyncify_status {
    guard("asyncify_cq_wait", || {
        let queue = queue_ref(cq)?.clone();
        match queue.wait(timeout_arg(timeout_ms)) {
            Ok(()) => Ok(ASYNCIFY_OK),
            Err(WaitEnd::Timeout) => Ok(ASYNCIFY_TIMEOUT),
            Err(WaitEnd::Closed) => Err(fail(ASYNCIFY_E_SHUT_DOWN, "the queue was freed")),
        }
    })
}

/// Moves up to `cap` completions, oldest first, into `out[0..*out_n]`; never
/// blocks (`*out_n` may be 0). Results move to the caller.
#[no_mangle]
pub extern "C" fn asyncify_cq_drain(
    cq: *mut asyncify_cq,
    out: *mut asyncify_completion,
    cap: usize,
    out_n: *mut usize,
) -> asyncify_status {
    guard("asyncify_cq_drain", || {
        let queue = queue_ref(cq)?;
        let out_n = required_out(out_n, "out_n")?;
        let out = if cap == 0 {
            out
        } else {
            required_out(out, "out")?
        };
        let mut i = 0;
        let n = queue.drain(cap, |c| {
            let record = asyncify_completion {
                handle: c.handle,
                status: c.status,
                code: c.code,
                result: c.result as *mut c_void,
                user_data: c.user_data as *mut c_void,
            };
            // SAFETY: the caller promises room for `cap` records at `out`,
            // and the queue hands out at most `cap`.
            unsafe { out.add(i).write(record) };
            i += 1;
        });
        write_out(out_n, n);
        Ok(ASYNCIFY_OK)
    })
}

/// Frees the queue and closes its fd. Tasks still pointing at it keep their
/// later completions on their handles (pollable); results of completions not
/// drained go to their `free_result`.
#[no_mangle]
pub extern "C" fn asyncify_cq_free(cq: *mut asyncify_cq) -> asyncify_status {
    guard("asyncify_cq_free", || {
        let cq = required_out(cq, "cq")?;
        // SAFETY: a non-NULL queue pointer came from `asyncify_cq_new` and is
        // freed here once (the caller's promise).
        let cq = unsafe { Box::from_raw(cq) };
        for record in cq.queue.close() {
            record.free_result();
        }
        Ok(ASYNCIFY_OK)
    })
}
