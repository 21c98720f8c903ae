//! A replica's whole metadata as one blob, for the snapshots of the
//! replicated metadata service (`strata_meta`): a member whose log was
//! compacted past what another member lacks sends it this instead.
//!
//! The blob is every record of every column family (the applied marker
//! included), read under one RocksDB snapshot: `STRATAR1`, then records of
//! a family index byte, the key and the value, each length-prefixed (u32
//! little-endian). An import replaces everything; it is not atomic, so it
//! is bracketed by a marker that a replica finds at start after a crash
//! midway, and such a replica is wiped and fetches a snapshot again.

use rocksdb::{IteratorMode, WriteBatch, WriteOptions};

use crate::error::{Result, StoreError};
use crate::keys::ALL_CFS;
use crate::store::{Inner, Store, cf};

const FORMAT: &[u8; 8] = b"STRATAR1";
/// Written (synced) before an import starts, removed when it has ended.
const IMPORTING: &[u8] = b"replica-import-in-progress";
/// Records written per batch during an import.
const BATCH_BYTES: usize = 4 << 20;

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

impl Store {
    /// Every record of this replica, read at one instant.
    pub async fn export_replica(&self) -> Result<Vec<u8>> {
        self.blocking(|inner| {
            let snapshot = inner.db.snapshot();
            let mut out = FORMAT.to_vec();
            for (index, name) in families() {
                let records = match name {
                    None => snapshot.iterator(IteratorMode::Start),
                    Some(name) => snapshot.iterator_cf(cf(&inner.db, name)?, IteratorMode::Start),
                };
                for record in records {
                    let (key, value) = record?;
                    if index == 0 && &*key == IMPORTING {
                        continue;
                    }
                    out.push(index);
                    for part in [&key, &value] {
                        let len = u32::try_from(part.len())
                            .map_err(|_| StoreError::Internal("a record over 4 GiB".into()))?;
                        out.extend_from_slice(&len.to_le_bytes());
                        out.extend_from_slice(part);
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    /// Replaces every record of this replica with `blob` (from
    /// [`Store::export_replica`]), then tells this process's listeners to
    /// resync: anything they derived from the old records may be stale.
    pub async fn import_replica(&self, blob: Vec<u8>) -> Result<()> {
        self.blocking(move |inner| {
            // The whole blob is checked before anything is removed.
            for record in Records::new(&blob)? {
                record?;
            }
            let mut started = WriteBatch::default();
            started.put(IMPORTING, b"");
            write(inner, started, true)?;
            let mut batch = wipe(inner)?;
            batch.put(IMPORTING, b"");
            for record in Records::new(&blob)? {
                let (family, key, value) = record?;
                match family {
                    None => batch.put(key, value),
                    Some(name) => batch.put_cf(cf(&inner.db, name)?, key, value),
                }
                if batch.size_in_bytes() >= BATCH_BYTES {
                    write(inner, std::mem::take(&mut batch), false)?;
                }
            }
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

/// The records of a blob, in order.
struct Records<'a> {
    rest: &'a [u8],
}

impl<'a> Records<'a> {
    fn new(blob: &'a [u8]) -> Result<Records<'a>> {
        let rest = blob
            .strip_prefix(FORMAT)
            .ok_or_else(|| StoreError::Corrupt("not a replica export".into()))?;
        Ok(Records { rest })
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8]> {
        if self.rest.len() < len {
            return Err(StoreError::Corrupt("a replica export cut short".into()));
        }
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(taken)
    }

    fn take_part(&mut self) -> Result<&'a [u8]> {
        let len = self.take(4)?;
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        self.take(len)
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<(Option<&'static str>, &'a [u8], &'a [u8])>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let record = (|| {
            let index = self.take(1)?[0];
            let family = family_name(index).ok_or_else(|| {
                StoreError::Corrupt(format!("a replica export names family {index}"))
            })?;
            Ok((family, self.take_part()?, self.take_part()?))
        })();
        if record.is_err() {
            self.rest = &[];
        }
        Some(record)
    }
}
