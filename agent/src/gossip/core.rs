//! The sans-IO gossip core: foca's SWIM plus what Serf adds on top of memberlist (member names
//! and tags, leave intents that turn "down" into "left", user events with Lamport times).
//!
//! It reads no clock, opens no socket and spawns nothing. The caller feeds it datagrams, stream
//! frames and expired timers, then drains `Output`s (datagrams and frames to send, timers to arm)
//! and `Event`s. The tokio runtime and the simulator are two such callers.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroUsize};
use std::sync::mpsc;
use std::time::Duration;

use foca::{AccumulatingRuntime, BroadcastHandler, Foca, Invalidates, OwnedNotification, PostcardCodec};
use rand10::rngs::SmallRng;
use rand10::{RngExt, SeedableRng};

use super::wire::{self, Broadcast, Frame, Id, Record, State};
use super::{Event, Member, MemberStatus, Stats, Timing, UserEvent};

/// The largest foca message; sealed, it stays under a 1400-byte UDP payload.
pub const MAX_PACKET: usize = 1400 - wire::SEAL_OVERHEAD;
/// User events whose encoding is larger than this are sent over streams rather than piggybacked
/// on datagrams.
const MAX_BROADCAST: usize = 512;
/// How many event ids are remembered for deduplication (Serf keeps a 512-slot event buffer).
const EVENT_IDS: usize = 1024;

/// A timer the caller must fire back with `Core::handle_timer` after the given delay.
#[derive(Clone, Debug)]
pub enum Timer {
    Foca(foca::Timer<Id>),
    /// Forget a Left or Failed member of this generation.
    Reap {
        name: String,
        generation: u64,
    },
    /// Exchange whole views with a random member (memberlist's push-pull anti-entropy).
    PushPull,
    /// One extra push-pull, a few gossip rounds after we join (see `on_notification`).
    SyncAfterJoin,
    /// Push-pull with a random Failed member, if the dice say so (Serf's `reconnect`).
    Reconnect,
}

