//! `lb`: one stable HTTP entry point (port 88) over the healthy agents and the healthy instances
//! of every registered service. A pingora proxy (`proxy`) reads a routing snapshot (`routing`)
//! that a background service (`discovery`) rebuilds from blocking queries against the agents.
//! It sees the agents only through the shared `api` crate (HTTP), never their internals.

pub mod balance;
pub mod config;
pub mod discovery;
pub mod fast;
mod handoff;
pub mod head;
pub mod listener;
pub mod metrics;
pub mod proxy;
pub mod remote;
pub mod routing;
pub mod status;
pub mod tls;

use arc_swap::ArcSwap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// State shared by the proxy threads and the discovery service.
pub struct Shared {
    /// Replaced when SIGHUP reloads the config file (`discovery`); only its routing options,
    /// domain and access log change then.
    pub config: ArcSwap<config::Config>,
    /// The live routing table; requests load it, discovery stores a new one.
    pub snapshot: ArcSwap<routing::Snapshot>,
    pub stats: balance::StatsRegistry,
    pub metrics: metrics::Metrics,
    pub agents: discovery::Agents,
    /// Requests' asks for services of other datacenters, and the rebuilds they wait on.
    pub demand: discovery::Demand,
    /// `-consul-addr` values resolved once at start.
    pub seeds: Vec<SocketAddr>,
    /// TLS toward the agents (and HTTPS instances), read once at start; `None`: plain HTTP.
    pub tls: Option<tls::AgentTls>,
    /// Set when a graceful upgrade or shutdown begins: responses then carry `Connection: close`
    /// so clients move to the new process before the old one closes idle connections.
    pub draining: AtomicBool,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("agent address {addr:?}: {message}")]
    Agent { addr: String, message: String },
    #[error("agent TLS: {0}")]
    Tls(#[from] tls::Error),
}

impl Shared {
    /// Builds the shared state and the seed clients; the first snapshot routes everything to
    /// the seeds until discovery has answers.
    pub fn new(config: config::Config) -> Result<(Arc<Shared>, Vec<api::Client>), Error> {
        let mut clients = Vec::new();
        let mut seeds = Vec::new();
        let token = config.consul_token.as_ref().map(|t| t.0.clone());
        let tls = config.consul_tls.as_ref().map(tls::AgentTls::load).transpose()?;
        if tls.as_ref().is_some_and(|t| !t.verify) {
            tracing::warn!("not verifying the agents' TLS certificates (-consul-ssl-verify=false)");
        }
        for addr in &config.consul_addr {
            let client = api::Client::connect(addr, tls.as_ref().map(|t| &t.client))
                .map_err(|e| Error::Agent { addr: addr.clone(), message: e.to_string() })?
                .with_token(token.clone());
            let resolved = client
                .addr()
                .to_socket_addrs()
                .map_err(|e| Error::Agent { addr: addr.clone(), message: e.to_string() })?;
            seeds.extend(resolved.take(1));
            clients.push(client);
        }
        let stats = balance::StatsRegistry::default();
        let metrics = metrics::Metrics::default();
        let cat = routing::Catalog { seeds: seeds.clone(), ..Default::default() };
        let first = routing::Snapshot::build(&cat, &config, &stats, &metrics, 0);
        let shared = Shared {
            config: ArcSwap::from_pointee(config),
            snapshot: ArcSwap::from_pointee(first),
            stats,
            metrics,
            agents: discovery::Agents::new(clients.clone()),
            demand: discovery::Demand::default(),
            seeds,
            tls,
            draining: AtomicBool::new(false),
        };
        Ok((Arc::new(shared), clients))
    }
}
