//! Request forwarding, as Consul's RPC layer does it: a client agent sends every catalog, health,
//! KV, session and operator request to a server; a follower sends what must be read or written on
//! the leader (everything but `?stale` reads) to the leader. Requests travel as HTTP/2 over the
//! target's server port (8300), which serves the same HTTP API; the answer comes back unchanged.

use crate::agent::Agent;
use crate::http::routes::Endpoint;
use crate::http::{Body, HttpError, Query, Reply};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::net::SocketAddr;
use std::time::Duration;

/// How many times a request has been forwarded (client → server → leader is the longest path).
pub const HEADER_HOPS: &str = "x-consul-forward-hops";
const MAX_HOPS: u8 = 2;

/// Response headers passed back to the caller.
const PASSED_HEADERS: &[&str] = &[
    api::query::HEADER_INDEX,
    api::query::HEADER_KNOWN_LEADER,
    api::query::HEADER_LAST_CONTACT,
    api::query::HEADER_CONTENT_HASH,
    api::query::HEADER_EFFECTIVE_CONSISTENCY,
    "X-Consul-Translate-Addresses",
    "X-Consul-Results-Filtered-By-ACLs",
    "Content-Disposition",
];

pub type ForwardClient = crate::peer_auth::PeerClient;

pub fn client(auth: crate::peer_auth::PeerAuth) -> ForwardClient {
    // HTTP/2: every parked blocking query of an agent shares one connection per server.
    ForwardClient::new(auth, true)
}

/// Who may answer an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// This agent's own state: services, checks, members, events, the UI's files.
    Agent,
    /// Any server, from its own Raft view (`/v1/status/*`).
    Server,
    /// The leader, unless the read is `?stale`.
    Leader,
}

fn scope(endpoint: &Endpoint) -> Scope {
    use Endpoint::*;
    match endpoint {
        KvGet(_) | KvPut(_) | KvDelete(_) | Txn => Scope::Leader,
        SessionCreate | SessionDestroy(_) | SessionRenew(_) | SessionInfo(_) | SessionNode(_) | SessionList => {
            Scope::Leader
        }
        CatalogRegister
        | CatalogDeregister
        | CatalogNodes
        | CatalogServices
        | CatalogService(_)
        | CatalogConnect(_)
        | CatalogGatewayServices(_)
        | CatalogNode(_)
        | CatalogNodeServices(_) => Scope::Leader,
        HealthConnect(_) | HealthIngress(_) | HealthNode(_) | HealthChecks(_) | HealthService(_) | HealthState(_) => {
            Scope::Leader
        }
        CoordinateDatacenters | CoordinateNodes | CoordinateNode(_) => Scope::Leader,
        OperatorRaftConfiguration
        | OperatorRaftPeer
        | OperatorAutopilotConfiguration
        | OperatorAutopilotHealth
        | OperatorUsage
        | OperatorRaftTransferLeader => Scope::Leader,
        SnapshotSave | SnapshotRestore => Scope::Leader,
        QueryList | QueryCreate | QueryGet(_) | QueryUpdate(_) | QueryDelete(_) | QueryExecute(_) | QueryExplain(_) => {
            Scope::Leader
        }
        InternalUiServices | InternalUiNodes | InternalUiNode(_) => Scope::Leader,
        StatusLeader | StatusPeers => Scope::Server,
        // ACL objects are Raft state, written on the leader.
        Acl(_) => Scope::Leader,
        ConfigApply | ConfigList(_) | ConfigGet(..) | ConfigDelete(..) => Scope::Leader,
        IntentionList | IntentionExact | IntentionCheck | IntentionMatch => Scope::Leader,
        CaRoots | AgentCaRoots | CaConfiguration | DiscoveryChain(_) => Scope::Leader,
        _ => Scope::Agent,
    }
}

/// Whether a server answers `endpoint` for other agents (and so takes it on its server port).
pub fn served_for_others(endpoint: &Endpoint) -> bool {
    scope(endpoint) != Scope::Agent
}

/// Where a request is answered: here (`None`) or at the returned server address. A follower
/// without a known leader waits for one up to the RPC hold time (Consul's rpc_hold_timeout), so
/// that requests made during an election succeed once it ends.
async fn target(
    agent: &Agent,
    scope: Scope,
    method: &http::Method,
    query: &Query,
    hops: u8,
) -> Result<Option<SocketAddr>, HttpError> {
    if scope == Scope::Agent {
        return Ok(None);
    }
    let Some(server) = &agent.server else {
        return Ok(Some(agent.pick_server().ok_or_else(|| HttpError::Internal("No known Consul servers".into()))?));
    };
    let stale = method == http::Method::GET && query.has("stale");
    if scope == Scope::Server || stale || hops >= MAX_HOPS || server.is_leader() {
        return Ok(None);
    }
    // Still no leader after the hold time: answered here, which reports "No cluster leader".
    let leader = server.wait_for_leader().await;
    Ok(leader.filter(|(id, _)| *id != server.node_id).and_then(|(_, peer)| peer.addr.parse().ok()))
}

