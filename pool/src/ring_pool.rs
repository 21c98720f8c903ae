//! The pool of a cluster: extents placed by the ring on storage nodes, each
//! written to every replica of its partition.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt as _};
use strata_ring::{Partition, Ring};

use crate::lock;
use crate::node_client::{NodeClient, NodeError};
use crate::wire::ClusterSecret;
use crate::{ExtentFilter, ExtentId, LeadCounts, MAX_EXTENT_LEN, Pool, PoolError, Result};

/// How a gateway reaches the cluster's pool.
#[derive(Debug, Clone)]
pub struct RingPoolConfig {
    pub secret: ClusterSecret,
    /// TLS to the nodes, when the cluster speaks it.
    pub tls: Option<crate::ClusterTls>,
    /// Copies that must be fsynced before a write succeeds; at most the ring's
    /// replica count, which is also the default.
    pub write_quorum: Option<usize>,
    /// Longest wait for one node to answer one request.
    pub node_timeout: Duration,
}

/// What the pool did, for `/metrics`.
#[derive(Debug, Default)]
pub struct RingPoolStats {
    pub writes: AtomicU64,
    /// Copies written to a handoff node because a primary did not take it.
    pub handoff_writes: AtomicU64,
    pub write_failures: AtomicU64,
    /// Reads answered by a later replica after an earlier one failed.
    pub read_fallbacks: AtomicU64,
    /// Copies restored on a replica that lacked one or held a damaged one.
    pub read_repairs: AtomicU64,
}

/// [`Pool`] over storage nodes. Cheap to clone.
#[derive(Clone)]
pub struct RingPool {
    inner: Arc<Inner>,
}

struct Inner {
    ring: RwLock<Arc<Ring>>,
    client: NodeClient,
    write_quorum: Option<usize>,
    stats: RingPoolStats,
    /// Nodes that failed a request or were slow to answer one, and have not
    /// answered a probe since: they are passed over, so a node that is down
    /// or cut off costs one timeout per outage, not one per request. The
    /// flag says the node is down (a request or a probe failed), not merely
    /// slow: only down nodes make requests fail at once.
    suspects: std::sync::Mutex<HashMap<String, bool>>,
    /// Read repairs in flight: each holds an extent, so they are bounded, and
    /// one extent is repaired once however many readers notice it.
    repairs: std::sync::Mutex<HashSet<ExtentId>>,
    /// The nodes' last reports, for `/metrics` (`watch_health`).
    health: std::sync::Mutex<Option<ClusterHealth>>,
    /// Nodes that took this gateway's metadata service's claim
    /// ([`RingPool::claim_nodes`]; a node keeps a claim for good): only
    /// those are listed for an orphan sweep. A node the ring gained since
    /// the round's claims may hold another service's extents, which this
    /// service's records do not name.
    claimed: std::sync::Mutex<HashSet<String>>,
}

/// The cluster as the nodes last reported it.
#[derive(Debug, Default, Clone)]
struct ClusterHealth {
    nodes_up: u64,
    nodes_unreachable: u64,
    /// Nodes up whose disk failed an fsync: they take no writes.
    nodes_disk_failed: u64,
    /// Extent writes the nodes refused since they started.
    writes_refused: u64,
    extent_copies: u64,
    /// Partitions a node's last pass found a peer lacking (summed over the
    /// nodes: each replica that noticed counts).
    partitions_out_of_sync: u64,
    /// Handoff bytes still to move home.
    bytes_to_move: u64,
    /// Every node answered and its last pass found nothing to send.
    settled: bool,
}

/// How often `watch_health` asks every node for its status.
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

