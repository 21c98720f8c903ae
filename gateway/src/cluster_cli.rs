//! `strata node` (a storage node), `strata status` (the cluster's health,
//! asked of every node the ring names) and `strata metadata` (the members of
//! a replicated metadata service, asked of its leader). The node itself is
//! `strata_pool::node`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use strata_meta::{Membership, MembershipChange};
use strata_pool::node::{NodeConfig, ReplicatorConfig};
use strata_pool::wire::{ClusterSecret, NodeStatus};
use strata_pool::{ClusterTls, NodeClient};
use strata_ring::Ring;

#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// Data directory: extents, tombstones, the ring.
    #[arg(long, env = "STRATA_DATA")]
    data: PathBuf,
    /// Address to listen on, `HOST:PORT`.
    #[arg(long, env = "STRATA_LISTEN")]
    listen: String,
    /// The address the ring names this node by (default: --listen).
    #[arg(long)]
    advertise: Option<String>,
    /// File holding the cluster secret.
    #[arg(long, env = "STRATA_CLUSTER_SECRET_FILE")]
    cluster_secret_file: PathBuf,
    /// PEM certificate chain: the node serves TLS only, presenting it (it
    /// must name the address the ring gives the node).
    #[arg(long, env = "STRATA_TLS_CERT", requires_all = ["tls_key", "cluster_tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "STRATA_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// PEM file of the cluster's CA, when members speak TLS: nodes and
    /// members are called over TLS and must present a certificate it signed.
    #[arg(long, env = "STRATA_CLUSTER_TLS_CA", requires = "tls_cert")]
    cluster_tls_ca: Option<PathBuf>,
    /// A ring to start with; gateways and peers hand newer ones over.
    #[arg(long, env = "STRATA_RING")]
    ring: Option<PathBuf>,
    /// Seconds between replication passes.
    #[arg(long, default_value_t = 30)]
    replication_interval: u64,
    /// MiB per second the auditor reads to verify extents.
    #[arg(long, default_value_t = 10)]
    audit_mib_per_sec: u64,
    /// Seconds between two audits of every extent.
    #[arg(long, default_value_t = 60)]
    audit_pause: u64,
    /// Connections held open at once (default: half the open file limit).
    #[arg(long, env = "STRATA_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Hold index groups: how many the cluster has (its gateways'
    /// `index_groups`). With --index-nodes.
    #[arg(long, env = "STRATA_INDEX_GROUPS", requires = "index_nodes")]
    index_groups: Option<u16>,
    /// The storage nodes that hold the index groups, comma-separated, as the
    /// ring names them and in the gateways' order (`cluster.index_nodes`):
    /// this node runs its member of each group placed on it.
    #[arg(
        long,
        env = "STRATA_INDEX_NODES",
        value_delimiter = ',',
        requires = "index_groups"
    )]
    index_nodes: Vec<String>,
    /// Nodes of --index-nodes lost for good and the nodes that replaced
    /// them, `OLD=NEW`, comma-separated (the gateways'
    /// `cluster.index_replaced`): a node named NEW joins the groups of OLD's
    /// position and takes OLD's member out of them. --index-nodes stays as
    /// the groups were founded.
    #[arg(
        long,
        env = "STRATA_INDEX_REPLACED",
        value_delimiter = ',',
        requires = "index_nodes"
    )]
    index_replaced: Vec<String>,
    /// With --index-groups: seconds a replaced object's extents are kept
    /// for reads already streaming them (the gateways' `gc_grace_secs`).
    #[arg(long, env = "STRATA_GC_GRACE_SECS", default_value_t = 600)]
    gc_grace_secs: u64,
    /// With --index-groups: seconds after which an extent of a group's
    /// buckets that no record names is deleted by the group's leader (the
    /// gateways' `cluster.orphan_age_secs`; longer than any upload takes).
    #[arg(long, env = "STRATA_ORPHAN_AGE_SECS", default_value_t = 24 * 3600)]
    orphan_age_secs: u64,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The ring file: its devices name the nodes to ask.
    #[arg(long, env = "STRATA_RING")]
    ring: PathBuf,
    /// File holding the cluster secret.
    #[arg(long, env = "STRATA_CLUSTER_SECRET_FILE")]
    cluster_secret_file: PathBuf,
    /// PEM file of the cluster's CA, when members speak TLS: nodes and
    /// members are called over TLS and must present a certificate it signed.
    #[arg(long, env = "STRATA_CLUSTER_TLS_CA")]
    cluster_tls_ca: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn load_secret(path: &Path) -> anyhow::Result<ClusterSecret> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the cluster secret {}", path.display()))?;
    ClusterSecret::new(text.lines().next().unwrap_or(""))
        .map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))
}

/// TLS between members as configured: trusting the CA in `ca`, and
/// presenting `serving` (certificate chain, key) when given; `None` without
/// a CA (members talk plain HTTP).
pub fn load_cluster_tls(
    ca: Option<&Path>,
    serving: Option<(&Path, &Path)>,
) -> anyhow::Result<Option<ClusterTls>> {
    let Some(ca) = ca else {
        return Ok(None);
    };
    let mut tls = ClusterTls::trusting(ca)?;
    if let Some((cert, key)) = serving {
        tls = tls.presenting(cert, key)?;
    }
    Ok(Some(tls))
}

