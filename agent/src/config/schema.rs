//! The shape of Consul's config files: each key we know, its type and allowed range. Every file
//! is checked against it before it is merged, so a wrong type or an out-of-range value is an
//! error naming the file and the key (Consul's config decoder refuses them too; nothing is
//! coerced), and a key we do not know is a warning, as in Consul.
//!
//! Also the settings that would make an operator believe the agent protects something it does
//! not protect yet (`auto_encrypt`): those stop the agent ([`unenforced`]); they never just warn.

use serde_json::{Map, Value};

/// What a key may hold.
#[derive(Debug, Clone, Copy)]
pub enum Ty {
    Bool,
    /// An integer in `min..=max`.
    Int(i64, i64),
    Str,
    /// A string from a fixed set, compared case-insensitively.
    OneOf(&'static [&'static str]),
    /// A Go duration string (`"10s"`) or a number of nanoseconds.
    Duration,
    /// A list of strings; a single string is a list of one.
    Strings,
    /// An object of string values (`node_meta`, headers).
    StrMap,
    /// An object with these keys.
    Obj(&'static [(&'static str, Ty)]),
    /// Checked elsewhere (service and check definitions, by `defs`) or taken as is.
    Any,
}

const PORT: Ty = Ty::Int(1, 65535);
/// A port that `-1` (or `0`) turns off, as Consul's `ports.http`, `ports.dns`, ...
const PORT_OR_OFF: Ty = Ty::Int(-1, 65535);
const SIZE: Ty = Ty::Int(0, i64::MAX);
const COUNT: Ty = Ty::Int(0, i32::MAX as i64);

pub const LOG_LEVELS: &[&str] = &["trace", "debug", "info", "warn", "err", "error", "warning"];

/// `gossip_lan` and `gossip_wan`.
const GOSSIP_TUNING: &[(&str, Ty)] = &[
    ("probe_interval", Ty::Duration),
    ("probe_timeout", Ty::Duration),
    ("gossip_interval", Ty::Duration),
    ("gossip_nodes", Ty::Int(1, 1024)),
    ("suspicion_mult", Ty::Int(1, 1024)),
    ("retransmit_mult", Ty::Int(1, 1024)),
];

const TLS_BLOCK: &[(&str, Ty)] = &[
    ("ca_file", Ty::Str),
    ("ca_path", Ty::Str),
    ("cert_file", Ty::Str),
    ("key_file", Ty::Str),
    ("tls_min_version", Ty::Str),
    ("tls_cipher_suites", Ty::Str),
    ("verify_incoming", Ty::Bool),
    ("verify_outgoing", Ty::Bool),
    ("verify_server_hostname", Ty::Bool),
    ("use_auto_cert", Ty::Bool),
];

