//! The object layer every door shares: accounts' buckets, objects, multipart
//! uploads, listings and the change feed — protocol-neutral.
//!
//! S3 and Swift (and later FTP and FUSE) are thin doors over [`Store`]: a bucket is a
//! Swift container, an object has bytes, an ETag, a content type and metadata, a
//! listing pages through keys with prefix, delimiter and markers. Nothing here knows
//! HTTP routing, S3 XML or Swift headers; errors leave as [`StoreError`] and each door
//! maps them to its protocol.
//!
//! Principal types: [`Store`] (open it over a [`strata_pool::Pool`], or
//! [`Store::connect`] it to the store another gateway holds), [`StagedBody`]
//! (bytes written to the pool but not yet visible), [`ObjectInfo`], [`ListQuery`] /
//! [`ListPage`], [`ChangeEvent`]. Beside the objects, the catalog
//! ([`Store::catalog_update`]) keeps cluster metadata records whose types belong
//! to the layers above (accounts, users, domains), with the same durability and
//! the same change feed.
//!
//! Key decision: a write is two-phase. [`Store::stage`] streams a body into pool
//! extents (bounded memory: at most two extents in flight) while hashing it; only
//! then does the door check digests and signatures, and [`Store::put_object`] commits
//! the metadata in one fsynced RocksDB batch that also appends to the change feed and
//! schedules the replaced extents for deletion. Readers therefore see the old object
//! or the new one, never a mix; a crash before the commit leaves only unreferenced
//! extents. Old extents are deleted after a grace period so that a reader streaming
//! the previous version is not cut off.
//!
//! Depends on `strata-pool` only; must not depend on the gateway, auth or any
//! protocol crate.

mod catalog;
mod checksum;
mod error;
mod expiry;
mod feed;
pub mod grouped;
mod keys;
mod list;
mod multipart;
mod read;
mod records;
mod remote;
mod replica;
mod routed;
mod signed_calls;
mod space;
mod split;
mod store;
mod usage;
mod write;

pub use catalog::CatalogWrite;
pub use checksum::{BodyHasher, ChecksumAlgorithm, Digests};
pub use error::{Result, StoreError};
pub use expiry::SWEEPS_PER_ROUND;
pub use feed::{ChangeEvent, ChangeKind, FeedFollower, FollowerTag};
pub use list::{ListEntry, ListPage, ListQuery, UploadListPage, UploadListQuery};
pub use multipart::{CompletedPart, PartInfo, UploadInfo};
pub use read::ObjectReader;
pub use records::{BucketInfo, ObjectInfo, ObjectMeta};
pub use remote::{
    ApplyContext, FEED_OUTAGE_PATIENCE, HELD_BY_LOG_VERSION, MetaCallKind, MetaTransport,
    NEWEST_CALL_LOG_VERSION, PINS_LOG_VERSION, SPLIT_LOG_VERSION, TransportError,
};
pub use replica::{ReplicaCheckpoint, Tally};
pub use routed::group_tags;
pub use space::KeySpace;
pub use store::{
    BucketPin, ChangeListener, DEFAULT_ORPHAN_SWEEP_BATCH, FeedLease, PutConditions, Store,
    StoreConfig, Swept, WeakStore, validate_key,
};
pub use strata_pool::wire::CallSignature;
pub use usage::BucketUsage;
pub use write::{StageError, StageOptions, StagedBody};
