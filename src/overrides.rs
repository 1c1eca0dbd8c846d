//! What a thread sees: its *frame* (the current table, its local keys, its
//! open scopes) over the process-wide *global layer*.
//!
//! - The frame's `table` is what submitted tasks inherit (an O(1) snapshot).
//! - Keys set with the local flag live in a separate `local` table that is
//!   never snapshotted, so marking keys local costs the snapshot nothing.
//! - Reads look at `local`, then `table`, then the global layer.
//! - The global layer is one table in an `ArcSwap`: a read loads the current
//!   table without a lock and keeps nothing once it has the value; writers
//!   (rare) take a mutex among themselves and swap in a new table.
//! - A global pointer value handed out by a read is *pinned* in the frame: in
//!   a task until the task ends; elsewhere until the thread reads that key
//!   again or changes its table. So the pointer stays valid even if the
//!   global layer drops it meanwhile.
//!
//! User code (release and clone functions) never runs under a borrow of the
//! frame or the global lock: every displaced value is returned out of the
//! borrow and dropped after it.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once};

use arc_swap::ArcSwap;
use once_cell::sync::Lazy;

use crate::local;
use crate::sys::LeakAtExit;
use crate::table::{Table, Value};

/// Why a scope could not be exited.
#[derive(Debug, PartialEq, Eq)]
pub enum ScopeError {
    /// The token is not the innermost open scope of this thread and task.
    Mismatch,
}

struct Scope {
    token: u64,
    table: Table,
    local: Table,
}

/// What a thread or a running task sees. Installing a frame for each task
/// moves it twice, so the parts most frames never use live behind a box.
#[derive(Default)]
pub struct Frame {
    table: Table,
    extra: Option<Box<Extra>>,
}

#[derive(Default)]
struct Extra {
    local: Table,
    scopes: Vec<Scope>,
    pinned: Vec<(Arc<str>, Arc<Value>)>,
}

impl Frame {
    fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    fn local(&self) -> Option<&Table> {
        self.extra.as_ref().map(|e| &e.local)
    }
}

impl Frame {
    /// The frame a task (or `context_run`) starts with: `snapshot` with the
    /// task's own copies of cloneable values, no local keys, no open scope.
    /// Runs clone functions: call it under no lock or borrow.
    pub fn for_task(snapshot: &Table) -> Frame {
        Frame {
            table: snapshot.for_task(),
            extra: None,
        }
    }
}

impl Frame {
    const EMPTY: Frame = Frame {
        table: Table::new(),
        extra: None,
    };

    /// A frame with nothing set (a worker's, almost always).
    fn is_empty(&self) -> bool {
        self.table.is_empty() && self.extra.is_none()
    }
}

thread_local! {
    static CURRENT: LeakAtExit<RefCell<Frame>> =
        const { LeakAtExit::new(RefCell::new(Frame::EMPTY)) };
}

// `local::Cells::frame_used` is false while `CURRENT` is empty (kept by
// [`with_frame`]): then a snapshot or a task's empty table needs no look at
// the frame. A cell with no destructor, so cheaper to reach than `CURRENT`.
// `local::Cells::in_task` is true while a task (or `context_run`) runs on
// this thread, in a frame of its own: global values read then stay pinned
// until it ends.

fn frame_used() -> bool {
    local::with(|c| c.frame_used.get())
}

fn in_task() -> bool {
    local::with(|c| c.in_task.get())
}

static NEXT_SCOPE_TOKEN: AtomicU64 = AtomicU64::new(1);
static GLOBAL: Lazy<ArcSwap<Table>> = Lazy::new(|| ArcSwap::from_pointee(Table::new()));
/// Serializes the writers of `GLOBAL` (each reads, changes and swaps).
static GLOBAL_WRITER: Mutex<()> = Mutex::new(());

/// Runs `f` on this thread's frame. During thread teardown (a release function
/// running from a thread-local destructor) the frame is gone; `f` then sees an
/// empty frame whose changes are dropped.
fn with_frame<R>(f: impl FnOnce(&mut Frame) -> R) -> R {
    let mut f = Some(f);
    let result = CURRENT.try_with(|cell| match cell.try_borrow_mut() {
        Ok(mut frame) => {
            let r = (f.take().expect("called once"))(&mut frame);
            local::with(|c| c.frame_used.set(!frame.is_empty()));
            Some(r)
        }
        Err(_) => None,
    });
    match result {
        Ok(Some(r)) => r,
        _ => (f.take().expect("called once"))(&mut Frame::default()),
    }
}

