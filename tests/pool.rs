//! The limited pool through the engine's Rust API: the limit, FIFO order,
//! resizing, pausing, nested waits (inline runs), abandoning, shutdown, and
//! how a task's table is installed and restored.
//!
//! Each test owns a "lane" of counters, selected by the task's `arg`, so tests
//! running in parallel never share state.

// Calls the C ABI as a C program would: raw pointers, hence unsafe blocks.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::sync::atomic::{
    AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering::SeqCst,
};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use asyncify::cq::{CompletionQueue, WaitEnd};
use asyncify::overrides as table;
use asyncify::pool::{Pool, PoolOptions};
use asyncify::status::*;
use asyncify::table::{Table, Value};
use asyncify::task::{self, TaskSpec};

const LANES: usize = 16;

#[derive(Default)]
struct Lane {
    running: AtomicU32,
    max_running: AtomicU32,
    started: AtomicU32,
    sleep_ms: AtomicU64,
    order: Mutex<Vec<usize>>,
    arg_frees: AtomicU32,
    result_frees: AtomicU32,
    saw_cancel: AtomicBool,
    inner_handle: AtomicU64,
    inner_status: AtomicI64,
    seen: Mutex<Vec<Option<Vec<u8>>>>,
}

static LANE_STORE: once_cell::sync::Lazy<Vec<Lane>> =
    once_cell::sync::Lazy::new(|| (0..LANES).map(|_| Lane::default()).collect());

/// `arg` = lane * 1_000_000 + task number + 1 (never NULL).
fn arg(lane: usize, n: usize) -> *mut c_void {
    (lane * 1_000_000 + n + 1) as *mut c_void
}

fn lane_of(arg: *mut c_void) -> (&'static Lane, usize) {
    let v = arg as usize - 1;
    (&LANE_STORE[v / 1_000_000], v % 1_000_000)
}

fn bytes_of(key: &str) -> Option<Vec<u8>> {
    table::get(key).map(|v| v.as_bytes().expect("a bytes value").to_vec())
}

/// Records concurrency and start order, reads key "k", sleeps the lane's time
/// (returning early when cancelled), notes whether a cancel was seen.
extern "C" fn tracked(a: *mut c_void, out: *mut *mut c_void) -> i32 {
    let (lane, n) = lane_of(a);
    let now = lane.running.fetch_add(1, SeqCst) + 1;
    lane.max_running.fetch_max(now, SeqCst);
    lane.started.fetch_add(1, SeqCst);
    lane.order.lock().unwrap().push(n);
    lane.seen.lock().unwrap().push(bytes_of("k"));
    let until = Instant::now() + Duration::from_millis(lane.sleep_ms.load(SeqCst));
    while Instant::now() < until {
        if task::cancel_requested() {
            lane.saw_cancel.store(true, SeqCst);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    lane.running.fetch_sub(1, SeqCst);
    // SAFETY: `out` is the library's valid result slot for this call.
    unsafe { *out = a };
    0
}

extern "C" fn free_arg(a: *mut c_void) {
    lane_of(a).0.arg_frees.fetch_add(1, SeqCst);
}

extern "C" fn free_result(a: *mut c_void) {
    lane_of(a).0.result_frees.fetch_add(1, SeqCst);
}

fn submit(pool: &Pool, lane: usize, n: usize) -> u64 {
    let spec = TaskSpec::new(tracked, arg(lane, n)).free_fns(Some(free_arg), Some(free_result));
    pool.submit(spec, table::snapshot()).unwrap()
}

fn wait_ok(h: u64) {
    assert_eq!(
        task::wait(h, Some(Duration::from_secs(10)), false)
            .unwrap()
            .status,
        ASYNCIFY_OK
    );
    task::release(h).unwrap();
}

#[test]
fn the_limit_holds_and_tasks_overlap_up_to_it() {
    let lane = &LANE_STORE[0];
    lane.sleep_ms.store(100, SeqCst);
    let pool = Pool::new(2);
    let start = Instant::now();
    let hs: Vec<u64> = (0..6).map(|n| submit(&pool, 0, n)).collect();
    hs.into_iter().for_each(wait_ok);
    let took = start.elapsed();
    assert_eq!(lane.max_running.load(SeqCst), 2);
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(1),
        "{took:?}"
    );
    assert!(pool.stats().threads <= 2);
    assert_eq!(pool.shutdown(None), Ok(true));
}

#[test]
fn tasks_start_in_fifo_order_at_limit_one() {
    let lane = &LANE_STORE[1];
    let pool = Pool::new(1);
    let hs: Vec<u64> = (0..50).map(|n| submit(&pool, 1, n)).collect();
    hs.into_iter().for_each(wait_ok);
    assert_eq!(*lane.order.lock().unwrap(), (0..50).collect::<Vec<_>>());
    assert_eq!(pool.shutdown(None), Ok(true));
}

#[test]
fn raising_the_limit_starts_waiting_tasks_and_zero_pauses() {
    let lane = &LANE_STORE[2];
    lane.sleep_ms.store(50, SeqCst);
    let pool = Pool::new(0);
    let hs: Vec<u64> = (0..4).map(|n| submit(&pool, 2, n)).collect();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(lane.started.load(SeqCst), 0, "a paused pool starts nothing");
    assert_eq!(pool.stats().queued, 4);
    pool.set_max_workers(4);
    let deadline = Instant::now() + Duration::from_secs(2);
    while lane.max_running.load(SeqCst) < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        lane.max_running.load(SeqCst),
        4,
        "all four started together"
    );
    pool.set_max_workers(1);
    hs.into_iter().for_each(wait_ok);
    assert_eq!(pool.max_workers(), 1);
    assert_eq!(pool.shutdown(None), Ok(true));
}

