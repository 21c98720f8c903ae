//! A replica's whole metadata as one stream of records, for the snapshots
//! of the replicated metadata service (`strata_meta`): a member whose log
//! was compacted past what another member lacks sends it this instead.
//!
//! An export is every record of every column family (the applied marker
//! included) of the store's key space (`space.rs`), in the space's keys,
//! at one instant: `STRATAR2`, then records of a family index
//! byte, the key and the value, each length-prefixed (u32 little-endian),
//! then an end: the byte 0xFF, the number of records (u64) and the CRC32C
//! of every byte before the CRC (both little-endian), so an export cut
//! anywhere, even between two records, or damaged is refused. (`STRATAR1`,
//! the same without the end, is still read.)
//! It is taken in two steps so that neither holds the records in memory nor
//! stops the replica for long: a RocksDB checkpoint (a flush and hard links
//! to the database's files: milliseconds, whatever the size), then the
//! stream written from the checkpoint, while the replica goes on changing.
//! An import replaces everything and is not atomic, so it is bracketed by a
//! marker that a replica finds at start after a crash midway (or an export
//! found damaged midway), and such a replica is wiped and fetches a
//! snapshot again. A caller checks the export first
//! ([`Store::check_replica_export`]), then imports it with one more read.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::PathBuf;

use rocksdb::checkpoint::Checkpoint;
use rocksdb::{DB, IteratorMode};

use crate::error::{Result, StoreError};
use crate::keys::{ALL_CFS, CF_DEFAULT, CF_EXPIRY};
use crate::space::{Batch, KeySpace, Space};
use crate::store::{Inner, Store, db_options, family_descriptors};

const FORMAT: &[u8; 8] = b"STRATAR2";
/// The format before exports had an end.
const FORMAT_WITHOUT_END: &[u8; 8] = b"STRATAR1";
/// The family index byte that starts an export's end.
const END: u8 = 0xFF;
/// Written (synced) before an import starts, removed when it has ended.
pub(crate) const IMPORTING: &[u8] = b"replica-import-in-progress";
/// Records written per batch during an import.
const BATCH_BYTES: usize = 4 << 20;
/// The largest key or value an export may name: far above any record
/// (a completed upload of 10,000 parts is ~1 MB), so a damaged length is
/// refused before it is allocated.
const MAX_PART_BYTES: usize = 64 << 20;
/// Buffered between the database and the export file, each way.
const IO_BUFFER_BYTES: usize = 1 << 20;

/// Family 0 is the default one; 1.. are [`ALL_CFS`] in order.
fn family_name(index: u8) -> Option<&'static str> {
    match index {
        0 => Some(CF_DEFAULT),
        n => ALL_CFS.get(usize::from(n) - 1).copied(),
    }
}

fn families() -> impl Iterator<Item = (u8, &'static str)> {
    std::iter::once((0, CF_DEFAULT)).chain(
        ALL_CFS
            .iter()
            .enumerate()
            .map(|(index, name)| (index as u8 + 1, *name)),
    )
}

fn io_error(doing: &str) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |err| StoreError::Internal(format!("{doing}: {err}"))
}

