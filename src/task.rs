//! A task's state machine and everything that observes it: poll, wait,
//! cancel, release.
//!
//! ```text
//!            admit              try_start                 work fn returns
//!  Waiting ─────────▶ Queued ──────────────▶ Running ──────────────────────▶ Returned
//!  (for its limiter)    │                      │                (OK / FAILED decided here)
//!     │                 │ cancel, deadline     │ cancel
//!     ▼                 ▼                      ▼
//!  CANCELLED or EXPIRED decided,             CANCELLED decided, the task is *abandoned*:
//!  never runs                                fn runs to its end, then result and arg are freed
//! ```
//!
//! A task without a limiter starts out `Queued`. The outcome is decided
//! exactly once, by one atomic step on the task's state word (see
//! `task_state`), by whichever comes first: the work function returning, a
//! cancel, or (before it starts) its start deadline. Whoever decides it
//! then calls `on_done` (with no lock held) and *publishes*: only then do
//! poll, wait and completion queues see the terminal status, so a waiter may
//! free `on_done_data` once it sees one.
//!
//! The result moves exactly once: to `on_done` if set, otherwise to the first
//! poll or wait that asks for it. A result that can no longer reach anyone
//! (handle released, detached, abandoned task) goes to `free_result`.

use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once};
use std::time::{Duration, Instant};

use once_cell::sync::Lazy;

use crate::cq::Completion;
use crate::cq::CompletionQueue;
use crate::handles::{HandleError, LocalFree, Ref, Slab, Slotted};
use crate::limiter::{Limiter, Waiter};
use crate::local;
use crate::overrides::SavedFrame;
use crate::spin::Shared;
use crate::status::*;
use crate::sys::{self, ForeignCall};
use crate::table::Table;
use crate::task_state::{Phase, StartWith, StartedWith, TaskState};
use crate::timer::{timer, Due};

/// The work function: `0` is success, anything else a failure code. It may
/// store a result in `*out_result`.
pub type WorkFn = extern "C" fn(arg: *mut c_void, out_result: *mut *mut c_void) -> i32;
/// Called once per task with its terminal status (`asyncify_done_fn`).
pub type DoneFn = extern "C" fn(
    user_data: *mut c_void,
    handle: u64,
    status: asyncify_status,
    result: *mut c_void,
    code: i32,
);
/// Frees an argument or result (`asyncify_free_fn`).
pub type FreeFn = extern "C" fn(ptr: *mut c_void);

/// Every task's memory, named by its handle. Handles outlive their pool.
#[cfg(not(all(test, loom)))]
static TASKS: Slab<Task> = Slab::new();
#[cfg(all(test, loom))]
static TASKS: Lazy<Slab<Task>> = Lazy::new(Slab::default);

/// The slab of every task of this process.
pub(crate) fn tasks() -> &'static Slab<Task> {
    &TASKS
}

/// The instant submit times and deadlines are counted from (one word per
/// task, not two).
static BASE: Lazy<Instant> = Lazy::new(Instant::now);

/// Nanoseconds from [`BASE`] to `at` (at least 1: 0 means none).
fn since_base(at: Instant) -> u64 {
    let ns = at.saturating_duration_since(*BASE).as_nanos();
    u64::try_from(ns).unwrap_or(u64::MAX).max(1)
}

fn from_base(ns: u64) -> Instant {
    *BASE + Duration::from_nanos(ns)
}

/// A counted reference to a task (its slot in [`tasks`]).
pub(crate) type TaskRef = Ref<Task>;

/// What a task needs of the pool that schedules it: the task state machine
/// knows its pool only through this, so the pool depends on tasks and not
/// the other way round.
pub(crate) trait Scheduler: Send + Sync {
    /// The work function returned: 0 (`ok`) or a failure code.
    fn count_returned(&self, ok: bool);
    /// The task was cancelled while running.
    fn count_abandoned(&self);
    /// The task (at address `task`) was cancelled or expired (`expired`)
    /// before it started: it leaves the tasks waiting for their limiter
    /// (`was_waiting`) or the queue's count. An expiry is reported next, and
    /// the pool counts it as in progress until [`Scheduler::expiry_reported`].
    fn left_before_start(&self, task: usize, was_waiting: bool, expired: bool);
    /// The expiry counted by `left_before_start` has been reported.
    fn expiry_reported(&self);
    /// Its limiter admits `task`: unless it left already, it moves into the
    /// pool's queue (under the pool's lock). True when it did.
    fn admit(&self, task: TaskRef) -> bool;
    /// After admissions, with no lock held: starts workers for what may start.
    fn kick(&self);
    /// For a cancel: when an abandoned task gives its slot back at once, the
    /// pool's lock, held while the cancel decides the task's outcome, so
    /// that giving the slot back and marking the task are one step.
    fn lock_for_abandon(&self) -> Option<Box<dyn AbandonSlot + '_>>;
    /// When the calling thread is a worker of this pool and `task` is still
    /// queued, runs it here, in this thread's slot. True when
    /// it ran.
    fn run_inline_if_stuck(&self, task: &TaskRef) -> bool;
}

/// The pool's lock during a cancel (see [`Scheduler::lock_for_abandon`]).
pub(crate) trait AbandonSlot {
    /// The abandoned callable's thread leaves the limit until it returns.
    fn give_back(&mut self);
}

