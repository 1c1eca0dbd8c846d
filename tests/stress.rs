//! Exactly-once accounting under races, through the C ABI, at scale: every
//! completion, cancellation and shutdown rule of the API at once.
//!
//! Eight driver threads make random interleavings of submit, cancel, release,
//! poll, wait, wait_any, resize, table changes, completion-queue drains and
//! pool shutdowns on three pools: the default pool and two pools that drivers
//! retire (`asyncify_pool_free` while their tasks run) and replace at random,
//! with random options (queue bounds, `RELEASE_SLOT_ON_ABANDON`, short
//! keep-alives, thread hooks). Work functions, `on_done`, `free_arg` and
//! `free_result` themselves submit, wait (inline runs) and cancel. At the end
//! of each round, with every pool quiet, the test checks for every task:
//!
//! - its outcome was reported exactly once (`on_done` or the queue), and every
//!   status anyone saw (poll, wait, cancel) is that one outcome;
//! - `fn` ran at most once, and ran exactly when the outcome says so;
//! - `free_arg` was called exactly for the tasks that never ran (before their
//!   `on_done`, 5.1) and the abandoned ones (after `fn` returned, 5.2);
//! - the result moved exactly once: to `on_done`, the queue or a poll/wait,
//!   or else to `free_result`, and never when `fn` set none;
//! - `asyncify_stats` of each pool equals the counts the test kept;
//! - no handle is live (`asyncify::task::live_handles`), and worker threads'
//!   own tables are empty whenever no task is installed (`on_done` on a
//!   worker, `on_thread_stop`); each task saw exactly its submitter's table.
//!
//! Limiters and start deadlines join the races: three
//! limiter slots, shared by every pool, hold limiters that drivers resize
//! (`asyncify_limiter_set`: paused, small caps, no cap, real token rates) and
//! replace at random, freeing the old one while its tasks still wait or run
//! (or keeping it to check at the end of the round). Tasks take a limiter
//! and a start deadline of 1 to 50 ms at random, so expiries race starts,
//! inline runs, cancels and pool shutdowns. Then also:
//!
//! - an expired task never ran, got `free_arg` once, then `on_done(EXPIRED)`
//!   on a library thread (the timer or a worker), and counts in `expired`;
//! - no more callables of a limiter run at once than the highest cap it had;
//! - once quiet, each limiter kept has `waiting` and `running` 0 and
//!   `admitted + expired + cancelled_waiting` equal to the tasks accepted
//!   with it; its counters never look absurd while the drivers run.
//!
//! A last phase races `asyncify_shutdown` of the default pool with submitters.
//!
//! Settings (environment): `ASYNCIFY_STRESS_TASKS` (default 100,000 accepted
//! tasks), `ASYNCIFY_STRESS_SECONDS` (run rounds until that time has passed
//! instead), `ASYNCIFY_STRESS_SEED`. `make test` runs the default, `make
//! stress` 10,000,000 tasks and a timed run.

// Calls the C ABI as a C program would: raw pointers, hence unsafe blocks.
#![allow(unsafe_code)]

use std::cell::{Cell, RefCell};
use std::ffi::c_void;
use std::mem::{size_of, zeroed};
use std::ptr::{null, null_mut};
use std::sync::atomic::{
    AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering::SeqCst,
};
use std::sync::{Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use asyncify::ffi::context::*;
use asyncify::ffi::cq::*;
use asyncify::ffi::limiter::*;
use asyncify::ffi::overrides::*;
use asyncify::ffi::pool::*;
use asyncify::ffi::task::*;
use asyncify::status::*;

const DRIVERS: usize = 8;
const ROUND_MAX: usize = 500_000;
const MAX_GENS: usize = 4096;
const RING: usize = 256;
const HELD_MAX: usize = 48;
const MAX_LIM_GENS: usize = 4096;
const LIM_SLOTS_N: usize = 3;

/// A number from the environment, decimal or `0x` hex (as seeds are printed).
fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?.trim().replace('_', "");
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

// ---- violations: recorded (callbacks must not panic across the ABI), checked at the end ----

static VIOLATIONS: AtomicU64 = AtomicU64::new(0);
static VIOLATION_TEXT: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn violation(text: String) {
    VIOLATIONS.fetch_add(1, SeqCst);
    let mut v = VIOLATION_TEXT.lock().unwrap_or_else(|e| e.into_inner());
    if v.len() < 30 {
        v.push(text);
    }
}

macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            violation(format!("{}:{}: {}: {}", file!(), line!(), stringify!($cond), format!($($fmt)+)));
        }
    };
}

// ---- figures ----

#[derive(Default)]
struct Figures {
    accepted: AtomicU64,
    rejected_busy: AtomicU64,
    rejected_shut_down: AtomicU64,
    ran: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    never_ran: AtomicU64,
    abandoned: AtomicU64,
    cancel_calls: AtomicU64,
    cancel_too_late: AtomicU64,
    released_pending: AtomicU64,
    stale_refused: AtomicU64,
    polls: AtomicU64,
    waits: AtomicU64,
    wait_timeouts: AtomicU64,
    wait_anys: AtomicU64,
    resizes: AtomicU64,
    pauses: AtomicU64,
    retired: AtomicU64,
    submits_from_callbacks: AtomicU64,
    cancels_from_callbacks: AtomicU64,
    inline_runs: AtomicU64,
    cq_delivered: AtomicU64,
    results_to_on_done: AtomicU64,
    results_to_poll: AtomicU64,
    results_freed: AtomicU64,
    args_freed: AtomicU64,
    scope_mismatches: AtomicU64,
    detached_gone: AtomicU64,
    cancel_requested_seen: AtomicU64,
    rounds: AtomicU64,
    limiters: AtomicU64,
    limiter_sets: AtomicU64,
    limiters_freed_in_use: AtomicU64,
    limited: AtomicU64,
    deadlines: AtomicU64,
    expired: AtomicU64,
    expired_waiting: AtomicU64,
    cancelled_waiting: AtomicU64,
    limiter_stats_reads: AtomicU64,
}

static FIG: OnceLock<Figures> = OnceLock::new();

fn fig() -> &'static Figures {
    FIG.get_or_init(Figures::default)
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, SeqCst);
}

// ---- per-task records: `arg` and `on_done_data` are the record's index + 1 ----

const M_ON_DONE: u32 = 1;
const M_CQ: u32 = 2;
const M_DETACHED: u32 = 4;
const M_SETS_RESULT: u32 = 8;
const M_EMPTY: u32 = 16;
const M_CONTEXT: u32 = 32;
const M_LIMITER: u32 = 64;
const M_DEADLINE: u32 = 128;

#[derive(Default)]
struct Rec {
    gen: AtomicU32,
    mode: AtomicU32,
    code: AtomicI32,
    seed: AtomicU64,
    expect_seq: AtomicU64,
    expect_count: AtomicU32,
    handle: AtomicU64,
    accepted: AtomicBool,
    ran: AtomicU32,
    ran_on: AtomicU64,
    fn_end: AtomicU64,
    arg_freed: AtomicU32,
    arg_freed_at: AtomicU64,
    result_freed: AtomicU32,
    delivered: AtomicU32,
    done_calls: AtomicU32,
    done_status: AtomicI32,
    done_at: AtomicU64,
    cq_calls: AtomicU32,
    cq_status: AtomicI32,
    seen: AtomicU32,
    cancel_seen: AtomicU32,
    /// The limiter generation it was submitted with (with `M_LIMITER`).
    lim_gen: AtomicU32,
}

impl Rec {
    /// Back to a fresh record, through a shared reference (every field is atomic).
    fn reset_all(&self) {
        for a in [&self.gen, &self.mode, &self.expect_count, &self.ran]
            .into_iter()
            .chain([
                &self.arg_freed,
                &self.result_freed,
                &self.delivered,
                &self.done_calls,
                &self.cq_calls,
                &self.seen,
                &self.cancel_seen,
                &self.lim_gen,
            ])
        {
            a.store(0, SeqCst);
        }
        for a in [
            &self.seed,
            &self.expect_seq,
            &self.handle,
            &self.ran_on,
            &self.fn_end,
            &self.arg_freed_at,
            &self.done_at,
        ] {
            a.store(0, SeqCst);
        }
        self.code.store(0, SeqCst);
        self.done_status.store(-100, SeqCst);
        self.cq_status.store(-100, SeqCst);
        self.accepted.store(false, SeqCst);
    }
}

static RECS: OnceLock<Vec<Rec>> = OnceLock::new();
static NEXT_REC: AtomicUsize = AtomicUsize::new(0);
static REC_CAP: AtomicUsize = AtomicUsize::new(0);
/// Accepted submissions still allowed this round.
static BUDGET: AtomicU64 = AtomicU64::new(0);
/// A global order of events, to check "before" and "after".
static CLOCK: AtomicU64 = AtomicU64::new(1);

