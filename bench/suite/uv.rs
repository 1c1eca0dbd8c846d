//! The libuv peer: `uv_queue_work` on the default loop, loaded with dlopen so
//! that the crate builds (and `make test` runs) where libuv is absent.
//!
//! libuv sizes its thread pool once per process from `UV_THREADPOOL_SIZE`, so
//! each measurement runs in a child process of this bench (see `child` in
//! main.rs) with that variable set to the limit. The library is, in order:
//! `ASYNCIFY_BENCH_LIBUV` (a path, or `skip`), the system's `libuv.so.1`
//! (Debian's libuv1), or `target/bench-libuv/libuv.so` built by
//! `bench/build_libuv.sh` from the libuv sources bundled in the `libuv-sys2`
//! crate (that crate itself needs libclang for bindgen, absent here).

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::common::{idle_pause, rss_bytes, Latencies};
use crate::Pool;

type WorkCb = extern "C" fn(*mut c_void);
type AfterCb = extern "C" fn(*mut c_void, c_int);

/// `UV_WORK` in `uv_req_type` (UV_REQ = 1, CONNECT, WRITE, SHUTDOWN, UDP_SEND, FS, WORK).
const UV_WORK: c_int = 7;
const UV_RUN_DEFAULT: c_int = 0;

struct Api {
    default_loop: extern "C" fn() -> *mut c_void,
    queue_work: extern "C" fn(*mut c_void, *mut c_void, WorkCb, AfterCb) -> c_int,
    run: extern "C" fn(*mut c_void, c_int) -> c_int,
    req_size: extern "C" fn(c_int) -> usize,
    version_string: extern "C" fn() -> *const c_char,
}

fn load(path: &str) -> Result<Api, String> {
    let c = CString::new(path).unwrap();
    // SAFETY: dlopen/dlsym/dlerror with valid C strings; the symbols are
    // libuv's public functions with the signatures declared in uv.h, and the
    // library stays loaded for the life of the process.
    unsafe {
        let lib = libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        if lib.is_null() {
            let e = libc::dlerror();
            return Err(if e.is_null() {
                format!("dlopen({path}) failed")
            } else {
                CStr::from_ptr(e).to_string_lossy().into_owned()
            });
        }
        let sym = |name: &CStr| -> Result<*mut c_void, String> {
            let p = libc::dlsym(lib, name.as_ptr());
            if p.is_null() {
                Err(format!("{path}: no symbol {}", name.to_string_lossy()))
            } else {
                Ok(p)
            }
        };
        Ok(Api {
            default_loop: std::mem::transmute::<*mut c_void, extern "C" fn() -> *mut c_void>(sym(
                c"uv_default_loop",
            )?),
            queue_work: std::mem::transmute::<
                *mut c_void,
                extern "C" fn(*mut c_void, *mut c_void, WorkCb, AfterCb) -> c_int,
            >(sym(c"uv_queue_work")?),
            run: std::mem::transmute::<*mut c_void, extern "C" fn(*mut c_void, c_int) -> c_int>(
                sym(c"uv_run")?,
            ),
            req_size: std::mem::transmute::<*mut c_void, extern "C" fn(c_int) -> usize>(sym(
                c"uv_req_size",
            )?),
            version_string: std::mem::transmute::<*mut c_void, extern "C" fn() -> *const c_char>(
                sym(c"uv_version_string")?,
            ),
        })
    }
}

/// Find a loadable libuv, building one from bundled sources if needed.
/// Ok((path, version)) or Err(reason to print as "skipped: ...").
pub fn locate(root: &Path) -> Result<(String, String), String> {
    let version = |p: &str| load(p).map(|api| version_of(&api));
    match std::env::var("ASYNCIFY_BENCH_LIBUV") {
        Ok(v) if v == "skip" => return Err("ASYNCIFY_BENCH_LIBUV=skip".into()),
        Ok(v) if !v.is_empty() => return version(&v).map(|ver| (v, ver)),
        _ => {}
    }
    if let Ok(ver) = version("libuv.so.1") {
        return Ok(("libuv.so.1".into(), ver));
    }
    let built = root.join("target/bench-libuv/libuv.so");
    if !built.exists() {
        eprintln!("libuv: not installed; building it from the sources bundled in the libuv-sys2 crate (bench/build_libuv.sh)");
        let out = std::process::Command::new("sh")
            .arg(root.join("bench/build_libuv.sh"))
            .arg(root.join("target/bench-libuv"))
            .current_dir(root)
            .output()
            .map_err(|e| format!("cannot run bench/build_libuv.sh: {e}"))?;
        if !out.status.success() {
            let text = String::from_utf8_lossy(&out.stderr);
            let last = text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            return Err(format!(
                "libuv1 not installed and bench/build_libuv.sh failed: {last}"
            ));
        }
    }
    let p = built.to_string_lossy().into_owned();
    version(&p).map(|ver| (p, ver))
}

