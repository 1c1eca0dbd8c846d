//! Task memory and handles: a slab of slots, each named by a
//! generation-checked handle, with no lock and no allocation per task in
//! steady state.
//!
//! A handle is a `u64`:
//!
//! ```text
//! bits 63..56  fork epoch   (a handle from before a fork() is recognised as such)
//! bits 55..24  generation   (1..2^32-1, bumped each time the handle is released; never 0)
//! bits 23..0   slot index
//! ```
//!
//! Because the generation is never 0, no handle is 0. Releasing a handle bumps
//! its slot's generation, so the released handle is refused at once, also
//! while the task still runs and after the slot is reused; a slot would have
//! to be reused 2^32 times before an old handle could name it again. Each
//! slot's first generation is spread by its index, so a handle forged by
//! changing the index of a live one (hot slots are reused about equally
//! often) does not name another live task.
//!
//! # The slot word
//!
//! Each slot has one atomic word, `generation << 32 | references`. The
//! references are those of the handle (until released) and of every [`Ref`]
//! (the pool's queue, the thread running the task, a lookup in progress). A
//! lookup increments them by CAS only while the generation matches and they
//! are not 0; releasing bumps the generation by CAS. So the count reaches 0 only
//! once the handle is released, nothing can raise it from 0 again, and the
//! thread that drops the last reference has the slot to itself: it clears the
//! value and frees the slot (see below). The value is written only then and
//! when the slot is handed out again (count 0, off every list), and read only
//! through a [`Ref`]: the discipline of an `Arc`, with the generation check of
//! a handle registry on top.
//!
//! # The free list
//!
//! A Treiber stack of slot indices whose head word carries a tag bumped by
//! every push and pop (`tag << 32 | index + 1`), so a pop whose head changed
//! under it (the ABA case: popped and pushed back meanwhile) fails its CAS.
//! Slots live in segments that are never freed, so reading a slot's link is
//! always safe, even for a pop that then loses its CAS. A segment is
//! allocated zeroed: all zeroes is a slot never taken (its word 0 lets no
//! lookup take it) holding its type's default value (see [`Slotted`]). No lock: a forked
//! child can never find one held.
//!
//! Most slots never reach that list one by one: a thread frees slots into a
//! run of its own and takes them from a chain of its own ([`LocalFree`]),
//! and whole runs and chains pass between threads through a small depot of
//! places, each holding one chain, taken whole by a swap (so no ABA either).
//! A forked child keeps only its own thread's chains: the slots the
//! parent's other threads held are lost to it (memory only).
//!
//! `loom_tests` below model-checks these protocols under `--cfg loom`
//! (`make test-loom`).

#![allow(unsafe_code)]

#[cfg(all(test, loom))]
use loom::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64};
use std::mem::MaybeUninit;
use std::sync::atomic::AtomicU8;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
#[cfg(not(all(test, loom)))]
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64};

use crate::shard::{Counter, Padded};

const INDEX_BITS: u32 = 24;
const GENERATION_SHIFT: u32 = INDEX_BITS;
const EPOCH_SHIFT: u32 = 56;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;
/// Segment `s` holds `FIRST_SEGMENT << s` slots: a small slab stays small
/// (under loom, tiny: every atomic is a modelled object).
#[cfg(not(all(test, loom)))]
const FIRST_SEGMENT_BITS: u32 = 6;
#[cfg(all(test, loom))]
const FIRST_SEGMENT_BITS: u32 = 1;
const SEGMENTS: usize = (INDEX_BITS - FIRST_SEGMENT_BITS + 1) as usize;

/// Why a handle was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandleError {
    /// Zero, forged, released or stale.
    Invalid,
    /// Made by the parent process before a `fork()`.
    Forked,
    /// Every slot is taken.
    Full,
}

/// What a slab holds: a value that can be emptied in place when its slot is
/// freed (dropping what it owns) and filled again when the slot is reused.
///
/// # Safety
/// All zero bytes must be a valid value of the type, the one `Default`
/// gives: a slot never taken is zeroed memory, its value never written.
pub unsafe trait Slotted: Default + Send + Sync + 'static {
    /// The slab that holds every value of this type.
    fn slab() -> &'static Slab<Self>;
    /// Drops what the value owns; called by the thread that dropped the last
    /// reference.
    fn clear(&mut self);
    /// This thread's private chain of free slots (see [`LocalFree`]), for a
    /// slab that one thread fills while others empty it; None: every insert
    /// pops the shared free list.
    fn local_free() -> Option<&'static std::thread::LocalKey<LocalFree<Self>>> {
        None
    }
}

/// A thread's private free slots of `T`'s slab, in two chains linked
/// through `next_free`, so that neither taking nor freeing a slot touches
/// the shared free list's head on every task:
///
/// - the slots it frees (as the thread that drops a value's last reference)
///   gather in a run; a full run of [`FREED_RUN`] goes whole into the slab's
///   depot of chains (or, with the depot full, onto the shared list): a
///   worker frees many and takes none;
/// - its inserts take from its own chain; an empty chain takes the thread's
///   own run first (no atomic operation: a thread that submits, waits and
///   releases reuses its own slots), then the never-taken slots it reserved,
///   then one chain from the depot (so that several submitting threads
///   share the freed slots a run at a time), then the whole shared list
///   with one atomic swap, and with nothing free anywhere it reserves up
///   to `FRESH_RUN` never-taken slots of one segment with one CAS (a burst deeper
///   than every freed slot takes a new slot per task: one add per run, and
///   no per-slot work but writing its index and generation, see `Slot`).
///
/// Both chains go back into the depot when the thread ends, whole: a chain
/// taken from the shared list may be long, and walking it to its end would
/// touch every slot (onto the shared list only with the depot full). Its
/// unused reserved slots go onto the shared list.
pub struct LocalFree<T: Slotted> {
    /// The chain inserts take from: its first slot's index + 1 (0: empty).
    head: std::cell::Cell<u32>,
    /// The run of freed slots: its first slot's index + 1, its last slot
    /// (whose link is 0), and its length.
    freed: std::cell::Cell<u32>,
    freed_last: std::cell::Cell<Option<&'static Slot<T>>>,
    freed_len: std::cell::Cell<u32>,
    /// Slots never taken, reserved together in one segment: from index
    /// `fresh_next` (whose slot is `fresh_slot`) up to `fresh_end`
    /// (exclusive).
    fresh_next: std::cell::Cell<u32>,
    fresh_end: std::cell::Cell<u32>,
    fresh_slot: std::cell::Cell<*const Slot<T>>,
    _slab: std::marker::PhantomData<T>,
}

/// How many slots a thread frees before it hands them on together.
pub const FREED_RUN: u32 = 32;

/// How many never-taken slots a thread reserves at once when no free one
/// is left (see [`LocalFree`]).
const FRESH_RUN: u32 = 32;

/// How many whole chains the depot holds; the last `EXIT_PLACES` only
/// chains given back by an ending thread (which would otherwise have to be
/// walked to their end), so that freed runs never fill them.
#[cfg(not(all(test, loom)))]
const DEPOT: usize = 16;
#[cfg(not(all(test, loom)))]
const EXIT_PLACES: usize = 4;
#[cfg(all(test, loom))]
const DEPOT: usize = 2;
#[cfg(all(test, loom))]
const EXIT_PLACES: usize = 1;

