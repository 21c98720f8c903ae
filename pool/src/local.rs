//! The embedded pool engine: one file per extent under `<dir>/extents/<xx>/`.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use bytes::Bytes;

use crate::extent_file::{self, FormatError};
use crate::{
    ExtentFilter, ExtentId, ExtentLeads, LeadCounts, MAX_EXTENT_LEN, Pool, PoolError, Result,
};

/// Configuration of [`LocalPool`].
#[derive(Debug, Clone)]
pub struct LocalPoolConfig {
    /// Directory that holds the extent files; created if missing.
    pub dir: PathBuf,
}

/// One node's extents on a local file system. Cheap to clone.
#[derive(Clone)]
pub struct LocalPool {
    inner: Arc<Inner>,
}

struct Inner {
    extents_dir: PathBuf,
    poisoned: AtomicBool,
}

impl LocalPool {
    /// Opens (creating if needed) the pool directory and its 256 fan-out directories,
    /// fsyncing them so later extent writes only need to sync their own directory.
    pub fn open(config: LocalPoolConfig) -> Result<Self> {
        let extents_dir = config.dir.join("extents");
        fs::create_dir_all(&extents_dir)?;
        for byte in 0..=255u8 {
            let sub = extents_dir.join(format!("{byte:02x}"));
            if !sub.exists() {
                fs::create_dir(&sub)?;
            }
        }
        sync_dir(&extents_dir)?;
        sync_dir(&config.dir)?;
        // The pool's own entry, which `create_dir_all` may just have made:
        // lost in a crash, it would take every extent below with it.
        if let Some(parent) = config
            .dir
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            sync_dir(parent)?;
        }
        Ok(LocalPool {
            inner: Arc::new(Inner {
                extents_dir,
                poisoned: AtomicBool::new(false),
            }),
        })
    }

    fn path_of(&self, id: ExtentId) -> PathBuf {
        extent_path(&self.inner.extents_dir, id)
    }
}

impl LocalPool {
    /// Whether a failed fsync poisoned the pool: it takes no more writes
    /// until the process restarts.
    pub fn is_poisoned(&self) -> bool {
        self.inner.poisoned.load(Ordering::Acquire)
    }