fn version_of(api: &Api) -> String {
    // SAFETY: uv_version_string returns a static NUL-terminated string.
    unsafe { CStr::from_ptr((api.version_string)()) }
        .to_string_lossy()
        .into_owned()
}

static COMPLETED: AtomicUsize = AtomicUsize::new(0);

extern "C" fn work_noop(_: *mut c_void) {}

extern "C" fn work_sleep(_: *mut c_void) {
    std::thread::sleep(Duration::from_millis(10));
}

static GATE: Mutex<bool> = Mutex::new(false);
static GATE_CV: Condvar = Condvar::new();
static BLOCKED: AtomicUsize = AtomicUsize::new(0);

extern "C" fn work_blocked(_: *mut c_void) {
    BLOCKED.fetch_add(1, Ordering::AcqRel);
    let mut open = GATE.lock().unwrap();
    while !*open {
        open = GATE_CV.wait(open).unwrap();
    }
}

extern "C" fn after(_: *mut c_void, _: c_int) {
    COMPLETED.fetch_add(1, Ordering::Relaxed);
}

/// The libuv pool of this process (in a child: `UV_THREADPOOL_SIZE` = limit).
pub struct Uv {
    api: Api,
    lp: *mut c_void,
    req_words: usize,
}

impl Uv {
    pub fn new(path: &str) -> Uv {
        let api = load(path).unwrap();
        let lp = (api.default_loop)();
        let req_words = (api.req_size)(UV_WORK).div_ceil(8);
        Uv { api, lp, req_words }
    }

    /// Queue `n` requests, then run the loop until every after-work callback
    /// ran. The requests live in one allocation made inside the timing (libuv
    /// leaves their memory to the caller).
    fn burst(&mut self, n: usize, work: WorkCb) -> Duration {
        COMPLETED.store(0, Ordering::Relaxed);
        let t = Instant::now();
        let mut reqs = vec![0u64; n * self.req_words];
        for i in 0..n {
            let req = reqs[i * self.req_words..].as_mut_ptr() as *mut c_void;
            assert_eq!((self.api.queue_work)(self.lp, req, work, after), 0);
        }
        (self.api.run)(self.lp, UV_RUN_DEFAULT);
        let d = t.elapsed();
        assert_eq!(COMPLETED.load(Ordering::Relaxed), n);
        d
    }

    /// M1: bytes per request queued behind `limit` blocked threads, the
    /// request memory (which libuv requires of the caller) included.
    pub fn m1(&mut self, limit: usize, n: usize) -> f64 {
        let mut gate_reqs = vec![0u64; limit * self.req_words];
        for i in 0..limit {
            let req = gate_reqs[i * self.req_words..].as_mut_ptr() as *mut c_void;
            assert_eq!((self.api.queue_work)(self.lp, req, work_blocked, after), 0);
        }
        while BLOCKED.load(Ordering::Acquire) < limit {
            std::thread::sleep(Duration::from_millis(1));
        }
        let before = rss_bytes();
        // Zeroed memory from the kernel: its pages count once libuv writes
        // the requests.
        let mut reqs = vec![0u64; n * self.req_words];
        for i in 0..n {
            let req = reqs[i * self.req_words..].as_mut_ptr() as *mut c_void;
            assert_eq!((self.api.queue_work)(self.lp, req, work_noop, after), 0);
        }
        let bytes = (rss_bytes() as f64 - before as f64) / n as f64;
        *GATE.lock().unwrap() = true;
        GATE_CV.notify_all();
        (self.api.run)(self.lp, UV_RUN_DEFAULT);
        drop(gate_reqs);
        bytes
    }
}

impl Pool for Uv {
    fn w1(&mut self, n: usize) -> f64 {
        n as f64 / self.burst(n, work_noop).as_secs_f64()
    }

    fn w2(&mut self, rounds: usize, idle: Option<Duration>) -> (f64, f64) {
        let mut lat = Latencies::with_capacity(rounds);
        let mut req = vec![0u64; self.req_words];
        for _ in 0..rounds {
            idle_pause(idle);
            let t = Instant::now();
            let r = req.as_mut_ptr() as *mut c_void;
            assert_eq!((self.api.queue_work)(self.lp, r, work_noop, after), 0);
            (self.api.run)(self.lp, UV_RUN_DEFAULT);
            lat.push(t.elapsed());
        }
        lat.p50_p99()
    }

    fn w4(&mut self) -> f64 {
        self.burst(64, work_sleep).as_secs_f64() * 1e3
    }
}
