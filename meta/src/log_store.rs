//! The Raft logs and votes of one member, in a RocksDB of their own: every
//! group the member belongs to keeps its entries under their index
//! (big-endian, so the order of keys is the order of the log), its vote and
//! its purge point beside them, all behind the group's key prefix. Groups
//! share the database and its write-ahead log, so an fsync covers the
//! appends of every group that wrote meanwhile. Every change is written
//! with a synced WAL before openraft hears it is done.

use std::collections::HashMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    Entry, LogId, LogState, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote,
};
use rocksdb::{ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch};
use strata_store::KeySpace;

use crate::{GroupId, TypeConfig};

const CF_LOGS: &str = "logs";
const CF_STATE: &str = "state";
const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

type StorageResult<T> = Result<T, StorageError<u64>>;

/// The database that holds the logs of every group of one member, opened
/// once and shared by the groups' log stores.
#[derive(Clone)]
pub struct MetaLog {
    db: Arc<DB>,
    dir: PathBuf,
    /// The groups running over this database, each with the number of its
    /// claim: two Rafts of one group would write the same keys.
    running: Arc<parking_lot::Mutex<HashMap<GroupId, u64>>>,
}

/// A group's hold on its keys of a [`MetaLog`], released by
/// [`GroupClaim::release`] (once its Raft stopped) or when dropped.
pub(crate) struct GroupClaim {
    running: Arc<parking_lot::Mutex<HashMap<GroupId, u64>>>,
    group: GroupId,
    number: u64,
}

impl GroupClaim {
    pub(crate) fn release(&self) {
        let mut running = self.running.lock();
        // A claim released early may meet a later claim of its group.
        if running.get(&self.group) == Some(&self.number) {
            running.remove(&self.group);
        }
    }
}

impl Drop for GroupClaim {
    fn drop(&mut self) {
        self.release();
    }
}

impl MetaLog {
    /// Opens (or creates) the logs' database in `dir`.
    pub fn open(dir: &Path) -> Result<MetaLog, String> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let families = [CF_LOGS, CF_STATE]
            .into_iter()
            .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let db = DB::open_cf_descriptors(&options, dir, families)
            .map_err(|err| format!("opening the raft log at {}: {err}", dir.display()))?;
        Ok(MetaLog {
            db: Arc::new(db),
            dir: dir.to_owned(),
            running: Arc::default(),
        })
    }

    /// Claims `group`'s keys for one Raft; refused while another holds them.
    pub(crate) fn claim(&self, group: GroupId) -> Result<GroupClaim, String> {
        static CLAIMS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let mut running = self.running.lock();
        if running.contains_key(&group) {
            return Err(format!("the {group} already runs over this log"));
        }
        let number = CLAIMS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        running.insert(group, number);
        Ok(GroupClaim {
            running: self.running.clone(),
            group,
            number,
        })
    }

    /// Where `group` keeps its snapshot: beside the log's database, not in
    /// it; an index group's inside the root group's directory.
    pub(crate) fn snapshot_dir(&self, group: GroupId) -> PathBuf {
        let mut name = self.dir.file_name().unwrap_or_default().to_owned();
        name.push("-snapshots");
        let root = self.dir.with_file_name(name);
        match group {
            GroupId::Root => root,
            GroupId::Index(index) => root.join(format!("index-{index}")),
        }
    }

    pub(crate) fn group(&self, group: GroupId) -> LogStore {
        // The store's layout: the root group's keys, the only ones before
        // groups, are unprefixed (its log indexes never reach 2^56 and its
        // state keys are ASCII, so all sort below an index group's 0xFF).
        let keys = match group {
            GroupId::Root => KeySpace::root(),
            GroupId::Index(index) => KeySpace::group(index),
        };
        LogStore {
            db: self.db.clone(),
            keys: Arc::new(keys),
        }
    }
}

/// One group's log and vote: the keys of [`MetaLog`]'s database in the
/// group's key space.
#[derive(Clone)]
pub(crate) struct LogStore {
    db: Arc<DB>,
    keys: Arc<KeySpace>,
}

impl LogStore {
    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, String> {
        // Both families are created at open.
        self.db
            .cf_handle(name)
            .ok_or_else(|| format!("column family {name} missing"))
    }

    /// The key of `suffix` (a log index or a state's name) in this group.
    fn key(&self, suffix: &[u8]) -> Vec<u8> {
        [self.keys.prefix(), suffix].concat()
    }

