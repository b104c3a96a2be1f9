//! Two datacenters federated over the WAN pool, on loopback: dc1 on 127.0.190.x and dc2 on
//! 127.0.191.x, three servers and a client each. `?dc=` reads and writes across, DNS names of
//! the other datacenter, a prepared query failing over to dc2 while dc1's instances are critical
//! and back when they recover, and, with the WAN link cut (iptables, as the partition tests),
//! each datacenter serving its own.

use crate::harness::{json, text, wait_for, TestAgent};
use crate::partition::Net;
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

const LONG: Duration = Duration::from_secs(60);
/// Fast WAN gossip for loopback, as the harness does for the LAN pool.
const WAN_FAST: &str = r#"-hcl=gossip_wan { probe_interval = "300ms" probe_timeout = "200ms" gossip_interval = "50ms" suspicion_mult = 4 }"#;

fn gid_of(ip: &str) -> u32 {
    let o: Vec<u32> = ip.split('.').filter_map(|p| p.parse().ok()).collect();
    210_000 + o[2] * 256 + o[3]
}

/// Three servers and a client of `dc` on `127.0.<net>.1-4`; `wan` is where the servers join the
/// WAN pool.
fn datacenter(net: u8, dc: &str, wan: Option<&str>) -> (Vec<TestAgent>, TestAgent) {
    let ip = |h: u8| format!("127.0.{net}.{h}");
    let dcflag = format!("-datacenter={dc}");
    let wanflag = wan.map(|w| format!("-retry-join-wan={w}"));
    // dc1 translates other datacenters' addresses to their WAN ones; dc2's client has one.
    let translate = "-hcl=translate_wan_addrs = true";
    let mut extra = vec![dcflag.as_str(), WAN_FAST];
    if dc == "dc1" {
        extra.push(translate);
    }
    if let Some(w) = &wanflag {
        extra.push(w);
    }
    let join = [ip(1), ip(2), ip(3)];
    let join: Vec<&str> = join.iter().map(String::as_str).collect();
    let servers: Vec<TestAgent> =
        (1..=3).map(|h| TestAgent::member_as(&ip(h), Some(3), &join, &extra, Some(gid_of(&ip(h))))).collect();
    let wan_addr = format!("-advertise-wan=127.0.{net}.44");
    let client_flags = [dcflag.as_str(), "-dns-port=8600", wan_addr.as_str()];
    let client = TestAgent::member_as(&ip(4), None, &join, &client_flags, Some(gid_of(&ip(4))));
    (servers, client)
}

async fn dns_srv_ports(ip: &str, name: &str) -> Option<Vec<u16>> {
    let mut m = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).ok()?, RecordType::SRV));
    let sock = UdpSocket::bind(format!("{ip}:0")).await.ok()?;
    sock.send_to(&m.to_vec().ok()?, format!("{ip}:8600")).await.ok()?;
    let mut buf = vec![0u8; 65535];
    let (n, _) = tokio::time::timeout(Duration::from_secs(3), sock.recv_from(&mut buf)).await.ok()?.ok()?;
    let m = Message::from_vec(&buf[..n]).ok()?;
    let mut ports: Vec<u16> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some(s.port),
            _ => None,
        })
        .collect();
    ports.sort();
    Some(ports)
}

async fn register_web(a: &TestAgent, port: u16) {
    let body = serde_json::json!({
        "ID": "web", "Name": "web", "Port": port,
        "Check": {"CheckID": "web-ttl", "TTL": "600s", "Status": "passing"}
    });
    let r = a.put("/v1/agent/service/register", &body.to_string()).await;
    assert_eq!(r.status, 200, "{}", text(&r));
}

/// The datacenter and port a prepared query's execution answered with.
async fn executed(a: &TestAgent, id: &str) -> Option<(String, u64, u64)> {
    let r = a.get(&format!("/v1/query/{id}/execute")).await;
    if r.status != 200 {
        return None;
    }
    let v = json(&r);
    let first = v["Nodes"].as_array()?.first()?.clone();
    Some((v["Datacenter"].as_str()?.to_string(), first["Service"]["Port"].as_u64()?, v["Failovers"].as_u64()?))
}

