//! The one tokio task that drives the gossip core: it owns the core, the UDP socket, the TCP
//! listener and the timer heap, and publishes snapshots and events to the `Gossip` handle.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use super::core::{Core, Output, Timer};
use super::keyring::{self, Keyring};
use super::wire::{self, Frame, Id};
use super::{Config, Event, Member, MemberStatus, Stats, UserEvent, DEFAULT_PORT};

/// How long a TCP push-pull or event frame may take (memberlist's `TCPTimeout`).
const STREAM_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a member has to answer a keyring query (Serf's query timeout for a small pool).
const KEYRING_TIMEOUT: Duration = Duration::from_secs(5);
/// Larger frames are refused: the view of a 5,000-member pool is about 1.5 MB.
const MAX_FRAME: usize = 8 << 20;

/// The agent's handle on the gossip task.
pub struct Gossip {
    commands: mpsc::UnboundedSender<Command>,
    view: Arc<Mutex<View>>,
    events: broadcast::Sender<Event>,
    changed: watch::Receiver<u64>,
    seal: Keyring,
    /// The bound and the advertised address: a join through either is a join with ourselves.
    own: [SocketAddr; 2],
    task: Mutex<Option<JoinHandle<()>>>,
}

/// What the synchronous getters read, refreshed by the task after every change.
struct View {
    members: Vec<Member>,
    local: Member,
    stats: Stats,
}

enum Command {
    /// An opened frame from a peer (or a push-pull reply); the core's reply goes back.
    Frame {
        data: Vec<u8>,
        reply: oneshot::Sender<Option<Vec<u8>>>,
    },
    PushPullRequest(oneshot::Sender<Vec<u8>>),
    /// A join's push-pull reply: whether it came from another agent.
    JoinReply {
        data: Vec<u8>,
        is_other: oneshot::Sender<Result<bool, String>>,
    },
    SetTags(BTreeMap<String, String>),
    FireEvent(UserEvent),
    ForceLeave {
        node: String,
        prune: bool,
    },
    Leave {
        timeout: Duration,
        done: oneshot::Sender<()>,
    },
    Shutdown,
}

impl Gossip {
    /// Binds UDP and TCP on `cfg.bind` and spawns the gossip task. The agent is alone until it joins.
    pub async fn start(cfg: Config) -> io::Result<Arc<Gossip>> {
        let socket = UdpSocket::bind(cfg.bind).await?;
        let bound = socket.local_addr()?;
        let listener = TcpListener::bind(bound).await?;
        let mut advertise = cfg.advertise;
        if advertise.port() == 0 {
            advertise.set_port(bound.port());
        }
        let generation = SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_millis() as u64);
        let id = Id { name: cfg.node_name.clone(), addr: advertise, generation };
        let seal = cfg.keyring.clone();
        let previous = match &cfg.snapshot {
            Some(path) => match tokio::fs::read_to_string(path).await {
                Ok(text) => read_snapshot(&text),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "gossip: snapshot not read");
                    Vec::new()
                }
            },
            None => Vec::new(),
        };
        let core = Core::new(id, cfg.tags, cfg.timing, seal.is_enabled(), rand::random());
        let view = Arc::new(Mutex::new(View { members: core.members(), local: core.local(), stats: core.stats() }));
        let (commands, rx) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(1024);
        let (changed_tx, changed) = watch::channel(0);
        let task = Task {
            core,
            socket,
            listener,
            seal: seal.clone(),
            timers: BinaryHeap::new(),
            seq: 0,
            commands: rx,
            self_tx: commands.clone(),
            view: view.clone(),
            events: events.clone(),
            changed: changed_tx,
            dropped: Arc::new(AtomicU64::new(0)),
            leaving: None,
            snapshot: cfg.snapshot.clone().map(|path| (path, previous)),
        };
        let span = tracing::info_span!("gossip", node = %cfg.node_name);
        let task = tokio::spawn(task.run().instrument(span));
        tracing::info!(node = %cfg.node_name, %bound, %advertise, encrypted = seal.is_enabled(), "gossip: started");
        let own = [bound, advertise];
        Ok(Arc::new(Gossip { commands, view, events, changed, seal, own, task: Mutex::new(Some(task)) }))
    }

    /// Joins the cluster through each address (`host` or `host:port`, port 8301 by default) with a
    /// TCP push-pull. Our own address is skipped, as memberlist ignores itself: joining only
    /// ourselves is `Ok(0)`, so that `-retry-join` with a list holding every server, this one
    /// included, keeps trying the others. Returns how many other agents answered; an error when
    /// some were tried and none did.
    pub async fn join(&self, addrs: &[String]) -> Result<usize, String> {
        let mut joined = 0;
        let mut errors = Vec::new();
        for addr in addrs {
            match self.join_one(addr).await {
                Ok(true) => joined += 1,
                Ok(false) => tracing::debug!(%addr, "gossip: join skips our own address"),
                Err(e) => errors.push(format!("Failed to join {addr}: {e}")),
            }
        }
        if joined == 0 && !errors.is_empty() {
            return Err(errors.join("; "));
        }
        Ok(joined)
    }

    /// Whether `to` reaches this agent's own gossip port.
    fn is_own(&self, to: SocketAddr) -> bool {
        let [bound, advertise] = self.own;
        let wildcard = bound.ip().is_unspecified()
            && to.port() == bound.port()
            && (to.ip().is_loopback() || to.ip() == advertise.ip());
        to == bound || to == advertise || wildcard
    }

    /// Ok(false) when `addr` is our own: skipped when the address says so, not counted when
    /// the reply does.
    async fn join_one(&self, addr: &str) -> Result<bool, String> {
        let to = resolve(addr).await?;
        if self.is_own(to) {
            return Ok(false);
        }
        let (tx, rx) = oneshot::channel();
        self.send(Command::PushPullRequest(tx));
        let request = rx.await.map_err(|_| "gossip stopped".to_string())?;
        let reply = exchange(&self.seal, to, &request).await?.ok_or("no push-pull reply")?;
        let (tx, rx) = oneshot::channel();
        self.send(Command::JoinReply { data: reply, is_other: tx });
        rx.await.map_err(|_| "gossip stopped".to_string())?
    }

    pub fn members(&self) -> Vec<Member> {
        self.view.lock().members.clone()
    }

    pub fn local(&self) -> Member {
        self.view.lock().local.clone()
    }

    pub fn stats(&self) -> Stats {
        self.view.lock().stats.clone()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    pub fn changed(&self) -> watch::Receiver<u64> {
        self.changed.clone()
    }

    pub fn set_tags(&self, tags: BTreeMap<String, String>) {
        self.send(Command::SetTags(tags));
    }

    pub fn fire_event(&self, mut ev: UserEvent) {
        if ev.id.is_empty() {
            ev.id = uuid::Uuid::new_v4().to_string();
        }
        self.send(Command::FireEvent(ev));
    }

    /// Graceful leave: broadcasts the leave intent, waits (at most `timeout`) for it to go out,
    /// leaves foca's cluster and stops the task. Others see this agent Left.
    pub async fn leave(&self, timeout: Duration) {
        let (done, rx) = oneshot::channel();
        self.send(Command::Leave { timeout, done });
        let _ = rx.await;
        self.join_task().await;
    }

    pub fn force_leave(&self, node: &str, prune: bool) -> Result<(), String> {
        if !self.view.lock().members.iter().any(|m| m.name == node) {
            return Err(format!("no member named {node:?}"));
        }
        self.send(Command::ForceLeave { node: node.to_string(), prune });
        Ok(())
    }

    /// This pool's keyring (shared: what keyring queries change).
    pub fn keyring(&self) -> &Keyring {
        &self.seal
    }

    /// Consul's keyring operations (Serf's key manager): applied here, then sent to every other
    /// member alive, each of which applies it to its own keyring and answers with its result
    /// and, for a list, its keys. A member that does not answer within `KEYRING_TIMEOUT` is
    /// not counted, so the response says "n/m nodes reported success".
    pub async fn keyring_query(&self, op: keyring::Op) -> keyring::Response {
        let me = self.local().name;
        let alive: Vec<Member> = self
            .members()
            .into_iter()
            .filter(|m| matches!(m.status, MemberStatus::Alive | MemberStatus::Leaving))
            .collect();
        let mut response = keyring::Response { num_nodes: alive.len().max(1), ..Default::default() };
        // Ourselves first: after a `use`, the query goes out under the new primary, which the
        // others have installed.
        response.add(&me, self.seal.answer(&op));
        let frame = wire::encode(&Frame::KeyringQuery(op));
        let mut asked = tokio::task::JoinSet::new();
        for m in alive.into_iter().filter(|m| m.name != me) {
            let (seal, frame) = (self.seal.clone(), frame.clone());
            asked.spawn(
                async move {
                    let reply = tokio::time::timeout(KEYRING_TIMEOUT, exchange(&seal, m.addr, &frame)).await;
                    let answer = match reply {
                        Ok(Ok(Some(data))) => match wire::decode::<Frame>(&data) {
                            Ok(Frame::KeyringAnswer(a)) => Ok(a),
                            _ => Err("not a keyring answer".to_string()),
                        },
                        Ok(Ok(None)) => Err("no answer".to_string()),
                        Ok(Err(e)) => Err(e),
                        Err(_) => Err(format!("no answer within {KEYRING_TIMEOUT:?}")),
                    };
                    (m.name, answer)
                }
                .in_current_span(),
            );
        }
        while let Some(done) = asked.join_next().await {
            match done {
                Ok((name, Ok(answer))) => response.add(&name, answer),
                Ok((name, Err(e))) => tracing::warn!(member = %name, error = %e, "gossip: keyring query unanswered"),
                Err(e) => tracing::warn!(error = %e, "gossip: keyring query task"),
            }
        }
        response
    }

    /// Stops without leaving, like a killed agent: others will mark this one Failed.
    pub async fn shutdown(&self) {
        self.send(Command::Shutdown);
        self.join_task().await;
    }

    fn send(&self, cmd: Command) {
        // After shutdown the task is gone; commands to it are moot.
        let _ = self.commands.send(cmd);
    }

    async fn join_task(&self) {
        let task = self.task.lock().take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for Gossip {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().take() {
            task.abort();
        }
    }
}

struct Task {
    core: Core,
    socket: UdpSocket,
    listener: TcpListener,
    seal: Keyring,
    timers: BinaryHeap<Reverse<(Instant, u64, Pending)>>,
    seq: u64,
    commands: mpsc::UnboundedReceiver<Command>,
    /// For connection tasks that hand frames back to this one.
    self_tx: mpsc::UnboundedSender<Command>,
    view: Arc<Mutex<View>>,
    events: broadcast::Sender<Event>,
    changed: watch::Sender<u64>,
    dropped: Arc<AtomicU64>,
    leaving: Option<(Instant, oneshot::Sender<()>)>,
    /// The snapshot file and the members last written to it.
    snapshot: Option<(PathBuf, Vec<(String, SocketAddr)>)>,
}

/// A timer in the heap; ordered by deadline and sequence only.
struct Pending(Timer);

impl PartialEq for Pending {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl Task {
    /// Sends one frame to `to` on its own task; the reply, if any, comes back as a command.
    fn exchange(&self, to: SocketAddr, data: Vec<u8>) {
        let (seal, tx) = (self.seal.clone(), self.self_tx.clone());
        tokio::spawn(
            async move {
                match exchange(&seal, to, &data).await {
                    Ok(Some(reply)) => {
                        let (rtx, _) = oneshot::channel();
                        let _ = tx.send(Command::Frame { data: reply, reply: rtx });
                    }
                    Ok(None) => {}
                    Err(e) => tracing::debug!(%to, error = %e, "gossip: stream"),
                }
            }
            .in_current_span(),
        );
    }

    /// Serf's rejoin from its snapshot: a push-pull with every member alive when we stopped.
    fn rejoin(&self) {
        let Some((_, previous)) = &self.snapshot else { return };
        let me = self.core.id();
        let bound = self.socket.local_addr().ok();
        for (name, to) in previous {
            if *name == me.name || *to == me.addr || Some(*to) == bound {
                continue;
            }
            tracing::info!(member = %name, %to, "gossip: rejoining a member from the snapshot");
            self.exchange(*to, self.core.push_pull_request());
        }
    }

    /// Rewrites the snapshot when the set of other members alive changed. A few hundred bytes
    /// per membership change, written in place by this task: not worth a blocking pool.
    fn write_snapshot(&mut self) {
        let Some((path, written)) = &mut self.snapshot else { return };
        let me = self.core.id().name.clone();
        let alive: Vec<(String, SocketAddr)> = self
            .core
            .members()
            .into_iter()
            .filter(|m| m.name != me && matches!(m.status, MemberStatus::Alive | MemberStatus::Leaving))
            .map(|m| (m.name, m.addr))
            .collect();
        if alive == *written {
            return;
        }
        let text: String = alive.iter().map(|(name, addr)| format!("alive: {name} {addr}\n")).collect();
        match write_atomically(path, &text) {
            Ok(()) => *written = alive,
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "gossip: snapshot not written"),
        }
    }

    async fn run(mut self) {
        self.rejoin();
        let mut buf = vec![0u8; 65536];
        loop {
            self.flush();
            if let Some((deadline, _)) = &self.leaving {
                if *deadline <= Instant::now() || !self.core.is_broadcasting() {
                    self.finish_leave();
                    return;
                }
            }
            let next = self.timers.peek().map(|Reverse((at, _, _))| *at);
            let leave_check = self.leaving.as_ref().map(|_| Instant::now() + Duration::from_millis(20));
            let wake = match (next, leave_check) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            tokio::select! {
                res = self.socket.recv_from(&mut buf) => match res {
                    Ok((n, from)) => self.on_packet(&buf[..n], from),
                    Err(e) => tracing::debug!(error = %e, "gossip: udp receive"),
                },
                res = self.listener.accept() => match res {
                    Ok((stream, from)) => {
                        let (seal, tx, dropped) = (self.seal.clone(), self.self_tx.clone(), self.dropped.clone());
                        tokio::spawn(serve(stream, from, seal, tx, dropped).in_current_span());
                    }
                    Err(e) => tracing::debug!(error = %e, "gossip: tcp accept"),
                },
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Shutdown) | None => return,
                    Some(cmd) => self.on_command(cmd),
                },
                _ = sleep_until(wake) => self.fire_timers(),
            }
        }
    }

    fn on_packet(&mut self, packet: &[u8], from: SocketAddr) {
        let Some(data) = self.seal.open(packet) else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%from, len = packet.len(), "gossip: dropped a datagram that does not open");
            return;
        };
        if let Err(e) = self.core.handle_packet(&data) {
            tracing::trace!(%from, error = %e, "gossip: datagram");
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Frame { data, reply } => match self.core.handle_frame(&data) {
                Ok(r) => {
                    let _ = reply.send(r);
                }
                Err(e) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(error = %e, "gossip: frame");
                }
            },
            Command::JoinReply { data, is_other } => {
                let res = self.core.handle_join_reply(&data).map_err(|e| e.to_string());
                if res.is_err() {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
                let _ = is_other.send(res);
            }
            Command::PushPullRequest(tx) => {
                let _ = tx.send(self.core.push_pull_request());
            }
            Command::SetTags(tags) => self.core.set_tags(tags),
            Command::FireEvent(ev) => self.core.fire_event(ev),
            Command::ForceLeave { node, prune } => {
                if let Err(e) = self.core.force_leave(&node, prune) {
                    tracing::info!(error = %e, "gossip: force-leave");
                }
            }
            Command::Leave { timeout, done } => {
                tracing::info!("gossip: leaving");
                self.core.leave_intent();
                self.leaving = Some((Instant::now() + timeout, done));
            }
            Command::Shutdown => {}
        }
    }

    fn finish_leave(&mut self) {
        if let Err(e) = self.core.leave() {
            tracing::debug!(error = %e, "gossip: leave");
        }
        // As Serf (without rejoin_after_leave): an agent that left does not rejoin at start.
        if let Some((path, _)) = &self.snapshot {
            if let Err(e) = write_atomically(path, "leave\n") {
                tracing::warn!(path = %path.display(), error = %e, "gossip: snapshot not written");
            }
        }
        self.flush();
        if let Some((_, done)) = self.leaving.take() {
            let _ = done.send(());
        }
        tracing::info!("gossip: left");
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while self.timers.peek().is_some_and(|Reverse((at, _, _))| *at <= now) {
            let Some(Reverse((_, _, Pending(timer)))) = self.timers.pop() else { break };
            if let Err(e) = self.core.handle_timer(timer) {
                tracing::trace!(error = %e, "gossip: timer");
            }
        }
    }

    /// Sends, schedules and publishes whatever the core produced.
    fn flush(&mut self) {
        let now = Instant::now();
        let outputs: Vec<Output> = self.core.drain_outputs().collect();
        for out in outputs {
            match out {
                Output::Packet { to, data } => {
                    if let Err(e) = self.socket.try_send_to(&self.seal.seal(&data), to) {
                        tracing::trace!(%to, error = %e, "gossip: udp send");
                    }
                }
                Output::Frame { to, data } => self.exchange(to, data),
                Output::Schedule { after, timer } => {
                    self.seq += 1;
                    self.timers.push(Reverse((now + after, self.seq, Pending(timer))));
                }
            }
        }
        let events: Vec<Event> = self.core.drain_events().collect();
        if !events.is_empty() && self.leaving.is_none() {
            self.write_snapshot();
        }
        let mut stats = self.core.stats();
        stats.dropped_packets = self.dropped.load(Ordering::Relaxed);
        let mut view = self.view.lock();
        if events.is_empty() && view.stats == stats {
            return;
        }
        view.members = self.core.members();
        view.local = self.core.local();
        view.stats = stats.clone();
        drop(view);
        for ev in events {
            tracing::debug!(event = ?ev, "gossip: event");
            let _ = self.events.send(ev);
        }
        self.changed.send_if_modified(|t| std::mem::replace(t, stats.member_time) != stats.member_time);
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Serves one inbound TCP connection: one frame in, the core's reply (or an empty frame) out.
async fn serve(
    mut stream: TcpStream,
    from: SocketAddr,
    seal: Keyring,
    tx: mpsc::UnboundedSender<Command>,
    dropped: Arc<AtomicU64>,
) {
    let served = tokio::time::timeout(STREAM_TIMEOUT, async {
        let packet = read_frame(&mut stream).await?;
        let Some(data) = seal.open(&packet) else {
            dropped.fetch_add(1, Ordering::Relaxed);
            return Err(io::Error::new(io::ErrorKind::InvalidData, "frame does not open (gossip key mismatch?)"));
        };
        if wire::is_keyring_query(&data) {
            let answer = match wire::decode::<Frame>(&data) {
                Ok(Frame::KeyringQuery(op)) => seal.answer(&op),
                _ => return Err(io::Error::new(io::ErrorKind::InvalidData, "undecodable keyring query")),
            };
            // Sealed after answering: a `use` answers under the key it was asked to use.
            return write_frame(&mut stream, &seal.seal(&wire::encode(&Frame::KeyringAnswer(answer)))).await;
        }
        let (reply_tx, reply_rx) = oneshot::channel();
        let _ = tx.send(Command::Frame { data, reply: reply_tx });
        let reply = reply_rx.await.ok().flatten().map(|r| seal.seal(&r)).unwrap_or_default();
        write_frame(&mut stream, &reply).await
    })
    .await;
    match served {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(%from, error = %e, "gossip: inbound stream"),
        Err(_) => tracing::debug!(%from, "gossip: inbound stream timed out"),
    }
}

/// Sends one sealed frame to `to` and returns its opened reply, `None` when the peer had none.
async fn exchange(seal: &Keyring, to: SocketAddr, data: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let res = tokio::time::timeout(STREAM_TIMEOUT, async {
        let mut stream = TcpStream::connect(to).await?;
        write_frame(&mut stream, &seal.seal(data)).await?;
        read_frame(&mut stream).await
    })
    .await;
    let reply = match res {
        Err(_) => return Err(format!("no reply from {to} within {STREAM_TIMEOUT:?}")),
        Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(format!("{to} closed the connection (different or missing gossip key?)"))
        }
        Ok(Err(e)) => return Err(format!("{to}: {e}")),
        Ok(Ok(reply)) => reply,
    };
    if reply.is_empty() {
        return Ok(None);
    }
    seal.open(&reply).map(Some).ok_or_else(|| format!("reply from {to} does not open (gossip key mismatch?)"))
}

