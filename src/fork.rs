//! `fork()` safety (contract 6.4).
//!
//! The task registry and the default pool are chosen by the fork epoch (see
//! `handles::fork_epoch`): the child bumps it, so it starts with a fresh
//! registry and a fresh default pool, and the parent's handles are refused
//! with `ASYNCIFY_E_FORKED`. The child never touches the parent's registry or
//! pools, so a lock a parent thread held at the fork cannot hang it. The
//! process-wide locks the child does keep using (the global layer's, and
//! `wait_any`'s) are taken before the fork and released after it on both
//! sides, as `pthread_atfork` intends. The calling thread keeps its table.
//!
//! Pools and completion queues made by the parent must not be used in the
//! child (their workers do not exist there).

use std::any::Any;
use std::cell::RefCell;
use std::sync::Once;

use crate::handles::bump_fork_epoch;

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

extern "C" fn prepare() {
    let global: Box<dyn Any> = Box::new(crate::overrides::hold_global_for_fork());
    let wait_any: Box<dyn Any> = Box::new(crate::task::hold_wait_any_for_fork());
    HELD.with(|h| h.borrow_mut().extend([global, wait_any]));
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
