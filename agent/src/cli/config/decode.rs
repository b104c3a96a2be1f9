//! A config entry file (JSON or HCL) into the JSON body `PUT /v1/config` takes, the way Consul's
//! CLI reads one: HCL1 or JSON, `kind`/`Kind` at the top, snake_case keys (`default_subset`,
//! `mesh_gateway`) and any casing of a field's name (`protocol`) turned into the API's CamelCase
//! (`DefaultSubset`, `MeshGateway`, `Protocol`), HCL's blocks (lists of one object) turned back
//! into objects except where the field is a list. User maps (`Meta`, proxy-defaults' `Config`,
//! header maps, extension arguments) keep their keys as written; the keys of `Subsets` and
//! `Failover` are names, their values are translated. Pure: no IO.

use serde_json::{Map, Value};

/// The kinds this agent stores (Consul's CLI knows them by `api.MakeConfigEntry`).
pub(super) use crate::config_entry::KINDS;

/// Word parts that Go spells in capitals (`external_sni` is `ExternalSNI`).
const ACRONYMS: &[(&str, &str)] = &[
    ("acl", "ACL"),
    ("ca", "CA"),
    ("dns", "DNS"),
    ("http", "HTTP"),
    ("id", "ID"),
    ("ip", "IP"),
    ("json", "JSON"),
    ("jwt", "JWT"),
    ("sds", "SDS"),
    ("sni", "SNI"),
    ("tls", "TLS"),
    ("ttl", "TTL"),
    ("uri", "URI"),
    ("url", "URL"),
];

/// Fields that are lists of objects: an HCL block given once stays a list of one.
const LISTS: &[&str] = &[
    "Consumers",
    "EnvoyExtensions",
    "HashPolicies",
    "Header",
    "Listeners",
    "Overrides",
    "Paths",
    "Permissions",
    "Providers",
    "QueryParam",
    "Routes",
    "Services",
    "Sources",
    "Splits",
    "Targets",
    "VerifyClaims",
];

/// Maps whose keys are the user's (left as written).
const USER_MAPS: &[&str] = &["Meta", "LegacyMeta", "Config", "Add", "Set", "Arguments"];

/// Maps whose keys are names (subsets, failover targets) and whose values are structs.
const NAMED: &[&str] = &["Subsets", "Failover"];

/// Consul's decoding errors, worded as its CLI prints them after
/// `Failed to decode config entry input: `.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("Failed to decode config entry input: {0}")]
    Syntax(String),
    #[error("Payload does not contain a kind/Kind key at the top level")]
    NoKind,
    #[error("Kind value in payload is not a string")]
    KindNotString,
    #[error("invalid config entry kind: {0}")]
    UnknownKind(String),
    #[error("config entry must be an object")]
    NotObject,
}

/// The API's name for a key: `connect_timeout` → `ConnectTimeout`, `protocol` → `Protocol`,
/// `sni` → `SNI`; a key already in CamelCase is kept.
pub(super) fn canonical_key(key: &str) -> String {
    let starts_lower = key.chars().next().is_some_and(|c| c.is_ascii_lowercase());
    if !key.contains('_') && !starts_lower {
        return key.to_string();
    }
    key.split('_')
        .filter(|w| !w.is_empty())
        .map(|w| {
            let lower = w.to_ascii_lowercase();
            match ACRONYMS.iter().find(|(a, _)| *a == lower) {
                Some((_, up)) => (*up).to_string(),
                None => {
                    let mut c = w.chars();
                    c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
                }
            }
        })
        .collect()
}

/// Parses a file's text: JSON when it is a JSON object, HCL1 otherwise (Consul's `hcl.Decode`
/// reads both).
pub(crate) fn parse(text: &str) -> Result<Map<String, Value>, DecodeError> {
    let raw = if text.trim_start().starts_with('{') {
        serde_json::from_str::<Value>(text).map_err(|e| DecodeError::Syntax(e.to_string()))?
    } else {
        hcl1::parse(text).map_err(|e| DecodeError::Syntax(e.to_string()))?
    };
    match raw {
        Value::Object(m) => Ok(m),
        _ => Err(DecodeError::NotObject),
    }
}

/// The entry's `Kind` (checked as `api.MakeConfigEntry` checks it) and its body with canonical
/// keys.
pub(crate) fn decode(raw: Map<String, Value>) -> Result<(String, Map<String, Value>), DecodeError> {
    let kind = raw.get("Kind").or_else(|| raw.get("kind")).ok_or(DecodeError::NoKind)?;
    let kind = kind.as_str().ok_or(DecodeError::KindNotString)?.to_string();
    if !KINDS.contains(&kind.as_str()) {
        return Err(DecodeError::UnknownKind(kind));
    }
    let Value::Object(mut entry) = translate(Value::Object(raw)) else {
        return Err(DecodeError::NotObject);
    };
    entry.insert("Kind".into(), Value::String(kind.clone()));
    Ok((kind, entry))
}

/// HCL's list of one object is that object (`HookWeakDecodeFromSlice`).
fn unwrap_block(v: Value) -> Value {
    match v {
        Value::Array(mut items) if items.len() == 1 && items[0].is_object() => items.remove(0),
        other => other,
    }
}

