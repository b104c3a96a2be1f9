//! Commands that need little or no cluster state: `version`, `keygen`, `validate`,
//! `snapshot save|restore`, `services register|deregister`.

use super::{ctx_or_exit, err, fail, group_help, out, parse_flags};
use base64::Engine;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

/// The Consul release whose HTTP API and CLI this agent follows; the first line of `version`
/// is what scripts parse.
pub(super) const CONSUL_VERSION: &str = "1.20.0";
const RPC_DEFAULT: u32 = 2;
const RPC_MIN: u32 = 2;
const RPC_MAX: u32 = 3;

fn revision() -> String {
    match option_env!("AGENT_GIT_COMMIT") {
        Some(c) if !c.is_empty() => c.to_string(),
        _ => format!("agent-{}", env!("CARGO_PKG_VERSION")),
    }
}

pub(super) fn version_pretty() -> String {
    let mut s = format!("Consul v{CONSUL_VERSION}\n");
    s.push_str(&format!("Revision {}\n", revision()));
    if let Some(d) = option_env!("AGENT_BUILD_DATE").filter(|d| !d.is_empty()) {
        s.push_str(&format!("Build Date {d}\n"));
    }
    let supplement = if RPC_DEFAULT < RPC_MAX {
        format!(" (agent will automatically use protocol >{RPC_DEFAULT} when speaking to compatible agents)")
    } else {
        String::new()
    };
    s.push_str(&format!("Protocol {RPC_DEFAULT} spoken by default, understands {RPC_MIN} to {RPC_MAX}{supplement}\n"));
    s
}

#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct RpcVersionInfo {
    default: u32,
    min: u32,
    max: u32,
}

/// Field for field (and in the order of) Consul's `VersionInfo`.
#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct VersionInfo {
    version: &'static str,
    revision: String,
    prerelease: &'static str,
    build_date: &'static str,
    #[serde(rename = "RPC")]
    rpc: RpcVersionInfo,
}

/// `json.MarshalIndent(info, "", "   ")`.
pub(super) fn version_json() -> String {
    let v = VersionInfo {
        version: CONSUL_VERSION,
        revision: revision(),
        prerelease: "",
        build_date: option_env!("AGENT_BUILD_DATE").filter(|d| !d.is_empty()).unwrap_or("0001-01-01T00:00:00Z"),
        rpc: RpcVersionInfo { default: RPC_DEFAULT, min: RPC_MIN, max: RPC_MAX },
    };
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"   ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    let _ = serde::Serialize::serialize(&v, &mut ser);
    String::from_utf8(buf).unwrap_or_default()
}

pub(super) fn version(args: &[String]) -> i32 {
    let usage = "Usage: agent version [options]\n\nCommand Options:\n  -format=<pretty|json>  Output format.";
    let p = parse_flags!(args, &[], &["format"], usage);
    match p.str("format").unwrap_or("pretty") {
        "pretty" => {
            // Go's UI.Output adds a newline after the text's own: keep the blank line.
            out(&version_pretty());
        }
        "json" => out(&version_json()),
        other => fail!("Unknown format: {other}"),
    }
    0
}

/// A new gossip encryption key: 32 bytes from the OS's random source, base64.
pub(super) fn new_key() -> Result<String, String> {
    use rand::RngCore;
    let mut key = [0u8; 32];
    rand::rngs::OsRng.try_fill_bytes(&mut key).map_err(|e| e.to_string())?;
    Ok(base64::engine::general_purpose::STANDARD.encode(key))
}

pub(super) fn keygen(args: &[String]) -> i32 {
    let usage = "Usage: agent keygen\n\n  Generates a new encryption key that can be used to configure the\n  agent to encrypt traffic.";
    let _p = parse_flags!(args, &[], &[], usage);
    match new_key() {
        Ok(k) => {
            out(&k);
            0
        }
        Err(e) => fail!("Error reading random data: {e}"),
    }
}

// ---- validate ----

