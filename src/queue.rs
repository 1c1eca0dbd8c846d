//! The pool's queue: an unbounded lock-free FIFO of one-word entries, with
//! no allocation in steady state.
//!
//! Entries sit in blocks of `BLOCK_CAP` slots linked in order. The head and
//! the tail are each a *position* (a count that only grows, so a stale one
//! never matches again) and the block it falls in. A push takes the tail's
//! position by CAS and then writes its slot; a pop takes the head's position
//! by CAS and then reads its slot, waiting for the push that took it to have
//! written it (a slot is 0 until then). Neither touches a block before its
//! CAS succeeded: the CAS proves that the position, and so the block read
//! with it, were still current.
//!
//! Each block has one position more than slots. The push that takes a
//! block's last slot also moves the tail to the next block's first slot, past
//! that extra position; meanwhile the tail stands on it, and other pushes
//! wait. Pops move the head across the same way. A pop that finds the head
//! at the tail's position finds the queue empty; it flags the head when the
//! tail is in a later block, and pops from a flagged head skip that look.
//!
//! Blocks are reused: each pop counts its read in its block (after clearing
//! the slot), and the pop that counts the block's last read holds the only
//! access left to it (every push to it and every pop from it is done, and the
//! head and the tail have moved on), so it puts the block among a few spare
//! ones for the next push that needs a block (or frees it when they are all
//! taken). A queue whose length stays within a few blocks allocates nothing
//! after its first rounds.
//!
//! `loom_tests` below model-checks it with two-slot blocks (`make test-loom`).

#![allow(unsafe_code)]

use std::marker::PhantomData;
use std::ptr;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};
#[cfg(not(all(test, loom)))]
use std::sync::atomic::{fence, AtomicPtr, AtomicU64, AtomicUsize};

#[cfg(all(test, loom))]
use loom::sync::atomic::{fence, AtomicPtr, AtomicU64, AtomicUsize};

use crate::shard::Padded;

/// What the queue holds: a value that travels as one nonzero word.
///
/// # Safety
/// `into_word` never returns 0, and `from_word` of its word gives back the
/// value it was made from (the queue calls it once per word).
pub(crate) unsafe trait Entry: Send {
    /// The value as a nonzero word; it lives on in the word.
    fn into_word(self) -> usize;
    /// The value a word came from.
    ///
    /// # Safety
    /// `word` came from `into_word` and is turned back at most once.
    unsafe fn from_word(word: usize) -> Self;

    /// A hint that the value of `word`, the entry queued after one just
    /// popped, is wanted soon (by default, nothing). `word` may be stale:
    /// another pop may have taken it meanwhile.
    fn prefetch(_word: usize) {}
}

/// Slots per block (a block is 8 bytes per slot and 16 more; one position
/// more makes a power of two, so positions split with shifts).
#[cfg(not(all(test, loom)))]
const BLOCK_CAP: usize = 63;
/// Under loom, tiny: every block transition is explored.
#[cfg(all(test, loom))]
const BLOCK_CAP: usize = 2;
/// Positions per block: its slots and the one the tail and head stand on
/// while they move to the next block.
const LAP: usize = BLOCK_CAP + 1;
/// The position is kept from this bit of an index up; below it, the head's
/// flag.
const SHIFT: u32 = 1;
/// In the head's index: its block has a next one, so the queue is not empty
/// before the head reaches that block.
const HAS_NEXT: u64 = 1;
/// Spare blocks kept for reuse.
#[cfg(not(all(test, loom)))]
const SPARES: usize = 4;
#[cfg(all(test, loom))]
const SPARES: usize = 1;

struct Block {
    /// The next block, once a push took this one's last slot.
    next: AtomicPtr<Block>,
    /// How many of its slots were read (and cleared).
    read: AtomicUsize,
    /// An entry's word; 0 while empty.
    slots: [AtomicUsize; BLOCK_CAP],
}

impl Block {
    fn allocate() -> *mut Block {
        Box::into_raw(Box::new(Block {
            next: AtomicPtr::new(ptr::null_mut()),
            read: AtomicUsize::new(0),
            slots: std::array::from_fn(|_| AtomicUsize::new(0)),
        }))
    }
}

/// The head or the tail: an index (a position `<< SHIFT`, and the head's
/// flag; 64 bits on every target, so it never wraps) and the block of that
/// position.
struct End {
    index: AtomicU64,
    block: AtomicPtr<Block>,
}

