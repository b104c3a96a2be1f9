//! Real multi-agent clusters: servers forming Raft through gossip, clients joining, and faults
//! injected by SIGKILL and SIGSTOP. Each test owns a 127.0.10x.0/24 network; every agent uses the
//! default ports on its own address, as agents on different hosts do.

use crate::harness::{json, text, wait_for, TestAgent};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(60);

fn net(n: u8) -> impl Fn(u8) -> String {
    move |host| format!("127.0.{n}.{host}")
}

/// The members this agent sees alive.
async fn alive(a: &TestAgent) -> Option<Vec<String>> {
    let r = a.client.request(api::client::Method::GET, "/v1/agent/members", None, Some(Duration::from_secs(5))).await;
    let v: serde_json::Value = serde_json::from_slice(&r.ok()?.body).ok()?;
    let mut names: Vec<String> = v
        .as_array()?
        .iter()
        .filter(|m| m["Status"] == 1)
        .filter_map(|m| m["Name"].as_str().map(str::to_string))
        .collect();
    names.sort();
    Some(names)
}

async fn wait_members(agents: &[&TestAgent], n: usize) {
    for a in agents {
        wait_for(LONG, &format!("{} to see {n} alive members", a.ip), || async {
            alive(a).await.filter(|m| m.len() == n).map(|_| ())
        })
        .await;
    }
}

/// The leader's RPC address as this agent reports it ("" while there is none).
async fn leader(a: &TestAgent) -> Option<String> {
    let r = a.client.request(api::client::Method::GET, "/v1/status/leader", None, Some(Duration::from_secs(5))).await;
    serde_json::from_slice::<String>(&r.ok()?.body).ok()
}

async fn wait_leader(servers: &[&TestAgent], not: Option<&str>) -> String {
    wait_for(LONG, "one leader all servers agree on", || async {
        let mut seen = Vec::new();
        for s in servers {
            seen.push(leader(s).await?);
        }
        let first = seen[0].clone();
        let agreed = !first.is_empty() && seen.iter().all(|l| *l == first) && Some(first.as_str()) != not;
        agreed.then_some(first)
    })
    .await
}

async fn put_ok(a: &TestAgent, key: &str, value: &str) -> bool {
    let r = a
        .client
        .request(
            api::client::Method::PUT,
            &format!("/v1/kv/{key}"),
            Some(value.to_string().into()),
            Some(Duration::from_secs(10)),
        )
        .await;
    r.is_ok_and(|r| r.status == 200 && r.body.as_ref() == b"true")
}

async fn raw(a: &TestAgent, path: &str) -> Option<String> {
    let r = a.client.request(api::client::Method::GET, path, None, Some(Duration::from_secs(5))).await.ok()?;
    (r.status == 200).then(|| String::from_utf8_lossy(&r.body).to_string())
}

/// The A records a DNS server gives for `name` (over UDP).
async fn dns_a(server: &str, name: &str) -> Option<Vec<String>> {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RData, RecordType};
    let mut q = Message::query();
    q.add_query(Query::query(Name::from_ascii(name).ok()?, RecordType::A));
    let sock = tokio::net::UdpSocket::bind((server.split(':').next()?, 0)).await.ok()?;
    sock.send_to(&q.to_vec().ok()?, server).await.ok()?;
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf)).await.ok()?.ok()?;
    let m = Message::from_vec(&buf[..n]).ok()?;
    Some(
        m.answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0.to_string()),
                _ => None,
            })
            .collect(),
    )
}

fn by_rpc_addr<'a>(agents: &'a mut [TestAgent], addr: &str) -> &'a mut TestAgent {
    let ip = addr.split(':').next().unwrap_or_default().to_string();
    agents.iter_mut().find(|a| a.ip == ip).unwrap_or_else(|| panic!("no agent at {addr}"))
}

