//! Dependencies: what a template function asks the agent for (`service "tag.web@dc1|passing"`,
//! `key "a/b"`, `ls "prefix"`...), parsed with consul-template's query grammar, and how each raw
//! Consul answer becomes the structure consul-template hands to templates (`HealthService`,
//! `CatalogSnippet`, `KeyPair`...), with its field names and sort orders.
//!
//! This module is pure: it knows the HTTP paths but performs no IO.

use api::{CatalogNode, KvPair, Node, ServiceEntry, Target};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::LazyLock;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    #[error("invalid service dependency format: {0:?}")]
    Service(String),
    #[error("invalid health filter {filter:?} in {query:?} (expected any|passing|warning|critical|maintenance)")]
    Filter { query: String, filter: String },
    #[error("invalid key dependency format: {0:?}")]
    Key(String),
    #[error("invalid node dependency format: {0:?}")]
    Node(String),
    #[error("invalid catalog query format: {0:?}")]
    Catalog(String),
}

/// One thing to watch. Identical queries from several templates compare equal and so share one
/// watch. The health filter is normalised (`"web"` and `"web|passing"` are the same query, as in
/// consul-template's code).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dep {
    /// `GET /v1/health/service/:name`.
    HealthService { name: String, tag: Option<String>, dc: Option<String>, near: Option<String>, filter: Vec<String> },
    /// `GET /v1/catalog/services`.
    CatalogServices { dc: Option<String> },
    /// `GET /v1/kv/:key`.
    KvGet { key: String, dc: Option<String> },
    /// `GET /v1/kv/:prefix?recurse`.
    KvList { prefix: String, dc: Option<String> },
    /// `GET /v1/catalog/node/:node` (empty name: the agent's own node).
    CatalogNode { name: String, dc: Option<String> },
    /// `GET /v1/catalog/nodes`.
    CatalogNodes { dc: Option<String>, near: Option<String> },
    /// `GET /v1/catalog/datacenters` (not a blocking endpoint: polled).
    Datacenters,
    /// A local file, polled for changes.
    File { path: String },
}

const HEALTH_STATES: [&str; 5] = ["any", "passing", "warning", "critical", "maintenance"];

// consul-template's grammar (dependency/health_service.go): `TAG.NAME?QUERY@DC~NEAR|FILTER`.
static SERVICE_RE: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(
        r"^((?P<tag>[[:word:]=:.\-]+)\.)?(?P<name>[[:word:]\-]+)(\?(?P<query>[[:word:]\-=&]+))?(@(?P<dc>[[:word:].\-]+))?(~(?P<near>[[:word:]\-.]+))?$",
    )
    .expect("static regex")
});
static KEY_RE: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(r"^(?P<key>[^@]*?)(\?(?P<query>[[:word:]\-=&]+))?(@(?P<dc>[[:word:].\-]+))?$")
        .expect("static regex")
});
static CATALOG_RE: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(r"^(\?(?P<query>[[:word:]\-=&]+))?(@(?P<dc>[[:word:].\-]+))?(~(?P<near>[[:word:]\-.]+))?$")
        .expect("static regex")
});

fn opt(caps: &regex::Captures<'_>, name: &str) -> Option<String> {
    caps.name(name).map(|m| m.as_str().to_string()).filter(|s| !s.is_empty())
}

