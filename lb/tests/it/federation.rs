//! lb in front of dc1 of two real datacenters federated over WAN (one server each, the real
//! `agent` binary; skipped without it, as `real_agent.rs`): `Host: web.service.dc2.consul`
//! reaches dc2's passing instances through dc1's agent, and follows their health.

use crate::fake::{get, request, wait_for_async, Backend, Lb};
use crate::real_agent::agent_binary;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A server process, killed on drop; its output goes to `<dir>/<ip>.log`, printed on failure.
struct Server {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "--- last lines of {}\n{}",
                self.log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}

/// A single server of `dc` on `ip` (default ports), joining the WAN pool at `wan` if given.
fn server(bin: &Path, ip: &str, dc: &str, wan: Option<&str>, dir: &Path) -> Server {
    let log = dir.join(format!("{ip}.log"));
    let out = std::fs::File::create(&log).expect("log file");
    let err = out.try_clone().expect("log file");
    let mut cmd = Command::new(bin);
    cmd.args(["agent", "-server", "-bootstrap-expect=1", "-dns-port=-1", "-retry-interval=200ms"])
        .arg(format!("-datacenter={dc}"))
        .arg(format!("-node={dc}-server"))
        .arg(format!("-bind={ip}"))
        .arg(format!("-client={ip}"))
        .arg(format!("-data-dir={}", dir.join(ip).display()));
    if let Some(w) = wan {
        cmd.arg(format!("-retry-join-wan={w}"));
    }
    let child = cmd.stdout(Stdio::from(out)).stderr(Stdio::from(err)).spawn().expect("start agent");
    Server { child, addr: format!("{ip}:8500"), log }
}

