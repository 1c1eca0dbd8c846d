//! Limiters: a cap on how many callables holding the limiter run at once,
//! and optionally on how many start per second, shared by every pool.
//!
//! A task with a limiter is admitted in two steps: it waits here, FIFO among
//! this limiter's tasks, until a running place is free and (with a rate) a
//! token is in the bucket; then it enters its pool's queue like any task.
//! Its place is held until its callable returns (or until it leaves without
//! running). Tasks that wait here hold no pool slot, and tasks without this
//! limiter never wait behind them.
//!
//! The limiter knows its tasks only as [`Waiter`]s, so it sits below the task
//! state machine. Lock order: a limiter's lock, then a pool's (an admission
//! moves the task into its pool's queue under both); a limiter's lock is
//! never taken while a pool's is held.

#[cfg(all(test, loom))]
use loom::sync::atomic::AtomicU64;
use std::collections::VecDeque;
#[cfg(not(all(test, loom)))]
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use once_cell::sync::OnceCell;

use crate::latency::{Histogram, Summary};
use crate::shard::{Counter, Padded};
use crate::timer::{timer, Due, Kept};

/// A task waiting for its limiter, as the limiter sees it.
pub(crate) trait Waiter: Send + Sync {
    /// Admits the task: it moves into its pool's queue, unless it left
    /// already (cancelled or expired). True when it was admitted.
    fn admit(self: Arc<Self>) -> bool;
    /// After an admission, with no lock held: lets the task's pool start it.
    fn admitted(&self);
    /// True while the task still waits (for pruning cancelled ones).
    fn waiting(&self) -> bool;
}

/// How a limiter is made or changed.
#[derive(Clone, Debug, PartialEq)]
pub struct LimiterOptions {
    /// Callables holding the limiter at once; 0 pauses it, `u32::MAX` is no cap.
    pub max_running: u32,
    /// Admissions per second (a token bucket); 0: no rate cap.
    pub rate_per_s: f64,
    /// The bucket's size when there is a rate; 0 means 1.
    pub burst: u32,
    /// Shown in stats and messages.
    pub name: String,
}

impl Default for LimiterOptions {
    fn default() -> Self {
        LimiterOptions {
            max_running: u32::MAX,
            rate_per_s: 0.0,
            burst: 0,
            name: String::new(),
        }
    }
}

/// A rate that is negative, NaN or infinite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadRate;

/// A limiter's counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LimiterStats {
    /// The cap.
    pub max_running: u32,
    /// Tasks waiting to be admitted.
    pub waiting: u64,
    /// Places held: admitted tasks that have not started yet or whose
    /// callable has not returned.
    pub running: u64,
    /// Admissions so far.
    pub admitted: u64,
    /// Tasks whose start deadline passed while they waited here.
    pub expired: u64,
    /// Tasks cancelled while they waited here.
    pub cancelled_waiting: u64,
}

/// The places, in two words on cache lines of their own, so that a submit
/// and a worker write different lines per task. `taken` is the submitting
/// side's: `max_running << 32 | SLOW | taken`, where `taken` counts every
/// place ever taken (modulo 2^31). `returned` is the workers': `SLOW_RETURNED
/// | returned`, every place given back (modulo 2^31, in its low bits).
/// `running` is `taken - returned`.
///
/// A limiter without a rate and with nobody waiting admits by CAS on
/// `taken` alone, with no lock. The CAS compares with the count given back
/// as last read (`seen`): that count only lags, so it never admits past the
/// cap, and it is read again from `returned` only when it says the cap is
/// reached: once in about as many takes as the cap leaves free (never
/// under no cap). A worker gives a place back by one add on `returned`,
/// which also tells it whether `SLOW` is set. So while the cap is far the
/// two sides seldom touch each other's line.
///
/// `SLOW` (set in both words, under the lock, while tasks wait or a rate
/// holds) sends both sides to the lock: a new task waits behind the waiting
/// ones, FIFO, and a place given back is handed to the first. No place given
/// back is lost to a waiter: a give-back that did not see `SLOW` came before
/// the setting of `SLOW` in `returned`, and the admission that follows that
/// setting (under the lock) reads `returned` after it.
struct Places {
    taken: Padded<TakeSide>,
    returned: Padded<AtomicU64>,
}