/// Installs a frame on the calling thread until dropped: then the previous
/// frame is back (on every path, panics included) and the installed one,
/// with whatever the code under it set or left in a scope, is dropped after
/// the borrow, so its release functions may run.
pub struct Installed(SavedFrame);

impl Installed {
    /// Installs `frame`, remembering the current one.
    pub fn new(frame: Frame) -> Installed {
        Installed(SavedFrame {
            saved: Some(with_frame(|current| std::mem::replace(current, frame))),
            was_in_task: local::with(|c| c.in_task.replace(true)),
        })
    }
}

impl Drop for Installed {
    #[inline(always)]
    fn drop(&mut self) {
        self.0.restore();
    }
}

/// What installing a task's frame saved of the thread's, until it is
/// restored: what [`Installed`] holds, and what a task's runner keeps in
/// place and restores itself (so that nothing is moved per task).
#[derive(Default)]
pub struct SavedFrame {
    /// The thread's own frame; None when it was empty (or nothing is
    /// installed).
    saved: Option<Frame>,
    was_in_task: bool,
}

impl SavedFrame {
    /// Installs the frame a task starts with: `snapshot` with the task's own
    /// copies of cloneable values (see [`Table::into_task`], which runs clone
    /// functions: call it under no lock), or an empty table (`None`). Where
    /// that is empty and so is the thread's own frame, as a worker's almost
    /// always is, nothing is saved or moved: restoring leaves an empty frame
    /// again. `self` holds nothing installed (it is new or restored).
    #[inline(always)]
    pub fn install_task(&mut self, snapshot: Option<Table>) {
        debug_assert!(self.saved.is_none(), "nothing installed here yet");
        let table = snapshot.map(Table::into_task);
        let frame_used = local::with(|c| {
            self.was_in_task = c.in_task.replace(true);
            c.frame_used.get()
        });
        match table {
            None if !frame_used => {}
            table => self.saved = SavedFrame::task_on_frame(table.unwrap_or_default()),
        }
    }

    /// [`SavedFrame::install_task`] where the table or the thread's frame
    /// holds something: the thread's frame when it was not empty.
    #[inline(never)]
    fn task_on_frame(table: Table) -> Option<Frame> {
        with_frame(|current| {
            if current.is_empty() {
                current.table = table;
                None
            } else {
                let frame = Frame { table, extra: None };
                Some(std::mem::replace(current, frame))
            }
        })
    }

    /// Puts the thread's own frame back and drops what the code under the
    /// installed one left (after the borrow). Holds nothing installed then.
    #[inline(always)]
    pub fn restore(&mut self) {
        let restored = local::with(|c| {
            let empty = self.saved.is_none() && !c.frame_used.get();
            if empty {
                // Empty before, and the code under it left it empty.
                c.in_task.set(self.was_in_task);
            }
            empty
        });
        if !restored {
            self.restore_frame();
        }
    }

    #[inline(never)]
    fn restore_frame(&mut self) {
        let displaced = with_frame(|current| match self.saved.take() {
            // Back to an empty frame: what the task left in its table goes.
            None if current.extra.is_none() => (std::mem::take(&mut current.table), None),
            saved => {
                let frame = std::mem::replace(current, saved.unwrap_or(Frame::EMPTY));
                (Table::new(), Some(frame))
            }
        });
        local::with(|c| c.in_task.set(self.was_in_task));
        drop(displaced);
    }
}

/// The calling thread's inheritable table: what a task submitted now gets.
#[inline]
pub fn snapshot() -> Table {
    if !frame_used() {
        return Table::new();
    }
    with_frame(|frame| frame.table.clone())
}

/// Changes the thread's table. What the change displaced is returned by
/// `change` and dropped here, after the borrow. Outside tasks, a change of
/// the table also unpins the global values read so far.
fn change<R>(change: impl FnOnce(&mut Frame) -> R) -> R {
    let (result, unpinned) = with_frame(|frame| {
        let result = change(frame);
        let unpinned = match &mut frame.extra {
            Some(extra) if !in_task() => std::mem::take(&mut extra.pinned),
            _ => Vec::new(),
        };
        (result, unpinned)
    });
    drop(unpinned);
    result
}

