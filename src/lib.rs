//! asyncify: run blocking work on a bounded pool of worker threads without
//! losing the caller's per-thread context, behind a C ABI.
//!
//! The engine is safe Rust with a Rust API; `ffi` translates it to the C ABI
//! described in `include/asyncify.h` and owns every raw-pointer conversion.
//! Modules, each depending only on the ones listed before it:
//!
//! - `local`: the per-thread cells of the hot paths, in one thread-local
//!   (each module owns its own cells there)
//! - `sys`: every platform call (worker threads, the completion queue's fd,
//!   fork handlers, futex waits) and, with `ffi`, `queue`, `handles`' slab
//!   and `task_state`'s cell, the only `unsafe` code (but for one promise
//!   about a type's layout: `Task`'s `Slotted` impl)
//! - `shard`: counters in per-thread parts, on cache lines of their own
//! - `queue`: a lock-free FIFO in reused blocks (a pool's queue)
//! - [`status`], [`handles`] (task memory: a lock-free slab of slots named by
//!   generation-checked handles), `spin`
//! - `fork`: the fork epoch's handlers; a leaf that others register locks with
//! - `gate`: a pool's slots in use, limit and shut-down bit as one atomic
//!   word, and its idle workers as another (the lock-free scheduling core)
//! - [`latency`]: lock-free latency histograms
//! - `timer`: the library's timer thread (deadlines, rate limiters' tokens)
//! - [`limiter`]: per-key caps across pools; knows its tasks only as waiters
//! - [`table`]: the override table as a value (a persistent map)
//! - [`overrides`]: what a thread sees: its frame (table, local keys, scopes) over the global layer
//! - [`cq`]: completion queues with a pollable file descriptor
//! - `task_state`: a task's state in one atomic word (phase, outcome,
//!   publication, release, waiters), model-checked with loom
//! - [`task`]: a task's state machine and the operations on handles (poll,
//!   wait, wait_any, cancel, release); it knows its pool only through the
//!   `Scheduler` trait
//! - [`pool`]: the limited pool (FIFO queue, limit, workers, keep-alive,
//!   shutdown), the `Scheduler` of its tasks
//! - `ffi`: the C ABI and nothing else
//!
//! # Locks and invariants
//!
//! Lock order, outermost first: a limiter's state, then a pool's state (an
//! admission moves a task into its pool's queue under both); a completion
//! queue's (a task is published into its queue under it). A task has no lock
//! of its own on its hot path: its state is one atomic word, which its waiters
//! sleep on (a futex); the lock of what its limiter and the timer refer to is
//! a leaf (nothing is taken under it). The global layer's writer
//! lock and `wait_any`'s generation lock are never held with another. No user code (work, `on_done`, free, release,
//! clone functions, hooks) runs under any lock, and on a worker thread every
//! one of them but clone functions is called from the thread's start routine
//! (`sys::ThreadBody`), so an interpreter that ends the thread there
//! (`pthread_exit`) unwinds no Rust frame.
//!
//! - A task's slot is freed by whoever drops its last counted reference,
//!   which can only happen once its handle is released; a lookup takes a
//!   reference only while the handle's generation matches (see [`handles`]).
//! - A task's outcome is decided once, by one atomic step on its state word,
//!   by whichever comes first: its work function returning, a cancel, or its start deadline
//!   (before it started). `poll`/`wait` see it
//!   only after `on_done` returned (publication); its result moves once.
//! - A pool's slot is taken by CAS on its gate word, only while
//!   `busy < limit`, and given back, or kept for the next task, after the
//!   task's callbacks returned, so `limit` bounds running callables
//!   (abandoned ones too, unless `release_slot_on_abandon`) and a shutdown
//!   that returns OK has no callback left to run and has joined every worker.
//! - Every task a submit accepted was counted in before the shut-down bit
//!   was set, and a shutdown drains the queue only once no submit is
//!   counted in: the drain or a worker pops it.
//! - A thread that pushes (or gives a slot back) and then reads the idle
//!   word (or the queue), and one that changes the idle word and then reads
//!   the queue, are ordered by `SeqCst` accesses or fences, so no wake-up is
//!   lost and no task stranded (see `gate`).
//! - A completion queue's fd is readable exactly while completions wait.

pub mod cq;
mod fork;
mod gate;
pub mod handles;
pub mod latency;
pub mod limiter;
mod local;
pub mod overrides;
pub mod pool;
mod queue;
mod shard;
mod spin;
pub mod status;
mod sys;
pub mod table;
pub mod task;
mod task_state;
mod timer;

pub mod ffi;
