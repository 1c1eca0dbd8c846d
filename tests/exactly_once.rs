//! Under races of submit, start, finish, cancel
//! and release, every task is reported exactly once, with a status consistent
//! with whether its function ran; every argument and result is freed exactly
//! when the contract says, never twice.
//!
//! Work functions are C callbacks; each task's `arg` is its index + 1, so the
//! callbacks find the task's counters without any pointer casting.

// Calls the C ABI as a C program would: raw pointers, hence unsafe blocks.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use asyncify::pool::Pool;
use asyncify::status::*;
use asyncify::table::Table;
use asyncify::task::{self, TaskSpec};
use once_cell::sync::Lazy;

const TASKS: usize = 100_000;
const THREADS: usize = 4;

#[derive(Default)]
struct Events {
    ran: AtomicU32,
    done_calls: AtomicU32,
    done_status: AtomicU32,
    result_received: AtomicU32,
    result_freed: AtomicU32,
    arg_freed: AtomicU32,
}

static EVENTS: Lazy<Vec<Events>> = Lazy::new(|| (0..TASKS).map(|_| Events::default()).collect());

fn events(p: *mut c_void) -> &'static Events {
    &EVENTS[p as usize - 1]
}

extern "C" fn work(arg: *mut c_void, out: *mut *mut c_void) -> i32 {
    let e = events(arg);
    e.ran.fetch_add(1, SeqCst);
    let i = arg as usize;
    if i % 97 == 0 {
        std::thread::sleep(Duration::from_micros(200));
    }
    // The result names the task too; writing it through `out` is the C
    // contract of a work function.
    // SAFETY: `out` is the library's valid result slot for this call.
    unsafe { *out = arg };
    (i % 5 == 0) as i32
}

/// `data` is the task's arg, so the callback finds the task's counters.
extern "C" fn on_done(data: *mut c_void, _: u64, status: i32, result: *mut c_void, _: i32) {
    let e = events(data);
    e.done_calls.fetch_add(1, SeqCst);
    e.done_status.store(status as u32, SeqCst);
    if !result.is_null() {
        events(result).result_received.fetch_add(1, SeqCst);
    }
}

extern "C" fn free_result(p: *mut c_void) {
    events(p).result_freed.fetch_add(1, SeqCst);
}

extern "C" fn free_arg(p: *mut c_void) {
    events(p).arg_freed.fetch_add(1, SeqCst);
}

#[test]
fn every_task_is_reported_exactly_once_under_races() {
    let pool = Arc::new(Pool::new(8));
    let per_thread = TASKS / THREADS;
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ t as u64;
                for k in 0..per_thread {
                    let i = t * per_thread + k + 1;
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let arg = i as *mut c_void;
                    let with_callback = x % 2 == 0;
                    let spec = TaskSpec::new(work, arg)
                        .free_fns(Some(free_arg), Some(free_result))
                        .on_done(with_callback.then_some(on_done as _), arg);
                    let h = pool.submit(spec, Table::new()).expect("submit");
                    match (x >> 8) % 6 {
                        0 => {
                            task::cancel(h).unwrap();
                            task::release(h).unwrap();
                        }
                        1 => task::release(h).unwrap(),
                        2 => {
                            let seen = task::wait(h, None, true).unwrap();
                            if !seen.result.is_null() {
                                events(seen.result).result_received.fetch_add(1, SeqCst);
                            }
                            task::release(h).unwrap();
                        }
                        3 => {
                            std::thread::yield_now();
                            let outcome = task::cancel(h).unwrap();
                            assert_ne!(outcome.status, ASYNCIFY_PENDING);
                            assert_eq!(task::cancel(h).unwrap(), outcome, "cancel twice agrees");
                            task::release(h).unwrap();
                        }
                        4 => {
                            let seen = task::poll(h, true).unwrap();
                            if !seen.result.is_null() {
                                events(seen.result).result_received.fetch_add(1, SeqCst);
                            }
                            task::release(h).unwrap();
                        }
                        _ => {
                            let seen =
                                task::wait(h, Some(Duration::from_micros(50)), false).unwrap();
                            assert!(matches!(
                                seen.status,
                                ASYNCIFY_OK
                                    | ASYNCIFY_FAILED
                                    | ASYNCIFY_CANCELLED
                                    | ASYNCIFY_TIMEOUT
                            ));
                            task::release(h).unwrap();
                        }
                    }
                    assert_eq!(task::release(h), Err(Error::InvalidHandle));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(pool.shutdown(Some(Duration::from_secs(60))), Ok(true));

    let stats = pool.stats();
    let (mut ran, mut never_ran, mut abandoned) = (0u64, 0u64, 0u64);
    for (i, e) in EVENTS.iter().enumerate() {
        let ran_fn = e.ran.load(SeqCst);
        assert!(ran_fn <= 1, "task {i} ran {ran_fn} times");
        let results = e.result_received.load(SeqCst) + e.result_freed.load(SeqCst);
        let args = e.arg_freed.load(SeqCst);
        let done = e.done_calls.load(SeqCst);
        assert!(done <= 1, "task {i}: on_done called {done} times");
        let status = e.done_status.load(SeqCst) as i32;
        if ran_fn == 1 {
            ran += 1;
            assert_eq!(results, 1, "task {i}: the result moved {results} times");
            if args == 1 {
                abandoned += 1;
                if done == 1 {
                    assert_eq!(
                        status, ASYNCIFY_CANCELLED,
                        "task {i}: abandoned but reported {status}"
                    );
                }
                assert_eq!(
                    e.result_received.load(SeqCst),
                    0,
                    "task {i}: an abandoned result was delivered"
                );
            } else {
                assert_eq!(args, 0, "task {i}: arg freed {args} times");
                if done == 1 {
                    assert!(
                        matches!(status, ASYNCIFY_OK | ASYNCIFY_FAILED),
                        "task {i}: ran, reported {status}"
                    );
                }
            }
        } else {
            never_ran += 1;
            assert_eq!(args, 1, "task {i} never ran: arg freed {args} times");
            assert_eq!(results, 0);
            if done == 1 {
                assert_eq!(status, ASYNCIFY_CANCELLED);
            }
        }
    }
    assert_eq!(ran + never_ran, TASKS as u64);
    assert_eq!(stats.submitted, TASKS as u64);
    assert_eq!(stats.cancelled, never_ran);
    assert_eq!(stats.abandoned, abandoned);
    assert_eq!(stats.completed + stats.failed + stats.abandoned, ran);
    assert_eq!(stats.running, 0);
    assert_eq!(stats.queued, 0);
    assert_eq!(task::live_handles(), 0, "every handle was released");
    eprintln!("ran {ran}, never ran {never_ran}, abandoned {abandoned}");
    assert!(never_ran > 0 && ran > 0, "the test exercised both paths");
}
