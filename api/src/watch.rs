//! The blocking-query watcher every consumer shares (consul-template's `View` rules): send the last
//! index back with `?index=`, suppress answers whose data did not change, reset the index when it
//! goes backwards, re-read consistently when a stale answer is older than `max_stale`, keep a
//! minimum delay between fetches, back off with jitter on errors and move to another agent when
//! one stops answering.
//!
//! Time is tokio's, so tests drive it with a paused clock; randomness (jitter) is `rand`'s.

use crate::client::{Client, Error};
use crate::query::QueryOptions;
use rand::Rng;
use serde::de::DeserializeOwned;
use std::time::Duration;
use tokio::time::Instant;

/// consul-template's `minDelayBetweenUpdates`: fetches of one watcher start at least this far
/// apart, so a value that changes constantly cannot turn a watcher into a hot loop.
pub const MIN_DELAY: Duration = Duration::from_millis(100);
/// Up to this much is added to the minimum delay, so watchers woken together spread out.
pub const MIN_DELAY_JITTER: Duration = Duration::from_millis(20);

/// What a watcher watches: a GET path with extra query pairs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    pub path: String,
    pub extra: Vec<(String, String)>,
}

impl Target {
    pub fn new(path: impl Into<String>) -> Target {
        Target { path: path.into(), extra: Vec::new() }
    }

    pub fn with(mut self, key: &str, value: &str) -> Target {
        self.extra.push((key.to_string(), value.to_string()));
        self
    }
}

/// How failed requests are retried (consul-template's `consul { retry { ... } }` block and its
/// `-consul-retry*` flags). The wait before retry `n` (0-based) is `backoff × 2ⁿ`, capped at
/// `max_backoff`, then jittered down by up to half; the first failover to another agent is
/// retried at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    /// Off: the first failure ends the watch (`Error::RetriesExhausted`).
    pub enabled: bool,
    /// Retries after which a watch that still fails ends; 0 never ends it.
    pub attempts: u32,
    pub backoff: Duration,
    /// The longest single wait; zero means no cap.
    pub max_backoff: Duration,
}

impl Default for Retry {
    /// Retries forever, 100 ms doubling up to 30 s: a watcher that outlives any outage.
    fn default() -> Retry {
        Retry { enabled: true, attempts: 0, backoff: Duration::from_millis(100), max_backoff: Duration::from_secs(30) }
    }
}

impl Retry {
    /// The wait before retry number `retry` (0-based), before jitter.
    pub fn delay(&self, retry: u32) -> Duration {
        let d = self.backoff.saturating_mul(1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX));
        if self.max_backoff.is_zero() {
            d
        } else {
            d.min(self.max_backoff)
        }
    }
}

/// One blocking-query loop over `target`. `next()` returns each new value; a 404 is `T::default()`.
pub struct Watcher<T> {
    clients: Vec<Client>,
    current: usize,
    target: Target,
    opts: QueryOptions,
    /// `None`: stale answers are taken whatever their age.
    max_stale: Option<Duration>,
    retry: Retry,
    min_delay: Duration,
    last_index: u64,
    last_value: Option<T>,
    /// Consecutive failed requests.
    failures: u32,
    last_fetch: Option<Instant>,
}

impl<T: DeserializeOwned + PartialEq + Clone + Default> Watcher<T> {
    /// `clients` are tried in turn; an empty list is `Error::NoAgents`.
    pub fn new(clients: Vec<Client>, target: Target, wait: Duration) -> Result<Watcher<T>, Error> {
        if clients.is_empty() {
            return Err(Error::NoAgents);
        }
        Ok(Watcher {
            clients,
            current: 0,
            target,
            opts: QueryOptions { wait: Some(wait), ..Default::default() },
            max_stale: None,
            retry: Retry::default(),
            min_delay: MIN_DELAY,
            last_index: 0,
            last_value: None,
            failures: 0,
            last_fetch: None,
        })
    }

    /// A watcher over the agents at `addrs` (`host:port`, `http://` or `https://`): a bad
    /// address is an error, not a panic.
    pub fn connect(addrs: &[impl AsRef<str>], target: Target, wait: Duration) -> Result<Watcher<T>, Error> {
        Watcher::connect_tls(addrs, None, target, wait)
    }

    /// [`Watcher::connect`] over HTTPS with `tls` (every address), or as `connect` with `None`.
    pub fn connect_tls(
        addrs: &[impl AsRef<str>],
        tls: Option<&crate::tls::Tls>,
        target: Target,
        wait: Duration,
    ) -> Result<Watcher<T>, Error> {
        let clients = addrs.iter().map(|a| Client::connect(a.as_ref(), tls)).collect::<Result<Vec<_>, _>>()?;
        Watcher::new(clients, target, wait)
    }

    /// Allow any server to answer (`?stale`) whatever the age of its data: keeps working while
    /// there is no leader.
    pub fn stale(mut self, stale: bool) -> Watcher<T> {
        self.opts.stale = stale;
        self.max_stale = None;
        self
    }

