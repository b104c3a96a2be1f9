//! What the agent knows of the cluster's members (fed by gossip) and the decisions taken from
//! it: which server a client talks to, when servers bootstrap Raft, how the leader turns
//! membership into the catalog (`serfHealth`) and into the Raft configuration (autopilot).
//! The decisions are pure functions over snapshots so that they are tested without sockets.

use crate::raft::{node_id_from, NodeId, Peer};
use crate::state::State;
use crate::structs::*;
use parking_lot::RwLock;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use crate::gossip::{Member, MemberStatus};

/// Tag names, as Consul's serf tags.
pub mod tag {
    pub const ROLE: &str = "role";
    pub const DC: &str = "dc";
    pub const ID: &str = "id";
    pub const PORT: &str = "port";
    pub const EXPECT: &str = "expect";
    pub const BOOTSTRAP: &str = "bootstrap";
    pub const BUILD: &str = "build";
    pub const VSN: &str = "vsn";
    pub const RAFT_VSN: &str = "raft_vsn";
    pub const HTTP_PORT: &str = "http_port";
    pub const SEGMENT: &str = "segment";
    pub const ROLE_SERVER: &str = "consul";
    pub const ROLE_CLIENT: &str = "node";
}

impl Member {
    pub fn tag(&self, k: &str) -> &str {
        self.tags.get(k).map(String::as_str).unwrap_or("")
    }

    pub fn is_server(&self) -> bool {
        self.tag(tag::ROLE) == tag::ROLE_SERVER
    }

    /// The server's RPC address (its IP and the `port` tag).
    pub fn rpc_addr(&self) -> Option<SocketAddr> {
        let port = self.tag(tag::PORT).parse::<u16>().ok()?;
        Some(SocketAddr::new(self.addr.ip(), port))
    }

    pub fn raft_id(&self) -> NodeId {
        node_id_from(self.tag(tag::ID))
    }

    pub fn peer(&self) -> Option<Peer> {
        Some(Peer { addr: self.rpc_addr()?.to_string(), name: self.name.clone(), id: self.tag(tag::ID).to_string() })
    }
}

/// The agent's current view of the members, and the client's choice of server.
#[derive(Default)]
pub struct Members {
    list: RwLock<Vec<Member>>,
    /// Servers that failed an RPC recently: skipped until the instant passes.
    benched: RwLock<HashMap<SocketAddr, Instant>>,
    changed: tokio::sync::Notify,
}

/// How long a server that failed an RPC is passed over.
const BENCH: Duration = Duration::from_secs(5);

impl Members {
    pub fn set(&self, members: Vec<Member>) {
        *self.list.write() = members;
        self.changed.notify_waiters();
    }

    pub fn all(&self) -> Vec<Member> {
        self.list.read().clone()
    }

    /// Waits for the next change of the member list.
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// Alive servers of `dc`, the ones not benched first, in a per-agent stable order (so
    /// clients spread over the servers instead of all picking the first).
    pub fn servers(&self, dc: &str, me: &str) -> Vec<SocketAddr> {
        let now = Instant::now();
        let benched = self.benched.read();
        let mut out: Vec<(bool, u64, SocketAddr)> = self
            .list
            .read()
            .iter()
            .filter(|m| m.is_server() && m.status == MemberStatus::Alive && m.tag(tag::DC) == dc)
            .filter_map(|m| m.rpc_addr().map(|a| (m, a)))
            .map(|(m, a)| {
                let out = benched.get(&a).is_some_and(|t| *t > now);
                (out, node_id_from(&format!("{me}/{}", m.name)), a)
            })
            .collect();
        out.sort();
        out.into_iter().map(|(_, _, a)| a).collect()
    }

    /// Marks a server as failing RPCs for a while.
    pub fn bench(&self, addr: SocketAddr) {
        self.benched.write().insert(addr, Instant::now() + BENCH);
    }
}

/// The Raft configuration servers bootstrap with under `-bootstrap-expect=N`, once N servers of
/// the datacenter (all expecting N) are alive in gossip. Only the server with the lowest Raft ID
/// initializes, so that no two servers ever bootstrap with different configurations.
pub fn bootstrap_peers(members: &[Member], me: &str, dc: &str, expect: u32) -> Option<BTreeMap<NodeId, Peer>> {
    let servers: Vec<&Member> = members
        .iter()
        .filter(|m| m.is_server() && m.status == MemberStatus::Alive && m.tag(tag::DC) == dc)
        .filter(|m| m.tag(tag::EXPECT).parse::<u32>().ok() == Some(expect))
        .collect();
    if servers.len() < expect as usize {
        return None;
    }
    let peers: BTreeMap<NodeId, Peer> = servers.iter().filter_map(|m| Some((m.raft_id(), m.peer()?))).collect();
    let lowest = peers.values().min_by_key(|p| node_id_from(&p.id))?;
    (lowest.name == me).then_some(peers)
}

