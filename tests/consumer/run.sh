#!/bin/sh
# The install-and-consume test: installs the built library into a temporary prefix (no root), then
# checks the installed copy as a user of it would meet it:
#
#   - the file layout, the symlinks and the SONAME (readelf -d);
#   - nm -D lists only asyncify_* symbols, exactly the functions asyncify.h declares;
#   - asyncify.h compiles on its own as C11 and as C++17, asyncify.hpp as C++17, warnings as errors;
#   - tests/consumer builds with find_package(asyncify) (shared and static) and with pkg-config (shared
#     and static), against the installed copy only, and runs;
#   - the CMake version file accepts the same major version only;
#   - the C++ wrapper tests (tests/cpp) build and pass against the installed asyncify::asyncify_cpp;
#   - a DESTDIR staged install with LIBDIR=lib64 is relocatable;
#   - the installed library has no .debug_info section and is under 1 MB;
#   - `make install` installs the library already built without running cargo (CARGO=false), and in a
#     checkout with no build runs `make lib` first (a stand-in cargo records the call).
#
# Needs: make lib first; cmake (default: .venv/bin/cmake); cc and c++; nm and readelf (binutils);
# pkg-config or pkgconf, else the PyPI pkgconf package is installed into .venv. Settings: CMAKE, CTEST,
# CC, CXX, PKG_CONFIG; KEEP=1 keeps the temporary directory.
# "A && B || fail ..." fails when either fails, as meant (SC2015); the sh -c scripts are quoted on purpose
# (SC2016).
# shellcheck disable=SC2015,SC2016
set -eu

root=$(cd "$(dirname "$0")/../.." && pwd)
here=$root/tests/consumer
venv=$root/.venv
CC=${CC:-cc}
CXX=${CXX:-c++}
if [ -z "${CMAKE:-}" ]; then
    if [ -x "$venv/bin/cmake" ]; then CMAKE=$venv/bin/cmake; else CMAKE=cmake; fi
fi
if [ -z "${CTEST:-}" ]; then
    if [ -x "$venv/bin/ctest" ]; then CTEST=$venv/bin/ctest; else CTEST=ctest; fi
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/asyncify-consumer.XXXXXX")
if [ "${KEEP:-0}" = 1 ]; then
    echo "# keeping $work"
else
    trap 'rm -rf "$work"' EXIT
fi
trap 'exit 1' INT TERM
prefix=$work/prefix
log=$work/log

failures=0
ok() { echo "ok - $1"; }
not_ok() {
    echo "not ok - $1"
    [ -s "$log" ] && sed 's/^/#   /' "$log"
    failures=$((failures + 1))
}
# step "what it shows" command...: runs the command (often a function below) in a subshell with its
# output in $log, shown only on failure. Inside it, fail ends the step.
step() {
    what=$1
    shift
    if ("$@") >"$log" 2>&1; then ok "$what"; else not_ok "$what"; fi
}
fail() {
    echo "FAILED: $*"
    exit 1
}

