//! `/v1/acl/*` and `/v1/internal/acl/authorize`: tokens, policies, roles, auth methods, binding
//! rules, templated policies, bootstrap, login and logout, with Consul's texts and status codes.
//! Writes are Raft commands (`AclCommand`); reads are blocking queries on the ACL tables.

use super::routes::AclEndpoint;
use super::{Ctx, HttpError, HttpResult, Reply};
use crate::acl::model::{self, AclCommand, Link, NodeIdentity, Policy, Role, ServiceIdentity, TemplatedPolicy, Token};
use crate::acl::{self, Access, Resource};
use crate::state::Table;
use crate::structs::{Command, Response};
use serde_json::{json, Value};

pub async fn handle(ctx: &Ctx, e: &AclEndpoint) -> HttpResult {
    use AclEndpoint::*;
    if !ctx.agent.acl.enabled() {
        return Err(HttpError::Unauthorized(acl::DISABLED.into()));
    }
    let read = || require(ctx, Access::Read);
    let write = || require(ctx, Access::Write);
    match e {
        Bootstrap => bootstrap(ctx).await,
        Login => login(ctx).await,
        Logout => logout(ctx).await,
        // Consul asks no permission for the replication status.
        Replication => Ok(Reply::json(&crate::acl::replication::status_json(&ctx.agent))),
        Policies => {
            read()?;
            ctx.read(|st, ws| {
                ws.table(Table::Acl);
                let list: Vec<Value> = st.acl.policies.values().map(policy_stub).collect();
                (st.acl.index, list)
            })
            .await
        }
        PolicyCreate => {
            write()?;
            policy_set(ctx, None).await
        }
        PolicyUpdate(id) => {
            write()?;
            policy_set(ctx, Some(id)).await
        }
        PolicyRead(id) => {
            read()?;
            uuid(id, "Policy")?;
            read_one(ctx, "policy", |t| t.policies.get(id.as_str()).map(|p| json!(p))).await
        }
        PolicyReadByName(name) => {
            read()?;
            read_one(ctx, "policy", |t| t.policy_by_name(name).map(|p| json!(p))).await
        }
        PolicyDelete(id) => {
            write()?;
            uuid(id, "Policy")?;
            if id == model::GLOBAL_MANAGEMENT_ID {
                return Err(HttpError::BadRequest(
                    "Delete operation not permitted on the builtin global-management policy".into(),
                ));
            }
            let exists = ctx.agent.store.read().acl.policies.contains_key(id.as_str());
            if exists {
                apply(ctx, AclCommand::PolicyDelete { id: id.clone() }).await?;
            }
            Ok(Reply::json(&true))
        }
        Roles => {
            read()?;
            let policy = ctx.query.get("policy").unwrap_or_default().to_string();
            ctx.read(move |st, ws| {
                ws.table(Table::Acl);
                let list: Vec<Value> = st
                    .acl
                    .roles
                    .values()
                    .filter(|r| policy.is_empty() || r.policies.iter().any(|l| l.id == policy))
                    .map(|r| json!(st.acl.role_view(r)))
                    .collect();
                (st.acl.index, list)
            })
            .await
        }
        RoleCreate => {
            write()?;
            role_set(ctx, None).await
        }
        RoleUpdate(id) => {
            write()?;
            role_set(ctx, Some(id)).await
        }
        RoleRead(id) => {
            read()?;
            uuid(id, "Role")?;
            read_one(ctx, "role", |t| t.roles.get(id.as_str()).map(|r| json!(t.role_view(r)))).await
        }
        RoleReadByName(name) => {
            read()?;
            read_one(ctx, "role", |t| t.role_by_name(name).map(|r| json!(t.role_view(r)))).await
        }
        RoleDelete(id) => {
            write()?;
            uuid(id, "Role")?;
            if !ctx.agent.store.read().acl.roles.contains_key(id.as_str()) {
                return Err(HttpError::NotFound("Cannot find role to delete".into()));
            }
            apply(ctx, AclCommand::RoleDelete { id: id.clone() }).await?;
            Ok(Reply::json(&true))
        }
        AuthMethods => {
            read()?;
            ctx.read(|st, ws| {
                ws.table(Table::Acl);
                (st.acl.index, st.acl.auth_methods.values().cloned().collect::<Vec<_>>())
            })
            .await
        }
        AuthMethodCreate => {
            write()?;
            auth_method_set(ctx, None).await
        }
        AuthMethodUpdate(name) => {
            write()?;
            auth_method_set(ctx, Some(name)).await
        }
        AuthMethodRead(name) => {
            read()?;
            read_one(ctx, "auth method", |t| t.auth_methods.get(name.as_str()).cloned()).await
        }
        AuthMethodDelete(name) => {
            write()?;
            if ctx.agent.store.read().acl.auth_methods.contains_key(name.as_str()) {
                apply(ctx, AclCommand::AuthMethodDelete { name: name.clone() }).await?;
            }
            Ok(Reply::json(&true))
        }
        BindingRules => {
            read()?;
            let method = ctx.query.get("authmethod").unwrap_or_default().to_string();
            ctx.read(move |st, ws| {
                ws.table(Table::Acl);
                let list: Vec<Value> = st
                    .acl
                    .binding_rules
                    .values()
                    .filter(|r| {
                        method.is_empty() || r.get("AuthMethod").and_then(Value::as_str) == Some(method.as_str())
                    })
                    .cloned()
                    .collect();
                (st.acl.index, list)
            })
            .await
        }
        BindingRuleCreate => {
            write()?;
            binding_rule_set(ctx, None).await
        }
        BindingRuleUpdate(id) => {
            write()?;
            binding_rule_set(ctx, Some(id)).await
        }
        BindingRuleRead(id) => {
            read()?;
            uuid(id, "Binding Rule")?;
            read_one(ctx, "binding rule", |t| t.binding_rules.get(id.as_str()).cloned()).await
        }
        BindingRuleDelete(id) => {
            write()?;
            uuid(id, "Binding Rule")?;
            if ctx.agent.store.read().acl.binding_rules.contains_key(id.as_str()) {
                apply(ctx, AclCommand::BindingRuleDelete { id: id.clone() }).await?;
            }
            Ok(Reply::json(&true))
        }
        Tokens => {
            read()?;
            tokens(ctx).await
        }
        TokenCreate => {
            write()?;
            token_set(ctx, None).await
        }
        TokenUpdate(id) => {
            write()?;
            token_set(ctx, Some(id)).await
        }
        TokenRead(id) => {
            read()?;
            uuid(id, "Token")?;
            let show = ctx.identity.allows(Resource::Acl, "", Access::Write);
            let found = ctx
                .agent
                .store
                .read()
                .acl
                .tokens
                .get(id.as_str())
                .map(|t| token_json(&ctx.agent.store.read().acl, t, show));
            match found {
                Some(t) => Ok(Reply::json(&t)),
                // Consul's older handler: a missing token is 403 "ACL not found" (clients raise).
                None => Err(HttpError::Forbidden(acl::NOT_FOUND.into())),
            }
        }
        TokenSelf => {
            let st = ctx.agent.store.read();
            match st.acl.tokens.get(&ctx.identity.accessor_id) {
                Some(t) => Ok(Reply::json(&token_json(&st.acl, t, true))),
                None => Err(HttpError::Forbidden(acl::NOT_FOUND.into())),
            }
        }
        TokenDelete(id) => {
            write()?;
            uuid(id, "Accessor ID")?;
            if id == model::ANONYMOUS_ACCESSOR {
                return Err(HttpError::BadRequest("Delete operation not permitted on the anonymous token".into()));
            }
            if *id == ctx.identity.accessor_id {
                return Err(HttpError::BadRequest(
                    "Deletion of the request's authorization token is not permitted".into(),
                ));
            }
            // Consul answers `true` for an accessor no token has (clients delete by secret too).
            if ctx.agent.store.read().acl.tokens.contains_key(id.as_str()) {
                apply(ctx, AclCommand::TokenDelete { accessor_id: id.clone() }).await?;
            }
            Ok(Reply::json(&true))
        }
        TokenClone(id) => {
            write()?;
            token_clone(ctx, id).await
        }
        TemplatedPolicies => {
            read()?;
            let map: serde_json::Map<String, Value> = acl::TEMPLATED
                .iter()
                .map(|(name, desc, vars)| (name.to_string(), templated_json(name, desc, *vars)))
                .collect();
            Ok(Reply::json(&map))
        }
        TemplatedPolicyRead(name) => {
            read()?;
            match acl::TEMPLATED.iter().find(|(n, _, _)| n == name) {
                Some((n, desc, vars)) => Ok(Reply::json(&templated_json(n, desc, *vars))),
                None => Err(HttpError::NotFound(format!("Requested templated policy does not exist: {name}"))),
            }
        }
        TemplatedPolicyPreview(name) => {
            read()?;
            let v = ctx.typed_body(super::shape::Go::Struct(
                "TemplatedPolicyVariables",
                &[("Name", super::shape::Go::String)],
            ))?;
            let var = crate::defs::s(&v, "Name");
            let rules = acl::templated_rules(name, &var)
                .ok_or_else(|| HttpError::BadRequest(format!("templated policy {name:?} does not exist")))?;
            let digest = acl::hash_of(&[name, &var]);
            let hex: String = digest.bytes().take(16).map(|b| format!("{b:02x}")).collect();
            Ok(Reply::json(&json!({
                "ID": format!("00000000-0000-0000-0000-{}", &hex[..12]),
                "Name": format!("synthetic-policy-{hex}"),
                "Description": format!("synthetic policy generated from templated policy: {name}"),
                "Rules": rules,
                "Datacenters": [],
                "Hash": digest,
            })))
        }
        Authorize => authorize(ctx),
    }
}

