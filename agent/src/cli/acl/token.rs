//! `acl token create|list|read|update|delete|clone`.

use super::format::{self, Format};
use super::{delete, fail_with_usage, get, node_identities, policy_id, print_token, put, role_id};
use super::{service_identities, token_accessor};
use crate::cli::flags::Parsed;
use crate::cli::{ctx_or_exit, err, fail, group_help, out, parse_flags};
use api::{AclLink, AclToken, AclTokenListEntry};
use serde_json::json;

const HELP: &str = "
Usage: agent acl token <subcommand> [options] [args]

  Manages ACL tokens. A token's AccessorID names it; its SecretID is what a
  client sends (-token, X-Consul-Token).

  Create a token linked to a policy:

      $ agent acl token create -description \"web reader\" -policy-name web-read

  List, read, update, clone and delete:

      $ agent acl token list
      $ agent acl token read -accessor-id 986193
      $ agent acl token read -self
      $ agent acl token update -accessor-id 986193 -description \"new text\"
      $ agent acl token clone -accessor-id 986193 -description \"copy\"
      $ agent acl token delete -accessor-id 986193

Subcommands:
    clone     Clone an ACL token
    create    Create an ACL token
    delete    Delete an ACL token
    list      List ACL tokens
    read      Read an ACL token
    update    Update an ACL token
";

const CREATE_USAGE: &str = "
Usage: agent acl token create [options]

  Creates a token. Link at least one policy, role or identity. Policies and
  roles given by ID may be given as a unique prefix of the ID.

      $ agent acl token create -description \"replication\" \\
                               -policy-name acl-replication \\
                               -role-id c630d4ef -service-identity web \\
                               -service-identity \"db:east,west\"

Command Options:
  -accessor=<uuid>          The new token's AccessorID (default: generated).
  -secret=<uuid>            The new token's SecretID (default: generated).
  -description=<string>     A description of the token.
  -policy-id=<id>           A policy to link, by ID or ID prefix (repeatable).
  -policy-name=<name>       A policy to link, by name (repeatable).
  -role-id=<id>             A role to link, by ID or ID prefix (repeatable).
  -role-name=<name>         A role to link, by name (repeatable).
  -service-identity=<name>  NAME or NAME:DC1,DC2,... (repeatable).
  -node-identity=<name>     NAME:DATACENTER (repeatable).
  -expires-ttl=<duration>   How long the token is valid (1m to 24h).
  -local                    A token of this datacenter only.
  -meta                     Show the content hash and Raft indices.
  -format=<pretty|json>     Output format (default pretty).
";

const LIST_USAGE: &str = "
Usage: agent acl token list [options]

  Lists every ACL token.

Command Options:
  -meta                  Show the content hash and Raft indices.
  -format=<pretty|json>  Output format (default pretty).
";

const READ_USAGE: &str = "
Usage: agent acl token read [options] -accessor-id ID

  Prints one token, found by its AccessorID (or a unique prefix of it), or the
  token the request itself carries (-self).

      $ agent acl token read -accessor-id 4be56c77-82
      $ agent acl token read -self -token-file=./my-token

Command Options:
  -accessor-id=<id>      The token's AccessorID or a unique prefix of it.
  -id=<id>               Deprecated: -accessor-id.
  -self                  Read the token this request is made with.
  -meta                  Show the content hash and Raft indices.
  -format=<pretty|json>  Output format (default pretty).
";

const UPDATE_USAGE: &str = "
Usage: agent acl token update [options]

  Updates a token. Whether it is local cannot change. -policy-* and -role-*
  replace the links; their -append-* forms add to them. -service-identity and
  -node-identity replace the identities; -append-* forms add.

      $ agent acl token update -accessor-id abcd -description \"replication\" \\
                               -append-policy-name token-replication