    /// Stores `data` under a given id, replacing any copy already there: how a
    /// storage node takes a replica (the id was chosen by the writer) and how a
    /// damaged copy is repaired. The data goes to a temporary file that is
    /// fsynced and then renamed over the id, so a reader sees the old copy or
    /// the new one, never a torn mix.
    pub async fn put_extent(&self, id: ExtentId, data: Bytes) -> Result<()> {
        if data.len() > MAX_EXTENT_LEN {
            return Err(PoolError::TooLarge(data.len()));
        }
        if self.inner.poisoned.load(Ordering::Acquire) {
            return Err(PoolError::Poisoned);
        }
        let inner = self.inner.clone();
        blocking(move || {
            let path = extent_path(&inner.extents_dir, id);
            let temp = path.with_file_name(format!(".{id}.{:016x}", rand::random::<u64>()));
            // A failed write (a full disk, say) leaves nothing behind and the
            // pool usable; a failed fsync poisons it.
            let written = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temp)
                .and_then(|mut file| {
                    extent_file::write(&mut file, &data)?;
                    Ok(file)
                });
            let file = match written {
                Ok(file) => file,
                Err(err) => {
                    let _ = fs::remove_file(&temp);
                    return Err(PoolError::Io(err));
                }
            };
            if let Err(err) = file.sync_data() {
                let _ = fs::remove_file(&temp);
                return Err(poison(&inner, err));
            }
            if let Err(err) = fs::rename(&temp, &path) {
                let _ = fs::remove_file(&temp);
                return Err(PoolError::Io(err));
            }
            if let Some(parent) = path.parent()
                && let Err(err) = sync_dir(parent)
            {
                return Err(poison(&inner, err));
            }
            Ok(())
        })
        .await
    }

    /// The whole extent, every block verified.
    pub async fn read_whole(&self, id: ExtentId) -> Result<Bytes> {
        let path = self.path_of(id);
        blocking(move || {
            let file = open_extent(&path, id)?;
            match extent_file::read_all(&file)? {
                Ok(bytes) => Ok(Bytes::from(bytes)),
                Err(format_err) => Err(corrupt(id, format_err)),
            }
        })
        .await
    }

    /// Moves a damaged extent out of the way (into `quarantine/`), for
    /// operators to look at; the id then reads as missing and is repaired
    /// from another copy. The file is checked first: a good copy that
    /// replaced the damaged one since it was found (a repair) stays, also one
    /// that lands between the check and the move. Returns whether a damaged
    /// file was moved.
    pub async fn quarantine(&self, id: ExtentId) -> Result<bool> {
        let path = self.path_of(id);
        let quarantine = self.inner.extents_dir.with_file_name("quarantine");
        blocking(move || {
            let file = match File::open(&path) {
                Ok(file) => file,
                Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(err) => return Err(err.into()),
            };
            if extent_file::read_all(&file)?.is_ok() {
                return Ok(false);
            }
            fs::create_dir_all(&quarantine)?;
            let moved_to = quarantine.join(id.to_hex());
            match fs::rename(&path, &moved_to) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(err) => return Err(err.into()),
            }
            let checked = file.metadata()?;
            let moved = fs::metadata(&moved_to)?;
            if (moved.dev(), moved.ino()) != (checked.dev(), checked.ino()) {
                // Written after the check: a good copy (extents are
                // immutable, every copy holds the same bytes). It goes back.
                fs::rename(&moved_to, &path)?;
                return Ok(false);
            }
            Ok(true)
        })
        .await
    }

    /// The data length of the extent's file, if there is one (no data read).
    pub fn stored_len(&self, id: ExtentId) -> Option<u64> {
        fs::metadata(self.path_of(id))
            .ok()
            .map(|meta| extent_file::data_len(meta.len()))
    }

    /// Folds into `found` the extents the filter names, in one walk of the
    /// directories of its first bytes, and removes the temporary files
    /// older than it of writes a crash interrupted.
    async fn visit_filtered<T: Send + 'static>(
        &self,
        filter: ExtentFilter,
        mut found: T,
        mut add: impl FnMut(&mut T, ExtentId) + Send + 'static,
    ) -> Result<T> {
        let extents_dir = self.inner.extents_dir.clone();
        blocking(move || {
            walk(&extents_dir, &filter.leads, |entry, name| {
                // Files come and go during the walk (writes renaming their
                // temporary file, deletions): a vanished one is skipped.
                let modified = match entry.metadata().and_then(|meta| meta.modified()) {
                    Ok(modified) => modified,
                    Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
                    Err(err) => return Err(err),
                };
                if modified >= filter.older_than {
                    return Ok(());
                }
                if let Some(id) = ExtentId::from_hex(name) {
                    if filter.covers(id) {
                        add(&mut found, id);
                    }
                } else if name.starts_with('.') {
                    let _ = fs::remove_file(entry.path());
                }
                Ok(())
            })?;
            Ok(found)
        })
        .await
    }

    /// Every extent id held, with its data length (from the file's size),
    /// and removes the temporary files of writes a crash interrupted. One
    /// directory walk; no data read.
    pub async fn scan(&self) -> Result<Vec<(ExtentId, u64)>> {
        let extents_dir = self.inner.extents_dir.clone();
        blocking(move || {
            let mut found = Vec::new();
            walk(&extents_dir, &crate::ALL_LEADS, |entry, name| {
                if name.starts_with('.') {
                    let _ = fs::remove_file(entry.path());
                } else if let Some(id) = ExtentId::from_hex(name) {
                    match entry.metadata() {
                        Ok(meta) => found.push((id, extent_file::data_len(meta.len()))),
                        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                        Err(err) => return Err(err),
                    }
                }
                Ok(())
            })?;
            Ok(found)
        })
        .await
    }
}

/// Calls `visit` with every file in the fan-out directories of the first
/// bytes in `leads`, and its name.
fn walk(
    extents_dir: &Path,
    leads: &ExtentLeads,
    mut visit: impl FnMut(&fs::DirEntry, &str) -> io::Result<()>,
) -> io::Result<()> {
    for fan_out in fs::read_dir(extents_dir)? {
        let fan_out = fan_out?;
        if !fan_out.file_type()?.is_dir() {
            continue;
        }
        let lead = fan_out
            .file_name()
            .to_str()
            .and_then(|name| u8::from_str_radix(name, 16).ok());
        if lead.is_some_and(|lead| !leads.contains(&lead)) {
            continue;
        }
        for entry in fs::read_dir(fan_out.path())? {
            let entry = entry?;
            if let Some(name) = entry.file_name().to_str() {
                visit(&entry, name)?;
            }
        }
    }
    Ok(())
}

fn corrupt(id: ExtentId, format_err: FormatError) -> PoolError {
    PoolError::Corrupt {
        id,
        detail: format!("{format_err:?}"),
    }
}

/// After a failed fsync the kernel may have dropped dirty pages: nothing
/// written since can be trusted, so every later write is refused.
fn poison(inner: &Inner, err: io::Error) -> PoolError {
    inner.poisoned.store(true, Ordering::Release);
    tracing::error!(error = %err, "fsync failed, pool poisoned");
    PoolError::Io(err)
}