/// The submitting side of [`Places`].
struct TakeSide {
    word: AtomicU64,
    /// `returned` as last read; stored after an acquiring read of it
    /// (release), so a reader that loads it (acquire) and then `word` sees
    /// every take it counts as given back.
    seen: AtomicU64,
}

const COUNT_MASK: u64 = (1 << 31) - 1;
const SLOW: u64 = 1 << 31;
const MAX_SHIFT: u32 = 32;
/// `SLOW` in `returned`: the top bit, far above the carries of its count.
const SLOW_RETURNED: u64 = 1 << 63;

impl Places {
    fn new(max_running: u32, slow: bool) -> Places {
        Places {
            taken: Padded(TakeSide {
                word: AtomicU64::new(
                    (u64::from(max_running) << MAX_SHIFT) | if slow { SLOW } else { 0 },
                ),
                seen: AtomicU64::new(0),
            }),
            returned: Padded(AtomicU64::new(if slow { SLOW_RETURNED } else { 0 })),
        }
    }

    /// Places held (a snapshot).
    fn running(&self) -> u32 {
        // `returned` first: every give-back it counts comes after its take.
        let returned = self.returned.load(Ordering::Acquire);
        Self::held(self.taken.word.load(Ordering::Acquire), returned)
    }

    /// Places held by the counts in `word` and `returned`, where `returned`
    /// was read before `word`.
    fn held(word: u64, returned: u64) -> u32 {
        (word.wrapping_sub(returned) & COUNT_MASK) as u32
    }

    fn max_running(word: u64) -> u32 {
        (word >> MAX_SHIFT) as u32
    }

    /// Takes a place if one is free; `slow_ok`: also while `SLOW` is set
    /// (the caller holds the lock). None: `SLOW` is set and the caller does
    /// not hold the lock.
    fn try_take(&self, slow_ok: bool) -> Option<bool> {
        let mut returned = self.taken.seen.load(Ordering::Acquire);
        let mut word = self.taken.word.load(Ordering::Relaxed);
        let mut fresh = false;
        loop {
            if word & SLOW != 0 && !slow_ok {
                return None;
            }
            if Self::held(word, returned) >= Self::max_running(word) {
                if fresh {
                    return Some(false);
                }
                // Full by the count last seen: read the count again, then
                // the word (which counts every take given back in it).
                returned = self.read_returned();
                word = self.taken.word.load(Ordering::Relaxed);
                fresh = true;
                continue;
            }
            let new = (word & !COUNT_MASK) | (word.wrapping_add(1) & COUNT_MASK);
            match self.taken.word.compare_exchange_weak(
                word,
                new,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(true),
                Err(now) => word = now,
            }
        }
    }

    /// Reads the count given back and stores it as `seen`. Two threads may
    /// store theirs out of order, moving `seen` back: it then only lags
    /// more, which is safe (it could alias only after 2^31 places given back
    /// between one thread's read and its store).
    fn read_returned(&self) -> u64 {
        let returned = self.returned.load(Ordering::Acquire) & COUNT_MASK;
        self.taken.seen.store(returned, Ordering::Release);
        returned
    }

    /// Gives a place back; true when `SLOW` was set (the caller then admits
    /// under the lock).
    fn give_back(&self) -> bool {
        self.returned.fetch_add(1, Ordering::AcqRel) & SLOW_RETURNED != 0
    }

