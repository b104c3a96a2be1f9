//! The leader's ACL duty: when it takes office with ACLs on, the built-in policies, the
//! anonymous token and the configured `initial_management` token exist (written once, through
//! Raft, as Consul's leader does in `initializeACLs`).

use crate::agent::Agent;
use std::sync::Arc;
use std::time::Duration;

/// Runs on every server; acts each time this server becomes leader (and retries until the
/// write succeeds).
pub async fn run(agent: Arc<Agent>) {
    let Some(server) = agent.server.clone() else { return };
    if !agent.acl.enabled() {
        return;
    }
    let mut shutdown = agent.shutdown.subscribe();
    let mut metrics = server.raft.metrics();
    loop {
        if server.is_leader() && missing(&agent) {
            let now = super::rfc3339(crate::structs::now_ms());
            let cmd = super::builtins(&agent.acl.config, &now);
            match agent.write(crate::structs::Command::Acl(cmd)).await {
                Ok(_) => tracing::info!("acl: built-in policies and tokens are in place"),
                Err(e) => tracing::warn!(error = %e, "acl: writing the built-in policies and tokens failed"),
            }
        }
        tokio::select! {
            r = metrics.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

fn missing(agent: &Agent) -> bool {
    let st = agent.store.read();
    let t = &st.acl;
    let initial = &agent.acl.config.tokens.initial_management;
    !t.policies.contains_key(super::model::GLOBAL_MANAGEMENT_ID)
        || !t.policies.contains_key(super::model::GLOBAL_READ_ONLY_ID)
        || !t.tokens.contains_key(super::model::ANONYMOUS_ACCESSOR)
        || (!initial.is_empty() && t.token_by_secret(initial).is_none())
}