/// What to run and who owns what. Pointers are kept as addresses: the engine
/// never dereferences them, it only passes them back to the caller's functions.
pub struct TaskSpec<'a> {
    work: WorkFn,
    arg: usize,
    on_done: Option<DoneFn>,
    on_done_data: usize,
    free_arg: Option<FreeFn>,
    free_result: Option<FreeFn>,
    detached: bool,
    cq: Option<Arc<CompletionQueue>>,
    /// Borrowed: a slot that kept this limiter from its last task takes no
    /// count of it.
    limiter: Option<&'a Arc<Limiter>>,
    /// 0: no start deadline (milliseconds keep the struct small: it is
    /// copied on every submit).
    start_within_ms: u32,
}

impl<'a> TaskSpec<'a> {
    /// A task that runs `work(arg)`; the caller keeps owning `arg`.
    pub fn new(work: WorkFn, arg: *mut c_void) -> Self {
        TaskSpec {
            work,
            arg: arg as usize,
            on_done: None,
            on_done_data: 0,
            free_arg: None,
            free_result: None,
            detached: false,
            cq: None,
            limiter: None,
            start_within_ms: 0,
        }
    }

    /// Its limiter, if any.
    pub(crate) fn limiter_ref(&self) -> Option<&'a Arc<Limiter>> {
        self.limiter
    }

    /// The task waits for `limiter` to admit it before it enters its pool's
    /// queue, and holds a place of it until its callable returns.
    pub fn limiter(mut self, limiter: Option<&'a Arc<Limiter>>) -> Self {
        self.limiter = limiter;
        self
    }

    /// A task that has not started this many milliseconds after its submit
    /// never runs: it completes with `ASYNCIFY_EXPIRED`. 0: no deadline.
    pub fn start_within_ms(mut self, ms: u32) -> Self {
        self.start_within_ms = ms;
        self
    }

    /// Without `on_done`, the completion (and the result) goes to `cq`.
    pub fn completion_queue(mut self, cq: Option<Arc<CompletionQueue>>) -> Self {
        self.cq = cq;
        self
    }

    /// Calls `on_done(data, …)` exactly once with the terminal status.
    pub fn on_done(mut self, on_done: Option<DoneFn>, data: *mut c_void) -> Self {
        self.on_done = on_done;
        self.on_done_data = data as usize;
        self
    }

    /// `free_arg` gets `arg` when the task never runs or was abandoned;
    /// `free_result` gets a result that no one can receive.
    pub fn free_fns(mut self, free_arg: Option<FreeFn>, free_result: Option<FreeFn>) -> Self {
        self.free_arg = free_arg;
        self.free_result = free_result;
        self
    }

    /// The handle releases itself once the task is terminal.
    pub fn detached(mut self, detached: bool) -> Self {
        self.detached = detached;
        self
    }
}

/// What a task with none of the rarer options needs (see
/// `Pool::submit_plain`): its work function and argument, `on_done` and
/// its data, and whether it is detached.
#[derive(Clone, Copy)]
pub struct PlainCalls {
    /// The work function.
    pub work: WorkFn,
    /// Its argument; the caller keeps owning it.
    pub arg: *mut c_void,
    /// Called exactly once with the terminal status, if set.
    pub on_done: Option<DoneFn>,
    /// `on_done`'s first argument.
    pub on_done_data: *mut c_void,
    /// The handle releases itself once the task is terminal.
    pub detached: bool,
}

/// A terminal status as the C ABI reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// `ASYNCIFY_OK`, `ASYNCIFY_FAILED`, `ASYNCIFY_CANCELLED` or `ASYNCIFY_EXPIRED`.
    pub status: asyncify_status,
    /// The work function's return value (0 when cancelled).
    pub code: i32,
}

const CANCELLED: Outcome = Outcome {
    status: ASYNCIFY_CANCELLED,
    code: 0,
};

const EXPIRED: Outcome = Outcome {
    status: ASYNCIFY_EXPIRED,
    code: 0,
};

/// What a poll or wait observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observed {
    /// `PENDING`, `TIMEOUT`, or the terminal status.
    pub status: asyncify_status,
    /// The work function's return value (0 unless terminal and not cancelled).
    pub code: i32,
    /// The result, when this call received it; NULL otherwise.
    pub result: *mut c_void,
}

/// A task with a limiter or a start deadline, as its limiter and the timer
/// see it. They hold it weakly; the task holds the one strong reference in
/// its rare fields until it starts or its outcome is decided (then it drops it, so
/// their entries die as the task moves on, and the reference to its slot
/// that this holds goes).
pub(crate) struct Scheduled(TaskRef);

/// What every task calls: its work function and `on_done`.
struct Calls {
    /// None only in a slot never used.
    work: Option<WorkFn>,
    arg: usize,
    on_done: Option<DoneFn>,
    on_done_data: usize,
}

/// What few tasks use, in a box of its own: a slot takes one for its first
/// task that needs it and keeps it while free, so that a task using none of
/// these costs no memory for them, and one using them no allocation once
/// its slot has the box. Written only while the slot is free or being
/// filled, but for `scheduled`.
#[derive(Default)]
struct Rare {
    free_arg: Option<FreeFn>,
    free_result: Option<FreeFn>,
    cq: Option<Arc<CompletionQueue>>,
    /// When it expires unless it has started (see [`since_base`]); 0: never.
    deadline: u64,
    /// What its limiter and the timer refer to (weakly), while it may still
    /// be admitted or expire: until it starts or its outcome is decided.
    /// Its lock is a leaf (taken under the pool's, by a cancel).
    scheduled: Mutex<Option<Arc<Scheduled>>>,
}

impl Rare {
    /// True when `spec` uses any of these: a task with a limiter that did
    /// not admit it at once (`admitted`) may be scheduled.
    fn wanted(spec: &TaskSpec, admitted: bool) -> bool {
        spec.free_arg.is_some()
            || spec.free_result.is_some()
            || spec.cq.is_some()
            || (spec.limiter.is_some() && !admitted)
            || spec.start_within_ms > 0
    }
}

