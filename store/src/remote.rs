//! Several gateways over one store: one gateway holds the metadata in its
//! RocksDB (the metadata service) and answers [`Store::serve_meta`]; the others
//! open their store with [`Store::connect`] and send it every metadata
//! operation, while bodies go straight between each gateway and the pool.
//!
//! A call is one JSON request and one JSON answer. The answer carries the
//! change-feed events committed while the call ran (the caller's own among
//! them), which the caller publishes to its listeners before the call returns:
//! a gateway never serves its edge's old copy after its own write returned.
//! Changes made through other gateways arrive by a long poll of the feed
//! ([`MetaCall::FeedWait`]). Operations that read, decide and write (bucket
//! settings, catalog records) run optimistically on the caller: the service
//! applies the new value only if the record is still the one the decision
//! was made on, and the caller decides again otherwise.
//!
//! A follower's poll names it ([`FollowerTag`]) and confirms every event up
//! to its position: the service knows who follows and how far
//! ([`Store::feed_followers`], in `/metrics`), and keeps the events a
//! follower heard from lately has not confirmed ([`StoreConfig::feed_hold`]).
//!
//! How the bytes travel (HTTP, signatures) is the transport's business: this
//! crate knows no HTTP.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use strata_pool::Pool;
use strata_pool::wire::CallSignature;

use crate::catalog::CatalogWrite;
use crate::checksum::ChecksumAlgorithm;
use crate::error::{Result, StoreError};
use crate::feed::{ChangeEvent, ChangeKind, FollowerTag};
use crate::keys::CF_DEFAULT;
use crate::list::{ListQuery, UploadListQuery};
use crate::multipart::{CompletedPart, PartInfo, UploadInfo};
use crate::records::{BucketInfo, ObjectInfo, ObjectMeta};
use crate::store::{
    APPLIED_MARKER, BucketPin, Engine, Events, FeedTrim, Inner, Pinned, PutConditions, Store,
    StoreConfig,
};

/// Carries a metadata call to the metadata service and brings back its
/// answer.
#[async_trait]
pub trait MetaTransport: Send + Sync + 'static {
    async fn call(
        &self,
        request: Bytes,
        timeout: Duration,
    ) -> std::result::Result<Bytes, TransportError>;
}

/// Why a call brought back no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// The call certainly reached no member that could apply it (no
    /// connection could be made, or every member said it is not the
    /// leader): nothing was done.
    #[error("{0}")]
    NotSent(String),
    /// The call may have been received and applied.
    #[error("{0}")]
    Unknown(String),
    /// The service answered that it takes no such call where it was sent
    /// (an index group it does not keep, a gateway that is no metadata
    /// service): nothing was done, and asking again will not change that.
    #[error("{0}")]
    Refused(String),
}

/// The longest a feed long poll is held (`MetaCall::FeedWait`).
const MAX_FEED_WAIT_MS: u64 = 30_000;

/// How long a call may take, fsyncs on a busy service included.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one long poll of the feed waits for a change.
const FEED_WAIT: Duration = Duration::from_secs(10);
/// How late a long poll's answer may be before the poll counts as failed.
const FEED_SLACK: Duration = Duration::from_secs(5);
/// How long a connected store counts as following the feed after its last
/// answer: a healthy long poll answers at least every [`FEED_WAIT`].
pub(crate) const FEED_LEASE: Duration = FEED_WAIT.saturating_add(FEED_SLACK);
/// Events fetched per poll.
const FEED_BATCH: usize = 1000;
/// How long a long poll woken by a change waits for the changes that come
/// with it: under load, answering each change alone cost every follower a
/// round trip (and a replicated service a confirmation of its leadership)
/// per change, while it delays a follower's purges by this much at most.
const FEED_LINGER: Duration = Duration::from_millis(5);
/// Decisions retried when another gateway changed the same record first.
const SWAP_ATTEMPTS: u32 = 32;
/// How long `Store::connect` waits for the service to answer.
const CONNECT_PATIENCE: Duration = Duration::from_secs(60);
/// How long after its feed stopped answering a connected store's calls wait
/// for it to answer again, rather than fail unsent at once. Its polls ride
/// out an election themselves (the transport waits for a new leader), but
/// one that failed meanwhile is retried a second later: calls in that gap
/// wait for it. Later in an outage, calls fail at once: a gateway really
/// cut off answers 503 without delay.
pub const FEED_OUTAGE_PATIENCE: Duration = Duration::from_secs(3);
/// How long a hole in the feed's numbers is waited for: a number taken by a
/// commit still in flight fills in, one whose commit failed never does.
const FEED_HOLE_WAIT: Duration = Duration::from_secs(5);
/// Events before the service's position at connect that are read anyway,
/// in case their commits were still in flight then.
const FEED_START_OVERLAP: u64 = 256;
/// Longest a bucket record read once serves later reads: the feed drops it
/// at its next change; this bounds the case where the feed could not.
const BUCKET_TTL: Duration = Duration::from_secs(10);
/// Bucket records kept at most (all are dropped when there are more).
const MAX_CACHED_BUCKETS: usize = 100_000;

pub(crate) struct Remote {
    pub(crate) pool: Arc<dyn Pool>,
    pub(crate) config: StoreConfig,
    pub(crate) events: Arc<Events>,
    transport: Arc<dyn MetaTransport>,
    /// Bucket records as read, so that checking a bucket (every write does)
    /// is not a call; dropped by every change the feed or an answer brings.
    buckets: parking_lot::Mutex<BucketCache>,
    /// When the feed last answered.
    pub(crate) contact: Arc<FeedContact>,
    /// When the feed's polls began to fail, while they do: calls then wait
    /// for it to answer again for [`FEED_OUTAGE_PATIENCE`] at most, instead
    /// of each waiting out its timeout on a service that does not answer.
    outage_since: InstantCell,
    /// Woken when the feed answers again after failing.
    feed_back: tokio::sync::Notify,
}

/// An instant or none, read and written without a lock (it is read on
/// every call): milliseconds after `base`, plus one; 0 for none.
struct InstantCell {
    base: tokio::time::Instant,
    at: std::sync::atomic::AtomicU64,
}