/// Sets `key` on the calling thread; a `local` key is never copied into
/// submitted tasks. The replaced value drops after the borrow.
pub fn set(key: &str, value: Value, local: bool) {
    let value = Arc::new(value);
    let displaced = change(|frame| {
        if local {
            let moved = frame.table.remove(key);
            (frame.extra().local.insert(key, value), moved)
        } else {
            let moved = frame.extra.as_mut().and_then(|e| e.local.remove(key));
            (frame.table.insert(key, value), moved)
        }
    });
    drop(displaced);
}

/// Reads `key`: the thread's local keys, then its table, then the global
/// layer. A global pointer value is pinned (see the module docs); outside a
/// task, reading a key drops the pin an earlier read of it left.
pub fn get(key: &str) -> Option<Arc<Value>> {
    let (own, unpinned) = with_frame(|frame| {
        let local = frame.local().and_then(|l| l.get(key));
        let own = local.or_else(|| frame.table.get(key)).cloned();
        let unpinned = match &mut frame.extra {
            Some(extra) if !in_task() => {
                let at = extra.pinned.iter().position(|(k, _)| &**k == key);
                at.map(|i| extra.pinned.swap_remove(i))
            }
            _ => None,
        };
        (own, unpinned)
    });
    drop(unpinned);
    if own.is_some() {
        return own;
    }
    let value = GLOBAL.load().get(key).cloned()?;
    if matches!(*value, Value::Ptr(_)) {
        let pin = (Arc::from(key), value.clone());
        with_frame(|frame| frame.extra().pinned.push(pin));
    }
    Some(value)
}

/// Removes `key` from the calling thread's table; false when it was absent.
pub fn remove(key: &str) -> bool {
    let removed = change(|frame| {
        let local = frame.extra.as_mut().and_then(|e| e.local.remove(key));
        let table = frame.table.remove(key);
        (local, table)
    });
    removed.0.is_some() || removed.1.is_some()
}

/// Empties the calling thread's table (open scopes still restore theirs).
pub fn clear() {
    let old = change(|frame| {
        let local = frame.extra.as_mut().map(|e| std::mem::take(&mut e.local));
        (std::mem::take(&mut frame.table), local)
    });
    drop(old);
}

/// Drops everything the calling thread has set (its table, local keys and
/// scopes) and returns once their release functions have: a worker does this
/// before its stop hook, so no value of its own outlives the hook.
pub fn drop_thread_frame() {
    let old = with_frame(std::mem::take);
    drop(old);
}

/// Number of keys in the calling thread's table (the global layer aside).
pub fn count() -> usize {
    with_frame(|frame| frame.table.len() + frame.local().map_or(0, Table::len))
}

/// Remembers the current table and returns a token to restore it with.
pub fn scope_enter() -> u64 {
    let token = NEXT_SCOPE_TOKEN.fetch_add(1, Ordering::Relaxed);
    with_frame(|frame| {
        let scope = Scope {
            token,
            table: frame.table.clone(),
            local: frame.local().cloned().unwrap_or_default(),
        };
        frame.extra().scopes.push(scope);
    });
    token
}

/// Restores the table remembered by `token`, which must be the innermost
/// scope opened on this thread (or in this task) and not yet exited.
pub fn scope_exit(token: u64) -> Result<(), ScopeError> {
    let displaced = change(|frame| {
        let top = frame.extra.as_ref().and_then(|e| e.scopes.last());
        if top.is_none_or(|scope| scope.token != token) {
            return Err(ScopeError::Mismatch);
        }
        let extra = frame.extra();
        let scope = extra.scopes.pop().expect("checked above");
        let local = std::mem::replace(&mut extra.local, scope.local);
        let table = std::mem::replace(&mut frame.table, scope.table);
        Ok((table, local))
    })?;
    drop(displaced);
    Ok(())
}

fn lock_writer() -> MutexGuard<'static, ()> {
    // The guarded data is (); a panic elsewhere cannot leave it inconsistent.
    GLOBAL_WRITER.lock().unwrap_or_else(|e| e.into_inner())
}

