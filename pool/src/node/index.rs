//! What a storage node holds, grouped by partition: live extents and the
//! tombstones of deleted ones. Built from one directory walk at start and
//! kept up to date by every write and delete; the replicator's digests and
//! listings come from here, never from reading data.

use std::collections::BTreeMap;
use std::ops::Bound;

use sha2::{Digest as _, Sha256};
use strata_ring::Ring;

use crate::ExtentId;
use crate::wire::PartitionListing;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Live {
        len: u64,
    },
    /// Deleted at this unix time; kept until the reclaim age so every replica
    /// learns of the deletion instead of having the extent pushed back.
    Deleted {
        at: u64,
    },
}

/// Extents by partition. The partition of an id depends only on the cluster's
/// salt and part power, which a cluster never changes, so a newer ring of the
/// same cluster leaves this grouping as it is.
#[derive(Default)]
pub struct Index {
    /// Partition hasher: a ring of this cluster (any version).
    ring: Option<std::sync::Arc<Ring>>,
    parts: BTreeMap<u32, BTreeMap<ExtentId, State>>,
    /// Entries recorded before the node had a ring.
    unplaced: BTreeMap<ExtentId, State>,
    /// Digests (and live bytes) computed since their partition last
    /// changed: every peer asks for all of them every pass, and most
    /// partitions do not change.
    digests: std::collections::HashMap<u32, (String, u64)>,
    live: u64,
    bytes: u64,
    tombstones: u64,
}

impl Index {
    /// Gives the index its partition hasher, placing what waited for one.
    pub fn set_ring(&mut self, ring: std::sync::Arc<Ring>) {
        let first = self.ring.is_none();
        self.ring = Some(ring);
        if first {
            for (id, state) in std::mem::take(&mut self.unplaced) {
                self.place(id, state);
            }
        }
    }

    fn place(&mut self, id: ExtentId, state: State) {
        match &self.ring {
            Some(ring) => {
                let part = ring.partition_of(&id.0).index();
                self.parts.entry(part).or_default().insert(id, state);
                self.digests.remove(&part);
            }
            None => {
                self.unplaced.insert(id, state);
            }
        }
    }

    fn count(&mut self, state: State, sign: i64) {
        let add = |value: &mut u64, by: u64| {
            *value = if sign > 0 {
                value.saturating_add(by)
            } else {
                value.saturating_sub(by)
            }
        };
        match state {
            State::Live { len } => {
                add(&mut self.live, 1);
                add(&mut self.bytes, len);
            }
            State::Deleted { .. } => add(&mut self.tombstones, 1),
        }
    }

    pub fn get(&self, id: ExtentId) -> Option<State> {
        match &self.ring {
            Some(ring) => self
                .parts
                .get(&ring.partition_of(&id.0).index())?
                .get(&id)
                .copied(),
            None => self.unplaced.get(&id).copied(),
        }
    }

    /// Records an entry, replacing what the id had.
    pub fn set(&mut self, id: ExtentId, state: State) {
        self.remove(id);
        self.count(state, 1);
        self.place(id, state);
    }

    /// Forgets an id entirely (a quarantined copy, a handoff moved home, a
    /// reclaimed tombstone).
    pub fn remove(&mut self, id: ExtentId) {
        let removed = match &self.ring {
            Some(ring) => {
                let part = ring.partition_of(&id.0).index();
                let removed = self.parts.get_mut(&part).and_then(|map| map.remove(&id));
                self.digests.remove(&part);
                if self.parts.get(&part).is_some_and(BTreeMap::is_empty) {
                    self.parts.remove(&part);
                }
                removed
            }
            None => self.unplaced.remove(&id),
        };
        if let Some(state) = removed {
            self.count(state, -1);
        }
    }

    /// Forgets an id only while it is live: a copy found missing or damaged
    /// must not take a tombstone that a concurrent delete just wrote with it.
    pub fn forget_live(&mut self, id: ExtentId) {
        if let Some(State::Live { .. }) = self.get(id) {
            self.remove(id);
        }
    }

    pub fn listing(&self, part: u32) -> PartitionListing {
        let mut listing = PartitionListing::default();
        for (id, state) in self.parts.get(&part).into_iter().flatten() {
            match state {
                State::Live { .. } => listing.live.push(*id),
                State::Deleted { at } => listing.deleted.push((*id, *at)),
            }
        }
        listing
    }

    /// Live extents of a partition and their bytes.
    pub fn live_in(&self, part: u32) -> (u64, u64) {
        self.parts
            .get(&part)
            .into_iter()
            .flatten()
            .fold((0, 0), |(count, bytes), (_, state)| match state {
                State::Live { len } => (count + 1, bytes + len),
                State::Deleted { .. } => (count, bytes),
            })
    }

    /// A digest of a partition's listing: equal digests, equal contents.
    pub fn digest(&mut self, part: u32) -> Option<String> {
        self.summary(part).map(|(digest, _)| digest)
    }

