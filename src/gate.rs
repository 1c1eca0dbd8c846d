//! A pool's hot-path state in two atomic words beside its queue, so that
//! submitting a task, starting it and finishing it take no lock.
//!
//! The *gate* word holds the slots in use (`busy`), the limit and the
//! shut-down bit. A *slot* is the right to run one callable. A worker takes
//! one by a CAS that sees all three, only while `busy < limit`, not shut
//! down, and the queue has an entry (so no slot is taken beyond the limit,
//! also while it changes); it then pops tasks from the queue itself, one
//! after another, and looks at the word (a read, no write) before each pop:
//! it gives its slot back when the limit went below `busy` or the pool shut
//! down, or when its pop found the queue empty (a worker that looked just
//! before the limit was lowered may still start the task it was taking, as
//! one whose CAS came just before would). While tasks flow, workers
//! keep their slots and the word is only read: no cache line moves between
//! the submitting thread and the workers for it.
//!
//! A submit counts itself in its thread's part of the *submitting*
//! counters (see [`crate::shard`]: shared only by threads beyond the parts'
//! number), reads the word (refused when shut down), pushes its task,
//! counts itself out, and reads the word again to wake a worker when a slot
//! is free and none is coming. A shutdown sets the bit, waits until no submit is counted in
//! (each one that saw the gate open has pushed), then pops every entry,
//! cancelling its task; a worker holding a slot that looked before the bit
//! was set may still start one task, as if it had popped it just before.
//!
//! The *idle* word counts workers by what they do while they hold no slot:
//! spinning (watching the queue), signalled (woken and not yet looking),
//! starting (spawned, not yet looking) and sleeping (parked). A submit that
//! left a task a free slot could take calls [`Gate::needs_worker`]: with a
//! worker coming, nothing to do; with one parked (or room for a new
//! thread), the pool wakes or spawns one under its lock. Workers park under
//! that lock after [`Gate::sleep_or_retry`].
//!
//! Two more bits of the gate word limit how many workers join a flood of
//! short tasks. A worker that would take a free slot while as many slots as
//! the process has spare CPUs are busy (all CPUs but one, left to the
//! submitting thread) becomes the pool's *watcher* instead, if it has none
//! (`WATCHED`): it looks every little while at how fast the running workers
//! pop tasks, and takes a slot only when they are slow, which sets
//! `WIDENED` (workers join without watching until one finds the queue
//! empty). More workers than CPUs only contend for the queue and take the
//! CPUs from the submitting thread when tasks are short, while tasks that
//! block need every slot. A submit that finds the pool *covered* (a watcher,
//! not widened, and as many busy slots as spare CPUs) wakes nobody, and an
//! idle worker that finds it covered parks: the busy workers pop the task,
//! and the watcher brings in more workers if they are slow, or joins itself
//! when fewer slots are busy or the pool widened (a raised limit).
//!
//! No lost wake-up, no task stranded: each of these is a pair of threads
//! that write one word and then read the other's, every access `SeqCst`, so
//! at least one of the two sees the other's write:
//!
//! - a submit pushes (the queue's tail moves by a `SeqCst` read-modify-write)
//!   and reads the gate and then the idle word; a worker about to park counts
//!   itself in the idle word and, after a `SeqCst` fence, reads the gate and
//!   the queue: either it sees the task and does not park, or the submit
//!   sees the sleeper and wakes it. A spinner stops counting itself before
//!   it looks a last time, with the same fence;
//! - a worker whose pop found nothing gives its slot back (a `SeqCst`
//!   read-modify-write of the gate) and then looks at the queue again: either
//!   it sees the task pushed meanwhile and takes a slot for it, or that
//!   submit saw the free slot and wakes a worker;
//! - a watcher stops (it clears `WATCHED`, alone or while it sets
//!   `WIDENED`, by a `SeqCst` read-modify-write) and then looks at the
//!   queue: either it sees a task pushed meanwhile, or that submit saw the
//!   pool no longer covered and wakes a worker;
//! - a shutdown sets the bit and then reads the submitting counters; a
//!   submit counts itself in and then reads the bit: either the submit is
//!   refused, or the shutdown waits for its push before it drains.
//!
//! loom models `SeqCst` accesses only as acquire/release, so under loom
//! each side fences between its write and its read; `loom_tests`
//! model-checks the handshakes in that form, with a counter for the queue.

