//! Key spaces: several metadata groups in one database.
//!
//! A [`Store`](crate::Store) keeps every record of every column family in
//! its [`KeySpace`]. The root space has unprefixed keys, which is every
//! database written before there were groups; a group's keys start with
//! `0xFF`, then its id (u32 big-endian). No root key starts with `0xFF`:
//! bucket names, upload ids, catalog namespaces and the default family's
//! markers are text, and the big-endian numbers that lead the feed, gc and
//! expiry keys stay below 2^56 (expiry times beyond are not indexed:
//! `expiry.rs`). So the root space is every key below
//! `[0xFF]`, and group `g` every key from `0xFF·g` to `0xFF·g+1`.
//!
//! Every read and write of a store goes through [`Space`] and [`Batch`],
//! which add the prefix on the way in, bound every scan to the space and
//! strip the prefix on the way out: the code above them sees the keys of a
//! database of its own. Groups share the database's write-ahead log, so a
//! commit is one fsync whichever group makes it (the reason for prefixes
//! rather than a database per group; see `docs/design/index-on-the-ring.md`).

use std::borrow::Cow;

use rocksdb::{
    ColumnFamily, DB, DBPinnableSlice, DBRawIterator, IteratorMode, ReadOptions, WriteBatch,
    WriteOptions,
};

use crate::error::{Result, StoreError};
use crate::feed::FeedTicket;

/// The first byte of every key of a group's space.
const GROUP_MARK: u8 = 0xFF;
/// The mark and the group's id.
const GROUP_PREFIX_LEN: usize = 5;

/// Where one group's keys lie in a database shared by several groups:
/// a store's records here, a metadata member's Raft logs in `strata-meta`
/// (the same layout, so both agree on what a group's keys are).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpace {
    prefix: Vec<u8>,
    /// The smallest key above the space.
    end: Vec<u8>,
}

impl KeySpace {
    /// Unprefixed keys: the one space of a database without groups.
    pub fn root() -> KeySpace {
        KeySpace {
            prefix: Vec::new(),
            end: vec![GROUP_MARK],
        }
    }

    /// Whether this is the root space (a database's only one before groups).
    pub(crate) fn is_root(&self) -> bool {
        self.prefix.is_empty()
    }

    /// The group of a group's space; `None` for the root.
    pub(crate) fn group_id(&self) -> Option<u16> {
        group_of_key(&self.prefix)
    }

    /// The keys of group `id`: `0xFF`, then `id` as u32 big-endian.
    pub fn group(id: u16) -> KeySpace {
        let mark = |id: u32| [[GROUP_MARK].as_slice(), &id.to_be_bytes()].concat();
        KeySpace {
            prefix: mark(u32::from(id)),
            end: mark(u32::from(id) + 1),
        }
    }

    /// The group space that holds database key `key`; `None` for a root
    /// key, or one that no group's could be.
    pub(crate) fn holding(key: &[u8]) -> Option<KeySpace> {
        group_of_key(key).map(KeySpace::group)
    }

    /// What every key of the space starts with (nothing, for the root).
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// The smallest key above the space: the bound of every scan in it.
    pub fn end(&self) -> &[u8] {
        &self.end
    }

    /// The database key of the space's `key`.
    pub(crate) fn key<'k>(&self, key: &'k [u8]) -> Cow<'k, [u8]> {
        if self.is_root() {
            Cow::Borrowed(key)
        } else {
            Cow::Owned([self.prefix.as_slice(), key].concat())
        }
    }

    /// The database key of `key`, written to the space: a root key must
    /// not reach into the groups' keys (an import from a damaged export).
    fn key_to_write<'k>(&self, key: &'k [u8]) -> Result<Cow<'k, [u8]>> {
        let key = self.key(key);
        if key.as_ref() >= self.end.as_slice() {
            return Err(StoreError::Corrupt(
                "a record's key falls outside its store's space".into(),
            ));
        }
        Ok(key)
    }

    /// The space's key of a database key it holds.
    fn strip<'k>(&self, key: &'k [u8]) -> &'k [u8] {
        key.get(self.prefix.len()..).unwrap_or_default()
    }

    pub(crate) fn read_options(&self, upper: Option<&[u8]>) -> ReadOptions {
        let mut options = ReadOptions::default();
        if !self.is_root() {
            options.set_iterate_lower_bound(self.prefix.clone());
        }
        options.set_iterate_upper_bound(match upper {
            Some(upper) => self.key(upper).into_owned(),
            None => self.end.clone(),
        });
        options
    }
}

