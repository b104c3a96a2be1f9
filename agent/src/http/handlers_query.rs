//! `/v1/query`: prepared queries — stored definitions (Raft), and their execution here with
//! failover to other datacenters (`Service.Failover`), asked of their servers over the server
//! port. The rules are in `prepared_query`.

use super::{Ctx, HttpError, HttpResult, Reply};
use crate::acl::{Access, Resource};
use crate::state::Table;
use crate::structs::Command;
use serde_json::{json, Value};

fn name_of(q: &Value) -> &str {
    q.get("Name").and_then(Value::as_str).unwrap_or("")
}

/// A definition as the caller may see it: the query's token is secret.
fn view(ctx: &Ctx, q: &Value) -> Value {
    let mut q = q.clone();
    let token_set = q.get("Token").and_then(Value::as_str).is_some_and(|t| !t.is_empty());
    if token_set && !ctx.identity.management() {
        q["Token"] = json!("<hidden>");
    }
    q
}

fn body(ctx: &Ctx) -> Result<serde_json::Map<String, Value>, HttpError> {
    let v = crate::defs::normalize(ctx.json_body()?);
    let Value::Object(m) = v else {
        return Err(HttpError::BadRequest("Request decode failed: expected a prepared query object".into()));
    };
    let value = Value::Object(m.clone());
    crate::prepared_query::validate(&value).map_err(HttpError::BadRequest)?;
    Ok(m)
}

async fn write(ctx: &Ctx, cmd: Command) -> Result<(), HttpError> {
    crate::acl::commands::authorize(&ctx.identity, &cmd, &ctx.agent.store.read())?;
    if let crate::structs::Response::Error(e) = ctx.agent.write(cmd).await? {
        return Err(HttpError::BadRequest(e));
    }
    Ok(())
}

pub async fn list(ctx: &Ctx) -> HttpResult {
    let acl = super::acl_filter::AclFilter::new(&ctx.identity);
    let reply = ctx
        .read(|st, ws| {
            ws.table(Table::PreparedQueries);
            acl.reset();
            let list: Vec<Value> = st
                .prepared_queries
                .values()
                .filter(|q| acl.can(Resource::Query, name_of(q)))
                .map(|q| view(ctx, q))
                .collect();
            (st.index.prepared_queries.max(1), list)
        })
        .await?;
    Ok(acl.mark(reply))
}

pub async fn create(ctx: &Ctx) -> HttpResult {
    let m = body(ctx)?;
    let id = uuid::Uuid::new_v4().to_string();
    let q = crate::prepared_query::normalize(m, &id);
    // Only one catch-all template, and names are unique among non-templates.
    {
        let st = ctx.agent.store.read();
        let name = name_of(&q);
        let template = q.get("Template").is_some_and(|t| !t.is_null());
        for other in st.prepared_queries.values() {
            let other_template = other.get("Template").is_some_and(|t| !t.is_null());
            if name_of(other) == name && (!name.is_empty() || (template && other_template)) {
                return Err(HttpError::BadRequest(format!("name {name:?} aliases an existing query name")));
            }
        }
    }
    write(ctx, Command::QuerySet { query: q }).await?;
    Ok(Reply::json(&json!({ "ID": id })))
}

/// `GET /v1/query/:id`: a list of one, as Consul answers.
pub async fn get(ctx: &Ctx, id: &str) -> HttpResult {
    let (headers, found, _) = ctx
        .read_value(|st, ws| {
            ws.table(Table::PreparedQueries);
            (st.index.prepared_queries.max(1), st.prepared_queries.get(id).cloned())
        })
        .await?;
    let Some(q) = found else {
        return Err(HttpError::NotFound("Query not found".into()));
    };
    ctx.identity.require(Resource::Query, name_of(&q), Access::Read)?;
    Ok(Reply::json(&vec![view(ctx, &q)]).with_headers(headers))
}

pub async fn update(ctx: &Ctx, id: &str) -> HttpResult {
    let existing = ctx.agent.store.read().prepared_queries.get(id).cloned();
    let Some(existing) = existing else {
        return Err(HttpError::NotFound("Query not found".into()));
    };
    ctx.identity.require(Resource::Query, name_of(&existing), Access::Write)?;
    let mut m = body(ctx)?;
    // A hidden token sent back unchanged keeps the stored one.
    if m.get("Token").and_then(Value::as_str) == Some("<hidden>") {
        m.insert("Token".into(), existing.get("Token").cloned().unwrap_or(json!("")));
    }
    let q = crate::prepared_query::normalize(m, id);
    write(ctx, Command::QuerySet { query: q }).await?;
    Ok(Reply::empty())
}

