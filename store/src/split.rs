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
//!   gateway that holds its metadata alone, at its start; each member of a
//!   replicated service, as it applies the root's `SplitIntoIndexGroups`
//!   from the log: [`Store::split_in_place`]). Each batch takes its records
//!   out of the root's space and puts them in the group's in one write, so
//!   a record is in exactly one of the two whatever the moment of a crash.
//! - **Resumable**: the group count is recorded before the first move
//!   with a *splitting* byte after it, and recorded again without it by the
//!   last write: synced in one process; on a replica, with the log entry's
//!   applied marker, so that a member that crashed before it applies the
//!   entry again. Whatever a crash cut short, what is left
//!   in the root's space is what is still to move: a store opened with
//!   the byte there finishes the split before anything else, and one
//!   opened without the groups is refused, as any store with groups
//!   recorded. Versions from before the split read a count of two bytes
//!   only, so none of them opens a store half split (which would serve
//!   without the objects moved, and take writes the rest of the split
//!   would overwrite).
//! - **Alone**: the root's bucket lock is held throughout, so its own
//!   background work (the expiry sweep) waits; the groups' can only see
//!   records already moved, each with what belongs with it.
//! - **Extents** keep their ids, which were not tagged by bucket, so a
//!   split store has no [`EXTENTS_TAGGED`] mark: no group sweeps orphans by
//!   tag, and the root's sweep over every space goes on doing it.

use std::sync::Arc;

use rocksdb::IteratorMode;

use crate::error::{Result, StoreError};
use crate::expiry::expiry_index_key;
use crate::keys::{
    self, CF_BUCKETS, CF_DEFAULT, CF_EXPIRY, CF_OBJECTS, CF_PARTS, CF_UPLOADS, CF_USAGE,
};
use crate::multipart::UploadInfo;
use crate::records::{self, BucketInfo};
use crate::routed::{INDEX_GROUPS, group_index};
use crate::space::{MoveBatch, Space, family};
use crate::store::{Engine, Inner, Store, decode_object};

#[cfg(doc)]
use crate::routed::EXTENTS_TAGGED;

/// The byte after the group count ([`INDEX_GROUPS`]) while a split runs.
const SPLITTING: u8 = b's';

/// Key (default column family of the root) present once its buckets'
/// records were moved into index groups by a split: their replicas then
/// hold records no group log holds, and apply calls only when seeded.
pub(crate) const SPLIT_DONE: &[u8] = b"index-groups-split";

/// Key (default column family of an index group) present once the split
/// moved the root's records of its buckets into it, on this member: a
/// group snapshot carries it.
pub(crate) const SEEDED: &[u8] = b"index-group-seeded";

/// How often an index group's replica looks again at a root it waits for.
const ROOT_SPLIT_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// Records moved per write: bounded memory, and a crash repeats little.
const RECORDS_PER_BATCH: usize = 1000;

/// Records moved between two reports of the split's progress in the log.
const PROGRESS_EVERY: u64 = 100_000;

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

/// The index groups recorded in `space` ([`INDEX_GROUPS`]), 0 if none,
/// and whether a split into them is under way.
pub(crate) fn recorded_groups(space: Space<'_>) -> Result<(u16, bool)> {
    let Some(raw) = space.get(CF_DEFAULT, INDEX_GROUPS)? else {
        return Ok((0, false));
    };
    match raw.as_slice() {
        [high, low] => Ok((u16::from_be_bytes([*high, *low]), false)),
        [high, low, SPLITTING] => Ok((u16::from_be_bytes([*high, *low]), true)),
        _ => Err(StoreError::Corrupt(format!(
            "an index group count of {} bytes",
            raw.len()
        ))),
    }
}

impl Store {
    /// Moves this root's buckets' records into `groups` if it holds
    /// buckets and records no groups yet, or finishes a split a crash cut
    /// short; nothing otherwise (a store already split, or never used,
    /// or held by another process, which [`Store::route`] judges after).
    /// `count` is `groups.len()`, as [`Store::route`] checked it.
    pub(crate) async fn split_into(&self, groups: &[Store], count: u16) -> Result<()> {
        split(self, (groups, count), RECORDS_PER_BATCH, None).await?;
        Ok(())
    }
}