Command Options:
  -accessor-id=<id>                The token's AccessorID or a unique prefix of it.
  -id=<id>                         Deprecated: -accessor-id.
  -description=<string>            A new description (kept when not given).
  -policy-id=<id>                  Replace the policies (repeatable).
  -policy-name=<name>              Replace the policies (repeatable).
  -append-policy-id=<id>           Add a policy (repeatable).
  -append-policy-name=<name>       Add a policy (repeatable).
  -role-id=<id>                    Replace the roles (repeatable).
  -role-name=<name>                Replace the roles (repeatable).
  -append-role-id=<id>             Add a role (repeatable).
  -append-role-name=<name>         Add a role (repeatable).
  -service-identity=<name>         Replace the service identities (repeatable).
  -append-service-identity=<name>  Add a service identity (repeatable).
  -node-identity=<name>            Replace the node identities (repeatable).
  -append-node-identity=<name>     Add a node identity (repeatable).
  -meta                            Show the content hash and Raft indices.
  -format=<pretty|json>            Output format (default pretty).
";

const DELETE_USAGE: &str = "
Usage: agent acl token delete [options] -accessor-id ID

  Deletes a token by its AccessorID or a unique prefix of it.

Command Options:
  -accessor-id=<id>  The token's AccessorID or a unique prefix of it.
  -id=<id>           Deprecated: -accessor-id.
";

const CLONE_USAGE: &str = "
Usage: agent acl token clone [options] -accessor-id ID

  Creates a token with the same links as another one, and new IDs.

      $ agent acl token clone -accessor-id abcd -description \"replication\"

Command Options:
  -accessor-id=<id>      The token's AccessorID or a unique prefix (or anonymous).
  -id=<id>               Deprecated: -accessor-id.
  -description=<string>  The clone's description (default: the original's).
  -format=<pretty|json>  Output format (default pretty).
";

pub(super) async fn run(args: &[String]) -> i32 {
    match args.first().map(String::as_str) {
        Some("create") => create(&args[1..]).await,
        Some("list") => list(&args[1..]).await,
        Some("read") => read(&args[1..]).await,
        Some("update") => update(&args[1..]).await,
        Some("delete") => remove(&args[1..]).await,
        Some("clone") => clone(&args[1..]).await,
        _ => group_help(args, HELP),
    }
}

/// `-accessor-id`, else the deprecated `-id` (with Consul's warning on stderr).
fn accessor_flag(p: &Parsed, warning: &str) -> Option<String> {
    if let Some(a) = p.str("accessor-id").filter(|a| !a.is_empty()) {
        return Some(a.to_string());
    }
    let id = p.str("id").filter(|a| !a.is_empty())?;
    err(warning);
    Some(id.to_string())
}

/// Policy links from `-policy-name` (resolved by the agent) and `-policy-id` (prefixes resolved
/// here), in Consul's order: names first.
async fn policy_links(ctx: &super::Ctx, names: &[String], ids: &[String]) -> Result<Vec<AclLink>, String> {
    let mut links: Vec<AclLink> = names.iter().map(|n| AclLink { id: String::new(), name: n.clone() }).collect();
    for partial in ids {
        let id = policy_id(ctx, partial).await.map_err(|e| format!("Error resolving policy ID {partial}: {e}"))?;
        links.push(AclLink { id, name: String::new() });
    }
    Ok(links)
}

async fn role_links(ctx: &super::Ctx, names: &[String], ids: &[String]) -> Result<Vec<AclLink>, String> {
    let mut links: Vec<AclLink> = names.iter().map(|n| AclLink { id: String::new(), name: n.clone() }).collect();
    for partial in ids {
        let id = role_id(ctx, partial).await.map_err(|e| format!("Error resolving role ID {partial}: {e}"))?;
        links.push(AclLink { id, name: String::new() });
    }
    Ok(links)
}

