//! What a Raft write needs, whoever asks for it: the catalog, KV and session writes that reach a
//! server over `/rpc/apply` (a client agent's anti-entropy), an agent's own sync on a server,
//! and the HTTP writes whose names are in the body (catalog register, txn, sessions).

use super::{Access, AclError, Identity, Resource};
use crate::state::State;
use crate::structs::*;

/// `Ok` if `id` may make every write in `cmd`; the first refusal otherwise.
pub fn authorize(id: &Identity, cmd: &Command, state: &State) -> Result<(), AclError> {
    if id.unrestricted {
        return Ok(());
    }
    match cmd {
        Command::Register(r) => {
            if !r.skip_node_update || r.service.is_none() && r.checks.is_empty() {
                id.require(Resource::Node, &r.node.node, Access::Write)?;
            }
            if let Some(s) = &r.service {
                id.require(Resource::Service, &s.service, Access::Write)?;
            }
            for c in &r.checks {
                check_write(id, state, &r.node.node, &c.service_id, r.service.as_ref())?;
            }
            Ok(())
        }
        Command::Deregister(d) => match (&d.service_id, &d.check_id) {
            (Some(sid), _) => {
                let name = service_name(state, &d.node, sid).unwrap_or_default();
                id.require(Resource::Service, &name, Access::Write)
            }
            (None, Some(cid)) => {
                let sid = state.checks.get(&d.node).and_then(|m| m.get(cid)).map(|c| c.service_id.clone());
                check_write(id, state, &d.node, sid.as_deref().unwrap_or(""), None)
            }
            (None, None) => id.require(Resource::Node, &d.node, Access::Write),
        },
        Command::Kv(kv) => match kv.op {
            KvOp::DeleteTree if id.key_write_prefix(&kv.key) => Ok(()),
            KvOp::DeleteTree => Err(id.denied(Resource::Key, &kv.key, Access::Write)),
            _ => id.require(Resource::Key, &kv.key, Access::Write),
        },
        Command::SessionCreate(s) => id.require(Resource::Session, &s.node, Access::Write),
        Command::SessionDestroy { id: sid } => {
            let node = state.sessions.get(sid).map(|s| s.node.clone()).unwrap_or_default();
            id.require(Resource::Session, &node, Access::Write)
        }
        Command::Txn(ops) => ops.iter().try_for_each(|op| txn_op(id, op, state)),
        Command::Batch(reqs) => reqs.iter().try_for_each(|r| authorize(id, &r.command, state)),
        Command::AutopilotSet { .. } | Command::ConnectCaSet { .. } => {
            id.require(Resource::Operator, "", Access::Write)
        }
        Command::ConfigEntrySet { entry, .. } => {
            let kind = entry.get("Kind").and_then(|v| v.as_str()).unwrap_or_default();
            let name = entry.get("Name").and_then(|v| v.as_str()).unwrap_or_default();
            config_entry_write(id, kind, name)
        }
        Command::ConfigEntryDelete { kind, name, .. } => config_entry_write(id, kind, name),
        Command::QuerySet { query } => {
            id.require(Resource::Query, query.get("Name").and_then(|v| v.as_str()).unwrap_or_default(), Access::Write)
        }
        Command::QueryDelete { id: qid } => {
            let name = state
                .prepared_queries
                .get(qid)
                .and_then(|q| q.get("Name"))
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            id.require(Resource::Query, name, Access::Write)
        }
        Command::CoordinateBatch(updates) => {
            updates.iter().try_for_each(|(node, _)| id.require(Resource::Node, node, Access::Write))
        }
        Command::Restore(_) | Command::TombstoneReap { .. } | Command::Acl(_) => id.require_management(),
    }
}

/// A config entry of one service needs write on that service; mesh-wide ones need operator.
pub fn config_entry_write(id: &Identity, kind: &str, name: &str) -> Result<(), AclError> {
    if crate::config_entry::is_service_kind(kind) {
        id.require(Resource::Service, name, Access::Write)
    } else {
        id.require(Resource::Operator, "", Access::Write)
    }
}

fn service_name(state: &State, node: &str, service_id: &str) -> Option<String> {
    state.services.get(node).and_then(|m| m.get(service_id)).map(|s| s.service.clone())
}

/// A check on a service needs write on the service; a node check needs write on the node.
fn check_write(
    id: &Identity,
    state: &State,
    node: &str,
    service_id: &str,
    registering: Option<&Service>,
) -> Result<(), AclError> {
    if service_id.is_empty() {
        return id.require(Resource::Node, node, Access::Write);
    }
    let name = registering
        .filter(|s| s.id == service_id)
        .map(|s| s.service.clone())
        .or_else(|| service_name(state, node, service_id))
        .unwrap_or_default();
    id.require(Resource::Service, &name, Access::Write)
}

fn txn_op(id: &Identity, op: &TxnOp, state: &State) -> Result<(), AclError> {
    match op {
        TxnOp::Kv { verb, key, .. } => match verb.as_str() {
            "get" | "check-index" | "check-session" | "check-not-exists" => {
                id.require(Resource::Key, key, Access::Read)
            }
            "get-tree" => id.require(Resource::Key, key, Access::Read),
            "delete-tree" if id.key_write_prefix(key) => Ok(()),
            "delete-tree" => Err(id.denied(Resource::Key, key, Access::Write)),
            _ => id.require(Resource::Key, key, Access::Write),
        },
        TxnOp::Node { verb, node } => {
            let need = if verb == "get" { Access::Read } else { Access::Write };
            id.require(Resource::Node, &node.node, need)
        }
        TxnOp::Service { verb, node, service } => {
            let need = if verb == "get" { Access::Read } else { Access::Write };
            let name = if service.service.is_empty() {
                service_name(state, node, &service.id).unwrap_or_default()
            } else {
                service.service.clone()
            };
            id.require(Resource::Service, &name, need)
        }
        TxnOp::Check { verb, check } => {
            if verb == "get" {
                return id.require(Resource::Node, &check.node, Access::Read);
            }
            check_write(id, state, &check.node, &check.service_id, None)
        }
    }
}
