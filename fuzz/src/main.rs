//! The stable engine: `fuzz [--seconds N] [--seed S] [TARGET...]` runs each target for N
//! seconds in a child process of its own, mutating its seed corpus (`fuzz/corpus/<target>/`)
//! and keeping inputs that do something new (see `fuzz::feature`). A panic is caught and its
//! input saved under `fuzz/crashes/<target>/`; an abort (a stack overflow), a kill or an input
//! that runs longer than the timeout ends the child, and the parent saves the input the child
//! was running, which it wrote to shared memory first, then starts a new child for the rest of
//! the time. Prints executions, executions per second and crashes per target; exits 1 if any
//! target crashed.
//!
//! `fuzz --repro TARGET FILE...` runs saved inputs once each, in this process (on the same
//! stack size as the fuzzing loop).

use fuzz::mutate::{Mutator, Rng};
use fuzz::Target;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The longest input the shared memory holds (targets stay far below it).
const MAX_INPUT: usize = 1 << 16;
/// The stack a target runs on: a tokio worker's, where the agent answers requests.
const STACK: usize = 2 << 20;
/// At most this many inputs are kept in memory per target.
const MAX_CORPUS: usize = 20_000;

/// What a child shares with its parent: counters, and the input it is running.
#[repr(C)]
struct Shared {
    execs: AtomicU64,
    crashes: AtomicU64,
    /// When the current input started (ms since the epoch), 0 between inputs.
    busy_since: AtomicU64,
    len: AtomicU64,
    corpus: AtomicU64,
    data: std::cell::UnsafeCell<[u8; MAX_INPUT]>,
}

// SAFETY: the counters are atomics; `data` is written only by the child's fuzzing thread, and
// read only by the parent after that child has exited.
unsafe impl Sync for Shared {}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A file of `Shared`'s size mapped into memory, shared with the processes that map it too.
fn map_shared(path: &Path) -> std::io::Result<&'static Shared> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
    file.set_len(std::mem::size_of::<Shared>() as u64)?;
    // SAFETY: a fresh shared mapping of a file exactly `Shared`'s size; `Shared` is plain
    // integers and bytes, for which any content is valid, and atomics make concurrent access
    // from the two processes well defined. The mapping is never unmapped (it lives as long as
    // the process).
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            std::mem::size_of::<Shared>(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(&*(p as *const Shared))
    }
}

struct Args {
    seconds: u64,
    seed: u64,
    timeout: u64,
    corpus: PathBuf,
    crashes: PathBuf,
    work: Option<PathBuf>,
    targets: Vec<&'static Target>,
    child: Option<PathBuf>,
    /// A child's share of the time, in milliseconds.
    millis: u64,
    repro: Vec<PathBuf>,
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: fuzz [--seconds N] [--seed S] [--timeout SECS] [--corpus DIR] [--crashes DIR] [--work DIR] [TARGET...]\n\
         \x20      fuzz --repro TARGET FILE...\n       fuzz --list\ntargets: {}",
        fuzz::TARGETS.iter().map(|t| t.name).collect::<Vec<_>>().join(" ")
    );
    ExitCode::from(2)
}

fn parse_args() -> Result<Args, String> {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut a = Args {
        seconds: 10,
        seed: now_ms() ^ std::process::id() as u64,
        timeout: 10,
        corpus: here.join("corpus"),
        crashes: here.join("crashes"),
        work: None,
        targets: vec![],
        child: None,
        millis: 0,
        repro: vec![],
    };
    let mut it = std::env::args().skip(1);
    let mut repro = false;
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--seconds" => a.seconds = value("--seconds")?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--seed" => a.seed = value("--seed")?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--timeout" => a.timeout = value("--timeout")?.parse().map_err(|e| format!("--timeout: {e}"))?,
            "--corpus" => a.corpus = value("--corpus")?.into(),
            "--crashes" => a.crashes = value("--crashes")?.into(),
            "--work" => a.work = Some(value("--work")?.into()),
            "--child" => a.child = Some(value("--child")?.into()),
            "--millis" => a.millis = value("--millis")?.parse().map_err(|e| format!("--millis: {e}"))?,
            "--repro" => repro = true,
            "--list" => {
                for t in fuzz::TARGETS {
                    println!("{}", t.name);
                }
                std::process::exit(0);
            }
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            name if repro && !a.targets.is_empty() => a.repro.push(name.into()),
            name => a.targets.push(fuzz::target(name).ok_or(format!("no target {name}"))?),
        }
    }
    if a.targets.is_empty() && !repro {
        a.targets = fuzz::TARGETS.iter().collect();
    }
    if repro && a.targets.len() != 1 {
        return Err("--repro takes one target, then files".into());
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fuzz: {e}");
            return usage();
        }
    };
    if !args.repro.is_empty() {
        // On the stack the fuzzing loop gives a target, so that a stack overflow reproduces.
        let (t, files) = (args.targets[0], args.repro.clone());
        return std::thread::Builder::new()
            .stack_size(STACK)
            .spawn(move || repro(t, &files))
            .map_or(ExitCode::FAILURE, |h| h.join().unwrap_or(ExitCode::FAILURE));
    }
    if let Some(shm) = &args.child {
        return child(&args, args.targets[0], shm);
    }
    parent(&args)
}

