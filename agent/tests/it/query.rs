//! Prepared queries in one datacenter: create, read, update, delete, execute with the service
//! options, templates (name prefix and regexp), explain, and DNS `<name>.query.consul` with the
//! query's TTL. Failover across datacenters is in `federation.rs`.

use crate::harness::{json, wait_for, TestAgent};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use std::time::Duration;
use tokio::net::UdpSocket;

const IP: &str = "127.0.129.1";

async fn dns(name: &str, t: RecordType) -> Message {
    let mut m = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).expect("name"), t));
    let sock = UdpSocket::bind(format!("{IP}:0")).await.expect("bind");
    sock.send_to(&m.to_vec().expect("encode"), format!("{IP}:8600")).await.expect("send");
    let mut buf = vec![0u8; 65535];
    let (n, _) =
        tokio::time::timeout(Duration::from_secs(3), sock.recv_from(&mut buf)).await.expect("answer").expect("recv");
    Message::from_vec(&buf[..n]).expect("decodes")
}

fn ports(answer: &serde_json::Value) -> Vec<u64> {
    let mut v: Vec<u64> =
        answer["Nodes"].as_array().expect("Nodes").iter().filter_map(|e| e["Service"]["Port"].as_u64()).collect();
    v.sort();
    v
}

async fn register(a: &TestAgent, id: &str, port: u16, tags: &[&str]) {
    let body = serde_json::json!({
        "ID": id, "Name": "web", "Port": port, "Tags": tags,
        "Check": {"CheckID": format!("ttl-{id}"), "TTL": "600s", "Status": "passing"}
    });
    let r = a.put("/v1/agent/service/register", &body.to_string()).await;
    assert_eq!(r.status, 200, "{}", crate::harness::text(&r));
}

#[tokio::test]
async fn prepared_queries_over_http_and_dns() {
    let a = TestAgent::start(IP, true, &["-dns-port=8600"]);
    a.ready().await;
    register(&a, "web1", 8081, &["v1", "blue"]).await;
    register(&a, "web2", 8082, &["v2"]).await;
    register(&a, "web3", 8083, &["v1"]).await;

    // Create: the answer is the new ID; a bad definition is refused as Consul refuses it.
    let r = a
        .post(
            "/v1/query",
            r#"{"Name": "web-v1", "Service": {"Service": "web", "Tags": ["v1", "!blue"], "OnlyPassing": true}, "DNS": {"TTL": "7s"}}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", crate::harness::text(&r));
    let id = json(&r)["ID"].as_str().expect("ID").to_string();
    let r = a.post("/v1/query", r#"{"Name": "x", "Service": {}}"#).await;
    assert_eq!(r.status, 400);
    assert!(crate::harness::text(&r).contains("Must provide a Service name to query"), "{}", crate::harness::text(&r));
    let r = a.post("/v1/query", r#"{"Name": "y", "Service": {"Service": "web", "Failover": {"NearestN": -1}}}"#).await;
    assert_eq!(r.status, 400, "{}", crate::harness::text(&r));

    // Read by ID and list.
    let got = json(&a.get(&format!("/v1/query/{id}")).await);
    assert_eq!(got[0]["Name"].as_str(), Some("web-v1"));
    assert_eq!(got[0]["Service"]["Tags"], serde_json::json!(["v1", "!blue"]));
    assert_eq!(json(&a.get("/v1/query").await).as_array().map(Vec::len), Some(1));
    assert_eq!(a.get("/v1/query/00000000-0000-0000-0000-000000000000").await.status, 404);

    // Execute by ID and by name: tag v1 without blue, passing only.
    let ex = json(&a.get(&format!("/v1/query/{id}/execute")).await);
    assert_eq!(ports(&ex), vec![8083]);
    assert_eq!(ex["Service"].as_str(), Some("web"));
    assert_eq!(ex["DNS"]["TTL"].as_str(), Some("7s"));
    assert_eq!(ex["Failovers"].as_u64(), Some(0));
    assert_eq!(ports(&json(&a.get("/v1/query/web-v1/execute").await)), vec![8083]);

    // A critical instance drops out while OnlyPassing holds; the update turns it off.
    assert_eq!(a.put("/v1/agent/check/fail/ttl-web3", "").await.status, 200);
    assert_eq!(ports(&json(&a.get("/v1/query/web-v1/execute").await)), Vec::<u64>::new());
    let r = a
        .put(&format!("/v1/query/{id}"), r#"{"Name": "web-v1", "Service": {"Service": "web", "Tags": ["v1"], "OnlyPassing": false}, "DNS": {"TTL": "7s"}}"#)
        .await;
    assert_eq!(r.status, 200, "{}", crate::harness::text(&r));
    // Critical instances are never answered; warning ones are unless OnlyPassing.
    assert_eq!(ports(&json(&a.get("/v1/query/web-v1/execute").await)), vec![8081]);
    assert_eq!(a.put("/v1/agent/check/warn/ttl-web3", "").await.status, 200);
    assert_eq!(ports(&json(&a.get("/v1/query/web-v1/execute").await)), vec![8081, 8083]);
    assert_eq!(ports(&json(&a.get("/v1/query/web-v1/execute?limit=1").await)).len(), 1);

    // A template: every name under the prefix runs against the service it names.
    let r = a
        .post(
            "/v1/query",
            r#"{"Name": "svc-", "Template": {"Type": "name_prefix_match", "Regexp": "^svc-(.+?)(?:-(v\\d))?$"}, "Service": {"Service": "${match(1)}", "Tags": ["${match(2)}"]}}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", crate::harness::text(&r));
    let ex = json(&a.get("/v1/query/svc-web-v2/execute").await);
    assert_eq!((ex["Service"].as_str(), ports(&ex)), (Some("web"), vec![8082]));
    let plan = json(&a.get("/v1/query/svc-web-v2/explain").await);
    assert_eq!(plan["Query"]["Service"]["Service"].as_str(), Some("web"));
    assert_eq!(plan["Query"]["Service"]["Tags"], serde_json::json!(["v2"]));
    assert_eq!(a.get("/v1/query/nothing-matches/execute").await.status, 404);

    // DNS: the query's instances with its TTL; an unknown query is NXDOMAIN.
    let m = wait_for(Duration::from_secs(10), "the DNS answer of web-v1", || async {
        let m = dns("web-v1.query.consul.", RecordType::SRV).await;
        (m.answers.len() == 2).then_some(m)
    })
    .await;
    let mut srv_ports: Vec<u16> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some(s.port),
            _ => None,
        })
        .collect();
    srv_ports.sort();
    assert_eq!(srv_ports, vec![8081, 8083]);
    assert!(m.answers.iter().all(|r| r.ttl == 7), "{:?}", m.answers);
    let m = dns("svc-web-v2.query.consul.", RecordType::A).await;
    assert_eq!(m.answers.len(), 1, "{m:?}");
    let m = dns("nope.query.consul.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);

    // Delete.
    assert_eq!(a.delete(&format!("/v1/query/{id}")).await.status, 200);
    assert_eq!(a.get(&format!("/v1/query/{id}")).await.status, 404);
    assert_eq!(a.get("/v1/query/web-v1/execute").await.status, 404);
}