    fn entry_key(&self, index: u64) -> Vec<u8> {
        self.key(&index.to_be_bytes())
    }

    /// An iterator over this group's entries from `mode`'s position.
    fn entries(
        &self,
        mode: IteratorMode,
    ) -> Result<rocksdb::DBIteratorWithThreadMode<'_, DB>, String> {
        let cf = self.cf(CF_LOGS)?;
        let mut bounds = rocksdb::ReadOptions::default();
        bounds.set_iterate_lower_bound(self.keys.prefix());
        bounds.set_iterate_upper_bound(self.keys.end());
        Ok(self.db.iterator_cf_opt(cf, bounds, mode))
    }

    /// The index a key of this group's entries stands for.
    fn index_of(&self, key: &[u8]) -> Option<u64> {
        let index = key.strip_prefix(self.keys.prefix())?;
        index.try_into().ok().map(u64::from_be_bytes)
    }

    /// Writes `batch` off the runtime's threads (Raft's own task must keep
    /// its heartbeats going while an fsync takes its time).
    async fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), String> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let mut options = rocksdb::WriteOptions::default();
            options.set_sync(sync);
            db.write_opt(batch, &options)
        })
        .await
        .map_err(|err| format!("log write task: {err}"))?
        .map_err(|err| err.to_string())
    }

    fn get_state<T: serde::de::DeserializeOwned>(&self, name: &[u8]) -> Result<Option<T>, String> {
        let cf = self.cf(CF_STATE)?;
        match self
            .db
            .get_cf(cf, self.key(name))
            .map_err(|err| err.to_string())?
        {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|err| err.to_string()),
        }
    }

    async fn put_state<T: serde::Serialize>(
        &self,
        name: &[u8],
        value: &T,
        sync: bool,
    ) -> Result<(), String> {
        let bytes = serde_json::to_vec(value).map_err(|err| err.to_string())?;
        let cf = self.cf(CF_STATE)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(cf, self.key(name), bytes);
        self.write(batch, sync).await
    }

    fn last_entry_id(&self) -> Result<Option<LogId<u64>>, String> {
        let Some(last) = self.entries(IteratorMode::End)?.next() else {
            return Ok(None);
        };
        let (_, bytes) = last.map_err(|err| err.to_string())?;
        let entry: Entry<TypeConfig> =
            serde_json::from_slice(&bytes).map_err(|err| err.to_string())?;
        Ok(Some(entry.log_id))
    }

    /// Writes `entries`, synced.
    async fn put_entries(
        &self,
        entries: impl IntoIterator<Item = Entry<TypeConfig>>,
    ) -> Result<(), String> {
        let cf = self.cf(CF_LOGS)?;
        let mut batch = WriteBatch::default();
        for entry in entries {
            let bytes = serde_json::to_vec(&entry).map_err(|err| err.to_string())?;
            batch.put_cf(cf, self.entry_key(entry.log_id.index), bytes);
        }
        self.write(batch, true).await
    }
}

fn read_error(why: impl ToString) -> StorageError<u64> {
    StorageIOError::read_logs(openraft::AnyError::error(why)).into()
}

