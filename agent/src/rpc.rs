//! The server port (8300): Raft's RPCs from other servers, the forwarded writes and read
//! barriers of followers, client agents' writes and catalog reads, and the HTTP API itself for
//! forwarded requests (`/v1/...`, see `forward`). JSON over HTTP/1 or HTTP/2; only servers
//! listen here.

use crate::agent::{Agent, NodeView};
use crate::dns::Resolver;

use crate::raft::TypeConfig;
use crate::server::{Error, Server};
use crate::structs::Request;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::{de::DeserializeOwned, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub struct RpcServer {
    pub agent: Arc<Agent>,
    pub dns: Arc<Resolver>,
    pub listener: TcpListener,
}

impl RpcServer {
    pub async fn bind(agent: Arc<Agent>, dns: Arc<Resolver>, addr: SocketAddr) -> std::io::Result<RpcServer> {
        Ok(RpcServer { agent, dns, listener: TcpListener::bind(addr).await? })
    }

    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            let (stream, _) = tokio::select! {
                r = self.listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => { tracing::warn!(error = %e, "rpc accept failed"); continue; }
                },
                _ = shutdown.changed() => return,
            };
            let _ = stream.set_nodelay(true);
            let agent = self.agent.clone();
            let dns = self.dns.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    use futures::future::{Either, FutureExt};
                    // Forwarded blocking queries park here: keep only `http::handle`'s small future.
                    if req.uri().path().starts_with("/v1/") {
                        return Either::Left(crate::http::handle(agent.clone(), req).map(Ok));
                    }
                    let agent = agent.clone();
                    let dns = dns.clone();
                    Either::Right(Box::pin(async move {
                        let Some(server) = agent.server.clone() else {
                            return Ok::<_, std::convert::Infallible>(status(503, "not a server").map(|b| b.boxed()));
                        };
                        Ok(handle(server, &agent, &dns, req).await.map(|b| b.boxed()))
                    }))
                });
                let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                builder.http2().max_concurrent_streams(4096);
                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
            });
        }
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

async fn body<T: DeserializeOwned>(req: hyper::Request<Incoming>) -> Result<T, hyper::Response<Full<Bytes>>> {
    let bytes = req.into_body().collect().await.map_err(|e| status(400, &e.to_string()))?.to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| status(400, &e.to_string()))
}

async fn handle(
    server: Server,
    agent: &Agent,
    dns: &Resolver,
    req: hyper::Request<Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let result = async {
        Ok::<_, hyper::Response<Full<Bytes>>>(match path.as_str() {
            "/raft/append" => {
                let r: AppendEntriesRequest<TypeConfig> = body(req).await?;
                reply(&server.raft.append_entries(r).await)
            }
            "/raft/vote" => {
                let r: VoteRequest<u64> = body(req).await?;
                reply(&server.raft.vote(r).await)
            }
            "/raft/snapshot" => {
                let r: InstallSnapshotRequest<TypeConfig> = body(req).await?;
                reply(&server.raft.install_snapshot(r).await)
            }
            "/rpc/apply" => {
                let r: Request = body(req).await?;
                reply(&server.write_request(r).await)
            }
            "/rpc/node" => {
                let node: String = body(req).await?;
                reply(&NodeView::of(&agent.store.read(), &node))
            }
            "/rpc/dns" => {
                let (query, udp): (Vec<u8>, bool) = body(req).await?;
                reply(&dns.answer(&query, udp).await)
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
