//! Registrator inside the agent (`-docker-socket`): watches the Docker engine's container events
//! and keeps one local service per published port of each running container, made by
//! Registrator's rules (`mapping`) from the labels and environment people already write.
//!
//! It registers and deregisters through the agent's own local-service API
//! (`Agent::register_service`), exactly as `/v1/agent/service/register` does, so anti-entropy,
//! checks and ACLs treat these services like any other; a check a container asks for is a
//! remote registration (a script check needs `enable_script_checks`). Knows nothing of Raft,
//! gossip or HTTP routing; `engine` is the only part that speaks to Docker.

pub mod engine;
pub mod mapping;

use crate::agent::Agent;
use engine::Engine;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// `-docker-socket` and the rules that go with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub socket: PathBuf,
    pub rules: mapping::Rules,
}

/// The registrator task: a struct run once with `run(self, shutdown)`.
pub struct Registrator {
    agent: Arc<Agent>,
    engine: Engine,
    rules: mapping::Rules,
    /// Container ID → the service IDs registered for it.
    owned: BTreeMap<String, Vec<String>>,
}

/// What the loop waits on.
enum Input {
    Shutdown,
    Stream(Result<(), engine::Error>),
}

impl Registrator {
    pub fn new(agent: Arc<Agent>, opts: Options) -> Registrator {
        Registrator { agent, engine: Engine::new(&opts.socket), rules: opts.rules, owned: BTreeMap::new() }
    }

    /// Follows the engine until shutdown; when the socket fails, retries with a growing pause
    /// (1 s to 30 s) and catches up from the list of running containers.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut pause = Duration::from_secs(1);
        loop {
            let mut connected = false;
            let input = tokio::select! {
                _ = shutdown.changed() => Input::Shutdown,
                r = self.follow(&mut connected) => Input::Stream(r),
            };
            match input {
                Input::Shutdown => return,
                Input::Stream(Ok(())) => tracing::info!("docker: the engine closed the event stream; reconnecting"),
                Input::Stream(Err(e)) => {
                    tracing::warn!(error = %e, retry_in = ?pause, "docker: watching the engine failed")
                }
            }
            if connected {
                pause = Duration::from_secs(1);
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_secs(30));
        }
    }

    /// Subscribes to events first, so nothing that happens while it lists is missed; then
    /// brings the services in line with the running containers, then follows the events.
    async fn follow(&mut self, connected: &mut bool) -> Result<(), engine::Error> {
        let mut events = self.engine.events().await?;
        *connected = true;
        self.sync().await?;
        while let Some(ev) = events.next().await? {
            match ev.action() {
                "start" => self.add(ev.container()).await?,
                "die" => self.remove(ev.container()).await,
                _ => {}
            }
        }
        Ok(())
    }

    /// Registers every running container and deregisters every other service made for a
    /// container: those this task registered, and those the agent restored from its data dir
    /// for containers that went away (or changed their labels) meanwhile, found by their
    /// `docker_container_id` meta.
    async fn sync(&mut self) -> Result<(), engine::Error> {
        let running: BTreeSet<String> = self.engine.running().await?.into_iter().collect();
        tracing::info!(containers = running.len(), "docker: syncing services with the running containers");
        for id in &running {
            self.add(id).await?;
        }
        let gone: Vec<String> = self.owned.keys().filter(|id| !running.contains(*id)).cloned().collect();
        for id in gone {
            self.remove(&id).await;
        }
        let stale: Vec<String> = {
            let local = self.agent.local.lock();
            let ours = |container: &String, id: &String| self.owned.get(container).is_some_and(|ids| ids.contains(id));
            local
                .services
                .iter()
                .filter(|(id, s)| s.service.meta.get(mapping::CONTAINER_META).is_some_and(|c| !ours(c, id)))
                .map(|(id, _)| id.clone())
                .collect()
        };
        for id in stale {
            self.deregister(&id).await;
        }
        Ok(())
    }

    /// Inspects a container and registers its services (replacing what it had before).
    async fn add(&mut self, container: &str) -> Result<(), engine::Error> {
        let Some(c) = self.engine.inspect(container).await? else {
            return Ok(());
        };
        if !c.state.running {
            self.remove(&c.id).await;
            return Ok(());
        }
        let node = self.agent.config.node_name.clone();
        let defs = mapping::services(&c, &node, self.agent.config.advertise_addr, &self.rules);
        let mut ids = Vec::new();
        for def in defs {
            let (svc, checks) = match crate::defs::service(&crate::defs::normalize(def), &node) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(container = %short(&c.id), error = %e, "docker: not a valid service");
                    continue;
                }
            };
            let id = svc.id.clone();
            match self.agent.register_service(svc, checks, true, "").await {
                Ok(()) => tracing::info!(container = %short(&c.id), service = %id, "docker: added"),
                Err(crate::agent::AgentError::Server(e)) => {
                    // It is in the local state; anti-entropy brings it to the catalog later.
                    tracing::warn!(service = %id, error = %e, "docker: added locally, catalog sync pending");
                }
                Err(e) => {
                    tracing::warn!(container = %short(&c.id), service = %id, error = %e, "docker: registration refused");
                    continue;
                }
            }
            ids.push(id);
        }
        let before = self.owned.insert(c.id.clone(), ids.clone()).unwrap_or_default();
        for old in before.iter().filter(|old| !ids.contains(old)) {
            self.deregister(old).await;
        }
        Ok(())
    }

    /// Deregisters the services of a container that stopped.
    async fn remove(&mut self, container: &str) {
        for id in self.owned.remove(container).unwrap_or_default() {
            self.deregister(&id).await;
            tracing::info!(container = %short(container), service = %id, "docker: removed");
        }
    }

    async fn deregister(&self, id: &str) {
        match self.agent.deregister_service(id).await {
            Ok(()) | Err(crate::agent::AgentError::NotFound(_)) => {}
            Err(e) => tracing::warn!(service = %id, error = %e, "docker: deregistration not synced yet"),
        }
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}
