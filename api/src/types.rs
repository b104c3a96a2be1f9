//! Consul's JSON shapes, field for field (Go's PascalCase names). Decoding is lenient (missing
//! fields default, `null` lists become empty) because these types also read other agents' answers;
//! encoding is exact because real clients read ours.

use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;

/// `null` and a missing field both decode as the default (Go marshals nil slices and maps as null).
pub fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

pub type Meta = BTreeMap<String, String>;

/// One entry of `GET /v1/kv/:key`. `Value` is base64; `null` for an empty body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct KvPair {
    pub key: String,
    pub create_index: u64,
    pub modify_index: u64,
    pub lock_index: u64,
    pub flags: u64,
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

impl KvPair {
    /// The decoded value bytes (empty when the key holds no value).
    pub fn value_bytes(&self) -> Vec<u8> {
        use base64::Engine;
        self.value.as_deref().and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok()).unwrap_or_default()
    }
}

/// `{Address, Port}`: the value type of a service's `TaggedAddresses`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ServiceAddress {
    pub address: String,
    pub port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Weights {
    pub passing: i64,
    pub warning: i64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights { passing: 1, warning: 1 }
    }
}

/// A catalog node (`GET /v1/catalog/nodes`, `Node` of a `ServiceEntry`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Node {
    #[serde(rename = "ID")]
    pub id: String,
    pub node: String,
    pub address: String,
    pub datacenter: String,
    #[serde(deserialize_with = "null_default")]
    pub tagged_addresses: BTreeMap<String, String>,
    #[serde(deserialize_with = "null_default")]
    pub meta: Meta,
    pub create_index: u64,
    pub modify_index: u64,
}

/// A service as an agent or a `ServiceEntry` reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AgentService {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(rename = "ID")]
    pub id: String,
    pub service: String,
    #[serde(deserialize_with = "null_default")]
    pub tags: Vec<String>,
    #[serde(deserialize_with = "null_default")]
    pub meta: Meta,
    pub port: u16,
    pub address: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "null_default")]
    pub tagged_addresses: BTreeMap<String, ServiceAddress>,
    pub weights: Weights,
    pub enable_tag_override: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_index: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modify_index: Option<u64>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub content_hash: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub datacenter: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locality: Option<serde_json::Value>,
}

/// `Definition` of a health check: how it is run, with durations as Go strings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HealthCheckDefinition {
    #[serde(rename = "HTTP")]
    pub http: String,
    #[serde(deserialize_with = "null_default")]
    pub header: BTreeMap<String, Vec<String>>,
    pub method: String,
    pub body: String,
    #[serde(rename = "TLSServerName")]
    pub tls_server_name: String,
    #[serde(rename = "TLSSkipVerify")]
    pub tls_skip_verify: bool,
    #[serde(rename = "TCP")]
    pub tcp: String,
    #[serde(rename = "UDP")]
    pub udp: String,
    #[serde(rename = "GRPC")]
    pub grpc: String,
    #[serde(rename = "GRPCUseTLS")]
    pub grpc_use_tls: bool,
    pub interval: String,
    pub timeout: String,
    pub deregister_critical_service_after: String,
}

/// A health check as `/v1/health/*` and `/v1/agent/checks` report it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HealthCheck {
    pub node: String,
    #[serde(rename = "CheckID")]
    pub check_id: String,
    pub name: String,
    pub status: String,
    pub notes: String,
    pub output: String,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    pub service_name: String,
    #[serde(deserialize_with = "null_default")]
    pub service_tags: Vec<String>,
    #[serde(rename = "Type")]
    pub check_type: String,
    pub interval: String,
    pub timeout: String,
    pub exposed_port: u16,
    pub definition: HealthCheckDefinition,
    pub create_index: u64,
    pub modify_index: u64,
}

/// One element of `GET /v1/health/service/:name`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ServiceEntry {
    pub node: Node,
    pub service: AgentService,
    #[serde(deserialize_with = "null_default")]
    pub checks: Vec<HealthCheck>,
}

impl ServiceEntry {
    /// The address to dial: the service's own, else its node's.
    pub fn address(&self) -> &str {
        if self.service.address.is_empty() {
            &self.node.address
        } else {
            &self.service.address
        }
    }

    /// Consul's aggregate: maintenance > critical > warning > passing.
    pub fn aggregated_status(&self) -> &'static str {
        aggregated_status(&self.checks)
    }
}

/// Consul's aggregation rule over a set of checks (api/health.go `AggregatedStatus`).
pub fn aggregated_status(checks: &[HealthCheck]) -> &'static str {
    let mut status = "passing";
    for c in checks {
        if c.check_id == "_node_maintenance" || c.check_id.starts_with("_service_maintenance:") {
            return "maintenance";
        }
        match c.status.as_str() {
            "critical" => status = "critical",
            "warning" if status == "passing" => status = "warning",
            _ => {}
        }
    }
    status
}

