//! Raft glue: openraft's type configuration, the sled storage seam, the state machine over the
//! state store, and the network over the server RPC port. Nothing above this module names openraft
//! types except through the aliases here.

pub mod network;
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

/// Raft timings from Consul's `performance.raft_multiplier` (5 by default; 1 for production
/// clusters that want fast failover). `dev` uses Consul's very short dev-mode timings.
pub fn config(raft_multiplier: u64, dev: bool) -> openraft::Config {
    let m = raft_multiplier.clamp(1, 10);
    // openraft lets a follower start an election only after the leader lease, which is
    // election_timeout_max, has passed without a heartbeat: a dead leader is replaced within
    // about max + a random timeout in [min, max).
    let (heartbeat, election_min, election_max) = if dev { (20, 50, 100) } else { (100 * m, 300 * m, 500 * m) };
    openraft::Config {
        cluster_name: "consul".into(),
        heartbeat_interval: heartbeat,
        election_timeout_min: election_min,
        election_timeout_max: election_max,
        install_snapshot_timeout: 10_000,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(16_384),
        max_in_snapshot_log_to_keep: 1_000,
        max_payload_entries: MAX_PAYLOAD_ENTRIES,
        ..Default::default()
    }
}
