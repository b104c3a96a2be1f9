//! The project's load tool, used by `scripts/bench.sh` to measure the agent beside its peers.
//!
//! `bench kv-put --target agent|etcd --addr HOST:PORT [--conns 32] [--secs 10] [--value-size 128] [--token T]`
//!   PUTs to distinct keys over keep-alive connections; prints throughput and latency.
//! `bench kv-get --addr HOST:PORT [--key bench/get] [--conns 32] [--secs 10] [--token T]`
//!   GETs one existing key (the agent's default consistency) over keep-alive connections.
//!   Both take `--ca FILE [--client-cert FILE --client-key FILE] [--server-name NAME]`: HTTPS
//!   (HTTP/1.1 over TLS, one handshake per connection) instead of plain HTTP.
//! `bench blocking --addr HOST:PORT --pid PID [--watchers 10000] [--conns 50]`
//!   parks N blocking KV queries (HTTP/2 streams), then writes each watched key and measures the
//!   time from the write to the watcher's answer, and the agent's memory per waiting query: the
//!   growth of its live heap (`consul.runtime.alloc_bytes`) while the second half of the queries
//!   parks, and its RSS (`--step-hold-ms` waits at each quarter).
//! `bench first-write --target agent|etcd --addrs A,B --since-ns NANOS [--attempt-ms 500] [--limit-secs 30]`
//!   writes through the given members in turn until one write succeeds, and
//!   prints the time since `--since-ns` (wall clock, ns since the epoch: when the leader was killed).

use anyhow::{bail, Context};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned()).unwrap_or_else(|| default.to_string())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2}ms", d.as_secs_f64() * 1000.0)
}

async fn h1(addr: &str) -> anyhow::Result<http1::SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (send, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(send)
}

/// The TLS of `--ca`, `--client-cert`, `--client-key` and `--server-name` (default: the address's host), or
/// `None` for plain HTTP.
type ClientTls = (Arc<tokio_rustls::rustls::ClientConfig>, tokio_rustls::rustls::pki_types::ServerName<'static>);

fn tls_args(args: &[String], addr: &str) -> anyhow::Result<Option<ClientTls>> {
    let ca = arg(args, "--ca", "");
    if ca.is_empty() {
        return Ok(None);
    }
    let path = |k: &str| Some(arg(args, k, "")).filter(|p| !p.is_empty()).map(std::path::PathBuf::from);
    let opts = api::TlsOptions {
        ca_file: Some(ca.into()),
        cert_file: path("--client-cert"),
        key_file: path("--client-key"),
        ..Default::default()
    };
    let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr).to_string();
    let name = Some(arg(args, "--server-name", "")).filter(|n| !n.is_empty()).unwrap_or(host);
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from(name.clone())
        .with_context(|| format!("invalid server name {name:?}"))?;
    Ok(Some((opts.load()?.client_config(), name)))
}

/// An HTTP/1.1 connection, over TLS when `tls` says so.
async fn h1_maybe_tls(addr: &str, tls: Option<&ClientTls>) -> anyhow::Result<http1::SendRequest<Full<Bytes>>> {
    let Some((config, name)) = tls else { return h1(addr).await };
    let stream = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let stream = tokio_rustls::TlsConnector::from(config.clone()).connect(name.clone(), stream).await?;
    let (send, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(send)
}

async fn h2(addr: &str) -> anyhow::Result<http2::SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (send, conn) = http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(65_535)
        .handshake(TokioIo::new(stream))
        .await?;
    tokio::spawn(conn);
    Ok(send)
}

fn request(method: &str, addr: &str, path: &str, body: Vec<u8>) -> anyhow::Result<http::Request<Full<Bytes>>> {
    Ok(http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("host", addr)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))?)
}

