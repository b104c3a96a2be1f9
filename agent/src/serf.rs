//! The agent's side of gossip (Consul's serf_lan): the tags it announces, joining (`-join`,
//! `-retry-join`, `/v1/agent/join`), the member list fed into [`crate::cluster::Members`], user
//! events in both directions, and leaving. Servers also run the WAN pool (Consul's serf_wan, on
//! `ports.serf_wan`): the servers of every datacenter, named `<node>.<dc>`, fed into
//! `Agent::wan`, which `forward` uses to reach other datacenters.

use crate::agent::Agent;
use crate::cluster::tag;
use crate::config::Config;
use crate::gossip::{self, Event, Gossip};
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
    if cfg.ports.https > 0 {
        // Likewise, for an `lb` that reaches the agents over TLS.
        t.insert(tag::HTTPS_PORT.into(), cfg.ports.https.to_string());
    }
    if cfg.server {
        t.insert(tag::PORT.into(), cfg.ports.server.to_string());
        t.insert(tag::RAFT_VSN.into(), "3".into());
        if cfg.bootstrap {
            t.insert(tag::BOOTSTRAP.into(), "1".into());
        }
        if cfg.ports.serf_wan >= 0 {
            // As Consul: where the other servers of this datacenter flood-join our WAN pool.
            t.insert("wan_join_port".into(), cfg.ports.serf_wan.to_string());
        }
        if cfg.bootstrap_expect > 0 {
            t.insert(tag::EXPECT.into(), cfg.bootstrap_expect.to_string());
        }
    }
    t
}

/// Decodes Consul's `-encrypt` key: base64 of 32 bytes.
pub use crate::gossip::keyring::decode_key;

fn timing(cfg: &Config) -> gossip::Timing {
    let t = if cfg.dev { gossip::Timing::dev() } else { gossip::Timing::lan() };
    tuned(t, &cfg.gossip_lan, cfg)
}

fn tuned(mut t: gossip::Timing, g: &crate::config::GossipLan, cfg: &Config) -> gossip::Timing {
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
    let port = cfg.ports.serf_lan.max(0) as u16;
    let g = Gossip::start(gossip::Config {
        node_name: cfg.node_name.clone(),
        bind: SocketAddr::new(cfg.bind_addr, port),
        advertise: SocketAddr::new(cfg.advertise_addr, port),
        tags: tags(cfg, &agent.node_id),
        keyring: agent.keyring.clone(),
        timing: timing(cfg),
        // Serf's place for it; `-dev` keeps nothing on disk.
        snapshot: cfg.data_dir.as_ref().filter(|_| !cfg.dev).map(|d| d.join("serf").join("local.snapshot")),
    })
    .await?;
    let _ = agent.gossip.set(g.clone());
    agent.members.set(g.members());
    tokio::spawn(follow(agent.clone(), g.clone(), false));
    if !cfg.retry_join.is_empty() {
        tokio::spawn(retry_join(agent.clone(), g.clone()));
    }
    if cfg.server {
        tokio::spawn(reconnect_servers(agent.clone(), g.clone()));
    }
    Ok(g)
}

/// Consul's default `serf_wan` port, used when a WAN join address has none.
pub const DEFAULT_WAN_PORT: u16 = 8302;

/// `host` with the WAN port when it names none (`10.0.0.1`, `[::1]`, `name`), else as given.
fn wan_addr(addr: &str) -> String {
    if addr.parse::<SocketAddr>().is_ok() {
        return addr.to_string();
    }
    match addr.parse::<std::net::IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, DEFAULT_WAN_PORT).to_string(),
        Err(_) if addr.contains(':') => addr.to_string(),
        Err(_) => format!("{addr}:{DEFAULT_WAN_PORT}"),
    }
}

/// The WAN pool's timings: Consul's WAN defaults (`-dev`: the fast ones), tuned by `gossip_wan`.
pub fn wan_timing(cfg: &Config) -> gossip::Timing {
    tuned(if cfg.dev { gossip::Timing::dev() } else { gossip::Timing::wan() }, &cfg.gossip_wan, cfg)
}

