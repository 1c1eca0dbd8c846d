//! A pool's hot-path state in two atomic words, so that submitting a task,
//! starting it and finishing it take no lock.
//!
//! The *gate* word holds the entries in the pool's queue (`pending`, tasks
//! and the tombstones of tasks that left it early), the slots in use
//! (`busy`), the limit and the shut-down bit. Every change is one CAS that
//! sees all four at once:
//!
//! - a submit reserves an entry before it pushes (refused once shut down, so
//!   a shutdown that drains the queue misses no accepted task);
//! - a worker takes an entry and a slot together, only while
//!   `busy < limit` (so the limit bounds running callables also while it
//!   changes); a worker that finishes a task keeps its slot for the next
//!   entry if there is one and the limit still allows it, or gives it back,
//!   decided against the same word a submit changes;
//! - an entry taken is in the queue or about to be (its submit reserved it
//!   first): [`pop_reserved`] waits those few instructions out.
//!
//! The *idle* word counts workers by what they do while they hold no slot:
//! spinning (watching the gate), signalled (woken and not yet looking),
//! starting (spawned, not yet looking) and sleeping (parked). A submit that
//! left an entry a free slot could take calls [`Gate::needs_worker`]: with
//! a worker coming, nothing to do; with one parked (or room for a new
//! thread), the pool wakes or spawns one under its lock. Workers park under
//! that lock after [`Gate::sleep_or_retry`].
//!
//! No lost wake-up: a submit changes the gate (a `SeqCst` read-modify-write),
//! then reads the idle word (a `SeqCst` load: in the one total order after
//! the change, so no fence is needed on that hot path); a worker about to
//! park counts itself in the idle word, then, after a `SeqCst` fence, reads
//! the gate. Of two such threads at least one sees the other's write, so
//! either the worker sees the entry and does not park or the submit sees
//! the sleeper and wakes it. A spinner stops counting itself before it looks
//! at the gate a last time, with the same fence. loom models `SeqCst`
//! accesses only as acquire/release, so under loom the submit side fences
//! too; `loom_tests` model-checks the handshake in that form.

use crate::shard::Padded;
#[cfg(all(test, loom))]
use loom::sync::atomic::{fence, AtomicU64};
use std::sync::atomic::Ordering::{Acquire, Relaxed, SeqCst};
#[cfg(not(all(test, loom)))]
use std::sync::atomic::{fence, AtomicU64};

const PENDING_BITS: u32 = 31;
const PENDING_MASK: u64 = (1 << PENDING_BITS) - 1;
const SHUT: u64 = 1 << PENDING_BITS;
const BUSY_SHIFT: u32 = 32;
const LIMIT_SHIFT: u32 = 48;
const FIELD_MASK: u64 = 0xFFFF;
const ONE_BUSY: u64 = 1 << BUSY_SHIFT;

/// The largest limit the gate enforces: a larger one (unbounded included)
/// lets this many callables run at once, far beyond what a process can
/// start threads for.
pub(crate) const MAX_LIMIT: u32 = FIELD_MASK as u32;

/// A value of the gate word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Word(u64);

impl Word {
    /// Entries in the queue, tombstones included.
    pub(crate) fn pending(self) -> u32 {
        (self.0 & PENDING_MASK) as u32
    }

    /// Slots in use.
    pub(crate) fn busy(self) -> u32 {
        ((self.0 >> BUSY_SHIFT) & FIELD_MASK) as u32
    }

    fn limit(self) -> u32 {
        ((self.0 >> LIMIT_SHIFT) & FIELD_MASK) as u32
    }

    fn shut(self) -> bool {
        self.0 & SHUT != 0
    }

    /// A worker without a slot could take an entry now.
    pub(crate) fn startable(self) -> bool {
        !self.shut() && self.pending() > 0 && self.busy() < self.limit()
    }
}

/// What [`Gate::take`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Took {
    /// An entry, with a slot for it (the one held before, or a new one);
    /// the gate as it was left.
    Entry(Word),
    /// Nothing to take: the slot held was given back; the gate as it was left.
    Released(Word),
    /// Nothing to take, and no slot was held.
    Nothing,
}

