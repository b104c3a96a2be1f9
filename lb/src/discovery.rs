//! Keeps the routing snapshot current. A pingora background service that runs:
//! - one blocking-query watcher on `/v1/catalog/services`,
//! - one blocking-query watcher on `/v1/health/service/<name>?passing` per service,
//! - a poll of `/v1/agent/members` (it has no blocking form) that also decides which agents the
//!   watchers may fail over to, and of `/v1/catalog/datacenters`,
//! - for other datacenters, only what requests asked for (`Demand`, bounded by `remote.rs`):
//!   `/v1/catalog/services?dc=` per datacenter and `/v1/health/service/<name>?passing&dc=` per
//!   service, asked of the local agents, which forward them over the WAN,
//!
//! all with lb's ACL token (`-consul-token`; proxied requests never carry it), and rebuilds the
//! `Snapshot` after each change, swapping it in atomically, so a health change
//! reaches routing as soon as the agent answers the blocking query. SIGHUP reloads the config
//! file and rebuilds the snapshot with its routing options. It talks to agents only
//! through the shared `api` crate.

use crate::remote::{Action, Remote};
use crate::routing::{agent_http_addr, Catalog, RemoteCatalog, Snapshot, Want};
use crate::Shared;
use api::{AgentMember, Client, ServiceEntry, Target, Watcher};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::services::ServiceReadyNotifier;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn, Instrument};

/// Longest wait for a complete first view before the proxy starts serving anyway.
const READY_TIMEOUT: Duration = Duration::from_secs(3);

/// What the watcher tasks report to the loop that owns the `Catalog`.
#[derive(Debug)]
enum Input {
    Members(Vec<AgentMember>),
    Services(BTreeMap<String, Vec<String>>),
    Health(String, Vec<ServiceEntry>),
    Datacenters(Vec<String>),
    /// Another datacenter's catalog, by lowercase datacenter name.
    RemoteServices(String, BTreeMap<String, Vec<String>>),
    /// Another datacenter's catalog could not be read.
    RemoteFailed(String, String),
    /// (datacenter, service, its passing instances).
    RemoteHealth(String, String, Vec<ServiceEntry>),
    /// A request asked for a service of another datacenter.
    Want(Want),
    /// Time to stop watches of other datacenters that no request used.
    Tick,
    /// SIGHUP: read the config file again.
    Reload,
}

/// How requests ask discovery to watch a service of another datacenter, and learn that the
/// routing table was rebuilt.
#[derive(Debug)]
pub struct Demand {
    tx: mpsc::Sender<Want>,
    rx: parking_lot::Mutex<Option<mpsc::Receiver<Want>>>,
    rebuilt: tokio::sync::watch::Sender<u64>,
}

impl Default for Demand {
    fn default() -> Demand {
        let (tx, rx) = mpsc::channel(64);
        Demand { tx, rx: parking_lot::Mutex::new(Some(rx)), rebuilt: tokio::sync::watch::Sender::new(0) }
    }
}

impl Demand {
    /// Asks for a service; dropped when discovery is behind: a waiting request asks again
    /// after each rebuild.
    pub fn want(&self, want: Want) {
        let _ = self.tx.try_send(want);
    }

    /// Wakes on each rebuilt routing table. Subscribe before looking the route up, so a rebuild
    /// in between is not missed.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.rebuilt.subscribe()
    }
}

/// The agents discovery may ask: alive members (by their HTTP address) and the seeds. A new
/// generation tells watchers stuck on dead agents to rebuild their client list.
#[derive(Debug)]
pub struct Agents {
    clients: ArcSwap<Vec<Client>>,
    generation: AtomicU64,
}

impl Agents {
    pub fn new(clients: Vec<Client>) -> Agents {
        Agents { clients: ArcSwap::from_pointee(clients), generation: AtomicU64::new(0) }
    }

