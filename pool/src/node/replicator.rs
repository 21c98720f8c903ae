//! The replicator and the auditor of a storage node.
//!
//! Push-based, as Swift's object replicator: each pass, a node asks every peer
//! once for the digests of all partitions it holds, and for each partition of
//! its own whose digest differs from a fellow replica's, fetches that peer's
//! listing and sends what the peer lacks: live extents it has no record of, and
//! deletions (tombstones) for extents it still holds live. The peer does the
//! same in its own pass, so both converge without a coordinator. A partition
//! this node holds but is no longer (or never was) a primary of — a handoff
//! copy, data a rebalance moved — is pushed to every primary and dropped here
//! once each of them has it. Comparing digests first keeps a pass over a
//! healthy cluster to one request per peer, however many partitions.
//!
//! The auditor reads a bounded number of bytes per pass, verifying every block
//! checksum, and quarantines damaged extents; the next replication pass of a
//! healthy replica sends a good copy back.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, StreamExt as _};
use rand::seq::SliceRandom as _;
use strata_ring::Ring;

use super::Node;
use crate::lock;
use crate::node_client::NodeError;
use crate::ring_pool::primary_nodes;
use crate::wire::{self, Digests, PartitionListing};
use crate::{ExtentId, Pool as _, PoolError};

#[derive(Debug, Clone)]
pub struct ReplicatorConfig {
    /// Pause between passes.
    pub interval: Duration,
    /// Longest wait for one peer request.
    pub peer_timeout: Duration,
    /// How long tombstones are kept (every replica must see one before it goes).
    pub reclaim_age: Duration,
    /// The auditor's read rate, so verification never starves clients.
    pub audit_bytes_per_sec: u64,
    /// Pause between two walks of the auditor over every extent.
    pub audit_pause: Duration,
}

impl Default for ReplicatorConfig {
    fn default() -> Self {
        ReplicatorConfig {
            interval: Duration::from_secs(30),
            peer_timeout: Duration::from_secs(10),
            reclaim_age: Duration::from_secs(7 * 24 * 3600),
            audit_bytes_per_sec: 10 * 1024 * 1024,
            audit_pause: Duration::from_secs(60),
        }
    }
}

pub(crate) async fn run(node: Arc<Node>, config: ReplicatorConfig) {
    tokio::spawn(audit(
        node.clone(),
        config.audit_bytes_per_sec.max(1),
        config.audit_pause,
    ));
    loop {
        if let Some(ring) = node.current_ring() {
            pass(&node, &ring).await;
            let before = wire::unix_now().saturating_sub(config.reclaim_age.as_secs());
            let expired = lock(&node.index).expired_tombstones(before);
            for id in expired {
                node.reclaim(id);
            }
        }
        tokio::time::sleep(config.interval).await;
    }
}

/// What one pass found, reported in `/v1/status` when it ends.
#[derive(Default)]
struct PassReport {
    /// Partitions where a fellow replica lacked something.
    out_of_sync: u64,
    unreachable: HashSet<String>,
    failures: u64,
}

async fn pass(node: &Arc<Node>, ring: &Arc<Ring>) {
    let started = wire::unix_now();
    let mut report = PassReport::default();
    let mut peers: Vec<String> = ring
        .devices()
        .map(|device| device.node.clone())
        .filter(|peer| *peer != node.address)
        .collect();
    peers.sort();
    peers.dedup();
    let mut digests: HashMap<String, Digests> = HashMap::new();
    let mut newer_ring = false;
    let own = node.digests();
    // Every peer at once: one cut off from the network costs one timeout.
    let answers = futures::future::join_all(peers.into_iter().map(|peer| async move {
        let answer = node.client.digests(&peer).await;
        (peer, answer)
    }))
    .await;
    for (peer, answer) in answers {
        match answer {
            Ok(answer) if answer.node_id == node.node_id => {
                node.learn_name(&peer, true);
            }
            Ok(answer) => {
                node.learn_name(&peer, false);
                if answer.ring_version > Some(ring.version()) {
                    learn_ring(node, &peer).await;
                    // Only a ring this node took changes placement under the
                    // pass: one it refused (another part power, a format it
                    // cannot read, a full disk) would otherwise stop every
                    // pass for good while that peer answers.
                    newer_ring |= node
                        .current_ring()
                        .is_some_and(|current| current.version() > ring.version());
                }
                digests.insert(peer, answer);
            }
            Err(err) => {
                tracing::debug!(%peer, error = %err, "replicator: peer unreachable");
                report.unreachable.insert(peer);
            }
        }
    }
    if newer_ring {
        // Placement changed under this pass: start again with the new ring
        // rather than move data by the old one.
        report.failures += 1;
        finish_pass(node, started, &report);
        return;
    }
    // The names this node goes by. A node that took itself for a peer would
    // confirm its own copies and drop them.
    let own_names = node.names();
    // Computed before the status is locked: never both locks at once.
    let estimate = bytes_peers_lack(ring, &own, &digests, &own_names);
    lock(&node.status).bytes_to_push = estimate;
    // Partitions are independent: a few at once keep the disk and the
    // network busy.
    let held = lock(&node.index).partitions();
    let own_names = &own_names;
    let outcomes: Vec<PartitionOutcome> = stream::iter(held)
        .map(|part| replicate_partition(node, ring, &digests, own_names, part))
        .buffer_unordered(PARTITIONS_AT_ONCE)
        .collect()
        .await;
    for outcome in outcomes {
        report.out_of_sync += u64::from(outcome.out_of_sync);
        report.failures += outcome.failures;
    }
    finish_pass(node, started, &report);
}