impl Store {
    /// The split of a replicated service's root, as each member applies it
    /// from the log (`SplitIntoIndexGroups`): the records of this root's
    /// buckets move into the `count` index groups' spaces of its database,
    /// as in one process; a root with no buckets, or already split, records
    /// or checks the count as [`Store::route`] does. Answers whether the
    /// groups' extents are tagged (those of a store split are not).
    ///
    /// A member that does not run the groups yet (its configuration
    /// changed after another's) moves the records all the same, into group
    /// stores opened for the while: its groups start over them later.
    pub(crate) async fn split_in_place(&self, count: u16) -> Result<bool> {
        let config = self.config().clone();
        // A store held by one process is split by that process, at its
        // start; a replica here, as `Store::route` does it there.
        if config.log_replica {
            let groups = (1..=count)
                .map(|group| self.open_group(group, config.clone()))
                .collect::<Result<Vec<_>>>()?;
            self.split_into(&groups, count).await?;
        }
        self.record_index_groups(count, None).await
    }

    /// Whether this root's buckets were moved into index groups by a split:
    /// `None` while it records no groups, or is splitting.
    pub async fn split_into_index_groups(&self) -> Result<Option<bool>> {
        self.blocking(|inner| {
            let space = inner.space();
            Ok(match recorded_groups(space)? {
                (0, _) | (_, true) => None,
                _ => Some(space.get(CF_DEFAULT, SPLIT_DONE)?.is_some()),
            })
        })
        .await
    }

    /// Readies this store, the root of a database that keeps replicas of
    /// index groups without their root group (a storage node's,
    /// `docs/design/index-on-the-ring.md` step 3), for `count` groups: it
    /// records them as a root never split does, so that the groups'
    /// replicas apply calls at once ([`Store::wait_for_root_split`]).
    /// `held_by` describes who holds them (the list of storage nodes),
    /// kept and checked as [`Store::route_held_by`] does. Refused for a
    /// store that holds buckets, records another count, or another
    /// `held_by`.
    pub async fn hold_index_groups_without_root(&self, count: u16, held_by: String) -> Result<()> {
        self.record_index_groups(count, Some(held_by))
            .await
            .map(|_tagged| ())
    }

    /// For an index group's replica, before it applies a call, installs a
    /// snapshot, takes one or answers a read: waits until this member's
    /// root records its index groups and is not splitting. A group's change
    /// applied before a lagging root's split would be overwritten by the
    /// older record the split moves, and a read would miss what the split
    /// has not moved yet. Then, with `seeded`, refuses a replica of a root
    /// that was split which the split did not seed: it holds none of the
    /// records moved, which are in no group log. A root store returns at
    /// once, and so does a group once it saw its root ready.
    pub async fn wait_for_root_split(&self, seeded: bool) -> Result<()> {
        let Engine::Local(inner) = &self.engine else {
            return Ok(());
        };
        let Some(group) = inner.keys().group_id() else {
            return Ok(());
        };
        let started = std::time::Instant::now();
        let mut told = None;
        loop {
            if inner
                .root_split_seen
                .load(std::sync::atomic::Ordering::SeqCst)
            {
                return Ok(());
            }
            let root = self
                .blocking(|inner| {
                    let root_keys = crate::space::KeySpace::root();
                    let root = Space {
                        db: inner.database(),
                        keys: &root_keys,
                    };
                    let split = root.get(CF_DEFAULT, SPLIT_DONE)?.is_some();
                    let seeded = inner.space().get(CF_DEFAULT, SEEDED)?.is_some();
                    Ok((recorded_groups(root)?, split, seeded))
                })
                .await?;
            match root {
                ((count, false), split, is_seeded) if count > 0 => {
                    if !split || is_seeded {
                        inner
                            .root_split_seen
                            .store(true, std::sync::atomic::Ordering::SeqCst);
                    } else if seeded {
                        return Err(StoreError::Internal(format!(
                            "this member's replica of index group {group} holds none of the \
                             records the split of the root moved into it (the member's root \
                             was caught up by a snapshot taken after the split, and the \
                             group's by its log): remove the member from the metadata \
                             service and add it again"
                        )));
                    }
                    return Ok(());
                }
                _ => {
                    let waited = started.elapsed();
                    if told.is_none_or(|told: std::time::Duration| waited >= told * 2) {
                        tracing::info!(
                            group,
                            waited_secs = waited.as_secs(),
                            "index group waits for this member's root to record its index \
                             groups (a split, or the first gateway's start)"
                        );
                        told = Some(waited.max(std::time::Duration::from_secs(5)));
                    }
                    tokio::time::sleep(ROOT_SPLIT_POLL).await;
                }
            }
        }
    }
}

