//! The agent: boots the pieces in order (data dir, Raft, HTTP), owns the local services and
//! checks, keeps the catalog in line with them (anti-entropy), and on the leader registers
//! members with `serfHealth` and expires session TTLs.

use crate::checks::{CheckResult, Runner};
use crate::config::Config;
use crate::local::{Local, LocalCheck, LocalService};
use crate::raft::{self, network, sled_store::Db, state_machine::StateMachine, Peer};
use crate::server::{self, Server};
use crate::state::Store;
use crate::structs::*;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Notify};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Storage(#[from] raft::sled_store::OpenError),
    #[error("raft: {0}")]
    Raft(String),
    #[error("binding {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("loading local state from the data dir: {0}")]
    Local(std::io::Error),
    #[error("invalid definition in config: {0}")]
    Definition(String),
    #[error("{0}")]
    Config(String),
}

/// Why an agent operation on local services or checks failed; the text is what clients see.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum AgentError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Server(#[from] server::Error),
    /// A script check (one with `Args`) that this agent may not run; Consul answers 500.
    #[error("{}", .0.refusal())]
    ScriptsDisabled(Source),
}

/// Where a service or check definition came from, which decides whether its script may run:
/// `enable_script_checks` allows every script check, `enable_local_script_checks` only those
/// from the operator's config files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    ConfigFile,
    Remote,
}

impl Source {
    fn refusal(self) -> &'static str {
        match self {
            Source::Remote => {
                "Scripts are disabled on this agent from remote calls; to enable, configure 'enable_script_checks' to true"
            }
            Source::ConfigFile => {
                "Scripts are disabled on this agent; to enable, configure 'enable_script_checks' or 'enable_local_script_checks' to true"
            }
        }
    }
}

/// User events this agent has seen (Consul keeps the last 256).
#[derive(Default)]
pub struct Events {
    pub list: VecDeque<api::UserEvent>,
    pub ltime: u64,
}

pub const EVENT_BUFFER: usize = 256;

pub struct Agent {
    pub config: Config,
    pub node_id: String,
    pub store: Arc<Store>,
    pub server: Option<Server>,
    pub local: Mutex<Local>,
    pub runner: Runner,
    pub events: Mutex<Events>,
    pub events_changed: watch::Sender<u64>,
    /// Bumped on every change to local services or checks (hash-based blocking waits on it).
    pub local_changed: watch::Sender<u64>,
    session_timers: Mutex<HashMap<String, Instant>>,
    session_wake: Notify,
    pub shutdown: watch::Sender<bool>,
    pub started: Instant,
    pub requests: AtomicU64,
    /// Serializes anti-entropy writes so two syncs of one entry never race.
    sync_lock: tokio::sync::Mutex<()>,
    /// The cluster's members as gossip reports them.
    pub members: crate::cluster::Members,
    /// The servers of every datacenter, as the WAN pool reports them (servers only).
    pub wan: crate::cluster::Members,
    /// Gossip, once started (`serf::start`).
    pub gossip: std::sync::OnceLock<Arc<crate::gossip::Gossip>>,
    /// A server's WAN pool (`serf::start_wan`); its members are in `wan`.
    pub gossip_wan: std::sync::OnceLock<Arc<crate::gossip::Gossip>>,
    /// HTTP/2 connections to servers for forwarded API requests.
    pub forwarder: crate::forward::ForwardClient,
    /// HTTP/1 connections to servers' `/rpc/*` (a client agent's writes and catalog reads).
    rpc: network::HttpClient,
    /// What this agent's server port expects of callers (and this agent shows others').
    pub peer_auth: crate::peer_auth::PeerAuth,
    /// The LAN pool's gossip keys (Serf's `local.keyring`), shared with gossip and `peer_auth`.
    pub keyring: crate::gossip::Keyring,
    /// Tokens and what they may do; the agent's own tokens.
    pub acl: Arc<crate::acl::Acl>,
    /// Certificates, when TLS is on; read again on reload.
    pub tls: Option<Arc<crate::tls::Tls>>,
    /// Tokens of services and checks just removed, for the sync that deregisters them.
    retired_tokens: Mutex<HashMap<String, String>>,
    /// Set once this node's catalog record is known to match (full syncs compare it again).
    node_synced: std::sync::atomic::AtomicBool,
}

/// The catalog's record of one node: what anti-entropy compares the local state with.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct NodeView {
    pub node: Option<Node>,
    pub services: Vec<Service>,
    pub checks: Vec<Check>,
}

impl NodeView {
    pub fn of(state: &crate::state::State, node: &str) -> NodeView {
        NodeView {
            node: state.nodes.get(node).cloned(),
            services: state.node_services(node).cloned().collect(),
            checks: state.node_checks(node).cloned().collect(),
        }
    }
}

/// Where the agent keeps files (`None` in `-dev`, which keeps everything in memory).
fn data_dir_of(cfg: &Config) -> Option<&std::path::Path> {
    if cfg.dev {
        None
    } else {
        cfg.data_dir.as_deref()
    }
}

