//! Config entries (`/v1/config`), intentions (`/v1/connect/intentions`), the Connect CA, the
//! discovery chain and gateway services. Entries are Raft state; the rules are in
//! `config_entry` and `connect`.

use super::{Ctx, HttpError, HttpResult, Reply};
use crate::acl::{Access, Resource};
use crate::state::Table;
use crate::structs::{Command, Response};
use serde_json::{json, Map, Value};

fn kind_of(kind: &str) -> Result<&'static str, HttpError> {
    crate::config_entry::canonical_kind(kind)
        .ok_or_else(|| HttpError::BadRequest(format!("invalid config entry kind: {kind}")))
}

/// Read access to an entry: service kinds by service name; the mesh-wide ones are readable.
fn may_read(ctx: &Ctx, kind: &str, name: &str) -> bool {
    !crate::config_entry::is_service_kind(kind) || ctx.identity.allows(Resource::Service, name, Access::Read)
}

fn cas(ctx: &Ctx) -> Result<Option<u64>, HttpError> {
    match ctx.query.get("cas") {
        None => Ok(None),
        Some(c) => c.parse().map(Some).map_err(|_| HttpError::BadRequest(format!("Error parsing cas value: {c:?}"))),
    }
}

/// Canonical field names for an entry body (`kind` → `Kind`), keeping user maps as they are.
fn entry_body(ctx: &Ctx) -> Result<Map<String, Value>, HttpError> {
    let v = ctx.json_body()?;
    let Value::Object(m) = v else {
        return Err(HttpError::BadRequest("Request decode failed: config entry must be an object".into()));
    };
    let mut out = Map::new();
    for (k, v) in m {
        let k = match k.to_ascii_lowercase().as_str() {
            "kind" => "Kind".to_string(),
            "name" => "Name".to_string(),
            "protocol" => "Protocol".to_string(),
            _ => k,
        };
        out.insert(k, v);
    }
    for key in ["Kind", "Name"] {
        if let Some(v) = out.get(key) {
            if !v.is_string() {
                return Err(HttpError::BadRequest(format!(
                    "Request decode failed: json: cannot unmarshal {} into Go struct field .{key} of type string",
                    if v.is_number() { "number" } else { "value" }
                )));
            }
        }
    }
    Ok(out)
}

async fn write(ctx: &Ctx, cmd: Command) -> HttpResult {
    crate::acl::commands::authorize(&ctx.identity, &cmd, &ctx.agent.store.read())?;
    match ctx.agent.write(cmd).await? {
        Response::Bool(b) => Ok(Reply::json(&b)),
        Response::Error(e) => Err(HttpError::BadRequest(e)),
        _ => Ok(Reply::json(&true)),
    }
}

/// `PUT /v1/config` (`?cas=`): true, or false when the cas did not match.
pub async fn config_apply(ctx: &Ctx) -> HttpResult {
    let mut entry = entry_body(ctx)?;
    let kind = kind_of(entry.get("Kind").and_then(Value::as_str).unwrap_or_default())?;
    entry.insert("Kind".into(), kind.into());
    entry.remove("CreateIndex");
    entry.remove("ModifyIndex");
    {
        let st = ctx.agent.store.read();
        let entries = &st.config_entries;
        crate::config_entry::validate(&entry, &|svc: &str| crate::config_entry::protocol(entries, svc))
            .map_err(HttpError::BadRequest)?;
    }
    let cas = cas(ctx)?;
    write(ctx, Command::ConfigEntrySet { entry: Value::Object(entry), cas }).await
}

pub async fn config_get(ctx: &Ctx, kind: &str, name: &str) -> HttpResult {
    let kind = kind_of(kind)?;
    if !may_read(ctx, kind, name) {
        return Err(ctx.identity.denied(Resource::Service, name, Access::Read).into());
    }
    let (headers, found, _) = ctx
        .read_value(|st, ws| {
            ws.table(Table::ConfigEntries);
            (st.index.config_entries, st.config_entries.get(kind).and_then(|m| m.get(name)).cloned())
        })
        .await?;
    match found {
        Some(e) => Ok(Reply::json(&e).with_headers(headers)),
        None => Err(HttpError::NotFound(format!("Config entry not found for {kind:?} / {name:?}"))),
    }
}