/// The group whose space holds database key `key`, from its prefix.
fn group_of_key(key: &[u8]) -> Option<u16> {
    match key {
        [GROUP_MARK, a, b, c, d, ..] => u16::try_from(u32::from_be_bytes([*a, *b, *c, *d])).ok(),
        _ => None,
    }
}

/// A database key of any space, without its space's prefix: for the scans
/// that must see every group's records (which extents are referenced).
pub(crate) fn unprefixed(key: &[u8]) -> &[u8] {
    match key.first() {
        Some(&GROUP_MARK) => key.get(GROUP_PREFIX_LEN..).unwrap_or_default(),
        _ => key,
    }
}

/// The column family named `name` (`"default"` included).
pub(crate) fn family<'a>(db: &'a DB, name: &str) -> Result<&'a ColumnFamily> {
    db.cf_handle(name)
        .ok_or_else(|| StoreError::Internal(format!("column family {name} missing")))
}

/// Reads of one space.
#[derive(Clone, Copy)]
pub(crate) struct Space<'a> {
    pub(crate) db: &'a DB,
    pub(crate) keys: &'a KeySpace,
}

/// A record of a scan: the space's key and the value.
pub(crate) type Record = (Box<[u8]>, Box<[u8]>);

impl<'a> Space<'a> {
    pub(crate) fn get(&self, family_name: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let family = family(self.db, family_name)?;
        Ok(self.db.get_cf(family, self.keys.key(key))?)
    }

    pub(crate) fn get_pinned(
        &self,
        family_name: &str,
        key: &[u8],
    ) -> Result<Option<DBPinnableSlice<'a>>> {
        let family = family(self.db, family_name)?;
        Ok(self.db.get_pinned_cf(family, self.keys.key(key))?)
    }

    /// The space's records of a family from `mode` on (`From` names a key
    /// of the space), in the space's keys.
    pub(crate) fn iter(
        &self,
        family_name: &str,
        mode: IteratorMode<'_>,
    ) -> Result<impl Iterator<Item = Result<Record>> + use<'a>> {
        self.iter_below(family_name, mode, None)
    }

    /// [`Space::iter`], forward scans stopping before the key `upper`.
    pub(crate) fn iter_below(
        &self,
        family_name: &str,
        mode: IteratorMode<'_>,
        upper: Option<&[u8]>,
    ) -> Result<impl Iterator<Item = Result<Record>> + use<'a>> {
        let family = family(self.db, family_name)?;
        let options = self.keys.read_options(upper);
        let from;
        let mode = match mode {
            IteratorMode::From(key, direction) => {
                from = self.keys.key(key);
                IteratorMode::From(&from, direction)
            }
            other => other,
        };
        let strip = self.keys.prefix.len();
        Ok(self
            .db
            .iterator_cf_opt(family, options, mode)
            .map(move |item| {
                let (key, value) = item?;
                let key = if strip == 0 {
                    key
                } else {
                    key.get(strip..).unwrap_or_default().into()
                };
                Ok((key, value))
            }))
    }

    /// The space's records of a family whose keys start with `prefix` (a
    /// bucket's, an upload's): the scan ends at the prefix's last key, not
    /// at the next record beyond it, past any deletions between.
    pub(crate) fn iter_prefix(
        &self,
        family_name: &str,
        prefix: &[u8],
    ) -> Result<impl Iterator<Item = Result<Record>> + use<'a>> {
        let from = IteratorMode::From(prefix, rocksdb::Direction::Forward);
        self.iter_below(family_name, from, Some(&crate::keys::after_prefix(prefix)))
    }

    /// A cursor over the space's records of a family (listings).
    pub(crate) fn cursor(&self, family_name: &str) -> Result<Cursor<'a>> {
        let family = family(self.db, family_name)?;
        Ok(Cursor {
            iter: self
                .db
                .raw_iterator_cf_opt(family, self.keys.read_options(None)),
            keys: self.keys,
        })
    }
}

