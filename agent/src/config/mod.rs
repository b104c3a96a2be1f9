//! The agent's configuration: Consul's command-line flags (single or double dash, `-x=v` or
//! `-x v`; given twice, the last wins) merged over JSON config files and `-config-dir`, into one
//! validated [`Config`]. Each file is checked against [`schema`] before it is merged: a wrong
//! type or range is an error naming the file and key, an unknown key a warning (as in Consul),
//! and a security setting the agent does not enforce stops it ([`schema::unenforced`]).

pub mod hcl;
pub mod schema;

use serde_json::{Map, Value};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("parsing config file {path}: {source}")]
    Parse { path: String, source: serde_json::Error },
    #[error("invalid value for {key}: {value}")]
    Invalid { key: String, value: String },
    #[error("config file {path}: {source}")]
    Schema { path: String, source: schema::Invalid },
    #[error("config file {path}: {what}")]
    Unreadable { path: String, what: String },
    #[error("refusing to start: {}", .0.join("; "))]
    Unenforced(Vec<String>),
    #[error("{0}")]
    Other(String),
}

/// Consul's `agent` flags. Field names are the flag names with `-` as `_`.
#[derive(Debug, Clone, Default, clap::Parser)]
#[command(
    name = "agent",
    about = "Runs an agent (server or client)",
    disable_version_flag = true,
    args_override_self = true
)]
pub struct AgentFlags {
    #[arg(long)]
    pub server: bool,
    #[arg(long)]
    pub dev: bool,
    #[arg(long)]
    pub bootstrap: bool,
    #[arg(long = "bootstrap-expect")]
    pub bootstrap_expect: Option<u32>,
    #[arg(long)]
    pub node: Option<String>,
    #[arg(long = "node-id")]
    pub node_id: Option<String>,
    #[arg(long = "node-meta")]
    pub node_meta: Vec<String>,
    #[arg(long)]
    pub bind: Option<String>,
    #[arg(long)]
    pub advertise: Option<String>,
    #[arg(long)]
    pub client: Option<String>,
    #[arg(long = "data-dir")]
    pub data_dir: Option<PathBuf>,
    #[arg(long)]
    pub datacenter: Option<String>,
    #[arg(long)]
    pub domain: Option<String>,
    #[arg(long)]
    pub join: Vec<String>,
    #[arg(long = "retry-join")]
    pub retry_join: Vec<String>,
    #[arg(long = "retry-interval")]
    pub retry_interval: Option<String>,
    #[arg(long = "join-wan")]
    pub join_wan: Vec<String>,
    #[arg(long = "retry-join-wan")]
    pub retry_join_wan: Vec<String>,
    #[arg(long = "advertise-wan")]
    pub advertise_wan: Option<String>,
    #[arg(long = "retry-max")]
    pub retry_max: Option<u32>,
    #[arg(long)]
    pub rejoin: bool,
    #[arg(long = "config-file")]
    pub config_file: Vec<PathBuf>,
    #[arg(long = "config-dir")]
    pub config_dir: Vec<PathBuf>,
    #[arg(long)]
    pub encrypt: Option<String>,
    #[arg(long = "log-level")]
    pub log_level: Option<String>,
    #[arg(long = "log-json")]
    pub log_json: bool,
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    #[arg(long = "http-port")]
    pub http_port: Option<i32>,
    #[arg(long = "dns-port")]
    pub dns_port: Option<i32>,
    #[arg(long = "https-port")]
    pub https_port: Option<i32>,
    #[arg(long = "serf-lan-port")]
    pub serf_lan_port: Option<i32>,
    #[arg(long = "serf-wan-port")]
    pub serf_wan_port: Option<i32>,
    #[arg(long = "server-port")]
    pub server_port: Option<i32>,
    #[arg(long)]
    pub recursor: Vec<String>,
    #[arg(long)]
    pub ui: bool,
    #[arg(long = "enable-script-checks")]
    pub enable_script_checks: bool,
    #[arg(long = "enable-local-script-checks")]
    pub enable_local_script_checks: bool,
    #[arg(long = "raft-protocol")]
    pub raft_protocol: Option<u32>,
    #[arg(long = "default-query-time")]
    pub default_query_time: Option<String>,
    #[arg(long = "max-query-time")]
    pub max_query_time: Option<String>,
    #[arg(long)]
    pub hcl: Vec<String>,
    /// Accepted for the old rolling-upgrade recipes and ignored, as Consul does.
    #[arg(long)]
    pub protocol: Option<u32>,
    /// Not Consul's: register containers from this Docker engine socket, as Registrator does.
    #[arg(long = "docker-socket")]
    pub docker_socket: Option<PathBuf>,
    /// Registrator's `-internal`: exposed ports at the containers' own addresses.
    #[arg(long = "docker-internal")]
    pub docker_internal: bool,
    /// Registrator's `-ip`: the address published ports are registered at.
    #[arg(long = "docker-ip")]
    pub docker_ip: Option<String>,
    /// Registrator's `-explicit`: only containers that name their service.
    #[arg(long = "docker-explicit")]
    pub docker_explicit: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Ports {
    pub http: i32,
    /// `ports.https`: the HTTPS API (-1: off, Consul's default; 8501 by convention).
    pub https: i32,
    pub dns: i32,
    pub serf_lan: i32,
    pub serf_wan: i32,
    pub server: i32,
}

#[derive(Debug, Clone)]
pub struct DnsConfig {
    pub only_passing: bool,
    pub node_ttl: Duration,
    pub service_ttl: Vec<(String, Duration)>,
    pub allow_stale: bool,
    pub enable_truncate: bool,
    pub udp_answer_limit: usize,
    pub enable_additional_node_meta_txt: bool,
}

/// The validated configuration the agent runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_name: String,
    pub node_id: String,
    pub node_meta: std::collections::BTreeMap<String, String>,
    pub datacenter: String,
    pub domain: String,
    pub data_dir: Option<PathBuf>,
    pub server: bool,
    pub dev: bool,
    pub bootstrap: bool,
    pub bootstrap_expect: u32,
    pub bind_addr: IpAddr,
    pub advertise_addr: IpAddr,
    pub client_addrs: Vec<IpAddr>,
    pub ports: Ports,
    pub retry_join: Vec<String>,
    /// Servers only: where the WAN pool joins (`-join-wan`, `-retry-join-wan`, `start_join_wan`,
    /// `retry_join_wan`), and the address other datacenters reach this server at.
    pub retry_join_wan: Vec<String>,
    pub advertise_addr_wan: IpAddr,
    /// `translate_wan_addrs`: answers for other datacenters use their WAN addresses.
    pub translate_wan_addrs: bool,
    pub retry_interval: Duration,
    pub retry_max: u32,
    pub rejoin: bool,
    pub encrypt: Option<String>,
    /// `encrypt_verify_incoming` (default true): false lets plain gossip and server-port
    /// requests in, for turning encryption on in a running cluster.
    pub encrypt_verify_incoming: bool,
    /// `encrypt_verify_outgoing` (default true): false sends gossip plain.
    pub encrypt_verify_outgoing: bool,
    pub log_level: String,
    pub pid_file: Option<PathBuf>,
    pub ui: bool,
    pub recursors: Vec<String>,
    pub raft_multiplier: u64,
    pub enable_script_checks: bool,
    pub enable_local_script_checks: bool,
    pub services: Vec<Value>,
    pub checks: Vec<Value>,
    pub dns: DnsConfig,
    pub kv_max_value_size: usize,
    pub txn_max_req_len: usize,
    pub txn_max_ops: usize,
    pub session_ttl_min: Duration,
    pub default_query_time: Duration,
    pub max_query_time: Duration,
    pub leave_on_terminate: bool,
    pub skip_leave_on_interrupt: bool,
    pub ae_interval: Duration,
    pub check_output_max_size: usize,
    pub discard_check_output: bool,
    /// `limits.http_max_conns_per_client`: open HTTP connections one client IP may hold (0: no
    /// limit).
    pub http_max_conns_per_client: usize,
    /// `http_config.response_headers`: added to every HTTP API answer.
    pub response_headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// `http_config.allow_write_http_from`: if not empty, only these networks may write.
    pub allow_write_http_from: Vec<Cidr>,
    /// The `acl` block (and the legacy top-level `acl_*` keys).
    pub acl: crate::acl::AclConfig,
    /// The `tls` block (and the old flat keys), per side.
    pub tls: crate::tls::TlsConfig,
    pub primary_datacenter: String,
    /// `gossip_lan` tuning; unset fields keep Consul's LAN defaults.
    pub gossip_lan: GossipLan,
    /// `gossip_wan` tuning; unset fields keep Consul's WAN defaults.
    pub gossip_wan: GossipLan,
    /// How long a failed member is kept before it is reaped (`reconnect_timeout`, 72h).
    pub reconnect_timeout: Duration,
    /// The built-in registrator (`-docker-socket`, `docker_socket`), if on.
    pub docker: Option<crate::docker::Options>,
    /// The files and dirs it was loaded from, for `reload`.
    pub flags: AgentFlags,
}