fn ensure_node_id(cfg: &Config) -> String {
    if !cfg.node_id.is_empty() {
        return cfg.node_id.clone();
    }
    // Persisted so a restart keeps its identity (and its Raft ID).
    if let Some(dir) = &cfg.data_dir {
        let path = dir.join("node-id");
        if let Ok(id) = std::fs::read_to_string(&path) {
            if !id.trim().is_empty() {
                return id.trim().to_string();
            }
        }
        let id = uuid::Uuid::new_v4().to_string();
        let _ = std::fs::create_dir_all(dir);
        let _ = std::fs::write(&path, &id);
        return id;
    }
    uuid::Uuid::new_v4().to_string()
}

/// What TLS health checks present and trust: the agent's CA and certificate with
/// `enable_agent_tls_for_checks`, else nothing of the agent's (the system's roots).
fn check_identity(tls: &crate::tls::TlsConfig) -> Result<crate::tls::CheckIdentity, String> {
    if !tls.agent_tls_for_checks {
        return Ok(Default::default());
    }
    crate::tls::CheckIdentity::load(&tls.internal_rpc).map_err(|e| format!("tls: enable_agent_tls_for_checks: {e}"))
}

impl Agent {
    /// Boots the agent. Returns once Raft is running and the local state is loaded; HTTP and
    /// background loops are started by [`Agent::run`].
    pub async fn start(config: Config) -> Result<Arc<Agent>, StartError> {
        let node_id = ensure_node_id(&config);
        let keyring = crate::gossip::Keyring::load(
            config.encrypt.as_deref(),
            config.data_dir.as_ref().filter(|_| !config.dev).map(|d| d.join("serf").join("local.keyring")).as_deref(),
            config.encrypt_verify_incoming,
            config.encrypt_verify_outgoing,
        )
        .map_err(StartError::Config)?;
        let peer_auth = crate::peer_auth::PeerAuth::new(keyring.clone());
        let acl = Arc::new(crate::acl::Acl::new(config.acl.clone(), &config.datacenter, data_dir_of(&config)));
        let tls = if config.tls.any() {
            Some(Arc::new(
                crate::tls::Tls::load(config.tls.clone()).map_err(|e| StartError::Config(format!("tls: {e}")))?,
            ))
        } else {
            None
        };
        let rpc_tls = tls.as_ref().and_then(|t| t.rpc_client());
        let with_tls = |mut c: crate::peer_auth::PeerClient| {
            c.set_tls(rpc_tls.clone(), &config.tls.server_name);
            c
        };
        let agent_token: crate::peer_auth::TokenSource = {
            let acl = acl.clone();
            Arc::new(move || acl.agent_token())
        };
        let store = Arc::new(Store::new());
        let shutdown = watch::channel(false).0;
        let data_dir = if config.dev { None } else { config.data_dir.clone() };
        let mut server = None;
        if config.server {
            let db = Db::open(data_dir.as_deref())?;
            let sm = StateMachine::open(store.clone(), db.clone()).map_err(|e| StartError::Raft(e.to_string()))?;
            let raft_config = Arc::new(
                raft::config(config.raft_multiplier, config.dev)
                    .validate()
                    .map_err(|e| StartError::Raft(e.to_string()))?,
            );
            let http = with_tls(network::http_client(peer_auth.clone()).with_token(agent_token.clone()));
            let rid = raft::node_id_from(&node_id);
            let peer = Peer {
                addr: config.server_rpc_addr().to_string(),
                name: config.node_name.clone(),
                id: node_id.clone(),
            };
            let r = openraft::Raft::new(rid, raft_config, network::Network::new(http.clone()), db.log_store(), sm)
                .await
                .map_err(|e| StartError::Raft(e.to_string()))?;
            tokio::spawn(raft::snapshots(r.clone(), shutdown.subscribe()));
            let timing = raft::Timing::new(config.raft_multiplier, config.dev);
            server = Some(Server::new(r, store.clone(), rid, peer, http, timing, shutdown.subscribe()));
        }
        let local = Local::load(data_dir.as_deref()).map_err(StartError::Local)?;
        let (results_tx, results_rx) = mpsc::unbounded_channel();
        let runner = Runner::new(results_tx, config.check_output_max_size);
        runner.set_identity(check_identity(&config.tls).map_err(StartError::Config)?);
        let agent = Arc::new(Agent {
            node_id,
            store,
            server,
            local: Mutex::new(local),
            runner,
            events: Mutex::new(Events::default()),
            events_changed: watch::channel(0).0,
            local_changed: watch::channel(0).0,
            session_timers: Mutex::new(HashMap::new()),
            session_wake: Notify::new(),
            shutdown,
            started: Instant::now(),
            requests: AtomicU64::new(0),
            sync_lock: tokio::sync::Mutex::new(()),
            members: Default::default(),
            wan: Default::default(),
            gossip: Default::default(),
            gossip_wan: Default::default(),
            forwarder: with_tls(crate::forward::client(peer_auth.clone())),
            rpc: with_tls(network::http_client(peer_auth.clone()).with_token(agent_token)),
            tls,
            peer_auth,
            keyring,
            acl,
            retired_tokens: Default::default(),
            node_synced: Default::default(),
            config,
        });
        if agent.server.is_none() {
            // A client agent asks a server what a token may do.
            let weak = Arc::downgrade(&agent);
            agent.acl.set_remote(Box::new(move |secret| {
                let weak = weak.clone();
                Box::pin(async move {
                    let agent = weak.upgrade().ok_or_else(|| "agent stopped".to_string())?;
                    agent.client_rpc("/rpc/acl/resolve", &secret).await.map_err(|e| e.to_string())
                })
            }));
        }
        agent.drop_restored_scripts();
        agent.load_config_definitions(&agent.config.services.clone(), &agent.config.checks.clone())?;
        // Restart the checks of restored and configured entries, each as allowed by its source.
        let checks: Vec<(Check, bool)> =
            agent.local.lock().checks.values().map(|c| (c.check.clone(), c.from_config)).collect();
        for (c, from_config) in checks {
            agent.runner.start(&c.check_id, &c.definition, agent.scripts_allowed(from_config));
        }
        tokio::spawn(agent.clone().check_results(results_rx));
        Ok(agent)
    }

