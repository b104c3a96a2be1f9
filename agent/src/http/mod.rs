//! The HTTP API on 8500: Consul's paths, JSON field names, headers and status codes. Requests are
//! parsed into an [`routes::Endpoint`] first; handlers go through `server` for reads and writes;
//! every error becomes a status code in one place ([`HttpError::status`]).

mod acl_filter;
pub mod convert;
mod handlers_acl;
mod handlers_agent;
mod handlers_catalog;
mod handlers_connect;
mod handlers_kv;
mod handlers_misc;
mod handlers_query;
mod handlers_session;
pub mod limits;
pub mod routes;
pub mod shape;
pub mod ui;

use crate::agent::{Agent, AgentError};
use crate::server::{self, blocking_query, effective_wait, Consistency};
use crate::state::{State, WatchSet};
use bytes::Bytes;
use futures::FutureExt as _;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use routes::Endpoint;
use serde::Serialize;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    BadRequest(String),
    /// A request head Go's server refuses before routing; the connection is closed after it.
    #[error("400 Bad Request: {0}")]
    BadHead(&'static str),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("method {method} not allowed")]
    MethodNotAllowed { method: String, allow: String },
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
            HttpError::BadRequest(_) | HttpError::BadHead(_) => 400,
            HttpError::Unauthorized(_) => 401,
            HttpError::Forbidden(_) => 403,
            HttpError::NotFound(_) => 404,
            HttpError::MethodNotAllowed { .. } => 405,
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

impl From<crate::acl::AclError> for HttpError {
    fn from(e: crate::acl::AclError) -> Self {
        use crate::acl::AclError;
        match e {
            AclError::Disabled => HttpError::Unauthorized(e.to_string()),
            AclError::NotFound | AclError::Denied(_) => HttpError::Forbidden(e.to_string()),
            AclError::Unavailable(m) => HttpError::Internal(m),
        }
    }
}

impl From<AgentError> for HttpError {
    fn from(e: AgentError) -> Self {
        match e {
            AgentError::BadRequest(m) => HttpError::BadRequest(m),
            AgentError::NotFound(m) => HttpError::NotFound(m),
            AgentError::Server(s) => s.into(),
            AgentError::ScriptsDisabled(_) => HttpError::Internal(e.to_string()),
        }
    }
}

impl From<crate::defs::DefError> for HttpError {
    fn from(e: crate::defs::DefError) -> Self {
        HttpError::BadRequest(e.to_string())
    }
}

pub type HttpResult = Result<Reply, HttpError>;

/// The parsed query string in one allocation: the decoded keys and values back to back, then
/// where each parameter's key and its value end (two native-endian `u32`s per parameter). A
/// parked blocking query keeps its query.
#[derive(Debug, Default, Clone)]
pub struct Query {
    buf: Box<[u8]>,
    params: u32,
}

impl Query {
    pub fn parse(q: Option<&str>) -> Query {
        let mut text = String::new();
        let mut ends: Vec<u32> = Vec::new();
        for part in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            // A request's head is far below 4 GiB (hyper and h2 bound it), so the ends fit.
            text.push_str(&percent_decode(&k.replace('+', " ")));
            ends.push(text.len() as u32);
            text.push_str(&percent_decode(&v.replace('+', " ")));
            ends.push(text.len() as u32);
        }
        let mut buf = text.into_bytes();
        buf.reserve_exact(ends.len() * 4);
        for end in &ends {
            buf.extend_from_slice(&end.to_ne_bytes());
        }
        Query { buf: buf.into_boxed_slice(), params: (ends.len() / 2) as u32 }
    }

    fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        let (text, ends) = self.buf.split_at(self.buf.len() - self.params as usize * 8);
        // Always UTF-8: the text was a `String`, cut only where its pieces were joined.
        let text = std::str::from_utf8(text).unwrap_or_default();
        let mut start = 0;
        ends.chunks_exact(8).map(move |c| {
            let key_end = (u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) as usize).min(text.len());
            let end = (u32::from_ne_bytes([c[4], c[5], c[6], c[7]]) as usize).clamp(key_end, text.len());
            let pair = (text.get(start..key_end).unwrap_or_default(), text.get(key_end..end).unwrap_or_default());
            start = end;
            pair
        })
    }

    pub fn has(&self, key: &str) -> bool {
        self.pairs().any(|(k, _)| k == key)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    pub fn all(&self, key: &str) -> Vec<&str> {
        self.pairs().filter(|(k, _)| *k == key).map(|(_, v)| v).collect()
    }

    /// The query as Go's `url.Values.Encode` writes it: sorted by key, each pair escaped.
    pub fn encode_sorted(&self) -> String {
        fn escape(s: &str) -> String {
            let mut out = String::with_capacity(s.len());
            for b in s.bytes() {
                match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
                    b' ' => out.push('+'),
                    _ => out.push_str(&format!("%{b:02X}")),
                }
            }
            out
        }
        let mut pairs: Vec<(&str, &str)> = self.pairs().collect();
        pairs.sort_by_key(|(k, _)| *k);
        pairs.iter().map(|(k, v)| format!("{}={}", escape(k), escape(v))).collect::<Vec<_>>().join("&")
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
    /// Who is asking: what lists are filtered by and what the handler checks.
    pub identity: Arc<crate::acl::Identity>,
}

