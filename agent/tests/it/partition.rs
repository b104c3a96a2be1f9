//! Raft under partitions (issue 13), on real processes and a real firewall: each server runs as
//! its own group, and a partition is iptables rules dropping what one server's sockets send to
//! another's address (`-m owner --gid-owner G -d IP -j DROP`), both ways, UDP gossip included.
//! Each test owns a 127.0.13x.0/24 network and an iptables chain named after it, removed when
//! the test ends. Needs root and iptables (`scripts/setup.sh` installs it).

use crate::harness::{json, text, wait_for, TestAgent};
use std::process::Command;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(60);

fn net(n: u8) -> impl Fn(u8) -> String {
    move |host| format!("127.0.{n}.{host}")
}

/// The group an agent on `ip` runs as: unique per address.
fn gid_of(ip: &str) -> u32 {
    let o: Vec<u32> = ip.split('.').filter_map(|p| p.parse().ok()).collect();
    200_000 + o[2] * 256 + o[3]
}

/// A test's firewall: one iptables chain hooked into OUTPUT, flushed to heal, removed on drop.
pub struct Net {
    chain: String,
}

fn iptables(args: &[&str]) -> bool {
    let status = Command::new("iptables").arg("-w").args(args).stderr(std::process::Stdio::null()).status();
    status.is_ok_and(|s| s.success())
}

impl Net {
    pub fn new(n: u8) -> Net {
        let chain = format!("it-net-{n}");
        // Left over from an interrupted run: start clean.
        while iptables(&["-D", "OUTPUT", "-j", &chain]) {}
        let _ = iptables(&["-F", &chain]);
        let _ = iptables(&["-X", &chain]);
        assert!(
            iptables(&["-N", &chain]) && iptables(&["-I", "OUTPUT", "-j", &chain]),
            "partition tests need root and iptables (scripts/setup.sh installs it)"
        );
        Net { chain }
    }

    /// Drops everything `a` and `b` send each other, both ways.
    pub fn cut(&self, a: &TestAgent, b: &TestAgent) {
        for (from, to) in [(a, b), (b, a)] {
            let gid = from.gid.expect("a partitioned agent runs as its own group").to_string();
            let ok = iptables(&["-A", &self.chain, "-m", "owner", "--gid-owner", &gid, "-d", &to.ip, "-j", "DROP"]);
            assert!(ok, "iptables rule for {} -> {}", from.ip, to.ip);
        }
    }

    /// Cuts `one` off from every agent in `others`.
    pub fn isolate(&self, one: &TestAgent, others: &[&TestAgent]) {
        for o in others {
            self.cut(one, o);
        }
    }

    pub fn heal(&self) {
        assert!(iptables(&["-F", &self.chain]), "flushing {}", self.chain);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        while iptables(&["-D", "OUTPUT", "-j", &self.chain]) {}
        let _ = iptables(&["-F", &self.chain]);
        let _ = iptables(&["-X", &self.chain]);
    }
}

/// Three servers expecting three, each as its own group, the others joining the first.
fn three_servers(ip: &impl Fn(u8) -> String, extra: &[&str]) -> Vec<TestAgent> {
    (1..4)
        .map(|h| {
            let join: Vec<String> = (1..4).filter(|o| *o != h).map(ip).collect();
            let join: Vec<&str> = join.iter().map(String::as_str).collect();
            TestAgent::member_as(&ip(h), Some(3), &join, extra, Some(gid_of(&ip(h))))
        })
        .collect()
}

async fn get(a: &TestAgent, path: &str, timeout: Duration) -> Option<api::client::Response> {
    a.client.request(api::client::Method::GET, path, None, Some(timeout)).await.ok()
}

/// The leader's RPC address as this agent reports it ("" while there is none).
async fn leader(a: &TestAgent) -> Option<String> {
    serde_json::from_slice::<String>(&get(a, "/v1/status/leader", Duration::from_secs(5)).await?.body).ok()
}

