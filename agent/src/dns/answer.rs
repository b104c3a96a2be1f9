//! Builds the records for one question from a `&State` and the DNS settings. Pure: no IO, no
//! clock (the SOA serial comes in), randomness from the caller's RNG.

use super::names::{hex_ip, parse, Lookup};
use crate::config::DnsConfig;
use crate::state::State;
use crate::structs::{Node, Service, Status};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use rand::seq::SliceRandom;
use rand::Rng;
use std::net::IpAddr;

/// What the DNS server needs from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Lowercase, fully qualified (`consul.`).
    pub domain: String,
    pub datacenter: String,
    pub dns: DnsConfig,
    pub recursors: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
}

/// Either an answer of ours or "forward this to a recursor".
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Answer(Answer),
    Forward,
}

impl Answer {
    fn empty() -> Answer {
        Answer { rcode: ResponseCode::NoError, answers: Vec::new(), authorities: Vec::new(), additionals: Vec::new() }
    }
}

impl Settings {
    fn soa(&self, serial: u32) -> Record {
        let domain = Name::from_ascii(&self.domain).unwrap_or_else(|_| Name::root());
        let ns = Name::from_ascii(format!("ns.{}", self.domain)).unwrap_or_else(|_| Name::root());
        let hm = Name::from_ascii(format!("hostmaster.{}", self.domain)).unwrap_or_else(|_| Name::root());
        Record::from_rdata(domain, 0, RData::SOA(SOA::new(ns, hm, serial, 3600, 600, 86400, 0)))
    }

    fn node_ttl(&self) -> u32 {
        self.dns.node_ttl.as_secs() as u32
    }

    /// `service_ttl`: the exact name, else the longest `prefix*` key (`*` matches all), else 0.
    pub fn service_ttl(&self, service: &str) -> u32 {
        let mut best: Option<(usize, u32)> = None;
        for (k, d) in &self.dns.service_ttl {
            let secs = d.as_secs() as u32;
            if k.eq_ignore_ascii_case(service) {
                return secs;
            }
            if let Some(prefix) = k.strip_suffix('*') {
                let matches = service.len() >= prefix.len() && service[..prefix.len()].eq_ignore_ascii_case(prefix);
                if matches && best.is_none_or(|(l, _)| prefix.len() > l) {
                    best = Some((prefix.len(), secs));
                }
            }
        }
        best.map(|(_, s)| s).unwrap_or(0)
    }

    fn node_name(&self, node: &str) -> Option<Name> {
        Name::from_ascii(format!("{node}.node.{}.{}", self.datacenter, self.domain)).ok()
    }

    fn addr_name(&self, ip: IpAddr) -> Option<Name> {
        Name::from_ascii(format!("{}.addr.{}.{}", hex_ip(ip), self.datacenter, self.domain)).ok()
    }

    fn nx(&self, serial: u32) -> Answer {
        let mut a = Answer::empty();
        a.rcode = ResponseCode::NXDomain;
        a.authorities.push(self.soa(serial));
        a
    }

    /// NOERROR with no data: the name exists but not with this type.
    fn nodata(&self, serial: u32) -> Answer {
        let mut a = Answer::empty();
        a.authorities.push(self.soa(serial));
        a
    }

    fn dc_ok(&self, dc: &Option<String>) -> bool {
        dc.as_deref().is_none_or(|d| d.eq_ignore_ascii_case(&self.datacenter))
    }
}

fn ip_record(name: &Name, ttl: u32, ip: IpAddr) -> Record {
    let data = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(name.clone(), ttl, data)
}

fn type_wants_ip(qtype: RecordType, ip: IpAddr) -> bool {
    match qtype {
        RecordType::A => ip.is_ipv4(),
        RecordType::AAAA => ip.is_ipv6(),
        RecordType::ANY => true,
        _ => false,
    }
}

/// The aggregate status of an instance's node and service checks (passing if it has none).
pub fn instance_status(state: &State, node: &str, service_id: &str) -> Status {
    state.instance_checks(node, service_id).map(|c| c.status()).max().unwrap_or(Status::Passing)
}

