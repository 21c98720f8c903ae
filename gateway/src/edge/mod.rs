//! The edge cache: public objects kept in RAM on the gateway that serves
//! them, purged by the store's change feed.
//!
//! * What is cached: anonymous reads the container ACL allows, of whole
//!   objects up to `max_object_bytes` that are not large-object manifests
//!   and whose `Cache-Control` is neither `no-store` nor `private`. The key
//!   is (bucket, key): every URL form of an object (Swift path, custom
//!   domain) shares one entry, so one purge covers them all.
//! * Eviction: moka's size-aware TinyLFU, weighed in bytes, so one-hit
//!   wonders do not flush the hot set.
//! * Bodies from 64 KiB to 512 KiB live in a memfd ([`arena`]) that plain
//!   connections send from with `sendfile`, without copying them.
//! * Freshness: `max-age` from the object's `Cache-Control`, else the
//!   configured TTL; a stale entry is revalidated against the store's ETag
//!   (`X-Cache: REVALIDATED`) instead of refetched.
//! * Purges: the store calls [`EdgeCache::apply`] synchronously for every
//!   committed change, before the write returns, so this gateway never
//!   serves what a finished DELETE or overwrite replaced. A fill that read
//!   the store before a purge is not inserted after it (purge epochs).
//! * Concurrent misses of one key make one store read, in a task of its own
//!   ([`Filling`]): the first request waits for the first bytes, then it and
//!   every request that misses the key meanwhile stream the copy as it
//!   arrives (a cold large object is not held back until it is whole), and
//!   the copy is kept once it is.
//! * A gateway connected to another's metadata trusts its copies only while
//!   it follows that gateway's feed ([`strata_store::FeedLease`]); short of
//!   that every hit revalidates, and after a gap in the feed (a
//!   [`ChangeKind::Resync`]) every copy revalidates once, listings and
//!   bucket records are read again.
//! * Public container listings (`.rlistings`) are cached as rendered
//!   answers under the bucket's listing generation: any change in the
//!   bucket bumps it, so a purge costs O(1) and every format, prefix and
//!   page of the bucket's listings goes at once.
//!
//! Container settings (ACLs) are read from the store on every request, so
//! making a container private takes effect at once, cache or not.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt as _;
use parking_lot::Mutex;
use serde::Deserialize;
use strata_store::{BucketInfo, ChangeEvent, ChangeKind, FeedLease, ObjectInfo, Store};
use tokio::sync::OnceCell;

use crate::wire::{ResponseBody, first_read, full_body, streamed_body};

/// Purge epochs are kept per stripe of keys: a purge bumps its stripe.
const EPOCH_STRIPES: usize = 4096;

/// Bucket records kept for the public read path before the map starts over.
const MAX_BUCKET_RECORDS: usize = 100_000;

/// The largest object a fill holds in memory: one that is not written to
/// an SSD zone as it arrives (no zones, or small enough for the RAM zone)
/// is held whole until it is kept, and the requests that missed it stream
/// from there. Without SSD zones it bounds `max_object_bytes`; with them,
/// fills of objects larger than it (or than `ram_max_object_bytes`) go
/// straight to their zone file, and hits on SSD copies hold one block at a
/// time.
pub const MAX_IN_MEMORY_FILL_BYTES: u64 = 64 * 1024 * 1024;

/// What a fill written to its zone file counts against
/// `fill_memory_bytes`: the store read's pieces in flight.
const SPOOLED_FILL_KIB: u32 = 4 * 1024;

/// Read from a zone file being filled at once, for a request that streams
/// the fill.
const SPOOL_READ_BYTES: u64 = 1 << 20;

/// SSD copies up to this size (or up to `ram_max_object_bytes`, when that
/// is larger, up to 64 MiB: those go back to RAM) are read and checked whole before a hit
/// answers, so a damaged one is found in time to read the store instead;
/// larger ones stream a checked block at a time, and damage cuts the
/// answer short (and drops the file) rather than delay every first byte.
const SSD_READ_WHOLE_BYTES: u64 = 4 * 1024 * 1024;

impl CacheConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.zone.is_empty() && self.max_object_bytes > MAX_IN_MEMORY_FILL_BYTES {
            anyhow::bail!(
                "cache.max_object_bytes is {} bytes; without a [[cache.zone]] at most \
                 {MAX_IN_MEMORY_FILL_BYTES} (64 MiB) is accepted: a fill holds the object \
                 in memory until it is kept. With SSD zones, larger objects are written \
                 to their zone as they arrive",
                self.max_object_bytes
            );
        }
        Ok(())
    }
}

/// `[cache]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// RAM budget of the cache in bytes; 0 turns the cache off. Like every
    /// size here, a number or with a unit: `"256M"`.
    #[serde(deserialize_with = "byte_size")]
    pub ram_bytes: u64,
    /// Objects larger than this are served from the store, never cached.
    #[serde(deserialize_with = "byte_size")]
    pub max_object_bytes: u64,
    /// Objects larger than this skip the RAM zone (they live on SSD zones).
    #[serde(deserialize_with = "byte_size")]
    pub ram_max_object_bytes: u64,
    /// Freshness of objects whose Cache-Control names no `max-age`.
    pub default_ttl_secs: u64,
    /// What all fills in progress may hold: a fill held in memory counts
    /// twice its object (it joins the pieces), one written to its SSD zone
    /// as it arrives 4 MiB (its pieces in flight). Fills run on after their
    /// clients hang up, so without a bound a client could start many and
    /// leave them; a miss beyond it is answered from the store, uncached.
    #[serde(deserialize_with = "byte_size")]
    pub fill_memory_bytes: u64,
    /// Whether plain-HTTP answers send RAM-zone bodies from 64 KiB to
    /// 512 KiB with `sendfile` from a memfd (`arena.rs`) rather than copy
    /// them into the socket. On by default, as nginx's `sendfile on`.
    pub sendfile: bool,
    /// SSD zones (`[[cache.zone]]`), keys spread across them by hash.
    pub zone: Vec<ZoneConfig>,
}

/// One SSD zone: a directory and its byte budget.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    pub path: std::path::PathBuf,
    /// Bytes, as a number or with a unit: `"200G"`, `"512M"`.
    #[serde(deserialize_with = "byte_size")]
    pub max_bytes: u64,
}

fn byte_size<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Number(u64),
        Text(String),
    }
    match Size::deserialize(deserializer)? {
        Size::Number(bytes) => Ok(bytes),
        Size::Text(text) => parse_size(&text).ok_or_else(|| {
            serde::de::Error::custom(format!("{text:?} is not a size like 512M or 200G"))
        }),
    }
}

/// The key of a rendered listing among its bucket's: `kind` (the door and
/// format) and every query parameter in the order sent (a repeated one is
/// read at its first), each name and value led by its length. Joined as they
/// came, `prefix=a%26x%3D` would share a key with `prefix=a&x=`, and an
/// anonymous caller could fill the other's entry.
pub fn listing_form(kind: &str, params: &[(String, String)]) -> String {
    use std::fmt::Write as _;
    let mut form = kind.to_owned();
    for (param, value) in params {
        // Writing to a String cannot fail.
        let _ = write!(form, "&{}:{param}{}:{value}", param.len(), value.len());
    }
    form
}

/// Whether the store still holds the version `cached` is a copy of; `None`
/// when it did not say (it failed, or the metadata service is away).
async fn still_current(store: &Store, cached: &ObjectInfo) -> Option<bool> {
    use strata_store::StoreError::{NoSuchBucket, NoSuchKey};
    match store.head_object(&cached.bucket, &cached.key).await {
        Ok(now) => Some(now.etag == cached.etag && now.last_modified_ms == cached.last_modified_ms),
        Err(NoSuchKey | NoSuchBucket) => Some(false),
        Err(_) => None,
    }
}

/// The time left until `at` (Unix seconds, as `X-Delete-At`); zero once past.
fn until_unix_secs(at: u64) -> Duration {
    let now_ms = u64::try_from(crate::wire::unix_now_ms()).unwrap_or(0);
    Duration::from_secs(at).saturating_sub(Duration::from_millis(now_ms))
}

/// When `delete_at` (Unix seconds) comes, as an instant; `None` for none, or
/// one too far ahead to count (`Instant` arithmetic would overflow).
fn expiry_instant(delete_at: Option<u64>) -> Option<Instant> {
    Instant::now().checked_add(until_unix_secs(delete_at?))
}