impl Dep {
    /// `service "tag.name@dc~near|passing,warning"`; the filter may also be a second argument
    /// (`service "web" "any"`), as consul-template accepts.
    pub fn service(query: &str, extra_filter: Option<&str>) -> Result<Dep, Error> {
        let (spec, filter) = match query.split_once('|') {
            Some((s, f)) => (s.trim(), Some(f)),
            None => (query.trim(), extra_filter),
        };
        let caps = SERVICE_RE.captures(spec).ok_or_else(|| Error::Service(query.to_string()))?;
        let mut states: Vec<String> = Vec::new();
        if let Some(f) = filter {
            for s in f.split(',').map(|s| s.trim()).filter(|s| !s.is_empty()) {
                if !HEALTH_STATES.contains(&s) {
                    return Err(Error::Filter { query: query.to_string(), filter: s.to_string() });
                }
                if !states.iter().any(|x| x == s) {
                    states.push(s.to_string());
                }
            }
        }
        if states.is_empty() {
            states.push("passing".into());
        }
        states.sort();
        Ok(Dep::HealthService {
            name: opt(&caps, "name").ok_or_else(|| Error::Service(query.to_string()))?,
            tag: opt(&caps, "tag"),
            dc: opt(&caps, "dc"),
            near: opt(&caps, "near"),
            filter: states,
        })
    }

    pub fn services(query: &str) -> Result<Dep, Error> {
        let caps = CATALOG_RE.captures(query.trim()).ok_or_else(|| Error::Catalog(query.to_string()))?;
        Ok(Dep::CatalogServices { dc: opt(&caps, "dc") })
    }

    pub fn nodes(query: &str) -> Result<Dep, Error> {
        let caps = CATALOG_RE.captures(query.trim()).ok_or_else(|| Error::Catalog(query.to_string()))?;
        Ok(Dep::CatalogNodes { dc: opt(&caps, "dc"), near: opt(&caps, "near") })
    }

    pub fn key(query: &str) -> Result<Dep, Error> {
        let caps = KEY_RE.captures(query.trim()).ok_or_else(|| Error::Key(query.to_string()))?;
        let key = caps.name("key").map(|m| m.as_str()).unwrap_or("").trim_start_matches('/').to_string();
        if key.is_empty() {
            return Err(Error::Key(query.to_string()));
        }
        Ok(Dep::KvGet { key, dc: opt(&caps, "dc") })
    }

    /// `ls`/`tree`: a prefix, possibly empty (the whole store).
    pub fn key_prefix(query: &str) -> Result<Dep, Error> {
        let caps = KEY_RE.captures(query.trim()).ok_or_else(|| Error::Key(query.to_string()))?;
        let prefix = caps.name("key").map(|m| m.as_str()).unwrap_or("").trim_start_matches('/').to_string();
        Ok(Dep::KvList { prefix, dc: opt(&caps, "dc") })
    }

    pub fn node(query: &str) -> Result<Dep, Error> {
        let caps = KEY_RE.captures(query.trim()).ok_or_else(|| Error::Node(query.to_string()))?;
        let name = caps.name("key").map(|m| m.as_str()).unwrap_or("").to_string();
        Ok(Dep::CatalogNode { name, dc: opt(&caps, "dc") })
    }

    /// The HTTP request that watches this dependency; `None` for what is not an HTTP query.
    pub fn target(&self) -> Option<Target> {
        let with_dc = |t: Target, dc: &Option<String>| match dc {
            Some(dc) => t.with("dc", dc),
            None => t,
        };
        Some(match self {
            Dep::HealthService { name, tag, dc, near, filter } => {
                let mut t = Target::new(format!("/v1/health/service/{name}"));
                if let Some(tag) = tag {
                    t = t.with("tag", tag);
                }
                if let Some(near) = near {
                    t = t.with("near", near);
                }
                // Only the default filter is answered by the server; any other needs the
                // failing instances too and is filtered here on the aggregated status.
                if filter.len() == 1 && filter[0] == "passing" {
                    t = t.with("passing", "1");
                }
                with_dc(t, dc)
            }
            Dep::CatalogServices { dc } => with_dc(Target::new("/v1/catalog/services"), dc),
            Dep::KvGet { key, dc } => with_dc(Target::new(format!("/v1/kv/{key}")), dc),
            Dep::KvList { prefix, dc } => with_dc(Target::new(format!("/v1/kv/{prefix}")).with("recurse", ""), dc),
            Dep::CatalogNode { name, dc } => with_dc(Target::new(format!("/v1/catalog/node/{name}")), dc),
            Dep::CatalogNodes { dc, near } => {
                let t = with_dc(Target::new("/v1/catalog/nodes"), dc);
                match near {
                    Some(n) => t.with("near", n),
                    None => t,
                }
            }
            Dep::Datacenters => Target::new("/v1/catalog/datacenters"),
            Dep::File { .. } => return None,
        })
    }
}

