//! A stand-in for the agent in unit tests: a tiny HTTP server answering the few read endpoints
//! `template` uses, with Consul's JSON, `X-Consul-Index` and real blocking (`?index=&wait=`).
//! Tests change its data and wait for the files to follow.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct State {
    index: u64,
    /// service name → ServiceEntry JSON values.
    services: BTreeMap<String, Vec<Value>>,
    kv: BTreeMap<String, String>,
    down: bool,
    requests: u64,
}

#[derive(Clone)]
pub struct FakeAgent {
    pub addr: String,
    state: Arc<Mutex<State>>,
    changed: Arc<tokio::sync::watch::Sender<u64>>,
}

/// A `ServiceEntry` with one check of `status`.
pub fn entry(node: &str, addr: &str, id: &str, name: &str, port: u16, status: &str) -> Value {
    json!({
        "Node": {"ID": format!("id-{node}"), "Node": node, "Address": addr, "Datacenter": "dc1"},
        "Service": {"ID": id, "Service": name, "Port": port, "Address": "", "Tags": [], "Meta": {}},
        "Checks": [{"Node": node, "CheckID": format!("service:{id}"), "Name": "check", "Status": status,
                    "ServiceID": id, "ServiceName": name}],
    })
}

impl FakeAgent {
    /// Listens on `ip` with a free port.
    pub async fn start(ip: &str) -> FakeAgent {
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("bind fake agent");
        let addr = listener.local_addr().expect("local addr").to_string();
        let (tx, _) = tokio::sync::watch::channel(1);
        let agent = FakeAgent {
            addr,
            state: Arc::new(Mutex::new(State { index: 1, ..Default::default() })),
            changed: Arc::new(tx),
        };
        let a = agent.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let a = a.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let a = a.clone();
                        async move { Ok::<_, std::convert::Infallible>(a.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        agent
    }

    fn bump(&self, f: impl FnOnce(&mut State)) {
        let mut s = self.state.lock().unwrap();
        f(&mut s);
        s.index += 1;
        let i = s.index;
        drop(s);
        self.changed.send_replace(i);
    }

    pub fn set_service(&self, name: &str, entries: Vec<Value>) {
        self.bump(|s| {
            s.services.insert(name.to_string(), entries);
        });
    }

    pub fn put_kv(&self, key: &str, value: &str) {
        self.bump(|s| {
            s.kv.insert(key.to_string(), value.to_string());
        });
    }

    /// While down, every request answers 500.
    pub fn set_down(&self, down: bool) {
        self.bump(|s| s.down = down);
    }

    pub fn requests(&self) -> u64 {
        self.state.lock().unwrap().requests
    }

    async fn handle(&self, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        let query: BTreeMap<String, String> = req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (p.to_string(), String::new()),
            })
            .collect();
        let wanted: u64 = query.get("index").and_then(|i| i.parse().ok()).unwrap_or(0);
        let wait = query
            .get("wait")
            .and_then(|w| api::duration::parse(w).ok())
            .unwrap_or(Duration::from_secs(5))
            .min(Duration::from_secs(5));
        let mut rx = self.changed.subscribe();
        if wanted > 0 && *rx.borrow() <= wanted {
            let _ = tokio::time::timeout(wait, rx.wait_for(|i| *i > wanted)).await;
        }
        let s = {
            let mut s = self.state.lock().unwrap();
            s.requests += 1;
            if s.down {
                return reply(500, 0, json!("agent is down"));
            }
            (s.index, s.services.clone(), s.kv.clone())
        };
        let (index, services, kv) = s;
        if let Some(name) = path.strip_prefix("/v1/health/service/") {
            let passing_only = query.contains_key("passing");
            let entries: Vec<Value> = services
                .get(name)
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|e| {
                    !passing_only || e["Checks"].as_array().into_iter().flatten().all(|c| c["Status"] == "passing")
                })
                .collect();
            return reply(200, index, Value::from(entries));
        }
        if path == "/v1/catalog/services" {
            let m: serde_json::Map<String, Value> = services.keys().map(|k| (k.clone(), json!([]))).collect();
            return reply(200, index, Value::Object(m));
        }
        if let Some(key) = path.strip_prefix("/v1/kv/") {
            use base64::Engine;
            let pair = |k: &String, v: &String| json!({"Key": k, "Value": base64::engine::general_purpose::STANDARD.encode(v), "ModifyIndex": index});
            let found: Vec<Value> = if query.contains_key("recurse") {
                kv.iter().filter(|(k, _)| k.starts_with(key)).map(|(k, v)| pair(k, v)).collect()
            } else {
                kv.get_key_value(key).map(|(k, v)| vec![pair(k, v)]).unwrap_or_default()
            };
            if found.is_empty() {
                return reply(404, index, Value::Null);
            }
            return reply(200, index, Value::from(found));
        }
        reply(404, index, Value::Null)
    }
}

fn reply(status: u16, index: u64, body: Value) -> Response<Full<Bytes>> {
    let body = if body.is_null() { Bytes::new() } else { Bytes::from(body.to_string()) };
    Response::builder()
        .status(status)
        .header("X-Consul-Index", index.to_string())
        .header("Content-Type", "application/json")
        .body(Full::new(body))
        .expect("static response")
}

/// Waits until `cond` holds (checked every 20 ms), at most `limit`.
pub async fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The contents of a file, or "" while it does not exist.
pub fn read(p: &std::path::Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}