/// Runs saved inputs once each; a panic shows its message and backtrace as usual.
fn repro(t: &Target, files: &[PathBuf]) -> ExitCode {
    for f in files {
        let data = match std::fs::read(f) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("{}: {e}", f.display());
                return ExitCode::FAILURE;
            }
        };
        eprintln!("running {} ({} bytes)", f.display(), data.len());
        (t.run)(&data);
    }
    eprintln!("no panic");
    ExitCode::SUCCESS
}

struct Outcome {
    execs: u64,
    crashes: u64,
    corpus: u64,
    secs: f64,
}

fn parent(args: &Args) -> ExitCode {
    println!("fuzz: stable engine, seed {}, {} s per target", args.seed, args.seconds);
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("fuzz: own path: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut rows = Vec::new();
    for (i, t) in args.targets.iter().enumerate() {
        let seed = args.seed.wrapping_add(i as u64);
        match run_target(args, &exe, t, seed) {
            Ok(o) => rows.push((t.name, o)),
            Err(e) => {
                eprintln!("fuzz: {}: {e}", t.name);
                return ExitCode::FAILURE;
            }
        }
    }
    println!("\n{:<16} {:<8} {:>10} {:>9} {:>7} {:>7}", "target", "engine", "execs", "exec/s", "corpus", "crashes");
    let mut crashed = false;
    for (name, o) in &rows {
        crashed |= o.crashes > 0;
        let rate = o.execs as f64 / o.secs.max(0.001);
        println!("{name:<16} {:<8} {:>10} {:>9.0} {:>7} {:>7}", "stable", o.execs, rate, o.corpus, o.crashes);
    }
    if crashed {
        println!("crashing inputs are under {}", args.crashes.display());
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Runs one target for the whole time, restarting its child after a crash that killed it.
fn run_target(args: &Args, exe: &Path, t: &Target, seed: u64) -> Result<Outcome, String> {
    let shm_path = std::env::temp_dir().join(format!("fuzz-{}-{}.shm", std::process::id(), t.name));
    let _ = std::fs::remove_file(&shm_path);
    let shared = map_shared(&shm_path).map_err(|e| format!("shared memory {}: {e}", shm_path.display()))?;
    let start = Instant::now();
    let end = start + Duration::from_secs(args.seconds);
    let mut lost = 0u64;
    let mut restarts = 0u64;
    while Instant::now() < end {
        let left = end.saturating_duration_since(Instant::now()).as_millis();
        let mut cmd = Command::new(exe);
        cmd.arg("--child")
            .arg(&shm_path)
            .args(["--millis", &left.to_string()])
            .args(["--seed", &seed.wrapping_add(restarts.wrapping_mul(0x9e37_79b9)).to_string()])
            .arg("--corpus")
            .arg(&args.corpus)
            .arg("--crashes")
            .arg(&args.crashes)
            .arg(t.name);
        if let Some(w) = &args.work {
            cmd.arg("--work").arg(w);
        }
        let mut child = cmd.spawn().map_err(|e| format!("starting the child: {e}"))?;
        let status = loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                break Some(status);
            }
            let since = shared.busy_since.load(Ordering::Acquire);
            if since != 0 && now_ms().saturating_sub(since) > args.timeout * 1000 {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            if Instant::now() > end + Duration::from_secs(args.timeout + 30) {
                // The child should have stopped by itself long ago (it watches the clock
                // between inputs): treat it as hung.
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        match status {
            Some(s) if s.success() => break,
            outcome => {
                // The child died in an input or was killed for it: save that input.
                let len = (shared.len.load(Ordering::Acquire) as usize).min(MAX_INPUT);
                // SAFETY: the child that wrote it has exited.
                let input = unsafe { (&*shared.data.get())[..len].to_vec() };
                let kind = if outcome.is_none() { "timeout" } else { "crash" };
                let path = save(&args.crashes.join(t.name), kind, &input);
                eprintln!(
                    "fuzz: {}: {} ({}) on a {}-byte input, saved as {}",
                    t.name,
                    kind,
                    outcome.map_or(format!("over {} s", args.timeout), |s| s.to_string()),
                    len,
                    path.display()
                );
                lost += 1;
                restarts += 1;
                shared.busy_since.store(0, Ordering::Release);
            }
        }
    }
    let _ = std::fs::remove_file(&shm_path);
    Ok(Outcome {
        execs: shared.execs.load(Ordering::Acquire),
        crashes: shared.crashes.load(Ordering::Acquire) + lost,
        corpus: shared.corpus.load(Ordering::Acquire),
        secs: start.elapsed().as_secs_f64(),
    })
}

/// Saves an input as `<kind>-<hash>` in `dir`.
fn save(dir: &Path, kind: &str, input: &[u8]) -> PathBuf {
    let path = dir.join(format!("{kind}-{:016x}", fuzz::hash(input)));
    let _ = std::fs::create_dir_all(dir);
    if let Err(e) = std::fs::write(&path, input) {
        eprintln!("fuzz: saving {}: {e}", path.display());
    }
    path
}

/// Every file of `dir`, in name order (so a run is repeatable).
fn read_dir(dir: &Path) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect(),
        Err(_) => return vec![],
    };
    files.sort();
    files.into_iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

/// The last panic's message and place, from the hook.
static LAST_PANIC: Mutex<Option<(String, String)>> = Mutex::new(None);
/// Panics on any thread (a background task of the agent panics on a worker thread).
static PANICS: AtomicU64 = AtomicU64::new(0);

fn child(args: &Args, t: &'static Target, shm: &Path) -> ExitCode {
    let shared = match map_shared(shm) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fuzz: child: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Nothing an input names is reachable: a network namespace of its own with no interfaces
    // up (where the kernel allows it; the HTTP target also keeps network checks from running).
    // SAFETY: unshare changes only this process's namespace membership; it has no threads yet.
    unsafe {
        libc::unshare(libc::CLONE_NEWNET);
    }
    std::panic::set_hook(Box::new(|info| {
        let place = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        let msg = if let Some(s) = info.payload().downcast_ref::<&str>() {
            s.to_string()
        } else if let Some(s) = info.payload().downcast_ref::<String>() {
            s.clone()
        } else {
            "(no message)".into()
        };
        PANICS.fetch_add(1, Ordering::AcqRel);
        *LAST_PANIC.lock().unwrap_or_else(|p| p.into_inner()) = Some((msg, place));
    }));
    let millis = args.millis;
    let seed = args.seed;
    let corpus_dir = args.corpus.join(t.name);
    let crash_dir = args.crashes.join(t.name);
    let work = args.work.as_ref().map(|w| w.join(t.name));
    let runner = std::thread::Builder::new().name(format!("fuzz-{}", t.name)).stack_size(STACK).spawn(move || {
        fuzz_loop(t, shared, Duration::from_millis(millis), seed, &corpus_dir, &crash_dir, work.as_deref())
    });
    match runner.map(|h| h.join()) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

fn fuzz_loop(
    t: &Target,
    shared: &Shared,
    time: Duration,
    seed: u64,
    corpus_dir: &Path,
    crash_dir: &Path,
    work: Option<&Path>,
) {
    let end = Instant::now() + time;
    let mut corpus = read_dir(corpus_dir);
    if let Some(w) = work {
        corpus.extend(read_dir(w));
    }
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    let dict: Vec<&[u8]> = t.dict.iter().chain(fuzz::COMMON_DICT).map(|w| w.as_bytes()).collect();
    let mutator = Mutator { dict, max_len: t.max_len };
    let mut rng = Rng::new(seed);
    let mut seen: HashSet<u64> = HashSet::new();
    let mut places: HashSet<String> = HashSet::new();
    // Each seed once first, then mutations of what the corpus holds.
    let mut queue: Vec<Vec<u8>> = corpus.clone();
    queue.reverse();
    loop {
        let (input, seed_input) = match queue.pop() {
            Some(i) => (i, true),
            None => {
                if Instant::now() >= end {
                    break;
                }
                let base = &corpus[rng.below(corpus.len())];
                (mutator.mutate(base, &corpus, &mut rng), false)
            }
        };
        let len = input.len().min(MAX_INPUT);
        // SAFETY: only this thread writes `data`, and the parent reads it only after this
        // process has exited.
        unsafe {
            std::ptr::copy_nonoverlapping(input.as_ptr(), shared.data.get() as *mut u8, len);
        }
        shared.len.store(len as u64, Ordering::Release);
        shared.busy_since.store(now_ms(), Ordering::Release);
        let panics_before = PANICS.load(Ordering::Acquire);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (t.run)(&input)));
        shared.busy_since.store(0, Ordering::Release);
        shared.execs.fetch_add(1, Ordering::AcqRel);
        let features = fuzz::take_features();
        if result.is_err() || PANICS.load(Ordering::Acquire) != panics_before {
            shared.crashes.fetch_add(1, Ordering::AcqRel);
            let (msg, place) = LAST_PANIC.lock().unwrap_or_else(|p| p.into_inner()).take().unwrap_or_default();
            // One file per place that panicked and kind of message: the same bug found again
            // is counted, not saved.
            if places.insert(format!("{place} {:x}", fuzz::error_kind(&msg))) {
                let path = save(crash_dir, "crash", &input);
                eprintln!("fuzz: {}: panic at {place}: {msg}\n      input saved as {}", t.name, path.display());
            }
            continue;
        }
        let mut new = false;
        for f in features {
            if seen.insert(f) {
                new = true;
                if std::env::var_os("FUZZ_DEBUG").is_some() {
                    eprintln!("new feature {f:016x}: {:?}", String::from_utf8_lossy(&input[..input.len().min(120)]));
                }
            }
        }
        if new && !seed_input && corpus.len() < MAX_CORPUS {
            if let Some(w) = work {
                save(w, "input", &input);
            }
            corpus.push(input);
            shared.corpus.store(corpus.len() as u64, Ordering::Release);
        }
    }
    shared.corpus.store(corpus.len() as u64, Ordering::Release);
}
