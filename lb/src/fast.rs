//! The HTTP/1.1 fast path: plain requests are forwarded here, everything else by pingora's proxy.
//!
//! pingora's request path parses every header into owned maps, boxes the request future and
//! runs its connection pool on both sides: about 85 allocations and 85k instructions per proxied
//! request, four times nginx's. Most requests through lb are plain HTTP/1.1 with no body or a
//! `Content-Length` body, so this module serves those the way nginx does: the head is parsed in
//! place (`httparse`), the upstream head is the client's header lines copied as they are plus
//! `X-Forwarded-*`, bodies are relayed as they arrive, and each worker thread keeps its own
//! keep-alive connections to the instances.
//!
//! Every HTTP/1 request head on a connection is parsed here first, and checked against nginx's
//! limits and refusals (`head.rs`) before anything else: a refused request gets nginx's answer
//! and the connection is closed. Any request outside the subset above is then handed to
//! pingora's proxy (`proxy.rs`), one request at a time (`handoff.rs`): HTTP/1.0, `Upgrade`
//! (WebSocket), `Transfer-Encoding` or `Expect` on the request, absolute-form targets, lb's own
//! `/_lb/` endpoints, routes that strip a prefix, and requests with no route or no healthy
//! instance (pingora's side writes the 503 page). The connection comes back here after it, so
//! the next head is parsed and checked here too. HTTP/2 (h2c) connections go to pingora whole.
//! Routing, balancing, benching, retries, metrics and the access log are the same code and the
//! same rules on both paths.
//!
//! Client timeouts are nginx's: a head must arrive whole within `client_header_timeout` (from the
//! accept for the first request, from its first byte for the next ones), an idle connection is
//! closed after `keepalive_timeout`, and a body may pause 60 s between reads
//! (`client_body_timeout`). A slow client costs one task and its buffer, for a bounded time.

use crate::balance::Stats;
use crate::handoff::{OneRequest, Rest};
use crate::head::{self, Field, Refusal, Rules};
use crate::metrics::UpstreamError;
use crate::proxy::{access_log, ip_text, Proxy, IP_TEXT_MAX, OWN_PREFIX};
use crate::routing::{agent_read_timeout, Match, Route, Snapshot};
use crate::Shared;
use async_trait::async_trait;
use bytes::{Buf, BytesMut};
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::v1::server::HttpSession as SessionV1;
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::Stream;
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Header lines parsed in place; a request with more is parsed again with room for pingora's
/// limit (`head::MAX_HEADERS`) and handed to pingora.
const MAX_HEADERS: usize = 100;
// `Checked::skip` has a bit for each line the fast path copies.
const _: () = assert!(MAX_HEADERS <= 128);
/// An upstream response head may not be longer than this.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// The longest pause while a request body arrives (nginx `client_body_timeout`).
const CLIENT_BODY_IDLE: Duration = Duration::from_secs(60);
/// After a refusal, how long lb reads and drops what the client still sends before it closes
/// (nginx `lingering_timeout`): closing with unread bytes would reset the connection, and the
/// client could lose the answer.
const LINGER: Duration = Duration::from_secs(5);
/// Pooled upstream connections older than this are dropped before servers' usual keep-alive
/// timeouts close them under us.
const UPSTREAM_IDLE: Duration = Duration::from_secs(55);
/// Idle connections kept per instance and worker (nginx `keepalive 128`).
const POOL_PER_ADDR: usize = 128;
/// Buffers that grew past this for one large message are not kept for the next.
const KEEP_BUFFER: usize = 64 * 1024;
const READ_CHUNK: usize = 16 * 1024;

/// The service application of one worker: the fast path in front of pingora's proxy.
pub struct App {
    proxy: Arc<HttpProxy<Proxy>>,
    shared: Arc<Shared>,
}

impl App {
    pub fn new(proxy: HttpProxy<Proxy>, shared: Arc<Shared>) -> App {
        App { proxy: Arc::new(proxy), shared }
    }

    /// Has pingora's proxy serve one request, which `next_request` parsed and checked, and
    /// gives the connection back when it may go on, with the bytes that came after the request.
    async fn hand_off(&self, conn: Conn, h: HandOff, keepalive: Duration) -> Option<Conn> {
        let Conn { stream, mut read, up_head, down_head, tried, client_ip, shutdown, served: _ } = conn;
        let (end, rest) = h.extent(&read);
        let request = read.split_to(end);
        let mut v1 = SessionV1::new(Box::new(OneRequest::new(stream, rest)));
        // Pipelining stays off in pingora: it never reads past the request (`OneRequest`), and
        // with it off it refuses to reuse a connection it did read past.
        v1.set_pipelined_prefix(request);
        let mut session = ServerSession::H1(v1);
        session.set_keepalive(if *shutdown.borrow() { None } else { Some(keepalive.as_secs()) });
        let reused = self.proxy.process_new_http(session, &shutdown).await?;
        let (stream, _) = reused.consume();
        let one = stream.into_any().downcast::<OneRequest>().ok()?;
        let (stream, held) = one.finish()?;
        read.extend_from_slice(&held);
        Some(Conn { stream, read, up_head, down_head, tried, client_ip, shutdown, served: true })
    }

