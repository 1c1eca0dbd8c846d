#!/usr/bin/env bash
# `make stress`: the long reliability runs, then their figures.
#
#   1. the Rust stress test (tests/stress.rs): STRESS_TASKS accepted tasks (default 10,000,000), then
#      rounds for STRESS_SECONDS (default 300) with another seed;
#   2. the C stress test (tests/c/test_stress.c): STRESS_C_TASKS (default 1,000,000) plain, a tenth of
#      that under ASan+UBSan;
#   3. every C test under valgrind memcheck, the stress test with STRESS_VALGRIND_TASKS (default 20,000);
#   4. the model-based test with STRESS_MODEL_SEEDS sequences (default 20,000);
#   5. the engine's Rust tests under ThreadSanitizer (nightly, -Zsanitizer=thread, std rebuilt with it),
#      and the pure-Rust modules' unit tests under Miri;
#   6. the fuzz target for FUZZ_SECONDS (default 120), from the committed seed corpus;
#   7. the Python binding's process-exit scenarios (bindings/python/tests/test_exit.py), 20 runs each.
#
# Step 5 needs a nightly toolchain with rust-src, installed with rustup when missing (no root); where none
# can be had, the engine's tests run under ASan on the stable toolchain instead. Step 6 needs cargo-fuzz
# (cargo install, into your home directory, when missing).
# Every step must pass; the figures are printed at the end and written to build/stress/summary.txt.
#
# Run from the repository root with CMAKE and CTEST set (the Makefile does this).
set -euo pipefail

: "${CMAKE:?set CMAKE}" "${CTEST:?set CTEST}"
STRESS_TASKS=${STRESS_TASKS:-10000000}
STRESS_SECONDS=${STRESS_SECONDS:-300}
STRESS_C_TASKS=${STRESS_C_TASKS:-1000000}
STRESS_VALGRIND_TASKS=${STRESS_VALGRIND_TASKS:-20000}
STRESS_MODEL_SEEDS=${STRESS_MODEL_SEEDS:-20000}
FUZZ_SECONDS=${FUZZ_SECONDS:-120}

root=$(pwd)
out=build/stress
mkdir -p "$out"
summary=$out/summary.txt
: >"$summary"
lib=$root/target/release/libasyncify.so

step() { printf '\n==> %s\n' "$*"; }
figure() { printf '%s\n' "$*" | tee -a "$summary"; }
# Fails the run when a log has a checker's report (`! grep` would not stop `set -e`).
refuse() {
    if grep -qE "$1" "$2"; then
        echo "$2: found \"$1\"" >&2
        exit 1
    fi
}
# The one figures line a run printed (its "stress (...)" or "model: ..." line).
line_of() { grep -E "$2" "$1" | tail -1; }

# The tasks and the races of a stress line, and its violation count (Rust) or error count (C).
stress_figures() {
    local name=$1 line=$2
    local tasks ran races bad
    tasks=$(sed -n 's/.*: \([0-9]*\) tasks accepted.*/\1/p' <<<"$line")
    ran=$(sed -n 's/.*tasks accepted, \([0-9]*\) ran.*/\1/p' <<<"$line")
    races=$(sed -n 's/.*races: \(.*\); results:.*/\1/p' <<<"$line")
    bad=$(sed -n 's/.*\(violations\|errors\) \([0-9]*\)$/\2/p' <<<"$line")
    figure "$name: $tasks tasks accepted, $ran ran; errors ${bad:-?}"
    figure "    races: $races"
    [[ ${bad:-1} == 0 ]]
}

cargo build --release
ln -sf libasyncify.so target/release/libasyncify.so.0

step "1. Rust stress: $STRESS_TASKS tasks"
ASYNCIFY_STRESS_TASKS=$STRESS_TASKS cargo test --release --test stress -- --nocapture 2>&1 | tee "$out/rust-tasks.log"
stress_figures "rust stress ($STRESS_TASKS tasks)" "$(line_of "$out/rust-tasks.log" '^stress \(')"