async fn body_of(addr: &str, path: &str) -> String {
    let r = get(addr, None, path).await;
    if r.status == 200 {
        r.body
    } else {
        String::new()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_datacenters_service_is_reached_through_the_local_one() {
    let Some(bin) = agent_binary() else {
        eprintln!("skipped: no agent binary (build it or set LB_IT_AGENT)");
        return;
    };
    let ip = crate::net(180);
    let dir = tempfile::tempdir().expect("tempdir");
    let dc1 = server(&bin, &ip(11), "dc1", None, dir.path());
    let dc2 = server(&bin, &ip(21), "dc2", Some(&ip(11)), dir.path());
    for s in [&dc1, &dc2] {
        let addr = s.addr.clone();
        wait_for_async("a leader that registered itself", || {
            let addr = addr.clone();
            async move { body_of(&addr, "/v1/catalog/service/consul").await.contains("ServiceID") }
        })
        .await;
    }
    wait_for_async("dc1 to know dc2 over WAN", || async {
        body_of(&dc1.addr, "/v1/catalog/datacenters").await.contains("\"dc2\"")
    })
    .await;

    let web1 = Backend::start(&ip(31), "web1").await;
    let web2 = Backend::start(&ip(32), "web2").await;
    for (i, b) in [&web1, &web2].iter().enumerate() {
        let def = serde_json::json!({
            "ID": b.name, "Name": "web", "Address": b.ip, "Port": b.port, "Tags": ["v1"],
            "Check": {"CheckID": format!("ttl{}", i + 1), "TTL": "600s", "Status": "passing"},
        });
        let r = request("PUT", &dc2.addr, None, "/v1/agent/service/register", &def.to_string()).await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    wait_for_async("dc2's web to be visible from dc1 with ?dc=dc2", || async {
        let body = body_of(&dc1.addr, "/v1/health/service/web?passing&dc=dc2").await;
        serde_json::from_str::<Vec<serde_json::Value>>(&body).is_ok_and(|v| v.len() == 2)
    })
    .await;

    // lb knows only dc1's agent.
    let lb = Lb::start(&ip(1), std::slice::from_ref(&dc1.addr), Some("remote_wait = \"8s\"\n")).await;
    wait_for_async("lb to list dc1's agent", || async { lb.status().await["Datacenter"] == "dc1" }).await;

    // The first request waits for the watch lb starts for it; the next ones are routed at once.
    let r = get(&lb.addr, Some("web.service.dc2.consul"), "/first").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.starts_with("web"), "{r:?}");
    assert_eq!(r.header("x-seen-path"), "/first");
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let r = get(&lb.addr, Some("web.service.dc2.consul:88"), "/").await;
        assert_eq!(r.status, 200, "{r:?}");
        seen.insert(r.body);
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec!["web1", "web2"], "both of dc2's instances");
    let r = get(&lb.addr, Some("v1.web.service.dc2.consul"), "/").await;
    assert!(r.body.starts_with("web"), "{r:?}");
    let status = lb.status().await;
    assert_eq!(status["Datacenters"], serde_json::json!(["dc1", "dc2"]), "{status}");
    assert_eq!(status["WatchedDatacenters"], serde_json::json!(["dc2"]), "{status}");

    // What cannot be routed says why, as the local datacenter's misses do.
    let r = get(&lb.addr, Some("nope.service.dc2.consul"), "/").await;
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body.contains("service \"nope\" is not registered in datacenter \"dc2\""), "{r:?}");
    let r = get(&lb.addr, Some("web.service.dc9.consul"), "/").await;
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body.contains("datacenter \"dc9\" is not known"), "{r:?}");
    // dc1's own name still means dc1, where no web is registered.
    let r = get(&lb.addr, Some("web.service.dc1.consul"), "/").await;
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body.contains("service \"web\" is not registered"), "{r:?}");

    // Names that do not exist make lb watch nothing more: the routes and datacenters it watches
    // are those of the requests above.
    let routes = |status: &serde_json::Value| -> Vec<String> {
        let all = status["Routes"].as_array().cloned().unwrap_or_default();
        all.iter().filter_map(|r| r["Route"].as_str()).filter(|n| n.contains('@')).map(String::from).collect()
    };
    let before = routes(&lb.status().await);
    assert_eq!(before, vec!["service:v1.web@dc2", "service:web@dc2"]);
    for i in 0..50 {
        for host in [format!("x{i}.service.dc2.consul"), format!("web.service.dc{}.consul", i + 10)] {
            assert_eq!(get(&lb.addr, Some(&host), "/").await.status, 503, "{host}");
        }
    }
    let status = lb.status().await;
    assert_eq!(routes(&status), before, "{status}");
    assert_eq!(status["WatchedDatacenters"], serde_json::json!(["dc2"]), "{status}");

    // A check failing in dc2 takes its instance out of rotation (a blocking query over WAN).
    let r = request("PUT", &dc2.addr, None, "/v1/agent/check/fail/ttl1", "").await;
    assert_eq!(r.status, 200, "{r:?}");
    lb.wait_instances("service:web@dc2", 1).await;
    for _ in 0..4 {
        assert_eq!(get(&lb.addr, Some("web.service.dc2.consul"), "/").await.body, "web2");
    }
    let r = request("PUT", &dc2.addr, None, "/v1/agent/check/fail/ttl2", "").await;
    assert_eq!(r.status, 200, "{r:?}");
    lb.wait_instances("service:web@dc2", 0).await;
    let r = get(&lb.addr, Some("web.service.dc2.consul"), "/").await;
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body.contains("no healthy instance of service \"web\" in datacenter \"dc2\""), "{r:?}");

    let r = get(&lb.addr, None, "/_lb/metrics").await;
    assert!(r.body.contains("lb_requests_total{route=\"service:web@dc2\",code=\"200\"}"), "{}", r.body);

    // Unused, another datacenter's watches stop; the next request starts them again.
    let r = request("PUT", &dc2.addr, None, "/v1/agent/check/pass/ttl2", "").await;
    assert_eq!(r.status, 200, "{r:?}");
    let idle =
        Lb::start(&ip(2), std::slice::from_ref(&dc1.addr), Some("remote_idle = \"300ms\"\nremote_wait = \"8s\"\n"))
            .await;
    wait_for_async("the second lb to know dc2", || async {
        idle.status().await["Datacenters"] == serde_json::json!(["dc1", "dc2"])
    })
    .await;
    assert_eq!(get(&idle.addr, Some("web.service.dc2.consul"), "/").await.body, "web2");
    wait_for_async("the idle watches to stop", || async {
        let status = idle.status().await;
        routes(&status).is_empty() && status["WatchedDatacenters"] == serde_json::json!([])
    })
    .await;
    assert_eq!(get(&idle.addr, Some("web.service.dc2.consul"), "/").await.body, "web2");

    // A datacenter that cannot be reached is a 503 at once, not after `remote_wait` (8 s here),
    // to an lb that had not watched it yet.
    wait_for_async("the idle watches to stop again", || async {
        idle.status().await["WatchedDatacenters"] == serde_json::json!([])
    })
    .await;
    let mut dc2 = dc2;
    let _ = dc2.child.kill();
    let _ = dc2.child.wait();
    let started = std::time::Instant::now();
    let r = get(&idle.addr, Some("web.service.dc2.consul"), "/").await;
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body.contains("datacenter \"dc2\" did not answer"), "{r:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
    // An lb that had dc2's answers keeps routing by them, as it does when local agents fail.
    assert_eq!(get(&lb.addr, Some("web.service.dc2.consul"), "/").await.body, "web2");
}