    /// consul-template's `-max-stale`: read with `?stale`, and when the answering server's
    /// `X-Consul-LastContact` exceeds `max_stale`, read again from the leader. Zero turns stale
    /// reads off.
    pub fn max_stale(mut self, max_stale: Duration) -> Watcher<T> {
        self.opts.stale = !max_stale.is_zero();
        self.max_stale = Some(max_stale).filter(|d| !d.is_zero());
        self
    }

    pub fn retry(mut self, retry: Retry) -> Watcher<T> {
        self.retry = retry;
        self
    }

    /// The least time between the starts of two fetches (jittered up by [`MIN_DELAY_JITTER`]);
    /// [`MIN_DELAY`] unless set. Zero turns it off.
    pub fn min_delay(mut self, min_delay: Duration) -> Watcher<T> {
        self.min_delay = min_delay;
        self
    }

    /// Replaces the agents this watcher may use (e.g. as cluster members come and go). The agent
    /// in use stays in use if it is still listed, with the watch's index; otherwise the watch
    /// starts over on the first of the new list. An empty list is refused and changes nothing.
    pub fn set_clients(&mut self, clients: Vec<Client>) -> Result<(), Error> {
        if clients.is_empty() {
            return Err(Error::NoAgents);
        }
        let now = self.clients[self.current].addr().to_string();
        match clients.iter().position(|c| c.addr() == now) {
            Some(i) => self.current = i,
            None => {
                self.current = 0;
                self.last_index = 0;
            }
        }
        self.clients = clients;
        Ok(())
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    pub fn last_index(&self) -> u64 {
        self.last_index
    }

    /// The agent now in use.
    pub fn agent(&self) -> &str {
        self.clients[self.current].addr()
    }

    /// The agents this watcher may use.
    pub fn agents(&self) -> Vec<&str> {
        self.clients.iter().map(Client::addr).collect()
    }

    /// What to wait before the next fetch: the retry backoff after failures (none for the first
    /// failover to another agent), else what remains of the minimum delay since the last fetch.
    fn pause(&self, now: Instant) -> Duration {
        let mut rng = rand::thread_rng();
        if self.failures > 0 {
            if self.failures == 1 && self.clients.len() > 1 {
                return Duration::ZERO;
            }
            let d = self.retry.delay(self.failures - 1);
            // Jitter: somewhere in [d/2, d], so watchers that failed together retry apart.
            return d / 2 + d.mul_f64(rng.gen::<f64>() / 2.0);
        }
        match self.last_fetch {
            Some(at) if !self.min_delay.is_zero() => {
                let since = now.saturating_duration_since(at);
                if since >= self.min_delay {
                    Duration::ZERO
                } else {
                    self.min_delay - since + MIN_DELAY_JITTER.mul_f64(rng.gen::<f64>())
                }
            }
            _ => Duration::ZERO,
        }
    }

    /// Waits for the next value that differs from the last one returned. A failed request is
    /// returned as its error after switching agents (callers report it and call again: the next
    /// call waits out the backoff). When the `Retry::attempts` retries after a failure failed
    /// too, or at the first failure with retries off, the error is `Error::RetriesExhausted`.
    pub async fn next(&mut self) -> Result<T, Error> {
        let mut consistent = false;
        loop {
            // The re-read of a too-stale answer goes out at once; everything else is paced.
            let pause = if consistent { Duration::ZERO } else { self.pause(Instant::now()) };
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            let mut opts = QueryOptions { index: self.last_index, ..self.opts.clone() };
            if consistent {
                opts.stale = false;
            }
            self.last_fetch = Some(Instant::now());
            let client = &self.clients[self.current];
            match client.query::<T>(&self.target.path, &self.target.extra, &opts).await {
                Ok(answer) => {
                    self.failures = 0;
                    let (value, meta) = match answer {
                        Some((v, meta)) => (v, Some(meta)),
                        None => (T::default(), None),
                    };
                    if let (Some(max), Some(meta)) = (self.max_stale, &meta) {
                        if opts.stale && meta.last_contact > max {
                            tracing::debug!(
                                path = %self.target.path,
                                last_contact = ?meta.last_contact,
                                "stale answer older than max_stale; reading from the leader"
                            );
                            consistent = true;
                            continue;
                        }
                    }
                    consistent = false;
                    let index = meta.map(|m| m.last_index).unwrap_or(0);
                    // An index that goes backwards (snapshot restore, another server) restarts
                    // the watch from scratch; a zero index would never block, so treat it as 1.
                    let index = index.max(1);
                    self.last_index = if index < self.last_index { 0 } else { index };
                    if self.last_value.as_ref() == Some(&value) {
                        continue;
                    }
                    self.last_value = Some(value.clone());
                    return Ok(value);
                }
                Err(e) => {
                    self.failures = self.failures.saturating_add(1);
                    self.current = (self.current + 1) % self.clients.len();
                    self.last_index = 0;
                    // `attempts` retries after the first failure, as consul-template counts them.
                    let exhausted =
                        !self.retry.enabled || (self.retry.attempts > 0 && self.failures > self.retry.attempts);
                    if exhausted {
                        let attempts = self.failures;
                        // A caller that carries on starts a fresh round of attempts.
                        self.failures = 0;
                        return Err(Error::RetriesExhausted { attempts, last: Box::new(e) });
                    }
                    return Err(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
