//! The state machine: a local store that applies the log's calls in order.
//!
//! What has been applied is recorded in the store itself, in the same batch
//! as each applied change (the marker: the last whole entry's log id, how
//! many calls of the next one are applied, and the membership), so a
//! member that restarts neither repeats nor skips a call. Calls that
//! changed nothing leave no marker; applying them again after a restart
//! changes nothing again.
//!
//! Snapshots are the replica's export ([`Store::export_replica`], the
//! marker inside), taken while no entry is being applied and kept in the
//! directory beside the log's (`snapshot`, `snapshot.meta`), so the log can be purged
//! up to them; a member that lacks purged entries installs one
//! ([`Store::import_replica`]). A member that crashed in the middle of an
//! install starts empty and is sent a snapshot again.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use openraft::BasicNode;
use openraft::storage::RaftStateMachine;
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use strata_store::{ApplyContext, Store};

use crate::{MetaAnswer, MetaEntry, TypeConfig};

type StorageResult<T> = Result<T, StorageError<u64>>;

pub(crate) struct StateMachine {
    /// This member's id.
    id: u64,
    store: Store,
    applied: Marker,
    snapshots: SnapshotFiles,
}

/// What the store records of the log.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Marker {
    /// The last entry whose calls are all applied.
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    /// The entry after it when only its first calls are applied: its id
    /// and how many. A member that stops in between applies the others
    /// at its restart, not those again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    partial: Option<(LogId<u64>, usize)>,
}

fn state_error(why: impl ToString) -> StorageError<u64> {
    StorageIOError::write_state_machine(openraft::AnyError::error(why)).into()
}

fn snapshot_error(why: impl ToString) -> StorageError<u64> {
    StorageIOError::read_snapshot(None, openraft::AnyError::error(why)).into()
}

impl StateMachine {
    /// Opens the state machine over `store`, with its snapshot kept in
    /// `snapshot_dir` (created if missing).
    pub(crate) async fn open(
        id: u64,
        store: Store,
        snapshot_dir: &Path,
    ) -> Result<StateMachine, String> {
        std::fs::create_dir_all(snapshot_dir)
            .map_err(|err| format!("creating {}: {err}", snapshot_dir.display()))?;
        let interrupted = store
            .replica_import_interrupted()
            .await
            .map_err(|err| format!("reading the replica: {err}"))?;
        if interrupted {
            tracing::warn!("a snapshot install was cut short: the replica starts empty");
            store
                .wipe_replica()
                .await
                .map_err(|err| format!("wiping the replica: {err}"))?;
        }
        let applied = match store
            .applied_marker()
            .await
            .map_err(|err| format!("reading the applied marker: {err}"))?
        {
            None => {
                // The log would be applied again on top of what is there.
                let changed = store
                    .feed_since(0, 1)
                    .await
                    .map_err(|err| format!("reading the replica's feed: {err}"))?;
                if !changed.is_empty() {
                    return Err(
                        "the replica's database holds metadata that did not come from the \
                         replicated log (a gateway that held the metadata alone?): a member \
                         starts from an empty data directory"
                            .into(),
                    );
                }
                Marker::default()
            }
            Some(bytes) => serde_json::from_slice(&bytes)
                .map_err(|err| format!("undecodable applied marker: {err}"))?,
        };
        Ok(StateMachine {
            id,
            store,
            applied,
            snapshots: SnapshotFiles {
                dir: snapshot_dir.to_owned(),
            },
        })
    }

