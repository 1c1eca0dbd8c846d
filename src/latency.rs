//! Latency histograms: recorded by any thread without a lock, read as
//! percentiles within a few percent.
//!
//! Log-linear buckets: values below 32 ns have a bucket each; above, every
//! power of two is split into 32 equal buckets, so a bucket's width is at most
//! 1/32 of its lower bound and a percentile reported as the bucket's midpoint
//! is within 1/64 (1.6 %) of a value that fell in it. 1,920 buckets cover every
//! `u64`; a histogram is 15 KiB, made only for pools that record latency (one
//! per thread that records a figure, up to 24: see [`Sharded`]).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use once_cell::sync::OnceCell;

use crate::shard::{add_owned, owned, shard, Padded, OWNED, SHARDS};

const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
const BUCKETS: usize = ((64 - SUB_BITS as usize) + 1) << SUB_BITS;

/// A histogram of durations in nanoseconds.
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    sum: AtomicU64,
    max: AtomicU64,
}

/// What a histogram says: counts and percentiles in nanoseconds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Values recorded.
    pub count: u64,
    /// The median.
    pub p50: u64,
    /// The 90th percentile.
    pub p90: u64,
    /// The 99th percentile.
    pub p99: u64,
    /// The largest value (exact).
    pub max: u64,
    /// The sum of every value (exact; it wraps only past 584 years).
    pub sum: u64,
}

fn index(ns: u64) -> usize {
    if ns < SUB {
        return ns as usize;
    }
    let exp = 63 - ns.leading_zeros();
    let shift = exp - SUB_BITS;
    let sub = (ns >> shift) & (SUB - 1);
    (((exp - SUB_BITS + 1) as u64) << SUB_BITS | sub) as usize
}

/// The midpoint of bucket `i`.
fn midpoint(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let shift = (i >> SUB_BITS) - 1;
    let lower = (SUB | (i & (SUB - 1))) << shift;
    lower + ((1u64 << shift) >> 1)
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Records one duration: two atomic additions, and a third only for a
    /// new maximum (workers on other CPUs record into the same histogram, so
    /// each read-modify-write is a cache line taken from them). The count is
    /// the sum of the buckets; the sum wraps only past 584 years of time.
    pub fn record(&self, ns: u64) {
        self.buckets[index(ns)].fetch_add(1, Relaxed);
        self.sum.fetch_add(ns, Relaxed);
        if ns > self.max.load(Relaxed) {
            self.max.fetch_max(ns, Relaxed);
        }
    }

    /// [`Histogram::record`] into a histogram only the calling thread
    /// writes (see [`crate::shard::owned`]): plain loads and stores.
    fn record_owned(&self, ns: u64) {
        add_owned(&self.buckets[index(ns)], 1);
        add_owned(&self.sum, ns);
        if ns > self.max.load(Relaxed) {
            self.max.store(ns, Relaxed);
        }
    }

    /// The counts and percentiles now; exact when nothing records meanwhile.
    pub fn summary(&self) -> Summary {
        summary_of(std::iter::once(self))
    }
}

/// The summary of the values recorded into any of `parts`.
fn summary_of<'a>(parts: impl Iterator<Item = &'a Histogram>) -> Summary {
    let mut counts = vec![0u64; BUCKETS];
    let (mut sum, mut max) = (0u64, 0u64);
    for h in parts {
        for (c, b) in counts.iter_mut().zip(h.buckets.iter()) {
            *c += b.load(Relaxed);
        }
        sum = sum.wrapping_add(h.sum.load(Relaxed));
        max = max.max(h.max.load(Relaxed));
    }
    let total: u64 = counts.iter().sum();
    let at = |q: f64| -> u64 {
        if total == 0 {
            return 0;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, &c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return midpoint(i).min(max);
            }
        }
        max
    };
    Summary {
        count: total,
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        max,
        sum,
    }
}

