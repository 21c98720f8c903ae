//! The internal protocol between gateways and storage nodes: HTTP/1.1, one
//! resource per extent, JSON for everything else, and a signature made with the
//! cluster secret on every request.
//!
//! ```text
//! PUT    /v1/extents/{id}                  body: the extent      → 204
//! GET    /v1/extents/{id}?offset=&len=     → 200 bytes | 404 | 410 deleted | 422 corrupt
//! DELETE /v1/extents/{id}?at=UNIX          → 204 (leaves a tombstone dated `at`)
//! GET    /v1/extents?older_than=UNIX&…     → JSON [id, …]   (orphan sweeps)
//! GET    /v1/extent-counts?older_than=UNIX&… → JSON [count; 256] by the ids' first byte
//!        (both: optional tag_first=&tag_last= over the ids' last four bytes,
//!        lead_first=&lead_last= over their first byte; `ExtentFilter`)
//! GET    /v1/digests                       → JSON Digests (ring version, {partition: digest})
//! GET    /v1/partitions/{p}                → JSON PartitionListing
//! GET    /v1/ring   PUT /v1/ring           → the ring's bytes (newer versions only)
//! GET    /v1/status                        → JSON NodeStatus
//! GET    /v1/ping                          → 204 (gateways probing a node they stopped using)
//! ```
//!
//! A request is signed as `x-strata-auth: UNIX_SECONDS:HEX(HMAC-SHA256(secret,
//! METHOD "\n" PATH_AND_QUERY "\n" UNIX_SECONDS))`; nodes refuse a missing or
//! wrong signature and one more than [`MAX_CLOCK_SKEW_SECS`] away from their
//! clock. In plain text a PUT's query also names its body's SHA-256
//! (`sha256=HEX`, [`BODY_DIGEST_PARAM`]), so a captured request cannot be
//! sent again with another body; over TLS, where none can be captured, it
//! does not. An extent also carries its CRC32C (`x-strata-crc32c`), which
//! the node verifies before storing.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::{ExtentFilter, ExtentId};

/// Header carrying the request signature.
pub const AUTH_HEADER: &str = "x-strata-auth";
/// CRC32C of an extent sent to a node, checked before it is stored.
pub const CRC_HEADER: &str = "x-strata-crc32c";
/// How far a request's time may be from the node's clock.
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;

/// The secret every member of one cluster shares.
#[derive(Clone)]
pub struct ClusterSecret(Vec<u8>);

impl ClusterSecret {
    /// A secret from its text (a file's first line, trimmed). Refuses short ones:
    /// the secret is all that keeps strangers from writing extents.
    pub fn new(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.len() < 16 {
            return Err("the cluster secret must be at least 16 characters".into());
        }
        Ok(ClusterSecret(text.as_bytes().to_vec()))
    }

    /// The signature of a request; `None` only if HMAC refused the key,
    /// which it does for no length (kept as an `Option` instead of a panic).
    /// A request sent over TLS is signed as such, so that one a member sent
    /// in plain text (misconfigured, and seen on the network) is refused
    /// over TLS by every member, not only by the one it reached.
    fn tag(
        &self,
        method: &str,
        path_and_query: &str,
        time: u64,
        over_tls: bool,
    ) -> Option<Hmac<Sha256>> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).ok()?;
        mac.update(method.as_bytes());
        mac.update(b"\n");
        mac.update(path_and_query.as_bytes());
        mac.update(b"\n");
        mac.update(time.to_string().as_bytes());
        if over_tls {
            mac.update(b"\ntls");
        }
        Some(mac)
    }

    /// The `x-strata-auth` value for a request sent now.
    pub fn sign(&self, method: &str, path_and_query: &str, over_tls: bool) -> String {
        let time = unix_now();
        let tag = self
            .tag(method, path_and_query, time, over_tls)
            .map(|mac| hex::encode(mac.finalize().into_bytes()))
            .unwrap_or_default();
        format!("{time}:{tag}")
    }

    /// Checks a request's `x-strata-auth` value against the secret and the clock.
    pub fn verify(&self, method: &str, path_and_query: &str, header: &str, over_tls: bool) -> bool {
        let Some((time, tag)) = header.split_once(':') else {
            return false;
        };
        let (Ok(time), Ok(tag)) = (time.parse::<u64>(), hex::decode(tag)) else {
            return false;
        };
        if unix_now().abs_diff(time) > MAX_CLOCK_SKEW_SECS {
            return false;
        }
        // Constant-time comparison.
        self.tag(method, path_and_query, time, over_tls)
            .is_some_and(|mac| mac.verify_slice(&tag).is_ok())
    }
}

