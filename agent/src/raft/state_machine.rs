//! openraft's state machine over the in-memory state store. Applying is `Store::apply`; snapshots
//! are the whole store serialized and kept in sled, so a restart loads the latest snapshot and
//! openraft replays the log after it.

use super::sled_store::Db;
use super::{Entry, LogId, NodeId, Peer, StorageError, TypeConfig};
use crate::state::{State, Store};
use crate::structs::Response;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, RaftSnapshotBuilder, SnapshotMeta, StorageIOError, StoredMembership};
use serde::{Deserialize, Serialize};
use std::io::Cursor;
use std::sync::Arc;

#[derive(Serialize, Deserialize)]
struct SnapshotData {
    last_applied: Option<LogId>,
    membership: StoredMembership<NodeId, Peer>,
    state: State,
}

pub struct StateMachine {
    store: Arc<Store>,
    db: Db,
    last_applied: Option<LogId>,
    membership: StoredMembership<NodeId, Peer>,
    snapshot_seq: u64,
}

impl StateMachine {
    /// Loads the latest persisted snapshot into `store`, if there is one.
    pub fn open(store: Arc<Store>, db: Db) -> Result<StateMachine, StorageError> {
        let mut sm = StateMachine { store, db, last_applied: None, membership: Default::default(), snapshot_seq: 0 };
        if let Some((_, data)) = sm.db.load_snapshot()? {
            let snap: SnapshotData =
                serde_json::from_slice(&data).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
            sm.last_applied = snap.last_applied;
            sm.membership = snap.membership;
            sm.store.restore(snap.state);
        }
        Ok(sm)
    }
}

pub struct Builder {
    data: SnapshotData,
    db: Db,
    seq: u64,
}

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let snapshot_id = match &self.data.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, self.seq),
            None => format!("--{}", self.seq),
        };
        let meta = SnapshotMeta {
            last_log_id: self.data.last_applied,
            last_membership: self.data.membership.clone(),
            snapshot_id,
        };
        let meta_bytes = serde_json::to_vec(&meta).map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        // Serializing the whole store and writing it out takes long on a large store: on a
        // blocking thread, not on a runtime worker that requests and Raft need meanwhile.
        let data = std::mem::replace(
            &mut self.data,
            SnapshotData { last_applied: None, membership: Default::default(), state: State::default() },
        );
        let db = self.db.clone();
        let bytes = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, StorageError> {
            let bytes = serde_json::to_vec(&data).map_err(|e| StorageIOError::write_snapshot(None, &e))?;
            db.write_snapshot(&meta_bytes, &bytes)?;
            Ok(bytes)
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(None, &std::io::Error::other(e.to_string())))??;
        self.db.flush().await?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Builder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership<NodeId, Peer>), StorageError> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut out = Vec::new();
        for entry in entries {
            let index = entry.log_id.index;
            self.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => {
                    self.store.bump(index);
                    out.push(Response::Ok);
                }
                EntryPayload::Normal(req) => out.push(self.store.apply(index, &req)),
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m);
                    self.store.bump(index);
                    out.push(Response::Ok);
                }
            }
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Builder {
        // Cloned here, while no apply runs, so the snapshot matches `last_applied` exactly.
        self.snapshot_seq += 1;
        Builder {
            data: SnapshotData {
                last_applied: self.last_applied,
                membership: self.membership.clone(),
                state: self.store.snapshot(),
            },
            db: self.db.clone(),
            seq: self.snapshot_seq,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Peer>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let snap: SnapshotData =
            serde_json::from_slice(&bytes).map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let meta_bytes =
            serde_json::to_vec(meta).map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        self.db.save_snapshot(&meta_bytes, &bytes).await?;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.store.restore(snap.state);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let Some((meta, data)) = self.db.load_snapshot()? else { return Ok(None) };
        let meta: SnapshotMeta<NodeId, Peer> =
            serde_json::from_slice(&meta).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(Some(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) }))
    }
}
