//! The one-time split of a store into index groups
//! (`docs/design/index-on-the-ring.md`, step 2): a store whose buckets kept
//! their objects in its own (root) space, routed over index groups for the
//! first time ([`Store::route`]), moves each bucket's records into the
//! bucket's group before it serves a call.
//!
//! - **What moves**: a bucket's objects with their entries in the expiry
//!   index, its unfinished uploads with their parts (keyed by upload id
//!   alone), and its usage counter; the group gets the bucket's marker in
//!   the first batch. The bucket records, the catalog, the change feed and
//!   the pending extent deletions stay with the root.
//! - **Where**: only where the root and its groups share one database (a
//!   gateway that holds its metadata alone). Each batch takes its records
//!   out of the root's space and puts them in the group's in one write, so
//!   a record is in exactly one of the two whatever the moment of a crash.
//!   A replicated service cannot split yet: its moves would go through two
//!   logs (step 4), and [`Store::route`] refuses it as before.
//! - **Resumable**: the group count is recorded with a *splitting* mark
//!   before the first move, and the mark removed by a synced write after
//!   the last. Whatever a crash cut short, what is left in the root's space
//!   is what is still to move: a store opened with the mark set finishes
//!   the split before anything else, and one opened without the groups is
//!   refused, as any store with groups recorded.
//! - **Alone**: the root's bucket lock is held throughout, so its own
//!   background work (the expiry sweep) waits; the groups' can only see
//!   records already moved, each with what belongs with it.
//! - **Extents** keep their ids, which were not tagged by bucket, so a
//!   split store has no [`EXTENTS_TAGGED`] mark: no group sweeps orphans by
//!   tag, and the root's sweep over every space goes on doing it.

use std::sync::Arc;

use rocksdb::{Direction, IteratorMode};

use crate::error::{Result, StoreError};
use crate::expiry::expiry_index_key;
use crate::keys::{
    self, CF_BUCKETS, CF_DEFAULT, CF_EXPIRY, CF_OBJECTS, CF_PARTS, CF_UPLOADS, CF_USAGE,
};
use crate::multipart::UploadInfo;
use crate::records::{self, BucketInfo};
use crate::routed::{INDEX_GROUPS, group_index};
use crate::space::{MoveBatch, Space};
use crate::store::{Engine, Inner, Store, decode_object};

#[cfg(doc)]
use crate::routed::EXTENTS_TAGGED;

/// Key (default column family of the root) present while a split runs.
pub(crate) const SPLITTING: &[u8] = b"index-groups-splitting";

/// Records moved per write: bounded memory, and a crash repeats little.
const RECORDS_PER_BATCH: usize = 1000;

/// Whether a split ran to its end or stopped where it was told to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Split {
    Done,
    Stopped,
}

/// Whether the moves go on after a write.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    GoOn,
    Stop,
}

impl Store {
    /// Moves this root's buckets' records into `groups` if it holds
    /// buckets and records no groups yet, or finishes a split a crash cut
    /// short; nothing otherwise (a store already split, or never used,
    /// or held by another process, which [`Store::route`] judges after).
    pub(crate) async fn split_into(&self, groups: &[Store]) -> Result<()> {
        split(self, groups, RECORDS_PER_BATCH, None).await?;
        Ok(())
    }
}

/// The split, in batches of `per_batch` records, stopping after
/// `batches` writes if given (the tests' crash).
pub(crate) async fn split(
    root: &Store,
    groups: &[Store],
    per_batch: usize,
    batches: Option<usize>,
) -> Result<Split> {
    if !matches!(root.engine, Engine::Local(_)) {
        return Ok(Split::Done);
    }
    let count = u16::try_from(groups.len())
        .map_err(|_| StoreError::InvalidArgument("too many index groups".into()))?;
    if !root.blocking(move |inner| inner.begin_split(count)).await? {
        return Ok(Split::Done);
    }
    let groups = groups
        .iter()
        .map(|group| match &group.engine {
            Engine::Local(inner) => Ok(inner.clone()),
            _ => Err(StoreError::InvalidArgument(
                "a store's buckets move into index groups only where one process holds \
                 them all"
                    .into(),
            )),
        })
        .collect::<Result<Vec<_>>>()?;
    let split = root
        .blocking(move |inner| inner.move_into_groups(&groups, per_batch, batches))
        .await?;
    if split == Split::Done {
        tracing::info!(
            groups = count,
            "the store's buckets moved into their index groups"
        );
    }
    Ok(split)
}