impl<T: Slotted> LocalFree<T> {
    /// Empty chains.
    pub const fn new() -> Self {
        LocalFree {
            head: std::cell::Cell::new(0),
            freed: std::cell::Cell::new(0),
            freed_last: std::cell::Cell::new(None),
            freed_len: std::cell::Cell::new(0),
            fresh_next: std::cell::Cell::new(0),
            fresh_end: std::cell::Cell::new(0),
            fresh_slot: std::cell::Cell::new(std::ptr::null()),
            _slab: std::marker::PhantomData,
        }
    }

    /// The next of its reserved slots, made ready, if any is left.
    #[inline(always)]
    fn take_reserved(&self) -> Option<(u32, &'static Slot<T>)> {
        let index = self.fresh_next.get();
        if index >= self.fresh_end.get() {
            return None;
        }
        let slot = self.fresh_slot.get();
        self.fresh_next.set(index + 1);
        // The reserved range lies in one segment, whose slots are in index
        // order: the next index's slot follows (or the segment's end, never
        // read, once the range is used up).
        self.fresh_slot.set(slot.wrapping_add(1));
        // SAFETY: `slot` points into its segment (from `Slab::slot_ptr`),
        // at the slot of `index`, which lives forever.
        Some((index, make_ready(unsafe { &*slot }, index)))
    }

    /// Takes the run of freed slots (first index + 1, last slot, whose
    /// link is 0), leaving it empty.
    fn take_freed(&self) -> Option<(u32, &'static Slot<T>)> {
        let first = self.freed.replace(0);
        let last = self.freed_last.take()?;
        self.freed_len.set(0);
        Some((first, last))
    }
}

impl<T: Slotted> Default for LocalFree<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Slotted> Drop for LocalFree<T> {
    fn drop(&mut self) {
        let slab = T::slab();
        if let Some((first, last)) = self.take_freed() {
            slab.hand_on_run(first, last);
        }
        let head = self.head.replace(0);
        if !slab.deposit(head, true) {
            slab.push_chain(head);
        }
        // Its unused reserved slots go onto the shared list as one run:
        // otherwise no thread could ever take them.
        if let Some((first, mut last)) = self.take_reserved() {
            while let Some((index, slot)) = self.take_reserved() {
                last.next_free.store(index + 1, Relaxed);
                last = slot;
            }
            slab.push_run(first + 1, last);
        }
    }
}

#[cfg(not(all(test, loom)))]
struct Cell<T>(std::cell::UnsafeCell<T>);
#[cfg(all(test, loom))]
struct Cell<T>(loom::cell::UnsafeCell<T>);

impl<T> Cell<MaybeUninit<T>> {
    #[cfg(all(test, loom))]
    fn uninit() -> Self {
        Cell(loom::cell::UnsafeCell::new(MaybeUninit::uninit()))
    }

    /// # Safety
    /// The caller holds a reference counted in the slot's word (so the
    /// value was written when the slot was first taken).
    unsafe fn get(&self) -> &T {
        #[cfg(not(all(test, loom)))]
        // SAFETY: per this function's contract, the value is initialised and
        // no `&mut` exists meanwhile.
        return unsafe { (*self.0.get()).assume_init_ref() };
        #[cfg(all(test, loom))]
        // SAFETY: as above; loom checks it.
        return unsafe { (*self.0.with(|p| p)).assume_init_ref() };
    }

    /// # Safety
    /// The caller owns the slot alone (its count is 0 and it is on no list)
    /// and the slot has been taken before (its value is initialised).
    #[allow(clippy::mut_from_ref)]
    unsafe fn get_mut(&self) -> &mut T {
        // SAFETY: per this function's contract.
        unsafe { self.uninit_mut().assume_init_mut() }
    }

    /// # Safety
    /// The caller owns the slot alone (its count is 0 and it is on no list).
    #[allow(clippy::mut_from_ref)]
    unsafe fn uninit_mut(&self) -> &mut MaybeUninit<T> {
        #[cfg(not(all(test, loom)))]
        // SAFETY: per this function's contract, no other reference exists.
        return unsafe { &mut *self.0.get() };
        #[cfg(all(test, loom))]
        // SAFETY: as above; loom checks it.
        return unsafe { &mut *self.0.with_mut(|p| p) };
    }
}

/// A slot. All zeroes is a valid slot never taken: its segment is
/// allocated zeroed (no per-slot work until the slot is first taken, and
/// pages of slots never taken are never touched), and the first take writes
/// its index, first generation and value.
struct Slot<T> {
    /// `generation << 32 | references`; 0 until first taken.
    word: AtomicU64,
    /// The next free slot's index + 1 (0: none) while this one is free.
    next_free: AtomicU32,
    /// This slot's index, once taken.
    index: AtomicU32,
    /// Initialised from the first take on.
    value: Cell<MaybeUninit<T>>,
}

// SAFETY: the value is shared (`&T`) only between holders of counted
// references and mutated only by the one thread that owns the slot alone (see
// the module docs); T is Send + Sync.
unsafe impl<T: Send + Sync> Sync for Slot<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Send for Slot<T> {}

/// A slab of `T` values named by generation-checked handles.
pub struct Slab<T> {
    /// Segment `s` (`FIRST_SEGMENT << s` slots), allocated on first use and
    /// never freed; null until then.
    segments: [AtomicPtr<Slot<T>>; SEGMENTS],
    /// Slots handed out so far (the next fresh index).
    fresh: AtomicU32,
    /// The free list's head: `tag << 32 | index + 1`.
    free: AtomicU64,
    /// Whole chains of free slots (first index + 1, 0: none), each linked
    /// through `next_free` to a 0 (see [`LocalFree`]).
    depot: Padded<Depot>,
    /// Handles made and handles released: their difference is the handles
    /// live. Two counters, not one: the submitting threads write the first,
    /// whoever releases (a worker, for a detached task) the second, so the
    /// two never write the same cache line.
    made: Counter,
    released: Counter,
}

static FORK_EPOCH: AtomicU8 = AtomicU8::new(0);

/// How many forks deep this process is (mod 256). Handles carry it, so a
/// forked child refuses its parent's; the default pool is chosen by it, so a
/// child starts with a fresh one and never touches a lock a thread of its
/// parent held.
pub fn fork_epoch() -> u8 {
    FORK_EPOCH.load(Relaxed)
}

/// Marks every handle made so far as belonging to the parent of a fork.
pub fn bump_fork_epoch() {
    FORK_EPOCH.fetch_add(1, Relaxed);
}

impl<T> Slab<T> {
    /// An empty slab, usable in a `static`: reaching it then costs no check
    /// of a lazy initialization on every take and free.
    #[cfg(not(all(test, loom)))]
    pub const fn new() -> Self {
        Slab {
            segments: [const { AtomicPtr::new(std::ptr::null_mut()) }; SEGMENTS],
            fresh: AtomicU32::new(0),
            free: AtomicU64::new(0),
            depot: Padded(Depot {
                places: [const { AtomicU32::new(0) }; DEPOT],
                filled: AtomicU32::new(0),
            }),
            made: Counter::new(),
            released: Counter::new(),
        }
    }
}

impl<T> Default for Slab<T> {
    #[cfg(not(all(test, loom)))]
    fn default() -> Self {
        Slab::new()
    }

    /// loom's atomics are not made in a `const fn`.
    #[cfg(all(test, loom))]
    fn default() -> Self {
        Slab {
            segments: std::array::from_fn(|_| AtomicPtr::new(std::ptr::null_mut())),
            fresh: AtomicU32::new(0),
            free: AtomicU64::new(0),
            depot: Padded(Depot {
                places: std::array::from_fn(|_| AtomicU32::new(0)),
                filled: AtomicU32::new(0),
            }),
            made: Counter::new(),
            released: Counter::new(),
        }
    }
}

