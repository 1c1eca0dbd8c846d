//! asyncify: run blocking work on a bounded pool of worker threads without
//! losing the caller's per-thread context, behind a C ABI.
//!
//! The engine is safe Rust with a Rust API; `ffi` translates it to the C ABI
//! described in `include/asyncify.h` and owns every raw-pointer conversion.
//!
//! - [`table`]: the override table as a value (a persistent map)
//! - [`overrides`]: what a thread sees: its frame (table, local keys, scopes) over the global layer
//! - [`task`]: a task's state machine; poll, wait, cancel, release
//! - [`handles`]: the generation-checked handle registry
//! - [`pool`]: the limited pool (FIFO queue, limit, workers, keep-alive, shutdown)
//! - `spin`: brief spinning before parking
//! - [`cq`]: completion queues with a pollable file descriptor
//! - `fork`: what a forked child gets (fresh registry and default pool)
//! - [`status`]: status codes shared by the engine and the ABI
//! - `ffi`: the C ABI and nothing else

pub mod cq;
mod fork;
pub mod handles;
pub mod overrides;
pub mod pool;
mod spin;
pub mod status;
mod sys;
pub mod table;
pub mod task;

pub mod ffi;
