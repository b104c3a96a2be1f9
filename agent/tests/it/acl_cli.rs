//! `agent acl ...` and the token flags of every command, run as a person runs them (the real
//! binary, its stdout, stderr and exit code) against real agents with ACLs on and
//! `default_policy = "deny"`. Addresses 127.0.140.1-127.0.140.9.

use crate::harness::{bin, wait_for, TestAgent};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

pub const MGMT: &str = "8fc9e787-674f-0709-cfd5-bfdabd73a70d";

/// A single server with ACLs on, default deny, and (if given) an `initial_management` token;
/// its test client carries that token.
pub fn acl_agent(ip: &str, management: Option<&str>, extra: &[&str]) -> TestAgent {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("acl.json");
    let mut acl = serde_json::json!({"enabled": true, "default_policy": "deny"});
    if let Some(m) = management {
        acl["tokens"] = serde_json::json!({ "initial_management": m });
    }
    std::fs::write(&config, serde_json::json!({ "acl": acl }).to_string()).expect("write config");
    let mut args = vec![format!("-config-file={}", config.display())];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut a = TestAgent::start_in(ip, false, &args, dir);
    a.client = a.client.clone().with_token(management.map(str::to_string));
    a
}

/// Waits for a Raft leader (`/v1/status/leader` needs no token).
pub async fn wait_leader(a: &TestAgent) {
    wait_for(Duration::from_secs(30), &format!("a leader on {}", a.ip), || async {
        a.client.status_leader().await.ok().filter(|l| !l.is_empty()).map(|_| ())
    })
    .await;
}

/// Runs `agent <args>` against `a` with only the environment given (no token unless it says so).
fn run_env(a: &TestAgent, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env_remove("CONSUL_HTTP_TOKEN")
        .env_remove("CONSUL_HTTP_TOKEN_FILE")
        .env("CONSUL_HTTP_ADDR", format!("{}:8500", a.ip))
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run agent CLI")
}

