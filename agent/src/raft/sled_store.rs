//! The one place sled appears: the Raft log, the vote and the latest snapshot, under `-data-dir`
//! (or a temporary database for `-dev`). Log indexes are big-endian keys so ranges are ordered.
//! Every write that openraft treats as durable is flushed before it is reported.

use super::{Entry, LogId, NodeId, StorageError, TypeConfig};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, RaftLogReader, StorageIOError, Vote};
use serde::{de::DeserializeOwned, Serialize};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("opening the data dir {path}: {source}")]
    Sled { path: String, source: sled::Error },
}

/// The open database; cheap to clone.
#[derive(Clone)]
pub struct Db {
    db: sled::Db,
    logs: sled::Tree,
    meta: sled::Tree,
}

impl Db {
    /// `None` gives a temporary in-memory database (dev mode).
    pub fn open(dir: Option<&Path>) -> Result<Db, OpenError> {
        let (cfg, path) = match dir {
            Some(d) => (sled::Config::new().path(d.join("raft")), d.display().to_string()),
            None => (sled::Config::new().temporary(true), "(temporary)".to_string()),
        };
        let err = |source| OpenError::Sled { path: path.clone(), source };
        let db = cfg.open().map_err(err)?;
        let logs = db.open_tree("logs").map_err(err)?;
        let meta = db.open_tree("meta").map_err(err)?;
        Ok(Db { db, logs, meta })
    }

    /// The log store; its group-commit flusher runs as a task on the current runtime.
    pub fn log_store(&self) -> LogStore {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(flusher(self.db.clone(), rx));
        LogStore { db: self.clone(), flushes: tx }
    }

    /// Saves the latest snapshot (metadata and bytes) and flushes.
    pub async fn save_snapshot(&self, meta: &[u8], data: &[u8]) -> Result<(), StorageError> {
        self.write_snapshot(meta, data)?;
        self.flush().await
    }

    /// Writes the latest snapshot without waiting for the disk (blocking: a large snapshot is
    /// a large write).
    pub fn write_snapshot(&self, meta: &[u8], data: &[u8]) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        batch.insert("snapshot_meta", meta);
        batch.insert("snapshot_data", data);
        self.meta.apply_batch(batch).map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        Ok(())
    }

    /// Waits until everything written is on disk.
    pub async fn flush(&self) -> Result<(), StorageError> {
        self.db.flush_async().await.map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        Ok(())
    }

    pub fn load_snapshot(&self) -> Result<Option<(Vec<u8>, Vec<u8>)>, StorageError> {
        let io = |e: sled::Error| StorageIOError::read_snapshot(None, &e);
        let meta = self.meta.get("snapshot_meta").map_err(io)?;
        let data = self.meta.get("snapshot_data").map_err(io)?;
        Ok(match (meta, data) {
            (Some(m), Some(d)) => Some((m.to_vec(), d.to_vec())),
            _ => None,
        })
    }
}

fn key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn index_of(key: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&key[..8]);
    u64::from_be_bytes(b)
}

fn encode<T: Serialize>(v: &T, subject: ErrorSubject<NodeId>) -> Result<Vec<u8>, StorageError> {
    serde_json::to_vec(v).map_err(|e| StorageIOError::new(subject, ErrorVerb::Write, &e).into())
}

fn decode<T: DeserializeOwned>(b: &[u8], subject: ErrorSubject<NodeId>) -> Result<T, StorageError> {
    serde_json::from_slice(b).map_err(|e| StorageIOError::new(subject, ErrorVerb::Read, &e).into())
}

fn sled_err(subject: ErrorSubject<NodeId>, verb: ErrorVerb, e: sled::Error) -> StorageError {
    StorageIOError::new(subject, verb, &e).into()
}

#[derive(Clone)]
pub struct LogStore {
    db: Db,
    flushes: tokio::sync::mpsc::UnboundedSender<LogFlushed<TypeConfig>>,
}

/// Group commit: takes every append waiting for durability, flushes sled once, then reports them
/// all in order. One fsync covers as many writes as arrived while the previous one ran.
async fn flusher(db: sled::Db, mut rx: tokio::sync::mpsc::UnboundedReceiver<LogFlushed<TypeConfig>>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let result = db.flush_async().await.map(|_| ());
        for cb in batch {
            let r = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
            cb.log_io_completed(r);
        }
    }
}

impl LogStore {
    fn get_meta<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, StorageError> {
        match self.db.meta.get(name).map_err(|e| sled_err(ErrorSubject::Store, ErrorVerb::Read, e))? {
            Some(b) => Ok(Some(decode(&b, ErrorSubject::Store)?)),
            None => Ok(None),
        }
    }

    async fn put_meta<T: Serialize>(&self, name: &str, v: &T, flush: bool) -> Result<(), StorageError> {
        let b = encode(v, ErrorSubject::Store)?;
        self.db.meta.insert(name, b).map_err(|e| sled_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
        if flush {
            self.db.db.flush_async().await.map_err(|e| sled_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
        }
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        let mut out = Vec::new();
        for item in self.db.logs.range(key(start)..) {
            let (k, v) = item.map_err(|e| sled_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            let idx = index_of(&k);
            if !range.contains(&idx) {
                break;
            }
            out.push(decode(&v, ErrorSubject::Logs)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.get_meta("last_purged")?;
        let last = match self.db.logs.last().map_err(|e| sled_err(ErrorSubject::Logs, ErrorVerb::Read, e))? {
            Some((_, v)) => Some(decode::<Entry>(&v, ErrorSubject::Logs)?.log_id),
            None => last_purged,
        };
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.put_meta("vote", vote, true).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.get_meta("vote")
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not flushed: losing it only means re-applying from the last snapshot on restart.
        self.put_meta("committed", &committed, false).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_meta::<Option<LogId>>("committed")?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut batch = sled::Batch::default();
        for e in entries {
            batch.insert(&key(e.log_id.index), encode(&e, ErrorSubject::Logs)?);
        }
        self.db.logs.apply_batch(batch).map_err(|e| sled_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        // Durable later: the flusher reports it through the callback once sled has synced.
        if let Err(tokio::sync::mpsc::error::SendError(cb)) = self.flushes.send(callback) {
            let flushed = self.db.db.flush_async().await.map(|_| ()).map_err(std::io::Error::other);
            cb.log_io_completed(flushed);
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for item in self.db.logs.range(key(log_id.index)..) {
            let (k, _) = item.map_err(|e| sled_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            batch.remove(k);
        }
        self.db.logs.apply_batch(batch).map_err(|e| sled_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        self.db.db.flush_async().await.map_err(|e| sled_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.put_meta("last_purged", &log_id, false).await?;
        let mut batch = sled::Batch::default();
        for item in self.db.logs.range(..=key(log_id.index)) {
            let (k, _) = item.map_err(|e| sled_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            batch.remove(k);
        }
        self.db.logs.apply_batch(batch).map_err(|e| sled_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        self.db.db.flush_async().await.map_err(|e| sled_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::state_machine::StateMachine;
    use crate::state::Store;
    use openraft::testing::{StoreBuilder, Suite};
    use std::sync::Arc;

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
        async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
            let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(&e))?;
            let db =
                Db::open(Some(dir.path())).map_err(|e| StorageIOError::write(&std::io::Error::other(e.to_string())))?;
            let sm = StateMachine::open(Arc::new(Store::new()), db.clone())?;
            Ok((dir, db.log_store(), sm))
        }
    }

    /// openraft's storage conformance suite against the sled store on a real data dir.
    #[test]
    fn passes_openraft_storage_suite() {
        Suite::test_all(Builder).expect("storage suite");
    }
}