/// Places for whole chains of free slots, and how many are filled: a hint
/// (it may lag a deposit or a withdrawal) that spares an empty depot's scan.
struct Depot {
    places: [AtomicU32; DEPOT],
    filled: AtomicU32,
}

/// A free slot taken for a new value, its alone: the value is filled
/// through [`Vacant::value`], then [`Vacant::publish`] makes the handle
/// live. Dropped unpublished, the slot is cleared and freed again.
pub struct Vacant<T: Slotted> {
    slot: &'static Slot<T>,
    /// The slot word as taken (its count 0).
    word: u64,
    handle: u64,
}

impl<T: Slotted> Vacant<T> {
    /// The handle the value gets.
    pub fn handle(&self) -> u64 {
        self.handle
    }

    /// The value to fill (what the slot's last value left: see
    /// [`Slotted::clear`]).
    pub fn value(&mut self) -> &mut T {
        // SAFETY: the slot is ours alone: its count is 0 (so no lookup can
        // take it), it is on no list, and `self` is borrowed mutably.
        unsafe { self.slot.value.get_mut() }
    }

    /// Makes the handle live; returns it with a reference to the value (the
    /// handle holds a reference of its own until [`Slab::remove`]).
    pub fn publish(self) -> (Ref<T>, u64) {
        let (slot, word, handle) = (self.slot, self.word, self.handle);
        std::mem::forget(self);
        T::slab().made.add(1);
        // The handle's reference and the returned one; Release publishes
        // the value to whoever looks the handle up.
        slot.word.store(word + 2, Release);
        (Ref { slot }, handle)
    }
}

impl<T: Slotted> Drop for Vacant<T> {
    fn drop(&mut self) {
        self.value().clear();
        // The handle it would have had is spent: the slot's next use gets
        // another (the count is 0 and the slot ours: a plain store).
        let next = u64::from(next_generation(generation(self.word))) << 32;
        self.slot.word.store(next, Relaxed);
        T::slab().free_slot(self.slot);
    }
}

/// Asks the CPU to bring `slot`'s cache lines in; a hint only (it never
/// faults, whatever the address). (A write hint, `prefetchw`, measured no
/// better on W1.)
#[inline(always)]
fn prefetch<T>(slot: *const Slot<T>) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let start = slot.cast::<i8>();
        let lines = std::mem::size_of::<Slot<T>>().div_ceil(64);
        for line in 0..lines {
            // SAFETY: a prefetch never faults and changes nothing but the
            // caches; the address is within the slot anyway.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(line * 64)) };
        }
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    let _ = slot;
}

/// A counted reference to a slot's value: `Clone` adds one, `Drop` removes
/// one and frees the slot with the last. One word, as an `Arc`.
pub struct Ref<T: Slotted> {
    slot: &'static Slot<T>,
}

/// A new reference to `slot`'s value while it has one and `valid(word)`
/// says its word still names the wanted value.
fn take_reference<T: Slotted>(
    slot: &'static Slot<T>,
    valid: impl Fn(u64) -> bool,
) -> Option<Ref<T>> {
    let mut word = slot.word.load(Acquire);
    loop {
        if references(word) == 0 || !valid(word) {
            return None;
        }
        match slot
            .word
            .compare_exchange_weak(word, word + 1, Acquire, Acquire)
        {
            Ok(_) => return Some(Ref { slot }),
            Err(now) => word = now,
        }
    }
}

fn split(index: u32) -> (usize, usize) {
    let n = u64::from(index) + (1 << FIRST_SEGMENT_BITS);
    let bit = 63 - n.leading_zeros();
    let segment = (bit - FIRST_SEGMENT_BITS) as usize;
    (segment, (n - (1 << bit)) as usize)
}

fn segment_len(segment: usize) -> usize {
    1 << (FIRST_SEGMENT_BITS as usize + segment)
}

fn generation(word: u64) -> u32 {
    (word >> 32) as u32
}

fn references(word: u64) -> u32 {
    word as u32
}

/// A slot's first generation: spread over the 32 bits by its index (never
/// 0), so that slots reused about as often never share a generation, and a
/// handle forged from a live one by changing its index (or a stray word)
/// names no live task but by a 1-in-2^32 chance.
fn first_generation(index: u32) -> u32 {
    index.wrapping_mul(0x9E37_79B9) | 1
}

fn next_generation(g: u32) -> u32 {
    if g == u32::MAX {
        1
    } else {
        g + 1
    }
}

struct Parts {
    epoch: u8,
    generation: u32,
    index: u32,
}

fn decode(handle: u64) -> Parts {
    Parts {
        epoch: (handle >> EPOCH_SHIFT) as u8,
        generation: (handle >> GENERATION_SHIFT) as u32,
        index: (handle & INDEX_MASK) as u32,
    }
}

fn encode(epoch: u8, generation: u32, index: u32) -> u64 {
    (u64::from(epoch) << EPOCH_SHIFT)
        | (u64::from(generation) << GENERATION_SHIFT)
        | u64::from(index)
}

/// Makes `slot` (index `index`), reserved and never taken, ready to be
/// taken: its index and first generation written (its zeroed value is the
/// default). The slot is the caller's alone: no list holds it, and its
/// count, 0, lets no lookup take it.
#[inline(always)]
fn make_ready<T: Slotted>(slot: &'static Slot<T>, index: u32) -> &'static Slot<T> {
    slot.index.store(index, Relaxed);
    // The zeroed value is `T::default()` (see `Slotted`); under loom the
    // segment is made slot by slot, its values not written yet.
    #[cfg(all(test, loom))]
    // SAFETY: the slot is ours alone (see above).
    unsafe { slot.value.uninit_mut() }.write(T::default());
    slot.word
        .store(u64::from(first_generation(index)) << 32, Relaxed);
    slot
}

/// A segment of `len` slots never taken (see [`Slot`]), leaked.
#[cfg(not(all(test, loom)))]
fn new_segment<T>(len: usize) -> *mut Slot<T> {
    let layout = std::alloc::Layout::array::<Slot<T>>(len).expect("a segment fits in memory");
    // SAFETY: the layout's size is not 0 (a slot holds atomics); all zeroes
    // is a valid `Slot` (atomics at 0, an uninitialised value).
    let segment = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<Slot<T>>();
    if segment.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    segment
}

/// Under loom every atomic is a modelled object: made one by one.
#[cfg(all(test, loom))]
fn new_segment<T>(len: usize) -> *mut Slot<T> {
    let slots: Box<[Slot<T>]> = (0..len)
        .map(|_| Slot {
            word: AtomicU64::new(0),
            next_free: AtomicU32::new(0),
            index: AtomicU32::new(0),
            value: Cell::uninit(),
        })
        .collect();
    Box::into_raw(slots).cast::<Slot<T>>()
}

/// Frees a segment from [`new_segment`] that was never shared.
fn free_segment<T>(segment: *mut Slot<T>, len: usize) {
    #[cfg(not(all(test, loom)))]
    // SAFETY: allocated by `new_segment` with this layout; its slots were
    // never taken, so no value is initialised.
    unsafe {
        let layout = std::alloc::Layout::array::<Slot<T>>(len).expect("as allocated");
        std::alloc::dealloc(segment.cast(), layout);
    }
    #[cfg(all(test, loom))]
    // SAFETY: the boxed slice `new_segment` made, of this length.
    drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(segment, len)) });
}