#[derive(Debug)]
pub enum Output {
    Packet {
        to: SocketAddr,
        data: Vec<u8>,
    },
    /// A frame for a stream connection; the reply, if any, goes to `Core::handle_frame`.
    Frame {
        to: SocketAddr,
        data: Vec<u8>,
    },
    Schedule {
        after: Duration,
        timer: Timer,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("gossip: {0}")]
    Foca(#[from] foca::Error),
    #[error("undecodable frame: {0}")]
    Decode(#[from] postcard::Error),
}

pub struct Core {
    foca: Foca<Id, PostcardCodec, SmallRng, Handler>,
    runtime: AccumulatingRuntime<Id>,
    inbox: mpsc::Receiver<Broadcast>,
    rng: SmallRng,
    timing: Timing,
    is_encrypted: bool,
    /// Every member by name, ourselves included, until reaped.
    members: BTreeMap<String, (Id, MemberStatus)>,
    /// Latest tags by member name, with their version.
    tags: HashMap<String, (u64, BTreeMap<String, String>)>,
    event_ids: Dedup,
    /// The last user events delivered here, sent along in push-pulls so that a member that missed
    /// an event's broadcasts still gets it (Serf's push-pull carries recent events too).
    recent_events: VecDeque<UserEvent>,
    member_time: u64,
    event_time: u64,
    /// The cluster size foca's config was last scaled for.
    scaled_for: usize,
    outputs: Vec<Output>,
    events: Vec<Event>,
}

impl Core {
    /// A core for the agent `id`, alone until it joins. `seed` drives every random choice.
    pub fn new(id: Id, tags: BTreeMap<String, String>, timing: Timing, is_encrypted: bool, seed: u64) -> Core {
        let (tx, inbox) = mpsc::channel();
        let handler = Handler { known: HashMap::new(), event_ids: Dedup::default(), inbox: tx };
        let config = foca_config(&timing, 1);
        let foca =
            Foca::with_custom_broadcast(id.clone(), config, SmallRng::seed_from_u64(seed), PostcardCodec, handler);
        let mut core = Core {
            foca,
            runtime: AccumulatingRuntime::new(),
            inbox,
            rng: SmallRng::seed_from_u64(seed.wrapping_add(1)),
            timing,
            is_encrypted,
            members: BTreeMap::new(),
            tags: HashMap::new(),
            event_ids: Dedup::default(),
            recent_events: VecDeque::new(),
            member_time: 1,
            event_time: 1,
            scaled_for: 1,
            outputs: Vec::new(),
            events: Vec::new(),
        };
        core.members.insert(id.name.clone(), (id.clone(), MemberStatus::Alive));
        // Tags outlive restarts: a later generation starts from a higher version.
        core.announce_tags(tags, id.generation.saturating_add(1));
        // memberlist staggers the first push-pull at random within the interval, so that a pool
        // started at once does not sync in lockstep and an agent missing a member waits less.
        let after = core.timing.push_pull_interval.mul_f64(core.rng.random::<f64>());
        core.outputs.push(Output::Schedule { after, timer: Timer::PushPull });
        let after = core.timing.reconnect_interval;
        core.outputs.push(Output::Schedule { after, timer: Timer::Reconnect });
        core
    }

    pub fn id(&self) -> &Id {
        self.foca.identity()
    }

    pub fn members(&self) -> Vec<Member> {
        self.members.iter().map(|(name, (id, status))| self.member(name, id, status.clone())).collect()
    }

    pub fn local(&self) -> Member {
        let id = self.id();
        let status = self.members.get(&id.name).map_or(MemberStatus::Alive, |(_, s)| s.clone());
        self.member(&id.name, id, status)
    }

    /// The generation of `name` this core knows, with its status.
    pub fn known(&self, name: &str) -> Option<(u64, MemberStatus)> {
        self.members.get(name).map(|(id, status)| (id.generation, status.clone()))
    }

    pub fn stats(&self) -> Stats {
        let count = |s: MemberStatus| self.members.values().filter(|(_, st)| *st == s).count();
        Stats {
            members: self.members.len(),
            failed: count(MemberStatus::Failed),
            left: count(MemberStatus::Left),
            encrypted: self.is_encrypted,
            member_time: self.member_time,
            event_time: self.event_time,
            dropped_packets: 0, // counted by the transport, which sees them
        }
    }

    pub fn handle_packet(&mut self, data: &[u8]) -> Result<(), Error> {
        let res = self.foca.handle_data(data, &mut self.runtime);
        self.pump();
        Ok(res?)
    }

    /// A stream frame from a peer. Returns the reply to write back, if the frame asks for one.
    pub fn handle_frame(&mut self, data: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let reply = match wire::decode::<Frame>(data)? {
            Frame::PushPull { is_reply, state } => {
                self.merge(state);
                (!is_reply).then(|| wire::encode(&Frame::PushPull { is_reply: true, state: self.state() }))
            }
            Frame::Event(ev) => {
                self.deliver(ev);
                None
            }
            // The transport answers keyring queries; an answer arrives only as a reply.
            Frame::KeyringQuery(_) | Frame::KeyringAnswer(_) => None,
        };
        self.pump();
        Ok(reply)
    }

    /// The reply to a join's push-pull. `Ok(false)`, and nothing merged, when it is our own view
    /// (the address led back to us under another spelling): a join with ourselves joins nobody.
    pub fn handle_join_reply(&mut self, data: &[u8]) -> Result<bool, Error> {
        if let Frame::PushPull { state, .. } = wire::decode::<Frame>(data)? {
            // `state()` puts the sender last.
            if state.members.last().is_some_and(|m| m.id() == self.id()) {
                return Ok(false);
            }
        }
        self.handle_frame(data)?;
        Ok(true)
    }

    /// The frame that starts a push-pull with another member (a join, or anti-entropy).
    pub fn push_pull_request(&self) -> Vec<u8> {
        wire::encode(&Frame::PushPull { is_reply: false, state: self.state() })
    }

    pub fn handle_timer(&mut self, timer: Timer) -> Result<(), Error> {
        let res = match timer {
            Timer::Foca(t) => self.foca.handle_timer(t, &mut self.runtime),
            Timer::Reap { name, generation } => {
                self.reap(&name, generation);
                Ok(())
            }
            Timer::PushPull => {
                self.push_pull_with_random_member();
                let after = push_pull_interval(&self.timing, self.foca.num_members() + 1);
                self.outputs.push(Output::Schedule { after, timer: Timer::PushPull });
                Ok(())
            }
            Timer::SyncAfterJoin => {
                self.push_pull_with_random_member();
                Ok(())
            }
            Timer::Reconnect => {
                self.reconnect();
                let after = self.timing.reconnect_interval;
                self.outputs.push(Output::Schedule { after, timer: Timer::Reconnect });
                Ok(())
            }
        };
        self.pump();
        Ok(res?)
    }

    pub fn set_tags(&mut self, tags: BTreeMap<String, String>) {
        let version = self.tags.get(&self.id().name).map_or(0, |(v, _)| *v) + 1;
        self.announce_tags(tags, version);
        self.member_time += 1;
        self.events.push(Event::Updated(self.local()));
        self.pump();
    }

    /// Broadcasts a user event, stamped with our event clock; it is also delivered to ourselves.
    pub fn fire_event(&mut self, mut ev: UserEvent) {
        ev.ltime = self.event_time;
        self.event_time += 1;
        let data = wire::encode(&Broadcast::Event(ev.clone()));
        if data.len() <= MAX_BROADCAST {
            self.add_broadcast(&data);
            let _ = self.foca.broadcast(&mut self.runtime);
        } else {
            let frame = wire::encode(&Frame::Event(ev.clone()));
            for m in self.foca.iter_members() {
                self.outputs.push(Output::Frame { to: m.id().addr, data: frame.clone() });
            }
            self.deliver(ev);
        }
        self.pump();
    }

    /// The first half of a graceful leave: tell everyone we are leaving, so that when we go quiet
    /// they mark us Left, not Failed. Call `leave` once the intent had time to spread.
    pub fn leave_intent(&mut self) {
        let id = self.id().clone();
        self.set_status(&id.name, MemberStatus::Leaving);
        self.add_broadcast(&wire::encode(&Broadcast::Leave { name: id.name, generation: id.generation, prune: false }));
        let _ = self.foca.broadcast(&mut self.runtime);
        self.pump();
    }

    /// Whether a leave intent still has somewhere to go: custom broadcasts (tags, intents,
    /// events) wait to be sent and there are members to send them to.
    pub fn is_broadcasting(&self) -> bool {
        self.foca.custom_broadcast_backlog() > 0 && self.foca.num_members() > 0
    }

    pub fn leave(&mut self) -> Result<(), Error> {
        let res = self.foca.leave_cluster(&mut self.runtime);
        let name = self.id().name.clone();
        self.set_status(&name, MemberStatus::Left);
        self.pump();
        Ok(res?)
    }

    /// Consul's force-leave: a Failed member becomes Left everywhere (`prune`: forgotten at once).
    pub fn force_leave(&mut self, node: &str, prune: bool) -> Result<(), String> {
        let Some((id, status)) = self.members.get(node).cloned() else {
            return Err(format!("no member named {node:?}"));
        };
        if matches!(status, MemberStatus::Failed | MemberStatus::Left) {
            let intent = Broadcast::Leave { name: id.name, generation: id.generation, prune };
            self.add_broadcast(&wire::encode(&intent));
            let _ = self.foca.broadcast(&mut self.runtime);
            self.pump();
        }
        Ok(())
    }

    /// What the caller must send and schedule now.
    pub fn drain_outputs(&mut self) -> std::vec::Drain<'_, Output> {
        self.outputs.drain(..)
    }

    pub fn drain_events(&mut self) -> std::vec::Drain<'_, Event> {
        self.events.drain(..)
    }

