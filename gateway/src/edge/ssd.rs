//! SSD zones of the edge cache: cached objects as files in a directory with
//! its own byte budget, found again after a restart.
//!
//! A file is `<zone>/<hh>/<hash>-<random>.obj`: a magic, the length of a
//! JSON header (bucket, key, the object's record, the body's length) and
//! its CRC32C, the header, the body, then a CRC32C per [`BLOCK`] of the
//! body (u32 little-endian each). The header is checked as the body is: a
//! flipped bit in a key would otherwise index a copy under another
//! object's name, and one in its metadata would be served. The checksums come last so that a copy can be
//! written as its bytes arrive ([`ZoneWriter`]): a fill of an object too
//! large for memory streams into its file. Files are written to a
//! temporary name and renamed, so a reader sees a whole file or none. A
//! copy is read a block at a time ([`SsdCopy`]), each block checked before
//! any of it is used: a hit streams a large object, and a range reads only
//! the blocks it covers, yet no damaged byte is ever served. A damaged file
//! is dropped when a read finds it.
//!
//! On start a zone reads each file's header only, to rebuild its index, on a
//! thread of its own while the gateway serves (a copy not indexed yet is a
//! miss, and one this run cached meanwhile wins over the older file), and
//! marks every entry for revalidation: while the gateway was away the object
//! may have changed, so its first hit asks the store for the current ETag.
//! Eviction (moka, weighed by file size) and purges delete the file.

use std::fs;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use strata_store::ObjectInfo;

/// Files of earlier layouts (`STRATAC1`: one CRC for the whole body;
/// `STRATAC2`: the CRCs in the header; `STRATAC3`: no CRC of the header)
/// are dropped at start.
const MAGIC: &[u8; 8] = b"STRATAC4";
/// The magic, the header's length and its CRC32C (u32 little-endian each).
const PREFIX_LEN: usize = MAGIC.len() + 4 + 4;
/// Bytes of the body under one CRC: what a read checks at once, so a range
/// reads at most one block beyond each of its ends.
pub const BLOCK: u64 = 1 << 20;
/// Longest header accepted when reading a file back.
const MAX_HEADER: usize = 1 << 20;

pub type ObjectKey = (String, String);

/// An [`ObjectKey`] borrowed, so that a hit's lookup allocates nothing:
/// it hashes as the tuple of owned strings does (each field in turn).
#[derive(Hash)]
pub struct ObjectKeyRef<'a>(pub &'a str, pub &'a str);

impl moka::Equivalent<ObjectKey> for ObjectKeyRef<'_> {
    fn equivalent(&self, key: &ObjectKey) -> bool {
        self.0 == key.0 && self.1 == key.1
    }
}

/// One file of a zone, as the index knows it.
#[derive(Debug)]
pub struct SsdEntry {
    path: PathBuf,
    len: u64,
    /// Set for entries found at start: their first hit revalidates.
    pub needs_revalidation: AtomicBool,
    /// When the copy was last known current: written, or revalidated. Its
    /// age, and its freshness against the object's max-age, count from
    /// there (an entry found at start revalidates at its first hit anyway).
    confirmed: parking_lot::Mutex<std::time::Instant>,
}

impl SsdEntry {
    fn new(path: PathBuf, len: u64, needs_revalidation: bool) -> SsdEntry {
        SsdEntry {
            path,
            len,
            needs_revalidation: AtomicBool::new(needs_revalidation),
            confirmed: parking_lot::Mutex::new(std::time::Instant::now()),
        }
    }

    pub fn confirmed_at(&self) -> std::time::Instant {
        *self.confirmed.lock()
    }
}

#[derive(Serialize, Deserialize)]
struct FileHeader {
    bucket: String,
    key: String,
    info: ObjectInfo,
    body_len: u64,
}

/// Bytes of the CRCs after a body of `body_len` bytes.
fn crcs_len(body_len: u64) -> u64 {
    body_len.div_ceil(BLOCK) * 4
}

