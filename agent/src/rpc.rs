//! The server port (8300): only servers listen here, and only servers and agents of this
//! cluster are answered. What it serves, and nothing more:
//! - Raft's RPCs from other servers (`/raft/*`, with the pre-vote our Raft adds);
//! - the internal RPCs of followers and client agents (`/rpc/*`: writes, read barriers, a
//!   client's view of its node, DNS questions, a server's Raft stats for autopilot);
//! - forwarded HTTP API requests (`/v1/...` with the forwarding header), and only for endpoints
//!   a server answers for others (catalog, health, KV, sessions, status, operator, snapshots).
//!   Agent-local actions (leave, join, reload, maintenance, service and check registration) are
//!   refused: an agent does those for its own HTTP clients, never for the network.
//!
//! Every request must carry the cluster's `peer_auth` header (an HMAC under the gossip key when
//! there is one), address the server by IP (no DNS rebinding), and carry none of the headers
//! browsers add (`Origin`, `Sec-Fetch-*`), so no web page can reach it. Bodies are capped, HTTP/1
//! heads must arrive within [`HEAD_TIMEOUT`], and the accept loop backs off when accepting fails
//! (out of file descriptors). JSON over HTTP/1 or HTTP/2.

use crate::agent::{Agent, NodeView};
use crate::dns::Resolver;

use crate::raft::TypeConfig;
use crate::server::{Error, Server};
use crate::structs::Request;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::{de::DeserializeOwned, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The largest Raft RPC body: an AppendEntries of `raft::MAX_PAYLOAD_ENTRIES` entries, each at
/// most `server::MAX_BATCH_BYTES` of JSON, or a snapshot chunk.
pub const RAFT_BODY_MAX: usize = crate::raft::MAX_PAYLOAD_ENTRIES as usize * crate::server::MAX_BATCH_BYTES + (1 << 20);

/// How long a connection may take to send a request head (HTTP/1).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

pub struct RpcServer {
    pub agent: Arc<Agent>,
    pub dns: Arc<Resolver>,
    pub listener: TcpListener,
}

type Reply = hyper::Response<http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>>;

impl RpcServer {
    pub async fn bind(agent: Arc<Agent>, dns: Arc<Resolver>, addr: SocketAddr) -> std::io::Result<RpcServer> {
        Ok(RpcServer { agent, dns, listener: TcpListener::bind(addr).await? })
    }

    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            let (stream, peer) = tokio::select! {
                r = self.listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: retrying at once would spin.
                        tracing::warn!(error = %e, "rpc accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = shutdown.changed() => return,
            };
            let _ = stream.set_nodelay(true);
            let agent = self.agent.clone();
            let dns = self.dns.clone();
            tokio::spawn(async move {
                let tls = agent.tls.clone();
                let mut first = [0u8; 1];
                let tls_hello = match tokio::time::timeout(HEAD_TIMEOUT, stream.peek(&mut first)).await {
                    Ok(Ok(1)) => first[0] == crate::tls::HANDSHAKE,
                    _ => return,
                };
                match (tls_hello, tls.as_ref().and_then(|t| t.rpc_acceptor())) {
                    (true, Some(acceptor)) => match tokio::time::timeout(HEAD_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => serve_conn(agent, dns, s).await,
                        Ok(Err(e)) => tracing::warn!(peer = %peer, error = %e, "rpc: TLS handshake failed"),
                        Err(_) => tracing::warn!(peer = %peer, "rpc: TLS handshake timed out"),
                    },
                    (true, None) => {
                        tracing::warn!(peer = %peer, "rpc: refused a TLS connection: this server has no certificate")
                    }
                    (false, _) if tls.as_ref().is_some_and(|t| t.rpc_requires_tls()) => tracing::warn!(
                        peer = %peer,
                        "rpc: refused a plain connection: verify_incoming requires TLS with a client certificate"
                    ),
                    (false, _) => serve_conn(agent, dns, stream).await,
                }
            });
        }
    }
}

