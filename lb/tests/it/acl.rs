//! lb in front of a real agent whose ACLs deny by default: with a token that may read services
//! and nodes (`-consul-token`, or `consul_token_file` in its config file) it routes
//! `Host: web.service.consul`; without one the agent shows it nothing, so the service is unknown
//! (503). lb's token is its own: proxied requests carry only what the client sent.
//! Addresses 127.0.140.31-127.0.140.39.

use crate::fake::{get, request, wait_for_async, Backend, Lb};
use crate::real_agent::agent_binary;
use std::path::Path;

const MGMT: &str = "3d1f06a8-8a4b-4a5e-9d55-7f0f1b2c3d4e";

/// A `-dev` agent with ACLs on, default deny and a management token; killed on drop.
struct AclAgent {
    child: std::process::Child,
    addr: String,
}

impl Drop for AclAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_acl_agent(bin: &Path, ip: &str, dir: &Path) -> AclAgent {
    let config = dir.join("acl.json");
    let acl = serde_json::json!({"acl": {"enabled": true, "default_policy": "deny",
                                          "tokens": {"initial_management": MGMT}}});
    std::fs::write(&config, acl.to_string()).expect("write config");
    let child = std::process::Command::new(bin)
        .args(["agent", "-dev", "-node=lb-acl", "-dns-port=-1"])
        .arg(format!("-client={ip}"))
        .arg(format!("-bind={ip}"))
        .arg(format!("-config-file={}", config.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start agent");
    let agent = AclAgent { child, addr: format!("{ip}:8500") };
    let addr = agent.addr.clone();
    wait_for_async("the agent to elect and register itself", || {
        let addr = addr.clone();
        async move {
            let r = get(&addr, None, &format!("/v1/catalog/service/consul?token={MGMT}")).await;
            r.status == 200 && r.body.contains("ServiceID")
        }
    })
    .await;
    agent
}

/// A PUT with the management token, which must succeed; its JSON answer.
async fn put_mgmt(addr: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
    let r = request("PUT", addr, None, &format!("{path}?token={MGMT}"), &body.to_string()).await;
    assert_eq!(r.status, 200, "PUT {path}: {r:?}");
    serde_json::from_str(&r.body).unwrap_or(serde_json::Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_token_keeps_routing_and_without_one_the_service_is_unknown() {
    let Some(bin) = agent_binary() else {
        eprintln!("skipped: no agent binary (build it or set LB_IT_AGENT)");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = start_acl_agent(&bin, "127.0.140.31", dir.path()).await;
    let web1 = Backend::start("127.0.140.32", "web1").await;
    let web2 = Backend::start("127.0.140.33", "web2").await;
    for (i, b) in [&web1, &web2].iter().enumerate() {
        let def = serde_json::json!({
            "ID": b.name, "Name": "web", "Address": b.ip, "Port": b.port,
            "Check": {"CheckID": format!("ttl{}", i + 1), "TTL": "600s", "Status": "passing"},
        });
        put_mgmt(&agent.addr, "/v1/agent/service/register", def).await;
    }
    put_mgmt(
        &agent.addr,
        "/v1/acl/policy",
        serde_json::json!({"Name": "lb-read",
                           "Rules": "service_prefix \"\" { policy = \"read\" }\nnode_prefix \"\" { policy = \"read\" }"}),
    )
    .await;
    let token = put_mgmt(&agent.addr, "/v1/acl/token", serde_json::json!({"Policies": [{"Name": "lb-read"}]})).await;
    let secret = token["SecretID"].as_str().expect("SecretID").to_string();

    // The token as a flag.
    let flag = format!("-consul-token={secret}");
    let port = std::net::TcpListener::bind(("127.0.140.34", 0)).expect("probe port").local_addr().expect("addr").port();
    let with_flag = Lb::spawn(&format!("127.0.140.34:{port}"), std::slice::from_ref(&agent.addr), None, &[&flag]);
    with_flag.wait_ready().await;
    with_flag.wait_instances("service:web", 2).await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let r = get(&with_flag.addr, Some("web.service.consul"), "/").await;
        assert_eq!(r.status, 200, "{r:?}");
        seen.insert(r.body);
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["web1", "web2"]);
    // Health changes still reach routing through the token's watches.
    let r = request("PUT", &agent.addr, None, &format!("/v1/agent/check/fail/ttl1?token={MGMT}"), "").await;
    assert_eq!(r.status, 200, "{r:?}");
    with_flag.wait_instances("service:web", 1).await;
    assert_eq!(get(&with_flag.addr, Some("web.service.consul"), "/").await.body, "web2");
    // Proxied requests carry what the client sent, never lb's token.
    let r = get(&with_flag.addr, Some("lb"), "/v1/catalog/service/web").await;
    let seen: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
    assert_eq!((r.status, seen), (200, serde_json::json!([])), "the anonymous token sees nothing: {r:?}");

    // The token from a file named in lb's config file.
    let token_file = dir.path().join("lb-token");
    std::fs::write(&token_file, format!("{secret}\n")).expect("token file");
    let config = format!("consul_token_file = {:?}\n", token_file.display().to_string());
    let with_file = Lb::start("127.0.140.35", std::slice::from_ref(&agent.addr), Some(&config)).await;
    with_file.wait_instances("service:web", 1).await;
    assert_eq!(get(&with_file.addr, Some("web.service.consul"), "/").await.body, "web2");

    // No token: the agent filters everything away, so lb knows no service.
    let without = Lb::start("127.0.140.36", std::slice::from_ref(&agent.addr), None).await;
    let addr = without.addr.clone();
    wait_for_async("a routing table built from the agent's (empty) answers", || {
        let addr = addr.clone();
        async move {
            let r = get(&addr, None, "/_lb/status").await;
            let status: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
            status["Version"].as_u64().is_some_and(|v| v > 0)
        }
    })
    .await;
    let r = get(&without.addr, Some("web.service.consul"), "/").await;
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body.contains("service \"web\" is not registered"), "{r:?}");
}
