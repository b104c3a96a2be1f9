//! The HTTP API on 8500: Consul's paths, JSON field names, headers and status codes. Requests are
//! parsed into an [`routes::Endpoint`] first; handlers go through `server` for reads and writes;
//! every error becomes a status code in one place ([`HttpError::status`]).

pub mod convert;
mod handlers_agent;
mod handlers_catalog;
mod handlers_kv;
mod handlers_misc;
mod handlers_session;
pub mod routes;
pub mod ui;

use crate::agent::{Agent, AgentError};
use crate::server::{self, blocking_query, effective_wait, Consistency};
use crate::state::{State, WatchSet};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use routes::Endpoint;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    TooManyRequests(String),
    #[error("{0}")]
    Internal(String),
    #[error("{0}")]
    Unavailable(String),
}

impl HttpError {
    pub fn status(&self) -> u16 {
        match self {
            HttpError::BadRequest(_) => 400,
            HttpError::Unauthorized(_) => 401,
            HttpError::Forbidden(_) => 403,
            HttpError::NotFound(_) => 404,
            HttpError::MethodNotAllowed(_) => 405,
            HttpError::Conflict(_) => 409,
            HttpError::TooLarge(_) => 413,
            HttpError::TooManyRequests(_) => 429,
            HttpError::Internal(_) => 500,
            HttpError::Unavailable(_) => 503,
        }
    }
}

impl From<server::Error> for HttpError {
    fn from(e: server::Error) -> Self {
        HttpError::Internal(e.to_string())
    }
}

impl From<AgentError> for HttpError {
    fn from(e: AgentError) -> Self {
        match e {
            AgentError::BadRequest(m) => HttpError::BadRequest(m),
            AgentError::NotFound(m) => HttpError::NotFound(m),
            AgentError::Server(s) => s.into(),
        }
    }
}

impl From<crate::defs::DefError> for HttpError {
    fn from(e: crate::defs::DefError) -> Self {
        HttpError::BadRequest(e.to_string())
    }
}

pub type HttpResult = Result<Reply, HttpError>;

/// The parsed query string.
#[derive(Debug, Default, Clone)]
pub struct Query(pub Vec<(String, String)>);

impl Query {
    pub fn parse(q: Option<&str>) -> Query {
        let mut out = Vec::new();
        for part in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            out.push((percent_decode(&k.replace('+', " ")), percent_decode(&v.replace('+', " "))));
        }
        Query(out)
    }

    pub fn has(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect()
    }

    /// Consul's boolean query flags: present and empty, `true` or `1` is true.
    pub fn flag(&self, key: &str) -> Result<bool, HttpError> {
        match self.get(key) {
            None => Ok(false),
            Some("") | Some("true") | Some("1") | Some("True") | Some("TRUE") | Some("t") => Ok(true),
            Some("false") | Some("0") | Some("False") | Some("FALSE") | Some("f") => Ok(false),
            Some(_) => Err(HttpError::BadRequest(format!("Invalid value for ?{key}"))),
        }
    }
}

pub fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub enum Body {
    Json(serde_json::Value),
    Raw {
        bytes: Bytes,
        content_type: &'static str,
    },
    Stream(tokio::sync::mpsc::Receiver<Bytes>),
    /// Another server's answer, passed on unchanged.
    Forwarded {
        bytes: Bytes,
        content_type: Option<String>,
    },
}

pub struct Reply {
    pub status: u16,
    pub body: Body,
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub fn json<T: Serialize>(v: &T) -> Reply {
        Reply {
            status: 200,
            body: Body::Json(serde_json::to_value(v).unwrap_or(serde_json::Value::Null)),
            headers: vec![],
        }
    }

    pub fn text(status: u16, text: impl Into<String>) -> Reply {
        Reply {
            status,
            body: Body::Raw { bytes: Bytes::from(text.into()), content_type: "text/plain; charset=utf-8" },
            headers: vec![],
        }
    }

    pub fn empty() -> Reply {
        Reply {
            status: 200,
            body: Body::Raw { bytes: Bytes::new(), content_type: "text/plain; charset=utf-8" },
            headers: vec![],
        }
    }

