//! A fuzzing entry point: [`fuzz_answer`] answers any byte string as the DNS server answers a UDP
//! datagram and a TCP message, from a small fixed catalog, and panics if a reply breaks a rule
//! every reply keeps. For a coverage-guided fuzzer (`scripts/fuzz.sh`) and the seeded test below;
//! it needs no runtime, socket or clock of its own, and depends on nothing outside `dns`, the
//! state store and the config's types.

use super::answer::Settings;
use super::{counts_fit, finish, respond, Reply, Resolver, DEFAULT_UDP_SIZE};
use crate::config::DnsConfig;
use crate::state::{State, Store};
use crate::structs::{Check, Node, Service, Status, Weights};
use hickory_proto::op::{Message, MessageType, ResponseCode};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Answers `data` as a UDP datagram and as a TCP message, on a resolver without recursors and on
/// one with a recursor and the other settings turned the other way. Where an answer would wait on
/// a recursor, the recursor is taken not to answer (SERVFAIL, or the CNAME left unresolved).
///
/// Panics if a reply does not decode, is not a response with the query's ID, is longer than a
/// TCP frame, or is longer over UDP than the client allowed.
pub fn fuzz_answer(data: &[u8]) {
    for sh in resolvers() {
        for udp in [true, false] {
            let reply = match respond(sh, data, udp) {
                Reply::None | Reply::Remote => None,
                Reply::Bytes(b) => Some(b),
                Reply::Forward(req) => super::base_response(sh, &req, ResponseCode::ServFail).to_vec().ok(),
                // The fuzzing resolvers have no other datacenter to ask.
                Reply::OtherDatacenter(req, _) | Reply::Failover(req, _) => {
                    super::base_response(sh, &req, ResponseCode::NXDomain).to_vec().ok()
                }
                Reply::Resolve(req, mut a) => {
                    a.pending.clear();
                    match finish(sh, &req, *a, udp) {
                        Reply::Bytes(b) => Some(b),
                        _ => None,
                    }
                }
            };
            if let Some(reply) = reply {
                check_reply(data, &reply, udp);
            }
        }
    }
}

fn check_reply(query: &[u8], reply: &[u8], udp: bool) {
    assert!(reply.len() <= u16::MAX as usize, "a reply of {} bytes does not fit a TCP frame", reply.len());
    let m = match Message::from_vec(reply) {
        Ok(m) => m,
        Err(e) => panic!("our reply does not decode ({e}): {reply:02x?}"),
    };
    assert_eq!(m.metadata.message_type, MessageType::Response, "a reply that is not a response");
    assert_eq!(m.metadata.id.to_be_bytes(), query[..2], "a reply with another ID");
    if udp {
        // The request decoded if we answered more than FORMERR; its EDNS size is the limit.
        let limit = counts_fit(query)
            .then(|| Message::from_vec(query).ok())
            .flatten()
            .and_then(|q| q.edns.map(|e| (e.max_payload() as usize).max(DEFAULT_UDP_SIZE)))
            .unwrap_or(DEFAULT_UDP_SIZE);
        assert!(reply.len() <= limit, "a UDP reply of {} bytes to a client that takes {limit}", reply.len());
    }
}

/// Built once: a fuzzer calls [`fuzz_answer`] millions of times.
fn resolvers() -> &'static [Resolver; 2] {
    static RESOLVERS: OnceLock<[Resolver; 2]> = OnceLock::new();
    RESOLVERS.get_or_init(|| {
        let store = Arc::new(Store::new());
        store.restore(catalog());
        let resolver = |recursors: bool| {
            let dns = DnsConfig {
                only_passing: recursors,
                node_ttl: Duration::from_secs(10),
                service_ttl: vec![("*".into(), Duration::from_secs(5)), ("we*".into(), Duration::from_secs(7))],
                allow_stale: true,
                enable_truncate: recursors,
                udp_answer_limit: 3,
                enable_additional_node_meta_txt: !recursors,
            };
            let settings = Settings { domain: "consul.".into(), datacenter: "dc1".into(), dns, recursors };
            Resolver {
                store: store.clone(),
                settings,
                // Never asked: answers that would wait on a recursor are finished without one.
                recursors: if recursors { vec![([127, 0, 0, 1], 9).into()] } else { Vec::new() },
                remote: Default::default(),
                cache: Default::default(),
                acl: Default::default(),
                federation: Default::default(),
            }
        };
        [resolver(false), resolver(true)]
    })
}

