//! `/v1/catalog/*`, `/v1/health/*` and the UI's `/v1/internal/ui/*` summaries.

use super::acl_filter::AclFilter;
use super::{convert, Ctx, HttpError, HttpResult, Reply};
use crate::acl::commands::authorize;
use crate::defs::{s, string_map};
use crate::state::{State, Table};
use crate::structs::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

pub fn parse_node(v: &Value, dc: &str) -> Result<Node, HttpError> {
    let mut tagged = BTreeMap::new();
    if let Some(Value::Object(m)) = v.get("TaggedAddresses") {
        for (k, x) in m {
            tagged.insert(k.clone(), x.as_str().unwrap_or_default().to_string());
        }
    }
    let datacenter = match s(v, "Datacenter") {
        d if d.is_empty() => dc.to_string(),
        d => d,
    };
    Ok(Node {
        id: s(v, "ID"),
        node: s(v, "Node"),
        address: s(v, "Address"),
        datacenter,
        tagged_addresses: tagged,
        meta: string_map(v, "NodeMeta"),
        ..Default::default()
    })
}

fn catalog_service_def(v: &Value, node: &str) -> Result<Service, HttpError> {
    // The catalog names a service with `Service` where the agent API says `Name`.
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        if !m.contains_key("Name") {
            if let Some(x) = m.get("Service").cloned() {
                m.insert("Name".into(), x);
            }
        }
    }
    let (svc, _) = crate::defs::service(&v, node)?;
    Ok(svc)
}

/// A body's `Datacenter` names where the write goes; we only reach our own.
fn check_body_dc(ctx: &Ctx, v: &Value) -> Result<(), HttpError> {
    let dc = s(v, "Datacenter");
    if !dc.is_empty() && !dc.eq_ignore_ascii_case(&ctx.agent.config.datacenter) {
        return Err(HttpError::Internal("No path to datacenter".into()));
    }
    Ok(())
}

pub async fn register(ctx: &Ctx) -> HttpResult {
    let v = ctx.typed_body(super::shape::REGISTER_REQUEST)?;
    check_body_dc(ctx, &v)?;
    let dc = ctx.agent.config.datacenter.clone();
    let node = parse_node(&v, &dc)?;
    if node.node.is_empty() {
        return Err(HttpError::BadRequest("Must provide node".into()));
    }
    let skip = crate::defs::b(&v, "SkipNodeUpdate");
    if node.address.is_empty() && !skip {
        return Err(HttpError::BadRequest("Must provide address".into()));
    }
    let service = match v.get("Service").filter(|x| x.is_object()) {
        Some(sv) => Some(catalog_service_def(sv, &node.node)?),
        None => None,
    };
    let mut check_values: Vec<&Value> = Vec::new();
    if let Some(c) = v.get("Check").filter(|c| c.is_object()) {
        check_values.push(c);
    }
    if let Some(Value::Array(a)) = v.get("Checks") {
        check_values.extend(a.iter());
    }
    let mut checks = Vec::new();
    for cv in check_values {
        let mut c = crate::defs::check(cv, &node.node, None)?;
        if let Some(def) = cv.get("Definition").filter(|d| d.is_object()) {
            c.definition = crate::defs::check_definition(def).unwrap_or_default();
            c.check_type = c.definition.kind().to_string();
        }
        checks.push(c);
    }
    let cmd = Command::Register(RegisterRequest { node, service, checks, skip_node_update: skip });
    authorize(&ctx.identity, &cmd, &ctx.agent.store.read())?;
    match ctx.agent.write(cmd).await? {
        Response::Error(e) => Err(HttpError::BadRequest(e)),
        _ => Ok(Reply::json(&true)),
    }
}

pub async fn deregister(ctx: &Ctx) -> HttpResult {
    let v = ctx.typed_body(super::shape::DEREGISTER_REQUEST)?;
    check_body_dc(ctx, &v)?;
    let node = s(&v, "Node");
    if node.is_empty() {
        return Err(HttpError::BadRequest("Must provide node".into()));
    }
    let opt = |k: &str| Some(s(&v, k)).filter(|x| !x.is_empty());
    let cmd = Command::Deregister(DeregisterRequest { node, service_id: opt("ServiceID"), check_id: opt("CheckID") });
    authorize(&ctx.identity, &cmd, &ctx.agent.store.read())?;
    ctx.agent.write(cmd).await?;
    Ok(Reply::json(&true))
}

