//! A task's state in one atomic word, so that starting, finishing and
//! publishing a task take no lock.
//!
//! The word holds the task's phase (waiting for its limiter, queued,
//! running, returned), whether its outcome is decided and which it is, and
//! the flags of its life after that: published, released, someone waiting,
//! run in a slot of its own, holding a place of its limiter, its slot given
//! back by a cancel. Every transition is one CAS or `fetch_or` that sees all
//! of them at once, so:
//!
//! - the outcome is decided exactly once: by the callable returning, a
//!   cancel or an expiry, whichever sets `DECIDED` first;
//! - the table a task starts with belongs to exactly one thread: the one
//!   whose transition moves the task out of waiting or queued (its start, or
//!   a decision before it started), which the word lets only one thread
//!   make; a start hands that thread a token to take it with (an empty one
//!   is left in place, see [`StartWith`]);
//! - the result moves exactly once: it is swapped out of its atomic by
//!   whoever takes it (a poll or wait after the publish, or the free of a
//!   result nobody can receive: publish and release each set their flag with
//!   one `fetch_or`, and whichever sees the other's flag frees it);
//! - a waiter sets `WAITERS` before it sleeps on the word (a futex: it
//!   sleeps only while the word is what it last saw), and a publisher that
//!   sees the flag wakes the word's sleepers after its `fetch_or` changed
//!   it, so no wake-up is lost (both are read-modify-writes of the one word,
//!   so one sees the other's).
//!
//! The code and result are written by the thread that decided the outcome,
//! before it publishes; readers look at them only after they saw
//! `PUBLISHED` (acquire). `loom_tests` model-checks the protocol under
//! `--cfg loom` (make test-loom).

#![allow(unsafe_code)]

use std::time::Instant;

#[cfg(all(test, loom))]
use loom::sync::atomic::{AtomicI32, AtomicU32, AtomicUsize};
#[cfg(all(test, loom))]
use loom::sync::{Condvar, Mutex};
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, SeqCst};
#[cfg(not(all(test, loom)))]
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicUsize};

use crate::status::*;

/// Where a task is in its life.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Phase {
    /// Waiting for its limiter to admit it.
    Waiting = 0,
    /// In its pool's queue.
    Queued = 1,
    /// Its callable runs.
    Running = 2,
    /// Its callable returned.
    Returned = 3,
}

const PHASE: u32 = 0b11;
const DECIDED: u32 = 1 << 2;
const STATUS_SHIFT: u32 = 3;
const STATUS: u32 = 0b11 << STATUS_SHIFT;
const PUBLISHED: u32 = 1 << 5;
const RELEASED: u32 = 1 << 6;
const WAITERS: u32 = 1 << 7;
const OWN_SLOT: u32 = 1 << 8;
const HOLDS_PLACE: u32 = 1 << 9;
const SLOT_GIVEN_BACK: u32 = 1 << 10;

/// The terminal statuses, in the order of their two bits in the word.
const STATUSES: [asyncify_status; 4] = [
    ASYNCIFY_OK,
    ASYNCIFY_FAILED,
    ASYNCIFY_CANCELLED,
    ASYNCIFY_EXPIRED,
];

fn phase(word: u32) -> Phase {
    match word & PHASE {
        0 => Phase::Waiting,
        1 => Phase::Queued,
        2 => Phase::Running,
        _ => Phase::Returned,
    }
}

fn with_phase(word: u32, phase: Phase) -> u32 {
    (word & !PHASE) | phase as u32
}

fn status_bits(status: asyncify_status) -> u32 {
    let index = STATUSES
        .iter()
        .position(|&s| s == status)
        .expect("a terminal status");
    (index as u32) << STATUS_SHIFT
}

fn status(word: u32) -> asyncify_status {
    STATUSES[((word & STATUS) >> STATUS_SHIFT) as usize]
}

fn unstarted(word: u32) -> bool {
    matches!(phase(word), Phase::Waiting | Phase::Queued)
}