/// `?index`, `?wait`, consistency and `?filter` of a read.
pub struct ReadOpts {
    pub index: u64,
    pub wait: Duration,
    pub consistency: Consistency,
    /// Boxed: a parked blocking query keeps its options, and most have no filter.
    pub filter: Option<Box<crate::filter::Filter>>,
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
            Some(f) => Some(Box::new(crate::filter::parse(f).map_err(HttpError::BadRequest)?)),
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

    /// The JSON body with keys normalized to Consul's canonical spelling, each field of the
    /// JSON type of the Go struct Consul decodes it into.
    pub fn typed_body(&self, shape: shape::Go) -> Result<serde_json::Value, HttpError> {
        let v = crate::defs::normalize(self.json_body()?);
        shape::check(&v, shape).map_err(HttpError::BadRequest)?;
        Ok(v)
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
        server.confirm_read(&meta)?;
        // As of the answer, not of the start of a blocking query.
        let meta = server.read_meta();
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

/// The future that answers a routed request. It owns the request and its handler's state in one
/// allocation: this is all a parked blocking query keeps, so it must not be sized for the largest
/// handler (each arm is its own future type) nor carry what preparing the request needed.
type Answer = Pin<Box<dyn Future<Output = Response> + Send>>;

fn dispatch(ctx: Ctx, endpoint: Endpoint, pretty: bool) -> Answer {
    use Endpoint::*;
    // `h!` runs an async handler, `now!` a synchronous answer; both end in `finish`.
    macro_rules! h {
        ($e:expr) => {{
            let answer: Answer = Box::pin(async move {
                let result = $e.await;
                finish(&ctx, result, pretty)
            });
            answer
        }};
    }
    macro_rules! now {
        ($e:expr) => {{
            let result = $e;
            let answer: Answer = Box::pin(std::future::ready(finish(&ctx, result, pretty)));
            answer
        }};
    }
    match endpoint {
        // The key is the path's tail: a parked get borrows it from there rather than keep a copy.
        KvGet(k) if ctx.path.ends_with(k.as_str()) => {
            let at = ctx.path.len() - k.len();
            h!(handlers_kv::get(&ctx, &ctx.path[at..]))
        }
        KvGet(k) => h!(handlers_kv::get(&ctx, &k)),
        KvPut(k) => h!(handlers_kv::put(&ctx, &k)),
        KvDelete(k) => h!(handlers_kv::delete(&ctx, &k)),
        Txn => h!(handlers_kv::txn(&ctx)),
        SessionCreate => h!(handlers_session::create(&ctx)),
        SessionDestroy(id) => h!(handlers_session::destroy(&ctx, &id)),
        SessionRenew(id) => h!(handlers_session::renew(&ctx, &id)),
        SessionInfo(id) => h!(handlers_session::info(&ctx, &id)),
        SessionNode(n) => h!(handlers_session::node(&ctx, &n)),
        SessionList => h!(handlers_session::list(&ctx)),
        CatalogRegister => h!(handlers_catalog::register(&ctx)),
        CatalogDeregister => h!(handlers_catalog::deregister(&ctx)),
        CatalogDatacenters => now!(Ok(Reply::json(&vec![ctx.agent.config.datacenter.clone()]))),
        CatalogNodes => h!(handlers_catalog::nodes(&ctx)),
        CatalogServices => h!(handlers_catalog::services(&ctx)),
        CatalogService(s) => h!(handlers_catalog::service(&ctx, &s, false)),
        CatalogConnect(s) => h!(handlers_catalog::service(&ctx, &s, true)),
        CatalogGatewayServices(g) => h!(handlers_connect::gateway_services(&ctx, &g)),
        HealthIngress(_) => h!(handlers_catalog::empty_list(&ctx)),
        ConfigApply => h!(handlers_connect::config_apply(&ctx)),
        ConfigList(kind) => h!(handlers_connect::config_list(&ctx, &kind)),
        ConfigGet(kind, name) => h!(handlers_connect::config_get(&ctx, &kind, &name)),
        ConfigDelete(kind, name) => h!(handlers_connect::config_delete(&ctx, &kind, &name)),
        IntentionList => h!(handlers_connect::intention_list(&ctx)),
        IntentionExact => h!(handlers_connect::intention_exact(&ctx)),
        IntentionCheck => h!(handlers_connect::intention_check(&ctx)),
        IntentionMatch => h!(handlers_connect::intention_match(&ctx)),
        CaRoots | AgentCaRoots => h!(handlers_connect::ca_roots(&ctx)),
        CaConfiguration => h!(handlers_connect::ca_configuration(&ctx)),
        AgentCaLeaf(s) => h!(handlers_connect::agent_leaf(&ctx, &s)),
        DiscoveryChain(s) => h!(handlers_connect::discovery_chain(&ctx, &s)),
        HealthConnect(s) => h!(handlers_catalog::health_service(&ctx, &s, true)),
        CatalogNode(n) => h!(handlers_catalog::node(&ctx, &n, false)),
        CatalogNodeServices(n) => h!(handlers_catalog::node(&ctx, &n, true)),
        HealthNode(n) => h!(handlers_catalog::health_node(&ctx, &n)),
        HealthChecks(s) => h!(handlers_catalog::health_checks(&ctx, &s)),
        HealthService(s) => h!(handlers_catalog::health_service(&ctx, &s, false)),
        HealthState(s) => h!(handlers_catalog::health_state(&ctx, &s)),
        AgentSelf => h!(handlers_agent::agent_self(&ctx)),
        AgentMembers => h!(handlers_agent::members(&ctx)),
        AgentServices => h!(handlers_agent::services(&ctx)),
        AgentService(id) => h!(handlers_agent::service(&ctx, &id)),
        AgentChecks => h!(handlers_agent::checks(&ctx)),
        AgentHealthByName(n) => h!(handlers_agent::health(&ctx, Some(&n), None)),
        AgentHealthById(id) => h!(handlers_agent::health(&ctx, None, Some(&id))),
        AgentReload => h!(handlers_agent::reload(&ctx)),
        AgentMaintenance => h!(handlers_agent::maintenance(&ctx, None)),
        AgentJoin(a) => h!(handlers_agent::join(&ctx, &a)),
        AgentLeave => h!(handlers_agent::leave(&ctx)),
        AgentForceLeave(n) => h!(handlers_agent::force_leave(&ctx, &n)),
        AgentServiceRegister => h!(handlers_agent::service_register(&ctx)),
        AgentServiceDeregister(id) => h!(handlers_agent::service_deregister(&ctx, &id)),
        AgentServiceMaintenance(id) => h!(handlers_agent::maintenance(&ctx, Some(&id))),
        AgentCheckRegister => h!(handlers_agent::check_register(&ctx)),
        AgentCheckDeregister(id) => h!(handlers_agent::check_deregister(&ctx, &id)),
        AgentCheckPass(id) => {
            h!(handlers_agent::check_ttl(&ctx, &id, Some(crate::structs::Status::Passing)))
        }
        AgentCheckWarn(id) => {
            h!(handlers_agent::check_ttl(&ctx, &id, Some(crate::structs::Status::Warning)))
        }
        AgentCheckFail(id) => {
            h!(handlers_agent::check_ttl(&ctx, &id, Some(crate::structs::Status::Critical)))
        }
        AgentCheckUpdate(id) => h!(handlers_agent::check_ttl(&ctx, &id, None)),
        AgentMetrics => h!(handlers_misc::metrics(&ctx)),
        AgentMonitor => h!(handlers_misc::monitor(&ctx)),
        AgentHost => h!(handlers_misc::host(&ctx)),
        AgentVersion => h!(handlers_misc::version(&ctx)),
        AgentToken(kind) if ctx.agent.acl.enabled() => h!(handlers_agent::set_token(&ctx, &kind)),
        AgentToken(_) => now!(Err(HttpError::Unauthorized("ACL support disabled".into()))),
        EventFire(n) => h!(handlers_misc::event_fire(&ctx, &n)),
        EventList => h!(handlers_misc::event_list(&ctx)),
        StatusLeader => h!(handlers_misc::status_leader(&ctx)),
        StatusPeers => h!(handlers_misc::status_peers(&ctx)),
        CoordinateDatacenters => h!(handlers_misc::coordinate_datacenters(&ctx)),
        CoordinateNodes => h!(handlers_misc::coordinate_nodes(&ctx)),
        CoordinateNode(n) => h!(handlers_misc::coordinate_node(&ctx, &n)),
        CoordinateUpdate => h!(handlers_misc::coordinate_update(&ctx)),
        OperatorRaftConfiguration => h!(handlers_misc::raft_configuration(&ctx)),
        OperatorRaftPeer => h!(handlers_misc::raft_remove_peer(&ctx)),
        OperatorAutopilotConfiguration => h!(handlers_misc::autopilot_configuration(&ctx)),
        OperatorAutopilotHealth => h!(handlers_misc::autopilot_health(&ctx)),
        OperatorUsage => h!(handlers_misc::usage(&ctx)),
        OperatorKeyring => h!(handlers_misc::keyring(&ctx)),
        OperatorRaftTransferLeader => h!(handlers_misc::transfer_leader(&ctx)),
        SnapshotSave => h!(handlers_misc::snapshot_save(&ctx)),
        SnapshotRestore => h!(handlers_misc::snapshot_restore(&ctx)),
        QueryList => h!(handlers_query::list(&ctx)),
        QueryCreate => h!(handlers_query::create(&ctx)),
        QueryGet(id) => h!(handlers_query::get(&ctx, &id)),
        QueryUpdate(id) => h!(handlers_query::update(&ctx, &id)),
        QueryDelete(id) => h!(handlers_query::delete(&ctx, &id)),
        QueryExecute(id) => h!(handlers_query::execute(&ctx, &id)),
        QueryExplain(id) => h!(handlers_query::explain(&ctx, &id)),
        InternalUiServices => h!(handlers_catalog::ui_services(&ctx)),
        InternalUiNodes => h!(handlers_catalog::ui_nodes(&ctx, None)),
        InternalUiNode(n) => h!(handlers_catalog::ui_nodes(&ctx, Some(&n))),
        Ui(p) => now!(ui::serve(&ctx, &p)),
        Options(allow) => now!(Ok(Reply::empty().header("Allow", allow))),
        Acl(e) => h!(handlers_acl::handle(&ctx, &e)),
        Index => now!(Ok(if ctx.agent.config.ui {
            Reply {
                status: 301,
                body: Body::Raw { bytes: Bytes::new(), content_type: "text/html" },
                headers: vec![("Location", "/ui/".into())],
            }
        } else {
            Reply::text(200, "Consul Agent")
        })),
    }
}

fn into_response(reply: Reply, pretty: bool) -> Response {
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

pub type Response = hyper::Response<http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>>;

/// Answers one request of the HTTP API (on the HTTP port, or forwarded to the server port).
///
/// In two stages, each its own allocation: preparing (the body, forwarding to another agent)
/// and answering. Only the second lives while a blocking query waits, so a parked query holds its
/// `Ctx` and its handler's state, not the request head, the body reader or the forwarding state.
///
/// Generic over the body so that the fuzz targets can answer requests in process (hyper's
/// `Incoming` cannot be built by hand); the server ports use it with `Incoming`.
pub fn handle<B>(agent: Arc<Agent>, req: hyper::Request<B>) -> impl Future<Output = Response> + Send
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    agent.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (parts, body) = req.into_parts();
    let query = Query::parse(parts.uri.query());
    let pretty = query.has("pretty") || agent.config.dev;
    let head = Head {
        bad_head: bad_head(&parts),
        unclean: unclean(&parts.uri),
        write_refused: write_refused(&agent, &parts),
        token: request_token(&parts, &query),
        path: percent_decode(parts.uri.path()),
        query,
        accept: parts.headers.get("accept").and_then(|v| v.to_str().ok()).map(str::to_string),
        hops: parts.headers.get(crate::forward::HEADER_HOPS).and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(0),
        method: parts.method,
        uri: parts.uri,
    };
    Box::pin(prepare(agent, head, body)).then(move |prepared| -> Answer {
        match prepared {
            Ok((ctx, endpoint)) => dispatch(ctx, endpoint, pretty),
            Err((method, path, result)) => {
                Box::pin(std::future::ready(log_and_respond(&method, &path, result, pretty)))
            }
        }
    })
}

/// The response to a handler's result; errors become their status code here.
fn finish(ctx: &Ctx, result: HttpResult, pretty: bool) -> Response {
    log_and_respond(&ctx.method, &ctx.path, result, pretty)
}

fn log_and_respond(method: &http::Method, path: &str, result: HttpResult, pretty: bool) -> Response {
    let reply = match result {
        Ok(r) => r,
        Err(e) => {
            let status = e.status();
            if status >= 500 {
                tracing::warn!(method = %method, path = %path, error = %e, "request failed");
            }
            let reply = Reply::text(status, e.to_string());
            match e {
                HttpError::MethodNotAllowed { allow, .. } => reply.header("Allow", allow),
                HttpError::BadHead(_) => reply.header("Connection", "close"),
                _ => reply,
            }
        }
    };
    into_response(reply, pretty)
}

/// The address a request on the HTTP port came from (absent on forwarded requests).
#[derive(Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// `http_config.allow_write_http_from`: only GETs, or clients in the listed networks.
fn write_refused(agent: &Agent, parts: &http::request::Parts) -> bool {
    let allowed = &agent.config.allow_write_http_from;
    if allowed.is_empty() || matches!(parts.method, http::Method::GET | http::Method::HEAD | http::Method::OPTIONS) {
        return false;
    }
    match parts.extensions.get::<ClientAddr>() {
        Some(ClientAddr(peer)) => !allowed.iter().any(|n| n.contains(peer.ip())),
        None => false,
    }
}

/// The ACL token a request names: `X-Consul-Token`, then `Authorization: Bearer`, then `?token=`.
fn request_token(parts: &http::request::Parts, query: &Query) -> Option<String> {
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(t) = header(crate::peer_auth::TOKEN_HEADER).filter(|t| !t.is_empty()) {
        return Some(t.trim().to_string());
    }
    if let Some(b) =
        header("authorization").and_then(|a| a.strip_prefix("Bearer ").or_else(|| a.strip_prefix("bearer ")))
    {
        return Some(b.trim().to_string());
    }
    query.get("token").filter(|t| !t.is_empty()).map(str::to_string)
}

/// Who is asking, and whether `endpoint` lets them: resolved from this server's state, or
/// (a client agent) through a server.
async fn identify(
    agent: &Agent,
    endpoint: &Endpoint,
    query: &Query,
    token: Option<&str>,
) -> Result<Arc<crate::acl::Identity>, HttpError> {
    use crate::acl::endpoints::{need, Need};
    if !agent.acl.enabled() {
        return Ok(agent.acl.open());
    }
    let id = if agent.server.is_some() {
        agent.acl.resolve_local(token, &agent.store.read().acl, crate::structs::now_ms())
    } else {
        agent.acl.resolve_remote(token).await
    };
    // Logging in and out, and asking about one's own token, need no token that resolves.
    let id = match (id, endpoint) {
        (Err(crate::acl::AclError::NotFound), Endpoint::Acl(a))
            if matches!(
                a,
                routes::AclEndpoint::Login | routes::AclEndpoint::Logout | routes::AclEndpoint::Bootstrap
            ) =>
        {
            agent.acl.resolve_local(None, &agent.store.read().acl, crate::structs::now_ms())?
        }
        (id, _) => id?,
    };
    let recurse = query.has("recurse") || query.has("keys");
    match need(endpoint, &agent.config.node_name, recurse) {
        Need::Nothing | Need::InHandler => {}
        Need::One(r, name, a) => id.require(r, &name, a)?,
        Need::Management => id.require_management()?,
    }
    Ok(id)
}

/// Go's `path.Clean`, keeping a trailing slash as ServeMux does.
pub fn clean_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    let mut out = format!("/{}", parts.join("/"));
    if p.ends_with('/') && out != "/" {
        out.push('/');
    }
    out
}

/// The redirect target of a path that is not clean (`//`, `/./`, `/../`), with its query.
fn unclean(uri: &http::Uri) -> Option<String> {
    let p = uri.path();
    let cleaned = clean_path(p);
    (cleaned != p).then(|| match uri.query() {
        Some(q) => format!("{cleaned}?{q}"),
        None => cleaned,
    })
}

/// What Go's HTTP server refuses in a head before any handler sees it: an HTTP/1.1 request
/// must name exactly one `Host` (HTTP/2 carries its authority in the request line instead).
fn bad_head(parts: &http::request::Parts) -> Option<&'static str> {
    if parts.version != http::Version::HTTP_11 {
        return None;
    }
    match parts.headers.get_all(http::header::HOST).iter().count() {
        0 => Some("missing required Host header"),
        1 => None,
        _ => Some("too many Host headers"),
    }
}

