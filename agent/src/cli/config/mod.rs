//! `config write|read|list|delete`: Consul's commands for config entries over `/v1/config`, with
//! its output lines and exit codes (`Config entry written: service-defaults/web`, `Config entry
//! not updated: ...` when a `-cas` write loses). Files are JSON or HCL with Consul's snake_case
//! keys (see `decode`).

mod decode;

use super::http::{is_true, Ctx};
use super::{err, fail, group_help, out, parse_flags};
use http::Method;
use serde_json::{Map, Value};
use std::io::Read;

const HELP: &str = "
Usage: agent config <subcommand> [options] [args]

  Writes, reads, lists and deletes config entries: the cluster-wide settings
  of services and of the service mesh (service-defaults, proxy-defaults,
  service-router, service-splitter, service-resolver, ingress-gateway,
  terminating-gateway, service-intentions, mesh, exported-services).

  Write an entry from a file (HCL or JSON):

      $ agent config write web-defaults.hcl

  Read it back as JSON, list the entries of a kind, delete one:

      $ agent config read -kind service-defaults -name web
      $ agent config list -kind service-defaults
      $ agent config delete -kind service-defaults -name web

Subcommands:
    delete    Delete a config entry
    list      List the config entries of a kind
    read      Read a config entry
    write     Create or update a config entry
";

const WRITE_USAGE: &str = "
Usage: agent config write [options] FILE

  Creates or updates the config entry in FILE (HCL or JSON; - reads stdin).
  HCL files may use snake_case keys (kind = \"service-defaults\",
  default_subset = \"v1\"); they are sent as the API's CamelCase names.

      $ agent config write web-defaults.hcl
      $ agent config write -cas -modify-index 42 web-defaults.hcl

Command Options:
  -cas                  Write only if the entry's ModifyIndex is -modify-index
                        (0: only if it does not exist yet).
  -modify-index=<uint>  The ModifyIndex the write is based on, with -cas.
";

const READ_USAGE: &str = "
Usage: agent config read [options] -kind KIND -name NAME

  Prints the config entry of that kind and name as JSON.

      $ agent config read -kind proxy-defaults -name global

Command Options:
  -kind=<string>  The entry's kind.
  -name=<string>  The entry's name.
";

const LIST_USAGE: &str = "
Usage: agent config list [options] -kind KIND

  Prints the names of the config entries of a kind, one a line.

      $ agent config list -kind service-defaults

Command Options:
  -kind=<string>    The kind to list.
  -filter=<string>  An expression the entries must match.
";

const DELETE_USAGE: &str = "
Usage: agent config delete [options] -kind KIND -name NAME

  Deletes the config entry of that kind and name.

      $ agent config delete -kind service-defaults -name web

Command Options:
  -kind=<string>        The entry's kind.
  -name=<string>        The entry's name.
  -cas                  Delete only if the entry's ModifyIndex is -modify-index.
  -modify-index=<uint>  The ModifyIndex the delete is based on, with -cas.
";

pub(super) async fn run(args: &[String]) -> i32 {
    match args.first().map(String::as_str) {
        Some("write") => write(&args[1..]).await,
        Some("read") => read(&args[1..]).await,
        Some("list") => list(&args[1..]).await,
        Some("delete") => delete(&args[1..]).await,
        _ => group_help(args, HELP),
    }
}

/// The HTTP context, or Consul's line for these commands (which says "connect", not
/// "connecting") and exit 1.
macro_rules! client_or_exit {
    ($p:expr) => {
        match Ctx::new(&$p) {
            Ok(c) => c,
            Err(e) => fail!("Error connect to Consul agent: {e}"),
        }
    };
}

/// `-modify-index` as Go's `Uint64Var` reads it (0 when absent).
fn modify_index(p: &super::flags::Parsed, usage: &str) -> Result<u64, i32> {
    p.u64("modify-index").map(|v| v.unwrap_or(0)).map_err(|e| {
        err(&e);
        err(usage.trim_matches('\n'));
        1
    })
}

/// Consul's `helpers.LoadDataSourceNoRaw`: a file path, or `-` for stdin.
fn load(arg: &str) -> Result<String, String> {
    if arg.is_empty() {
        return Err("Failed to load data: must specify a file path or '-' for stdin".into());
    }
    if arg == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map_err(|e| format!("Failed to read stdin: {e}"))?;
        return Ok(s);
    }
    std::fs::read_to_string(arg).map_err(|e| format!("Failed to read file: {}", super::http::go_open_error(arg, &e)))
}

