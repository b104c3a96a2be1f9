//! lb against the real `agent` binary in `-dev` mode, when one has been built
//! (`target/{release,debug}/agent`, or the path in `LB_IT_AGENT`); skipped otherwise, or when
//! `LB_IT_AGENT=none`.

use crate::fake::{get, request, Backend, Lb};
use crate::net;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn agent_binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("LB_IT_AGENT") {
        return (p != "none").then(|| PathBuf::from(p));
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("target");
    ["release", "debug"].iter().map(|p| root.join(p).join("agent")).find(|p| p.exists())
}

/// A `-dev` agent process, killed on drop.
struct DevAgent {
    child: std::process::Child,
    addr: String,
}

impl Drop for DevAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_dev_agent(bin: &PathBuf, ip: &str) -> DevAgent {
    let port = std::net::TcpListener::bind((ip, 0)).expect("probe port").local_addr().expect("addr").port();
    let child = std::process::Command::new(bin)
        .args(["agent", "-dev", "-node=lb-it"])
        .arg(format!("-client={ip}"))
        .arg(format!("-bind={ip}"))
        .arg(format!("-http-port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start agent");
    let agent = DevAgent { child, addr: format!("{ip}:{port}") };
    let addr = agent.addr.clone();
    crate::fake::wait_for_async("the agent to elect itself", || {
        let addr = addr.clone();
        async move {
            let r = get(&addr, None, "/v1/status/leader").await;
            r.status == 200 && r.body.trim() != "\"\""
        }
    })
    .await;
    agent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_agent_health_changes_reach_routing() {
    let Some(bin) = agent_binary() else {
        eprintln!("skipped: no agent binary (build it or set LB_IT_AGENT)");
        return;
    };
    let ip = net(69);
    let agent = start_dev_agent(&bin, &ip(11)).await;
    let web1 = Backend::start(&ip(21), "web1").await;
    let web2 = Backend::start(&ip(22), "web2").await;
    for (i, b) in [&web1, &web2].iter().enumerate() {
        let def = serde_json::json!({
            "ID": b.name, "Name": "web", "Address": b.ip, "Port": b.port,
            "Tags": ["urlprefix-/web strip=/web"],
            "Check": {"CheckID": format!("ttl{}", i + 1), "TTL": "600s", "Status": "passing"},
        });
        let r = request("PUT", &agent.addr, None, "/v1/agent/service/register", &def.to_string()).await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    // A short read timeout on the agent route: blocking queries must still get their wait.
    let config = "[agents]\nread_timeout = \"300ms\"\n";
    let lb = Lb::start(&ip(1), std::slice::from_ref(&agent.addr), Some(config)).await;
    lb.wait_instances("service:web", 2).await;

    let r = get(&lb.addr, Some("web.service.consul"), "/").await;
    assert!(r.body.starts_with("web"), "{r:?}");
    let r = get(&lb.addr, None, "/web/x").await;
    assert_eq!(r.header("x-seen-path"), "/x", "{r:?}");
    let r = get(&lb.addr, None, "/v1/status/leader").await;
    assert_eq!(r.status, 200, "{r:?}");

    // A blocking query through lb waits out its `wait` and answers.
    let r = get(&lb.addr, None, "/v1/catalog/services").await;
    let index = r.header("x-consul-index");
    let t = Instant::now();
    let r = get(&lb.addr, None, &format!("/v1/catalog/services?index={index}&wait=1s")).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(t.elapsed() >= Duration::from_millis(900), "did not block: {:?}", t.elapsed());

    let t0 = Instant::now();
    let r = request("PUT", &agent.addr, None, "/v1/agent/check/fail/ttl1", "").await;
    assert_eq!(r.status, 200, "{r:?}");
    lb.wait_instances("service:web", 1).await;
    let took = t0.elapsed();
    eprintln!("real agent: failing check → out of rotation in {took:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    for _ in 0..10 {
        assert_eq!(get(&lb.addr, Some("web.service.consul"), "/").await.body, "web2");
    }
}