/// A zone: a directory of cached objects within a byte budget.
pub struct SsdZone {
    dir: PathBuf,
    index: moka::sync::Cache<ObjectKey, Arc<SsdEntry>>,
    /// Entries pushed out by the byte budget (not purges or replacements).
    pub evictions: Arc<AtomicU64>,
    /// Copies opened to be read (their headers intact), and the bytes of
    /// the blocks read from them that passed their checks.
    pub reads: AtomicU64,
    pub bytes_read: AtomicU64,
    /// Bytes of the answers made from this zone's copies.
    pub bytes_served: AtomicU64,
    /// While the loader runs, the files this run writes (named before they
    /// are created): never taken for an earlier run's leftovers.
    written_while_loading: parking_lot::Mutex<Option<std::collections::HashSet<PathBuf>>>,
    /// Room, in KiB, for the files of fills still being written (not yet
    /// in the index, so not in its budget): half the zone's bytes. A fill
    /// that finds no room is answered uncached rather than overfill the
    /// disk, and an object larger than that is never written.
    pub filling_room: Arc<tokio::sync::Semaphore>,
}

impl SsdZone {
    /// Opens the zone in `dir` (created if missing) and indexes the files
    /// it already holds on a thread of its own (see `indexed`).
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<Arc<SsdZone>> {
        let zone = Arc::new(SsdZone::create(dir, max_bytes)?);
        let loader = zone.clone();
        std::thread::Builder::new()
            .name("cache-zone-load".into())
            .spawn(move || {
                match loader.reload() {
                    Ok(found) => {
                        tracing::info!(dir = %loader.dir.display(), found, "SSD cache zone indexed")
                    }
                    // The zone's directory could not be read: its files stay
                    // out of the index (and of its budget); fills go on.
                    Err(err) => {
                        tracing::warn!(dir = %loader.dir.display(), error = %err, "SSD cache zone not indexed")
                    }
                }
                loader.finish_loading();
            })?;
        Ok(zone)
    }

    /// Opens the zone and indexes its files before returning.
    #[cfg(test)]
    fn open_loaded(dir: &Path, max_bytes: u64) -> std::io::Result<Arc<SsdZone>> {
        let zone = SsdZone::create(dir, max_bytes)?;
        zone.reload()?;
        zone.finish_loading();
        Ok(Arc::new(zone))
    }