pub async fn delete(ctx: &Ctx, id: &str) -> HttpResult {
    if !ctx.agent.store.read().prepared_queries.contains_key(id) {
        return Err(HttpError::NotFound("Query not found".into()));
    }
    write(ctx, Command::QueryDelete { id: id.to_string() }).await?;
    Ok(Reply::json(&true))
}

pub async fn explain(ctx: &Ctx, id: &str) -> HttpResult {
    let q = crate::prepared_query::resolve(&ctx.agent.store.read(), id)
        .ok_or_else(|| HttpError::NotFound("Query not found".into()))?;
    ctx.identity.require(Resource::Query, name_of(&q), Access::Read)?;
    Ok(Reply::json(&json!({ "Query": view(ctx, &q) })))
}

/// `GET /v1/query/:id_or_name/execute?limit=&near=`: the instances here, else those of the
/// first failover datacenter that has any.
pub async fn execute(ctx: &Ctx, id: &str) -> HttpResult {
    let q = crate::prepared_query::resolve(&ctx.agent.store.read(), id)
        .ok_or_else(|| HttpError::NotFound("Query not found".into()))?;
    let limit: usize = match ctx.query.get("limit") {
        None | Some("") => 0,
        Some(l) => l.parse().map_err(|_| HttpError::BadRequest(format!("Bad limit: {l}")))?,
    };
    let token = effective_token(ctx, &q);
    let answer = execute_here(&ctx.agent, &q, limit, token.as_deref())?;
    if answer["Nodes"].as_array().is_some_and(|n| !n.is_empty()) {
        return Ok(Reply::json(&answer));
    }
    let (found, tried) = failover(&ctx.agent, &q, limit, token.as_deref()).await;
    let mut answer = found.unwrap_or(answer);
    answer["Failovers"] = json!(tried);
    Ok(Reply::json(&answer))
}

/// Runs `q`, which found nothing here, in its failover datacenters in order: the answer of
/// the first that has instances, and how many were tried.
pub async fn failover(
    agent: &crate::agent::Agent,
    q: &Value,
    limit: usize,
    token: Option<&str>,
) -> (Option<Value>, u64) {
    let dc = agent.config.datacenter.clone();
    let order = crate::prepared_query::failover_order(q, &crate::forward::datacenters_by_distance(agent), &dc);
    let mut tried = 0u64;
    for remote in order {
        tried += 1;
        let args = json!({"Query": q, "Limit": limit});
        match crate::forward::call_datacenter::<_, Result<Value, String>>(
            agent,
            &remote,
            "/rpc/query/execute",
            &args,
            token,
        )
        .await
        {
            Ok(Ok(a)) if a["Nodes"].as_array().is_some_and(|n| !n.is_empty()) => return (Some(a), tried),
            Ok(Ok(_)) => {}
            Ok(Err(e)) | Err(e) => tracing::debug!(dc = %remote, error = %e, "prepared query failover: no answer"),
        }
    }
    (None, tried)
}

/// A query runs with its own token if it has one, else the caller's.
fn effective_token(ctx: &Ctx, q: &Value) -> Option<String> {
    q.get("Token").and_then(Value::as_str).filter(|t| !t.is_empty()).map(str::to_string).or_else(|| {
        let s = ctx.identity.secret.clone();
        (!s.is_empty()).then_some(s)
    })
}

/// Runs `q` on this server's catalog for `token` (instances it may not read are left out).
pub fn execute_here(
    agent: &crate::agent::Agent,
    q: &Value,
    limit: usize,
    token: Option<&str>,
) -> Result<Value, HttpError> {
    let dc = agent.config.datacenter.clone();
    let st = agent.store.read();
    let id = agent.acl.resolve_local(token, &st.acl, crate::structs::now_ms())?;
    let mut nodes: Vec<api::ServiceEntry> = crate::prepared_query::select(&st, q, &dc)
        .into_iter()
        .filter(|e| {
            id.allows(Resource::Node, &e.node.node, Access::Read)
                && id.allows(Resource::Service, &e.service.service, Access::Read)
        })
        .collect();
    drop(st);
    {
        use rand::seq::SliceRandom;
        nodes.shuffle(&mut rand::thread_rng());
    }
    if limit > 0 {
        nodes.truncate(limit);
    }
    Ok(crate::prepared_query::answer(q, nodes, &dc, 0))
}
