//! Index groups on storage nodes (`docs/design/index-on-the-ring.md`,
//! step 3): which nodes hold each group, and the members a `strata node`
//! runs for the groups placed on it, answering their calls through the
//! node's internal hook ([`strata_pool::node::InternalCalls`]).
//!
//! Placement follows one list, given alike to every node
//! (`--index-nodes`) and gateway (`cluster.index_nodes`): group `g` is
//! founded by [`MEMBERS_PER_GROUP`] consecutive nodes of the list from
//! position `g - 1`, each node a member by its position from 1. The list
//! never changes once the groups exist. A node lost for good is replaced
//! in its position (`--index-replaced OLD=NEW`, `cluster.index_replaced`):
//! the new node joins each group of the position under a member id of its
//! own (a Raft membership change, caught up before it votes) and then
//! takes the old one out ([`join_group`]). Placing groups by the ring, and
//! moving them at its rebalances, is not built.

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
fn check_nodes(nodes: &[String]) -> anyhow::Result<()> {
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

/// The nodes that hold the index groups: the list they were founded on,
/// and the nodes that replaced those lost for good, position by position.
#[derive(Clone, Debug)]
pub struct IndexNodes {
    /// Each position's names, the founding one first, the current last.
    names: Vec<Vec<String>>,
}

impl IndexNodes {
    /// The list `founding` (`HOST:PORT`s, each once) with the replacements
    /// `replaced` (`OLD=NEW` each, `OLD` a name of the list or of an
    /// earlier replacement, `NEW` a name never used: a node that lost its
    /// disk comes back under another address, or it would answer for the
    /// member it was).
    pub fn new(founding: &[String], replaced: &[String]) -> anyhow::Result<Self> {
        check_nodes(founding)?;
        let mut next: BTreeMap<&str, &str> = BTreeMap::new();
        let mut used: Vec<&str> = founding.iter().map(String::as_str).collect();
        for entry in replaced {
            let Some((old, new)) = entry.split_once('=') else {
                bail!("{entry:?} is not OLD=NEW");
            };
            check_nodes(&[new.to_owned()]).with_context(|| format!("in {entry:?}"))?;
            if next.insert(old, new).is_some() {
                bail!("{old} is replaced twice");
            }
            if used.contains(&new) {
                bail!("{new} is named before {entry:?}: a replacement takes a new address");
            }
            used.push(new);
        }
        let names: Vec<Vec<String>> = founding
            .iter()
            .map(|first| {
                let mut names = vec![first.clone()];
                // Each name is used once, so this ends within `used`.
                while let Some(new) = next.remove(names[names.len() - 1].as_str()) {
                    names.push(new.to_owned());
                }
                names
            })
            .collect();
        if let Some(old) = next.keys().next() {
            bail!("{old} is replaced, but it is no node of the list nor a replacement");
        }
        Ok(IndexNodes { names })
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The nodes that hold each position now.
    pub fn current(&self) -> Vec<String> {
        self.names
            .iter()
            .filter_map(|names| names.last().cloned())
            .collect()
    }

    /// The list the groups were founded on.
    pub fn founding(&self) -> Vec<String> {
        self.names
            .iter()
            .filter_map(|names| names.first().cloned())
            .collect()
    }

    /// Who holds the index groups, as the root records it
    /// ([`strata_store::Store::route_held_by`]) and each node's database
    /// too: a gateway or node given another founding list is refused at
    /// start (replacements leave it as it is).
    pub fn held_by(&self) -> String {
        format!("the storage nodes {}", self.founding().join(","))
    }

    /// Where `address` holds its position now, and the nodes that held it
    /// before (none for a founding node).
    fn position_of(&self, address: &str) -> Option<(usize, &[String])> {
        self.names.iter().enumerate().find_map(|(position, names)| {
            let (current, before) = names.split_last()?;
            (current == address).then_some((position, before))
        })
    }

    /// The node that replaced `address`, if it was replaced.
    fn replacement_of(&self, address: &str) -> Option<&str> {
        self.names.iter().find_map(|names| {
            let (current, before) = names.split_last()?;
            before
                .iter()
                .any(|name| name == address)
                .then_some(current.as_str())
        })
    }
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
    pub nodes: IndexNodes,
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

/// Starts this node's member of each index group placed on it: founding
/// the groups never started with the members [`group_members`] places, or,
/// for a node that replaced another, joining them ([`join_group`]).
pub async fn start(hosting: Hosting) -> anyhow::Result<BTreeMap<u16, Arc<MetaService>>> {
    let Some((position, replaced)) = hosting.nodes.position_of(&hosting.address) else {
        if let Some(by) = hosting.nodes.replacement_of(&hosting.address) {
            bail!(
                "this node ({}) was replaced by {by} (--index-replaced): it holds no index group",
                hosting.address
            );
        }
        bail!(
            "this node ({}) is not among --index-nodes {:?}: name it as the ring does",
            hosting.address,
            hosting.nodes.current()
        );
    };
    let founding = hosting.nodes.founding();
    // The position's member in the groups founded on the list.
    let founding_member = position as u64 + 1;
    let member = match replaced.is_empty() {
        true => {
            refuse_member_file(&hosting.data)?;
            founding_member
        }
        false => replacing_member(&hosting.data, &hosting.address)?,
    };
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
    root.hold_index_groups_without_root(hosting.groups, hosting.nodes.held_by())
        .await
        .context("readying the index groups' database (--index-groups and --index-nodes are kept for good once given)")?;
    let transport = Arc::new(HttpRaftTransport::new(
        hosting.secret.clone(),
        hosting.tls.as_ref(),
    ));
    let current = hosting.nodes.current();
    let log = MetaLog::open(&hosting.data.join("raft"))
        .map_err(|why| anyhow::anyhow!("opening the index groups' log: {why}"))?;
    let mut services = BTreeMap::new();
    for group in 1..=hosting.groups {
        let members = group_members(&founding, group);
        if !members.contains_key(&founding_member) {
            continue;
        }
        let replica = root
            .open_group(group, config.clone())
            .with_context(|| format!("opening index group {group}'s replica"))?;
        let joining = match replaced.is_empty() {
            true => Joining::Founding(members),
            false => Joining::Added,
        };
        let service = MetaService::start_group(
            member,
            GroupId::Index(group),
            joining,
            &log,
            replica,
            transport.clone(),
            Tuning::default(),
        )
        .await
        .map_err(|why| anyhow::anyhow!("starting index group {group}: {why}"))?;
        services.insert(group, service);
        if !replaced.is_empty() {
            let others = group_members(&current, group)
                .into_values()
                .filter(|address| *address != hosting.address)
                .collect();
            tokio::spawn(join_group(Joiner {
                client: strata_pool::NodeClient::new(
                    hosting.secret.clone(),
                    hosting.tls.as_ref(),
                    JOIN_CALL_TIMEOUT,
                ),
                group,
                member,
                address: hosting.address.clone(),
                others,
                replaced: replaced.to_vec(),
            }));
        }
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

/// How long a starting node waits for each other member's answer to
/// whether it was heard from before.
const LOST_DATA_PROBE_WAIT: Duration = Duration::from_secs(3);

/// Refuses to start the member of a founding node at `position` with an
/// empty log when a group's leader has heard that member acknowledge
/// entries: its data was lost (a new disk at the old address), and it
/// would vote and acknowledge again as the member it was, with none of
/// what it promised. A node that never took part yet (the last of a new
/// cluster to start) is not refused. Leaders elected since the member
/// last answered cannot tell, nor can members that do not answer or do
/// not lead (a whole cluster starting again at once): this catches the
/// common case, not every one.
///
/// Called before the node serves anything, so that a node refused never
/// took a request.
pub async fn refuse_lost_data(hosting: &Hosting) -> anyhow::Result<()> {
    let Some((position, [])) = hosting.nodes.position_of(&hosting.address) else {
        // A replacement (a member of its own), or refused by `start`.
        return Ok(());
    };
    if hosting.data.join("raft").exists() {
        return Ok(());
    }
    let transport = HttpRaftTransport::new(hosting.secret.clone(), hosting.tls.as_ref());
    let (founding, current) = (hosting.nodes.founding(), hosting.nodes.current());
    let member = position as u64 + 1;
    // Every group's other members at once: the node serves nothing until
    // they answered or the wait passed.
    let mut asked = Vec::new();
    for group in 1..=hosting.groups {
        let members = group_members(&founding, group);
        if !members.contains_key(&member) {
            continue;
        }
        for other in members.keys().filter(|other| **other != member) {
            let Some(address) = current.get(*other as usize - 1) else {
                continue;
            };
            let transport = &transport;
            asked.push(async move {
                let heard = strata_meta::leader_heard_from(
                    transport,
                    address,
                    GroupId::Index(group),
                    member,
                    LOST_DATA_PROBE_WAIT,
                )
                .await;
                (group, address, heard)
            });
        }
    }
    let answers = futures::future::join_all(asked).await;
    if let Some((group, address, _)) = answers.iter().find(|(_, _, heard)| *heard == Some(true)) {
        bail!(
            "index group {group}'s leader ({address}) has heard this node's member \
             before, but its log is empty: its data was lost. Start a node at a new \
             address in its place (--index-replaced {}=NEW)",
            current[position]
        );
    }
    Ok(())
}

/// Where a node that replaced another keeps its member id in the groups.
const MEMBER_FILE: &str = "index-member";

/// The member id of a node that replaced another, drawn at its first start
/// and kept with the node's address: ids above any position's (and within
/// what JSON numbers hold exactly), and new for each data directory, so
/// that a replacement that lost its disk is a new member. A data directory
/// moved to another address is refused: its member joined at the old one.
fn replacing_member(data: &Path, address: &str) -> anyhow::Result<u64> {
    let path = data.join(MEMBER_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let text = text.trim();
            // A bare id: written by the first build of replacements, which
            // kept no address; it is this node's from now on.
            if let Ok(member) = text.parse::<u64>() {
                let kept = format!("{member} {address}\n");
                crate::ring_cli::write_atomically(&path, kept.as_bytes())?;
                return Ok(member);
            }
            let kept = text
                .split_once(' ')
                .and_then(|(id, at)| Some((id.parse::<u64>().ok()?, at.trim())));
            let Some((member, at)) = kept else {
                bail!("{} is not a member id and an address", path.display());
            };
            if at != address {
                bail!(
                    "{} holds member {member} of the index groups at {at}, not {address}: \
                     a replacement at a new address starts on a data directory of its own",
                    data.display()
                );
            }
            Ok(member)
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            // A log without the file is a founding member's.
            if data.join("raft").exists() {
                bail!(
                    "{} holds the index groups of a founding node: a replacement starts on a \
                     data directory of its own",
                    data.display()
                );
            }
            let member = rand::random_range(1u64 << 32..1u64 << 53);
            // The node's own server may not have made the directory yet.
            std::fs::create_dir_all(data).with_context(|| format!("making {}", data.display()))?;
            let kept = format!("{member} {address}\n");
            crate::ring_cli::write_atomically(&path, kept.as_bytes())?;
            Ok(member)
        }
        Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
    }
}

/// Refuses to found groups over the data directory of a replacement: its
/// log holds another member.
fn refuse_member_file(data: &Path) -> anyhow::Result<()> {
    match data.join(MEMBER_FILE).exists() {
        true => bail!(
            "{} is a replacement's (it has {MEMBER_FILE}): start it with --index-replaced as before",
            data.display()
        ),
        false => Ok(()),
    }
}

/// How long one call of a join waits for its answer: adding a member
/// returns once the member caught up (a snapshot and the log after it);
/// a call cut short is made again, and finds what was done.
const JOIN_CALL_TIMEOUT: Duration = Duration::from_secs(150);

/// A node's member joining an index group in the place of the nodes it
/// replaced.
struct Joiner {
    client: strata_pool::NodeClient,
    group: u16,
    member: u64,
    address: String,
    /// The group's other members, where the current list places them: the
    /// leader answers, the others name it.
    others: Vec<String>,
    /// The nodes that held this position before: their members leave.
    replaced: Vec<String>,
}

/// Adds the node's member to its group, a learner until caught up, and
/// then, in one joint change, makes it a voter as the members of the nodes
/// it replaced leave: while the change is made, a majority of the old
/// voters and one of the new must agree, so the group never needs more of
/// its live members than before. Each step is
/// done already when run again, so a node restarted half way finishes;
/// refusals (no leader yet, a change under way) are retried.
async fn join_group(mut joiner: Joiner) {
    let mut pause = Duration::from_secs(1);
    loop {
        match join_once(&joiner).await {
            Ok(removed) => {
                tracing::info!(
                    group = joiner.group,
                    member = joiner.member,
                    ?removed,
                    "joined the index group in the place of the nodes replaced"
                );
                return;
            }
            Err(err) => tracing::warn!(
                group = joiner.group,
                error = format!("{err:#}"),
                "joining the index group; trying again"
            ),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(30));
        // Another member first next time: one that takes calls and never
        // answers must not hold up every attempt.
        joiner.others.rotate_left(1);
    }
}

/// One attempt of [`join_group`]: the ids of the members it took out.
async fn join_once(joiner: &Joiner) -> anyhow::Result<Vec<u64>> {
    use strata_meta::MembershipChange;
    if joiner.others.is_empty() {
        bail!("no other member holds the group: a node that held it alone cannot be replaced");
    }
    let ask = |change: &MembershipChange| {
        let body = serde_json::to_vec(change).map(bytes::Bytes::from);
        async move {
            crate::cluster_cli::ask_leader(
                &joiner.client,
                joiner.others.clone(),
                joiner.group,
                body?,
                JOIN_CALL_TIMEOUT,
            )
            .await
        }
    };
    // The members of the nodes it replaced leave as this one comes to
    // vote, in one joint change; and any other member at this address, of
    // an earlier data directory, which this node does not answer for
    // (`MetaService::handle_rpc`).
    let shown = ask(&MembershipChange::Show)
        .await
        .context("asking the group's members")?;
    let leaving_of = |membership: &strata_meta::Membership| -> Vec<u64> {
        (membership.members.iter())
            .chain(&membership.learners)
            .filter(|(id, address)| {
                **id != joiner.member
                    && (joiner.replaced.contains(address) || **address == joiner.address)
            })
            .map(|(id, _)| *id)
            .collect()
    };
    let mut left = leaving_of(&shown);
    let joined = ask(&MembershipChange::Add {
        id: joiner.member,
        address: joiner.address.clone(),
        replacing: left.clone(),
    })
    .await
    .context("adding this node's member")?;
    // A leader of an earlier build only adds: the others leave one by one.
    let leaving = leaving_of(&joined);
    for id in &leaving {
        ask(&MembershipChange::Remove { id: *id })
            .await
            .with_context(|| format!("taking out member {id} of a node replaced"))?;
    }
    left.extend(leaving);
    left.sort_unstable();
    left.dedup();
    Ok(left)
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

    #[test]
    fn replacements_follow_each_position_and_keep_the_founding_list() {
        let founding = nodes(3);
        let entries = ["10.0.0.1:7000=10.0.0.9:7000", "10.0.0.9:7000=10.0.0.8:7000"];
        let mut entries: Vec<String> = entries.iter().map(|entry| entry.to_string()).collect();
        let listed = IndexNodes::new(&founding, &entries).unwrap();
        assert_eq!(
            listed.current(),
            ["10.0.0.0:7000", "10.0.0.8:7000", "10.0.0.2:7000"]
        );
        assert_eq!(listed.founding(), founding);
        let unreplaced = IndexNodes::new(&founding, &[]).unwrap();
        assert_eq!(listed.held_by(), unreplaced.held_by());
        let before = ["10.0.0.1:7000".to_owned(), "10.0.0.9:7000".to_owned()];
        assert_eq!(listed.position_of("10.0.0.8:7000"), Some((1, &before[..])));
        assert_eq!(listed.position_of("10.0.0.0:7000"), Some((0, &[][..])));
        assert_eq!(listed.position_of("10.0.0.9:7000"), None);
        assert_eq!(
            listed.replacement_of("10.0.0.1:7000"),
            Some("10.0.0.8:7000")
        );
        assert_eq!(listed.replacement_of("10.0.0.0:7000"), None);
        // The order of the entries does not matter.
        entries.reverse();
        let reversed = IndexNodes::new(&founding, &entries).unwrap();
        assert_eq!(reversed.current(), listed.current());
    }

    #[test]
    fn a_replacement_that_reuses_a_name_or_replaces_no_node_is_refused() {
        let founding = nodes(3);
        for (entries, why) in [
            (vec!["10.0.0.1:7000=10.0.0.2:7000"], "new address"),
            (vec!["10.0.0.1:7000=10.0.0.1:7000"], "new address"),
            (vec!["10.0.0.1:7000"], "OLD=NEW"),
            (vec!["10.0.0.1:7000=10.0.0.9"], "HOST:PORT"),
            (vec!["10.0.0.7:7000=10.0.0.9:7000"], "no node of the list"),
            (
                vec!["10.0.0.1:7000=10.0.0.8:7000", "10.0.0.1:7000=10.0.0.9:7000"],
                "replaced twice",
            ),
            (
                vec!["10.0.0.1:7000=10.0.0.8:7000", "10.0.0.2:7000=10.0.0.8:7000"],
                "new address",
            ),
            // A cycle reached from no node of the list.
            (
                vec!["10.0.0.8:7000=10.0.0.9:7000", "10.0.0.9:7000=10.0.0.8:7000"],
                "no node of the list",
            ),
        ] {
            let entries: Vec<String> = entries.iter().map(|entry| entry.to_string()).collect();
            let refused = format!("{:#}", IndexNodes::new(&founding, &entries).unwrap_err());
            assert!(refused.contains(why), "{entries:?}: {refused}");
        }
    }

    #[test]
    fn a_replacement_draws_its_member_id_once_and_founding_data_stays_founding() {
        let dir = tempfile::tempdir().unwrap();
        let member = replacing_member(dir.path(), "10.0.0.9:7000").unwrap();
        assert!(member > u64::from(u16::MAX), "{member} may be a position's");
        assert!(member < 1 << 53, "{member} is not a JSON number");
        assert_eq!(
            replacing_member(dir.path(), "10.0.0.9:7000").unwrap(),
            member
        );
        // Moved to another address, the directory is not that member.
        let moved = replacing_member(dir.path(), "10.0.0.8:7000").unwrap_err();
        assert!(moved.to_string().contains("not 10.0.0.8:7000"), "{moved}");
        // A bare id, as the first build kept it, takes the address.
        std::fs::write(dir.path().join(MEMBER_FILE), "4611686018427387904\n").unwrap();
        let kept = replacing_member(dir.path(), "10.0.0.9:7000").unwrap();
        assert_eq!(kept, 1 << 62);
        assert!(replacing_member(dir.path(), "10.0.0.8:7000").is_err());
        let refused = refuse_member_file(dir.path()).unwrap_err();
        assert!(
            refused.to_string().contains("--index-replaced"),
            "{refused}"
        );
        // A founding member's log, without the file: not taken over.
        let founding = tempfile::tempdir().unwrap();
        std::fs::create_dir(founding.path().join("raft")).unwrap();
        assert!(refuse_member_file(founding.path()).is_ok());
        let refused = replacing_member(founding.path(), "10.0.0.9:7000").unwrap_err();
        assert!(refused.to_string().contains("founding node"), "{refused}");
    }
}