    /// Under the lock: sets the cap, and `SLOW` as the state says. The count
    /// given back is read again first: under a cap that was never reached it
    /// was never read, and a count seen 2^31 takes ago would alias under the
    /// new cap.
    fn set(&self, max_running: u32, slow: bool) {
        self.read_returned();
        let mut word = self.taken.word.load(Ordering::Relaxed);
        loop {
            let new = (u64::from(max_running) << MAX_SHIFT)
                | (word & COUNT_MASK)
                | if slow { SLOW } else { 0 };
            match self.taken.word.compare_exchange_weak(
                word,
                new,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => word = now,
            }
        }
        if slow {
            self.returned.fetch_or(SLOW_RETURNED, Ordering::AcqRel);
        } else {
            self.returned.fetch_and(!SLOW_RETURNED, Ordering::AcqRel);
        }
    }
}

struct State {
    max_running: u32,
    rate: f64,
    burst: f64,
    tokens: f64,
    refilled: Instant,
    /// A timer entry is set for this instant (the next token).
    refill_at: Option<Kept>,
    /// In admission order; entries that left already are skipped. Held
    /// weakly: a waiting task is kept alive by its pool, and a task holds its
    /// limiter, so a strong reference here would be a cycle.
    queue: VecDeque<Weak<dyn Waiter>>,
    /// Signed: a task can leave (a shutdown cancels it) in the moment
    /// between its pool counting it and its submit queueing it here; the
    /// count is then -1 until the queueing, and the stats show 0.
    waiting: i64,
    expired: u64,
    cancelled_waiting: u64,
}

/// A limiter (see the module docs). Tasks that hold it keep it alive.
pub struct Limiter {
    me: Weak<Limiter>,
    name: String,
    places: Places,
    /// Admissions, counted by whoever admits.
    admitted: Counter,
    state: Mutex<State>,
    /// Queue wait and run time of its tasks that ran on pools that record
    /// latency; made on first use.
    latency: OnceCell<Box<(Histogram, Histogram)>>,
}

fn check_rate(rate: f64) -> Result<(), BadRate> {
    if rate.is_finite() && rate >= 0.0 {
        Ok(())
    } else {
        Err(BadRate)
    }
}

fn bucket(burst: u32) -> f64 {
    f64::from(burst.max(1))
}