impl Inner {
    fn ring(&self) -> Arc<Ring> {
        self.ring
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// Most read repairs at once; more are skipped (the replicator catches up).
const MAX_REPAIRS: usize = 16;

const NO_NODE_ANSWERS: &str = "no storage node answers";

/// How often a suspect node is probed, and how long a probe may take.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// A read that has no answer after this long is also asked of the next
/// replica (the first answer wins): a node cut off from the network, whose
/// connections hang rather than fail, delays a read by this, not by the node
/// timeout. Far above a healthy read's latency, so load is not doubled.
const READ_HEDGE_AFTER: Duration = Duration::from_secs(1);

/// A write whose copies are not all stored after this long also sends a copy
/// to a handoff for each replica still silent; the write completes with
/// whichever copies land first.
const WRITE_HEDGE_AFTER: Duration = Duration::from_secs(2);

impl RingPool {
    /// A pool over the nodes of `ring`. Refuses a write quorum of 0 or of
    /// more copies than the ring keeps: either would be silently changed.
    pub fn new(ring: Ring, config: RingPoolConfig) -> Result<Self> {
        if let Some(quorum) = config.write_quorum
            && !(1..=ring.replicas()).contains(&quorum)
        {
            return Err(PoolError::Config(format!(
                "a write quorum of {quorum} with a ring of {} replicas",
                ring.replicas()
            )));
        }
        Ok(RingPool {
            inner: Arc::new(Inner {
                ring: RwLock::new(Arc::new(ring)),
                client: NodeClient::new(config.secret, config.tls.as_ref(), config.node_timeout),
                write_quorum: config.write_quorum,
                stats: RingPoolStats::default(),
                suspects: std::sync::Mutex::new(HashMap::new()),
                repairs: std::sync::Mutex::new(HashSet::new()),
                claimed: std::sync::Mutex::new(HashSet::new()),
                health: std::sync::Mutex::new(None),
            }),
        })
    }

    pub fn ring(&self) -> Arc<Ring> {
        self.inner.ring()
    }

    pub fn stats(&self) -> &RingPoolStats {
        &self.inner.stats
    }

    /// Replaces the ring with a newer one of the same cluster and part power;
    /// returns whether it did.
    pub fn set_ring(&self, ring: Ring) -> Result<bool> {
        let mut current = self
            .inner
            .ring
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        current
            .ensure_cluster(ring.cluster_id())
            .map_err(|err| PoolError::Unavailable(err.to_string()))?;
        if ring.part_power() != current.part_power() {
            return Err(PoolError::Unavailable(
                "a ring of another part power cannot replace this one".into(),
            ));
        }
        if ring.version() <= current.version() {
            return Ok(false);
        }
        // Taken all the same: a gateway left on the old ring would send
        // writes where the cluster no longer looks for them.
        if let Some(quorum) = self.inner.write_quorum
            && quorum > ring.replicas()
        {
            tracing::warn!(
                quorum,
                replicas = ring.replicas(),
                version = ring.version(),
                "the new ring keeps fewer copies than the write quorum: \
                 writes now need every copy"
            );
        }
        *current = Arc::new(ring);
        Ok(true)
    }

    /// The counters in Prometheus' text format.
    pub fn metrics_text(&self) -> String {
        let stats = &self.inner.stats;
        let counters = [
            ("strata_pool_extent_writes_total", &stats.writes),
            ("strata_pool_handoff_writes_total", &stats.handoff_writes),
            ("strata_pool_write_failures_total", &stats.write_failures),
            ("strata_pool_read_fallbacks_total", &stats.read_fallbacks),
            ("strata_pool_read_repairs_total", &stats.read_repairs),
        ];
        let mut out = String::new();
        for (name, value) in counters {
            out.push_str(&format!(
                "# TYPE {name} counter\n{name} {}\n",
                value.load(Ordering::Relaxed)
            ));
        }
        out.push_str(&format!(
            "# TYPE strata_pool_ring_version gauge\nstrata_pool_ring_version {}\n",
            self.ring().version()
        ));
        let passed_over = lock(&self.inner.suspects).len();
        out.push_str(&format!(
            "# TYPE strata_pool_nodes_passed_over gauge\nstrata_pool_nodes_passed_over {passed_over}\n"
        ));
        let health = lock(&self.inner.health).clone();
        if let Some(health) = health {
            out.push_str(&format!(
                "# TYPE strata_cluster_nodes gauge\n\
                 strata_cluster_nodes{{state=\"up\"}} {}\n\
                 strata_cluster_nodes{{state=\"unreachable\"}} {}\n",
                health.nodes_up, health.nodes_unreachable
            ));
            let gauges = [
                ("strata_cluster_extent_copies", health.extent_copies),
                (
                    "strata_cluster_partitions_out_of_sync",
                    health.partitions_out_of_sync,
                ),
                ("strata_cluster_bytes_to_move", health.bytes_to_move),
                ("strata_cluster_nodes_disk_failed", health.nodes_disk_failed),
                ("strata_cluster_writes_refused", health.writes_refused),
                ("strata_cluster_settled", u64::from(health.settled)),
            ];
            for (name, value) in gauges {
                out.push_str(&format!("# TYPE {name} gauge\n{name} {value}\n"));
            }
        }
        out
    }

    /// Asks every node of the ring for its status every few seconds, for
    /// the cluster's health in `/metrics` (what `strata status` shows).
    /// Runs as long as the pool.
    pub async fn watch_health(self) {
        let pool = Arc::downgrade(&self.inner);
        drop(self);
        let mut ticker = tokio::time::interval(HEALTH_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let Some(inner) = pool.upgrade() else {
                return;
            };
            let ring = inner.ring();
            let client = &inner.client.with_timeout(HEALTH_INTERVAL);
            let reports = futures::future::join_all(
                nodes_of(&ring)
                    .into_iter()
                    .map(|node| async move { client.status(&node).await }),
            )
            .await;
            let mut health = ClusterHealth {
                settled: true,
                ..ClusterHealth::default()
            };
            for report in reports {
                match report {
                    Ok(status) => {
                        health.nodes_up += 1;
                        health.extent_copies += status.extents;
                        health.partitions_out_of_sync += status.replication.last_pass_out_of_sync;
                        health.bytes_to_move += status.bytes_to_move();
                        health.nodes_disk_failed += u64::from(status.disk_failed);
                        health.writes_refused += status.writes_refused;
                        health.settled &= status.settled_at(ring.version());
                    }
                    Err(_) => {
                        health.nodes_unreachable += 1;
                        health.settled = false;
                    }
                }
            }
            *lock(&inner.health) = Some(health);
        }
    }

    /// Offers this gateway's ring to every node it names; nodes keep it when
    /// it is newer than theirs and pass it on to each other. Returns the nodes
    /// that did not take it, and why.
    pub async fn announce_ring(&self) -> Vec<(String, NodeError)> {
        let ring = self.ring();
        let bytes = Bytes::from(ring.to_bytes());
        // All at once: a node cut off costs one timeout, not one each.
        let client = &self.inner.client;
        let offers = nodes_of(&ring).into_iter().map(|node| {
            let bytes = bytes.clone();
            async move {
                let result = client.push_ring(&node, bytes).await;
                (node, result)
            }
        });
        let mut refused = Vec::new();
        for (node, result) in futures::future::join_all(offers).await {
            if let Err(err) = result {
                tracing::warn!(%node, error = %err, "could not give the ring to a node");
                if matches!(err, NodeError::Unavailable { .. }) {
                    self.suspect(&node, true);
                }
                refused.push((node, err));
            }
        }
        refused
    }

    /// The metadata service each node of the ring serves (`None`: none
    /// claimed it yet), or why it did not say within `wait`.
    pub async fn node_owners(
        &self,
        wait: Duration,
    ) -> Vec<(String, Result<Option<String>, NodeError>)> {
        self.ask_every_node(
            wait,
            |client, node| async move { client.owner(&node).await },
        )
        .await
    }

    /// `ask` of every node of the ring at once; a node silent for `wait` is
    /// reported unavailable.
    async fn ask_every_node<'a, T, Asked>(
        &'a self,
        wait: Duration,
        ask: impl Fn(NodeClient, String) -> Asked,
    ) -> Vec<(String, Result<T, NodeError>)>
    where
        Asked: std::future::Future<Output = Result<T, NodeError>> + 'a,
    {
        // The client's own timeout: a node silent for `wait` is unavailable.
        let client = self.inner.client.with_timeout(wait);
        let asks = nodes_of(&self.ring()).into_iter().map(|node| {
            let asked = ask(client.clone(), node.clone());
            async move { (node, asked.await) }
        });
        futures::future::join_all(asks).await
    }

    /// Claims every node of the ring for the metadata service `service`
    /// (see `strata node`'s `/v1/owner`); the nodes that did not take the
    /// claim, and why: `NodeError::Refused` with 409 for a node another
    /// service holds. A node silent for `wait` is reported unavailable.
    pub async fn claim_nodes(&self, service: &str, wait: Duration) -> Vec<(String, NodeError)> {
        let answers = self
            .ask_every_node(wait, |client, node| async move {
                client.claim(&node, service).await
            })
            .await;
        let mut refused = Vec::new();
        for (node, result) in answers {
            match result {
                Ok(()) => {
                    lock(&self.inner.claimed).insert(node);
                }
                Err(err) => refused.push((node, err)),
            }
        }
        refused
    }

    /// The ring's nodes that took the claim ([`Inner::claimed`]), and
    /// those that have not.
    fn claimed_nodes(&self) -> (Vec<String>, Vec<String>) {
        let claimed = lock(&self.inner.claimed);
        nodes_of(&self.ring())
            .into_iter()
            .partition(|node| claimed.contains(node))
    }

    /// Passes over `node` until it answers a probe again; `down` when a
    /// request to it failed, not only took long.
    fn suspect(&self, node: &str, down: bool) {
        let newly = {
            let mut suspects = lock(&self.inner.suspects);
            let newly = !suspects.contains_key(node);
            *suspects.entry(node.to_owned()).or_insert(down) |= down;
            newly
        };
        if newly {
            tokio::spawn(probe_until_answers(
                Arc::downgrade(&self.inner),
                node.to_owned(),
            ));
        }
    }

    fn is_suspect(&self, node: &str) -> bool {
        lock(&self.inner.suspects).contains_key(node)
    }

    fn is_down(&self, node: &str) -> bool {
        lock(&self.inner.suspects)
            .get(node)
            .copied()
            .unwrap_or(false)
    }

    /// Moves suspect nodes to the end, keeping the order otherwise.
    fn healthy_first(&self, nodes: Vec<String>) -> Vec<String> {
        let (healthy, suspect): (Vec<_>, Vec<_>) =
            nodes.into_iter().partition(|node| !self.is_suspect(node));
        healthy.into_iter().chain(suspect).collect()
    }

    /// Restores a copy on replicas that lacked the extent or held it damaged,
    /// from a node that served it. In the background: the reader has its bytes.
    fn repair(&self, id: ExtentId, source: String, targets: Vec<String>) {
        {
            let mut repairs = lock(&self.inner.repairs);
            if repairs.len() >= MAX_REPAIRS || !repairs.insert(id) {
                return;
            }
        }
        let pool = self.clone();
        tokio::spawn(async move {
            pool.repair_now(id, &source, targets).await;
            lock(&pool.inner.repairs).remove(&id);
        });
    }

    async fn repair_now(&self, id: ExtentId, source: &str, targets: Vec<String>) {
        let data = match self.inner.client.read_whole(source, id).await {
            Ok(data) => data,
            Err(err) => {
                tracing::debug!(%id, error = %err, "read repair: source failed");
                return;
            }
        };
        let extent = self.inner.client.seal(data).await;
        for node in targets {
            match self.inner.client.put_extent(&node, id, &extent).await {
                Ok(()) => {
                    self.inner
                        .stats
                        .read_repairs
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!(%id, %node, "read repair restored a copy");
                }
                Err(err) => tracing::debug!(%id, %node, error = %err, "read repair failed"),
            }
        }
    }
}

/// Probes a suspect node each [`PROBE_INTERVAL`] until it answers or leaves
/// the ring; then requests go to it again. Ends with the pool.
async fn probe_until_answers(pool: Weak<Inner>, node: String) {
    loop {
        tokio::time::sleep(PROBE_INTERVAL).await;
        let Some(inner) = pool.upgrade() else {
            return;
        };
        let ring = inner.ring();
        let in_ring = ring.devices().any(|device| device.node == node);
        let probe = inner.client.with_timeout(PROBE_TIMEOUT);
        // Any answer counts (a node of an older version knows no ping): the
        // question is whether it can be reached.
        let answered = !in_ring
            || matches!(
                probe.ping(&node).await,
                Ok(()) | Err(NodeError::Refused { .. })
            );
        let mut suspects = lock(&inner.suspects);
        if answered {
            suspects.remove(&node);
            if in_ring {
                tracing::info!(%node, "node answers again");
            }
            return;
        }
        suspects.insert(node.clone(), true);
    }
}

/// The nodes of a partition's primaries, each once (a node's devices fail
/// together). Cheap: what every read and write needs.
pub(crate) fn primary_nodes(ring: &Ring, part: Partition) -> Vec<String> {
    let mut nodes: Vec<String> = Vec::with_capacity(ring.replicas());
    for device in ring.primaries(part) {
        if let Some(device) = ring.device(*device)
            && !nodes.contains(&device.node)
        {
            nodes.push(device.node.clone());
        }
    }
    nodes
}

/// Every other node, in the partition's handoff order. It ranks every
/// device, so it is computed only when a primary failed or is suspect.
fn handoff_nodes(ring: &Ring, part: Partition, primaries: &[String]) -> Vec<String> {
    let mut nodes: Vec<String> = Vec::new();
    for device in ring.handoffs(part) {
        if let Some(device) = ring.device(device)
            && !primaries.contains(&device.node)
            && !nodes.contains(&device.node)
        {
            nodes.push(device.node.clone());
        }
    }
    nodes
}

fn nodes_of(ring: &Ring) -> Vec<String> {
    let mut nodes: Vec<String> = ring.devices().map(|device| device.node.clone()).collect();
    nodes.sort();
    nodes.dedup();
    nodes
}

fn unavailable(detail: String) -> PoolError {
    PoolError::Unavailable(detail)
}

#[async_trait]
impl Pool for RingPool {
    async fn write_extent(&self, data: Bytes, tag: u32) -> Result<ExtentId> {
        if data.len() > MAX_EXTENT_LEN {
            return Err(PoolError::TooLarge(data.len()));
        }
        let ring = self.ring();
        let id = ExtentId::random_tagged(tag);
        let part = ring.partition_of(&id.0);
        let primaries = primary_nodes(&ring, part);
        let wanted = primaries.len();
        let mut handoffs = None;
        let spares = || {
            self.healthy_first(handoff_nodes(&ring, part, &primaries))
                .into_iter()
                .peekable()
        };
        // A primary known to be down gets no attempt while a healthy handoff
        // can take its copy.
        let mut targets = Vec::with_capacity(wanted);
        for node in &primaries {
            if self.is_suspect(node) {
                let spare = handoffs.get_or_insert_with(spares);
                if spare.peek().is_some_and(|next| !self.is_suspect(next)) {
                    self.inner
                        .stats
                        .handoff_writes
                        .fetch_add(1, Ordering::Relaxed);
                    targets.extend(spare.next());
                    continue;
                }
            }
            targets.push(node.clone());
        }
        let quorum = self
            .inner
            .write_quorum
            .map_or(wanted, |quorum| quorum.clamp(1, wanted.max(1)));
        // Too many nodes are down to reach the quorum (this gateway is cut
        // off, or the cluster is): fail now rather than hold the request for
        // a timeout; the probes bring nodes back within a second of their
        // return.
        let is_up = |node: &&String| !self.is_down(node);
        let up_targets = targets.iter().filter(is_up).count();
        // A target that fails is replaced by a later handoff: those count too,
        // looked up only when the targets alone fall short.
        if up_targets < quorum
            && up_targets
                + handoff_nodes(&ring, part, &primaries)
                    .iter()
                    .filter(|node| !targets.contains(node))
                    .filter(is_up)
                    .count()
                < quorum
        {
            self.inner
                .stats
                .write_failures
                .fetch_add(1, Ordering::Relaxed);
            return Err(unavailable(NO_NODE_ANSWERS.to_owned()));
        }
        let client = &self.inner.client;
        let extent = client.seal(data).await;
        let put = |node: String| {
            let extent = &extent;
            async move {
                let result = client.put_extent(&node, id, extent).await;
                (node, result)
            }
        };
        let send_to_handoff =
            |next: String, silent: &mut Vec<String>, in_flight: &mut FuturesUnordered<_>| {
                self.inner
                    .stats
                    .handoff_writes
                    .fetch_add(1, Ordering::Relaxed);
                silent.push(next.clone());
                in_flight.push(put(next));
            };
        let mut silent = targets.clone();
        let mut in_flight: FuturesUnordered<_> = targets.into_iter().map(put).collect();
        let mut stored = 0;
        let mut errors = Vec::new();
        let mut hedged = false;
        while !in_flight.is_empty() {
            let answer = if hedged {
                in_flight.next().await
            } else {
                tokio::select! {
                    answer = in_flight.next() => answer,
                    () = tokio::time::sleep(WRITE_HEDGE_AFTER) => None,
                }
            };
            match answer {
                None => {
                    // Replicas that neither stored nor failed may hang on a
                    // cut connection: a handoff each takes a copy meanwhile.
                    // They are passed over until a probe says they answer: a
                    // request dropped when the write completes never times out.
                    hedged = true;
                    for node in &silent {
                        self.suspect(node, false);
                    }
                    for node in silent.clone() {
                        let Some(next) = handoffs.get_or_insert_with(spares).next() else {
                            break;
                        };
                        tracing::info!(%node, handoff = %next, %id, "slow replica: writing a handoff copy too");
                        send_to_handoff(next, &mut silent, &mut in_flight);
                    }
                }
                Some((node, result)) => {
                    silent.retain(|other| *other != node);
                    match result {
                        Ok(()) => stored += 1,
                        Err(err) => {
                            if matches!(err, NodeError::Unavailable { .. }) {
                                self.suspect(&node, true);
                            }
                            tracing::warn!(%node, %id, error = %err, "extent write failed on a node");
                            errors.push(err.to_string());
                            // Another node takes the copy: the write keeps its
                            // durability.
                            if let Some(next) = handoffs.get_or_insert_with(spares).next() {
                                send_to_handoff(next, &mut silent, &mut in_flight);
                            }
                        }
                    }
                }
            }
            // Done when every copy is stored, or when the quorum is and only
            // suspect nodes are still to answer (they would hold the write
            // for a timeout).
            if stored == wanted
                || (stored >= quorum && silent.iter().all(|node| self.is_suspect(node)))
            {
                break;
            }
        }
        self.inner.stats.writes.fetch_add(1, Ordering::Relaxed);
        if stored >= quorum && stored > 0 {
            return Ok(id);
        }
        self.inner
            .stats
            .write_failures
            .fetch_add(1, Ordering::Relaxed);
        // The copies that did land name nothing; the orphan sweep also finds them.
        let _ = self.delete_extent(id).await;
        Err(unavailable(format!(
            "{stored} of {quorum} required copies stored: {}",
            errors.join("; ")
        )))
    }

