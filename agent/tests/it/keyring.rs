//! Gossip key rotation as Consul does it (`consul keyring`, `/v1/operator/keyring`) across six
//! running agents, and gossip encryption turned on in a running plaintext cluster with
//! `encrypt_verify_incoming` / `encrypt_verify_outgoing`, as Consul's guide does. Addresses
//! 127.0.155.x.

use std::process::Command;
use std::time::Duration;

use crate::harness::{bin, json, text, wait_for, TestAgent};

const LONG: Duration = Duration::from_secs(60);
const K1: &str = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=";
const K2: &str = "Ep2Cq4Ft3bT1xZ6kJ9mN0pQrStUvWxYzAbCdEfGhIjk=";
/// A 16-byte (AES-128) key, as older Consul guides made them.
const K16: &str = "cg8StVXbQJ0gPvMd9o7yrg==";

fn ip(host: u8) -> String {
    format!("127.0.155.{host}")
}

/// Each member's status as this agent sees it.
async fn statuses(a: &TestAgent) -> Option<Vec<(String, i64)>> {
    let r = a.client.request(api::client::Method::GET, "/v1/agent/members", None, Some(Duration::from_secs(5))).await;
    let v: serde_json::Value = serde_json::from_slice(&r.ok()?.body).ok()?;
    let mut out: Vec<(String, i64)> = v
        .as_array()?
        .iter()
        .map(|m| (m["Name"].as_str().unwrap_or_default().to_string(), m["Status"].as_i64().unwrap_or(0)))
        .collect();
    out.sort();
    Some(out)
}

async fn wait_alive(agents: &[&TestAgent], n: usize) {
    for a in agents {
        wait_for(LONG, &format!("{} to see {n} members alive", a.ip), || async {
            let s = statuses(a).await?;
            (s.len() == n && s.iter().all(|(_, st)| *st == 1)).then_some(())
        })
        .await;
    }
}

/// Every agent sees every member alive right now: no waiting, so a member that went Failed
/// at any point since the last check (it stays Failed until it is heard from again, which a
/// broken key prevents) fails the test.
async fn assert_alive(agents: &[&TestAgent], n: usize, step: &str) {
    for a in agents {
        let s = statuses(a).await.unwrap_or_default();
        assert!(s.len() == n && s.iter().all(|(_, st)| *st == 1), "{step}: {} sees {s:?}", a.ip);
    }
}