/// Why [`Gate::reserve`] refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    ShutDown,
    Full,
}

const SPINNING: u32 = 0;
const SIGNALLED: u32 = 16;
const STARTING: u32 = 32;
const SLEEPING: u32 = 48;

/// A value of the idle word.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Idle(u64);

impl Idle {
    fn field(self, shift: u32) -> u32 {
        ((self.0 >> shift) & FIELD_MASK) as u32
    }
    pub(crate) fn spinning(self) -> u32 {
        self.field(SPINNING)
    }
    pub(crate) fn signalled(self) -> u32 {
        self.field(SIGNALLED)
    }
    pub(crate) fn starting(self) -> u32 {
        self.field(STARTING)
    }
    /// Parked workers, signalled ones included until they wake.
    pub(crate) fn sleeping(self) -> u32 {
        self.field(SLEEPING)
    }
    /// Workers on their way to look at the gate.
    pub(crate) fn coming(self) -> u32 {
        self.spinning() + self.signalled() + self.starting()
    }
}

/// The two words (see the module docs), on cache lines of their own: the
/// gate changes with every task, the idle word seldom while tasks flow, so
/// reading it stays a cache hit.
pub(crate) struct Gate {
    word: Padded<AtomicU64>,
    idle: Padded<AtomicU64>,
}

impl Gate {
    pub(crate) fn new(limit: u32) -> Gate {
        Gate {
            word: Padded(AtomicU64::new(
                u64::from(limit.min(MAX_LIMIT)) << LIMIT_SHIFT,
            )),
            idle: Padded(AtomicU64::new(0)),
        }
    }

    pub(crate) fn load(&self) -> Word {
        Word(self.word.0.load(Acquire))
    }

    fn update(&self, mut f: impl FnMut(Word) -> Option<Word>) -> Result<Word, Word> {
        let mut old = self.word.0.load(Relaxed);
        loop {
            let Some(new) = f(Word(old)) else {
                return Err(Word(old));
            };
            match self
                .word
                .0
                .compare_exchange_weak(old, new.0, SeqCst, Relaxed)
            {
                Ok(_) => return Ok(new),
                Err(seen) => old = seen,
            }
        }
    }

    /// Reserves a queue entry for a push that follows; returns the gate with
    /// it.
    pub(crate) fn reserve(&self) -> Result<Word, Refused> {
        self.update(|w| (!w.shut() && w.pending() < PENDING_MASK as u32).then(|| Word(w.0 + 1)))
            .map_err(|w| {
                if w.shut() {
                    Refused::ShutDown
                } else {
                    Refused::Full
                }
            })
    }

    /// Takes an entry, and a slot for it unless `holding` one already
    /// (which it keeps only while `busy <= limit`); else gives back the slot
    /// held.
    pub(crate) fn take(&self, holding: bool) -> Took {
        let mut took_entry = false;
        let result = self.update(|w| {
            took_entry = false;
            let room = if holding {
                w.busy() <= w.limit()
            } else {
                w.busy() < w.limit()
            };
            if !w.shut() && w.pending() > 0 && room {
                took_entry = true;
                let add = if holding { 0 } else { ONE_BUSY };
                Some(Word(w.0 - 1 + add))
            } else if holding {
                debug_assert!(w.busy() > 0, "a slot held is counted");
                Some(Word(w.0 - ONE_BUSY))
            } else {
                None
            }
        });
        match result {
            Ok(w) if took_entry => Took::Entry(w),
            Ok(w) => Took::Released(w),
            Err(_) => Took::Nothing,
        }
    }

    /// Takes an entry whatever the slots and the shut-down bit say (a
    /// shutdown draining the queue); false when none is left.
    pub(crate) fn take_for_drain(&self) -> bool {
        self.update(|w| (w.pending() > 0).then(|| Word(w.0 - 1)))
            .is_ok()
    }

    /// Gives a slot back without taking an entry (an abandoned callable
    /// leaving the limit); returns the gate as it was left.
    pub(crate) fn release(&self) -> Word {
        Word(self.word.0.fetch_sub(ONE_BUSY, SeqCst) - ONE_BUSY)
    }