async fn raft_voters(a: &TestAgent) -> Option<Vec<(String, bool)>> {
    let v: serde_json::Value = serde_json::from_str(&raw(a, "/v1/operator/raft/configuration").await?).ok()?;
    Some(
        v["Servers"]
            .as_array()?
            .iter()
            .map(|s| (s["Address"].as_str().unwrap_or_default().to_string(), s["Voter"] == true))
            .collect(),
    )
}

/// Three servers expecting three, the second and third joining the first (`.1`, `.2`, `.3`).
fn three_servers(ip: &impl Fn(u8) -> String) -> Vec<TestAgent> {
    (1..4)
        .map(|h| {
            let seed = ip(1);
            let join: &[&str] = if h == 1 { &[] } else { &[seed.as_str()] };
            TestAgent::member(&ip(h), Some(3), join, &[])
        })
        .collect()
}

/// The seeds' walk-through: three servers (the second and third join the first), three clients
/// with -retry-join; everybody sees everybody; a write on one server is read on the others; the
/// leader dies and another takes over; the old leader comes back as a follower; a client's
/// service turns critical everywhere when its process stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walkthrough_three_servers_three_clients() {
    let ip = net(100);
    let mut servers = three_servers(&ip);
    let seeds = [ip(1), ip(2), ip(3)];
    let seeds: Vec<&str> = seeds.iter().map(String::as_str).collect();
    let clients: Vec<TestAgent> = (11..14).map(|h| TestAgent::member(&ip(h), None, &seeds, &[])).collect();
    let all: Vec<&TestAgent> = servers.iter().chain(clients.iter()).collect();
    wait_members(&all, 6).await;
    let first_leader = wait_leader(&servers.iter().collect::<Vec<_>>(), None).await;

    // Every member is in the catalog with serfHealth passing.
    wait_for(LONG, "six nodes with serfHealth passing", || async {
        let v: serde_json::Value = serde_json::from_str(&raw(&clients[0], "/v1/health/state/passing").await?).ok()?;
        let n = v.as_array()?.iter().filter(|c| c["CheckID"] == "serfHealth").count();
        (n == 6).then_some(())
    })
    .await;

    // `agent members` shows everybody with Consul's columns.
    let out = std::process::Command::new(crate::harness::bin())
        .args(["members", &format!("-http-addr={}:8500", ip(12))])
        .output()
        .expect("agent members");
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(table.starts_with("Node"), "{table}");
    assert_eq!(table.lines().filter(|l| l.contains(" alive ") && l.contains(" server ")).count(), 3, "{table}");
    assert_eq!(table.lines().filter(|l| l.contains(" alive ") && l.contains(" client ")).count(), 3, "{table}");

    // A user event fired on a client reaches every agent.
    assert_eq!(clients[0].put("/v1/event/fire/deploy", "v2").await.status, 200);
    for a in servers.iter().chain(clients.iter()) {
        let deadline = Instant::now() + LONG;
        loop {
            let list = raw(a, "/v1/event/list?name=deploy").await;
            let v: serde_json::Value = list.as_deref().and_then(|l| serde_json::from_str(l).ok()).unwrap_or_default();
            if v.as_array().is_some_and(|l| l.len() == 1) && v[0]["Payload"] == "djI=" {
                break;
            }
            assert!(Instant::now() < deadline, "the event never reached {}; last list: {list:?}", a.ip);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // A write on one server is read on the others and through a client.
    assert!(put_ok(&servers[0], "walk/one", "1").await);
    for a in servers.iter().skip(1).chain(clients.iter()) {
        assert_eq!(raw(a, "/v1/kv/walk/one?raw").await.as_deref(), Some("1"), "read on {}", a.ip);
    }
    wait_for(LONG, "the stale read on a follower to catch up", || async {
        (raw(&servers[2], "/v1/kv/walk/one?raw&stale").await.as_deref() == Some("1")).then_some(())
    })
    .await;

    // The leader dies: another is elected and writes succeed again.
    let killed_at = Instant::now();
    by_rpc_addr(&mut servers, &first_leader).kill9();
    let survivors: Vec<&TestAgent> =
        servers.iter().filter(|s| !first_leader.starts_with(&format!("{}:", s.ip))).collect();
    let second_leader = wait_leader(&survivors, Some(&first_leader)).await;
    wait_for(LONG, "a write after the failover", || async {
        put_ok(survivors[0], "walk/two", "2").await.then_some(())
    })
    .await;
    eprintln!("failover: {:?} from kill -9 to the first successful write", killed_at.elapsed());
    assert_eq!(raw(&clients[1], "/v1/kv/walk/two?raw").await.as_deref(), Some("2"));

    // The old leader comes back as a follower, catches up, and does not take leadership back.
    by_rpc_addr(&mut servers, &first_leader).respawn();
    let back = servers.iter().find(|s| first_leader.starts_with(&format!("{}:", s.ip))).expect("old leader");
    wait_for(LONG, "the old leader to rejoin and catch up", || async {
        (raw(back, "/v1/kv/walk/two?raw&stale").await.as_deref() == Some("2")).then_some(())
    })
    .await;
    assert_eq!(wait_leader(&servers.iter().collect::<Vec<_>>(), None).await, second_leader);

    // A client's service with a TCP check: critical everywhere once its process stops.
    let listener = std::net::TcpListener::bind((ip(11).as_str(), 0)).expect("bind service");
    let port = listener.local_addr().expect("addr").port();
    let body = format!(
        r#"{{"Name":"web","ID":"web-1","Port":{port},"Check":{{"TCP":"{}:{port}","Interval":"200ms"}}}}"#,
        ip(11)
    );
    assert_eq!(clients[0].put("/v1/agent/service/register", &body).await.status, 200);
    let passing = |a: &TestAgent| {
        let a = a.client.clone();
        async move {
            let r = a.request(api::client::Method::GET, "/v1/health/service/web?passing", None, None).await.ok()?;
            let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
            Some(v.as_array()?.len())
        }
    };
    for a in [&servers[0], &servers[1], &servers[2], &clients[2]] {
        wait_for(LONG, "web passing everywhere", || async { (passing(a).await? == 1).then_some(()) }).await;
    }
    drop(listener);
    for a in [&servers[0], &servers[1], &servers[2], &clients[1]] {
        wait_for(LONG, "web critical everywhere", || async { (passing(a).await? == 0).then_some(()) }).await;
    }
    let checks = json(&clients[2].get("/v1/health/checks/web").await);
    assert_eq!(checks[0]["Status"], "critical", "{checks}");
}

/// A client whose server dies moves to another server: its reads, writes and anti-entropy keep
/// working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_server_dies_moves_to_another() {
    let ip = net(101);
    let mut servers = three_servers(&ip);
    let client = TestAgent::member(&ip(11), None, &[&ip(1)], &["-dns-port=8600"]);
    wait_members(&[&servers[0], &servers[1], &servers[2], &client], 4).await;
    wait_leader(&servers.iter().collect::<Vec<_>>(), None).await;
    assert!(put_ok(&client, "c/before", "1").await);
    // Kill servers one at a time until the client's server is certainly among the dead; keep a
    // quorum by killing only one.
    servers[0].kill9();
    wait_for(LONG, "writes through the client after a server died", || async {
        put_ok(&client, "c/after", "2").await.then_some(())
    })
    .await;
    assert_eq!(raw(&client, "/v1/kv/c/after?raw").await.as_deref(), Some("2"));
    let body = r#"{"Name":"api","ID":"api-1","Port":9000}"#;
    assert_eq!(client.put("/v1/agent/service/register", body).await.status, 200);
    wait_for(LONG, "the client's service in the catalog", || async {
        let v: serde_json::Value = serde_json::from_str(&raw(&servers[1], "/v1/catalog/service/api").await?).ok()?;
        (v.as_array()?.len() == 1).then_some(())
    })
    .await;
    // The client has no catalog of its own: a server answers its DNS queries.
    let addrs = wait_for(LONG, "api.service.consul through the client's DNS", || async {
        let a = dns_a(&format!("{}:8600", ip(11)), "api.service.consul.").await?;
        (!a.is_empty()).then_some(a)
    })
    .await;
    assert_eq!(addrs, vec![ip(11)]);
    // The dead server is failed in gossip and critical in the catalog.
    wait_for(LONG, "the dead server's serfHealth critical", || async {
        let v: serde_json::Value = serde_json::from_str(&raw(&client, "/v1/health/state/critical").await?).ok()?;
        v.as_array()?
            .iter()
            .any(|c| c["CheckID"] == "serfHealth" && c["Node"] == format!("node-{}", ip(1).replace('.', "-")))
            .then_some(())
    })
    .await;
}