/// Checks one config document the way the agent reads it: a JSON object whose service and check
/// sections have the right shapes.
pub(super) fn validate_doc(v: &Value) -> Result<(), String> {
    let Some(m) = v.as_object() else {
        return Err("top level of a config file must be a JSON object".into());
    };
    let lower: Map<String, Value> = m.iter().map(|(k, v)| (k.to_lowercase(), v.clone())).collect();
    let obj_or_list = |key: &str| -> Result<(), String> {
        match lower.get(key) {
            None | Some(Value::Null) => Ok(()),
            Some(Value::Object(_)) => Ok(()),
            Some(Value::Array(a)) if a.iter().all(Value::is_object) => Ok(()),
            Some(other) => Err(format!("{key}: expected an object or a list of objects, got {other}")),
        }
    };
    for key in ["service", "services", "check", "checks", "watches"] {
        obj_or_list(key)?;
    }
    for section in ["service", "services"] {
        let defs: Vec<&Value> = match lower.get(section) {
            Some(Value::Object(_)) => vec![&lower[section]],
            Some(Value::Array(a)) => a.iter().collect(),
            _ => vec![],
        };
        for d in defs {
            let name =
                d.as_object().and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case("name")).map(|(_, v)| v));
            match name {
                Some(Value::String(n)) if !n.is_empty() => {}
                _ => return Err(format!("{section}: service definition is missing a name: {d}")),
            }
        }
    }
    for key in ["ports", "addresses", "performance", "telemetry", "dns_config", "acl", "autopilot", "limits"] {
        if let Some(v) = lower.get(key) {
            if !v.is_object() && !v.is_null() {
                return Err(format!("{key}: expected an object, got {v}"));
            }
        }
    }
    Ok(())
}

fn config_files(path: &Path) -> Result<Vec<PathBuf>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.is_dir() {
        let rd = std::fs::read_dir(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut files: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("json" | "hcl")))
            .collect();
        files.sort();
        Ok(files)
    } else {
        Ok(vec![path.to_path_buf()])
    }
}

/// Checks the files as the agent would read them (the same schema and the same refusals), then
/// the service and check sections' shapes. Returns the warnings (unknown keys).
pub(super) fn validate_paths(paths: &[String]) -> Result<Vec<String>, String> {
    let mut files = Vec::new();
    for p in paths {
        files.extend(config_files(Path::new(p))?);
    }
    for f in &files {
        let doc = crate::config::read_doc(f).map_err(|e| format!("Error parsing {}: {e}", f.display()))?;
        validate_doc(&Value::Object(doc)).map_err(|e| format!("Error parsing {}: {e}", f.display()))?;
    }
    let (_, unknown) = crate::config::load_paths(&files).map_err(|e| e.to_string())?;
    Ok(unknown.into_iter().map(|k| format!("invalid config key {k}")).collect())
}

pub(super) fn validate(args: &[String]) -> i32 {
    let usage = "
Usage: agent validate [options] FILE_OR_DIRECTORY...

  Performs a basic sanity test on agent configuration files. For each file
  or directory given, the validate command will attempt to parse the
  contents just as the \"agent\" command would.

Command Options:
  -quiet  When given, a successful run will produce no output.
";
    let p = parse_flags!(args, &["quiet"], &["config-format"], usage);
    if p.args.is_empty() {
        fail!("Must specify at least one config file or directory");
    }
    match validate_paths(&p.args) {
        Ok(warnings) => {
            for w in warnings {
                err(&w);
            }
            if !p.bool("quiet") {
                out("Configuration is valid!");
            }
            0
        }
        Err(e) => fail!("Config validation failed: {e}"),
    }
}

// ---- snapshot ----

const SNAPSHOT_HELP: &str = "
Usage: agent snapshot <subcommand> [options] [args]

  Saves and restores point-in-time snapshots of the state of the servers
  (catalog, sessions, KV, ...).

Subcommands:
    restore    Restores snapshot of server state
    save       Saves snapshot of server state
";

pub(super) async fn snapshot(args: &[String]) -> i32 {
    match args.first().map(String::as_str) {
        Some("save") => snapshot_save(&args[1..]).await,
        Some("restore") => snapshot_restore(&args[1..]).await,
        Some("inspect") => fail!("snapshot inspect is not supported by this agent"),
        _ => group_help(args, SNAPSHOT_HELP),
    }
}

fn file_arg(args: &[String]) -> Result<String, String> {
    match args.len() {
        0 => Err("Missing FILE argument".into()),
        1 => Ok(args[0].clone()),
        n => Err(format!("Too many arguments (expected 1, got {n})")),
    }
}

/// A gzip archive must decompress to the end; other formats are taken as they are.
pub(super) fn verify_snapshot(bytes: &[u8]) -> Result<(), String> {
    if bytes.is_empty() {
        return Err("snapshot is empty".into());
    }
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut d = flate2::read::GzDecoder::new(bytes);
        std::io::copy(&mut d, &mut std::io::sink()).map_err(|e| format!("corrupt gzip stream: {e}"))?;
    }
    Ok(())
}