    /// Moves what foca produced into our outputs and applies what it noticed.
    fn pump(&mut self) {
        loop {
            let mut busy = false;
            while let Some(n) = self.runtime.to_notify() {
                busy = true;
                self.on_notification(n);
            }
            while let Ok(b) = self.inbox.try_recv() {
                busy = true;
                self.on_broadcast(b);
            }
            while let Some((to, data)) = self.runtime.to_send() {
                self.outputs.push(Output::Packet { to: to.addr, data: data.to_vec() });
            }
            while let Some((after, timer)) = self.runtime.to_schedule() {
                self.outputs.push(Output::Schedule { after, timer: Timer::Foca(timer) });
            }
            if !busy {
                break;
            }
        }
        self.rescale(self.foca.num_members() + 1);
    }

    fn on_notification(&mut self, n: OwnedNotification<Id>) {
        match n {
            OwnedNotification::MemberUp(id) => {
                let previous = self.members.get(&id.name).cloned();
                if previous.as_ref().is_some_and(|(known, _)| known.generation > id.generation) {
                    return;
                }
                self.members.insert(id.name.clone(), (id.clone(), MemberStatus::Alive));
                self.member_time += 1;
                let member = self.member(&id.name, &id, MemberStatus::Alive);
                self.events.push(match previous {
                    Some((_, MemberStatus::Alive | MemberStatus::Leaving)) => Event::Updated(member),
                    _ => Event::Joined(member),
                });
            }
            OwnedNotification::MemberDown(id) => {
                let Some((known, status)) = self.members.get(&id.name).cloned() else { return };
                if known != id || matches!(status, MemberStatus::Left | MemberStatus::Failed) {
                    return;
                }
                let status = if status == MemberStatus::Leaving { MemberStatus::Left } else { MemberStatus::Failed };
                self.set_status(&id.name, status);
            }
            OwnedNotification::Rename(old, new) => {
                // The address now belongs to a newer generation: a restart, maybe under another name.
                if old.name != new.name {
                    if self.members.get(&old.name).is_some_and(|(id, s)| *id == old && *s != MemberStatus::Left) {
                        self.set_status(&old.name, MemberStatus::Failed);
                    }
                    return;
                }
                let Some((id, status)) = self.members.get(&new.name).cloned() else { return };
                if id.generation >= new.generation {
                    return;
                }
                // A member known down stays down here; foca's MemberUp follows if the new one is up.
                let is_up = matches!(status, MemberStatus::Alive | MemberStatus::Leaving);
                let status = if is_up { MemberStatus::Alive } else { status };
                self.members.insert(new.name.clone(), (new.clone(), status.clone()));
                if is_up {
                    self.member_time += 1;
                    self.events.push(Event::Updated(self.member(&new.name, &new, status)));
                }
            }
            OwnedNotification::Rejoin(id) => {
                // The cluster declared us down while we were alive; foca renewed our identity.
                self.members.insert(id.name.clone(), (id, MemberStatus::Alive));
                self.member_time += 1;
            }
            OwnedNotification::Active => {
                // foca fixes an update's retransmission count when it is queued, so updates queued
                // while a joiner's view was still small (a join storm) are gossiped fewer times than
                // memberlist, which scales the count at send time, would. One push-pull a few
                // rounds after joining fills what this agent missed meanwhile.
                let after = self.timing.gossip_interval * 5;
                self.outputs.push(Output::Schedule { after, timer: Timer::SyncAfterJoin });
            }
            OwnedNotification::Idle | OwnedNotification::Defunct => {}
        }
    }