    /// Gives a connection that began with the HTTP/2 preface to pingora, which reads it again.
    async fn h2c(&self, conn: Conn) -> Option<Stream> {
        let mut l4 = conn.stream.into_any().downcast::<L4Stream>().ok()?;
        l4.rewind(&conn.read);
        self.proxy.process_new(l4, &conn.shutdown).await
    }
}

#[async_trait]
impl ServerApp for App {
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let client_ip =
            stream.get_socket_digest().and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let mut conn = Conn {
            stream,
            read: BytesMut::with_capacity(4096),
            up_head: Vec::with_capacity(1024),
            down_head: Vec::with_capacity(512),
            tried: Vec::new(),
            client_ip,
            shutdown: shutdown.clone(),
            served: false,
        };
        loop {
            match self.next_request(&mut conn).await {
                Next::KeepAlive => {}
                Next::Close => return None,
                Next::H2 => return self.h2c(conn).await,
                Next::HandOff(h, keepalive) => conn = self.hand_off(conn, h, keepalive).await?,
            }
        }
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}

/// One client connection on the fast path.
struct Conn {
    stream: Stream,
    /// Bytes read from the client and not yet forwarded: the next request's head, or more.
    read: BytesMut,
    /// The request head (and a body that came with it) as sent upstream; kept for a retry.
    up_head: Vec<u8>,
    down_head: Vec<u8>,
    tried: Vec<SocketAddr>,
    client_ip: Option<IpAddr>,
    shutdown: ShutdownWatch,
    /// A request was answered on this connection: the wait for the next one is keep-alive.
    served: bool,
}

enum Next {
    KeepAlive,
    Close,
    /// The connection is HTTP/2 with prior knowledge.
    H2,
    /// pingora serves this request, with this keep-alive timeout.
    HandOff(HandOff, Duration),
}

/// A checked request that pingora's proxy serves.
#[derive(Clone, Copy)]
struct HandOff {
    head_len: usize,
    body: head::Body,
    /// An `Upgrade` or CONNECT request: its end is not known.
    tunnel: bool,
}

impl HandOff {
    /// Where the request ends in `read` (its head and the body bytes already here), and what
    /// pingora may still read of it from the client.
    fn extent(&self, read: &[u8]) -> (usize, Rest) {
        let here = &read[self.head_len..];
        if self.tunnel {
            return (read.len(), Rest::All);
        }
        match self.body {
            head::Body::None => (self.head_len, Rest::Length(0)),
            head::Body::Length(n) => {
                let take = (here.len() as u64).min(n);
                (self.head_len + take as usize, Rest::Length(n - take))
            }
            head::Body::Chunked => {
                let mut chunks = Chunks::new();
                match chunks.feed(here) {
                    Ok(n) => (self.head_len + n, Rest::Chunked(chunks)),
                    // pingora refuses the body; nothing after it is read as a request.
                    Err(_) => (read.len(), Rest::All),
                }
            }
        }
    }
}

/// A request the fast path forwards.
struct Request {
    /// Bytes of `Conn::read` the head took.
    head_len: usize,
    content_length: u64,
    idempotent: bool,
    head: bool,
    /// The client asked to close the connection after this request.
    close: bool,
    route: Arc<Route>,
    read_timeout: Option<Duration>,
    /// "GET /path HTTP/1.1", only when the access log is on.
    line: Option<String>,
}

enum Parsed {
    Request(Request),
    Partial,
    HandOff(HandOff),
    /// Refused; the flag says it was a HEAD request (the answer has no body).
    Refuse(Refusal, bool),
}

fn header_is(name: &str, lower: &str) -> bool {
    name.eq_ignore_ascii_case(lower)
}

fn malformed(e: httparse::Error) -> Refusal {
    Refusal::Malformed(match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid new line",
        httparse::Error::Token => "invalid token",
        httparse::Error::Version => "invalid HTTP version",
        httparse::Error::Status | httparse::Error::TooManyHeaders => "invalid head",
    })
}

/// Parses and checks the request head at the start of `buf` and, when the fast path takes the
/// request, writes the upstream head into `out`: the client's header lines as they came,
/// without hop-by-hop headers, with `X-Forwarded-For` extended and `X-Forwarded-Proto`/`-Host`
/// added when absent (as `ProxyHttp::upstream_request_filter` does on pingora's side).
fn parse_request(
    buf: &[u8],
    snap: &Snapshot,
    client_ip: Option<IpAddr>,
    out: &mut Vec<u8>,
    access_log: bool,
) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => fast_request(&req, &buf[..n], snap, client_ip, out, access_log),
        Ok(httparse::Status::Partial) => partial(buf),
        Err(httparse::Error::TooManyHeaders) => many_headers(buf),
        Err(e) => Parsed::Refuse(malformed(e), false),
    }
}

/// An incomplete head: refused as soon as it can no longer fit nginx's buffers.
fn partial(buf: &[u8]) -> Parsed {
    match head::check_size(buf, false) {
        Ok(()) => Parsed::Partial,
        Err(why) => Parsed::Refuse(why, false),
    }
}