impl Limiter {
    /// A limiter as `options` say; its bucket starts full.
    pub fn new(options: LimiterOptions) -> Result<Arc<Limiter>, BadRate> {
        check_rate(options.rate_per_s)?;
        let burst = bucket(options.burst);
        Ok(Arc::new_cyclic(|me| Limiter {
            me: me.clone(),
            name: options.name,
            places: Places::new(options.max_running, options.rate_per_s > 0.0),
            admitted: Counter::default(),
            state: Mutex::new(State {
                max_running: options.max_running,
                rate: options.rate_per_s,
                burst,
                tokens: burst,
                refilled: Instant::now(),
                refill_at: None,
                queue: VecDeque::new(),
                waiting: 0,
                expired: 0,
                cancelled_waiting: 0,
            }),
            latency: OnceCell::new(),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No user code runs under this lock, so its data stays consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Changes the cap and the rate. Raising either admits waiting tasks at
    /// once; lowering interrupts nothing. A rate set where there was none
    /// starts with a full bucket.
    pub fn set(&self, max_running: u32, rate_per_s: f64, burst: u32) -> Result<(), BadRate> {
        check_rate(rate_per_s)?;
        let mut st = self.lock();
        refill(&mut st, Instant::now());
        let burst = bucket(burst);
        st.tokens = if st.rate == 0.0 {
            burst
        } else {
            st.tokens.min(burst)
        };
        st.max_running = max_running;
        st.rate = rate_per_s;
        st.burst = burst;
        st.refill_at = None;
        self.places.set(max_running, Self::slow(&st));
        self.admit_waiting(st);
        Ok(())
    }

    /// The counters.
    pub fn stats(&self) -> LimiterStats {
        let st = self.lock();
        LimiterStats {
            max_running: st.max_running,
            waiting: st.waiting.max(0) as u64,
            running: u64::from(self.places.running()),
            admitted: self.admitted.sum(),
            expired: st.expired,
            cancelled_waiting: st.cancelled_waiting,
        }
    }

    /// Queue wait and run time of its tasks, as recorded by pools that record
    /// latency (zero counts until one did).
    pub fn latency(&self) -> (Summary, Summary) {
        match self.latency.get() {
            Some(l) => (l.0.summary(), l.1.summary()),
            None => Default::default(),
        }
    }

    /// Records a task's queue wait (submit to start).
    pub(crate) fn record_queue_wait(&self, ns: u64) {
        self.histograms().0.record(ns);
    }

    /// Records a task's run time.
    pub(crate) fn record_run(&self, ns: u64) {
        self.histograms().1.record(ns);
    }

    fn histograms(&self) -> &(Histogram, Histogram) {
        self.latency.get_or_init(Box::default)
    }

    /// Whether admissions and places given back go through the lock (see
    /// [`Places`]).
    fn slow(st: &State) -> bool {
        // The queue too: a task that left before its submit queued it here
        // takes `waiting` to -1, and the next task's queueing back to 0
        // while that task waits.
        st.waiting != 0 || st.rate > 0.0 || !st.queue.is_empty()
    }

    /// Drops the entries of tasks that left (they stay queued until
    /// admission reaches them).
    fn drop_left(st: &mut State) {
        st.queue
            .retain(|w| w.upgrade().is_some_and(|w| w.waiting()));
    }

    /// After a change of who waits: with nobody waiting, entries of tasks
    /// that left go, so that `SLOW` can clear; then `SLOW` as the state says.
    fn settle(&self, st: &mut State) {
        if st.waiting == 0 && !st.queue.is_empty() {
            Self::drop_left(st);
        }
        self.places.set(st.max_running, Self::slow(st));
    }

    /// Admits a new task at once when nothing waits before it and a place
    /// (and, with a rate, a token) is free: the fast path of a submit, with
    /// no lock unless tasks wait or a rate holds. False when it has to wait
    /// ([`Limiter::enqueue`]).
    pub(crate) fn try_acquire(&self) -> bool {
        if let Some(taken) = self.places.try_take(false) {
            if taken {
                self.admitted.add(1);
            }
            return taken;
        }
        let mut st = self.lock();
        if st.waiting > 0 {
            return false;
        }
        if st.rate > 0.0 {
            refill(&mut st, Instant::now());
            if st.tokens < 1.0 {
                return false;
            }
        }
        if self.places.try_take(true) != Some(true) {
            return false;
        }
        if st.rate > 0.0 {
            st.tokens -= 1.0;
        }
        self.admitted.add(1);
        true
    }

    /// Takes back a [`Limiter::try_acquire`] whose submit was refused (it
    /// was no admission: the token goes back too).
    pub(crate) fn undo_acquire(&self) {
        let mut st = self.lock();
        self.places.give_back();
        self.admitted.sub(1);
        if st.rate > 0.0 {
            st.tokens = (st.tokens + 1.0).min(st.burst);
        }
        self.admit_waiting(st);
    }

    /// A new task waits for admission (and is admitted at once when a place
    /// and a token are free and nothing waits before it).
    pub(crate) fn enqueue(&self, waiter: &Arc<dyn Waiter>) {
        let mut st = self.lock();
        st.queue.push_back(Arc::downgrade(waiter));
        st.waiting += 1;
        self.places.set(st.max_running, Self::slow(&st));
        self.admit_waiting(st);
    }

    /// A place is given back: the callable returned, or an admitted task
    /// left before it started.
    pub(crate) fn release(&self) {
        if self.places.give_back() {
            self.admit_waiting(self.lock());
        }
    }

    /// A waiting task left without being admitted: cancelled, or expired.
    pub(crate) fn left_waiting(&self, expired: bool) {
        let mut st = self.lock();
        st.waiting -= 1;
        self.settle(&mut st);
        if expired {
            st.expired += 1;
        } else {
            st.cancelled_waiting += 1;
        }
        // Tasks that left stay queued until admission reaches them; when they
        // outnumber the ones that wait, drop them now.
        if st.queue.len() as i64 > 2 * st.waiting + 16 {
            Self::drop_left(&mut st);
        }
    }

    /// Admits waiting tasks in order while places and tokens allow, then
    /// lets their pools start them with no lock held. Sets a timer for the
    /// next token when only the rate holds the next one back.
    fn admit_waiting(&self, mut st: MutexGuard<'_, State>) {
        if st.waiting <= 0 {
            // What is queued (if anything) has left already.
            self.settle(&mut st);
            return;
        }
        let mut admitted = Vec::new();
        let now = Instant::now();
        refill(&mut st, now);
        loop {
            if st.rate > 0.0 && st.tokens < 1.0 {
                break;
            }
            let Some(waiter) = st.queue.front().and_then(Weak::upgrade) else {
                if st.queue.pop_front().is_none() {
                    break;
                }
                continue; // it left already and is gone
            };
            // A place for it, taken as a submit takes one (the count given
            // back is read again when the one seen says the cap is reached).
            if self.places.try_take(true) != Some(true) {
                break;
            }
            st.queue.pop_front();
            if !waiter.clone().admit() {
                self.places.give_back();
                continue; // it left already, and said so
            }
            st.waiting -= 1;
            self.admitted.add(1);
            if st.rate > 0.0 {
                st.tokens -= 1.0;
            }
            admitted.push(waiter);
        }
        self.settle(&mut st);
        let running = self.places.running();
        let wants_token = st.waiting > 0 && running < st.max_running && st.rate > 0.0;
        // One timer entry for the next token at a time, unless the timer has
        // dropped it since (all its pools shut down, a fork).
        if wants_token && !st.refill_at.is_some_and(|kept| timer().still_kept(kept)) {
            // A rate too small for the next token to come within an
            // `Instant` never admits by its rate again: nothing to schedule.
            let wait = Duration::try_from_secs_f64(((1.0 - st.tokens) / st.rate).max(0.0));
            if let Some(at) = wait.ok().and_then(|w| now.checked_add(w)) {
                st.refill_at = timer().schedule(at, self.me.clone() as Weak<dyn Due>);
            }
        }
        drop(st);
        for waiter in admitted {
            waiter.admitted();
        }
    }
}

/// Adds the tokens earned since the last refill.
fn refill(st: &mut State, now: Instant) {
    if st.rate > 0.0 {
        let earned = now.saturating_duration_since(st.refilled).as_secs_f64() * st.rate;
        st.tokens = (st.tokens + earned).min(st.burst);
    }
    st.refilled = now;
}

impl Due for Limiter {
    /// The next token is due: admit whoever it lets in.
    fn fire(self: Arc<Self>) {
        let mut st = self.lock();
        st.refill_at = None;
        self.admit_waiting(st);
    }
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("name", &self.name)
            .field("stats", &self.stats())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A waiter that records the order of admissions.
    struct Fake {
        id: usize,
        gone: AtomicBool,
        admitted: AtomicBool,
        order: Arc<Mutex<Vec<usize>>>,
    }

    impl Waiter for Fake {
        fn admit(self: Arc<Self>) -> bool {
            if self.gone.load(Ordering::Relaxed) {
                return false;
            }
            self.admitted.store(true, Ordering::Relaxed);
            self.order.lock().unwrap().push(self.id);
            true
        }
        fn admitted(&self) {}
        fn waiting(&self) -> bool {
            !self.gone.load(Ordering::Relaxed) && !self.admitted.load(Ordering::Relaxed)
        }
    }

    /// The order in which fakes were admitted, by id.
    type Order = Arc<Mutex<Vec<usize>>>;

    fn fakes(n: usize) -> (Vec<Arc<dyn Waiter>>, Vec<Arc<Fake>>, Order) {
        let order = Arc::new(Mutex::new(vec![]));
        let concrete: Vec<Arc<Fake>> = (0..n)
            .map(|id| {
                Arc::new(Fake {
                    id,
                    gone: AtomicBool::new(false),
                    admitted: AtomicBool::new(false),
                    order: order.clone(),
                })
            })
            .collect();
        let dyns = concrete
            .iter()
            .map(|f| f.clone() as Arc<dyn Waiter>)
            .collect();
        (dyns, concrete, order)
    }

    fn limiter(max_running: u32, rate_per_s: f64, burst: u32) -> Arc<Limiter> {
        Limiter::new(LimiterOptions {
            max_running,
            rate_per_s,
            burst,
            name: "t".into(),
        })
        .unwrap()
    }

    #[test]
    fn admits_in_order_up_to_the_cap_and_on_each_release() {
        let lim = limiter(2, 0.0, 0);
        let (waiters, _, order) = fakes(5);
        waiters.iter().for_each(|w| lim.enqueue(w));
        assert_eq!(*order.lock().unwrap(), [0, 1]);
        assert_eq!((lim.stats().waiting, lim.stats().running), (3, 2));
        assert!(
            !lim.try_acquire(),
            "a new task never overtakes a waiting one"
        );
        lim.release();
        assert_eq!(*order.lock().unwrap(), [0, 1, 2]);
        lim.set(10, 0.0, 0).unwrap();
        assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3, 4]);
        let s = lim.stats();
        assert_eq!((s.waiting, s.running, s.admitted), (0, 4, 5));
        assert!(
            lim.try_acquire(),
            "room and nobody waiting: admitted at once"
        );
    }

    #[test]
    fn a_waiter_that_left_is_skipped_and_counted_once() {
        let lim = limiter(0, 0.0, 0);
        let (waiters, concrete, order) = fakes(3);
        waiters.iter().for_each(|w| lim.enqueue(w));
        concrete[1].gone.store(true, Ordering::Relaxed);
        lim.left_waiting(false);
        concrete[2].gone.store(true, Ordering::Relaxed);
        lim.left_waiting(true);
        lim.set(5, 0.0, 0).unwrap();
        assert_eq!(*order.lock().unwrap(), [0]);
        let s = lim.stats();
        assert_eq!((s.waiting, s.admitted), (0, 1));
        assert_eq!((s.cancelled_waiting, s.expired), (1, 1));
    }

    #[test]
    fn many_cancelled_waiters_are_pruned() {
        let lim = limiter(0, 0.0, 0);
        let (waiters, concrete, _) = fakes(100);
        waiters.iter().for_each(|w| lim.enqueue(w));
        for f in &concrete[1..] {
            f.gone.store(true, Ordering::Relaxed);
            lim.left_waiting(false);
        }
        // One waits: at most 2 × 1 + 16 entries stay after the last prune.
        assert!(lim.lock().queue.len() <= 2 + 16 + 1);
        assert_eq!(lim.stats().waiting, 1);
    }

    #[test]
    fn a_rate_spends_the_full_bucket_then_one_token_per_period() {
        let lim = limiter(u32::MAX, 200.0, 2); // a token every 5 ms
        let (waiters, _, order) = fakes(4);
        let start = Instant::now();
        waiters.iter().for_each(|w| lim.enqueue(w));
        assert_eq!(order.lock().unwrap().len(), 2, "the bucket starts full");
        std::thread::sleep(Duration::from_millis(6));
        // What the timer does when the next token is due.
        lim.clone().fire();
        // One token per 5 ms since the start (the timer thread may have
        // fired too, and a slow run, under a sanitizer, earns more).
        let earned = (start.elapsed().as_millis() / 5) as usize;
        let admitted = order.lock().unwrap().len();
        assert!(admitted >= 3, "a token came after 5 ms");
        assert!(
            admitted <= (2 + earned).min(4),
            "{admitted} admitted, {earned} tokens earned"
        );
        let undone = limiter(u32::MAX, 1.0, 1);
        assert!(undone.try_acquire());
        assert!(!undone.try_acquire(), "no token left");
        undone.undo_acquire();
        assert!(undone.try_acquire(), "a refused submit gave its token back");
    }

    /// A shutdown can cancel a task between its pool counting it and its
    /// submit queueing it at the limiter: the limiter hears of the leaving
    /// first (this once took its count below zero: a panic in debug builds).
    #[test]
    fn a_task_may_leave_before_it_is_queued() {
        let lim = limiter(0, 0.0, 0);
        lim.left_waiting(false);
        assert_eq!(lim.stats().waiting, 0);
        let (waiters, concrete, order) = fakes(1);
        concrete[0].gone.store(true, Ordering::Relaxed);
        lim.enqueue(&waiters[0]);
        lim.set(5, 0.0, 0).unwrap();
        let s = lim.stats();
        assert_eq!((s.waiting, s.cancelled_waiting, s.admitted), (0, 1, 0));
        assert!(order.lock().unwrap().is_empty());
    }

    #[test]
    fn a_rate_too_small_for_any_instant_schedules_nothing() {
        let lim = limiter(u32::MAX, 1e-300, 1);
        let (waiters, _, order) = fakes(2);
        waiters.iter().for_each(|w| lim.enqueue(w));
        assert_eq!(order.lock().unwrap().len(), 1, "the full bucket's token");
        assert!(lim.lock().refill_at.is_none());
    }

    #[test]
    fn a_bad_rate_is_refused_and_changes_nothing() {
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            let opts = LimiterOptions {
                rate_per_s: bad,
                ..LimiterOptions::default()
            };
            assert_eq!(Limiter::new(opts).err(), Some(BadRate));
        }
        let lim = limiter(3, 0.0, 0);
        assert_eq!(lim.set(1, f64::NAN, 0), Err(BadRate));
        assert_eq!(lim.stats().max_running, 3);
    }

    #[test]
    fn the_cap_holds_while_lock_free_admissions_race_waiters_and_releases() {
        use std::sync::atomic::AtomicUsize;
        let lim = limiter(2, 0.0, 0);
        let held = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let fast = AtomicUsize::new(0);
        let hold = || {
            let n = held.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(n, Ordering::SeqCst);
            std::thread::yield_now();
            held.fetch_sub(1, Ordering::SeqCst);
        };
        let (dyns, fakes, order) = fakes(300);
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    for _ in 0..20_000 {
                        if lim.try_acquire() {
                            fast.fetch_add(1, Ordering::Relaxed);
                            hold();
                            lim.release();
                        }
                    }
                });
            }
            s.spawn(|| {
                // Each waiter, once admitted (a place given back handed it
                // one), holds its place and gives it back like the others.
                for (d, f) in dyns.iter().zip(&fakes) {
                    lim.enqueue(d);
                    let deadline = Instant::now() + Duration::from_secs(10);
                    while !f.admitted.load(Ordering::Relaxed) {
                        assert!(Instant::now() < deadline, "a waiter was never admitted");
                        std::thread::yield_now();
                    }
                    hold();
                    lim.release();
                }
            });
        });
        assert!(
            most.load(Ordering::SeqCst) <= 2,
            "more than the cap held places"
        );
        let st = lim.stats();
        assert_eq!((st.running, st.waiting), (0, 0));
        assert_eq!(st.admitted, fast.load(Ordering::Relaxed) as u64 + 300);
        assert_eq!(*order.lock().unwrap(), (0..300).collect::<Vec<_>>());
    }
}