/// An unbounded lock-free FIFO of `T` (see the module docs).
pub(crate) struct Queue<T: Entry> {
    head: Padded<End>,
    tail: Padded<End>,
    /// Blocks whose slots were all read, for reuse; null: an empty place.
    spares: [AtomicPtr<Block>; SPARES],
    _entries: PhantomData<T>,
}

// SAFETY: entries move between threads inside the queue (T: Send); blocks
// are shared through atomics only (see the module docs).
unsafe impl<T: Entry> Send for Queue<T> {}
// SAFETY: as above.
unsafe impl<T: Entry> Sync for Queue<T> {}

/// The number of slots before an index's position (block ends excluded):
/// the same for a block's extra position and the next block's first.
fn slots_before(index: u64) -> u64 {
    let position = index >> SHIFT;
    let lap = LAP as u64;
    position / lap * BLOCK_CAP as u64 + (position % lap).min(BLOCK_CAP as u64)
}

/// The offset in its block of an index's position.
fn offset_of(index: u64) -> usize {
    ((index >> SHIFT) % LAP as u64) as usize
}

/// The block number of an index's position.
fn lap_of(index: u64) -> u64 {
    (index >> SHIFT) / LAP as u64
}

/// Waits for the push that took `slot`'s position to write it.
#[cold]
fn wait_written(slot: &AtomicUsize) -> usize {
    let mut backoff = Backoff::new();
    loop {
        let word = slot.load(Acquire);
        if word != 0 {
            return word;
        }
        backoff.snooze();
    }
}

/// Waits a little for another thread's step: spins, then yields.
struct Backoff(u32);

impl Backoff {
    fn new() -> Backoff {
        Backoff(0)
    }

    fn snooze(&mut self) {
        #[cfg(all(test, loom))]
        loom::thread::yield_now();
        #[cfg(not(all(test, loom)))]
        if self.0 < 6 {
            for _ in 0..1 << self.0 {
                std::hint::spin_loop();
            }
        } else {
            std::thread::yield_now();
        }
        self.0 = self.0.saturating_add(1);
    }
}

impl<T: Entry> Queue<T> {
    pub(crate) fn new() -> Queue<T> {
        let first = Block::allocate();
        Queue {
            head: Padded(End {
                index: AtomicU64::new(0),
                block: AtomicPtr::new(first),
            }),
            tail: Padded(End {
                index: AtomicU64::new(0),
                block: AtomicPtr::new(first),
            }),
            spares: std::array::from_fn(|_| AtomicPtr::new(ptr::null_mut())),
            _entries: PhantomData,
        }
    }

    /// A queue whose positions start at `position` (the first of a block),
    /// as if that many entries had passed through it.
    #[cfg(all(test, not(loom)))]
    fn starting_at(position: u64) -> Queue<T> {
        assert_eq!(position % LAP as u64, 0, "the first position of a block");
        let q = Queue::new();
        q.head.index.store(position << SHIFT, Relaxed);
        q.tail.index.store(position << SHIFT, Relaxed);
        q
    }

    /// Adds `value` at the tail.
    #[inline(always)]
    pub(crate) fn push(&self, value: T) {
        let word = value.into_word();
        debug_assert_ne!(word, 0);
        let tail = self.tail.index.load(Acquire);
        let block = self.tail.block.load(Acquire);
        let offset = offset_of(tail);
        // The common case inline: a slot that is not its block's last, taken
        // at the first try.
        if offset + 1 < BLOCK_CAP
            && self
                .tail
                .index
                .compare_exchange_weak(tail, tail + (1 << SHIFT), SeqCst, Acquire)
                .is_ok()
        {
            // SAFETY: as in `push_from`.
            unsafe { &*block }.slots[offset].store(word, Release);
            return;
        }
        self.push_from(word, tail, block);
    }