/// The table (or any value) a task starts with: owned by whichever single
/// transition takes it (see the module docs).
#[cfg(not(all(test, loom)))]
struct Owned<T>(std::cell::UnsafeCell<T>);
#[cfg(all(test, loom))]
struct Owned<T>(loom::cell::UnsafeCell<T>);

impl<T: Default> Owned<T> {
    fn new(value: T) -> Self {
        #[cfg(not(all(test, loom)))]
        return Owned(std::cell::UnsafeCell::new(value));
        #[cfg(all(test, loom))]
        return Owned(loom::cell::UnsafeCell::new(value));
    }

    /// # Safety
    /// The caller made the one transition that owns the value, or has the
    /// task to itself: nobody else reads or writes it meanwhile.
    unsafe fn take(&self) -> T {
        #[cfg(not(all(test, loom)))]
        // SAFETY: per this function's contract, no other access exists.
        return std::mem::take(unsafe { &mut *self.0.get() });
        #[cfg(all(test, loom))]
        // SAFETY: as above; loom checks it.
        return self.0.with_mut(|p| std::mem::take(unsafe { &mut *p }));
    }

    /// # Safety
    /// As [`Owned::take`].
    unsafe fn read<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        #[cfg(not(all(test, loom)))]
        // SAFETY: per this function's contract, no other access exists.
        return f(unsafe { &*self.0.get() });
        #[cfg(all(test, loom))]
        // SAFETY: as above; loom checks it.
        return self.0.with(|p| f(unsafe { &*p }));
    }

    /// # Safety
    /// As [`Owned::take`].
    unsafe fn put(&self, value: T) -> T {
        #[cfg(not(all(test, loom)))]
        // SAFETY: per this function's contract, no other access exists.
        return std::mem::replace(unsafe { &mut *self.0.get() }, value);
        #[cfg(all(test, loom))]
        // SAFETY: as above; loom checks it.
        return self
            .0
            .with_mut(|p| std::mem::replace(unsafe { &mut *p }, value));
    }
}

// SAFETY: the value moves between threads only as the one owning
// transition of the word hands it over (acquire/release on the word).
unsafe impl<T: Send> Sync for Owned<T> {}

/// A task's state: the word, the work function's code and result, the
/// value it starts with (`T`: its table), and what its waiters sleep on.
pub(crate) struct TaskState<T> {
    word: AtomicU32,
    code: AtomicI32,
    /// A result that has not moved yet (0: none).
    result: AtomicUsize,
    start_with: Owned<T>,
    /// Under loom, what a futex on `word` does: a waiter compares the word
    /// under the lock, a waker takes the lock after changing it.
    #[cfg(all(test, loom))]
    parking: (Mutex<()>, Condvar),
}

/// What a task starts with (its table): it moves to the thread that starts
/// the task, unless it holds nothing.
pub(crate) trait StartWith: Default {
    /// True when it holds nothing, as its default does.
    fn holds_nothing(&self) -> bool;
}

/// A task this thread has just started (see [`TaskState::start`]): what it
/// starts with is this thread's to take, once.
#[must_use]
pub(crate) struct StartedWith<'a, T> {
    state: &'a TaskState<T>,
    /// It holds something (else it stays in place, as its default).
    holds: bool,
}

impl<T: StartWith> StartedWith<'_, T> {
    /// What the task starts with; None when that holds nothing (nothing is
    /// moved then).
    #[inline(always)]
    pub(crate) fn take(self) -> Option<T> {
        // SAFETY: only the thread whose transition started the task gets a
        // `StartedWith`, which this consumes: no other access exists.
        self.holds.then(|| unsafe { self.state.start_with.take() })
    }
}

/// What a cancel or an expiry decided (see [`TaskState::decide_early`]).
pub(crate) struct Early<T> {
    /// The phase it was decided in.
    pub(crate) was: Phase,
    /// It held a place of its limiter, which is free now (never while
    /// running: the callable keeps it until it returns).
    pub(crate) place: bool,
    /// What it would have started with, when it had not started.
    pub(crate) start_with: T,
    /// The running task's slot is to be given back now.
    pub(crate) give_back: bool,
}

