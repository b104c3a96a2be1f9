//! `acl policy create|list|read|update|delete`.

use super::format::{self, Format};
use super::{delete, fail_with_usage, get, get_opt, load_data, policy_id, put};
use crate::cli::{ctx_or_exit, fail, group_help, out, parse_flags};
use api::{AclPolicy, AclPolicyListEntry};
use serde_json::json;

const HELP: &str = "
Usage: agent acl policy <subcommand> [options] [args]

  Manages ACL policies: named sets of rules that tokens and roles link.

  Create a policy:

      $ agent acl policy create -name web-read -description \"Reads web\" \\
                                -rules @web-read.hcl

  List, read, update and delete:

      $ agent acl policy list
      $ agent acl policy read -name web-read
      $ agent acl policy update -name web-read -valid-datacenter dc1
      $ agent acl policy delete -id 0479e93e

Subcommands:
    create    Create an ACL policy
    delete    Delete an ACL policy
    list      List ACL policies
    read      Read an ACL policy
    update    Update an ACL policy
";

const CREATE_USAGE: &str = "
Usage: agent acl policy create -name NAME [options]

  Creates a policy. -rules takes the rules text, @file to read a file, or -
  to read stdin.

      $ agent acl policy create -name web-read -rules @web-read.hcl

Command Options:
  -name=<string>              The new policy's name (required).
  -description=<string>       A description of the policy.
  -rules=<string>             The policy's rules (text, @file or -).
  -valid-datacenter=<string>  A datacenter the policy is valid in (repeatable).
  -meta                       Show the content hash and Raft indices.
  -format=<pretty|json>       Output format (default pretty).
";

const LIST_USAGE: &str = "
Usage: agent acl policy list [options]

  Lists every ACL policy.

Command Options:
  -meta                  Show the content hash and Raft indices.
  -format=<pretty|json>  Output format (default pretty).
";

const READ_USAGE: &str = "
Usage: agent acl policy read [options] -id ID | -name NAME

  Prints one policy. -id takes the ID or a unique prefix of it.

Command Options:
  -id=<string>           The policy's ID or a unique ID prefix.
  -name=<string>         The policy's name.
  -meta                  Show the content hash and Raft indices.
  -format=<pretty|json>  Output format (default pretty).
";

const UPDATE_USAGE: &str = "
Usage: agent acl policy update [options]

  Updates a policy found by -id (or a unique ID prefix) or -name. What is not
  given keeps its current value, unless -no-merge is set, which replaces every
  field with what the flags say.

      $ agent acl policy update -id 0479e93e -name better-name
      $ agent acl policy update -name web-read -rules @web-read.hcl

Command Options:
  -id=<string>                The policy's ID or a unique ID prefix.
  -name=<string>              The policy's name (finds it without -id, renames it with -id).
  -description=<string>       A description of the policy.
  -rules=<string>             The policy's rules (text, @file or -).
  -valid-datacenter=<string>  A datacenter the policy is valid in (repeatable).
  -no-merge                   Replace every field instead of merging.
  -meta                       Show the content hash and Raft indices.
  -format=<pretty|json>       Output format (default pretty).
";

const DELETE_USAGE: &str = "
Usage: agent acl policy delete [options] -id ID | -name NAME

  Deletes a policy by ID (or a unique ID prefix) or by name.

Command Options:
  -id=<string>    The policy's ID or a unique ID prefix.
  -name=<string>  The policy's name.
";

pub(super) async fn run(args: &[String]) -> i32 {
    match args.first().map(String::as_str) {
        Some("create") => create(&args[1..]).await,
        Some("list") => list(&args[1..]).await,
        Some("read") => read(&args[1..]).await,
        Some("update") => update(&args[1..]).await,
        Some("delete") => remove(&args[1..]).await,
        _ => group_help(args, HELP),
    }
}

fn print(p: AclPolicy, fmt: Format, meta: bool) {
    match fmt {
        Format::Pretty => out(&format::policy(&p, meta)),
        Format::Json => out(&format::go_json(&p)),
    }
}

async fn create(args: &[String]) -> i32 {
    let p =
        parse_flags!(args, &["meta"], &["name", "description", "rules", "valid-datacenter", "format"], CREATE_USAGE);
    let name = p.str("name").unwrap_or_default();
    if name.is_empty() {
        return fail_with_usage("Missing require '-name' flag", CREATE_USAGE);
    }
    let fmt = match Format::parse(p.str("format")) {
        Ok(f) => f,
        Err(e) => fail!("{e}"),
    };
    let ctx = ctx_or_exit!(p);
    let rules = match load_data(p.str("rules").unwrap_or_default()) {
        Ok(r) => r,
        Err(e) => fail!("Error loading rules: {e}"),
    };
    let body = json!({
        "Name": name,
        "Description": p.str("description").unwrap_or_default(),
        "Datacenters": p.all("valid-datacenter"),
        "Rules": rules,
    });
    match put::<AclPolicy>(&ctx, "/v1/acl/policy", &body).await {
        Ok(policy) => {
            print(policy, fmt, p.bool("meta"));
            0
        }
        Err(e) => fail!("Failed to create new policy: {e}"),
    }
}

async fn list(args: &[String]) -> i32 {
    let p = parse_flags!(args, &["meta"], &["format"], LIST_USAGE);
    let fmt = match Format::parse(p.str("format")) {
        Ok(f) => f,
        Err(e) => fail!("{e}"),
    };
    let ctx = ctx_or_exit!(p);
    let policies: Vec<AclPolicyListEntry> = match get(&ctx, "/v1/acl/policies").await {
        Ok(l) => l,
        Err(e) => fail!("Failed to retrieve the policy list: {e}"),
    };
    match fmt {
        Format::Pretty => out(&format::policy_list(&policies, p.bool("meta"))),
        Format::Json => out(&format::go_json(&policies)),
    }
    0
}

