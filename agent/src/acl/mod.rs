//! ACLs: who may read and write what. A layer of its own under the HTTP, DNS and RPC edges:
//! a token (from `X-Consul-Token`, `Authorization: Bearer`, `?token=`, or the agent's default)
//! resolves to an [`Identity`] whose [`Authorizer`] every endpoint asks for Consul's resource and
//! level before it reads or writes; lists are filtered.
//!
//! Tokens, policies and roles are Raft state (`model::Tables` in the store, written through
//! `AclCommand`s). A server resolves a token from its store and caches the result until the ACL
//! tables change; a client agent asks a server (`/rpc/acl/resolve`) and caches the answer for
//! `acl.token_ttl`, falling back on `acl.down_policy` when no server answers.
//!
//! Must not know HTTP types beyond the token header names, nor how handlers build answers.

pub mod authorizer;
pub mod commands;
pub mod endpoints;
pub mod leader;
pub mod model;
pub mod replication;
pub mod rules;

pub use authorizer::{Authorizer, DefaultPolicy};
use model::{Tables, Token};
pub use rules::{Access, Resource, Rule};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The text Consul answers for an unknown or expired token.
pub const NOT_FOUND: &str = "ACL not found";
pub const DISABLED: &str = "ACL support disabled";

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AclError {
    /// 401.
    #[error("ACL support disabled")]
    Disabled,
    /// 403: the secret matches no live token.
    #[error("ACL not found")]
    NotFound,
    /// 403.
    #[error("{0}")]
    Denied(String),
    /// A server could not be asked and the down policy says deny.
    #[error("{0}")]
    Unavailable(String),
}

/// The `acl` block of the configuration.
#[derive(Debug, Clone)]
pub struct AclConfig {
    pub enabled: bool,
    pub default_policy: DefaultPolicy,
    /// `extend-cache`/`async-cache` keep serving a cached identity; `allow`/`deny` are static.
    pub down_policy: DownPolicy,
    pub token_ttl: Duration,
    pub enable_key_list_policy: bool,
    pub enable_token_persistence: bool,
    /// A secondary datacenter's leader copies global tokens too, not only policies and roles.
    pub enable_token_replication: bool,
    pub tokens: AgentTokens,
}

impl Default for AclConfig {
    fn default() -> Self {
        AclConfig {
            enabled: false,
            default_policy: DefaultPolicy::Allow,
            down_policy: DownPolicy::ExtendCache,
            token_ttl: Duration::from_secs(30),
            enable_key_list_policy: false,
            enable_token_persistence: false,
            enable_token_replication: false,
            tokens: AgentTokens::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownPolicy {
    Allow,
    Deny,
    ExtendCache,
}

/// The agent's own tokens (`acl.tokens`), settable at run time through `/v1/agent/token/*`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AgentTokens {
    #[serde(default)]
    pub initial_management: String,
    #[serde(default)]
    pub default: String,
    #[serde(default)]
    pub agent: String,
    #[serde(default)]
    pub agent_recovery: String,
    #[serde(default)]
    pub replication: String,
    #[serde(default)]
    pub config_file_service_registration: String,
    #[serde(default)]
    pub dns: String,
}

/// Who a request is: its token's accessor and what it may do.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The secret it was resolved from (what the agent's syncs on its behalf carry).
    pub secret: String,
    pub accessor_id: String,
    pub anonymous: bool,
    pub authz: Arc<Authorizer>,
    /// ACLs are off: everything is allowed and nothing is filtered.
    pub unrestricted: bool,
}

impl Identity {
    fn unrestricted() -> Identity {
        Identity {
            secret: String::new(),
            accessor_id: String::new(),
            anonymous: true,
            authz: Arc::new(Authorizer::static_policy(DefaultPolicy::Allow)),
            unrestricted: true,
        }
    }

    pub fn allows(&self, resource: Resource, name: &str, need: Access) -> bool {
        self.unrestricted || self.authz.allows(resource, name, need)
    }

    /// `Ok` or Consul's permission-denied text naming the token, resource and name.
    pub fn require(&self, resource: Resource, name: &str, need: Access) -> Result<(), AclError> {
        if self.allows(resource, name, need) {
            return Ok(());
        }
        Err(self.denied(resource, name, need))
    }

