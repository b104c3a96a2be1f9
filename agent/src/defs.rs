//! Service and check definitions as clients send them: JSON whose keys Consul matches
//! case-insensitively (`enabletagoverride`, `ttl`) and in snake_case (`enable_tag_override`),
//! with durations as Go strings or nanoseconds. [`normalize`] rewrites keys to one canonical
//! spelling first, so every decoder below reads one spelling.

use crate::structs::*;
use serde_json::{Map, Value};
use std::time::Duration;

/// Canonical field names, looked up by their lowercase form without underscores.
const CANONICAL: &[&str] = &[
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
    "GRPCUseTLS",
    "TLSServerName",
    "TLSSkipVerify",
    "Interval",
    "Timeout",
    "TTL",
    "Args",
    "ScriptArgs",
    "DeregisterCriticalServiceAfter",
    "SuccessBeforePassing",
    "FailuresBeforeWarning",
    "FailuresBeforeCritical",
    "OutputMaxSize",
    "AliasNode",
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
    "Token",
    "Namespace",
    "Partition",
    "Proxy",
    "Connect",
    "SocketPath",
    "DockerContainerID",
    "Shell",
    "H2PING",
    "ServiceName",
    "ServiceTags",
    "Type",
    "CreateIndex",
    "ModifyIndex",
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
    "DisableRedirects",
    "ServiceAddress",
    "ServicePort",
    "ServiceMeta",
    "ServiceWeights",
    "ServiceEnableTagOverride",
    "ServiceTaggedAddresses",
    "ServiceKind",
    "Services",
    "Nodes",
    "Results",
    "Errors",
    "SidecarService",
    "Locality",
    "Region",
    "Zone",
    "DestinationServiceName",
    "DestinationServiceID",
    "LocalServiceAddress",
    "LocalServicePort",
    "Upstreams",
    "Native",
];

/// Keys under these hold user data; their own keys are kept as given.
const OPAQUE: &[&str] = &["Meta", "NodeMeta", "ServiceMeta", "Header", "Config"];
/// Keys under these are user names, but their values are objects to normalize.
const NAMED: &[&str] = &["TaggedAddresses", "ServiceTaggedAddresses"];

fn canonical(key: &str) -> Option<&'static str> {
    let folded: String = key.chars().filter(|c| *c != '_').flat_map(|c| c.to_lowercase()).collect();
    CANONICAL.iter().copied().find(|c| c.to_lowercase() == folded)
}

/// Rewrites every known key to its canonical spelling, recursively.
pub fn normalize(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = canonical(&k).map(str::to_string).unwrap_or(k);
                let v = if OPAQUE.contains(&key.as_str()) {
                    v
                } else if NAMED.contains(&key.as_str()) {
                    match v {
                        Value::Object(inner) => {
                            Value::Object(inner.into_iter().map(|(k, v)| (k, normalize(v))).collect())
                        }
                        other => other,
                    }
                } else {
                    normalize(v)
                };
                // A canonical key given twice (`Name` and `name`) keeps the first non-null.
                match out.get(&key) {
                    Some(existing) if !existing.is_null() => {}
                    _ => {
                        out.insert(key, v);
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.into_iter().map(normalize).collect()),
        other => other,
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DefError {
    #[error("{0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> DefError {
    DefError::Invalid(msg.into())
}

pub fn s(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

pub fn b(v: &Value, key: &str) -> bool {
    match v.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    }
}

pub fn u(v: &Value, key: &str) -> Result<u64, DefError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| n.as_f64().map(|f| f.max(0.0) as u64))
            .ok_or_else(|| invalid(format!("invalid {key}: {n}"))),
        Some(Value::String(s)) if s.is_empty() => Ok(0),
        Some(Value::String(s)) => s.parse().map_err(|_| invalid(format!("invalid {key}: {s:?}"))),
        Some(other) => Err(invalid(format!("invalid {key}: {other}"))),
    }
}

pub fn strings(v: &Value, key: &str) -> Vec<String> {
    match v.get(key) {
        Some(Value::Array(a)) => a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect(),
        _ => Vec::new(),
    }
}

pub fn string_map(v: &Value, key: &str) -> Meta {
    match v.get(key) {
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
            .collect(),
        _ => Meta::new(),
    }
}

pub fn duration(v: &Value, key: &str) -> Result<Duration, DefError> {
    match v.get(key) {
        None => Ok(Duration::ZERO),
        Some(x) => api::duration::serde_go::from_value(x).map_err(|_| invalid(format!("Invalid {key}: {x}"))),
    }
}

