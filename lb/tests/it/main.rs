//! Integration tests: the real `lb` binary against fake agents (a small hyper server answering
//! Consul's members, catalog and health endpoints with blocking queries) and small backends, all
//! on distinct loopback addresses with real sockets. Tests wait for conditions, never fixed sleeps.

mod acl;
mod fake;
mod fast_path;
mod federation;
mod real_agent;
mod refusals;
mod tls;

use fake::{get, Backend, Cluster, FakeAgent, Lb};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Each test gets its own 127.0.<n>.0/24 so tests can run in parallel.
pub(crate) fn net(n: u8) -> impl Fn(u8) -> String {
    move |host| format!("127.0.{n}.{host}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_prefix_and_falls_back_to_agents() {
    let ip = net(61);
    let cluster = Cluster::new();
    let agents = FakeAgent::start_many(&cluster, &[ip(11)]).await;
    let web1 = Backend::start(&ip(21), "web1").await;
    let web2 = Backend::start(&ip(22), "web2").await;
    let api1 = Backend::start(&ip(23), "api1").await;
    cluster.register("web", "web1", &web1, &["urlprefix-/web strip=/web"], 1);
    cluster.register("web", "web2", &web2, &["urlprefix-/web strip=/web"], 1);
    cluster.register("api", "api1", &api1, &["urlprefix-/api"], 1);
    let lb = Lb::start(&ip(1), &[agents[0].addr()], None).await;
    lb.wait_instances("service:web", 2).await;
    lb.wait_instances("service:api", 1).await;

    // Host routing, round-robin over both instances.
    let mut seen = HashMap::new();
    for _ in 0..10 {
        let r = get(&lb.addr, Some("web.service.consul"), "/hello").await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("x-seen-path"), "/hello");
        *seen.entry(r.body.clone()).or_insert(0) += 1;
    }
    assert_eq!(seen.get("web1"), Some(&5), "{seen:?}");
    assert_eq!(seen.get("web2"), Some(&5), "{seen:?}");
    let r = get(&lb.addr, Some("web.service.dc1.consul:88"), "/").await;
    assert_eq!(r.status, 200);

    // X-Forwarded-For carries the client address, appended to what the client sent.
    let r = get(&lb.addr, Some("api.service.consul"), "/").await;
    assert_eq!(r.body, "api1");
    assert!(r.header("x-seen-xff").starts_with("127.0.0.1"), "{r:?}");

    // urlprefix routes, with and without strip.
    let r = get(&lb.addr, Some("lb.example"), "/web/x?y=1").await;
    assert!(r.body.starts_with("web"), "{r:?}");
    assert_eq!(r.header("x-seen-path"), "/x?y=1");
    let r = get(&lb.addr, Some("lb.example"), "/api/users").await;
    assert_eq!((r.body.as_str(), r.header("x-seen-path").as_str()), ("api1", "/api/users"));

    // Everything else goes to an agent.
    let r = get(&lb.addr, Some("lb.example"), "/v1/status/leader").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, format!("\"agent {}\"", ip(11)));

    // Unknown and unhealthy services: 503 with a body that says why.
    let r = get(&lb.addr, Some("nope.service.consul"), "/").await;
    assert_eq!(r.status, 503);
    assert!(r.body.contains("service \"nope\" is not registered"), "{r:?}");

    // lb's own endpoints.
    let r = get(&lb.addr, None, "/_lb/status").await;
    assert_eq!(r.status, 200);
    let status: serde_json::Value = serde_json::from_str(&r.body).expect("status is JSON");
    assert!(status["Routes"].as_array().is_some_and(|a| a.len() >= 4), "{status}");
    let r = get(&lb.addr, None, "/_lb/metrics").await;
    assert!(r.body.contains("lb_requests_total{route=\"service:web\",code=\"200\"}"), "{}", r.body);
    assert!(r.body.contains("lb_request_duration_seconds_bucket"), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_check_leaves_rotation_within_milliseconds() {
    let ip = net(62);
    let cluster = Cluster::new();
    let agents = FakeAgent::start_many(&cluster, &[ip(11)]).await;
    let backends = [
        Backend::start(&ip(21), "web1").await,
        Backend::start(&ip(22), "web2").await,
        Backend::start(&ip(23), "web3").await,
    ];
    for b in &backends {
        cluster.register("web", &b.name, b, &["urlprefix-/w"], 1);
    }
    let lb = Lb::start(&ip(1), &[agents[0].addr()], None).await;
    lb.wait_instances("service:web", 3).await;

    let t0 = Instant::now();
    cluster.set_status("web2", "critical");
    lb.wait_instances("service:web", 2).await;
    let took = t0.elapsed();
    eprintln!("failing check → out of rotation in {took:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    for _ in 0..30 {
        let r = get(&lb.addr, Some("web.service.consul"), "/").await;
        assert_eq!(r.status, 200);
        assert_ne!(r.body, "web2");
    }

    // Back to passing: back in rotation.
    cluster.set_status("web2", "passing");
    lb.wait_instances("service:web", 3).await;

    // Nothing healthy: a 503 that says so.
    for b in ["web1", "web2", "web3"] {
        cluster.set_status(b, "critical");
    }
    lb.wait_instances("service:web", 0).await;
    let r = get(&lb.addr, Some("web.service.consul"), "/").await;
    assert_eq!(r.status, 503);
    assert!(r.body.contains("no healthy instance of service \"web\""), "{r:?}");
    // The prefix route stays, empty: a 503 rather than falling through to the agents.
    let r = get(&lb.addr, Some("lb"), "/w/x").await;
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body.contains("no healthy instance of route /w"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_and_client_affinity() {
    let ip = net(63);
    let cluster = Cluster::new();
    let agents = FakeAgent::start_many(&cluster, &[ip(11)]).await;
    let heavy = Backend::start(&ip(21), "heavy").await;
    let light = Backend::start(&ip(22), "light").await;
    cluster.register("web", "heavy", &heavy, &[], 3);
    cluster.register("web", "light", &light, &[], 1);
    let s1 = Backend::start(&ip(23), "s1").await;
    let s2 = Backend::start(&ip(24), "s2").await;
    let s3 = Backend::start(&ip(25), "s3").await;
    for b in [&s1, &s2, &s3] {
        cluster.register("sticky", &b.name, b, &[], 1);
    }
    let config = "[services.sticky]\npolicy = \"ip_hash\"\n";
    let lb = Lb::start(&ip(1), &[agents[0].addr()], Some(config)).await;
    lb.wait_instances("service:web", 2).await;
    lb.wait_instances("service:sticky", 3).await;

    let mut seen: HashMap<String, u32> = HashMap::new();
    for _ in 0..400 {
        let r = get(&lb.addr, Some("web.service.consul"), "/").await;
        *seen.entry(r.body).or_default() += 1;
    }
    assert_eq!(seen.get("heavy"), Some(&300), "{seen:?}");
    assert_eq!(seen.get("light"), Some(&100), "{seen:?}");

    let first = get(&lb.addr, Some("sticky.service.consul"), "/").await.body;
    for _ in 0..50 {
        assert_eq!(get(&lb.addr, Some("sticky.service.consul"), "/").await.body, first);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_connects_retry_elsewhere_and_bench_the_instance() {
    let ip = net(64);
    let cluster = Cluster::new();
    let agents = FakeAgent::start_many(&cluster, &[ip(11)]).await;
    let alive = Backend::start(&ip(21), "alive").await;
    let dead = Backend::start(&ip(22), "dead").await;
    cluster.register("web", "alive", &alive, &[], 1);
    cluster.register("web", "dead", &dead, &[], 1);
    let lb = Lb::start(&ip(1), &[agents[0].addr()], Some("[defaults]\nfail_timeout = \"30s\"\n")).await;
    lb.wait_instances("service:web", 2).await;
    dead.stop().await;

    // Consul still says "passing", but no request fails: the connect is retried on the other.
    for _ in 0..20 {
        let r = get(&lb.addr, Some("web.service.consul"), "/").await;
        assert_eq!((r.status, r.body.as_str()), (200, "alive"));
    }
    let status = lb.status().await;
    let web = fake::route(&status, "service:web");
    let benched: Vec<&serde_json::Value> =
        web["Instances"].as_array().into_iter().flatten().filter(|i| !i["BenchedForMs"].is_null()).collect();
    assert_eq!(benched.len(), 1, "{web}");
    assert_eq!(benched[0]["ID"], "dead");
    let metrics = get(&lb.addr, None, "/_lb/metrics").await.body;
    assert!(metrics.contains("lb_upstream_errors_total{route=\"service:web\",kind=\"connect\"} 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entry_point_keeps_answering_while_agents_die() {
    let ip = net(65);
    let cluster = Cluster::new();
    let agents = FakeAgent::start_many(&cluster, &[ip(11), ip(12), ip(13)]).await;
    let web1 = Backend::start(&ip(21), "web1").await;
    let web2 = Backend::start(&ip(22), "web2").await;
    cluster.register("web", "web1", &web1, &[], 1);
    cluster.register("web", "web2", &web2, &[], 1);
    // Only the first agent is given; the others are found from the members.
    let lb = Lb::start(&ip(1), &[agents[0].addr()], None).await;
    lb.wait_instances("agents", 3).await;
    lb.wait_instances("service:web", 2).await;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let lb_addr = lb.addr.clone();
    let load = tokio::spawn(async move {
        let (mut ok, mut failed) = (0u32, Vec::new());
        while !*stop_rx.borrow() {
            let r = get(&lb_addr, Some("lb"), "/v1/status/leader").await;
            if r.status == 200 {
                ok += 1;
            } else {
                failed.push(format!("{} {}", r.status, r.body));
            }
        }
        (ok, failed)
    });

    for (i, agent) in agents.iter().take(2).enumerate() {
        let before = cluster.requests();
        agent.kill().await;
        // Let plenty of traffic hit the dead agent's slot before gossip would notice.
        cluster.wait_requests(before + 50).await;
        cluster.set_member_status(&agent.ip, 4);
        lb.wait_instances("agents", 3 - i - 1).await;
    }
    // With two agents dead (the seed among them) discovery still follows health changes.
    cluster.set_status("web1", "critical");
    lb.wait_instances("service:web", 1).await;
    let before = cluster.requests();
    cluster.wait_requests(before + 50).await;

    stop_tx.send(true).expect("load task alive");
    let (ok, failed) = load.await.expect("load task");
    eprintln!("{ok} requests answered while agents died");
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert!(ok > 100);

    // The last agent dies too: a 502 that names what was tried, not a hang.
    agents[2].kill().await;
    let r = get(&lb.addr, Some("lb"), "/v1/status/leader").await;
    assert_eq!(r.status, 502, "{r:?}");
    assert!(r.body.contains("no instance of agent answered"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_is_passed_through() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ip = net(66);
    let cluster = Cluster::new();
    let agents = FakeAgent::start_many(&cluster, &[ip(11)]).await;
    // A raw backend: answers the upgrade with 101, then echoes bytes.
    let listener = tokio::net::TcpListener::bind((ip(21).as_str(), 0)).await.expect("bind ws backend");
    let port = listener.local_addr().expect("addr").port();
    let echo = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.expect("read request");
            assert!(n > 0, "closed before the request ended");
            head.extend_from_slice(&buf[..n]);
        }
        s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
            .await
            .expect("write 101");
        loop {
            let n = s.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            s.write_all(&buf[..n]).await.expect("echo");
        }
    });
    cluster.register_addr("ws", "ws1", &ip(21), port, &[], 1);
    let lb = Lb::start(&ip(1), &[agents[0].addr()], None).await;
    lb.wait_instances("service:ws", 1).await;

    let mut c = tokio::net::TcpStream::connect(&lb.addr).await.expect("connect lb");
    c.write_all(
        b"GET /chat HTTP/1.1\r\nHost: ws.service.consul\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .expect("send upgrade");
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = c.read(&mut buf).await.expect("read 101");
        assert!(n > 0, "lb closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&got));
    c.write_all(b"ping over the tunnel").await.expect("send frame");
    let mut echoed = vec![0u8; 20];
    c.read_exact(&mut echoed).await.expect("read echo");
    assert_eq!(&echoed, b"ping over the tunnel");
    drop(c);
    let _ = tokio::time::timeout(Duration::from_secs(5), echo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_cleartext_clients_are_routed_by_authority() {
    let ip = net(67);
    let cluster = Cluster::new();
    let agents = FakeAgent::start_many(&cluster, &[ip(11)]).await;
    let web1 = Backend::start(&ip(21), "web1").await;
    cluster.register("web", "web1", &web1, &[], 1);
    let lb = Lb::start(&ip(1), &[agents[0].addr()], None).await;
    lb.wait_instances("service:web", 1).await;

    // HTTP/2 with prior knowledge; `:authority` names the service, as a real h2 client sends it.
    let tcp = tokio::net::TcpStream::connect(&lb.addr).await.expect("connect lb");
    let (send, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(conn);
    let mut send = send.ready().await.expect("h2 ready");
    for path in ["/h2?x=1", "/again"] {
        let req = http::Request::get(format!("http://web.service.consul{path}")).body(()).expect("request");
        let (resp, _) = send.send_request(req, true).expect("send");
        let resp = resp.await.expect("h2 response");
        let status = resp.status();
        let seen = resp.headers().get("x-seen-path").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let mut body = resp.into_body();
        let mut bytes = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.expect("body chunk");
            let _ = body.flow_control().release_capacity(chunk.len());
            bytes.extend_from_slice(&chunk);
        }
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
        assert_eq!(bytes, b"web1");
        assert_eq!(seen, path);
    }

    // pingora reads h2 requests itself; the rules of the HTTP/1 heads apply to them too.
    let req = http::Request::get("http://web.service.consul/twice")
        .header("content-length", "0")
        .header("x-a", "1")
        .body(())
        .expect("request");
    let (mut parts, ()) = req.into_parts();
    parts.headers.append("content-length", http::HeaderValue::from_static("0"));
    let (resp, _) = send.send_request(http::Request::from_parts(parts, ()), true).expect("send");
    let resp = resp.await.expect("h2 response");
    assert_eq!(resp.status(), 400);
    let mut body = resp.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        bytes.extend_from_slice(&chunk.expect("body chunk"));
    }
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("400 Bad Request\nlb: two Content-Length headers"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_upgrade_hands_over_the_socket_without_failed_requests() {
    let ip = net(68);
    let cluster = Cluster::new();
    let agents = FakeAgent::start_many(&cluster, &[ip(11)]).await;
    let web1 = Backend::start(&ip(21), "web1").await;
    cluster.register("web", "web1", &web1, &[], 1);
    let mut old = Lb::start(&ip(1), &[agents[0].addr()], None).await;
    old.wait_instances("service:web", 1).await;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let addr = old.addr.clone();
    let load = tokio::spawn(async move {
        let (mut ok, mut failed) = (0u32, Vec::new());
        while !*stop_rx.borrow() {
            let r = get(&addr, Some("web.service.consul"), "/").await;
            if r.status == 200 {
                ok += 1;
            } else {
                failed.push(format!("{} {}", r.status, r.body));
            }
        }
        (ok, failed)
    });

    // pingora's upgrade: the new process waits on the upgrade socket, SIGQUIT makes the old one
    // send its listening sockets over and drain.
    let mut new = Lb::spawn(&old.addr, &[agents[0].addr()], None, &["-upgrade"]);
    old.signal("QUIT");
    // Handover, 5 s of serving with `Connection: close`, then the drain.
    let status = old.wait_exit(Duration::from_secs(30)).await;
    assert_exits_cleanly("the old lb", status, &old.stderr());
    new.wait_ready().await;
    new.wait_instances("service:web", 1).await;
    // Traffic keeps flowing through the new process.
    let r = get(&new.addr, Some("web.service.consul"), "/").await;
    assert_eq!(r.status, 200);

    stop_tx.send(true).expect("load task alive");
    let (ok, failed) = load.await.expect("load task");
    eprintln!("{ok} requests answered across the upgrade");
    assert!(failed.is_empty(), "failed requests: {failed:?}");

    // The new process, whose workers all listen on the inherited socket, also stops cleanly.
    new.signal("TERM");
    let status = new.wait_exit(Duration::from_secs(30)).await;
    assert_exits_cleanly("the new lb", status, &new.stderr());
}

/// Exit status 0 and no abort. Several workers closing the one listening fd made a debug build
/// abort with "IO Safety violation" (and a release build close a stranger's fd).
fn assert_exits_cleanly(who: &str, status: std::process::ExitStatus, stderr: &str) {
    assert!(!stderr.contains("IO Safety"), "{who} closed an fd it did not own ({status}):\n{stderr}");
    assert!(!stderr.contains("panicked"), "{who} panicked ({status}):\n{stderr}");
    assert!(status.success(), "{who} exited with {status}:\n{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_agent_costs_a_read_timeout_not_a_failed_request() {
    let ip = net(70);
    let cluster = Cluster::new();
    let agents = FakeAgent::start_many(&cluster, &[ip(11), ip(12)]).await;
    let config = "[agents]\nread_timeout = \"300ms\"\nfail_timeout = \"30s\"\n";
    let lb = Lb::start(&ip(1), &[agents[0].addr(), agents[1].addr()], Some(config)).await;
    lb.wait_instances("agents", 2).await;

    agents[1].pause();
    let t0 = Instant::now();
    for _ in 0..20 {
        let r = get(&lb.addr, Some("lb"), "/v1/status/leader").await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body, format!("\"agent {}\"", ip(11)));
    }
    // At most one request waited out the timeout: the paused agent is benched after it.
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(3), "took {took:?}");
    let status = lb.status().await;
    let benched: Vec<&serde_json::Value> = fake::route(&status, "agents")["Instances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| !i["BenchedForMs"].is_null())
        .collect();
    assert_eq!(benched.len(), 1, "{status}");
    assert_eq!(benched[0]["Address"], agents[1].addr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_route_options_from_the_config_file() {
    let ip = net(160);
    let cluster = Cluster::new();
    let agents = FakeAgent::start_many(&cluster, &[ip(111)]).await;
    let web1 = Backend::start(&ip(121), "web1").await;
    let web2 = Backend::start(&ip(122), "web2").await;
    cluster.register("web", "web1", &web1, &[], 1);
    cluster.register("web", "web2", &web2, &[], 1);
    let mut lb = Lb::start(&ip(101), &[agents[0].addr()], Some("[services.web]\npolicy = \"round_robin\"\n")).await;
    lb.wait_instances("service:web", 2).await;
    assert_eq!(fake::route(&lb.status().await, "service:web")["Policy"], "round_robin");
    let mut seen = HashMap::new();
    for _ in 0..10 {
        *seen.entry(get(&lb.addr, Some("web.service.consul"), "/").await.body).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "round_robin uses both instances: {seen:?}");

    // A new policy takes effect on SIGHUP, without a restart and with the instances kept.
    lb.write_config("[services.web]\npolicy = \"ip_hash\"\n");
    lb.signal("HUP");
    let addr = lb.addr.clone();
    fake::wait_for_async("the reloaded policy in /_lb/status", || {
        let addr = addr.clone();
        async move {
            let r = get(&addr, None, "/_lb/status").await;
            let status: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
            status["Routes"]
                .as_array()
                .is_some_and(|rs| rs.iter().any(|r| r["Route"] == "service:web" && r["Policy"] == "ip_hash"))
        }
    })
    .await;
    let first = get(&lb.addr, Some("web.service.consul"), "/").await.body;
    for _ in 0..10 {
        assert_eq!(get(&lb.addr, Some("web.service.consul"), "/").await.body, first, "ip_hash sticks");
    }

    // A broken file is refused: the running config stays and so does the process. Discovery
    // rebuilds the table after any reload attempt, so a new version means it was read.
    let version = lb.status().await["Version"].as_u64().expect("Version");
    lb.write_config("[services.web]\npolicy = \"fastest\"\n");
    lb.signal("HUP");
    let addr = lb.addr.clone();
    fake::wait_for_async("a rebuild after the failed reload", || {
        let addr = addr.clone();
        async move {
            let r = get(&addr, None, "/_lb/status").await;
            let status: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
            status["Version"].as_u64().is_some_and(|v| v > version)
        }
    })
    .await;
    assert!(!lb.exited(), "lb exited on a broken config file");
    assert_eq!(fake::route(&lb.status().await, "service:web")["Policy"], "ip_hash");
    assert_eq!(get(&lb.addr, Some("web.service.consul"), "/").await.status, 200);
}