/// `?node-meta=key:value` filters (repeatable, AND).
fn node_meta_filter(ctx: &Ctx) -> Vec<(String, String)> {
    ctx.query
        .all("node-meta")
        .into_iter()
        .map(|kv| {
            let (k, v) = kv.split_once(':').unwrap_or((kv, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn meta_matches(n: &Node, filter: &[(String, String)]) -> bool {
    filter.iter().all(|(k, v)| n.meta.get(k) == Some(v))
}

pub async fn nodes(ctx: &Ctx) -> HttpResult {
    let mf = node_meta_filter(ctx);
    let acl = AclFilter::new(&ctx.identity);
    let reply = ctx
        .read(|st, ws| {
            ws.table(Table::Nodes);
            acl.reset();
            let list: Vec<api::Node> =
                st.nodes.values().filter(|n| meta_matches(n, &mf) && acl.node(&n.node)).map(convert::node).collect();
            (st.index.nodes, list)
        })
        .await?;
    Ok(acl.mark(reply))
}

pub async fn services(ctx: &Ctx) -> HttpResult {
    let mf = node_meta_filter(ctx);
    // `?filter` applies to each service instance before the name → tags summary is built.
    let filter = ctx.read_opts()?.filter;
    let acl = AclFilter::new(&ctx.identity);
    let (headers, out, _) = ctx
        .read_value(|st, ws| {
            ws.table(Table::Services);
            ws.table(Table::Nodes);
            acl.reset();
            let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for (node, svc) in st.all_services() {
                if !acl.instance(node, &svc.service) {
                    continue;
                }
                if let Some(n) = st.nodes.get(node) {
                    if !meta_matches(n, &mf) {
                        continue;
                    }
                }
                if let (Some(f), Some(n)) = (&filter, st.nodes.get(node)) {
                    let v = serde_json::to_value(convert::catalog_service(n, svc)).unwrap_or_default();
                    if !f.matches(&v) {
                        continue;
                    }
                }
                out.entry(svc.service.clone()).or_default().extend(svc.tags.iter().cloned());
            }
            let out: BTreeMap<String, Vec<String>> =
                out.into_iter().map(|(k, v)| (k, v.into_iter().collect())).collect();
            (st.index.services, out)
        })
        .await?;
    Ok(acl.mark(Reply::json(&out).with_headers(headers)))
}

fn has_tags(svc: &Service, tags: &[&str]) -> bool {
    tags.iter().all(|t| svc.tags.iter().any(|x| x == t))
}

/// Instances that answer for `name`: the service itself, or (for Connect) the proxies in front of
/// it and Connect-native instances.
fn instances<'a>(st: &'a State, name: &'a str, connect: bool) -> Vec<(&'a Node, &'a Service)> {
    if !connect {
        return st.service_instances(name).collect();
    }
    st.all_services()
        .filter_map(|(node, s)| st.nodes.get(node).map(|n| (n, s)))
        .filter(|(_, s)| {
            let proxy_for = s.kind == "connect-proxy"
                && s.proxy.as_ref().and_then(|p| p.get("DestinationServiceName")).and_then(|d| d.as_str())
                    == Some(name);
            let native = s.service == name
                && s.connect.as_ref().and_then(|c| c.get("Native")).and_then(|n| n.as_bool()) == Some(true);
            proxy_for || native
        })
        .collect()
}

/// We have no cluster peers: a `?peer=` query matches nothing.
fn peer_query(ctx: &Ctx) -> bool {
    ctx.query.get("peer").is_some_and(|p| !p.is_empty())
}

/// Endpoints of features this agent has no data for (gateways, ingress): an empty list.
pub async fn empty_list(ctx: &Ctx) -> HttpResult {
    ctx.read(|st, ws| {
        ws.table(Table::Services);
        (st.index.services, Vec::<Value>::new())
    })
    .await
}

pub async fn service(ctx: &Ctx, name: &str, connect: bool) -> HttpResult {
    let peer = peer_query(ctx);
    let tags: Vec<String> = ctx.query.all("tag").into_iter().map(str::to_string).collect();
    let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
    let mf = node_meta_filter(ctx);
    let acl = AclFilter::new(&ctx.identity);
    let reply = ctx
        .read(|st, ws| {
            ws.service(name);
            acl.reset();
            if peer {
                return (st.service_index(name), vec![]);
            }
            let list: Vec<api::CatalogService> = instances(st, name, connect)
                .into_iter()
                .filter(|(n, s)| has_tags(s, &tags) && meta_matches(n, &mf) && acl.instance(&n.node, &s.service))
                .map(|(n, s)| convert::catalog_service(n, s))
                .collect();
            (st.service_index(name), list)
        })
        .await?;
    Ok(acl.mark(reply))
}

pub async fn node(ctx: &Ctx, name: &str, as_list: bool) -> HttpResult {
    let dc = ctx.agent.config.datacenter.clone();
    // `?filter` applies to the node's services, not to the document.
    let filter = ctx.read_opts()?.filter;
    let acl = AclFilter::new(&ctx.identity);
    let keep = |s: &api::AgentService| {
        acl.service(&s.service)
            && filter.as_ref().is_none_or(|f| f.matches(&serde_json::to_value(s).unwrap_or_default()))
    };
    let (headers, v, _) = ctx
        .read_value(|st, ws| {
            ws.node(name);
            ws.table(Table::Nodes);
            let index = st.index.nodes.max(st.index.services);
            let Some(n) = st.nodes.get(name) else { return (index, Value::Null) };
            let v = if as_list {
                let services: Vec<api::AgentService> =
                    st.node_services(name).map(|s| convert::service(s, &dc)).filter(|s| keep(s)).collect();
                json!({"Node": convert::node(n), "Services": services})
            } else {
                let services: BTreeMap<String, api::AgentService> = st
                    .node_services(name)
                    .map(|s| (s.id.clone(), convert::service(s, &dc)))
                    .filter(|(_, s)| keep(s))
                    .collect();
                json!({"Node": convert::node(n), "Services": services})
            };
            (index, v)
        })
        .await?;
    Ok(acl.mark(Reply::json(&v).with_headers(headers)))
}

pub async fn health_node(ctx: &Ctx, name: &str) -> HttpResult {
    let acl = AclFilter::new(&ctx.identity);
    let reply = ctx
        .read(|st, ws| {
            ws.node(name);
            ws.table(Table::Checks);
            acl.reset();
            let list: Vec<api::HealthCheck> =
                st.node_checks(name).filter(|c| acl.check(&c.node, &c.service_name)).map(convert::check).collect();
            (st.index.checks, list)
        })
        .await?;
    Ok(acl.mark(reply))
}

pub async fn health_checks(ctx: &Ctx, service: &str) -> HttpResult {
    let mf = node_meta_filter(ctx);
    let acl = AclFilter::new(&ctx.identity);
    let reply = ctx
        .read(|st, ws| {
            ws.service(service);
            acl.reset();
            let list: Vec<api::HealthCheck> = st
                .all_checks()
                .filter(|c| c.service_name == service)
                .filter(|c| st.nodes.get(&c.node).is_none_or(|n| meta_matches(n, &mf)))
                .filter(|c| acl.check(&c.node, &c.service_name))
                .map(convert::check)
                .collect();
            (st.service_index(service), list)
        })
        .await?;
    Ok(acl.mark(reply))
}

pub fn service_entries(
    st: &State,
    name: &str,
    tags: &[&str],
    passing_only: bool,
    dc: &str,
    connect: bool,
) -> Vec<api::ServiceEntry> {
    instances(st, name, connect)
        .into_iter()
        .filter(|(_, s)| has_tags(s, tags))
        .filter_map(|(n, s)| {
            let checks: Vec<&Check> = st.instance_checks(&n.node, &s.id).collect();
            if passing_only && checks.iter().any(|c| c.status() != Status::Passing) {
                return None;
            }
            Some(api::ServiceEntry {
                node: convert::node(n),
                service: convert::service(s, dc),
                checks: checks.into_iter().map(convert::check).collect(),
            })
        })
        .collect()
}

pub async fn health_service(ctx: &Ctx, name: &str, connect: bool) -> HttpResult {
    let peer = peer_query(ctx);
    let passing = ctx.query.flag("passing")?;
    let tags: Vec<String> = ctx.query.all("tag").into_iter().map(str::to_string).collect();
    let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
    let mf = node_meta_filter(ctx);
    let dc = ctx.agent.config.datacenter.clone();
    let acl = AclFilter::new(&ctx.identity);
    let reply = ctx
        .read(|st, ws| {
            ws.service(name);
            acl.reset();
            if peer {
                return (st.service_index(name), vec![]);
            }
            let mut list = service_entries(st, name, &tags, passing, &dc, connect);
            list.retain(|e| mf.iter().all(|(k, v)| e.node.meta.get(k) == Some(v)));
            list.retain(|e| acl.instance(&e.node.node, &e.service.service));
            (st.service_index(name), list)
        })
        .await?;
    Ok(acl.mark(reply))
}

pub async fn health_state(ctx: &Ctx, state: &str) -> HttpResult {
    let want = match state {
        "any" => None,
        s => Some(Status::parse(s).ok_or_else(|| HttpError::BadRequest(format!("Invalid state {s}")))?),
    };
    let mf = node_meta_filter(ctx);
    let acl = AclFilter::new(&ctx.identity);
    let reply = ctx
        .read(|st, ws| {
            ws.table(Table::Checks);
            acl.reset();
            let list: Vec<api::HealthCheck> = st
                .all_checks()
                .filter(|c| want.is_none_or(|w| c.status() == w))
                .filter(|c| st.nodes.get(&c.node).is_none_or(|n| meta_matches(n, &mf)))
                .filter(|c| acl.check(&c.node, &c.service_name))
                .map(convert::check)
                .collect();
            (st.index.checks, list)
        })
        .await?;
    Ok(acl.mark(reply))
}

/// The UI's per-service summary: instances, nodes and check counts at a glance.
pub async fn ui_services(ctx: &Ctx) -> HttpResult {
    let acl = AclFilter::new(&ctx.identity);
    let reply = ctx
        .read(|st, ws| {
            ws.table(Table::Services);
            ws.table(Table::Checks);
            ws.table(Table::Nodes);
            acl.reset();
            let mut by_name: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>, usize, [usize; 3], String)> =
                BTreeMap::new();
            for (node, svc) in st.all_services() {
                if !acl.instance(node, &svc.service) {
                    continue;
                }
                let e = by_name.entry(svc.service.clone()).or_default();
                e.0.insert(node.clone());
                e.1.extend(svc.tags.iter().cloned());
                e.2 += 1;
                e.4 = svc.kind.clone();
                for c in st.instance_checks(node, &svc.id) {
                    match c.status() {
                        Status::Passing => e.3[0] += 1,
                        Status::Warning => e.3[1] += 1,
                        Status::Critical => e.3[2] += 1,
                    }
                }
            }
            let list: Vec<Value> = by_name
                .into_iter()
                .map(|(name, (nodes, tags, count, c, kind))| {
                    json!({
                        "Name": name, "Kind": kind, "Tags": tags, "Nodes": nodes, "InstanceCount": count,
                        "ChecksPassing": c[0], "ChecksWarning": c[1], "ChecksCritical": c[2],
                        "Datacenter": ctx.agent.config.datacenter,
                    })
                })
                .collect();
            (st.catalog_index(), list)
        })
        .await?;
    Ok(acl.mark(reply))
}

/// The UI's node dump: every node with its services and checks (or one node).
pub async fn ui_nodes(ctx: &Ctx, only: Option<&str>) -> HttpResult {
    let dc = ctx.agent.config.datacenter.clone();
    let acl = AclFilter::new(&ctx.identity);
    let reply = ctx
        .read(|st, ws| {
            ws.table(Table::Services);
            ws.table(Table::Checks);
            ws.table(Table::Nodes);
            acl.reset();
            let dump: Vec<Value> = st
                .nodes
                .values()
                .filter(|n| only.is_none_or(|o| o == n.node) && acl.node(&n.node))
                .map(|n| {
                    let mut v = serde_json::to_value(convert::node(n)).unwrap_or_default();
                    let services: Vec<api::AgentService> = st
                        .node_services(&n.node)
                        .filter(|s| acl.service(&s.service))
                        .map(|s| convert::service(s, &dc))
                        .collect();
                    let checks: Vec<api::HealthCheck> = st
                        .node_checks(&n.node)
                        .filter(|c| acl.check(&c.node, &c.service_name))
                        .map(convert::check)
                        .collect();
                    v["Services"] = json!(services);
                    v["Checks"] = json!(checks);
                    v
                })
                .collect();
            let v = match only {
                Some(_) => dump.into_iter().next().unwrap_or(Value::Null),
                None => Value::Array(dump),
            };
            (st.catalog_index(), v)
        })
        .await?;
    Ok(acl.mark(reply))
}