/// Five servers lose two: the three left keep a quorum and keep accepting writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_servers_survive_losing_two() {
    let ip = net(102);
    let mut servers: Vec<TestAgent> = (1..6)
        .map(|h| {
            let join = if h == 1 { vec![] } else { vec![ip(1)] };
            let join: Vec<&str> = join.iter().map(String::as_str).collect();
            TestAgent::member(&ip(h), Some(5), &join, &[])
        })
        .collect();
    wait_members(&servers.iter().collect::<Vec<_>>(), 5).await;
    let first = wait_leader(&servers.iter().collect::<Vec<_>>(), None).await;
    assert!(put_ok(&servers[0], "five/a", "1").await);
    // Kill the leader and one follower.
    let leader_ip = first.split(':').next().unwrap_or_default().to_string();
    let follower = servers.iter().position(|s| s.ip != leader_ip).expect("a follower");
    servers[follower].kill9();
    by_rpc_addr(&mut servers, &first).kill9();
    let alive: Vec<&TestAgent> = servers.iter().filter(|s| s.ip != leader_ip && s.ip != servers[follower].ip).collect();
    assert_eq!(alive.len(), 3);
    wait_leader(&alive, Some(&first)).await;
    wait_for(LONG, "a write with two of five servers dead", || async {
        put_ok(alive[0], "five/b", "2").await.then_some(())
    })
    .await;
    for a in &alive {
        assert_eq!(raw(a, "/v1/kv/five/b?raw").await.as_deref(), Some("2"));
    }
}