fn require(ctx: &Ctx, need: Access) -> Result<(), HttpError> {
    ctx.identity.require(Resource::Acl, "", need).map_err(HttpError::from)
}

fn uuid(id: &str, what: &str) -> Result<(), HttpError> {
    if is_uuid(id) {
        Ok(())
    } else {
        Err(HttpError::BadRequest(format!("{what} ID is missing or an invalid UUID: {id:?}")))
    }
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter()
            .enumerate()
            .all(|(i, c)| if matches!(i, 8 | 13 | 18 | 23) { *c == b'-' } else { c.is_ascii_hexdigit() })
}

fn now() -> (u64, String) {
    let ms = crate::structs::now_ms();
    (ms, acl::rfc3339(ms))
}

async fn apply(ctx: &Ctx, cmd: AclCommand) -> Result<(), HttpError> {
    match ctx.agent.write(Command::Acl(cmd)).await? {
        Response::Error(e) if e.contains("Permission denied") => Err(HttpError::Forbidden(e)),
        Response::Error(e) => Err(HttpError::BadRequest(e)),
        _ => Ok(()),
    }
}

/// One object or 404 `Requested <what> does not exist`.
async fn read_one(ctx: &Ctx, what: &str, get: impl Fn(&model::Tables) -> Option<Value>) -> HttpResult {
    let (headers, value, _) = ctx
        .read_value(|st, ws| {
            ws.table(Table::Acl);
            (st.acl.index, get(&st.acl))
        })
        .await?;
    match value {
        Some(v) => Ok(Reply::json(&v).with_headers(headers)),
        None => Err(HttpError::NotFound(format!("Requested {what} does not exist: ACL not found"))),
    }
}