/// An estimate of the bytes this node has to copy to fellow primaries of
/// its partitions, from the sizes in every node's digests: for each fellow
/// primary whose copy differs, what this node holds beyond that copy and
/// beyond what handoff nodes hold of the partition (theirs to move). Of
/// the primaries that could fill one, the largest counts it (the first in
/// the ring's order among equals), so no copy is counted twice. A
/// partition some node lists without sizes (an older version) is not
/// counted; nor are unreachable peers. `own` is read before the peers'
/// digests, so that writes meanwhile make peers look fuller, not emptier.
fn bytes_peers_lack(
    ring: &Ring,
    own: &Digests,
    digests: &HashMap<String, Digests>,
    own_names: &HashSet<String>,
) -> u64 {
    let sized = |peer: &Digests| peer.partitions.is_empty() || !peer.live_bytes.is_empty();
    let mut lacking = 0u64;
    for (part_index, mine) in &own.partitions {
        let my_bytes = own.live_bytes.get(part_index).copied().unwrap_or(0);
        let Some(part) = ring.partition(*part_index) else {
            continue;
        };
        let primaries = primary_nodes(ring, part);
        if !primaries.iter().any(|name| own_names.contains(name)) {
            // A handoff: its bytes are `handoff_bytes`.
            continue;
        }
        // Each primary's copy: its digest and live bytes (None: unknown).
        let copy = |name: &String| -> Option<(Option<&String>, u64)> {
            if own_names.contains(name) {
                return Some((Some(mine), my_bytes));
            }
            let peer = digests.get(name).filter(|peer| sized(peer))?;
            let digest = peer.partitions.get(part_index);
            Some((
                digest,
                peer.live_bytes.get(part_index).copied().unwrap_or(0),
            ))
        };
        // Nodes by identity, not by name: a node the ring (or a learnt
        // name) reaches under two names holds its bytes once, and a
        // primary reached under another name holds no handoff bytes.
        let mut counted: HashSet<&str> = primaries
            .iter()
            .filter_map(|name| digests.get(name))
            .map(|peer| peer.node_id.as_str())
            .collect();
        let mut handoff_bytes = 0u64;
        let mut unsized_handoff = false;
        for (name, peer) in digests {
            if primaries.contains(name)
                || !peer.partitions.contains_key(part_index)
                || !counted.insert(peer.node_id.as_str())
            {
                continue;
            }
            match peer.live_bytes.get(part_index) {
                Some(bytes) if sized(peer) => handoff_bytes = handoff_bytes.saturating_add(*bytes),
                _ => unsized_handoff = true,
            }
        }
        if unsized_handoff {
            continue;
        }
        let identity = |name| node_identity(name, own_names, digests);
        let mut shorts_seen = HashSet::new();
        for short in primaries.iter().filter(|name| !own_names.contains(*name)) {
            // A node the ring names twice lacks its bytes once.
            if !shorts_seen.insert(identity(short.as_str())) {
                continue;
            }
            let Some((their_digest, their_bytes)) = copy(short) else {
                continue;
            };
            if their_digest == Some(mine) {
                continue;
            }
            // The largest other copy fills it; this node counts it only if
            // that is this node's.
            let filler = primaries
                .iter()
                .filter(|name| identity(name.as_str()) != identity(short.as_str()))
                .filter_map(|name| Some((name, copy(name)?.1)))
                .fold(None::<(&String, u64)>, |best, (name, bytes)| match best {
                    Some((_, most)) if most >= bytes => best,
                    _ => Some((name, bytes)),
                });
            if !filler.is_some_and(|(name, _)| own_names.contains(name)) {
                continue;
            }
            lacking = lacking.saturating_add(
                my_bytes
                    .saturating_sub(their_bytes)
                    .saturating_sub(handoff_bytes),
            );
        }
    }
    lacking
}