    /// [`Queue::push`] from the tail (`tail`, `block`) as last read: a block
    /// end, or a lost race.
    #[inline(never)]
    fn push_from(&self, word: usize, tail: u64, block: *mut Block) {
        let mut backoff = Backoff::new();
        let (mut tail, mut block) = (tail, block);
        // A block for the next push, made before taking this block's last
        // slot (so that the tail waits on it as briefly as can be).
        let mut next_block: *mut Block = ptr::null_mut();
        loop {
            let offset = offset_of(tail);
            if offset == BLOCK_CAP {
                // Another push is moving the tail to the next block.
                backoff.snooze();
                tail = self.tail.index.load(Acquire);
                block = self.tail.block.load(Acquire);
                continue;
            }
            if offset + 1 == BLOCK_CAP && next_block.is_null() {
                next_block = self.take_block();
            }
            let new_tail = tail + (1 << SHIFT);
            match self
                .tail
                .index
                .compare_exchange_weak(tail, new_tail, SeqCst, Acquire)
            {
                Ok(_) => {
                    // SAFETY: the position is this push's; its block lives
                    // until its slot has been read (see the module docs).
                    let b = unsafe { &*block };
                    if offset + 1 == BLOCK_CAP {
                        let next = std::mem::replace(&mut next_block, ptr::null_mut());
                        self.tail.block.store(next, Release);
                        self.tail.index.store(new_tail + (1 << SHIFT), Release);
                        b.next.store(next, Release);
                    }
                    b.slots[offset].store(word, Release);
                    if !next_block.is_null() {
                        // Made for a last slot that another push took.
                        self.put_block(next_block);
                    }
                    return;
                }
                Err(now) => {
                    tail = now;
                    block = self.tail.block.load(Acquire);
                    backoff.snooze();
                }
            }
        }
    }

    /// Takes the entry at the head, if any.
    #[inline(always)]
    pub(crate) fn pop(&self) -> Option<T> {
        self.pop_then::<false>()
    }

    /// [`Queue::pop`], then a hint that the entry after it is wanted soon
    /// ([`Entry::prefetch`]): for a consumer that would otherwise wait for
    /// that entry's memory (the pool's workers).
    #[inline(always)]
    pub(crate) fn pop_prefetching(&self) -> Option<T> {
        self.pop_then::<true>()
    }

    #[inline(always)]
    fn pop_then<const PREFETCH: bool>(&self) -> Option<T> {
        let head = self.head.index.load(Acquire);
        let block = self.head.block.load(Acquire);
        let offset = offset_of(head);
        // The common case inline: a slot that is not its block's last, with
        // a next block already (so the queue is not empty), taken at the
        // first try.
        if head & HAS_NEXT != 0
            && offset + 1 < BLOCK_CAP
            && self
                .head
                .index
                .compare_exchange_weak(head, head + (1 << SHIFT), SeqCst, Acquire)
                .is_ok()
        {
            // SAFETY: as in `pop_from`.
            let word = unsafe { self.read::<PREFETCH>(block, offset) };
            // SAFETY: a word a push made, taken by this pop alone.
            return Some(unsafe { T::from_word(word) });
        }
        self.pop_from::<PREFETCH>(head, block)
    }

    /// [`Queue::pop`] from the head (`head`, `block`) as last read: near
    /// the tail, at a block end, or after a lost race.
    #[inline(never)]
    fn pop_from<const PREFETCH: bool>(&self, head: u64, block: *mut Block) -> Option<T> {
        let mut backoff = Backoff::new();
        let (mut head, mut block) = (head, block);
        loop {
            let offset = offset_of(head);
            if offset == BLOCK_CAP {
                // Another pop is moving the head to the next block.
                backoff.snooze();
                head = self.head.index.load(Acquire);
                block = self.head.block.load(Acquire);
                continue;
            }
            let mut new_head = head + (1 << SHIFT);
            if new_head & HAS_NEXT == 0 {
                // The tail's position after the head's (as for is_empty).
                fence(SeqCst);
                let tail = self.tail.index.load(Relaxed);
                if head >> SHIFT == tail >> SHIFT {
                    return None;
                }
                if lap_of(head) != lap_of(tail) {
                    new_head |= HAS_NEXT;
                }
            }
            match self
                .head
                .index
                .compare_exchange_weak(head, new_head, SeqCst, Acquire)
            {
                Ok(_) => {
                    // SAFETY: the position is this pop's; its block lives
                    // until this pop counts its read.
                    let b = unsafe { &*block };
                    if offset + 1 == BLOCK_CAP {
                        let next = loop {
                            let next = b.next.load(Acquire);
                            if !next.is_null() {
                                break next;
                            }
                            backoff.snooze();
                        };
                        let mut next_index = (new_head & !HAS_NEXT) + (1 << SHIFT);
                        // SAFETY: the next block lives: none of its slots was
                        // read, since the head is not there yet.
                        if !unsafe { &*next }.next.load(Relaxed).is_null() {
                            next_index |= HAS_NEXT;
                        }
                        self.head.block.store(next, Release);
                        self.head.index.store(next_index, Release);
                    }
                    // SAFETY: as above.
                    let word = unsafe { self.read::<PREFETCH>(block, offset) };
                    // SAFETY: a word a push made, taken by this pop alone.
                    return Some(unsafe { T::from_word(word) });
                }
                Err(now) => {
                    head = now;
                    block = self.head.block.load(Acquire);
                    backoff.snooze();
                }
            }
        }
    }

