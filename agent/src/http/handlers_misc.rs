//! Status, events, coordinates, operator (Raft, autopilot), snapshots, metrics and monitor.

use super::{Body, Ctx, HttpError, HttpResult, Reply};
use crate::acl::{Access, Resource};
use crate::structs::*;
use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Value};
use std::io::{Read, Write};

fn server(ctx: &Ctx) -> Result<&crate::server::Server, HttpError> {
    ctx.agent.server.as_ref().ok_or_else(|| HttpError::Internal("No known Consul servers".into()))
}

pub async fn status_leader(ctx: &Ctx) -> HttpResult {
    let leader = ctx.agent.server.as_ref().and_then(|s| s.leader()).map(|(_, p)| p.addr).unwrap_or_default();
    Ok(Reply::json(&leader))
}

pub async fn status_peers(ctx: &Ctx) -> HttpResult {
    let s = server(ctx)?;
    let m = s.raft.metrics().borrow().clone();
    let mem = m.membership_config.membership();
    let peers: Vec<String> = mem.voter_ids().filter_map(|id| mem.get_node(&id).map(|p| p.addr.clone())).collect();
    Ok(Reply::json(&peers))
}

pub async fn raft_configuration(ctx: &Ctx) -> HttpResult {
    let s = server(ctx)?;
    let m = s.raft.metrics().borrow().clone();
    let mem = m.membership_config.membership();
    let voters: Vec<u64> = mem.voter_ids().collect();
    let servers: Vec<api::RaftServer> = mem
        .nodes()
        .map(|(id, p)| api::RaftServer {
            id: if p.id.is_empty() { id.to_string() } else { p.id.clone() },
            node: if p.name.is_empty() { "(unknown)".into() } else { p.name.clone() },
            address: p.addr.clone(),
            leader: m.current_leader == Some(*id),
            protocol_version: "3".into(),
            voter: voters.contains(id),
            last_index: m.last_log_index.unwrap_or(0),
        })
        .collect();
    // The index of the log entry that set this configuration (0 for the bootstrap one).
    let index = m.membership_config.log_id().map(|l| l.index).unwrap_or(0);
    Ok(Reply::json(&api::RaftConfiguration { servers, index }))
}

pub async fn raft_remove_peer(ctx: &Ctx) -> HttpResult {
    let s = server(ctx)?;
    let id = ctx.query.get("id").unwrap_or("");
    let address = ctx.query.get("address").unwrap_or("");
    if id.is_empty() && address.is_empty() {
        return Err(HttpError::BadRequest(
            "Must specify either ?id with the server's ID or ?address with IP:port of peer to remove".into(),
        ));
    }
    let m = s.raft.metrics().borrow().clone();
    let mem = m.membership_config.membership().clone();
    let target = mem
        .nodes()
        .find(|(rid, p)| {
            (!id.is_empty() && (p.id == id || rid.to_string() == id)) || (!address.is_empty() && p.addr == address)
        })
        .map(|(rid, _)| *rid);
    let Some(target) = target else {
        let what = if id.is_empty() { format!("address {address:?}") } else { format!("id {id:?}") };
        return Err(HttpError::BadRequest(format!("{what} was not found in the Raft configuration")));
    };
    let voters: std::collections::BTreeSet<u64> = mem.voter_ids().filter(|v| *v != target).collect();
    s.raft.change_membership(voters, false).await.map_err(|e| HttpError::Internal(e.to_string()))?;
    Ok(Reply::empty())
}

fn autopilot_defaults() -> Value {
    json!({
        "CleanupDeadServers": true, "LastContactThreshold": "200ms", "MaxTrailingLogs": 250, "MinQuorum": 0,
        "ServerStabilizationTime": "10s", "RedundancyZoneTag": "", "DisableUpgradeMigration": false,
        "UpgradeVersionTag": "",
    })
}

