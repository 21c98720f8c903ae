//! [`Store`]: opening the metadata database, bucket and object operations, the
//! commit path shared by puts, deletes and multipart completion, and the background
//! tasks (extent garbage collection, feed trimming).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use parking_lot::{Mutex, RwLock};
use rocksdb::{ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options};
use strata_pool::wire::CallSignature;
use strata_pool::{ALL_TAGS, ExtentFilter, ExtentId, ExtentLeads, ExtentTags, LeadCounts, Pool};
use tokio::sync::broadcast;

use crate::error::{Result, StoreError};
use crate::feed::{
    ChangeEvent, ChangeKind, FeedFollower, FeedNumbers, FollowerTag, Followers, RecordedMark,
};
use crate::keys::{self, CF_BUCKETS, CF_DEFAULT, CF_FEED, CF_GC, CF_OBJECTS, CF_USAGE};
use crate::records::{self, BucketInfo, ExtentRef, ObjectInfo, ObjectMeta};
use crate::remote::{FEED_LEASE, MetaCall, Remote};
use crate::routed::{EXTENTS_TAGGED, INDEX_GROUPS, INDEX_GROUPS_HELD_BY, Routed};
use crate::space::{Batch, KeySpace, Space, family, unprefixed};
use crate::usage::{self, UsageDelta};
use crate::write::{self, StageError, StageOptions, StagedBody};

/// Configuration of the object layer.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Directory of the metadata database.
    pub dir: PathBuf,
    /// Largest object a single put may store.
    pub max_object_size: u64,
    /// Smallest size of every multipart part but the last.
    pub min_part_size: u64,
    /// Largest part number of a multipart upload.
    pub max_part_number: u32,
    /// Bodies up to this size live inside their metadata record.
    pub inline_max: usize,
    /// How long replaced extents stay readable, so that a reader streaming the
    /// previous version of an object is not cut off.
    pub gc_grace: Duration,
    /// How many change-feed events are kept whatever the followers confirmed.
    pub feed_retention: u64,
    /// Events a follower that polled within this time has not confirmed
    /// are kept beyond `feed_retention`, so a gateway cut off for a while
    /// purges exactly what changed instead of revalidating everything.
    pub feed_hold: Duration,
    /// The most events kept for followers that lag ([`StoreConfig::feed_hold`]):
    /// one gone for good must not grow the feed without end.
    pub feed_hold_max: u64,
    /// How this store names itself to the service whose feed it follows
    /// (connected stores only).
    pub follower: FollowerTag,
    /// Extents older than this that no record refers to are deleted. It must
    /// exceed the longest time a body can take to upload. `None`: never (a pool
    /// shared with writers this store does not know of).
    pub orphan_age: Option<Duration>,
    /// About how many extent ids the orphan sweep holds at once: it lists
    /// the pool and collects the records' references a span of first bytes
    /// at a time, each span holding about this many of the pool's extents
    /// (at least one first byte's, a 256th of the pool), so its memory
    /// stays bounded whatever the pool's size.
    pub orphan_sweep_batch: u64,
    /// Whether this store is one replica of a replicated metadata log: it
    /// then changes nothing on its own — no expiry sweep, no feed trimming —
    /// and the log's leader puts those changes in the log
    /// ([`Store::expiry_call`], [`Store::feed_trim_call`]).
    pub log_replica: bool,
}

/// What an orphan sweep did ([`Store::sweep_orphans`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Extents deleted.
    pub deleted: usize,
    /// Spans of first bytes the pool was taken in
    /// ([`StoreConfig::orphan_sweep_batch`]).
    pub spans: usize,
}

/// [`StoreConfig::orphan_sweep_batch`]'s default: a span's ids, listed and
/// referenced, then take tens of megabytes.
pub const DEFAULT_ORPHAN_SWEEP_BATCH: u64 = 1_000_000;

impl StoreConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StoreConfig {
            dir: dir.into(),
            max_object_size: 5 * 1024 * 1024 * 1024,
            min_part_size: 5 * 1024 * 1024,
            max_part_number: 10_000,
            inline_max: 16 * 1024,
            gc_grace: Duration::from_secs(600),
            feed_retention: 1_000_000,
            feed_hold: Duration::from_secs(3600),
            feed_hold_max: 10_000_000,
            follower: FollowerTag::random(),
            orphan_age: Some(Duration::from_secs(24 * 3600)),
            orphan_sweep_batch: DEFAULT_ORPHAN_SWEEP_BATCH,
            log_replica: false,
        }
    }
}

/// Conditions a write must meet against the object it replaces.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct PutConditions {
    /// `If-Match`: the current ETag must be one of these (`*` matches any object).
    pub if_match: Option<Vec<String>>,
    /// `If-None-Match: *`: the key must not exist.
    pub if_none_match_any: bool,
    /// The account the writer found owning the bucket when it decided the
    /// write was allowed. A bucket deleted and created again by another
    /// account since is not the bucket it meant: the write is refused
    /// (`NoSuchBucket`) instead of landing there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_owner: Option<String>,
    /// The bucket's incarnation the writer decided against
    /// ([`BucketInfo::incarnation`]): the same account deleting and
    /// creating the bucket again meanwhile (new settings, new ACLs) also
    /// makes it another bucket (`NoSuchBucket`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_incarnation: Option<u64>,
}

impl PutConditions {
    /// Conditions that only pin the bucket's owner (see `bucket_owner`).
    pub fn owned_by(account: &str) -> PutConditions {
        PutConditions {
            bucket_owner: Some(account.to_owned()),
            ..PutConditions::default()
        }
    }

    /// Conditions that pin `bucket` as the writer found it: its owner and
    /// its incarnation.
    pub fn for_bucket(bucket: &BucketInfo) -> PutConditions {
        let mut conditions = PutConditions::default();
        conditions.pin_bucket(bucket);
        conditions
    }

    /// Pins `bucket` as [`PutConditions::for_bucket`] does, keeping the
    /// object's conditions.
    pub fn pin_bucket(&mut self, bucket: &BucketInfo) {
        self.bucket_owner = Some(bucket.account.clone());
        self.bucket_incarnation = Some(bucket.incarnation);
    }

    /// Conditions that pin the bucket as `pin` names it (a door that kept
    /// the [`BucketPin`] of the record it checked).
    pub fn pinned(pin: &BucketPin) -> PutConditions {
        PutConditions {
            bucket_owner: Some(pin.owner.clone()),
            bucket_incarnation: pin.incarnation,
            ..PutConditions::default()
        }
    }

    fn check(&self, bucket: &BucketInfo, current: Option<&ObjectInfo>) -> Result<()> {
        still_the_bucket(
            bucket,
            self.bucket_owner.as_deref(),
            self.bucket_incarnation,
        )?;
        if self.if_none_match_any && current.is_some() {
            return Err(StoreError::PreconditionFailed);
        }
        if let Some(tags) = &self.if_match {
            let Some(current) = current else {
                return Err(StoreError::NoSuchKey);
            };
            if !tags
                .iter()
                .any(|tag| tag == "*" || tag.trim_matches('"') == current.etag)
            {
                return Err(StoreError::PreconditionFailed);
            }
        }
        Ok(())
    }
}

/// The bucket a caller decided a change of its objects against (a delete,
/// a rename, a metadata replacement): the account it found owning it and,
/// when it read the record, its incarnation. A bucket deleted and created
/// again since by another account, or by any account when the incarnation
/// is pinned, is not the bucket it meant: the change is refused
/// (`NoSuchBucket`) instead of landing there. [`PutConditions`] pins a
/// write the same way.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BucketPin {
    pub owner: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<u64>,
}

impl BucketPin {
    /// Pins the owner alone: for a caller that only knows the account
    /// whose bucket it authorised (a Swift URL's, an FTP session's).
    pub fn owned_by(account: &str) -> BucketPin {
        BucketPin {
            owner: account.to_owned(),
            incarnation: None,
        }
    }

    /// Pins `bucket` as the caller found it: its owner and its incarnation.
    pub fn of(bucket: &BucketInfo) -> BucketPin {
        BucketPin {
            owner: bucket.account.clone(),
            incarnation: Some(bucket.incarnation),
        }
    }

    pub(crate) fn check(&self, bucket: &BucketInfo) -> Result<()> {
        still_the_bucket(bucket, Some(&self.owner), self.incarnation)
    }
}

/// `NoSuchBucket` unless `bucket` has the owner and the incarnation a
/// caller pinned.
fn still_the_bucket(
    bucket: &BucketInfo,
    owner: Option<&str>,
    incarnation: Option<u64>,
) -> Result<()> {
    let other_owner = owner.is_some_and(|owner| owner != bucket.account);
    let other_incarnation =
        incarnation.is_some_and(|incarnation| incarnation != bucket.incarnation);
    if other_owner || other_incarnation {
        return Err(StoreError::NoSuchBucket);
    }
    Ok(())
}

/// `bucket`'s record checked against `pin`, when there is one.
fn check_pin(bucket: &BucketInfo, pin: Option<&BucketPin>) -> Result<()> {
    pin.map_or(Ok(()), |pin| pin.check(bucket))
}

/// How often the background task looks for orphaned extents.
const ORPHAN_SWEEP_INTERVAL: Duration = Duration::from_secs(6 * 3600);

/// Number of lock stripes serialising commits to the same key.
const KEY_LOCK_STRIPES: usize = 256;

/// Why a root that began a split and did not end it records no groups.
const STILL_SPLITTING: &str = "the store's buckets are still moving into their index groups";

/// How a refusal for another holder of the index groups starts
/// ([`Store::route_held_by`]): final, whatever the count recorded.
const HELD_ELSEWHERE: &str = "the store's index groups are held elsewhere";

/// Who holds a root's index groups, as a refusal says it.
fn held_by_text(held_by: Option<&str>) -> String {
    match held_by {
        Some(held_by) => format!("by {held_by}"),
        None => "with the root group".into(),
    }
}

/// How often a gateway's start asks again for its index groups to be
/// recorded while the metadata service cannot answer yet.
const RECORD_RETRY: Duration = Duration::from_secs(1);

pub(crate) struct Inner {
    /// Shared with the stores of the other groups in the database
    /// ([`Store::open_group`]); read and written through [`Inner::space`].
    db: Arc<DB>,
    keys: KeySpace,
    pub(crate) pool: Arc<dyn Pool>,
    pub(crate) config: StoreConfig,
    /// Object commits hold it shared; creating and deleting buckets hold it
    /// exclusively, so no object lands in a bucket while it is being deleted.
    pub(crate) bucket_lock: RwLock<()>,
    key_locks: Vec<Mutex<()>>,
    /// Serialises read-modify-write updates of catalog records.
    pub(crate) catalog_lock: Mutex<()>,
    feed_numbers: Arc<FeedNumbers>,
    /// The index groups recorded in this (root) store ([`Store::route`]),
    /// 0 if none: the calls of another process that would put objects in
    /// the root's space are refused then.
    index_groups: std::sync::atomic::AtomicU16,
    pub(crate) events: Arc<Events>,
    /// Set while a replicated log entry is applied: its clock, its random
    /// bytes and the marker its batch records (see `Store::apply_meta`).
    pub(crate) pinned: Mutex<Option<Pinned>>,
    /// Who follows this store's feed from other gateways, and how far.
    pub(crate) followers: Followers,
    /// The groups' stores opened beside this one (the root's): one store
    /// per space, or two would number events and lock keys apart.
    groups: Mutex<std::collections::HashMap<u16, std::sync::Weak<Inner>>>,
    /// An index group's: its root recorded the groups and, if split, this
    /// replica is seeded ([`Store::wait_for_root_split`]); a root never
    /// takes it back, and only a wipe or an import of the replica does.
    pub(crate) root_split_seen: std::sync::atomic::AtomicBool,
}