    /// Reads the slot at `offset` of `block`, whose position this pop took:
    /// waits for its push to have written it, clears it and counts the
    /// read (the block's last read makes it a spare). With `PREFETCH`, hints
    /// at the next slot's entry first.
    ///
    /// # Safety
    /// The position is the caller's: the block lives until this counts.
    #[inline(always)]
    unsafe fn read<const PREFETCH: bool>(&self, block: *mut Block, offset: usize) -> usize {
        // SAFETY: per this function's contract.
        let b = unsafe { &*block };
        let slot = &b.slots[offset];
        let mut word = slot.load(Acquire);
        if word == 0 {
            word = wait_written(slot);
        }
        slot.store(0, Relaxed);
        if PREFETCH && offset + 1 < BLOCK_CAP {
            // The next entry, for the pop that is likely to take it next:
            // its value's memory, which its push wrote on another CPU,
            // comes over meanwhile.
            let next = b.slots[offset + 1].load(Relaxed);
            if next != 0 {
                T::prefetch(next);
            }
        }
        if b.read.fetch_add(1, AcqRel) + 1 == BLOCK_CAP {
            // The block's last read: nobody else touches it.
            b.next.store(ptr::null_mut(), Relaxed);
            b.read.store(0, Relaxed);
            self.put_block(block);
        }
        word
    }

    /// How many entries are queued (exact when no push or pop runs).
    pub(crate) fn len(&self) -> usize {
        loop {
            let tail = self.tail.index.load(SeqCst);
            let head = self.head.index.load(SeqCst);
            // Consistent when the tail did not move meanwhile.
            if self.tail.index.load(SeqCst) == tail {
                return slots_before(tail).saturating_sub(slots_before(head)) as usize;
            }
        }
    }

    /// How many entries were popped so far, tombstones included (a count
    /// that only grows; a snapshot).
    pub(crate) fn popped(&self) -> u64 {
        slots_before(self.head.index.load(Relaxed))
    }

    /// True when nothing is queued.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        let head = self.head.index.load(SeqCst);
        let tail = self.tail.index.load(SeqCst);
        slots_before(head) >= slots_before(tail)
    }

    /// A spare block, else a new one.
    fn take_block(&self) -> *mut Block {
        for place in &self.spares {
            if !place.load(Relaxed).is_null() {
                let block = place.swap(ptr::null_mut(), Acquire);
                if !block.is_null() {
                    return block;
                }
            }
        }
        Block::allocate()
    }

    /// Keeps a block no thread touches any more (its slots 0, its counts
    /// reset) as a spare, else frees it.
    fn put_block(&self, block: *mut Block) {
        for place in &self.spares {
            if place.load(Relaxed).is_null()
                && place
                    .compare_exchange(ptr::null_mut(), block, Release, Relaxed)
                    .is_ok()
            {
                return;
            }
        }
        // SAFETY: a block from `Block::allocate`, no longer shared.
        drop(unsafe { Box::from_raw(block) });
    }
}

impl<T: Entry> Drop for Queue<T> {
    fn drop(&mut self) {
        while let Some(entry) = self.pop() {
            drop(entry);
        }
        // Empty: the head's block is the tail's, the last one.
        let last = self.head.block.load(Relaxed);
        // SAFETY: allocated by `Block::allocate`; nothing else holds it.
        drop(unsafe { Box::from_raw(last) });
        for place in &self.spares {
            let block = place.load(Relaxed);
            if !block.is_null() {
                // SAFETY: as above.
                drop(unsafe { Box::from_raw(block) });
            }
        }
    }
}

/// A nonzero number as an entry, for the tests and the loom models.
#[cfg(test)]
#[derive(Debug, PartialEq, Eq)]
struct N(usize);

