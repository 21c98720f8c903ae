//! SSD zones of the edge cache: cached objects as files in a directory with
//! its own byte budget, found again after a restart.
//!
//! A file is `<zone>/<hh>/<hash>.obj`: a magic, the length of a JSON header
//! (bucket, key, the object's record, the body's CRC32C and length), the
//! header, the body. Files are written to a temporary name and renamed, so a
//! reader sees a whole file or none; a torn or corrupted file fails its
//! checksum on read and is dropped, never served.
//!
//! On start a zone reads each file's header only, to rebuild its index, and
//! marks every entry for revalidation: while the gateway was away the object
//! may have changed, so its first hit asks the store for the current ETag.
//! Eviction (moka, weighed by file size) and purges delete the file.

use std::fs;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use strata_store::ObjectInfo;

const MAGIC: &[u8; 8] = b"STRATAC1";
/// Longest header accepted when reading a file back.
const MAX_HEADER: usize = 1 << 20;

pub type ObjectKey = (String, String);

/// One file of a zone, as the index knows it.
#[derive(Debug)]
pub struct SsdEntry {
    path: PathBuf,
    len: u64,
    /// Set for entries found at start: their first hit revalidates.
    pub needs_revalidation: AtomicBool,
}

#[derive(Serialize, Deserialize)]
struct FileHeader {
    bucket: String,
    key: String,
    info: ObjectInfo,
    crc32c: u32,
    body_len: u64,
}

/// A zone: a directory of cached objects within a byte budget.
pub struct SsdZone {
    dir: PathBuf,
    index: moka::sync::Cache<ObjectKey, Arc<SsdEntry>>,
    /// Entries pushed out by the byte budget (not purges or replacements).
    pub evictions: Arc<AtomicU64>,
    /// Intact copies read back, and their bytes.
    pub reads: AtomicU64,
    pub bytes_read: AtomicU64,
}