/// Who a ring name reaches: `None` for this node, a peer by its node id,
/// or (a name not asked yet) the name itself.
fn node_identity<'a>(
    name: &'a str,
    own_names: &HashSet<String>,
    digests: &'a HashMap<String, Digests>,
) -> Option<&'a str> {
    if own_names.contains(name) {
        return None;
    }
    Some(digests.get(name).map_or(name, |peer| peer.node_id.as_str()))
}

fn finish_pass(node: &Node, started: u64, report: &PassReport) {
    let mut status = lock(&node.status);
    status.passes += 1;
    status.last_pass_started = started;
    status.last_pass_out_of_sync = report.out_of_sync;
    status.last_pass_unreachable = report.unreachable.len() as u64;
    status.last_pass_failures = report.failures;
    if report.failures == 0 {
        // Whatever the estimate said beyond what was pushed was not missing.
        status.bytes_to_push = 0;
    }
}

/// Partitions a node replicates at the same time.
const PARTITIONS_AT_ONCE: usize = 4;

/// What replicating one partition found.
struct PartitionOutcome {
    /// A fellow replica lacked something, or could not be asked.
    out_of_sync: bool,
    failures: u64,
}

/// Brings the other replicas of one partition up to what this node holds of
/// it; a partition this node is not a primary of is moved to the primaries
/// and dropped here.
async fn replicate_partition(
    node: &Arc<Node>,
    ring: &Ring,
    digests: &HashMap<String, Digests>,
    own_names: &HashSet<String>,
    part_index: u32,
) -> PartitionOutcome {
    let mut outcome = PartitionOutcome {
        out_of_sync: false,
        failures: 0,
    };
    let Some(part) = ring.partition(part_index) else {
        return outcome;
    };
    let primaries = primary_nodes(ring, part);
    let primary_here = primaries.iter().any(|name| own_names.contains(name));
    // Taken once: a handoff drops only what every primary confirmed of it,
    // never an extent written here while the pass ran.
    let (mine, mine_digest) = {
        let mut index = lock(&node.index);
        (index.listing(part_index), index.digest(part_index))
    };
    let mut confirmed_everywhere: Option<HashSet<ExtentId>> = None;
    for peer in primaries.iter().filter(|peer| !own_names.contains(*peer)) {
        let Some(peer_digests) = digests.get(peer) else {
            outcome.out_of_sync = true;
            confirmed_everywhere = Some(HashSet::new());
            continue;
        };
        if peer_digests.ring_version != Some(ring.version()) {
            // Not yet on this ring: it may take itself for a handoff of this
            // partition and drop its copy; nothing is dropped here meanwhile.
            outcome.out_of_sync = true;
            confirmed_everywhere = Some(HashSet::new());
        }
        let in_sync = peer_digests.partitions.get(&part_index) == mine_digest.as_ref();
        if in_sync && primary_here {
            continue;
        }
        outcome.out_of_sync |= !in_sync;
        let confirmed = match sync_partition(node, peer, part_index, &mine, primary_here).await {
            Ok((confirmed, failures)) => {
                outcome.failures += failures;
                confirmed
            }
            Err(err) => {
                tracing::debug!(%peer, part = part_index, error = %err, "replicator: sync failed");
                outcome.failures += 1;
                HashSet::new()
            }
        };
        confirmed_everywhere = Some(match confirmed_everywhere {
            None => confirmed,
            Some(so_far) => so_far.intersection(&confirmed).copied().collect(),
        });
    }
    if !primary_here && let Some(confirmed) = confirmed_everywhere {
        drop_handoff(node, ring, &mine, &confirmed).await;
    }
    outcome
}

async fn learn_ring(node: &Arc<Node>, peer: &str) {
    let fetched = match node.client.ring(peer).await {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return,
        Err(err) => {
            tracing::debug!(%peer, error = %err, "replicator: could not fetch a newer ring");
            return;
        }
    };
    if let Err(err) = node.offer_ring_bytes(fetched).await {
        tracing::warn!(%peer, error = %format!("{err:#}"), "replicator: refused a peer's ring");
    }
}

/// Bytes pushed to a peer, at least, between two listings of its partition.
const RELIST_AFTER_BYTES: u64 = 1024 * 1024;

