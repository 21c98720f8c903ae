//! A store whose buckets keep their objects in index groups
//! (`docs/design/index-on-the-ring.md`, step 2): [`Store::route`] puts one
//! [`Store`] in front of the root group's store and the index groups'
//! stores, each local ([`Store::open_group`]) or connected, and sends every
//! call where its records are.
//!
//! - The root group keeps the bucket records (with the doors' settings),
//!   the catalog, and nothing of the objects.
//! - A bucket's objects, uploads, usage and their events are in one index
//!   group, chosen by the MD5 of the bucket's name (as Swift places its
//!   container databases: bucket names are one namespace, and object calls
//!   carry only the name). The number of groups is the store's for good
//!   once recorded (a store that held buckets before moves their records
//!   into the groups then, `crate::split`): a bucket never changes group.
//! - Creating and deleting a bucket go through both ([`crate::grouped`]),
//!   and every object call first makes sure the group holds the bucket's
//!   marker, finishing a creation or deletion a crash cut short.
//! - Every group's change events reach this store's listeners and
//!   subscribers: the edge purges as it does over one store.
//! - A rename between buckets of two groups cannot be one batch: it copies
//!   the bytes into extents tagged for the destination (two records never
//!   name the same extents, whose orphan sweeps are two groups'), commits
//!   the copy there, then deletes the source only if it is still the
//!   version copied. A crash between the two leaves both names, never
//!   neither.

use std::collections::BTreeMap;
use std::sync::Arc;

use md5::{Digest as _, Md5};
use strata_pool::ExtentTags;

use crate::error::{Result, StoreError};
use crate::feed::ChangeEvent;
use crate::grouped;
use crate::records::{BucketInfo, ObjectInfo};
use crate::store::{BucketPin, Events, PutConditions, Store};
use crate::write::{StageError, StageOptions};

/// Key (default column family of the root store) of the number of index
/// groups its buckets are spread over.
pub(crate) const INDEX_GROUPS: &[u8] = b"index-groups";

/// Key (beside [`INDEX_GROUPS`]) naming who holds the groups when other
/// processes do (the storage nodes that `cluster.index_nodes` lists),
/// absent when the root's own process or service holds them: recorded
/// with the count, and checked with it, so that a gateway routing to
/// groups elsewhere never sees a root whose records are in its own
/// groups, nor the other way round.
pub(crate) const INDEX_GROUPS_HELD_BY: &[u8] = b"index-groups-held-by";

/// Key (beside [`INDEX_GROUPS`]) present when the groups were first used by
/// a version that tags every extent with its bucket's hash: then each
/// group's orphan sweep may take the extents of its buckets' tags. Stores
/// routed before tags hold extents whose tags mean nothing.
pub(crate) const EXTENTS_TAGGED: &[u8] = b"index-groups-extents-tagged";

