//! Index groups on storage nodes (`docs/design/index-on-the-ring.md`,
//! step 3): which nodes hold each group, and the members a `strata node`
//! runs for the groups placed on it, answering their calls through the
//! node's internal hook ([`strata_pool::node::InternalCalls`]).
//!
//! Placement follows one list, given alike to every node
//! (`--index-nodes`) and gateway (`cluster.index_nodes`): group `g` is held
//! by [`MEMBERS_PER_GROUP`] consecutive nodes of the list from position
//! `g - 1`, each node a member by its position from 1. A group stays
//! with the members it was founded with: moving groups (a node replaced,
//! the list or the ring changed) is not built yet, so the list must not
//! change once the groups exist.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use http::StatusCode;
use http_body_util::{BodyExt as _, Full};
use strata_meta::{GroupId, Joining, Members, MetaLog, MetaService, Tuning};
use strata_pool::node::{InternalCalls, NodeResponse};
use strata_pool::wire::{ClusterSecret, ReplayGuard};
use strata_pool::{ClusterTls, RingPool, RingPoolConfig};
use strata_ring::Ring;
use strata_store::{Store, StoreConfig};

use crate::metadata::{HttpRaftTransport, Internal, RAFT_PATH};
use crate::wire::OverTls;

/// Members of each index group (fewer while fewer nodes are named): a
/// majority of three outlives the loss of any one node.
pub const MEMBERS_PER_GROUP: usize = 3;

/// How often a node hands its pool the ring its data directory holds: the
/// groups' stores delete replaced extents where the current ring puts them.
const RING_FOLLOW_INTERVAL: Duration = Duration::from_secs(5);

/// Refuses a list of nodes that is not `HOST:PORT` entries, each once.
pub fn check_nodes(nodes: &[String]) -> anyhow::Result<()> {
    for (index, node) in nodes.iter().enumerate() {
        let port = node.rsplit_once(':').map(|(_, port)| port);
        if node.contains('/') || port.is_none_or(|port| port.parse::<u16>().is_err()) {
            bail!("{node:?} is not HOST:PORT");
        }
        if nodes[..index].contains(node) {
            bail!("{node} is named twice");
        }
    }
    Ok(())
}

/// Who holds the index groups, as the root records it
/// ([`strata_store::Store::route_held_by`]) and each node's database too:
/// a gateway or node given another list is refused at start.
pub fn held_by(nodes: &[String]) -> String {
    format!("the storage nodes {}", nodes.join(","))
}

/// The founding members of index group `group` (from 1) among `nodes`:
/// [`MEMBERS_PER_GROUP`] consecutive ones from position `group - 1`, so
/// that the groups' leaders and replicas spread over every node.
pub fn group_members(nodes: &[String], group: u16) -> Members {
    let first = usize::from(group.saturating_sub(1));
    (0..nodes.len().min(MEMBERS_PER_GROUP))
        .map(|offset| {
            let position = (first + offset) % nodes.len();
            (position as u64 + 1, nodes[position].clone())
        })
        .collect()
}

/// What a storage node needs to hold the index groups placed on it.
pub struct Hosting {
    /// The node's data directory: the groups' log in `raft`, their
    /// replicas in `meta`, the ring the node keeps in `ring`.
    pub data: PathBuf,
    /// The node's name in `nodes` (its address in the ring).
    pub address: String,
    pub nodes: Vec<String>,
    /// The cluster's index groups (the gateways' `index_groups`).
    pub groups: u16,
    pub secret: ClusterSecret,
    pub tls: Option<ClusterTls>,
    /// Where the groups' stores delete the extents of replaced objects.
    pub ring: Ring,
    /// How long a replaced object's extents are kept, so that reads
    /// already streaming them finish (the gateways' `gc_grace_secs`): the
    /// groups' replicas delete them.
    pub gc_grace: Duration,
    /// Extents of a group's buckets that no record of it names and older
    /// than this are deleted by the group's leader (the gateways'
    /// `cluster.orphan_age_secs`).
    pub orphan_age: Duration,
}