impl InstantCell {
    fn new() -> InstantCell {
        InstantCell {
            base: tokio::time::Instant::now(),
            at: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn now_code(&self) -> u64 {
        self.base.elapsed().as_millis() as u64 + 1
    }

    fn get(&self) -> Option<tokio::time::Instant> {
        match self.at.load(std::sync::atomic::Ordering::Acquire) {
            0 => None,
            code => Some(self.base + Duration::from_millis(code - 1)),
        }
    }

    fn set_now(&self) {
        let now = self.now_code();
        self.at.store(now, std::sync::atomic::Ordering::Release);
    }

    /// Sets it to now if none; whether it did.
    fn set_now_if_none(&self) -> bool {
        let now = self.now_code();
        let ordering = std::sync::atomic::Ordering::AcqRel;
        let loaded = std::sync::atomic::Ordering::Acquire;
        self.at.compare_exchange(0, now, ordering, loaded).is_ok()
    }

    /// Clears it; whether it was set.
    fn clear(&self) -> bool {
        self.at.swap(0, std::sync::atomic::Ordering::AcqRel) != 0
    }
}

/// When a connected store last heard from the service's feed.
pub(crate) struct FeedContact {
    last: InstantCell,
}

impl FeedContact {
    fn new() -> FeedContact {
        FeedContact {
            last: InstantCell::new(),
        }
    }

    fn touch(&self) {
        self.last.set_now();
    }

    /// Whether the feed answered within [`FEED_LEASE`].
    pub(crate) fn holds(&self) -> bool {
        self.last
            .get()
            .is_some_and(|last| last.elapsed() < FEED_LEASE)
    }
}

#[derive(Default)]
struct BucketCache {
    records: std::collections::HashMap<String, (BucketInfo, tokio::time::Instant)>,
    /// Counts changes to any bucket: a record read before a change must not
    /// be kept after it.
    generation: u64,
}

/// One metadata operation, as sent to the service.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum MetaCall {
    FeedHead,
    /// The oldest event the service still keeps.
    FeedOldest,
    /// The events after `after`; from a follower, also its confirmation
    /// of every event up to `after`.
    FeedWait {
        after: u64,
        limit: usize,
        wait_ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        follower: Option<FollowerTag>,
    },
    CreateBucket {
        account: String,
        name: String,
        region: String,
        attrs: BTreeMap<String, String>,
    },
    SwapBucket {
        expected: BucketInfo,
        new: BucketInfo,
    },
    Bucket {
        name: String,
    },
    ListBuckets {
        account: String,
    },
    DeleteBucket {
        name: String,
        /// As `DeleteObject`'s.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pin: Option<BucketPin>,
    },
    /// An index group's marker of a bucket ([`Store::put_bucket_marker`]).
    PutBucketMarker {
        marker: BucketInfo,
    },
    DeleteBucketIncarnation {
        name: String,
        incarnation: u64,
    },
    /// How many index groups the store's buckets are spread over
    /// ([`Store::index_groups`]).
    IndexGroups,
    /// Records the number of index groups, or checks it
    /// ([`Store::route`]); answers whether their extents are tagged by
    /// bucket. (An earlier version answered nothing: a gateway and a
    /// service of the two versions refuse each other at start.)
    RecordIndexGroups {
        count: u16,
    },
    /// [`MetaCall::RecordIndexGroups`] for groups that `held_by` holds
    /// (storage nodes, [`Store::route_held_by`]). Log version
    /// [`HELD_BY_LOG_VERSION`]: a leader of an earlier build does not
    /// even decode it, so none appends it.
    RecordIndexGroupsHeldBy {
        count: u16,
        held_by: String,
    },
    /// Moves the buckets' records of a root that holds buckets and no
    /// index groups into `count` groups (`split.rs`), every member of a
    /// replicated service alike; otherwise as `RecordIndexGroups`. Log
    /// version [`SPLIT_LOG_VERSION`].
    SplitIntoIndexGroups {
        count: u16,
    },
    PutObject {
        info: ObjectInfo,
        conditions: PutConditions,
    },
    HeadObject {
        bucket: String,
        key: String,
    },
    DeleteObject {
        bucket: String,
        key: String,
        /// The bucket the caller decided against ([`BucketPin`]); a
        /// member of an earlier build ignores it, so a replicated group
        /// honours it only from [`PINS_LOG_VERSION`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pin: Option<BucketPin>,
    },
    /// Deletes the object only while it is still `version`
    /// ([`ObjectInfo::same_version`]); a call of its own so that a member
    /// of an earlier version refuses it instead of deleting whatever is
    /// there.
    DeleteObjectVersion {
        bucket: String,
        key: String,
        version: ObjectInfo,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pin: Option<BucketPin>,
    },
    RenameObject {
        bucket: String,
        key: String,
        to_bucket: String,
        to_key: String,
        /// As `DeleteObject`'s, for each of the two buckets.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pin: Option<BucketPin>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to_pin: Option<BucketPin>,
    },
    ReplaceObjectMeta {
        bucket: String,
        key: String,
        meta: ObjectMeta,
        etag: Option<String>,
        /// As `DeleteObject`'s.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pin: Option<BucketPin>,
    },
    CatalogGet {
        namespace: String,
        key: String,
    },
    CatalogList {
        namespace: String,
    },
    CatalogSwap {
        namespace: String,
        key: String,
        #[serde(with = "opt_base64")]
        expected: Option<Vec<u8>>,
        write: CatalogWrite,
    },
    ListObjects {
        bucket: String,
        query: ListQuery,
    },
    ListUploads {
        bucket: String,
        query: UploadListQuery,
    },
    CreateUpload {
        bucket: String,
        key: String,
        meta: ObjectMeta,
        checksum_algorithm: Option<ChecksumAlgorithm>,
    },
    Upload {
        bucket: String,
        key: String,
        upload_id: String,
    },
    PutPart {
        upload: UploadInfo,
        part: PartInfo,
    },
    ListParts {
        upload: UploadInfo,
        after: u32,
        max_parts: usize,
    },
    AbortUpload {
        upload: UploadInfo,
    },
    CompleteUpload {
        upload: UploadInfo,
        chosen: Vec<CompletedPart>,
        conditions: PutConditions,
    },
    BucketUsage {
        bucket: String,
    },
    /// The usage of each of `buckets`, `None` for one the store does not
    /// hold: an index group's part of an account's listing, in one call.
    BucketUsages {
        buckets: Vec<String>,
    },
    AccountUsage {
        account: String,
    },
    /// Deletes the objects whose expiry time is before `now_secs`.
    ExpireDue {
        now_secs: u64,
    },
    /// Cuts the change feed (a replicated service's leader decides where).
    TrimFeed {
        trim: FeedTrim,
    },
}

impl MetaCall {
    /// Whether the call may change something: only then does its answer
    /// carry the events committed meanwhile (the caller's own among them).
    fn writes(&self) -> bool {
        !matches!(
            self,
            MetaCall::FeedHead
                | MetaCall::FeedOldest
                | MetaCall::FeedWait { .. }
                | MetaCall::Bucket { .. }
                | MetaCall::ListBuckets { .. }
                | MetaCall::HeadObject { .. }
                | MetaCall::CatalogGet { .. }
                | MetaCall::CatalogList { .. }
                | MetaCall::ListObjects { .. }
                | MetaCall::ListUploads { .. }
                | MetaCall::Upload { .. }
                | MetaCall::ListParts { .. }
                | MetaCall::BucketUsage { .. }
                | MetaCall::BucketUsages { .. }
                | MetaCall::AccountUsage { .. }
                | MetaCall::IndexGroups
        )
    }
}

impl MetaCall {
    /// The log version a member of a replicated service must run to apply
    /// the call (`strata_meta`'s `versions.rs`): 0 for the calls of the
    /// build that brought log versions.
    fn log_version(&self) -> u32 {
        match self {
            MetaCall::SplitIntoIndexGroups { .. } => SPLIT_LOG_VERSION,
            MetaCall::RecordIndexGroupsHeldBy { .. } => HELD_BY_LOG_VERSION,
            _ => 0,
        }
    }

