//! `agent keyring`: Consul's gossip key rotation commands (`-list`, `-list-primary`,
//! `-install`, `-use`, `-remove`) over `/v1/operator/keyring`, with Consul's texts.

use super::http::Ctx;
use super::{ctx_or_exit, err, fail, out, parse_flags};
use api::KeyringResponse;
use http::Method;
use std::collections::BTreeMap;

const USAGE: &str = "
Usage: agent keyring [options]

  Manages encryption keys used for gossip messages. Gossip encryption is
  optional. When enabled, this command may be used to examine active encryption
  keys in the cluster, add new keys, and remove old ones. When combined, this
  functionality provides the ability to perform key rotation cluster-wide,
  without disrupting the cluster.

  All operations performed by this command can only be run against server nodes,
  and affect both the LAN and WAN keyrings in lock-step.

  All variations of the keyring command return 0 if all nodes reply and there
  are no errors. If any node fails to reply or reports failure, the exit code
  will be 1.

Command Options:

  -install=<string>     Install a new encryption key. This will broadcast the new
                        key to all members in the cluster.
  -list                 List all keys currently in use within the cluster.
  -list-primary         List all primary keys currently in use within the cluster.
  -local-only           Setting this to true will force the keyring query to only
                        hit local servers (no WAN traffic). This flag can only be
                        set for list queries.
  -relay-factor=<int>   Setting this to a non-zero value will cause nodes to relay
                        their response to the operation through this many
                        randomly-chosen other nodes in the cluster. The maximum
                        allowed value is 5.
  -remove=<string>      Remove the given key from the cluster. This operation may
                        only be performed on keys which are not currently the
                        primary key.
  -use=<string>         Change the primary encryption key, which is used to
                        encrypt messages. The key must already be installed
                        before this operation can succeed.
";

pub(super) async fn keyring(args: &[String]) -> i32 {
    let p = parse_flags!(
        args,
        &["list", "list-primary", "local-only"],
        &["install", "use", "remove", "relay-factor"],
        USAGE
    );
    let value = |f: &str| p.str(f).filter(|v| !v.is_empty()).map(str::to_string);
    let (list, list_primary) = (p.bool("list"), p.bool("list-primary"));
    let (install, use_key, remove) = (value("install"), value("use"), value("remove"));
    let actions = [list, list_primary, install.is_some(), use_key.is_some(), remove.is_some()];
    match actions.iter().filter(|a| **a).count() {
        0 => fail!("{}", USAGE.trim_matches('\n')),
        1 => {}
        _ => fail!("Only a single action is allowed"),
    }
    let relay = match p.str("relay-factor").unwrap_or("0").parse::<i64>() {
        Ok(n) if (0..=5).contains(&n) => n,
        Ok(_) => fail!("Error parsing relay factor: Relay factor must be in range: [0, 5]"),
        Err(_) => fail!("{}", USAGE.trim_matches('\n')),
    };
    let local = p.bool("local-only");
    if local && !list {
        fail!("Error validating local-only: local-only can only be set for list requests");
    }
    let ctx = ctx_or_exit!(p);
    let mut query = Vec::new();
    if relay > 0 {
        query.push(("relay-factor".to_string(), relay.to_string()));
    }
    if list || list_primary {
        out(if list {
            "==> Gathering installed encryption keys..."
        } else {
            "==> Gathering installed primary encryption keys..."
        });
        if local {
            query.push(("local-only".to_string(), "true".to_string()));
        }
        let responses: Vec<KeyringResponse> =
            match ctx.send(Method::GET, "/v1/operator/keyring", &query, None, false, None).await {
                Ok(resp) => match serde_json::from_slice(&resp.body) {
                    Ok(r) => r,
                    Err(e) => fail!("error: {e}"),
                },
                Err(e) => fail!("error: {e}"),
            };
        for r in &responses {
            out(&format_response(r, if list { &r.keys } else { &r.primary_keys }));
        }
        return 0;
    }
    let (method, key, info) = if let Some(k) = install {
        (Method::POST, k, "==> Installing new gossip encryption key...")
    } else if let Some(k) = use_key {
        (Method::PUT, k, "==> Changing primary gossip encryption key...")
    } else if let Some(k) = remove {
        (Method::DELETE, k, "==> Removing gossip encryption key...")
    } else {
        return 0;
    };
    out(info);
    let body = serde_json::json!({ "Key": key }).to_string().into_bytes();
    match send(&ctx, method, &query, body).await {
        Ok(()) => 0,
        Err(e) => {
            err(&format!("error: {e}"));
            1
        }
    }
}

async fn send(ctx: &Ctx, method: Method, query: &[(String, String)], body: Vec<u8>) -> Result<(), String> {
    ctx.send(method, "/v1/operator/keyring", query, Some(body), false, None)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Consul's `formatResponse`: the pool, its members' messages, then each key with how many of
/// the pool's members have it.
fn format_response(r: &KeyringResponse, keys: &BTreeMap<String, usize>) -> String {
    let mut s = String::from("\n");
    let pool = if r.wan { "WAN".to_string() } else { format!("{} (LAN)", r.datacenter) };
    let suffix = if !r.segment.is_empty() {
        format!(" [{}]", r.segment)
    } else if !(r.partition.is_empty() || r.partition == "default") {
        format!(" [partition: {}]", r.partition)
    } else {
        String::new()
    };
    s.push_str(&format!("{pool}{suffix}:\n"));
    for (from, msg) in &r.messages {
        s.push_str(&format!("  ===> {from}: {msg}\n"));
    }
    for (key, n) in keys {
        s.push_str(&format!("  {key} [{n}/{}]\n", r.num_nodes));
    }
    s.trim_end_matches('\n').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_read_like_consuls() {
        let r = KeyringResponse {
            datacenter: "dc1".into(),
            keys: BTreeMap::from([("a=".into(), 6), ("b=".into(), 5)]),
            messages: BTreeMap::from([("n1".into(), "boom".into())]),
            num_nodes: 6,
            ..KeyringResponse::default()
        };
        assert_eq!(format_response(&r, &r.keys), "\ndc1 (LAN):\n  ===> n1: boom\n  a= [6/6]\n  b= [5/6]");
        let wan = KeyringResponse { wan: true, num_nodes: 3, ..KeyringResponse::default() };
        assert_eq!(format_response(&wan, &BTreeMap::from([("k".into(), 3)])), "\nWAN:\n  k [3/3]");
    }

    #[tokio::test]
    async fn flag_mistakes_exit_1() {
        let run = |a: &[&str]| keyring_args(a);
        assert_eq!(keyring(&run(&[])).await, 1);
        assert_eq!(keyring(&run(&["-list", "-install=x"])).await, 1);
        assert_eq!(keyring(&run(&["-list", "-relay-factor=6"])).await, 1);
        assert_eq!(keyring(&run(&["-install=x", "-local-only"])).await, 1);
    }

    fn keyring_args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }
}
