//! The override table as a value: an immutable, persistent map from key to
//! [`Value`]. (Which table a thread sees is `overrides`' business.)
//!
//! A [`Table`] is a treap whose nodes live behind `Arc`: cloning a table (a
//! *snapshot*) is one reference-count increment, whatever its size, and
//! changing a key copies only the O(log n) nodes on the path to it. While a
//! table is not shared, changes reuse its nodes in place (`Arc::make_mut`),
//! so a thread that sets many keys with no snapshot alive allocates only the
//! new entries. Node priorities come from a hash of the key, so the shape of a
//! table depends only on its keys, never on the order they were set in.
//!
//! Entries whose pointer value has a clone function are also kept in a second
//! treap, so a task's install step finds them in O(clones), not O(n).
//!
//! User code runs only when a [`Value`] is dropped (a pointer value's release
//! function) or duplicated for a task (its clone function); callers arrange
//! that neither happens under a lock or a borrow.

use std::cmp::Ordering;
use std::collections::hash_map::RandomState;
use std::ffi::c_void;
use std::hash::BuildHasher;
use std::sync::Arc;

use once_cell::sync::Lazy;

/// A release function for a pointer value (`asyncify_free_fn`).
pub type ReleaseFn = extern "C" fn(*mut c_void);
/// Makes a task's own copy of a pointer value (`asyncify_clone_fn`).
pub type CloneFn = extern "C" fn(*mut c_void) -> *mut c_void;

/// A value in a table: bytes copied in, or an opaque pointer that the table
/// releases exactly once when the last table holding it is gone.
#[derive(Debug)]
pub enum Value {
    /// Bytes, copied when set.
    Bytes(Box<[u8]>),
    /// An opaque pointer and the function that releases it.
    Ptr(PtrValue),
}

/// An opaque pointer owned by the tables that hold it. The pointer is kept as
/// an address: the library never dereferences it, it only hands it back.
#[derive(Debug)]
pub struct PtrValue {
    addr: usize,
    release: Option<ReleaseFn>,
    clone: Option<CloneFn>,
}

impl Value {
    /// The bytes, when this is a bytes value.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            Value::Ptr(_) => None,
        }
    }
}

impl PtrValue {
    /// Takes ownership of `ptr`; `release` (if any) is called on it once, when
    /// the last table holding this value drops it.
    pub fn new(ptr: *mut c_void, release: Option<ReleaseFn>) -> Self {
        PtrValue {
            addr: ptr as usize,
            release,
            clone: None,
        }
    }

    /// Like [`PtrValue::new`]; each task that receives the value gets its own
    /// copy made by `clone`, released with `release` when the task ends.
    pub fn with_clone(
        ptr: *mut c_void,
        release: Option<ReleaseFn>,
        clone: Option<CloneFn>,
    ) -> Self {
        PtrValue {
            addr: ptr as usize,
            release,
            clone,
        }
    }

    /// A task's own copy, when the value has a clone function (runs it).
    fn duplicate(&self) -> Option<PtrValue> {
        let clone = self.clone?;
        Some(PtrValue::with_clone(
            clone(self.ptr()),
            self.release,
            Some(clone),
        ))
    }

    /// The pointer as it was set.
    pub fn ptr(&self) -> *mut c_void {
        self.addr as *mut c_void
    }

    /// The release function it was set with.
    pub fn release_fn(&self) -> Option<ReleaseFn> {
        self.release
    }
}

impl Drop for PtrValue {
    fn drop(&mut self) {
        // Never called with NULL, like every free function of the library.
        if let (Some(release), false) = (self.release, self.addr == 0) {
            // On a worker, made from its start routine (see `sys::ThreadBody`).
            crate::sys::call_foreign(crate::sys::ForeignCall::Unary(
                release,
                self.addr as *mut c_void,
            ));
        }
    }
}

#[derive(Clone)]
struct Node {
    key: Arc<str>,
    value: Arc<Value>,
    priority: u64,
    left: Option<Arc<Node>>,
    right: Option<Arc<Node>>,
}

/// An immutable map from non-empty key to [`Value`]. `clone` is O(1).
#[derive(Clone, Default)]
pub struct Table {
    root: Option<Arc<Node>>,
    len: usize,
    /// The entries whose value has a clone function, again.
    cloned: Option<Arc<Node>>,
}

