//! The DNS interface (Consul's port 8600): UDP and TCP listeners on the client addresses that
//! answer `*.service`, `*.node`, `*.addr` names under the configured domain, and PTR names for node
//! addresses, from the agent's local state store (a stale read, never Raft), and forward other
//! names to the `-recursor`s. Wire format via `hickory-proto`.
//!
//! `names` parses a query name, `answer` builds records from `&State`; both are pure. This module
//! does the IO: decoding, the read guard (taken and dropped inside one synchronous call), asking
//! the recursors about CNAME targets outside the domain, UDP size limits and truncation, and
//! forwarding. A client agent has no state store: its [`Resolver`] sends each query to a server
//! (`/rpc/dns`), which answers it from its own store.

pub mod answer;
pub mod names;

use crate::config::Config;
use crate::state::Store;
use answer::{Answer, Outcome, Section, Settings};
use anyhow::Context;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;

/// The UDP payload size without EDNS (RFC 1035).
const DEFAULT_UDP_SIZE: usize = 512;
/// How long to wait for one recursor.
const RECURSOR_TIMEOUT: Duration = Duration::from_secs(2);
/// A TCP connection idle this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// How often a UDP thread waiting for a query looks whether the server is stopping.
const UDP_STOP_POLL: Duration = Duration::from_millis(250);

/// Asks a server to answer a query (the raw message, and whether it came over UDP).
pub type Remote = Box<dyn Fn(Vec<u8>, bool) -> futures::future::BoxFuture<'static, Option<Vec<u8>>> + Send + Sync>;

/// Answers DNS messages: from the local store, or through a server on a client agent.
pub struct Resolver {
    store: Arc<Store>,
    settings: Settings,
    recursors: Vec<SocketAddr>,
    remote: std::sync::OnceLock<Remote>,
    cache: parking_lot::Mutex<answer::Cache>,
}

type Shared = Resolver;

impl Resolver {
    pub fn new(config: &Config, store: Arc<Store>) -> anyhow::Result<Arc<Resolver>> {
        let recursors = config.recursors.iter().map(|r| parse_recursor(r)).collect::<anyhow::Result<Vec<_>>>()?;
        let settings = Settings {
            domain: names::normalize_domain(&config.domain),
            datacenter: config.datacenter.to_ascii_lowercase(),
            dns: config.dns.clone(),
            recursors: !recursors.is_empty(),
        };
        Ok(Arc::new(Resolver { store, settings, recursors, remote: Default::default(), cache: Default::default() }))
    }

    /// Makes every query go through `remote` (a client agent's servers).
    pub fn set_remote(&self, remote: Remote) {
        let _ = self.remote.set(remote);
    }

    /// The response to one query message, as bytes (`None`: no answer is due).
    pub async fn answer(&self, query: &[u8], udp: bool) -> Option<Vec<u8>> {
        self.complete(respond(self, query, udp), query, udp).await
    }

    /// Finishes what `respond` started for `query`: asks the recursors or a server if it must.
    async fn complete(&self, reply: Reply, query: &[u8], udp: bool) -> Option<Vec<u8>> {
        match reply {
            Reply::None => None,
            Reply::Bytes(b) => Some(b),
            Reply::Forward(req) => forward(self, query, &req, udp).await,
            Reply::Resolve(req, a) => {
                let a = resolve_pending(self, *a).await;
                match finish(self, &req, a, udp) {
                    Reply::Bytes(b) => Some(b),
                    _ => None,
                }
            }
            Reply::Remote => match self.remote.get() {
                Some(remote) => remote(query.to_vec(), udp).await,
                None => None,
            },
        }
    }
}

pub struct DnsServer {
    shared: Arc<Shared>,
    /// Blocking sockets: each is served by threads of its own (see [`DnsServer::run`]).
    udp: Vec<Arc<std::net::UdpSocket>>,
    tcp: Vec<TcpListener>,
}

/// `1.2.3.4`, `1.2.3.4:5353`, `::1` or `[::1]:53`.
pub fn parse_recursor(s: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let ip: IpAddr =
        s.trim_start_matches('[').trim_end_matches(']').parse().with_context(|| format!("invalid recursor {s:?}"))?;
    Ok(SocketAddr::new(ip, 53))
}