impl<T: Slotted> Slab<T> {
    /// Handles not released yet.
    pub fn live(&self) -> usize {
        // Released first: a handle made and released between the two reads
        // then counts as neither, never as released only.
        let released = self.released.sum();
        self.made.sum().saturating_sub(released) as usize
    }

    /// The slot `index`, when its segment exists.
    fn slot(&self, index: u32) -> Option<&'static Slot<T>> {
        // SAFETY: a pointer from `slot_ptr` points at a slot that lives
        // forever.
        self.slot_ptr(index).map(|slot| unsafe { &*slot })
    }

    /// The slot `index` as a pointer into its whole segment (so that its
    /// neighbours in the segment may be reached from it), when the segment
    /// exists.
    fn slot_ptr(&self, index: u32) -> Option<*const Slot<T>> {
        let (segment, offset) = split(index);
        let base = self.segments.get(segment)?.load(Acquire);
        if base.is_null() {
            return None;
        }
        // SAFETY: a non-null segment pointer came from an allocation of
        // `segment_len(segment)` slots (never freed), and `offset` is below
        // that length by construction of `split`.
        Some(unsafe { base.add(offset) }.cast_const())
    }

    /// The slot `index`, allocating its segment if needed.
    fn slot_or_grow(&self, index: u32) -> &'static Slot<T> {
        if let Some(slot) = self.slot(index) {
            return slot;
        }
        let (segment, _) = split(index);
        let len = segment_len(segment);
        let fresh = new_segment::<T>(len);
        if let Err(_other) =
            self.segments[segment].compare_exchange(std::ptr::null_mut(), fresh, AcqRel, Acquire)
        {
            // Another thread grew it first: ours was never shared.
            free_segment(fresh, len);
        }
        self.slot(index).expect("the segment exists now")
    }

    fn pop_free(&self) -> Option<u32> {
        let mut head = self.free.load(Acquire);
        loop {
            let top = head as u32;
            if top == 0 {
                return None;
            }
            let slot = self.slot(top - 1).expect("a free slot's segment exists");
            let next = u64::from(slot.next_free.load(Relaxed));
            let new = (head >> 32).wrapping_add(1) << 32 | next;
            match self.free.compare_exchange_weak(head, new, Acquire, Acquire) {
                Ok(_) => return Some(top - 1),
                Err(now) => head = now,
            }
        }
    }

    /// Takes the whole free list (a new tag with no slot, so a pop that read
    /// the old head fails its CAS); returns its first index + 1 (0: empty).
    /// The chain is the caller's alone from then on.
    fn take_all(&self) -> u32 {
        let mut head = self.free.load(Acquire);
        loop {
            if head as u32 == 0 {
                return 0;
            }
            let new = (head >> 32).wrapping_add(1) << 32;
            match self.free.compare_exchange_weak(head, new, Acquire, Acquire) {
                Ok(_) => return head as u32,
                Err(now) => head = now,
            }
        }
    }

    /// A slot from this thread's private chain, refilled when empty from its
    /// own freed run, else its reserved never-taken slots, else a chain from
    /// the depot, else the whole free list, else a new reservation (see
    /// [`LocalFree`]). `Ok(None)`: this slab keeps no private chains, or
    /// the thread's are gone (it is ending).
    #[inline]
    fn pop_local(&self) -> Result<Option<(u32, &'static Slot<T>)>, HandleError> {
        let Some(key) = T::local_free() else {
            return Ok(None);
        };
        key.try_with(|local| {
            let mut head = local.head.get();
            if head == 0 {
                head = match local.take_freed() {
                    Some((first, _)) => first,
                    None => {
                        if let Some(taken) = local.take_reserved() {
                            return Ok(Some(taken));
                        }
                        return self.refill_local(local).map(Some);
                    }
                };
            }
            let slot = self.slot(head - 1).expect("a free slot's segment exists");
            let next = slot.next_free.load(Relaxed);
            local.head.set(next);
            if next != 0 {
                // The next insert writes that slot, which the thread that
                // freed it (another CPU's) last wrote: its lines start on
                // their way here now rather than then.
                prefetch::<T>(self.slot(next - 1).expect("a free slot's segment exists"));
            }
            Ok(Some((head - 1, slot)))
        })
        .unwrap_or(Ok(None))
    }

    /// [`Slab::pop_local`] with the thread's chain, run and reserved slots
    /// empty: the first slot of a chain from the depot or of the whole
    /// free list (the rest becomes its chain), else one of a new
    /// reservation.
    #[inline(never)]
    fn refill_local(&self, local: &LocalFree<T>) -> Result<(u32, &'static Slot<T>), HandleError> {
        let head = match self.withdraw() {
            0 => self.take_all(),
            chain => chain,
        };
        if head != 0 {
            let slot = self.slot(head - 1).expect("a free slot's segment exists");
            local.head.set(slot.next_free.load(Relaxed));
            return Ok((head - 1, slot));
        }
        let (first, end) = self.reserve_fresh(FRESH_RUN)?;
        local.fresh_next.set(first);
        local.fresh_end.set(end);
        local.fresh_slot.set(
            self.slot_ptr(first)
                .expect("a reserved slot's segment exists"),
        );
        Ok(local.take_reserved().expect("just reserved"))
    }

    /// Puts a chain (first index + 1; 0: none, which is "deposited") whole
    /// into an empty place of the depot, one of the places for an ending
    /// thread's chains too when `at_exit`; false when those are all taken.
    fn deposit(&self, first: u32, at_exit: bool) -> bool {
        let places = if at_exit { DEPOT } else { DEPOT - EXIT_PLACES };
        if first == 0 {
            return true;
        }
        let put = self.depot.places[..places].iter().any(|place| {
            place.load(Relaxed) == 0 && place.compare_exchange(0, first, Release, Relaxed).is_ok()
        });
        if put {
            self.depot.filled.fetch_add(1, Relaxed);
        }
        put
    }

    /// Takes a whole chain out of the depot (its first index + 1; 0: the
    /// depot is empty). The chain is the caller's alone from then on.
    fn withdraw(&self) -> u32 {
        if self.depot.filled.load(Relaxed) == 0 {
            return 0;
        }
        for place in self.depot.places.iter() {
            if place.load(Relaxed) != 0 {
                let chain = place.swap(0, Acquire);
                if chain != 0 {
                    self.depot.filled.fetch_sub(1, Relaxed);
                    return chain;
                }
            }
        }
        0
    }

    /// A run of free slots (first index + 1 to `last`, whose link is 0)
    /// into the depot, or onto the free list with the depot full.
    fn hand_on_run(&self, first: u32, last: &Slot<T>) {
        if !self.deposit(first, false) {
            self.push_run(first, last);
        }
    }

    /// Puts a private chain (first index + 1; 0: empty) back on the free
    /// list whole.
    fn push_chain(&self, first: u32) {
        if first == 0 {
            return;
        }
        let mut last = self.slot(first - 1).expect("a free slot's segment exists");
        loop {
            let next = last.next_free.load(Relaxed);
            if next == 0 {
                break;
            }
            last = self.slot(next - 1).expect("a free slot's segment exists");
        }
        self.push_run(first, last);
    }

    /// Frees `slot` into this thread's run (see [`LocalFree`]), or onto
    /// the free list where the thread keeps none (or is ending).
    #[inline]
    fn free_slot(&self, slot: &'static Slot<T>) {
        let local = T::local_free().and_then(|key| {
            key.try_with(|local| {
                let first = local.freed.replace(slot.index.load(Relaxed) + 1);
                slot.next_free.store(first, Relaxed);
                if first == 0 {
                    local.freed_last.set(Some(slot));
                }
                let len = local.freed_len.get() + 1;
                local.freed_len.set(len);
                if len >= FREED_RUN {
                    let (first, last) = local.take_freed().expect("a full run");
                    self.hand_on_run(first, last);
                }
            })
            .ok()
        });
        if local.is_none() {
            self.push_run(slot.index.load(Relaxed) + 1, slot);
        }
    }

    /// Pushes a run of free slots linked through `next_free`, from `first`
    /// (an index + 1) to `last`, onto the free list with one CAS.
    fn push_run(&self, first: u32, last: &Slot<T>) {
        let mut head = self.free.load(Relaxed);
        loop {
            last.next_free.store(head as u32, Relaxed);
            let new = (head >> 32).wrapping_add(1) << 32 | u64::from(first);
            match self.free.compare_exchange_weak(head, new, Release, Relaxed) {
                Ok(_) => return,
                Err(now) => head = now,
            }
        }
    }

    /// Takes a free slot, fills it with `fill(value, handle)` and returns its
    /// handle with a reference to it (the handle holds a reference of its own
    /// until [`Slab::remove`]). The tests' shorthand for [`Slab::vacant`].
    #[cfg(test)]
    pub fn insert(&self, fill: impl FnOnce(&mut T, u64)) -> Result<(Ref<T>, u64), HandleError> {
        let mut vacant = self.vacant()?;
        let handle = vacant.handle();
        fill(vacant.value(), handle);
        Ok(vacant.publish())
    }

    /// Takes a free slot for a new value (see [`Vacant`]).
    #[inline(always)]
    pub fn vacant(&self) -> Result<Vacant<T>, HandleError> {
        debug_assert!(
            std::ptr::eq(self, T::slab()),
            "a value's slot is freed into T::slab()"
        );
        let (index, slot) = match self.pop_local()? {
            Some(taken) => taken,
            None => match self.pop_free() {
                Some(i) => (i, self.slot(i).expect("a free slot's segment exists")),
                None => {
                    let (index, _) = self.reserve_fresh(1)?;
                    (index, self.make_ready(index))
                }
            },
        };
        let word = slot.word.load(Relaxed);
        debug_assert_eq!(references(word), 0);
        Ok(Vacant {
            slot,
            word,
            handle: encode(fork_epoch(), generation(word), index),
        })
    }

    /// Reserves up to `n` slots never taken, all in one segment (which it
    /// allocates if needed): the first index and the end of the range.
    fn reserve_fresh(&self, n: u32) -> Result<(u32, u32), HandleError> {
        let limit = INDEX_MASK as u32 + 1;
        let mut first = self.fresh.load(Relaxed);
        let end = loop {
            if first >= limit {
                return Err(HandleError::Full);
            }
            let (segment, offset) = split(first);
            let segment_end = first + (segment_len(segment) - offset) as u32;
            let end = first.saturating_add(n).min(segment_end).min(limit);
            match self
                .fresh
                .compare_exchange_weak(first, end, Relaxed, Relaxed)
            {
                Ok(_) => break end,
                Err(now) => first = now,
            }
        };
        self.slot_or_grow(first);
        Ok((first, end))
    }

    /// Makes slot `index`, reserved and never taken, ready to be taken (see
    /// [`make_ready`]).
    fn make_ready(&self, index: u32) -> &'static Slot<T> {
        make_ready(
            self.slot(index).expect("a reserved slot's segment exists"),
            index,
        )
    }

    fn check(&self, handle: u64) -> Result<(Parts, &'static Slot<T>), HandleError> {
        let parts = decode(handle);
        if parts.generation == 0 {
            return Err(HandleError::Invalid);
        }
        let epoch = fork_epoch();
        if parts.epoch != epoch {
            // Only an epoch this process has left behind by forking is a
            // parent's handle; any other is forged.
            return Err(if parts.epoch < epoch {
                HandleError::Forked
            } else {
                HandleError::Invalid
            });
        }
        let slot = self.slot(parts.index).ok_or(HandleError::Invalid)?;
        Ok((parts, slot))
    }

    /// A reference to the value `handle` names.
    pub fn get(&self, handle: u64) -> Result<Ref<T>, HandleError> {
        let (parts, slot) = self.check(handle)?;
        take_reference(slot, |word| generation(word) == parts.generation)
            .ok_or(HandleError::Invalid)
    }

    /// A reference to the value in slot `index` while one exists (a slot
    /// in use), whichever handle names it: for a caller that knows some
    /// other reference to that slot lives meanwhile (see [`Ref::index`]).
    pub fn get_live(&self, index: u32) -> Option<Ref<T>> {
        take_reference(self.slot(index)?, |_| true)
    }

    /// Releases `handle`: it is invalid from now on. Returns the handle's
    /// reference to the value.
    pub fn remove(&self, handle: u64) -> Result<Ref<T>, HandleError> {
        let (parts, slot) = self.check(handle)?;
        self.end_generation(slot, parts.generation, 0)
            .map(|_| Ref { slot })
            .ok_or(HandleError::Invalid)
    }

    /// Moves `slot` past `generation_now` (its handle's) unless it is there
    /// already, counting `dropped` references out in the same step (0: the
    /// handle's reference becomes the caller's). Returns the references
    /// before, when this call released the handle.
    #[inline]
    fn end_generation(&self, slot: &Slot<T>, generation_now: u32, dropped: u32) -> Option<u32> {
        let mut word = slot.word.load(Acquire);
        loop {
            if generation(word) != generation_now || references(word) == 0 {
                return None;
            }
            debug_assert!(
                references(word) >= dropped,
                "the references counted out exist"
            );
            let new = u64::from(next_generation(generation_now)) << 32
                | u64::from(references(word) - dropped);
            // Release: the caller's use of the value happens before whoever
            // frees the slot; acquire: when that is the caller (its dropped
            // references were the last), every other holder's use happened
            // before (as in `free_last`).
            match slot.word.compare_exchange_weak(word, new, AcqRel, Acquire) {
                Ok(_) => {
                    self.released.add(1);
                    return Some(references(word));
                }
                Err(now) => word = now,
            }
        }
    }
}