/// One submitted callable, in its slot of [`tasks`]. Shared by its handle,
/// the pool's queue and whichever thread runs it.
pub struct Task {
    calls: Calls,
    detached: bool,
    /// This task uses `rare` (else its fields are a former task's).
    uses_rare: bool,
    /// `limiter` is this task's limiter (else it is kept, like `pool`).
    has_limiter: bool,
    /// None until the slot's first task that uses one of its fields; kept
    /// while the slot is free.
    rare: Option<Box<Rare>>,
    /// This task's limiter when `has_limiter`; else the limiter of the
    /// slot's last task that had one, kept like `pool` (see
    /// [`Task::insert`]).
    limiter: Option<Arc<Limiter>>,
    /// None until the slot's first task; kept while it is free (see
    /// [`Task::insert`]).
    pool: Option<Arc<dyn Scheduler>>,
    /// When it was submitted (`sys::now_ns`), where its pool records
    /// latency; 0 elsewhere.
    submitted: u64,
    handle: u64,
    /// Its phase, outcome, result and waiters (see [`TaskState`]), with
    /// the table it starts with.
    state: TaskState<Table>,
}

// This thread's `local::Cells::current_task` is the slot index + 1 of the
// task whose callable it is running (0: none); the runner holds a reference
// to the task meanwhile, so the index names that task (see
// `Slab::get_live`). Its `local::Cells::reporting` is the address of the
// task whose `on_done` it is running (0: none), only compared, never
// dereferenced.

/// True when the calling thread runs `task`'s callable or its `on_done`:
/// a wait for it from here could never end.
fn waits_for_itself(task: &TaskRef) -> bool {
    let address = Ref::addr(task);
    local::with(|c| c.reporting.get() == address || c.current_task.get() == Ref::index(task) + 1)
}

/// What a publish leaves to do.
struct AfterPublish {
    /// A result no one can receive any more (0: none).
    orphan: usize,
    /// The task is detached: its handle releases itself now.
    release_self: bool,
}

/// Frees `addr` with `f` (never NULL), as a foreign call (on a worker, from
/// its start routine).
fn free_with(f: Option<FreeFn>, addr: usize) {
    if let (Some(f), false) = (f, addr == 0) {
        sys::call_foreign(ForeignCall::Unary(f, addr as *mut c_void));
    }
}

/// What a worker reports for a task whose work function returned (see
/// [`Task::end`]): the outcome, and the result for `on_done` (0 when it stays
/// on the task).
#[derive(Clone, Copy)]
pub(crate) struct Report(pub(crate) Outcome, usize);

/// Marks the calling thread as running `task`'s `on_done` until dropped, so
/// that a wait for that task from inside it fails instead of hanging.
pub(crate) struct Reporting {
    outer: usize,
}

impl Reporting {
    pub(crate) fn new(task: &TaskRef) -> Reporting {
        Reporting {
            outer: Reporting::mark(task),
        }
    }

    /// Marks the thread as [`Reporting::new`] does, for a caller that keeps
    /// what it returns (the mark before) and gives it to
    /// [`Reporting::unmark`] itself: a worker, between two steps.
    #[inline(always)]
    pub(crate) fn mark(task: &TaskRef) -> usize {
        local::with(|c| c.reporting.replace(Ref::addr(task)))
    }

    /// Puts back the mark `outer` that [`Reporting::mark`] returned.
    #[inline(always)]
    pub(crate) fn unmark(outer: usize) {
        local::with(|c| c.reporting.set(outer));
    }
}

impl Drop for Reporting {
    fn drop(&mut self) {
        Reporting::unmark(self.outer);
    }
}

/// What a returned work function led to (see [`Task::decide`]).
#[derive(Clone, Copy)]
pub(crate) enum Decided {
    /// Cancelled while running: the result (an address, 0 for none) goes to
    /// `free_result`.
    Abandoned(usize),
    /// The outcome, and the result for `on_done` (0 when it stays on the task).
    Returned(Outcome, usize),
}

impl Decided {
    /// The status the task gets.
    pub(crate) fn status(&self) -> asyncify_status {
        match self {
            Decided::Abandoned(_) => ASYNCIFY_CANCELLED,
            Decided::Returned(outcome, _) => outcome.status,
        }
    }
}

/// A started task's callable is running on this thread (an inline run):
/// dropping it ends the run, as [`RunPlace::end_run`] does for a worker.
pub(crate) struct Running(RunPlace);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.end_run();
    }
}

/// A task's callable running on this thread, kept in place by its runner
/// (a worker keeps one for its task from start to end, so that nothing is
/// moved per task; [`Running`] wraps one for an inline run): the thread's
/// previous current task (the runner holds the task meanwhile: no
/// reference is taken for this), and what installing its table saved.
#[derive(Default)]
pub(crate) struct RunPlace {
    previous: u32,
    frame: SavedFrame,
}

impl RunPlace {
    /// The callable returned: the thread's previous task is current again,
    /// then its table is restored.
    #[inline(always)]
    pub(crate) fn end_run(&mut self) {
        local::with(|c| c.current_task.set(self.previous));
        self.frame.restore();
    }
}

/// A task's table moves to the thread that runs it, unless it is empty.
impl StartWith for Table {
    fn holds_nothing(&self) -> bool {
        self.is_empty()
    }
}