    pub fn denied(&self, resource: Resource, name: &str, need: Access) -> AclError {
        let perm = format!("{}:{}", resource.as_str(), need.as_str());
        AclError::Denied(if self.anonymous {
            format!(
                "Permission denied: anonymous token lacks permission '{perm}' on {name:?}. The anonymous token is used implicitly when a request does not specify a token."
            )
        } else {
            format!(
                "Permission denied: token with AccessorID '{}' lacks permission '{perm}' on {name:?}",
                self.accessor_id
            )
        })
    }

    pub fn management(&self) -> bool {
        self.unrestricted || self.authz.management()
    }

    pub fn require_management(&self) -> Result<(), AclError> {
        if self.management() {
            Ok(())
        } else {
            Err(self.denied(Resource::Acl, "", Access::Write))
        }
    }

    pub fn key_write_prefix(&self, prefix: &str) -> bool {
        self.unrestricted || self.authz.key_write_prefix(prefix)
    }
}

/// What a server tells a client agent about a token (`/rpc/acl/resolve`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Resolved {
    pub accessor_id: String,
    pub anonymous: bool,
    pub rules: Vec<WireRule>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct WireRule {
    pub resource: String,
    pub name: String,
    pub prefix: bool,
    pub access: String,
}

/// Asks a server to resolve a secret (a client agent's way); `Ok(None)`: no such token.
pub type RemoteResolve = Box<
    dyn Fn(String) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Option<Resolved>, String>> + Send>>
        + Send
        + Sync,
>;

/// The ACL layer of one agent.
pub struct Acl {
    pub config: AclConfig,
    datacenter: String,
    tokens: parking_lot::RwLock<AgentTokens>,
    token_file: Option<std::path::PathBuf>,
    /// Server: secret → (ACL index it was built at, identity).
    built: parking_lot::Mutex<HashMap<String, (u64, Arc<Identity>)>>,
    /// Client: secret → (when fetched, identity or "not found").
    fetched: parking_lot::Mutex<HashMap<String, (Instant, Option<Arc<Identity>>)>>,
    remote: parking_lot::RwLock<Option<RemoteResolve>>,
    /// The identity of every request while ACLs are off.
    open: Arc<Identity>,
    /// A secondary datacenter's replication from the primary (`replication`).
    pub replication: parking_lot::Mutex<replication::Status>,
}

/// How many resolved tokens are kept before the cache starts over (a flood of random tokens
/// must not grow it without bound).
const CACHE_MAX: usize = 4096;

impl Acl {
    pub fn new(config: AclConfig, datacenter: &str, data_dir: Option<&std::path::Path>) -> Acl {
        let token_file = data_dir.filter(|_| config.enable_token_persistence).map(|d| d.join("acl-tokens.json"));
        let mut tokens = config.tokens.clone();
        if let Some(f) = &token_file {
            if let Ok(bytes) = std::fs::read(f) {
                match serde_json::from_slice::<AgentTokens>(&bytes) {
                    Ok(saved) => merge_tokens(&mut tokens, saved),
                    Err(e) => {
                        tracing::warn!(file = %f.display(), error = %e, "ignoring unreadable persisted agent tokens")
                    }
                }
            }
        }
        Acl {
            config,
            datacenter: datacenter.to_string(),
            tokens: parking_lot::RwLock::new(tokens),
            token_file,
            built: Default::default(),
            fetched: Default::default(),
            remote: Default::default(),
            open: Arc::new(Identity::unrestricted()),
            replication: Default::default(),
        }
    }