    fn create(dir: &Path, max_bytes: u64) -> std::io::Result<SsdZone> {
        fs::create_dir_all(dir)?;
        let evictions = Arc::new(AtomicU64::new(0));
        let evicted = evictions.clone();
        // Weighed in KiB: moka's weights are u32, and copies may pass 4 GiB.
        let index = moka::sync::Cache::builder()
            .max_capacity(max_bytes.div_ceil(1024))
            .weigher(|_key: &ObjectKey, entry: &Arc<SsdEntry>| {
                u32::try_from(entry.len.div_ceil(1024)).unwrap_or(u32::MAX)
            })
            // For `purge_bucket`.
            .support_invalidation_closures()
            .eviction_listener(move |_key, entry: Arc<SsdEntry>, cause| {
                // Evicted, purged or replaced: the file goes with the entry.
                let _ = fs::remove_file(&entry.path);
                if cause == moka::notification::RemovalCause::Size {
                    evicted.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build();
        let room_kib = (max_bytes / 2 / 1024).min(tokio::sync::Semaphore::MAX_PERMITS as u64);
        let zone = SsdZone {
            dir: dir.to_owned(),
            index,
            evictions,
            filling_room: Arc::new(tokio::sync::Semaphore::new(room_kib as usize)),
            reads: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            bytes_served: AtomicU64::new(0),
            written_while_loading: parking_lot::Mutex::new(Some(Default::default())),
        };
        Ok(zone)
    }

    /// Indexes the files of earlier runs (their headers only) and removes
    /// their unfinished ones; a key a fill of this run has cached already
    /// keeps that copy, and the older file goes.
    fn reload(&self) -> std::io::Result<usize> {
        let mut found = 0;
        // An entry that cannot be read is passed over, not the rest: what is
        // not indexed is not in the zone's budget either.
        for shard in fs::read_dir(&self.dir)?.flatten() {
            let shard = shard.path();
            if !shard.is_dir() {
                continue;
            }
            let files = match fs::read_dir(&shard) {
                Ok(files) => files,
                Err(err) => {
                    tracing::warn!(dir = %shard.display(), error = %err, "cache zone directory unreadable");
                    continue;
                }
            };
            for file in files.flatten() {
                let path = file.path();
                let this_run = self
                    .written_while_loading
                    .lock()
                    .as_ref()
                    .is_some_and(|written| written.contains(&path));
                if this_run {
                    continue;
                }
                if path.extension().is_some_and(|ext| ext == "tmp") {
                    let _ = fs::remove_file(&path);
                    continue;
                }
                let header = fs::File::open(&path)
                    .ok()
                    .and_then(|mut file| read_header(&mut file));
                let Some((header, body_start)) = header else {
                    let _ = fs::remove_file(&path);
                    continue;
                };
                let len = body_start + header.body_len + crcs_len(header.body_len);
                let entry = Arc::new(SsdEntry::new(path.clone(), len, true));
                let kept = self
                    .index
                    .entry((header.bucket, header.key))
                    .or_insert_with(|| entry);
                if kept.is_fresh() {
                    found += 1;
                } else if kept.value().path != path {
                    let _ = fs::remove_file(&path);
                }
            }
        }
        Ok(found)
    }

    /// Whether the files found at start are indexed (in the background:
    /// the gateway serves meanwhile, and a copy not indexed yet is a miss).
    pub fn indexed(&self) -> bool {
        self.written_while_loading.lock().is_none()
    }

    /// The zone's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The loader is done (indexed or not): files are no longer named for it.
    fn finish_loading(&self) {
        *self.written_while_loading.lock() = None;
    }

    /// The zone's copy of `key`, opened: its header is read and checked,
    /// its body is not (see [`SsdCopy::block`]). A file that fails the
    /// checks is dropped. Blocking: call off the runtime.
    pub fn open_copy(self: &Arc<Self>, key: &ObjectKey) -> Option<SsdCopy> {
        let entry = self.index.get(key)?;
        let file = match fs::File::open(&entry.path) {
            Ok(file) => Some(file),
            // Gone from under the zone: dropped below.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
            // Says nothing of the copy (out of file descriptors, say): a
            // miss this time, the copy kept for the next.
            Err(err) => {
                tracing::warn!(path = %entry.path.display(), error = %err, "cache file unreadable now");
                return None;
            }
        };
        let opened = file.and_then(|mut file| {
            let (header, body_start) = read_header(&mut file)?;
            if header.bucket != key.0 || header.key != key.1 || header.info.size != header.body_len
            {
                return None;
            }
            let mut crcs = vec![0u8; usize::try_from(crcs_len(header.body_len)).ok()?];
            file.read_exact_at(&mut crcs, body_start + header.body_len)
                .ok()?;
            let block_crcs = crcs
                .chunks_exact(4)
                .map(|crc| u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]))
                .collect();
            Some((file, header, body_start, block_crcs))
        });
        let Some((file, header, body_start, block_crcs)) = opened else {
            self.drop_damaged(key, &entry);
            return None;
        };
        self.reads.fetch_add(1, Ordering::Relaxed);
        Some(SsdCopy {
            zone: self.clone(),
            key: key.clone(),
            file,
            body_start,
            header,
            block_crcs,
            entry,
        })
    }

    /// Drops `entry`, found damaged, unless a new copy replaced it since.
    fn drop_damaged(&self, key: &ObjectKey, entry: &Arc<SsdEntry>) {
        tracing::warn!(path = %entry.path.display(), "dropping a damaged cache file");
        if self
            .index
            .get(key)
            .is_some_and(|current| Arc::ptr_eq(&current, entry))
        {
            self.index.invalidate(key);
        }
    }

    /// Stores a copy. Blocking: call off the runtime.
    #[cfg(test)]
    pub fn write(&self, key: &ObjectKey, info: &ObjectInfo, body: &[u8]) -> std::io::Result<()> {
        let file = self.write_file(key, info, body)?;
        self.insert(key.clone(), file);
        Ok(())
    }

    /// Writes a copy's file, not yet indexed: [`SsdZone::insert`] makes it
    /// the key's copy, [`SsdZone::discard`] removes it. Blocking.
    pub fn write_file(
        &self,
        key: &ObjectKey,
        info: &ObjectInfo,
        body: &[u8],
    ) -> std::io::Result<SsdEntry> {
        let mut writer = self.begin_file(key, info)?;
        writer.append(body)?;
        writer.finish()
    }

    /// Starts a copy's file, to be written as the body arrives. Blocking.
    pub fn begin_file(&self, key: &ObjectKey, info: &ObjectInfo) -> std::io::Result<ZoneWriter> {
        // A new name per copy: replacing the index entry deletes the old file.
        let stem = self.path_of(key);
        let name = stem
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let path = stem.with_file_name(format!(
            "{name}-{}.obj",
            hex::encode(rand::random::<[u8; 6]>())
        ));
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let header = FileHeader {
            bucket: key.0.clone(),
            key: key.1.clone(),
            // Named as the copy is: revalidation asks the store about the
            // record's bucket and key.
            info: ObjectInfo {
                bucket: key.0.clone(),
                key: key.1.clone(),
                inline: None,
                copy_nonce: None,
                ..info.clone()
            },
            body_len: info.size,
        };
        let encoded = serde_json::to_vec(&header).map_err(std::io::Error::other)?;
        let header_len = u32::try_from(encoded.len()).map_err(std::io::Error::other)?;
        let tmp = path.with_extension("tmp");
        if let Some(written) = self.written_while_loading.lock().as_mut() {
            written.insert(tmp.clone());
            written.insert(path.clone());
        }
        let file = fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        let body_start = (PREFIX_LEN + encoded.len()) as u64;
        // Made first, so that a failure below removes the file.
        let writer = ZoneWriter {
            file: Arc::new(file),
            tmp,
            path,
            body_start,
            body_len: info.size,
            written: 0,
            block_crcs: Vec::new(),
            block_crc: 0,
            finished: false,
        };
        // The whole file's room is taken now: a full disk then fails the
        // fill before anything was answered from it, not halfway through
        // the answers that stream from the file.
        let file_len = body_start + info.size + crcs_len(info.size);
        match rustix::fs::fallocate(
            &*writer.file,
            // The length stays what is written: a file cut short by a
            // crash still reads as cut short.
            rustix::fs::FallocateFlags::KEEP_SIZE,
            0,
            file_len,
        ) {
            Ok(()) => {}
            // A file system that cannot reserve is written as it comes.
            Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::NOSYS) => {}
            Err(err) => return Err(err.into()),
        }
        let mut file = &*writer.file;
        file.write_all(MAGIC)?;
        file.write_all(&header_len.to_le_bytes())?;
        file.write_all(&crc32c::crc32c(&encoded).to_le_bytes())?;
        file.write_all(&encoded)?;
        Ok(writer)
    }

