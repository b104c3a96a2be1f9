//! The gossip layer over real UDP and TCP sockets: in-process `Gossip` instances on distinct
//! loopback addresses in 127.0.80.0/24 .. 127.0.89.0/24 (one /24 per test), with fast timings.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent::gossip::{Config, Event, Gossip, MemberStatus, Timing, UserEvent};

async fn start(ip: &str, name: &str, key: Option<[u8; 32]>) -> Arc<Gossip> {
    start_with(ip, name, key, Timing::dev()).await
}

async fn start_with(ip: &str, name: &str, key: Option<[u8; 32]>, timing: Timing) -> Arc<Gossip> {
    let addr: SocketAddr = format!("{ip}:8301").parse().expect("addr");
    let tags = BTreeMap::from([("role".to_string(), "node".to_string()), ("dc".to_string(), "dc1".to_string())]);
    let keyring = agent::gossip::Keyring::new(key, true, true, None);
    let cfg = Config { node_name: name.into(), bind: addr, advertise: addr, tags, keyring, timing, snapshot: None };
    Gossip::start(cfg).await.expect("start gossip")
}

/// Polls `cond` until it holds, failing the test after `limit`.
async fn until(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn status_of(g: &Gossip, name: &str) -> Option<MemberStatus> {
    g.members().into_iter().find(|m| m.name == name).map(|m| m.status)
}

fn all_alive(g: &Gossip, n: usize) -> bool {
    let members = g.members();
    members.len() == n && members.iter().all(|m| m.status == MemberStatus::Alive)
}

const LIMIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn three_agents_join_then_one_fails_and_one_leaves() {
    let a = start("127.0.80.1", "a", None).await;
    let b = start("127.0.80.2", "b", None).await;
    let c = start("127.0.80.3", "c", None).await;
    let mut a_events = a.subscribe();
    let a_changed = a.changed();
    assert_eq!(b.join(&["127.0.80.1".into()]).await, Ok(1));
    assert_eq!(c.join(&["127.0.80.1:8301".into()]).await, Ok(1));
    for g in [&a, &b, &c] {
        until("three alive members", LIMIT, || all_alive(g, 3)).await;
    }
    let seen_by_c = c.members().into_iter().find(|m| m.name == "a").expect("a on c");
    assert_eq!(seen_by_c.addr, "127.0.80.1:8301".parse().unwrap());
    assert_eq!(seen_by_c.tags["role"], "node");
    assert!(a_changed.has_changed().unwrap());
    assert_eq!(a.local().name, "a");
    assert_eq!(a.stats().members, 3);

    c.shutdown().await;
    for g in [&a, &b] {
        until("c failed", LIMIT, || status_of(g, "c") == Some(MemberStatus::Failed)).await;
    }
    b.leave(Duration::from_secs(2)).await;
    until("b left", LIMIT, || status_of(&a, "b") == Some(MemberStatus::Left)).await;
    let stats = a.stats();
    assert_eq!((stats.members, stats.failed, stats.left), (3, 1, 1));

    let mut seen = Vec::new();
    while let Ok(ev) = a_events.try_recv() {
        seen.push(match ev {
            Event::Joined(m) => format!("joined {}", m.name),
            Event::Failed(m) => format!("failed {}", m.name),
            Event::Left(m) => format!("left {}", m.name),
            other => format!("{other:?}"),
        });
    }
    for want in ["joined b", "joined c", "failed c", "left b"] {
        assert!(seen.iter().any(|s| s == want), "{want:?} missing from {seen:?}");
    }
    assert!(!seen.iter().any(|s| s == "failed b"), "a graceful leave is not a failure: {seen:?}");
    a.shutdown().await;
}

#[tokio::test]
async fn tags_and_user_events_reach_every_member() {
    let a = start("127.0.81.1", "a", None).await;
    let b = start("127.0.81.2", "b", None).await;
    let c = start("127.0.81.3", "c", None).await;
    b.join(&["127.0.81.1".into()]).await.expect("b joins");
    c.join(&["127.0.81.2".into()]).await.expect("c joins through b");
    for g in [&a, &b, &c] {
        until("three alive members", LIMIT, || all_alive(g, 3)).await;
    }
    let mut receivers = [a.subscribe(), b.subscribe(), c.subscribe()];
    b.set_tags(BTreeMap::from([("role".into(), "consul".into()), ("port".into(), "8300".into())]));
    for g in [&a, &c] {
        let has_new_tags =
            || g.members().iter().any(|m| m.name == "b" && m.tags.get("role").map(String::as_str) == Some("consul"));
        until("b's new tags", LIMIT, has_new_tags).await;
    }

    a.fire_event(UserEvent { name: "deploy".into(), payload: Some("djI=".into()), ..Default::default() });
    let big = Some("x".repeat(4000));
    c.fire_event(UserEvent { name: "big".into(), payload: big.clone(), ..Default::default() });
    for rx in &mut receivers {
        let mut got = BTreeMap::new();
        let deadline = Instant::now() + LIMIT;
        while got.len() < 2 {
            let ev = tokio::time::timeout_at(deadline.into(), rx.recv()).await.expect("events in time").expect("recv");
            if let Event::User(ev) = ev {
                assert!(got.insert(ev.name.clone(), ev).is_none(), "an event is delivered once");
            }
        }
        assert_eq!(got["deploy"].payload.as_deref(), Some("djI="));
        assert_eq!(got["big"].payload, big);
        assert!(!got["deploy"].id.is_empty());
    }
    for g in [&a, &b, &c] {
        g.shutdown().await;
    }
}

#[tokio::test]
async fn an_agent_with_another_key_cannot_join() {
    let a = start("127.0.82.1", "a", Some([1; 32])).await;
    let b = start("127.0.82.2", "b", Some([2; 32])).await;
    let plain = start("127.0.82.3", "plain", None).await;
    let c = start("127.0.82.4", "c", Some([1; 32])).await;
    let err = b.join(&["127.0.82.1".into()]).await.expect_err("another key");
    assert!(err.starts_with("Failed to join 127.0.82.1: "), "{err}");
    plain.join(&["127.0.82.1".into()]).await.expect_err("no key");
    assert_eq!(c.join(&["127.0.82.1".into()]).await, Ok(1));
    until("a and c see each other", LIMIT, || all_alive(&a, 2) && all_alive(&c, 2)).await;
    assert!(a.stats().encrypted);
    assert!(a.stats().dropped_packets >= 2, "{:?}", a.stats());
    assert_eq!(b.members().len(), 1);
    let leaving = Instant::now();
    b.leave(LIMIT).await;
    assert!(leaving.elapsed() < Duration::from_secs(1), "an agent alone has nobody to wait for");
    for g in [&a, &plain, &c] {
        g.shutdown().await;
    }
}

#[tokio::test]
async fn a_failed_member_that_restarts_is_alive_again_and_force_leave_prunes() {
    let a = start("127.0.83.1", "a", None).await;
    let b = start("127.0.83.2", "b", None).await;
    b.join(&["127.0.83.1".into()]).await.expect("b joins");
    until("two alive", LIMIT, || all_alive(&a, 2)).await;
    b.shutdown().await;
    until("b failed", LIMIT, || status_of(&a, "b") == Some(MemberStatus::Failed)).await;

    let b = start("127.0.83.2", "b", None).await;
    b.join(&["127.0.83.1".into()]).await.expect("b rejoins");
    until("b alive again", LIMIT, || status_of(&a, "b") == Some(MemberStatus::Alive)).await;

    assert!(a.force_leave("nobody", false).is_err());
    b.shutdown().await;
    until("b failed again", LIMIT, || status_of(&a, "b") == Some(MemberStatus::Failed)).await;
    a.force_leave("b", false).expect("force-leave b");
    until("b left", LIMIT, || status_of(&a, "b") == Some(MemberStatus::Left)).await;
    a.force_leave("b", true).expect("prune b");
    until("b forgotten", LIMIT, || status_of(&a, "b").is_none()).await;
    a.shutdown().await;
}

#[tokio::test]
async fn garbage_datagrams_and_frames_are_dropped() {
    let a = start("127.0.84.1", "a", None).await;
    let junk = tokio::net::UdpSocket::bind("127.0.84.9:0").await.expect("bind");
    for packet in [&[][..], &[0], &[0, 1, 2, 3], &[1; 64], &[0; 1500]] {
        junk.send_to(packet, "127.0.84.1:8301").await.expect("send");
    }
    use tokio::io::AsyncWriteExt;
    let mut tcp = tokio::net::TcpStream::connect("127.0.84.1:8301").await.expect("connect");
    tcp.write_all(&[0, 0, 0, 5, 0, 9, 9]).await.expect("write truncated frame");
    drop(tcp);
    let b = start("127.0.84.2", "b", None).await;
    b.join(&["127.0.84.1".into()]).await.expect("still serving");
    until("two alive", LIMIT, || all_alive(&a, 2)).await;
    assert!(a.stats().dropped_packets >= 1);
    a.shutdown().await;
    b.shutdown().await;
}

/// The benchmark that split gossip, on real sockets: three servers each joining through s0's
/// address (s0 joins only itself), killed and restarted (same name, same address) one at a time,
/// the second of each pair as soon as the first is back; after each pair every server must see
/// every other alive. A 30 s push-pull keeps foca's own announces to down members out of it:
/// only reconnecting to Failed members heals in time (a server that sees both peers Failed
/// sends nothing otherwise).
#[tokio::test]
async fn servers_restarted_in_turn_through_the_first_one_rejoin_one_pool() {
    let timing = Timing { push_pull_interval: Duration::from_secs(30), ..Timing::dev() };
    let ips = ["127.0.85.1", "127.0.85.2", "127.0.85.3"];
    let names = ["s0", "s1", "s2"];
    let seed = vec!["127.0.85.1".to_string()];
    let mut servers = Vec::new();
    for (ip, name) in ips.iter().zip(names) {
        let g = start_with(ip, name, None, timing.clone()).await;
        let want = if name == "s0" { 0 } else { 1 };
        assert_eq!(g.join(&seed).await, Ok(want), "{name}: joining only ourselves joins nobody");
        servers.push(g);
    }
    let all_see_all = |servers: &[Arc<Gossip>]| servers.iter().all(|g| all_alive(g, 3));
    until("three alive members", LIMIT, || all_see_all(&servers)).await;

    for (round, victim) in [0, 2, 1, 0, 2, 1].into_iter().enumerate() {
        servers[victim].shutdown().await;
        let others: Vec<&Gossip> = (0..3).filter(|&i| i != victim).map(|i| &*servers[i]).collect();
        let gone = || others.iter().all(|g| status_of(g, names[victim]) != Some(MemberStatus::Alive));
        until(&format!("round {round}: {} not alive", names[victim]), LIMIT, gone).await;
        servers[victim] = start_with(ips[victim], names[victim], None, timing.clone()).await;
        let _ = servers[victim].join(&seed).await;
        if round % 2 == 1 {
            let what = format!("round {round}: three alive members everywhere");
            until(&what, Duration::from_secs(15), || all_see_all(&servers)).await;
        }
    }
    for g in &servers {
        g.shutdown().await;
    }
}

#[tokio::test]
async fn a_join_list_with_our_own_address_tries_the_others() {
    let a = start("127.0.86.1", "a", None).await;
    let b = start("127.0.86.2", "b", None).await;
    let list = ["127.0.86.2".to_string(), "127.0.86.1:8301".to_string()];
    assert_eq!(a.join(&list).await, Ok(1), "only b counts");
    let err = a.join(&["127.0.86.1".into(), "127.0.86.3".into()]).await.expect_err("nobody else answers");
    assert!(err.contains("127.0.86.3") && !err.contains("127.0.86.1:"), "{err}");
    until("a and b see each other", LIMIT, || all_alive(&a, 2) && all_alive(&b, 2)).await;
    a.shutdown().await;
    b.shutdown().await;
}

/// Serf's snapshot: an agent killed and restarted with no join at all finds the members it knew
/// alive; after a graceful leave it does not rejoin by itself.
#[tokio::test]
async fn a_restarted_agent_rejoins_the_members_in_its_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let snapshot = dir.path().join("serf").join("local.snapshot");
    let start_a = || async {
        let addr: SocketAddr = "127.0.87.1:8301".parse().expect("addr");
        let cfg = Config {
            node_name: "a".into(),
            bind: addr,
            advertise: addr,
            tags: BTreeMap::new(),
            keyring: agent::gossip::Keyring::disabled(),
            timing: Timing::dev(),
            snapshot: Some(snapshot.clone()),
        };
        Gossip::start(cfg).await.expect("start a")
    };
    let a = start_a().await;
    let b = start("127.0.87.2", "b", None).await;
    let c = start("127.0.87.3", "c", None).await;
    a.join(&["127.0.87.2".into()]).await.expect("a joins b");
    c.join(&["127.0.87.2".into()]).await.expect("c joins b");
    until("three alive", LIMIT, || [&a, &b, &c].iter().all(|g| all_alive(g, 3))).await;
    until("b and c in a's snapshot", LIMIT, || {
        let text = std::fs::read_to_string(&snapshot).unwrap_or_default();
        text.contains("alive: b 127.0.87.2:8301") && text.contains("alive: c 127.0.87.3:8301")
    })
    .await;

    a.shutdown().await;
    let a = start_a().await;
    until("a rejoined from its snapshot", LIMIT, || [&a, &b, &c].iter().all(|g| all_alive(g, 3))).await;

    a.leave(Duration::from_secs(2)).await;
    assert_eq!(std::fs::read_to_string(&snapshot).expect("snapshot"), "leave\n");
    let a = start_a().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(a.members().len(), 1, "no rejoin after a leave");
    for g in [&a, &b, &c] {
        g.shutdown().await;
    }
}