impl DnsServer {
    /// Binds UDP and TCP on every client address at `ports.dns`; `None` when the port is negative.
    pub async fn bind(config: &Config, resolver: Arc<Resolver>) -> anyhow::Result<Option<DnsServer>> {
        if config.ports.dns < 0 {
            return Ok(None);
        }
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        for ip in &config.client_addrs {
            let addr = SocketAddr::new(*ip, config.ports.dns as u16);
            let u =
                std::net::UdpSocket::bind(addr).with_context(|| format!("binding the DNS server (UDP) on {addr}"))?;
            u.set_read_timeout(Some(UDP_STOP_POLL))?;
            let t = TcpListener::bind(addr).await.with_context(|| format!("binding the DNS server (TCP) on {addr}"))?;
            udp.push(Arc::new(u));
            tcp.push(t);
        }
        Ok(Some(DnsServer { shared: resolver, udp, tcp }))
    }

    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.udp.iter().filter_map(|u| u.local_addr().ok()).collect()
    }

    /// Serves until `shutdown` turns true (or its sender is dropped).
    ///
    /// UDP queries are served by plain threads, one per core, each in a blocking `recv_from` on
    /// the shared socket: a query is answered synchronously from memory, so an async runtime only
    /// adds readiness polling and wake-ups to each query. Answers that wait on recursors or a
    /// server are handed to the runtime.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let stop = Arc::new(AtomicBool::new(false));
        let rt = tokio::runtime::Handle::current();
        let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        for sock in self.udp {
            for _ in 0..workers {
                let (sh, sock, rt, stop) = (self.shared.clone(), sock.clone(), rt.clone(), stop.clone());
                let spawned =
                    std::thread::Builder::new().name("dns-udp".into()).spawn(move || serve_udp(sh, sock, rt, stop));
                if let Err(e) = spawned {
                    tracing::error!(error = %e, "dns: starting a UDP thread");
                }
            }
        }
        let mut tasks = tokio::task::JoinSet::new();
        for l in self.tcp {
            tasks.spawn(serve_tcp(self.shared.clone(), l));
        }
        while !*shutdown.borrow_and_update() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        tasks.abort_all();
    }
}

/// How many queries one thread takes from the socket in one call, and answers in one call.
const UDP_BATCH: usize = 32;
/// The receive buffer for one query. (A query is one question and perhaps an OPT record: a few
/// hundred bytes. A longer datagram is cut here and answered FORMERR.)
const UDP_QUERY_MAX: usize = 4096;

/// One UDP thread: takes whatever queries are waiting (`recvmmsg`, at least one), answers each
/// from memory, and sends the answers together (`sendmmsg`). Under load one pair of system calls
/// serves many queries; when idle, it is a blocking receive of one.
fn serve_udp(sh: Arc<Shared>, sock: Arc<std::net::UdpSocket>, rt: tokio::runtime::Handle, stop: Arc<AtomicBool>) {
    use nix::sys::socket::{recvmmsg, sendmmsg, MsgFlags, MultiHeaders, SockaddrStorage};
    use std::io::{IoSlice, IoSliceMut};
    use std::os::fd::AsRawFd;
    let fd = sock.as_raw_fd();
    let mut bufs = vec![[0u8; UDP_QUERY_MAX]; UDP_BATCH];
    let mut recv_headers = MultiHeaders::<SockaddrStorage>::preallocate(UDP_BATCH, None);
    let mut send_headers = MultiHeaders::<SockaddrStorage>::preallocate(UDP_BATCH, None);
    // (buffer, length, sender) of each query received.
    let mut got: Vec<(usize, usize, SockaddrStorage)> = Vec::with_capacity(UDP_BATCH);
    let mut replies: Vec<Vec<u8>> = Vec::with_capacity(UDP_BATCH);
    let mut peers: Vec<Option<SockaddrStorage>> = Vec::with_capacity(UDP_BATCH);
    while !stop.load(Ordering::Relaxed) {
        got.clear();
        {
            let mut iovs: Vec<[IoSliceMut; 1]> = bufs.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
            match recvmmsg(fd, &mut recv_headers, iovs.iter_mut(), MsgFlags::MSG_WAITFORONE, None) {
                Ok(msgs) => got.extend(msgs.enumerate().filter_map(|(i, m)| Some((i, m.bytes, m.address?)))),
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "dns: udp recv");
                    continue;
                }
            }
        }
        replies.clear();
        peers.clear();
        for &(i, n, peer) in &got {
            let query = &bufs[i][..n.min(UDP_QUERY_MAX)];
            match respond(&sh, query, true) {
                Reply::None => {}
                Reply::Bytes(b) => {
                    replies.push(b);
                    peers.push(Some(peer));
                }
                reply @ (Reply::Forward(_) | Reply::Resolve(..) | Reply::Remote) => {
                    // Answers that wait on another server run on the runtime. (A UDP send does
                    // not wait for the peer: it blocks only while the socket's buffer is full.)
                    let Some(to) = socket_addr(&peer) else { continue };
                    let (sh, sock, query) = (sh.clone(), sock.clone(), query.to_vec());
                    rt.spawn(async move {
                        if let Some(b) = sh.complete(reply, &query, true).await {
                            let _ = sock.send_to(&b, to);
                        }
                    });
                }
            }
        }
        let mut sent = 0;
        while sent < replies.len() {
            let slices: Vec<[IoSlice; 1]> = replies[sent..].iter().map(|b| [IoSlice::new(b)]).collect();
            match sendmmsg(fd, &mut send_headers, &slices, &peers[sent..], [], MsgFlags::empty()) {
                Ok(done) => {
                    let n = done.count();
                    // A message the kernel refused (rare) is skipped rather than retried forever.
                    sent += n.max(1);
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "dns: udp send");
                    sent += 1;
                }
            }
        }
    }
}

