//! ACL replication across datacenters, as Consul's: `primary_datacenter` holds the global ACL
//! objects; the leader of every other datacenter copies the primary's policies and roles, and
//! its global tokens with `acl.enable_token_replication`, into its own Raft log
//! (`AclCommand::Replicate`), asking a primary server over the server port
//! (`/rpc/acl/replicate`) with the replication token. Local tokens stay in their datacenter.
//! ACL writes made in a secondary are forwarded to the primary (`forward::acl_primary`).

use super::model::{AclCommand, Policy, Role, Token};
use crate::agent::Agent;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// What the primary sends: its global objects and the ACL index they are at; `unchanged` (and
/// nothing else) when that index is the one the secondary already has.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Replica {
    pub index: u64,
    #[serde(default)]
    pub unchanged: bool,
    pub policies: Vec<Policy>,
    pub roles: Vec<Role>,
    pub tokens: Option<Vec<Token>>,
}

/// `/v1/acl/replication`.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub running: bool,
    pub replicated_index: u64,
    pub last_success_ms: u64,
    pub last_error_ms: u64,
    pub last_error: String,
}

/// Whether this agent's datacenter replicates from another.
pub fn secondary(agent: &Agent) -> Option<String> {
    let primary = &agent.config.primary_datacenter;
    (agent.acl.enabled() && !primary.is_empty() && !primary.eq_ignore_ascii_case(&agent.config.datacenter))
        .then(|| primary.to_ascii_lowercase())
}

/// The answer of `/v1/acl/replication` on this server.
pub fn status_json(agent: &Agent) -> Value {
    let s = agent.acl.replication.lock().clone();
    let time = |ms: u64| if ms == 0 { "0001-01-01T00:00:00Z".to_string() } else { super::rfc3339(ms) };
    let primary = secondary(agent);
    let kind = if agent.acl.config.enable_token_replication { "tokens" } else { "policies" };
    json!({
        "Enabled": primary.is_some(),
        "Running": primary.is_some() && s.running,
        "SourceDatacenter": primary.unwrap_or_default(),
        "ReplicationType": if secondary(agent).is_some() { kind } else { "" },
        "ReplicatedIndex": s.replicated_index,
        "ReplicatedRoleIndex": s.replicated_index,
        "ReplicatedTokenIndex": if kind == "tokens" { s.replicated_index } else { 0 },
        "LastSuccess": time(s.last_success_ms),
        "LastError": time(s.last_error_ms),
        "LastErrorMessage": s.last_error,
    })
}

/// The primary's side: its global objects for a replication token that may read ACLs (and
/// write them, for tokens, as Consul requires).
pub fn replica_for(agent: &Agent, token: Option<&str>, with_tokens: bool, since: u64) -> Result<Replica, String> {
    let st = agent.store.read();
    let id = agent.acl.resolve_local(token, &st.acl, crate::structs::now_ms()).map_err(|e| e.to_string())?;
    let need = if with_tokens { super::Access::Write } else { super::Access::Read };
    if !id.allows(super::Resource::Acl, "", need) {
        return Err("Permission denied: token lacks permission 'acl:write'".into());
    }
    let t = &st.acl;
    if since != 0 && since == t.index {
        return Ok(Replica { index: t.index, unchanged: true, policies: vec![], roles: vec![], tokens: None });
    }
    Ok(Replica {
        index: t.index,
        unchanged: false,
        policies: t.policies.values().cloned().collect(),
        roles: t.roles.values().cloned().collect(),
        tokens: with_tokens.then(|| t.tokens.values().filter(|k| !k.local).cloned().collect()),
    })
}

