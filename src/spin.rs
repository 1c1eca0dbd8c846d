//! Brief spinning before parking a thread.
//!
//! Parking on a futex and being woken costs a few microseconds of kernel work
//! and scheduling on each side; a task that takes a microsecond should not
//! pay that twice. An idle worker and a waiting caller therefore watch for
//! their event for a short while (`ASYNCIFY_SPIN_US`, default 50 µs; 0 turns
//! spinning off, e.g. under valgrind) before they park. A worker spins only
//! right after it ran a task, so an idle pool does not burn the machine; it
//! yields while it spins, so on a busy machine the thread it waits for runs.

use std::time::{Duration, Instant};

use once_cell::sync::Lazy;

const DEFAULT_SPIN: Duration = Duration::from_micros(50);

static SPIN: Lazy<Duration> = Lazy::new(|| {
    std::env::var("ASYNCIFY_SPIN_US")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(DEFAULT_SPIN, Duration::from_micros)
});

/// True when spinning is on.
pub(crate) fn enabled() -> bool {
    !SPIN.is_zero()
}

/// Polls `ready` for up to the spin time; true as soon as it returns true.
pub(crate) fn spin_until(mut ready: impl FnMut() -> bool) -> bool {
    let limit = *SPIN;
    if limit.is_zero() {
        return false;
    }
    let start = Instant::now();
    let mut round: u32 = 0;
    loop {
        if ready() {
            return true;
        }
        round = round.wrapping_add(1);
        if round % 64 == 0 {
            if start.elapsed() >= limit {
                return false;
            }
            // On a busy machine the thread we wait for may need this core.
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}
