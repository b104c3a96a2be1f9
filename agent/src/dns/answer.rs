//! Builds the records for one question from a `&State` and the DNS settings. Pure: no IO, no
//! clock (the SOA serial comes in), randomness from the caller's RNG. A CNAME target inside the
//! domain is answered here; one outside it is left in [`Answer::pending`] for the IO layer to
//! ask the recursors about (Consul's `resolveCNAME`).
//!
//! Where Consul's answer is an RPC error, ours is the rcode Consul maps that error to
//! (`rCodeFromError`): another datacenter is "No path to datacenter" (we have no WAN
//! federation) and an unknown prepared query is "query not found", both NXDOMAIN with the SOA.

use super::names::{hex_ip, parse, Lookup};
use crate::config::DnsConfig;
use crate::state::State;
use crate::structs::{Node, Service, Status};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use parking_lot::Mutex;
use rand::seq::SliceRandom;
use rand::Rng;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

/// Consul's `maxRecursionLevelDefault`: how many CNAME hops inside the domain are followed.
const MAX_RECURSION: u8 = 3;
/// Consul's `maxRecurseRecords`: records kept from one CNAME target's resolution without EDNS.
pub const MAX_RECURSE_RECORDS: usize = 5;

/// What the DNS server needs from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Lowercase, fully qualified (`consul.`).
    pub domain: String,
    pub datacenter: String,
    pub dns: DnsConfig,
    pub recursors: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Answer,
    Additional,
}

/// A host name outside the domain that a CNAME or SRV record points at: the IO layer asks the
/// recursors for its A records and appends them to `section`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub name: Name,
    pub section: Section,
    /// Replaces the recursor's TTLs and keeps only CNAME/A/AAAA records (a service's FQDN, as
    /// Consul's `makeRecordFromFQDN`); `None` keeps the recursor's answer as it is (a node's).
    pub ttl: Option<u32>,
    /// At most this many records are kept.
    pub limit: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
    pub pending: Vec<Pending>,
}

/// Either an answer of ours or "forward this to a recursor".
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Answer(Answer),
    Forward,
    /// A prepared query that found nothing here and fails over: its (interpolated) definition
    /// and the datacenters to try, in order.
    Failover {
        query: serde_json::Value,
    },
    /// A name in another datacenter: one of its servers answers the question.
    OtherDatacenter(String),
}

impl Answer {
    /// No such name, with the zone's SOA.
    pub fn nxdomain(settings: &Settings, serial: u32) -> Answer {
        Answer { rcode: ResponseCode::NXDomain, authorities: vec![settings.soa(serial)], ..Answer::empty() }
    }

