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

    /// Fires `target` at `at` (at once when `at` has passed). Without a user
    /// (no pool that could have such an entry), nothing is scheduled.
    pub(crate) fn schedule(&'static self, at: Instant, target: Weak<dyn Due>) {
        let mut st = self.lock();
        if st.users == 0 {
            return;
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
                }
            }
        } else if earliest {
            self.changed.notify_one();
        }
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

    fn finish(&mut self, _code: i32, _result: *mut std::ffi::c_void) {}
}