fn policy_stub(p: &Policy) -> Value {
    json!({"ID": p.id, "Name": p.name, "Description": p.description, "Datacenters": p.datacenters,
           "Hash": p.hash, "CreateIndex": p.create_index, "ModifyIndex": p.modify_index})
}

/// A token as Consul serves it: links named, the secret hidden from read-only tokens, internal
/// fields and empty optional ones left out.
fn token_json(t: &model::Tables, token: &Token, show_secret: bool) -> Value {
    let mut v = json!(t.token_view(token));
    if let Some(m) = v.as_object_mut() {
        m.remove("ExpiresMs");
        for k in ["ExpirationTime", "AuthMethod"] {
            if m.get(k).and_then(Value::as_str) == Some("") {
                m.remove(k);
            }
        }
        for k in ["Policies", "Roles", "ServiceIdentities", "NodeIdentities", "TemplatedPolicies"] {
            if m.get(k).and_then(Value::as_array).is_some_and(Vec::is_empty) {
                m.remove(k);
            }
        }
        if !show_secret {
            m.insert("SecretID".into(), "<hidden>".into());
        }
    }
    v
}

async fn tokens(ctx: &Ctx) -> HttpResult {
    let q = |k: &str| ctx.query.get(k).unwrap_or_default().to_string();
    let (policy, role, method, service) = (q("policy"), q("role"), q("authmethod"), q("servicename"));
    let show = ctx.identity.allows(Resource::Acl, "", Access::Write);
    ctx.read(move |st, ws| {
        ws.table(Table::Acl);
        let t = &st.acl;
        let list: Vec<Value> = t
            .tokens
            .values()
            .filter(|k| policy.is_empty() || k.policies.iter().any(|l| l.id == policy))
            .filter(|k| role.is_empty() || k.roles.iter().any(|l| l.id == role))
            .filter(|k| method.is_empty() || k.auth_method == method)
            .filter(|k| service.is_empty() || k.service_identities.iter().any(|s| s.service_name == service))
            .map(|k| token_json(t, k, show))
            .collect();
        (t.index, list)
    })
    .await
}

const TOKEN: super::shape::Go = super::shape::Go::Struct(
    "ACLToken",
    &[
        ("AccessorID", super::shape::Go::String),
        ("SecretID", super::shape::Go::String),
        ("Description", super::shape::Go::String),
        ("Policies", super::shape::Go::Any),
        ("Roles", super::shape::Go::Any),
        ("ServiceIdentities", super::shape::Go::Any),
        ("NodeIdentities", super::shape::Go::Any),
        ("TemplatedPolicies", super::shape::Go::Any),
        ("Local", super::shape::Go::Bool),
        ("ExpirationTime", super::shape::Go::String),
        ("ExpirationTTL", super::shape::Go::Duration),
    ],
);