/// What the callable's return decided (see [`TaskState::returned`]).
pub(crate) struct Returned {
    /// Decided here: the status; `None` when a cancel had abandoned it.
    pub(crate) status: Option<asyncify_status>,
    /// It held a place of its limiter, free now.
    pub(crate) place: bool,
}

impl<T: Default> TaskState<T> {
    pub(crate) fn new(phase: Phase, start_with: T) -> Self {
        TaskState {
            word: AtomicU32::new(phase as u32),
            code: AtomicI32::new(0),
            result: AtomicUsize::new(0),
            start_with: Owned::new(start_with),
            #[cfg(all(test, loom))]
            parking: (Mutex::new(()), Condvar::new()),
        }
    }

    /// A new task in this state's slot, which the caller has to itself
    /// (`holds_place`: admitted by its limiter already). Returns what the
    /// last task left to start with (nothing, unless it never started nor
    /// was decided).
    pub(crate) fn reset(&mut self, phase: Phase, holds_place: bool, start_with: T) -> T {
        let place = if holds_place { HOLDS_PLACE } else { 0 };
        self.word.store(phase as u32 | place, Relaxed);
        self.code.store(0, Relaxed);
        self.result.store(0, Relaxed);
        // SAFETY: `&mut self`: nobody else has the task.
        unsafe { self.start_with.put(start_with) }
    }

    /// Drops what the task would have started with, from a slot the caller
    /// has to itself (a start or a cancel took it already, but from a task
    /// withdrawn at submit); nothing is moved when it holds nothing.
    pub(crate) fn clear(&mut self)
    where
        T: StartWith,
    {
        // SAFETY: `&mut self`: nobody else has the task.
        if !unsafe { self.start_with.read(T::holds_nothing) } {
            // SAFETY: as above.
            drop(unsafe { self.start_with.take() });
        }
    }

    /// What the task would have started with, taken from a slot the caller
    /// has to itself.
    #[cfg(test)]
    pub(crate) fn take_start_with(&mut self) -> T {
        // SAFETY: `&mut self`: nobody else has the task.
        unsafe { self.start_with.take() }
    }

    fn update(&self, change: impl FnMut(u32) -> Option<u32>) -> Result<u32, u32> {
        self.word.fetch_update(AcqRel, Acquire, change)
    }

    /// Waiting → Queued, holding a place of its limiter, unless decided.
    pub(crate) fn admit(&self) -> bool {
        self.update(|w| {
            (phase(w) == Phase::Waiting && w & DECIDED == 0)
                .then(|| with_phase(w, Phase::Queued) | HOLDS_PLACE)
        })
        .is_ok()
    }

    /// Queued → Running (in a slot of its own when `own_slot`), unless
    /// decided; then what it starts with is this thread's to take.
    pub(crate) fn start(&self, own_slot: bool) -> Option<StartedWith<'_, T>>
    where
        T: StartWith,
    {
        let own = if own_slot { OWN_SLOT } else { 0 };
        self.update(|w| {
            (phase(w) == Phase::Queued && w & DECIDED == 0)
                .then(|| with_phase(w, Phase::Running) | own)
        })
        .ok()?;
        // SAFETY: this thread moved the task out of Queued undecided; no
        // other transition takes the value then (see the module docs).
        let holds = !unsafe { self.start_with.read(T::holds_nothing) };
        Some(StartedWith { state: self, holds })
    }