/// A head with more header lines than the fast path parses in place: checked like any other,
/// with room for as many lines as pingora reads, and served by pingora.
#[cold]
fn many_headers(buf: &[u8]) -> Parsed {
    let mut headers = vec![httparse::EMPTY_HEADER; head::MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => match check(&req, &buf[..n]) {
            Ok(c) => Parsed::HandOff(HandOff { head_len: n, body: c.body, tunnel: c.tunnel }),
            Err(why) => Parsed::Refuse(why, req.method == Some("HEAD")),
        },
        Ok(httparse::Status::Partial) => partial(buf),
        Err(httparse::Error::TooManyHeaders) => Parsed::Refuse(Refusal::TooManyHeaders, false),
        Err(e) => Parsed::Refuse(malformed(e), false),
    }
}

/// What the pass over a head's lines found, besides that it passed.
#[derive(Default)]
struct Checked<'b> {
    body: head::Body,
    /// `Upgrade` or CONNECT: the request may become a tunnel.
    tunnel: bool,
    /// Something only pingora's side handles: `Expect`, a second `X-Forwarded-For`, a Host or
    /// `X-Forwarded-For` that is not UTF-8.
    pingora: bool,
    host: Option<&'b str>,
    /// The client asked to close the connection after this request.
    close: bool,
    xff: Option<&'b str>,
    has_proto: bool,
    has_fwd_host: bool,
    /// Bit i: header line i is hop-by-hop, or `X-Forwarded-For`, and is not copied upstream
    /// as it came (lines past 128 are only ever handed to pingora).
    skip: u128,
}

/// The checks of `head.rs` over a complete head, in one pass over its header lines that also
/// collects what the fast path needs from them.
fn check<'b>(req: &httparse::Request<'_, 'b>, head: &[u8]) -> Result<Checked<'b>, Refusal> {
    head::check_size(head, true)?;
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(Refusal::Malformed("incomplete request line"));
    };
    head::check_target(target)?;
    let mut rules = Rules::default();
    let mut c = Checked { tunnel: method == "CONNECT", ..Checked::default() };
    for (i, h) in req.headers.iter().enumerate() {
        let field = rules.see(h.name, h.value)?;
        if matches!(
            field,
            Field::Connection | Field::KeepAlive | Field::ProxyConnection | Field::Te | Field::XForwardedFor
        ) && i < 128
        {
            c.skip |= 1 << i;
        }
        match field {
            Field::Host => match std::str::from_utf8(h.value) {
                Ok(v) => c.host = Some(v),
                Err(_) => c.pingora = true,
            },
            Field::Upgrade => c.tunnel = true,
            Field::Expect => c.pingora = true,
            Field::Connection => {
                for token in h.value.split(|b| *b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        c.close = true;
                    } else if token.eq_ignore_ascii_case(b"upgrade") {
                        c.tunnel = true;
                    }
                }
            }
            Field::XForwardedFor => match (c.xff, std::str::from_utf8(h.value)) {
                (None, Ok(v)) => c.xff = Some(v),
                _ => c.pingora = true,
            },
            Field::XForwardedProto => c.has_proto = true,
            Field::XForwardedHost => c.has_fwd_host = true,
            _ => {}
        }
    }
    let version = if version == 1 { head::Version::Http11 } else { head::Version::Http10 };
    c.body = rules.finish(version)?;
    Ok(c)
}