    /// The call as a member that does not know [`BucketPin`]s applies it:
    /// what every member of a group below [`PINS_LOG_VERSION`] must do
    /// alike.
    fn without_pins(mut self) -> MetaCall {
        match &mut self {
            MetaCall::DeleteBucket { pin, .. }
            | MetaCall::DeleteObject { pin, .. }
            | MetaCall::DeleteObjectVersion { pin, .. }
            | MetaCall::ReplaceObjectMeta { pin, .. } => *pin = None,
            MetaCall::RenameObject { pin, to_pin, .. } => (*pin, *to_pin) = (None, None),
            _ => {}
        }
        self
    }

    /// Whether the call reads or changes a bucket's objects, uploads or
    /// their counters, or deletes a bucket by its objects alone: what a
    /// root store that spreads objects over index groups must not take.
    fn keeps_objects(&self) -> bool {
        matches!(
            self,
            MetaCall::DeleteBucket { .. }
                | MetaCall::PutObject { .. }
                | MetaCall::HeadObject { .. }
                | MetaCall::DeleteObject { .. }
                | MetaCall::DeleteObjectVersion { .. }
                | MetaCall::RenameObject { .. }
                | MetaCall::ReplaceObjectMeta { .. }
                | MetaCall::ListObjects { .. }
                | MetaCall::ListUploads { .. }
                | MetaCall::CreateUpload { .. }
                | MetaCall::Upload { .. }
                | MetaCall::PutPart { .. }
                | MetaCall::ListParts { .. }
                | MetaCall::AbortUpload { .. }
                | MetaCall::CompleteUpload { .. }
                | MetaCall::BucketUsage { .. }
                | MetaCall::BucketUsages { .. }
        )
    }
}

fn decode_call(request: &[u8]) -> Result<MetaCall> {
    serde_json::from_slice(request)
        .map_err(|err| StoreError::InvalidArgument(format!("{UNDECODABLE}: {err}")))
}

/// What an undecodable call's refusal starts with.
const UNDECODABLE: &str = "undecodable metadata call";

/// Whether a refusal says the service did not decode the call: a service of
/// an earlier build, which does not know it.
pub(crate) fn undecodable(why: &str) -> bool {
    why.starts_with(UNDECODABLE)
}

/// The log version of [`MetaCall::SplitIntoIndexGroups`], the first call
/// that needs one.
pub const SPLIT_LOG_VERSION: u32 = 2;

/// The log version from which a replicated group honours the
/// [`BucketPin`]s of deletes, renames and metadata replacements. A member
/// of an earlier build decodes such a call and ignores its pin, so a group
/// whose members may run one applies it unpinned on every member, and
/// none refuses what another applies. No call needs it: one sent earlier
/// is only less strict.
pub const PINS_LOG_VERSION: u32 = 3;

/// The log version of [`MetaCall::RecordIndexGroupsHeldBy`]: a member of
/// an earlier build would record the groups as its own.
pub const HELD_BY_LOG_VERSION: u32 = 4;

/// The newest log version a call of this build needs.
pub const NEWEST_CALL_LOG_VERSION: u32 = HELD_BY_LOG_VERSION;

/// What a replicated service needs to know of a call before it logs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaCallKind {
    /// Whether it may change something (it goes through the log).
    pub writes: bool,
    /// The log version a member must run to apply it.
    pub log_version: u32,
    /// Whether it reads or changes a bucket's objects, uploads or their
    /// counters (not the feed, nor the catalog).
    pub keeps_objects: bool,
}

/// What a replicated log entry brings besides its call (see
/// [`Store::apply_meta`]).
#[derive(Debug, Clone)]
pub struct ApplyContext {
    /// The time the entry's changes are stamped with (chosen by the leader).
    pub at_ms: i64,
    /// Random bytes for what the call names (an upload id).
    pub nonce: [u8; 16],
    /// Opaque to the store: written with the entry's changes.
    pub marker: Vec<u8>,
    /// Whether anyone waits for the answer. Only the member that proposed
    /// an entry answers its callers: the others apply it and skip keeping
    /// its events and encoding an answer nobody reads.
    pub answered: bool,
    /// The signature the call came with from another gateway: a call
    /// whose signature was applied before is refused (a replay), alike on
    /// every replica.
    pub signature: Option<CallSignature>,
    /// The group's log version as the entry is applied: what every
    /// member's build applies alike (see [`PINS_LOG_VERSION`]).
    pub log_version: u32,
}

/// The service's answer: the outcome, and the events committed meanwhile.
#[derive(Serialize, Deserialize)]
struct Answer<T> {
    outcome: std::result::Result<T, WireError>,
    /// Decoded one by one: an event of a kind this version does not know
    /// (a newer service) is skipped, not a reason to lose the answer.
    #[serde(default)]
    events: Vec<serde_json::Value>,
}

/// A [`StoreError`] as it travels; failures of the service's own machinery
/// (database, pool) arrive as `Internal` or `Unavailable` with their text.
#[derive(Debug, Serialize, Deserialize)]
enum WireError {
    NoSuchBucket,
    NoSuchKey,
    NoSuchUpload,
    BucketAlreadyExists,
    BucketAlreadyOwnedByYou,
    BucketNotEmpty,
    InvalidBucketName(String),
    InvalidKey(String),
    TooLarge(u64),
    InvalidPart(u32, String),
    InvalidPartOrder,
    PartTooSmall { part_number: u32, size: u64 },
    PreconditionFailed,
    InvalidArgument(String),
    Conflict,
    Unavailable(String),
    Internal(String),
}

