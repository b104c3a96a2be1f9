//! `acl role create|list|read|update|delete`.

use super::format::{self, Format};
use super::{delete, fail_with_usage, get, get_opt, node_identities, policy_id, put, role_id, service_identities};
use crate::cli::{ctx_or_exit, fail, group_help, out, parse_flags};
use api::{AclLink, AclRole};
use serde_json::json;

const HELP: &str = "
Usage: agent acl role <subcommand> [options] [args]

  Manages ACL roles: named sets of policies and identities that tokens link.

  Create a role:

      $ agent acl role create -name web-ops -policy-name web-read

  List, read, update and delete:

      $ agent acl role list
      $ agent acl role read -name web-ops
      $ agent acl role update -id 0479e93e -description \"web operators\"
      $ agent acl role delete -name web-ops

Subcommands:
    create    Create an ACL role
    delete    Delete an ACL role
    list      List ACL roles
    read      Read an ACL role
    update    Update an ACL role
";

const CREATE_USAGE: &str = "
Usage: agent acl role create -name NAME [options]

  Creates a role linking at least one policy or identity.

      $ agent acl role create -name web-ops -description \"web operators\" \\
                              -policy-id b52fc3de -policy-name acl-replication \\
                              -service-identity web -service-identity \"db:east,west\"

Command Options:
  -name=<string>            The new role's name (required).
  -description=<string>     A description of the role.
  -policy-id=<id>           A policy to link, by ID or ID prefix (repeatable).
  -policy-name=<name>       A policy to link, by name (repeatable).
  -service-identity=<name>  NAME or NAME:DC1,DC2,... (repeatable).
  -node-identity=<name>     NAME:DATACENTER (repeatable).
  -meta                     Show the content hash and Raft indices.
  -format=<pretty|json>     Output format (default pretty).
";

const LIST_USAGE: &str = "
Usage: agent acl role list [options]

  Lists every ACL role.

Command Options:
  -meta                  Show the content hash and Raft indices.
  -format=<pretty|json>  Output format (default pretty).
";

const READ_USAGE: &str = "
Usage: agent acl role read [options] -id ID | -name NAME

  Prints one role. -id takes the ID or a unique prefix of it.

Command Options:
  -id=<string>           The role's ID or a unique ID prefix.
  -name=<string>         The role's name.
  -meta                  Show the content hash and Raft indices.
  -format=<pretty|json>  Output format (default pretty).
";

const UPDATE_USAGE: &str = "
Usage: agent acl role update [options]

  Updates a role. Links and identities given are added to the role's current
  ones, and a name or description given replaces the current one; -no-merge
  replaces every field with what the flags say instead.

      $ agent acl role update -id abcd -name better-name
      $ agent acl role update -id abcd -no-merge -name web-ops -policy-name web-read

Command Options:
  -id=<string>              The role's ID or a unique ID prefix (required).
  -name=<string>            The role's new name.
  -description=<string>     A description of the role.
  -policy-id=<id>           A policy to link, by ID or ID prefix (repeatable).
  -policy-name=<name>       A policy to link, by name (repeatable).
  -service-identity=<name>  NAME or NAME:DC1,DC2,... (repeatable).
  -node-identity=<name>     NAME:DATACENTER (repeatable).
  -no-merge                 Replace every field instead of merging.
  -meta                     Show the content hash and Raft indices.
  -format=<pretty|json>     Output format (default pretty).
";

const DELETE_USAGE: &str = "
Usage: agent acl role delete [options] -id ID | -name NAME

  Deletes a role by ID (or a unique ID prefix) or by name.

Command Options:
  -id=<string>    The role's ID or a unique ID prefix.
  -name=<string>  The role's name.
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

fn print(r: AclRole, fmt: Format, meta: bool) {
    match fmt {
        Format::Pretty => out(&format::role(&r, meta)),
        Format::Json => out(&format::go_json(&r)),
    }
}

fn body(r: &AclRole) -> serde_json::Value {
    json!({
        "ID": r.id,
        "Name": r.name,
        "Description": r.description,
        "Policies": r.policies,
        "ServiceIdentities": r.service_identities,
        "NodeIdentities": r.node_identities,
        "TemplatedPolicies": r.templated_policies,
    })
}

