//! Cluster and catalog commands: `members`, `info`, `join`, `leave`, `force-leave`, `reload`,
//! `operator raft ...`, `catalog ...`, `event`, `maint`, `monitor`.

use super::http::{CallError, Ctx};
use super::table::{columnize, tabwrite};
use super::{ctx_or_exit, err, fail, group_help, out, parse_flags};
use api::{AgentMember, CatalogNode, CatalogService, HealthCheck, Node, RaftConfiguration, UserEvent};
use http::Method;
use regex::Regex;
use serde_json::Value;
use std::collections::BTreeMap;

const MEMBERS_USAGE: &str = "
Usage: agent members [options]

  Outputs the members of a running agent.

Command Options:
  -detailed          Provides detailed information about nodes.
  -status=<string>   If provided, output is filtered to only nodes matching
                     the regular expression for status.
  -wan               List the members in the WAN pool (servers only).
  -segment=<string>  (Enterprise-only) Filter by network segment.
  -filter=<string>   Filter to use with the request.
";

/// Consul's `members` row order and tag fix-ups (command/members): partition `default`,
/// segment `<all>` for servers when listing all segments, `<default>` otherwise; filtered by
/// status regexp; servers first, then default partition, segment, partition, name.
pub(super) fn prepare_members(mut members: Vec<AgentMember>, status: &Regex, all_segments: bool) -> Vec<AgentMember> {
    for m in members.iter_mut() {
        let partition = m.tags.entry("ap".into()).or_default();
        if partition.is_empty() {
            *partition = "default".into();
        }
        let is_server = m.tags.get("role").map(String::as_str) == Some("consul");
        if all_segments && is_server {
            m.tags.insert("segment".into(), "<all>".into());
        } else if m.tags.get("segment").is_none_or(|s| s.is_empty()) {
            m.tags.insert("segment".into(), "<default>".into());
        }
    }
    members.retain(|m| status.is_match(m.status_name()));
    let key = |m: &AgentMember| {
        let tag = |k: &str| m.tags.get(k).cloned().unwrap_or_default();
        let partition = tag("ap");
        (
            tag("role") != "consul",
            !(partition.is_empty() || partition == "default"),
            tag("segment"),
            partition,
            m.name.clone(),
        )
    };
    members.sort_by_key(key);
    members
}

/// `ip:port` as Go's `net.TCPAddr.String()` prints it (IPv6 in brackets).
pub(super) fn member_addr(m: &AgentMember) -> String {
    if m.addr.contains(':') {
        format!("[{}]:{}", m.addr, m.port)
    } else {
        format!("{}:{}", m.addr, m.port)
    }
}

