//! The Python peers (bench/python_peers.py, run as a child), the machine
//! description, the markdown table with targets, and the SVG plot.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::{si, us, Reps};
use crate::{Impl, Outcome, Results, Sizes};

/// P1/P2 of every Python implementation: casyncify, to_thread, tpe, dspy.
#[derive(Default)]
pub struct Python {
    pub p1: HashMap<String, Outcome>,
    pub p2: HashMap<String, Outcome>,
    pub version: String,
}

pub const PY_IMPLS: [&str; 4] = ["casyncify", "to_thread", "tpe", "dspy"];

fn python_exe(root: &Path) -> String {
    if let Ok(p) = std::env::var("BENCH_PYTHON") {
        return p;
    }
    let venv = root.join(".venv/bin/python");
    if venv.exists() {
        return venv.to_string_lossy().into_owned();
    }
    "python3".into()
}

/// Run bench/python_peers.py in machine mode and parse its lines:
/// `P1 <impl> ok <calls/s>...`, `P2 <impl> ok <p50>,<p99>...`,
/// `P1|P2 <impl> skipped <reason>`.
pub fn run_python(root: &Path, sizes: &Sizes) -> Python {
    let exe = python_exe(root);
    let mut py = Python::default();
    let lib = std::env::var("ASYNCIFY_LIBRARY").unwrap_or_else(|_| {
        root.join("target/release/libasyncify.so")
            .display()
            .to_string()
    });
    eprintln!("P1/P2: {exe} bench/python_peers.py (ASYNCIFY_LIBRARY={lib})");
    let out = Command::new(&exe)
        .arg(root.join("bench/python_peers.py"))
        .arg("--machine")
        .arg("--reps")
        .arg(sizes.reps.to_string())
        .env("ASYNCIFY_LIBRARY", &lib)
        .stderr(std::process::Stdio::inherit())
        .output();
    let out = match out {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            let why = format!("bench/python_peers.py failed ({})", o.status);
            for i in PY_IMPLS {
                py.p1.insert(i.into(), Err(why.clone()));
                py.p2.insert(i.into(), Err(why.clone()));
            }
            return py;
        }
        Err(e) => {
            let why = format!("cannot run {exe}: {e}");
            for i in PY_IMPLS {
                py.p1.insert(i.into(), Err(why.clone()));
                py.p2.insert(i.into(), Err(why.clone()));
            }
            return py;
        }
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut parts = line.splitn(4, ' ');
        let (w, imp, kind, rest) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        let outcome: Outcome = match kind {
            "skipped" => Err(rest.to_string()),
            "ok" => {
                let mut reps: Vec<Reps> = vec![];
                for sample in rest.split_whitespace() {
                    let figs: Vec<f64> = sample.split(',').filter_map(|x| x.parse().ok()).collect();
                    crate::push(&mut reps, &figs);
                }
                Ok(reps)
            }
            _ => {
                if w == "PYTHON" {
                    py.version = format!("{imp} {kind} {rest}").trim().to_string();
                }
                continue;
            }
        };
        match w {
            "P1" => py.p1.insert(imp, outcome),
            "P2" => py.p2.insert(imp, outcome),
            _ => None,
        };
    }
    for i in PY_IMPLS {
        let why = "bench/python_peers.py printed no figure for it";
        py.p1.entry(i.into()).or_insert_with(|| Err(why.into()));
        py.p2.entry(i.into()).or_insert_with(|| Err(why.into()));
    }
    py
}

pub struct Meta {
    pub nproc: usize,
    pub cpu: String,
    pub date: String,
    pub commit: String,
    pub mode: String,
    pub reps: usize,
    pub elapsed: Duration,
    pub load_start: String,
    pub load_end: String,
    pub rustc: String,
}