/// Reads a check's run definition (`HTTP`, `TCP`, `TTL`, `Args`, `Interval`...).
pub fn check_definition(v: &Value) -> Result<CheckDefinition, DefError> {
    let mut args = strings(v, "Args");
    if args.is_empty() {
        args = strings(v, "ScriptArgs");
    }
    let mut header = std::collections::BTreeMap::new();
    if let Some(Value::Object(m)) = v.get("Header") {
        for (k, vals) in m {
            let list = match vals {
                Value::Array(a) => a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect(),
                Value::String(s) => vec![s.clone()],
                _ => vec![],
            };
            header.insert(k.clone(), list);
        }
    }
    let def = CheckDefinition {
        http: s(v, "HTTP"),
        header,
        method: s(v, "Method"),
        body: s(v, "Body"),
        tls_server_name: s(v, "TLSServerName"),
        tls_skip_verify: b(v, "TLSSkipVerify"),
        tcp: s(v, "TCP"),
        udp: s(v, "UDP"),
        grpc: s(v, "GRPC"),
        grpc_use_tls: b(v, "GRPCUseTLS"),
        args,
        ttl_ns: duration(v, "TTL")?.as_nanos() as u64,
        interval_ns: duration(v, "Interval")?.as_nanos() as u64,
        timeout_ns: duration(v, "Timeout")?.as_nanos() as u64,
        deregister_critical_service_after_ns: duration(v, "DeregisterCriticalServiceAfter")?.as_nanos() as u64,
        success_before_passing: u(v, "SuccessBeforePassing")? as u32,
        failures_before_warning: u(v, "FailuresBeforeWarning")? as u32,
        failures_before_critical: u(v, "FailuresBeforeCritical")? as u32,
        output_max_size: u(v, "OutputMaxSize")? as usize,
        alias_node: s(v, "AliasNode"),
        alias_service: s(v, "AliasService"),
    };
    let runs_on_interval = !def.http.is_empty()
        || !def.tcp.is_empty()
        || !def.udp.is_empty()
        || !def.grpc.is_empty()
        || !def.args.is_empty();
    if runs_on_interval && def.interval_ns == 0 && def.ttl_ns == 0 {
        return Err(invalid("Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or GRPC checks"));
    }
    Ok(def)
}

/// A check from `/v1/agent/check/register`, a service's `Check`/`Checks`, or a config file.
/// `service` is the owning service's ID and `index` its position, for Consul's default IDs.
pub fn check(v: &Value, node: &str, service: Option<(&str, usize, usize)>) -> Result<Check, DefError> {
    let definition = check_definition(v)?;
    let mut id = s(v, "CheckID");
    if id.is_empty() {
        id = s(v, "ID");
    }
    let mut name = s(v, "Name");
    let mut service_id = s(v, "ServiceID");
    if let Some((sid, i, total)) = service {
        service_id = sid.to_string();
        if id.is_empty() {
            id = if total > 1 { format!("service:{sid}:{}", i + 1) } else { format!("service:{sid}") };
        }
        if name.is_empty() {
            name = format!("Service '{sid}' check");
        }
    }
    if id.is_empty() {
        id = name.clone();
    }
    if name.is_empty() {
        name = id.clone();
    }
    if id.is_empty() {
        return Err(invalid("Missing check name"));
    }
    let status = match s(v, "Status").as_str() {
        "" => None,
        other => Some(Status::parse(other).ok_or_else(|| invalid(format!("Invalid check status: \"{other}\"")))?),
    };
    Ok(Check {
        node: node.to_string(),
        check_id: id,
        name,
        status: status.or(Some(Status::Critical)),
        notes: s(v, "Notes"),
        output: s(v, "Output"),
        service_id,
        check_type: definition.kind().to_string(),
        definition,
        ..Default::default()
    })
}