    fn marker(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(&self.applied)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>)> {
        Ok((self.applied.last_applied, self.applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<MetaAnswer>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut answers = Vec::new();
        for entry in entries {
            match entry.payload {
                EntryPayload::Normal(MetaEntry { calls }) => {
                    // The calls applied before a restart are not applied
                    // again (nobody waits for their answers any more).
                    let done = match self.applied.partial {
                        Some((log_id, done)) if log_id == entry.log_id => done,
                        _ => 0,
                    };
                    // Only the member that proposed the entry has callers
                    // waiting (a member that leads later was not asked).
                    let proposed_here = entry.log_id.leader_id.node_id == self.id;
                    let count = calls.len();
                    let mut answered = vec![Vec::new(); done.min(count)];
                    for (index, call) in calls.into_iter().enumerate().skip(done) {
                        let mut next = self.applied.clone();
                        if index + 1 == count {
                            next.last_applied = Some(entry.log_id);
                            next.partial = None;
                        } else {
                            next.partial = Some((entry.log_id, index + 1));
                        }
                        let context = ApplyContext {
                            at_ms: call.at_ms,
                            nonce: call.nonce,
                            marker: serde_json::to_vec(&next).map_err(state_error)?,
                            answered: proposed_here,
                        };
                        // A failure of this member's own database is not
                        // the call's answer: the replica would no longer
                        // match the others, so the member stops.
                        let answer = self
                            .store
                            .apply_meta(call.call.as_bytes(), context)
                            .await
                            .map_err(state_error)?;
                        answered.push(answer);
                        self.applied = next;
                    }
                    if count == 0 {
                        self.applied.last_applied = Some(entry.log_id);
                    }
                    answers.push(MetaAnswer(answered));
                }
                // No call to apply, but not to be applied twice either.
                payload => {
                    self.applied.last_applied = Some(entry.log_id);
                    self.applied.partial = None;
                    if let EntryPayload::Membership(membership) = payload {
                        self.applied.membership =
                            StoredMembership::new(Some(entry.log_id), membership);
                    }
                    self.store
                        .record_applied_marker(self.marker().map_err(state_error)?)
                        .await
                        .map_err(state_error)?;
                    answers.push(MetaAnswer::default());
                }
            }
        }
        Ok(answers)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        // Exported here, between two applies: the builder runs in a task of
        // its own while entries go on being applied.
        let exported = self
            .store
            .export_replica()
            .await
            .map_err(|err| err.to_string());
        SnapshotBuilder {
            last_log_id: self.applied.last_applied,
            membership: self.applied.membership.clone(),
            exported,
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        // Kept first: once the replica is replaced, its snapshot must be
        // there to send on.
        let blob = self
            .snapshots
            .save(meta, snapshot.into_inner())
            .await
            .map_err(state_error)?;
        self.store.import_replica(blob).await.map_err(state_error)?;
        self.applied = Marker {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            partial: None,
        };
        tracing::info!(last = ?meta.last_log_id, "metadata snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        self.snapshots.load().await.map_err(snapshot_error)
    }
}

/// Builds a snapshot from an export taken when the builder was made.
pub(crate) struct SnapshotBuilder {
    last_log_id: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    exported: Result<Vec<u8>, String>,
    snapshots: SnapshotFiles,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let blob = std::mem::replace(&mut self.exported, Err("already built".into()))
            .map_err(snapshot_error)?;
        let id = self
            .last_log_id
            .map_or_else(|| "empty".to_owned(), |log_id| log_id.to_string());
        let meta = SnapshotMeta {
            last_log_id: self.last_log_id,
            last_membership: self.membership.clone(),
            snapshot_id: format!("{id}-{:08x}", rand::random::<u32>()),
        };
        let blob = self
            .snapshots
            .save(&meta, blob)
            .await
            .map_err(state_error)?;
        tracing::info!(last = ?meta.last_log_id, bytes = blob.len(), "metadata snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(blob)),
        })
    }
}

/// The latest snapshot, as two files in the directory beside the log's.
#[derive(Clone)]
struct SnapshotFiles {
    dir: PathBuf,
}

impl SnapshotFiles {
    /// Replaces the kept snapshot (the data first, then its description,
    /// each fsynced and renamed into place), and hands `blob` back.
    async fn save(
        &self,
        meta: &SnapshotMeta<u64, BasicNode>,
        blob: Vec<u8>,
    ) -> Result<Vec<u8>, String> {
        let (dir, meta) = (self.dir.clone(), meta.clone());
        tokio::task::spawn_blocking(move || {
            // The description names the data by its length and CRC, so a
            // crash between the two renames is caught at load.
            let described = SnapshotDescription {
                meta,
                len: blob.len() as u64,
                crc32c: crc32c::crc32c(&blob),
            };
            let description = serde_json::to_vec(&described).map_err(|err| err.to_string())?;
            write_durably(&dir, SNAPSHOT_DATA, &blob)?;
            write_durably(&dir, SNAPSHOT_META, &description)?;
            Ok(blob)
        })
        .await
        .map_err(|err| format!("snapshot write task: {err}"))?
    }

    async fn load(&self) -> Result<Option<Snapshot<TypeConfig>>, String> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            let description = match std::fs::read(dir.join(SNAPSHOT_META)) {
                Ok(bytes) => bytes,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(err) => return Err(format!("reading the snapshot's description: {err}")),
            };
            let description: SnapshotDescription =
                serde_json::from_slice(&description).map_err(|err| err.to_string())?;
            let blob = std::fs::read(dir.join(SNAPSHOT_DATA))
                .map_err(|err| format!("reading the snapshot: {err}"))?;
            if blob.len() as u64 != description.len || crc32c::crc32c(&blob) != description.crc32c {
                return Err("the kept snapshot does not match its description".into());
            }
            Ok(Some(Snapshot {
                meta: description.meta,
                snapshot: Box::new(Cursor::new(blob)),
            }))
        })
        .await
        .map_err(|err| format!("snapshot read task: {err}"))?
    }
}

