//! The Raft log and vote of one member, in a RocksDB of their own: entries
//! under their index (big-endian, so the order of keys is the order of the
//! log), the vote and the purge point beside them. Every change is written
//! with a synced WAL before openraft hears it is done.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    Entry, LogId, LogState, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote,
};
use rocksdb::{ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch};

use crate::TypeConfig;

const CF_LOGS: &str = "logs";
const CF_STATE: &str = "state";
const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

type StorageResult<T> = Result<T, StorageError<u64>>;

#[derive(Clone)]
pub(crate) struct LogStore {
    db: Arc<DB>,
}

impl LogStore {
    pub(crate) fn open(dir: &Path) -> Result<LogStore, String> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let families = [CF_LOGS, CF_STATE]
            .into_iter()
            .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let db = DB::open_cf_descriptors(&options, dir, families)
            .map_err(|err| format!("opening the raft log at {}: {err}", dir.display()))?;
        Ok(LogStore { db: Arc::new(db) })
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, String> {
        // Both families are created at open.
        self.db
            .cf_handle(name)
            .ok_or_else(|| format!("column family {name} missing"))
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

    fn get_state<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, String> {
        let cf = self.cf(CF_STATE)?;
        match self.db.get_cf(cf, key).map_err(|err| err.to_string())? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|err| err.to_string()),
        }
    }

    async fn put_state<T: serde::Serialize>(
        &self,
        key: &[u8],
        value: &T,
        sync: bool,
    ) -> Result<(), String> {
        let bytes = serde_json::to_vec(value).map_err(|err| err.to_string())?;
        let cf = self.cf(CF_STATE)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(cf, key, bytes);
        self.write(batch, sync).await
    }

    fn last_entry_id(&self) -> Result<Option<LogId<u64>>, String> {
        let cf = self.cf(CF_LOGS)?;
        let Some(last) = self.db.iterator_cf(cf, IteratorMode::End).next() else {
            return Ok(None);
        };
        let (_, bytes) = last.map_err(|err| err.to_string())?;
        let entry: Entry<TypeConfig> =
            serde_json::from_slice(&bytes).map_err(|err| err.to_string())?;
        Ok(Some(entry.log_id))
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
        let cf = self.cf(CF_LOGS).map_err(read_error)?;
        let mut entries = Vec::new();
        let from = start.to_be_bytes();
        for item in self
            .db
            .iterator_cf(cf, IteratorMode::From(&from, Direction::Forward))
        {
            let (key, bytes) = item.map_err(read_error)?;
            let index = key
                .as_ref()
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| read_error("log key is not 8 bytes"))?;
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
        let cf = self.cf(CF_LOGS).map_err(write_error)?;
        let mut batch = WriteBatch::default();
        for entry in entries {
            let bytes = serde_json::to_vec(&entry).map_err(write_error)?;
            batch.put_cf(cf, entry.log_id.index.to_be_bytes(), bytes);
        }
        let written = self.write(batch, true).await.map_err(std::io::Error::other);
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
        batch.delete_range_cf(cf, log_id.index.to_be_bytes(), u64::MAX.to_be_bytes());
        // delete_range excludes its end: the last possible index goes too.
        batch.delete_cf(cf, u64::MAX.to_be_bytes());
        self.write(batch, true).await.map_err(write_error)
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> StorageResult<()> {
        self.put_state(LAST_PURGED, &log_id, true)
            .await
            .map_err(write_error)?;
        let cf = self.cf(CF_LOGS).map_err(write_error)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, 0u64.to_be_bytes(), (log_id.index + 1).to_be_bytes());
        self.write(batch, true).await.map_err(write_error)
    }
}
