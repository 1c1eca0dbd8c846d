//! The limited pool: a FIFO queue, a limit on how many callables run at once,
//! worker threads that are reused and leave after an idle keep-alive, and
//! shutdown.
//!
//! The hot path takes no lock: the queue is a lock-free FIFO, and the slots
//! in use and the limit are one atomic word (see the `gate` module): a
//! worker takes a slot by one CAS and then pops tasks itself while it holds
//! it, and a submit pushes and only reads that word. A mutex guards the rest
//! (threads, parking, shutdown, tasks waiting for their limiter); no user
//! code ever runs under it, and a submit or a worker sends its wake-up
//! after letting go of it. A
//! *slot* is the right to run one callable: a worker takes one with a task
//! and gives it back only after the task's `on_done` and frees have
//! returned (keeping it for the next task when one is queued), so "at most
//! `limit` at once" also covers abandoned callables, and a finished shutdown
//! has no callback left to fire.
//!
//! Cancelled, expired and inline-run tasks stay in the queue as tombstones
//! that a worker skips (counted, so that the queued figure only counts tasks
//! that can still start). Tasks that wait for their limiter are not in the queue yet: the pool
//! keeps them aside (to cancel them at shutdown) and counts them in `waiting`
//! until their limiter admits them into the queue.
//!
//! A task past its start deadline never starts: the timer expires it, or the
//! worker that would have started it does.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use once_cell::sync::OnceCell;

use crate::gate::{Gate, Word};
use crate::handles::{fork_epoch, Ref};
use crate::latency::{Sharded, Summary};
use crate::limiter::{Limiter, Waiter};
use crate::overrides;
use crate::queue::Queue;
use crate::shard::{Counter, Padded};
use crate::spin;
use crate::status::Error;
use crate::status::{ASYNCIFY_OK, ASYNCIFY_PENDING};
use crate::sys::{self, ForeignCall, LeakAtExit, Thread, ThreadBody};
use crate::table::Table;
use crate::task::{
    tasks, AbandonSlot, Decided, Outcome, PlainCalls, Report, Reporting, RunPlace, Scheduler, Task,
    TaskRef, TaskSpec,
};
use crate::timer::timer;

/// The limit of the default pool unless `ASYNCIFY_MAX_WORKERS` says otherwise.
pub const DEFAULT_MAX_WORKERS: u32 = 8;
/// How long an idle worker waits for work before it exits.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(10);

/// A function run on each worker thread when it starts or before it exits.
pub type ThreadHook = extern "C" fn(user_data: *mut std::ffi::c_void);

/// How a pool is made.
#[derive(Clone, Debug)]
pub struct PoolOptions {
    /// The limit: 0 pauses, `u32::MAX` is unbounded (any limit above
    /// 65,535 lets 65,535 callables run at once).
    pub max_workers: u32,
    /// 0: unbounded; else submit fails with `Busy` when this many wait.
    pub max_queued: u32,
    /// How long an idle worker waits for work before it exits.
    pub keep_alive: Duration,
    /// An abandoned callable gives its slot back at once (AnyIO's way)
    /// instead of when it returns; its thread then runs beyond the limit.
    pub release_slot_on_abandon: bool,
    /// Worker threads are named `{thread_name}-{n}` (the prefix shortened to
    /// fit Linux's 15-byte thread names).
    pub thread_name: String,
    /// Run on each worker thread when it starts, before any task.
    pub on_thread_start: Option<ThreadHook>,
    /// Run on each worker thread before it exits.
    pub on_thread_stop: Option<ThreadHook>,
    /// Passed to the hooks (an address, as the C caller gave it).
    pub hook_data: usize,
    /// Each worker's stack in bytes; 0: the platform's default for new threads.
    pub stack_size: usize,
    /// Record each task's queue wait and run time (see [`Pool::latency`]).
    pub record_latency: bool,
    /// Run on the worker right before each work function, with the task's
    /// table installed.
    pub on_task_start: Option<TaskHook>,
    /// Run on the worker right after each work function returned, still with
    /// the task's table, with the status the task gets.
    pub on_task_end: Option<TaskHook>,
}

/// A task hook: `(hook_data, handle, status, queue_wait_ns, run_ns)`.
pub type TaskHook = extern "C" fn(*mut std::ffi::c_void, u64, i32, u64, u64);

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            max_workers: DEFAULT_MAX_WORKERS,
            max_queued: 0,
            keep_alive: DEFAULT_KEEP_ALIVE,
            release_slot_on_abandon: false,
            thread_name: "asyncify".to_string(),
            on_thread_start: None,
            on_thread_stop: None,
            hook_data: 0,
            stack_size: 0,
            record_latency: false,
            on_task_start: None,
            on_task_end: None,
        }
    }
}

struct State {
    /// Tasks waiting for their limiter, by address, to cancel at shutdown;
    /// an admission moves them into `queue`.
    limited: HashMap<usize, TaskRef>,
    /// Tasks that wait for their limiter (in `limited`, or taken out of it by
    /// a shutdown that is cancelling them).
    waiting: usize,
    /// Expired tasks being reported (their `free_arg` and `on_done` may still
    /// run, maybe on the timer thread): a shutdown waits for them.
    expiring: u32,
    /// The limit as set (the gate holds it too, capped at
    /// 65,535).
    limit: u32,
    threads: u32,
    /// Workers that have decided to exit (no longer in `threads`, so a new
    /// worker can start in their place) but have not run their stop hook yet.
    leaving: u32,
    /// Threads still running an abandoned callable whose slot was given back
    /// early (`release_slot_on_abandon`): they do not count against the limit.
    abandoned_off_limit: u32,
    /// Names the next worker.
    spawned: u64,
    shut_down: bool,
    /// Workers that have left and wait to be joined (by the next worker
    /// start or a shutdown).
    exited: Vec<Thread>,
    /// The pool's owner let go of it before every worker had left: nobody
    /// will join the rest, so each detaches itself as it leaves.
    orphaned: bool,
    /// Shutdowns waiting on `quiet`.
    quiet_waiters: u32,
}

/// What a worker's look at the queue led to (see `Worker::serve`).
enum Served {
    /// A task it started: its work function is the next call.
    Work(ForeignCall),
    /// Calls were deferred (an expired task's callbacks): make them, then
    /// look again.
    Again,
    /// The worker leaves.
    Leave,
}

/// What `provide_workers` decided: parked workers to wake, new ones to start
/// (at most one of either).
#[must_use]
struct Provide {
    wake: u32,
    spawn: u32,
}

impl Provide {
    const NONE: Provide = Provide { wake: 0, spawn: 0 };
}

/// Counters, exact when the pool is quiet.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// The limit.
    pub limit: u32,
    /// Worker threads alive.
    pub threads: u32,
    /// Of those, parked waiting for work.
    pub idle_threads: u32,
    /// Tasks waiting to start: in the queue, or waiting for their limiter.
    pub queued: u64,
    /// Slots in use (callables running, abandoned ones included; for a
    /// moment also a worker between two tasks, or finding the queue empty).
    pub running: u64,
    /// Tasks accepted by submit.
    pub submitted: u64,
    /// Tasks whose work function returned 0.
    pub completed: u64,
    /// Tasks whose work function returned non-zero.
    pub failed: u64,
    /// Tasks cancelled before they started.
    pub cancelled: u64,
    /// Tasks cancelled while running.
    pub abandoned: u64,
    /// Tasks whose start deadline passed before they started.
    pub expired: u64,
}