/// Every server killed, then all restarted from their data dirs: the cluster re-forms with its
/// data and without bootstrapping again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_cluster_restarts_from_its_data_dirs() {
    let ip = net(103);
    let mut servers = three_servers(&ip);
    wait_members(&servers.iter().collect::<Vec<_>>(), 3).await;
    wait_leader(&servers.iter().collect::<Vec<_>>(), None).await;
    for i in 0..20 {
        assert!(put_ok(&servers[i % 3], &format!("restart/{i}"), &format!("v{i}")).await);
    }
    for s in servers.iter_mut() {
        s.kill9();
    }
    for s in servers.iter_mut() {
        s.respawn();
    }
    wait_leader(&servers.iter().collect::<Vec<_>>(), None).await;
    for (i, s) in servers.iter().enumerate() {
        let keys = wait_for(LONG, "the keys back after the restart", || async {
            let v: serde_json::Value = serde_json::from_str(&raw(s, "/v1/kv/restart/?keys").await?).ok()?;
            Some(v.as_array()?.len())
        })
        .await;
        assert_eq!(keys, 20, "server {i}");
    }
    assert!(put_ok(&servers[1], "restart/after", "x").await);
    // A server that looked dead to the others during the restart may have been pruned and
    // re-added; it is a voter again after the stabilization time.
    wait_for(LONG, "three voters after the restart", || async {
        let voters = raft_voters(&servers[0]).await?;
        (voters.iter().filter(|(_, v)| *v).count() == 3).then_some(())
    })
    .await;
}