/// What makes applying one log entry the same on every replica: the time
/// and the random bytes the leader chose, and the marker (the entry's
/// position) written in the same batch as the entry's changes.
pub(crate) struct Pinned {
    pub(crate) at_ms: i64,
    pub(crate) nonce: [u8; 16],
    pub(crate) marker: Vec<u8>,
    /// The events the entry's call published, for its answer (kept only
    /// when someone waits for it).
    pub(crate) events: Option<Vec<ChangeEvent>>,
    /// The call's signature, recorded by the batch that applies it
    /// (`signed_calls.rs`) and then taken out.
    pub(crate) signature: Option<CallSignature>,
}

/// Called with every change as it is committed, before the write returns.
pub type ChangeListener = Arc<dyn Fn(&ChangeEvent) + Send + Sync>;

/// Where changes go once they are durable: this process's listeners and
/// subscribers.
pub(crate) struct Events {
    listeners: RwLock<Vec<ChangeListener>>,
    feed_tx: broadcast::Sender<ChangeEvent>,
}

impl Events {
    pub(crate) fn new() -> Arc<Events> {
        let (feed_tx, _) = broadcast::channel(4096);
        Arc::new(Events {
            listeners: RwLock::new(Vec::new()),
            feed_tx,
        })
    }

    pub(crate) fn publish(&self, event: ChangeEvent) {
        for listener in self.listeners.read().iter() {
            listener(&event);
        }
        // No subscriber is not an error: the feed is also persisted.
        let _ = self.feed_tx.send(event);
    }
}

/// See [`Store::feed_lease`]. Holds no reference to the store itself.
#[derive(Clone)]
pub struct FeedLease(Vec<Arc<crate::remote::FeedContact>>);

impl FeedLease {
    pub fn holds(&self) -> bool {
        self.0.iter().all(|contact| contact.holds())
    }
}

/// The object layer. Cheap to clone; every clone shares one database (or one
/// connection to the metadata service) and pool.
#[derive(Clone)]
pub struct Store {
    pub(crate) engine: Engine,
}

/// Where the metadata lives: this process's RocksDB, or the gateway that
/// holds it, reached through [`crate::MetaTransport`]; or, for a store
/// whose buckets' objects are in index groups, stores of either kind that
/// each call is sent to ([`crate::routed`]).
#[derive(Clone)]
pub(crate) enum Engine {
    Local(Arc<Inner>),
    Remote(Arc<Remote>),
    Routed(Arc<Routed>),
}

/// A handle that does not keep the store open: for tasks that follow the
/// store but must not outlive it.
#[derive(Clone)]
pub struct WeakStore {
    engine: WeakEngine,
}

#[derive(Clone)]
enum WeakEngine {
    Local(std::sync::Weak<Inner>),
    Remote(std::sync::Weak<Remote>),
    Routed(std::sync::Weak<Routed>),
}

impl WeakStore {
    pub fn upgrade(&self) -> Option<Store> {
        let engine = match &self.engine {
            WeakEngine::Local(inner) => Engine::Local(inner.upgrade()?),
            WeakEngine::Remote(remote) => Engine::Remote(remote.upgrade()?),
            WeakEngine::Routed(routed) => Engine::Routed(routed.upgrade()?),
        };
        Some(Store { engine })
    }
}

impl Store {
    pub fn downgrade(&self) -> WeakStore {
        let engine = match &self.engine {
            Engine::Local(inner) => WeakEngine::Local(Arc::downgrade(inner)),
            Engine::Remote(remote) => WeakEngine::Remote(Arc::downgrade(remote)),
            Engine::Routed(routed) => WeakEngine::Routed(Arc::downgrade(routed)),
        };
        WeakStore { engine }
    }

    /// Opens (creating if needed) the metadata database in `config.dir` and starts
    /// the background tasks on the current tokio runtime.
    pub fn open(config: StoreConfig, pool: Arc<dyn Pool>) -> Result<Store> {
        let options = db_options();
        // A database from before per-bucket usage counters gets them counted once.
        let existing = DB::list_cf(&options, &config.dir).unwrap_or_default();
        let count_usage = !existing.is_empty() && !existing.iter().any(|name| name == CF_USAGE);
        let db = Arc::new(DB::open_cf_descriptors(
            &options,
            &config.dir,
            family_descriptors(),
        )?);
        let root = KeySpace::root();
        if count_usage {
            usage::rebuild(Space {
                db: &db,
                keys: &root,
            })?;
        }
        Self::open_space(db, root, config, pool)
    }

    /// Opens the store of metadata group `group` in this store's database:
    /// its records live beside this one's, under keys of their own
    /// ([`crate::space`]), and its commits share the database's log. The
    /// pool is this store's; `config.dir` is not used. A group already open
    /// is that store, whatever `config` says. For the index groups of
    /// `docs/design/index-on-the-ring.md`.
    pub fn open_group(&self, group: u16, config: StoreConfig) -> Result<Store> {
        let Engine::Local(inner) = &self.engine else {
            return Err(StoreError::Internal(
                "a group opened beside a remote store".into(),
            ));
        };
        if !inner.keys.is_root() {
            return Err(StoreError::Internal(
                "a group opened beside another group's store".into(),
            ));
        }
        let mut groups = inner.groups.lock();
        if let Some(open) = groups.get(&group).and_then(std::sync::Weak::upgrade) {
            return Ok(Store {
                engine: Engine::Local(open),
            });
        }
        let store = Self::open_space(
            inner.db.clone(),
            KeySpace::group(group),
            config,
            inner.pool.clone(),
        )?;
        if let Engine::Local(opened) = &store.engine {
            groups.insert(group, Arc::downgrade(opened));
        }
        Ok(store)
    }