async fn create(args: &[String]) -> i32 {
    let p = parse_flags!(
        args,
        &["local", "meta"],
        &[
            "accessor",
            "secret",
            "description",
            "policy-id",
            "policy-name",
            "role-id",
            "role-name",
            "service-identity",
            "node-identity",
            "expires-ttl",
            "format"
        ],
        CREATE_USAGE
    );
    let ttl = match p.duration("expires-ttl") {
        Ok(t) => t,
        Err(e) => return fail_with_usage(&e, CREATE_USAGE),
    };
    let all = |k: &str| p.all(k);
    if ["policy-name", "policy-id", "role-name", "role-id", "service-identity", "node-identity"]
        .iter()
        .all(|k| all(k).is_empty())
    {
        fail!("Cannot create a token without specifying -policy-name, -policy-id, -role-name, -role-id, -service-identity, or -node-identity at least once");
    }
    let fmt = match Format::parse(p.str("format")) {
        Ok(f) => f,
        Err(e) => fail!("{e}"),
    };
    let ctx = ctx_or_exit!(p);
    let services = match service_identities(&all("service-identity")) {
        Ok(s) => s,
        Err(e) => fail!("{e}"),
    };
    let nodes = match node_identities(&all("node-identity")) {
        Ok(n) => n,
        Err(e) => fail!("{e}"),
    };
    let policies = match policy_links(&ctx, &all("policy-name"), &all("policy-id")).await {
        Ok(l) => l,
        Err(e) => fail!("{e}"),
    };
    let roles = match role_links(&ctx, &all("role-name"), &all("role-id")).await {
        Ok(l) => l,
        Err(e) => fail!("{e}"),
    };
    let mut body = json!({
        "AccessorID": p.str("accessor").unwrap_or_default(),
        "SecretID": p.str("secret").unwrap_or_default(),
        "Description": p.str("description").unwrap_or_default(),
        "Policies": policies,
        "Roles": roles,
        "ServiceIdentities": services,
        "NodeIdentities": nodes,
        "Local": p.bool("local"),
    });
    if let Some(ttl) = ttl.filter(|t| !t.is_zero()) {
        // Go encodes a time.Duration as nanoseconds.
        body["ExpirationTTL"] = json!(ttl.as_nanos() as u64);
    }
    match put::<AclToken>(&ctx, "/v1/acl/token", &body).await {
        Ok(t) => {
            print_token(t, fmt, p.bool("meta"));
            0
        }
        Err(e) => fail!("Failed to create new token: {e}"),
    }
}

async fn list(args: &[String]) -> i32 {
    let p = parse_flags!(args, &["meta"], &["format"], LIST_USAGE);
    let fmt = match Format::parse(p.str("format")) {
        Ok(f) => f,
        Err(e) => fail!("{e}"),
    };
    let ctx = ctx_or_exit!(p);
    let mut tokens: Vec<AclTokenListEntry> = match get(&ctx, "/v1/acl/tokens").await {
        Ok(l) => l,
        Err(e) => fail!("Failed to retrieve the token list: {e}"),
    };
    match fmt {
        Format::Pretty => out(&format::token_list(&tokens, p.bool("meta"))),
        Format::Json => {
            tokens.iter_mut().for_each(format::normalize_token_entry);
            out(&format::go_json(&tokens));
        }
    }
    0
}

async fn read(args: &[String]) -> i32 {
    let p = parse_flags!(args, &["self", "meta"], &["accessor-id", "id", "format"], READ_USAGE);
    let fmt = match Format::parse(p.str("format")) {
        Ok(f) => f,
        Err(e) => fail!("{e}"),
    };
    if p.bool("self") {
        let ctx = ctx_or_exit!(p);
        return match get::<AclToken>(&ctx, "/v1/acl/token/self").await {
            Ok(t) => {
                print_token(t, fmt, p.bool("meta"));
                0
            }
            Err(e) => fail!("Error reading token: {e}"),
        };
    }
    let Some(partial) = accessor_flag(&p, "Use the -accessor-id parameter to specify token by Accessor ID") else {
        fail!("Must specify the -accessor-id parameter");
    };
    let ctx = ctx_or_exit!(p);
    let id = match token_accessor(&ctx, &partial).await {
        Ok(id) => id,
        Err(e) => fail!("Error determining token ID: {e}"),
    };
    match get::<AclToken>(&ctx, &format!("/v1/acl/token/{id}")).await {
        Ok(t) => {
            print_token(t, fmt, p.bool("meta"));
            0
        }
        Err(e) => fail!("Error reading token {id:?}: {e}"),
    }
}

/// Adds `add` to `links`, skipping those already there (by ID, or by name for name links).
fn append_links(links: &mut Vec<AclLink>, add: Vec<AclLink>) {
    for l in add {
        let dup = links.iter().any(|o| (!l.id.is_empty() && o.id == l.id) || (l.id.is_empty() && o.name == l.name));
        if !dup {
            links.push(l);
        }
    }
}