use crate::shard::{shard, Padded, SHARDS};
#[cfg(all(test, loom))]
use loom::sync::atomic::{fence, AtomicU64};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
#[cfg(not(all(test, loom)))]
use std::sync::atomic::{fence, AtomicU64};

const SHUT: u64 = 1 << 31;
/// A worker watches the running ones for the pool (see the module docs).
const WATCHED: u64 = 1 << 30;
/// The watcher found the running workers slow: workers join without
/// watching until one finds the queue empty.
const WIDENED: u64 = 1 << 29;
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
    /// Slots in use.
    pub(crate) fn busy(self) -> u32 {
        ((self.0 >> BUSY_SHIFT) & FIELD_MASK) as u32
    }

    fn limit(self) -> u32 {
        ((self.0 >> LIMIT_SHIFT) & FIELD_MASK) as u32
    }

    /// The pool shut down: no submit is accepted, no slot taken.
    pub(crate) fn shut(self) -> bool {
        self.0 & SHUT != 0
    }

    /// A worker without a slot could take one now (for a queued task).
    pub(crate) fn has_room(self) -> bool {
        !self.shut() && self.busy() < self.limit()
    }

    /// A worker holding a slot may keep it for its next task.
    fn keeps(self) -> bool {
        !self.shut() && self.busy() <= self.limit()
    }
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
    /// Workers on their way to look at the queue.
    pub(crate) fn coming(self) -> u32 {
        self.spinning() + self.signalled() + self.starting()
    }
}

/// The two words and the submitting counters (see the module docs), on
/// cache lines of their own: the gate changes when a worker takes or gives
/// back a slot, the idle word when one parks or wakes (while tasks flow,
/// both are only read), a submitting counter with each submit of the
/// threads that write it.
pub(crate) struct Gate {
    word: Padded<AtomicU64>,
    idle: Padded<AtomicU64>,
    submitting: [Padded<AtomicU64>; SHARDS],
    /// How many busy slots make a worker without one watch rather than join
    /// (see the module docs): the CPUs spared for workers.
    spare: u32,
}

/// A submit that saw the gate open and may push (see [`Gate::enter`]);
/// dropping it counts the submit out.
pub(crate) struct Entered<'a> {
    count: &'a AtomicU64,
}

impl Drop for Entered<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        // Release: a shutdown that reads the count back to 0 (acquire) then
        // finds the task pushed.
        self.count.fetch_sub(1, Release);
    }
}

/// [`Gate::enter`] refused: the pool shut down.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ShutDown;

impl Gate {
    /// A gate of `limit` whose watcher watches from `spare` busy slots on.
    pub(crate) fn new(limit: u32, spare: u32) -> Gate {
        Gate {
            word: Padded(AtomicU64::new(
                u64::from(limit.min(MAX_LIMIT)) << LIMIT_SHIFT,
            )),
            idle: Padded(AtomicU64::new(0)),
            submitting: std::array::from_fn(|_| Padded(AtomicU64::new(0))),
            spare: spare.max(1),
        }
    }

    /// A submit about to push: counts itself in, then looks at the
    /// shut-down bit. Hold what it returns until the push is done.
    #[inline(always)]
    pub(crate) fn enter(&self) -> Result<Entered<'_>, ShutDown> {
        // Refused at once once shut down (the bit never clears): a flood of
        // refused submits then never counts itself in, which the shutdown
        // waits out.
        if self.load().shut() {
            return Err(ShutDown);
        }
        let count = &self.submitting[shard()].0;
        count.fetch_add(1, SeqCst);
        // See `after_push`.
        #[cfg(all(test, loom))]
        fence(SeqCst);
        let entered = Entered { count };
        if Word(self.word.0.load(SeqCst)).shut() {
            return Err(ShutDown);
        }
        Ok(entered)
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

    /// The gate right after a push of the queue (a `SeqCst`
    /// read-modify-write), for [`Gate::needs_worker`].
    #[inline(always)]
    pub(crate) fn after_push(&self) -> Word {
        // A `SeqCst` load after the push's `SeqCst` read-modify-write is
        // ordered after it in the one total order, which is what the
        // handshakes need, with no fence on the hot path (an `mfence` costs
        // tens of cycles on x86, where the locked instruction before it is
        // one already). loom models `SeqCst` only as acquire/release, so its
        // models get the fence itself.
        #[cfg(all(test, loom))]
        fence(SeqCst);
        Word(self.word.0.load(SeqCst))
    }