    /// The current clients, rotated by `spread` so that watchers start on different agents.
    fn rotated(&self, spread: usize) -> (u64, Vec<Client>) {
        let gen = self.generation.load(Ordering::Acquire);
        let mut v: Vec<Client> = self.clients.load().as_ref().clone();
        if !v.is_empty() {
            let n = v.len();
            v.rotate_left(spread % n);
        }
        (gen, v)
    }

    fn set(&self, clients: Vec<Client>) {
        let same = {
            let cur = self.clients.load();
            cur.len() == clients.len() && cur.iter().zip(&clients).all(|(a, b)| a.addr() == b.addr())
        };
        if !same && !clients.is_empty() {
            self.clients.store(Arc::new(clients));
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    pub fn addrs(&self) -> Vec<String> {
        self.clients.load().iter().map(|c| c.addr().to_string()).collect()
    }
}

/// The background service.
pub struct Discovery {
    shared: Arc<Shared>,
    seeds: Vec<Client>,
}

impl Discovery {
    pub fn new(shared: Arc<Shared>, seeds: Vec<Client>) -> Discovery {
        Discovery { shared, seeds }
    }

    async fn run(&self, mut shutdown: ShutdownWatch, ready: ServiceReadyNotifier) {
        // Held until the first complete view (members, services, each service's health) is
        // live, so the proxy starts serving only with a full table. After a graceful upgrade
        // the old process keeps serving meanwhile; if agents are slow, serve what we have.
        let mut ready = Some(ready);
        let ready_deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        let mut services_known = false;
        let shared = self.shared.clone();
        let (tx, mut rx) = mpsc::channel::<Input>(1024);
        let mut tasks: Vec<JoinHandle<()>> = Vec::new();
        let mut health_tasks: HashMap<String, JoinHandle<()>> = HashMap::new();
        let mut cat = Catalog { seeds: shared.seeds.clone(), ..Default::default() };
        let mut version = shared.snapshot.load().version;

        tasks.push(tokio::spawn(
            poll_members(shared.clone(), self.seeds.clone(), tx.clone()).instrument(tracing::info_span!("members")),
        ));
        tasks.push(tokio::spawn(
            watch::<BTreeMap<String, Vec<String>>>(
                shared.clone(),
                Target::new("/v1/catalog/services"),
                tx.clone(),
                Input::Services,
                |_| None,
            )
            .instrument(tracing::info_span!("watch", path = "/v1/catalog/services")),
        ));

        if let Some(mut wants) = shared.demand.rx.lock().take() {
            let tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(w) = wants.recv().await {
                    if tx.send(Input::Want(w)).await.is_err() {
                        return;
                    }
                }
            }));
        }
        {
            let every =
                (shared.config.load().remote_idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(30));
            let tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    if tx.send(Input::Tick).await.is_err() {
                        return;
                    }
                }
            }));
        }
        let mut remote = Remote::default();
        let mut remote_tasks: HashMap<(String, Option<String>), JoinHandle<()>> = HashMap::new();

        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(mut hup) => {
                let tx = tx.clone();
                tasks.push(tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        if tx.send(Input::Reload).await.is_err() {
                            return;
                        }
                    }
                }));
            }
            Err(e) => warn!("cannot listen for SIGHUP, the config file will not be reloaded: {e}"),
        }

        loop {
            let first = tokio::select! {
                _ = shutdown.changed() => break,
                _ = tokio::time::sleep_until(ready_deadline), if ready.is_some() => {
                    warn!("no complete view of the cluster after {READY_TIMEOUT:?}; serving what is known");
                    if let Some(r) = ready.take() {
                    r.notify_ready();
                }
                    continue;
                }
                msg = rx.recv() => match msg {
                    Some(m) => m,
                    None => break,
                },
            };
            let received = Instant::now();
            // Coalesce a burst (many services changing at once) into one rebuild.
            let mut batch = vec![first];
            while let Ok(m) = rx.try_recv() {
                batch.push(m);
            }
            // Wants and ticks that change nothing do not rebuild the table.
            let mut changed = false;
            for msg in batch {
                let now = Instant::now();
                let limit = shared.config.load().remote_watches;
                let mut actions = Vec::new();
                if !matches!(msg, Input::Want(_) | Input::Tick) {
                    changed = true;
                }
                match msg {
                    Input::Members(m) => {
                        let token = shared.config.load().consul_token.as_ref().map(|t| t.0.clone());
                        let clients =
                            agent_clients(&m, &cat.seeds, &self.seeds, token, shared.tls.as_ref().map(|t| &t.client));
                        shared.agents.set(clients);
                        cat.members = Some(m);
                    }
                    Input::Services(services) => {
                        health_tasks.retain(|name, task| {
                            let keep = services.contains_key(name);
                            if !keep {
                                task.abort();
                            }
                            keep
                        });
                        cat.health.retain(|name, _| services.contains_key(name));
                        for name in services.keys() {
                            if !health_tasks.contains_key(name) {
                                let target = Target::new(format!("/v1/health/service/{name}")).with("passing", "1");
                                let owned = name.clone();
                                let wrap = move |v| Input::Health(owned.clone(), v);
                                let task =
                                    watch::<Vec<ServiceEntry>>(shared.clone(), target, tx.clone(), wrap, |_| None)
                                        .instrument(tracing::info_span!("watch", service = %name));
                                health_tasks.insert(name.clone(), tokio::spawn(task));
                            }
                        }
                        cat.services = services;
                        services_known = true;
                    }
                    Input::Health(name, entries) => {
                        // An answer may arrive after its service left the catalog.
                        if cat.services.contains_key(&name) {
                            cat.health.insert(name, entries);
                        }
                    }
                    Input::Datacenters(list) => {
                        actions = remote.set_datacenters(&list);
                        cat.datacenters = list;
                    }
                    Input::RemoteServices(dc, services) => {
                        if let Some(rc) = cat.remote.get_mut(&dc) {
                            actions = remote.catalog(&dc, services.keys(), now, limit);
                            rc.health.retain(|name, _| services.contains_key(name));
                            rc.services = Some(services);
                            rc.error = None;
                        }
                    }
                    Input::RemoteFailed(dc, e) => {
                        // Only before its first answer: then requests are told at once, instead
                        // of each waiting `remote_wait`. Afterwards the last answer keeps routing.
                        if let Some(rc) = cat.remote.get_mut(&dc).filter(|rc| rc.services.is_none()) {
                            rc.error = Some(e);
                        }
                    }
                    Input::RemoteHealth(dc, name, entries) => {
                        // An answer may arrive after its watch stopped.
                        if remote_tasks.contains_key(&(dc.clone(), Some(name.clone()))) {
                            if let Some(rc) = cat.remote.get_mut(&dc) {
                                rc.health.insert(name, entries);
                            }
                        }
                    }
                    Input::Want(w) => actions = remote.want(&w.dc, &w.service, now, limit),
                    Input::Tick => {
                        let snap = shared.snapshot.load();
                        let idle = shared.config.load().remote_idle;
                        actions = remote.tick(now, idle, |dc, name| snap.remote_requests(dc, &name.to_lowercase()));
                    }
                    Input::Reload => match shared.config.load().reload() {
                        Ok(r) => {
                            if !r.ignored.is_empty() {
                                warn!(keys = ?r.ignored, "config reloaded, but these keys need a restart or an upgrade");
                            }
                            info!("config reloaded");
                            shared.config.store(Arc::new(r.config));
                        }
                        Err(e) => error!("config not reloaded, keeping the running one: {e}"),
                    },
                }
                changed |= !actions.is_empty();
                for a in actions {
                    self.remote_action(a, &mut cat, &mut remote_tasks, &tx);
                }
                cat.remote_full = remote.count() >= shared.config.load().remote_watches;
            }
            if !changed {
                continue;
            }
            version += 1;
            let snap = Snapshot::build(&cat, &shared.config.load(), &shared.stats, &shared.metrics, version);
            shared.snapshot.store(Arc::new(snap));
            shared.demand.rebuilt.send_replace(version);
            // State of instances that left every route goes once no request holds it.
            shared.stats.retain(|_| false);
            shared.metrics.snapshot_updates.fetch_add(1, Ordering::Relaxed);
            shared.metrics.last_update_micros.store(received.elapsed().as_micros() as u64, Ordering::Relaxed);
            debug!(version, services = cat.health.len(), "routing table rebuilt");
            if ready.is_some() && services_known && cat.members.is_some() && cat.health.len() == cat.services.len() {
                info!(services = cat.services.len(), "routing table complete");
                if let Some(r) = ready.take() {
                    r.notify_ready();
                }
            }
        }
        for t in tasks.into_iter().chain(health_tasks.into_values()).chain(remote_tasks.into_values()) {
            t.abort();
        }
        info!("discovery stopped");
    }
}