impl SsdZone {
    /// Opens the zone in `dir` (created if missing) and indexes the files
    /// it already holds.
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<SsdZone> {
        fs::create_dir_all(dir)?;
        let evictions = Arc::new(AtomicU64::new(0));
        let evicted = evictions.clone();
        let index = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_key: &ObjectKey, entry: &Arc<SsdEntry>| {
                u32::try_from(entry.len).unwrap_or(u32::MAX)
            })
            .eviction_listener(move |_key, entry: Arc<SsdEntry>, cause| {
                // Evicted, purged or replaced: the file goes with the entry.
                let _ = fs::remove_file(&entry.path);
                if cause == moka::notification::RemovalCause::Size {
                    evicted.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build();
        let zone = SsdZone {
            dir: dir.to_owned(),
            index,
            evictions,
            reads: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
        };
        let found = zone.reload()?;
        tracing::info!(dir = %dir.display(), found, "SSD cache zone opened");
        Ok(zone)
    }

    fn reload(&self) -> std::io::Result<usize> {
        let mut found = 0;
        for shard in fs::read_dir(&self.dir)? {
            let shard = shard?.path();
            if !shard.is_dir() {
                continue;
            }
            for file in fs::read_dir(&shard)? {
                let path = file?.path();
                if path.extension().is_some_and(|ext| ext == "tmp") {
                    let _ = fs::remove_file(&path);
                    continue;
                }
                match read_header(&path) {
                    Some((header, len)) => {
                        let entry = SsdEntry {
                            path,
                            len,
                            needs_revalidation: AtomicBool::new(true),
                        };
                        self.index
                            .insert((header.bucket, header.key), Arc::new(entry));
                        found += 1;
                    }
                    None => {
                        let _ = fs::remove_file(&path);
                    }
                }
            }
        }
        Ok(found)
    }

    /// The object's record and bytes, if the zone has them intact. A file
    /// that fails its checks is dropped. Blocking: call off the runtime.
    pub fn read(&self, key: &ObjectKey) -> Option<(ObjectInfo, Bytes, Arc<SsdEntry>)> {
        let entry = self.index.get(key)?;
        match read_file(&entry.path) {
            Some((header, body)) if header.bucket == key.0 && header.key == key.1 => {
                self.reads.fetch_add(1, Ordering::Relaxed);
                self.bytes_read
                    .fetch_add(body.len() as u64, Ordering::Relaxed);
                Some((header.info, body, entry))
            }
            _ => {
                tracing::warn!(path = %entry.path.display(), "dropping a damaged cache file");
                self.index.invalidate(key);
                None
            }
        }
    }

    /// Stores a copy. Blocking: call off the runtime.
    pub fn write(&self, key: &ObjectKey, info: &ObjectInfo, body: &[u8]) -> std::io::Result<()> {
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
            info: ObjectInfo {
                inline: None,
                ..info.clone()
            },
            crc32c: crc32c::crc32c(body),
            body_len: body.len() as u64,
        };
        let encoded = serde_json::to_vec(&header).map_err(std::io::Error::other)?;
        let header_len = u32::try_from(encoded.len()).map_err(std::io::Error::other)?;
        let tmp = path.with_extension("tmp");
        {
            let mut file = fs::File::create(&tmp)?;
            file.write_all(MAGIC)?;
            file.write_all(&header_len.to_le_bytes())?;
            file.write_all(&encoded)?;
            file.write_all(body)?;
        }
        fs::rename(&tmp, &path)?;
        let len = (MAGIC.len() + 4 + encoded.len() + body.len()) as u64;
        self.index.insert(
            key.clone(),
            Arc::new(SsdEntry {
                path,
                len,
                needs_revalidation: AtomicBool::new(false),
            }),
        );
        Ok(())
    }

    pub fn purge(&self, key: &ObjectKey) {
        self.index.invalidate(key);
    }

    pub fn purge_bucket(&self, bucket: &str) {
        let bucket = bucket.to_owned();
        let _ = self
            .index
            .invalidate_entries_if(move |key, _| key.0 == bucket);
    }

    pub fn bytes(&self) -> u64 {
        self.index.weighted_size()
    }

    /// Makes every entry's next hit ask the store for the current version
    /// (changes may have gone unseen).
    pub fn revalidate_all(&self) {
        for (_, entry) in self.index.iter() {
            entry.needs_revalidation.store(true, Ordering::Relaxed);
        }
    }

    /// Marks an entry fresh after the store confirmed its version.
    pub fn confirm(entry: &SsdEntry) {
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

fn read_header(path: &Path) -> Option<(FileHeader, u64)> {
    let mut file = fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    let mut prefix = [0u8; 12];
    file.read_exact(&mut prefix).ok()?;
    if &prefix[..8] != MAGIC {
        return None;
    }
    let header_len = u32::from_le_bytes(prefix[8..12].try_into().ok()?) as usize;
    if header_len > MAX_HEADER {
        return None;
    }
    let mut encoded = vec![0u8; header_len];
    file.read_exact(&mut encoded).ok()?;
    let header: FileHeader = serde_json::from_slice(&encoded).ok()?;
    // A file cut short (a crash while it was written) is not worth indexing.
    (len == 12 + header_len as u64 + header.body_len).then_some((header, len))
}

fn read_file(path: &Path) -> Option<(FileHeader, Bytes)> {
    let bytes = fs::read(path).ok()?;
    if bytes.len() < 12 || &bytes[..8] != MAGIC {
        return None;
    }
    let header_len = u32::from_le_bytes(bytes[8..12].try_into().ok()?) as usize;
    let body_start = 12usize.checked_add(header_len)?;
    let header: FileHeader = serde_json::from_slice(bytes.get(12..body_start)?).ok()?;
    let body = bytes.get(body_start..)?;
    if body.len() as u64 != header.body_len || crc32c::crc32c(body) != header.crc32c {
        return None;
    }
    let body = Bytes::copy_from_slice(body);
    Some((header, body))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        }
    }

    #[test]
    fn files_survive_reopen_and_damage_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let key = ("b".to_owned(), "k".to_owned());
        let other = ("b".to_owned(), "other".to_owned());
        {
            let zone = SsdZone::open(dir.path(), 1 << 20).unwrap();
            zone.write(&key, &info(5), b"hello").unwrap();
            zone.write(&other, &info(3), b"xyz").unwrap();
            let (read, body, entry) = zone.read(&key).unwrap();
            assert_eq!((read.etag.as_str(), &body[..]), ("e", &b"hello"[..]));
            assert!(!entry.needs_revalidation.load(Ordering::Relaxed));
        }
        // Damage one file's body.
        let zone = SsdZone::open(dir.path(), 1 << 20).unwrap();
        let path = zone.index.get(&other).unwrap().path.clone();
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&path, bytes).unwrap();

        let (_, body, entry) = zone.read(&key).unwrap();
        assert_eq!(&body[..], b"hello");
        assert!(
            entry.needs_revalidation.load(Ordering::Relaxed),
            "found at start"
        );
        assert!(
            zone.read(&other).is_none(),
            "a damaged file is never served"
        );
        assert!(zone.read(&other).is_none());

        let path = zone.index.get(&key).unwrap().path.clone();
        zone.purge(&key);
        zone.index.run_pending_tasks();
        assert!(zone.read(&key).is_none());
        assert!(!path.exists(), "a purge deletes the file");
        // A second copy of a key replaces the first, file included.
        zone.write(&key, &info(2), b"v1").unwrap();
        let first = zone.index.get(&key).unwrap().path.clone();
        zone.write(&key, &info(2), b"v2").unwrap();
        zone.index.run_pending_tasks();
        assert!(!first.exists());
        assert_eq!(&zone.read(&key).unwrap().1[..], b"v2");
    }
}