fn field<T: serde::de::DeserializeOwned + Default>(v: &Value, key: &str) -> Result<T, HttpError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(T::default()),
        Some(x) => serde_json::from_value(x.clone())
            .map_err(|e| HttpError::BadRequest(format!("Request decode failed: {key}: {e}"))),
    }
}

/// Links given by ID or by name, resolved to IDs (names are refilled on every read).
fn resolve_links(
    t: &model::Tables,
    links: Vec<Link>,
    what: &str,
    by_id: impl Fn(&str) -> Option<String>,
    by_name: impl Fn(&str) -> Option<String>,
) -> Result<Vec<Link>, HttpError> {
    let mut out: Vec<Link> = Vec::new();
    let _ = t;
    for l in links {
        let id = if !l.id.is_empty() { by_id(&l.id) } else { by_name(&l.name) };
        let Some(id) = id else {
            let shown = if l.id.is_empty() { &l.name } else { &l.id };
            return Err(HttpError::BadRequest(format!("{what} with ID or name {shown:?} does not exist")));
        };
        if !out.iter().any(|o| o.id == id) {
            out.push(Link { id, name: String::new() });
        }
    }
    Ok(out)
}

fn identities_from(v: &Value) -> Result<(Vec<ServiceIdentity>, Vec<NodeIdentity>, Vec<TemplatedPolicy>), HttpError> {
    let services: Vec<ServiceIdentity> = field(v, "ServiceIdentities")?;
    for s in &services {
        if s.service_name.is_empty() {
            return Err(HttpError::BadRequest(
                "Service identity is missing the service name field on this token".into(),
            ));
        }
    }
    let nodes: Vec<NodeIdentity> = field(v, "NodeIdentities")?;
    for n in &nodes {
        if n.node_name.is_empty() || n.datacenter.is_empty() {
            return Err(HttpError::BadRequest(
                "Node identity is missing the node name or datacenter field on this token".into(),
            ));
        }
    }
    let templated: Vec<TemplatedPolicy> = field(v, "TemplatedPolicies")?;
    for t in &templated {
        let Some((_, _, needs_name)) = acl::TEMPLATED.iter().find(|(n, _, _)| *n == t.template_name) else {
            return Err(HttpError::BadRequest(format!("templated policy {:?} does not exist", t.template_name)));
        };
        if *needs_name && t.template_variables.as_ref().is_none_or(|v| v.name.is_empty()) {
            return Err(HttpError::BadRequest(format!(
                "templated policy {:?} requires a name variable",
                t.template_name
            )));
        }
    }
    Ok((services, nodes, templated))
}