fn tick() -> u64 {
    CLOCK.fetch_add(1, SeqCst)
}

fn recs() -> &'static [Rec] {
    RECS.get().expect("records allocated")
}

fn rec(p: *mut c_void) -> &'static Rec {
    &recs()[p as usize - 1]
}

fn arg_of(index: usize) -> *mut c_void {
    (index + 1) as *mut c_void
}

// ---- pools: slot 0 is the default pool; slots 1 and 2 are retired and replaced at random ----

#[derive(Default)]
struct Gen {
    accepted: AtomicU64,
    freed: AtomicBool,
    stops_after_free: AtomicU64,
    live: AtomicBool,
}

static GENS: OnceLock<Vec<Gen>> = OnceLock::new();
static NEXT_GEN: AtomicUsize = AtomicUsize::new(1);

fn gens() -> &'static [Gen] {
    GENS.get_or_init(|| (0..MAX_GENS).map(|_| Gen::default()).collect())
}

/// (pool pointer as an address, generation). Read-locked around each call that
/// uses the pointer, so a retirement (write lock) knows nobody holds it.
static SLOTS: [RwLock<(usize, u32)>; 3] = [
    RwLock::new((0, 0)),
    RwLock::new((0, 0)),
    RwLock::new((0, 0)),
];

fn slot_read(i: usize) -> std::sync::RwLockReadGuard<'static, (usize, u32)> {
    SLOTS[i].read().unwrap_or_else(|e| e.into_inner())
}

fn pool_ptr(addr: usize) -> *mut asyncify_pool {
    addr as *mut asyncify_pool
}

fn stats_of(pool: *mut asyncify_pool) -> asyncify_pool_stats {
    // SAFETY: asyncify_pool_stats is plain old data; all-zero is valid.
    let mut s: asyncify_pool_stats = unsafe { zeroed() };
    s.struct_size = size_of::<asyncify_pool_stats>() as u32;
    let st = asyncify_stats(pool, &mut s);
    assert_eq!(st, ASYNCIFY_OK, "asyncify_stats");
    s
}

// ---- thread-local context of the callbacks ----

static THREAD_IDS: AtomicU64 = AtomicU64::new(1);

thread_local! {
    static DRIVER: Cell<bool> = const { Cell::new(false) };
    static HAS_LOCAL_KEY: Cell<bool> = const { Cell::new(false) };
    static IN_FN: Cell<u32> = const { Cell::new(0) };
    static CANCELLING: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
    static SHUTTING: Cell<u32> = const { Cell::new(0) };
    static THREAD_ID: u64 = THREAD_IDS.fetch_add(1, SeqCst);
    static RNG: Cell<u64> = Cell::new(seed() ^ THREAD_ID.with(|t| *t).wrapping_mul(0x9E37_79B9_7F4A_7C15));
}

static SEED: AtomicU64 = AtomicU64::new(0);

fn seed() -> u64 {
    SEED.load(SeqCst)
}

