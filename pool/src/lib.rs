//! The block pool: where object bytes live.
//!
//! The pool stores *extents* — immutable byte strings of at most [`MAX_EXTENT_LEN`]
//! (4 MiB), addressed by an [`ExtentId`] (random, but for a tag its writer
//! chooses, by which listings filter). An object is a list of extents; the
//! store above keeps that list in its metadata, the pool knows nothing of objects,
//! buckets or protocols. Later the same pool will hold VM volumes (lists of extents
//! exported over NBD) and index records.
//!
//! [`Pool`] is the interface every engine implements; the store does not know
//! which one it has. [`LocalPool`] is the embedded engine: one extent per file
//! under a data directory, each file carrying a CRC32C per 64 KiB block so
//! corruption is detected on read instead of served. [`RingPool`] is a cluster's
//! pool: the ring (`strata-ring`) places each extent's partition on storage nodes
//! ([`node::run`], `strata node`), every write goes to each replica and succeeds
//! once the write quorum has fsynced (a handoff node stands in for a primary that
//! is down), reads fall back from replica to replica and repair copies that were
//! missing or damaged. Nodes replicate to each other in the background (digests
//! per partition, then the differences) and audit their own extents.
//! [`wire`] is the internal protocol, HTTP with a cluster-secret signature.
//!
//! Key decision: a write returns only once the extent is durable (file and directory
//! entry fsynced, on every required replica). Extents are immutable and written
//! under a fresh id, so a crash mid-write leaves at most an unreferenced file, never
//! a torn extent that anything points at. A failed fsync poisons a local pool: every
//! later write fails instead of pretending the disk is fine. Deletions leave
//! tombstones, so a replica that was away is told of the deletion instead of
//! bringing the extent back.
//!
//! This crate depends on `strata-ring` only among strata crates; it knows no
//! buckets, keys or client protocols.

mod extent_file;
mod idle_deadline;
mod listener;
mod local;
pub mod node;
mod node_client;
mod ring_pool;
mod tls;
pub mod wire;

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;

/// A mutex's guard, poisoned or not: every lock of this crate guards state
/// that is whole between two statements, so a panic elsewhere leaves nothing
/// half-done to refuse.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub use idle_deadline::{
    CountedBody, FIRST_BYTE_TIMEOUT, HandlerRunning, IDLE_TIMEOUT, IdleDeadline, RequestCount,
};
pub use listener::{
    Accepted, CappedListener, ConnectionGauge, connection_cap, raise_open_file_limit,
};
pub use local::{LocalPool, LocalPoolConfig};
pub use node_client::{NodeClient, NodeError, SealedExtent};
pub use ring_pool::{RingPool, RingPoolConfig, RingPoolStats};
pub use tls::{ClusterTls, TLS_HANDSHAKE_BYTE, TlsError};

/// Largest extent the pool accepts. Objects are cut into extents of this size.
pub const MAX_EXTENT_LEN: usize = 4 * 1024 * 1024;

/// Address of an extent: 96 random bits, so writers never coordinate on
/// ids, then the writer's 32-bit [tag](ExtentId::tag).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExtentId(pub [u8; 16]);

/// A span of extent tags, for listings of some writers' extents only.
pub type ExtentTags = std::ops::RangeInclusive<u32>;

/// Every tag: a listing of all extents.
pub const ALL_TAGS: ExtentTags = 0..=u32::MAX;

/// A span of first bytes of extent ids ([`ExtentId::lead`]).
pub type ExtentLeads = std::ops::RangeInclusive<u8>;

/// Every first byte.
pub const ALL_LEADS: ExtentLeads = 0..=u8::MAX;

/// Which extents a listing covers: those written before `older_than`, with
/// a tag in `tags` and a first byte in `leads`. Ids are random but for
/// their tag, so a span of first bytes holds its share of any pool: the
/// orphan sweep lists a pool a span at a time, and holds a span's ids
/// only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtentFilter {
    pub older_than: std::time::SystemTime,
    pub tags: ExtentTags,
    pub leads: ExtentLeads,
}

impl ExtentFilter {
    /// Every extent written before `older_than`.
    pub fn older_than(older_than: std::time::SystemTime) -> Self {
        ExtentFilter {
            older_than,
            tags: ALL_TAGS,
            leads: ALL_LEADS,
        }
    }

