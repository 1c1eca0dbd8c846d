//! Quick measurement of W1 (throughput), W2 (round trip), W3 (table size) and
//! W3w (set with a live snapshot) through the C ABI, next to a bare pool of
//! std threads on one channel. Median of 5 runs after a warm-up.
//! Run: `cargo bench --bench quick`.

use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use asyncify::ffi::pool::*;
use asyncify::ffi::table::*;
use asyncify::ffi::task::*;
use asyncify::status::*;

static DONE: AtomicUsize = AtomicUsize::new(0);

extern "C" fn noop(_: *mut c_void, _: *mut *mut c_void) -> i32 {
    0
}

extern "C" fn reads_one_key(_: *mut c_void, _: *mut *mut c_void) -> i32 {
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

extern "C" fn count_done(_: *mut c_void, _: u64, _: i32, _: *mut c_void, _: i32) {
    DONE.fetch_add(1, Ordering::Release);
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn new_pool(limit: u32) -> *mut asyncify_pool {
    let mut pool = ptr::null_mut();
    assert_eq!(asyncify_pool_new(limit, &mut pool), ASYNCIFY_OK);
    pool
}

/// W1: tasks per second, completions counted by a detached callback.
fn w1_ours(limit: u32, n: usize) -> f64 {
    let pool = new_pool(limit);
    let mut opts = std::mem::MaybeUninit::<asyncify_submit_options>::uninit();
    asyncify_submit_options_init(
        opts.as_mut_ptr(),
        std::mem::size_of::<asyncify_submit_options>(),
    );
    // SAFETY: initialised by asyncify_submit_options_init just above.
    let mut opts = unsafe { opts.assume_init() };
    opts.flags = ASYNCIFY_SUBMIT_DETACHED;
    opts.on_done = Some(count_done);
    opts.pool = pool;
    DONE.store(0, Ordering::Relaxed);
    let t = Instant::now();
    for _ in 0..n {
        let s = asyncify_submit(Some(noop), ptr::null_mut(), &opts, ptr::null_mut());
        assert_eq!(s, ASYNCIFY_OK);
    }
    while DONE.load(Ordering::Acquire) < n {
        std::hint::spin_loop();
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    asyncify_pool_free(pool, -1);
    rate
}

type Job = Box<dyn FnOnce() + Send>;

/// The bare pool: std threads on one channel, completion sent back on another.
struct Bare {
    tx: Option<mpsc::Sender<Job>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Bare {
    fn new(n: usize) -> Bare {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let threads = (0..n)
            .map(|_| {
                let rx = rx.clone();
                std::thread::spawn(move || loop {
                    let job = rx.lock().unwrap().recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                })
            })
            .collect();
        Bare {
            tx: Some(tx),
            threads,
        }
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        self.tx.take();
        self.threads.drain(..).for_each(|t| t.join().unwrap());
    }
}

fn w1_bare(limit: usize, n: usize) -> f64 {
    let pool = Bare::new(limit);
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let t = Instant::now();
    for _ in 0..n {
        let done = done_tx.clone();
        pool.tx
            .as_ref()
            .unwrap()
            .send(Box::new(move || done.send(()).unwrap()))
            .unwrap();
    }
    for _ in 0..n {
        done_rx.recv().unwrap();
    }
    n as f64 / t.elapsed().as_secs_f64()
}

/// W2: one task at a time, submit then wait from the submitter; p50 and p99 µs.
fn w2_ours(rounds: usize, work: extern "C" fn(*mut c_void, *mut *mut c_void) -> i32) -> (f64, f64) {
    let pool = new_pool(8);
    let mut opts = std::mem::MaybeUninit::<asyncify_submit_options>::uninit();
    asyncify_submit_options_init(
        opts.as_mut_ptr(),
        std::mem::size_of::<asyncify_submit_options>(),
    );
    // SAFETY: initialised by asyncify_submit_options_init just above.
    let mut opts = unsafe { opts.assume_init() };
    opts.pool = pool;
    let mut lat = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        let mut h = 0;
        asyncify_submit(Some(work), ptr::null_mut(), &opts, &mut h);
        assert_eq!(
            asyncify_wait(h, -1, ptr::null_mut(), ptr::null_mut()),
            ASYNCIFY_OK
        );
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        asyncify_release(h);
    }
    asyncify_pool_free(pool, -1);
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (lat[lat.len() / 2], lat[lat.len() * 99 / 100])
}

fn w2_bare(rounds: usize) -> (f64, f64) {
    let pool = Bare::new(8);
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let mut lat = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        let done = done_tx.clone();
        pool.tx
            .as_ref()
            .unwrap()
            .send(Box::new(move || done.send(()).unwrap()))
            .unwrap();
        done_rx.recv().unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (lat[lat.len() / 2], lat[lat.len() * 99 / 100])
}

fn set_keys(k: usize) {
    asyncify_override_clear();
    for i in 0..k {
        let key = std::ffi::CString::new(format!("k{i}")).unwrap();
        asyncify_override_set(key.as_ptr(), b"v".as_ptr() as *const c_void, 1);
    }
}

/// W3w: ns per set of one key while a snapshot of a K-key table is alive. A
/// new snapshot is taken before every set, so every set meets a shared table
/// (the worst case: the whole path to the key is copied each time).
fn w3w(k: usize) -> f64 {
    set_keys(k);
    let reps = 20_000;
    let mut snapshot = asyncify::overrides::snapshot();
    let t = Instant::now();
    for i in 0..reps {
        asyncify_override_set(c"k7".as_ptr(), (&i as *const i32) as *const c_void, 4);
        snapshot = asyncify::overrides::snapshot();
    }
    let ns = t.elapsed().as_secs_f64() * 1e9 / reps as f64;
    drop(snapshot);
    asyncify_override_clear();
    ns
}

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// M1: library bytes per task queued on a paused pool (RSS growth / tasks).
fn m1(n: usize) -> f64 {
    let pool = new_pool(0);
    let mut opts = std::mem::MaybeUninit::<asyncify_submit_options>::uninit();
    asyncify_submit_options_init(
        opts.as_mut_ptr(),
        std::mem::size_of::<asyncify_submit_options>(),
    );
    // SAFETY: initialised by asyncify_submit_options_init just above.
    let mut opts = unsafe { opts.assume_init() };
    opts.pool = pool;
    let mut handles = Vec::with_capacity(n);
    let before = rss_bytes();
    for _ in 0..n {
        let mut h = 0;
        assert_eq!(
            asyncify_submit(Some(noop), ptr::null_mut(), &opts, &mut h),
            ASYNCIFY_OK
        );
        handles.push(h);
    }
    // The handles vector is the bench's, not the library's.
    let bytes = (rss_bytes() - before) as f64 / n as f64 - 8.0;
    asyncify_pool_free(pool, -1);
    handles.into_iter().for_each(|h| {
        asyncify_release(h);
    });
    bytes
}

fn main() {
    // `cargo bench --bench quick -- w2` runs only the workloads named.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |w: &str| only.is_empty() || only.iter().any(|o| o == w);
    let n = 100_000;
    let reps = 5;
    let fmt = |(m, lo, hi): (f64, f64, f64)| format!("{m:>10.0} (min {lo:.0}, max {hi:.0})");
    println!("| workload | asyncify | bare std pool |");
    println!("|---|---|---|");
    for limit in [8u32, 2].into_iter().filter(|_| wanted("w1")) {
        w1_ours(limit, n / 10);
        w1_bare(limit as usize, n / 10);
        let ours = median((0..reps).map(|_| w1_ours(limit, n)).collect());
        let bare = median((0..reps).map(|_| w1_bare(limit as usize, n)).collect());
        println!(
            "| W1 tasks/s, limit {limit} | {} | {} |",
            fmt(ours),
            fmt(bare)
        );
    }
    let rounds = 20_000;
    if wanted("w2") {
        w2_ours(1000, noop);
        let ours: Vec<(f64, f64)> = (0..reps).map(|_| w2_ours(rounds, noop)).collect();
        let bare: Vec<(f64, f64)> = (0..reps).map(|_| w2_bare(rounds)).collect();
        let p = |v: &[(f64, f64)]| {
            let p50 = median(v.iter().map(|x| x.0).collect()).0;
            let p99 = median(v.iter().map(|x| x.1).collect()).0;
            format!("p50 {p50:.1} µs, p99 {p99:.1} µs")
        };
        println!("| W2 round trip, limit 8 | {} | {} |", p(&ours), p(&bare));
    }
    for k in [0usize, 10, 100, 1_000, 10_000]
        .into_iter()
        .filter(|_| wanted("w3"))
    {
        set_keys(k);
        let ours: Vec<(f64, f64)> = (0..reps)
            .map(|_| w2_ours(rounds / 4, reads_one_key))
            .collect();
        let p50 = median(ours.iter().map(|x| x.0).collect()).0;
        let p99 = median(ours.iter().map(|x| x.1).collect()).0;
        println!("| W3 round trip, K = {k} | p50 {p50:.1} µs, p99 {p99:.1} µs | |");
    }
    asyncify_override_clear();
    if wanted("m1") {
        let bytes = m1(1_000_000);
        println!("| M1 bytes per queued task (1,000,000 on a paused pool) | {bytes:.0} | |");
    }
    for k in [1_000usize, 10_000].into_iter().filter(|_| wanted("w3w")) {
        let ours = median((0..reps).map(|_| w3w(k)).collect());
        println!("| W3w ns per set, K = {k} | {} | |", fmt(ours));
    }
}