fn run(a: &TestAgent, args: &[&str]) -> Output {
    run_env(a, args, &[])
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success and returns stdout.
#[track_caller]
fn ok(o: Output) -> String {
    assert!(o.status.success(), "exit {:?}\nstdout:\n{}\nstderr:\n{}", o.status.code(), stdout(&o), stderr(&o));
    stdout(&o)
}

/// Asserts exit code 1 and returns stderr.
#[track_caller]
fn fails(o: Output) -> String {
    assert_eq!(o.status.code(), Some(1), "stdout:\n{}\nstderr:\n{}", stdout(&o), stderr(&o));
    stderr(&o)
}

/// The value of a `Key:   value` line of Consul's pretty output.
#[track_caller]
fn field(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")).map(|v| v.trim().to_string()))
        .unwrap_or_else(|| panic!("no {key}: in\n{text}"))
}

#[tokio::test]
async fn bootstrap_works_once_then_refuses_with_consuls_text() {
    let a = acl_agent("127.0.140.1", None, &[]);
    wait_leader(&a).await;

    let first = ok(run(&a, &["acl", "bootstrap"]));
    assert_eq!(field(&first, "Description"), "Bootstrap Token (Global Management)", "{first}");
    assert!(first.contains("Policies:\n   00000000-0000-0000-0000-000000000001 - global-management\n"), "{first}");
    assert!(first.ends_with("\n\n"), "Consul leaves a blank line after a token: {first:?}");
    let secret = field(&first, "SecretID");
    let accessor = field(&first, "AccessorID");

    let again = fails(run(&a, &["acl", "bootstrap"]));
    assert!(
        again.starts_with(
            "Failed ACL bootstrapping: Unexpected response code: 403 (Permission denied: ACL bootstrap no longer allowed (reset index: "
        ),
        "{again}"
    );

    // The token it printed is a management token.
    let me = ok(run(&a, &["acl", "token", "read", "-self", "-token", &secret]));
    assert_eq!(field(&me, "AccessorID"), accessor);
    let list = ok(run(&a, &["acl", "token", "list", "-format=json", "-token", &secret]));
    let list: serde_json::Value = serde_json::from_str(&list).expect("token list is JSON");
    let found = list.as_array().expect("array").iter().find(|t| t["AccessorID"] == accessor.as_str());
    let found = found.unwrap_or_else(|| panic!("bootstrap token not listed: {list}"));
    assert_eq!(found["Legacy"], false, "{found}");
    let created = found["CreateTime"].as_str().expect("CreateTime");
    assert!(created.ends_with('Z') && !created.contains(".000"), "Go's RFC 3339: {created}");
}

#[tokio::test]
async fn policies_roles_and_tokens_round_trip_through_the_cli() {
    let a = acl_agent("127.0.140.2", Some(MGMT), &[]);
    a.ready().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let rules_file = dir.path().join("web-read.hcl");
    std::fs::write(
        &rules_file,
        "service_prefix \"web\" { policy = \"read\" }\nnode_prefix \"\" { policy = \"read\" }\n",
    )
    .expect("rules");
    let env = [("CONSUL_HTTP_TOKEN", MGMT)];
    let cli = |args: &[&str]| run_env(&a, args, &env);

    // Policies.
    let created = ok(cli(&[
        "acl",
        "policy",
        "create",
        "-name",
        "web-read",
        "-description",
        "reads web",
        "-rules",
        &format!("@{}", rules_file.display()),
        "-valid-datacenter",
        "dc1",
    ]));
    let pid = field(&created, "ID");
    assert_eq!(field(&created, "Datacenters"), "dc1");
    assert!(created.contains("Rules:\nservice_prefix \"web\" { policy = \"read\" }\n"), "{created}");
    let read = ok(cli(&["acl", "policy", "read", "-id", &pid[..8]]));
    assert_eq!(field(&read, "Name"), "web-read");
    let json: serde_json::Value =
        serde_json::from_str(&ok(cli(&["acl", "policy", "read", "-name", "web-read", "-format=json"]))).expect("json");
    assert_eq!(json["ID"], pid.as_str());
    assert_eq!(json["Datacenters"], serde_json::json!(["dc1"]));
    let updated = ok(cli(&["acl", "policy", "update", "-name", "web-read", "-description", "reads web, v2"]));
    assert_eq!(field(&updated, "Description"), "reads web, v2");
    assert!(updated.contains("service_prefix \"web\""), "merged: the rules stay\n{updated}");
    let updated = ok(cli(&[
        "acl",
        "policy",
        "update",
        "-id",
        &pid,
        "-rules",
        "service_prefix \"web\" { policy = \"read\" }\nnode_prefix \"\" { policy = \"read\" }\nkey_prefix \"web/\" { policy = \"read\" }",
    ]));
    assert!(updated.contains("key_prefix \"web/\""), "{updated}");
    assert_eq!(field(&updated, "Description"), "reads web, v2");
    let listed = ok(cli(&["acl", "policy", "list"]));
    assert!(listed.contains(&format!("web-read:\n   ID:           {pid}\n")), "{listed}");
    assert!(listed.contains("global-management:\n"), "{listed}");

    // Roles.
    let role =
        ok(cli(&["acl", "role", "create", "-name", "readers", "-policy-name", "web-read", "-service-identity", "api"]));
    let rid = field(&role, "ID");
    assert!(role.contains(&format!("Policies:\n   {pid} - web-read\n")), "{role}");
    assert!(role.contains("Service Identities:\n   api (Datacenters: all)\n"), "{role}");
    let role = ok(cli(&[
        "acl",
        "role",
        "update",
        "-id",
        &rid[..8],
        "-description",
        "the readers",
        "-node-identity",
        "n1:dc1",
    ]));
    assert_eq!(field(&role, "Description"), "the readers");
    assert!(role.contains("api (Datacenters: all)") && role.contains("n1 (Datacenter: dc1)"), "merged\n{role}");
    assert_eq!(field(&ok(cli(&["acl", "role", "read", "-name", "readers"])), "ID"), rid);
    let roles: serde_json::Value =
        serde_json::from_str(&ok(cli(&["acl", "role", "list", "-format=json"]))).expect("json");
    assert!(roles.as_array().expect("array").iter().any(|r| r["ID"] == rid.as_str()), "{roles}");

    // Tokens.
    let (accessor, secret) = ("5b3b3e5f-1c2d-4e5f-8a9b-0c1d2e3f4a5b", "6c4c4f60-2d3e-4f60-9bac-1d2e3f4a5b6c");
    let token = ok(cli(&[
        "acl",
        "token",
        "create",
        "-description",
        "web reader",
        "-policy-id",
        &pid[..8],
        "-role-name",
        "readers",
        "-node-identity",
        "n2:dc1",
        "-accessor",
        accessor,
        "-secret",
        secret,
        "-expires-ttl",
        "1h",
    ]));
    assert_eq!(field(&token, "AccessorID"), accessor);
    assert_eq!(field(&token, "SecretID"), secret);
    assert!(field(&token, "Expiration Time").ends_with("+0000 UTC"), "{token}");
    assert!(token.contains(&format!("Roles:\n   {rid} - readers\n")), "{token}");
    // -id still works, with Consul's deprecation warning.
    let o = cli(&["acl", "token", "read", "-id", &accessor[..6]]);
    assert!(stderr(&o).contains("Use the -accessor-id parameter to specify token by Accessor ID"), "{}", stderr(&o));
    assert_eq!(field(&ok(o), "Description"), "web reader");
    let updated = ok(cli(&[
        "acl",
        "token",
        "update",
        "-accessor-id",
        accessor,
        "-description",
        "web reader v2",
        "-append-policy-name",
        "builtin/global-read-only",
    ]));
    assert_eq!(field(&updated, "Description"), "web reader v2");
    assert!(
        updated.contains(&format!(
            "Policies:\n   {pid} - web-read\n   00000000-0000-0000-0000-000000000002 - builtin/global-read-only\n"
        )),
        "{updated}"
    );
    assert!(updated.contains("Node Identities:\n   n2 (Datacenter: dc1)\n"), "identities kept\n{updated}");
    let clone = ok(cli(&["acl", "token", "clone", "-accessor-id", &accessor[..8], "-description", "a copy"]));
    let clone_id = field(&clone, "AccessorID");
    assert_ne!(clone_id, accessor);
    assert_eq!(field(&clone, "Description"), "a copy");
    let listed = ok(cli(&["acl", "token", "list"]));
    assert!(listed.contains(accessor) && listed.contains(&clone_id), "{listed}");
    // The new token's secret is a working token.
    let me = ok(run(&a, &["acl", "token", "read", "-self", "-token", secret]));
    assert_eq!(field(&me, "Description"), "web reader v2");

    // Deletes, and what reading a deleted object says.
    let gone = ok(cli(&["acl", "token", "delete", "-accessor-id", &clone_id]));
    assert_eq!(gone, format!("Token {clone_id:?} deleted successfully\n"));
    let e = fails(cli(&["acl", "token", "read", "-accessor-id", &clone_id]));
    assert_eq!(e, format!("Error reading token {clone_id:?}: Unexpected response code: 403 (ACL not found)\n"));
    assert_eq!(ok(cli(&["acl", "role", "delete", "-name", "readers"])), format!("Role {rid:?} deleted successfully\n"));
    assert_eq!(
        ok(cli(&["acl", "policy", "delete", "-name", "web-read"])),
        format!("Policy {pid:?} deleted successfully\n")
    );
    assert_eq!(fails(cli(&["acl", "policy", "read", "-name", "web-read"])), "Error policy not found: web-read\n");

    // The agent's own tokens.
    assert_eq!(ok(cli(&["acl", "set-agent-token", "agent", MGMT])), "ACL token \"agent\" set successfully\n");
    assert_eq!(fails(cli(&["acl", "set-agent-token", "agent"])), "Error! Missing TOKEN argument\n");
}

/// Runs a long-lived command (watch) until its stdout file holds `want`, then kills it.
async fn output_until(a: &TestAgent, args: &[&str], env: &[(&str, &str)], dir: &Path, want: &str) -> String {
    let out = dir.join("watch.out");
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env_remove("CONSUL_HTTP_TOKEN")
        .env_remove("CONSUL_HTTP_TOKEN_FILE")
        .env("CONSUL_HTTP_ADDR", format!("{}:8500", a.ip))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn");
    let text = wait_for(Duration::from_secs(30), &format!("{want:?} from {args:?}"), || async {
        let t = std::fs::read_to_string(&out).unwrap_or_default();
        t.contains(want).then_some(t)
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    text
}

#[tokio::test]
async fn every_command_takes_its_token_from_a_flag_a_file_or_the_environment() {
    let a = acl_agent("127.0.140.3", Some(MGMT), &[]);
    a.ready().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{MGMT}\n")).expect("token file");
    let tf = format!("-token-file={}", token_file.display());
    let tf_env = token_file.display().to_string();
    let node = "node-127-0-140-3";

    // kv: -token-file, CONSUL_HTTP_TOKEN, CONSUL_HTTP_TOKEN_FILE; without a token, Consul's 403.
    let e = fails(run(&a, &["kv", "put", "app/x", "1"]));
    assert!(
        e.starts_with("Error! Failed writing data: Unexpected response code: 403 (Permission denied: anonymous token lacks permission 'key:write' on \"app/x\""),
        "{e}"
    );
    assert_eq!(ok(run(&a, &["kv", "put", &tf, "app/x", "1"])), "Success! Data written to: app/x\n");
    assert_eq!(ok(run_env(&a, &["kv", "get", "app/x"], &[("CONSUL_HTTP_TOKEN", MGMT)])), "1\n");
    assert_eq!(ok(run_env(&a, &["kv", "get", "app/x"], &[("CONSUL_HTTP_TOKEN_FILE", &tf_env)])), "1\n");
    assert!(fails(run(&a, &["kv", "get", "app/x"])).contains("403 (Permission denied"));
    // A token file that holds a token wins over -token, as in Consul's client.
    assert_eq!(ok(run(&a, &["kv", "get", "-token=not-a-token", &tf, "app/x"])), "1\n");
    assert_eq!(
        fails(run(&a, &["kv", "get", "-token-file=/nonexistent/token", "app/x"])),
        "Error connecting to Consul agent: Error loading token file: open /nonexistent/token: no such file or directory\n"
    );

    // services and catalog.
    let e = fails(run(&a, &["services", "register", "-name=web", "-port=8080"]));
    assert!(e.contains("403") && e.contains("service:write"), "{e}");
    assert_eq!(ok(run(&a, &["services", "register", &tf, "-name=web", "-port=8080"])), "Registered service: web\n");
    let services = wait_for(Duration::from_secs(30), "web in the catalog", || async {
        let s = stdout(&run_env(&a, &["catalog", "services"], &[("CONSUL_HTTP_TOKEN_FILE", &tf_env)]));
        s.lines().any(|l| l == "web").then_some(s)
    })
    .await;
    assert!(services.lines().any(|l| l == "consul"), "{services}");
    let anonymous = ok(run(&a, &["catalog", "services"]));
    assert!(!anonymous.lines().any(|l| l == "web"), "filtered for the anonymous token: {anonymous}");

    // members: filtered without a token, down to none, which Consul's command answers with 2.
    assert!(ok(run(&a, &["members", "-token", MGMT])).contains(node));
    let o = run(&a, &["members"]);
    assert_eq!((o.status.code(), stdout(&o).as_str()), (Some(2), ""), "{}", stderr(&o));

    // snapshot needs a management token.
    let snap = dir.path().join("backup.snap");
    let snap_arg = snap.display().to_string();
    assert!(fails(run(&a, &["snapshot", "save", &snap_arg])).contains("403 (Permission denied"));
    assert!(ok(run(&a, &["snapshot", "save", &tf, &snap_arg])).starts_with("Saved and verified snapshot to index "));

    // watch and lock.
    let watched = output_until(
        &a,
        &["watch", "-type=key", "-key=app/x"],
        &[("CONSUL_HTTP_TOKEN", MGMT)],
        dir.path(),
        "\"Key\": \"app/x\"",
    )
    .await;
    assert!(watched.contains("\"Value\": \"MQ==\""), "{watched}");
    let locked = ok(run(&a, &["lock", &tf, "locks/job", "echo held-the-lock"]));
    assert!(locked.contains("held-the-lock"), "{locked}");
    let o = run(&a, &["lock", "locks/job", "echo held-the-lock"]);
    assert!(!o.status.success() && !stdout(&o).contains("held-the-lock"), "{}\n{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("Permission denied"), "{}", stderr(&o));
}

#[tokio::test]
async fn a_denied_operation_prints_the_403_and_exits_non_zero() {
    let a = acl_agent("127.0.140.4", Some(MGMT), &[]);
    a.ready().await;
    let env = [("CONSUL_HTTP_TOKEN", MGMT)];
    let ro = ok(run_env(
        &a,
        &["acl", "token", "create", "-description", "read only", "-policy-name", "builtin/global-read-only"],
        &env,
    ));
    let (ro_accessor, ro_secret) = (field(&ro, "AccessorID"), field(&ro, "SecretID"));

    let e = fails(run(&a, &["acl", "token", "create", "-policy-name", "global-management", "-token", &ro_secret]));
    assert!(
        e.starts_with(&format!(
            "Failed to create new token: Unexpected response code: 403 (Permission denied: token with AccessorID '{ro_accessor}' lacks permission 'acl:write'"
        )),
        "{e}"
    );
    let e = fails(run(&a, &["acl", "policy", "create", "-name", "p", "-token", &ro_secret]));
    assert!(e.starts_with("Failed to create new policy: Unexpected response code: 403 (Permission denied: "), "{e}");
    let e = fails(run(&a, &["acl", "token", "list"]));
    assert!(
        e.starts_with("Failed to retrieve the token list: Unexpected response code: 403 (Permission denied: anonymous token lacks permission 'acl:read'"),
        "{e}"
    );
    let e = fails(run(&a, &["acl", "token", "list", "-token", "0a0a0a0a-0000-4000-8000-000000000000"]));
    assert_eq!(e, "Failed to retrieve the token list: Unexpected response code: 403 (ACL not found)\n");
    let e = fails(run(&a, &["acl", "policy", "list", "-format=xml", "-token", &ro_secret]));
    assert_eq!(e, "Unknown format: xml\n");

    // A token that may read ACLs but not write them sees every token, secrets hidden.
    let listed = ok(run(&a, &["acl", "token", "list", "-token", &ro_secret]));
    assert!(listed.contains("SecretID:         <hidden>"), "{listed}");
    let listed = ok(run(&a, &["acl", "token", "list", "-format=json", "-token", &ro_secret]));
    assert!(listed.contains("\"SecretID\": \"\\u003chidden\\u003e\""), "Go escapes HTML characters: {listed}");
}