impl Inner {
    /// Records `count` groups and the splitting mark in a store that holds
    /// buckets and no groups yet. Whether a split is to run: begun now, or
    /// begun by an earlier start with the same count.
    fn begin_split(&self, count: u16) -> Result<bool> {
        let _exclusive = self.bucket_lock.write();
        let splitting = self.space().get(CF_DEFAULT, SPLITTING)?.is_some();
        match self.recorded_index_groups()? {
            0 => {}
            // Another count is refused by `record_index_groups`.
            recorded => return Ok(splitting && recorded == count),
        }
        if self
            .space()
            .iter(CF_BUCKETS, IteratorMode::Start)?
            .next()
            .is_none()
        {
            return Ok(false);
        }
        tracing::info!(
            groups = count,
            "moving the store's buckets into index groups"
        );
        let mut batch = self.batch();
        batch.put(CF_DEFAULT, INDEX_GROUPS, count.to_be_bytes())?;
        batch.put(CF_DEFAULT, SPLITTING, [])?;
        self.commit(batch)?;
        self.note_index_groups(count);
        Ok(true)
    }

    /// Moves every bucket's records into its group (of `groups`, in the
    /// routed store's order), then clears the splitting mark.
    fn move_into_groups(
        &self,
        groups: &[Arc<Inner>],
        per_batch: usize,
        mut batches: Option<usize>,
    ) -> Result<Split> {
        let _exclusive = self.bucket_lock.write();
        let mut buckets = Vec::new();
        for item in self.space().iter(CF_BUCKETS, IteratorMode::Start)? {
            let (_, value) = item?;
            buckets.push(records::decode::<BucketInfo>(&value)?);
        }
        for bucket in &buckets {
            let group = &groups[group_index(&bucket.name, groups.len())];
            let mut mover = Mover {
                root: self,
                from: self.space(),
                to: group.space(),
                batch: None,
                per_batch: per_batch.max(1),
                batches: &mut batches,
            };
            if mover.bucket(bucket, group)? == Step::Stop {
                return Ok(Split::Stopped);
            }
        }
        let mut batch = self.batch();
        batch.delete(CF_DEFAULT, SPLITTING)?;
        // Synced: every move before it is durable with it.
        self.commit(batch)?;
        Ok(Split::Done)
    }
}

/// The moves of one bucket's records into its group.
struct Mover<'a> {
    root: &'a Inner,
    from: Space<'a>,
    to: Space<'a>,
    batch: Option<MoveBatch<'a>>,
    per_batch: usize,
    /// Writes left before stopping, when counted.
    batches: &'a mut Option<usize>,
}

