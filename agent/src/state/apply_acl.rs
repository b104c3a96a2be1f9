//! Applying ACL commands to the ACL tables. Deterministic, like the rest of `apply`: uniqueness
//! of secrets and names is decided here, where every server sees the same order of writes.

use super::{Changes, State, Table};
use crate::acl::model::{AclCommand, Tables};
use crate::structs::Response;

pub(super) fn apply(state: &mut State, index: u64, cmd: &AclCommand, ch: &mut Changes) -> Response {
    let t = &mut state.acl;
    let result = match cmd {
        AclCommand::TokenSet(token) => token_set(t, index, token.clone()),
        AclCommand::TokenDelete { accessor_id } => {
            if let Some(old) = t.tokens.remove(accessor_id) {
                t.secrets.remove(&old.secret_id);
            }
            Ok(())
        }
        AclCommand::PolicySet(p) => {
            if t.policies.values().any(|o| o.name == p.name && o.id != p.id) {
                Err(format!("Invalid Policy: A Policy with Name {:?} already exists", p.name))
            } else {
                let create_index = t.policies.get(&p.id).map(|o| o.create_index).unwrap_or(index);
                let mut p = p.clone();
                (p.create_index, p.modify_index) = (create_index, index);
                t.policies.insert(p.id.clone(), p);
                Ok(())
            }
        }
        AclCommand::PolicyDelete { id } => {
            t.policies.remove(id);
            Ok(())
        }
        AclCommand::RoleSet(r) => {
            if t.roles.values().any(|o| o.name == r.name && o.id != r.id) {
                Err(format!("Invalid Role: A Role with Name {:?} already exists", r.name))
            } else {
                let create_index = t.roles.get(&r.id).map(|o| o.create_index).unwrap_or(index);
                let mut r = r.clone();
                (r.create_index, r.modify_index) = (create_index, index);
                t.roles.insert(r.id.clone(), r);
                Ok(())
            }
        }
        AclCommand::RoleDelete { id } => {
            t.roles.remove(id);
            Ok(())
        }
        AclCommand::AuthMethodSet { name, method } => {
            let mut m = method.clone();
            let create_index =
                t.auth_methods.get(name).and_then(|o| o.get("CreateIndex")).and_then(|v| v.as_u64()).unwrap_or(index);
            if let Some(o) = m.as_object_mut() {
                o.insert("CreateIndex".into(), create_index.into());
                o.insert("ModifyIndex".into(), index.into());
            }
            t.auth_methods.insert(name.clone(), m);
            Ok(())
        }
        AclCommand::AuthMethodDelete { name } => {
            t.auth_methods.remove(name);
            t.binding_rules.retain(|_, r| r.get("AuthMethod").and_then(|m| m.as_str()) != Some(name.as_str()));
            Ok(())
        }
        AclCommand::BindingRuleSet { id, rule } => {
            let mut r = rule.clone();
            let create_index =
                t.binding_rules.get(id).and_then(|o| o.get("CreateIndex")).and_then(|v| v.as_u64()).unwrap_or(index);
            if let Some(o) = r.as_object_mut() {
                o.insert("CreateIndex".into(), create_index.into());
                o.insert("ModifyIndex".into(), index.into());
            }
            t.binding_rules.insert(id.clone(), r);
            Ok(())
        }
        AclCommand::BindingRuleDelete { id } => {
            t.binding_rules.remove(id);
            Ok(())
        }
        AclCommand::Bootstrap { token, reset_index } => {
            if t.bootstrap_index != 0 && *reset_index != Some(t.bootstrap_index) {
                Err(format!("Permission denied: ACL bootstrap no longer allowed (reset index: {})", t.bootstrap_index))
            } else {
                let r = token_set(t, index, token.clone());
                if r.is_ok() {
                    t.bootstrap_index = index;
                }
                r
            }
        }
        AclCommand::EnsureBuiltins { policies, anonymous, initial_management } => {
            for p in policies {
                if !t.policies.contains_key(&p.id) {
                    let p = crate::acl::model::Policy { create_index: index, modify_index: index, ..p.clone() };
                    t.policies.insert(p.id.clone(), p);
                }
            }
            if !t.tokens.contains_key(&anonymous.accessor_id) {
                let _ = token_set(t, index, anonymous.clone());
            }
            if let Some(m) = initial_management {
                if t.token_by_secret(&m.secret_id).is_none() {
                    let _ = token_set(t, index, m.clone());
                }
                if t.bootstrap_index == 0 {
                    t.bootstrap_index = index;
                }
            }
            Ok(())
        }
        AclCommand::Replicate { policies, roles, tokens } => {
            t.policies = policies.iter().map(|p| (p.id.clone(), p.clone())).collect();
            t.roles = roles.iter().map(|r| (r.id.clone(), r.clone())).collect();
            if let Some(tokens) = tokens {
                let global: Vec<String> =
                    t.tokens.values().filter(|k| !k.local).map(|k| k.accessor_id.clone()).collect();
                for a in global {
                    if let Some(old) = t.tokens.remove(&a) {
                        t.secrets.remove(&old.secret_id);
                    }
                }
                for k in tokens.iter().filter(|k| !k.local) {
                    // A local token holding the same secret keeps it.
                    if !t.secrets.contains_key(&k.secret_id) {
                        t.secrets.insert(k.secret_id.clone(), k.accessor_id.clone());
                        t.tokens.insert(k.accessor_id.clone(), k.clone());
                    }
                }
            }
            Ok(())
        }
    };
    match result {
        Ok(()) => {
            t.index = index;
            ch.table(Table::Acl);
            Response::Ok
        }
        Err(e) => Response::Error(e),
    }
}

fn token_set(t: &mut Tables, index: u64, mut token: crate::acl::model::Token) -> Result<(), String> {
    if let Some(holder) = t.secrets.get(&token.secret_id) {
        if holder != &token.accessor_id {
            return Err("Invalid Token: SecretID is already in use".into());
        }
    }
    if let Some(old) = t.tokens.get(&token.accessor_id) {
        if old.secret_id != token.secret_id {
            t.secrets.remove(&old.secret_id);
        }
        token.create_index = old.create_index;
    } else {
        token.create_index = index;
    }
    token.modify_index = index;
    t.secrets.insert(token.secret_id.clone(), token.accessor_id.clone());
    t.tokens.insert(token.accessor_id.clone(), token);
    Ok(())
}
