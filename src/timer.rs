//! The library's timer: one thread per process that fires what is due at a
//! given time (a task's start deadline, a rate limiter's next token) whether
//! or not anything else happens, so nothing waits for the next submit.
//!
//! The thread starts with the first entry and belongs to the pools that use
//! it (a pool becomes a user when it is given a task with a deadline or a
//! limiter): once the last of them is shut down, the thread stops and is
//! joined by that shutdown. Entries hold their target weakly: a task that
//! finished, or a limiter that was freed, is simply not fired.
//!
//! Like a worker, the timer thread is started with `sys::spawn_thread`, and
//! the callbacks a firing leads to (an expired task's `free_arg` and
//! `on_done`) are made from its start routine with no lock held.

use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Condvar, Mutex, MutexGuard, Weak};
use std::time::Instant;

use crate::handles::fork_epoch;
use crate::sys::{self, ForeignCall, Thread, ThreadBody};

/// Something the timer fires at its time.
pub(crate) trait Due: Send + Sync {
    /// The time has come (called on the timer thread, no lock held).
    fn fire(self: std::sync::Arc<Self>);
}

struct Entry {
    at: Instant,
    /// Orders entries due at the same instant by when they were added.
    seq: u64,
    target: Weak<dyn Due>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

#[derive(Default)]
struct State {
    entries: BinaryHeap<Reverse<Entry>>,
    seq: u64,
    /// Pools that use the timer and are not shut down.
    users: u32,
    /// The thread runs (started, not told to stop).
    running: bool,
    /// The running thread, for the last user's shutdown to join.
    thread: Option<Thread>,
    /// Which thread should run: a stopped one (whose number is lower) leaves
    /// even when a new one started before it noticed.
    generation: u64,
    /// Bumped whenever every entry is dropped at once (the thread stopped,
    /// or could not start): a [`Kept`] from before no longer fires.
    clears: u64,
    /// Entries are dropped from the heap (those whose target is gone) when it
    /// reaches this size: a task that finished long before its deadline must
    /// not keep its memory (a weak reference does) until then.
    compact_at: usize,
}

/// Says that an entry was kept, until the timer drops every entry at once
/// (see [`Timer::still_kept`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Kept {
    timer: usize,
    clears: u64,
}

/// The process's timer (see the module docs).
#[derive(Default)]
pub(crate) struct Timer {
    state: Mutex<State>,
    changed: Condvar,
}

/// One timer per fork epoch: a forked child gets a fresh one (the parent's
/// thread does not exist there).
static TIMERS: [once_cell::sync::Lazy<Timer>; 256] =
    [const { once_cell::sync::Lazy::new(Timer::default) }; 256];

thread_local! {
    static ON_TIMER_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// The timer of this process.
pub(crate) fn timer() -> &'static Timer {
    &TIMERS[usize::from(fork_epoch())]
}

/// True on the timer thread (inside a callback a firing led to).
pub(crate) fn on_timer_thread() -> bool {
    ON_TIMER_THREAD.try_with(Cell::get).unwrap_or(false)
}

impl Timer {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No user code runs under this lock, so its data stays consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A pool starts using the timer.
    pub(crate) fn add_user(&self) {
        self.lock().users += 1;
    }

    /// A pool that used the timer is shut down. The last one stops the
    /// thread and joins it (from the timer thread itself, it detaches).
    pub(crate) fn remove_user(&self) {
        let thread = {
            let mut st = self.lock();
            st.users -= 1;
            if st.users > 0 || !st.running {
                return;
            }
            st.running = false;
            st.generation += 1;
            st.clears += 1;
            st.entries.clear();
            self.changed.notify_all();
            st.thread.take()
        };
        if let Some(thread) = thread {
            if on_timer_thread() {
                thread.detach();
            } else {
                thread.join();
            }
        }
    }

    /// Fires `target` at `at` (at once when `at` has passed), and says so;
    /// `None` when nothing was scheduled: without a user (no pool that could
    /// have such an entry), or without a thread to fire it.
    pub(crate) fn schedule(&'static self, at: Instant, target: Weak<dyn Due>) -> Option<Kept> {
        let mut st = self.lock();
        if st.users == 0 {
            return None;
        }
        if st.entries.len() >= st.compact_at {
            st.entries.retain(|Reverse(e)| e.target.strong_count() > 0);
            st.compact_at = (2 * st.entries.len()).max(1024);
        }
        st.seq += 1;
        let seq = st.seq;
        let earliest = st.entries.peek().is_none_or(|Reverse(e)| at < e.at);
        st.entries.push(Reverse(Entry { at, seq, target }));
        if !st.running {
            // A stopped thread that has not left yet (stopped from itself,
            // so detached) sees another generation and leaves.
            st.running = true;
            let body = TimerThread {
                timer: self,
                generation: st.generation,
            };
            match sys::spawn_thread(body, 0, "asyncify-timer") {
                Ok(thread) => st.thread = Some(thread),
                Err(_) => {
                    // Deadlines then fire at the next start or wait that
                    // notices them (a worker expires a task past its
                    // deadline instead of starting it); try again next time.
                    st.running = false;
                    st.entries.clear();
                    st.clears += 1;
                    return None;
                }
            }
        } else if earliest {
            self.changed.notify_one();
        }
        Some(Kept {
            timer: self as *const Timer as usize,
            clears: st.clears,
        })
    }

