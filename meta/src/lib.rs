//! The replicated metadata service: Raft groups (openraft) of gateways whose
//! logs hold every metadata call that changes something, and whose state
//! machine on each member is a local [`strata_store::Store`].
//!
//! A member may belong to several groups (the root group, and the index
//! groups of `docs/design/index-on-the-ring.md`): each has its own log,
//! leader and replica, a key space of the member's one log database
//! ([`MetaLog`]) and of its one store database (`Store::open_group`).
//!
//! Owns: the logs' storage (`log_store.rs`, RocksDB), the state machine
//! (`state_machine.rs`: entries applied with [`Store::apply_meta`], so every
//! member holds the same records and the same change feed), the encoding of
//! Raft's messages (`network.rs`), and [`MetaService`], which decides where a
//! call goes: a change into the log on the leader (batched with the changes
//! that arrive meanwhile, `batch.rs`), a read on the leader after it
//! confirmed its leadership, anything on another member back to the caller
//! with the leader's address.
//!
//! Must not know HTTP or depend on the gateway: messages between members
//! travel through the [`RaftTransport`] the gateway provides, as metadata
//! calls travel through `strata_store::MetaTransport`.

mod batch;
mod hibernation;
mod log_store;
mod network;
mod state_machine;
mod versions;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::{BasicNode, Config, Raft, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use strata_store::{CallSignature, Store};

pub use log_store::MetaLog;
pub use network::{RaftRpc, RaftTransport, leader_heard_from};
pub use state_machine::SnapshotFile;
pub use versions::LOG_VERSION;

openraft::declare_raft_types!(
    /// Strata's Raft types: entries carry metadata calls, nodes are named by
    /// the address of their gateway.
    pub TypeConfig:
        D = MetaEntry,
        R = MetaAnswer,
        NodeId = u64,
        Node = BasicNode,
        SnapshotData = SnapshotFile,
);

/// One entry in the log: the changes the leader took while the entry
/// before it was being committed, applied in order. Batching them is what
/// lets concurrent changes share one append, one fsync on each member and
/// one message to each follower.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MetaEntry {
    pub calls: Vec<LoggedCall>,
    /// The leader of an idle group is about to stop its heartbeats, and
    /// the followers that apply this their election timers (see
    /// `hibernation.rs`). No calls. (A member of an earlier version ignores
    /// the field and applies an entry without calls.)
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hibernate: bool,
    /// The log version a member must run to apply this entry as the
    /// others do (`versions.rs`): one that runs an earlier one stops
    /// instead. (A member of a build before log versions ignores it.)
    #[serde(default, skip_serializing_if = "is_zero")]
    pub needs: u32,
    /// Makes `needs` the group's log version: every member runs it, as its
    /// leader found. No calls.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub activates: bool,
}

impl MetaEntry {
    /// An entry of calls.
    pub fn of(calls: Vec<LoggedCall>) -> MetaEntry {
        MetaEntry {
            calls,
            ..MetaEntry::default()
        }
    }

    fn hibernate() -> MetaEntry {
        MetaEntry {
            hibernate: true,
            ..MetaEntry::default()
        }
    }

    /// Raises the group's log version to `version`.
    fn activating(version: u32) -> MetaEntry {
        MetaEntry {
            needs: version,
            activates: true,
            ..MetaEntry::default()
        }
    }
}

/// One change: the call as the store takes it, and what makes applying it
/// the same everywhere (see [`strata_store::ApplyContext`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoggedCall {
    /// The JSON call.
    pub call: String,
    /// The leader's clock when it took the call.
    pub at_ms: i64,
    /// Random bytes the leader drew for the call.
    pub nonce: [u8; 16],
    /// The signature the call came with from another gateway, so that
    /// every member refuses it sent again (see
    /// [`strata_store::ApplyContext::signature`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<CallSignature>,
}

/// The store's answers to an applied entry's calls, in order (JSON, as
/// `serve_meta` answers); none for an entry without calls.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MetaAnswer(pub Vec<Vec<u8>>);

/// Where a metadata call went.
#[derive(Debug)]
pub enum Routed {
    /// The store's answer.
    Answer(Vec<u8>),
    /// This member is not the leader; the leader's address when known.
    /// Nothing was done: the call may be sent there.
    NotLeader(Option<String>),
    /// No answer: the group has no quorum, or leadership moved while the
    /// call was in the log (its outcome is unknown).
    Unavailable(String),
}

impl Routed {
    /// A refusal, for the other reads of the same round.
    fn clone_refusal(&self) -> Routed {
        match self {
            Routed::Answer(_) => Routed::Unavailable("no answer".into()),
            Routed::NotLeader(leader) => Routed::NotLeader(leader.clone()),
            Routed::Unavailable(why) => Routed::Unavailable(why.clone()),
        }
    }
}

/// Which of the groups a member belongs to: each has its own log, leader,
/// and replica (a key space of the member's store: `Store::open_group`),
/// and all of them share the member's log database ([`MetaLog`]), its
/// replica database and its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GroupId {
    /// The group that holds everything while the index is not split: the
    /// catalog, buckets, and today every object record.
    Root,
    /// A group of the object index (`docs/design/index-on-the-ring.md`).
    Index(u16),
}

impl std::fmt::Display for GroupId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GroupId::Root => f.write_str("root group"),
            GroupId::Index(index) => write!(f, "index group {index}"),
        }
    }
}

/// The members of a group: id → gateway address (`HOST:PORT`).
pub type Members = BTreeMap<u64, String>;

/// How a member starts.
#[derive(Debug, Clone)]
pub enum Joining {
    /// One of the members the group was founded with: a group never
    /// initialised is initialised by each of them alike.
    Founding(Members),
    /// A member added later ([`MembershipChange::Add`]): it waits to be
    /// sent the log, and never initialises a group of its own.
    Added,
}