/// A peer's address from the kernel's form.
fn socket_addr(a: &nix::sys::socket::SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

async fn serve_tcp(sh: Arc<Shared>, l: TcpListener) {
    loop {
        match l.accept().await {
            Ok((conn, _)) => {
                tokio::spawn(serve_conn(sh.clone(), conn));
            }
            Err(e) => {
                tracing::debug!(error = %e, "dns: tcp accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_conn(sh: Arc<Shared>, mut conn: TcpStream) {
    let mut buf = Vec::new();
    loop {
        let Ok(Ok(len)) = tokio::time::timeout(TCP_IDLE, conn.read_u16()).await else { return };
        buf.resize(len as usize, 0);
        if conn.read_exact(&mut buf).await.is_err() {
            return;
        }
        let Some(out) = sh.answer(&buf, false).await else { return };
        let mut framed = Vec::with_capacity(out.len() + 2);
        framed.extend_from_slice(&(out.len() as u16).to_be_bytes());
        framed.extend_from_slice(&out);
        if conn.write_all(&framed).await.is_err() {
            return;
        }
    }
}

enum Reply {
    None,
    Bytes(Vec<u8>),
    Forward(Message),
    /// Our answer, once the recursors have resolved the CNAME targets it names.
    Resolve(Message, Box<Answer>),
    /// A server answers it (client agents).
    Remote,
}

fn base_response(sh: &Shared, req: &Message, rcode: ResponseCode) -> Message {
    let mut m = Message::response(req.metadata.id, req.metadata.op_code);
    m.metadata.message_type = MessageType::Response;
    m.metadata.recursion_desired = req.metadata.recursion_desired;
    m.metadata.recursion_available = !sh.recursors.is_empty();
    m.metadata.response_code = rcode;
    m.queries = req.queries.clone();
    if req.edns.is_some() {
        let mut e = Edns::new();
        e.set_max_payload(4096);
        m.edns = Some(e);
    }
    m
}

fn encode(m: &Message) -> Reply {
    match m.to_vec() {
        Ok(b) => Reply::Bytes(b),
        Err(e) => {
            tracing::warn!(error = %e, "dns: encoding a response");
            Reply::None
        }
    }
}

fn serial() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as u32).unwrap_or(0)
}

/// Answers one request from local state, or says it must be forwarded.
fn respond(sh: &Shared, buf: &[u8], udp: bool) -> Reply {
    if sh.remote.get().is_some() {
        return Reply::Remote;
    }
    let req = match Message::from_vec(buf) {
        Ok(m) => m,
        Err(_) => {
            if buf.len() >= 2 {
                let mut m =
                    Message::error_msg(u16::from_be_bytes([buf[0], buf[1]]), OpCode::Query, ResponseCode::FormErr);
                m.metadata.message_type = MessageType::Response;
                return encode(&m);
            }
            return Reply::None;
        }
    };
    if req.metadata.message_type != MessageType::Query {
        return Reply::None;
    }
    // Error answers repeat the questions too, so over UDP they are held to the client's size.
    let limit = udp.then(|| udp_limit(&req));
    if req.metadata.op_code != OpCode::Query {
        return encode_within(&mut base_response(sh, &req, ResponseCode::NotImp), limit);
    }
    let Some(q) = req.queries.first() else {
        return encode_within(&mut base_response(sh, &req, ResponseCode::FormErr), limit);
    };
    let outcome = {
        let state = sh.store.read();
        let edns = req.edns.is_some();
        let rng = &mut rand::thread_rng();
        answer::answer(&state, &sh.settings, Some(&sh.cache), &q.name, q.query_type, edns, serial(), rng)
    };
    let a = match outcome {
        Outcome::Forward if sh.recursors.is_empty() => {
            return encode_within(&mut base_response(sh, &req, ResponseCode::Refused), limit);
        }
        Outcome::Forward => return Reply::Forward(req),
        Outcome::Answer(a) if !a.pending.is_empty() => return Reply::Resolve(req, Box::new(a)),
        Outcome::Answer(a) => a,
    };
    finish(sh, &req, a, udp)
}

/// The response for our answer, encoded: flags, sections, and UDP trimming.
fn finish(sh: &Shared, req: &Message, a: Answer, udp: bool) -> Reply {
    let mut m = base_response(sh, req, a.rcode);
    m.metadata.authoritative = true;
    m.answers = a.answers;
    m.authorities = a.authorities;
    m.additionals = a.additionals;
    if !udp {
        return encode(&m);
    }
    let max = udp_limit(req);
    match trim_udp(&mut m, max, req.edns.is_some(), sh.settings.dns.udp_answer_limit) {
        Trimmed::Fits(bytes) if bytes.len() <= max => Reply::Bytes(bytes),
        // Trimming keeps the questions and one answer, which may still be too long.
        Trimmed::Fits(_) => encode_within(&mut m, Some(max)),
        Trimmed::Dropped => {
            m.metadata.truncation = sh.settings.dns.enable_truncate;
            encode_within(&mut m, Some(max))
        }
        Trimmed::Failed => Reply::None,
    }
}

/// The largest UDP response the sender of `req` takes: 512 bytes, or its EDNS payload size.
fn udp_limit(req: &Message) -> usize {
    req.edns.as_ref().map(|e| (e.max_payload() as usize).max(DEFAULT_UDP_SIZE)).unwrap_or(DEFAULT_UDP_SIZE)
}

/// Encodes `m` for a client that takes at most `limit` bytes (UDP; `None`: TCP, any size).
/// Every response repeats the questions, and a query of up to 4 KiB may ask many or long ones
/// without EDNS: when what trimming left is still too long, the records go and TC is set, so
/// the client asks again over TCP; the questions go too if they alone are too long (miekg/dns's
/// `Truncate` does the same). Fuzzing found an UPDATE with seven questions answered NOTIMP in
/// 514 bytes to a client that takes 512.
fn encode_within(m: &mut Message, limit: Option<usize>) -> Reply {
    let Some(max) = limit else { return encode(m) };
    for step in 0..3 {
        match step {
            0 => {}
            1 => {
                m.answers.clear();
                m.authorities.clear();
                m.additionals.clear();
                m.metadata.truncation = true;
            }
            _ => m.queries.clear(),
        }
        match m.to_vec() {
            Ok(b) if b.len() <= max => return Reply::Bytes(b),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "dns: encoding a response");
                return Reply::None;
            }
        }
    }
    // A header and an OPT record: never over 512 bytes.
    encode(m)
}

/// Consul's `syncExtra`, run once answers were dropped: ADDITIONAL becomes, for each remaining
/// SRV target, the first additional record with that name, following CNAMEs. (So a trimmed
/// answer keeps each target's address and drops the node-meta TXT records.)
fn prune_additionals(m: &mut Message, index: &HashMap<Name, Record>) {
    let mut extra = Vec::new();
    let mut resolved = Vec::new();
    for r in &m.answers {
        let RData::SRV(srv) = &r.data else { continue };
        let mut target = srv.target.to_lowercase();
        while !resolved.contains(&target) {
            resolved.push(target.clone());
            let Some(x) = index.get(&target) else { break };
            extra.push(x.clone());
            match &x.data {
                RData::CNAME(c) => target = c.0.to_lowercase(),
                _ => break,
            }
        }
    }
    m.additionals = extra;
}

/// The first additional record of each (lowercased) name.
fn index_additionals(m: &Message) -> HashMap<Name, Record> {
    let mut index = HashMap::new();
    for r in &m.additionals {
        index.entry(r.name.to_lowercase()).or_insert_with(|| r.clone());
    }
    index
}

/// What [`trim_udp`] did.
enum Trimmed {
    /// Nothing was dropped: the message as it is, encoded.
    Fits(Vec<u8>),
    /// Answers were dropped; the message is to be encoded again (with its truncation flag).
    Dropped,
    /// The message does not encode.
    Failed,
}

/// Consul's `trimUDPResponse`: without EDNS at most `answer_limit` answers, then drop answers (and
/// their additionals) until the message fits `max` bytes.
fn trim_udp(m: &mut Message, max: usize, edns: bool, answer_limit: usize) -> Trimmed {
    if edns || m.answers.len() <= answer_limit {
        // Encoding is most of a query's cost: the common case encodes once, and that is sent.
        match m.to_vec() {
            Ok(b) if b.len() <= max => return Trimmed::Fits(b),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "dns: encoding a response");
                return Trimmed::Failed;
            }
        }
    }
    let before = m.answers.len();
    let index = index_additionals(m);
    if !edns && m.answers.len() > answer_limit {
        m.answers.truncate(answer_limit);
        prune_additionals(m, &index);
    }
    let size = |m: &Message| m.to_vec().map(|b| b.len()).unwrap_or(usize::MAX);
    let mut len = size(m);
    while m.answers.len() > 1 && len > max {
        m.answers.pop();
        prune_additionals(m, &index);
        len = size(m);
    }
    if len > max {
        m.additionals.clear();
    }
    if m.answers.len() < before {
        Trimmed::Dropped
    } else {
        // Only additionals went: nothing to flag.
        match m.to_vec() {
            Ok(b) => Trimmed::Fits(b),
            Err(_) => Trimmed::Failed,
        }
    }
}