    fn scripts_allowed(&self, from_config: bool) -> bool {
        self.config.enable_script_checks || (from_config && self.config.enable_local_script_checks)
    }

    /// Refuses script checks (Consul's `IsScript`: any `Args`) that `source` may not run.
    fn permit_scripts<'a>(&self, source: Source, defs: impl IntoIterator<Item = &'a Check>) -> Result<(), AgentError> {
        let has_script = defs.into_iter().any(|c| !c.definition.args.is_empty());
        if has_script && !self.scripts_allowed(source == Source::ConfigFile) {
            return Err(AgentError::ScriptsDisabled(source));
        }
        Ok(())
    }

    /// Script checks registered over HTTP before a restart come back only if remote scripts are
    /// still allowed; otherwise they are purged, as Consul purges a check it cannot restore.
    fn drop_restored_scripts(&self) {
        let dropped: Vec<String> = {
            let mut local = self.local.lock();
            let ids: Vec<String> = local
                .checks
                .iter()
                .filter(|(_, c)| self.permit_scripts(Source::Remote, [&c.check]).is_err())
                .map(|(k, _)| k.clone())
                .collect();
            for id in &ids {
                local.checks.remove(id);
            }
            ids
        };
        for id in &dropped {
            tracing::warn!(check = %id, "{}; the restored script check is removed", Source::Remote.refusal());
        }
        if !dropped.is_empty() {
            self.persist_local();
        }
    }

    /// Bootstraps a new one-server cluster (`-dev`, `-bootstrap`, or `-bootstrap-expect=1`).
    pub async fn bootstrap_if_alone(&self) -> Result<(), StartError> {
        let Some(s) = &self.server else { return Ok(()) };
        if !(self.config.bootstrap || self.config.bootstrap_expect == 1) {
            return Ok(());
        }
        let initialized = s.raft.is_initialized().await.map_err(|e| StartError::Raft(e.to_string()))?;
        if !initialized {
            let mut members = BTreeMap::new();
            members.insert(s.node_id, s.peer.clone());
            s.raft.initialize(members).await.map_err(|e| StartError::Raft(e.to_string()))?;
        }
        Ok(())
    }

    /// This agent's catalog node.
    pub fn node(&self) -> Node {
        let addr = self.config.advertise_addr.to_string();
        let wan = self.config.advertise_addr_wan.to_string();
        let mut tagged = BTreeMap::new();
        for (k, a) in [("lan", &addr), ("lan_ipv4", &addr), ("wan", &wan), ("wan_ipv4", &wan)] {
            tagged.insert(k.to_string(), a.clone());
        }
        let mut meta = self.config.node_meta.clone();
        meta.insert("consul-network-segment".into(), String::new());
        Node {
            id: self.node_id.clone(),
            node: self.config.node_name.clone(),
            address: addr,
            datacenter: self.config.datacenter.clone(),
            tagged_addresses: tagged,
            meta,
            ..Default::default()
        }
    }

    /// A server for this client agent's next RPC.
    pub fn pick_server(&self) -> Option<std::net::SocketAddr> {
        self.members.servers(&self.config.datacenter, &self.config.node_name).into_iter().next()
    }

    /// A replicated write: through Raft on a server; a client agent sends it to a server (the
    /// next one when a server cannot be reached).
    pub async fn write(&self, command: Command) -> Result<Response, server::Error> {
        if let Some(s) = &self.server {
            return s.write(command).await;
        }
        let req = Request { now_ms: now_ms(), command };
        self.client_rpc("/rpc/apply", &req).await?
    }

    /// Anti-entropy's writes, made as this agent's token allows (Consul's "blocked by ACLs"):
    /// a server checks the token itself, a client's server checks it on `/rpc/apply`.
    async fn sync_write(&self, command: Command, token: String) -> Result<(), server::Error> {
        if self.server.is_some() && self.acl.enabled() {
            let st = self.store.read();
            let checked = self
                .acl
                .resolve_local(Some(&token), &st.acl, now_ms())
                .and_then(|id| crate::acl::commands::authorize(&id, &command, &st));
            if let Err(e) = checked {
                return Err(server::Error::Rpc(format!("catalog sync blocked by ACLs: {e}")));
            }
        }
        let answer = match &self.server {
            Some(s) => s.write(command).await?,
            None => {
                let req = Request { now_ms: now_ms(), command };
                let answer: Result<Response, server::Error> =
                    self.client_rpc_as("/rpc/apply", &req, Some(&token)).await?;
                answer?
            }
        };
        match answer {
            Response::Error(e) => Err(server::Error::Rpc(e)),
            _ => Ok(()),
        }
    }

    /// The token a service's catalog sync uses: the one it was registered with, else (from a
    /// config file) `config_file_service_registration`, else the agent's.
    fn service_token(&self, id: &str) -> String {
        let own = {
            let local = self.local.lock();
            match local.services.get(id) {
                Some(s) if !s.token.is_empty() => Some(s.token.clone()),
                Some(s) if s.from_config => {
                    Some(self.acl.agent_tokens().config_file_service_registration).filter(|t| !t.is_empty())
                }
                Some(_) => None,
                None => self.retired_tokens.lock().remove(&format!("service:{id}")).filter(|t| !t.is_empty()),
            }
        };
        own.unwrap_or_else(|| self.acl.agent_token())
    }

    /// A check's sync token: its own, else its service's, else the agent's.
    fn check_token(&self, id: &str) -> String {
        let (own, service) = {
            let local = self.local.lock();
            match local.checks.get(id) {
                Some(c) => (Some(c.token.clone()).filter(|t| !t.is_empty()), c.check.service_id.clone()),
                None => {
                    (self.retired_tokens.lock().remove(&format!("check:{id}")).filter(|t| !t.is_empty()), String::new())
                }
            }
        };
        match own {
            Some(t) => t,
            None if !service.is_empty() => self.service_token(&service),
            None => self.acl.agent_token(),
        }
    }

    /// The catalog's view of this node (a client agent asks a server; stale reads are fine).
    pub async fn node_view(&self) -> Result<NodeView, server::Error> {
        if self.server.is_some() {
            return Ok(NodeView::of(&self.store.read(), &self.config.node_name));
        }
        self.client_rpc("/rpc/node", &self.config.node_name).await
    }

    /// A client agent's RPC to a server (the next one when a server cannot be reached), made
    /// with the agent's own token.
    pub async fn client_rpc<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        req: &Req,
    ) -> Result<Resp, server::Error> {
        self.client_rpc_as(path, req, None).await
    }

    /// [`Agent::client_rpc`] with a given ACL token.
    pub async fn client_rpc_as<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        req: &Req,
        token: Option<&str>,
    ) -> Result<Resp, server::Error> {
        let servers = self.members.servers(&self.config.datacenter, &self.config.node_name);
        if servers.is_empty() {
            return Err(server::Error::NoServers);
        }
        let mut last = String::new();
        for addr in servers {
            match network::post_json_as(&self.rpc, &addr.to_string(), path, req, Duration::from_secs(10), token).await {
                Ok(v) => return Ok(v),
                // Only a request that was never sent moves to the next server.
                Err(network::PostError::Unreachable(e)) => {
                    tracing::warn!(server = %addr, error = %e, "server unreachable");
                    self.members.bench(addr);
                    last = e;
                }
                Err(e) => return Err(server::Error::Rpc(e.to_string())),
            }
        }
        Err(server::Error::Rpc(last))
    }

    fn persist_local(&self) {
        self.local_changed.send_modify(|v| *v += 1);
        let local = self.local.lock().clone();
        let dir = if self.config.dev { None } else { self.config.data_dir.clone() };
        if let Err(e) = local.persist(dir.as_deref()) {
            tracing::error!(error = %e, "persisting local services and checks failed");
        }
    }

    /// Replaces the entries from config files with `services` and `checks`. Nothing changes if
    /// any definition is invalid or holds a script this agent may not run from a file.
    fn load_config_definitions(
        &self,
        services: &[serde_json::Value],
        checks: &[serde_json::Value],
    ) -> Result<(), StartError> {
        let node = self.config.node_name.clone();
        let mut new_services = Vec::new();
        let mut new_checks = Vec::new();
        for v in services {
            let (svc, svc_checks) = crate::defs::service(&crate::defs::normalize(v.clone()), &node)
                .map_err(|e| StartError::Definition(e.to_string()))?;
            self.permit_scripts(Source::ConfigFile, &svc_checks)
                .map_err(|e| StartError::Definition(format!("service {:?}: {e}", svc.id)))?;
            new_checks.extend(svc_checks);
            new_services.push(svc);
        }
        for v in checks {
            let c = crate::defs::check(&crate::defs::normalize(v.clone()), &node, None)
                .map_err(|e| StartError::Definition(e.to_string()))?;
            self.permit_scripts(Source::ConfigFile, [&c])
                .map_err(|e| StartError::Definition(format!("check {:?}: {e}", c.check_id)))?;
            new_checks.push(c);
        }
        let mut local = self.local.lock();
        local.services.retain(|_, s| !s.from_config);
        local.checks.retain(|_, c| !c.from_config);
        for svc in new_services {
            local
                .services
                .insert(svc.id.clone(), LocalService { service: svc, from_config: true, token: String::new() });
        }
        for c in new_checks {
            local.checks.insert(c.check_id.clone(), LocalCheck { check: c, from_config: true, token: String::new() });
        }
        Ok(())
    }

    /// SIGHUP / `PUT /v1/agent/reload`: re-reads service and check definitions from the files,
    /// and the TLS certificates (new connections use them; open ones keep theirs).
    pub async fn reload(&self) -> Result<(), String> {
        if let Some(tls) = &self.tls {
            tls.reload().map_err(|e| format!("reloading TLS certificates: {e}"))?;
            // Every clone of a client shares its connector, so one reload reaches them all.
            self.forwarder.reload_tls(tls.rpc_client());
            self.rpc.reload_tls(tls.rpc_client());
            if let Some(s) = &self.server {
                s.http.reload_tls(tls.rpc_client());
            }
            tracing::info!("reloaded TLS certificates");
        }
        self.runner.set_identity(check_identity(&self.config.tls)?);
        let (services, checks) = self.config.reload_definitions().map_err(|e| e.to_string())?;
        let old: Vec<String> =
            self.local.lock().checks.iter().filter(|(_, c)| c.from_config).map(|(k, _)| k.clone()).collect();
        // A definition that fails leaves the running ones as they were.
        self.load_config_definitions(&services, &checks).map_err(|e| e.to_string())?;
        for id in old {
            self.runner.stop(&id);
        }
        let now: Vec<Check> =
            self.local.lock().checks.values().filter(|c| c.from_config).map(|c| c.check.clone()).collect();
        for c in now {
            self.runner.start(&c.check_id, &c.definition, self.scripts_allowed(true));
        }
        self.full_sync().await.map_err(|e| e.to_string())
    }

    // ---- local services and checks (the /v1/agent endpoints) ----

    pub async fn register_service(
        &self,
        svc: Service,
        checks: Vec<Check>,
        replace_existing_checks: bool,
        token: &str,
    ) -> Result<(), AgentError> {
        self.permit_scripts(Source::Remote, &checks)?;
        let id = svc.id.clone();
        let mut svc = svc;
        // Tags edited in the catalog survive when the service allows it.
        if svc.enable_tag_override {
            let view = self.node_view().await?;
            if let Some(existing) = view.services.iter().find(|s| s.id == id) {
                svc.tags = existing.tags.clone();
            }
        }
        let stale: Vec<String>;
        {
            let mut local = self.local.lock();
            local
                .services
                .insert(id.clone(), LocalService { service: svc, from_config: false, token: token.to_string() });
            let new_ids: Vec<&str> = checks.iter().map(|c| c.check_id.as_str()).collect();
            stale = if replace_existing_checks {
                local
                    .checks
                    .iter()
                    .filter(|(k, c)| c.check.service_id == id && !new_ids.contains(&k.as_str()))
                    .map(|(k, _)| k.clone())
                    .collect()
            } else {
                vec![]
            };
            for k in &stale {
                if let Some(old) = local.checks.remove(k) {
                    self.retired_tokens.lock().insert(format!("check:{k}"), old.token);
                }
            }
            for c in &checks {
                // Re-registering keeps the last known status of a check that already exists.
                let mut c = c.clone();
                if let Some(prev) = local.checks.get(&c.check_id) {
                    if prev.check.definition == c.definition && c.status == Some(Status::Critical) {
                        c.status = prev.check.status;
                        c.output = prev.check.output.clone();
                    }
                }
                local
                    .checks
                    .insert(c.check_id.clone(), LocalCheck { check: c, from_config: false, token: token.to_string() });
            }
        }
        for k in &stale {
            self.runner.stop(k);
        }
        for c in &checks {
            self.runner.start(&c.check_id, &c.definition, self.scripts_allowed(false));
        }
        self.persist_local();
        self.sync_service(&id).await?;
        for k in &stale {
            self.sync_check(k).await?;
        }
        Ok(())
    }

    pub async fn deregister_service(&self, id: &str) -> Result<(), AgentError> {
        let checks: Vec<String> = {
            let mut local = self.local.lock();
            let Some(old) = local.services.remove(id) else {
                return Err(AgentError::NotFound(format!(
                    "Unknown service ID {id:?}. Ensure that the service ID is passed, not the service name."
                )));
            };
            self.retired_tokens.lock().insert(format!("service:{id}"), old.token);
            let ids: Vec<String> =
                local.checks.iter().filter(|(_, c)| c.check.service_id == id).map(|(k, _)| k.clone()).collect();
            for k in &ids {
                local.checks.remove(k);
            }
            ids
        };
        for k in &checks {
            self.runner.stop(k);
        }
        self.persist_local();
        self.sync_service(id).await?;
        Ok(())
    }

    pub async fn register_check(&self, check: Check, token: &str) -> Result<(), AgentError> {
        if !check.service_id.is_empty() && !self.local.lock().services.contains_key(&check.service_id) {
            return Err(AgentError::NotFound(format!("ServiceID {:?} does not exist", check.service_id)));
        }
        self.permit_scripts(Source::Remote, [&check])?;
        let id = check.check_id.clone();
        let def = check.definition.clone();
        self.local.lock().checks.insert(id.clone(), LocalCheck { check, from_config: false, token: token.to_string() });
        self.runner.start(&id, &def, self.scripts_allowed(false));
        self.persist_local();
        self.sync_check(&id).await?;
        Ok(())
    }

    pub async fn deregister_check(&self, id: &str) -> Result<(), AgentError> {
        let Some(old) = self.local.lock().checks.remove(id) else {
            return Err(AgentError::NotFound(format!(
                "Unknown check ID {id:?}. Ensure that the check ID is passed, not the check name."
            )));
        };
        self.retired_tokens.lock().insert(format!("check:{id}"), old.token);
        self.runner.stop(id);
        self.persist_local();
        self.sync_check(id).await?;
        Ok(())
    }

    /// A TTL check's pass/warn/fail/update.
    pub async fn update_ttl_check(&self, id: &str, status: Status, output: &str) -> Result<(), AgentError> {
        {
            let mut local = self.local.lock();
            let Some(c) = local.checks.get(id) else {
                return Err(AgentError::NotFound(format!("CheckID {id:?} does not have associated TTL")));
            };
            if c.check.definition.ttl_ns == 0 {
                return Err(AgentError::BadRequest(format!("CheckID {id:?} does not have associated TTL")));
            }
            let output = truncate_output(output, self.config.check_output_max_size);
            local.update_check(id, status, &output);
        }
        self.runner.touch(id);
        self.persist_local();
        self.sync_check(id).await?;
        Ok(())
    }

    /// Node (`service = None`) or service maintenance mode, as Consul's special critical checks.
    pub async fn set_maintenance(&self, service: Option<&str>, enable: bool, reason: &str) -> Result<(), AgentError> {
        let (id, service_id) = match service {
            Some(s) => {
                if !self.local.lock().services.contains_key(s) {
                    return Err(AgentError::NotFound(format!("No service registered with ID {s:?}")));
                }
                (format!("{SERVICE_MAINT_PREFIX}{s}"), s.to_string())
            }
            None => (NODE_MAINT_CHECK_ID.to_string(), String::new()),
        };
        if enable {
            let name = if service.is_some() { "Service Maintenance Mode" } else { "Node Maintenance Mode" };
            let notes = if reason.is_empty() { DEFAULT_MAINT_REASON.to_string() } else { reason.to_string() };
            let check = Check {
                node: self.config.node_name.clone(),
                check_id: id.clone(),
                name: name.into(),
                status: Some(Status::Critical),
                notes,
                service_id,
                check_type: "maintenance".into(),
                ..Default::default()
            };
            self.local.lock().checks.insert(id.clone(), LocalCheck { check, from_config: false, token: String::new() });
        } else {
            self.local.lock().checks.remove(&id);
        }
        self.persist_local();
        self.sync_check(&id).await?;
        Ok(())
    }

    async fn check_results(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<CheckResult>) {
        while let Some(r) = rx.recv().await {
            let output = if self.config.discard_check_output { String::new() } else { r.output.clone() };
            let (changed, had_output) = {
                let mut local = self.local.lock();
                let had = local.checks.get(&r.check_id).is_some_and(|c| !c.check.output.is_empty());
                (local.update_check(&r.check_id, r.status, &output), had)
            };
            self.local_changed.send_modify(|v| *v += 1);
            // A status change syncs at once. An output-only change syncs at once only the first
            // time (so a new check shows why it fails); after that the periodic anti-entropy
            // sync carries it, which keeps chatty outputs from flooding Raft (Consul's
            // check_update_interval).
            let first_output = changed == Some(false) && !output.is_empty() && !had_output;
            if changed == Some(true) || first_output {
                if let Err(e) = self.sync_check(&r.check_id).await {
                    tracing::warn!(check = %r.check_id, error = %e, "syncing check status failed; anti-entropy will retry");
                }
            }
        }
    }

    // ---- anti-entropy ----

    /// Registers this node in the catalog if the catalog's record (`current`, or this server's
    /// store) differs. A client agent without a record at hand trusts its last sync.
    async fn sync_node(&self, current: Option<&NodeView>) -> Result<(), server::Error> {
        use std::sync::atomic::Ordering;
        let node = self.node();
        let current = match current {
            Some(v) => v.node.clone(),
            None if self.server.is_some() => self.store.read().nodes.get(&node.node).cloned(),
            None if self.node_synced.load(Ordering::Relaxed) => return Ok(()),
            None => self.node_view().await?.node,
        };
        if let Some(c) = current {
            if c.id == node.id
                && c.address == node.address
                && c.tagged_addresses == node.tagged_addresses
                && c.meta == node.meta
            {
                self.node_synced.store(true, Ordering::Relaxed);
                return Ok(());
            }
        }
        self.sync_write(Command::Register(RegisterRequest { node, ..Default::default() }), self.acl.agent_token())
            .await?;
        self.node_synced.store(true, Ordering::Relaxed);
        Ok(())
    }

    pub async fn sync_service(&self, id: &str) -> Result<(), server::Error> {
        let _guard = self.sync_lock.lock().await;
        self.sync_node(None).await?;
        let (svc, checks) = {
            let local = self.local.lock();
            (local.services.get(id).map(|s| s.service.clone()), local.service_checks(id))
        };
        let node = self.config.node_name.clone();
        let command = match svc {
            Some(svc) => Command::Register(RegisterRequest {
                node: self.node(),
                service: Some(svc),
                checks,
                skip_node_update: true,
            }),
            None => Command::Deregister(DeregisterRequest { node, service_id: Some(id.to_string()), check_id: None }),
        };
        self.sync_write(command, self.service_token(id)).await
    }

    pub async fn sync_check(&self, id: &str) -> Result<(), server::Error> {
        let _guard = self.sync_lock.lock().await;
        self.sync_node(None).await?;
        let check = self.local.lock().checks.get(id).map(|c| c.check.clone());
        let node = self.config.node_name.clone();
        let service_id = check.as_ref().map(|c| c.service_id.clone()).unwrap_or_default();
        let command = match check {
            Some(c) => Command::Register(RegisterRequest {
                node: self.node(),
                service: None,
                checks: vec![c],
                skip_node_update: true,
            }),
            None => Command::Deregister(DeregisterRequest { node, service_id: None, check_id: Some(id.to_string()) }),
        };
        match self.sync_write(command, self.check_token(id)).await {
            // The catalog lost this check's service (someone deregistered it through
            // `/v1/catalog/deregister`): register the service again with its checks, as the next
            // anti-entropy sync would, instead of failing a request the agent has already applied
            // locally (the fuzzer found it answering 500 to a check registration).
            Err(server::Error::Rpc(e)) if !service_id.is_empty() && e.starts_with("Missing service registration") => {
                let (svc, checks) = {
                    let local = self.local.lock();
                    (local.services.get(&service_id).map(|s| s.service.clone()), local.service_checks(&service_id))
                };
                let Some(svc) = svc else { return Err(server::Error::Rpc(e)) };
                let command = Command::Register(RegisterRequest {
                    node: self.node(),
                    service: Some(svc),
                    checks,
                    skip_node_update: true,
                });
                self.sync_write(command, self.service_token(&service_id)).await
            }
            other => other,
        }
    }

    /// Makes the catalog's view of this node match the local state: registers what is missing or
    /// different, removes what the agent no longer has.
    pub async fn full_sync(&self) -> Result<(), server::Error> {
        let view = self.node_view().await?;
        self.sync_node(Some(&view)).await?;
        let (services, checks) = {
            let l = self.local.lock();
            (
                l.services.keys().cloned().collect::<Vec<_>>(),
                l.checks.values().map(|c| c.check.clone()).collect::<Vec<_>>(),
            )
        };
        let catalog_services: Vec<String> = view.services.iter().map(|s| s.id.clone()).collect();
        let catalog_checks: Vec<String> = view.checks.iter().map(|c| c.check_id.clone()).collect();
        for id in &services {
            self.sync_service(id).await?;
        }
        for c in checks.iter().filter(|c| c.service_id.is_empty()) {
            self.sync_check(&c.check_id).await?;
        }
        for id in catalog_services {
            if !services.contains(&id) && !(id == "consul" && self.config.server) {
                self.sync_service(&id).await?;
            }
        }
        for id in catalog_checks {
            if id != SERF_CHECK_ID && !checks.iter().any(|c| c.check_id == id) {
                self.sync_check(&id).await?;
            }
        }
        Ok(())
    }

    // ---- leader duties ----

    pub fn reset_session_timer(&self, id: &str, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        // Consul invalidates a session only after twice its TTL without a renewal.
        self.session_timers.lock().insert(id.to_string(), Instant::now() + ttl * 2);
        self.session_wake.notify_one();
    }

    pub fn clear_session_timer(&self, id: &str) {
        self.session_timers.lock().remove(id);
    }

    async fn session_expiry_loop(self: Arc<Self>) {
        let mut shutdown = self.shutdown.subscribe();
        loop {
            let next = self.session_timers.lock().values().min().copied();
            let sleep = match next {
                Some(t) => tokio::time::sleep_until(t.into()),
                None => tokio::time::sleep(Duration::from_secs(3600)),
            };
            tokio::select! {
                _ = sleep => {}
                _ = self.session_wake.notified() => continue,
                _ = shutdown.changed() => return,
            }
            let now = Instant::now();
            let expired: Vec<String> = {
                let mut t = self.session_timers.lock();
                let ids: Vec<String> = t.iter().filter(|(_, d)| **d <= now).map(|(k, _)| k.clone()).collect();
                for id in &ids {
                    t.remove(id);
                }
                ids
            };
            for id in expired {
                if self.server.as_ref().is_some_and(|s| s.is_leader()) {
                    tracing::debug!(session = %id, "session TTL expired");
                    if let Err(e) = self.write(Command::SessionDestroy { id: id.clone() }).await {
                        tracing::warn!(session = %id, error = %e, "invalidating expired session failed");
                    }
                }
            }
        }
    }

    /// A new leader restarts every session's TTL timer (Consul's `initializeSessionTimers`).
    pub fn restart_session_timers(&self) {
        let sessions: Vec<(String, String)> =
            self.store.read().sessions.values().map(|s| (s.id.clone(), s.ttl.clone())).collect();
        for (id, ttl) in sessions {
            if let Ok(d) = api::duration::parse(&ttl) {
                self.reset_session_timer(&id, d);
            }
        }
    }

    /// Periodic full anti-entropy sync, with jitter so a cluster's agents do not sync at once.
    async fn anti_entropy_loop(self: Arc<Self>) {
        let mut shutdown = self.shutdown.subscribe();
        // The first sync happens as soon as the catalog accepts writes.
        let mut delay = Duration::from_millis(50);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => return,
            }
            delay = match self.full_sync().await {
                Ok(()) => {
                    let base = self.config.ae_interval;
                    base + Duration::from_millis(rand::random::<u64>() % (base.as_millis() as u64 / 4 + 1))
                }
                Err(e) => {
                    tracing::debug!(error = %e, "anti-entropy sync failed; retrying");
                    Duration::from_millis(500)
                }
            };
        }
    }

    /// Starts the background loops (leader duties, anti-entropy, session expiry, watch sweeping).
    pub fn spawn_loops(self: &Arc<Self>) {
        tokio::spawn(crate::leader::Duties { agent: self.clone() }.run(self.shutdown.subscribe()));
        tokio::spawn(self.clone().anti_entropy_loop());
        tokio::spawn(self.clone().session_expiry_loop());
        tokio::spawn(crate::leader::bootstrap_expect(self.clone()));
        tokio::spawn(crate::acl::leader::run(self.clone()));
        tokio::spawn(crate::acl::replication::run(self.clone()));
        tokio::spawn(crate::ca_leader::run(self.clone()));
        let me = self.clone();
        tokio::spawn(async move {
            let mut shutdown = me.shutdown.subscribe();
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(30)) => me.store.watches().sweep(),
                    _ = shutdown.changed() => return,
                }
            }
        });
    }

    // ---- events ----

    /// Adds a user event to the buffer, once per ID.
    pub fn record_event(&self, mut ev: api::UserEvent) -> api::UserEvent {
        let idx = {
            let mut events = self.events.lock();
            if let Some(seen) = events.list.iter().find(|e| e.id == ev.id) {
                return seen.clone();
            }
            events.ltime += 1;
            ev.ltime = events.ltime;
            events.list.push_back(ev.clone());
            while events.list.len() > EVENT_BUFFER {
                events.list.pop_front();
            }
            event_index(&ev.id)
        };
        self.events_changed.send_replace(idx);
        ev
    }

    /// A graceful leave (`consul leave`, or SIGTERM on a client): the others see this agent
    /// Left, not Failed, and the leader deregisters it; then the agent stops.
    pub async fn leave(&self) {
        if let Some(g) = self.gossip_wan.get() {
            g.leave(Duration::from_secs(5)).await;
        }
        if let Some(g) = self.gossip.get() {
            g.leave(Duration::from_secs(5)).await;
        }
        self.shutdown().await;
    }

    pub async fn shutdown(&self) {
        let _ = self.shutdown.send(true);
        if let Some(g) = self.gossip_wan.get() {
            g.shutdown().await;
        }
        if let Some(g) = self.gossip.get() {
            g.shutdown().await;
        }
        self.runner.stop_all();
        if let Some(s) = &self.server {
            let _ = s.raft.shutdown().await;
        }
    }
}