fn rand() -> u64 {
    RNG.with(|r| {
        // splitmix64
        let mut z = r.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        r.set(z);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

fn below(n: u64) -> u64 {
    rand() % n
}

fn chance(percent: u64) -> bool {
    below(100) < percent
}

fn thread_id() -> u64 {
    THREAD_ID.with(|t| *t)
}

// ---- the calling thread's table, as the tasks will check it ----

fn get_seq() -> u64 {
    let mut buf = [0u8; 8];
    let mut len = 0usize;
    let s = asyncify_override_get(c"seq".as_ptr(), buf.as_mut_ptr().cast(), 8, &mut len);
    if s == ASYNCIFY_E_NOT_FOUND {
        return 0;
    }
    check!(s == ASYNCIFY_OK && len == 8, "get seq: {s}, len {len}");
    u64::from_le_bytes(buf)
}

fn set_seq(v: u64) {
    let b = v.to_le_bytes();
    let s = asyncify_override_set(c"seq".as_ptr(), b.as_ptr().cast(), 8);
    check!(s == ASYNCIFY_OK, "set seq: {s}");
}

fn table_count() -> u32 {
    let mut n = usize::MAX;
    let s = asyncify_override_count(&mut n);
    check!(s == ASYNCIFY_OK, "count: {s}");
    n as u32
}

/// Keys of this thread that a snapshot leaves out: drivers keep one local key.
fn local_keys() -> u32 {
    u32::from(HAS_LOCAL_KEY.with(Cell::get) && IN_FN.with(Cell::get) == 0)
}

// ---- the handle ring: recent handles, for cancels from anywhere ----

static RING_SLOTS: [AtomicU64; RING] = [const { AtomicU64::new(0) }; RING];
static RING_NEXT: AtomicUsize = AtomicUsize::new(0);

fn ring_push(h: u64) {
    RING_SLOTS[RING_NEXT.fetch_add(1, SeqCst) % RING].store(h, SeqCst);
}

/// The last child a task waits for (and may run inline).
static WAITED_CHILD: AtomicU64 = AtomicU64::new(0);

fn ring_pick() -> u64 {
    if chance(25) {
        return WAITED_CHILD.load(SeqCst);
    }
    RING_SLOTS[below(RING as u64) as usize].load(SeqCst)
}

/// Cancels `h`, noting that this thread is the one that may run its on_done.
fn cancel(h: u64) -> asyncify_status {
    bump(&fig().cancel_calls);
    CANCELLING.with(|c| c.borrow_mut().push(h));
    let s = asyncify_cancel(h);
    CANCELLING.with(|c| c.borrow_mut().pop());
    s
}

fn cancel_from_callback() {
    let h = ring_pick();
    if h == 0 {
        return;
    }
    bump(&fig().cancels_from_callbacks);
    let s = cancel(h);
    check!(
        matches!(
            s,
            ASYNCIFY_CANCELLED
                | ASYNCIFY_OK
                | ASYNCIFY_FAILED
                | ASYNCIFY_EXPIRED
                | ASYNCIFY_E_INVALID_HANDLE
        ),
        "cancel of a ring handle returned {s}"
    );
}

fn note_cancel(r: &Rec, s: asyncify_status) {
    match s {
        ASYNCIFY_CANCELLED | ASYNCIFY_OK | ASYNCIFY_FAILED | ASYNCIFY_EXPIRED => {
            r.cancel_seen.fetch_or(1 << s, SeqCst);
            if s != ASYNCIFY_CANCELLED {
                bump(&fig().cancel_too_late);
            }
        }
        _ => {}
    }
}

// ---- the callbacks ----

extern "C" fn work(arg: *mut c_void, out: *mut *mut c_void) -> i32 {
    let r = rec(arg);
    IN_FN.with(|d| d.set(d.get() + 1));
    let runs = r.ran.fetch_add(1, SeqCst);
    check!(runs == 0, "task {arg:?} ran twice");
    let limited = (r.mode.load(SeqCst) & M_LIMITER != 0)
        .then(|| &lim_gens()[r.lim_gen.load(SeqCst) as usize]);
    if let Some(g) = limited {
        let now = g.running_now.fetch_add(1, SeqCst) + 1;
        g.peak.fetch_max(now, SeqCst);
        let cap = g.cap_ever.load(SeqCst);
        check!(
            now <= cap,
            "task {arg:?}: {now} callables of its limiter run at once, its highest cap is {cap}"
        );
    }
    r.ran_on.store(thread_id(), SeqCst);
    check!(
        r.arg_freed.load(SeqCst) == 0,
        "task {arg:?} runs after its arg was freed"
    );
    // The task sees exactly its submitter's table at submit time.
    let seq = get_seq();
    let want = r.expect_seq.load(SeqCst);
    check!(
        seq == want,
        "task {arg:?} sees seq {seq}, submitted with {want}"
    );
    let n = table_count();
    let want_n = r.expect_count.load(SeqCst);
    check!(
        n == want_n,
        "task {arg:?} sees {n} keys, submitted with {want_n}"
    );

    let mut x = r.seed.load(SeqCst);
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    // Scribble on the task's own table: none of it may outlive the task.
    set_seq(next() | 1);
    let junk = next().to_le_bytes();
    asyncify_override_set(c"junk".as_ptr(), junk.as_ptr().cast(), 8);
    if next() % 3 == 0 {
        let mut token = 0;
        asyncify_scope_enter(&mut token);
        set_seq(next() | 1);
    }
    if next() % 2 == 0 {
        asyncify_override_remove(c"junk".as_ptr());
    }
    // Submit from inside a task, sometimes waiting for it (a queued task of
    // the same pool is run inline, 5.4).
    if next() % 100 < 12 {
        if let Some((h, child)) = submit_one(None) {
            bump(&fig().submits_from_callbacks);
            if next() % 2 == 0 {
                // Drivers like to cancel this one: a task that may be running
                // inline, in this task's slot.
                WAITED_CHILD.store(h, SeqCst);
                let s = asyncify_wait(h, (next() % 3) as i64, null_mut(), null_mut());
                check!(
                    matches!(
                        s,
                        ASYNCIFY_OK
                            | ASYNCIFY_FAILED
                            | ASYNCIFY_CANCELLED
                            | ASYNCIFY_EXPIRED
                            | ASYNCIFY_TIMEOUT
                            | ASYNCIFY_E_INVALID_HANDLE
                    ),
                    "wait in a task: {s}"
                );
                if matches!(
                    s,
                    ASYNCIFY_OK | ASYNCIFY_FAILED | ASYNCIFY_CANCELLED | ASYNCIFY_EXPIRED
                ) {
                    child.seen.fetch_or(1 << s, SeqCst);
                }
                if child.ran_on.load(SeqCst) == thread_id() {
                    bump(&fig().inline_runs);
                }
            }
            release_owned(h, child);
        }
    }
    if next() % 100 < 4 {
        cancel_from_callback();
    }
    let spin = (r.seed.load(SeqCst) >> 40) & 0xff;
    let spin_us = match spin {
        0..=127 => 0,
        128..=239 => spin % 20,
        _ => 200 + spin * 3,
    };
    if spin_us > 0 {
        let until = Instant::now() + Duration::from_micros(spin_us);
        while Instant::now() < until {
            if asyncify_cancel_requested() {
                bump(&fig().cancel_requested_seen);
                break;
            }
            std::hint::spin_loop();
        }
    }
    if r.mode.load(SeqCst) & M_SETS_RESULT != 0 {
        // SAFETY: `out` is the library's valid result slot for this call.
        unsafe { *out = arg };
    }
    if let Some(g) = limited {
        g.running_now.fetch_sub(1, SeqCst);
    }
    r.fn_end.store(tick(), SeqCst);
    IN_FN.with(|d| d.set(d.get() - 1));
    r.code.load(SeqCst)
}

extern "C" fn on_done(data: *mut c_void, h: u64, status: i32, result: *mut c_void, code: i32) {
    let r = rec(data);
    let calls = r.done_calls.fetch_add(1, SeqCst);
    check!(calls == 0, "on_done of task {data:?} called twice");
    r.done_status.store(status, SeqCst);
    let known = r.handle.load(SeqCst);
    check!(
        known == 0 || known == h,
        "on_done got handle {h:x}, task has {known:x}"
    );
    match status {
        ASYNCIFY_OK | ASYNCIFY_FAILED => {
            check!(
                r.ran.load(SeqCst) == 1,
                "on_done({status}) but fn never ran"
            );
            check!(
                r.fn_end.load(SeqCst) != 0,
                "on_done({status}) before fn returned"
            );
            let want = (r.code.load(SeqCst) != 0) as i32 * 2;
            check!(
                status == want && code == r.code.load(SeqCst),
                "status {status} code {code}"
            );
            let sets = r.mode.load(SeqCst) & M_SETS_RESULT != 0;
            check!(
                result == if sets { data } else { null_mut() },
                "on_done result {result:?}"
            );
            if !result.is_null() {
                r.delivered.fetch_add(1, SeqCst);
                bump(&fig().results_to_on_done);
            }
            check!(
                !DRIVER.with(Cell::get),
                "on_done(OK/FAILED) on a driver thread"
            );
            if IN_FN.with(Cell::get) == 0 {
                // On a worker, after the worker's own table was restored.
                let n = table_count();
                check!(n == 0, "on_done on a worker sees {n} keys");
            }
        }
        ASYNCIFY_CANCELLED => {
            check!(
                result.is_null() && code == 0,
                "cancelled with a result or code"
            );
            let here = CANCELLING.with(|c| c.borrow().contains(&h)) || SHUTTING.with(Cell::get) > 0;
            check!(
                here,
                "on_done(CANCELLED) not on the cancelling or shutting-down thread"
            );
        }
        ASYNCIFY_EXPIRED => {
            check!(
                result.is_null() && code == 0,
                "expired with a result or code"
            );
            check!(
                r.mode.load(SeqCst) & M_DEADLINE != 0,
                "on_done(EXPIRED) of task {data:?}, submitted without a deadline"
            );
            check!(r.ran.load(SeqCst) == 0, "on_done(EXPIRED) but fn ran");
            check!(
                r.arg_freed.load(SeqCst) == 1,
                "on_done(EXPIRED) before free_arg (8.3 says free_arg, then on_done)"
            );
            check!(
                !DRIVER.with(Cell::get),
                "on_done(EXPIRED) on a driver thread (the timer or a worker notices)"
            );
        }
        _ => check!(false, "on_done with status {status}"),
    }
    r.done_at.store(tick(), SeqCst);
    // Callbacks call back into the library.
    let roll = below(100);
    if roll < 8 {
        if let Some((h, child)) = submit_one(None) {
            bump(&fig().submits_from_callbacks);
            release_owned(h, child);
        }
    } else if roll < 12 {
        cancel_from_callback();
    }
}

extern "C" fn free_arg(p: *mut c_void) {
    let r = rec(p);
    let n = r.arg_freed.fetch_add(1, SeqCst);
    check!(n == 0, "free_arg of task {p:?} twice");
    r.arg_freed_at.store(tick(), SeqCst);
    bump(&fig().args_freed);
    if r.ran.load(SeqCst) == 1 {
        check!(r.fn_end.load(SeqCst) != 0, "arg freed while fn runs");
    }
    if below(100) < 3 {
        if let Some((h, child)) = submit_one(None) {
            bump(&fig().submits_from_callbacks);
            release_owned(h, child);
        }
    }
}

extern "C" fn free_result(p: *mut c_void) {
    let r = rec(p);
    let n = r.result_freed.fetch_add(1, SeqCst);
    check!(n == 0, "free_result of task {p:?} twice");
    check!(
        r.ran.load(SeqCst) == 1,
        "free_result of a task that never ran"
    );
    check!(
        r.fn_end.load(SeqCst) != 0,
        "result freed before fn returned"
    );
    check!(
        r.mode.load(SeqCst) & M_SETS_RESULT != 0,
        "free_result called for a NULL result"
    );
    bump(&fig().results_freed);
    if below(100) < 3 {
        cancel_from_callback();
    }
}

extern "C" fn thread_stop(data: *mut c_void) {
    let g = &gens()[data as usize];
    if g.freed.load(SeqCst) {
        g.stops_after_free.fetch_add(1, SeqCst);
    }
    let n = table_count();
    check!(n == 0, "a worker leaves with {n} keys in its own table");
    check!(IN_FN.with(Cell::get) == 0, "a worker leaves inside a task");
}

// ---- submitting ----

fn take_budget() -> bool {
    BUDGET
        .fetch_update(SeqCst, SeqCst, |b| b.checked_sub(1))
        .is_ok()
}

static CQ: AtomicUsize = AtomicUsize::new(0);

/// Submits one random task to a random slot (or `slot`); returns its handle.
fn submit_one(slot: Option<usize>) -> Option<(u64, &'static Rec)> {
    if !take_budget() {
        return None;
    }
    let index = NEXT_REC.fetch_add(1, SeqCst);
    if index >= REC_CAP.load(SeqCst) {
        BUDGET.store(0, SeqCst);
        return None;
    }
    let r = &recs()[index];
    let arg = arg_of(index);
    let mut mode = 0;
    if chance(45) {
        mode |= M_ON_DONE;
    } else if chance(35) && CQ.load(SeqCst) != 0 {
        mode |= M_CQ;
    }
    if chance(15) {
        mode |= M_DETACHED;
    }
    if chance(90) {
        mode |= M_SETS_RESULT;
    }
    let ctx_roll = below(100);
    if ctx_roll < 5 {
        mode |= M_EMPTY;
    } else if ctx_roll < 10 {
        mode |= M_CONTEXT;
    }
    let lim_slot = chance(30).then(|| below(LIM_SLOTS_N as u64) as usize);
    let start_within_ms = if chance(20) {
        [1, 2, 3, 5, 10, 50][below(6) as usize]
    } else {
        0
    };
    if start_within_ms > 0 {
        mode |= M_DEADLINE;
        // Its outcome (EXPIRED or CANCELLED when it never ran) must reach a
        // callback or the queue, for the checks to tell them apart.
        if mode & (M_ON_DONE | M_CQ) == 0 {
            mode |= M_ON_DONE;
        }
    }
    r.mode.store(mode, SeqCst);
    r.code.store(
        if chance(75) {
            0
        } else {
            [1, -1, 7, i32::MIN, i32::MAX][below(5) as usize]
        },
        SeqCst,
    );
    r.seed.store(rand() | 1, SeqCst);

    // SAFETY: the options struct is plain old data; init fills it.
    let mut opts: asyncify_submit_options = unsafe { zeroed() };
    let s = asyncify_submit_options_init(&mut opts, size_of::<asyncify_submit_options>());
    check!(s == ASYNCIFY_OK, "options init {s}");
    if mode & M_ON_DONE != 0 {
        opts.on_done = Some(on_done);
    }
    opts.on_done_data = arg;
    opts.free_arg = Some(free_arg);
    opts.free_result = Some(free_result);
    if mode & M_CQ != 0 {
        opts.cq = CQ.load(SeqCst) as *mut asyncify_cq;
    }
    if mode & M_DETACHED != 0 {
        opts.flags |= ASYNCIFY_SUBMIT_DETACHED;
    }
    opts.start_within_ms = start_within_ms;
    let mut ctx: *mut asyncify_context = null_mut();
    let seq_now = get_seq();
    let count_now = table_count() - local_keys();
    if mode & M_EMPTY != 0 {
        opts.flags |= ASYNCIFY_SUBMIT_EMPTY_CONTEXT;
        r.expect_seq.store(0, SeqCst);
        r.expect_count.store(0, SeqCst);
    } else if mode & M_CONTEXT != 0 {
        let mut captured = null_mut();
        check!(
            asyncify_context_capture(&mut captured) == ASYNCIFY_OK,
            "capture"
        );
        let v = rand() | 1;
        let b = v.to_le_bytes();
        let s = asyncify_context_with(captured, c"seq".as_ptr(), b.as_ptr().cast(), 8, &mut ctx);
        check!(s == ASYNCIFY_OK, "context_with {s}");
        asyncify_context_free(captured);
        opts.context = ctx;
        r.expect_seq.store(v, SeqCst);
        r.expect_count
            .store(count_now + u32::from(seq_now == 0), SeqCst);
    } else {
        r.expect_seq.store(seq_now, SeqCst);
        r.expect_count.store(count_now, SeqCst);
    }

    let slot = slot.unwrap_or_else(|| below(3) as usize);
    let mut h = 0u64;
    let (status, gen) = {
        let guard = slot_read(slot);
        let (addr, gen) = *guard;
        r.gen.store(gen, SeqCst);
        opts.pool = pool_ptr(addr);
        let lim_guard = lim_slot.map(lim_slot_read);
        let lim = lim_guard.as_deref().copied().filter(|&(a, _)| a != 0);
        if let Some((lim_addr, lim_gen)) = lim {
            opts.limiter = lim_ptr(lim_addr);
            r.lim_gen.store(lim_gen, SeqCst);
            r.mode.fetch_or(M_LIMITER, SeqCst);
        }
        let s = asyncify_submit(Some(work), arg, &opts, &mut h);
        if s == ASYNCIFY_OK {
            r.accepted.store(true, SeqCst);
            gens()[gen as usize].accepted.fetch_add(1, SeqCst);
            bump(&fig().accepted);
            if let Some((_, lim_gen)) = lim {
                lim_gens()[lim_gen as usize].accepted.fetch_add(1, SeqCst);
                bump(&fig().limited);
            }
            if start_within_ms > 0 {
                bump(&fig().deadlines);
            }
        }
        (s, gen)
    };
    if !ctx.is_null() {
        asyncify_context_free(ctx);
    }
    match status {
        ASYNCIFY_OK => {
            check!(h != 0, "submit gave handle 0");
            r.handle.store(h, SeqCst);
            ring_push(h);
            Some((h, r))
        }
        ASYNCIFY_E_BUSY | ASYNCIFY_E_SHUT_DOWN => {
            bump(if status == ASYNCIFY_E_BUSY {
                &fig().rejected_busy
            } else {
                &fig().rejected_shut_down
            });
            check!(
                gen == 0 || status == ASYNCIFY_E_BUSY,
                "E_SHUT_DOWN from a live pool"
            );
            BUDGET.fetch_add(1, SeqCst);
            None
        }
        other => {
            check!(false, "submit returned {other}");
            None
        }
    }
}

fn detached(r: &Rec) -> bool {
    r.mode.load(SeqCst) & M_DETACHED != 0
}

/// Notes what a poll or wait returned.
fn observed(r: &Rec, s: asyncify_status, result: *mut c_void, what: &str) {
    match s {
        ASYNCIFY_OK | ASYNCIFY_FAILED | ASYNCIFY_CANCELLED | ASYNCIFY_EXPIRED => {
            r.seen.fetch_or(1 << s, SeqCst);
            if !result.is_null() {
                check!(
                    matches!(s, ASYNCIFY_OK | ASYNCIFY_FAILED),
                    "{what}: a task that did not run to its end delivered a result ({s})"
                );
                r.delivered.fetch_add(1, SeqCst);
                bump(&fig().results_to_poll);
            }
        }
        ASYNCIFY_PENDING | ASYNCIFY_TIMEOUT => {
            check!(result.is_null(), "{what}: {s} with a result");
            if s == ASYNCIFY_TIMEOUT {
                bump(&fig().wait_timeouts);
            }
        }
        ASYNCIFY_E_INVALID_HANDLE if detached(r) => bump(&fig().detached_gone),
        _ => check!(false, "{what} returned {s}"),
    }
}

fn result_is_own(r: &Rec, result: *mut c_void) {
    if !result.is_null() {
        check!(std::ptr::eq(rec(result), r), "a result of another task");
    }
}

/// Releases a handle this thread owns; then the handle is invalid.
fn release_owned(h: u64, r: &Rec) {
    let pending = asyncify_poll(h, null_mut(), null_mut()) == ASYNCIFY_PENDING;
    let s = asyncify_release(h);
    if detached(r) {
        check!(
            s == ASYNCIFY_OK || s == ASYNCIFY_E_INVALID_HANDLE,
            "release of a detached handle: {s}"
        );
    } else {
        check!(s == ASYNCIFY_OK, "release: {s}");
        if pending {
            bump(&fig().released_pending);
        }
    }
    let again = asyncify_release(h);
    check!(
        again == ASYNCIFY_E_INVALID_HANDLE,
        "double release: {again}"
    );
    let p = asyncify_poll(h, null_mut(), null_mut());
    check!(p == ASYNCIFY_E_INVALID_HANDLE, "poll after release: {p}");
    bump(&fig().stale_refused);
}

// ---- pools ----

fn new_pool(gen: usize) -> usize {
    // SAFETY: the options struct is plain old data; init fills it.
    let mut o: asyncify_pool_options = unsafe { zeroed() };
    let s = asyncify_pool_options_init(&mut o, size_of::<asyncify_pool_options>());
    assert_eq!(s, ASYNCIFY_OK);
    o.max_workers = 1 + below(4) as u32;
    if chance(30) {
        o.max_queued = 8 + below(56) as u32;
    }
    if chance(env_u64("ASYNCIFY_STRESS_RELEASE_SLOT_PCT").unwrap_or(30)) {
        o.flags = ASYNCIFY_POOL_RELEASE_SLOT_ON_ABANDON;
    }
    if chance(50) {
        o.keep_alive_ms = 1 + below(30) as u32;
    }
    o.thread_name = c"stress".as_ptr();
    o.on_thread_stop = Some(thread_stop);
    o.hook_data = gen as *mut c_void;
    let mut p = null_mut();
    let s = asyncify_pool_new_ex(&o, &mut p);
    assert_eq!(s, ASYNCIFY_OK, "pool_new_ex");
    gens()[gen].live.store(true, SeqCst);
    p as usize
}

fn free_pool(addr: usize, gen: u32) {
    SHUTTING.with(|s| s.set(s.get() + 1));
    // Bounded, so a pool that never becomes quiet fails the test instead of
    // hanging it.
    let s = asyncify_pool_free(pool_ptr(addr), 20_000);
    SHUTTING.with(|s| s.set(s.get() - 1));
    check!(
        s == ASYNCIFY_OK,
        "pool_free of generation {gen} returned {s} after 20 s: a callable or a slot never came back"
    );
    if s != ASYNCIFY_OK {
        // Stop the round: the drivers finish, the checks report.
        BUDGET.store(0, SeqCst);
    }
    gens()[gen as usize].freed.store(true, SeqCst);
}

/// Swaps a fresh pool into slot 1 or 2 and shuts the old one down while its
/// tasks run and everyone else goes on.
fn retire(slot: usize) {
    let gen = NEXT_GEN.fetch_add(1, SeqCst);
    if gen >= MAX_GENS {
        return;
    }
    let fresh = new_pool(gen);
    let (old, old_gen) = {
        let mut w = SLOTS[slot].write().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *w, (fresh, gen as u32))
    };
    // Nobody can submit to the old pool any more: its count is final.
    let st = stats_of(pool_ptr(old));
    let accepted = gens()[old_gen as usize].accepted.load(SeqCst);
    check!(
        st.submitted == accepted,
        "retired pool: stats.submitted {} but {accepted} accepted",
        st.submitted
    );
    free_pool(old, old_gen);
    bump(&fig().retired);
}

fn resize(slot: usize) {
    let n = [0, 1, 1, 2, 2, 3, 4, 4, 8, 16][below(10) as usize];
    let guard = slot_read(slot);
    let s = asyncify_set_max_workers(pool_ptr(guard.0), n);
    check!(s == ASYNCIFY_OK, "set_max_workers: {s}");
    let mut got = 0;
    let s = asyncify_get_max_workers(pool_ptr(guard.0), &mut got);
    check!(s == ASYNCIFY_OK, "get_max_workers: {s}");
    bump(&fig().resizes);
    if n == 0 {
        bump(&fig().pauses);
    }
}

// ---- limiters: slots shared by every pool, resized and replaced at random ----

#[derive(Default)]
struct LimGen {
    /// Tasks accepted with it.
    accepted: AtomicU64,
    /// The highest cap it ever had (raised before the cap is).
    cap_ever: AtomicU32,
    /// Its callables running now, and the most at once.
    running_now: AtomicU32,
    peak: AtomicU32,
}

static LIM_GENS: OnceLock<Vec<LimGen>> = OnceLock::new();
static NEXT_LIM_GEN: AtomicUsize = AtomicUsize::new(1);

fn lim_gens() -> &'static [LimGen] {
    LIM_GENS.get_or_init(|| (0..MAX_LIM_GENS).map(|_| LimGen::default()).collect())
}

/// (limiter pointer as an address, generation); (0, 0) between rounds.
/// Read-locked around each submit that uses the pointer, so a replacement
/// (write lock) knows nobody is about to pass it.
static LIM_SLOTS: [RwLock<(usize, u32)>; LIM_SLOTS_N] = [
    RwLock::new((0, 0)),
    RwLock::new((0, 0)),
    RwLock::new((0, 0)),
];

/// Limiters taken out of their slot and kept, to check once quiet.
static PARKED: Mutex<Vec<(usize, u32)>> = Mutex::new(Vec::new());

fn lim_slot_read(i: usize) -> std::sync::RwLockReadGuard<'static, (usize, u32)> {
    LIM_SLOTS[i].read().unwrap_or_else(|e| e.into_inner())
}