/// The value of parameter `name` in `query` (the part after `?`).
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

/// The query of a listing or a count of extents (`/v1/extents`,
/// `/v1/extent-counts`): the filter's age in seconds since the epoch
/// (rounded down: never younger than asked), and its spans where narrower
/// than everything, so that a listing of the whole pool is the query it
/// was before spans.
pub fn filter_query(filter: &ExtentFilter) -> String {
    let older_than = filter
        .older_than
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let mut query = format!("older_than={older_than}");
    if filter.tags != crate::ALL_TAGS {
        let (first, last) = (filter.tags.start(), filter.tags.end());
        query.push_str(&format!("&tag_first={first}&tag_last={last}"));
    }
    if filter.leads != crate::ALL_LEADS {
        let (first, last) = (filter.leads.start(), filter.leads.end());
        query.push_str(&format!("&lead_first={first}&lead_last={last}"));
    }
    query
}

/// The filter of [`filter_query`]'s query; what is wrong with it otherwise.
pub fn parse_filter_query(query: &str) -> Result<ExtentFilter, &'static str> {
    let older_than = match query_param(query, "older_than") {
        None => 0,
        Some(text) => text.parse::<u64>().map_err(|_| "bad older_than")?,
    };
    let older_than = UNIX_EPOCH
        .checked_add(std::time::Duration::from_secs(older_than))
        .ok_or("older_than out of range")?;
    fn span<T: std::str::FromStr + Copy>(
        query: &str,
        names: [&str; 2],
        whole: [T; 2],
    ) -> Option<std::ops::RangeInclusive<T>> {
        let bound = |name, absent| match query_param(query, name) {
            None => Some(absent),
            Some(text) => text.parse::<T>().ok(),
        };
        Some(bound(names[0], whole[0])?..=bound(names[1], whole[1])?)
    }
    let tags = span(query, ["tag_first", "tag_last"], [0, u32::MAX]);
    let leads = span(query, ["lead_first", "lead_last"], [0, u8::MAX]);
    Ok(ExtentFilter {
        older_than,
        tags: tags.ok_or("bad tag_first or tag_last")?,
        leads: leads.ok_or("bad lead_first or lead_last")?,
    })
}

/// The value of query parameter `name` in a request's path and query.
fn path_query_param<'a>(path_and_query: &'a str, name: &str) -> Option<&'a str> {
    query_param(path_and_query.split_once('?')?.1, name)
}

/// Whether `body` is the one a request's signed query names by its SHA-256
/// ([`BODY_DIGEST_PARAM`]): with [`ClusterSecret::verify`] on the same
/// path and query, the body is as signed.
pub fn body_matches(path_and_query: &str, body: &[u8]) -> bool {
    path_query_param(path_and_query, BODY_DIGEST_PARAM) == Some(body_digest(body).as_str())
}

/// The query parameter holding random bytes, so that two requests of one
/// body sent in one second sign differently ([`ReplayGuard`]).
pub const NONCE_PARAM: &str = "nonce";

/// Signed requests already taken, so that a captured one cannot be sent
/// again while its time is within [`MAX_CLOCK_SKEW_SECS`] (a replayed
/// metadata change or membership change would apply twice): remembered
/// by signature, in one bucket per signed second, each dropped once its
/// second is out of the window. Requests without a [`NONCE_PARAM`] in
/// their signed query (older senders, which sign two equal requests in
/// one second alike) are not remembered.
///
/// It is one process's memory: a call replayed to another member than the
/// one that took it (senders try members in turn), or to the same after a
/// restart, is not caught here. The metadata store records the
/// [`CallSignature`] of each change it applies, so that one is refused
/// there: in a replicated service, by every member alike.
pub struct ReplayGuard {
    seen: std::sync::Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    by_second: BTreeMap<u64, std::collections::HashSet<u64>>,
    count: usize,
}

