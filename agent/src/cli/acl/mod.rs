//! `acl bootstrap|policy|token|role|set-agent-token`: Consul's ACL commands over `/v1/acl/*` and
//! `/v1/agent/token/*`, with its flags, its `pretty` and `json` output and its error lines
//! (`Failed to create new token: Unexpected response code: 403 (Permission denied: ...)`).
//! IDs may be given as unique prefixes, as Consul's commands allow.

pub(super) mod format;
mod policy;
mod role;
mod token;

use super::http::{CallError, Ctx};
use super::{ctx_or_exit, err, fail, group_help, out, parse_flags};
use format::Format;
use http::Method;
use serde::de::DeserializeOwned;
use std::io::Read;

const ACL_HELP: &str = "
Usage: agent acl <subcommand> [options] [args]

  Manages the agent's ACL system: tokens, the policies and roles they link,
  the one-time bootstrap, and the tokens the agent itself uses. Each
  subcommand has its own help (agent acl token -h, ...).

  Bootstrap the ACL system (once):

      $ agent acl bootstrap

  List the tokens:

      $ agent acl token list

  Create a policy from a rules file:

      $ agent acl policy create -name web-read -rules @web-read.hcl

  Give the agent a default token:

      $ agent acl set-agent-token default 0bc6bc46-f25e-4262-b2d9-ffbe1d96be6f

Subcommands:
    bootstrap          Bootstrap the ACL system
    policy             Manage ACL policies
    role               Manage ACL roles
    set-agent-token    Assign the tokens the agent uses
    token              Manage ACL tokens
";

const BOOTSTRAP_USAGE: &str = "
Usage: agent acl bootstrap [options] [FILE|-]

  Asks the agent for a new token with unlimited privileges (linked to the
  global-management policy) and prints it. This works once; afterwards the
  agent refuses, until an operator writes the reset index it names into
  <data-dir>/acl-bootstrap-reset. An optional FILE (or - for stdin) holds the
  SecretID to give the new token.

Command Options:
  -format=<pretty|json>  Output format (default pretty).
";

const SET_AGENT_TOKEN_USAGE: &str = "
Usage: agent acl set-agent-token [options] TYPE TOKEN

  Sets one of the tokens the agent uses. Unless acl.enable_token_persistence
  is on, a token set this way is forgotten when the agent restarts. TOKEN may
  be @file or - (stdin).

  Token types:
    default                           Used for the agent's own operations and for
                                      HTTP and DNS requests that carry no token.
    agent                             Used for the agent's own operations
                                      (catalog sync, checks) instead of default.
    recovery                          Lets an operator use the agent's own
                                      endpoints while no server can be reached.
    replication                       Used to replicate ACL data between
                                      datacenters.
    config_file_service_registration  Used to register the services and checks
                                      of the configuration files.
    dns                               Used to answer DNS queries instead of
                                      default.

  Example:

      $ agent acl set-agent-token default c4d0f8df-3aba-4ab6-a7a0-35b760dc29a1
";

pub(super) async fn run(args: &[String]) -> i32 {
    match args.first().map(String::as_str) {
        Some("bootstrap") => bootstrap(&args[1..]).await,
        Some("policy") => policy::run(&args[1..]).await,
        Some("token") => token::run(&args[1..]).await,
        Some("role") => role::run(&args[1..]).await,
        Some("set-agent-token") => set_agent_token(&args[1..]).await,
        _ => group_help(args, ACL_HELP),
    }
}

/// Consul's `helpers.LoadDataSource`: `@file`, `-` for stdin, anything else as given.
fn load_data(v: &str) -> Result<String, String> {
    if let Some(path) = v.strip_prefix('@') {
        return std::fs::read_to_string(path)
            .map_err(|e| format!("Failed to read file: {}", super::http::go_open_error(path, &e)));
    }
    if v == "-" {
        return read_stdin();
    }
    Ok(v.to_string())
}

/// Consul's `helpers.LoadDataSourceNoRaw`: a file path, or `-` for stdin.
fn load_data_no_raw(v: &str) -> Result<String, String> {
    if v == "-" {
        return read_stdin();
    }
    let path = v.strip_prefix('@').unwrap_or(v);
    std::fs::read_to_string(path).map_err(|e| format!("Failed to read file: {}", super::http::go_open_error(path, &e)))
}

fn read_stdin() -> Result<String, String> {
    let mut s = String::new();
    std::io::stdin().read_to_string(&mut s).map_err(|e| format!("Failed to read stdin: {e}"))?;
    Ok(s)
}

/// A GET that must answer 200, decoded (Consul's `requireOK`).
async fn get<T: DeserializeOwned>(ctx: &Ctx, path: &str) -> Result<T, CallError> {
    let resp = ctx.send(Method::GET, path, &[], None, false, None).await?;
    decode(path, &resp.body)
}

