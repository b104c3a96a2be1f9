//! A Jepsen-style test of the agent's servers (issue 13), run by `scripts/chaos.sh`.
//!
//! `chaos run --agent BIN --workdir DIR [--secs 150] [--nemesis mixed|kill|pause|partition|none]
//!            [--servers 3] [--net 127.0.135] [--multiplier 1] [--clients 12] [--keys 4]
//!            [--locks 3] [--history FILE]`
//!   starts `--servers` servers on `NET.1`, `NET.2`, ... (each as its own group, so iptables can
//!   cut it off), runs clients doing default and `?consistent` reads, writes and CAS on a few
//!   keys against random servers, session locks (`?acquire`/`?release`) and unique-key writes,
//!   while the nemesis kills (-9) and restarts, pauses (SIGSTOP/SIGCONT) and partitions servers.
//!   Then it heals everything, kills every server with -9, restarts them all, reads everything
//!   back, and checks the history (see `e2e::chaos::check`). Exits 1 on a violation.
//! `chaos check FILE`
//!   checks a recorded history again.
//! `chaos failover --agent BIN --workdir DIR [--trials 10] [--multiplier 1] [--net 127.0.136]`
//!   kills the leader of three servers with -9, times the first acknowledged write through the
//!   two others, restarts it; prints p50 and max over the trials.
//!
//! Needs root and iptables for partitions. Addresses `--net`.1 to .N, ports as agents use them.

use anyhow::{bail, Context};
use api::client::Method;
use bytes::Bytes;
use e2e::chaos::check;
use e2e::chaos::history::{Fault, FaultKind, Kind, Line, LockOp, Op, Res};
use rand::Rng;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned()).unwrap_or_else(|| default.to_string())
}

