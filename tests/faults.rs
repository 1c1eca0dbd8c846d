//! Fault injection from Rust, and regression tests for the
//! pool races the stress and model tests found. The C side
//! (`tests/c/test_faults.c`) covers failing work functions, callbacks that
//! call back into the library, thread creation failing while workers exist
//! (pthread_create interposed), descriptors running out and allocation failure.
//!
//! Panics. A work function is an `extern "C" fn`: by Rust's rules a panic
//! cannot unwind out of it, the process aborts. So what "a work function that
//! panics" can mean, honestly:
//! - a Rust work function that catches its own panic at its boundary (the only
//!   correct way to write one) returns a failure code: the task is FAILED, the
//!   pool goes on, the worker's table is restored, the next task sees its own;
//! - the library's own guard (`overrides::Installed`, used by every task and
//!   by `asyncify_context_run`) restores the thread's table when the code under
//!   it unwinds;
//! - a panic that is not caught aborts the process at once, with Rust's message:
//!   no hang, no half-run state (checked in a child process).
//!
//! A panic inside the library is turned into `ASYNCIFY_E_PANIC` by `ffi::guard`;
//! no input reaches one from outside (that is the point), so it is not tested
//! here.
//!
//! Child processes: some scenarios need a fresh process (a panic that aborts,
//! thread creation that always fails). The test re-runs this binary with
//! `ASYNCIFY_FAULTS_CHILD` set; the test of that name then plays the child.

// Calls the C ABI as a C program would: raw pointers, hence unsafe blocks.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::mem::{size_of, zeroed};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::Command;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use asyncify::ffi::error::asyncify_last_error;
use asyncify::ffi::overrides::*;
use asyncify::ffi::pool::*;
use asyncify::ffi::task::*;
use asyncify::overrides::{self, Frame, Installed};
use asyncify::status::*;
use asyncify::table::{Table, Value};

const CHILD_ENV: &str = "ASYNCIFY_FAULTS_CHILD";

fn options(pool: *mut asyncify_pool) -> asyncify_submit_options {
    // SAFETY: plain old data; init fills it.
    let mut o: asyncify_submit_options = unsafe { zeroed() };
    assert_eq!(
        asyncify_submit_options_init(&mut o, size_of::<asyncify_submit_options>()),
        0
    );
    o.pool = pool;
    o
}

fn new_pool(n: u32) -> *mut asyncify_pool {
    let mut p = null_mut();
    assert_eq!(asyncify_pool_new(n, &mut p), ASYNCIFY_OK);
    p
}

fn submit(
    pool: *mut asyncify_pool,
    work: extern "C" fn(*mut c_void, *mut *mut c_void) -> i32,
    arg: usize,
) -> u64 {
    let mut h = 0;
    assert_eq!(
        asyncify_submit(Some(work), arg as *mut c_void, &options(pool), &mut h),
        ASYNCIFY_OK
    );
    h
}

fn wait(h: u64) -> (i32, i32) {
    let mut code = 0;
    let s = asyncify_wait(h, 10_000, null_mut(), &mut code);
    assert_eq!(asyncify_release(h), ASYNCIFY_OK);
    (s, code)
}

fn count() -> usize {
    let mut n = usize::MAX;
    assert_eq!(asyncify_override_count(&mut n), ASYNCIFY_OK);
    n
}

fn stats(pool: *mut asyncify_pool) -> asyncify_pool_stats {
    // SAFETY: plain old data.
    let mut s: asyncify_pool_stats = unsafe { zeroed() };
    s.struct_size = size_of::<asyncify_pool_stats>() as u32;
    assert_eq!(asyncify_stats(pool, &mut s), ASYNCIFY_OK);
    s
}

/// The calling thread's `asyncify_last_error` message.
fn last_error() -> String {
    let mut buf = [0u8; 512];
    let mut len = 0;
    assert_eq!(
        asyncify_last_error(buf.as_mut_ptr().cast(), buf.len(), &mut len),
        ASYNCIFY_OK
    );
    String::from_utf8_lossy(&buf[..len.saturating_sub(1)]).into_owned()
}