fn open_extent(path: &Path, id: ExtentId) -> Result<File> {
    match File::open(path) {
        Ok(file) => Ok(file),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Err(PoolError::NotFound(id)),
        Err(err) => Err(err.into()),
    }
}

fn extent_path(extents_dir: &Path, id: ExtentId) -> PathBuf {
    let hex = id.to_hex();
    extents_dir.join(&hex[..2]).join(hex)
}

/// Makes a directory's entries durable: what a rename or a creation in it
/// needs before it is acknowledged.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(join_err) => Err(PoolError::Io(io::Error::other(join_err))),
    }
}

#[async_trait]
impl Pool for LocalPool {
    async fn write_extent(&self, data: Bytes, tag: u32) -> Result<ExtentId> {
        let id = ExtentId::random_tagged(tag);
        self.put_extent(id, data).await?;
        Ok(id)
    }

    async fn read_extent(&self, id: ExtentId, offset: u64, len: u64) -> Result<Bytes> {
        let path = self.path_of(id);
        blocking(move || {
            let file = open_extent(&path, id)?;
            match extent_file::read_range(&file, offset, len)? {
                Ok(bytes) => Ok(Bytes::from(bytes)),
                Err(FormatError::OutOfRange { extent_len }) => Err(PoolError::OutOfRange {
                    id,
                    offset,
                    len,
                    extent_len,
                }),
                Err(format_err) => Err(corrupt(id, format_err)),
            }
        })
        .await
    }

    async fn list_extents(&self, filter: &ExtentFilter) -> Result<Vec<ExtentId>> {
        self.visit_filtered(filter.clone(), Vec::new(), |found, id| found.push(id))
            .await
    }

    async fn count_extents(&self, filter: &ExtentFilter) -> Result<LeadCounts> {
        self.visit_filtered(filter.clone(), [0; 256], |counts, id| {
            counts[usize::from(id.lead())] += 1;
        })
        .await
    }