async fn kv_put(args: &[String]) -> anyhow::Result<()> {
    let get = args.get(1).map(String::as_str) == Some("kv-get");
    let read_key = arg(args, "--key", "bench/get");
    let token = arg(args, "--token", "");
    let target = arg(args, "--target", "agent");
    let addr = arg(args, "--addr", "127.0.0.1:8500");
    let conns: usize = arg(args, "--conns", "32").parse()?;
    let secs: u64 = arg(args, "--secs", "10").parse()?;
    let size: usize = arg(args, "--value-size", "128").parse()?;
    let value = vec![b'x'; size];
    let tls = tls_args(args, &addr)?;
    let deadline = Instant::now() + Duration::from_secs(secs);
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..conns {
        let (addr, target, value, errors) = (addr.clone(), target.clone(), value.clone(), errors.clone());
        let (token, read_key, tls) = (token.clone(), read_key.clone(), tls.clone());
        tasks.push(tokio::spawn(async move {
            let mut send = h1_maybe_tls(&addr, tls.as_ref()).await?;
            let mut lat = Vec::new();
            let mut i = 0u64;
            while Instant::now() < deadline {
                let key = format!("bench/{c}/{i}");
                i += 1;
                let mut req = if get {
                    request("GET", &addr, &format!("/v1/kv/{read_key}"), Vec::new())?
                } else {
                    put_request(&target, &addr, &key, &value)?
                };
                if !token.is_empty() {
                    req.headers_mut().insert("x-consul-token", http::HeaderValue::from_str(&token)?);
                }
                let started = Instant::now();
                send.ready().await?;
                let resp = send.send_request(req).await?;
                let status = resp.status();
                let body = resp.into_body().collect().await?.to_bytes();
                lat.push(started.elapsed());
                if !status.is_success() && errors.fetch_add(1, Ordering::Relaxed) == 0 {
                    // The first failure says what it was; the count says how many.
                    eprintln!("first failure: {status} {}", String::from_utf8_lossy(&body).trim());
                }
            }
            anyhow::Ok(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    all.sort();
    let errs = errors.load(Ordering::Relaxed);
    let op = if get { "kv-get" } else { "kv-put" };
    let acl = if token.is_empty() { "" } else { " (token)" };
    let acl = if tls.is_some() { format!("{acl} (https)") } else { acl.to_string() };
    println!(
        "{op} {target:5}{acl} conns={conns} secs={secs} value={size}B: {:>8.0} req/s  p50 {}  p99 {}  errors {errs}",
        all.len() as f64 / secs as f64,
        ms(percentile(&all, 0.50)),
        ms(percentile(&all, 0.99)),
    );
    if errs > 0 {
        bail!("{errs} requests failed");
    }
    Ok(())
}

fn put_request(target: &str, addr: &str, key: &str, value: &[u8]) -> anyhow::Result<http::Request<Full<Bytes>>> {
    if target == "etcd" {
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let body = serde_json::json!({"key": b64(key.as_bytes()), "value": b64(value)});
        request("POST", addr, "/v3/kv/put", serde_json::to_vec(&body)?)
    } else {
        request("PUT", addr, &format!("/v1/kv/{key}"), value.to_vec())
    }
}

/// One write with a deadline over a fresh connection; true when it was acknowledged.
async fn write_once(target: &str, addr: &str, limit: Duration) -> bool {
    let attempt = async {
        let mut send = h1(addr).await?;
        let resp = send.send_request(put_request(target, addr, "bench/failover", b"x")?).await?;
        let ok = resp.status().is_success();
        let body = resp.into_body().collect().await?.to_bytes();
        // The agent answers 200 "false" or 500 while it has no leader; etcd answers 200 with a header.
        anyhow::Ok(ok && (target == "etcd" || body.as_ref() == b"true"))
    };
    matches!(tokio::time::timeout(limit, attempt).await, Ok(Ok(true)))
}

async fn first_write(args: &[String]) -> anyhow::Result<()> {
    let target = arg(args, "--target", "agent");
    let addrs: Vec<String> = arg(args, "--addrs", "").split(',').filter(|a| !a.is_empty()).map(String::from).collect();
    let since: u128 = arg(args, "--since-ns", "0").parse()?;
    let limit = Duration::from_secs(arg(args, "--limit-secs", "30").parse()?);
    // Each attempt's timeout, as the system's own clients use it: the agent holds a write during
    // an election and answers when it ends; etcd's server fails it after its request timeout, so
    // etcd's clients retry with short timeouts.
    let attempt = Duration::from_millis(arg(args, "--attempt-ms", "500").parse()?);
    if addrs.is_empty() {
        bail!("--addrs is required");
    }
    let started = Instant::now();
    let mut i = 0;
    while started.elapsed() < limit {
        if write_once(&target, &addrs[i % addrs.len()], attempt).await {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos();
            println!("{:.0}", now.saturating_sub(since) as f64 / 1e6);
            return Ok(());
        }
        i += 1;
    }
    bail!("no write succeeded within {limit:?}")
}

fn rss_kib(pid: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("bad VmRSS")?.parse()?)
}

/// The agent's `consul.state.watch_channels` and `consul.runtime.alloc_bytes` gauges.
async fn gauges(addr: &str) -> anyhow::Result<(u64, u64)> {
    let client = api::Client::new(addr)?;
    let got: Option<(serde_json::Value, api::QueryMeta)> =
        client.query("/v1/agent/metrics", &[], &Default::default()).await?;
    let v = got.context("no metrics")?.0;
    let gauge = |name: &str| {
        v["Gauges"]
            .as_array()
            .and_then(|g| g.iter().find(|x| x["Name"] == name))
            .and_then(|x| x["Value"].as_f64())
            .unwrap_or(0.0) as u64
    };
    Ok((gauge("consul.state.watch_channels"), gauge("consul.runtime.alloc_bytes")))
}

async fn blocking(args: &[String]) -> anyhow::Result<()> {
    let addr = arg(args, "--addr", "127.0.0.1:8500");
    let pid = arg(args, "--pid", "");
    let watchers: usize = arg(args, "--watchers", "10000").parse()?;
    let conns: usize = arg(args, "--conns", "50").parse()?;
    // Create the keys and learn their indexes.
    let mut writer = h1(&addr).await?;
    for i in 0..watchers {
        writer.ready().await?;
        let resp = writer.send_request(request("PUT", &addr, &format!("/v1/kv/bw/{i}"), b"0".to_vec())?).await?;
        resp.into_body().collect().await?;
    }
    let client = api::Client::new(&addr)?;
    let (pairs, _) = client.kv_list("bw/", &Default::default()).await?;
    let index: std::collections::HashMap<String, u64> = pairs.iter().map(|p| (p.key.clone(), p.modify_index)).collect();
    // Let the setup writes settle (sled's write-back and page cache) so the delta is the queries'.
    let settle: u64 = arg(args, "--settle-secs", "5").parse()?;
    let early = if pid.is_empty() { 0 } else { rss_kib(&pid)? };
    tokio::time::sleep(Duration::from_secs(settle)).await;
    let before = if pid.is_empty() { 0 } else { rss_kib(&pid)? };
    if !pid.is_empty() {
        println!("blocking memory: right after setup {early} KiB, after {settle}s idle {before} KiB");
    }
    let (channels_before, heap_before) = gauges(&addr).await?;
    let mut senders = Vec::new();
    for _ in 0..conns {
        senders.push(h2(&addr).await?);
    }
    let answered: Arc<Vec<AtomicU64>> = Arc::new((0..watchers).map(|_| AtomicU64::new(0)).collect());
    let origin = Instant::now();
    let mut tasks = Vec::new();
    // Park the queries a quarter at a time and read the RSS once each quarter is parked. The
    // per-query figure is the slope over the second half, (RSS(N) - RSS(N/2)) / (N/2): the idle
    // RSS depends on how much freed setup memory the allocator kept (it varied by 10 MB from run
    // to run), and the first half of the queries soaks that up.
    let step_hold = Duration::from_millis(arg(args, "--step-hold-ms", "500").parse()?);
    let parked_by = Instant::now() + Duration::from_secs(120);
    let mut steps: Vec<(usize, u64)> = Vec::new();
    let mut heap_steps: Vec<(usize, u64)> = Vec::new();
    for q in 1..=4 {
        let upto = watchers * q / 4;
        for i in tasks.len()..upto {
            let mut send = senders[i % conns].clone();
            let key = format!("bw/{i}");
            let idx = index.get(&key).copied().context("key index")?;
            let req = request("GET", &addr, &format!("/v1/kv/{key}?index={idx}&wait=5m"), vec![])?;
            let answered = answered.clone();
            tasks.push(tokio::spawn(async move {
                send.ready().await?;
                let resp = send.send_request(req).await?;
                resp.into_body().collect().await?;
                answered[i].store(origin.elapsed().as_nanos() as u64, Ordering::SeqCst);
                anyhow::Ok(())
            }));
        }
        // Parked once the agent holds a watch channel per query.
        loop {
            let (n, _) = gauges(&addr).await?;
            if n >= channels_before + upto as u64 {
                break;
            }
            if Instant::now() > parked_by {
                bail!("only {n} of {upto} queries parked");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(step_hold).await;
        steps.push((upto, if pid.is_empty() { 0 } else { rss_kib(&pid)? }));
        heap_steps.push((upto, gauges(&addr).await?.1));
    }
    // For profiling the parked state from outside (heaptrack, /proc): hold before writing.
    let hold: u64 = arg(args, "--hold-secs", "0").parse()?;
    tokio::time::sleep(Duration::from_secs(hold)).await;
    let mut written = vec![0u64; watchers];
    for (i, w) in written.iter_mut().enumerate() {
        writer.ready().await?;
        *w = origin.elapsed().as_nanos() as u64;
        let resp = writer.send_request(request("PUT", &addr, &format!("/v1/kv/bw/{i}"), b"1".to_vec())?).await?;
        resp.into_body().collect().await?;
    }
    for t in tasks {
        t.await??;
    }
    let mut lat: Vec<Duration> = (0..watchers)
        .map(|i| Duration::from_nanos(answered[i].load(Ordering::SeqCst).saturating_sub(written[i])))
        .collect();
    lat.sort();
    println!(
        "blocking watchers={watchers} conns={conns}: write→answer p50 {}  p99 {}  max {}",
        ms(percentile(&lat, 0.50)),
        ms(percentile(&lat, 0.99)),
        ms(*lat.last().unwrap_or(&Duration::ZERO))
    );
    // The agent's live heap (allocator headers and rounding included, freed memory not): the
    // figure to hold against the goal. The RSS follows, but its idle level includes what the
    // allocator kept of the setup writes, which the first queries reuse.
    let per = |a: (usize, u64), b: (usize, u64)| b.1.saturating_sub(a.1) as f64 / (b.0 - a.0).max(1) as f64;
    let quarters = |first: (usize, u64), steps: &[(usize, u64)], decimals: usize| -> String {
        let mut prev = first;
        let mut out = Vec::new();
        for &s in steps {
            out.push(format!("{:.*}", decimals, per(prev, s)));
            prev = s;
        }
        out.join(" ")
    };
    println!(
        "blocking memory: {:.0} bytes of heap per waiting query ((heap at {} - heap at {}) / {}); {:.0} counted from idle; by quarter {}",
        per(heap_steps[1], heap_steps[3]),
        heap_steps[3].0,
        heap_steps[1].0,
        heap_steps[3].0 - heap_steps[1].0,
        per((0, heap_before), heap_steps[3]),
        quarters((0, heap_before), &heap_steps, 0)
    );
    if !pid.is_empty() {
        let parked: Vec<String> = steps.iter().map(|(n, kib)| format!("{n}: {kib}")).collect();
        println!("blocking memory: RSS idle {before} KiB; parked {} (KiB)", parked.join(", "));
        println!(
            "blocking memory: {:.2} KiB of RSS per waiting query over the second half; {:.2} counted from idle; by quarter {}",
            per(steps[1], steps[3]),
            per((0, before), steps[3]),
            quarters((0, before), &steps, 2)
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("kv-put") | Some("kv-get") => kv_put(&args).await,
        Some("blocking") => blocking(&args).await,
        Some("first-write") => first_write(&args).await,
        _ => bail!("usage: bench kv-put|blocking|first-write [options] (see the source's header)"),
    }
}
