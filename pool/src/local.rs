//! The embedded pool engine: one file per extent under `<dir>/extents/<xx>/`.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use bytes::Bytes;

use crate::extent_file::{self, FormatError};
use crate::{ExtentId, MAX_EXTENT_LEN, Pool, PoolError, Result};

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

fn extent_path(extents_dir: &Path, id: ExtentId) -> PathBuf {
    let hex = id.to_hex();
    extents_dir.join(&hex[..2]).join(hex)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
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
    async fn write_extent(&self, data: Bytes) -> Result<ExtentId> {
        if data.len() > MAX_EXTENT_LEN {
            return Err(PoolError::TooLarge(data.len()));
        }
        if self.inner.poisoned.load(Ordering::Acquire) {
            return Err(PoolError::Poisoned);
        }
        let inner = self.inner.clone();
        blocking(move || {
            let id = ExtentId::random();
            let path = extent_path(&inner.extents_dir, id);
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)?;
            extent_file::write(&mut file, &data)?;
            let synced = file.sync_data().and_then(|()| match path.parent() {
                Some(parent) => sync_dir(parent),
                None => Ok(()),
            });
            if let Err(err) = synced {
                // After a failed fsync the kernel may have dropped dirty pages: nothing
                // written since can be trusted, so refuse all further writes.
                inner.poisoned.store(true, Ordering::Release);
                tracing::error!(error = %err, "fsync failed, pool poisoned");
                return Err(PoolError::Io(err));
            }
            Ok(id)
        })
        .await
    }

    async fn read_extent(&self, id: ExtentId, offset: u64, len: u64) -> Result<Bytes> {
        let path = self.path_of(id);
        blocking(move || {
            let file = match File::open(&path) {
                Ok(file) => file,
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    return Err(PoolError::NotFound(id));
                }
                Err(err) => return Err(err.into()),
            };
            match extent_file::read_range(&file, offset, len)? {
                Ok(bytes) => Ok(Bytes::from(bytes)),
                Err(FormatError::OutOfRange { extent_len }) => Err(PoolError::OutOfRange {
                    id,
                    offset,
                    len,
                    extent_len,
                }),
                Err(format_err) => Err(PoolError::Corrupt {
                    id,
                    detail: format!("{format_err:?}"),
                }),
            }
        })
        .await
    }

    async fn list_extents(&self, older_than: std::time::SystemTime) -> Result<Vec<ExtentId>> {
        let extents_dir = self.inner.extents_dir.clone();
        blocking(move || {
            let mut found = Vec::new();
            for fan_out in fs::read_dir(&extents_dir)? {
                let fan_out = fan_out?;
                if !fan_out.file_type()?.is_dir() {
                    continue;
                }
                for entry in fs::read_dir(fan_out.path())? {
                    let entry = entry?;
                    let Some(id) = entry.file_name().to_str().and_then(ExtentId::from_hex) else {
                        continue;
                    };
                    if entry.metadata()?.modified()? < older_than {
                        found.push(id);
                    }
                }
            }
            Ok(found)
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
    use super::*;

    fn open(dir: &Path) -> LocalPool {
        LocalPool::open(LocalPoolConfig {
            dir: dir.to_path_buf(),
        })
        .unwrap()
    }

    #[tokio::test]
    async fn listing_finds_old_extents_only() {
        let tmp = tempfile::tempdir().unwrap();
        let pool = open(tmp.path());
        let id = pool.write_extent(Bytes::from_static(b"x")).await.unwrap();
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(1);
        assert_eq!(pool.list_extents(later).await.unwrap(), vec![id]);
        let earlier = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        assert!(pool.list_extents(earlier).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn write_read_delete() {
        let tmp = tempfile::tempdir().unwrap();
        let pool = open(tmp.path());
        let data = Bytes::from(vec![7u8; 100_000]);
        let id = pool.write_extent(data.clone()).await.unwrap();
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
    async fn oversized_extents_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let pool = open(tmp.path());
        let data = Bytes::from(vec![0u8; MAX_EXTENT_LEN + 1]);
        assert!(matches!(
            pool.write_extent(data).await,
            Err(PoolError::TooLarge(_))
        ));
    }

    #[tokio::test]
    async fn corrupt_extent_is_never_served() {
        let tmp = tempfile::tempdir().unwrap();
        let pool = open(tmp.path());
        let id = pool
            .write_extent(Bytes::from_static(b"hello world"))
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
