//! A server's cluster duties: bootstrapping Raft under `-bootstrap-expect`, and on the leader,
//! making the catalog and the Raft configuration follow gossip (Consul's reconcile and
//! autopilot). Decisions come from `cluster`; this file only runs them.

use crate::agent::Agent;
use crate::cluster::{self, RaftChange};
use crate::raft::NodeId;
use openraft::ChangeMembers;
use std::collections::{BTreeSet, HashMap};
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

/// The autopilot settings the leader acts on.
struct Autopilot {
    cleanup_dead_servers: bool,
    stabilization: Duration,
    max_trailing_logs: u64,
}

fn autopilot(agent: &Agent) -> Autopilot {
    let st = agent.store.read();
    let cfg = st.autopilot.as_ref().map(|(c, _, _)| c);
    let get = |k: &str| cfg.and_then(|c| c.get(k));
    Autopilot {
        cleanup_dead_servers: get("CleanupDeadServers").and_then(|v| v.as_bool()).unwrap_or(true),
        stabilization: get("ServerStabilizationTime")
            .and_then(|v| v.as_str())
            .and_then(|s| api::duration::parse(s).ok())
            .unwrap_or(Duration::from_secs(10)),
        max_trailing_logs: get("MaxTrailingLogs").and_then(|v| v.as_u64()).unwrap_or(250),
    }
}

/// On the leader: catalog and Raft configuration follow the members. Runs on every server and
/// acts only while it leads.
pub async fn reconcile_loop(agent: Arc<Agent>) {
    let Some(server) = agent.server.clone() else { return };
    let mut shutdown = agent.shutdown.subscribe();
    let mut healthy_since: HashMap<NodeId, Instant> = HashMap::new();
    let mut metrics = server.raft.metrics();
    let mut was_leader = false;
    loop {
        // A new leader reconciles at once; otherwise on member changes and every tick.
        tokio::select! {
            _ = agent.members.changed() => {}
            _ = tokio::time::sleep(TICK) => {}
            r = metrics.changed(), if !was_leader => if r.is_err() { return },
            _ = shutdown.changed() => return,
        }
        was_leader = server.is_leader();
        if !server.is_leader() {
            healthy_since.clear();
            continue;
        }
        let members = agent.members.all();
        if members.is_empty() {
            continue;
        }
        let commands = cluster::reconcile_catalog(&members, &agent.store.read(), &agent.config.datacenter);
        for c in commands {
            if let Err(e) = agent.write(c).await {
                tracing::warn!(error = %e, "reconciling a member into the catalog failed");
                break;
            }
        }
        let ap = autopilot(&agent);
        let m = server.raft.metrics().borrow().clone();
        let mem = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = mem.voter_ids().collect();
        let learners: BTreeSet<NodeId> = mem.learner_ids().collect();
        // A learner is healthy while it keeps up with the leader's log.
        let last = m.last_log_index.unwrap_or(0);
        let caught_up = |id: &NodeId| {
            m.replication
                .as_ref()
                .and_then(|r| r.get(id))
                .and_then(|l| *l)
                .map(|l| l.index + ap.max_trailing_logs >= last)
        };
        healthy_since.retain(|id, _| learners.contains(id) && caught_up(id) == Some(true));
        for id in &learners {
            if caught_up(id) == Some(true) {
                healthy_since.entry(*id).or_insert_with(Instant::now);
            }
        }
        let changes = cluster::raft_changes(
            &members,
            &agent.config.datacenter,
            &voters,
            &learners,
            &healthy_since,
            Instant::now(),
            ap.stabilization,
        );
        for change in changes {
            if let RaftChange::Remove(id) = &change {
                if !ap.cleanup_dead_servers && voters.contains(id) {
                    continue;
                }
            }
            tracing::info!(?change, "autopilot: changing the raft configuration");
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
}