    pub(crate) fn set_limit(&self, limit: u32) {
        let field = u64::from(limit.min(MAX_LIMIT)) << LIMIT_SHIFT;
        let _ = self.update(|w| Some(Word((w.0 & !(FIELD_MASK << LIMIT_SHIFT)) | field)));
    }

    /// Sets the shut-down bit: no more reservations, no more starts.
    pub(crate) fn shut_down(&self) {
        self.word.0.fetch_or(SHUT, SeqCst);
    }

    /// After a change of the gate that left `after` (a reserve or a take:
    /// `SeqCst` read-modify-writes): whether the pool must wake or start a
    /// worker (under its lock, where it decides which), because a free slot
    /// could take an entry and no worker is coming.
    #[inline(always)]
    pub(crate) fn needs_worker(&self, after: Word) -> bool {
        if !after.startable() {
            return false;
        }
        // The change that left `after` was a `SeqCst` read-modify-write;
        // a `SeqCst` load after it is ordered after it in the one total
        // order, which is what the handshake needs, with no fence on the
        // hot path (an `mfence` costs tens of cycles on x86, where the
        // locked instruction before it is one already). loom models `SeqCst`
        // only as acquire/release, so its models get the fence itself.
        #[cfg(all(test, loom))]
        fence(SeqCst);
        Idle(self.idle.0.load(SeqCst)).coming() == 0
    }

    pub(crate) fn idle(&self) -> Idle {
        Idle(self.idle.0.load(Acquire))
    }

    fn add(&self, shift: u32) {
        self.idle.0.fetch_add(1 << shift, SeqCst);
    }

    fn sub(&self, shift: u32) {
        self.idle.0.fetch_sub(1 << shift, SeqCst);
    }

    /// Counts a spinner unless `max` spin already; true when counted.
    pub(crate) fn start_spinning(&self, max: u32) -> bool {
        let before = Idle(self.idle.0.fetch_add(1 << SPINNING, SeqCst));
        if before.spinning() >= max {
            self.sub(SPINNING);
            return false;
        }
        true
    }

    /// A spinner stops; it looks at the gate once more after this.
    pub(crate) fn stop_spinning(&self) {
        self.sub(SPINNING);
        fence(SeqCst);
    }

    /// A worker about to park (under the pool's lock) counts itself as
    /// sleeping; true when it may park, false (uncounted again) when an
    /// entry became startable meanwhile.
    pub(crate) fn sleep_or_retry(&self) -> bool {
        self.add(SLEEPING);
        fence(SeqCst);
        if self.load().startable() {
            self.sub(SLEEPING);
            return false;
        }
        true
    }

    /// A parked worker woke (for any reason): it no longer sleeps, and it
    /// consumes a signal if one was sent (under the pool's lock).
    pub(crate) fn woke(&self) {
        self.sub(SLEEPING);
        if self.idle().signalled() > 0 {
            self.sub(SIGNALLED);
        }
    }

    /// Under the pool's lock: a parked worker is being signalled.
    pub(crate) fn signal(&self) {
        self.add(SIGNALLED);
    }

    /// Under the pool's lock: a worker is being started.
    pub(crate) fn starting(&self) {
        self.add(STARTING);
    }

    /// A started worker is about to look at the gate (or failed to start).
    pub(crate) fn started(&self) {
        self.sub(STARTING);
    }
}

