//! The HTTP request path, in process: an input is a raw HTTP/1 request (head, then body), whose
//! head is parsed with `httparse`, the parser hyper itself uses, and checked as hyper checks it
//! (method, request target, header names and values); the request is then answered by
//! `agent::http::handle`, the function the HTTP port and the server port call for every request.
//! Hyper's own framing (chunked bodies, pipelining) is hyper's to fuzz: the body here is
//! whatever follows the head, so a mutated body never loses its request to a wrong
//! `Content-Length`.
//!
//! Asserts: no panic, an answer within [`super::REQUEST_LIMIT`], and a 5xx only with one of the
//! messages Consul answers 500 with too (anything else is a finding).

use super::{env, Env, REQUEST_LIMIT};
use agent::http::routes::Endpoint;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};

/// Paths, methods, query parameters and JSON field names of the write endpoints.
pub const DICT: &[&str] = &[
    "GET ",
    "PUT ",
    "POST ",
    "DELETE ",
    "OPTIONS ",
    " HTTP/1.1\r\n",
    "Host: a\r\n",
    "\r\n\r\n",
    "Accept: text/plain\r\n",
    "/v1/kv/",
    "/v1/agent/service/register",
    "/v1/agent/check/register",
    "/v1/catalog/register",
    "/v1/catalog/deregister",
    "/v1/session/create",
    "/v1/txn",
    "/v1/coordinate/update",
    "/v1/operator/autopilot/configuration",
    "/v1/agent/check/update/",
    "/v1/event/fire/",
    "/v1/health/service/",
    "/v1/catalog/service/",
    "/v1/agent/services",
    "/v1/snapshot",
    "?index=",
    "&wait=",
    "?filter=",
    "&dc=",
    "?cas=",
    "?flags=",
    "?acquire=",
    "?release=",
    "?recurse",
    "?keys",
    "&separator=",
    "?raw",
    "?stale",
    "&consistent",
    "?pretty",
    "&hash=",
    "?near=_agent",
    "?node-meta=",
    "&tag=",
    "?passing",
    "?enable=true",
    "&reason=",
    "\"Name\":",
    "\"ID\":",
    "\"Port\":",
    "\"Check\":",
    "\"Checks\":",
    "\"TTL\":\"",
    "\"Interval\":\"",
    "\"Tags\":[",
    "\"Meta\":{",
    "\"Weights\":",
    "\"Node\":",
    "\"Address\":",
    "\"Service\":",
    "\"Verb\":\"",
    "\"KV\":",
    "\"Value\":",
    "\"Session\":",
    "\"LockDelay\":",
    "\"Behavior\":\"",
    "\"Coord\":",
    "\"Vec\":[",
    "\"Status\":\"",
    "\"Output\":",
    "\"CleanupDeadServers\":",
    "\"MaxTrailingLogs\":",
    "\"ServerStabilizationTime\":",
    "\"Proxy\":",
    "\"Connect\":",
    "\"SidecarService\":",
    "\"DeregisterCriticalServiceAfter\":",
    "%2F",
    "%20",
    "+",
    "..%2F",
];

pub const QUERY_DICT: &[&str] =
    &["&", "=", "+", "%", "%2", "%2F", "%C3%A9", "%FF", "%E2%82", "index", "wait", "filter", "5m", "1s"];

/// A request as the HTTP port gets it.
pub fn request(method: &str, path_and_query: &str, body: &[u8]) -> http::Request<Full<Bytes>> {
    let mut req = http::Request::new(Full::new(Bytes::copy_from_slice(body)));
    *req.method_mut() = http::Method::from_bytes(method.as_bytes()).unwrap_or(http::Method::GET);
    *req.uri_mut() = path_and_query.parse().unwrap_or_else(|_| http::Uri::from_static("/"));
    req.headers_mut().insert(http::header::HOST, http::HeaderValue::from_static("127.0.0.1:8500"));
    req
}

/// Parses a raw request as hyper would; `None` where hyper answers 400 (or waits for more)
/// without calling the service.
pub fn parse_request(data: &[u8]) -> Option<http::Request<Full<Bytes>>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut head = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(len) = head.parse(data).ok()? else { return None };
    let mut req = http::Request::new(Full::new(Bytes::copy_from_slice(&data[len..])));
    *req.method_mut() = http::Method::from_bytes(head.method?.as_bytes()).ok()?;
    *req.uri_mut() = http::Uri::try_from(head.path?).ok()?;
    *req.version_mut() = if head.version? == 0 { http::Version::HTTP_10 } else { http::Version::HTTP_11 };
    for h in head.headers.iter() {
        let name = http::HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let value = http::HeaderValue::from_bytes(h.value).ok()?;
        req.headers_mut().append(name, value);
    }
    // The address the HTTP port records for every connection.
    req.extensions_mut().insert(agent::http::ClientAddr(([127, 0, 0, 1], 40000).into()));
    Some(req)
}

