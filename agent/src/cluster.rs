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
    pub const HTTPS_PORT: &str = "https_port";
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
    /// When this agent saw each member enter its status, and come back.
    seen: RwLock<HashMap<String, Seen>>,
    /// Servers that failed an RPC recently: skipped until the instant passes.
    benched: RwLock<HashMap<SocketAddr, Instant>>,
    changed: tokio::sync::Notify,
    /// Network coordinates by member name (the WAN pool's: measured by `wan_rtt`), this
    /// agent's own included.
    coords: RwLock<HashMap<String, crate::coordinate::Coord>>,
}

/// What this agent saw of a member's history: since when it has its status, and when it last
/// came back (Failed or Left, then Alive). A member present when this agent started has no
/// `came_back`: only its own start says when it came.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub status: MemberStatus,
    pub since: Instant,
    pub came_back: Option<Instant>,
}

/// How long a server that failed an RPC is passed over.
const BENCH: Duration = Duration::from_secs(5);

impl Members {
    pub fn set(&self, members: Vec<Member>) {
        let now = Instant::now();
        {
            let mut seen = self.seen.write();
            for m in &members {
                let next = match seen.get(&m.name) {
                    Some(s) if s.status == m.status => continue,
                    Some(s) => {
                        let back = matches!(s.status, MemberStatus::Failed | MemberStatus::Left)
                            && m.status == MemberStatus::Alive;
                        Seen {
                            status: m.status.clone(),
                            since: now,
                            came_back: if back { Some(now) } else { s.came_back },
                        }
                    }
                    None => Seen { status: m.status.clone(), since: now, came_back: None },
                };
                seen.insert(m.name.clone(), next);
            }
            seen.retain(|name, _| members.iter().any(|m| m.name == *name));
        }
        self.coords.write().retain(|name, _| members.iter().any(|m| m.name == *name));
        *self.list.write() = members;
        self.changed.notify_waiters();
    }

    /// Keeps a member's coordinate; a name that is not a member is ignored.
    pub fn set_coordinate(&self, name: &str, c: crate::coordinate::Coord) {
        if c.is_valid() && self.list.read().iter().any(|m| m.name == name) {
            self.coords.write().insert(name.to_string(), c);
        }
    }

    pub fn coordinate(&self, name: &str) -> Option<crate::coordinate::Coord> {
        self.coords.read().get(name).cloned()
    }

