//! ACLs end to end: a cluster with `default_policy = "deny"`, tokens made through the API, and
//! what each token may see and do over HTTP, DNS and the agents' own syncs.

use crate::harness::{wait_for, TestAgent};
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use std::time::Duration;

pub(crate) const MGMT: &str = "8fc9e787-674f-0709-cfd5-bfdabd73a70d";

fn acl_config(dir: &std::path::Path, extra: serde_json::Value) -> String {
    let mut cfg = serde_json::json!({
        "primary_datacenter": "dc1",
        "acl": {"enabled": true, "default_policy": "deny", "tokens": {"initial_management": MGMT}}
    });
    if let (Some(base), Some(more)) = (cfg["acl"].as_object_mut(), extra.as_object()) {
        for (k, v) in more {
            base.insert(k.clone(), v.clone());
        }
    }
    let path = dir.join("acl.json");
    std::fs::write(&path, cfg.to_string()).expect("write config");
    format!("-config-file={}", path.display())
}

/// A request with a token (header), returning status and body.
pub(crate) async fn req(
    a: &TestAgent,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let url = format!("http://{}:8500{path}", a.ip);
    let mut cmd = vec![
        "-s".to_string(),
        "-o".into(),
        "-".into(),
        "-w".into(),
        "\n%{http_code}".into(),
        "-X".into(),
        method.into(),
    ];
    if let Some(t) = token {
        cmd.push("-H".into());
        cmd.push(format!("X-Consul-Token: {t}"));
    }
    if let Some(b) = body {
        cmd.push("--data-binary".into());
        cmd.push(b.into());
    }
    cmd.push(url);
    let out = tokio::process::Command::new("curl").args(&cmd).output().await.expect("curl");
    let s = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = s.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

async fn headers(a: &TestAgent, path: &str, token: Option<&str>) -> String {
    let mut cmd = vec!["-s".to_string(), "-D".into(), "-".into(), "-o".into(), "/dev/null".into()];
    if let Some(t) = token {
        cmd.extend(["-H".into(), format!("X-Consul-Token: {t}")]);
    }
    cmd.push(format!("http://{}:8500{path}", a.ip));
    let out = tokio::process::Command::new("curl").args(&cmd).output().await.expect("curl");
    String::from_utf8_lossy(&out.stdout).to_lowercase()
}

/// Creates a policy with `rules` and a token linked to it; returns the token's secret.
async fn token_with(a: &TestAgent, name: &str, rules: &str) -> String {
    let body = serde_json::json!({"Name": name, "Rules": rules}).to_string();
    let (code, p) = req(a, "PUT", "/v1/acl/policy", Some(MGMT), Some(&body)).await;
    assert_eq!(code, 200, "{p}");
    let id = serde_json::from_str::<serde_json::Value>(&p).expect("json")["ID"].as_str().expect("id").to_string();
    let body = serde_json::json!({"Description": name, "Policies": [{"ID": id}]}).to_string();
    let (code, t) = req(a, "PUT", "/v1/acl/token", Some(MGMT), Some(&body)).await;
    assert_eq!(code, 200, "{t}");
    serde_json::from_str::<serde_json::Value>(&t).expect("json")["SecretID"].as_str().expect("secret").to_string()
}

async fn ready_acl(a: &TestAgent) {
    wait_for(Duration::from_secs(30), "acl bootstrapped", || async {
        let (code, _) = req(a, "GET", "/v1/acl/token/self", Some(MGMT), None).await;
        (code == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn default_deny_tokens_decide_what_each_caller_reads_and_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = acl_config(dir.path(), serde_json::json!({}));
    let a = TestAgent::start("127.0.125.1", false, &[&cfg]);
    ready_acl(&a).await;

    for (k, v) in [("app/x", "1"), ("app/y", "2"), ("other/x", "3")] {
        assert_eq!(req(&a, "PUT", &format!("/v1/kv/{k}"), Some(MGMT), Some(v)).await.0, 200);
    }
    // Anonymous reads nothing and writes nothing.
    let (code, body) = req(&a, "GET", "/v1/kv/app/x", None, None).await;
    assert_eq!(code, 403);
    assert_eq!(
        body,
        "Permission denied: anonymous token lacks permission 'key:read' on \"app/x\". The anonymous token is used implicitly when a request does not specify a token."
    );
    assert_eq!(req(&a, "PUT", "/v1/kv/app/x", None, Some("no")).await.0, 403);
    let (code, body) = req(&a, "GET", "/v1/catalog/nodes", None, None).await;
    assert_eq!((code, body.as_str()), (200, "[]"));
    let h = headers(&a, "/v1/catalog/nodes", None).await;
    assert!(h.contains("x-consul-results-filtered-by-acls: true"), "{h}");
    assert!(h.contains("x-consul-default-acl-policy: deny"), "{h}");

    // A token with key_prefix "app/" read.
    let t = token_with(&a, "app-read", r#"key_prefix "app/" { policy = "read" }"#).await;
    assert_eq!(req(&a, "GET", "/v1/kv/app/x?raw", Some(&t), None).await, (200, "1".to_string()));
    let (code, body) = req(&a, "GET", "/v1/kv/other/x", Some(&t), None).await;
    assert_eq!(code, 403);
    assert!(
        body.starts_with("Permission denied: token with AccessorID '")
            && body.ends_with("lacks permission 'key:read' on \"other/x\""),
        "{body}"
    );
    assert_eq!(req(&a, "PUT", "/v1/kv/app/x", Some(&t), Some("w")).await.0, 403);
    let (code, body) = req(&a, "GET", "/v1/kv/?keys", Some(&t), None).await;
    assert_eq!((code, body.as_str()), (200, r#"["app/x","app/y"]"#));
    let (code, _) = req(&a, "DELETE", "/v1/kv/app/?recurse", Some(&t), None).await;
    assert_eq!(code, 403, "a recursive delete needs write on the whole prefix");
    // The same token through Authorization: Bearer and ?token=.
    let out = tokio::process::Command::new("curl")
        .args(["-s", "-H", &format!("Authorization: Bearer {t}"), "http://127.0.125.1:8500/v1/kv/app/y?raw"])
        .output()
        .await
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2");
    assert_eq!(req(&a, "GET", &format!("/v1/kv/app/y?raw&token={t}"), None, None).await, (200, "2".to_string()));
    // An unknown secret is not anonymous: it is refused.
    assert_eq!(
        req(&a, "GET", "/v1/kv/app/x", Some("2d7f2b8e-0000-4000-8000-000000000000"), None).await,
        (403, "ACL not found".to_string())
    );
    // Snapshots and ACL management need the management token.
    assert_eq!(req(&a, "GET", "/v1/snapshot", Some(&t), None).await.0, 403);
    assert_eq!(req(&a, "GET", "/v1/acl/tokens", Some(&t), None).await.0, 403);
    assert_eq!(req(&a, "GET", "/v1/snapshot", Some(MGMT), None).await.0, 200);
    // Agent endpoints: agent:read on this node.
    assert_eq!(req(&a, "GET", "/v1/agent/self", Some(&t), None).await.0, 403);
    let node = format!("node-{}", a.ip.replace('.', "-"));
    let ta = token_with(&a, "agent-read", &format!("agent \"{node}\" {{ policy = \"read\" }}")).await;
    assert_eq!(req(&a, "GET", "/v1/agent/self", Some(&ta), None).await.0, 200);
    assert_eq!(req(&a, "PUT", "/v1/agent/reload", Some(&ta), None).await.0, 403);
}

#[tokio::test]
async fn services_and_dns_show_only_what_a_token_may_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = acl_config(dir.path(), serde_json::json!({}));
    let a = TestAgent::start("127.0.125.2", false, &[&cfg, "-dns-port=8600"]);
    ready_acl(&a).await;
    for (name, port) in [("web", 80), ("db", 5432)] {
        let body = serde_json::json!({"Name": name, "Port": port}).to_string();
        let (code, b) = req(&a, "PUT", "/v1/agent/service/register", Some(MGMT), Some(&body)).await;
        assert_eq!(code, 200, "{b}");
    }
    // Registration needs service:write on the name.
    let (code, _) = req(&a, "PUT", "/v1/agent/service/register", None, Some(r#"{"Name":"evil","Port":1}"#)).await;
    assert_eq!(code, 403);
    let web =
        token_with(&a, "web-read", "service \"web\" { policy = \"read\" }\nnode_prefix \"\" { policy = \"read\" }")
            .await;
    let (code, body) = req(&a, "GET", "/v1/catalog/services", Some(&web), None).await;
    assert_eq!(code, 200);
    let services = serde_json::from_str::<serde_json::Value>(&body).expect("json");
    assert!(services.get("web").is_some() && services.get("db").is_none(), "{services}");
    assert_eq!(req(&a, "GET", "/v1/health/service/db", Some(&web), None).await, (200, "[]".to_string()));
    let (_, body) = req(&a, "GET", "/v1/health/service/web", Some(&web), None).await;
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).expect("json").as_array().map(Vec::len), Some(1));
    assert_eq!(req(&a, "GET", "/v1/agent/service/db", Some(&web), None).await.0, 403);

    // DNS answers with the agent's DNS token: none set, so anonymous (deny) sees nothing.
    let dns = |name: &'static str| async move {
        let mut m = Message::new(rand::random(), MessageType::Query, OpCode::Query);
        m.add_query(Query::query(Name::from_ascii(name).expect("name"), RecordType::A));
        let sock = tokio::net::UdpSocket::bind("127.0.125.2:0").await.expect("bind");
        sock.send_to(&m.to_vec().expect("encode"), "127.0.125.2:8600").await.expect("send");
        let mut buf = vec![0u8; 4096];
        let (n, _) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf))
            .await
            .expect("answer")
            .expect("recv");
        Message::from_vec(&buf[..n]).expect("decode").answers.len()
    };
    // Wait until both services are in the catalog (they are, for the management token).
    wait_for(Duration::from_secs(10), "services in the catalog", || async {
        let (_, b) = req(&a, "GET", "/v1/catalog/services", Some(MGMT), None).await;
        (b.contains("web") && b.contains("db")).then_some(())
    })
    .await;
    assert_eq!(dns("web.service.consul.").await, 0, "the anonymous token may not read web");
    // With the DNS token set to the web reader: web answers, db does not.
    let body = serde_json::json!({"Token": web}).to_string();
    assert_eq!(req(&a, "PUT", "/v1/agent/token/dns", Some(MGMT), Some(&body)).await.0, 200);
    assert_eq!(dns("web.service.consul.").await, 1);
    assert_eq!(dns("db.service.consul.").await, 0);
    // Setting agent tokens needs acl:write.
    assert_eq!(req(&a, "PUT", "/v1/agent/token/dns", Some(&web), Some(&body)).await.0, 403);
}

#[tokio::test]
async fn a_client_agent_syncs_only_what_its_agent_token_allows_and_forwards_callers_tokens() {
    let ds = tempfile::tempdir().expect("tempdir");
    let scfg = acl_config(ds.path(), serde_json::json!({}));
    let server = TestAgent::member("127.0.125.3", Some(1), &[], &[&scfg]);
    ready_acl(&server).await;
    let t = token_with(&server, "app-read", r#"key_prefix "app/" { policy = "read" }"#).await;
    assert_eq!(req(&server, "PUT", "/v1/kv/app/x", Some(MGMT), Some("v")).await.0, 200);

    // The client starts with an agent token that may not write its node.
    let dc = tempfile::tempdir().expect("tempdir");
    let weak = token_with(&server, "weak", r#"node_prefix "" { policy = "read" }"#).await;
    let ccfg = acl_config(dc.path(), serde_json::json!({"tokens": {"agent": weak}}));
    // Its node meta is what only its own sync writes (the leader registers members itself).
    let client = TestAgent::member("127.0.125.4", None, &["127.0.125.3"], &[&ccfg, "-node-meta=role:edge"]);
    let client_node = "node-127-0-125-4";
    wait_for(Duration::from_secs(30), "the client's sync refused", || async {
        client
            .log()
            .contains("blocked by ACLs")
            .then_some(())
            .or_else(|| client.log().contains("Permission denied").then_some(()))
    })
    .await;
    let (_, node) = req(&server, "GET", &format!("/v1/catalog/node/{client_node}"), Some(MGMT), None).await;
    assert!(!node.contains("edge"), "the refused sync wrote nothing: {node}");
    // The client's own writes (via /rpc/apply) are what its agent token governs; and an HTTP
    // caller needs service:write to register a service at all.
    let body = serde_json::json!({"Name": "cweb", "Port": 81}).to_string();
    let (code, answer) = req(&client, "PUT", "/v1/agent/service/register", Some(&weak), Some(&body)).await;
    assert_eq!(code, 403, "registering needs service:write: {answer}");

    // Forwarded reads carry the caller's token; the server decides.
    assert_eq!(req(&client, "GET", "/v1/kv/app/x?raw", Some(&t), None).await, (200, "v".to_string()));
    assert_eq!(req(&client, "GET", "/v1/kv/app/x", None, None).await.0, 403);
    assert_eq!(req(&client, "GET", "/v1/kv/app/x", Some("2d7f2b8e-0000-4000-8000-000000000000"), None).await.0, 403);

    // Give the client a token that may write its node and a service; it registers.
    let strong = {
        let body = serde_json::json!({
            "Description": "client agent",
            "NodeIdentities": [{"NodeName": client_node, "Datacenter": "dc1"}],
            "ServiceIdentities": [{"ServiceName": "cweb"}]
        })
        .to_string();
        let (code, t) = req(&server, "PUT", "/v1/acl/token", Some(MGMT), Some(&body)).await;
        assert_eq!(code, 200, "{t}");
        serde_json::from_str::<serde_json::Value>(&t).expect("json")["SecretID"].as_str().expect("secret").to_string()
    };
    let body = serde_json::json!({"Token": strong}).to_string();
    assert_eq!(req(&client, "PUT", "/v1/agent/token/agent", Some(MGMT), Some(&body)).await.0, 200);
    let reg = serde_json::json!({"Name": "cweb", "Port": 81}).to_string();
    let (code, answer) = req(&client, "PUT", "/v1/agent/service/register", Some(&strong), Some(&reg)).await;
    assert_eq!(code, 200, "{answer}");
    wait_for(Duration::from_secs(20), "cweb in the catalog", || async {
        let (_, b) = req(&server, "GET", "/v1/catalog/service/cweb", Some(MGMT), None).await;
        b.contains(client_node).then_some(())
    })
    .await;
    let (_, node) = req(&server, "GET", &format!("/v1/catalog/node/{client_node}"), Some(MGMT), None).await;
    assert!(node.contains(r#""role":"edge""#), "the node's own record is written now: {node}");
}