/// The answers a node gives under `/internal/v1/`: those of its groups'
/// members once [`serve`] set them (421 or 503 before), and their views in
/// its status, by group number.
pub fn calls(served: Arc<OnceLock<Internal>>) -> InternalCalls {
    let reported = served.clone();
    let report = move || {
        let internal = reported.get()?;
        let views: serde_json::Map<String, serde_json::Value> = internal
            .index_services
            .iter()
            .map(|(group, member)| {
                let view = serde_json::to_value(member.status()).unwrap_or_default();
                (group.to_string(), view)
            })
            .collect();
        Some(serde_json::Value::Object(views))
    };
    let answer = move |mut request: strata_pool::node::NodeRequest, over_tls| {
        let served = served.clone();
        Box::pin(async move {
            let Some(internal) = served.get() else {
                // A metadata call was not taken: 421 without a leader sends
                // the caller to the next member, as a member that knows no
                // leader answers. Raft's messages are sent again.
                return match request.uri().path().starts_with(RAFT_PATH) {
                    true => whole(StatusCode::SERVICE_UNAVAILABLE, "starting\n"),
                    false => whole(
                        StatusCode::MISDIRECTED_REQUEST,
                        crate::metadata::not_leader_body(None),
                    ),
                };
            };
            if internal.index_services.is_empty() {
                return whole(StatusCode::NOT_FOUND, "this node holds no index group\n");
            }
            if over_tls {
                request.extensions_mut().insert(OverTls);
            }
            let (parts, body) = crate::metadata::handle(internal, request)
                .await
                .into_parts();
            // A member's answers are bounded (a call's result, a batch of
            // log entries), as a gateway sends them.
            match body.collect().await {
                Ok(body) => NodeResponse::from_parts(parts, Full::new(body.to_bytes())),
                Err(err) => whole(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("answer not read: {err}\n"),
                ),
            }
        }) as strata_pool::node::NodeAnswer
    };
    InternalCalls::new(answer, report)
}

/// What answers the calls of `groups` on a node.
pub fn serve(
    secret: ClusterSecret,
    tls: bool,
    groups: BTreeMap<u16, Arc<MetaService>>,
) -> Internal {
    Internal {
        secret: Some(secret),
        requires_tls: tls,
        store: OnceLock::new(),
        service: None,
        index_services: groups,
        replays: ReplayGuard::new(),
    }
}

/// Starts this node's member of each index group placed on it, founding
/// the groups never started with the members [`group_members`] places.
pub async fn start(hosting: Hosting) -> anyhow::Result<BTreeMap<u16, Arc<MetaService>>> {
    let Some(position) = hosting
        .nodes
        .iter()
        .position(|node| *node == hosting.address)
    else {
        bail!(
            "this node ({}) is not among --index-nodes {:?}: name it as the ring does",
            hosting.address,
            hosting.nodes
        );
    };
    let member = position as u64 + 1;
    let pool = RingPool::new(
        hosting.ring,
        RingPoolConfig {
            secret: hosting.secret.clone(),
            tls: hosting.tls.clone(),
            write_quorum: None,
            node_timeout: Duration::from_secs(10),
        },
    )
    .context("the ring of the index groups' stores")?;
    let mut config = StoreConfig::new(hosting.data.join("meta"));
    config.log_replica = true;
    config.gc_grace = hosting.gc_grace;
    // The store's own sweep reads a root's records: each group's leader
    // sweeps its own instead (`sweep_orphans`).
    config.orphan_age = None;
    let root = Store::open(config.clone(), Arc::new(pool.clone()))
        .context("opening the index groups' database")?;
    root.hold_index_groups_without_root(hosting.groups, held_by(&hosting.nodes))
        .await
        .context("readying the index groups' database (--index-groups and --index-nodes are kept for good once given)")?;
    let log = MetaLog::open(&hosting.data.join("raft"))
        .map_err(|why| anyhow::anyhow!("opening the index groups' log: {why}"))?;
    let transport = Arc::new(HttpRaftTransport::new(
        hosting.secret.clone(),
        hosting.tls.as_ref(),
    ));
    let mut services = BTreeMap::new();
    for group in 1..=hosting.groups {
        let members = group_members(&hosting.nodes, group);
        if !members.contains_key(&member) {
            continue;
        }
        let replica = root
            .open_group(group, config.clone())
            .with_context(|| format!("opening index group {group}'s replica"))?;
        let service = MetaService::start_group(
            member,
            GroupId::Index(group),
            Joining::Founding(members),
            &log,
            replica,
            transport.clone(),
            Tuning::default(),
        )
        .await
        .map_err(|why| anyhow::anyhow!("starting index group {group}: {why}"))?;
        services.insert(group, service);
    }
    tracing::info!(
        member,
        groups = ?services.keys().collect::<Vec<_>>(),
        "member of the index groups placed on this node"
    );
    tokio::spawn(sweep_orphans(
        hosting.data.clone(),
        services.clone(),
        hosting.groups,
        pool.clone(),
        hosting.orphan_age,
    ));
    tokio::spawn(follow_ring(pool, hosting.data.join("ring")));
    Ok(services)
}

/// How often a node looks for the metadata service that claims it, before
/// its groups can sweep.
const OWNER_POLL: Duration = Duration::from_secs(2);