async fn wait_leader(servers: &[&TestAgent], not: Option<&str>) -> String {
    wait_for(LONG, "one leader all these servers agree on", || async {
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

fn ip_of(addr: &str) -> &str {
    addr.split(':').next().unwrap_or_default()
}

async fn put(a: &TestAgent, key: &str, value: &str, timeout: Duration) -> bool {
    let r = a
        .client
        .request(api::client::Method::PUT, &format!("/v1/kv/{key}"), Some(value.to_string().into()), Some(timeout))
        .await;
    r.is_ok_and(|r| r.status == 200 && r.body.as_ref() == b"true")
}

/// (address, voter) of every server in this agent's Raft configuration.
async fn raft_servers(a: &TestAgent) -> Option<Vec<(String, bool)>> {
    let r = get(a, "/v1/operator/raft/configuration?stale", Duration::from_secs(5)).await?;
    let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
    Some(
        v["Servers"]
            .as_array()?
            .iter()
            .map(|s| (s["Address"].as_str().unwrap_or_default().to_string(), s["Voter"] == true))
            .collect(),
    )
}

async fn raft_term(a: &TestAgent) -> Option<u64> {
    let v = json(&get(a, "/v1/agent/self", Duration::from_secs(5)).await?);
    v["Stats"]["raft"]["term"].as_str()?.parse().ok()
}

/// Cut the leader of three servers off from the other two: the two elect a new leader and take
/// a write; the old leader stops acting as leader once its lease has run out, with
/// `X-Consul-KnownLeader` and `X-Consul-LastContact` telling the truth, and never answers a
/// default read with the old value after the new one was written. Healed, it follows the new
/// leader without an election.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_stops_answering_as_leader_when_its_lease_runs_out() {
    let ip = net(130);
    let fw = Net::new(130);
    let servers = three_servers(&ip, &[]);
    let all: Vec<&TestAgent> = servers.iter().collect();
    let old = wait_leader(&all, None).await;
    let l = servers.iter().find(|s| s.ip == ip_of(&old)).expect("the leader is one of ours");
    let others: Vec<&TestAgent> = servers.iter().filter(|s| s.ip != l.ip).collect();
    assert!(put(l, "k", "v1", Duration::from_secs(10)).await);
    for s in &all {
        wait_for(LONG, "k=v1 everywhere", || async {
            let r = get(s, "/v1/kv/k?raw&stale", Duration::from_secs(5)).await?;
            (r.body.as_ref() == b"v1").then_some(())
        })
        .await;
    }

    let cut_at = Instant::now();
    fw.isolate(l, &others);
    let new = wait_leader(&others, Some(&old)).await;
    let elected_after = cut_at.elapsed();
    assert!(put(others[0], "k", "v2", Duration::from_secs(10)).await, "a write through the majority side");
    let written_at = Instant::now();

    // The old leader's log says it stepped down while the partition still holds.
    wait_for(LONG, "the old leader to log that it lost leadership", || async {
        l.log().contains("cluster leadership lost").then_some(())
    })
    .await;
    assert_eq!(leader(l).await.as_deref(), Some(""), "the cut-off server names no leader");

    // Reads every half second for 8 seconds, each waiting out the hold time as Consul's do:
    // none may answer the overwritten value.
    let reads: Vec<_> = (0..16)
        .map(|i| {
            let client = l.client.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(500) * i).await;
                client.request(api::client::Method::GET, "/v1/kv/k?raw", None, Some(Duration::from_secs(15))).await
            })
        })
        .collect();
    let mut refused = 0;
    for r in reads {
        let r = r.await.expect("read task").expect("an answer within the hold time");
        assert_ne!(text(&r), "v1", "a default read on the cut-off leader answered the old value");
        assert_eq!(r.status, 500, "{}", text(&r));
        assert!(text(&r).contains("No cluster leader"), "{}", text(&r));
        refused += 1;
    }
    assert_eq!(refused, 16);

    // A stale read may answer from its copy, and says how old its leader contact is.
    let r = get(l, "/v1/kv/k?raw&stale", Duration::from_secs(5)).await.expect("stale read");
    assert_eq!(r.status, 200);
    let header = |name: &str| r.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    assert_eq!(header("X-Consul-KnownLeader").as_deref(), Some("false"));
    let contact: u64 = header("X-Consul-LastContact").and_then(|v| v.parse().ok()).expect("LastContact");
    assert!(
        Duration::from_millis(contact) >= written_at.duration_since(cut_at),
        "LastContact {contact} ms, cut off {:?} ago",
        cut_at.elapsed()
    );
    // A follower on the majority side knows its leader and heard from it within a heartbeat or so.
    let r = get(others[1], "/v1/kv/k?raw&stale", Duration::from_secs(5)).await.expect("stale read");
    let known = r.headers.get("X-Consul-KnownLeader").and_then(|v| v.to_str().ok()).map(str::to_string);
    assert_eq!(known.as_deref(), Some("true"));

    // Healed: the old leader follows the new one; nobody stands for election.
    let term = raft_term(others[0]).await.expect("term");
    fw.heal();
    wait_for(LONG, "the old leader to read v2 through the new leader", || async {
        let r = get(l, "/v1/kv/k?raw", Duration::from_secs(10)).await?;
        (r.status == 200 && r.body.as_ref() == b"v2").then_some(())
    })
    .await;
    assert_eq!(wait_leader(&all, None).await, new, "the healed server did not depose the leader");
    for s in &all {
        assert_eq!(raft_term(s).await, Some(term), "no election after the heal ({})", s.ip);
    }
    eprintln!("new leader elected {elected_after:?} after the cut");
}

