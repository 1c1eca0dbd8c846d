#!/bin/sh
# The README's C and C++ examples, built and run exactly as the README says: the code block of "## A C
# example" (and of "**C++.**") is written to
# example.c (example.cpp), and the sh block after it is run
# line by line in a directory that looks like the top of the checkout (include/, bindings/ and target/
# are links to this one's). The first line of each sh block must be `make lib`, which test-packaging has
# run already (its libasyncify.so.MAJOR link must be there); the others run as written.
#
# Needs: make lib first; cc and c++. KEEP=1 keeps the temporary directory.
set -eu

root=$(cd "$(dirname "$0")/../.." && pwd)
readme=$root/README.md

work=$(mktemp -d "${TMPDIR:-/tmp}/asyncify-readme.XXXXXX")
if [ "${KEEP:-0}" = 1 ]; then
    echo "# keeping $work"
else
    trap 'rm -rf "$work"' EXIT
fi
trap 'exit 1' INT TERM

failures=0
not_ok() {
    echo "not ok - $1"
    [ -s "$work/log" ] && sed 's/^/#   /' "$work/log"
    failures=$((failures + 1))
}

major=$(sed -n '/^\[package\]/,/^\[/s/^version[ 	]*=[ 	]*"\([0-9]*\)\..*/\1/p' "$root/Cargo.toml" | head -n 1)

# block heading-pattern fence-language n: the n-th fenced block of that language after the first line
# matching the heading pattern (without its fences).
block() {
    awk -v heading="$1" -v lang="$2" -v n="$3" '
        !seen && $0 ~ heading { seen = 1; next }
        !seen { next }
        inside && /^```/ { inside = 0; if (count == n) exit; next }
        inside { if (count == n) print; next }
        $0 == "```" lang { count++; inside = 1 }
    ' "$readme"
}

# example heading-pattern code-language source-file label expected-output-lines...
example() {
    heading=$1 lang=$2 file=$3 label=$4
    shift 4
    dir=$work/$label
    mkdir -p "$dir"
    for d in include bindings target; do
        ln -s "$root/$d" "$dir/$d"
    done
    block "$heading" "$lang" 1 >"$dir/$file"
    block "$heading" sh 1 >"$dir/build.sh"
    : >"$work/log"
    if [ ! -s "$dir/$file" ] || [ ! -s "$dir/build.sh" ]; then
        echo "no \`\`\`$lang block, or no \`\`\`sh block after it, under /$heading/ in README.md" >"$work/log"
        not_ok "README $label example"
        return
    fi
    first=$(head -n 1 "$dir/build.sh")
    case $first in
        "make lib" | "make lib "*) ;;
        *)
            echo "its build block starts with '$first', not make lib" >"$work/log"
            not_ok "README $label example: the build block starts with make lib"
            return
            ;;
    esac
    [ -L "$root/target/release/libasyncify.so.$major" ] || {
        echo "target/release/libasyncify.so.$major is missing: run make lib" >"$work/log"
        not_ok "README $label example"
        return
    }
    sed 1d "$dir/build.sh" >"$dir/rest.sh"
    if ! (cd "$dir" && sh -ex rest.sh) >"$work/log" 2>&1; then
        not_ok "README $label example builds and runs as written"
        return
    fi
    for line in "$@"; do
        if ! grep -qF -- "$line" "$work/log"; then
            echo "(expected a line with: $line)" >>"$work/log"
            not_ok "README $label example prints what it should"
            return
        fi
    done
    echo "ok - README $label example builds and runs as written ($(sed 1d "$dir/build.sh" | head -n 1 | cut -c1-60)...)"
}

example '^## A C example' c example.c C "summarizing report.txt with gpt-4o" ": a summary"
example '^\*\*C\+\+\.\*\*' cpp example.cpp C++ "gpt-4o summarized report.txt" "abc"

if [ "$failures" -ne 0 ]; then
    echo "FAIL README examples: $failures failed"
    exit 1
fi
echo "PASS README examples"
