//! The agent's internal domain types and the Raft command set. These are the persistence format of
//! the Raft log and snapshots, so they change only by addition: a new kind of write gets a new
//! `Command` variant, and an old variant never changes meaning. The HTTP edge converts them to the
//! `api` crate's wire types.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub type Meta = BTreeMap<String, String>;

pub const SERF_CHECK_ID: &str = "serfHealth";
pub const SERF_CHECK_NAME: &str = "Serf Health Status";
pub const SERF_ALIVE_OUTPUT: &str = "Agent alive and reachable";
pub const SERF_FAILED_OUTPUT: &str = "Agent not live or unreachable";
pub const NODE_MAINT_CHECK_ID: &str = "_node_maintenance";
pub const SERVICE_MAINT_PREFIX: &str = "_service_maintenance:";
pub const DEFAULT_MAINT_REASON: &str =
    "Maintenance mode is enabled for this node, but no reason was provided. This is a default message.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Passing,
    Warning,
    Critical,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Passing => "passing",
            Status::Warning => "warning",
            Status::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "passing" => Some(Status::Passing),
            "warning" => Some(Status::Warning),
            "critical" => Some(Status::Critical),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub id: String,
    pub node: String,
    pub address: String,
    pub datacenter: String,
    pub tagged_addresses: BTreeMap<String, String>,
    pub meta: Meta,
    pub create_index: u64,
    pub modify_index: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceAddress {
    pub address: String,
    pub port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Weights {
    pub passing: i64,
    pub warning: i64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights { passing: 1, warning: 1 }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub id: String,
    pub service: String,
    pub kind: String,
    pub tags: Vec<String>,
    pub address: String,
    pub tagged_addresses: BTreeMap<String, ServiceAddress>,
    pub meta: Meta,
    pub port: u16,
    pub weights: Weights,
    pub enable_tag_override: bool,
    pub create_index: u64,
    pub modify_index: u64,
    /// Service-mesh fields, kept as the client sent them (`Proxy`, `Connect`, `Locality`).
    #[serde(default)]
    pub proxy: Option<serde_json::Value>,
    #[serde(default)]
    pub connect: Option<serde_json::Value>,
    #[serde(default)]
    pub locality: Option<serde_json::Value>,
}

/// How a check is run; durations in nanoseconds. Empty for catalog-only checks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckDefinition {
    pub http: String,
    pub header: BTreeMap<String, Vec<String>>,
    pub method: String,
    pub body: String,
    pub tls_server_name: String,
    pub tls_skip_verify: bool,
    pub tcp: String,
    pub udp: String,
    pub grpc: String,
    pub grpc_use_tls: bool,
    pub args: Vec<String>,
    pub ttl_ns: u64,
    pub interval_ns: u64,
    pub timeout_ns: u64,
    pub deregister_critical_service_after_ns: u64,
    pub success_before_passing: u32,
    pub failures_before_warning: u32,
    pub failures_before_critical: u32,
    pub output_max_size: usize,
    pub alias_node: String,
    pub alias_service: String,
}