pub fn load_ring(path: &Path) -> anyhow::Result<Ring> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading the ring {}", path.display()))?;
    Ring::from_bytes(&bytes).with_context(|| format!("loading the ring {}", path.display()))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("strata")
        .build()?)
}

pub fn node(args: NodeArgs) -> anyhow::Result<()> {
    let listen = args
        .listen
        .parse()
        .with_context(|| format!("listen address {:?} is not HOST:PORT", args.listen))?;
    let ring = args.ring.as_deref().map(load_ring).transpose()?;
    let secret = load_secret(&args.cluster_secret_file)?;
    let tls = load_cluster_tls(
        args.cluster_tls_ca.as_deref(),
        args.tls_cert.as_deref().zip(args.tls_key.as_deref()),
    )?;
    let hosting = match args.index_groups {
        None | Some(0) => {
            // Its members would be missing from their groups, silently.
            if args.data.join("raft").exists() {
                anyhow::bail!(
                    "{} holds index groups (raft): start the node with --index-groups and \
                     --index-nodes as before",
                    args.data.display()
                );
            }
            None
        }
        Some(groups) => {
            if groups > crate::config::MAX_INDEX_GROUPS {
                anyhow::bail!(
                    "--index-groups must be at most {}",
                    crate::config::MAX_INDEX_GROUPS
                );
            }
            let nodes = crate::node_index::IndexNodes::new(&args.index_nodes, &args.index_replaced)
                .context("--index-nodes and --index-replaced")?;
            if args.orphan_age_secs < 2 {
                anyhow::bail!("--orphan-age-secs must be at least 2");
            }
            // The ring the node starts with, or the one it kept.
            let ring = match &ring {
                Some(ring) => ring.clone(),
                None => load_ring(&args.data.join("ring")).context(
                    "a node that holds index groups needs a ring (--ring) for their stores",
                )?,
            };
            Some(crate::node_index::Hosting {
                data: args.data.clone(),
                address: args
                    .advertise
                    .clone()
                    .unwrap_or_else(|| args.listen.clone()),
                nodes,
                groups,
                secret: secret.clone(),
                tls: tls.clone(),
                ring,
                gc_grace: Duration::from_secs(args.gc_grace_secs),
                orphan_age: Duration::from_secs(args.orphan_age_secs),
            })
        }
    };
    let served = Arc::new(std::sync::OnceLock::new());
    let config = NodeConfig {
        data: args.data,
        listen,
        advertise: args.advertise,
        secret: secret.clone(),
        tls: tls.clone(),
        cluster_id: ring.as_ref().map(|ring| ring.cluster_id().to_owned()),
        ring,
        max_connections: args.max_connections,
        replicator: ReplicatorConfig {
            interval: Duration::from_secs(args.replication_interval.max(1)),
            audit_bytes_per_sec: args.audit_mib_per_sec.max(1) * 1024 * 1024,
            audit_pause: Duration::from_secs(args.audit_pause),
            ..ReplicatorConfig::default()
        },
        internal: hosting
            .is_some()
            .then(|| crate::node_index::calls(served.clone())),
    };
    runtime()?.block_on(async {
        if let Some(hosting) = &hosting {
            crate::node_index::refuse_lost_data(hosting).await?;
        }
        let serving = strata_pool::node::run(config);
        tokio::pin!(serving);
        let mut groups = Vec::new();
        if let Some(hosting) = hosting {
            // While the node serves: the other members' calls reach it
            // as their groups start (answered 503 until this one's are up).
            let started = tokio::select! {
                served = &mut serving => return served,
                started = crate::node_index::start(hosting) => started?,
            };
            groups = started.values().cloned().collect();
            let internal = crate::node_index::serve(secret, tls.is_some(), started);
            if served.set(internal).is_err() {
                anyhow::bail!("the index groups started twice");
            }
        }
        let stopped = tokio::select! {
            served = &mut serving => served,
            _ = tokio::signal::ctrl_c() => Ok(()),
        };
        for group in groups {
            group.shutdown().await;
        }
        stopped
    })
}