/// A histogram that threads record into in parts (by thread), so that
/// workers on different CPUs do not write the same cache lines, and the
/// threads owning a part index with no locked instruction (see
/// [`crate::shard`]); read as one.
pub struct Sharded {
    /// A part per owned index, then the parts shared by the threads that
    /// own none; each made on its first record (a pool records from a few
    /// threads, and a part is 15 KiB), each on cache lines of its own (a
    /// part's `sum` and `max`, written per record, would otherwise share a
    /// line with the next part's).
    parts: Box<[Padded<OnceCell<Histogram>>]>,
}

impl Default for Sharded {
    fn default() -> Self {
        Sharded {
            parts: (0..OWNED + SHARDS)
                .map(|_| Padded(OnceCell::new()))
                .collect(),
        }
    }
}

impl Sharded {
    /// Records one duration into the calling thread's part.
    pub fn record(&self, ns: u64) {
        match owned() {
            Some(i) => self.parts[i]
                .get_or_init(Histogram::default)
                .record_owned(ns),
            None => self.parts[OWNED + shard()]
                .get_or_init(Histogram::default)
                .record(ns),
        }
    }

    /// The counts and percentiles of every part together.
    pub fn summary(&self) -> Summary {
        summary_of(self.parts.iter().filter_map(|p| p.0.get()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_lands_in_a_bucket_whose_midpoint_is_within_two_percent() {
        let mut v = 0u64;
        while v < u64::MAX / 2 {
            let m = midpoint(index(v));
            let err = m.abs_diff(v) as f64 / v.max(1) as f64;
            assert!(err <= 1.0 / 64.0 + 1e-12, "{v}: midpoint {m}, error {err}");
            assert!(index(v) < BUCKETS);
            v += v / 8 + 1;
        }
        assert!(index(u64::MAX) < BUCKETS);
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        let h = Histogram::default();
        for ms in 1..=100u64 {
            h.record(ms * 1_000_000);
        }
        let s = h.summary();
        assert_eq!(s.count, 100);
        assert_eq!(s.max, 100_000_000);
        assert_eq!(s.sum, 5050 * 1_000_000);
        for (got, want) in [
            (s.p50, 50_000_000u64),
            (s.p90, 90_000_000),
            (s.p99, 99_000_000),
        ] {
            let err = got.abs_diff(want) as f64 / want as f64;
            assert!(err < 0.05, "{got} vs {want}");
        }
        assert_eq!(Histogram::default().summary(), Summary::default());
    }

    #[test]
    fn a_sharded_histogram_reads_as_one_over_every_thread() {
        let h = Sharded::default();
        std::thread::scope(|s| {
            for t in 0..6u64 {
                let h = &h;
                s.spawn(move || (1..=100u64).for_each(|v| h.record(v * 1_000 + t)));
            }
        });
        let s = h.summary();
        assert_eq!(s.count, 600);
        assert!(h.parts.iter().filter(|p| p.0.get().is_some()).count() <= 6);
        assert_eq!(s.max, 100_005);
        assert_eq!(s.sum, 6 * 5050 * 1_000 + 100 * (1 + 2 + 3 + 4 + 5));
        assert!(s.p50.abs_diff(50_000) < 50_000 / 20, "{}", s.p50);
    }

    #[test]
    fn threads_beyond_the_owned_parts_share_parts_and_lose_nothing() {
        // More threads at once than there are part indexes to own: the rest
        // record into the shared parts, with atomic additions.
        let h = Sharded::default();
        let threads = crate::shard::OWNED as u64 + 2 * SHARDS as u64;
        let go = std::sync::Barrier::new(threads as usize);
        std::thread::scope(|s| {
            for _ in 0..threads {
                let (h, go) = (&h, &go);
                s.spawn(move || {
                    go.wait();
                    (1..=1_000u64).for_each(|v| h.record(v));
                    go.wait();
                });
            }
        });
        let s = h.summary();
        assert_eq!(s.count, threads * 1_000);
        assert_eq!(s.sum, threads * 500_500);
        assert_eq!(s.max, 1_000);
        assert!(h.parts[OWNED..].iter().any(|p| p.0.get().is_some()));
    }
}