    async fn delete_extent(&self, id: ExtentId) -> Result<()> {
        let path = self.path_of(id);
        blocking(move || match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(err.into()),
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    fn open(dir: &Path) -> LocalPool {
        LocalPool::open(LocalPoolConfig {
            dir: dir.to_path_buf(),
        })
        .unwrap()
    }

    #[tokio::test]
    async fn listing_finds_old_extents_of_the_tags_asked_only() {
        let tmp = tempfile::tempdir().unwrap();
        let pool = open(tmp.path());
        let id = pool
            .write_extent(Bytes::from_static(b"x"), 7)
            .await
            .unwrap();
        assert_eq!(id.tag(), 7);
        let other = pool
            .write_extent(Bytes::from_static(b"y"), 8)
            .await
            .unwrap();
        let later = ExtentFilter::older_than(SystemTime::now() + Duration::from_secs(1));
        let mut all = pool.list_extents(&later).await.unwrap();
        all.sort();
        let mut both = vec![id, other];
        both.sort();
        assert_eq!(all, both);
        let tagged = |tags| later.clone().tags(tags);
        assert_eq!(pool.list_extents(&tagged(0..=7)).await.unwrap(), vec![id]);
        assert_eq!(
            pool.list_extents(&tagged(8..=8)).await.unwrap(),
            vec![other]
        );
        let earlier = ExtentFilter::older_than(SystemTime::now() - Duration::from_secs(3600));
        assert!(pool.list_extents(&earlier).await.unwrap().is_empty());
        assert_eq!(pool.count_extents(&earlier).await.unwrap(), [0; 256]);
    }

    /// Spans of first bytes split a listing without overlap, and the counts
    /// by first byte are what the listings hold.
    #[tokio::test]
    async fn spans_of_first_bytes_split_listings_and_counts() {
        let tmp = tempfile::tempdir().unwrap();
        let pool = open(tmp.path());
        let mut written = Vec::new();
        for tag in 0..64 {
            let id = pool.write_extent(Bytes::from_static(b"z"), tag % 2).await;
            written.push(id.unwrap());
        }
        written.sort();
        let later = ExtentFilter::older_than(SystemTime::now() + Duration::from_secs(1));
        let counts = pool.count_extents(&later).await.unwrap();
        assert_eq!(counts.iter().sum::<u64>(), 64);
        let mut halves = Vec::new();
        for leads in [0..=0x7f, 0x80..=0xff] {
            let half = pool.list_extents(&later.clone().leads(leads.clone())).await;
            let half = half.unwrap();
            assert!(half.iter().all(|id| leads.contains(&id.lead())), "{half:?}");
            let counted = pool
                .count_extents(&later.clone().leads(leads.clone()))
                .await;
            let counted = counted.unwrap();
            for lead in 0..=255u8 {
                let expected = match leads.contains(&lead) {
                    true => half.iter().filter(|id| id.lead() == lead).count() as u64,
                    false => 0,
                };
                assert_eq!(counted[usize::from(lead)], expected, "first byte {lead}");
                if leads.contains(&lead) {
                    assert_eq!(counted[usize::from(lead)], counts[usize::from(lead)]);
                }
            }
            halves.extend(half);
        }
        halves.sort();
        assert_eq!(halves, written);
        let odd = later.clone().tags(1..=1).leads(0..=0x7f);
        let listed = pool.list_extents(&odd).await.unwrap();
        assert!(listed.iter().all(|id| id.tag() == 1 && id.lead() <= 0x7f));
        let counted = pool.count_extents(&odd).await.unwrap();
        assert_eq!(counted.iter().sum::<u64>(), listed.len() as u64);
    }

    #[tokio::test]
    async fn write_read_delete() {
        let tmp = tempfile::tempdir().unwrap();
        let pool = open(tmp.path());
        let data = Bytes::from(vec![7u8; 100_000]);
        let id = pool.write_extent(data.clone(), 0).await.unwrap();
        assert_eq!(pool.read_extent(id, 0, 100_000).await.unwrap(), data);
        assert_eq!(
            pool.read_extent(id, 99_990, 10).await.unwrap(),
            data.slice(99_990..)
        );
        assert!(matches!(
            pool.read_extent(id, 99_990, 11).await,
            Err(PoolError::OutOfRange { .. })
        ));

        // A reopened pool sees the same extent.
        let reopened = open(tmp.path());
        assert_eq!(
            reopened.read_extent(id, 0, 3).await.unwrap(),
            data.slice(..3)
        );

        pool.delete_extent(id).await.unwrap();
        pool.delete_extent(id).await.unwrap();
        assert!(matches!(
            pool.read_extent(id, 0, 1).await,
            Err(PoolError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn put_by_id_replaces_and_scan_finds_it() {
        let tmp = tempfile::tempdir().unwrap();
        let pool = open(tmp.path());
        let id = ExtentId::random();
        pool.put_extent(id, Bytes::from_static(b"first"))
            .await
            .unwrap();
        pool.put_extent(id, Bytes::from_static(b"second"))
            .await
            .unwrap();
        assert_eq!(pool.read_whole(id).await.unwrap(), &b"second"[..]);
        // A temporary file left by a crash is not an extent, and goes.
        let stale = pool.path_of(id).with_file_name(".stale.tmp");
        fs::write(&stale, b"torn").unwrap();
        let found = pool.scan().await.unwrap();
        assert_eq!(found, vec![(id, b"second".len() as u64)]);
        assert!(!stale.exists());
        // A good copy is not quarantined (a repair may replace a damaged
        // one between its discovery and the quarantine).
        assert!(!pool.quarantine(id).await.unwrap());
        assert_eq!(pool.stored_len(id), Some(b"second".len() as u64));
        let mut damaged = fs::read(pool.path_of(id)).unwrap();
        damaged[0] ^= 0xff;
        fs::write(pool.path_of(id), damaged).unwrap();
        assert!(pool.quarantine(id).await.unwrap());
        assert_eq!(pool.stored_len(id), None);
        assert!(matches!(
            pool.read_whole(id).await,
            Err(PoolError::NotFound(_))
        ));
        assert!(tmp.path().join("quarantine").join(id.to_hex()).exists());
    }

    #[tokio::test]
    async fn oversized_extents_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let pool = open(tmp.path());
        let data = Bytes::from(vec![0u8; MAX_EXTENT_LEN + 1]);
        assert!(matches!(
            pool.write_extent(data, 0).await,
            Err(PoolError::TooLarge(_))
        ));
    }

    #[tokio::test]
    async fn corrupt_extent_is_never_served() {
        let tmp = tempfile::tempdir().unwrap();
        let pool = open(tmp.path());
        let id = pool
            .write_extent(Bytes::from_static(b"hello world"), 0)
            .await
            .unwrap();
        let path = pool.path_of(id);
        let mut bytes = fs::read(&path).unwrap();
        bytes[0] ^= 1;
        fs::write(&path, bytes).unwrap();
        assert!(matches!(
            pool.read_extent(id, 0, 5).await,
            Err(PoolError::Corrupt { .. })
        ));
    }
}
