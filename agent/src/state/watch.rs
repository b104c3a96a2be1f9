//! Watch channels that wake blocking queries after a write commits. A query subscribes to the keys
//! it read (a table, a service name, a KV key or prefix) while it holds the read lock, so a write
//! that lands after the read always wakes it; a write before the read is already in the answer.

use parking_lot::Mutex;
use std::collections::HashMap;
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    Nodes,
    Services,
    Checks,
    Kv,
    Sessions,
}

const TABLES: [Table; 5] = [Table::Nodes, Table::Services, Table::Checks, Table::Kv, Table::Sessions];

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

#[derive(Default)]
struct Channels {
    kv_keys: HashMap<String, watch::Sender<()>>,
    kv_prefixes: HashMap<String, watch::Sender<()>>,
    services: HashMap<String, watch::Sender<()>>,
    nodes: HashMap<String, watch::Sender<()>>,
}

pub struct Watches {
    tables: HashMap<Table, watch::Sender<()>>,
    channels: Mutex<Channels>,
}

impl Default for Watches {
    fn default() -> Self {
        Watches {
            tables: TABLES.iter().map(|t| (*t, watch::channel(()).0)).collect(),
            channels: Mutex::new(Channels::default()),
        }
    }
}

fn subscribe_in(map: &mut HashMap<String, watch::Sender<()>>, key: &str) -> watch::Receiver<()> {
    if let Some(tx) = map.get(key) {
        return tx.subscribe();
    }
    let (tx, rx) = watch::channel(());
    map.insert(key.to_string(), tx);
    rx
}

/// Wakes the channel of `key` and forgets it when nobody is listening any more.
fn fire_in(map: &mut HashMap<String, watch::Sender<()>>, key: &str) {
    if let Some(tx) = map.get(key) {
        tx.send_replace(());
        if tx.receiver_count() == 0 {
            map.remove(key);
        }
    }
}

impl Watches {
    pub fn fire(&self, changes: &Changes) {
        if changes.all {
            for tx in self.tables.values() {
                tx.send_replace(());
            }
            let mut guard = self.channels.lock();
            let ch = &mut *guard;
            for map in [&mut ch.kv_keys, &mut ch.kv_prefixes, &mut ch.services, &mut ch.nodes] {
                for tx in map.values() {
                    tx.send_replace(());
                }
                map.retain(|_, tx| tx.receiver_count() > 0);
            }
            return;
        }
        for t in &changes.tables {
            if let Some(tx) = self.tables.get(t) {
                tx.send_replace(());
            }
        }
        let mut ch = self.channels.lock();
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

    /// Drops channels nobody listens to (a query that timed out leaves its channel behind).
    pub fn sweep(&self) {
        let mut guard = self.channels.lock();
        let ch = &mut *guard;
        for map in [&mut ch.kv_keys, &mut ch.kv_prefixes, &mut ch.services, &mut ch.nodes] {
            map.retain(|_, tx| tx.receiver_count() > 0);
        }
    }

    pub fn channel_count(&self) -> usize {
        let ch = self.channels.lock();
        ch.kv_keys.len() + ch.kv_prefixes.len() + ch.services.len() + ch.nodes.len()
    }
}

/// The channels one blocking query waits on.
pub struct WatchSet<'a> {
    watches: &'a Watches,
    receivers: Vec<watch::Receiver<()>>,
}

impl<'a> WatchSet<'a> {
    pub fn new(watches: &'a Watches) -> WatchSet<'a> {
        WatchSet { watches, receivers: Vec::new() }
    }

    pub fn table(&mut self, t: Table) {
        if let Some(tx) = self.watches.tables.get(&t) {
            self.receivers.push(tx.subscribe());
        }
    }

    pub fn kv_key(&mut self, key: &str) {
        let rx = subscribe_in(&mut self.watches.channels.lock().kv_keys, key);
        self.receivers.push(rx);
    }

    pub fn kv_prefix(&mut self, prefix: &str) {
        let rx = subscribe_in(&mut self.watches.channels.lock().kv_prefixes, prefix);
        self.receivers.push(rx);
    }

    pub fn service(&mut self, name: &str) {
        let rx = subscribe_in(&mut self.watches.channels.lock().services, name);
        self.receivers.push(rx);
    }

    pub fn node(&mut self, name: &str) {
        let rx = subscribe_in(&mut self.watches.channels.lock().nodes, name);
        self.receivers.push(rx);
    }

    /// Resolves when any watched channel fires.
    pub async fn changed(mut self) {
        if self.receivers.is_empty() {
            return futures::future::pending().await;
        }
        let futs = self.receivers.iter_mut().map(|rx| Box::pin(rx.changed()));
        let _ = futures::future::select_all(futs).await;
    }
}