/// A slot never used: all zeroes (see the `Slotted` impl).
impl Default for Task {
    fn default() -> Self {
        Task {
            calls: Calls {
                work: None,
                arg: 0,
                on_done: None,
                on_done_data: 0,
            },
            detached: false,
            uses_rare: false,
            has_limiter: false,
            rare: None,
            limiter: None,
            pool: None,
            submitted: 0,
            handle: 0,
            state: TaskState::new(Phase::Waiting, Table::new()),
        }
    }
}

thread_local! {
    /// The free task slots this thread took to submit with (see
    /// [`LocalFree`]).
    static FREE_SLOTS: LocalFree<Task> = const { LocalFree::new() };
}

// SAFETY: all zeroes is `Task::default()`: no work function (`None`),
// zero addresses, flags and times, no boxed, counted or kept values
// (`None`), and a state word of 0 (waiting, nothing decided) with zero code
// and result and an empty table (no nodes, length 0). No lock or condition
// variable lives in a task. (The engine's one unsafe line outside the
// modules that allow it: a promise about this type's layout.)
#[allow(unsafe_code)]
unsafe impl Slotted for Task {
    fn slab() -> &'static Slab<Task> {
        &TASKS
    }

    fn local_free() -> Option<&'static std::thread::LocalKey<LocalFree<Task>>> {
        Some(&FREE_SLOTS)
    }

    /// The slot is free: what the task held goes (its queue, its table),
    /// but for its pool and limiter, which the slot keeps (see
    /// [`Task::insert`]).
    #[inline(always)]
    fn clear(&mut self) {
        if let Some(rare) = &mut self.rare {
            rare.cq = None;
        }
        self.state.clear();
    }
}

