//! The per-thread cells that a task's submit, start and end read and write,
//! together in one thread-local.
//!
//! In a shared library (`libasyncify.so`, which the Python binding loads too)
//! a thread-local is reached through a call to `__tls_get_addr`, one per
//! thread-local and function; linked into a program, it is one load. These
//! cells were eight thread-locals of `sys`, `overrides` and `task`; together,
//! a function reaches all of them with one call. W1 through the shared
//! library went from 15 such calls per task to 11, and from 1,033 to 962
//! instructions per task. (The counters' part indexes in `shard` and the
//! slab's chain in `task` keep their own: moving the indexes here made the
//! compiler stop inlining the submit's slot taking, at 20 more instructions
//! per task where the library is linked statically.)
//!
//! Each cell belongs to the module its doc names, which alone reads and
//! writes it. None has a destructor, so every cell is there as long as its
//! thread (thread-local destructors included).

use std::cell::Cell;

/// A thread's cells (see the module docs).
pub(crate) struct Cells {
    /// `sys`: the thread runs engine code between its foreign calls.
    pub(crate) in_engine_step: Cell<bool>,
    /// `sys`: how many calls the thread's start routine has deferred.
    pub(crate) deferred_len: Cell<usize>,
    /// `sys`: the thread is inside a foreign call (if it ends now, it was
    /// ended from there: `pthread_exit`).
    pub(crate) in_foreign_call: Cell<bool>,
    /// `sys`: the thread has made its last call into user code (its stop
    /// hook).
    pub(crate) retired: Cell<bool>,
    /// `overrides`: the thread's frame is not empty.
    pub(crate) frame_used: Cell<bool>,
    /// `overrides`: a task (or `context_run`) runs on the thread.
    pub(crate) in_task: Cell<bool>,
    /// `task`: the slot index + 1 of the task whose callable the thread
    /// runs (0: none).
    pub(crate) current_task: Cell<u32>,
    /// `task`: the address of the task whose `on_done` the thread runs (0:
    /// none).
    pub(crate) reporting: Cell<usize>,
}

thread_local! {
    static CELLS: Cells = const {
        Cells {
            in_engine_step: Cell::new(false),
            deferred_len: Cell::new(0),
            in_foreign_call: Cell::new(false),
            retired: Cell::new(false),
            frame_used: Cell::new(false),
            in_task: Cell::new(false),
            current_task: Cell::new(0),
            reporting: Cell::new(0),
        }
    };
}

/// `f` on the calling thread's cells.
#[inline(always)]
pub(crate) fn with<R>(f: impl FnOnce(&Cells) -> R) -> R {
    CELLS.with(f)
}