/// The top 32 bits of the MD5 of bucket `name`: where its group is, and
/// the tag of its extents' ids ([`strata_pool::ExtentId::tag`]).
pub(crate) fn bucket_hash(name: &str) -> u32 {
    let digest = Md5::digest(name.as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// Which of `groups` index groups holds the buckets of `hash`: its top
/// bits, as a partition ring's.
fn group_of(hash: u32, groups: usize) -> usize {
    ((u64::from(hash) * groups as u64) >> 32) as usize
}

/// Which of `groups` index groups (from 0) holds bucket `name`.
pub(crate) fn group_index(name: &str, groups: usize) -> usize {
    group_of(bucket_hash(name), groups)
}

/// The bucket hashes of index group `group` of `groups`: the tags of the
/// extents only that group's records may name, which its orphan sweep
/// lists. `None` for a group that does not exist.
pub fn group_tags(group: usize, groups: usize) -> Option<ExtentTags> {
    if group >= groups {
        return None;
    }
    // The least hash whose group is at least `group`: ⌈group·2³² / groups⌉.
    let least = |group: usize| ((group as u64) << 32).div_ceil(groups as u64);
    let last = least(group + 1) - 1;
    Some(least(group) as u32..=last as u32)
}

pub(crate) struct Routed {
    pub(crate) root: Store,
    groups: Vec<Store>,
    pub(crate) events: Arc<Events>,
    /// Whether every extent the groups' records name is tagged with its
    /// bucket's hash ([`EXTENTS_TAGGED`]).
    extents_tagged: bool,
}

impl Routed {
    pub(crate) fn new(root: Store, groups: Vec<Store>, extents_tagged: bool) -> Arc<Routed> {
        let events = Events::new();
        for store in std::iter::once(&root).chain(&groups) {
            let events = events.clone();
            store.on_change(Arc::new(move |event: &ChangeEvent| {
                events.publish(event.clone());
            }));
        }
        Arc::new(Routed {
            root,
            groups,
            events,
            extents_tagged,
        })
    }

    /// The index group of bucket `name`.
    pub(crate) fn group(&self, name: &str) -> &Store {
        &self.groups[self.group_index(name)]
    }

    /// Which of the groups holds bucket `name`.
    fn group_index(&self, name: &str) -> usize {
        group_index(name, self.groups.len())
    }

    /// The index group of bucket `name`, once it holds the bucket's marker.
    pub(crate) async fn marked(&self, name: &str) -> Result<&Store> {
        let group = self.group(name);
        grouped::marker(&self.root, group, name).await?;
        Ok(group)
    }

    /// Runs `call` in bucket `name`'s group. A `NoSuchBucket` there may be
    /// a marker a crash left unwritten: once [`grouped::marker`] wrote it
    /// from the root's record, the call runs again. So the marker is read
    /// only when a call misses it, not before every call.
    pub(crate) async fn in_group<T, Fut>(
        &self,
        name: &str,
        call: impl Fn(Store) -> Fut,
    ) -> Result<T>
    where
        Fut: std::future::Future<Output = Result<T>>,
    {
        let group = self.group(name);
        match call(group.clone()).await {
            Err(StoreError::NoSuchBucket) => {
                grouped::marker(&self.root, group, name).await?;
                call(group.clone()).await
            }
            done => done,
        }
    }

    pub(crate) fn group_count(&self) -> u16 {
        // At most u16::MAX: `Store::route` checked.
        self.groups.len() as u16
    }

    pub(crate) fn stores(&self) -> impl Iterator<Item = &Store> {
        std::iter::once(&self.root).chain(&self.groups)
    }
}

impl Store {
    /// Whether each index group's extents are tagged with their buckets'
    /// hashes, so that the group may sweep the orphans among them
    /// ([`group_tags`]): true for a routed store whose groups were first
    /// used by a version that tags, false for one routed before, whose
    /// extents only the root's sweep of every space may judge, and for a
    /// store that is not routed.
    pub fn index_extents_tagged(&self) -> bool {
        self.routed().is_some_and(|routed| routed.extents_tagged)
    }
}

impl Store {
    /// A store that keeps bucket records and the catalog in `root` and each
    /// bucket's objects in one of `groups` ([`crate::routed`]). The number
    /// of groups is the store's for good: `root` records it the first time
    /// and refuses another afterwards; whoever opens the root without
    /// routing it checks [`Store::index_groups`]. A root that already holds
    /// buckets moves their objects into the groups first when it and the
    /// groups are this process's, in one database (`crate::split`); a
    /// connected root is asked to split (a replicated service's members each
    /// move their own replica's records), and a root held by another
    /// process alone refuses. Groups held elsewhere (index groups on
    /// storage nodes) take only a root without buckets.
    pub async fn route(root: Store, groups: Vec<Store>) -> Result<Store> {
        Self::route_held_by(root, groups, None).await
    }

    /// [`Store::route`] over groups that `held_by` holds (a description
    /// the root records and checks at each start: the storage nodes that
    /// hold them), or, with `None`, the root's own process or service.
    pub async fn route_held_by(
        root: Store,
        groups: Vec<Store>,
        held_by: Option<String>,
    ) -> Result<Store> {
        let count = u16::try_from(groups.len())
            .ok()
            .filter(|count| *count > 0)
            .ok_or_else(|| {
                StoreError::InvalidArgument(format!(
                    "{} index groups: 1 to 65535 are possible",
                    groups.len()
                ))
            })?;
        if root.routed().is_some() || groups.iter().any(|group| group.routed().is_some()) {
            return Err(StoreError::Internal("a routed store routed again".into()));
        }
        // The root records who holds groups of other processes, which keeps
        // its orphan sweep off their extents (`Store::sweep_orphans`).
        if held_by.is_none() && !root.is_remote() && groups.iter().any(Store::is_remote) {
            return Err(StoreError::InvalidArgument(
                "index groups that other processes hold are routed to with who holds them".into(),
            ));
        }
        root.split_into(&groups, count).await?;
        let extents_tagged = root.record_index_groups(count, held_by).await?;
        Ok(Store {
            engine: crate::store::Engine::Routed(Routed::new(root, groups, extents_tagged)),
        })
    }

    /// Bucket `name`'s index group with its marker checked first, for the
    /// calls that consume a staged body and so cannot run twice
    /// ([`Routed::in_group`] is for the others).
    pub(crate) async fn routed_group(&self, name: &str) -> Option<Result<Store>> {
        let routed = self.routed()?;
        Some(routed.marked(name).await.cloned())
    }

    /// Renames `bucket/key` to `to_bucket/to_key`, a bucket of another
    /// index group: a copy, committed in the destination's group as the
    /// same object (its ETag, parts, times and metadata), and the source's
    /// deletion, which leaves a version written since the copy in place.
    /// Memory stays bounded: the bytes stream from the pool to the pool.
    pub(crate) async fn rename_across_groups(
        &self,
        routed: &Routed,
        (bucket, key, pin): (&str, &str, Option<&BucketPin>),
        (to_bucket, to_key, to_pin): (&str, &str, Option<&BucketPin>),
    ) -> Result<ObjectInfo> {
        let (from_group, to_group) = (routed.group(bucket), routed.group(to_bucket));
        let to_marker = grouped::marker(&routed.root, to_group, to_bucket).await?;
        if let Some(to_pin) = to_pin {
            to_pin.check(&to_marker)?;
        }
        if let Some(pin) = pin {
            pin.check(&grouped::marker(&routed.root, from_group, bucket).await?)?;
        }
        let source = Box::pin(from_group.head_object(bucket, key)).await?;
        let options = StageOptions {
            sha256: false,
            checksum: None,
            max_size: source.size,
        };
        let staged = match self
            .stage(to_bucket, self.read(&source, None), &options)
            .await
        {
            Ok(staged) => staged,
            Err(StageError::Body(err) | StageError::Store(err)) => return Err(err),
        };
        // A single-part object's ETag is its MD5: the copy must have it.
        let copied_md5 = hex::encode(staged.digests.md5);
        if staged.size != source.size || (source.part_sizes.is_empty() && copied_md5 != source.etag)
        {
            return Err(StoreError::Internal(format!(
                "the copy of {bucket}/{key} read {} bytes of MD5 {copied_md5}, not {} of {}",
                staged.size, source.size, source.etag
            )));
        }
        let moved = ObjectInfo {
            bucket: to_bucket.to_owned(),
            key: to_key.to_owned(),
            extents: staged.extents.clone(),
            inline: staged.inline.clone(),
            copy_nonce: Some(rand::random()),
            ..source.clone()
        };
        // Pinned to the destination as found: a bucket deleted and made
        // again meanwhile is another one.
        let conditions = PutConditions::for_bucket(&to_marker);
        let moved = Box::pin(to_group.commit_staged(staged, moved, conditions)).await?;
        // Not pinned again: the copy is in place, and a bucket created again
        // under the source's name meanwhile holds no object of this version.
        let deleted = from_group.delete_object_version(bucket, key, Some(source), None);
        let deleted = Box::pin(deleted).await?;
        if deleted.is_none() {
            tracing::debug!(
                bucket,
                key,
                "renamed from a key written again or expired since: its record stays, or went with its expiry"
            );
        }
        Ok(moved)
    }

    /// Every bucket of `account` with its usage: the root's records, each
    /// with its group's counters (none yet for a bucket its group has not
    /// marked). One call per group that holds some, all at once: an
    /// account of thousands of containers is listed in a round trip.
    pub(crate) async fn routed_account_usage(
        routed: &Routed,
        account: &str,
    ) -> Result<Vec<(BucketInfo, crate::BucketUsage)>> {
        let buckets = Box::pin(routed.root.list_buckets(account)).await?;
        let mut by_group: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (index, bucket) in buckets.iter().enumerate() {
            let group = routed.group_index(&bucket.name);
            by_group.entry(group).or_default().push(index);
        }
        let asked = by_group.into_iter().map(|(group, indexes)| {
            let names = indexes
                .iter()
                .map(|&index| buckets[index].name.clone())
                .collect();
            let store = &routed.groups[group];
            async move {
                let usages = Box::pin(store.bucket_usages(names)).await?;
                if usages.len() != indexes.len() {
                    return Err(StoreError::Internal(format!(
                        "{} usages for {} buckets",
                        usages.len(),
                        indexes.len()
                    )));
                }
                Ok(indexes.into_iter().zip(usages))
            }
        });
        let mut usages = vec![crate::BucketUsage::default(); buckets.len()];
        for answered in futures::future::try_join_all(asked).await? {
            for (index, usage) in answered {
                usages[index] = usage.unwrap_or_default();
            }
        }
        Ok(buckets.into_iter().zip(usages).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spans of the groups tile every hash in order, and each holds
    /// exactly the hashes `group_of` sends to its group (`group_of` only
    /// grows with the hash, so checking each span's ends suffices).
    #[test]
    fn each_group_s_tags_are_the_hashes_it_holds() {
        for groups in 1..=256 {
            let mut next = 0u64;
            for group in 0..groups {
                let tags = group_tags(group, groups).expect("a group of the count");
                assert_eq!(u64::from(*tags.start()), next, "{group} of {groups}");
                assert!(tags.start() <= tags.end());
                assert_eq!(group_of(*tags.start(), groups), group);
                assert_eq!(group_of(*tags.end(), groups), group);
                if *tags.start() > 0 {
                    assert_eq!(group_of(tags.start() - 1, groups), group - 1);
                }
                next = u64::from(*tags.end()) + 1;
            }
            assert_eq!(next, 1 << 32, "{groups} groups leave hashes out");
            assert_eq!(group_tags(groups, groups), None);
        }
    }
}
