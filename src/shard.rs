//! Counters that many threads bump: one part per cache line, each thread
//! writing its own (by a per-thread index), read as their sum. A counter
//! shared by the submitting thread and every worker would move its cache line
//! between CPUs with every task.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// How many parts a sharded figure has: a pool's workers at the default
/// limit and a submitting thread mostly write parts of their own.
pub(crate) const SHARDS: usize = 8;

thread_local! {
    static SHARD: usize = {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        NEXT.fetch_add(1, Relaxed) % SHARDS
    };
}

/// The calling thread's part (0 while its thread-locals are being destroyed).
pub(crate) fn shard() -> usize {
    SHARD.try_with(|s| *s).unwrap_or(0)
}

/// A value alone on its cache line (two, for the adjacent-line prefetcher).
#[derive(Default)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// A counter in [`SHARDS`] parts; it wraps, so a part may go "below 0" while
/// the sum stays right.
#[derive(Default)]
pub(crate) struct Counter {
    parts: [Padded<AtomicU64>; SHARDS],
}

impl Counter {
    pub(crate) fn add(&self, n: u64) {
        self.parts[shard()].0.fetch_add(n, Relaxed);
    }

    pub(crate) fn sub(&self, n: u64) {
        self.parts[shard()].0.fetch_sub(n, Relaxed);
    }

    /// The sum of the parts (exact when nobody is changing them).
    pub(crate) fn sum(&self) -> u64 {
        self.parts
            .iter()
            .fold(0u64, |sum, p| sum.wrapping_add(p.0.load(Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_written_by_different_threads_add_up() {
        let c = std::sync::Arc::new(Counter::default());
        let threads: Vec<_> = (0..6)
            .map(|i| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        c.add(2);
                    }
                    // A thread may take back more than it added itself.
                    if i == 0 {
                        c.sub(500);
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(c.sum(), 6 * 2000 - 500);
    }
}
