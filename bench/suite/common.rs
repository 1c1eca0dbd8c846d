//! What every implementation shares: the latch that observes completions, the
//! latency summary, the resident set size, the summary of repetitions, and the
//! jobs of the peers that run Rust closures.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// Counts completions down and wakes the one waiter when the last arrives.
/// Every implementation observes W1/W4 completions through one of these (or,
/// for the bare pool and libuv, through its own completion channel).
pub struct Latch {
    left: AtomicUsize,
    done: Mutex<bool>,
    cv: Condvar,
}

impl Latch {
    pub const fn new() -> Latch {
        Latch {
            left: AtomicUsize::new(0),
            done: Mutex::new(false),
            cv: Condvar::new(),
        }
    }

    /// Expect `n` completions (n > 0); call before the first submit.
    pub fn arm(&self, n: usize) {
        *self.done.lock().unwrap() = false;
        self.left.store(n, Ordering::Release);
    }

    pub fn count_down(&self) {
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.done.lock().unwrap() = true;
            self.cv.notify_all();
        }
    }

    pub fn wait(&self) {
        let mut done = self.done.lock().unwrap();
        while !*done {
            done = self.cv.wait(done).unwrap();
        }
    }
}

/// One repetition of a latency workload: every round trip, in µs.
pub struct Latencies(pub Vec<f64>);

impl Latencies {
    pub fn with_capacity(n: usize) -> Latencies {
        Latencies(Vec::with_capacity(n))
    }

    pub fn push(&mut self, d: Duration) {
        self.0.push(d.as_secs_f64() * 1e6);
    }

    /// (p50, p99) in µs.
    pub fn p50_p99(mut self) -> (f64, f64) {
        self.0.sort_by(|a, b| a.total_cmp(b));
        let n = self.0.len();
        (self.0[n / 2], self.0[(n * 99 / 100).min(n - 1)])
    }
}

/// Sleep before a W2idle submit: long enough that workers have parked.
/// The W1 job of the Rust-closure peers (bare, tokio).
pub fn noop() {}

/// The W4 job of the Rust-closure peers.
pub fn sleep_10ms() {
    std::thread::sleep(Duration::from_millis(10));
}

pub fn idle_pause(idle: Option<Duration>) {
    if let Some(d) = idle {
        std::thread::sleep(d);
    }
}

/// The resident set size of this process, in bytes.
pub fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * page.max(4096) as usize
}

/// The repetitions of one figure: its median and spread.
#[derive(Clone, Debug, Default)]
pub struct Reps(pub Vec<f64>);

impl Reps {
    pub fn median(&self) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        if n == 0 {
            f64::NAN
        } else if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    }

    pub fn min(&self) -> f64 {
        self.0.iter().copied().fold(f64::INFINITY, f64::min)
    }

    pub fn max(&self) -> f64 {
        self.0.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    }

    /// The `q` quantile (0..=1) of the repetitions, interpolated.
    pub fn quantile(&self, q: f64) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        if v.is_empty() {
            return f64::NAN;
        }
        let x = q * (v.len() - 1) as f64;
        let (i, f) = (x.floor() as usize, x.fract());
        v[i] + (v[(i + 1).min(v.len() - 1)] - v[i]) * f
    }

    /// Half the interquartile range of the repetitions, relative to the
    /// median, in percent: robust to one stray repetition on a noisy machine.
    pub fn spread_pct(&self) -> f64 {
        let m = self.median();
        if self.0.len() < 2 || m == 0.0 {
            0.0
        } else {
            (self.quantile(0.75) - self.quantile(0.25)) / 2.0 / m.abs() * 100.0
        }
    }
}

/// Format a count with an SI suffix: 1.23 M, 456 k.
pub fn si(x: f64) -> String {
    if !x.is_finite() {
        "n/a".into()
    } else if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if x >= 1e4 {
        format!("{:.0} k", x / 1e3)
    } else if x >= 1e3 {
        format!("{:.1} k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// Format a latency in µs with a sensible number of digits.
pub fn us(x: f64) -> String {
    if !x.is_finite() {
        "n/a".into()
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}