/// Answers one question.
pub fn answer<R: Rng>(
    state: &State,
    s: &Settings,
    qname: &Name,
    qtype: RecordType,
    serial: u32,
    rng: &mut R,
) -> Outcome {
    let lookup = parse(&qname.to_ascii(), &s.domain);
    let a = match lookup {
        Lookup::Outside => return Outcome::Forward,
        Lookup::Unknown => s.nx(serial),
        Lookup::Apex => {
            let mut a = Answer::empty();
            if matches!(qtype, RecordType::SOA | RecordType::ANY) {
                a.answers.push(s.soa(serial));
            } else {
                a.authorities.push(s.soa(serial));
            }
            a
        }
        Lookup::Service { name, tag, dc } => {
            if !s.dc_ok(&dc) {
                s.nx(serial)
            } else {
                service(state, s, qname, qtype, &name, tag.as_deref(), serial, rng)
            }
        }
        Lookup::Node { name, dc } => {
            let node =
                state.nodes.get(&name).or_else(|| state.nodes.values().find(|n| n.node.eq_ignore_ascii_case(&name)));
            match node {
                Some(n) if s.dc_ok(&dc) => node_answer(s, qname, qtype, n, serial),
                _ => s.nx(serial),
            }
        }
        Lookup::Addr { ip, dc } => {
            if !s.dc_ok(&dc) {
                s.nx(serial)
            } else if type_wants_ip(qtype, ip) {
                let mut a = Answer::empty();
                a.answers.push(ip_record(qname, s.node_ttl(), ip));
                a
            } else {
                s.nodata(serial)
            }
        }
        Lookup::Ptr(ip) => {
            let mut a = Answer::empty();
            if matches!(qtype, RecordType::PTR | RecordType::ANY) {
                for n in state.nodes.values() {
                    if n.address.parse::<IpAddr>().ok() == Some(ip) {
                        if let Some(target) = s.node_name(&n.node) {
                            a.answers.push(Record::from_rdata(qname.clone(), s.node_ttl(), RData::PTR(PTR(target))));
                        }
                    }
                }
            }
            if a.answers.is_empty() {
                // Not one of ours: a recursor may know it.
                if s.recursors {
                    return Outcome::Forward;
                }
                return Outcome::Answer(s.nx(serial));
            }
            a
        }
    };
    Outcome::Answer(a)
}

fn node_answer(s: &Settings, qname: &Name, qtype: RecordType, n: &Node, serial: u32) -> Answer {
    let mut a = Answer::empty();
    let ttl = s.node_ttl();
    if let Ok(ip) = n.address.parse::<IpAddr>() {
        if type_wants_ip(qtype, ip) {
            a.answers.push(ip_record(qname, ttl, ip));
        }
    }
    if matches!(qtype, RecordType::TXT | RecordType::ANY) {
        for (k, v) in &n.meta {
            a.answers.push(Record::from_rdata(qname.clone(), ttl, RData::TXT(TXT::new(vec![format!("{k}={v}")]))));
        }
    }
    if a.answers.is_empty() {
        return s.nodata(serial);
    }
    a
}