pub const TOP: &[(&str, Ty)] = &[
    (
        "acl",
        Ty::Obj(&[
            ("enabled", Ty::Bool),
            ("default_policy", Ty::OneOf(&["allow", "deny"])),
            ("down_policy", Ty::OneOf(&["allow", "deny", "extend-cache", "async-cache"])),
            ("token_ttl", Ty::Duration),
            ("policy_ttl", Ty::Duration),
            ("role_ttl", Ty::Duration),
            ("enable_token_persistence", Ty::Bool),
            ("enable_token_replication", Ty::Bool),
            ("enable_key_list_policy", Ty::Bool),
            (
                "tokens",
                Ty::Obj(&[
                    ("initial_management", Ty::Str),
                    ("master", Ty::Str),
                    ("default", Ty::Str),
                    ("agent", Ty::Str),
                    ("agent_recovery", Ty::Str),
                    ("agent_master", Ty::Str),
                    ("replication", Ty::Str),
                    ("config_file_service_registration", Ty::Str),
                    ("dns", Ty::Str),
                ]),
            ),
            ("msp_disable_bootstrap", Ty::Bool),
        ]),
    ),
    ("acl_datacenter", Ty::Str),
    ("acl_default_policy", Ty::OneOf(&["allow", "deny"])),
    ("acl_down_policy", Ty::OneOf(&["allow", "deny", "extend-cache", "async-cache"])),
    ("acl_master_token", Ty::Str),
    ("acl_agent_token", Ty::Str),
    ("acl_agent_master_token", Ty::Str),
    ("acl_token", Ty::Str),
    ("acl_replication_token", Ty::Str),
    ("acl_ttl", Ty::Duration),
    ("addresses", Ty::Obj(&[("http", Ty::Str), ("https", Ty::Str), ("dns", Ty::Str), ("grpc", Ty::Str)])),
    ("advertise_addr", Ty::Str),
    ("advertise_addr_wan", Ty::Str),
    ("auto_encrypt", Ty::Obj(&[("tls", Ty::Bool), ("allow_tls", Ty::Bool)])),
    (
        "autopilot",
        Ty::Obj(&[
            ("cleanup_dead_servers", Ty::Bool),
            ("last_contact_threshold", Ty::Duration),
            ("max_trailing_logs", COUNT),
            ("min_quorum", COUNT),
            ("server_stabilization_time", Ty::Duration),
        ]),
    ),
    ("bind_addr", Ty::Str),
    ("bootstrap", Ty::Bool),
    ("bootstrap_expect", COUNT),
    ("ca_file", Ty::Str),
    ("ca_path", Ty::Str),
    ("cert_file", Ty::Str),
    ("check", Ty::Any),
    ("checks", Ty::Any),
    ("check_update_interval", Ty::Duration),
    ("client_addr", Ty::Str),
    ("connect", Ty::Any),
    ("data_dir", Ty::Str),
    ("datacenter", Ty::Str),
    ("default_query_time", Ty::Duration),
    ("disable_host_node_id", Ty::Bool),
    ("disable_remote_exec", Ty::Bool),
    ("disable_update_check", Ty::Bool),
    ("discard_check_output", Ty::Bool),
    // Not Consul's: the built-in registrator (`docker::Options`).
    ("docker_explicit", Ty::Bool),
    ("docker_internal", Ty::Bool),
    ("docker_ip", Ty::Str),
    ("docker_socket", Ty::Str),
    (
        "dns_config",
        Ty::Obj(&[
            ("allow_stale", Ty::Bool),
            ("max_stale", Ty::Duration),
            ("node_ttl", Ty::Duration),
            ("service_ttl", Ty::Any),
            ("only_passing", Ty::Bool),
            ("enable_truncate", Ty::Bool),
            ("udp_answer_limit", Ty::Int(1, i32::MAX as i64)),
            ("a_record_limit", COUNT),
            ("enable_additional_node_meta_txt", Ty::Bool),
            ("recursor_timeout", Ty::Duration),
            ("disable_compression", Ty::Bool),
            ("soa", Ty::Any),
            ("use_cache", Ty::Bool),
        ]),
    ),
    ("domain", Ty::Str),
    ("enable_agent_tls_for_checks", Ty::Bool),
    ("enable_local_script_checks", Ty::Bool),
    ("enable_script_checks", Ty::Bool),
    ("enable_debug", Ty::Bool),
    ("encrypt", Ty::Str),
    ("encrypt_verify_incoming", Ty::Bool),
    ("encrypt_verify_outgoing", Ty::Bool),
    ("gossip_lan", Ty::Obj(GOSSIP_TUNING)),
    ("gossip_wan", Ty::Obj(GOSSIP_TUNING)),
    ("http_config", Ty::Obj(&[("response_headers", Ty::StrMap), ("allow_write_http_from", Ty::Strings)])),
    ("key_file", Ty::Str),
    ("leave_on_terminate", Ty::Bool),
    (
        "limits",
        Ty::Obj(&[
            ("http_max_conns_per_client", COUNT),
            ("https_handshake_timeout", Ty::Duration),
            ("rpc_handshake_timeout", Ty::Duration),
            ("rpc_max_conns_per_client", COUNT),
            ("rpc_rate", Ty::Any),
            ("rpc_max_burst", COUNT),
            ("kv_max_value_size", SIZE),
            ("txn_max_req_len", SIZE),
        ]),
    ),
    ("log_file", Ty::Str),
    ("log_json", Ty::Bool),
    ("log_level", Ty::OneOf(LOG_LEVELS)),
    ("node_id", Ty::Str),
    ("node_meta", Ty::StrMap),
    ("node_name", Ty::Str),
    (
        "performance",
        Ty::Obj(&[
            ("raft_multiplier", Ty::Int(1, 10)),
            ("leave_drain_time", Ty::Duration),
            ("rpc_hold_timeout", Ty::Duration),
        ]),
    ),
    ("pid_file", Ty::Str),
    (
        "ports",
        Ty::Obj(&[
            ("http", PORT_OR_OFF),
            ("https", PORT_OR_OFF),
            ("dns", PORT_OR_OFF),
            ("grpc", PORT_OR_OFF),
            ("grpc_tls", PORT_OR_OFF),
            ("serf_lan", PORT),
            ("serf_wan", PORT_OR_OFF),
            ("server", PORT),
        ]),
    ),
    ("primary_datacenter", Ty::Str),
    ("raft_protocol", Ty::Int(2, 3)),
    ("reconnect_timeout", Ty::Duration),
    ("recursors", Ty::Strings),
    ("rejoin_after_leave", Ty::Bool),
    ("retry_interval", Ty::Duration),
    ("retry_interval_wan", Ty::Duration),
    ("retry_join", Ty::Strings),
    ("retry_join_wan", Ty::Strings),
    ("retry_max", COUNT),
    ("server", Ty::Bool),
    ("service", Ty::Any),
    ("services", Ty::Any),
    ("session_ttl_min", Ty::Duration),
    ("skip_leave_on_interrupt", Ty::Bool),
    ("start_join", Ty::Strings),
    ("start_join_wan", Ty::Strings),
    ("telemetry", Ty::Any),
    ("translate_wan_addrs", Ty::Bool),
    (
        "tls",
        Ty::Obj(&[
            ("defaults", Ty::Obj(TLS_BLOCK)),
            ("internal_rpc", Ty::Obj(TLS_BLOCK)),
            ("https", Ty::Obj(TLS_BLOCK)),
            ("grpc", Ty::Obj(TLS_BLOCK)),
        ]),
    ),
    ("tls_cipher_suites", Ty::Str),
    ("tls_min_version", Ty::Str),
    ("ui", Ty::Bool),
    (
        "ui_config",
        Ty::Obj(&[
            ("enabled", Ty::Bool),
            ("dir", Ty::Str),
            ("content_path", Ty::Str),
            ("metrics_provider", Ty::Str),
            ("metrics_proxy", Ty::Any),
            ("dashboard_url_templates", Ty::Any),
        ]),
    ),
    ("verify_incoming", Ty::Bool),
    ("verify_incoming_https", Ty::Bool),
    ("verify_incoming_rpc", Ty::Bool),
    ("verify_outgoing", Ty::Bool),
    ("verify_server_hostname", Ty::Bool),
    ("watches", Ty::Any),
];