/// Counted by the submitting threads and the workers, each into its own
/// part (see [`crate::shard`]).
#[derive(Default)]
struct Counters {
    submitted: Counter,
    completed: Counter,
    failed: Counter,
    cancelled: Counter,
    abandoned: Counter,
    expired: Counter,
}

/// The part of a pool that its workers and tasks share.
pub struct PoolShared {
    /// This pool itself, for the code that has only `&self` and starts
    /// workers (which hold the pool).
    me: Weak<PoolShared>,
    /// On a cache line of its own, as are the condition variables: parking
    /// and waking write them, while every submit reads the fields beside.
    state: Padded<Mutex<State>>,
    /// Queued tasks and tombstones, in submit order; popped by the workers
    /// that hold a slot of `gate`, and by a shutdown.
    queue: Queue<TaskRef>,
    /// The slots in use, the limit, the shut-down bit; idle workers.
    gate: Gate,
    /// Entries of `queue` whose task left before a worker took it (cancelled,
    /// expired, run inline, withdrawn): the queue's length less these is the
    /// tasks that can still start. Counted when a task leaves, taken back when
    /// its entry is popped, so neither a submit nor a start touches it.
    tombstones: Counter,
    /// Parked workers wait here (under the lock).
    work_ready: Padded<Condvar>,
    quiet: Condvar,
    options: PoolOptions,
    counters: Counters,
    /// Queue wait and run time, when the options say to record them.
    latency: Option<Box<Latency>>,
    /// The pool records latency or has task hooks: its tasks' submit and
    /// start times are read.
    times_tasks: bool,
    /// The pool has had tasks with a deadline or a limiter: it is a user of
    /// the timer until its shutdown.
    uses_timer: AtomicBool,
}

/// When a task started and how long it had waited, for latency and hooks.
struct Started {
    /// [`sys::now_ns`] at its start.
    at: u64,
    queue_wait: u64,
}

impl Started {
    /// A start now, its queue wait not yet known.
    #[inline(always)]
    fn now() -> Started {
        Started {
            at: sys::now_ns(),
            queue_wait: 0,
        }
    }
}

/// A pool's latency histograms.
#[derive(Default)]
struct Latency {
    queue_wait: Sharded,
    run: Sharded,
}

/// A pool owned by its creator. Dropping it shuts it down without waiting:
/// queued tasks are cancelled, running ones finish on their own.
pub struct Pool {
    shared: Arc<PoolShared>,
}

/// How long the pool's watcher first watches the running workers start
/// tasks, spinning (see [`PoolShared::watch`]).
const FIRST_LOOK: Duration = Duration::from_micros(10);
/// How long it sleeps between its later looks (a sleep takes some tens of
/// microseconds more).
const WATCH_PERIOD: Duration = Duration::from_micros(100);
/// Running workers that start fewer tasks than one per this each are slow
/// (their tasks block, or take long): the watcher brings in more workers.
const SLOW_TASK: Duration = Duration::from_micros(10);

thread_local! {
    /// The pool whose worker this thread is.
    static WORKER_OF: LeakAtExit<RefCell<Option<Arc<PoolShared>>>> =
        const { LeakAtExit::new(RefCell::new(None)) };
    /// The pool (its address) an expired task of which this thread is
    /// reporting (0: none): its shutdown from here would wait for itself.
    static REPORTING_EXPIRY_OF: Cell<usize> = const { Cell::new(0) };
}

fn on_worker_of(pool: &PoolShared) -> bool {
    WORKER_OF
        .try_with(|w| {
            w.borrow()
                .as_ref()
                .is_some_and(|p| std::ptr::eq(Arc::as_ptr(p), pool))
        })
        .unwrap_or(false)
}

