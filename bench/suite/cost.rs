//! The steady-state cost of a W1 task, counted rather than timed: CPU
//! instructions (callgrind), allocator calls (callgrind's call counts) and
//! futex system calls (a kernel tracepoint through `perf stat`, or `strace`),
//! each the difference of two child runs of one implementation that differ
//! only in their task count, divided by the difference in tasks, so that
//! process start-up, the warm-up and the pool's growth cancel out.
//!
//! Every tool is optional: a missing one leaves its rows "not measured" with
//! a printed notice.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::Reps;
use crate::{run_child_with, Impl, Outcome};

/// The limit of every run here.
pub const LIMIT: u32 = 8;

/// Callgrind pairs per implementation: a pair's instruction count moves by
/// up to 10% with the schedule (how often a worker parks), so the median of
/// three.
const CALLGRIND_PAIRS: usize = 3;

/// The functions whose calls count as allocations: malloc, calloc, realloc
/// and the aligned variants (tokio's tasks are over-aligned, for instance).
const ALLOCATORS: [&str; 6] = [
    "malloc",
    "calloc",
    "realloc",
    "posix_memalign",
    "aligned_alloc",
    "memalign",
];

/// Each implementation's instructions and allocator calls per task
/// (`CALLGRIND_PAIRS` callgrind pairs each), and futex calls per task (one
/// pair per repetition).
#[derive(Default)]
pub struct Cost {
    pub instructions: HashMap<Impl, Outcome>,
    pub mallocs: HashMap<Impl, Outcome>,
    pub futexes: HashMap<Impl, Outcome>,
    /// The two task counts of each pair.
    pub small: usize,
    pub large: usize,
    /// What counted the futex calls ("perf", "strace"), if anything could.
    pub futex_tool: Option<&'static str>,
}

