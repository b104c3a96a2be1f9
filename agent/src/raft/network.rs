//! Raft RPCs to other servers over their server port (8300): JSON over pooled HTTP/1 connections,
//! each carrying the cluster's `peer_auth` header.
//! The receiving side is `rpc::serve`. A peer that cannot be reached is `Unreachable`, so openraft
//! backs off instead of retrying at once.

use super::{NodeId, Peer, TypeConfig};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::{de::DeserializeOwned, Serialize};

pub type HttpClient = crate::peer_auth::PeerClient;

pub fn http_client(auth: crate::peer_auth::PeerAuth) -> HttpClient {
    HttpClient::new(auth, false)
}

#[derive(Clone)]
pub struct Network {
    client: HttpClient,
}

impl Network {
    pub fn new(client: HttpClient) -> Network {
        Network { client }
    }
}

pub struct Connection {
    client: HttpClient,
    target: NodeId,
    peer: Peer,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failure(String);

/// Errors from one RPC before the remote's own answer is known.
enum CallError {
    Unreachable(String),
    Network(String),
}

/// Why a `post_json` got no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PostError {
    /// Nothing was sent: the request may be tried elsewhere.
    #[error("{0}")]
    Unreachable(String),
    /// Sent, but the answer is unknown: retrying could apply it twice.
    #[error("{0}")]
    Failed(String),
}

/// Posts `body` as JSON to `http://addr/path` and decodes the JSON answer.
pub async fn post_json<Req: Serialize, Resp: DeserializeOwned>(
    client: &HttpClient,
    addr: &str,
    path: &str,
    body: &Req,
    timeout: std::time::Duration,
) -> Result<Resp, PostError> {
    post_json_as(client, addr, path, body, timeout, None).await
}

/// [`post_json`] carrying the ACL token `token` (else the client's own).
pub async fn post_json_as<Req: Serialize, Resp: DeserializeOwned>(
    client: &HttpClient,
    addr: &str,
    path: &str,
    body: &Req,
    timeout: std::time::Duration,
    token: Option<&str>,
) -> Result<Resp, PostError> {
    call(client, addr, path, body, timeout, token).await.map_err(|e| match e {
        CallError::Unreachable(e) => PostError::Unreachable(e),
        CallError::Network(e) => PostError::Failed(e),
    })
}

async fn call<Req: Serialize, Resp: DeserializeOwned>(
    client: &HttpClient,
    addr: &str,
    path: &str,
    body: &Req,
    timeout: std::time::Duration,
    token: Option<&str>,
) -> Result<Resp, CallError> {
    let bytes = serde_json::to_vec(body).map_err(|e| CallError::Network(e.to_string()))?;
    let mut req = http::Request::post(client.url(addr, path)).header("content-type", "application/json");
    if let Some(t) = token.filter(|t| !t.is_empty()) {
        req = req.header(crate::peer_auth::TOKEN_HEADER, t);
    }
    let req = req.body(Full::new(Bytes::from(bytes))).map_err(|e| CallError::Network(e.to_string()))?;
    let resp = tokio::time::timeout(timeout, client.request(req))
        .await
        .map_err(|_| CallError::Network(format!("rpc {path} to {addr} timed out")))?
        .map_err(|e| {
            if e.is_connect() {
                CallError::Unreachable(format!("connecting to {addr}: {}", crate::peer_auth::chain(&e)))
            } else {
                CallError::Network(format!("rpc {path} to {addr}: {}", crate::peer_auth::chain(&e)))
            }
        })?;
    let status = resp.status();
    let body = tokio::time::timeout(timeout, resp.into_body().collect())
        .await
        .map_err(|_| CallError::Network(format!("rpc {path} to {addr} timed out")))?
        .map_err(|e| CallError::Network(e.to_string()))?
        .to_bytes();
    if !status.is_success() {
        return Err(CallError::Network(format!("rpc {path} to {addr}: {status}: {}", String::from_utf8_lossy(&body))));
    }
    serde_json::from_slice(&body).map_err(|e| CallError::Network(format!("decoding {path} from {addr}: {e}")))
}

impl Connection {
    async fn rpc<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, Peer, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let result: Result<Result<Resp, RaftError<NodeId, E>>, CallError> =
            call(&self.client, &self.peer.addr, path, req, option.hard_ttl(), None).await;
        match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(remote)) => {
                Err(RPCError::RemoteError(RemoteError::new_with_node(self.target, self.peer.clone(), remote)))
            }
            Err(CallError::Unreachable(e)) => Err(RPCError::Unreachable(Unreachable::new(&Failure(e)))),
            Err(CallError::Network(e)) => Err(RPCError::Network(NetworkError::new(&Failure(e)))),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &Peer) -> Connection {
        Connection { client: self.client.clone(), target, peer: node.clone() }
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Peer, RaftError<NodeId>>> {
        self.rpc("/raft/append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, Peer, RaftError<NodeId, InstallSnapshotError>>> {
        self.rpc("/raft/snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Peer, RaftError<NodeId>>> {
        self.rpc("/raft/vote", &rpc, &option).await
    }
}