/// Why [`ReplayGuard::first_use`] could not tell.
#[derive(Debug, PartialEq, Eq)]
pub struct ReplayGuardFull;

impl ReplayGuard {
    /// Signatures remembered at most (10 to 20 bytes each; a window is 10
    /// minutes, as senders' clocks may be ahead): far above what a metadata
    /// service takes in one (its changes are fsynced).
    pub const MAX_REMEMBERED: usize = 4_000_000;

    pub fn new() -> ReplayGuard {
        ReplayGuard {
            seen: std::sync::Mutex::new(Seen::default()),
        }
    }

    /// Whether a request whose signature `header` was verified for
    /// `path_and_query` is taken for the first time. Full: refuse it (it
    /// may be a replay), the sender tries again later.
    pub fn first_use(&self, path_and_query: &str, header: &str) -> Result<bool, ReplayGuardFull> {
        if path_query_param(path_and_query, NONCE_PARAM).is_none() {
            return Ok(true);
        }
        let Some((time, tag)) = signed_parts(header) else {
            return Ok(false);
        };
        let now = unix_now();
        // Checked again with the clock that prunes: a body read slowly must
        // not bring a signature in after its second was forgotten.
        if now.abs_diff(time) > MAX_CLOCK_SKEW_SECS {
            return Ok(false);
        }
        let mut seen = crate::lock(&self.seen);
        let oldest_kept = now.saturating_sub(MAX_CLOCK_SKEW_SECS);
        while let Some(entry) = seen.by_second.first_entry() {
            if *entry.key() >= oldest_kept {
                break;
            }
            let dropped = entry.remove().len();
            seen.count -= dropped;
        }
        if seen.count >= Self::MAX_REMEMBERED {
            return Err(ReplayGuardFull);
        }
        let first = seen.by_second.entry(time).or_default().insert(tag);
        seen.count += usize::from(first);
        Ok(first)
    }
}

/// What names one metadata change however many times it is sent: the
/// second its attempt was signed in, and (the first half of the SHA-256
/// of) its [`NONCE_PARAM`], which every attempt of one change carries
/// ([`crate::NodeClient::post_call`]) under a signature of its own. The
/// store applies one change once ([`MAX_CLOCK_SKEW_SECS`] and more), so a
/// captured attempt refused by a member that did not lead cannot be
/// applied beside the attempt that was. Only calls with a nonce have one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallSignature {
    pub signed_at: u64,
    pub id: [u8; 16],
}

impl CallSignature {
    /// The change a request to `path_and_query` whose `x-strata-auth`
    /// value is `header` (verified by the caller with
    /// [`ClusterSecret::verify`]) names; `None` without a nonce or with a
    /// header in another form.
    pub fn of(path_and_query: &str, header: &str) -> Option<CallSignature> {
        let nonce = path_query_param(path_and_query, NONCE_PARAM)?;
        let (signed_at, _) = signed_parts(header)?;
        Some(CallSignature::named(nonce, signed_at))
    }

    /// The change whose attempts carry `nonce` (as
    /// [`crate::NodeClient::post_call`] sends it), taken at `signed_at`
    /// without a request: by the gateway's own member of the service.
    pub fn for_nonce(nonce: u64, signed_at: u64) -> CallSignature {
        CallSignature::named(&nonce_text(nonce), signed_at)
    }

    fn named(nonce: &str, signed_at: u64) -> CallSignature {
        use sha2::Digest as _;
        let digest = Sha256::digest(nonce.as_bytes());
        let mut id = [0; 16];
        id.copy_from_slice(&digest[..16]);
        CallSignature { signed_at, id }
    }
}

/// How a nonce is written in a query.
pub fn nonce_text(nonce: u64) -> String {
    format!("{nonce:016x}")
}

/// The query parameter numbering the attempts of one call, so that two
/// sent to one member within a second sign differently.
pub const ATTEMPT_PARAM: &str = "attempt";

