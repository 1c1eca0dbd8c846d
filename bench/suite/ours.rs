//! asyncify, driven through its C ABI exactly as a C program would.

use std::ffi::{c_void, CString};
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use asyncify::ffi::context::*;
use asyncify::ffi::limiter::*;
use asyncify::ffi::overrides::*;
use asyncify::ffi::pool::*;
use asyncify::ffi::task::*;
use asyncify::status::*;

use crate::common::{idle_pause, rss_bytes, Latch, Latencies};
use crate::Pool;

pub extern "C" fn noop(_: *mut c_void, _: *mut *mut c_void) -> i32 {
    0
}

extern "C" fn sleep_10ms(_: *mut c_void, _: *mut *mut c_void) -> i32 {
    std::thread::sleep(Duration::from_millis(10));
    0
}

/// W3's task: read one key of the submitter's table.
pub extern "C" fn reads_one_key(_: *mut c_void, _: *mut *mut c_void) -> i32 {
    let mut buf = [0u8; 16];
    let mut len = 0;
    asyncify_override_get(
        c"k5".as_ptr(),
        buf.as_mut_ptr() as *mut c_void,
        buf.len(),
        &mut len,
    );
    0
}

pub type WorkFn = extern "C" fn(*mut c_void, *mut *mut c_void) -> i32;

extern "C" fn count_down(data: *mut c_void, _: u64, _: i32, _: *mut c_void, _: i32) {
    // SAFETY: on_done_data is the Latch of the OursPool (or of the caller)
    // that outlives every task submitted with it.
    unsafe { &*(data as *const Latch) }.count_down();
}

pub fn new_pool(limit: u32) -> *mut asyncify_pool {
    let mut pool = ptr::null_mut();
    assert_eq!(asyncify_pool_new(limit, &mut pool), ASYNCIFY_OK);
    pool
}

/// A versioned options struct prepared by its `_init` function.
fn init<T>(init: extern "C" fn(*mut T, usize) -> asyncify_status) -> T {
    let mut value = std::mem::MaybeUninit::<T>::uninit();
    assert_eq!(
        init(value.as_mut_ptr(), std::mem::size_of::<T>()),
        ASYNCIFY_OK
    );
    // SAFETY: the _init function filled every byte just above.
    unsafe { value.assume_init() }
}

pub fn options(pool: *mut asyncify_pool) -> asyncify_submit_options {
    let mut opts = init(asyncify_submit_options_init);
    opts.pool = pool;
    opts
}

/// Options for a detached task whose completion counts `latch` down.
pub fn detached(pool: *mut asyncify_pool, latch: &Latch) -> asyncify_submit_options {
    let mut opts = options(pool);
    opts.flags = ASYNCIFY_SUBMIT_DETACHED;
    opts.on_done = Some(count_down);
    opts.on_done_data = latch as *const Latch as *mut c_void;
    opts
}

pub struct Ours {
    pool: *mut asyncify_pool,
    latch: Box<Latch>,
    /// The work function of W1/W2 (W3 swaps in `reads_one_key`).
    pub work: WorkFn,
    /// W1's tasks go through this limiter (NULL: none).
    limiter: *mut asyncify_limiter,
}

/// What L1/L2 add to W1: nothing, a limiter whose cap is never reached, or
/// latency recording.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    None,
    Limiter,
    Latency,
}

impl Ours {
    pub fn new(limit: u32) -> Ours {
        Ours::with(limit, Feature::None)
    }

    /// A pool of `limit` whose W1 uses `feature`.
    pub fn with(limit: u32, feature: Feature) -> Ours {
        let mut pool = ptr::null_mut();
        let mut o = init(asyncify_pool_options_init);
        o.max_workers = limit;
        if feature == Feature::Latency {
            o.flags = ASYNCIFY_POOL_RECORD_LATENCY;
        }
        assert_eq!(asyncify_pool_new_ex(&o, &mut pool), ASYNCIFY_OK);
        let mut limiter = ptr::null_mut();
        if feature == Feature::Limiter {
            let mut lo = init(asyncify_limiter_options_init);
            lo.max_running = 1_000_000;
            assert_eq!(asyncify_limiter_new(&lo, &mut limiter), ASYNCIFY_OK);
        }
        Ours {
            pool,
            latch: Box::new(Latch::new()),
            work: noop,
            limiter,
        }
    }

    fn burst(&mut self, n: usize, work: WorkFn) -> Duration {
        let mut opts = detached(self.pool, &self.latch);
        opts.limiter = self.limiter;
        self.latch.arm(n);
        let t = Instant::now();
        for _ in 0..n {
            let s = asyncify_submit(Some(work), ptr::null_mut(), &opts, ptr::null_mut());
            assert_eq!(s, ASYNCIFY_OK);
        }
        self.latch.wait();
        t.elapsed()
    }
}

impl Drop for Ours {
    fn drop(&mut self) {
        asyncify_pool_free(self.pool, -1);
        if !self.limiter.is_null() {
            asyncify_limiter_free(self.limiter);
        }
    }
}

impl Pool for Ours {
    fn w1(&mut self, n: usize) -> f64 {
        n as f64 / self.burst(n, self.work).as_secs_f64()
    }

    fn w2(&mut self, rounds: usize, idle: Option<Duration>) -> (f64, f64) {
        let opts = options(self.pool);
        let mut lat = Latencies::with_capacity(rounds);
        for _ in 0..rounds {
            idle_pause(idle);
            let t = Instant::now();
            let mut h = 0;
            let s = asyncify_submit(Some(self.work), ptr::null_mut(), &opts, &mut h);
            assert_eq!(s, ASYNCIFY_OK);
            let s = asyncify_wait(h, -1, ptr::null_mut(), ptr::null_mut());
            lat.push(t.elapsed());
            assert_eq!(s, ASYNCIFY_OK);
            asyncify_release(h);
        }
        lat.p50_p99()
    }