/// Starts a server's WAN pool: every datacenter's servers, named `<node>.<dc>`.
pub async fn start_wan(agent: &Arc<Agent>) -> anyhow::Result<Option<Arc<Gossip>>> {
    let cfg = &agent.config;
    if !cfg.server || cfg.ports.serf_wan < 0 {
        return Ok(None);
    }
    // The WAN pool's own keys (Serf's `remote.keyring`): rotating a datacenter's LAN keys
    // leaves the link between datacenters as it was.
    let keyring = gossip::Keyring::load(
        cfg.encrypt.as_deref(),
        cfg.data_dir.as_ref().filter(|_| !cfg.dev).map(|d| d.join("serf").join("remote.keyring")).as_deref(),
        cfg.encrypt_verify_incoming,
        cfg.encrypt_verify_outgoing,
    )
    .map_err(anyhow::Error::msg)?;
    let port = cfg.ports.serf_wan as u16;
    let timing = wan_timing(cfg);
    let g = Gossip::start(gossip::Config {
        node_name: format!("{}.{}", cfg.node_name, cfg.datacenter),
        bind: SocketAddr::new(cfg.bind_addr, port),
        advertise: SocketAddr::new(cfg.advertise_addr_wan, port),
        tags: tags(cfg, &agent.node_id),
        keyring,
        timing,
        snapshot: cfg.data_dir.as_ref().filter(|_| !cfg.dev).map(|d| d.join("serf").join("remote.snapshot")),
    })
    .await?;
    let _ = agent.gossip_wan.set(g.clone());
    agent.wan.set(g.members());
    tokio::spawn(follow(agent.clone(), g.clone(), true));
    tokio::spawn(flood_join(agent.clone(), g.clone()));
    tokio::spawn(crate::wan_rtt::run(agent.clone()));
    if !cfg.retry_join_wan.is_empty() {
        let addrs: Vec<String> = cfg.retry_join_wan.iter().map(|a| wan_addr(a)).collect();
        tokio::spawn(retry_join_wan(agent.clone(), g.clone(), addrs));
    }
    Ok(Some(g))
}

/// Consul's flood join: every server of this datacenter in the LAN pool is joined into the WAN
/// pool, so a datacenter joins another through any one of its servers.
async fn flood_join(agent: Arc<Agent>, g: Arc<Gossip>) {
    let mut shutdown = agent.shutdown.subscribe();
    let dc = agent.config.datacenter.clone();
    loop {
        let wan: std::collections::HashSet<String> =
            g.members().into_iter().filter(|m| m.status == gossip::MemberStatus::Alive).map(|m| m.name).collect();
        let missing: Vec<String> = agent
            .members
            .all()
            .iter()
            .filter(|m| m.is_server() && m.tag(tag::DC) == dc && m.status == gossip::MemberStatus::Alive)
            .filter(|m| !wan.contains(&format!("{}.{dc}", m.name)))
            .filter_map(|m| Some(SocketAddr::new(m.addr.ip(), m.tag("wan_join_port").parse().ok()?).to_string()))
            .collect();
        if !missing.is_empty() {
            if let Err(e) = g.join(&missing).await {
                tracing::debug!(error = %e, "wan flood join failed");
            }
        }
        tokio::select! {
            _ = agent.members.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(if agent.config.dev { 1 } else { 10 })) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Joins the WAN pool through `addr` (`/v1/agent/join/:addr?wan`).
pub async fn join_wan(agent: &Agent, addr: &str) -> Result<usize, String> {
    let g = agent.gossip_wan.get().ok_or_else(|| "this agent is not a server: it has no WAN pool".to_string())?;
    g.join(&[wan_addr(addr)]).await
}

/// `-retry-join-wan`: tries the addresses every `retry_interval` until one answers; unlike
/// the LAN join it never stops the agent (a datacenter serves its own without the others).
async fn retry_join_wan(agent: Arc<Agent>, g: Arc<Gossip>, addrs: Vec<String>) {
    let mut shutdown = agent.shutdown.subscribe();
    loop {
        match g.join(&addrs).await {
            Ok(n) => {
                tracing::info!(joined = n, "wan join completed");
                return;
            }
            Err(e) => tracing::warn!(error = %e, "wan join failed; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(agent.config.retry_interval.max(Duration::from_millis(50))) => {}
            _ = shutdown.changed() => return,
        }
    }
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

/// Feeds every membership change into the agent's member view (`Agent::members`, or
/// `Agent::wan` for the WAN pool), and the LAN pool's user events into its event buffer.
async fn follow(agent: Arc<Agent>, g: Arc<Gossip>, wan: bool) {
    let members = if wan { &agent.wan } else { &agent.members };
    let mut events = g.subscribe();
    // What changed between `start`'s snapshot and this subscription (a restarted agent's
    // snapshot rejoin answers that fast) came with no event to us: read it once now.
    members.set(g.members());
    let mut shutdown = agent.shutdown.subscribe();
    loop {
        let ev = tokio::select! {
            ev = events.recv() => ev,
            _ = shutdown.changed() => return,
        };
        match ev {
            Ok(Event::User(ev)) if !wan => {
                agent.record_event(ev);
            }
            Ok(Event::User(_)) => {}
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => members.set(g.members()),
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