async fn token_set(ctx: &Ctx, path_id: Option<&String>) -> HttpResult {
    let v = ctx.typed_body(TOKEN)?;
    let v = if v.is_null() { json!({}) } else { v };
    let (now_ms, now) = now();
    let given_accessor = crate::defs::s(&v, "AccessorID");
    let existing = {
        let st = ctx.agent.store.read();
        let accessor = path_id.cloned().unwrap_or_else(|| given_accessor.clone());
        match path_id {
            Some(id) => {
                uuid(id, "Token")?;
                if !given_accessor.is_empty() && &given_accessor != id {
                    return Err(HttpError::BadRequest("Token Accessor ID in URL and payload do not match".into()));
                }
                Some(
                    st.acl
                        .tokens
                        .get(id.as_str())
                        .cloned()
                        .ok_or_else(|| HttpError::Forbidden(acl::NOT_FOUND.into()))?,
                )
            }
            None => {
                if !accessor.is_empty() {
                    uuid(&accessor, "Token AccessorID")?;
                    if st.acl.tokens.contains_key(&accessor) {
                        return Err(HttpError::BadRequest("Invalid Token: AccessorID is already in use".into()));
                    }
                    if accessor.starts_with(model::RESERVED_PREFIX) {
                        return Err(HttpError::BadRequest(
                            "Invalid Token: UUIDs with the prefix \"00000000-0000-0000-0000-0000000000\" are reserved"
                                .into(),
                        ));
                    }
                }
                None
            }
        }
    };
    let secret = crate::defs::s(&v, "SecretID");
    let (services, nodes, templated) = identities_from(&v)?;
    let local = crate::defs::b(&v, "Local");
    if local && services.iter().any(|s| !s.datacenters.is_empty()) {
        return Err(HttpError::BadRequest(
            "Service identity cannot specify a list of datacenters on a local token".into(),
        ));
    }
    let (policies, roles) = {
        let st = ctx.agent.store.read();
        let t = &st.acl;
        let policies = resolve_links(
            t,
            field(&v, "Policies")?,
            "Policy",
            |id| t.policies.get(id).map(|p| p.id.clone()),
            |n| t.policy_by_name(n).map(|p| p.id.clone()),
        )?;
        let roles = resolve_links(
            t,
            field(&v, "Roles")?,
            "Role",
            |id| t.roles.get(id).map(|r| r.id.clone()),
            |n| t.role_by_name(n).map(|r| r.id.clone()),
        )?;
        (policies, roles)
    };
    let token = match existing {
        Some(old) => {
            if !secret.is_empty() && secret != old.secret_id {
                return Err(HttpError::BadRequest("Changing a token's SecretID is not permitted".into()));
            }
            if v.get("Local").is_some() && local != old.local {
                return Err(HttpError::BadRequest(
                    "Cannot toggle local mode of".to_string() + &format!(" {}", old.accessor_id),
                ));
            }
            Token {
                description: crate::defs::s(&v, "Description"),
                policies,
                roles,
                service_identities: services,
                node_identities: nodes,
                templated_policies: templated,
                ..old
            }
        }
        None => {
            let (expiration_time, expires_ms) = expiration(&v, now_ms)?;
            let secret = if secret.is_empty() {
                uuid::Uuid::new_v4().to_string()
            } else {
                uuid(&secret, "Token SecretID")?;
                secret
            };
            Token {
                accessor_id: if given_accessor.is_empty() { uuid::Uuid::new_v4().to_string() } else { given_accessor },
                secret_id: secret,
                description: crate::defs::s(&v, "Description"),
                policies,
                roles,
                service_identities: services,
                node_identities: nodes,
                templated_policies: templated,
                local,
                expiration_time,
                expires_ms,
                create_time: now,
                ..Default::default()
            }
        }
    };
    let token = Token { hash: acl::token_hash(&token), ..token };
    apply(ctx, AclCommand::TokenSet(token.clone())).await?;
    let st = ctx.agent.store.read();
    let stored = st.acl.tokens.get(&token.accessor_id).unwrap_or(&token);
    Ok(Reply::json(&token_json(&st.acl, stored, true)))
}

/// `ExpirationTime` (RFC 3339) or `ExpirationTTL`, within Consul's 1 minute to 24 hours.
fn expiration(v: &Value, now_ms: u64) -> Result<(String, u64), HttpError> {
    let ttl = match v.get("ExpirationTTL") {
        None | Some(Value::Null) => None,
        Some(x) => Some(
            api::duration::serde_go::from_value(x)
                .map_err(|_| HttpError::BadRequest(format!("Invalid ExpirationTTL: {x}")))?,
        ),
    };
    if let (Some(_), Some(t)) = (ttl, v.get("ExpirationTime").and_then(Value::as_str).filter(|t| !t.is_empty())) {
        return Err(HttpError::BadRequest(format!(
            "Token Expiration TTL and Expiration Time cannot both be set ({t})"
        )));
    }
    let Some(ttl) = ttl.filter(|d| !d.is_zero()) else {
        return Ok((String::new(), 0));
    };
    let (min, max) = (std::time::Duration::from_secs(60), std::time::Duration::from_secs(24 * 3600));
    if ttl < min || ttl > max {
        return Err(HttpError::BadRequest(format!(
            "Token Expiration TTL '{}' should be between {} and {}",
            api::duration::format(ttl),
            api::duration::format(min),
            api::duration::format(max)
        )));
    }
    let at = now_ms + ttl.as_millis() as u64;
    Ok((acl::rfc3339(at), at))
}

async fn token_clone(ctx: &Ctx, id: &str) -> HttpResult {
    uuid(id, "Token")?;
    let v = ctx.typed_body(TOKEN)?;
    let original = ctx
        .agent
        .store
        .read()
        .acl
        .tokens
        .get(id)
        .cloned()
        .ok_or_else(|| HttpError::Forbidden(acl::NOT_FOUND.into()))?;
    if !original.auth_method.is_empty() {
        return Err(HttpError::BadRequest("Cannot clone a token created from an auth method".into()));
    }
    let description = match crate::defs::s(&v, "Description") {
        d if d.is_empty() => original.description.clone(),
        d => d,
    };
    let (_, now) = now();
    let token = Token {
        accessor_id: uuid::Uuid::new_v4().to_string(),
        secret_id: uuid::Uuid::new_v4().to_string(),
        description,
        create_time: now,
        ..original
    };
    let token = Token { hash: acl::token_hash(&token), ..token };
    apply(ctx, AclCommand::TokenSet(token.clone())).await?;
    let st = ctx.agent.store.read();
    let stored = st.acl.tokens.get(&token.accessor_id).unwrap_or(&token);
    Ok(Reply::json(&token_json(&st.acl, stored, true)))
}