/// Pops the entry a [`Gate::take`] took: it is in the queue, or its
/// submit is between reserving and pushing it.
pub(crate) fn pop_reserved<T>(queue: &crossbeam_queue::SegQueue<T>) -> T {
    let mut round: u32 = 0;
    loop {
        if let Some(item) = queue.pop() {
            return item;
        }
        round = round.wrapping_add(1);
        if round % 64 == 0 {
            // The submitter may have been preempted mid-push.
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_takes_an_entry_and_a_slot_only_below_the_limit() {
        let gate = Gate::new(1);
        assert_eq!(gate.take(false), Took::Nothing);
        gate.reserve().unwrap();
        gate.reserve().unwrap();
        let Took::Entry(w) = gate.take(false) else {
            panic!()
        };
        assert_eq!((w.pending(), w.busy()), (1, 1));
        assert_eq!(gate.take(false), Took::Nothing, "the limit is reached");
        // The holder keeps its slot for the next entry, then gives it back.
        assert!(matches!(gate.take(true), Took::Entry(w) if w.busy() == 1 && w.pending() == 0));
        assert!(matches!(gate.take(true), Took::Released(w) if w.busy() == 0));
    }

    #[test]
    fn a_lowered_limit_takes_slots_back_as_their_tasks_end() {
        let gate = Gate::new(2);
        for _ in 0..4 {
            gate.reserve().unwrap();
        }
        assert!(matches!(gate.take(false), Took::Entry(_)));
        assert!(matches!(gate.take(false), Took::Entry(_)));
        gate.set_limit(1);
        assert!(matches!(gate.take(true), Took::Released(w) if w.busy() == 1));
        assert!(matches!(gate.take(true), Took::Entry(w) if w.busy() == 1 && w.pending() == 1));
        gate.set_limit(u32::MAX);
        assert!(gate.load().startable());
    }

    #[test]
    fn shut_down_refuses_reservations_and_starts_but_lets_a_drain_take() {
        let gate = Gate::new(4);
        gate.reserve().unwrap();
        gate.shut_down();
        assert_eq!(gate.reserve(), Err(Refused::ShutDown));
        assert_eq!(gate.take(false), Took::Nothing);
        assert!(gate.take_for_drain());
        assert!(!gate.take_for_drain());
    }

    #[test]
    fn a_worker_parks_only_when_nothing_is_startable() {
        let gate = Gate::new(1);
        assert!(gate.sleep_or_retry());
        assert_eq!(gate.idle().sleeping(), 1);
        let after = gate.reserve().unwrap();
        assert!(gate.needs_worker(after), "nobody is coming");
        gate.signal();
        assert!(!gate.needs_worker(after), "the signalled worker is coming");
        gate.woke();
        assert_eq!(gate.idle().coming() + gate.idle().sleeping(), 0);
        assert!(!gate.sleep_or_retry(), "an entry is startable");
        assert_eq!(gate.idle().sleeping(), 0);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! The wake-up handshake: a task pushed while the only worker goes idle
    //! (spins, then parks) is always taken; the limit is never exceeded.
    use super::*;
    use loom::sync::atomic::{AtomicBool, AtomicU32};
    use loom::sync::{Arc, Condvar, Mutex};
    use loom::thread;
    use std::sync::atomic::Ordering::SeqCst;

    struct Model {
        gate: Gate,
        /// Stands for the pool's lock (with its count of worker threads,
        /// one to start with) and its condition variable.
        lock: Mutex<u32>,
        ready: Condvar,
        /// A submit started a new worker (the model only records it).
        spawned: AtomicBool,
        ran: AtomicU32,
        running: AtomicU32,
    }

    impl Model {
        /// A pool of limit 1 with one worker thread.
        fn new() -> Arc<Model> {
            Arc::new(Model {
                gate: Gate::new(1),
                lock: Mutex::new(1),
                ready: Condvar::new(),
                spawned: AtomicBool::new(false),
                ran: AtomicU32::new(0),
                running: AtomicU32::new(0),
            })
        }

        /// A submit, and the pool's provide_workers: wake a sleeper, else
        /// start a worker while there are fewer threads than the limit.
        fn submit(&self) {
            let after = self.gate.reserve().unwrap();
            if self.gate.needs_worker(after) {
                let mut threads = self.lock.lock().unwrap();
                let idle = self.gate.idle();
                if idle.coming() == 0 && self.gate.load().startable() {
                    if idle.sleeping() > idle.signalled() {
                        self.gate.signal();
                        drop(threads);
                        self.ready.notify_one();
                    } else if *threads < 1 {
                        *threads += 1;
                        self.spawned.store(true, SeqCst);
                    }
                }
            }
        }

        /// Runs a task in the slot just taken, checking the limit of 1.
        fn run_one(&self) {
            let now = self.running.fetch_add(1, SeqCst) + 1;
            assert!(now <= 1, "the limit is 1");
            self.running.fetch_sub(1, SeqCst);
            self.ran.fetch_add(1, SeqCst);
        }

        /// A worker that serves until `want` tasks ran; it spins once,
        /// then parks (a parked worker wakes only when signalled). With
        /// `keep_alive_ran_out` its idle wait has just timed out: it leaves
        /// unless a task became startable (looked at under the lock).
        fn work(&self, want: u32, keep_alive_ran_out: bool) {
            let mut timed_out = keep_alive_ran_out;
            let mut holding = false;
            let mut may_spin = true;
            loop {
                match self.gate.take(holding) {
                    Took::Entry(_) => {
                        holding = true;
                        self.run_one();
                        continue;
                    }
                    Took::Released(_) => holding = false,
                    Took::Nothing => {}
                }
                if self.ran.load(SeqCst) == want {
                    return;
                }
                if may_spin && !timed_out && self.gate.start_spinning(1) {
                    // One look while counted as spinning, taking the entry
                    // then (as the pool's spinners do).
                    may_spin = false;
                    let spun =
                        self.gate.load().startable() && self.gate.take(false) != Took::Nothing;
                    self.gate.stop_spinning();
                    if spun {
                        holding = true;
                        self.run_one();
                    }
                    continue;
                }
                may_spin = true;
                let mut threads = self.lock.lock().unwrap();
                if timed_out {
                    if self.gate.load().startable() {
                        timed_out = false;
                        continue;
                    }
                    *threads -= 1;
                    return;
                }
                if !self.gate.sleep_or_retry() {
                    continue;
                }
                threads = self.ready.wait(threads).unwrap();
                self.gate.woke();
                drop(threads);
            }
        }
    }

    #[test]
    fn a_task_pushed_while_the_worker_goes_idle_is_always_taken() {
        loom::model(|| {
            let m = Model::new();
            let w = {
                let m = m.clone();
                thread::spawn(move || m.work(2, false))
            };
            m.submit();
            m.submit();
            // A lost wake-up leaves the worker parked: loom reports the deadlock.
            w.join().unwrap();
            assert_eq!(m.ran.load(SeqCst), 2);
            assert_eq!(m.gate.load().pending(), 0);
        });
    }

    /// The pool's only worker leaves at the end of its keep-alive while a
    /// task is submitted: the submit finds it still counted among the
    /// threads (so it starts none), hence the worker must look at the gate
    /// under the lock before it leaves. The task runs, or a new worker was
    /// started for it.
    #[test]
    fn a_worker_leaving_at_its_keep_alive_strands_no_task() {
        loom::model(|| {
            let m = Model::new();
            let w = {
                let m = m.clone();
                thread::spawn(move || m.work(1, true))
            };
            m.submit();
            w.join().unwrap();
            assert!(
                m.ran.load(SeqCst) == 1 || m.spawned.load(SeqCst),
                "the task was left with no worker"
            );
        });
    }

    #[test]
    fn two_workers_never_exceed_the_limit_and_take_each_entry_once() {
        loom::model(|| {
            let m = Model::new();
            m.gate.reserve().unwrap();
            m.gate.reserve().unwrap();
            let ws: Vec<_> = (0..2)
                .map(|_| {
                    let m = m.clone();
                    thread::spawn(move || {
                        let mut holding = false;
                        loop {
                            match m.gate.take(holding) {
                                Took::Entry(_) => {
                                    holding = true;
                                    m.run_one();
                                }
                                Took::Released(_) | Took::Nothing => return,
                            }
                        }
                    })
                })
                .collect();
            for w in ws {
                w.join().unwrap();
            }
            // Whoever held the slot last gave it back; each entry ran once
            // (a worker that found the slot taken left early).
            let w = m.gate.load();
            assert_eq!((w.busy(), w.pending() + m.ran.load(SeqCst)), (0, 2));
        });
    }
}