fn num<T: std::str::FromStr>(args: &[String], name: &str, default: &str) -> anyhow::Result<T> {
    let v = arg(args, name, default);
    v.parse().map_err(|_| anyhow::anyhow!("{name}: not a number: {v:?}"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("run") => run(&args[1..]).await,
        Some("check") => {
            let file = args.get(1).context("chaos check FILE")?;
            let lines = read_history(Path::new(file))?;
            let report = analyse(&lines);
            println!("{}", report.text);
            if !report.ok {
                std::process::exit(1);
            }
            Ok(())
        }
        Some("failover") => failover(&args[1..]).await,
        _ => bail!("usage: chaos run|check|failover ... (see the source's header)"),
    }
}

// ---------------------------------------------------------------------------------------------
// The cluster: server processes, signals, the firewall.

struct Server {
    ip: String,
    gid: u32,
    dir: PathBuf,
    child: Option<Child>,
    client: api::Client,
}

struct Cluster {
    agent: PathBuf,
    servers: Vec<Server>,
    chain: String,
    config: PathBuf,
    pids: PathBuf,
}

fn iptables(args: &[&str]) -> bool {
    let s = Command::new("iptables").arg("-w").args(args).stderr(Stdio::null()).status();
    s.is_ok_and(|s| s.success())
}

impl Cluster {
    fn new(agent: &Path, workdir: &Path, net: &str, n: u32, multiplier: u64) -> anyhow::Result<Cluster> {
        std::fs::create_dir_all(workdir)?;
        let config = workdir.join("agent.json");
        std::fs::write(
            &config,
            format!(
                r#"{{"performance": {{"raft_multiplier": {multiplier}}},
                     "gossip_lan": {{"probe_interval": "300ms", "probe_timeout": "200ms", "gossip_interval": "50ms",
                                    "suspicion_mult": 4}}}}"#
            ),
        )?;
        let third: u32 = net.split('.').nth(2).and_then(|o| o.parse().ok()).context("--net like 127.0.135")?;
        let servers = (1..=n)
            .map(|i| {
                let ip = format!("{net}.{i}");
                let client = api::Client::new(&format!("{ip}:8500")).expect("client");
                Server { gid: 300_000 + third * 256 + i, dir: workdir.join(format!("s{i}")), ip, child: None, client }
            })
            .collect();
        let chain = format!("chaos-{third}");
        while iptables(&["-D", "OUTPUT", "-j", &chain]) {}
        let _ = iptables(&["-F", &chain]);
        let _ = iptables(&["-X", &chain]);
        if !(iptables(&["-N", &chain]) && iptables(&["-I", "OUTPUT", "-j", &chain])) {
            bail!("cannot create the iptables chain {chain}: partitions need root and iptables");
        }
        Ok(Cluster { agent: agent.to_path_buf(), servers, chain, config, pids: workdir.join("pids") })
    }

    fn start(&mut self, i: usize) -> anyhow::Result<()> {
        use std::os::unix::process::CommandExt;
        let n = self.servers.len();
        let s = &mut self.servers[i];
        std::fs::create_dir_all(&s.dir)?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(s.dir.join("agent.log"))?;
        let mut cmd = Command::new(&self.agent);
        cmd.gid(s.gid)
            .args(["agent", "-server", &format!("-bootstrap-expect={n}"), &format!("-node=s{}", i + 1)])
            .arg(format!("-bind={}", s.ip))
            .arg(format!("-client={}", s.ip))
            .arg(format!("-data-dir={}", s.dir.display()))
            .arg(format!("-config-file={}", self.config.display()))
            .args(["-dns-port=-1", "-log-level=info", "-retry-interval=200ms"]);
        let ips: Vec<String> = self.servers.iter().map(|s| s.ip.clone()).collect();
        for ip in ips.iter().filter(|ip| **ip != self.servers[i].ip) {
            cmd.arg(format!("-retry-join={ip}"));
        }
        let child = cmd.stdout(log.try_clone()?).stderr(log).stdin(Stdio::null()).spawn()?;
        self.servers[i].child = Some(child);
        self.write_pids();
        Ok(())
    }

    /// The agents' pids, for `scripts/chaos.sh` to stop them if this process is interrupted.
    fn write_pids(&self) {
        let pids: Vec<String> =
            self.servers.iter().filter_map(|s| s.child.as_ref()).map(|c| c.id().to_string()).collect();
        let _ = std::fs::write(&self.pids, pids.join("\n"));
    }

    fn signal(&self, i: usize, sig: i32) {
        if let Some(c) = &self.servers[i].child {
            // SAFETY: kill(2) on the pid of a child this process started and has not reaped.
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.servers[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.write_pids();
    }

    /// Cuts `side` off from every other server, both ways.
    fn isolate(&self, side: &[usize]) {
        for a in side {
            for b in (0..self.servers.len()).filter(|b| !side.contains(b)) {
                for (from, to) in [(*a, b), (b, *a)] {
                    let gid = self.servers[from].gid.to_string();
                    let ip = &self.servers[to].ip;
                    iptables(&["-A", &self.chain, "-m", "owner", "--gid-owner", &gid, "-d", ip, "-j", "DROP"]);
                }
            }
        }
    }

    fn heal(&self) {
        iptables(&["-F", &self.chain]);
    }

    async fn leader_of(&self, i: usize) -> Option<String> {
        let r = self.servers[i].client.request(Method::GET, "/v1/status/leader", None, Some(Duration::from_secs(1)));
        let r = r.await.ok()?;
        serde_json::from_slice::<String>(&r.body).ok().filter(|l| !l.is_empty())
    }

    /// The index of the server all the given ones agree leads, once they do.
    async fn agreed_leader(&self, among: &[usize]) -> Option<usize> {
        let mut seen = None;
        for i in among {
            let l = self.leader_of(*i).await?;
            if seen.as_ref().is_some_and(|s| *s != l) {
                return None;
            }
            seen = Some(l);
        }
        let ip = seen?.split(':').next()?.to_string();
        self.servers.iter().position(|s| s.ip == ip)
    }

    /// Waits until all servers agree on a leader and its configuration has every server as a
    /// voter.
    async fn wait_healthy(&self, limit: Duration) -> anyhow::Result<usize> {
        let all: Vec<usize> = (0..self.servers.len()).collect();
        let deadline = Instant::now() + limit;
        loop {
            if let Some(l) = self.agreed_leader(&all).await {
                let r = self.servers[l]
                    .client
                    .request(Method::GET, "/v1/operator/raft/configuration?stale", None, Some(Duration::from_secs(1)))
                    .await;
                let voters = r
                    .ok()
                    .and_then(|r| serde_json::from_slice::<serde_json::Value>(&r.body).ok())
                    .and_then(|v| v["Servers"].as_array().map(|s| s.iter().filter(|s| s["Voter"] == true).count()));
                if voters == Some(self.servers.len()) {
                    return Ok(l);
                }
            }
            if Instant::now() > deadline {
                bail!("the cluster did not become healthy within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            self.signal(i, libc::SIGCONT);
            self.kill(i);
        }
        while iptables(&["-D", "OUTPUT", "-j", &self.chain]) {}
        let _ = iptables(&["-F", &self.chain]);
        let _ = iptables(&["-X", &self.chain]);
        let _ = std::fs::remove_file(&self.pids);
    }
}

// ---------------------------------------------------------------------------------------------
// The run.

struct Recorder {
    start: Instant,
    lines: Mutex<Vec<Line>>,
}

impl Recorder {
    fn now(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }
    fn push(&self, l: Line) {
        self.lines.lock().expect("recorder").push(l);
    }
}

struct Settings {
    secs: u64,
    nemesis: String,
    clients: u32,
    keys: u32,
    locks: u32,
    op_timeout: Duration,
    lease: Duration,
}

async fn run(args: &[String]) -> anyhow::Result<()> {
    let agent = PathBuf::from(arg(args, "--agent", "target/debug/agent"));
    let workdir = PathBuf::from(arg(args, "--workdir", "/tmp/chaos"));
    let n: u32 = num(args, "--servers", "3")?;
    let multiplier: u64 = num(args, "--multiplier", "1")?;
    let settings = Settings {
        secs: num(args, "--secs", "150")?,
        nemesis: arg(args, "--nemesis", "mixed"),
        clients: num(args, "--clients", "12")?,
        keys: num(args, "--keys", "4")?,
        locks: num(args, "--locks", "3")?,
        op_timeout: Duration::from_millis((1500 * multiplier).max(2000)),
        lease: Duration::from_millis(500 * multiplier),
    };
    if !["mixed", "kill", "pause", "partition", "none"].contains(&settings.nemesis.as_str()) {
        bail!("--nemesis: one of mixed, kill, pause, partition, none");
    }
    let history = PathBuf::from(arg(args, "--history", &workdir.join("history.jsonl").display().to_string()));
    let mut cluster = Cluster::new(&agent, &workdir, &arg(args, "--net", "127.0.135"), n, multiplier)?;
    for i in 0..n as usize {
        cluster.start(i)?;
    }
    cluster.wait_healthy(Duration::from_secs(60)).await?;
    let rec = Arc::new(Recorder { start: Instant::now(), lines: Mutex::new(Vec::new()) });
    rec.push(Line::Meta {
        servers: n,
        lease_us: settings.lease.as_micros() as u64,
        nemesis: settings.nemesis.clone(),
        secs: settings.secs,
    });
    eprintln!(
        "chaos: {n} servers, nemesis {}, {} s, raft_multiplier {multiplier}, {} clients on {} keys, {} lock clients",
        settings.nemesis, settings.secs, settings.clients, settings.keys, settings.locks
    );
    let clients: Arc<Vec<api::Client>> = Arc::new(cluster.servers.iter().map(|s| s.client.clone()).collect());
    let deadline = Instant::now() + Duration::from_secs(settings.secs);
    CLIENTS.store(settings.clients, std::sync::atomic::Ordering::Relaxed);
    let mut tasks = Vec::new();
    for p in 0..settings.clients {
        tasks.push(tokio::spawn(register_client(
            p,
            clients.clone(),
            rec.clone(),
            deadline,
            settings.keys,
            settings.op_timeout,
        )));
    }
    for p in 0..settings.locks {
        tasks.push(tokio::spawn(lock_client(p, clients.clone(), rec.clone(), deadline, settings.op_timeout)));
    }
    let cluster = nemesis(cluster, &settings, rec.clone(), deadline).await?;
    for t in tasks {
        let _ = t.await;
    }
    let mut cluster = cluster;
    // Heal everything, then the lost-write check: every server killed at once and restarted.
    cluster.heal();
    cluster.wait_healthy(Duration::from_secs(120)).await.context("after healing")?;
    eprintln!("chaos: healed; killing every server with -9 and restarting them");
    for i in 0..n as usize {
        cluster.kill(i);
    }
    for i in 0..n as usize {
        cluster.start(i)?;
    }
    cluster.wait_healthy(Duration::from_secs(120)).await.context("after the full restart")?;
    final_reads(&cluster, &rec, settings.keys).await?;
    let lines = std::mem::take(&mut *rec.lines.lock().expect("recorder"));
    drop(cluster);
    let mut f = std::io::BufWriter::new(std::fs::File::create(&history)?);
    for l in &lines {
        serde_json::to_writer(&mut f, l)?;
        f.write_all(b"\n")?;
    }
    f.flush()?;
    let report = analyse(&lines);
    println!("{}", report.text);
    println!("history: {}", history.display());
    if !report.ok {
        std::process::exit(1);
    }
    Ok(())
}

fn b64(s: &str) -> Option<String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
    String::from_utf8(bytes).ok()
}

/// How a failed request is counted: never sent (a refused connection, or the agent's
/// "No cluster leader", which it answers only for writes it never proposed) or unknown.
fn failure(e: &api::client::Error) -> Res {
    match e {
        api::client::Error::Transport { source, .. } if source.is_connect() => Res::Fail,
        _ => Res::Info,
    }
}

/// A read: (value, ModifyIndex), absent as (None, 0); `None` if there was no answer.
async fn read(c: &api::Client, key: &str, consistent: bool, timeout: Duration) -> Option<(Option<String>, u64)> {
    let q = if consistent { "?consistent" } else { "" };
    let r = c.request(Method::GET, &format!("/v1/kv/{key}{q}"), None, Some(timeout)).await.ok()?;
    match r.status {
        404 => Some((None, 0)),
        200 => {
            let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
            let e = v.as_array()?.first()?;
            let value = e["Value"].as_str().and_then(b64);
            Some((value, e["ModifyIndex"].as_u64()?))
        }
        _ => None,
    }
}

/// A PUT answered true or false, or how it failed.
async fn put(c: &api::Client, path: &str, body: &str, timeout: Duration) -> Result<bool, Res> {
    match c.request(Method::PUT, path, Some(Bytes::from(body.to_string())), Some(timeout)).await {
        Ok(r) if r.status == 200 => match r.body.as_ref() {
            b"true" => Ok(true),
            b"false" => Ok(false),
            _ => Err(Res::Info),
        },
        Ok(r) if r.status == 500 && String::from_utf8_lossy(&r.body).contains("No cluster leader") => Err(Res::Fail),
        Ok(_) => Err(Res::Info),
        Err(e) => Err(failure(&e)),
    }
}

/// A client's pause between two steps.
const THINK_MS: std::ops::Range<u64> = 20..60;

/// The process number of the reads after the full restart.
const FINAL: u32 = u32::MAX;

/// How many register clients run (process numbers are this apart for one client).
static CLIENTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

/// How long a client waits for its operation before it leaves it running and goes on as a new
/// process (Jepsen replaces a hung process the same way): clients stuck on a paused or cut-off
/// server must not hide that the rest of the cluster answers.
const PATIENCE: Duration = Duration::from_millis(300);

async fn register_client(
    p: u32,
    clients: Arc<Vec<api::Client>>,
    rec: Arc<Recorder>,
    deadline: Instant,
    keys: u32,
    timeout: Duration,
) {
    // Process numbers: a client's replacement is the next free one of its class.
    let clients_n = CLIENTS.load(std::sync::atomic::Ordering::Relaxed);
    let mut process = p;
    let mut seq = 0u64;
    let mut pending = Vec::new();
    while Instant::now() < deadline {
        seq += 1;
        let (server, k, roll) = {
            let mut rng = rand::thread_rng();
            (rng.gen_range(0..clients.len()), rng.gen_range(0..keys), rng.gen_range(0..100u32))
        };
        let step = step(process, server, clients.clone(), rec.clone(), k, roll, format!("p{p}-{seq}"), timeout);
        let mut task = tokio::spawn(step);
        if tokio::time::timeout(PATIENCE, &mut task).await.is_err() {
            pending.push(task);
            process += clients_n;
        }
        // A few hundred operations a second in all: enough to see every failover to within
        // tens of milliseconds, few enough that the history checks in seconds.
        let think = rand::thread_rng().gen_range(THINK_MS);
        tokio::time::sleep(Duration::from_millis(think)).await;
    }
    for t in pending {
        let _ = t.await;
    }
}

/// One client step: a unique-key write, a read, a write, or a read then a CAS on what it read.
#[allow(clippy::too_many_arguments)]
async fn step(
    p: u32,
    server: usize,
    clients: Arc<Vec<api::Client>>,
    rec: Arc<Recorder>,
    k: u32,
    roll: u32,
    value: String,
    timeout: Duration,
) {
    let c = &clients[server];
    let key = format!("chaos/r{k}");
    let record = |kind, call, result| {
        rec.push(Line::Op(Op {
            process: p,
            key: key.clone(),
            kind,
            call,
            ret: rec.now(),
            result,
            server: server as u32,
        }))
    };
    if roll < 8 {
        // A unique key for the lost-write check.
        let lw = format!("chaos/lw/{value}");
        if put(c, &format!("/v1/kv/{lw}"), "x", timeout).await == Ok(true) {
            rec.push(Line::Acked { key: lw, at: rec.now() });
        }
        return;
    }
    if (40..70).contains(&roll) {
        let call = rec.now();
        let r = match put(c, &format!("/v1/kv/{key}"), &value, timeout).await {
            Ok(true) => Res::Ok,
            Ok(false) => Res::Info,
            Err(e) => e,
        };
        record(Kind::Write { value }, call, r);
        return;
    }
    // A read; a CAS is read-then-CAS, as clients use it: the read's ModifyIndex is the
    // expectation.
    let consistent = roll >= 30;
    let call = rec.now();
    let r = read(c, &key, consistent, timeout).await;
    record(Kind::Read { consistent }, call, r.clone().map(|(v, _)| Res::Read(v)).unwrap_or(Res::Info));
    let (Some((expected, index)), true) = (r, roll >= 70) else { return };
    let call = rec.now();
    let r = match put(c, &format!("/v1/kv/{key}?cas={index}"), &value, timeout).await {
        Ok(true) => Res::Ok,
        Ok(false) => Res::CasFalse,
        Err(e) => e,
    };
    record(Kind::Cas { expected, value }, call, r);
}

async fn lock_client(p: u32, clients: Arc<Vec<api::Client>>, rec: Arc<Recorder>, deadline: Instant, timeout: Duration) {
    let body = format!(r#"{{"Name": "chaos-lock-{p}", "NodeChecks": [], "LockDelay": "0s"}}"#);
    // A session with no health checks and no TTL: only its owner ends it, so holding the lock
    // is the owner's to give up.
    let session = loop {
        if Instant::now() >= deadline {
            return;
        }
        let i = rand::thread_rng().gen_range(0..clients.len());
        let r = clients[i].request(Method::PUT, "/v1/session/create", Some(Bytes::from(body.clone())), Some(timeout));
        if let Ok(r) = r.await {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
            if let Some(id) = v["ID"].as_str() {
                break id.to_string();
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let lock = |acquire: bool| {
        let which = if acquire { "acquire" } else { "release" };
        format!("/v1/kv/chaos/lock?{which}={session}")
    };
    let mut holding = false;
    while Instant::now() < deadline || holding {
        let i = rand::thread_rng().gen_range(0..clients.len());
        let acquire = !holding;
        let call = rec.now();
        let answer = put(&clients[i], &lock(acquire), &format!("lock-{p}"), timeout).await.ok();
        rec.push(Line::Lock(LockOp { session: session.clone(), acquire, call, ret: rec.now(), answer }));
        holding = match (acquire, answer) {
            // Held, or maybe held: release it (again) until a release is answered.
            (true, Some(true)) | (true, None) | (false, None) => true,
            (true, Some(false)) | (false, Some(_)) => false,
        };
        let pause = if acquire && answer == Some(true) { 20..100 } else { 5..30 };
        let ms = rand::thread_rng().gen_range(pause);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// Faults until the deadline: a quiet stretch, then one fault for a few seconds, healed.
async fn nemesis(mut cluster: Cluster, s: &Settings, rec: Arc<Recorder>, deadline: Instant) -> anyhow::Result<Cluster> {
    let n = cluster.servers.len();
    loop {
        let (quiet, hold, kind_roll, leader_roll) = {
            let mut rng = rand::thread_rng();
            (rng.gen_range(2000..5000u64), rng.gen_range(2000..8000u64), rng.gen_range(0..3u32), rng.gen_bool(0.5))
        };
        let quiet_until = Instant::now() + Duration::from_millis(quiet);
        if quiet_until + Duration::from_millis(hold) >= deadline || s.nemesis == "none" {
            tokio::time::sleep_until(deadline.into()).await;
            return Ok(cluster);
        }
        tokio::time::sleep_until(quiet_until.into()).await;
        let kind = match s.nemesis.as_str() {
            "kill" => FaultKind::Kill,
            "pause" => FaultKind::Pause,
            "partition" => FaultKind::Partition,
            _ => [FaultKind::Kill, FaultKind::Pause, FaultKind::Partition][kind_roll as usize],
        };
        let all: Vec<usize> = (0..n).collect();
        let leader = if leader_roll { cluster.agreed_leader(&all).await } else { None };
        let mut targets = vec![leader.unwrap_or_else(|| rand::thread_rng().gen_range(0..n))];
        // With five servers, sometimes two at once (a minority still).
        if n >= 5 && rand::thread_rng().gen_bool(0.4) {
            let other = (targets[0] + rand::thread_rng().gen_range(1..n)) % n;
            targets.push(other);
        }
        let start = rec.now();
        match kind {
            FaultKind::Kill => targets.iter().for_each(|t| cluster.kill(*t)),
            FaultKind::Pause => targets.iter().for_each(|t| cluster.signal(*t, libc::SIGSTOP)),
            FaultKind::Partition => cluster.isolate(&targets),
        }
        let names: Vec<String> = targets.iter().map(|t| format!("s{}", t + 1)).collect();
        eprintln!(
            "chaos: {:>6.1}s {:?} {}{} for {:.1}s",
            start as f64 / 1e6,
            kind,
            names.join(","),
            if leader.is_some() { " (the leader)" } else { "" },
            hold as f64 / 1000.0
        );
        tokio::time::sleep(Duration::from_millis(hold)).await;
        match kind {
            FaultKind::Kill => {
                for t in &targets {
                    cluster.start(*t)?;
                }
            }
            FaultKind::Pause => targets.iter().for_each(|t| cluster.signal(*t, libc::SIGCONT)),
            FaultKind::Partition => cluster.heal(),
        }
        let servers = targets.iter().map(|t| *t as u32).collect();
        rec.push(Line::Fault(Fault { kind, servers, start, end: rec.now() }));
    }
}

/// After the full restart: each register read with `?consistent` (into the history), and
/// which acknowledged unique keys are there.
async fn final_reads(cluster: &Cluster, rec: &Recorder, keys: u32) -> anyhow::Result<()> {
    let c = &cluster.servers[0].client;
    for k in 0..keys {
        let key = format!("chaos/r{k}");
        for attempt in 0.. {
            let call = rec.now();
            if let Some((v, _)) = read(c, &key, true, Duration::from_secs(10)).await {
                let op = Op {
                    process: FINAL,
                    key,
                    kind: Kind::Read { consistent: true },
                    call,
                    ret: rec.now(),
                    result: Res::Read(v),
                    server: 0,
                };
                rec.push(Line::Op(op));
                break;
            }
            if attempt > 50 {
                bail!("cannot read {key} after the restart");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    for attempt in 0.. {
        let r = c.request(Method::GET, "/v1/kv/chaos/lw/?keys&consistent", None, Some(Duration::from_secs(10))).await;
        let present = r
            .ok()
            .filter(|r| r.status == 200 || r.status == 404)
            .map(|r| serde_json::from_slice::<Vec<String>>(&r.body).unwrap_or_default());
        if let Some(present) = present {
            rec.push(Line::Final { present });
            return Ok(());
        }
        if attempt > 50 {
            bail!("cannot list the unique keys after the restart");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The analysis.

struct Report {
    ok: bool,
    text: String,
}

fn read_history(path: &Path) -> anyhow::Result<Vec<Line>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| Ok(serde_json::from_str(l)?)).collect()
}

fn analyse(lines: &[Line]) -> Report {
    let mut ops = Vec::new();
    let mut faults = Vec::new();
    let mut locks = Vec::new();
    let mut acked: Vec<(String, u64)> = Vec::new();
    let mut present: Option<Vec<String>> = None;
    let (mut servers, mut lease_us, mut nemesis, mut secs) = (3, 500_000, String::new(), 0);
    for l in lines {
        match l {
            Line::Op(o) => ops.push(o.clone()),
            Line::Fault(f) => faults.push(f.clone()),
            Line::Lock(l) => locks.push(l.clone()),
            Line::Acked { key, at } => acked.push((key.clone(), *at)),
            Line::Final { present: p } => present = Some(p.clone()),
            Line::Meta { servers: s, lease_us: l, nemesis: n, secs: t } => {
                (servers, lease_us, nemesis, secs) = (*s, *l, n.clone(), *t)
            }
        }
    }
    let mut out = String::new();
    let mut ok = true;
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!("== chaos: nemesis {nemesis}, {secs} s, {servers} servers, lease {} ms", lease_us / 1000));
    // Operations by kind and outcome.
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    for o in &ops {
        let kind = match &o.kind {
            Kind::Read { consistent: true } => "read ?consistent",
            Kind::Read { consistent: false } => "read default",
            Kind::Write { .. } => "write",
            Kind::Cas { .. } => "cas",
        };
        let res = match &o.result {
            Res::Read(_) | Res::Ok => "ok",
            Res::CasFalse => "false",
            Res::Fail => "fail",
            Res::Info => "unknown",
        };
        *counts.entry((kind.to_string(), res.to_string())).or_default() += 1;
    }
    let lock_ok = locks.iter().filter(|l| l.answer.is_some()).count();
    line(format!(
        "operations: {} on registers, {} unique-key writes acknowledged, {} lock operations ({} answered), {} faults",
        ops.len(),
        acked.len(),
        locks.len(),
        lock_ok,
        faults.len()
    ));
    let mut by_kind: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for ((k, r), n) in &counts {
        by_kind.entry(k.clone()).or_default().push(format!("{r} {n}"));
    }
    for (k, v) in by_kind {
        line(format!("  {k}: {}", v.join(", ")));
    }
    let budget = 4_000_000;
    let verdict = |slack: u64| {
        let started = Instant::now();
        let v = check::linearizable_by_key(&ops, slack, budget);
        (v, started.elapsed())
    };
    let summarize = |v: &BTreeMap<String, check::Verdict>| -> (String, bool, bool) {
        let bad: Vec<String> = v
            .iter()
            .filter_map(|(k, v)| match v {
                check::Verdict::Violation { at, linearized } => {
                    Some(format!("{k}: no order after {linearized} ops; stuck at {at:?}"))
                }
                _ => None,
            })
            .collect();
        let unknown = v.values().any(|v| matches!(v, check::Verdict::Unknown { .. }));
        for (k, v) in v {
            if let check::Verdict::Unknown { at, linearized } = v {
                eprintln!("chaos check: {k}: gave up after placing {linearized} ops in order; stuck at {at:?}");
            }
        }
        let s = if !bad.is_empty() {
            format!("NOT linearizable ({})", bad.join("; "))
        } else if unknown {
            "unknown (search budget exceeded)".to_string()
        } else {
            format!("linearizable ({} keys)", v.len())
        };
        (s, bad.is_empty(), unknown)
    };
    let (strict, t1) = verdict(0);
    let (strict_s, strict_ok, _) = summarize(&strict);
    line(format!("linearizable, strict (default reads as linearizable as ?consistent): {strict_s} [{t1:.1?}]"));
    let (leased, t2) = verdict(lease_us);
    let (leased_s, leased_ok, _) = summarize(&leased);
    line(format!(
        "linearizable, default reads allowed the lease window ({} ms): {leased_s} [{t2:.1?}]",
        lease_us / 1000
    ));
    ok &= leased_ok;
    let _ = strict_ok;
    // Stale reads.
    let stale = check::stale_reads(&ops);
    let default_stale: Vec<&check::StaleRead> =
        stale.iter().filter(|s| matches!(s.op.kind, Kind::Read { consistent: false })).collect();
    let beyond: Vec<&&check::StaleRead> = default_stale.iter().filter(|s| s.by_us > lease_us).collect();
    let consistent_stale = stale.len() - default_stale.len();
    let max = default_stale.iter().map(|s| s.by_us).max().unwrap_or(0);
    line(format!(
        "stale default reads: {} in all, {} beyond the lease (goal 0), the stalest {} ms; stale ?consistent reads: {}",
        default_stale.len(),
        beyond.len(),
        if max == u64::MAX { "∞ (a value nobody wrote)".to_string() } else { format!("{:.1}", max as f64 / 1000.0) },
        consistent_stale
    ));
    for s in beyond.iter().take(5) {
        line(format!("  beyond the lease by {} us: {:?}", s.by_us.saturating_sub(lease_us), s.op));
    }
    ok &= beyond.is_empty() && consistent_stale == 0;
    // Lost writes.
    match &present {
        Some(p) => {
            let have: std::collections::HashSet<&str> = p.iter().map(String::as_str).collect();
            let lost: Vec<&str> = acked.iter().map(|(k, _)| k.as_str()).filter(|k| !have.contains(k)).collect();
            line(format!(
                "acknowledged writes lost after killing every server (-9) and restarting: {} of {} (goal 0){}",
                lost.len(),
                acked.len(),
                if lost.is_empty() { String::new() } else { format!(": {:?}", &lost[..lost.len().min(10)]) }
            ));
            ok &= lost.is_empty();
        }
        None => line("acknowledged writes lost: not checked (no final read)".into()),
    }
    // Locks.
    let end = ops.iter().map(|o| o.ret).chain(locks.iter().map(|l| l.ret)).max().unwrap_or(0);
    let overlaps = check::lock_overlaps(&locks, end);
    let acquired = locks.iter().filter(|l| l.acquire && l.answer == Some(true)).count();
    line(format!(
        "session locks: {} acquisitions, held by two sessions at once: {} (goal 0)",
        acquired,
        overlaps.len()
    ));
    for (a, b) in overlaps.iter().take(5) {
        line(format!("  {a:?} overlaps {b:?}"));
    }
    ok &= overlaps.is_empty();
    // Availability: the run is from the first operation to the last fault's end plus the quiet
    // after it, i.e. up to the last operation before the final restart.
    // Up to the clients' deadline: operations still answering after it start no new writes.
    let run_end = ops.iter().filter(|o| o.process != FINAL).map(|o| o.ret).max().unwrap_or(0).min(secs * 1_000_000);
    let up = check::quorum_up(&faults, servers, 0, run_end);
    let write_acks: Vec<u64> = ops
        .iter()
        .filter(|o| matches!(o.kind, Kind::Write { .. } | Kind::Cas { .. }) && o.result == Res::Ok)
        .map(|o| o.ret)
        .chain(acked.iter().map(|(_, at)| *at))
        .collect();
    let (gap, at) = check::write_gaps(&write_acks, &up);
    line(format!(
        "longest stretch without an acknowledged write while a quorum was up and connected: {:.2} s (from {:.1} s)",
        gap as f64 / 1e6,
        at as f64 / 1e6
    ));
    let mut fault_kinds: BTreeMap<String, usize> = BTreeMap::new();
    for f in &faults {
        *fault_kinds.entry(format!("{:?}", f.kind)).or_default() += 1;
    }
    line(format!("faults: {fault_kinds:?}"));
    line(format!("verdict: {}", if ok { "PASS" } else { "FAIL" }));
    Report { ok, text: out }
}

// ---------------------------------------------------------------------------------------------
// Failover timing.

async fn failover(args: &[String]) -> anyhow::Result<()> {
    let agent = PathBuf::from(arg(args, "--agent", "target/release/agent"));
    let workdir = PathBuf::from(arg(args, "--workdir", "/tmp/chaos-failover"));
    let trials: usize = num(args, "--trials", "10")?;
    let multiplier: u64 = num(args, "--multiplier", "1")?;
    let mut cluster = Cluster::new(&agent, &workdir, &arg(args, "--net", "127.0.136"), 3, multiplier)?;
    for i in 0..3 {
        cluster.start(i)?;
    }
    let mut took = Vec::new();
    for t in 1..=trials {
        let l = cluster.wait_healthy(Duration::from_secs(120)).await?;
        let others: Vec<usize> = (0..3).filter(|i| *i != l).collect();
        let t0 = Instant::now();
        cluster.kill(l);
        // Writes through both survivors at once, each attempt held by the server through the
        // election (Consul's rpc_hold_timeout); the first acknowledged one ends the trial.
        let attempt = |i: usize, n: u64| {
            let c = cluster.servers[i].client.clone();
            async move {
                loop {
                    if put(&c, "/v1/kv/failover", &format!("t{n}"), Duration::from_secs(15)).await == Ok(true) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        let first = tokio::select! {
            _ = attempt(others[0], t as u64) => t0.elapsed(),
            _ = attempt(others[1], t as u64) => t0.elapsed(),
            _ = tokio::time::sleep(Duration::from_secs(60)) => bail!("no write within 60 s of killing the leader"),
        };
        println!("trial {t}: leader s{} killed, first write after {} ms", l + 1, first.as_millis());
        took.push(first);
        cluster.start(l)?;
    }
    took.sort();
    let p = |q: f64| took[((took.len() as f64 - 1.0) * q).round() as usize].as_millis();
    println!(
        "failover at raft_multiplier {multiplier}: p50 {} ms, max {} ms (n={})",
        p(0.5),
        took.last().map(|d| d.as_millis()).unwrap_or(0),
        took.len()
    );
    Ok(())
}