/// What is kept of a request's head.
struct Head {
    bad_head: Option<&'static str>,
    /// Where Go's ServeMux would redirect a path with `//`, `/./` or `/../` (301).
    unclean: Option<String>,
    write_refused: bool,
    token: Option<String>,
    method: http::Method,
    path: String,
    query: Query,
    accept: Option<String>,
    hops: u8,
    uri: http::Uri,
}

/// Routes the request, reads its body and forwards it if another agent answers it. `Ok` is a
/// request for this agent's handlers; `Err` an answer already (with the method and path to log).
async fn prepare<B>(
    agent: Arc<Agent>,
    req: Head,
    body: B,
) -> Result<(Ctx, Endpoint), (http::Method, String, HttpResult)>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Head { bad_head, unclean, write_refused, token, method, path, query, accept, hops, uri } = req;
    if let Some(what) = bad_head {
        return Err((method, path, Err(HttpError::BadHead(what))));
    }
    if let Some(location) = unclean {
        let reply = Reply {
            status: 301,
            body: Body::Raw { bytes: Bytes::new(), content_type: "text/html; charset=utf-8" },
            headers: vec![("Location", location)],
        };
        return Err((method, path, Ok(reply)));
    }
    if write_refused {
        return Err((method, path, Err(HttpError::Forbidden("Access is restricted".into()))));
    }
    let endpoint = match routes::route(&method, &path) {
        Ok(e) => e,
        Err(e) => return Err((method, path, Err(e))),
    };
    if let Some(f) = query.get("filter").filter(|f| !f.is_empty()) {
        let checked = crate::filter::parse(f)
            .and_then(|f| shape::filter_sample(&endpoint).map_or(Ok(()), |sample| f.check_selectors(sample)));
        if let Err(e) = checked {
            return Err((method, path, Err(HttpError::BadRequest(e))));
        }
    }
    if let Some(dc) = query.get("dc").filter(|d| !d.is_empty()) {
        if !dc.eq_ignore_ascii_case(&agent.config.datacenter) {
            return Err((method, path, Err(HttpError::Internal("No path to datacenter".into()))));
        }
    }
    let limit = body_limit(&agent.config);
    let body = match Box::pin(Limited::new(body, limit).collect()).await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let e = if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                HttpError::TooLarge(format!("Request body too large, max size: {limit} bytes"))
            } else {
                HttpError::BadRequest(format!("reading request body: {e}"))
            };
            return Err((method, path, Err(e)));
        }
    };
    let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    if let Some(answer) =
        Box::pin(crate::forward::route(&agent, &endpoint, &method, &query, pq, &body, hops, token.as_deref())).await
    {
        return Err((method, path, answer));
    }
    let identity = match Box::pin(identify(&agent, &endpoint, &query, token.as_deref())).await {
        Ok(id) => id,
        Err(e) => return Err((method, path, Err(e))),
    };
    Ok((Ctx { agent, method, path, query, accept, body, identity }, endpoint))
}