impl PoolShared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No user code runs under this lock, so its data stays consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decides whether to wake a parked worker or start a new one, so that a
    /// thread is coming for the tasks that may start now. One at a time: while
    /// a worker is coming (woken, starting or spinning) nobody else is woken,
    /// and each worker that takes a free slot while more tasks are queued
    /// calls this again (through [`PoolShared::wake_next`]), so a burst
    /// fills the free slots one wake-up after another and a flood of short
    /// tasks wakes no worker that would find the queue empty. The caller wakes them with
    /// [`PoolShared::wake_and_spawn`] once it has let go of the lock: a woken
    /// worker then finds it free instead of blocking on it at once.
    fn provide_workers(&self, st: &mut State) -> Provide {
        let idle = self.gate.idle();
        if idle.coming() > 0 || !self.startable() {
            return Provide::NONE;
        }
        if idle.sleeping() > idle.signalled() {
            // Counted now, sent after the lock: a worker that wakes meanwhile
            // for another reason takes the count and looks for work all the
            // same.
            self.gate.signal();
            return Provide { wake: 1, spawn: 0 };
        }
        if st.threads - st.abandoned_off_limit >= st.limit {
            return Provide::NONE;
        }
        st.threads += 1;
        self.gate.starting();
        Provide { wake: 0, spawn: 1 }
    }

    /// The pool's watcher (see [`crate::gate`]): while a worker should
    /// watch ([`Gate::wants_watcher`]) and tasks are queued, it looks at how
    /// fast the running workers start tasks, spinning for [`FIRST_LOOK`],
    /// then every [`WATCH_PERIOD`]. When they start fewer than one per
    /// [`SLOW_TASK`] each (their tasks block, or take long), it widens the
    /// pool and returns to take a slot itself. It also returns, to look at
    /// the queue like any idle worker, when there is nothing to watch.
    #[inline(never)]
    fn watch(&self) {
        let mut slow = !self.starts_soon();
        loop {
            if !self.gate.wants_watcher(self.gate.load()) || self.queue.is_empty() {
                // No free slot, fewer busy ones than spare CPUs, a widened
                // pool, or nothing queued: the look after this decides.
                self.gate.stop_watching(false);
                return;
            }
            if slow {
                self.gate.stop_watching(true);
                return;
            }
            let popped = self.queue.popped();
            let since = Instant::now();
            std::thread::sleep(WATCH_PERIOD);
            let started = u128::from(self.queue.popped() - popped);
            let slots = u128::from(self.gate.load().busy().max(1));
            slow = started * SLOW_TASK.as_nanos() < since.elapsed().as_nanos() * slots;
        }
    }

    /// The watcher's first look, spinning (yielding now and then): true as
    /// soon as the running workers started a task each, false when they
    /// started fewer within [`FIRST_LOOK`]. A task submitted while a long
    /// one runs starts after this look.
    fn starts_soon(&self) -> bool {
        let popped = self.queue.popped();
        let slots = u64::from(self.gate.load().busy().max(1));
        spin::spin_for(FIRST_LOOK, spin::Shared::SpinOn, || {
            self.queue.popped() - popped >= slots
        })
    }

    /// A worker without a slot could take one now, for a queued task that
    /// no running worker or watcher sees to ([`Gate::covered`]).
    fn startable(&self) -> bool {
        let w = self.gate.load();
        w.has_room() && !self.gate.covered(w) && !self.queue.is_empty()
    }

    /// After a push that left the gate `after`: wakes or starts a worker if
    /// a free slot could take the task and none is coming. The lock is taken
    /// only then. Returns how many workers could not be started.
    #[inline(always)]
    fn wake_next(self: &Arc<Self>, after: Word) -> u32 {
        if self.gate.needs_worker(after) {
            self.provide_and_wake()
        } else {
            0
        }
    }

    /// The lock-taking part of [`PoolShared::wake_next`], out of its callers'
    /// way.
    #[inline(never)]
    fn provide_and_wake(self: &Arc<Self>) -> u32 {
        let provide = {
            let mut st = self.lock();
            self.provide_workers(&mut st)
        };
        self.wake_and_spawn(provide)
    }

    /// Sends the wake-ups and starts the workers `provide_workers` decided,
    /// with no lock held; returns how many workers could not be started.
    #[inline]
    fn wake_and_spawn(self: &Arc<Self>, provide: Provide) -> u32 {
        if provide.wake > 0 {
            self.work_ready.notify_one();
        }
        if provide.spawn == 0 {
            return 0;
        }
        self.spawn_workers(provide.spawn)
    }

    /// Starts `n` workers; returns how many could not be started. Joins the
    /// workers that left since the last start first.
    fn spawn_workers(self: &Arc<Self>, n: u32) -> u32 {
        if n == 0 {
            return 0;
        }
        let exited = std::mem::take(&mut self.lock().exited);
        exited.into_iter().for_each(Thread::join);
        let mut failed = 0;
        for _ in 0..n {
            let number = {
                let mut st = self.lock();
                st.spawned += 1;
                st.spawned
            };
            let worker = Worker {
                shared: self.clone(),
                step: Step::Start,
                task: None,
                stage: Stage::Done,
                run: RunPlace::default(),
                started: None,
                reporting_outer: 0,
                holding: false,
                timed_out: false,
                may_spin: true,
            };
            let name = worker_name(&self.options.thread_name, number);
            if sys::spawn_thread(worker, self.options.stack_size, &name).is_err() {
                // The threads that exist keep serving the queue; a later
                // submit or finish tries again.
                failed += 1;
                let mut st = self.lock();
                st.threads -= 1;
                self.gate.started();
                self.notify_if_quiet(&st);
            }
        }
        failed
    }

    /// Whether a submit is accepted now: not after a shutdown began, nor
    /// with `max_queued` tasks waiting (in the queue or for their limiter).
    /// Under the lock, so that submits to a bounded pool count one by one.
    fn accepts(&self, st: &State) -> Result<(), Error> {
        let bound = self.options.max_queued as usize;
        if st.shut_down {
            Err(Error::ShutDown)
        } else if bound > 0 && self.queued() + st.waiting as u64 >= bound as u64 {
            Err(Error::Busy)
        } else {
            Ok(())
        }
    }

    /// Tasks in the queue that can still start (exact when no worker is
    /// between taking an entry and starting its task).
    fn queued(&self) -> u64 {
        let tombstones = self.tombstones.sum();
        // Transiently "negative" while a popper counts back first.
        let tombstones = if tombstones > u64::from(u32::MAX) {
            0
        } else {
            tombstones
        };
        (self.queue.len() as u64).saturating_sub(tombstones)
    }

    /// Queues an accepted task, unless the pool shut down (see the `gate`
    /// module: a shutdown drains the queue once no submit is between its
    /// look at the gate and the end of its push); returns the gate as left.
    #[inline(always)]
    fn push(&self, task: TaskRef) -> Result<Word, Error> {
        let entered = self.gate.enter().map_err(|_| Error::ShutDown)?;
        self.queue.push(task);
        drop(entered);
        Ok(self.gate.after_push())
    }

    /// Pops every entry of the queue: a task that has not started is
    /// cancelled (on this thread), a tombstone dropped. A task withdrawn at
    /// its submit or run inline is left alone.
    fn drain(&self) {
        while let Some(task) = self.queue.pop() {
            task.cancel_unstarted();
            self.tombstones.sub(1);
        }
    }

    /// A pool let go of before it was quiet (its shutdown timed out) is no
    /// user of the timer once it is: the last of its workers to leave, or of
    /// its expiries to be reported, says so, so the timer can stop.
    fn give_back_timer_if_orphaned(&self) {
        let done = {
            let st = self.lock();
            st.orphaned && self.is_quiet(&st)
        };
        if done && self.uses_timer.swap(false, Ordering::Relaxed) {
            timer().remove_user();
        }
    }

    fn notify_if_quiet(&self, st: &State) {
        // Only a shutdown waits on `quiet`: without one, no wake-up syscall.
        if st.quiet_waiters > 0 && self.is_quiet(st) {
            self.quiet.notify_all();
        }
    }

    /// Where the pool times its tasks: a task starting now (its queue wait
    /// recorded).
    fn start_now(&self, task: &Task) -> Option<Started> {
        self.times_tasks.then(|| {
            let mut started = Started::now();
            self.record_start(task, &mut started);
            started
        })
    }

    /// Sets the queue wait of `task`, which started at `started.at`, and
    /// records it.
    #[inline(never)]
    fn record_start(&self, task: &Task, started: &mut Started) {
        let queue_wait = task
            .submitted()
            .map_or(0, |submitted| started.at.saturating_sub(submitted));
        started.queue_wait = queue_wait;
        if let Some(latency) = &self.latency {
            latency.queue_wait.record(queue_wait);
            if let Some(limiter) = task.limiter() {
                limiter.record_queue_wait(queue_wait);
            }
        }
    }

    /// The task's run time since `started` (recorded).
    #[inline(always)]
    fn record_end(&self, task: &Task, started: Option<&Started>) -> u64 {
        started.map_or(0, |started| self.record_end_at(task, started))
    }

    #[inline(never)]
    fn record_end_at(&self, task: &Task, started: &Started) -> u64 {
        let run = sys::now_ns().saturating_sub(started.at);
        if let Some(latency) = &self.latency {
            latency.run.record(run);
            if let Some(limiter) = task.limiter() {
                limiter.record_run(run);
            }
        }
        run
    }

    /// Calls a task hook: on a worker between its calls, from its start
    /// routine (see `sys::call_foreign`); inside a waiter's call (an inline
    /// run), in place.
    fn call_task_hook(
        &self,
        hook: TaskHook,
        task: &Task,
        status: i32,
        started: Option<&Started>,
        run: u64,
    ) {
        let queue_wait = started.map_or(0, |s| s.queue_wait);
        let data = self.options.hook_data as *mut std::ffi::c_void;
        sys::call_foreign(ForeignCall::TaskHook(
            hook,
            data,
            task.handle(),
            status,
            queue_wait,
            run,
        ));
    }

    fn has_thread_hooks(&self) -> bool {
        self.options.on_thread_start.is_some() || self.options.on_thread_stop.is_some()
    }

    /// No callable runs and no worker thread is left (each has run its stop
    /// hook and is about to end): nothing of this pool can call user code any
    /// more, and the workers can be joined.
    fn is_quiet(&self, st: &State) -> bool {
        self.gate.load().busy() == 0
            && st.abandoned_off_limit == 0
            && st.threads + st.leaving == 0
            && st.expiring == 0
    }

    /// After a worker could not be started for the task `handle` names:
    /// when the pool has no thread at all, nothing would ever run it, so it
    /// leaves the queue (no callback, as for any refused submit; a tombstone
    /// stays) and the submit fails.
    fn withdraw_if_unserved(&self, handle: u64) -> Result<(), Error> {
        // Taken before the lock, so dropped after it (it may be the last
        // reference to the task, whose table may hold the last of a value).
        let Ok(task) = tasks().get(handle) else {
            // Released (a detached task reported) already.
            return Ok(());
        };
        let st = self.lock();
        if st.threads > 0 {
            return Ok(());
        }
        let Some(started) = task.try_start(false) else {
            // Started inline, or reached through its handle and cancelled
            // already: reported.
            return Ok(());
        };
        let snapshot = started.take();
        self.tombstones.add(1);
        self.counters.submitted.sub(1);
        drop(st);
        // Dropped with no lock held: it may release the last reference to a value.
        drop(snapshot);
        let _ = tasks().remove(handle);
        Err(Error::NoWorkerThread)
    }
}

