//! A replica's whole metadata as one stream of records, for the snapshots
//! of the replicated metadata service (`strata_meta`): a member whose log
//! was compacted past what another member lacks sends it this instead.
//!
//! An export is every record of every column family (the applied marker
//! included) at one instant: `STRATAR1`, then records of a family index
//! byte, the key and the value, each length-prefixed (u32 little-endian).
//! It is taken in two steps so that neither holds the records in memory nor
//! stops the replica for long: a RocksDB checkpoint (a flush and hard links
//! to the database's files: milliseconds, whatever the size), then the
//! stream written from the checkpoint, while the replica goes on changing.
//! An import reads a stream twice (checked whole, then written in batches);
//! it replaces everything and is not atomic, so it is bracketed by a marker
//! that a replica finds at start after a crash midway, and such a replica
//! is wiped and fetches a snapshot again.

use std::io::{BufReader, BufWriter, Read, Seek, Write};
use std::path::PathBuf;

use rocksdb::checkpoint::Checkpoint;
use rocksdb::{DB, IteratorMode, WriteBatch, WriteOptions};

use crate::error::{Result, StoreError};
use crate::keys::ALL_CFS;
use crate::store::{Inner, Store, cf, db_options, family_descriptors};

const FORMAT: &[u8; 8] = b"STRATAR1";
/// Written (synced) before an import starts, removed when it has ended.
const IMPORTING: &[u8] = b"replica-import-in-progress";
/// Records written per batch during an import.
const BATCH_BYTES: usize = 4 << 20;
/// The largest key or value an export may name: far above any record
/// (a completed upload of 10,000 parts is ~1 MB), so a damaged length is
/// refused before it is allocated.
const MAX_PART_BYTES: usize = 64 << 20;
/// Buffered between the database and the export file, each way.
const IO_BUFFER_BYTES: usize = 1 << 20;

/// Family 0 is the default one; 1.. are [`ALL_CFS`] in order.
fn family_name(index: u8) -> Option<Option<&'static str>> {
    match index {
        0 => Some(None),
        n => ALL_CFS.get(usize::from(n) - 1).map(|name| Some(*name)),
    }
}

fn families() -> impl Iterator<Item = (u8, Option<&'static str>)> {
    std::iter::once((0, None)).chain(
        ALL_CFS
            .iter()
            .enumerate()
            .map(|(index, name)| (index as u8 + 1, Some(*name))),
    )
}

fn io_error(doing: &str) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |err| StoreError::Internal(format!("{doing}: {err}"))
}

/// A replica's records at the instant it was taken, as a RocksDB
/// checkpoint in a directory of its own, removed when this is dropped.
pub struct ReplicaCheckpoint {
    dir: PathBuf,
}

impl ReplicaCheckpoint {
    /// Writes the export of the checkpoint's records to `out`. It blocks:
    /// call it where blocking is allowed.
    pub fn export(&self, out: impl Write) -> Result<()> {
        let db = DB::open_cf_descriptors_read_only(
            &db_options(),
            &self.dir,
            family_descriptors(),
            false,
        )?;
        let mut out = BufWriter::with_capacity(IO_BUFFER_BYTES, out);
        let fail = io_error("writing a replica export");
        out.write_all(FORMAT).map_err(&fail)?;
        for (index, name) in families() {
            let records = match name {
                None => db.iterator(IteratorMode::Start),
                Some(name) => db.iterator_cf(cf(&db, name)?, IteratorMode::Start),
            };
            for record in records {
                let (key, value) = record?;
                if index == 0 && &*key == IMPORTING {
                    continue;
                }
                out.write_all(&[index]).map_err(&fail)?;
                for part in [&key, &value] {
                    let len = u32::try_from(part.len())
                        .map_err(|_| StoreError::Internal("a record over 4 GiB".into()))?;
                    out.write_all(&len.to_le_bytes()).map_err(&fail)?;
                    out.write_all(part).map_err(&fail)?;
                }
            }
        }
        out.flush().map_err(&fail)
    }
}

impl Drop for ReplicaCheckpoint {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), "removing a replica checkpoint: {err}");
        }
    }
}

