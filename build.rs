//! Generates include/asyncify.h with cbindgen, and writes it only when its
//! content changed, so an unchanged header keeps its timestamp.

use std::env;
use std::fs;
use std::path::Path;

fn main() {
    let dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let version = env::var("CARGO_PKG_VERSION").expect("cargo sets CARGO_PKG_VERSION");
    let part = |name: &str| env::var(name).expect("cargo sets the version parts");
    // The shared library's SONAME carries the major version: a binary linked
    // against libasyncify.so.0 keeps working across 0.x releases that only add.
    println!(
        "cargo:rustc-cdylib-link-arg=-Wl,-soname,libasyncify.so.{}",
        part("CARGO_PKG_VERSION_MAJOR")
    );
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");

    let mut config = cbindgen::Config::from_file(Path::new(&dir).join("cbindgen.toml"))
        .expect("cbindgen.toml is valid");
    config.after_includes = Some(format!(
        "\n/**\n * The major version of the library this header came with. A program\n \
         * linked against `libasyncify.so.MAJOR` runs with every later library of\n \
         * that major version.\n */\n#define ASYNCIFY_VERSION_MAJOR {}\n\n\
         /**\n * The minor version of this header: a minor release only adds\n \
         * (functions, statuses, flags, fields at the end of versioned structs).\n \
         */\n#define ASYNCIFY_VERSION_MINOR {}\n\n\
         /**\n * The patch version of this header: a patch release only fixes.\n \
         */\n#define ASYNCIFY_VERSION_PATCH {}\n\n\
         /**\n * This header's version as `\"MAJOR.MINOR.PATCH\"`; asyncify_version()\n \
         * gives the version of the library loaded at run time.\n \
         */\n#define ASYNCIFY_VERSION_STRING \"{version}\"\n",
        part("CARGO_PKG_VERSION_MAJOR"),
        part("CARGO_PKG_VERSION_MINOR"),
        part("CARGO_PKG_VERSION_PATCH"),
    ));
    // The header is the C ABI only: the status codes and the ffi layer, never
    // the engine's own public items.
    let src = Path::new(&dir).join("src");
    // (cbindgen follows the `mod` items of ffi/mod.rs to the other files.)
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(src.join("status.rs"))
        .with_src(src.join("ffi").join("mod.rs"))
        .generate()
        .expect("cbindgen can read src/ffi");
    let mut raw = Vec::new();
    bindings.write(&mut raw);
    let header = tidy_defines(&String::from_utf8(raw).expect("UTF-8 header"));
    let header = statuses_first(&header);
    let header = header.into_bytes();

    let path = Path::new(&dir).join("include").join("asyncify.h");
    if fs::read(&path).ok().as_deref() != Some(&header[..]) {
        fs::create_dir_all(path.parent().expect("has a parent")).expect("can create include/");
        fs::write(&path, &header).expect("can write include/asyncify.h");
    }
}

/// `#define X -1` misparses in `a-X`: the header says `#define X (-1)`. Flags
/// are `uint32_t`, so their values are unsigned literals (`~FLAG` stays
/// unsigned): `#define ASYNCIFY_SUBMIT_DETACHED 1u`.
fn tidy_defines(header: &str) -> String {
    const FLAG_PREFIXES: [&str; 4] = [
        "ASYNCIFY_SUBMIT_",
        "ASYNCIFY_KEY_",
        "ASYNCIFY_POOL_",
        "ASYNCIFY_LATENCY_",
    ];
    let digits = |v: &str| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit());
    header
        .lines()
        .map(|line| {
            match line
                .strip_prefix("#define ")
                .and_then(|r| r.split_once(' '))
            {
                Some((name, value)) if value.strip_prefix('-').is_some_and(digits) => {
                    format!("#define {name} ({value})\n")
                }
                Some((name, value))
                    if FLAG_PREFIXES.iter().any(|p| name.starts_with(p)) && digits(value) =>
                {
                    format!("#define {name} {value}u\n")
                }
                _ => format!("{line}\n"),
            }
        })
        .collect()
}

/// cbindgen writes constants of a typedef'd type after all the types; the
/// status codes (with their `asyncify_status` typedef) are moved up to just
/// after the version macros, so that a reader meets the values every function
/// returns before the flags, types and functions.
fn statuses_first(header: &str) -> String {
    let lines: Vec<&str> = header.lines().collect();
    let find = |prefix: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("the generated header has no line `{prefix}`"))
    };
    // The lines start..end of the blank-line-separated paragraph holding `at`.
    let paragraph = |at: usize| {
        let start = lines[..at]
            .iter()
            .rposition(|l| l.is_empty())
            .map_or(0, |i| i + 1);
        let end = lines[at..]
            .iter()
            .position(|l| l.is_empty())
            .map_or(lines.len(), |i| at + i);
        (start, end)
    };
    let after = paragraph(find("#define ASYNCIFY_VERSION_STRING ")).1;
    let typedef = paragraph(find("typedef int32_t asyncify_status;"));
    let (first, mut last) = paragraph(find("#define ASYNCIFY_OK "));
    // Every following paragraph that ends in a #define is a status too.
    while last + 1 < lines.len() {
        let (_, end) = paragraph(last + 1);
        if end == last + 1 || !lines[end - 1].starts_with("#define ") {
            break;
        }
        last = end;
    }
    assert!(
        after < typedef.0 && typedef.1 < first,
        "unexpected header layout"
    );
    let mut out: Vec<&str> = Vec::with_capacity(lines.len());
    out.extend(&lines[..=after]);
    out.extend(&lines[typedef.0..typedef.1]);
    out.push("");
    out.extend(&lines[first..last]);
    out.push("");
    // The rest, without the moved paragraphs and the blank line after each.
    out.extend(&lines[after + 1..typedef.0]);
    out.extend(&lines[(typedef.1 + 1).min(first)..first]);
    out.extend(&lines[(last + 1).min(lines.len())..]);
    // The extra blank line after the version macros is now between paragraphs.
    out.dedup_by(|a, b| a.is_empty() && b.is_empty());
    let mut text = out.join("\n");
    text.push('\n');
    text
}