async fn update(args: &[String]) -> i32 {
    let p = parse_flags!(
        args,
        &["meta", "merge-policies", "merge-roles", "merge-service-identities", "merge-node-identities"],
        &[
            "accessor-id",
            "id",
            "description",
            "policy-id",
            "policy-name",
            "append-policy-id",
            "append-policy-name",
            "role-id",
            "role-name",
            "append-role-id",
            "append-role-name",
            "service-identity",
            "append-service-identity",
            "node-identity",
            "append-node-identity",
            "format"
        ],
        UPDATE_USAGE
    );
    let Some(partial) = accessor_flag(&p, "Use the -accessor-id parameter to specify token by Accessor ID") else {
        fail!("Cannot update a token without specifying the -accessor-id parameter");
    };
    let fmt = match Format::parse(p.str("format")) {
        Ok(f) => f,
        Err(e) => fail!("{e}"),
    };
    let all = |k: &str| p.all(k);
    let ctx = ctx_or_exit!(p);
    let id = match token_accessor(&ctx, &partial).await {
        Ok(id) => id,
        Err(e) => fail!("Error determining token ID: {e}"),
    };
    let mut t: AclToken = match get(&ctx, &format!("/v1/acl/token/{id}")).await {
        Ok(t) => t,
        Err(e) => fail!("Error when retrieving current token: {e}"),
    };
    if let Some(d) = p.str("description").filter(|d| !d.is_empty()) {
        t.description = d.to_string();
    }

    let (svc, add_svc) = (all("service-identity"), all("append-service-identity"));
    if !svc.is_empty() && !add_svc.is_empty() {
        fail!("Cannot combine the use of service-identity flag with append-service-identity. To set or overwrite existing service identities, use -service-identity. To append to existing service identities, use -append-service-identity.");
    }
    let (node, add_node) = (all("node-identity"), all("append-node-identity"));
    if !node.is_empty() && !add_node.is_empty() {
        fail!("Cannot combine the use of node-identity flag with append-node-identity. To set or overwrite existing node identities, use -node-identity. To append to existing node identities, use -append-node-identity.");
    }
    let merge_svc = p.bool("merge-service-identities") || !add_svc.is_empty();
    let services = match service_identities(if add_svc.is_empty() { &svc } else { &add_svc }) {
        Ok(s) => s,
        Err(e) => fail!("{e}"),
    };
    let merge_node = p.bool("merge-node-identities") || !add_node.is_empty();
    let nodes = match node_identities(if add_node.is_empty() { &node } else { &add_node }) {
        Ok(n) => n,
        Err(e) => fail!("{e}"),
    };

    // Policies.
    let (set_pn, set_pi) = (all("policy-name"), all("policy-id"));
    let (add_pn, add_pi) = (all("append-policy-name"), all("append-policy-id"));
    if p.bool("merge-policies") {
        err("merge-policies is deprecated and will be removed in a future Consul version. Use `append-policy-name` or `append-policy-id` instead.");
        match policy_links(&ctx, &set_pn, &set_pi).await {
            Ok(l) => append_links(&mut t.policies, l),
            Err(e) => fail!("{e}"),
        }
    } else {
        let setting = !set_pn.is_empty() || !set_pi.is_empty();
        if setting && (!add_pn.is_empty() || !add_pi.is_empty()) {
            fail!("Cannot combine the use of policy-id/policy-name flags with append- variants. To set or overwrite existing policies, use -policy-id or -policy-name. To append to existing policies, use -append-policy-id or -append-policy-name.");
        }
        let (names, ids) = if setting { (set_pn, set_pi) } else { (add_pn, add_pi) };
        let links = match policy_links(&ctx, &names, &ids).await {
            Ok(l) => l,
            Err(e) => fail!("{e}"),
        };
        if setting {
            t.policies = links;
        } else {
            append_links(&mut t.policies, links);
        }
    }

    // Roles.
    let (set_rn, set_ri) = (all("role-name"), all("role-id"));
    let (add_rn, add_ri) = (all("append-role-name"), all("append-role-id"));
    if p.bool("merge-roles") {
        err("merge-roles is deprecated and will be removed in a future Consul version. Use `append-role-name` or `append-role-id` instead.");
        match role_links(&ctx, &set_rn, &set_ri).await {
            Ok(l) => append_links(&mut t.roles, l),
            Err(e) => fail!("{e}"),
        }
    } else {
        let setting = !set_rn.is_empty() || !set_ri.is_empty();
        if setting && (!add_rn.is_empty() || !add_ri.is_empty()) {
            fail!("Cannot combine the use of role-id/role-name flags with append- variants. To set or overwrite existing roles, use -role-id or -role-name. To append to existing roles, use -append-role-id or -append-role-name.");
        }
        let (names, ids) = if setting { (set_rn, set_ri) } else { (add_rn, add_ri) };
        let links = match role_links(&ctx, &names, &ids).await {
            Ok(l) => l,
            Err(e) => fail!("{e}"),
        };
        if setting {
            t.roles = links;
        } else {
            append_links(&mut t.roles, links);
        }
    }

    // Identities: replaced when given, added to with -append-*, kept otherwise.
    if merge_svc {
        for s in services {
            match t.service_identities.iter_mut().find(|o| o.service_name == s.service_name) {
                Some(o) => *o = s,
                None => t.service_identities.push(s),
            }
        }
    } else if !svc.is_empty() {
        t.service_identities = services;
    }
    if merge_node {
        for n in nodes {
            if !t.node_identities.contains(&n) {
                t.node_identities.push(n);
            }
        }
    } else if !node.is_empty() {
        t.node_identities = nodes;
    }

    let body = json!({
        "AccessorID": t.accessor_id,
        "Description": t.description,
        "Policies": t.policies,
        "Roles": t.roles,
        "ServiceIdentities": t.service_identities,
        "NodeIdentities": t.node_identities,
        "TemplatedPolicies": t.templated_policies,
        "Local": t.local,
    });
    match put::<AclToken>(&ctx, &format!("/v1/acl/token/{id}"), &body).await {
        Ok(t) => {
            print_token(t, fmt, p.bool("meta"));
            0
        }
        Err(e) => fail!("Failed to update token {id}: {e}"),
    }
}

