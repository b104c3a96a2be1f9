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
pub mod fuzz;
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
use tracing::Instrument;

/// The UDP payload size without EDNS (RFC 1035).
const DEFAULT_UDP_SIZE: usize = 512;
/// How long to wait for one recursor.
const RECURSOR_TIMEOUT: Duration = Duration::from_secs(2);
/// The time a TCP client has to send its first message, length prefix and body, from accept;
/// and to take one answer. (miekg/dns's `ReadTimeout` and `WriteTimeout` defaults, which Consul
/// keeps.)
const TCP_READ_TIMEOUT: Duration = Duration::from_secs(2);
const TCP_WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// The time a client has to send each further message on a kept-open connection, from the end
/// of the previous answer (miekg/dns's `IdleTimeout` default, after RFC 7766's "order of
/// seconds").
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(8);
/// Queries answered on one connection before it is closed (miekg/dns's `maxTCPQueries`), so no
/// client keeps a connection, and its slot under the caps below, for ever.
const TCP_MAX_QUERIES: usize = 128;
/// Open TCP connections, over all listeners and from one client ([`client_key`]). Over either
/// cap a new connection is closed at once: with the timeouts above, a client gets at most this
/// many tasks and buffers for at most a few seconds at a time.
const TCP_MAX_CONNS: usize = 512;
const TCP_MAX_CONNS_PER_CLIENT: usize = 64;
/// How long the accept loop waits after a failed accept (out of file descriptors, say): the
/// pending connection stays queued, so retrying at once would spin.
const TCP_ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// What a message's buffer starts at: it grows with the bytes that arrive, not with the length
/// the client announced.
const TCP_FIRST_ALLOC: usize = 512;
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
    /// With ACLs on, answers hold only what the DNS token (`acl.tokens.dns`, else `default`)
    /// may read.
    acl: std::sync::OnceLock<Arc<crate::acl::Acl>>,
    federation: std::sync::OnceLock<Federation>,
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
        Ok(Arc::new(Resolver {
            store,
            settings,
            recursors,
            remote: Default::default(),
            cache: Default::default(),
            acl: Default::default(),
            federation: Default::default(),
        }))
    }

    pub fn set_acl(&self, acl: Arc<crate::acl::Acl>) {
        let _ = self.acl.set(acl);
    }

    /// Who a query is answered for: `token` (a client agent's DNS token, over `/rpc/dns`), else
    /// this agent's DNS token; `None` while ACLs are off. A token that does not resolve gets
    /// the anonymous token's view.
    fn identity(&self, token: Option<&str>) -> Option<Arc<crate::acl::Identity>> {
        let acl = self.acl.get().filter(|a| a.enabled())?;
        let own = acl.dns_token();
        let secret = token.filter(|t| !t.is_empty()).unwrap_or(&own);
        let st = self.store.read();
        let now = crate::structs::now_ms();
        acl.resolve_local(Some(secret), &st.acl, now).or_else(|_| acl.resolve_local(None, &st.acl, now)).ok()
    }

    /// [`Resolver::answer`] for a client agent whose DNS token is `token`.
    pub async fn answer_as(&self, query: &[u8], udp: bool, token: Option<&str>) -> Option<Vec<u8>> {
        let id = self.identity(token);
        self.complete(respond_as(self, query, udp, id.as_deref()), query, udp).await
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
            Reply::OtherDatacenter(req, dc) => {
                if let Some(f) = self.federation.get() {
                    if let Some(b) = (f.ask)(dc, query.to_vec(), udp).await {
                        return Some(b);
                    }
                }
                // No path to that datacenter: NXDOMAIN, as Consul answers.
                let nx = Answer::nxdomain(&self.settings, serial());
                match finish(self, &req, nx, udp) {
                    Reply::Bytes(b) => Some(b),
                    _ => None,
                }
            }
            Reply::Failover(req, q) => {
                let found = match self.federation.get() {
                    Some(f) => (f.failover)((*q).clone()).await,
                    None => Vec::new(),
                };
                let nodes: Vec<(crate::structs::Node, crate::structs::Service)> =
                    found.iter().map(from_entry).collect();
                let qname = req.queries.first().map(|x| x.name.clone())?;
                let qtype = req.queries.first().map(|x| x.query_type)?;
                let a = {
                    let state = self.store.read();
                    let rng = &mut rand::thread_rng();
                    answer::answer_with(
                        &state,
                        &self.settings,
                        &qname,
                        qtype,
                        req.edns.is_some(),
                        serial(),
                        rng,
                        &q,
                        &nodes,
                    )
                };
                match finish(self, &req, a, udp) {
                    Reply::Bytes(b) => Some(b),
                    _ => None,
                }
            }
        }
    }

    /// Lets this server answer names of other datacenters and prepared queries' failover.
    pub fn set_federation(&self, f: Federation) {
        let _ = self.federation.set(f);
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
        let limits = Arc::new(ConnLimits::new(TCP_MAX_CONNS, TCP_MAX_CONNS_PER_CLIENT));
        for l in self.tcp {
            tasks.spawn(serve_tcp(self.shared.clone(), l, limits.clone()).in_current_span());
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
                reply @ (Reply::Forward(_)
                | Reply::Resolve(..)
                | Reply::Remote
                | Reply::OtherDatacenter(..)
                | Reply::Failover(..)) => {
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

async fn serve_tcp(sh: Arc<Shared>, l: TcpListener, limits: Arc<ConnLimits>) {
    let mut failing = false;
    loop {
        match l.accept().await {
            Ok((conn, peer)) => {
                failing = false;
                match limits.admit(peer.ip()) {
                    Some(permit) => {
                        tokio::spawn(serve_conn(sh.clone(), conn, permit).in_current_span());
                    }
                    // Dropping it closes it: the client learns at once rather than after a timeout.
                    None => tracing::debug!(%peer, "dns: too many tcp connections, closing a new one"),
                }
            }
            Err(e) => {
                // Once per streak: out of descriptors, this would otherwise log ten times a second.
                if !failing {
                    tracing::warn!(error = %e, "dns: tcp accept failed, backing off");
                }
                failing = true;
                tokio::time::sleep(TCP_ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// One TCP connection: length-prefixed messages, answered in order (so pipelined queries are
/// answered too), each read within its deadline.
async fn serve_conn(sh: Arc<Shared>, mut conn: TcpStream, _permit: ConnPermit) {
    let mut deadline = TCP_READ_TIMEOUT;
    for _ in 0..TCP_MAX_QUERIES {
        let query = match tokio::time::timeout(deadline, read_message(&mut conn)).await {
            Ok(Ok(q)) => q,
            Ok(Err(e)) => {
                tracing::trace!(error = %e, "dns: tcp read");
                return;
            }
            Err(_) => {
                tracing::debug!(timeout = ?deadline, "dns: tcp client sent no whole message in time, closing");
                return;
            }
        };
        let Some(out) = sh.answer(&query, false).await else { return };
        drop(query);
        let Ok(len) = u16::try_from(out.len()) else {
            tracing::warn!(len = out.len(), "dns: answer too long for tcp, closing");
            return;
        };
        let mut framed = Vec::with_capacity(out.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&out);
        drop(out);
        if !matches!(tokio::time::timeout(TCP_WRITE_TIMEOUT, conn.write_all(&framed)).await, Ok(Ok(()))) {
            return;
        }
        deadline = TCP_IDLE_TIMEOUT;
    }
}

/// One length-prefixed message. Its buffer is allocated only once the length is known and then
/// grows with what arrives, so a client announcing 64 KiB and sending nothing holds nothing.
async fn read_message(conn: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let len = conn.read_u16().await? as usize;
    let mut buf = Vec::with_capacity(len.min(TCP_FIRST_ALLOC));
    (&mut *conn).take(len as u64).read_to_end(&mut buf).await?;
    if buf.len() < len {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(buf)
}

/// Open TCP connections, in all and per client; [`ConnLimits::admit`] refuses one over a cap.
struct ConnLimits {
    max_total: usize,
    max_per_client: usize,
    /// (all open connections, open connections by [`client_key`])
    open: parking_lot::Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// An admitted connection's place under the caps, given back when it is dropped.
struct ConnPermit {
    limits: Arc<ConnLimits>,
    client: IpAddr,
}

impl ConnLimits {
    fn new(max_total: usize, max_per_client: usize) -> ConnLimits {
        ConnLimits { max_total, max_per_client, open: Default::default() }
    }

    fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<ConnPermit> {
        let client = client_key(peer);
        let mut open = self.open.lock();
        let (total, by_client) = &mut *open;
        let mine = by_client.entry(client).or_insert(0);
        if *total >= self.max_total || *mine >= self.max_per_client {
            if *mine == 0 {
                by_client.remove(&client);
            }
            return None;
        }
        *mine += 1;
        *total += 1;
        Some(ConnPermit { limits: self.clone(), client })
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock();
        let (total, by_client) = &mut *open;
        *total = total.saturating_sub(1);
        if let Some(n) = by_client.get_mut(&self.client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                by_client.remove(&self.client);
            }
        }
    }
}

/// Whose connection this is, for the per-client cap: an IPv4 address (also when mapped into
/// IPv6), or an IPv6 /64, since one host commonly holds a whole /64.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
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
    /// A server of another datacenter answers it.
    OtherDatacenter(Message, String),
    /// A prepared query found nothing here and fails over: its definition.
    Failover(Message, Box<serde_json::Value>),
}

/// What a server needs to answer names of other datacenters (set by the daemon; absent on
/// client agents, which ask a server for everything).
pub struct Federation {
    /// Sends the raw question to a server of the datacenter; its answer as bytes.
    pub ask: Box<dyn Fn(String, Vec<u8>, bool) -> futures::future::BoxFuture<'static, Option<Vec<u8>>> + Send + Sync>,
    /// Runs a prepared query that found nothing here in its failover datacenters, nearest
    /// first; the instances of the first that has any.
    pub failover:
        Box<dyn Fn(serde_json::Value) -> futures::future::BoxFuture<'static, Vec<api::ServiceEntry>> + Send + Sync>,
}

/// A remote datacenter's instance as the records builder takes it.
fn from_entry(e: &api::ServiceEntry) -> (crate::structs::Node, crate::structs::Service) {
    let n = &e.node;
    let node = crate::structs::Node {
        id: n.id.clone(),
        node: n.node.clone(),
        address: n.address.clone(),
        datacenter: n.datacenter.clone(),
        tagged_addresses: n.tagged_addresses.clone(),
        meta: n.meta.clone(),
        ..Default::default()
    };
    let s = &e.service;
    let service = crate::structs::Service {
        id: s.id.clone(),
        service: s.service.clone(),
        tags: s.tags.clone(),
        address: s.address.clone(),
        port: s.port,
        meta: s.meta.clone(),
        weights: crate::structs::Weights { passing: s.weights.passing, warning: s.weights.warning },
        tagged_addresses: s
            .tagged_addresses
            .iter()
            .map(|(k, a)| (k.clone(), crate::structs::ServiceAddress { address: a.address.clone(), port: a.port }))
            .collect(),
        ..Default::default()
    };
    (node, service)
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
    if sh.acl.get().is_some_and(|a| a.enabled()) && sh.remote.get().is_none() {
        let id = sh.identity(None);
        return respond_as(sh, buf, udp, id.as_deref());
    }
    respond_as(sh, buf, udp, None)
}

fn respond_as(sh: &Shared, buf: &[u8], udp: bool, id: Option<&crate::acl::Identity>) -> Reply {
    if sh.remote.get().is_some() {
        return Reply::Remote;
    }
    let decoded = if counts_fit(buf) { Message::from_vec(buf).ok() } else { None };
    let req = match decoded {
        Some(m) => m,
        None => {
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
        // A restricted answer is not cached: the cache is for everyone.
        let cache = if id.is_some_and(|i| !i.unrestricted) { None } else { Some(&sh.cache) };
        answer::answer(&state, &sh.settings, cache, &q.name, q.query_type, edns, serial(), rng, id)
    };
    let a = match outcome {
        Outcome::Forward if sh.recursors.is_empty() => {
            return encode_within(&mut base_response(sh, &req, ResponseCode::Refused), limit);
        }
        Outcome::Forward => return Reply::Forward(req),
        Outcome::OtherDatacenter(dc) => return Reply::OtherDatacenter(req, dc),
        Outcome::Failover { query } => return Reply::Failover(req, Box::new(query)),
        Outcome::Answer(a) if !a.pending.is_empty() => return Reply::Resolve(req, Box::new(a)),
        Outcome::Answer(a) => a,
    };
    finish(sh, &req, a, udp)
}

/// Whether the section counts in a message's header leave each question at least 5 bytes (a
/// root name, type and class) and each record at least 11. hickory reserves room for every
/// question the header announces before it reads one, so without this a 12-byte datagram
/// announcing 65,535 questions costs a 5.7 MB allocation; a message that fails this
/// would fail to decode anyway. (Shorter than a header: the decoder rejects it.)
fn counts_fit(buf: &[u8]) -> bool {
    let Some(h) = buf.get(..12) else { return true };
    let count = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]) as usize;
    12 + 5 * count(4) + 11 * (count(6) + count(8) + count(10)) <= buf.len()
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
    fn connection_caps_per_client_and_in_all() {
        let limits = Arc::new(ConnLimits::new(4, 2));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let a1 = limits.admit(ip("10.0.0.1")).expect("first from a");
        let a2 = limits.admit(ip("::ffff:10.0.0.1")).expect("second from a, mapped into IPv6");
        assert!(limits.admit(ip("10.0.0.1")).is_none(), "a third from a is over its cap");
        let b1 = limits.admit(ip("2001:db8::1")).expect("first from b's /64");
        let _b2 = limits.admit(ip("2001:db8::ffff")).expect("second from b's /64");
        assert!(limits.admit(ip("2001:db8::2")).is_none(), "b's /64 is one client");
        assert!(limits.admit(ip("10.0.0.3")).is_none(), "four open: over the total");
        drop(a1);
        let c = limits.admit(ip("10.0.0.3")).expect("a place was given back");
        assert!(limits.admit(ip("10.0.0.1")).is_none(), "total full again");
        drop((a2, b1, c));
        let _a = limits.admit(ip("10.0.0.1")).expect("a may connect again");
        let open = limits.open.lock();
        assert_eq!(open.0, 2);
        assert_eq!(open.1.len(), 2, "refused clients leave no entry behind");
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