    /// Makes a written file the key's copy (replacing, and deleting, any
    /// other).
    pub fn insert(&self, key: ObjectKey, file: SsdEntry) {
        self.index.insert(key, Arc::new(file));
    }

    /// Deletes a written file that will not be indexed.
    pub fn discard(&self, file: SsdEntry) {
        let _ = fs::remove_file(&file.path);
    }

    pub fn purge(&self, key: &ObjectKey) {
        self.index.invalidate(key);
    }

    pub fn purge_bucket(&self, bucket: &str) {
        let owned = bucket.to_owned();
        if let Err(err) = self
            .index
            .invalidate_entries_if(move |key, _| key.0 == owned)
        {
            tracing::error!(error = %err, bucket, "a deleted bucket's copies were not purged");
        }
    }

    /// The bytes of the files indexed (to the KiB).
    pub fn bytes(&self) -> u64 {
        self.index.weighted_size() * 1024
    }

    /// Makes every entry's next hit ask the store for the current version
    /// (changes may have gone unseen).
    pub fn revalidate_all(&self) {
        for (_, entry) in self.index.iter() {
            entry.needs_revalidation.store(true, Ordering::Relaxed);
        }
    }

    /// Marks an entry fresh after the store confirmed its version.
    /// The store confirmed that `entry` is the object's current version.
    pub fn confirm(entry: &SsdEntry) {
        *entry.confirmed.lock() = std::time::Instant::now();
        entry.needs_revalidation.store(false, Ordering::Relaxed);
    }