/// A change of the group's members, made by the leader. Members change one
/// at a time, so every majority of the old members overlaps every majority
/// of the new ones, or, for a replacement, through a joint configuration
/// that needs a majority of both.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum MembershipChange {
    /// Sends member `id` (started with [`Joining::Added`]) the log, then
    /// makes it a voting member once it has caught up; done already if it
    /// votes at `address` in a settled membership.
    ///
    /// With `replacing`, the voters it names leave in the same change as
    /// member `id` comes to vote (a joint change from the old voters to the
    /// new: a majority of each must agree while it is made, so the group
    /// never needs more of its live members than before). Leaders of
    /// builds before it ignore the field and only add: the caller then
    /// removes them.
    Add {
        id: u64,
        address: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        replacing: Vec<u64>,
    },
    /// Takes member `id` out of the group (it may be the leader, which
    /// then steps down); done already if a settled membership does not
    /// list it.
    Remove { id: u64 },
    /// Changes nothing: the answer is the members.
    Show,
}

/// The group's members as one member sees them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Membership {
    pub leader: Option<u64>,
    /// Voting members: id → address.
    pub members: Members,
    /// Members being sent the log, not voting yet.
    pub learners: Members,
    /// The index groups the members also run, each a group of its own
    /// whose members change by the same changes (filled in by whoever
    /// runs them; 0 from a group alone).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub index_groups: u16,
    /// The group's log version (`versions.rs`), as this member applied it;
    /// 0 from a build before log versions.
    #[serde(default)]
    pub log_version: u32,
    /// The log version each member says it runs, when asked (a show asks
    /// them all; one that does not answer is missing).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub runs: BTreeMap<u64, u32>,
}

fn is_zero<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// How long adding a member waits for it to catch up with the log.
const CATCH_UP_WAIT: Duration = Duration::from_secs(120);

/// How long a change may wait to be committed by a majority, and a read for
/// the leader to confirm it still leads: without a majority, calls fail
/// after this rather than hang.
const QUORUM_WAIT: Duration = Duration::from_secs(5);

/// How soon [`MetaService::caught_up`] asks again when its member names a
/// leader that is not a member.
const LEADER_RECHECK: Duration = Duration::from_millis(100);

/// How often the leader puts the expiry of due objects and the trimming of
/// the change feed in the log.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(5);

/// How often [`compact_index_groups_after_split`] looks at the root.
const SPLIT_POLL: Duration = Duration::from_secs(1);

/// Compacts the log of each of this member's index `groups`
/// ([`MetaService::compact_log`]) once this member's `root` replica records
/// that its buckets were split into them, if it was never purged: the
/// split seeded the groups' replicas with records in no group log. Ends
/// at once for a root that records groups it was not split into.
pub async fn compact_index_groups_after_split(root: Store, groups: Vec<Arc<MetaService>>) {
    let mut failures = 0u32;
    let split = loop {
        match root.split_into_index_groups().await {
            Ok(Some(split)) => break split,
            Ok(None) => {}
            Err(err) => {
                // Said at the 1st, 2nd, 4th, 8th… failure: it polls each second.
                failures += 1;
                if failures.is_power_of_two() {
                    tracing::warn!(error = %err, failures, "reading whether the root was split");
                }
            }
        }
        tokio::time::sleep(SPLIT_POLL).await;
    };
    if !split {
        return;
    }
    for group in groups {
        // Purged already, or empty (a member joining, sent snapshots).
        let status = group.status();
        if status.purged.is_some() || status.last_applied.is_none() {
            continue;
        }
        match group.compact_log().await {
            Ok(upto) => tracing::info!(group = %group.group, upto,
                "index group log purged after the split: a new member is sent a snapshot"),
            Err(err) => tracing::warn!(group = %group.group, error = %err,
                "index group log not purged after the split: a member added later may \
                 have to be removed and added again"),
        }
    }
}

/// How long [`MetaService::compact_log`] waits for its snapshot.
const COMPACTION_WAIT: Duration = Duration::from_secs(600);

/// The leader's heartbeat interval, in milliseconds.
const HEARTBEAT: u64 = 500;

/// A follower that has known a leader stands for election
/// `ELECTION_TIMEOUT_MAX` (the leader's lease, during which the others
/// refuse to vote) plus a random timeout between these two after its last
/// heartbeat, in milliseconds (see the configuration in
/// [`MetaService::start_group`]).
const ELECTION_TIMEOUT_MIN: u64 = 1000;
const ELECTION_TIMEOUT_MAX: u64 = 1500;

/// When a group compacts its log and when it hibernates.
///
/// A snapshot of the replica is taken every `snapshot_every` applied
/// entries, and the log is then purged up to `keep_after_snapshot` entries
/// before it (a member that was away briefly catches up from those; one
/// further behind is sent the snapshot, in messages of
/// `snapshot_chunk_bytes`). A group that appended nothing for
/// `idle_before_hibernating` stops its heartbeats until something happens
/// (`hibernation.rs`); `None`: never. `log_version` is the newest log
/// version the member applies: [`LOG_VERSION`], unless a test stands in for
/// an earlier build. With `index_groups_follow_root`, an index group's
/// replica applies calls only once its member's root, in the same
/// database, recorded its index groups (`Store::wait_for_root_split`):
/// off only where groups run beside a root that keeps objects itself
/// (tests of the groups' machinery).
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    pub snapshot_every: u64,
    pub keep_after_snapshot: u64,
    pub snapshot_chunk_bytes: u64,
    pub idle_before_hibernating: Option<Duration>,
    pub log_version: u32,
    pub index_groups_follow_root: bool,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            snapshot_every: 50_000,
            keep_after_snapshot: 10_000,
            // openraft's default: about 11 MiB of JSON a message, well
            // under what a member accepts (64 MiB).
            snapshot_chunk_bytes: 3 << 20,
            idle_before_hibernating: Some(Duration::from_secs(30)),
            log_version: LOG_VERSION,
            index_groups_follow_root: true,
        }
    }
}

