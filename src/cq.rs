//! Completion queues: tasks deliver their completions here instead of to a
//! callback, and an event loop learns of many of them with one wake-up.
//!
//! The queue's descriptor (an eventfd, or a pipe where there is none) is
//! made readable when the queue goes from empty to non-empty, and unreadable
//! when a drain empties it, both under the queue's lock, so it is readable
//! exactly while completions wait. A drain that leaves completions behind
//! raises it again: an edge-triggered loop that drains in batches gets a new
//! edge for the rest instead of stalling. A task publishes its status and moves its result into the record
//! under the queue's lock (the task's state word changes under it), so a record is in
//! the queue exactly when its task is terminal.
//!
//! Closing (`asyncify_cq_free`) is safe with tasks still pointing at the
//! queue: later completions stay on their handles, and the results of
//! records nobody drained go to their `free_result`.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::sys::{Signal, UnaryFn};

/// One completion, as `asyncify_completion` reports it.
#[derive(Debug, Clone, Copy)]
pub struct Completion {
    /// The task's handle (already invalid for a detached task).
    pub handle: u64,
    /// `OK`, `FAILED` or `CANCELLED`.
    pub status: i32,
    /// The work function's return value.
    pub code: i32,
    /// The result, moved into the record (0 when none).
    pub result: usize,
    /// The task's `on_done_data`.
    pub user_data: usize,
    pub(crate) free_result: Option<UnaryFn>,
}

struct State {
    items: VecDeque<Completion>,
    /// None once the queue is closed.
    signal: Option<Signal>,
    waiters: u32,
}

/// A queue of completions with a pollable file descriptor.
pub struct CompletionQueue {
    state: Mutex<State>,
    ready: Condvar,
    fd: RawFd,
}

/// Why a wait on a queue ended without a completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitEnd {
    /// The time ran out.
    Timeout,
    /// The queue was closed.
    Closed,
}

impl CompletionQueue {
    /// A new, empty queue.
    pub fn new() -> io::Result<CompletionQueue> {
        let signal = Signal::new()?;
        Ok(CompletionQueue {
            fd: signal.fd(),
            state: Mutex::new(State {
                items: VecDeque::new(),
                signal: Some(signal),
                waiters: 0,
            }),
            ready: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No user code runs under this lock, so its data stays consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The descriptor that is readable while completions wait.
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// Under the queue's lock, asks `make` for a record and appends it.
    /// Returns `None` (without calling `make`) once the queue is closed.
    pub(crate) fn push_with<R>(&self, make: impl FnOnce() -> (Completion, R)) -> Option<R> {
        let mut st = self.lock();
        let signal = st.signal.as_ref()?;
        let was_empty = st.items.is_empty();
        if was_empty {
            signal.raise();
        }
        let (record, extra) = make();
        st.items.push_back(record);
        if st.waiters > 0 {
            self.ready.notify_all();
        }
        Some(extra)
    }

    /// Waits until a completion is ready.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<(), WaitEnd> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut st = self.lock();
        st.waiters += 1;
        let end = loop {
            if st.signal.is_none() {
                break Err(WaitEnd::Closed);
            }
            if !st.items.is_empty() {
                break Ok(());
            }
            st = match deadline {
                None => self.ready.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        break Err(WaitEnd::Timeout);
                    }
                    self.ready
                        .wait_timeout(st, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        };
        st.waiters -= 1;
        end
    }

    /// Moves up to `max` completions, oldest first, to `sink`; never blocks.
    pub fn drain(&self, max: usize, mut sink: impl FnMut(Completion)) -> usize {
        let mut st = self.lock();
        let n = max.min(st.items.len());
        for record in st.items.drain(..n) {
            sink(record);
        }
        if let (true, Some(signal)) = (n > 0, &st.signal) {
            signal.clear();
            if !st.items.is_empty() {
                // Still readable, and a new edge for edge-triggered loops.
                signal.raise();
            }
        }
        n
    }

    /// Closes the queue: later completions stay on their handles. Returns the
    /// undrained records, whose results the caller frees.
    pub fn close(&self) -> Vec<Completion> {
        let mut st = self.lock();
        st.signal = None;
        self.ready.notify_all();
        st.items.drain(..).collect()
    }
}

impl Completion {
    /// Frees the record's result with the task's `free_result` (no one will
    /// receive it).
    pub fn free_result(self) {
        if let (Some(f), false) = (self.free_result, self.result == 0) {
            f(self.result as *mut std::ffi::c_void);
        }
    }
}
