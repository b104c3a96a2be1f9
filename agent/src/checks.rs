//! Runs the health checks of this agent's services: TTL, HTTP, TCP, UDP, script and gRPC. Each
//! check is one task; its results go out as [`CheckResult`]s for the agent to record and sync.
//! Knows nothing about Raft or the catalog.

use crate::structs::{CheckDefinition, Status};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Debug, Clone, PartialEq)]
pub struct CheckResult {
    pub check_id: String,
    pub status: Status,
    pub output: String,
}

/// Consul's consecutive-result thresholds (`SuccessBeforePassing`, `FailuresBeforeWarning`,
/// `FailuresBeforeCritical`): a new status is reported only once enough results agree.
#[derive(Debug, Clone)]
pub struct Thresholds {
    success_before_passing: u32,
    failures_before_warning: u32,
    failures_before_critical: u32,
    successes: u32,
    failures: u32,
}

impl Thresholds {
    pub fn new(def: &CheckDefinition) -> Thresholds {
        Thresholds {
            success_before_passing: def.success_before_passing,
            failures_before_warning: def.failures_before_warning,
            failures_before_critical: def.failures_before_critical,
            successes: 0,
            failures: 0,
        }
    }

    /// Returns the status to report for this result, or `None` to keep the current one.
    pub fn observe(&mut self, status: Status) -> Option<Status> {
        match status {
            Status::Passing => {
                self.failures = 0;
                self.successes += 1;
                (self.successes > self.success_before_passing.saturating_sub(1)).then_some(Status::Passing)
            }
            Status::Warning => {
                self.failures = 0;
                self.successes = 0;
                Some(Status::Warning)
            }
            Status::Critical => {
                self.successes = 0;
                self.failures += 1;
                if self.failures >= self.failures_before_critical.max(1) {
                    Some(Status::Critical)
                } else if self.failures_before_warning > 0 && self.failures >= self.failures_before_warning {
                    Some(Status::Warning)
                } else {
                    None
                }
            }
        }
    }
}

enum Control {
    /// A TTL check was updated: restart its timer.
    Touch,
}

pub struct Runner {
    results: mpsc::UnboundedSender<CheckResult>,
    tasks: Mutex<HashMap<String, (tokio::task::JoinHandle<()>, mpsc::UnboundedSender<Control>)>>,
    http: hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    output_max: usize,
    /// Set by [`Runner::offline`]: checks that would reach the network are registered but
    /// never run.
    offline: std::sync::atomic::AtomicBool,
}

impl Runner {
    pub fn new(results: mpsc::UnboundedSender<CheckResult>, output_max: usize) -> Runner {
        let mut c = hyper_util::client::legacy::connect::HttpConnector::new();
        c.set_connect_timeout(Some(Duration::from_secs(10)));
        let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(c);
        Runner { results, tasks: Mutex::new(HashMap::new()), http, output_max, offline: Default::default() }
    }

    /// From now on only TTL checks run. For an in-process agent fed arbitrary requests (the
    /// fuzz targets): a registered HTTP, TCP, UDP or gRPC check would otherwise send traffic
    /// to whatever address the request named.
    pub fn offline(&self) {
        self.offline.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Starts (or restarts) the check `id`. Script checks run only if `scripts_allowed`.
    pub fn start(&self, id: &str, def: &CheckDefinition, scripts_allowed: bool) {
        self.stop(id);
        let kind = def.kind();
        if kind.is_empty() || kind == "alias" {
            return;
        }
        if def.ttl_ns == 0 && self.offline.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
        let task = CheckTask {
            id: id.to_string(),
            def: def.clone(),
            results: self.results.clone(),
            http: self.http.clone(),
            output_max: if def.output_max_size > 0 { def.output_max_size } else { self.output_max },
            scripts_allowed,
        };
        let handle = tokio::spawn(task.run(ctl_rx));
        self.tasks.lock().insert(id.to_string(), (handle, ctl_tx));
    }

    pub fn stop(&self, id: &str) {
        if let Some((h, _)) = self.tasks.lock().remove(id) {
            h.abort();
        }
    }

    /// Restarts a TTL check's timer after the application reported in.
    pub fn touch(&self, id: &str) {
        if let Some((_, ctl)) = self.tasks.lock().get(id) {
            let _ = ctl.send(Control::Touch);
        }
    }

    pub fn stop_all(&self) {
        for (_, (h, _)) in self.tasks.lock().drain() {
            h.abort();
        }
    }
}

struct CheckTask {
    id: String,
    def: CheckDefinition,
    results: mpsc::UnboundedSender<CheckResult>,
    http: hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    output_max: usize,
    scripts_allowed: bool,
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str(" ...");
    }
    s
}

