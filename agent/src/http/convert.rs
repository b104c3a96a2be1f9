//! Internal structs → the `api` crate's wire types, with Consul's field names and defaults.

use crate::structs::*;
use api::duration::format as go;
use base64::Engine;
use std::time::Duration;

fn dur(ns: u64) -> String {
    go(Duration::from_nanos(ns))
}

pub fn node(n: &Node) -> api::Node {
    api::Node {
        id: n.id.clone(),
        node: n.node.clone(),
        address: n.address.clone(),
        datacenter: n.datacenter.clone(),
        tagged_addresses: n.tagged_addresses.clone(),
        meta: n.meta.clone(),
        create_index: n.create_index,
        modify_index: n.modify_index,
    }
}

fn tagged(s: &Service) -> std::collections::BTreeMap<String, api::ServiceAddress> {
    s.tagged_addresses
        .iter()
        .map(|(k, a)| (k.clone(), api::ServiceAddress { address: a.address.clone(), port: a.port }))
        .collect()
}

/// A service as the catalog reports it (with its indexes).
pub fn service(s: &Service, datacenter: &str) -> api::AgentService {
    api::AgentService {
        kind: s.kind.clone(),
        id: s.id.clone(),
        service: s.service.clone(),
        tags: s.tags.clone(),
        meta: s.meta.clone(),
        port: s.port,
        address: s.address.clone(),
        tagged_addresses: tagged(s),
        weights: api::Weights { passing: s.weights.passing, warning: s.weights.warning },
        enable_tag_override: s.enable_tag_override,
        create_index: Some(s.create_index),
        modify_index: Some(s.modify_index),
        content_hash: String::new(),
        datacenter: datacenter.to_string(),
        proxy: s.proxy.clone(),
        connect: s.connect.clone(),
        locality: s.locality.clone(),
    }
}

/// A service as the agent's listing reports it: no indexes, no content hash.
pub fn agent_service_unhashed(s: &Service, datacenter: &str) -> api::AgentService {
    let mut out = service(s, datacenter);
    out.create_index = None;
    out.modify_index = None;
    out
}

/// A service as `/v1/agent/service/:id` reports it: no indexes, a content hash.
pub fn agent_service(s: &Service, datacenter: &str) -> api::AgentService {
    let mut out = agent_service_unhashed(s, datacenter);
    out.content_hash = content_hash(&serde_json::to_vec(&out).unwrap_or_default());
    out
}

pub fn content_hash(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

pub fn check(c: &Check) -> api::HealthCheck {
    let d = &c.definition;
    let interval = if d.interval_ns > 0 { dur(d.interval_ns) } else { String::new() };
    let timeout = if d.timeout_ns > 0 { dur(d.timeout_ns) } else { String::new() };
    api::HealthCheck {
        node: c.node.clone(),
        check_id: c.check_id.clone(),
        name: c.name.clone(),
        status: c.status().as_str().to_string(),
        notes: c.notes.clone(),
        output: c.output.clone(),
        service_id: c.service_id.clone(),
        service_name: c.service_name.clone(),
        service_tags: c.service_tags.clone(),
        check_type: c.check_type.clone(),
        interval: interval.clone(),
        timeout: timeout.clone(),
        exposed_port: 0,
        definition: api::HealthCheckDefinition {
            http: d.http.clone(),
            header: d.header.clone(),
            method: d.method.clone(),
            body: d.body.clone(),
            tls_server_name: d.tls_server_name.clone(),
            tls_skip_verify: d.tls_skip_verify,
            tcp: d.tcp.clone(),
            udp: d.udp.clone(),
            grpc: d.grpc.clone(),
            grpc_use_tls: d.grpc_use_tls,
            interval: dur(d.interval_ns),
            timeout: dur(d.timeout_ns),
            deregister_critical_service_after: dur(d.deregister_critical_service_after_ns),
        },
        create_index: c.create_index,
        modify_index: c.modify_index,
    }
}

pub fn catalog_service(n: &Node, s: &Service) -> api::CatalogService {
    api::CatalogService {
        id: n.id.clone(),
        node: n.node.clone(),
        address: n.address.clone(),
        datacenter: n.datacenter.clone(),
        tagged_addresses: n.tagged_addresses.clone(),
        node_meta: n.meta.clone(),
        service_id: s.id.clone(),
        service_name: s.service.clone(),
        service_address: s.address.clone(),
        service_tagged_addresses: tagged(s),
        service_tags: s.tags.clone(),
        service_meta: s.meta.clone(),
        service_port: s.port,
        service_weights: api::Weights { passing: s.weights.passing, warning: s.weights.warning },
        service_enable_tag_override: s.enable_tag_override,
        service_kind: s.kind.clone(),
        service_proxy: s.proxy.clone(),
        create_index: s.create_index,
        modify_index: s.modify_index,
    }
}

pub fn kv(e: &KvEntry) -> api::KvPair {
    api::KvPair {
        key: e.key.clone(),
        create_index: e.create_index,
        modify_index: e.modify_index,
        lock_index: e.lock_index,
        flags: e.flags,
        value: if e.value.is_empty() { None } else { Some(base64::engine::general_purpose::STANDARD.encode(&e.value)) },
        session: e.session.clone(),
    }
}

pub fn session(s: &Session) -> api::Session {
    api::Session {
        id: s.id.clone(),
        name: s.name.clone(),
        node: s.node.clone(),
        lock_delay: s.lock_delay_ns,
        behavior: match s.behavior {
            SessionBehavior::Release => "release".into(),
            SessionBehavior::Delete => "delete".into(),
        },
        ttl: s.ttl.clone(),
        node_checks: s.node_checks.clone(),
        service_checks: if s.service_checks.is_empty() {
            None
        } else {
            Some(
                s.service_checks
                    .iter()
                    .map(|id| api::ServiceCheck { id: id.clone(), namespace: String::new() })
                    .collect(),
            )
        },
        create_index: s.create_index,
        modify_index: s.modify_index,
    }
}