/// The catalog writes that make the catalog follow gossip (Consul's leader reconcile): alive
/// members registered with `serfHealth` passing (servers with the `consul` service), failed ones
/// critical, left or reaped ones deregistered. Nodes without `serfHealth` (registered through
/// the catalog API, external nodes) are not gossip's and are left alone.
pub fn reconcile_catalog(members: &[Member], state: &State, dc: &str) -> Vec<Command> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for m in members.iter().filter(|m| m.tag(tag::DC) == dc) {
        seen.insert(m.name.as_str());
        let serf = state.checks.get(&m.name).and_then(|c| c.get(SERF_CHECK_ID));
        match m.status {
            MemberStatus::Alive | MemberStatus::Leaving => {
                let node = state.nodes.get(&m.name);
                let registered = node.is_some_and(|n| n.address == m.addr.ip().to_string())
                    && serf.is_some_and(|c| c.status == Some(crate::structs::Status::Passing))
                    && (!m.is_server() || state.services.get(&m.name).is_some_and(|s| s.contains_key("consul")));
                if !registered {
                    out.push(register_member(m, state, crate::structs::Status::Passing, SERF_ALIVE_OUTPUT));
                }
            }
            MemberStatus::Failed => {
                if serf.is_none_or(|c| c.status != Some(crate::structs::Status::Critical)) {
                    out.push(register_member(m, state, crate::structs::Status::Critical, SERF_FAILED_OUTPUT));
                }
            }
            MemberStatus::Left => {
                if state.nodes.contains_key(&m.name) {
                    out.push(deregister(&m.name));
                }
            }
        }
    }
    // Reaped: gossip forgot them, but the catalog still has their serfHealth.
    for (node, checks) in &state.checks {
        let ours = state.nodes.get(node).is_some_and(|n| n.datacenter.is_empty() || n.datacenter == dc);
        if ours && checks.contains_key(SERF_CHECK_ID) && !seen.contains(node.as_str()) {
            out.push(deregister(node));
        }
    }
    out
}

fn deregister(node: &str) -> Command {
    Command::Deregister(DeregisterRequest { node: node.to_string(), service_id: None, check_id: None })
}

fn register_member(m: &Member, state: &State, status: crate::structs::Status, output: &str) -> Command {
    let address = m.addr.ip().to_string();
    // The agent's own anti-entropy owns the node's metadata; keep what it wrote.
    let mut node = state.nodes.get(&m.name).cloned().unwrap_or_else(|| {
        let mut tagged = BTreeMap::new();
        for k in ["lan", "lan_ipv4", "wan", "wan_ipv4"] {
            tagged.insert(k.to_string(), address.clone());
        }
        let mut meta = BTreeMap::new();
        meta.insert("consul-network-segment".to_string(), String::new());
        Node { node: m.name.clone(), tagged_addresses: tagged, meta, ..Default::default() }
    });
    node.id = m.tag(tag::ID).to_string();
    node.address = address;
    node.datacenter = m.tag(tag::DC).to_string();
    let serf = Check {
        node: m.name.clone(),
        check_id: SERF_CHECK_ID.into(),
        name: SERF_CHECK_NAME.into(),
        status: Some(status),
        output: output.into(),
        ..Default::default()
    };
    let service = (m.is_server() && status == crate::structs::Status::Passing).then(|| Service {
        id: "consul".into(),
        service: "consul".into(),
        port: m.tag(tag::PORT).parse().unwrap_or(8300),
        ..Default::default()
    });
    Command::Register(RegisterRequest { node, service, checks: vec![serf], skip_node_update: false })
}

/// A change to the Raft configuration that autopilot wants.
#[derive(Debug, Clone, PartialEq)]
pub enum RaftChange {
    /// A server in gossip that Raft does not have yet: it enters as a non-voter.
    AddLearner(NodeId, Peer),
    /// A non-voter healthy for the stabilization time.
    Promote(NodeId),
    /// A server that left, or a dead one while enough healthy voters remain.
    Remove(NodeId),
}