    fn empty() -> Answer {
        Answer {
            rcode: ResponseCode::NoError,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
            pending: Vec::new(),
        }
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

    /// Whether `name` is inside our domain (Consul resolves such CNAME targets itself).
    fn inside(&self, name: &Name) -> bool {
        let n = name.to_ascii().to_ascii_lowercase();
        n.ends_with(&format!(".{}", self.domain))
    }
}

fn ip_record(name: &Name, ttl: u32, ip: IpAddr) -> Record {
    let data = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(name.clone(), ttl, data)
}

/// Consul's `makeARecord`: an A record answers A, an AAAA record AAAA, and both go with SRV, ANY,
/// NS and TXT questions.
fn wants_ip(qtype: RecordType, ip: IpAddr) -> bool {
    match qtype {
        RecordType::A => ip.is_ipv4(),
        RecordType::AAAA => ip.is_ipv6(),
        RecordType::SRV | RecordType::ANY | RecordType::NS | RecordType::TXT => true,
        _ => false,
    }
}

/// A host name as a fully qualified DNS name (`db.example.com` → `db.example.com.`).
fn fqdn(host: &str) -> Option<Name> {
    let mut n = Name::from_ascii(host).ok()?;
    n.set_fqdn(true);
    Some(n)
}

/// RFC 1464 `key=value`, with Consul's escaping (`encodeKVasRFC1464`): backquote doubled, `=` in
/// the key and the key's leading and trailing spaces backquoted.
pub fn rfc1464(key: &str, value: &str) -> String {
    let mut k = key.replace('`', "``").replace('=', "`=");
    let lead = k.len() - k.trim_start_matches(' ').len();
    k = format!("{}{}", "` ".repeat(lead), &k[lead..]);
    let trail = k.len() - k.trim_end_matches(' ').len();
    k = format!("{}{}", &k[..k.len() - trail], "` ".repeat(trail));
    format!("{k}={}", value.replace('`', "``"))
}

/// Node meta as TXT records named `name`; `rfc1035-` keys give the bare value.
fn meta_txt(name: &Name, n: &Node, ttl: u32) -> Vec<Record> {
    n.meta
        .iter()
        .map(|(k, v)| {
            let txt = if k.to_ascii_lowercase().starts_with("rfc1035-") { v.clone() } else { rfc1464(k, v) };
            Record::from_rdata(name.clone(), ttl, RData::TXT(TXT::new(vec![txt])))
        })
        .collect()
}

fn push_unique(v: &mut Vec<Record>, r: Record) {
    if !v.contains(&r) {
        v.push(r);
    }
}

/// The aggregate status of an instance's node and service checks (passing if it has none).
pub fn instance_status(state: &State, node: &str, service_id: &str) -> Status {
    state.instance_checks(node, service_id).map(|c| c.status()).max().unwrap_or(Status::Passing)
}

/// Answers one question. `edns`: whether the request carried EDNS (it lifts the cap on records
/// taken from resolving a CNAME target). A service question's records come from `cache` while
/// the catalog is unchanged.
#[allow(clippy::too_many_arguments)]
pub fn answer<R: Rng>(
    state: &State,
    s: &Settings,
    cache: Option<&Mutex<Cache>>,
    qname: &Name,
    qtype: RecordType,
    edns: bool,
    serial: u32,
    rng: &mut R,
    id: Option<&crate::acl::Identity>,
) -> Outcome {
    let mut cx = Cx { state, s, serial, edns, rng, cache, recursed: false, id };
    if let Some(hit) = cache.and_then(|c| c.lock().get(state.catalog_index(), qname, qtype, edns)) {
        return Outcome::Answer(cx.assemble(&hit));
    }
    cx.answer(qname, qtype, MAX_RECURSION)
}

/// A prepared query's own `DNS.TTL`, which overrides the agent's `dns_config`.
fn query_ttl(q: &serde_json::Value) -> Option<u32> {
    let t = q.get("DNS")?.get("TTL")?.as_str().filter(|t| !t.is_empty())?;
    api::duration::parse(t).ok().map(|d| d.as_secs() as u32)
}

/// An answer for instances found elsewhere (a prepared query's failover).
#[allow(clippy::too_many_arguments)]
pub fn answer_with<R: Rng>(
    state: &State,
    s: &Settings,
    qname: &Name,
    qtype: RecordType,
    edns: bool,
    serial: u32,
    rng: &mut R,
    q: &serde_json::Value,
    nodes: &[(Node, Service)],
) -> Answer {
    let mut cx = Cx { state, s, serial, edns, rng, cache: None, recursed: true, id: None };
    cx.failover_answer(qname, qtype, q, nodes)
}

/// How many questions the cache holds before it starts over.
const CACHE_ENTRIES: usize = 1024;

/// Service questions' records, built once per catalog change rather than once per query: a busy
/// name costs a hash lookup and the copies of its records, not a walk of the catalog. Entries
/// are for the catalog index they were built at; any write to nodes, services or checks moves
/// the index and empties the cache.
#[derive(Default)]
pub struct Cache {
    index: u64,
    entries: HashMap<(Name, RecordType, bool), Arc<ServiceRecords>>,
}

impl Cache {
    fn get(&mut self, index: u64, qname: &Name, qtype: RecordType, edns: bool) -> Option<Arc<ServiceRecords>> {
        if index != self.index {
            self.entries.clear();
            self.index = index;
            return None;
        }
        // `Name`'s equality ignores case; the records carry the question's own spelling.
        let hit = self.entries.get(&(qname.clone(), qtype, edns))?;
        hit.qname.iter().eq(qname.iter()).then(|| hit.clone())
    }

    fn put(&mut self, index: u64, qname: &Name, qtype: RecordType, edns: bool, records: Arc<ServiceRecords>) {
        if index != self.index {
            self.entries.clear();
            self.index = index;
        }
        if self.entries.len() >= CACHE_ENTRIES {
            self.entries.clear();
        }
        self.entries.insert((qname.clone(), qtype, edns), records);
    }
}

/// A service question's instances with their records, in catalog order: its answer before the
/// per-query shuffle and deduplication ([`Cx::assemble`]).
pub struct ServiceRecords {
    qname: Name,
    srv: bool,
    instances: Vec<InstanceGroup>,
}

/// One instance's part of a service answer.
struct InstanceGroup {
    records: InstanceRecords,
    /// Its node's meta as TXT (SRV answers' ADDITIONAL).
    meta: Vec<Record>,
    /// Instances with the same key (node, address, port) give one SRV record.
    key: usize,
}

/// One question's context, threaded through the CNAME recursion.
struct Cx<'a, R> {
    state: &'a State,
    s: &'a Settings,
    serial: u32,
    edns: bool,
    rng: &'a mut R,
    cache: Option<&'a Mutex<Cache>>,
    /// Whether answering looked up another name (a CNAME target): such answers are not cached,
    /// as the target's own answer is shuffled per query.
    recursed: bool,
    /// Who asks (ACLs on): only nodes and services it may read are answered.
    id: Option<&'a crate::acl::Identity>,
}

/// The records one service instance contributes (Consul's `makeNodeServiceRecords`).
#[derive(Default, Clone)]
struct InstanceRecords {
    answers: Vec<Record>,
    extra: Vec<Record>,
    pending: Vec<Pending>,
}

