//! `agent config ...` and `agent intention ...` run as a person runs them (the real binary, its
//! stdout, stderr and exit code) against a real `-dev` agent, checked against Consul's texts.
//! Addresses 127.0.160.1-127.0.160.9.

use crate::harness::{bin, json, TestAgent};
use std::process::{Command, Output, Stdio};

fn run(a: &TestAgent, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env_remove("CONSUL_HTTP_TOKEN")
        .env_remove("CONSUL_HTTP_TOKEN_FILE")
        .env("CONSUL_HTTP_ADDR", format!("{}:8500", a.ip))
        .stdin(Stdio::null())
        .output()
        .expect("run agent CLI")
}

/// Runs `agent <args>` with `input` on its stdin.
fn run_stdin(a: &TestAgent, args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(bin())
        .args(args)
        .env_remove("CONSUL_HTTP_TOKEN")
        .env_remove("CONSUL_HTTP_TOKEN_FILE")
        .env("CONSUL_HTTP_ADDR", format!("{}:8500", a.ip))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run agent CLI");
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
    child.wait_with_output().expect("agent CLI output")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the exit code and returns (stdout, stderr).
#[track_caller]
fn exits(o: Output, code: i32) -> (String, String) {
    assert_eq!(o.status.code(), Some(code), "stdout:\n{}\nstderr:\n{}", stdout(&o), stderr(&o));
    (stdout(&o), stderr(&o))
}

#[tokio::test]
async fn config_write_read_list_delete_with_cas_from_hcl_and_json() {
    let a = TestAgent::start("127.0.160.1", true, &[]);
    a.ready().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let hcl = dir.path().join("web.hcl");
    std::fs::write(
        &hcl,
        "kind = \"service-defaults\"\nname = \"web\"\nprotocol = \"http\"\nmesh_gateway { mode = \"local\" }\n\
         meta { owner_team = \"payments\" }\n",
    )
    .expect("write hcl");
    let hcl = hcl.to_str().expect("utf-8 path");

    let (o, _) = exits(run(&a, &["config", "write", hcl]), 0);
    assert_eq!(o, "Config entry written: service-defaults/web\n");
    let e = json(&a.get("/v1/config/service-defaults/web").await);
    assert_eq!(e["Protocol"], "http", "{e}");
    assert_eq!(e["MeshGateway"]["Mode"], "local", "{e}");
    assert_eq!(e["Meta"]["owner_team"], "payments", "user keys stay as written: {e}");
    let index = e["ModifyIndex"].as_u64().expect("ModifyIndex");

    // read prints Go's indented JSON, Kind and Name first, the indexes last.
    let (o, _) = exits(run(&a, &["config", "read", "-kind", "service-defaults", "-name", "web"]), 0);
    assert!(o.starts_with("{\n    \"Kind\": \"service-defaults\",\n    \"Name\": \"web\",\n"), "{o}");
    assert!(o.ends_with(&format!("    \"ModifyIndex\": {index}\n}}\n")), "{o}");
    let read: serde_json::Value = serde_json::from_str(&o).expect("read prints JSON");
    assert_eq!(read["Protocol"], "http");

    // A JSON file, in the API's own names.
    let json_file = dir.path().join("api.json");
    std::fs::write(&json_file, r#"{"Kind": "service-defaults", "Name": "api", "Protocol": "grpc"}"#)
        .expect("write json");
    let (o, _) = exits(run(&a, &["config", "write", json_file.to_str().expect("path")]), 0);
    assert_eq!(o, "Config entry written: service-defaults/api\n");
    let (o, _) = exits(run(&a, &["config", "list", "-kind", "service-defaults"]), 0);
    assert_eq!(o, "api\nweb\n");

    // From stdin, HCL with a named map and a block list.
    let resolver = "kind = \"service-resolver\"\nname = \"web\"\ndefault_subset = \"v1\"\n\
                    subsets { v1 { filter = \"Service.Meta.version == v1\" } }\n";
    let (o, _) = exits(run_stdin(&a, &["config", "write", "-"], resolver), 0);
    assert_eq!(o, "Config entry written: service-resolver/web\n");
    let e = json(&a.get("/v1/config/service-resolver/web").await);
    assert_eq!(e["DefaultSubset"], "v1", "{e}");
    assert_eq!(e["Subsets"]["v1"]["Filter"], "Service.Meta.version == v1", "{e}");

    // -cas: 0 writes only what does not exist; a stale index loses; the current one wins.
    let (_, e) = exits(run(&a, &["config", "write", "-cas", "-modify-index=0", hcl]), 1);
    assert_eq!(e, "Config entry not updated: service-defaults/web\n");
    let stale = (index + 1000).to_string();
    let (_, e) = exits(run(&a, &["config", "write", "-cas", "-modify-index", &stale, hcl]), 1);
    assert_eq!(e, "Config entry not updated: service-defaults/web\n");
    let (o, _) = exits(run(&a, &["config", "write", "-cas", "-modify-index", &index.to_string(), hcl]), 0);
    assert_eq!(o, "Config entry written: service-defaults/web\n");
    let index = json(&a.get("/v1/config/service-defaults/web").await)["ModifyIndex"].as_u64().expect("index");

    // Consul's refusals before anything is sent.
    let (_, e) =
        exits(run(&a, &["config", "delete", "-kind", "service-defaults", "-name", "web", "-modify-index=3"]), 1);
    assert_eq!(e, "Cannot specify -modify-index without -cas\n");
    let (_, e) = exits(run(&a, &["config", "delete", "-kind", "service-defaults", "-name", "web", "-cas"]), 1);
    assert_eq!(e, "Must specify a -modify-index greater than 0 with -cas\n");
    let (_, e) = exits(run(&a, &["config", "read", "-kind", "service-defaults"]), 1);
    assert_eq!(e, "Must specify the -name parameter\n");
    let (_, e) = exits(run(&a, &["config", "list"]), 1);
    assert_eq!(e, "Must specify the -kind parameter\n");
    let (_, e) = exits(run(&a, &["config", "write"]), 1);
    assert_eq!(e, "Must provide exactly one positional argument to specify the config entry to write\n");
    let bad = dir.path().join("bad.hcl");
    std::fs::write(&bad, "kind = \"service-default\"\nname = \"x\"\n").expect("write");
    let (_, e) = exits(run(&a, &["config", "write", bad.to_str().expect("path")]), 1);
    assert_eq!(e, "Failed to decode config entry input: invalid config entry kind: service-default\n");
    let nokind = dir.path().join("nokind.json");
    std::fs::write(&nokind, r#"{"Name": "x"}"#).expect("write");
    let (_, e) = exits(run(&a, &["config", "write", nokind.to_str().expect("path")]), 1);
    assert_eq!(e, "Failed to decode config entry input: Payload does not contain a kind/Kind key at the top level\n");
    // The agent's validation comes back in Consul's words.
    let ftp = dir.path().join("ftp.json");
    std::fs::write(&ftp, r#"{"Kind": "service-defaults", "Name": "ftp", "Protocol": "ftp"}"#).expect("write");
    let (_, e) = exits(run(&a, &["config", "write", ftp.to_str().expect("path")]), 1);
    assert!(e.starts_with("Error writing config entry service-defaults/ftp: Unexpected response code: 400"), "{e}");
    assert!(e.contains("invalid protocol"), "{e}");

    // delete: a stale -cas loses, the current one deletes; without -cas it always answers.
    let (_, e) = exits(
        run(&a, &["config", "delete", "-kind", "service-defaults", "-name", "web", "-cas", "-modify-index", &stale]),
        1,
    );
    assert_eq!(e, "Config entry not deleted: service-defaults/web\n");
    let idx = index.to_string();
    let (o, _) = exits(
        run(&a, &["config", "delete", "-kind", "service-defaults", "-name", "web", "-cas", "-modify-index", &idx]),
        0,
    );
    assert_eq!(o, "Config entry deleted: service-defaults/web\n");
    let (o, _) = exits(run(&a, &["config", "delete", "-kind", "service-defaults", "-name", "api"]), 0);
    assert_eq!(o, "Config entry deleted: service-defaults/api\n");
    let (o, _) = exits(run(&a, &["config", "list", "-kind", "service-defaults"]), 0);
    assert_eq!(o, "");
    let (_, e) = exits(run(&a, &["config", "read", "-kind", "service-defaults", "-name", "web"]), 1);
    assert!(
        e.starts_with("Error reading config entry \"service-defaults\" / \"web\": Unexpected response code: 404"),
        "{e}"
    );
}

#[tokio::test]
async fn intentions_create_check_match_get_list_delete() {
    let a = TestAgent::start("127.0.160.2", true, &[]);
    a.ready().await;

    let (_, e) = exits(run(&a, &["intention", "list"]), 2);
    assert_eq!(e, "There are no intentions.\n");
    let (o, _) = exits(run(&a, &["intention", "create", "-meta", "team=db", "web", "db"]), 0);
    assert_eq!(o, "Created: web => db (allow)\n");
    let (_, e) = exits(run(&a, &["intention", "create", "web", "db"]), 1);
    assert!(e.contains("duplicate intention found: web => db (allow)"), "{e}");
    // -file: JSON intentions, as Consul's `intention create -file` reads them.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("any-db.json");
    std::fs::write(&file, r#"{"SourceName": "*", "DestinationName": "db", "Action": "deny", "Description": "x"}"#)
        .expect("write");
    let (o, _) = exits(run(&a, &["intention", "create", "-file", file.to_str().expect("path")]), 0);
    assert_eq!(o, "Created: * => db (deny)\n");

    let (o, _) = exits(run(&a, &["intention", "check", "web", "db"]), 0);
    assert_eq!(o, "Allowed\n");
    let (o, _) = exits(run(&a, &["intention", "check", "api", "db"]), 1);
    assert_eq!(o, "Denied\n");
    let (_, e) = exits(run(&a, &["intention", "check", "web"]), 2);
    assert_eq!(e, "Error: command requires exactly two arguments: src and dst\n");

    // match lists the most precise first.
    let (o, _) = exits(run(&a, &["intention", "match", "db"]), 0);
    assert_eq!(o, "web => db (allow)\n* => db (deny)\n");
    // By source, a wildcard source matches too (Consul's match does the same).
    let (o, _) = exits(run(&a, &["intention", "match", "-source", "web"]), 0);
    assert_eq!(o, "web => db (allow)\n* => db (deny)\n");

    let (o, _) = exits(run(&a, &["intention", "get", "web", "db"]), 0);
    assert!(o.starts_with("Source:       web\nDestination:  db\nAction:       allow\n"), "{o}");
    assert!(o.contains("Meta[team]:   db\n"), "{o}");
    assert!(o.contains("Created At:   "), "{o}");
    // Kept as config entries, intentions have no IDs: one given is not found.
    let (_, e) = exits(run(&a, &["intention", "get", "0b9e0a0e-5a4f-4a1b-9c55-2f6d2a9e1c11"]), 1);
    assert_eq!(e, "Intention not found with ID \"0b9e0a0e-5a4f-4a1b-9c55-2f6d2a9e1c11\"\n");
    let (_, e) = exits(run(&a, &["intention", "get", "nope", "db"]), 1);
    assert_eq!(e, "Intention not found with source \"nope\" and destination \"db\"\n");

    // -replace overwrites silently.
    let (o, _) = exits(run(&a, &["intention", "create", "-replace", "-deny", "web", "db"]), 0);
    assert_eq!(o, "");
    let (o, _) = exits(run(&a, &["intention", "check", "web", "db"]), 1);
    assert_eq!(o, "Denied\n");

    let (o, _) = exits(run(&a, &["intention", "list"]), 0);
    let lines: Vec<&str> = o.lines().collect();
    assert_eq!(lines.len(), 3, "{o}");
    assert!(lines[0].starts_with("ID") && lines[0].ends_with("Precedence"), "{o}");
    assert!(o.contains("web") && o.contains("deny"), "{o}");

    let (o, _) = exits(run(&a, &["intention", "delete", "web", "db"]), 0);
    assert_eq!(o, "Intention deleted.\n");
    let (o, _) = exits(run(&a, &["intention", "delete", "*", "db"]), 0);
    assert_eq!(o, "Intention deleted.\n");
    let (_, e) = exits(run(&a, &["intention", "list"]), 2);
    assert_eq!(e, "There are no intentions.\n");
    // Intentions are stored as Consul ≥ 1.9 stores them: service-intentions entries.
    let (o, _) = exits(run(&a, &["config", "list", "-kind", "service-intentions"]), 0);
    assert_eq!(o, "");
}