    pub fn with_headers(mut self, headers: Vec<(&'static str, String)>) -> Reply {
        self.headers.extend(headers);
        self
    }

    pub fn header(mut self, k: &'static str, v: impl Into<String>) -> Reply {
        self.headers.push((k, v.into()));
        self
    }
}

/// Everything a handler needs about one request.
pub struct Ctx {
    pub agent: Arc<Agent>,
    pub method: http::Method,
    pub path: String,
    pub query: Query,
    /// The `Accept` header, the only one a handler reads (the rest are not kept: a parked
    /// blocking query should hold as little as possible).
    pub accept: Option<String>,
    pub body: Bytes,
}

/// `?index`, `?wait`, consistency and `?filter` of a read.
pub struct ReadOpts {
    pub index: u64,
    pub wait: Duration,
    pub consistency: Consistency,
    pub filter: Option<crate::filter::Filter>,
}

impl Ctx {
    pub fn read_opts(&self) -> Result<ReadOpts, HttpError> {
        let index = match self.query.get("index") {
            None | Some("") => 0,
            Some(s) => s.parse::<u64>().map_err(|_| HttpError::BadRequest("Invalid index".into()))?,
        };
        let wait = match self.query.get("wait") {
            None | Some("") => None,
            Some(s) => Some(api::duration::parse(s).map_err(|_| HttpError::BadRequest("Invalid wait time".into()))?),
        };
        let stale = self.query.has("stale");
        let consistent = self.query.has("consistent");
        if stale && consistent {
            return Err(HttpError::BadRequest("Cannot specify ?stale with ?consistent, conflicting semantics.".into()));
        }
        if self.query.has("cached") && consistent {
            return Err(HttpError::BadRequest(
                "Cannot specify ?cached with ?consistent, conflicting semantics.".into(),
            ));
        }
        let consistency = if stale {
            Consistency::Stale
        } else if consistent {
            Consistency::Consistent
        } else {
            Consistency::Default
        };
        let filter = match self.query.get("filter") {
            None | Some("") => None,
            Some(f) => Some(crate::filter::parse(f).map_err(HttpError::BadRequest)?),
        };
        let cfg = &self.agent.config;
        Ok(ReadOpts {
            index,
            wait: effective_wait(wait, cfg.default_query_time, cfg.max_query_time),
            consistency,
            filter,
        })
    }

    pub fn json_body(&self) -> Result<serde_json::Value, HttpError> {
        if self.body.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&self.body).map_err(|e| HttpError::BadRequest(format!("Request decode failed: {e}")))
    }

    /// The JSON body with keys normalized to Consul's canonical spelling.
    pub fn normalized_body(&self) -> Result<serde_json::Value, HttpError> {
        Ok(crate::defs::normalize(self.json_body()?))
    }