/// `123`, `64K`, `512M`, `200G`, `2T` (powers of 1024; a trailing `B` or
/// `iB` is allowed).
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let text = text
        .strip_suffix("iB")
        .or_else(|| text.strip_suffix('B'))
        .unwrap_or(text);
    let (digits, shift) = match text.chars().last()? {
        'K' | 'k' => (&text[..text.len() - 1], 10),
        'M' | 'm' => (&text[..text.len() - 1], 20),
        'G' | 'g' => (&text[..text.len() - 1], 30),
        'T' | 't' => (&text[..text.len() - 1], 40),
        _ => (text, 0),
    };
    digits.trim().parse::<u64>().ok()?.checked_mul(1 << shift)
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            ram_bytes: 256 * 1024 * 1024,
            max_object_bytes: 4 * 1024 * 1024,
            ram_max_object_bytes: 1024 * 1024,
            default_ttl_secs: 60,
            fill_memory_bytes: 512 * 1024 * 1024,
            sendfile: true,
            zone: Vec::new(),
        }
    }
}

/// One cached object: its record (as the doors need it for headers and
/// conditions) and its bytes.
#[derive(Debug)]
pub struct CachedObject {
    pub info: ObjectInfo,
    pub body: Bytes,
    fetched: Mutex<Instant>,
    max_age: Duration,
    /// The cache's resync count when the copy was read or last confirmed.
    resync: AtomicU64,
    /// The object's response headers as each door renders them, made on
    /// the first hit through that door: a hit then copies them instead of
    /// formatting dates and parsing header names again.
    rendered: [std::sync::OnceLock<http::HeaderMap>; 2],
    /// Where the bytes come from when they are not in `body` (which is
    /// empty then): never set on a copy the cache keeps.
    streamed: Option<Streamed>,
    /// The zone the answer's bytes are counted to (`/metrics`).
    source: Source,
    /// The object's expiry (`X-Delete-At`): never served past it, however
    /// recently revalidated.
    expires: Option<Instant>,
}

/// Where an answer's bytes were found: the RAM zone, an SSD zone, or the
/// store (a fill, streamed as it arrives).
enum Source {
    Ram,
    Zone(Arc<SsdZone>),
    Store,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Ram => f.write_str("Ram"),
            Source::Zone(zone) => write!(f, "Zone({})", zone.dir().display()),
            Source::Store => f.write_str("Store"),
        }
    }
}

impl CachedObject {
    fn new(
        info: ObjectInfo,
        body: Bytes,
        (max_age, fetched): (Duration, Instant),
        resync: u64,
        source: Source,
    ) -> CachedObject {
        CachedObject {
            expires: expiry_instant(info.meta.delete_at),
            info,
            body,
            fetched: Mutex::new(fetched),
            max_age,
            resync: AtomicU64::new(resync),
            rendered: Default::default(),
            streamed: None,
            source,
        }
    }

    /// An answer whose bytes stream from `source`, for the requests that
    /// share it (never kept in the cache); fresh for `max_age` from
    /// `fetched`.
    fn streamed(
        info: ObjectInfo,
        freshness: (Duration, Instant),
        resync: u64,
        streamed: Streamed,
    ) -> Arc<CachedObject> {
        let source = match &streamed {
            Streamed::Fill(_) => Source::Store,
            Streamed::Ssd(copy) => Source::Zone(copy.zone().clone()),
        };
        let mut answer = CachedObject::new(info, Bytes::new(), freshness, resync, source);
        answer.streamed = Some(streamed);
        Arc::new(answer)
    }
}

/// The source of an answer streamed rather than sliced from memory.
#[derive(Debug)]
enum Streamed {
    /// The answer to a miss: the fill in progress.
    Fill(Arc<Filling>),
    /// A hit on an SSD copy too large to read whole first.
    Ssd(Arc<SsdCopy>),
}

/// An object on its way from the store into the cache. Every request that
/// missed it streams from here while the fill goes on in its own task, so a
/// client that hangs up neither stops the fill nor the others' answers.
#[derive(Debug, Default)]
pub struct Filling {
    progress: tokio::sync::watch::Sender<FillProgress>,
}

#[derive(Debug, Default)]
struct FillProgress {
    /// The pieces read so far, in order; dropped once the copy is whole.
    pieces: Vec<Bytes>,
    /// For a fill written to its zone file as it arrives: the file, where
    /// the body starts in it, and how much of the body is written.
    spool: Option<(Arc<std::fs::File>, u64)>,
    spooled: u64,
    end: FillEnd,
}

#[derive(Debug, Default)]
enum FillEnd {
    #[default]
    Reading,
    /// The whole copy (its length checked against the record).
    Whole(Bytes),
    /// The whole copy is in the spool file (and kept, unless purged).
    Spooled,
    Failed,
}

/// What a request streaming a fill can have next.
enum Arrived {
    Bytes(Bytes),
    /// `len` bytes at `at` in a zone file being filled.
    OnDisk {
        file: Arc<std::fs::File>,
        at: u64,
        len: usize,
    },
}

impl FillProgress {
    fn started(&self) -> bool {
        !self.pieces.is_empty() || self.spooled > 0 || !matches!(self.end, FillEnd::Reading)
    }

    /// What has arrived of `offset..end` (`offset < end`, both inside the
    /// object), from its start: `None` if nothing of it has yet.
    fn available(&self, offset: u64, end: u64) -> Option<Arrived> {
        if let FillEnd::Whole(body) = &self.end {
            return Some(Arrived::Bytes(body.slice(offset as usize..end as usize)));
        }
        if let Some((file, body_start)) = &self.spool {
            let until = end.min(self.spooled).min(offset + SPOOL_READ_BYTES);
            return (offset < until).then(|| Arrived::OnDisk {
                file: file.clone(),
                at: body_start + offset,
                len: (until - offset) as usize,
            });
        }
        let mut start = 0;
        for piece in &self.pieces {
            let piece_end = start + piece.len() as u64;
            if offset < piece_end {
                return Some(Arrived::Bytes(piece.slice(
                    (offset - start) as usize..(end.min(piece_end) - start) as usize,
                )));
            }
            start = piece_end;
        }
        None
    }
}

/// Runs file work on the blocking pool; a task that failed is an I/O error.
async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(std::io::Error::other)?
}

/// Reads `len` bytes at `at` of a zone file being filled, off the runtime.
async fn read_spooled(file: Arc<std::fs::File>, at: u64, len: usize) -> std::io::Result<Bytes> {
    use std::os::unix::fs::FileExt as _;
    off_runtime(move || {
        let mut bytes = vec![0; len];
        file.read_exact_at(&mut bytes, at)?;
        Ok(Bytes::from(bytes))
    })
    .await
}

impl Filling {
    /// `range` of the object as it arrives; the stream fails if the fill
    /// does (the response is cut, as when a store read fails mid-stream).
    fn stream(
        &self,
        range: std::ops::Range<u64>,
    ) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        let progress = self.progress.subscribe();
        futures::stream::unfold(
            (progress, range.start),
            move |(mut progress, offset)| async move {
                if offset >= range.end {
                    return None;
                }
                loop {
                    let next = {
                        let arrived = progress.borrow_and_update();
                        match arrived.available(offset, range.end) {
                            Some(bytes) => Ok(Some(bytes)),
                            None if matches!(arrived.end, FillEnd::Failed) => Err(()),
                            None => Ok(None),
                        }
                    };
                    let next = match next {
                        Ok(Some(Arrived::OnDisk { file, at, len })) => {
                            match read_spooled(file, at, len).await {
                                Ok(bytes) => Ok(Some(bytes)),
                                Err(err) => {
                                    tracing::warn!(error = %err, "reading a cache fill's file");
                                    Err(())
                                }
                            }
                        }
                        Ok(Some(Arrived::Bytes(bytes))) => Ok(Some(bytes)),
                        Ok(None) => Ok(None),
                        Err(()) => Err(()),
                    };
                    match next {
                        Ok(Some(bytes)) => {
                            let offset = offset + bytes.len() as u64;
                            return Some((Ok(bytes), (progress, offset)));
                        }
                        // The fill task ends every fill with Whole or
                        // Failed (`FillEnder`); a dropped sender would
                        // mean it went away all the same.
                        Ok(None) if progress.changed().await.is_ok() => {}
                        Ok(None) | Err(()) => {
                            let failed = std::io::Error::other("the cache fill failed");
                            return Some((Err(failed), (progress, range.end)));
                        }
                    }
                }
            },
        )
    }
}