/// GET/PUT `/v1/operator/autopilot/configuration` (PUT takes `?cas=`), replicated through Raft.
pub async fn autopilot_configuration(ctx: &Ctx) -> HttpResult {
    let need = if ctx.method == http::Method::PUT { Access::Write } else { Access::Read };
    ctx.identity.require(Resource::Operator, "", need)?;
    if ctx.method == http::Method::PUT {
        let body = ctx.typed_body(super::shape::AUTOPILOT_CONFIGURATION)?;
        let Value::Object(given) = body else {
            return Err(HttpError::BadRequest("Request decode failed: expected a configuration object".into()));
        };
        let cas = match ctx.query.get("cas") {
            None => None,
            Some(c) => {
                Some(c.parse::<u64>().map_err(|_| HttpError::BadRequest(format!("Error parsing cas value: {c:?}")))?)
            }
        };
        let mut config =
            ctx.agent.store.read().autopilot.as_ref().map(|(c, _, _)| c.clone()).unwrap_or_else(autopilot_defaults);
        if let Value::Object(m) = &mut config {
            for (k, v) in given {
                if !matches!(k.as_str(), "CreateIndex" | "ModifyIndex") {
                    m.insert(k, v);
                }
            }
        }
        return match ctx.agent.write(Command::AutopilotSet { config, cas }).await? {
            Response::Bool(b) => Ok(Reply::json(&b)),
            other => Err(HttpError::Internal(format!("unexpected answer {other:?}"))),
        };
    }
    ctx.read(|st, ws| {
        ws.table(crate::state::Table::Nodes);
        let (mut config, create, modify) = st.autopilot.clone().unwrap_or((autopilot_defaults(), 1, 1));
        config["CreateIndex"] = json!(create);
        config["ModifyIndex"] = json!(modify);
        (modify, config)
    })
    .await
}

pub async fn autopilot_health(ctx: &Ctx) -> HttpResult {
    let s = server(ctx)?;
    let m = s.raft.metrics().borrow().clone();
    let mem = m.membership_config.membership();
    let voters: Vec<u64> = mem.voter_ids().collect();
    let max_trailing = ctx
        .agent
        .store
        .read()
        .autopilot
        .as_ref()
        .and_then(|(c, _, _)| c.get("MaxTrailingLogs").and_then(Value::as_u64))
        .unwrap_or(250);
    let last = m.last_log_index.unwrap_or(0);
    let members = ctx.agent.members.all();
    let servers: Vec<Value> = mem
        .nodes()
        .map(|(id, p)| {
            let serf = members.iter().find(|mb| mb.name == p.name).map(|mb| mb.status.as_str()).unwrap_or("none");
            let leader = m.current_leader == Some(*id);
            // The leader knows how far each server's log matches its own.
            let matched = match &m.replication {
                Some(r) => r.get(id).copied().flatten().map(|l| l.index),
                None => Some(last),
            };
            let healthy = serf == "alive" && (leader || matched.is_some_and(|i| i + max_trailing >= last));
            json!({
                "ID": p.id, "Name": p.name, "Address": p.addr, "SerfStatus": serf,
                "Version": super::handlers_agent::CONSUL_VERSION, "Leader": leader, "LastContact": "0s",
                "LastTerm": m.current_term, "LastIndex": if leader { last } else { matched.unwrap_or(0) },
                "Healthy": healthy, "Voter": voters.contains(id), "StableSince": "",
            })
        })
        .collect();
    let healthy_voters = servers.iter().filter(|v| v["Healthy"] == true && v["Voter"] == true).count();
    let quorum = voters.len() / 2 + 1;
    let healthy = healthy_voters >= quorum && servers.iter().all(|v| v["Healthy"] == true);
    let mut reply = Reply::json(&json!({
        "Healthy": healthy,
        "FailureTolerance": healthy_voters.saturating_sub(quorum),
        "Servers": servers,
    }));
    if !healthy {
        reply.status = 429;
    }
    Ok(reply)
}

pub async fn event_fire(ctx: &Ctx, name: &str) -> HttpResult {
    if name.starts_with('_') {
        return Err(HttpError::BadRequest(format!("Event name {name:?} is reserved: names may not start with '_'")));
    }
    let q = &ctx.query;
    let payload =
        if ctx.body.is_empty() { None } else { Some(base64::engine::general_purpose::STANDARD.encode(&ctx.body)) };
    let answer = api::UserEvent {
        id: uuid::Uuid::new_v4().to_string(),
        name: name.to_string(),
        payload,
        node_filter: q.get("node").unwrap_or("").to_string(),
        service_filter: q.get("service").unwrap_or("").to_string(),
        tag_filter: q.get("tag").unwrap_or("").to_string(),
        version: 1,
        // Consul answers with LTime 0: the Lamport time is assigned when the event is gossiped.
        ltime: 0,
    };
    // Listed here at once; gossip takes it to every other agent (and back here, where the
    // duplicate is dropped).
    ctx.agent.record_event(answer.clone());
    if let Some(g) = ctx.agent.gossip.get() {
        g.fire_event(answer.clone());
    }
    Ok(Reply::json(&answer))
}