/// Answers the request elsewhere when it belongs to another agent: `None` means "answer here".
/// A client agent moves to the next server when one cannot be reached; a follower whose leader
/// cannot be reached waits for the next leader, within the hold time.
pub async fn route(
    agent: &Agent,
    endpoint: &Endpoint,
    method: &http::Method,
    query: &Query,
    path_and_query: &str,
    body: &Bytes,
    hops: u8,
    token: Option<&str>,
) -> Option<Result<Reply, HttpError>> {
    let scope = scope(endpoint);
    // The server decides with the caller's token, or this agent's default when it named none.
    let token = match token {
        Some(t) if !t.is_empty() => Some(t.to_string()),
        _ if agent.acl.enabled() => Some(agent.acl.effective_secret(None).into_owned()),
        _ => None,
    };
    let deadline = tokio::time::Instant::now() + HOLD;
    let mut tried = Vec::new();
    loop {
        let addr = match target(agent, scope, method, query, hops).await {
            Ok(None) => return None,
            Ok(Some(a)) if agent.server.is_none() && tried.contains(&a) => {
                let e = format!("No known Consul servers reachable (tried {tried:?})");
                return Some(Err(HttpError::Internal(e)));
            }
            Ok(Some(a)) => a,
            Err(e) => return Some(Err(e)),
        };
        match send(&agent.forwarder, addr, method, path_and_query, body.clone(), hops, token.as_deref()).await {
            Ok(r) => return Some(Ok(r)),
            Err(Failure::Other(e)) => return Some(Err(HttpError::Internal(e))),
            Err(Failure::Connect(e)) => {
                tracing::warn!(server = %addr, error = %e, "server unreachable");
                agent.members.bench(addr);
                tried.push(addr);
                if agent.server.is_some() {
                    if tokio::time::Instant::now() >= deadline {
                        return Some(Err(HttpError::Internal(e)));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
}

/// How long a request waits for a leader during an election (Consul's rpc_hold_timeout).
const HOLD: Duration = Duration::from_secs(7);

/// Why a forwarded request got no answer.
#[derive(Debug)]
pub enum Failure {
    /// The server could not be reached: another one may be tried.
    Connect(String),
    Other(String),
}

/// Sends the request to `addr` and returns its answer as this agent's reply.
pub async fn send(
    client: &ForwardClient,
    addr: SocketAddr,
    method: &http::Method,
    path_and_query: &str,
    body: Bytes,
    hops: u8,
    token: Option<&str>,
) -> Result<Reply, Failure> {
    let mut req = http::Request::builder()
        .method(method.clone())
        .uri(client.url(&addr.to_string(), path_and_query))
        .header(HEADER_HOPS, (hops + 1).to_string());
    if let Some(t) = token {
        req = req.header(crate::peer_auth::TOKEN_HEADER, t);
    }
    let req = req.body(Full::new(body)).map_err(|e| Failure::Other(e.to_string()))?;
    // A blocking query may be parked for up to max_query_time plus jitter on the server.
    let limit = if path_and_query.contains("index=") { Duration::from_secs(700) } else { Duration::from_secs(60) };
    let resp = match tokio::time::timeout(limit, client.request(req)).await {
        Err(_) => return Err(Failure::Other(format!("rpc to {addr} timed out"))),
        Ok(Err(e)) if e.is_connect() => {
            return Err(Failure::Connect(format!("rpc to {addr}: {}", crate::peer_auth::chain(&e))))
        }
        Ok(Err(e)) => return Err(Failure::Other(format!("rpc to {addr}: {}", crate::peer_auth::chain(&e)))),
        Ok(Ok(r)) => r,
    };
    let (parts, body) = resp.into_parts();
    let bytes = match tokio::time::timeout(limit, body.collect()).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) => return Err(Failure::Other(format!("rpc to {addr}: {e}"))),
        Err(_) => return Err(Failure::Other(format!("rpc to {addr} timed out"))),
    };
    let headers = PASSED_HEADERS
        .iter()
        .filter_map(|name| {
            let v = parts.headers.get(*name)?.to_str().ok()?;
            Some((*name, v.to_string()))
        })
        .collect();
    let content_type = parts.headers.get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
    Ok(Reply { status: parts.status.as_u16(), body: Body::Forwarded { bytes, content_type }, headers })
}

/// The alive servers of datacenter `dc`: the LAN pool's for this agent's own, the WAN pool's
/// (servers only) for the others.
pub fn datacenter_servers(agent: &Agent, dc: &str) -> Vec<SocketAddr> {
    if dc.eq_ignore_ascii_case(&agent.config.datacenter) {
        agent.members.servers(&agent.config.datacenter, &agent.config.node_name)
    } else {
        agent.wan.servers(dc, &agent.config.node_name)
    }
}

/// Every known datacenter, this one first, then the others nearest first (by the WAN
/// coordinates when known, else by name).
pub fn datacenters_by_distance(agent: &Agent) -> Vec<String> {
    let local = agent.config.datacenter.clone();
    let mut others: Vec<String> = agent
        .wan
        .all()
        .iter()
        .map(|m| m.tag(crate::cluster::tag::DC).to_string())
        .filter(|d| !d.is_empty() && *d != local)
        .collect();
    others.sort();
    others.dedup();
    let mut out = vec![local];
    out.extend(others);
    out
}

/// An internal RPC (`/rpc/...`) to a server of datacenter `dc`, trying the next server when one
/// cannot be reached. `Err` says why no server answered.
pub async fn call_datacenter<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(
    agent: &Agent,
    dc: &str,
    path: &str,
    body: &Req,
    token: Option<&str>,
) -> Result<Resp, String> {
    let servers = datacenter_servers(agent, dc);
    if servers.is_empty() {
        return Err("No path to datacenter".into());
    }
    let mut last = String::new();
    for addr in servers {
        match crate::raft::network::post_json_as(
            &agent.forwarder,
            &addr.to_string(),
            path,
            body,
            Duration::from_secs(10),
            token,
        )
        .await
        {
            Ok(v) => return Ok(v),
            Err(crate::raft::network::PostError::Unreachable(e)) => {
                agent.wan.bench(addr);
                last = e;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(format!("Remote DC has no server currently reachable: {last}"))
}