impl Scheduler for PoolShared {
    fn lock_for_abandon(&self) -> Option<Box<dyn AbandonSlot + '_>> {
        if !self.options.release_slot_on_abandon {
            return None;
        }
        Some(Box::new(SlotGiveBack {
            shared: self,
            st: Some(self.lock()),
            given: false,
        }))
    }

    fn count_abandoned(&self) {
        self.counters.abandoned.add(1);
    }

    #[inline]
    fn count_returned(&self, ok: bool) {
        let c = if ok {
            &self.counters.completed
        } else {
            &self.counters.failed
        };
        c.add(1);
    }

    fn left_before_start(&self, task: usize, was_waiting: bool, expired: bool) {
        let counter = if expired {
            &self.counters.expired
        } else {
            &self.counters.cancelled
        };
        counter.add(1);
        if !was_waiting {
            // Its entry stays in the queue, a tombstone.
            self.tombstones.add(1);
            if !expired {
                return;
            }
        }
        let mut st = self.lock();
        if was_waiting {
            // Dropped with the lock held: the caller holds the task too.
            st.limited.remove(&task);
            st.waiting -= 1;
        }
        if expired {
            st.expiring += 1;
            let me = self as *const PoolShared as usize;
            sys::then(move || REPORTING_EXPIRY_OF.with(|r| r.set(me)));
        }
    }

    fn expiry_reported(&self) {
        REPORTING_EXPIRY_OF.with(|r| r.set(0));
        let mut st = self.lock();
        st.expiring -= 1;
        self.notify_if_quiet(&st);
        drop(st);
        self.give_back_timer_if_orphaned();
    }

    fn admit(&self, task: TaskRef) -> bool {
        let mut st = self.lock();
        // After a shutdown began, the shutdown cancels it (it took it aside).
        if st.shut_down || !task.try_admit() {
            return false;
        }
        st.limited.remove(&Ref::addr(&task));
        st.waiting -= 1;
        // Not shut down (checked under the lock, where a shutdown sets both
        // flags).
        self.push(task).expect("an admitted task is queued");
        true
    }

    fn kick(&self) {
        let mut st = self.lock();
        let provide = self.provide_workers(&mut st);
        drop(st);
        if let Some(shared) = self.me.upgrade() {
            // A worker that cannot be started now is tried again at the next
            // submit or finish; the task stays queued.
            shared.wake_and_spawn(provide);
        }
    }

    fn run_inline_if_stuck(&self, task: &TaskRef) -> bool {
        if !on_worker_of(self) {
            return false;
        }
        if task.overdue(Instant::now()) {
            // Expired instead of run (if it has not started or left yet).
            return task.expire();
        }
        let Some(snapshot) = task.try_start(false) else {
            return false;
        };
        let snapshot = snapshot.take();
        self.tombstones.add(1);
        // Hooked and recorded like a start on a worker; here, inside the
        // waiter's own call, the hooks are called in place.
        let started = self.start_now(task);
        let running = task.begin_run(snapshot);
        if let Some(hook) = self.options.on_task_start {
            self.call_task_hook(hook, task, ASYNCIFY_PENDING, started.as_ref(), 0);
        }
        let (work, arg) = task.work();
        let mut result = std::ptr::null_mut();
        let code = work(arg, &mut result);
        let run = self.record_end(task, started.as_ref());
        let decided = task.decide(code, result);
        if let Some(hook) = self.options.on_task_end {
            self.call_task_hook(hook, task, decided.status(), started.as_ref(), run);
        }
        task.complete(running, decided);
        true
    }
}

/// The pool's lock, held by a cancel that may give an abandoned task's slot
/// back at once; dropping it starts workers for tasks that may now start.
struct SlotGiveBack<'a> {
    shared: &'a PoolShared,
    st: Option<MutexGuard<'a, State>>,
    given: bool,
}

impl AbandonSlot for SlotGiveBack<'_> {
    /// The abandoned callable's thread leaves the limit until it returns.
    fn give_back(&mut self) {
        let st = self.st.as_mut().expect("held until drop");
        self.shared.gate.release();
        st.abandoned_off_limit += 1;
        self.given = true;
    }
}

impl Drop for SlotGiveBack<'_> {
    fn drop(&mut self) {
        let Some(mut st) = self.st.take() else { return };
        if self.given {
            let provide = self.shared.provide_workers(&mut st);
            drop(st);
            if let Some(shared) = self.shared.me.upgrade() {
                shared.wake_and_spawn(provide);
            }
        }
    }
}

/// `prefix-N`, with the prefix shortened so the whole name fits the 15 bytes
/// Linux keeps: workers stay tellable apart in `top` and `gdb`.
fn worker_name(prefix: &str, number: u64) -> String {
    const LINUX_NAME_MAX: usize = 15;
    let suffix = format!("-{number}");
    let mut end = prefix
        .len()
        .min(LINUX_NAME_MAX.saturating_sub(suffix.len()));
    while !prefix.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{suffix}", &prefix[..end])
}

/// A worker thread's life, one step per call into user code (see
/// [`ThreadBody`]): the start hook, then tasks, then the stop hook.
///
/// The task a worker took stays in one place from its start until it is
/// published (or, abandoned, until the worker serves again): `task`, with
/// `stage` saying which of its calls comes or runs, and what only some
/// stages need beside it.
struct Worker {
    shared: Arc<PoolShared>,
    step: Step,
    /// The task taken, until it is published (see `publish`) or, abandoned
    /// by a cancel, until the calls its end deferred are made; then the
    /// worker's slot is free for the next.
    task: Option<TaskRef>,
    stage: Stage,
    /// While its work function and end hook run: its table installed, and
    /// it the thread's current task; ended in place when they return.
    run: RunPlace,
    /// When it started, where the pool times its tasks: read right before
    /// each pop, so between tasks it may hold a read for a pop that found
    /// nothing (the next pop reads again).
    started: Option<Started>,
    /// While its `on_done` runs, the thread is marked as reporting it (see
    /// [`Reporting`]); the mark before, to put back after.
    reporting_outer: usize,
    /// The worker holds a slot (taken with a task, kept for the next one).
    holding: bool,
    timed_out: bool,
    may_spin: bool,
}

