//! Who leads, as the rest of the agent may rely on it: openraft's view, narrowed by time.
//!
//! openraft 0.9 keeps a leader leading for as long as nothing with a higher term reaches it,
//! however long it has been cut off, and a follower keeps naming the leader of its last
//! committed vote, even right after a restart when that leader may be long dead. Consul's
//! HashiCorp Raft instead steps a leader down once it has not heard from a quorum within
//! `leader_lease_timeout`, and a follower forgets its leader when heartbeats stop. This module
//! gives the agent that behaviour without touching openraft's state:
//! - a leader *leads* only while a quorum acknowledged it within the lease
//!   (`RaftMetrics::millis_since_quorum_ack`, openraft's quorum-acked clock, which counts from
//!   when a heartbeat was sent, not when its answer came back);
//! - a follower *knows* a leader only while that leader's AppendEntries (or snapshot) reached it
//!   within `Timing::election_max`, the time after which openraft itself would accept votes.
//!
//! openraft stays in its Leader state while cut off; that keeps its term from growing, so when
//! the partition heals it simply follows the new leader's higher term, with no election.
//! Knows nothing of HTTP, the catalog or gossip.

use super::{NodeId, Peer, Raft, Timing};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{watch, Notify};

/// The coarse view that changes only on transitions: what waiters (forwarding, leader duties)
/// wake on. Exact checks at request time use [`Leadership::leading`] and [`Leadership::leader`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct View {
    pub term: u64,
    /// This server leads: openraft's leader with its lease held.
    pub leading: bool,
    /// The leader this server trusts: itself while leading, or the leader it heard from lately.
    pub leader: Option<(NodeId, Peer)>,
}

/// The last time a leader's AppendEntries or snapshot reached this server.
#[derive(Debug, Clone, Copy)]
struct Contact {
    at: Instant,
    leader: NodeId,
    term: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Clock {
    /// Leader: when a quorum last acknowledged it (as far as observed).
    quorum_ack: Option<Instant>,
    /// Follower: the leader's last contact.
    contact: Option<Contact>,
}

pub struct Leadership {
    id: NodeId,
    timing: Timing,
    raft: Raft,
    clock: Mutex<Clock>,
    started: Instant,
    poke: Notify,
    view: watch::Sender<View>,
}

impl Leadership {
    pub fn new(id: NodeId, timing: Timing, raft: Raft) -> Arc<Leadership> {
        Arc::new(Leadership {
            id,
            timing,
            raft,
            clock: Mutex::new(Clock::default()),
            started: Instant::now(),
            poke: Notify::new(),
            view: watch::channel(View::default()).0,
        })
    }

    pub fn timing(&self) -> Timing {
        self.timing
    }

    pub fn subscribe(&self) -> watch::Receiver<View> {
        self.view.subscribe()
    }

    /// Called when a leader's AppendEntries or InstallSnapshot that arrived at `now` was accepted
    /// here.
    pub fn heard_from(&self, leader: NodeId, term: u64, now: Instant) {
        let poke = {
            let mut c = self.clock.lock();
            let fresh = c.contact.is_none_or(|p| now.duration_since(p.at) >= self.timing.election_max);
            let changed = c.contact.is_none_or(|p| p.leader != leader || p.term != term) || fresh;
            // Concurrent requests may finish out of order: contact only moves forward.
            if changed || c.contact.is_some_and(|p| p.at < now) {
                c.contact = Some(Contact { at: now, leader, term });
            }
            changed
        };
        if poke {
            self.poke.notify_one();
        }
    }

    /// Whether this server leads right now: openraft's leader with a quorum heard from within the
    /// lease.
    pub fn leading(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        self.leading_in(&m, Instant::now())
    }

    fn leading_in(&self, m: &super::Metrics, now: Instant) -> bool {
        if m.current_leader != Some(self.id) || m.state != openraft::ServerState::Leader {
            return false;
        }
        if sole_voter(m, self.id) {
            return true;
        }
        self.clock.lock().quorum_ack.is_some_and(|t| now < t + self.timing.lease)
    }

    /// The leader this server trusts right now, and its address.
    pub fn leader(&self) -> Option<(NodeId, Peer)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        self.leader_in(&m, Instant::now())
    }

    fn leader_in(&self, m: &super::Metrics, now: Instant) -> Option<(NodeId, Peer)> {
        let id = m.current_leader?;
        let trusted = if id == self.id {
            self.leading_in(m, now)
        } else {
            self.clock.lock().contact.is_some_and(|c| {
                c.leader == id && c.term == m.current_term && now.duration_since(c.at) < self.timing.election_max
            })
        };
        if !trusted {
            return None;
        }
        let peer = m.membership_config.membership().get_node(&id).cloned()?;
        Some((id, peer))
    }