/// Sends a peer what it lacks of this node's listing of one partition.
/// Returns the ids the peer is now known to hold as this node does (live, or
/// deleted), and how many sends failed. `counted`: the partition is one of
/// this node's primaries, whose pushes the pass's estimate counts down.
async fn sync_partition(
    node: &Arc<Node>,
    peer: &str,
    part: u32,
    mine: &PartitionListing,
    counted: bool,
) -> Result<(HashSet<ExtentId>, u64), NodeError> {
    let theirs: PartitionListing = node.client.partition(peer, part).await?;
    let mut their_live: HashSet<ExtentId> = theirs.live.into_iter().collect();
    let mut their_deleted: HashMap<ExtentId, u64> = theirs.deleted.into_iter().collect();
    let mut confirmed = HashSet::new();
    let mut failures = 0;
    // In an order of its own, looking again at what the peer holds every few
    // MiB: when two nodes fill one peer (a handoff and a fellow primary, after
    // an outage), each skips most of what the other already sent.
    let mut order = mine.live.clone();
    order.shuffle(&mut rand::rng());
    let mut pushed_since_listing = 0;
    for id in order {
        // A listing costs about 40 bytes per id: relisting after eight
        // times that keeps its overhead small however small the extents.
        let listing_len = 40 * (their_live.len() + their_deleted.len()) as u64;
        if pushed_since_listing >= RELIST_AFTER_BYTES.max(8 * listing_len) {
            pushed_since_listing = 0;
            if let Ok(fresh) = node.client.partition(peer, part).await {
                their_live.extend(fresh.live);
                their_deleted.extend(fresh.deleted);
            }
        }
        if their_live.contains(&id) {
            confirmed.insert(id);
            continue;
        }
        if let Some(&at) = their_deleted.get(&id) {
            // Deleted while this copy was away: take the deletion.
            node.delete(id, Some(at)).await;
            continue;
        }
        let data = match node.pool.read_whole(id).await {
            Ok(data) => data,
            Err(PoolError::Corrupt { .. }) => {
                node.quarantine(id).await;
                continue;
            }
            Err(PoolError::NotFound(_)) => {
                lock(&node.index).forget_live(id);
                continue;
            }
            Err(err) => {
                tracing::warn!(%id, error = %err, "replicator: local read failed");
                failures += 1;
                continue;
            }
        };
        let len = data.len() as u64;
        let extent = node.client.seal(data).await;
        match node.client.put_extent(peer, id, &extent).await {
            Ok(()) => {
                confirmed.insert(id);
                pushed_since_listing += len;
                let mut status = lock(&node.status);
                status.extents_pushed += 1;
                status.bytes_pushed += len;
                if counted {
                    status.bytes_to_push = status.bytes_to_push.saturating_sub(len);
                }
            }
            Err(NodeError::Refused { status, .. }) if status == http::StatusCode::GONE => {
                node.delete(id, None).await;
            }
            Err(err) => {
                tracing::debug!(%peer, %id, error = %err, "replicator: push failed");
                failures += 1;
            }
        }
    }
    let reclaimed_before = wire::unix_now().saturating_sub(node.reclaim_age.as_secs());
    for &(id, at) in &mine.deleted {
        if their_deleted.contains_key(&id) || at < reclaimed_before {
            // Known there, or about to be forgotten everywhere.
            confirmed.insert(id);
            continue;
        }
        match node.client.delete_extent(peer, id, Some(at)).await {
            Ok(()) => {
                confirmed.insert(id);
                lock(&node.status).deletions_pushed += 1;
            }
            Err(err) => {
                tracing::debug!(%peer, %id, error = %err, "replicator: deletion push failed");
                failures += 1;
            }
        }
    }
    Ok((confirmed, failures))
}

/// Drops the handoff copies every primary confirmed holding.
async fn drop_handoff(
    node: &Arc<Node>,
    ring: &Ring,
    mine: &PartitionListing,
    confirmed: &HashSet<ExtentId>,
) {
    // A ring installed while the pass ran may make this node a primary of
    // the partition, and a former primary, now a handoff on the new ring,
    // may drop its copy on this one's word: the pass stops dropping.
    let ring_unchanged = || {
        node.current_ring()
            .is_some_and(|current| current.version() == ring.version())
    };
    for id in mine.live.iter().filter(|id| confirmed.contains(id)) {
        if !ring_unchanged() {
            return;
        }
        if node.pool.delete_extent(*id).await.is_ok() {
            lock(&node.index).forget_live(*id);
            lock(&node.status).handoff_extents_moved += 1;
        }
    }
    for (id, _) in mine.deleted.iter().filter(|(id, _)| confirmed.contains(id)) {
        if !ring_unchanged() {
            return;
        }
        node.reclaim(*id);
    }
}

