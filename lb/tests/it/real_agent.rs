//! lb against the real `agent` binary in `-dev` mode, when one has been built
//! (`target/{release,debug}/agent`, or the path in `LB_IT_AGENT`); skipped otherwise, or when
//! `LB_IT_AGENT=none`.

use crate::fake::{get, request, Backend, Lb};
use crate::net;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub(crate) fn agent_binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("LB_IT_AGENT") {
        return (p != "none").then(|| PathBuf::from(p));
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("target");
    // The newest build: a release binary left from an older checkout must not stand in for
    // the debug one `cargo test` just made.
    ["release", "debug"]
        .iter()
        .map(|p| root.join(p).join("agent"))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .max_by_key(|(t, _)| *t)
        .map(|(_, p)| p)
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
    // Up once it leads and has registered itself (the `consul` service) in the catalog.
    crate::fake::wait_for_async("the agent to elect and register itself", || {
        let addr = addr.clone();
        async move {
            let r = get(&addr, None, "/v1/catalog/service/consul").await;
            r.status == 200 && r.body.contains("ServiceID")
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
    for _ in 0..10 {
        assert_eq!(get(&lb.addr, Some("web.service.consul"), "/").await.body, "web2");
    }
}

/// A server of a real three-server cluster (Raft multiplier 1, fast gossip), killed on drop.
fn start_server(bin: &PathBuf, ip: &str, seed: &str, dir: &std::path::Path) -> DevAgent {
    let config = dir.join(format!("{ip}.json"));
    std::fs::write(
        &config,
        r#"{"performance": {"raft_multiplier": 1},
            "gossip_lan": {"probe_interval": "300ms", "probe_timeout": "200ms", "gossip_interval": "50ms"}}"#,
    )
    .expect("config");
    let child = std::process::Command::new(bin)
        .args(["agent", "-server", "-bootstrap-expect=3", "-dns-port=-1", "-retry-interval=200ms"])
        .arg(format!("-node=lb-{ip}"))
        .arg(format!("-bind={ip}"))
        .arg(format!("-client={ip}"))
        .arg(format!("-retry-join={seed}"))
        .arg(format!("-data-dir={}", dir.join(ip).display()))
        .arg(format!("-config-file={}", config.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start agent");
    DevAgent { child, addr: format!("{ip}:8500") }
}

/// The entry point over a real cluster: lb is given one agent, finds the others from the members,
/// and keeps answering while servers are killed one by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_cluster_entry_point_survives_agents_dying() {
    let Some(bin) = agent_binary() else {
        eprintln!("skipped: no agent binary (build it or set LB_IT_AGENT)");
        return;
    };
    let ip = net(71);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agents: Vec<DevAgent> = (11..14).map(|h| start_server(&bin, &ip(h), &ip(11), dir.path())).collect();
    for a in &agents {
        let addr = a.addr.clone();
        crate::fake::wait_for_async("a leader everywhere", || {
            let addr = addr.clone();
            async move {
                let r = get(&addr, None, "/v1/status/leader").await;
                r.status == 200 && r.body.contains(":8300")
            }
        })
        .await;
    }
    let lb = Lb::start(&ip(1), std::slice::from_ref(&agents[0].addr), None).await;
    lb.wait_instances("agents", 3).await;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let lb_addr = lb.addr.clone();
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let count = answered.clone();
    let load = tokio::spawn(async move {
        let mut failed = Vec::new();
        while !*stop_rx.borrow() {
            // Answered by whichever agent lb picks, from its own state.
            let r = get(&lb_addr, Some("lb"), "/v1/agent/self").await;
            if r.status == 200 {
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            } else {
                failed.push(format!("{} {}", r.status, r.body));
            }
        }
        failed
    });
    let served = || answered.load(std::sync::atomic::Ordering::Relaxed);
    // Kill the seed first (the only agent lb was given), then another.
    for n in [0usize, 1] {
        let _ = agents[n].child.kill();
        let _ = agents[n].child.wait();
        lb.wait_instances("agents", 2 - n).await;
    }
    let after_kills = served();
    crate::fake::wait_for_async("traffic after the kills", || async { served() > after_kills + 50 }).await;
    stop_tx.send(true).expect("load task alive");
    let failed = load.await.expect("load task");
    let ok = served();
    eprintln!("real cluster: {ok} requests answered while two of three agents died");
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert!(ok > 50, "{ok}");
    let r = get(&lb.addr, Some("lb"), "/v1/agent/self").await;
    assert!(r.body.contains(&ip(13)), "the survivor answers: {r:?}");
    drop(agents.pop());
}