    fn w4(&mut self) -> f64 {
        self.burst(64, sleep_10ms).as_secs_f64() * 1e3
    }
}

/// M1: library bytes per task queued on a paused pool (limit 0), from the
/// growth of the resident set of a fresh process. The bench's own vector of
/// handles is allocated and touched before the first measurement.
pub fn m1(n: usize) -> f64 {
    let pool = new_pool(0);
    // Detached, as the peers' tasks (whose handles are dropped): the row
    // counts what a queued task costs, not an array of handles kept by the
    // harness.
    let mut opts = options(pool);
    opts.flags = ASYNCIFY_SUBMIT_DETACHED;
    let before = rss_bytes();
    for _ in 0..n {
        assert_eq!(
            asyncify_submit(Some(noop), ptr::null_mut(), &opts, ptr::null_mut()),
            ASYNCIFY_OK
        );
    }
    let bytes = (rss_bytes() as f64 - before as f64) / n as f64;
    // Cancels the queued tasks, which release themselves.
    asyncify_pool_free(pool, -1);
    bytes
}

/// Replace the calling thread's table by K keys `k0..k{K-1}`.
pub fn set_keys(k: usize) {
    asyncify_override_clear();
    for i in 0..k {
        let key = CString::new(format!("k{i}")).unwrap();
        asyncify_override_set(key.as_ptr(), b"v".as_ptr() as *const c_void, 1);
    }
}

/// W3w: ns per set of one key while a snapshot of a K-key table is alive. A
/// fresh snapshot is captured before every set, so every set meets a shared
/// table (the worst case: the whole path to the key is copied each time).
/// The figure includes the capture (O(1)) and the free of the previous
/// snapshot, so it is an upper bound of the set alone.
pub fn w3w(k: usize, reps: usize) -> f64 {
    set_keys(k);
    let mut snap = ptr::null_mut();
    assert_eq!(asyncify_context_capture(&mut snap), ASYNCIFY_OK);
    let t = Instant::now();
    for i in 0..reps {
        asyncify_override_set(c"k7".as_ptr(), (&i as *const usize) as *const c_void, 8);
        asyncify_context_free(snap);
        asyncify_context_capture(&mut snap);
    }
    let ns = t.elapsed().as_secs_f64() * 1e9 / reps as f64;
    asyncify_context_free(snap);
    asyncify_override_clear();
    ns
}

/// The gate that holds the workers busy in `queued`.
static GATE: Mutex<bool> = Mutex::new(false);
static GATE_CV: Condvar = Condvar::new();
static BLOCKED: AtomicUsize = AtomicUsize::new(0);

extern "C" fn wait_at_gate(_: *mut c_void, _: *mut *mut c_void) -> i32 {
    BLOCKED.fetch_add(1, Ordering::AcqRel);
    let mut open = GATE.lock().unwrap();
    while !*open {
        open = GATE_CV.wait(open).unwrap();
    }
    0
}

/// Growth with the queue: `q` tasks queued behind 8 busy workers (as for the
/// bare pool), then released. Returns (submit ns/task, drain ns/task).
pub fn queued(q: usize) -> (f64, f64) {
    let pool = new_pool(8);
    let latch = Latch::new();
    let opts = detached(pool, &latch);
    latch.arm(q + 8);
    *GATE.lock().unwrap() = false;
    BLOCKED.store(0, Ordering::Release);
    for _ in 0..8 {
        let s = asyncify_submit(Some(wait_at_gate), ptr::null_mut(), &opts, ptr::null_mut());
        assert_eq!(s, ASYNCIFY_OK);
    }
    while BLOCKED.load(Ordering::Acquire) < 8 {
        std::thread::sleep(Duration::from_micros(100));
    }
    let t = Instant::now();
    for _ in 0..q {
        let s = asyncify_submit(Some(noop), ptr::null_mut(), &opts, ptr::null_mut());
        assert_eq!(s, ASYNCIFY_OK);
    }
    let submit = t.elapsed();
    let t = Instant::now();
    *GATE.lock().unwrap() = true;
    GATE_CV.notify_all();
    latch.wait();
    let drain = t.elapsed();
    asyncify_pool_free(pool, -1);
    (
        submit.as_secs_f64() * 1e9 / q as f64,
        drain.as_secs_f64() * 1e9 / q as f64,
    )
}

/// Growth with submitters: `threads` threads submit `n` tasks in all to one
/// pool of limit 8; ns per task of the whole (first submit to last completion).
pub fn submitters(threads: usize, n: usize) -> f64 {
    let pool = new_pool(8);
    let latch = Latch::new();
    latch.arm(n);
    let pool_addr = pool as usize;
    let latch_addr = &latch as *const Latch as usize;
    let t = Instant::now();
    std::thread::scope(|s| {
        for i in 0..threads {
            let share = n / threads + usize::from(i < n % threads);
            s.spawn(move || {
                // SAFETY: the latch outlives the scope and the pool is freed after it.
                let opts = detached(pool_addr as *mut asyncify_pool, unsafe {
                    &*(latch_addr as *const Latch)
                });
                for _ in 0..share {
                    let s = asyncify_submit(Some(noop), ptr::null_mut(), &opts, ptr::null_mut());
                    assert_eq!(s, ASYNCIFY_OK);
                }
            });
        }
    });
    latch.wait();
    let ns = t.elapsed().as_secs_f64() * 1e9 / n as f64;
    asyncify_pool_free(pool, -1);
    ns
}