/// Where a worker's task is.
#[derive(Clone, Copy)]
enum Stage {
    /// No task, or its callbacks have returned, or it was abandoned (a
    /// cancel reported it; `serve` lets it go).
    Done,
    /// Its work function runs.
    Work,
    /// Its end hook runs; the task then ends with what its return decided.
    EndHook(Decided),
    /// It ended: its `on_done` comes next (after the calls restoring the
    /// worker's table deferred), or, without one, its publishing.
    Ended(Report),
    /// Its `on_done` runs; it is published once that returned.
    Reported(Outcome),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    Start,
    Serve,
    Stop,
    Gone,
}

impl ThreadBody for Worker {
    fn next(&mut self) -> ForeignCall {
        match self.stage {
            // (`Work` and `Reported` are never seen here: their calls' return
            // goes to `finish`, which moves the stage on.)
            Stage::Done | Stage::Work | Stage::Reported(_) => {}
            Stage::EndHook(decided) => {
                // The end hook returned: end the task; its report is made
                // after the calls that restoring the table deferred.
                self.end(decided);
                return ForeignCall::Again;
            }
            Stage::Ended(report) => {
                if let Some(call) = self.report(report) {
                    return call;
                }
                if sys::calls_deferred() {
                    // Publishing deferred calls: they come before the next
                    // task is looked for.
                    return ForeignCall::Again;
                }
            }
        }
        loop {
            match self.step {
                Step::Start => {
                    WORKER_OF.with(|w| *w.borrow_mut() = Some(self.shared.clone()));
                    self.step = Step::Serve;
                    self.shared.gate.started();
                    if let Some(start) = self.shared.options.on_thread_start {
                        return ForeignCall::Unary(start, self.hook_data());
                    }
                }
                Step::Serve => match self.serve_again() {
                    Served::Work(call) => return call,
                    // The calls an expiry deferred are made first.
                    Served::Again => return ForeignCall::Again,
                    Served::Leave => {
                        if let Some(call) = self.leaving() {
                            return call;
                        }
                    }
                },
                Step::Stop => {
                    self.leave();
                    self.step = Step::Gone;
                }
                Step::Gone => return ForeignCall::Exit,
            }
        }
    }

    /// The common steps are made here, straight from one call to the next:
    /// a work function returned, so its task's `on_done` comes next; an
    /// `on_done` returned, so the next task's work function comes next.
    /// Anything else (an end hook, calls deferred meanwhile, no task queued)
    /// is left to `next`.
    fn finish(&mut self, code: i32, result: *mut std::ffi::c_void) -> Option<ForeignCall> {
        match self.stage {
            Stage::Work => {
                let task = self.task.as_ref().expect("a task runs");
                let run = self.shared.record_end(task, self.started.as_ref());
                let decided = task.decide(code, result);
                if let Some(hook) = self.shared.options.on_task_end {
                    // The end hook runs next, with the task's table still
                    // installed and the status the task gets; `next` ends
                    // the task after.
                    self.shared.call_task_hook(
                        hook,
                        task,
                        decided.status(),
                        self.started.as_ref(),
                        run,
                    );
                    self.stage = Stage::EndHook(decided);
                    return None;
                }
                match self.end_with_report(decided) {
                    // (A publish here that deferred calls: they come
                    // first, then `next` serves.)
                    Some(report) if !sys::calls_deferred() => self.report(report),
                    // Its report comes after the calls that restoring the
                    // table deferred.
                    Some(report) => {
                        self.stage = Stage::Ended(report);
                        None
                    }
                    None => {
                        self.stage = Stage::Done;
                        None
                    }
                }
            }
            Stage::Reported(outcome) => {
                Reporting::unmark(self.reporting_outer);
                self.publish(outcome);
                if sys::calls_deferred() {
                    return None;
                }
                match self.serve() {
                    Served::Work(call) => Some(call),
                    Served::Again => None,
                    Served::Leave => self.leaving(),
                }
            }
            // A hook returned.
            _ => None,
        }
    }
}

impl Worker {
    /// [`Worker::serve`] outside the common step (see `finish`): at the
    /// thread's start and after its start hook, after a task without
    /// `on_done`, an abandoned task, an end hook or an expiry, or calls that
    /// were deferred.
    #[inline(never)]
    fn serve_again(&mut self) -> Served {
        self.serve()
    }

    fn hook_data(&self) -> *mut std::ffi::c_void {
        self.shared.options.hook_data as *mut std::ffi::c_void
    }

    /// The task ended with `report`: its `on_done` call, made from the start
    /// routine like any foreign call (the outcome is published after it);
    /// without one, the outcome is published at once and None.
    #[inline(always)]
    fn report(&mut self, report: Report) -> Option<ForeignCall> {
        let task = self.task.as_ref().expect("a task ended");
        if let Some(call) = task.done_call(&report) {
            self.reporting_outer = Reporting::mark(task);
            self.stage = Stage::Reported(report.0);
            return Some(call);
        }
        self.publish(report.0);
        None
    }

    /// The worker leaves (see `serve`). What code on this thread set outside
    /// any task goes first, while the stop hook has not run yet. Returns the
    /// stop hook's call, if the pool has one.
    fn leaving(&mut self) -> Option<ForeignCall> {
        overrides::drop_thread_frame();
        sys::retire_thread();
        self.step = Step::Stop;
        let stop = self.shared.options.on_thread_stop?;
        Some(ForeignCall::Unary(stop, self.hook_data()))
    }
}

impl Worker {
    /// Restores the worker's table after its task and ends the task; its
    /// on_done and publishing are made next, by the thread's start routine
    /// (see `next`), and its slot goes back after them.
    #[inline(always)]
    fn end(&mut self, decided: Decided) {
        self.stage = match self.end_with_report(decided) {
            Some(report) => Stage::Ended(report),
            None => Stage::Done,
        };
    }

    /// [`Worker::end`], with its report (None: abandoned) given back rather
    /// than kept in the stage, which the caller sets.
    #[inline(always)]
    fn end_with_report(&mut self, decided: Decided) -> Option<Report> {
        self.run.end_run();
        let task = self.task.as_ref().expect("a task ran");
        let report = task.end(decided)?;
        self.shared.count_returned(report.0.status == ASYNCIFY_OK);
        Some(report)
    }

    /// Publishes the task's outcome after its `on_done` returned (or at once
    /// without one). The calls publishing deferred (a `free_result`) are to
    /// be made before the worker looks for the next task: its callers look
    /// at `sys::calls_deferred` after it.
    fn publish(&mut self, outcome: Outcome) {
        // The worker's reference goes with the publishing (a detached
        // task's handle with it, in one step). Not abandoned, the task gave
        // no slot back: the worker keeps its slot for the next task.
        self.task
            .take()
            .expect("a task reported")
            .after_on_done(outcome);
        self.stage = Stage::Done;
        self.timed_out = false;
        self.may_spin = true;
    }
}