impl<R: Rng> Cx<'_, R> {
    fn may_read(&self, node: &str, service: Option<&str>) -> bool {
        use crate::acl::{Access, Resource};
        self.id.is_none_or(|id| {
            id.allows(Resource::Node, node, Access::Read)
                && service.is_none_or(|s| id.allows(Resource::Service, s, Access::Read))
        })
    }

    fn answer(&mut self, qname: &Name, qtype: RecordType, level: u8) -> Outcome {
        let s = self.s;
        let serial = self.serial;
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
            Lookup::Query { dc: Some(dc), .. } if !s.dc_ok(&Some(dc.clone())) => {
                return Outcome::OtherDatacenter(dc.to_ascii_lowercase())
            }
            Lookup::Query { name, .. } => return self.query(qname, qtype, &name, level),
            Lookup::Service { dc, .. } | Lookup::Node { dc, .. } | Lookup::Addr { dc, .. } if !s.dc_ok(&dc) => {
                s.nx(serial)
            }
            Lookup::Service { name, tag, .. } => self.service(qname, qtype, &name, tag.as_deref(), level),
            Lookup::Node { name, .. } => {
                let st = self.state;
                let node = st
                    .nodes
                    .get(&name)
                    .or_else(|| st.nodes.values().find(|n| n.node.eq_ignore_ascii_case(&name)))
                    .filter(|n| self.may_read(&n.node, None));
                match node {
                    Some(n) => self.node_answer(qname, qtype, n, level),
                    None => s.nx(serial),
                }
            }
            Lookup::Addr { ip, .. } => {
                // Consul puts the address in ADDITIONAL when the type does not match.
                let mut a = Answer::empty();
                let r = ip_record(qname, s.node_ttl(), ip);
                let matching = matches!(
                    (qtype, ip),
                    (RecordType::A, IpAddr::V4(_)) | (RecordType::AAAA, IpAddr::V6(_)) | (RecordType::ANY, _)
                );
                if matching {
                    a.answers.push(r);
                } else {
                    a.additionals.push(r);
                }
                a
            }
            Lookup::Ptr(ip) => {
                let a = self.ptr(qname, qtype, ip);
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

    /// Consul's `handlePtr`: the first node with this address, else the first service instance
    /// with it as its own address.
    fn ptr(&mut self, qname: &Name, qtype: RecordType, ip: IpAddr) -> Answer {
        let s = self.s;
        let mut a = Answer::empty();
        if !matches!(qtype, RecordType::PTR | RecordType::ANY) {
            return a;
        }
        let is_ip = |addr: &str| addr.parse::<IpAddr>().ok() == Some(ip);
        let target = match self.state.nodes.values().find(|n| is_ip(&n.address) && self.may_read(&n.node, None)) {
            Some(n) => s.node_name(&n.node),
            None => self
                .state
                .all_services()
                .find(|(node, svc)| is_ip(&svc.address) && self.may_read(node, Some(&svc.service)))
                .and_then(|(_, svc)| {
                    Name::from_ascii(format!("{}.service.{}.{}", svc.service, s.datacenter, s.domain)).ok()
                }),
        };
        if let Some(t) = target {
            a.answers.push(Record::from_rdata(qname.clone(), s.node_ttl(), RData::PTR(PTR(t))));
        }
        a
    }

    /// Consul's `resolveCNAME`: a target inside the domain is answered here as an ANY question
    /// one level deeper; one outside is left for the recursors (returned as a name), if any.
    fn resolve(&mut self, target: &Name, level: u8) -> (Vec<Record>, Vec<Name>) {
        self.recursed = true;
        if self.s.inside(target) {
            if level == 0 {
                tracing::warn!(name = %target, "dns: CNAME recursion too deep, not resolving");
                return (Vec::new(), Vec::new());
            }
            return match self.answer(target, RecordType::ANY, level - 1) {
                Outcome::Answer(a) => (a.answers, a.pending.into_iter().map(|p| p.name).collect()),
                Outcome::Forward | Outcome::Failover { .. } | Outcome::OtherDatacenter(_) => (Vec::new(), Vec::new()),
            };
        }
        if self.s.recursors {
            (Vec::new(), vec![target.clone()])
        } else {
            (Vec::new(), Vec::new())
        }
    }

    /// Consul's `makeRecordFromNode`: the address record, or a CNAME to the node's host name
    /// followed by what that name resolves to.
    fn node_records(&mut self, qname: &Name, qtype: RecordType, n: &Node, ttl: u32, level: u8) -> InstanceRecords {
        let mut out = InstanceRecords::default();
        match n.address.parse::<IpAddr>() {
            Ok(ip) => {
                if wants_ip(qtype, ip) {
                    out.answers.push(ip_record(qname, ttl, ip));
                }
            }
            Err(_) => {
                let Some(target) = fqdn(&n.address) else { return out };
                out.answers.push(Record::from_rdata(qname.clone(), ttl, RData::CNAME(CNAME(target.clone()))));
                let (more, outside) = self.resolve(&target, level);
                out.answers.extend(more);
                out.pending.extend(outside.into_iter().map(|name| Pending {
                    name,
                    section: Section::Answer,
                    ttl: None,
                    limit: usize::MAX,
                }));
            }
        }
        out
    }

    /// Consul's `handleNodeQuery`.
    fn node_answer(&mut self, qname: &Name, qtype: RecordType, n: &Node, level: u8) -> Answer {
        let mut a = Answer::empty();
        // Other types: NOERROR and nothing else, as Consul.
        if !matches!(qtype, RecordType::A | RecordType::AAAA | RecordType::ANY | RecordType::TXT) {
            return a;
        }
        let ttl = self.s.node_ttl();
        if qtype != RecordType::TXT {
            let r = self.node_records(qname, qtype, n, ttl, level);
            a.answers = r.answers;
            a.pending = r.pending;
        }
        let meta = meta_txt(qname, n, ttl);
        if matches!(qtype, RecordType::TXT | RecordType::ANY) {
            a.answers.extend(meta);
        } else if self.s.dns.enable_additional_node_meta_txt {
            a.additionals.extend(meta);
        }
        // A node without the asked-for address type is NOERROR with no SOA, as Consul.
        a
    }

    /// Consul's `makeRecordFromFQDN`: SRV to the host name with its resolution in ADDITIONAL, or
    /// a CNAME followed by its resolution; resolved records take the service's TTL.
    fn fqdn_records(
        &mut self,
        qname: &Name,
        qtype: RecordType,
        host: &str,
        srv: (u16, u16),
        ttl: u32,
        level: u8,
    ) -> InstanceRecords {
        let mut out = InstanceRecords::default();
        let Some(target) = fqdn(host) else { return out };
        let limit = if self.edns { usize::MAX } else { MAX_RECURSE_RECORDS };
        let (more, outside) = self.resolve(&target, level);
        let resolved: Vec<Record> = more
            .into_iter()
            .filter(|r| matches!(r.record_type(), RecordType::CNAME | RecordType::A | RecordType::AAAA))
            .take(limit)
            .map(|mut r| {
                r.ttl = ttl;
                r
            })
            .collect();
        let section = if qtype == RecordType::SRV { Section::Additional } else { Section::Answer };
        let rest = limit - resolved.len();
        if rest > 0 {
            out.pending.extend(outside.into_iter().map(|name| Pending { name, section, ttl: Some(ttl), limit: rest }));
        }
        if qtype == RecordType::SRV {
            out.answers.push(Record::from_rdata(qname.clone(), ttl, RData::SRV(SRV::new(1, srv.0, srv.1, target))));
            out.extra = resolved;
        } else {
            out.answers.push(Record::from_rdata(qname.clone(), ttl, RData::CNAME(CNAME(target))));
            out.answers.extend(resolved);
        }
        out
    }

    /// An instance at an IP: SRV to `target` with the address in ADDITIONAL, or the address.
    /// (`target` is built only for SRV: most questions are for addresses.)
    fn ip_records(
        qname: &Name,
        qtype: RecordType,
        target: impl FnOnce() -> Option<Name>,
        ip: IpAddr,
        srv: (u16, u16),
        ttl: u32,
    ) -> InstanceRecords {
        let mut out = InstanceRecords::default();
        if !wants_ip(qtype, ip) {
            return out;
        }
        if qtype == RecordType::SRV {
            let Some(target) = target() else { return out };
            out.answers.push(Record::from_rdata(
                qname.clone(),
                ttl,
                RData::SRV(SRV::new(1, srv.0, srv.1, target.clone())),
            ));
            out.extra.push(ip_record(&target, ttl, ip));
        } else {
            out.answers.push(ip_record(qname, ttl, ip));
        }
        out
    }

    /// Consul's `makeNodeServiceRecords`. A service address equal to its node's counts as none.
    #[allow(clippy::too_many_arguments)]
    fn instance_records(
        &mut self,
        qname: &Name,
        qtype: RecordType,
        n: &Node,
        svc: &Service,
        weight: u16,
        ttl: u32,
        level: u8,
    ) -> InstanceRecords {
        let s = self.s;
        let srv = (weight, svc.port);
        let svc_addr = if svc.address == n.address { "" } else { svc.address.as_str() };
        if svc_addr.is_empty() && n.address.is_empty() {
            return InstanceRecords::default();
        }
        let node_ip = n.address.parse::<IpAddr>().ok();
        match (svc_addr, node_ip) {
            ("", Some(ip)) => Self::ip_records(qname, qtype, || s.node_name(&n.node), ip, srv, ttl),
            ("", None) => self.fqdn_records(qname, qtype, &n.address, srv, ttl, level),
            (addr, _) if addr.parse::<IpAddr>().is_ok() => {
                let ip: IpAddr = addr.parse().expect("checked above");
                Self::ip_records(qname, qtype, || s.addr_name(ip), ip, srv, ttl)
            }
            // A service whose address is the very name asked for is answered from its node.
            (addr, Some(ip)) if fqdn(addr).is_some_and(|f| f == *qname) => {
                Self::ip_records(qname, qtype, || s.node_name(&n.node), ip, srv, ttl)
            }
            (addr, _) => self.fqdn_records(qname, qtype, addr, srv, ttl, level),
        }
    }

    /// A prepared query's instances here; nothing here and a failover list: the caller asks
    /// the other datacenters.
    fn query(&mut self, qname: &Name, qtype: RecordType, name: &str, level: u8) -> Outcome {
        let (state, s) = (self.state, self.s);
        let Some(q) = crate::prepared_query::resolve(state, name) else {
            return Outcome::Answer(s.nx(self.serial));
        };
        self.recursed = true; // a query's answer is never cached as a service's
        let entries = crate::prepared_query::select(state, &q, &s.datacenter);
        let instances: Vec<(&Node, &Service, Status)> = entries
            .iter()
            .filter_map(|e| {
                let n = state.nodes.get(&e.node.node)?;
                let svc = state.services.get(&e.node.node)?.get(&e.service.id)?;
                self.may_read(&n.node, Some(&svc.service)).then(|| (n, svc, instance_status(state, &n.node, &svc.id)))
            })
            .collect();
        if instances.is_empty() {
            // NearestN needs the WAN distances, which the caller knows; Datacenters do not.
            let failover = crate::prepared_query::failover_order(&q, &[], &s.datacenter);
            let nearest = q["Service"]["Failover"]["NearestN"].as_u64().unwrap_or(0);
            if !failover.is_empty() || nearest > 0 {
                return Outcome::Failover { query: q };
            }
            return Outcome::Answer(s.nx(self.serial));
        }
        let ttl = query_ttl(&q).unwrap_or_else(|| s.service_ttl(q["Service"]["Service"].as_str().unwrap_or("")));
        match self.records_for(qname, qtype, instances, ttl, level) {
            Some(r) => Outcome::Answer(self.assemble(&r)),
            None => Outcome::Answer(s.nx(self.serial)),
        }
    }

    /// Answers with instances another datacenter's server found for a failing-over query.
    pub fn failover_answer(
        &mut self,
        qname: &Name,
        qtype: RecordType,
        q: &serde_json::Value,
        nodes: &[(Node, Service)],
    ) -> Answer {
        let ttl = query_ttl(q).unwrap_or_else(|| self.s.service_ttl(q["Service"]["Service"].as_str().unwrap_or("")));
        let instances: Vec<(&Node, &Service, Status)> = nodes.iter().map(|(n, s)| (n, s, Status::Passing)).collect();
        match self.records_for(qname, qtype, instances, ttl, MAX_RECURSION) {
            Some(r) => self.assemble(&r),
            None => self.s.nx(self.serial),
        }
    }

    fn service(&mut self, qname: &Name, qtype: RecordType, name: &str, tag: Option<&str>, level: u8) -> Answer {
        let top = level == MAX_RECURSION;
        let recursed = std::mem::replace(&mut self.recursed, false);
        let Some(records) = self.service_records(qname, qtype, name, tag, level) else {
            self.recursed |= recursed;
            return self.s.nx(self.serial);
        };
        let records = Arc::new(records);
        if let (true, false, Some(cache)) = (top, self.recursed, self.cache) {
            cache.lock().put(self.state.catalog_index(), qname, qtype, self.edns, records.clone());
        }
        self.recursed |= recursed;
        self.assemble(&records)
    }

    /// The instances of a service that DNS may answer with (not critical; only passing with
    /// `only_passing`), each with its records: `None` when there are none.
    fn service_records(
        &mut self,
        qname: &Name,
        qtype: RecordType,
        name: &str,
        tag: Option<&str>,
        level: u8,
    ) -> Option<ServiceRecords> {
        let (state, s) = (self.state, self.s);
        let instances: Vec<(&Node, &Service, Status)> = state
            .all_services()
            .filter(|(_, svc)| svc.service.eq_ignore_ascii_case(name))
            .filter(|(_, svc)| tag.is_none_or(|t| svc.tags.iter().any(|x| x.eq_ignore_ascii_case(t))))
            .filter(|(node, svc)| self.may_read(node, Some(&svc.service)))
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
            return None;
        }
        self.records_for(qname, qtype, instances, s.service_ttl(name), level)
    }

    /// The records of `instances` (each with its status) for a service-like question.
    fn records_for(
        &mut self,
        qname: &Name,
        qtype: RecordType,
        instances: Vec<(&Node, &Service, Status)>,
        ttl: u32,
        level: u8,
    ) -> Option<ServiceRecords> {
        if instances.is_empty() {
            return None;
        }
        let s = self.s;
        let weight = |svc: &Service, status| {
            let w = if status == Status::Warning { svc.weights.warning } else { svc.weights.passing };
            w.clamp(0, u16::MAX as i64) as u16
        };
        let srv = qtype == RecordType::SRV;
        let mut keys: Vec<(&str, &str, u16)> = Vec::new();
        let mut groups = Vec::with_capacity(instances.len());
        for (n, svc, status) in instances {
            let key = (n.node.as_str(), svc.address.as_str(), svc.port);
            let key = keys.iter().position(|k| *k == key).unwrap_or_else(|| {
                keys.push(key);
                keys.len() - 1
            });
            let records = self.instance_records(qname, qtype, n, svc, weight(svc, status), ttl, level);
            let meta = match s.node_name(&n.node) {
                Some(node_name) if srv && s.dns.enable_additional_node_meta_txt => meta_txt(&node_name, n, ttl),
                _ => Vec::new(),
            };
            groups.push(InstanceGroup { records, meta, key });
        }
        Some(ServiceRecords { qname: qname.clone(), srv, instances: groups })
    }

    /// A service answer from its instances' records, in a random order.
    fn assemble(&mut self, sr: &ServiceRecords) -> Answer {
        let mut order: Vec<&InstanceGroup> = sr.instances.iter().collect();
        order.shuffle(self.rng);
        let mut a = Answer::empty();
        if sr.srv {
            // Consul's `addServiceSRVRecordsToMessage`: one SRV per node, address and port.
            let mut seen = vec![false; sr.instances.len()];
            for g in order {
                if std::mem::replace(&mut seen[g.key], true) {
                    continue;
                }
                a.answers.extend(g.records.answers.iter().cloned());
                for x in &g.records.extra {
                    push_unique(&mut a.additionals, x.clone());
                }
                a.pending.extend(g.records.pending.iter().cloned());
                for x in &g.meta {
                    push_unique(&mut a.additionals, x.clone());
                }
            }
        } else {
            // Consul's `addServiceNodeRecordsToMessage`: addresses, deduplicated; a CNAME (the
            // first one, with its resolution) only when no instance has an address.
            // (Comparing records, not their text as Consul does: the same test, no allocation.)
            let mut cname: Option<&InstanceRecords> = None;
            for g in order {
                let r = &g.records;
                let Some(first) = r.answers.first() else { continue };
                if first.record_type() == RecordType::CNAME {
                    cname.get_or_insert(r);
                } else if !a.answers.contains(first) {
                    a.answers.extend(r.answers.iter().cloned());
                }
            }
            if a.answers.is_empty() {
                if let Some(r) = cname {
                    a.answers = r.answers.clone();
                    a.pending = r.pending.clone();
                }
            }
        }
        if a.answers.is_empty() {
            return self.s.nodata(self.serial);
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::structs::{Check, Weights};
    use rand::SeedableRng;
    use std::collections::{BTreeMap, HashSet};
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
                enable_additional_node_meta_txt: true,
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
        match answer(st, s, None, &Name::from_ascii(q).unwrap(), t, false, 42, &mut rng, None) {
            Outcome::Answer(a) => a,
            other => panic!("{q}: not answered here: {}", matches!(other, Outcome::Forward)),
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
        // Node meta as TXT in ADDITIONAL, named by the node (enable_additional_node_meta_txt).
        assert_eq!(
            sorted(&a.additionals),
            vec![
                "c0a80009.addr.dc1.consul. 5 192.168.0.9",
                "n1.node.dc1.consul. 5 10.0.0.1",
                "n1.node.dc1.consul. 5 rack=n1",
                "n2.node.dc1.consul. 5 rack=n2",
            ]
        );
        let mut s = settings();
        s.dns.enable_additional_node_meta_txt = false;
        let a = ask(&state(), &s, "_web._tcp.service.consul.", RecordType::SRV);
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
        // A and AAAA carry the meta in ADDITIONAL; a missing type is NOERROR without SOA, as Consul.
        assert_eq!(
            sorted(&ask(&st, &s, "n1.node.consul.", RecordType::A).additionals),
            vec!["n1.node.consul. 10 rack=n1"]
        );
        let nodata = ask(&st, &s, "n1.node.consul.", RecordType::AAAA);
        assert_eq!((nodata.rcode, nodata.answers.len(), nodata.authorities.len()), (ResponseCode::NoError, 0, 0));
        assert_eq!(sorted(&nodata.additionals), vec!["n1.node.consul. 10 rack=n1"]);
        let mut quiet = settings();
        quiet.dns.enable_additional_node_meta_txt = false;
        assert!(ask(&st, &quiet, "n1.node.consul.", RecordType::A).additionals.is_empty());
        assert_eq!(
            sorted(&ask(&st, &quiet, "n1.node.consul.", RecordType::TXT).answers),
            vec!["n1.node.consul. 10 rack=n1"],
            "a TXT question is answered whatever the setting"
        );
        let other = ask(&st, &s, "n1.node.consul.", RecordType::MX);
        assert_eq!(
            (other.rcode, other.answers.len(), other.authorities.len(), other.additionals.len()),
            (ResponseCode::NoError, 0, 0, 0)
        );
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

    /// Nodes and services with host names instead of IPs; IPv6 nodes and their PTR names.
    fn hostname_state() -> State {
        let mut st = state();
        let mut meta = BTreeMap::new();
        meta.insert("rfc1035-note".to_string(), "plain".to_string());
        meta.insert(" a=b ".to_string(), "x`y".to_string());
        for (name, addr) in [("ext", "db.example.com"), ("v6", "2001:db8::7"), ("inner", "n1.node.consul")] {
            st.nodes.insert(
                name.into(),
                Node {
                    node: name.into(),
                    address: addr.into(),
                    datacenter: "dc1".into(),
                    meta: meta.clone(),
                    ..Default::default()
                },
            );
        }
        let svc = |id: &str, name: &str, addr: &str| Service {
            id: id.into(),
            service: name.into(),
            address: addr.into(),
            port: 5432,
            weights: Weights { passing: 1, warning: 1 },
            ..Default::default()
        };
        // `pg` lives on an external host (node address); `cache` has its own host name;
        // `alias` points inside the domain; `mixed` has one IP instance and one host name.
        st.services.entry("ext".into()).or_default().insert("pg".into(), svc("pg", "pg", ""));
        st.services.entry("n1".into()).or_default().insert("cache".into(), svc("cache", "cache", "cache.example.net"));
        st.services.entry("n1".into()).or_default().insert("alias".into(), svc("alias", "alias", "n2.node.consul"));
        st.services.entry("n1".into()).or_default().insert("m1".into(), svc("m1", "mixed", "mixed.example.org"));
        st.services.entry("n2".into()).or_default().insert("m2".into(), svc("m2", "mixed", ""));
        st.services.entry("v6".into()).or_default().insert("ipv6".into(), svc("ipv6", "ipv6", ""));
        st.services.entry("n1".into()).or_default().insert("own".into(), svc("own", "own", "192.168.7.7"));
        st
    }

    #[test]
    fn service_host_names_give_cnames() {
        let st = hostname_state();
        let s = settings();
        // No recursors: the CNAME alone, nothing pending.
        let a = ask(&st, &s, "pg.service.consul.", RecordType::A);
        assert_eq!(a.rcode, ResponseCode::NoError);
        assert_eq!(sorted(&a.answers), vec!["pg.service.consul. 5 db.example.com."]);
        assert_eq!(a.answers[0].record_type(), RecordType::CNAME);
        assert!(a.pending.is_empty() && a.additionals.is_empty());
        // With recursors: the target is left for them, in ANSWER, with the service TTL, at most 5.
        let mut rs = settings();
        rs.recursors = true;
        let a = ask(&st, &rs, "cache.service.consul.", RecordType::A);
        assert_eq!(sorted(&a.answers), vec!["cache.service.consul. 5 cache.example.net."]);
        assert_eq!(
            a.pending,
            vec![Pending {
                name: Name::from_ascii("cache.example.net.").unwrap(),
                section: Section::Answer,
                ttl: Some(5),
                limit: MAX_RECURSE_RECORDS
            }]
        );
        // SRV: the host name is the target; its resolution goes to ADDITIONAL.
        let a = ask(&st, &rs, "_cache._tcp.service.consul.", RecordType::SRV);
        assert_eq!(sorted(&a.answers), vec!["_cache._tcp.service.consul. 5 1 1 5432 cache.example.net."]);
        assert_eq!(a.pending[0].section, Section::Additional);
        assert_eq!(sorted(&a.additionals), vec!["n1.node.dc1.consul. 5 rack=n1"]);
        // A target inside the domain is resolved here, with the service's TTL.
        let a = ask(&st, &s, "alias.service.consul.", RecordType::A);
        assert_eq!(sorted(&a.answers), vec!["alias.service.consul. 5 n2.node.consul.", "n2.node.consul. 5 10.0.0.2"]);
        let a = ask(&st, &s, "alias.service.consul.", RecordType::SRV);
        assert_eq!(sorted(&a.answers), vec!["alias.service.consul. 5 1 1 5432 n2.node.consul."]);
        assert!(sorted(&a.additionals).contains(&"n2.node.consul. 5 10.0.0.2".to_string()));
        // An instance with an address wins over one with a host name (Consul keeps CNAMEs back).
        let a = ask(&st, &s, "mixed.service.consul.", RecordType::A);
        assert_eq!(sorted(&a.answers), vec!["mixed.service.consul. 5 10.0.0.2"]);
        let a = ask(&st, &s, "mixed.service.consul.", RecordType::SRV);
        assert_eq!(
            sorted(&a.answers),
            vec![
                "mixed.service.consul. 5 1 1 5432 mixed.example.org.",
                "mixed.service.consul. 5 1 1 5432 n2.node.dc1.consul."
            ]
        );
        // IPv6 instances: AAAA answers, no A.
        let a = ask(&st, &s, "ipv6.service.consul.", RecordType::AAAA);
        assert_eq!(sorted(&a.answers), vec!["ipv6.service.consul. 5 2001:db8::7"]);
        let a = ask(&st, &s, "ipv6.service.consul.", RecordType::A);
        assert_eq!((a.rcode, a.answers.len(), a.authorities.len()), (ResponseCode::NoError, 0, 1));
    }

    #[test]
    fn node_host_names_give_cnames() {
        let st = hostname_state();
        let s = settings();
        let a = ask(&st, &s, "ext.node.consul.", RecordType::A);
        assert_eq!(sorted(&a.answers), vec!["ext.node.consul. 10 db.example.com."]);
        assert_eq!(a.answers[0].record_type(), RecordType::CNAME);
        let mut rs = settings();
        rs.recursors = true;
        let a = ask(&st, &rs, "ext.node.consul.", RecordType::A);
        assert_eq!(a.pending.len(), 1);
        assert_eq!((a.pending[0].section, a.pending[0].ttl), (Section::Answer, None));
        // Inside the domain: followed here as an ANY question, all of whose answers are kept
        // (Consul's `makeRecordFromNode`).
        let a = ask(&st, &s, "inner.node.consul.", RecordType::A);
        assert_eq!(
            sorted(&a.answers),
            vec!["inner.node.consul. 10 n1.node.consul.", "n1.node.consul. 10 10.0.0.1", "n1.node.consul. 10 rack=n1"]
        );
        // TXT: RFC 1464 escaping, and `rfc1035-` keys give the bare value.
        let a = ask(&st, &s, "ext.node.consul.", RecordType::TXT);
        assert_eq!(sorted(&a.answers), vec!["ext.node.consul. 10 ` a`=b` =x``y", "ext.node.consul. 10 plain"]);
    }

    #[test]
    fn ptr_v6_and_service_addresses() {
        let st = hostname_state();
        let s = settings();
        let v6 = crate::dns::names::reverse_name("2001:db8::7".parse().unwrap());
        let a = ask(&st, &s, &v6, RecordType::PTR);
        assert_eq!(sorted(&a.answers), vec![format!("{v6} 10 v6.node.dc1.consul.")]);
        // No node at the address: the service instance that has it.
        let a = ask(&st, &s, "7.7.168.192.in-addr.arpa.", RecordType::PTR);
        assert_eq!(sorted(&a.answers), vec!["7.7.168.192.in-addr.arpa. 10 own.service.dc1.consul."]);
        let unknown = crate::dns::names::reverse_name("2001:db8::9".parse().unwrap());
        assert_eq!(ask(&st, &s, &unknown, RecordType::PTR).rcode, ResponseCode::NXDomain);
    }

    #[test]
    fn other_datacenters_and_prepared_queries_are_nxdomain() {
        for q in [
            "web.service.dc2.consul.",
            "n1.node.dc2.consul.",
            "0a000001.addr.dc2.consul.",
            "db.query.consul.",
            "db.query.dc1.consul.",
            "_db._tcp.query.consul.",
        ] {
            for t in [RecordType::A, RecordType::SRV] {
                let a = ask(&state(), &settings(), q, t);
                assert_eq!((a.rcode, a.answers.len(), a.authorities.len()), (ResponseCode::NXDomain, 0, 1), "{q} {t}");
            }
        }
    }

    #[test]
    fn rfc1464_escaping() {
        assert_eq!(rfc1464("rack", "r1"), "rack=r1");
        assert_eq!(rfc1464("a=b", "c=d"), "a`=b=c=d");
        assert_eq!(rfc1464("  k ", "`v"), "` ` k` =``v");
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
        let o = answer(
            &state(),
            &settings(),
            None,
            &Name::from_ascii("example.com.").unwrap(),
            RecordType::A,
            false,
            1,
            &mut rng,
            None,
        );
        assert_eq!(o, Outcome::Forward);
    }

    fn ask_cached(st: &State, cache: &Mutex<Cache>, q: &str, t: RecordType, seed: u64) -> Answer {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        match answer(st, &settings(), Some(cache), &Name::from_ascii(q).unwrap(), t, false, 42, &mut rng, None) {
            Outcome::Answer(a) => a,
            other => panic!("{q}: not answered here: {}", matches!(other, Outcome::Forward)),
        }
    }

    #[test]
    fn cached_answers_follow_the_catalog() {
        let cache = Mutex::new(Cache::default());
        let mut st = state();
        st.index.checks = 10;
        let first = ask_cached(&st, &cache, "web.service.consul.", RecordType::A, 1);
        assert_eq!(cache.lock().entries.len(), 1);
        // A hit is the same record set, shuffled per query.
        let mut orders = HashSet::new();
        for seed in 0..32 {
            let again = ask_cached(&st, &cache, "web.service.consul.", RecordType::A, seed);
            assert_eq!(sorted(&again.answers), sorted(&first.answers));
            orders.insert(again.answers.iter().map(|r| r.data.to_string()).collect::<Vec<_>>());
        }
        assert_eq!(orders.len(), 2, "both orders of two records");
        // The same name spelled otherwise is answered in its own spelling.
        let upper = ask_cached(&st, &cache, "WEB.service.consul.", RecordType::A, 1);
        assert!(upper.answers.iter().all(|r| r.name.to_ascii() == "WEB.service.consul."));
        // A check turning critical moves the catalog index: the next answer leaves n1 out.
        st.checks.entry("n1".into()).or_default().insert(
            "down".into(),
            Check { node: "n1".into(), check_id: "down".into(), status: Some(Status::Critical), ..Default::default() },
        );
        st.index.checks = 11;
        let after = ask_cached(&st, &cache, "web.service.consul.", RecordType::A, 1);
        assert_eq!(sorted(&after.answers), vec!["web.service.consul. 5 192.168.0.9"]);
        // A name with no instance left is NXDOMAIN, not a cached answer.
        st.checks.entry("n2".into()).or_default().get_mut("c2").unwrap().status = Some(Status::Critical);
        st.index.checks = 12;
        let gone = ask_cached(&st, &cache, "web.service.consul.", RecordType::A, 1);
        assert_eq!(gone.rcode, ResponseCode::NXDomain);
    }
}