const SNAPSHOT_DATA: &str = "snapshot";
const SNAPSHOT_META: &str = "snapshot.meta";

#[derive(Serialize, Deserialize)]
struct SnapshotDescription {
    meta: SnapshotMeta<u64, BasicNode>,
    len: u64,
    crc32c: u32,
}

/// Writes `name` in `dir` through a temporary file, fsynced, then renamed
/// and the directory fsynced.
fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write as _;
    let tmp = dir.join(format!("{name}.tmp"));
    let fail = |err: std::io::Error| format!("writing {name}: {err}");
    let mut file = std::fs::File::create(&tmp).map_err(fail)?;
    file.write_all(bytes).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    std::fs::rename(&tmp, dir.join(name)).map_err(fail)?;
    std::fs::File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(fail)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
    use strata_pool::{LocalPool, LocalPoolConfig};
    use strata_store::{Store, StoreConfig};

    use super::*;
    use crate::LoggedCall;

    fn logged(call: serde_json::Value) -> LoggedCall {
        LoggedCall {
            call: call.to_string(),
            at_ms: 1_700_000_000_000,
            nonce: [7; 16],
        }
    }

    fn create_bucket(name: &str) -> LoggedCall {
        logged(serde_json::json!({
            "op": "create_bucket", "account": "acct", "name": name,
            "region": "r1", "attrs": {}
        }))
    }

    async fn open(dir: &Path, pool: &Arc<LocalPool>) -> (StateMachine, Store) {
        let mut config = StoreConfig::new(dir.join("replica"));
        config.background_expiry = false;
        let store = Store::open(config, pool.clone()).expect("replica");
        let machine = StateMachine::open(1, store.clone(), &dir.join("snapshots"))
            .await
            .expect("state machine");
        (machine, store)
    }

    /// A member that stops between two calls of an entry applies the rest
    /// of it at its restart, and not the calls it had applied. The state
    /// a stop after the first call leaves is made by an entry whose second
    /// call changes nothing (and so records nothing).
    #[tokio::test]
    async fn an_entry_cut_short_is_applied_from_where_it_stopped() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let pool = Arc::new(
            LocalPool::open(LocalPoolConfig {
                dir: dir.path().join("pool"),
            })
            .expect("pool"),
        );
        let log_id = LogId::new(CommittedLeaderId::new(1, 1), 1);
        let entry = |calls| Entry {
            log_id,
            payload: EntryPayload::Normal(MetaEntry { calls }),
        };
        {
            let (mut machine, _store) = open(dir.path(), &pool).await;
            // The second creation is refused: it changes nothing.
            let answers = machine
                .apply([entry(vec![create_bucket("a"), create_bucket("a")])])
                .await
                .expect("applied");
            assert_eq!(answers[0].0.len(), 2);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let (mut machine, store) = open(dir.path(), &pool).await;
        let (last_applied, _) = machine.applied_state().await.expect("applied state");
        assert_eq!(last_applied, None, "the entry is not whole");
        assert_eq!(machine.applied.partial, Some((log_id, 1)));

        let answers = machine
            .apply([entry(vec![create_bucket("a"), create_bucket("b")])])
            .await
            .expect("applied");
        // Applied again, the first creation would have been refused.
        assert!(
            answers[0].0[0].is_empty(),
            "the first call was applied again"
        );
        let second: serde_json::Value =
            serde_json::from_slice(&answers[0].0[1]).expect("an answer");
        assert!(second["outcome"]["Ok"].is_object(), "{second}");
        // The answer names the change, for the caller's edge to purge.
        let events = second["events"].as_array().expect("events");
        assert!(events.len() == 1 && events[0]["bucket"] == "b", "{second}");
        assert!(store.bucket("b").await.is_ok());
        drop((machine, store));
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;

        let (mut machine, _store) = open(dir.path(), &pool).await;
        let (last_applied, _) = machine.applied_state().await.expect("applied state");
        assert_eq!(last_applied, Some(log_id));
        assert_eq!(machine.applied.partial, None);
    }
}