async fn read(args: &[String]) -> i32 {
    let p = parse_flags!(args, &["meta"], &["id", "name", "format"], READ_USAGE);
    let (id_flag, name) = (p.str("id").unwrap_or_default(), p.str("name").unwrap_or_default());
    if id_flag.is_empty() && name.is_empty() {
        fail!("Must specify either the -id or -name parameters");
    }
    let fmt = match Format::parse(p.str("format")) {
        Ok(f) => f,
        Err(e) => fail!("{e}"),
    };
    let ctx = ctx_or_exit!(p);
    let (got, what) = if !id_flag.is_empty() {
        let id = match policy_id(&ctx, id_flag).await {
            Ok(id) => id,
            Err(e) => fail!("Error determining policy ID: {e}"),
        };
        (get_opt::<AclPolicy>(&ctx, &format!("/v1/acl/policy/{id}")).await, format!("id:{id}"))
    } else {
        let got = get_opt::<AclPolicy>(&ctx, &format!("/v1/acl/policy/name/{name}")).await;
        // Consul's name lookup wraps the client's error.
        let got = got.map_err(|e| super::CallError::Transport(format!("Failed to find policy with name {name}: {e}")));
        (got, format!("name:{name}"))
    };
    match got {
        Ok(Some(policy)) => {
            print(policy, fmt, p.bool("meta"));
            0
        }
        Ok(None) => fail!("Error policy not found: {name}"),
        Err(e) => fail!("Error reading policy {what:?}: {e}"),
    }
}

async fn update(args: &[String]) -> i32 {
    let p = parse_flags!(
        args,
        &["meta", "no-merge"],
        &["id", "name", "description", "rules", "valid-datacenter", "format"],
        UPDATE_USAGE
    );
    let (id_flag, name) = (p.str("id").unwrap_or_default(), p.str("name").unwrap_or_default());
    if id_flag.is_empty() && name.is_empty() {
        fail!("Must specify either the -id or -name parameters");
    }
    let fmt = match Format::parse(p.str("format")) {
        Ok(f) => f,
        Err(e) => fail!("{e}"),
    };
    let ctx = ctx_or_exit!(p);
    let id = if !id_flag.is_empty() {
        policy_id(&ctx, id_flag).await
    } else {
        match get_opt::<AclPolicy>(&ctx, &format!("/v1/acl/policy/name/{name}")).await {
            Ok(Some(policy)) => Ok(policy.id),
            Ok(None) => Err(format!("No such policy with name {name}")),
            Err(e) => Err(format!("Failed to find policy with name {name}: {e}")),
        }
    };
    let id = match id {
        Ok(id) => id,
        Err(e) => fail!("Error determining policy ID: {e}"),
    };
    let rules = match load_data(p.str("rules").unwrap_or_default()) {
        Ok(r) => r,
        Err(e) => fail!("Error loading data source: {e}"),
    };
    let datacenters = p.all("valid-datacenter");
    let updated = if p.bool("no-merge") {
        AclPolicy {
            id: id.clone(),
            name: name.to_string(),
            description: p.str("description").unwrap_or_default().to_string(),
            rules,
            datacenters,
            ..Default::default()
        }
    } else {
        let current = match get_opt::<AclPolicy>(&ctx, &format!("/v1/acl/policy/{id}")).await {
            Ok(Some(c)) => c,
            Ok(None) => fail!("Error reading policy {id:?}: Policy not found"),
            Err(e) => fail!("Error reading policy {id:?}: {e}"),
        };
        AclPolicy {
            id: id.clone(),
            name: p.str("name").map(str::to_string).unwrap_or(current.name),
            description: p.str("description").map(str::to_string).unwrap_or(current.description),
            rules: if p.str("rules").is_some() { rules } else { current.rules },
            datacenters: if datacenters.is_empty() { current.datacenters } else { datacenters },
            ..Default::default()
        }
    };
    let body = json!({
        "ID": updated.id,
        "Name": updated.name,
        "Description": updated.description,
        "Rules": updated.rules,
        "Datacenters": updated.datacenters,
    });
    match put::<AclPolicy>(&ctx, &format!("/v1/acl/policy/{id}"), &body).await {
        Ok(policy) => {
            print(policy, fmt, p.bool("meta"));
            0
        }
        Err(e) => fail!("Error updating policy {id:?}: {e}"),
    }
}

async fn remove(args: &[String]) -> i32 {
    let p = parse_flags!(args, &[], &["id", "name"], DELETE_USAGE);
    let (id_flag, name) = (p.str("id").unwrap_or_default(), p.str("name").unwrap_or_default());
    if id_flag.is_empty() && name.is_empty() {
        fail!("Must specify either the -id or -name parameters");
    }
    let ctx = ctx_or_exit!(p);
    let id = if !id_flag.is_empty() {
        policy_id(&ctx, id_flag).await
    } else {
        match get_opt::<AclPolicy>(&ctx, &format!("/v1/acl/policy/name/{name}")).await {
            Ok(Some(policy)) => Ok(policy.id),
            Ok(None) => Err(format!("No such policy with name {name}")),
            Err(e) => Err(format!("Failed to find policy with name {name}: {e}")),
        }
    };
    let id = match id {
        Ok(id) => id,
        Err(e) => fail!("Error determining policy ID: {e}"),
    };
    if let Err(e) = delete(&ctx, &format!("/v1/acl/policy/{id}")).await {
        fail!("Error deleting policy {id:?}: {e}");
    }
    out(&format!("Policy {id:?} deleted successfully"));
    0
}