    /// Runs a read: consistency first, then the blocking query; returns the value and the
    /// X-Consul-* headers. `query` returns (index, value) and registers what it read.
    pub async fn read_value<T>(
        &self,
        query: impl FnMut(&State, &mut WatchSet) -> (u64, T),
    ) -> Result<(Vec<(&'static str, String)>, T, ReadOpts), HttpError> {
        let opts = self.read_opts()?;
        let server = self.agent.server.as_ref().ok_or(server::Error::NoServers)?;
        // Boxed: the leader barrier's RPC state is large and must not be carried by every
        // parked blocking query.
        let meta = Box::pin(server.prepare_read(opts.consistency)).await?;
        let (index, value) = blocking_query(&self.agent.store, opts.index, opts.wait, query).await;
        let headers = vec![
            (api::query::HEADER_INDEX, index.max(1).to_string()),
            (api::query::HEADER_KNOWN_LEADER, meta.known_leader.to_string()),
            (api::query::HEADER_LAST_CONTACT, meta.last_contact.as_millis().to_string()),
        ];
        Ok((headers, value, opts))
    }

    /// [`Ctx::read_value`] answered as JSON, with `?filter` applied.
    pub async fn read<T: Serialize>(&self, query: impl FnMut(&State, &mut WatchSet) -> (u64, T)) -> HttpResult {
        let (headers, value, opts) = self.read_value(query).await?;
        let mut json = serde_json::to_value(&value).map_err(|e| HttpError::Internal(e.to_string()))?;
        if let Some(f) = &opts.filter {
            apply_filter(&mut json, f);
        }
        Ok(Reply { status: 200, body: Body::Json(json), headers })
    }
}

/// Keeps the elements of a list (or the values of a map) that match the filter.
pub fn apply_filter(json: &mut serde_json::Value, f: &crate::filter::Filter) {
    match json {
        serde_json::Value::Array(a) => a.retain(|v| f.matches(v)),
        serde_json::Value::Object(m) => m.retain(|_, v| f.matches(v)),
        _ => {}
    }
}

async fn dispatch(ctx: Ctx, endpoint: Endpoint) -> HttpResult {
    use Endpoint::*;
    match endpoint {
        KvGet(k) => Box::pin(handlers_kv::get(&ctx, &k)).await,
        KvPut(k) => Box::pin(handlers_kv::put(&ctx, &k)).await,
        KvDelete(k) => Box::pin(handlers_kv::delete(&ctx, &k)).await,
        Txn => Box::pin(handlers_kv::txn(&ctx)).await,
        SessionCreate => Box::pin(handlers_session::create(&ctx)).await,
        SessionDestroy(id) => Box::pin(handlers_session::destroy(&ctx, &id)).await,
        SessionRenew(id) => Box::pin(handlers_session::renew(&ctx, &id)).await,
        SessionInfo(id) => Box::pin(handlers_session::info(&ctx, &id)).await,
        SessionNode(n) => Box::pin(handlers_session::node(&ctx, &n)).await,
        SessionList => Box::pin(handlers_session::list(&ctx)).await,
        CatalogRegister => Box::pin(handlers_catalog::register(&ctx)).await,
        CatalogDeregister => Box::pin(handlers_catalog::deregister(&ctx)).await,
        CatalogDatacenters => Ok(Reply::json(&vec![ctx.agent.config.datacenter.clone()])),
        CatalogNodes => Box::pin(handlers_catalog::nodes(&ctx)).await,
        CatalogServices => Box::pin(handlers_catalog::services(&ctx)).await,
        CatalogService(s) => Box::pin(handlers_catalog::service(&ctx, &s, false)).await,
        CatalogConnect(s) => Box::pin(handlers_catalog::service(&ctx, &s, true)).await,
        CatalogGatewayServices(_) | HealthIngress(_) => Box::pin(handlers_catalog::empty_list(&ctx)).await,
        HealthConnect(s) => Box::pin(handlers_catalog::health_service(&ctx, &s, true)).await,
        CatalogNode(n) => Box::pin(handlers_catalog::node(&ctx, &n, false)).await,
        CatalogNodeServices(n) => Box::pin(handlers_catalog::node(&ctx, &n, true)).await,
        HealthNode(n) => Box::pin(handlers_catalog::health_node(&ctx, &n)).await,
        HealthChecks(s) => Box::pin(handlers_catalog::health_checks(&ctx, &s)).await,
        HealthService(s) => Box::pin(handlers_catalog::health_service(&ctx, &s, false)).await,
        HealthState(s) => Box::pin(handlers_catalog::health_state(&ctx, &s)).await,
        AgentSelf => Box::pin(handlers_agent::agent_self(&ctx)).await,
        AgentMembers => Box::pin(handlers_agent::members(&ctx)).await,
        AgentServices => Box::pin(handlers_agent::services(&ctx)).await,
        AgentService(id) => Box::pin(handlers_agent::service(&ctx, &id)).await,
        AgentChecks => Box::pin(handlers_agent::checks(&ctx)).await,
        AgentHealthByName(n) => Box::pin(handlers_agent::health(&ctx, Some(&n), None)).await,
        AgentHealthById(id) => Box::pin(handlers_agent::health(&ctx, None, Some(&id))).await,
        AgentReload => Box::pin(handlers_agent::reload(&ctx)).await,
        AgentMaintenance => Box::pin(handlers_agent::maintenance(&ctx, None)).await,
        AgentJoin(a) => Box::pin(handlers_agent::join(&ctx, &a)).await,
        AgentLeave => Box::pin(handlers_agent::leave(&ctx)).await,
        AgentForceLeave(n) => Box::pin(handlers_agent::force_leave(&ctx, &n)).await,
        AgentServiceRegister => Box::pin(handlers_agent::service_register(&ctx)).await,
        AgentServiceDeregister(id) => Box::pin(handlers_agent::service_deregister(&ctx, &id)).await,
        AgentServiceMaintenance(id) => Box::pin(handlers_agent::maintenance(&ctx, Some(&id))).await,
        AgentCheckRegister => Box::pin(handlers_agent::check_register(&ctx)).await,
        AgentCheckDeregister(id) => Box::pin(handlers_agent::check_deregister(&ctx, &id)).await,
        AgentCheckPass(id) => {
            Box::pin(handlers_agent::check_ttl(&ctx, &id, Some(crate::structs::Status::Passing))).await
        }
        AgentCheckWarn(id) => {
            Box::pin(handlers_agent::check_ttl(&ctx, &id, Some(crate::structs::Status::Warning))).await
        }
        AgentCheckFail(id) => {
            Box::pin(handlers_agent::check_ttl(&ctx, &id, Some(crate::structs::Status::Critical))).await
        }
        AgentCheckUpdate(id) => Box::pin(handlers_agent::check_ttl(&ctx, &id, None)).await,
        AgentMetrics => Box::pin(handlers_misc::metrics(&ctx)).await,
        AgentMonitor => Box::pin(handlers_misc::monitor(&ctx)).await,
        AgentHost => Box::pin(handlers_misc::host(&ctx)).await,
        AgentVersion => Box::pin(handlers_misc::version(&ctx)).await,
        // ACLs are not enforced by this agent; with `acl.enabled` the token calls succeed (the
        // daemon warns at start that nothing is enforced), without it they fail as Consul's do.
        AgentToken(_) if ctx.agent.config.acl_enabled => Ok(Reply::empty()),
        AgentToken(_) => Err(HttpError::Unauthorized("ACL support disabled".into())),
        EventFire(n) => Box::pin(handlers_misc::event_fire(&ctx, &n)).await,
        EventList => Box::pin(handlers_misc::event_list(&ctx)).await,
        StatusLeader => Box::pin(handlers_misc::status_leader(&ctx)).await,
        StatusPeers => Box::pin(handlers_misc::status_peers(&ctx)).await,
        CoordinateDatacenters => Box::pin(handlers_misc::coordinate_datacenters(&ctx)).await,
        CoordinateNodes => Box::pin(handlers_misc::coordinate_nodes(&ctx)).await,
        CoordinateNode(n) => Box::pin(handlers_misc::coordinate_node(&ctx, &n)).await,
        CoordinateUpdate => Ok(Reply::empty()),
        OperatorRaftConfiguration => Box::pin(handlers_misc::raft_configuration(&ctx)).await,
        OperatorRaftPeer => Box::pin(handlers_misc::raft_remove_peer(&ctx)).await,
        OperatorAutopilotConfiguration => Box::pin(handlers_misc::autopilot_configuration(&ctx)).await,
        OperatorAutopilotHealth => Box::pin(handlers_misc::autopilot_health(&ctx)).await,
        OperatorUsage => Box::pin(handlers_misc::usage(&ctx)).await,
        OperatorKeyring => Box::pin(handlers_misc::keyring(&ctx)).await,
        OperatorRaftTransferLeader => Box::pin(handlers_misc::transfer_leader(&ctx)).await,
        SnapshotSave => Box::pin(handlers_misc::snapshot_save(&ctx)).await,
        SnapshotRestore => Box::pin(handlers_misc::snapshot_restore(&ctx)).await,
        QueryList => Ok(Reply::json(&Vec::<serde_json::Value>::new())),
        InternalUiServices => Box::pin(handlers_catalog::ui_services(&ctx)).await,
        InternalUiNodes => Box::pin(handlers_catalog::ui_nodes(&ctx, None)).await,
        InternalUiNode(n) => Box::pin(handlers_catalog::ui_nodes(&ctx, Some(&n))).await,
        Ui(p) => ui::serve(&ctx, &p),
        Index => Ok(if ctx.agent.config.ui {
            Reply {
                status: 301,
                body: Body::Raw { bytes: Bytes::new(), content_type: "text/html" },
                headers: vec![("Location", "/ui/".into())],
            }
        } else {
            Reply::text(200, "Consul Agent")
        }),
    }
}

fn into_response(
    reply: Reply,
    pretty: bool,
) -> hyper::Response<http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>> {
    use http_body_util::BodyExt as _;
    let mut builder = hyper::Response::builder().status(reply.status);
    // Consul reports its ACL default even with ACLs off; clients read it.
    builder = builder.header("X-Consul-Default-Acl-Policy", "allow");
    for (k, v) in &reply.headers {
        builder = builder.header(*k, v);
    }
    let body = match reply.body {
        Body::Json(v) => {
            let mut bytes =
                if pretty { serde_json::to_vec_pretty(&v) } else { serde_json::to_vec(&v) }.unwrap_or_default();
            if pretty {
                bytes.push(b'\n');
            }
            builder = builder.header("Content-Type", "application/json");
            Full::new(Bytes::from(bytes)).boxed()
        }
        Body::Raw { bytes, content_type } => {
            if !bytes.is_empty() || reply.status != 200 {
                builder = builder.header("Content-Type", content_type);
            }
            Full::new(bytes).boxed()
        }
        Body::Forwarded { bytes, content_type } => {
            if let Some(ct) = content_type {
                builder = builder.header("Content-Type", ct);
            }
            Full::new(bytes).boxed()
        }
        Body::Stream(rx) => {
            builder = builder.header("Content-Type", "text/plain; charset=utf-8");
            let stream = futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|b| (Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(b)), rx))
            });
            http_body_util::StreamBody::new(stream).boxed()
        }
    };
    builder.body(body).unwrap_or_else(|_| hyper::Response::new(Full::new(Bytes::new()).boxed()))
}