#[test]
fn cancelling_a_running_task_abandons_it_and_keeps_its_slot() {
    let lane = &LANE_STORE[3];
    lane.sleep_ms.store(300, SeqCst);
    let pool = Pool::new(1);
    let long = submit(&pool, 3, 0);
    let next = submit(&pool, 3, 1);
    while lane.started.load(SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let waiter = std::thread::spawn(move || {
        let t = Instant::now();
        let seen = task::wait(long, None, true).unwrap();
        (seen.status, seen.result.is_null(), t.elapsed())
    });
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(task::cancel(long).unwrap().status, ASYNCIFY_CANCELLED);
    let (status, no_result, waited) = waiter.join().unwrap();
    assert_eq!(status, ASYNCIFY_CANCELLED);
    assert!(no_result);
    assert!(
        waited < Duration::from_millis(250),
        "the waiter was released at once: {waited:?}"
    );
    // The abandoned callable keeps the only slot: the next task waits for it.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        lane.started.load(SeqCst),
        1,
        "slot held until the abandoned fn returns"
    );
    wait_ok(next);
    assert!(
        lane.saw_cancel.load(SeqCst),
        "cancel_requested() was true inside"
    );
    assert_eq!(pool.shutdown(None), Ok(true));
    assert_eq!(
        lane.result_frees.load(SeqCst),
        1 + 1,
        "abandoned + unreceived result"
    );
    assert_eq!(
        lane.arg_frees.load(SeqCst),
        1,
        "only the abandoned task's arg"
    );
    assert_eq!(pool.stats().abandoned, 1);
    task::release(long).unwrap();
}

extern "C" fn outer_waits_for_inner(a: *mut c_void, _: *mut *mut c_void) -> i32 {
    let (lane, _) = lane_of(a);
    table::set("k", Value::Bytes(b"outer".to_vec().into()), false);
    let spec = TaskSpec::new(tracked, a);
    let pool = POOL_FOR_NESTING.lock().unwrap().clone().unwrap();
    let h = pool.submit(spec, table::snapshot()).unwrap();
    lane.inner_handle.store(h, SeqCst);
    let seen = task::wait(h, Some(Duration::from_secs(5)), false).unwrap();
    lane.inner_status.store(i64::from(seen.status), SeqCst);
    task::release(h).unwrap();
    0
}

static POOL_FOR_NESTING: Mutex<Option<Arc<Pool>>> = Mutex::new(None);