/// One member of one group of the replicated metadata service.
pub struct MetaService {
    id: u64,
    group: GroupId,
    /// Held until the group's Raft stopped.
    claim: log_store::GroupClaim,
    raft: Raft<TypeConfig>,
    store: Store,
    batcher: Arc<batch::Batcher>,
    /// An index group of the root in the same database
    /// (`Tuning::index_groups_follow_root`): reads wait for its split too.
    follows_root: bool,
    confirmations: Confirmations,
    hibernation: Arc<hibernation::Hibernation>,
    versions: Arc<versions::LogVersions>,
    /// Why the state machine refused an entry, if it did: the reason the
    /// member stopped, in [`MetaService::status`].
    apply_failure: state_machine::ApplyFailure,
    /// Held by the leader while it raises the group's log version and
    /// while it adds a member, so that no member is added between the
    /// probes that found every member runs a version and the entry that
    /// raises it.
    version_changes: tokio::sync::Mutex<()>,
    /// For the messages a member sends outside Raft's own (a probe).
    transport: Arc<dyn RaftTransport>,
}

/// Rounds in which the leader confirms with a majority that it still leads
/// (`ensure_linearizable`), one at a time: the reads that arrive during a
/// round share the next, so concurrent reads cost one round trip, not one
/// each.
struct Confirmations {
    /// Rounds started so far.
    started: std::sync::atomic::AtomicU64,
    /// Held while a round runs.
    running: tokio::sync::Mutex<()>,
    /// The last round to finish, and what it found: the read point
    /// (`ensure_linearizable`'s log index, which the leader had applied), or
    /// the refusal.
    last: parking_lot::Mutex<(u64, Result<Option<u64>, Routed>)>,
}

impl Default for Confirmations {
    fn default() -> Self {
        Confirmations {
            started: Default::default(),
            running: Default::default(),
            // Round 0, which no caller takes: each waits for a later one.
            last: parking_lot::Mutex::new((0, Ok(None))),
        }
    }
}

impl MetaService {
    /// Starts member `id` of the group `members`, with its log under
    /// `log_dir` and `store` (a local store opened with background expiry
    /// off) as its replica. Every member starts with the same `members`; a
    /// group that was never initialised is initialised by each of them alike.
    pub async fn start(
        id: u64,
        members: Members,
        log_dir: &Path,
        store: Store,
        transport: Arc<dyn RaftTransport>,
    ) -> Result<Arc<MetaService>, String> {
        Self::start_with(
            id,
            Joining::Founding(members),
            log_dir,
            store,
            transport,
            Tuning::default(),
        )
        .await
    }

    /// [`MetaService::start`] of a member that founds the root group or
    /// joins it, tuned as `tuning` says.
    pub async fn start_with(
        id: u64,
        joining: Joining,
        log_dir: &Path,
        store: Store,
        transport: Arc<dyn RaftTransport>,
        tuning: Tuning,
    ) -> Result<Arc<MetaService>, String> {
        let log = MetaLog::open(log_dir)?;
        let group = GroupId::Root;
        Self::start_group(id, group, joining, &log, store, transport, tuning).await
    }