    /// [`Seen`] for every member.
    pub fn seen(&self) -> HashMap<String, Seen> {
        self.seen.read().clone()
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
    // The agent's own anti-entropy owns the node's metadata; keep what it wrote, also when it
    // writes between this command's making and its apply: the node is only replaced when its
    // address or ID changed.
    let keep = state.nodes.get(&m.name).is_none_or(|n| n.address == address && n.id == m.tag(tag::ID));
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
    Command::Register(RegisterRequest { node, service, checks: vec![serf], skip_node_update: keep })
}

/// A change to the Raft configuration that autopilot wants.
#[derive(Debug, Clone, PartialEq)]
pub enum RaftChange {
    /// A server in gossip that Raft does not have yet: it enters as a non-voter.
    AddLearner(NodeId, Peer),
    /// A non-voter healthy for the stabilization time.
    Promote(NodeId),
    /// A server that left, or one that gossip has had failed for the stabilization time.
    Remove(NodeId),
}

/// Consul's autopilot settings (`/v1/operator/autopilot/configuration`).
#[derive(Debug, Clone, PartialEq)]
pub struct AutopilotConfig {
    pub cleanup_dead_servers: bool,
    pub last_contact_threshold: Duration,
    pub max_trailing_logs: u64,
    /// Dead servers are not removed when fewer servers than this would remain.
    pub min_quorum: usize,
    /// How long a returning server must be healthy before it votes, and how long gossip must
    /// have a server failed before it is removed.
    pub stabilization: Duration,
}

impl Default for AutopilotConfig {
    fn default() -> Self {
        AutopilotConfig {
            cleanup_dead_servers: true,
            last_contact_threshold: Duration::from_millis(200),
            max_trailing_logs: 250,
            min_quorum: 0,
            stabilization: Duration::from_secs(10),
        }
    }
}

/// A server of the Raft configuration, as the leader's autopilot sees it this round.
#[derive(Debug, Clone, PartialEq)]
pub struct RaftServer {
    pub id: NodeId,
    pub voter: bool,
    /// Its gossip status, `None` when gossip does not know it (this leader may have just
    /// started: an unknown server is never taken for a dead one).
    pub status: Option<MemberStatus>,
    /// How long gossip has had it in that status, as this server saw it.
    pub status_for: Duration,
    /// Consul's autopilot health: alive, heard from the leader within `LastContactThreshold`,
    /// on the leader's term, at most `MaxTrailingLogs` behind.
    pub healthy: bool,
    /// How long it has been healthy (counted from when it came back).
    pub stable_for: Duration,
}

/// What Raft's configuration should change to follow the servers in gossip, as Consul's
/// autopilot (raft-autopilot with the stable promoter) decides it:
/// - a server alive in gossip and not in Raft is added as a non-voter;
/// - a non-voter healthy for `stabilization` is promoted; a round with promotions removes
///   nothing;
/// - a server that left is removed; a failed one only when gossip has had it failed for
///   `stabilization`, `cleanup_dead_servers` is on, at least `min_quorum` servers remain, and no
///   more than (servers - 1) / 2 are removed at once (non-voters first);
/// - a server that is alive, or unknown to gossip, is never removed.
pub fn raft_changes(members: &[Member], dc: &str, servers: &[RaftServer], cfg: &AutopilotConfig) -> Vec<RaftChange> {
    let mut out = Vec::new();
    for m in members.iter().filter(|m| m.is_server() && m.tag(tag::DC) == dc && m.status == MemberStatus::Alive) {
        let id = m.raft_id();
        if !servers.iter().any(|s| s.id == id) {
            if let Some(p) = m.peer() {
                out.push(RaftChange::AddLearner(id, p));
            }
        }
    }
    let promote: Vec<RaftChange> = servers
        .iter()
        .filter(|s| !s.voter && s.status == Some(MemberStatus::Alive) && s.healthy)
        .filter(|s| s.stable_for >= cfg.stabilization)
        .map(|s| RaftChange::Promote(s.id))
        .collect();
    if !promote.is_empty() {
        out.extend(promote);
        return out;
    }
    let left: Vec<&RaftServer> = servers.iter().filter(|s| s.status == Some(MemberStatus::Left)).collect();
    out.extend(left.iter().map(|s| RaftChange::Remove(s.id)));
    if !cfg.cleanup_dead_servers {
        return out;
    }
    let mut failed: Vec<&RaftServer> = servers
        .iter()
        .filter(|s| s.status == Some(MemberStatus::Failed) && s.status_for >= cfg.stabilization)
        .collect();
    // Non-voters first, then voters; each in a stable order.
    failed.sort_by_key(|s| (s.voter, s.id));
    let potential = servers.len() - left.len();
    let mut max_removal = potential.saturating_sub(1) / 2;
    let mut removed = 0;
    for s in failed {
        if potential - removed - 1 < cfg.min_quorum {
            continue;
        }
        if s.voter && max_removal < 1 {
            continue;
        }
        max_removal = max_removal.saturating_sub(1);
        removed += 1;
        out.push(RaftChange::Remove(s.id));
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

    fn server(m: &Member, voter: bool, status: Option<MemberStatus>, status_for: u64, stable_for: u64) -> RaftServer {
        RaftServer {
            id: m.raft_id(),
            voter,
            status: status.clone(),
            status_for: Duration::from_secs(status_for),
            healthy: status == Some(MemberStatus::Alive),
            stable_for: Duration::from_secs(stable_for),
        }
    }

    #[test]
    fn autopilot_adds_promotes_and_prunes() {
        use MemberStatus::*;
        let cfg = AutopilotConfig::default();
        let a = member("a", 1, true, Alive);
        let b = member("b", 2, true, Alive);
        let c = member("c", 3, true, Failed);
        let d = member("d", 4, true, Alive);
        let ms = vec![a.clone(), b.clone(), c.clone(), d.clone()];
        let voters = |c_for: u64| {
            vec![
                server(&a, true, Some(Alive), 60, 60),
                server(&b, true, Some(Alive), 60, 60),
                server(&c, true, Some(Failed), c_for, 0),
            ]
        };
        // d is added as a non-voter; c, failed for the stabilization time, is removed (one of
        // three may go).
        let got = raft_changes(&ms, "dc1", &voters(10), &cfg);
        assert!(got.contains(&RaftChange::AddLearner(d.raft_id(), d.peer().expect("peer"))));
        assert!(got.contains(&RaftChange::Remove(c.raft_id())), "{got:?}");
        // Failed for less than that: kept.
        let got = raft_changes(&ms, "dc1", &voters(9), &cfg);
        assert!(!got.contains(&RaftChange::Remove(c.raft_id())), "{got:?}");
        // MinQuorum 3: never below three servers.
        let got = raft_changes(&ms, "dc1", &voters(60), &AutopilotConfig { min_quorum: 3, ..cfg.clone() });
        assert!(!got.contains(&RaftChange::Remove(c.raft_id())), "{got:?}");
        // Without cleanup, a failed server stays.
        let got =
            raft_changes(&ms, "dc1", &voters(60), &AutopilotConfig { cleanup_dead_servers: false, ..cfg.clone() });
        assert!(!got.iter().any(|c| matches!(c, RaftChange::Remove(_))), "{got:?}");
        // A learner: promoted once stable, not before; a round with a promotion removes nothing.
        let mut servers = voters(60);
        servers.push(server(&d, false, Some(Alive), 60, 9));
        let got = raft_changes(&ms, "dc1", &servers, &cfg);
        assert!(!got.contains(&RaftChange::Promote(d.raft_id())));
        servers[3].stable_for = Duration::from_secs(10);
        let got = raft_changes(&ms, "dc1", &servers, &cfg);
        assert_eq!(got, vec![RaftChange::Promote(d.raft_id())]);
        // Two of three voters failed: only one may go.
        let ms = vec![a.clone(), member("b", 2, true, Failed), c.clone()];
        let servers = vec![
            server(&a, true, Some(Alive), 60, 60),
            server(&b, true, Some(Failed), 60, 0),
            server(&c, true, Some(Failed), 60, 0),
        ];
        let got = raft_changes(&ms, "dc1", &servers, &cfg);
        assert_eq!(got.len(), 1, "{got:?}");
    }

    #[test]
    fn autopilot_never_removes_a_live_or_unknown_server() {
        use MemberStatus::*;
        let cfg = AutopilotConfig::default();
        let a = member("a", 1, true, Alive);
        let b = member("b", 2, true, Alive);
        let c = member("c", 3, true, Alive);
        // A new leader whose gossip does not know c yet, and a live non-voter b that is not
        // healthy yet: nothing is removed.
        let servers = vec![
            server(&a, true, Some(Alive), 60, 60),
            RaftServer { healthy: false, ..server(&b, false, Some(Alive), 0, 0) },
            server(&c, true, None, 0, 0),
        ];
        let got = raft_changes(&[a.clone(), b.clone()], "dc1", &servers, &cfg);
        assert!(got.is_empty(), "{got:?}");
        // Left goes at once, whatever the time.
        let servers = vec![server(&a, true, Some(Alive), 60, 60), server(&b, true, Some(Left), 0, 0)];
        let got = raft_changes(&[a, member("b", 2, true, Left)], "dc1", &servers, &cfg);
        assert_eq!(got, vec![RaftChange::Remove(b.raft_id())]);
    }

    #[test]
    fn members_remember_when_a_member_came_back() {
        use MemberStatus::*;
        let ms = Members::default();
        ms.set(vec![member("a", 1, true, Alive)]);
        let first = ms.seen()["a"].clone();
        assert_eq!(first.came_back, None, "present from the start: no return seen");
        ms.set(vec![member("a", 1, true, Failed)]);
        assert_eq!(ms.seen()["a"].status, Failed);
        ms.set(vec![member("a", 1, true, Alive)]);
        let back = ms.seen()["a"].clone();
        assert!(back.came_back.is_some_and(|t| t >= first.since));
        assert_eq!(back.since, back.came_back.unwrap_or(back.since));
    }
}