    /// `<zone>/<hh>/<hash>`: the stem of the key's files.
    fn path_of(&self, key: &ObjectKey) -> PathBuf {
        use md5::{Digest as _, Md5};
        let mut hasher = Md5::new();
        hasher.update(key.0.as_bytes());
        hasher.update([0]);
        hasher.update(key.1.as_bytes());
        let name = hex::encode(hasher.finalize());
        self.dir.join(&name[..2]).join(name)
    }
}

/// One copy in a zone, open for reading. The file stays readable while
/// the copy is open, even if it is evicted or purged meanwhile.
pub struct SsdCopy {
    zone: Arc<SsdZone>,
    key: ObjectKey,
    file: fs::File,
    body_start: u64,
    header: FileHeader,
    /// CRC32C of each [`BLOCK`] of the body, the last one possibly short.
    block_crcs: Vec<u32>,
    pub entry: Arc<SsdEntry>,
}

impl std::fmt::Debug for SsdCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SsdCopy")
            .field("path", &self.entry.path)
            .field("body_len", &self.header.body_len)
            .finish()
    }
}

impl SsdCopy {
    /// The zone the copy is in.
    pub fn zone(&self) -> &Arc<SsdZone> {
        &self.zone
    }

    /// The object's record as it was cached.
    pub fn info(&self) -> &ObjectInfo {
        &self.header.info
    }

    /// Block `index` of the body, checked against its CRC. A damaged block
    /// drops the file and is an `InvalidData` error. Blocking.
    pub fn block(&self, index: u64) -> std::io::Result<Bytes> {
        let damaged = || {
            self.zone.drop_damaged(&self.key, &self.entry);
            std::io::Error::new(std::io::ErrorKind::InvalidData, "damaged cache file")
        };
        let start = index * BLOCK;
        // The CRC count matches the body's length (read so at open).
        let Some(&expected) = self.block_crcs.get(index as usize) else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a block past the end of a cache file",
            ));
        };
        let len = BLOCK.min(self.header.body_len - start) as usize;
        let mut block = vec![0u8; len];
        if self
            .file
            .read_exact_at(&mut block, self.body_start + start)
            .is_err()
            || crc32c::crc32c(&block) != expected
        {
            return Err(damaged());
        }
        self.zone
            .bytes_read
            .fetch_add(len as u64, Ordering::Relaxed);
        Ok(Bytes::from(block))
    }

    /// The whole body, every block checked. Blocking.
    pub fn read_all(&self) -> std::io::Result<Bytes> {
        let blocks = self.header.body_len.div_ceil(BLOCK);
        if blocks == 1 {
            return self.block(0);
        }
        let mut body = Vec::with_capacity(self.header.body_len as usize);
        for index in 0..blocks {
            body.extend_from_slice(&self.block(index)?);
        }
        Ok(Bytes::from(body))
    }
}

/// Reads a file's header; `None` if the file is not a whole copy. Returns
/// the header and where the body starts.
fn read_header(file: &mut fs::File) -> Option<(FileHeader, u64)> {
    let len = file.metadata().ok()?.len();
    let mut prefix = [0u8; PREFIX_LEN];
    file.read_exact(&mut prefix).ok()?;
    if &prefix[..8] != MAGIC {
        return None;
    }
    let header_len = u32::from_le_bytes(prefix[8..12].try_into().ok()?) as usize;
    let header_crc = u32::from_le_bytes(prefix[12..16].try_into().ok()?);
    if header_len > MAX_HEADER {
        return None;
    }
    let mut encoded = vec![0u8; header_len];
    file.read_exact(&mut encoded).ok()?;
    if crc32c::crc32c(&encoded) != header_crc {
        return None;
    }
    let header: FileHeader = serde_json::from_slice(&encoded).ok()?;
    let body_start = (PREFIX_LEN + header_len) as u64;
    // A file cut short (a crash while it was written) is not worth indexing.
    let whole = len == body_start + header.body_len + crcs_len(header.body_len);
    whole.then_some((header, body_start))
}

/// A copy's file being written, a piece at a time; removed unless
/// [`ZoneWriter::finish`]ed. What is written can be read meanwhile
/// ([`ZoneWriter::body_reader`]).
pub struct ZoneWriter {
    file: Arc<fs::File>,
    tmp: PathBuf,
    path: PathBuf,
    body_start: u64,
    body_len: u64,
    written: u64,
    block_crcs: Vec<u32>,
    /// The CRC of the block being written.
    block_crc: u32,
    finished: bool,
}

