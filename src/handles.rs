//! The generation-checked handle registry.
//!
//! A handle is a `u64` that names a slot in one of [`SHARDS`] slabs:
//!
//! ```text
//! bits 63..56  fork epoch   (a handle from before a fork() is recognised as such)
//! bits 55..28  generation   (1..2^28-1, bumped each time the slot is freed; never 0)
//! bits 27..24  shard
//! bits 23..0   slot index
//! ```
//!
//! Because the generation is never 0, no handle is 0. A released handle's slot
//! has a new generation, so the stale handle is refused even after the slot is
//! reused; a slot would have to be reused 2^28 times before an old handle could
//! name it again. Each submitting thread sticks to one shard, so submitters on
//! different threads rarely meet on a lock.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// How many independent slabs handles are spread over.
pub const SHARDS: usize = 16;
const INDEX_BITS: u32 = 24;
const SHARD_BITS: u32 = 4;
const GENERATION_BITS: u32 = 28;
const GENERATION_SHIFT: u32 = INDEX_BITS + SHARD_BITS;
const EPOCH_SHIFT: u32 = GENERATION_SHIFT + GENERATION_BITS;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;
const GENERATION_MASK: u64 = (1 << GENERATION_BITS) - 1;

/// Why a handle was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandleError {
    /// Zero, forged, released or stale.
    Invalid,
    /// Made by the parent process before a `fork()`.
    Forked,
    /// Every slot of the shard is taken.
    Full,
}

struct Slot<T> {
    generation: u32,
    value: Option<Arc<T>>,
}

struct Shard<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
}

/// A registry of `Arc<T>` values named by generation-checked handles.
pub struct Registry<T> {
    shards: Vec<Mutex<Shard<T>>>,
}

static FORK_EPOCH: AtomicU8 = AtomicU8::new(0);
static NEXT_SHARD: AtomicU32 = AtomicU32::new(0);

thread_local! {
    static HOME_SHARD: Cell<usize> =
        Cell::new(NEXT_SHARD.fetch_add(1, Ordering::Relaxed) as usize % SHARDS);
}

/// How many forks deep this process is (mod 256). Handles carry it, and the
/// task registry and the default pool are chosen by it, so a child starts
/// with fresh ones and never touches a lock a thread of its parent held.
pub fn fork_epoch() -> u8 {
    FORK_EPOCH.load(Ordering::Relaxed)
}

/// Marks every handle made so far as belonging to the parent of a fork.
pub fn bump_fork_epoch() {
    FORK_EPOCH.fetch_add(1, Ordering::Relaxed);
}

impl<T> Default for Registry<T> {
    fn default() -> Self {
        Registry {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        slots: Vec::new(),
                        free: Vec::new(),
                    })
                })
                .collect(),
        }
    }
}

struct Parts {
    epoch: u8,
    generation: u32,
    shard: usize,
    index: usize,
}

fn decode(handle: u64) -> Parts {
    Parts {
        epoch: (handle >> EPOCH_SHIFT) as u8,
        generation: ((handle >> GENERATION_SHIFT) & GENERATION_MASK) as u32,
        shard: ((handle >> INDEX_BITS) as usize) % SHARDS,
        index: (handle & INDEX_MASK) as usize,
    }
}

fn encode(epoch: u8, generation: u32, shard: usize, index: usize) -> u64 {
    (u64::from(epoch) << EPOCH_SHIFT)
        | (u64::from(generation) << GENERATION_SHIFT)
        | ((shard as u64) << INDEX_BITS)
        | index as u64
}

