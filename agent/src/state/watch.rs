//! Watch channels that wake blocking queries after a write commits. A query subscribes to the keys
//! it read (a table, a service name, a KV key or prefix) while it holds the read lock, so a write
//! that lands after the read always wakes it; a write before the read is already in the answer.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    Nodes,
    Services,
    Checks,
    Kv,
    Sessions,
    Acl,
    ConfigEntries,
    Coordinates,
    ConnectCa,
    PreparedQueries,
}

const TABLES: [Table; 10] = [
    Table::Nodes,
    Table::Services,
    Table::Checks,
    Table::Kv,
    Table::Sessions,
    Table::Acl,
    Table::ConfigEntries,
    Table::Coordinates,
    Table::ConnectCa,
    Table::PreparedQueries,
];

/// What one committed write touched; the store turns it into wake-ups.
#[derive(Debug, Default)]
pub struct Changes {
    pub tables: Vec<Table>,
    pub kv_keys: Vec<String>,
    pub services: Vec<String>,
    pub nodes: Vec<String>,
    /// A restore replaced everything: wake every waiter.
    pub all: bool,
}

impl Changes {
    pub fn table(&mut self, t: Table) {
        if !self.tables.contains(&t) {
            self.tables.push(t);
        }
    }

    pub fn service(&mut self, name: &str) {
        if !self.services.iter().any(|s| s == name) {
            self.services.push(name.to_string());
        }
    }

    pub fn node(&mut self, name: &str) {
        if !self.nodes.iter().any(|s| s == name) {
            self.nodes.push(name.to_string());
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tables.is_empty() && self.kv_keys.is_empty() && self.services.is_empty() && !self.all
    }
}

type Channel = Arc<Notify>;

#[derive(Default)]
struct Channels {
    kv_keys: HashMap<String, Channel>,
    kv_prefixes: HashMap<String, Channel>,
    services: HashMap<String, Channel>,
    nodes: HashMap<String, Channel>,
}

/// One `Notify` per watched thing: a few dozen bytes each, created when a query first watches it
/// and dropped once nobody does.
pub struct Watches {
    tables: HashMap<Table, Channel>,
    channels: Mutex<Channels>,
}

impl Default for Watches {
    fn default() -> Self {
        Watches {
            tables: TABLES.iter().map(|t| (*t, Arc::new(Notify::new()))).collect(),
            channels: Mutex::new(Channels::default()),
        }
    }
}

fn channel_in(map: &mut HashMap<String, Channel>, key: &str) -> Channel {
    if let Some(n) = map.get(key) {
        return n.clone();
    }
    let n = Arc::new(Notify::new());
    map.insert(key.to_string(), n.clone());
    n
}

/// Wakes everyone waiting on `key` and forgets the channel: the woken re-subscribe if they wait
/// again, and a channel nobody waits on must not linger.
fn fire_in(map: &mut HashMap<String, Channel>, key: &str) {
    if let Some(n) = map.remove(key) {
        n.notify_waiters();
    }
}

fn idle(n: &Channel) -> bool {
    Arc::strong_count(n) == 1
}

impl Watches {
    pub fn fire(&self, changes: &Changes) {
        if changes.all {
            for n in self.tables.values() {
                n.notify_waiters();
            }
            let mut guard = self.channels.lock();
            let ch = &mut *guard;
            for map in [&mut ch.kv_keys, &mut ch.kv_prefixes, &mut ch.services, &mut ch.nodes] {
                for (_, n) in map.drain() {
                    n.notify_waiters();
                }
            }
            return;
        }
        for t in &changes.tables {
            if let Some(n) = self.tables.get(t) {
                n.notify_waiters();
            }
        }
        let mut guard = self.channels.lock();
        let ch = &mut *guard;
        for key in &changes.kv_keys {
            fire_in(&mut ch.kv_keys, key);
            if !ch.kv_prefixes.is_empty() {
                // Every prefix of the key, the empty prefix and the key itself included.
                fire_in(&mut ch.kv_prefixes, "");
                for (i, _) in key.char_indices().skip(1) {
                    fire_in(&mut ch.kv_prefixes, &key[..i]);
                }
                fire_in(&mut ch.kv_prefixes, key);
            }
        }
        for s in &changes.services {
            fire_in(&mut ch.services, s);
        }
        for n in &changes.nodes {
            fire_in(&mut ch.nodes, n);
        }
    }

    /// Drops channels nobody waits on (a query that timed out leaves its channel behind).
    pub fn sweep(&self) {
        let mut guard = self.channels.lock();
        let ch = &mut *guard;
        for map in [&mut ch.kv_keys, &mut ch.kv_prefixes, &mut ch.services, &mut ch.nodes] {
            map.retain(|_, n| !idle(n));
        }
    }

    pub fn channel_count(&self) -> usize {
        let ch = self.channels.lock();
        ch.kv_keys.len() + ch.kv_prefixes.len() + ch.services.len() + ch.nodes.len()
    }
}

/// The channels one blocking query waits on. Each `OwnedNotified` is created while the query
/// holds the store's read lock, and tokio guarantees a created `Notified` receives every later
/// `notify_waiters()`, so a write that lands after the read always wakes the query.
///
/// The first waiter is kept inline: most queries watch one thing, and a parked query should not
/// pay an allocation for it. A `Notified` may move until it is first polled.
pub struct WatchSet<'a> {
    watches: &'a Watches,
    first: Option<OwnedNotified>,
    rest: Vec<OwnedNotified>,
}

impl<'a> WatchSet<'a> {
    pub fn new(watches: &'a Watches) -> WatchSet<'a> {
        WatchSet { watches, first: None, rest: Vec::new() }
    }

    fn wait_on(&mut self, n: Channel) {
        let waiter = n.notified_owned();
        match self.first {
            None => self.first = Some(waiter),
            Some(_) => self.rest.push(waiter),
        }
    }

    pub fn table(&mut self, t: Table) {
        if let Some(n) = self.watches.tables.get(&t) {
            self.wait_on(n.clone());
        }
    }

    pub fn kv_key(&mut self, key: &str) {
        let n = channel_in(&mut self.watches.channels.lock().kv_keys, key);
        self.wait_on(n);
    }

    pub fn kv_prefix(&mut self, prefix: &str) {
        let n = channel_in(&mut self.watches.channels.lock().kv_prefixes, prefix);
        self.wait_on(n);
    }

    pub fn service(&mut self, name: &str) {
        let n = channel_in(&mut self.watches.channels.lock().services, name);
        self.wait_on(n);
    }

    pub fn node(&mut self, name: &str) {
        let n = channel_in(&mut self.watches.channels.lock().nodes, name);
        self.wait_on(n);
    }

    /// Resolves when any watched channel fires.
    ///
    /// Not an `async fn`: that would hold the set, its first waiter and the awaited waiter as
    /// three copies while parked; this future is one waiter (or the boxed many) and a tag.
    pub fn changed(self) -> impl std::future::Future<Output = ()> + Send {
        use futures::future::{pending, select_all, Either, FutureExt};
        let WatchSet { first, rest, .. } = self;
        match first {
            None => Either::Left(Either::Left(pending())),
            Some(first) if rest.is_empty() => Either::Left(Either::Right(first)),
            Some(first) => {
                let all = std::iter::once(first).chain(rest).map(Box::pin);
                Either::Right(select_all(all).map(|_| ()))
            }
        }
    }
}
