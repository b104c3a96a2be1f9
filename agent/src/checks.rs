//! Runs the health checks of this agent's services: TTL, HTTP, TCP, UDP, script and gRPC. Each
//! check is one task; its results go out as [`CheckResult`]s for the agent to record and sync.
//! Knows nothing about Raft or the catalog.
//!
//! HTTPS checks and gRPC checks with `GRPCUseTLS` speak TLS as Consul's do: `TLSSkipVerify`
//! accepts any certificate, `TLSServerName` is the name checked (and sent as SNI) instead of the
//! URL's host, and with `enable_agent_tls_for_checks` the agent's CA is trusted and its own
//! certificate presented to targets that ask for one ([`crate::tls::CheckIdentity`]); without it,
//! the system's roots and no certificate.

use crate::structs::{CheckDefinition, Status};
use crate::tls::CheckIdentity;
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

type HttpClient = hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;
type HttpsClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// What TLS checks trust and present; replaced when the certificates are read again.
type SharedIdentity = std::sync::Arc<parking_lot::RwLock<CheckIdentity>>;

/// A running check: its task and the channel that touches a TTL check.
type Task = (tokio::task::JoinHandle<()>, mpsc::UnboundedSender<Control>);

pub struct Runner {
    results: mpsc::UnboundedSender<CheckResult>,
    tasks: Mutex<HashMap<String, Task>>,
    http: HttpClient,
    identity: SharedIdentity,
    output_max: usize,
    /// Set by [`Runner::offline`]: checks that would reach the network are registered but
    /// never run.
    offline: std::sync::atomic::AtomicBool,
}

fn connector() -> hyper_util::client::legacy::connect::HttpConnector {
    let mut c = hyper_util::client::legacy::connect::HttpConnector::new();
    c.set_connect_timeout(Some(Duration::from_secs(10)));
    c
}