impl From<StoreError> for WireError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NoSuchBucket => WireError::NoSuchBucket,
            StoreError::NoSuchKey => WireError::NoSuchKey,
            StoreError::NoSuchUpload => WireError::NoSuchUpload,
            StoreError::BucketAlreadyExists => WireError::BucketAlreadyExists,
            StoreError::BucketAlreadyOwnedByYou => WireError::BucketAlreadyOwnedByYou,
            StoreError::BucketNotEmpty => WireError::BucketNotEmpty,
            StoreError::InvalidBucketName(name) => WireError::InvalidBucketName(name),
            StoreError::InvalidKey(why) => WireError::InvalidKey(why),
            StoreError::TooLarge(limit) => WireError::TooLarge(limit),
            StoreError::InvalidPart(number, why) => WireError::InvalidPart(number, why),
            StoreError::InvalidPartOrder => WireError::InvalidPartOrder,
            StoreError::PartTooSmall { part_number, size } => {
                WireError::PartTooSmall { part_number, size }
            }
            StoreError::PreconditionFailed => WireError::PreconditionFailed,
            StoreError::InvalidArgument(why) => WireError::InvalidArgument(why),
            StoreError::Conflict => WireError::Conflict,
            err @ (StoreError::Unavailable(_)
            | StoreError::Pool(
                strata_pool::PoolError::Unavailable(_) | strata_pool::PoolError::Poisoned,
            )) => WireError::Unavailable(err.to_string()),
            err @ (StoreError::Corrupt(_)
            | StoreError::Pool(_)
            | StoreError::Db(_)
            | StoreError::Internal(_)) => WireError::Internal(err.to_string()),
        }
    }
}

impl From<WireError> for StoreError {
    fn from(err: WireError) -> Self {
        match err {
            WireError::NoSuchBucket => StoreError::NoSuchBucket,
            WireError::NoSuchKey => StoreError::NoSuchKey,
            WireError::NoSuchUpload => StoreError::NoSuchUpload,
            WireError::BucketAlreadyExists => StoreError::BucketAlreadyExists,
            WireError::BucketAlreadyOwnedByYou => StoreError::BucketAlreadyOwnedByYou,
            WireError::BucketNotEmpty => StoreError::BucketNotEmpty,
            WireError::InvalidBucketName(name) => StoreError::InvalidBucketName(name),
            WireError::InvalidKey(why) => StoreError::InvalidKey(why),
            WireError::TooLarge(limit) => StoreError::TooLarge(limit),
            WireError::InvalidPart(number, why) => StoreError::InvalidPart(number, why),
            WireError::InvalidPartOrder => StoreError::InvalidPartOrder,
            WireError::PartTooSmall { part_number, size } => {
                StoreError::PartTooSmall { part_number, size }
            }
            WireError::PreconditionFailed => StoreError::PreconditionFailed,
            WireError::InvalidArgument(why) => StoreError::InvalidArgument(why),
            WireError::Conflict => StoreError::Conflict,
            WireError::Unavailable(why) => StoreError::Unavailable(why),
            WireError::Internal(why) => StoreError::Internal(format!("metadata service: {why}")),
        }
    }
}

impl Remote {
    /// A bucket's record: as read before, unless it changed since (or is
    /// older than [`BUCKET_TTL`]).
    pub(crate) async fn bucket(&self, name: String) -> Result<BucketInfo> {
        let generation = {
            let cache = self.buckets.lock();
            if let Some((info, read_at)) = cache.records.get(&name)
                && read_at.elapsed() < BUCKET_TTL
                && self.contact.holds()
            {
                return Ok(info.clone());
            }
            cache.generation
        };
        let info: BucketInfo = self.call(MetaCall::Bucket { name: name.clone() }).await?;
        let mut cache = self.buckets.lock();
        if cache.generation == generation {
            if cache.records.len() >= MAX_CACHED_BUCKETS {
                cache.records.clear();
            }
            let read_at = tokio::time::Instant::now();
            cache.records.insert(name, (info.clone(), read_at));
        }
        Ok(info)
    }

    fn forget_buckets(&self) {
        let mut cache = self.buckets.lock();
        cache.records.clear();
        cache.generation += 1;
    }

    /// Hands a change to this process's listeners, after dropping what it
    /// makes stale here.
    fn publish(&self, event: ChangeEvent) {
        match event.kind {
            ChangeKind::BucketCreated | ChangeKind::BucketDeleted | ChangeKind::BucketUpdated => {
                let mut cache = self.buckets.lock();
                cache.records.remove(&event.bucket);
                cache.generation += 1;
            }
            // Changes went unseen (the service no longer keeps them, or
            // the feed failed): any bucket may have changed, its ACLs and
            // TempURL keys with it.
            ChangeKind::Resync => self.forget_buckets(),
            _ => {}
        }
        self.events.publish(event);
    }

    /// Sends `call` and publishes the events its answer carries.
    pub(crate) async fn call<T: DeserializeOwned>(&self, call: MetaCall) -> Result<T> {
        self.try_call(call).await.map_err(|(err, _)| err)
    }

    /// As [`Remote::call`], and on failure whether the call was sent at all
    /// (one that was not cannot have been applied).
    pub(crate) async fn try_call<T: DeserializeOwned>(
        &self,
        call: MetaCall,
    ) -> std::result::Result<T, (StoreError, bool)> {
        if !self.feed_answers().await {
            let err = StoreError::Unavailable(
                "metadata service unreachable (its feed does not answer)".into(),
            );
            return Err((err, false));
        }
        self.exchange(call, CALL_TIMEOUT).await
    }

    /// Records whether the feed's last poll answered; true if that changed.
    fn set_reachable(&self, reachable: bool) -> bool {
        if !reachable {
            return self.outage_since.set_now_if_none();
        }
        let changed = self.outage_since.clear();
        if changed {
            self.feed_back.notify_waiters();
        }
        changed
    }

    /// Whether the feed's polls fail.
    fn feed_failing(&self) -> bool {
        self.outage_since.get().is_some()
    }

    /// Whether the feed answers, or answers again before its outage has
    /// lasted [`FEED_OUTAGE_PATIENCE`].
    async fn feed_answers(&self) -> bool {
        let Some(since) = self.outage_since.get() else {
            return true;
        };
        let deadline = since + FEED_OUTAGE_PATIENCE;
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        // Registered before the outage is read again: a recovery in between
        // still wakes this call.
        let back = self.feed_back.notified();
        let mut back = std::pin::pin!(back);
        back.as_mut().enable();
        if !self.feed_failing() {
            return true;
        }
        tokio::time::timeout_at(deadline, back).await.is_ok()
    }

    async fn call_within<T: DeserializeOwned>(
        &self,
        call: MetaCall,
        timeout: Duration,
    ) -> Result<T> {
        self.exchange(call, timeout).await.map_err(|(err, _)| err)
    }