impl Worker {
    /// Waits for a task and starts it (installing its table), or says why
    /// not (see [`Served`]).
    #[inline(always)]
    fn serve(&mut self) -> Served {
        let Worker {
            shared,
            task: taken,
            run,
            started,
            holding,
            timed_out,
            may_spin,
            ..
        } = self;
        if let Some(task) = taken.take() {
            // An abandoned task has ended: the slot taken with it is free for
            // the next task (or goes back below), unless the cancel gave it
            // back already.
            if task.slot_given_back() {
                *holding = false;
                let mut st = shared.lock();
                st.abandoned_off_limit -= 1;
                shared.notify_if_quiet(&st);
            }
            *timed_out = false;
            *may_spin = true;
        }
        // A slot taken while spinning: the gate as that left it.
        let mut spun = None;
        loop {
            // The slot held, while the gate lets it keep it, or a new one
            // while a task is queued (`fresh`: the gate as that left it).
            let fresh = if let Some(after) = spun.take() {
                *holding = true;
                Some(after)
            } else if *holding {
                *holding = shared.gate.keep_slot();
                None
            } else if shared.gate.wants_watcher(shared.gate.load()) {
                // Workers run on every spare CPU already: watch them (unless
                // a watcher does; then go idle) and join if they are slow.
                let after = shared.gate.start_watching().then(|| {
                    shared.watch();
                    shared.gate.take_slot(|| !shared.queue.is_empty())
                });
                *holding = after.is_some_and(|a| a.is_some());
                after.flatten()
            } else {
                let after = shared.gate.take_slot(|| !shared.queue.is_empty());
                *holding = after.is_some();
                after
            };
            let popped = if *holding {
                if shared.times_tasks {
                    // The start of the task it takes is read right before
                    // the pop (so its run time includes its taking and
                    // start, tens of nanoseconds): read after them, the
                    // clock would wait for their cache misses on the entry
                    // and the slot (see `sys::now_ns`).
                    *started = Some(Started::now());
                }
                // The next queued task's slot, written by its submitter on
                // another CPU, is fetched while this one runs: its first
                // touch is otherwise a miss of two lines, which an AMD EPYC
                // waits out (submitting threads 105-137 -> 74-96 ns per
                // task; on a Xeon W1 was no faster, nor slower). Timed, the
                // misses would also come before the end's clock read.
                shared.queue.pop_prefetching()
            } else {
                None
            };
            if *holding && popped.is_none() {
                // Nothing queued: the slot goes back, then one more look (a
                // submit meanwhile may have seen the slot still taken).
                let left = shared.gate.release();
                shared.gate.narrow(left);
                *holding = false;
                if shared.startable() {
                    continue;
                }
            }
            if let Some(task) = popped {
                if let Some(after) = fresh {
                    // A slot just taken: the next worker, if more may start
                    // (see provide_workers). Before the entry is looked at:
                    // a tombstone or an expired task does not end the chain.
                    if !shared.queue.is_empty() {
                        shared.wake_next(after);
                    }
                }
                if task.has_deadline() && task.overdue(Instant::now()) {
                    // Expired here, in this worker's slot. Its callbacks
                    // (free_arg, on_done) are made by the start routine
                    // before this worker looks again, not after it parks.
                    task.expire();
                    shared.tombstones.sub(1);
                    if sys::calls_deferred() {
                        return Served::Again;
                    }
                    continue;
                }
                let Some(snapshot) = task.try_start(true) else {
                    shared.tombstones.sub(1);
                    continue;
                };
                if let Some(started) = started {
                    shared.record_start(&task, started);
                }
                task.begin_run_in(run, snapshot.take());
                if let Some(hook) = shared.options.on_task_start {
                    // Made before the work function, with its table installed.
                    shared.call_task_hook(hook, &task, ASYNCIFY_PENDING, started.as_ref(), 0);
                }
                let (work, arg) = task.work();
                *taken = Some(task);
                self.stage = Stage::Work;
                return Served::Work(ForeignCall::Work(work, arg));
            }
            if *may_spin
                && !*timed_out
                && spin::enabled()
                && shared.gate.start_spinning(spin::max_spinners())
            {
                // Watch the queue briefly before parking; a submit counts this
                // worker as coming and wakes nobody. The slot is taken while
                // still counted: a spinner that stopped counting first would
                // let the submit wake a parked worker for nothing (a futex
                // wake on the submitter's path, and the spinning role moving
                // to the woken worker).
                *may_spin = false;
                spin::spin_until(spin::Shared::SpinOn, || {
                    let w = shared.gate.load();
                    if !w.has_room() || shared.queue.is_empty() {
                        return false;
                    }
                    if shared.gate.wants_watcher(w) {
                        // Stop spinning: watch, or park while a watcher
                        // sees to the queue.
                        return true;
                    }
                    spun = shared.gate.take_slot(|| !shared.queue.is_empty());
                    spun.is_some()
                });
                shared.gate.stop_spinning();
                continue;
            }
            let mut st = shared.lock();
            if *timed_out && !st.shut_down && shared.startable() {
                // A submit since the keep-alive ran out found this worker
                // counted in `threads` and started nobody (under this lock,
                // after its push): serve it instead of leaving.
                *timed_out = false;
                continue;
            }
            if st.shut_down || st.threads - st.abandoned_off_limit > st.limit || *timed_out {
                // Leave the count at once: a submit or a raise of the limit from
                // now on starts a new worker instead of counting on this one.
                st.threads -= 1;
                st.leaving += 1;
                return Served::Leave;
            }
            *may_spin = true;
            if !shared.gate.sleep_or_retry(|| !shared.queue.is_empty()) {
                continue;
            }
            let (guard, wait) = shared
                .work_ready
                .wait_timeout(st, shared.options.keep_alive)
                .unwrap_or_else(|e| e.into_inner());
            shared.gate.woke();
            drop(guard);
            *timed_out = wait.timed_out();
        }
    }

    /// The stop hook has returned: only now is this worker gone, so a
    /// shutdown that saw it go has no hook of the pool left to wait for. The
    /// thread is handed to whoever joins the pool's workers, or detaches
    /// itself when nobody will.
    fn leave(&mut self) {
        WORKER_OF.with(|w| w.borrow_mut().take());
        let mut st = self.shared.lock();
        if st.orphaned {
            Thread::current().detach();
        } else {
            st.exited.push(Thread::current());
        }
        st.leaving -= 1;
        self.shared.notify_if_quiet(&st);
        drop(st);
        self.shared.give_back_timer_if_orphaned();
    }
}

impl Pool {
    /// A pool that runs at most `max_workers` callables at once (0 pauses it,
    /// `u32::MAX` is unbounded), with the other options at their defaults.
    pub fn new(max_workers: u32) -> Pool {
        Pool::with_options(PoolOptions {
            max_workers,
            ..PoolOptions::default()
        })
    }

    /// A pool made as `options` say.
    pub fn with_options(options: PoolOptions) -> Pool {
        crate::fork::watch();
        Pool {
            shared: Arc::new_cyclic(|me| PoolShared {
                me: me.clone(),
                queue: Queue::new(),
                gate: Gate::new(options.max_workers, spin::spare_cpus()),
                tombstones: Counter::default(),
                state: Padded(Mutex::new(State {
                    limited: HashMap::new(),
                    waiting: 0,
                    expiring: 0,
                    limit: options.max_workers,
                    threads: 0,
                    leaving: 0,
                    abandoned_off_limit: 0,
                    spawned: 0,
                    shut_down: false,
                    exited: Vec::new(),
                    orphaned: false,
                    quiet_waiters: 0,
                })),
                work_ready: Padded(Condvar::new()),
                quiet: Condvar::new(),
                latency: options.record_latency.then(Box::default),
                times_tasks: options.record_latency
                    || options.on_task_start.is_some()
                    || options.on_task_end.is_some(),
                options,
                counters: Counters::default(),
                uses_timer: AtomicBool::new(false),
            }),
        }
    }

