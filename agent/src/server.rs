//! The server side every edge (HTTP, DNS, CLI through HTTP) goes through: replicated writes via
//! Raft (forwarded to the leader over the server port when this server is not it), reads in
//! Consul's consistency modes, and the one blocking-query mechanism.

use crate::raft::leadership::{Leadership, View};
use crate::raft::network::{post_json, HttpClient, PostError};
use crate::raft::{prevote, NodeId, Peer, Raft, TypeConfig};
use crate::state::{State, Store, WatchSet};
use crate::structs::{now_ms, Command, Request, Response};
use openraft::error::{ClientWriteError, ForwardToLeader, RaftError};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Clone, thiserror::Error, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Error {
    #[error("No cluster leader")]
    NoLeader,
    #[error("No known Consul servers")]
    NoServers,
    #[error("rpc error: {0}")]
    Rpc(String),
}

/// How a read may be served (`?stale`, `?consistent`, or the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    #[default]
    Default,
    Stale,
    Consistent,
}

/// Leader knowledge reported with every read.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadMeta {
    pub known_leader: bool,
    pub last_contact: Duration,
    /// The read is answered by this server as leader under its lease: the lease must still hold
    /// once the store was read ([`Server::confirm_read`]).
    pub leased: bool,
}

/// What a server reports of itself to the leader's autopilot (Consul's `Status.RaftStats`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    /// Milliseconds since this server last heard from its leader (0 on the leader); `None` if
    /// it never did since it started.
    pub last_contact_ms: Option<u64>,
    pub last_term: u64,
    pub last_index: u64,
    /// Milliseconds since this server's Raft started.
    pub up_ms: u64,
}

/// A write's fate as the leader's proposer saw it.
enum Outcome {
    Applied(Response),
    /// Never proposed: this server did not lead. Safe to send elsewhere.
    NotSent,
    /// Proposed, but leadership was lost before it was known to commit: it may or may not be
    /// applied, so it must not be sent again.
    Lost,
}

/// HashiCorp Raft's `ErrLeadershipLost`, which Consul passes on as the RPC error.
const LEADERSHIP_LOST: &str = "leadership lost while committing log";

#[derive(Clone)]
pub struct Server {
    pub raft: Raft,
    pub store: Arc<Store>,
    pub node_id: NodeId,
    pub peer: Peer,
    pub http: HttpClient,
    rpc_timeout: Duration,
    proposals: tokio::sync::mpsc::UnboundedSender<Proposal>,
    /// The last term in which this server, as leader, passed a read barrier.
    barrier_term: Arc<std::sync::atomic::AtomicU64>,
    pub leadership: Arc<Leadership>,
}

/// A write waiting for the proposer.
type Proposal = (Request, tokio::sync::oneshot::Sender<Outcome>);

/// Most writes one log entry carries.
const MAX_BATCH: usize = 512;

/// Most JSON bytes one batched log entry carries (estimated from its writes' payloads); a write
/// larger than this alone is its own entry, and the HTTP body cap bounds that.
pub const MAX_BATCH_BYTES: usize = 4 << 20;