async fn remove(args: &[String]) -> i32 {
    let p = parse_flags!(args, &[], &["accessor-id", "id"], DELETE_USAGE);
    let Some(partial) = accessor_flag(&p, "Use the -accessor-id parameter to specify token by Accessor ID.") else {
        fail!("Must specify the -accessor-id parameter");
    };
    let ctx = ctx_or_exit!(p);
    let id = match token_accessor(&ctx, &partial).await {
        Ok(id) => id,
        Err(e) => fail!("Error determining token ID: {e}"),
    };
    if let Err(e) = delete(&ctx, &format!("/v1/acl/token/{id}")).await {
        fail!("Error deleting token {id:?}: {e}");
    }
    out(&format!("Token {id:?} deleted successfully"));
    0
}

async fn clone(args: &[String]) -> i32 {
    let p = parse_flags!(args, &[], &["accessor-id", "id", "description", "format"], CLONE_USAGE);
    let Some(partial) = accessor_flag(&p, "Use the -accessor-id parameter to specify token by Accessor ID.") else {
        fail!("Cannot update a token without specifying the -accessor-id parameter");
    };
    let fmt = match Format::parse(p.str("format")) {
        Ok(f) => f,
        Err(e) => fail!("{e}"),
    };
    let ctx = ctx_or_exit!(p);
    let id = match token_accessor(&ctx, &partial).await {
        Ok(id) => id,
        Err(e) => fail!("Error determining token Accessor ID: {e}"),
    };
    let body = json!({ "Description": p.str("description").unwrap_or_default() });
    match put::<AclToken>(&ctx, &format!("/v1/acl/token/{id}/clone"), &body).await {
        Ok(t) => {
            print_token(t, fmt, false);
            0
        }
        Err(e) => fail!("Error cloning token: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appended_links_skip_those_already_there() {
        let l = |id: &str, name: &str| AclLink { id: id.into(), name: name.into() };
        let mut links = vec![l("p1", "web")];
        append_links(&mut links, vec![l("p1", ""), l("", "web"), l("p2", ""), l("", "db")]);
        assert_eq!(links, vec![l("p1", "web"), l("p2", ""), l("", "db")]);
    }
}
