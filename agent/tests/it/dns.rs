//! The DNS interface against a real `-dev` agent on 127.0.0.109 (a fake recursor on 127.0.0.110),
//! queried with hickory-proto messages over real UDP and TCP sockets.

use crate::harness::{json, wait_for, TestAgent};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const IP: &str = "127.0.0.109";
const DNS: &str = "127.0.0.109:8600";
const NODE: &str = "node-127-0-0-109";

/// The harness's `-dev` agent with the DNS port on and the test's own flags.
fn start_agent(ip: &str, extra: &[String]) -> TestAgent {
    let mut flags = vec!["-dns-port=8600"];
    flags.extend(extra.iter().map(String::as_str));
    TestAgent::start(ip, true, &flags)
}

fn query(name: &str, t: RecordType, edns: bool) -> Message {
    let mut m = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(4096);
        m.edns = Some(e);
    }
    m
}

async fn udp(name: &str, t: RecordType, edns: bool) -> Option<Message> {
    let q = query(name, t, edns);
    let sock = UdpSocket::bind("127.0.0.109:0").await.ok()?;
    sock.send_to(&q.to_vec().unwrap(), DNS).await.ok()?;
    let mut buf = vec![0u8; 65535];
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf)).await.ok()?.ok()?;
    let m = Message::from_vec(&buf[..n]).expect("decodes");
    assert_eq!(m.metadata.id, q.metadata.id);
    assert_eq!(m.metadata.message_type, MessageType::Response);
    Some(m)
}

async fn tcp(name: &str, t: RecordType) -> Message {
    let q = query(name, t, false).to_vec().unwrap();
    let mut c = TcpStream::connect(DNS).await.expect("tcp connect");
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    c.write_all(&framed).await.unwrap();
    let len = c.read_u16().await.unwrap();
    let mut buf = vec![0u8; len as usize];
    c.read_exact(&mut buf).await.unwrap();
    Message::from_vec(&buf).unwrap()
}

fn set(rs: &[Record]) -> BTreeSet<String> {
    rs.iter().map(|r| format!("{} {} {} {}", r.name, r.ttl, r.record_type(), r.data)).collect()
}

fn strs(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A recursor on 127.0.0.110:5353 that answers every A question with 192.0.2.7.
async fn fake_recursor() {
    let sock = UdpSocket::bind("127.0.0.110:5353").await.expect("bind fake recursor");
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, peer)) = sock.recv_from(&mut buf).await else { return };
            let Ok(req) = Message::from_vec(&buf[..n]) else { continue };
            let mut resp = Message::response(req.metadata.id, OpCode::Query);
            resp.metadata.recursion_available = true;
            resp.queries = req.queries.clone();
            let q = &req.queries[0];
            resp.answers.push(Record::from_rdata(q.name.clone(), 60, RData::A(A(Ipv4Addr::new(192, 0, 2, 7)))));
            let _ = sock.send_to(&resp.to_vec().unwrap(), peer).await;
        }
    });
}