pub async fn config_list(ctx: &Ctx, kind: &str) -> HttpResult {
    let kind = kind_of(kind)?;
    let acl = super::acl_filter::AclFilter::new(&ctx.identity);
    let service_kind = crate::config_entry::is_service_kind(kind);
    let reply = ctx
        .read(|st, ws| {
            ws.table(Table::ConfigEntries);
            acl.reset();
            let list: Vec<Value> = st
                .config_entries
                .get(kind)
                .into_iter()
                .flatten()
                .filter(|(name, _)| !service_kind || acl.service(name))
                .map(|(_, e)| e.clone())
                .collect();
            (st.index.config_entries, list)
        })
        .await?;
    Ok(acl.mark(reply))
}

pub async fn config_delete(ctx: &Ctx, kind: &str, name: &str) -> HttpResult {
    let kind = kind_of(kind)?;
    let cas = cas(ctx)?;
    write(ctx, Command::ConfigEntryDelete { kind: kind.to_string(), name: name.to_string(), cas }).await
}

// ---- intentions ----

fn source_destination(ctx: &Ctx) -> Result<(String, String), HttpError> {
    let get = |k: &str| ctx.query.get(k).filter(|v| !v.is_empty()).map(str::to_string);
    let source =
        get("source").ok_or_else(|| HttpError::BadRequest("required query parameter 'source' not set".into()))?;
    let destination = get("destination")
        .ok_or_else(|| HttpError::BadRequest("required query parameter 'destination' not set".into()))?;
    // Namespaced names (`ns/name`) are the default namespace here.
    let bare = |s: String| s.rsplit('/').next().map(str::to_string).unwrap_or(s);
    Ok((bare(source), bare(destination)))
}

pub async fn intention_list(ctx: &Ctx) -> HttpResult {
    let acl = super::acl_filter::AclFilter::new(&ctx.identity);
    let reply = ctx
        .read(|st, ws| {
            ws.table(Table::ConfigEntries);
            acl.reset();
            let list: Vec<Value> = crate::connect::intentions(&st.config_entries)
                .into_iter()
                .filter(|i| acl.service(i["DestinationName"].as_str().unwrap_or("")))
                .collect();
            (st.index.config_entries, list)
        })
        .await?;
    Ok(acl.mark(reply))
}

/// `GET|PUT|DELETE /v1/connect/intentions/exact?source=&destination=`.
pub async fn intention_exact(ctx: &Ctx) -> HttpResult {
    let (source, destination) = source_destination(ctx)?;
    if ctx.method == http::Method::GET {
        ctx.identity.require(Resource::Service, &destination, Access::Read)?;
        let (headers, found, _) = ctx
            .read_value(|st, ws| {
                ws.table(Table::ConfigEntries);
                let found = crate::connect::intentions(&st.config_entries)
                    .into_iter()
                    .find(|i| i["SourceName"] == source.as_str() && i["DestinationName"] == destination.as_str());
                (st.index.config_entries, found)
            })
            .await?;
        return match found {
            Some(i) => Ok(Reply::json(&i).with_headers(headers)),
            None => Err(HttpError::NotFound("Intention not found".into())),
        };
    }
    ctx.identity.require(Resource::Service, &destination, Access::Write)?;
    let src = if ctx.method == http::Method::PUT {
        let v = crate::defs::normalize(ctx.json_body()?);
        let action = crate::defs::s(&v, "Action");
        if !matches!(action.as_str(), "allow" | "deny") {
            return Err(HttpError::BadRequest(format!("Action must be set to 'allow' or 'deny', got {action:?}")));
        }
        let now = crate::acl::rfc3339(crate::structs::now_ms());
        Some(json!({
            "Name": source, "Action": action, "Description": crate::defs::s(&v, "Description"),
            "Type": "consul", "LegacyMeta": v.get("Meta").cloned().unwrap_or(json!({})),
            "LegacyCreateTime": now, "LegacyUpdateTime": now,
        }))
    } else {
        None
    };
    let existing =
        ctx.agent.store.read().config_entries.get("service-intentions").and_then(|m| m.get(&destination)).cloned();
    let cas = Some(existing.as_ref().and_then(|e| e["ModifyIndex"].as_u64()).unwrap_or(0));
    let cmd = match crate::connect::upsert_source(existing.as_ref(), &destination, &source, src) {
        Some(entry) => Command::ConfigEntrySet { entry, cas },
        None => Command::ConfigEntryDelete { kind: "service-intentions".into(), name: destination, cas },
    };
    match ctx.agent.write(cmd).await? {
        Response::Bool(false) => Err(HttpError::Conflict("intention changed concurrently; try again".into())),
        Response::Error(e) => Err(HttpError::BadRequest(e)),
        _ => Ok(Reply::json(&true)),
    }
}