async fn write_frame(stream: &mut TcpStream, data: &[u8]) -> io::Result<()> {
    let len = u32::try_from(data.len()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    stream.write_all(&len.to_be_bytes()).await?;
    stream.write_all(data).await?;
    stream.flush().await
}

async fn read_frame(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let len = stream.read_u32().await? as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("frame of {len} bytes")));
    }
    // Grow with what actually arrives: the length comes from an unauthenticated peer.
    let mut data = Vec::new();
    (&mut *stream).take(len as u64).read_to_end(&mut data).await?;
    if data.len() < len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(data)
}

/// `host` or `host:port` (port 8301 when absent) to one socket address.
async fn resolve(addr: &str) -> Result<SocketAddr, String> {
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return Ok(sa);
    }
    let with_port = match addr.parse::<std::net::IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, DEFAULT_PORT).to_string(),
        Err(_) if addr.contains(':') => addr.to_string(),
        Err(_) => format!("{addr}:{DEFAULT_PORT}"),
    };
    let mut found = tokio::net::lookup_host(&with_port).await.map_err(|e| format!("resolve {addr}: {e}"))?;
    found.next().ok_or_else(|| format!("resolve {addr}: no address"))
}

/// The members alive in a snapshot: our own `alive: name addr` lines, or Serf's log of
/// `alive:`, `not-alive:` and `leave` records; anything else is skipped.
fn read_snapshot(text: &str) -> Vec<(String, SocketAddr)> {
    let mut alive = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("alive: ") {
            if let Some((name, addr)) = rest.rsplit_once(' ').and_then(|(n, a)| Some((n, a.parse().ok()?))) {
                alive.insert(name.to_string(), addr);
            }
        } else if let Some(name) = line.strip_prefix("not-alive: ") {
            alive.remove(name);
        } else if line == "leave" {
            alive.clear();
        }
    }
    alive.into_iter().collect()
}

fn write_atomically(path: &Path, text: &str) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_read_ours_and_serfs() {
        let ours = "alive: s1 127.0.0.152:8301\nalive: s2 127.0.0.153:8301\n";
        let addr = |s: &str| s.parse::<SocketAddr>().expect("addr");
        assert_eq!(
            read_snapshot(ours),
            vec![("s1".into(), addr("127.0.0.152:8301")), ("s2".into(), addr("127.0.0.153:8301"))]
        );
        let serf = "alive: a 10.0.0.1:8301\nclock: 3\nalive: b 10.0.0.2:8301\nnot-alive: a\ncoordinate: x\n";
        assert_eq!(read_snapshot(serf), vec![("b".into(), addr("10.0.0.2:8301"))]);
        assert!(read_snapshot("alive: a 10.0.0.1:8301\nleave\n").is_empty());
        assert!(read_snapshot("alive: broken\ngarbage\n").is_empty());
    }
}