/// A complete head: refused, handed to pingora, or taken by the fast path with its upstream
/// head written into `out`.
fn fast_request(
    req: &httparse::Request<'_, '_>,
    head: &[u8],
    snap: &Snapshot,
    client_ip: Option<IpAddr>,
    out: &mut Vec<u8>,
    access_log: bool,
) -> Parsed {
    let c = match check(req, head) {
        Ok(c) => c,
        Err(why) => return Parsed::Refuse(why, req.method == Some("HEAD")),
    };
    let hand_off = Parsed::HandOff(HandOff { head_len: head.len(), body: c.body, tunnel: c.tunnel });
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return hand_off;
    };
    if c.tunnel || c.pingora || c.body == head::Body::Chunked {
        return hand_off;
    }
    if !target.starts_with('/') || target.starts_with(OWN_PREFIX) {
        return hand_off;
    }
    let Some(host) = c.host else { return hand_off };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let route = match snap.lookup(Some(host), path) {
        Match::Route(r) if !r.pool.is_empty() && r.strip.is_none() && !r.tls => r.clone(),
        _ => return hand_off,
    };

    out.clear();
    for part in [method, " ", target, " HTTP/1.1\r\n"] {
        out.extend_from_slice(part.as_bytes());
    }
    for (i, h) in req.headers.iter().enumerate() {
        if c.skip & (1 << i) != 0 {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    let prev = c.xff.filter(|v| !v.trim().is_empty());
    let mut ip_buf = [0u8; IP_TEXT_MAX];
    let ip = client_ip.map(|ip| ip_text(ip, &mut ip_buf));
    if prev.is_some() || ip.is_some() {
        out.extend_from_slice(b"X-Forwarded-For: ");
        if let Some(prev) = prev {
            out.extend_from_slice(prev.as_bytes());
            if ip.is_some() {
                out.extend_from_slice(b", ");
            }
        }
        if let Some(ip) = ip {
            out.extend_from_slice(ip.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    if !c.has_proto {
        out.extend_from_slice(b"X-Forwarded-Proto: http\r\n");
    }
    if !c.has_fwd_host {
        out.extend_from_slice(b"X-Forwarded-Host: ");
        out.extend_from_slice(host.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");

    let read_timeout = if route.agents {
        agent_read_timeout(query, route.opts.read_timeout)
    } else {
        Some(route.opts.read_timeout).filter(|d| !d.is_zero())
    };
    Parsed::Request(Request {
        head_len: head.len(),
        content_length: match c.body {
            head::Body::Length(n) => n,
            _ => 0,
        },
        idempotent: matches!(method, "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"),
        head: method == "HEAD",
        close: c.close,
        route,
        read_timeout,
        line: access_log.then(|| format!("{method} {target} HTTP/1.1")),
    })
}

/// How the end of a response body is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    /// No length: the body ends when the instance closes the connection.
    UntilClose,
}

/// A response head from an instance, already rewritten for the client.
struct ResponseHead {
    status: u16,
    head_len: usize,
    framing: Framing,
    /// The instance may be asked for another request on this connection.
    reusable: bool,
    /// An interim (1xx) response: forward it and read the next head.
    interim: bool,
    /// The client connection ends after this response.
    close_client: bool,
}

/// Parses an instance's response head from `buf`; writes the head for the client into `out`
/// (hop-by-hop headers dropped, `Connection: close` added when the client connection ends).
/// `Ok(None)`: incomplete.
fn parse_response(
    buf: &[u8],
    head_request: bool,
    close_client: bool,
    out: &mut Vec<u8>,
) -> Result<Option<ResponseHead>, &'static str> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_RESPONSE_HEAD => return Ok(None),
        _ => return Err("InvalidHTTPHeader"),
    };
    let (Some(status), Some(version)) = (resp.code, resp.version) else {
        return Err("InvalidHTTPHeader");
    };
    if status == 101 {
        // Only an Upgrade request may be switched, and those go to pingora.
        return Err("InvalidHTTPHeader");
    }
    let interim = (100..200).contains(&status);
    let mut framing =
        if head_request || interim || status == 204 || status == 304 { Framing::None } else { Framing::UntilClose };
    let mut reusable = version == 1;
    let mut chunked = false;
    let mut length = None;
    for h in resp.headers.iter() {
        if header_is(h.name, "transfer-encoding") {
            // The last coding decides; only `chunked` has an end of its own.
            chunked =
                h.value.rsplit(|b| *b == b',').next().is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            if !chunked {
                reusable = false;
            }
        } else if header_is(h.name, "content-length") {
            match (length, head::content_length(h.value)) {
                (None, Some(n)) => length = Some(n),
                (Some(a), Some(b)) if a == b => {}
                _ => return Err("InvalidHTTPHeader"),
            }
        } else if header_is(h.name, "connection")
            && h.value.split(|b| *b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
        {
            reusable = false;
        }
    }
    if framing == Framing::UntilClose {
        framing = match (chunked, length) {
            (true, _) => Framing::Chunked,
            (false, Some(n)) => Framing::Length(n),
            (false, None) => Framing::UntilClose,
        };
    }
    if framing == Framing::UntilClose {
        reusable = false;
    }
    let close_client = !interim && (close_client || framing == Framing::UntilClose);

    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(&status_digits(status));
    out.extend_from_slice(b" ");
    out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in resp.headers.iter() {
        if ["connection", "keep-alive", "proxy-connection"].iter().any(|hop| header_is(h.name, hop)) {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    if close_client {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(ResponseHead { status, head_len, framing, reusable, interim, close_client }))
}

/// A status code as three digits, without the formatting machinery.
fn status_digits(status: u16) -> [u8; 3] {
    let s = status.min(999);
    [b'0' + (s / 100) as u8, b'0' + (s / 10 % 10) as u8, b'0' + (s % 10) as u8]
}

/// Finds where a chunked body ends in bytes forwarded as they are (sizes, extensions,
/// trailers and all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunks {
    Size { size: u64, digits: u8 },
    Extension { size: u64 },
    SizeLf { size: u64 },
    Data(u64),
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    TrailerLf,
    EndLf,
    Done,
}

impl Chunks {
    pub(crate) fn new() -> Chunks {
        Chunks::Size { size: 0, digits: 0 }
    }

    /// Consumes bytes of the body; returns how many belong to it (fewer than given only once
    /// the body is complete).
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<usize, &'static str> {
        const BAD: &str = "InvalidChunk";
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            *self = match *self {
                Chunks::Size { size, digits } => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' if digits < 15 => {
                        let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                        Chunks::Size { size: size * 16 + d, digits: digits + 1 }
                    }
                    b';' | b' ' | b'\t' if digits > 0 => Chunks::Extension { size },
                    b'\r' if digits > 0 => Chunks::SizeLf { size },
                    _ => return Err(BAD),
                },
                Chunks::Extension { size } => match b {
                    b'\r' => Chunks::SizeLf { size },
                    _ => Chunks::Extension { size },
                },
                Chunks::SizeLf { size } => match (b, size) {
                    (b'\n', 0) => Chunks::TrailerStart,
                    (b'\n', n) => Chunks::Data(n),
                    _ => return Err(BAD),
                },
                Chunks::Data(n) => {
                    let take = (n.min((bytes.len() - i) as u64)) as usize;
                    i += take;
                    let left = n - take as u64;
                    *self = if left == 0 { Chunks::DataCr } else { Chunks::Data(left) };
                    continue;
                }
                Chunks::DataCr if b == b'\r' => Chunks::DataLf,
                Chunks::DataLf if b == b'\n' => Chunks::new(),
                Chunks::TrailerStart if b == b'\r' => Chunks::EndLf,
                Chunks::TrailerStart | Chunks::Trailer => {
                    if b == b'\r' {
                        Chunks::TrailerLf
                    } else {
                        Chunks::Trailer
                    }
                }
                Chunks::TrailerLf if b == b'\n' => Chunks::TrailerStart,
                Chunks::EndLf if b == b'\n' => {
                    *self = Chunks::Done;
                    return Ok(i + 1);
                }
                Chunks::Done => return Ok(i),
                _ => return Err(BAD),
            };
            i += 1;
        }
        Ok(i)
    }
}

/// Tracks a response body as it is relayed.
struct Body {
    framing: Framing,
    chunks: Chunks,
    done: bool,
}

impl Body {
    fn new(framing: Framing) -> Body {
        Body { framing, chunks: Chunks::new(), done: framing == Framing::None }
    }

    /// How many of `bytes` belong to the body.
    fn take(&mut self, bytes: &[u8]) -> Result<usize, &'static str> {
        if self.done {
            return Ok(0);
        }
        match self.framing {
            Framing::None => Ok(0),
            Framing::Length(left) => {
                let n = left.min(bytes.len() as u64);
                self.framing = Framing::Length(left - n);
                self.done = left == n;
                Ok(n as usize)
            }
            Framing::Chunked => {
                let n = self.chunks.feed(bytes)?;
                self.done = self.chunks == Chunks::Done;
                Ok(n)
            }
            Framing::UntilClose => Ok(bytes.len()),
        }
    }
}