    /// Sends `call` and reads its answer; on failure, whether the call may
    /// have reached the service (one that did not cannot have been applied).
    async fn exchange<T: DeserializeOwned>(
        &self,
        call: MetaCall,
        timeout: Duration,
    ) -> std::result::Result<T, (StoreError, bool)> {
        let request = serde_json::to_vec(&call).map_err(|err| {
            let err = StoreError::Internal(format!("encoding a metadata call: {err}"));
            (err, false)
        })?;
        let reply = self
            .transport
            .call(Bytes::from(request), timeout)
            .await
            .map_err(|why| match why {
                // A misconfiguration: waiting will not mend it.
                TransportError::Refused(why) => (
                    StoreError::Internal(format!("metadata service: {why}")),
                    false,
                ),
                why => {
                    let reached = matches!(why, TransportError::Unknown(_));
                    let err = StoreError::Unavailable(format!("metadata service: {why}"));
                    (err, reached)
                }
            })?;
        self.take_answer(&reply).map_err(|err| (err, true))
    }

    /// The outcome an answer carries, after publishing its events.
    fn take_answer<T: DeserializeOwned>(&self, reply: &[u8]) -> Result<T> {
        // An answer that cannot be read leaves the outcome unknown: the call
        // may have been applied.
        let answer: Answer<T> = serde_json::from_slice(reply).map_err(|err| {
            StoreError::Unavailable(format!("undecodable metadata answer: {err}"))
        })?;
        for event in answer.events {
            match serde_json::from_value::<ChangeEvent>(event) {
                Ok(event) => self.publish(event),
                Err(err) => {
                    tracing::debug!(error = %err, "change event of an unknown kind skipped")
                }
            }
        }
        answer.outcome.map_err(StoreError::from)
    }
}