fn works(prog: &str, args: &[&str]) -> bool {
    Command::new(prog)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether `perf stat` can count the futex entry tracepoint here (it needs
/// tracefs and a permissive perf_event_paranoid, or root).
fn perf_counts_futex(dir: &Path) -> bool {
    let out = dir.join("perf-probe.txt");
    let mut command = perf_futex_command(&out.display().to_string());
    command.push("true".into());
    let ok = works(
        &command[0],
        &command[1..].iter().map(String::as_str).collect::<Vec<_>>(),
    );
    ok && perf_count(&out).is_some()
}

/// `perf stat` counting futex entries into `out`, up to the command it runs.
fn perf_futex_command(out: &str) -> Vec<String> {
    [
        "perf",
        "stat",
        "-x,",
        "-e",
        "syscalls:sys_enter_futex",
        "-o",
        out,
        "--",
    ]
    .map(String::from)
    .into()
}

/// The count of `perf stat -x,` output: its first field, a number.
fn perf_count(path: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find(|l| l.contains("sys_enter_futex"))
        .and_then(|l| l.split(',').next())
        .and_then(|c| c.trim().parse().ok())
}

/// The futex row of `strace -c` output: `% time, seconds, usecs/call, calls, ...`.
fn strace_count(path: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|t| t.last() == Some(&"futex") && t.len() >= 5)
        .and_then(|t| t[3].parse().ok())
}

/// Total instructions and allocator calls of a callgrind output file (all
/// threads in one file: callgrind's default). Function names may be
/// compressed: `fn=(12) malloc` defines id 12, a later `cfn=(12)` uses it;
/// `calls=N ...` follows the `cfn=` line of the function it calls.
pub fn parse_callgrind(text: &str) -> Option<(f64, f64)> {
    let mut names: HashMap<&str, &str> = HashMap::new();
    let mut callee: Option<&str> = None;
    let mut total = None;
    let mut allocs = 0.0;
    for line in text.lines() {
        let (is_call, rest) = if let Some(r) = line.strip_prefix("cfn=") {
            (true, r)
        } else if let Some(r) = line.strip_prefix("fn=") {
            (false, r)
        } else if let Some(r) = line.strip_prefix("calls=") {
            if callee.is_some_and(|f| ALLOCATORS.contains(&f)) {
                allocs += r.split_whitespace().next()?.parse::<f64>().ok()?;
            }
            continue;
        } else {
            if let Some(r) = line.strip_prefix("summary:") {
                total = r.split_whitespace().next().and_then(|x| x.parse().ok());
            } else if let (None, Some(r)) = (total, line.strip_prefix("totals:")) {
                total = r.split_whitespace().next().and_then(|x| x.parse().ok());
            }
            continue;
        };
        let name = match rest.strip_prefix('(') {
            Some(r) => {
                let (id, name) = r.split_once(')')?;
                let name = name.trim();
                if !name.is_empty() {
                    names.insert(id, name);
                }
                names.get(id).copied().unwrap_or("")
            }
            None => rest.trim(),
        };
        // A recursion level is written as name'2.
        let name = name.split('\'').next().unwrap_or(name);
        if is_call {
            callee = Some(name);
        }
    }
    Some((total?, allocs))
}

fn args(imp: Impl, n: usize) -> Vec<String> {
    vec![
        imp.id().to_string(),
        "w1steady".into(),
        n.to_string(),
        LIMIT.to_string(),
    ]
}

/// One child run under callgrind: (instructions, allocator calls).
fn callgrind(dir: &Path, imp: Impl, n: usize) -> Result<(f64, f64), String> {
    let out = dir.join(format!("callgrind.{}.{n}.out", imp.id()));
    let prefix = vec![
        "valgrind".to_string(),
        "-q".into(),
        "--tool=callgrind".into(),
        format!("--callgrind-out-file={}", out.display()),
    ];
    run_child_with(&prefix, &[("ASYNCIFY_SPIN_US", "0")], &args(imp, n), LIMIT)?;
    let text = std::fs::read_to_string(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    parse_callgrind(&text).ok_or_else(|| format!("{}: no totals in it", out.display()))
}

/// One child run with its futex calls counted.
fn futexes(dir: &Path, tool: &str, imp: Impl, n: usize) -> Result<f64, String> {
    let out = dir.join(format!("{tool}.{}.{n}.txt", imp.id()));
    let o = out.display().to_string();
    let prefix: Vec<String> = match tool {
        "perf" => perf_futex_command(&o),
        _ => ["strace", "-f", "-c", "-e", "trace=futex", "-o", &o]
            .map(String::from)
            .into(),
    };
    run_child_with(&prefix, &[], &args(imp, n), LIMIT)?;
    let count = if tool == "perf" {
        perf_count(&out)
    } else {
        // strace prints no row for a syscall never made.
        strace_count(&out).or(Some(0.0))
    };
    count.ok_or_else(|| format!("{o}: no futex count in it"))
}

/// Run every pair: `CALLGRIND_PAIRS` pairs of callgrind runs and `reps`
/// pairs of futex counts (they depend on the schedule more) per
/// implementation. tokio + Semaphore is left out: no target names it, and
/// it is the slowest under valgrind by far.
pub fn measure(root: &Path, impls: &[Impl], skipped: &HashMap<Impl, String>, reps: usize) -> Cost {
    let dir: PathBuf = root.join("target/bench-cost");
    let _ = std::fs::create_dir_all(&dir);
    let (small, large) = (20_000, 120_000);
    let tasks = (large - small) as f64;
    let mut cost = Cost {
        small,
        large,
        ..Cost::default()
    };
    let valgrind = works("valgrind", &["--version"]);
    if !valgrind {
        eprintln!(
            "W1 instructions and malloc calls per task: not measured: valgrind is not installed \
             (apt-get install valgrind)"
        );
    }
    let selected = std::env::var("BENCH_FUTEX_TOOL").ok();
    cost.futex_tool = match selected.as_deref() {
        Some("none") => None,
        Some("strace") => works("strace", &["-V"]).then_some("strace"),
        Some("perf") => perf_counts_futex(&dir).then_some("perf"),
        _ if perf_counts_futex(&dir) => Some("perf"),
        _ if works("strace", &["-V"]) => Some("strace"),
        _ => None,
    };
    if cost.futex_tool.is_none() {
        eprintln!(
            "W1 futex calls per task: not measured: neither `perf stat -e syscalls:sys_enter_futex` \
             works here (it needs tracefs and perf_event_paranoid ≤ -1, or root) nor is strace installed"
        );
    }
    for &imp in impls.iter().filter(|&&i| i != Impl::TokioSem) {
        if let Some(why) = skipped.get(&imp) {
            for m in [&mut cost.instructions, &mut cost.mallocs, &mut cost.futexes] {
                m.insert(imp, Err(why.clone()));
            }
            continue;
        }
        let t = std::time::Instant::now();
        if valgrind {
            let (mut instr, mut mallocs) = (Reps::default(), Reps::default());
            let mut err = None;
            for _ in 0..CALLGRIND_PAIRS {
                let pair =
                    callgrind(&dir, imp, small).and_then(|a| Ok((a, callgrind(&dir, imp, large)?)));
                match pair {
                    Ok(((i0, m0), (i1, m1))) => {
                        instr.0.push((i1 - i0) / tasks);
                        mallocs.0.push((m1 - m0).max(0.0) / tasks);
                    }
                    Err(e) => {
                        err = Some(e);
                        break;
                    }
                }
            }
            match err {
                None => {
                    cost.instructions.insert(imp, Ok(vec![instr]));
                    cost.mallocs.insert(imp, Ok(vec![mallocs]));
                }
                Some(e) => {
                    cost.instructions.insert(imp, Err(e.clone()));
                    cost.mallocs.insert(imp, Err(e));
                }
            }
        } else {
            let why = "valgrind is not installed".to_string();
            cost.instructions.insert(imp, Err(why.clone()));
            cost.mallocs.insert(imp, Err(why));
        }
        match cost.futex_tool {
            Some(tool) => {
                let mut r = Reps::default();
                let mut err = None;
                for _ in 0..reps.max(1) {
                    match futexes(&dir, tool, imp, small)
                        .and_then(|a| Ok(futexes(&dir, tool, imp, large)? - a))
                    {
                        // Fewer calls in the larger run: noise, counted as none.
                        Ok(d) => r.0.push(d.max(0.0) / tasks),
                        Err(e) => {
                            err = Some(e);
                            break;
                        }
                    }
                }
                let o = match err {
                    Some(e) => Err(e),
                    None => Ok(vec![r]),
                };
                cost.futexes.insert(imp, o);
            }
            None => {
                let why = "neither perf (futex tracepoint) nor strace usable here".to_string();
                cost.futexes.insert(imp, Err(why));
            }
        }
        let fig = |m: &HashMap<Impl, Outcome>, d: usize| match m.get(&imp) {
            Some(Ok(r)) => format!("{:.*}", d, r[0].median()),
            _ => "not measured".into(),
        };
        eprintln!(
            "W1 cost {} ({:.1} s): {} instructions, {} allocator calls, {} futex calls per task",
            imp.id(),
            t.elapsed().as_secs_f64(),
            fig(&cost.instructions, 0),
            fig(&cost.mallocs, 3),
            fig(&cost.futexes, 4)
        );
    }
    cost
}
