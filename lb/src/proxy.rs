//! The pingora `ProxyHttp` implementation: per request, read the live snapshot, pick the route,
//! pick an instance, forward with `X-Forwarded-*`, retry a failed connect on another instance,
//! bench failing instances, answer 503 with a clear body when nothing is healthy, and record
//! the access log and metrics. Also serves lb's own endpoints under `/_lb/`.

use crate::balance::{ActiveGuard, Stats};
use crate::metrics::UpstreamError;
use crate::routing::{agent_read_timeout, host_only, parse_service_host, strip_path, Match, Route, Want};
use crate::{head, status, Shared};
use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// lb's own endpoints live under this prefix on the entry point.
pub const OWN_PREFIX: &str = "/_lb/";

pub struct Proxy {
    shared: Arc<Shared>,
}

impl Proxy {
    pub fn new(shared: Arc<Shared>) -> Proxy {
        Proxy { shared }
    }
}

/// Per-request state.
pub struct Ctx {
    start: Instant,
    route: Option<Arc<Route>>,
    client_ip: Option<IpAddr>,
    /// Instances this request already tried, so a retry goes elsewhere.
    tried: Vec<SocketAddr>,
    current: Option<Arc<Stats>>,
    /// Keeps the current instance's in-flight count (least_conn) up while the request runs.
    active: Option<ActiveGuard>,
    /// Why no instance could be used, for the error page.
    failure: Option<String>,
    /// Answered by lb itself (no upstream).
    own: bool,
}

/// Room for the longest IPv6 text (`ffff:...:255.255.255.255`).
pub(crate) const IP_TEXT_MAX: usize = 45;

