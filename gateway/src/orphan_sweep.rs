//! Which metadata service a cluster's storage nodes serve, and the sweep of
//! the extents no record of it names.
//!
//! A body is stored before its record is committed: a gateway killed in
//! between, or a commit whose outcome stayed unknown and did not happen,
//! leaves extents that no record names. Only the metadata service holds
//! every record, so only it deletes them (a replicated service's leader,
//! from its replica, once a majority confirmed it leads; with index groups,
//! each group's leader, of the extents tagged with its buckets' hashes,
//! or, for a service split into index groups, the root's leader once its
//! replica of every group caught up with the group's leader), and only on
//! nodes
//! that serve it: each node records the first service that claims it and
//! refuses the others. Two services over the same nodes by mistake would
//! otherwise delete each other's extents; with the claims, the second
//! gateway stops at start instead.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use http::StatusCode;
use strata_meta::MetaService;
use strata_pool::{ExtentTags, NodeError, RingPool};
use strata_store::{CatalogWrite, Store, StoreError, Swept, WeakStore};

use crate::directory::NS_CLUSTER;

/// The catalog record holding the service's id.
const SERVICE_KEY: &str = "service-id";

/// The longest pause between two sweeps (shorter when extents are orphans
/// sooner: a quarter of `cluster.orphan_age_secs`).
const MAX_SWEEP_INTERVAL: Duration = Duration::from_secs(6 * 3600);

/// How long the sweep waits for a node to take the claim.
const NODE_WAIT_IN_SWEEP: Duration = Duration::from_secs(10);

/// Where the sweep reads the records.
pub enum Records {
    /// This gateway's own store is the metadata service.
    Local(WeakStore),
    /// This gateway is a member of a replicated service: its replica of
    /// the group it `leads` (the root, or an index group), while it leads
    /// it and its replica of each of the `caught_up` groups applied what
    /// that group acknowledged. A root's replica reads every space of the
    /// member's database, so a member sweeps from the root's, with every
    /// index group caught up, when their extents are not tagged by bucket
    /// (its buckets were split into them, or a version before tags used
    /// them first); with tags, each group's leader sweeps its own, with
    /// none to catch up.
    Member {
        leads: Weak<MetaService>,
        caught_up: Vec<Weak<MetaService>>,
    },
}

/// How long the sweep waits for the index groups' replicas to apply as far
/// as their leaders have (all at once).
const GROUP_CATCH_UP_WAIT: Duration = Duration::from_secs(10);

impl Records {
    /// The replica to read the records from, if it may be read now; why
    /// not otherwise.
    async fn replica(&self) -> Result<Store, Round> {
        let (leads, caught_up) = match self {
            Records::Local(store) => return store.upgrade().ok_or(Round::Gone),
            Records::Member { leads, caught_up } => (leads, caught_up),
        };
        let member = leads.upgrade().ok_or(Round::Gone)?;
        // Leadership first: the groups' read points come after it, so each
        // holds at least what the groups acknowledged before the root's.
        let Some(replica) = member.replica_while_leading().await else {
            return Err(Round::NotLeading);
        };
        let groups: Vec<_> = caught_up
            .iter()
            .map(Weak::upgrade)
            .collect::<Option<_>>()
            .ok_or(Round::Gone)?;
        // A root whose replica records more index groups than this member
        // runs (it was split while the member ran none): their changes
        // since are not in this database.
        let recorded = replica.index_groups().await.map_err(|_| Round::Failed)?;
        if usize::from(recorded) > groups.len() {
            tracing::warn!(
                "orphan sweep skipped: the metadata service keeps its objects in \
                 index groups this member does not run (set index_groups and restart it)"
            );
            return Err(Round::PutOff);
        }
        let caught_up = groups
            .iter()
            .map(|group| group.caught_up(GROUP_CATCH_UP_WAIT));
        for outcome in futures::future::join_all(caught_up).await {
            if let Err(why) = outcome {
                tracing::info!(%why, "orphan sweep put off: an index group's replica is behind");
                return Err(Round::PutOff);
            }
        }
        Ok(replica)
    }
}

/// How one round of a sweep ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    /// The extents were listed and judged.
    Swept(Swept),
    /// This member does not lead the group whose records it would read.
    NotLeading,
    /// Not now: a node did not answer the claim, a replica it reads is
    /// behind or half imported, or this member runs fewer index groups than
    /// its root records (until it is restarted with them).
    PutOff,
    /// A node refused the claim (it serves another metadata service), or
    /// the listing, the references or a deletion failed.
    Failed,
    /// The service the records belong to stopped (the gateway is stopping).
    Gone,
}