const POLICY: super::shape::Go = super::shape::Go::Struct(
    "ACLPolicy",
    &[
        ("ID", super::shape::Go::String),
        ("Name", super::shape::Go::String),
        ("Description", super::shape::Go::String),
        ("Rules", super::shape::Go::String),
        ("Datacenters", super::shape::Go::List(&super::shape::Go::String)),
    ],
);

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'/')
}

async fn policy_set(ctx: &Ctx, path_id: Option<&String>) -> HttpResult {
    let v = ctx.typed_body(POLICY)?;
    let name = crate::defs::s(&v, "Name");
    if name.is_empty() {
        return Err(HttpError::BadRequest("Invalid Policy: no Name is set".into()));
    }
    if !valid_name(&name) {
        return Err(HttpError::BadRequest(
            "Invalid Policy: invalid Name. Only alphanumeric characters, '-', '_' and '/' are allowed".into(),
        ));
    }
    let rules = crate::defs::s(&v, "Rules");
    acl::rules::parse(&rules).map_err(HttpError::BadRequest)?;
    let id = match path_id {
        Some(id) => {
            uuid(id, "Policy")?;
            let st = ctx.agent.store.read();
            let old = st
                .acl
                .policies
                .get(id.as_str())
                .ok_or_else(|| HttpError::NotFound(format!("Cannot find policy {id}")))?;
            if old.id == model::GLOBAL_MANAGEMENT_ID && old.rules != rules {
                return Err(HttpError::BadRequest(
                    "Changing the Rules for the builtin global-management policy is not permitted".into(),
                ));
            }
            id.clone()
        }
        None => uuid::Uuid::new_v4().to_string(),
    };
    let p = Policy {
        hash: acl::hash_of(&[&name, &rules, &crate::defs::s(&v, "Description")]),
        id,
        name,
        description: crate::defs::s(&v, "Description"),
        rules,
        datacenters: crate::defs::strings(&v, "Datacenters"),
        ..Default::default()
    };
    apply(ctx, AclCommand::PolicySet(p.clone())).await?;
    let st = ctx.agent.store.read();
    Ok(Reply::json(st.acl.policies.get(&p.id).unwrap_or(&p)))
}

async fn role_set(ctx: &Ctx, path_id: Option<&String>) -> HttpResult {
    let v = ctx.typed_body(super::shape::Go::Struct(
        "ACLRole",
        &[
            ("ID", super::shape::Go::String),
            ("Name", super::shape::Go::String),
            ("Description", super::shape::Go::String),
        ],
    ))?;
    let name = crate::defs::s(&v, "Name");
    if name.is_empty() {
        return Err(HttpError::BadRequest("Invalid Role: no Name is set".into()));
    }
    if !valid_name(&name) {
        return Err(HttpError::BadRequest(
            "Invalid Role: invalid Name. Only alphanumeric characters, '-' and '_' are allowed".into(),
        ));
    }
    let (services, nodes, templated) = identities_from(&v)?;
    let policies = {
        let st = ctx.agent.store.read();
        let t = &st.acl;
        resolve_links(
            t,
            field(&v, "Policies")?,
            "Policy",
            |id| t.policies.get(id).map(|p| p.id.clone()),
            |n| t.policy_by_name(n).map(|p| p.id.clone()),
        )?
    };
    let id = match path_id {
        Some(id) => {
            uuid(id, "Role")?;
            if !ctx.agent.store.read().acl.roles.contains_key(id.as_str()) {
                return Err(HttpError::NotFound(format!("Cannot find role {id}")));
            }
            id.clone()
        }
        None => uuid::Uuid::new_v4().to_string(),
    };
    let r = Role {
        hash: acl::hash_of(&[&name, &crate::defs::s(&v, "Description")]),
        id,
        name,
        description: crate::defs::s(&v, "Description"),
        policies,
        service_identities: services,
        node_identities: nodes,
        templated_policies: templated,
        ..Default::default()
    };
    apply(ctx, AclCommand::RoleSet(r.clone())).await?;
    let st = ctx.agent.store.read();
    Ok(Reply::json(&st.acl.role_view(st.acl.roles.get(&r.id).unwrap_or(&r))))
}

