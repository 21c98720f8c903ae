//! Staging: streaming a body into pool extents while hashing it.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use strata_pool::{MAX_EXTENT_LEN, Pool};
use tokio::task::JoinHandle;

use crate::checksum::{BodyHasher, ChecksumAlgorithm, Digests};
use crate::error::StoreError;
use crate::records::ExtentRef;

/// What the door wants measured while a body is staged.
#[derive(Debug, Clone, Default)]
pub struct StageOptions {
    /// Also compute SHA-256 (to check a SigV4 signed payload).
    pub sha256: bool,
    /// Also compute this checksum.
    pub checksum: Option<ChecksumAlgorithm>,
    /// Refuse bodies longer than this.
    pub max_size: u64,
}

/// A body written to the pool but referenced by nothing yet. Committing it (put or
/// upload part) hands its extents to a record; dropping it uncommitted deletes them.
pub struct StagedBody {
    pub size: u64,
    pub digests: Digests,
    pub(crate) extents: Vec<ExtentRef>,
    /// The whole body when it was small enough to keep in the metadata record.
    pub(crate) inline: Option<Bytes>,
    /// The tag of its extents' ids: the hash of the bucket it was staged
    /// for ([`crate::routed::bucket_hash`]).
    tag: u32,
    pool: Arc<dyn Pool>,
}

impl StagedBody {
    /// Refuses a commit into another bucket than the body was staged for:
    /// its extents' tag would put them in the orphan sweep of another
    /// index group than the one whose records name them.
    pub(crate) fn check_bucket(&self, bucket: &str) -> Result<(), StoreError> {
        if self.tag != crate::routed::bucket_hash(bucket) {
            return Err(StoreError::Internal(format!(
                "a body staged for another bucket was committed to {bucket}"
            )));
        }
        Ok(())
    }

    /// Hands the extents over to a record; the caller now owns their lifetime.
    pub(crate) fn take_extents(mut self) -> Vec<ExtentRef> {
        std::mem::take(&mut self.extents)
    }
}

impl Drop for StagedBody {
    fn drop(&mut self) {
        if self.extents.is_empty() {
            return;
        }
        delete_in_background(self.pool.clone(), std::mem::take(&mut self.extents));
    }
}

fn delete_in_background(pool: Arc<dyn Pool>, extents: Vec<ExtentRef>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(delete_unused(pool, extents));
}

async fn delete_unused(pool: Arc<dyn Pool>, extents: Vec<ExtentRef>) {
    for extent in extents {
        if let Err(err) = pool.delete_extent(extent.id).await {
            tracing::warn!(extent = %extent.id, error = %err, "could not delete unused extent");
        }
    }
}

/// Why staging failed: the body stream's own error, or the store's.
#[derive(Debug)]
pub enum StageError<E> {
    Body(E),
    Store(StoreError),
}

/// Bodies below this are hashed on the request's task; larger extents are hashed on
/// a blocking thread so MD5 over 4 MiB does not stall the async workers.
const INLINE_HASH_LEN: usize = 64 * 1024;

/// An extent being hashed and written. When a staging is dropped before it
/// awaited this (its caller was cancelled: a client went away, an FTP
/// upload was aborted), the write still lands; the extent is then deleted,
/// rather than left to the orphan sweep a day later.
struct InFlight {
    write: Option<JoinHandle<(BodyHasher, Result<ExtentRef, StoreError>)>>,
    pool: Arc<dyn Pool>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let Some(write) = self.write.take() else {
            return;
        };
        let pool = self.pool.clone();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            if let Ok((_, Ok(extent))) = write.await {
                delete_unused(pool, vec![extent]).await;
            }
        });
    }
}