/// Gossip and the server port both carry traffic under the current keys: a user event fired
/// on `from` reaches every agent, and a KV write through one client is read through another.
async fn traffic_flows(agents: &[&TestAgent], from: &TestAgent, step: &str) {
    let name = format!("ev-{}", step.replace(' ', "-"));
    let r = from.put(&format!("/v1/event/fire/{name}"), step).await;
    assert_eq!(r.status, 200, "{step}: {}", text(&r));
    for a in agents {
        wait_for(LONG, &format!("{step}: event {name} at {}", a.ip), || async {
            let v = json(&a.get(&format!("/v1/event/list?name={name}")).await);
            (v.as_array().map_or(0, Vec::len) == 1).then_some(())
        })
        .await;
    }
    let key = format!("/v1/kv/rotation/{}", step.replace(' ', "-"));
    let writer = agents.iter().rev().find(|a| a.ip != from.ip).expect("another agent");
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let r = writer.client.request(api::client::Method::PUT, &key, Some(step.to_string().into()), None).await;
        let last = match r {
            Ok(r) if r.status == 200 => break,
            Ok(r) => format!("{} {}", r.status, text(&r)),
            Err(e) => e.to_string(),
        };
        if std::time::Instant::now() > deadline {
            let log = writer.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            let members = text(&writer.get("/v1/agent/members").await);
            panic!("{step}: KV write through {}: {last}\nmembers: {members}\n{}", writer.ip, tail.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(text(&from.get(&format!("{key}?raw")).await), step, "{step}: read through {}", from.ip);
}

/// The LAN pool's entry of `GET /v1/operator/keyring`.
async fn lan_keyring(a: &TestAgent) -> serde_json::Value {
    let r = a.get("/v1/operator/keyring").await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let v = json(&r);
    let lan: Vec<&serde_json::Value> = v.as_array().expect("list").iter().filter(|p| p["WAN"] == false).collect();
    assert_eq!(lan.len(), 1, "{v}");
    lan[0].clone()
}

fn cli(a: &TestAgent, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .arg("keyring")
        .args(args)
        .arg(format!("-http-addr={}:8500", a.ip))
        .output()
        .expect("run the CLI");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test]
async fn rotating_the_gossip_key_across_six_agents_keeps_every_member() {
    let encrypt = format!("-encrypt={K1}");
    let seeds = [ip(1), ip(2), ip(3)];
    let seeds: Vec<&str> = seeds.iter().map(String::as_str).collect();
    let mut agents: Vec<TestAgent> = (1..=3).map(|h| TestAgent::member(&ip(h), Some(3), &seeds, &[&encrypt])).collect();
    agents.extend((4..=6).map(|h| TestAgent::member(&ip(h), None, &seeds, &[&encrypt])));
    let all: Vec<&TestAgent> = agents.iter().collect();
    wait_alive(&all, 6).await;
    traffic_flows(&all, &agents[5], "before").await;
    assert_alive(&all, 6, "before").await;

    let before = lan_keyring(&agents[3]).await;
    assert_eq!(before["Keys"], serde_json::json!({ K1: 6 }), "{before}");
    assert_eq!(before["PrimaryKeys"], serde_json::json!({ K1: 6 }));
    assert_eq!(before["NumNodes"], 6);

    // Install through the CLI on a client.
    let (code, stdout, stderr) = cli(&agents[4], &["-install", K2]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(stdout.trim(), "==> Installing new gossip encryption key...");
    let (code, stdout, _) = cli(&agents[0], &["-list"]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("==> Gathering installed encryption keys...\n\ndc1 (LAN):\n"), "{stdout}");
    assert!(stdout.contains(&format!("  {K1} [6/6]")) && stdout.contains(&format!("  {K2} [6/6]")), "{stdout}");
    traffic_flows(&all, &agents[0], "installed").await;
    assert_alive(&all, 6, "installed").await;

    // Use it: every member now seals with K2 and still opens K1 from any that has not switched.
    let r = agents[1].put("/v1/operator/keyring", &format!(r#"{{"Key":"{K2}"}}"#)).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let used = lan_keyring(&agents[5]).await;
    assert_eq!(used["Keys"], serde_json::json!({ K1: 6, K2: 6 }), "{used}");
    assert_eq!(used["PrimaryKeys"], serde_json::json!({ K2: 6 }), "{used}");
    let (code, stdout, _) = cli(&agents[2], &["-list-primary"]);
    assert_eq!((code, stdout.contains(&format!("  {K2} [6/6]"))), (0, true), "{stdout}");
    traffic_flows(&all, &agents[3], "used").await;
    assert_alive(&all, 6, "used").await;

    // The primary cannot be removed, with Consul's text; the old key can.
    let r = agents[4]
        .client
        .request(api::client::Method::DELETE, "/v1/operator/keyring", Some(format!(r#"{{"Key":"{K2}"}}"#).into()), None)
        .await
        .expect("request");
    assert_eq!(r.status, 500);
    let body = text(&r);
    assert!(body.contains("dc1 (LAN) error: 6/6 nodes reported failure"), "{body}");
    assert_eq!(body.matches("Removing the primary key is not allowed").count(), 6, "{body}");
    let (code, stdout, stderr) = cli(&agents[3], &["-remove", K2]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stderr.starts_with("error: Unexpected response code: 500 ("), "{stderr}");
    let (code, stdout, stderr) = cli(&agents[3], &["-remove", K1]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(stdout.trim(), "==> Removing gossip encryption key...");
    let after = lan_keyring(&agents[0]).await;
    assert_eq!(after["Keys"], serde_json::json!({ K2: 6 }), "{after}");
    traffic_flows(&all, &agents[2], "removed").await;
    assert_alive(&all, 6, "removed").await;

    // Not one member was seen Failed, even for a moment, by anyone during the rotation.
    for a in &agents {
        let log = a.log();
        assert!(log.contains("event=Joined("), "{}: gossip events are logged as expected", a.ip);
        assert!(!log.contains("event=Failed("), "{} saw a member fail", a.ip);
    }

    // Each agent keeps the rotated keyring in its data dir, primary first.
    for a in &agents {
        let file = std::fs::read_to_string(a.dir.path().join("serf").join("local.keyring")).expect("keyring file");
        assert_eq!(serde_json::from_str::<Vec<String>>(&file).expect("json"), vec![K2.to_string()], "{}", a.ip);
    }

    // A server and a client restarted with the old `encrypt` in their flags: the keyring file
    // wins, so they come back into a cluster that no longer knows K1.
    for i in [1, 4] {
        agents[i].respawn();
    }
    let all: Vec<&TestAgent> = agents.iter().collect();
    wait_alive(&all, 6).await;
    for i in [1, 4] {
        let log = agents[i].log();
        assert!(log.contains("WARNING: LAN keyring exists but -encrypt given, using keyring"), "{}", agents[i].ip);
    }
    traffic_flows(&all, &agents[4], "restarted").await;
    assert_alive(&all, 6, "restarted").await;
    let restarted = lan_keyring(&agents[1]).await;
    assert_eq!(restarted["Keys"], serde_json::json!({ K2: 6 }), "{restarted}");
}

/// Consul's guide to encrypting an existing cluster: every agent gets the key with both
/// verifications off (reads both, sends plain), then outgoing on (sends encrypted), then
/// incoming on (plain refused). One agent restarted at a time; nobody drops out.
#[tokio::test]
async fn encryption_turned_on_in_a_running_cluster() {
    let configs = tempfile::tempdir().expect("tempdir");
    let files: Vec<std::path::PathBuf> = (0..3).map(|i| configs.path().join(format!("gossip-{i}.json"))).collect();
    for f in &files {
        std::fs::write(f, "{}").expect("config");
    }
    let flag = |i: usize| format!("-config-file={}", files[i].display());
    let seeds = [ip(11)];
    let seeds: Vec<&str> = seeds.iter().map(String::as_str).collect();
    let mut agents = vec![TestAgent::member(&ip(11), Some(1), &[], &[&flag(0)])];
    agents.push(TestAgent::member(&ip(12), None, &seeds, &[&flag(1)]));
    agents.push(TestAgent::member(&ip(13), None, &seeds, &[&flag(2)]));
    wait_alive(&agents.iter().collect::<Vec<_>>(), 3).await;
    traffic_flows(&agents.iter().collect::<Vec<_>>(), &agents[1], "plain").await;
    // Without encryption there is no keyring: each member says so, as Serf does.
    let r = agents[1].get("/v1/operator/keyring").await;
    assert_eq!(r.status, 500);
    let body = text(&r);
    assert!(body.starts_with("4 errors occurred:\n\t* dc1 (LAN) error: 3/3 nodes reported failure"), "{body}");
    assert_eq!(body.matches("Keyring is empty (encryption not enabled)").count(), 3, "{body}");

    let phases = [
        ("key in", format!(r#"{{"encrypt":"{K16}","encrypt_verify_incoming":false,"encrypt_verify_outgoing":false}}"#)),
        ("sending encrypted", format!(r#"{{"encrypt":"{K16}","encrypt_verify_incoming":false}}"#)),
        ("enforced", format!(r#"{{"encrypt":"{K16}"}}"#)),
    ];
    for (phase, config) in &phases {
        for i in 0..agents.len() {
            std::fs::write(&files[i], config).expect("config");
            agents[i].respawn();
            let step = format!("{phase} {i}");
            let all: Vec<&TestAgent> = agents.iter().collect();
            wait_alive(&all, 3).await;
            traffic_flows(&all, &agents[(i + 1) % 3], &step).await;
            assert_alive(&all, 3, &step).await;
        }
    }
    let info = json(&agents[0].get("/v1/agent/self").await);
    assert_eq!(info["Stats"]["serf_lan"]["encrypted"], "true");
    let lan = lan_keyring(&agents[2]).await;
    assert_eq!(lan["Keys"], serde_json::json!({ K16: 3 }), "{lan}");

    // Plain text is refused now: an agent without the key keeps failing to join.
    let plain = TestAgent::member(&ip(14), None, &seeds, &[]);
    wait_for(LONG, "the plaintext agent to have tried to join a few times", || async {
        (plain.log().matches("join failed").count() >= 3).then_some(())
    })
    .await;
    assert_eq!(statuses(&agents[0]).await.map(|s| s.len()), Some(3));
}

/// With ACLs on, listing needs `keyring = "read"` and changing needs `keyring = "write"`.
#[tokio::test]
async fn keyring_operations_need_keyring_read_and_write() {
    const MGMT: &str = "5e3a1c2b-9f4d-4e6a-8b7c-0d1e2f3a4b5c";
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("acl.json");
    let acl = serde_json::json!({
        "primary_datacenter": "dc1", "encrypt": K1,
        "acl": {"enabled": true, "default_policy": "deny", "tokens": {"initial_management": MGMT}}
    });
    std::fs::write(&cfg, acl.to_string()).expect("config");
    let a = TestAgent::start(&ip(21), false, &[&format!("-config-file={}", cfg.display())]);
    let as_token = |t: &str| api::Client::new(&format!("{}:8500", ip(21))).expect("client").with_token(Some(t.into()));
    let call = |c: api::Client, method: api::client::Method, path: String, body: Option<String>| async move {
        let r = c.request(method, &path, body.map(Into::into), Some(Duration::from_secs(10))).await.ok()?;
        Some((r.status, String::from_utf8_lossy(&r.body).to_string()))
    };
    let mgmt = as_token(MGMT);
    wait_for(LONG, "ACLs bootstrapped", || async {
        let (code, _) = call(mgmt.clone(), api::client::Method::GET, "/v1/acl/token/self".into(), None).await?;
        (code == 200).then_some(())
    })
    .await;
    let token = |rules: &'static str| {
        let mgmt = mgmt.clone();
        async move {
            let body = serde_json::json!({"Name": format!("p-{}", rules.len()), "Rules": rules}).to_string();
            let (code, p) = call(mgmt.clone(), api::client::Method::PUT, "/v1/acl/policy".into(), Some(body))
                .await
                .expect("policy");
            assert_eq!(code, 200, "{p}");
            let id =
                serde_json::from_str::<serde_json::Value>(&p).expect("json")["ID"].as_str().expect("id").to_string();
            let body = serde_json::json!({"Policies": [{"ID": id}]}).to_string();
            let (code, t) =
                call(mgmt, api::client::Method::PUT, "/v1/acl/token".into(), Some(body)).await.expect("token");
            assert_eq!(code, 200, "{t}");
            serde_json::from_str::<serde_json::Value>(&t).expect("json")["SecretID"]
                .as_str()
                .expect("secret")
                .to_string()
        }
    };
    let install = format!(r#"{{"Key":"{K2}"}}"#);
    let path = || "/v1/operator/keyring".to_string();
    let anon = api::Client::new(&format!("{}:8500", ip(21))).expect("client");
    let (code, body) = call(anon, api::client::Method::GET, path(), None).await.expect("anonymous");
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("lacks permission 'keyring:read'"), "{body}");

    let reader = as_token(&token(r#"keyring = "read""#).await);
    let (code, body) = call(reader.clone(), api::client::Method::GET, path(), None).await.expect("list");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(K1), "{body}");
    let (code, body) = call(reader, api::client::Method::POST, path(), Some(install.clone())).await.expect("install");
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("lacks permission 'keyring:write'"), "{body}");

    let writer = as_token(&token(r#"keyring = "write""#).await);
    let (code, body) = call(writer.clone(), api::client::Method::POST, path(), Some(install)).await.expect("install");
    assert_eq!(code, 200, "{body}");
    let (_, body) = call(writer, api::client::Method::GET, path(), None).await.expect("list");
    assert!(body.contains(K1) && body.contains(K2), "{body}");
    drop(a);
}