    /// The identity of requests when ACLs are off (cheap to hand out).
    pub fn open(&self) -> Arc<Identity> {
        self.open.clone()
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    pub fn set_remote(&self, remote: RemoteResolve) {
        *self.remote.write() = Some(remote);
    }

    pub fn agent_tokens(&self) -> AgentTokens {
        self.tokens.read().clone()
    }

    /// `PUT /v1/agent/token/<kind>`. Persisted with `enable_token_persistence`.
    pub fn set_agent_token(&self, kind: &str, value: &str) -> Result<(), String> {
        {
            let mut t = self.tokens.write();
            let slot = match kind {
                "default" | "acl_token" => &mut t.default,
                "agent" | "acl_agent_token" => &mut t.agent,
                "agent_recovery" | "agent_master" | "acl_agent_master_token" => &mut t.agent_recovery,
                "replication" | "acl_replication_token" => &mut t.replication,
                "config_file_service_registration" => &mut t.config_file_service_registration,
                "dns" => &mut t.dns,
                _ => return Err(format!("Token {kind:?} is unknown")),
            };
            *slot = value.to_string();
        }
        if let Some(f) = &self.token_file {
            let t = self.tokens.read().clone();
            let saved = AgentTokens { initial_management: String::new(), ..t };
            let bytes = serde_json::to_vec_pretty(&saved).map_err(|e| e.to_string())?;
            let tmp = f.with_extension("json.tmp");
            std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, f)).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// The token this agent uses for its own writes (catalog sync, checks): `agent`, else `default`.
    pub fn agent_token(&self) -> String {
        let t = self.tokens.read();
        if !t.agent.is_empty() {
            t.agent.clone()
        } else {
            t.default.clone()
        }
    }

    /// The token DNS answers with: `dns`, else `default`.
    pub fn dns_token(&self) -> String {
        let t = self.tokens.read();
        if !t.dns.is_empty() {
            t.dns.clone()
        } else {
            t.default.clone()
        }
    }

    /// The token a request stands for when it names none: the agent's `default`, else anonymous.
    pub fn effective_secret<'a>(&self, given: Option<&'a str>) -> std::borrow::Cow<'a, str> {
        match given.filter(|s| !s.is_empty()) {
            Some(s) => std::borrow::Cow::Borrowed(s),
            None => {
                let d = self.tokens.read().default.clone();
                std::borrow::Cow::Owned(if d.is_empty() { model::ANONYMOUS_SECRET.to_string() } else { d })
            }
        }
    }

    /// Resolves from this server's own state (`tables` is a read view of the store's).
    pub fn resolve_local(&self, secret: Option<&str>, tables: &Tables, now_ms: u64) -> Result<Arc<Identity>, AclError> {
        if !self.config.enabled {
            return Ok(self.open());
        }
        let secret = self.effective_secret(secret);
        if let Some(id) = self.recovery(&secret) {
            return Ok(id);
        }
        if let Some((at, id)) = self.built.lock().get(secret.as_ref()) {
            if *at == tables.index && !expired(tables, &secret, now_ms) {
                return Ok(id.clone());
            }
        }
        let resolved = resolve_in(tables, &secret, &self.datacenter, now_ms).ok_or(AclError::NotFound)?;
        let id = Arc::new(self.identity(&secret, &resolved));
        let mut built = self.built.lock();
        if built.len() >= CACHE_MAX {
            built.clear();
        }
        built.insert(secret.into_owned(), (tables.index, id.clone()));
        Ok(id)
    }

    /// Resolves through a server (a client agent), cached for `token_ttl`.
    pub async fn resolve_remote(&self, secret: Option<&str>) -> Result<Arc<Identity>, AclError> {
        if !self.config.enabled {
            return Ok(self.open());
        }
        let secret = self.effective_secret(secret).into_owned();
        if let Some(id) = self.recovery(&secret) {
            return Ok(id);
        }
        let cached = self.fetched.lock().get(&secret).cloned();
        if let Some((at, id)) = &cached {
            if at.elapsed() < self.config.token_ttl {
                return id.clone().ok_or(AclError::NotFound);
            }
        }
        let fut = {
            let remote = self.remote.read();
            let Some(f) = remote.as_ref() else {
                return Err(AclError::Unavailable("No known Consul servers".into()));
            };
            f(secret.clone())
        };
        match fut.await {
            Ok(answer) => {
                let id = answer.map(|r| Arc::new(self.identity(&secret, &r)));
                let mut fetched = self.fetched.lock();
                if fetched.len() >= CACHE_MAX {
                    fetched.clear();
                }
                fetched.insert(secret, (Instant::now(), id.clone()));
                id.ok_or(AclError::NotFound)
            }
            Err(e) => match self.config.down_policy {
                DownPolicy::ExtendCache if cached.is_some() => cached.and_then(|(_, id)| id).ok_or(AclError::NotFound),
                DownPolicy::Allow => Ok(Arc::new(Identity {
                    secret: secret.clone(),
                    accessor_id: String::new(),
                    anonymous: false,
                    authz: Arc::new(Authorizer::static_policy(DefaultPolicy::Allow)),
                    unrestricted: false,
                })),
                _ => Err(AclError::Unavailable(format!("ACL resolution failed: {e}"))),
            },
        }
    }