/// A `gossip_lan` or `gossip_wan` block.
fn gossip_tuning(f: &Map<String, Value>, block: &str) -> Result<GossipLan, ConfigError> {
    Ok(GossipLan {
        probe_interval: get_duration(f, &[block, "probe_interval"])?,
        probe_timeout: get_duration(f, &[block, "probe_timeout"])?,
        gossip_interval: get_duration(f, &[block, "gossip_interval"])?,
        gossip_nodes: get_i64(f, &[block, "gossip_nodes"]).map(|v| v.max(1) as usize),
        suspicion_mult: get_i64(f, &[block, "suspicion_mult"]).map(|v| v.max(1) as u32),
        retransmit_mult: get_i64(f, &[block, "retransmit_mult"]).map(|v| v.max(1) as u32),
    })
}

/// Consul's `gossip_lan` (and `gossip_wan`) block.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GossipLan {
    pub probe_interval: Option<Duration>,
    pub probe_timeout: Option<Duration>,
    pub gossip_interval: Option<Duration>,
    pub gossip_nodes: Option<usize>,
    pub suspicion_mult: Option<u32>,
    pub retransmit_mult: Option<u32>,
}

/// Rewrites Consul-style `-flag` into clap's `--flag`, leaving values and `--flag` untouched.
pub fn normalize_args<I: IntoIterator<Item = String>>(args: I) -> Vec<String> {
    args.into_iter()
        .map(|a| {
            if a.starts_with('-') && !a.starts_with("--") && a.len() > 2 && a.as_bytes()[1].is_ascii_alphabetic() {
                format!("-{a}")
            } else {
                a
            }
        })
        .collect()
}