async fn snapshot_save(args: &[String]) -> i32 {
    let usage = "Usage: agent snapshot save [options] FILE\n\n  Retrieves an atomic, point-in-time snapshot of the state of the servers.";
    let p = parse_flags!(args, &[], &[], usage);
    let file = match file_arg(&p.args) {
        Ok(f) => f,
        Err(e) => fail!("{e}"),
    };
    let ctx = ctx_or_exit!(p);
    let resp = match ctx.send(http::Method::GET, "/v1/snapshot", &[], None, true, None).await {
        Ok(r) => r,
        Err(e) => fail!("Error saving snapshot: {e}"),
    };
    let index = resp.meta().last_index;
    let tmp = format!("{file}.tmp");
    if let Err(e) = std::fs::write(&tmp, &resp.body) {
        fail!("Error writing unverified snapshot file: {e}");
    }
    if let Err(e) = verify_snapshot(&resp.body) {
        let _ = std::fs::remove_file(&tmp);
        fail!("Error verifying snapshot file: {e}");
    }
    if let Err(e) = std::fs::rename(&tmp, &file) {
        fail!("Error renaming {tmp} to {file}: {e}");
    }
    out(&format!("Saved and verified snapshot to index {index}"));
    0
}

async fn snapshot_restore(args: &[String]) -> i32 {
    let usage = "Usage: agent snapshot restore [options] FILE\n\n  Restores an atomic, point-in-time snapshot of the state of the servers.";
    let p = parse_flags!(args, &[], &[], usage);
    let file = match file_arg(&p.args) {
        Ok(f) => f,
        Err(e) => fail!("{e}"),
    };
    let data = match std::fs::read(&file) {
        Ok(d) => d,
        Err(e) => fail!("Error opening snapshot file: {e}"),
    };
    let ctx = ctx_or_exit!(p);
    if let Err(e) = ctx.put("/v1/snapshot", &[], Some(data)).await {
        fail!("Error restoring snapshot: {e}");
    }
    out("Restored snapshot");
    0
}

// ---- services ----

const SERVICES_HELP: &str = "
Usage: agent services <subcommand> [options] [args]

  This command has subcommands for interacting with services.

Subcommands:
    deregister    Deregister services with the local agent
    register      Register services with the local agent
";

pub(super) async fn services(args: &[String]) -> i32 {
    match args.first().map(String::as_str) {
        Some("register") => register(&args[1..]).await,
        Some("deregister") => deregister(&args[1..]).await,
        _ => group_help(args, SERVICES_HELP),
    }
}

fn field<'a>(m: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    m.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
}

fn field_str(m: &Map<String, Value>, name: &str) -> String {
    field(m, name).and_then(Value::as_str).unwrap_or_default().to_string()
}

/// Service definitions of one config document: `service {}`, `services []`, or a bare definition.
pub(super) fn services_from_doc(v: &Value) -> Result<Vec<Map<String, Value>>, String> {
    let Some(m) = v.as_object() else {
        return Err("expected a JSON object".into());
    };
    let mut out = Vec::new();
    for key in ["service", "services"] {
        match field(m, key) {
            None | Some(Value::Null) => {}
            Some(Value::Object(o)) => out.push(o.clone()),
            Some(Value::Array(a)) => {
                for s in a {
                    match s.as_object() {
                        Some(o) => out.push(o.clone()),
                        None => return Err(format!("{key}: expected objects, got {s}")),
                    }
                }
            }
            Some(other) => return Err(format!("{key}: expected an object or a list, got {other}")),
        }
    }
    if out.is_empty() && field(m, "name").is_some() {
        out.push(m.clone());
    }
    if out.is_empty() {
        return Err("no service definitions found".into());
    }
    Ok(out)
}

fn services_from_files(files: &[String]) -> Result<Vec<Map<String, Value>>, String> {
    let mut all = Vec::new();
    for f in files {
        let text = std::fs::read(f).map_err(|e| format!("Error reading {f}: {e}"))?;
        let v: Value = serde_json::from_slice(&text).map_err(|e| format!("Error decoding {f}: {e}"))?;
        all.extend(services_from_doc(&v).map_err(|e| format!("{f}: {e}"))?);
    }
    Ok(all)
}

/// The registration the flags describe (keys as `/v1/agent/service/register` takes them).
pub(super) struct FlagService {
    pub id: String,
    pub name: String,
    pub address: String,
    pub port: u64,
    pub kind: String,
    pub tags: Vec<String>,
    pub meta: Vec<(String, String)>,
    pub tagged: Vec<(String, Value)>,
}

