//! The tokio peers: `spawn_blocking` on a runtime whose blocking pool is
//! capped at the limit, and the AnyIO design (an async caller takes a permit
//! of a `Semaphore` of `limit` permits, then awaits `spawn_blocking`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;
use tokio::sync::Semaphore;

use crate::common::{idle_pause, noop, rss_bytes, sleep_10ms, Latch, Latencies};
use crate::Pool;

fn runtime(limit: usize) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(limit.max(1))
        .build()
        .unwrap()
}

/// `Runtime::spawn_blocking` from a plain thread; completions counted by a latch.
pub struct Tokio {
    rt: Runtime,
    latch: Arc<Latch>,
}

impl Tokio {
    pub fn new(limit: usize) -> Tokio {
        Tokio {
            rt: runtime(limit),
            latch: Arc::new(Latch::new()),
        }
    }

    fn burst(&mut self, n: usize, job: fn()) -> Duration {
        self.latch.arm(n);
        let t = Instant::now();
        for _ in 0..n {
            let latch = self.latch.clone();
            drop(self.rt.spawn_blocking(move || {
                job();
                latch.count_down();
            }));
        }
        self.latch.wait();
        t.elapsed()
    }
}

impl Pool for Tokio {
    fn w1(&mut self, n: usize) -> f64 {
        n as f64 / self.burst(n, noop).as_secs_f64()
    }

    fn w2(&mut self, rounds: usize, idle: Option<Duration>) -> (f64, f64) {
        let mut lat = Latencies::with_capacity(rounds);
        for _ in 0..rounds {
            idle_pause(idle);
            let t = Instant::now();
            let h = self.rt.spawn_blocking(noop);
            self.rt.block_on(h).unwrap();
            lat.push(t.elapsed());
        }
        lat.p50_p99()
    }

    fn w4(&mut self) -> f64 {
        self.burst(64, sleep_10ms).as_secs_f64() * 1e3
    }
}

/// The AnyIO design: every call is an async task that takes a permit, awaits
/// `spawn_blocking`, gives the permit back and observes the result.
pub struct TokioSem {
    rt: Runtime,
    sem: Arc<Semaphore>,
    latch: Arc<Latch>,
}

impl TokioSem {
    pub fn new(limit: usize) -> TokioSem {
        TokioSem {
            rt: runtime(limit),
            sem: Arc::new(Semaphore::new(limit)),
            latch: Arc::new(Latch::new()),
        }
    }

    fn burst(&mut self, n: usize, job: fn()) -> Duration {
        self.latch.arm(n);
        let t = Instant::now();
        for _ in 0..n {
            let sem = self.sem.clone();
            let latch = self.latch.clone();
            drop(self.rt.spawn(async move {
                let permit = sem.acquire().await.unwrap();
                tokio::task::spawn_blocking(job).await.unwrap();
                drop(permit);
                latch.count_down();
            }));
        }
        self.latch.wait();
        t.elapsed()
    }
}

impl Pool for TokioSem {
    fn w1(&mut self, n: usize) -> f64 {
        n as f64 / self.burst(n, noop).as_secs_f64()
    }

    fn w2(&mut self, rounds: usize, idle: Option<Duration>) -> (f64, f64) {
        let mut lat = Latencies::with_capacity(rounds);
        for _ in 0..rounds {
            idle_pause(idle);
            let sem = self.sem.clone();
            let t = Instant::now();
            self.rt.block_on(async move {
                let _permit = sem.acquire().await.unwrap();
                tokio::task::spawn_blocking(noop).await.unwrap();
            });
            lat.push(t.elapsed());
        }
        lat.p50_p99()
    }

    fn w4(&mut self) -> f64 {
        self.burst(64, sleep_10ms).as_secs_f64() * 1e3
    }
}

/// M1 for `spawn_blocking`: bytes per closure queued behind 8 busy blocking threads.
pub fn m1(n: usize) -> f64 {
    let rt = runtime(8);
    let gate = Arc::new(std::sync::Barrier::new(9));
    for _ in 0..8 {
        let gate = gate.clone();
        drop(rt.spawn_blocking(move || {
            gate.wait();
            gate.wait();
        }));
    }
    gate.wait();
    let latch = Arc::new(Latch::new());
    latch.arm(n);
    let before = rss_bytes();
    for i in 0..n {
        let latch = latch.clone();
        let f: fn(usize) = |_| {};
        drop(rt.spawn_blocking(move || {
            f(i);
            latch.count_down();
        }));
    }
    let bytes = (rss_bytes() as f64 - before as f64) / n as f64;
    gate.wait();
    latch.wait();
    bytes
}

/// M1 for the semaphore design: bytes per async call waiting for a permit of
/// a semaphore with none (the paused pool).
pub fn m1_sem(n: usize) -> f64 {
    let rt = runtime(8);
    let sem = Arc::new(Semaphore::new(0));
    let latch = Arc::new(Latch::new());
    latch.arm(n);
    let before = rss_bytes();
    for i in 0..n {
        let sem = sem.clone();
        let latch = latch.clone();
        let f: fn(usize) = |_| {};
        drop(rt.spawn(async move {
            let permit = sem.acquire().await.unwrap();
            tokio::task::spawn_blocking(move || f(i)).await.unwrap();
            drop(permit);
            latch.count_down();
        }));
    }
    // Let the runtime poll every task once, so each waits on the semaphore.
    std::thread::sleep(Duration::from_millis(300));
    let bytes = (rss_bytes() as f64 - before as f64) / n as f64;
    sem.add_permits(8);
    latch.wait();
    bytes
}