step "1b. Rust stress: rounds for $STRESS_SECONDS s"
ASYNCIFY_STRESS_SECONDS=$STRESS_SECONDS ASYNCIFY_STRESS_SEED=0x5eed1 \
    cargo test --release --test stress -- --nocapture 2>&1 | tee "$out/rust-timed.log"
stress_figures "rust stress (${STRESS_SECONDS} s)" "$(line_of "$out/rust-timed.log" '^stress \(')"

step "2. C stress: $STRESS_C_TASKS tasks plain, $((STRESS_C_TASKS / 10)) under ASan+UBSan"
for kind in plain asan; do
    dir=$out/c-$kind
    san=""
    [[ $kind == asan ]] && san=address,undefined
    "$CMAKE" -S tests/c -B "$dir" -DASYNCIFY_INCLUDE_DIR="$root/include" -DASYNCIFY_LIB="$lib" \
        -DASYNCIFY_SANITIZE=$san >/dev/null
    "$CMAKE" --build "$dir" -j2 --target test_stress >/dev/null
    n=$STRESS_C_TASKS
    [[ $kind == asan ]] && n=$((STRESS_C_TASKS / 10))
    ASYNCIFY_STRESS_TASKS=$n "$dir/test_stress" 2>&1 | tee "$out/c-$kind.log"
    grep -q "^PASS test_stress" "$out/c-$kind.log"
    refuse "ERROR: (Address|Leak)Sanitizer|runtime error:" "$out/c-$kind.log"
    stress_figures "C stress $kind ($n tasks)" "$(line_of "$out/c-$kind.log" '^stress \(')"
done

step "3. valgrind memcheck: every C test, stress with $STRESS_VALGRIND_TASKS tasks"
"$CMAKE" -S tests/c -B "$out/c-valgrind" -DASYNCIFY_INCLUDE_DIR="$root/include" -DASYNCIFY_LIB="$lib" \
    -DASYNCIFY_SANITIZE= -DASYNCIFY_VALGRIND=ON -DASYNCIFY_VALGRIND_STRESS_TASKS="$STRESS_VALGRIND_TASKS" >/dev/null
"$CMAKE" --build "$out/c-valgrind" -j2 >/dev/null
(cd "$out/c-valgrind" && "$CTEST" -L valgrind --output-on-failure -j2) 2>&1 | tee "$out/valgrind.log"
passed=$(sed -n 's/.*tests passed, \([0-9]*\) tests failed out of \([0-9]*\).*/\2/p; s/^100% tests passed out of \([0-9]*\).*/\1/p' "$out/valgrind.log")
figure "valgrind memcheck: ${passed:-?} runs (the leak canary among them), leaks 0, errors 0"

step "4. model-based test: $STRESS_MODEL_SEEDS sequences"
ASYNCIFY_MODEL_SEEDS=$STRESS_MODEL_SEEDS ASYNCIFY_MODEL_SEED=0x51e55 \
    cargo test --release --test model -- --nocapture 2>&1 | tee "$out/model.log"
figure "$(line_of "$out/model.log" '^model:')"

# A nightly toolchain with its std sources (for TSan's rebuilt std): the one installed, or one rustup
# installs now. Machines that cannot fetch another toolchain run step 5 as ASan on the stable toolchain
# and fuzz without a sanitizer (RUSTC_BOOTSTRAP=1 admits the -Z flags there).
nightly=no
if command -v rustup >/dev/null &&
    { rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal; } &&
    { rustup component list --toolchain nightly --installed | grep -q '^rust-src' ||
        rustup component add rust-src --toolchain nightly; }; then
    nightly=yes
fi
target=$(rustc -vV | sed -n 's/^host: //p')