    /// Queues `spec` to run with `snapshot` installed and returns its handle.
    /// A task with a limiter waits for it first (see [`crate::limiter`]).
    /// Never blocks; on error nothing runs and no callback is called.
    pub fn submit(&self, spec: TaskSpec, snapshot: Table) -> Result<u64, Error> {
        let shared = &self.shared;
        // A limiter with room admits the task before it exists: it then
        // starts out queued and holding its place, and needs nothing kept
        // for a later admission.
        let limiter = spec.limiter_ref();
        let admitted_now = limiter.is_some_and(|l| l.try_acquire());
        // For a refused submit.
        let give_back_place = || {
            if let (true, Some(limiter)) = (admitted_now, limiter) {
                limiter.undo_acquire();
            }
        };
        let (task, handle) = Task::insert(spec, snapshot, shared, shared.times_tasks, admitted_now)
            .inspect_err(|_| give_back_place())?;
        // A task its limiter admitted at once into a pool that uses the
        // timer already is queued like a plain one.
        let plain = !task.has_deadline()
            && (limiter.is_none() || admitted_now && shared.uses_timer.load(Ordering::Relaxed));
        if !plain {
            return self.submit_scheduled(task, handle, admitted_now);
        }
        self.enqueue(task, handle)
            .inspect_err(|_| give_back_place())
    }

    /// [`Pool::submit`] of a task that uses none of the rarer options (no
    /// limiter, start deadline, free functions or completion queue): the
    /// same, with less to look at.
    pub fn submit_plain(&self, calls: PlainCalls, snapshot: Table) -> Result<u64, Error> {
        let shared = &self.shared;
        let (task, handle) = Task::insert_plain(calls, None, snapshot, shared, shared.times_tasks)?;
        self.enqueue(task, handle)
    }

    /// [`Pool::submit_plain`] of a task through `limiter`. When the limiter
    /// admits it at once into a pool that uses the timer already (as from
    /// its first task with a limiter on), it is queued like a plain task
    /// that holds its place; else it takes [`Pool::submit`]'s path.
    pub fn submit_plain_limited(
        &self,
        calls: PlainCalls,
        limiter: &Arc<Limiter>,
        snapshot: Table,
    ) -> Result<u64, Error> {
        let shared = &self.shared;
        if !shared.uses_timer.load(Ordering::Relaxed) || !limiter.try_acquire() {
            let spec = TaskSpec::new(calls.work, calls.arg)
                .limiter(Some(limiter))
                .on_done(calls.on_done, calls.on_done_data)
                .detached(calls.detached);
            return self.submit(spec, snapshot);
        }
        let timed = shared.times_tasks;
        let (task, handle) = Task::insert_plain(calls, Some(limiter), snapshot, shared, timed)
            .inspect_err(|_| limiter.undo_acquire())?;
        self.enqueue(task, handle)
            .inspect_err(|_| limiter.undo_acquire())
    }

    /// Queues a task just inserted (its reference goes to the queue: from
    /// now on a worker may run the task and touch its slot, so this thread
    /// leaves it alone, and the handle names it where needed), then wakes a
    /// worker if one is needed. Refused, the handle is released.
    #[inline(always)]
    fn enqueue(&self, task: TaskRef, handle: u64) -> Result<u64, Error> {
        let shared = &self.shared;
        let pushed = if shared.options.max_queued > 0 {
            // Counted under the lock, one submit after another.
            let st = shared.lock();
            shared.accepts(&st).and_then(|()| shared.push(task))
        } else {
            shared.push(task)
        };
        let after = match pushed {
            Ok(after) => after,
            Err(e) => {
                let _ = tasks().remove(handle);
                return Err(e);
            }
        };
        shared.counters.submitted.add(1);
        if shared.wake_next(after) > 0 {
            shared.withdraw_if_unserved(handle)?;
        }
        Ok(handle)
    }

    /// [`Pool::submit`] of a task with a start deadline, waiting for its
    /// limiter, or the first of its pool admitted by a limiter: the pool
    /// becomes a user of the timer; a task its limiter admitted at once
    /// enters the queue like any task, else it waits for its limiter, kept
    /// aside.
    fn submit_scheduled(
        &self,
        task: TaskRef,
        handle: u64,
        admitted_now: bool,
    ) -> Result<u64, Error> {
        let shared = &self.shared;
        // Borrowed from the task, which lives through this call (no count
        // of the limiter's Arc taken per submit).
        let limiter = task.limiter();
        // What the timer or the limiter will refer to, when either will: a
        // task its limiter admitted at once and without a deadline needs
        // none (no allocation).
        let waits = limiter.is_some() && !admitted_now;
        let scheduled = (waits || task.has_deadline()).then(|| task.schedule());
        let refuse = |e: Error, release_handle: bool| {
            if release_handle {
                if scheduled.is_some() {
                    task.unschedule();
                }
                let _ = tasks().remove(handle);
            }
            if let (true, Some(limiter)) = (admitted_now, limiter) {
                limiter.undo_acquire();
            }
            Err(e)
        };
        let mut st = shared.lock();
        if let Err(e) = shared.accepts(&st) {
            drop(st);
            return refuse(e, true);
        }
        // A user of the timer from the first accepted task on; under the
        // lock, so that the shutdown that gives it back comes after.
        if !shared.uses_timer.swap(true, Ordering::Relaxed) {
            timer().add_user();
        }
        shared.counters.submitted.add(1);
        if let (Some(limiter), Some(scheduled)) = (limiter, scheduled.as_ref().filter(|_| waits)) {
            st.limited.insert(Ref::addr(&task), task.clone());
            st.waiting += 1;
            drop(st);
            // Counted as waiting by its limiter (and admitted at once if it
            // has room) before its deadline can expire it.
            limiter.enqueue(&(scheduled.clone() as Arc<dyn Waiter>));
            scheduled.arm_deadline();
            return Ok(handle);
        }
        let after = shared.push(task.clone()).expect("accepted under the lock");
        drop(st);
        if let Some(scheduled) = &scheduled {
            scheduled.arm_deadline();
        }
        if shared.wake_next(after) > 0 {
            // Withdrawn (started, so unscheduled, and its handle released).
            if let Err(e) = shared.withdraw_if_unserved(handle) {
                return refuse(e, false);
            }
        }
        Ok(handle)
    }

    /// Changes the limit. Raising it starts waiting tasks at once; lowering it
    /// interrupts nothing (extra workers leave as they become idle).
    pub fn set_max_workers(&self, n: u32) {
        let mut st = self.shared.lock();
        if n > st.limit && !self.shared.queue.is_empty() {
            // The tasks waiting start at once, not after a watcher's look.
            self.shared.gate.widen();
        }
        st.limit = n;
        self.shared.gate.set_limit(n);
        let provide = self.shared.provide_workers(&mut st);
        let too_many = st.threads > n;
        drop(st);
        if too_many {
            // Parked workers above the limit should leave now.
            self.shared.work_ready.notify_all();
        }
        self.shared.wake_and_spawn(provide);
    }