fn lim_ptr(addr: usize) -> *mut asyncify_limiter {
    addr as *mut asyncify_limiter
}

fn new_limiter(gen: usize) -> usize {
    // SAFETY: the options struct is plain old data; init fills it.
    let mut o: asyncify_limiter_options = unsafe { zeroed() };
    let s = asyncify_limiter_options_init(&mut o, size_of::<asyncify_limiter_options>());
    assert_eq!(s, ASYNCIFY_OK, "limiter_options_init");
    o.max_running = [0, 1, 1, 2, 3, 8, u32::MAX][below(7) as usize];
    o.rate_per_s = if chance(40) {
        [200.0, 1000.0, 5000.0][below(3) as usize]
    } else {
        0.0
    };
    o.burst = below(8) as u32;
    let name = std::ffi::CString::new(format!("stress-{gen}")).expect("no NUL");
    o.name = name.as_ptr();
    let g = &lim_gens()[gen];
    g.accepted.store(0, SeqCst);
    g.cap_ever.store(o.max_running, SeqCst);
    g.running_now.store(0, SeqCst);
    g.peak.store(0, SeqCst);
    let mut p = null_mut();
    let s = asyncify_limiter_new(&o, &mut p);
    assert_eq!(s, ASYNCIFY_OK, "limiter_new");
    bump(&fig().limiters);
    p as usize
}

