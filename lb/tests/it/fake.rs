//! Test doubles: a cluster state that fake agents serve over Consul's HTTP API (with blocking
//! queries and `X-Consul-Index`), backends that say who they are and what they saw, and the
//! `lb` binary run as a child process.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

type Handler =
    Arc<dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>> + Send + Sync>;

/// Serves HTTP/1.1 on `listener` until the returned task is aborted; aborting also closes every
/// open connection (the JoinSet aborts its tasks when dropped), like a killed process.
/// A running server; `stop` closes the listener and every open connection before it returns.
struct Serving {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Serving {
    async fn stop(mut self) {
        let _ = self.stop.send(true);
        let _ = (&mut self.task).await;
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn serve(listener: TcpListener, handler: Handler) -> Serving {
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            let stream = tokio::select! {
                _ = stopped.changed() => break,
                r = listener.accept() => match r {
                    Ok((stream, _)) => stream,
                    Err(_) => continue,
                },
            };
            let h = handler.clone();
            conns.spawn(async move {
                let svc = service_fn(move |req| {
                    let h = h.clone();
                    async move { Ok::<_, std::convert::Infallible>(h(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
            while conns.try_join_next().is_some() {}
        }
        // Like a killed process: no listener, and every connection gone before `stop` returns.
        drop(listener);
        conns.shutdown().await;
    });
    Serving { stop, task }
}

fn query_pairs(req: &Request<Incoming>) -> BTreeMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.to_string(), String::new()),
        })
        .collect()
}

#[derive(Debug, Clone)]
struct Instance {
    service: String,
    id: String,
    ip: String,
    port: u16,
    tags: Vec<String>,
    weight: i64,
    status: String,
}

#[derive(Debug, Clone)]
struct Member {
    ip: String,
    status: i32,
}

#[derive(Debug, Default)]
struct State {
    members: Vec<Member>,
    instances: Vec<Instance>,
    index: u64,
}

/// What every fake agent of one test answers from, like the replicated state of a cluster.
pub struct Cluster {
    state: Mutex<State>,
    index: watch::Sender<u64>,
    /// Requests answered on paths other than discovery's (the traffic lb forwards).
    requests: AtomicU64,
}

impl Cluster {
    pub fn new() -> Arc<Cluster> {
        Arc::new(Cluster {
            state: Mutex::new(State { index: 1, ..Default::default() }),
            index: watch::channel(1).0,
            requests: AtomicU64::new(0),
        })
    }

    fn change(&self, f: impl FnOnce(&mut State)) {
        let mut s = self.state.lock().unwrap();
        f(&mut s);
        s.index += 1;
        self.index.send_replace(s.index);
    }

    pub fn register(&self, service: &str, id: &str, b: &Backend, tags: &[&str], weight: i64) {
        self.register_addr(service, id, &b.ip, b.port, tags, weight);
    }

    pub fn register_addr(&self, service: &str, id: &str, ip: &str, port: u16, tags: &[&str], weight: i64) {
        let inst = Instance {
            service: service.into(),
            id: id.into(),
            ip: ip.into(),
            port,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            weight,
            status: "passing".into(),
        };
        self.change(|s| s.instances.push(inst));
    }

    pub fn set_status(&self, id: &str, status: &str) {
        self.change(|s| s.instances.iter_mut().filter(|i| i.id == id).for_each(|i| i.status = status.into()));
    }

    pub fn set_member_status(&self, ip: &str, status: i32) {
        self.change(|s| s.members.iter_mut().filter(|m| m.ip == ip).for_each(|m| m.status = status));
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    pub async fn wait_requests(&self, n: u64) {
        wait_for(&format!("{n} forwarded requests"), || self.requests() >= n).await;
    }

    fn members_json(&self) -> serde_json::Value {
        let s = self.state.lock().unwrap();
        s.members
            .iter()
            .map(|m| {
                json!({"Name": format!("agent-{}", m.ip), "Addr": m.ip, "Port": 8301, "Status": m.status,
                       "Tags": {"dc": "dc1", "role": "consul"}})
            })
            .collect()
    }

    fn services_json(&self) -> (serde_json::Value, u64) {
        let s = self.state.lock().unwrap();
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for i in &s.instances {
            let tags = map.entry(i.service.clone()).or_default();
            tags.extend(i.tags.iter().cloned());
            tags.sort();
            tags.dedup();
        }
        (json!(map), s.index)
    }

    fn health_json(&self, service: &str, passing_only: bool) -> (serde_json::Value, u64) {
        let s = self.state.lock().unwrap();
        let entries: Vec<serde_json::Value> = s
            .instances
            .iter()
            .filter(|i| i.service == service && (!passing_only || i.status == "passing"))
            .map(|i| {
                json!({
                    "Node": {"Node": format!("node-{}", i.ip), "Address": i.ip, "Datacenter": "dc1"},
                    "Service": {"ID": i.id, "Service": i.service, "Tags": i.tags, "Port": i.port, "Address": "",
                                "Weights": {"Passing": i.weight, "Warning": 1}},
                    "Checks": [{"CheckID": "serfHealth", "Status": "passing"},
                               {"CheckID": format!("service:{}", i.id), "Status": i.status}],
                })
            })
            .collect();
        (json!(entries), s.index)
    }

    /// A blocking query: with `?index=` at or past the current index, wait for a change or `wait`.
    async fn block(&self, q: &BTreeMap<String, String>) {
        let Some(index) = q.get("index").and_then(|i| i.parse::<u64>().ok()) else {
            return;
        };
        let wait = q
            .get("wait")
            .and_then(|w| w.strip_suffix("ms"))
            .and_then(|ms| ms.parse().ok())
            .map(Duration::from_millis)
            .unwrap_or(Duration::from_secs(5));
        let mut rx = self.index.subscribe();
        let _ = tokio::time::timeout(wait, rx.wait_for(|cur| *cur > index)).await;
    }
}

/// A fake agent: one address serving the cluster's state.
pub struct FakeAgent {
    pub ip: String,
    pub port: u16,
    task: Mutex<Option<Serving>>,
    paused: Arc<std::sync::atomic::AtomicBool>,
}

impl FakeAgent {
    /// Starts agents on `ips`, all on one port (as real agents on different hosts are).
    pub async fn start_many(cluster: &Arc<Cluster>, ips: &[String]) -> Vec<FakeAgent> {
        let listeners = 'retry: loop {
            let first = TcpListener::bind((ips[0].as_str(), 0)).await.expect("bind agent");
            let port = first.local_addr().expect("local addr").port();
            let mut ls = vec![first];
            for ip in &ips[1..] {
                match TcpListener::bind((ip.as_str(), port)).await {
                    Ok(l) => ls.push(l),
                    Err(_) => continue 'retry,
                }
            }
            break ls;
        };
        let mut out = Vec::new();
        for (ip, listener) in ips.iter().zip(listeners) {
            let port = listener.local_addr().expect("local addr").port();
            cluster.change(|s| s.members.push(Member { ip: ip.clone(), status: 1 }));
            let c = cluster.clone();
            let me = ip.clone();
            let paused = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let p = paused.clone();
            let handler: Handler = Arc::new(move |req| {
                let c = c.clone();
                let me = me.clone();
                let p = p.clone();
                Box::pin(async move {
                    if p.load(Ordering::SeqCst) {
                        // Like SIGSTOP: the connection is accepted, no answer ever comes.
                        std::future::pending::<()>().await;
                    }
                    agent_answer(&c, &me, req).await
                })
            });
            out.push(FakeAgent { ip: ip.clone(), port, task: Mutex::new(Some(serve(listener, handler))), paused });
        }
        out
    }

    pub fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    /// Like SIGSTOP: connections are still accepted, but no request is answered.
    pub fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
    }

    /// Like kill -9: the listener and every connection are closed when this returns.
    pub async fn kill(&self) {
        let serving = self.task.lock().unwrap().take();
        if let Some(s) = serving {
            s.stop().await;
        }
    }
}

fn json_response(body: &serde_json::Value, index: Option<u64>) -> Response<Full<Bytes>> {
    let mut b = Response::builder().header("Content-Type", "application/json");
    if let Some(i) = index {
        b = b.header("X-Consul-Index", i.to_string()).header("X-Consul-KnownLeader", "true");
    }
    b.body(Full::new(Bytes::from(body.to_string()))).expect("response")
}

async fn agent_answer(c: &Cluster, me: &str, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let q = query_pairs(&req);
    if path == "/v1/agent/members" {
        return json_response(&c.members_json(), None);
    }
    if path == "/v1/catalog/services" {
        c.block(&q).await;
        let (v, i) = c.services_json();
        return json_response(&v, Some(i));
    }
    if let Some(name) = path.strip_prefix("/v1/health/service/") {
        c.block(&q).await;
        let (v, i) = c.health_json(name, q.contains_key("passing"));
        return json_response(&v, Some(i));
    }
    c.requests.fetch_add(1, Ordering::SeqCst);
    json_response(&json!(format!("agent {me}")), Some(1))
}

/// A backend that answers with its name and echoes what it received in headers.
pub struct Backend {
    pub name: String,
    pub ip: String,
    pub port: u16,
    task: Mutex<Option<Serving>>,
}

impl Backend {
    pub async fn start(ip: &str, name: &str) -> Backend {
        let listener = TcpListener::bind((ip, 0)).await.expect("bind backend");
        let port = listener.local_addr().expect("local addr").port();
        let me = name.to_string();
        let handler: Handler = Arc::new(move |req| {
            let me = me.clone();
            Box::pin(async move {
                let path = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
                let xff = req.headers().get("x-forwarded-for").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                Response::builder()
                    .header("X-Seen-Path", path)
                    .header("X-Seen-Xff", xff)
                    .body(Full::new(Bytes::from(me)))
                    .expect("response")
            })
        });
        Backend { name: name.into(), ip: ip.into(), port, task: Mutex::new(Some(serve(listener, handler))) }
    }

