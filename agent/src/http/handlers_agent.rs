//! `/v1/agent/*`: this agent's own view — its services and checks, members, config, maintenance.

use super::{convert, Body, Ctx, HttpError, HttpResult, Reply};
use crate::acl::{Access, Resource};
use crate::structs::*;
use bytes::Bytes;
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub const CONSUL_VERSION: &str = "1.20.0";

/// This agent's own member record.
pub fn member(ctx: &Ctx) -> api::AgentMember {
    match ctx.agent.gossip.get() {
        Some(g) => crate::serf::api_member(&g.local()),
        None => {
            let cfg = &ctx.agent.config;
            crate::serf::api_member(&crate::gossip::Member {
                name: cfg.node_name.clone(),
                addr: std::net::SocketAddr::new(cfg.advertise_addr, cfg.ports.serf_lan.max(0) as u16),
                tags: crate::serf::tags(cfg, &ctx.agent.node_id),
                status: crate::gossip::MemberStatus::Alive,
            })
        }
    }
}

fn serf_stats(a: &crate::agent::Agent) -> Value {
    let s = a.gossip.get().map(|g| g.stats()).unwrap_or_default();
    json!({
        "members": s.members.max(1).to_string(), "encrypted": a.keyring.is_enabled().to_string(),
        "failed": s.failed.to_string(), "left": s.left.to_string(), "member_time": s.member_time.to_string(),
        "event_time": s.event_time.to_string(), "health_score": "0", "intent_queue": "0", "event_queue": "0",
        "query_queue": "0", "query_time": "1", "coordinate_resets": "0",
    })
}

pub async fn agent_self(ctx: &Ctx) -> HttpResult {
    let a = &ctx.agent;
    let cfg = &a.config;
    let raft_stats = match &a.server {
        Some(s) => {
            let m = s.raft.metrics().borrow().clone();
            json!({
                "state": format!("{:?}", m.state),
                "term": m.current_term.to_string(),
                "last_log_index": m.last_log_index.unwrap_or(0).to_string(),
                "applied_index": m.last_applied.map(|l| l.index).unwrap_or(0).to_string(),
                "commit_index": m.last_applied.map(|l| l.index).unwrap_or(0).to_string(),
                "num_peers": m.membership_config.membership().voter_ids().count().saturating_sub(1).to_string(),
                "protocol_version": "3",
                "last_snapshot_index": m.snapshot.map(|l| l.index).unwrap_or(0).to_string(),
            })
        }
        None => json!({}),
    };
    let (services, checks) = {
        let l = a.local.lock();
        (l.services.len(), l.checks.len())
    };
    let leader = a.server.as_ref().and_then(|s| s.leader()).map(|(_, p)| p.addr).unwrap_or_default();
    let body = json!({
        "Config": {
            "Datacenter": cfg.datacenter, "PrimaryDatacenter": cfg.datacenter, "NodeName": cfg.node_name,
            "NodeID": a.node_id, "Revision": "agent-rs", "Server": cfg.server, "Version": CONSUL_VERSION,
            "BuildDate": "", "SegmentName": "",
        },
        "DebugConfig": {
            "Bootstrap": cfg.bootstrap, "BootstrapExpect": cfg.bootstrap_expect, "DataDir": cfg.data_dir,
            "DevMode": cfg.dev, "EnableScriptChecks": cfg.enable_script_checks, "RaftMultiplier": cfg.raft_multiplier,
            "ClientAddrs": cfg.client_addrs, "AdvertiseAddrLAN": cfg.advertise_addr, "BindAddr": cfg.bind_addr,
            "HTTPPort": cfg.ports.http, "DNSPort": cfg.ports.dns, "SerfPortLAN": cfg.ports.serf_lan, "ServerPort": cfg.ports.server,
            "RetryJoinLAN": cfg.retry_join, "UIConfig": {"Enabled": cfg.ui}, "DNSDomain": cfg.domain, "DNSRecursors": cfg.recursors,
        },
        "Coord": {"Vec": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], "Error": 1.5, "Adjustment": 0.0, "Height": 1.0e-5},
        "Member": member(ctx),
        "Stats": {
            "agent": {"check_monitors": "0", "check_ttls": checks.to_string(), "checks": checks.to_string(), "services": services.to_string()},
            "build": {"prerelease": "", "revision": "agent-rs", "version": CONSUL_VERSION},
            "consul": {"bootstrap": cfg.bootstrap.to_string(), "known_datacenters": "1", "leader": a.server.as_ref().is_some_and(|s| s.is_leader()).to_string(), "leader_addr": leader, "server": cfg.server.to_string()},
            "raft": raft_stats,
            "runtime": {"arch": std::env::consts::ARCH, "os": std::env::consts::OS, "version": "rust", "cpu_count": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).to_string()},
            "serf_lan": serf_stats(a),
        },
        "Meta": cfg.node_meta,
        "xDS": {"SupportedProxies": {"envoy": []}, "Port": -1, "Ports": {"Plaintext": -1, "TLS": -1}},
    });
    Ok(Reply::json(&body))
}