fn set_limiter(addr: usize, gen: u32, max_running: u32, rate: f64, burst: u32) {
    lim_gens()[gen as usize]
        .cap_ever
        .fetch_max(max_running, SeqCst);
    let s = asyncify_limiter_set(lim_ptr(addr), max_running, rate, burst);
    check!(
        s == ASYNCIFY_OK,
        "limiter_set({max_running}, {rate}, {burst}): {s}"
    );
    bump(&fig().limiter_sets);
}

fn resize_limiter(slot: usize) {
    let guard = lim_slot_read(slot);
    let (addr, gen) = *guard;
    if addr == 0 {
        return;
    }
    if chance(10) {
        let bad = [f64::NAN, -1.0, f64::INFINITY][below(3) as usize];
        let s = asyncify_limiter_set(lim_ptr(addr), 1, bad, 0);
        check!(
            s == ASYNCIFY_E_INVALID_ARGUMENT,
            "limiter_set with rate {bad}: {s}"
        );
        return;
    }
    let cap = [0, 1, 2, 3, 4, 8, 16, u32::MAX][below(8) as usize];
    let rate = [0.0, 0.0, 100.0, 1000.0, 10_000.0][below(5) as usize];
    set_limiter(addr, gen, cap, rate, below(8) as u32);
}

fn limiter_stats(addr: usize) -> asyncify_limiter_stats {
    // SAFETY: plain old data; all-zero is valid.
    let mut st: asyncify_limiter_stats = unsafe { zeroed() };
    st.struct_size = size_of::<asyncify_limiter_stats>() as u32;
    let s = asyncify_limiter_stats_get(lim_ptr(addr), &mut st);
    check!(s == ASYNCIFY_OK, "limiter_stats_get: {s}");
    st
}

/// A limiter's counters while everything runs: never more waiting or
/// accounted for than tasks were given to it (a few submits may be in
/// flight), never more places held than its highest cap.
fn peek_limiter(slot: usize) {
    let guard = lim_slot_read(slot);
    let (addr, gen) = *guard;
    if addr == 0 {
        return;
    }
    let g = &lim_gens()[gen as usize];
    let st = limiter_stats(addr);
    let given = g.accepted.load(SeqCst) + 1024;
    let cap = u64::from(g.cap_ever.load(SeqCst));
    check!(
        st.waiting <= given
            && st.running <= cap
            && st.waiting + st.admitted + st.expired + st.cancelled_waiting <= given,
        "limiter {gen} while running: waiting {}, running {} (highest cap {cap}), admitted {}, expired {}, cancelled_waiting {}, with about {} tasks accepted",
        st.waiting,
        st.running,
        st.admitted,
        st.expired,
        st.cancelled_waiting,
        given - 1024
    );
    bump(&fig().limiter_stats_reads);
}

/// Swaps a fresh limiter into `slot`, opens the old one (a cap of at least
/// one, a fast rate or none) so that what waits for it is admitted, then frees
/// it while its tasks still hold it, or parks it to check once quiet.
fn retire_limiter(slot: usize) {
    let gen = NEXT_LIM_GEN.fetch_add(1, SeqCst);
    if gen >= MAX_LIM_GENS {
        return;
    }
    let fresh = new_limiter(gen);
    let (old, old_gen) = {
        let mut w = LIM_SLOTS[slot].write().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *w, (fresh, gen as u32))
    };
    if old == 0 {
        return;
    }
    set_limiter(
        old,
        old_gen,
        [1, 4, u32::MAX][below(3) as usize],
        [0.0, 2000.0][below(2) as usize],
        4,
    );
    if chance(50) {
        let s = asyncify_limiter_free(lim_ptr(old));
        check!(s == ASYNCIFY_OK, "limiter_free: {s}");
        bump(&fig().limiters_freed_in_use);
    } else {
        PARKED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((old, old_gen));
    }
}

/// Fills the limiter slots for a phase.
fn fresh_limiters() {
    for slot in &LIM_SLOTS {
        let gen = NEXT_LIM_GEN.fetch_add(1, SeqCst);
        *slot.write().unwrap_or_else(|e| e.into_inner()) = (new_limiter(gen), gen as u32);
    }
}

/// Opens the slots' limiters (no cap, no rate), so that quiet pools mean
/// nothing waits for a limiter either.
fn open_limiters() {
    for i in 0..LIM_SLOTS_N {
        let (addr, gen) = *lim_slot_read(i);
        if addr != 0 {
            set_limiter(addr, gen, u32::MAX, 0.0, 0);
        }
    }
}

/// With every pool quiet: each limiter of the slots and each parked one has
/// nothing waiting or running, and accounts for every task accepted with it;
/// no more of its callables ran at once than its highest cap. Then frees them.
fn check_and_free_limiters() {
    let mut all: Vec<(usize, u32)> =
        std::mem::take(&mut *PARKED.lock().unwrap_or_else(|e| e.into_inner()));
    for slot in &LIM_SLOTS {
        let (addr, gen) = std::mem::take(&mut *slot.write().unwrap_or_else(|e| e.into_inner()));
        if addr != 0 {
            all.push((addr, gen));
        }
    }
    for (addr, gen) in all {
        let g = &lim_gens()[gen as usize];
        let st = limiter_stats(addr);
        let accepted = g.accepted.load(SeqCst);
        check!(
            st.waiting == 0 && st.running == 0,
            "limiter {gen} once quiet: waiting {}, running {}",
            st.waiting,
            st.running
        );
        check!(
            st.admitted + st.expired + st.cancelled_waiting == accepted,
            "limiter {gen}: admitted {} + expired {} + cancelled_waiting {} is not the {accepted} tasks accepted with it",
            st.admitted,
            st.expired,
            st.cancelled_waiting
        );
        let peak = g.peak.load(SeqCst);
        let cap = g.cap_ever.load(SeqCst);
        check!(
            peak <= cap,
            "limiter {gen}: {peak} callables at once, its highest cap {cap}"
        );
        fig().expired_waiting.fetch_add(st.expired, SeqCst);
        fig()
            .cancelled_waiting
            .fetch_add(st.cancelled_waiting, SeqCst);
        let s = asyncify_limiter_free(lim_ptr(addr));
        check!(s == ASYNCIFY_OK, "limiter_free: {s}");
    }
}