pub async fn event_list(ctx: &Ctx) -> HttpResult {
    let opts = ctx.read_opts()?;
    let name = ctx.query.get("name").unwrap_or("").to_string();
    let deadline = tokio::time::Instant::now() + opts.wait;
    let mut changed = ctx.agent.events_changed.subscribe();
    loop {
        let list: Vec<api::UserEvent> = {
            let ev = ctx.agent.events.lock();
            ev.list
                .iter()
                .filter(|e| name.is_empty() || e.name == name)
                .filter(|e| ctx.identity.allows(Resource::Event, &e.name, Access::Read))
                .cloned()
                .collect()
        };
        let index = list.last().map(|e| crate::agent::event_index(&e.id)).unwrap_or(0).max(1);
        if opts.index == 0 || index != opts.index || tokio::time::Instant::now() >= deadline {
            return Ok(Reply::json(&list).header(api::query::HEADER_INDEX, index.to_string()));
        }
        tokio::select! {
            _ = changed.changed() => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

fn coord() -> Value {
    json!({"Vec": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], "Error": 1.5, "Adjustment": 0.0, "Height": 1.0e-5})
}

pub async fn coordinate_datacenters(ctx: &Ctx) -> HttpResult {
    let servers: Vec<Value> = ctx
        .agent
        .store
        .read()
        .all_services()
        .filter(|(_, s)| s.id == "consul")
        .map(|(n, _)| json!({"Node": format!("{n}.{}", ctx.agent.config.datacenter), "Coord": coord()}))
        .collect();
    Ok(Reply::json(&json!([{"Datacenter": ctx.agent.config.datacenter, "AreaID": "WAN", "Coordinates": servers}])))
}

pub async fn coordinate_nodes(ctx: &Ctx) -> HttpResult {
    let acl = super::acl_filter::AclFilter::new(&ctx.identity);
    let reply = ctx
        .read(|st, ws| {
            ws.table(crate::state::Table::Nodes);
            acl.reset();
            let list: Vec<Value> = st
                .nodes
                .keys()
                .filter(|n| acl.node(n))
                .map(|n| json!({"Node": n, "Segment": "", "Coord": st.coordinates.get(n).cloned().unwrap_or_else(coord)}))
                .collect();
            (st.index.nodes.max(st.index.coordinates), list)
        })
        .await?;
    Ok(acl.mark(reply))
}

/// `PUT /v1/coordinate/update`: the body is checked as Consul checks it; coordinates are not
/// kept (every node is answered with the origin, see `coord`).
pub async fn coordinate_update(ctx: &Ctx) -> HttpResult {
    let v = ctx.typed_body(super::shape::COORDINATE_UPDATE)?;
    let node = crate::defs::s(&v, "Node");
    if node.is_empty() {
        return Err(HttpError::BadRequest("Missing node name".into()));
    }
    ctx.identity.require(Resource::Node, &node, Access::Write)?;
    let Some(c) = v.get("Coord").filter(|c| c.is_object()) else {
        return Err(HttpError::BadRequest("Missing coordinate".into()));
    };
    let dims = c.get("Vec").and_then(Value::as_array).map(Vec::len).unwrap_or(0);
    if dims != COORD_DIMENSIONS {
        return Err(HttpError::Internal("rpc error: incompatible coordinate".into()));
    }
    let coord = c.clone();
    ctx.agent.write(crate::structs::Command::CoordinateBatch(vec![(node, coord)])).await?;
    Ok(Reply::json(&true))
}

/// Vivaldi's dimensionality in Consul's (and Serf's) default configuration.
const COORD_DIMENSIONS: usize = 8;

pub async fn coordinate_node(ctx: &Ctx, node: &str) -> HttpResult {
    let reply = ctx
        .read(|st, ws| {
            ws.table(crate::state::Table::Nodes);
            ws.table(crate::state::Table::Coordinates);
            // A node's own coordinate, the origin for a catalog node without one; the servers'
            // WAN names (`node.dc`) have one once it was posted.
            let c = st.coordinates.get(node).cloned().or_else(|| st.nodes.get(node).map(|_| coord()));
            let list: Vec<Value> = c.map(|c| json!({"Node": node, "Segment": "", "Coord": c})).into_iter().collect();
            (st.index.nodes.max(st.index.coordinates), list)
        })
        .await?;
    if matches!(&reply.body, Body::Json(Value::Array(a)) if a.is_empty()) {
        return Ok(Reply {
            status: 404,
            body: Body::Raw { bytes: Bytes::new(), content_type: "text/plain" },
            headers: reply.headers,
        });
    }
    Ok(reply)
}

pub async fn snapshot_save(ctx: &Ctx) -> HttpResult {
    let s = server(ctx)?;
    if !ctx.query.has("stale") {
        s.prepare_read(crate::server::Consistency::Default).await?;
    }
    let state = ctx.agent.store.snapshot();
    let index = state.last_index.max(1);
    let json = serde_json::to_vec(&state).map_err(|e| HttpError::Internal(e.to_string()))?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&json).map_err(|e| HttpError::Internal(e.to_string()))?;
    let bytes = gz.finish().map_err(|e| HttpError::Internal(e.to_string()))?;
    Ok(Reply {
        status: 200,
        body: Body::Raw { bytes: Bytes::from(bytes), content_type: "application/x-gzip" },
        headers: vec![],
    }
    .header(api::query::HEADER_INDEX, index.to_string()))
}

pub async fn snapshot_restore(ctx: &Ctx) -> HttpResult {
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(&ctx.body[..])
        .read_to_end(&mut json)
        .map_err(|e| HttpError::BadRequest(format!("failed to read snapshot: {e}")))?;
    let state: crate::state::State =
        serde_json::from_slice(&json).map_err(|e| HttpError::BadRequest(format!("failed to decode snapshot: {e}")))?;
    ctx.agent.write(Command::Restore(Box::new(state))).await?;
    Ok(Reply::empty())
}

/// Go's `sys_bytes` is what the runtime got from the OS; ours is the resident set.
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

/// Go's `alloc_bytes` counts live heap objects. glibc's `mallinfo2` gives the bytes of its chunks
/// in use (their headers and rounding included), without the freed memory it keeps, which the
/// resident set also holds: that part varied by 10 MB after the same writes.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn alloc_bytes() -> u64 {
    // SAFETY: mallinfo2 takes no arguments and only reads the allocator's bookkeeping, under its
    // arenas' locks.
    let m = unsafe { libc::mallinfo2() };
    (m.uordblks + m.hblkhd) as u64
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn alloc_bytes() -> u64 {
    rss_bytes()
}

pub async fn metrics(ctx: &Ctx) -> HttpResult {
    let (nodes, services, checks, kv, sessions, last) = {
        let st = ctx.agent.store.read();
        (
            st.nodes.len(),
            st.all_services().count(),
            st.all_checks().count(),
            st.kv.len(),
            st.sessions.len(),
            st.last_index,
        )
    };
    let requests = ctx.agent.requests.load(std::sync::atomic::Ordering::Relaxed);
    let gauges: Vec<(&str, f64)> = vec![
        ("consul.runtime.alloc_bytes", alloc_bytes() as f64),
        ("consul.runtime.sys_bytes", rss_bytes() as f64),
        ("consul.state.nodes", nodes as f64),
        ("consul.state.services", services as f64),
        ("consul.state.checks", checks as f64),
        ("consul.state.kv_entries", kv as f64),
        ("consul.state.sessions", sessions as f64),
        ("consul.raft.applied_index", last as f64),
        ("consul.agent.uptime_seconds", ctx.agent.started.elapsed().as_secs_f64()),
        ("consul.state.watch_channels", ctx.agent.store.watches().channel_count() as f64),
    ];
    let counters: Vec<(&str, f64)> = vec![("consul.http.requests", requests as f64)];
    let wants_prom = ctx.query.get("format") == Some("prometheus")
        || ctx.accept.as_deref().is_some_and(|a| a.contains("openmetrics"));
    if wants_prom {
        let mut out = String::new();
        for (name, v) in &gauges {
            let n = name.replace('.', "_");
            out.push_str(&format!("# HELP {n} {name}\n# TYPE {n} gauge\n{n} {v}\n"));
        }
        for (name, v) in &counters {
            let n = name.replace('.', "_");
            out.push_str(&format!("# HELP {n} {name}\n# TYPE {n} counter\n{n} {v}\n"));
        }
        return Ok(Reply {
            status: 200,
            body: Body::Raw { bytes: Bytes::from(out), content_type: "text/plain; version=0.0.4; charset=utf-8" },
            headers: vec![],
        });
    }
    let ts = chrono_like_timestamp();
    Ok(Reply::json(&json!({
        "Timestamp": ts,
        "Gauges": gauges.iter().map(|(n, v)| json!({"Name": n, "Value": v, "Labels": {}})).collect::<Vec<_>>(),
        "Points": [],
        "Counters": counters.iter().map(|(n, v)| json!({"Name": n, "Count": *v as u64, "Sum": v, "Min": 1, "Max": 1, "Mean": 1, "Stddev": 0, "Labels": {}})).collect::<Vec<_>>(),
        "Samples": [],
    })))
}

/// `2006-01-02 15:04:05 +0000 UTC`, Consul's metrics timestamp, without a date-time crate.
fn chrono_like_timestamp() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let days = secs / 86400;
    let rem = secs % 86400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719468;
    let era = z.div_euclid(146097);
    let doe = z.rem_euclid(146097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} +0000 UTC", rem / 3600, (rem % 3600) / 60, rem % 60)
}

