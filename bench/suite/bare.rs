//! The bare pool: `limit` std threads on one crossbeam-channel queue, each
//! completion sent back on a second channel. No table, no handles, no
//! cancellation: the practical floor for a pool.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Sender};

use crate::common::{idle_pause, noop, rss_bytes, sleep_10ms, Latencies};
use crate::Pool;

type Job = Box<dyn FnOnce() + Send>;

pub struct Bare {
    tx: Option<Sender<Job>>,
    done: Receiver<()>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Bare {
    pub fn new(limit: usize) -> Bare {
        let (tx, rx) = unbounded::<Job>();
        let (done_tx, done) = unbounded::<()>();
        let threads = (0..limit)
            .map(|_| {
                let rx = rx.clone();
                let done_tx = done_tx.clone();
                std::thread::spawn(move || {
                    for job in rx {
                        job();
                        if done_tx.send(()).is_err() {
                            return;
                        }
                    }
                })
            })
            .collect();
        Bare {
            tx: Some(tx),
            done,
            threads,
        }
    }

    pub fn submit(&self, job: Job) {
        self.tx.as_ref().unwrap().send(job).unwrap();
    }

    fn burst(&mut self, n: usize, job: fn()) -> Duration {
        let t = Instant::now();
        for _ in 0..n {
            self.submit(Box::new(job));
        }
        for _ in 0..n {
            self.done.recv().unwrap();
        }
        t.elapsed()
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        self.tx.take();
        self.threads.drain(..).for_each(|t| t.join().unwrap());
    }
}

impl Pool for Bare {
    fn w1(&mut self, n: usize) -> f64 {
        n as f64 / self.burst(n, noop).as_secs_f64()
    }

    fn w2(&mut self, rounds: usize, idle: Option<Duration>) -> (f64, f64) {
        let mut lat = Latencies::with_capacity(rounds);
        for _ in 0..rounds {
            idle_pause(idle);
            let t = Instant::now();
            self.submit(Box::new(noop));
            self.done.recv().unwrap();
            lat.push(t.elapsed());
        }
        lat.p50_p99()
    }

    fn w4(&mut self) -> f64 {
        self.burst(64, sleep_10ms).as_secs_f64() * 1e3
    }
}

/// Occupy every worker until the returned barrier is passed a second time.
fn block_workers(pool: &Bare, limit: usize) -> Arc<Barrier> {
    let gate = Arc::new(Barrier::new(limit + 1));
    for _ in 0..limit {
        let gate = gate.clone();
        pool.submit(Box::new(move || {
            gate.wait();
            gate.wait();
        }));
    }
    gate.wait();
    gate
}

/// M1 for the bare pool: bytes per job queued behind 8 busy workers. A job
/// carries what a C task carries (a function pointer and an argument).
pub fn m1(n: usize) -> f64 {
    let pool = Bare::new(8);
    let gate = block_workers(&pool, 8);
    let before = rss_bytes();
    for i in 0..n {
        let f: fn(usize) = |_| {};
        pool.submit(Box::new(move || f(i)));
    }
    let bytes = (rss_bytes() as f64 - before as f64) / n as f64;
    gate.wait();
    for _ in 0..n + 8 {
        pool.done.recv().unwrap();
    }
    bytes
}

/// Growth with the queue: `q` jobs queued behind 8 busy workers, then
/// released. Returns (submit ns/task, drain ns/task).
pub fn queued(q: usize) -> (f64, f64) {
    let pool = Bare::new(8);
    let gate = block_workers(&pool, 8);
    let t = Instant::now();
    for _ in 0..q {
        pool.submit(Box::new(noop));
    }
    let submit = t.elapsed();
    let t = Instant::now();
    gate.wait();
    for _ in 0..q + 8 {
        pool.done.recv().unwrap();
    }
    let drain = t.elapsed();
    (
        submit.as_secs_f64() * 1e9 / q as f64,
        drain.as_secs_f64() * 1e9 / q as f64,
    )
}

/// Growth with submitters: `threads` threads submit `n` jobs in all.
pub fn submitters(threads: usize, n: usize) -> f64 {
    let pool = Bare::new(8);
    let t = Instant::now();
    std::thread::scope(|s| {
        for i in 0..threads {
            let share = n / threads + usize::from(i < n % threads);
            let tx = pool.tx.as_ref().unwrap().clone();
            s.spawn(move || {
                for _ in 0..share {
                    tx.send(Box::new(noop)).unwrap();
                }
            });
        }
        for _ in 0..n {
            pool.done.recv().unwrap();
        }
    });
    t.elapsed().as_secs_f64() * 1e9 / n as f64
}