/// Once a metadata service claimed the node (the gateway that holds the
/// root group, at its start), sweeps with each of `groups` while this node
/// leads it the extents tagged with its buckets' hashes that its replica
/// does not name (`orphan_sweep.rs`): only a group sees its own records.
async fn sweep_orphans(
    data: PathBuf,
    groups: BTreeMap<u16, Arc<MetaService>>,
    count: u16,
    pool: RingPool,
    orphan_age: Duration,
) {
    let service = loop {
        let read = {
            let data = data.clone();
            tokio::task::spawn_blocking(move || strata_pool::node::owner(&data)).await
        };
        match read {
            Ok(Ok(Some(service))) => break service,
            Ok(Ok(None)) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "reading the node's owner"),
            Err(err) => tracing::warn!(error = %err, "reading the node's owner"),
        }
        tokio::time::sleep(OWNER_POLL).await;
    };
    for (group, member) in groups {
        let Some(tags) = strata_store::group_tags(usize::from(group) - 1, usize::from(count))
        else {
            continue;
        };
        let records = crate::orphan_sweep::Records::Member {
            leads: Arc::downgrade(&member),
            caught_up: Vec::new(),
        };
        crate::orphan_sweep::spawn_sweeper(
            records,
            tags,
            pool.clone(),
            service.clone(),
            orphan_age,
            crate::orphan_sweep::SweepCounts::new(group.to_string()),
        );
    }
}

/// Hands `pool` each newer ring the node writes to `path` (read off the
/// runtime, and only when the file changed: a ring may be large).
async fn follow_ring(pool: RingPool, path: PathBuf) {
    let mut seen = None;
    loop {
        tokio::time::sleep(RING_FOLLOW_INTERVAL).await;
        let path = path.clone();
        let read = tokio::task::spawn_blocking(move || read_ring_if_changed(&path, seen)).await;
        match read {
            Ok(Ok((changed, ring))) => {
                seen = changed;
                if let Some(ring) = ring
                    && let Err(err) = pool.set_ring(ring)
                {
                    tracing::warn!(error = %err, "the index groups' pool refused the node's ring");
                }
            }
            Ok(Err(err)) => tracing::warn!(error = %err, "reading the node's ring"),
            Err(err) => tracing::warn!(error = %err, "reading the node's ring"),
        }
    }
}

/// The ring at `path` unless its modification time is `seen`, with the
/// time it has now.
fn read_ring_if_changed(
    path: &Path,
    seen: Option<SystemTime>,
) -> anyhow::Result<(Option<SystemTime>, Option<Ring>)> {
    let modified = match std::fs::metadata(path) {
        Ok(metadata) => metadata.modified()?,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok((seen, None)),
        Err(err) => return Err(err.into()),
    };
    if seen == Some(modified) {
        return Ok((seen, None));
    }
    let ring = Ring::from_bytes(&std::fs::read(path)?)?;
    Ok((Some(modified), Some(ring)))
}

fn whole(status: StatusCode, text: impl Into<bytes::Bytes>) -> NodeResponse {
    let mut response = NodeResponse::new(Full::new(text.into()));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(count: usize) -> Vec<String> {
        (0..count).map(|n| format!("10.0.0.{n}:7000")).collect()
    }

    #[test]
    fn each_group_has_three_consecutive_members_and_every_node_holds_some() {
        let nodes = nodes(5);
        let first = group_members(&nodes, 1);
        assert_eq!(first.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(first[&2], "10.0.0.1:7000");
        // Past the end of the list, it wraps.
        let fifth = group_members(&nodes, 5);
        assert_eq!(fifth.keys().copied().collect::<Vec<_>>(), [1, 2, 5]);
        let mut held = [0; 5];
        for group in 1..=5 {
            for member in group_members(&nodes, group).keys() {
                held[*member as usize - 1] += 1;
            }
        }
        assert_eq!(held, [3; 5], "five groups over five nodes, three each");
    }

    #[test]
    fn fewer_nodes_than_members_make_every_node_a_member() {
        let two = nodes(2);
        for group in 1..=4 {
            assert_eq!(group_members(&two, group).len(), 2);
        }
        assert!(group_members(&[], 1).is_empty());
    }

    #[test]
    fn a_list_with_a_bad_or_repeated_entry_is_refused() {
        assert!(check_nodes(&nodes(3)).is_ok());
        for bad in [
            vec!["10.0.0.1".to_owned()],
            vec!["http://10.0.0.1:7000".to_owned()],
            vec!["10.0.0.1:port".to_owned()],
            vec!["10.0.0.1:7000".to_owned(), "10.0.0.1:7000".to_owned()],
        ] {
            assert!(check_nodes(&bad).is_err(), "{bad:?} taken");
        }
    }
}