/// Consul's warning for an entry that turns on permissive mTLS.
fn kind_warning(kind: &str, entry: &Map<String, Value>) -> Option<&'static str> {
    if entry.get("MutualTLSMode").and_then(Value::as_str) != Some("permissive") {
        return None;
    }
    match kind {
        "service-defaults" => Some(
            "Found MutualTLSMode=permissive. This mode is insecure. We recommend transitioning this to MutualTLSMode=strict.",
        ),
        "proxy-defaults" => Some(
            "Found MutualTLSMode=permissive. This mode is insecure. Setting this mode in proxy-defaults enables this \
             insecure mode by default for all services. We recommend setting this to MutualTLSMode=strict.",
        ),
        _ => None,
    }
}

async fn write(args: &[String]) -> i32 {
    let p = parse_flags!(args, &["cas"], &["modify-index"], WRITE_USAGE);
    let index = match modify_index(&p, WRITE_USAGE) {
        Ok(i) => i,
        Err(code) => return code,
    };
    if p.args.len() != 1 {
        fail!("Must provide exactly one positional argument to specify the config entry to write");
    }
    let text = match load(&p.args[0]) {
        Ok(t) => t,
        Err(e) => fail!("Failed to load data: {e}"),
    };
    let (kind, entry) = match decode::parse(&text).and_then(decode::decode) {
        Ok(x) => x,
        // Consul wraps the parser's error twice.
        Err(e) => fail!("Failed to decode config entry input: {e}"),
    };
    let name = entry.get("Name").and_then(Value::as_str).unwrap_or_default().to_string();
    let ctx = client_or_exit!(p);
    let extra = if p.bool("cas") { vec![("cas".to_string(), index.to_string())] } else { Vec::new() };
    let body = serde_json::to_vec(&entry).unwrap_or_default();
    let written = match ctx.send(Method::PUT, "/v1/config", &extra, Some(body), false, None).await {
        Ok(resp) => is_true(&resp),
        Err(e) => fail!("Error writing config entry {kind}/{name}: {e}"),
    };
    if !written {
        fail!("Config entry not updated: {kind}/{name}");
    }
    out(&format!("Config entry written: {kind}/{name}"));
    if let Some(w) = kind_warning(&kind, &entry) {
        err(&format!("WARNING: {w}"));
    }
    0
}

/// The path of one entry (each segment is escaped when the request is made).
fn entry_path(kind: &str, name: &str) -> String {
    format!("/v1/config/{kind}/{name}")
}

async fn read(args: &[String]) -> i32 {
    let p = parse_flags!(args, &[], &["kind", "name"], READ_USAGE);
    let (kind, name) = (p.str("kind").unwrap_or_default(), p.str("name").unwrap_or_default());
    if kind.is_empty() {
        fail!("Must specify the -kind parameter");
    }
    if name.is_empty() {
        fail!("Must specify the -name parameter");
    }
    let ctx = client_or_exit!(p);
    // Consul's client refuses a kind it does not know before it asks.
    if !decode::KINDS.contains(&kind) {
        fail!("Error reading config entry {kind:?} / {name:?}: invalid config entry kind: {kind}");
    }
    let entry = match ctx.send(Method::GET, &entry_path(kind, name), &[], None, true, None).await {
        Ok(resp) => match serde_json::from_slice::<Value>(&resp.body) {
            Ok(v) => v,
            Err(e) => fail!("Error reading config entry {kind:?} / {name:?}: {e}"),
        },
        Err(e) => fail!("Error reading config entry {kind:?} / {name:?}: {e}"),
    };
    out(&entry_json(&entry));
    0
}

async fn list(args: &[String]) -> i32 {
    let p = parse_flags!(args, &[], &["kind", "filter"], LIST_USAGE);
    let kind = p.str("kind").unwrap_or_default();
    if kind.is_empty() {
        fail!("Must specify the -kind parameter");
    }
    let ctx = client_or_exit!(p);
    let mut extra = Vec::new();
    if let Some(f) = p.str("filter").filter(|f| !f.is_empty()) {
        extra.push(("filter".to_string(), f.to_string()));
    }
    let path = format!("/v1/config/{kind}");
    let entries: Vec<Map<String, Value>> = match ctx.send(Method::GET, &path, &extra, None, true, None).await {
        Ok(resp) => match serde_json::from_slice(&resp.body) {
            Ok(v) => v,
            Err(e) => fail!("Error listing config entries for kind {kind:?}: {e}"),
        },
        Err(e) => fail!("Error listing config entries for kind {kind:?}: {e}"),
    };
    for e in &entries {
        out(e.get("Name").and_then(Value::as_str).unwrap_or_default());
    }
    for w in list_warnings(&entries) {
        err(&format!("WARNING: {w}"));
    }
    0
}

