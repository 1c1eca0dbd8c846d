//! The side-by-side bench: every workload for asyncify and
//! each peer, in one run and one harness; the median of the repetitions after
//! a warm-up, with the spread; one markdown table (printed, and written with
//! the machine, date and commit to bench/results/latest.md), the plot
//! bench/results/w1_w2.svg, and the cost-of-growth tables.
//!
//! ```text
//! cargo bench --bench suite                 # quick (make bench)
//! cargo bench --bench suite -- --full       # every size (make bench-full)
//! cargo bench --bench suite -- w2 w2idle asyncify bare --reps 3
//! ```
//!
//! Positional arguments filter: workloads (w1 w1cost w2 w2idle w3 w3w w4 m1
//! py growth l; w1cost is W1's instructions, allocator calls and futex calls
//! per task, counted by valgrind and perf or strace; l is L1/L2: W1 through a
//! limiter and with latency recording) and implementations (asyncify bare
//! tokio tokio-sem libuv, or uv). A
//! filtered run prints its table and writes nothing (unless `--write`).
//! Repetitions of different implementations are interleaved (rep 1 of each,
//! then rep 2 of each, ...) so that a noisy neighbour hurts all alike.

// Calls the C ABI as a C program would: raw pointers, hence unsafe blocks.
#![allow(unsafe_code)]

mod bare;
mod common;
mod cost;
mod ours;
mod report;
mod tokio_peer;
mod uv;

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Reps;

/// What every pool of the bench can do (the libuv pool runs in a child).
pub trait Pool {
    /// W1: submit `n` no-op tasks, then observe every completion; tasks/s.
    fn w1(&mut self, n: usize) -> f64;
    /// W2 (W2idle with `idle`): one task at a time, submit then observe its
    /// completion from the submitter; (p50, p99) in µs.
    fn w2(&mut self, rounds: usize, idle: Option<Duration>) -> (f64, f64);
    /// W4: 64 tasks sleeping 10 ms each; wall ms from first submit to last completion.
    fn w4(&mut self) -> f64;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Impl {
    Ours,
    Bare,
    Tokio,
    TokioSem,
    Libuv,
}

impl Impl {
    pub const ALL: [Impl; 5] = [
        Impl::Ours,
        Impl::Bare,
        Impl::Tokio,
        Impl::TokioSem,
        Impl::Libuv,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Impl::Ours => "asyncify",
            Impl::Bare => "bare",
            Impl::Tokio => "tokio",
            Impl::TokioSem => "tokio-sem",
            Impl::Libuv => "libuv",
        }
    }

    fn from_id(s: &str) -> Option<Impl> {
        let s = if s == "uv" { "libuv" } else { s };
        Impl::ALL.into_iter().find(|i| i.id() == s)
    }

