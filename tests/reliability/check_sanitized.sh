#!/usr/bin/env bash
# Proves that the sanitized C test build really is sanitized: every test executable in the
# build directory must load libasan and libubsan, carry the instrumentation's calls (__asan_* and
# __ubsan_handle_*), and the AddressSanitizer runtime must start when one runs.
#
#   tests/reliability/check_sanitized.sh build/c-asan
set -euo pipefail
dir=${1:?usage: $0 <sanitized cmake build directory>}
shopt -s nullglob
checked=0
for exe in "$dir"/test_*; do
  [[ -f $exe && -x $exe ]] || continue
  libs=$(ldd "$exe")
  grep -q 'libasan\.so' <<<"$libs" || { echo "$exe: libasan is not linked" >&2; exit 1; }
  grep -q 'libubsan\.so' <<<"$libs" || { echo "$exe: libubsan is not linked" >&2; exit 1; }
  syms=$(nm -D --undefined-only "$exe")
  grep -q '__asan_' <<<"$syms" || { echo "$exe: no AddressSanitizer instrumentation" >&2; exit 1; }
  grep -q '__ubsan_handle_' <<<"$syms" || { echo "$exe: no UndefinedBehaviorSanitizer instrumentation" >&2; exit 1; }
  checked=$((checked + 1))
done
[[ $checked -gt 0 ]] || { echo "no test executables in $dir" >&2; exit 1; }
# The runtime itself: with verbosity on, the ASan runtime reports what it sets up, on stderr.
log=$(ASAN_OPTIONS=verbosity=1 "$dir/test_errors" 2>&1 >/dev/null || true)
grep -q 'AddressSanitizer' <<<"$log" ||
  { echo "$dir/test_errors: the AddressSanitizer runtime did not start" >&2; exit 1; }
echo "sanitizers linked: $checked test executables load libasan and libubsan and are instrumented; the ASan runtime starts"