version=$(sed -n '/^\[package\]/,/^\[/s/^version[ 	]*=[ 	]*"\([0-9]*\.[0-9]*\.[0-9]*\).*/\1/p' "$root/Cargo.toml" | head -n 1)
[ -n "$version" ] || { echo "no version in Cargo.toml" >&2; exit 1; }
major=${version%%.*}
minor=${version#*.}
minor=${minor%%.*}
echo "# asyncify $version into $prefix"

# --- install ------------------------------------------------------------------------------------------

step "install.sh installs into a temporary prefix" env PREFIX="$prefix" DESTDIR= LIBDIR= INCLUDEDIR= \
    sh "$root/packaging/install.sh"
[ "$failures" = 0 ] || exit 1
lib=$prefix/lib

check_layout() {
    for f in lib/libasyncify.so.$version lib/libasyncify.a include/asyncify.h include/asyncify.hpp \
        lib/pkgconfig/asyncify.pc lib/cmake/asyncify/asyncifyConfig.cmake \
        lib/cmake/asyncify/asyncifyConfigVersion.cmake; do
        [ -f "$prefix/$f" ] && [ ! -L "$prefix/$f" ] || fail "missing or not a plain file: $f"
    done
    [ "$(readlink "$lib/libasyncify.so.$major")" = "libasyncify.so.$version" ] ||
        fail "libasyncify.so.$major -> $(readlink "$lib/libasyncify.so.$major")"
    [ "$(readlink "$lib/libasyncify.so")" = "libasyncify.so.$major" ] ||
        fail "libasyncify.so -> $(readlink "$lib/libasyncify.so")"
    cmp "$prefix/include/asyncify.h" "$root/include/asyncify.h" || fail "installed asyncify.h differs"
    cmp "$prefix/include/asyncify.hpp" "$root/bindings/cpp/asyncify.hpp" || fail "installed asyncify.hpp differs"
}
step "layout: lib/libasyncify.so.$version, .so.$major -> it, .so -> .so.$major, .a, headers, .pc, CMake package" \
    check_layout

# Installing again over an existing copy works (and replaces files by rename).
step "installing twice is fine" env PREFIX="$prefix" DESTDIR= LIBDIR= INCLUDEDIR= sh "$root/packaging/install.sh"

# --- make install -------------------------------------------------------------------------------------

# The outer make's settings (test-packaging runs this script) must not reach these.
plain_make() {
    env -u MAKEFLAGS -u MAKELEVEL -u MFLAGS make --no-print-directory "$@"
}

make_install_built() {
    # With the library built, `make install` must not run cargo: CARGO=false would fail the build.
    plain_make -C "$root" install PREFIX="$work/make-prefix" CARGO=false &&
        [ -f "$work/make-prefix/lib/libasyncify.so.$version" ] &&
        [ -f "$work/make-prefix/lib/cmake/asyncify/asyncifyConfig.cmake" ] ||
        fail "make install did not install into $work/make-prefix"
}
step "make install with the library built runs no cargo (CARGO=false)" make_install_built

make_install_clean() {
    # A checkout without target/: the files git tracks or would track, as in a user's fresh clone.
    clean=$work/clean-checkout
    mkdir -p "$clean"
    (cd "$root" && git ls-files -z --cached --others --exclude-standard |
        xargs -0 sh -c 'for f; do [ -f "$f" ] && printf "%s\0" "$f"; done; true' sh |
        tar --null -T - -cf -) | (cd "$clean" && tar -xf -)
    [ ! -e "$clean/target" ] || fail "the copy has a target/"
    # A stand-in cargo: records its arguments and "builds" by copying this checkout's build.
    printf '%s\n' '#!/bin/sh' \
        "echo \"\$*\" >>'$work/fake-cargo.log'" \
        'mkdir -p target/release' \
        "cp '$root/target/release/libasyncify.so' '$root/target/release/libasyncify.a' target/release/" \
        >"$work/fake-cargo"
    chmod +x "$work/fake-cargo"
    plain_make -C "$clean" install PREFIX="$work/clean-prefix" CARGO="$work/fake-cargo" ||
        fail "make install in a clean checkout failed"
    cat "$work/fake-cargo.log"
    grep -q '^build --profile release' "$work/fake-cargo.log" || fail "make install did not build first"
    [ -L "$clean/target/release/libasyncify.so.$major" ] || fail "make lib did not link libasyncify.so.$major"
    [ -f "$work/clean-prefix/lib/libasyncify.so.$version" ] || fail "nothing installed"
}
step "make install in a checkout with no build runs make lib (cargo build) first" make_install_clean

# --- the shared library -------------------------------------------------------------------------------

check_soname() {
    readelf -d "$lib/libasyncify.so.$version" | tee /dev/stderr | grep -q "(SONAME).*\[libasyncify\.so\.$major\]"
}
step "readelf -d: SONAME libasyncify.so.$major" check_soname

check_stripped() {
    readelf -S "$lib/libasyncify.so.$version" >"$work/sections" || fail "readelf -S"
    ! grep '\.debug_' "$work/sections" || fail "the installed library has debug sections (above)"
    size=$(wc -c <"$lib/libasyncify.so.$version")
    echo "$size bytes"
    [ "$size" -lt 1048576 ] || fail "the installed library is $size bytes, 1 MB or more"
}
step "readelf -S: the installed library has no .debug_info (nor other .debug_ section), under 1 MB" \
    check_stripped

check_exports() {
    nm -D --defined-only "$lib/libasyncify.so.$version" | awk '{ print $NF }' | sed 's/@.*//' | sort -u \
        >"$work/exported"
    [ -s "$work/exported" ] || fail "nm -D lists no symbols"
    if grep -v '^asyncify_' "$work/exported"; then
        fail "exported without the asyncify_ prefix (above)"
    fi
    printf '#include <asyncify.h>\n' >"$work/declared.c"
    "$CC" -E -P -I"$prefix/include" "$work/declared.c" | grep -o 'asyncify_[A-Za-z0-9_]*[ 	]*(' |
        sed 's/[ 	]*($//' | sort -u >"$work/declared"
    [ -s "$work/declared" ] || fail "found no function declarations in asyncify.h"
    diff "$work/declared" "$work/exported" ||
        fail "exported symbols (>) and functions declared in asyncify.h (<) differ"
    echo "$(wc -l <"$work/exported") symbols"
}
step "nm -D: only asyncify_* symbols, exactly the functions of asyncify.h" check_exports

# --- the installed headers on their own ---------------------------------------------------------------

printf '#include <asyncify.h>\n' >"$work/alone.c"
printf '#include <asyncify.h>\n' >"$work/alone_h.cpp"
printf '#include <asyncify.hpp>\n' >"$work/alone_hpp.cpp"
step "asyncify.h alone as C11, -Wall -Wextra -Wpedantic -Werror" \
    "$CC" -std=c11 -Wall -Wextra -Wpedantic -Werror -fsyntax-only -I"$prefix/include" "$work/alone.c"
step "asyncify.h alone as C++17, -Wall -Wextra -Wpedantic -Werror" \
    "$CXX" -std=c++17 -Wall -Wextra -Wpedantic -Werror -fsyntax-only -I"$prefix/include" "$work/alone_h.cpp"
step "asyncify.hpp alone as C++17, -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Werror" \
    "$CXX" -std=c++17 -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wsign-conversion -Wold-style-cast -Werror \
    -fsyntax-only -I"$prefix/include" "$work/alone_hpp.cpp"

# --- the consumer, with CMake -------------------------------------------------------------------------

# Runs a built consumer and checks which libasyncify it loaded ("static": none).
run_consumer() { # binary label expected-library
    "$1" "$2" || fail "$1 failed"
    if command -v ldd >/dev/null 2>&1; then
        loaded=$(ldd "$1" | grep libasyncify || true)
        echo "loads: ${loaded:-no libasyncify}"
        if [ "$3" = static ]; then
            [ -z "$loaded" ] || fail "a static consumer loads $loaded"
        else
            printf '%s\n' "$loaded" | grep -q "libasyncify\.so\.$major => $3 " ||
                fail "expected libasyncify.so.$major => $3"
        fi
    fi
}

cmake_consumer() { # build-dir extra-cmake-arguments...
    dir=$1
    shift
    "$CMAKE" -S "$here" -B "$dir" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON \
        -DCMAKE_C_COMPILER="$CC" "$@" &&
        "$CMAKE" --build "$dir" &&
        grep -qx "asyncify_DIR:PATH=$lib/cmake/asyncify" "$dir/CMakeCache.txt" ||
        fail "find_package did not take the package from $lib/cmake/asyncify"
}

step "find_package(asyncify $major.$minor): consumer builds against asyncify::asyncify" \
    cmake_consumer "$work/cmake" -DASYNCIFY_CONSUMER_WANTS="$major.$minor"
step "find_package consumer runs, loading $lib/libasyncify.so.$major" \
    run_consumer "$work/cmake/consumer" cmake "$lib/libasyncify.so.$major"
step "find_package with ASYNCIFY_USE_STATIC_LIBS=ON: consumer builds against libasyncify.a" \
    cmake_consumer "$work/cmake-static" -DASYNCIFY_CONSUMER_WANTS="$major.$minor" -DASYNCIFY_USE_STATIC_LIBS=ON
step "static find_package consumer runs without libasyncify.so" \
    run_consumer "$work/cmake-static/consumer" cmake-static static

# SameMajorVersion, through find_package itself (the same build directory, configured again).
wants() { # version-request expected(found|refused)
    if "$CMAKE" -S "$here" -B "$work/cmake" -DASYNCIFY_CONSUMER_WANTS="$1"; then got=found; else got=refused; fi
    [ "$got" = "$2" ] || fail "find_package(asyncify $1) was $got, expected $2"
}
next_major=$((major + 1))
step "find_package(asyncify $version) is found" wants "$version" found
step "find_package(asyncify $major.0) is found" wants "$major.0" found
step "find_package(asyncify $major.$((minor + 1))) is refused (newer than installed)" \
    wants "$major.$((minor + 1))" refused
step "find_package(asyncify $next_major.0) is refused (another major version)" wants "$next_major.0" refused
if [ "$major" -gt 0 ]; then
    step "find_package(asyncify $((major - 1)).0) is refused (another major version)" wants "$((major - 1)).0" refused
fi
step "find_package(asyncify $major.0...<$next_major.0) is found (range)" wants "$major.0...<$next_major.0" found
step "find_package(asyncify $major.0...$next_major.0) is refused (range reaching the next major)" \
    wants "$major.0...$next_major.0" refused

check_pointer_size() {
    other_size=4
    [ "$(od -An -tu1 -j4 -N1 "$lib/libasyncify.so.$version" | tr -d ' ')" = 1 ] && other_size=8
    cat >"$work/pointer_size.cmake" <<EOF
set(CMAKE_SIZEOF_VOID_P $other_size)
set(PACKAGE_FIND_VERSION "$major.$minor")
set(PACKAGE_FIND_VERSION_MAJOR "$major")
include("$lib/cmake/asyncify/asyncifyConfigVersion.cmake")
if(NOT PACKAGE_VERSION_UNSUITABLE)
  message(FATAL_ERROR "a project with $other_size-byte pointers may use this library")
endif()
EOF
    "$CMAKE" -P "$work/pointer_size.cmake"
}
step "the version file refuses a project of the other pointer size" check_pointer_size

# --- the consumer, with pkg-config --------------------------------------------------------------------

if [ -z "${PKG_CONFIG:-}" ]; then
    for tool in pkg-config pkgconf; do
        if command -v "$tool" >/dev/null 2>&1; then
            PKG_CONFIG=$tool
            break
        fi
    done
fi
if [ -z "${PKG_CONFIG:-}" ]; then
    # A fresh machine may have none: PyPI's pkgconf ships the binary.
    if [ ! -x "$venv/bin/pkgconf" ]; then
        echo "# no pkg-config on PATH: installing pkgconf from PyPI into $venv"
        [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check pkgconf
    fi
    PKG_CONFIG=$venv/bin/pkgconf
fi
echo "# pkg-config: $PKG_CONFIG"
# Only the installed copy's .pc, never a system one.
PKG_CONFIG_LIBDIR=$lib/pkgconfig
PKG_CONFIG_PATH=$lib/pkgconfig
export PKG_CONFIG_LIBDIR PKG_CONFIG_PATH

# pkg-config's output as single-spaced words (some versions end it with a space).
pc() {
    # shellcheck disable=SC2046,SC2005
    echo $("$PKG_CONFIG" "$@" asyncify)
}
check_pc() {
    [ "$(pc --modversion)" = "$version" ] || fail "--modversion: $(pc --modversion)"
    [ "$(pc --cflags)" = "-I$prefix/include" ] || fail "--cflags: $(pc --cflags)"
    [ "$(pc --libs)" = "-L$lib -lasyncify" ] || fail "--libs: $(pc --libs)"
    "$PKG_CONFIG" --atleast-version="$major.$minor" asyncify || fail "--atleast-version=$major.$minor"
    ! "$PKG_CONFIG" --atleast-version="$next_major.0" asyncify || fail "--atleast-version=$next_major.0 holds"
}
step "pkg-config asyncify: version $version, -I$prefix/include, -L$lib -lasyncify" check_pc

pkg_build() {
    # shellcheck disable=SC2046 # pkg-config output is meant to be split into words
    "$CC" -std=c11 -Wall -Wextra -Wpedantic -Werror "$here/consumer.c" -o "$work/consumer-pkgconfig" \
        $("$PKG_CONFIG" --cflags --libs asyncify) -Wl,-rpath,"$("$PKG_CONFIG" --variable=libdir asyncify)"
}
step "cc \$(pkg-config --cflags --libs asyncify): consumer builds" pkg_build
step "pkg-config consumer runs, loading $lib/libasyncify.so.$major" \
    run_consumer "$work/consumer-pkgconfig" pkg-config "$lib/libasyncify.so.$major"

pkg_build_static() {
    # -Bstatic picks libasyncify.a for -lasyncify; Libs.private (--static) brings what it needs.
    # shellcheck disable=SC2046
    "$CC" -std=c11 -Wall -Wextra -Wpedantic -Werror "$here/consumer.c" -o "$work/consumer-pkgconfig-static" \
        $("$PKG_CONFIG" --cflags asyncify) -Wl,-Bstatic $("$PKG_CONFIG" --libs asyncify) -Wl,-Bdynamic \
        $("$PKG_CONFIG" --static --libs-only-l asyncify | sed 's/-lasyncify//')
}
step "static link with pkg-config --static (Libs.private): consumer builds" pkg_build_static
step "static pkg-config consumer runs without libasyncify.so" \
    run_consumer "$work/consumer-pkgconfig-static" pkg-config-static static

# --- the C++ wrapper against the installed package ----------------------------------------------------

cpp_tests() {
    "$CMAKE" -S "$root/tests/cpp" -B "$work/cpp" -DCMAKE_PREFIX_PATH="$prefix" \
        -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON -DCMAKE_CXX_COMPILER="$CXX" &&
        grep -qx "asyncify_DIR:PATH=$lib/cmake/asyncify" "$work/cpp/CMakeCache.txt" &&
        "$CMAKE" --build "$work/cpp" -j2 &&
        (cd "$work/cpp" && "$CTEST" --output-on-failure -j2)
}
step "tests/cpp pass against the installed asyncify::asyncify_cpp" cpp_tests

# --- a staged, relocated install ----------------------------------------------------------------------

stage=$work/stage
staged() {
    env DESTDIR="$stage" PREFIX=/opt/asyncify LIBDIR=lib64 INCLUDEDIR= sh "$root/packaging/install.sh" &&
        [ -f "$stage/opt/asyncify/lib64/libasyncify.so.$version" ] &&
        [ -f "$stage/opt/asyncify/include/asyncify.h" ] &&
        grep -qx "prefix=/opt/asyncify" "$stage/opt/asyncify/lib64/pkgconfig/asyncify.pc" &&
        grep -qx 'libdir=${prefix}/lib64' "$stage/opt/asyncify/lib64/pkgconfig/asyncify.pc" ||
        fail "files or .pc paths not as expected under $stage/opt/asyncify"
}
step "DESTDIR=... PREFIX=/opt/asyncify LIBDIR=lib64: files land under DESTDIR, the .pc says /opt/asyncify" staged
relocated() {
    # A distribution may ship the static library in another package: the shared one is enough.
    rm -f "$stage/opt/asyncify/lib64/libasyncify.a"
    # (CMake looks in lib64/ only on some distributions; asyncify_DIR is what a user would set.)
    "$CMAKE" -S "$here" -B "$work/relocated" -Dasyncify_DIR="$stage/opt/asyncify/lib64/cmake/asyncify" \
        -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON -DCMAKE_C_COMPILER="$CC" &&
        "$CMAKE" --build "$work/relocated" &&
        run_consumer "$work/relocated/consumer" relocated "$stage/opt/asyncify/lib64/libasyncify.so.$major"
}
step "the CMake package is relocatable: the staged copy (without libasyncify.a) builds and runs the consumer" \
    relocated

if [ "$failures" -ne 0 ]; then
    echo "FAIL packaging: $failures check(s) failed"
    exit 1
fi
echo "PASS packaging"