    fn open_space(
        db: Arc<DB>,
        keys: KeySpace,
        config: StoreConfig,
        pool: Arc<dyn Pool>,
    ) -> Result<Store> {
        let space = Space {
            db: &db,
            keys: &keys,
        };
        let next_feed_seq = feed_seq_after_last(space)?;
        let index_groups = recorded_index_groups(space)?;
        let store = Store {
            engine: Engine::Local(Arc::new(Inner {
                db,
                keys,
                pool,
                config,
                bucket_lock: RwLock::new(()),
                key_locks: (0..KEY_LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
                catalog_lock: Mutex::new(()),
                feed_numbers: FeedNumbers::starting_at(next_feed_seq),
                index_groups: std::sync::atomic::AtomicU16::new(index_groups),
                events: Events::new(),
                pinned: Mutex::new(None),
                followers: Followers::new(),
                groups: Mutex::new(Default::default()),
                root_split_seen: std::sync::atomic::AtomicBool::new(false),
            })),
        };
        if let Engine::Local(inner) = &store.engine {
            inner.adopt_recorded_followers()?;
        }
        store.spawn_background_tasks();
        Ok(store)
    }

    pub fn config(&self) -> &StoreConfig {
        match &self.engine {
            Engine::Local(inner) => &inner.config,
            Engine::Remote(remote) => &remote.config,
            Engine::Routed(routed) => routed.root.config(),
        }
    }

    pub(crate) fn pool(&self) -> &Arc<dyn Pool> {
        match &self.engine {
            Engine::Local(inner) => &inner.pool,
            Engine::Remote(remote) => &remote.pool,
            Engine::Routed(routed) => routed.root.pool(),
        }
    }

    fn events(&self) -> &Events {
        match &self.engine {
            Engine::Local(inner) => &inner.events,
            Engine::Remote(remote) => &remote.events,
            Engine::Routed(routed) => &routed.events,
        }
    }

    /// Whether the metadata lives in another process ([`Store::connect`]).
    pub fn is_remote(&self) -> bool {
        match &self.engine {
            Engine::Routed(routed) => routed.root.is_remote(),
            _ => self.remote().is_some(),
        }
    }

    /// Whether this process has seen every change to the store until a
    /// moment ago, through [`Store::on_change`] and [`Store::subscribe`]:
    /// always for the store that holds the metadata; for a connected one,
    /// while the service's feed keeps answering. What a gateway keeps from
    /// the store (its edge cache) is to be trusted only while this holds.
    /// A routed store's holds while every group's does.
    pub fn feed_lease(&self) -> FeedLease {
        match &self.engine {
            Engine::Local(_) => FeedLease(Vec::new()),
            Engine::Remote(remote) => FeedLease(vec![remote.contact.clone()]),
            Engine::Routed(routed) => FeedLease(
                routed
                    .stores()
                    .flat_map(|store| store.feed_lease().0)
                    .collect(),
            ),
        }
    }

    /// The store that keeps the catalog (and the bucket records): this one,
    /// or a routed store's root group's. What follows the catalog alone
    /// (accounts and keys) holds its feed, not every index group's: an
    /// index group's outage says nothing of the catalog.
    pub fn catalog_store(&self) -> Store {
        self.group_store(0).unwrap_or(self).clone()
    }

    /// The metadata service this store is a client of, if it is one.
    pub(crate) fn remote(&self) -> Option<&Arc<Remote>> {
        match &self.engine {
            Engine::Remote(remote) => Some(remote),
            Engine::Local(_) | Engine::Routed(_) => None,
        }
    }

    /// The stores a routed store sends its calls to, if it is one.
    pub(crate) fn routed(&self) -> Option<&Arc<Routed>> {
        match &self.engine {
            Engine::Routed(routed) => Some(routed),
            Engine::Local(_) | Engine::Remote(_) => None,
        }
    }

    /// Calls `listener` with every change, synchronously, after its batch is
    /// durable and before the write that made it returns: for in-process
    /// state that must never lag a write this process acknowledged (the
    /// edge cache). It must be quick and must not call the store.
    pub fn on_change(&self, listener: ChangeListener) {
        self.events().listeners.write().push(listener);
    }

    /// Follows the change feed from now on. A follower that lags by more than the
    /// channel's capacity sees `Lagged` and re-reads with [`Store::feed_since`].
    ///
    /// On a store [`Store::connect`]ed to another gateway's, events arrive as
    /// that gateway's answers and feed bring them: an event may come twice, and
    /// after a later one. What follows changes must be idempotent (purges and
    /// reloads are).
    pub fn subscribe(&self) -> broadcast::Receiver<ChangeEvent> {
        self.events().feed_tx.subscribe()
    }

    /// Up to `limit` retained events with a sequence number above `after`.
    pub async fn feed_since(&self, after: u64, limit: usize) -> Result<Vec<ChangeEvent>> {
        if let Some(routed) = self.routed() {
            // Each group numbers its own events: a position is the root's,
            // whose feed has bucket and catalog changes, no objects'.
            return Box::pin(routed.root.feed_since(after, limit)).await;
        }
        if let Some(remote) = self.remote() {
            let wait_ms = 0;
            return remote
                .call(MetaCall::FeedWait {
                    after,
                    limit,
                    wait_ms,
                    follower: None,
                })
                .await;
        }
        // Up to the first number still in flight: a follower then sees a
        // hole only where a commit failed (`FeedNumbers`).
        self.blocking(move |inner| {
            let below = inner.feed_numbers.readable_below();
            inner.feed_events(after, limit, below)
        })
        .await
    }

    /// Up to `limit` events written with a number above `after`, whatever
    /// is still in flight before them: the events of a call just answered,
    /// which its caller must see at once (its edge's read-your-writes),
    /// not when the commits before them land.
    pub(crate) async fn feed_written_since(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<ChangeEvent>> {
        self.blocking(move |inner| inner.feed_events(after, limit, u64::MAX))
            .await
    }

    // ---- buckets -------------------------------------------------------------------

    pub async fn create_bucket(
        &self,
        account: &str,
        name: &str,
        region: &str,
    ) -> Result<BucketInfo> {
        self.create_bucket_with(account, name, region, Default::default())
            .await
    }

    /// Creates a bucket with its door settings in place from the start, so
    /// that no reader sees it without them (a Swift container PUT with ACLs).
    pub async fn create_bucket_with(
        &self,
        account: &str,
        name: &str,
        region: &str,
        attrs: std::collections::BTreeMap<String, String>,
    ) -> Result<BucketInfo> {
        validate_bucket_name(name)?;
        if let Some(routed) = self.routed() {
            let group = routed.group(name);
            let created =
                crate::grouped::create_bucket(&routed.root, group, account, name, region, attrs);
            return Box::pin(created).await;
        }
        if let Some(remote) = self.remote() {
            return remote
                .call(MetaCall::CreateBucket {
                    account: account.to_owned(),
                    name: name.to_owned(),
                    region: region.to_owned(),
                    attrs,
                })
                .await;
        }
        let mut info = BucketInfo {
            name: name.to_owned(),
            account: account.to_owned(),
            created_ms: self.now_ms(),
            region: region.to_owned(),
            incarnation: 0,
            attrs,
        };
        self.blocking(move |inner| {
            let _exclusive = inner.bucket_lock.write();
            if let Some(existing) = inner.space().get(CF_BUCKETS, info.name.as_bytes())? {
                let existing: BucketInfo = records::decode(&existing)?;
                return Err(if existing.account == info.account {
                    StoreError::BucketAlreadyOwnedByYou
                } else {
                    StoreError::BucketAlreadyExists
                });
            }
            let mut batch = inner.batch();
            info.incarnation = inner.next_bucket_incarnation(&mut batch)?;
            batch.put(CF_BUCKETS, info.name.as_bytes(), records::encode(&info)?)?;
            let event = inner.feed_event(
                &mut batch,
                ChangeKind::BucketCreated,
                &info.name,
                None,
                None,
            )?;
            inner.commit(batch)?;
            inner.publish(event);
            Ok(info)
        })
        .await
    }

    /// Changes a bucket's settings with `change`, durably, and announces it
    /// (`ChangeKind::BucketUpdated`): ACL changes must reach every edge.
    ///
    /// `change` may run more than once (a store over another gateway's
    /// decides again when another writer came first).
    pub async fn update_bucket<F>(&self, name: &str, mut change: F) -> Result<BucketInfo>
    where
        F: FnMut(&mut BucketInfo) -> Result<()> + Send + 'static,
    {
        if let Some(routed) = self.routed() {
            return Box::pin(routed.root.update_bucket(name, change)).await;
        }
        if let Some(remote) = self.remote() {
            return self.remote_update_bucket(remote, name, change).await;
        }
        let name = name.to_owned();
        self.blocking(move |inner| {
            let _exclusive = inner.bucket_lock.write();
            let found = inner.bucket_info(&name)?;
            let mut info = found.clone();
            change(&mut info)?;
            // Identity is not the caller's to change.
            info.name = name.clone();
            info.account = found.account;
            info.created_ms = found.created_ms;
            info.incarnation = found.incarnation;
            let mut batch = inner.batch();
            batch.put(CF_BUCKETS, name.as_bytes(), records::encode(&info)?)?;
            let event =
                inner.feed_event(&mut batch, ChangeKind::BucketUpdated, &name, None, None)?;
            inner.commit(batch)?;
            inner.publish(event);
            Ok(info)
        })
        .await
    }

    /// [`Store::update_bucket`] of the bucket as the caller found it
    /// (`pin`): one deleted and created again since, by another account (or
    /// at all, when the incarnation is pinned), is refused (`NoSuchBucket`)
    /// and left as it is. A setting decided for one bucket (public-read, a
    /// policy) must not land on the next bucket of that name.
    pub async fn update_bucket_pinned<F>(
        &self,
        name: &str,
        pin: BucketPin,
        mut change: F,
    ) -> Result<BucketInfo>
    where
        F: FnMut(&mut BucketInfo) -> Result<()> + Send + 'static,
    {
        self.update_bucket(name, move |bucket| {
            pin.check(bucket)?;
            change(bucket)
        })
        .await
    }

    /// [`Store::bucket`] as the store holds it now, never a connected
    /// store's cached copy: for a decision a stale record would make wrong.
    pub(crate) async fn bucket_as_stored(&self, name: &str) -> Result<BucketInfo> {
        if self.routed().is_none()
            && let Some(remote) = self.remote()
        {
            let name = name.to_owned();
            return remote.call(MetaCall::Bucket { name }).await;
        }
        self.bucket(name).await
    }

    pub async fn bucket(&self, name: &str) -> Result<BucketInfo> {
        if let Some(routed) = self.routed() {
            return Box::pin(routed.root.bucket(name)).await;
        }
        let name = name.to_owned();
        if let Some(remote) = self.remote() {
            return remote.bucket(name).await;
        }
        self.blocking(move |inner| inner.bucket_info(&name)).await
    }

    /// Every bucket `account` owns, by name.
    pub async fn list_buckets(&self, account: &str) -> Result<Vec<BucketInfo>> {
        if let Some(routed) = self.routed() {
            return Box::pin(routed.root.list_buckets(account)).await;
        }
        let account = account.to_owned();
        if let Some(remote) = self.remote() {
            return remote.call(MetaCall::ListBuckets { account }).await;
        }
        self.blocking(move |inner| {
            let mut out = Vec::new();
            for item in inner.space().iter(CF_BUCKETS, IteratorMode::Start)? {
                let (_, value) = item?;
                let info: BucketInfo = records::decode(&value)?;
                if info.account == account {
                    out.push(info);
                }
            }
            Ok(out)
        })
        .await
    }

    /// Deletes an empty bucket; its unfinished multipart uploads go with it.
    pub async fn delete_bucket(&self, name: &str) -> Result<()> {
        self.delete_bucket_in(name, None).await
    }

    /// [`Store::delete_bucket`] of the bucket as the caller found it
    /// (`pin`): one deleted and created again since, by another account (or
    /// at all, when the incarnation is pinned), is left alone
    /// (`NoSuchBucket`).
    pub async fn delete_bucket_pinned(&self, name: &str, pin: &BucketPin) -> Result<()> {
        self.delete_bucket_in(name, Some(pin)).await
    }

    pub(crate) async fn delete_bucket_in(&self, name: &str, pin: Option<&BucketPin>) -> Result<()> {
        if let Some(routed) = self.routed() {
            let group = routed.group(name);
            let deleted = crate::grouped::delete_bucket(&routed.root, group, name, pin);
            return Box::pin(deleted).await;
        }
        let name = name.to_owned();
        let pin = pin.cloned();
        if let Some(remote) = self.remote() {
            return remote.call(MetaCall::DeleteBucket { name, pin }).await;
        }
        self.blocking(move |inner| {
            let _exclusive = inner.bucket_lock.write();
            let found = inner.bucket_info(&name)?;
            if let Some(pin) = &pin {
                pin.check(&found)?;
            }
            inner.remove_empty_bucket(inner.batch(), &name)
        })
        .await
    }

    /// How many index groups this store's buckets keep their objects in
    /// ([`Store::route`]): 0 for a store never routed, whose objects are
    /// its own. A connected store asks the store it is connected to.
    pub async fn index_groups(&self) -> Result<u16> {
        if let Some(routed) = self.routed() {
            return Ok(routed.group_count());
        }
        if let Some(remote) = self.remote() {
            return remote.call(MetaCall::IndexGroups).await;
        }
        self.blocking(|inner| recorded_index_groups(inner.space()))
            .await
    }

    /// The store that keeps group `group`'s records, to answer the calls
    /// another process sends it ([`Store::serve_meta`]): 0 the root's (this
    /// store itself, unless it is routed), from 1 an index group's.
    pub fn group_store(&self, group: u16) -> Option<&Store> {
        match (self.routed(), group) {
            (None, 0) => Some(self),
            (None, _) => None,
            (Some(routed), group) => routed.stores().nth(usize::from(group)),
        }
    }

    /// Records that this (root) store's buckets keep their objects in
    /// `count` index groups ([`Store::route`]), or checks that it is the
    /// number recorded; a connected root, in the store it is connected to
    /// (a replicated one through its log). Answers whether the groups'
    /// extents are tagged by bucket ([`Store::index_extents_tagged`]).
    /// `held_by`: as [`Store::route_held_by`] takes it.
    pub(crate) async fn record_index_groups(
        &self,
        count: u16,
        held_by: Option<String>,
    ) -> Result<bool> {
        if let Some(remote) = self.remote() {
            return record_index_groups_remotely(remote, count, held_by).await;
        }
        self.blocking(move |inner| inner.record_index_groups(count, held_by.as_deref()))
            .await
    }

    // ---- bucket markers ------------------------------------------------------------
    //
    // An index group (`docs/design/index-on-the-ring.md`) holds its buckets'
    // objects but not their bucket records, which stay with the root group.
    // What the group's object calls check instead is a *marker*: a bucket
    // record with the root's name, owner and incarnation and none of its
    // settings, in the group's own key space, so that every object call
    // runs there unchanged.

    /// Writes the marker of `bucket` (the root group's record): its
    /// identity without its settings. Idempotent for one incarnation.
    /// `NoSuchBucket` for an incarnation this store deleted
    /// ([`Store::delete_bucket_incarnation`]) or older than its marker's: a
    /// marker put that came late must not bring back a deleted bucket. A
    /// marker of an earlier incarnation is replaced when it holds no object
    /// (its uploads go with it), and kept otherwise (`Corrupt`): its objects
    /// belong to a bucket the root no longer has, and writing over them
    /// would hide them.
    pub async fn put_bucket_marker(&self, bucket: &BucketInfo) -> Result<BucketInfo> {
        validate_bucket_name(&bucket.name)?;
        let marker = bucket.marker();
        if let Some(remote) = self.remote() {
            return remote.call(MetaCall::PutBucketMarker { marker }).await;
        }
        self.blocking(move |inner| {
            let _exclusive = inner.bucket_lock.write();
            let name = marker.name.as_str();
            inner.check_marker_group(name)?;
            if inner
                .removed_incarnation(name)?
                .is_some_and(|removed| marker.incarnation <= removed)
            {
                return Err(StoreError::NoSuchBucket);
            }
            let mut batch = inner.batch();
            match inner.bucket_info(name) {
                Ok(found) if found.incarnation == marker.incarnation => return Ok(found),
                Ok(found) if found.incarnation > marker.incarnation => {
                    return Err(StoreError::NoSuchBucket);
                }
                Ok(_) => match inner.remove_bucket_into(&mut batch, name) {
                    Err(StoreError::BucketNotEmpty) => {
                        return Err(StoreError::Corrupt(format!(
                            "bucket {name}'s group holds objects of an earlier incarnation"
                        )));
                    }
                    other => other?,
                },
                Err(StoreError::NoSuchBucket) => {}
                Err(err) => return Err(err),
            }
            batch.put(CF_BUCKETS, name.as_bytes(), records::encode(&marker)?)?;
            inner.commit(batch)?;
            Ok(marker)
        })
        .await
    }

    /// Deletes incarnation `incarnation` of bucket `name` if it holds no
    /// object (`BucketNotEmpty` otherwise), with its unfinished uploads,
    /// and remembers the incarnation as deleted, so that no marker of it,
    /// or of any earlier one, is written again ([`Store::put_bucket_marker`]):
    /// callers name incarnations the root gave, never one ahead of it. Done once no record
    /// of that incarnation is left: a bucket already gone, never marked
    /// here, or of another incarnation is success, so the step can be
    /// retried.
    pub async fn delete_bucket_incarnation(&self, name: &str, incarnation: u64) -> Result<()> {
        let name = name.to_owned();
        if let Some(remote) = self.remote() {
            let call = MetaCall::DeleteBucketIncarnation { name, incarnation };
            return remote.call(call).await;
        }
        self.blocking(move |inner| {
            let _exclusive = inner.bucket_lock.write();
            let fenced = inner
                .removed_incarnation(&name)?
                .is_some_and(|removed| incarnation <= removed);
            let mut batch = inner.batch();
            if !fenced {
                batch.put(
                    CF_DEFAULT,
                    &removed_bucket_key(&name),
                    incarnation.to_be_bytes(),
                )?;
            }
            match inner.bucket_info(&name) {
                Ok(found) if found.incarnation == incarnation => {
                    inner.remove_empty_bucket(batch, &name)
                }
                Ok(_) | Err(StoreError::NoSuchBucket) if fenced => Ok(()),
                Ok(_) | Err(StoreError::NoSuchBucket) => inner.commit(batch),
                Err(err) => Err(err),
            }
        })
        .await
    }

    // ---- objects -------------------------------------------------------------------

    /// Streams a body into the pool. Nothing is visible until the staged body is
    /// committed with [`Store::put_object`]; dropping it releases its extents.
    pub async fn stage<S, E>(
        &self,
        bucket: &str,
        body: S,
        options: &StageOptions,
    ) -> Result<StagedBody, StageError<E>>
    where
        S: Stream<Item = std::result::Result<Bytes, E>>,
    {
        let inline_max = self.config().inline_max;
        write::stage(self.pool().clone(), bucket, body, options, inline_max).await
    }

    /// Makes a staged body the current version of `bucket/key`, atomically and
    /// durably: the record, the change-feed event and the deferred deletion of the
    /// replaced extents are one fsynced batch.
    pub async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        staged: StagedBody,
        meta: ObjectMeta,
        checksum: Option<(crate::ChecksumAlgorithm, String)>,
        conditions: PutConditions,
    ) -> Result<ObjectInfo> {
        validate_key(key)?;
        staged.check_bucket(bucket)?;
        if let Some(group) = self.routed_group(bucket).await {
            let group = group?;
            let put = group.put_object(bucket, key, staged, meta, checksum, conditions);
            return Box::pin(put).await;
        }
        let info = ObjectInfo {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            size: staged.size,
            etag: hex::encode(staged.digests.md5),
            last_modified_ms: self.now_ms(),
            meta,
            checksum,
            part_sizes: Vec::new(),
            extents: staged.extents.clone(),
            inline: staged.inline.clone(),
            copy_nonce: None,
        };
        self.commit_staged(staged, info, conditions).await
    }

    /// Commits `info`, whose bytes are `staged`'s, into this store (not
    /// routed: a group's, or one without groups).
    pub(crate) async fn commit_staged(
        &self,
        staged: StagedBody,
        info: ObjectInfo,
        conditions: PutConditions,
    ) -> Result<ObjectInfo> {
        staged.check_bucket(&info.bucket)?;
        if self.routed().is_some() {
            return Err(StoreError::Internal(
                "a staged body committed past its bucket's group".into(),
            ));
        }
        if let Some(remote) = self.remote() {
            let call = MetaCall::PutObject { info, conditions };
            return hand_over(staged, remote.clone(), call).await;
        }
        self.blocking(move |inner| {
            let (bucket, key) = (info.bucket.clone(), info.key.clone());
            let info = inner.commit_object(&bucket, &key, &conditions, |_, _| Ok(info))?;
            // Only now do the extents belong to the record.
            drop(staged.take_extents());
            Ok(info)
        })
        .await
    }

    /// The commit of [`Store::put_object`], for the metadata service.
    pub(crate) async fn commit_put(
        &self,
        info: ObjectInfo,
        conditions: PutConditions,
    ) -> Result<ObjectInfo> {
        validate_key(&info.key)?;
        self.blocking(move |inner| {
            let (bucket, key) = (info.bucket.clone(), info.key.clone());
            inner.commit_object(&bucket, &key, &conditions, |_, _| Ok(info))
        })
        .await
    }

    pub async fn head_object(&self, bucket: &str, key: &str) -> Result<ObjectInfo> {
        if let Some(routed) = self.routed() {
            let head = |group: Store| async move { Box::pin(group.head_object(bucket, key)).await };
            return routed.in_group(bucket, head).await;
        }
        let (bucket, key) = (bucket.to_owned(), key.to_owned());
        if let Some(remote) = self.remote() {
            return remote.call(MetaCall::HeadObject { bucket, key }).await;
        }
        self.blocking(move |inner| {
            inner.bucket_info(&bucket)?;
            inner
                .object_info(&bucket, &key)?
                .filter(|info| !info.is_expired())
                .ok_or(StoreError::NoSuchKey)
        })
        .await
    }

    /// Deletes `bucket/key` and returns what was deleted; a missing key is not an
    /// error (S3 and Swift both treat deletes as idempotent at this layer).
    pub async fn delete_object(&self, bucket: &str, key: &str) -> Result<Option<ObjectInfo>> {
        self.delete_object_version(bucket, key, None, None).await
    }

    /// [`Store::delete_object`] in the bucket `pin` names: a bucket of
    /// that name deleted and created again since is left alone
    /// (`NoSuchBucket`).
    pub async fn delete_object_pinned(
        &self,
        bucket: &str,
        key: &str,
        pin: &BucketPin,
    ) -> Result<Option<ObjectInfo>> {
        self.delete_object_version(bucket, key, None, Some(pin.clone()))
            .await
    }

    /// [`Store::delete_object`], only while the object is still `version`
    /// when one is given ([`ObjectInfo::same_version`]): a later write of
    /// the key is left alone, and nothing is deleted (`None`).
    pub(crate) async fn delete_object_version(
        &self,
        bucket: &str,
        key: &str,
        version: Option<ObjectInfo>,
        pin: Option<BucketPin>,
    ) -> Result<Option<ObjectInfo>> {
        if let Some(routed) = self.routed() {
            let delete = |group: Store| {
                let (version, pin) = (version.clone(), pin.clone());
                async move { Box::pin(group.delete_object_version(bucket, key, version, pin)).await }
            };
            return routed.in_group(bucket, delete).await;
        }
        let (bucket, key) = (bucket.to_owned(), key.to_owned());
        if let Some(remote) = self.remote() {
            let call = match version {
                // Its inline body says nothing of the version.
                Some(version) => MetaCall::DeleteObjectVersion {
                    bucket,
                    key,
                    version: ObjectInfo {
                        inline: None,
                        ..version
                    },
                    pin,
                },
                None => MetaCall::DeleteObject { bucket, key, pin },
            };
            return remote.call(call).await;
        }
        self.blocking(move |inner| {
            let _shared = inner.bucket_lock.read();
            check_pin(&inner.bucket_info(&bucket)?, pin.as_ref())?;
            let _key_guard = inner.lock_key(&bucket, &key);
            let Some(current) = inner.object_info(&bucket, &key)? else {
                return Ok(None);
            };
            if version.is_some_and(|version| !current.same_version(&version)) {
                return Ok(None);
            }
            let mut batch = inner.batch();
            batch.delete(CF_OBJECTS, &keys::object_key(&bucket, &key))?;
            inner.add_usage(&mut batch, &bucket, UsageDelta::remove(&current))?;
            inner.schedule_gc(&mut batch, &current.extents)?;
            let event = inner.feed_event(
                &mut batch,
                ChangeKind::ObjectDeleted,
                &bucket,
                Some(&key),
                Some(&current.etag),
            )?;
            inner.commit(batch)?;
            inner.publish(event);
            // Past its X-Delete-At, it was already gone to every reader:
            // its record is removed all the same, and the caller told none
            // was there (Swift's DELETE answers 404).
            let expired = current.is_expired_at(inner.now_secs());
            Ok((!expired).then_some(current))
        })
        .await
    }

    /// Moves the object `bucket/key` to `to_bucket/to_key` without copying
    /// its bytes: one fsynced batch removes the old record and writes the new
    /// one (replacing whatever was there), so a reader sees the object under
    /// one name or the other, never both missing and never half of it. The
    /// change feed gets a delete for the old name and a put for the new, so
    /// caches purge both. FTP's RNFR/RNTO and FUSE renames are built on it.
    /// Between buckets of two index groups it is a copy and a delete instead
    /// ([`crate::routed`]): for a moment a reader may see both names.
    pub async fn rename_object(
        &self,
        bucket: &str,
        key: &str,
        to_bucket: &str,
        to_key: &str,
    ) -> Result<ObjectInfo> {
        self.rename_object_in((bucket, key, None), (to_bucket, to_key, None))
            .await
    }

    /// [`Store::rename_object`] between the buckets the pins name: if
    /// either was deleted and created again since, nothing moves
    /// (`NoSuchBucket`).
    pub async fn rename_object_pinned(
        &self,
        (bucket, key, pin): (&str, &str, &BucketPin),
        (to_bucket, to_key, to_pin): (&str, &str, &BucketPin),
    ) -> Result<ObjectInfo> {
        self.rename_object_in((bucket, key, Some(pin)), (to_bucket, to_key, Some(to_pin)))
            .await
    }

    pub(crate) async fn rename_object_in(
        &self,
        (bucket, key, pin): (&str, &str, Option<&BucketPin>),
        (to_bucket, to_key, to_pin): (&str, &str, Option<&BucketPin>),
    ) -> Result<ObjectInfo> {
        validate_key(to_key)?;
        if let Some(routed) = self.routed() {
            let group = routed.marked(bucket).await?;
            if !std::ptr::eq(group, routed.group(to_bucket)) {
                let moved = self.rename_across_groups(
                    routed,
                    (bucket, key, pin),
                    (to_bucket, to_key, to_pin),
                );
                return Box::pin(moved).await;
            }
            routed.marked(to_bucket).await?;
            let renamed = group.rename_object_in((bucket, key, pin), (to_bucket, to_key, to_pin));
            return Box::pin(renamed).await;
        }
        let (pin, to_pin) = (pin.cloned(), to_pin.cloned());
        let (bucket, key) = (bucket.to_owned(), key.to_owned());
        let (to_bucket, to_key) = (to_bucket.to_owned(), to_key.to_owned());
        if let Some(remote) = self.remote() {
            let call = MetaCall::RenameObject {
                bucket,
                key,
                to_bucket,
                to_key,
                pin,
                to_pin,
            };
            return remote.call(call).await;
        }
        self.blocking(move |inner| {
            let _shared = inner.bucket_lock.read();
            check_pin(&inner.bucket_info(&bucket)?, pin.as_ref())?;
            check_pin(&inner.bucket_info(&to_bucket)?, to_pin.as_ref())?;
            let _key_guards = inner.lock_key_pair((&bucket, &key), (&to_bucket, &to_key));
            let mut info = inner
                .object_info(&bucket, &key)?
                .filter(|info| !info.is_expired_at(inner.now_secs()))
                .ok_or(StoreError::NoSuchKey)?;
            if bucket == to_bucket && key == to_key {
                return Ok(info);
            }
            let replaced = inner.object_info(&to_bucket, &to_key)?;
            let mut batch = inner.batch();
            batch.delete(CF_OBJECTS, &keys::object_key(&bucket, &key))?;
            inner.add_usage(&mut batch, &bucket, UsageDelta::remove(&info))?;
            info.bucket.clone_from(&to_bucket);
            info.key.clone_from(&to_key);
            batch.put(
                CF_OBJECTS,
                &keys::object_key(&to_bucket, &to_key),
                encode_object(&info)?,
            )?;
            inner.add_usage(
                &mut batch,
                &to_bucket,
                UsageDelta::replace(replaced.as_ref(), info.size),
            )?;
            inner.index_expiry(&mut batch, &info)?;
            if let Some(replaced) = &replaced {
                inner.schedule_gc(&mut batch, &replaced.extents)?;
            }
            let deleted = inner.feed_event(
                &mut batch,
                ChangeKind::ObjectDeleted,
                &bucket,
                Some(&key),
                Some(&info.etag),
            )?;
            let put = inner.feed_event(
                &mut batch,
                ChangeKind::ObjectPut,
                &to_bucket,
                Some(&to_key),
                Some(&info.etag),
            )?;
            inner.commit(batch)?;
            inner.publish(deleted);
            inner.publish(put);
            Ok(info)
        })
        .await
    }

    /// Replaces the metadata of `bucket/key`, keeping its bytes (Swift's object
    /// POST). With `etag`, only if the object still has that ETag, so a
    /// concurrent overwrite is never given stale metadata.
    pub async fn replace_object_meta(
        &self,
        bucket: &str,
        key: &str,
        meta: ObjectMeta,
        etag: Option<String>,
    ) -> Result<ObjectInfo> {
        self.replace_object_meta_in(bucket, key, meta, etag, None)
            .await
    }

    /// [`Store::replace_object_meta`] in the bucket `pin` names: a bucket
    /// of that name deleted and created again since is left alone
    /// (`NoSuchBucket`).
    pub async fn replace_object_meta_pinned(
        &self,
        (bucket, pin): (&str, &BucketPin),
        key: &str,
        meta: ObjectMeta,
        etag: Option<String>,
    ) -> Result<ObjectInfo> {
        self.replace_object_meta_in(bucket, key, meta, etag, Some(pin.clone()))
            .await
    }

    pub(crate) async fn replace_object_meta_in(
        &self,
        bucket: &str,
        key: &str,
        meta: ObjectMeta,
        etag: Option<String>,
        pin: Option<BucketPin>,
    ) -> Result<ObjectInfo> {
        if let Some(routed) = self.routed() {
            let replace = |group: Store| {
                let (meta, etag, pin) = (meta.clone(), etag.clone(), pin.clone());
                async move { Box::pin(group.replace_object_meta_in(bucket, key, meta, etag, pin)).await }
            };
            return routed.in_group(bucket, replace).await;
        }
        let (bucket, key) = (bucket.to_owned(), key.to_owned());
        if let Some(remote) = self.remote() {
            let call = MetaCall::ReplaceObjectMeta {
                bucket,
                key,
                meta,
                etag,
                pin,
            };
            return remote.call(call).await;
        }
        self.blocking(move |inner| {
            let _shared = inner.bucket_lock.read();
            check_pin(&inner.bucket_info(&bucket)?, pin.as_ref())?;
            let _key_guard = inner.lock_key(&bucket, &key);
            let mut info = inner
                .object_info(&bucket, &key)?
                .filter(|info| !info.is_expired_at(inner.now_secs()))
                .ok_or(StoreError::NoSuchKey)?;
            if etag.is_some_and(|etag| etag != info.etag) {
                return Err(StoreError::PreconditionFailed);
            }
            info.meta = meta;
            info.last_modified_ms = inner.now_ms();
            let mut batch = inner.batch();
            inner.index_expiry(&mut batch, &info)?;
            batch.put(
                CF_OBJECTS,
                &keys::object_key(&bucket, &key),
                encode_object(&info)?,
            )?;
            let event = inner.feed_event(
                &mut batch,
                ChangeKind::ObjectPut,
                &bucket,
                Some(&key),
                Some(&info.etag),
            )?;
            inner.commit(batch)?;
            inner.publish(event);
            Ok(info)
        })
        .await
    }

    /// Runs metadata work on the blocking pool: RocksDB calls and fsyncs
    /// block. On a thread of [`Store::applying`], it runs right there.
    pub(crate) async fn blocking<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        let Engine::Local(inner) = &self.engine else {
            return Err(StoreError::Internal(
                "local metadata work asked of a remote store".into(),
            ));
        };
        if ON_APPLYING_THREAD.get() {
            // A panic stays the call's failure, as on the blocking pool,
            // alike on every replica, instead of stopping the member.
            return std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(inner)))
                .unwrap_or_else(|_| Err(StoreError::Internal("metadata task panicked".into())));
        }
        let inner = inner.clone();
        tokio::task::spawn_blocking(move || work(&inner))
            .await
            .map_err(|err| StoreError::Internal(format!("metadata task failed: {err}")))?
    }

    fn spawn_background_tasks(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Engine::Local(inner) = &self.engine else {
            return;
        };
        let weak = Arc::downgrade(inner);
        // The root's store sweeps for the whole database. A group's must
        // not sweep alone: it reads its own space's references only, and
        // without its tags' span would take other groups' extents.
        let sweeps_orphans = inner.keys.is_root();
        runtime.spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(5));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_sweep: Option<std::time::Instant> = None;
            loop {
                ticker.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let store = Store {
                    engine: Engine::Local(inner),
                };
                if let Some(orphan_age) = store.config().orphan_age
                    && sweeps_orphans
                    && last_sweep.is_none_or(|at| at.elapsed() > ORPHAN_SWEEP_INTERVAL)
                {
                    last_sweep = Some(std::time::Instant::now());
                    let older_than = std::time::SystemTime::now()
                        .checked_sub(orphan_age)
                        .unwrap_or(std::time::UNIX_EPOCH);
                    match store.sweep_orphans(older_than, ALL_TAGS).await {
                        Ok(Swept { deleted: 0, .. }) => {}
                        Ok(Swept { deleted, spans }) => {
                            tracing::info!(n_swept = deleted, spans, "deleted orphaned extents")
                        }
                        Err(err) => tracing::warn!(error = %err, "orphan sweep failed"),
                    }
                }
                if let Err(err) = store.collect_garbage(now_ms() as u64).await {
                    tracing::warn!(error = %err, "extent garbage collection failed");
                }
                if store.config().log_replica {
                    continue;
                }
                let trimmed = store
                    .blocking(|inner| match inner.plan_feed_trim(None)? {
                        Some(trim) => inner.trim_feed(&trim),
                        None => Ok(()),
                    })
                    .await;
                if let Err(err) = trimmed {
                    tracing::warn!(error = %err, "change feed trimming failed");
                }
                match store.expire_round(crate::expiry::now_secs()).await {
                    Ok(0) => {}
                    Ok(n_expired) => tracing::debug!(n_expired, "deleted expired objects"),
                    Err(err) => tracing::warn!(error = %err, "expiry sweep failed"),
                }
            }
        });
    }

    /// Deletes the extents whose grace period ended before `now_ms`.
    pub(crate) async fn collect_garbage(&self, now_ms: u64) -> Result<usize> {
        let due: Vec<(Vec<u8>, ExtentId)> = self
            .blocking(move |inner| {
                let mut due = Vec::new();
                for item in inner.space().iter(CF_GC, IteratorMode::Start)?.take(1024) {
                    let (key, _) = item?;
                    let Some((when, extent)) = key.split_at_checked(8) else {
                        return Err(StoreError::Corrupt("short gc key".into()));
                    };
                    let when = u64::from_be_bytes(
                        when.try_into()
                            .map_err(|_| StoreError::Corrupt("gc key".into()))?,
                    );
                    if when > now_ms {
                        break;
                    }
                    let id: [u8; 16] = extent
                        .try_into()
                        .map_err(|_| StoreError::Corrupt("gc key extent".into()))?;
                    due.push((key.to_vec(), ExtentId(id)));
                }
                Ok(due)
            })
            .await?;
        let mut done = Vec::with_capacity(due.len());
        for (key, id) in due {
            match self.pool().delete_extent(id).await {
                Ok(()) => done.push(key),
                Err(err) => tracing::warn!(extent = %id, error = %err, "could not delete extent"),
            }
        }
        let n_done = done.len();
        if n_done > 0 {
            self.blocking(move |inner| {
                let mut batch = inner.batch();
                for key in done {
                    batch.delete(CF_GC, &key)?;
                }
                // Losing these deletes in a crash only repeats idempotent work.
                batch.write(false)
            })
            .await?;
        }
        Ok(n_done)
    }

    /// Deletes extents written before `older_than`, with a tag in `tags`,
    /// that no object, part or pending deletion refers to: what a crash
    /// between staging and commit leaves behind.
    ///
    /// The root store reads the references of every space of its database;
    /// an index group's store its own only, so its `tags` must be those
    /// only its records can name ([`crate::group_tags`]). Refused while a
    /// space it reads is half imported ([`Store::import_replica`]).
    ///
    /// It takes the pool a span of ids' first bytes at a time, each span
    /// holding about [`StoreConfig::orphan_sweep_batch`] of its extents
    /// (by [`Pool::count_extents`]), listed and then matched against the
    /// records' references to the span: what it holds at once is bounded
    /// by the batch, not by the pool.
    pub async fn sweep_orphans(
        &self,
        older_than: std::time::SystemTime,
        tags: ExtentTags,
    ) -> Result<Swept> {
        if let Some(routed) = self.routed() {
            return Box::pin(routed.root.sweep_orphans(older_than, tags)).await;
        }
        // Neither sweeps: a root whose index groups other processes hold
        // (`Store::route_held_by` recorded them), which sees none of their
        // records; an index group that holds no bucket, which knows none of
        // its tags' owners (a group just founded beside a pool in use).
        let (held_elsewhere, holds_no_bucket) = self
            .blocking(|inner| {
                let space = inner.space();
                let held_elsewhere = space.get(CF_DEFAULT, INDEX_GROUPS_HELD_BY)?.is_some();
                let holds_no_bucket = inner.keys().group_id().is_some()
                    && space
                        .iter(CF_BUCKETS, IteratorMode::Start)?
                        .next()
                        .is_none();
                Ok((held_elsewhere, holds_no_bucket))
            })
            .await?;
        if held_elsewhere {
            return Err(StoreError::InvalidArgument(
                "a root whose index groups other processes hold sweeps no orphans: it \
                 sees none of their records"
                    .into(),
            ));
        }
        if holds_no_bucket {
            return Ok(Swept {
                deleted: 0,
                spans: 0,
            });
        }
        let filter = ExtentFilter::older_than(older_than).tags(tags);
        let counts = self.pool().count_extents(&filter).await?;
        let spans = sweep_spans(&counts, self.config().orphan_sweep_batch);
        let mut swept = Swept {
            deleted: 0,
            spans: spans.len(),
        };
        for leads in spans {
            match self.sweep_span(&filter.clone().leads(leads)).await {
                Ok(deleted) => swept.deleted += deleted,
                Err(err) => {
                    if swept.deleted > 0 {
                        tracing::info!(
                            n_swept = swept.deleted,
                            "deleted orphaned extents before a span failed"
                        );
                    }
                    return Err(err);
                }
            }
        }
        Ok(swept)
    }

    /// [`Store::sweep_orphans`] over the extents of one span of first bytes.
    async fn sweep_span(&self, filter: &ExtentFilter) -> Result<usize> {
        // List before collecting references: an extent committed in between is
        // then seen as referenced, never swept.
        let candidates = self.pool().list_extents(filter).await?;
        if candidates.is_empty() {
            return Ok(0);
        }
        let leads = filter.leads.clone();
        let referenced = self
            .blocking(move |inner| inner.referenced_extents(&leads))
            .await?;
        let mut n_swept = 0;
        for id in candidates {
            if referenced.contains(&id) {
                continue;
            }
            self.pool().delete_extent(id).await?;
            n_swept += 1;
        }
        Ok(n_swept)
    }

    /// The stores following this one's feed from other gateways that
    /// polled within [`StoreConfig::feed_hold`], by name; none on a
    /// connected store.
    pub fn feed_followers(&self) -> Vec<FeedFollower> {
        match &self.engine {
            Engine::Local(inner) => {
                inner
                    .followers
                    .current(inner.config.feed_hold, inner.next_feed_seq() - 1, now_ms())
            }
            Engine::Remote(_) => Vec::new(),
            Engine::Routed(routed) => routed.root.feed_followers(),
        }
    }
}