async fn auth_method_set(ctx: &Ctx, path_name: Option<&String>) -> HttpResult {
    let v = ctx.typed_body(super::shape::Go::Struct(
        "ACLAuthMethod",
        &[
            ("Name", super::shape::Go::String),
            ("Type", super::shape::Go::String),
            ("DisplayName", super::shape::Go::String),
            ("Description", super::shape::Go::String),
            ("MaxTokenTTL", super::shape::Go::Duration),
            ("TokenLocality", super::shape::Go::String),
            ("Config", super::shape::Go::Map(&super::shape::Go::Any)),
        ],
    ))?;
    let name = path_name.cloned().unwrap_or_else(|| crate::defs::s(&v, "Name"));
    if name.is_empty() {
        return Err(HttpError::BadRequest("Invalid Auth Method: no Name is set".into()));
    }
    let kind = crate::defs::s(&v, "Type");
    if !matches!(kind.as_str(), "jwt" | "kubernetes" | "oidc" | "aws-iam") {
        return Err(HttpError::BadRequest(format!(
            "Invalid Auth Method: Type should be one of: [jwt kubernetes oidc aws-iam], got {kind:?}"
        )));
    }
    if path_name.is_some() && !ctx.agent.store.read().acl.auth_methods.contains_key(&name) {
        return Err(HttpError::NotFound(format!("Cannot find auth method {name}")));
    }
    let method = json!({
        "Name": name, "Type": kind, "DisplayName": crate::defs::s(&v, "DisplayName"),
        "Description": crate::defs::s(&v, "Description"),
        "MaxTokenTTL": v.get("MaxTokenTTL").cloned().unwrap_or(json!("0s")),
        "TokenLocality": crate::defs::s(&v, "TokenLocality"),
        "Config": v.get("Config").cloned().unwrap_or(json!({})),
    });
    apply(ctx, AclCommand::AuthMethodSet { name: name.clone(), method }).await?;
    let st = ctx.agent.store.read();
    Ok(Reply::json(&st.acl.auth_methods.get(&name).cloned().unwrap_or(Value::Null)))
}

async fn binding_rule_set(ctx: &Ctx, path_id: Option<&String>) -> HttpResult {
    let v = ctx.typed_body(super::shape::Go::Struct(
        "ACLBindingRule",
        &[
            ("ID", super::shape::Go::String),
            ("Description", super::shape::Go::String),
            ("AuthMethod", super::shape::Go::String),
            ("Selector", super::shape::Go::String),
            ("BindType", super::shape::Go::String),
            ("BindName", super::shape::Go::String),
        ],
    ))?;
    let method = crate::defs::s(&v, "AuthMethod");
    if !ctx.agent.store.read().acl.auth_methods.contains_key(&method) {
        return Err(HttpError::BadRequest(format!("Invalid Binding Rule: unknown auth method {method:?}")));
    }
    let bind_type = crate::defs::s(&v, "BindType");
    if !matches!(bind_type.as_str(), "service" | "node" | "role" | "templated-policy" | "policy") {
        return Err(HttpError::BadRequest(format!("Invalid Binding Rule: unknown BindType {bind_type:?}")));
    }
    if crate::defs::s(&v, "BindName").is_empty() {
        return Err(HttpError::BadRequest("Invalid Binding Rule: no BindName is set".into()));
    }
    let id = match path_id {
        Some(id) => {
            uuid(id, "Binding Rule")?;
            if !ctx.agent.store.read().acl.binding_rules.contains_key(id.as_str()) {
                return Err(HttpError::NotFound(format!("Cannot find binding rule {id}")));
            }
            id.clone()
        }
        None => uuid::Uuid::new_v4().to_string(),
    };
    let rule = json!({
        "ID": id, "Description": crate::defs::s(&v, "Description"), "AuthMethod": method,
        "Selector": crate::defs::s(&v, "Selector"), "BindType": bind_type, "BindName": crate::defs::s(&v, "BindName"),
    });
    apply(ctx, AclCommand::BindingRuleSet { id: id.clone(), rule }).await?;
    let st = ctx.agent.store.read();
    Ok(Reply::json(&st.acl.binding_rules.get(&id).cloned().unwrap_or(Value::Null)))
}

fn templated_json(name: &str, description: &str, needs_name: bool) -> Value {
    let schema = if needs_name {
        json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]})
    } else {
        json!({})
    };
    json!({
        "TemplateName": name,
        "Schema": schema.to_string(),
        "Template": acl::templated_rules(name, "{{.Name}}").unwrap_or_default(),
        "Description": description,
    })
}