    fn on_broadcast(&mut self, b: Broadcast) {
        match b {
            Broadcast::Tags { name, version, tags } => self.update_tags(name, version, tags),
            Broadcast::Leave { name, generation, prune } => self.on_leave_intent(&name, generation, prune),
            Broadcast::Event(ev) => self.deliver(ev),
        }
    }

    fn on_leave_intent(&mut self, name: &str, generation: u64, prune: bool) {
        let Some((id, status)) = self.members.get(name).cloned() else { return };
        if id.generation != generation {
            return;
        }
        if prune {
            self.forget(name);
            return;
        }
        match status {
            MemberStatus::Alive if name != self.id().name => self.set_status(name, MemberStatus::Leaving),
            MemberStatus::Failed => self.set_status(name, MemberStatus::Left),
            _ => {}
        }
    }

    fn update_tags(&mut self, name: String, version: u64, tags: BTreeMap<String, String>) {
        if self.tags.get(&name).is_some_and(|(v, _)| *v >= version) {
            return;
        }
        self.tags.insert(name.clone(), (version, tags));
        if let Some((id, status)) = self.members.get(&name).cloned() {
            self.member_time += 1;
            self.events.push(Event::Updated(self.member(&name, &id, status)));
        }
    }

    fn deliver(&mut self, ev: UserEvent) {
        if !self.event_ids.insert(&ev.id) {
            return;
        }
        self.event_time = self.event_time.max(ev.ltime + 1);
        if self.recent_events.len() == RECENT_EVENTS {
            self.recent_events.pop_front();
        }
        self.recent_events.push_back(ev.clone());
        self.events.push(Event::User(ev));
    }