pub use handlers_catalog::service_entries;
pub use handlers_connect::issue_leaf;
pub use handlers_query::execute_here as execute_query_here;
pub use handlers_query::failover as query_failover;

/// The largest request body: past the largest thing Consul accepts it is 413, not memory.
pub fn body_limit(config: &crate::config::Config) -> usize {
    config.kv_max_value_size.max(config.txn_max_req_len) * 4 + 1024 * 1024
}

/// The endpoint a request is for, parsed exactly as [`handle`] parses it.
pub fn endpoint_of(method: &http::Method, uri: &http::Uri) -> Result<Endpoint, HttpError> {
    routes::route(method, &percent_decode(uri.path()))
}

/// Serves the HTTP API on `listener` until shutdown; HTTPS when `tls` is given (the `ports.https`
/// listeners). `conns` counts connections per client IP over all of the agent's listeners.
pub async fn serve(
    agent: Arc<Agent>,
    listener: TcpListener,
    conns: Arc<limits::ConnLimiter>,
    tls: Option<Arc<crate::tls::Tls>>,
) {
    let mut shutdown = agent.shutdown.subscribe();
    loop {
        let (stream, peer): (_, SocketAddr) = tokio::select! {
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
        let Some(guard) = conns.admit(peer.ip()) else {
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let mut stream = stream;
                let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(limits::TOO_MANY)).await;
            });
            continue;
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let Some(tls) = tls else {
                if limits::first_bytes(&stream, limits::HEAD_TIMEOUT).await {
                    serve_conn(agent, peer, stream, None).await;
                }
                return;
            };
            let mut first = [0u8; 1];
            match tokio::time::timeout(limits::HEAD_TIMEOUT, stream.peek(&mut first)).await {
                Ok(Ok(1)) if first[0] == crate::tls::HANDSHAKE => {}
                Ok(Ok(1)) => {
                    use tokio::io::AsyncWriteExt;
                    let mut stream = stream;
                    let write = stream.write_all(crate::tls::PLAIN_ON_TLS);
                    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
                    return;
                }
                _ => return,
            }
            let Some(acceptor) = tls.https_acceptor() else { return };
            match tokio::time::timeout(limits::HEAD_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(s)) => {
                    let h2 = s.get_ref().1.alpn_protocol() == Some(b"h2");
                    serve_conn(agent, peer, s, Some(h2)).await;
                }
                Ok(Err(e)) => tracing::info!(client = %peer, error = %e, "https: TLS handshake failed"),
                Err(_) => tracing::debug!(client = %peer, "https: TLS handshake timed out"),
            }
        });
    }
}

