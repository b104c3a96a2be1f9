//! WAN network coordinates. Every server pings one random server of the WAN pool at a time over
//! the server port (`/rpc/coordinate/ping`, answered with the other's coordinate), times the
//! round trip and updates its own Vivaldi coordinate (`coordinate`), as Serf does with its
//! probes. The coordinates, its own and the ones it learned, are kept in `Agent::wan`; they
//! order `/v1/catalog/datacenters` and fill `/v1/coordinate/datacenters`.

use crate::agent::Agent;
use crate::coordinate::{Client, Coord};
use rand::seq::SliceRandom;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// This server's name in the WAN pool.
pub fn wan_name(agent: &Agent) -> String {
    format!("{}.{}", agent.config.node_name, agent.config.datacenter)
}

/// Pings WAN servers until shutdown (servers with a WAN pool only).
pub async fn run(agent: Arc<Agent>) {
    if agent.gossip_wan.get().is_none() {
        return;
    }
    let me = wan_name(&agent);
    let mut client = Client::default();
    agent.wan.set_coordinate(&me, client.coord().clone());
    // Serf updates its coordinate on every WAN probe.
    let every = crate::serf::wan_timing(&agent.config).probe_interval;
    let mut shutdown = agent.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        let peers: Vec<(String, std::net::SocketAddr)> = agent
            .wan
            .all()
            .into_iter()
            .filter(|m| m.name != me && m.status == crate::gossip::MemberStatus::Alive)
            .filter_map(|m| Some((m.name.clone(), m.rpc_addr()?)))
            .collect();
        let Some((name, addr)) = peers.choose(&mut rand::thread_rng()).cloned() else { continue };
        let started = Instant::now();
        let ping = (me.clone(), client.coord().clone());
        let answer: Result<Coord, _> = crate::raft::network::post_json_as(
            &agent.forwarder,
            &addr.to_string(),
            "/rpc/coordinate/ping",
            &ping,
            Duration::from_secs(5),
            None,
        )
        .await;
        let rtt = started.elapsed().as_secs_f64();
        match answer {
            Ok(theirs) => match client.update(&name, &theirs, rtt) {
                Ok(mine) => {
                    agent.wan.set_coordinate(&me, mine.clone());
                    agent.wan.set_coordinate(&name, theirs);
                }
                Err(e) => tracing::debug!(server = %name, error = %e, "wan coordinate: sample refused"),
            },
            Err(e) => tracing::debug!(server = %name, error = %e, "wan coordinate: ping failed"),
        }
    }
}

/// The estimated round trip from this server to datacenter `dc`: the median over its servers
/// with known coordinates (Consul's ordering of datacenters).
pub fn distance_to(agent: &Agent, dc: &str) -> Option<f64> {
    let mine = agent.wan.coordinate(&wan_name(agent))?;
    let rtts: Vec<f64> = agent
        .wan
        .all()
        .iter()
        .filter(|m| m.tag(crate::cluster::tag::DC) == dc && m.status == crate::gossip::MemberStatus::Alive)
        .filter_map(|m| agent.wan.coordinate(&m.name))
        .map(|c| mine.distance(&c))
        .collect();
    crate::coordinate::median(rtts)
}