pub async fn monitor(ctx: &Ctx) -> HttpResult {
    if let Some(level) = ctx.query.get("loglevel") {
        if !["", "trace", "debug", "info", "warn", "err", "error"].contains(&level.to_lowercase().as_str()) {
            return Err(HttpError::BadRequest(format!("Unknown log level: {level}")));
        }
    }
    let mut logs = crate::telemetry::subscribe();
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    tokio::spawn(async move {
        loop {
            match logs.recv().await {
                Ok(line) => {
                    if tx.send(Bytes::from(line)).await.is_err() {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            }
        }
    });
    Ok(Reply { status: 200, body: Body::Stream(rx), headers: vec![] })
}

pub async fn host(ctx: &Ctx) -> HttpResult {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string();
    let mem_total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok())))
        .unwrap_or(0)
        * 1024;
    Ok(Reply::json(&json!({
        "Memory": {"total": mem_total},
        "CPU": [],
        "Host": {"hostname": hostname, "os": std::env::consts::OS, "uptime": ctx.agent.started.elapsed().as_secs()},
        "Disk": {},
        "CollectionTime": 0,
        "Errors": null,
    })))
}

pub async fn version(_ctx: &Ctx) -> HttpResult {
    Ok(Reply::json(&json!({
        "SHA": "agent-rs", "BuildDate": "", "HumanVersion": super::handlers_agent::CONSUL_VERSION, "FIPS": "",
    })))
}