impl Store {
    /// A store whose metadata lives in another gateway's store, reached through
    /// `transport`; bodies are staged into and read from `pool`, which must be
    /// the same pool the service uses. Waits (up to a minute) for the service
    /// to answer, then follows its change feed from the current position.
    pub async fn connect(
        config: StoreConfig,
        pool: Arc<dyn Pool>,
        transport: Arc<dyn MetaTransport>,
    ) -> Result<Store> {
        let remote = Arc::new(Remote {
            pool,
            config,
            events: Events::new(),
            transport,
            buckets: parking_lot::Mutex::new(BucketCache::default()),
            contact: Arc::new(FeedContact::new()),
            outage_since: InstantCell::new(),
            feed_back: tokio::sync::Notify::new(),
        });
        let deadline = tokio::time::Instant::now() + CONNECT_PATIENCE;
        let mut attempts = 0u32;
        let head: u64 = loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match remote
                .call_within(MetaCall::FeedHead, left.min(CALL_TIMEOUT))
                .await
            {
                Ok(head) => {
                    remote.contact.touch();
                    break head;
                }
                Err(err @ StoreError::Unavailable(_)) if !left.is_zero() => {
                    if attempts.is_multiple_of(20) {
                        tracing::warn!(error = %err, "waiting for the metadata service");
                    }
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(250).min(left)).await;
                }
                Err(err) => return Err(err),
            }
        };
        tokio::spawn(follow_feed(Arc::downgrade(&remote), head));
        Ok(Store {
            engine: Engine::Remote(remote),
        })
    }

    /// Answers one metadata call from another gateway (the request body of
    /// the service's endpoint) with the answer's bytes. Never fails: errors
    /// travel inside the answer.
    ///
    /// `signature`: the one the call came with. A change whose signature
    /// this store took before (kept across restarts) is refused as a
    /// replay.
    pub async fn serve_meta(&self, request: &[u8], signature: Option<CallSignature>) -> Vec<u8> {
        self.serve_meta_by(request, signature, None).await
    }

    /// [`Store::serve_meta`] for a caller that waits for the answer until
    /// `answer_by` at most: a long poll of the feed is held until then at
    /// the latest, not for the whole wait it asks.
    pub async fn serve_meta_by(
        &self,
        request: &[u8],
        signature: Option<CallSignature>,
        answer_by: Option<std::time::Instant>,
    ) -> Vec<u8> {
        let Engine::Local(inner) = &self.engine else {
            return encode_answer(
                Err(StoreError::Internal(
                    "this gateway is not the metadata service".into(),
                )),
                Vec::new(),
            );
        };
        let call = match decode_call(request) {
            Ok(call) => call,
            Err(err) => return encode_answer(Err(err), Vec::new()),
        };
        if let (Some(signature), true) = (signature, call.writes()) {
            // Recorded before the call runs, without an fsync of its own:
            // the call's batch syncs the WAL, this record included. A
            // call refused after this keeps its record, which only a
            // replay would find.
            let taken = self
                .blocking(move |inner| {
                    let now_secs = inner.now_secs();
                    inner.check_signed_call(&signature, now_secs)?;
                    let mut batch = inner.batch();
                    inner.record_signed_call(&mut batch, &signature, now_secs)?;
                    batch.write(false)
                })
                .await;
            if let Err(refusal) = taken {
                return encode_answer(Err(refusal), Vec::new());
            }
        }
        let (outcome, events) = self.answer_call(inner, call, answer_by).await;
        encode_answer(outcome, events)
    }

    /// Whether a metadata call (as [`Store::serve_meta`] takes it) may change
    /// something; `None` when it cannot be decoded. A replicated service
    /// puts such calls in its log and answers the others itself.
    pub fn meta_call_writes(request: &[u8]) -> Option<bool> {
        Self::meta_call_kind(request).map(|kind| kind.writes)
    }

    /// [`Store::meta_call_writes`], and the log version a replicated
    /// service's members must run to apply the call.
    pub fn meta_call_kind(request: &[u8]) -> Option<MetaCallKind> {
        decode_call(request).ok().map(|call| MetaCallKind {
            writes: call.writes(),
            log_version: call.log_version(),
            keeps_objects: call.keeps_objects(),
        })
    }

    /// How long the service may hold `request` before answering by design
    /// (a long poll of the feed); zero for other calls.
    pub fn meta_call_wait(request: &[u8]) -> Duration {
        match decode_call(request) {
            Ok(MetaCall::FeedWait { wait_ms, .. }) => {
                Duration::from_millis(wait_ms.min(MAX_FEED_WAIT_MS))
            }
            _ => Duration::ZERO,
        }
    }

    /// A call that reads next to nothing, to learn who leads a replicated
    /// service: its leader answers it as any read, another member names
    /// the leader it follows.
    pub fn leader_probe_call() -> Vec<u8> {
        serde_json::to_vec(&MetaCall::FeedHead).unwrap_or_default()
    }

    /// The call that deletes the objects expired before `now_secs`, for the
    /// leader of a replicated log to append (replicas do not expire objects
    /// on their own: see [`StoreConfig::log_replica`]).
    pub fn expiry_call(now_secs: u64) -> Vec<u8> {
        serde_json::to_vec(&MetaCall::ExpireDue { now_secs }).unwrap_or_default()
    }

    /// The call that trims the change feed as this replica's followers
    /// allow, for the leader of a replicated log to append; `None` when
    /// nothing is to be trimmed. The cut and the follower marks behind it
    /// travel in the log, so every replica holds the same events for the
    /// same followers and a new leader keeps what a lagging one has not
    /// confirmed. `leading_since`: when this member began to lead (the
    /// followers' polls come to the leader only).
    pub async fn feed_trim_call(
        &self,
        leading_since: std::time::Instant,
    ) -> Result<Option<Vec<u8>>> {
        let trim = self
            .blocking(move |inner| inner.plan_feed_trim(Some(leading_since)))
            .await?;
        Ok(trim.and_then(|trim| serde_json::to_vec(&MetaCall::TrimFeed { trim }).ok()))
    }

    /// Applies one entry of a replicated metadata log: the call runs as
    /// [`Store::serve_meta`] runs it, but with the entry's clock and random
    /// bytes, so every replica applying the same entries in the same order
    /// holds the same records and the same feed; every batch it commits also
    /// records `context.marker` ([`Store::applied_marker`]), so a replica
    /// restarting knows which entries its database already holds. Entries
    /// must be applied one at a time. `Err` is a failure of this store's
    /// own database, not an answer: the replica no longer matches the others.
    /// A call that commits writes so in one batch (an entry is applied
    /// whole or not at all). The answer is empty when `context.answered`
    /// is false.
    pub async fn apply_meta(&self, request: &[u8], context: ApplyContext) -> Result<Vec<u8>> {
        let Engine::Local(inner) = &self.engine else {
            return Err(StoreError::Internal(
                "a replica must be a local store".into(),
            ));
        };
        let call = match decode_call(request) {
            Ok(call) if context.log_version < PINS_LOG_VERSION => call.without_pins(),
            Ok(call) => call,
            Err(err) => return Ok(encode_answer(Err(err), Vec::new())),
        };
        if let Some(signature) = context.signature {
            let now_secs = (context.at_ms.max(0) as u64) / 1000;
            match self
                .blocking(move |inner| inner.check_signed_call(&signature, now_secs))
                .await
            {
                Ok(()) => {}
                Err(err @ StoreError::Db(_)) => return Err(err),
                // Refused alike on every replica; nothing is recorded.
                Err(refusal) if context.answered => {
                    return Ok(encode_answer(Err(refusal), Vec::new()));
                }
                Err(_) => return Ok(Vec::new()),
            }
        }
        *inner.pinned.lock() = Some(Pinned {
            at_ms: context.at_ms,
            nonce: context.nonce,
            marker: context.marker,
            events: context.answered.then(Vec::new),
            signature: context.signature,
        });
        let mut outcome = self.run_call(inner, call, None).await;
        // A call that committed nothing (refused, or a delete of nothing)
        // is recorded all the same: replayed later, it could find
        // something to change.
        let unrecorded = inner
            .pinned
            .lock()
            .as_ref()
            .is_some_and(|pinned| pinned.signature.is_some());
        if unrecorded
            && !matches!(outcome, Err(StoreError::Db(_)))
            && let Err(err) = self.blocking(|inner| inner.commit(inner.batch())).await
        {
            outcome = Err(err);
        }
        // Not unpinned when the future is dropped (only at shutdown): the
        // blocking part of the call may still commit, and must do so with
        // the entry's marker and clock; the next entry pins its own.
        // Entries are applied one at a time, so the events published
        // meanwhile are exactly this call's.
        let events = inner
            .pinned
            .lock()
            .take()
            .and_then(|pinned| pinned.events)
            .unwrap_or_default();
        match outcome {
            // The replica's own database failed: no answer, the member stops.
            Err(err @ StoreError::Db(_)) => Err(err),
            // Anything else the call met, every replica meets alike.
            outcome if context.answered => Ok(encode_answer(outcome, events)),
            _ => Ok(Vec::new()),
        }
    }

    /// The marker of the last applied entry whose call changed something
    /// (entries after it changed nothing, or are not applied yet).
    pub async fn applied_marker(&self) -> Result<Option<Vec<u8>>> {
        self.blocking(|inner| inner.space().get(CF_DEFAULT, APPLIED_MARKER))
            .await
    }

    /// Records `marker` alone (fsynced): for entries that carry no call
    /// (membership changes) but must not be applied twice either.
    pub async fn record_applied_marker(&self, marker: Vec<u8>) -> Result<()> {
        self.blocking(move |inner| {
            let mut batch = inner.batch();
            batch.put(CF_DEFAULT, APPLIED_MARKER, marker)?;
            inner.commit(batch)
        })
        .await
    }

    async fn answer_call(
        &self,
        inner: &Inner,
        call: MetaCall,
        answer_by: Option<std::time::Instant>,
    ) -> (Result<serde_json::Value>, Vec<ChangeEvent>) {
        let first_seq = inner.next_feed_seq();
        let writes = call.writes();
        let outcome = self.run_call(inner, call, answer_by).await;
        let next_seq = inner.next_feed_seq();
        // Events of concurrent calls may be among these; purging for them
        // twice is harmless, missing the caller's own is not.
        let events = if writes && next_seq > first_seq {
            self.feed_written_since(first_seq - 1, (next_seq - first_seq) as usize)
                .await
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        (outcome, events)
    }

    async fn run_call(
        &self,
        inner: &Inner,
        call: MetaCall,
        answer_by: Option<std::time::Instant>,
    ) -> Result<serde_json::Value> {
        fn value<T: Serialize>(result: Result<T>) -> Result<serde_json::Value> {
            serde_json::to_value(result?).map_err(|err| StoreError::Internal(err.to_string()))
        }
        if call.keeps_objects() {
            inner.refuse_unrouted_objects()?;
        }
        match call {
            MetaCall::FeedHead => value(Ok(inner.next_feed_seq() - 1)),
            MetaCall::FeedOldest => value(self.blocking(|inner| inner.oldest_feed_seq()).await),
            MetaCall::FeedWait {
                after,
                limit,
                wait_ms,
                follower,
            } => value({
                if let Some(tag) = follower {
                    inner.followers.confirm(tag, after, crate::store::now_ms());
                }
                let left = answer_by.map_or(u64::MAX, |by| {
                    by.saturating_duration_since(std::time::Instant::now())
                        .as_millis() as u64
                });
                let wait_ms = wait_ms.min(MAX_FEED_WAIT_MS).min(left);
                self.feed_wait(after, limit.min(FEED_BATCH), wait_ms).await
            }),
            MetaCall::CreateBucket {
                account,
                name,
                region,
                attrs,
            } => value(
                self.create_bucket_with(&account, &name, &region, attrs)
                    .await,
            ),
            MetaCall::SwapBucket { expected, new } => {
                let name = expected.name.clone();
                value(
                    self.update_bucket(&name, move |info| {
                        if *info != expected {
                            return Err(StoreError::Conflict);
                        }
                        info.clone_from(&new);
                        Ok(())
                    })
                    .await,
                )
            }
            MetaCall::Bucket { name } => value(self.bucket(&name).await),
            MetaCall::ListBuckets { account } => value(self.list_buckets(&account).await),
            MetaCall::DeleteBucket { name, pin } => {
                value(self.delete_bucket_in(&name, pin.as_ref()).await)
            }
            MetaCall::PutBucketMarker { marker } => value(self.put_bucket_marker(&marker).await),
            MetaCall::DeleteBucketIncarnation { name, incarnation } => {
                value(self.delete_bucket_incarnation(&name, incarnation).await)
            }
            MetaCall::IndexGroups => value(self.index_groups().await),
            MetaCall::RecordIndexGroups { count } => {
                value(self.record_index_groups(count, None).await)
            }
            MetaCall::RecordIndexGroupsHeldBy { count, held_by } => {
                value(self.record_index_groups(count, Some(held_by)).await)
            }
            MetaCall::SplitIntoIndexGroups { count } => value(self.split_in_place(count).await),
            MetaCall::PutObject { info, conditions } => {
                value(self.commit_put(info, conditions).await)
            }
            MetaCall::HeadObject { bucket, key } => value(self.head_object(&bucket, &key).await),
            MetaCall::DeleteObject { bucket, key, pin } => {
                value(self.delete_object_version(&bucket, &key, None, pin).await)
            }
            MetaCall::DeleteObjectVersion {
                bucket,
                key,
                version,
                pin,
            } => value(
                self.delete_object_version(&bucket, &key, Some(version), pin)
                    .await,
            ),
            MetaCall::RenameObject {
                bucket,
                key,
                to_bucket,
                to_key,
                pin,
                to_pin,
            } => value(
                self.rename_object_in(
                    (&bucket, &key, pin.as_ref()),
                    (&to_bucket, &to_key, to_pin.as_ref()),
                )
                .await,
            ),
            MetaCall::ReplaceObjectMeta {
                bucket,
                key,
                meta,
                etag,
                pin,
            } => value(
                self.replace_object_meta_in(&bucket, &key, meta, etag, pin)
                    .await,
            ),
            MetaCall::CatalogGet { namespace, key } => {
                value(self.catalog_get(&namespace, &key).await.map(Base64Opt))
            }
            MetaCall::CatalogList { namespace } => {
                value(self.catalog_list(&namespace).await.map(|records| {
                    records
                        .into_iter()
                        .map(|(key, value)| (key, Base64(value)))
                        .collect::<Vec<_>>()
                }))
            }
            MetaCall::CatalogSwap {
                namespace,
                key,
                expected,
                write,
            } => value(
                self.catalog_update(&namespace, &key, move |current| {
                    if current != expected.as_deref() {
                        return Err(StoreError::Conflict);
                    }
                    Ok((write.clone(), ()))
                })
                .await,
            ),
            MetaCall::ListObjects { bucket, query } => {
                value(self.list_objects(&bucket, query).await)
            }
            MetaCall::ListUploads { bucket, query } => {
                value(self.list_uploads(&bucket, query).await)
            }
            MetaCall::CreateUpload {
                bucket,
                key,
                meta,
                checksum_algorithm,
            } => value(
                self.create_upload(&bucket, &key, meta, checksum_algorithm)
                    .await,
            ),
            MetaCall::Upload {
                bucket,
                key,
                upload_id,
            } => value(self.upload(&bucket, &key, &upload_id).await),
            MetaCall::PutPart { upload, part } => value(self.commit_part(upload, part).await),
            MetaCall::ListParts {
                upload,
                after,
                max_parts,
            } => value(self.list_parts(&upload, after, max_parts).await),
            MetaCall::AbortUpload { upload } => value(self.abort_upload(&upload).await),
            MetaCall::CompleteUpload {
                upload,
                chosen,
                conditions,
            } => value(self.complete_upload(&upload, chosen, conditions).await),
            MetaCall::BucketUsage { bucket } => value(self.bucket_usage(&bucket).await),
            MetaCall::BucketUsages { buckets } => value(self.bucket_usages(buckets).await),
            MetaCall::AccountUsage { account } => value(self.account_usage(&account).await),
            MetaCall::ExpireDue { now_secs } => value(self.expire_due(now_secs).await),
            MetaCall::TrimFeed { trim } => {
                value(self.blocking(move |inner| inner.trim_feed(&trim)).await)
            }
        }
    }

    /// Events after `after`, waiting up to `wait_ms` for the first one.
    async fn feed_wait(&self, after: u64, limit: usize, wait_ms: u64) -> Result<Vec<ChangeEvent>> {
        // Subscribed before reading, so an event committed in between wakes us.
        let mut changes = self.subscribe();
        let events = self.feed_since(after, limit).await?;
        if !events.is_empty() {
            return Ok(events);
        }
        let woken = tokio::time::timeout(Duration::from_millis(wait_ms), async {
            loop {
                match changes.recv().await {
                    Ok(event) if event.seq <= after => continue,
                    _ => return,
                }
            }
        })
        .await;
        if woken.is_ok() {
            tokio::time::sleep(FEED_LINGER).await;
        }
        self.feed_since(after, limit).await
    }

    /// The catalog's read-decide-write on a remote store: decide on the
    /// record as read, and have the service apply the decision only if the
    /// record is still that one.
    pub(crate) async fn remote_catalog_update<T, F>(
        &self,
        remote: &Remote,
        namespace: &str,
        key: &str,
        mut decide: F,
    ) -> Result<T>
    where
        F: FnMut(Option<&[u8]>) -> Result<(CatalogWrite, T)>,
    {
        for attempt in 0..SWAP_ATTEMPTS {
            back_off(attempt).await;
            let current = self.catalog_get(namespace, key).await?;
            let (write, outcome) = decide(current.as_deref())?;
            if write == CatalogWrite::Keep {
                return Ok(outcome);
            }
            let swapped: Result<()> = remote
                .call(MetaCall::CatalogSwap {
                    namespace: namespace.to_owned(),
                    key: key.to_owned(),
                    expected: current,
                    write,
                })
                .await;
            match swapped {
                Err(StoreError::Conflict) => continue,
                Err(err) => return Err(err),
                Ok(()) => return Ok(outcome),
            }
        }
        Err(StoreError::Conflict)
    }

    /// [`Store::update_bucket`] on a remote store, decided the same way.
    pub(crate) async fn remote_update_bucket<F>(
        &self,
        remote: &Remote,
        name: &str,
        mut change: F,
    ) -> Result<BucketInfo>
    where
        F: FnMut(&mut BucketInfo) -> Result<()>,
    {
        for attempt in 0..SWAP_ATTEMPTS {
            back_off(attempt).await;
            // Decided on the record as it is, not as this gateway last saw it.
            let name = name.to_owned();
            let expected: BucketInfo = remote.call(MetaCall::Bucket { name }).await?;
            let mut new = expected.clone();
            change(&mut new)?;
            match remote.call(MetaCall::SwapBucket { expected, new }).await {
                Err(StoreError::Conflict) => continue,
                other => return other,
            }
        }
        Err(StoreError::Conflict)
    }
}