    /// Starts member `id` of `group`, its log in the member's `log`
    /// beside its other groups', `store` its replica (the root store, or a
    /// group's store opened beside it).
    pub async fn start_group(
        id: u64,
        group: GroupId,
        joining: Joining,
        log: &MetaLog,
        store: Store,
        transport: Arc<dyn RaftTransport>,
        tuning: Tuning,
    ) -> Result<Arc<MetaService>, String> {
        if let Joining::Founding(members) = &joining
            && !members.contains_key(&id)
        {
            return Err(format!("member {id} is not among the members {members:?}"));
        }
        let config = Config {
            cluster_name: format!("strata-metadata {group}"),
            // Also the timeout of one append (openraft's): room for a batch
            // of large entries and an fsync on a loaded machine.
            heartbeat_interval: HEARTBEAT,
            // A follower that has known a leader stands for election
            // `election_timeout_max` (the leader's lease, during which the
            // others refuse to vote) plus a random timeout after its last
            // heartbeat: here 2.5–3 s of silence, five heartbeats missed at
            // the least. (1.5–3 s took 4.5–6 s: changes were refused for
            // 5.5–6.6 s after a leader's SIGKILL.)
            election_timeout_min: ELECTION_TIMEOUT_MIN,
            election_timeout_max: ELECTION_TIMEOUT_MAX,
            // An entry may be ~1 MB (a completion of 10,000 parts): a batch
            // stays well under what a member accepts in one message.
            max_payload_entries: 32,
            // Each snapshot chunk, and the last one's install (a pass that
            // checks and sums it, a fsync and the import of the whole
            // replica), must answer
            // within this: openraft's 200 ms would have the leader send a
            // large snapshot again and again.
            install_snapshot_timeout: 60_000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(tuning.snapshot_every),
            max_in_snapshot_log_to_keep: tuning.keep_after_snapshot,
            snapshot_max_chunk_size: tuning.snapshot_chunk_bytes,
            ..Default::default()
        }
        .validate()
        .map_err(|err| format!("raft configuration: {err}"))?;
        let claim = log.claim(group)?;
        let hibernation = hibernation::Hibernation::new();
        let versions = Arc::new(versions::LogVersions::new(tuning.log_version));
        let follows_root = tuning.index_groups_follow_root && matches!(group, GroupId::Index(_));
        let apply_failure = state_machine::ApplyFailure::default();
        let shared = state_machine::Shared {
            hibernation: hibernation.clone(),
            versions: versions.clone(),
            follows_root,
            failure: apply_failure.clone(),
        };
        let state_machine =
            state_machine::StateMachine::open(id, store.clone(), &log.snapshot_dir(group), shared)
                .await?;
        let network = network::Network::new(transport.clone(), group);
        let raft = Raft::new(
            id,
            Arc::new(config),
            network,
            log.group(group),
            state_machine,
        )
        .await
        .map_err(|err| format!("starting raft: {err}"))?;
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|err| format!("raft: {err}"))?;
        if let (false, Joining::Founding(members)) = (initialized, &joining) {
            let nodes: BTreeMap<u64, BasicNode> = members
                .iter()
                .map(|(id, address)| (*id, BasicNode::new(address)))
                .collect();
            // Every member proposes the same first membership: whichever is
            // first, the others' proposals are the same entry.
            if let Err(err) = raft.initialize(nodes).await {
                tracing::debug!(error = %err, "raft group already initialised");
            }
        }
        let service = Arc::new(MetaService {
            id,
            group,
            claim,
            batcher: batch::Batcher::new(id, raft.clone()),
            raft,
            store,
            confirmations: Confirmations::default(),
            hibernation,
            versions,
            version_changes: tokio::sync::Mutex::new(()),
            transport,
            follows_root,
            apply_failure,
        });
        tokio::spawn(maintain_while_leading(Arc::downgrade(&service)));
        if let Some(idle) = tuning.idle_before_hibernating {
            tokio::spawn(hibernation::follow(Arc::downgrade(&service)));
            tokio::spawn(hibernation::sleep_when_idle(Arc::downgrade(&service), idle));
        }
        Ok(service)
    }

    /// Routes one metadata call (the body of the service's endpoint), and
    /// the signature it came with from another gateway, if any: a change
    /// whose signature the log applied before is refused. `answer_by`:
    /// when its caller stops waiting, if it said (a long poll of the feed
    /// is held until then at the latest).
    ///
    /// A follower of a hibernating group that is sent a call probes its
    /// leader: the caller may have come here because the leader did not
    /// answer (`hibernation.rs`).
    pub async fn call(
        &self,
        request: &[u8],
        signature: Option<CallSignature>,
        answer_by: Option<std::time::Instant>,
    ) -> Routed {
        let routed = self.call_first(request, signature, answer_by).await;
        if let Routed::NotLeader(_) = routed {
            self.stir_follower();
        }
        routed
    }

    /// As [`MetaService::call`], for this member's own gateway, which asks
    /// it first and goes on to the leader itself: a sleeping follower does
    /// not probe its leader for that (every feed poll would), only for a
    /// caller that comes to it over the network, as this gateway does once
    /// the leader fails it.
    pub async fn call_first(
        &self,
        request: &[u8],
        signature: Option<CallSignature>,
        answer_by: Option<std::time::Instant>,
    ) -> Routed {
        let Some(kind) = Store::meta_call_kind(request) else {
            // The store answers with the decoding error.
            return Routed::Answer(self.store.serve_meta(request, None).await);
        };
        if kind.writes {
            self.write(request, kind.log_version, signature).await
        } else {
            self.read(request, kind.keeps_objects, answer_by).await
        }
    }

    async fn write(&self, request: &[u8], needs: u32, signature: Option<CallSignature>) -> Routed {
        if let Err(refusal) = self.leading().await {
            return refusal;
        }
        // Not logged before every member applies it (`versions.rs`).
        let group_version = self.versions.group();
        if needs > group_version {
            return Routed::Unavailable(format!(
                "the call needs log version {needs}, and the {} runs {group_version}: \
                 its leader raises it seconds after every member runs a build that has it",
                self.group
            ));
        }
        self.hibernation.stir_leader(&self.raft);
        let Ok(call) = String::from_utf8(request.to_vec()) else {
            return Routed::Unavailable("metadata call is not UTF-8".into());
        };
        let call = LoggedCall {
            call,
            at_ms: unix_ms(),
            nonce: rand::random(),
            signature,
        };
        self.batcher.write(call, needs).await
    }

    /// A read at the leader; one of objects (`of_objects`) only once this
    /// member's root split into its index group, if it is one.
    async fn read(
        &self,
        request: &[u8],
        of_objects: bool,
        answer_by: Option<std::time::Instant>,
    ) -> Routed {
        if let Some(refusal) = self.confirm_leadership().await {
            // A follower sends the caller on at once.
            return refusal;
        }
        // Not the feed's reads: a gateway's start connects to each group
        // (the head of its feed) before the first records the groups, and
        // the split moves no event. (Waiting after the confirmation only
        // lets the replica take more in.)
        if of_objects && let Err(why) = self.root_split(answer_by).await {
            return Routed::Unavailable(why);
        }
        Routed::Answer(self.store.serve_meta_by(request, None, answer_by).await)
    }

    /// For an index group's replica, waits (until `answer_by`, within
    /// [`QUORUM_WAIT`]) until this member's root recorded its split into
    /// the groups, or that it has none to make: before that, the replica
    /// may lack records the split is still to move into it.
    async fn root_split(&self, answer_by: Option<std::time::Instant>) -> Result<(), String> {
        if !self.follows_root {
            return Ok(());
        }
        let wait = answer_by.map_or(QUORUM_WAIT, |by| {
            by.saturating_duration_since(std::time::Instant::now())
                .min(QUORUM_WAIT)
        });
        match tokio::time::timeout(wait, self.store.wait_for_root_split(true)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err(format!(
                "the {} waits for this member's root group to record its split into \
                 index groups",
                self.group
            )),
        }
    }

    /// Waits for a round of confirmation that started after this call did
    /// (so every change acknowledged before the read is in the replica);
    /// `None` when this member still leads.
    async fn confirm_leadership(&self) -> Option<Routed> {
        self.confirmed_read_point().await.err()
    }

    /// [`MetaService::confirm_leadership`], which finds the read point too:
    /// the index of the last entry committed when the round started, which
    /// this leader had applied when it ended (`None`: an empty log).
    async fn confirmed_read_point(&self) -> Result<Option<u64>, Routed> {
        use std::sync::atomic::Ordering;
        let rounds = &self.confirmations;
        let arrived_after = rounds.started.load(Ordering::Acquire);
        let _running = rounds.running.lock().await;
        {
            let last = rounds.last.lock();
            if last.0 > arrived_after {
                return clone_outcome(&last.1);
            }
        }
        let round = rounds.started.fetch_add(1, Ordering::AcqRel) + 1;
        let confirmed = tokio::time::timeout(QUORUM_WAIT, self.raft.ensure_linearizable()).await;
        let outcome = match confirmed {
            Err(_) => Err(Routed::Unavailable(
                "no majority of the metadata service answered in time".into(),
            )),
            Ok(Ok(read_log_id)) => Ok(read_log_id.map(|log_id| log_id.index)),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward)))) => {
                Err(Routed::NotLeader(forward.leader_node.map(|node| node.addr)))
            }
            Ok(Err(err)) => Err(Routed::Unavailable(format!("metadata read: {err}"))),
        };
        *rounds.last.lock() = (round, clone_outcome(&outcome));
        outcome
    }

    /// This member's replica, if it leads and a majority confirmed so since
    /// this was called: the replica then holds every change acknowledged
    /// before. For work that reads the whole replica and acts outside the
    /// log, such as deleting the extents no record names (the orphan sweep).
    pub async fn replica_while_leading(&self) -> Option<Store> {
        self.root_split(None).await.ok()?;
        match self.confirm_leadership().await {
            None => Some(self.store.clone()),
            Some(_) => None,
        }
    }

    /// This leader's read point, once a majority confirmed, after this was
    /// called, that it leads; `None` if it does not lead (or its log is
    /// empty, which a leader's never is: it holds its blank entry).
    async fn read_point(&self) -> Option<u64> {
        self.confirmed_read_point().await.ok().flatten()
    }

    /// Waits, within `wait`, until this member's replica holds every change
    /// the group acknowledged before this was called, and, for an index
    /// group's, its member's root split into it: the leader confirms that
    /// it leads; a follower asks the leader for its read point and applies
    /// as far. For work that reads the replicas of several groups on one
    /// member and acts outside their logs, such as the orphan sweep of a
    /// service whose buckets were split into index groups. `Err` says why
    /// not.
    pub async fn caught_up(&self, wait: Duration) -> Result<(), String> {
        let stage = parking_lot::Mutex::new("waiting for this member's root split");
        match tokio::time::timeout(wait, self.catch_up(&stage)).await {
            Ok(caught_up) => caught_up,
            Err(_) => Err(format!(
                "this member's replica of the {} did not catch up within {wait:?} ({})",
                self.group,
                stage.lock()
            )),
        }
    }

    /// [`MetaService::caught_up`], which bounds it; says how far it got in
    /// `stage`.
    async fn catch_up(&self, stage: &parking_lot::Mutex<&'static str>) -> Result<(), String> {
        self.root_split(None).await?;
        let read_point = loop {
            *stage.lock() = "confirming the leader";
            match self.confirmed_read_point().await {
                // No leader known (a confirmation round answers nothing
                // else): an election is under way, or this member was cut
                // off and stood for one. It waits for a leader, within the
                // caller's bound, rather than put the caller's work off.
                Err(Routed::NotLeader(None)) => {
                    *stage.lock() = "waiting for a leader";
                    self.stir_follower();
                    let mut metrics = self.raft.metrics();
                    if metrics.borrow().current_leader.is_some() {
                        // Named but not a member (a leader that removed
                        // itself names itself a while): asked again soon.
                        tokio::time::sleep(LEADER_RECHECK).await;
                        continue;
                    }
                    let known = metrics.wait_for(|metrics| metrics.current_leader.is_some());
                    known
                        .await
                        .map_err(|_| format!("the {} stopped", self.group))?;
                }
                outcome => break outcome,
            }
        };
        let read_point = match read_point {
            Ok(read_point) => read_point,
            Err(Routed::NotLeader(Some(leader))) => {
                *stage.lock() = "asking the leader for its read point";
                let asked = network::probe_read_point(self.transport.as_ref(), &leader, self.group);
                let read_point = asked.await;
                if read_point.is_none() {
                    // A sleeping group's leader may be lost, and no caller
                    // may come to find out: this member looks, as for one.
                    self.stir_follower();
                    return Err(format!(
                        "the {}'s leader at {leader} gave no read point (it did not answer, \
                         no longer leads, or runs an earlier build)",
                        self.group
                    ));
                }
                read_point
            }
            Err(Routed::Unavailable(why)) => return Err(format!("the {}: {why}", self.group)),
            Err(Routed::NotLeader(None) | Routed::Answer(_)) => {
                return Err(format!("the {} has no leader here", self.group));
            }
        };
        *stage.lock() = "applying up to the leader's read point";
        // A leader applied its own before it answered.
        (self.raft.wait(None))
            .applied_index_at_least(read_point, "the leader's read point applied")
            .await
            .map_err(|err| format!("the {} stopped: {err}", self.group))?;
        Ok(())
    }

    /// Answers a Raft message from another member.
    /// Answers one of Raft's messages (or a probe) sent to member `to`:
    /// refused when that is not this member. Messages go by address, and a
    /// node that replaced another at an address it once had, or a member
    /// started again with another id, must not answer for a member it is
    /// not (its votes and log are not that member's). `None`: a sender
    /// that does not say (a probe, or a build before targets).
    pub async fn handle_rpc(
        &self,
        rpc: RaftRpc,
        body: &[u8],
        to: Option<u64>,
    ) -> Result<Vec<u8>, String> {
        if let Some(to) = to
            && to != self.id
        {
            return Err(format!(
                "this is member {} of the {}, not member {to}",
                self.id, self.group
            ));
        }
        match rpc {
            RaftRpc::Probe => {
                // A body that is not a request asks nothing more.
                let asked: network::ProbeRequest = serde_json::from_slice(body).unwrap_or_default();
                let read_point = match asked.read_point {
                    true => self.read_point().await,
                    false => None,
                };
                let leading = leads(&self.raft);
                let acknowledged = (asked.acknowledged_by)
                    .filter(|_| leading)
                    .map(|id| matched(&self.raft.metrics().borrow(), id).is_some());
                let answer = network::ProbeAnswer {
                    leading,
                    log_version: self.versions.runs(),
                    read_point,
                    acknowledged,
                };
                serde_json::to_vec(&answer)
                    .map_err(|err| format!("encoding a probe's answer: {err}"))
            }
            rpc => network::serve(&self.raft, rpc, body).await,
        }
    }

    /// Snapshots this member's replica and purges its log up to the
    /// snapshot, whatever `keep_after_snapshot` says. For an index group
    /// after its member's root split into it: then no member holds an entry
    /// of the group from before its replica was seeded, and a member added
    /// later is sent a snapshot, whoever leads
    /// (`docs/design/index-on-the-ring.md`). `Err` says why not.
    pub async fn compact_log(&self) -> Result<u64, String> {
        let Some(applied) = self.status().last_applied else {
            return Err("nothing applied yet".into());
        };
        let fatal = |err: openraft::error::Fatal<u64>| err.to_string();
        self.raft.trigger().snapshot().await.map_err(fatal)?;
        let mut metrics = self.raft.metrics();
        let taken = tokio::time::timeout(COMPACTION_WAIT, async {
            loop {
                let snapshot = metrics.borrow().snapshot;
                if let Some(snapshot) = snapshot.filter(|snapshot| snapshot.index >= applied) {
                    return Some(snapshot.index);
                }
                if metrics.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await;
        let Ok(Some(snapshot)) = taken else {
            return Err(format!("no snapshot past entry {applied} was taken"));
        };
        self.raft
            .trigger()
            .purge_log(snapshot)
            .await
            .map_err(fatal)?;
        Ok(snapshot)
    }

    /// The group this member belongs to.
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// This member's view of the group, for `/metrics` and status pages.
    pub fn status(&self) -> MetaStatus {
        let metrics = self.raft.metrics().borrow().clone();
        MetaStatus {
            id: self.id,
            leader: metrics.current_leader,
            term: metrics.current_term,
            last_log_index: metrics.last_log_index,
            last_applied: metrics.last_applied.map(|log_id| log_id.index),
            snapshot: metrics.snapshot.map(|log_id| log_id.index),
            purged: metrics.purged.map(|log_id| log_id.index),
            hibernating: self.hibernation.asleep(),
            log_version: self.versions.group(),
            runs_log_version: self.versions.runs(),
            stopped: self.stopped(),
            voters: metrics.membership_config.membership().voter_ids().collect(),
        }
    }

    /// Why this member's part of the group stopped, if it did on its own:
    /// a fatal error, or a Raft core that ended (a panic) without saying
    /// why; not a shutdown. (A panic of the state machine's worker leaves
    /// the core waiting for it, which nothing here can tell.)
    fn stopped(&self) -> Option<String> {
        let metrics = self.raft.metrics();
        // Whether the core went, before its last word: a core shut down
        // says `Stopped` before it lets go.
        let ended = metrics.has_changed().is_err();
        let stopped = match &metrics.borrow().running_state {
            Err(openraft::error::Fatal::Stopped) => None,
            Err(fatal) => Some(fatal.to_string()),
            Ok(()) if ended => Some("the group's Raft core ended".into()),
            Ok(()) => None,
        };
        // The state machine's own words first: the core may have seen
        // only its worker's channel close.
        stopped.map(|core| self.apply_failure.lock().clone().unwrap_or(core))
    }

    /// The gateways following the group's feed, as the leader, which
    /// answers the feed's polls, knows them; none on another member (its
    /// replica holds the marks the last trim recorded, not the polls).
    pub fn feed_followers(&self) -> Vec<strata_store::FeedFollower> {
        match leads(&self.raft) {
            true => self.store.feed_followers(),
            false => Vec::new(),
        }
    }

    /// Changes the group's members, on the leader (elsewhere the answer is
    /// the leader's address); the answer is the members after the change.
    pub async fn change_membership(&self, change: MembershipChange) -> Result<Membership, Routed> {
        use openraft::ChangeMembers;
        if let Err(refusal) = self.leading().await {
            self.stir_follower();
            return Err(refusal);
        }
        match change {
            // openraft keeps a leader that lost its majority leading: the
            // members it shows are a leader's only once a majority said so,
            // as for a read.
            MembershipChange::Show => {
                if let Some(refusal) = self.confirm_leadership().await {
                    return Err(refusal);
                }
            }
            _ => self.hibernation.stir_leader(&self.raft),
        }
        let refused = |why: String| Err(Routed::Unavailable(why));
        let known = self.membership();
        let changes = match change {
            // With the version each member runs: an upgrade's progress.
            MembershipChange::Show => {
                let runs = self.member_versions(&known).await;
                return Ok(Membership { runs, ..known });
            }
            // Done already (see `Remove` below).
            MembershipChange::Add {
                id,
                address,
                replacing,
            } if self.membership_settled()
                && known.members.get(&id) == Some(&address)
                && !(replacing.iter()).any(|old| *old != id && known.members.contains_key(old)) =>
            {
                return Ok(known);
            }
            MembershipChange::Add {
                id,
                address,
                replacing,
            } => {
                let listed = known.members.get(&id).or(known.learners.get(&id));
                if listed.is_some_and(|listed| *listed != address) {
                    return refused(format!(
                        "member {id} is already at {}: remove it first",
                        listed.map_or("", String::as_str)
                    ));
                }
                let leaving: BTreeSet<u64> = replacing
                    .into_iter()
                    .filter(|old| *old != id && known.members.contains_key(old))
                    .collect();
                // Voting already: a change cut short, which this finishes
                // (openraft takes a joint configuration on to its last
                // one), and only the replaced leave.
                if known.members.contains_key(&id) {
                    return self.changed(self.voting(id, &leaving)).await;
                }
                // openraft's own blocking add gives up waiting after a
                // moment and answers all the same: the catching up is
                // waited for here, so a member that does not answer never
                // becomes a voter.
                let added = {
                    let _no_raise = self.version_changes.lock().await;
                    self.check_log_version_of(id, &address).await?;
                    // Bounded: the lock must not be held by an add that
                    // lost its majority.
                    let adding = self.raft.add_learner(id, BasicNode::new(address), false);
                    tokio::time::timeout(QUORUM_WAIT, adding).await
                };
                let target = match added {
                    Ok(Ok(added)) => added.log_id.index,
                    Ok(Err(err)) => return Err(self.refusal(err.to_string()).await),
                    Err(_) => {
                        return refused(
                            "no majority of the metadata service took the new member in time: \
                             add it again"
                                .into(),
                        );
                    }
                };
                let caught_up = self
                    .raft
                    .wait(Some(CATCH_UP_WAIT))
                    .metrics(
                        |metrics| {
                            matched(metrics, id).is_some_and(|matched| matched.index >= target)
                        },
                        "the new member caught up",
                    )
                    .await;
                if caught_up.is_err() {
                    return refused(format!(
                        "member {id} did not catch up with the log in {} s (it stays a \
                         learner: add it again, or remove it)",
                        CATCH_UP_WAIT.as_secs()
                    ));
                }
                self.voting(id, &leaving)
            }
            MembershipChange::Remove { id } if known.members.contains_key(&id) => {
                ChangeMembers::RemoveVoters([id].into())
            }
            MembershipChange::Remove { id } if known.learners.contains_key(&id) => {
                ChangeMembers::RemoveNodes([id].into())
            }
            // Done already: a change the index groups did not all take is
            // finished by making it again, which finds the root's done. (A
            // change cut short in a joint configuration still lists the
            // member, and goes on to finish it.)
            MembershipChange::Remove { .. } if self.membership_settled() => return Ok(known),
            MembershipChange::Remove { id } => {
                return refused(format!(
                    "member {id} is not listed, but a membership change is under way: \
                     make it again in a moment"
                ));
            }
        };
        self.changed(changes).await
    }

    /// The change that makes member `id` (a learner caught up, or a voter
    /// of a change cut short) vote, `leaving` leaving in the same change.
    /// The voters are those of the group's latest configuration, read now
    /// (the members may have changed while a new one caught up), not the
    /// union of a joint configuration, which would bring back a voter a
    /// change cut short was taking out; and always with `id`, which such a
    /// change may have been taking out.
    fn voting(&self, id: u64, leaving: &BTreeSet<u64>) -> openraft::ChangeMembers<u64, BasicNode> {
        use openraft::ChangeMembers;
        if leaving.is_empty() {
            return ChangeMembers::AddVoterIds([id].into());
        }
        let metrics = self.raft.metrics().borrow().clone();
        let configs = metrics.membership_config.membership().get_joint_config();
        let latest = configs.last().cloned().unwrap_or_default();
        let voters = latest.into_iter().filter(|voter| !leaving.contains(voter));
        ChangeMembers::ReplaceAllVoters(voters.chain([id]).collect())
    }

    /// Makes `changes` to the group's members (removed voters leave
    /// altogether); the answer is the members after.
    async fn changed(
        &self,
        changes: openraft::ChangeMembers<u64, BasicNode>,
    ) -> Result<Membership, Routed> {
        let refused = |why: String| Err(Routed::Unavailable(why));
        // openraft commits a change in two entries, the second driven by
        // the caller's future: run it in a task of its own, so that a
        // caller that gives up does not leave the group between the two.
        let raft = self.raft.clone();
        let changing = tokio::spawn(async move { raft.change_membership(changes, false).await });
        match tokio::time::timeout(QUORUM_WAIT, changing).await {
            Err(_) => refused(
                "no majority of the metadata service answered in time: the change may be \
                 half made; make it again to finish it"
                    .into(),
            ),
            Ok(Err(err)) => refused(format!("membership change task: {err}")),
            Ok(Ok(Err(err))) => Err(self.refusal(err.to_string()).await),
            Ok(Ok(Ok(_))) => Ok(self.membership()),
        }
    }

    /// A change refused: sent to the leader if leadership moved meanwhile.
    async fn refusal(&self, why: String) -> Routed {
        match self.leading().await {
            Ok(()) => Routed::Unavailable(why),
            Err(not_leader) => not_leader,
        }
    }

    /// `Ok` while this member leads, else where to go.
    async fn leading(&self) -> Result<(), Routed> {
        match leads(&self.raft) {
            true => Ok(()),
            false => {
                let leader = self.raft.current_leader().await.filter(|id| *id != self.id);
                Err(Routed::NotLeader(address_of(&self.raft, leader)))
            }
        }
    }

    /// Resolves once this member follows a leader other than the member at
    /// `address` and other than the one it followed when this was called:
    /// a caller waiting on that member for an answer then knows it was
    /// deposed (cut off from the others, say) and will not answer. (A
    /// caller sent on to a new leader that this member has not heard of yet
    /// is not told so.) Pending while no leader is known.
    pub async fn leader_moved_from(&self, address: &str) {
        let leader_address = |metrics: &openraft::RaftMetrics<u64, BasicNode>| {
            let leader = metrics.current_leader?;
            let membership = metrics.membership_config.membership();
            membership.get_node(&leader).map(|node| node.addr.clone())
        };
        let mut metrics = self.raft.metrics();
        let followed = leader_address(&metrics.borrow());
        let moved = metrics
            .wait_for(|metrics| {
                leader_address(metrics)
                    .is_some_and(|leader| leader != address && Some(&leader) != followed.as_ref())
            })
            .await
            .is_ok();
        if !moved {
            // Raft stopped: it will name no other leader.
            std::future::pending::<()>().await;
        }
    }

    /// Whether the group's membership is one configuration (not the joint
    /// one of a change cut short) that the group has applied: only then
    /// does a member listed, or not, mean a change is done.
    fn membership_settled(&self) -> bool {
        let metrics = self.raft.metrics().borrow().clone();
        let stored = &metrics.membership_config;
        let uniform = stored.membership().get_joint_config().len() == 1;
        let applied = match (stored.log_id(), metrics.last_applied) {
            (None, _) => true,
            (Some(changed), Some(applied)) => changed.index <= applied.index,
            (Some(_), None) => false,
        };
        uniform && applied
    }

    /// The members, as this member's latest membership names them.
    pub fn membership(&self) -> Membership {
        let metrics = self.raft.metrics().borrow().clone();
        let config = metrics.membership_config.membership();
        let addresses = |ids: &mut dyn Iterator<Item = u64>| -> Members {
            ids.filter_map(|id| Some((id, config.get_node(&id)?.addr.clone())))
                .collect()
        };
        Membership {
            leader: metrics.current_leader,
            members: addresses(&mut config.voter_ids()),
            learners: addresses(&mut config.learner_ids()),
            index_groups: 0,
            log_version: self.versions.group(),
            runs: BTreeMap::new(),
        }
    }

    /// Stops taking part in the group (the log and the replica stay; the
    /// group may be started again over the same [`MetaLog`]).
    pub async fn shutdown(&self) {
        if let Err(err) = self.raft.shutdown().await {
            tracing::warn!(error = %err, "raft did not shut down cleanly");
        }
        self.claim.release();
    }
}

/// A member's view of its group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetaStatus {
    pub id: u64,
    pub leader: Option<u64>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
    /// The last entry in this member's snapshot, if it has one.
    pub snapshot: Option<u64>,
    /// The last entry purged from this member's log.
    pub purged: Option<u64>,
    /// This member's part of the group sleeps: as the leader, it sends no
    /// heartbeats; as a follower, it stands for no election.
    pub hibernating: bool,
    /// The group's log version (`versions.rs`), as this member applied it.
    #[serde(default)]
    pub log_version: u32,
    /// The newest log version this member applies (0: a build before log
    /// versions).
    #[serde(default)]
    pub runs_log_version: u32,
    /// Why this member's part of the group stopped, if it did: it takes no
    /// message until it restarts (a failure of its replica's database, an
    /// entry of a newer build, an index group's replica that its root's
    /// split did not seed: remove the member and add it again).
    #[serde(default)]
    pub stopped: Option<String>,
    /// The group's voting members, as this member last learnt them (empty
    /// from a build before it said).
    #[serde(default)]
    pub voters: Vec<u64>,
}

/// The leader appends the deletion of expired objects and the trimming of
/// the change feed now and then: replicas never change anything outside
/// the log.
async fn maintain_while_leading(service: std::sync::Weak<MetaService>) {
    let Some(mut server_metrics) = service
        .upgrade()
        .map(|service| service.raft.server_metrics())
    else {
        return;
    };
    let mut ticker = tokio::time::interval(MAINTENANCE_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The term this member leads in, and since when (as seen by this loop:
    // late by a tick at most, which only delays the first trim).
    let mut leading: Option<(u64, std::time::Instant)> = None;
    let mut follows = false;
    loop {
        // A member that does not lead has nothing to do until that changes
        // (idle groups cost their members as little as can be).
        let open = match follows {
            false => {
                ticker.tick().await;
                true
            }
            true => server_metrics.changed().await.is_ok(),
        };
        let Some(service) = service.upgrade().filter(|_| open) else {
            return;
        };
        // Judged by the server metrics, which openraft sends before the
        // others: what woke this loop is there.
        let led = {
            let metrics = server_metrics.borrow_and_update();
            let leads = metrics.state == openraft::ServerState::Leader;
            leads.then_some(metrics.vote.leader_id.term)
        };
        let Some(term) = led else {
            leading = None;
            follows = true;
            continue;
        };
        follows = false;
        let since = match leading {
            Some((led_term, since)) if led_term == term => since,
            _ => {
                let now = std::time::Instant::now();
                leading = Some((term, now));
                now
            }
        };
        if service.versions.group() < service.versions.runs() {
            // In a task of its own: a member that does not answer holds it
            // up for a probe's wait, not the expiry and trimming below.
            let raising = service.clone();
            tokio::spawn(async move { raising.raise_log_version().await });
        }
        // Each call with the log version it needs, as a caller's.
        let needs = |call: &[u8]| Store::meta_call_kind(call).map_or(0, |kind| kind.log_version);
        let now_secs = (unix_ms().max(0) as u64) / 1000;
        let expiry = Store::expiry_call(now_secs);
        // A sweep per entry, while some are due (each applied before the
        // next is asked for), as the embedded store's round.
        for _ in 0..strata_store::SWEEPS_PER_ROUND {
            if !service.store.expiry_due(now_secs).await.unwrap_or(false) {
                break;
            }
            if let Routed::Unavailable(why) = service.write(&expiry, needs(&expiry), None).await {
                tracing::debug!(%why, "expiry not logged");
                break;
            }
        }
        match service.store.feed_trim_call(since).await {
            Ok(Some(call)) => {
                if let Routed::Unavailable(why) = service.write(&call, needs(&call), None).await {
                    tracing::debug!(%why, "feed trimming not logged");
                }
            }
            Ok(None) => {}
            Err(err) => tracing::warn!(error = %err, "change feed trimming not planned"),
        }
    }
}

/// A round's outcome, for the other reads of the same round.
fn clone_outcome(outcome: &Result<Option<u64>, Routed>) -> Result<Option<u64>, Routed> {
    outcome.as_ref().copied().map_err(Routed::clone_refusal)
}

/// Whether this member is the leader. Its state says so, not
/// `current_leader`: a leader that removed itself keeps its own vote (and
/// so names itself) after it stepped down.
/// The last log entry the leader whose `metrics` these are knows member
/// `id` holds (`None`: it has not heard `id` acknowledge any, or does not
/// lead).
fn matched(
    metrics: &openraft::RaftMetrics<u64, BasicNode>,
    id: u64,
) -> Option<openraft::LogId<u64>> {
    metrics.replication.as_ref()?.get(&id).cloned().flatten()
}

pub(crate) fn leads(raft: &Raft<TypeConfig>) -> bool {
    leading_term(raft).is_some()
}

/// The term this member leads in, if it leads (as [`leads`] decides).
fn leading_term(raft: &Raft<TypeConfig>) -> Option<u64> {
    let metrics = raft.metrics();
    let metrics = metrics.borrow();
    (metrics.state == openraft::ServerState::Leader).then_some(metrics.current_term)
}

/// The address of member `id`, as the group's membership names it.
fn address_of(raft: &Raft<TypeConfig>, id: Option<u64>) -> Option<String> {
    let id = id?;
    let metrics = raft.metrics();
    let metrics = metrics.borrow();
    metrics
        .membership_config
        .membership()
        .get_node(&id)
        .map(|node| node.addr.clone())
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}