    /// The callable returned `code`: Running → Returned, deciding OK or
    /// FAILED unless a cancel decided first. `result` stays on the task
    /// when `keep_result` (no `on_done` takes it).
    pub(crate) fn returned(&self, code: i32, result: usize, keep_result: bool) -> Returned {
        // Before the decision, so that a cancel that sees it reads the code.
        self.code.store(code, Relaxed);
        let status = if code == 0 {
            ASYNCIFY_OK
        } else {
            ASYNCIFY_FAILED
        };
        let was = self
            .update(|w| {
                let w = with_phase(w, Phase::Returned) & !HOLDS_PLACE;
                Some(if w & DECIDED == 0 {
                    w | DECIDED | status_bits(status)
                } else {
                    w
                })
            })
            .unwrap_or_else(|w| w);
        let decided_here = was & DECIDED == 0;
        if decided_here && keep_result {
            // Read only after the publish, by this thread's release.
            self.result.store(result, Relaxed);
        }
        Returned {
            status: decided_here.then_some(status),
            place: was & HOLDS_PLACE != 0,
        }
    }

    /// Decides `status` (CANCELLED or EXPIRED) unless decided, or not
    /// `unstarted` when `unstarted_only`. A running task in a slot of its own
    /// gives its slot back when `may_give_back`. Err: what was decided
    /// before (`None`: nothing, but it had started).
    pub(crate) fn decide_early(
        &self,
        status: asyncify_status,
        unstarted_only: bool,
        may_give_back: bool,
    ) -> Result<Early<T>, Option<(asyncify_status, i32)>> {
        let was = self.update(|w| {
            if w & DECIDED != 0 || (unstarted_only && !unstarted(w)) {
                return None;
            }
            let mut new = w | DECIDED | status_bits(status);
            if unstarted(w) {
                new &= !HOLDS_PLACE;
            } else if phase(w) == Phase::Running && w & OWN_SLOT != 0 && may_give_back {
                new |= SLOT_GIVEN_BACK;
            }
            Some(new)
        });
        let was = match was {
            Ok(was) => was,
            Err(w) if w & DECIDED != 0 => return Err(Some(self.outcome_of(w))),
            Err(_) => return Err(None),
        };
        let start_with = if unstarted(was) {
            // SAFETY: this thread decided the task before it started; no
            // other transition takes the value then (see the module docs).
            unsafe { self.start_with.take() }
        } else {
            T::default()
        };
        Ok(Early {
            was: phase(was),
            place: unstarted(was) && was & HOLDS_PLACE != 0,
            start_with,
            give_back: phase(was) == Phase::Running && was & OWN_SLOT != 0 && may_give_back,
        })
    }

    fn outcome_of(&self, word: u32) -> (asyncify_status, i32) {
        let status = status(word);
        let code = match status {
            ASYNCIFY_OK | ASYNCIFY_FAILED => self.code.load(Relaxed),
            _ => 0,
        };
        (status, code)
    }

    /// Makes the outcome visible and wakes its waiters. With `to_queue`, the
    /// result moves out for a completion queue's record. A `detached` task
    /// is released here. Returns (the moved result, a result nobody can
    /// receive any more, whether this released it).
    #[inline]
    pub(crate) fn publish(&self, to_queue: bool, detached: bool) -> (usize, usize, bool) {
        let moved = if to_queue {
            self.result.swap(0, Relaxed)
        } else {
            0
        };
        let release = if detached { RELEASED } else { 0 };
        // SeqCst: `wait_any` counts itself and then looks at the word, the
        // publisher sets it and then looks at that count (see
        // `is_published_for_any`).
        let was = self.word.fetch_or(PUBLISHED | release, SeqCst);
        let orphan = if (was | release) & RELEASED != 0 {
            self.result.swap(0, Acquire)
        } else {
            0
        };
        if was & WAITERS != 0 {
            self.wake_all();
        }
        (moved, orphan, detached && was & RELEASED == 0)
    }

    /// Its handle is released: returns a published result nobody can
    /// receive any more (0: none, or it is not published yet, and its
    /// publish frees it).
    pub(crate) fn release(&self) -> usize {
        let was = self.word.fetch_or(RELEASED, AcqRel);
        if was & PUBLISHED != 0 {
            self.result.swap(0, Acquire)
        } else {
            0
        }
    }

    /// True once the outcome is visible.
    pub(crate) fn is_published(&self) -> bool {
        self.word.load(Acquire) & PUBLISHED != 0
    }