impl Runner {
    pub fn new(results: mpsc::UnboundedSender<CheckResult>, output_max: usize) -> Runner {
        let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector());
        Runner {
            results,
            tasks: Mutex::new(HashMap::new()),
            http,
            identity: Default::default(),
            output_max,
            offline: Default::default(),
        }
    }

    /// The CA and certificate TLS checks use from their next run on (start, and after a reload
    /// read the certificates again).
    pub fn set_identity(&self, identity: CheckIdentity) {
        *self.identity.write() = identity;
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
            identity: self.identity.clone(),
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
    http: HttpClient,
    identity: SharedIdentity,
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
        // Built once per run, when the URL (or a redirect) first asks for https.
        let mut https: Option<HttpsClient> = None;
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
                let sent = if target.starts_with("https://") {
                    if https.is_none() {
                        https = Some(self.https_client().map_err(|e| format!("{method} {url}: {e}"))?);
                    }
                    match &https {
                        Some(c) => c.request(req).await,
                        None => unreachable!("set above"),
                    }
                } else {
                    self.http.request(req).await
                };
                let resp = sent.map_err(|e| format!("{method} {url}: {}", error_text(&e)))?;
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

    /// The HTTPS client of one run: the shared identity, this check's `TLSSkipVerify` and
    /// `TLSServerName`. HTTP/1.1 only: a check opens one connection per run anyway, and a
    /// client certificate the target refuses after a TLS 1.3 handshake then shows in the output.
    fn https_client(&self) -> Result<HttpsClient, String> {
        let identity = self.identity.read().clone();
        let config =
            crate::tls::check_client_config(&identity, self.def.tls_skip_verify, &[]).map_err(|e| e.to_string())?;
        let mut http = connector();
        http.enforce_http(false);
        let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config).https_or_http();
        let builder = match self.server_name()? {
            Some(name) => builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name)),
            None => builder,
        };
        let connector = builder.enable_http1().wrap_connector(http);
        Ok(hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector))
    }

    /// `TLSServerName`, if the check sets one.
    fn server_name(&self) -> Result<Option<rustls::pki_types::ServerName<'static>>, String> {
        let name = self.def.tls_server_name.trim();
        if name.is_empty() {
            return Ok(None);
        }
        rustls::pki_types::ServerName::try_from(name.to_string())
            .map(Some)
            .map_err(|_| format!("invalid TLSServerName {name:?}"))
    }

    /// Opens the gRPC check's connection: TCP, then TLS (ALPN h2) with `GRPCUseTLS`.
    async fn grpc_stream(&self, addr: &str) -> Result<Box<dyn GrpcIo>, String> {
        let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("dial tcp {addr}: {e}"))?;
        if !self.def.grpc_use_tls {
            return Ok(Box::new(stream));
        }
        let identity = self.identity.read().clone();
        let config = crate::tls::check_client_config(&identity, self.def.tls_skip_verify, &[b"h2"])
            .map_err(|e| e.to_string())?;
        let name = match self.server_name()? {
            Some(n) => n,
            None => {
                let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                rustls::pki_types::ServerName::try_from(host.to_string())
                    .map_err(|_| format!("invalid server name {host:?}"))?
            }
        };
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, stream)
            .await
            .map_err(|e| error_text(&e))?;
        Ok(Box::new(tls))
    }

    /// The standard `grpc.health.v1.Health/Check` call over HTTP/2, in plain text or, with
    /// `GRPCUseTLS`, over TLS.
    async fn grpc(&self) -> (Status, String) {
        let target = self.def.grpc.clone();
        let (addr, service) = match target.split_once('/') {
            Some((a, s)) => (a.to_string(), s.to_string()),
            None => (target.clone(), String::new()),
        };
        let scheme = if self.def.grpc_use_tls { "https" } else { "http" };
        let fut = async {
            let stream = self.grpc_stream(&addr).await?;
            let (mut sender, conn) = hyper::client::conn::http2::handshake(
                hyper_util::rt::TokioExecutor::new(),
                hyper_util::rt::TokioIo::new(stream),
            )
            .await
            .map_err(|e| error_text(&e))?;
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
            let req = http::Request::post(format!("{scheme}://{addr}/grpc.health.v1.Health/Check"))
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

/// A gRPC check's connection: plain TCP or TLS over it.
trait GrpcIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> GrpcIo for T {}

/// An error's text for a check's output: a TLS failure in Go's words (`tls: failed to verify
/// certificate: x509: certificate signed by unknown authority`), else the whole chain.
fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    api::tls::go_tls_text(e).unwrap_or_else(|| crate::peer_auth::chain(e))
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

    /// A CA, a server certificate (localhost, 127.0.0.1, server.dc1.consul) and a client one.
    struct Pki {
        _dir: tempfile::TempDir,
        ca: std::path::PathBuf,
        server: (std::path::PathBuf, std::path::PathBuf),
        client: (std::path::PathBuf, std::path::PathBuf),
    }

    fn pki() -> Pki {
        use crate::tls::certs::{create_ca, create_cert, CaOptions, CertOptions, Kind};
        let dir = tempfile::tempdir().expect("tempdir");
        let o = CaOptions {
            days: 1,
            domain: "consul".into(),
            common_name: String::new(),
            name_constraint: false,
            additional_name_constraints: vec![],
        };
        let (ca, ca_key) = create_ca(dir.path(), &o).expect("ca");
        let cert = |kind| {
            let o = CertOptions {
                kind,
                dc: "dc1".into(),
                domain: "consul".into(),
                days: 1,
                node: String::new(),
                ca: ca.clone(),
                ca_key: ca_key.clone(),
                dns_names: vec![],
                ip_addresses: vec![],
            };
            create_cert(dir.path(), &o).expect("cert")
        };
        let server = cert(Kind::Server);
        let client = cert(Kind::Client);
        Pki { _dir: dir, ca, server, client }
    }

    /// A TLS server on 127.0.0.1 that requires a client certificate from the CA, answering HTTP
    /// with 200 and gRPC health checks with SERVING.
    async fn tls_target(p: &Pki) -> std::net::SocketAddr {
        let settings = crate::tls::TlsSettings {
            ca_file: Some(p.ca.clone()),
            cert_file: Some(p.server.0.clone()),
            key_file: Some(p.server.1.clone()),
            verify_incoming: true,
            ..Default::default()
        };
        let tls = crate::tls::Tls::load(crate::tls::TlsConfig { https: settings, ..Default::default() }).expect("tls");
        let acceptor = tls.https_acceptor().expect("acceptor");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else { return };
                    let svc = hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                        type Frames = Vec<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>>;
                        let frames: Frames = if req.uri().path() == "/grpc.health.v1.Health/Check" {
                            let mut trailers = http::HeaderMap::new();
                            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                            vec![
                                Ok(hyper::body::Frame::data(Bytes::from_static(&[0, 0, 0, 0, 2, 0x08, 1]))),
                                Ok(hyper::body::Frame::trailers(trailers)),
                            ]
                        } else {
                            vec![Ok(hyper::body::Frame::data(Bytes::from_static(b"ok")))]
                        };
                        Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::StreamBody::new(
                            futures::stream::iter(frames),
                        )))
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        addr
    }

    async fn once(runner: &Runner, rx: &mut mpsc::UnboundedReceiver<CheckResult>, def: CheckDefinition) -> CheckResult {
        runner.start("c", &CheckDefinition { interval_ns: 60_000_000_000, ..def }, false);
        let r = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("a result").expect("open");
        runner.stop("c");
        r
    }

    #[tokio::test]
    async fn https_and_grpc_checks_speak_tls_as_consuls_do() {
        let p = pki();
        let addr = tls_target(&p).await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let runner = Runner::new(tx, 4096);
        let url = format!("https://{addr}/health");
        let http = |extra: CheckDefinition| CheckDefinition { http: url.clone(), ..extra };

        // Without enable_agent_tls_for_checks: the system's roots, which do not know our CA.
        let r = once(&runner, &mut rx, http(CheckDefinition::default())).await;
        assert_eq!(r.status, Status::Critical);
        assert!(r.output.contains("x509: certificate signed by unknown authority"), "{}", r.output);
        // TLSSkipVerify gets past the CA, but this target wants a client certificate.
        let r = once(&runner, &mut rx, http(CheckDefinition { tls_skip_verify: true, ..Default::default() })).await;
        assert_eq!(r.status, Status::Critical);
        assert!(r.output.contains("certificate required"), "{}", r.output);

        // With the agent's CA and certificate.
        let agent = crate::tls::TlsSettings {
            ca_file: Some(p.ca.clone()),
            cert_file: Some(p.client.0.clone()),
            key_file: Some(p.client.1.clone()),
            ..Default::default()
        };
        runner.set_identity(CheckIdentity::load(&agent).expect("identity"));
        let r = once(&runner, &mut rx, http(CheckDefinition::default())).await;
        assert_eq!(
            (r.status, r.output.as_str()),
            (Status::Passing, format!("HTTP GET {url}: 200 OK Output: ok").as_str())
        );
        // TLSServerName replaces the URL's host in the certificate check.
        let named = |n: &str| http(CheckDefinition { tls_server_name: n.into(), ..Default::default() });
        assert_eq!(once(&runner, &mut rx, named("server.dc1.consul")).await.status, Status::Passing);
        let r = once(&runner, &mut rx, named("web.example.com")).await;
        assert_eq!(r.status, Status::Critical);
        assert!(r.output.contains("not web.example.com"), "{}", r.output);

        // gRPC health checks over TLS (GRPCUseTLS), and refused in plain text.
        let grpc = |tls| CheckDefinition { grpc: addr.to_string(), grpc_use_tls: tls, ..Default::default() };
        let r = once(&runner, &mut rx, grpc(true)).await;
        assert_eq!((r.status, r.output.as_str()), (Status::Passing, format!("gRPC check {addr}: success").as_str()));
        assert_eq!(once(&runner, &mut rx, grpc(false)).await.status, Status::Critical);
    }
}
