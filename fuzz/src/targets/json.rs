//! JSON bodies and config files, below the HTTP layer: `defs::normalize`, the Go shapes of
//! `http::shape` for every write endpoint's body, the service and check decoders of `defs`; and
//! the config file schema (`config::schema::check`, `unenforced`) followed by the whole
//! `Config::from_flags` on a file that passed it. Inputs that are not JSON text become JSON
//! through `gen::json`.

use crate::gen;
use agent::http::shape::{self, Go};
use serde_json::Value;
use std::sync::OnceLock;

/// Field names of the bodies (the generator spells them as clients do).
const FIELDS: &[&str] = &[
    "ID",
    "Name",
    "Tags",
    "Address",
    "Port",
    "Meta",
    "Check",
    "Checks",
    "Weights",
    "Passing",
    "Warning",
    "EnableTagOverride",
    "TaggedAddresses",
    "Kind",
    "CheckID",
    "ServiceID",
    "Notes",
    "Status",
    "Output",
    "HTTP",
    "Header",
    "Method",
    "Body",
    "TCP",
    "UDP",
    "GRPC",
    "Interval",
    "Timeout",
    "TTL",
    "Args",
    "ScriptArgs",
    "DeregisterCriticalServiceAfter",
    "SuccessBeforePassing",
    "FailuresBeforeCritical",
    "AliasService",
    "Node",
    "Datacenter",
    "NodeMeta",
    "Service",
    "SkipNodeUpdate",
    "LockDelay",
    "Behavior",
    "NodeChecks",
    "ServiceChecks",
    "Definition",
    "Proxy",
    "Connect",
    "SidecarService",
    "Verb",
    "Key",
    "Value",
    "Flags",
    "Index",
    "Session",
    "KV",
    "Coord",
    "Segment",
    "Vec",
    "Error",
    "Adjustment",
    "Height",
    "CleanupDeadServers",
    "LastContactThreshold",
    "MaxTrailingLogs",
    "ServerStabilizationTime",
    "Locality",
    "Upstreams",
    "DestinationServiceName",
    "Port",
];

pub const DICT: &[&str] = &[
    "{\"",
    "\":",
    "\":\"",
    "\",\"",
    "[{",
    "}]",
    "\"Name\"",
    "\"Check\"",
    "\"Checks\"",
    "\"TTL\"",
    "\"Interval\"",
    "\"10s\"",
    "\"Port\"",
    "\"Weights\"",
    "\"Verb\"",
    "\"KV\"",
    "\"Service\"",
    "\"Node\"",
    "\"Meta\"",
    "\"Tags\"",
    "\"enable_tag_override\"",
    "\"deregistercriticalserviceafter\"",
];

pub const CONFIG_DICT: &[&str] = &[
    "{\"",
    "\":",
    "\":\"",
    "\",\"",
    "\"ports\":{",
    "\"dns_config\":{",
    "\"service_ttl\":{\"*\":\"",
    "\"acl\":{",
    "\"enabled\":true",
    "\"services\":[",
    "\"checks\":[",
    "\"http_config\":{",
    "\"limits\":{",
    "\"performance\":{",
    "\"raft_multiplier\":",
    "\"telemetry\":{",
    "\"node_meta\":{",
    "\"retry_join\":[",
    "\"bind_addr\":\"",
    "\"client_addr\":\"",
    "\"allow_write_http_from\":[\"",
    "\"10.0.0.0/8\"",
    "\"::/0\"",
    "\"1h\"",
    "\"-1s\"",
];

/// The body shapes the write endpoints decode into.
const SHAPES: &[(&str, Go)] = &[
    ("service", shape::SERVICE_DEFINITION),
    ("check", shape::CHECK_DEFINITION),
    ("register", shape::REGISTER_REQUEST),
    ("deregister", shape::DEREGISTER_REQUEST),
    ("session", shape::SESSION_REQUEST),
    ("autopilot", shape::AUTOPILOT_CONFIGURATION),
    ("check_update", shape::CHECK_UPDATE),
    ("coordinate", shape::COORDINATE_UPDATE),
    ("txn", shape::TXN_OPS),
];

pub fn json_shapes(data: &[u8]) {
    let v = agent::defs::normalize(gen::json(data, FIELDS));
    // Normalizing twice changes nothing: the handlers rely on one canonical spelling.
    assert_eq!(agent::defs::normalize(v.clone()), v, "normalize is not idempotent");
    for (i, (name, go)) in SHAPES.iter().enumerate() {
        let Ok(()) = shape::check(&v, *go) else {
            crate::feature(i as u64);
            continue;
        };
        crate::feature(i as u64 + 100);
        match *name {
            "service" => {
                crate::feature(agent::defs::service(&v, "node").is_ok() as u64 + 200);
            }
            "check" => {
                crate::feature(agent::defs::check(&v, "node", None).is_ok() as u64 + 300);
                let _ = agent::defs::check_definition(&v);
            }
            _ => {}
        }
    }
    // The element forms bodies also carry: a service inside a catalog registration, checks in
    // a list.
    for key in ["Service", "Check"] {
        if let Some(inner) = v.get(key) {
            let _ = agent::defs::service(inner, "node");
            let _ = agent::defs::check(inner, "node", Some(("web", 1, 0)));
        }
    }
    if let Some(Value::Array(checks)) = v.get("Checks") {
        for c in checks {
            let _ = agent::defs::check(c, "node", Some(("web", checks.len(), 0)));
        }
    }
}

/// Every key of the config schema, at any depth.
fn config_keys() -> &'static [&'static str] {
    static K: OnceLock<Vec<&'static str>> = OnceLock::new();
    fn walk(fields: &'static [(&'static str, agent::config::schema::Ty)], out: &mut Vec<&'static str>) {
        for (k, ty) in fields {
            out.push(k);
            if let agent::config::schema::Ty::Obj(inner) = ty {
                walk(inner, out);
            }
        }
    }
    K.get_or_init(|| {
        let mut out = Vec::new();
        walk(agent::config::schema::TOP, &mut out);
        out.extend(FIELDS);
        out
    })
}

pub fn config(data: &[u8]) {
    let doc = gen::object(data, config_keys());
    let unenforced = agent::config::schema::unenforced(&doc);
    crate::feature(unenforced.len() as u64);
    match agent::config::schema::check(&doc) {
        Err(e) => {
            assert!(!e.0.is_empty());
            crate::feature(crate::error_kind(&e.0));
        }
        Ok(unknown) => {
            crate::feature(unknown.len() as u64 + 1000);
            // The whole configuration built from it, as `agent agent -dev -config-file=...`.
            let path = std::env::temp_dir().join(format!("fuzz-config-{}.json", std::process::id()));
            let text = serde_json::to_vec(&Value::Object(doc)).unwrap_or_default();
            if std::fs::write(&path, text).is_ok() {
                let flags =
                    agent::config::AgentFlags { dev: true, config_file: vec![path.clone()], ..Default::default() };
                let built = agent::config::Config::from_flags(flags);
                crate::feature(built.is_ok() as u64 + 2000);
            }
        }
    }
}