impl<T: Slotted> Ref<T> {
    /// True when both name the same slot.
    pub fn ptr_eq(a: &Ref<T>, b: &Ref<T>) -> bool {
        std::ptr::eq(a.slot, b.slot)
    }

    /// Releases `handle`, the handle of this reference's own slot (a value
    /// that knows its handle), and drops this reference: [`Slab::remove`]
    /// without looking the handle up, with both references gone in one
    /// step. False when the handle was released already (only this
    /// reference goes then).
    pub fn release_own(this: Ref<T>, handle: u64) -> bool {
        debug_assert_eq!(decode(handle).index, Ref::index(&this), "its own handle");
        // The handle's reference and this one.
        let Some(before) = T::slab().end_generation(this.slot, decode(handle).generation, 2) else {
            return false; // `this` drops its own reference
        };
        // Both references are counted out already: `this` must not drop.
        let this = std::mem::ManuallyDrop::new(this);
        if before == 2 {
            Ref::free_last(this.slot);
        }
        true
    }

    /// The slot's index: names the value while this reference lives
    /// (see [`Slab::get_live`]).
    pub fn index(this: &Ref<T>) -> u32 {
        this.slot.index.load(Relaxed)
    }

    /// The slot's address, for identity only (never dereferenced).
    pub fn addr(this: &Ref<T>) -> usize {
        this.slot as *const Slot<T> as usize
    }
}