fn has_clone(value: &Value) -> bool {
    matches!(value, Value::Ptr(PtrValue { clone: Some(_), .. }))
}

static PRIORITY_SEED: Lazy<RandomState> = Lazy::new(RandomState::new);

fn priority_of(key: &str) -> u64 {
    PRIORITY_SEED.hash_one(key)
}

impl Table {
    /// The empty table.
    pub const fn new() -> Self {
        Table {
            root: None,
            len: 0,
            cloned: None,
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the table has no keys.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The value of `key`, shared with the table.
    pub fn get(&self, key: &str) -> Option<&Arc<Value>> {
        let mut node = self.root.as_deref();
        while let Some(n) = node {
            node = match key.cmp(&n.key) {
                Ordering::Less => n.left.as_deref(),
                Ordering::Greater => n.right.as_deref(),
                Ordering::Equal => return Some(&n.value),
            };
        }
        None
    }

    /// Sets `key` to `value` in this table (other clones are unaffected).
    /// Returns the value it replaced, so the caller decides where it drops.
    pub fn insert(&mut self, key: &str, value: Arc<Value>) -> Option<Arc<Value>> {
        let priority = priority_of(key);
        if has_clone(&value) {
            insert_node(&mut self.cloned, key, value.clone(), priority);
        }
        let replaced = insert_node(&mut self.root, key, value.clone(), priority);
        match &replaced {
            None => self.len += 1,
            Some(old) if has_clone(old) && !has_clone(&value) => {
                remove_node(&mut self.cloned, key);
            }
            Some(_) => {}
        }
        replaced
    }

    /// Removes `key` from this table (other clones are unaffected). Returns the
    /// removed value, so the caller decides where it drops.
    pub fn remove(&mut self, key: &str) -> Option<Arc<Value>> {
        let removed = remove_node(&mut self.root, key);
        if let Some(value) = &removed {
            self.len -= 1;
            if has_clone(value) {
                remove_node(&mut self.cloned, key);
            }
        }
        removed
    }

    /// The keys in sorted order, with their values.
    pub fn entries(&self) -> Vec<(Arc<str>, Arc<Value>)> {
        let mut out = Vec::with_capacity(self.len);
        walk(&self.root, &mut out);
        out
    }

    /// The table a task receives: every value with a clone function replaced
    /// by the task's own copy. Runs the clone functions (user code), so call
    /// it under no lock or borrow. O(1) when no value has a clone function.
    pub fn for_task(&self) -> Table {
        if self.cloned.is_none() {
            return self.clone();
        }
        self.with_copies()
    }

    /// [`Table::for_task`] of a table the caller gives up: without clone
    /// functions, the table itself, with no reference count touched.
    #[inline]
    pub fn into_task(self) -> Table {
        if self.cloned.is_none() {
            return self;
        }
        self.with_copies()
    }

    fn with_copies(&self) -> Table {
        let mut cloned = Vec::new();
        walk(&self.cloned, &mut cloned);
        let mut table = self.clone();
        for (key, value) in cloned {
            if let Value::Ptr(p) = &*value {
                if let Some(copy) = p.duplicate() {
                    table.insert(&key, Arc::new(Value::Ptr(copy)));
                }
            }
        }
        table
    }

    /// True when both tables are the same snapshot (not merely equal content).
    pub fn same_as(&self, other: &Table) -> bool {
        match (&self.root, &other.root) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

fn walk(node: &Option<Arc<Node>>, out: &mut Vec<(Arc<str>, Arc<Value>)>) {
    if let Some(n) = node {
        walk(&n.left, out);
        out.push((n.key.clone(), n.value.clone()));
        walk(&n.right, out);
    }
}

fn insert_node(
    slot: &mut Option<Arc<Node>>,
    key: &str,
    value: Arc<Value>,
    priority: u64,
) -> Option<Arc<Value>> {
    let Some(existing) = slot else {
        *slot = Some(Arc::new(Node {
            key: Arc::from(key),
            value,
            priority,
            left: None,
            right: None,
        }));
        return None;
    };
    let ordering = key.cmp(&existing.key);
    if ordering != Ordering::Equal && priority > existing.priority {
        // The new key belongs above this subtree: it cannot be inside it, so
        // split the subtree around the key and hang the halves below it.
        let (left, right) = split(slot.take(), key);
        *slot = Some(Arc::new(Node {
            key: Arc::from(key),
            value,
            priority,
            left,
            right,
        }));
        return None;
    }
    let node = Arc::make_mut(existing);
    match ordering {
        Ordering::Less => insert_node(&mut node.left, key, value, priority),
        Ordering::Greater => insert_node(&mut node.right, key, value, priority),
        Ordering::Equal => Some(std::mem::replace(&mut node.value, value)),
    }
}

/// Splits a subtree that does not contain `key` into keys below and above it.
fn split(node: Option<Arc<Node>>, key: &str) -> (Option<Arc<Node>>, Option<Arc<Node>>) {
    let Some(mut node) = node else {
        return (None, None);
    };
    let n = Arc::make_mut(&mut node);
    if *key < *n.key {
        let (left, right) = split(n.left.take(), key);
        n.left = right;
        (left, Some(node))
    } else {
        let (left, right) = split(n.right.take(), key);
        n.right = left;
        (Some(node), right)
    }
}

fn remove_node(slot: &mut Option<Arc<Node>>, key: &str) -> Option<Arc<Value>> {
    let existing = slot.as_mut()?;
    match key.cmp(&existing.key) {
        Ordering::Less => remove_node(&mut Arc::make_mut(existing).left, key),
        Ordering::Greater => remove_node(&mut Arc::make_mut(existing).right, key),
        Ordering::Equal => {
            let node = Arc::make_mut(existing);
            let (left, right) = (node.left.take(), node.right.take());
            let value = node.value.clone();
            *slot = merge(left, right);
            Some(value)
        }
    }
}

/// Joins two subtrees where every key of `left` is below every key of `right`.
fn merge(left: Option<Arc<Node>>, right: Option<Arc<Node>>) -> Option<Arc<Node>> {
    match (left, right) {
        (None, r) => r,
        (l, None) => l,
        (Some(mut l), Some(mut r)) => {
            if l.priority > r.priority {
                let n = Arc::make_mut(&mut l);
                n.right = merge(n.right.take(), Some(r));
                Some(l)
            } else {
                let n = Arc::make_mut(&mut r);
                n.left = merge(Some(l), n.left.take());
                Some(r)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

    fn bytes(v: &Value) -> &[u8] {
        v.as_bytes().expect("a bytes value")
    }

    fn depth(node: &Option<Arc<Node>>) -> usize {
        node.as_ref()
            .map_or(0, |n| 1 + depth(&n.left).max(depth(&n.right)))
    }

    fn check_invariants(t: &Table) {
        fn walk(node: &Option<Arc<Node>>, lo: Option<&str>, hi: Option<&str>) -> usize {
            let Some(n) = node else { return 0 };
            assert!(lo.is_none_or(|lo| &*n.key > lo));
            assert!(hi.is_none_or(|hi| &*n.key < hi));
            for child in [&n.left, &n.right].into_iter().flatten() {
                assert!(child.priority <= n.priority, "heap order");
            }
            1 + walk(&n.left, lo, Some(&n.key)) + walk(&n.right, Some(&n.key), hi)
        }
        assert_eq!(walk(&t.root, None, None), t.len());
    }

    #[test]
    fn insert_get_remove_against_a_model() {
        let mut t = Table::new();
        let mut model = std::collections::BTreeMap::new();
        let mut x: u64 = 12345;
        // Miri (make stress) interprets every step: a shorter run there.
        for _ in 0..if cfg!(miri) { 300 } else { 5000 } {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let key = format!("k{}", (x >> 33) % 300);
            if (x >> 20) % 3 == 0 {
                assert_eq!(t.remove(&key).is_some(), model.remove(&key).is_some());
            } else {
                let v = (x % 1000).to_string().into_bytes();
                t.insert(&key, Arc::new(Value::Bytes(v.clone().into())));
                model.insert(key, v);
            }
            check_invariants(&t);
        }
        for (k, v) in &model {
            assert_eq!(bytes(t.get(k).unwrap()), &v[..]);
        }
        let keys: Vec<String> = t.entries().iter().map(|(k, _)| k.to_string()).collect();
        assert_eq!(keys, model.keys().cloned().collect::<Vec<_>>());
    }

    #[test]
    fn snapshots_are_unaffected_by_later_changes() {
        let mut t = Table::new();
        for i in 0..1000 {
            t.insert(&format!("k{i}"), Arc::new(Value::Bytes(vec![1].into())));
        }
        let snap = t.clone();
        assert!(snap.same_as(&t));
        t.insert("k5", Arc::new(Value::Bytes(vec![2].into())));
        t.remove("k6");
        t.insert("new", Arc::new(Value::Bytes(vec![3].into())));
        assert!(!snap.same_as(&t));
        assert_eq!(bytes(snap.get("k5").unwrap()), &[1]);
        assert!(snap.get("k6").is_some());
        assert!(snap.get("new").is_none());
        assert_eq!(snap.len(), 1000);
        assert_eq!(bytes(t.get("k5").unwrap()), &[2]);
        assert_eq!(t.len(), 1000);
        check_invariants(&snap);
        check_invariants(&t);
    }

    #[test]
    fn depth_stays_logarithmic() {
        let mut t = Table::new();
        for i in 0..if cfg!(miri) { 2_000 } else { 100_000 } {
            t.insert(&format!("key{i:06}"), Arc::new(Value::Bytes(Box::new([]))));
        }
        // A treap's expected depth is about 2 ln n (23 for 100,000); sorted insertion
        // order must not degrade it.
        assert!(depth(&t.root) < 60, "depth {}", depth(&t.root));
    }

    static RELEASED: AtomicUsize = AtomicUsize::new(0);
    extern "C" fn count_release(_: *mut c_void) {
        RELEASED.fetch_add(1, AtomicOrdering::SeqCst);
    }

    #[test]
    fn pointer_released_once_when_the_last_holder_drops() {
        let before = RELEASED.load(AtomicOrdering::SeqCst);
        let mut t = Table::new();
        let v = Value::Ptr(PtrValue::new(8 as *mut c_void, Some(count_release)));
        t.insert("p", Arc::new(v));
        let snap = t.clone();
        drop(t.remove("p"));
        assert_eq!(RELEASED.load(AtomicOrdering::SeqCst), before);
        drop(snap);
        assert_eq!(RELEASED.load(AtomicOrdering::SeqCst), before + 1);
        drop(t);
        assert_eq!(RELEASED.load(AtomicOrdering::SeqCst), before + 1);
    }

    static CLONES: AtomicUsize = AtomicUsize::new(0);
    static CLONE_RELEASES: AtomicUsize = AtomicUsize::new(0);
    extern "C" fn clone_ptr(p: *mut c_void) -> *mut c_void {
        CLONES.fetch_add(1, AtomicOrdering::SeqCst);
        (p as usize + 1000) as *mut c_void
    }
    extern "C" fn release_clone(_: *mut c_void) {
        CLONE_RELEASES.fetch_add(1, AtomicOrdering::SeqCst);
    }

    #[test]
    fn a_task_gets_its_own_clone_and_releases_it() {
        let mut t = Table::new();
        for i in 0..100 {
            t.insert(&format!("k{i}"), Arc::new(Value::Bytes(Box::new([]))));
        }
        let v = PtrValue::with_clone(7 as *mut c_void, Some(release_clone), Some(clone_ptr));
        t.insert("tracker", Arc::new(Value::Ptr(v)));
        let task = t.for_task();
        assert_eq!(CLONES.load(AtomicOrdering::SeqCst), 1);
        match &**task.get("tracker").unwrap() {
            Value::Ptr(p) => assert_eq!(p.ptr() as usize, 1007),
            Value::Bytes(_) => panic!("expected a pointer"),
        }
        assert_eq!(task.len(), 101);
        drop(task);
        assert_eq!(
            CLONE_RELEASES.load(AtomicOrdering::SeqCst),
            1,
            "the clone is released"
        );
        // Replacing the cloneable value with a plain one drops it from the
        // clone index: no clone for later tasks.
        t.insert("tracker", Arc::new(Value::Bytes(Box::new([1]))));
        drop(t.for_task());
        assert_eq!(CLONES.load(AtomicOrdering::SeqCst), 1);
        drop(t);
        assert_eq!(
            CLONE_RELEASES.load(AtomicOrdering::SeqCst),
            2,
            "the original too"
        );
    }
}
