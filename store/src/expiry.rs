//! Objects with an expiry time (`ObjectMeta::delete_at`, Swift's
//! `X-Delete-At`): hidden from reads and listings once it passes, and deleted
//! by the background task soon after, through an index ordered by time.
//!
//! The index (`expiry` column family, `due BE u64 · bucket NUL key`) is
//! written in the commit that sets the time. It may hold stale entries — the
//! object was overwritten or deleted since — so the sweeper deletes an object
//! only if its record still carries that very time.

use rocksdb::IteratorMode;

use crate::error::{Result, StoreError};
use crate::feed::ChangeKind;
use crate::keys::{self, CF_EXPIRY, CF_OBJECTS};
use crate::records::ObjectInfo;
use crate::space::Batch;
use crate::store::{Inner, Store, now_ms};
use crate::usage::UsageDelta;

/// Most expired objects one sweep deletes (in one batch, under the
/// exclusive bucket lock); the next sweep takes the rest.
const SWEEP_BATCH: usize = 1000;

/// Expiry times from here on (Swift's "forever" is `u64::MAX`) are never
/// reached, and not indexed: the index's keys stay below the groups' key
/// spaces (`space.rs`).
const NEVER_DUE: u64 = 1 << 56;

/// Whether `key` of the index names a time that can come: an index written
/// before [`NEVER_DUE`] may hold others, which an import leaves out.
pub(crate) fn is_indexed(key: &[u8]) -> bool {
    key.first_chunk::<8>()
        .is_some_and(|due| u64::from_be_bytes(*due) < NEVER_DUE)
}

impl ObjectInfo {
    /// Whether the object's expiry time has passed at `now_secs`.
    pub fn is_expired_at(&self, now_secs: u64) -> bool {
        self.meta.delete_at.is_some_and(|at| at <= now_secs)
    }

    /// Whether it has expired by the clock: for reads. Writes ask
    /// `Inner::now_ms`, which a replicated log pins.
    pub(crate) fn is_expired(&self) -> bool {
        self.is_expired_at(now_secs())
    }
}

pub(crate) fn now_secs() -> u64 {
    (now_ms().max(0) as u64) / 1000
}

fn index_key(due: u64, bucket: &str, key: &str) -> Vec<u8> {
    let mut out = due.to_be_bytes().to_vec();
    out.extend_from_slice(&keys::object_key(bucket, key));
    out
}

/// The key of `info`'s entry in the index, if it has an expiry time that
/// can come.
pub(crate) fn expiry_index_key(info: &ObjectInfo) -> Option<Vec<u8>> {
    let due = info.meta.delete_at.filter(|due| *due < NEVER_DUE)?;
    Some(index_key(due, &info.bucket, &info.key))
}

impl Inner {
    /// Adds `info`'s expiry, if it has one, to the index in `batch`.
    pub(crate) fn index_expiry(&self, batch: &mut Batch<'_>, info: &ObjectInfo) -> Result<()> {
        if let Some(key) = expiry_index_key(info) {
            batch.put(CF_EXPIRY, &key, b"")?;
        }
        Ok(())
    }
}

/// Sweeps one expiry round makes at most: objects that expire faster than
/// one sweep a tick (a log container's X-Delete-After) would pile up, and
/// every listing walks the records not swept yet.
pub const SWEEPS_PER_ROUND: usize = 20;

impl Store {
    /// Deletes the objects due at `now_secs`, a sweep at a time while some
    /// are due, [`SWEEPS_PER_ROUND`] sweeps at most.
    pub async fn expire_round(&self, now_secs: u64) -> Result<usize> {
        let mut expired = 0;
        for _ in 0..SWEEPS_PER_ROUND {
            if !self.expiry_due(now_secs).await? {
                break;
            }
            expired += self.expire_due(now_secs).await?;
        }
        Ok(expired)
    }

    /// Whether some object's expiry time is at or before `now_secs`.
    pub async fn expiry_due(&self, now_secs: u64) -> Result<bool> {
        self.blocking(move |inner| {
            let Some(first) = inner.space().iter(CF_EXPIRY, IteratorMode::Start)?.next() else {
                return Ok(false);
            };
            let (raw, _) = first?;
            let when = raw
                .get(..8)
                .and_then(|when| when.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| StoreError::Corrupt("short expiry key".into()))?;
            Ok(when <= now_secs)
        })
        .await
    }

    /// Deletes the objects whose expiry time is at or before `now_secs`.
    pub async fn expire_due(&self, now_secs: u64) -> Result<usize> {
        self.blocking(move |inner| {
            let mut due = Vec::new();
            for item in inner
                .space()
                .iter(CF_EXPIRY, IteratorMode::Start)?
                .take(SWEEP_BATCH)
            {
                let (raw, _) = item?;
                let Some((when, object)) = raw.split_at_checked(8) else {
                    return Err(StoreError::Corrupt("short expiry key".into()));
                };
                let when = u64::from_be_bytes(
                    when.try_into()
                        .map_err(|_| StoreError::Corrupt("expiry key".into()))?,
                );
                if when > now_secs {
                    break;
                }
                let Some(split) = object.iter().position(|byte| *byte == 0) else {
                    return Err(StoreError::Corrupt("expiry key without bucket".into()));
                };
                let bucket = String::from_utf8_lossy(&object[..split]).into_owned();
                let key = String::from_utf8_lossy(&object[split + 1..]).into_owned();
                due.push((raw.to_vec(), when, bucket, key));
            }
            // One batch for the whole sweep (under the exclusive bucket lock,
            // so no commit interleaves): a replica applying it from the log
            // holds all of it or none of it.
            let _exclusive = inner.bucket_lock.write();
            let mut batch = inner.batch();
            let mut events = Vec::new();
            for (raw, when, bucket, key) in due {
                batch.delete(CF_EXPIRY, &raw)?;
                let Some(current) = inner
                    .object_info(&bucket, &key)?
                    .filter(|current| current.meta.delete_at == Some(when))
                else {
                    continue;
                };
                batch.delete(CF_OBJECTS, &keys::object_key(&bucket, &key))?;
                inner.add_usage(&mut batch, &bucket, UsageDelta::remove(&current))?;
                inner.schedule_gc(&mut batch, &current.extents)?;
                events.push(inner.feed_event(
                    &mut batch,
                    ChangeKind::ObjectDeleted,
                    &bucket,
                    Some(&key),
                    Some(&current.etag),
                )?);
            }
            inner.commit(batch)?;
            let deleted = events.len();
            for event in events {
                inner.publish(event);
            }
            Ok(deleted)
        })
        .await
    }
}