/// A cut of the change feed: the events before `keep_from` go, and the
/// follower marks that decided it are recorded with the cut (every replica
/// of a replicated service applies the same one, from its log).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct FeedTrim {
    pub(crate) keep_from: u64,
    pub(crate) followers: Vec<RecordedMark>,
}

impl Inner {
    /// Where the feed may be cut now: events are kept for
    /// [`StoreConfig::feed_retention`], and beyond it those a follower
    /// heard from within [`StoreConfig::feed_hold`] has not confirmed, up
    /// to [`StoreConfig::feed_hold_max`]. `None` when nothing would go and
    /// the followers' positions are those the last trim recorded (so a
    /// quiet feed below its retention still records who follows it, for a
    /// restart or the next leader). `polled_since`: when this store began
    /// to answer the followers' polls (a replicated service's leader), if
    /// later than its start.
    pub(crate) fn plan_feed_trim(
        &self,
        polled_since: Option<std::time::Instant>,
    ) -> Result<Option<FeedTrim>> {
        let next = self.next_feed_seq();
        let config = &self.config;
        let mut keep_from = next.saturating_sub(config.feed_retention);
        let mut marks = Vec::new();
        if !config.feed_hold.is_zero() {
            // Until every follower had the time to poll, the slowest is not
            // known: nothing is trimmed.
            let lease = config.feed_hold.min(FEED_LEASE);
            if !self.followers.complete(polled_since, lease) {
                return Ok(None);
            }
            marks = self.followers.marks(config.feed_hold, now_ms());
            if let Some(slowest) = marks.iter().map(|mark| mark.position + 1).min() {
                let most_held =
                    next.saturating_sub(config.feed_hold_max.max(config.feed_retention));
                keep_from = keep_from.min(slowest.max(most_held));
            }
        }
        let positions = |marks: &[RecordedMark]| {
            marks
                .iter()
                .map(|mark| (mark.id.clone(), mark.position))
                .collect::<Vec<_>>()
        };
        if keep_from <= self.oldest_feed_seq()?
            && positions(&self.recorded_followers()?) == positions(&marks)
        {
            return Ok(None);
        }
        Ok(Some(FeedTrim {
            keep_from,
            followers: marks,
        }))
    }