    fn set_status(&mut self, name: &str, status: MemberStatus) {
        let Some((id, old)) = self.members.get_mut(name) else { return };
        if *old == status {
            return;
        }
        *old = status.clone();
        let id = id.clone();
        self.member_time += 1;
        let member = self.member(name, &id, status.clone());
        match status {
            MemberStatus::Failed => self.events.push(Event::Failed(member)),
            MemberStatus::Left => self.events.push(Event::Left(member)),
            MemberStatus::Alive | MemberStatus::Leaving => self.events.push(Event::Updated(member)),
        }
        if matches!(status, MemberStatus::Failed | MemberStatus::Left) && name != self.id().name {
            let timer = Timer::Reap { name: name.to_string(), generation: id.generation };
            self.outputs.push(Output::Schedule { after: self.timing.reap_after, timer });
        }
    }

    fn reap(&mut self, name: &str, generation: u64) {
        let is_gone = |(id, s): &(Id, MemberStatus)| {
            id.generation == generation && matches!(s, MemberStatus::Failed | MemberStatus::Left)
        };
        if self.members.get(name).is_some_and(is_gone) {
            self.forget(name);
        }
    }

    fn forget(&mut self, name: &str) {
        if name == self.id().name || self.members.remove(name).is_none() {
            return;
        }
        self.tags.remove(name);
        self.member_time += 1;
        self.events.push(Event::Reaped(name.to_string()));
    }

    fn announce_tags(&mut self, tags: BTreeMap<String, String>, version: u64) {
        let name = self.id().name.clone();
        self.tags.insert(name.clone(), (version, tags.clone()));
        self.add_broadcast(&wire::encode(&Broadcast::Tags { name, version, tags }));
    }

    fn add_broadcast(&mut self, data: &[u8]) {
        // Our own broadcasts are always new to our handler, which also hands them to `pump`.
        if let Err(e) = self.foca.add_broadcast(data) {
            tracing::warn!(error = %e, len = data.len(), "gossip: broadcast refused");
        }
    }

    fn push_pull_with_random_member(&mut self) {
        let n = self.foca.num_members();
        if n > 0 {
            let pick = self.rng.random_range(0..n);
            if let Some(to) = self.foca.iter_members().map(|m| m.id().addr).nth(pick) {
                self.outputs.push(Output::Frame { to, data: self.push_pull_request() });
            }
        }
    }

    /// Serf's `reconnect`: push-pull with one random Failed member, with probability
    /// failed / alive (always, when we are alone). foca's own announces to down members stop
    /// when it sees no member up, and a restarted agent that joined nobody (or only itself)
    /// never contacts the pool; this is what finds either again.
    fn reconnect(&mut self) {
        let me = self.id().name.clone();
        let failed: Vec<SocketAddr> = self
            .members
            .iter()
            .filter(|(name, (_, s))| **name != me && *s == MemberStatus::Failed)
            .map(|(_, (id, _))| id.addr)
            .collect();
        if failed.is_empty() {
            return;
        }
        let gone =
            self.members.values().filter(|(_, s)| matches!(s, MemberStatus::Failed | MemberStatus::Left)).count();
        let alive = self.members.len().saturating_sub(gone).max(1);
        if self.rng.random::<f64>() > failed.len() as f64 / alive as f64 {
            return;
        }
        let to = failed[self.rng.random_range(0..failed.len())];
        self.outputs.push(Output::Frame { to, data: self.push_pull_request() });
    }

    fn state(&self) -> State {
        // foca's membership excludes ourselves; incarnation 0 is enough to introduce us. We go
        // last: `handle_join_reply` tells a reply from ourselves by it.
        let me = foca::Member::alive(self.id().clone());
        let members = self.foca.iter_membership_state().cloned().chain(std::iter::once(me)).collect();
        let records = self
            .members
            .iter()
            .map(|(name, (id, status))| {
                let (tags_version, tags) = self.tags.get(name).cloned().unwrap_or_default();
                Record {
                    name: name.clone(),
                    generation: id.generation,
                    is_left: *status == MemberStatus::Left,
                    tags_version,
                    tags,
                }
            })
            .collect();
        State { members, records, events: self.recent_events.iter().cloned().collect() }
    }