#[test]
fn a_task_waiting_for_a_queued_task_of_its_full_pool_runs_it_inline() {
    let lane = &LANE_STORE[4];
    let pool = Arc::new(Pool::new(1));
    *POOL_FOR_NESTING.lock().unwrap() = Some(pool.clone());
    let h = pool
        .submit(
            TaskSpec::new(outer_waits_for_inner, arg(4, 0)),
            Table::new(),
        )
        .unwrap();
    assert_eq!(
        task::wait(h, Some(Duration::from_secs(10)), false)
            .unwrap()
            .status,
        ASYNCIFY_OK
    );
    assert_eq!(lane.inner_status.load(SeqCst), i64::from(ASYNCIFY_OK));
    // The inner task saw the outer task's installed table, its change included.
    assert_eq!(*lane.seen.lock().unwrap(), vec![Some(b"outer".to_vec())]);
    assert_eq!(lane.max_running.load(SeqCst), 1);
    task::release(h).unwrap();
    POOL_FOR_NESTING.lock().unwrap().take();
    assert_eq!(pool.shutdown(None), Ok(true));
}

static SELF_HANDLE: AtomicU64 = AtomicU64::new(0);
static SELF_WAIT: AtomicI64 = AtomicI64::new(0);

extern "C" fn waits_for_itself(_: *mut c_void, _: *mut *mut c_void) -> i32 {
    while SELF_HANDLE.load(SeqCst) == 0 {
        std::thread::yield_now();
    }
    let code = match task::wait(SELF_HANDLE.load(SeqCst), None, false) {
        Err(e) => i64::from(e.status()),
        Ok(seen) => i64::from(seen.status),
    };
    SELF_WAIT.store(code, SeqCst);
    0
}

#[test]
fn a_task_waiting_for_itself_is_refused() {
    let pool = Pool::new(1);
    let h = pool
        .submit(
            TaskSpec::new(waits_for_itself, std::ptr::null_mut()),
            Table::new(),
        )
        .unwrap();
    SELF_HANDLE.store(h, SeqCst);
    wait_ok(h);
    assert_eq!(SELF_WAIT.load(SeqCst), i64::from(ASYNCIFY_E_WOULD_DEADLOCK));
    assert_eq!(pool.shutdown(None), Ok(true));
}