    /// Cuts the feed as `trim` says, recording its marks in the same batch.
    pub(crate) fn trim_feed(&self, trim: &FeedTrim) -> Result<()> {
        let keep_from = trim.keep_from.min(self.next_feed_seq());
        let mut batch = self.batch();
        batch.delete_range(CF_FEED, &0u64.to_be_bytes(), &keep_from.to_be_bytes())?;
        batch.put(
            CF_DEFAULT,
            FEED_FOLLOWERS,
            records::encode(&trim.followers)?,
        )?;
        self.commit(batch)?;
        self.followers.adopt(&trim.followers);
        Ok(())
    }

    /// The follower marks the last trim recorded.
    fn recorded_followers(&self) -> Result<Vec<RecordedMark>> {
        match self.space().get(CF_DEFAULT, FEED_FOLLOWERS)? {
            Some(bytes) => records::decode(&bytes),
            None => Ok(Vec::new()),
        }
    }

    /// Takes back the follower marks the last trim recorded.
    pub(crate) fn adopt_recorded_followers(&self) -> Result<()> {
        self.followers.adopt(&self.recorded_followers()?);
        Ok(())
    }

    /// The extents the records name: for the root store, those of every
    /// space of the database (the groups share the pool, and an extent
    /// only another group knows is not an orphan); for an index group's,
    /// those of its own space, against which only its buckets' extent tags
    /// may be swept ([`Store::sweep_orphans`]).
    /// Only those whose first byte is in `leads` are kept: what the sweep
    /// holds at once.
    fn referenced_extents(
        &self,
        leads: &ExtentLeads,
    ) -> Result<std::collections::HashSet<ExtentId>> {
        // One snapshot for the three scans: an extent moves between them in
        // one batch (a completed upload's parts become its object's, a
        // replaced object's go to the deletion queue), and scans of three
        // moments could each miss it.
        let snapshot = self.db.snapshot();
        // A space half imported (a snapshot installed while the sweep runs)
        // lacks records it is about to name again.
        let defaults = family(&self.db, CF_DEFAULT)?;
        let mut spaces = vec![self.keys.clone()];
        if self.keys.is_root() {
            // Each group space of the database in turn: the first key of
            // the rest, then past the end of its space.
            let mut from = self.keys.end().to_vec();
            loop {
                let mode = IteratorMode::From(&from, Direction::Forward);
                let Some(first) = snapshot.iterator_cf(defaults, mode).next() else {
                    break;
                };
                let (key, _) = first?;
                let Some(space) = KeySpace::holding(&key) else {
                    return Err(StoreError::Corrupt(format!(
                        "a key of no group's space: {}",
                        hex::encode(&key)
                    )));
                };
                from = space.end().to_vec();
                spaces.push(space);
            }
        }
        for space in spaces {
            let importing = space.key(crate::replica::IMPORTING);
            if snapshot.get_cf(defaults, importing)?.is_some() {
                return Err(StoreError::Unavailable(
                    "a replica import is under way".into(),
                ));
            }
        }
        let scan = |family_name| -> Result<_> {
            let options = if self.keys.is_root() {
                rocksdb::ReadOptions::default()
            } else {
                self.keys.read_options(None)
            };
            let family = family(&self.db, family_name)?;
            Ok(snapshot.iterator_cf_opt(family, options, IteratorMode::Start))
        };
        let mut referenced = std::collections::HashSet::new();
        let mut reference = |id: ExtentId| {
            if leads.contains(&id.lead()) {
                referenced.insert(id);
            }
        };
        for item in scan(CF_OBJECTS)? {
            let (_, value) = item?;
            let info: ObjectInfo = records::decode(&value)?;
            info.extents.iter().for_each(|extent| reference(extent.id));
        }
        for item in scan(keys::CF_PARTS)? {
            let (_, value) = item?;
            let part: crate::multipart::PartInfo = records::decode(&value)?;
            part.extents.iter().for_each(|extent| reference(extent.id));
        }
        for item in scan(CF_GC)? {
            let (key, _) = item?;
            if let Some(id) = unprefixed(&key)
                .get(8..24)
                .and_then(|raw| <[u8; 16]>::try_from(raw).ok())
            {
                reference(ExtentId(id));
            }
        }
        Ok(referenced)
    }