    /// The limit.
    pub fn max_workers(&self) -> u32 {
        self.shared.lock().limit
    }

    /// The queue wait (submit to start) and run time (start to the work
    /// function's return) of the tasks so far, when the pool records them.
    pub fn latency(&self) -> Option<(Summary, Summary)> {
        let latency = self.shared.latency.as_ref()?;
        Some((latency.queue_wait.summary(), latency.run.summary()))
    }

    /// The pool's counters.
    pub fn stats(&self) -> Stats {
        let st = self.shared.lock();
        let c = &self.shared.counters;
        Stats {
            limit: st.limit,
            threads: st.threads + st.leaving,
            idle_threads: self.shared.gate.idle().sleeping(),
            queued: self.shared.queued() + st.waiting as u64,
            running: u64::from(self.shared.gate.load().busy() + st.abandoned_off_limit),
            submitted: c.submitted.sum(),
            completed: c.completed.sum(),
            failed: c.failed.sum(),
            cancelled: c.cancelled.sum(),
            abandoned: c.abandoned.sum(),
            expired: c.expired.sum(),
        }
    }

    /// Refuses new submissions, cancels queued tasks (on this thread), and
    /// waits up to `timeout` (None: forever) for running callables, their
    /// callbacks and the exit of every worker (its stop hook included), then
    /// joins the workers. Returns true when none is left; may be called again. From a worker of this pool
    /// it would wait for itself: [`Error::WouldDeadlock`], nothing changes.
    pub fn shutdown(&self, timeout: Option<Duration>) -> Result<bool, Error> {
        let shared = &self.shared;
        let me = Arc::as_ptr(shared) as usize;
        if on_worker_of(shared) || REPORTING_EXPIRY_OF.with(Cell::get) == me {
            return Err(Error::WouldDeadlock);
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        let limited: Vec<TaskRef> = {
            let mut st = shared.lock();
            st.shut_down = true;
            shared.gate.shut_down();
            shared.work_ready.notify_all();
            // Taken whole, not drained: a drained map keeps its memory, and
            // the default pool is never dropped.
            std::mem::take(&mut st.limited).into_values().collect()
        };
        // Every submit that saw the gate open has pushed its task once this
        // returns: the ones no worker took are drained here.
        shared.gate.wait_for_submits();
        shared.drain();
        for task in limited {
            task.cancel();
        }
        // Running callables (abandoned ones too) and, with thread hooks,
        // every worker thread: its stop hook is a callback of this pool too.
        let mut st = shared.lock();
        while !shared.is_quiet(&st) {
            // Idle workers of a pool without hooks run no user code on their
            // way out and leave as soon as they wake: they are waited for
            // whatever the timeout, so that an idle pool shuts down with OK
            // (joined) even with a timeout of 0.
            let only_idle_workers_left = shared.gate.load().busy() == 0
                && st.abandoned_off_limit == 0
                && !shared.has_thread_hooks();
            let until = deadline.filter(|_| !only_idle_workers_left);
            if until.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
            st.quiet_waiters += 1;
            st = match until {
                None => shared.quiet.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    shared
                        .quiet
                        .wait_timeout(st, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
            st.quiet_waiters -= 1;
        }
        let exited = std::mem::take(&mut st.exited);
        drop(st);
        exited.into_iter().for_each(Thread::join);
        if shared.uses_timer.swap(false, Ordering::Relaxed) {
            // The last pool that used the timer joins its thread.
            timer().remove_user();
        }
        Ok(true)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Queued tasks hold the pool: cancelling them breaks that cycle. From
        // a worker of this pool this is refused, and the queue drains as the
        // workers run it.
        let _ = self.shutdown(Some(Duration::ZERO));
        // Workers still there finish on their own and detach themselves; the
        // ones that already left are joined here.
        let exited = {
            let mut st = self.shared.lock();
            st.orphaned = true;
            std::mem::take(&mut st.exited)
        };
        exited.into_iter().for_each(Thread::join);
        // Quiet since the shutdown above looked (or it was refused here).
        self.shared.give_back_timer_if_orphaned();
    }
}

/// One default pool per fork epoch: a forked child gets a fresh one.
static DEFAULT_POOLS: [OnceCell<Pool>; 256] = [const { OnceCell::new() }; 256];

/// The process-wide default pool, created on first use with a limit of 8 or
/// `ASYNCIFY_MAX_WORKERS`.
pub fn default_pool() -> &'static Pool {
    DEFAULT_POOLS[usize::from(fork_epoch())].get_or_init(|| {
        crate::fork::watch();
        let limit = std::env::var("ASYNCIFY_MAX_WORKERS")
            .ok()
            .and_then(|v| v.trim().parse::<u32>().ok())
            .unwrap_or(DEFAULT_MAX_WORKERS);
        let record_latency = std::env::var_os("ASYNCIFY_RECORD_LATENCY").is_some_and(|v| v == "1");
        Pool::with_options(PoolOptions {
            max_workers: limit,
            record_latency,
            ..PoolOptions::default()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::{worker_name, Pool};
    use crate::limiter::{Limiter, LimiterOptions};
    use crate::table::Table;
    use crate::task::{self, TaskSpec};

    extern "C" fn never(_: *mut std::ffi::c_void, _: *mut *mut std::ffi::c_void) -> i32 {
        panic!("a task that left before it started ran")
    }

    #[test]
    fn tasks_that_stop_waiting_for_their_limiter_leave_the_pool_at_once() {
        let pool = Pool::new(2);
        let paused = Limiter::new(LimiterOptions {
            max_running: 0,
            ..LimiterOptions::default()
        })
        .unwrap();
        let spec = || TaskSpec::new(never, std::ptr::null_mut()).limiter(Some(&paused));
        for _ in 0..100 {
            let h = pool.submit(spec(), Table::new()).unwrap();
            task::cancel(h).unwrap();
            task::release(h).unwrap();
        }
        let deadline = spec().start_within_ms(1);
        let h = pool.submit(deadline, Table::new()).unwrap();
        let seen = task::wait(h, None, false).unwrap();
        assert_eq!(seen.status, crate::status::ASYNCIFY_EXPIRED);
        task::release(h).unwrap();
        let st = pool.shared.lock();
        assert!(st.limited.is_empty(), "{} left behind", st.limited.len());
        assert_eq!(st.waiting, 0);
        drop(st);
        assert_eq!(pool.stats().cancelled, 100);
        assert_eq!(pool.stats().expired, 1);
    }

    #[test]
    fn worker_names_keep_their_number_within_fifteen_bytes() {
        assert_eq!(worker_name("asyncify", 3), "asyncify-3");
        assert_eq!(
            worker_name("a-very-long-thread-name-prefix", 12),
            "a-very-long--12"
        );
        assert_eq!(worker_name("ééééééééé", 7), "éééééé-7");
        assert!(
            worker_name("x", 123_456_789_012_345_678).len() > 15,
            "a number alone is never cut"
        );
    }
}