    /// [`TaskState::is_published`] for a waiter that made itself known
    /// (a SeqCst write) before it looks: with the publish's SeqCst
    /// `fetch_or` and its SeqCst read of the waiters, one of the two sees
    /// the other's write, so no wake-up is lost.
    pub(crate) fn is_published_for_any(&self) -> bool {
        self.word.load(SeqCst) & PUBLISHED != 0
    }

    /// The published outcome (status, code), and the result when
    /// `want_result` and it has not moved yet; None before the publish.
    pub(crate) fn observe(&self, want_result: bool) -> Option<(asyncify_status, i32, usize)> {
        let w = self.word.load(Acquire);
        if w & PUBLISHED == 0 {
            return None;
        }
        let (status, code) = self.outcome_of(w);
        // A released task's result goes to its free function, not to a
        // look through a handle that is no longer its own.
        let result = match status {
            ASYNCIFY_OK | ASYNCIFY_FAILED if want_result && w & RELEASED == 0 => {
                self.result.swap(0, Acquire)
            }
            _ => 0,
        };
        Some((status, code, result))
    }

    /// Sleeps until the outcome is published or `deadline` passes; true
    /// when it is published.
    pub(crate) fn wait_published(&self, deadline: Option<Instant>) -> bool {
        if self.is_published() {
            return true;
        }
        // A publish after this sees the flag and wakes the word's sleepers.
        let mut w = self.word.fetch_or(WAITERS, Acquire) | WAITERS;
        while w & PUBLISHED == 0 {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
            self.sleep_while(w, deadline);
            w = self.word.load(Acquire);
        }
        true
    }

    /// Sleeps while the word holds `seen` (see `sys::wait_on`).
    #[cfg(not(all(test, loom)))]
    fn sleep_while(&self, seen: u32, deadline: Option<Instant>) {
        crate::sys::wait_on(&self.word, seen, deadline);
    }

    #[cfg(not(all(test, loom)))]
    fn wake_all(&self) {
        crate::sys::wake_all(&self.word);
    }

    #[cfg(all(test, loom))]
    fn sleep_while(&self, seen: u32, _deadline: Option<Instant>) {
        let lock = self.parking.0.lock().unwrap();
        if self.word.load(Relaxed) == seen {
            drop(self.parking.1.wait(lock).unwrap());
        }
    }

    #[cfg(all(test, loom))]
    fn wake_all(&self) {
        drop(self.parking.0.lock().unwrap());
        self.parking.1.notify_all();
    }

    /// Waiting for its limiter, undecided.
    pub(crate) fn is_waiting(&self) -> bool {
        let w = self.word.load(Acquire);
        w & DECIDED == 0 && phase(w) == Phase::Waiting
    }

    /// A cancel decided the outcome (the running callable is abandoned).
    pub(crate) fn is_cancelled(&self) -> bool {
        let w = self.word.load(Relaxed);
        w & DECIDED != 0 && status(w) == ASYNCIFY_CANCELLED
    }