fn write_error(why: impl ToString) -> StorageError<u64> {
    StorageIOError::write_logs(openraft::AnyError::error(why)).into()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let start = match range.start_bound() {
            Bound::Included(start) => *start,
            Bound::Excluded(start) => start.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let mut entries = Vec::new();
        let from = self.entry_key(start);
        let scan = self
            .entries(IteratorMode::From(&from, Direction::Forward))
            .map_err(read_error)?;
        for item in scan {
            let (key, bytes) = item.map_err(read_error)?;
            let index = self
                .index_of(&key)
                .ok_or_else(|| read_error("log key is not the group's prefix and 8 bytes"))?;
            if !range.contains(&index) {
                break;
            }
            entries.push(serde_json::from_slice(&bytes).map_err(read_error)?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged_log_id: Option<LogId<u64>> =
            self.get_state(LAST_PURGED).map_err(read_error)?;
        let last_log_id = self
            .last_entry_id()
            .map_err(read_error)?
            .or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> StorageResult<()> {
        self.put_state(VOTE, vote, true)
            .await
            .map_err(|why| StorageIOError::write_vote(openraft::AnyError::error(why)).into())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<u64>>> {
        self.get_state(VOTE)
            .map_err(|why| StorageIOError::read_vote(openraft::AnyError::error(why)).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> StorageResult<()> {
        // Only saves replaying committed entries at start: no fsync needed.
        self.put_state(COMMITTED, &committed, false)
            .await
            .map_err(write_error)
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<u64>>> {
        Ok(self
            .get_state::<Option<LogId<u64>>>(COMMITTED)
            .map_err(read_error)?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let written = self
            .put_entries(entries)
            .await
            .map_err(std::io::Error::other);
        let failed = written.as_ref().err().map(ToString::to_string);
        callback.log_io_completed(written);
        match failed {
            Some(why) => Err(write_error(why)),
            None => Ok(()),
        }
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> StorageResult<()> {
        let cf = self.cf(CF_LOGS).map_err(write_error)?;
        let mut batch = WriteBatch::default();
        // To the group's end: every index from `log_id`'s on.
        batch.delete_range_cf(cf, self.entry_key(log_id.index), self.keys.end().to_vec());
        self.write(batch, true).await.map_err(write_error)
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> StorageResult<()> {
        self.put_state(LAST_PURGED, &log_id, true)
            .await
            .map_err(write_error)?;
        let cf = self.cf(CF_LOGS).map_err(write_error)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, self.entry_key(0), self.entry_key(log_id.index + 1));
        self.write(batch, true).await.map_err(write_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn blank(index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
            payload: EntryPayload::Blank,
        }
    }

    async fn indexes(log: &mut LogStore) -> Vec<u64> {
        let entries = log.try_get_log_entries(..).await.expect("entries");
        entries.iter().map(|entry| entry.log_id.index).collect()
    }

    #[tokio::test]
    async fn groups_truncate_purge_and_vote_within_their_own_keys() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let log = MetaLog::open(dir.path()).expect("log");
        let groups = [
            GroupId::Root,
            GroupId::Index(0),
            GroupId::Index(1),
            GroupId::Index(2),
        ];
        let mut stores = groups.map(|group| log.group(group));
        // Logs of different lengths (the last group's empty): a group that
        // read past its end would find its neighbour's last entry.
        for (length, store) in [6, 5, 4, 0].into_iter().zip(&stores) {
            store
                .put_entries((1..=length).map(blank))
                .await
                .expect("append");
        }
        // The root's end is every index group's start, index group 0's end
        // group 1's: each change stays in its own group.
        stores[0].truncate(blank(3).log_id).await.expect("truncate");
        stores[1].truncate(blank(4).log_id).await.expect("truncate");
        stores[1].purge(blank(2).log_id).await.expect("purge");
        stores[2].save_vote(&Vote::new(7, 2)).await.expect("vote");
        assert_eq!(indexes(&mut stores[0]).await, [1, 2]);
        assert_eq!(indexes(&mut stores[1]).await, [3]);
        assert_eq!(indexes(&mut stores[2]).await, [1, 2, 3, 4]);
        assert_eq!(indexes(&mut stores[3]).await, [0u64; 0]);

        // Reopened, each group finds its own state.
        drop(stores);
        drop(log);
        let log = MetaLog::open(dir.path()).expect("log reopened");
        let mut stores = groups.map(|group| log.group(group));
        let states = [
            (Some(2), None, None),
            (Some(3), Some(2), None),
            (Some(4), None, Some(Vote::new(7, 2))),
            (None, None, None),
        ];
        for (store, (last, purged, vote)) in stores.iter_mut().zip(states) {
            let state = store.get_log_state().await.expect("log state");
            assert_eq!(state.last_log_id.map(|id| id.index), last);
            assert_eq!(state.last_purged_log_id.map(|id| id.index), purged);
            assert_eq!(store.read_vote().await.expect("vote"), vote);
        }
    }

    #[test]
    fn a_group_runs_once_over_a_log() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let log = MetaLog::open(dir.path()).expect("log");
        let claim = log.claim(GroupId::Index(3)).expect("first claim");
        assert!(log.claim(GroupId::Index(3)).is_err());
        assert!(log.claim(GroupId::Root).is_ok());
        claim.release();
        let again = log.claim(GroupId::Index(3)).expect("claimed after release");
        // The first claim dropped late leaves the second's hold.
        drop(claim);
        assert!(log.clone().claim(GroupId::Index(3)).is_err());
        drop(again);
        assert!(log.claim(GroupId::Index(3)).is_ok());
    }
}
