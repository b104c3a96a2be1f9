//! Keeps the routing snapshot current. A pingora background service that runs:
//! - one blocking-query watcher on `/v1/catalog/services`,
//! - one blocking-query watcher on `/v1/health/service/<name>?passing` per service,
//! - a poll of `/v1/agent/members` (it has no blocking form) that also decides which agents the
//!   watchers may fail over to,
//!
//! all with lb's ACL token (`-consul-token`; proxied requests never carry it), and rebuilds the
//! `Snapshot` after each change, swapping it in atomically, so a health change
//! reaches routing as soon as the agent answers the blocking query. SIGHUP reloads the config
//! file and rebuilds the snapshot with its routing options. It talks to agents only
//! through the shared `api` crate.

use crate::routing::{agent_http_addr, Catalog, Snapshot};
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
    /// SIGHUP: read the config file again.
    Reload,
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
            )
            .instrument(tracing::info_span!("watch", path = "/v1/catalog/services")),
        ));

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
            for msg in batch {
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
                                let task = watch::<Vec<ServiceEntry>>(shared.clone(), target, tx.clone(), move |v| {
                                    Input::Health(owned.clone(), v)
                                })
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
            }
            version += 1;
            let snap = Snapshot::build(&cat, &shared.config.load(), &shared.stats, &shared.metrics, version);
            shared.snapshot.store(Arc::new(snap));
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
        for t in tasks.into_iter().chain(health_tasks.into_values()) {
            t.abort();
        }
        info!("discovery stopped");
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

/// Polls the member list from whichever agent answers, reporting each change.
async fn poll_members(shared: Arc<Shared>, seeds: Vec<Client>, tx: mpsc::Sender<Input>) {
    let interval = shared.config.load().members_interval;
    let mut last: Option<Vec<AgentMember>> = None;
    let mut current = 0usize;
    loop {
        let (_, clients) = shared.agents.rotated(0);
        let clients = if clients.is_empty() { seeds.clone() } else { clients };
        let mut got = None;
        let mut why = String::from("no agent to ask");
        for i in 0..clients.len() {
            let c = &clients[(current + i) % clients.len()];
            match tokio::time::timeout(Duration::from_secs(5), c.agent_members()).await {
                Ok(Ok(m)) => {
                    current = (current + i) % clients.len();
                    got = Some(m);
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
/// fail over to agents that joined since it started.
async fn watch<T>(shared: Arc<Shared>, target: Target, tx: mpsc::Sender<Input>, wrap: impl Fn(T) -> Input)
where
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