/// What Raft's configuration should change to follow the servers in gossip (Consul's autopilot
/// with `cleanup_dead_servers`). `healthy_since` is when each learner was first seen caught up.
pub fn raft_changes(
    members: &[Member],
    dc: &str,
    voters: &BTreeSet<NodeId>,
    learners: &BTreeSet<NodeId>,
    healthy_since: &HashMap<NodeId, Instant>,
    now: Instant,
    stabilization: Duration,
) -> Vec<RaftChange> {
    let servers: HashMap<NodeId, &Member> =
        members.iter().filter(|m| m.is_server() && m.tag(tag::DC) == dc).map(|m| (m.raft_id(), m)).collect();
    let mut out = Vec::new();
    for (id, m) in &servers {
        if m.status == MemberStatus::Alive && !voters.contains(id) && !learners.contains(id) {
            if let Some(p) = m.peer() {
                out.push(RaftChange::AddLearner(*id, p));
            }
        }
    }
    for id in learners {
        let alive = servers.get(id).is_some_and(|m| m.status == MemberStatus::Alive);
        if alive && healthy_since.get(id).is_some_and(|t| now.duration_since(*t) >= stabilization) {
            out.push(RaftChange::Promote(*id));
        } else if !alive {
            out.push(RaftChange::Remove(*id));
        }
    }
    // Left servers go at once; failed ones only while a healthy majority of voters remains
    // after their removal, so a partition never shrinks the quorum under the survivors.
    let gone = |id: &NodeId, s: MemberStatus| servers.get(id).is_some_and(|m| m.status == s);
    let left: Vec<NodeId> = voters.iter().filter(|id| gone(id, MemberStatus::Left)).copied().collect();
    let failed: Vec<NodeId> = voters.iter().filter(|id| gone(id, MemberStatus::Failed)).copied().collect();
    let remaining = voters.len() - left.len();
    let healthy = remaining - failed.len();
    out.extend(left.into_iter().map(RaftChange::Remove));
    if !failed.is_empty() && healthy > remaining / 2 {
        out.extend(failed.into_iter().map(RaftChange::Remove));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, ip: u8, server: bool, status: MemberStatus) -> Member {
        let mut tags = BTreeMap::new();
        tags.insert(tag::ROLE.into(), if server { tag::ROLE_SERVER } else { tag::ROLE_CLIENT }.into());
        tags.insert(tag::DC.into(), "dc1".into());
        tags.insert(tag::ID.into(), format!("00000000-0000-0000-0000-0000000000{ip:02}"));
        if server {
            tags.insert(tag::PORT.into(), "8300".into());
            tags.insert(tag::EXPECT.into(), "3".into());
        }
        Member { name: name.into(), addr: SocketAddr::from(([10, 0, 0, ip], 8301)), tags, status }
    }

    #[test]
    fn only_the_lowest_server_bootstraps_and_only_with_all_expected() {
        let mut ms = vec![member("a", 1, true, MemberStatus::Alive), member("b", 2, true, MemberStatus::Alive)];
        assert!(bootstrap_peers(&ms, "a", "dc1", 3).is_none());
        ms.push(member("c", 3, true, MemberStatus::Alive));
        ms.push(member("x", 9, false, MemberStatus::Alive));
        let lowest = ms.iter().filter(|m| m.is_server()).min_by_key(|m| m.raft_id()).expect("servers").name.clone();
        for name in ["a", "b", "c"] {
            let got = bootstrap_peers(&ms, name, "dc1", 3);
            assert_eq!(got.is_some(), name == lowest, "{name}");
            if let Some(p) = got {
                assert_eq!(p.len(), 3);
                assert!(p.values().any(|p| p.addr == "10.0.0.2:8300"));
            }
        }
    }

    #[test]
    fn catalog_follows_gossip() {
        let st = State::default();
        let ms = vec![member("a", 1, true, MemberStatus::Alive), member("x", 9, false, MemberStatus::Failed)];
        let cmds = reconcile_catalog(&ms, &st, "dc1");
        assert_eq!(cmds.len(), 2);
        let Command::Register(r) = &cmds[0] else { panic!("{cmds:?}") };
        assert_eq!((r.node.node.as_str(), r.node.address.as_str()), ("a", "10.0.0.1"));
        assert_eq!(r.service.as_ref().map(|s| s.port), Some(8300));
        let Command::Register(r) = &cmds[1] else { panic!("{cmds:?}") };
        assert_eq!(r.checks[0].status, Some(crate::structs::Status::Critical));
        assert_eq!(r.checks[0].output, SERF_FAILED_OUTPUT);
    }

    #[test]
    fn autopilot_adds_promotes_and_prunes() {
        let now = Instant::now();
        let a = member("a", 1, true, MemberStatus::Alive);
        let b = member("b", 2, true, MemberStatus::Alive);
        let c = member("c", 3, true, MemberStatus::Failed);
        let d = member("d", 4, true, MemberStatus::Alive);
        let voters: BTreeSet<NodeId> = [a.raft_id(), b.raft_id(), c.raft_id()].into();
        let ms = vec![a.clone(), b.clone(), c.clone(), d.clone()];
        let stab = Duration::from_secs(10);
        let none = HashMap::new();
        let got = raft_changes(&ms, "dc1", &voters, &BTreeSet::new(), &none, now, stab);
        assert!(got.contains(&RaftChange::AddLearner(d.raft_id(), d.peer().expect("peer"))));
        // 3 voters, 1 failed: 2 healthy of 3 is a majority, so c is pruned.
        assert!(got.contains(&RaftChange::Remove(c.raft_id())));
        // Not yet stable: stays a learner; stable: promoted.
        let learners: BTreeSet<NodeId> = [d.raft_id()].into();
        let since: HashMap<NodeId, Instant> = [(d.raft_id(), now)].into();
        let got = raft_changes(&ms, "dc1", &voters, &learners, &since, now + Duration::from_secs(1), stab);
        assert!(!got.contains(&RaftChange::Promote(d.raft_id())));
        let got = raft_changes(&ms, "dc1", &voters, &learners, &since, now + stab, stab);
        assert!(got.contains(&RaftChange::Promote(d.raft_id())));
        // Two of three voters failed: no pruning, the quorum is not shrunk under the survivor.
        let ms = vec![a, member("b", 2, true, MemberStatus::Failed), c];
        let got = raft_changes(&ms, "dc1", &voters, &BTreeSet::new(), &none, now, stab);
        assert!(got.is_empty(), "{got:?}");
    }
}