#[tokio::test]
async fn two_datacenters_federated_over_the_wan() {
    let net = Net::new(190);
    let (dc1, c1) = datacenter(190, "dc1", None);
    let (dc2, c2) = datacenter(191, "dc2", Some("127.0.190.1"));
    for a in dc1.iter().chain(dc2.iter()).chain([&c1, &c2]) {
        a.ready().await;
    }

    // Every server knows the six servers of both datacenters.
    for s in dc1.iter().chain(dc2.iter()) {
        wait_for(LONG, "six alive WAN members", || async {
            let m = json(&s.get("/v1/agent/members?wan=1").await);
            let alive = m.as_array()?.iter().filter(|m| m["Status"].as_u64() == Some(1)).count();
            (alive == 6).then_some(())
        })
        .await;
    }
    let out = std::process::Command::new(crate::harness::bin())
        .args(["members", "-wan", "-http-addr=127.0.190.2:8500"])
        .output()
        .expect("agent members -wan");
    let listing = String::from_utf8_lossy(&out.stdout);
    for name in ["node-127-0-190-1.dc1", "node-127-0-191-3.dc2"] {
        assert!(listing.contains(name), "{listing}");
    }
    assert_eq!(listing.lines().filter(|l| l.contains("alive")).count(), 6, "{listing}");
    // A client agent asks a server; both datacenters are listed, its own first.
    let dcs = json(&c1.get("/v1/catalog/datacenters").await);
    assert_eq!(dcs, serde_json::json!(["dc1", "dc2"]));
    assert_eq!(json(&c2.get("/v1/catalog/datacenters").await)[0], "dc2");

    // WAN coordinates measured for the six servers, listed per datacenter.
    wait_for(LONG, "measured WAN coordinates of both datacenters", || async {
        let v = json(&c1.get("/v1/coordinate/datacenters").await);
        let list = v.as_array()?;
        let measured = |i: usize| -> Option<usize> {
            let coords = list.get(i)?["Coordinates"].as_array()?;
            Some(coords.iter().filter(|c| c["Coord"]["Error"].as_f64().is_some_and(|e| e < 1.5)).count())
        };
        (list.len() == 2 && list[0]["Datacenter"] == "dc1" && measured(0)? >= 1 && measured(1)? >= 1).then_some(())
    })
    .await;

    // ?dc= writes and reads across, from a client of the other datacenter.
    let r = c1.put("/v1/kv/shared/greeting?dc=dc2", "hello from dc1").await;
    assert_eq!((r.status, text(&r).trim()), (200, "true"));
    let r = c2.get("/v1/kv/shared/greeting?raw").await;
    assert_eq!((r.status, text(&r).as_str()), (200, "hello from dc1"));
    assert_eq!(c1.get("/v1/kv/shared/greeting").await.status, 404, "the write went to dc2 only");
    let r = c1.get("/v1/kv/shared/greeting?dc=dc2&raw").await;
    assert_eq!(text(&r), "hello from dc1");
    let r = c1.get("/v1/kv/x?dc=dc9").await;
    assert_eq!((r.status, text(&r).trim()), (500, "No path to datacenter"));

    // A blocking query across datacenters wakes on the remote write.
    let idx: u64 = c1
        .get("/v1/kv/shared/greeting?dc=dc2")
        .await
        .headers
        .get("x-consul-index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("index");
    let client = c1.client.clone();
    let waiter = tokio::spawn(async move {
        client
            .request(
                api::client::Method::GET,
                &format!("/v1/kv/shared/greeting?dc=dc2&raw&index={idx}&wait=20s"),
                None,
                Some(Duration::from_secs(30)),
            )
            .await
            .expect("blocking read")
    });
    // (Retried: on a loaded machine dc2 may be between leaders.)
    wait_for(LONG, "the write in dc2", || async {
        (c2.put("/v1/kv/shared/greeting", "updated in dc2").await.status == 200).then_some(())
    })
    .await;
    assert_eq!(text(&waiter.await.expect("join")), "updated in dc2");

    // Services of each datacenter, and their names over DNS from the other.
    register_web(&c1, 8001).await;
    register_web(&c2, 8002).await;
    let nodes = json(&c1.get("/v1/health/service/web?dc=dc2&passing").await);
    assert_eq!(nodes[0]["Service"]["Port"].as_u64(), Some(8002), "{nodes}");
    // translate_wan_addrs: dc2's node as dc1 reaches it (once dc2's client has synced its
    // WAN address), and the answer says so.
    let r = wait_for(LONG, "dc2's node translated to its WAN address", || async {
        let r = c1.get("/v1/health/service/web?dc=dc2&passing").await;
        (json(&r)[0]["Node"]["Address"].as_str() == Some("127.0.191.44")).then_some(r)
    })
    .await;
    assert_eq!(r.headers.get("x-consul-translate-addresses").and_then(|v| v.to_str().ok()), Some("true"));
    let own = json(&c2.get("/v1/health/service/web?passing").await);
    assert_eq!(own[0]["Node"]["Address"].as_str(), Some("127.0.191.4"), "dc2 itself is not translated");
    let ports = wait_for(LONG, "dc2's web over DNS from dc1", || async {
        dns_srv_ports("127.0.190.4", "web.service.dc2.consul.").await.filter(|p| !p.is_empty())
    })
    .await;
    assert_eq!(ports, vec![8002]);
    assert_eq!(dns_srv_ports("127.0.190.4", "web.service.consul.").await, Some(vec![8001]));

    // A prepared query on dc1 failing over to dc2.
    let r = c1
        .post(
            "/v1/query",
            r#"{"Name": "web-any", "Service": {"Service": "web", "Failover": {"Datacenters": ["dc2"]}}}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let id = json(&r)["ID"].as_str().expect("ID").to_string();
    assert_eq!(executed(&c1, &id).await, Some(("dc1".into(), 8001, 0)));
    let failed_at = Instant::now();
    assert_eq!(c1.put("/v1/agent/check/fail/web-ttl", "").await.status, 200);
    let got = wait_for(LONG, "the query answering dc2's instance", || async {
        executed(&c1, &id).await.filter(|(dc, _, _)| dc == "dc2")
    })
    .await;
    let http_failover = failed_at.elapsed();
    assert_eq!(got, ("dc2".into(), 8002, 1));
    let ports = wait_for(LONG, "the query over DNS answering dc2's instance", || async {
        dns_srv_ports("127.0.190.4", "web-any.query.consul.").await.filter(|p| p == &vec![8002])
    })
    .await;
    let dns_failover = failed_at.elapsed();
    assert_eq!(ports, vec![8002]);
    eprintln!("figure: dc1's last instance failing -> the query answering dc2's: HTTP {http_failover:?}, DNS {dns_failover:?}");
    assert_eq!(c1.put("/v1/agent/check/pass/web-ttl", "").await.status, 200);
    wait_for(LONG, "the query answering dc1's instance again", || async {
        executed(&c1, &id).await.filter(|(dc, port, n)| dc == "dc1" && *port == 8001 && *n == 0)
    })
    .await;
    wait_for(LONG, "DNS answering dc1's instance again", || async {
        dns_srv_ports("127.0.190.4", "web-any.query.consul.").await.filter(|p| p == &vec![8001])
    })
    .await;

    // Latency of a ?dc= read against a local one, in the same run (printed, not asserted).
    for (label, path) in [("local", "/v1/kv/shared/greeting?dc=dc1"), ("dc2", "/v1/kv/shared/greeting?dc=dc2")] {
        let mut times: Vec<Duration> = Vec::new();
        for _ in 0..200 {
            let t = Instant::now();
            let _ = c1.get(path).await;
            times.push(t.elapsed());
        }
        times.sort();
        eprintln!("figure: KV read from dc1's client, {label}: p50 {:?} p99 {:?}", times[100], times[198]);
    }

    // The WAN link cut: each datacenter keeps serving its own; dc2 is unreachable from dc1.
    for a in dc1.iter() {
        for b in dc2.iter() {
            net.cut(a, b);
        }
    }
    // Every dc1 server, since the client may ask any of them.
    for s in dc1.iter() {
        wait_for(LONG, "dc1's servers seeing dc2's failed", || async {
            let m = json(&s.get("/v1/agent/members?wan=1").await);
            let failed = m.as_array()?.iter().filter(|m| m["Status"].as_u64() == Some(4)).count();
            (failed == 3).then_some(())
        })
        .await;
    }
    assert_eq!(c1.put("/v1/kv/during-cut", "dc1").await.status, 200);
    assert_eq!(c2.put("/v1/kv/during-cut", "dc2").await.status, 200);
    assert_eq!(text(&c1.get("/v1/kv/during-cut?raw").await), "dc1");
    assert_eq!(text(&c2.get("/v1/kv/during-cut?raw").await), "dc2");
    let r = c1.get("/v1/kv/during-cut?dc=dc2&raw").await;
    assert_eq!((r.status, text(&r).trim()), (500, "No path to datacenter"));
    assert_eq!(dns_srv_ports("127.0.190.4", "web.service.consul.").await, Some(vec![8001]));
    net.heal();
    wait_for(LONG, "dc2 reachable again after the heal", || async {
        let r = c1.get("/v1/kv/during-cut?dc=dc2&raw").await;
        (r.status == 200 && text(&r) == "dc2").then_some(())
    })
    .await;
    drop((dc1, dc2));
}

/// ACLs across datacenters: dc1 is the primary; dc2 replicates its policies, roles and global
/// tokens, forwards writes of global objects to it, and keeps its local tokens to itself.
#[tokio::test]
async fn acl_objects_replicate_from_the_primary_datacenter() {
    use crate::acl::{req, MGMT};
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, extra: serde_json::Value| {
        let mut cfg = serde_json::json!({
            "primary_datacenter": "dc1",
            "acl": {"enabled": true, "default_policy": "deny", "enable_token_replication": true,
                    "tokens": {"initial_management": MGMT, "replication": MGMT, "agent": MGMT}}
        });
        if let (Some(base), Some(more)) = (cfg.as_object_mut(), extra.as_object()) {
            base.extend(more.clone());
        }
        let path = dir.path().join(name);
        std::fs::write(&path, cfg.to_string()).expect("write config");
        format!("-config-file={}", path.display())
    };
    let (c1, c2) =
        (write("dc1.json", serde_json::json!({})), write("dc2.json", serde_json::json!({"datacenter": "dc2"})));
    let p = TestAgent::start("127.0.192.1", false, &[&c1, WAN_FAST]);
    let s = TestAgent::start("127.0.193.1", false, &[&c2, WAN_FAST, "-retry-join-wan=127.0.192.1"]);
    for a in [&p, &s] {
        wait_for(LONG, "acl ready", || async {
            (req(a, "GET", "/v1/acl/token/self", Some(MGMT), None).await.0 == 200).then_some(())
        })
        .await;
    }

    // A policy and a global token made in the primary work in the secondary.
    let body = r#"{"Name": "app-read", "Rules": "key_prefix \"app/\" { policy = \"read\" }"}"#;
    let (code, pol) = req(&p, "PUT", "/v1/acl/policy", Some(MGMT), Some(body)).await;
    assert_eq!(code, 200, "{pol}");
    let pol: serde_json::Value = serde_json::from_str(&pol).expect("json");
    let body = serde_json::json!({"Description": "reader", "Policies": [{"ID": pol["ID"]}]}).to_string();
    let (code, tok) = req(&p, "PUT", "/v1/acl/token", Some(MGMT), Some(&body)).await;
    assert_eq!(code, 200, "{tok}");
    let reader = serde_json::from_str::<serde_json::Value>(&tok).expect("json")["SecretID"]
        .as_str()
        .expect("secret")
        .to_string();
    assert_eq!(req(&s, "PUT", "/v1/kv/app/x", Some(MGMT), Some("in dc2")).await.0, 200);
    wait_for(LONG, "the primary's token usable in dc2", || async {
        let (code, body) = req(&s, "GET", "/v1/kv/app/x?raw", Some(&reader), None).await;
        (code == 200 && body == "in dc2").then_some(())
    })
    .await;
    assert_eq!(req(&s, "PUT", "/v1/kv/app/x", Some(&reader), Some("no")).await.0, 403);
    let (_, status) = req(&s, "GET", "/v1/acl/replication", None, None).await;
    let status: serde_json::Value = serde_json::from_str(&status).expect("json");
    assert_eq!(
        (&status["Enabled"], &status["Running"], &status["SourceDatacenter"], &status["ReplicationType"]),
        (&serde_json::json!(true), &serde_json::json!(true), &serde_json::json!("dc1"), &serde_json::json!("tokens")),
        "{status}"
    );
    assert!(status["ReplicatedIndex"].as_u64().is_some_and(|i| i > 0), "{status}");
    let (_, status) = req(&p, "GET", "/v1/acl/replication", None, None).await;
    assert!(status.contains(r#""Enabled":false"#), "{status}");

    // A policy written in the secondary is written in the primary, and comes back.
    let body = r#"{"Name": "made-in-dc2", "Rules": "node_prefix \"\" { policy = \"read\" }"}"#;
    let (code, out) = req(&s, "PUT", "/v1/acl/policy", Some(MGMT), Some(body)).await;
    assert_eq!(code, 200, "{out}");
    let (_, list) = req(&p, "GET", "/v1/acl/policies", Some(MGMT), None).await;
    assert!(list.contains("made-in-dc2"), "{list}");
    wait_for(LONG, "the policy replicated back to dc2", || async {
        req(&s, "GET", "/v1/acl/policies", Some(MGMT), None).await.1.contains("made-in-dc2").then_some(())
    })
    .await;

    // A local token stays in dc2, through replication rounds.
    let body =
        serde_json::json!({"Description": "dc2 only", "Local": true, "Policies": [{"ID": pol["ID"]}]}).to_string();
    let (code, tok) = req(&s, "PUT", "/v1/acl/token", Some(MGMT), Some(&body)).await;
    assert_eq!(code, 200, "{tok}");
    let local = serde_json::from_str::<serde_json::Value>(&tok).expect("json")["SecretID"]
        .as_str()
        .expect("secret")
        .to_string();
    let before = req(&s, "GET", "/v1/acl/replication", None, None).await.1;
    wait_for(LONG, "another replication round", || async {
        (req(&s, "GET", "/v1/acl/replication", None, None).await.1 != before).then_some(())
    })
    .await;
    assert_eq!(req(&s, "GET", "/v1/kv/app/x?raw", Some(&local), None).await.0, 200);
    assert_eq!(req(&p, "GET", "/v1/kv/app/x?raw", Some(&local), None).await.0, 403, "a local token is unknown in dc1");
}
