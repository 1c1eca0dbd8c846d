//! Counters that many threads bump: one part per cache line, each thread
//! writing its own, read as their sum. A counter shared by the submitting
//! thread and every worker would move its cache line between CPUs with every
//! task.
//!
//! A thread first claims one of [`OWNED`] part indexes for itself alone
//! (given back when it ends): its part of every counter is then written by
//! no other thread, so a bump is a plain load and store, not a locked
//! read-modify-write (tens of cycles each, several per task). Threads beyond
//! those share [`SHARDS`] further parts by a per-thread index, with atomic
//! additions. A claim and its release order the part's writes from one owner
//! to the next (acquire and release on the claim bits).

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::*};

/// How many shared parts a sharded figure has, for the threads that own no
/// part (and the submitting counters of the gate).
pub(crate) const SHARDS: usize = 8;

/// How many part indexes threads may own at once.
pub(crate) const OWNED: usize = 16;

thread_local! {
    /// This thread's shared part, `SHARDS` until its first use.
    static SHARD: Cell<usize> = const { Cell::new(SHARDS) };
    /// Claims and, when the thread ends, gives back its part index.
    static OWNER: Owner = Owner::claim();
    /// The part index this thread owns, read on every bump: a plain
    /// thread-local with no destructor, so reading it costs no check of its
    /// state. [`UNCLAIMED`] until the first bump, [`NONE`] with no index
    /// left to claim or once `OWNER` gave it back.
    static OWNED_INDEX: Cell<usize> = const { Cell::new(UNCLAIMED) };
}

const UNCLAIMED: usize = OWNED;
const NONE: usize = OWNED + 1;

/// The claimed part indexes, one bit each.
static CLAIMED: AtomicU32 = AtomicU32::new(0);

/// The claim of this thread's part index: made when the thread-local is
/// first reached, given back when the thread ends. The index itself is
/// `OWNED_INDEX`.
struct Owner;

impl Owner {
    /// Claims a free index into `OWNED_INDEX` ([`NONE`] with none left).
    fn claim() -> Owner {
        let mut claimed = CLAIMED.load(Relaxed);
        loop {
            let free = !claimed & ((1u32 << OWNED) - 1);
            if free == 0 {
                OWNED_INDEX.set(NONE);
                return Owner;
            }
            let bit = free.trailing_zeros();
            // Acquire: the previous owner's writes to the part come first.
            match CLAIMED.compare_exchange_weak(claimed, claimed | 1 << bit, Acquire, Relaxed) {
                Ok(_) => {
                    OWNED_INDEX.set(bit as usize);
                    return Owner;
                }
                Err(now) => claimed = now,
            }
        }
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        // From here on this thread's bumps (from later thread-local
        // destructors) go to the shared parts.
        let index = OWNED_INDEX.replace(NONE);
        if index < OWNED {
            // Release: this owner's writes come before the next owner's.
            CLAIMED.fetch_and(!(1u32 << index), Release);
        }
    }
}

/// The calling thread's shared part: threads take them in turn.
#[inline(always)]
pub(crate) fn shard() -> usize {
    let part = SHARD.get();
    if part < SHARDS {
        part
    } else {
        first_shard()
    }
}

#[inline(never)]
fn first_shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let part = NEXT.fetch_add(1, Relaxed) % SHARDS;
    SHARD.set(part);
    part
}

/// The part index the calling thread owns alone, if any.
#[inline(always)]
pub(crate) fn owned() -> Option<usize> {
    let index = OWNED_INDEX.get();
    if index < OWNED {
        Some(index)
    } else {
        claim_once(index)
    }
}

/// [`owned`] before this thread's first claim (which it makes now, unless
/// its thread-locals are being destroyed), or without an index.
#[inline(never)]
fn claim_once(index: usize) -> Option<usize> {
    if index != UNCLAIMED {
        return None;
    }
    if OWNER.try_with(|_| ()).is_err() {
        // Its thread-locals are being destroyed: no claim any more.
        OWNED_INDEX.set(NONE);
    }
    let index = OWNED_INDEX.get();
    (index < OWNED).then_some(index)
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

/// Adds `n` to a part only its owner writes: a plain load and store.
#[inline]
pub(crate) fn add_owned(part: &AtomicU64, n: u64) {
    part.store(part.load(Relaxed).wrapping_add(n), Relaxed);
}

/// A counter in parts (see the module docs); it wraps, so a part may go
/// "below 0" while the sum stays right.
pub(crate) struct Counter {
    owned: [Padded<AtomicU64>; OWNED],
    shared: [Padded<AtomicU64>; SHARDS],
}

impl Default for Counter {
    fn default() -> Self {
        Counter::new()
    }
}

impl Counter {
    /// A counter at 0 (usable in a `static`).
    pub(crate) const fn new() -> Counter {
        Counter {
            owned: [const { Padded(AtomicU64::new(0)) }; OWNED],
            shared: [const { Padded(AtomicU64::new(0)) }; SHARDS],
        }
    }

    #[inline]
    pub(crate) fn add(&self, n: u64) {
        match owned() {
            Some(i) => add_owned(&self.owned[i].0, n),
            None => {
                self.shared[shard()].0.fetch_add(n, Relaxed);
            }
        }
    }

    #[inline]
    pub(crate) fn sub(&self, n: u64) {
        self.add(n.wrapping_neg());
    }

    /// The sum of the parts (exact when nobody is changing them).
    pub(crate) fn sum(&self) -> u64 {
        self.owned
            .iter()
            .chain(&self.shared)
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

    #[test]
    fn threads_beyond_the_owned_parts_share_parts_and_nothing_is_lost() {
        // More threads at once than parts can be owned, each holding its
        // part while the others count; then more, reusing released parts.
        let c = std::sync::Arc::new(Counter::default());
        for _round in 0..2 {
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(OWNED + 8));
            let threads: Vec<_> = (0..OWNED + 8)
                .map(|_| {
                    let (c, barrier) = (c.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        c.add(1);
                        barrier.wait();
                        for _ in 0..10_000 {
                            c.add(1);
                        }
                        owned()
                    })
                })
                .collect();
            let owners: Vec<Option<usize>> =
                threads.into_iter().map(|t| t.join().unwrap()).collect();
            let mut indexes: Vec<usize> = owners.iter().flatten().copied().collect();
            indexes.sort_unstable();
            indexes.dedup();
            assert_eq!(
                indexes.len(),
                owners.iter().flatten().count(),
                "no two threads own one part"
            );
            assert!(owners.iter().any(Option::is_none), "some had to share");
        }
        assert_eq!(c.sum(), 2 * (OWNED as u64 + 8) * 10_001);
    }
}