pub async fn intention_check(ctx: &Ctx) -> HttpResult {
    let (source, destination) = source_destination(ctx)?;
    ctx.identity.require(Resource::Service, &destination, Access::Read)?;
    let default_allow =
        !ctx.agent.acl.enabled() || ctx.agent.acl.config.default_policy == crate::acl::DefaultPolicy::Allow;
    let allowed = crate::connect::allowed(&ctx.agent.store.read().config_entries, &source, &destination, default_allow);
    Ok(Reply::json(&json!({ "Allowed": allowed })))
}

pub async fn intention_match(ctx: &Ctx) -> HttpResult {
    let by = ctx.query.get("by").unwrap_or("");
    let by_destination = match by {
        "destination" => true,
        "source" => false,
        _ => {
            return Err(HttpError::BadRequest("required query parameter 'by' must be 'source' or 'destination'".into()))
        }
    };
    let names: Vec<String> = ctx.query.all("name").into_iter().map(str::to_string).collect();
    if names.is_empty() {
        return Err(HttpError::BadRequest("required query parameter 'name' not set".into()));
    }
    for n in &names {
        ctx.identity.require(Resource::Service, n, Access::Read)?;
    }
    let st = ctx.agent.store.read();
    let mut out = Map::new();
    for n in names {
        out.insert(n.clone(), Value::Array(crate::connect::matching(&st.config_entries, by_destination, &n)));
    }
    Ok(Reply::json(&out))
}

// ---- CA ----

pub async fn ca_roots(ctx: &Ctx) -> HttpResult {
    let (headers, ca, _) = ctx
        .read_value(|st, ws| {
            ws.table(Table::ConnectCa);
            (st.index.connect_ca, st.connect_ca.clone())
        })
        .await?;
    let index = headers.first().and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    match ca {
        Some(ca) => Ok(Reply::json(&crate::connect::roots_view(&ca, index)).with_headers(headers)),
        None => Ok(Reply::json(&json!({"ActiveRootID": "", "TrustDomain": "", "Roots": [], "Index": index}))
            .with_headers(headers)),
    }
}