/// An idle connection to an instance.
struct Upstream {
    stream: TcpStream,
    buf: BytesMut,
    idle_since: Instant,
}

/// Idle upstream connections of the worker thread, newest last.
struct Pool {
    idle: HashMap<SocketAddr, Vec<Upstream>>,
    last_sweep: Instant,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool { idle: HashMap::new(), last_sweep: Instant::now() });
}

/// The newest idle connection to `addr` that the instance has not closed.
fn pool_take(addr: SocketAddr, now: Instant) -> Option<Upstream> {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let list = p.idle.get_mut(&addr)?;
        while let Some(up) = list.pop() {
            if now.saturating_duration_since(up.idle_since) >= UPSTREAM_IDLE {
                // The rest are older still.
                list.clear();
                return None;
            }
            // A connection the instance closed (or wrote to unasked) is readable: tokio only
            // makes this syscall when the reactor saw it become readable.
            let mut probe = [0u8; 1];
            match up.stream.try_read(&mut probe) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(up),
                _ => continue,
            }
        }
        None
    })
}

fn pool_put(addr: SocketAddr, mut up: Upstream, now: Instant) {
    up.idle_since = now;
    if up.buf.capacity() > KEEP_BUFFER {
        up.buf = BytesMut::with_capacity(READ_CHUNK);
    }
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        if now.saturating_duration_since(p.last_sweep) > Duration::from_secs(5) {
            p.last_sweep = now;
            p.idle.retain(|_, list| {
                list.retain(|up| now.saturating_duration_since(up.idle_since) < UPSTREAM_IDLE);
                !list.is_empty()
            });
        }
        let list = p.idle.entry(addr).or_default();
        if list.len() >= POOL_PER_ADDR {
            list.remove(0);
        }
        list.push(up);
    })
}

async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Upstream, &'static str> {
    let stream = match pingora_timeout::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => return Err("ConnectTimedout"),
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => return Err("ConnectRefused"),
        Ok(Err(_)) => return Err("ConnectError"),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    Ok(Upstream { stream, buf: BytesMut::with_capacity(READ_CHUNK), idle_since: Instant::now() })
}

/// Reads more from an instance, within the route's read timeout.
async fn read_upstream(up: &mut Upstream, timeout: Option<Duration>) -> Result<usize, &'static str> {
    if up.buf.capacity() - up.buf.len() < READ_CHUNK / 4 {
        up.buf.reserve(READ_CHUNK);
    }
    let read = up.stream.read_buf(&mut up.buf);
    let got = match timeout {
        Some(t) => pingora_timeout::timeout(t, read).await.map_err(|_| "ReadTimedout")?,
        None => read.await,
    };
    match got {
        Ok(0) => Err("ConnectionClosed"),
        Ok(n) => Ok(n),
        Err(_) => Err("ReadError"),
    }
}

