//! The ring as cluster metadata. A gateway picks up its ring file when an
//! operator rewrites it (`strata ring rebalance`), and keeps the newest ring
//! it has in the metadata service's catalog (`cluster/ring`); every gateway
//! takes a newer ring from there as soon as the change feed brings it, and
//! hands it to the storage nodes. So a ring rewritten beside one gateway
//! reaches every gateway and node without copying files, and a gateway
//! restarted with an old ring file starts with the cluster's.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use strata_pool::RingPool;
use strata_ring::Ring;
use strata_store::{CatalogWrite, ChangeEvent, ChangeKind, Store, WeakStore};
use tokio::sync::broadcast::error::RecvError;

use crate::cluster_cli::load_ring;
use crate::directory::NS_CLUSTER;

/// The ring's key in the catalog's `cluster` namespace.
pub const RING_KEY: &str = "ring";

/// How often the ring file is looked at, and a ring not yet taken from or
/// kept in the metadata is tried again.
const TICK: Duration = Duration::from_secs(2);

/// Brings the pool's ring and the catalog's to the newer of the two, then
/// follows both the catalog and the ring file at `path` (from its state
/// when the pool loaded it, `loaded`). Fails only when the catalog keeps a
/// ring of another cluster (the metadata service is another cluster's);
/// what the metadata service could not answer now is tried again later.
pub async fn share(
    store: &Store,
    pool: &RingPool,
    path: PathBuf,
    loaded: Option<FileStamp>,
) -> anyhow::Result<()> {
    // Subscribed first: no change falls between the read and the follow.
    let changes = store.subscribe();
    let mut state = Pending::default();
    match adopt_kept(store, pool).await {
        Err(Adopt::ForeignCluster(why)) => {
            anyhow::bail!("the metadata service keeps another cluster's ring: {why}")
        }
        Err(Adopt::Unavailable(why)) => {
            tracing::warn!(error = %why, "the ring in the metadata not read yet");
            state.adopt = true;
        }
        Ok(()) => {}
    }
    if let Err(err) = publish(store, pool).await {
        tracing::warn!(error = %format!("{err:#}"), "ring not kept in the metadata yet");
        state.publish = true;
    }
    tokio::spawn(follow(
        store.downgrade(),
        pool.clone(),
        changes,
        path,
        loaded,
        state,
    ));
    Ok(())
}

/// What is left to do with the metadata once it answers.
#[derive(Default)]
struct Pending {
    /// Take the catalog's ring, if newer.
    adopt: bool,
    /// Keep this gateway's ring there, if newer.
    publish: bool,
}

enum Adopt {
    ForeignCluster(String),
    Unavailable(String),
}

/// Takes the catalog's ring if it is newer than the pool's, and hands it to
/// the nodes; whether it did. A ring there that cannot be read (damaged, or
/// of a format this gateway does not know) or of another part power is left
/// with a warning: this gateway keeps its own.
async fn adopt_kept(store: &Store, pool: &RingPool) -> Result<(), Adopt> {
    let kept = store
        .catalog_get(NS_CLUSTER, RING_KEY)
        .await
        .map_err(|err| Adopt::Unavailable(err.to_string()))?;
    let Some(kept) = kept else {
        return Ok(());
    };
    let ring = match Ring::from_bytes(&kept) {
        Ok(ring) => ring,
        Err(err) => {
            tracing::warn!(error = %err, "the ring in the metadata does not read: ignored");
            return Ok(());
        }
    };
    // Told apart from the other refusals of `set_ring`: it stops a start.
    if let Err(err) = pool.ring().ensure_cluster(ring.cluster_id()) {
        return Err(Adopt::ForeignCluster(err.to_string()));
    }
    match pool.set_ring(ring) {
        Ok(true) => {
            tracing::info!(
                version = pool.ring().version(),
                "newer ring taken from the metadata"
            );
            pool.announce_ring().await;
        }
        Ok(false) => {}
        Err(err) => {
            tracing::warn!(error = %err, "the ring in the metadata cannot replace this one")
        }
    }
    Ok(())
}

/// What keeping a ring in the catalog found there.
enum Published {
    Kept,
    AsNew,
    /// The same version, other assignments: two rings were built apart.
    Differs,
    /// A ring of a format this gateway cannot read (a newer gateway's).
    Unreadable,
}