if [[ $nightly == yes ]]; then
    step "5. ThreadSanitizer: the engine's tests (nightly, std rebuilt with TSan)"
    RUSTFLAGS="-Zsanitizer=thread" RUSTDOCFLAGS="-Zsanitizer=thread" CARGO_TARGET_DIR=target/tsan \
        ASYNCIFY_STRESS_TASKS=100000 TSAN_OPTIONS="halt_on_error=1" \
        cargo +nightly test -Zbuild-std --target "$target" --lib --test exactly_once --test pool \
        --test stress --test faults 2>&1 | tee "$out/tsan.log"
    refuse "WARNING: ThreadSanitizer" "$out/tsan.log"
    figure "ThreadSanitizer: $(grep -c '^test result: ok' "$out/tsan.log") test binaries (engine unit tests, exactly_once, pool, faults, stress with 100000 tasks), data races 0"
else
    step "5. no nightly toolchain: the engine's tests under ASan on stable instead of TSan"
    make test-rust-asan 2>&1 | tee "$out/rust-asan.log"
    figure "ThreadSanitizer: not run (no nightly toolchain); the engine's tests passed under ASan instead"
fi

if [[ $nightly == yes ]] && { rustup component list --toolchain nightly --installed | grep -q '^miri' ||
    rustup component add miri --toolchain nightly; }; then
    step "5b. Miri: the unit tests of the pure-Rust modules (table, overrides, handles, queue, task slots)"
    # Permissive provenance: values hold the caller's pointers as integers (never dereferenced) and turn
    # them back into pointers only to hand them to the caller's release and clone functions.
    MIRIFLAGS=-Zmiri-permissive-provenance CARGO_TARGET_DIR=target/miri \
        cargo +nightly miri test --lib -- table:: overrides:: handles:: queue::tests::one_thread \
        queue::tests::a_dropped task::tests::a_zeroed_task 2>&1 | tee "$out/miri.log"
    figure "Miri: $(grep -c '^test .* ok$' "$out/miri.log") unit tests of table, overrides, handles, queue and task slots, undefined behaviour 0"
else
    figure "Miri: not run (no nightly toolchain with miri)"
fi

step "6. fuzz: $FUZZ_SECONDS s"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# New inputs go to the first directory, corpus/work (git-ignored); corpus/api holds the committed seeds.
mkdir -p fuzz/corpus/work
if [[ $nightly == yes ]]; then
    fuzz=(cargo +nightly fuzz run)
else
    fuzz=(env RUSTC_BOOTSTRAP=1 cargo fuzz run -s none)
fi
# -detect_leaks=0: libFuzzer's own leak check runs between inputs while worker threads of earlier inputs
# are still parked or exiting, and it has reported the thread-locals of an exiting worker (its last-error
# buffer, glibc's thread-local destructor list) that the same input, replayed alone, does not leak. Leaks
# are checked where a process ends cleanly: LeakSanitizer and valgrind over the C and Rust tests above.
"${fuzz[@]}" api fuzz/corpus/work fuzz/corpus/api -- -max_total_time="$FUZZ_SECONDS" -detect_leaks=0 \
    2>&1 | tee "$out/fuzz.log"
runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$out/fuzz.log" | tail -1)
figure "fuzz: ${runs:-?} inputs in $FUZZ_SECONDS s, crashes and model mismatches 0"

step "7. Python process exit with calls still running: each scenario 20 times"
if [[ -x .venv/bin/python ]]; then
    ASYNCIFY_LIBRARY=$lib CASYNCIFY_EXIT_RUNS=20 .venv/bin/python -m pytest bindings/python/tests/test_exit.py \
        -q 2>&1 | tee "$out/exit.log"
    figure "Python exit scenarios: $(grep -o '[0-9]* passed' "$out/exit.log" | tail -1), 20 runs each, aborts 0"
else
    figure "Python exit scenarios: not run (no .venv; run make test first)"
fi

printf '\n==> figures (also in %s)\n' "$summary"
cat "$summary"