impl ZoneWriter {
    /// Appends the next bytes of the body. Blocking.
    pub fn append(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        if self.written + bytes.len() as u64 > self.body_len {
            return Err(std::io::Error::other("more bytes than the record says"));
        }
        (&*self.file).write_all(bytes)?;
        while !bytes.is_empty() {
            let room = (BLOCK - self.written % BLOCK) as usize;
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            self.block_crc = crc32c::crc32c_append(self.block_crc, now);
            self.written += now.len() as u64;
            if self.written.is_multiple_of(BLOCK) || self.written == self.body_len {
                self.block_crcs.push(std::mem::take(&mut self.block_crc));
            }
            bytes = rest;
        }
        Ok(())
    }

    /// The file, to read the body written so far from: `(file, where the
    /// body starts)`. Reads use offsets (`read_at`), never the cursor.
    pub fn body_reader(&self) -> (Arc<fs::File>, u64) {
        (self.file.clone(), self.body_start)
    }

    /// Ends the file once the whole body is written: the checksums, then
    /// the rename to its name. Blocking.
    pub fn finish(mut self) -> std::io::Result<SsdEntry> {
        if self.written != self.body_len {
            return Err(std::io::Error::other("fewer bytes than the record says"));
        }
        let crcs: Vec<u8> = self
            .block_crcs
            .iter()
            .flat_map(|crc| crc.to_le_bytes())
            .collect();
        (&*self.file).write_all(&crcs)?;
        fs::rename(&self.tmp, &self.path)?;
        self.finished = true;
        Ok(SsdEntry::new(
            self.path.clone(),
            self.body_start + self.body_len + crcs.len() as u64,
            false,
        ))
    }
}