fn drain_cq(max: usize) {
    let cq = CQ.load(SeqCst) as *mut asyncify_cq;
    // SAFETY: completions are plain old data; all-zero is valid.
    let mut buf: [asyncify_completion; 16] = unsafe { zeroed() };
    let mut total = 0;
    loop {
        let mut n = 0usize;
        let s = asyncify_cq_drain(cq, buf.as_mut_ptr(), buf.len(), &mut n);
        check!(s == ASYNCIFY_OK, "cq_drain {s}");
        for c in &buf[..n] {
            let r = rec(c.user_data);
            let calls = r.cq_calls.fetch_add(1, SeqCst);
            check!(calls == 0, "a task completed into the queue twice");
            r.cq_status.store(c.status, SeqCst);
            check!(
                r.mode.load(SeqCst) & M_CQ != 0,
                "a completion for a task without cq"
            );
            let known = r.handle.load(SeqCst);
            check!(known == 0 || known == c.handle, "completion handle");
            if !c.result.is_null() {
                check!(
                    matches!(c.status, ASYNCIFY_OK | ASYNCIFY_FAILED),
                    "queue: {} with a result",
                    c.status
                );
                result_is_own(r, c.result);
                r.delivered.fetch_add(1, SeqCst);
            }
            bump(&fig().cq_delivered);
        }
        total += n;
        if n < buf.len() || total >= max {
            break;
        }
    }
}

// ---- the drivers ----

struct Held {
    h: u64,
    r: &'static Rec,
}

fn pick(held: &[Held]) -> Option<usize> {
    (!held.is_empty()).then(|| below(held.len() as u64) as usize)
}

fn driver() {
    DRIVER.with(|d| d.set(true));
    let one = [1u8];
    check!(
        asyncify_override_set_ex(
            c"driver-local".as_ptr(),
            one.as_ptr().cast(),
            1,
            ASYNCIFY_KEY_LOCAL
        ) == ASYNCIFY_OK,
        "local key"
    );
    HAS_LOCAL_KEY.with(|l| l.set(true));
    let mut held: Vec<Held> = Vec::new();
    let mut scopes: Vec<u64> = Vec::new();
    let mut idle_rounds = 0;
    loop {
        let roll = below(1000);
        match roll {
            0..=349 => match submit_one(None) {
                Some((h, r)) => held.push(Held { h, r }),
                None => {
                    if BUDGET.load(SeqCst) == 0 {
                        idle_rounds += 1;
                        if idle_rounds > 3 {
                            break;
                        }
                    }
                }
            },
            350..=469 => {
                if let Some(i) = pick(&held) {
                    let Held { h, r } = held[i];
                    let s = cancel(h);
                    match s {
                        ASYNCIFY_E_INVALID_HANDLE if detached(r) => bump(&fig().detached_gone),
                        _ => {
                            check!(
                                matches!(
                                    s,
                                    ASYNCIFY_CANCELLED
                                        | ASYNCIFY_OK
                                        | ASYNCIFY_FAILED
                                        | ASYNCIFY_EXPIRED
                                ),
                                "cancel returned {s}"
                            );
                            note_cancel(r, s);
                            if chance(30) {
                                let again = cancel(h);
                                check!(
                                    again == s
                                        || (detached(r) && again == ASYNCIFY_E_INVALID_HANDLE),
                                    "cancel twice: {s} then {again}"
                                );
                            }
                        }
                    }
                }
            }
            470..=529 => {
                let h = ring_pick();
                if h != 0 {
                    let s = cancel(h);
                    check!(
                        matches!(
                            s,
                            ASYNCIFY_CANCELLED
                                | ASYNCIFY_OK
                                | ASYNCIFY_FAILED
                                | ASYNCIFY_EXPIRED
                                | ASYNCIFY_E_INVALID_HANDLE
                        ),
                        "cancel of a ring handle: {s}"
                    );
                }
            }
            530..=629 => {
                if let Some(i) = pick(&held) {
                    let Held { h, r } = held.swap_remove(i);
                    release_owned(h, r);
                }
            }
            630..=719 => {
                if let Some(i) = pick(&held) {
                    let Held { h, r } = held[i];
                    let mut result = null_mut();
                    let mut code = 12345;
                    let want = chance(50);
                    let s =
                        asyncify_poll(h, if want { &mut result } else { null_mut() }, &mut code);
                    bump(&fig().polls);
                    result_is_own(r, result);
                    observed(r, s, result, "poll");
                    if matches!(s, ASYNCIFY_OK | ASYNCIFY_FAILED) {
                        check!(code == r.code.load(SeqCst), "poll code {code}");
                    }
                }
            }
            720..=789 => {
                if let Some(i) = pick(&held) {
                    let Held { h, r } = held[i];
                    let mut result = null_mut();
                    let want = chance(50);
                    let s = asyncify_wait(
                        h,
                        below(3) as i64,
                        if want { &mut result } else { null_mut() },
                        null_mut(),
                    );
                    bump(&fig().waits);
                    result_is_own(r, result);
                    observed(r, s, result, "wait");
                }
            }
            790..=809 => {
                if held.len() >= 2 {
                    let k = held.len().min(4);
                    let start = below((held.len() - k + 1) as u64) as usize;
                    let hs: Vec<u64> = held[start..start + k].iter().map(|x| x.h).collect();
                    let mut index = usize::MAX;
                    let s = asyncify_wait_any(hs.as_ptr(), hs.len(), 1, &mut index);
                    bump(&fig().wait_anys);
                    let any_detached = held[start..start + k].iter().any(|x| detached(x.r));
                    match s {
                        ASYNCIFY_OK => {
                            check!(index < k, "wait_any index {index}");
                            let x = &held[start + index];
                            let p = asyncify_poll(x.h, null_mut(), null_mut());
                            check!(
                                matches!(
                                    p,
                                    ASYNCIFY_OK
                                        | ASYNCIFY_FAILED
                                        | ASYNCIFY_CANCELLED
                                        | ASYNCIFY_EXPIRED
                                ) || (detached(x.r) && p == ASYNCIFY_E_INVALID_HANDLE),
                                "wait_any said terminal, poll says {p}"
                            );
                            observed(x.r, p, null_mut(), "poll after wait_any");
                        }
                        ASYNCIFY_TIMEOUT => {}
                        ASYNCIFY_E_INVALID_HANDLE if any_detached => {}
                        _ => check!(false, "wait_any returned {s}"),
                    }
                }
            }
            810..=849 => resize(below(3) as usize),
            850..=909 => match below(4) {
                0 => set_seq(rand() | 1),
                1 => {
                    let mut t = 0;
                    check!(asyncify_scope_enter(&mut t) == ASYNCIFY_OK, "scope_enter");
                    scopes.push(t);
                    set_seq(rand() | 1);
                }
                2 => {
                    if scopes.len() >= 2 && chance(30) {
                        let s = asyncify_scope_exit(scopes[0]);
                        check!(
                            s == ASYNCIFY_E_SCOPE_MISMATCH,
                            "out-of-order scope exit: {s}"
                        );
                        bump(&fig().scope_mismatches);
                    }
                    if let Some(t) = scopes.pop() {
                        check!(asyncify_scope_exit(t) == ASYNCIFY_OK, "scope_exit");
                    }
                }
                _ => {
                    asyncify_override_remove(c"seq".as_ptr());
                }
            },
            910..=949 => drain_cq(64),
            950..=951 => {
                if below(8) == 0 {
                    retire(1 + below(2) as usize);
                }
            }
            952..=959 => resize_limiter(below(LIM_SLOTS_N as u64) as usize),
            960..=961 => {
                if below(4) == 0 {
                    retire_limiter(below(LIM_SLOTS_N as u64) as usize);
                }
            }
            962..=965 => peek_limiter(below(LIM_SLOTS_N as u64) as usize),
            _ => std::thread::yield_now(),
        }
        while held.len() > HELD_MAX {
            let Held { h, r } = held.remove(0);
            release_owned(h, r);
        }
    }
    for Held { h, r } in held.drain(..) {
        release_owned(h, r);
    }
    while let Some(t) = scopes.pop() {
        check!(
            asyncify_scope_exit(t) == ASYNCIFY_OK,
            "scope_exit at the end"
        );
    }
    asyncify_override_clear();
    HAS_LOCAL_KEY.with(|l| l.set(false));
}

