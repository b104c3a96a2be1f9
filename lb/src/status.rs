//! The status page (`GET /_lb/status`): the live routing table as JSON — every route, its
//! policy and instances with their in-flight requests and bench state — and where discovery
//! gets its answers from.

use crate::routing::Snapshot;
use crate::Shared;
use serde_json::json;
use std::time::Instant;

pub fn render(snap: &Snapshot, shared: &Shared) -> String {
    let now = Instant::now();
    let routes: Vec<serde_json::Value> = snap
        .routes()
        .iter()
        .map(|r| {
            let instances: Vec<serde_json::Value> = r
                .pool
                .backends()
                .iter()
                .map(|b| {
                    json!({
                        "Address": b.addr.to_string(),
                        "Node": b.node,
                        "ID": b.id,
                        "Weight": b.weight,
                        "Active": b.stats.active(),
                        "Fails": b.stats.fails(),
                        "BenchedForMs": b.stats.benched_for(now).map(|d| d.as_millis() as u64),
                    })
                })
                .collect();
            json!({
                "Route": r.name,
                "Policy": r.pool.policy.to_string(),
                "MaxFails": r.pool.bench.max_fails,
                "FailTimeout": api::duration::format(r.pool.bench.fail_timeout),
                "Strip": r.strip,
                "Instances": instances,
            })
        })
        .collect();
    let (datacenters, watched) = snap.datacenters();
    let body = json!({
        "Version": snap.version,
        "Datacenter": snap.datacenter(),
        "Datacenters": datacenters,
        "WatchedDatacenters": watched,
        "Domain": snap.domain(),
        "Agents": shared.agents.addrs(),
        "Routes": routes,
    });
    let mut s = serde_json::to_string_pretty(&body).unwrap_or_else(|e| format!("{{\"Error\":\"{e}\"}}"));
    s.push('\n');
    s
}