    /// The index groups recorded by [`Store::route`], 0 if none.
    /// Takes `count` as the index groups recorded, once written.
    pub(crate) fn note_index_groups(&self, count: u16) {
        self.index_groups.store(count, Ordering::SeqCst);
    }

    /// The next number of [`BucketInfo::incarnation`], counted in `batch`.
    /// The caller holds the bucket lock exclusively.
    fn next_bucket_incarnation(&self, batch: &mut Batch<'_>) -> Result<u64> {
        let last = match self.space().get(CF_DEFAULT, BUCKET_INCARNATIONS)? {
            Some(raw) => u64_record(&raw, "bucket incarnation counter")?,
            None => 0,
        };
        let next = last + 1;
        batch.put(CF_DEFAULT, BUCKET_INCARNATIONS, next.to_be_bytes())?;
        Ok(next)
    }

    /// The latest incarnation of bucket `name` deleted here
    /// ([`Store::delete_bucket_incarnation`]).
    fn removed_incarnation(&self, name: &str) -> Result<Option<u64>> {
        self.space()
            .get(CF_DEFAULT, &removed_bucket_key(name))?
            .map(|raw| u64_record(&raw, "deleted bucket's incarnation"))
            .transpose()
    }

    /// Deletes bucket `name`, which must hold no object, and announces it.
    /// The caller holds the bucket lock exclusively; `batch` may hold
    /// changes of its own, committed with the deletion.
    fn remove_empty_bucket(&self, mut batch: Batch<'_>, name: &str) -> Result<()> {
        self.remove_bucket_into(&mut batch, name)?;
        let event = self.feed_event(&mut batch, ChangeKind::BucketDeleted, name, None, None)?;
        self.commit(batch)?;
        self.publish(event);
        Ok(())
    }

    /// Puts the deletion of bucket `name` in `batch`: its record, its
    /// unfinished uploads and its usage counter, with the uploads' extents
    /// scheduled for collection. `BucketNotEmpty` while it holds an object.
    fn remove_bucket_into(&self, batch: &mut Batch<'_>, name: &str) -> Result<()> {
        let prefix = keys::bucket_prefix(name);
        if self
            .space()
            .iter_prefix(CF_OBJECTS, &prefix)?
            .next()
            .transpose()?
            .is_some()
        {
            return Err(StoreError::BucketNotEmpty);
        }
        let mut freed = Vec::new();
        self.drop_uploads_of_bucket(name, batch, &mut freed)?;
        batch.delete(CF_BUCKETS, name.as_bytes())?;
        self.clear_usage(batch, name)?;
        self.schedule_gc(batch, &freed)
    }

    pub(crate) fn bucket_info(&self, name: &str) -> Result<BucketInfo> {
        match self.space().get(CF_BUCKETS, name.as_bytes())? {
            Some(value) => records::decode(&value),
            None => Err(StoreError::NoSuchBucket),
        }
    }

    pub(crate) fn object_info(&self, bucket: &str, key: &str) -> Result<Option<ObjectInfo>> {
        match self
            .space()
            .get(CF_OBJECTS, &keys::object_key(bucket, key))?
        {
            Some(value) => Ok(Some(decode_object(bucket, key, &value)?)),
            None => Ok(None),
        }
    }