impl std::fmt::Display for Dep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dc = |dc: &Option<String>| dc.as_ref().map(|d| format!("@{d}")).unwrap_or_default();
        match self {
            Dep::HealthService { name, tag, dc: d, near, filter } => {
                write!(
                    f,
                    "health.service({}{name}{}",
                    tag.as_ref().map(|t| format!("{t}.")).unwrap_or_default(),
                    dc(d)
                )?;
                if let Some(n) = near {
                    write!(f, "~{n}")?;
                }
                write!(f, "|{})", filter.join(","))
            }
            Dep::CatalogServices { dc: d } => write!(f, "catalog.services({})", dc(d)),
            Dep::KvGet { key, dc: d } => write!(f, "kv.get({key}{})", dc(d)),
            Dep::KvList { prefix, dc: d } => write!(f, "kv.list({prefix}{})", dc(d)),
            Dep::CatalogNode { name, dc: d } => write!(f, "catalog.node({name}{})", dc(d)),
            Dep::CatalogNodes { dc: d, .. } => write!(f, "catalog.nodes({})", dc(d)),
            Dep::Datacenters => write!(f, "catalog.datacenters"),
            Dep::File { path } => write!(f, "file({path})"),
        }
    }
}

fn sorted(tags: &[String]) -> Vec<String> {
    let mut t = tags.to_vec();
    t.sort();
    t
}

/// `/v1/health/service` entries → consul-template's `[]*HealthService`, filtered on the aggregated
/// status and sorted by node then ID (unless `~near` asked for the agent's distance order).
pub fn health_services(entries: &[ServiceEntry], filter: &[String], keep_order: bool) -> Value {
    let any = filter.iter().any(|f| f == "any");
    let mut out: Vec<(String, String, Value)> = Vec::new();
    for e in entries {
        let status = e.aggregated_status();
        if !any && !filter.iter().any(|f| f == status) {
            continue;
        }
        let tagged: Map<String, Value> = e
            .service
            .tagged_addresses
            .iter()
            .map(|(k, a)| (k.clone(), json!({"Address": a.address, "Port": a.port})))
            .collect();
        let checks = serde_json::to_value(&e.checks).unwrap_or(Value::Array(vec![]));
        let v = json!({
            "Node": e.node.node,
            "NodeID": e.node.id,
            "Kind": e.service.kind,
            "NodeAddress": e.node.address,
            "NodeDatacenter": e.node.datacenter,
            "NodeTaggedAddresses": e.node.tagged_addresses,
            "NodeMeta": e.node.meta,
            "ServiceMeta": e.service.meta,
            "Address": e.address(),
            "ServiceTaggedAddresses": tagged,
            "ID": e.service.id,
            "Name": e.service.service,
            "Namespace": "",
            "Partition": "",
            "Tags": sorted(&e.service.tags),
            "Checks": checks,
            "Status": status,
            "Port": e.service.port,
            "Weights": {"Passing": e.service.weights.passing, "Warning": e.service.weights.warning},
        });
        out.push((e.node.node.clone(), e.service.id.clone(), v));
    }
    if !keep_order {
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    }
    Value::Array(out.into_iter().map(|(_, _, v)| v).collect())
}

/// `/v1/catalog/services` → `[]*CatalogSnippet{Name, Tags}` sorted by name (a BTreeMap already is).
pub fn catalog_services(services: &BTreeMap<String, Vec<String>>) -> Value {
    Value::Array(services.iter().map(|(name, tags)| json!({"Name": name, "Tags": sorted(tags)})).collect())
}

