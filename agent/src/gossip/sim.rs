//! Deterministic simulation of a gossip cluster: many sans-IO cores on one thread, a virtual
//! clock, and a simulated network with latency, jitter, datagram loss and partitions. The same
//! seed gives the same run. Used by the tests below and by `examples/gossip_sim.rs`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use rand10::rngs::SmallRng;
use rand10::{RngExt, SeedableRng};

use super::core::{Core, Output, Timer};
use super::wire::Id;
use super::{Event, MemberStatus, Timing, UserEvent};

/// The simulated network between every pair of agents.
#[derive(Clone, Debug)]
pub struct Network {
    /// One-way delay of every datagram and frame...
    pub latency: Duration,
    /// ...plus a uniform random extra up to this.
    pub jitter: Duration,
    /// Probability that a datagram is lost (frames ride on TCP and are not).
    pub loss: f64,
}

impl Network {
    /// A quiet LAN: 0.5 ms ± 0.5 ms, no loss.
    pub fn lan() -> Network {
        Network { latency: Duration::from_micros(500), jitter: Duration::from_micros(500), loss: 0.0 }
    }
}

enum Item {
    Packet {
        to: usize,
        data: Vec<u8>,
    },
    /// A stream frame; `reply_to` is the sender when the frame may have a reply.
    Frame {
        to: usize,
        reply_to: Option<usize>,
        data: Vec<u8>,
    },
    Timer {
        node: usize,
        epoch: u64,
        timer: Timer,
    },
    /// The second half of a graceful leave, once the intent had time to spread.
    FinishLeave {
        node: usize,
        epoch: u64,
    },
}

struct Node {
    core: Option<Core>,
    /// Bumped on kill and restart, so that timers of a previous life are ignored.
    epoch: u64,
    generation: u64,
    /// Partition group: datagrams and frames flow only within a group.
    group: u32,
    /// This node's view of every other node's status, by node index.
    view: Vec<Option<MemberStatus>>,
    alive_known: usize,
    user_events: Vec<UserEvent>,
}

pub struct Sim {
    now: Duration,
    seq: u64,
    queue: BinaryHeap<Reverse<(Duration, u64, usize)>>,
    items: HashMap<usize, Item>,
    nodes: Vec<Node>,
    by_addr: HashMap<SocketAddr, usize>,
    rng: SmallRng,
    net: Network,
    timing: Timing,
    /// Datagrams delivered, for the figures.
    pub packets: u64,
}

impl Sim {
    pub fn new(seed: u64, net: Network, timing: Timing) -> Sim {
        Sim {
            now: Duration::ZERO,
            seq: 0,
            queue: BinaryHeap::new(),
            items: HashMap::new(),
            nodes: Vec::new(),
            by_addr: HashMap::new(),
            rng: SmallRng::seed_from_u64(seed),
            net,
            timing,
            packets: 0,
        }
    }

    pub fn now(&self) -> Duration {
        self.now
    }

    pub fn name(i: usize) -> String {
        format!("n{i}")
    }