    fn merge(&mut self, state: State) {
        // Events from before we joined anyone are old news (Consul joins with Serf's ignoreOld):
        // remembered as seen, not delivered. Later push-pulls deliver what broadcasts missed.
        let joining = self.members.len() <= 1;
        for ev in state.events {
            if joining {
                self.event_ids.insert(&ev.id);
                self.event_time = self.event_time.max(ev.ltime + 1);
            } else {
                self.deliver(ev);
            }
        }
        for r in &state.records {
            self.update_tags(r.name.clone(), r.tags_version, r.tags.clone());
        }
        // A member the peer saw down but we see up is left to our own probes (memberlist merges a
        // remote "dead" as "suspect" for the same reason: one view is not proof).
        let me = self.id().addr;
        let size = self.foca.num_members().max(state.members.len());
        let active: HashSet<SocketAddr> = self.foca.iter_members().map(|m| m.id().addr).collect();
        let updates = state
            .members
            .into_iter()
            .filter(|m| m.id().addr == me || m.state() != foca::State::Down || !active.contains(&m.id().addr));
        // What we learn here is re-gossiped as often as the cluster we are about to know needs:
        // scaled for our current size, a joiner's updates would be sent too few times to reach
        // everyone (foca fixes the count when an update is queued; memberlist scales at send).
        self.rescale(size);
        if let Err(e) = self.foca.apply_many(updates, true, &mut self.runtime) {
            tracing::debug!(error = %e, "gossip: push-pull merge");
        }
        self.pump();
        for r in state.records.into_iter().filter(|r| r.is_left) {
            self.on_leave_intent(&r.name, r.generation, false);
        }
    }

    /// Re-derives foca's retransmission count and suspicion timeout when the cluster size moves.
    fn rescale(&mut self, n: usize) {
        if n == self.scaled_for {
            return;
        }
        self.scaled_for = n;
        if let Err(e) = self.foca.set_config(foca_config(&self.timing, n)) {
            tracing::warn!(error = %e, "gossip: rescale");
        }
    }

    fn member(&self, name: &str, id: &Id, status: MemberStatus) -> Member {
        let tags = self.tags.get(name).map(|(_, t)| t.clone()).unwrap_or_default();
        Member { name: name.to_string(), addr: id.addr, tags, status }
    }
}

/// Maps Consul's gossip settings to foca's, the way memberlist derives its own:
/// - `probe_interval` → `probe_period`, `probe_timeout` → `probe_rtt`, 3 indirect probes;
/// - `retransmit_mult × ⌈log10(n+1)⌉` → `max_transmissions` (memberlist's retransmit limit);
/// - `suspicion_mult × max(1, log10 n) × probe_interval` → `suspect_to_down_after`;
/// - `gossip_interval`/`gossip_nodes` → periodic gossip; `push_pull_interval` → periodic announce
///   and announce to down members (how partitions heal); `reap_after` → `remove_down_after`.
pub fn foca_config(t: &Timing, n: usize) -> foca::Config {
    let n = n.max(1) as f64;
    let retransmit = t.retransmit_mult as f64 * (n + 1.0).log10().ceil();
    let suspicion = t.probe_interval.mul_f64(t.suspicion_mult as f64 * n.log10().max(1.0));
    let periodic = |frequency, num_members| foca::PeriodicParams {
        frequency,
        num_members: NonZeroUsize::new(num_members).unwrap_or(NonZeroUsize::MIN),
    };
    foca::Config {
        probe_period: t.probe_interval,
        probe_rtt: t.probe_timeout,
        num_indirect_probes: NonZeroUsize::new(3).unwrap_or(NonZeroUsize::MIN),
        max_transmissions: NonZeroU8::new(retransmit.clamp(1.0, 255.0) as u8).unwrap_or(NonZeroU8::MIN),
        suspect_to_down_after: suspicion,
        remove_down_after: Some(t.reap_after),
        max_packet_size: NonZeroUsize::new(MAX_PACKET).unwrap_or(NonZeroUsize::MIN),
        notify_down_members: true,
        periodic_announce: Some(periodic(t.push_pull_interval, 1)),
        periodic_announce_to_down_members: Some(periodic(t.push_pull_interval, 2)),
        periodic_gossip: Some(periodic(t.gossip_interval, t.gossip_nodes)),
    }
}

/// memberlist's `pushPullScale`: beyond 32 members, push-pull less often, doubling per doubling.
fn push_pull_interval(t: &Timing, n: usize) -> Duration {
    let scale = ((n as f64).log2() - 5.0).ceil().max(0.0) + 1.0;
    t.push_pull_interval.mul_f64(scale)
}

/// Decides which broadcasts are news (kept and re-gossiped by foca) and hands them to the core.
struct Handler {
    /// Newest tags version and leave generation seen, by member name.
    known: HashMap<(u8, String), (u64, bool)>,
    event_ids: Dedup,
    inbox: mpsc::Sender<Broadcast>,
}

