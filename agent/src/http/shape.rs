//! The Go types Consul decodes each request body into, so that a value of the wrong JSON type is
//! refused with 400 naming the field, the way Go's `encoding/json` refuses it, instead of being
//! coerced by the lenient readers in `defs` (`{"Name":0,"Port":"8080"}` once registered service
//! "0" on port 8080). Bodies are checked after `defs::normalize`, so field names here are the
//! canonical spellings; unknown fields are ignored, as Go ignores them.

use serde_json::Value;

#[derive(Debug, Clone, Copy)]
pub enum Go {
    String,
    Int,
    Uint,
    Float,
    Bool,
    /// `time.Duration` with Consul's decoder: a Go duration string or a number of nanoseconds.
    Duration,
    /// `[]T`.
    List(&'static Go),
    /// `map[string]T`.
    Map(&'static Go),
    /// A struct: its Go name and its fields.
    Struct(&'static str, &'static [(&'static str, Go)]),
    /// Decoded by hand elsewhere (opaque config, proxy blocks).
    Any,
}

const STRINGS: Go = Go::List(&Go::String);
const STRING_MAP: Go = Go::Map(&Go::String);

const WEIGHTS: Go = Go::Struct("Weights", &[("Passing", Go::Int), ("Warning", Go::Int)]);
const SERVICE_ADDRESS: Go = Go::Struct("ServiceAddress", &[("Address", Go::String), ("Port", Go::Int)]);
const LOCALITY: Go = Go::Struct("Locality", &[("Region", Go::String), ("Zone", Go::String)]);

/// The fields of Consul's `CheckType` / `CheckDefinition` (agent check and service checks).
const CHECK_FIELDS: &[(&str, Go)] = &[
    ("ID", Go::String),
    ("CheckID", Go::String),
    ("Name", Go::String),
    ("ServiceID", Go::String),
    ("Notes", Go::String),
    ("Status", Go::String),
    ("Output", Go::String),
    ("HTTP", Go::String),
    ("Header", Go::Map(&STRINGS)),
    ("Method", Go::String),
    ("Body", Go::String),
    ("TCP", Go::String),
    ("UDP", Go::String),
    ("GRPC", Go::String),
    ("GRPCUseTLS", Go::Bool),
    ("H2PING", Go::String),
    ("TLSServerName", Go::String),
    ("TLSSkipVerify", Go::Bool),
    ("Interval", Go::Duration),
    ("Timeout", Go::Duration),
    ("TTL", Go::Duration),
    ("Args", STRINGS),
    ("ScriptArgs", STRINGS),
    ("DockerContainerID", Go::String),
    ("Shell", Go::String),
    ("DeregisterCriticalServiceAfter", Go::Duration),
    ("SuccessBeforePassing", Go::Int),
    ("FailuresBeforeWarning", Go::Int),
    ("FailuresBeforeCritical", Go::Int),
    ("OutputMaxSize", Go::Int),
    ("AliasNode", Go::String),
    ("AliasService", Go::String),
    ("Token", Go::String),
];

pub const CHECK_DEFINITION: Go = Go::Struct("CheckDefinition", CHECK_FIELDS);
const CHECK_TYPE: Go = Go::Struct("CheckType", CHECK_FIELDS);

/// `PUT /v1/agent/service/register`.
pub const SERVICE_DEFINITION: Go = Go::Struct(
    "ServiceDefinition",
    &[
        ("ID", Go::String),
        ("Name", Go::String),
        ("Kind", Go::String),
        ("Tags", STRINGS),
        ("Address", Go::String),
        ("TaggedAddresses", Go::Map(&SERVICE_ADDRESS)),
        ("Meta", STRING_MAP),
        ("Port", Go::Int),
        ("SocketPath", Go::String),
        ("Check", CHECK_TYPE),
        ("Checks", Go::List(&CHECK_TYPE)),
        ("Weights", WEIGHTS),
        ("Token", Go::String),
        ("EnableTagOverride", Go::Bool),
        ("Proxy", Go::Any),
        ("Connect", Go::Any),
        ("Locality", LOCALITY),
        ("Namespace", Go::String),
        ("Partition", Go::String),
    ],
);

const AGENT_SERVICE: Go = Go::Struct(
    "AgentService",
    &[
        ("ID", Go::String),
        ("Service", Go::String),
        ("Name", Go::String),
        ("Kind", Go::String),
        ("Tags", STRINGS),
        ("Address", Go::String),
        ("TaggedAddresses", Go::Map(&SERVICE_ADDRESS)),
        ("Meta", STRING_MAP),
        ("Port", Go::Int),
        ("Weights", WEIGHTS),
        ("EnableTagOverride", Go::Bool),
        ("Proxy", Go::Any),
        ("Connect", Go::Any),
        ("Locality", LOCALITY),
        ("CreateIndex", Go::Uint),
        ("ModifyIndex", Go::Uint),
    ],
);

const HEALTH_CHECK: Go = Go::Struct(
    "HealthCheck",
    &[
        ("Node", Go::String),
        ("CheckID", Go::String),
        ("ID", Go::String),
        ("Name", Go::String),
        ("Status", Go::String),
        ("Notes", Go::String),
        ("Output", Go::String),
        ("ServiceID", Go::String),
        ("ServiceName", Go::String),
        ("ServiceTags", STRINGS),
        ("Type", Go::String),
        ("Definition", Go::Struct("HealthCheckDefinition", CHECK_FIELDS)),
        ("CreateIndex", Go::Uint),
        ("ModifyIndex", Go::Uint),
    ],
);

/// `PUT /v1/catalog/register`.
pub const REGISTER_REQUEST: Go = Go::Struct(
    "RegisterRequest",
    &[
        ("Datacenter", Go::String),
        ("ID", Go::String),
        ("Node", Go::String),
        ("Address", Go::String),
        ("TaggedAddresses", STRING_MAP),
        ("NodeMeta", STRING_MAP),
        ("Service", AGENT_SERVICE),
        ("Check", HEALTH_CHECK),
        ("Checks", Go::List(&HEALTH_CHECK)),
        ("SkipNodeUpdate", Go::Bool),
        ("Token", Go::String),
        ("Locality", LOCALITY),
    ],
);

/// `PUT /v1/catalog/deregister`.
pub const DEREGISTER_REQUEST: Go = Go::Struct(
    "DeregisterRequest",
    &[("Datacenter", Go::String), ("Node", Go::String), ("ServiceID", Go::String), ("CheckID", Go::String)],
);

/// `PUT /v1/session/create`.
pub const SESSION_REQUEST: Go = Go::Struct(
    "SessionRequest",
    &[
        ("Name", Go::String),
        ("Node", Go::String),
        ("LockDelay", Go::Duration),
        ("Behavior", Go::String),
        ("TTL", Go::String),
        ("Checks", STRINGS),
        ("NodeChecks", STRINGS),
        ("ServiceChecks", Go::List(&Go::Struct("ServiceCheck", &[("ID", Go::String), ("Namespace", Go::String)]))),
    ],
);

/// `PUT /v1/agent/check/update/:id`.
/// `PUT /v1/operator/autopilot/configuration`.
pub const AUTOPILOT_CONFIGURATION: Go = Go::Struct(
    "AutopilotConfiguration",
    &[
        ("CleanupDeadServers", Go::Bool),
        ("LastContactThreshold", Go::Duration),
        ("MaxTrailingLogs", Go::Uint),
        ("MinQuorum", Go::Uint),
        ("ServerStabilizationTime", Go::Duration),
        ("RedundancyZoneTag", Go::String),
        ("DisableUpgradeMigration", Go::Bool),
        ("UpgradeVersionTag", Go::String),
    ],
);

/// `POST|PUT|DELETE /v1/operator/keyring` (Consul's `keyringArgs`).
pub const KEYRING_REQUEST: Go = Go::Struct(
    "keyringArgs",
    &[("Key", Go::String), ("Token", Go::String), ("RelayFactor", Go::Uint), ("LocalOnly", Go::Bool)],
);

pub const CHECK_UPDATE: Go = Go::Struct("checkUpdate", &[("Status", Go::String), ("Output", Go::String)]);

/// `PUT /v1/coordinate/update`.
pub const COORDINATE_UPDATE: Go = Go::Struct(
    "CoordinateUpdateRequest",
    &[
        ("Datacenter", Go::String),
        ("Node", Go::String),
        ("Segment", Go::String),
        (
            "Coord",
            Go::Struct(
                "Coordinate",
                &[
                    ("Vec", Go::List(&Go::Float)),
                    ("Error", Go::Float),
                    ("Adjustment", Go::Float),
                    ("Height", Go::Float),
                ],
            ),
        ),
    ],
);

const TXN_KV: Go = Go::Struct(
    "KVTxnOp",
    &[
        ("Verb", Go::String),
        ("Key", Go::String),
        ("Value", Go::String),
        ("Flags", Go::Uint),
        ("Index", Go::Uint),
        ("Session", Go::String),
    ],
);

/// `PUT /v1/txn`: a list of operations.
pub const TXN_OPS: Go = Go::List(&Go::Struct(
    "TxnOp",
    &[
        ("KV", TXN_KV),
        ("Node", Go::Struct("NodeTxnOp", &[("Verb", Go::String), ("Node", Go::Any)])),
        (
            "Service",
            Go::Struct("ServiceTxnOp", &[("Verb", Go::String), ("Node", Go::String), ("Service", AGENT_SERVICE)]),
        ),
        ("Check", Go::Struct("CheckTxnOp", &[("Verb", Go::String), ("Check", HEALTH_CHECK)])),
    ],
));

/// One element of a `?filter`-able answer with every field present (see
/// `Filter::check_selectors`), or `None` where selectors are not checked.
pub fn filter_sample(endpoint: &super::routes::Endpoint) -> Option<&'static Value> {
    use super::routes::Endpoint::*;
    use std::sync::OnceLock;
    static NODE: OnceLock<Value> = OnceLock::new();
    static CHECK: OnceLock<Value> = OnceLock::new();
    static ENTRY: OnceLock<Value> = OnceLock::new();
    static CATALOG_SERVICE: OnceLock<Value> = OnceLock::new();
    static AGENT_SERVICE: OnceLock<Value> = OnceLock::new();
    static MEMBER: OnceLock<Value> = OnceLock::new();
    fn json<T: serde::Serialize>(v: T) -> Value {
        serde_json::to_value(v).unwrap_or_default()
    }
    // Optional blocks that are skipped when absent are opaque maps to a filter.
    let service = || {
        let mut s = json(api::AgentService::default());
        if let Value::Object(m) = &mut s {
            for k in ["Proxy", "Connect", "Locality"] {
                m.insert(k.into(), Value::Object(Default::default()));
            }
        }
        s
    };
    Some(match endpoint {
        CatalogNodes => NODE.get_or_init(|| json(api::Node::default())),
        HealthNode(_) | HealthChecks(_) | HealthState(_) | AgentChecks => {
            CHECK.get_or_init(|| json(api::HealthCheck::default()))
        }
        HealthService(_) | HealthConnect(_) | HealthIngress(_) => ENTRY.get_or_init(|| {
            let mut e = json(api::ServiceEntry { checks: vec![api::HealthCheck::default()], ..Default::default() });
            if let Some(m) = e.as_object_mut() {
                m.insert("Service".into(), service());
            }
            e
        }),
        CatalogService(_) | CatalogConnect(_) | CatalogServices => CATALOG_SERVICE.get_or_init(|| {
            let mut s = json(api::CatalogService::default());
            if let Some(m) = s.as_object_mut() {
                m.insert("ServiceProxy".into(), Value::Object(Default::default()));
            }
            s
        }),
        CatalogNode(_) | CatalogNodeServices(_) | AgentServices => AGENT_SERVICE.get_or_init(service),
        AgentMembers => MEMBER.get_or_init(|| json(api::AgentMember::default())),
        _ => return None,
    })
}

/// Checks `v` against `shape`; the error is Go's text, prefixed as Consul prefixes it.
pub fn check(v: &Value, shape: Go) -> Result<(), String> {
    let root = match shape {
        Go::Struct(name, _) => name,
        Go::List(Go::Struct(name, _)) => name,
        _ => "",
    };
    walk(v, shape, root, "").map_err(|e| format!("Request decode failed: {e}"))
}

/// Go's word for a JSON value in `cannot unmarshal X into`.
fn json_kind(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(_) => "bool".into(),
        Value::Number(n) if n.is_f64() => format!("number {n}"),
        Value::Number(_) => "number".into(),
        Value::String(_) => "string".into(),
        Value::Array(_) => "array".into(),
        Value::Object(_) => "object".into(),
    }
}

fn go_name(t: Go) -> String {
    match t {
        Go::String => "string".into(),
        Go::Int => "int".into(),
        Go::Uint => "uint64".into(),
        Go::Float => "float64".into(),
        Go::Bool => "bool".into(),
        Go::Duration => "time.Duration".into(),
        Go::List(inner) => format!("[]{}", go_name(*inner)),
        Go::Map(inner) => format!("map[string]{}", go_name(*inner)),
        Go::Struct(name, _) => format!("structs.{name}"),
        Go::Any => "interface {}".into(),
    }
}

fn walk(v: &Value, t: Go, root: &str, path: &str) -> Result<(), String> {
    // JSON null leaves any Go value at its zero value.
    if v.is_null() {
        return Ok(());
    }
    let wrong = || {
        let into =
            if path.is_empty() { " into Go value".to_string() } else { format!(" into Go struct field {root}.{path}") };
        // A number of the wrong range or form is shown with its value, as Go shows it.
        let what = match (v, t) {
            (Value::Number(n), Go::Int | Go::Uint) => format!("number {n}"),
            _ => json_kind(v),
        };
        Err(format!("json: cannot unmarshal {what}{into} of type {}", go_name(t)))
    };
    match t {
        Go::Any => Ok(()),
        Go::String => {
            if v.is_string() {
                Ok(())
            } else {
                wrong()
            }
        }
        Go::Bool => {
            if v.is_boolean() {
                Ok(())
            } else {
                wrong()
            }
        }
        Go::Float => {
            if v.is_number() {
                Ok(())
            } else {
                wrong()
            }
        }
        Go::Int => {
            if v.is_i64() || v.is_u64() && v.as_i64().is_some() {
                Ok(())
            } else {
                wrong()
            }
        }
        Go::Uint => {
            if v.is_u64() {
                Ok(())
            } else {
                wrong()
            }
        }
        Go::Duration => match v {
            Value::String(s) if api::duration::parse(s).is_ok() => Ok(()),
            Value::String(s) => Err(format!("time: invalid duration {s:?}")),
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(()),
            _ => wrong(),
        },
        Go::List(inner) => match v {
            Value::Array(items) => {
                // Go names a list element by the list's field.
                for item in items {
                    walk(item, *inner, root, path)?;
                }
                Ok(())
            }
            _ => wrong(),
        },
        Go::Map(inner) => match v {
            Value::Object(m) => {
                for (k, item) in m {
                    let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                    walk(item, *inner, root, &p)?;
                }
                Ok(())
            }
            _ => wrong(),
        },
        Go::Struct(_, fields) => match v {
            Value::Object(m) => {
                for (k, item) in m {
                    if let Some((_, ft)) = fields.iter().find(|(name, _)| name == k) {
                        let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                        walk(item, *ft, root, &p)?;
                    }
                }
                Ok(())
            }
            _ => wrong(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wrong_types_are_named_as_go_names_them() {
        let e = check(&json!({"Name": 0, "Port": "8080", "Tags": 5}), SERVICE_DEFINITION).expect_err("bad");
        assert_eq!(
            e,
            "Request decode failed: json: cannot unmarshal number into Go struct field ServiceDefinition.Name of type string"
        );
        let e = check(&json!({"Name": "web", "Port": "8080"}), SERVICE_DEFINITION).expect_err("bad");
        assert!(e.ends_with("ServiceDefinition.Port of type int"), "{e}");
        let e = check(&json!({"Name": "web", "Tags": 5}), SERVICE_DEFINITION).expect_err("bad");
        assert!(e.ends_with("ServiceDefinition.Tags of type []string"), "{e}");
        let e = check(&json!({"Name": "web", "Tags": ["a", 1]}), SERVICE_DEFINITION).expect_err("bad");
        assert!(
            e.contains("cannot unmarshal number into Go struct field ServiceDefinition.Tags of type string"),
            "{e}"
        );
        let e = check(&json!({"Name": "web", "Port": 80.5}), SERVICE_DEFINITION).expect_err("bad");
        assert!(e.contains("cannot unmarshal number 80.5"), "{e}");
        let e = check(&json!({"Name": "w", "Check": {"Interval": true}}), SERVICE_DEFINITION).expect_err("bad");
        assert!(e.contains("ServiceDefinition.Check.Interval of type time.Duration"), "{e}");
        let e = check(&json!({"Node": 5}), REGISTER_REQUEST).expect_err("bad");
        assert!(e.contains("RegisterRequest.Node of type string"), "{e}");
        let e = check(&json!({"Datacenter": ["dc1"]}), DEREGISTER_REQUEST).expect_err("bad");
        assert!(e.contains("cannot unmarshal array into Go struct field DeregisterRequest.Datacenter"), "{e}");
        let e = check(&json!({"Node": "n", "Coord": {"Vec": ["x"]}}), COORDINATE_UPDATE).expect_err("bad");
        assert!(e.contains("CoordinateUpdateRequest.Coord.Vec of type float64"), "{e}");
        let e = check(&json!([{"KV": {"Verb": "set", "Flags": -1}}]), TXN_OPS).expect_err("bad");
        assert!(e.contains("TxnOp.KV.Flags of type uint64"), "{e}");
        let e = check(&json!("x"), SERVICE_DEFINITION).expect_err("bad");
        assert!(e.contains("cannot unmarshal string into Go value of type structs.ServiceDefinition"), "{e}");
    }

    #[test]
    fn right_types_nulls_and_unknown_fields_pass() {
        let ok = json!({"ID": "w1", "Name": "web", "Port": 80, "Tags": ["a"], "Meta": {"k": "v"}, "Extra": [1],
                        "Weights": {"Passing": 3}, "Check": {"HTTP": "http://x", "Interval": "10s"},
                        "Checks": [{"TTL": 1000000000}], "TaggedAddresses": {"lan": {"Address": "1.2.3.4", "Port": 1}},
                        "Address": null});
        check(&ok, SERVICE_DEFINITION).expect("valid");
        check(&Value::Null, SESSION_REQUEST).expect("an empty body");
        check(&json!([{"KV": {"Verb": "get", "Key": "k"}}]), TXN_OPS).expect("valid txn");
    }
}