impl Round {
    /// The outcomes counted, in the order of [`SweepCounts::rounds`].
    const COUNTED: [&'static str; 4] = ["swept", "not_leading", "put_off", "failed"];

    /// Its place in [`Round::COUNTED`]; `None` for a round not counted.
    fn counted_as(self) -> Option<usize> {
        match self {
            Round::Swept(_) => Some(0),
            Round::NotLeading => Some(1),
            Round::PutOff => Some(2),
            Round::Failed => Some(3),
            Round::Gone => None,
        }
    }
}

/// What one of this gateway's orphan sweepers did, for `/metrics`: an
/// operator sees a sweep that keeps being put off, which only logs said.
pub struct SweepCounts {
    /// The group whose records the sweeper reads, as `/metrics` labels it:
    /// `root` (the whole store's, or a root group's), or an index group's
    /// number.
    group: String,
    /// Rounds, by outcome ([`Round::COUNTED`]).
    rounds: [AtomicU64; Round::COUNTED.len()],
    deleted: AtomicU64,
    /// Spans the swept rounds took the pool in (`orphan_sweep_batch`): a
    /// round takes about one per batch of extents the pool holds.
    spans: AtomicU64,
    last_swept_unix_secs: AtomicU64,
}

impl SweepCounts {
    pub fn new(group: String) -> Arc<SweepCounts> {
        Arc::new(SweepCounts {
            group,
            rounds: Default::default(),
            deleted: AtomicU64::new(0),
            spans: AtomicU64::new(0),
            last_swept_unix_secs: AtomicU64::new(0),
        })
    }