/// Walks every live extent in id order, verifying each block, at a bounded
/// read rate; damaged extents are quarantined. Then pauses, and starts over.
async fn audit(node: Arc<Node>, bytes_per_sec: u64, pause: Duration) {
    let mut cursor = None;
    loop {
        let batch = lock(&node.index).live_after(cursor, 64);
        if batch.is_empty() {
            cursor = None;
            tokio::time::sleep(pause).await;
            continue;
        }
        for (part, id) in batch {
            cursor = Some((part, id));
            let read = match node.pool.read_whole(id).await {
                Ok(data) => data.len() as u64,
                Err(PoolError::Corrupt { detail, .. }) => {
                    tracing::warn!(%id, %detail, "auditor: damaged extent quarantined");
                    node.quarantine(id).await;
                    0
                }
                Err(PoolError::NotFound(_)) => {
                    lock(&node.index).forget_live(id);
                    0
                }
                Err(err) => {
                    tracing::warn!(%id, error = %err, "auditor: read failed");
                    0
                }
            };
            lock(&node.status).audited += 1;
            let seconds = read as f64 / bytes_per_sec as f64;
            tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use strata_ring::{DeviceSpec, RingBuilder};

    use super::*;

    fn node(zone: u32) -> String {
        format!("127.0.0.1:{}", 7000 + zone)
    }

    /// A ring of one device per node, each in a zone of its own.
    fn ring_of(part_power: u8, replicas: u8, nodes: &[&String]) -> Ring {
        let mut builder = RingBuilder::new("c", part_power, replicas).expect("shape");
        for (zone, name) in (1..).zip(nodes) {
            let spec = DeviceSpec {
                node: (*name).clone(),
                region: 1,
                zone,
                weight: 100,
                name: None,
            };
            builder.add_device(spec).expect("device");
        }
        builder.rebalance().expect("rebalance");
        builder.ring().expect("ring")
    }

    fn digests(node_id: &str, part: u32, digest: &str, bytes: u64) -> Digests {
        Digests {
            node_id: node_id.to_owned(),
            ring_version: None,
            partitions: BTreeMap::from([(part, digest.to_owned())]),
            live_bytes: BTreeMap::from([(part, bytes)]),
        }
    }

    /// What a fellow primary lacks is counted once per node, whatever names
    /// reach it: a handoff under two names holds its bytes once, and a
    /// primary under another name holds no handoff bytes.
    #[test]
    fn nodes_are_counted_once_whatever_their_names() {
        let (me, fellow, other) = (node(1), node(2), node(3));
        let ring = ring_of(4, 2, &[&me, &fellow, &other]);
        let part = (0..16u32)
            .find(|index| {
                let primaries = ring
                    .partition(*index)
                    .map(|part| primary_nodes(&ring, part))
                    .unwrap_or_default();
                primaries.contains(&me) && primaries.contains(&fellow)
            })
            .expect("a partition of nodes 1 and 2");
        let own = digests("a", part, "mine", 100);
        let own_names = HashSet::from([me]);
        let lacking = |peers: &[(&str, Digests)]| {
            let peers: HashMap<String, Digests> = peers
                .iter()
                .map(|(name, digests)| ((*name).to_owned(), digests.clone()))
                .collect();
            bytes_peers_lack(&ring, &own, &peers, &own_names)
        };
        let short = digests("b", part, "theirs", 10);
        let handoff = digests("c", part, "handoff", 30);
        assert_eq!(lacking(&[(&fellow, short.clone())]), 90);
        assert_eq!(
            lacking(&[(&fellow, short.clone()), (&other, handoff.clone())]),
            60
        );
        assert_eq!(
            lacking(&[
                (&fellow, short.clone()),
                (&other, handoff.clone()),
                ("c.example:7003", handoff),
                ("b.example:7002", short.clone()),
            ]),
            60
        );
        let same = digests("b", part, "mine", 100);
        assert_eq!(lacking(&[(&fellow, same)]), 0);
    }

    /// A fellow primary the ring names twice (two devices, one node) lacks
    /// its bytes once.
    #[test]
    fn a_primary_named_twice_lacks_its_bytes_once() {
        let (me, fellow, alias) = (node(1), node(2), "b.example:7002".to_owned());
        let ring = ring_of(2, 3, &[&me, &fellow, &alias]);
        let own = digests("a", 0, "mine", 100);
        let short = digests("b", 0, "theirs", 10);
        let peers = HashMap::from([(fellow, short.clone()), (alias, short)]);
        let own_names = HashSet::from([me]);
        assert_eq!(bytes_peers_lack(&ring, &own, &peers, &own_names), 90);
    }
}