/// `host:port` or `host` as a `{Address, Port}` object (api.ParseServiceAddr).
pub(super) fn parse_service_addr(s: &str) -> Result<Value, String> {
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.starts_with('[') => {
            let port: u16 = p.parse().map_err(|_| format!("invalid port {p:?} in {s:?}"))?;
            Ok(json!({"Address": h.trim_start_matches('[').trim_end_matches(']'), "Port": port}))
        }
        _ => Ok(json!({"Address": s, "Port": 0})),
    }
}

impl FlagService {
    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        if !self.kind.is_empty() {
            m.insert("Kind".into(), json!(self.kind));
        }
        if !self.id.is_empty() {
            m.insert("ID".into(), json!(self.id));
        }
        m.insert("Name".into(), json!(self.name));
        if !self.address.is_empty() {
            m.insert("Address".into(), json!(self.address));
        }
        if self.port != 0 {
            m.insert("Port".into(), json!(self.port));
        }
        if !self.tags.is_empty() {
            m.insert("Tags".into(), json!(self.tags));
        }
        if !self.meta.is_empty() {
            m.insert("Meta".into(), Value::Object(self.meta.iter().map(|(k, v)| (k.clone(), json!(v))).collect()));
        }
        if !self.tagged.is_empty() {
            m.insert("TaggedAddresses".into(), Value::Object(self.tagged.iter().cloned().collect()));
        }
        m
    }

    /// Consul's `CombineArgs`: flag values fill what the file leaves empty; meta, tagged
    /// addresses and tags are added.
    pub fn combine_into(&self, svc: &mut Map<String, Value>) {
        let mut set_if_empty = |key: &str, val: Value, empty: bool| {
            if empty {
                return;
            }
            let present = field(svc, key).is_some_and(|v| match v {
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_u64() != Some(0),
                Value::Null => false,
                _ => true,
            });
            if !present {
                svc.retain(|k, _| !k.eq_ignore_ascii_case(key));
                svc.insert(key.to_string(), val);
            }
        };
        set_if_empty("ID", json!(self.id), self.id.is_empty());
        set_if_empty("Name", json!(self.name), self.name.is_empty());
        set_if_empty("Address", json!(self.address), self.address.is_empty());
        set_if_empty("Port", json!(self.port), self.port == 0);
        set_if_empty("Kind", json!(self.kind), self.kind.is_empty());
        let mut merge_map = |key: &str, add: Vec<(String, Value)>| {
            if add.is_empty() {
                return;
            }
            let existing = svc.keys().find(|k| k.eq_ignore_ascii_case(key)).cloned().unwrap_or_else(|| key.to_string());
            let entry = svc.entry(existing).or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            if let Value::Object(o) = entry {
                for (k, v) in add {
                    o.insert(k, v);
                }
            }
        };
        merge_map("Meta", self.meta.iter().map(|(k, v)| (k.clone(), json!(v))).collect());
        merge_map("TaggedAddresses", self.tagged.clone());
        if !self.tags.is_empty() {
            let existing =
                svc.keys().find(|k| k.eq_ignore_ascii_case("tags")).cloned().unwrap_or_else(|| "Tags".into());
            let entry = svc.entry(existing).or_insert_with(|| json!([]));
            if !entry.is_array() {
                *entry = json!([]);
            }
            if let Value::Array(a) = entry {
                a.extend(self.tags.iter().map(|t| json!(t)));
            }
        }
    }
}