/// The query parameter saying how long the caller waits for this attempt's
/// answer, in milliseconds: a member holds a long poll for less, so that an
/// attempt sent to a new leader part-way through a call still answers
/// within it.
pub const ANSWER_WITHIN_PARAM: &str = "within_ms";

/// How long the caller of a request waits for its answer, if it said
/// ([`ANSWER_WITHIN_PARAM`]).
pub fn answer_within(path_and_query: &str) -> Option<std::time::Duration> {
    path_query_param(path_and_query, ANSWER_WITHIN_PARAM)?
        .parse()
        .ok()
        .map(std::time::Duration::from_millis)
}

/// The signed second and the first 64 bits of the tag of an
/// `x-strata-auth` value.
fn signed_parts(header: &str) -> Option<(u64, u64)> {
    let (time, tag) = header.split_once(':')?;
    let signed_at = time.parse::<u64>().ok()?;
    let first = u64::from_str_radix(tag.get(..16)?, 16).ok()?;
    Some((signed_at, first))
}

impl Default for ReplayGuard {
    fn default() -> Self {
        ReplayGuard::new()
    }
}

/// The query parameter that binds a request body to the request's signature.
pub const BODY_DIGEST_PARAM: &str = "sha256";

/// Hex SHA-256 of a body, as [`BODY_DIGEST_PARAM`] carries it.
pub fn body_digest(body: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(Sha256::digest(body))
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(…)")
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

/// What a node holds of one partition: live extents and tombstones of deleted ones.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartitionListing {
    pub live: Vec<ExtentId>,
    /// Tombstones with the unix time of the deletion, which travels with
    /// them so that every replica reclaims a tombstone at the same age.
    pub deleted: Vec<(ExtentId, u64)>,
}

/// A node's account of itself, for `strata status` and the tests.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The address the node answers on, as the ring names it.
    pub node: String,
    pub ring_version: Option<u64>,
    pub extents: u64,
    pub bytes: u64,
    pub tombstones: u64,
    /// Partitions this node is a primary for.
    pub primary_partitions: u64,
    /// Extents the node holds for partitions it is not a primary of (handoff
    /// copies, or data a rebalance moved away), still to be moved home.
    pub handoff_extents: u64,
    /// Their bytes: what this node still has to move.
    pub handoff_bytes: u64,
    pub replication: ReplicationStatus,
    /// Extent writes this node refused since it started (a full disk, an
    /// I/O error), and why it refused the last one. Writes go elsewhere
    /// meanwhile, so the only other sign is copies missing here.
    #[serde(default)]
    pub writes_refused: u64,
    #[serde(default)]
    pub last_write_refusal: Option<String>,
    /// A failed fsync poisoned the node's pool: it refuses every write until
    /// it is restarted, after the disk is checked.
    #[serde(default)]
    pub disk_failed: bool,
    /// The node's members of the index groups it holds, by group number,
    /// as its composition root reports them (`NodeConfig::internal`): the
    /// pool does not read them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_groups: Option<serde_json::Value>,
}

impl NodeStatus {
    /// What this node still has to move: its handoff copies and the copies
    /// fellow primaries lack.
    pub fn bytes_to_move(&self) -> u64 {
        self.handoff_bytes
            .saturating_add(self.replication.bytes_to_push)
    }

    /// Whether this node is done with the ring of `ring_version`: it runs
    /// it (or a newer one), its last pass found every partition in sync,
    /// it holds nothing to move home, and its disk takes writes (a node
    /// whose disk failed cannot take the copies a peer may yet send it).
    pub fn settled_at(&self, ring_version: u64) -> bool {
        !self.disk_failed
            && self.ring_version >= Some(ring_version)
            && self.replication.settled()
            && self.handoff_extents == 0
    }
}