#[cfg(test)]
mod places_tests {
    use super::*;

    /// Places whose counts stand at `taken` and `returned` (modulo 2^31).
    fn places_at(max_running: u32, taken: u64, returned: u64) -> Places {
        let p = Places::new(max_running, false);
        p.taken.word.fetch_or(taken & COUNT_MASK, Ordering::Relaxed);
        p.returned
            .fetch_or(returned & COUNT_MASK, Ordering::Relaxed);
        p
    }

    #[test]
    fn the_counts_wrap_without_losing_a_place() {
        // Both counts cross 2^31 while two places are held.
        let p = places_at(2, COUNT_MASK - 1, COUNT_MASK - 3);
        assert_eq!(p.running(), 2);
        assert_eq!(p.try_take(false), Some(false), "the cap is reached");
        for _ in 0..5 {
            assert!(!p.give_back());
            assert_eq!(p.running(), 1);
            assert_eq!(p.try_take(false), Some(true));
            assert_eq!(p.running(), 2);
            assert_eq!(p.try_take(false), Some(false));
        }
    }

    #[test]
    fn a_cap_set_after_the_counts_wrapped_under_no_cap_holds() {
        // Under no cap the count given back was never read; the counts
        // wrapped since, with two places held.
        let p = places_at(u32::MAX, 1, COUNT_MASK);
        assert_eq!(p.running(), 2);
        p.set(2, false);
        assert_eq!(p.try_take(false), Some(false), "the new cap is reached");
        assert!(!p.give_back());
        assert_eq!(p.try_take(false), Some(true));
    }

