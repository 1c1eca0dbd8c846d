#!/bin/sh
# Build libuv as a shared library for the libuv peer of bench/suite, where
# Debian's libuv1 is not installed (it needs root). The sources are the ones
# bundled in the libuv-sys2 crate on crates.io, fetched with cargo (download
# only: that crate's own build needs libclang for bindgen). Compiled with the
# file list and defines of libuv's CMakeLists.txt for Linux.
#
#   sh bench/build_libuv.sh [OUT_DIR]      -> OUT_DIR/libuv.so, libuv.so.1 and include/
#                                             (default target/bench-libuv)
set -eu

out=${1:-target/bench-libuv}
ver=1.53.1
cargo=${CARGO:-cargo}
home=${CARGO_HOME:-$HOME/.cargo}
cc=${CC:-cc}
mkdir -p "$out"

find_src() {
    for d in "$home"/registry/src/*/"libuv-sys2-$ver"/libuv "$out/libuv-sys2-$ver/libuv"; do
        if [ -f "$d/include/uv.h" ]; then echo "$d"; return; fi
    done
}

src=$(find_src)
if [ -z "$src" ]; then
    echo "fetching the libuv-sys2 $ver crate (it bundles the libuv sources) with cargo" >&2
    mkdir -p "$out/fetch/src"
    : > "$out/fetch/src/lib.rs"
    cat > "$out/fetch/Cargo.toml" <<EOF
[package]
name = "fetch-libuv-sources"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
libuv-sys2 = "=$ver"

[workspace]
EOF
    "$cargo" fetch --manifest-path "$out/fetch/Cargo.toml" >&2 ||
        { echo "cargo fetch of libuv-sys2 $ver failed" >&2; exit 1; }
    src=$(find_src)
    if [ -z "$src" ]; then
        crate=$(find "$home"/registry/cache -name "libuv-sys2-$ver.crate" 2>/dev/null | head -1)
        [ -n "$crate" ] || { echo "libuv-sys2-$ver.crate not found after cargo fetch" >&2; exit 1; }
        tar -xzf "$crate" -C "$out"
        src=$(find_src)
    fi
fi
[ -n "$src" ] || { echo "no libuv sources" >&2; exit 1; }

echo "compiling libuv from $src" >&2
files="fs-poll.c idna.c inet.c random.c strscpy.c strtok.c thread-common.c threadpool.c
       timer.c uv-common.c uv-data-getter-setters.c version.c
       unix/async.c unix/core.c unix/dl.c unix/fs.c unix/getaddrinfo.c unix/getnameinfo.c
       unix/loop-watcher.c unix/loop.c unix/pipe.c unix/poll.c unix/process.c
       unix/random-devurandom.c unix/signal.c unix/stream.c unix/tcp.c unix/thread.c
       unix/tty.c unix/udp.c unix/proctitle.c unix/linux.c unix/procfs-exepath.c
       unix/random-getrandom.c unix/random-sysctl-linux.c"
objdir="$out/obj"
mkdir -p "$objdir/unix"
flags="-O2 -g -fPIC -std=gnu89 -fno-strict-aliasing -w -DBUILDING_UV_SHARED=1
       -D_GNU_SOURCE -D_POSIX_C_SOURCE=200112 -D_FILE_OFFSET_BITS=64 -D_LARGEFILE_SOURCE
       -I$src/include -I$src/src"
jobs=$(nproc 2>/dev/null || echo 2)
# $files and $flags are word lists: split on purpose (echo joins the lines of $flags).
# shellcheck disable=SC2086,SC2116
printf '%s\n' $files | xargs -P "$jobs" -I{} sh -c "$cc $(echo $flags) -c '$src/src/{}' -o '$objdir/{}.o'" ||
    { echo "compiling libuv's sources with $cc failed" >&2; exit 1; }
# shellcheck disable=SC2086
objs=$(printf "$objdir/%s.o " $files)
# shellcheck disable=SC2086
$cc -shared -Wl,-soname,libuv.so.1 -o "$out/libuv.so.tmp" $objs -lpthread -ldl -lrt ||
    { echo "linking libuv.so with $cc failed" >&2; exit 1; }
mv "$out/libuv.so.tmp" "$out/libuv.so"
# For programs built against it (examples/uv_loop.c): its headers and its SONAME's name.
rm -rf "$out/include" && cp -R "$src/include" "$out/include"
ln -sf libuv.so "$out/libuv.so.1"
echo "built $out/libuv.so (from the libuv-sys2 $ver crate)" >&2
