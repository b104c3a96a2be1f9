//! An async HTTP client for the agent's API: what the CLI, `template`, `lb` and the examples use.
//! It speaks only the public HTTP contract; it knows nothing about the agent's internals.

use crate::query::{self, QueryMeta, QueryOptions};
use crate::tls::Tls;
use crate::types::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client as HyperClient};
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use std::time::Duration;

pub use http::Method;

/// How long a request that does not block may take before it is abandoned (a hung agent must
/// not hang its caller), unless `Client::with_timeout` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Added to a blocking query's wait (and its jitter) before the transport gives up on it.
const BLOCKING_MARGIN: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid agent address {0:?}")]
    Address(String),
    #[error("connecting to {addr}: {}", cause(source))]
    Transport { addr: String, source: hyper_util::client::legacy::Error },
    #[error("reading the answer from {addr}: {}", cause(source))]
    Body { addr: String, source: hyper::Error },
    #[error("unexpected response code: {status} ({body})")]
    Status { status: u16, body: String },
    #[error("decoding the answer from {path}: {source}")]
    Decode { path: String, source: serde_json::Error },
    #[error("request to {path} timed out")]
    Timeout { path: String },
    #[error("no agent to ask: the list of agent addresses is empty")]
    NoAgents,
    #[error("giving up after {attempts} failed requests: {last}")]
    RetriesExhausted { attempts: u32, last: Box<Error> },
    /// A TLS file that could not be used: `reading CA file /etc/ca.pem: no such file or directory`.
    #[error("{what} {path}: {message}")]
    TlsFile { what: &'static str, path: String, message: String },
    #[error("TLS: {0}")]
    Tls(String),
}