/// Answers one request of the HTTP API (on the HTTP port, or forwarded to the server port).
pub async fn handle(
    agent: Arc<Agent>,
    req: hyper::Request<Incoming>,
) -> hyper::Response<http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>> {
    agent.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (parts, body) = req.into_parts();
    let method = parts.method;
    let path = percent_decode(parts.uri.path());
    let query = Query::parse(parts.uri.query());
    let accept = parts.headers.get("accept").and_then(|v| v.to_str().ok()).map(str::to_string);
    let hops = parts.headers.get(crate::forward::HEADER_HOPS).and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(0);
    drop(parts.headers);
    let uri = parts.uri;
    let pretty = query.has("pretty") || agent.config.dev;
    let result = match routes::route(&method, &path) {
        Err(e) => Err(e),
        // Boxed so that the connection task holds a pointer, not the body reader's or the
        // largest handler's state, while a blocking query waits.
        Ok(endpoint) => {
            let req = Head { method: method.clone(), path: path.clone(), query, accept, hops, uri };
            Box::pin(prepare_and_dispatch(agent.clone(), req, body, endpoint)).await
        }
    };
    let reply = match result {
        Ok(r) => r,
        Err(e) => {
            let status = e.status();
            if status >= 500 {
                tracing::warn!(method = %method, path = %path, error = %e, "request failed");
            }
            Reply::text(status, e.to_string())
        }
    };
    into_response(reply, pretty)
}