/// Serves one accepted connection. `h2`: the protocol TLS's ALPN settled on (`None`: tell
/// HTTP/1 and HTTP/2 apart by the first bytes).
async fn serve_conn<I>(agent: Arc<Agent>, peer: SocketAddr, io: I, h2: Option<bool>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // The service's future is what hyper keeps per stream: `handle`'s two boxed stages.
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ClientAddr(peer));
        let agent = agent.clone();
        let extra = !agent.config.response_headers.is_empty();
        let deny = agent.acl.enabled() && agent.acl.config.default_policy == crate::acl::DefaultPolicy::Deny;
        handle(agent.clone(), req).map(move |mut resp| {
            if deny {
                resp.headers_mut().insert("x-consul-default-acl-policy", http::HeaderValue::from_static("deny"));
            }
            if extra {
                for (k, v) in &agent.config.response_headers {
                    resp.headers_mut().insert(k.clone(), v.clone());
                }
            }
            Ok::<_, std::convert::Infallible>(resp)
        })
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder = match h2 {
        Some(true) => builder.http2_only(),
        Some(false) => builder.http1_only(),
        None => builder,
    };
    // A head must arrive within the timeout, which also ends a kept-alive HTTP/1 connection
    // left idle that long (hyper runs the timer while it waits for a head).
    builder.http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(limits::HEAD_TIMEOUT);
    // Watchers multiplex many blocking queries over one HTTP/2 connection; a stream costs the
    // same memory whichever connection carries it, so allow plenty per connection.
    builder.http2().max_concurrent_streams(4096);
    let _ = builder.serve_connection_with_upgrades(TokioIo::new(io), svc).await;
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
        let q = Query::parse(Some("a=1&=2&a=3&b"));
        assert_eq!(q.all("a"), vec!["1", "3"]);
        assert_eq!((q.get(""), q.get("b"), q.get("c")), (Some("2"), Some(""), None));
        assert!(!Query::parse(None).has(""));
        assert_eq!(Query::parse(Some("cas=0&acquire=a%20b&flags=1")).encode_sorted(), "acquire=a+b&cas=0&flags=1");
        assert_eq!(Query::parse(Some("recurse&cas")).encode_sorted(), "cas=&recurse=");
        for (p, want) in [
            ("/v1/kv//app/config", "/v1/kv/app/config"),
            ("/v1/kv/a/./b", "/v1/kv/a/b"),
            ("/v1/kv/a/../b/", "/v1/kv/b/"),
            ("/../x", "/x"),
            ("/v1/kv/", "/v1/kv/"),
            ("/", "/"),
        ] {
            assert_eq!(clean_path(p), want, "{p}");
        }
    }
}