/// RocksDB's raw iterator within one space, in the space's keys.
pub(crate) struct Cursor<'a> {
    iter: DBRawIterator<'a>,
    keys: &'a KeySpace,
}

impl Cursor<'_> {
    pub(crate) fn seek(&mut self, key: &[u8]) {
        self.iter.seek(self.keys.key(key));
    }

    pub(crate) fn seek_for_prev(&mut self, key: &[u8]) {
        self.iter.seek_for_prev(self.keys.key(key));
    }

    pub(crate) fn valid(&self) -> bool {
        self.iter.valid()
    }

    pub(crate) fn key(&self) -> Option<&[u8]> {
        self.iter.key().map(|key| self.keys.strip(key))
    }

    pub(crate) fn value(&self) -> Option<&[u8]> {
        self.iter.value()
    }

    pub(crate) fn next(&mut self) {
        self.iter.next();
    }

    pub(crate) fn prev(&mut self) {
        self.iter.prev();
    }

    pub(crate) fn status(&self) -> Result<()> {
        Ok(self.iter.status()?)
    }
}

/// A write batch of one space.
pub(crate) struct Batch<'a> {
    batch: WriteBatch,
    space: Space<'a>,
    /// The feed numbers of the events this batch appends, in flight until
    /// it is written or dropped.
    feed_tickets: Vec<FeedTicket>,
}

impl<'a> Batch<'a> {
    pub(crate) fn new(space: Space<'a>) -> Batch<'a> {
        Batch {
            batch: WriteBatch::default(),
            space,
            feed_tickets: Vec::new(),
        }
    }

    /// Keeps a feed number in flight until this batch is written.
    pub(crate) fn hold(&mut self, ticket: FeedTicket) {
        self.feed_tickets.push(ticket);
    }

    /// The family and the database key a change of `key` goes to.
    fn target<'k>(
        &self,
        family_name: &str,
        key: &'k [u8],
    ) -> Result<(&'a ColumnFamily, Cow<'k, [u8]>)> {
        let family = family(self.space.db, family_name)?;
        Ok((family, self.space.keys.key_to_write(key)?))
    }

    pub(crate) fn put(&mut self, family: &str, key: &[u8], value: impl AsRef<[u8]>) -> Result<()> {
        let (family, key) = self.target(family, key)?;
        self.batch.put_cf(family, key, value);
        Ok(())
    }

    pub(crate) fn merge(
        &mut self,
        family: &str,
        key: &[u8],
        value: impl AsRef<[u8]>,
    ) -> Result<()> {
        let (family, key) = self.target(family, key)?;
        self.batch.merge_cf(family, key, value);
        Ok(())
    }

    pub(crate) fn delete(&mut self, family: &str, key: &[u8]) -> Result<()> {
        let (family, key) = self.target(family, key)?;
        self.batch.delete_cf(family, key);
        Ok(())
    }

    /// Deletes the space's keys from `from` up to, not including, `to`.
    pub(crate) fn delete_range(&mut self, family_name: &str, from: &[u8], to: &[u8]) -> Result<()> {
        let family = family(self.space.db, family_name)?;
        let keys = self.space.keys;
        self.batch
            .delete_range_cf(family, keys.key(from), keys.key(to));
        Ok(())
    }

    /// Deletes every record the space holds in a family.
    pub(crate) fn delete_all(&mut self, family_name: &str) -> Result<()> {
        let family = family(self.space.db, family_name)?;
        let keys = self.space.keys;
        self.batch
            .delete_range_cf(family, keys.prefix.as_slice(), keys.end.as_slice());
        Ok(())
    }

    pub(crate) fn size_in_bytes(&self) -> usize {
        self.batch.size_in_bytes()
    }