/// Nodes at IPv4 and IPv6 addresses and at host names (outside the domain, inside it, and one
/// pointing at itself), node meta that needs escaping, a service with many instances (UDP
/// trimming), tags, warning and critical checks.
fn catalog() -> State {
    let mut st = State::default();
    let mut meta = BTreeMap::new();
    meta.insert("rack".to_string(), "r1".to_string());
    meta.insert(" k=`y ".to_string(), "v`".to_string());
    meta.insert("rfc1035-note".to_string(), "bare".to_string());
    let nodes = [
        ("n1", "10.0.0.1"),
        ("n2", "10.0.0.2"),
        ("six", "2001:db8::6"),
        ("ext", "db.example.com"),
        ("inner", "n1.node.consul"),
        ("loop", "loop.node.consul"),
    ];
    for (name, address) in nodes {
        let node = Node {
            node: name.into(),
            address: address.into(),
            datacenter: "dc1".into(),
            meta: meta.clone(),
            ..Default::default()
        };
        st.nodes.insert(name.into(), node);
    }
    let services = [
        ("n1", "web1", "web", &["v1", "primary"][..], ""),
        ("n2", "web2", "web", &["v2"][..], "192.168.0.9"),
        ("six", "web6", "web", &[][..], ""),
        ("ext", "pg", "pg", &[][..], ""),
        ("n1", "cache", "cache", &[][..], "cache.example.net"),
        ("n1", "alias", "alias", &[][..], "n2.node.consul"),
        ("loop", "spin", "spin", &[][..], ""),
        ("n2", "own", "own", &[][..], "2001:db8::99"),
        ("n2", "down", "down", &[][..], ""),
        ("n2", "meh", "meh", &[][..], ""),
    ];
    for (node, id, name, tags, address) in services {
        let svc = Service {
            id: id.into(),
            service: name.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            address: address.into(),
            port: 8080,
            weights: Weights { passing: 10, warning: 2 },
            ..Default::default()
        };
        st.services.entry(node.into()).or_default().insert(id.into(), svc);
    }
    for i in 0..16 {
        let id = format!("many-{i}");
        let svc = Service {
            id: id.clone(),
            service: "many".into(),
            address: format!("10.9.{}.{}", i / 200, i % 200),
            port: 9000 + i as u16,
            ..Default::default()
        };
        st.services.entry(if i % 2 == 0 { "n1" } else { "n2" }.into()).or_default().insert(id, svc);
    }
    for (id, status) in [("down", Status::Critical), ("meh", Status::Warning)] {
        let check = Check {
            node: "n2".into(),
            check_id: id.into(),
            service_id: id.into(),
            status: Some(status),
            ..Default::default()
        };
        st.checks.entry("n2".into()).or_default().insert(id.into(), check);
    }
    st.index.nodes = 1;
    st.index.services = 2;
    st.index.checks = 3;
    st
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Edns, OpCode, Query};
    use hickory_proto::rr::{Name, RecordType};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    const SEED_QUESTIONS: usize = 20;
    /// Those that have every bit flipped: A, AAAA, SRV, SRV with a tag, TXT, ANY, PTR.
    const FLIPPED: [usize; 7] = [0, 1, 2, 3, 10, 11, 15];

    /// Real queries: each type the server answers, with and without EDNS, inside and outside the
    /// domain; then hand-made ones with compression pointers (to an earlier name, to themselves,
    /// forwards) and with section counts that lie.
    fn seeds() -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let questions: [(&str, RecordType); SEED_QUESTIONS] = [
            ("web.service.consul.", RecordType::A),
            ("web.service.consul.", RecordType::AAAA),
            ("_web._tcp.service.consul.", RecordType::SRV),
            ("v1.web.service.dc1.consul.", RecordType::SRV),
            ("many.service.consul.", RecordType::A),
            ("_many._tcp.service.consul.", RecordType::SRV),
            ("pg.service.consul.", RecordType::SRV),
            ("cache.service.consul.", RecordType::A),
            ("alias.service.consul.", RecordType::ANY),
            ("spin.service.consul.", RecordType::SRV),
            ("n1.node.consul.", RecordType::TXT),
            ("inner.node.consul.", RecordType::ANY),
            ("loop.node.consul.", RecordType::A),
            ("six.node.dc1.consul.", RecordType::AAAA),
            ("0a000001.addr.consul.", RecordType::A),
            ("1.0.0.10.in-addr.arpa.", RecordType::PTR),
            ("6.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.", RecordType::PTR),
            ("db.query.consul.", RecordType::SRV),
            ("consul.", RecordType::SOA),
            ("example.com.", RecordType::A),
        ];
        for (name, t) in questions {
            for edns in [None, Some(4096), Some(100)] {
                let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
                m.metadata.recursion_desired = true;
                m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
                if let Some(size) = edns {
                    let mut e = Edns::new();
                    e.set_max_payload(size);
                    m.edns = Some(e);
                }
                out.push(m.to_vec().unwrap());
            }
        }
        let header = |qd: u16, an: u16, ns: u16, ar: u16| {
            let mut h = vec![0xab, 0xcd, 0x01, 0x00];
            for n in [qd, an, ns, ar] {
                h.extend_from_slice(&n.to_be_bytes());
            }
            h
        };
        let web = b"\x03web\x07service\x06consul\x00";
        // Two questions, the second's name a pointer to the first (offset 12).
        let mut m = header(2, 0, 0, 0);
        m.extend_from_slice(web);
        m.extend_from_slice(&[0, 1, 0, 1, 0xc0, 12, 0, 33, 0, 1]);
        out.push(m);
        // A label, then a pointer to the suffix of the earlier name (`service.consul.`).
        let mut m = header(2, 0, 0, 0);
        m.extend_from_slice(web);
        m.extend_from_slice(&[0, 1, 0, 1, 2, b'v', b'1', 0xc0, 16, 0, 1, 0, 1]);
        out.push(m);
        // A pointer to itself, and one pointing forwards past the end.
        let mut m = header(1, 0, 0, 0);
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        out.push(m);
        let mut m = header(1, 0, 0, 0);
        m.extend_from_slice(&[0xc0, 200, 0, 1, 0, 1]);
        out.push(m);
        // An OPT record in ADDITIONAL after a question, and counts announcing far more than sent.
        let mut m = header(1, 0, 0, 1);
        m.extend_from_slice(web);
        m.extend_from_slice(&[0, 1, 0, 1, 0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
        out.push(m);
        out.push(header(0xffff, 0xffff, 0xffff, 0xffff));
        let mut m = header(0xffff, 0, 0, 0);
        m.extend_from_slice(web);
        m.extend_from_slice(&[0, 1, 0, 1]);
        out.push(m);
        // A response, and a query with another opcode.
        let mut m = header(1, 0, 0, 0);
        m[2] = 0x81;
        m.extend_from_slice(web);
        m.extend_from_slice(&[0, 1, 0, 1]);
        out.push(m);
        let mut m = header(1, 0, 0, 0);
        m[2] = 0x28;
        m.extend_from_slice(web);
        m.extend_from_slice(&[0, 6, 0, 1]);
        out.push(m);
        out
    }

    /// A well-formed query for a name made of the labels our names are made of, in any order
    /// and number, of any type: past the decoder, into name parsing and answering.
    fn random_question(rng: &mut StdRng) -> Vec<u8> {
        const LABELS: [&str; 24] = [
            "web", "many", "pg", "alias", "spin", "down", "meh", "n1", "six", "loop", "v1", "_web", "_tcp", "_v1",
            "service", "node", "addr", "query", "dc1", "dc2", "consul", "in-addr", "arpa", "0a000001",
        ];
        let mut name = String::new();
        for _ in 0..rng.gen_range(0..7) {
            match rng.gen_range(0..8) {
                0 => name.push_str(&rng.gen_range(0..300).to_string()),
                1 => name.push_str(&format!("{:x}", rng.gen::<u128>() >> rng.gen_range(0..128))),
                _ => name.push_str(LABELS[rng.gen_range(0..LABELS.len())]),
            }
            name.push('.');
        }
        if rng.gen_bool(0.7) {
            name.push_str("consul.");
        }
        let Ok(name) = Name::from_ascii(if name.is_empty() { "." } else { &name }) else { return Vec::new() };
        let types = [RecordType::A, RecordType::AAAA, RecordType::SRV, RecordType::TXT, RecordType::ANY];
        let t = match rng.gen_range(0..8) {
            0 => RecordType::PTR,
            1 => RecordType::from(rng.gen::<u16>()),
            n => types[n % types.len()],
        };
        let mut m = Message::new(rng.gen(), MessageType::Query, OpCode::Query);
        m.add_query(Query::query(name, t));
        if rng.gen_bool(0.5) {
            let mut e = Edns::new();
            e.set_max_payload(rng.gen_range(0..5000));
            m.edns = Some(e);
        }
        m.to_vec().unwrap_or_default()
    }

    /// One random edit: the kinds of damage a parser meets (bit flips, lost and repeated bytes,
    /// lengths and pointers, counts, spliced messages).
    fn mutate(rng: &mut StdRng, data: &mut Vec<u8>, seeds: &[Vec<u8>]) {
        let pos = |rng: &mut StdRng, len: usize| if len == 0 { 0 } else { rng.gen_range(0..len) };
        match rng.gen_range(0..9) {
            0 if !data.is_empty() => {
                let i = pos(rng, data.len());
                data[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if !data.is_empty() => {
                let i = pos(rng, data.len());
                data[i] = rng.gen();
            }
            2 => {
                let i = pos(rng, data.len() + 1);
                let byte = [0x00, 0x3f, 0x40, 0xc0, 0xff, b'.', b'_', rng.gen()][rng.gen_range(0..8)];
                data.insert(i, byte);
            }
            3 if !data.is_empty() => {
                let i = pos(rng, data.len());
                let n = rng.gen_range(1..=(data.len() - i).min(16));
                data.drain(i..i + n);
            }
            4 if data.len() >= 2 => {
                let i = pos(rng, data.len() - 1);
                let ptr = 0xc000 | rng.gen_range(0..data.len() as u16 + 4);
                data[i..i + 2].copy_from_slice(&ptr.to_be_bytes());
            }
            5 if data.len() >= 12 => {
                let i = 4 + 2 * rng.gen_range(0..4);
                let n: u16 = [0, 1, 2, 0xff, 0xffff, rng.gen()][rng.gen_range(0..6)];
                data[i..i + 2].copy_from_slice(&n.to_be_bytes());
            }
            6 if !data.is_empty() => {
                let i = pos(rng, data.len());
                let n = rng.gen_range(1..=(data.len() - i).min(32));
                let copy = data[i..i + n].to_vec();
                let at = pos(rng, data.len() + 1);
                data.splice(at..at, copy);
            }
            7 => {
                let other = &seeds[rng.gen_range(0..seeds.len())];
                let cut = pos(rng, data.len() + 1);
                let from = pos(rng, other.len() + 1);
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            _ => {
                let i = pos(rng, data.len() + 1);
                data.truncate(i);
            }
        }
        data.truncate(4096);
    }

    /// The seeds truncated at every length and with every single bit flipped, then random edits
    /// of them and random byte strings, all from one seed: a failure is repeatable, and its
    /// input is printed to keep as a regression case.
    #[test]
    fn any_bytes_get_an_answer_or_none_and_never_a_panic() {
        let seeds = seeds();
        let mut inputs: Vec<Vec<u8>> = Vec::new();
        for s in &seeds {
            inputs.extend((0..s.len()).map(|n| s[..n].to_vec()));
        }
        // Every bit of one query of each type (every other one with EDNS) and of the hand-made
        // ones: flipping every bit of all of them would take the test past its time.
        let flipped = FLIPPED.iter().map(|&q| &seeds[3 * q + q % 2]).chain(&seeds[3 * SEED_QUESTIONS..]);
        for s in flipped {
            for bit in 0..s.len() * 8 {
                let mut m = s.clone();
                m[bit / 8] ^= 1 << (bit % 8);
                inputs.push(m);
            }
        }
        let mut rng = StdRng::seed_from_u64(0x5eed_d115);
        for _ in 0..12000 {
            let mut m = seeds[rng.gen_range(0..seeds.len())].clone();
            for _ in 0..rng.gen_range(1..4) {
                mutate(&mut rng, &mut m, &seeds);
            }
            inputs.push(m);
        }
        for _ in 0..2000 {
            let len = rng.gen_range(0..600);
            inputs.push((0..len).map(|_| rng.gen()).collect());
        }
        for _ in 0..1000 {
            inputs.push(random_question(&mut rng));
        }
        for input in &inputs {
            let outcome = std::panic::catch_unwind(|| alloc::measure(|| fuzz_answer(input)));
            match outcome {
                Ok(peak) => assert!(
                    peak <= alloc::LIMIT,
                    "answering {} bytes took one allocation of {peak} bytes: {input:02x?}",
                    input.len()
                ),
                Err(_) => panic!("fuzz_answer panicked on {input:02x?}"),
            }
        }
    }

    /// A 12-byte header announcing 65,535 questions: FORMERR, without hickory first reserving room
    /// for them all (several megabytes).
    #[test]
    fn lying_counts_cost_no_large_allocation() {
        let mut m = vec![0xab, 0xcd, 0x01, 0x00];
        m.extend_from_slice(&[0xff; 8]);
        let peak = alloc::measure(|| fuzz_answer(&m));
        assert!(peak <= alloc::LIMIT, "one allocation of {peak} bytes");
        let Reply::Bytes(b) = respond(&resolvers()[0], &m, true) else { panic!("no FORMERR") };
        let reply = Message::from_vec(&b).unwrap();
        assert_eq!((reply.metadata.id, reply.metadata.response_code), (0xabcd, ResponseCode::FormErr));
        // The check refuses nothing the decoder takes.
        for s in seeds() {
            for n in 0..=s.len() {
                if Message::from_vec(&s[..n]).is_ok() {
                    assert!(counts_fit(&s[..n]), "{:02x?}", &s[..n]);
                }
            }
        }
    }

    /// The largest single allocation made on this thread while `f` runs. (Other threads, as the
    /// other tests in this binary, are not counted.)
    mod alloc {
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::cell::Cell;

        /// Far above any reply (a TCP answer is at most 64 KiB), far below what a decoder
        /// trusting a header's counts reserves.
        pub const LIMIT: usize = 256 * 1024;

        thread_local! {
            static ON: Cell<bool> = const { Cell::new(false) };
            static PEAK: Cell<usize> = const { Cell::new(0) };
        }

        struct Peak;

        fn note(size: usize) {
            if ON.try_with(|on| on.get()).unwrap_or(false) {
                let _ = PEAK.try_with(|p| p.set(p.get().max(size)));
            }
        }

        unsafe impl GlobalAlloc for Peak {
            unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
                note(layout.size());
                System.alloc(layout)
            }
            unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
                note(layout.size());
                System.alloc_zeroed(layout)
            }
            unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
                note(new_size);
                System.realloc(ptr, layout, new_size)
            }
            unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
                System.dealloc(ptr, layout)
            }
        }

        #[global_allocator]
        static GLOBAL: Peak = Peak;

        pub fn measure(f: impl FnOnce()) -> usize {
            PEAK.with(|p| p.set(0));
            ON.with(|on| on.set(true));
            f();
            ON.with(|on| on.set(false));
            PEAK.with(|p| p.get())
        }
    }
}