/// Sends the query to each recursor in turn (UDP, 2 s each); the first answer wins, else SERVFAIL.
async fn forward(sh: &Shared, query: &[u8], req: &Message, udp: bool) -> Option<Vec<u8>> {
    if let Some(b) = exchange(sh, query).await {
        return Some(b);
    }
    match encode_within(&mut base_response(sh, req, ResponseCode::ServFail), udp.then(|| udp_limit(req))) {
        Reply::Bytes(b) => Some(b),
        _ => None,
    }
}

/// Asks the recursors for the A records of each pending CNAME target (Consul's `resolveCNAME`:
/// the first recursor that answers wins; none answering leaves the CNAME unresolved).
async fn resolve_pending(sh: &Shared, mut a: Answer) -> Answer {
    for p in std::mem::take(&mut a.pending) {
        let mut q = Message::new(rand::random(), MessageType::Query, OpCode::Query);
        q.metadata.recursion_desired = true;
        q.add_query(Query::query(p.name.clone(), RecordType::A));
        let Ok(bytes) = q.to_vec() else { continue };
        let Some(resp) = exchange(sh, &bytes).await.and_then(|b| Message::from_vec(&b).ok()) else {
            tracing::debug!(name = %p.name, "dns: no recursor resolved a CNAME target");
            continue;
        };
        let records = resp
            .answers
            .into_iter()
            .filter(|r| {
                p.ttl.is_none() || matches!(r.record_type(), RecordType::CNAME | RecordType::A | RecordType::AAAA)
            })
            .take(p.limit)
            .map(|mut r| {
                if let Some(ttl) = p.ttl {
                    r.ttl = ttl;
                }
                r
            });
        match p.section {
            Section::Answer => a.answers.extend(records),
            Section::Additional => a.additionals.extend(records),
        }
    }
    a
}

