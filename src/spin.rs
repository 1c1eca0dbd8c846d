//! Brief spinning before parking a thread.
//!
//! Parking on a futex and being woken costs a few microseconds of kernel work
//! and scheduling on each side; a task that takes a microsecond should not
//! pay that twice. An idle worker and a waiting caller therefore watch for
//! their event for a short while (`ASYNCIFY_SPIN_US`, default 50 µs; 0 turns
//! spinning off, e.g. under valgrind) before they park. A worker spins only
//! right after it ran a task, so an idle pool does not burn the machine; it
//! yields while it spins, so on a busy machine the thread it waits for runs.
//!
//! At most `ASYNCIFY_SPINNERS` workers of a pool spin at once (default: one
//! less than the number of CPUs, at least 1: the caller waiting for a task
//! spins too). More spinners save futex wake-ups under a flood of tiny tasks
//! (W1 at limit 8 on 2 CPUs: 3.0 M/s with 8, 1.9 M/s with 1), but they take
//! the CPUs from the threads that have work when tasks come one at a time
//! (W2 p50 on 2 CPUs: 6 µs with 2 or more, 0.5 µs with 1).
//!
//! A caller waiting for a task stops spinning, and parks, once its yields
//! show that another thread runs on its CPU (see [`spin_until`]): the
//! waiter and the worker spinning for its next task had landed on one CPU,
//! where each saw the other's work only at its yields (W2 p50 3 µs instead
//! of 1 µs, in about a third of the runs); a park and wake-up lets the
//! scheduler place them apart again.

use std::time::{Duration, Instant};

use once_cell::sync::Lazy;

const DEFAULT_SPIN: Duration = Duration::from_micros(50);

static SPIN: Lazy<Duration> = Lazy::new(|| {
    std::env::var("ASYNCIFY_SPIN_US")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(DEFAULT_SPIN, Duration::from_micros)
});

static MAX_SPINNERS: Lazy<u32> = Lazy::new(|| {
    std::env::var("ASYNCIFY_SPINNERS")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or_else(spare_cpus)
});

/// The CPUs this process may use less one, left to the thread that submits
/// and waits (at least 1): how many idle workers may spin at once by
/// default, and how many of a pool run a flood of tasks before its watcher
/// decides whether more should (see [`crate::gate`]). Read from the system
/// on each call.
pub(crate) fn spare_cpus() -> u32 {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    cpus.saturating_sub(1).max(1)
}

/// How many idle workers of a pool may spin at once.
pub(crate) fn max_spinners() -> u32 {
    *MAX_SPINNERS
}

/// True when spinning is on.
pub(crate) fn enabled() -> bool {
    !SPIN.is_zero()
}

/// A yield that took longer than this gave the CPU to another thread: one
/// that shares this CPU and has work (a `sched_yield` with nobody else to
/// run takes about 0.2 µs).
const YIELD_GAVE_CPU: Duration = Duration::from_micros(2);

/// What [`spin_until`] does when its yields show another thread running on
/// the same CPU.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shared {
    /// Spin on: the thread we wait for gets the CPU at each yield.
    SpinOn,
    /// Stop spinning, so that the caller parks: waking from a park lets the
    /// scheduler place the two threads on different CPUs again, where
    /// spinning the next time pays.
    Park,
}

thread_local! {
    /// When the last wait of this thread with [`Shared::Park`] saw its event
    /// only after a yield that gave the CPU away: the thread it waits for
    /// runs on this CPU, so a wait that follows within the spin time parks
    /// at once.
    static SHARES_CPU: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

/// Polls `ready` for up to the spin time; true as soon as it returns true.
///
/// Two threads that hand work to each other and spin may end up on one CPU
/// (a wake-up places the wakee by its waker): each then sees the other's
/// work only when it yields, and stays there, as neither ever sleeps. With
/// [`Shared::Park`], a wait whose event came only after a yield that gave
/// the CPU away makes the next wait of this thread, if it comes within the
/// spin time, park without spinning, and two such yields in a row end the
/// spin at once.
pub(crate) fn spin_until(shared: Shared, ready: impl FnMut() -> bool) -> bool {
    let limit = *SPIN;
    if limit.is_zero() {
        return false;
    }
    spin_for(limit, shared, ready)
}

/// [`spin_until`] for up to `limit`, whatever the spin time (the pool's
/// watcher looks for a fixed time, also where spinning is turned off).
pub(crate) fn spin_for(limit: Duration, shared: Shared, mut ready: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    if shared == Shared::Park {
        let shared_at = SHARES_CPU.with(|s| s.take());
        if shared_at.is_some_and(|at| start.duration_since(at) < limit) {
            return ready();
        }
    }
    let mut round: u32 = 0;
    let mut gave_cpu = 0;
    loop {
        if ready() {
            if gave_cpu > 0 {
                SHARES_CPU.with(|s| s.set(Some(Instant::now())));
            }
            return true;
        }
        round = round.wrapping_add(1);
        if round % 64 == 0 {
            let before = Instant::now();
            if before.duration_since(start) >= limit {
                return false;
            }
            // On a busy machine the thread we wait for may need this core.
            std::thread::yield_now();
            if shared == Shared::Park {
                if before.elapsed() < YIELD_GAVE_CPU {
                    gave_cpu = 0;
                } else {
                    gave_cpu += 1;
                    if gave_cpu == 2 {
                        return ready();
                    }
                }
            }
        } else {
            std::hint::spin_loop();
        }
    }
}