/// Keeps the pool's ring in the catalog unless the catalog's is as new (or
/// is one this gateway cannot read).
async fn publish(store: &Store, pool: &RingPool) -> anyhow::Result<()> {
    let ring = pool.ring();
    let (version, cluster, bytes) = (
        ring.version(),
        ring.cluster_id().to_owned(),
        ring.to_bytes(),
    );
    let outcome = store
        .catalog_update(NS_CLUSTER, RING_KEY, move |current| {
            let (write, outcome) = match current.map(|kept| (kept, Ring::from_bytes(kept))) {
                // Another cluster's ring is never replaced (`adopt_kept`
                // refused it already; this is a race with its writer).
                Some((_, Ok(kept))) if kept.cluster_id() != cluster => {
                    (CatalogWrite::Keep, Published::AsNew)
                }
                Some((kept, Ok(parsed))) if parsed.version() == version && kept != &bytes[..] => {
                    (CatalogWrite::Keep, Published::Differs)
                }
                Some((_, Ok(kept))) if kept.version() >= version => {
                    (CatalogWrite::Keep, Published::AsNew)
                }
                Some((_, Err(strata_ring::RingError::UnsupportedFormat(_)))) => {
                    (CatalogWrite::Keep, Published::Unreadable)
                }
                // None kept, an older one, or a damaged one.
                _ => (CatalogWrite::Put(bytes.clone()), Published::Kept),
            };
            Ok((write, outcome))
        })
        .await
        .context("keeping the ring in the metadata")?;
    match outcome {
        Published::Kept => tracing::info!(version, "ring kept in the metadata for every gateway"),
        Published::AsNew => {}
        Published::Differs => tracing::warn!(
            version,
            "the metadata keeps another ring of the same version: rings built apart \
             (rebalance once more beside one builder file)"
        ),
        Published::Unreadable => tracing::warn!(
            "the metadata keeps a ring of a format this gateway cannot read: left as it is"
        ),
    }
    Ok(())
}

/// Takes each newer ring the catalog gets (or may have got, after a
/// resync), picks up the ring file an operator rewrote (handing it to every
/// node, which pass it on, and keeping it in the catalog), and retries
/// whatever the metadata service did not answer.
async fn follow(
    store: WeakStore,
    pool: RingPool,
    mut changes: tokio::sync::broadcast::Receiver<ChangeEvent>,
    path: PathBuf,
    loaded: Option<FileStamp>,
    mut pending: Pending,
) {
    let mut seen = loaded;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            received = changes.recv() => {
                let ring_may_have_changed = match received {
                    Ok(event) => match event.kind {
                        ChangeKind::CatalogPut => {
                            event.bucket == NS_CLUSTER && event.key.as_deref() == Some(RING_KEY)
                        }
                        ChangeKind::Resync => true,
                        _ => false,
                    },
                    Err(RecvError::Lagged(_)) => true,
                    Err(RecvError::Closed) => return,
                };
                // Every object's change passes here: only the ring's lead
                // to work (at once; a failure is retried on the ticks, so a
                // busy feed never turns into a stream of retries).
                if !ring_may_have_changed || pending.adopt {
                    pending.adopt |= ring_may_have_changed;
                    continue;
                }
                pending.adopt = true;
            }
            _ = tick.tick() => {
                let now = stamp(&path);
                if now != seen {
                    seen = now;
                    let loaded = load_ring(&path).and_then(|ring| {
                        let version = ring.version();
                        Ok((version, pool.set_ring(ring)?))
                    });
                    match loaded {
                        Ok((_, true)) => {
                            tracing::info!(version = pool.ring().version(), "new ring loaded");
                            pool.announce_ring().await;
                            pending.publish = true;
                        }
                        // A builder recreated or restored from a backup
                        // starts its versions again: said, since the
                        // operator expects the change to apply.
                        Ok((version, false)) => tracing::warn!(
                            file_version = version,
                            running = pool.ring().version(),
                            path = %path.display(),
                            "the ring file changed but is not newer than the running ring: ignored"
                        ),
                        Err(err) => tracing::warn!(error = %format!("{err:#}"), "ring file refused"),
                    }
                }
            }
        }
        let Some(store) = store.upgrade() else {
            return;
        };
        if pending.adopt {
            match adopt_kept(&store, &pool).await {
                Ok(()) => pending.adopt = false,
                Err(Adopt::Unavailable(why)) => {
                    tracing::warn!(error = %why, "the ring in the metadata not read yet")
                }
                Err(Adopt::ForeignCluster(why)) => {
                    pending.adopt = false;
                    tracing::error!(error = %why, "the metadata keeps another cluster's ring")
                }
            }
        }
        if pending.publish {
            match publish(&store, &pool).await {
                Ok(()) => pending.publish = false,
                Err(err) => {
                    tracing::warn!(error = %format!("{err:#}"), "ring not kept in the metadata yet")
                }
            }
        }
    }
}

/// What tells one version of the ring file from the next: its modification
/// time alone misses a file replaced within the file system's timestamp
/// granularity; `strata ring` replaces it by a rename, which changes the
/// inode, and an editor that writes in place changes the change time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStamp {
    modified: SystemTime,
    changed: (i64, i64),
    inode: (u64, u64),
    len: u64,
}

/// The ring file's stamp now, as [`share`] takes it.
pub fn stamp(path: &Path) -> Option<FileStamp> {
    let metadata = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        modified: metadata.modified().ok()?,
        changed: (metadata.ctime(), metadata.ctime_nsec()),
        inode: (metadata.dev(), metadata.ino()),
        len: metadata.len(),
    })
}
