#!/bin/sh
# The from-source consumer test: CMake projects that build asyncify from its sources through the top-level
# CMakeLists.txt, as a user's project would, and run a C and a C++ program against its targets:
#
#   - tests/consumer/subdir: add_subdirectory(<this checkout>), cargo's target dir shared with make lib;
#   - tests/consumer/fetch: FetchContent with SOURCE_DIR (this checkout, target dir shared);
#   - tests/consumer/fetch: FetchContent with URL file://...tar.gz, a tarball of this tree's files (those
#     git tracks or would track: nothing git ignores, no target/ or build/) and cargo's default target dir
#     under the build directory, i.e. a cold build from a source release (about 20 s on 2 cores);
#   - with ASYNCIFY_USE_STATIC_LIBS=ON, asyncify::asyncify is the static library;
#   - the programs load libasyncify.so.MAJOR from the build tree (the SONAME link is there), the static
#     one loads none; the library built has no .debug_info and is under 1 MB;
#   - cmake --install of the add_subdirectory build installs as make install does (a find_package consumer
#     builds and runs against it), with --prefix and DESTDIR;
#   - configuring without cargo fails, naming cargo.
#
# Needs: cargo, cmake (default: .venv/bin/cmake), cc, c++, tar, readelf, ldd. Settings: CMAKE, CC, CXX;
# KEEP=1 keeps the temporary directory.
# "A && B || fail ..." fails when either fails, as meant (SC2015); the sh -c scripts are quoted on purpose
# (SC2016).
# shellcheck disable=SC2015,SC2016
set -eu

root=$(cd "$(dirname "$0")/../.." && pwd)
here=$root/tests/consumer
CC=${CC:-cc}
CXX=${CXX:-c++}
if [ -z "${CMAKE:-}" ]; then
    if [ -x "$root/.venv/bin/cmake" ]; then CMAKE=$root/.venv/bin/cmake; else CMAKE=cmake; fi
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/asyncify-source.XXXXXX")
if [ "${KEEP:-0}" = 1 ]; then
    echo "# keeping $work"
else
    trap 'rm -rf "$work"' EXIT
fi
trap 'exit 1' INT TERM
log=$work/log

failures=0
step() { # "what it shows" command...: the command's output is shown only when it fails
    what=$1
    shift
    if ("$@") >"$log" 2>&1; then
        echo "ok - $what"
    else
        echo "not ok - $what"
        sed 's/^/#   /' "$log"
        failures=$((failures + 1))
    fi
}
fail() {
    echo "FAILED: $*"
    exit 1
}

major=$(sed -n '/^\[package\]/,/^\[/s/^version[ 	]*=[ 	]*"\([0-9]*\)\..*/\1/p' "$root/Cargo.toml" | head -n 1)
[ -n "$major" ] || { echo "no version in Cargo.toml" >&2; exit 1; }

configure_and_build() { # source-dir build-dir cmake-arguments...
    src=$1
    dir=$2
    shift 2
    "$CMAKE" -S "$src" -B "$dir" -DCMAKE_C_COMPILER="$CC" -DCMAKE_CXX_COMPILER="$CXX" "$@" &&
        "$CMAKE" --build "$dir" -j2
}

# Runs the three programs of tests/consumer/targets.cmake; the shared ones must load libasyncify.so.MAJOR
# from the directory cargo built it in.
run_programs() { # build-dir label expected-library-dir
    for program in consumer consumer_cpp consumer_static; do
        "$1/$program" "$2" || fail "$1/$program failed"
        loaded=$(ldd "$1/$program" | grep libasyncify || true)
        echo "$program loads: ${loaded:-no libasyncify}"
        if [ "$program" = consumer_static ]; then
            [ -z "$loaded" ] || fail "the static consumer loads $loaded"
        else
            printf '%s\n' "$loaded" | grep -q "libasyncify\.so\.$major => $3/libasyncify\.so\.$major " ||
                fail "$program does not load $3/libasyncify.so.$major"
        fi
    done
}

# --- add_subdirectory ---------------------------------------------------------------------------------

step "add_subdirectory(asyncify): C, C++ and static C programs build (cargo target dir: target/)" \
    configure_and_build "$here/subdir" "$work/subdir" -DASYNCIFY_SOURCE_DIR="$root" \
    -DASYNCIFY_CARGO_TARGET_DIR="$root/target"
step "add_subdirectory programs run, loading target/release/libasyncify.so.$major" \
    run_programs "$work/subdir" subdir "$root/target/release"

static_option() {
    "$CMAKE" -S "$here/subdir" -B "$work/subdir-static" -DCMAKE_C_COMPILER="$CC" -DCMAKE_CXX_COMPILER="$CXX" \
        -DASYNCIFY_SOURCE_DIR="$root" -DASYNCIFY_CARGO_TARGET_DIR="$root/target" -DASYNCIFY_USE_STATIC_LIBS=ON &&
        "$CMAKE" --build "$work/subdir-static" --target consumer || fail "the build failed"
    "$work/subdir-static/consumer" subdir-static || fail "the program failed"
    ! ldd "$work/subdir-static/consumer" | grep libasyncify || fail "it loads libasyncify.so"
}
step "add_subdirectory with ASYNCIFY_USE_STATIC_LIBS=ON: asyncify::asyncify is the static library" static_option