/// Serves one accepted connection (plain or TLS) of the server port.
async fn serve_conn<I>(agent: Arc<Agent>, dns: Arc<Resolver>, io: I)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        use futures::future::{Either, FutureExt};
        if let Err(refusal) = admit(&agent, &req) {
            return Either::Right(Box::pin(std::future::ready(Ok(refusal))) as RpcFuture);
        }
        // Forwarded blocking queries park here: keep only `http::handle`'s small future.
        if req.uri().path().starts_with("/v1/") {
            return Either::Left(crate::http::handle(agent.clone(), req).map(Ok));
        }
        let agent = agent.clone();
        let dns = dns.clone();
        Either::Right(Box::pin(async move {
            let Some(server) = agent.server.clone() else {
                return Ok(status(503, "not a server").map(|b| b.boxed()));
            };
            Ok(handle(server, &agent, &dns, req).await.map(|b| b.boxed()))
        }))
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEAD_TIMEOUT);
    builder.http2().max_concurrent_streams(4096);
    let _ = builder.serve_connection(TokioIo::new(io), svc).await;
}

type RpcFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Reply, std::convert::Infallible>> + Send>>;

/// Whether the server port answers `req` at all; the refusal otherwise.
fn admit(agent: &Agent, req: &hyper::Request<Incoming>) -> Result<(), Reply> {
    let refuse = |code: u16, msg: &str| Err(status(code, msg).map(|b| b.boxed()));
    let h = req.headers();
    if ["origin", "sec-fetch-site", "sec-fetch-mode", "sec-fetch-dest"].iter().any(|n| h.contains_key(*n)) {
        return refuse(403, "the server port does not answer browsers");
    }
    if !agent.peer_auth.admits(h.get(crate::peer_auth::HEADER)) {
        return refuse(403, "the server port answers only servers and agents of this cluster");
    }
    let host = req
        .uri()
        .authority()
        .map(|a| a.host().to_string())
        .or_else(|| h.get(http::header::HOST).and_then(|v| v.to_str().ok()).map(host_of));
    let by_ip =
        host.is_some_and(|h| h.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>().is_ok());
    if !by_ip {
        return refuse(403, "the server port must be addressed by IP");
    }
    if req.uri().path().starts_with("/v1/") {
        let forwarded = h.get(crate::forward::HEADER_HOPS).is_some();
        match crate::http::endpoint_of(req.method(), req.uri()) {
            Ok(e) if forwarded && crate::forward::served_for_others(&e) => {}
            Ok(_) => return refuse(403, "not served on the server port: ask the agent's HTTP API"),
            Err(_) => return refuse(404, "not served on the server port"),
        }
    }
    Ok(())
}