impl CheckTask {
    async fn run(self, mut ctl: mpsc::UnboundedReceiver<Control>) {
        if self.def.ttl_ns > 0 {
            return self.run_ttl(ctl).await;
        }
        let interval = Duration::from_nanos(self.def.interval_ns).max(Duration::from_millis(1));
        let mut thresholds = Thresholds::new(&self.def);
        loop {
            let (status, output) = self.run_once().await;
            if let Some(s) = thresholds.observe(status) {
                let output = truncate(output, self.output_max);
                if self.results.send(CheckResult { check_id: self.id.clone(), status: s, output }).is_err() {
                    return;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                c = ctl.recv() => if c.is_none() { return },
            }
        }
    }

    async fn run_ttl(self, mut ctl: mpsc::UnboundedReceiver<Control>) {
        let ttl = Duration::from_nanos(self.def.ttl_ns);
        loop {
            tokio::select! {
                c = ctl.recv() => match c {
                    Some(Control::Touch) => continue,
                    None => return,
                },
                _ = tokio::time::sleep(ttl) => {
                    let r = CheckResult { check_id: self.id.clone(), status: Status::Critical, output: "TTL expired".into() };
                    if self.results.send(r).is_err() {
                        return;
                    }
                    // Stay expired until the application reports again.
                    match ctl.recv().await {
                        Some(Control::Touch) => continue,
                        None => return,
                    }
                }
            }
        }
    }

    fn timeout(&self, default: Duration) -> Duration {
        if self.def.timeout_ns > 0 {
            Duration::from_nanos(self.def.timeout_ns)
        } else {
            default
        }
    }

    async fn run_once(&self) -> (Status, String) {
        if !self.def.grpc.is_empty() {
            return self.grpc().await;
        }
        if !self.def.http.is_empty() {
            return self.http().await;
        }
        if !self.def.tcp.is_empty() {
            return self.tcp().await;
        }
        if !self.def.udp.is_empty() {
            return self.udp().await;
        }
        if !self.def.args.is_empty() {
            return self.script().await;
        }
        (Status::Critical, "check has nothing to run".into())
    }

    async fn http(&self) -> (Status, String) {
        let method = if self.def.method.is_empty() { "GET".to_string() } else { self.def.method.to_uppercase() };
        let url = &self.def.http;
        if url.starts_with("https://") {
            return (Status::Critical, format!("{method} {url}: https checks are not supported by this agent"));
        }
        let fut = async {
            // Redirects are followed (up to 10), as Go's HTTP client does for Consul.
            let mut target = url.clone();
            for _ in 0..10 {
                let mut builder = http::Request::builder().method(method.as_str()).uri(target.as_str());
                builder =
                    builder.header("User-Agent", "Consul Health Check").header("Accept", "text/plain, text/*, */*");
                for (k, vals) in &self.def.header {
                    for v in vals {
                        builder = builder.header(k.as_str(), v.as_str());
                    }
                }
                let req = builder
                    .body(Full::new(Bytes::from(self.def.body.clone())))
                    .map_err(|e| format!("{method} {url}: {e}"))?;
                let resp = self.http.request(req).await.map_err(|e| format!("{method} {url}: {e}"))?;
                let code = resp.status();
                let location = resp.headers().get("location").and_then(|l| l.to_str().ok()).map(str::to_string);
                if code.is_redirection() {
                    if let Some(loc) = location {
                        target = resolve_location(&target, &loc);
                        continue;
                    }
                }
                let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                return Ok::<_, String>((code, body));
            }
            Err(format!("{method} {url}: stopped after 10 redirects"))
        };
        match tokio::time::timeout(self.timeout(Duration::from_secs(10)), fut).await {
            Err(_) => (Status::Critical, format!("{method} {url}: request timed out")),
            Ok(Err(e)) => (Status::Critical, e),
            Ok(Ok((code, body))) => {
                let text = String::from_utf8_lossy(&body);
                let output = format!(
                    "HTTP {method} {url}: {} {} Output: {text}",
                    code.as_u16(),
                    code.canonical_reason().unwrap_or("")
                );
                let status = if code.is_success() {
                    Status::Passing
                } else if code.as_u16() == 429 {
                    Status::Warning
                } else {
                    Status::Critical
                };
                (status, output)
            }
        }
    }

    async fn tcp(&self) -> (Status, String) {
        let addr = &self.def.tcp;
        match tokio::time::timeout(self.timeout(Duration::from_secs(10)), tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => (Status::Passing, format!("TCP connect {addr}: Success")),
            Ok(Err(e)) => (Status::Critical, format!("dial tcp {addr}: {e}")),
            Err(_) => (Status::Critical, format!("dial tcp {addr}: i/o timeout")),
        }
    }

    async fn udp(&self) -> (Status, String) {
        let addr = &self.def.udp;
        let sock = match tokio::net::UdpSocket::bind("0.0.0.0:0").await {
            Ok(s) => s,
            Err(e) => return (Status::Critical, format!("udp {addr}: {e}")),
        };
        if let Err(e) = sock.connect(addr).await {
            return (Status::Critical, format!("dial udp {addr}: {e}"));
        }
        if let Err(e) = sock.send(b"\n").await {
            return (Status::Critical, format!("udp {addr}: {e}"));
        }
        let mut buf = [0u8; 64];
        // Like Consul: an answer or a read timeout both count as up; a refusal is down.
        match tokio::time::timeout(self.timeout(Duration::from_secs(10)), sock.recv(&mut buf)).await {
            Ok(Err(e)) => (Status::Critical, format!("udp {addr}: {e}")),
            _ => (Status::Passing, format!("UDP connect {addr}: Success")),
        }
    }

    async fn script(&self) -> (Status, String) {
        if !self.scripts_allowed {
            return (Status::Critical, "script checks are disabled: enable_script_checks is false".into());
        }
        let mut cmd = tokio::process::Command::new(&self.def.args[0]);
        cmd.args(&self.def.args[1..]).kill_on_drop(true).stdin(std::process::Stdio::null());
        match tokio::time::timeout(self.timeout(Duration::from_secs(30)), cmd.output()).await {
            Err(_) => {
                (Status::Critical, format!("Timed out ({:?}) running check", self.timeout(Duration::from_secs(30))))
            }
            Ok(Err(e)) => (Status::Critical, format!("failed to run {:?}: {e}", self.def.args[0])),
            Ok(Ok(out)) => {
                let mut text = String::from_utf8_lossy(&out.stdout).to_string();
                text.push_str(&String::from_utf8_lossy(&out.stderr));
                let status = match out.status.code() {
                    Some(0) => Status::Passing,
                    Some(1) => Status::Warning,
                    _ => Status::Critical,
                };
                (status, text)
            }
        }
    }

    /// The standard `grpc.health.v1.Health/Check` call over plain-text HTTP/2.
    async fn grpc(&self) -> (Status, String) {
        let target = self.def.grpc.clone();
        let (addr, service) = match target.split_once('/') {
            Some((a, s)) => (a.to_string(), s.to_string()),
            None => (target.clone(), String::new()),
        };
        if self.def.grpc_use_tls {
            return (Status::Critical, format!("gRPC check {target}: TLS is not supported by this agent"));
        }
        let fut = async {
            let stream = tokio::net::TcpStream::connect(&addr).await.map_err(|e| e.to_string())?;
            let (mut sender, conn) = hyper::client::conn::http2::handshake(
                hyper_util::rt::TokioExecutor::new(),
                hyper_util::rt::TokioIo::new(stream),
            )
            .await
            .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            // HealthCheckRequest { string service = 1; }, length-prefixed gRPC message.
            let mut msg = Vec::new();
            if !service.is_empty() {
                msg.push(0x0a);
                push_varint(&mut msg, service.len() as u64);
                msg.extend_from_slice(service.as_bytes());
            }
            let mut frame = vec![0u8];
            frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
            frame.extend_from_slice(&msg);
            let req = http::Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(Full::new(Bytes::from(frame)))
                .map_err(|e| e.to_string())?;
            let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
            let collected = resp.into_body().collect().await.map_err(|e| e.to_string())?;
            let grpc_status = collected
                .trailers()
                .and_then(|t| t.get("grpc-status"))
                .and_then(|v| v.to_str().ok())
                .unwrap_or("0")
                .to_string();
            let body = collected.to_bytes();
            if grpc_status != "0" {
                return Err(format!("rpc error: code = {grpc_status}"));
            }
            // HealthCheckResponse { ServingStatus status = 1; } with SERVING = 1.
            let serving = body.len() >= 7 && body[5] == 0x08 && body[6] == 1;
            Ok(serving)
        };
        match tokio::time::timeout(self.timeout(Duration::from_secs(10)), fut).await {
            Err(_) => (Status::Critical, format!("gRPC check {target}: timed out")),
            Ok(Err(e)) => (Status::Critical, format!("gRPC check {target}: {e}")),
            Ok(Ok(true)) => (Status::Passing, format!("gRPC check {target}: success")),
            Ok(Ok(false)) => (Status::Critical, format!("gRPC check {target}: service not serving")),
        }
    }
}

/// Protobuf's base-128 varint, the length prefix of a string field.
fn push_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Resolves a redirect's `Location` against the URL that answered with it.
fn resolve_location(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_string();
    }
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[scheme_end..].find('/').map(|i| i + scheme_end).unwrap_or(base.len());
    if location.starts_with('/') {
        format!("{}{}", &base[..host_end], location)
    } else {
        let dir_end = base.rfind('/').filter(|i| *i >= host_end).map(|i| i + 1).unwrap_or(base.len());
        let prefix = if dir_end == base.len() && host_end == base.len() {
            format!("{base}/")
        } else {
            base[..dir_end].to_string()
        };
        format!("{prefix}{location}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_encode_like_protobuf() {
        let enc = |v| {
            let mut b = Vec::new();
            push_varint(&mut b, v);
            b
        };
        assert_eq!(enc(5), vec![5]);
        assert_eq!(enc(127), vec![0x7f]);
        assert_eq!(enc(128), vec![0x80, 0x01]);
        assert_eq!(enc(300), vec![0xac, 0x02]);
    }

    #[test]
    fn redirect_locations_resolve_like_a_browser() {
        assert_eq!(resolve_location("http://h:1/a/b", "/ui/"), "http://h:1/ui/");
        assert_eq!(resolve_location("http://h:1/a/b", "c"), "http://h:1/a/c");
        assert_eq!(resolve_location("http://h:1", "c"), "http://h:1/c");
        assert_eq!(resolve_location("http://h:1/x", "http://o/y"), "http://o/y");
    }

    #[test]
    fn thresholds_hold_status_until_enough_results_agree() {
        let def = CheckDefinition { success_before_passing: 2, failures_before_critical: 3, ..Default::default() };
        let mut t = Thresholds::new(&def);
        assert_eq!(t.observe(Status::Passing), None);
        assert_eq!(t.observe(Status::Passing), Some(Status::Passing));
        assert_eq!(t.observe(Status::Critical), None);
        assert_eq!(t.observe(Status::Critical), None);
        assert_eq!(t.observe(Status::Critical), Some(Status::Critical));
        let mut plain = Thresholds::new(&CheckDefinition::default());
        assert_eq!(plain.observe(Status::Critical), Some(Status::Critical));
        assert_eq!(plain.observe(Status::Passing), Some(Status::Passing));
    }

    #[tokio::test]
    async fn tcp_and_ttl_checks_report() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let runner = Runner::new(tx, 4096);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        runner.start("tcp", &CheckDefinition { tcp: addr, interval_ns: 50_000_000, ..Default::default() }, false);
        let r = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("result").expect("open");
        assert_eq!((r.check_id.as_str(), r.status), ("tcp", Status::Passing));
        runner.stop("tcp");
        runner.start("ttl", &CheckDefinition { ttl_ns: 30_000_000, ..Default::default() }, false);
        let r = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("result").expect("open");
        assert_eq!((r.check_id.as_str(), r.status, r.output.as_str()), ("ttl", Status::Critical, "TTL expired"));
    }

    #[tokio::test]
    async fn scripts_run_only_when_enabled() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let runner = Runner::new(tx, 4096);
        let def = CheckDefinition {
            args: vec!["sh".into(), "-c".into(), "echo hi; exit 1".into()],
            interval_ns: 1_000_000_000,
            ..Default::default()
        };
        runner.start("off", &def, false);
        let r = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("result").expect("open");
        assert_eq!(r.status, Status::Critical);
        runner.start("on", &def, true);
        let r = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("result").expect("open");
        assert_eq!((r.status, r.output.trim()), (Status::Warning, "hi"));
    }
}