async fn create(args: &[String]) -> i32 {
    let p = parse_flags!(
        args,
        &["meta"],
        &["name", "description", "policy-id", "policy-name", "service-identity", "node-identity", "format"],
        CREATE_USAGE
    );
    let name = p.str("name").unwrap_or_default();
    if name.is_empty() {
        return fail_with_usage("Missing require '-name' flag", CREATE_USAGE);
    }
    let all = |k: &str| p.all(k);
    if ["policy-name", "policy-id", "service-identity", "node-identity"].iter().all(|k| all(k).is_empty()) {
        fail!("Cannot create a role without specifying -policy-name, -policy-id, -service-identity, or -node-identity at least once");
    }
    let fmt = match Format::parse(p.str("format")) {
        Ok(f) => f,
        Err(e) => fail!("{e}"),
    };
    let ctx = ctx_or_exit!(p);
    let mut role = AclRole {
        name: name.to_string(),
        description: p.str("description").unwrap_or_default().to_string(),
        ..Default::default()
    };
    role.policies = all("policy-name").into_iter().map(|n| AclLink { id: String::new(), name: n }).collect();
    for partial in all("policy-id") {
        match policy_id(&ctx, &partial).await {
            Ok(id) => role.policies.push(AclLink { id, name: String::new() }),
            Err(e) => fail!("Error resolving policy ID {partial}: {e}"),
        }
    }
    role.service_identities = match service_identities(&all("service-identity")) {
        Ok(s) => s,
        Err(e) => fail!("{e}"),
    };
    role.node_identities = match node_identities(&all("node-identity")) {
        Ok(n) => n,
        Err(e) => fail!("{e}"),
    };
    match put::<AclRole>(&ctx, "/v1/acl/role", &body(&role)).await {
        Ok(r) => {
            print(r, fmt, p.bool("meta"));
            0
        }
        Err(e) => fail!("Failed to create new role: {e}"),
    }
}