/// The replicator's progress; counters since the node started.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct ReplicationStatus {
    /// Passes completed over every partition.
    pub passes: u64,
    /// Unix time the last completed pass started (0: none yet).
    pub last_pass_started: u64,
    /// In the last pass: partitions where a peer lacked data or a deletion.
    pub last_pass_out_of_sync: u64,
    /// In the last pass: peers that could not be reached (each counted once).
    pub last_pass_unreachable: u64,
    /// In the last pass: extents or deletions that failed to reach a peer.
    pub last_pass_failures: u64,
    pub extents_pushed: u64,
    pub bytes_pushed: u64,
    pub deletions_pushed: u64,
    pub handoff_extents_moved: u64,
    /// Extents found damaged (by the auditor or on read) and quarantined.
    pub corrupt_quarantined: u64,
    /// Extents the auditor has verified.
    pub audited: u64,
    /// Bytes this node still has to copy to fellow primaries of its
    /// partitions that lack them (a replaced disk, copies lost): estimated
    /// from the partitions' sizes at the start of the pass, less what the
    /// pass has pushed since. What handoff nodes hold for those primaries
    /// is theirs to move (`NodeStatus::handoff_bytes`), not counted here.
    #[serde(default)]
    pub bytes_to_push: u64,
}

impl ReplicationStatus {
    /// Whether the last pass found every partition this node serves in sync.
    pub fn settled(&self) -> bool {
        self.passes > 0
            && self.last_pass_out_of_sync == 0
            && self.last_pass_unreachable == 0
            && self.last_pass_failures == 0
    }
}