impl Drop for ZoneWriter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt as _;

    use super::*;

    /// A borrowed key finds what its owned form stored, and only that
    /// (the bytes moving between the two fields make another key).
    #[test]
    fn a_borrowed_key_finds_its_owned_form() {
        let cache = moka::sync::Cache::<ObjectKey, u32>::new(16);
        cache.insert(("ab".into(), "c".into()), 1);
        cache.insert(("a".into(), "bc".into()), 2);
        assert_eq!(cache.get(&ObjectKeyRef("ab", "c")), Some(1));
        assert_eq!(cache.get(&ObjectKeyRef("a", "bc")), Some(2));
        assert_eq!(cache.get(&ObjectKeyRef("abc", "")), None);
        cache.invalidate(&ObjectKeyRef("ab", "c"));
        assert_eq!(cache.get(&("ab".to_owned(), "c".to_owned())), None);
    }

    fn info(size: u64) -> ObjectInfo {
        ObjectInfo {
            bucket: "b".into(),
            key: "k".into(),
            size,
            etag: "e".into(),
            last_modified_ms: 1,
            meta: Default::default(),
            checksum: None,
            part_sizes: Vec::new(),
            extents: Vec::new(),
            inline: None,
            copy_nonce: None,
        }
    }

    fn open(dir: &Path) -> Arc<SsdZone> {
        SsdZone::open_loaded(dir, 64 << 20).unwrap()
    }

    fn read(zone: &Arc<SsdZone>, key: &ObjectKey) -> Option<Bytes> {
        zone.open_copy(key)?.read_all().ok()
    }

    #[test]
    fn files_survive_reopen_and_damage_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let key = ("b".to_owned(), "k".to_owned());
        let other = ("b".to_owned(), "other".to_owned());
        {
            let zone = open(dir.path());
            zone.write(&key, &info(5), b"hello").unwrap();
            zone.write(&other, &info(3), b"xyz").unwrap();
            let copy = zone.open_copy(&key).unwrap();
            assert_eq!(copy.info().etag, "e");
            assert_eq!(&copy.read_all().unwrap()[..], b"hello");
            assert!(!copy.entry.needs_revalidation.load(Ordering::Relaxed));
        }
        // Damage one file's body.
        let zone = open(dir.path());
        let path = zone.index.get(&other).unwrap().path.clone();
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&path, bytes).unwrap();

        let copy = zone.open_copy(&key).unwrap();
        assert_eq!(&copy.read_all().unwrap()[..], b"hello");
        assert!(
            copy.entry.needs_revalidation.load(Ordering::Relaxed),
            "found at start"
        );
        assert!(
            read(&zone, &other).is_none(),
            "a damaged file is never served"
        );
        assert!(zone.open_copy(&other).is_none(), "and it is dropped");

        let path = zone.index.get(&key).unwrap().path.clone();
        zone.purge(&key);
        zone.index.run_pending_tasks();
        assert!(zone.open_copy(&key).is_none());
        assert!(!path.exists(), "a purge deletes the file");
        // A second copy of a key replaces the first, file included.
        zone.write(&key, &info(2), b"v1").unwrap();
        let first = zone.index.get(&key).unwrap().path.clone();
        zone.write(&key, &info(2), b"v2").unwrap();
        zone.index.run_pending_tasks();
        assert!(!first.exists());
        assert_eq!(&read(&zone, &key).unwrap()[..], b"v2");
    }

    /// A flipped bit in a header, here in the key it names, is caught by the
    /// header's checksum: the file is neither indexed under the name it
    /// now bears nor kept.
    #[test]
    fn a_damaged_header_is_dropped_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let (a, c) = (
            ("b".to_owned(), "img/a.png".to_owned()),
            ("b".to_owned(), "img/c.png".to_owned()),
        );
        let path = {
            let zone = open(dir.path());
            zone.write(&a, &info(5), b"aaaaa").unwrap();
            zone.index.get(&a).unwrap().path.clone()
        };
        let mut bytes = fs::read(&path).unwrap();
        let header = &bytes[PREFIX_LEN..];
        let at = PREFIX_LEN
            + header
                .windows(b"img/a.png".len())
                .position(|window| window == b"img/a.png")
                .unwrap()
            + "img/".len();
        bytes[at] ^= b'a' ^ b'c';
        fs::write(&path, &bytes).unwrap();

        let zone = open(dir.path());
        assert!(
            zone.open_copy(&c).is_none(),
            "served under the flipped name"
        );
        assert!(zone.open_copy(&a).is_none());
        assert!(!path.exists(), "a file whose header fails its check goes");
    }

    /// Indexing in the background while fills run: a copy made in this run
    /// wins over the earlier run's file of the same key, which goes, and
    /// this run's files (finished or not) are left alone.
    #[test]
    fn the_loader_keeps_what_this_run_cached() {
        let dir = tempfile::tempdir().unwrap();
        let key = ("b".to_owned(), "k".to_owned());
        let other = ("b".to_owned(), "other".to_owned());
        {
            let zone = open(dir.path());
            zone.write(&key, &info(3), b"old").unwrap();
            zone.write(&other, &info(5), b"kept!").unwrap();
        }
        let zone = Arc::new(SsdZone::create(dir.path(), 64 << 20).unwrap());
        let old_file = zone_files(dir.path(), "obj");
        zone.write(&key, &info(3), b"new").unwrap();
        let unfinished = zone.begin_file(&other, &info(5)).unwrap();
        assert_eq!(
            zone.reload().unwrap(),
            1,
            "only `other` is taken from before"
        );
        zone.index.run_pending_tasks();
        assert_eq!(&read(&zone, &key).unwrap()[..], b"new");
        assert_eq!(&read(&zone, &other).unwrap()[..], b"kept!");
        let now = zone_files(dir.path(), "obj");
        assert_eq!(now.len(), 2, "the old copy of `key` went: {now:?}");
        assert!(old_file.iter().filter(|file| now.contains(file)).count() == 1);
        assert!(unfinished.tmp.exists(), "a fill of this run is not removed");
    }

    /// The files of the zone in `dir` named `*.extension`, sorted.
    fn zone_files(dir: &Path, extension: &str) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .flat_map(|shard| fs::read_dir(shard.unwrap().path()).unwrap())
            .map(|file| file.unwrap().path())
            .filter(|path| path.extension().is_some_and(|ext| ext == extension))
            .collect();
        files.sort();
        files
    }

    #[test]
    fn a_bucket_purge_drops_its_copies_only() {
        let dir = tempfile::tempdir().unwrap();
        let zone = open(dir.path());
        let gone = ("b".to_owned(), "k".to_owned());
        let kept = ("c".to_owned(), "k".to_owned());
        zone.write(&gone, &info(1), b"1").unwrap();
        zone.write(&kept, &info(1), b"2").unwrap();
        let path = zone.index.get(&gone).unwrap().path.clone();
        zone.purge_bucket("b");
        zone.index.run_pending_tasks();
        assert!(zone.open_copy(&gone).is_none());
        assert!(!path.exists(), "the file goes with it");
        assert_eq!(&read(&zone, &kept).unwrap()[..], b"2");
    }

    #[test]
    fn blocks_are_checked_one_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let zone = open(dir.path());
        let key = ("b".to_owned(), "big".to_owned());
        let body: Vec<u8> = (0..(2 * BLOCK + 10)).map(|i| (i % 251) as u8).collect();
        zone.write(&key, &info(body.len() as u64), &body).unwrap();
        let copy = zone.open_copy(&key).unwrap();
        assert_eq!(&copy.block(2).unwrap()[..], &body[2 * BLOCK as usize..]);
        assert_eq!(copy.read_all().unwrap(), body);
        assert!(copy.block(3).is_err(), "past the end");

        // Damage the middle block: the others still read, that one never.
        zone.write(&key, &info(body.len() as u64), &body).unwrap();
        let copy = zone.open_copy(&key).unwrap();
        let path = copy.entry.path.clone();
        let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(b"\xff", copy.body_start + BLOCK + 7)
            .unwrap();
        assert_eq!(&copy.block(0).unwrap()[..], &body[..BLOCK as usize]);
        let damaged = copy.block(1).unwrap_err();
        assert_eq!(damaged.kind(), std::io::ErrorKind::InvalidData);
        zone.index.run_pending_tasks();
        assert!(
            zone.open_copy(&key).is_none(),
            "the damaged file is dropped"
        );
        assert!(!path.exists());
        // A copy already open reads on: the file is unlinked, not gone.
        assert_eq!(&copy.block(2).unwrap()[..], &body[2 * BLOCK as usize..]);

        // A file from before block CRCs is dropped when the zone opens.
        let old = dir.path().join("aa");
        fs::create_dir_all(&old).unwrap();
        fs::write(old.join("x.obj"), b"STRATAC1\0\0\0\0").unwrap();
        drop((zone, copy));
        let _zone = open(dir.path());
        assert!(!old.join("x.obj").exists());
    }

    /// A copy written as its bytes arrive, in pieces that straddle blocks:
    /// what is written reads back meanwhile, the finished file is checked
    /// block by block like any other, and an unfinished one leaves nothing.
    #[test]
    fn copies_are_written_piece_by_piece() {
        use std::os::unix::fs::FileExt as _;

        let dir = tempfile::tempdir().unwrap();
        let zone = open(dir.path());
        let key = ("b".to_owned(), "spooled".to_owned());
        let body: Vec<u8> = (0..(2 * BLOCK + 77)).map(|i| (i % 253) as u8).collect();
        let mut writer = zone.begin_file(&key, &info(body.len() as u64)).unwrap();
        let (reader, body_start) = writer.body_reader();
        let mut written = 0;
        for piece in body.chunks(BLOCK as usize / 3 + 5) {
            writer.append(piece).unwrap();
            written += piece.len();
            let mut back = vec![0; written];
            reader.read_exact_at(&mut back, body_start).unwrap();
            assert_eq!(back, body[..written]);
        }
        assert!(writer.append(b"x").is_err(), "past the record's size");
        zone.insert(key.clone(), writer.finish().unwrap());
        let copy = zone.open_copy(&key).unwrap();
        assert_eq!(copy.read_all().unwrap(), body);
        assert_eq!(copy.block_crcs.len(), 3);

        let short = ("b".to_owned(), "short".to_owned());
        let mut writer = zone.begin_file(&short, &info(10)).unwrap();
        writer.append(b"12345").unwrap();
        assert!(writer.finish().is_err(), "short of the record's size");
        let mut writer = zone.begin_file(&short, &info(10)).unwrap();
        writer.append(b"12345").unwrap();
        drop(writer);
        assert_eq!(
            zone_files(dir.path(), "tmp").len(),
            0,
            "an unfinished copy leaves no file"
        );
    }
}
