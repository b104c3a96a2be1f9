//! One task per dependency, feeding the runner: HTTP dependencies go through the shared
//! blocking-query [`api::Watcher`] (index handling, dedupe, backoff, agent failover); the
//! datacenter list (not a blocking endpoint) and local files are polled. Each task only sends
//! [`Update`]s; it never touches templates or files.

use crate::dep::{self, Dep};
use api::{Client, Target, Watcher};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;

/// What a dependency task reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    Data {
        dep: Dep,
        value: Value,
    },
    Error {
        dep: Dep,
        error: String,
    },
    /// The retries ran out (`-consul-retry-attempts`): consul-template stops with an error.
    Fatal {
        dep: Dep,
        error: String,
    },
}

#[derive(Debug, Clone)]
pub struct Options {
    pub clients: Vec<Client>,
    /// `?wait=` of each blocking query.
    pub wait: Duration,
    /// `-max-stale`: read with `?stale`, and again from the leader when the answer is older than
    /// this; zero reads from the leader only.
    pub max_stale: Duration,
    /// `-consul-retry*`: backoff between failed queries, and when to give up.
    pub retry: api::watch::Retry,
    /// How often non-blocking sources (datacenters, files) are polled.
    pub poll: Duration,
}

/// Starts watching `dep`; abort the handle to stop.
pub fn spawn(dep: Dep, opts: Options, tx: UnboundedSender<Update>) -> JoinHandle<()> {
    let span = tracing::debug_span!("watch", dep = %dep);
    tokio::spawn(tracing::Instrument::instrument(run(dep, opts, tx), span))
}

async fn run(dep: Dep, opts: Options, tx: UnboundedSender<Update>) {
    match dep.clone() {
        Dep::HealthService { filter, near, .. } => {
            let keep_order = near.is_some();
            blocking::<Vec<api::ServiceEntry>, _>(dep, opts, tx, move |v| dep::health_services(&v, &filter, keep_order))
                .await
        }
        Dep::CatalogServices { .. } => {
            blocking::<std::collections::BTreeMap<String, Vec<String>>, _>(dep, opts, tx, |v| dep::catalog_services(&v))
                .await
        }
        Dep::KvGet { .. } => blocking::<Vec<api::KvPair>, _>(dep, opts, tx, |v| dep::kv_get(&v)).await,
        Dep::KvList { prefix, .. } => {
            blocking::<Vec<api::KvPair>, _>(dep, opts, tx, move |v| dep::kv_list(&v, &prefix)).await
        }
        Dep::CatalogNodes { near, .. } => {
            let keep_order = near.is_some();
            blocking::<Vec<api::Node>, _>(dep, opts, tx, move |v| dep::catalog_nodes(&v, keep_order)).await
        }
        Dep::CatalogNode { ref name, ref dc } if name.is_empty() => {
            // The agent's own node: ask it for its name once, then watch that node.
            let name = loop {
                match opts.clients[0].agent_self().await {
                    Ok(v) => match v["Config"]["NodeName"].as_str() {
                        Some(n) if !n.is_empty() => break n.to_string(),
                        _ => {}
                    },
                    Err(e) => {
                        let _ = tx.send(Update::Error { dep: dep.clone(), error: e.to_string() });
                    }
                }
                tokio::time::sleep(opts.poll.max(Duration::from_secs(1))).await;
            };
            let target = Dep::CatalogNode { name, dc: dc.clone() }.target();
            blocking_target::<api::CatalogNode, _>(dep, target, opts, tx, |v| dep::catalog_node(&v)).await
        }
        Dep::CatalogNode { .. } => blocking::<api::CatalogNode, _>(dep, opts, tx, |v| dep::catalog_node(&v)).await,
        Dep::Datacenters => poll_datacenters(dep, opts, tx).await,
        Dep::File { ref path } => poll_file(dep.clone(), path.clone(), opts, tx).await,
    }
}

async fn blocking<T, F>(dep: Dep, opts: Options, tx: UnboundedSender<Update>, shape: F)
where
    T: DeserializeOwned + PartialEq + Clone + Default,
    F: Fn(T) -> Value,
{
    let target = dep.target();
    blocking_target(dep, target, opts, tx, shape).await
}

async fn blocking_target<T, F>(dep: Dep, target: Option<Target>, opts: Options, tx: UnboundedSender<Update>, shape: F)
where
    T: DeserializeOwned + PartialEq + Clone + Default,
    F: Fn(T) -> Value,
{
    let Some(target) = target else { return };
    let mut watcher: Watcher<T> = match Watcher::new(opts.clients.clone(), target, opts.wait) {
        Ok(w) => w.max_stale(opts.max_stale).retry(opts.retry.clone()),
        Err(e) => {
            let _ = tx.send(Update::Fatal { dep, error: e.to_string() });
            return;
        }
    };
    loop {
        let update = match watcher.next().await {
            Ok(v) => Update::Data { dep: dep.clone(), value: shape(v) },
            Err(e @ api::Error::RetriesExhausted { .. }) => {
                let _ = tx.send(Update::Fatal { dep: dep.clone(), error: e.to_string() });
                return;
            }
            // The watcher backs off before its next request; the runner keeps the last data.
            Err(e) => Update::Error { dep: dep.clone(), error: e.to_string() },
        };
        if tx.send(update).is_err() {
            return;
        }
    }
}

async fn poll_datacenters(dep: Dep, opts: Options, tx: UnboundedSender<Update>) {
    let mut last: Option<Value> = None;
    let mut current = 0usize;
    loop {
        let client = &opts.clients[current % opts.clients.len()];
        let update = match client.catalog_datacenters().await {
            Ok(dcs) => {
                let value = Value::from(dcs);
                if last.as_ref() == Some(&value) {
                    None
                } else {
                    last = Some(value.clone());
                    Some(Update::Data { dep: dep.clone(), value })
                }
            }
            Err(e) => {
                current += 1;
                Some(Update::Error { dep: dep.clone(), error: e.to_string() })
            }
        };
        if let Some(u) = update {
            if tx.send(u).is_err() {
                return;
            }
        }
        tokio::time::sleep(opts.poll.max(Duration::from_secs(1)) * 30).await;
    }
}

async fn poll_file(dep: Dep, path: String, opts: Options, tx: UnboundedSender<Update>) {
    let mut last: Option<String> = None;
    let mut reported = false;
    loop {
        match tokio::fs::read(&path).await {
            Ok(bytes) => {
                reported = false;
                let text = String::from_utf8_lossy(&bytes).into_owned();
                if last.as_deref() != Some(text.as_str()) {
                    last = Some(text.clone());
                    if tx.send(Update::Data { dep: dep.clone(), value: Value::String(text) }).is_err() {
                        return;
                    }
                }
            }
            // consul-template waits for a file that does not exist yet; say so once.
            Err(e) if !reported => {
                reported = true;
                if tx.send(Update::Error { dep: dep.clone(), error: format!("reading {path}: {e}") }).is_err() {
                    return;
                }
            }
            Err(_) => {}
        }
        tokio::time::sleep(opts.poll).await;
    }
}
