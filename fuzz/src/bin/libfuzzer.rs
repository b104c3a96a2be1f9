//! The fuzz targets under libFuzzer (coverage-guided): `FUZZ_TARGET=<name> fuzz-libfuzzer
//! [libFuzzer flags] CORPUS...`. Built by `scripts/fuzz.sh` with the sanitizer-coverage flags
//! (stable rustc takes them: `-Cpasses=sancov-module` and `-Cllvm-args=...`).
//!
//! With `FUZZ_DESCRIBE=FILE` it writes the target's dictionary to FILE in libFuzzer's format,
//! prints `max_len N` and exits, so that the script passes libFuzzer the stable engine's words
//! and length limit.

#![no_main]

use std::sync::OnceLock;

fn target() -> &'static fuzz::Target {
    static T: OnceLock<&'static fuzz::Target> = OnceLock::new();
    T.get_or_init(|| {
        let name = std::env::var("FUZZ_TARGET").unwrap_or_default();
        fuzz::target(&name).unwrap_or_else(|| {
            let names: Vec<&str> = fuzz::TARGETS.iter().map(|t| t.name).collect();
            eprintln!("FUZZ_TARGET must name a target\ntargets: {}", names.join(" "));
            std::process::exit(2)
        })
    })
}

/// Before the first input: an unknown `FUZZ_TARGET` lists the targets and exits here, not
/// inside an input (where libFuzzer would save the exit as a crash).
fn init() {
    let t = target();
    let Some(path) = std::env::var_os("FUZZ_DESCRIBE") else { return };
    let mut out = String::new();
    for word in t.dict.iter().chain(fuzz::COMMON_DICT) {
        out.push('"');
        for b in word.bytes() {
            match b {
                b'"' | b'\\' => {
                    out.push('\\');
                    out.push(b as char);
                }
                0x20..=0x7e => out.push(b as char),
                _ => out.push_str(&format!("\\x{b:02X}")),
            }
        }
        out.push_str("\"\n");
    }
    if let Err(e) = std::fs::write(&path, out) {
        eprintln!("writing {}: {e}", path.to_string_lossy());
        std::process::exit(1);
    }
    println!("max_len {}", t.max_len);
    std::process::exit(0);
}

libfuzzer_sys::fuzz_target!(init: init(), |data: &[u8]| {
    let t = target();
    if data.len() <= t.max_len {
        (t.run)(data);
    }
    let _ = fuzz::take_features();
});