/// `range` of an SSD copy, a checked block at a time (read off the
/// runtime); a damaged block ends the stream with an error.
fn stream_copy(
    copy: Arc<SsdCopy>,
    range: std::ops::Range<u64>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    futures::stream::unfold(range.start, move |offset| {
        let copy = copy.clone();
        async move {
            if offset >= range.end {
                return None;
            }
            let index = offset / ssd::BLOCK;
            let block = off_runtime(move || copy.block(index)).await;
            let block_start = index * ssd::BLOCK;
            Some(match block {
                Ok(block) => {
                    let end = range.end.min(block_start + block.len() as u64);
                    let piece =
                        block.slice((offset - block_start) as usize..(end - block_start) as usize);
                    (Ok(piece), end)
                }
                Err(err) => (Err(err), range.end),
            })
        }
    })
}

/// Takes a fill out of flight when its task ends, however it ends; one
/// that did not finish (a failed read, a panic) is marked failed first, so
/// its clients get what had arrived, then an error, not a wait forever.
struct FillEnder {
    cache: Arc<EdgeCache>,
    cache_key: ObjectKey,
    filling: Arc<Filling>,
    in_flight: Fill,
    finished: bool,
}

impl Drop for FillEnder {
    fn drop(&mut self) {
        if !self.finished {
            self.filling
                .progress
                .send_modify(|progress| progress.end = FillEnd::Failed);
        }
        self.cache.end_fill(&self.cache_key, &self.in_flight);
    }
}

/// The doors that render cached objects, each in its own header dialect.
#[derive(Debug, Clone, Copy)]
pub enum Dialect {
    Swift = 0,
    S3 = 1,
}

impl CachedObject {
    /// The object's headers in `dialect`, rendered once by `render` into a
    /// map whose index has room for what every answer adds (length, cache
    /// status, age, request ids, server, date): a hit's copy keeps that
    /// room, so its inserts do not rehash the map (its entry list, copied
    /// to size, still grows once).
    pub fn headers(
        &self,
        dialect: Dialect,
        render: impl FnOnce(&ObjectInfo) -> http::HeaderMap,
    ) -> http::HeaderMap {
        const ADDED_PER_ANSWER: usize = 8;
        self.rendered[dialect as usize]
            .get_or_init(|| {
                let rendered = render(&self.info);
                let mut headers = http::HeaderMap::with_capacity(rendered.len() + ADDED_PER_ANSWER);
                headers.extend(rendered);
                headers
            })
            .clone()
    }

    /// Seconds since the copy was fetched or last revalidated (`Age`).
    pub fn age_secs(&self) -> u64 {
        self.fetched.lock().elapsed().as_secs()
    }

    /// Within its max-age, and never past the object's expiry, however
    /// recently revalidated (`max_age` was capped when the copy was made).
    fn is_fresh(&self) -> bool {
        self.fetched.lock().elapsed() < self.max_age
            && self.expires.is_none_or(|expires| Instant::now() < expires)
    }
}

/// A rendered answer (a listing), replayed for later requests of its form.
#[derive(Debug)]
pub struct CachedResponse {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    fetched: Instant,
    /// The end of its life: the TTL, or sooner the first expiry of an
    /// object it shows (past it, the store no longer lists that object).
    expires: Instant,
}

impl CachedResponse {
    /// The answer, marked as the cache's (`X-Cache`, and `Age` on a hit).
    fn respond(&self, outcome: CacheOutcome) -> crate::wire::Response {
        let mut response = http::Response::new(full_body(self.body.clone()));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers.clone();
        let headers = response.headers_mut();
        headers.insert("x-cache", http::HeaderValue::from_static(outcome.header()));
        if outcome == CacheOutcome::Hit {
            headers.insert("age", http::HeaderValue::from(self.age_secs()));
        }
        response
    }

    fn age_secs(&self) -> u64 {
        self.fetched.elapsed().as_secs()
    }
}

/// How a read was answered, for `X-Cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    Miss,
    Revalidated,
}

impl CacheOutcome {
    pub fn header(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "HIT",
            CacheOutcome::Miss => "MISS",
            CacheOutcome::Revalidated => "REVALIDATED",
        }
    }
}

/// Bytes that hold their room in the fill budget until the last clone of
/// them is dropped.
struct Budgeted {
    body: Bytes,
    _room: tokio::sync::OwnedSemaphorePermit,
}

impl AsRef<[u8]> for Budgeted {
    fn as_ref(&self) -> &[u8] {
        &self.body
    }
}

/// Counters exported at `/metrics`.
#[derive(Debug, Default)]
pub struct CacheMetrics {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub revalidations: AtomicU64,
    /// Store reads made to fill the cache: with coalescing, one per burst
    /// of concurrent misses.
    pub fills: AtomicU64,
    pub fill_failures: AtomicU64,
    /// Misses answered from the store uncached: the fill budget was spent.
    pub fills_refused: AtomicU64,
    pub purges: AtomicU64,
    /// Bytes answered from the RAM zone (per SSD zone: `SsdZone::bytes_served`).
    pub bytes_served: AtomicU64,
    /// Bytes answered as a fill brought them from the store.
    pub bytes_served_from_store: AtomicU64,
    /// Objects brought back from an SSD zone instead of the store; a copy
    /// too large to bring back whole counts once per answer streamed from
    /// it (once its first block proved intact).
    pub ssd_hits: AtomicU64,
    /// SSD hits answered block by block as they are read: copies too large
    /// to read whole first, or any while the fill budget is spent (a whole
    /// read holds the copy in memory).
    pub ssd_hits_streamed: AtomicU64,
    /// Objects pushed out of the RAM zone by its byte budget.
    pub ram_evictions: Arc<AtomicU64>,
}

pub mod arena;
mod ssd;

use arena::RamArena;
use ssd::{ObjectKey, ObjectKeyRef, SsdCopy, SsdZone};

/// A miss in progress: resolved with the answer to every request that
/// missed the key while it is in `EdgeCache::inflight`.
type Fill = Arc<OnceCell<Option<(Arc<CachedObject>, CacheOutcome)>>>;

pub struct EdgeCache {
    objects: moka::sync::Cache<ObjectKey, Arc<CachedObject>>,
    /// Bucket records (ACLs) for the public read path, dropped on every
    /// bucket change. A plain map: the records are few and small, each is
    /// read on every public request, and nothing about them needs an
    /// eviction policy (the map is emptied when it reaches
    /// [`MAX_BUCKET_RECORDS`]).
    buckets: parking_lot::RwLock<HashMap<String, Arc<BucketInfo>>>,
    /// Misses being filled; a purge removes the key's entry, so a request
    /// after it never joins a fill that read the old object.
    inflight: Mutex<HashMap<ObjectKey, Fill>>,
    epochs: Vec<AtomicU64>,
    /// Per stripe: held by a purge across its epoch bump and removals, and
    /// by whatever keeps a copy across its epoch check and insert, so a
    /// copy read before a purge is never kept after it.
    stripe_locks: Vec<Mutex<()>>,
    fill_budget: Arc<tokio::sync::Semaphore>,
    /// Bumped by every bucket change, so a read that raced one is not cached.
    bucket_epoch: AtomicU64,
    /// Rendered listings by (bucket, listing generation, request form).
    listings: moka::sync::Cache<(String, u64, String), Arc<CachedResponse>>,
    listing_generations: Mutex<HashMap<String, u64>>,
    /// Counts [`ChangeKind::Resync`]s: copies made before the last one
    /// revalidate.
    resyncs: AtomicU64,
    /// Whether this gateway is following the store's changes.
    feed: FeedLease,
    zones: Vec<Arc<SsdZone>>,
    /// Where the RAM zone keeps the bodies [`arena::takes`], for
    /// connections to send by reference ([`arena_for`]).
    arena: Option<Arc<RamArena>>,
    /// For background writes that must see purges made after they began.
    self_ref: std::sync::Weak<EdgeCache>,
    config: CacheConfig,
    pub metrics: CacheMetrics,
}