impl CheckDefinition {
    /// Consul's `CheckType.Type()`, in its precedence order.
    pub fn kind(&self) -> &'static str {
        if !self.grpc.is_empty() {
            "grpc"
        } else if !self.http.is_empty() {
            "http"
        } else if self.ttl_ns > 0 {
            "ttl"
        } else if !self.tcp.is_empty() {
            "tcp"
        } else if !self.udp.is_empty() {
            "udp"
        } else if !self.alias_node.is_empty() || !self.alias_service.is_empty() {
            "alias"
        } else if !self.args.is_empty() {
            "script"
        } else {
            ""
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub node: String,
    pub check_id: String,
    pub name: String,
    pub status: Option<Status>,
    pub notes: String,
    pub output: String,
    pub service_id: String,
    pub service_name: String,
    pub service_tags: Vec<String>,
    pub check_type: String,
    pub definition: CheckDefinition,
    pub create_index: u64,
    pub modify_index: u64,
}

impl Check {
    pub fn status(&self) -> Status {
        self.status.unwrap_or(Status::Critical)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KvEntry {
    pub key: String,
    pub value: Vec<u8>,
    pub flags: u64,
    pub session: Option<String>,
    pub lock_index: u64,
    pub create_index: u64,
    pub modify_index: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionBehavior {
    #[default]
    Release,
    Delete,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    pub name: String,
    pub node: String,
    pub lock_delay_ns: u64,
    pub behavior: SessionBehavior,
    /// As the client gave it ("30s"); empty for no TTL.
    pub ttl: String,
    pub node_checks: Vec<String>,
    pub service_checks: Vec<String>,
    pub create_index: u64,
    pub modify_index: u64,
}

/// Catalog registration (`/v1/catalog/register`, anti-entropy, the leader's member reconcile).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RegisterRequest {
    pub node: Node,
    pub service: Option<Service>,
    pub checks: Vec<Check>,
    pub skip_node_update: bool,
}

/// Catalog deregistration: the whole node, one service (with its checks) or one check.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeregisterRequest {
    pub node: String,
    pub service_id: Option<String>,
    pub check_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvOp {
    Set,
    /// Write only if `modify_index` matches (0: only if absent).
    Cas,
    Lock,
    Unlock,
    Delete,
    DeleteTree,
    DeleteCas,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KvRequest {
    pub op: KvOp,
    pub key: String,
    pub value: Vec<u8>,
    pub flags: u64,
    pub session: Option<String>,
    pub modify_index: u64,
}

/// One operation of a `/v1/txn` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TxnOp {
    Kv { verb: String, key: String, value: Vec<u8>, flags: u64, index: u64, session: Option<String> },
    Node { verb: String, node: Node },
    Service { verb: String, node: String, service: Service },
    Check { verb: String, check: Check },
}

/// A replicated write. Append-only: never reorder, rename or remove a variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    Register(RegisterRequest),
    Deregister(DeregisterRequest),
    Kv(KvRequest),
    SessionCreate(Session),
    SessionDestroy {
        id: String,
    },
    Txn(Vec<TxnOp>),
    /// Replaces the whole state with a snapshot (`PUT /v1/snapshot`).
    Restore(Box<crate::state::Snapshot>),
    /// The leader's clean-up of KV tombstones older than the given index.
    TombstoneReap {
        up_to: u64,
    },
    /// Several writes that arrived together, applied in order at one Raft index (group commit:
    /// one log entry and one fsync for all of them). Each keeps its own answer.
    Batch(Vec<Request>),
    /// Sets the autopilot configuration (Consul's JSON object); with `cas`, only if the stored
    /// configuration's ModifyIndex matches.
    AutopilotSet {
        config: serde_json::Value,
        cas: Option<u64>,
    },
    /// A write to the ACL tables.
    Acl(crate::acl::model::AclCommand),
    /// Creates or replaces a config entry (Consul's JSON with `Kind` and `Name`); with `cas`,
    /// only if the stored entry's ModifyIndex matches (0: only if absent).
    ConfigEntrySet {
        entry: serde_json::Value,
        cas: Option<u64>,
    },
    ConfigEntryDelete {
        kind: String,
        name: String,
        cas: Option<u64>,
    },
    /// Network coordinates of nodes, applied together.
    CoordinateBatch(Vec<(String, serde_json::Value)>),
    /// Sets the Connect CA (configuration, roots, signing key); with `cas`, only if the stored
    /// CA's ModifyIndex matches (0: only if there is none).
    ConnectCaSet {
        ca: serde_json::Value,
        cas: Option<u64>,
    },
    /// Creates or replaces a prepared query (Consul's JSON with its `ID`).
    QuerySet {
        query: serde_json::Value,
    },
    QueryDelete {
        id: String,
    },
}

impl Command {
    /// About how many bytes of JSON this command takes in the Raft log (a byte of a value is
    /// spelled as a number of up to four characters). Cheap for the common KV writes.
    pub fn json_size_estimate(&self) -> usize {
        const OVERHEAD: usize = 256;
        match self {
            Command::Kv(kv) => kv.value.len() * 4 + kv.key.len() + OVERHEAD,
            Command::Txn(ops) => ops
                .iter()
                .map(|op| match op {
                    TxnOp::Kv { key, value, .. } => value.len() * 4 + key.len() + OVERHEAD,
                    other => serde_json::to_vec(other).map(|v| v.len()).unwrap_or(OVERHEAD),
                })
                .sum(),
            Command::Batch(reqs) => reqs.iter().map(|r| r.command.json_size_estimate()).sum(),
            other => serde_json::to_vec(other).map(|v| v.len()).unwrap_or(OVERHEAD),
        }
    }
}

/// A command plus the wall-clock time the proposer read, so that applying it reads no clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub now_ms: u64,
    pub command: Command,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TxnResult {
    pub results: Vec<TxnOpResult>,
    pub errors: Vec<(usize, String)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TxnOpResult {
    Kv(Option<KvEntry>),
    KvList(Vec<KvEntry>),
    Node(Node),
    Service(Service),
    Check(Check),
}

/// What applying a command answered. Expected failures (a lost CAS) are values, not errors.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub enum Response {
    #[default]
    Ok,
    Bool(bool),
    Txn(TxnResult),
    /// The command was refused; the text is what the client sees.
    Error(String),
    /// The answers of a `Command::Batch`, in order.
    Batch(Vec<Response>),
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