pub async fn members(ctx: &Ctx) -> HttpResult {
    if ctx.query.flag("wan")? {
        // A client agent is in no WAN pool: an empty list, as Consul answers.
        let acl = super::acl_filter::AclFilter::new(&ctx.identity);
        let mut list: Vec<api::AgentMember> = match ctx.agent.gossip_wan.get() {
            Some(g) => g.members().iter().map(crate::serf::api_member).collect(),
            None => Vec::new(),
        };
        // WAN members are `<node>.<dc>`; ACLs name the node.
        list.retain(|m| acl.node(m.name.rsplit_once('.').map_or(m.name.as_str(), |(n, _)| n)));
        return Ok(acl.mark(Reply::json(&list)));
    }
    let acl = super::acl_filter::AclFilter::new(&ctx.identity);
    let mut list: Vec<api::AgentMember> = match ctx.agent.gossip.get() {
        Some(g) => g.members().iter().map(crate::serf::api_member).collect(),
        None => vec![member(ctx)],
    };
    list.retain(|m| acl.node(&m.name));
    Ok(acl.mark(Reply::json(&list)))
}

/// The agent's services as `/v1/agent/service/:id` shows them (with `ContentHash`), or, when
/// `hashed` is false, as the listing shows them (no hash, so none is computed).
fn local_services(ctx: &Ctx, hashed: bool) -> BTreeMap<String, api::AgentService> {
    let dc = &ctx.agent.config.datacenter;
    let convert = if hashed { convert::agent_service } else { convert::agent_service_unhashed };
    ctx.agent.local.lock().services.iter().map(|(k, s)| (k.clone(), convert(&s.service, dc))).collect()
}

pub async fn services(ctx: &Ctx) -> HttpResult {
    let acl = super::acl_filter::AclFilter::new(&ctx.identity);
    let mut services = local_services(ctx, false);
    services.retain(|_, s| acl.service(&s.service));
    let mut json = serde_json::to_value(services).unwrap_or_default();
    if let Some(f) = ctx.read_opts()?.filter {
        super::apply_filter(&mut json, &f);
    }
    Ok(acl.mark(Reply { status: 200, body: Body::Json(json), headers: vec![] }))
}

/// The name of a local service (for its ACL rule), or `NotFound` as the caller would get.
fn local_service_name(ctx: &Ctx, id: &str) -> Option<String> {
    ctx.agent.local.lock().services.get(id).map(|s| s.service.service.clone())
}

/// A local check needs write on its service, or on this agent's node for a node check.
fn require_check_write(ctx: &Ctx, id: &str) -> Result<(), HttpError> {
    let service = ctx.agent.local.lock().checks.get(id).map(|c| c.check.service_id.clone());
    match service {
        Some(sid) if !sid.is_empty() => {
            let name = local_service_name(ctx, &sid).unwrap_or_default();
            ctx.identity.require(Resource::Service, &name, Access::Write)?;
        }
        _ => ctx.identity.require(Resource::Node, &ctx.agent.config.node_name, Access::Write)?,
    }
    Ok(())
}