/// A replica's records at the instant it was taken, as a RocksDB
/// checkpoint in a directory of its own, removed when this is dropped.
pub struct ReplicaCheckpoint {
    dir: PathBuf,
    /// The store's space: the checkpoint holds every group's records.
    keys: KeySpace,
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
        let mut out = Tally::new(BufWriter::with_capacity(IO_BUFFER_BYTES, out));
        let fail = io_error("writing a replica export");
        out.write_all(FORMAT).map_err(&fail)?;
        let mut written = 0u64;
        let space = Space {
            db: &db,
            keys: &self.keys,
        };
        for (index, name) in families() {
            for record in space.iter(name, IteratorMode::Start)? {
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
                written += 1;
            }
        }
        out.write_all(&[END]).map_err(&fail)?;
        out.write_all(&written.to_le_bytes()).map_err(&fail)?;
        let (_, crc) = out.sums();
        out.write_all(&crc.to_le_bytes()).map_err(&fail)?;
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
            Checkpoint::new(inner.database())?.create_checkpoint(&dir)?;
            Ok(ReplicaCheckpoint {
                dir,
                keys: inner.keys().clone(),
            })
        })
        .await
    }

    /// Checks that `source` is a whole, undamaged export, without changing
    /// anything, and hands it back read to its end (so that a reader that
    /// sums what passes through it has seen every byte).
    pub async fn check_replica_export<R>(&self, source: R) -> Result<R>
    where
        R: Read + Send + 'static,
    {
        self.blocking(move |_| {
            let mut source = BufReader::with_capacity(IO_BUFFER_BYTES, source);
            for_each_record(&mut source, |_, _, _| Ok(()))?;
            Ok(source.into_inner())
        })
        .await
    }

    /// Replaces every record of this replica with the export in `source`
    /// (from [`ReplicaCheckpoint::export`], read from its start), then
    /// tells this process's listeners to resync: anything they derived from
    /// the old records may be stale. Check the export first
    /// ([`Store::check_replica_export`]): one found damaged midway fails the
    /// import with the replica half replaced and marked so
    /// ([`Store::replica_import_interrupted`]).
    pub async fn import_replica<R>(&self, source: R) -> Result<()>
    where
        R: Read + Send + 'static,
    {
        self.blocking(move |inner| {
            let mut source = BufReader::with_capacity(IO_BUFFER_BYTES, source);
            let mut started = inner.batch();
            started.put(CF_DEFAULT, IMPORTING, b"")?;
            started.write(true)?;
            let mut batch = wipe(inner)?;
            batch.put(CF_DEFAULT, IMPORTING, b"")?;
            for_each_record(&mut source, |family, key, value| {
                if family == CF_EXPIRY && !crate::expiry::is_indexed(key) {
                    // A time that never comes, from an older member.
                    return Ok(());
                }
                batch.put(family, key, value)?;
                if batch.size_in_bytes() >= BATCH_BYTES {
                    std::mem::replace(&mut batch, inner.batch()).write(false)?;
                }
                Ok(())
            })?;
            batch.delete(CF_DEFAULT, IMPORTING)?;
            batch.write(true)?;
            inner.forget_root_split();
            inner.reset_feed_seq()?;
            inner.adopt_recorded_followers()
        })
        .await?;
        self.publish_resync();
        Ok(())
    }

    /// Whether an import was cut short (a crash midway): the records are
    /// then a mix of old and new, good for nothing but [`Store::wipe_replica`].
    pub async fn replica_import_interrupted(&self) -> Result<bool> {
        self.blocking(|inner| Ok(inner.space().get(CF_DEFAULT, IMPORTING)?.is_some()))
            .await
    }

    /// Removes every record of this replica.
    pub async fn wipe_replica(&self) -> Result<()> {
        self.blocking(|inner| {
            wipe(inner)?.write(true)?;
            inner.forget_root_split();
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

/// A batch that deletes every record of the store's space, in every family.
fn wipe(inner: &Inner) -> Result<Batch<'_>> {
    let mut batch = inner.batch();
    for (_, name) in families() {
        batch.delete_all(name)?;
    }
    Ok(batch)
}

/// Calls `each` with every record of the export `source`, in order, and
/// refuses an export that is not one, is cut short or is damaged (its end
/// does not count or sum what came before it). Every record has been
/// passed to `each` by the time the end is checked.
fn for_each_record(
    source: &mut impl Read,
    mut each: impl FnMut(&'static str, &[u8], &[u8]) -> Result<()>,
) -> Result<()> {
    let corrupt = |why: &str| StoreError::Corrupt(format!("a replica export {why}"));
    let cut_short = |err: std::io::Error| match err.kind() {
        std::io::ErrorKind::UnexpectedEof => corrupt("cut short"),
        _ => io_error("reading a replica export")(err),
    };
    let mut source = Tally::new(source);
    let mut format = [0; FORMAT.len()];
    source.read_exact(&mut format).map_err(cut_short)?;
    let has_end = match &format {
        FORMAT => true,
        FORMAT_WITHOUT_END => false,
        _ => return Err(corrupt("of an unknown format")),
    };
    let (mut key, mut value) = (Vec::new(), Vec::new());
    let mut records = 0u64;
    loop {
        let mut index = [0];
        match source.read(&mut index) {
            Ok(0) if has_end => return Err(corrupt("cut short (it has no end)")),
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(cut_short(err)),
        }
        if has_end && index[0] == END {
            let mut counted = [0; 8];
            source.read_exact(&mut counted).map_err(cut_short)?;
            let (_, summed) = source.sums();
            let mut crc = [0; 4];
            source.read_exact(&mut crc).map_err(cut_short)?;
            if u64::from_le_bytes(counted) != records {
                return Err(corrupt("has lost or gained records"));
            }
            if u32::from_le_bytes(crc) != summed {
                return Err(corrupt("is damaged (its CRC32C does not match)"));
            }
            return match source.read(&mut index) {
                Ok(0) => Ok(()),
                Ok(_) => Err(corrupt("goes on after its end")),
                Err(err) => Err(cut_short(err)),
            };
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
        records += 1;
    }
}

/// A reader or writer that counts and sums (CRC32C) the bytes through it:
/// exports are checked with it, and snapshot files described.
pub struct Tally<T> {
    inner: T,
    len: u64,
    crc: u32,
}

impl<T> Tally<T> {
    pub fn new(inner: T) -> Self {
        Tally {
            inner,
            len: 0,
            crc: 0,
        }
    }

    /// The length and CRC32C of what went through.
    pub fn sums(&self) -> (u64, u32) {
        (self.len, self.crc)
    }

    fn count(&mut self, bytes: &[u8]) {
        self.len += bytes.len() as u64;
        self.crc = crc32c::crc32c_append(self.crc, bytes);
    }
}

impl<T: Read> Read for Tally<T> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.count(&buf[..read]);
        Ok(read)
    }
}

impl<T: Write> Write for Tally<T> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.count(&buf[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