    /// Time since this server last heard from its leader (a follower) or from a quorum (a
    /// leader); zero while leading, as Consul reports it on the leader; `None` if never.
    pub fn last_contact(&self) -> Option<std::time::Duration> {
        let now = Instant::now();
        let m = self.raft.metrics();
        let m = m.borrow();
        if self.leading_in(&m, now) {
            return Some(std::time::Duration::ZERO);
        }
        let c = *self.clock.lock();
        let follower = c.contact.map(|c| c.at);
        let leader = if m.state == openraft::ServerState::Leader { c.quorum_ack } else { None };
        [follower, leader].into_iter().flatten().max().map(|t| now.saturating_duration_since(t))
    }

    /// How long this server's Raft has been running: autopilot counts a returning server's
    /// stabilization from its start when the leader did not see it come back itself.
    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Whether a vote for another candidate would be premature here: this server leads, or heard
    /// from a leader within openraft's own lease, or started less than that long ago (it may be
    /// about to hear from one). Pre-votes are refused while this holds.
    pub fn has_recent_leader(&self) -> bool {
        let now = Instant::now();
        if self.leading() {
            return true;
        }
        let c = *self.clock.lock();
        let heard = c.contact.map(|c| c.at).into_iter().chain(std::iter::once(self.started)).max();
        heard.is_some_and(|t| now.duration_since(t) < self.timing.election_max)
    }

    /// Keeps the coarse view current: recomputed on every metrics change, every new contact, and
    /// at the instant a lease or a follower's trust runs out, so that a leader that loses its
    /// quorum stops acting as one at once.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut metrics = self.raft.metrics();
        // When the metrics were last read: what is read now was published after that.
        let mut last_read = Instant::now();
        loop {
            let now = Instant::now();
            let deadline = {
                let m = metrics.borrow_and_update();
                self.observe(&m, last_read);
                last_read = now;
                let view =
                    View { term: m.current_term, leading: self.leading_in(&m, now), leader: self.leader_in(&m, now) };
                let was_leading = self.view.borrow().leading;
                if was_leading && !view.leading && m.state == openraft::ServerState::Leader {
                    tracing::warn!(
                        lease = ?self.timing.lease,
                        "failed to contact a quorum of servers within the leader lease; stepping down"
                    );
                }
                self.view.send_if_modified(|v| {
                    let changed = *v != view;
                    *v = view;
                    changed
                });
                self.next_change(&m, now)
            };
            let sleep = async {
                match deadline {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = metrics.changed() => if r.is_err() { return },
                _ = self.poke.notified() => {}
                _ = sleep => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Records what the metrics say about the quorum's acknowledgements. `published_after` is
    /// when the metrics were read before: these were published since.
    fn observe(&self, m: &super::Metrics, published_after: Instant) {
        let mut c = self.clock.lock();
        if m.state == openraft::ServerState::Leader && m.current_leader == Some(self.id) {
            // The metrics carry the age of the quorum-acked instant when they were published, and
            // not when that was. Counted from the earliest moment they can have been published,
            // the acknowledgement is dated no later than it was: a late reading (this task
            // scheduled late, or the whole process paused in between) shortens the lease, never
            // lengthens it. openraft publishes on every event, so in steady state the two
            // readings are a heartbeat apart at most.
            if let Some(ms) = m.millis_since_quorum_ack {
                let ms = std::time::Duration::from_millis(ms + 1);
                c.quorum_ack = Some(published_after.checked_sub(ms).unwrap_or(published_after));
            }
        } else {
            c.quorum_ack = None;
        }
    }

    /// When the view would change without any event: a lease or a follower's trust running out.
    fn next_change(&self, m: &super::Metrics, now: Instant) -> Option<Instant> {
        let c = *self.clock.lock();
        let t = if m.current_leader == Some(self.id) {
            if sole_voter(m, self.id) {
                return None;
            }
            c.quorum_ack? + self.timing.lease
        } else {
            c.contact?.at + self.timing.election_max
        };
        (t > now).then_some(t)
    }
}

fn sole_voter(m: &super::Metrics, id: NodeId) -> bool {
    let mut voters = m.membership_config.membership().voter_ids();
    voters.next() == Some(id) && voters.next().is_none()
}