/// An address as text, written into `buf`. IPv4 by hand: `Ipv4Addr`'s `Display` goes through
/// the formatting machinery and cost about 1,300 instructions per request (callgrind).
pub(crate) fn ip_text(ip: IpAddr, buf: &mut [u8; IP_TEXT_MAX]) -> &str {
    let n = match ip {
        IpAddr::V4(v4) => {
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    buf[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    buf[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                buf[n] = b'0' + octet % 10;
                n += 1;
            }
            n
        }
        IpAddr::V6(v6) => {
            let mut w = &mut buf[..];
            // Cannot fail: 45 bytes hold any IPv6 text.
            let _ = std::io::Write::write_fmt(&mut w, format_args!("{v6}"));
            IP_TEXT_MAX - w.len()
        }
    };
    std::str::from_utf8(&buf[..n]).unwrap_or_default()
}

fn header_str<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

/// `Host`, or the URI authority (HTTP/2 `:authority`, absolute-form requests).
fn request_host(req: &RequestHeader) -> Option<&str> {
    header_str(req, "host").or_else(|| req.uri.authority().map(|a| a.as_str()))
}

/// `head.rs`'s rules over an h2 request's header fields (the h2 layer has already refused
/// `Transfer-Encoding` and a `Content-Length` its DATA frames do not match).
fn check_h2(req: &RequestHeader) -> std::result::Result<(), head::Refusal> {
    let mut rules = head::Rules::default();
    for (name, value) in req.headers.iter() {
        rules.see(name.as_str(), value.as_bytes())?;
    }
    rules.finish(head::Version::H2).map(|_| ())
}

async fn respond(session: &mut Session, code: u16, content_type: &str, body: String) -> Result<()> {
    let body = Bytes::from(body);
    let mut resp = ResponseHeader::build(code, Some(3))?;
    resp.insert_header("Content-Type", content_type)?;
    resp.insert_header("Content-Length", body.len().to_string())?;
    resp.insert_header("Cache-Control", "no-store")?;
    let head_only = session.req_header().method == http::Method::HEAD;
    session.write_response_header(Box::new(resp), head_only).await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

impl Proxy {
    async fn serve_own(&self, session: &mut Session, path: &str) -> Result<()> {
        let snap = self.shared.snapshot.load_full();
        match path {
            "/_lb/status" => {
                let body = status::render(&snap, &self.shared);
                respond(session, 200, "application/json", body).await
            }
            "/_lb/metrics" => {
                let instances: Vec<(String, usize)> =
                    snap.routes().iter().map(|r| (r.name.clone(), r.pool.backends().len())).collect();
                let body = self.shared.metrics.render(&instances);
                respond(session, 200, "text/plain; version=0.0.4", body).await
            }
            "/_lb/health" => respond(session, 200, "text/plain", "ok\n".to_string()).await,
            _ => respond(session, 404, "text/plain", format!("lb: no such endpoint {path}\n")).await,
        }
    }

    /// The first request for a service of another datacenter: asks discovery to watch it and
    /// waits, up to `remote_wait`, for a table that routes it (or says why not). Asks again
    /// after each rebuild, as an ask is dropped when discovery is behind.
    async fn wait_remote(
        &self,
        host: Option<&str>,
        path: &str,
        want: &Want,
    ) -> std::result::Result<Arc<Route>, String> {
        // Subscribed before looking again: a rebuild since the caller's lookup is not missed.
        let mut rebuilt = self.shared.demand.subscribe();
        let wait = self.shared.config.load().remote_wait;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match self.shared.snapshot.load().lookup(host, path) {
                Match::Route(r) => return Ok(r.clone()),
                Match::Unknown(why) => return Err(why),
                Match::Remote(w) => self.shared.demand.want(w),
            }
            let what = || format!("service {:?} of datacenter {:?}", want.service, want.dc);
            match tokio::time::timeout_at(deadline, rebuilt.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(format!("{} cannot be watched: discovery stopped", what())),
                Err(_) => return Err(format!("{} was not known within {}", what(), api::duration::format(wait))),
            }
        }
    }

    fn record_failure(&self, ctx: &mut Ctx, kind: UpstreamError) {
        ctx.active = None;
        if let (Some(route), Some(stats)) = (&ctx.route, &ctx.current) {
            route.upstream_failed(stats, kind, ctx.tried.last());
        }
    }
}

/// An HTTPS peer: the agents' CA (else the system's roots) and lb's client certificate. An
/// agent's certificate must carry `-consul-tls-server-name` when given, an instance's its IP
/// address. The name is never empty: pingora skips every check for a peer without one.
fn tls_peer(addr: SocketAddr, agent: bool, tls: &crate::tls::AgentTls) -> HttpPeer {
    let name = match (&tls.server_name, agent) {
        (Some(n), true) => n.clone(),
        _ => addr.ip().to_string(),
    };
    let mut peer = HttpPeer::new(addr, true, name);
    peer.options.ca = tls.ca.clone();
    peer.client_cert_key = tls.cert_key.clone();
    peer.options.verify_cert = tls.verify;
    peer.options.verify_hostname = tls.verify;
    peer
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = Ctx;

    /// No modules: the default adds a (disabled) compression module that still runs per request;
    /// a proxy in front of services passes bodies through as they are.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    fn new_ctx(&self) -> Ctx {
        Ctx {
            start: Instant::now(),
            route: None,
            client_ip: None,
            tried: Vec::new(),
            current: None,
            active: None,
            failure: None,
            own: false,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        ctx.client_ip = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
        if self.shared.draining.load(Ordering::Relaxed) && !session.is_http2() {
            session.set_keepalive(None);
        }
        // HTTP/1 heads were checked in `fast.rs` before they came here; h2 requests are read by
        // pingora itself, and get the same rules on its header map.
        if session.is_http2() {
            if let Err(why) = check_h2(session.req_header()) {
                let body = format!("{}\nlb: {}\n", why.title(), why.why());
                respond(session, why.status().0, "text/plain", body).await?;
                return Ok(true);
            }
        }
        let snap = self.shared.snapshot.load();
        let req = session.req_header();
        let host = request_host(req);
        let path = req.uri.path();
        if path.starts_with(OWN_PREFIX)
            && host.is_none_or(|h| parse_service_host(&host_only(h), snap.domain()).is_none())
        {
            let path = path.to_string();
            ctx.own = true;
            self.serve_own(session, &path).await?;
            return Ok(true);
        }
        let found = match snap.lookup(host, path) {
            Match::Route(route) => Ok(route.clone()),
            Match::Unknown(why) => Err(why),
            Match::Remote(want) => {
                let (host, path) = (host.map(str::to_string), path.to_string());
                drop(snap);
                self.wait_remote(host.as_deref(), &path, &want).await
            }
        };
        let unknown = match found {
            Ok(route) if !route.pool.is_empty() => {
                ctx.route = Some(route);
                return Ok(false);
            }
            Ok(route) => {
                let why = format!("no healthy instance of {}", route.what);
                ctx.route = Some(route);
                why
            }
            Err(why) => why,
        };
        respond(session, 503, "text/plain", format!("lb: {unknown}\n")).await?;
        Ok(true)
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let Some(route) = ctx.route.clone() else {
            return Err(Error::explain(ErrorType::InternalError, "no route chosen"));
        };
        ctx.active = None;
        let Some(b) = route.next_instance(ctx.client_ip, &ctx.tried, Instant::now()) else {
            ctx.failure = Some(route.none_answered(&ctx.tried));
            return Err(Error::explain(ErrorType::HTTPStatus(502), "every instance failed"));
        };
        ctx.tried.push(b.addr);
        ctx.current = Some(b.stats.clone());
        ctx.active = Some(b.stats.begin());
        let mut peer = match &self.shared.tls {
            Some(tls) if b.tls => tls_peer(b.addr, route.agents, tls),
            // An HTTPS instance while lb speaks plain HTTP to the agents: the system's roots.
            None if b.tls => HttpPeer::new(b.addr, true, b.addr.ip().to_string()),
            _ => HttpPeer::new(b.addr, false, String::new()),
        };
        peer.options.connection_timeout = Some(route.opts.connect_timeout);
        peer.options.total_connection_timeout = Some(route.opts.connect_timeout);
        peer.options.read_timeout = if route.agents {
            agent_read_timeout(session.req_header().uri.query(), route.opts.read_timeout)
        } else {
            Some(route.opts.read_timeout).filter(|d| !d.is_zero())
        };
        // Pooled upstream connections are dropped before typical server keep-alive timeouts.
        peer.options.idle_timeout = Some(Duration::from_secs(55));
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // Header names as constants and values taken from the request: this runs on every
        // request, and each `insert_header` already costs pingora a few allocations.
        let req = session.req_header();
        if let Some(ip) = ctx.client_ip {
            let mut buf = [0u8; IP_TEXT_MAX];
            let ip = ip_text(ip, &mut buf);
            let xff = match req.headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
                Some(prev) if !prev.trim().is_empty() => HeaderValue::from_str(&format!("{prev}, {ip}")),
                _ => HeaderValue::from_str(ip),
            };
            if let Ok(xff) = xff {
                upstream.insert_header("X-Forwarded-For", xff)?;
            }
        }
        if !req.headers.contains_key(&X_FORWARDED_PROTO) {
            upstream.insert_header("X-Forwarded-Proto", HeaderValue::from_static("http"))?;
        }
        if !req.headers.contains_key(&X_FORWARDED_HOST) {
            let host = match req.headers.get(http::header::HOST) {
                Some(h) => Some(h.clone()),
                None => req.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
            };
            if let Some(host) = host {
                upstream.insert_header("X-Forwarded-Host", host)?;
            }
        }
        if let Some(strip) = ctx.route.as_ref().and_then(|r| r.strip.as_deref()) {
            let pq = upstream.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            if let Some(new) = strip_path(pq, strip) {
                match new.parse::<http::Uri>() {
                    Ok(uri) => upstream.set_uri(uri),
                    Err(e) => warn!(path = pq, "cannot strip {strip}: {e}"),
                }
            }
        }
        Ok(())
    }

    async fn upstream_response_filter(&self, _s: &mut Session, _r: &mut ResponseHeader, ctx: &mut Ctx) -> Result<()> {
        if let Some(stats) = &ctx.current {
            stats.record_success();
        }
        Ok(())
    }

    /// A client that hangs up mid-request is routine, not an error worth a log line.
    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, e: &Error) -> bool {
        e.esource() == &ErrorSource::Downstream
            && matches!(e.etype(), ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        self.record_failure(ctx, UpstreamError::Connect);
        // Nothing reached the instance: always safe to try another one.
        e.set_retry(true);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer: {peer}"));
        if e.esource() == &ErrorSource::Downstream {
            e.set_retry(false);
            return e;
        }
        self.record_failure(ctx, UpstreamError::Proxy);
        let req = session.req_header();
        // Like nginx's `proxy_next_upstream error timeout`: an idempotent request whose answer
        // has not started reaching the client may go to another instance.
        if req.method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated()
            && session.response_written().is_none()
        {
            e.set_retry(true);
        } else {
            e.retry.decide_reuse(client_reused);
            if !req.method.is_idempotent() {
                e.set_retry(false);
            }
        }
        e
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        if code > 0 && session.response_written().is_none() {
            let what = ctx.route.as_ref().map(|r| r.what.clone()).unwrap_or_else(|| "the request".into());
            let body = match &ctx.failure {
                Some(f) => format!("lb: {f}\n"),
                None => format!("lb: proxying to {what} failed: {}\n", e.etype().as_str()),
            };
            if let Err(err) = respond(session, code, "text/plain", body).await {
                warn!("cannot send the error page: {err}");
            }
        }
        FailToProxy { error_code: code, can_reuse_downstream: false }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        ctx.active = None;
        if ctx.own {
            return;
        }
        let took = ctx.start.elapsed();
        let status = session.response_written().map(|r| r.status.as_u16()).unwrap_or(0);
        match &ctx.route {
            Some(r) => r.metrics.request(status, took),
            None => self.shared.metrics.route("none").request(status, took),
        }
        if !self.shared.config.load().access_log {
            return;
        }
        let req = session.req_header();
        access_log(
            ctx.client_ip,
            format_args!("{} {} {:?}", req.method, req.uri, req.version),
            status,
            session.body_bytes_sent() as u64,
            ctx.route.as_ref().map(|r| r.name.as_str()).unwrap_or("-"),
            &ctx.tried,
            took,
            e.map(|e| e.etype().as_str()),
        );
    }
}

/// One access-log line (target `lb::access`), written alike by both request paths.
#[allow(clippy::too_many_arguments)]
pub(crate) fn access_log(
    client: Option<IpAddr>,
    request: std::fmt::Arguments,
    status: u16,
    body_bytes: u64,
    route: &str,
    tried: &[SocketAddr],
    took: Duration,
    error: Option<&str>,
) {
    let client = client.map(|i| i.to_string()).unwrap_or_else(|| "-".into());
    let upstream = tried.last().map(|a| a.to_string()).unwrap_or_else(|| "-".into());
    info!(
        target: "lb::access",
        "{client} \"{request}\" {status} {body_bytes} route={route} upstream={upstream} tries={} {:.3}ms{}",
        tried.len(),
        took.as_secs_f64() * 1000.0,
        error.map(|e| format!(" error={e}")).unwrap_or_default(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_text_matches_display() {
        for ip in [
            "0.0.0.0",
            "10.0.0.1",
            "127.0.77.1",
            "199.99.100.255",
            "255.255.255.255",
            "::1",
            "fe80::1:2",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::ffff:255.255.255.255",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut buf = [0u8; IP_TEXT_MAX];
            assert_eq!(ip_text(ip, &mut buf), ip.to_string());
        }
    }
}