/// What is kept of a request's head.
struct Head {
    method: http::Method,
    path: String,
    query: Query,
    accept: Option<String>,
    hops: u8,
    uri: http::Uri,
}

async fn prepare_and_dispatch(agent: Arc<Agent>, req: Head, body: Incoming, endpoint: Endpoint) -> HttpResult {
    let Head { method, path, query, accept, hops, uri } = req;
    if let Some(dc) = query.get("dc").filter(|d| !d.is_empty()) {
        if !dc.eq_ignore_ascii_case(&agent.config.datacenter) {
            return Err(HttpError::Internal("No path to datacenter".into()));
        }
    }
    // Bodies are capped at the largest thing Consul accepts; more is 413, not memory.
    let limit = agent.config.kv_max_value_size.max(agent.config.txn_max_req_len) * 4 + 1024 * 1024;
    let body = match Box::pin(Limited::new(body, limit).collect()).await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Err(if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                HttpError::TooLarge(format!("Request body too large, max size: {limit} bytes"))
            } else {
                HttpError::BadRequest(format!("reading request body: {e}"))
            })
        }
    };
    let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    if let Some(answer) = Box::pin(crate::forward::route(&agent, &endpoint, &method, &query, pq, &body, hops)).await {
        return answer;
    }
    drop(uri);
    let ctx = Ctx { agent, method, path, query, accept, body };
    Box::pin(dispatch(ctx, endpoint)).await
}