    /// `acl.tokens.agent_recovery` works on this agent even with no server to ask, for the
    /// agent's own endpoints (Consul's agent master token).
    fn recovery(&self, secret: &str) -> Option<Arc<Identity>> {
        let t = self.tokens.read();
        (!t.agent_recovery.is_empty() && t.agent_recovery == secret).then(|| {
            let rules =
                rules::parse("agent_prefix \"\" { policy = \"write\" }\nnode_prefix \"\" { policy = \"read\" }")
                    .unwrap_or_default();
            Arc::new(Identity {
                secret: secret.to_string(),
                accessor_id: "agent-recovery-token".into(),
                anonymous: false,
                authz: Arc::new(Authorizer::new(&rules, DefaultPolicy::Deny)),
                unrestricted: false,
            })
        })
    }

    fn identity(&self, secret: &str, r: &Resolved) -> Identity {
        let rules: Vec<Rule> = r.rules.iter().filter_map(WireRule::to_rule).collect();
        Identity {
            secret: secret.to_string(),
            accessor_id: r.accessor_id.clone(),
            anonymous: r.anonymous,
            authz: Arc::new(Authorizer::new(&rules, self.config.default_policy)),
            unrestricted: false,
        }
    }
}

fn merge_tokens(into: &mut AgentTokens, saved: AgentTokens) {
    for (slot, v) in [
        (&mut into.default, saved.default),
        (&mut into.agent, saved.agent),
        (&mut into.agent_recovery, saved.agent_recovery),
        (&mut into.replication, saved.replication),
        (&mut into.config_file_service_registration, saved.config_file_service_registration),
        (&mut into.dns, saved.dns),
    ] {
        if !v.is_empty() {
            *slot = v;
        }
    }
}

fn expired(tables: &Tables, secret: &str, now_ms: u64) -> bool {
    tables.token_by_secret(secret).is_some_and(|t| t.expires_ms != 0 && t.expires_ms <= now_ms)
}

impl WireRule {
    fn from_rule(r: &Rule) -> WireRule {
        WireRule {
            resource: r.resource.as_str().to_string(),
            name: r.name.clone(),
            prefix: r.prefix,
            access: r.access.as_str().to_string(),
        }
    }

    fn to_rule(&self) -> Option<Rule> {
        // Through the parser's own words, so a client and a server agree on every name.
        let text = if matches!(self.resource.as_str(), "acl" | "keyring" | "mesh" | "operator" | "peering") {
            format!("{} = {:?}", self.resource, self.access)
        } else {
            format!(
                "{}{} {:?} {{ policy = {:?} }}",
                self.resource,
                if self.prefix { "_prefix" } else { "" },
                self.name,
                self.access
            )
        };
        rules::parse(&text).ok()?.into_iter().next()
    }
}

/// Resolves `secret` against `tables`: the token's effective rules, or `None` if there is no
/// live token with that secret. Used by servers, for themselves and for client agents.
pub fn resolve_in(tables: &Tables, secret: &str, datacenter: &str, now_ms: u64) -> Option<Resolved> {
    let token = tables.token_by_secret(secret)?;
    if token.expires_ms != 0 && token.expires_ms <= now_ms {
        return None;
    }
    let mut rules = Vec::new();
    let add_policies = |links: &[model::Link], rules: &mut Vec<Rule>| {
        for l in links {
            if let Some(p) = tables.policies.get(&l.id) {
                if p.datacenters.is_empty() || p.datacenters.iter().any(|d| d == datacenter) {
                    rules.extend(rules::parse(&p.rules).unwrap_or_default());
                }
            }
        }
    };
    add_policies(&token.policies, &mut rules);
    for l in &token.roles {
        if let Some(r) = tables.roles.get(&l.id) {
            add_policies(&r.policies, &mut rules);
            identities(&r.service_identities, &r.node_identities, &r.templated_policies, datacenter, &mut rules);
        }
    }
    identities(&token.service_identities, &token.node_identities, &token.templated_policies, datacenter, &mut rules);
    Some(Resolved {
        accessor_id: token.accessor_id.clone(),
        anonymous: token.accessor_id == model::ANONYMOUS_ACCESSOR,
        rules: rules.iter().map(WireRule::from_rule).collect(),
    })
}