    fn addr(i: usize) -> SocketAddr {
        let [_, b, c, d] = (i as u32).to_be_bytes();
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, b, c, d)), super::DEFAULT_PORT)
    }

    /// Starts a new agent, alone until it joins. Returns its index.
    pub fn add(&mut self) -> usize {
        let i = self.nodes.len();
        self.by_addr.insert(Sim::addr(i), i);
        for n in &mut self.nodes {
            n.view.push(None);
        }
        let view = vec![None; i + 1];
        self.nodes.push(Node {
            core: None,
            epoch: 0,
            generation: 1000,
            group: 0,
            view,
            alive_known: 0,
            user_events: Vec::new(),
        });
        self.boot(i);
        i
    }

    fn boot(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.epoch += 1;
        // A restarted agent knows nothing but what it learns in its new life.
        node.view.iter_mut().for_each(|s| *s = None);
        node.alive_known = 0;
        let id = Id { name: Sim::name(i), addr: Sim::addr(i), generation: node.generation };
        let tags = BTreeMap::from([("role".to_string(), "node".to_string())]);
        let seed = self.rng.random();
        node.core = Some(Core::new(id, tags, self.timing.clone(), false, seed));
        self.collect(i);
    }

    /// `node` joins through `seed` with a push-pull, as `Gossip::join` does over TCP.
    pub fn join(&mut self, node: usize, seed: usize) {
        if let Some(data) = self.nodes[node].core.as_ref().map(Core::push_pull_request) {
            self.send_frame(node, seed, Some(node), data);
        }
    }

    /// Stops an agent without leaving, like `kill -9`.
    pub fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.core = None;
        node.epoch += 1;
    }

    /// Starts a killed agent again under the same name and address, and joins it through `seed`.
    pub fn restart(&mut self, i: usize, seed: usize) {
        self.nodes[i].generation += 1;
        self.boot(i);
        self.join(i, seed);
    }

    /// Graceful leave: the intent now, foca's leave a few gossip rounds later.
    pub fn leave(&mut self, i: usize) {
        let Some(core) = self.nodes[i].core.as_mut() else { return };
        core.leave_intent();
        self.collect(i);
        let epoch = self.nodes[i].epoch;
        self.push(self.timing.gossip_interval * 5, Item::FinishLeave { node: i, epoch });
    }

    pub fn fire_event(&mut self, i: usize, ev: UserEvent) {
        if let Some(core) = self.nodes[i].core.as_mut() {
            core.fire_event(ev);
            self.collect(i);
        }
    }

    pub fn set_tags(&mut self, i: usize, tags: BTreeMap<String, String>) {
        if let Some(core) = self.nodes[i].core.as_mut() {
            core.set_tags(tags);
            self.collect(i);
        }
    }

    /// Splits the cluster: each listed group can only talk within itself; unlisted nodes form
    /// group 0.
    pub fn partition(&mut self, groups: &[&[usize]]) {
        for (g, members) in groups.iter().enumerate() {
            for &i in *members {
                self.nodes[i].group = g as u32 + 1;
            }
        }
    }

    pub fn heal(&mut self) {
        for n in &mut self.nodes {
            n.group = 0;
        }
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].core.is_some()
    }

    /// How `at` sees `of` (its own entry is `None`).
    pub fn status(&self, at: usize, of: usize) -> Option<MemberStatus> {
        self.nodes[at].view[of].clone()
    }

    /// The generation of `of` that `at` knows (each restart is one more), with its status.
    pub fn known(&self, at: usize, of: usize) -> Option<(u64, MemberStatus)> {
        self.nodes[at].core.as_ref()?.known(&Sim::name(of))
    }

    pub fn generation(&self, i: usize) -> u64 {
        self.nodes[i].generation
    }

    pub fn user_events(&self, i: usize) -> &[UserEvent] {
        &self.nodes[i].user_events
    }

    pub fn tags(&self, at: usize, of: usize) -> Option<BTreeMap<String, String>> {
        let core = self.nodes[at].core.as_ref()?;
        core.members().into_iter().find(|m| m.name == Sim::name(of)).map(|m| m.tags)
    }

    /// Every running agent sees every other running agent alive.
    pub fn converged(&self) -> bool {
        let running = self.nodes.iter().filter(|n| n.core.is_some()).count();
        self.nodes.iter().filter(|n| n.core.is_some()).all(|n| {
            n.alive_known + 1 == running
                && n.view.iter().zip(&self.nodes).all(|(s, o)| o.core.is_some() || *s != Some(MemberStatus::Alive))
        })
    }

    /// Every node's view of every other, one line per running node, for assertion messages.
    pub fn views(&self) -> String {
        let mut out = String::new();
        for (i, n) in self.nodes.iter().enumerate().filter(|(_, n)| n.core.is_some()) {
            let seen: Vec<String> = n.view.iter().enumerate().map(|(j, s)| format!("n{j}={s:?}")).collect();
            out.push_str(&format!("\n  n{i}: {}", seen.join(" ")));
        }
        out
    }

    /// Every running agent other than `of` sees `of` with `status`.
    pub fn all_see(&self, of: usize, status: MemberStatus) -> bool {
        let want = Some(status);
        self.nodes.iter().enumerate().filter(|(i, n)| *i != of && n.core.is_some()).all(|(_, n)| n.view[of] == want)
    }

    /// Runs until `cond` holds (checked every 10 ms of virtual time) or `limit` passes. Returns
    /// the virtual time it took.
    pub fn run_until(&mut self, limit: Duration, cond: impl Fn(&Sim) -> bool) -> Option<Duration> {
        let start = self.now;
        let step = Duration::from_millis(10);
        loop {
            if cond(self) {
                return Some(self.now - start);
            }
            if self.now - start >= limit {
                return None;
            }
            self.run_for(step);
        }
    }

    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(&Reverse((at, _, key))) = self.queue.peek() {
            if at > end {
                break;
            }
            self.queue.pop();
            self.now = at;
            if let Some(item) = self.items.remove(&key) {
                self.deliver(item);
            }
        }
        self.now = end;
    }

    fn deliver(&mut self, item: Item) {
        let (i, res) = match item {
            Item::Packet { to, data } => {
                self.packets += 1;
                (to, self.nodes[to].core.as_mut().map(|c| c.handle_packet(&data).map(|_| ())))
            }
            Item::Frame { to, reply_to, data } => {
                let Some(core) = self.nodes[to].core.as_mut() else { return };
                let res = core.handle_frame(&data);
                if let (Ok(Some(reply)), Some(back)) = (&res, reply_to) {
                    let reply = reply.clone();
                    self.send_frame(to, back, None, reply);
                }
                (to, Some(res.map(|_| ())))
            }
            Item::Timer { node, epoch, timer } => {
                if self.nodes[node].epoch != epoch {
                    return;
                }
                (node, self.nodes[node].core.as_mut().map(|c| c.handle_timer(timer)))
            }
            Item::FinishLeave { node, epoch } => {
                if self.nodes[node].epoch != epoch {
                    return;
                }
                let res = self.nodes[node].core.as_mut().map(Core::leave);
                self.collect(node);
                self.kill(node);
                (node, res)
            }
        };
        if let Some(Err(e)) = res {
            tracing::trace!(node = i, error = %e, "sim: rejected input");
        }
        self.collect(i);
    }

    /// Routes what node `i` produced and records its events.
    fn collect(&mut self, i: usize) {
        let Some(core) = self.nodes[i].core.as_mut() else { return };
        let outputs: Vec<Output> = core.drain_outputs().collect();
        let events: Vec<Event> = core.drain_events().collect();
        let epoch = self.nodes[i].epoch;
        for out in outputs {
            match out {
                Output::Packet { to, data } => {
                    let Some(&to) = self.by_addr.get(&to) else { continue };
                    if self.rng.random_bool(self.net.loss.clamp(0.0, 1.0)) || !self.connected(i, to) {
                        continue;
                    }
                    let delay = self.delay();
                    self.push(delay, Item::Packet { to, data });
                }
                Output::Frame { to, data } => {
                    if let Some(&to) = self.by_addr.get(&to) {
                        self.send_frame(i, to, Some(i), data);
                    }
                }
                Output::Schedule { after, timer } => self.push(after, Item::Timer { node: i, epoch, timer }),
            }
        }
        for ev in events {
            self.record(i, ev);
        }
    }

    fn record(&mut self, i: usize, ev: Event) {
        let (name, status) = match ev {
            Event::Joined(m) | Event::Updated(m) | Event::Failed(m) | Event::Left(m) => (m.name, Some(m.status)),
            Event::Reaped(name) => (name, None),
            Event::User(ev) => return self.nodes[i].user_events.push(ev),
        };
        let Some(of) = name.strip_prefix('n').and_then(|s| s.parse::<usize>().ok()) else { return };
        if of == i || of >= self.nodes.len() {
            return;
        }
        let node = &mut self.nodes[i];
        let was_alive = node.view[of] == Some(MemberStatus::Alive);
        let is_alive = status == Some(MemberStatus::Alive);
        node.view[of] = status;
        match (was_alive, is_alive) {
            (false, true) => node.alive_known += 1,
            (true, false) => node.alive_known -= 1,
            _ => {}
        }
    }

    fn send_frame(&mut self, from: usize, to: usize, reply_to: Option<usize>, data: Vec<u8>) {
        if self.connected(from, to) {
            // A frame costs a connection handshake plus the send.
            let delay = self.delay() * 3;
            self.push(delay, Item::Frame { to, reply_to, data });
        }
    }

    fn connected(&self, a: usize, b: usize) -> bool {
        self.nodes[a].group == self.nodes[b].group
    }

    fn delay(&mut self) -> Duration {
        let jitter = self.net.jitter.mul_f64(self.rng.random::<f64>());
        self.net.latency + jitter
    }

    fn push(&mut self, after: Duration, item: Item) {
        self.seq += 1;
        let key = self.seq as usize;
        self.items.insert(key, item);
        self.queue.push(Reverse((self.now + after, self.seq, key)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    /// `n` agents that all joined through agent 0, converged on LAN timings.
    fn cluster(seed: u64, n: usize, net: Network) -> Sim {
        let mut sim = Sim::new(seed, net, Timing::lan());
        for i in 0..n {
            sim.add();
            if i > 0 {
                sim.join(i, 0);
            }
        }
        let took = sim.run_until(MINUTE, Sim::converged);
        assert!(took.is_some(), "seed {seed}: {n} agents did not converge in a minute");
        sim
    }

    #[test]
    fn fifty_agents_converge_through_one_seed() {
        let sim = cluster(1, 50, Network::lan());
        assert!(sim.now() < Duration::from_secs(5), "seed 1: took {:?}", sim.now());
        assert_eq!(sim.tags(49, 0).expect("tags of n0 on n49")["role"], "node");
    }

    #[test]
    fn a_killed_agent_is_failed_everywhere_and_a_restart_makes_it_alive() {
        let mut sim = cluster(2, 50, Network::lan());
        sim.kill(7);
        let took = sim.run_until(MINUTE, |s| s.all_see(7, MemberStatus::Failed));
        // Probe (1 s) + suspicion (4 × log10(50) × 1 s ≈ 6.8 s) + dissemination.
        let took = took.expect("seed 2: failure detected");
        assert!(took < Duration::from_secs(15), "seed 2: took {took:?}");
        sim.restart(7, 3);
        assert!(sim.run_until(MINUTE, |s| s.all_see(7, MemberStatus::Alive)).is_some(), "seed 2: back alive");
    }

    #[test]
    fn failed_and_left_members_are_reaped_after_reap_after() {
        let timing = Timing { reap_after: MINUTE, ..Timing::lan() };
        let mut sim = Sim::new(7, Network::lan(), timing);
        for i in 0..10 {
            sim.add();
            if i > 0 {
                sim.join(i, 0);
            }
        }
        assert!(sim.run_until(MINUTE, Sim::converged).is_some(), "seed 7: converged");
        sim.kill(3);
        sim.leave(4);
        let gone = |s: &Sim| s.all_see(3, MemberStatus::Failed) && s.all_see(4, MemberStatus::Left);
        assert!(sim.run_until(MINUTE, gone).is_some(), "seed 7: failed and left");
        let reaped = |s: &Sim| {
            (0..10).filter(|&i| s.is_running(i)).all(|i| s.status(i, 3).is_none() && s.status(i, 4).is_none())
        };
        let took = sim.run_until(2 * MINUTE, reaped).expect("seed 7: reaped");
        assert!(took <= MINUTE, "seed 7: reaped after {took:?}");
    }

    #[test]
    fn a_graceful_leave_is_left_not_failed() {
        let mut sim = cluster(3, 20, Network::lan());
        sim.leave(4);
        assert!(sim.run_until(MINUTE, |s| s.all_see(4, MemberStatus::Left)).is_some(), "seed 3: left everywhere");
    }

    #[test]
    fn a_partition_heals() {
        let mut sim = cluster(4, 20, Network::lan());
        let (left, right): (Vec<usize>, Vec<usize>) = (0..20).partition(|i| i % 2 == 0);
        sim.partition(&[&left, &right]);
        let split = |s: &Sim| left.iter().all(|&a| right.iter().all(|&b| s.status(a, b) == Some(MemberStatus::Failed)));
        assert!(sim.run_until(MINUTE, split).is_some(), "seed 4: each side sees the other failed");
        sim.heal();
        // Down members are re-contacted every push_pull_interval (30 s on LAN timings).
        assert!(sim.run_until(3 * MINUTE, Sim::converged).is_some(), "seed 4: healed");
    }

    #[test]
    fn an_event_missed_during_a_partition_arrives_by_push_pull() {
        let mut sim = cluster(6, 10, Network::lan());
        sim.partition(&[&[7]]);
        sim.fire_event(3, UserEvent { id: "e1".into(), name: "deploy".into(), ..Default::default() });
        let others_have_it = |s: &Sim| (0..10).filter(|&i| i != 7).all(|i| s.user_events(i).len() == 1);
        assert!(sim.run_until(MINUTE, others_have_it).is_some(), "seed 6: the event outside the partition");
        // Long past every retransmission of the broadcast.
        let _ = sim.run_until(MINUTE / 4, |_| false);
        assert!(sim.user_events(7).is_empty());
        sim.heal();
        let delivered = |s: &Sim| s.user_events(7).len() == 1;
        assert!(sim.run_until(3 * MINUTE, delivered).is_some(), "seed 6: delivered after healing");
    }

    #[test]
    fn events_and_tags_reach_everyone_despite_loss() {
        let net = Network { loss: 0.1, ..Network::lan() };
        let mut sim = cluster(5, 30, net);
        sim.fire_event(3, UserEvent { id: "e1".into(), name: "deploy".into(), ..Default::default() });
        let big =
            UserEvent { id: "e2".into(), name: "big".into(), payload: Some("a".repeat(3000)), ..Default::default() };
        sim.fire_event(4, big);
        sim.set_tags(5, BTreeMap::from([("role".into(), "consul".into())]));
        let everywhere = |s: &Sim| {
            (0..30)
                .all(|i| s.user_events(i).len() == 2 && (i == 5 || s.tags(i, 5).is_some_and(|t| t["role"] == "consul")))
        };
        assert!(sim.run_until(MINUTE, everywhere).is_some(), "seed 5: events and tags everywhere");
        assert_eq!(sim.user_events(5).len(), 2);
        assert!(sim.user_events(0).iter().all(|e| e.ltime >= 1));
    }

    #[test]
    fn datagram_loss_makes_no_false_failures() {
        // Indirect probes and refuted suspicions are what keep a lossy network from flapping.
        let mut sim = cluster(8, 50, Network { loss: 0.05, ..Network::lan() });
        let any_failed = |s: &Sim| (0..50).any(|a| (0..50).any(|b| s.status(a, b) == Some(MemberStatus::Failed)));
        assert_eq!(sim.run_until(2 * MINUTE, any_failed), None, "seed 8: a live agent was marked failed");
    }

    /// The benchmark that split gossip: three servers and a client, every agent started with
    /// `-retry-join` of server 0 (so server 0 joins only itself), servers killed and restarted one
    /// at a time; some restarts come before the kill is detected, some after. After each restart
    /// every running agent must see every other alive again, even when the restarted agent
    /// joined nobody but itself.
    #[test]
    fn servers_killed_and_restarted_in_turn_rejoin_a_single_pool() {
        let timing = Timing::dev();
        for seed in [11, 12, 13] {
            let mut sim = Sim::new(seed, Network::lan(), timing.clone());
            for i in 0..4 {
                sim.add();
                sim.join(i, 0);
            }
            assert!(sim.run_until(MINUTE, Sim::converged).is_some(), "seed {seed}: first convergence");
            for round in 0..10 {
                let victim = [1, 2, 0][round % 3];
                sim.kill(victim);
                // Half the restarts are quick (old identity still alive in the others' views),
                // half come after everyone marked the victim Failed.
                if round % 2 == 0 {
                    let failed = sim.run_until(MINUTE, |s| s.all_see(victim, MemberStatus::Failed));
                    assert!(failed.is_some(), "seed {seed} round {round}: n{victim} failed{}", sim.views());
                } else {
                    sim.run_for(timing.probe_interval);
                }
                sim.restart(victim, 0);
                let limit = timing.reconnect_interval * 10 + MINUTE / 2;
                let took = sim.run_until(limit, Sim::converged);
                assert!(
                    took.is_some(),
                    "seed {seed} round {round}: n{victim} restarted, no convergence{}",
                    sim.views()
                );
            }
        }
    }

    /// The same churn at the benchmark's pace: the next server is killed as soon as the previous
    /// one is back, without waiting for gossip to converge, on LAN-like anti-entropy (30 s
    /// push-pull, so foca's announce to down members cannot be what heals it). A server can end
    /// up seeing every peer Failed (foca then stops all its periodic traffic) while the restarted
    /// ones joined only server 0 or themselves; reconnecting to Failed members must heal that.
    #[test]
    fn servers_restarted_in_quick_pairs_that_join_only_server_0_converge() {
        let timing = Timing { push_pull_interval: Duration::from_secs(30), ..Timing::dev() };
        for seed in [21, 22, 23, 24] {
            let mut sim = Sim::new(seed, Network::lan(), timing.clone());
            for i in 0..3 {
                sim.add();
                sim.join(i, 0);
            }
            assert!(sim.run_until(MINUTE, Sim::converged).is_some(), "seed {seed}: first convergence");
            // In pairs: the second server is killed as soon as the first is back. (0, 2) is the
            // benchmark's end: 0 joined only itself, 2 joined that lone 0, and 1 sees both Failed.
            for (round, victim) in [0, 2, 1, 0, 2, 1, 0, 2, 1, 0].into_iter().enumerate() {
                sim.kill(victim);
                // Nobody sees it alive any more (some may not know it at all).
                let gone =
                    |s: &Sim| (0..3).all(|i| !s.is_running(i) || s.status(i, victim) != Some(MemberStatus::Alive));
                assert!(
                    sim.run_until(MINUTE, gone).is_some(),
                    "seed {seed} round {round}: n{victim} failed{}",
                    sim.views()
                );
                sim.restart(victim, 0);
                if round % 2 == 1 {
                    // Four push-pull intervals: whatever foca's own announces could heal, they have.
                    let took = sim.run_until(2 * MINUTE, Sim::converged);
                    assert!(took.is_some(), "seed {seed} round {round}: no convergence{}", sim.views());
                }
            }
        }
    }

    /// A restarted agent's new generation replaces the old one in every view by dissemination,
    /// not only at the member it pushed-pulled with: push-pull is out of reach (30 s), and the
    /// restart comes before or after the old one is detected.
    #[test]
    fn a_restart_replaces_the_old_generation_everywhere_by_gossip() {
        let timing = Timing { push_pull_interval: Duration::from_secs(30), ..Timing::dev() };
        for (seed, wait_failed) in [(31, false), (32, true), (33, false), (34, true)] {
            let mut sim = Sim::new(seed, Network::lan(), timing.clone());
            for i in 0..20 {
                sim.add();
                sim.join(i, 0);
            }
            assert!(sim.run_until(MINUTE, Sim::converged).is_some(), "seed {seed}: converged");
            sim.kill(7);
            if wait_failed {
                assert!(sim.run_until(MINUTE, |s| s.all_see(7, MemberStatus::Failed)).is_some(), "seed {seed}");
            }
            sim.restart(7, 3);
            let new = sim.generation(7);
            let everywhere =
                |s: &Sim| (0..20).filter(|&i| i != 7).all(|i| s.known(i, 7) == Some((new, MemberStatus::Alive)));
            let took = sim.run_until(Duration::from_secs(20), everywhere);
            let views: Vec<_> = (0..20).map(|i| sim.known(i, 7)).collect();
            assert!(took.is_some(), "seed {seed}: generation {new} not everywhere: {views:?}");
            assert!(took < Some(Duration::from_secs(10)), "seed {seed}: took {took:?}");
            // The old generation's probes time out meanwhile; that must not touch the new one.
            let broken = |s: &Sim| !everywhere(s);
            assert_eq!(sim.run_until(MINUTE / 2, broken), None, "seed {seed}: the new generation did not stay");
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_run() {
        let run = |seed| {
            let mut sim = cluster(seed, 10, Network { loss: 0.05, ..Network::lan() });
            sim.kill(2);
            let took = sim.run_until(MINUTE, |s| s.all_see(2, MemberStatus::Failed));
            (took, sim.packets)
        };
        assert_eq!(run(6), run(6));
    }
}