/// Serves the HTTP API on `listener` until shutdown.
pub async fn serve(agent: Arc<Agent>, listener: TcpListener) {
    let mut shutdown = agent.shutdown.subscribe();
    loop {
        let (stream, _peer): (_, SocketAddr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let agent = agent.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let agent = agent.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(agent, req).await) }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            // Watchers multiplex many blocking queries over one HTTP/2 connection; a stream costs
            // the same memory whichever connection carries it, so allow plenty per connection.
            builder.http2().max_concurrent_streams(4096);
            let _ = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_decode_and_flags_parse() {
        let q = Query::parse(Some("recurse&separator=%2F&tag=a&tag=b+c&passing=1&bad=x"));
        assert!(q.has("recurse"));
        assert_eq!(q.get("separator"), Some("/"));
        assert_eq!(q.all("tag"), vec!["a", "b c"]);
        assert_eq!(q.flag("passing"), Ok(true));
        assert_eq!(q.flag("recurse"), Ok(true));
        assert_eq!(q.flag("missing"), Ok(false));
        assert!(q.flag("bad").is_err());
        assert_eq!(percent_decode("a%20b%zz%"), "a b%zz%");
    }
}

/// The Consul version this agent's API matches.
pub fn handlers_version() -> &'static str {
    handlers_agent::CONSUL_VERSION
}

#[cfg(test)]
mod size_tests {
    /// A parked blocking query keeps its handler's future alive; keep that state small (the
    /// benchmark's goal is under 2 KB per waiting query, all costs included).
    #[test]
    fn kv_get_future_stays_small() {
        fn size_of_future<F: std::future::Future>(_: &F) -> usize {
            std::mem::size_of::<F>()
        }
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let _guard = rt.enter();
        let agent_cfg =
            crate::config::Config::from_flags(crate::config::AgentFlags { dev: true, ..Default::default() })
                .expect("config");
        let agent = rt.block_on(crate::agent::Agent::start(agent_cfg)).expect("agent");
        let ctx = super::Ctx {
            agent,
            method: http::Method::GET,
            path: "/v1/kv/x".into(),
            query: super::Query::default(),
            accept: None,
            body: bytes::Bytes::new(),
        };
        let fut = super::handlers_kv::get(&ctx, "x");
        let size = size_of_future(&fut);
        assert!(size < 1024, "kv get future is {size} bytes");
        fn size_of_ret2<A, B, Fut, F: Fn(A, B) -> Fut>(_: F) -> usize {
            std::mem::size_of::<Fut>()
        }
        let handle = size_of_ret2(super::handle);
        let dispatch = size_of_ret2(super::dispatch);
        eprintln!("sizes: handle {handle} dispatch {dispatch} kv_get {size}");
        assert!(handle < 2048, "handle future is {handle} bytes");
        assert!(dispatch < 1024, "dispatch future is {dispatch} bytes");
    }
}