/// An error and what caused it: a TLS failure in Go's words (`x509: certificate signed by unknown
/// authority`), else each cause in the chain ("client error (Connect): tcp connect error: ...");
/// hyper's own text alone says little.
fn cause(e: &(dyn std::error::Error + 'static)) -> String {
    if let Some(t) = crate::tls::go_tls_text(e) {
        return t;
    }
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

impl Error {
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A raw answer: status, headers, body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Response {
    pub fn meta(&self) -> QueryMeta {
        let header = |name: &str| self.headers.get(name).and_then(|v| v.to_str().ok());
        QueryMeta {
            last_index: header(query::HEADER_INDEX).and_then(|v| v.parse().ok()).unwrap_or(0),
            known_leader: header(query::HEADER_KNOWN_LEADER) == Some("true"),
            last_contact: Duration::from_millis(
                header(query::HEADER_LAST_CONTACT).and_then(|v| v.parse().ok()).unwrap_or(0),
            ),
        }
    }
}

#[derive(Clone)]
pub struct Client {
    /// `http://host:port` or `https://host:port`.
    base: String,
    token: Option<String>,
    timeout: Duration,
    http: HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("base", &self.base).finish()
    }
}

impl Client {
    /// `addr` is `host:port`, `http://host:port` or `https://host:port` (as `-http-addr` and
    /// `CONSUL_HTTP_ADDR` take it). An `https://` address trusts the system's roots; use
    /// [`Client::https`] for a CA of your own or a client certificate.
    pub fn new(addr: &str) -> Result<Client, Error> {
        let (scheme, host) = split_addr(addr)?;
        match scheme {
            Scheme::Https => Client::build(host, Some(&Tls::system())),
            Scheme::Http | Scheme::Bare => Client::build(host, None),
        }
    }

    /// HTTPS to `addr` with `tls`, whatever the address says: as in Consul's client, asking for
    /// TLS is never undone by an `http://` prefix.
    pub fn https(addr: &str, tls: &Tls) -> Result<Client, Error> {
        let (_, host) = split_addr(addr)?;
        Client::build(host, Some(tls))
    }

    /// [`Client::https`] with `Some(tls)`, [`Client::new`] with `None`.
    pub fn connect(addr: &str, tls: Option<&Tls>) -> Result<Client, Error> {
        match tls {
            Some(t) => Client::https(addr, t),
            None => Client::new(addr),
        }
    }

    fn build(host: &str, tls: Option<&Tls>) -> Result<Client, Error> {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        let (config, server_name) = match tls {
            Some(t) => ((*t.config).clone(), t.server_name.clone()),
            // Never used to dial: the base URL of a plain client says http.
            None => ((*crate::tls::unused_config()).clone(), None),
        };
        let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config).https_or_http();
        let builder = match server_name {
            Some(name) => builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name)),
            None => builder,
        };
        // HTTP/1.1, as Consul's Go client speaks it over TLS too: each blocking query has a
        // connection of its own (as over plain HTTP), and a refused client certificate, which a
        // TLS 1.3 server reports only after the handshake, reaches the request as its error (an
        // HTTP/2 connection task would swallow it).
        let connector = builder.enable_http1().wrap_connector(http);
        let http =
            HyperClient::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(90)).build(connector);
        let scheme = if tls.is_some() { "https" } else { "http" };
        Ok(Client { base: format!("{scheme}://{host}"), token: None, timeout: DEFAULT_TIMEOUT, http })
    }

    /// The time limit of calls that do not block (`query` without an index, `request_ok`, the
    /// typed helpers). Blocking queries get their wait plus a margin instead.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn with_token(mut self, token: Option<String>) -> Client {
        self.token = token.filter(|t| !t.is_empty());
        self
    }

    /// `host:port` of the agent this client talks to.
    pub fn addr(&self) -> &str {
        self.base.split_once("://").map(|(_, h)| h).unwrap_or(&self.base)
    }

    /// `http://host:port` or `https://host:port`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Whether this client speaks TLS.
    pub fn is_https(&self) -> bool {
        self.base.starts_with("https://")
    }

    /// Sends one request; `path_and_query` starts with `/v1/`. `timeout: None` waits as long as
    /// the agent takes (streams such as `/v1/agent/monitor`); the other methods set a limit.
    pub async fn request(
        &self,
        method: http::Method,
        path_and_query: &str,
        body: Option<Bytes>,
        timeout: Option<Duration>,
    ) -> Result<Response, Error> {
        let uri = format!("{}{}", self.base, path_and_query);
        let mut builder = http::Request::builder().method(method).uri(&uri);
        if let Some(t) = &self.token {
            builder = builder.header(query::HEADER_TOKEN, t);
        }
        let req = builder.body(Full::new(body.unwrap_or_default())).map_err(|_| Error::Address(uri.clone()))?;
        let fut = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|source| Error::Transport { addr: self.addr().to_string(), source })?;
            let (parts, body) = resp.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|source| Error::Body { addr: self.addr().to_string(), source })?
                .to_bytes();
            Ok(Response { status: parts.status.as_u16(), headers: parts.headers, body })
        };
        match timeout {
            Some(t) => {
                tokio::time::timeout(t, fut).await.map_err(|_| Error::Timeout { path: path_and_query.to_string() })?
            }
            None => fut.await,
        }
    }

    /// Sends a GET-like request and returns the answer as it arrives, body unread, with no time
    /// limit (streams such as `/v1/agent/monitor`).
    pub async fn stream(
        &self,
        method: http::Method,
        path_and_query: &str,
    ) -> Result<http::Response<hyper::body::Incoming>, Error> {
        let uri = format!("{}{}", self.base, path_and_query);
        let mut builder = http::Request::builder().method(method).uri(&uri);
        if let Some(t) = &self.token {
            builder = builder.header(query::HEADER_TOKEN, t);
        }
        let req = builder.body(Full::new(Bytes::new())).map_err(|_| Error::Address(uri.clone()))?;
        self.http.request(req).await.map_err(|source| Error::Transport { addr: self.addr().to_string(), source })
    }

    /// Sends a request within the client's timeout and fails on any non-2xx answer.
    pub async fn request_ok(
        &self,
        method: http::Method,
        path_and_query: &str,
        body: Option<Bytes>,
    ) -> Result<Response, Error> {
        let resp = self.request(method, path_and_query, body, Some(self.timeout)).await?;
        if !(200..300).contains(&resp.status) {
            return Err(Error::Status {
                status: resp.status,
                body: String::from_utf8_lossy(&resp.body).trim().to_string(),
            });
        }
        Ok(resp)
    }

    /// A GET with query options, decoded as JSON. A 404 is `Ok(None)`.
    pub async fn query<T: DeserializeOwned>(
        &self,
        path: &str,
        extra: &[(String, String)],
        opts: &QueryOptions,
    ) -> Result<Option<(T, QueryMeta)>, Error> {
        let mut pairs: Vec<(String, String)> = extra.to_vec();
        pairs.extend(opts.to_pairs());
        let pq = format!("{}{}", query::encode_path(path), query::query_string(&pairs));
        // A blocking query may legitimately take wait + wait/16; give the transport a margin.
        // Anything else gets the client's timeout.
        let timeout = if opts.index > 0 {
            let w = opts.wait.unwrap_or(query::DEFAULT_WAIT).min(query::MAX_WAIT);
            w + w / query::JITTER_FRACTION + BLOCKING_MARGIN
        } else {
            self.timeout
        };
        let resp = self.request(http::Method::GET, &pq, None, Some(timeout)).await?;
        if resp.status == 404 {
            return Ok(None);
        }
        if resp.status != 200 {
            return Err(Error::Status {
                status: resp.status,
                body: String::from_utf8_lossy(&resp.body).trim().to_string(),
            });
        }
        let meta = resp.meta();
        let value =
            serde_json::from_slice(&resp.body).map_err(|source| Error::Decode { path: path.to_string(), source })?;
        Ok(Some((value, meta)))
    }

    pub async fn put_json<B: serde::Serialize>(&self, path: &str, body: &B) -> Result<Response, Error> {
        let bytes = serde_json::to_vec(body).map_err(|source| Error::Decode { path: path.to_string(), source })?;
        self.request_ok(http::Method::PUT, path, Some(bytes.into())).await
    }

    // ---- typed helpers over the common endpoints ----

    pub async fn kv_get(&self, key: &str, opts: &QueryOptions) -> Result<Option<(KvPair, QueryMeta)>, Error> {
        let got: Option<(Vec<KvPair>, QueryMeta)> = self.query(&format!("/v1/kv/{key}"), &[], opts).await?;
        Ok(got.and_then(|(mut v, m)| if v.is_empty() { None } else { Some((v.remove(0), m)) }))
    }

    pub async fn kv_list(&self, prefix: &str, opts: &QueryOptions) -> Result<(Vec<KvPair>, QueryMeta), Error> {
        let got = self.query(&format!("/v1/kv/{prefix}"), &[("recurse".into(), String::new())], opts).await?;
        Ok(got.unwrap_or_default())
    }

    pub async fn kv_keys(
        &self,
        prefix: &str,
        separator: Option<&str>,
        opts: &QueryOptions,
    ) -> Result<(Vec<String>, QueryMeta), Error> {
        let mut extra = vec![("keys".to_string(), String::new())];
        if let Some(sep) = separator {
            extra.push(("separator".into(), sep.into()));
        }
        Ok(self.query(&format!("/v1/kv/{prefix}"), &extra, opts).await?.unwrap_or_default())
    }

    /// PUT a value; `extra` carries `cas`, `flags`, `acquire`, `release`. Returns Consul's boolean.
    pub async fn kv_put(&self, key: &str, value: Vec<u8>, extra: &[(String, String)]) -> Result<bool, Error> {
        let pq = format!("/v1/kv/{}{}", query::encode_path(key), query::query_string(extra));
        let resp = self.request_ok(http::Method::PUT, &pq, Some(value.into())).await?;
        Ok(resp.body.as_ref().starts_with(b"true"))
    }

    pub async fn kv_delete(&self, key: &str, extra: &[(String, String)]) -> Result<bool, Error> {
        let pq = format!("/v1/kv/{}{}", query::encode_path(key), query::query_string(extra));
        let resp = self.request_ok(http::Method::DELETE, &pq, None).await?;
        Ok(resp.body.as_ref().starts_with(b"true"))
    }

    pub async fn health_service(
        &self,
        service: &str,
        passing_only: bool,
        opts: &QueryOptions,
    ) -> Result<(Vec<ServiceEntry>, QueryMeta), Error> {
        let extra = if passing_only { vec![("passing".to_string(), "1".to_string())] } else { vec![] };
        Ok(self.query(&format!("/v1/health/service/{service}"), &extra, opts).await?.unwrap_or_default())
    }

    pub async fn catalog_services(
        &self,
        opts: &QueryOptions,
    ) -> Result<(std::collections::BTreeMap<String, Vec<String>>, QueryMeta), Error> {
        Ok(self.query("/v1/catalog/services", &[], opts).await?.unwrap_or_default())
    }

    pub async fn catalog_nodes(&self, opts: &QueryOptions) -> Result<(Vec<Node>, QueryMeta), Error> {
        Ok(self.query("/v1/catalog/nodes", &[], opts).await?.unwrap_or_default())
    }

    /// `GET /v1/catalog/datacenters`: every known datacenter, nearest first (not a blocking
    /// endpoint).
    pub async fn catalog_datacenters(&self) -> Result<Vec<String>, Error> {
        let got: Option<(Vec<String>, QueryMeta)> =
            self.query("/v1/catalog/datacenters", &[], &QueryOptions::default()).await?;
        Ok(got.map(|(v, _)| v).unwrap_or_default())
    }

    /// `GET /v1/catalog/node/:node`: the node and its services; `None` for an unknown node
    /// (Consul answers `null` there, older agents 404).
    pub async fn catalog_node(
        &self,
        node: &str,
        opts: &QueryOptions,
    ) -> Result<(Option<CatalogNode>, QueryMeta), Error> {
        let got: Option<(Option<CatalogNode>, QueryMeta)> =
            self.query(&format!("/v1/catalog/node/{node}"), &[], opts).await?;
        Ok(match got {
            Some((n, meta)) => (n.filter(|n| n.node.is_some()), meta),
            None => (None, QueryMeta::default()),
        })
    }

    pub async fn agent_members(&self) -> Result<Vec<AgentMember>, Error> {
        let got: Option<(Vec<AgentMember>, QueryMeta)> =
            self.query("/v1/agent/members", &[], &QueryOptions::default()).await?;
        Ok(got.map(|(v, _)| v).unwrap_or_default())
    }

    pub async fn agent_self(&self) -> Result<serde_json::Value, Error> {
        let got: Option<(serde_json::Value, QueryMeta)> =
            self.query("/v1/agent/self", &[], &QueryOptions::default()).await?;
        Ok(got.map(|(v, _)| v).unwrap_or_default())
    }

    pub async fn status_leader(&self) -> Result<String, Error> {
        let got: Option<(String, QueryMeta)> = self.query("/v1/status/leader", &[], &QueryOptions::default()).await?;
        Ok(got.map(|(v, _)| v).unwrap_or_default())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
    Bare,
}

/// The scheme and `host:port` of an address; a trailing `/` is dropped. Other schemes (`unix://`)
/// are refused, as Consul's client refuses unknown ones.
fn split_addr(addr: &str) -> Result<(Scheme, &str), Error> {
    let addr = addr.trim().trim_end_matches('/');
    let (scheme, host) = match addr.split_once("://") {
        Some(("http", h)) => (Scheme::Http, h),
        Some(("https", h)) => (Scheme::Https, h),
        Some((other, _)) => return Err(Error::Address(format!("{addr} (unknown protocol scheme: {other})"))),
        None => (Scheme::Bare, addr),
    };
    if host.is_empty() {
        return Err(Error::Address(addr.to_string()));
    }
    Ok((scheme, host))
}

#[cfg(test)]
mod tests;