    /// A cancel gave the slot of this (abandoned) task back.
    pub(crate) fn slot_given_back(&self) -> bool {
        self.word.load(Acquire) & SLOT_GIVEN_BACK != 0
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::atomic::AtomicUsize as Count;
    use loom::sync::Arc;
    use loom::thread;

    /// What a task starts with: counts how often it is taken.
    #[derive(Default)]
    struct Table(Option<Arc<Count>>);

    impl Table {
        fn taken(self) {
            if let Some(c) = self.0 {
                c.fetch_add(1, Relaxed);
            }
        }
    }

    impl StartWith for Table {
        fn holds_nothing(&self) -> bool {
            self.0.is_none()
        }
    }

    /// What a start moved out, counted (nothing, when it held nothing).
    fn started(table: Option<Table>) {
        table.map(Table::taken);
    }

    fn queued(taken: &Arc<Count>) -> Arc<TaskState<Table>> {
        Arc::new(TaskState::new(Phase::Queued, Table(Some(taken.clone()))))
    }

    /// A task whose callable returned `result` (kept on the task), not yet
    /// published.
    fn returned(result: usize) -> Arc<TaskState<Table>> {
        let task = queued(&Arc::new(Count::new(0)));
        started(task.start(true).unwrap().take());
        task.returned(0, result, true);
        task
    }

    /// A start races a cancel: the table is taken once, the outcome decided
    /// once, and a cancel of the running task abandons it.
    #[test]
    fn start_races_cancel() {
        loom::model(|| {
            let taken = Arc::new(Count::new(0));
            let task = queued(&taken);
            let t = task.clone();
            let worker = thread::spawn(move || match t.start(true) {
                Some(table) => {
                    started(table.take());
                    t.returned(0, 7, true).status
                }
                None => None,
            });
            let early = task.decide_early(ASYNCIFY_CANCELLED, false, true);
            let decided_early = match early {
                Ok(early) => {
                    early.start_with.taken();
                    true
                }
                Err(_) => false,
            };
            let by_worker = worker.join().unwrap();
            assert_eq!(taken.load(Relaxed), 1, "the table is taken once");
            // Exactly one decided.
            assert!(decided_early != by_worker.is_some());
            let (moved, _, _) = task.publish(false, false);
            assert_eq!(moved, 0);
            let (status, _, result) = task.observe(true).unwrap();
            if decided_early {
                assert_eq!(status, ASYNCIFY_CANCELLED);
                assert_eq!(result, 0);
            } else {
                assert_eq!((status, result), (ASYNCIFY_OK, 7));
            }
        });
    }

    /// An admission races an expiry of a waiting task: exactly one wins,
    /// and a place is held (then given back by the expiry) only when the
    /// admission came first.
    #[test]
    fn admission_races_expiry() {
        loom::model(|| {
            let taken = Arc::new(Count::new(0));
            let task = Arc::new(TaskState::new(Phase::Waiting, Table(Some(taken.clone()))));
            let t = task.clone();
            let limiter = thread::spawn(move || t.admit());
            let expired = task.decide_early(ASYNCIFY_EXPIRED, true, false);
            let admitted = limiter.join().unwrap();
            match expired {
                Ok(early) => {
                    early.start_with.taken();
                    assert_eq!(early.place, admitted, "a place only after the admission");
                    let was = if admitted {
                        Phase::Queued
                    } else {
                        Phase::Waiting
                    };
                    assert_eq!(early.was, was);
                    assert!(task.start(true).is_none(), "an expired task never starts");
                }
                Err(_) => panic!("nothing else decides it"),
            }
            assert_eq!(taken.load(Relaxed), 1);
        });
    }

    /// A detached task's result goes to its free function: a look racing
    /// its publish never receives it.
    #[test]
    fn a_detached_result_never_reaches_a_look() {
        loom::model(|| {
            let task = returned(5);
            let t = task.clone();
            let look = thread::spawn(move || t.observe(true).map_or(0, |seen| seen.2));
            let (_, orphan, released) = task.publish(false, true);
            assert!(released);
            assert_eq!(look.join().unwrap(), 0);
            assert_eq!(orphan, 5);
        });
    }

    /// A waiter races the publish: it never sleeps through it, and the
    /// result reaches exactly one of the waiter and a release.
    #[test]
    fn publish_wakes_waiter_and_result_moves_once() {
        loom::model(|| {
            let task = returned(5);
            let t = task.clone();
            let waiter = thread::spawn(move || {
                assert!(t.wait_published(None));
                t.observe(true).unwrap().2
            });
            let t = task.clone();
            let releaser = thread::spawn(move || t.release());
            let (_, orphan, _) = task.publish(false, false);
            let seen = waiter.join().unwrap();
            let released = releaser.join().unwrap();
            let moved = [seen, released, orphan];
            assert_eq!(moved.iter().filter(|&&r| r == 5).count(), 1, "{moved:?}");
        });
    }
}