/// Runs this test again in a child process that plays `scenario`.
fn run_child(test: &str, scenario: &str, extra_env: &[(&str, &str)]) -> std::process::Output {
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = Command::new(exe);
    cmd.args([test, "--exact", "--test-threads=1", "--nocapture"])
        .env(CHILD_ENV, scenario);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.output().expect("child process")
}

/// `run_child` with every new thread's default stack 1 TiB: glibc takes it
/// from `RLIMIT_STACK` at start, std from `RUST_MIN_STACK`.
fn run_child_with_huge_stacks(test: &str, scenario: &str) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    const HUGE: u64 = 1 << 40;
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = Command::new(exe);
    cmd.args([test, "--exact", "--test-threads=1", "--nocapture"])
        .env(CHILD_ENV, scenario)
        .env("RUST_MIN_STACK", HUGE.to_string());
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(|| {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_STACK, &mut limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            limit.rlim_cur = if limit.rlim_max == libc::RLIM_INFINITY {
                HUGE
            } else {
                limit.rlim_max
            };
            if libc::setrlimit(libc::RLIMIT_STACK, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.output().expect("child process")
}

fn child_scenario() -> Option<String> {
    std::env::var(CHILD_ENV).ok()
}

// ---- panics ----

/// A Rust work function written the only sound way: its body runs under
/// `catch_unwind`, and a panic becomes a failure code. The body scribbles on
/// the task's table, leaves a scope open, then panics.
extern "C" fn panics_but_catches(arg: *mut c_void, _out: *mut *mut c_void) -> i32 {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        assert_eq!(
            asyncify_override_set(c"scribble".as_ptr(), b"x".as_ptr().cast(), 1),
            ASYNCIFY_OK
        );
        let mut t = 0;
        assert_eq!(asyncify_scope_enter(&mut t), ASYNCIFY_OK);
        assert_eq!(
            asyncify_override_set(c"k".as_ptr(), b"changed".as_ptr().cast(), 7),
            ASYNCIFY_OK
        );
        if arg as usize == 1 {
            panic!("a panic inside a Rust work function");
        }
    }));
    match outcome {
        Ok(()) => 0,
        Err(_) => 101,
    }
}

/// Reports what the task sees: key "k" and how many keys.
extern "C" fn reports_table(arg: *mut c_void, _out: *mut *mut c_void) -> i32 {
    let seen = arg as *const AtomicU64;
    let mut buf = [0u8; 16];
    let mut len = 0usize;
    let s = asyncify_override_get(c"k".as_ptr(), buf.as_mut_ptr().cast(), buf.len(), &mut len);
    let k_is_mine = s == ASYNCIFY_OK && &buf[..len] == b"mine";
    let scribble_absent = {
        let mut n = 0usize;
        asyncify_override_get(c"scribble".as_ptr(), null_mut(), 0, &mut n) == ASYNCIFY_E_NOT_FOUND
    };
    // SAFETY: the test passes a pointer to an AtomicU64 that outlives the task.
    let seen = unsafe { &*seen };
    seen.store(
        u64::from(k_is_mine) | u64::from(scribble_absent) << 1 | (count() as u64) << 8,
        SeqCst,
    );
    0
}