/// One query to each recursor in turn (UDP, 2 s each): the first reply with the query's ID.
async fn exchange(sh: &Shared, query: &[u8]) -> Option<Vec<u8>> {
    for r in &sh.recursors {
        let local: SocketAddr =
            if r.is_ipv4() { (Ipv4Addr::UNSPECIFIED, 0).into() } else { (Ipv6Addr::UNSPECIFIED, 0).into() };
        let attempt = async {
            let sock = UdpSocket::bind(local).await.ok()?;
            sock.connect(r).await.ok()?;
            sock.send(query).await.ok()?;
            let mut buf = vec![0u8; 65535];
            loop {
                let n = sock.recv(&mut buf).await.ok()?;
                if n >= 2 && buf[..2] == query[..2] {
                    buf.truncate(n);
                    return Some(buf);
                }
            }
        };
        match tokio::time::timeout(RECURSOR_TIMEOUT, attempt).await {
            Ok(Some(b)) => return Some(b),
            _ => tracing::debug!(recursor = %r, "dns: recursor did not answer"),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::rdata::{A, SRV};
    use hickory_proto::rr::{Name, Record};

    fn big_message(n: usize) -> Message {
        let mut m = Message::response(1, OpCode::Query);
        m.queries.push(Query::query(Name::from_ascii("web.service.consul.").unwrap(), RecordType::SRV));
        for i in 0..n {
            let target = Name::from_ascii(format!("node-with-a-long-name-{i}.node.dc1.consul.")).unwrap();
            m.answers.push(Record::from_rdata(
                Name::from_ascii("web.service.consul.").unwrap(),
                0,
                RData::SRV(SRV::new(1, 1, 80, target.clone())),
            ));
            m.additionals.push(Record::from_rdata(target, 0, RData::A(A(Ipv4Addr::new(10, 0, 0, i as u8)))));
        }
        m
    }

    #[test]
    fn trim_without_edns_limits_answers() {
        let mut m = big_message(5);
        assert!(matches!(trim_udp(&mut m, 512, false, 3), Trimmed::Dropped));
        assert_eq!(m.answers.len(), 3);
        assert_eq!(m.additionals.len(), 3);
    }

    #[test]
    fn trim_by_size() {
        let mut m = big_message(40);
        assert!(matches!(trim_udp(&mut m, 512, true, 3), Trimmed::Dropped));
        assert!(m.to_vec().unwrap().len() <= 512);
        assert!(m.answers.len() > 3);
        assert_eq!(m.answers.len(), m.additionals.len());
        let mut m = big_message(40);
        let Trimmed::Fits(bytes) = trim_udp(&mut m, 65535, true, 3) else { panic!("a message that fits was trimmed") };
        assert_eq!(m.answers.len(), 40);
        assert_eq!(Message::from_vec(&bytes).unwrap().answers.len(), 40);
    }

    #[test]
    fn recursor_addresses() {
        assert_eq!(parse_recursor("8.8.8.8").unwrap(), "8.8.8.8:53".parse().unwrap());
        assert_eq!(parse_recursor("127.0.0.1:5353").unwrap(), "127.0.0.1:5353".parse().unwrap());
        assert_eq!(parse_recursor("::1").unwrap(), "[::1]:53".parse().unwrap());
        assert!(parse_recursor("nope").is_err());
    }

    fn resolver() -> Arc<Resolver> {
        let flags = crate::config::AgentFlags { dev: true, ..Default::default() };
        let config = Config::from_flags(flags).expect("config");
        Resolver::new(&config, Arc::new(Store::new())).expect("resolver")
    }

    /// Found by fuzzing (`dns_message`): an UPDATE with seven long questions and no EDNS was
    /// answered NOTIMP in 514 bytes over UDP, the questions repeated; and a query's answer with
    /// as many questions is as long. Over UDP a response now fits in 512 bytes, with TC set.
    #[test]
    fn udp_responses_fit_whatever_the_questions() {
        let sh = resolver();
        let fuzzed = include_bytes!("testdata/notimp-seven-questions.bin");
        let mut many = Message::new(7, MessageType::Query, OpCode::Query);
        for i in 0..8 {
            let label = format!("{}{i}", "x".repeat(60));
            many.add_query(Query::query(
                Name::from_ascii(format!("{label}.{label}.service.consul.")).unwrap(),
                RecordType::A,
            ));
        }
        let many = many.to_vec().unwrap();
        assert!(many.len() > 1000);
        for query in [&fuzzed[..], &many[..]] {
            let Reply::Bytes(b) = respond(&sh, query, true) else { panic!("no answer") };
            assert!(b.len() <= 512, "{} bytes", b.len());
            let m = Message::from_vec(&b).unwrap();
            assert!(m.metadata.truncation, "a client that lost records must be told");
            assert_eq!(m.metadata.id, u16::from_be_bytes([query[0], query[1]]));
            // Over TCP nothing is cut.
            let Reply::Bytes(b) = respond(&sh, query, false) else { panic!("no answer") };
            assert!(b.len() > 512);
        }
    }
}