// SAFETY: the word is the slot's address (never 0), and the reference's
// count travels with it: `into_word` forgets the `Ref` without dropping its
// count, `from_word` makes the one `Ref` that owns it again.
unsafe impl<T: Slotted> crate::queue::Entry for Ref<T> {
    fn into_word(self) -> usize {
        let word = self.slot as *const Slot<T> as usize;
        std::mem::forget(self);
        word
    }

    unsafe fn from_word(word: usize) -> Self {
        // SAFETY: per the trait's contract, the address of a slot (which
        // lives forever) whose counted reference this word carried.
        let slot = unsafe { &*(word as *const Slot<T>) };
        Ref { slot }
    }

    fn prefetch(word: usize) {
        prefetch(word as *const Slot<T>);
    }
}

impl<T: Slotted> std::ops::Deref for Ref<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: this reference is counted in the slot's word.
        unsafe { self.slot.value.get() }
    }
}

impl<T: Slotted> Clone for Ref<T> {
    fn clone(&self) -> Self {
        // Relaxed, as Arc: a new reference is made from an existing one.
        self.slot.word.fetch_add(1, Relaxed);
        Ref { slot: self.slot }
    }
}

impl<T: Slotted> Drop for Ref<T> {
    #[inline(always)]
    fn drop(&mut self) {
        if references(self.slot.word.fetch_sub(1, Release)) == 1 {
            Ref::free_last(self.slot);
        }
    }
}