impl Discovery {
    /// Starts or stops a watch of another datacenter, keeping the catalog in step.
    fn remote_action(
        &self,
        action: Action,
        cat: &mut Catalog,
        tasks: &mut HashMap<(String, Option<String>), JoinHandle<()>>,
        tx: &mpsc::Sender<Input>,
    ) {
        let shared = self.shared.clone();
        match action {
            Action::WatchCatalog(dc) => {
                info!(dc = %dc, "watching another datacenter's catalog");
                cat.remote.insert(dc.clone(), RemoteCatalog::default());
                let target = Target::new("/v1/catalog/services").with("dc", &dc);
                let owned = dc.clone();
                let failed_dc = dc.clone();
                let task = watch::<BTreeMap<String, Vec<String>>>(
                    shared,
                    target,
                    tx.clone(),
                    move |v| Input::RemoteServices(owned.clone(), v),
                    move |e| Some(Input::RemoteFailed(failed_dc.clone(), e)),
                )
                .instrument(tracing::info_span!("watch", dc = %dc, path = "/v1/catalog/services"));
                tasks.insert((dc, None), tokio::spawn(task));
            }
            Action::WatchHealth(dc, name) => {
                info!(dc = %dc, service = %name, "watching a service of another datacenter");
                if let Some(rc) = cat.remote.get_mut(&dc) {
                    rc.watched.insert(name.to_lowercase());
                }
                let target = Target::new(format!("/v1/health/service/{name}")).with("passing", "1").with("dc", &dc);
                let (d, n) = (dc.clone(), name.clone());
                let wrap = move |v| Input::RemoteHealth(d.clone(), n.clone(), v);
                let task = watch::<Vec<ServiceEntry>>(shared, target, tx.clone(), wrap, |_| None)
                    .instrument(tracing::info_span!("watch", dc = %dc, service = %name));
                tasks.insert((dc, Some(name)), tokio::spawn(task));
            }
            Action::Stop(dc, None) => {
                info!(dc = %dc, "no longer watching another datacenter");
                tasks.retain(|(d, _), t| {
                    let keep = *d != dc;
                    if !keep {
                        t.abort();
                    }
                    keep
                });
                cat.remote.remove(&dc);
            }
            Action::Stop(dc, Some(name)) => {
                info!(dc = %dc, service = %name, "no longer watching a service of another datacenter");
                if let Some(t) = tasks.remove(&(dc.clone(), Some(name.clone()))) {
                    t.abort();
                }
                if let Some(rc) = cat.remote.get_mut(&dc) {
                    rc.health.remove(&name);
                    rc.watched.remove(&name.to_lowercase());
                }
            }
        }
    }
}