/// The datacenter an ACL request must be answered in: the primary for writes of global objects
/// made in a secondary (`None`: here). Local tokens (created with `"Local": true`, or existing
/// here as local) and logins stay in their datacenter.
pub fn route_to_primary(
    agent: &Agent,
    endpoint: &crate::http::routes::AclEndpoint,
    method: &http::Method,
    body: &[u8],
) -> Option<String> {
    use crate::http::routes::AclEndpoint::*;
    let primary = secondary(agent)?;
    if method == http::Method::GET {
        return None;
    }
    let local_here = |accessor: &str| agent.store.read().acl.tokens.get(accessor).is_some_and(|t| t.local);
    let local = match endpoint {
        Login | Logout | Replication | Authorize => true,
        TokenCreate => serde_json::from_slice::<Value>(body).ok().is_some_and(|v| v["Local"].as_bool() == Some(true)),
        TokenUpdate(a) | TokenDelete(a) | TokenClone(a) => local_here(a),
        _ => false,
    };
    (!local).then_some(primary)
}

/// How often a secondary's leader asks the primary (Consul's `acl_replication_rate`: once a second).
const INTERVAL: Duration = Duration::from_secs(1);

/// The secondary's loop: while this server leads, the primary's objects are copied whenever
/// they differ from ours.
pub async fn run(agent: Arc<Agent>) {
    let Some(server) = agent.server.clone() else { return };
    let Some(primary) = secondary(&agent) else { return };
    let mut shutdown = agent.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
        if !server.is_leader() {
            let mut s = agent.acl.replication.lock();
            (s.running, s.replicated_index) = (false, 0);
            continue;
        }
        let with_tokens = agent.acl.config.enable_token_replication;
        let token = agent.acl.agent_tokens().replication;
        // Since what this leader copied last (0 after a restart or a new leader: a full copy).
        let since = agent.acl.replication.lock().replicated_index;
        let got: Result<Result<Replica, String>, String> = crate::forward::call_datacenter(
            &agent,
            &primary,
            "/rpc/acl/replicate",
            &(with_tokens, since),
            Some(&token),
        )
        .await;
        let now = crate::structs::now_ms();
        match got.and_then(|r| r) {
            Ok(replica) => {
                let written = if !replica.unchanged && differs(&agent, &replica) {
                    let cmd = AclCommand::Replicate {
                        policies: replica.policies.clone(),
                        roles: replica.roles.clone(),
                        tokens: replica.tokens.clone(),
                    };
                    agent.write(crate::structs::Command::Acl(cmd)).await.map(|_| ()).map_err(|e| e.to_string())
                } else {
                    Ok(())
                };
                let mut s = agent.acl.replication.lock();
                s.running = true;
                match written {
                    Ok(()) => {
                        s.replicated_index = replica.index;
                        s.last_success_ms = now;
                    }
                    Err(e) => {
                        (s.last_error_ms, s.last_error) = (now, e);
                    }
                }
            }
            Err(e) => {
                tracing::debug!(primary = %primary, error = %e, "acl replication failed");
                let mut s = agent.acl.replication.lock();
                s.running = true;
                (s.last_error_ms, s.last_error) = (now, e);
            }
        }
    }
}

/// Whether the primary's objects differ from this datacenter's copy (indexes aside).
fn differs(agent: &Agent, r: &Replica) -> bool {
    let st = agent.store.read();
    let t = &st.acl;
    let same_policies = r.policies.len() == t.policies.len()
        && r.policies.iter().all(|p| {
            t.policies
                .get(&p.id)
                .is_some_and(|o| o.modify_index == p.modify_index && o.rules == p.rules && o.name == p.name)
        });
    let same_roles = r.roles.len() == t.roles.len()
        && r.roles.iter().all(|x| t.roles.get(&x.id).is_some_and(|o| o.modify_index == x.modify_index));
    let same_tokens = match &r.tokens {
        None => true,
        Some(tokens) => {
            let ours = t.tokens.values().filter(|k| !k.local).count();
            ours == tokens.len()
                && tokens.iter().all(|k| t.tokens.get(&k.accessor_id).is_some_and(|o| o.modify_index == k.modify_index))
        }
    };
    !(same_policies && same_roles && same_tokens)
}