impl<'a> Mover<'a> {
    fn bucket(&mut self, bucket: &BucketInfo, group: &Inner) -> Result<Step> {
        let name = bucket.name.as_str();
        match group.bucket_info(name) {
            Ok(found) if found.incarnation == bucket.incarnation => {}
            Ok(found) => {
                return Err(StoreError::Corrupt(format!(
                    "bucket {name} has incarnation {} in its index group and {} in the root",
                    found.incarnation, bucket.incarnation
                )));
            }
            Err(StoreError::NoSuchBucket) => {
                let marker = BucketInfo {
                    attrs: Default::default(),
                    ..bucket.clone()
                };
                let value = records::encode(&marker)?;
                self.batch()?.put_to(CF_BUCKETS, name.as_bytes(), &value)?;
            }
            Err(err) => return Err(err),
        }
        let prefix = keys::bucket_prefix(name);
        // Each scan sees the records as they were when it began, so the
        // moves it adds to a batch not yet written do not come back.
        for item in self.scan(CF_OBJECTS, &prefix)? {
            let (key, value) = item?;
            let object_key = String::from_utf8_lossy(&key[prefix.len()..]);
            let info = decode_object(name, &object_key, &value)?;
            let batch = self.batch()?;
            batch.move_record(CF_OBJECTS, &key, &value)?;
            if let Some(due) = expiry_index_key(&info) {
                batch.move_record(CF_EXPIRY, &due, b"")?;
            }
            if self.written_if_full()? == Step::Stop {
                return Ok(Step::Stop);
            }
        }
        for item in self.scan(CF_UPLOADS, &prefix)? {
            let (key, value) = item?;
            let upload: UploadInfo = records::decode(&value)?;
            // Parts first: an upload record left behind brings its
            // remaining parts along when the split resumes.
            for part in self.scan(CF_PARTS, &keys::part_prefix(&upload.upload_id))? {
                let (part_key, part_value) = part?;
                self.batch()?
                    .move_record(CF_PARTS, &part_key, &part_value)?;
                if self.written_if_full()? == Step::Stop {
                    return Ok(Step::Stop);
                }
            }
            self.batch()?.move_record(CF_UPLOADS, &key, &value)?;
            if self.written_if_full()? == Step::Stop {
                return Ok(Step::Stop);
            }
        }
        // Last, when no object of the bucket is left for the root's
        // deltas; merged, so the group's own since the first moves add up.
        if let Some(usage) = self.from.get(CF_USAGE, name.as_bytes())? {
            self.batch()?
                .merge_record(CF_USAGE, name.as_bytes(), &usage)?;
        }
        self.written()
    }