#[async_trait]
impl BackgroundService for Discovery {
    async fn start_with_ready_notifier(&self, shutdown: ShutdownWatch, ready: ServiceReadyNotifier) {
        self.run(shutdown, ready).instrument(tracing::info_span!("discovery")).await
    }
}

/// The clients for the alive members (carrying lb's ACL token), then any seed not among them.
fn agent_clients(
    members: &[AgentMember],
    seed_addrs: &[SocketAddr],
    seeds: &[Client],
    token: Option<String>,
    tls: Option<&api::Tls>,
) -> Vec<Client> {
    let mut out: Vec<Client> = Vec::new();
    for m in members.iter().filter(|m| m.status == 1) {
        let Some(addr) = agent_http_addr(m, seed_addrs, tls.is_some()) else {
            continue;
        };
        match Client::connect(&addr.to_string(), tls) {
            Ok(c) => out.push(c.with_token(token.clone())),
            Err(e) => warn!(member = %m.name, "skipping agent: {e}"),
        }
    }
    for s in seeds {
        if !out.iter().any(|c| c.addr() == s.addr()) {
            out.push(s.clone());
        }
    }
    out
}

/// Member polls per read of `/v1/catalog/datacenters`.
const DATACENTERS_EVERY: u32 = 10;

/// Polls the member list (and now and then the datacenters) from whichever agent answers,
/// reporting each change.
async fn poll_members(shared: Arc<Shared>, seeds: Vec<Client>, tx: mpsc::Sender<Input>) {
    let interval = shared.config.load().members_interval;
    let mut last: Option<Vec<AgentMember>> = None;
    let mut last_dcs: Option<Vec<String>> = None;
    // Member polls until the datacenters are read again; 0: at this poll.
    let mut dcs_due = 0u32;
    let mut current = 0usize;
    loop {
        let (_, clients) = shared.agents.rotated(0);
        let clients = if clients.is_empty() { seeds.clone() } else { clients };
        let mut got = None;
        let mut why = String::from("no agent to ask");
        let mut dcs = None;
        for i in 0..clients.len() {
            let c = &clients[(current + i) % clients.len()];
            match tokio::time::timeout(Duration::from_secs(5), c.agent_members()).await {
                Ok(Ok(m)) => {
                    current = (current + i) % clients.len();
                    got = Some(m);
                    // The WAN pool's datacenters, from the same agent; sent first, so the
                    // members' rebuild already has them. A client agent asks a server for
                    // them, and they seldom change: read every `DATACENTERS_EVERY` polls.
                    if dcs_due == 0 {
                        match tokio::time::timeout(Duration::from_secs(5), c.catalog_datacenters()).await {
                            Ok(Ok(mut d)) => {
                                d.sort();
                                dcs = Some(d);
                                dcs_due = DATACENTERS_EVERY;
                            }
                            Ok(Err(e)) => debug!(agent = c.addr(), "datacenters: {e}"),
                            Err(_) => debug!(agent = c.addr(), "datacenters: timed out"),
                        }
                    }
                    dcs_due = dcs_due.saturating_sub(1);
                    break;
                }
                Ok(Err(e)) => {
                    shared.metrics.discovery_errors.fetch_add(1, Ordering::Relaxed);
                    debug!(agent = c.addr(), "members: {e}");
                    why = e.to_string();
                }
                Err(_) => {
                    shared.metrics.discovery_errors.fetch_add(1, Ordering::Relaxed);
                    debug!(agent = c.addr(), "members: timed out");
                    why = format!("{}: timed out", c.addr());
                }
            }
        }
        if let Some(d) = dcs {
            if last_dcs.as_ref() != Some(&d) {
                last_dcs = Some(d.clone());
                if tx.send(Input::Datacenters(d)).await.is_err() {
                    return;
                }
            }
        }
        match got {
            Some(mut m) => {
                m.sort_by(|a, b| a.name.cmp(&b.name));
                if last.as_ref() != Some(&m) {
                    last = Some(m.clone());
                    if tx.send(Input::Members(m)).await.is_err() {
                        return;
                    }
                }
            }
            // The last failure says why (a refused TLS handshake, a 403, a connection refused).
            None => warn!("no agent answered /v1/agent/members; last error: {why}"),
        }
        tokio::time::sleep(interval).await;
    }
}