/// A GET where 404 means "none" (Consul's `requireNotFoundOrOK`).
async fn get_opt<T: DeserializeOwned>(ctx: &Ctx, path: &str) -> Result<Option<T>, CallError> {
    match ctx.send(Method::GET, path, &[], None, false, None).await {
        Ok(resp) => decode(path, &resp.body).map(Some),
        Err(CallError::Status { code: 404, .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A PUT of a JSON body whose answer is decoded.
async fn put<T: DeserializeOwned>(ctx: &Ctx, path: &str, body: &serde_json::Value) -> Result<T, CallError> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let resp = ctx.put(path, &[], Some(bytes)).await?;
    decode(path, &resp.body)
}

async fn delete(ctx: &Ctx, path: &str) -> Result<(), CallError> {
    ctx.send(Method::DELETE, path, &[], None, false, None).await.map(|_| ())
}

fn decode<T: DeserializeOwned>(path: &str, body: &[u8]) -> Result<T, CallError> {
    serde_json::from_slice(body).map_err(|e| CallError::Decode(format!("decoding the answer from {path}: {e}")))
}

/// Consul's `-service-identity NAME[:DC1,DC2]` values.
fn service_identities(raw: &[String]) -> Result<Vec<api::AclServiceIdentity>, String> {
    raw.iter()
        .map(|s| {
            let parts: Vec<&str> = s.split(':').collect();
            match parts[..] {
                [name] => Ok(api::AclServiceIdentity { service_name: name.into(), datacenters: vec![] }),
                [name, dcs] => Ok(api::AclServiceIdentity {
                    service_name: name.into(),
                    datacenters: dcs.split(',').map(str::to_string).collect(),
                }),
                _ => Err(format!("Malformed -service-identity argument: {s:?}")),
            }
        })
        .collect()
}

/// Consul's `-node-identity NAME:DC` values.
fn node_identities(raw: &[String]) -> Result<Vec<api::AclNodeIdentity>, String> {
    raw.iter()
        .map(|s| match s.split(':').collect::<Vec<_>>()[..] {
            [name, dc] => Ok(api::AclNodeIdentity { node_name: name.into(), datacenter: dc.into() }),
            _ => Err(format!("Malformed -node-identity argument: {s:?}")),
        })
        .collect()
}

/// The one ID in `ids` that starts with `prefix`, as Consul's `Get...IDFromPartial` picks it.
fn unique_prefix<'a>(
    ids: impl Iterator<Item = &'a str>,
    prefix: &str,
    what: &str,
    what_cap: &str,
) -> Result<String, String> {
    let mut found: Option<&str> = None;
    for id in ids {
        if id.starts_with(prefix) {
            if found.is_some() {
                return Err(format!("Partial {what} ID is not unique"));
            }
            found = Some(id);
        }
    }
    found.map(str::to_string).ok_or_else(|| format!("No such {what_cap} ID with prefix: {prefix}"))
}

/// A token's AccessorID from a prefix (`anonymous` names the anonymous token).
async fn token_accessor(ctx: &Ctx, partial: &str) -> Result<String, String> {
    if partial == "anonymous" {
        return Ok("00000000-0000-0000-0000-000000000002".into());
    }
    if partial.len() == 36 {
        return Ok(partial.to_string());
    }
    let list: Vec<api::AclTokenListEntry> = get(ctx, "/v1/acl/tokens").await.map_err(|e| e.to_string())?;
    unique_prefix(list.iter().map(|t| t.accessor_id.as_str()), partial, "token", "token")
}

/// A policy's ID from a prefix (`global-management` names the built-in policy).
async fn policy_id(ctx: &Ctx, partial: &str) -> Result<String, String> {
    if partial == "global-management" {
        return Ok("00000000-0000-0000-0000-000000000001".into());
    }
    if partial.len() == 36 {
        return Ok(partial.to_string());
    }
    let list: Vec<api::AclPolicyListEntry> = get(ctx, "/v1/acl/policies").await.map_err(|e| e.to_string())?;
    unique_prefix(list.iter().map(|p| p.id.as_str()), partial, "policy", "policy")
}

async fn role_id(ctx: &Ctx, partial: &str) -> Result<String, String> {
    if partial.len() == 36 {
        return Ok(partial.to_string());
    }
    let list: Vec<api::AclRole> = get(ctx, "/v1/acl/roles").await.map_err(|e| e.to_string())?;
    unique_prefix(list.iter().map(|r| r.id.as_str()), partial, "role", "role")
}

/// Prints a token (pretty, or Go's JSON), then the blank line Consul's `UI.Info` leaves.
fn print_token(mut t: api::AclToken, fmt: Format, meta: bool) {
    match fmt {
        Format::Pretty => out(&format::token(&t, meta)),
        Format::Json => {
            format::normalize_token(&mut t);
            out(&format::go_json(&t));
        }
    }
}

async fn bootstrap(args: &[String]) -> i32 {
    let p = parse_flags!(args, &[], &["format"], BOOTSTRAP_USAGE);
    if p.args.len() > 1 {
        fail!("This command takes up to one argument");
    }
    let secret = match p.args.first() {
        Some(src) => match load_data_no_raw(src) {
            Ok(s) => s.trim().to_string(),
            Err(e) => fail!("Error reading provided token: {e}"),
        },
        None => String::new(),
    };
    let fmt = match Format::parse(p.str("format")) {
        Ok(f) => f,
        Err(e) => fail!("{e}"),
    };
    let ctx = ctx_or_exit!(p);
    let body = if secret.is_empty() { None } else { Some(serde_json::json!({ "BootstrapSecret": secret })) };
    let bytes = body.map(|b| serde_json::to_vec(&b).unwrap_or_default());
    let t: api::AclToken = match ctx.put("/v1/acl/bootstrap", &[], bytes).await {
        Ok(resp) => match decode("/v1/acl/bootstrap", &resp.body) {
            Ok(t) => t,
            Err(e) => fail!("Failed ACL bootstrapping: {e}"),
        },
        Err(e) => fail!("Failed ACL bootstrapping: {e}"),
    };
    print_token(t, fmt, false);
    0
}

async fn set_agent_token(args: &[String]) -> i32 {
    let p = parse_flags!(args, &[], &[], SET_AGENT_TOKEN_USAGE);
    let (kind, token) = match &p.args[..] {
        [] => fail!("Error! Missing TYPE and TOKEN arguments"),
        [one] => match one.as_str() {
            "default" | "agent" | "recovery" | "replication" | "config_file_service_registration" | "dns" => {
                fail!("Error! Missing TOKEN argument")
            }
            _ => fail!("Error! MISSING TYPE argument"),
        },
        [kind, token] => match load_data(token) {
            Ok(t) => (kind.clone(), t),
            Err(e) => fail!("Error! {e}"),
        },
        more => fail!("Error! Too many arguments: expected 2 got {}", more.len()),
    };
    let ctx = match Ctx::new(&p) {
        Ok(c) => c,
        Err(e) => fail!("Error connecting to Consul Agent: {e}"),
    };
    let path = match kind.as_str() {
        "default" | "agent" | "replication" | "config_file_service_registration" | "dns" => {
            format!("/v1/agent/token/{kind}")
        }
        "recovery" => "/v1/agent/token/agent_recovery".to_string(),
        _ => fail!("Unknown token type"),
    };
    let body = serde_json::to_vec(&serde_json::json!({ "Token": token })).unwrap_or_default();
    if let Err(e) = ctx.put(&path, &[], Some(body)).await {
        fail!("Failed to set ACL token {kind:?}: {e}");
    }
    out(&format!("ACL token {kind:?} set successfully"));
    0
}

/// Prints `msg` and the usage to stderr (Consul's "Missing require '-name' flag" and friends).
fn fail_with_usage(msg: &str, usage: &str) -> i32 {
    err(msg);
    err(usage.trim_matches('\n'));
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_parse_as_consul_reads_them() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let got = service_identities(&s(&["web", "db:east,west"])).unwrap();
        assert_eq!(got[0].service_name, "web");
        assert!(got[0].datacenters.is_empty());
        assert_eq!(got[1].datacenters, ["east", "west"]);
        assert_eq!(service_identities(&s(&["a:b:c"])).unwrap_err(), "Malformed -service-identity argument: \"a:b:c\"");
        assert_eq!(node_identities(&s(&["n1:dc1"])).unwrap()[0].datacenter, "dc1");
        assert_eq!(node_identities(&s(&["n1"])).unwrap_err(), "Malformed -node-identity argument: \"n1\"");
    }

    #[test]
    fn prefixes_must_name_one_id() {
        let ids = ["abc-1", "abd-2", "xyz-3"];
        assert_eq!(unique_prefix(ids.iter().copied(), "x", "token", "token"), Ok("xyz-3".into()));
        assert_eq!(
            unique_prefix(ids.iter().copied(), "ab", "token", "token"),
            Err("Partial token ID is not unique".into())
        );
        assert_eq!(
            unique_prefix(ids.iter().copied(), "q", "policy", "policy"),
            Err("No such policy ID with prefix: q".into())
        );
    }

    #[test]
    fn data_sources_read_files_and_take_raw_values() {
        assert_eq!(load_data("key \"\" {}"), Ok("key \"\" {}".into()));
        assert_eq!(
            load_data("@/nope/rules.hcl"),
            Err("Failed to read file: open /nope/rules.hcl: no such file or directory".into())
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("r.hcl");
        std::fs::write(&f, "node_prefix \"\" { policy = \"read\" }").unwrap();
        assert_eq!(load_data(&format!("@{}", f.display())).unwrap(), "node_prefix \"\" { policy = \"read\" }");
        assert_eq!(load_data_no_raw(&f.display().to_string()).unwrap(), "node_prefix \"\" { policy = \"read\" }");
    }
}