/// Deep-merges `from` into `into`: objects merge, `services`/`checks`/`retry_join` lists append,
/// everything else is replaced (later files win, as in Consul).
fn merge(into: &mut Map<String, Value>, from: Map<String, Value>) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(Value::Object(a)), Value::Object(b)) => merge(a, b),
            (Some(Value::Array(a)), Value::Array(b)) => a.extend(b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

/// Reads one config file, checks it against the schema, and merges it into `into`. Unknown keys
/// are returned (`file: key`) for the caller to warn about.
fn load_file(path: &Path, into: &mut Map<String, Value>) -> Result<Vec<String>, ConfigError> {
    let shown = path.display().to_string();
    let map = read_doc(path)?;
    load_doc(map, &shown, into)
}

/// One config file as a document: JSON, or HCL shaped as the same document.
pub fn read_doc(path: &Path) -> Result<Map<String, Value>, ConfigError> {
    let shown = path.display().to_string();
    let hcl = match path.extension().and_then(|e| e.to_str()) {
        Some("json") => false,
        Some("hcl") => true,
        _ => {
            return Err(ConfigError::Unreadable {
                path: shown,
                what: "No format specified: config file must end in .json or .hcl".into(),
            })
        }
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: shown.clone(), source })?;
    if hcl {
        return hcl::parse(&text).map_err(|e| ConfigError::Unreadable { path: shown, what: e.to_string() });
    }
    let v: Value = serde_json::from_str(&text).map_err(|source| ConfigError::Parse { path: shown.clone(), source })?;
    match v {
        Value::Object(map) => Ok(map),
        _ => Err(ConfigError::Other(format!("config file {shown} is not a JSON object"))),
    }
}

/// Checks one document against the schema and merges it into `into`; returns the unknown keys.
fn load_doc(
    mut map: Map<String, Value>,
    shown: &str,
    into: &mut Map<String, Value>,
) -> Result<Vec<String>, ConfigError> {
    let unknown = schema::check(&map).map_err(|source| ConfigError::Schema { path: shown.to_string(), source })?;
    // `service`/`check` are the single forms of `services`/`checks` (HCL may repeat them).
    for (single, plural) in [("service", "services"), ("check", "checks")] {
        if let Some(v) = map.remove(single) {
            let list = map.entry(plural).or_insert_with(|| Value::Array(vec![]));
            if let Value::Array(a) = list {
                match v {
                    Value::Array(items) => a.extend(items),
                    one => a.push(one),
                }
            }
        }
    }
    merge(into, map);
    Ok(unknown.into_iter().map(|k| format!("{shown}: {k}")).collect())
}

/// Every config file the flags name: `-config-file`s as given, then each `-config-dir`'s
/// `.json` and `.hcl` files in lexical order (other files are skipped, as Consul skips them).
pub fn config_files(files: &[PathBuf], dirs: &[PathBuf]) -> Result<Vec<PathBuf>, ConfigError> {
    let mut all = files.to_vec();
    for d in dirs {
        let rd = std::fs::read_dir(d).map_err(|source| ConfigError::Read { path: d.display().to_string(), source })?;
        let mut found: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("json" | "hcl")))
            .collect();
        found.sort();
        all.extend(found);
    }
    Ok(all)
}

/// Reads, checks and merges `paths` in order; returns the merged document and the unknown keys.
/// A security setting the agent does not enforce is an error here.
pub fn load_paths(paths: &[PathBuf]) -> Result<(Map<String, Value>, Vec<String>), ConfigError> {
    load_sources(paths, &[])
}

/// [`load_paths`], then `-hcl` snippets, in the order given.
pub fn load_sources(paths: &[PathBuf], snippets: &[String]) -> Result<(Map<String, Value>, Vec<String>), ConfigError> {
    let mut merged = Map::new();
    let mut unknown = Vec::new();
    // What each file's settings alone would turn on, to name the file in a refusal.
    let mut set_by: Vec<(String, Vec<String>)> = Vec::new();
    for f in paths {
        let mut alone = Map::new();
        load_file(f, &mut alone)?;
        set_by.push((f.display().to_string(), schema::unenforced(&alone)));
        unknown.extend(load_file(f, &mut merged)?);
    }
    for snippet in snippets {
        let doc =
            hcl::parse(snippet).map_err(|e| ConfigError::Unreadable { path: "-hcl".into(), what: e.to_string() })?;
        set_by.push(("-hcl".into(), schema::unenforced(&doc)));
        unknown.extend(load_doc(doc, "-hcl", &mut merged)?);
    }
    let unenforced = schema::unenforced(&merged);
    if !unenforced.is_empty() {
        let named = unenforced
            .into_iter()
            .map(|what| match set_by.iter().rev().find(|(_, found)| found.contains(&what)) {
                Some((file, _)) => format!("{what} (set in {file})"),
                None => what,
            })
            .collect();
        return Err(ConfigError::Unenforced(named));
    }
    Ok((merged, unknown))
}

/// Reads every config file and dir the flags name, merged in order.
pub fn load_files(flags: &AgentFlags) -> Result<Map<String, Value>, ConfigError> {
    let (merged, unknown) = load_sources(&config_files(&flags.config_file, &flags.config_dir)?, &flags.hcl)?;
    for k in unknown {
        tracing::warn!("invalid config key {k}: ignored");
    }
    Ok(merged)
}

fn get<'a>(m: &'a Map<String, Value>, path: &[&str]) -> Option<&'a Value> {
    let mut cur = m.get(path[0])?;
    for p in &path[1..] {
        cur = cur.get(p)?;
    }
    Some(cur)
}

fn get_str(m: &Map<String, Value>, path: &[&str]) -> Option<String> {
    get(m, path).and_then(|v| v.as_str()).map(str::to_string)
}

fn get_bool(m: &Map<String, Value>, path: &[&str]) -> Option<bool> {
    get(m, path).and_then(|v| v.as_bool())
}