/// A value of the wrong type or out of range, named by its key path.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// Checks one file's keys against [`TOP`]. Returns the unknown keys (to warn about), or the
/// first invalid value.
pub fn check(doc: &Map<String, Value>) -> Result<Vec<String>, Invalid> {
    let mut unknown = Vec::new();
    check_obj(doc, TOP, "", &mut unknown)?;
    Ok(unknown)
}

fn check_obj(
    m: &Map<String, Value>,
    shape: &[(&str, Ty)],
    prefix: &str,
    unknown: &mut Vec<String>,
) -> Result<(), Invalid> {
    for (k, v) in m {
        let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match shape.iter().find(|(name, _)| name == k) {
            Some((_, ty)) => check_value(v, *ty, &path, unknown)?,
            None => unknown.push(path),
        }
    }
    Ok(())
}

/// Go's names for JSON's types, as Consul's decoder reports them.
fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "nil",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float64",
        Value::Number(_) => "int",
        Value::String(_) => "string",
        Value::Array(_) => "slice",
        Value::Object(_) => "map",
    }
}

fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn check_value(v: &Value, ty: Ty, path: &str, unknown: &mut Vec<String>) -> Result<(), Invalid> {
    let wrong = |expected: &str| {
        Err(Invalid(format!(
            "'{path}' expected type '{expected}', got unconvertible type '{}', value: '{}'",
            go_type(v),
            shown(v)
        )))
    };
    match ty {
        Ty::Any => Ok(()),
        Ty::Bool => match v {
            Value::Bool(_) => Ok(()),
            _ => wrong("bool"),
        },
        Ty::Str => match v {
            Value::String(_) => Ok(()),
            _ => wrong("string"),
        },
        Ty::OneOf(allowed) => match v {
            Value::String(s) if allowed.iter().any(|a| a.eq_ignore_ascii_case(s)) => Ok(()),
            Value::String(s) => {
                Err(Invalid(format!("'{path}': invalid value {s:?}, must be one of: {}", allowed.join(", "))))
            }
            _ => wrong("string"),
        },
        Ty::Int(min, max) => match v.as_i64() {
            Some(n) if (min..=max).contains(&n) => Ok(()),
            Some(n) => Err(Invalid(format!("'{path}' cannot be {n}: must be between {min} and {max}"))),
            None if v.as_u64().is_some() => {
                Err(Invalid(format!("'{path}' cannot be {}: must be between {min} and {max}", shown(v))))
            }
            None => wrong("int"),
        },
        Ty::Duration => match v {
            Value::String(s) => match api::duration::parse(s) {
                Ok(_) => Ok(()),
                Err(_) => Err(Invalid(format!("'{path}': invalid duration {s:?}"))),
            },
            Value::Number(n) if n.as_u64().is_some() => Ok(()),
            _ => wrong("time.Duration"),
        },
        Ty::Strings => match v {
            Value::String(_) => Ok(()),
            Value::Array(a) => match a.iter().find(|x| !x.is_string()) {
                None => Ok(()),
                Some(x) => Err(Invalid(format!(
                    "'{path}[]' expected type 'string', got unconvertible type '{}', value: '{}'",
                    go_type(x),
                    shown(x)
                ))),
            },
            _ => wrong("[]string"),
        },
        Ty::StrMap => match v {
            Value::Object(m) => match m.iter().find(|(_, x)| !x.is_string()) {
                None => Ok(()),
                Some((k, x)) => Err(Invalid(format!(
                    "'{path}[{k}]' expected type 'string', got unconvertible type '{}', value: '{}'",
                    go_type(x),
                    shown(x)
                ))),
            },
            _ => wrong("map[string]string"),
        },
        Ty::Obj(shape) => match v {
            Value::Object(m) => check_obj(m, shape, path, unknown),
            _ => wrong("struct"),
        },
    }
}