/// `PUT /v1/acl/bootstrap`: once, or again after the operator wrote the reset index into
/// `<data_dir>/acl-bootstrap-reset`.
async fn bootstrap(ctx: &Ctx) -> HttpResult {
    let v =
        ctx.typed_body(super::shape::Go::Struct("BootstrapRequest", &[("BootstrapSecret", super::shape::Go::String)]))?;
    let reset_file =
        ctx.agent.config.data_dir.as_ref().filter(|_| !ctx.agent.config.dev).map(|d| d.join("acl-bootstrap-reset"));
    let reset_index =
        reset_file.as_ref().and_then(|f| std::fs::read_to_string(f).ok()).and_then(|s| s.trim().parse::<u64>().ok());
    let secret = match crate::defs::s(&v, "BootstrapSecret") {
        s if s.is_empty() => uuid::Uuid::new_v4().to_string(),
        s => {
            uuid(&s, "BootstrapSecret")?;
            s
        }
    };
    let (_, now) = now();
    let token = Token {
        accessor_id: uuid::Uuid::new_v4().to_string(),
        secret_id: secret,
        description: "Bootstrap Token (Global Management)".into(),
        policies: vec![Link { id: model::GLOBAL_MANAGEMENT_ID.into(), name: "global-management".into() }],
        create_time: now,
        ..Default::default()
    };
    let token = Token { hash: acl::token_hash(&token), ..token };
    apply(ctx, AclCommand::Bootstrap { token: token.clone(), reset_index }).await?;
    if let Some(f) = reset_file {
        let _ = std::fs::remove_file(f);
    }
    let st = ctx.agent.store.read();
    let mut out = token_json(&st.acl, &token, true);
    if let Some(m) = out.as_object_mut() {
        m.insert("ID".into(), token.secret_id.clone().into());
    }
    Ok(Reply::json(&out))
}

async fn login(ctx: &Ctx) -> HttpResult {
    let v = ctx.typed_body(super::shape::Go::Struct(
        "LoginRequest",
        &[("AuthMethod", super::shape::Go::String), ("BearerToken", super::shape::Go::String)],
    ))?;
    let method = crate::defs::s(&v, "AuthMethod");
    if !ctx.agent.store.read().acl.auth_methods.contains_key(&method) {
        return Err(HttpError::Forbidden(acl::NOT_FOUND.into()));
    }
    // Validating bearer tokens (JWT, OIDC, Kubernetes) is not built: refuse, never let in.
    Err(HttpError::Forbidden(format!(
        "Permission denied: bearer tokens for auth method {method:?} cannot be validated by this agent"
    )))
}

async fn logout(ctx: &Ctx) -> HttpResult {
    let found = {
        let st = ctx.agent.store.read();
        st.acl
            .tokens
            .get(&ctx.identity.accessor_id)
            .filter(|_| !ctx.identity.anonymous)
            .map(|t| t.auth_method.is_empty())
    };
    let accessor_id = match found {
        None => return Err(HttpError::Forbidden(acl::NOT_FOUND.into())),
        Some(true) => return Err(HttpError::Forbidden("Permission denied: token is not from an auth method".into())),
        Some(false) => ctx.identity.accessor_id.clone(),
    };
    apply(ctx, AclCommand::TokenDelete { accessor_id }).await?;
    Ok(Reply::json(&true))
}

/// `POST /v1/internal/acl/authorize`: the UI asks what the caller's token may do.
fn authorize(ctx: &Ctx) -> HttpResult {
    let v = ctx.json_body()?;
    let Value::Array(asks) = v else {
        return Err(HttpError::BadRequest("Request decode failed: expected a list of authorization requests".into()));
    };
    if asks.len() > 64 {
        return Err(HttpError::BadRequest("Refusing to authorize more than 64 requests".into()));
    }
    let mut out = Vec::new();
    for a in asks {
        let resource = a.get("Resource").and_then(Value::as_str).unwrap_or_default();
        let segment = a.get("Segment").and_then(Value::as_str).unwrap_or_default();
        let access = a.get("Access").and_then(Value::as_str).unwrap_or_default();
        let need = match access {
            "read" => Access::Read,
            "list" => Access::List,
            "write" => Access::Write,
            other => return Err(HttpError::BadRequest(format!("Invalid access level {other:?}"))),
        };
        let res = match resource {
            "acl" => Resource::Acl,
            "agent" => Resource::Agent,
            "event" => Resource::Event,
            "key" => Resource::Key,
            "keyring" => Resource::Keyring,
            "node" => Resource::Node,
            "operator" => Resource::Operator,
            "query" => Resource::Query,
            "service" => Resource::Service,
            "session" => Resource::Session,
            "mesh" => Resource::Mesh,
            "peering" => Resource::Peering,
            "intention" => Resource::Service,
            other => return Err(HttpError::BadRequest(format!("Invalid resource {other:?}"))),
        };
        let allow = ctx.identity.allows(res, segment, need);
        out.push(json!({"Resource": resource, "Segment": segment, "Access": access, "Allow": allow}));
    }
    Ok(Reply::json(&out))
}