/// One node's answer, or why there was none.
#[derive(Serialize)]
struct NodeReport {
    node: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<NodeStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
struct ClusterReport {
    ring_version: u64,
    nodes_up: usize,
    nodes: usize,
    /// Every node answered, holds this ring (or newer), and its last
    /// replication pass found nothing to send and held no handoff data.
    settled: bool,
    /// Partitions a node's last pass found a fellow replica short of (each
    /// counted by every replica that noticed).
    out_of_sync_partitions: u64,
    /// Bytes held on nodes that are not primaries for them, and bytes
    /// primaries lack that another primary holds (estimated from partition
    /// sizes: a replaced disk, copies lost).
    bytes_to_move: u64,
    /// The index groups the nodes hold (`strata node --index-groups`), as
    /// the members that answered see them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    index_groups: Vec<IndexGroupReport>,
    /// Every index group has a leader, and each member that answered has
    /// applied as much as the one furthest on, none stopped (absent
    /// without groups).
    #[serde(skip_serializing_if = "Option::is_none")]
    index_groups_caught_up: Option<bool>,
    reports: Vec<NodeReport>,
}

/// One index group as the members on the nodes that answered see it.
#[derive(Serialize)]
struct IndexGroupReport {
    group: u16,
    /// The leader most of those members follow.
    leader: Option<u64>,
    /// The last entry the member furthest on applied.
    last_applied: u64,
    members: Vec<GroupMemberReport>,
    /// The group's voters, as the members that answered know them (all of
    /// their views together: one that has not applied a change yet adds
    /// the voters it still knows).
    voters: Vec<u64>,
    /// Voters of the group (as the members that answered know them) that
    /// did not answer: their nodes are down, or do not run the group.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    missing: Vec<u64>,
}

#[derive(Serialize)]
struct GroupMemberReport {
    node: String,
    id: u64,
    last_applied: u64,
    hibernating: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stopped: Option<String>,
}

impl IndexGroupReport {
    fn caught_up(&self) -> bool {
        self.leader.is_some()
            && self.missing.is_empty()
            && self
                .members
                .iter()
                .all(|member| member.stopped.is_none() && member.last_applied == self.last_applied)
    }
}

/// Whether every index group is caught up (`None`: the nodes hold none).
fn index_groups_caught_up(groups: &[IndexGroupReport]) -> Option<bool> {
    (!groups.is_empty()).then(|| groups.iter().all(IndexGroupReport::caught_up))
}

/// The index groups the nodes of `reports` hold, by group number.
fn index_group_reports(reports: &[NodeReport]) -> Vec<IndexGroupReport> {
    let mut groups: std::collections::BTreeMap<u16, Vec<(String, strata_meta::MetaStatus)>> =
        Default::default();
    for report in reports {
        let Some(views) = report
            .status
            .as_ref()
            .and_then(|status| status.index_groups.clone())
        else {
            continue;
        };
        let Ok(views) = serde_json::from_value::<
            std::collections::BTreeMap<u16, strata_meta::MetaStatus>,
        >(views) else {
            eprintln!("{}: index group views not read", report.node);
            continue;
        };
        for (group, view) in views {
            groups
                .entry(group)
                .or_default()
                .push((report.node.clone(), view));
        }
    }
    groups
        .into_iter()
        .map(|(group, views)| {
            let mut leaders: Vec<u64> = views.iter().filter_map(|(_, view)| view.leader).collect();
            leaders.sort_unstable();
            let leader = leaders
                .chunk_by(|one, other| one == other)
                .max_by_key(|same| same.len())
                .map(|same| same[0]);
            let voters: std::collections::BTreeSet<u64> = views
                .iter()
                .flat_map(|(_, view)| view.voters.iter().copied())
                .collect();
            let missing = voters
                .iter()
                .copied()
                .filter(|voter| !views.iter().any(|(_, view)| view.id == *voter))
                .collect();
            let members: Vec<GroupMemberReport> = views
                .into_iter()
                .map(|(node, view)| GroupMemberReport {
                    node,
                    id: view.id,
                    last_applied: view.last_applied.unwrap_or(0),
                    hibernating: view.hibernating,
                    stopped: view.stopped,
                })
                .collect();
            IndexGroupReport {
                group,
                leader,
                last_applied: members.iter().map(|m| m.last_applied).max().unwrap_or(0),
                members,
                voters: voters.into_iter().collect(),
                missing,
            }
        })
        .collect()
}

#[derive(Debug, clap::Args)]
pub struct MetadataArgs {
    /// Members to ask, `HOST:PORT` (or `ID=HOST:PORT`), comma-separated, as
    /// `strata serve --metadata` names them; the leader answers.
    #[arg(long, env = "STRATA_METADATA")]
    metadata: String,
    /// File holding the cluster secret.
    #[arg(long, env = "STRATA_CLUSTER_SECRET_FILE")]
    cluster_secret_file: PathBuf,
    /// PEM file of the cluster's CA, when members speak TLS: nodes and
    /// members are called over TLS and must present a certificate it signed.
    #[arg(long, env = "STRATA_CLUSTER_TLS_CA")]
    cluster_tls_ca: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    command: Option<MetadataCommand>,
}

#[derive(Debug, clap::Subcommand)]
pub enum MetadataCommand {
    /// The members and the leader (the default).
    Show,
    /// Adds member ID at ADDRESS, a gateway started with `--metadata-member
    /// ID --metadata-join`: it is sent the log, then votes (in every index
    /// group too). Run again, it finishes a change cut short.
    Add { id: u64, address: String },
    /// Takes member ID out of the group (and out of every index group).
    /// Run again, it finishes a change cut short.
    Remove { id: u64 },
}

pub fn metadata(args: MetadataArgs) -> anyhow::Result<()> {
    let change = match args.command.unwrap_or(MetadataCommand::Show) {
        MetadataCommand::Show => MembershipChange::Show,
        MetadataCommand::Add { id, address } => MembershipChange::Add {
            id,
            address,
            replacing: Vec::new(),
        },
        MetadataCommand::Remove { id } => MembershipChange::Remove { id },
    };
    // Adding waits for the new member to catch up (2 minutes at most).
    let client = NodeClient::new(
        load_secret(&args.cluster_secret_file)?,
        load_cluster_tls(args.cluster_tls_ca.as_deref(), None)?.as_ref(),
        Duration::from_secs(150),
    );
    crate::config::refuse_https_without_ca(&args.metadata, args.cluster_tls_ca.is_some())?;
    let members = crate::config::parse_metadata_members(&args.metadata)?;
    let addresses: Vec<String> = members.iter().map(|(_, address)| address.clone()).collect();
    let changes = !matches!(change, MembershipChange::Show);
    let body = bytes::Bytes::from(serde_json::to_vec(&change)?);
    let patience = match changes {
        true => CHANGE_PATIENCE,
        false => SHOW_PATIENCE,
    };
    let runtime = runtime()?;
    let asked = ask_leader(&client, addresses.clone(), 0, body.clone(), patience);
    let answered = match changes {
        // A change waits for a new member to catch up: not bounded here.
        true => runtime.block_on(asked),
        false => runtime.block_on(shown_within(asked)),
    };
    let membership = match answered {
        Ok(membership) => membership,
        // No leader answered (none known, none with a majority, or a
        // refusal): what the operator came to see is each member's view.
        Err(err) if !changes => {
            let views = runtime.block_on(member_views(&client, members, 0));
            print_member_views(args.json, &err, &views)?;
            return Err(err);
        }
        Err(err) => return Err(err),
    };
    let (groups, stopped) = runtime.block_on(async {
        // The members run one Raft group per index group too: each changes
        // alike, at its own leader, after the root's, and each is shown.
        let mut groups = Vec::new();
        if !changes {
            // All at once, and the members' views with them: a group
            // without a leader takes its whole patience to say so, and is
            // what the operator came to see.
            let asked = (1..=membership.index_groups).map(|group| {
                let (client, addresses, body) = (&client, addresses.clone(), body.clone());
                async move {
                    let asked = ask_leader(client, addresses, group, body, patience);
                    let answer = shown_within(asked).await;
                    (group, answer)
                }
            });
            let stopped = stopped_replicas(&client, &membership);
            return anyhow::Ok(futures::join!(futures::future::join_all(asked), stopped));
        }
        // Every group is tried even when one refuses (an election under way
        // there), so that as few as possible stay apart until the command
        // is run again.
        let mut refused = Vec::new();
        for group in 1..=membership.index_groups {
            match ask_leader(&client, addresses.clone(), group, body.clone(), patience).await {
                Ok(answer) => groups.push((group, Ok(answer))),
                Err(err) => refused.push(format!("index group {group}: {err:#}")),
            }
        }
        if !refused.is_empty() {
            anyhow::bail!(
                "the root group changed, but not every index group did; run the same command \
                 again to finish:\n  {}",
                refused.join("\n  ")
            );
        }
        anyhow::Ok((groups, Vec::new()))
    })?;
    let unanswered = groups.iter().filter(|(_, answer)| answer.is_err()).count();
    let outcome = fail_if_any(unanswered, "index groups did not answer")
        .and(fail_if_any(stopped.len(), "replicas stopped"));
    if args.json {
        let mut shown = serde_json::to_value(&membership)?;
        if let Some(shown) = shown.as_object_mut()
            && !groups.is_empty()
        {
            let groups = groups
                .iter()
                .map(|(group, answer)| {
                    let mut entry = match answer {
                        Ok(membership) => serde_json::to_value(membership)?,
                        Err(err) => serde_json::json!({ "error": format!("{err:#}") }),
                    };
                    if let Some(entry) = entry.as_object_mut() {
                        entry.insert("group".into(), (*group).into());
                    }
                    anyhow::Ok(entry)
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            shown.insert("groups".into(), groups.into());
        }
        if let Some(shown) = shown.as_object_mut()
            && !stopped.is_empty()
        {
            let stopped = stopped.iter().map(|(member, group, why)| {
                serde_json::json!({ "member": member, "group": group, "why": why })
            });
            shown.insert("stopped".into(), stopped.collect());
        }
        println!("{}", serde_json::to_string_pretty(&shown)?);
        return outcome;
    }
    // VERSION: the log version each member runs ("?": it did not say).
    println!("{:<8} {:<24} {:<8} ROLE", "MEMBER", "ADDRESS", "VERSION");
    let voters = membership.members.iter().map(|member| (member, "voter"));
    let learners = membership.learners.iter().map(|member| (member, "learner"));
    for ((id, address), role) in voters.chain(learners) {
        let role = match Some(*id) == membership.leader {
            true => "leader",
            false => role,
        };
        let runs = membership
            .runs
            .get(id)
            .map_or_else(|| "?".to_owned(), u32::to_string);
        println!("{id:<8} {address:<24} {runs:<8} {role}");
    }
    println!("\n{}", log_version_line(&membership));
    if !groups.is_empty() {
        println!();
        print!("{}", group_table(&membership, &groups));
    }
    if !stopped.is_empty() {
        println!();
        print!("{}", stopped_lines(&stopped));
    }
    outcome
}

/// A member's replica of a group (0: the root group) that stopped, and why.
type StoppedReplica = (u64, u16, String);

/// Every member's replica, of every group, that stopped: each member is
/// asked its own view of each group, all at once. A member that does not
/// answer is not counted: the group tables show what is unreachable.
async fn stopped_replicas(client: &NodeClient, membership: &Membership) -> Vec<StoppedReplica> {
    let members: Vec<(u64, String)> = (membership.members.iter())
        .chain(&membership.learners)
        .map(|(id, address)| (*id, address.clone()))
        .collect();
    let asked = (0..=membership.index_groups).map(|group| {
        let members = members.clone();
        async move { (group, member_views(client, members, group).await) }
    });
    let mut stopped = Vec::new();
    for (group, views) in futures::future::join_all(asked).await {
        for (member, _, view) in views {
            if let Ok(strata_meta::MetaStatus {
                stopped: Some(why), ..
            }) = view
            {
                stopped.push((member, group, why));
            }
        }
    }
    stopped
}

/// What a show prints of replicas that stopped.
fn stopped_lines(stopped: &[StoppedReplica]) -> String {
    let mut out = String::new();
    for (member, group, why) in stopped {
        let group = match group {
            0 => "the root group".to_owned(),
            group => format!("index group {group}"),
        };
        let _ = writeln!(
            out,
            "member {member}'s replica of {group} stopped: {why} (restart the member; if it \
             stops again, remove it and add it again)"
        );
    }
    out
}

/// The root group's log version, and what it waits for while a member
/// runs a newer one.
fn log_version_line(membership: &Membership) -> String {
    let version = membership.log_version;
    let newest = membership.runs.values().copied().max().unwrap_or(version);
    match version < newest {
        false => format!("log version {version}"),
        true => format!(
            "log version {version}: raised to {newest} once every member runs it (VERSION \
             above), within seconds"
        ),
    }
}

/// Fails a show that found `count` of something wrong (index groups
/// without a leader to answer, replicas stopped: `what`), once everything
/// is printed.
fn fail_if_any(count: usize, what: &str) -> anyhow::Result<()> {
    match count {
        0 => Ok(()),
        count => anyhow::bail!("{count} {what}"),
    }
}

/// Each index group's leader and members, beside the root group's: a
/// group whose members differ was left behind by a change cut short.
fn group_table(root: &Membership, groups: &[(u16, anyhow::Result<Membership>)]) -> String {
    let ids = |members: &strata_meta::Members| match members.is_empty() {
        true => "-".to_owned(),
        false => members
            .keys()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(","),
    };
    let mut out = format!(
        "{:<12} {:<8} {:<16} LEARNERS\n",
        "INDEX GROUP", "LEADER", "VOTERS"
    );
    for (group, answer) in groups {
        let membership = match answer {
            Ok(membership) => membership,
            Err(err) => {
                let _ = writeln!(out, "{group:<12} -        unreachable: {err:#}");
                continue;
            }
        };
        let leader = membership
            .leader
            .map_or_else(|| "-".to_owned(), |leader| leader.to_string());
        let (voters, learners) = (ids(&membership.members), ids(&membership.learners));
        let _ = write!(out, "{group:<12} {leader:<8} {voters:<16} {learners}");
        if membership.members.keys().ne(root.members.keys())
            || membership.learners.keys().ne(root.learners.keys())
        {
            out.push_str("  (not the root group's members: run the last change again)");
        }
        out.push('\n');
    }
    out
}

/// How long a membership change looks for a leader: long enough for an
/// election (2.5–3 s without a leader's heartbeats), during which members
/// still name the leader that is gone.
const CHANGE_PATIENCE: Duration = Duration::from_secs(20);

/// How long `strata metadata` (show) looks for one: a sleeping group's
/// probe of its leader (2.5 s) and an election, after which the members'
/// own views are shown instead.
const SHOW_PATIENCE: Duration = Duration::from_secs(10);

/// How long a show waits at most, whatever a member that takes the call
/// and hangs does: its patience and one more call's wait.
const SHOW_BOUND: Duration = SHOW_PATIENCE.saturating_add(VIEW_WAIT);

/// A show's answer within [`SHOW_BOUND`].
async fn shown_within(
    asked: impl std::future::Future<Output = anyhow::Result<Membership>>,
) -> anyhow::Result<Membership> {
    tokio::time::timeout(SHOW_BOUND, asked)
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("no leader answered within {SHOW_BOUND:?}")))
}

/// How long a member's own view is waited for.
const VIEW_WAIT: Duration = Duration::from_secs(5);

/// Each member's own view of `group` (0: the root group; `members`'
/// order), or why it gave none.
async fn member_views(
    client: &NodeClient,
    members: Vec<(u64, String)>,
    group: u16,
) -> Vec<(u64, String, anyhow::Result<strata_meta::MetaStatus>)> {
    let client = &client.with_timeout(VIEW_WAIT);
    let path = &crate::metadata::view_path(group);
    let asked = members.into_iter().map(|(id, address)| async move {
        let view = match client.post_bound(&address, path, bytes::Bytes::new()).await {
            Err(err) => Err(anyhow::Error::from(err)),
            Ok((http::StatusCode::OK, answer)) => {
                serde_json::from_slice(&answer).map_err(anyhow::Error::from)
            }
            Ok((status, answer)) => Err(anyhow::anyhow!(
                "answered {status}: {}",
                String::from_utf8_lossy(&answer).trim()
            )),
        };
        (id, address, view)
    });
    futures::future::join_all(asked).await
}

/// Prints the members' own views when no leader answered (`why`): a
/// table, or JSON with `error` and `views`.
fn print_member_views(
    json: bool,
    why: &anyhow::Error,
    views: &[(u64, String, anyhow::Result<strata_meta::MetaStatus>)],
) -> anyhow::Result<()> {
    if json {
        let members = views
            .iter()
            .map(|(id, address, view)| {
                let mut entry = serde_json::json!({ "member": id, "address": address });
                match view {
                    Ok(view) => entry["view"] = serde_json::to_value(view)?,
                    Err(err) => entry["error"] = format!("{err:#}").into(),
                }
                anyhow::Ok(entry)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let shown = serde_json::json!({ "error": format!("{why:#}"), "views": members });
        println!("{}", serde_json::to_string_pretty(&shown)?);
        return Ok(());
    }
    println!("no leader of the metadata service answered; each member's own view:");
    println!(
        "{:<8} {:<24} {:<8} {:<8} {:<8} {:<10} APPLIED",
        "MEMBER", "ADDRESS", "VERSION", "LEADER", "TERM", "LAST LOG"
    );
    let number = |value: Option<u64>| value.map_or_else(|| "-".to_owned(), |n| n.to_string());
    for (id, address, view) in views {
        match view {
            Ok(view) => println!(
                "{id:<8} {address:<24} {:<8} {:<8} {:<8} {:<10} {}{}",
                view.runs_log_version,
                number(view.leader),
                view.term,
                number(view.last_log_index),
                number(view.last_applied),
                match (&view.stopped, view.hibernating) {
                    (Some(why), _) => format!(" (stopped: {why})"),
                    (None, true) => " (asleep)".to_owned(),
                    (None, false) => String::new(),
                }
            ),
            Err(err) => println!("{id:<8} {address:<24} unreachable: {err:#}"),
        }
    }
    Ok(())
}

/// Sends a membership change to the members in turn, following their
/// hints to the leader, until one answers it or `patience` has passed.
pub(crate) async fn ask_leader(
    client: &NodeClient,
    mut addresses: Vec<String>,
    group: u16,
    body: bytes::Bytes,
    patience: Duration,
) -> anyhow::Result<Membership> {
    use crate::metadata::{leader_hint, members_path};
    let path = members_path(group);
    use http::StatusCode;
    let mut index = 0;
    let mut unreachable = Vec::new();
    let deadline = tokio::time::Instant::now() + patience;
    for attempt in 0.. {
        if attempt > 0 && tokio::time::Instant::now() > deadline {
            break;
        }
        let address = addresses[index % addresses.len()].clone();
        let hint = match client.post_bound(&address, &path, body.clone()).await {
            Ok((StatusCode::OK, answer)) => return Ok(serde_json::from_slice(&answer)?),
            Ok((StatusCode::MISDIRECTED_REQUEST, answer)) => leader_hint(&answer),
            Ok((status, answer)) => anyhow::bail!(
                "{address} answered {status}: {}",
                String::from_utf8_lossy(&answer).trim()
            ),
            // Sent, and perhaps done: not sent again.
            Err(err) if !err.never_reached() => anyhow::bail!("{address}: {err}"),
            Err(err) => {
                unreachable.push(format!("{address}: {err}"));
                // A leader named by a member that has not heard of its
                // death yet, as likely as not: give the election time.
                tokio::time::sleep(Duration::from_millis(250)).await;
                None
            }
        };
        index = match hint {
            Some(leader) => match addresses.iter().position(|known| *known == leader) {
                Some(position) => position,
                None => {
                    addresses.push(leader);
                    addresses.len() - 1
                }
            },
            None => {
                if attempt % addresses.len() == addresses.len() - 1 {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                index + 1
            }
        };
    }
    anyhow::bail!(
        "no member of {addresses:?} led the metadata service ({})",
        unreachable.join("; ")
    )
}

pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    let mut ring = load_ring(&args.ring)?;
    let client = NodeClient::new(
        load_secret(&args.cluster_secret_file)?,
        load_cluster_tls(args.cluster_tls_ca.as_deref(), None)?.as_ref(),
        Duration::from_secs(5),
    );
    let runtime = runtime()?;
    let mut reports = runtime.block_on(node_reports(&client, &ring));
    // The nodes pass newer rings on to each other: a ring file not copied
    // since a rebalance would judge the cluster by an old ring (and miss
    // new nodes). The newest ring a node runs is the cluster's.
    let newest = reports
        .iter()
        .filter_map(|report| Some((report.status.as_ref()?.ring_version?, &report.node)))
        .max();
    if let Some((version, node)) = newest
        && version > ring.version()
    {
        // Not had (the node went, or its ring is of a format this binary
        // cannot read): the file's ring is shown, with a word.
        let fetched = runtime
            .block_on(client.ring(node))
            .map_err(anyhow::Error::from);
        let newer = match fetched.and_then(|bytes| {
            bytes
                .map(|bytes| Ring::from_bytes(&bytes))
                .transpose()
                .map_err(anyhow::Error::from)
        }) {
            Ok(newer) => newer.filter(|newer| newer.cluster_id() == ring.cluster_id()),
            Err(err) => {
                eprintln!("{node} runs ring version {version}, not read: {err:#}");
                None
            }
        };
        if let Some(newer) = newer {
            eprintln!(
                "the nodes run ring version {} ({} has {}): shown against it",
                newer.version(),
                args.ring.display(),
                ring.version()
            );
            ring = newer;
            reports = runtime.block_on(node_reports(&client, &ring));
        }
    }
    let settled = reports.iter().all(|report| {
        report
            .status
            .as_ref()
            .is_some_and(|status| status.settled_at(ring.version()))
    });
    let statuses = || reports.iter().filter_map(|report| report.status.as_ref());
    let out_of_sync_partitions = statuses()
        .map(|status| status.replication.last_pass_out_of_sync)
        .sum();
    let bytes_to_move = statuses().map(|status| status.bytes_to_move()).sum();
    let index_groups = index_group_reports(&reports);
    let report = ClusterReport {
        ring_version: ring.version(),
        out_of_sync_partitions,
        bytes_to_move,
        index_groups_caught_up: index_groups_caught_up(&index_groups),
        index_groups,
        nodes_up: reports.iter().filter(|r| r.status.is_some()).count(),
        nodes: reports.len(),
        settled,
        reports,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&ring, &report));
    }
    Ok(())
}

/// Every node of `ring` asked for its status at once: a node cut off costs
/// one timeout, not one each.
async fn node_reports(client: &NodeClient, ring: &Ring) -> Vec<NodeReport> {
    let mut nodes: Vec<String> = ring.devices().map(|device| device.node.clone()).collect();
    nodes.sort();
    nodes.dedup();
    let ask = |node: String| async move {
        match client.status(&node).await {
            Ok(status) => NodeReport {
                node,
                status: Some(status),
                error: None,
            },
            Err(err) => NodeReport {
                node,
                status: None,
                error: Some(err.to_string()),
            },
        }
    };
    futures::future::join_all(nodes.into_iter().map(ask)).await
}

fn table(ring: &Ring, report: &ClusterReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "ring version {} of cluster {:?}: {} partitions, {} replicas",
        ring.version(),
        ring.cluster_id(),
        ring.partition_count(),
        ring.replicas()
    );
    let _ = writeln!(
        out,
        "{:<22} {:>5} {:>9} {:>12} {:>12} {:>7} {:>12} {:>9}",
        "NODE", "RING", "EXTENTS", "BYTES", "TO MOVE", "PASSES", "OUT-OF-SYNC", "PUSHED"
    );
    for node in &report.reports {
        match &node.status {
            Some(status) => {
                let _ = writeln!(
                    out,
                    "{:<22} {:>5} {:>9} {:>12} {:>12} {:>7} {:>12} {:>9}",
                    node.node,
                    status
                        .ring_version
                        .map_or_else(|| "-".to_owned(), |v| v.to_string()),
                    status.extents,
                    status.bytes,
                    status.bytes_to_move(),
                    status.replication.passes,
                    status.replication.last_pass_out_of_sync,
                    status.replication.extents_pushed,
                );
                if status.disk_failed {
                    let _ = writeln!(
                        out,
                        "{:<22} DISK FAILED an fsync: takes no writes; check the disk, then restart it",
                        ""
                    );
                } else if let Some(reason) = &status.last_write_refusal {
                    let _ = writeln!(
                        out,
                        "{:<22} refused {} writes since it started, the last: {reason}",
                        "", status.writes_refused
                    );
                }
            }
            None => {
                let _ = writeln!(
                    out,
                    "{:<22} DOWN: {}",
                    node.node,
                    node.error.as_deref().unwrap_or("")
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "{} of {} nodes up; {} partitions out of sync, {} bytes to move; replication {}",
        report.nodes_up,
        report.nodes,
        report.out_of_sync_partitions,
        report.bytes_to_move,
        if report.settled {
            "settled"
        } else {
            "in progress (or a node is down)"
        }
    );
    out.push_str(&index_group_table(report));
    out
}

/// The index groups' lines of [`table`]: none without groups.
fn index_group_table(report: &ClusterReport) -> String {
    let mut out = String::new();
    if report.index_groups.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "{:<12} {:>6} {:>9}  MEMBERS (ID@NODE APPLIED)",
        "INDEX GROUP", "LEADER", "APPLIED"
    );
    for group in &report.index_groups {
        let members: Vec<String> = group
            .members
            .iter()
            .map(|member| {
                let state = match (&member.stopped, member.hibernating) {
                    (Some(why), _) => format!(" STOPPED: {why}"),
                    (None, true) => " asleep".to_owned(),
                    (None, false) => String::new(),
                };
                format!(
                    "{}@{} {}{state}",
                    member.id, member.node, member.last_applied
                )
            })
            .collect();
        let missing = match group.missing.as_slice() {
            [] => String::new(),
            ids => format!(
                "; not answering: {}",
                ids.iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let _ = writeln!(
            out,
            "{:<12} {:>6} {:>9}  {}{missing}",
            group.group,
            group
                .leader
                .map_or_else(|| "none".to_owned(), |leader| leader.to_string()),
            group.last_applied,
            members.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "index groups {}",
        match report.index_groups_caught_up {
            Some(true) => "caught up",
            _ => "catching up (or without a leader, or a member stopped)",
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn membership(leader: u64, voters: &[u64], learners: &[u64]) -> Membership {
        let members = |ids: &[u64]| ids.iter().map(|id| (*id, format!("h{id}:1"))).collect();
        Membership {
            leader: Some(leader),
            members: members(voters),
            learners: members(learners),
            index_groups: 0,
            log_version: strata_meta::LOG_VERSION,
            runs: Default::default(),
        }
    }

    /// The table shows each group's leader and members, flags the group a
    /// cut-short change left with other members than the root's, and
    /// names the group that did not answer.
    #[test]
    fn the_group_table_flags_a_group_left_behind() {
        let root = membership(1, &[1, 2, 3], &[]);
        let groups = [
            (1, Ok(membership(2, &[1, 2, 3], &[]))),
            (2, Ok(membership(3, &[1, 2, 3], &[4]))),
            (3, Err(anyhow::anyhow!("no member led it"))),
        ];
        let table = group_table(&root, &groups);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(
            lines[3].starts_with("3            -        unreachable: no member led it"),
            "{table}"
        );
        assert!(
            lines[1].starts_with("1            2        1,2,3            -"),
            "{table}"
        );
        assert!(!lines[1].contains("run the last change again"), "{table}");
        assert!(lines[2].contains("1,2,3            4"), "{table}");
        assert!(lines[2].contains("run the last change again"), "{table}");
    }

    /// `strata status` puts together each index group from the views of
    /// the nodes that hold it: the leader most of them follow, the member
    /// behind or stopped, and a group not caught up.
    #[test]
    fn status_reports_each_index_group_from_its_members_views() {
        let view = |id: u64, leader: Option<u64>, applied: u64| {
            serde_json::json!({
                "id": id, "leader": leader, "term": 3, "last_log_index": applied,
                "last_applied": applied, "snapshot": null, "purged": null,
                "hibernating": false, "voters": [1, 2, 3],
            })
        };
        let node = |name: &str, groups: serde_json::Value| NodeReport {
            node: name.to_owned(),
            status: Some(NodeStatus {
                node: name.to_owned(),
                index_groups: Some(groups),
                ..NodeStatus::default()
            }),
            error: None,
        };
        let reports = [
            node(
                "a:1",
                serde_json::json!({"1": view(1, Some(2), 9), "2": view(1, Some(2), 4)}),
            ),
            node(
                "b:1",
                serde_json::json!({"1": view(2, Some(2), 9), "2": view(2, Some(2), 5)}),
            ),
            node("c:1", serde_json::json!({"1": view(3, None, 9)})),
        ];
        let groups = index_group_reports(&reports);
        assert_eq!(groups.len(), 2);
        assert_eq!((groups[0].leader, groups[0].last_applied), (Some(2), 9));
        assert_eq!(groups[0].members.len(), 3);
        assert!(groups[0].caught_up());
        assert_eq!(groups[1].last_applied, 5);
        assert!(!groups[1].caught_up(), "member 1 applied 4 of 5");
        // Member 3's node does not answer for group 2.
        assert_eq!(groups[1].voters, [1, 2, 3]);
        assert_eq!(groups[1].missing, [3]);
        let report = ClusterReport {
            ring_version: 1,
            nodes_up: 3,
            nodes: 3,
            settled: true,
            out_of_sync_partitions: 0,
            bytes_to_move: 0,
            index_groups_caught_up: index_groups_caught_up(&groups),
            index_groups: groups,
            reports: Vec::new(),
        };
        let text = index_group_table(&report);
        assert!(text.contains("1@a:1 9, 2@b:1 9, 3@c:1 9"), "{text}");
        assert!(text.contains("; not answering: 3"), "{text}");
        assert!(text.contains("index groups catching up"), "{text}");
    }

    /// A show names each stopped replica, its member, its group and why,
    /// and fails once it printed them.
    #[test]
    fn a_show_names_the_replicas_that_stopped() {
        let stopped = vec![
            (3, 0, "storage error".to_owned()),
            (2, 4, "holds none of what the split moved".to_owned()),
        ];
        let lines = stopped_lines(&stopped);
        let lines: Vec<&str> = lines.lines().collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].starts_with("member 3's replica of the root group stopped: storage error"),
            "{lines:?}"
        );
        assert!(
            lines[1].starts_with("member 2's replica of index group 4 stopped: holds none"),
            "{lines:?}"
        );
        assert!(fail_if_any(0, "replicas stopped").is_ok());
        let failed =
            fail_if_any(2, "replicas stopped").expect_err("a show with stopped replicas fails");
        assert_eq!(failed.to_string(), "2 replicas stopped");
    }
}