fn identities(
    services: &[model::ServiceIdentity],
    nodes: &[model::NodeIdentity],
    templated: &[model::TemplatedPolicy],
    datacenter: &str,
    rules: &mut Vec<Rule>,
) {
    for s in services {
        if s.datacenters.is_empty() || s.datacenters.iter().any(|d| d == datacenter) {
            rules.extend(rules::parse(&service_identity_rules(&s.service_name)).unwrap_or_default());
        }
    }
    for n in nodes {
        if n.datacenter == datacenter {
            rules.extend(rules::parse(&node_identity_rules(&n.node_name)).unwrap_or_default());
        }
    }
    for t in templated {
        if !t.datacenters.is_empty() && !t.datacenters.iter().any(|d| d == datacenter) {
            continue;
        }
        let name = t.template_variables.as_ref().map(|v| v.name.as_str()).unwrap_or_default();
        if let Some(text) = templated_rules(&t.template_name, name) {
            rules.extend(rules::parse(&text).unwrap_or_default());
        }
    }
}

/// The synthetic policy of a service identity.
pub fn service_identity_rules(service: &str) -> String {
    format!(
        "service {service:?} {{ policy = \"write\" }}\nservice \"{service}-sidecar-proxy\" {{ policy = \"write\" }}\n\
         service_prefix \"\" {{ policy = \"read\" }}\nnode_prefix \"\" {{ policy = \"read\" }}\n"
    )
}

/// The synthetic policy of a node identity.
pub fn node_identity_rules(node: &str) -> String {
    format!("node {node:?} {{ policy = \"write\" }}\nservice_prefix \"\" {{ policy = \"read\" }}\n")
}

/// The built-in templated policies: name, description, whether it takes a `Name` variable.
pub const TEMPLATED: &[(&str, &str, bool)] = &[
    ("builtin/service", "Gives the token or role permissions to register a service and discover services in the Consul catalog. It also gives the specified service's sidecar proxy the permission to discover and route traffic to other services.", true),
    ("builtin/node", "Gives the token or role permissions for a register an agent/node into the catalog. A node is typically a consul agent but can also be a physical server, cloud instance or a container.", true),
    ("builtin/dns", "Gives the token or role permissions for the Consul DNS to query services in the network.", false),
];

/// The rules of a templated policy, or `None` for an unknown template.
pub fn templated_rules(template: &str, name: &str) -> Option<String> {
    match template {
        "builtin/service" => Some(service_identity_rules(name)),
        "builtin/node" => Some(node_identity_rules(name)),
        "builtin/dns" => Some(
            "node_prefix \"\" { policy = \"read\" }\nservice_prefix \"\" { policy = \"read\" }\nquery_prefix \"\" { policy = \"read\" }\n"
                .into(),
        ),
        _ => None,
    }
}