fn node_value(n: &Node) -> Value {
    json!({
        "ID": n.id,
        "Node": n.node,
        "Address": n.address,
        "Datacenter": n.datacenter,
        "TaggedAddresses": n.tagged_addresses,
        "Meta": n.meta,
    })
}

/// `/v1/catalog/nodes` → `[]*Node` sorted by name (unless `~near`).
pub fn catalog_nodes(nodes: &[Node], keep_order: bool) -> Value {
    let mut nodes: Vec<&Node> = nodes.iter().collect();
    if !keep_order {
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
    }
    Value::Array(nodes.into_iter().map(node_value).collect())
}

/// `/v1/catalog/node/:name` → `*CatalogNode{Node, Services}`; `Null` when the node is unknown.
pub fn catalog_node(node: &CatalogNode) -> Value {
    let Some(n) = &node.node else { return Value::Null };
    let mut services: Vec<&api::AgentService> = node.services.values().collect();
    services.sort_by(|a, b| (&a.service, &a.id).cmp(&(&b.service, &b.id)));
    let services: Vec<Value> = services
        .into_iter()
        .map(|s| {
            json!({
                "ID": s.id,
                "Service": s.service,
                "Tags": sorted(&s.tags),
                "Meta": s.meta,
                "Port": s.port,
                "Address": s.address,
                "EnableTagOverride": s.enable_tag_override,
            })
        })
        .collect();
    json!({"Node": node_value(n), "Services": services})
}

fn key_pair(p: &KvPair, prefix: &str) -> Value {
    let key = p.key.strip_prefix(prefix).unwrap_or(&p.key).trim_start_matches('/');
    json!({
        "Path": p.key,
        "Key": key,
        "Value": String::from_utf8_lossy(&p.value_bytes()),
        "Exists": true,
        "CreateIndex": p.create_index,
        "ModifyIndex": p.modify_index,
        "LockIndex": p.lock_index,
        "Flags": p.flags,
        "Session": p.session.clone().unwrap_or_default(),
    })
}

/// `/v1/kv/:prefix?recurse` → `[]*KeyPair` with `Key` relative to the prefix.
pub fn kv_list(pairs: &[KvPair], prefix: &str) -> Value {
    Value::Array(pairs.iter().map(|p| key_pair(p, prefix)).collect())
}