// SAFETY: the word is the number, never 0 (the tests use 1 and up).
#[cfg(test)]
unsafe impl Entry for N {
    fn into_word(self) -> usize {
        self.0
    }
    unsafe fn from_word(word: usize) -> Self {
        N(word)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    /// A counted reference, to see that a dropped queue drops what it holds.
    struct Held(Arc<()>);

    // SAFETY: the word is the Arc's pointer (never 0), taken back once.
    unsafe impl Entry for Held {
        fn into_word(self) -> usize {
            Arc::into_raw(self.0) as usize
        }
        unsafe fn from_word(word: usize) -> Self {
            // SAFETY: per the trait's contract.
            Held(unsafe { Arc::from_raw(word as *const ()) })
        }
    }

    /// A number as an entry whose prefetch hints this thread counts.
    #[derive(Debug, PartialEq, Eq)]
    struct Hinted(usize);

    thread_local! {
        static HINTS: std::cell::RefCell<Vec<usize>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    // SAFETY: the word is the number, never 0 (the test uses 1 and up).
    unsafe impl Entry for Hinted {
        fn into_word(self) -> usize {
            self.0
        }
        unsafe fn from_word(word: usize) -> Self {
            Hinted(word)
        }
        fn prefetch(word: usize) {
            HINTS.with(|h| h.borrow_mut().push(word));
        }
    }

    #[test]
    fn a_prefetching_pop_hints_at_the_next_entry_and_keeps_the_order() {
        let q = Queue::new();
        let n = 2 * BLOCK_CAP + 5;
        for i in 1..=n {
            q.push(Hinted(i));
        }
        for i in 1..=n {
            assert_eq!(q.pop_prefetching(), Some(Hinted(i)));
            let hinted = HINTS.with(|h| h.borrow_mut().pop());
            // The entry after it, except across a block's end (and after
            // the last entry, where there is none).
            let block_end = i % BLOCK_CAP == 0;
            let want = (i < n && !block_end).then_some(i + 1);
            assert_eq!(hinted, want, "after popping {i}");
            HINTS.with(|h| h.borrow_mut().clear());
        }
        assert_eq!(q.pop_prefetching(), None);
        // A plain pop gives no hint.
        q.push(Hinted(1));
        q.push(Hinted(2));
        assert_eq!(q.pop(), Some(Hinted(1)));
        assert!(HINTS.with(|h| h.borrow().is_empty()));
    }

    #[test]
    fn one_thread_gets_its_entries_back_in_order_across_many_blocks() {
        let q = Queue::new();
        assert!(q.is_empty());
        assert_eq!(q.pop(), None);
        for round in 0..3 {
            let n = BLOCK_CAP * 5 + 7 + round;
            for i in 1..=n {
                q.push(N(i));
                assert_eq!(q.len(), i);
            }
            assert!(!q.is_empty());
            for i in 1..=n {
                assert_eq!(q.pop(), Some(N(i)));
                assert_eq!(q.len(), n - i);
            }
            assert!(q.is_empty());
            assert_eq!(q.pop(), None);
        }
        // Pushes and pops interleaved keep the order too.
        let mut next_in = 1;
        let mut next_out = 1;
        for step in 0..10 * BLOCK_CAP {
            for _ in 0..(step % 3) + 1 {
                q.push(N(next_in));
                next_in += 1;
            }
            for _ in 0..(step % 2) + 1 {
                if next_out < next_in {
                    assert_eq!(q.pop(), Some(N(next_out)));
                    next_out += 1;
                }
            }
            assert_eq!(q.len(), next_in - next_out);
        }
    }

    /// Positions count in 64 bits on every target: a queue that has passed
    /// 2^32 entries (where a 32-bit count would wrap) still sees its
    /// length, emptiness and order right.
    #[test]
    fn positions_past_the_32_bit_range_keep_length_and_order() {
        let start = (1u64 << 32) / LAP as u64 * LAP as u64;
        let q = Queue::starting_at(start);
        assert!(q.is_empty());
        let n = BLOCK_CAP * 3;
        for i in 1..=n {
            q.push(N(i));
            assert_eq!(q.len(), i);
            assert!(!q.is_empty());
        }
        for i in 1..=n {
            assert_eq!(q.pop(), Some(N(i)));
        }
        assert!(q.is_empty());
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn a_dropped_queue_drops_what_it_holds() {
        let tracker = Arc::new(());
        let q = Queue::new();
        let n = BLOCK_CAP * 2 + 3;
        for _ in 0..n {
            q.push(Held(tracker.clone()));
        }
        drop(q.pop());
        assert_eq!(Arc::strong_count(&tracker), n);
        drop(q);
        assert_eq!(Arc::strong_count(&tracker), 1);
    }

    /// Four threads push, four pop, all at once: every entry comes out once,
    /// and each popper sees each pusher's entries in the order pushed.
    #[test]
    fn many_pushers_and_poppers_pass_every_entry_once_in_order() {
        const PUSHERS: usize = 4;
        const EACH: usize = 100_000;
        let q = Arc::new(Queue::new());
        let done = Arc::new(AtomicBool::new(false));
        let poppers: Vec<_> = (0..4)
            .map(|_| {
                let (q, done) = (q.clone(), done.clone());
                std::thread::spawn(move || {
                    let mut last = [0usize; PUSHERS];
                    let mut got = Vec::new();
                    loop {
                        match q.pop() {
                            Some(N(word)) => {
                                let (pusher, i) = ((word - 1) / EACH, (word - 1) % EACH + 1);
                                assert!(
                                    i > last[pusher],
                                    "pusher {pusher}: {i} after {}",
                                    last[pusher]
                                );
                                last[pusher] = i;
                                got.push(word);
                            }
                            None if done.load(Acquire) && q.is_empty() => return got,
                            None => std::thread::yield_now(),
                        }
                    }
                })
            })
            .collect();
        let pushers: Vec<_> = (0..PUSHERS)
            .map(|p| {
                let q = q.clone();
                std::thread::spawn(move || {
                    for i in 1..=EACH {
                        q.push(N(p * EACH + i));
                    }
                })
            })
            .collect();
        pushers.into_iter().for_each(|t| t.join().unwrap());
        done.store(true, Release);
        let mut all: Vec<usize> = poppers
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        all.sort_unstable();
        assert_eq!(all, (1..=PUSHERS * EACH).collect::<Vec<_>>());
        assert!(q.is_empty());
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    /// Two threads push three entries across a block end (two-slot
    /// blocks) while a third tries twice to pop, then takes the rest: each
    /// entry comes out once, each pusher's in its order. (Bounded tries, so
    /// that no path spins.)
    #[test]
    fn two_pushers_and_a_popper_pass_each_entry_once_in_order() {
        loom::model(|| {
            let q = Arc::new(Queue::new());
            let pushers: Vec<_> = [(1, 2), (11, 1)]
                .into_iter()
                .map(|(first, n)| {
                    let q = q.clone();
                    thread::spawn(move || {
                        for v in first..first + n {
                            q.push(N(v));
                        }
                    })
                })
                .collect();
            let mut got: Vec<usize> = (0..2).filter_map(|_| q.pop()).map(|N(v)| v).collect();
            pushers.into_iter().for_each(|t| t.join().unwrap());
            while let Some(N(v)) = q.pop() {
                got.push(v);
            }
            let of = |pusher: usize| {
                got.iter()
                    .filter(|&&v| v / 10 == pusher)
                    .copied()
                    .collect::<Vec<_>>()
            };
            assert_eq!(of(0), vec![1, 2]);
            assert_eq!(of(1), vec![11]);
            assert!(q.is_empty());
        });
    }

    /// One thread pushes five entries while another tries three times to
    /// pop, then the rest is taken: in order and once each, while blocks
    /// fill, move on and come back as spares.
    #[test]
    fn a_pusher_and_a_popper_reuse_blocks_safely() {
        loom::model(|| {
            let q = Arc::new(Queue::new());
            let popper = {
                let q = q.clone();
                thread::spawn(move || {
                    (0..3)
                        .filter_map(|_| q.pop())
                        .map(|N(v)| v)
                        .collect::<Vec<_>>()
                })
            };
            for v in 1..=5 {
                q.push(N(v));
            }
            let mut got = popper.join().unwrap();
            while let Some(N(v)) = q.pop() {
                got.push(v);
            }
            assert_eq!(got, vec![1, 2, 3, 4, 5]);
        });
    }

    /// Two threads pop three queued entries at once, across a block end:
    /// each entry is taken exactly once. (Both waiting on one push would
    /// spin in turns past loom's bounds: that race is the one above.)
    #[test]
    fn two_poppers_take_each_entry_once() {
        loom::model(|| {
            let q = Arc::new(Queue::new());
            for v in 1..=3 {
                q.push(N(v));
            }
            let poppers: Vec<_> = (0..2)
                .map(|_| {
                    let q = q.clone();
                    thread::spawn(move || {
                        (0..2)
                            .filter_map(|_| q.pop())
                            .map(|N(v)| v)
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            let mut all: Vec<usize> = poppers
                .into_iter()
                .flat_map(|t| t.join().unwrap())
                .collect();
            while let Some(N(v)) = q.pop() {
                all.push(v);
            }
            all.sort_unstable();
            assert_eq!(all, vec![1, 2, 3]);
            assert!(q.is_empty());
        });
    }
}