impl Task {
    /// Takes a free slot for a new task and returns its handle.
    ///
    /// A slot keeps its last task's pool (and limiter) while it is free: a
    /// new task of the same pool (limiter) takes no count of its `Arc` (a
    /// count that the submitting thread would raise and a worker lower, per
    /// task, on one cache line). So a pool's shared part, or a freed
    /// limiter, lives until its last slot holds another pool's (limiter's)
    /// task, or the process ends; it owns no thread and no task by then.
    ///
    /// `admitted`: the spec's limiter admitted the task already (it starts
    /// out queued, holding its place); `timed`: the pool records latency
    /// or has task hooks, so the submit's time is kept (see
    /// [`Task::stamp_submitted`]).
    pub(crate) fn insert<S: Scheduler + 'static>(
        spec: TaskSpec,
        snapshot: Table,
        pool: &Arc<S>,
        timed: bool,
        admitted: bool,
    ) -> Result<(TaskRef, u64), Error> {
        let uses_rare = Rare::wanted(&spec, admitted);
        let TaskSpec {
            work,
            arg,
            on_done,
            on_done_data,
            free_arg,
            free_result,
            detached,
            cq,
            limiter,
            start_within_ms,
        } = spec;
        let deadline = match start_within_ms {
            0 => 0,
            ms => since_base(Instant::now() + Duration::from_millis(u64::from(ms))),
        };
        let phase = match (limiter, admitted) {
            (Some(_), false) => Phase::Waiting,
            _ => Phase::Queued,
        };
        let mut vacant = tasks().vacant().map_err(from_handle_error)?;
        let handle = vacant.handle();
        let task = vacant.value();
        task.fill(
            Calls {
                work: Some(work),
                arg,
                on_done,
                on_done_data,
            },
            detached,
            pool,
            handle,
        );
        task.uses_rare = uses_rare;
        if uses_rare {
            let rare = task.rare.get_or_insert_with(Box::default);
            rare.free_arg = free_arg;
            rare.free_result = free_result;
            rare.cq = cq;
            rare.deadline = deadline;
        }
        task.set_limiter(limiter);
        // The last task left nothing to start with (see `clear`).
        let holds_place = limiter.is_some() && admitted;
        drop(task.state.reset(phase, holds_place, snapshot));
        task.stamp_submitted(timed);
        Ok(vacant.publish())
    }

    /// [`Task::insert`] of a task that uses none of the rarer options, but
    /// perhaps a `limiter` that admitted it already.
    #[inline(always)]
    pub(crate) fn insert_plain<S: Scheduler + 'static>(
        calls: PlainCalls,
        limiter: Option<&Arc<Limiter>>,
        snapshot: Table,
        pool: &Arc<S>,
        timed: bool,
    ) -> Result<(TaskRef, u64), Error> {
        let mut vacant = tasks().vacant().map_err(from_handle_error)?;
        let handle = vacant.handle();
        let task = vacant.value();
        task.fill(
            Calls {
                work: Some(calls.work),
                arg: calls.arg as usize,
                on_done: calls.on_done,
                on_done_data: calls.on_done_data as usize,
            },
            calls.detached,
            pool,
            handle,
        );
        task.uses_rare = false;
        task.set_limiter(limiter);
        // The last task left nothing to start with (see `clear`).
        drop(task.state.reset(Phase::Queued, limiter.is_some(), snapshot));
        task.stamp_submitted(timed);
        Ok(vacant.publish())
    }

    /// Sets the task's limiter, if any; its `Arc` only when the slot's last
    /// task had another one (see [`Task::insert`]).
    #[inline(always)]
    fn set_limiter(&mut self, limiter: Option<&Arc<Limiter>>) {
        self.has_limiter = limiter.is_some();
        if let Some(new) = limiter {
            if !self
                .limiter
                .as_ref()
                .is_some_and(|kept| Arc::ptr_eq(kept, new))
            {
                self.limiter = Some(new.clone());
            }
        }
    }

    /// Writes what every task has into a free slot; its pool `Arc` only
    /// when the slot's last task had another pool (see [`Task::insert`]).
    #[inline(always)]
    fn fill<S: Scheduler + 'static>(
        &mut self,
        calls: Calls,
        detached: bool,
        pool: &Arc<S>,
        handle: u64,
    ) {
        self.calls = calls;
        self.detached = detached;
        let same_pool = self
            .pool
            .as_ref()
            .is_some_and(|p| std::ptr::addr_eq(Arc::as_ptr(p), Arc::as_ptr(pool)));
        if !same_pool {
            self.pool = Some(pool.clone() as Arc<dyn Scheduler>);
        }
        self.handle = handle;
    }

    fn pool(&self) -> &dyn Scheduler {
        self.pool.as_deref().expect("a task in use has its pool")
    }

    /// Keeps the submit's time where `timed` (else 0). Read as the last
    /// step of filling the slot, right before the submit's locked
    /// instructions (which queue the task): the read waits for the slot's
    /// writes, as those instructions would anyway (see [`sys::now_ns`]).
    #[inline(always)]
    fn stamp_submitted(&mut self, timed: bool) {
        self.submitted = if timed { sys::now_ns() } else { 0 };
    }

    /// When it was submitted, where its pool records latency.
    pub(crate) fn submitted(&self) -> Option<u64> {
        (self.submitted != 0).then_some(self.submitted)
    }

    /// Its limiter, if any.
    pub(crate) fn limiter(&self) -> Option<&Arc<Limiter>> {
        self.limiter.as_ref().filter(|_| self.has_limiter)
    }

    /// Its rarely used fields, when it uses them.
    fn rare(&self) -> Option<&Rare> {
        self.rare.as_deref().filter(|_| self.uses_rare)
    }

    /// When it expires unless it has started (see [`since_base`]); 0: never.
    fn deadline(&self) -> u64 {
        self.rare().map_or(0, |r| r.deadline)
    }

    /// True when its start deadline has passed at `now`.
    pub(crate) fn overdue(&self, now: Instant) -> bool {
        let deadline = self.deadline();
        deadline != 0 && now >= from_base(deadline)
    }

    /// True when it has a start deadline.
    pub(crate) fn has_deadline(&self) -> bool {
        self.deadline() != 0
    }

    fn free_arg(&self) -> Option<FreeFn> {
        self.rare().and_then(|r| r.free_arg)
    }

    fn free_result(&self) -> Option<FreeFn> {
        self.rare().and_then(|r| r.free_result)
    }

    /// What its limiter and the timer refer to, taken (see [`Rare`]).
    fn take_scheduled(&self) -> Option<Arc<Scheduled>> {
        let rare = self.rare()?;
        let mut scheduled = rare.scheduled.lock().unwrap_or_else(|e| e.into_inner());
        scheduled.take()
    }

    /// Waiting → Queued, unless it left already; it then holds a place of
    /// its limiter. (Its pool moves it into the queue in the same step.)
    pub(crate) fn try_admit(&self) -> bool {
        self.state.admit()
    }

    pub(crate) fn handle(&self) -> u64 {
        self.handle
    }

    /// Queued → Running, in a slot of its own (`own_slot`) or in the slot of
    /// a waiter that runs it inline. Returns the snapshot to install (to take
    /// once, after the start is recorded), or `None` when the task was
    /// cancelled or taken by another thread first.
    #[inline(always)]
    pub(crate) fn try_start(&self, own_slot: bool) -> Option<StartedWith<'_, Table>> {
        let snapshot = self.state.start(own_slot)?;
        // No admission or expiry is left to come. (The caller holds the
        // task, so this frees at most the small `Scheduled`.)
        drop(self.take_scheduled());
        Some(snapshot)
    }

    /// True when the task was abandoned and its slot already given back.
    pub(crate) fn slot_given_back(&self) -> bool {
        self.state.slot_given_back()
    }

    /// The task's work function and argument, for the caller to call between
    /// `Ref::begin_run` and [`Task::decide`], then `Ref::complete` (a worker:
    /// between `Ref::begin_run_in` and [`Task::decide`], then
    /// [`RunPlace::end_run`] and its own steps from [`Task::end`]).
    pub(crate) fn work(&self) -> (WorkFn, *mut c_void) {
        let work = self
            .calls
            .work
            .expect("a task in use has its work function");
        (work, self.calls.arg as *mut c_void)
    }

    /// The work function returned `code` and `result`: decides the outcome
    /// (unless a cancel already did), without reporting it yet.
    #[inline(always)]
    pub(crate) fn decide(&self, code: i32, result: *mut c_void) -> Decided {
        let result = result as usize;
        let keep_result = self.calls.on_done.is_none();
        let returned = self.state.returned(code, result, keep_result);
        // The callable returned: its limiter's place is free.
        if returned.place {
            self.release_place();
        }
        match returned.status {
            None => Decided::Abandoned(result),
            Some(status) => {
                let to_callback = if keep_result { 0 } else { result };
                Decided::Returned(Outcome { status, code }, to_callback)
            }
        }
    }

    /// Settles what [`Task::decide`] decided short of reporting it, once the
    /// runner dropped its [`Running`] or ended its [`RunPlace`] (the
    /// thread's table restored): an
    /// abandoned run's result and argument go to their free functions; a
    /// returned one is given back as the [`Report`] its runner counts
    /// (`Scheduler::count_returned`) and makes next (a worker makes it as
    /// its own steps: [`Task::done_call`], then [`Ref::after_on_done`]).
    #[inline]
    pub(crate) fn end(&self, decided: Decided) -> Option<Report> {
        match decided {
            Decided::Abandoned(result) => {
                // The cancel already reported it; nobody will take these.
                free_with(self.free_result(), result);
                free_with(self.free_arg(), self.calls.arg);
                None
            }
            Decided::Returned(outcome, to_callback) => Some(Report(outcome, to_callback)),
        }
    }

    /// The `on_done` call that reports `report`, if the task has one; while
    /// it runs, [`Reporting`] must be held (a wait for the task from inside
    /// it could never end).
    pub(crate) fn done_call(&self, report: &Report) -> Option<ForeignCall> {
        let on_done = self.calls.on_done?;
        let Report(outcome, result) = *report;
        Some(ForeignCall::Done(
            on_done,
            self.calls.on_done_data as *mut c_void,
            self.handle(),
            outcome.status,
            result as *mut c_void,
            outcome.code,
        ))
    }

    fn release_place(&self) {
        if let Some(limiter) = self.limiter() {
            limiter.release();
        }
    }

    /// The status now; with `want_result`, the result if it has not moved.
    fn observe(&self, want_result: bool) -> Observed {
        match self.state.observe(want_result) {
            Some((status, code, result)) => Observed {
                status,
                code,
                result: result as *mut c_void,
            },
            None => Observed {
                status: ASYNCIFY_PENDING,
                code: 0,
                result: ptr::null_mut(),
            },
        }
    }

    fn wait_published(&self, timeout: Option<Duration>, want_result: bool) -> Observed {
        if timeout != Some(Duration::ZERO) {
            crate::spin::spin_until(Shared::Park, || self.state.is_published());
            let deadline = timeout.map(|t| Instant::now() + t);
            self.state.wait_published(deadline);
        }
        let mut seen = self.observe(want_result);
        if seen.status == ASYNCIFY_PENDING {
            seen.status = ASYNCIFY_TIMEOUT;
        }
        seen
    }
}

