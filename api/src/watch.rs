//! The blocking-query watcher every consumer shares (consul-template's `View` rules): send the last
//! index back with `?index=`, suppress answers whose data did not change, reset the index when it
//! goes backwards, back off on errors and move to another agent when one stops answering.

use crate::client::{Client, Error};
use crate::query::QueryOptions;
use serde::de::DeserializeOwned;
use std::time::Duration;

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

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

/// One blocking-query loop over `target`. `next()` returns each new value; a 404 is `T::default()`.
pub struct Watcher<T> {
    clients: Vec<Client>,
    current: usize,
    target: Target,
    opts: QueryOptions,
    last_index: u64,
    last_value: Option<T>,
    failures: u32,
}

impl<T: DeserializeOwned + PartialEq + Clone + Default> Watcher<T> {
    /// `clients` are tried in turn; at least one is required.
    pub fn new(clients: Vec<Client>, target: Target, wait: Duration) -> Watcher<T> {
        assert!(!clients.is_empty(), "a watcher needs at least one agent");
        Watcher {
            clients,
            current: 0,
            target,
            opts: QueryOptions { wait: Some(wait), ..Default::default() },
            last_index: 0,
            last_value: None,
            failures: 0,
        }
    }

    /// Allow any server to answer (`?stale`): keeps working while there is no leader.
    pub fn stale(mut self, stale: bool) -> Watcher<T> {
        self.opts.stale = stale;
        self
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

    /// Waits for the next value that differs from the last one returned. On a failed request it
    /// returns the error after switching agents; the following call waits out the backoff first.
    pub async fn next(&mut self) -> Result<T, Error> {
        loop {
            if self.failures > 0 {
                let exp = MIN_BACKOFF.saturating_mul(1 << self.failures.min(9));
                tokio::time::sleep(exp.min(MAX_BACKOFF)).await;
            }
            let opts = QueryOptions { index: self.last_index, ..self.opts.clone() };
            let client = &self.clients[self.current];
            match client.query::<T>(&self.target.path, &self.target.extra, &opts).await {
                Ok(answer) => {
                    self.failures = 0;
                    let (value, index) = match answer {
                        Some((v, meta)) => (v, meta.last_index),
                        None => (T::default(), 0),
                    };
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
                    return Err(e);
                }
            }
        }
    }
}