    /// Applies the batch, fsynced when `sync` (the write-ahead log is the
    /// database's, so a sync makes every group's earlier writes durable too).
    pub(crate) fn write(self, sync: bool) -> Result<()> {
        let mut options = WriteOptions::default();
        options.set_sync(sync);
        self.space.db.write_opt(self.batch, &options)?;
        // The feed tickets go now, the events readable.
        Ok(())
    }
}

/// A batch that moves records from one space of a database to another:
/// each record leaves one and lands in the other in the same write, so a
/// crash leaves it in exactly one of them (the split of a store into
/// index groups, `split.rs`).
pub(crate) struct MoveBatch<'a> {
    batch: WriteBatch,
    from: Space<'a>,
    to: Space<'a>,
    records: usize,
}

impl<'a> MoveBatch<'a> {
    pub(crate) fn new(from: Space<'a>, to: Space<'a>) -> Result<MoveBatch<'a>> {
        if !std::ptr::eq(from.db, to.db) || from.keys == to.keys {
            return Err(StoreError::Internal(
                "records moved between two databases, or within one space".into(),
            ));
        }
        Ok(MoveBatch {
            batch: WriteBatch::default(),
            from,
            to,
            records: 0,
        })
    }

    /// Moves the record `key` of a family, whose value is `value`.
    pub(crate) fn move_record(&mut self, family: &str, key: &[u8], value: &[u8]) -> Result<()> {
        self.relocate(family, key, value, false)
    }

    /// Moves the record `key` of a family with a merge operator, whose
    /// merged value is `value`, into a space that may already hold
    /// operands for it: the two add up.
    pub(crate) fn merge_record(&mut self, family: &str, key: &[u8], value: &[u8]) -> Result<()> {
        self.relocate(family, key, value, true)
    }

    fn relocate(&mut self, family_name: &str, key: &[u8], value: &[u8], merge: bool) -> Result<()> {
        let family = family(self.from.db, family_name)?;
        self.batch.delete_cf(family, self.from.keys.key(key));
        let landing = self.to.keys.key_to_write(key)?;
        match merge {
            true => self.batch.merge_cf(family, landing, value),
            false => self.batch.put_cf(family, landing, value),
        }
        self.records += 1;
        Ok(())
    }

    /// Writes a record in the destination only.
    pub(crate) fn put_to(&mut self, family_name: &str, key: &[u8], value: &[u8]) -> Result<()> {
        let family = family(self.from.db, family_name)?;
        self.batch
            .put_cf(family, self.to.keys.key_to_write(key)?, value);
        self.records += 1;
        Ok(())
    }

    /// How many records the batch writes.
    pub(crate) fn len(&self) -> usize {
        self.records
    }

    /// Applies the batch without waiting for the disk: the split's last
    /// write (not a move's) is synced, or on a replica marks the log entry
    /// applied, and the log is the database's, so every earlier write is
    /// kept with it; a crash before it loses a suffix of the moves, which
    /// the split makes again.
    pub(crate) fn write(self) -> Result<()> {
        let mut options = WriteOptions::default();
        options.set_sync(false);
        self.from.db.write_opt(self.batch, &options)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spaces_are_disjoint_and_ordered() {
        let root = KeySpace::root();
        let first = KeySpace::group(0);
        let last = KeySpace::group(u16::MAX);
        // Root keys (text, big-endian numbers below 2^56) sort below every group.
        for key in [&b"bucket\0key"[..], &u64::MAX.wrapping_shr(8).to_be_bytes()] {
            assert!(root.key(key).as_ref() < root.end.as_slice());
            assert!(root.key(key).as_ref() < first.prefix.as_slice());
        }
        assert_eq!(first.end, KeySpace::group(1).prefix);
        assert!(last.key(&[0xFF; 8]).as_ref() < last.end.as_slice());
        assert_eq!(unprefixed(&first.key(b"gc-key")), b"gc-key");
        assert_eq!(unprefixed(&root.key(b"gc-key")), b"gc-key");
        assert_eq!(first.strip(&first.key(b"k")), b"k");
        // A root key in a group's keys is refused; any key of a group fits.
        assert!(root.key_to_write(&[0xFF, 0, 0, 0, 1, b'k']).is_err());
        assert!(last.key_to_write(&[0xFF; 8]).is_ok());
    }
}