#[test]
fn shutdown_cancels_queued_tasks_and_waits_for_running_ones() {
    let lane = &LANE_STORE[5];
    lane.sleep_ms.store(100, SeqCst);
    let pool = Pool::new(1);
    let hs: Vec<u64> = (0..5).map(|n| submit(&pool, 5, n)).collect();
    while lane.started.load(SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(pool.shutdown(Some(Duration::from_secs(10))), Ok(true));
    assert_eq!(
        lane.running.load(SeqCst),
        0,
        "the running task finished before shutdown returned"
    );
    assert_eq!(lane.started.load(SeqCst), 1);
    assert_eq!(lane.arg_frees.load(SeqCst), 4);
    let statuses: Vec<i32> = hs
        .iter()
        .map(|&h| task::poll(h, false).unwrap().status)
        .collect();
    let c = ASYNCIFY_CANCELLED;
    assert_eq!(statuses, [ASYNCIFY_OK, c, c, c, c]);
    let refused = pool.submit(TaskSpec::new(tracked, arg(5, 9)), Table::new());
    assert_eq!(refused, Err(Error::ShutDown));
    for h in hs {
        task::release(h).unwrap();
    }
    let stats = pool.stats();
    assert_eq!(
        (stats.submitted, stats.completed, stats.cancelled),
        (5, 1, 4)
    );
}

#[test]
fn a_shutdown_that_times_out_leaves_the_task_to_finish() {
    let lane = &LANE_STORE[6];
    lane.sleep_ms.store(300, SeqCst);
    let pool = Pool::new(1);
    let h = submit(&pool, 6, 0);
    while lane.started.load(SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(pool.shutdown(Some(Duration::from_millis(20))), Ok(false));
    drop(pool);
    wait_ok(h);
}

extern "C" fn scribbles(a: *mut c_void, _: *mut *mut c_void) -> i32 {
    let (lane, _) = lane_of(a);
    lane.seen.lock().unwrap().push(bytes_of("k"));
    lane.seen.lock().unwrap().push(bytes_of("leak"));
    table::set("leak", Value::Bytes(b"x".to_vec().into()), false);
    table::set("k", Value::Bytes(b"changed".to_vec().into()), false);
    table::remove("k");
    let _ = table::scope_enter();
    table::set("leak2", Value::Bytes(Box::new([])), false);
    0
}

#[test]
fn a_tasks_changes_stay_in_the_task() {
    let lane = &LANE_STORE[7];
    let pool = Pool::new(1);
    std::thread::spawn(move || {
        table::set("k", Value::Bytes(b"mine".to_vec().into()), false);
        let h1 = pool
            .submit(TaskSpec::new(scribbles, arg(7, 0)), table::snapshot())
            .unwrap();
        let h2 = pool
            .submit(TaskSpec::new(scribbles, arg(7, 1)), Table::new())
            .unwrap();
        wait_ok(h1);
        wait_ok(h2);
        assert_eq!(bytes_of("k"), Some(b"mine".to_vec()));
        assert_eq!(table::count(), 1);
        assert_eq!(pool.shutdown(None), Ok(true));
    })
    .join()
    .unwrap();
    let seen = lane.seen.lock().unwrap().clone();
    assert_eq!(seen, vec![Some(b"mine".to_vec()), None, None, None]);
}

static LIVE_WORKERS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn counts_threads(_: *mut c_void, _: *mut *mut c_void) -> i32 {
    LIVE_WORKERS.fetch_add(1, SeqCst);
    std::thread::sleep(Duration::from_millis(20));
    0
}

#[test]
fn threads_never_exceed_the_limit_and_are_reused() {
    let pool = Pool::new(3);
    let hs: Vec<u64> = (0..30)
        .map(|_| {
            pool.submit(
                TaskSpec::new(counts_threads, std::ptr::null_mut()),
                Table::new(),
            )
            .unwrap()
        })
        .collect();
    let mut max_threads = 0;
    for h in hs {
        max_threads = max_threads.max(pool.stats().threads);
        wait_ok(h);
    }
    assert!(max_threads <= 3, "{max_threads} threads for a limit of 3");
    assert_eq!(LIVE_WORKERS.load(SeqCst), 30);
    assert_eq!(pool.shutdown(None), Ok(true));
}

static HOOK_STARTS: AtomicU32 = AtomicU32::new(0);
static HOOK_STOPS: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_start(data: *mut c_void) {
    assert_eq!(data as usize, 42);
    HOOK_STARTS.fetch_add(1, SeqCst);
}

extern "C" fn on_stop(_: *mut c_void) {
    HOOK_STOPS.fetch_add(1, SeqCst);
}

#[test]
fn idle_workers_leave_after_the_keep_alive_and_hooks_bracket_them() {
    let lane = &LANE_STORE[8];
    lane.sleep_ms.store(20, SeqCst);
    let pool = Pool::with_options(PoolOptions {
        max_workers: 3,
        keep_alive: Duration::from_millis(50),
        thread_name: "hooked".into(),
        on_thread_start: Some(on_start),
        on_thread_stop: Some(on_stop),
        hook_data: 42,
        ..PoolOptions::default()
    });
    let hs: Vec<u64> = (0..6).map(|n| submit(&pool, 8, n)).collect();
    hs.into_iter().for_each(wait_ok);
    let started = HOOK_STARTS.load(SeqCst);
    assert!(
        (1..=3).contains(&started),
        "{started} workers for a limit of 3"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while pool.stats().threads > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        pool.stats().threads,
        0,
        "idle workers left after the keep-alive"
    );
    while HOOK_STOPS.load(SeqCst) < started && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        HOOK_STOPS.load(SeqCst),
        started,
        "every started worker ran the stop hook"
    );
    // The pool still works: new workers come.
    wait_ok(submit(&pool, 8, 9));
    assert_eq!(pool.shutdown(None), Ok(true));
}

#[test]
fn release_slot_on_abandon_lets_the_next_task_start_at_once() {
    let lane = &LANE_STORE[9];
    lane.sleep_ms.store(400, SeqCst);
    let pool = Pool::with_options(PoolOptions {
        max_workers: 1,
        release_slot_on_abandon: true,
        ..PoolOptions::default()
    });
    let long = submit(&pool, 9, 0);
    let next = submit(&pool, 9, 1);
    while lane.started.load(SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(task::cancel(long).unwrap().status, ASYNCIFY_CANCELLED);
    let deadline = Instant::now() + Duration::from_millis(300);
    while lane.started.load(SeqCst) < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        lane.started.load(SeqCst),
        2,
        "the next task started while the abandoned one runs"
    );
    assert_eq!(lane.max_running.load(SeqCst), 2);
    assert_eq!(pool.stats().running, 2);
    wait_ok(next);
    // Shutdown also waits for the abandoned callable, slot or not.
    assert_eq!(pool.shutdown(None), Ok(true));
    assert_eq!(lane.running.load(SeqCst), 0);
    assert_eq!(lane.arg_frees.load(SeqCst), 1);
    let stats = pool.stats();
    assert_eq!((stats.running, stats.abandoned, stats.completed), (0, 1, 1));
    task::release(long).unwrap();
}

#[test]
fn a_queue_bound_refuses_submissions_when_full() {
    let pool = Pool::with_options(PoolOptions {
        max_workers: 0,
        max_queued: 2,
        ..PoolOptions::default()
    });
    let a = pool
        .submit(TaskSpec::new(tracked, arg(10, 0)), Table::new())
        .unwrap();
    let b = pool
        .submit(TaskSpec::new(tracked, arg(10, 1)), Table::new())
        .unwrap();
    let refused = pool.submit(TaskSpec::new(tracked, arg(10, 2)), Table::new());
    assert_eq!(refused, Err(Error::Busy));
    task::cancel(a).unwrap();
    let c = pool
        .submit(TaskSpec::new(tracked, arg(10, 3)), Table::new())
        .unwrap();
    pool.set_max_workers(2);
    wait_ok(b);
    wait_ok(c);
    task::release(a).unwrap();
    assert_eq!(LANE_STORE[10].started.load(SeqCst), 2);
    assert_eq!(pool.stats().submitted, 3);
    assert_eq!(pool.shutdown(None), Ok(true));
}

#[test]
fn completions_go_to_the_queue_with_their_results() {
    let lane = &LANE_STORE[11];
    let cq = Arc::new(CompletionQueue::new().unwrap());
    let pool = Pool::new(2);
    let mut hs: Vec<u64> = (0..20)
        .map(|n| {
            let spec = TaskSpec::new(tracked, arg(11, n))
                .on_done(None, arg(11, 100 + n))
                .completion_queue(Some(cq.clone()));
            pool.submit(spec, Table::new()).unwrap()
        })
        .collect();
    let mut seen = Vec::new();
    while seen.len() < 20 {
        cq.wait(Some(Duration::from_secs(5))).unwrap();
        cq.drain(64, |c| seen.push(c));
    }
    assert_eq!(
        cq.wait(Some(Duration::from_millis(10))),
        Err(WaitEnd::Timeout)
    );
    for c in &seen {
        assert_eq!(c.status, ASYNCIFY_OK);
        assert_eq!(
            c.result,
            c.user_data - 100,
            "the record carries the result and the data"
        );
        assert!(hs.contains(&c.handle));
        assert!(
            task::poll(c.handle, true).unwrap().result.is_null(),
            "the result moved once"
        );
    }
    hs.sort();
    let mut from_queue: Vec<u64> = seen.iter().map(|c| c.handle).collect();
    from_queue.sort();
    assert_eq!(from_queue, hs);
    hs.into_iter().for_each(|h| task::release(h).unwrap());
    assert_eq!(lane.started.load(SeqCst), 20);
    assert!(cq.close().is_empty());
    assert_eq!(pool.shutdown(None), Ok(true));
}

static ON_DONE_SELF_WAIT: AtomicI64 = AtomicI64::new(0);

extern "C" fn on_done_waits_for_itself(
    _: *mut c_void,
    handle: u64,
    _: i32,
    _: *mut c_void,
    _: i32,
) {
    let code = match task::wait(handle, Some(Duration::from_secs(5)), false) {
        Err(e) => i64::from(e.status()),
        Ok(seen) => i64::from(seen.status),
    };
    ON_DONE_SELF_WAIT.store(code, SeqCst);
}

#[test]
fn on_done_waiting_for_its_own_task_is_refused() {
    let pool = Pool::new(1);
    let spec = TaskSpec::new(tracked, arg(12, 0))
        .on_done(Some(on_done_waits_for_itself), std::ptr::null_mut());
    let h = pool.submit(spec, Table::new()).unwrap();
    let t = Instant::now();
    wait_ok(h);
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "no hang until the wait's timeout"
    );
    assert_eq!(
        ON_DONE_SELF_WAIT.load(SeqCst),
        i64::from(ASYNCIFY_E_WOULD_DEADLOCK)
    );
    assert_eq!(pool.shutdown(None), Ok(true));
}