async fn list(args: &[String]) -> i32 {
    let p = parse_flags!(args, &["meta"], &["format"], LIST_USAGE);
    let fmt = match Format::parse(p.str("format")) {
        Ok(f) => f,
        Err(e) => fail!("{e}"),
    };
    let ctx = ctx_or_exit!(p);
    let roles: Vec<AclRole> = match get(&ctx, "/v1/acl/roles").await {
        Ok(l) => l,
        Err(e) => fail!("Failed to retrieve the role list: {e}"),
    };
    match fmt {
        Format::Pretty => out(&format::role_list(&roles, p.bool("meta"))),
        Format::Json => out(&format::go_json(&roles)),
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
    let role = if !id_flag.is_empty() {
        let id = match role_id(&ctx, id_flag).await {
            Ok(id) => id,
            Err(e) => fail!("Error determining role ID: {e}"),
        };
        match get_opt::<AclRole>(&ctx, &format!("/v1/acl/role/{id}")).await {
            Ok(Some(r)) => r,
            Ok(None) => fail!("Role not found with ID {id:?}"),
            Err(e) => fail!("Error reading role {id:?}: {e}"),
        }
    } else {
        match get_opt::<AclRole>(&ctx, &format!("/v1/acl/role/name/{name}")).await {
            Ok(Some(r)) => r,
            Ok(None) => fail!("Role not found with name {name:?}"),
            Err(e) => fail!("Error reading role {name:?}: {e}"),
        }
    };
    print(role, fmt, p.bool("meta"));
    0
}

async fn update(args: &[String]) -> i32 {
    let p = parse_flags!(
        args,
        &["meta", "no-merge"],
        &["id", "name", "description", "policy-id", "policy-name", "service-identity", "node-identity", "format"],
        UPDATE_USAGE
    );
    let Some(partial) = p.str("id").filter(|i| !i.is_empty()) else {
        fail!("Cannot update a role without specifying the -id parameter");
    };
    let fmt = match Format::parse(p.str("format")) {
        Ok(f) => f,
        Err(e) => fail!("{e}"),
    };
    let all = |k: &str| p.all(k);
    let ctx = ctx_or_exit!(p);
    let id = match role_id(&ctx, partial).await {
        Ok(id) => id,
        Err(e) => fail!("Error determining role ID: {e}"),
    };
    let services = match service_identities(&all("service-identity")) {
        Ok(s) => s,
        Err(e) => fail!("{e}"),
    };
    let nodes = match node_identities(&all("node-identity")) {
        Ok(n) => n,
        Err(e) => fail!("{e}"),
    };
    let current = match get_opt::<AclRole>(&ctx, &format!("/v1/acl/role/{id}")).await {
        Ok(Some(r)) => r,
        Ok(None) => fail!("Role not found with ID {id:?}"),
        Err(e) => fail!("Error when retrieving current role: {e}"),
    };
    let mut policy_ids = Vec::new();
    for partial in all("policy-id") {
        match policy_id(&ctx, &partial).await {
            Ok(pid) => policy_ids.push(pid),
            Err(e) => fail!("Error resolving policy ID {partial}: {e}"),
        }
    }
    let role = if p.bool("no-merge") {
        let mut policies: Vec<AclLink> =
            all("policy-name").into_iter().map(|n| AclLink { id: String::new(), name: n }).collect();
        policies.extend(policy_ids.into_iter().map(|id| AclLink { id, name: String::new() }));
        AclRole {
            id: id.clone(),
            name: p.str("name").unwrap_or_default().to_string(),
            description: p.str("description").unwrap_or_default().to_string(),
            policies,
            service_identities: services,
            node_identities: nodes,
            ..Default::default()
        }
    } else {
        let mut r = current;
        if let Some(n) = p.str("name").filter(|n| !n.is_empty()) {
            r.name = n.to_string();
        }
        if let Some(d) = p.str("description").filter(|d| !d.is_empty()) {
            r.description = d.to_string();
        }
        for n in all("policy-name") {
            if !r.policies.iter().any(|l| l.name == n) {
                r.policies.push(AclLink { id: String::new(), name: n });
            }
        }
        for pid in policy_ids {
            if !r.policies.iter().any(|l| l.id == pid) {
                r.policies.push(AclLink { id: pid, name: String::new() });
            }
        }
        for s in services {
            match r.service_identities.iter_mut().find(|o| o.service_name == s.service_name) {
                Some(o) => *o = s,
                None => r.service_identities.push(s),
            }
        }
        for n in nodes {
            if !r.node_identities.contains(&n) {
                r.node_identities.push(n);
            }
        }
        r
    };
    match put::<AclRole>(&ctx, &format!("/v1/acl/role/{id}"), &body(&role)).await {
        Ok(r) => {
            print(r, fmt, p.bool("meta"));
            0
        }
        Err(e) => fail!("Error updating role {id:?}: {e}"),
    }
}

async fn remove(args: &[String]) -> i32 {
    let p = parse_flags!(args, &[], &["id", "name"], DELETE_USAGE);
    let (id_flag, name) = (p.str("id").unwrap_or_default(), p.str("name").unwrap_or_default());
    if id_flag.is_empty() && name.is_empty() {
        fail!("Must specify the -id or -name parameters");
    }
    let ctx = ctx_or_exit!(p);
    let id = if !id_flag.is_empty() {
        role_id(&ctx, id_flag).await
    } else {
        match get::<Vec<AclRole>>(&ctx, "/v1/acl/roles").await {
            Ok(roles) => {
                roles.into_iter().find(|r| r.name == name).map(|r| r.id).ok_or(format!("No such role with name {name}"))
            }
            Err(e) => Err(e.to_string()),
        }
    };
    let id = match id {
        Ok(id) => id,
        Err(e) => fail!("Error determining role ID: {e}"),
    };
    if let Err(e) = delete(&ctx, &format!("/v1/acl/role/{id}")).await {
        fail!("Error deleting role {id:?}: {e}");
    }
    out(&format!("Role {id:?} deleted successfully"));
    0
}