    fn count(&self, round: Round) {
        if let Round::Swept(swept) = round {
            self.deleted
                .fetch_add(swept.deleted as u64, Ordering::Relaxed);
            self.spans.fetch_add(swept.spans as u64, Ordering::Relaxed);
            (self.last_swept_unix_secs).store(crate::wire::unix_now(), Ordering::Relaxed);
        }
        if let Some(index) = round.counted_as() {
            self.rounds[index].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The counts of `sweepers` in Prometheus' text format, one series per
/// sweeper (`group` label).
pub fn metrics_text(sweepers: &[Arc<SweepCounts>]) -> String {
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let mut out = String::from("# TYPE strata_orphan_sweep_rounds_total counter\n");
    for sweeper in sweepers {
        for (outcome, counter) in Round::COUNTED.iter().zip(&sweeper.rounds) {
            out.push_str(&format!(
                "strata_orphan_sweep_rounds_total{{group=\"{}\",outcome=\"{outcome}\"}} {}\n",
                sweeper.group,
                load(counter)
            ));
        }
    }
    type Series = (&'static str, &'static str, fn(&SweepCounts) -> &AtomicU64);
    let series: [Series; 3] = [
        (
            "strata_orphan_extents_deleted_total",
            "counter",
            |sweeper| &sweeper.deleted,
        ),
        ("strata_orphan_sweep_spans_total", "counter", |sweeper| {
            &sweeper.spans
        }),
        (
            "strata_orphan_sweep_last_swept_timestamp_seconds",
            "gauge",
            |sweeper| &sweeper.last_swept_unix_secs,
        ),
    ];
    for (name, kind, value) in series {
        out.push_str(&format!("# TYPE {name} {kind}\n"));
        for sweeper in sweepers {
            let value = load(value(sweeper));
            out.push_str(&format!("{name}{{group=\"{}\"}} {value}\n", sweeper.group));
        }
    }
    out
}

/// The metadata service's id: random, made by the first gateway to ask.
pub async fn service_id(store: &Store) -> anyhow::Result<String> {
    let made = hex::encode(rand::random::<[u8; 16]>());
    store
        .catalog_update(NS_CLUSTER, SERVICE_KEY, move |kept| match kept {
            None => Ok((CatalogWrite::Put(made.clone().into_bytes()), made.clone())),
            Some(kept) => match std::str::from_utf8(kept) {
                Ok(id) => Ok((CatalogWrite::Keep, id.to_owned())),
                Err(_) => Err(StoreError::Corrupt(
                    "the metadata service's id is not UTF-8".into(),
                )),
            },
        })
        .await
        .context("reading the metadata service's id")
}

/// How long a gateway's start waits for a node to take its claim: a node
/// that is down or cut off must not hold the start for a whole timeout.
const CLAIM_WAIT_AT_START: Duration = Duration::from_secs(2);

/// Claims the ring's nodes for `service`. Fails when one serves another
/// service, before claiming any: a gateway that stops here leaves the nodes
/// no one claimed free for the service they belong to. A node that does not
/// answer is claimed later, by the sweep.
pub async fn claim_nodes(pool: &RingPool, service: &str) -> anyhow::Result<()> {
    for (node, owner) in pool.node_owners(CLAIM_WAIT_AT_START).await {
        if let Ok(Some(owner)) = owner
            && owner != service
        {
            anyhow::bail!(
                "storage node {node} serves another metadata service, {owner} \
                 (this gateway's is {service}; a gateway of a cluster names the \
                 cluster's one metadata service with --metadata)"
            );
        }
    }
    for (node, err) in pool.claim_nodes(service, CLAIM_WAIT_AT_START).await {
        if let NodeError::Refused {
            status: StatusCode::CONFLICT,
            detail,
            ..
        } = &err
        {
            anyhow::bail!(
                "storage node {node} serves another metadata service: {detail} \
                 (this gateway's is {service}; a gateway of a cluster names the \
                 cluster's one metadata service with --metadata)"
            );
        }
        tracing::warn!(%node, error = %err, "storage node not claimed for the metadata service yet");
    }
    Ok(())
}

/// Deletes, every quarter of `orphan_age` (at most every 6 hours), the
/// extents older than `orphan_age`, with a tag in `tags`, that no record
/// names, when every node of the ring took `service`'s claim; counts each
/// round in `counts`.
pub fn spawn_sweeper(
    records: Records,
    tags: ExtentTags,
    pool: RingPool,
    service: String,
    orphan_age: Duration,
    counts: Arc<SweepCounts>,
) {
    let interval = (orphan_age / 4).clamp(Duration::from_secs(1), MAX_SWEEP_INTERVAL);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let round = sweep_round(&records, &tags, &pool, &service, orphan_age).await;
            counts.count(round);
            if round == Round::Gone {
                return;
            }
        }
    });
}

/// One round of [`spawn_sweeper`]'s.
async fn sweep_round(
    records: &Records,
    tags: &ExtentTags,
    pool: &RingPool,
    service: &str,
    orphan_age: Duration,
) -> Round {
    // A node that did not take the claim (another service's, one that does
    // not know claims, or one that did not answer and may answer the
    // listing) may hold extents this service's records do not name: nothing
    // is swept until every node of the ring took it.
    let refused = pool.claim_nodes(service, NODE_WAIT_IN_SWEEP).await;
    if let Some((node, err)) = refused.first() {
        return match err {
            NodeError::Refused { .. } => {
                tracing::error!(%node, error = %err,
                    "orphan sweep skipped: a node refused this metadata service's claim");
                Round::Failed
            }
            _ => {
                tracing::info!(%node, error = %err,
                    "orphan sweep put off: a node did not take the claim");
                Round::PutOff
            }
        };
    }
    // The age is measured first: an extent is swept only if it was written
    // `orphan_age` before any of the replicas' confirmations (below, last
    // but the listing), which each hold every change acknowledged before
    // them.
    let older_than = SystemTime::now()
        .checked_sub(orphan_age)
        .unwrap_or(UNIX_EPOCH);
    let store = match records.replica().await {
        Ok(store) => store,
        Err(round) => return round,
    };
    // The round takes the pool in spans, each listed and then matched
    // against the replica, and may last long after the confirmations: a
    // replica only moves forward, so what it held then it holds still.
    match store.sweep_orphans(older_than, tags.clone()).await {
        Ok(swept) => {
            if swept.deleted > 0 {
                tracing::info!(
                    n_swept = swept.deleted,
                    spans = swept.spans,
                    "deleted extents no record names"
                );
            }
            Round::Swept(swept)
        }
        // A replica half imported (a snapshot installed meanwhile).
        Err(StoreError::Unavailable(why)) => {
            tracing::info!(%why, "orphan sweep put off");
            Round::PutOff
        }
        Err(err) => {
            tracing::warn!(error = %err, "orphan sweep failed");
            Round::Failed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each sweeper's rounds and deletions are its own series, labelled
    /// with its group; each metric is typed once, before its series.
    #[test]
    fn each_sweepers_rounds_are_counted_under_its_group() {
        let (root, third) = (
            SweepCounts::new("root".into()),
            SweepCounts::new("3".into()),
        );
        root.count(Round::NotLeading);
        let swept = |deleted, spans| Round::Swept(Swept { deleted, spans });
        third.count(swept(2, 3));
        third.count(swept(0, 1));
        third.count(Round::PutOff);
        third.count(Round::Gone);
        let text = metrics_text(&[root, third]);
        let lines: Vec<&str> = text.lines().collect();
        for expected in [
            r#"strata_orphan_sweep_rounds_total{group="root",outcome="not_leading"} 1"#,
            r#"strata_orphan_sweep_rounds_total{group="root",outcome="swept"} 0"#,
            r#"strata_orphan_sweep_rounds_total{group="3",outcome="swept"} 2"#,
            r#"strata_orphan_sweep_rounds_total{group="3",outcome="put_off"} 1"#,
            r#"strata_orphan_sweep_rounds_total{group="3",outcome="failed"} 0"#,
            r#"strata_orphan_extents_deleted_total{group="root"} 0"#,
            r#"strata_orphan_extents_deleted_total{group="3"} 2"#,
            r#"strata_orphan_sweep_spans_total{group="root"} 0"#,
            r#"strata_orphan_sweep_spans_total{group="3"} 4"#,
            r#"strata_orphan_sweep_last_swept_timestamp_seconds{group="root"} 0"#,
        ] {
            assert!(lines.contains(&expected), "{expected} not in:\n{text}");
        }
        let typed: Vec<&&str> = lines
            .iter()
            .filter(|line| line.starts_with("# TYPE"))
            .collect();
        assert_eq!(typed.len(), 4, "{text}");
        // The groups' series of one metric are one block after its type.
        let deleted_type = lines
            .iter()
            .position(|line| line.starts_with("# TYPE strata_orphan_extents_deleted_total"))
            .expect("typed");
        assert!(
            lines[deleted_type + 1].ends_with(r#"{group="root"} 0"#),
            "{text}"
        );
        assert!(
            lines[deleted_type + 2].ends_with(r#"{group="3"} 2"#),
            "{text}"
        );
    }
}
