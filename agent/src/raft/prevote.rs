//! Pre-vote (Raft thesis §9.6, HashiCorp Raft's `RequestPreVote`) on top of openraft 0.9, which
//! has none: a server stands for election only after a majority of voters said they would vote
//! for it. openraft's elections are switched off (`Config::enable_elect = false`) and this task
//! switches them on through `Raft::runtime_config().elect()` while, and only while, a pre-vote round was won.
//!
//! Without it a server cut off from the others keeps starting elections, each raising its term;
//! when it comes back, its higher term reaches the leader in the answer to a heartbeat and
//! deposes a healthy leader. openraft's own guard (a follower refuses votes while it heard from
//! a leader within `election_timeout_max`) keeps the cut-off server from winning, not from
//! raising its term.
//!
//! A voter grants a pre-vote when it has not heard from a leader for `Timing::election_max`
//! (openraft's lease, so a granted pre-vote predicts a granted vote), does not lead, and the
//! candidate's log is at least as up to date as its own. Terms are not compared: the real vote
//! is what settles terms, and refusing a lower-term candidate with the best log could leave a
//! cluster with no electable server.

use super::leadership::Leadership;
use super::network::{post_json, HttpClient};
use super::{LogId, NodeId, Raft};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Request {
    pub candidate: NodeId,
    /// The term the candidate would stand in.
    pub term: u64,
    pub last_log_id: Option<LogId>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Response {
    pub granted: bool,
    pub term: u64,
}

/// The answer of a voter: `recent_leader` from [`Leadership::has_recent_leader`].
pub fn answer(req: &Request, recent_leader: bool, my_last_log_id: Option<&LogId>, my_term: u64) -> Response {
    let log_ok = req.last_log_id.as_ref() >= my_last_log_id;
    Response { granted: !recent_leader && log_ok, term: my_term }
}

/// Answers a pre-vote request on this server.
pub fn handle(raft: &Raft, leadership: &Leadership, req: &Request) -> Response {
    let last = raft.data_metrics().borrow().last_log;
    let term = raft.metrics().borrow().current_term;
    let resp = answer(req, leadership.has_recent_leader(), last.as_ref(), term);
    tracing::debug!(candidate = req.candidate, term = req.term, granted = resp.granted, "pre-vote request");
    resp
}

/// Runs pre-vote rounds while this voter has no leader, and keeps openraft's elections on only
/// while the last round was won.
pub struct Campaign {
    pub raft: Raft,
    pub leadership: Arc<Leadership>,
    pub http: HttpClient,
    pub id: NodeId,
}

impl Campaign {
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let timing = self.leadership.timing();
        let mut enabled = false;
        loop {
            let want = self.round().await;
            if let Some(want) = want {
                if want != enabled {
                    if want {
                        tracing::info!("pre-vote won; standing for election");
                    } else {
                        tracing::debug!("elections off: a leader is known or a pre-vote was lost");
                    }
                    self.raft.runtime_config().elect(want);
                    enabled = want;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(timing.heartbeat) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Whether elections should be on now; `None` leaves them as they are (this server leads).
    async fn round(&self) -> Option<bool> {
        let (voters, state, term, peers) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            let mem = m.membership_config.membership();
            let voters: Vec<NodeId> = mem.voter_ids().collect();
            let peers: Vec<(NodeId, String)> = voters
                .iter()
                .filter(|v| **v != self.id)
                .filter_map(|v| mem.get_node(v).map(|p| (*v, p.addr.clone())))
                .collect();
            (voters, m.state, m.current_term, peers)
        };
        if state == openraft::ServerState::Leader {
            return None;
        }
        if !voters.contains(&self.id) {
            return Some(false);
        }
        if voters.len() == 1 {
            return Some(true);
        }
        if self.leadership.has_recent_leader() {
            return Some(false);
        }
        let last_log_id = self.raft.data_metrics().borrow().last_log;
        let req = Request { candidate: self.id, term: term + 1, last_log_id };
        let timeout = self.leadership.timing().heartbeat.max(Duration::from_millis(50)) * 2;
        let asks = peers.iter().map(|(id, addr)| {
            let req = req.clone();
            async move {
                let r: Result<Response, _> = post_json(&self.http, addr, "/raft/prevote", &req, timeout).await;
                match r {
                    Ok(r) => r.granted,
                    Err(e) => {
                        tracing::trace!(voter = id, error = %e, "pre-vote request failed");
                        false
                    }
                }
            }
        });
        let granted = 1 + futures::future::join_all(asks).await.into_iter().filter(|g| *g).count();
        let won = granted > voters.len() / 2;
        tracing::debug!(granted, voters = voters.len(), won, "pre-vote round");
        Some(won)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(term: u64, index: u64) -> Option<LogId> {
        Some(openraft::LogId::new(openraft::CommittedLeaderId::new(term, 1), index))
    }

    #[test]
    fn granted_only_without_a_recent_leader_and_with_a_log_as_good() {
        let req = |l| Request { candidate: 2, term: 9, last_log_id: l };
        // A recent leader refuses whatever the log.
        assert!(!answer(&req(log(5, 10)), true, log(5, 10).as_ref(), 4).granted);
        assert!(answer(&req(log(5, 10)), false, log(5, 10).as_ref(), 4).granted);
        assert!(answer(&req(log(5, 11)), false, log(5, 10).as_ref(), 4).granted);
        assert!(answer(&req(log(6, 3)), false, log(5, 10).as_ref(), 4).granted, "a later term wins over length");
        assert!(!answer(&req(log(5, 9)), false, log(5, 10).as_ref(), 4).granted);
        assert!(!answer(&req(log(4, 20)), false, log(5, 10).as_ref(), 4).granted);
        assert!(!answer(&req(None), false, log(1, 1).as_ref(), 4).granted);
        assert!(answer(&req(None), false, None, 0).granted);
        // A candidate from a lower term is not refused for its term.
        assert!(
            answer(&Request { candidate: 2, term: 1, last_log_id: log(5, 10) }, false, log(5, 10).as_ref(), 7).granted
        );
    }
}