/// Streams `body` into pool extents, their ids tagged with `bucket`'s hash.
/// A body of at most `inline_max` bytes is kept in memory instead, to be
/// stored inside its metadata record.
pub(crate) async fn stage<S, E>(
    pool: Arc<dyn Pool>,
    bucket: &str,
    body: S,
    options: &StageOptions,
    inline_max: usize,
) -> Result<StagedBody, StageError<E>>
where
    S: Stream<Item = Result<Bytes, E>>,
{
    let mut staged = StagedBody {
        size: 0,
        digests: Digests {
            md5: [0; 16],
            sha256: None,
            checksum: None,
        },
        extents: Vec::new(),
        inline: None,
        tag: crate::routed::bucket_hash(bucket),
        pool: pool.clone(),
    };
    let tag = staged.tag;
    let mut hasher = Some(BodyHasher::new(options.sha256, options.checksum));
    let mut buffer = BytesMut::new();
    // At most one extent is being hashed and written while the next one fills.
    let mut in_flight: Option<InFlight> = None;
    let mut body = std::pin::pin!(body);

    let filled: Result<(), StageError<E>> = async {
        loop {
            let next = body.next().await;
            let at_end = next.is_none();
            if let Some(chunk) = next {
                let mut chunk = chunk.map_err(StageError::Body)?;
                staged.size += chunk.len() as u64;
                if staged.size > options.max_size {
                    return Err(StageError::Store(StoreError::TooLarge(options.max_size)));
                }
                while !chunk.is_empty() {
                    let room = MAX_EXTENT_LEN - buffer.len();
                    let take = room.min(chunk.len());
                    buffer.extend_from_slice(&chunk.split_to(take));
                    if buffer.len() == MAX_EXTENT_LEN {
                        let full = buffer.split().freeze();
                        let previous = in_flight.take();
                        let hasher_now = match previous {
                            Some(handle) => finish_in_flight(handle, &mut staged).await?,
                            None => take_hasher(&mut hasher)?,
                        };
                        in_flight = Some(spawn_extent(pool.clone(), tag, hasher_now, full));
                    }
                }
            }
            if at_end {
                break;
            }
        }
        Ok(())
    }
    .await;
    if let Err(err) = filled {
        // Let the extent in flight land so the drop of `staged` deletes it too.
        if let Some(handle) = in_flight.take() {
            let _ = finish_in_flight::<E>(handle, &mut staged).await;
        }
        return Err(err);
    }

    if in_flight.is_none() && buffer.len() <= inline_max {
        let mut small_hasher = take_hasher(&mut hasher)?;
        small_hasher.update(&buffer);
        staged.digests = small_hasher.finish();
        staged.inline = Some(buffer.freeze());
        return Ok(staged);
    }
    let mut final_hasher = match in_flight.take() {
        Some(handle) => finish_in_flight(handle, &mut staged).await?,
        None => take_hasher(&mut hasher)?,
    };
    if !buffer.is_empty() {
        let tail = buffer.freeze();
        let handle = spawn_extent(pool, tag, final_hasher, tail);
        final_hasher = finish_in_flight(handle, &mut staged).await?;
    }
    staged.digests = final_hasher.finish();
    Ok(staged)
}

fn take_hasher<E>(hasher: &mut Option<BodyHasher>) -> Result<BodyHasher, StageError<E>> {
    hasher
        .take()
        .ok_or_else(|| StageError::Store(StoreError::Internal("hasher lost".into())))
}

async fn finish_in_flight<E>(
    mut in_flight: InFlight,
    staged: &mut StagedBody,
) -> Result<BodyHasher, StageError<E>> {
    let Some(write) = in_flight.write.as_mut() else {
        return Err(StageError::Store(StoreError::Internal(
            "extent write lost".into(),
        )));
    };
    // Awaited in place, so that a cancellation here leaves it to `Drop`.
    let joined = write.await;
    in_flight.write = None;
    let (hasher, extent) =
        joined.map_err(|err| StageError::Store(StoreError::Internal(err.to_string())))?;
    staged.extents.push(extent.map_err(StageError::Store)?);
    Ok(hasher)
}

fn spawn_extent(pool: Arc<dyn Pool>, tag: u32, mut hasher: BodyHasher, data: Bytes) -> InFlight {
    let writer = pool.clone();
    let write = tokio::spawn(async move {
        let len = data.len() as u64;
        let write = writer.write_extent(data.clone(), tag);
        let hashed = async {
            if data.len() <= INLINE_HASH_LEN {
                hasher.update(&data);
                Ok(hasher)
            } else {
                tokio::task::spawn_blocking(move || {
                    hasher.update(&data);
                    hasher
                })
                .await
            }
        };
        let (written, hashed) = tokio::join!(write, hashed);
        let hasher = match hashed {
            Ok(hasher) => hasher,
            // Hashing cannot fail; a panic there is a bug, but never lose the error.
            Err(err) => {
                return (
                    BodyHasher::new(false, None),
                    Err(StoreError::Internal(format!("hashing task failed: {err}"))),
                );
            }
        };
        let extent = written
            .map(|id| ExtentRef { id, len })
            .map_err(StoreError::from);
        (hasher, extent)
    });
    InFlight {
        write: Some(write),
        pool,
    }
}
