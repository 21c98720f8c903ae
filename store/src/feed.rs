//! The change feed: every mutation appends an event in the same batch that makes it
//! visible, so the invalidator (and anything else that follows changes) can never
//! miss one, even across a crash.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// A store's feed numbers: the next one, and those taken by commits not
/// written yet. Numbers are taken before the commit's fsync, so commits of
/// two keys can land out of order; readers are shown no event at or past
/// the lowest number still in flight ([`FeedNumbers::readable_below`]), so
/// a follower never steps over a number whose commit is only slow (a
/// RocksDB write stall), which would lose its event for every other
/// gateway's cache. A number whose commit failed is released too, and
/// stays a hole a follower steps over.
#[derive(Default)]
pub(crate) struct FeedNumbers {
    next: AtomicU64,
    in_flight: Mutex<BTreeSet<u64>>,
}

impl FeedNumbers {
    pub(crate) fn starting_at(next: u64) -> Arc<FeedNumbers> {
        Arc::new(FeedNumbers {
            next: AtomicU64::new(next),
            in_flight: Mutex::default(),
        })
    }

    /// The next number, held in flight until the ticket is dropped (after
    /// its batch was written, or failed).
    pub(crate) fn take(self: &Arc<Self>) -> FeedTicket {
        // Under the lock: a reader sees a number either taken and in
        // flight, or not taken yet.
        let mut in_flight = self.in_flight.lock();
        let seq = self.next.fetch_add(1, Ordering::SeqCst);
        in_flight.insert(seq);
        FeedTicket {
            numbers: self.clone(),
            seq,
        }
    }

    /// The number the next event will have.
    pub(crate) fn next(&self) -> u64 {
        self.next.load(Ordering::SeqCst)
    }

    pub(crate) fn reset(&self, next: u64) {
        self.next.store(next, Ordering::SeqCst);
    }

    /// Every event numbered below this was written or will never be.
    pub(crate) fn readable_below(&self) -> u64 {
        let in_flight = self.in_flight.lock();
        in_flight.first().copied().unwrap_or_else(|| self.next())
    }
}

/// A feed number taken by a batch not written yet ([`FeedNumbers::take`]).
pub(crate) struct FeedTicket {
    numbers: Arc<FeedNumbers>,
    pub(crate) seq: u64,
}

impl Drop for FeedTicket {
    fn drop(&mut self) {
        self.numbers.in_flight.lock().remove(&self.seq);
    }
}

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

/// How a store following another's feed ([`crate::Store::connect`]) names
/// itself to the service: `id` is stable across restarts (a gateway that
/// comes back takes its own place instead of leaving a stale one), `name`
/// is for people (host and port).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowerTag {
    pub id: String,
    pub name: String,
}

impl FollowerTag {
    /// A tag of its own for a process that keeps none.
    pub fn random() -> FollowerTag {
        let id = format!("{:016x}", rand::random::<u64>());
        FollowerTag {
            name: id.clone(),
            id,
        }
    }
}

/// A follower of this store's feed, as its polls confirmed it: every event
/// up to `position` has reached it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FeedFollower {
    pub id: String,
    pub name: String,
    pub position: u64,
    /// Events committed after `position`.
    pub behind: u64,
    /// Since its last poll.
    pub idle: std::time::Duration,
}

impl FeedFollower {
    /// Whether it polled within the lease a healthy follower's long polls
    /// keep (the others are away, or gone).
    pub fn is_current(&self) -> bool {
        self.idle < crate::remote::FEED_LEASE
    }
}

/// A follower's mark as the feed's trimming records it, in the store and,
/// for a replicated service, in its log: every member (and this one after
/// a restart) then holds what the follower has not confirmed, not only the
/// member whose memory saw its polls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RecordedMark {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) position: u64,
    /// The wall clock of its last poll (milliseconds since the epoch).
    pub(crate) polled_ms: i64,
}

/// The followers of a feed served to other gateways, by their last poll.
/// A poll asking for the events after `n` confirms every event up to `n`.
/// Polls are noted in memory; trimming records the marks with the trim
/// ([`RecordedMark`]), and those recorded are taken back at start, after a
/// replica import and on every replica applying a trim ([`Followers::adopt`]).
/// Polls are timed by the wall clock, as recorded marks travel between
/// machines and restarts.
pub(crate) struct Followers {
    marks: parking_lot::Mutex<std::collections::HashMap<String, RecordedMark>>,
    started: std::time::Instant,
}

/// How long ago `then_ms` was, by the wall clock (never negative).
fn since_ms(then_ms: i64, now_ms: i64) -> std::time::Duration {
    std::time::Duration::from_millis(now_ms.saturating_sub(then_ms).max(0) as u64)
}

impl Followers {
    pub(crate) fn new() -> Followers {
        Followers {
            marks: Default::default(),
            started: std::time::Instant::now(),
        }
    }

    pub(crate) fn confirm(&self, tag: FollowerTag, position: u64, now_ms: i64) {
        let mark = RecordedMark {
            id: tag.id,
            name: tag.name,
            position,
            polled_ms: now_ms,
        };
        self.marks.lock().insert(mark.id.clone(), mark);
    }

    /// Takes recorded marks back, where they are newer than what this
    /// process saw itself.
    pub(crate) fn adopt(&self, recorded: &[RecordedMark]) {
        let mut marks = self.marks.lock();
        for mark in recorded {
            let newer = marks
                .get(&mark.id)
                .is_none_or(|seen| seen.polled_ms < mark.polled_ms);
            if newer {
                marks.insert(mark.id.clone(), mark.clone());
            }
        }
    }

    /// The marks of the followers that polled within `within` (the others
    /// are forgotten), by name.
    pub(crate) fn marks(&self, within: std::time::Duration, now_ms: i64) -> Vec<RecordedMark> {
        let mut marks = self.marks.lock();
        marks.retain(|_, mark| since_ms(mark.polled_ms, now_ms) < within);
        let mut kept: Vec<RecordedMark> = marks.values().cloned().collect();
        kept.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
        kept
    }

    /// The followers that polled within `within`, as [`Followers::marks`]
    /// has them, against the feed's `head`.
    pub(crate) fn current(
        &self,
        within: std::time::Duration,
        head: u64,
        now_ms: i64,
    ) -> Vec<FeedFollower> {
        self.marks(within, now_ms)
            .into_iter()
            .map(|mark| FeedFollower {
                behind: head.saturating_sub(mark.position),
                idle: since_ms(mark.polled_ms, now_ms),
                id: mark.id,
                name: mark.name,
                position: mark.position,
            })
            .collect()
    }

    /// Whether every follower still following has polled since this
    /// process started, and since `polled_since` (when a replicated
    /// service's member began to lead, and so to be polled): a healthy
    /// long poll comes within `lease`.
    pub(crate) fn complete(
        &self,
        polled_since: Option<std::time::Instant>,
        lease: std::time::Duration,
    ) -> bool {
        self.started.elapsed() >= lease && polled_since.is_none_or(|since| since.elapsed() >= lease)
    }
}
