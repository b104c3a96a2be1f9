//! A server's cluster duties: bootstrapping Raft under `-bootstrap-expect`, and while it leads,
//! making the catalog and the Raft configuration follow gossip (Consul's reconcile and
//! autopilot) and restarting session TTL timers. The duties start when this server's leadership
//! view says it leads (its lease held) and are cancelled the moment it does not. Decisions come
//! from `cluster`; this file only runs them.

use crate::agent::Agent;
use crate::cluster::{self, AutopilotConfig, MemberStatus, RaftChange, RaftServer};
use crate::raft::network::post_json;
use crate::raft::NodeId;
use crate::server::{Server, Stats};
use openraft::ChangeMembers;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the leader reconciles even when nothing changed (Consul's reconcile_interval is
/// 60s; autopilot's own loop runs every few seconds).
const TICK: Duration = Duration::from_millis(500);

/// Waits until `-bootstrap-expect` servers are in gossip, then bootstraps Raft once (see
/// [`cluster::bootstrap_peers`]). Returns when this server's Raft is initialized.
pub async fn bootstrap_expect(agent: Arc<Agent>) {
    let Some(server) = agent.server.clone() else { return };
    let expect = agent.config.bootstrap_expect;
    if expect < 2 || agent.config.bootstrap {
        return;
    }
    let mut shutdown = agent.shutdown.subscribe();
    loop {
        if server.raft.is_initialized().await.unwrap_or(true) {
            return;
        }
        let members = agent.members.all();
        if let Some(peers) =
            cluster::bootstrap_peers(&members, &agent.config.node_name, &agent.config.datacenter, expect)
        {
            let names: Vec<&str> = peers.values().map(|p| p.name.as_str()).collect();
            tracing::info!(servers = ?names, "found the expected servers; bootstrapping the Raft cluster");
            if let Err(e) = server.raft.initialize(peers).await {
                tracing::warn!(error = %e, "bootstrapping raft failed");
            }
            return;
        }
        tokio::select! {
            _ = agent.members.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// The autopilot settings in the replicated configuration, Consul's defaults where unset.
fn autopilot_config(agent: &Agent) -> AutopilotConfig {
    let st = agent.store.read();
    let cfg = st.autopilot.as_ref().map(|(c, _, _)| c);
    let get = |k: &str| cfg.and_then(|c| c.get(k));
    let duration = |k: &str| get(k).and_then(|v| v.as_str()).and_then(|s| api::duration::parse(s).ok());
    let d = AutopilotConfig::default();
    AutopilotConfig {
        cleanup_dead_servers: get("CleanupDeadServers").and_then(|v| v.as_bool()).unwrap_or(d.cleanup_dead_servers),
        last_contact_threshold: duration("LastContactThreshold").unwrap_or(d.last_contact_threshold),
        max_trailing_logs: get("MaxTrailingLogs").and_then(|v| v.as_u64()).unwrap_or(d.max_trailing_logs),
        min_quorum: get("MinQuorum").and_then(|v| v.as_u64()).map(|n| n as usize).unwrap_or(d.min_quorum),
        stabilization: duration("ServerStabilizationTime").unwrap_or(d.stabilization),
    }
}

/// Starts and stops the leader's duties as this server's leadership comes and goes. The duties
/// run as one task per term of leadership, aborted at once when the lease lapses or the term
/// ends, so nothing a deposed leader started (a catalog write, a membership change) is followed
/// up on.
pub struct Duties {
    pub agent: Arc<Agent>,
}

impl Duties {
    pub async fn run(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let Some(server) = self.agent.server.clone() else { return };
        let mut view = server.leadership.subscribe();
        let mut running: Option<(u64, tokio::task::JoinHandle<()>)> = None;
        loop {
            let (leading, term) = {
                let v = view.borrow_and_update();
                (v.leading, v.term)
            };
            match &running {
                Some((t, _)) if leading && *t == term => {}
                _ => {
                    if let Some((_, task)) = running.take() {
                        task.abort();
                        tracing::info!("cluster leadership lost");
                    }
                    if leading {
                        tracing::info!(term, "cluster leadership acquired");
                        self.agent.restart_session_timers();
                        running = Some((term, tokio::spawn(lead(self.agent.clone(), server.clone()))));
                    }
                }
            }
            tokio::select! {
                r = view.changed() => if r.is_err() { break },
                _ = shutdown.changed() => break,
            }
        }
        if let Some((_, task)) = running {
            task.abort();
        }
    }
}

/// Health bookkeeping for one server over this term of leadership: `None` until first seen
/// healthy.
struct Health {
    healthy: Option<bool>,
    since: Instant,
}

/// The leader's loop: catalog reconcile and autopilot, on member changes and every tick.
async fn lead(agent: Arc<Agent>, server: Server) {
    let mut health: HashMap<NodeId, Health> = HashMap::new();
    loop {
        let members = agent.members.all();
        if !members.is_empty() {
            let commands = cluster::reconcile_catalog(&members, &agent.store.read(), &agent.config.datacenter);
            for c in commands {
                if let Err(e) = agent.write(c).await {
                    tracing::warn!(error = %e, "reconciling a member into the catalog failed");
                    break;
                }
            }
            autopilot(&agent, &server, &members, &mut health).await;
        }
        tokio::select! {
            _ = agent.members.changed() => {}
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}

/// One autopilot round: every server's health (its own report, as Consul's `RaftStats`), then
/// the changes `cluster::raft_changes` asks for.
async fn autopilot(agent: &Agent, server: &Server, members: &[cluster::Member], health: &mut HashMap<NodeId, Health>) {
    let cfg = autopilot_config(agent);
    let timing = server.leadership.timing();
    // openraft ticks every 1.5 heartbeats and heartbeats go out on ticks: a healthy follower's
    // last contact is routinely up to about two ticks old, which at multiplier 5 exceeds
    // Consul's 200ms default; a threshold below three heartbeats would call healthy servers
    // unhealthy.
    let threshold = cfg.last_contact_threshold.max(timing.heartbeat * 3);
    let m = server.raft.metrics().borrow().clone();
    let mem = m.membership_config.membership();
    let nodes: Vec<(NodeId, crate::raft::Peer, bool)> =
        mem.nodes().map(|(id, p)| (*id, p.clone(), mem.voter_ids().any(|v| v == *id))).collect();
    let last_index = m.last_log_index.unwrap_or(0);
    let fetch = nodes.iter().map(|(id, p, _)| {
        let id = *id;
        let addr = p.addr.clone();
        async move {
            if id == server.node_id {
                return (id, Some(server.stats()));
            }
            let r: Result<Stats, _> = post_json(&server.http, &addr, "/rpc/stats", &(), STATS_TIMEOUT).await;
            (id, r.ok())
        }
    });
    let stats: HashMap<NodeId, Option<Stats>> = futures::future::join_all(fetch).await.into_iter().collect();
    let seen = agent.members.seen();
    let now = Instant::now();
    let dc = &agent.config.datacenter;
    let mut servers = Vec::new();
    for (id, peer, voter) in &nodes {
        let member = members.iter().find(|mb| mb.is_server() && mb.tag(cluster::tag::DC) == dc && mb.raft_id() == *id);
        let status = member.map(|mb| mb.status.clone());
        let seen = member.and_then(|mb| seen.get(&mb.name));
        let st = stats.get(id).cloned().flatten();
        let healthy = status == Some(MemberStatus::Alive)
            && st.as_ref().is_some_and(|s| {
                let contact_ok =
                    *id == server.node_id || s.last_contact_ms.is_some_and(|c| Duration::from_millis(c) <= threshold);
                contact_ok && s.last_term == m.current_term && s.last_index + cfg.max_trailing_logs >= last_index
            });
        // A server's stability counts from when it came back (when this server saw it return,
        // or else its own start), not from when this server took office: until it is first
        // seen healthy in this term it is in no state, and the first healthy round dates back
        // to its return. Changes after that count from when they are seen.
        let came_back = || {
            let started = st.as_ref().and_then(|s| now.checked_sub(Duration::from_millis(s.up_ms)));
            [started, seen.and_then(|s| s.came_back)].into_iter().flatten().max().unwrap_or(now)
        };
        let entry = health.entry(*id).or_insert(Health { healthy: None, since: now });
        match entry.healthy {
            None if healthy => *entry = Health { healthy: Some(true), since: came_back() },
            Some(h) if h != healthy => *entry = Health { healthy: Some(healthy), since: now },
            _ => {}
        }
        let status_for = seen.map(|s| now.duration_since(s.since)).unwrap_or_default();
        tracing::trace!(server = %peer, ?status, healthy, "autopilot health");
        servers.push(RaftServer {
            id: *id,
            voter: *voter,
            status,
            status_for,
            healthy,
            stable_for: if healthy { now.duration_since(entry.since) } else { Duration::ZERO },
        });
    }
    health.retain(|id, _| nodes.iter().any(|(n, _, _)| n == id));
    let voters: Vec<NodeId> = nodes.iter().filter(|(_, _, v)| *v).map(|(id, _, _)| *id).collect();
    for change in cluster::raft_changes(members, dc, &servers, &cfg) {
        let state = match &change {
            RaftChange::Promote(id) | RaftChange::Remove(id) => servers.iter().find(|s| s.id == *id),
            RaftChange::AddLearner(..) => None,
        };
        tracing::info!(?change, ?state, "autopilot: changing the raft configuration");
        let result = match change {
            RaftChange::AddLearner(id, peer) => server.raft.add_learner(id, peer, false).await.map(|_| ()),
            RaftChange::Promote(id) => {
                server.raft.change_membership(ChangeMembers::AddVoterIds([id].into()), false).await.map(|_| ())
            }
            RaftChange::Remove(id) if voters.contains(&id) => {
                server.raft.change_membership(ChangeMembers::RemoveVoters([id].into()), false).await.map(|_| ())
            }
            RaftChange::Remove(id) => {
                server.raft.change_membership(ChangeMembers::RemoveNodes([id].into()), false).await.map(|_| ())
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "autopilot: raft configuration change failed");
            break;
        }
    }
}

/// How long the leader waits for a server's stats in one autopilot round.
const STATS_TIMEOUT: Duration = Duration::from_millis(400);