    /// The root's records of a family whose keys start with `prefix`.
    fn scan(
        &self,
        family: &str,
        prefix: &[u8],
    ) -> Result<impl Iterator<Item = Result<crate::space::Record>> + use<'a>> {
        let upper = keys::after_prefix(prefix);
        let from = IteratorMode::From(prefix, Direction::Forward);
        let records = self.root.space().iter_below(family, from, Some(&upper))?;
        let prefix = prefix.to_vec();
        Ok(records.take_while(move |item| {
            item.as_ref()
                .map_or(true, |(key, _)| key.starts_with(&prefix))
        }))
    }

    fn batch(&mut self) -> Result<&mut MoveBatch<'a>> {
        if self.batch.is_none() {
            self.batch = Some(MoveBatch::new(self.from, self.to)?);
        }
        self.batch
            .as_mut()
            .ok_or_else(|| StoreError::Internal("no move batch".into()))
    }

    fn written_if_full(&mut self) -> Result<Step> {
        match &self.batch {
            Some(batch) if batch.len() >= self.per_batch => self.written(),
            _ => Ok(Step::GoOn),
        }
    }

    /// Writes the batch being filled, if any.
    fn written(&mut self) -> Result<Step> {
        let Some(batch) = self.batch.take() else {
            return Ok(Step::GoOn);
        };
        batch.write()?;
        match self.batches {
            None => Ok(Step::GoOn),
            Some(left) => {
                *left = left.saturating_sub(1);
                match *left {
                    0 => Ok(Step::Stop),
                    _ => Ok(Step::GoOn),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

    use std::collections::BTreeMap;

    use bytes::Bytes;
    use futures::stream;
    use strata_pool::{LocalPool, LocalPoolConfig};

    use super::*;
    use crate::store::StoreConfig;
    use crate::{ObjectMeta, PutConditions, StageOptions};

    fn open(dir: &std::path::Path) -> Option<Store> {
        let pool = LocalPool::open(LocalPoolConfig {
            dir: dir.join("pool"),
        })
        .unwrap();
        let mut config = StoreConfig::new(dir.join("meta"));
        config.min_part_size = 1;
        Store::open(config, Arc::new(pool)).ok()
    }

    /// The root store in `dir` and its three groups, once the dropped ones
    /// have let go of the database.
    async fn reopen(dir: &std::path::Path) -> (Store, Vec<Store>) {
        for _ in 0..200 {
            if let Some(root) = open(dir) {
                let config = root.config().clone();
                let groups = (1..=3)
                    .map(|group| root.open_group(group, config.clone()).unwrap())
                    .collect();
                return (root, groups);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("database stayed locked");
    }

    async fn staged(store: &Store, bucket: &str, body: &'static [u8]) -> crate::StagedBody {
        let options = StageOptions {
            sha256: false,
            checksum: None,
            max_size: 1 << 20,
        };
        let body = stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(body))]);
        store.stage(bucket, body, &options).await.ok().unwrap()
    }

    /// Which spaces hold `family`'s record `key`: 0 the root's, `g` group
    /// `g`'s.
    async fn holders(
        root: &Store,
        groups: &[Store],
        family: &'static str,
        key: &[u8],
    ) -> Vec<usize> {
        let mut found = Vec::new();
        for (index, store) in std::iter::once(root).chain(groups).enumerate() {
            let key = key.to_vec();
            let held = store
                .blocking(move |inner| Ok(inner.space().get(family, &key)?.is_some()))
                .await
                .unwrap();
            if held {
                found.push(index);
            }
        }
        found
    }

    /// A split cut short after any of its writes (a crash) resumes at the
    /// next start and ends as one never cut: after every write, each
    /// object, part and upload is in exactly one space, the root's or its
    /// bucket's group's, and a restart in the middle keeps the mark.
    #[tokio::test]
    async fn a_split_cut_after_any_write_resumes_and_moves_every_record_once() {
        let dir = tempfile::tempdir().unwrap();
        let (mut root, mut groups) = reopen(dir.path()).await;
        let now_secs = crate::expiry::now_secs();
        let mut records: Vec<(&'static str, Vec<u8>, usize)> = Vec::new();
        let mut usage = BTreeMap::new();
        for n in 0..6 {
            let bucket = format!("bucket-{n}");
            root.create_bucket("acct", &bucket, "r").await.unwrap();
            let group = group_index(&bucket, 3) + 1;
            for key in ["a", "b/c", "d"] {
                let meta = ObjectMeta {
                    delete_at: (key == "d").then_some(now_secs + 3600),
                    ..ObjectMeta::default()
                };
                let body = staged(&root, &bucket, b"some bytes").await;
                let info = root
                    .put_object(&bucket, key, body, meta, None, PutConditions::default())
                    .await
                    .unwrap();
                records.push((CF_OBJECTS, keys::object_key(&bucket, key), group));
                if let Some(due) = expiry_index_key(&info) {
                    records.push((CF_EXPIRY, due, group));
                }
            }
            let upload = root
                .create_upload(&bucket, "parts", ObjectMeta::default(), None)
                .await
                .unwrap();
            for number in 1..=3 {
                let body = staged(&root, &bucket, b"a part").await;
                root.put_part(&upload, number, body, None).await.unwrap();
                let part = keys::part_key(&upload.upload_id, number);
                records.push((CF_PARTS, part, group));
            }
            let upload_key = keys::upload_key(&bucket, "parts", &upload.upload_id);
            records.push((CF_UPLOADS, upload_key, group));
            usage.insert(bucket.clone(), root.bucket_usage(&bucket).await.unwrap());
        }

        let mut writes = 0;
        loop {
            let step = split(&root, &groups, 2, Some(1)).await.unwrap();
            for (family, key, group) in &records {
                let found = holders(&root, &groups, family, key).await;
                assert!(
                    found == [0] || found == [*group],
                    "after {writes} writes, {family} {key:?} in {found:?}, not in 0 or {group}"
                );
            }
            if step == Split::Done {
                break;
            }
            writes += 1;
            if writes == 5 {
                drop((root, groups));
                (root, groups) = reopen(dir.path()).await;
            }
        }
        assert!(writes > 20, "{writes} cut points only");
        for (family, key, group) in &records {
            assert_eq!(
                holders(&root, &groups, family, key).await,
                [*group],
                "{family} {key:?}"
            );
        }
        let store = Store::route(root, groups).await.unwrap();
        for (bucket, before) in usage {
            assert_eq!(
                store.bucket_usage(&bucket).await.unwrap(),
                before,
                "{bucket}"
            );
            let object = store.head_object(&bucket, "b/c").await.unwrap();
            assert_eq!(object.size, 10);
        }
    }
}
