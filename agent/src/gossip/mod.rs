//! SWIM gossip among all agents (Consul's Serf LAN pool on port 8301), built on foca.
//!
//! It emits a closed `Event` enum and knows nothing about raft, the catalog or HTTP; the leader's
//! reconcile loop turns membership into catalog writes.
//!
//! - `core` is sans-IO: foca plus Serf's rules (names, tags, leave intents, user events). No clock,
//!   no socket, no task. `sim` drives many cores on a virtual clock over a simulated network.
//! - `runtime` is the one tokio task that owns the core, the UDP socket, the TCP listener and the
//!   timer heap; `Gossip` is the handle the agent holds.
//! - `wire` is the encoding (postcard); `keyring` the keys (16, 24 or 32 bytes) and the AES-GCM
//!   seal of every datagram and frame (any installed key opens, the primary seals), Serf's
//!   keyring file and its key queries.
//!
//! ```text
//! Gossip::start(Config) -> io::Result<Arc<Gossip>>     binds UDP+TCP on `bind`, spawns the task
//! gossip.join(&["10.0.0.1", "10.0.0.2:8301"]).await    push-pull over TCP with each other agent;
//!                                                      Ok(others answered), our own address skipped
//! gossip.members() / local() / stats()                 a snapshot, self included, until reaped
//! gossip.subscribe() -> broadcast::Receiver<Event>     Joined/Updated/Failed/Left/Reaped/User
//! gossip.changed() -> watch::Receiver<u64>             bumped on every membership change
//! gossip.set_tags(tags); gossip.fire_event(ev)         disseminated as foca custom broadcasts
//! gossip.leave(timeout).await                          others see Left, then the task stops
//! gossip.force_leave(node, prune)                      a Failed member becomes Left (or forgotten)
//! gossip.keyring_query(op).await -> keyring::Response  list/install/use/remove a key on every member
//! gossip.shutdown().await                              stop without leaving: others see Failed
//! ```
//!
//! Beyond the brief's interface: `Timing::push_pull_interval`, `Timing::reconnect_interval`,
//! `Config::snapshot`, `Stats::dropped_packets`,
//! `MemberStatus::as_str`, and `UserEvent` is `api::UserEvent` (payload as base64 text).
//!
//! Membership. foca's identity is `(name, advertised address, generation)`; foca keys members by
//! address and a higher generation wins, so a restarted agent (generation = wall-clock millis at
//! start) replaces its old self, and an agent declared down while alive renews itself (foca's
//! `Identity::renew`) and comes back. A member foca declares down is Failed, or Left when its
//! leave intent (a custom broadcast, sent before foca's `leave_cluster`) arrived before or after.
//! Tags travel as versioned custom broadcasts and in push-pull exchanges, so late joiners learn
//! them too. Left and Failed members are forgotten (`Event::Reaped`) after `Timing::reap_after`;
//! until then, every `Timing::reconnect_interval` a random Failed member is pushed-pulled with
//! (Serf's reconnect), so a restarted agent that joined nobody is found again. A join skips our
//! own address, and `Config::snapshot` lists the members alive, rejoined at start.
//!
//! Transport. foca's messages are UDP datagrams of at most 1400 bytes sealed. A join is a TCP
//! push-pull with the seed: both sides send their whole view (members, tags, who left) as one
//! length-prefixed frame, so a new agent knows the cluster after one round trip; every
//! `push_pull_interval` (scaled up beyond 32 members as memberlist does, the first one at a
//! random point) and a few gossip rounds after joining, a random member is synced the same way.
//! User events up to 512 encoded bytes ride on datagrams; larger ones are
//! sent over TCP to each alive member by the sender. With a key, every datagram and frame is
//! `1 | nonce | AES-GCM`; packets that do not open are dropped and counted, so an agent
//! with another key (or none) cannot join. A keyring query (Consul's `keyring` operations) is
//! a TCP frame to each member alive; each applies it to its own keyring and answers with its
//! result and keys, which the asker counts.
//!
//! See README.md beside this file for the timing mapping and the simulation figures.

mod core;
pub mod keyring;
mod runtime;
pub mod sim;
mod wire;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A `consul event`, as the HTTP API has it (`Payload` base64). The sender's `fire_event` sets
/// `ltime`, and `id` when it is empty.
pub use api::UserEvent;
pub use keyring::Keyring;
pub use runtime::Gossip;

/// Consul's default `serf_lan` port, used when a join address has none.
pub const DEFAULT_PORT: u16 = 8301;

