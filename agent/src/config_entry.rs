//! Config entries (`/v1/config`): the kinds Consul knows, their names' rules, and the checks
//! Consul makes before it stores one. Entries are kept as Consul's JSON (canonical field names);
//! this module is pure — it reads no state but what it is given.

use serde_json::{Map, Value};

/// The kinds this agent stores, as Consul spells them.
pub const KINDS: &[&str] = &[
    "service-defaults",
    "proxy-defaults",
    "service-router",
    "service-splitter",
    "service-resolver",
    "ingress-gateway",
    "terminating-gateway",
    "service-intentions",
    "mesh",
    "exported-services",
];

/// Kinds that belong to one service (ACL: `service:read/write` on their name); the others are
/// mesh-wide (`operator:read/write`).
pub fn is_service_kind(kind: &str) -> bool {
    matches!(
        kind,
        "service-defaults"
            | "service-router"
            | "service-splitter"
            | "service-resolver"
            | "ingress-gateway"
            | "terminating-gateway"
            | "service-intentions"
    )
}

/// Consul's kind names are also accepted in their old spellings.
pub fn canonical_kind(kind: &str) -> Option<&'static str> {
    let k = kind.to_ascii_lowercase();
    let k = match k.as_str() {
        "service-default" => "service-defaults",
        "proxy-default" => "proxy-defaults",
        other => return KINDS.iter().copied().find(|x| *x == other),
    };
    Some(k)
}

fn s<'a>(v: &'a Map<String, Value>, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn protocol_ok(p: &str) -> bool {
    matches!(p, "" | "tcp" | "http" | "http2" | "grpc")
}