impl EdgeCache {
    /// A cache that follows `store`'s changes from now on, with its SSD
    /// zones reopened (their contents revalidate on first use), keeping its
    /// larger RAM-zone bodies in `arena` if given.
    pub fn new(
        config: CacheConfig,
        store: &Store,
        arena: Option<Arc<RamArena>>,
    ) -> anyhow::Result<Arc<EdgeCache>> {
        let zones = config
            .zone
            .iter()
            .map(|zone| {
                SsdZone::open(&zone.path, zone.max_bytes).map_err(|err| {
                    anyhow::anyhow!("opening cache zone {}: {err}", zone.path.display())
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let metrics = CacheMetrics::default();
        let ram_evictions = metrics.ram_evictions.clone();
        let weighing = arena.clone();
        let objects = moka::sync::Cache::builder()
            .max_capacity(config.ram_bytes)
            .weigher(move |key: &ObjectKey, value: &Arc<CachedObject>| {
                let body = match &weighing {
                    Some(arena) => arena.footprint(&value.body),
                    None => value.body.len(),
                };
                let bytes = key.0.len() + key.1.len() + body + 512;
                u32::try_from(bytes).unwrap_or(u32::MAX)
            })
            .eviction_listener(move |_key, _value, cause| {
                if cause == moka::notification::RemovalCause::Size {
                    ram_evictions.fetch_add(1, Ordering::Relaxed);
                }
            })
            // For a deleted bucket's purge.
            .support_invalidation_closures()
            .build();
        let cache = Arc::new_cyclic(|self_ref| EdgeCache {
            self_ref: self_ref.clone(),
            objects,
            buckets: parking_lot::RwLock::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            epochs: (0..EPOCH_STRIPES).map(|_| AtomicU64::new(0)).collect(),
            stripe_locks: (0..EPOCH_STRIPES).map(|_| Mutex::new(())).collect(),
            fill_budget: Arc::new(tokio::sync::Semaphore::new(
                usize::try_from(config.fill_memory_bytes / 1024)
                    .unwrap_or(usize::MAX)
                    .min(tokio::sync::Semaphore::MAX_PERMITS),
            )),
            zones,
            arena,
            bucket_epoch: AtomicU64::new(0),
            listings: moka::sync::Cache::builder()
                .max_capacity(config.ram_bytes / 8)
                .weigher(|key: &(String, u64, String), value: &Arc<CachedResponse>| {
                    let bytes = key.0.len() + key.2.len() + value.body.len() + 512;
                    u32::try_from(bytes).unwrap_or(u32::MAX)
                })
                .build(),
            listing_generations: Mutex::new(HashMap::new()),
            resyncs: AtomicU64::new(0),
            feed: store.feed_lease(),
            config,
            metrics,
        });
        let weak = Arc::downgrade(&cache);
        store.on_change(Arc::new(move |event: &ChangeEvent| {
            if let Some(cache) = weak.upgrade() {
                cache.apply(event);
            }
        }));
        Ok(cache)
    }

    /// The SSD zone `key` lives on, if there are any.
    fn zone_of(&self, bucket: &str, key: &str) -> Option<&Arc<SsdZone>> {
        if self.zones.is_empty() {
            return None;
        }
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one((key, bucket));
        self.zones.get((hash as usize) % self.zones.len())
    }

    pub fn enabled(&self) -> bool {
        self.config.ram_bytes > 0
    }

    /// Purges what a committed change makes stale.
    pub fn apply(&self, event: &ChangeEvent) {
        if event.kind == ChangeKind::Resync {
            self.resync();
            return;
        }
        if matches!(
            event.kind,
            ChangeKind::ObjectPut
                | ChangeKind::ObjectDeleted
                | ChangeKind::BucketCreated
                | ChangeKind::BucketUpdated
                | ChangeKind::BucketDeleted
        ) {
            *self
                .listing_generations
                .lock()
                .entry(event.bucket.clone())
                .or_default() += 1;
        }
        match (event.kind, event.key.as_deref()) {
            (ChangeKind::ObjectPut | ChangeKind::ObjectDeleted, Some(key)) => {
                self.purge(&event.bucket, key);
            }
            (ChangeKind::BucketCreated | ChangeKind::BucketUpdated, _) => {
                self.bucket_epoch.fetch_add(1, Ordering::SeqCst);
                self.buckets.write().remove(&event.bucket);
            }
            (ChangeKind::BucketDeleted, _) => {
                self.bucket_epoch.fetch_add(1, Ordering::SeqCst);
                self.buckets.write().remove(&event.bucket);
                self.inflight.lock().retain(|key, _| key.0 != event.bucket);
                let bucket = event.bucket.clone();
                // Rare, and must not leave a recreated bucket's namesake
                // objects behind: drop the bucket's entries by predicate.
                for stripe in &self.epochs {
                    stripe.fetch_add(1, Ordering::SeqCst);
                }
                for zone in &self.zones {
                    zone.purge_bucket(&bucket);
                }
                if let Err(err) = self
                    .objects
                    .invalidate_entries_if(move |key, _| key.0 == bucket)
                {
                    tracing::error!(error = %err, bucket = event.bucket, "a deleted bucket's copies were not purged");
                }
                self.metrics.purges.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// Changes may have gone unseen: every copy revalidates at its next
    /// hit, and listings and bucket records are read again.
    fn resync(&self) {
        self.resyncs.fetch_add(1, Ordering::SeqCst);
        self.bucket_epoch.fetch_add(1, Ordering::SeqCst);
        self.buckets.write().clear();
        self.inflight.lock().clear();
        self.listings.invalidate_all();
        // A copy kept in a zone checked the resync count under its
        // stripe's lock and is inserted before it lets go: once each lock
        // was taken here, every copy read before this resync is in the
        // index, to be marked below, and every later keep sees the count.
        for stripe in &self.stripe_locks {
            drop(stripe.lock());
        }
        for zone in &self.zones {
            zone.revalidate_all();
        }
        self.metrics.purges.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether `cached` may be served without asking the store.
    fn trusted(&self, cached: &CachedObject) -> bool {
        cached.is_fresh()
            && cached.resync.load(Ordering::SeqCst) == self.resyncs.load(Ordering::SeqCst)
            && self.feed.holds()
    }

    fn purge(&self, bucket: &str, key: &str) {
        let stripe = self.epoch_index(bucket, key);
        let _keeping = self.stripe_locks[stripe].lock();
        self.epochs[stripe].fetch_add(1, Ordering::SeqCst);
        let cache_key = (bucket.to_owned(), key.to_owned());
        self.inflight.lock().remove(&cache_key);
        if let Some(zone) = self.zone_of(bucket, key) {
            zone.purge(&cache_key);
        }
        self.objects.invalidate(&cache_key);
        self.metrics.purges.fetch_add(1, Ordering::Relaxed);
    }

    fn epoch(&self, bucket: &str, key: &str) -> &AtomicU64 {
        &self.epochs[self.epoch_index(bucket, key)]
    }

    fn epoch_index(&self, bucket: &str, key: &str) -> usize {
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one((bucket, key));
        (hash as usize) % EPOCH_STRIPES
    }

    /// The bucket `name`, from memory when it has not changed since it was
    /// last read; `None` if it does not exist.
    pub async fn bucket(
        &self,
        store: &Store,
        name: &str,
    ) -> strata_store::Result<Option<Arc<BucketInfo>>> {
        let following = self.feed.holds();
        if following && let Some(bucket) = self.buckets.read().get(name) {
            return Ok(Some(bucket.clone()));
        }
        // Boxed: the store's call is a large future, and a request's future
        // is as large as its largest path (see `SwiftDoor::dispatch`).
        Box::pin(self.bucket_from_store(store, name, following)).await
    }

    /// The bucket `name` read from the store, kept while `following`.
    async fn bucket_from_store(
        &self,
        store: &Store,
        name: &str,
        following: bool,
    ) -> strata_store::Result<Option<Arc<BucketInfo>>> {
        let epoch = self.bucket_epoch.load(Ordering::SeqCst);
        match store.bucket(name).await {
            Ok(bucket) => {
                let bucket = Arc::new(bucket);
                if following {
                    let mut buckets = self.buckets.write();
                    // Checked under the lock: a change applied meanwhile
                    // bumped the epoch before it took the lock to remove.
                    if self.bucket_epoch.load(Ordering::SeqCst) == epoch {
                        if buckets.len() >= MAX_BUCKET_RECORDS {
                            buckets.clear();
                        }
                        buckets.insert(name.to_owned(), bucket.clone());
                    }
                }
                Ok(Some(bucket))
            }
            Err(strata_store::StoreError::NoSuchBucket) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// The object from the cache, revalidated or fetched if need be. `None`
    /// means the object is not cacheable (too large, a manifest,
    /// `no-store`) or the store failed: the caller reads the store itself.
    pub async fn get(
        &self,
        store: &Store,
        bucket: &str,
        key: &str,
    ) -> Option<(Arc<CachedObject>, CacheOutcome)> {
        match self.objects.get(&ObjectKeyRef(bucket, key)) {
            Some(cached) if self.trusted(&cached) => {
                self.metrics.hits.fetch_add(1, Ordering::Relaxed);
                Some((cached, CacheOutcome::Hit))
            }
            // Boxed, as `bucket`'s store path.
            stale => Box::pin(self.get_uncached(store, bucket, key, stale)).await,
        }
    }

    /// `get` past a RAM hit: `cached`, the RAM zone's copy that needs
    /// revalidating, if any.
    async fn get_uncached(
        &self,
        store: &Store,
        bucket: &str,
        key: &str,
        cached: Option<Arc<CachedObject>>,
    ) -> Option<(Arc<CachedObject>, CacheOutcome)> {
        if let Some(cached) = cached {
            // Stale: keep the bytes if the store still has that version
            // (and, while it does not answer, for when it does: the caller
            // reads the store itself meanwhile).
            let resync = self.resyncs.load(Ordering::SeqCst);
            if still_current(store, &cached.info).await? {
                *cached.fetched.lock() = Instant::now();
                cached.resync.store(resync, Ordering::SeqCst);
                self.metrics.revalidations.fetch_add(1, Ordering::Relaxed);
                return Some((cached, CacheOutcome::Revalidated));
            }
            self.objects.invalidate(&ObjectKeyRef(bucket, key));
        }
        let cache_key = (bucket.to_owned(), key.to_owned());
        let fill = {
            let mut inflight = self.inflight.lock();
            match inflight.get(&cache_key) {
                Some(fill) => fill.clone(),
                None => {
                    // A fill keeps its copy before it leaves flight: one
                    // that ended since the lookup above left its copy, to
                    // be taken rather than read from the store again.
                    if let Some(cached) = self.objects.get(&cache_key)
                        && self.trusted(&cached)
                    {
                        drop(inflight);
                        self.metrics.hits.fetch_add(1, Ordering::Relaxed);
                        return Some((cached, CacheOutcome::Hit));
                    }
                    let fill = Arc::new(OnceCell::new());
                    inflight.insert(cache_key.clone(), fill.clone());
                    fill
                }
            }
        };
        // A RAM miss, whether it then waits for a fill, reads an SSD zone or the store.
        self.metrics.misses.fetch_add(1, Ordering::Relaxed);
        let cache = self.self_ref.upgrade()?;
        let (store, key, shared) = (store.clone(), cache_key.clone(), fill.clone());
        // In a task of its own: a client that hangs up while the first
        // bytes are awaited must not cancel the fill the others wait for
        // (another would then start it again), nor leave its answer in
        // flight, where later requests would take it unchecked (past its
        // freshness, or holding an open file or fill budget) for good.
        let filled = tokio::spawn(async move {
            let filled = (shared.get_or_init(|| cache.fill(&store, key.clone(), shared.clone())))
                .await
                .clone();
            // A fill still streaming stays in flight until its task ends it.
            if filled
                .as_ref()
                .is_none_or(|(cached, _)| !matches!(cached.streamed, Some(Streamed::Fill(_))))
            {
                cache.end_fill(&key, &shared);
            }
            filled
        })
        .await;
        filled.unwrap_or_else(|_| {
            // The task panicked: nothing will end its fill.
            self.end_fill(&cache_key, &fill);
            None
        })
    }

    /// Takes `fill` out of flight, unless a purge already replaced it.
    fn end_fill(&self, cache_key: &ObjectKey, fill: &Fill) {
        let mut inflight = self.inflight.lock();
        if inflight
            .get(cache_key)
            .is_some_and(|current| Arc::ptr_eq(current, fill))
        {
            inflight.remove(cache_key);
        }
    }

    /// Brings an object into RAM: from its SSD zone when the copy there is
    /// intact (and, if found at start, still current), else from the store.
    async fn fill(
        &self,
        store: &Store,
        cache_key: ObjectKey,
        in_flight: Fill,
    ) -> Option<(Arc<CachedObject>, CacheOutcome)> {
        let (bucket, key) = (&cache_key.0, &cache_key.1);
        let epoch = self.epoch(bucket, key).load(Ordering::SeqCst);
        let resync = self.resyncs.load(Ordering::SeqCst);
        if let Some(zone) = self.zone_of(bucket, key).cloned() {
            let lookup = cache_key.clone();
            let found = tokio::task::spawn_blocking(move || zone.open_copy(&lookup))
                .await
                .ok()
                .flatten();
            if let Some(copy) = found {
                let zone = copy.zone().clone();
                let info = copy.info().clone();
                let max_age = self.cacheable_for(&info);
                let mut outcome = CacheOutcome::Hit;
                let current = match max_age {
                    None => false,
                    // Found at start, changes perhaps unseen, or stale.
                    Some(max_age)
                        if copy.entry.needs_revalidation.load(Ordering::Relaxed)
                            || !self.feed.holds()
                            || copy.entry.confirmed_at().elapsed() >= max_age =>
                    {
                        outcome = CacheOutcome::Revalidated;
                        // The store did not say: the copy is kept for when
                        // it does, and the caller reads the store itself.
                        let current = still_current(store, &info).await?;
                        if current {
                            SsdZone::confirm(&copy.entry);
                            self.metrics.revalidations.fetch_add(1, Ordering::Relaxed);
                        }
                        current
                    }
                    Some(_) => true,
                };
                if current && let Some(max_age) = max_age {
                    let fetched = copy.entry.confirmed_at();
                    let copy = Arc::new(copy);
                    let read_whole = SSD_READ_WHOLE_BYTES.max(self.in_memory_fill_limit());
                    // A whole read holds the copy in memory: it is a fill's
                    // worth of the budget, for as long as the read and keep.
                    let budget = (info.size <= read_whole)
                        .then(|| {
                            let kib = u32::try_from(info.size.div_ceil(1024).max(1)).ok()?;
                            self.fill_budget.clone().try_acquire_many_owned(kib).ok()
                        })
                        .flatten();
                    if budget.is_none() {
                        // Streamed block by block, never sending a damaged
                        // one (it drops the file): the first is checked
                        // before the answer starts (`serve`), a later one
                        // cuts it short. Counted as an SSD hit there.
                        self.metrics
                            .ssd_hits_streamed
                            .fetch_add(1, Ordering::Relaxed);
                        let answer = CachedObject::streamed(
                            info,
                            (max_age, fetched),
                            resync,
                            Streamed::Ssd(copy),
                        );
                        return Some((answer, outcome));
                    }
                    // Read and checked whole before answering: damage is
                    // found in time to read the store instead.
                    let whole = tokio::task::spawn_blocking(move || copy.read_all())
                        .await
                        .ok()
                        .and_then(Result::ok);
                    if let Some(body) = whole {
                        // Kept in RAM, the copy is the RAM zone's budget's;
                        // otherwise it lives as long as the answer sending
                        // it, and holds its room in the fill budget as long.
                        let body = match budget {
                            Some(room) if body.len() as u64 > self.config.ram_max_object_bytes => {
                                Bytes::from_owner(Budgeted { body, _room: room })
                            }
                            _ => body,
                        };
                        self.metrics.ssd_hits.fetch_add(1, Ordering::Relaxed);
                        let kept = self.keep(
                            cache_key.clone(),
                            info,
                            body,
                            (max_age, fetched),
                            (epoch, resync),
                        );
                        // This answer's bytes are the zone's; later hits
                        // on the kept copy are the RAM zone's.
                        let answer = CachedObject::new(
                            kept.info.clone(),
                            kept.body.clone(),
                            (max_age, fetched),
                            resync,
                            Source::Zone(zone.clone()),
                        );
                        return Some((Arc::new(answer), outcome));
                    }
                } else if let Some(zone) = self.zone_of(bucket, key) {
                    zone.purge(&cache_key);
                }
            }
        }
        self.metrics.fills.fetch_add(1, Ordering::Relaxed);
        let info = store.head_object(bucket, key).await.ok()?;
        let max_age = self.cacheable_for(&info)?;
        let spool_zone = self.spool_zone(bucket, key, &info);
        let kib = match spool_zone {
            Some(_) => SPOOLED_FILL_KIB,
            None => u32::try_from(info.size.div_ceil(1024).max(1) * 2).ok()?,
        };
        let refused = || {
            self.metrics.fills_refused.fetch_add(1, Ordering::Relaxed);
        };
        let Ok(budget) = self.fill_budget.clone().try_acquire_many_owned(kib) else {
            refused();
            return None;
        };
        // A fill written to its zone file takes room on the disk as well.
        let spool = match spool_zone {
            None => None,
            Some(zone) => {
                let room = u32::try_from(info.size.div_ceil(1024))
                    .ok()
                    .and_then(|kib| zone.filling_room.clone().try_acquire_many_owned(kib).ok());
                let Some(room) = room else {
                    refused();
                    return None;
                };
                Some((zone, room))
            }
        };
        let filling = Arc::new(Filling::default());
        let mut progress = filling.progress.subscribe();
        let cache = self.self_ref.upgrade()?;
        tokio::spawn(cache.read_into_cache(
            store.clone(),
            cache_key,
            info.clone(),
            max_age,
            (epoch, resync),
            (filling.clone(), in_flight),
            (budget, spool),
        ));
        // Answer once the store delivered something: a store that cannot
        // serve the object is then read by the caller itself (and answers
        // an error status), instead of cutting a 200 short.
        let started = progress.wait_for(FillProgress::started).await.ok()?;
        if matches!(started.end, FillEnd::Failed) {
            return None;
        }
        drop(started);
        let answer = CachedObject::streamed(
            info,
            (max_age, Instant::now()),
            resync,
            Streamed::Fill(filling),
        );
        Some((answer, CacheOutcome::Miss))
    }

    /// The fill task: reads the object into `filling` for the requests that
    /// stream it, then keeps the whole copy (unless a purge came since
    /// `epochs`) and takes the fill out of flight.
    #[allow(clippy::too_many_arguments)] // the one spawn site names each part
    async fn read_into_cache(
        self: Arc<Self>,
        store: Store,
        cache_key: ObjectKey,
        info: ObjectInfo,
        max_age: Duration,
        epochs: (u64, u64),
        (filling, in_flight): (Arc<Filling>, Fill),
        (budget, spool): (
            tokio::sync::OwnedSemaphorePermit,
            Option<(Arc<SsdZone>, tokio::sync::OwnedSemaphorePermit)>,
        ),
    ) {
        let mut ender = FillEnder {
            cache: self.clone(),
            cache_key: cache_key.clone(),
            filling: filling.clone(),
            in_flight,
            finished: false,
        };
        let (bucket, key) = (&cache_key.0, &cache_key.1);
        if let Some((zone, zone_room)) = spool {
            ender.finished = self
                .spool_into_zone(zone, &store, &cache_key, &info, epochs, &filling)
                .await;
            drop((budget, zone_room));
            return;
        }
        let mut pieces = Vec::new();
        let mut received = 0u64;
        let mut reader = store.read(&info, None);
        while let Some(piece) = reader.next().await {
            let piece = match piece {
                Ok(piece) => piece,
                Err(err) => {
                    tracing::warn!(error = %err, bucket, key, "cache fill failed");
                    self.metrics.fill_failures.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            received += piece.len() as u64;
            pieces.push(piece.clone());
            // The piece that completes the object goes out with the kept
            // copy (below): a client that has read every byte then finds
            // the copy kept.
            if received < info.size {
                filling
                    .progress
                    .send_modify(|progress| progress.pieces.push(piece));
            }
        }
        if received != info.size {
            // Ranges are served by slicing the copy: it must be whole.
            tracing::warn!(
                bucket,
                key,
                "cache fill read a different size than the record"
            );
            self.metrics.fill_failures.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let body = match pieces.as_slice() {
            [one] => one.clone(),
            _ => {
                let mut whole = Vec::with_capacity(info.size as usize);
                for piece in &pieces {
                    whole.extend_from_slice(piece);
                }
                Bytes::from(whole)
            }
        };
        drop(pieces);
        // Without an SSD zone to write, the copy is the RAM zone's from
        // here (and in its budget): released before it can be a hit, so a
        // hit means the share is back. A copy on its way to a zone file
        // holds its share until the file is written.
        let budget = self.zone_of(bucket, key).is_some().then_some(budget);
        // The kept copy (in the RAM zone's arena, if it has one) is what
        // the fill's requests are answered from from here on.
        let kept = self.keep(
            cache_key.clone(),
            info,
            body,
            (max_age, Instant::now()),
            epochs,
        );
        filling.progress.send_modify(|progress| {
            progress.pieces = Vec::new();
            progress.end = FillEnd::Whole(kept.body.clone());
        });
        // Until the SSD copy is written, requests join this fill (and are
        // answered from the kept copy) rather than read the store again.
        self.write_to_zone(&cache_key, &kept.info, &kept.body, epochs)
            .await;
        drop(budget);
        ender.finished = true;
    }

    /// The largest object a fill holds in memory (and an SSD hit reads
    /// whole): what the RAM zone keeps, 64 MiB at most.
    fn in_memory_fill_limit(&self) -> u64 {
        self.config
            .ram_max_object_bytes
            .min(MAX_IN_MEMORY_FILL_BYTES)
    }

    /// The SSD zone whose file a fill of `info` goes straight to as it
    /// arrives, rather than through memory: its zone, when the RAM zone
    /// would not keep it.
    fn spool_zone(&self, bucket: &str, key: &str, info: &ObjectInfo) -> Option<Arc<SsdZone>> {
        if info.size <= self.in_memory_fill_limit() {
            return None;
        }
        self.zone_of(bucket, key).cloned()
    }

    /// The fill of an object written to its zone file as it arrives: the
    /// requests streaming it read what is written from the file, so the
    /// fill holds no more than the store's pieces in flight. Whether the
    /// copy is whole (and kept, unless a purge or resync came since
    /// `epochs`).
    async fn spool_into_zone(
        &self,
        zone: Arc<SsdZone>,
        store: &Store,
        cache_key: &ObjectKey,
        info: &ObjectInfo,
        epochs: (u64, u64),
        filling: &Filling,
    ) -> bool {
        let failed = |why: &str, err: &dyn std::fmt::Display| {
            tracing::warn!(error = %err, bucket = cache_key.0, key = cache_key.1, "cache fill failed: {why}");
            self.metrics.fill_failures.fetch_add(1, Ordering::Relaxed);
            false
        };
        let begun = {
            let (zone, cache_key, info) = (zone.clone(), cache_key.clone(), info.clone());
            off_runtime(move || zone.begin_file(&cache_key, &info)).await
        };
        let mut writer = match begun {
            Ok(writer) => writer,
            Err(err) => return failed("starting the zone file", &err),
        };
        let spool = writer.body_reader();
        filling
            .progress
            .send_modify(|progress| progress.spool = Some(spool));
        let mut received = 0u64;
        let mut reader = store.read(info, None);
        while let Some(piece) = reader.next().await {
            let piece = match piece {
                Ok(piece) => piece,
                Err(err) => return failed("reading the store", &err),
            };
            received += piece.len() as u64;
            writer = match off_runtime(move || writer.append(&piece).map(|()| writer)).await {
                Ok(writer) => writer,
                Err(err) => return failed("writing the zone file", &err),
            };
            // The bytes that complete the object go out with the kept copy
            // (below): a client that has read every byte then finds it kept.
            if received < info.size {
                filling
                    .progress
                    .send_modify(|progress| progress.spooled = received);
            }
        }
        let cache = self.self_ref.clone();
        let cache_key = cache_key.clone();
        let kept = off_runtime(move || {
            let file = writer.finish()?;
            match cache.upgrade() {
                Some(cache) => cache.keep_file(&zone, cache_key, file, epochs),
                None => zone.discard(file),
            }
            Ok(())
        })
        .await;
        if let Err(err) = kept {
            return failed("ending the zone file", &err);
        }
        filling.progress.send_modify(|progress| {
            progress.spooled = received;
            progress.end = FillEnd::Spooled;
        });
        true
    }

    /// Makes a written zone file the key's copy, unless a purge or resync
    /// came since `epochs` (then it is removed). Blocking.
    fn keep_file(
        &self,
        zone: &SsdZone,
        cache_key: ObjectKey,
        file: ssd::SsdEntry,
        (epoch, resync): (u64, u64),
    ) {
        let stripe = self.epoch_index(&cache_key.0, &cache_key.1);
        let _keeping = self.stripe_locks[stripe].lock();
        if self.epochs[stripe].load(Ordering::SeqCst) == epoch
            && self.resyncs.load(Ordering::SeqCst) == resync
        {
            zone.insert(cache_key, file);
        } else {
            zone.discard(file);
        }
    }

    /// Writes a fetched copy to its SSD zone, if there are zones, off the
    /// runtime; a purge or resync since `epochs` removes it again.
    async fn write_to_zone(
        &self,
        cache_key: &ObjectKey,
        info: &ObjectInfo,
        body: &Bytes,
        (epoch, resync): (u64, u64),
    ) {
        let Some(zone) = self.zone_of(&cache_key.0, &cache_key.1).cloned() else {
            return;
        };
        let (info, body, cache_key) = (info.clone(), body.clone(), cache_key.clone());
        let cache = self.self_ref.clone();
        let written = tokio::task::spawn_blocking(move || {
            let file = match zone.write_file(&cache_key, &info, &body) {
                Ok(file) => file,
                Err(err) => {
                    tracing::warn!(error = %err, "writing to an SSD cache zone failed");
                    return;
                }
            };
            // A purge or resync that came while the file was written wins.
            match cache.upgrade() {
                Some(cache) => cache.keep_file(&zone, cache_key, file, (epoch, resync)),
                None => zone.discard(file),
            }
        });
        if let Err(err) = written.await {
            tracing::warn!(error = %err, "the SSD cache zone write task failed");
        }
    }

    /// Wraps a copy fetched (or last confirmed current) at `fetched`, fresh
    /// for `max_age`, and keeps it in RAM when it is small enough and no
    /// purge came since `epoch` (the key's purge epoch and the resync count
    /// when the fetch began).
    fn keep(
        &self,
        cache_key: ObjectKey,
        info: ObjectInfo,
        body: Bytes,
        freshness: (Duration, Instant),
        (epoch, resync): (u64, u64),
    ) -> Arc<CachedObject> {
        let for_ram = body.len() as u64 <= self.config.ram_max_object_bytes;
        let stripe = self.epoch_index(&cache_key.0, &cache_key.1);
        // Into the arena only when it may be kept: a copy a purge made
        // stale meanwhile answers once, from where it is.
        let keepable = for_ram && self.epochs[stripe].load(Ordering::SeqCst) == epoch;
        let body = match &self.arena {
            Some(arena) if keepable && arena::takes(body.len()) => {
                arena.copy_in(&body).unwrap_or(body)
            }
            _ => body,
        };
        let cached = Arc::new(CachedObject::new(
            info,
            body,
            freshness,
            resync,
            Source::Ram,
        ));
        if for_ram {
            let _keeping = self.stripe_locks[stripe].lock();
            if self.epochs[stripe].load(Ordering::SeqCst) == epoch {
                self.objects.insert(cache_key, cached.clone());
            }
        }
        cached
    }

    /// How long `info` may be served from the cache, if at all: never past
    /// its expiry (`X-Delete-At`), which the store's sweep may delete only
    /// seconds later.
    fn cacheable_for(&self, info: &ObjectInfo) -> Option<Duration> {
        let max_age = self.cacheable_for_headers(info)?;
        match info.meta.delete_at {
            None => Some(max_age),
            Some(at) => {
                let left = until_unix_secs(at);
                (!left.is_zero()).then(|| max_age.min(left))
            }
        }
    }

    /// How long the object's size and headers let it be cached.
    fn cacheable_for_headers(&self, info: &ObjectInfo) -> Option<Duration> {
        if info.size > self.config.max_object_bytes
            || info.meta.headers.contains_key("x-object-manifest")
            || info.meta.headers.contains_key("x-static-large-object")
        {
            return None;
        }
        let (mut max_age, mut shared_max_age) = (None, None);
        if let Some(control) = info.meta.headers.get("cache-control") {
            for directive in control.split(',').map(|d| d.trim().to_ascii_lowercase()) {
                if directive == "no-store" || directive == "private" || directive == "no-cache" {
                    return None;
                }
                let seconds = |name: &str| {
                    directive
                        .strip_prefix(name)
                        .and_then(|value| value.trim_matches('"').parse::<u64>().ok())
                };
                if let Some(seconds) = seconds("max-age=") {
                    max_age = Some(seconds);
                }
                if let Some(seconds) = seconds("s-maxage=") {
                    shared_max_age = Some(seconds);
                }
            }
        }
        // A shared cache takes s-maxage over max-age, wherever each is
        // written (RFC 9111 §5.2.2.10).
        let seconds = shared_max_age
            .or(max_age)
            .unwrap_or(self.config.default_ttl_secs);
        Some(Duration::from_secs(seconds))
    }

    /// The current listing generation of `bucket`: a listing rendered under
    /// it is kept under it, and is gone once the bucket changes (or a
    /// resync comes: the count of those is the high half).
    fn listing_generation(&self, bucket: &str) -> u64 {
        let changes = self
            .listing_generations
            .lock()
            .get(bucket)
            .copied()
            .unwrap_or_default();
        (self.resyncs.load(Ordering::SeqCst) << 32).wrapping_add(changes)
    }

    /// The answer to a listing of `bucket` in the request form `form`, if
    /// a fresh one is kept (`X-Cache: HIT`); otherwise the bucket's listing
    /// generation, under which to render and [`keep_listing`] it.
    ///
    /// [`keep_listing`]: Self::keep_listing
    pub fn listing(&self, bucket: &str, form: &str) -> Result<crate::wire::Response, u64> {
        let generation = self.listing_generation(bucket);
        if !self.feed.holds() {
            return Err(generation);
        }
        let key = (bucket.to_owned(), generation, form.to_owned());
        let Some(cached) = self.listings.get(&key) else {
            return Err(generation);
        };
        if Instant::now() >= cached.expires {
            self.listings.invalidate(&key);
            return Err(generation);
        }
        self.metrics.hits.fetch_add(1, Ordering::Relaxed);
        Ok(cached.respond(CacheOutcome::Hit))
    }

    /// Keeps a listing rendered while the bucket was at `generation`, for
    /// the TTL or until `first_expiry` (Unix seconds) of an object it
    /// shows, whichever is first, and returns it as the answer
    /// (`X-Cache: MISS`).
    pub fn keep_listing(
        &self,
        (bucket, generation, form): (&str, u64, &str),
        (status, headers, body): (http::StatusCode, http::HeaderMap, Bytes),
        first_expiry: Option<u64>,
    ) -> crate::wire::Response {
        let fetched = Instant::now();
        // A year stands for longer: `Instant` arithmetic must not overflow.
        let ttl = Duration::from_secs(self.config.default_ttl_secs)
            .min(first_expiry.map_or(Duration::MAX, until_unix_secs))
            .min(Duration::from_secs(365 * 86_400));
        let listing = CachedResponse {
            status,
            headers,
            body,
            fetched,
            expires: fetched.checked_add(ttl).unwrap_or(fetched),
        };
        let response = listing.respond(CacheOutcome::Miss);
        if self.enabled() {
            self.metrics.misses.fetch_add(1, Ordering::Relaxed);
            self.listings.insert(
                (bucket.to_owned(), generation, form.to_owned()),
                Arc::new(listing),
            );
        }
        response
    }

    /// The body a read of `cached` answers with: nothing for HEAD, else
    /// the `range` (already clamped to the object) or all of it, streamed
    /// from the fill if the copy is still arriving. Counted as served;
    /// every door answers cached reads through here.
    ///
    /// `None` when the copy is an SSD copy whose first block is damaged
    /// (the file is dropped): the caller reads the store instead, as for
    /// an object the cache does not keep. Checking that block before the
    /// status goes out is what lets the request still succeed; damage in a
    /// later block can only cut the answer short.
    pub async fn serve(
        &self,
        cached: &CachedObject,
        range: Option<&std::ops::Range<u64>>,
        head: bool,
    ) -> Option<ResponseBody> {
        let range = match (range, head) {
            (_, true) => 0..0,
            (Some(range), false) => range.clone(),
            (None, false) => 0..cached.info.size,
        };
        let body = self.body_of(cached, range.clone(), true).await?;
        self.count_served(cached, range.end - range.start);
        Some(body)
    }

    /// The bodies of several `ranges` of `cached` (each clamped to the
    /// object), for a multi-range answer. As [`Edge::serve`], `None` when
    /// the first block read shows an SSD copy damaged; only the first
    /// range is read before answering, so that a request for many ranges
    /// holds no more than one block in memory at a time.
    pub async fn serve_parts(
        &self,
        cached: &CachedObject,
        ranges: &[std::ops::Range<u64>],
    ) -> Option<Vec<ResponseBody>> {
        let mut bodies = Vec::with_capacity(ranges.len());
        for (index, range) in ranges.iter().enumerate() {
            bodies.push(self.body_of(cached, range.clone(), index == 0).await?);
        }
        self.count_served(
            cached,
            ranges.iter().map(|range| range.end - range.start).sum(),
        );
        Some(bodies)
    }

    /// `range` of `cached`, streamed from the fill if the copy is still
    /// arriving. With `check_first`, an SSD copy's first block is read
    /// (and checked) now.
    async fn body_of(
        &self,
        cached: &CachedObject,
        range: std::ops::Range<u64>,
        check_first: bool,
    ) -> Option<ResponseBody> {
        // A copy's length is its record's size (checked when it is made),
        // so a clamped range is always inside it.
        let slice =
            |whole: &Bytes| full_body(whole.slice(range.start as usize..range.end as usize));
        let body = match &cached.streamed {
            None => slice(&cached.body),
            Some(_) if range.is_empty() => full_body(Bytes::new()),
            Some(Streamed::Fill(filling)) => {
                let whole = match &filling.progress.borrow().end {
                    FillEnd::Whole(body) => Some(body.clone()),
                    _ => None,
                };
                match whole {
                    Some(whole) => slice(&whole),
                    None => streamed_body(filling.stream(range.clone())),
                }
            }
            Some(Streamed::Ssd(copy)) if check_first => {
                let blocks = first_read(stream_copy(copy.clone(), range.clone()))
                    .await
                    .ok()?;
                self.metrics.ssd_hits.fetch_add(1, Ordering::Relaxed);
                streamed_body(blocks)
            }
            Some(Streamed::Ssd(copy)) => streamed_body(stream_copy(copy.clone(), range.clone())),
        };
        Some(body)
    }

    fn count_served(&self, cached: &CachedObject, bytes: u64) {
        let served = match &cached.source {
            Source::Ram => &self.metrics.bytes_served,
            Source::Zone(zone) => &zone.bytes_served,
            Source::Store => &self.metrics.bytes_served_from_store,
        };
        served.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Prometheus text exposition of the counters.
    pub fn metrics_text(&self) -> String {
        let m = &self.metrics;
        let counters = [
            ("strata_cache_hits_total", &m.hits),
            ("strata_cache_misses_total", &m.misses),
            ("strata_cache_revalidations_total", &m.revalidations),
            ("strata_cache_fills_total", &m.fills),
            ("strata_cache_fill_failures_total", &m.fill_failures),
            ("strata_cache_fills_refused_total", &m.fills_refused),
            ("strata_cache_purges_total", &m.purges),
        ];
        // These count answers and fills of the whole cache, whichever zone
        // keeps the copy: no zone label.
        let mut out = String::new();
        for (name, value) in counters {
            out.push_str(&format!(
                "# TYPE {name} counter\n{name} {}\n",
                value.load(Ordering::Relaxed)
            ));
        }
        out.push_str(&format!(
            "# TYPE strata_cache_ssd_hits_total counter\nstrata_cache_ssd_hits_total {}\n\
             # TYPE strata_cache_ssd_hits_streamed_total counter\n\
             strata_cache_ssd_hits_streamed_total {}\n",
            m.ssd_hits.load(Ordering::Relaxed),
            m.ssd_hits_streamed.load(Ordering::Relaxed)
        ));
        // Families with one sample per zone: the RAM zone's (if it has one)
        // and one per SSD zone.
        type PerZone = fn(&SsdZone) -> u64;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let families: [(&str, &str, Option<u64>, PerZone); 6] = [
            // The bytes of answers, by the zone they came from (and below,
            // those streamed from the store as a fill brought them).
            (
                "strata_cache_bytes_served_total",
                "counter",
                Some(load(&m.bytes_served)),
                |zone| zone.bytes_served.load(Ordering::Relaxed),
            ),
            (
                "strata_cache_bytes",
                "gauge",
                Some(self.objects.weighted_size()),
                |zone| zone.bytes(),
            ),
            (
                "strata_cache_evictions_total",
                "counter",
                Some(load(&m.ram_evictions)),
                |zone| zone.evictions.load(Ordering::Relaxed),
            ),
            // Copies read back from each SSD zone and their bytes.
            ("strata_cache_zone_reads_total", "counter", None, |zone| {
                zone.reads.load(Ordering::Relaxed)
            }),
            (
                "strata_cache_zone_bytes_read_total",
                "counter",
                None,
                |zone| zone.bytes_read.load(Ordering::Relaxed),
            ),
            // 1 once the files of earlier runs are indexed.
            ("strata_cache_zone_indexed", "gauge", None, |zone| {
                u64::from(zone.indexed())
            }),
        ];
        for (name, kind, ram, per_zone) in families {
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            if let Some(ram) = ram {
                out.push_str(&format!("{name}{{zone=\"ram\"}} {ram}\n"));
            }
            for (n, zone) in self.zones.iter().enumerate() {
                out.push_str(&format!("{name}{{zone=\"ssd{n}\"}} {}\n", per_zone(zone)));
            }
            if name == "strata_cache_bytes_served_total" {
                out.push_str(&format!(
                    "{name}{{zone=\"store\"}} {}\n",
                    load(&m.bytes_served_from_store)
                ));
            }
        }
        for (name, kind, value) in self.arena.iter().flat_map(|arena| arena.metrics()) {
            out.push_str(&format!("# TYPE {name} {kind}\n{name} {value}\n"));
        }
        out
    }
}

/// The memfd arena for `config`'s RAM zone, when it keeps bodies that
/// large and `sendfile` is on; `None` (bodies on the heap, sent by copy)
/// otherwise, where shared memory may use huge pages, or where the kernel
/// refuses a memfd. Its span is the RAM budget and a quarter more, for the
/// bodies evicted that answers still send: the file is sparse, only bodies
/// take memory.
pub fn arena_for(config: &CacheConfig) -> Option<Arc<RamArena>> {
    let smallest = *arena::ARENA_BODY_BYTES.start() as u64;
    if !config.sendfile || config.ram_bytes == 0 || config.ram_max_object_bytes < smallest {
        return None;
    }
    if arena::shared_memory_may_use_huge_pages() {
        tracing::warn!(
            "shared memory may use transparent huge pages \
             (/sys/kernel/mm/transparent_hugepage/shmem_enabled): RAM-zone bodies are \
             sent by copy, not with sendfile"
        );
        return None;
    }
    let span = config.ram_bytes.saturating_add(config.ram_bytes / 4);
    RamArena::open(span)
        .inspect_err(|err| {
            tracing::warn!(error = %err, "no memfd for the RAM zone; bodies are sent by copy");
        })
        .ok()
}

#[cfg(test)]
mod tests {
    use strata_pool::{LocalPool, LocalPoolConfig};
    use strata_store::{ObjectMeta, PutConditions, StageOptions, StoreConfig};

    use super::*;

    /// A store holding `b/k` ("hello"), in `dir`.
    async fn store_with_one_object(dir: &std::path::Path) -> Store {
        let pool = LocalPool::open(LocalPoolConfig {
            dir: dir.join("pool"),
        })
        .expect("pool");
        let store = Store::open(StoreConfig::new(dir.join("meta")), Arc::new(pool)).expect("store");
        store.create_bucket("a", "b", "r").await.expect("bucket");
        let body = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"hello"))]);
        let options = StageOptions {
            sha256: false,
            checksum: None,
            max_size: 1 << 20,
        };
        let Ok(staged) = store.stage("b", body, &options).await else {
            panic!("staging failed");
        };
        let meta = ObjectMeta::default();
        let conditions = PutConditions::default();
        store
            .put_object("b", "k", staged, meta, None, conditions)
            .await
            .expect("put");
        store
    }

    /// Waits, a while at most, until `done`.
    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        for _ in 0..500 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{what}");
    }

    /// A request whose client hangs up while its miss is answered from an
    /// SSD zone leaves that answer to leave flight on its own: one left in
    /// flight would be taken by later requests without their checks (its
    /// freshness, the feed), and hold its file or fill budget for good.
    #[tokio::test]
    async fn a_request_cancelled_during_its_miss_leaves_nothing_in_flight() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = store_with_one_object(dir.path()).await;
        let config = CacheConfig {
            // Smaller than the object: its copy lives in the zone only.
            ram_max_object_bytes: 4,
            zone: vec![ZoneConfig {
                path: dir.path().join("zone"),
                max_bytes: 1 << 20,
            }],
            ..CacheConfig::default()
        };
        let cache = EdgeCache::new(config, &store, None).expect("cache");
        until("the zone was not indexed", || cache.zones[0].indexed()).await;
        let (_, outcome) = cache.get(&store, "b", "k").await.expect("filled");
        assert_eq!(outcome, CacheOutcome::Miss);
        let key = ("b".to_owned(), "k".to_owned());
        until("the fill left no copy in the zone", || {
            cache.inflight.lock().is_empty() && cache.zones[0].open_copy(&key).is_some()
        })
        .await;

        // Polled once and dropped: the miss spawned its read of the zone's
        // copy, which has not run yet on this thread.
        let cancelled = futures::FutureExt::now_or_never(cache.get(&store, "b", "k"));
        assert!(cancelled.is_none(), "answered at its first poll");
        assert_eq!(cache.inflight.lock().len(), 1);
        until(
            "the answer of a request that hung up stays in flight",
            || cache.inflight.lock().is_empty(),
        )
        .await;
        assert!(cache.get(&store, "b", "k").await.is_some());
    }
}