/// The split into `groups` (and their `count`), in batches of `per_batch`
/// records, stopping after `batches` writes if given (the tests' crash).
pub(crate) async fn split(
    root: &Store,
    (groups, count): (&[Store], u16),
    per_batch: usize,
    batches: Option<usize>,
) -> Result<Split> {
    let Engine::Local(root_inner) = &root.engine else {
        return Ok(Split::Done);
    };
    // Checked before anything is recorded: a split that cannot run must
    // leave the store as it was.
    let Some(groups) = groups
        .iter()
        .map(|group| match &group.engine {
            Engine::Local(inner) if std::ptr::eq(inner.database(), root_inner.database()) => {
                Some(inner.clone())
            }
            _ => None,
        })
        .collect::<Option<Vec<_>>>()
    else {
        // Groups elsewhere (on storage nodes) take no record in a write of
        // this database: nothing moves, and a root with buckets to move is
        // refused when it records the groups (`Inner::record_index_groups`).
        return Ok(Split::Done);
    };
    if !root.blocking(move |inner| inner.begin_split(count)).await? {
        return Ok(Split::Done);
    }
    let split = root
        .blocking(move |inner| inner.move_into_groups(&groups, count, per_batch, batches))
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
        match recorded_groups(self.space())? {
            (0, _) => {}
            // Another count is refused by `record_index_groups`.
            (recorded, splitting) => {
                let resume = splitting && recorded == count;
                if resume {
                    tracing::info!(
                        groups = count,
                        "resuming the move of buckets into index groups"
                    );
                }
                return Ok(resume);
            }
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
        let [high, low] = count.to_be_bytes();
        let mut batch = self.batch();
        batch.put(CF_DEFAULT, INDEX_GROUPS, [high, low, SPLITTING])?;
        // Neither synced nor marked applied (a replica applying the split):
        // a write the moves follow in the database's log, and the split is
        // done only with its last write.
        batch.write(false)?;
        self.note_index_groups(count);
        Ok(true)
    }

    /// Moves every bucket's records into its group (of `groups`, in the
    /// routed store's order), then records their `count` without the
    /// splitting byte.
    fn move_into_groups(
        &self,
        groups: &[Arc<Inner>],
        count: u16,
        per_batch: usize,
        mut batches: Option<usize>,
    ) -> Result<Split> {
        let _exclusive = self.bucket_lock.write();
        let mut buckets = Vec::new();
        for item in self.space().iter(CF_BUCKETS, IteratorMode::Start)? {
            let (_, value) = item?;
            buckets.push(records::decode::<BucketInfo>(&value)?);
        }
        let mut progress = Progress {
            buckets: buckets.len(),
            ..Progress::default()
        };
        for (index, bucket) in buckets.iter().enumerate() {
            progress.bucket = index + 1;
            let group = &groups[group_index(&bucket.name, groups.len())];
            let mut mover = Mover {
                from: self.space(),
                to: group.space(),
                batch: None,
                per_batch: per_batch.max(1),
                batches: &mut batches,
                progress: &mut progress,
            };
            if mover.bucket(bucket, group)? == Step::Stop {
                return Ok(Split::Stopped);
            }
        }
        // The moves left deletions behind: compacted away, or each scan of
        // the root (its expiry sweep every few seconds) would step over
        // them, as many as there were objects.
        let database = self.database();
        let root_keys = self.keys();
        for name in [CF_OBJECTS, CF_EXPIRY, CF_UPLOADS, CF_PARTS, CF_USAGE] {
            database.compact_range_cf(
                family(database, name)?,
                Some(root_keys.prefix()),
                Some(root_keys.end()),
            );
        }
        // Every group is seeded, even one that took no bucket: a replica
        // of it applies calls only then (`Store::wait_for_root_split`).
        for group in groups {
            let mut seeded = group.batch();
            seeded.put(CF_DEFAULT, SEEDED, b"")?;
            // Not synced: kept with the last write, as a move is.
            seeded.write(false)?;
        }
        let mut batch = self.batch();
        batch.put(CF_DEFAULT, INDEX_GROUPS, count.to_be_bytes())?;
        batch.put(CF_DEFAULT, SPLIT_DONE, b"")?;
        // Synced, or (a replica applying the split) marked applied with the
        // log's entry: every move before it is durable with it.
        self.commit(batch)?;
        Ok(Split::Done)
    }
}