/// `GET|PUT /v1/connect/ca/configuration`: the `consul` provider only.
pub async fn ca_configuration(ctx: &Ctx) -> HttpResult {
    if ctx.method == http::Method::GET {
        ctx.identity.require(Resource::Operator, "", Access::Read)?;
        let ca = ctx.agent.store.read().connect_ca.clone();
        return match ca {
            Some(ca) => Ok(Reply::json(&crate::connect::config_view(&ca))),
            None => Err(HttpError::Internal("CA has not finished initializing".into())),
        };
    }
    ctx.identity.require(Resource::Operator, "", Access::Write)?;
    let v = ctx.json_body()?;
    let provider = v.get("Provider").and_then(Value::as_str).unwrap_or("");
    if provider != "consul" {
        return Err(HttpError::BadRequest(format!(
            "Provider {provider:?} is not supported: this agent's CA is the built-in \"consul\" provider"
        )));
    }
    let Some(mut ca) = ctx.agent.store.read().connect_ca.clone() else {
        return Err(HttpError::Internal("CA has not finished initializing".into()));
    };
    let mut config = crate::connect::default_ca_config();
    if let (Some(base), Some(given)) = (config.as_object_mut(), v.get("Config").and_then(Value::as_object)) {
        for (k, x) in given {
            base.insert(k.clone(), x.clone());
        }
    }
    for key in ["LeafCertTTL", "RotationPeriod", "IntermediateCertTTL"] {
        if let Some(d) = config.get(key) {
            let ok = d.as_str().is_some_and(|s| api::duration::parse(s).is_ok()) || d.is_number();
            if !ok {
                return Err(HttpError::BadRequest(format!("Invalid {key}: {d}")));
            }
        }
    }
    let cas = ca["ModifyIndex"].as_u64();
    ca["Config"] = config;
    match ctx.agent.write(Command::ConnectCaSet { ca, cas }).await? {
        Response::Bool(false) => Err(HttpError::Conflict("CA configuration changed concurrently; try again".into())),
        _ => Ok(Reply::json(&true)),
    }
}

/// `GET /v1/agent/connect/ca/leaf/:service`: issued by a server (a client agent asks one).
pub async fn agent_leaf(ctx: &Ctx, service: &str) -> HttpResult {
    let dc = ctx.agent.config.datacenter.clone();
    let leaf: Result<Value, String> = if ctx.agent.server.is_some() {
        issue_leaf(&ctx.agent, service, &dc)
    } else {
        let token = ctx.identity.secret.clone();
        ctx.agent
            .client_rpc_as::<_, Result<Value, String>>("/rpc/connect/leaf", &service.to_string(), Some(&token))
            .await
            .map_err(|e| HttpError::Internal(e.to_string()))?
    };
    leaf.map(|l| Reply::json(&l)).map_err(HttpError::Internal)
}

/// A leaf for `service` from this server's copy of the CA.
pub fn issue_leaf(agent: &crate::agent::Agent, service: &str, dc: &str) -> Result<Value, String> {
    let (ca, index) = {
        let st = agent.store.read();
        (st.connect_ca.clone(), st.index.connect_ca)
    };
    let ca = ca.ok_or_else(|| "CA has not finished initializing".to_string())?;
    let mut leaf =
        crate::connect::leaf(&ca, service, dc, time::OffsetDateTime::now_utc()).map_err(|e| e.to_string())?;
    leaf["CreateIndex"] = json!(index);
    leaf["ModifyIndex"] = json!(index);
    Ok(leaf)
}

pub async fn discovery_chain(ctx: &Ctx, service: &str) -> HttpResult {
    let body_override = if ctx.method == http::Method::POST {
        let v = crate::defs::normalize(ctx.json_body()?);
        v.get("OverrideProtocol").and_then(Value::as_str).map(str::to_string)
    } else {
        None
    };
    let over = body_override.or_else(|| ctx.query.get("override-protocol").map(str::to_string));
    let dc = ctx.query.get("compile-dc").filter(|d| !d.is_empty()).unwrap_or(&ctx.agent.config.datacenter).to_string();
    ctx.read(|st, ws| {
        ws.table(Table::ConfigEntries);
        (
            st.index.config_entries.max(1),
            crate::connect::discovery_chain(&st.config_entries, service, &dc, over.as_deref()),
        )
    })
    .await
}

pub async fn gateway_services(ctx: &Ctx, gateway: &str) -> HttpResult {
    ctx.identity.require(Resource::Service, gateway, Access::Read)?;
    ctx.read(|st, ws| {
        ws.table(Table::ConfigEntries);
        (st.index.config_entries.max(1), crate::connect::gateway_services(&st.config_entries, gateway))
    })
    .await
}