/// The least time between two fetches of one watch (see `watch`).
const LB_MIN_DELAY: Duration = Duration::from_millis(10);

/// One blocking-query loop. When the agent set changes, the watcher is handed the new list
/// (`Watcher::set_clients`): it keeps its agent and index if that agent is still listed, and can
/// fail over to agents that joined since it started. `failed` may report an error (the watcher
/// retries after it either way).
async fn watch<T>(
    shared: Arc<Shared>,
    target: Target,
    tx: mpsc::Sender<Input>,
    wrap: impl Fn(T) -> Input,
    failed: impl Fn(String) -> Option<Input>,
) where
    T: DeserializeOwned + PartialEq + Clone + Default,
{
    // Spread watchers over the agents instead of piling every blocking query on the first.
    let spread = target.path.bytes().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(usize::from(b)));
    let (mut gen, mut w) = loop {
        let (gen, clients) = shared.agents.rotated(spread);
        // Stale reads keep routing alive while the servers elect a leader. consul-template waits
        // at least 100 ms between two fetches of one watch; a failing check that came within
        // 100 ms of the previous change would then stay in rotation for up to 120 ms. 10 ms
        // still caps a busy watch at about 100 fetches a second.
        match Watcher::<T>::new(clients, target.clone(), shared.config.load().wait) {
            Ok(w) => break (gen, w.stale(true).min_delay(LB_MIN_DELAY)),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    loop {
        match w.next().await {
            Ok(v) => {
                if tx.send(wrap(v)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                shared.metrics.discovery_errors.fetch_add(1, Ordering::Relaxed);
                warn!(next_agent = w.agent(), "{}: {e}", target.path);
                if let Some(msg) = failed(e.to_string()) {
                    if tx.send(msg).await.is_err() {
                        return;
                    }
                }
            }
        }
        let now = shared.agents.generation.load(Ordering::Acquire);
        if now != gen {
            let (g, clients) = shared.agents.rotated(spread);
            if w.set_clients(clients).is_ok() {
                debug!(path = %target.path, agents = ?w.agents(), "agent list updated");
                gen = g;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, addr: &str, status: i32) -> AgentMember {
        AgentMember { name: name.into(), addr: addr.into(), status, ..Default::default() }
    }

    #[test]
    fn watchers_may_use_alive_members_then_the_seeds() {
        let seeds = vec![Client::new("127.0.0.11:8500").unwrap(), Client::new("127.0.0.99:8500").unwrap()];
        let seed_addrs: Vec<SocketAddr> = vec!["127.0.0.11:8500".parse().unwrap(), "127.0.0.99:8500".parse().unwrap()];
        let members = [member("a", "127.0.0.11", 1), member("b", "127.0.0.12", 1), member("c", "127.0.0.13", 4)];
        let got: Vec<String> =
            agent_clients(&members, &seed_addrs, &seeds, None, None).iter().map(|c| c.addr().to_string()).collect();
        assert_eq!(got, vec!["127.0.0.11:8500", "127.0.0.12:8500", "127.0.0.99:8500"]);
    }

    #[test]
    fn a_new_agent_set_bumps_the_generation_once() {
        let a = Agents::new(vec![Client::new("127.0.0.11:8500").unwrap()]);
        let (g0, _) = a.rotated(0);
        a.set(vec![Client::new("127.0.0.11:8500").unwrap()]);
        assert_eq!(a.rotated(0).0, g0, "same set, same generation");
        a.set(vec![Client::new("127.0.0.11:8500").unwrap(), Client::new("127.0.0.12:8500").unwrap()]);
        let (g1, clients) = a.rotated(1);
        assert_eq!(g1, g0 + 1);
        assert_eq!(clients[0].addr(), "127.0.0.12:8500", "rotated by the spread");
        a.set(Vec::new());
        assert_eq!(a.addrs().len(), 2, "an empty list never replaces known agents");
    }
}