/// A server that joins a formed cluster enters as a non-voter and is promoted by autopilot once
/// it has been healthy for the stabilization time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_server_is_promoted_by_autopilot() {
    let ip = net(104);
    let servers = three_servers(&ip);
    wait_members(&servers.iter().collect::<Vec<_>>(), 3).await;
    wait_leader(&servers.iter().collect::<Vec<_>>(), None).await;
    let cfg = servers[0].put("/v1/operator/autopilot/configuration", r#"{"ServerStabilizationTime":"2s"}"#).await;
    assert_eq!(text(&cfg), "true");
    let fourth = TestAgent::member(&ip(4), Some(3), &[&ip(1)], &[]);
    let addr = format!("{}:8300", ip(4));
    let seen_as = wait_for(LONG, "the new server in the raft configuration", || async {
        let voters = raft_voters(&servers[0]).await?;
        voters.iter().find(|(a, _)| *a == addr).map(|(_, v)| *v)
    })
    .await;
    assert!(!seen_as, "a joining server starts as a non-voter");
    wait_for(LONG, "the new server promoted to voter", || async {
        let voters = raft_voters(&servers[0]).await?;
        voters.iter().any(|(a, v)| *a == addr && *v).then_some(())
    })
    .await;
    // The new server's own view follows once the promotion reaches its log.
    wait_for(LONG, "four peers in the new server's view", || async {
        let peers = json(&fourth.get("/v1/status/peers").await);
        (peers.as_array()?.len() == 4).then_some(())
    })
    .await;
}

/// A follower cut off (SIGSTOP) does not stop the cluster; healed (SIGCONT), it catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_cut_off_and_healed_catches_up() {
    let ip = net(105);
    let servers = three_servers(&ip);
    wait_members(&servers.iter().collect::<Vec<_>>(), 3).await;
    let leader_addr = wait_leader(&servers.iter().collect::<Vec<_>>(), None).await;
    let followers: Vec<&TestAgent> =
        servers.iter().filter(|s| !leader_addr.starts_with(&format!("{}:", s.ip))).collect();
    let (cut, other) = (followers[0], followers[1]);
    cut.signal("-STOP");
    for i in 0..10 {
        assert!(put_ok(other, &format!("cut/{i}"), "x").await, "write {i} while a follower is cut off");
    }
    cut.signal("-CONT");
    wait_for(LONG, "the healed follower to catch up", || async {
        let v: serde_json::Value = serde_json::from_str(&raw(cut, "/v1/kv/cut/?keys&stale").await?).ok()?;
        (v.as_array()?.len() == 10).then_some(())
    })
    .await;
}

/// With `-encrypt`, agents sharing the key form a cluster; an agent with another key cannot join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_encryption_keeps_out_agents_with_another_key() {
    let ip = net(106);
    let key = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=";
    let other = "Ep2Cq4Ft3bT1xZ6kJ9mN0pQrStUvWxYzAbCdEfGhIjk=";
    let server = TestAgent::member(&ip(1), Some(1), &[], &[&format!("-encrypt={key}")]);
    let friend = TestAgent::member(&ip(2), None, &[&ip(1)], &[&format!("-encrypt={key}")]);
    let stranger = TestAgent::member(&ip(3), None, &[&ip(1)], &[&format!("-encrypt={other}")]);
    wait_members(&[&server, &friend], 2).await;
    let info = json(&server.get("/v1/agent/self").await);
    assert_eq!(info["Stats"]["serf_lan"]["encrypted"], "true");
    // The stranger keeps trying (-retry-join every 200ms) and stays alone; nobody sees it.
    wait_for(LONG, "the stranger to have tried to join a few times", || async {
        (stranger.log().matches("join failed").count() >= 3).then_some(())
    })
    .await;
    assert_eq!(alive(&stranger).await.map(|m| m.len()), Some(1));
    assert_eq!(alive(&server).await.map(|m| m.len()), Some(2));
}