/// A token's `Hash`: a digest of what can change, base64 as Consul's JSON shows it.
pub fn token_hash(t: &Token) -> String {
    use base64::Engine;
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(t.description.as_bytes());
    for l in t.policies.iter().chain(&t.roles) {
        h.update(l.id.as_bytes());
    }
    for s in &t.service_identities {
        h.update(s.service_name.as_bytes());
    }
    for n in &t.node_identities {
        h.update(n.node_name.as_bytes());
        h.update(n.datacenter.as_bytes());
    }
    for p in &t.templated_policies {
        h.update(p.template_name.as_bytes());
    }
    h.update([t.local as u8]);
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// A digest of bytes, base64 (policies' and roles' `Hash`).
pub fn hash_of(parts: &[&str]) -> String {
    use base64::Engine;
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// What the leader writes when it takes office with ACLs on: the built-in policies, the
/// anonymous token and the `initial_management` token, if missing.
pub fn builtins(config: &AclConfig, now: &str) -> model::AclCommand {
    let policy = |id: &str, name: &str, description: &str, rules: &str| model::Policy {
        id: id.into(),
        name: name.into(),
        description: description.into(),
        rules: rules.into(),
        hash: hash_of(&[name, rules]),
        ..Default::default()
    };
    let policies = vec![
        policy(
            model::GLOBAL_MANAGEMENT_ID,
            "global-management",
            "Builtin Policy that grants unlimited access",
            rules::GLOBAL_MANAGEMENT,
        ),
        policy(
            model::GLOBAL_READ_ONLY_ID,
            "builtin/global-read-only",
            "Builtin Policy that grants unlimited read-only access to all components",
            rules::GLOBAL_READ_ONLY,
        ),
    ];
    let mut anonymous = Token {
        accessor_id: model::ANONYMOUS_ACCESSOR.into(),
        secret_id: model::ANONYMOUS_SECRET.into(),
        description: "Anonymous Token".into(),
        create_time: now.into(),
        ..Default::default()
    };
    anonymous.hash = token_hash(&anonymous);
    let initial_management = (!config.tokens.initial_management.is_empty()).then(|| {
        let mut t = Token {
            accessor_id: uuid::Uuid::new_v4().to_string(),
            secret_id: config.tokens.initial_management.clone(),
            description: "Initial Management Token".into(),
            policies: vec![model::Link { id: model::GLOBAL_MANAGEMENT_ID.into(), name: "global-management".into() }],
            create_time: now.into(),
            ..Default::default()
        };
        t.hash = token_hash(&t);
        t
    });
    model::AclCommand::EnsureBuiltins { policies, anonymous, initial_management }
}

/// RFC 3339 (UTC, nanoseconds) of a time in milliseconds since the epoch, as Go prints it.
pub fn rfc3339(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem % 3600 / 60, rem % 60, ms % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables_with(token: Token, policies: Vec<model::Policy>) -> Tables {
        let mut t = Tables::default();
        t.secrets.insert(token.secret_id.clone(), token.accessor_id.clone());
        t.tokens.insert(token.accessor_id.clone(), token);
        for p in policies {
            t.policies.insert(p.id.clone(), p);
        }
        t.index = 7;
        t
    }

    #[test]
    fn a_token_resolves_through_policies_identities_and_expiry() {
        let p = model::Policy {
            id: "p1".into(),
            name: "app".into(),
            rules: "key_prefix \"app/\" { policy = \"read\" }".into(),
            ..Default::default()
        };
        let tok = Token {
            accessor_id: "a1".into(),
            secret_id: "s1".into(),
            policies: vec![model::Link { id: "p1".into(), name: String::new() }],
            service_identities: vec![model::ServiceIdentity { service_name: "web".into(), datacenters: vec![] }],
            expires_ms: 2_000,
            ..Default::default()
        };
        let tables = tables_with(tok, vec![p]);
        let acl = Acl::new(
            AclConfig { enabled: true, default_policy: DefaultPolicy::Deny, ..Default::default() },
            "dc1",
            None,
        );
        let id = acl.resolve_local(Some("s1"), &tables, 1_000).expect("resolves");
        assert!(id.allows(Resource::Key, "app/x", Access::Read) && !id.allows(Resource::Key, "other", Access::Read));
        assert!(
            id.allows(Resource::Service, "web", Access::Write) && !id.allows(Resource::Service, "db", Access::Write)
        );
        assert!(id.allows(Resource::Service, "db", Access::Read));
        assert_eq!(acl.resolve_local(Some("s1"), &tables, 3_000).unwrap_err(), AclError::NotFound, "expired");
        assert_eq!(acl.resolve_local(Some("nope"), &tables, 0).unwrap_err(), AclError::NotFound);
        let e = id.require(Resource::Key, "other", Access::Write).unwrap_err().to_string();
        assert_eq!(e, "Permission denied: token with AccessorID 'a1' lacks permission 'key:write' on \"other\"");
        let off = Acl::new(AclConfig::default(), "dc1", None);
        assert!(off.resolve_local(None, &tables, 0).expect("off").allows(Resource::Acl, "", Access::Write));
    }

    #[test]
    fn wire_rules_round_trip_and_time_prints_like_go() {
        let rules = rules::parse(rules::GLOBAL_MANAGEMENT).expect("rules");
        let back: Vec<Rule> = rules.iter().map(WireRule::from_rule).filter_map(|w| w.to_rule()).collect();
        assert_eq!(rules.len(), back.len());
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_764_700_000_123), "2025-12-02T18:26:40.123Z");
    }
}