/// One element of `GET /v1/catalog/service/:name`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CatalogService {
    #[serde(rename = "ID")]
    pub id: String,
    pub node: String,
    pub address: String,
    pub datacenter: String,
    #[serde(deserialize_with = "null_default")]
    pub tagged_addresses: BTreeMap<String, String>,
    #[serde(deserialize_with = "null_default")]
    pub node_meta: Meta,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    pub service_name: String,
    pub service_address: String,
    #[serde(deserialize_with = "null_default")]
    pub service_tagged_addresses: BTreeMap<String, ServiceAddress>,
    #[serde(deserialize_with = "null_default")]
    pub service_tags: Vec<String>,
    #[serde(deserialize_with = "null_default")]
    pub service_meta: Meta,
    pub service_port: u16,
    pub service_weights: Weights,
    pub service_enable_tag_override: bool,
    pub service_kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_proxy: Option<serde_json::Value>,
    pub create_index: u64,
    pub modify_index: u64,
}

/// `GET /v1/catalog/node/:node`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CatalogNode {
    pub node: Option<Node>,
    #[serde(deserialize_with = "null_default")]
    pub services: BTreeMap<String, AgentService>,
}

/// A gossip member (`GET /v1/agent/members`). `Status`: 1 alive, 2 leaving, 3 left, 4 failed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AgentMember {
    pub name: String,
    pub addr: String,
    pub port: u16,
    #[serde(deserialize_with = "null_default")]
    pub tags: BTreeMap<String, String>,
    pub status: i32,
    pub protocol_min: u8,
    pub protocol_max: u8,
    pub protocol_cur: u8,
    pub delegate_min: u8,
    pub delegate_max: u8,
    pub delegate_cur: u8,
}

impl AgentMember {
    pub fn status_name(&self) -> &'static str {
        match self.status {
            1 => "alive",
            2 => "leaving",
            3 => "left",
            4 => "failed",
            _ => "none",
        }
    }
}

/// A session (`GET /v1/session/info/:id`). `LockDelay` is in nanoseconds on the wire.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Session {
    #[serde(rename = "ID")]
    pub id: String,
    pub name: String,
    pub node: String,
    pub lock_delay: u64,
    pub behavior: String,
    #[serde(rename = "TTL")]
    pub ttl: String,
    #[serde(deserialize_with = "null_default")]
    pub node_checks: Vec<String>,
    pub service_checks: Option<Vec<ServiceCheck>>,
    pub create_index: u64,
    pub modify_index: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ServiceCheck {
    #[serde(rename = "ID")]
    pub id: String,
    pub namespace: String,
}

/// A user event (`PUT /v1/event/fire/:name`, `GET /v1/event/list`). `Payload` is base64.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct UserEvent {
    #[serde(rename = "ID")]
    pub id: String,
    pub name: String,
    pub payload: Option<String>,
    pub node_filter: String,
    pub service_filter: String,
    pub tag_filter: String,
    pub version: u32,
    #[serde(rename = "LTime")]
    pub ltime: u64,
}

/// One gossip pool's answer to `GET /v1/operator/keyring`: how many of its `NumNodes` members
/// have each key installed, and as their primary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct KeyringResponse {
    #[serde(rename = "WAN")]
    pub wan: bool,
    pub datacenter: String,
    pub segment: String,
    pub partition: String,
    #[serde(deserialize_with = "null_default")]
    pub messages: BTreeMap<String, String>,
    #[serde(deserialize_with = "null_default")]
    pub keys: BTreeMap<String, usize>,
    #[serde(deserialize_with = "null_default")]
    pub primary_keys: BTreeMap<String, usize>,
    pub num_nodes: usize,
}

/// One server of `GET /v1/operator/raft/configuration`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RaftServer {
    #[serde(rename = "ID")]
    pub id: String,
    pub node: String,
    pub address: String,
    pub leader: bool,
    pub protocol_version: String,
    pub voter: bool,
    pub last_index: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RaftConfiguration {
    #[serde(deserialize_with = "null_default")]
    pub servers: Vec<RaftServer>,
    pub index: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_go_nulls_and_missing_fields() {
        let e: ServiceEntry = serde_json::from_str(
            r#"{"Node":{"Node":"n1","Address":"10.0.0.1","Meta":null},
                "Service":{"ID":"web1","Service":"web","Tags":null,"Port":80},"Checks":null}"#,
        )
        .unwrap();
        assert_eq!(e.node.node, "n1");
        assert!(e.service.tags.is_empty());
        assert_eq!(e.address(), "10.0.0.1");
        assert_eq!(e.service.weights, Weights { passing: 1, warning: 1 });
    }

    #[test]
    fn kv_pair_encodes_without_session_when_unlocked() {
        let kv = KvPair { key: "a".into(), value: Some("YmFy".into()), ..Default::default() };
        let json = serde_json::to_value(&kv).unwrap();
        assert!(json.get("Session").is_none());
        assert_eq!(json["Value"], "YmFy");
        assert_eq!(kv.value_bytes(), b"bar");
    }

    #[test]
    fn aggregated_status_orders_maintenance_first() {
        let check =
            |id: &str, status: &str| HealthCheck { check_id: id.into(), status: status.into(), ..Default::default() };
        assert_eq!(aggregated_status(&[]), "passing");
        assert_eq!(aggregated_status(&[check("a", "passing"), check("b", "warning")]), "warning");
        assert_eq!(aggregated_status(&[check("a", "critical"), check("b", "warning")]), "critical");
        assert_eq!(aggregated_status(&[check("a", "critical"), check("_node_maintenance", "critical")]), "maintenance");
    }
}