cmake_install() {
    "$CMAKE" --install "$work/subdir" --prefix "$work/installed" || fail "cmake --install failed"
    [ -L "$work/installed/lib/libasyncify.so.$major" ] && [ -f "$work/installed/include/asyncify.hpp" ] &&
        [ -f "$work/installed/lib/cmake/asyncify/asyncifyConfig.cmake" ] || fail "not installed as make install does"
    # The installed package is usable: the find_package consumer builds and runs against it.
    "$CMAKE" -S "$here" -B "$work/installed-consumer" -DCMAKE_PREFIX_PATH="$work/installed" \
        -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON -DCMAKE_C_COMPILER="$CC" &&
        "$CMAKE" --build "$work/installed-consumer" &&
        "$work/installed-consumer/consumer" cmake-install || fail "the installed package does not work"
    ldd "$work/installed-consumer/consumer" | grep -q "libasyncify\.so\.$major => $work/installed/lib/" ||
        fail "the consumer does not load the installed library"
    # DESTDIR and --prefix are read when installing.
    DESTDIR="$work/stage" "$CMAKE" --install "$work/subdir" --prefix /opt/asyncify &&
        [ -f "$work/stage/opt/asyncify/include/asyncify.h" ] &&
        grep -qx "prefix=/opt/asyncify" "$work/stage/opt/asyncify/lib/pkgconfig/asyncify.pc" ||
        fail "DESTDIR=... cmake --install --prefix /opt/asyncify did not stage /opt/asyncify"
}
step "cmake --install installs as make install does (--prefix, DESTDIR); find_package uses that copy" \
    cmake_install

# --- FetchContent -------------------------------------------------------------------------------------

step "FetchContent SOURCE_DIR: C, C++ and static C programs build (cargo target dir: target/)" \
    configure_and_build "$here/fetch" "$work/fetch-dir" -DASYNCIFY_FETCH_SOURCE_DIR="$root" \
    -DASYNCIFY_CARGO_TARGET_DIR="$root/target"
step "FetchContent SOURCE_DIR programs run, loading target/release/libasyncify.so.$major" \
    run_programs "$work/fetch-dir" fetch-source-dir "$root/target/release"

tarball() {
    # The files git tracks (as they are in the working tree) and the new ones it does not ignore.
    cd "$root"
    git ls-files -z --cached --others --exclude-standard |
        xargs -0 sh -c 'for f; do [ -f "$f" ] && printf "%s\0" "$f"; done; true' sh |
        tar --null -T - --transform 's,^,asyncify/,' -czf "$work/asyncify.tar.gz"
    tar -tzf "$work/asyncify.tar.gz" | grep -qx asyncify/CMakeLists.txt || fail "no CMakeLists.txt in the tarball"
    ! tar -tzf "$work/asyncify.tar.gz" | grep -q '^asyncify/target/' || fail "target/ is in the tarball"
    ls -l "$work/asyncify.tar.gz"
}
step "a source tarball of the tree (tracked and new files, nothing git ignores)" tarball

fetched_out=$work/fetch-url/_deps/asyncify-build/cargo/release
step "FetchContent URL file://.../asyncify.tar.gz: builds with cargo's default target dir (a cold build)" \
    configure_and_build "$here/fetch" "$work/fetch-url" -DASYNCIFY_FETCH_URL="file://$work/asyncify.tar.gz"
step "FetchContent URL programs run, loading the build tree's libasyncify.so.$major" \
    run_programs "$work/fetch-url" fetch-url "$fetched_out"

check_stripped() { # library
    readelf -S "$1" >"$work/sections" || fail "readelf -S $1"
    if grep -q '\.debug_info' "$work/sections"; then
        fail "$1 has a .debug_info section"
    fi
    size=$(wc -c <"$1")
    echo "$1: $size bytes, no .debug_info"
    [ "$size" -lt 1048576 ] || fail "$1 is $size bytes, 1 MB or more"
}
step "the library built from the tarball has no .debug_info and is under 1 MB" \
    check_stripped "$fetched_out/libasyncify.so"

# --- without cargo ------------------------------------------------------------------------------------

no_cargo_message() {
    # No cargo on the PATH (only the compilers, linked into an empty directory, and /usr/bin:/bin), none in
    # ~/.cargo/bin or $CARGO_HOME/bin.
    mkdir -p "$work/bin" "$work/home"
    for tool in "$CC" "$CXX"; do
        ln -sf "$(command -v "$tool")" "$work/bin/$(basename "$tool")"
    done
    out=$(env PATH="$work/bin:/usr/bin:/bin" HOME="$work/home" CARGO_HOME="$work/home" \
        "$CMAKE" -S "$here/subdir" -B "$work/no-cargo" -DASYNCIFY_SOURCE_DIR="$root" 2>&1) && fail "configured"
    printf '%s\n' "$out"
    printf '%s\n' "$out" | tr '\n' ' ' | grep -q "built with cargo, which was not.*found" ||
        fail "the error does not say that cargo is missing"
}
if [ -x /usr/bin/cargo ] || [ -x /bin/cargo ]; then
    echo "ok - configuring without cargo # SKIP cargo is in /usr/bin"
else
    step "configuring without cargo stops with an error naming cargo" no_cargo_message
fi

if [ "$failures" -ne 0 ]; then
    echo "FAIL from-source consumers: $failures check(s) failed"
    exit 1
fi
echo "PASS from-source consumers"