/// What only a counted reference can do: hand itself on (to the thread
/// that runs the task, to deferred engine code, to its limiter and the
/// timer) while the task goes on.
impl Ref<Task> {
    /// After `on_done` returned (or at once without one): makes the outcome
    /// visible, frees a result no one can receive, and releases a detached
    /// task's handle together with this reference.
    pub(crate) fn after_on_done(self, outcome: Outcome) {
        let queue = self
            .rare()
            .and_then(|r| r.cq.as_ref())
            .filter(|_| self.calls.on_done.is_none());
        let queued = queue.and_then(|cq| {
            cq.push_with(|| {
                let (moved, orphan, release_self) = self.state.publish(true, self.detached);
                let record = Completion {
                    handle: self.handle(),
                    status: outcome.status,
                    code: outcome.code,
                    result: moved,
                    user_data: self.calls.on_done_data,
                    free_result: self.free_result(),
                };
                (
                    record,
                    AfterPublish {
                        orphan,
                        release_self,
                    },
                )
            })
        });
        let after = queued.unwrap_or_else(|| {
            let (_, orphan, release_self) = self.state.publish(false, self.detached);
            AfterPublish {
                orphan,
                release_self,
            }
        });
        free_with(self.free_result(), after.orphan);
        if after.release_self {
            // A user's release may have won the race; then only this
            // reference goes.
            let handle = self.handle();
            Ref::release_own(self, handle);
        }
        wake_wait_any();
    }

    /// Installs the task's table (`None`: an empty one) and makes it the
    /// thread's current task.
    #[inline(always)]
    pub(crate) fn begin_run(&self, snapshot: Option<Table>) -> Running {
        let mut place = RunPlace::default();
        self.begin_run_in(&mut place, snapshot);
        Running(place)
    }

    /// [`Ref::begin_run`] into a worker's `place` (ended by
    /// [`RunPlace::end_run`]).
    #[inline(always)]
    pub(crate) fn begin_run_in(&self, place: &mut RunPlace, snapshot: Option<Table>) {
        place.frame.install_task(snapshot);
        place.previous = local::with(|c| c.current_task.replace(Ref::index(self) + 1));
    }

    /// Restores the thread's table and reports what [`Task::decide`] decided.
    pub(crate) fn complete(&self, running: Running, decided: Decided) {
        drop(running);
        if let Some(Report(outcome, result)) = self.end(decided) {
            self.pool().count_returned(outcome.status == ASYNCIFY_OK);
            self.report(outcome, result);
        }
    }

    /// Calls `on_done` (no lock held), then makes the outcome visible: into
    /// the completion queue when the task has one and no `on_done`. On a
    /// worker both happen right after its engine step, from the thread's
    /// start routine (see `sys::ThreadBody`), in that order.
    fn report(&self, outcome: Outcome, result: usize) {
        let Some(call) = self.done_call(&Report(outcome, result)) else {
            // After the release functions of the task's table, as on_done.
            let task = self.clone();
            sys::then(move || task.after_on_done(outcome));
            return;
        };
        // A wait for this task from inside its on_done could never end (it
        // is published afterwards): note who is reporting it.
        let me = Ref::addr(self);
        if sys::deferring() {
            sys::then(move || local::with(|c| c.reporting.set(me)));
            sys::call_foreign(call);
            // A worker reports one task at a time.
            let task = self.clone();
            sys::then(move || {
                local::with(|c| c.reporting.set(0));
                task.after_on_done(outcome);
            });
        } else {
            let reporting = Reporting::new(self);
            sys::call_foreign(call);
            drop(reporting);
            self.clone().after_on_done(outcome);
        }
    }

    /// Decides `CANCELLED` unless the outcome is already decided, and reports
    /// it on this thread (5.1 queued, 5.2 running). Returns the outcome.
    pub(crate) fn cancel(&self) -> Outcome {
        self.cancel_as(false).unwrap_or(CANCELLED)
    }