/// Partition → digest of its sorted listing, for partitions a node holds, and
/// the node's ring version (how nodes learn of a newer ring from each other).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Digests {
    /// The answering node's identity (random, kept in its data directory), so
    /// that a node reached under another name recognises itself.
    pub node_id: String,
    pub ring_version: Option<u64>,
    pub partitions: BTreeMap<u32, String>,
    /// The bytes of the live extents of each partition in `partitions`
    /// (empty from a node that predates it): what the replicator estimates
    /// the copies missing elsewhere from.
    #[serde(default)]
    pub live_bytes: BTreeMap<u32, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A filter goes over the wire as it is (its age to the second); a
    /// query without spans is the whole pool's, and bad bounds are refused.
    #[test]
    fn extent_filters_cross_the_wire_whole() {
        let at = UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let whole = ExtentFilter::older_than(at);
        assert_eq!(filter_query(&whole), "older_than=1700000000");
        let narrow = whole.clone().tags(5..=9).leads(0x10..=0x3f);
        for filter in [whole, narrow.clone(), narrow.clone().tags(crate::ALL_TAGS)] {
            assert_eq!(parse_filter_query(&filter_query(&filter)), Ok(filter));
        }
        let later = ExtentFilter::older_than(at + std::time::Duration::from_millis(999));
        assert_eq!(filter_query(&later), "older_than=1700000000");
        // What a gateway of the version before spans asks.
        assert_eq!(
            parse_filter_query("older_than=1700000000&tag_first=5&tag_last=9"),
            Ok(ExtentFilter::older_than(at).tags(5..=9))
        );
        for bad in [
            "older_than=x",
            "older_than=1&tag_first=-1",
            "older_than=1&lead_last=256",
            "older_than=18446744073709551615",
        ] {
            assert!(parse_filter_query(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn signatures_bind_method_path_and_secret() {
        let secret = ClusterSecret::new("correct horse battery staple").unwrap();
        let header = secret.sign("PUT", "/v1/extents/00", false);
        assert!(secret.verify("PUT", "/v1/extents/00", &header, false));
        assert!(!secret.verify("DELETE", "/v1/extents/00", &header, false));
        assert!(!secret.verify("PUT", "/v1/extents/01", &header, false));
        let other = ClusterSecret::new("another cluster's secret").unwrap();
        assert!(!other.verify("PUT", "/v1/extents/00", &header, false));
        // Signed for plain text, refused over TLS, and the other way round.
        assert!(!secret.verify("PUT", "/v1/extents/00", &header, true));
        let over_tls = secret.sign("PUT", "/v1/extents/00", true);
        assert!(secret.verify("PUT", "/v1/extents/00", &over_tls, true));
        assert!(!secret.verify("PUT", "/v1/extents/00", &over_tls, false));
        for bad in ["", "12", "x:y", "1:00", &format!("1:{}", &header[11..])] {
            assert!(!secret.verify("PUT", "/v1/extents/00", bad, false), "{bad}");
        }
        assert!(ClusterSecret::new("short").is_err());
    }

    #[test]
    fn a_bound_body_cannot_be_swapped() {
        let secret = ClusterSecret::new("correct horse battery staple").unwrap();
        let path = format!(
            "/internal/v1/meta?{BODY_DIGEST_PARAM}={}",
            body_digest(b"call")
        );
        let header = secret.sign("POST", &path, false);
        assert!(secret.verify("POST", &path, &header, false) && body_matches(&path, b"call"));
        assert!(!body_matches(&path, b"other call"));
        assert!(!body_matches("/internal/v1/meta", b"call"));
        let other_digest = path.replace(&body_digest(b"call"), &body_digest(b"other call"));
        assert!(!secret.verify("POST", &other_digest, &header, false));
    }

    #[test]
    fn a_call_signature_names_the_change_by_its_nonce() {
        let secret = ClusterSecret::new("correct horse battery staple").unwrap();
        let path = format!("/internal/v1/meta?{BODY_DIGEST_PARAM}=00&{NONCE_PARAM}=01");
        let header = secret.sign("POST", &path, false);
        let signature = CallSignature::of(&path, &header).unwrap();
        let (time, _) = header.split_once(':').unwrap();
        assert_eq!(signature.signed_at.to_string(), time);
        // Another attempt of the same change, signed later: the same id.
        let later = format!(
            "{}:{}",
            signature.signed_at + 7,
            &header[header.len() - 64..]
        );
        let again = CallSignature::of(&path, &later).unwrap();
        assert_eq!(
            (again.id, again.signed_at),
            (signature.id, signature.signed_at + 7)
        );
        // Another nonce is another change.
        let other = path.replace("=01", "=02");
        let other_header = secret.sign("POST", &other, false);
        assert_ne!(
            CallSignature::of(&other, &other_header).map(|other| other.id),
            Some(signature.id)
        );
        // Without a nonce, or in another form: none.
        assert_eq!(
            CallSignature::of("/internal/v1/meta?sha256=00", &header),
            None
        );
        assert_eq!(CallSignature::of(&path, "12:zz"), None);
        assert_eq!(CallSignature::of(&path, &header[..20]), None);
    }

    #[test]
    fn a_request_with_a_nonce_is_taken_once() {
        let secret = ClusterSecret::new("correct horse battery staple").unwrap();
        let guard = ReplayGuard::new();
        let with_nonce =
            |nonce: &str| format!("/internal/v1/meta?{BODY_DIGEST_PARAM}=00&{NONCE_PARAM}={nonce}");
        let first = with_nonce("01");
        let header = secret.sign("POST", &first, false);
        assert_eq!(guard.first_use(&first, &header), Ok(true));
        assert_eq!(guard.first_use(&first, &header), Ok(false));
        // The same body again, sent anew: another nonce, another signature.
        let again = with_nonce("02");
        let again_header = secret.sign("POST", &again, false);
        assert_eq!(guard.first_use(&again, &again_header), Ok(true));
        // Without a nonce (an older sender), nothing is remembered.
        let old = "/internal/v1/meta?sha256=00";
        let old_header = secret.sign("POST", old, false);
        assert_eq!(guard.first_use(old, &old_header), Ok(true));
        assert_eq!(guard.first_use(old, &old_header), Ok(true));
        // A time out of the window is refused here too (its second may be
        // forgotten already).
        let tag = &header[header.len() - 64..];
        let stale = format!("{}:{tag}", unix_now() - MAX_CLOCK_SKEW_SECS - 2);
        assert_eq!(guard.first_use(&first, &stale), Ok(false));
        // Seconds out of the window are forgotten.
        {
            let mut seen = crate::lock(&guard.seen);
            let long_ago = unix_now() - MAX_CLOCK_SKEW_SECS - 5;
            seen.by_second.entry(long_ago).or_default().insert(7);
            seen.count += 1;
        }
        assert_eq!(guard.first_use(&again, &again_header), Ok(false));
        assert_eq!(crate::lock(&guard.seen).count, 2);
    }
}