fn get_i64(m: &Map<String, Value>, path: &[&str]) -> Option<i64> {
    get(m, path).and_then(|v| v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok())))
}

fn get_duration(m: &Map<String, Value>, path: &[&str]) -> Result<Option<Duration>, ConfigError> {
    match get(m, path) {
        None => Ok(None),
        Some(v) => api::duration::serde_go::from_value(v)
            .map(Some)
            .map_err(|_| ConfigError::Invalid { key: path.join("."), value: v.to_string() }),
    }
}

fn parse_duration(key: &str, s: &str) -> Result<Duration, ConfigError> {
    api::duration::parse(s).map_err(|_| ConfigError::Invalid { key: key.into(), value: s.into() })
}

fn parse_ip(key: &str, s: &str) -> Result<IpAddr, ConfigError> {
    s.trim().parse().map_err(|_| ConfigError::Invalid { key: key.into(), value: s.into() })
}

fn str_list(m: &Map<String, Value>, key: &str) -> Vec<String> {
    str_list_at(m, &[key])
}

fn str_list_at(m: &Map<String, Value>, path: &[&str]) -> Vec<String> {
    match get(m, path) {
        Some(Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => vec![],
    }
}

/// The `acl` block, with the names older configs still carry (`acl_master_token`,
/// `acl_default_policy`, `acl.tokens.master`, ...). The schema checked the types already.
fn acl_config(f: &Map<String, Value>) -> Result<crate::acl::AclConfig, ConfigError> {
    use crate::acl::{AclConfig, DefaultPolicy, DownPolicy};
    let s = |path: &[&str]| get_str(f, path).filter(|v| !v.is_empty());
    let mut c = AclConfig {
        // Before Consul 1.4, setting acl_datacenter turned ACLs on.
        enabled: get_bool(f, &["acl", "enabled"]).unwrap_or(s(&["acl_datacenter"]).is_some()),
        ..Default::default()
    };
    if let Some(p) = s(&["acl", "default_policy"]).or_else(|| s(&["acl_default_policy"])) {
        c.default_policy = if p.eq_ignore_ascii_case("deny") { DefaultPolicy::Deny } else { DefaultPolicy::Allow };
    }
    if let Some(p) = s(&["acl", "down_policy"]).or_else(|| s(&["acl_down_policy"])) {
        c.down_policy = match p.to_ascii_lowercase().as_str() {
            "allow" => DownPolicy::Allow,
            "deny" => DownPolicy::Deny,
            _ => DownPolicy::ExtendCache,
        };
    }
    if let Some(d) = get_duration(f, &["acl", "token_ttl"])?.or(get_duration(f, &["acl_ttl"])?) {
        c.token_ttl = d;
    }
    c.enable_key_list_policy = get_bool(f, &["acl", "enable_key_list_policy"]).unwrap_or(false);
    c.enable_token_persistence = get_bool(f, &["acl", "enable_token_persistence"]).unwrap_or(false);
    c.enable_token_replication = get_bool(f, &["acl", "enable_token_replication"])
        .or_else(|| get_bool(f, &["enable_acl_replication"]))
        .unwrap_or(false);
    let t = |new: &str, old_block: &str, legacy: &str| {
        s(&["acl", "tokens", new])
            .or_else(|| s(&["acl", "tokens", old_block]))
            .or_else(|| s(&[legacy]))
            .unwrap_or_default()
    };
    c.tokens.initial_management = t("initial_management", "master", "acl_master_token");
    c.tokens.default = t("default", "default", "acl_token");
    c.tokens.agent = t("agent", "agent", "acl_agent_token");
    c.tokens.agent_recovery = t("agent_recovery", "agent_master", "acl_agent_master_token");
    c.tokens.replication = t("replication", "replication", "acl_replication_token");
    c.tokens.config_file_service_registration =
        t("config_file_service_registration", "config_file_service_registration", "");
    c.tokens.dns = t("dns", "dns", "");
    Ok(c)
}

/// The TLS settings of the server port and of HTTPS, as Consul merges them: a side's own block
/// (`tls.internal_rpc`, `tls.https`), then `tls.defaults`, then the old flat keys
/// (`verify_incoming_rpc`, `verify_incoming_https`, `verify_incoming`, `ca_file`, ...).
fn tls_config(f: &Map<String, Value>, dc: &str, domain: &str) -> crate::tls::TlsConfig {
    let side = |block: &str, flat_incoming: &str| {
        let s = |key: &str, flat: &str| {
            get_str(f, &["tls", block, key])
                .or_else(|| get_str(f, &["tls", "defaults", key]))
                .or_else(|| get_str(f, &[flat]))
                .filter(|v| !v.is_empty())
        };
        let b = |key: &str, flats: &[&str]| {
            get_bool(f, &["tls", block, key])
                .or_else(|| get_bool(f, &["tls", "defaults", key]))
                .or_else(|| flats.iter().find_map(|k| get_bool(f, &[k])))
                .unwrap_or(false)
        };
        crate::tls::TlsSettings {
            ca_file: s("ca_file", "ca_file").map(PathBuf::from),
            ca_path: s("ca_path", "ca_path").map(PathBuf::from),
            cert_file: s("cert_file", "cert_file").map(PathBuf::from),
            key_file: s("key_file", "key_file").map(PathBuf::from),
            verify_incoming: b("verify_incoming", &[flat_incoming, "verify_incoming"]),
            verify_outgoing: b("verify_outgoing", &["verify_outgoing"]),
            verify_server_hostname: b("verify_server_hostname", &["verify_server_hostname"]),
            min_version: s("tls_min_version", "tls_min_version"),
            cipher_suites: s("tls_cipher_suites", "tls_cipher_suites"),
        }
    };
    crate::tls::TlsConfig {
        internal_rpc: side("internal_rpc", "verify_incoming_rpc"),
        https: crate::tls::TlsSettings {
            verify_outgoing: false,
            verify_server_hostname: false,
            ..side("https", "verify_incoming_https")
        },
        server_name: format!("server.{dc}.{}", domain.trim_end_matches('.')),
        agent_tls_for_checks: get_bool(f, &["enable_agent_tls_for_checks"]).unwrap_or(false),
    }
}

/// The built-in registrator's settings: flags over `docker_*` keys; off without a socket.
fn docker_options(flags: &AgentFlags, f: &Map<String, Value>) -> Result<Option<crate::docker::Options>, ConfigError> {
    let Some(socket) = flags.docker_socket.clone().or_else(|| get_str(f, &["docker_socket"]).map(PathBuf::from)) else {
        return Ok(None);
    };
    if socket.as_os_str().is_empty() {
        return Ok(None);
    }
    let ip = match flags.docker_ip.clone().or_else(|| get_str(f, &["docker_ip"])).filter(|s| !s.is_empty()) {
        Some(s) => Some(parse_ip("docker_ip", &s)?),
        None => None,
    };
    Ok(Some(crate::docker::Options {
        socket,
        rules: crate::docker::mapping::Rules {
            internal: flags.docker_internal || get_bool(f, &["docker_internal"]).unwrap_or(false),
            ip,
            explicit: flags.docker_explicit || get_bool(f, &["docker_explicit"]).unwrap_or(false),
        },
    }))
}

/// The host's IPv4 addresses (every interface that is up).
fn interface_ipv4s() -> Vec<std::net::Ipv4Addr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else { return vec![] };
    addrs.filter_map(|a| a.address.and_then(|s| s.as_sockaddr_in().map(|v4| v4.ip()))).collect()
}

