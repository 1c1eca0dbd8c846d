//! `fork()` safety.
//!
//! The default pool is chosen by the fork epoch (see `handles::fork_epoch`),
//! and handles carry it: the child bumps it, so it starts with a fresh default
//! pool and the parent's handles are refused with `ASYNCIFY_E_FORKED`. The
//! child never uses the parent's pools (a free task slot it reuses may drop
//! the last reference to one, or to a limiter, which takes no lock and runs
//! nothing), and the task slab takes no lock,
//! so a lock a parent thread held at the fork cannot hang it. The
//! process-wide locks the child does keep using (the global layer's, and
//! `wait_any`'s) are taken before the fork and released after it on both
//! sides, as `pthread_atfork` intends. The calling thread keeps its table.
//!
//! Pools, limiters and completion queues made by the parent must not be used
//! in the child (their workers and the timer thread do not exist there, and
//! their locks may have been held by one of them at the fork).

use std::any::Any;
use std::cell::RefCell;
use std::sync::{Mutex, Once};

use crate::handles::bump_fork_epoch;

/// Takes a process-wide lock for the forking thread to hold across `fork()`;
/// dropping what it returns releases the lock.
pub(crate) type Holder = fn() -> Box<dyn Any>;

/// The locks to hold across a fork, registered by the modules that own them
/// (this module stays a leaf: it calls them without knowing them).
static HOLDERS: Mutex<Vec<Holder>> = Mutex::new(Vec::new());

thread_local! {
    /// The locks held across a fork by the forking thread.
    static HELD: RefCell<Vec<Box<dyn Any>>> = const { RefCell::new(Vec::new()) };
}

/// Registers the fork handlers once; called wherever process-wide state is
/// first created.
pub(crate) fn watch() {
    static REGISTERED: Once = Once::new();
    REGISTERED.call_once(|| {
        // Without the handlers a fork can still hang a child; there is
        // nothing better to do than go on, as before this library existed.
        let _ = crate::sys::at_fork(prepare, parent, child);
    });
}

/// Has `holder`'s lock held across every later `fork()` (call it once per
/// lock, e.g. under a `Once`).
pub(crate) fn hold_across_fork(holder: Holder) {
    watch();
    HOLDERS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(holder);
}

extern "C" fn prepare() {
    let holders = HOLDERS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let held: Vec<Box<dyn Any>> = holders.into_iter().map(|hold| hold()).collect();
    HELD.with(|h| h.borrow_mut().extend(held));
}

extern "C" fn parent() {
    let held = HELD.with(|h| std::mem::take(&mut *h.borrow_mut()));
    drop(held);
}

extern "C" fn child() {
    bump_fork_epoch();
    let held = HELD.with(|h| std::mem::take(&mut *h.borrow_mut()));
    drop(held);
}