    async fn read_extent(&self, id: ExtentId, offset: u64, len: u64) -> Result<Bytes> {
        let ring = self.ring();
        let part = ring.partition_of(&id.0);
        let primaries = primary_nodes(&ring, part);
        // A copy is on a primary, on a handoff while a primary is away, or on
        // a former primary until the replicator has moved it after a
        // rebalance: every node is asked before an extent is called missing,
        // healthy ones first. The other nodes are ranked only when no healthy
        // primary served the read.
        let (mut candidates, mut suspect_primaries): (Vec<String>, Vec<String>) = primaries
            .iter()
            .cloned()
            .partition(|node| !self.is_suspect(node));
        if candidates.is_empty()
            && primaries.iter().all(|node| self.is_down(node))
            && handoff_nodes(&ring, part, &primaries)
                .iter()
                .all(|node| self.is_down(node))
        {
            return Err(unavailable(NO_NODE_ANSWERS.to_owned()));
        }
        let mut widened = false;
        let mut asked = 0;
        let client = &self.inner.client;
        let read = |node: String| async move {
            let result = client.read_extent(&node, id, offset, len).await;
            (node, result)
        };
        let mut in_flight = FuturesUnordered::new();
        let mut to_repair = Vec::new();
        let mut missing = 0;
        let mut damaged = 0;
        let mut failures = Vec::new();
        // Each turn asks one more node: at the start, after a failure, and
        // when the nodes asked are slow to answer.
        loop {
            if asked == candidates.len() && !widened {
                widened = true;
                let (healthy, suspect): (Vec<String>, Vec<String>) =
                    handoff_nodes(&ring, part, &primaries)
                        .into_iter()
                        .partition(|node| !self.is_suspect(node));
                candidates.extend(healthy);
                candidates.append(&mut suspect_primaries);
                candidates.extend(suspect);
            }
            if let Some(node) = candidates.get(asked) {
                in_flight.push(read(node.clone()));
                asked += 1;
            }
            if in_flight.is_empty() {
                break;
            }
            let more_to_ask = asked < candidates.len() || !widened;
            let answer = if more_to_ask {
                tokio::select! {
                    answer = in_flight.next() => answer,
                    () = tokio::time::sleep(READ_HEDGE_AFTER) => None,
                }
            } else {
                in_flight.next().await
            };
            let Some((node, result)) = answer else {
                // The node asked last is silent; a probe decides when it is
                // asked first again.
                if let Some(silent) = asked.checked_sub(1).and_then(|last| candidates.get(last)) {
                    self.suspect(silent, false);
                }
                continue;
            };
            match result {
                Ok(bytes) => {
                    if candidates.first() != Some(&node) {
                        self.inner
                            .stats
                            .read_fallbacks
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    if !to_repair.is_empty() {
                        self.repair(id, node, to_repair);
                    }
                    return Ok(bytes);
                }
                Err(NodeError::OutOfRange { extent_len }) => {
                    return Err(PoolError::OutOfRange {
                        id,
                        offset,
                        len,
                        extent_len,
                    });
                }
                Err(NodeError::NotFound) => {
                    missing += 1;
                    if primaries.contains(&node) {
                        to_repair.push(node);
                    }
                }
                Err(NodeError::Corrupt) => {
                    damaged += 1;
                    if primaries.contains(&node) {
                        to_repair.push(node);
                    }
                }
                // A deletion is final: no other copy may be served.
                Err(NodeError::Deleted) => return Err(PoolError::NotFound(id)),
                Err(err) => {
                    if matches!(err, NodeError::Unavailable { .. }) {
                        self.suspect(&node, true);
                    }
                    failures.push(err.to_string());
                }
            }
        }
        if failures.is_empty() && damaged == 0 {
            return Err(PoolError::NotFound(id));
        }
        if failures.is_empty() {
            // Damaged where present, missing elsewhere: lost, not unavailable.
            return Err(PoolError::Corrupt {
                id,
                detail: format!("{damaged} copies damaged, {missing} missing"),
            });
        }
        Err(unavailable(format!(
            "no replica served extent {id}: {}",
            failures.join("; ")
        )))
    }

    async fn delete_extent(&self, id: ExtentId) -> Result<()> {
        let ring = self.ring();
        let mut primaries = primary_nodes(&ring, ring.partition_of(&id.0));
        // A suspect node would hold the deletion up for a timeout; the
        // replicators carry the tombstone to it when it is back.
        if primaries.iter().any(|node| !self.is_suspect(node)) {
            primaries.retain(|node| !self.is_suspect(node));
        }
        let client = &self.inner.client;
        let results: Vec<_> = primaries
            .iter()
            .map(|node| client.delete_extent(node, id, None))
            .collect::<FuturesUnordered<_>>()
            .collect()
            .await;
        // One tombstone is enough: replicators carry it to the other copies.
        if results.iter().any(Result::is_ok) {
            return Ok(());
        }
        Err(unavailable(format!(
            "no replica took the deletion of {id}: {}",
            results
                .iter()
                .filter_map(|result| result.as_ref().err().map(ToString::to_string))
                .collect::<Vec<_>>()
                .join("; ")
        )))
    }

    /// The extents of the nodes that took the claim ([`Inner::claimed`]).
    async fn list_extents(&self, filter: &ExtentFilter) -> Result<Vec<ExtentId>> {
        let mut found = HashSet::new();
        for node in self.claimed_nodes().0 {
            match self.inner.client.list_extents(&node, filter).await {
                // Filtered here too: a node of an earlier version lists
                // every first byte, or every tag.
                Ok(ids) => found.extend(ids.into_iter().filter(|id| filter.covers(*id))),
                // A node away only means fewer candidates this sweep.
                Err(err) => tracing::info!(%node, error = %err, "orphan sweep skips a node"),
            }
        }
        Ok(found.into_iter().collect())
    }

    /// The claimed nodes' counts summed, over the ring's replica count:
    /// each extent is on that many nodes (more while a handoff holds a
    /// copy). None at all while a node runs a version that does not count
    /// (404): it lists every first byte whatever the span, so the sweep
    /// had better take the pool in one span, as that version's did.
    async fn count_extents(&self, filter: &ExtentFilter) -> Result<LeadCounts> {
        let mut summed = [0u64; 256];
        // Said once a sweep: it counts once, then lists a span at a time.
        let (claimed, not_yet) = self.claimed_nodes();
        for node in not_yet {
            tracing::info!(%node, "orphan sweep skips a node that has not taken the claim");
        }
        for node in claimed {
            match self.inner.client.count_extents(&node, filter).await {
                Ok(counts) => {
                    for (sum, count) in summed.iter_mut().zip(counts) {
                        *sum = sum.saturating_add(count);
                    }
                }
                Err(NodeError::Refused {
                    status: http::StatusCode::NOT_FOUND,
                    ..
                }) => {
                    tracing::info!(%node, "a node of an earlier version: the orphan sweep takes the pool in one span");
                    return Ok([0; 256]);
                }
                Err(err) => tracing::info!(%node, error = %err, "extent count skips a node"),
            }
        }
        let copies = self.ring().replicas().max(1) as u64;
        Ok(summed.map(|sum| sum.div_ceil(copies)))
    }
}

#[cfg(test)]
mod tests {
    use strata_ring::{DeviceSpec, RingBuilder};

    use super::*;

    fn ring(replicas: u8) -> Ring {
        let mut builder = RingBuilder::new("c", 4, replicas).expect("shape");
        for zone in 1..=3 {
            builder
                .add_device(DeviceSpec {
                    node: format!("127.0.0.1:{}", 7000 + zone),
                    region: 1,
                    zone,
                    weight: 100,
                    name: None,
                })
                .expect("device");
        }
        builder.rebalance().expect("rebalance");
        builder.ring().expect("ring")
    }

    #[tokio::test]
    async fn write_quorum_is_checked_against_the_ring() {
        let pool = |quorum| {
            RingPool::new(
                ring(2),
                RingPoolConfig {
                    secret: ClusterSecret::new("correct horse battery staple").expect("secret"),
                    tls: None,
                    write_quorum: quorum,
                    node_timeout: Duration::from_secs(1),
                },
            )
        };
        assert!(pool(None).is_ok());
        assert!(pool(Some(1)).is_ok());
        assert!(pool(Some(2)).is_ok());
        assert!(matches!(pool(Some(0)), Err(PoolError::Config(_))));
        assert!(matches!(pool(Some(3)), Err(PoolError::Config(_))));
    }
}