/// Applies `change` to a copy of the global table and swaps it in. The old
/// table and whatever the change displaced drop after the writers' lock.
fn global_change<R>(change: impl FnOnce(&mut Table) -> R) -> R {
    static HELD_ACROSS_FORK: Once = Once::new();
    HELD_ACROSS_FORK.call_once(|| crate::fork::hold_across_fork(|| Box::new(lock_writer())));
    let writer = lock_writer();
    let mut table = Table::clone(&GLOBAL.load());
    let result = change(&mut table);
    let old = GLOBAL.swap(Arc::new(table));
    drop(writer);
    drop(old);
    result
}

/// Sets `key` in the global layer: a process-wide default that every thread
/// and running task sees where its own table has no such key.
pub fn global_set(key: &str, value: Value) {
    let replaced = global_change(|global| global.insert(key, Arc::new(value)));
    drop(replaced);
}

/// Removes `key` from the global layer; false when it was absent.
pub fn global_remove(key: &str) -> bool {
    let removed = global_change(|global| global.remove(key));
    removed.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(v: &Value) -> &[u8] {
        v.as_bytes().expect("a bytes value")
    }

    fn b(s: &str) -> Value {
        Value::Bytes(s.as_bytes().into())
    }

    #[test]
    fn scopes_restore_exactly_and_refuse_out_of_order_exit() {
        std::thread::spawn(|| {
            set("k", b("1"), false);
            let outer = scope_enter();
            set("k", b("2"), false);
            let inner = scope_enter();
            set("j", b("3"), true);
            assert_eq!(scope_exit(outer), Err(ScopeError::Mismatch));
            assert_eq!(count(), 2);
            scope_exit(inner).unwrap();
            assert!(get("j").is_none());
            scope_exit(outer).unwrap();
            assert_eq!(bytes(&get("k").unwrap()), b"1");
            assert_eq!(scope_exit(outer), Err(ScopeError::Mismatch));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_new_thread_starts_empty() {
        std::thread::spawn(|| {
            set("parent", b("1"), false);
            let n = std::thread::spawn(count).join().unwrap();
            assert_eq!(n, 0);
            assert!(remove("parent"));
            assert!(!remove("parent"));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn local_keys_are_read_but_never_snapshotted() {
        std::thread::spawn(|| {
            set("shared", b("s"), false);
            set("mine", b("m"), true);
            assert_eq!(count(), 2);
            assert_eq!(bytes(&get("mine").unwrap()), b"m");
            let snap = snapshot();
            assert!(snap.get("mine").is_none());
            assert!(snap.get("shared").is_some());
            // Setting a key the other way moves it.
            set("mine", b("now shared"), false);
            assert!(snapshot().get("mine").is_some());
            assert_eq!(count(), 2);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_task_frame_is_its_own_and_restored_after() {
        std::thread::spawn(|| {
            // An empty thread frame and an empty task table: nothing moves,
            // yet what the task sets goes with it.
            let mut task = SavedFrame::default();
            task.install_task(None);
            assert!(in_task());
            set("in-task", b("t"), false);
            assert_eq!(count(), 1);
            task.restore();
            assert!(!in_task());
            assert_eq!(count(), 0);
            assert!(snapshot().is_empty());
            // A thread with a table of its own gets it back after a task
            // that started empty.
            set("own", b("o"), false);
            task.install_task(None);
            assert_eq!(count(), 0);
            assert!(get("own").is_none());
            task.restore();
            assert_eq!(bytes(&get("own").unwrap()), b"o");
            assert_eq!(count(), 1);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn the_global_layer_is_read_through_and_live() {
        std::thread::spawn(|| {
            global_set("g-test", b("1"));
            assert_eq!(bytes(&get("g-test").unwrap()), b"1");
            set("g-test", b("own"), false);
            assert_eq!(bytes(&get("g-test").unwrap()), b"own");
            remove("g-test");
            global_set("g-test", b("2"));
            assert_eq!(bytes(&get("g-test").unwrap()), b"2");
            assert_eq!(count(), 0, "the global layer is not the thread's table");
            assert!(global_remove("g-test"));
            assert!(get("g-test").is_none());
            assert!(!global_remove("g-test"));
        })
        .join()
        .unwrap();
    }
}