    /// [`Ref::cancel`] of a task that has not started (waiting for its
    /// limiter, or queued); a task that started, ran inline or was withdrawn
    /// at its submit is left as it is.
    pub(crate) fn cancel_unstarted(&self) {
        self.cancel_as(true);
    }

    /// Decides `CANCELLED` (with `unstarted_only`, only before the task
    /// started) and reports it. Returns the decided outcome; None when the
    /// task had started and `unstarted_only`.
    fn cancel_as(&self, unstarted_only: bool) -> Option<Outcome> {
        // The pool's lock, taken first, so that giving an abandoned task's
        // slot back and deciding its outcome are one step for the pool (an
        // unstarted task has no slot to give).
        let mut give_back = if unstarted_only {
            None
        } else {
            self.pool().lock_for_abandon()
        };
        let early =
            match self
                .state
                .decide_early(ASYNCIFY_CANCELLED, unstarted_only, give_back.is_some())
            {
                Ok(early) => early,
                Err(decided) => return decided.map(|(status, code)| Outcome { status, code }),
            };
        // A task run inline has no slot to give: its waiter's stays taken.
        if let (true, Some(slots)) = (early.give_back, give_back.as_mut()) {
            slots.give_back();
        }
        let scheduled = self.take_scheduled();
        drop(give_back);
        drop(early.start_with);
        drop(scheduled);
        if early.was == Phase::Running {
            self.pool().count_abandoned();
            self.report(CANCELLED, 0);
        } else {
            // A running callable keeps its limiter's place until it returns.
            self.left_unstarted(early.was, CANCELLED, early.place);
        }
        Some(CANCELLED)
    }

    /// Decides `EXPIRED` when the task has not started and nothing else was
    /// decided, and reports it on this thread. True when it expired.
    pub(crate) fn expire(&self) -> bool {
        let Ok(early) = self.state.decide_early(ASYNCIFY_EXPIRED, true, false) else {
            return false;
        };
        let scheduled = self.take_scheduled();
        drop(early.start_with);
        drop(scheduled);
        self.left_unstarted(early.was, EXPIRED, early.place);
        true
    }

    /// After a cancel or an expiry decided before the task started: the
    /// counts, the limiter's place (`place`: it held one), `free_arg`, then
    /// the report.
    fn left_unstarted(&self, was: Phase, outcome: Outcome, place: bool) {
        let expired = outcome == EXPIRED;
        let was_waiting = was == Phase::Waiting;
        self.pool()
            .left_before_start(Ref::addr(self), was_waiting, expired);
        if let Some(limiter) = self.limiter() {
            if was_waiting {
                limiter.left_waiting(expired);
            }
            if place {
                limiter.release();
            }
        }
        free_with(self.free_arg(), self.calls.arg);
        self.report(outcome, 0);
        if expired {
            let pool = self.pool.clone().expect("a task in use has its pool");
            sys::then(move || pool.expiry_reported());
        }
    }

    /// For a task with a limiter or a start deadline: what its limiter and
    /// the timer are to refer to (see [`Scheduled`]).
    pub(crate) fn schedule(&self) -> Arc<Scheduled> {
        let scheduled = Arc::new(Scheduled(self.clone()));
        let rare = self
            .rare()
            .expect("a task waiting for its limiter or with a deadline uses rare");
        *rare.scheduled.lock().unwrap_or_else(|e| e.into_inner()) = Some(scheduled.clone());
        scheduled
    }

    /// A submit refused after [`Ref::schedule`]: the task will never be
    /// admitted nor expire, and its slot must be freed.
    pub(crate) fn unschedule(&self) {
        drop(self.take_scheduled());
    }
}

fn lookup(handle: u64) -> Result<TaskRef, Error> {
    tasks().get(handle).map_err(from_handle_error)
}

pub(crate) fn from_handle_error(e: HandleError) -> Error {
    match e {
        HandleError::Invalid => Error::InvalidHandle,
        HandleError::Forked => Error::Forked,
        HandleError::Full => Error::OutOfMemory,
    }
}

/// The task's status now, without blocking. With `want_result`, receives the
/// result if it has not moved yet.
pub fn poll(handle: u64, want_result: bool) -> Result<Observed, Error> {
    let task = lookup(handle)?;
    Ok(task.observe(want_result))
}

/// Waits until the task is terminal or `timeout` (None: forever) runs out.
///
/// A task waiting for itself gets [`Error::WouldDeadlock`]. A thread of the
/// task's own pool that waits for a still-queued task runs it inline, in its
/// own slot, so a full pool cannot deadlock on nested waits.
pub fn wait(handle: u64, timeout: Option<Duration>, want_result: bool) -> Result<Observed, Error> {
    let task = lookup(handle)?;
    if waits_for_itself(&task) {
        return Err(Error::WouldDeadlock);
    }
    task.pool().run_inline_if_stuck(&task);
    Ok(task.wait_published(timeout, want_result))
}

/// Cancels the task: a queued one never runs, a running one is abandoned.
/// Returns the task's decided outcome.
pub fn cancel(handle: u64) -> Result<Outcome, Error> {
    Ok(lookup(handle)?.cancel())
}

/// Frees the handle. A pending task goes on; its result goes to `free_result`.
pub fn release(handle: u64) -> Result<(), Error> {
    let task = tasks().remove(handle).map_err(from_handle_error)?;
    let orphan = task.state.release();
    free_with(task.free_result(), orphan);
    Ok(())
}