    /// True while the entry `kept` names is still to fire or firing: this
    /// timer has not dropped its entries since (a forked child's timer is
    /// another one).
    pub(crate) fn still_kept(&self, kept: Kept) -> bool {
        kept.timer == self as *const Timer as usize && self.lock().clears == kept.clears
    }

    /// Waits until an entry is due and takes every due one; None when the
    /// thread is to stop.
    fn next_due(&self, generation: u64) -> Option<Vec<Weak<dyn Due>>> {
        let mut st = self.lock();
        loop {
            if st.generation != generation {
                return None;
            }
            let now = Instant::now();
            let mut due = Vec::new();
            while let Some(Reverse(e)) = st.entries.peek() {
                if e.at > now {
                    break;
                }
                let Reverse(e) = st.entries.pop().expect("peeked");
                due.push(e.target);
            }
            if !due.is_empty() {
                return Some(due);
            }
            st = match st.entries.peek().map(|Reverse(e)| e.at) {
                None => self.changed.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(at) => {
                    self.changed
                        .wait_timeout(st, at - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }
}

/// The timer thread's body: each step fires what is due; the callbacks it
/// leads to are made by the start routine between steps.
struct TimerThread {
    timer: &'static Timer,
    generation: u64,
}

impl ThreadBody for TimerThread {
    fn next(&mut self) -> ForeignCall {
        ON_TIMER_THREAD.with(|t| t.set(true));
        let Some(due) = self.timer.next_due(self.generation) else {
            return ForeignCall::Exit;
        };
        for target in due {
            if let Some(target) = target.upgrade() {
                target.fire();
            }
        }
        ForeignCall::Again
    }

    fn finish(&mut self, _code: i32, _result: *mut std::ffi::c_void) -> Option<ForeignCall> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    struct Mark {
        id: u32,
        at: Instant,
        fired: Arc<Mutex<Vec<(u32, Instant)>>>,
    }

    impl Due for Mark {
        fn fire(self: Arc<Self>) {
            self.fired.lock().unwrap().push((self.id, Instant::now()));
        }
    }

    /// A timer of the test's own, kept reachable from a static: a leaked one
    /// that nothing points to is a leak to LeakSanitizer (make test-rust-asan).
    fn timer_for_test() -> &'static Timer {
        static TIMERS: Mutex<Vec<&'static Timer>> = Mutex::new(Vec::new());
        let timer: &'static Timer = Box::leak(Box::default());
        TIMERS.lock().unwrap().push(timer);
        timer
    }

    #[test]
    fn fires_in_time_order_never_early_and_stops_with_its_last_user() {
        let timer = timer_for_test();
        let fired = Arc::new(Mutex::new(vec![]));
        let t0 = Instant::now();
        let marks: Vec<Arc<Mark>> = [30u64, 10, 20]
            .iter()
            .map(|&ms| {
                Arc::new(Mark {
                    id: ms as u32,
                    at: t0 + Duration::from_millis(ms),
                    fired: fired.clone(),
                })
            })
            .collect();
        // Without a user nothing is scheduled (and no thread starts).
        let m0: Arc<dyn Due> = marks[0].clone();
        timer.schedule(marks[0].at, Arc::downgrade(&m0));
        assert!(!timer.lock().running && timer.lock().entries.is_empty());
        timer.add_user();
        for m in &marks {
            let d: Arc<dyn Due> = m.clone();
            timer.schedule(m.at, Arc::downgrade(&d));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while fired.lock().unwrap().len() < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        let fired = fired.lock().unwrap().clone();
        assert_eq!(fired.iter().map(|f| f.0).collect::<Vec<_>>(), [10, 20, 30]);
        for (id, at) in fired {
            assert!(
                at >= t0 + Duration::from_millis(u64::from(id)),
                "never early"
            );
        }
        timer.remove_user();
        let st = timer.lock();
        assert!(!st.running && st.thread.is_none(), "stopped and joined");
    }

    #[test]
    fn entries_whose_target_is_gone_are_dropped_as_the_heap_grows() {
        let timer = timer_for_test();
        timer.add_user();
        let far = Instant::now() + Duration::from_secs(3600);
        for id in 0..5000 {
            let m: Arc<dyn Due> = Arc::new(Mark {
                id,
                at: far,
                fired: Arc::default(),
            });
            timer.schedule(far, Arc::downgrade(&m));
            // `m` is dropped here: its entry is stale at once.
        }
        assert!(timer.lock().entries.len() < 1100);
        timer.remove_user();
    }
}