/// The ACL token an internal RPC carries.
fn token_of(req: &hyper::Request<Incoming>) -> Option<String> {
    req.headers().get(crate::peer_auth::TOKEN_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// The body length a request announces, if it announces one.
pub fn declared_length(h: &http::HeaderMap) -> Option<u64> {
    h.get(http::header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// The host of a `Host` header (`1.2.3.4:8300`, `[::1]:8300`, `name`).
fn host_of(h: &str) -> String {
    if let Some(rest) = h.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default().to_string();
    }
    match h.split_once(':') {
        Some((host, _port)) => host.to_string(),
        None => h.to_string(),
    }
}

fn reply<T: Serialize>(v: &T) -> hyper::Response<Full<Bytes>> {
    match serde_json::to_vec(v) {
        Ok(b) => hyper::Response::new(Full::new(Bytes::from(b))),
        Err(e) => status(500, &e.to_string()),
    }
}

fn status(code: u16, msg: &str) -> hyper::Response<Full<Bytes>> {
    let mut r = hyper::Response::new(Full::new(Bytes::from(msg.to_string())));
    *r.status_mut() = hyper::StatusCode::from_u16(code).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    r
}

/// The JSON body, refused with 413 past `limit` bytes.
async fn body<T: DeserializeOwned>(
    req: hyper::Request<Incoming>,
    limit: usize,
) -> Result<T, hyper::Response<Full<Bytes>>> {
    if declared_length(req.headers()).is_some_and(|n| n > limit as u64) {
        return Err(status(413, &format!("request body too large, max size: {limit} bytes")));
    }
    let bytes = match Limited::new(req.into_body(), limit).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            return Err(status(413, &format!("request body too large, max size: {limit} bytes")))
        }
        Err(e) => return Err(status(400, &e.to_string())),
    };
    serde_json::from_slice(&bytes).map_err(|e| status(400, &e.to_string()))
}

async fn handle(
    server: Server,
    agent: &Agent,
    dns: &Resolver,
    req: hyper::Request<Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    // An internal RPC carries at most what the HTTP API accepts, each byte of a value spelled as
    // a JSON number (up to four characters).
    let rpc_max = crate::http::body_limit(&agent.config) * 4;
    let result = async {
        Ok::<_, hyper::Response<Full<Bytes>>>(match path.as_str() {
            "/raft/append" => {
                let r: AppendEntriesRequest<TypeConfig> = body(req, RAFT_BODY_MAX).await?;
                reply(&server.append_entries(r).await)
            }
            "/raft/vote" => {
                let r: VoteRequest<u64> = body(req, rpc_max).await?;
                reply(&server.raft.vote(r).await)
            }
            "/raft/snapshot" => {
                let r: InstallSnapshotRequest<TypeConfig> = body(req, RAFT_BODY_MAX).await?;
                reply(&server.install_snapshot(r).await)
            }
            "/raft/prevote" => {
                let r: crate::raft::prevote::Request = body(req, rpc_max).await?;
                reply(&server.pre_vote(&r))
            }
            "/rpc/stats" => reply(&server.stats()),
            "/rpc/apply" => {
                // A client agent's (or another server's) own sync: allowed as its token allows.
                let token = token_of(&req);
                let r: Request = body(req, rpc_max).await?;
                if agent.acl.enabled() {
                    let st = agent.store.read();
                    let checked = agent
                        .acl
                        .resolve_local(token.as_deref(), &st.acl, r.now_ms)
                        .and_then(|id| crate::acl::commands::authorize(&id, &r.command, &st));
                    if let Err(e) = checked {
                        drop(st);
                        return Ok(reply(&Ok::<_, Error>(crate::structs::Response::Error(e.to_string()))));
                    }
                }
                reply(&server.write_request(r).await)
            }
            "/rpc/connect/leaf" => {
                // A client agent's `/v1/agent/connect/ca/leaf/:service`, for its caller's token.
                let token = token_of(&req);
                let service: String = body(req, rpc_max).await?;
                let allowed = {
                    let st = agent.store.read();
                    agent
                        .acl
                        .resolve_local(token.as_deref(), &st.acl, crate::structs::now_ms())
                        .and_then(|id| id.require(crate::acl::Resource::Service, &service, crate::acl::Access::Write))
                };
                let dc = agent.config.datacenter.clone();
                let answer: Result<serde_json::Value, String> = match allowed {
                    Ok(()) => crate::http::issue_leaf(agent, &service, &dc),
                    Err(e) => Err(e.to_string()),
                };
                reply(&answer)
            }
            "/rpc/query/execute" => {
                // Another datacenter's prepared query failing over here: run it on this catalog.
                let token = token_of(&req);
                let args: serde_json::Value = body(req, rpc_max).await?;
                let limit = args["Limit"].as_u64().unwrap_or(0) as usize;
                let answer: Result<serde_json::Value, String> =
                    crate::http::execute_query_here(agent, &args["Query"], limit, token.as_deref())
                        .map_err(|e| e.to_string());
                reply(&answer)
            }
            "/rpc/coordinate/ping" => {
                // Another server measuring its round trip to this one: its coordinate for ours.
                let (name, theirs): (String, crate::coordinate::Coord) = body(req, rpc_max).await?;
                agent.wan.set_coordinate(&name, theirs);
                let mine = agent.wan.coordinate(&crate::wan_rtt::wan_name(agent)).unwrap_or_default();
                reply(&mine)
            }
            "/rpc/acl/replicate" => {
                // A secondary datacenter's leader copying this one's global ACL objects.
                let token = token_of(&req);
                let (with_tokens, since): (bool, u64) = body(req, rpc_max).await?;
                reply(&crate::acl::replication::replica_for(agent, token.as_deref(), with_tokens, since))
            }
            "/rpc/acl/resolve" => {
                let secret: String = body(req, rpc_max).await?;
                let st = agent.store.read();
                reply(&crate::acl::resolve_in(&st.acl, &secret, &agent.config.datacenter, crate::structs::now_ms()))
            }
            "/rpc/node" => {
                let node: String = body(req, rpc_max).await?;
                reply(&NodeView::of(&agent.store.read(), &node))
            }
            "/rpc/dns" => {
                // Answered for the asking agent's DNS token.
                let token = token_of(&req);
                let (query, udp): (Vec<u8>, bool) = body(req, rpc_max).await?;
                reply(&dns.answer_as(&query, udp, token.as_deref()).await)
            }
            "/rpc/barrier" => {
                let result: Result<u64, Error> = match server.raft.ensure_linearizable().await {
                    Ok(l) => Ok(l.map(|l| l.index).unwrap_or(0)),
                    Err(_) => Err(Error::NoLeader),
                };
                reply(&result)
            }
            _ => status(404, "unknown rpc"),
        })
    }
    .await;
    result.unwrap_or_else(|r| r)
}