/// `/v1/kv/:key` → the value as a string, or `Null` when the key does not exist.
pub fn kv_get(pairs: &[KvPair]) -> Value {
    match pairs.first() {
        Some(p) => Value::String(String::from_utf8_lossy(&p.value_bytes()).into_owned()),
        None => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, tag: Option<&str>, dc: Option<&str>, filter: &[&str]) -> Dep {
        Dep::HealthService {
            name: name.into(),
            tag: tag.map(Into::into),
            dc: dc.map(Into::into),
            near: None,
            filter: filter.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn service_queries_parse_like_consul_template() {
        let cases: &[(&str, Dep)] = &[
            ("test", svc("test", None, None, &["passing"])),
            ("test|passing", svc("test", None, None, &["passing"])),
            ("web|passing,warning", svc("web", None, None, &["passing", "warning"])),
            ("v1.web@dc2", svc("web", Some("v1"), Some("dc2"), &["passing"])),
            ("my-svc|any", svc("my-svc", None, None, &["any"])),
            ("a=b.web", svc("web", Some("a=b"), None, &["passing"])),
        ];
        for (q, want) in cases {
            assert_eq!(&Dep::service(q, None).unwrap(), want, "{q}");
        }
        assert_eq!(
            Dep::service("web", Some("warning,passing")).unwrap(),
            svc("web", None, None, &["passing", "warning"])
        );
        assert!(Dep::service("web|bogus", None).is_err());
        assert!(Dep::service("", None).is_err());
        assert_eq!(Dep::service("web", None).unwrap(), Dep::service("web|passing", None).unwrap());
    }

    #[test]
    fn targets_ask_the_server_to_filter_only_the_default() {
        let t = Dep::service("v1.web@dc2", None).unwrap().target().unwrap();
        assert_eq!(t.path, "/v1/health/service/web");
        assert!(t.extra.contains(&("passing".into(), "1".into())));
        assert!(t.extra.contains(&("tag".into(), "v1".into())));
        assert!(t.extra.contains(&("dc".into(), "dc2".into())));
        let t = Dep::service("web|passing,warning", None).unwrap().target().unwrap();
        assert!(!t.extra.iter().any(|(k, _)| k == "passing"));
    }

    #[test]
    fn at_dc_reaches_every_query_as_the_dc_parameter() {
        let dc2 = ("dc".to_string(), "dc2".to_string());
        let deps = [
            Dep::service("web@dc2", None).unwrap(),
            Dep::services("@dc2").unwrap(),
            Dep::key("k@dc2").unwrap(),
            Dep::key_prefix("app@dc2").unwrap(),
            Dep::nodes("@dc2").unwrap(),
            Dep::node("n1@dc2").unwrap(),
        ];
        for dep in deps {
            let t = dep.target().unwrap();
            assert!(t.extra.contains(&dc2), "{dep}: {:?}", t.extra);
        }
        for dep in [Dep::service("web", None).unwrap(), Dep::key("k").unwrap(), Dep::Datacenters] {
            let t = dep.target().unwrap();
            assert!(!t.extra.iter().any(|(k, _)| k == "dc"), "{dep}: {:?}", t.extra);
        }
    }

    #[test]
    fn key_queries() {
        assert_eq!(Dep::key("/a/b@dc1").unwrap(), Dep::KvGet { key: "a/b".into(), dc: Some("dc1".into()) });
        assert_eq!(Dep::key_prefix("").unwrap(), Dep::KvList { prefix: "".into(), dc: None });
        assert!(Dep::key("").is_err());
        assert_eq!(Dep::services("@dc3").unwrap(), Dep::CatalogServices { dc: Some("dc3".into()) });
        assert_eq!(Dep::services("").unwrap(), Dep::CatalogServices { dc: None });
    }

    #[test]
    fn health_entries_become_health_services() {
        let entries: Vec<ServiceEntry> = serde_json::from_value(json!([
            {"Node": {"Node": "n2", "Address": "10.0.0.2"}, "Service": {"ID": "b", "Service": "web", "Port": 81, "Tags": ["z", "a"]},
             "Checks": [{"CheckID": "c", "Status": "critical"}]},
            {"Node": {"Node": "n1", "Address": "10.0.0.1"}, "Service": {"ID": "a", "Service": "web", "Port": 80, "Address": "192.168.0.1"},
             "Checks": [{"CheckID": "c", "Status": "passing"}]},
        ]))
        .unwrap();
        let all = health_services(&entries, &["any".into()], false);
        assert_eq!(all[0]["Node"], "n1");
        assert_eq!(all[0]["Address"], "192.168.0.1");
        assert_eq!(all[1]["Address"], "10.0.0.2");
        assert_eq!(all[1]["Tags"], json!(["a", "z"]));
        assert_eq!(all[1]["Status"], "critical");
        let passing = health_services(&entries, &["passing".into()], false);
        assert_eq!(passing.as_array().unwrap().len(), 1);
        let critical = health_services(&entries, &["critical".into(), "warning".into()], false);
        assert_eq!(critical[0]["ID"], "b");
    }

    #[test]
    fn kv_pairs_are_relative_to_the_prefix() {
        let p = KvPair { key: "app/config/port".into(), value: Some("ODA=".into()), ..Default::default() };
        let v = kv_list(std::slice::from_ref(&p), "app/config");
        assert_eq!(v[0]["Key"], "port");
        assert_eq!(v[0]["Path"], "app/config/port");
        assert_eq!(v[0]["Value"], "80");
        assert_eq!(kv_get(&[p]), json!("80"));
        assert_eq!(kv_get(&[]), Value::Null);
    }
}