/// `/v1/operator/usage`: counts of nodes, services and instances in this datacenter.
pub async fn usage(ctx: &Ctx) -> HttpResult {
    let dc = ctx.agent.config.datacenter.clone();
    ctx.read(|st, ws| {
        ws.table(crate::state::Table::Services);
        ws.table(crate::state::Table::Nodes);
        let instances = st.all_services().count();
        let names: std::collections::BTreeSet<&str> = st.all_services().map(|(_, s)| s.service.as_str()).collect();
        let connect = st.all_services().filter(|(_, s)| s.kind == "connect-proxy").count();
        let usage = json!({
            "Nodes": st.nodes.len(),
            "Services": names.len(),
            "ServiceInstances": instances,
            "ConnectServiceInstances": {"connect-proxy": connect, "connect-native": 0},
            "BillableServiceInstances": instances - connect,
        });
        (
            st.catalog_index(),
            json!({"Usage": {dc.clone(): usage}, "KnownLeader": true, "LastContact": 0, "Index": st.catalog_index()}),
        )
    })
    .await
}

/// `/v1/operator/keyring`: the gossip keys. Without `-encrypt` there is no keyring, which
/// Consul reports as a server error.
pub async fn keyring(ctx: &Ctx) -> HttpResult {
    let need = if ctx.method == http::Method::GET { Access::Read } else { Access::Write };
    ctx.identity.require(Resource::Keyring, "", need)?;
    let Some(key) = ctx.agent.config.encrypt.clone() else {
        return Err(HttpError::Internal(
            "keyring operations are not available: gossip encryption is not enabled".into(),
        ));
    };
    if ctx.method != http::Method::GET {
        return Err(HttpError::Internal(
            "keyring changes are not supported yet; restart the agents with the new -encrypt key".into(),
        ));
    }
    let dc = ctx.agent.config.datacenter.clone();
    let keys = json!({ key.clone(): 1 });
    Ok(Reply::json(&json!([
        {"WAN": true, "Datacenter": dc, "Segment": "", "Keys": keys, "PrimaryKeys": keys, "NumNodes": 1},
        {"WAN": false, "Datacenter": dc, "Segment": "", "Keys": keys, "PrimaryKeys": keys, "NumNodes": 1},
    ])))
}

/// `/v1/operator/raft/transfer-leader`: needs another voter to hand leadership to.
pub async fn transfer_leader(ctx: &Ctx) -> HttpResult {
    let s = server(ctx)?;
    let m = s.raft.metrics().borrow().clone();
    let others = m.membership_config.membership().voter_ids().filter(|id| *id != s.node_id).count();
    if others == 0 {
        return Err(HttpError::Internal("cannot find peer to transfer leadership to".into()));
    }
    Err(HttpError::Internal("leadership transfer is not supported by this agent yet".into()))
}
