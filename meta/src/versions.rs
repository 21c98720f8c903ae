//! Log versions: how members of two builds run one group side by side, as
//! in a rolling upgrade, without a member applying an entry it does not
//! understand (its replica would silently stop matching the others').
//!
//! Each build runs a [`LOG_VERSION`]: the newest kind of entry it applies.
//! A group has one too, recorded in every replica with the entries applied
//! (`Marker::log_version`): its leader appends no entry that needs a newer
//! one: it refuses a call of a newer version than the group's
//! (`MetaCallKind::log_version`) until the group is raised, and an entry
//! needs the newest of its calls' versions.
//! Its leader raises it once every member, voters and learners alike,
//! answers a probe ([`crate::RaftRpc::Probe`]) with a version at least as new,
//! by appending an entry that says so (`MetaEntry::activates`); until
//! then the group keeps to what its oldest member applies. Afterwards:
//! - a member is not added while it runs an earlier version than the
//!   group's, or does not say which (a raise and an add are never made
//!   at once: `MetaService::version_changes`);
//! - a member refuses to start over a replica whose group is newer than
//!   its build (a downgrade), and stops rather than apply an entry that
//!   needs a newer build (`MetaEntry::needs`), should one reach it all the
//!   same.
//!
//! A member of a build before this gate answers a probe without a version:
//! it counts as version 0.
//!
//! The versions so far:
//! - 0: every call of the build that brought the gate.
//! - 1: the gate itself, and hibernation (`hibernation.rs`): a member of
//!   an earlier build keeps its timers on through a hibernate entry, so a
//!   group hibernates only at version 1.
//! - 2: the split of a replicated service into index groups
//!   (`SplitIntoIndexGroups`, `strata_store`'s `split.rs`).
//! - 3: the bucket pins of deletes, renames and metadata replacements
//!   (`strata_store::BucketPin`), which an earlier build decodes and
//!   ignores: below 3, every member applies such calls without their pins.
//! - 4: index groups held by storage nodes (`RecordIndexGroups` with
//!   `held_by`), which an earlier build would record as its own.

use std::sync::atomic::{AtomicU32, Ordering};

use std::collections::BTreeMap;
use std::time::Duration;

use crate::network::probe;
use crate::{Membership, MetaService, Routed};

/// How long a member is given to say which version it runs.
const VERSION_PROBE_WAIT: Duration = Duration::from_secs(2);

/// The newest log version this build writes and applies.
pub const LOG_VERSION: u32 = 4;

// A call this build sends is one it applies.
const _: () = assert!(strata_store::NEWEST_CALL_LOG_VERSION <= LOG_VERSION);

/// The log version at which idle groups hibernate.
pub(crate) const HIBERNATION: u32 = 1;

/// One member's log versions in one group.
#[derive(Debug)]
pub(crate) struct LogVersions {
    /// The newest this member applies: its build's [`LOG_VERSION`], or an
    /// earlier one where a test stands in for an earlier build.
    runs: u32,
    /// The group's, as this member's replica recorded it last (the state
    /// machine sets it).
    group: AtomicU32,
}

impl LogVersions {
    pub(crate) fn new(runs: u32) -> LogVersions {
        LogVersions {
            runs,
            group: AtomicU32::new(0),
        }
    }

    /// The newest version this member applies.
    pub(crate) fn runs(&self) -> u32 {
        self.runs
    }

    /// The group's version, as applied here.
    pub(crate) fn group(&self) -> u32 {
        self.group.load(Ordering::Acquire)
    }

    pub(crate) fn set_group(&self, version: u32) {
        self.group.store(version, Ordering::Release);
    }
}

/// Refuses what needs log version `needs` to a member that runs `runs`,
/// saying why.
pub(crate) fn admit(runs: u32, needs: u32) -> Result<(), String> {
    if needs <= runs {
        return Ok(());
    }
    Err(format!(
        "this member runs log version {runs}, and its group's entries need version {needs}: \
         start it with a build at least as new as the group's other members"
    ))
}

impl MetaService {
    /// Raises the group's log version, on the leader, once every member
    /// runs a newer one than the group's: each is asked (at once, so an
    /// unreachable one costs one probe's wait), and one that does not
    /// answer leaves the version as it is.
    /// (Called while the group's version is below this member's.)
    pub(crate) async fn raise_log_version(&self) {
        // One raise at a time, and none while a member is being added.
        let Ok(_raising) = self.version_changes.try_lock() else {
            return;
        };
        // Read under the lock: a raise may have ended since the caller's.
        let group_version = self.versions.group();
        let membership = self.membership();
        let runs = self.member_versions(&membership).await;
        let members = membership.members.len() + membership.learners.len();
        if runs.len() < members {
            tracing::debug!(group = %self.group, "log version not raised: a member does not answer");
            return;
        }
        let oldest = runs.values().copied().min().unwrap_or(group_version);
        if oldest <= group_version {
            return;
        }
        // A group already at a version that hibernates may be asleep: its
        // timers go on before the append, as for any change.
        self.hibernation.stir_leader(&self.raft);
        let entry = crate::MetaEntry::activating(oldest);
        match tokio::time::timeout(crate::QUORUM_WAIT, self.raft.client_write(entry)).await {
            Ok(Ok(_)) => {
                tracing::info!(group = %self.group, version = oldest, "log version raised");
            }
            Ok(Err(err)) => tracing::debug!(error = %err, "log version not raised"),
            Err(_) => tracing::debug!("log version not raised in time"),
        }
    }