    /// The listener and every connection are closed when this returns.
    pub async fn stop(&self) {
        let serving = self.task.lock().unwrap().take();
        if let Some(s) = serving {
            s.stop().await;
        }
    }
}

/// The `lb` binary as a child process, killed on drop. Its stderr goes to a file, printed if the
/// test fails.
pub struct Lb {
    pub addr: String,
    child: std::process::Child,
    config: Option<std::path::PathBuf>,
    stderr: tempfile::NamedTempFile,
}

impl Lb {
    pub async fn start(ip: &str, agents: &[String], config: Option<&str>) -> Lb {
        let port = std::net::TcpListener::bind((ip, 0)).expect("probe port").local_addr().expect("addr").port();
        let lb = Lb::spawn(&format!("{ip}:{port}"), agents, config, &[]);
        lb.wait_ready().await;
        lb
    }

    /// Starts the binary without waiting for it; `extra` flags are appended.
    pub fn spawn(addr: &str, agents: &[String], config: Option<&str>, extra: &[&str]) -> Lb {
        let ip = addr.rsplit_once(':').map(|(ip, _)| ip).unwrap_or(addr);
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_lb"));
        cmd.arg(format!("-listen={addr}")).arg("-log-level=warn").arg("-threads=2");
        for a in agents {
            cmd.arg("-consul-addr").arg(a);
        }
        let mut path = None;
        if let Some(text) = config {
            let p = std::env::temp_dir().join(format!("lb-it-{ip}-{}.toml", std::process::id()));
            std::fs::write(&p, text).expect("write config");
            cmd.arg(format!("-config={}", p.display()));
            path = Some(p);
        }
        // Separate upgrade sockets and pid files so parallel tests do not collide.
        cmd.arg(format!("-upgrade-sock={}", std::env::temp_dir().join(format!("lb-it-{ip}.sock")).display()));
        cmd.arg(format!("-pid-file={}", std::env::temp_dir().join(format!("lb-it-{ip}.pid")).display()));
        cmd.args(extra);
        // Only what a test passes: a token in the developer's environment would change what lb sees.
        cmd.env_remove("CONSUL_HTTP_TOKEN").env_remove("CONSUL_HTTP_TOKEN_FILE");
        cmd.stdout(std::process::Stdio::null());
        let stderr = tempfile::NamedTempFile::new().expect("stderr file");
        cmd.stderr(stderr.reopen().expect("reopen stderr file"));
        let child = cmd.spawn().expect("start lb");
        Lb { addr: addr.to_string(), child, config: path, stderr }
    }