async fn register(args: &[String]) -> i32 {
    let usage = "
Usage: agent services register [options] [FILE...]

  Register one or more services using the local agent API. Services can
  be registered from JSON configuration files or using flags.

      $ agent services register web.json
      $ agent services register -name=web -port=80 -tag=v1

Command Options:
  -address=<addr>          Address of the service.
  -id=<id>                 ID of the service (defaults to -name).
  -kind=<kind>             The service's kind.
  -meta=<key=value>        Metadata to set on the service (repeatable).
  -name=<name>             Name of the service.
  -port=<port>             Port of the service.
  -tag=<tag>               Tag to add to the service (repeatable).
  -tagged-address=<k=v>    Tagged address to set on the service (repeatable).
";
    let p = parse_flags!(
        args,
        &[],
        &["id", "name", "address", "port", "socket", "meta", "tag", "tagged-address", "kind"],
        usage
    );
    let port = match p.u64("port") {
        Ok(v) => v.unwrap_or(0),
        Err(e) => {
            err(&e);
            fail!("{}", usage.trim_matches('\n'))
        }
    };
    let meta = match p.map("meta") {
        Ok(m) => m,
        Err(e) => fail!("{e}"),
    };
    let mut tagged = Vec::new();
    match p.map("tagged-address") {
        Ok(m) => {
            for (k, v) in m {
                match parse_service_addr(&v) {
                    Ok(a) => tagged.push((k, a)),
                    Err(e) => fail!("Invalid Tagged Address: {e}"),
                }
            }
        }
        Err(e) => fail!("{e}"),
    }
    let flag_svc = FlagService {
        id: p.str("id").unwrap_or("").into(),
        name: p.str("name").unwrap_or("").into(),
        address: p.str("address").unwrap_or("").into(),
        port,
        kind: p.str("kind").unwrap_or("").into(),
        tags: p.all("tag"),
        meta,
        tagged,
    };
    if p.args.is_empty() && flag_svc.name.is_empty() {
        fail!("Service registration requires at least one argument or flags.");
    } else if !p.args.is_empty() && !flag_svc.name.is_empty() {
        fail!("Service registration requires arguments or -id, not both.");
    }
    let svcs = if p.args.is_empty() {
        vec![flag_svc.to_json()]
    } else {
        match services_from_files(&p.args) {
            Ok(mut v) => {
                for s in v.iter_mut() {
                    flag_svc.combine_into(s);
                }
                v
            }
            Err(e) => fail!("Error: {e}"),
        }
    };
    let ctx = ctx_or_exit!(p);
    for svc in svcs {
        let name = field_str(&svc, "name");
        let body = serde_json::to_vec(&Value::Object(svc)).unwrap_or_default();
        if let Err(e) = ctx.put("/v1/agent/service/register", &[], Some(body)).await {
            fail!("Error registering service {name:?}: {e}");
        }
        out(&format!("Registered service: {name}"));
    }
    0
}