/// Group commit on the leader: openraft makes each proposal wait for its own fsync, so writes
/// that arrive while one is in flight are gathered into the next single `Command::Batch` entry.
/// A batch is proposed only while this server leads under its lease, and its writes are answered
/// `Lost` as soon as the lease lapses while it waits (HashiCorp Raft fails a stepped-down
/// leader's pending futures the same way).
async fn proposer(raft: Raft, leadership: Arc<Leadership>, mut rx: tokio::sync::mpsc::UnboundedReceiver<Proposal>) {
    let mut view = leadership.subscribe();
    while let Some(first) = rx.recv().await {
        let mut bytes = first.0.command.json_size_estimate();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += p.0.command.json_size_estimate();
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        if !leadership.leading() {
            for (_, reply) in batch {
                let _ = reply.send(Outcome::NotSent);
            }
            continue;
        }
        view.mark_unchanged();
        if batch.len() == 1 {
            let Some((req, reply)) = batch.pop() else { continue };
            let outcome = match until_lease_lost(&leadership, &mut view, raft.client_write(req)).await {
                Some(Ok(r)) => Outcome::Applied(r.data),
                _ => Outcome::Lost,
            };
            let _ = reply.send(outcome);
            continue;
        }
        let (requests, replies): (Vec<Request>, Vec<_>) = batch.into_iter().unzip();
        let now_ms = requests.iter().map(|r| r.now_ms).max().unwrap_or(0);
        let entry = Request { now_ms, command: Command::Batch(requests) };
        match until_lease_lost(&leadership, &mut view, raft.client_write(entry)).await {
            Some(Ok(r)) => match r.data {
                Response::Batch(answers) if answers.len() == replies.len() => {
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        let _ = reply.send(Outcome::Applied(answer));
                    }
                }
                other => {
                    tracing::error!(answer = ?other, "a batch was answered with something else than its answers");
                    for reply in replies {
                        let _ = reply.send(Outcome::Lost);
                    }
                }
            },
            _ => {
                for reply in replies {
                    let _ = reply.send(Outcome::Lost);
                }
            }
        }
    }
}