    fn local(self, limit: u32) -> Box<dyn Pool> {
        match self {
            Impl::Ours => Box::new(ours::Ours::new(limit)),
            Impl::Bare => Box::new(bare::Bare::new(limit as usize)),
            Impl::Tokio => Box::new(tokio_peer::Tokio::new(limit as usize)),
            Impl::TokioSem => Box::new(tokio_peer::TokioSem::new(limit as usize)),
            Impl::Libuv => Box::new(uv::Uv::new(
                &std::env::var("BENCH_LIBUV_PATH").expect("BENCH_LIBUV_PATH"),
            )),
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Work {
    W1(usize),
    W2(usize, Option<Duration>),
    W4,
}

impl Work {
    fn run(self, pool: &mut dyn Pool) -> Vec<f64> {
        match self {
            Work::W1(n) => vec![pool.w1(n)],
            Work::W2(rounds, None) => {
                let (p50, p99) = pool.w2(rounds, None);
                vec![p50, p99]
            }
            // W2idle also reports the process's CPU time per round trip (user
            // and system, every thread: the pool's and the submitter's).
            Work::W2(rounds, idle) => {
                let cpu = cpu_us();
                let (p50, p99) = pool.w2(rounds, idle);
                vec![p50, p99, (cpu_us() - cpu) / rounds as f64]
            }
            Work::W4 => vec![pool.w4()],
        }
    }

    /// What runs before the repetitions. Before W2, a burst first: every
    /// pool then has its full set of threads, as a pool in use has (asyncify
    /// and tokio start threads on demand, the bare pool and libuv at once).
    fn warm_up(self) -> Vec<Work> {
        match self {
            Work::W1(n) => vec![Work::W1((n / 10).max(1))],
            Work::W2(rounds, idle) => vec![
                Work::W1(10_000),
                Work::W2((rounds / 10).clamp(1, 500), idle),
            ],
            Work::W4 => vec![Work::W4],
        }
    }

    fn child_args(self) -> Vec<String> {
        match self {
            Work::W1(n) => vec!["w1".into(), n.to_string()],
            Work::W2(r, None) => vec!["w2".into(), r.to_string()],
            Work::W2(r, Some(_)) => vec!["w2idle".into(), r.to_string()],
            Work::W4 => vec!["w4".into(), "64".into()],
        }
    }
}

/// The CPU time (user + system) of this process so far, in µs.
fn cpu_us() -> f64 {
    // SAFETY: rusage is plain data, for which all zeroes is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes the struct it is given, nothing else.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let us = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    us(ru.ru_utime) + us(ru.ru_stime)
}

/// `BENCH_VERBOSE=1`: print every repetition's figure on stderr.
fn verbose() -> bool {
    std::env::var_os("BENCH_VERBOSE").is_some_and(|v| v == "1")
}

/// The warm-up of a `w1steady` child.
pub const W1_STEADY_WARM_UP: usize = 10_000;

const IDLE: Duration = Duration::from_micros(200);

/// A pool in this process, or the libuv pool of a child process per run.
enum Runner {
    Local(Box<dyn Pool>),
    Child { imp: Impl, limit: u32 },
}

impl Runner {
    fn run(&mut self, w: Work) -> Result<Vec<f64>, String> {
        match self {
            Runner::Local(p) => Ok(w.run(p.as_mut())),
            Runner::Child { imp, limit } => {
                let mut args = vec![imp.id().to_string()];
                args.extend(w.child_args());
                args.push(limit.to_string());
                run_child(&args, *limit)
            }
        }
    }
}

/// Run `<this bench> --child <impl> <workload> <size> <limit>`; the child
/// warms up, measures once and prints `RESULT <figures>`.
fn run_child(args: &[String], limit: u32) -> Result<Vec<f64>, String> {
    run_child_with(&[], &[], args, limit)
}

/// `run_child` under a wrapper command (`prefix`, e.g. valgrind), with
/// extra environment variables.
pub fn run_child_with(
    prefix: &[String],
    env: &[(&str, &str)],
    args: &[String],
    limit: u32,
) -> Result<Vec<f64>, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = match prefix.split_first() {
        Some((prog, rest)) => {
            let mut c = Command::new(prog);
            c.args(rest).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    let mut child = cmd
        .arg("--child")
        .args(args)
        .envs(env.iter().copied())
        .env("UV_THREADPOOL_SIZE", limit.max(1).to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(_) => break,
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("child {} timed out", args.join(" ")));
            }
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("RESULT ") {
            return rest
                .split_whitespace()
                .map(|x| x.parse::<f64>().map_err(|e| e.to_string()))
                .collect();
        }
    }
    let err = String::from_utf8_lossy(&out.stderr);
    Err(format!(
        "child {} failed ({}): {}",
        args.join(" "),
        out.status,
        err.lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
    ))
}

/// The child side of `run_child`.
fn child_main(args: &[String]) -> ! {
    let imp = Impl::from_id(&args[0]).expect("impl");
    let size: usize = args[2].parse().expect("size");
    let limit: u32 = args[3].parse().expect("limit");
    let figures = if args[1] == "m1" {
        vec![match imp {
            Impl::Ours => ours::m1(size),
            Impl::Bare => bare::m1(size),
            Impl::Tokio => tokio_peer::m1(size),
            Impl::TokioSem => tokio_peer::m1_sem(size),
            Impl::Libuv => {
                uv::Uv::new(&std::env::var("BENCH_LIBUV_PATH").unwrap()).m1(limit as usize, size)
            }
        }]
    } else {
        let w = match args[1].as_str() {
            "w1" | "w1steady" => Work::W1(size),
            "w2" => Work::W2(size, None),
            "w2idle" => Work::W2(size, Some(IDLE)),
            "w4" => Work::W4,
            other => panic!("unknown workload {other}"),
        };
        let mut pool = imp.local(limit);
        // w1steady (the W1 cost rows): a warm-up of a fixed size, so that two
        // runs differ only in the measured tasks.
        let warm_up = if args[1] == "w1steady" {
            vec![Work::W1(W1_STEADY_WARM_UP)]
        } else {
            w.warm_up()
        };
        for warm in warm_up {
            warm.run(pool.as_mut());
        }
        w.run(pool.as_mut())
    };
    let text: Vec<String> = figures.iter().map(|f| f.to_string()).collect();
    println!("RESULT {}", text.join(" "));
    std::process::exit(0)
}

/// L1/L2 run this many times the repetitions (a repetition takes about 40 ms).
pub const FEATURE_REPS: usize = 3;

pub struct Sizes {
    pub reps: usize,
    pub w1_n: usize,
    pub w2_rounds: usize,
    pub w2idle_rounds: usize,
    pub w3_keys: Vec<usize>,
    pub w3_rounds: usize,
    pub w3w_sets: usize,
    pub m1_n: usize,
    pub growth_queued: Vec<usize>,
    pub growth_threads: Vec<usize>,
    pub growth_n: usize,
    pub growth_keys: Vec<usize>,
}

impl Sizes {
    fn quick() -> Sizes {
        Sizes {
            reps: 7,
            w1_n: 100_000,
            w2_rounds: 20_000,
            w2idle_rounds: 2_000,
            w3_keys: vec![0, 10, 100, 1_000, 10_000],
            w3_rounds: 5_000,
            w3w_sets: 20_000,
            m1_n: 1_000_000,
            growth_queued: vec![1_000, 10_000, 100_000],
            growth_threads: vec![1, 2, 4, 8],
            growth_n: 100_000,
            growth_keys: vec![],
        }
    }

    fn full() -> Sizes {
        Sizes {
            reps: 11,
            w2idle_rounds: 20_000,
            w3_rounds: 20_000,
            growth_queued: vec![1_000, 10_000, 100_000, 1_000_000],
            growth_keys: vec![100_000],
            ..Sizes::quick()
        }
    }
}

/// One implementation's figure for one workload: its repetitions (one Reps
/// per figure, e.g. p50 and p99), or why it is missing.
pub type Outcome = Result<Vec<Reps>, String>;

#[derive(Default)]
pub struct Results {
    pub w1: HashMap<(Impl, u32), Outcome>,
    pub w2: HashMap<Impl, Outcome>,
    pub w2idle: HashMap<Impl, Outcome>,
    pub w4: HashMap<Impl, Outcome>,
    /// W4's floor: 8 serial 10 ms sleeps on the bench's thread, ms.
    pub w4_floor: Reps,
    pub m1: HashMap<Impl, Outcome>,
    /// K, then (µs/task at W1, p50 µs, p99 µs) of asyncify.
    pub w3: Vec<(usize, Vec<Reps>)>,
    /// K, ns per set.
    pub w3w: Vec<(usize, Reps)>,
    pub py: Option<report::Python>,
    pub growth_queued: Vec<(usize, Vec<Reps>)>,
    pub growth_threads: Vec<(usize, Vec<Reps>)>,
    /// L1/L2: W1 tasks/s of asyncify at a limit, without a feature, through a
    /// limiter whose cap is never reached, and with latency recording.
    pub features: Vec<(u32, Vec<Reps>)>,
    /// W1's instructions, allocator calls and futex calls per task.
    pub cost: Option<cost::Cost>,
    pub libuv_version: Option<String>,
}

struct Bench {
    root: PathBuf,
    sizes: Sizes,
    impls: Vec<Impl>,
    workloads: Vec<String>,
    /// Why an implementation cannot run here.
    skipped: HashMap<Impl, String>,
    results: Results,
}

fn push(reps: &mut Vec<Reps>, figures: &[f64]) {
    if reps.is_empty() {
        reps.resize(figures.len(), Reps::default());
    }
    for (r, f) in reps.iter_mut().zip(figures) {
        r.0.push(*f);
    }
}

impl Bench {
    fn wants(&self, w: &str) -> bool {
        self.workloads.is_empty() || self.workloads.iter().any(|x| x == w)
    }

    fn runners(&self, limit: u32) -> Vec<(Impl, Runner)> {
        self.impls
            .iter()
            .filter(|i| !self.skipped.contains_key(i))
            .map(|&i| {
                let r = if i == Impl::Libuv {
                    Runner::Child { imp: i, limit }
                } else {
                    Runner::Local(i.local(limit))
                };
                (i, r)
            })
            .collect()
    }

    /// Warm each implementation up, then run `reps` interleaved repetitions.
    fn measure(&self, label: &str, limit: u32, w: Work) -> HashMap<Impl, Outcome> {
        let mut out: HashMap<Impl, Outcome> = HashMap::new();
        for (&i, why) in &self.skipped {
            if self.impls.contains(&i) {
                out.insert(i, Err(why.clone()));
            }
        }
        let mut runners = self.runners(limit);
        for (i, r) in runners.iter_mut() {
            for warm in w.warm_up() {
                if let Err(e) = r.run(warm) {
                    out.insert(*i, Err(e));
                }
            }
        }
        let t = Instant::now();
        for rep in 0..self.sizes.reps {
            for (i, r) in runners.iter_mut() {
                if matches!(out.get(i), Some(Err(_))) {
                    continue;
                }
                match r.run(w) {
                    Ok(f) => match out.entry(*i).or_insert_with(|| Ok(vec![])) {
                        Ok(reps) => push(reps, &f),
                        Err(_) => unreachable!(),
                    },
                    Err(e) => {
                        out.insert(*i, Err(e));
                    }
                }
            }
            if std::io::stderr().is_terminal() {
                eprint!("\r{label}: rep {}/{}", rep + 1, self.sizes.reps);
            }
        }
        let mut line = format!("{label} ({:.1} s):", t.elapsed().as_secs_f64());
        let mut ids: Vec<&Impl> = out.keys().collect();
        ids.sort_by_key(|i| Impl::ALL.iter().position(|x| x == *i));
        for i in ids {
            match &out[i] {
                Ok(r) if verbose() => {
                    let v: Vec<String> = r[0].0.iter().map(|x| format!("{x:.3}")).collect();
                    line += &format!(" {}=[{}]", i.id(), v.join(" "));
                }
                Ok(r) => line += &format!(" {}={:.3}", i.id(), r[0].median()),
                Err(_) => line += &format!(" {}=skipped", i.id()),
            }
        }
        if std::io::stderr().is_terminal() {
            eprint!("\r");
        }
        eprintln!("{line}");
        drop(runners);
        out
    }

    fn run(&mut self) {
        if self.impls.contains(&Impl::Libuv) {
            match uv::locate(&self.root) {
                Ok((path, version)) => {
                    eprintln!("libuv {version}: {path}");
                    std::env::set_var("BENCH_LIBUV_PATH", &path);
                    self.results.libuv_version = Some(version);
                }
                Err(e) => {
                    eprintln!("libuv: skipped: {e}");
                    self.skipped.insert(Impl::Libuv, e);
                }
            }
        }
        let s = &self.sizes;
        let (n, rounds, idle_rounds) = (s.w1_n, s.w2_rounds, s.w2idle_rounds);
        if self.wants("w1") {
            for limit in [8, 2] {
                let r = self.measure(&format!("W1 limit {limit}"), limit, Work::W1(n));
                for (i, o) in r {
                    self.results.w1.insert((i, limit), o);
                }
            }
        }
        if self.wants("w1cost") {
            let c = cost::measure(&self.root, &self.impls, &self.skipped, self.sizes.reps);
            self.results.cost = Some(c);
        }
        if self.wants("w2") {
            self.results.w2 = self.measure("W2", 8, Work::W2(rounds, None));
        }
        if self.wants("w2idle") {
            self.results.w2idle = self.measure("W2idle", 8, Work::W2(idle_rounds, Some(IDLE)));
        }
        if self.wants("w4") {
            self.results.w4 = self.measure("W4", 8, Work::W4);
            self.results.w4_floor = self.w4_floor();
        }
        if self.wants("w3") && self.impls.contains(&Impl::Ours) {
            self.w3();
        }
        if self.wants("w3w") && self.impls.contains(&Impl::Ours) {
            let keys = [1_000, 10_000];
            let mut reps = [Reps::default(), Reps::default()];
            for rep in 0..=self.sizes.reps {
                for (j, k) in keys.into_iter().enumerate() {
                    if rep == 0 {
                        ours::w3w(k, self.sizes.w3w_sets / 10);
                    } else {
                        reps[j].0.push(ours::w3w(k, self.sizes.w3w_sets));
                    }
                }
            }
            for (k, r) in keys.into_iter().zip(reps) {
                eprintln!("W3w K = {k}: {:.0} ns/set", r.median());
                self.results.w3w.push((k, r));
            }
        }
        if self.wants("m1") {
            self.m1();
        }
        if self.wants("py") || self.wants("p1") || self.wants("p2") {
            self.results.py = Some(report::run_python(&self.root, &self.sizes));
        }
        if self.wants("growth") {
            self.growth();
        }
        if self.wants("l") && self.impls.contains(&Impl::Ours) {
            self.features();
        }
    }

    /// W4's floor, measured as the workload defines it: 8 serial 10 ms sleeps
    /// (the 8 waves of a perfect pool), as long as this machine's sleeps take;
    /// on a VM each overshoots by some hundreds of microseconds, for every
    /// implementation alike.
    fn w4_floor(&self) -> Reps {
        let mut floor = Reps::default();
        for _ in 0..self.sizes.reps {
            let t = Instant::now();
            for _ in 0..8 {
                common::sleep_10ms();
            }
            floor.0.push(t.elapsed().as_secs_f64() * 1e3);
        }
        eprintln!("W4 serial floor: {:.2} ms", floor.median());
        floor
    }

    /// L1/L2: what a limiter that never caps and latency recording cost W1,
    /// the three pools interleaved within each repetition, with
    /// [`FEATURE_REPS`] times the repetitions (a ratio of two medians of a
    /// figure that swings by a fifth between bursts needs more of them).
    fn features(&mut self) {
        use ours::Feature;
        let n = self.sizes.w1_n;
        for limit in [8, 2] {
            let t = Instant::now();
            let mut pools: Vec<ours::Ours> = [Feature::None, Feature::Limiter, Feature::Latency]
                .into_iter()
                .map(|f| ours::Ours::with(limit, f))
                .collect();
            let mut reps = vec![];
            for rep in 0..=self.sizes.reps * FEATURE_REPS {
                let figures: Vec<f64> = pools
                    .iter_mut()
                    .map(|p| p.w1(if rep == 0 { n / 10 } else { n }))
                    .collect();
                if rep > 0 {
                    push(&mut reps, &figures);
                }
            }
            eprintln!(
                "L1/L2 limit {limit} ({:.1} s): W1 {:.3} M/s, via a limiter {:.3}, recording latency {:.3}",
                t.elapsed().as_secs_f64(),
                reps[0].median() / 1e6,
                reps[1].median() / 1e6,
                reps[2].median() / 1e6
            );
            self.results.features.push((limit, reps));
        }
    }

    /// W3: W1 and W2 of asyncify with a submitter table of K keys; the task
    /// reads one key. (Also the "table size" curve of the cost of growth.)
    /// The K values are interleaved within each repetition, on one pool.
    fn w3(&mut self) {
        let keys: Vec<usize> = self
            .sizes
            .w3_keys
            .iter()
            .chain(&self.sizes.growth_keys)
            .copied()
            .collect();
        let t = Instant::now();
        let (n, rounds) = (self.sizes.w1_n, self.sizes.w3_rounds);
        let mut pool = ours::Ours::new(8);
        pool.work = ours::reads_one_key;
        let mut reps: Vec<Vec<Reps>> = vec![vec![]; keys.len()];
        for rep in 0..=self.sizes.reps {
            for (j, &k) in keys.iter().enumerate() {
                ours::set_keys(k);
                if rep == 0 {
                    pool.w1(n / 10);
                    pool.w2(rounds / 10, None);
                    continue;
                }
                let tput = pool.w1(n);
                let (p50, p99) = pool.w2(rounds, None);
                push(&mut reps[j], &[1e6 / tput, p50, p99]);
            }
        }
        ours::set_keys(0);
        drop(pool);
        let mut line = format!(
            "W3 ({:.1} s): K, µs/task, p50 µs:",
            t.elapsed().as_secs_f64()
        );
        for (k, r) in keys.into_iter().zip(reps) {
            line += &format!(" {k}: {:.3}, {:.2};", r[0].median(), r[1].median());
            self.results.w3.push((k, r));
        }
        eprintln!("{line}");
    }

    /// M1: each implementation in a fresh child process (a fresh heap).
    fn m1(&mut self) {
        for &i in &self.impls {
            let o = match self.skipped.get(&i) {
                Some(why) => Err(why.clone()),
                None => {
                    let args = [
                        i.id().to_string(),
                        "m1".into(),
                        self.sizes.m1_n.to_string(),
                        "8".into(),
                    ];
                    run_child(&args, 8).map(|f| vec![Reps(f)])
                }
            };
            match &o {
                Ok(r) => eprintln!("M1 {}: {:.0} bytes/task", i.id(), r[0].median()),
                Err(e) => eprintln!("M1 {}: {e}", i.id()),
            }
            self.results.m1.insert(i, o);
        }
    }

    /// The cost of growth: per-task cost against queued tasks and against
    /// submitting threads, asyncify next to the bare pool (table size: W3).
    fn growth(&mut self) {
        let reps = self.sizes.reps;
        for &q in &self.sizes.growth_queued.clone() {
            ours::queued(q.min(10_000));
            let mut v = vec![];
            for _ in 0..reps {
                let (a, b) = ours::queued(q);
                let (c, d) = bare::queued(q);
                push(&mut v, &[a, b, c, d]);
            }
            eprintln!(
                "growth: {q} queued: asyncify {:.0} + {:.0} ns/task, bare {:.0} + {:.0}",
                v[0].median(),
                v[1].median(),
                v[2].median(),
                v[3].median()
            );
            self.results.growth_queued.push((q, v));
        }
        let n = self.sizes.growth_n;
        for &t in &self.sizes.growth_threads.clone() {
            ours::submitters(t, n / 10);
            bare::submitters(t, n / 10);
            let mut v = vec![];
            for _ in 0..reps {
                push(&mut v, &[ours::submitters(t, n), bare::submitters(t, n)]);
            }
            eprintln!(
                "growth: {t} submitters: asyncify {:.0} ns/task, bare {:.0}",
                v[0].median(),
                v[1].median()
            );
            self.results.growth_threads.push((t, v));
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(pos) = args.iter().position(|a| a == "--child") {
        child_main(&args[pos + 1..]);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let full = args.iter().any(|a| a == "--full");
    let mut sizes = if full { Sizes::full() } else { Sizes::quick() };
    let mut write = args.iter().any(|a| a == "--write");
    let mut impls = vec![];
    let mut workloads = vec![];
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--reps" => sizes.reps = it.next().and_then(|r| r.parse().ok()).expect("--reps N"),
            a if a.starts_with('-') => {}
            a => match Impl::from_id(a) {
                Some(i) => impls.push(i),
                None => workloads.push(a.to_string()),
            },
        }
    }
    let filtered = !impls.is_empty() || !workloads.is_empty();
    if !filtered {
        write = true;
    }
    if impls.is_empty() {
        impls = Impl::ALL.to_vec();
    }
    let known = [
        "w1", "w1cost", "w2", "w2idle", "w3", "w3w", "w4", "m1", "py", "p1", "p2", "growth", "l",
    ];
    if let Some(w) = workloads.iter().find(|w| !known.contains(&w.as_str())) {
        eprintln!(
            "unknown argument {w}: workloads are {}, implementations {}",
            known.join(" "),
            Impl::ALL.map(|i| i.id()).join(" ")
        );
        std::process::exit(2);
    }
    let started = Instant::now();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    eprintln!(
        "asyncify bench ({}, {} reps){}; load average at start: {}",
        if full { "full" } else { "quick" },
        sizes.reps,
        if filtered { ", filtered" } else { "" },
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut bench = Bench {
        root: root.clone(),
        sizes,
        impls,
        workloads,
        skipped: HashMap::new(),
        results: Results::default(),
    };
    bench.run();
    let meta = report::Meta::collect(&root, full, bench.sizes.reps, started.elapsed(), &load);
    let text = report::markdown(&bench.results, &bench.sizes, &meta);
    println!("{text}");
    if write {
        let dir = root.join("bench/results");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("latest.md"), &text).unwrap();
        let svg = report::svg(&bench.results, &meta);
        std::fs::write(dir.join("w1_w2.svg"), svg).unwrap();
        eprintln!(
            "wrote {} and {}",
            rel(&root, &dir.join("latest.md")),
            rel(&root, &dir.join("w1_w2.svg"))
        );
    }
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}