impl<T: Slotted> Ref<T> {
    /// The last reference to `slot` is gone: its value is cleared and the
    /// slot freed.
    #[inline(never)]
    fn free_last(slot: &'static Slot<T>) {
        // The last reference: every other holder's use happens before this.
        // An acquire load of the word rather than a fence: the same ordering
        // (it reads the end of the release sequence of every drop), and
        // ThreadSanitizer, which does not model fences, sees it too.
        slot.word.load(Acquire);
        // SAFETY: the count is 0 with the handle released, so no reference
        // exists and no lookup can take one: the slot is ours alone.
        unsafe { slot.value.get_mut() }.clear();
        T::slab().free_slot(slot);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// A value type with a slab of its own (each test gets one, so their
    /// counts do not mix), reachable from a static as the task slab is;
    /// with a `$chain`, its inserts go through that private chain.
    macro_rules! value_type {
        ($name:ident $(, $chain:ident)?) => {
            #[derive(Default)]
            struct $name(u32);

            $(thread_local! {
                static $chain: LocalFree<$name> = const { LocalFree::new() };
            })?

            // SAFETY: a u32; all zeroes is its default.
            unsafe impl Slotted for $name {
                fn slab() -> &'static Slab<Self> {
                    static SLAB: once_cell::sync::Lazy<Slab<$name>> =
                        once_cell::sync::Lazy::new(Slab::default);
                    &SLAB
                }

                fn clear(&mut self) {
                    self.0 = 0;
                }

                $(fn local_free() -> Option<&'static std::thread::LocalKey<LocalFree<Self>>> {
                    Some(&$chain)
                })?
            }

            impl $name {
                #[allow(dead_code)]
                fn put(v: u32) -> u64 {
                    Self::slab().insert(|value, _| value.0 = v).unwrap().1
                }
            }
        };
    }

    value_type!(Chained, CHAIN);

    /// A thread with nothing free reserves never-taken slots together; the
    /// ones it did not use go back when it ends, so no index is lost. A
    /// never-taken slot is named by no handle.
    #[test]
    fn reserved_slots_are_used_in_order_and_given_back_at_a_threads_end() {
        value_type!(Reserved, OWN);
        let s = Reserved::slab();
        let taken = std::thread::spawn(move || {
            let handles: Vec<u64> = (0..3)
                .map(|v| s.insert(|value, _| value.0 = v).unwrap().1)
                .collect();
            let indices: Vec<u64> = handles.iter().map(|h| h & INDEX_MASK).collect();
            assert_eq!(indices[1], indices[0] + 1, "in order: {indices:?}");
            assert_eq!(indices[2], indices[0] + 2, "in order: {indices:?}");
            // The next reserved slot exists (its segment is allocated) but
            // was never taken: a handle forged for it is refused.
            let forged = encode(
                fork_epoch(),
                first_generation(indices[2] as u32 + 1),
                indices[2] as u32 + 1,
            );
            assert_eq!(s.get(forged).err(), Some(HandleError::Invalid));
            handles
        })
        .join()
        .unwrap();
        let fresh = s.fresh.load(Relaxed);
        // The ending thread gave its other reserved slots back: this many
        // inserts take no new one.
        let reused: Vec<u64> = std::thread::spawn(move || {
            (0..FRESH_RUN - 3)
                .map(|v| s.insert(|value, _| value.0 = v).unwrap().1)
                .collect()
        })
        .join()
        .unwrap();
        assert_eq!(s.fresh.load(Relaxed), fresh, "no slot reserved anew");
        for h in taken.iter().chain(&reused) {
            assert!(s.remove(*h).is_ok());
        }
    }

    #[test]
    fn private_chains_reuse_a_threads_own_frees_and_give_everything_back_at_its_end() {
        let s = Chained::slab();
        let put = |v: u32| Chained::slab().insert(|value, _| value.0 = v).unwrap().1;
        let free = |h: &u64| drop(Chained::slab().remove(*h).unwrap());
        let indices = |hs: &[u64]| {
            let mut i: Vec<u64> = hs.iter().map(|h| h & INDEX_MASK).collect();
            i.sort_unstable();
            i
        };
        // Nothing free for other threads: neither the free list nor the
        // depot holds a slot.
        let shared_empty = || {
            s.free.load(Relaxed) as u32 == 0 && s.depot.places.iter().all(|p| p.load(Relaxed) == 0)
        };
        // A thread's frees stay with it: its next inserts reuse them without
        // the shared list. When it ends, what it holds goes back.
        let ten = std::thread::spawn(move || {
            let first: Vec<u64> = (0..10).map(put).collect();
            first.iter().for_each(free);
            assert!(shared_empty(), "ten frees stay with their thread");
            let again: Vec<u64> = (0..10).map(|v| put(10 + v)).collect();
            assert_eq!(indices(&first), indices(&again), "its own slots, reused");
            again.iter().for_each(free);
            indices(&again)
        })
        .join()
        .unwrap();
        assert!(!shared_empty(), "given back at the thread's end");
        let fresh = s.fresh.load(Relaxed);
        // Another thread takes all ten into its chain, uses three, and gives
        // the other seven back when it ends.
        let theirs: Vec<u64> = std::thread::spawn(move || (0..3).map(|v| put(100 + v)).collect())
            .join()
            .unwrap();
        let mine: Vec<u64> = (0..7).map(|v| put(200 + v)).collect();
        assert_eq!(s.fresh.load(Relaxed), fresh, "every slot was reused");
        let all: Vec<u64> = theirs.iter().chain(&mine).copied().collect();
        assert_eq!(indices(&all), ten, "each of the ten handed out once");
        for (h, v) in theirs.iter().zip(100..).chain(mine.iter().zip(200..)) {
            assert_eq!(s.get(*h).unwrap().0, v);
        }
        // A full run of frees is shared at once (into the depot).
        std::thread::spawn(move || {
            let run: Vec<u64> = (0..FREED_RUN).map(put).collect();
            run[..run.len() - 1].iter().for_each(free);
            assert!(shared_empty(), "a run short of full stays");
            free(run.last().unwrap());
            assert!(!shared_empty(), "a full run is shared");
            assert_eq!(s.free.load(Relaxed) as u32, 0, "whole, in the depot");
            CHAIN.with(|c| assert_eq!((c.freed.get(), c.freed_len.get()), (0, 0)));
        })
        .join()
        .unwrap();
        mine.iter().chain(&theirs).for_each(free);
    }

    #[test]
    fn segments_cover_every_index_once() {
        assert_eq!(split(0), (0, 0));
        assert_eq!(split(63), (0, 63));
        assert_eq!(split(64), (1, 0));
        assert_eq!(split(191), (1, 127));
        assert_eq!(split(192), (2, 0));
        let last = split(INDEX_MASK as u32);
        assert!(last.0 < SEGMENTS && last.1 < segment_len(last.0));
    }

    #[test]
    fn handles_are_nonzero_and_generation_checked() {
        value_type!(V);
        let s = V::slab();
        let h = V::put(7);
        assert_ne!(h, 0);
        assert_eq!(s.get(h).unwrap().0, 7);
        assert_eq!(s.remove(h).unwrap().0, 7);
        assert_eq!(s.get(h).err(), Some(HandleError::Invalid));
        assert_eq!(s.remove(h).err(), Some(HandleError::Invalid));
        // The slot is reused with a new generation: the old handle stays dead.
        let h2 = V::put(8);
        assert_ne!(h, h2);
        assert_eq!(h & INDEX_MASK, h2 & INDEX_MASK);
        assert_eq!(s.get(h).err(), Some(HandleError::Invalid));
        assert_eq!(s.get(h2).unwrap().0, 8);
    }

    #[test]
    fn a_reference_releases_its_own_handle_once_and_goes_with_it() {
        value_type!(V);
        let s = V::slab();
        let (held, h) = s.insert(|value, _| value.0 = 5).unwrap();
        let other = held.clone();
        assert!(Ref::release_own(held, h));
        assert_eq!(s.get(h).err(), Some(HandleError::Invalid));
        assert!(!Ref::release_own(other.clone(), h), "released already");
        assert_eq!(s.remove(h).err(), Some(HandleError::Invalid));
        // The other reference keeps the value; the last one frees the slot.
        assert_eq!(other.0, 5);
        drop(other);
        let h2 = V::put(6);
        assert_eq!(h & INDEX_MASK, h2 & INDEX_MASK, "the slot was free again");
        assert_eq!(s.get(h2).unwrap().0, 6);
        // The handle's reference and the last other one: freed at once.
        let (held, h3) = s.insert(|value, _| value.0 = 9).unwrap();
        assert!(Ref::release_own(held, h3));
        let h4 = V::put(10);
        assert_eq!(h3 & INDEX_MASK, h4 & INDEX_MASK, "freed with the handle");
        assert_eq!(s.live(), 2, "h2 and h4");
    }

    #[test]
    fn a_vacant_slot_dropped_unpublished_is_cleared_and_free_again() {
        value_type!(V);
        let s = V::slab();
        let mut vacant = s.vacant().unwrap();
        let h = vacant.handle();
        vacant.value().0 = 9;
        assert_eq!(s.get(h).err(), Some(HandleError::Invalid), "not live yet");
        drop(vacant);
        assert_eq!(s.live(), 0);
        let h2 = V::put(4);
        assert_eq!(h2 & INDEX_MASK, h & INDEX_MASK, "the slot was free again");
        assert_eq!(s.get(h2).unwrap().0, 4);
        assert_eq!(s.live(), 1);
    }

    #[test]
    fn the_depot_holds_whole_chains_up_to_its_size() {
        value_type!(V);
        let s = V::slab();
        let _ = V::put(0);
        // Chains are only named by their first index + 1 here: the depot
        // never follows their links.
        assert!(s.deposit(0, false), "an empty chain needs no place");
        for chain in 1..=(DEPOT - EXIT_PLACES) as u32 {
            assert!(s.deposit(chain, false));
        }
        assert!(
            !s.deposit(99, false),
            "full but for an ending thread's chains"
        );
        for chain in (DEPOT - EXIT_PLACES + 1) as u32..=DEPOT as u32 {
            assert!(s.deposit(chain, true));
        }
        assert!(!s.deposit(99, true), "full");
        assert_eq!(s.depot.filled.load(Relaxed), DEPOT as u32);
        let mut taken: Vec<u32> = (0..DEPOT).map(|_| s.withdraw()).collect();
        taken.sort_unstable();
        assert_eq!(taken, (1..=DEPOT as u32).collect::<Vec<_>>());
        assert_eq!(s.withdraw(), 0, "empty");
        assert_eq!(
            s.depot.filled.load(Relaxed),
            0,
            "an empty depot is not scanned"
        );
    }

    #[test]
    fn a_released_handle_is_refused_while_its_value_lives() {
        value_type!(V);
        let s = V::slab();
        let (held, h) = s.insert(|value, _| value.0 = 3).unwrap();
        drop(s.remove(h).unwrap());
        assert_eq!(s.get(h).err(), Some(HandleError::Invalid));
        assert_eq!(held.0, 3, "the reference keeps the value");
        let h2 = V::put(4);
        assert_ne!(h & INDEX_MASK, h2 & INDEX_MASK, "the slot is still taken");
        drop(held);
        assert_eq!(s.live(), 1);
        let h3 = V::put(5);
        assert_eq!(
            h & INDEX_MASK,
            h3 & INDEX_MASK,
            "freed with its last reference"
        );
    }

    #[test]
    fn zero_and_forged_handles_are_refused() {
        value_type!(V);
        let s = V::slab();
        assert_eq!(s.get(0).err(), Some(HandleError::Invalid));
        assert_eq!(s.get(0xdead_beef).err(), Some(HandleError::Invalid));
        assert_eq!(s.get(u64::MAX).err(), Some(HandleError::Invalid));
        let h = V::put(1);
        assert_eq!(s.get(h ^ (1 << 30)).err(), Some(HandleError::Invalid));
        assert_eq!(
            s.get(h + 1).err(),
            Some(HandleError::Invalid),
            "a slot never handed out"
        );
        assert_eq!(s.live(), 1);
    }

    #[test]
    fn changing_a_live_handles_index_names_no_other_live_slot() {
        value_type!(V);
        let s = V::slab();
        let handles: Vec<u64> = (0..64).map(V::put).collect();
        for &h in &handles {
            for bit in 0..6 {
                assert_eq!(s.get(h ^ (1 << bit)).err(), Some(HandleError::Invalid));
            }
        }
    }

    #[test]
    fn a_released_handle_stays_invalid_after_many_reuses() {
        value_type!(V);
        let s = V::slab();
        let old = V::put(0);
        drop(s.remove(old).unwrap());
        for i in 0..10_000 {
            let h = V::put(i);
            assert_ne!(h, old);
            drop(s.remove(h).unwrap());
        }
        assert_eq!(s.get(old).err(), Some(HandleError::Invalid));
        assert_eq!(s.live(), 0);
    }
}

/// Model checks of the two protocols: every interleaving of a few threads,
/// with bounded preemptions (`make test-loom`).
#[cfg(all(test, loom))]
mod loom_tests {
    use loom::sync::atomic::{AtomicUsize, Ordering};
    use loom::sync::Arc;
    use loom::thread;

    use super::{HandleError, Slab, Slotted};

    /// A value that counts how often slots were cleared.
    #[derive(Default)]
    struct Value {
        n: u32,
        cleared: Option<Arc<AtomicUsize>>,
    }

    loom::lazy_static! {
        /// Made anew for each execution of a model.
        static ref SLAB: Slab<Value> = Slab::default();
    }