    /// Takes a slot while one is free and `queued()` says the queue has an
    /// entry (looked at again on every retry); returns the gate as left.
    pub(crate) fn take_slot(&self, queued: impl Fn() -> bool) -> Option<Word> {
        self.update(|w| (w.has_room() && queued()).then(|| Word(w.0 + ONE_BUSY)))
            .ok()
    }

    /// A worker holding a slot, before it pops its next task: keeps the slot
    /// unless the limit went below the slots in use or the pool shut down;
    /// then gives it back and returns false.
    #[inline(always)]
    pub(crate) fn keep_slot(&self) -> bool {
        self.load().keeps() || !self.give_back_unless_kept()
    }

    #[inline(never)]
    fn give_back_unless_kept(&self) -> bool {
        self.update(|w| (!w.keeps()).then(|| Word(w.0 - ONE_BUSY)))
            .is_ok()
    }

    /// Gives a slot back (a worker whose pop found nothing, or an abandoned
    /// callable leaving the limit); returns the gate as it was left. A
    /// `SeqCst` read-modify-write: a worker that then finds the queue empty
    /// may go idle, as a submit that pushed meanwhile sees the slot free.
    pub(crate) fn release(&self) -> Word {
        let left = Word(self.word.0.fetch_sub(ONE_BUSY, SeqCst) - ONE_BUSY);
        // See `after_push`.
        #[cfg(all(test, loom))]
        fence(SeqCst);
        left
    }

    pub(crate) fn set_limit(&self, limit: u32) {
        let field = u64::from(limit.min(MAX_LIMIT)) << LIMIT_SHIFT;
        let _ = self.update(|w| Some(Word((w.0 & !(FIELD_MASK << LIMIT_SHIFT)) | field)));
    }

    /// Sets the shut-down bit: no more submits, no more slots taken. The
    /// caller waits for the submits that saw the gate open
    /// ([`Gate::wait_for_submits`]), then drains the queue.
    pub(crate) fn shut_down(&self) {
        self.word.0.fetch_or(SHUT, SeqCst);
        // See `after_push`.
        #[cfg(all(test, loom))]
        fence(SeqCst);
    }

    /// After [`Gate::shut_down`]: returns once every submit that saw the
    /// gate open has pushed its task (a few instructions each; any submit
    /// counted in later is refused).
    pub(crate) fn wait_for_submits(&self) {
        for count in &self.submitting {
            let mut round = 0u32;
            while count.0.load(SeqCst) != 0 {
                #[cfg(not(all(test, loom)))]
                if round < 64 {
                    std::thread::yield_now();
                } else {
                    // A submitter preempted mid-push, or a yield that does
                    // not let it run (a real-time caller): sleep instead.
                    std::thread::sleep(std::time::Duration::from_micros(50));
                }
                #[cfg(all(test, loom))]
                loom::thread::yield_now();
                round = round.saturating_add(1);
            }
        }
    }

    /// After a push that left the gate `after` ([`Gate::after_push`]):
    /// whether the pool must wake or start a worker (under its lock, where
    /// it decides which), because a free slot could take the task and no
    /// worker is coming.
    #[inline(always)]
    pub(crate) fn needs_worker(&self, after: Word) -> bool {
        after.has_room() && !self.covered(after) && Idle(self.idle.0.load(SeqCst)).coming() == 0
    }

    /// A worker without a slot should watch the running ones rather than
    /// take a free slot in `w`: as many slots as the CPUs spared for workers
    /// are busy, and the pool has not widened.
    pub(crate) fn wants_watcher(&self, w: Word) -> bool {
        w.has_room() && w.busy() >= self.spare && w.0 & WIDENED == 0
    }

    /// In `w`, a queued task is seen to without a wake-up: a watcher
    /// watches (the pool has not widened) and as many slots as the CPUs
    /// spared for workers are busy. A worker holding one pops the task, and
    /// the watcher brings in more workers if they are slow, or joins when
    /// fewer slots are busy.
    pub(crate) fn covered(&self, w: Word) -> bool {
        w.0 & (WATCHED | WIDENED) == WATCHED && w.busy() >= self.spare
    }

    /// Makes the calling worker the pool's watcher; false when there is one
    /// already or the pool has widened.
    pub(crate) fn start_watching(&self) -> bool {
        self.update(|w| (w.0 & (WATCHED | WIDENED) == 0).then_some(Word(w.0 | WATCHED)))
            .is_ok()
    }