#[derive(Debug, thiserror::Error)]
#[error("undecodable broadcast: {0}")]
struct BadBroadcast(postcard::Error);

/// What a broadcast replaces in foca's queue: older tags or intents of the same member.
struct Key {
    kind: u8,
    name: String,
    version: u64,
}

impl Invalidates for Key {
    fn invalidates(&self, other: &Self) -> bool {
        self.kind == other.kind && self.name == other.name && self.version >= other.version
    }
}

impl BroadcastHandler<Id> for Handler {
    type Key = Key;
    type Error = BadBroadcast;

    fn receive_item(&mut self, data: &[u8], _sender: Option<&Id>) -> Result<Option<Key>, BadBroadcast> {
        let b: Broadcast = wire::decode(data).map_err(BadBroadcast)?;
        let key = match &b {
            Broadcast::Tags { name, version, .. } => Key { kind: 0, name: name.clone(), version: *version },
            Broadcast::Leave { name, generation, .. } => Key { kind: 1, name: name.clone(), version: *generation },
            Broadcast::Event(ev) => {
                if !self.event_ids.insert(&ev.id) {
                    return Ok(None);
                }
                let _ = self.inbox.send(b.clone());
                return Ok(Some(Key { kind: 2, name: ev.id.clone(), version: 0 }));
            }
        };
        let rank = match &b {
            Broadcast::Leave { prune, .. } => (key.version, *prune),
            _ => (key.version, false),
        };
        let known = self.known.entry((key.kind, key.name.clone())).or_insert((0, false));
        if *known >= rank {
            return Ok(None);
        }
        *known = rank;
        let _ = self.inbox.send(b);
        Ok(Some(key))
    }
}

/// How many delivered events a push-pull carries.
const RECENT_EVENTS: usize = 64;

/// A bounded set of recently seen event ids.
#[derive(Default)]
struct Dedup {
    order: VecDeque<String>,
    seen: HashSet<String>,
}

impl Dedup {
    /// True when `id` was not seen before.
    fn insert(&mut self, id: &str) -> bool {
        if self.seen.contains(id) {
            return false;
        }
        if self.order.len() == EVENT_IDS {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.order.push_back(id.to_string());
        self.seen.insert(id.to_string());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_reply_from_ourselves_counts_for_nothing() {
        let id = |name: &str, last: u8| Id {
            name: name.into(),
            addr: SocketAddr::from(([127, 0, 88, last], 8301)),
            generation: 1,
        };
        let mut a = Core::new(id("a", 1), BTreeMap::new(), Timing::dev(), false, 1);
        let mut b = Core::new(id("b", 2), BTreeMap::new(), Timing::dev(), false, 2);
        let to_self = a.handle_frame(&a.push_pull_request()).expect("frame").expect("reply");
        assert_eq!(a.handle_join_reply(&to_self).ok(), Some(false));
        assert_eq!(a.members().len(), 1);
        let from_b = b.handle_frame(&a.push_pull_request()).expect("frame").expect("reply");
        assert_eq!(a.handle_join_reply(&from_b).ok(), Some(true));
        assert_eq!(a.members().len(), 2);
    }

    #[test]
    fn lan_timings_scale_with_the_cluster_like_memberlist() {
        let t = Timing::lan();
        // (members, retransmissions = 4 × ⌈log10(n+1)⌉, suspicion = 4 × max(1, log10 n) × 1 s)
        for (n, transmissions, suspicion) in [(1, 4, 4.0), (10, 8, 4.0), (100, 12, 8.0), (1000, 16, 12.0)] {
            let c = foca_config(&t, n);
            assert_eq!(c.max_transmissions.get(), transmissions, "n={n}");
            assert!((c.suspect_to_down_after.as_secs_f64() - suspicion).abs() < 0.01, "n={n}: {c:?}");
            assert_eq!((c.probe_period, c.probe_rtt), (t.probe_interval, t.probe_timeout));
            let gossip = c.periodic_gossip.expect("periodic gossip");
            assert_eq!((gossip.frequency, gossip.num_members.get()), (t.gossip_interval, 3));
        }
        assert_eq!(push_pull_interval(&t, 32), t.push_pull_interval);
        assert_eq!(push_pull_interval(&t, 1000), t.push_pull_interval * 6);
    }
}
