#!/bin/sh
# Profile one workload of bench/suite: a flat profile (symbols, self time) from
# `perf record -e cpu-clock` (hardware counters are not available on these
# VMs), or instruction counts from callgrind with PROFILER=callgrind (stable on
# a noisy machine; spinning is turned off there with ASYNCIFY_SPIN_US=0).
#
#   sh bench/profile.sh w1 asyncify              # perf, top 40 symbols
#   sh bench/profile.sh w2 asyncify --reps 3
#   PROFILER=callgrind sh bench/profile.sh w1 asyncify --reps 1
#
# Arguments are those of `cargo bench --bench suite -- ...`. Output files go
# to target/profile/. The suite is built with the profiling profile (release
# plus debug info, in target/profiling/; its first build takes a few minutes).
set -eu
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || { sed -n '2,13p' "$0"; exit 2; }
cargo=${CARGO:-cargo}
bin=$("$cargo" bench --profile profiling --bench suite --no-run --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*suite[^"]*\)".*/\1/p' | tail -1)
[ -x "$bin" ] || { echo "bench/profile.sh: could not build bench/suite" >&2; exit 1; }
mkdir -p target/profile
case "${PROFILER:-perf}" in
perf)
    data=target/profile/perf.data
    perf record -q -e cpu-clock -F 4000 -g -o "$data" "$bin" "$@" >/dev/null
    perf report -i "$data" --no-children --sort dso,sym --stdio -g none 2>/dev/null |
        grep -v '^#' | grep '%' | head -40
    echo "(call graphs: perf report -i $data --no-children)"
    ;;
callgrind)
    out=target/profile/callgrind.out
    ASYNCIFY_SPIN_US=0 valgrind -q --tool=callgrind --callgrind-out-file="$out" \
        "$bin" "$@" >/dev/null
    callgrind_annotate "$out" 2>/dev/null | grep -E '^ *[0-9,]+ ' | head -40
    ;;
*)
    echo "PROFILER is perf or callgrind" >&2
    exit 2
    ;;
esac