/// Runs `fut` unless this server stops leading first (`None` then; the future is dropped).
async fn until_lease_lost<T>(
    leadership: &Leadership,
    view: &mut watch::Receiver<View>,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    let lost = async {
        loop {
            if !view.borrow_and_update().leading || !leadership.leading() {
                return;
            }
            if view.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    };
    tokio::select! {
        v = fut => Some(v),
        _ = lost => None,
    }
}

impl Server {
    /// Must be called inside a tokio runtime: it starts the leader's proposer, the leadership
    /// view and the pre-vote campaign, which end with `shutdown`.
    pub fn new(
        raft: Raft,
        store: Arc<Store>,
        node_id: NodeId,
        peer: Peer,
        http: HttpClient,
        timing: crate::raft::Timing,
        shutdown: watch::Receiver<bool>,
    ) -> Server {
        let leadership = Leadership::new(node_id, timing, raft.clone());
        tokio::spawn(leadership.clone().run(shutdown.clone()));
        let campaign =
            prevote::Campaign { raft: raft.clone(), leadership: leadership.clone(), http: http.clone(), id: node_id };
        tokio::spawn(campaign.run(shutdown));
        let (proposals, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(proposer(raft.clone(), leadership.clone(), rx));
        Server {
            raft,
            store,
            node_id,
            peer,
            http,
            rpc_timeout: Duration::from_secs(7),
            proposals,
            barrier_term: Default::default(),
            leadership,
        }
    }

    /// Whether this server leads: openraft's leader, with a quorum heard from within the leader
    /// lease.
    pub fn is_leader(&self) -> bool {
        self.leadership.leading()
    }

    /// The leader this server trusts and its advertised RPC address: itself while it leads, or
    /// the leader it heard from lately. `None` while there is no such leader.
    pub fn leader(&self) -> Option<(NodeId, Peer)> {
        self.leadership.leader()
    }

    /// The leader, waiting for an election in progress up to the RPC hold time.
    pub async fn wait_for_leader(&self) -> Option<(NodeId, Peer)> {
        let mut rx = self.leadership.subscribe();
        let deadline = tokio::time::Instant::now() + self.rpc_timeout;
        loop {
            if let Some(l) = self.leader() {
                return Some(l);
            }
            // The coarse view can lag a fresh contact by a scheduling slot; poll as well.
            let tick = tokio::time::sleep(Duration::from_millis(50).min(self.leadership.timing().heartbeat));
            tokio::select! {
                r = rx.changed() => if r.is_err() { return None },
                _ = tick => {}
                _ = tokio::time::sleep_until(deadline) => return self.leader(),
            }
        }
    }

    /// Consul's query meta: on the leader, a known leader and no delay; elsewhere whether a
    /// leader is known and the time since this server last heard from it.
    pub fn read_meta(&self) -> ReadMeta {
        let known_leader = self.leader().is_some();
        let last_contact = self.leadership.last_contact().unwrap_or(Duration::ZERO);
        ReadMeta { known_leader, last_contact, leased: false }
    }

    /// What autopilot asks of every server.
    pub fn stats(&self) -> Stats {
        let m = self.raft.metrics().borrow().clone();
        let last_contact_ms = self.leadership.last_contact().map(|d| d.as_millis() as u64);
        Stats {
            last_contact_ms,
            last_term: m.current_term,
            last_index: m.last_log_index.unwrap_or(0),
            up_ms: self.leadership.uptime().as_millis() as u64,
        }
    }

    /// A leader's AppendEntries: handed to openraft, and when accepted, counted as contact
    /// with that leader.
    pub async fn append_entries(
        &self,
        req: AppendEntriesRequest<TypeConfig>,
    ) -> Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> {
        let (vote, arrived) = (req.vote, std::time::Instant::now());
        let resp = self.raft.append_entries(req).await;
        if let Ok(r) = &resp {
            if vote.is_committed() && !matches!(r, AppendEntriesResponse::HigherVote(_)) {
                if let Some(leader) = vote.leader_id().voted_for() {
                    self.leadership.heard_from(leader, vote.leader_id().get_term(), arrived);
                }
            }
        }
        resp
    }

    /// A leader's InstallSnapshot: handed to openraft, and counted as contact when accepted.
    pub async fn install_snapshot(
        &self,
        req: InstallSnapshotRequest<TypeConfig>,
    ) -> Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, openraft::error::InstallSnapshotError>> {
        let (vote, arrived) = (req.vote, std::time::Instant::now());
        let resp = self.raft.install_snapshot(req).await;
        if let Ok(r) = &resp {
            if vote.is_committed() && r.vote <= vote {
                if let Some(leader) = vote.leader_id().voted_for() {
                    self.leadership.heard_from(leader, vote.leader_id().get_term(), arrived);
                }
            }
        }
        resp
    }

    /// Answers another voter's pre-vote.
    pub fn pre_vote(&self, req: &prevote::Request) -> prevote::Response {
        prevote::handle(&self.raft, &self.leadership, req)
    }

    /// Proposes a command and waits until it is committed on a quorum and applied.
    pub async fn write(&self, command: Command) -> Result<Response, Error> {
        let req = Request { now_ms: now_ms(), command };
        self.write_request(req).await
    }

    pub async fn write_request(&self, req: Request) -> Result<Response, Error> {
        if self.is_leader() {
            let (tx, rx) = tokio::sync::oneshot::channel();
            if self.proposals.send((req.clone(), tx)).is_ok() {
                match rx.await {
                    Ok(Outcome::Applied(answer)) => return Ok(answer),
                    Ok(Outcome::Lost) => return Err(Error::Rpc(LEADERSHIP_LOST.into())),
                    Ok(Outcome::NotSent) | Err(_) => {}
                }
            }
        }
        self.write_direct(req).await
    }

    /// One proposal on its own: proposed here while this server leads, forwarded to the leader
    /// when another server leads, held while there is none (Consul's rpc_hold_timeout). Only a
    /// write that was never sent anywhere is tried again.
    async fn write_direct(&self, req: Request) -> Result<Response, Error> {
        let deadline = tokio::time::Instant::now() + self.rpc_timeout;
        let mut view = self.leadership.subscribe();
        loop {
            view.mark_unchanged();
            if self.is_leader() {
                return match until_lease_lost(&self.leadership, &mut view, self.raft.client_write(req)).await {
                    Some(Ok(resp)) => Ok(resp.data),
                    // Not leading any more when openraft took it, or truncated after it was
                    // appended: either way it may have been replicated, so it is not sent again.
                    Some(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) | None => {
                        Err(Error::Rpc(LEADERSHIP_LOST.into()))
                    }
                    Some(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
                        Err(Error::Rpc(e.to_string()))
                    }
                    Some(Err(RaftError::Fatal(e))) => Err(Error::Rpc(e.to_string())),
                };
            }
            if let Some((_, peer)) = self.leader() {
                match post_json::<_, Result<Response, Error>>(
                    &self.http,
                    &peer.addr,
                    "/rpc/apply",
                    &req,
                    self.rpc_timeout,
                )
                .await
                {
                    Ok(answer) => return answer,
                    // Nothing was sent: wait for the next leader within the hold time.
                    Err(PostError::Unreachable(e)) if tokio::time::Instant::now() < deadline => {
                        tracing::debug!(leader = %peer, error = %e, "forwarding a write failed; retrying")
                    }
                    Err(e) => return Err(Error::Rpc(e.to_string())),
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::NoLeader);
            }
            tokio::select! {
                _ = view.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    }

    /// Makes a read linearizable (`?consistent`): the leader confirms its leadership with a quorum,
    /// and this server waits until it has applied what the leader had committed.
    pub async fn barrier(&self) -> Result<(), Error> {
        let index = match self.raft.ensure_linearizable().await {
            Ok(log_id) => log_id.map(|l| l.index).unwrap_or(0),
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(ForwardToLeader {
                leader_node: Some(peer),
                ..
            }))) => post_json::<_, Result<u64, Error>>(&self.http, &peer.addr, "/rpc/barrier", &(), self.rpc_timeout)
                .await
                .map_err(|e| Error::Rpc(e.to_string()))??,
            Err(RaftError::APIError(_)) => return Err(Error::NoLeader),
            Err(RaftError::Fatal(e)) => return Err(Error::Rpc(e.to_string())),
        };
        self.wait_applied(index).await
    }

    /// Waits until this server's state machine has applied `index`.
    pub async fn wait_applied(&self, index: u64) -> Result<(), Error> {
        let mut rx = self.raft.metrics();
        let deadline = tokio::time::Instant::now() + self.rpc_timeout;
        loop {
            if rx.borrow().last_applied.map(|l| l.index).unwrap_or(0) >= index {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return Err(Error::NoLeader),
            }
        }
    }

    /// A leader answers default reads only once, in its term, it has applied its whole log
    /// (Consul's barrier on establishing leadership). A new leader, or one that resumed its term
    /// after a restart (openraft keeps a restarted leader leading, with a commit index that may
    /// lag), may not yet have applied writes that were acknowledged before; every acknowledged
    /// write is in the leader's log, so applying all of it covers them.
    async fn wait_leader_caught_up(&self) -> Result<(), Error> {
        use std::sync::atomic::Ordering;
        let (term, last) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            (m.current_term, m.last_log_index.unwrap_or(0))
        };
        if self.barrier_term.load(Ordering::Acquire) == term {
            return Ok(());
        }
        self.barrier().await?;
        self.wait_applied(last).await?;
        self.barrier_term.store(term, Ordering::Release);
        Ok(())
    }

    /// Readiness for a read in the given mode.
    pub async fn prepare_read(&self, consistency: Consistency) -> Result<ReadMeta, Error> {
        let mut leased = false;
        match consistency {
            Consistency::Stale => {}
            Consistency::Consistent => self.barrier().await?,
            Consistency::Default => {
                if self.leader().is_none() {
                    return Err(Error::NoLeader);
                }
                if self.is_leader() {
                    self.wait_leader_caught_up().await?;
                    leased = true;
                }
            }
        }
        let mut meta = self.read_meta();
        meta.leased = leased;
        Ok(meta)
    }

    /// After a default read on the leader: the lease must still hold now that the store was
    /// read, or another leader may have been elected before the read (a pause between the first
    /// check and the read, for instance) and the answer may be stale.
    pub fn confirm_read(&self, meta: &ReadMeta) -> Result<(), Error> {
        if meta.leased && !self.is_leader() {
            return Err(Error::NoLeader);
        }
        Ok(())
    }
}

/// Consul's blocking query: run `query` against the store; if the caller's index is current,
/// wait on what the query read (or the timeout) and run it again. The index is never 0.
///
/// Not an `async fn`: a parked query would keep its arguments twice (as the future's captures
/// and as the body's locals), and of `wait` only the deadline is needed.
pub fn blocking_query<'s, T, Q>(
    store: &'s Store,
    min_index: u64,
    wait: Duration,
    mut query: Q,
) -> impl std::future::Future<Output = (u64, T)> + use<'s, T, Q>
where
    Q: FnMut(&State, &mut WatchSet) -> (u64, T),
{
    let deadline = tokio::time::Instant::now() + wait;
    async move {
        loop {
            // The watch set and the answer end with this block, so a parked query keeps neither
            // (a KV get's copy of its entry would be two more allocations): only what it waits
            // on. The answer is read again after the wait.
            let changed = {
                let mut ws = WatchSet::new(store.watches());
                let (index, value) = {
                    let state = store.read();
                    query(&state, &mut ws)
                };
                let index = index.max(1);
                if min_index == 0 || index > min_index || tokio::time::Instant::now() >= deadline {
                    return (index, value);
                }
                ws.changed()
            };
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }
}

/// The wait a blocking query gets: the asked wait (default when absent or zero) capped at the
/// maximum, plus up to 1/16 jitter so that many watchers do not return at once.
pub fn effective_wait(asked: Option<Duration>, default: Duration, max: Duration) -> Duration {
    let base = match asked {
        Some(w) if !w.is_zero() => w.min(max),
        _ => default,
    };
    let jitter_ms = (base.as_millis() as u64) / api::query::JITTER_FRACTION as u64;
    let jitter = if jitter_ms > 0 { rand::random::<u64>() % jitter_ms } else { 0 };
    base + Duration::from_millis(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::structs::{KvOp, KvRequest};

    fn set(store: &Store, index: u64, key: &str) {
        let command = Command::Kv(KvRequest {
            op: KvOp::Set,
            key: key.into(),
            value: vec![1],
            flags: 0,
            session: None,
            modify_index: 0,
        });
        store.apply(index, &Request { now_ms: 0, command });
    }

    #[test]
    fn wait_is_defaulted_capped_and_jittered() {
        let d = Duration::from_secs(300);
        let m = Duration::from_secs(600);
        let w = effective_wait(None, d, m);
        assert!(w >= d && w < d + d / 16);
        let w = effective_wait(Some(Duration::from_secs(3600)), d, m);
        assert!(w >= m && w < m + m / 16);
        let w = effective_wait(Some(Duration::from_secs(2)), d, m);
        assert!(w >= Duration::from_secs(2) && w < Duration::from_millis(2125));
    }

    #[tokio::test]
    async fn blocking_query_returns_at_once_when_behind_and_wakes_on_write() {
        let store = Arc::new(Store::new());
        set(&store, 3, "k");
        let read = |s: &State, ws: &mut WatchSet| {
            ws.kv_key("k");
            (s.kv_key_index("k"), s.kv.get("k").map(|e| e.modify_index))
        };
        let (i, _) = blocking_query(&store, 2, Duration::from_secs(5), read).await;
        assert_eq!(i, 3);
        let s2 = store.clone();
        let waiter = tokio::spawn(async move { blocking_query(&s2, 3, Duration::from_secs(30), read).await });
        // An unrelated write must not end the wait; the watched key's write must.
        set(&store, 4, "other");
        set(&store, 5, "k");
        let (i, v) = tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("woke").expect("joined");
        assert_eq!((i, v), (5, Some(5)));
    }

    #[tokio::test]
    async fn blocking_query_times_out_with_the_same_index() {
        let store = Store::new();
        set(&store, 7, "k");
        let (i, _) = blocking_query(&store, 7, Duration::from_millis(50), |s, ws| {
            ws.kv_key("k");
            (s.kv_key_index("k"), ())
        })
        .await;
        assert_eq!(i, 7);
    }
}