/// Consul derives an event list's index from the newest event's ID (gossip has no global order).
pub fn event_index(id: &str) -> u64 {
    let hex: String = id.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    if hex.len() < 32 {
        return 0;
    }
    let a = u64::from_str_radix(&hex[..16], 16).unwrap_or(0);
    let b = u64::from_str_radix(&hex[16..32], 16).unwrap_or(0);
    a ^ b
}

fn truncate_output(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{} ...", &s[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    async fn call(agent: &Arc<Agent>, method: &str, path: &str, body: &str) -> (u16, String) {
        let mut req = hyper::Request::new(Full::new(bytes::Bytes::from(body.to_string())));
        *req.method_mut() = method.parse().expect("method");
        *req.uri_mut() = path.parse().expect("path");
        req.headers_mut().insert("host", http::HeaderValue::from_static("127.0.0.1"));
        let resp = crate::http::handle(agent.clone(), req).await;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// Found by fuzzing the HTTP API: once a service of this agent had been deregistered
    /// through the catalog API, registering a check for it answered 500 ("Missing service
    /// registration") although the agent had recorded the check. Consul registers it, and its
    /// anti-entropy puts the service back; so does this agent now, at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_check_registers_after_its_service_left_the_catalog() {
        let flags = crate::config::AgentFlags { dev: true, node: Some("t1".into()), ..Default::default() };
        let agent = Agent::start(Config::from_flags(flags).expect("config")).await.expect("agent");
        agent.bootstrap_if_alone().await.expect("bootstrap");
        let deadline = Instant::now() + Duration::from_secs(20);
        while call(&agent, "PUT", "/v1/kv/ready", "1").await.0 != 200 {
            assert!(Instant::now() < deadline, "no leader");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let svc = r#"{"Name":"api","ID":"api-1","Port":9000}"#;
        assert_eq!(call(&agent, "PUT", "/v1/agent/service/register", svc).await.0, 200);
        let gone = r#"{"Node":"t1","ServiceID":"api-1"}"#;
        assert_eq!(call(&agent, "PUT", "/v1/catalog/deregister", gone).await.0, 200);
        // The fuzzer's input, byte for byte.
        let check = r#"{"ID": "mem", "Name": "Memory utilization", "Notes": "Ensure we don't oversubscribe memory", "TTL": "15s", "Status": "passing", "ServiceID": "api-1"}"#;
        assert_eq!(call(&agent, "PUT", "/v1/agent/check/register", check).await, (200, String::new()));
        let (status, body) = call(&agent, "GET", "/v1/health/service/api", "").await;
        assert_eq!(status, 200);
        assert!(body.contains("\"api-1\"") && body.contains("\"mem\""), "{body}");
        agent.shutdown().await;
    }
}