// ---- a round: drivers, quiescence, the checks ----

#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
struct Counts {
    submitted: u64,
    completed: u64,
    failed: u64,
    cancelled: u64,
    abandoned: u64,
    expired: u64,
}

fn counts_of(s: &asyncify_pool_stats) -> Counts {
    Counts {
        submitted: s.submitted,
        completed: s.completed,
        failed: s.failed,
        cancelled: s.cancelled,
        abandoned: s.abandoned,
        expired: s.expired,
    }
}

fn minus(a: Counts, b: Counts) -> Counts {
    Counts {
        submitted: a.submitted - b.submitted,
        completed: a.completed - b.completed,
        failed: a.failed - b.failed,
        cancelled: a.cancelled - b.cancelled,
        abandoned: a.abandoned - b.abandoned,
        expired: a.expired - b.expired,
    }
}

/// Waits until every pool is quiet: no task queued or running, and no
/// submission between two looks.
fn quiesce() -> [asyncify_pool_stats; 3] {
    for i in 0..3 {
        let g = slot_read(i);
        let mut n = 0;
        asyncify_get_max_workers(pool_ptr(g.0), &mut n);
        if n == 0 {
            asyncify_set_max_workers(pool_ptr(g.0), 4);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last: Option<[u64; 3]> = None;
    loop {
        let st: [asyncify_pool_stats; 3] =
            std::array::from_fn(|i| stats_of(pool_ptr(slot_read(i).0)));
        let quiet = st.iter().all(|s| s.queued == 0 && s.running == 0);
        let submitted = st.map(|s| s.submitted);
        if quiet && last == Some(submitted) {
            return st;
        }
        last = quiet.then_some(submitted);
        assert!(
            Instant::now() < deadline,
            "the pools never became quiet: {:?}",
            st.map(|s| (s.queued, s.running))
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// With the pools quiet, waits until every accepted task's outcome has been
/// reported, draining the queue meanwhile. Quiet stats do not say that: an
/// expiry is counted before its `free_arg` and `on_done` run (or its
/// completion is queued) on the timer thread.
fn settle_reports() {
    let used = NEXT_REC.load(SeqCst).min(REC_CAP.load(SeqCst));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        drain_cq(usize::MAX);
        let unreported = recs()[..used]
            .iter()
            .filter(|r| {
                let mode = r.mode.load(SeqCst);
                r.accepted.load(SeqCst)
                    && ((mode & M_ON_DONE != 0 && r.done_calls.load(SeqCst) == 0)
                        || (mode & M_CQ != 0 && r.cq_calls.load(SeqCst) == 0))
            })
            .count();
        if unreported == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{unreported} tasks of quiet pools never reported their outcome"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Checks every record used (the pools quiet) and returns the counts per
/// pool generation.
fn check_records(used: usize, ngens: usize) -> Vec<Counts> {
    let mut per_gen = vec![Counts::default(); ngens];
    let f = fig();
    for (i, r) in recs()[..used].iter().enumerate() {
        let p = arg_of(i);
        let ran = r.ran.load(SeqCst);
        let arg_freed = r.arg_freed.load(SeqCst);
        let result_freed = r.result_freed.load(SeqCst);
        let delivered = r.delivered.load(SeqCst);
        let mode = r.mode.load(SeqCst);
        if !r.accepted.load(SeqCst) {
            check!(
                ran + arg_freed
                    + result_freed
                    + r.done_calls.load(SeqCst)
                    + r.cq_calls.load(SeqCst)
                    == 0,
                "task {p:?} was refused but the library used it"
            );
            continue;
        }
        let code = r.code.load(SeqCst);
        let sets_result = mode & M_SETS_RESULT != 0;
        let status = if mode & M_ON_DONE != 0 {
            let calls = r.done_calls.load(SeqCst);
            check!(calls == 1, "task {p:?}: on_done called {calls} times");
            r.done_status.load(SeqCst)
        } else if mode & M_CQ != 0 {
            let calls = r.cq_calls.load(SeqCst);
            check!(calls == 1, "task {p:?}: {calls} completions in the queue");
            r.cq_status.load(SeqCst)
        } else if ran == 0 || arg_freed == 1 {
            ASYNCIFY_CANCELLED
        } else if code == 0 {
            ASYNCIFY_OK
        } else {
            ASYNCIFY_FAILED
        };
        check!(ran <= 1, "task {p:?} ran {ran} times");
        let g = &mut per_gen[r.gen.load(SeqCst) as usize];
        g.submitted += 1;
        let seen = r.seen.load(SeqCst);
        check!(
            seen & !(1 << status) == 0,
            "task {p:?}: outcome {status}, but seen {seen:b}"
        );
        let cancels = r.cancel_seen.load(SeqCst);
        check!(
            cancels & !(1 << status) == 0,
            "task {p:?}: outcome {status}, cancel said {cancels:b}"
        );
        if ran == 0 {
            bump(&f.never_ran);
            if status == ASYNCIFY_EXPIRED {
                g.expired += 1;
                bump(&f.expired);
                check!(
                    mode & M_DEADLINE != 0,
                    "task {p:?} expired without a deadline"
                );
            } else {
                g.cancelled += 1;
                check!(
                    status == ASYNCIFY_CANCELLED,
                    "task {p:?} never ran but reported {status}"
                );
            }
            check!(
                arg_freed == 1,
                "task {p:?} never ran: free_arg called {arg_freed} times"
            );
            check!(
                result_freed + delivered == 0,
                "task {p:?} never ran but has a result"
            );
            if mode & M_ON_DONE != 0 {
                check!(
                    r.arg_freed_at.load(SeqCst) < r.done_at.load(SeqCst),
                    "task {p:?}: on_done before free_arg (5.1 and 8.3 say free_arg, then on_done)"
                );
            }
        } else if status == ASYNCIFY_CANCELLED {
            g.abandoned += 1;
            bump(&f.abandoned);
            bump(&f.ran);
            check!(
                arg_freed == 1,
                "abandoned task {p:?}: free_arg called {arg_freed} times"
            );
            check!(
                r.arg_freed_at.load(SeqCst) > r.fn_end.load(SeqCst),
                "abandoned task {p:?}: arg freed before fn returned"
            );
            check!(
                delivered == 0,
                "abandoned task {p:?}: its result was delivered"
            );
            check!(
                result_freed == u32::from(sets_result),
                "abandoned task {p:?}: free_result called {result_freed} times"
            );
        } else {
            bump(&f.ran);
            let want = if code == 0 {
                ASYNCIFY_OK
            } else {
                ASYNCIFY_FAILED
            };
            check!(
                status == want,
                "task {p:?} returned {code} but reported {status}"
            );
            if code == 0 {
                g.completed += 1;
                bump(&f.completed);
            } else {
                g.failed += 1;
                bump(&f.failed);
            }
            check!(
                arg_freed == 0,
                "task {p:?} ran to its end but free_arg was called"
            );
            check!(
                delivered + result_freed == u32::from(sets_result),
                "task {p:?}: result delivered {delivered} and freed {result_freed} times (set: {sets_result})"
            );
        }
    }
    per_gen
}

fn run_round(target: usize, default_before: Counts) -> Counts {
    let cap = target * 3 / 2 + 4096;
    REC_CAP.store(cap.min(recs().len()), SeqCst);
    NEXT_REC.store(0, SeqCst);
    BUDGET.store(target as u64, SeqCst);
    for r in RING_SLOTS.iter() {
        r.store(0, SeqCst);
    }
    NEXT_GEN.store(1, SeqCst);
    for g in gens() {
        g.accepted.store(0, SeqCst);
        g.freed.store(false, SeqCst);
        g.stops_after_free.store(0, SeqCst);
        g.live.store(false, SeqCst);
    }
    for slot in &SLOTS[1..] {
        let gen = NEXT_GEN.fetch_add(1, SeqCst);
        *slot.write().unwrap() = (new_pool(gen), gen as u32);
    }
    NEXT_LIM_GEN.store(1, SeqCst);
    fresh_limiters();
    let mut cq = null_mut();
    assert_eq!(asyncify_cq_new(&mut cq), ASYNCIFY_OK);
    CQ.store(cq as usize, SeqCst);

    std::thread::scope(|s| {
        for _ in 0..DRIVERS {
            s.spawn(driver);
        }
    });

    open_limiters();
    let st = quiesce();
    settle_reports();
    check_and_free_limiters();
    let live_gens: Vec<u32> = (0..3).map(|i| slot_read(i).1).collect();
    for slot in &SLOTS[1..] {
        // From now on the slot names the default pool (generation 0), so a
        // stray submission can never reach a freed pool.
        let (addr, gen) = std::mem::take(&mut *slot.write().unwrap_or_else(|e| e.into_inner()));
        free_pool(addr, gen);
    }
    // A drained queue: nothing left for free_result; completions after its
    // free would stay on their handles (none: everything is quiet).
    assert_eq!(asyncify_cq_free(cq), ASYNCIFY_OK);
    CQ.store(0, SeqCst);
    // Give late thread hooks a moment to show themselves.
    std::thread::sleep(Duration::from_millis(60));

    // Per-task checks, and the counts per pool generation.
    let used = NEXT_REC.load(SeqCst).min(REC_CAP.load(SeqCst));
    let per_gen = check_records(used, NEXT_GEN.load(SeqCst).min(MAX_GENS));
    let f = fig();

    // Stats: the live pools (whole life in this round) and the default pool's delta.
    for (slot, s) in st.iter().enumerate() {
        let gen = live_gens[slot] as usize;
        let got = if slot == 0 {
            minus(counts_of(s), default_before)
        } else {
            counts_of(s)
        };
        check!(
            got == per_gen[gen],
            "slot {slot}: asyncify_stats {got:?}, the test counted {:?}",
            per_gen[gen]
        );
        check!(s.queued == 0 && s.running == 0, "slot {slot} not quiet");
    }
    let late: u64 = gens().iter().map(|g| g.stops_after_free.load(SeqCst)).sum();
    check!(
        late == 0,
        "{late} on_thread_stop hooks ran after asyncify_pool_free returned OK (6.1: after OK no callback of that pool fires)"
    );
    let live = asyncify::task::live_handles();
    check!(live == 0, "{live} handles still live after the round");
    bump(&f.rounds);
    for r in &recs()[..used] {
        r.reset_all();
    }
    counts_of(&st[0])
}

/// The default pool's shutdown racing with submitters, cancels and releases.
fn shutdown_race() -> u64 {
    let target = 20_000usize;
    REC_CAP.store(recs().len().min(target * 2), SeqCst);
    NEXT_REC.store(0, SeqCst);
    BUDGET.store(u64::MAX / 2, SeqCst);
    let before = counts_of(&stats_of(null_mut()));
    gens()[0].accepted.store(0, SeqCst);
    NEXT_LIM_GEN.store(1, SeqCst);
    fresh_limiters();
    let stop = AtomicBool::new(false);
    let refused_after = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..DRIVERS {
            s.spawn(|| {
                DRIVER.with(|d| d.set(true));
                let mut seen_shut_down = false;
                while !stop.load(SeqCst) {
                    match submit_one(Some(0)) {
                        Some((h, r)) => {
                            check!(!seen_shut_down, "submit accepted after E_SHUT_DOWN");
                            match below(3) {
                                0 => note_cancel(r, cancel(h)),
                                1 => {
                                    let mut res = null_mut();
                                    let st = asyncify_wait(h, 1, &mut res, null_mut());
                                    result_is_own(r, res);
                                    observed(r, st, res, "wait");
                                }
                                _ => {}
                            }
                            release_owned(h, r);
                        }
                        None => {
                            if NEXT_REC.load(SeqCst) >= REC_CAP.load(SeqCst) {
                                break;
                            }
                            seen_shut_down = true;
                            refused_after.fetch_add(1, SeqCst);
                        }
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_millis(30));
        SHUTTING.with(|s| s.set(1));
        let st = asyncify_shutdown(-1);
        SHUTTING.with(|s| s.set(0));
        check!(st == ASYNCIFY_OK, "asyncify_shutdown returned {st}");
        std::thread::sleep(Duration::from_millis(10));
        stop.store(true, SeqCst);
    });
    // After OK no callback fires and nothing is queued or running.
    let after = stats_of(null_mut());
    check!(
        after.queued == 0 && after.running == 0,
        "default pool not quiet after shutdown"
    );
    let used = NEXT_REC.load(SeqCst).min(REC_CAP.load(SeqCst));
    let counted = check_records(used, 1)[0];
    let got = minus(counts_of(&after), before);
    check!(
        got == counted,
        "default pool after shutdown: stats {got:?}, counted {counted:?}"
    );
    let live = asyncify::task::live_handles();
    check!(live == 0, "{live} handles live after the shutdown race");
    // The shutdown cancelled what still waited for a limiter.
    check_and_free_limiters();
    let mut h = 0;
    let s = asyncify_submit(Some(work), arg_of(0), null(), &mut h);
    check!(
        s == ASYNCIFY_E_SHUT_DOWN,
        "submit to the shut-down default pool: {s}"
    );
    refused_after.load(SeqCst)
}

#[test]
fn exactly_once_under_random_races_on_three_pools() {
    let seed_value = env_u64("ASYNCIFY_STRESS_SEED").unwrap_or(0x5EED_0006);
    SEED.store(seed_value, SeqCst);
    let seconds = env_u64("ASYNCIFY_STRESS_SECONDS");
    let tasks = env_u64("ASYNCIFY_STRESS_TASKS").unwrap_or(100_000) as usize;
    let round = tasks.clamp(1000, ROUND_MAX);
    RECS.get_or_init(|| (0..round * 3 / 2 + 4096).map(|_| Rec::default()).collect());
    for r in recs() {
        r.reset_all();
    }
    let start = Instant::now();
    let mut default_before = counts_of(&stats_of(null_mut()));
    let mut done = 0usize;
    loop {
        let this = match seconds {
            Some(_) => round,
            None => (tasks - done).min(round),
        };
        default_before = run_round(this, default_before);
        done = fig().accepted.load(SeqCst) as usize;
        let violations = VIOLATIONS.load(SeqCst);
        assert!(
            violations == 0,
            "{violations} violations (seed {seed_value:#x}), first ones:\n{}",
            VIOLATION_TEXT.lock().unwrap().join("\n")
        );
        let more = match seconds {
            Some(s) => start.elapsed() < Duration::from_secs(s),
            None => done < tasks,
        };
        if !more {
            break;
        }
    }
    let refused = shutdown_race();
    let f = fig();
    let v = |c: &AtomicU64| c.load(SeqCst);
    eprintln!(
        "stress (seed {seed_value:#x}, {:.1} s, {} rounds): {} tasks accepted, {} ran ({} completed, {} failed, {} abandoned), {} never ran; \
         races: {} cancels ({} too late), {} released while pending, {} polls, {} waits ({} timed out), {} wait_any, \
         {} resizes ({} pauses), {} pools shut down while busy, {} submits and {} cancels from callbacks, {} inline runs, \
         {} cancel_requested seen, {} limiters ({} limiter sets, {} freed in use, {} stats reads), {} tasks with a limiter \
         ({} expired and {} cancelled while waiting for it), {} with a start deadline, {} expired, {} refused busy, {} refused shut down ({refused} after the first, in the shutdown race), {} stale handles refused, \
         {} scope exits refused; results: {} to on_done, {} to poll/wait, {} via the queue, {} freed; args freed {}; \
         violations {}",
        start.elapsed().as_secs_f64(),
        v(&f.rounds),
        v(&f.accepted),
        v(&f.ran),
        v(&f.completed),
        v(&f.failed),
        v(&f.abandoned),
        v(&f.never_ran),
        v(&f.cancel_calls),
        v(&f.cancel_too_late),
        v(&f.released_pending),
        v(&f.polls),
        v(&f.waits),
        v(&f.wait_timeouts),
        v(&f.wait_anys),
        v(&f.resizes),
        v(&f.pauses),
        v(&f.retired),
        v(&f.submits_from_callbacks),
        v(&f.cancels_from_callbacks),
        v(&f.inline_runs),
        v(&f.cancel_requested_seen),
        v(&f.limiters),
        v(&f.limiter_sets),
        v(&f.limiters_freed_in_use),
        v(&f.limiter_stats_reads),
        v(&f.limited),
        v(&f.expired_waiting),
        v(&f.cancelled_waiting),
        v(&f.deadlines),
        v(&f.expired),
        v(&f.rejected_busy),
        v(&f.rejected_shut_down),
        v(&f.stale_refused),
        v(&f.scope_mismatches),
        v(&f.results_to_on_done),
        v(&f.results_to_poll),
        v(&f.cq_delivered),
        v(&f.results_freed),
        v(&f.args_freed),
        v(&VIOLATIONS),
    );
    let violations = VIOLATIONS.load(SeqCst);
    assert!(
        violations == 0,
        "{violations} violations (seed {seed_value:#x}), first ones:\n{}",
        VIOLATION_TEXT.lock().unwrap().join("\n")
    );
    assert!(v(&f.never_ran) > 0 && v(&f.abandoned) > 0 && v(&f.completed) > 0 && v(&f.failed) > 0);
    assert!(
        v(&f.retired) > 0 && v(&f.inline_runs) > 0,
        "the races were exercised"
    );
    assert!(
        v(&f.limited) > 0 && v(&f.expired) > 0 && v(&f.limiter_sets) > 0,
        "limiters and deadlines were exercised"
    );
}
