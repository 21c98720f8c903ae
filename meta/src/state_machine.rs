//! The state machine: a local store that applies the log's calls in order.
//!
//! What has been applied is recorded in the store itself, in the same batch
//! as each applied change (the marker: the entry's log id and the
//! membership then), so a member that restarts neither repeats nor skips a
//! change. Entries whose call changed nothing leave no marker; applying them
//! again after a restart changes nothing again.

use std::io::Cursor;

use openraft::BasicNode;
use openraft::storage::RaftStateMachine;
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use strata_store::{ApplyContext, Store};

use crate::{MetaAnswer, TypeConfig};

type StorageResult<T> = Result<T, StorageError<u64>>;

pub(crate) struct StateMachine {
    store: Store,
    applied: Marker,
}

/// What the store records of the log.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Marker {
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
}

fn state_error(why: impl ToString) -> StorageError<u64> {
    StorageIOError::write_state_machine(openraft::AnyError::error(why)).into()
}

fn snapshot_error() -> StorageError<u64> {
    StorageIOError::read_snapshot(
        None,
        openraft::AnyError::error("this member keeps the whole log and builds no snapshots"),
    )
    .into()
}

impl StateMachine {
    pub(crate) async fn open(store: Store) -> Result<StateMachine, String> {
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
        Ok(StateMachine { store, applied })
    }

    fn marker(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(&self.applied)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = NoSnapshots;

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
            self.applied.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Normal(call) => {
                    let context = ApplyContext {
                        at_ms: call.at_ms,
                        nonce: call.nonce,
                        marker: self.marker().map_err(state_error)?,
                    };
                    // A failure of this member's own database is not the
                    // call's answer: the replica would no longer match the
                    // others, so the member stops.
                    let answer = self
                        .store
                        .apply_meta(call.call.as_bytes(), context)
                        .await
                        .map_err(state_error)?;
                    answers.push(MetaAnswer(answer));
                }
                // No call to apply, but not to be applied twice either.
                payload => {
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

    async fn get_snapshot_builder(&mut self) -> NoSnapshots {
        NoSnapshots
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Err(snapshot_error())
    }

    async fn install_snapshot(
        &mut self,
        _meta: &SnapshotMeta<u64, BasicNode>,
        _snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        Err(snapshot_error())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        Ok(None)
    }
}

/// Snapshots are never built (the policy is `Never` and the log is never
/// purged), so a member behind catches up from the log.
pub(crate) struct NoSnapshots;

impl RaftSnapshotBuilder<TypeConfig> for NoSnapshots {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        Err(snapshot_error())
    }
}