extern "C" fn returns_at_once(_: *mut c_void, _: *mut *mut c_void) -> i32 {
    0
}

/// A limited task with a 1 ms start deadline can expire before its submit
/// returns: it must already count as waiting for its limiter then. (It once
/// did not: the expiry took the limiter's count below zero, an overflow
/// panic on the timer thread in debug builds, a wrapped count in release.)
/// CPU hogs and a lowered priority make the submitter lose its CPU when it
/// wakes the timer; the stats never show more than the one waiting task.
#[test]
fn a_limited_task_may_expire_before_its_submit_returns() {
    use asyncify::limiter::{Limiter, LimiterOptions};
    let pool = Pool::new(1);
    let stop = AtomicBool::new(false);
    let mut submitted = 0u64;
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                while !stop.load(SeqCst) {
                    std::hint::spin_loop();
                }
            });
        }
        s.spawn(|| {
            // SAFETY: nice() takes no pointers; on Linux it lowers this thread only.
            unsafe { libc::nice(19) };
            let until = Instant::now() + Duration::from_secs(2);
            while Instant::now() < until {
                let paused = Limiter::new(LimiterOptions {
                    max_running: 0,
                    ..LimiterOptions::default()
                })
                .unwrap();
                let spec = TaskSpec::new(returns_at_once, std::ptr::null_mut())
                    .limiter(Some(&paused))
                    .start_within_ms(1)
                    .detached(true);
                pool.submit(spec, Table::new()).unwrap();
                submitted += 1;
                assert!(paused.stats().waiting <= 1, "{:?}", paused.stats());
                // An empty timer heap at the next submit: its entry is the
                // earliest, so the submit wakes the timer.
                std::thread::sleep(Duration::from_millis(2));
            }
            stop.store(true, SeqCst);
        });
    });
    let quiet = Instant::now() + Duration::from_secs(10);
    while pool.stats().expired < submitted && Instant::now() < quiet {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(pool.stats().expired, submitted);
}