/// After a lost race for a record, waits a little (more each time, with
/// jitter) so that racing deciders spread out.
async fn back_off(attempt: u32) {
    if attempt > 0 {
        let most = 2u64 << attempt.min(6);
        tokio::time::sleep(Duration::from_millis(rand::random_range(1..=most))).await;
    }
}

/// Publishes the changes other gateways make, from the service's feed.
///
/// Feed numbers are taken before the commit's fsync, so a later number can
/// be readable before an earlier one: events past a hole are published at
/// once, and the position stays at the hole until it fills or
/// [`FEED_HOLE_WAIT`] shows its commit failed. Where changes may have gone
/// unseen (the feed failed to answer, or the service no longer keeps the
/// events after the position), a [`ChangeKind::Resync`] tells the listeners.
async fn follow_feed(remote: Weak<Remote>, head: u64) {
    // Published: everything up to `done`, and `ahead` past a hole.
    let mut done = head.saturating_sub(FEED_START_OVERLAP);
    let mut ahead = std::collections::BTreeSet::new();
    let mut hole_since: Option<tokio::time::Instant> = None;
    loop {
        let Some(live) = remote.upgrade() else { return };
        let failing = live.feed_failing();
        // After a failure, a poll that answers at once: calls wait for it.
        let wait = if ahead.is_empty() && !failing {
            FEED_WAIT
        } else {
            Duration::ZERO
        };
        let call = MetaCall::FeedWait {
            after: done,
            limit: FEED_BATCH,
            wait_ms: wait.as_millis() as u64,
            follower: Some(live.config.follower.clone()),
        };
        let events = match live
            .call_within::<Vec<serde_json::Value>>(call, wait + FEED_SLACK)
            .await
        {
            Ok(events) => {
                live.contact.touch();
                live.set_reachable(true);
                events
            }
            Err(err) => {
                // Changes may go unseen for a while: buckets are read
                // afresh after each failure, and the listeners told once
                // per outage (a resync, which forgets them too).
                if live.set_reachable(false) {
                    live.publish(resync_event(done));
                } else {
                    live.forget_buckets();
                }
                drop(live);
                tracing::warn!(error = %err, "following the metadata service's feed failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        for event in events {
            let Some(seq) = event.get("seq").and_then(serde_json::Value::as_u64) else {
                continue;
            };
            if seq <= done || !ahead.insert(seq) {
                continue;
            }
            match serde_json::from_value::<ChangeEvent>(event) {
                Ok(event) => live.publish(event),
                Err(err) => {
                    tracing::debug!(error = %err, "change event of an unknown kind skipped")
                }
            }
        }
        while ahead.remove(&(done + 1)) {
            done += 1;
        }
        if ahead.is_empty() {
            hole_since = None;
            continue;
        }
        if hole_since.is_none()
            && let Ok(oldest) = live.call::<u64>(MetaCall::FeedOldest).await
            && oldest > done + 1
        {
            // The service dropped events this follower never saw.
            tracing::warn!(
                position = done,
                oldest,
                "the metadata service no longer keeps the changes after this gateway's position"
            );
            live.publish(resync_event(done));
            done = oldest - 1;
            // The next poll (at once: `ahead` is not empty) publishes from there.
            continue;
        }
        let since = *hole_since.get_or_insert_with(tokio::time::Instant::now);
        if since.elapsed() >= FEED_HOLE_WAIT {
            // Numbers burnt by failed commits: step over to the next event.
            done = ahead.first().map_or(done + 1, |first| first - 1);
            hole_since = None;
        } else {
            drop(live);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Tells this process's listeners that changes before `position` may have
/// gone unseen.
pub(crate) fn resync_event(position: u64) -> ChangeEvent {
    ChangeEvent {
        seq: position,
        kind: ChangeKind::Resync,
        bucket: String::new(),
        key: None,
        etag: None,
        at_ms: crate::store::now_ms(),
    }
}

fn encode_answer(outcome: Result<serde_json::Value>, events: Vec<ChangeEvent>) -> Vec<u8> {
    let answer = Answer {
        outcome: outcome.map_err(WireError::from),
        events: events
            .iter()
            .filter_map(|event| serde_json::to_value(event).ok())
            .collect(),
    };
    serde_json::to_vec(&answer).unwrap_or_else(|err| {
        let fallback = serde_json::json!({
            "outcome": { "Err": { "Internal": format!("encoding the answer: {err}") } }
        });
        fallback.to_string().into_bytes()
    })
}

/// Catalog values are opaque bytes: they travel as base64.
#[derive(Serialize, Deserialize)]
pub(crate) struct Base64(#[serde(with = "base64_bytes")] pub(crate) Vec<u8>);

#[derive(Serialize, Deserialize)]
pub(crate) struct Base64Opt(#[serde(with = "opt_base64")] pub(crate) Option<Vec<u8>>);

pub(crate) mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(data: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(data))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        STANDARD.decode(text).map_err(D::Error::custom)
    }
}

mod opt_base64 {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Wrapped(#[serde(with = "super::base64_bytes")] Vec<u8>);

    pub fn serialize<S: Serializer>(
        data: &Option<Vec<u8>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        data.as_ref()
            .map(|data| Wrapped(data.clone()))
            .serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        Ok(Option::<Wrapped>::deserialize(deserializer)?.map(|Wrapped(data)| data))
    }
}