/// Answers `req` on the shared agent: its status, and its body if it is an error (a success
/// may be a stream that never ends, `/v1/agent/monitor`).
pub fn answer(env: &Env, req: http::Request<Full<Bytes>>) -> (u16, String) {
    env.rt.block_on(async {
        let resp = tokio::time::timeout(REQUEST_LIMIT, agent::http::handle(env.agent.clone(), req))
            .await
            .unwrap_or_else(|_| panic!("no answer within {REQUEST_LIMIT:?}"));
        let status = resp.status().as_u16();
        if status < 400 {
            return (status, String::new());
        }
        let body = tokio::time::timeout(REQUEST_LIMIT, resp.into_body().collect())
            .await
            .unwrap_or_else(|_| panic!("an error body not sent within {REQUEST_LIMIT:?}"))
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        (status, String::from_utf8_lossy(&body).into_owned())
    })
}

/// The 500s Consul answers too, for requests that are well formed but cannot be served:
/// another datacenter, no such node or session, a disabled feature. (Consul answers these with
/// 500 as well; see the report of the fuzzing issue for the list and its sources.)
const CONSUL_500S: &[&str] = &[
    "No path to datacenter",
    // The fuzz agent runs without gossip: join, force-leave and members need it.
    "gossip is not running",
    "agent: No node found with name",
    // Sessions and locks that name what is not there (Consul's state store refuses them the
    // same way, and its HTTP layer answers 500).
    "invalid session",
    "Missing node registration",
    "Missing check",
    "Scripts are disabled on this agent",
    "keyring operations are not available",
    "keyring changes are not supported",
    "cannot find peer to transfer leadership to",
    "leadership transfer is not supported",
    // WAN federation is not there yet (README).
    "over the WAN: this agent has no WAN pool",
    // Consul refuses a coordinate of another dimension or with NaN in it the same way.
    "incompatible coordinate",
    "invalid coordinate",
];

/// Endpoints the target does not call: they stop the shared agent (a graceful leave) or take it
/// out of its own Raft configuration, after which every write would fail.
fn ends_the_agent(e: &Endpoint) -> bool {
    matches!(e, Endpoint::AgentLeave | Endpoint::OperatorRaftPeer)
}

pub fn http_request(data: &[u8]) {
    let env = env();
    let Some(req) = parse_request(data) else {
        crate::feature(1);
        return;
    };
    let endpoint = agent::http::endpoint_of(req.method(), req.uri());
    if endpoint.as_ref().is_ok_and(ends_the_agent) {
        crate::feature(2);
        return;
    }
    let (status, body) = answer(env, req);
    assert!((100..600).contains(&status), "status {status}");
    // The agent's health endpoints answer a critical service with 503, as Consul's do.
    let health = matches!(endpoint, Ok(Endpoint::AgentHealthByName(_) | Endpoint::AgentHealthById(_)));
    if status >= 500 && !(health && status == 503) {
        assert!(
            CONSUL_500S.iter().any(|m| body.contains(m)),
            "{status} for {:?}: {body}",
            endpoint.as_ref().map_err(|e| e.status())
        );
    }
    // The route taken and the status reached (and for 4xx, the kind of complaint).
    let route = match &endpoint {
        Ok(e) => format!("{e:?}").split('(').next().unwrap_or_default().to_string(),
        Err(e) => e.status().to_string(),
    };
    crate::feature(crate::hash(route.as_bytes()) ^ status as u64);
    if (400..500).contains(&status) {
        crate::feature(crate::error_kind(&body));
    }
}

/// `Query::parse` against a plain reading of the same string, `encode_sorted` round trips, and
/// `percent_decode` inverts percent-encoding.
pub fn query_string(data: &[u8]) {
    use agent::http::{percent_decode, Query};
    let s = String::from_utf8_lossy(data);
    let q = Query::parse(Some(&s));
    // What each key's values are, read the obvious way.
    let mut plain: Vec<(String, String)> = Vec::new();
    for part in s.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        plain.push((percent_decode(&k.replace('+', " ")), percent_decode(&v.replace('+', " "))));
    }
    for (k, _) in &plain {
        let want: Vec<&str> = plain.iter().filter(|(k2, _)| k2 == k).map(|(_, v)| v.as_str()).collect();
        assert_eq!(q.all(k), want, "values of {k:?}");
        assert_eq!(q.get(k), want.first().copied());
        assert!(q.has(k));
        let _ = q.flag(k);
    }
    // Go's `url.Values.Encode` order, and back.
    let encoded = q.encode_sorted();
    let again = Query::parse(Some(&encoded));
    let mut sorted = plain.clone();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (k, _) in &sorted {
        let want: Vec<&str> = sorted.iter().filter(|(k2, _)| k2 == k).map(|(_, v)| v.as_str()).collect();
        assert_eq!(again.all(k), want, "{k:?} after encoding as {encoded:?}");
    }
    assert_eq!(again.encode_sorted(), encoded);
    // Escaping every byte and decoding gives the text back.
    let escaped: String = s.bytes().map(|b| format!("%{b:02x}")).collect();
    assert_eq!(percent_decode(&escaped), s);
    // The parameters a read takes from it.
    if let Some(w) = q.get("wait") {
        if let Ok(d) = api::duration::parse(w) {
            // Exact while the nanoseconds fit an f64's mantissa (the parser sums in f64).
            if d.as_nanos() < 1 << 53 {
                assert_eq!(api::duration::parse(&api::duration::format(d)), Ok(d), "{w:?}");
            }
        }
    }
    crate::feature(plain.len().min(8) as u64);
}