    /// A partition's digest and the bytes of its live extents, computed
    /// once per change of the partition.
    pub fn summary(&mut self, part: u32) -> Option<(String, u64)> {
        if let Some(summary) = self.digests.get(&part) {
            return Some(summary.clone());
        }
        let entries = self.parts.get(&part)?;
        let mut hasher = Sha256::new();
        let mut live_bytes = 0;
        for (id, state) in entries {
            hasher.update(id.0);
            hasher.update(match state {
                State::Live { len } => {
                    live_bytes += len;
                    b"L"
                }
                State::Deleted { .. } => b"D",
            });
        }
        let summary = (hex::encode(hasher.finalize()), live_bytes);
        self.digests.insert(part, summary.clone());
        Some(summary)
    }

    /// Partitions holding anything, in order.
    pub fn partitions(&self) -> Vec<u32> {
        self.parts.keys().copied().collect()
    }

    /// Up to `limit` live extents after `after` in (partition, id) order, for
    /// the auditor's walk; costs O(limit · log n), whatever the index size.
    /// Entries recorded before the node had a ring come last.
    pub fn live_after(&self, after: Option<(u32, ExtentId)>, limit: usize) -> Vec<(u32, ExtentId)> {
        let start_part = after.map_or(Bound::Unbounded, |(part, _)| Bound::Included(part));
        let placed = self
            .parts
            .range((start_part, Bound::Unbounded))
            .flat_map(|(part, map)| {
                let from = match after {
                    Some((after_part, id)) if after_part == *part => Bound::Excluded(id),
                    _ => Bound::Unbounded,
                };
                map.range((from, Bound::Unbounded))
                    .map(move |(id, state)| (*part, *id, *state))
            });
        let unplaced = self
            .unplaced
            .iter()
            .map(|(id, state)| (u32::MAX, *id, *state))
            .filter(move |(_, id, _)| {
                after.is_none_or(|(part, after)| part < u32::MAX || *id > after)
            });
        placed
            .chain(unplaced)
            .filter(|(_, _, state)| matches!(state, State::Live { .. }))
            .map(|(part, id, _)| (part, id))
            .take(limit)
            .collect()
    }

    /// Tombstones older than `before` (unix seconds).
    pub fn expired_tombstones(&self, before: u64) -> Vec<ExtentId> {
        self.parts
            .values()
            .flat_map(|map| map.iter())
            .filter(|(_, state)| matches!(state, State::Deleted { at } if *at < before))
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn totals(&self) -> (u64, u64, u64) {
        (self.live, self.bytes, self.tombstones)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_ring::{DeviceSpec, RingBuilder};

    fn ring() -> std::sync::Arc<Ring> {
        let mut builder = RingBuilder::new("test", 4, 1).unwrap();
        builder
            .add_device(DeviceSpec {
                node: "127.0.0.1:1".into(),
                region: 1,
                zone: 1,
                weight: 1,
                name: None,
            })
            .unwrap();
        builder.rebalance().unwrap();
        std::sync::Arc::new(builder.ring().unwrap())
    }

    #[test]
    fn digests_follow_contents_and_totals_follow_changes() {
        let mut index = Index::default();
        let a = ExtentId([1; 16]);
        let b = ExtentId([2; 16]);
        index.set(a, State::Live { len: 10 });
        index.set_ring(ring());
        index.set(b, State::Live { len: 5 });
        assert_eq!(index.totals(), (2, 15, 0));
        // The auditor's walk visits each live extent once, in order.
        let all = index.live_after(None, 10);
        assert_eq!(all.len(), 2);
        assert_eq!(index.live_after(Some(all[0]), 10), vec![all[1]]);
        assert!(index.live_after(Some(all[1]), 10).is_empty());
        assert_eq!(index.live_after(None, 1), vec![all[0]]);
        let part_b = ring().partition_of(&b.0).index();
        assert!(index.live_in(part_b).0 >= 1);
        assert_eq!(
            index.summary(part_b).map(|(_, bytes)| bytes),
            Some(index.live_in(part_b).1)
        );
        let part = ring().partition_of(&a.0).index();
        let before = index.digest(part);
        index.set(a, State::Deleted { at: 7 });
        assert_ne!(index.digest(part), before);
        assert_eq!(index.totals(), (1, 5, 1));
        assert_eq!(index.listing(part).deleted, vec![(a, 7)]);
        assert_eq!(index.expired_tombstones(8), vec![a]);
        assert!(index.expired_tombstones(7).is_empty());
        // A tombstone survives a "copy went missing" from a racing reader.
        index.forget_live(a);
        assert_eq!(index.get(a), Some(State::Deleted { at: 7 }));
        index.forget_live(b);
        assert_eq!(index.get(b), None);
        index.remove(a);
        assert_eq!(index.totals(), (0, 0, 0));
        assert!(index.partitions().is_empty());
    }
}