    pub(crate) fn lock_key(&self, bucket: &str, key: &str) -> parking_lot::MutexGuard<'_, ()> {
        self.key_locks[self.key_stripe(bucket, key)].lock()
    }

    /// Locks two keys in stripe order, so that two renames in opposite
    /// directions cannot deadlock; keys on one stripe take it once.
    pub(crate) fn lock_key_pair(
        &self,
        first: (&str, &str),
        second: (&str, &str),
    ) -> Vec<parking_lot::MutexGuard<'_, ()>> {
        let (a, b) = (
            self.key_stripe(first.0, first.1),
            self.key_stripe(second.0, second.1),
        );
        let mut stripes = vec![a.min(b), a.max(b)];
        stripes.dedup();
        stripes
            .into_iter()
            .map(|stripe| self.key_locks[stripe].lock())
            .collect()
    }

    fn key_stripe(&self, bucket: &str, key: &str) -> usize {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one((bucket, key));
        (hash as usize) % KEY_LOCK_STRIPES
    }

    /// Writes a new current version of `bucket/key`, checking `conditions` against
    /// the version it replaces. `build` runs under the key's lock, may add work to the
    /// same batch (multipart completion removes the upload there) and returns the
    /// record to store.
    pub(crate) fn commit_object(
        &self,
        bucket: &str,
        key: &str,
        conditions: &PutConditions,
        build: impl FnOnce(&Inner, &mut Batch<'_>) -> Result<ObjectInfo>,
    ) -> Result<ObjectInfo> {
        let _shared = self.bucket_lock.read();
        let bucket_info = self.bucket_info(bucket)?;
        let _key_guard = self.lock_key(bucket, key);
        let current = self.object_info(bucket, key)?;
        // An object past its X-Delete-At that the sweep has not removed
        // yet is absent to every read: so it is to the conditions (its
        // record still counts for usage and its extents' deletion).
        let live = current
            .as_ref()
            .filter(|info| !info.is_expired_at(self.now_secs()));
        conditions.check(&bucket_info, live)?;
        let mut batch = self.batch();
        let info = build(self, &mut batch)?;
        batch.put(
            CF_OBJECTS,
            &keys::object_key(bucket, key),
            encode_object(&info)?,
        )?;
        self.add_usage(
            &mut batch,
            bucket,
            UsageDelta::replace(current.as_ref(), info.size),
        )?;
        self.index_expiry(&mut batch, &info)?;
        if let Some(current) = &current {
            self.schedule_gc(&mut batch, &current.extents)?;
        }
        let event = self.feed_event(
            &mut batch,
            ChangeKind::ObjectPut,
            bucket,
            Some(key),
            Some(&info.etag),
        )?;
        self.commit(batch)?;
        self.publish(event);
        Ok(info)
    }

    /// Applies a batch durably: the WAL is fsynced before this returns,
    /// except for an entry of a replicated log, applied without an fsync: the log
    /// holds it durably, and a batch lost in a crash (with its marker) is
    /// applied again from the log at restart.
    pub(crate) fn commit(&self, mut batch: Batch<'_>) -> Result<()> {
        let applying = match &mut *self.pinned.lock() {
            Some(pinned) => {
                batch.put(CF_DEFAULT, APPLIED_MARKER, &pinned.marker)?;
                if let Some(signature) = pinned.signature.take() {
                    let now_secs = (pinned.at_ms.max(0) as u64) / 1000;
                    self.record_signed_call(&mut batch, &signature, now_secs)?;
                }
                true
            }
            None => false,
        };
        batch.write(!applying)
    }

    /// Refuses, in index group `g`, the marker of a bucket that the count
    /// of groups its root records does not place in `g`: a gateway routing
    /// by another count (nodes given another `--index-groups`) is refused
    /// before it writes anything, and no group holds records of a bucket
    /// whose extents carry another group's tags, which that group's orphan
    /// sweep takes. A root that records no groups (a bare group) checks
    /// nothing.
    fn check_marker_group(&self, name: &str) -> Result<()> {
        let Some(group) = self.keys().group_id() else {
            return Ok(());
        };
        let root_keys = KeySpace::root();
        let root = Space {
            db: self.database(),
            keys: &root_keys,
        };
        let count = recorded_index_groups(root)?;
        if count == 0 {
            return Ok(());
        }
        let placed = crate::routed::group_index(name, usize::from(count)) + 1;
        if placed != usize::from(group) {
            return Err(StoreError::InvalidArgument(format!(
                "bucket {name} belongs to index group {placed} of {count}, not {group}: \
                 the gateways and the groups count the groups alike"
            )));
        }
        Ok(())
    }

    /// [`Store::record_index_groups`] in this (root) store.
    pub(crate) fn record_index_groups(&self, count: u16, held_by: Option<&str>) -> Result<bool> {
        let _exclusive = self.bucket_lock.write();
        match crate::split::recorded_groups(self.space())? {
            (0, _) => {}
            // Only the process that holds it finishes a split, or a
            // replicated service's log (`split.rs`).
            (_, true) => return Err(StoreError::Unavailable(STILL_SPLITTING.into())),
            (recorded, false) if recorded == count => {
                let recorded_by = self.space().get(CF_DEFAULT, INDEX_GROUPS_HELD_BY)?;
                if recorded_by.as_deref() != held_by.map(str::as_bytes) {
                    let recorded_by =
                        recorded_by.map(|by| String::from_utf8_lossy(&by).into_owned());
                    return Err(StoreError::InvalidArgument(format!(
                        "{HELD_ELSEWHERE}: {}, not {}",
                        held_by_text(recorded_by.as_deref()),
                        held_by_text(held_by)
                    )));
                }
                return Ok(self.space().get(CF_DEFAULT, EXTENTS_TAGGED)?.is_some());
            }
            (recorded, false) => {
                return Err(StoreError::InvalidArgument(format!(
                    "the store spreads its buckets over {recorded} index groups, not {count}"
                )));
            }
        }
        if self
            .space()
            .iter(CF_BUCKETS, IteratorMode::Start)?
            .next()
            .is_some()
        {
            // A local root has moved its buckets' records by now; a
            // replicated one does so by a call of its own (`split.rs`).
            return Err(StoreError::InvalidArgument(
                "a store with buckets starts using index groups by a split that moves \
                 their objects there: at the start of a gateway that holds its metadata \
                 alone, or through the log of a replicated metadata service; groups on \
                 storage nodes start only beside a store without buckets"
                    .into(),
            ));
        }
        let mut batch = self.batch();
        batch.put(CF_DEFAULT, INDEX_GROUPS, count.to_be_bytes())?;
        batch.put(CF_DEFAULT, EXTENTS_TAGGED, [])?;
        if let Some(held_by) = held_by {
            batch.put(CF_DEFAULT, INDEX_GROUPS_HELD_BY, held_by.as_bytes())?;
        }
        self.commit(batch)?;
        self.note_index_groups(count);
        Ok(true)
    }

    /// After this (index group's) replica was emptied or replaced: it may
    /// hold nothing its root's split moved ([`Store::wait_for_root_split`]
    /// looks again).
    pub(crate) fn forget_root_split(&self) {
        self.root_split_seen.store(false, Ordering::SeqCst);
    }

    /// Reads of this store's records.
    pub(crate) fn space(&self) -> Space<'_> {
        Space {
            db: &self.db,
            keys: &self.keys,
        }
    }

    /// A batch of changes to this store's records, for [`Inner::commit`].
    pub(crate) fn batch(&self) -> Batch<'_> {
        Batch::new(self.space())
    }

    /// The database itself, for what must see every group's records or
    /// none (checkpoints).
    pub(crate) fn database(&self) -> &DB {
        &self.db
    }

    pub(crate) fn keys(&self) -> &KeySpace {
        &self.keys
    }

    pub(crate) fn schedule_gc(&self, batch: &mut Batch<'_>, extents: &[ExtentRef]) -> Result<()> {
        if extents.is_empty() {
            return Ok(());
        }
        let due = self.now_ms() as u64 + self.config.gc_grace.as_millis() as u64;
        for extent in extents {
            batch.put(CF_GC, &keys::gc_key(due, &extent.id.0), b"")?;
        }
        Ok(())
    }

    /// Up to `limit` stored events numbered above `after` and below `below`.
    fn feed_events(&self, after: u64, limit: usize, below: u64) -> Result<Vec<ChangeEvent>> {
        let start = (after + 1).to_be_bytes();
        let mut events = Vec::new();
        for item in self
            .space()
            .iter(CF_FEED, IteratorMode::From(&start, Direction::Forward))?
            .take(limit)
        {
            let (_, value) = item?;
            let event: ChangeEvent = records::decode(&value)?;
            if event.seq >= below {
                break;
            }
            events.push(event);
        }
        Ok(events)
    }

    pub(crate) fn feed_event(
        &self,
        batch: &mut Batch<'_>,
        kind: ChangeKind,
        bucket: &str,
        key: Option<&str>,
        etag: Option<&str>,
    ) -> Result<ChangeEvent> {
        let ticket = self.feed_numbers.take();
        let seq = ticket.seq;
        batch.hold(ticket);
        let event = ChangeEvent {
            seq,
            kind,
            bucket: bucket.to_owned(),
            key: key.map(str::to_owned),
            etag: etag.map(str::to_owned),
            at_ms: self.now_ms(),
        };
        batch.put(CF_FEED, &seq.to_be_bytes(), records::encode(&event)?)?;
        Ok(event)
    }

    /// The number of the oldest change-feed event kept (the next one's when
    /// none is).
    pub(crate) fn oldest_feed_seq(&self) -> Result<u64> {
        match self.space().iter(CF_FEED, IteratorMode::Start)?.next() {
            Some(item) => {
                let (key, _) = item?;
                let bytes: [u8; 8] = key.as_ref().try_into().map_err(|_| {
                    StoreError::Corrupt(format!("a feed key of {} bytes", key.len()))
                })?;
                Ok(u64::from_be_bytes(bytes))
            }
            None => Ok(self.next_feed_seq()),
        }
    }

    /// Numbers events after the feed's last again, and reads the index
    /// group count again (the records were replaced wholesale).
    pub(crate) fn reset_feed_seq(&self) -> Result<()> {
        let next = feed_seq_after_last(self.space())?;
        self.feed_numbers.reset(next);
        let groups = recorded_index_groups(self.space())?;
        self.index_groups.store(groups, Ordering::SeqCst);
        Ok(())
    }

    /// Refuses a call that would keep objects in this store's own space
    /// when it spreads its buckets over index groups: a gateway that does
    /// not route (configured without the groups, or from before them)
    /// would write where no routed gateway reads.
    pub(crate) fn refuse_unrouted_objects(&self) -> Result<()> {
        match self.index_groups.load(Ordering::SeqCst) {
            0 => Ok(()),
            groups => Err(StoreError::InvalidArgument(format!(
                "this metadata store keeps its buckets' objects in {groups} index groups: \
                 set index_groups = {groups}"
            ))),
        }
    }

    /// The number the next change-feed event will get.
    pub(crate) fn next_feed_seq(&self) -> u64 {
        self.feed_numbers.next()
    }

    pub(crate) fn publish(&self, event: ChangeEvent) {
        if let Some(Pinned {
            events: Some(events),
            ..
        }) = &mut *self.pinned.lock()
        {
            events.push(event.clone());
        }
        self.events.publish(event);
    }
}

/// Commits a staged body through the metadata service. The call runs in its
/// own task, so a caller that goes away cannot leave the extents of a
/// committed object deleted; an unanswered call keeps them (a leak, never a
/// broken object).
pub(crate) async fn hand_over<T>(
    staged: StagedBody,
    remote: Arc<Remote>,
    call: MetaCall,
) -> Result<T>
where
    T: serde::de::DeserializeOwned + Send + 'static,
{
    let commit = tokio::spawn(async move {
        let outcome = remote.try_call(call).await;
        // Only a refusal (the request's fault) or a call never sent proves
        // nothing was committed (the staged extents are then deleted with
        // `staged`); after a server-side failure the record may exist.
        let committed_nothing = match &outcome {
            Ok(_) => false,
            Err((err, sent)) => !sent || !err.is_server_error(),
        };
        if !committed_nothing {
            drop(staged.take_extents());
        }
        outcome.map_err(|(err, _)| err)
    });
    commit
        .await
        .map_err(|err| StoreError::Internal(format!("metadata commit task failed: {err}")))?
}

thread_local! {
    /// Whether this thread runs [`Store::applying`]'s future.
    static ON_APPLYING_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

impl Store {
    /// Runs the future `make` returns on a blocking thread of its own,
    /// where every database call of this store runs without another hop:
    /// for a replica applying a batch of log entries, whose calls
    /// ([`Store::apply_meta`]) each did one. Applied calls write unsynced
    /// (the log is the durable copy), so each blocks for little.
    pub async fn applying<F, Fut, T>(&self, make: F) -> Result<T>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T>,
        T: Send + 'static,
    {
        struct Unset;
        impl Drop for Unset {
            fn drop(&mut self) {
                ON_APPLYING_THREAD.set(false);
            }
        }
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            ON_APPLYING_THREAD.set(true);
            let _unset = Unset;
            runtime.block_on(make())
        })
        .await
        .map_err(|err| StoreError::Internal(format!("applying task failed: {err}")))
    }
}

/// How the metadata database is opened (also read-only, from a
/// checkpoint of it: `replica.rs`).
pub(crate) fn db_options() -> Options {
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    options.set_max_background_jobs(2);
    options.set_bytes_per_sync(1 << 20);
    options
}

/// Every column family, with the merge operator of the usage counters.
pub(crate) fn family_descriptors() -> impl Iterator<Item = ColumnFamilyDescriptor> {
    keys::ALL_CFS.iter().map(|name| {
        let mut cf_options = Options::default();
        if *name == CF_USAGE {
            cf_options.set_merge_operator_associative("usage-sum", usage::merge_usage);
        }
        ColumnFamilyDescriptor::new(*name, cf_options)
    })
}

/// Records do not repeat their own bucket and key; the database key holds them.
pub(crate) fn encode_object(info: &ObjectInfo) -> Result<Vec<u8>> {
    let mut stored = info.clone();
    stored.bucket.clear();
    stored.key.clear();
    records::encode(&stored)
}