/// With `MinQuorum: 3`, a killed follower is not removed; restarted, it votes, so when the
/// leader is then killed the two servers left elect a leader and take writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_quorum_keeps_a_dead_follower_a_voter_so_two_servers_elect() {
    let ip = net(131);
    let mut servers = three_servers(&ip, &[]);
    let all: Vec<&TestAgent> = servers.iter().collect();
    let l = wait_leader(&all, None).await;
    let cfg = servers[0]
        .put("/v1/operator/autopilot/configuration", r#"{"MinQuorum": 3, "ServerStabilizationTime": "2s"}"#)
        .await;
    assert_eq!(text(&cfg), "true");
    let a = servers.iter().position(|s| s.ip != ip_of(&l)).expect("a follower");
    let a_addr = format!("{}:8300", servers[a].ip);
    let a_node = format!("node-{}", servers[a].ip.replace('.', "-"));
    let leader_agent = servers.iter().position(|s| s.ip == ip_of(&l)).expect("the leader");
    servers[a].kill9();
    // The leader's reconcile has written what gossip says of the dead follower...
    wait_for(LONG, "the killed follower critical in the catalog", || async {
        let r = get(&servers[leader_agent], &format!("/v1/health/node/{a_node}"), Duration::from_secs(5)).await?;
        let v = json(&r);
        v.as_array()?.iter().any(|c| c["CheckID"] == "serfHealth" && c["Status"] == "critical").then_some(())
    })
    .await;
    // ... and for three times the time after which it would otherwise be removed, it stays.
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        let cfg = raft_servers(&servers[leader_agent]).await.expect("raft configuration");
        assert!(cfg.contains(&(a_addr.clone(), true)), "removed below MinQuorum: {cfg:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    servers[a].respawn();
    let two: Vec<usize> = (0..3).filter(|i| *i != leader_agent).collect();
    wait_for(LONG, "the restarted follower to catch up", || async {
        let r = get(&servers[a], "/v1/status/leader", Duration::from_secs(5)).await?;
        (text(&r).trim_matches('"') == l).then_some(())
    })
    .await;
    let killed_at = Instant::now();
    servers[leader_agent].kill9();
    let survivors: Vec<&TestAgent> = two.iter().map(|i| &servers[*i]).collect();
    wait_leader(&survivors, Some(&l)).await;
    wait_for(LONG, "a write with two of three servers up", || async {
        put(survivors[0], "after", "x", Duration::from_secs(5)).await.then_some(())
    })
    .await;
    let took = killed_at.elapsed();
    assert!(took < Duration::from_secs(15), "two servers took {took:?} to take a write");
}

/// Without MinQuorum: a killed follower is removed once gossip has had it failed for the
/// stabilization time, comes back as a non-voter, and the leader is killed before it is
/// promoted. When the old leader returns and wins, it must not remove the live non-voter, and
/// promotes it at once: it has been healthy since it came back, longer than the stabilization
/// time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_keeps_a_live_non_voter_and_promotes_it_from_when_it_came_back() {
    let ip = net(132);
    let mut servers = three_servers(&ip, &[]);
    let all: Vec<&TestAgent> = servers.iter().collect();
    let l = wait_leader(&all, None).await;
    let stab = Duration::from_secs(3);
    let cfg = servers[0].put("/v1/operator/autopilot/configuration", r#"{"ServerStabilizationTime": "3s"}"#).await;
    assert_eq!(text(&cfg), "true");
    let li = servers.iter().position(|s| s.ip == ip_of(&l)).expect("the leader");
    let a = servers.iter().position(|s| s.ip != ip_of(&l)).expect("a follower");
    let a_addr = format!("{}:8300", servers[a].ip);
    servers[a].kill9();
    wait_for(LONG, "the dead follower removed from Raft", || async {
        let cfg = raft_servers(&servers[li]).await?;
        (!cfg.iter().any(|(addr, _)| *addr == a_addr)).then_some(())
    })
    .await;
    servers[a].respawn();
    let back_at = Instant::now();
    wait_for(LONG, "the returning server added as a non-voter", || async {
        let cfg = raft_servers(&servers[li]).await?;
        cfg.contains(&(a_addr.clone(), false)).then_some(())
    })
    .await;
    servers[li].kill9();
    // Two voters of which one is dead: no leader. A has been back for the stabilization time
    // before the old leader returns.
    wait_for(LONG, "the returning server up for longer than the stabilization time", || async {
        (back_at.elapsed() > stab + Duration::from_secs(1)).then_some(())
    })
    .await;
    servers[li].respawn();
    let all: Vec<&TestAgent> = servers.iter().collect();
    wait_leader(&all, None).await;
    let led_at = Instant::now();
    let promoted = wait_for(LONG, "the returning server promoted", || async {
        let cfg = raft_servers(&servers[li]).await?;
        assert!(cfg.iter().any(|(addr, _)| *addr == a_addr), "a live non-voter was removed: {cfg:?}");
        cfg.contains(&(a_addr.clone(), true)).then(Instant::now)
    })
    .await;
    let waited = promoted.duration_since(led_at);
    assert!(waited < stab, "promoted {waited:?} after the leader returned: its wait restarted");
}

/// The leader cut off for 8 seconds, longer than the stabilization time, so it is removed; it
/// is back in the Raft configuration and a voter within the stabilization time and a few
/// seconds of the heal, and the heal costs no election.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_for_eight_seconds_is_a_voter_again_soon_after_the_heal() {
    let ip = net(133);
    let fw = Net::new(133);
    let servers = three_servers(&ip, &[]);
    let all: Vec<&TestAgent> = servers.iter().collect();
    let old = wait_leader(&all, None).await;
    let stab = Duration::from_secs(3);
    let cfg = servers[0].put("/v1/operator/autopilot/configuration", r#"{"ServerStabilizationTime": "3s"}"#).await;
    assert_eq!(text(&cfg), "true");
    let l = servers.iter().find(|s| s.ip == ip_of(&old)).expect("the leader");
    let others: Vec<&TestAgent> = servers.iter().filter(|s| s.ip != l.ip).collect();
    let cut_at = Instant::now();
    fw.isolate(l, &others);
    let new = wait_leader(&others, Some(&old)).await;
    for i in 0..5 {
        assert!(put(others[i % 2], &format!("cut/{i}"), "x", Duration::from_secs(10)).await);
    }
    wait_for(LONG, "eight seconds of partition", || async {
        (cut_at.elapsed() >= Duration::from_secs(8)).then_some(())
    })
    .await;
    let term = raft_term(others[0]).await.expect("term");
    fw.heal();
    let healed_at = Instant::now();
    let new_agent = servers.iter().find(|s| s.ip == ip_of(&new)).expect("the new leader");
    wait_for(LONG, "the healed server a voter again", || async {
        let cfg = raft_servers(new_agent).await?;
        cfg.contains(&(old.clone(), true)).then_some(())
    })
    .await;
    let took = healed_at.elapsed();
    assert!(took < stab + Duration::from_secs(6), "a voter again {took:?} after the heal");
    wait_for(LONG, "the healed server to catch up", || async {
        let v: serde_json::Value =
            serde_json::from_slice(&get(l, "/v1/kv/cut/?keys&stale", Duration::from_secs(5)).await?.body).ok()?;
        (v.as_array()?.len() == 5).then_some(())
    })
    .await;
    assert_eq!(wait_leader(&all, None).await, new, "the heal deposed the leader");
    assert_eq!(raft_term(new_agent).await, Some(term), "the heal cost an election");
    eprintln!("voter again {took:?} after the heal");
}