pub(super) fn members_table(members: &[AgentMember], detailed: bool) -> String {
    let mut rows: Vec<Vec<String>> = Vec::with_capacity(members.len() + 1);
    if detailed {
        rows.push(["Node", "Address", "Status", "Tags"].iter().map(|s| s.to_string()).collect());
        for m in members {
            let tags: Vec<String> = m.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            rows.push(vec![m.name.clone(), member_addr(m), m.status_name().into(), tags.join(",")]);
        }
    } else {
        rows.push(
            ["Node", "Address", "Status", "Type", "Build", "Protocol", "DC", "Partition", "Segment"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        );
        for m in members {
            let tag = |k: &str| m.tags.get(k).cloned().unwrap_or_default();
            let mut build = tag("build");
            if build.is_empty() {
                build = "< 0.3".into();
            } else if let Some(i) = build.find(':') {
                build.truncate(i);
            }
            let typ = if tag("role") == "consul" { "server" } else { "client" };
            rows.push(vec![
                m.name.clone(),
                member_addr(m),
                m.status_name().into(),
                typ.into(),
                build,
                tag("vsn"),
                tag("dc"),
                tag("ap"),
                tag("segment"),
            ]);
        }
    }
    columnize(&rows)
}

pub(super) async fn members(args: &[String]) -> i32 {
    let p = parse_flags!(args, &["detailed", "wan"], &["status", "segment", "filter"], MEMBERS_USAGE);
    let status = match Regex::new(p.str("status").unwrap_or(".*")) {
        Ok(r) => r,
        Err(e) => fail!("Failed to compile status regexp: {e}"),
    };
    let ctx = ctx_or_exit!(p);
    let segment = p.str("segment").unwrap_or("_all").to_string();
    let mut extra = vec![("segment".to_string(), segment.clone())];
    if p.bool("wan") {
        extra.push(("wan".into(), "1".into()));
    }
    if let Some(f) = p.str("filter") {
        extra.push(("filter".into(), f.into()));
    }
    let members: Vec<AgentMember> = match ctx.get("/v1/agent/members", &extra, false).await {
        Ok(got) => got.map(|(v, _)| v).unwrap_or_default(),
        Err(e) => fail!("Error retrieving members: {e}"),
    };
    let members = prepare_members(members, &status, segment == "_all");
    if members.is_empty() {
        return 2;
    }
    out(&members_table(&members, p.bool("detailed")));
    0
}

/// `info`: the `Stats` object of `/v1/agent/self`, sections and keys sorted.
pub(super) fn info_text(self_: &Value) -> Result<String, String> {
    let Some(stats) = self_.get("Stats").and_then(Value::as_object) else {
        return Err(format!("Agent response did not contain 'Stats' key: {self_}"));
    };
    let mut s = String::new();
    let sections: BTreeMap<&String, &Value> = stats.iter().collect();
    for (name, vals) in sections {
        s.push_str(&format!("{name}:\n"));
        let Some(vals) = vals.as_object() else {
            return Err(format!("Got invalid subkey in stats: {vals}"));
        };
        let vals: BTreeMap<&String, &Value> = vals.iter().collect();
        for (k, v) in vals {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            s.push_str(&format!("\t{k} = {v}\n"));
        }
    }
    s.pop();
    Ok(s)
}

pub(super) async fn info(args: &[String]) -> i32 {
    let usage = "Usage: agent info [options]\n\n  Provides debugging information for operators";
    let p = parse_flags!(args, &[], &[], usage);
    let ctx = ctx_or_exit!(p);
    let self_: Value = match ctx.get("/v1/agent/self", &[], false).await {
        Ok(got) => got.map(|(v, _)| v).unwrap_or_default(),
        Err(e) => fail!("Error querying agent: {e}"),
    };
    match info_text(&self_) {
        Ok(t) => {
            out(&t);
            0
        }
        Err(e) => fail!("{e}"),
    }
}

pub(super) async fn join(args: &[String]) -> i32 {
    let usage = "
Usage: agent join [options] address ...

  Tells a running agent to join the cluster by specifying at least one
  existing member.

Command Options:
  -wan  Joins a server to another server in the WAN pool.
";
    let p = parse_flags!(args, &["wan"], &[], usage);
    if p.args.is_empty() {
        err("At least one address to join must be specified.");
        fail!("{}", usage.trim_matches('\n'));
    }
    let ctx = ctx_or_exit!(p);
    let extra: Vec<(String, String)> = if p.bool("wan") { vec![("wan".into(), "1".into())] } else { vec![] };
    let mut joins = 0;
    for addr in &p.args {
        match ctx.put(&format!("/v1/agent/join/{addr}"), &extra, None).await {
            Ok(_) => joins += 1,
            Err(e) => err(&format!("Error joining address '{addr}': {e}")),
        }
    }
    if joins == 0 {
        fail!("Failed to join any nodes.");
    }
    out(&format!("Successfully joined cluster by contacting {joins} nodes."));
    0
}

pub(super) async fn leave(args: &[String]) -> i32 {
    let usage = "Usage: agent leave [options]\n\n  Causes the agent to gracefully leave the cluster and shutdown.";
    let p = parse_flags!(args, &[], &[], usage);
    if !p.args.is_empty() {
        err(&format!("Error! Too many arguments (expected 0, got {})", p.args.len()));
        fail!("{usage}");
    }
    let ctx = ctx_or_exit!(p);
    if let Err(e) = ctx.put("/v1/agent/leave", &[], None).await {
        fail!("Error leaving: {e}");
    }
    out("Graceful leave complete");
    0
}

pub(super) async fn force_leave(args: &[String]) -> i32 {
    let usage = "
Usage: agent force-leave [options] name

  Forces a member of the cluster to enter the \"left\" state.

Command Options:
  -prune  Remove agent completely from list of members.
  -wan    Exclusively leave the agent from the WAN serf pool.
";
    let p = parse_flags!(args, &["prune", "wan"], &[], usage);
    if p.args.len() != 1 {
        err("A single node name must be specified to force leave.");
        fail!("{}", usage.trim_matches('\n'));
    }
    let ctx = ctx_or_exit!(p);
    let mut extra = Vec::new();
    if p.bool("prune") {
        extra.push(("prune".to_string(), "1".to_string()));
    }
    if p.bool("wan") {
        extra.push(("wan".to_string(), "1".to_string()));
    }
    if let Err(e) = ctx.put(&format!("/v1/agent/force-leave/{}", p.args[0]), &extra, None).await {
        fail!("Error force leaving: {e}");
    }
    0
}

pub(super) async fn reload(args: &[String]) -> i32 {
    let usage = "Usage: agent reload [options]\n\n  Causes the agent to reload configurations.";
    let p = parse_flags!(args, &[], &[], usage);
    let ctx = ctx_or_exit!(p);
    if let Err(e) = ctx.put("/v1/agent/reload", &[], None).await {
        fail!("Error reloading: {e}");
    }
    out("Configuration reload triggered");
    0
}

// ---- operator ----

const OPERATOR_HELP: &str = "
Usage: agent operator <subcommand> [options]

  Provides cluster-level tools for operators.

Subcommands:
    autopilot    Provides tools for modifying Autopilot configuration
    raft         Provides cluster-level tools for managing Raft
";

const RAFT_HELP: &str = "
Usage: agent operator raft <subcommand> [options]

  Provides tools for working with the Raft subsystem.

Subcommands:
    list-peers     Display the current Raft peer configuration
    remove-peer    Remove a Consul server from the Raft configuration
";

const AUTOPILOT_HELP: &str = "
Usage: agent operator autopilot <subcommand> [options]

Subcommands:
    get-config    Display the current Autopilot configuration
";

pub(super) async fn operator(args: &[String]) -> i32 {
    match (args.first().map(String::as_str), args.get(1).map(String::as_str)) {
        (Some("raft"), Some("list-peers")) => list_peers(&args[2..]).await,
        (Some("raft"), Some("remove-peer")) => remove_peer(&args[2..]).await,
        (Some("raft"), _) => group_help(&args[1..], RAFT_HELP),
        (Some("autopilot"), Some("get-config")) => autopilot_get(&args[2..]).await,
        (Some("autopilot"), _) => group_help(&args[1..], AUTOPILOT_HELP),
        _ => group_help(args, OPERATOR_HELP),
    }
}

/// `operator raft list-peers`: the configuration, with commit indexes from autopilot health
/// (or the configuration's `LastIndex` where health is unavailable).
pub(super) fn peers_table(conf: &RaftConfiguration, last_index: &BTreeMap<String, u64>) -> String {
    let mut rows: Vec<Vec<String>> =
        vec![["Node", "ID", "Address", "State", "Voter", "RaftProtocol", "Commit Index", "Trails Leader By"]
            .iter()
            .map(|s| s.to_string())
            .collect()];
    let leader_last = conf.servers.iter().find(|s| s.leader).and_then(|s| last_index.get(&s.id).copied()).unwrap_or(0);
    for s in &conf.servers {
        let proto = if s.protocol_version.is_empty() { "<=1".to_string() } else { s.protocol_version.clone() };
        let state = if s.leader { "leader" } else { "follower" };
        let mut row = vec![s.node.clone(), s.id.clone(), s.address.clone(), state.into(), s.voter.to_string(), proto];
        match last_index.get(&s.id) {
            Some(&idx) => {
                let behind = leader_last.saturating_sub(idx);
                let trails = if s.leader {
                    "_".to_string()
                } else if behind <= 1 {
                    format!("{behind} Commit")
                } else {
                    format!("{behind} Commits")
                };
                row.push(idx.to_string());
                row.push(trails);
            }
            None => row.push("_".into()),
        }
        rows.push(row);
    }
    columnize(&rows)
}

async fn list_peers(args: &[String]) -> i32 {
    let usage = "Usage: agent operator raft list-peers [options]\n\n  Displays the current Raft peer configuration.";
    let p = parse_flags!(args, &[], &[], usage);
    let ctx = ctx_or_exit!(p);
    let conf: RaftConfiguration = match ctx.get("/v1/operator/raft/configuration", &[], true).await {
        Ok(got) => got.map(|(v, _)| v).unwrap_or_default(),
        Err(e) => fail!("Error getting peers: Failed to retrieve raft configuration: {e}"),
    };
    // Autopilot health answers 429 when unhealthy, with the same body: read it either way.
    let mut last_index = BTreeMap::new();
    let pq = ctx.path_and_query("/v1/operator/autopilot/health", &[], true);
    if let Ok(resp) = ctx.client.request(Method::GET, &pq, None, None).await {
        if resp.status == 200 || resp.status == 429 {
            if let Ok(v) = serde_json::from_slice::<Value>(&resp.body) {
                for s in v.get("Servers").and_then(Value::as_array).into_iter().flatten() {
                    if let (Some(id), Some(li)) =
                        (s.get("ID").and_then(Value::as_str), s.get("LastIndex").and_then(Value::as_u64))
                    {
                        last_index.insert(id.to_string(), li);
                    }
                }
            }
        }
    }
    if last_index.is_empty() && conf.servers.iter().any(|s| s.last_index > 0) {
        for s in &conf.servers {
            last_index.insert(s.id.clone(), s.last_index);
        }
    }
    out(&peers_table(&conf, &last_index));
    0
}

async fn remove_peer(args: &[String]) -> i32 {
    let usage = "
Usage: agent operator raft remove-peer [options]

  Remove the server with the given -address or -id from the Raft configuration.

Command Options:
  -address=<ip:port>  The address to remove from the Raft configuration.
  -id=<id>            The ID to remove from the Raft configuration.
";
    let p = parse_flags!(args, &[], &["address", "id"], usage);
    let (address, id) = (p.str("address").unwrap_or(""), p.str("id").unwrap_or(""));
    if address.is_empty() && id.is_empty() {
        fail!("Error removing peer: an address or id is required for the peer to remove");
    }
    if !address.is_empty() && !id.is_empty() {
        fail!("Error removing peer: cannot give both an address and id");
    }
    let ctx = ctx_or_exit!(p);
    let extra = if id.is_empty() {
        vec![("address".to_string(), address.to_string())]
    } else {
        vec![("id".to_string(), id.to_string())]
    };
    if let Err(e) = ctx.send(Method::DELETE, "/v1/operator/raft/peer", &extra, None, false, None).await {
        fail!("Error removing peer: {e}");
    }
    if id.is_empty() {
        out(&format!("Removed peer with address {address:?}"));
    } else {
        out(&format!("Removed peer with id {id:?}"));
    }
    0
}

async fn autopilot_get(args: &[String]) -> i32 {
    let usage =
        "Usage: agent operator autopilot get-config [options]\n\n  Displays the current Autopilot configuration.";
    let p = parse_flags!(args, &[], &[], usage);
    let ctx = ctx_or_exit!(p);
    let conf: Value = match ctx.get("/v1/operator/autopilot/configuration", &[], true).await {
        Ok(got) => got.map(|(v, _)| v).unwrap_or_default(),
        Err(e) => fail!("Error querying Autopilot configuration: {e}"),
    };
    for k in [
        "CleanupDeadServers",
        "LastContactThreshold",
        "MaxTrailingLogs",
        "MinQuorum",
        "ServerStabilizationTime",
        "RedundancyZoneTag",
        "DisableUpgradeMigration",
        "UpgradeVersionTag",
    ] {
        let v = match conf.get(k) {
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => String::new(),
        };
        out(&format!("{k} = {v}"));
    }
    0
}

// ---- catalog ----

const CATALOG_HELP: &str = "
Usage: agent catalog <subcommand> [options] [args]

  This command has subcommands for interacting with the catalog.

Subcommands:
    datacenters    Lists all known datacenters
    nodes          Lists all nodes in the given datacenter
    services       Lists all registered services in a datacenter
";

pub(super) async fn catalog(args: &[String]) -> i32 {
    match args.first().map(String::as_str) {
        Some("services") => catalog_services(&args[1..]).await,
        Some("nodes") => catalog_nodes(&args[1..]).await,
        Some("datacenters") => catalog_datacenters(&args[1..]).await,
        _ => group_help(args, CATALOG_HELP),
    }
}

/// `-node-meta k=v` flags as query pairs (`node-meta=k:v`).
fn node_meta_pairs(p: &super::flags::Parsed) -> Result<Vec<(String, String)>, String> {
    Ok(p.map("node-meta")?.into_iter().map(|(k, v)| ("node-meta".to_string(), format!("{k}:{v}"))).collect())
}

/// `catalog services [-tags]`: names one per line, or names and comma-joined sorted tags.
pub(super) fn services_text(services: &BTreeMap<String, Vec<String>>, tags: bool) -> String {
    if tags {
        let rows: Vec<Vec<String>> = services
            .iter()
            .map(|(name, t)| {
                let mut t = t.clone();
                t.sort();
                vec![name.clone(), t.join(",")]
            })
            .collect();
        tabwrite(&rows, 6).trim().to_string()
    } else {
        services.keys().cloned().collect::<Vec<_>>().join("\n")
    }
}

async fn catalog_services(args: &[String]) -> i32 {
    let usage = "
Usage: agent catalog services [options]

  Retrieves the list services registered in a given datacenter.

Command Options:
  -node=<id or name>      Node for which to list services.
  -node-meta=<key=value>  Metadata to filter nodes with (repeatable).
  -tags                   Display each service's tags as a comma-separated list.
";
    let p = parse_flags!(args, &["tags"], &["node", "node-meta"], usage);
    if !p.args.is_empty() {
        fail!("Too many arguments (expected 0, got {})", p.args.len());
    }
    let meta = match node_meta_pairs(&p) {
        Ok(m) => m,
        Err(e) => fail!("{e}"),
    };
    let ctx = ctx_or_exit!(p);
    let mut services: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if let Some(node) = p.str("node").filter(|n| !n.is_empty()) {
        match ctx.get::<Option<CatalogNode>>(&format!("/v1/catalog/node/{node}"), &meta, true).await {
            Ok(got) => {
                if let Some((Some(cn), _)) = got {
                    for s in cn.services.values() {
                        services.entry(s.service.clone()).or_default().extend(s.tags.iter().cloned());
                    }
                }
            }
            Err(e) => fail!("Error listing services for node: {e}"),
        }
    } else {
        match ctx.get::<BTreeMap<String, Vec<String>>>("/v1/catalog/services", &meta, true).await {
            Ok(got) => services = got.map(|(v, _)| v).unwrap_or_default(),
            Err(e) => fail!("Error listing services: {e}"),
        }
    }
    if services.is_empty() {
        err("No services match the given query - try expanding your search.");
        return 0;
    }
    out(&services_text(&services, p.bool("tags")));
    0
}

fn kv_join(m: &BTreeMap<String, String>) -> String {
    m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
}

/// `catalog nodes [-detailed]`.
pub(super) fn nodes_table(nodes: &[Node], detailed: bool) -> String {
    let mut rows: Vec<Vec<String>> = Vec::with_capacity(nodes.len() + 1);
    if detailed {
        rows.push(["Node", "ID", "Address", "DC", "TaggedAddresses", "Meta"].iter().map(|s| s.to_string()).collect());
        for n in nodes {
            rows.push(vec![
                n.node.clone(),
                n.id.clone(),
                n.address.clone(),
                n.datacenter.clone(),
                kv_join(&n.tagged_addresses),
                kv_join(&n.meta),
            ]);
        }
    } else {
        rows.push(["Node", "ID", "Address", "DC"].iter().map(|s| s.to_string()).collect());
        for n in nodes {
            let id = match n.id.find('-') {
                Some(i) if i > 0 => n.id[..i].to_string(),
                _ => n.id.clone(),
            };
            rows.push(vec![n.node.clone(), id, n.address.clone(), n.datacenter.clone()]);
        }
    }
    columnize(&rows)
}

async fn catalog_nodes(args: &[String]) -> i32 {
    let usage = "
Usage: agent catalog nodes [options]

  Retrieves the list nodes registered in a given datacenter.

Command Options:
  -detailed               Output detailed information about the nodes.
  -filter=<expression>    Filter to use with the request.
  -near=<node>            Sort by estimated round-trip time from this node.
  -node-meta=<key=value>  Metadata to filter nodes with (repeatable).
  -service=<id or name>   Only nodes which are providing the given service.
";
    let p = parse_flags!(args, &["detailed"], &["filter", "near", "node-meta", "service"], usage);
    if !p.args.is_empty() {
        fail!("Too many arguments (expected 0, got {})", p.args.len());
    }
    let mut extra = match node_meta_pairs(&p) {
        Ok(m) => m,
        Err(e) => fail!("{e}"),
    };
    if let Some(n) = p.str("near") {
        extra.push(("near".into(), n.into()));
    }
    if let Some(f) = p.str("filter") {
        extra.push(("filter".into(), f.into()));
    }
    let ctx = ctx_or_exit!(p);
    let nodes: Vec<Node> = if let Some(svc) = p.str("service").filter(|s| !s.is_empty()) {
        match ctx.get::<Vec<CatalogService>>(&format!("/v1/catalog/service/{svc}"), &extra, true).await {
            Ok(got) => got
                .map(|(v, _)| v)
                .unwrap_or_default()
                .into_iter()
                .map(|s| Node {
                    id: s.id,
                    node: s.node,
                    address: s.address,
                    datacenter: s.datacenter,
                    tagged_addresses: s.tagged_addresses,
                    meta: s.node_meta,
                    create_index: s.create_index,
                    modify_index: s.modify_index,
                })
                .collect(),
            Err(e) => fail!("Error listing nodes for service: {e}"),
        }
    } else {
        match ctx.get::<Vec<Node>>("/v1/catalog/nodes", &extra, true).await {
            Ok(got) => got.map(|(v, _)| v).unwrap_or_default(),
            Err(e) => fail!("Error listing nodes: {e}"),
        }
    };
    if nodes.is_empty() {
        err("No nodes match the given query - try expanding your search.");
        return 0;
    }
    out(&nodes_table(&nodes, p.bool("detailed")));
    0
}

async fn catalog_datacenters(args: &[String]) -> i32 {
    let usage = "Usage: agent catalog datacenters [options]\n\n  Retrieves the list of all known datacenters.";
    let p = parse_flags!(args, &[], &[], usage);
    if !p.args.is_empty() {
        fail!("Too many arguments (expected 0, got {})", p.args.len());
    }
    let ctx = ctx_or_exit!(p);
    let dcs: Vec<String> = match ctx.get("/v1/catalog/datacenters", &[], false).await {
        Ok(got) => got.map(|(v, _)| v).unwrap_or_default(),
        Err(e) => fail!("Error listing datacenters: {e}"),
    };
    if dcs.is_empty() {
        fail!("No datacenters found");
    }
    for dc in dcs {
        out(&dc);
    }
    0
}

// ---- event ----

pub(super) async fn event(args: &[String]) -> i32 {
    let usage = "
Usage: agent event [options] [payload]

  Dispatches a custom user event across a datacenter.

Command Options:
  -name=<string>     Name of the event.
  -node=<regex>      Regular expression to filter on node names.
  -service=<regex>   Regular expression to filter on service instances.
  -tag=<regex>       Regular expression to filter on service tags (requires -service).
";
    let p = parse_flags!(args, &[], &["name", "node", "service", "tag"], usage);
    let name = p.str("name").unwrap_or("");
    if name.is_empty() {
        fail!("Event name must be specified");
    }
    for (flag, what) in [("node", "node"), ("service", "service"), ("tag", "tag")] {
        if let Some(re) = p.str(flag).filter(|r| !r.is_empty()) {
            if let Err(e) = Regex::new(re) {
                fail!("Failed to compile {what} filter regexp: {e}");
            }
        }
    }
    if p.str("tag").is_some_and(|t| !t.is_empty()) && p.str("service").is_none_or(str::is_empty) {
        fail!("Cannot provide tag filter without service filter.");
    }
    let payload: Option<Vec<u8>> = match p.args.len() {
        0 => None,
        1 => Some(p.args[0].as_bytes().to_vec()),
        _ => {
            err("Too many command line arguments.");
            fail!("{}", usage.trim_matches('\n'));
        }
    };
    let ctx = ctx_or_exit!(p);
    if let Err(e) = ctx.node_name().await {
        fail!("Error querying Consul agent: {e}");
    }
    let mut extra = Vec::new();
    for flag in ["node", "service", "tag"] {
        if let Some(v) = p.str(flag).filter(|v| !v.is_empty()) {
            extra.push((flag.to_string(), v.to_string()));
        }
    }
    let resp = match ctx.put(&format!("/v1/event/fire/{name}"), &extra, payload).await {
        Ok(r) => r,
        Err(e) => fail!("Error firing event: {e}"),
    };
    match serde_json::from_slice::<UserEvent>(&resp.body) {
        Ok(ev) => {
            out(&format!("Event ID: {}", ev.id));
            0
        }
        Err(e) => fail!("Error firing event: {e}"),
    }
}

// ---- maint ----

pub(super) async fn maint(args: &[String]) -> i32 {
    let usage = "
Usage: agent maint [options]

  Places a node or service into maintenance mode. With no flags, lists the
  node and services currently in maintenance.

Command Options:
  -disable            Disable maintenance mode.
  -enable             Enable maintenance mode.
  -reason=<string>    Text describing the maintenance reason.
  -service=<id>       Control maintenance mode for a specific service ID.
";
    let p = parse_flags!(args, &["enable", "disable"], &["reason", "service"], usage);
    let (enable, disable) = (p.bool("enable"), p.bool("disable"));
    let reason = p.str("reason").unwrap_or("");
    let service = p.str("service").unwrap_or("");
    if enable && disable {
        fail!("Only one of -enable or -disable may be provided");
    }
    if !enable && !reason.is_empty() {
        fail!("Reason may only be provided with -enable");
    }
    if !enable && !disable && !service.is_empty() {
        fail!("Service requires either -enable or -disable");
    }
    let ctx = ctx_or_exit!(p);
    let node_name = match ctx.node_name().await {
        Ok(n) => n,
        Err(e) => fail!("Error querying Consul agent: {e}"),
    };
    if !enable && !disable {
        let checks: BTreeMap<String, HealthCheck> = match ctx.get("/v1/agent/checks", &[], false).await {
            Ok(got) => got.map(|(v, _)| v).unwrap_or_default(),
            Err(e) => fail!("Error getting checks: {e}"),
        };
        for c in checks.values() {
            if c.check_id == "_node_maintenance" {
                out("Node:");
                out(&format!("  Name:   {node_name}"));
                out(&format!("  Reason: {}", c.notes));
                out("");
            } else if c.check_id.starts_with("_service_maintenance:") {
                out("Service:");
                out(&format!("  ID:     {}", c.service_id));
                out(&format!("  Reason: {}", c.notes));
                out("");
            }
        }
        return 0;
    }
    let mut extra = vec![("enable".to_string(), enable.to_string())];
    if !reason.is_empty() {
        extra.push(("reason".into(), reason.into()));
    }
    let word = if enable { "enabl" } else { "disabl" };
    if service.is_empty() {
        if let Err(e) = ctx.put("/v1/agent/maintenance", &extra, None).await {
            fail!("Error {word}ing node maintenance: {e}");
        }
        out(&format!("Node maintenance is now {word}ed"));
    } else {
        if let Err(e) = ctx.put(&format!("/v1/agent/service/maintenance/{service}"), &extra, None).await {
            fail!("Error {word}ing service maintenance: {e}");
        }
        out(&format!("Service maintenance is now {word}ed for {service:?}"));
    }
    0
}

// ---- monitor ----

pub(super) async fn monitor(args: &[String]) -> i32 {
    let usage = "
Usage: agent monitor [options]

  Shows recent log messages of an agent, and attaches to the agent, outputting
  log messages as they occur in real time. Exits on Ctrl-C.

Command Options:
  -log-level=<level>  Log level of the agent (default info).
  -log-json           Output logs in JSON format.
";
    let p = parse_flags!(args, &["log-json"], &["log-level"], usage);
    let ctx = ctx_or_exit!(p);
    let mut extra = vec![("loglevel".to_string(), p.str("log-level").unwrap_or("info").to_lowercase())];
    if p.bool("log-json") {
        extra.push(("logjson".into(), String::new()));
    }
    let pq = ctx.path_and_query("/v1/agent/monitor", &extra, false);
    tokio::select! {
        r = stream_to_stdout(&ctx, &pq) => match r {
            Ok(()) => {
                out("");
                out("Remote side ended the monitor! This usually means that the\nremote side has exited or crashed.");
                1
            }
            Err(e) => fail!("Error starting monitor: {e}"),
        },
        _ = tokio::signal::ctrl_c() => 0,
    }
}

/// Streams a GET's body to stdout as it arrives (the client's other calls buffer whole bodies).
async fn stream_to_stdout(ctx: &Ctx, pq: &str) -> Result<(), CallError> {
    use http_body_util::BodyExt;
    use std::io::Write;
    let url = ctx.url(pq);
    let resp = ctx
        .client
        .stream(Method::GET, pq)
        .await
        .map_err(|e| CallError::Transport(super::http::transport_message(&Method::GET, &url, &ctx.addr, &e)))?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    if !(200..300).contains(&status) {
        let bytes = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
        return Err(CallError::Status { code: status, body: String::from_utf8_lossy(&bytes).trim().to_string() });
    }
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Some(data) = frame.data_ref() {
            let mut o = std::io::stdout().lock();
            if o.write_all(data).and_then(|_| o.flush()).is_err() {
                break;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, addr: &str, role: &str, status: i32) -> AgentMember {
        let mut tags = BTreeMap::new();
        tags.insert("role".to_string(), role.to_string());
        tags.insert("build".to_string(), "1.20.0:abcdef".to_string());
        tags.insert("vsn".to_string(), "2".to_string());
        tags.insert("dc".to_string(), "dc1".to_string());
        AgentMember { name: name.into(), addr: addr.into(), port: 8301, tags, status, ..Default::default() }
    }

    #[test]
    fn members_servers_first_then_by_name_with_consul_columns() {
        let ms = vec![
            member("c1", "127.0.0.21", "node", 1),
            member("s2", "127.0.0.12", "consul", 1),
            member("a-client", "127.0.0.22", "node", 4),
            member("s1", "127.0.0.11", "consul", 1),
        ];
        let all = Regex::new(".*").unwrap();
        let sorted = prepare_members(ms.clone(), &all, true);
        let names: Vec<&str> = sorted.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["s1", "s2", "a-client", "c1"]);
        let t = members_table(&sorted, false);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "Node      Address          Status  Type    Build   Protocol  DC   Partition  Segment");
        assert_eq!(lines[1], "s1        127.0.0.11:8301  alive   server  1.20.0  2         dc1  default    <all>");
        assert_eq!(lines[3], "a-client  127.0.0.22:8301  failed  client  1.20.0  2         dc1  default    <default>");

        let alive = Regex::new("alive").unwrap();
        assert_eq!(prepare_members(ms.clone(), &alive, true).len(), 3);
        let none = Regex::new("left").unwrap();
        assert!(prepare_members(ms, &none, true).is_empty());
    }

    #[test]
    fn members_detailed_and_ipv6() {
        let mut m = member("n", "::1", "node", 1);
        m.tags.clear();
        m.tags.insert("role".into(), "node".into());
        let ms = prepare_members(vec![m], &Regex::new(".*").unwrap(), true);
        let t = members_table(&ms, true);
        assert_eq!(
            t,
            "Node  Address     Status  Tags\nn     [::1]:8301  alive   ap=default,role=node,segment=<default>"
        );
        let t = members_table(&ms, false);
        assert!(t.lines().nth(1).unwrap().contains("< 0.3"));
    }

    #[test]
    fn info_prints_sorted_sections() {
        let v: Value = serde_json::json!({"Stats": {
            "raft": {"state": "Leader", "applied_index": "10"},
            "agent": {"server": "true", "check_monitors": "0"},
        }});
        assert_eq!(
            info_text(&v).unwrap(),
            "agent:\n\tcheck_monitors = 0\n\tserver = true\nraft:\n\tapplied_index = 10\n\tstate = Leader"
        );
        assert!(info_text(&serde_json::json!({})).is_err());
    }

    #[test]
    fn peers_table_with_and_without_health() {
        let conf: RaftConfiguration = serde_json::from_value(serde_json::json!({"Servers": [
            {"ID": "id-1", "Node": "s1", "Address": "127.0.0.11:8300", "Leader": true, "Voter": true, "ProtocolVersion": "3"},
            {"ID": "id-2", "Node": "s2", "Address": "127.0.0.12:8300", "Leader": false, "Voter": true, "ProtocolVersion": "3"},
        ], "Index": 5}))
        .unwrap();
        let mut li = BTreeMap::new();
        li.insert("id-1".to_string(), 20u64);
        li.insert("id-2".to_string(), 17u64);
        let t = peers_table(&conf, &li);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "Node  ID    Address          State     Voter  RaftProtocol  Commit Index  Trails Leader By"
        );
        assert_eq!(lines[1], "s1    id-1  127.0.0.11:8300  leader    true   3             20            _");
        assert_eq!(lines[2], "s2    id-2  127.0.0.12:8300  follower  true   3             17            3 Commits");
        li.insert("id-2".to_string(), 19u64);
        assert!(peers_table(&conf, &li).ends_with("19            1 Commit"));
        let t = peers_table(&conf, &BTreeMap::new());
        assert!(t.lines().nth(1).unwrap().ends_with("3             _"));
    }

    #[test]
    fn catalog_output() {
        let nodes = vec![Node {
            id: "40e4a748-2192-161a-0510-9bf59fe950b5".into(),
            node: "s1".into(),
            address: "127.0.0.11".into(),
            datacenter: "dc1".into(),
            ..Default::default()
        }];
        assert_eq!(nodes_table(&nodes, false), "Node  ID        Address     DC\ns1    40e4a748  127.0.0.11  dc1");
        assert!(nodes_table(&nodes, true).contains("40e4a748-2192-161a-0510-9bf59fe950b5"));
        let mut services = BTreeMap::new();
        services.insert("consul".to_string(), vec![]);
        services.insert("web".to_string(), vec!["v2".to_string(), "a".to_string()]);
        assert_eq!(services_text(&services, false), "consul\nweb");
        assert_eq!(services_text(&services, true), "consul      \nweb         a,v2");
    }
}