pub(crate) fn decode_object(bucket: &str, key: &str, value: &[u8]) -> Result<ObjectInfo> {
    let mut info: ObjectInfo = records::decode(value)?;
    info.bucket = bucket.to_owned();
    info.key = key.to_owned();
    Ok(info)
}

/// The number the next change-feed event of `space` gets.
fn feed_seq_after_last(space: Space<'_>) -> Result<u64> {
    let mut last = space.iter(CF_FEED, IteratorMode::End)?;
    match last.next().transpose()? {
        Some((key, _)) => Ok(seq_from_key(&key)? + 1),
        None => Ok(1),
    }
}

/// The index groups recorded in `space` by [`Store::route`], 0 if none.
fn recorded_index_groups(space: Space<'_>) -> Result<u16> {
    Ok(crate::split::recorded_groups(space)?.0)
}

fn seq_from_key(key: &[u8]) -> Result<u64> {
    u64_record(key, "feed key")
}

/// Key (default column family) of the last [`BucketInfo::incarnation`]
/// given.
const BUCKET_INCARNATIONS: &[u8] = b"bucket-incarnations";
/// Prefix of the keys (default column family) of the latest incarnation of
/// each bucket name deleted ([`Store::delete_bucket_incarnation`]).
const REMOVED_BUCKET_PREFIX: &[u8] = b"removed-bucket/";

fn removed_bucket_key(name: &str) -> Vec<u8> {
    [REMOVED_BUCKET_PREFIX, name.as_bytes()].concat()
}

fn u64_record(raw: &[u8], what: &str) -> Result<u64> {
    let bytes: [u8; 8] = raw
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("{what} is not 8 bytes")))?;
    Ok(u64::from_be_bytes(bytes))
}

/// Key (default column family) of the marker `Store::apply_meta` writes.
pub(crate) const APPLIED_MARKER: &[u8] = b"replicated-log-applied";
/// The follower marks the feed's last trim kept events for
/// ([`FeedTrim::followers`]).
const FEED_FOLLOWERS: &[u8] = b"feed-followers";

impl Inner {
    /// The time a change is stamped with: the applied entry's when one is.
    pub(crate) fn now_ms(&self) -> i64 {
        match &*self.pinned.lock() {
            Some(pinned) => pinned.at_ms,
            None => now_ms(),
        }
    }

    pub(crate) fn now_secs(&self) -> u64 {
        (self.now_ms().max(0) as u64) / 1000
    }

    /// Random bytes for a new name (an upload id): the applied entry's when
    /// one is, so that every replica names it alike.
    pub(crate) fn fresh_id(&self) -> [u8; 16] {
        match &*self.pinned.lock() {
            Some(pinned) => pinned.nonce,
            None => rand::random(),
        }
    }
}

impl Store {
    pub(crate) fn now_ms(&self) -> i64 {
        match &self.engine {
            Engine::Local(inner) => inner.now_ms(),
            Engine::Remote(_) | Engine::Routed(_) => now_ms(),
        }
    }

    pub(crate) fn fresh_id(&self) -> [u8; 16] {
        match &self.engine {
            Engine::Local(inner) => inner.fresh_id(),
            Engine::Remote(_) | Engine::Routed(_) => rand::random(),
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}

/// The store's own limits on bucket names: doors apply their protocol's stricter
/// rules on top.
pub(crate) fn validate_bucket_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 256 || name.contains(['/', '\0']) {
        return Err(StoreError::InvalidBucketName(name.to_owned()));
    }
    Ok(())
}

/// The spans of first bytes the orphan sweep takes one at a time: each
/// holding at most `batch` of the extents counted (or one first byte's),
/// together every first byte once. A first byte that holds none joins the
/// span before it (the first span, for those before any that holds some).
fn sweep_spans(counts: &LeadCounts, batch: u64) -> Vec<ExtentLeads> {
    let mut spans = Vec::new();
    let (mut first, mut held) = (0u8, 0u64);
    for lead in 0..=u8::MAX {
        let count = counts[usize::from(lead)];
        if lead > first && count > 0 && held.saturating_add(count) > batch {
            spans.push(first..=lead - 1);
            (first, held) = (lead, 0);
        }
        held = held.saturating_add(count);
    }
    spans.push(first..=u8::MAX);
    spans
}

/// Keys are at most 1024 bytes of UTF-8 without NUL, and are paths without empty,
/// `.` or `..` segments (a trailing `/` is allowed for folder markers): such keys
/// cannot be mapped onto file systems, FTP or FUSE, and URL normalisation in
/// clients and proxies rewrites them.
pub fn validate_key(key: &str) -> Result<()> {
    let invalid = |why: &str| Err(StoreError::InvalidKey(why.to_owned()));
    if key.is_empty() {
        return invalid("key is empty");
    }
    if key.len() > 1024 {
        return invalid("key is longer than 1024 bytes");
    }
    if key.contains('\0') {
        return invalid("key contains NUL");
    }
    let mut segments = key.split('/').peekable();
    while let Some(segment) = segments.next() {
        if segment == "." || segment == ".." {
            return invalid("key has a '.' or '..' segment");
        }
        let is_last = segments.peek().is_none();
        if segment.is_empty() && !is_last {
            return invalid("key has an empty segment");
        }
    }
    Ok(())
}

/// [`Store::record_index_groups`] through a connected root. A root that
/// holds buckets and no groups is asked for the split instead
/// (`MetaCall::SplitIntoIndexGroups`, `split.rs`), and so is one whose
/// split has not ended (it resumes, or waits behind it in the log). Both
/// are asked again while the service cannot answer: a replicated one takes
/// the split only once every member runs a build that has it (an earlier
/// leader does not even decode it), and a split of many records outlasts
/// calls' timeouts. The start of a gateway waits meanwhile, and says why.
///
/// Groups held elsewhere (`held_by`) are never split into: the service's
/// members would move the records into replicas of their own.
async fn record_index_groups_remotely(
    remote: &Remote,
    count: u16,
    held_by: Option<String>,
) -> Result<bool> {
    let started = std::time::Instant::now();
    let mut told = Duration::ZERO;
    let mut splitting = false;
    loop {
        let call = match (splitting, &held_by) {
            (true, _) => MetaCall::SplitIntoIndexGroups { count },
            (false, Some(held_by)) => MetaCall::RecordIndexGroupsHeldBy {
                count,
                held_by: held_by.clone(),
            },
            (false, None) => MetaCall::RecordIndexGroups { count },
        };
        let why = match remote.call::<bool>(call).await {
            Ok(tagged) => return Ok(tagged),
            // A leader of an earlier build: until the service is upgraded.
            Err(StoreError::InvalidArgument(why))
                if (splitting || held_by.is_some()) && crate::remote::undecodable(&why) =>
            {
                why
            }
            Err(StoreError::InvalidArgument(why))
                if why.starts_with(HELD_ELSEWHERE) || held_by.is_some() =>
            {
                return Err(StoreError::InvalidArgument(why));
            }
            Err(StoreError::Unavailable(why)) if why == STILL_SPLITTING && held_by.is_some() => {
                return Err(StoreError::Unavailable(why));
            }
            Err(StoreError::InvalidArgument(why)) if !splitting => {
                // Refused for its buckets, or for another count: only a
                // root that records none is to be split.
                match remote.call::<u16>(MetaCall::IndexGroups).await {
                    Ok(0) => {
                        tracing::info!(
                            groups = count,
                            "asking the metadata service to move its buckets into index groups"
                        );
                        splitting = true;
                        continue;
                    }
                    // Another gateway's split began or ended since the
                    // refusal: asked again, it is taken or waited for.
                    Ok(recorded) if recorded == count => why,
                    Ok(_) => return Err(StoreError::InvalidArgument(why)),
                    Err(err) => err.to_string(),
                }
            }
            // A split cut short by an error (one under way would have been
            // waited for in the log): the split call resumes it, or says
            // what stops it.
            Err(StoreError::Unavailable(why)) if !splitting && why == STILL_SPLITTING => {
                splitting = true;
                continue;
            }
            Err(StoreError::Unavailable(why)) => why,
            Err(err) => return Err(err),
        };
        let waited = started.elapsed();
        if waited >= told {
            tracing::info!(
                groups = count,
                waited_secs = waited.as_secs(),
                reason = %why,
                "the metadata service cannot record the index groups yet"
            );
            told = (waited * 2).max(Duration::from_secs(5));
        }
        tokio::time::sleep(RECORD_RETRY).await;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An embedded store over a local pool in `dir`, for unit tests.
    pub(crate) fn store_in(dir: &std::path::Path) -> Store {
        let pool = strata_pool::LocalPool::open(strata_pool::LocalPoolConfig {
            dir: dir.join("pool"),
        })
        .expect("pool");
        let config = StoreConfig::new(dir.join("meta"));
        Store::open(config, Arc::new(pool)).expect("store")
    }

    fn check(key: &str, valid: bool) {
        assert_eq!(validate_key(key).is_ok(), valid, "{key:?}");
    }

    #[test]
    fn sweep_spans_hold_a_batch_each_and_every_first_byte_once() {
        let mut counts = [0; 256];
        assert_eq!(sweep_spans(&counts, 10), vec![0..=255]);
        counts[0] = 4;
        counts[1] = 6;
        counts[2] = 1;
        counts[200] = 25;
        counts[255] = 3;
        assert_eq!(
            sweep_spans(&counts, 10),
            vec![0..=1, 2..=199, 200..=254, 255..=255]
        );
        // Each first byte that holds extents starts a span of its own; the
        // empty ones after it join it.
        assert_eq!(
            sweep_spans(&counts, 0),
            vec![0..=0, 1..=1, 2..=199, 200..=254, 255..=255]
        );
        assert_eq!(sweep_spans(&[u64::MAX; 256], u64::MAX - 1).len(), 256);
    }

    /// A feed number taken by a commit still in flight hides the events
    /// numbered after it, so that a follower never steps over a number
    /// whose commit is only slow; once it is released (written, or its
    /// commit failed), they show.
    #[tokio::test]
    async fn events_past_a_commit_in_flight_wait_for_it() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = store_in(dir.path());
        store
            .create_bucket("acct", "first", "r")
            .await
            .expect("bucket");
        let Engine::Local(inner) = &store.engine else {
            panic!("an embedded store");
        };
        let head = inner.next_feed_seq() - 1;
        let slow_commit = inner.feed_numbers.take();
        store
            .create_bucket("acct", "second", "r")
            .await
            .expect("bucket");
        let shown = store.feed_since(head, 10).await.expect("feed");
        assert!(
            shown.is_empty(),
            "events past a commit in flight: {shown:?}"
        );
        // The answer to a gateway's own write carries its events all the
        // same: its edge purges at once (read-your-writes).
        let call =
            br#"{"op":"create_bucket","account":"acct","name":"third","region":"r","attrs":{}}"#;
        let answer: serde_json::Value =
            serde_json::from_slice(&store.serve_meta(call, None).await).expect("answer");
        assert_eq!(answer["events"][0]["bucket"], "third", "{answer}");

        drop(slow_commit);
        let shown = store.feed_since(head, 10).await.expect("feed");
        let buckets: Vec<&str> = shown.iter().map(|event| event.bucket.as_str()).collect();
        assert_eq!(buckets, ["second", "third"]);
    }

    #[test]
    fn key_rules() {
        check("a", true);
        check("dir/", true);
        check("a b+c%20ü/日本", true);
        check("a..b/.hidden", true);
        check("", false);
        check("/a", false);
        check("a//b", false);
        check("a/../b", false);
        check("..", false);
        check("a/.", false);
        check("a\0b", false);
        check(&"k".repeat(1024), true);
        check(&"k".repeat(1025), false);
    }
}
