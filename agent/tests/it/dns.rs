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

#[tokio::test]
async fn dns_names_records_flags_and_sections() {
    fake_recursor_on("127.0.0.110:5353").await;
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
        // The node's meta follows as TXT records named by the node (Consul's default
        // `enable_additional_node_meta_txt`); exactly the catalog's meta, checked below.
        let additionals = set(&m.additionals);
        let (txt, addrs): (BTreeSet<String>, BTreeSet<String>) =
            additionals.into_iter().partition(|r| r.contains(" TXT "));
        assert_eq!(
            addrs,
            strs(&[&format!("{NODE}.node.dc1.consul. 5 A 127.0.0.109"), "0a010203.addr.dc1.consul. 5 A 10.1.2.3"])
        );
        assert!(txt.contains(&format!("{NODE}.node.dc1.consul. 5 TXT rack=r1")), "{txt:?}");
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
    // The name exists but has no AAAA: NOERROR, no answers and, as Consul, no SOA.
    let m = udp(&name, RecordType::AAAA, false).await.unwrap();
    assert_eq!((m.metadata.response_code, m.answers.len(), m.authorities.len()), (ResponseCode::NoError, 0, 0));

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

// ---------------------------------------------------------------------------------------------
// Host names, node-meta TXT, IPv6 PTR, other datacenters and prepared queries, asked through
// hickory-net's DNS client (its own UDP and TCP exchanges, ID matching and decoding) of an agent
// on 127.0.96.1, with a fake recursor on 127.0.96.2.

mod client {
    use hickory_net::client::{Client, ClientHandle};
    use hickory_net::runtime::TokioRuntimeProvider;
    use hickory_net::tcp::TcpClientStream;
    use hickory_net::udp::UdpClientStream;
    use hickory_proto::op::Message;
    use hickory_proto::rr::{DNSClass, Name, RecordType};
    use std::net::SocketAddr;
    use std::time::Duration;

    pub const SERVER: &str = "127.0.96.1:8600";

    fn server() -> SocketAddr {
        SERVER.parse().unwrap()
    }

    /// One question over UDP, with or without EDNS; `None` if no answer came.
    pub async fn udp(name: &str, t: RecordType, edns: bool) -> Option<Message> {
        let stream = UdpClientStream::builder(server(), TokioRuntimeProvider::default())
            .with_bind_addr(Some("127.0.96.1:0".parse().unwrap()))
            .with_timeout(Some(Duration::from_secs(3)))
            .build();
        let (mut c, bg) = Client::<TokioRuntimeProvider>::from_sender(stream);
        tokio::spawn(bg);
        if !edns {
            c.disable_edns();
        }
        let resp = c.query(Name::from_ascii(name).unwrap(), DNSClass::IN, t).await.ok()?;
        Some(resp.into_message())
    }

    /// One question over TCP.
    pub async fn tcp(name: &str, t: RecordType) -> Message {
        let (connect, sender) = TcpClientStream::new(
            server(),
            Some("127.0.96.1:0".parse().unwrap()),
            Some(Duration::from_secs(3)),
            TokioRuntimeProvider::default(),
        );
        let stream = connect.await.expect("tcp connect");
        let (mut c, bg) = Client::<TokioRuntimeProvider>::new(stream, sender);
        tokio::spawn(bg);
        match c.query(Name::from_ascii(name).unwrap(), DNSClass::IN, t).await {
            Ok(r) => r.into_message(),
            Err(e) => panic!("tcp {name} {t}: {e:?}"),
        }
    }
}

/// A recursor on `addr` that answers every A question with 192.0.2.7 and others with no records.
async fn fake_recursor_on(addr: &str) {
    let sock = UdpSocket::bind(addr).await.expect("bind fake recursor");
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, peer)) = sock.recv_from(&mut buf).await else { return };
            let Ok(req) = Message::from_vec(&buf[..n]) else { continue };
            let mut resp = Message::response(req.metadata.id, OpCode::Query);
            resp.metadata.recursion_available = true;
            resp.queries = req.queries.clone();
            let q = &req.queries[0];
            if q.query_type == RecordType::A {
                resp.answers.push(Record::from_rdata(q.name.clone(), 60, RData::A(A(Ipv4Addr::new(192, 0, 2, 7)))));
            }
            let _ = sock.send_to(&resp.to_vec().unwrap(), peer).await;
        }
    });
}