fn lock<S>(m: &Mutex<S>) -> MutexGuard<'_, S> {
    // No user code runs under these locks, so a poisoned one still holds
    // consistent data (the panic came from an allocation failure at most).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<T> Registry<T> {
    /// Stores `value` and returns its new handle.
    pub fn insert(&self, value: Arc<T>) -> Result<u64, HandleError> {
        let shard_no = HOME_SHARD.with(Cell::get);
        let mut shard = lock(&self.shards[shard_no]);
        let index = match shard.free.pop() {
            Some(i) => i as usize,
            None => {
                let i = shard.slots.len();
                if i as u64 > INDEX_MASK {
                    return Err(HandleError::Full);
                }
                shard.slots.push(Slot {
                    generation: 1,
                    value: None,
                });
                i
            }
        };
        let slot = &mut shard.slots[index];
        slot.value = Some(value);
        let epoch = FORK_EPOCH.load(Ordering::Relaxed);
        Ok(encode(epoch, slot.generation, shard_no, index))
    }

    fn check(&self, handle: u64) -> Result<Parts, HandleError> {
        let parts = decode(handle);
        if parts.generation == 0 {
            return Err(HandleError::Invalid);
        }
        let epoch = FORK_EPOCH.load(Ordering::Relaxed);
        if parts.epoch != epoch {
            // Only an epoch this process has left behind by forking is a
            // parent's handle; any other is forged.
            return Err(if parts.epoch < epoch {
                HandleError::Forked
            } else {
                HandleError::Invalid
            });
        }
        Ok(parts)
    }

    /// The value named by `handle`.
    pub fn get(&self, handle: u64) -> Result<Arc<T>, HandleError> {
        let p = self.check(handle)?;
        let shard = lock(&self.shards[p.shard]);
        match shard.slots.get(p.index) {
            Some(Slot {
                generation,
                value: Some(v),
            }) if *generation == p.generation => Ok(v.clone()),
            _ => Err(HandleError::Invalid),
        }
    }

    /// Frees `handle` and returns its value; the handle is invalid afterwards.
    pub fn remove(&self, handle: u64) -> Result<Arc<T>, HandleError> {
        let p = self.check(handle)?;
        let mut shard = lock(&self.shards[p.shard]);
        let slot = match shard.slots.get_mut(p.index) {
            Some(s) if s.generation == p.generation && s.value.is_some() => s,
            _ => return Err(HandleError::Invalid),
        };
        let value = slot.value.take().expect("checked above");
        slot.generation = if u64::from(slot.generation) == GENERATION_MASK {
            1
        } else {
            slot.generation + 1
        };
        shard.free.push(p.index as u32);
        Ok(value)
    }

    /// Number of live handles (for tests and stats; takes every shard lock).
    pub fn live(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = lock(s);
                s.slots.len() - s.free.len()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_nonzero_and_generation_checked() {
        let r: Registry<u32> = Registry::default();
        let h = r.insert(Arc::new(7)).unwrap();
        assert_ne!(h, 0);
        assert_eq!(*r.get(h).unwrap(), 7);
        assert_eq!(*r.remove(h).unwrap(), 7);
        assert_eq!(r.get(h).unwrap_err(), HandleError::Invalid);
        assert_eq!(r.remove(h).unwrap_err(), HandleError::Invalid);
        // The slot is reused with a new generation: the old handle stays dead.
        let h2 = r.insert(Arc::new(8)).unwrap();
        assert_ne!(h, h2);
        assert_eq!(h & INDEX_MASK, h2 & INDEX_MASK);
        assert_eq!(r.get(h).unwrap_err(), HandleError::Invalid);
        assert_eq!(*r.get(h2).unwrap(), 8);
    }

    #[test]
    fn zero_and_forged_handles_are_refused() {
        let r: Registry<u32> = Registry::default();
        assert_eq!(r.get(0).unwrap_err(), HandleError::Invalid);
        assert_eq!(r.get(0xdead_beef).unwrap_err(), HandleError::Invalid);
        assert_eq!(r.get(u64::MAX).unwrap_err(), HandleError::Invalid);
        assert_eq!(
            r.get(0xdead_beef_1234_5678).unwrap_err(),
            HandleError::Invalid
        );
        let h = r.insert(Arc::new(1)).unwrap();
        assert_eq!(r.get(h ^ (1 << 30)).unwrap_err(), HandleError::Invalid);
        assert_eq!(r.get(h + 1).unwrap_err(), HandleError::Invalid);
        assert_eq!(r.live(), 1);
    }

    #[test]
    fn a_released_handle_stays_invalid_after_many_reuses() {
        let r: Registry<u32> = Registry::default();
        let old = r.insert(Arc::new(0)).unwrap();
        r.remove(old).unwrap();
        for i in 0..10_000 {
            let h = r.insert(Arc::new(i)).unwrap();
            assert_ne!(h, old);
            r.remove(h).unwrap();
        }
        assert_eq!(r.get(old).unwrap_err(), HandleError::Invalid);
        assert_eq!(r.live(), 0);
    }
}