    pub fn tags(self, tags: ExtentTags) -> Self {
        ExtentFilter { tags, ..self }
    }

    pub fn leads(self, leads: ExtentLeads) -> Self {
        ExtentFilter { leads, ..self }
    }

    /// Whether the id is within the spans (its age is the pool's to judge).
    pub fn covers(&self, id: ExtentId) -> bool {
        self.tags.contains(&id.tag()) && self.leads.contains(&id.lead())
    }
}

/// How many extents a filter names, by first byte: `counts[b]` have
/// first byte `b`.
pub type LeadCounts = [u64; 256];

impl ExtentId {
    /// 128 random bits: an id whose tag means nothing.
    pub fn random() -> Self {
        ExtentId(rand::random())
    }

    /// A random id ending in `tag`.
    pub fn random_tagged(tag: u32) -> Self {
        let mut bytes: [u8; 16] = rand::random();
        bytes[12..].copy_from_slice(&tag.to_be_bytes());
        ExtentId(bytes)
    }

    /// The last four bytes, which the writer chose. The store writes there
    /// the hash of the bucket whose records name the extent, so that each
    /// index group lists and sweeps only its buckets' extents. The pool
    /// only filters listings by it: placement hashes the whole id, and the
    /// directory layout its first byte, both still random.
    pub fn tag(&self) -> u32 {
        u32::from_be_bytes([self.0[12], self.0[13], self.0[14], self.0[15]])
    }

    /// The first byte, which picks an extent's directory in a local pool.
    pub fn lead(&self) -> u8 {
        self.0[0]
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Option<Self> {
        let mut bytes = [0u8; 16];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(ExtentId(bytes))
    }
}

impl fmt::Debug for ExtentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ExtentId({})", self.to_hex())
    }
}

impl serde::Serialize for ExtentId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for ExtentId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        ExtentId::from_hex(&text).ok_or_else(|| serde::de::Error::custom("not an extent id"))
    }
}

impl fmt::Display for ExtentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("extent {0} not found")]
    NotFound(ExtentId),
    #[error("extent {id} is corrupt: {detail}")]
    Corrupt { id: ExtentId, detail: String },
    #[error("extent of {0} bytes exceeds the {MAX_EXTENT_LEN}-byte limit")]
    TooLarge(usize),
    #[error("read of {len} bytes at {offset} is outside extent {id} of {extent_len} bytes")]
    OutOfRange {
        id: ExtentId,
        offset: u64,
        len: u64,
        extent_len: u64,
    },
    #[error("pool is poisoned after a failed fsync; restart after checking the disk")]
    Poisoned,
    /// A pool asked to work in a way it cannot (a cluster pool's settings
    /// against its ring).
    #[error("pool configuration: {0}")]
    Config(String),
    /// Too few storage nodes answered (a cluster pool).
    #[error("storage nodes unavailable: {0}")]
    Unavailable(String),
    #[error("pool i/o error: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = PoolError> = std::result::Result<T, E>;

/// The interface of every pool engine.
#[async_trait]
pub trait Pool: Send + Sync + 'static {
    /// Stores `data` as a new extent, its id ending in `tag`, and returns
    /// once it is durable.
    async fn write_extent(&self, data: Bytes, tag: u32) -> Result<ExtentId>;

    /// Reads `len` bytes at `offset` of an extent, verifying their checksums.
    async fn read_extent(&self, id: ExtentId, offset: u64, len: u64) -> Result<Bytes>;

    /// Removes an extent. Removing a missing extent is not an error: deletes are
    /// retried after crashes and must be idempotent.
    async fn delete_extent(&self, id: ExtentId) -> Result<()>;

    /// Every extent the pool holds that the filter names. The store uses it
    /// to find extents no record refers to (a crash between staging a body
    /// and committing it leaves such extents behind).
    async fn list_extents(&self, filter: &ExtentFilter) -> Result<Vec<ExtentId>>;

    /// How many extents [`Pool::list_extents`] would name, by first byte,
    /// without holding their ids: what the orphan sweep sizes its spans
    /// by. An estimate where the pool cannot tell (a cluster's node that
    /// does not answer, or runs an earlier version, counts none).
    async fn count_extents(&self, filter: &ExtentFilter) -> Result<LeadCounts>;
}