#[allow(clippy::too_many_arguments)]
fn service<R: Rng>(
    state: &State,
    s: &Settings,
    qname: &Name,
    qtype: RecordType,
    name: &str,
    tag: Option<&str>,
    serial: u32,
    rng: &mut R,
) -> Answer {
    let mut instances: Vec<(&Node, &Service, Status)> = state
        .all_services()
        .filter(|(_, svc)| svc.service.eq_ignore_ascii_case(name))
        .filter(|(_, svc)| tag.is_none_or(|t| svc.tags.iter().any(|x| x.eq_ignore_ascii_case(t))))
        .filter_map(|(node, svc)| {
            let n = state.nodes.get(node)?;
            let status = instance_status(state, node, &svc.id);
            let ok = match status {
                Status::Passing => true,
                Status::Warning => !s.dns.only_passing,
                Status::Critical => false,
            };
            ok.then_some((n, svc, status))
        })
        .collect();
    if instances.is_empty() {
        return s.nx(serial);
    }
    instances.shuffle(rng);
    let ttl = s.service_ttl(name);
    let mut a = Answer::empty();
    for (n, svc, status) in instances {
        let own = !svc.address.is_empty() && svc.address != n.address;
        let addr = if own { &svc.address } else { &n.address };
        let Ok(ip) = addr.parse::<IpAddr>() else { continue };
        if qtype == RecordType::SRV {
            let target = if own { s.addr_name(ip) } else { s.node_name(&n.node) };
            let Some(target) = target else { continue };
            let w = if status == Status::Warning { svc.weights.warning } else { svc.weights.passing };
            let weight = w.clamp(0, u16::MAX as i64) as u16;
            a.answers.push(Record::from_rdata(
                qname.clone(),
                ttl,
                RData::SRV(SRV::new(1, weight, svc.port, target.clone())),
            ));
            let extra = ip_record(&target, ttl, ip);
            if !a.additionals.contains(&extra) {
                a.additionals.push(extra);
            }
        } else if type_wants_ip(qtype, ip) {
            let r = ip_record(qname, ttl, ip);
            if !a.answers.contains(&r) {
                a.answers.push(r);
            }
        }
    }
    if a.answers.is_empty() {
        return s.nodata(serial);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::structs::{Check, Weights};
    use rand::SeedableRng;
    use std::collections::BTreeMap;
    use std::time::Duration;

    fn settings() -> Settings {
        Settings {
            domain: "consul.".into(),
            datacenter: "dc1".into(),
            dns: DnsConfig {
                only_passing: false,
                node_ttl: Duration::from_secs(10),
                service_ttl: vec![("*".into(), Duration::from_secs(5)), ("db".into(), Duration::from_secs(30))],
                allow_stale: true,
                enable_truncate: false,
                udp_answer_limit: 3,
            },
            recursors: false,
        }
    }

    fn state() -> State {
        let mut st = State::default();
        for (name, addr) in [("n1", "10.0.0.1"), ("n2", "10.0.0.2"), ("n3", "10.0.0.3")] {
            let mut meta = BTreeMap::new();
            meta.insert("rack".to_string(), name.to_string());
            st.nodes.insert(
                name.into(),
                Node { node: name.into(), address: addr.into(), datacenter: "dc1".into(), meta, ..Default::default() },
            );
        }
        let svc = |id: &str, tags: &[&str], addr: &str| Service {
            id: id.into(),
            service: "web".into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            address: addr.into(),
            port: 8080,
            weights: Weights { passing: 10, warning: 2 },
            ..Default::default()
        };
        st.services.entry("n1".into()).or_default().insert("web1".into(), svc("web1", &["v1"], ""));
        st.services.entry("n2".into()).or_default().insert("web2".into(), svc("web2", &["v2"], "192.168.0.9"));
        st.services.entry("n3".into()).or_default().insert("web3".into(), svc("web3", &["v1"], ""));
        let check = |node: &str, id: &str, sid: &str, status| Check {
            node: node.into(),
            check_id: id.into(),
            service_id: sid.into(),
            status,
            ..Default::default()
        };
        st.checks.entry("n2".into()).or_default().insert("c2".into(), check("n2", "c2", "web2", Some(Status::Warning)));
        st.checks
            .entry("n3".into())
            .or_default()
            .insert("serf".into(), check("n3", "serf", "", Some(Status::Critical)));
        st
    }

    fn ask(st: &State, s: &Settings, q: &str, t: RecordType) -> Answer {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        match answer(st, s, &Name::from_ascii(q).unwrap(), t, 42, &mut rng) {
            Outcome::Answer(a) => a,
            Outcome::Forward => panic!("forwarded {q}"),
        }
    }

    fn sorted(rs: &[Record]) -> Vec<String> {
        let mut v: Vec<String> = rs.iter().map(|r| format!("{} {} {}", r.name, r.ttl, r.data)).collect();
        v.sort();
        v
    }

    #[test]
    fn service_a_skips_critical() {
        let a = ask(&state(), &settings(), "web.service.consul.", RecordType::A);
        assert_eq!(a.rcode, ResponseCode::NoError);
        assert_eq!(sorted(&a.answers), vec!["web.service.consul. 5 10.0.0.1", "web.service.consul. 5 192.168.0.9"]);
        assert!(a.additionals.is_empty());
    }

    #[test]
    fn only_passing() {
        let mut s = settings();
        s.dns.only_passing = true;
        let a = ask(&state(), &s, "web.service.consul.", RecordType::A);
        assert_eq!(sorted(&a.answers), vec!["web.service.consul. 5 10.0.0.1"]);
    }

    #[test]
    fn srv_targets_weights_and_additionals() {
        let a = ask(&state(), &settings(), "_web._tcp.service.consul.", RecordType::SRV);
        assert_eq!(
            sorted(&a.answers),
            vec![
                "_web._tcp.service.consul. 5 1 10 8080 n1.node.dc1.consul.",
                "_web._tcp.service.consul. 5 1 2 8080 c0a80009.addr.dc1.consul.",
            ]
        );
        assert_eq!(
            sorted(&a.additionals),
            vec!["c0a80009.addr.dc1.consul. 5 192.168.0.9", "n1.node.dc1.consul. 5 10.0.0.1"]
        );
    }

    #[test]
    fn tags() {
        let a = ask(&state(), &settings(), "v1.web.service.consul.", RecordType::A);
        assert_eq!(sorted(&a.answers), vec!["v1.web.service.consul. 5 10.0.0.1"]);
        let a = ask(&state(), &settings(), "_web._v2.service.dc1.consul.", RecordType::SRV);
        assert_eq!(sorted(&a.answers), vec!["_web._v2.service.dc1.consul. 5 1 2 8080 c0a80009.addr.dc1.consul."]);
        let a = ask(&state(), &settings(), "v9.web.service.consul.", RecordType::A);
        assert_eq!(a.rcode, ResponseCode::NXDomain);
    }

    #[test]
    fn nxdomain_has_soa() {
        for q in ["nope.service.consul.", "web.service.dc9.consul.", "x.node.consul.", "foo.consul."] {
            let a = ask(&state(), &settings(), q, RecordType::A);
            assert_eq!(a.rcode, ResponseCode::NXDomain, "{q}");
            assert!(a.answers.is_empty());
            assert_eq!(
                sorted(&a.authorities),
                vec!["consul. 0 ns.consul. hostmaster.consul. 42 3600 600 86400 0"],
                "{q}"
            );
        }
    }

    #[test]
    fn nodes_txt_addr_ptr() {
        let st = state();
        let s = settings();
        assert_eq!(
            sorted(&ask(&st, &s, "n1.node.consul.", RecordType::A).answers),
            vec!["n1.node.consul. 10 10.0.0.1"]
        );
        assert_eq!(
            sorted(&ask(&st, &s, "n1.node.dc1.consul.", RecordType::TXT).answers),
            vec!["n1.node.dc1.consul. 10 rack=n1"]
        );
        assert_eq!(
            sorted(&ask(&st, &s, "n1.node.consul.", RecordType::ANY).answers),
            vec!["n1.node.consul. 10 10.0.0.1", "n1.node.consul. 10 rack=n1"]
        );
        let nodata = ask(&st, &s, "n1.node.consul.", RecordType::AAAA);
        assert_eq!((nodata.rcode, nodata.answers.len(), nodata.authorities.len()), (ResponseCode::NoError, 0, 1));
        assert_eq!(
            sorted(&ask(&st, &s, "0a000001.addr.consul.", RecordType::A).answers),
            vec!["0a000001.addr.consul. 10 10.0.0.1"]
        );
        assert_eq!(
            sorted(&ask(&st, &s, "2.0.0.10.in-addr.arpa.", RecordType::PTR).answers),
            vec!["2.0.0.10.in-addr.arpa. 10 n2.node.dc1.consul."]
        );
        assert_eq!(ask(&st, &s, "9.9.9.9.in-addr.arpa.", RecordType::PTR).rcode, ResponseCode::NXDomain);
    }

    #[test]
    fn ttls() {
        let s = settings();
        assert_eq!(s.service_ttl("db"), 30);
        assert_eq!(s.service_ttl("web"), 5);
        let mut s2 = settings();
        s2.dns.service_ttl = vec![("we*".into(), Duration::from_secs(3))];
        assert_eq!(s2.service_ttl("web"), 3);
        assert_eq!(s2.service_ttl("db"), 0);
    }

    #[test]
    fn outside_forwards() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let o = answer(&state(), &settings(), &Name::from_ascii("example.com.").unwrap(), RecordType::A, 1, &mut rng);
        assert_eq!(o, Outcome::Forward);
    }
}