/// Translates the keys of a struct-shaped object, recursing into its fields.
fn translate(v: Value) -> Value {
    let Value::Object(m) = v else {
        return match v {
            Value::Array(items) => Value::Array(items.into_iter().map(translate).collect()),
            other => other,
        };
    };
    let mut out = Map::new();
    for (k, v) in m {
        let key = canonical_key(&k);
        let v = if LISTS.contains(&key.as_str()) { v } else { unwrap_block(v) };
        let v = if USER_MAPS.contains(&key.as_str()) {
            v
        } else if NAMED.contains(&key.as_str()) {
            match v {
                Value::Object(named) => {
                    Value::Object(named.into_iter().map(|(name, x)| (name, translate(unwrap_block(x)))).collect())
                }
                other => translate(other),
            }
        } else {
            translate(v)
        };
        // As Consul's translation does: a value under the canonical key itself wins.
        if key != k && out.contains_key(&key) {
            continue;
        }
        out.insert(key, v);
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hcl(text: &str) -> Map<String, Value> {
        decode(parse(text).expect("parses")).expect("decodes").1
    }

    #[test]
    fn keys_become_the_apis_names() {
        for (given, want) in [
            ("kind", "Kind"),
            ("protocol", "Protocol"),
            ("default_subset", "DefaultSubset"),
            ("external_sni", "ExternalSNI"),
            ("mutual_tls_mode", "MutualTLSMode"),
            ("tls_min_version", "TLSMinVersion"),
            ("connect_timeout_ms", "ConnectTimeoutMs"),
            ("enforcing_consecutive_5xx", "EnforcingConsecutive5xx"),
            ("legacy_id", "LegacyID"),
            ("source_ip", "SourceIP"),
            ("ca_file", "CAFile"),
            ("envoy_listener_json", "EnvoyListenerJSON"),
            ("sanitize_x_forwarded_client_cert", "SanitizeXForwardedClientCert"),
            ("http", "HTTP"),
            ("MeshGateway", "MeshGateway"),
            ("SNI", "SNI"),
        ] {
            assert_eq!(canonical_key(given), want, "{given}");
        }
    }

    #[test]
    fn hcl_service_defaults_as_consul_writes_them() {
        let e = hcl(r#"
            kind = "service-defaults"
            name = "web"
            protocol = "http"
            mesh_gateway { mode = "local" }
            meta { owner_team = "payments" }
            upstream_config {
              defaults { connect_timeout_ms = 3000 limits { max_connections = 10 } }
              overrides = [{ name = "db" protocol = "tcp" }]
            }
        "#);
        assert_eq!(
            Value::Object(e),
            json!({
                "Kind": "service-defaults", "Name": "web", "Protocol": "http",
                "MeshGateway": {"Mode": "local"},
                "Meta": {"owner_team": "payments"},
                "UpstreamConfig": {
                    "Defaults": {"ConnectTimeoutMs": 3000, "Limits": {"MaxConnections": 10}},
                    "Overrides": [{"Name": "db", "Protocol": "tcp"}],
                },
            })
        );
    }

    #[test]
    fn lists_stay_lists_and_named_maps_keep_their_names() {
        let e = hcl(r#"
            Kind = "service-resolver"
            Name = "web"
            default_subset = "v1"
            subsets {
              v1 { filter = "Service.Meta.version == v1" only_passing = true }
              v2 = { filter = "Service.Meta.version == v2" }
            }
            failover = { "*" = { datacenters = ["dc2"] } }
        "#);
        assert_eq!(e["DefaultSubset"], "v1");
        assert_eq!(e["Subsets"]["v1"], json!({"Filter": "Service.Meta.version == v1", "OnlyPassing": true}));
        assert_eq!(e["Subsets"]["v2"], json!({"Filter": "Service.Meta.version == v2"}));
        assert_eq!(e["Failover"]["*"], json!({"Datacenters": ["dc2"]}));

        let e = hcl(r#"
            kind = "service-splitter"
            name = "web"
            splits { weight = 100 service_subset = "v1" request_headers { set { x-web-version = "v1" } } }
        "#);
        assert_eq!(
            e["Splits"],
            json!([{"Weight": 100, "ServiceSubset": "v1", "RequestHeaders": {"Set": {"x-web-version": "v1"}}}])
        );

        let e = hcl(r#"
            kind = "proxy-defaults"
            name = "global"
            config { protocol = "http" local_connect_timeout_ms = 1000 }
        "#);
        assert_eq!(e["Config"], json!({"protocol": "http", "local_connect_timeout_ms": 1000}));
    }

    #[test]
    fn json_is_read_too_and_canonical_keys_win() {
        let (kind, e) = decode(
            parse(r#"{"kind": "service-defaults", "Name": "api", "protocol": "grpc", "Protocol": "http"}"#).unwrap(),
        )
        .unwrap();
        assert_eq!(kind, "service-defaults");
        assert_eq!((e["Name"].as_str(), e["Protocol"].as_str()), (Some("api"), Some("http")));
        let (_, e) =
            decode(parse(r#"{"Kind": "service-splitter", "Name": "w", "Splits": [{"Weight": 100}]}"#).unwrap())
                .unwrap();
        assert_eq!(e["Splits"], json!([{"Weight": 100}]));
    }

    #[test]
    fn consuls_refusals() {
        assert_eq!(decode(parse(r#"name = "web""#).unwrap()), Err(DecodeError::NoKind));
        assert_eq!(decode(parse("kind = 5").unwrap()), Err(DecodeError::KindNotString));
        assert_eq!(
            decode(parse(r#"kind = "service-default""#).unwrap()).unwrap_err().to_string(),
            "invalid config entry kind: service-default"
        );
        assert!(matches!(parse("kind = "), Err(DecodeError::Syntax(_))));
        assert!(matches!(parse("{\"Kind\": }"), Err(DecodeError::Syntax(_))));
    }
}