    /// The log version each of `membership`'s voters and learners says it
    /// runs (this one included), asked all at once; one that does not
    /// answer within [`VERSION_PROBE_WAIT`] is missing.
    pub(crate) async fn member_versions(&self, membership: &Membership) -> BTreeMap<u64, u32> {
        let mut runs = BTreeMap::new();
        let mut probes = tokio::task::JoinSet::new();
        let members = (membership.members.iter()).chain(&membership.learners);
        for (id, address) in members {
            if *id == self.id {
                runs.insert(self.id, self.versions.runs());
                continue;
            }
            let (id, address) = (*id, address.clone());
            let (transport, group) = (self.transport.clone(), self.group);
            probes.spawn(async move {
                let answer = probe(transport.as_ref(), &address, group, VERSION_PROBE_WAIT).await;
                (id, answer)
            });
        }
        while let Some(probed) = probes.join_next().await {
            if let Ok((id, Some(answer))) = probed {
                runs.insert(id, answer.log_version);
            }
        }
        runs
    }

    /// Refuses to add the member at `address` unless it runs the group's
    /// log version or a newer one (it could not apply the log), or does not
    /// say. The caller holds `version_changes`: no raise comes between this
    /// and the add.
    pub(crate) async fn check_log_version_of(&self, id: u64, address: &str) -> Result<(), Routed> {
        if let Some(refusal) = self.confirm_leadership().await {
            return Err(refusal);
        }
        // Every raise this leader appended is applied here: one whose
        // append outlived its caller's wait may still commit.
        let appended = self.raft.metrics().borrow().last_log_index;
        let applied = (self.raft.wait(Some(crate::QUORUM_WAIT)))
            .applied_index_at_least(appended, "the log applied")
            .await;
        if applied.is_err() {
            return Err(Routed::Unavailable(
                "the leader did not apply its log in time: add the member again".into(),
            ));
        }
        let group_version = self.versions.group();
        if group_version == 0 {
            return Ok(());
        }
        let answer = probe(
            self.transport.as_ref(),
            address,
            self.group,
            VERSION_PROBE_WAIT,
        )
        .await;
        let why = match answer {
            Some(answer) if answer.log_version >= group_version => return Ok(()),
            Some(answer) => format!(
                "member {id} at {address} runs log version {}, and the {} is at version \
                 {group_version}: upgrade it first",
                answer.log_version, self.group
            ),
            None => format!(
                "member {id} at {address} does not say which log version it runs (the {} is \
                 at version {group_version}): start it, then add it again",
                self.group
            ),
        };
        Err(Routed::Unavailable(why))
    }
}

#[cfg(test)]
mod tests {
    use crate::MetaEntry;
    use crate::network::{ProbeAnswer, ProbeRequest};

    /// A build before log versions reads this build's entries of version 0
    /// as its own (they are written as before), and this build reads its
    /// entries and probe answers as version 0.
    #[test]
    fn entries_and_probes_of_version_0_read_as_before() {
        let entry = serde_json::to_string(&MetaEntry::of(Vec::new())).expect("encoded");
        assert_eq!(entry, r#"{"calls":[]}"#);
        let earlier: MetaEntry = serde_json::from_str(r#"{"calls":[]}"#).expect("decoded");
        assert_eq!(
            (earlier.needs, earlier.activates, earlier.hibernate),
            (0, false, false)
        );
        let earlier: ProbeAnswer = serde_json::from_str(r#"{"leading":true}"#).expect("decoded");
        assert_eq!(
            (earlier.leading, earlier.log_version, earlier.read_point),
            (true, 0, None)
        );
        // A plain probe is sent as before read points, which an earlier
        // build answers without one.
        let plain = serde_json::to_string(&ProbeRequest::default()).expect("encoded");
        assert_eq!(plain, "{}");
        let asked: ProbeRequest = serde_json::from_str(r#"{"read_point":true}"#).expect("decoded");
        assert!(asked.read_point);
        let raised = serde_json::to_value(MetaEntry::activating(1)).expect("encoded");
        assert_eq!(
            raised,
            serde_json::json!({"calls": [], "needs": 1, "activates": true})
        );
    }
}