/// Consul's warnings for a listing: one line per permissive proxy-defaults, one count for
/// service-defaults.
fn list_warnings(entries: &[Map<String, Value>]) -> Vec<String> {
    let mut out = Vec::new();
    let mut services = 0;
    for e in entries {
        let kind = e.get("Kind").and_then(Value::as_str).unwrap_or_default();
        match (kind, kind_warning(kind, e)) {
            ("service-defaults", Some(_)) => services += 1,
            (_, Some(w)) => {
                out.push(format!("{kind}/{}: {w}", e.get("Name").and_then(Value::as_str).unwrap_or_default()))
            }
            _ => {}
        }
    }
    if services > 0 {
        out.push(format!(
            "Found {services} service-default(s) with MutualTLSMode=permissive. Use `-filter 'MutualTLSMode == \
             \"permissive\"'` to list service-defaults in permissive MutualTLSMode. This mode is insecure. We \
             recommend setting this to MutualTLSMode=strict."
        ));
    }
    out
}

async fn delete(args: &[String]) -> i32 {
    let p = parse_flags!(args, &["cas"], &["kind", "name", "modify-index"], DELETE_USAGE);
    let index = match modify_index(&p, DELETE_USAGE) {
        Ok(i) => i,
        Err(code) => return code,
    };
    let (kind, name) = (p.str("kind").unwrap_or_default(), p.str("name").unwrap_or_default());
    let cas = p.bool("cas");
    if kind.is_empty() {
        fail!("Must specify the -kind parameter");
    }
    if name.is_empty() {
        fail!("Must specify the -name parameter");
    }
    if cas && index == 0 {
        fail!("Must specify a -modify-index greater than 0 with -cas");
    }
    if index != 0 && !cas {
        fail!("Cannot specify -modify-index without -cas");
    }
    let ctx = client_or_exit!(p);
    let extra = if cas { vec![("cas".to_string(), index.to_string())] } else { Vec::new() };
    let deleted = match ctx.send(Method::DELETE, &entry_path(kind, name), &extra, None, false, None).await {
        // Without -cas any 2xx answer is a deletion, as in Consul's client.
        Ok(resp) => !cas || is_true(&resp),
        Err(e) => fail!("Error deleting config entry {kind}/{name}: {e}"),
    };
    if !deleted {
        fail!("Config entry not deleted: {kind}/{name}");
    }
    out(&format!("Config entry deleted: {kind}/{name}"));
    0
}

/// An entry as Consul's `config read` prints it: Go's four-space JSON with `Kind` and `Name`
/// first and the Raft indexes last, the other fields between them.
fn entry_json(v: &Value) -> String {
    let Value::Object(m) = v else {
        return super::acl::format::go_json(v);
    };
    const FIRST: &[&str] = &["Kind", "Name"];
    const LAST: &[&str] = &["CreateIndex", "ModifyIndex"];
    let mut keys: Vec<&String> = Vec::new();
    keys.extend(FIRST.iter().filter_map(|k| m.get_key_value(*k).map(|(k, _)| k)));
    keys.extend(m.keys().filter(|k| !FIRST.contains(&k.as_str()) && !LAST.contains(&k.as_str())));
    keys.extend(LAST.iter().filter_map(|k| m.get_key_value(*k).map(|(k, _)| k)));
    let fields: Vec<String> = keys
        .into_iter()
        .map(|k| {
            let value = super::acl::format::go_json(&m[k]).replace('\n', "\n    ");
            format!("    {}: {value}", super::acl::format::go_json(k))
        })
        .collect();
    if fields.is_empty() {
        return "{}".into();
    }
    format!("{{\n{}\n}}", fields.join(",\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn read_prints_kind_and_name_first_and_indexes_last() {
        let v = json!({"Protocol": "http", "ModifyIndex": 7, "Name": "web", "CreateIndex": 5, "Kind": "service-defaults",
                       "Meta": {"a": "<b>"}, "Expose": {}});
        assert_eq!(
            entry_json(&v),
            "{\n    \"Kind\": \"service-defaults\",\n    \"Name\": \"web\",\n    \"Expose\": {},\n    \"Meta\": {\n        \
             \"a\": \"\\u003cb\\u003e\"\n    },\n    \"Protocol\": \"http\",\n    \"CreateIndex\": 5,\n    \"ModifyIndex\": 7\n}"
        );
    }

    #[test]
    fn permissive_mtls_is_warned_about_as_consul_does() {
        let e = |v: Value| v.as_object().cloned().expect("object");
        let list = vec![
            e(json!({"Kind": "service-defaults", "Name": "a", "MutualTLSMode": "permissive"})),
            e(json!({"Kind": "service-defaults", "Name": "b", "MutualTLSMode": "permissive"})),
            e(json!({"Kind": "service-defaults", "Name": "c"})),
        ];
        let w = list_warnings(&list);
        assert_eq!(w.len(), 1);
        assert!(w[0].starts_with("Found 2 service-default(s) with MutualTLSMode=permissive."), "{}", w[0]);
        let g = e(json!({"Kind": "proxy-defaults", "Name": "global", "MutualTLSMode": "permissive"}));
        assert!(list_warnings(&[g])[0].starts_with("proxy-defaults/global: Found MutualTLSMode=permissive."));
    }
}