/// The one private (RFC 1918 or RFC 6598) address among `candidates`, as Consul picks what to
/// advertise when bound to 0.0.0.0; none or several is an error telling the operator what to set.
fn private_ipv4(candidates: &[std::net::Ipv4Addr]) -> Result<IpAddr, ConfigError> {
    let private = |ip: &std::net::Ipv4Addr| {
        let o = ip.octets();
        ip.is_private() || (o[0] == 100 && (64..128).contains(&o[1]))
    };
    let mut found: Vec<&std::net::Ipv4Addr> = candidates.iter().filter(|ip| private(ip)).collect();
    found.dedup();
    match found[..] {
        [one] => Ok(IpAddr::V4(*one)),
        [] => Err(ConfigError::Other(
            "No private IPv4 address found: set -bind (bind_addr) or -advertise (advertise_addr) to the address to use"
                .into(),
        )),
        _ => Err(ConfigError::Other(
            "Multiple private IPv4 addresses found. Please configure one with 'bind' and/or 'advertise'.".into(),
        )),
    }
}

/// A network in CIDR notation (`10.0.0.0/8`, `::1/128`; a bare address is one host).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, bits) = match s.trim().split_once('/') {
            Some((a, b)) => (a.parse::<IpAddr>().ok()?, Some(b.parse::<u8>().ok()?)),
            None => (s.trim().parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(max);
        (bits <= max).then_some(Cidr { net: addr, bits })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        let mask = |len: u32| -> u128 {
            if self.bits == 0 {
                0
            } else {
                (!0u128) << (len - self.bits as u32)
            }
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let m = mask(32) as u32;
                u32::from(n) & m == u32::from(a) & m
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let m = mask(128);
                u128::from(n) & m == u128::from(a) & m
            }
            _ => false,
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

impl Config {
    /// Builds the configuration from flags and the files they name.
    pub fn from_flags(flags: AgentFlags) -> Result<Config, ConfigError> {
        let files = load_files(&flags)?;
        Config::build(flags, files)
    }

    fn build(flags: AgentFlags, f: Map<String, Value>) -> Result<Config, ConfigError> {
        let dev = flags.dev;
        let server = flags.server || dev || get_bool(&f, &["server"]).unwrap_or(false);
        let data_dir = flags.data_dir.clone().or_else(|| get_str(&f, &["data_dir"]).map(PathBuf::from));
        if !dev && data_dir.is_none() {
            return Err(ConfigError::Other("data_dir cannot be empty".into()));
        }
        let bind_str = flags.bind.clone().or_else(|| get_str(&f, &["bind_addr"])).unwrap_or_else(|| {
            if dev {
                "127.0.0.1".into()
            } else {
                "0.0.0.0".into()
            }
        });
        let bind_addr = parse_ip("bind_addr", &bind_str)?;
        let advertise_addr = match flags.advertise.clone().or_else(|| get_str(&f, &["advertise_addr"])) {
            Some(a) => parse_ip("advertise_addr", &a)?,
            // As Consul: binding to every address advertises the host's one private IPv4 address.
            None if bind_addr.is_unspecified() => private_ipv4(&interface_ipv4s())?,
            None => bind_addr,
        };
        let client_str =
            flags.client.clone().or_else(|| get_str(&f, &["client_addr"])).unwrap_or_else(|| "127.0.0.1".into());
        let client_addrs =
            client_str.split_whitespace().map(|s| parse_ip("client_addr", s)).collect::<Result<Vec<_>, _>>()?;
        // Files were range-checked by the schema; flags are checked here, with the same rule:
        // 1-65535, or -1 (and 0) to turn off a port that Consul lets you turn off.
        let port = |flag: Option<i32>, key: &str, default: i32, may_be_off: bool| -> Result<i32, ConfigError> {
            let v = flag.or_else(|| get_i64(&f, &["ports", key]).map(|v| v as i32)).unwrap_or(default);
            let ok = (1..=65535).contains(&v) || (may_be_off && (-1..=0).contains(&v));
            if !ok {
                let range = if may_be_off { "1 and 65535, or -1 to disable" } else { "1 and 65535" };
                return Err(ConfigError::Other(format!("ports.{key} cannot be {v}: must be between {range}")));
            }
            Ok(if v == 0 { -1 } else { v })
        };
        let ports = Ports {
            http: port(flags.http_port, "http", 8500, true)?,
            https: port(flags.https_port, "https", -1, true)?,
            dns: port(flags.dns_port, "dns", 8600, true)?,
            serf_lan: port(flags.serf_lan_port, "serf_lan", 8301, false)?,
            serf_wan: port(flags.serf_wan_port, "serf_wan", 8302, true)?,
            server: port(flags.server_port, "server", 8300, false)?,
        };
        let log_level = flags.log_level.clone().or_else(|| get_str(&f, &["log_level"])).unwrap_or_else(|| {
            if dev {
                "debug".into()
            } else {
                "info".into()
            }
        });
        if !schema::LOG_LEVELS.iter().any(|l| l.eq_ignore_ascii_case(&log_level)) {
            return Err(ConfigError::Other(format!(
                "Invalid log level: {log_level}. Valid log levels are: [TRACE DEBUG INFO WARN ERR]"
            )));
        }
        let response_headers = match get(&f, &["http_config", "response_headers"]) {
            Some(Value::Object(m)) => {
                let mut out = Vec::new();
                for (k, v) in m {
                    let name = http::HeaderName::from_bytes(k.as_bytes()).map_err(|_| ConfigError::Invalid {
                        key: "http_config.response_headers".into(),
                        value: k.clone(),
                    })?;
                    let value = http::HeaderValue::from_str(v.as_str().unwrap_or_default()).map_err(|_| {
                        ConfigError::Invalid { key: format!("http_config.response_headers.{k}"), value: v.to_string() }
                    })?;
                    out.push((name, value));
                }
                out
            }
            _ => vec![],
        };
        let dc_for_tls = flags
            .datacenter
            .clone()
            .or_else(|| get_str(&f, &["datacenter"]))
            .unwrap_or_else(|| "dc1".into())
            .to_lowercase();
        let domain_for_tls =
            flags.domain.clone().or_else(|| get_str(&f, &["domain"])).unwrap_or_else(|| "consul.".into());
        let mut allow_write_http_from = Vec::new();
        for cidr in str_list_at(&f, &["http_config", "allow_write_http_from"]) {
            allow_write_http_from.push(Cidr::parse(&cidr).ok_or_else(|| ConfigError::Invalid {
                key: "http_config.allow_write_http_from".into(),
                value: cidr.clone(),
            })?);
        }
        let mut retry_join = flags.retry_join.clone();
        retry_join.extend(flags.join.iter().cloned());
        retry_join.extend(str_list(&f, "retry_join"));
        retry_join.extend(str_list(&f, "start_join"));
        let mut retry_join_wan = flags.retry_join_wan.clone();
        retry_join_wan.extend(flags.join_wan.iter().cloned());
        retry_join_wan.extend(str_list(&f, "retry_join_wan"));
        retry_join_wan.extend(str_list(&f, "start_join_wan"));
        let advertise_addr_wan = match flags.advertise_wan.clone().or_else(|| get_str(&f, &["advertise_addr_wan"])) {
            Some(a) => parse_ip("advertise_addr_wan", &a)?,
            None => advertise_addr,
        };
        let node_name = flags.node.clone().or_else(|| get_str(&f, &["node_name"])).unwrap_or_else(hostname);
        if node_name.is_empty() || node_name.chars().any(|c| c.is_whitespace() || c == '"' || c == '\'') {
            return Err(ConfigError::Invalid { key: "node_name".into(), value: node_name });
        }
        let node_id = flags.node_id.clone().or_else(|| get_str(&f, &["node_id"])).unwrap_or_default();
        let mut node_meta = std::collections::BTreeMap::new();
        if let Some(Value::Object(m)) = f.get("node_meta") {
            for (k, v) in m {
                node_meta.insert(k.clone(), v.as_str().unwrap_or_default().to_string());
            }
        }
        for kv in &flags.node_meta {
            let (k, v) = kv.split_once(':').unwrap_or((kv.as_str(), ""));
            node_meta.insert(k.to_string(), v.to_string());
        }
        let retry_interval = match flags.retry_interval.as_deref() {
            Some(s) => parse_duration("retry_interval", s)?,
            None => get_duration(&f, &["retry_interval"])?.unwrap_or(Duration::from_secs(30)),
        };
        let default_query_time = match flags.default_query_time.as_deref() {
            Some(s) => parse_duration("default_query_time", s)?,
            None => get_duration(&f, &["default_query_time"])?.unwrap_or(api::query::DEFAULT_WAIT),
        };
        let max_query_time = match flags.max_query_time.as_deref() {
            Some(s) => parse_duration("max_query_time", s)?,
            None => get_duration(&f, &["max_query_time"])?.unwrap_or(api::query::MAX_WAIT),
        };
        let mut service_ttl = Vec::new();
        if let Some(Value::Object(m)) = get(&f, &["dns_config", "service_ttl"]) {
            for (k, v) in m {
                let d = api::duration::serde_go::from_value(v).map_err(|_| ConfigError::Invalid {
                    key: format!("dns_config.service_ttl.{k}"),
                    value: v.to_string(),
                })?;
                service_ttl.push((k.clone(), d));
            }
        }
        let dns = DnsConfig {
            only_passing: get_bool(&f, &["dns_config", "only_passing"]).unwrap_or(false),
            node_ttl: get_duration(&f, &["dns_config", "node_ttl"])?.unwrap_or(Duration::ZERO),
            service_ttl,
            allow_stale: get_bool(&f, &["dns_config", "allow_stale"]).unwrap_or(true),
            enable_truncate: get_bool(&f, &["dns_config", "enable_truncate"]).unwrap_or(false),
            udp_answer_limit: get_i64(&f, &["dns_config", "udp_answer_limit"]).unwrap_or(3).max(1) as usize,
            enable_additional_node_meta_txt: get_bool(&f, &["dns_config", "enable_additional_node_meta_txt"])
                .unwrap_or(true),
        };
        let mut recursors = flags.recursor.clone();
        recursors.extend(str_list(&f, "recursors"));
        let list = |key: &str| -> Vec<Value> {
            match f.get(key) {
                Some(Value::Array(a)) => a.clone(),
                _ => vec![],
            }
        };
        let ui = flags.ui
            || dev
            || get_bool(&f, &["ui"]).unwrap_or(false)
            || get_bool(&f, &["ui_config", "enabled"]).unwrap_or(false);
        let bootstrap_expect =
            flags.bootstrap_expect.or_else(|| get_i64(&f, &["bootstrap_expect"]).map(|v| v as u32)).unwrap_or(0);
        let bootstrap = flags.bootstrap || get_bool(&f, &["bootstrap"]).unwrap_or(false);
        if bootstrap && bootstrap_expect > 0 {
            return Err(ConfigError::Other(
                "'bootstrap_expect > 0' and 'bootstrap = true' are mutually exclusive".into(),
            ));
        }
        if bootstrap_expect > 0 && !server {
            return Err(ConfigError::Other("'bootstrap_expect > 0' requires 'server = true'".into()));
        }
        let docker = docker_options(&flags, &f)?;
        Ok(Config {
            node_name,
            node_id,
            node_meta,
            datacenter: flags
                .datacenter
                .clone()
                .or_else(|| get_str(&f, &["datacenter"]))
                .unwrap_or_else(|| "dc1".into())
                .to_lowercase(),
            domain: flags.domain.clone().or_else(|| get_str(&f, &["domain"])).unwrap_or_else(|| "consul.".into()),
            data_dir,
            server,
            dev,
            bootstrap: bootstrap || (dev && bootstrap_expect == 0),
            bootstrap_expect,
            bind_addr,
            advertise_addr,
            client_addrs,
            ports,
            retry_join,
            retry_join_wan,
            advertise_addr_wan,
            translate_wan_addrs: get_bool(&f, &["translate_wan_addrs"]).unwrap_or(false),
            retry_interval,
            retry_max: flags.retry_max.or_else(|| get_i64(&f, &["retry_max"]).map(|v| v as u32)).unwrap_or(0),
            rejoin: flags.rejoin,
            encrypt: flags.encrypt.clone().or_else(|| get_str(&f, &["encrypt"])),
            encrypt_verify_incoming: get_bool(&f, &["encrypt_verify_incoming"]).unwrap_or(true),
            encrypt_verify_outgoing: get_bool(&f, &["encrypt_verify_outgoing"]).unwrap_or(true),
            log_level,
            pid_file: flags.pid_file.clone().or_else(|| get_str(&f, &["pid_file"]).map(PathBuf::from)),
            ui,
            recursors,
            raft_multiplier: get_i64(&f, &["performance", "raft_multiplier"]).unwrap_or(5).clamp(1, 10) as u64,
            enable_script_checks: flags.enable_script_checks
                || get_bool(&f, &["enable_script_checks"]).unwrap_or(false),
            enable_local_script_checks: flags.enable_local_script_checks
                || get_bool(&f, &["enable_local_script_checks"]).unwrap_or(false),
            services: list("services"),
            checks: list("checks"),
            dns,
            kv_max_value_size: get_i64(&f, &["limits", "kv_max_value_size"]).unwrap_or(512 * 1024) as usize,
            txn_max_req_len: get_i64(&f, &["limits", "txn_max_req_len"]).unwrap_or(512 * 1024) as usize,
            txn_max_ops: 128,
            session_ttl_min: get_duration(&f, &["session_ttl_min"])?.unwrap_or(Duration::from_secs(10)),
            default_query_time,
            max_query_time,
            leave_on_terminate: get_bool(&f, &["leave_on_terminate"]).unwrap_or(!server),
            skip_leave_on_interrupt: get_bool(&f, &["skip_leave_on_interrupt"]).unwrap_or(server),
            ae_interval: Duration::from_secs(60),
            check_output_max_size: 4096,
            discard_check_output: get_bool(&f, &["discard_check_output"]).unwrap_or(false),
            http_max_conns_per_client: get_i64(&f, &["limits", "http_max_conns_per_client"]).unwrap_or(200) as usize,
            response_headers,
            allow_write_http_from,
            acl: acl_config(&f)?,
            tls: tls_config(&f, &dc_for_tls, &domain_for_tls),
            primary_datacenter: get_str(&f, &["primary_datacenter"])
                .or_else(|| get_str(&f, &["acl_datacenter"]))
                .unwrap_or_default(),
            gossip_lan: gossip_tuning(&f, "gossip_lan")?,
            gossip_wan: gossip_tuning(&f, "gossip_wan")?,
            reconnect_timeout: get_duration(&f, &["reconnect_timeout"])?.unwrap_or(Duration::from_secs(72 * 3600)),
            docker,
            flags,
        })
    }

    /// Reloads only what Consul reloads on SIGHUP: services and checks from the config files.
    pub fn reload_definitions(&self) -> Result<(Vec<Value>, Vec<Value>), ConfigError> {
        let files = load_files(&self.flags)?;
        let list = |key: &str| match files.get(key) {
            Some(Value::Array(a)) => a.clone(),
            _ => vec![],
        };
        Ok((list("services"), list("checks")))
    }

    pub fn http_addrs(&self) -> Vec<std::net::SocketAddr> {
        if self.ports.http < 0 {
            return vec![];
        }
        self.client_addrs.iter().map(|ip| std::net::SocketAddr::new(*ip, self.ports.http as u16)).collect()
    }

    pub fn https_addrs(&self) -> Vec<std::net::SocketAddr> {
        if self.ports.https <= 0 {
            return vec![];
        }
        self.client_addrs.iter().map(|ip| std::net::SocketAddr::new(*ip, self.ports.https as u16)).collect()
    }

    pub fn server_rpc_addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::new(self.advertise_addr, self.ports.server.max(0) as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> AgentFlags {
        let mut v = vec!["agent".to_string()];
        v.extend(args.iter().map(|s| s.to_string()));
        AgentFlags::try_parse_from(normalize_args(v)).expect("flags parse")
    }

    #[test]
    fn consul_style_flags_parse_in_every_form() {
        let f = parse(&[
            "-server",
            "-bootstrap-expect=3",
            "-node",
            "s1",
            "--bind=127.0.0.11",
            "-retry-join=127.0.0.12",
            "-retry-join",
            "127.0.0.13",
            "-data-dir=/tmp/x",
        ]);
        assert!(f.server);
        assert_eq!(f.bootstrap_expect, Some(3));
        assert_eq!(f.node.as_deref(), Some("s1"));
        assert_eq!(f.retry_join, vec!["127.0.0.12", "127.0.0.13"]);
        let c = Config::build(f, Map::new()).expect("valid");
        assert_eq!(c.advertise_addr.to_string(), "127.0.0.11");
        assert_eq!(c.ports.http, 8500);
        assert!(!c.bootstrap);
    }

    #[test]
    fn config_file_keys_and_flag_precedence() {
        let f = parse(&["-dev", "-http-port=9500"]);
        let file: Value = serde_json::json!({
            "ports": {"http": 8501, "dns": -1},
            "performance": {"raft_multiplier": 1},
            "enable_script_checks": true,
            "service": {"name": "web", "port": 80}
        });
        let mut merged = Map::new();
        merge(&mut merged, file.as_object().cloned().unwrap_or_default());
        let c = Config::build(f, merged).expect("valid");
        assert_eq!(c.ports.http, 9500, "flags win over files");
        assert_eq!(c.ports.dns, -1);
        assert_eq!(c.raft_multiplier, 1);
        assert!(c.enable_script_checks && c.server && c.bootstrap && c.ui);
    }

    #[test]
    fn bind_everywhere_advertises_the_one_private_address() {
        let ip = |s: &str| s.parse::<std::net::Ipv4Addr>().expect("ip");
        assert_eq!(private_ipv4(&[ip("127.0.0.1"), ip("172.17.0.2")]).expect("one").to_string(), "172.17.0.2");
        assert_eq!(private_ipv4(&[ip("100.64.1.2")]).expect("cgnat").to_string(), "100.64.1.2");
        assert!(private_ipv4(&[ip("127.0.0.1"), ip("192.0.2.2")]).unwrap_err().to_string().starts_with("No private"));
        assert!(private_ipv4(&[ip("10.0.0.1"), ip("192.168.1.1")]).unwrap_err().to_string().starts_with("Multiple"));
    }

    #[test]
    fn docker_settings_from_flags_or_keys() {
        let c = Config::build(parse(&["-dev"]), Map::new()).expect("valid");
        assert_eq!(c.docker, None, "off without a socket");
        let c = Config::build(parse(&["-dev", "-docker-socket=/var/run/docker.sock", "-docker-internal"]), Map::new())
            .expect("valid");
        let d = c.docker.expect("on");
        assert_eq!(d.socket, PathBuf::from("/var/run/docker.sock"));
        assert!(d.rules.internal && !d.rules.explicit && d.rules.ip.is_none());
        let file =
            serde_json::json!({"docker_socket": "/run/podman.sock", "docker_explicit": true, "docker_ip": "10.1.2.3"});
        let c = Config::build(parse(&["-dev"]), file.as_object().cloned().unwrap_or_default()).expect("valid");
        let d = c.docker.expect("on");
        assert_eq!(d.socket, PathBuf::from("/run/podman.sock"));
        assert!(d.rules.explicit && !d.rules.internal);
        assert_eq!(d.rules.ip.map(|ip| ip.to_string()).as_deref(), Some("10.1.2.3"));
        assert!(Config::build(parse(&["-dev", "-docker-socket=/s", "-docker-ip=nope"]), Map::new()).is_err());
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(Config::build(parse(&["-server"]), Map::new()).is_err(), "no data dir");
        assert!(Config::build(parse(&["-dev", "-bind=nope"]), Map::new()).is_err());
        assert!(Config::build(parse(&["-dev", "-retry-interval=xyz"]), Map::new()).is_err());
        assert!(
            Config::build(parse(&["-data-dir=/x", "-bootstrap-expect=3"]), Map::new()).is_err(),
            "expect needs server"
        );
    }
}