#[derive(Clone, Debug)]
pub struct Config {
    pub node_name: String,
    /// UDP and TCP on the same port.
    pub bind: SocketAddr,
    /// What other members use to reach us.
    pub advertise: SocketAddr,
    /// `role`, `dc`, `build`, `port`, `vsn`, `expect`, `id`, ...
    pub tags: BTreeMap<String, String>,
    /// The keys that seal and open every packet (`Keyring::disabled()`: plain text). Shared:
    /// keyring queries change it while gossip runs.
    pub keyring: Keyring,
    pub timing: Timing,
    /// Serf's snapshot (the agent uses `<data_dir>/serf/local.snapshot`): the other members
    /// alive, rewritten when they change, and pushed-pulled with again in the background at
    /// start, so that a restarted agent finds its pool even when its join list names only
    /// itself. `None`: no snapshot.
    pub snapshot: Option<PathBuf>,
}

/// Consul's gossip tuning (`gossip_lan`). `core::foca_config` maps it to foca's knobs.
#[derive(Clone, Debug)]
pub struct Timing {
    pub probe_interval: Duration,
    pub probe_timeout: Duration,
    pub gossip_interval: Duration,
    pub gossip_nodes: usize,
    pub suspicion_mult: u32,
    pub retransmit_mult: u32,
    /// Full-state sync with a random member, and how often down members are re-contacted.
    pub push_pull_interval: Duration,
    /// How long Left and Failed members are kept before they are forgotten (`reconnect_timeout`).
    pub reap_after: Duration,
    /// How often Serf tries to reach a random Failed member again (`reconnect_interval`), so that
    /// an agent restarted without joining anyone in particular is found again.
    pub reconnect_interval: Duration,
}

impl Timing {
    /// Consul's LAN defaults (memberlist's `DefaultLANConfig`, Consul's 72h reconnect timeout).
    pub fn lan() -> Timing {
        Timing {
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(500),
            gossip_interval: Duration::from_millis(200),
            gossip_nodes: 3,
            suspicion_mult: 4,
            retransmit_mult: 4,
            push_pull_interval: Duration::from_secs(30),
            reap_after: Duration::from_secs(72 * 3600),
            reconnect_interval: Duration::from_secs(30),
        }
    }

    /// Consul's WAN defaults (memberlist's `DefaultWANConfig`): slower probes and a longer
    /// suspicion, for links between datacenters.
    pub fn wan() -> Timing {
        Timing {
            probe_interval: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(3),
            gossip_interval: Duration::from_millis(500),
            gossip_nodes: 4,
            suspicion_mult: 6,
            retransmit_mult: 4,
            push_pull_interval: Duration::from_secs(60),
            reap_after: Duration::from_secs(72 * 3600),
            reconnect_interval: Duration::from_secs(30),
        }
    }

    /// Fast timings for `-dev` and tests on loopback: a killed agent is Failed within about 1s.
    pub fn dev() -> Timing {
        Timing {
            probe_interval: Duration::from_millis(200),
            probe_timeout: Duration::from_millis(100),
            gossip_interval: Duration::from_millis(50),
            gossip_nodes: 3,
            suspicion_mult: 3,
            retransmit_mult: 4,
            push_pull_interval: Duration::from_secs(2),
            reap_after: Duration::from_secs(3600),
            reconnect_interval: Duration::from_secs(1),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberStatus {
    Alive,
    Leaving,
    Left,
    Failed,
}

impl MemberStatus {
    /// Serf's `MemberStatus` integer, as `/v1/agent/members` reports it.
    pub fn code(&self) -> u8 {
        match self {
            MemberStatus::Alive => 1,
            MemberStatus::Leaving => 2,
            MemberStatus::Left => 3,
            MemberStatus::Failed => 4,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            MemberStatus::Alive => "alive",
            MemberStatus::Leaving => "leaving",
            MemberStatus::Left => "left",
            MemberStatus::Failed => "failed",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    pub name: String,
    pub addr: SocketAddr,
    pub tags: BTreeMap<String, String>,
    pub status: MemberStatus,
}

/// Every membership change and every user event, each delivered once per agent.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A new member, or one that came back after Failed or Left.
    Joined(Member),
    /// New tags or address, or a member that announced it is leaving.
    Updated(Member),
    Failed(Member),
    Left(Member),
    /// A Left or Failed member forgotten after `reap_after` (or force-left with prune).
    Reaped(String),
    User(UserEvent),
}

/// The `serf_lan` section of `agent info`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    pub members: usize,
    pub failed: usize,
    pub left: usize,
    pub encrypted: bool,
    /// Local Lamport-style counter, bumped on every membership change this agent sees.
    pub member_time: u64,
    /// Lamport clock of user events (max seen + 1).
    pub event_time: u64,
    /// Datagrams and frames that did not open (another key, no key, garbage), and frames that
    /// did not decode. Datagrams that open but foca rejects are only logged.
    pub dropped_packets: u64,
}
