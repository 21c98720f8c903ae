//! Per-bucket usage — how many objects, how many bytes — kept exact by the
//! commits themselves: every put and delete adds its difference to the
//! bucket's counter in the batch that makes it visible. The counter is a
//! RocksDB merge operand, so concurrent commits to one bucket never contend
//! for a shared record. Swift reports these figures on every account and
//! container HEAD and listing.

use rocksdb::{IteratorMode, MergeOperands};

use crate::error::{Result, StoreError};
use crate::keys::{CF_OBJECTS, CF_USAGE};
use crate::records::{self, BucketInfo, ObjectInfo};
use crate::remote::MetaCall;
use crate::space::{Batch, Space};
use crate::store::{Inner, Store};

/// What a bucket holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BucketUsage {
    pub objects: u64,
    pub bytes: u64,
}

/// A signed change of a bucket's usage, as stored: two little-endian `i64`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct UsageDelta {
    pub objects: i64,
    pub bytes: i64,
}

impl UsageDelta {
    /// The change from replacing `old` (if any) by an object of `new_size`.
    pub fn replace(old: Option<&ObjectInfo>, new_size: u64) -> UsageDelta {
        let (objects, old_size) = match old {
            Some(old) => (0, old.size),
            None => (1, 0),
        };
        UsageDelta {
            objects,
            bytes: new_size as i64 - old_size as i64,
        }
    }

    pub fn remove(old: &ObjectInfo) -> UsageDelta {
        UsageDelta {
            objects: -1,
            bytes: -(old.size as i64),
        }
    }

    fn encode(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.objects.to_le_bytes());
        out[8..].copy_from_slice(&self.bytes.to_le_bytes());
        out
    }

    fn decode(raw: &[u8]) -> Option<UsageDelta> {
        let objects = i64::from_le_bytes(raw.get(..8)?.try_into().ok()?);
        let bytes = i64::from_le_bytes(raw.get(8..16)?.try_into().ok()?);
        Some(UsageDelta { objects, bytes })
    }

    fn add(self, other: UsageDelta) -> UsageDelta {
        UsageDelta {
            objects: self.objects.saturating_add(other.objects),
            bytes: self.bytes.saturating_add(other.bytes),
        }
    }
}

/// The merge operator of the usage column family: sums deltas. An operand
/// that does not decode is skipped rather than failing the read.
pub(crate) fn merge_usage(
    _key: &[u8],
    existing: Option<&[u8]>,
    operands: &MergeOperands,
) -> Option<Vec<u8>> {
    let mut total = existing.and_then(UsageDelta::decode).unwrap_or_default();
    for operand in operands {
        if let Some(delta) = UsageDelta::decode(operand) {
            total = total.add(delta);
        }
    }
    Some(total.encode().to_vec())
}

impl Inner {
    pub(crate) fn add_usage(
        &self,
        batch: &mut Batch<'_>,
        bucket: &str,
        delta: UsageDelta,
    ) -> Result<()> {
        if delta != UsageDelta::default() {
            batch.merge(CF_USAGE, bucket.as_bytes(), delta.encode())?;
        }
        Ok(())
    }

    pub(crate) fn clear_usage(&self, batch: &mut Batch<'_>, bucket: &str) -> Result<()> {
        batch.delete(CF_USAGE, bucket.as_bytes())
    }

    fn usage_of(&self, bucket: &str) -> Result<BucketUsage> {
        let raw = self.space().get(CF_USAGE, bucket.as_bytes())?;
        let delta = raw
            .as_deref()
            .map(|raw| {
                UsageDelta::decode(raw)
                    .ok_or_else(|| StoreError::Corrupt("usage record is not 16 bytes".into()))
            })
            .transpose()?
            .unwrap_or_default();
        Ok(BucketUsage {
            objects: delta.objects.max(0) as u64,
            bytes: delta.bytes.max(0) as u64,
        })
    }
}

/// Counts every bucket's objects from scratch: for a database created before
/// the usage column family existed.
pub(crate) fn rebuild(space: Space<'_>) -> Result<()> {
    let mut totals: std::collections::BTreeMap<String, UsageDelta> = Default::default();
    for item in space.iter(CF_OBJECTS, IteratorMode::Start)? {
        let (key, value) = item?;
        let Some(split) = key.iter().position(|byte| *byte == 0) else {
            continue;
        };
        let bucket = String::from_utf8_lossy(&key[..split]).into_owned();
        let info: ObjectInfo = records::decode(&value)?;
        let total = totals.entry(bucket).or_default();
        *total = total.add(UsageDelta::replace(None, info.size));
    }
    let mut batch = Batch::new(space);
    for (bucket, total) in totals {
        batch.put(CF_USAGE, bucket.as_bytes(), total.encode())?;
    }
    batch.write(true)
}

impl Store {
    /// Objects and bytes in `bucket`.
    pub async fn bucket_usage(&self, bucket: &str) -> Result<BucketUsage> {
        if let Some(routed) = self.routed() {
            let usage = |group: Store| async move { Box::pin(group.bucket_usage(bucket)).await };
            return routed.in_group(bucket, usage).await;
        }
        let bucket = bucket.to_owned();
        if let Some(remote) = self.remote() {
            return remote.call(MetaCall::BucketUsage { bucket }).await;
        }
        self.blocking(move |inner| {
            inner.bucket_info(&bucket)?;
            inner.usage_of(&bucket)
        })
        .await
    }

    /// The usage of each of `buckets`, `None` for a bucket this store does
    /// not hold (for an index group: not marked yet). Not routed: the
    /// router asks each group for its buckets'.
    pub(crate) async fn bucket_usages(
        &self,
        buckets: Vec<String>,
    ) -> Result<Vec<Option<BucketUsage>>> {
        if self.routed().is_some() {
            return Err(StoreError::Internal(
                "bucket usages asked of a routed store".into(),
            ));
        }
        if let Some(remote) = self.remote() {
            return remote.call(MetaCall::BucketUsages { buckets }).await;
        }
        self.blocking(move |inner| {
            buckets
                .iter()
                .map(|bucket| match inner.bucket_info(bucket) {
                    Ok(_) => inner.usage_of(bucket).map(Some),
                    Err(StoreError::NoSuchBucket) => Ok(None),
                    Err(err) => Err(err),
                })
                .collect()
        })
        .await
    }

    /// Every bucket of `account` with its usage, by name.
    pub async fn account_usage(&self, account: &str) -> Result<Vec<(BucketInfo, BucketUsage)>> {
        if let Some(routed) = self.routed() {
            return Store::routed_account_usage(routed, account).await;
        }
        if let Some(remote) = self.remote() {
            let account = account.to_owned();
            return remote.call(MetaCall::AccountUsage { account }).await;
        }
        let buckets = self.list_buckets(account).await?;
        self.blocking(move |inner| {
            buckets
                .into_iter()
                .map(|bucket| {
                    let usage = inner.usage_of(&bucket.name)?;
                    Ok((bucket, usage))
                })
                .collect()
        })
        .await
    }
}