/// Settings this agent does not enforce yet. Each stops the agent: an operator who turns on
/// ACLs or TLS must not get an agent that silently lets everything through.
pub fn unenforced(doc: &Map<String, Value>) -> Vec<String> {
    let get = |path: &[&str]| -> Option<&Value> {
        let mut cur = doc.get(path[0])?;
        for p in &path[1..] {
            cur = cur.get(p)?;
        }
        Some(cur)
    };
    let is_true = |path: &[&str]| get(path).and_then(Value::as_bool) == Some(true);
    let mut found = Vec::new();
    const AUTO: &str = "this agent does not distribute certificates (auto_encrypt); give each agent its own with ca_file, cert_file and key_file";
    if is_true(&["auto_encrypt", "tls"]) || is_true(&["auto_encrypt", "allow_tls"]) {
        found.push(format!("auto_encrypt: {AUTO}"));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(v: Value) -> String {
        check(v.as_object().expect("object")).expect_err("invalid").0
    }

    #[test]
    fn wrong_types_and_ranges_name_the_key() {
        assert_eq!(
            err(json!({"server": "yes"})),
            "'server' expected type 'bool', got unconvertible type 'string', value: 'yes'"
        );
        assert_eq!(
            err(json!({"performance": {"raft_multiplier": 11}})),
            "'performance.raft_multiplier' cannot be 11: must be between 1 and 10"
        );
        assert!(err(json!({"log_level": "bogus"})).starts_with("'log_level': invalid value \"bogus\""));
        assert!(
            err(json!({"limits": {"kv_max_value_size": -1}})).starts_with("'limits.kv_max_value_size' cannot be -1")
        );
        assert!(err(json!({"ports": {"http": 99999}})).starts_with("'ports.http' cannot be 99999"));
        assert!(err(json!({"ports": {"server": -1}})).starts_with("'ports.server' cannot be -1"));
        assert!(err(json!({"bootstrap_expect": "3"})).contains("got unconvertible type 'string'"));
        assert!(err(json!({"bootstrap_expect": 1.5})).contains("'float64'"));
        assert!(err(json!({"retry_join": ["a", 1]})).starts_with("'retry_join[]'"));
        assert!(err(json!({"node_meta": {"a": 1}})).starts_with("'node_meta[a]'"));
        assert!(err(json!({"retry_interval": "soon"})).contains("invalid duration"));
        assert!(err(json!({"acl": "on"})).contains("'acl' expected type 'struct'"));
    }

    #[test]
    fn good_values_pass_and_unknown_keys_are_listed() {
        let v = json!({
            "server": true, "ports": {"http": -1, "dns": 8600}, "retry_join": "10.0.0.1",
            "log_level": "INFO", "performance": {"raft_multiplier": 1, "bogus": 1}, "nope": 2,
            "service": {"anything": "goes to defs"}
        });
        let unknown = check(v.as_object().expect("object")).expect("valid");
        assert_eq!(unknown, vec!["nope".to_string(), "performance.bogus".to_string()]);
    }

    #[test]
    fn security_settings_not_enforced_are_listed() {
        let v = json!({"auto_encrypt": {"tls": true}, "verify_incoming": true});
        let found = unenforced(v.as_object().expect("object"));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("auto_encrypt:"));
        let off = json!({"auto_encrypt": {"tls": false}, "ca_file": ""});
        assert!(unenforced(off.as_object().expect("object")).is_empty());
    }
}