/// Checks `entry` (already carrying `Kind` and `Name`); the error is Consul's 400 text.
/// `protocol_of` gives a service's configured protocol (its service-defaults, else
/// proxy-defaults, else tcp), which routers and splitters need to be L7.
pub fn validate(entry: &Map<String, Value>, protocol_of: &dyn Fn(&str) -> String) -> Result<(), String> {
    let kind = s(entry, "Kind");
    let name = s(entry, "Name");
    if name.is_empty() {
        return Err(format!("Name is required for config entry kind {kind:?}"));
    }
    if name.len() > 256 || name.chars().any(|c| c.is_control()) {
        return Err(format!("invalid config entry name {name:?}"));
    }
    match kind {
        "proxy-defaults" if name != "global" => {
            return Err(format!("invalid name (\"{name}\"), only \"global\" is supported"))
        }
        "mesh" if name != "mesh" => return Err(format!("invalid name (\"{name}\"), only \"mesh\" is supported")),
        "exported-services" if name != "default" => {
            return Err(format!("exported-services Name must be \"default\", got {name:?}"))
        }
        _ => {}
    }
    match kind {
        "service-defaults" | "proxy-defaults" => {
            let p = protocol_field(entry);
            if !protocol_ok(&p) {
                return Err(format!("invalid protocol {p:?}: must be one of tcp, http, http2, grpc"));
            }
            if let Some(m) = entry.get("Mode").and_then(Value::as_str) {
                if !matches!(m, "" | "direct" | "transparent") {
                    return Err(format!("Mode: invalid proxy mode {m:?}"));
                }
            }
        }
        "service-splitter" => {
            let splits = entry.get("Splits").and_then(Value::as_array).cloned().unwrap_or_default();
            if splits.is_empty() {
                return Err("no splits configured".into());
            }
            let sum: f64 = splits.iter().map(|x| x.get("Weight").and_then(Value::as_f64).unwrap_or(0.0)).sum();
            if (sum - 100.0).abs() > 0.01 {
                return Err(format!("the sum of all split weights must be 100, not {sum}"));
            }
            l7(name, protocol_of, "splitting")?;
        }
        "service-router" => {
            l7(name, protocol_of, "routing")?;
        }
        "service-resolver" => {
            let subsets = entry.get("Subsets").and_then(Value::as_object);
            let default_subset = s(entry, "DefaultSubset");
            if !default_subset.is_empty() && !subsets.is_some_and(|m| m.contains_key(default_subset)) {
                return Err(format!("DefaultSubset {default_subset:?} is not a valid subset"));
            }
            if let Some(t) = entry.get("ConnectTimeout") {
                let ok = match t {
                    Value::String(d) => api::duration::parse(d).is_ok(),
                    Value::Number(_) => true,
                    _ => false,
                };
                if !ok {
                    return Err(format!("invalid ConnectTimeout {t}"));
                }
            }
            if entry.get("Redirect").is_some_and(|r| !r.is_null())
                && entry.get("Failover").is_some_and(|f| !f.is_null())
            {
                return Err("Redirect and Failover cannot both be set".into());
            }
        }
        "ingress-gateway" => {
            for l in entry.get("Listeners").and_then(Value::as_array).into_iter().flatten() {
                let port = l.get("Port").and_then(Value::as_u64).unwrap_or(0);
                if !(1..=65535).contains(&port) {
                    return Err(format!("listener port {port} is not valid"));
                }
                let p = l.get("Protocol").and_then(Value::as_str).unwrap_or("tcp");
                if !protocol_ok(p) {
                    return Err(format!(
                        "protocol must be 'tcp', 'http', 'http2', or 'grpc'. '{p}' is an unsupported protocol"
                    ));
                }
                let services = l.get("Services").and_then(Value::as_array).cloned().unwrap_or_default();
                if p == "tcp" && services.len() > 1 {
                    return Err(format!(
                        "multiple services per listener are only supported for L7 protocols, port {port} has {}",
                        services.len()
                    ));
                }
                for svc in services {
                    if svc.get("Name").and_then(Value::as_str).unwrap_or("").is_empty() {
                        return Err(format!("Service name cannot be blank on listener port {port}"));
                    }
                }
            }
        }
        "terminating-gateway" => {
            for svc in entry.get("Services").and_then(Value::as_array).into_iter().flatten() {
                if svc.get("Name").and_then(Value::as_str).unwrap_or("").is_empty() {
                    return Err("Service name cannot be blank".into());
                }
            }
        }
        "service-intentions" => {
            for src in entry.get("Sources").and_then(Value::as_array).into_iter().flatten() {
                let action = src.get("Action").and_then(Value::as_str).unwrap_or("");
                if src.get("Name").and_then(Value::as_str).unwrap_or("").is_empty() {
                    return Err("Sources[*].Name is required".into());
                }
                if !matches!(action, "allow" | "deny") && src.get("Permissions").is_none() {
                    return Err(format!("Sources[*].Action must be set to 'allow' or 'deny', got {action:?}"));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

fn protocol_field(entry: &Map<String, Value>) -> String {
    let direct = s(entry, "Protocol");
    if !direct.is_empty() {
        return direct.to_ascii_lowercase();
    }
    // proxy-defaults keep it in Config.protocol.
    entry
        .get("Config")
        .and_then(|c| c.get("protocol").or_else(|| c.get("Protocol")))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// Routers and splitters need an L7 protocol, as Consul refuses them on tcp services.
fn l7(name: &str, protocol_of: &dyn Fn(&str) -> String, what: &str) -> Result<(), String> {
    let p = protocol_of(name);
    if p == "tcp" || p.is_empty() {
        return Err(format!(
            "does not permit advanced {what} or splitting behavior for non-L7 protocol \"{}\" for service {name:?}",
            if p.is_empty() { "tcp" } else { &p }
        ));
    }
    Ok(())
}

/// The protocol a service speaks: its service-defaults, else proxy-defaults' global, else tcp.
pub fn protocol(
    entries: &std::collections::BTreeMap<String, std::collections::BTreeMap<String, Value>>,
    service: &str,
) -> String {
    let of = |kind: &str, name: &str| {
        entries
            .get(kind)
            .and_then(|m| m.get(name))
            .and_then(Value::as_object)
            .map(protocol_field)
            .filter(|p| !p.is_empty())
    };
    of("service-defaults", service).or_else(|| of("proxy-defaults", "global")).unwrap_or_else(|| "tcp".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(v: Value) -> Result<(), String> {
        validate(v.as_object().expect("object"), &|n: &str| if n == "web" { "http".into() } else { "tcp".into() })
    }

    #[test]
    fn consuls_rules_per_kind() {
        assert!(check(json!({"Kind": "service-defaults", "Name": "web", "Protocol": "http"})).is_ok());
        assert!(check(json!({"Kind": "service-defaults", "Name": "web", "Protocol": "ftp"}))
            .unwrap_err()
            .contains("invalid protocol"));
        assert!(check(json!({"Kind": "service-defaults", "Name": ""})).unwrap_err().starts_with("Name is required"));
        assert!(check(json!({"Kind": "proxy-defaults", "Name": "x"})).unwrap_err().contains("only \"global\""));
        assert!(check(json!({"Kind": "service-splitter", "Name": "web", "Splits": [{"Weight": 50}, {"Weight": 40}]}))
            .unwrap_err()
            .contains("must be 100, not 90"));
        assert!(check(json!({"Kind": "service-splitter", "Name": "web", "Splits": [{"Weight": 50}, {"Weight": 50}]}))
            .is_ok());
        assert!(check(json!({"Kind": "service-router", "Name": "db"})).unwrap_err().contains("non-L7 protocol"));
        assert!(check(json!({"Kind": "service-resolver", "Name": "db", "DefaultSubset": "v1"}))
            .unwrap_err()
            .contains("not a valid subset"));
        assert!(check(json!({"Kind": "ingress-gateway", "Name": "gw", "Listeners": [{"Port": 0}]})).is_err());
        assert!(check(
            json!({"Kind": "service-intentions", "Name": "db", "Sources": [{"Name": "web", "Action": "maybe"}]})
        )
        .is_err());
        assert_eq!(canonical_kind("Service-Defaults"), Some("service-defaults"));
        assert_eq!(canonical_kind("nope"), None);
    }
}
