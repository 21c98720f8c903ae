//! The change feed: every mutation appends an event in the same batch that makes it
//! visible, so the invalidator (and anything else that follows changes) can never
//! miss one, even across a crash.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeKind {
    BucketCreated,
    BucketDeleted,
    /// The bucket's settings (ACLs, metadata) changed.
    BucketUpdated,
    ObjectPut,
    ObjectDeleted,
    /// A catalog record was written; `bucket` is its namespace, `key` its key.
    CatalogPut,
    /// A catalog record was deleted; `bucket` is its namespace, `key` its key.
    CatalogDeleted,
    /// Changes may have gone unseen by this process (a store connected to
    /// the metadata service lost its feed for a while, or fell behind what
    /// the service keeps): anything learnt from the store before may be
    /// stale. Published by that process only, never stored in the feed.
    Resync,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeEvent {
    /// Position in the feed, strictly increasing.
    pub seq: u64,
    pub kind: ChangeKind,
    /// The bucket changed, or the namespace of a catalog record.
    pub bucket: String,
    #[serde(default)]
    pub key: Option<String>,
    /// ETag of the object written, for puts.
    #[serde(default)]
    pub etag: Option<String>,
    pub at_ms: i64,
}