impl Store {
    /// Takes a checkpoint of every record of this replica, now, in `dir`
    /// (replaced if it exists; on the database's file system, so that the
    /// checkpoint is hard links rather than copies).
    pub async fn checkpoint_replica(&self, dir: PathBuf) -> Result<ReplicaCheckpoint> {
        self.blocking(move |inner| {
            match std::fs::remove_dir_all(&dir) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io_error("removing an old replica checkpoint")(err));
                }
                _ => {}
            }
            Checkpoint::new(&inner.db)?.create_checkpoint(&dir)?;
            Ok(ReplicaCheckpoint { dir })
        })
        .await
    }

    /// Checks that `source` is a whole export (as [`Store::import_replica`]
    /// does before it removes anything), without changing anything.
    pub async fn check_replica_export<R>(&self, source: R) -> Result<()>
    where
        R: Read + Send + 'static,
    {
        self.blocking(move |_| {
            let mut source = BufReader::with_capacity(IO_BUFFER_BYTES, source);
            for_each_record(&mut source, |_, _, _| Ok(()))
        })
        .await
    }

    /// Replaces every record of this replica with the export in `source`
    /// (from [`ReplicaCheckpoint::export`], read from its start), then
    /// tells this process's listeners to resync: anything they derived from
    /// the old records may be stale.
    pub async fn import_replica<R>(&self, source: R) -> Result<()>
    where
        R: Read + Seek + Send + 'static,
    {
        self.blocking(move |inner| {
            let mut source = BufReader::with_capacity(IO_BUFFER_BYTES, source);
            // The whole export is checked before anything is removed.
            for_each_record(&mut source, |_, _, _| Ok(()))?;
            source
                .rewind()
                .map_err(io_error("rereading a replica export"))?;
            let mut started = WriteBatch::default();
            started.put(IMPORTING, b"");
            write(inner, started, true)?;
            let mut batch = wipe(inner)?;
            batch.put(IMPORTING, b"");
            for_each_record(&mut source, |family, key, value| {
                match family {
                    None => batch.put(key, value),
                    Some(name) => batch.put_cf(cf(&inner.db, name)?, key, value),
                }
                if batch.size_in_bytes() >= BATCH_BYTES {
                    write(inner, std::mem::take(&mut batch), false)?;
                }
                Ok(())
            })?;
            batch.delete(IMPORTING);
            write(inner, batch, true)?;
            inner.reset_feed_seq()
        })
        .await?;
        self.publish_resync();
        Ok(())
    }

    /// Whether an import was cut short (a crash midway): the records are
    /// then a mix of old and new, good for nothing but [`Store::wipe_replica`].
    pub async fn replica_import_interrupted(&self) -> Result<bool> {
        self.blocking(|inner| Ok(inner.db.get(IMPORTING)?.is_some()))
            .await
    }

    /// Removes every record of this replica.
    pub async fn wipe_replica(&self) -> Result<()> {
        self.blocking(|inner| {
            let batch = wipe(inner)?;
            write(inner, batch, true)?;
            inner.reset_feed_seq()
        })
        .await?;
        self.publish_resync();
        Ok(())
    }

    fn publish_resync(&self) {
        if let crate::store::Engine::Local(inner) = &self.engine {
            let position = inner.next_feed_seq().saturating_sub(1);
            inner.publish(crate::remote::resync_event(position));
        }
    }
}

/// A batch that deletes every record of every family: from the empty key
/// to just past the last one.
fn wipe(inner: &Inner) -> Result<WriteBatch> {
    let mut batch = WriteBatch::default();
    for (_, name) in families() {
        let family = name.map(|name| cf(&inner.db, name)).transpose()?;
        let mut from_end = match family {
            None => inner.db.iterator(IteratorMode::End),
            Some(family) => inner.db.iterator_cf(family, IteratorMode::End),
        };
        let Some((last, _)) = from_end.next().transpose()? else {
            continue;
        };
        let mut end = last.to_vec();
        end.push(0);
        match family {
            None => batch.delete_range(&[][..], &end[..]),
            Some(family) => batch.delete_range_cf(family, &[][..], &end[..]),
        }
    }
    Ok(batch)
}

fn write(inner: &Inner, batch: WriteBatch, sync: bool) -> Result<()> {
    let mut options = WriteOptions::default();
    options.set_sync(sync);
    inner.db.write_opt(batch, &options)?;
    Ok(())
}

/// Calls `each` with every record of the export `source`, in order, and
/// refuses an export that is not one or is cut short.
fn for_each_record(
    source: &mut impl Read,
    mut each: impl FnMut(Option<&'static str>, &[u8], &[u8]) -> Result<()>,
) -> Result<()> {
    let corrupt = |why: &str| StoreError::Corrupt(format!("a replica export {why}"));
    let cut_short = |err: std::io::Error| match err.kind() {
        std::io::ErrorKind::UnexpectedEof => corrupt("cut short"),
        _ => io_error("reading a replica export")(err),
    };
    let mut format = [0; FORMAT.len()];
    source.read_exact(&mut format).map_err(cut_short)?;
    if &format != FORMAT {
        return Err(corrupt("of an unknown format"));
    }
    let (mut key, mut value) = (Vec::new(), Vec::new());
    loop {
        let mut index = [0];
        match source.read(&mut index) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(cut_short(err)),
        }
        let family =
            family_name(index[0]).ok_or_else(|| corrupt(&format!("names family {}", index[0])))?;
        for part in [&mut key, &mut value] {
            let mut len = [0; 4];
            source.read_exact(&mut len).map_err(cut_short)?;
            let len = u32::from_le_bytes(len) as usize;
            if len > MAX_PART_BYTES {
                return Err(corrupt(&format!("names a record part of {len} bytes")));
            }
            part.resize(len, 0);
            source.read_exact(part).map_err(cut_short)?;
        }
        each(family, &key, &value)?;
    }
}