/// How far a split is, to say so every [`PROGRESS_EVERY`] records: a store
/// of millions of objects takes minutes, in a few buckets or many.
#[derive(Default)]
struct Progress {
    /// Records moved so far, in every bucket.
    moved: u64,
    /// `moved` when last said.
    reported: u64,
    /// The bucket being moved, from 1, of `buckets`.
    bucket: usize,
    buckets: usize,
}

/// The moves of one bucket's records into its group.
struct Mover<'a> {
    from: Space<'a>,
    to: Space<'a>,
    batch: Option<MoveBatch<'a>>,
    per_batch: usize,
    /// Writes left before stopping, when counted.
    batches: &'a mut Option<usize>,
    progress: &'a mut Progress,
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
                let value = records::encode(&bucket.marker())?;
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
        self.from.iter_prefix(family, prefix)
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
        let records = batch.len() as u64;
        batch.write()?;
        let progress = &mut *self.progress;
        progress.moved += records;
        if progress.moved - progress.reported >= PROGRESS_EVERY {
            progress.reported = progress.moved;
            tracing::info!(
                records = progress.moved,
                bucket = progress.bucket,
                buckets = progress.buckets,
                "moving into index groups"
            );
        }
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

    use bytes::Bytes;
    use futures::stream;
    use strata_pool::{LocalPool, LocalPoolConfig};

    use super::*;
    use crate::store::StoreConfig;
    use crate::{ObjectMeta, PutConditions, StageOptions};

    /// The store in `dir`, a replicated service's replica if
    /// `log_replica` (which only the log changes: no background work of
    /// its own commits).
    fn open(dir: &std::path::Path, log_replica: bool) -> Option<Store> {
        let pool = LocalPool::open(LocalPoolConfig {
            dir: dir.join("pool"),
        })
        .unwrap();
        let mut config = StoreConfig::new(dir.join("meta"));
        config.min_part_size = 1;
        config.log_replica = log_replica;
        Store::open(config, Arc::new(pool)).ok()
    }

    /// The root store in `dir` and its three groups, once the dropped ones
    /// have let go of the database.
    async fn reopen(dir: &std::path::Path, log_replica: bool) -> (Store, Vec<Store>) {
        for _ in 0..200 {
            if let Some(root) = open(dir, log_replica) {
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

    /// One bucket's records, as written before the split.
    struct Planted {
        name: String,
        /// Its index group's number (from 1).
        group: usize,
        objects: Vec<Vec<u8>>,
        /// The expiry entry of the last object.
        expiry: Vec<u8>,
        parts: Vec<Vec<u8>>,
        upload: Vec<u8>,
        usage: crate::usage::BucketUsage,
    }

    impl Planted {
        /// Checks where the bucket's records are, `cut` writes into a
        /// split: each in one space, the root's or its group's; an expiry
        /// entry with its object; an upload's parts in the group once the
        /// upload is; the usage counter in one space; the group's marker
        /// there once any record is. Answers every record's space.
        async fn check(&self, root: &Store, groups: &[Store], cut: usize) -> Vec<usize> {
            let place = |family: &'static str, key: Vec<u8>| async move {
                let found = holders(root, groups, family, &key).await;
                assert!(
                    found == [0] || found == [self.group],
                    "{cut} writes in: {} {family} {key:?} in {found:?}",
                    self.name
                );
                found[0]
            };
            let mut places = Vec::new();
            for object in &self.objects {
                places.push(place(CF_OBJECTS, object.clone()).await);
            }
            let expiry = place(CF_EXPIRY, self.expiry.clone()).await;
            assert_eq!(
                Some(&expiry),
                places.last(),
                "{cut}: {} expiry apart",
                self.name
            );
            let mut parts = Vec::new();
            for part in &self.parts {
                parts.push(place(CF_PARTS, part.clone()).await);
            }
            let upload = place(CF_UPLOADS, self.upload.clone()).await;
            if upload == self.group {
                assert!(
                    parts.iter().all(|part| *part == self.group),
                    "{cut}: {parts:?}"
                );
            }
            let usage = place(crate::keys::CF_USAGE, self.name.clone().into_bytes()).await;
            places.extend(parts.iter().chain([&expiry, &upload, &usage]));
            if places.contains(&self.group) {
                let marker = holders(root, groups, CF_BUCKETS, self.name.as_bytes()).await;
                assert_eq!(marker, [0, self.group], "{cut}: {} marker", self.name);
            }
            places
        }
    }

    /// A split stopped after any of its writes resumes at the next start
    /// and ends as one never stopped. A crash leaves the same as a stop:
    /// the writes share one log, so a crash keeps a prefix of them. After
    /// every write the records are where [`Planted::check`] says, the
    /// store says a split is under way, and a restart in the middle
    /// changes none of it.
    #[tokio::test]
    async fn a_split_stopped_after_any_write_resumes_and_moves_every_record_once() {
        split_stopped_after_any_write(None).await;
    }

    /// The same split as a replica applies it from the log entry whose
    /// applied marker is pinned (`MetaCall::SplitIntoIndexGroups`): the
    /// marker is written by the last write only, so a member stopped
    /// before it applies the entry again, and resumes.
    #[tokio::test]
    async fn a_replicas_split_marks_its_entry_applied_with_its_last_write_only() {
        split_stopped_after_any_write(Some(b"the split's entry")).await;
    }

    /// Pins `marker` as the entry applied, if given, at every start.
    fn pin(root: &Store, marker: Option<&[u8]>) {
        let (Engine::Local(inner), Some(marker)) = (&root.engine, marker) else {
            return;
        };
        *inner.pinned.lock() = Some(crate::store::Pinned {
            at_ms: 0,
            nonce: [0; 16],
            marker: marker.to_vec(),
            events: None,
            signature: None,
        });
    }

    async fn applied_marker(root: &Store) -> Option<Vec<u8>> {
        root.blocking(|inner| inner.space().get(CF_DEFAULT, crate::store::APPLIED_MARKER))
            .await
            .unwrap()
    }

    async fn split_stopped_after_any_write(marker: Option<&'static [u8]>) {
        let dir = tempfile::tempdir().unwrap();
        let (mut root, mut groups) = reopen(dir.path(), marker.is_some()).await;
        let now_secs = crate::expiry::now_secs();
        let mut planted = Vec::new();
        for n in 0..6 {
            let name = format!("bucket-{n}");
            root.create_bucket("acct", &name, "r").await.unwrap();
            let mut objects = Vec::new();
            let mut expiry = Vec::new();
            for key in ["a", "b/c", "d"] {
                let meta = ObjectMeta {
                    delete_at: (key == "d").then_some(now_secs + 3600),
                    ..ObjectMeta::default()
                };
                let body = staged(&root, &name, b"some bytes").await;
                let info = root
                    .put_object(&name, key, body, meta, None, PutConditions::default())
                    .await
                    .unwrap();
                objects.push(keys::object_key(&name, key));
                expiry = expiry_index_key(&info).unwrap_or_default();
            }
            let upload = root
                .create_upload(&name, "parts", ObjectMeta::default(), None)
                .await
                .unwrap();
            let mut parts = Vec::new();
            for number in 1..=3 {
                let body = staged(&root, &name, b"a part").await;
                root.put_part(&upload, number, body, None).await.unwrap();
                parts.push(keys::part_key(&upload.upload_id, number));
            }
            planted.push(Planted {
                group: group_index(&name, 3) + 1,
                usage: root.bucket_usage(&name).await.unwrap(),
                upload: keys::upload_key(&name, "parts", &upload.upload_id),
                name,
                objects,
                expiry,
                parts,
            });
        }

        let mut writes = 0;
        pin(&root, marker);
        loop {
            let step = split(&root, (&groups, 3), 2, Some(1)).await.unwrap();
            if marker.is_some() {
                let marked = applied_marker(&root).await;
                assert_eq!(
                    marked.as_deref() == marker,
                    step == Split::Done,
                    "the entry marked applied after {writes} writes"
                );
            }
            for bucket in &planted {
                bucket.check(&root, &groups, writes).await;
            }
            let recorded = root
                .blocking(|inner| recorded_groups(inner.space()))
                .await
                .unwrap();
            assert_eq!(
                recorded,
                (3, step == Split::Stopped),
                "after {writes} writes"
            );
            if step == Split::Done {
                break;
            }
            writes += 1;
            if writes == 5 {
                drop((root, groups));
                (root, groups) = reopen(dir.path(), marker.is_some()).await;
                pin(&root, marker);
            }
        }
        assert!(writes > 20, "{writes} cut points only");
        for bucket in &planted {
            let places = bucket.check(&root, &groups, writes).await;
            assert!(
                places.iter().all(|place| *place == bucket.group),
                "{places:?}"
            );
        }
        let store = Store::route(root, groups).await.unwrap();
        for bucket in &planted {
            let usage = store.bucket_usage(&bucket.name).await.unwrap();
            assert_eq!(usage, bucket.usage, "{}", bucket.name);
            let object = store.head_object(&bucket.name, "b/c").await.unwrap();
            assert_eq!(object.size, 10);
        }
    }

    /// The split as a replicated service's member applies it: in place,
    /// into groups it opens if its process runs none; its index groups'
    /// replicas wait for it, and a group replica of a split root that the
    /// split did not seed is refused.
    #[tokio::test]
    async fn a_replica_splits_in_place_and_its_groups_wait_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let pool = LocalPool::open(LocalPoolConfig {
            dir: dir.path().join("pool"),
        })
        .unwrap();
        let mut config = StoreConfig::new(dir.path().join("meta"));
        config.log_replica = true;
        let root = Store::open(config.clone(), Arc::new(pool)).unwrap();
        let names: Vec<String> = (0..4).map(|n| format!("bucket-{n}")).collect();
        for name in &names {
            root.create_bucket("acct", name, "r").await.unwrap();
            let body = staged(&root, name, b"moved").await;
            root.put_object(
                name,
                "k",
                body,
                ObjectMeta::default(),
                None,
                PutConditions::default(),
            )
            .await
            .unwrap();
        }
        // Group 2 runs in this process; group 1 does not.
        let second = root.open_group(2, config.clone()).unwrap();
        let waiting = tokio::spawn({
            let second = second.clone();
            async move { second.wait_for_root_split(true).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(
            !waiting.is_finished(),
            "a group went on before its root split"
        );
        assert_eq!(root.split_into_index_groups().await.unwrap(), None);

        assert!(
            !root.split_in_place(2).await.unwrap(),
            "split extents are untagged"
        );
        waiting.await.unwrap().unwrap();
        assert_eq!(root.split_into_index_groups().await.unwrap(), Some(true));
        let first = root.open_group(1, config.clone()).unwrap();
        let groups = [first, second];
        for name in &names {
            let group = &groups[group_index(name, 2)];
            assert_eq!(group.head_object(name, "k").await.unwrap().size, 5);
            assert!(
                root.head_object(name, "k").await.is_err(),
                "{name} still in the root"
            );
        }
        // Sent again (another gateway's start), it changes nothing.
        assert!(!root.split_in_place(2).await.unwrap());
        assert!(root.split_in_place(3).await.is_err());

        // A group replica emptied (an install cut short) holds none of what
        // the split moved: it applies no call, but may take a snapshot in.
        groups[0].wipe_replica().await.unwrap();
        let refused = groups[0].wait_for_root_split(true).await;
        assert!(
            matches!(&refused, Err(StoreError::Internal(why)) if why.contains("holds none")),
            "{refused:?}"
        );
        groups[0].wait_for_root_split(false).await.unwrap();
        groups[1].wait_for_root_split(true).await.unwrap();
        root.wait_for_root_split(true).await.unwrap();
    }
}
