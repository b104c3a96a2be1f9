//! The in-memory state store: catalog (nodes, services, checks), KV, sessions, with an index per
//! table and per service name, and watch channels for blocking queries.
//!
//! It does no IO, reads no clock and spawns nothing. Only the Raft state machine writes it (through
//! [`Store::apply`] and [`Store::restore`]); time arrives inside the command (`Request::now_ms`).

mod apply;
mod apply_acl;
pub mod watch;

use crate::structs::*;
use parking_lot::{RwLock, RwLockReadGuard};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
pub use watch::{Changes, Table, WatchSet, Watches};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Indexes {
    pub nodes: u64,
    pub services: u64,
    pub checks: u64,
    pub kv: u64,
    pub sessions: u64,
    #[serde(default)]
    pub config_entries: u64,
    #[serde(default)]
    pub coordinates: u64,
    #[serde(default)]
    pub connect_ca: u64,
    #[serde(default)]
    pub prepared_queries: u64,
}

/// Everything the store holds; also the snapshot format.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub nodes: BTreeMap<String, Node>,
    /// node → service ID → service
    pub services: BTreeMap<String, BTreeMap<String, Service>>,
    /// node → check ID → check
    pub checks: BTreeMap<String, BTreeMap<String, Check>>,
    pub kv: BTreeMap<String, KvEntry>,
    /// Deleted keys and the index that deleted them, so that a prefix query's index moves forward
    /// on a delete.
    pub tombstones: BTreeMap<String, u64>,
    pub sessions: BTreeMap<String, Session>,
    /// Keys whose lock was lost with a session, and the time (ms) until they may be acquired again.
    pub lock_delays: BTreeMap<String, u64>,
    pub index: Indexes,
    /// Service name → the last index that changed any of its instances or their health.
    pub service_index: BTreeMap<String, u64>,
    pub last_index: u64,
    /// Operator-set autopilot configuration and (create, modify) indexes; `None` means defaults.
    #[serde(default)]
    pub autopilot: Option<(serde_json::Value, u64, u64)>,
    /// Tokens, policies, roles, auth methods, binding rules.
    #[serde(default)]
    pub acl: crate::acl::model::Tables,
    /// Config entries as Consul's JSON, by kind then name (with CreateIndex and ModifyIndex).
    #[serde(default)]
    pub config_entries: BTreeMap<String, BTreeMap<String, serde_json::Value>>,
    /// Network coordinates by node name (Consul's `Coord` JSON).
    #[serde(default)]
    pub coordinates: BTreeMap<String, serde_json::Value>,
    /// The Connect CA: its configuration, roots and (private) signing key, as one JSON value.
    #[serde(default)]
    pub connect_ca: Option<serde_json::Value>,
    /// Prepared queries as Consul's JSON, by ID.
    #[serde(default)]
    pub prepared_queries: BTreeMap<String, serde_json::Value>,
}

pub type Snapshot = State;

#[derive(Default)]
pub struct Store {
    state: RwLock<State>,
    watches: Watches,
}

impl Store {
    pub fn new() -> Store {
        Store::default()
    }

    /// A read view. Never hold it across an `.await`.
    pub fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read()
    }

    pub fn watches(&self) -> &Watches {
        &self.watches
    }

    /// Applies one committed command at Raft index `index`, then wakes its watchers.
    pub fn apply(&self, index: u64, request: &Request) -> Response {
        let (response, changes) = {
            let mut state = self.state.write();
            let mut changes = Changes::default();
            let response = apply::apply(&mut state, index, request, &mut changes);
            state.last_index = state.last_index.max(index);
            (response, changes)
        };
        if !changes.is_empty() {
            self.watches.fire(&changes);
        }
        response
    }

    /// Records that `index` was applied without a state change (Raft blank or membership entries).
    pub fn bump(&self, index: u64) {
        let mut state = self.state.write();
        state.last_index = state.last_index.max(index);
    }

    pub fn snapshot(&self) -> State {
        self.state.read().clone()
    }

    /// Replaces everything (snapshot install) and wakes every waiter.
    pub fn restore(&self, snapshot: State) {
        *self.state.write() = snapshot;
        self.watches.fire(&Changes { all: true, ..Default::default() });
    }
}

/// Read-side helpers: each returns its answer and the index a blocking query compares.
impl State {
    pub fn node_services(&self, node: &str) -> impl Iterator<Item = &Service> {
        self.services.get(node).into_iter().flat_map(|m| m.values())
    }

    pub fn node_checks(&self, node: &str) -> impl Iterator<Item = &Check> {
        self.checks.get(node).into_iter().flat_map(|m| m.values())
    }

    pub fn all_services(&self) -> impl Iterator<Item = (&String, &Service)> {
        self.services.iter().flat_map(|(n, m)| m.values().map(move |s| (n, s)))
    }

    pub fn all_checks(&self) -> impl Iterator<Item = &Check> {
        self.checks.values().flat_map(|m| m.values())
    }

    /// Instances of a service as (node, service), in node order.
    pub fn service_instances<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (&'a Node, &'a Service)> + 'a {
        self.services.iter().flat_map(move |(node, m)| {
            let n = self.nodes.get(node);
            m.values().filter(move |s| s.service == name).filter_map(move |s| n.map(|n| (n, s)))
        })
    }

    /// The checks that bear on one instance: the node's own and the service's.
    pub fn instance_checks<'a>(&'a self, node: &'a str, service_id: &'a str) -> impl Iterator<Item = &'a Check> + 'a {
        self.node_checks(node).filter(move |c| c.service_id.is_empty() || c.service_id == service_id)
    }

    pub fn service_index(&self, name: &str) -> u64 {
        self.service_index.get(name).copied().unwrap_or(self.index.services)
    }

    pub fn catalog_index(&self) -> u64 {
        self.index.nodes.max(self.index.services).max(self.index.checks)
    }

    /// KV entries under a prefix.
    pub fn kv_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a KvEntry> + 'a {
        self.kv.range(prefix.to_string()..).take_while(move |(k, _)| k.starts_with(prefix)).map(|(_, e)| e)
    }

    /// The index of a prefix: the newest write or delete under it, else the KV table's index.
    pub fn kv_prefix_index(&self, prefix: &str) -> u64 {
        let live = self.kv_prefix(prefix).map(|e| e.modify_index).max().unwrap_or(0);
        let dead = self
            .tombstones
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, i)| *i)
            .max()
            .unwrap_or(0);
        match live.max(dead) {
            0 => self.index.kv,
            i => i,
        }
    }

    /// The index of one key: its ModifyIndex, the index that deleted it, else the table's.
    pub fn kv_key_index(&self, key: &str) -> u64 {
        self.kv.get(key).map(|e| e.modify_index).or_else(|| self.tombstones.get(key).copied()).unwrap_or(self.index.kv)
    }
}

#[cfg(test)]
mod tests;