    /// The watcher stops, and widens the pool when `widen`; it looks at the
    /// queue once more after this.
    pub(crate) fn stop_watching(&self, widen: bool) {
        if widen {
            let _ = self.update(|w| Some(Word((w.0 & !WATCHED) | WIDENED)));
        } else {
            self.word.0.fetch_and(!WATCHED, SeqCst);
        }
        // See `after_push`.
        #[cfg(all(test, loom))]
        fence(SeqCst);
    }

    /// Workers join without watching until one finds the queue empty (a
    /// raised limit).
    pub(crate) fn widen(&self) {
        self.word.0.fetch_or(WIDENED, SeqCst);
    }

    /// A worker found the queue empty, leaving the gate `left`: the pool no
    /// longer widens.
    #[inline(always)]
    pub(crate) fn narrow(&self, left: Word) {
        if left.0 & WIDENED != 0 {
            self.word.0.fetch_and(!WIDENED, Relaxed);
        }
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

    /// A spinner stops; it looks at the queue once more after this.
    pub(crate) fn stop_spinning(&self) {
        self.sub(SPINNING);
        fence(SeqCst);
    }

    /// A worker about to park (under the pool's lock) counts itself as
    /// sleeping; true when it may park, false (uncounted again) when a slot
    /// is free, the pool is not covered and `queued()` says the queue has an
    /// entry.
    pub(crate) fn sleep_or_retry(&self, queued: impl Fn() -> bool) -> bool {
        self.add(SLEEPING);
        fence(SeqCst);
        let w = self.load();
        if w.has_room() && !self.covered(w) && queued() {
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

    /// A started worker is about to look at the queue (or failed to start).
    pub(crate) fn started(&self) {
        self.sub(STARTING);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_takes_a_slot_only_below_the_limit_and_with_a_task_queued() {
        let gate = Gate::new(1, 1);
        assert_eq!(gate.take_slot(|| false), None, "nothing queued");
        let w = gate.take_slot(|| true).expect("a free slot");
        assert_eq!(w.busy(), 1);
        assert_eq!(gate.take_slot(|| true), None, "the limit is reached");
        assert!(gate.keep_slot(), "the holder keeps its slot");
        assert_eq!(gate.release().busy(), 0);
    }

    #[test]
    fn a_lowered_limit_takes_slots_back_one_by_one() {
        let gate = Gate::new(2, 1);
        gate.take_slot(|| true).unwrap();
        gate.take_slot(|| true).unwrap();
        gate.set_limit(1);
        assert!(!gate.keep_slot(), "one holder gives its slot back");
        assert!(gate.keep_slot(), "the other keeps its own");
        assert_eq!(gate.load().busy(), 1);
        gate.set_limit(u32::MAX);
        assert!(gate.load().has_room());
    }

    #[test]
    fn shut_down_refuses_slots_and_takes_back_held_ones() {
        let gate = Gate::new(4, 1);
        gate.take_slot(|| true).unwrap();
        let entered = gate.enter().expect("open");
        gate.shut_down();
        assert!(gate.after_push().shut());
        assert_eq!(gate.enter().err(), Some(ShutDown));
        drop(entered);
        gate.wait_for_submits();
        assert_eq!(gate.take_slot(|| true), None);
        assert!(!gate.keep_slot(), "a holder gives its slot back");
        assert_eq!(gate.load().busy(), 0);
    }

    #[test]
    fn a_worker_parks_only_when_nothing_is_startable() {
        let gate = Gate::new(1, 1);
        assert!(gate.sleep_or_retry(|| false));
        assert_eq!(gate.idle().sleeping(), 1);
        let after = gate.after_push();
        assert!(gate.needs_worker(after), "nobody is coming");
        gate.signal();
        assert!(!gate.needs_worker(after), "the signalled worker is coming");
        gate.woke();
        assert_eq!(gate.idle().coming() + gate.idle().sleeping(), 0);
        assert!(!gate.sleep_or_retry(|| true), "a task is startable");
        assert_eq!(gate.idle().sleeping(), 0);
    }

    #[test]
    fn a_watcher_covers_a_busy_pool_until_it_stops_or_widens() {
        // Two spare CPUs: a worker joins beside one busy slot, watches
        // beside two.
        let gate = Gate::new(8, 2);
        let one = gate.take_slot(|| true).unwrap();
        assert!(!gate.wants_watcher(one), "a spare CPU is free: join");
        let two = gate.take_slot(|| true).unwrap();
        assert!(gate.wants_watcher(two));
        assert!(gate.start_watching());
        assert!(!gate.start_watching(), "one watcher at a time");
        let after = gate.after_push();
        assert!(!gate.needs_worker(after), "covered: the busy workers pop");
        assert!(gate.sleep_or_retry(|| true), "an idle worker parks");
        gate.woke();
        // One busy slot given back: fewer than the spare CPUs are busy, so
        // the pool is not covered (and the watcher joins).
        let left = gate.release();
        assert!(gate.needs_worker(left), "a spare CPU is free again");
        gate.take_slot(|| true).unwrap();
        gate.stop_watching(false);
        assert!(gate.needs_worker(gate.after_push()), "no longer covered");
        // Widening lets workers join without watching, and covers nothing,
        // until one finds the queue empty.
        assert!(gate.start_watching());
        gate.stop_watching(true);
        assert!(!gate.wants_watcher(gate.load()));
        assert!(!gate.start_watching(), "no watcher while widened");
        let three = gate.take_slot(|| true).unwrap();
        assert!(!gate.wants_watcher(three), "still widened");
        let left = gate.release();
        gate.narrow(left);
        assert!(gate.wants_watcher(gate.load()), "narrowed again");
        // A raised limit widens at once, also over a watcher.
        assert!(gate.start_watching());
        gate.widen();
        assert!(gate.needs_worker(gate.after_push()), "widened: not covered");
        assert!(!gate.wants_watcher(gate.load()));
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! The handshakes of the module docs, with the pool's queue as a
    //! counter of entries (a push is a `SeqCst` read-modify-write, as the
    //! queue's is): a task pushed while the only worker goes idle (spins,
    //! then parks) or gives its slot back is always taken; the limit is never
    //! exceeded; a submit racing a shutdown is either refused or its task
    //! is drained or run, exactly once.
    use super::*;
    use loom::sync::atomic::{AtomicBool, AtomicU32};
    use loom::sync::{Arc, Condvar, Mutex};
    use loom::thread;
    use std::sync::atomic::Ordering::SeqCst;

    struct Model {
        gate: Gate,
        /// The queue's entries.
        queue: AtomicU32,
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
                gate: Gate::new(1, 1),
                queue: AtomicU32::new(0),
                lock: Mutex::new(1),
                ready: Condvar::new(),
                spawned: AtomicBool::new(false),
                ran: AtomicU32::new(0),
                running: AtomicU32::new(0),
            })
        }

        fn queued(&self) -> bool {
            self.queue.load(SeqCst) > 0
        }

        fn pop(&self) -> bool {
            self.queue
                .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                .is_ok()
        }

        /// A submit: push, then the pool's provide_workers when needed (wake
        /// a sleeper, else start a worker while there are fewer threads
        /// than the limit). False when refused (shut down).
        fn submit(&self) -> bool {
            let Ok(entered) = self.gate.enter() else {
                return false;
            };
            self.queue.fetch_add(1, SeqCst);
            drop(entered);
            let after = self.gate.after_push();
            if self.gate.needs_worker(after) {
                let mut threads = self.lock.lock().unwrap();
                let idle = self.gate.idle();
                if idle.coming() == 0 && self.gate.load().has_room() && self.queued() {
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
            true
        }

        /// Runs a task in the slot held, checking the limit of 1.
        fn run_one(&self) {
            let now = self.running.fetch_add(1, SeqCst) + 1;
            assert!(now <= 1, "the limit is 1");
            self.running.fetch_sub(1, SeqCst);
            self.ran.fetch_add(1, SeqCst);
        }

        /// Pops and runs tasks while holding a slot; gives the slot back when
        /// the queue is empty (or the gate says so) and looks once more.
        /// True when it took a slot again for a task seen then.
        fn serve_holding(&self) -> bool {
            while self.gate.keep_slot() {
                if self.pop() {
                    self.run_one();
                    continue;
                }
                self.gate.release();
                return self.gate.take_slot(|| self.queued()).is_some();
            }
            false
        }

        /// A worker that serves until `want` tasks ran; it spins once,
        /// then parks (a parked worker wakes only when signalled). With
        /// `keep_alive_ran_out` its idle wait has just timed out: it leaves
        /// unless a task became startable (looked at under the lock).
        fn work(&self, want: u32, keep_alive_ran_out: bool) {
            let mut timed_out = keep_alive_ran_out;
            let mut may_spin = true;
            loop {
                if self.gate.take_slot(|| self.queued()).is_some() {
                    while self.serve_holding() {}
                    continue;
                }
                if self.ran.load(SeqCst) == want {
                    return;
                }
                if may_spin && !timed_out && self.gate.start_spinning(1) {
                    // One look while counted as spinning, taking a slot then
                    // (as the pool's spinners do).
                    may_spin = false;
                    let spun = self.gate.take_slot(|| self.queued()).is_some();
                    self.gate.stop_spinning();
                    if spun {
                        while self.serve_holding() {}
                    }
                    continue;
                }
                may_spin = true;
                let mut threads = self.lock.lock().unwrap();
                if timed_out {
                    if self.gate.load().has_room() && self.queued() {
                        timed_out = false;
                        continue;
                    }
                    *threads -= 1;
                    return;
                }
                if !self.gate.sleep_or_retry(|| self.queued()) {
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
            assert!(m.submit());
            assert!(m.submit());
            // A lost wake-up leaves the worker parked: loom reports the deadlock.
            w.join().unwrap();
            assert_eq!(m.ran.load(SeqCst), 2);
            assert_eq!(m.queue.load(SeqCst), 0);
            assert_eq!(m.gate.load().busy(), 0);
        });
    }

    /// A submit to a pool whose only running worker is stuck, while its
    /// watcher stops (or widens) and looks at the queue once more: either
    /// the submit found the pool no longer covered and wakes a worker, or
    /// the watcher's look finds the task and takes a slot for it.
    #[test]
    fn a_watcher_that_stops_strands_no_task() {
        for widen in [false, true] {
            loom::model(move || {
                let m = Model::new();
                m.gate.set_limit(2);
                // The stuck worker's slot.
                assert!(m.gate.take_slot(|| true).is_some());
                assert!(m.gate.start_watching());
                let watcher = {
                    let m = m.clone();
                    thread::spawn(move || {
                        m.gate.stop_watching(widen);
                        if m.gate.take_slot(|| m.queued()).is_some() {
                            assert!(m.pop());
                            m.ran.fetch_add(1, SeqCst);
                        }
                    })
                };
                m.queue.fetch_add(1, SeqCst);
                let woke = m.gate.needs_worker(m.gate.after_push());
                watcher.join().unwrap();
                assert!(
                    woke || m.ran.load(SeqCst) == 1,
                    "the task was left to a stuck worker"
                );
            });
        }
    }

    /// The pool's only worker leaves at the end of its keep-alive while a
    /// task is submitted: the submit finds it still counted among the
    /// threads (so it starts none), hence the worker must look at the queue
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
            assert!(m.submit());
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
            m.queue.store(2, SeqCst);
            let ws: Vec<_> = (0..2)
                .map(|_| {
                    let m = m.clone();
                    thread::spawn(move || {
                        if m.gate.take_slot(|| m.queued()).is_some() {
                            while m.serve_holding() {}
                        }
                    })
                })
                .collect();
            for w in ws {
                w.join().unwrap();
            }
            // A worker that found the slot taken left early; whoever held it
            // last gave it back, and each entry ran once.
            assert_eq!(m.gate.load().busy(), 0);
            assert_eq!(m.queue.load(SeqCst) + m.ran.load(SeqCst), 2);
            assert_eq!(m.ran.load(SeqCst), 2, "the holder took both");
        });
    }

    /// A submit racing a shutdown (which sets the bit, waits for the
    /// submits counted in, then drains): its task is drained (accepted,
    /// cancelled) or run by the worker that held a slot (accepted), or the
    /// submit is refused; never left in the queue, never two of these.
    #[test]
    fn a_submit_racing_a_shutdown_is_drained_run_or_refused_once() {
        loom::model(|| {
            let m = Model::new();
            let drained = Arc::new(AtomicU32::new(0));
            let w = {
                let m = m.clone();
                thread::spawn(move || {
                    if m.gate.take_slot(|| true).is_some() {
                        while m.serve_holding() {}
                    }
                })
            };
            let s = {
                let (m, drained) = (m.clone(), drained.clone());
                thread::spawn(move || {
                    m.gate.shut_down();
                    m.gate.wait_for_submits();
                    while m.pop() {
                        drained.fetch_add(1, SeqCst);
                    }
                })
            };
            let accepted = m.submit();
            w.join().unwrap();
            s.join().unwrap();
            let taken = drained.load(SeqCst) + m.ran.load(SeqCst);
            assert_eq!(taken, u32::from(accepted));
            assert_eq!(m.queue.load(SeqCst), 0, "nothing left behind");
        });
    }
}
