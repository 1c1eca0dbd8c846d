#!/bin/sh
# Installs the built asyncify library into $DESTDIR$PREFIX (POSIX sh; no CMake or pkg-config needed):
#
#   lib/libasyncify.so.X.Y.Z        the shared library (SONAME libasyncify.so.X)
#   lib/libasyncify.so.X            -> libasyncify.so.X.Y.Z   (what programs load at run time)
#   lib/libasyncify.so              -> libasyncify.so.X       (what -lasyncify links against)
#   lib/libasyncify.a
#   include/asyncify.h  include/asyncify.hpp
#   lib/pkgconfig/asyncify.pc
#   lib/cmake/asyncify/asyncifyConfig.cmake  asyncifyConfigVersion.cmake
#
# Settings (environment):
#   PREFIX            where the files will live at run time (absolute; default /usr/local)
#   DESTDIR           a staging root prepended to every path written (default: none)
#   LIBDIR            library directory relative to PREFIX (default lib; e.g. lib64, lib/x86_64-linux-gnu)
#   INCLUDEDIR        header directory relative to PREFIX (default include)
#   CARGO_TARGET_DIR  where cargo put the build (default: target/ of this checkout)
#   CARGO_PROFILE     the cargo profile whose build is installed (default release: $CARGO_TARGET_DIR/release)
#
# It installs what `make lib` (cargo build --release) built and does not build anything itself. The
# version comes from Cargo.toml; the library and the header must agree with it.
set -eu

die() {
    echo "install.sh: $*" >&2
    exit 1
}

root=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
LIBDIR=${LIBDIR:-lib}
INCLUDEDIR=${INCLUDEDIR:-include}
build=${CARGO_TARGET_DIR:-$root/target}/${CARGO_PROFILE:-release}

case $PREFIX in
    /*) ;;
    *) die "PREFIX must be an absolute path (got '$PREFIX')" ;;
esac
for dir in "$LIBDIR" "$INCLUDEDIR"; do
    case $dir in
        /* | '' | . | ./* | */. | */./* | .. | ../* | */.. | */../*)
            die "LIBDIR and INCLUDEDIR are plain paths relative to PREFIX (got '$dir')" ;;
    esac
done
PREFIX=${PREFIX%/}
LIBDIR=${LIBDIR%/}
INCLUDEDIR=${INCLUDEDIR%/}

# The [package] version of Cargo.toml, e.g. 0.1.0 or 0.2.0-rc.1; file names use its X.Y.Z part.
full_version=$(sed -n '/^\[package\]/,/^\[/s/^version[ 	]*=[ 	]*"\([^"]*\)".*/\1/p' "$root/Cargo.toml" | head -n 1)
version=$(printf '%s\n' "$full_version" | sed -n 's/^\([0-9][0-9]*\.[0-9][0-9]*\.[0-9][0-9]*\).*/\1/p')
[ -n "$version" ] || die "no version = \"X.Y.Z\" in the [package] section of $root/Cargo.toml"
major=${version%%.*}
minor=${version#*.}
minor=${minor%%.*}
soname=libasyncify.so.$major

shared=$build/libasyncify.so
static=$build/libasyncify.a
header=$root/include/asyncify.h
cpp_header=$root/bindings/cpp/asyncify.hpp
for file in "$shared" "$static" "$header" "$cpp_header"; do
    [ -f "$file" ] || die "$file is missing: run 'make lib' first"
done

# Refuse a stale build or header rather than install files that disagree with each other.
grep -q "^#define ASYNCIFY_VERSION_STRING \"$full_version\"\$" "$header" ||
    die "$header does not say version $full_version (Cargo.toml): rebuild with 'make lib'"
if command -v readelf >/dev/null 2>&1; then
    readelf -d "$shared" | grep -q "(SONAME).*\[$soname\]" ||
        die "$shared does not have the SONAME $soname: rebuild with 'make lib'"
fi

# Pointer size of the library (ELF class byte: 1 = 32-bit, 2 = 64-bit), for the CMake version file.
case $(od -An -tu1 -j4 -N1 "$shared" | tr -d ' ') in
    1) sizeof_void_p=4 ;;
    2) sizeof_void_p=8 ;;
    *) die "$shared is not an ELF shared library" ;;
