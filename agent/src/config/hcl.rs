//! Consul's config files in HCL: parsed by the `hcl1` crate into JSON values, then shaped as the
//! same document a JSON file gives. HCL1 turns every block into a list of objects
//! (`ports { http = 8500 }` is `{"ports": [{"http": 8500}]}`); Consul flattens a list of one
//! object back into the object, except where the key is a list in its own right (`services`,
//! `checks`, ...), and repeated `service`/`check` blocks are several definitions.

use serde_json::{Map, Value};

/// Keys whose values are lists of objects in Consul's config (never flattened).
const LISTS: &[&str] = &["services", "checks", "watches", "upstreams", "config_entries", "bootstrap"];
/// Single-definition keys that HCL may repeat: kept as lists; the loader adds each one.
const REPEATABLE: &[&str] = &["service", "check"];

/// Parses HCL text into a config document; the error carries the line and column.
pub fn parse(text: &str) -> Result<Map<String, Value>, hcl1::Error> {
    match shape(hcl1::parse(text)?, true) {
        Value::Object(m) => Ok(m),
        _ => Ok(Map::new()),
    }
}

fn shape(v: Value, top: bool) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let keep_list = LISTS.contains(&k.as_str()) || (top && REPEATABLE.contains(&k.as_str()));
                    let v = match v {
                        Value::Array(items) if keep_list => {
                            Value::Array(items.into_iter().map(|i| shape(i, false)).collect())
                        }
                        // A service's repeated `check` blocks are its `checks`.
                        Value::Array(items) if k == "check" && items.len() > 1 => {
                            Value::Array(items.into_iter().map(|i| shape(i, false)).collect())
                        }
                        Value::Array(mut items) if items.len() == 1 && items[0].is_object() => {
                            shape(items.remove(0), false)
                        }
                        other => shape(other, false),
                    };
                    let k = if k == "check" && !top && v.is_array() { "checks".to_string() } else { k };
                    (k, v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(|i| shape(i, false)).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hcl_blocks_become_the_json_document_consul_reads() {
        let m = parse(
            r#"
            datacenter = "dc1"
            ports { http = 8500 dns = -1 }
            acl { enabled = true tokens { agent = "x" } }
            retry_join = ["10.0.0.1", "10.0.0.2"]
            node_meta { rack = "r1" }
            service {
              name = "web"
              port = 80
              check { http = "http://localhost/health" interval = "10s" }
            }
            service { name = "db" port = 5432 check { tcp = "localhost:5432" interval = "5s" } check { ttl = "30s" } }
            "#,
        )
        .expect("parses");
        assert_eq!(m["ports"], json!({"http": 8500, "dns": -1}));
        assert_eq!(m["acl"], json!({"enabled": true, "tokens": {"agent": "x"}}));
        assert_eq!(m["retry_join"], json!(["10.0.0.1", "10.0.0.2"]));
        assert_eq!(m["node_meta"], json!({"rack": "r1"}));
        let services = m["service"].as_array().expect("list");
        assert_eq!(services.len(), 2);
        assert_eq!(services[0]["check"], json!({"http": "http://localhost/health", "interval": "10s"}));
        assert_eq!(services[1]["checks"].as_array().map(Vec::len), Some(2));
        let e = parse("ports {\n  http = \n}").unwrap_err();
        assert_eq!(e.line, 3);
    }
}