/// Threads in `wait_any`, and a generation they wait on: every publish bumps
/// it while someone waits, so a waiter never misses the completion it waits
/// for (it reads the generation before it checks the tasks).
static ANY_WAITERS: AtomicU64 = AtomicU64::new(0);
static ANY_GENERATION: Mutex<u64> = Mutex::new(0);

static ANY_PUBLISHED: Condvar = Condvar::new();

#[inline(always)]
fn wake_wait_any() {
    if ANY_WAITERS.load(Ordering::SeqCst) > 0 {
        wake_wait_any_waiters();
    }
}

#[cold]
fn wake_wait_any_waiters() {
    *ANY_GENERATION.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    ANY_PUBLISHED.notify_all();
}

/// Waits until one of `handles` is terminal; returns the index of the first
/// terminal one in the list, or `None` when `timeout` ran out. A thread of a
/// pool runs a still-queued task of the list inline (see [`wait`]).
pub fn wait_any(handles: &[u64], timeout: Option<Duration>) -> Result<Option<usize>, Error> {
    // Its lock is held across fork(), so a child never inherits it locked
    // (only waiters, and publishers while there are waiters, take it).
    static HELD_ACROSS_FORK: Once = Once::new();
    HELD_ACROSS_FORK.call_once(|| {
        crate::fork::hold_across_fork(|| {
            Box::new(ANY_GENERATION.lock().unwrap_or_else(|e| e.into_inner()))
        })
    });
    let tasks = handles
        .iter()
        .map(|&h| lookup(h))
        .collect::<Result<Vec<_>, _>>()?;
    if tasks.iter().all(waits_for_itself) {
        return Err(Error::WouldDeadlock);
    }
    let deadline = timeout.map(|t| Instant::now() + t);
    ANY_WAITERS.fetch_add(1, Ordering::SeqCst);
    let found = loop {
        let generation = *ANY_GENERATION.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = tasks.iter().position(|t| t.state.is_published_for_any()) {
            break Some(i);
        }
        if tasks.iter().any(|t| t.pool().run_inline_if_stuck(t)) {
            continue;
        }
        let mut seen = ANY_GENERATION.lock().unwrap_or_else(|e| e.into_inner());
        let timed_out = loop {
            if *seen != generation {
                break false;
            }
            seen = match deadline {
                None => ANY_PUBLISHED.wait(seen).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        break true;
                    }
                    ANY_PUBLISHED
                        .wait_timeout(seen, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        };
        if timed_out {
            break tasks.iter().position(|t| t.state.is_published_for_any());
        }
    };
    ANY_WAITERS.fetch_sub(1, Ordering::SeqCst);
    Ok(found)
}

/// Inside a task: true once the task has been cancelled (it is abandoned and
/// its result will be freed, so it may stop early). False outside tasks.
pub fn cancel_requested() -> bool {
    match local::with(|c| c.current_task.get()) {
        0 => false,
        // The runner's reference keeps the slot this task's.
        current => tasks()
            .get_live(current - 1)
            .is_some_and(|task| task.state.is_cancelled()),
    }
}

impl Scheduled {
    /// Has the timer expire the task at its deadline, unless it started.
    pub(crate) fn arm_deadline(self: &Arc<Self>) {
        let deadline = self.0.deadline();
        if deadline != 0 {
            let at = from_base(deadline);
            let me: Arc<dyn Due> = self.clone();
            timer().schedule(at, Arc::downgrade(&me));
        }
    }
}

impl Due for Scheduled {
    /// Its start deadline: it expires unless it started.
    fn fire(self: Arc<Self>) {
        self.0.expire();
    }
}

impl Waiter for Scheduled {
    fn admit(self: Arc<Self>) -> bool {
        let pool = self.0.pool.clone().expect("a task in use has its pool");
        pool.admit(self.0.clone())
    }

    fn admitted(&self) {
        self.0.pool().kick();
    }

    fn waiting(&self) -> bool {
        self.0.state.is_waiting()
    }
}

/// Number of live handles in the process.
pub fn live_handles() -> usize {
    tasks().live()
}
#[cfg(test)]
mod tests {
    /// A queued task's memory is its slot: what every task carries stays
    /// within 128 bytes (the slot adds 16), the rest goes to [`super::Rare`].
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_task_fits_its_budget() {
        let size = std::mem::size_of::<super::Task>();
        assert!(size <= 128, "a Task takes {size} bytes");
    }

    /// A slot never taken is zeroed memory read as a `Task` (see its
    /// `Slotted` impl): all zeroes must be `Task::default()`, field by
    /// field. `make stress` runs this under Miri too, which refuses the
    /// bytes outright should a field's type stop accepting zeroes.
    #[test]
    #[allow(unsafe_code)]
    fn a_zeroed_task_is_the_default() {
        let zeroed = std::mem::MaybeUninit::<super::Task>::zeroed();
        // SAFETY: the promise of `Task`'s `Slotted` impl, under test here.
        let mut task = unsafe { zeroed.assume_init() };
        let calls = &task.calls;
        assert!(calls.work.is_none() && calls.on_done.is_none());
        assert_eq!((calls.arg, calls.on_done_data), (0, 0));
        assert_eq!((task.submitted, task.handle), (0, 0));
        assert!(!task.detached && !task.uses_rare && !task.has_limiter);
        assert!(task.rare.is_none() && task.limiter.is_none() && task.pool.is_none());
        assert!(task.state.is_waiting());
        assert!(task.state.take_start_with().is_empty());
        let default = super::Task::default();
        assert!(default.calls.work.is_none() && default.pool.is_none());
        assert!(default.state.is_waiting());
    }
}