fn nxdomain_with_soa(m: &Message, what: &str) {
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{what}");
    assert!(m.metadata.authoritative, "{what}");
    assert!(m.answers.is_empty() && m.additionals.is_empty(), "{what}");
    assert_eq!(m.authorities.len(), 1, "{what}");
    let soa = &m.authorities[0];
    let RData::SOA(s) = &soa.data else { panic!("{what}: not an SOA: {soa}") };
    assert_eq!(soa.name.to_ascii(), "consul.", "{what}");
    assert_eq!((s.mname.to_ascii(), s.rname.to_ascii()), ("ns.consul.".into(), "hostmaster.consul.".into()), "{what}");
}

#[tokio::test]
async fn dns_host_names_meta_txt_ipv6_ptr_and_other_datacenters() {
    use client::{tcp, udp};
    const IP: &str = "127.0.96.1";
    const NODE: &str = "node-127-0-96-1";
    fake_recursor_on("127.0.96.2:5353").await;
    let cfg = tempfile::tempdir().unwrap();
    let file = cfg.path().join("dns.json");
    std::fs::write(&file, r#"{"dns_config": {"node_ttl": "10s", "service_ttl": {"*": "5s"}}}"#).unwrap();
    let a = start_agent(
        IP,
        &[format!("-config-file={}", file.display()), "-recursor=127.0.96.2:5353".into(), "-node-meta=rack:r1".into()],
    );
    a.ready().await;

    for body in [
        // An external database known by host name, a service aliasing a name inside the domain,
        // and a plain one.
        r#"{"ID":"pg","Name":"pg","Address":"db.example.com","Port":5432}"#,
        r#"{"ID":"alias","Name":"alias","Address":"node-127-0-96-1.node.consul","Port":80}"#,
        r#"{"ID":"web","Name":"web","Port":8080}"#,
    ] {
        assert_eq!(a.put("/v1/agent/service/register", body).await.status, 200, "{body}");
    }
    // Nodes registered in the catalog: one at a host name, one at an IPv6 address.
    for body in [
        r#"{"Node":"ext","Address":"ext.example.org","NodeMeta":{"rfc1035-note":"bare"},"Service":{"ID":"legacy","Service":"legacy","Port":21}}"#,
        r#"{"Node":"six","Address":"2001:db8::5","Service":{"ID":"v6","Service":"v6","Port":443}}"#,
    ] {
        assert_eq!(a.put("/v1/catalog/register", body).await.status, 200, "{body}");
    }
    wait_for(Duration::from_secs(20), "services in DNS", || async {
        let m = udp("web.service.consul.", RecordType::A, false).await?;
        let m2 = udp("pg.service.consul.", RecordType::A, false).await?;
        (!m.answers.is_empty() && !m2.answers.is_empty()).then_some(())
    })
    .await;
    let node_meta = json(&a.get(&format!("/v1/catalog/node/{NODE}")).await)["Node"]["Meta"].clone();
    let meta = node_meta.as_object().unwrap();
    assert_eq!(meta["rack"], "r1");
    let txt = |name: &str, ttl: u32| -> Vec<String> {
        meta.iter().map(|(k, v)| format!("{name} {ttl} TXT {k}={}", v.as_str().unwrap())).collect()
    };

    // A service at a host name: CNAME, then what the recursor says of the name, with the
    // service's TTL; over UDP and TCP alike.
    let want = strs(&["pg.service.consul. 5 CNAME db.example.com.", "db.example.com. 5 A 192.0.2.7"]);
    for m in
        [udp("pg.service.consul.", RecordType::A, false).await.unwrap(), tcp("pg.service.consul.", RecordType::A).await]
    {
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative && m.metadata.recursion_available);
        assert_eq!(set(&m.answers), want);
        assert_eq!(m.answers[0].record_type(), RecordType::CNAME, "the CNAME comes first");
        assert!(m.authorities.is_empty() && m.additionals.is_empty());
    }
    // SRV: the host name is the target; its address and the node's meta are in ADDITIONAL.
    let m = udp("_pg._tcp.service.consul.", RecordType::SRV, true).await.unwrap();
    assert_eq!(set(&m.answers), strs(&["_pg._tcp.service.consul. 5 SRV 1 1 5432 db.example.com."]));
    let mut want: BTreeSet<String> = strs(&["db.example.com. 5 A 192.0.2.7"]);
    want.extend(txt(&format!("{NODE}.node.dc1.consul."), 5));
    assert_eq!(set(&m.additionals), want);
    // A name inside the domain is followed by the agent itself.
    let m = udp("alias.service.consul.", RecordType::A, false).await.unwrap();
    assert_eq!(
        set(&m.answers),
        strs(&[
            "alias.service.consul. 5 CNAME node-127-0-96-1.node.consul.",
            "node-127-0-96-1.node.consul. 5 A 127.0.96.1"
        ])
    );

    // Node meta: TXT in ADDITIONAL of SRV answers (named by the node) and of node A answers.
    let m = udp("web.service.consul.", RecordType::SRV, true).await.unwrap();
    assert_eq!(set(&m.answers), strs(&[&format!("web.service.consul. 5 SRV 1 1 8080 {NODE}.node.dc1.consul.")]));
    let mut want = strs(&[&format!("{NODE}.node.dc1.consul. 5 A 127.0.96.1")]);
    want.extend(txt(&format!("{NODE}.node.dc1.consul."), 5));
    assert_eq!(set(&m.additionals), want);
    let name = format!("{NODE}.node.consul.");
    let m = udp(&name, RecordType::A, false).await.unwrap();
    assert_eq!(set(&m.answers), strs(&[&format!("{name} 10 A 127.0.96.1")]));
    assert_eq!(set(&m.additionals), txt(&name, 10).into_iter().collect());
    // A TXT question: the meta as the answer, nothing else.
    let m = tcp(&name, RecordType::TXT).await;
    assert_eq!(set(&m.answers), txt(&name, 10).into_iter().collect());
    assert!(m.additionals.is_empty());
    // No AAAA for an IPv4 node: NOERROR, nothing in ANSWER or AUTHORITY, the meta in ADDITIONAL.
    let m = udp(&name, RecordType::AAAA, false).await.unwrap();
    assert_eq!((m.metadata.response_code, m.answers.len(), m.authorities.len()), (ResponseCode::NoError, 0, 0));
    assert_eq!(set(&m.additionals), txt(&name, 10).into_iter().collect());

    // A node at a host name: CNAME plus the recursor's answer as it came (its TTL); an
    // `rfc1035-` meta key gives the bare value.
    let m = udp("ext.node.consul.", RecordType::A, false).await.unwrap();
    assert_eq!(
        set(&m.answers),
        strs(&["ext.node.consul. 10 CNAME ext.example.org.", "ext.example.org. 60 A 192.0.2.7"])
    );
    assert_eq!(set(&m.additionals), strs(&["ext.node.consul. 10 TXT bare"]));
    // A catalog service on that node: its SRV target is the node's host name.
    let m = udp("legacy.service.consul.", RecordType::SRV, false).await.unwrap();
    assert_eq!(set(&m.answers), strs(&["legacy.service.consul. 5 SRV 1 1 21 ext.example.org."]));
    assert_eq!(set(&m.additionals), strs(&["ext.example.org. 5 A 192.0.2.7", "ext.node.dc1.consul. 5 TXT bare"]));

    // IPv6: AAAA for the node and its service, and the ip6.arpa PTR back to the node.
    let m = udp("six.node.consul.", RecordType::AAAA, false).await.unwrap();
    assert_eq!(set(&m.answers), strs(&["six.node.consul. 10 AAAA 2001:db8::5"]));
    let m = udp("v6.service.consul.", RecordType::AAAA, false).await.unwrap();
    assert_eq!(set(&m.answers), strs(&["v6.service.consul. 5 AAAA 2001:db8::5"]));
    let ptr = "5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.";
    let m = udp(ptr, RecordType::PTR, false).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    assert_eq!(set(&m.answers), strs(&[&format!("{ptr} 10 PTR six.node.dc1.consul.")]));
    let m = tcp("96.0.127.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "not ours: the recursor's answer (none)");
    assert!(m.answers.is_empty());

    // Another datacenter ("No path to datacenter") and prepared queries ("query not found"):
    // NXDOMAIN with the SOA, as Consul.
    for (q, t) in [
        ("web.service.dc2.consul.", RecordType::A),
        ("_web._tcp.service.dc2.consul.", RecordType::SRV),
        (&*format!("{NODE}.node.dc2.consul."), RecordType::A),
        ("web.query.consul.", RecordType::A),
        ("web.query.dc1.consul.", RecordType::SRV),
        ("_web._tcp.query.consul.", RecordType::SRV),
    ] {
        let m = udp(q, t, true).await.unwrap();
        nxdomain_with_soa(&m, q);
        assert!(m.edns.is_some(), "{q}: EDNS echoed");
    }
}

// ---------------------------------------------------------------------------------------------
// DNS over TCP cannot be held: a deadline for each whole message, an idle timeout between
// messages, and caps on open connections. Agents on 127.0.121.1 and 127.0.121.4; clients also
// connect from 127.0.121.5 and 127.0.121.6.

mod tcp_limits {
    use super::{query, start_agent};
    use crate::harness::wait_for;
    use hickory_proto::op::{Message, ResponseCode};
    use hickory_proto::rr::RecordType;
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpSocket, TcpStream, UdpSocket};

    /// The server's read deadline for a connection's first message, and its idle timeout.
    const READ_TIMEOUT: Duration = Duration::from_secs(2);
    const IDLE_TIMEOUT: Duration = Duration::from_secs(8);
    /// Connections one client may hold open.
    const PER_CLIENT: usize = 64;

    #[derive(Debug)]
    enum Exchange {
        Answered(Message),
        /// The server closed the connection (or reset it) without answering.
        Closed,
        TimedOut,
    }

    fn framed(name: &str, t: RecordType) -> (u16, Vec<u8>) {
        let q = query(name, t, false);
        let bytes = q.to_vec().unwrap();
        let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(&bytes);
        (q.metadata.id, out)
    }

    async fn read_answer(c: &mut TcpStream) -> Exchange {
        let read = async {
            let len = c.read_u16().await.ok()?;
            let mut buf = vec![0u8; len as usize];
            c.read_exact(&mut buf).await.ok()?;
            Some(Message::from_vec(&buf).expect("an answer that decodes"))
        };
        match tokio::time::timeout(Duration::from_secs(5), read).await {
            Ok(Some(m)) => Exchange::Answered(m),
            Ok(None) => Exchange::Closed,
            Err(_) => Exchange::TimedOut,
        }
    }

    /// One question on an open connection.
    async fn ask(c: &mut TcpStream, name: &str) -> Exchange {
        let (id, bytes) = framed(name, RecordType::A);
        if c.write_all(&bytes).await.is_err() {
            return Exchange::Closed;
        }
        let answer = read_answer(c).await;
        if let Exchange::Answered(m) = &answer {
            assert_eq!(m.metadata.id, id);
            assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
        }
        answer
    }

    async fn connect_from(local: &str, server: SocketAddr) -> TcpStream {
        let sock = TcpSocket::new_v4().unwrap();
        sock.bind(format!("{local}:0").parse().unwrap()).unwrap();
        sock.connect(server).await.expect("tcp connect")
    }

    async fn udp_answered(local: &str, server: SocketAddr, name: &str) -> bool {
        let q = query(name, RecordType::A, false);
        let sock = UdpSocket::bind(format!("{local}:0")).await.unwrap();
        sock.send_to(&q.to_vec().unwrap(), server).await.unwrap();
        let mut buf = vec![0u8; 4096];
        match tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => Message::from_vec(&buf[..n]).is_ok_and(|m| !m.answers.is_empty()),
            _ => false,
        }
    }

    /// Waits (at most `limit`) for the server to close `c` without sending anything; how long
    /// it took from `since`.
    async fn closed_by_server(c: &mut TcpStream, since: Instant, limit: Duration) -> Duration {
        let mut buf = [0u8; 64];
        match tokio::time::timeout(limit, c.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => since.elapsed(),
            Ok(Ok(n)) => panic!("the server sent {n} bytes on a connection it should close"),
            Err(_) => panic!("the server kept the connection open for {limit:?}"),
        }
    }

    async fn dns_up(local: &str, server: SocketAddr, name: &str) {
        wait_for(Duration::from_secs(20), "the agent's node in DNS", || async {
            udp_answered(local, server, name).await.then_some(())
        })
        .await;
    }

    #[tokio::test]
    async fn dns_tcp_stalled_and_idle_connections_are_closed_while_others_are_served() {
        const IP: &str = "127.0.121.1";
        let server: SocketAddr = "127.0.121.1:8600".parse().unwrap();
        let name = "node-127-0-121-1.node.consul.";
        let a = start_agent(IP, &[]);
        a.ready().await;
        dns_up(IP, server, name).await;

        // A client that sends the two length bytes of a 64-byte message, and nothing more.
        let mut stalled = TcpStream::connect(server).await.unwrap();
        stalled.write_all(&[0, 64]).await.unwrap();
        let stalled_at = Instant::now();
        // One whose query is answered, and which then sends nothing.
        let mut idle = TcpStream::connect(server).await.unwrap();
        assert!(matches!(ask(&mut idle, name).await, Exchange::Answered(_)));
        let idle_at = Instant::now();

        // Meanwhile others are answered over TCP (three queries pipelined in one write, answered
        // in order) and UDP.
        let mut other = TcpStream::connect(server).await.unwrap();
        let mut ids = Vec::new();
        let mut batch = Vec::new();
        for n in [name, "consul.", name] {
            let (id, bytes) = framed(n, RecordType::A);
            ids.push(id);
            batch.extend_from_slice(&bytes);
        }
        other.write_all(&batch).await.unwrap();
        for id in ids {
            match read_answer(&mut other).await {
                Exchange::Answered(m) => assert_eq!(m.metadata.id, id, "pipelined answers come in order"),
                e => panic!("a pipelined query: {e:?}"),
            }
        }
        assert!(udp_answered(IP, server, name).await, "UDP is answered while a TCP client stalls");

        // The stalled client is cut off at the read deadline; the idle one at the idle timeout.
        let took = closed_by_server(&mut stalled, stalled_at, Duration::from_secs(20)).await;
        assert!(took >= READ_TIMEOUT / 2, "the stalled client was closed after {took:?}, before its deadline");
        let took = closed_by_server(&mut idle, idle_at, Duration::from_secs(30)).await;
        assert!(took >= IDLE_TIMEOUT / 2, "the idle client was closed after {took:?}, before the idle timeout");
        // A new connection is served as ever.
        let mut fresh = TcpStream::connect(server).await.unwrap();
        assert!(matches!(ask(&mut fresh, name).await, Exchange::Answered(_)));
    }

    #[tokio::test]
    async fn dns_tcp_connections_over_the_per_client_cap_are_closed() {
        const IP: &str = "127.0.121.4";
        const BUSY: &str = "127.0.121.5";
        const OTHER: &str = "127.0.121.6";
        let server: SocketAddr = "127.0.121.4:8600".parse().unwrap();
        let name = "node-127-0-121-4.node.consul.";
        let a = start_agent(IP, &[]);
        a.ready().await;
        dns_up(IP, server, name).await;

        // One client fills its share: each connection answered once, so each holds a place.
        let mut held = Vec::new();
        for i in 0..PER_CLIENT {
            let mut c = connect_from(BUSY, server).await;
            match ask(&mut c, name).await {
                Exchange::Answered(_) => held.push(c),
                e => panic!("connection {i} of {PER_CLIENT}: {e:?}"),
            }
        }
        // One more from it is closed unanswered, at once rather than at a deadline.
        let mut over = connect_from(BUSY, server).await;
        let at = Instant::now();
        match ask(&mut over, name).await {
            Exchange::Closed => {}
            e => panic!("a connection over the cap: {e:?}"),
        }
        assert!(at.elapsed() < READ_TIMEOUT, "closed after {:?}", at.elapsed());
        // Another address is served all the while, over TCP and UDP.
        let mut c = connect_from(OTHER, server).await;
        assert!(matches!(ask(&mut c, name).await, Exchange::Answered(_)));
        assert!(udp_answered(BUSY, server, name).await, "the cap is on TCP connections only");
        // The held connections still work; once they are closed, the client gets in again.
        assert!(matches!(ask(&mut held[0], name).await, Exchange::Answered(_)));
        drop(held);
        wait_for(Duration::from_secs(10), "the busy client served again", || async {
            let mut c = connect_from(BUSY, server).await;
            matches!(ask(&mut c, name).await, Exchange::Answered(_)).then_some(())
        })
        .await;
    }
}