/// The Consul version this agent's API matches.
pub fn handlers_version() -> &'static str {
    handlers_agent::CONSUL_VERSION
}

#[cfg(test)]
mod size_tests {
    /// A parked blocking query keeps hyper's per-stream future (`handle`'s) and the one boxed
    /// answer future (its `Ctx` and handler state); keep both small (the benchmark's goal is under
    /// 2 KB per waiting query, all costs included).
    #[test]
    fn parked_request_state_stays_small() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let _guard = rt.enter();
        let agent_cfg =
            crate::config::Config::from_flags(crate::config::AgentFlags { dev: true, ..Default::default() })
                .expect("config");
        let agent = rt.block_on(crate::agent::Agent::start(agent_cfg)).expect("agent");
        let ctx = super::Ctx {
            agent: agent.clone(),
            method: http::Method::GET,
            path: "/v1/kv/x".into(),
            query: super::Query::default(),
            accept: None,
            body: bytes::Bytes::new(),
            identity: agent.acl.open(),
        };
        let answer = super::dispatch(ctx, super::Endpoint::KvGet("x".into()), false);
        let answer = std::mem::size_of_val(&*answer);
        fn size_of_ret2<A, B, Fut, F: Fn(A, B) -> Fut>(_: F) -> usize {
            std::mem::size_of::<Fut>()
        }
        let handle = size_of_ret2(super::handle::<hyper::body::Incoming>);
        eprintln!("sizes: handle {handle} kv get answer {answer}");
        assert!(handle <= 64, "handle future is {handle} bytes");
        // 584 bytes today (832 before the last trims: the answer and the watch set dropped
        // while parked, blocking_query's arguments kept once, the query string in one buffer,
        // the KV key borrowed from the path): the Ctx, the read options, the watch waiter and
        // the timer.
        assert!(answer < 1024, "kv get answer future is {answer} bytes");
    }
}