esac

# What a static link needs besides libasyncify.a: the Rust standard library inside it uses these.
static_libs="gcc_s util rt pthread m dl"
static_libs_pc=$(for l in $static_libs; do printf -- '-l%s ' "$l"; done)
static_libs_pc=${static_libs_pc% }
static_libs_cmake=$(printf '%s' "$static_libs" | tr ' ' ';')

# From lib/cmake/asyncify (or $LIBDIR/cmake/asyncify) back up to the prefix: one ".." per component.
config_to_prefix=../..
rest=$LIBDIR
while :; do
    config_to_prefix=$config_to_prefix/..
    case $rest in
        */*) rest=${rest#*/} ;;
        *) break ;;
    esac
done

libdir=$DESTDIR$PREFIX/$LIBDIR
includedir=$DESTDIR$PREFIX/$INCLUDEDIR
cmakedir=$libdir/cmake/asyncify
mkdir -p "$libdir" "$includedir" "$libdir/pkgconfig" "$cmakedir"

# Copies to a temporary name, then renames: a program running the old library keeps its mapping.
put() { # source destination mode
    cp "$1" "$2.tmp.$$"
    chmod "$3" "$2.tmp.$$"
    mv -f "$2.tmp.$$" "$2"
    echo "installed $2"
}

# Fills a template's @NAME@ placeholders. Values are escaped for sed's replacement text.
sed_value() {
    printf '%s\n' "$1" | sed 's/[\\&|]/\\&/g'
}
render() { # template destination
    sed -e "s|@PREFIX@|$(sed_value "$PREFIX")|g" \
        -e "s|@LIBDIR@|$(sed_value "$LIBDIR")|g" \
        -e "s|@INCLUDEDIR@|$(sed_value "$INCLUDEDIR")|g" \
        -e "s|@VERSION@|$version|g" \
        -e "s|@MAJOR@|$major|g" \
        -e "s|@MINOR@|$minor|g" \
        -e "s|@SIZEOF_VOID_P@|$sizeof_void_p|g" \
        -e "s|@CONFIG_TO_PREFIX@|$config_to_prefix|g" \
        -e "s|@STATIC_LIBS@|$static_libs_pc|g" \
        -e "s|@STATIC_LIBS_CMAKE@|$static_libs_cmake|g" \
        "$1" >"$2.tmp.$$"
    if grep -q '@[A-Z_]*@' "$2.tmp.$$"; then
        rm -f "$2.tmp.$$"
        die "$1 has a placeholder install.sh does not know"
    fi
    chmod 644 "$2.tmp.$$"
    mv -f "$2.tmp.$$" "$2"
    echo "installed $2"
}

put "$shared" "$libdir/libasyncify.so.$version" 755
rm -f "$libdir/$soname" "$libdir/libasyncify.so"
ln -s "libasyncify.so.$version" "$libdir/$soname"
ln -s "$soname" "$libdir/libasyncify.so"
echo "installed $libdir/$soname -> libasyncify.so.$version"
echo "installed $libdir/libasyncify.so -> $soname"
put "$static" "$libdir/libasyncify.a" 644
put "$header" "$includedir/asyncify.h" 644
put "$cpp_header" "$includedir/asyncify.hpp" 644

here=$root/packaging
render "$here/asyncify.pc.in" "$libdir/pkgconfig/asyncify.pc"
render "$here/asyncifyConfig.cmake.in" "$cmakedir/asyncifyConfig.cmake"
render "$here/asyncifyConfigVersion.cmake.in" "$cmakedir/asyncifyConfigVersion.cmake"