    // SAFETY: under loom a slot's value is written with its default when
    // first taken (see `Slab::make_ready`), never read zeroed.
    unsafe impl Slotted for Value {
        fn slab() -> &'static Slab<Self> {
            &SLAB
        }

        fn clear(&mut self) {
            self.n = 0;
            if let Some(c) = self.cleared.take() {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn put(n: u32, cleared: &Arc<AtomicUsize>) -> (super::Ref<Value>, u64) {
        let cleared = cleared.clone();
        Value::slab()
            .insert(move |v, _| {
                v.n = n;
                v.cleared = Some(cleared);
            })
            .unwrap()
    }

    /// A lookup racing the release of the handle and the drop of the last
    /// other reference: it gets the live value or is refused; the slot is
    /// cleared exactly once, after every reference is gone, and never
    /// resurrected.
    #[test]
    fn a_lookup_racing_the_last_release_never_sees_a_freed_slot() {
        loom::model(|| {
            let s = Value::slab();
            let cleared = Arc::new(AtomicUsize::new(0));
            let (queue_ref, h) = put(7, &cleared);
            let looker = thread::spawn(move || match Value::slab().get(h) {
                Ok(r) => assert_eq!(r.n, 7, "a counted reference sees the live value"),
                Err(e) => assert_eq!(e, HandleError::Invalid),
            });
            let releaser = thread::spawn(move || drop(Value::slab().remove(h).unwrap()));
            drop(queue_ref);
            looker.join().unwrap();
            releaser.join().unwrap();
            assert_eq!(cleared.load(Ordering::Relaxed), 1);
            assert_eq!(s.get(h).err(), Some(HandleError::Invalid));
            assert_eq!(s.live(), 0);
        });
    }

    /// A holder releasing the handle together with its own reference (as a
    /// worker does for a detached task) races a lookup and a user's release
    /// of the same handle: exactly one release wins, the lookup sees the
    /// live value or is refused, and the slot is cleared exactly once, after
    /// the last reference.
    #[test]
    fn releasing_the_own_handle_with_the_reference_races_a_lookup_and_a_release() {
        loom::model(|| {
            let s = Value::slab();
            let cleared = Arc::new(AtomicUsize::new(0));
            let (held, h) = put(7, &cleared);
            let looker = thread::spawn(move || match Value::slab().get(h) {
                Ok(r) => assert_eq!(r.n, 7, "a counted reference sees the live value"),
                Err(e) => assert_eq!(e, HandleError::Invalid),
            });
            let user = thread::spawn(move || Value::slab().remove(h).map(drop).is_ok());
            let by_holder = super::Ref::release_own(held, h);
            looker.join().unwrap();
            let by_user = user.join().unwrap();
            assert!(by_holder != by_user, "exactly one release wins");
            assert_eq!(cleared.load(Ordering::Relaxed), 1);
            assert_eq!(s.get(h).err(), Some(HandleError::Invalid));
            assert_eq!(s.live(), 0);
        });
    }

    /// A thread taking the whole free list (into a private chain) while
    /// another pops one slot and a third frees one: no slot is taken twice,
    /// and none is lost.
    #[test]
    fn taking_the_whole_free_list_races_a_pop_and_a_free_safely() {
        loom::model(|| {
            let s = Value::slab();
            let cleared = Arc::new(AtomicUsize::new(0));
            let a = put(1, &cleared).1;
            let b = put(2, &cleared).1;
            let c = put(3, &cleared).1;
            drop(s.remove(a).unwrap());
            drop(s.remove(b).unwrap());
            let freer = thread::spawn(move || drop(Value::slab().remove(c).unwrap()));
            let popper = thread::spawn(|| Value::slab().pop_free());
            let s2 = Value::slab();
            let mut chain = vec![];
            let mut next = s2.take_all();
            while next != 0 {
                chain.push(next - 1);
                next = s2.slot(next - 1).unwrap().next_free.load(Ordering::Relaxed);
            }
            freer.join().unwrap();
            let popped = popper.join().unwrap();
            let mut all: Vec<u32> = chain.iter().copied().chain(popped).collect();
            // Whatever neither took is still on the list.
            while let Some(i) = s.pop_free() {
                all.push(i);
            }
            all.sort_unstable();
            assert_eq!(all, vec![0, 1, 2], "each free slot taken exactly once");
        });
    }

    /// Two threads putting chains into the depot while a third takes one:
    /// each chain comes out once, whole, with the links its depositor wrote
    /// (a deposit publishes them; a `Relaxed` one would lose them here).
    #[test]
    fn the_depot_hands_each_chain_out_once_with_its_links() {
        loom::model(|| {
            let cleared = Arc::new(AtomicUsize::new(0));
            // Slots 0, 1 and 2, held (their links unused meanwhile).
            let held: Vec<_> = (0..3).map(|n| put(n, &cleared)).collect();
            let s = Value::slab();
            let a = thread::spawn(|| {
                let s = Value::slab();
                // The chain 0 -> 1.
                s.slot(0).unwrap().next_free.store(2, Ordering::Relaxed);
                s.slot(1).unwrap().next_free.store(0, Ordering::Relaxed);
                assert!(s.deposit(1, true));
            });
            let b = thread::spawn(|| {
                let s = Value::slab();
                s.slot(2).unwrap().next_free.store(0, Ordering::Relaxed);
                assert!(s.deposit(3, true));
            });
            let walk = |mut next: u32, seen: &mut Vec<u32>| {
                while next != 0 {
                    seen.push(next - 1);
                    next = s.slot(next - 1).unwrap().next_free.load(Ordering::Relaxed);
                }
            };
            // Walked before the joins: only the deposit orders the links.
            let mut seen = vec![];
            walk(s.withdraw(), &mut seen);
            a.join().unwrap();
            b.join().unwrap();
            walk(s.withdraw(), &mut seen);
            walk(s.withdraw(), &mut seen);
            assert_eq!(s.withdraw(), 0, "each chain taken once");
            seen.sort_unstable();
            assert_eq!(seen, vec![0, 1, 2], "every chain whole");
            for (r, h) in held {
                drop(r);
                drop(s.remove(h).unwrap());
            }
        });
    }

    /// A thread freeing slots while two take free ones: no slot is handed
    /// out twice, and each new handle names its own value.
    #[test]
    fn the_free_list_hands_each_slot_out_once() {
        loom::model(|| {
            let s = Value::slab();
            let cleared = Arc::new(AtomicUsize::new(0));
            let a = put(1, &cleared).1;
            let b = put(2, &cleared).1;
            let freer = thread::spawn(move || {
                drop(Value::slab().remove(a).unwrap());
                drop(Value::slab().remove(b).unwrap());
            });
            let takers: Vec<_> = (10..12)
                .map(|n| {
                    let c = cleared.clone();
                    thread::spawn(move || {
                        let h = put(n, &c).1;
                        assert_eq!(Value::slab().get(h).unwrap().n, n);
                        h
                    })
                })
                .collect();
            let handles: Vec<u64> = takers.into_iter().map(|t| t.join().unwrap()).collect();
            freer.join().unwrap();
            let index = |h: u64| h & ((1 << 24) - 1);
            assert_ne!(index(handles[0]), index(handles[1]));
            for (h, n) in handles.iter().zip(10..) {
                assert_eq!(s.get(*h).unwrap().n, n);
                drop(s.remove(*h).unwrap());
            }
            assert_eq!(cleared.load(Ordering::Relaxed), 4);
            assert_eq!(s.live(), 0);
        });
    }
}