async fn deregister(args: &[String]) -> i32 {
    let usage = "
Usage: agent services deregister [options] [FILE...]

  Deregister one or more services that were previously registered with
  the local agent, by -id or by the files that registered them.

Command Options:
  -id=<id>  ID to deregister if no files are given.
";
    let p = parse_flags!(args, &[], &["id"], usage);
    let id = p.str("id").unwrap_or("");
    if p.args.is_empty() && id.is_empty() {
        fail!("Service deregistration requires at least one argument or -id.");
    } else if !p.args.is_empty() && !id.is_empty() {
        fail!("Service deregistration requires arguments or -id, not both.");
    }
    let ids: Vec<String> = if p.args.is_empty() {
        vec![id.to_string()]
    } else {
        match services_from_files(&p.args) {
            Ok(v) => v
                .iter()
                .map(|s| {
                    let id = field_str(s, "id");
                    if id.is_empty() {
                        field_str(s, "name")
                    } else {
                        id
                    }
                })
                .collect(),
            Err(e) => fail!("Error: {e}"),
        }
    };
    let ctx = ctx_or_exit!(p);
    for id in ids {
        if let Err(e) = ctx.put(&format!("/v1/agent/service/deregister/{id}"), &[], None).await {
            fail!("Error deregistering service {id:?}: {e}");
        }
        out(&format!("Deregistered service: {id}"));
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_is_32_random_bytes_in_base64() {
        let a = new_key().unwrap();
        let b = new_key().unwrap();
        assert_eq!(a.len(), 44);
        assert_eq!(base64::engine::general_purpose::STANDARD.decode(&a).unwrap().len(), 32);
        assert_ne!(a, b);
    }

    #[test]
    fn version_first_line_is_what_scripts_parse() {
        let v = version_pretty();
        assert!(v.starts_with("Consul v1.20.0\nRevision "));
        assert!(v.contains(
            "Protocol 2 spoken by default, understands 2 to 3 (agent will automatically use protocol >2 when speaking to compatible agents)"
        ));
        let j: Value = serde_json::from_str(&version_json()).unwrap();
        assert_eq!(j["Version"], "1.20.0");
        assert_eq!(j["RPC"]["Max"], 3);
        assert!(version_json().starts_with("{\n   \"Version\": \"1.20.0\",\n   \"Revision\""));
    }

    #[test]
    fn validate_accepts_json_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("a.json");
        std::fs::write(&good, r#"{"datacenter":"dc1","service":{"name":"web","port":80}}"#).unwrap();
        std::fs::write(dir.path().join("b.hcl"), "datacenter = \"dc1\"").unwrap();
        std::fs::write(dir.path().join("ignored.txt"), "not config").unwrap();
        let d = dir.path().display().to_string();
        assert!(validate_paths(std::slice::from_ref(&d)).is_ok(), "HCL is read like JSON");
        std::fs::write(dir.path().join("b.hcl"), "datacenter = \n").unwrap();
        let e = validate_paths(std::slice::from_ref(&d)).unwrap_err();
        assert!(e.contains("b.hcl") && e.contains("line 2"), "{e}");
        std::fs::write(dir.path().join("b.hcl"), "service { port = 80 }").unwrap();
        let e = validate_paths(std::slice::from_ref(&d)).unwrap_err();
        assert!(e.contains("missing a name"), "{e}");
        std::fs::remove_file(dir.path().join("b.hcl")).unwrap();
        std::fs::write(dir.path().join("b.json"), r#"{"bogus_key": 1}"#).unwrap();
        let warnings = validate_paths(std::slice::from_ref(&d)).unwrap();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].ends_with("b.json: bogus_key"), "{warnings:?}");
        std::fs::write(dir.path().join("b.json"), r#"{"auto_encrypt": {"tls": true}}"#).unwrap();
        assert!(validate_paths(std::slice::from_ref(&d)).unwrap_err().contains("auto_encrypt"));
        std::fs::write(dir.path().join("b.json"), r#"{"server": "yes"}"#).unwrap();
        assert!(validate_paths(std::slice::from_ref(&d)).unwrap_err().contains("'server' expected type 'bool'"));
        std::fs::remove_file(dir.path().join("b.json")).unwrap();
        let bad = dir.path().join("c.json");
        std::fs::write(&bad, "{\"services\": [").unwrap();
        assert!(validate_paths(&[d]).unwrap_err().contains("c.json"));
        assert!(validate_doc(&json!({"service": {"port": 80}})).is_err());
        assert!(validate_doc(&json!([1])).is_err());
        assert!(validate_paths(&["/nonexistent/x.json".to_string()]).is_err());
    }

    #[test]
    fn service_files_and_flags_combine() {
        let v = json!({"services": [{"name": "web", "port": 80, "tags": ["a"]}, {"Name": "db", "ID": "db1"}]});
        let mut svcs = services_from_doc(&v).unwrap();
        assert_eq!(svcs.len(), 2);
        let flags = FlagService {
            id: String::new(),
            name: String::new(),
            address: "10.0.0.5".into(),
            port: 8080,
            kind: String::new(),
            tags: vec!["b".into()],
            meta: vec![("env".into(), "prod".into())],
            tagged: vec![],
        };
        flags.combine_into(&mut svcs[0]);
        assert_eq!(svcs[0]["port"], 80);
        assert_eq!(svcs[0]["Address"], "10.0.0.5");
        assert_eq!(svcs[0]["tags"], json!(["a", "b"]));
        assert_eq!(svcs[0]["Meta"], json!({"env": "prod"}));
        assert_eq!(field_str(&svcs[1], "id"), "db1");
        assert!(services_from_doc(&json!({"datacenter": "dc1"})).is_err());
        assert_eq!(services_from_doc(&json!({"Name": "bare"})).unwrap().len(), 1);
    }

    #[test]
    fn flag_service_json_and_addresses() {
        let f = FlagService {
            id: "web1".into(),
            name: "web".into(),
            address: String::new(),
            port: 80,
            kind: String::new(),
            tags: vec!["a".into()],
            meta: vec![],
            tagged: vec![("lan".into(), parse_service_addr("10.0.0.1:80").unwrap())],
        };
        assert_eq!(
            Value::Object(f.to_json()),
            json!({"ID": "web1", "Name": "web", "Port": 80, "Tags": ["a"], "TaggedAddresses": {"lan": {"Address": "10.0.0.1", "Port": 80}}})
        );
        assert_eq!(parse_service_addr("host").unwrap(), json!({"Address": "host", "Port": 0}));
        assert!(parse_service_addr("h:notaport").is_err());
    }

    #[test]
    fn snapshot_verification() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(b"state").unwrap();
        let gz = enc.finish().unwrap();
        assert!(verify_snapshot(&gz).is_ok());
        assert!(verify_snapshot(&gz[..gz.len() - 4]).is_err());
        assert!(verify_snapshot(b"").is_err());
        assert!(verify_snapshot(b"opaque").is_ok());
    }
}