#[test]
fn a_rust_work_function_that_panics_and_catches_it_fails_cleanly_and_the_pool_goes_on() {
    let pool = new_pool(1) as usize;
    std::thread::spawn(move || {
        let pool = pool as *mut asyncify_pool;
        assert_eq!(
            asyncify_override_set(c"k".as_ptr(), b"mine".as_ptr().cast(), 4),
            ASYNCIFY_OK
        );
        for round in 0..50 {
            let (s, code) = wait(submit(pool, panics_but_catches, 1));
            assert_eq!((s, code), (ASYNCIFY_FAILED, 101), "round {round}");
            // The same worker (limit 1) runs the next task: it sees its own
            // submitter's table, none of the panicking task's changes.
            let seen = AtomicU64::new(0);
            let h = submit(pool, reports_table, &seen as *const AtomicU64 as usize);
            assert_eq!(wait(h).0, ASYNCIFY_OK);
            let v = seen.load(SeqCst);
            assert_eq!(v & 1, 1, "the next task sees the submitter's k");
            assert_eq!(v >> 1 & 1, 1, "the panicking task's key did not leak");
            assert_eq!(v >> 8, 1, "exactly the submitter's one key");
        }
        // The submitter's table is untouched.
        assert_eq!(count(), 1);
        let st = stats(pool);
        assert_eq!(
            (st.failed, st.completed, st.threads),
            (50, 50, 1),
            "one worker served it all"
        );
        assert_eq!(asyncify_pool_free(pool, -1), ASYNCIFY_OK);
    })
    .join()
    .unwrap();
}

#[test]
fn the_librarys_frame_guard_restores_the_table_when_the_code_under_it_unwinds() {
    std::thread::spawn(|| {
        overrides::set("k", Value::Bytes(b"outer".as_slice().into()), false);
        let outer = overrides::scope_enter();
        let mut snapshot = Table::new();
        snapshot.insert(
            "task-key",
            std::sync::Arc::new(Value::Bytes(b"t".as_slice().into())),
        );
        let unwound = catch_unwind(AssertUnwindSafe(|| {
            let _frame = Installed::new(Frame::for_task(&snapshot));
            assert!(
                overrides::get("k").is_none(),
                "the task's table is installed"
            );
            overrides::set("inside", Value::Bytes(b"x".as_slice().into()), false);
            let _ = overrides::scope_enter();
            panic!("unwinding through an installed frame");
        }));
        assert!(unwound.is_err());
        assert!(
            overrides::get("inside").is_none(),
            "nothing of the frame is left"
        );
        assert!(overrides::get("task-key").is_none());
        assert!(matches!(&*overrides::get("k").unwrap(), Value::Bytes(b) if &b[..] == b"outer"));
        // The thread's own scope stack is intact: its scope exits in order.
        assert_eq!(overrides::scope_exit(outer), Ok(()));
        assert_eq!(overrides::count(), 1);
    })
    .join()
    .unwrap();
}

extern "C" fn panics_uncaught(_: *mut c_void, _: *mut *mut c_void) -> i32 {
    panic!("an uncaught panic in a work function");
}

#[test]
fn an_uncaught_panic_in_a_work_function_aborts_the_process_at_once() {
    const NAME: &str = "an_uncaught_panic_in_a_work_function_aborts_the_process_at_once";
    if child_scenario().as_deref() == Some("panic") {
        let pool = new_pool(1);
        let h = submit(pool, panics_uncaught, 0);
        asyncify_wait(h, 10_000, null_mut(), null_mut());
        // Not reached: the worker aborted the process.
        std::process::exit(7);
    }
    if child_scenario().is_some() {
        return;
    }
    let out = run_child(NAME, "panic", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "expected an abort, got {:?}; stderr:\n{stderr}",
        out.status
    );
    assert!(
        stderr.contains("an uncaught panic in a work function"),
        "{stderr}"
    );
    assert!(stderr.contains("cannot unwind"), "{stderr}");
}

// ---- thread creation failing ----

extern "C" fn marks(arg: *mut c_void, _: *mut *mut c_void) -> i32 {
    // SAFETY: the test passes a pointer to a static AtomicBool.
    unsafe { &*(arg as *const AtomicBool) }.store(true, SeqCst);
    0
}

static RAN: AtomicBool = AtomicBool::new(false);
static DONE_AFTER_REFUSAL: AtomicBool = AtomicBool::new(false);

