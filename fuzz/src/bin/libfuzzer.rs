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

/// The thread inputs run on: a tokio worker's 2 MiB stack, as in the stable engine (libFuzzer's
/// own thread has 8 MiB, where a recursion that overflows in the agent would pass). A panic
/// there aborts the process (libfuzzer-sys's panic hook), and libFuzzer saves the input.
struct Worker {
    inputs: std::sync::mpsc::SyncSender<Vec<u8>>,
    done: std::sync::mpsc::Receiver<()>,
}

fn worker() -> &'static std::sync::Mutex<Worker> {
    static W: OnceLock<std::sync::Mutex<Worker>> = OnceLock::new();
    W.get_or_init(|| {
        let (inputs, input_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(0);
        let (done_tx, done) = std::sync::mpsc::sync_channel(0);
        let t = target();
        std::thread::Builder::new()
            .name("fuzz-input".into())
            .stack_size(2 << 20)
            .spawn(move || {
                for data in input_rx {
                    (t.run)(&data);
                    let _ = fuzz::take_features();
                    if done_tx.send(()).is_err() {
                        return;
                    }
                }
            })
            .unwrap_or_else(|e| panic!("starting the input thread: {e}"));
        std::sync::Mutex::new(Worker { inputs, done })
    })
}

libfuzzer_sys::fuzz_target!(init: init(), |data: &[u8]| {
    if data.len() <= target().max_len {
        let w = worker().lock().unwrap_or_else(|p| p.into_inner());
        if w.inputs.send(data.to_vec()).is_err() || w.done.recv().is_err() {
            panic!("the input thread is gone");
        }
    }
});