extern "C" fn sleeps_100ms(_: *mut c_void, _: *mut *mut c_void) -> i32 {
    std::thread::sleep(Duration::from_millis(100));
    0
}

/// An `on_done` that holds its thread (the timer's) for 600 ms.
extern "C" fn done_slowly(_: *mut c_void, _: u64, _: i32, _: *mut c_void, _: i32) {
    std::thread::sleep(Duration::from_millis(600));
}

/// Records when it ran (ms since `T0`) in the AtomicI64 at `data`.
extern "C" fn done_at(data: *mut c_void, _: u64, status: i32, _: *mut c_void, _: i32) {
    assert_eq!(status, ASYNCIFY_EXPIRED);
    // SAFETY: data is the test's AtomicI64, alive until the test ends.
    let at = unsafe { &*(data as *const AtomicI64) };
    at.store(T0.elapsed().as_millis() as i64, SeqCst);
}

static T0: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);

/// A worker that finds an overdue task expires it and makes its callbacks
/// before it parks (they once waited for the worker's next wake-up, up to its
/// 10 s keep-alive). The timer is kept busy in another expiry's slow
/// `on_done`, so that the worker is the one to notice.
#[test]
fn a_task_a_worker_expires_is_reported_before_the_worker_parks() {
    let t0 = *T0;
    let busy_timer = Pool::new(0);
    let h = busy_timer
        .submit(
            TaskSpec::new(returns_at_once, std::ptr::null_mut())
                .start_within_ms(1)
                .on_done(Some(done_slowly), std::ptr::null_mut()),
            Table::new(),
        )
        .unwrap();
    let pool = Pool::new(1);
    let a = pool
        .submit(
            TaskSpec::new(sleeps_100ms, std::ptr::null_mut()),
            Table::new(),
        )
        .unwrap();
    let reported = AtomicI64::new(-1);
    let b = pool
        .submit(
            TaskSpec::new(returns_at_once, std::ptr::null_mut())
                .start_within_ms(50)
                .on_done(Some(done_at), &reported as *const AtomicI64 as *mut c_void),
            Table::new(),
        )
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while reported.load(SeqCst) < 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let at = reported.load(SeqCst);
    assert!(at >= 50, "expired at {at} ms, before its deadline");
    assert!(
        at < 450,
        "its on_done ran {at} ms after the submit, not at once"
    );
    assert!(t0.elapsed() < Duration::from_secs(3));
    for h in [h, a, b] {
        task::wait(h, Some(Duration::from_secs(5)), false).unwrap();
        task::release(h).unwrap();
    }
}

