//! The agent's side of gossip (Consul's serf_lan): the tags it announces, joining (`-join`,
//! `-retry-join`, `/v1/agent/join`), the member list fed into [`crate::cluster::Members`], user
//! events in both directions, and leaving.

use crate::agent::Agent;
use crate::cluster::tag;
use crate::config::Config;
use crate::gossip::{self, Event, Gossip};
use base64::Engine;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The tags Consul's agents put on their serf member.
pub fn tags(cfg: &Config, node_id: &str) -> BTreeMap<String, String> {
    let mut t = BTreeMap::new();
    t.insert(tag::ROLE.into(), if cfg.server { tag::ROLE_SERVER } else { tag::ROLE_CLIENT }.to_string());
    t.insert(tag::DC.into(), cfg.datacenter.clone());
    t.insert(tag::ID.into(), node_id.to_string());
    t.insert(tag::SEGMENT.into(), String::new());
    t.insert(tag::VSN.into(), "2".into());
    t.insert("vsn_min".into(), "2".into());
    t.insert("vsn_max".into(), "3".into());
    t.insert(tag::BUILD.into(), format!("{}:agent-rs", crate::http::handlers_version()));
    if cfg.ports.http >= 0 {
        // Not a Consul tag: lets `lb` find every agent's HTTP API from the members.
        t.insert(tag::HTTP_PORT.into(), cfg.ports.http.to_string());
    }
    if cfg.server {
        t.insert(tag::PORT.into(), cfg.ports.server.to_string());
        t.insert(tag::RAFT_VSN.into(), "3".into());
        if cfg.bootstrap {
            t.insert(tag::BOOTSTRAP.into(), "1".into());
        }
        if cfg.bootstrap_expect > 0 {
            t.insert(tag::EXPECT.into(), cfg.bootstrap_expect.to_string());
        }
    }
    t
}

/// Decodes Consul's `-encrypt` key: base64 of 32 bytes.
pub fn decode_key(key: &str) -> Result<[u8; 32], String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(key.trim())
        .map_err(|e| format!("Failed to decode encrypt key: {e}"))?;
    bytes.try_into().map_err(|b: Vec<u8>| format!("Encrypt key must be 32 bytes (AES-256), got {} bytes", b.len()))
}

fn timing(cfg: &Config) -> gossip::Timing {
    let mut t = if cfg.dev { gossip::Timing::dev() } else { gossip::Timing::lan() };
    let g = &cfg.gossip_lan;
    t.probe_interval = g.probe_interval.unwrap_or(t.probe_interval);
    t.probe_timeout = g.probe_timeout.unwrap_or(t.probe_timeout);
    t.gossip_interval = g.gossip_interval.unwrap_or(t.gossip_interval);
    t.gossip_nodes = g.gossip_nodes.unwrap_or(t.gossip_nodes);
    t.suspicion_mult = g.suspicion_mult.unwrap_or(t.suspicion_mult);
    t.retransmit_mult = g.retransmit_mult.unwrap_or(t.retransmit_mult);
    t.reap_after = cfg.reconnect_timeout;
    t
}

/// Starts gossip for the agent and the tasks that follow it.
pub async fn start(agent: &Arc<Agent>) -> anyhow::Result<Arc<Gossip>> {
    let cfg = &agent.config;
    let key = cfg.encrypt.as_deref().map(decode_key).transpose().map_err(anyhow::Error::msg)?;
    let port = cfg.ports.serf_lan.max(0) as u16;
    let g = Gossip::start(gossip::Config {
        node_name: cfg.node_name.clone(),
        bind: SocketAddr::new(cfg.bind_addr, port),
        advertise: SocketAddr::new(cfg.advertise_addr, port),
        tags: tags(cfg, &agent.node_id),
        key,
        timing: timing(cfg),
        // Serf's place for it; `-dev` keeps nothing on disk.
        snapshot: cfg.data_dir.as_ref().filter(|_| !cfg.dev).map(|d| d.join("serf").join("local.snapshot")),
    })
    .await?;
    let _ = agent.gossip.set(g.clone());
    agent.members.set(g.members());
    tokio::spawn(follow(agent.clone(), g.clone()));
    if !cfg.retry_join.is_empty() {
        tokio::spawn(retry_join(agent.clone(), g.clone()));
    }
    if cfg.server {
        tokio::spawn(reconnect_servers(agent.clone(), g.clone()));
    }
    Ok(g)
}