#[tokio::test]
async fn dns_names_records_flags_and_sections() {
    fake_recursor().await;
    let cfg = tempfile::tempdir().unwrap();
    let file = cfg.path().join("dns.json");
    std::fs::write(
        &file,
        r#"{"dns_config": {"enable_truncate": true, "node_ttl": "10s", "service_ttl": {"*": "5s", "db": "30s"}}}"#,
    )
    .unwrap();
    let a = start_agent(
        IP,
        &[format!("-config-file={}", file.display()), "-recursor=127.0.0.110:5353".into(), "-node-meta=rack:r1".into()],
    );
    a.ready().await;

    for body in [
        r#"{"ID":"web-a","Name":"web","Tags":["v1"],"Port":8080,"Check":{"TTL":"300s","Status":"passing"}}"#,
        r#"{"ID":"web-b","Name":"web","Tags":["v2"],"Address":"10.1.2.3","Port":8081,"Weights":{"Passing":5,"Warning":2},"Check":{"TTL":"300s","Status":"warning"}}"#,
        r#"{"ID":"web-c","Name":"web","Address":"10.1.2.4","Port":8082,"Check":{"TTL":"300s","Status":"critical"}}"#,
        r#"{"ID":"db","Name":"db","Port":5432}"#,
    ] {
        assert_eq!(a.put("/v1/agent/service/register", body).await.status, 200, "{body}");
    }
    for i in 0..6 {
        let body = format!(r#"{{"ID":"many-{i}","Name":"many","Address":"10.9.0.{i}","Port":900{i}}}"#);
        assert_eq!(a.put("/v1/agent/service/register", &body).await.status, 200);
    }

    // The catalog catches up with the local registrations (anti-entropy), then DNS sees them.
    let web_a = strs(&["web.service.consul. 5 A 127.0.0.109", "web.service.consul. 5 A 10.1.2.3"]);
    wait_for(Duration::from_secs(20), "web instances in DNS", || async {
        let m = udp("web.service.consul.", RecordType::A, false).await?;
        (set(&m.answers) == web_a).then_some(())
    })
    .await;
    wait_for(Duration::from_secs(20), "many instances in DNS", || async {
        let m = tcp("many.service.consul.", RecordType::A).await;
        (m.answers.len() == 6).then_some(())
    })
    .await;

    // A: the critical instance is left out; authoritative, recursion available (a recursor is set).
    let m = udp("web.service.consul.", RecordType::A, false).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    assert!(m.metadata.recursion_available);
    assert!(!m.metadata.truncation);
    assert!(m.authorities.is_empty() && m.additionals.is_empty());

    // SRV via RFC 2782 and the plain form: node target vs the service's own address, warning weight.
    for name in ["_web._tcp.service.consul.", "web.service.dc1.consul."] {
        let m = udp(name, RecordType::SRV, true).await.unwrap();
        assert!(m.metadata.authoritative);
        assert_eq!(
            set(&m.answers),
            strs(&[
                &format!("{name} 5 SRV 1 1 8080 {NODE}.node.dc1.consul."),
                &format!("{name} 5 SRV 1 2 8081 0a010203.addr.dc1.consul."),
            ])
        );
        assert_eq!(
            set(&m.additionals),
            strs(&[&format!("{NODE}.node.dc1.consul. 5 A 127.0.0.109"), "0a010203.addr.dc1.consul. 5 A 10.1.2.3"])
        );
        assert!(m.edns.is_some(), "EDNS echoed");
    }

    // Tags, both spellings.
    let m = udp("v1.web.service.consul.", RecordType::A, false).await.unwrap();
    assert_eq!(set(&m.answers), strs(&["v1.web.service.consul. 5 A 127.0.0.109"]));
    let m = udp("_web._v2.service.consul.", RecordType::SRV, false).await.unwrap();
    assert_eq!(set(&m.answers), strs(&["_web._v2.service.consul. 5 SRV 1 2 8081 0a010203.addr.dc1.consul."]));
    // Per-service TTL.
    let m = udp("db.service.consul.", RecordType::A, false).await.unwrap();
    assert_eq!(set(&m.answers), strs(&["db.service.consul. 30 A 127.0.0.109"]));

    // Node: A, TXT from node meta (exactly the catalog's meta), ANY, and the dc form.
    let node = json(&a.get(&format!("/v1/catalog/node/{NODE}")).await);
    let name = format!("{NODE}.node.consul.");
    let m = udp(&name, RecordType::A, false).await.unwrap();
    assert_eq!(set(&m.answers), strs(&[&format!("{name} 10 A 127.0.0.109")]));
    let meta = node["Node"]["Meta"].as_object().unwrap();
    assert_eq!(meta["rack"], "r1");
    let want_txt: BTreeSet<String> =
        meta.iter().map(|(k, v)| format!("{name} 10 TXT {k}={}", v.as_str().unwrap())).collect();
    assert_eq!(set(&udp(&name, RecordType::TXT, false).await.unwrap().answers), want_txt);
    let any = udp(&name, RecordType::ANY, true).await.unwrap();
    assert_eq!(any.answers.len(), want_txt.len() + 1);
    let dc_name = format!("{NODE}.node.dc1.consul.");
    assert_eq!(
        set(&udp(&dc_name, RecordType::A, false).await.unwrap().answers),
        strs(&[&format!("{dc_name} 10 A 127.0.0.109")])
    );
    // The name exists but has no AAAA: NOERROR, no answers, SOA.
    let m = udp(&name, RecordType::AAAA, false).await.unwrap();
    assert_eq!((m.metadata.response_code, m.answers.len(), m.authorities.len()), (ResponseCode::NoError, 0, 1));

    // addr and PTR.
    let m = udp("7f00006d.addr.consul.", RecordType::A, false).await.unwrap();
    assert_eq!(set(&m.answers), strs(&["7f00006d.addr.consul. 10 A 127.0.0.109"]));
    let m = udp("109.0.0.127.in-addr.arpa.", RecordType::PTR, false).await.unwrap();
    assert!(m.metadata.authoritative);
    assert_eq!(set(&m.answers), strs(&[&format!("109.0.0.127.in-addr.arpa. 10 PTR {NODE}.node.dc1.consul.")]));

    // Unknown names in the domain: NXDOMAIN with the SOA in AUTHORITY.
    for bad in ["nope.service.consul.", "nope.node.consul.", "foo.consul.", "web.service.dc9.consul."] {
        let m = udp(bad, RecordType::A, false).await.unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{bad}");
        assert!(m.metadata.authoritative);
        assert!(m.answers.is_empty());
        assert_eq!(m.authorities.len(), 1);
        let soa = &m.authorities[0];
        assert_eq!(soa.record_type(), RecordType::SOA);
        let RData::SOA(s) = &soa.data else { panic!() };
        assert_eq!(soa.name.to_ascii(), "consul.");
        assert_eq!((s.mname.to_ascii(), s.rname.to_ascii()), ("ns.consul.".into(), "hostmaster.consul.".into()));
        assert_eq!((s.refresh, s.retry, s.expire, s.minimum), (3600, 600, 86400, 0));
    }

    // UDP without EDNS: at most udp_answer_limit (3) answers and TC set (enable_truncate); with
    // EDNS all six fit; TCP is never trimmed.
    let m = udp("many.service.consul.", RecordType::A, false).await.unwrap();
    assert_eq!(m.answers.len(), 3);
    assert!(m.metadata.truncation);
    let m = udp("many.service.consul.", RecordType::A, true).await.unwrap();
    assert_eq!(m.answers.len(), 6);
    assert!(!m.metadata.truncation);
    let m = tcp("many.service.consul.", RecordType::A).await;
    assert_eq!(m.answers.len(), 6);
    assert!(!m.metadata.truncation);
    let m = udp("_many._tcp.service.consul.", RecordType::SRV, false).await.unwrap();
    assert_eq!((m.answers.len(), m.additionals.len()), (3, 3), "additionals follow the kept answers");

    // Outside the domain: forwarded to the recursor, its answer relayed.
    let m = udp("example.com.", RecordType::A, false).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(set(&m.answers), strs(&["example.com. 60 A 192.0.2.7"]));
    let m = tcp("example.org.", RecordType::A).await;
    assert_eq!(set(&m.answers), strs(&["example.org. 60 A 192.0.2.7"]));

    // The shuffle: over many queries both web instances come first at some point.
    let mut firsts = BTreeSet::new();
    for _ in 0..64 {
        let m = udp("web.service.consul.", RecordType::A, false).await.unwrap();
        firsts.insert(m.answers[0].data.to_string());
        if firsts.len() == 2 {
            break;
        }
    }
    assert_eq!(firsts.len(), 2, "answers are shuffled");

    // A check turning critical removes the instance.
    assert_eq!(a.put("/v1/agent/check/fail/service:web-a", "").await.status, 200);
    let only_b = strs(&["web.service.consul. 5 A 10.1.2.3"]);
    wait_for(Duration::from_secs(20), "web-a gone from DNS", || async {
        let m = udp("web.service.consul.", RecordType::A, false).await?;
        (set(&m.answers) == only_b).then_some(())
    })
    .await;
}

#[tokio::test]
async fn dns_without_recursors_refuses_outside_names() {
    let a = start_agent("127.0.0.110", &["-domain=example".into()]);
    a.ready().await;
    let ask = |name: &'static str| async move {
        let q = query(name, RecordType::A, false);
        let sock = UdpSocket::bind("127.0.0.110:0").await.ok()?;
        sock.send_to(&q.to_vec().unwrap(), "127.0.0.110:8600").await.ok()?;
        let mut buf = vec![0u8; 4096];
        let (n, _) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf)).await.ok()?.ok()?;
        Some(Message::from_vec(&buf[..n]).unwrap())
    };
    let m = wait_for(Duration::from_secs(20), "node in DNS", || async {
        let m = ask("node-127-0-0-110.node.example.").await?;
        (!m.answers.is_empty()).then_some(m)
    })
    .await;
    assert_eq!(set(&m.answers), strs(&["node-127-0-0-110.node.example. 0 A 127.0.0.110"]));
    assert!(!m.metadata.recursion_available, "no recursors: RA clear");
    let m = ask("web.service.consul.").await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::Refused, "consul. is outside the -domain=example");
    let m = ask("nope.node.example.").await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(m.authorities[0].name.to_ascii(), "example.");

    // Same address, now with a recursor that never answers: RA set, SERVFAIL after its timeout.
    drop(a);
    let a = start_agent("127.0.0.110", &["-domain=example".into(), "-recursor=127.0.0.110:5399".into()]);
    a.ready().await;
    let m = wait_for(Duration::from_secs(20), "DNS up again", || async {
        let q = query("example.com.", RecordType::A, false);
        let sock = UdpSocket::bind("127.0.0.110:0").await.ok()?;
        sock.send_to(&q.to_vec().unwrap(), "127.0.0.110:8600").await.ok()?;
        let mut buf = vec![0u8; 4096];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf)).await.ok()?.ok()?;
        Some(Message::from_vec(&buf[..n]).unwrap())
    })
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(m.metadata.recursion_available);
    assert!(m.answers.is_empty());
}
