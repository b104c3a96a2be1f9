//! Raft glue: openraft's type configuration, the sled storage seam, the state machine over the
//! state store, and the network over the server RPC port. Nothing above this module names openraft
//! types except through the aliases here.

pub mod leadership;
pub mod network;
pub mod prevote;
pub mod sled_store;
pub mod state_machine;

use crate::structs::{Request, Response};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::Cursor;

/// A Raft member: its advertised RPC address and its node name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub addr: String,
    pub name: String,
    /// The agent's node ID (a UUID), which Consul shows as the Raft server ID.
    #[serde(default)]
    pub id: String,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.addr)
    }
}

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = u64,
        Node = Peer,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type NodeId = u64;
pub type LogId = openraft::LogId<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type Metrics = openraft::RaftMetrics<NodeId, Peer>;

/// Derives a stable Raft node ID from the agent's node ID (a UUID string).
pub fn node_id_from(uuid: &str) -> NodeId {
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in uuid.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// The most entries one AppendEntries carries: with entries capped by the proposer, this
/// bounds what the server port must accept in one Raft RPC.
pub const MAX_PAYLOAD_ENTRIES: u64 = 64;

/// The timings one `performance.raft_multiplier` gives, beside openraft's own configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How often a leader sends heartbeats (openraft ticks every 1.5 of this).
    pub heartbeat: std::time::Duration,
    pub election_min: std::time::Duration,
    /// openraft's own leader lease: a follower that heard from a leader refuses votes for this
    /// long, and stands for election only after this plus a random election timeout.
    pub election_max: std::time::Duration,
    /// Consul's `leader_lease_timeout` (500 ms x multiplier): a leader that has not heard from a
    /// quorum for this long stops acting as leader. Never longer than `election_max`, so no other
    /// leader can have been elected while it still acts.
    pub lease: std::time::Duration,
}

impl Timing {
    pub fn new(raft_multiplier: u64, dev: bool) -> Timing {
        let m = raft_multiplier.clamp(1, 10);
        let ms = std::time::Duration::from_millis;
        if dev {
            return Timing { heartbeat: ms(20), election_min: ms(50), election_max: ms(100), lease: ms(100) };
        }
        Timing { heartbeat: ms(100 * m), election_min: ms(300 * m), election_max: ms(500 * m), lease: ms(500 * m) }
    }
}

/// Consul's `raft_snapshot_threshold`: entries since the last snapshot before another is taken.
pub const SNAPSHOT_THRESHOLD: u64 = 16_384;
/// Consul's `raft_snapshot_interval`: how often the threshold is checked (with up to as much
/// again of jitter, as HashiCorp's Raft does).
pub const SNAPSHOT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// Takes a snapshot every [`SNAPSHOT_INTERVAL`] (plus jitter) when at least
/// [`SNAPSHOT_THRESHOLD`] entries were applied since the last one, until shutdown.
pub async fn snapshots(raft: Raft, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        let jitter = std::time::Duration::from_millis(rand::random::<u64>() % SNAPSHOT_INTERVAL.as_millis() as u64);
        tokio::select! {
            _ = tokio::time::sleep(SNAPSHOT_INTERVAL + jitter) => {}
            _ = shutdown.changed() => return,
        }
        let m = raft.metrics().borrow().clone();
        let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
        let snapshot = m.snapshot.map(|l| l.index).unwrap_or(0);
        if applied.saturating_sub(snapshot) >= SNAPSHOT_THRESHOLD {
            if let Err(e) = raft.trigger().snapshot().await {
                tracing::warn!(error = %e, "raft: triggering a snapshot failed");
            }
        }
    }
}

/// Raft timings from Consul's `performance.raft_multiplier` (5 by default; 1 for production
/// clusters that want fast failover). `dev` uses Consul's very short dev-mode timings.
pub fn config(raft_multiplier: u64, dev: bool) -> openraft::Config {
    let t = Timing::new(raft_multiplier, dev);
    // openraft lets a follower start an election only after the leader lease, which is
    // election_timeout_max, has passed without a heartbeat: a dead leader is replaced within
    // about max + a random timeout in [min, max). Elections are further gated by a pre-vote
    // (`prevote`), which is why `enable_elect` starts off.
    openraft::Config {
        cluster_name: "consul".into(),
        heartbeat_interval: t.heartbeat.as_millis() as u64,
        election_timeout_min: t.election_min.as_millis() as u64,
        election_timeout_max: t.election_max.as_millis() as u64,
        install_snapshot_timeout: 10_000,
        // Consul's cadence instead (`snapshots`): a snapshot is the whole store, so taking one
        // every 16,384 entries under a write load would rewrite it every few seconds.
        snapshot_policy: openraft::SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: 1_000,
        max_payload_entries: MAX_PAYLOAD_ENTRIES,
        enable_elect: false,
        ..Default::default()
    }
}
