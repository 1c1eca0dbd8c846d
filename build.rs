//! Generates include/asyncify.h with cbindgen, and writes it only when its
//! content changed, so an unchanged header keeps its timestamp.

use std::env;
use std::fs;
use std::path::Path;

fn main() {
    let dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let version = env::var("CARGO_PKG_VERSION").expect("cargo sets CARGO_PKG_VERSION");
    let part = |name: &str| env::var(name).expect("cargo sets the version parts");
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");

    let mut config = cbindgen::Config::from_file(Path::new(&dir).join("cbindgen.toml"))
        .expect("cbindgen.toml is valid");
    config.after_includes = Some(format!(
        "\n#define ASYNCIFY_VERSION_MAJOR {}\n#define ASYNCIFY_VERSION_MINOR {}\n\
         #define ASYNCIFY_VERSION_PATCH {}\n#define ASYNCIFY_VERSION_STRING \"{version}\"\n",
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
    let header = parenthesize_negative_defines(&String::from_utf8(raw).expect("UTF-8 header"));
    let header = header.into_bytes();

    let path = Path::new(&dir).join("include").join("asyncify.h");
    if fs::read(&path).ok().as_deref() != Some(&header[..]) {
        fs::create_dir_all(path.parent().expect("has a parent")).expect("can create include/");
        fs::write(&path, &header).expect("can write include/asyncify.h");
    }
}

/// `#define X -1` misparses in `a-X`; the header says `#define X (-1)`.
fn parenthesize_negative_defines(header: &str) -> String {
    header
        .lines()
        .map(|line| {
            match line
                .strip_prefix("#define ")
                .and_then(|r| r.split_once(" -"))
            {
                Some((name, value)) if value.chars().all(|c| c.is_ascii_digit()) => {
                    format!("#define {name} (-{value})\n")
                }
                _ => format!("{line}\n"),
            }
        })
        .collect()
}
