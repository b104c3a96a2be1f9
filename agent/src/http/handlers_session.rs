//! `/v1/session/*`: sessions for locks and leader election. TTL timers run on the leader.

use super::acl_filter::AclFilter;
use super::{convert, Ctx, HttpError, HttpResult, Reply};
use crate::acl::Resource;
use crate::defs::{s, strings};
use crate::state::Table;
use crate::structs::*;
use serde_json::Value;
use std::time::Duration;

const MAX_TTL: Duration = Duration::from_secs(86400);
const MAX_LOCK_DELAY: Duration = Duration::from_secs(60);

fn lock_delay(v: &Value) -> Result<u64, HttpError> {
    match v.get("LockDelay") {
        None | Some(Value::Null) => Ok(15_000_000_000),
        // Consul reads small bare numbers as seconds and large ones as nanoseconds.
        Some(Value::Number(n)) => {
            let raw = n.as_f64().unwrap_or(0.0).max(0.0) as u64;
            Ok(if raw < 1000 { raw * 1_000_000_000 } else { raw })
        }
        Some(Value::String(x)) => api::duration::parse(x)
            .map(|d| d.as_nanos() as u64)
            .map_err(|_| HttpError::BadRequest(format!("Request decode failed: time: invalid duration {x:?}"))),
        Some(other) => Err(HttpError::BadRequest(format!("Request decode failed: invalid LockDelay {other}"))),
    }
    .map(|ns| ns.min(MAX_LOCK_DELAY.as_nanos() as u64))
}

pub async fn create(ctx: &Ctx) -> HttpResult {
    let v = ctx.typed_body(super::shape::SESSION_REQUEST)?;
    let v = if v.is_null() { Value::Object(Default::default()) } else { v };
    let behavior = match s(&v, "Behavior").as_str() {
        "" | "release" => SessionBehavior::Release,
        "delete" => SessionBehavior::Delete,
        other => return Err(HttpError::BadRequest(format!("Invalid Behavior setting '{other}'"))),
    };
    let ttl = s(&v, "TTL");
    let ttl_dur = if ttl.is_empty() {
        Duration::ZERO
    } else {
        let d = api::duration::parse(&ttl)
            .map_err(|_| HttpError::BadRequest(format!("Request decode failed: time: invalid duration {ttl:?}")))?;
        let min = ctx.agent.config.session_ttl_min;
        if d != Duration::ZERO && (d < min || d > MAX_TTL) {
            return Err(HttpError::BadRequest(format!(
                "Invalid Session TTL '{}', must be between [{}={}]",
                d.as_nanos(),
                api::duration::format(min),
                api::duration::format(MAX_TTL)
            )));
        }
        d
    };
    let mut node_checks = strings(&v, "NodeChecks");
    let has_checks = v.get("Checks").is_some() || v.get("NodeChecks").is_some();
    node_checks.extend(strings(&v, "Checks"));
    if !has_checks {
        node_checks.push(SERF_CHECK_ID.into());
    }
    node_checks.dedup();
    let service_checks: Vec<String> = match v.get("ServiceChecks") {
        Some(Value::Array(a)) => a.iter().map(|c| s(c, "ID")).filter(|x| !x.is_empty()).collect(),
        _ => vec![],
    };
    let node = match s(&v, "Node") {
        n if n.is_empty() => ctx.agent.config.node_name.clone(),
        n => n,
    };
    let session = Session {
        id: uuid::Uuid::new_v4().to_string(),
        name: s(&v, "Name"),
        node,
        lock_delay_ns: lock_delay(&v)?,
        behavior,
        ttl: if ttl_dur.is_zero() { String::new() } else { api::duration::format(ttl_dur) },
        node_checks,
        service_checks,
        ..Default::default()
    };
    let id = session.id.clone();
    let cmd = Command::SessionCreate(session);
    crate::acl::commands::authorize(&ctx.identity, &cmd, &ctx.agent.store.read())?;
    match ctx.agent.write(cmd).await? {
        Response::Error(e) => Err(HttpError::Internal(e)),
        _ => {
            ctx.agent.reset_session_timer(&id, ttl_dur);
            Ok(Reply::json(&serde_json::json!({ "ID": id })))
        }
    }
}

pub async fn destroy(ctx: &Ctx, id: &str) -> HttpResult {
    let cmd = Command::SessionDestroy { id: id.to_string() };
    crate::acl::commands::authorize(&ctx.identity, &cmd, &ctx.agent.store.read())?;
    ctx.agent.write(cmd).await?;
    ctx.agent.clear_session_timer(id);
    Ok(Reply::json(&true))
}

pub async fn renew(ctx: &Ctx, id: &str) -> HttpResult {
    let session = ctx.agent.store.read().sessions.get(id).cloned();
    let Some(session) = session else {
        return Err(HttpError::NotFound(format!("Session id '{id}' not found")));
    };
    ctx.identity.require(crate::acl::Resource::Session, &session.node, crate::acl::Access::Write)?;
    if let Ok(d) = api::duration::parse(&session.ttl) {
        ctx.agent.reset_session_timer(id, d);
    }
    Ok(Reply::json(&vec![convert::session(&session)]))
}

pub async fn info(ctx: &Ctx, id: &str) -> HttpResult {
    let acl = AclFilter::new(&ctx.identity);
    let reply = ctx
        .read(|st, ws| {
            ws.table(Table::Sessions);
            acl.reset();
            let found = st.sessions.get(id).filter(|s| acl.can(Resource::Session, &s.node));
            (st.index.sessions, found.map(convert::session).into_iter().collect::<Vec<_>>())
        })
        .await?;
    Ok(acl.mark(reply))
}

pub async fn node(ctx: &Ctx, node: &str) -> HttpResult {
    ctx.read(|st, ws| {
        ws.table(Table::Sessions);
        let list: Vec<api::Session> = st.sessions.values().filter(|s| s.node == node).map(convert::session).collect();
        (st.index.sessions, list)
    })
    .await
}

pub async fn list(ctx: &Ctx) -> HttpResult {
    let acl = AclFilter::new(&ctx.identity);
    let reply = ctx
        .read(|st, ws| {
            ws.table(Table::Sessions);
            acl.reset();
            let list: Vec<api::Session> =
                st.sessions.values().filter(|s| acl.can(Resource::Session, &s.node)).map(convert::session).collect();
            (st.index.sessions, list)
        })
        .await?;
    Ok(acl.mark(reply))
}