/// Reads more from the client into `read`, waiting at most `wait`. `Ok(0)`: the client closed.
async fn read_client(stream: &mut Stream, read: &mut BytesMut, wait: Duration) -> io::Result<usize> {
    if read.capacity() - read.len() < 1024 {
        read.reserve(4096);
    }
    match pingora_timeout::timeout(wait, stream.read_buf(read)).await {
        Ok(r) => r,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// How one attempt on one instance ended.
enum Attempt {
    /// The response was relayed.
    Done { status: u16, body_sent: u64, close_client: bool },
    /// A pooled connection the instance had closed: nothing was answered, try a new one.
    Stale,
    /// The instance failed before anything reached the client.
    Failed { why: &'static str, retryable: bool },
    /// The instance failed after the response began; the client connection must end.
    Broken { status: u16, body_sent: u64, why: &'static str },
    /// The client went away or failed.
    Client { status: u16, body_sent: u64 },
}

impl App {
    async fn next_request(&self, conn: &mut Conn) -> Next {
        let (log, header_timeout, keepalive) = {
            let c = self.shared.config.load();
            (c.access_log, c.client_header_timeout, c.keepalive_timeout)
        };
        // When the head must be complete (nginx `client_header_timeout`): counted from the
        // accept for a connection's first request, else from when the request began to arrive.
        // No clock is read for a head that comes whole in one read.
        let mut deadline = (!conn.served).then(|| Instant::now() + header_timeout);
        // Bytes of `conn.read` known to hold no complete head: a head ends with a newline, so it
        // is parsed again only once one more has come.
        let mut seen = 0;
        // A complete head, checked and routed, with the upstream head written.
        let req = loop {
            let len = conn.read.len();
            if len > seen {
                let parsed = if !conn.served && H2_PREFACE.starts_with(&conn.read[..len.min(H2_PREFACE.len())]) {
                    if len >= H2_PREFACE.len() {
                        return Next::H2;
                    }
                    Parsed::Partial
                } else if seen == 0 || conn.read[seen..].contains(&b'\n') {
                    let snap = self.shared.snapshot.load();
                    parse_request(&conn.read, &snap, conn.client_ip, &mut conn.up_head, log)
                } else {
                    partial(&conn.read)
                };
                match parsed {
                    Parsed::Request(r) => break r,
                    Parsed::HandOff(h) => return Next::HandOff(h, keepalive),
                    Parsed::Refuse(why, head) => return self.refuse(conn, why, head, log).await,
                    Parsed::Partial => {}
                }
                seen = len;
                deadline.get_or_insert_with(|| Instant::now() + header_timeout);
            }
            let idle = conn.read.is_empty();
            if idle && *conn.shutdown.borrow() {
                return Next::Close;
            }
            // An idle kept-alive connection waits for `keepalive_timeout`; like nginx, lb then
            // closes it without an answer, and also one whose head is late.
            let wait = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => keepalive,
            };
            if wait.is_zero() {
                return Next::Close;
            }
            let got = tokio::select! {
                biased;
                r = read_client(&mut conn.stream, &mut conn.read, wait) => r,
                // A graceful stop closes idle connections at once.
                _ = conn.shutdown.changed(), if idle => return Next::Close,
            };
            match got {
                Ok(0) | Err(_) => return Next::Close,
                Ok(_) => {}
            }
        };
        conn.served = true;

        let start = Instant::now();
        let draining = self.shared.draining.load(Ordering::Relaxed) || *conn.shutdown.borrow();
        let (status, body_sent, keep_alive, error) = self.forward(conn, &req, draining).await;
        let route = &req.route;
        let took = start.elapsed();
        route.metrics.request(status, took);
        if let Some(line) = &req.line {
            let request = format_args!("{line}");
            access_log(conn.client_ip, request, status, body_sent, &route.name, &conn.tried, took, error);
        }
        if conn.up_head.capacity() > KEEP_BUFFER {
            conn.up_head = Vec::with_capacity(1024);
        }
        if keep_alive {
            Next::KeepAlive
        } else {
            Next::Close
        }
    }

    /// nginx's answer to a refused request. The connection then ends, as nginx ends it, so
    /// nothing the client sent after the head is read as a request.
    async fn refuse(&self, conn: &mut Conn, why: Refusal, head_request: bool, log: bool) -> Next {
        let start = Instant::now();
        let (page, body_len) = why.page(head_request);
        let (status, _) = why.status();
        let _ = conn.stream.write_all(&page).await;
        let _ = conn.stream.flush().await;
        self.shared.metrics.route("none").request(status, start.elapsed());
        if log {
            let why = why.why();
            access_log(
                conn.client_ip,
                format_args!("-"),
                status,
                body_len as u64,
                "-",
                &[],
                start.elapsed(),
                Some(&why),
            );
        }
        // Half-close, then read and drop what is still coming (nginx's lingering close): a
        // close with unread bytes would reset the connection, and the answer could be lost.
        let _ = conn.stream.shutdown().await;
        let until = Instant::now() + LINGER;
        loop {
            conn.read.clear();
            let wait = until.saturating_duration_since(Instant::now());
            match read_client(&mut conn.stream, &mut conn.read, wait).await {
                Ok(n) if n > 0 && !wait.is_zero() => {}
                _ => return Next::Close,
            }
        }
    }

    /// Sends the request to an instance, retrying elsewhere as pingora's side would, and relays
    /// the answer. Returns the status, body bytes sent, whether the client connection goes on,
    /// and the error that ended the attempt, if any.
    async fn forward(&self, conn: &mut Conn, req: &Request, draining: bool) -> (u16, u64, bool, Option<&'static str>) {
        let route = &req.route;
        // The body bytes that came with the head go with it, so the whole request can be
        // re-sent when it is all here.
        let with_head = (conn.read.len() - req.head_len).min(req.content_length.min(usize::MAX as u64) as usize);
        conn.up_head.extend_from_slice(&conn.read[req.head_len..req.head_len + with_head]);
        conn.read.advance(req.head_len + with_head);
        let rest = req.content_length - with_head as u64;
        let close_client = req.close || draining;
        conn.tried.clear();
        let mut last_error = None;
        loop {
            let now = Instant::now();
            let Some(backend) = route.next_instance(conn.client_ip, &conn.tried, now) else {
                let body = format!("lb: {}\n", route.none_answered(&conn.tried));
                return self.error_page(conn, req, 502, body, last_error).await;
            };
            let addr = backend.addr;
            let stats = backend.stats.clone();
            conn.tried.push(addr);
            let _active = stats.begin();
            let mut up = pool_take(addr, now);
            let mut reused = up.is_some();
            loop {
                let mut fresh = match up.take() {
                    Some(u) => u,
                    None => match connect(addr, route.opts.connect_timeout).await {
                        Ok(u) => u,
                        Err(why) => {
                            route.upstream_failed(&stats, UpstreamError::Connect, Some(&addr));
                            last_error = Some(why);
                            break;
                        }
                    },
                };
                let attempt = self.attempt(conn, &mut fresh, req, rest, reused, close_client, &stats).await;
                match attempt {
                    (Attempt::Done { status, body_sent, close_client }, reusable) => {
                        if reusable {
                            pool_put(addr, fresh, Instant::now());
                        }
                        return (status, body_sent, !close_client, None);
                    }
                    (Attempt::Stale, _) => {
                        reused = false;
                        continue;
                    }
                    (Attempt::Failed { why, retryable }, _) => {
                        route.upstream_failed(&stats, UpstreamError::Proxy, Some(&addr));
                        last_error = Some(why);
                        if !retryable {
                            let body = format!("lb: proxying to {} failed: {why}\n", route.what);
                            return self.error_page(conn, req, 502, body, Some(why)).await;
                        }
                        break;
                    }
                    (Attempt::Broken { status, body_sent, why }, _) => {
                        route.upstream_failed(&stats, UpstreamError::Proxy, Some(&addr));
                        return (status, body_sent, false, Some(why));
                    }
                    (Attempt::Client { status, body_sent }, _) => return (status, body_sent, false, None),
                }
            }
        }
    }

    /// lb's own answer when no instance could answer; the connection ends after it, as on
    /// pingora's side.
    async fn error_page(
        &self,
        conn: &mut Conn,
        req: &Request,
        status: u16,
        body: String,
        why: Option<&'static str>,
    ) -> (u16, u64, bool, Option<&'static str>) {
        let reason = http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("");
        let mut page = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        let sent = if req.head { 0 } else { body.len() as u64 };
        if !req.head {
            page.extend_from_slice(body.as_bytes());
        }
        let _ = conn.stream.write_all(&page).await;
        (status, sent, false, why)
    }

    /// One try on one instance: the request out, the response back. The second value says
    /// whether the instance's connection may serve another request.
    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        conn: &mut Conn,
        up: &mut Upstream,
        req: &Request,
        mut rest: u64,
        reused: bool,
        close_client: bool,
        stats: &Stats,
    ) -> (Attempt, bool) {
        // A body still on its way from the client is read once; it cannot be sent again.
        let resendable = rest == 0;
        // A pooled connection the instance closed fails at once: the write is refused, or the
        // read ends with nothing. A request that could not be written whole cannot have been
        // acted on, so it goes again on a new connection; one that was written and met a
        // closed connection goes again only if it is idempotent (the instance may have acted on
        // it and died before answering). Either way only if the whole body is still in hand.
        let failed = |why, written: bool, anything_back: bool| {
            if reused && resendable && !anything_back && why != "ReadTimedout" && (!written || req.idempotent) {
                Attempt::Stale
            } else {
                Attempt::Failed { why, retryable: req.idempotent && resendable }
            }
        };
        if up.stream.write_all(&conn.up_head).await.is_err() {
            return (failed("WriteError", false, false), false);
        }
        while rest > 0 {
            if conn.read.is_empty() {
                match read_client(&mut conn.stream, &mut conn.read, CLIENT_BODY_IDLE).await {
                    Ok(0) | Err(_) => return (Attempt::Client { status: 0, body_sent: 0 }, false),
                    Ok(_) => {}
                }
            }
            let n = (conn.read.len() as u64).min(rest) as usize;
            if up.stream.write_all(&conn.read[..n]).await.is_err() {
                return (Attempt::Failed { why: "WriteError", retryable: false }, false);
            }
            conn.read.advance(n);
            rest -= n as u64;
        }

        // The response head; interim (1xx) heads are passed on as they come.
        up.buf.clear();
        let head = loop {
            match parse_response(&up.buf, req.head, close_client, &mut conn.down_head) {
                Ok(Some(h)) if h.interim => {
                    if conn.stream.write_all(&conn.down_head).await.is_err() {
                        return (Attempt::Client { status: h.status, body_sent: 0 }, false);
                    }
                    up.buf.advance(h.head_len);
                    continue;
                }
                Ok(Some(h)) => break h,
                Ok(None) => {}
                Err(why) => return (Attempt::Failed { why, retryable: false }, false),
            }
            let anything_back = !up.buf.is_empty();
            if let Err(why) = read_upstream(up, req.read_timeout).await {
                return (failed(why, true, anything_back), false);
            }
        };
        stats.record_success();
        let status = head.status;

        // The head and whatever body came with it go to the client in one write.
        let mut body = Body::new(head.framing);
        let first = match body.take(&up.buf[head.head_len..]) {
            Ok(n) => n,
            Err(why) => return (Attempt::Failed { why, retryable: false }, false),
        };
        conn.down_head.extend_from_slice(&up.buf[head.head_len..head.head_len + first]);
        let mut extra = up.buf.len() > head.head_len + first;
        if conn.stream.write_all(&conn.down_head).await.is_err() {
            return (Attempt::Client { status, body_sent: 0 }, false);
        }
        if conn.down_head.capacity() > KEEP_BUFFER {
            conn.down_head = Vec::with_capacity(512);
        }
        let mut sent = first as u64;
        while !body.done {
            up.buf.clear();
            match read_upstream(up, req.read_timeout).await {
                Ok(_) => {}
                Err("ConnectionClosed") if head.framing == Framing::UntilClose => break,
                Err(why) => return (Attempt::Broken { status, body_sent: sent, why }, false),
            }
            let n = match body.take(&up.buf) {
                Ok(n) => n,
                Err(why) => return (Attempt::Broken { status, body_sent: sent, why }, false),
            };
            extra = up.buf.len() > n;
            if conn.stream.write_all(&up.buf[..n]).await.is_err() {
                return (Attempt::Client { status, body_sent: sent }, false);
            }
            sent += n as u64;
        }
        let _ = conn.stream.flush().await;
        (Attempt::Done { status, body_sent: sent, close_client: head.close_client }, head.reusable && !extra)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_end_where_the_last_chunk_and_trailers_end() {
        let body = b"4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nX-Trailer: yes\r\n\r\nNEXT";
        let mut c = Chunks::new();
        assert_eq!(c.feed(body), Ok(body.len() - 4));
        assert_eq!(c, Chunks::Done);
        // The same bytes one at a time.
        let mut c = Chunks::new();
        let mut n = 0;
        for b in body.chunks(1) {
            n += c.feed(b).unwrap();
        }
        assert_eq!(n, body.len() - 4);
        let mut c = Chunks::new();
        assert_eq!(c.feed(b"0\r\n\r\n"), Ok(5));
        assert_eq!(c, Chunks::Done);
        assert!(Chunks::new().feed(b"zz\r\n").is_err());
        assert!(Chunks::new().feed(b"4\r\nWikiXX").is_err());
    }

    #[test]
    fn response_framing_and_reuse() {
        let mut out = Vec::new();
        let h = parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello",
            false,
            false,
            &mut out,
        )
        .unwrap()
        .unwrap();
        assert_eq!((h.status, h.framing, h.reusable, h.close_client), (200, Framing::Length(5), true, false));
        assert_eq!(out, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
        let h = parse_response(b"HTTP/1.0 200 OK\r\n\r\n", false, false, &mut out).unwrap().unwrap();
        assert_eq!((h.framing, h.reusable, h.close_client), (Framing::UntilClose, false, true));
        assert!(out.ends_with(b"Connection: close\r\n\r\n"));
        let h = parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", true, false, &mut out)
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::None, "a HEAD answer has no body");
        let h = parse_response(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n", false, false, &mut out)
            .unwrap()
            .unwrap();
        assert_eq!((h.framing, h.reusable, h.close_client), (Framing::None, false, false));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Len", false, false, &mut out).unwrap().is_none());
        assert!(parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            false,
            false,
            &mut out
        )
        .is_err());
    }

    #[test]
    fn status_digits_are_three() {
        assert_eq!(&status_digits(200), b"200");
        assert_eq!(&status_digits(503), b"503");
        assert_eq!(&status_digits(101), b"101");
    }
}
