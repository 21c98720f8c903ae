//! The ring as cluster metadata. A gateway picks up its ring file when an
//! operator rewrites it (`strata ring rebalance`), and keeps the newest ring
//! it has in the metadata service's catalog (`cluster/ring`); every gateway
//! takes a newer ring from there as soon as the change feed brings it, and
//! hands it to the storage nodes. So a ring rewritten beside one gateway
//! reaches every gateway and node without copying files, and a gateway
//! restarted with an old ring file starts with the cluster's.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use strata_pool::RingPool;
use strata_ring::Ring;
use strata_store::{CatalogWrite, ChangeEvent, ChangeKind, Store, WeakStore};
use tokio::sync::broadcast::error::RecvError;

use crate::cluster_cli::load_ring;
use crate::directory::NS_CLUSTER;

/// The ring's key in the catalog's `cluster` namespace.
pub const RING_KEY: &str = "ring";

/// How often the ring file is looked at.
const FILE_POLL: Duration = Duration::from_secs(2);

/// Brings the pool's ring and the catalog's to the newer of the two, then
/// follows both the catalog and the ring file at `path`. Fails when the
/// catalog keeps a ring of another cluster (the metadata service is another
/// cluster's).
pub async fn share(store: &Store, pool: &RingPool, path: PathBuf) -> anyhow::Result<()> {
    // Subscribed first: no change falls between the read and the follow.
    let changes = store.subscribe();
    adopt_kept(store, pool)
        .await
        .context("taking the ring the metadata service keeps")?;
    publish(store, pool).await?;
    tokio::spawn(follow_catalog(store.downgrade(), pool.clone(), changes));
    tokio::spawn(follow_file(store.downgrade(), pool.clone(), path));
    Ok(())
}

/// Takes the catalog's ring if it is newer than the pool's, and hands it to
/// the nodes; whether it did.
async fn adopt_kept(store: &Store, pool: &RingPool) -> anyhow::Result<bool> {
    let Some(kept) = store.catalog_get(NS_CLUSTER, RING_KEY).await? else {
        return Ok(false);
    };
    let ring = Ring::from_bytes(&kept).context("the ring in the metadata")?;
    let newer = pool.set_ring(ring)?;
    if newer {
        tracing::info!(
            version = pool.ring().version(),
            "newer ring taken from the metadata"
        );
        pool.announce_ring().await;
    }
    Ok(newer)
}

/// Keeps the pool's ring in the catalog unless the catalog's is as new.
async fn publish(store: &Store, pool: &RingPool) -> anyhow::Result<()> {
    let ring = pool.ring();
    let (version, cluster, bytes) = (
        ring.version(),
        ring.cluster_id().to_owned(),
        ring.to_bytes(),
    );
    let published = store
        .catalog_update(NS_CLUSTER, RING_KEY, move |current| {
            let kept = current.map(Ring::from_bytes);
            let write = match kept {
                // Another cluster's ring is never replaced: `adopt_kept`
                // refused it already, this is a race with its writer.
                Some(Ok(kept)) if kept.cluster_id() != cluster || kept.version() >= version => {
                    CatalogWrite::Keep
                }
                // None kept, an older one, or one that no longer reads.
                _ => CatalogWrite::Put(bytes.clone()),
            };
            let put = matches!(write, CatalogWrite::Put(_));
            Ok((write, put))
        })
        .await
        .context("keeping the ring in the metadata")?;
    if published {
        tracing::info!(version, "ring kept in the metadata for every gateway");
    }
    Ok(())
}

/// Takes each newer ring the catalog gets (or may have got, after a resync).
async fn follow_catalog(
    store: WeakStore,
    pool: RingPool,
    mut changes: tokio::sync::broadcast::Receiver<ChangeEvent>,
) {
    loop {
        let received = changes.recv().await;
        let Some(store) = store.upgrade() else {
            return;
        };
        let look = match received {
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
        if look && let Err(err) = adopt_kept(&store, &pool).await {
            tracing::warn!(error = %format!("{err:#}"), "ring in the metadata not taken");
        }
    }
}

/// Picks up the ring file an operator rewrote, hands the new ring to every
/// node (nodes pass it on to each other) and keeps it in the catalog.
async fn follow_file(store: WeakStore, pool: RingPool, path: PathBuf) {
    let mut seen = modified(&path);
    // A ring loaded but not kept yet (the metadata service did not answer).
    let mut unpublished = false;
    loop {
        tokio::time::sleep(FILE_POLL).await;
        let Some(store) = store.upgrade() else {
            return;
        };
        let now = modified(&path);
        if now != seen {
            seen = now;
            let newer = load_ring(&path).and_then(|ring| Ok(pool.set_ring(ring)?));
            match newer {
                Ok(true) => {
                    tracing::info!(version = pool.ring().version(), "new ring loaded");
                    pool.announce_ring().await;
                    unpublished = true;
                }
                Ok(false) => {}
                Err(err) => tracing::warn!(error = %format!("{err:#}"), "ring file refused"),
            }
        }
        if unpublished {
            match publish(&store, &pool).await {
                Ok(()) => unpublished = false,
                Err(err) => {
                    tracing::warn!(error = %format!("{err:#}"), "new ring not kept in the metadata yet")
                }
            }
        }
    }
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