    pub async fn wait_ready(&self) {
        let a = self.addr.clone();
        wait_for_async("lb to answer /_lb/health", || {
            let a = a.clone();
            async move { get(&a, None, "/_lb/health").await.status == 200 }
        })
        .await;
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Replaces the config file this lb was started with.
    pub fn write_config(&self, text: &str) {
        let path = self.config.as_ref().expect("lb was started without a config file");
        std::fs::write(path, text).expect("write config");
    }

    /// Sends a signal (`HUP`, `QUIT`, ...) to the process.
    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill").arg(format!("-{sig}")).arg(self.pid().to_string()).status();
        assert!(ok.is_ok_and(|s| s.success()), "kill -{sig} {}", self.pid());
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Waits for the process to exit by itself and returns how it ended.
    pub async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for lb") {
                return status;
            }
            assert!(Instant::now() < deadline, "lb {} still running after {within:?}", self.pid());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// What the process has written to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr.path()).unwrap_or_else(|e| format!("(stderr unreadable: {e})"))
    }

    pub async fn status(&self) -> serde_json::Value {
        let r = get(&self.addr, None, "/_lb/status").await;
        serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("status is not JSON ({e}): {r:?}"))
    }

    /// Waits until `route` lists exactly `n` instances.
    pub async fn wait_instances(&self, route: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let status = self.status().await;
            let got = status["Routes"]
                .as_array()
                .and_then(|rs| rs.iter().find(|r| r["Route"] == route))
                .and_then(|r| r["Instances"].as_array().map(|a| a.len()));
            if got == Some(n) {
                return;
            }
            assert!(Instant::now() < deadline, "route {route} never had {n} instances: {status}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

impl Drop for Lb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- stderr of lb {} ({})\n{}", self.pid(), self.addr, self.stderr());
        }
        if let Some(p) = &self.config {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// One route of a status document.
pub fn route<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["Routes"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["Route"] == name))
        .unwrap_or_else(|| panic!("no route {name} in {status}"))
}

#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> String {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
    }
}

fn client() -> &'static Client<HttpConnector, Full<Bytes>> {
    static CLIENT: OnceLock<Client<HttpConnector, Full<Bytes>>> = OnceLock::new();
    CLIENT.get_or_init(|| Client::builder(TokioExecutor::new()).build(HttpConnector::new()))
}

/// A GET through lb; transport errors come back as status 0 with the error as body.
pub async fn get(addr: &str, host: Option<&str>, path: &str) -> Resp {
    request("GET", addr, host, path, "").await
}

pub async fn request(method: &str, addr: &str, host: Option<&str>, path: &str, body: &str) -> Resp {
    let mut b = Request::builder().method(method).uri(format!("http://{addr}{path}"));
    if let Some(h) = host {
        b = b.header("Host", h);
    }
    let req = b.body(Full::new(Bytes::from(body.to_string()))).expect("request");
    let fut = async {
        let resp = client().request(req).await.map_err(|e| format!("{e:?}"))?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok::<_, String>(Resp {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    };
    match tokio::time::timeout(Duration::from_secs(10), fut).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Resp { status: 0, headers: Default::default(), body: e },
        Err(_) => Resp { status: 0, headers: Default::default(), body: "timed out".into() },
    }
}

pub async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

pub async fn wait_for_async<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
