//! Completion queues: a task submitted with a `cq` and no
//! `on_done` delivers its completion, result included, into the queue. An
//! event loop watches `asyncify_cq_fd` (readable while completions wait) and
//! drains many completions per wake-up.
//!
//! Do not read the fd yourself: `asyncify_cq_drain` makes it unreadable once
//! the queue is empty. Unregister it from your loop before
//! `asyncify_cq_free`, which closes it.

use std::ffi::c_void;
use std::sync::Arc;

use super::task_abi::asyncify_handle;
use super::{fail, guard, required_out, timeout_arg, write_out, Fail};
use crate::cq::{CompletionQueue, WaitEnd};
use crate::status::*;

/// A completion queue: a task submitted with `opts.cq` and no `on_done`
/// delivers its completion, result included, here. An event loop watches its
/// file descriptor (asyncify_cq_fd()) and drains many completions per wake-up
/// (asyncify_cq_drain()). Made by asyncify_cq_new(), the caller's until
/// asyncify_cq_free().
// On a line pair of its own: a submit reads it, and workers may write the
// caller's data beside it (a completion counter): a shared line would cost
// the submitting thread a cache miss per task.
#[repr(align(128))]
pub struct asyncify_cq {
    pub(crate) queue: Arc<CompletionQueue>,
}

/// One completion drained from a queue by asyncify_cq_drain(). It has no
/// `struct_size`, so it cannot grow within a major version.
#[repr(C)]
pub struct asyncify_completion {
    /// The task's handle: still to be released with asyncify_release(), unless the
    /// task was detached (then it is no longer valid).
    pub handle: asyncify_handle,
    /// `ASYNCIFY_OK`, `ASYNCIFY_FAILED`, `ASYNCIFY_CANCELLED` or `ASYNCIFY_EXPIRED`.
    pub status: asyncify_status,
    /// The work function's return value (0 when cancelled).
    pub code: i32,
    /// The task's result, now the caller's (NULL when none, or when cancelled).
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

/// Creates a completion queue with its file descriptor (an eventfd on Linux, a
/// pipe elsewhere).
///
/// @param out Receives the queue, the caller's until asyncify_cq_free().
/// @retval ASYNCIFY_OK `*out` is set.
/// @retval ASYNCIFY_E_NULL `out` is NULL.
/// @retval ASYNCIFY_E_OUT_OF_MEMORY No eventfd or pipe could be made (out of
/// file descriptors, say).
/// @retval ASYNCIFY_E_PANIC An internal error.
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

/// Gives the queue's file descriptor, for poll, epoll, `loop.add_reader` or
/// `uv_poll`.
///
/// It is readable while completions wait: made readable when the queue goes
/// from empty to non-empty and unreadable once a drain empties it, and a drain
/// that leaves completions behind makes a new wake-up, so an edge-triggered
/// loop that drains in batches never stalls. It belongs to the queue: do not
/// read or close it, and unregister it from the loop before asyncify_cq_free().
///
/// @param cq The queue.
/// @param out_fd Receives the descriptor.
/// @retval ASYNCIFY_OK `*out_fd` is set.
/// @retval ASYNCIFY_E_NULL `cq` or `out_fd` is NULL.
/// @retval ASYNCIFY_E_PANIC An internal error.
#[no_mangle]
pub extern "C" fn asyncify_cq_fd(cq: *const asyncify_cq, out_fd: *mut i32) -> asyncify_status {
    guard("asyncify_cq_fd", || {
        let queue = queue_ref(cq)?;
        let out_fd = required_out(out_fd, "out_fd")?;
        write_out(out_fd, queue.fd());
        Ok(ASYNCIFY_OK)
    })
}

/// Waits until at least one completion is ready, or `timeout_ms` runs out.
/// Does not drain.
///
/// @param cq The queue.
/// @param timeout_ms How long to wait in milliseconds; negative: forever; 0:
/// do not wait.
/// @retval ASYNCIFY_OK A completion is ready.
/// @retval ASYNCIFY_TIMEOUT None came in time.
/// @retval ASYNCIFY_E_SHUT_DOWN The queue was freed meanwhile from another
/// thread.
/// @retval ASYNCIFY_E_NULL `cq` is NULL.
/// @retval ASYNCIFY_E_PANIC An internal error.
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

/// Moves up to `cap` completions, oldest first, into `out`; never blocks.
///
/// Each completion's result is now the caller's, and its handle still needs
/// asyncify_release() unless the task was detached.
///
/// @param cq The queue.
/// @param out Room for `cap` completions; NULL is allowed with `cap` 0.
/// @param cap How many completions `out` holds.
/// @param out_n Receives how many were moved, possibly 0.
/// @retval ASYNCIFY_OK `out[0]` to `out[*out_n - 1]` are filled.
/// @retval ASYNCIFY_E_NULL `cq` or `out_n` is NULL, or `out` is NULL with
/// `cap` above 0.
/// @retval ASYNCIFY_E_PANIC An internal error.
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

/// Frees the queue and closes its file descriptor.
///
/// Tasks still pointing at it are safe: their later completions stay on their
/// handles (for asyncify_poll() and asyncify_wait()). Results of completions
/// not drained go to their task's `free_result` on this thread; their handles
/// still need asyncify_release() unless detached.
///
/// @param cq The queue; do not use it again.
/// @retval ASYNCIFY_OK Freed.
/// @retval ASYNCIFY_E_NULL `cq` is NULL.
/// @retval ASYNCIFY_E_PANIC An internal error.
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