/// How often a server tries to reach the servers gossip has Failed.
const SERVER_RECONNECT: Duration = Duration::from_secs(2);

/// A server pushes-pulls with every server gossip has Failed, every [`SERVER_RECONNECT`]. Serf
/// reconnects to one random failed member every 30 s, so after a partition heals, the servers'
/// pool could stay split for a minute, and with it autopilot's view: a healed server would wait
/// that long to be added back and promoted. Servers are few, so trying each is cheap; a dead
/// one refuses the connection at once.
async fn reconnect_servers(agent: Arc<Agent>, g: Arc<Gossip>) {
    let mut shutdown = agent.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SERVER_RECONNECT) => {}
            _ = shutdown.changed() => return,
        }
        let failed: Vec<String> = agent
            .members
            .all()
            .iter()
            .filter(|m| m.is_server() && m.status == gossip::MemberStatus::Failed && m.name != agent.config.node_name)
            .map(|m| m.addr.to_string())
            .collect();
        for addr in failed {
            let g = g.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(SERVER_RECONNECT, g.join(std::slice::from_ref(&addr))).await {
                    Ok(Ok(n)) if n > 0 => tracing::info!(server = %addr, "gossip: reached a failed server again"),
                    _ => tracing::trace!(server = %addr, "gossip: a failed server is still unreachable"),
                }
            });
        }
    }
}

/// Feeds every membership change into the agent's member view, and received user events into
/// its event buffer.
async fn follow(agent: Arc<Agent>, g: Arc<Gossip>) {
    let mut events = g.subscribe();
    let mut shutdown = agent.shutdown.subscribe();
    loop {
        let ev = tokio::select! {
            ev = events.recv() => ev,
            _ = shutdown.changed() => return,
        };
        match ev {
            Ok(Event::User(ev)) => {
                agent.record_event(ev);
            }
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => agent.members.set(g.members()),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// `-retry-join`: tries the addresses every `retry_interval` until one answers (or `retry_max`
/// attempts failed, which stops the agent as Consul does).
async fn retry_join(agent: Arc<Agent>, g: Arc<Gossip>) {
    let cfg = &agent.config;
    let mut attempt = 0u32;
    loop {
        match g.join(&cfg.retry_join).await {
            Ok(0) => {
                // Every address is our own: nothing to join; the others reach us (they join us,
                // or reconnect to us while they see us Failed).
                tracing::info!("join: only this agent's own address; waiting to be joined");
                return;
            }
            Ok(n) => {
                tracing::info!(joined = n, "join completed");
                return;
            }
            Err(e) => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "join failed; retrying");
                if cfg.retry_max > 0 && attempt >= cfg.retry_max {
                    tracing::error!("max join retry exhausted, exiting");
                    let _ = agent.shutdown.send(true);
                    return;
                }
            }
        }
        tokio::time::sleep(cfg.retry_interval.max(Duration::from_millis(50))).await;
    }
}

/// A member as `/v1/agent/members` shows it.
pub fn api_member(m: &gossip::Member) -> api::AgentMember {
    api::AgentMember {
        name: m.name.clone(),
        addr: m.addr.ip().to_string(),
        port: m.addr.port(),
        tags: m.tags.clone(),
        status: m.status.code() as _,
        protocol_min: 1,
        protocol_max: 5,
        protocol_cur: 2,
        delegate_min: 2,
        delegate_max: 5,
        delegate_cur: 4,
    }
}