/// One local service, with hash-based blocking (`?hash=&wait=`).
pub async fn service(ctx: &Ctx, id: &str) -> HttpResult {
    let opts = ctx.read_opts()?;
    let want = ctx.query.get("hash").unwrap_or("").to_string();
    let deadline = tokio::time::Instant::now() + opts.wait;
    if let Some(name) = local_service_name(ctx, id) {
        ctx.identity.require(Resource::Service, &name, Access::Read)?;
    }
    let mut changed = ctx.agent.local_changed.subscribe();
    loop {
        let svc = local_services(ctx, true).remove(id);
        let Some(svc) = svc else {
            return Err(HttpError::NotFound(format!("unknown service ID: {id}")));
        };
        let hash = svc.content_hash.clone();
        if want.is_empty() || hash != want || tokio::time::Instant::now() >= deadline {
            return Ok(Reply::json(&svc).header(api::query::HEADER_CONTENT_HASH, hash));
        }
        tokio::select! {
            _ = changed.changed() => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

fn local_checks(ctx: &Ctx) -> BTreeMap<String, api::HealthCheck> {
    let node = ctx.agent.config.node_name.clone();
    let l = ctx.agent.local.lock();
    l.checks
        .iter()
        .map(|(k, c)| {
            let mut check = c.check.clone();
            check.node = node.clone();
            if let Some(s) = l.services.get(&check.service_id) {
                check.service_name = s.service.service.clone();
                check.service_tags = s.service.tags.clone();
            }
            (k.clone(), convert::check(&check))
        })
        .collect()
}

pub async fn checks(ctx: &Ctx) -> HttpResult {
    let acl = super::acl_filter::AclFilter::new(&ctx.identity);
    let mut checks = local_checks(ctx);
    checks.retain(|_, c| acl.check(&c.node, &c.service_name));
    let mut json = serde_json::to_value(checks).unwrap_or_default();
    if let Some(f) = ctx.read_opts()?.filter {
        super::apply_filter(&mut json, &f);
    }
    Ok(acl.mark(Reply { status: 200, body: Body::Json(json), headers: vec![] }))
}

/// Local aggregated health of a service by name or ID (200 passing, 429 warning, 503 critical).
pub async fn health(ctx: &Ctx, name: Option<&str>, id: Option<&str>) -> HttpResult {
    let services = local_services(ctx, true);
    for s in services.values().filter(|s| name.is_none_or(|n| s.service == n) && id.is_none_or(|i| s.id == i)) {
        ctx.identity.require(Resource::Service, &s.service, Access::Read)?;
    }
    let checks = local_checks(ctx);
    let node_checks: Vec<api::HealthCheck> = checks.values().filter(|c| c.service_id.is_empty()).cloned().collect();
    let entries: Vec<(api::AgentService, Vec<api::HealthCheck>, &'static str)> = services
        .values()
        .filter(|s| name.is_none_or(|n| s.service == n) && id.is_none_or(|i| s.id == i))
        .map(|s| {
            let mut cs: Vec<api::HealthCheck> = checks.values().filter(|c| c.service_id == s.id).cloned().collect();
            let mut all = cs.clone();
            all.extend(node_checks.iter().cloned());
            let status = api::types::aggregated_status(&all);
            cs.extend(node_checks.iter().cloned());
            (s.clone(), cs, status)
        })
        .collect();
    let text = ctx.query.get("format") == Some("text");
    if entries.is_empty() {
        let msg = match (name, id) {
            (Some(n), _) => format!("ServiceName {n} Not found"),
            (_, Some(i)) => format!("ServiceId {i} not found"),
            _ => "not found".into(),
        };
        return Err(HttpError::NotFound(msg));
    }
    let worst = {
        let rank = |s: &str| match s {
            "maintenance" => 3,
            "critical" => 2,
            "warning" => 1,
            _ => 0,
        };
        entries.iter().map(|e| e.2).max_by_key(|s| rank(s)).unwrap_or("passing")
    };
    let code = match worst {
        "passing" => 200,
        "warning" => 429,
        _ => 503,
    };
    if text {
        return Ok(Reply::text(code, worst));
    }
    let body: Value = if id.is_some() {
        let (s, c, st) = &entries[0];
        json!({"AggregatedStatus": st, "Service": s, "Checks": c})
    } else {
        Value::Array(
            entries.iter().map(|(s, c, st)| json!({"AggregatedStatus": st, "Service": s, "Checks": c})).collect(),
        )
    };
    let mut reply = Reply::json(&body);
    reply.status = code;
    Ok(reply)
}

pub async fn reload(ctx: &Ctx) -> HttpResult {
    ctx.agent.reload().await.map_err(HttpError::Internal)?;
    Ok(Reply::empty())
}

pub async fn maintenance(ctx: &Ctx, service: Option<&str>) -> HttpResult {
    let enable = match ctx.query.get("enable") {
        None => return Err(HttpError::BadRequest("Missing value for enable".into())),
        Some("true") => true,
        Some("false") => false,
        Some(_) => return Err(HttpError::BadRequest("Invalid value for enable".into())),
    };
    let reason = ctx.query.get("reason").unwrap_or("");
    if let Some(id) = service {
        let name = local_service_name(ctx, id).unwrap_or_default();
        ctx.identity.require(Resource::Service, &name, Access::Write)?;
    }
    ctx.agent.set_maintenance(service, enable, reason).await?;
    Ok(Reply::empty())
}

pub async fn join(ctx: &Ctx, addr: &str) -> HttpResult {
    if ctx.query.flag("wan")? {
        crate::serf::join_wan(&ctx.agent, addr).await.map_err(HttpError::Internal)?;
        return Ok(Reply::empty());
    }
    let g = ctx.agent.gossip.get().ok_or_else(|| HttpError::Internal("gossip is not running".into()))?;
    g.join(&[addr.to_string()]).await.map_err(HttpError::Internal)?;
    Ok(Reply::empty())
}

pub async fn leave(ctx: &Ctx) -> HttpResult {
    let agent = ctx.agent.clone();
    // Answer first; the graceful leave and the shutdown follow.
    tokio::spawn(async move { agent.leave().await });
    Ok(Reply::empty())
}

pub async fn force_leave(ctx: &Ctx, node: &str) -> HttpResult {
    if node == ctx.agent.config.node_name {
        return Err(HttpError::BadRequest(format!("cannot force-leave the local node {node}")));
    }
    let prune = ctx.query.flag("prune")?;
    let pool = if ctx.query.flag("wan")? { ctx.agent.gossip_wan.get() } else { ctx.agent.gossip.get() };
    match pool {
        Some(g) => g
            .force_leave(node, prune)
            .map_err(|_| HttpError::Internal(format!("agent: No node found with name '{node}'")))?,
        None => return Err(HttpError::Internal(format!("agent: No node found with name '{node}'"))),
    }
    Ok(Reply::empty())
}

pub async fn service_register(ctx: &Ctx) -> HttpResult {
    let v = ctx.typed_body(super::shape::SERVICE_DEFINITION)?;
    if !v.is_object() {
        return Err(HttpError::BadRequest("Request decode failed: expected a service definition object".into()));
    }
    let (svc, checks) = crate::defs::service(&v, &ctx.agent.config.node_name)?;
    let replace = ctx.query.flag("replace-existing-checks")?;
    let sidecar = sidecar_for(ctx, &svc)?;
    ctx.identity.require(Resource::Service, &svc.service, Access::Write)?;
    if let Some(sc) = &sidecar {
        ctx.identity.require(Resource::Service, &sc.service, Access::Write)?;
    }
    let token = ctx.identity.secret.clone();
    ctx.agent.register_service(svc, checks, replace, &token).await?;
    if let Some(sidecar) = sidecar {
        ctx.agent.register_service(sidecar, vec![], replace, &token).await?;
    }
    Ok(Reply::empty())
}

/// `Connect.SidecarService`: Consul registers a companion `<id>-sidecar-proxy` service of kind
/// connect-proxy pointing at the service, on a port from 21000-21255 unless one is given.
fn sidecar_for(ctx: &Ctx, svc: &Service) -> Result<Option<Service>, HttpError> {
    let Some(spec) = svc.connect.as_ref().and_then(|c| c.get("SidecarService")).filter(|s| s.is_object()) else {
        return Ok(None);
    };
    let id = format!("{}-sidecar-proxy", svc.id);
    let given = crate::defs::u(spec, "Port")? as u16;
    let port = if given > 0 {
        given
    } else {
        let used: Vec<u16> =
            ctx.agent.local.lock().services.values().filter(|s| s.service.id != id).map(|s| s.service.port).collect();
        (21000..=21255)
            .find(|p| !used.contains(p))
            .ok_or_else(|| HttpError::BadRequest("No sidecar proxy port available in 21000-21255".into()))?
    };
    let proxy = json!({
        "DestinationServiceName": svc.service, "DestinationServiceID": svc.id,
        "LocalServiceAddress": "127.0.0.1", "LocalServicePort": svc.port,
    });
    Ok(Some(Service {
        id,
        service: format!("{}-sidecar-proxy", svc.service),
        kind: "connect-proxy".into(),
        tags: crate::defs::strings(spec, "Tags"),
        port,
        proxy: Some(proxy),
        ..Default::default()
    }))
}

pub async fn service_deregister(ctx: &Ctx, id: &str) -> HttpResult {
    if let Some(name) = local_service_name(ctx, id) {
        ctx.identity.require(Resource::Service, &name, Access::Write)?;
    }
    ctx.agent.deregister_service(id).await?;
    let sidecar = format!("{id}-sidecar-proxy");
    if ctx.agent.local.lock().services.contains_key(&sidecar) {
        ctx.agent.deregister_service(&sidecar).await?;
    }
    Ok(Reply::empty())
}

pub async fn check_register(ctx: &Ctx) -> HttpResult {
    let v = ctx.typed_body(super::shape::CHECK_DEFINITION)?;
    if !v.is_object() {
        return Err(HttpError::BadRequest("Request decode failed: expected a check definition object".into()));
    }
    let check = crate::defs::check(&v, &ctx.agent.config.node_name, None)?;
    match local_service_name(ctx, &check.service_id) {
        Some(name) => ctx.identity.require(Resource::Service, &name, Access::Write)?,
        None => ctx.identity.require(Resource::Node, &ctx.agent.config.node_name, Access::Write)?,
    }
    if check.check_type.is_empty() {
        return Err(HttpError::BadRequest("Invalid check: TTL must be > 0 for TTL checks".into()));
    }
    ctx.agent.register_check(check, &ctx.identity.secret).await.map_err(|e| match e {
        crate::agent::AgentError::NotFound(m) => HttpError::NotFound(m),
        other => other.into(),
    })?;
    Ok(Reply::empty())
}

pub async fn check_deregister(ctx: &Ctx, id: &str) -> HttpResult {
    require_check_write(ctx, id)?;
    ctx.agent.deregister_check(id).await?;
    Ok(Reply::empty())
}

/// pass/warn/fail (`?note=`) or update (`{"Status","Output"}`) of a TTL check.
pub async fn check_ttl(ctx: &Ctx, id: &str, status: Option<Status>) -> HttpResult {
    require_check_write(ctx, id)?;
    let (status, output) = match status {
        Some(s) => (s, ctx.query.get("note").unwrap_or("").to_string()),
        None => {
            let v = ctx.typed_body(super::shape::CHECK_UPDATE)?;
            let st = crate::defs::s(&v, "Status");
            let status =
                Status::parse(&st).ok_or_else(|| HttpError::BadRequest(format!("Invalid check status: \"{st}\"")))?;
            (status, crate::defs::s(&v, "Output"))
        }
    };
    ctx.agent.update_ttl_check(id, status, &output).await?;
    Ok(Reply { status: 200, body: Body::Raw { bytes: Bytes::new(), content_type: "text/plain" }, headers: vec![] })
}

/// `PUT /v1/agent/token/<kind>` `{"Token": "..."}` (the caller has `acl:write`: checked before).
pub async fn set_token(ctx: &Ctx, kind: &str) -> HttpResult {
    let v = ctx.typed_body(super::shape::Go::Struct("agentToken", &[("Token", super::shape::Go::String)]))?;
    let token = crate::defs::s(&v, "Token");
    ctx.agent.acl.set_agent_token(kind, &token).map_err(|e| {
        if e.contains("unknown") {
            HttpError::NotFound(e)
        } else {
            HttpError::Internal(e)
        }
    })?;
    Ok(Reply::empty())
}