    #[test]
    fn a_stale_count_given_back_is_read_again_before_refusing() {
        let p = Places::new(1, false);
        assert_eq!(p.try_take(false), Some(true));
        assert!(!p.give_back());
        // `seen` still says 0 given back; the take reads it again.
        assert_eq!(p.try_take(false), Some(true));
        assert_eq!(p.running(), 1);
        assert_eq!(p.try_take(false), Some(false));
    }

    #[test]
    fn slow_is_seen_on_both_sides_and_sends_takes_to_the_lock() {
        let p = Places::new(3, false);
        p.set(3, true);
        assert_eq!(p.try_take(false), None);
        assert_eq!(p.try_take(true), Some(true));
        assert!(p.give_back(), "a give-back while SLOW goes to the lock");
        p.set(3, false);
        assert_eq!(p.try_take(false), Some(true));
        assert!(!p.give_back());
        assert_eq!(p.running(), 0);
    }
}

/// loom model-checks the split places (`make test-loom`).
#[cfg(all(test, loom))]
mod loom_tests {
    use super::Places;
    use loom::sync::atomic::{AtomicU32, Ordering::SeqCst};
    use loom::sync::{Arc, Mutex};

    /// A place given back while a new task finds the cap reached and starts
    /// to wait reaches that task: the give-back sees `SLOW` and admits under
    /// the lock, or the admission after `SLOW` is set finds the place free.
    #[test]
    fn a_place_given_back_reaches_a_task_that_starts_to_wait() {
        loom::model(|| {
            let places = Arc::new(Places::new(1, false));
            assert_eq!(places.try_take(false), Some(true));
            // True while a task waits.
            let waits = Arc::new(Mutex::new(false));
            let admitted = Arc::new(AtomicU32::new(0));
            let admit = |places: &Places, waits: &mut bool, admitted: &AtomicU32| {
                if *waits && places.try_take(true) == Some(true) {
                    *waits = false;
                    admitted.fetch_add(1, SeqCst);
                    places.set(1, false);
                }
            };
            let worker = {
                let (places, waits, admitted) = (places.clone(), waits.clone(), admitted.clone());
                loom::thread::spawn(move || {
                    if places.give_back() {
                        admit(&places, &mut waits.lock().unwrap(), &admitted);
                    }
                })
            };
            if places.try_take(false) == Some(true) {
                admitted.fetch_add(1, SeqCst);
            } else {
                let mut w = waits.lock().unwrap();
                *w = true;
                places.set(1, true);
                admit(&places, &mut w, &admitted);
            }
            worker.join().unwrap();
            assert_eq!(admitted.load(SeqCst), 1, "the task was admitted");
            assert_eq!(places.running(), 1);
        });
    }

    /// Two takes racing a give-back at the cap: one place, at most one take,
    /// whatever count of places given back each had seen.
    #[test]
    fn takes_never_pass_the_cap_with_a_stale_count() {
        loom::model(|| {
            let places = Arc::new(Places::new(1, false));
            assert_eq!(places.try_take(false), Some(true));
            let taker = |places: Arc<Places>| {
                loom::thread::spawn(move || u32::from(places.try_take(false) == Some(true)))
            };
            let (a, b) = (taker(places.clone()), taker(places.clone()));
            assert!(!places.give_back());
            let took = a.join().unwrap() + b.join().unwrap();
            assert!(took <= 1, "two places taken under a cap of one");
            assert_eq!(places.running(), took);
        });
    }
}