/// A service from `/v1/agent/service/register` or a config file, with its checks.
pub fn service(v: &Value, node: &str) -> Result<(Service, Vec<Check>), DefError> {
    let name = s(v, "Name");
    if name.is_empty() {
        return Err(invalid("Missing service name"));
    }
    let mut id = s(v, "ID");
    if id.is_empty() {
        id = name.clone();
    }
    let port = u(v, "Port")?;
    if port > 65535 {
        return Err(invalid(format!("Invalid port: {port}")));
    }
    let weights = match v.get("Weights") {
        Some(w) if w.is_object() => {
            let passing = u(w, "Passing")? as i64;
            let warning = u(w, "Warning")? as i64;
            if passing < 1 {
                return Err(invalid("Passing must be greater than 0"));
            }
            Weights { passing, warning }
        }
        _ => Weights::default(),
    };
    let mut tagged = std::collections::BTreeMap::new();
    if let Some(Value::Object(m)) = v.get("TaggedAddresses") {
        for (k, a) in m {
            tagged.insert(k.clone(), ServiceAddress { address: s(a, "Address"), port: u(a, "Port")? as u16 });
        }
    }
    let svc = Service {
        id: id.clone(),
        service: name,
        kind: s(v, "Kind"),
        tags: strings(v, "Tags"),
        address: s(v, "Address"),
        tagged_addresses: tagged,
        meta: string_map(v, "Meta"),
        port: port as u16,
        weights,
        enable_tag_override: b(v, "EnableTagOverride"),
        proxy: v.get("Proxy").filter(|p| p.is_object()).cloned(),
        connect: v.get("Connect").filter(|p| p.is_object()).cloned(),
        locality: v.get("Locality").filter(|p| p.is_object()).cloned(),
        ..Default::default()
    };
    let mut check_values: Vec<&Value> = Vec::new();
    if let Some(c) = v.get("Check").filter(|c| c.is_object()) {
        check_values.push(c);
    }
    if let Some(Value::Array(a)) = v.get("Checks") {
        check_values.extend(a.iter().filter(|c| c.is_object()));
    }
    let total = check_values.len();
    let mut checks = Vec::new();
    for (i, c) in check_values.into_iter().enumerate() {
        // An empty check object (`"Check": {}`) is Consul's way of saying "no check".
        if c.as_object().is_some_and(|m| m.values().all(|x| x.is_null() || x == "" || x == 0)) {
            continue;
        }
        checks.push(check(c, node, Some((&id, i, total)))?);
    }
    Ok((svc, checks))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_matched_case_insensitively_and_in_snake_case() {
        let v = normalize(json!({
            "name": "web", "id": "web1", "enabletagoverride": true, "port": 80,
            "meta": {"Some_Key": "v"},
            "tagged_addresses": {"lan": {"address": "10.0.0.1", "port": 80}},
            "check": {"ttl": "15.0s", "deregister_critical_service_after": "90m"}
        }));
        let (svc, checks) = service(&v, "n1").expect("valid");
        assert_eq!((svc.id.as_str(), svc.service.as_str(), svc.port), ("web1", "web", 80));
        assert!(svc.enable_tag_override);
        assert_eq!(svc.meta.get("Some_Key").map(String::as_str), Some("v"), "meta keys untouched");
        assert_eq!(svc.tagged_addresses["lan"].address, "10.0.0.1");
        assert_eq!(checks.len(), 1);
        assert_eq!(checks[0].check_id, "service:web1");
        assert_eq!(checks[0].check_type, "ttl");
        assert_eq!(checks[0].definition.ttl_ns, 15_000_000_000);
        assert_eq!(checks[0].definition.deregister_critical_service_after_ns, 5_400_000_000_000);
    }

    #[test]
    fn several_checks_get_numbered_ids_and_durations_accept_nanoseconds() {
        let v = normalize(json!({"Name": "db", "Checks": [
            {"TCP": "127.0.0.1:5432", "Interval": 10_000_000_000u64},
            {"Args": ["/bin/true"], "Interval": "0.001s"}
        ]}));
        let (_, checks) = service(&v, "n1").expect("valid");
        assert_eq!(checks[0].check_id, "service:db:1");
        assert_eq!(checks[1].check_id, "service:db:2");
        assert_eq!(checks[0].definition.interval_ns, 10_000_000_000);
        assert_eq!(checks[1].definition.interval_ns, 1_000_000);
        assert_eq!(checks[1].check_type, "script");
    }

    #[test]
    fn bad_definitions_are_errors() {
        assert!(service(&normalize(json!({"Port": 1})), "n").is_err());
        assert!(service(&normalize(json!({"Name": "x", "Port": 70000})), "n").is_err());
        assert!(check(&normalize(json!({"Name": "c", "HTTP": "http://x"})), "n", None).is_err(), "no interval");
        assert!(check(&normalize(json!({"Name": "c", "TTL": "nope"})), "n", None).is_err());
        assert!(check(&normalize(json!({"Name": "c", "TTL": "1s", "Status": "bogus"})), "n", None).is_err());
    }
}