fn cmd(prog: &str, args: &[&str], dir: &Path) -> String {
    Command::new(prog)
        .args(args)
        .current_dir(dir)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

impl Meta {
    pub fn collect(root: &Path, full: bool, reps: usize, elapsed: Duration, load: &str) -> Meta {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let mut commit = cmd("git", &["rev-parse", "--short=12", "HEAD"], root);
        let dirty = cmd(
            "git",
            &[
                "status",
                "--porcelain",
                "--",
                "src",
                "Cargo.toml",
                "build.rs",
            ],
            root,
        );
        if !dirty.is_empty() {
            commit.push_str(" + uncommitted changes in src/ or Cargo.toml");
        }
        let load3 = |s: &str| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
        Meta {
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu,
            date: cmd("date", &["-u", "+%Y-%m-%d %H:%M UTC"], root),
            commit,
            mode: if full { "full" } else { "quick" }.into(),
            reps,
            elapsed,
            load_start: load3(load),
            load_end: load3(&std::fs::read_to_string("/proc/loadavg").unwrap_or_default()),
            rustc: cmd("rustc", &["--version"], root),
        }
    }
}

const COLUMNS: [&str; 8] = [
    "asyncify",
    "bare pool",
    "tokio spawn_blocking",
    "tokio + Semaphore",
    "libuv",
    "asyncio.to_thread",
    "ThreadPoolExecutor(8)",
    "dspy.asyncify",
];

fn col(i: Impl) -> usize {
    Impl::ALL.iter().position(|&x| x == i).unwrap()
}

fn py_col(id: &str) -> usize {
    match id {
        "casyncify" => 0,
        other => 4 + PY_IMPLS.iter().position(|&x| x == other).unwrap(),
    }
}

struct Row {
    workload: String,
    cells: [String; 8],
    ratio: String,
    target: String,
    met: String,
}

fn short(why: &str) -> String {
    let w: String = why.chars().take(70).collect();
    if w.len() < why.len() {
        format!("skipped: {w}…")
    } else {
        format!("skipped: {w}")
    }
}

fn pct(r: &Reps) -> String {
    format!("±{:.0}%", r.spread_pct())
}

/// A throughput cell: "1.23 M/s ±3%".
fn tput(o: Option<&Outcome>) -> String {
    match o {
        None => "—".into(),
        Some(Err(why)) => short(why),
        Some(Ok(r)) => format!("{}/s {}", si(r[0].median()), pct(&r[0])),
    }
}

/// A latency cell: "p50 / p99 µs ±spread of p50".
fn lat(o: Option<&Outcome>) -> String {
    match o {
        None => "—".into(),
        Some(Err(why)) => short(why),
        Some(Ok(r)) => format!(
            "{} / {} µs {}",
            us(r[0].median()),
            us(r[1].median()),
            pct(&r[0])
        ),
    }
}

fn plain(o: Option<&Outcome>, unit: &str, digits: usize) -> String {
    match o {
        None => "—".into(),
        Some(Err(why)) => short(why),
        Some(Ok(r)) => format!("{:.*} {unit} {}", digits, r[0].median(), pct(&r[0])),
    }
}

fn med(o: Option<&Outcome>, fig: usize) -> Option<f64> {
    match o {
        Some(Ok(r)) => r.get(fig).map(Reps::median),
        _ => None,
    }
}

fn verdict(value: Option<f64>, ok: impl Fn(f64) -> bool) -> String {
    match value {
        None => "n/a (not measured)".into(),
        Some(v) if ok(v) => "**met**".into(),
        Some(_) => "**missed**".into(),
    }
}

/// A ratio row: `ours / peer` against `≥ want` (higher is better) or `≤ want`.
fn ratio_row(
    workload: &str,
    cells: [String; 8],
    ours: Option<f64>,
    peer: Option<f64>,
    peer_name: &str,
    higher: bool,
    want: f64,
) -> Row {
    let r = match (ours, peer) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let sign = if higher { "≥" } else { "≤" };
    Row {
        workload: workload.into(),
        cells,
        ratio: r.map_or("n/a".into(), |r| format!("{r:.2}× {peer_name}")),
        target: format!("{sign} {want:?}× {peer_name}"),
        met: verdict(r, |r| if higher { r >= want } else { r <= want }),
    }
}

fn empty() -> [String; 8] {
    Default::default()
}

/// A goal row: its target cell says so.
fn goal(mut row: Row) -> Row {
    row.target += " (goal)";
    row
}

/// The W1 cost rows: instructions, allocator calls and futex calls per task
/// (cost.rs), each against a must and a goal.
fn cost_rows(rows: &mut Vec<Row>, c: &crate::cost::Cost) {
    let futex_name = match c.futex_tool {
        Some("perf") => "W1 futex syscalls per task, limit 8 (perf stat tracepoint)",
        Some(_) => "W1 futex syscalls per task, limit 8 (strace -f -c)",
        None => "W1 futex syscalls per task, limit 8",
    };
    // (name, figures, digits, must, goal): "goal 0" is judged as less than
    // one call per 1,000 tasks, the resolution of a 100,000-task difference
    // in the presence of the harness's own amortised growth.
    type Spec<'a> = (&'a str, &'a HashMap<Impl, Outcome>, usize, f64, f64);
    let specs: [Spec; 3] = [
        (
            "W1 instructions per task, limit 8 (callgrind)",
            &c.instructions,
            0,
            700.0,
            550.0,
        ),
        (
            "W1 malloc calls per task, limit 8 (callgrind)",
            &c.mallocs,
            3,
            0.05,
            0.0,
        ),
        (futex_name, &c.futexes, 4, 0.05, 0.0),
    ];
    for (name, map, digits, must, goal_want) in specs {
        let mut cells = empty();
        for i in Impl::ALL {
            cells[col(i)] = match map.get(&i) {
                None => "—".into(),
                Some(Err(why)) => format!("not measured: {why}"),
                // A spread relative to a median that shows as 0 says nothing.
                Some(Ok(r)) if r[0].0.len() > 1 && r[0].median() >= 0.1f64.powi(digits as i32) => {
                    format!("{:.*} {}", digits, r[0].median(), pct(&r[0]))
                }
                Some(Ok(r)) => format!("{:.*}", digits, r[0].median()),
            };
        }
        let ours = med(map.get(&Impl::Ours), 0);
        let peers: Vec<String> = [(Impl::Libuv, "libuv"), (Impl::Bare, "bare")]
            .into_iter()
            .filter_map(|(i, n)| {
                let p = med(map.get(&i), 0)?;
                let o = ours?;
                (p > 0.0).then(|| format!("{:.2}× {n}", o / p))
            })
            .collect();
        let figure = ours.map_or("n/a (not measured)".into(), |v| format!("{v:.digits$}"));
        // Ratios say something about instructions; next to a count near 0 they do not.
        let ratio = if peers.is_empty() || digits > 0 {
            figure
        } else {
            format!("{figure} ({})", peers.join(", "))
        };
        let fmt = |w: f64| {
            if w == 0.0 {
                "0 (< 0.001)".to_string()
            } else {
                format!("≤ {w}")
            }
        };
        for (want, is_goal) in [(must, false), (goal_want, true)] {
            let limit = if want == 0.0 { 0.001 } else { want };
            let row = Row {
                workload: if is_goal { "〃".into() } else { name.into() },
                cells: if is_goal { empty() } else { cells.clone() },
                ratio: ratio.clone(),
                target: fmt(want),
                met: verdict(ours, |v| if want == 0.0 { v < limit } else { v <= want }),
            };
            rows.push(if is_goal { goal(row) } else { row });
        }
    }
}

fn rows(res: &Results) -> Vec<Row> {
    let mut rows = vec![];
    let same = "〃";
    // W1
    for limit in [8u32, 2] {
        if !Impl::ALL.iter().any(|&i| res.w1.contains_key(&(i, limit))) {
            continue;
        }
        let mut cells = empty();
        for i in Impl::ALL {
            cells[col(i)] = tput(res.w1.get(&(i, limit)));
        }
        let get = |i| med(res.w1.get(&(i, limit)), 0);
        let name = format!("W1 tasks/s, limit {limit}");
        // The same targets at both limits: (peer, want, is a goal).
        let targets: [(Impl, &str, f64, bool); 4] = [
            (Impl::Libuv, "libuv", 1.0, false),
            (Impl::Tokio, "tokio spawn_blocking", 1.5, false),
            (Impl::Libuv, "libuv", 1.5, true),
            (Impl::Bare, "bare", 0.7, true),
        ];
        let mut first = Some((name.as_str(), cells));
        for (peer, peer_name, want, is_goal) in targets {
            let (workload, cells) = first.take().unwrap_or_else(|| (same, empty()));
            let row = ratio_row(
                workload,
                cells,
                get(Impl::Ours),
                get(peer),
                peer_name,
                true,
                want,
            );
            rows.push(if is_goal { goal(row) } else { row });
        }
    }
    if let Some(c) = &res.cost {
        cost_rows(&mut rows, c);
    }
    // W2, W2idle: p50 against the bare pool's, a must and a goal each.
    for (name, map, want, goal_want) in [
        ("W2 round trip p50 / p99, limit 8", &res.w2, 2.0, 1.5),
        ("W2idle (200 µs pause) p50 / p99", &res.w2idle, 1.2, 1.0),
    ] {
        if map.is_empty() {
            continue;
        }
        let idle = std::ptr::eq(map, &res.w2idle);
        let mut cells = empty();
        for i in Impl::ALL {
            cells[col(i)] = lat(map.get(&i));
            if idle {
                if let Some(cpu) = med(map.get(&i), 2) {
                    cells[col(i)] += &format!("; CPU {} µs", us(cpu));
                }
            }
        }
        let get = |i| med(map.get(&i), 0);
        let (ours, bare) = (get(Impl::Ours), get(Impl::Bare));
        for (w, is_goal) in [(want, false), (goal_want, true)] {
            let mut row = ratio_row(same, empty(), ours, bare, "bare", false, w);
            row.ratio = row.ratio.replace("× bare", "× bare (p50)");
            row.target = format!("p50 ≤ {w:?}× bare");
            if idle && is_goal {
                // The W2idle goal: no slower, and no more CPU per round trip.
                let cpu = |i| med(map.get(&i), 2);
                let cpu_ratio = match (cpu(Impl::Ours), cpu(Impl::Bare)) {
                    (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                    _ => None,
                };
                let p50_ratio = match (ours, bare) {
                    (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                    _ => None,
                };
                row.ratio = format!(
                    "{}, CPU {}",
                    row.ratio,
                    cpu_ratio.map_or("n/a".into(), |r| format!("{r:.2}× bare"))
                );
                row.target = format!("p50 ≤ {w:?}× bare and CPU per round trip ≤ 1.0× bare");
                row.met = verdict(p50_ratio.zip(cpu_ratio).map(|(p, c)| p.max(c)), |r| {
                    r <= 1.0
                });
            }
            if !is_goal {
                row.workload = name.into();
                row.cells = std::mem::take(&mut cells);
            }
            rows.push(if is_goal { goal(row) } else { row });
        }
    }
    // Submitting threads (the cost-of-growth table): ns per task against the
    // bare pool's at every T.
    if !res.growth_threads.is_empty() {
        let ts: Vec<String> = res
            .growth_threads
            .iter()
            .map(|(t, _)| t.to_string())
            .collect();
        let fig = |j: usize| {
            res.growth_threads
                .iter()
                .map(|(_, v)| format!("{:.0}", v[j].median()))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let mut cells = empty();
        cells[col(Impl::Ours)] = format!("{} ns", fig(0));
        cells[col(Impl::Bare)] = format!("{} ns", fig(1));
        // The worst T: the largest ratio.
        let worst = res
            .growth_threads
            .iter()
            .map(|(t, v)| (*t, v[0].median() / v[1].median()))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        for (want, is_goal) in [(3.0, false), (2.0, true)] {
            let row = Row {
                workload: if is_goal {
                    same.into()
                } else {
                    format!("submitting threads T = {}, ns per task", ts.join(" / "))
                },
                cells: if is_goal { empty() } else { cells.clone() },
                ratio: worst.map_or("n/a".into(), |(t, r)| {
                    format!("{r:.2}× bare at worst (T = {t})")
                }),
                target: format!("≤ {want:?}× bare at every T"),
                met: verdict(worst.map(|w| w.1), |r| r <= want),
            };
            rows.push(if is_goal { goal(row) } else { row });
        }
    }
    // W3
    if !res.w3.is_empty() {
        let base: Vec<&(usize, Vec<Reps>)> = res.w3.iter().filter(|(k, _)| *k <= 10_000).collect();
        for (fig, name, unit) in [
            (0, "W3 µs/task at W1 (100,000 tasks), K = ", "µs"),
            (1, "W3 round trip p50, K = ", "µs"),
        ] {
            let ks: Vec<String> = base.iter().map(|(k, _)| fmt_k(*k)).collect();
            let vals: Vec<String> = base.iter().map(|(_, r)| us(r[fig].median())).collect();
            let spread = base
                .iter()
                .map(|(_, r)| r[fig].spread_pct())
                .fold(0.0, f64::max);
            let mut cells = empty();
            cells[0] = format!("{} {unit} (±{spread:.0}% at most)", vals.join(" / "));
            let at = |k: usize| {
                base.iter()
                    .find(|(kk, _)| *kk == k)
                    .map(|(_, r)| r[fig].median())
            };
            let r = match (at(10_000), at(0)) {
                (Some(a), Some(b)) => Some(a / b),
                _ => None,
            };
            rows.push(Row {
                workload: format!("{name}{}", ks.join(" / ")),
                cells,
                ratio: r.map_or("n/a".into(), |r| format!("{r:.2}× K = 0")),
                target: "K = 10,000 ≤ 1.2× K = 0".into(),
                met: verdict(r, |r| r <= 1.2),
            });
        }
    }
    // W3w
    if !res.w3w.is_empty() {
        let mut cells = empty();
        cells[0] = res
            .w3w
            .iter()
            .map(|(k, r)| format!("{}: {:.0} ns {}", fmt_k(*k), r.median(), pct(r)))
            .collect::<Vec<_>>()
            .join("; ");
        let at10k = res
            .w3w
            .iter()
            .find(|(k, _)| *k == 10_000)
            .map(|(_, r)| r.median() / 1e3);
        rows.push(Row {
            workload: "W3w ns per set with a live snapshot, K = 1,000; 10,000".into(),
            cells,
            ratio: at10k.map_or("n/a".into(), |v| format!("{v:.2} µs at K = 10,000")),
            target: "≤ 2 µs at K = 10,000".into(),
            met: verdict(at10k, |v| v <= 2.0),
        });
    }
    // W4
    if !res.w4.is_empty() {
        let mut cells = empty();
        for i in Impl::ALL {
            cells[col(i)] = plain(res.w4.get(&i), "ms", 1);
        }
        // Against the serial floor measured in this run (80 ms where it was not).
        let floor = Some(res.w4_floor.median())
            .filter(|f| f.is_finite())
            .unwrap_or(80.0);
        let ours = med(res.w4.get(&Impl::Ours), 0);
        let r = ours.map(|ms| ms / floor);
        rows.push(Row {
            workload: "W4 wall ms, 64 × 10 ms sleeps, limit 8".into(),
            cells,
            ratio: match (r, ours) {
                (Some(r), Some(ms)) => format!(
                    "{r:.3}× serial floor ({floor:.1} ms; {:.3}× 80 ms)",
                    ms / 80.0
                ),
                _ => "n/a".into(),
            },
            target: "≤ 1.02× serial floor".into(),
            met: verdict(r, |r| r <= 1.02),
        });
    }
    // P1, P2
    if let Some(py) = &res.py {
        let mut cells = empty();
        for id in PY_IMPLS {
            cells[py_col(id)] = tput(py.p1.get(id)).replace("/s", " calls/s");
        }
        let get = |id: &str| med(py.p1.get(id), 0);
        let name = "P1 calls/s, 20,000 gathered by 1,000, limit 8";
        rows.push(ratio_row(
            name,
            cells,
            get("casyncify"),
            get("to_thread"),
            "to_thread",
            true,
            3.0,
        ));
        rows.push(ratio_row(
            same,
            empty(),
            get("casyncify"),
            get("dspy"),
            "dspy",
            true,
            8.0,
        ));
        let mut cells = empty();
        for id in PY_IMPLS {
            cells[py_col(id)] = lat(py.p2.get(id));
        }
        let get = |id: &str| med(py.p2.get(id), 0);
        let mut row = ratio_row(
            "P2 round trip p50 / p99",
            cells,
            get("casyncify"),
            get("to_thread"),
            "to_thread",
            false,
            0.5,
        );
        row.target = "p50 ≤ 0.5× to_thread".into();
        rows.push(row);
    }
    // L1/L2: the features' cost, against asyncify without them.
    for (limit, reps) in &res.features {
        let without = Some(reps[0].median());
        for (j, name) in [
            (1, "L1 W1 via a limiter (cap 1,000,000)"),
            (2, "L2 W1 recording latency"),
        ] {
            let mut cells = empty();
            cells[col(Impl::Ours)] = format!("{}/s {}", si(reps[j].median()), pct(&reps[j]));
            rows.push(ratio_row(
                &format!("{name}, limit {limit}"),
                cells,
                Some(reps[j].median()),
                without,
                "asyncify without",
                true,
                0.8,
            ));
        }
    }
    // M1
    if !res.m1.is_empty() {
        let mut cells = empty();
        for i in Impl::ALL {
            cells[col(i)] = plain(res.m1.get(&i), "B", 0);
        }
        let ours = med(res.m1.get(&Impl::Ours), 0);
        for (want, is_goal) in [(192.0, false), (128.0, true)] {
            let row = Row {
                workload: if is_goal {
                    same.into()
                } else {
                    "M1 bytes per queued task (1,000,000 queued)".into()
                },
                cells: if is_goal { empty() } else { cells.clone() },
                ratio: ours.map_or("n/a".into(), |b| format!("{b:.0} B")),
                target: format!("≤ {want} B"),
                met: verdict(ours, |b| b <= want),
            };
            rows.push(if is_goal { goal(row) } else { row });
        }
    }
    rows
}

/// A count with thousands separators: 1,000,000.
fn fmt_k(k: usize) -> String {
    let digits = k.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn markdown(res: &Results, sizes: &Sizes, meta: &Meta) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# asyncify bench: {} run\n", meta.mode);
    let _ = writeln!(
        s,
        "- machine: {} CPUs (nproc), {}\n- date: {}\n- commit: {}\n- {}; {} repetitions after a warm-up, interleaved across implementations; run took {:.0} s\n- load average at start / end: {} / {} (a shared machine: compare ratios within this run)",
        meta.nproc,
        meta.cpu,
        meta.date,
        meta.commit,
        meta.rustc,
        meta.reps,
        meta.elapsed.as_secs_f64(),
        meta.load_start,
        meta.load_end
    );
    if let Some(v) = &res.libuv_version {
        let _ = writeln!(s, "- libuv {v}");
    }
    if let Some(py) = &res.py {
        if !py.version.is_empty() {
            let _ = writeln!(s, "- {}", py.version);
        }
    }
    let _ = writeln!(
        s,
        "\nEach cell: the median of the repetitions, then ± half their interquartile range relative to the median. \
         Latency cells: p50 / p99 (medians over repetitions), ± for p50. \
         W2 = {} round trips per repetition, W2idle = {}, W1 = {} tasks. \
         P rows: the asyncify column is the Python binding (casyncify).\n",
        sizes.w2_rounds, sizes.w2idle_rounds, sizes.w1_n
    );
    let _ = writeln!(
        s,
        "| workload | {} | ratio | target | met |",
        COLUMNS.join(" | ")
    );
    let _ = writeln!(s, "|---|{}---|---|---|", "---|".repeat(COLUMNS.len()));
    for r in rows(res) {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            r.workload,
            r.cells.join(" | "),
            r.ratio,
            r.target,
            r.met
        );
    }
    if let Some(c) = &res.cost {
        let futex = match c.futex_tool {
            Some("perf") => {
                "futex calls: `perf stat -e syscalls:sys_enter_futex` (a kernel tracepoint: \
                             the run is not slowed, so the threads park as they do unobserved), \
                             the median of the repetitions' differences (a difference below 0 is \
                             noise, counted as 0)"
            }
            Some(_) => {
                "futex calls: `strace -f -c -e trace=futex` (it stops every system call, so \
                        threads park more or less often than unobserved), the median of the \
                        repetitions' differences (a difference below 0 is noise, counted as 0)"
            }
            None => "futex calls: not measured (neither perf with the futex tracepoint nor strace)",
        };
        let _ = writeln!(
            s,
            "\nW1 cost rows: each implementation's W1 child (limit 8, a warm-up of {} tasks) runs \
             twice, with {} and with {} tasks; the difference of the two counts divided by the \
             difference in tasks ({}) is the steady-state cost of one task, without process start-up, \
             the warm-up or the pool's growth. Instructions (Ir, every thread) and allocator calls \
             (malloc, calloc, realloc, posix_memalign, aligned_alloc, memalign): the median of 3 \
             `valgrind --tool=callgrind` pairs, with asyncify's spinning off (`ASYNCIFY_SPIN_US=0`; \
             valgrind runs one thread at a time); {futex}. A goal of 0 is met below 0.001 per task.",
            fmt_k(crate::W1_STEADY_WARM_UP),
            fmt_k(c.small),
            fmt_k(c.large),
            fmt_k(c.large - c.small),
        );
    }
    if !res.w4.is_empty() && !res.w4_floor.0.is_empty() {
        let _ = writeln!(
            s,
            "\nW4's serial floor: 8 serial 10 ms sleeps on the bench's thread, as the workload \
             defines it, measured in this run ({} repetitions, median {:.2} ms): a sleep here \
             takes longer than asked, for every implementation alike.",
            res.w4_floor.0.len(),
            res.w4_floor.median()
        );
    }
    if !res.features.is_empty() {
        let _ = writeln!(
            s,
            "\nL rows: the three pools (without a feature, through the limiter, recording \
             latency) run one W1 burst each in turn, {} repetitions of each after a warm-up; each \
             ratio is of two medians.",
            sizes.reps * crate::FEATURE_REPS
        );
    }
    // Every skipped implementation, with its full reason.
    let mut skipped: Vec<String> = vec![];
    let mut note = |name: &str, o: Option<&Outcome>| {
        if let Some(Err(why)) = o {
            let line = format!("- {name}: skipped: {why}");
            if !skipped.contains(&line) {
                skipped.push(line);
            }
        }
    };
    for i in Impl::ALL {
        for o in [
            res.w1.get(&(i, 8)),
            res.w2.get(&i),
            res.w2idle.get(&i),
            res.w4.get(&i),
            res.m1.get(&i),
        ] {
            note(COLUMNS[col(i)], o);
        }
    }
    if let Some(py) = &res.py {
        for id in PY_IMPLS {
            let name = if id == "casyncify" {
                "casyncify (Python binding)"
            } else {
                COLUMNS[py_col(id)]
            };
            note(name, py.p1.get(id));
            note(name, py.p2.get(id));
        }
    }
    if !skipped.is_empty() {
        let _ = writeln!(s, "\nSkipped here:\n\n{}", skipped.join("\n"));
    }
    growth(&mut s, res);
    s
}

fn flatness(vals: &[f64]) -> String {
    let (lo, hi) = vals.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &v| {
        (lo.min(v), hi.max(v))
    });
    if vals.len() < 2 || lo <= 0.0 {
        String::new()
    } else {
        format!("largest / smallest: {:.2}×", hi / lo)
    }
}

fn growth(s: &mut String, res: &Results) {
    if res.growth_queued.is_empty() && res.growth_threads.is_empty() && res.w3.is_empty() {
        return;
    }
    let _ = writeln!(s, "\n## Cost of growth (flat is the goal)\n");
    let cell = |r: &Reps| format!("{:.0} ±{:.0}%", r.median(), r.spread_pct());
    if !res.growth_queued.is_empty() {
        let _ = writeln!(
            s,
            "Queued tasks: with all 8 workers of a pool held busy, submit Q no-op tasks, then release the workers and wait for every task. ns per task.\n"
        );
        let _ = writeln!(
            s,
            "| queued Q | asyncify submit | asyncify drain | bare submit | bare drain |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|");
        for (q, v) in &res.growth_queued {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                fmt_k(*q),
                cell(&v[0]),
                cell(&v[1]),
                cell(&v[2]),
                cell(&v[3])
            );
        }
        let sub: Vec<f64> = res
            .growth_queued
            .iter()
            .map(|(_, v)| v[0].median() + v[1].median())
            .collect();
        let _ = writeln!(s, "\nasyncify submit + drain, {}\n", flatness(&sub));
    }
    if !res.w3.is_empty() {
        let _ = writeln!(
            s,
            "Table size: the submitter's table has K keys, the task reads one (W3).\n"
        );
        let _ = writeln!(
            s,
            "| K | asyncify µs/task at W1 | asyncify round trip p50 µs | p99 µs |"
        );
        let _ = writeln!(s, "|---|---|---|---|");
        let c = |r: &Reps| format!("{} ±{:.0}%", us(r.median()), r.spread_pct());
        for (k, v) in &res.w3 {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                fmt_k(*k),
                c(&v[0]),
                c(&v[1]),
                c(&v[2])
            );
        }
        let t: Vec<f64> = res.w3.iter().map(|(_, v)| v[0].median()).collect();
        let _ = writeln!(s, "\nµs/task at W1, {}\n", flatness(&t));
    }
    if !res.growth_threads.is_empty() {
        let _ = writeln!(
            s,
            "Submitting threads: T threads submit 100,000 no-op tasks in all to one pool of limit 8; ns per task, first submit to last completion.\n"
        );
        let _ = writeln!(
            s,
            "| threads T | asyncify | bare pool | ratio | target | met | goal | met |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
        for (t, v) in &res.growth_threads {
            let r = v[0].median() / v[1].median();
            let _ = writeln!(
                s,
                "| {t} | {} | {} | {r:.2}× bare | ≤ 3.0× bare | {} | ≤ 2.0× bare | {} |",
                cell(&v[0]),
                cell(&v[1]),
                verdict(Some(r), |r| r <= 3.0),
                verdict(Some(r), |r| r <= 2.0)
            );
        }
        let t: Vec<f64> = res
            .growth_threads
            .iter()
            .map(|(_, v)| v[0].median())
            .collect();
        let _ = writeln!(s, "\nasyncify, {}", flatness(&t));
    }
}

/// The plot: W1 throughput (limits 8 and 2, linear scale) and W2 / W2idle
/// latency (p50 bars, p99 ticks, log scale) of every implementation, as a
/// self-contained SVG.
pub fn svg(res: &Results, meta: &Meta) -> String {
    let colors = ["#1f77b4", "#ff7f0e"];
    let (w, row_h, top, label_w, panel_w) = (1200.0, 44.0, 80.0, 160.0, 380.0);
    let rows = Impl::ALL.len() as f64;
    let bottom = top + row_h * rows;
    let h = bottom + 60.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="10" y="22" font-size="15" font-weight="bold">asyncify and its peers: {} run, median of {} reps, {} CPUs ({}), {}</text>"#,
        meta.mode,
        meta.reps,
        meta.nproc,
        xml(&meta.cpu),
        xml(&meta.date)
    );
    for (k, &i) in Impl::ALL.iter().enumerate() {
        let y = top + row_h * k as f64 + row_h / 2.0 + 4.0;
        let name = COLUMNS[col(i)];
        let weight = if i == Impl::Ours { "bold" } else { "normal" };
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{y}" text-anchor="end" font-weight="{weight}">{name}</text>"#,
            label_w - 8.0
        );
    }

    // Panel 1: W1 throughput, linear.
    let x0 = label_w;
    let w1 = |i: Impl, l: u32| med(res.w1.get(&(i, l)), 0);
    let max1 = Impl::ALL
        .iter()
        .flat_map(|&i| [w1(i, 8), w1(i, 2)])
        .flatten()
        .fold(0.0, f64::max)
        / 1e6;
    let step = nice_step(max1 / 4.0);
    let span1 = if max1 > 0.0 {
        (max1 / step).ceil() * step
    } else {
        1.0
    };
    let x1 = |v: f64| x0 + v / span1 * panel_w;
    let mut g = 0.0;
    while g <= span1 + 1e-9 {
        grid(&mut s, x1(g), top, bottom, &format!("{g}"));
        g += step;
    }
    heading(
        &mut s,
        x0,
        top,
        "W1: 100,000 no-op tasks, million tasks/s (longer is better)",
        &[("limit 8", colors[0]), ("limit 2", colors[1])],
    );
    for (k, &i) in Impl::ALL.iter().enumerate() {
        for (j, l) in [8u32, 2].into_iter().enumerate() {
            let y = top + row_h * k as f64 + 6.0 + j as f64 * 16.0;
            match w1(i, l) {
                Some(v) => {
                    let v = v / 1e6;
                    let _ = writeln!(
                        s,
                        r#"<rect x="{x0}" y="{y}" width="{:.1}" height="14" fill="{}"/>"#,
                        x1(v) - x0,
                        colors[j]
                    );
                    let _ = writeln!(
                        s,
                        r#"<text x="{:.1}" y="{}">{v:.2}</text>"#,
                        x1(v) + 4.0,
                        y + 11.0
                    );
                }
                None => {
                    let _ = writeln!(
                        s,
                        r#"<text x="{}" y="{}" fill="gray">skipped</text>"#,
                        x0 + 4.0,
                        y + 11.0
                    );
                }
            }
        }
    }

    // Panel 2: W2 and W2idle latency, log scale.
    let x0 = label_w + panel_w + 120.0;
    let lat = |m: &HashMap<Impl, Outcome>, i: Impl| (med(m.get(&i), 0), med(m.get(&i), 1));
    let all: Vec<f64> = Impl::ALL
        .iter()
        .flat_map(|&i| {
            let (a, b) = lat(&res.w2, i);
            let (c, d) = lat(&res.w2idle, i);
            [a, b, c, d]
        })
        .flatten()
        .filter(|v| *v > 0.0)
        .collect();
    let lo = all.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = all.iter().copied().fold(0.0, f64::max);
    let (lo, hi) = if all.is_empty() {
        (0.0, 1.0)
    } else {
        (
            lo.log10().floor(),
            hi.log10().ceil().max(lo.log10().floor() + 1.0),
        )
    };
    let x2 = |v: f64| x0 + (v.log10() - lo) / (hi - lo) * panel_w;
    let mut e = lo;
    while e <= hi + 1e-9 {
        let v = 10f64.powf(e);
        let label = if v < 1.0 {
            format!("{v}")
        } else {
            format!("{v:.0}")
        };
        grid(&mut s, x2(v), top, bottom, &label);
        e += 1.0;
    }
    heading(
        &mut s,
        x0,
        top,
        "W2 round trip, µs, log scale: bar p50, tick p99 (shorter is better)",
        &[("W2", colors[0]), ("W2idle (200 µs pause)", colors[1])],
    );
    for (k, &i) in Impl::ALL.iter().enumerate() {
        for (j, m) in [&res.w2, &res.w2idle].into_iter().enumerate() {
            let y = top + row_h * k as f64 + 6.0 + j as f64 * 16.0;
            match lat(m, i) {
                (Some(p50), Some(p99)) if p50 > 0.0 => {
                    let (bx, tx) = (x2(p50).max(x0 + 1.0), x2(p99).max(x0 + 1.0));
                    let _ = writeln!(
                        s,
                        r#"<rect x="{x0}" y="{y}" width="{:.1}" height="14" fill="{}"/>"#,
                        bx - x0,
                        colors[j]
                    );
                    let _ = writeln!(
                        s,
                        r#"<line x1="{bx:.1}" y1="{}" x2="{tx:.1}" y2="{}" stroke="{}"/>"#,
                        y + 7.0,
                        y + 7.0,
                        colors[j]
                    );
                    let _ = writeln!(
                        s,
                        r#"<line x1="{tx:.1}" y1="{y}" x2="{tx:.1}" y2="{}" stroke="black" stroke-width="2"/>"#,
                        y + 14.0
                    );
                    let _ = writeln!(
                        s,
                        r#"<text x="{:.1}" y="{}">{} / {}</text>"#,
                        tx + 5.0,
                        y + 11.0,
                        us(p50),
                        us(p99)
                    );
                }
                _ => {
                    let _ = writeln!(
                        s,
                        r#"<text x="{}" y="{}" fill="gray">skipped</text>"#,
                        x0 + 4.0,
                        y + 11.0
                    );
                }
            }
        }
    }
    let _ = writeln!(
        s,
        r#"<text x="10" y="{}" fill="gray">commit {}. Every figure with its spread, the targets and the other workloads: bench/results/latest.md</text>"#,
        h - 14.0,
        xml(&meta.commit)
    );
    s.push_str("</svg>\n");
    s
}

/// 1, 2 or 5 times a power of ten, at least `x`.
fn nice_step(x: f64) -> f64 {
    if x <= 0.0 || !x.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(x.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|&v| v >= x)
        .unwrap_or(10.0 * p)
}

fn grid(s: &mut String, x: f64, top: f64, bottom: f64, label: &str) {
    let _ = writeln!(
        s,
        r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{bottom}" stroke="#ddd"/>"##
    );
    let _ = writeln!(
        s,
        r##"<text x="{x:.1}" y="{}" text-anchor="middle" fill="#555">{label}</text>"##,
        bottom + 16.0
    );
}

fn heading(s: &mut String, x: f64, top: f64, title: &str, legend: &[(&str, &str)]) {
    let _ = writeln!(
        s,
        r#"<text x="{x}" y="{}" font-weight="bold">{}</text>"#,
        top - 34.0,
        xml(title)
    );
    let mut lx = x;
    for (name, color) in legend {
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="{}" width="12" height="10" fill="{color}"/>"#,
            top - 22.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}">{}</text>"#,
            lx + 16.0,
            top - 13.0,
            xml(name)
        );
        lx += 30.0 + 7.0 * name.len() as f64;
    }
}

fn xml(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
