//! Model-based testing of the C ABI: seeded random sequences
//! of calls, bad input included, each status, output and callback compared
//! with a model of the contract (see `tests/support/api_model.rs`, which the
//! fuzz target `fuzz/fuzz_targets/api.rs` shares).
//!
//! `ASYNCIFY_MODEL_SEEDS` (default 300) sequences of `ASYNCIFY_MODEL_STEPS`
//! (default 400) steps, from `ASYNCIFY_MODEL_SEED` (default fixed), so a
//! failure names the seed that reproduces it:
//! `ASYNCIFY_MODEL_SEED=<seed> ASYNCIFY_MODEL_SEEDS=1 cargo test --release --test model`.

// Calls the C ABI as a C program would: raw pointers, hence unsafe blocks.
#![allow(unsafe_code)]

#[path = "support/api_model.rs"]
mod api_model;

use api_model::{Interp, Seeded};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| {
            let v = v.trim();
            v.strip_prefix("0x")
                .map_or_else(|| v.parse().ok(), |h| u64::from_str_radix(h, 16).ok())
        })
        .unwrap_or(default)
}

#[test]
fn random_call_sequences_match_the_model() {
    let first = env_u64("ASYNCIFY_MODEL_SEED", 0x6D0D_E100);
    let seeds = env_u64("ASYNCIFY_MODEL_SEEDS", 300);
    let steps = env_u64("ASYNCIFY_MODEL_STEPS", 400);
    let mut all = api_model::Figures::default();
    for seed in first..first + seeds {
        let mut interp = Interp::new(Seeded(seed));
        interp.expected_version = Some(env!("CARGO_PKG_VERSION"));
        match interp.run(steps) {
            Ok(f) => all.add(&f),
            Err(e) => panic!("seed {seed:#x}: {e}\n(reproduce: ASYNCIFY_MODEL_SEED={seed:#x} ASYNCIFY_MODEL_SEEDS=1)"),
        }
    }
    let f = all;
    eprintln!(
        "model: {seeds} sequences, {} steps, {} calls checked ({} of them errors the model expected), {} tasks, {} pool runs, \
         {} limiters ({} tasks with one, {} admitted after waiting, {} cancelled while waiting), {} expired; mismatches 0",
        f.steps,
        f.calls,
        f.errors_expected,
        f.tasks,
        f.runs,
        f.limiters,
        f.limited,
        f.admitted_later,
        f.cancelled_waiting,
        f.expired
    );
}

/// The fuzz target's committed seed corpus (`fuzz/corpus/api`), replayed
/// without libFuzzer: each file is one sequence of choices, a byte each.
#[test]
fn the_fuzz_seed_corpus_replays_against_the_model() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/api");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    assert!(!files.is_empty(), "no seed corpus in {}", dir.display());
    for f in &files {
        let data = std::fs::read(f).expect("corpus file");
        let mut interp = Interp::new(api_model::FromBytes { data: &data, at: 0 });
        interp.expected_version = Some(env!("CARGO_PKG_VERSION"));
        if let Err(e) = interp.run(u64::MAX) {
            panic!("{}: {e}", f.display());
        }
    }
    eprintln!("fuzz corpus: {} inputs replayed; mismatches 0", files.len());
}