extern "C" fn done_after_refusal(_: *mut c_void, _: u64, _: i32, _: *mut c_void, _: i32) {
    DONE_AFTER_REFUSAL.store(true, SeqCst);
}

/// With `RLIMIT_STACK` (the default stack of a new POSIX thread, which
/// workers get) and `RUST_MIN_STACK` (std's) beyond any address space, every
/// thread creation fails in the child: no worker can ever be created. Submit
/// must then refuse with a clear error, or the task must run; accepting it and
/// never running it is a hang.
#[test]
fn when_no_worker_thread_can_be_created_submit_refuses_or_the_task_runs() {
    const NAME: &str = "when_no_worker_thread_can_be_created_submit_refuses_or_the_task_runs";
    if let Some(which) = child_scenario() {
        if which != "no-threads" && which != "no-threads-default-pool" {
            return;
        }
        assert!(
            std::thread::Builder::new().spawn(|| ()).is_err(),
            "thread spawn must fail here"
        );
        let pool = if which == "no-threads" {
            new_pool(2)
        } else {
            null_mut()
        };
        let mut h = 0;
        let s = asyncify_submit(
            Some(marks),
            &RAN as *const AtomicBool as *mut c_void,
            &options(pool),
            &mut h,
        );
        if s != ASYNCIFY_OK {
            let message = last_error();
            let st = stats(pool);
            println!(
                "CHILD submit refused: {s} ({message}), submitted {}, queued {}",
                st.submitted, st.queued
            );
            // Refused cleanly: the contract's status, a message that says
            // why, no handle, and nothing left counted in the pool.
            let mut clean = s == ASYNCIFY_E_OUT_OF_MEMORY
                && message.contains("worker thread")
                && h == 0
                && st.submitted == 0
                && st.queued == 0;
            if !pool.is_null() {
                // A refused submit calls nothing, not even when the pool's
                // shutdown later drains what the refused task left behind.
                let mut o = options(pool);
                o.on_done = Some(done_after_refusal);
                let mut h2 = 0;
                let again = asyncify_submit(
                    Some(marks),
                    &RAN as *const AtomicBool as *mut c_void,
                    &o,
                    &mut h2,
                );
                clean &= again == ASYNCIFY_E_OUT_OF_MEMORY;
                asyncify_pool_free(pool, 0);
                let called = DONE_AFTER_REFUSAL.load(SeqCst);
                println!("CHILD on_done after a refused submit and the pool's free: {called}");
                clean &= !called;
            }
            std::process::exit(if clean { 0 } else { 4 });
        }
        let w = asyncify_wait(h, 2000, null_mut(), null_mut());
        let st = stats(pool);
        println!(
            "CHILD submit OK, wait(2000) -> {w}, ran {}, threads {}, queued {}",
            RAN.load(SeqCst),
            st.threads,
            st.queued
        );
        std::process::exit(if w == ASYNCIFY_OK && RAN.load(SeqCst) {
            0
        } else {
            3
        });
    }
    for which in ["no-threads", "no-threads-default-pool"] {
        let out = run_child_with_huge_stacks(NAME, which);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .find_map(|l| l.find("CHILD").map(|at| &l[at + 6..]))
            .unwrap_or("(no report)");
        assert!(
            out.status.success(),
            "{which}: no worker thread could be created and {line}: the task was accepted but never ran \
             (expected submit to return an error, or the task to run); stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

// ---- regressions: races the stress and model tests found ----

static INNER: AtomicU64 = AtomicU64::new(0);
static INNER_RUNNING: AtomicBool = AtomicBool::new(false);
static OUTER_POOL: AtomicU64 = AtomicU64::new(0);

extern "C" fn inner_sleeps(_: *mut c_void, _: *mut *mut c_void) -> i32 {
    INNER_RUNNING.store(true, SeqCst);
    std::thread::sleep(Duration::from_millis(100));
    0
}

extern "C" fn outer_waits_for_inner(_: *mut c_void, _: *mut *mut c_void) -> i32 {
    let pool = OUTER_POOL.load(SeqCst) as *mut asyncify_pool;
    let h = submit(pool, inner_sleeps, 0);
    INNER.store(h, SeqCst);
    // Limit 1: the inner task is queued behind this one, so it runs inline here.
    asyncify_wait(h, -1, null_mut(), null_mut());
    asyncify_release(h);
    0
}

/// Found by tests/stress.rs: with `ASYNCIFY_POOL_RELEASE_SLOT_ON_ABANDON`,
/// cancelling a task while it runs inline (5.4: in its waiter's slot) gives
/// back a slot it never took; the pool's slot count wraps, no task of that
/// pool ever starts again, and `asyncify_pool_free` never returns OK.
#[test]
fn abandoning_a_task_that_runs_inline_keeps_the_pool_working() {
    // SAFETY: plain old data; init fills it.
    let mut o: asyncify_pool_options = unsafe { zeroed() };
    assert_eq!(
        asyncify_pool_options_init(&mut o, size_of::<asyncify_pool_options>()),
        ASYNCIFY_OK
    );
    o.max_workers = 1;
    o.flags = ASYNCIFY_POOL_RELEASE_SLOT_ON_ABANDON;
    let mut pool = null_mut();
    assert_eq!(asyncify_pool_new_ex(&o, &mut pool), ASYNCIFY_OK);
    OUTER_POOL.store(pool as u64, SeqCst);
    let outer = submit(pool, outer_waits_for_inner, 0);
    while !INNER_RUNNING.load(SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(asyncify_cancel(INNER.load(SeqCst)), ASYNCIFY_CANCELLED);
    assert_eq!(wait(outer).0, ASYNCIFY_OK);
    let later = submit(pool, marks, &RAN as *const AtomicBool as usize);
    let s = asyncify_wait(later, 3000, null_mut(), null_mut());
    let st = stats(pool);
    assert_eq!(
        s, ASYNCIFY_OK,
        "after an inline-run task was abandoned, a new task never started (limit {}, threads {}, queued {}, running {})",
        st.limit, st.threads, st.queued, st.running
    );
    asyncify_release(later);
    assert_eq!(
        asyncify_pool_free(pool, 3000),
        ASYNCIFY_OK,
        "the pool never became quiet"
    );
}

extern "C" fn nothing(_: *mut c_void, _: *mut *mut c_void) -> i32 {
    0
}

/// Found by tests/model.rs: a worker that has decided to leave (the limit was
/// lowered to 0, or its keep-alive ran out) still counts against the limit
/// until it has run its stop hook and taken the lock again. A submit or a
/// raise of the limit in that window starts no worker, and the queued task
/// waits for the next submit, forever if none comes.
#[test]
fn a_paused_and_resumed_pool_always_runs_its_queue() {
    let pool = new_pool(0);
    let stalled = AtomicU32::new(0);
    for i in 0..20_000 {
        let h = submit(pool, nothing, 0);
        assert_eq!(asyncify_set_max_workers(pool, 1), ASYNCIFY_OK);
        let s = asyncify_wait(h, 2000, null_mut(), null_mut());
        if s != ASYNCIFY_OK {
            let st = stats(pool);
            stalled.fetch_add(1, SeqCst);
            panic!(
                "iteration {i}: the queued task did not start within 2 s of set_max_workers(1) \
                 (wait {s}; limit {}, threads {}, queued {}, running {})",
                st.limit, st.threads, st.queued, st.running
            );
        }
        assert_eq!(asyncify_release(h), ASYNCIFY_OK);
        assert_eq!(asyncify_set_max_workers(pool, 0), ASYNCIFY_OK);
    }
    assert_eq!(asyncify_set_max_workers(pool, 1), ASYNCIFY_OK);
    assert_eq!(asyncify_pool_free(pool, -1), ASYNCIFY_OK);
}