extern "C" fn does_nothing(_: *mut c_void, _: *mut *mut c_void) -> i32 {
    0
}

/// A submit racing the keep-alive of the pool's only worker: the worker
/// still counted in `threads` made the submit start nobody, then it left.
/// The task must still run (it once stayed queued with no worker).
#[test]
fn a_submit_racing_the_last_workers_keep_alive_still_runs() {
    let pool = Pool::with_options(PoolOptions {
        max_workers: 1,
        keep_alive: Duration::from_millis(1),
        ..PoolOptions::default()
    });
    for round in 0..400u64 {
        // Pauses around the keep-alive, so that some submits land just as
        // the worker's wait times out.
        std::thread::sleep(Duration::from_micros(600 + (round % 9) * 100));
        let h = pool
            .submit(
                TaskSpec::new(does_nothing, std::ptr::null_mut()),
                Table::new(),
            )
            .unwrap();
        let seen = task::wait(h, Some(Duration::from_secs(5)), false).unwrap();
        assert_eq!(
            seen.status, ASYNCIFY_OK,
            "round {round}: the task never ran"
        );
        task::release(h).unwrap();
    }
    assert_eq!(pool.shutdown(None), Ok(true));
}

/// A worker's start hook that takes a while: the worker counts as coming
/// meanwhile, so submits wake nobody else.
extern "C" fn slow_start(_: *mut c_void) {
    std::thread::sleep(Duration::from_millis(50));
}

/// The first worker takes a slot for an entry whose task left the queue
/// (cancelled while that worker was starting): it must still wake the next
/// worker for the tasks queued behind, so that they run side by side, not
/// one after another on that one worker.
#[test]
fn a_worker_skipping_a_cancelled_task_still_wakes_the_next() {
    let lane = &LANE_STORE[12];
    lane.sleep_ms.store(300, SeqCst);
    let pool = Pool::with_options(PoolOptions {
        max_workers: 4,
        on_thread_start: Some(slow_start),
        ..PoolOptions::default()
    });
    let first = submit(&pool, 12, 0);
    assert_eq!(task::cancel(first).unwrap().status, ASYNCIFY_CANCELLED);
    task::release(first).unwrap();
    let start = Instant::now();
    let hs: Vec<u64> = (1..5).map(|n| submit(&pool, 12, n)).collect();
    hs.into_iter().for_each(wait_ok);
    let took = start.elapsed();
    assert!(
        lane.max_running.load(SeqCst) >= 2,
        "the queued tasks ran one by one ({took:?})"
    );
    assert!(took < Duration::from_millis(1100), "{took:?}");
    assert_eq!(pool.shutdown(None), Ok(true));
}

/// Eight tasks that sleep, at limit 8, run side by side on any machine:
/// where fewer CPUs than that are spare, the pool's watcher sees the
/// running workers start no task for a while and brings in the rest.
#[test]
fn tasks_that_block_get_every_slot_whatever_the_cpus() {
    let lane = &LANE_STORE[13];
    lane.sleep_ms.store(200, SeqCst);
    let pool = Pool::new(8);
    let start = Instant::now();
    let hs: Vec<u64> = (0..8).map(|n| submit(&pool, 13, n)).collect();
    hs.into_iter().for_each(wait_ok);
    let took = start.elapsed();
    assert_eq!(lane.max_running.load(SeqCst), 8, "{took:?}");
    assert!(took < Duration::from_millis(1000), "{took:?}");
    assert_eq!(pool.shutdown(None), Ok(true));
}

/// A task submitted while another one runs long starts within moments,
/// however few CPUs the machine has (the watcher's first look is short).
#[test]
fn a_task_submitted_beside_a_long_one_starts_soon() {
    let lane = &LANE_STORE[14];
    lane.sleep_ms.store(400, SeqCst);
    let pool = Pool::new(8);
    let long = submit(&pool, 14, 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    while lane.started.load(SeqCst) < 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    lane.sleep_ms.store(0, SeqCst);
    let start = Instant::now();
    let quick = submit(&pool, 14, 1);
    wait_ok(quick);
    let took = start.elapsed();
    assert_eq!(lane.running.load(SeqCst), 1, "the long task still runs");
    assert!(took < Duration::from_millis(200), "{took:?}");
    wait_ok(long);
    assert_eq!(pool.shutdown(None), Ok(true));
}
