//! Idle groups hibernate (`docs/design/index-on-the-ring.md`). A member
//! runs a group per index partition, and an awake group's leader sends each
//! follower a heartbeat every 750 ms (openraft's tick) whether anything
//! changes or not.
//!
//! A leader whose group appended nothing for a while, and whose followers
//! all hold its whole log, appends a *hibernate* entry ([`MetaEntry`] with
//! `hibernate` set) and stops its timers once every follower holds that
//! too; each follower that applies it, while following the leader that
//! wrote it, stops its own. No heartbeat is sent while the group sleeps: a
//! change is sent to the followers as always (heartbeats carry nothing it
//! needs), a read confirms the leader with a round of its own, and a
//! follower asked for something probes its leader (below). It wakes:
//! - for a change: the leader's timers go on before it appends (or as soon
//!   as it sees its log grow), and a follower's when it applies any later
//!   entry;
//! - when the leader is lost: a sleeping follower that is asked for
//!   something (which it sends on to the leader) asks the leader whether it
//!   still leads ([`crate::RaftRpc::Probe`], once a second at most); one that does
//!   not answer so is taken for lost, and the follower stands for election
//!   at once, its timers on again;
//! - when the term or the leader changes (a member without the hibernate
//!   entry, back from a restart, stands for election): a sleeping
//!   follower's timers go on, and a leader elected again sends heartbeats.
//!
//! Hibernation changes when messages are sent, never what Raft decides: a
//! member that misses one of these steps costs the group an election, not
//! a change. The state machine records whether the last entry it applied was
//! a hibernate entry, so a member restarted while its group sleeps falls
//! asleep again (a leader restarted in place leads again in its term). A
//! group whose member is down or behind does not hibernate. What openraft
//! 0.9 cannot switch off: its tick task wakes every 750 ms even while the
//! tick is off (it then sends the core nothing).
//!
//! Members of an earlier build apply a hibernate entry as an entry without
//! calls and keep their timers on: a group hibernates only once its log
//! version says every member sleeps at one (`versions.rs`).

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use openraft::{LogId, Raft, ServerState};
use tokio::sync::watch;

use crate::{
    ELECTION_TIMEOUT_MAX, ELECTION_TIMEOUT_MIN, GroupId, HEARTBEAT, MetaEntry, MetaService,
    QUORUM_WAIT, RaftTransport, TypeConfig,
};

/// How often a sleeping follower asked for something asks its leader
/// whether it still leads, at most.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// How long a follower waits for its leader to answer a probe: as long as
/// an awake follower goes at least without a heartbeat before it stands
/// for election, so a leader is taken for lost about as readily asleep as
/// awake. (A leader whose process died refuses the connection at once: its
/// group elects another without waiting at all.)
const PROBE_WAIT: Duration = Duration::from_millis(ELECTION_TIMEOUT_MAX + ELECTION_TIMEOUT_MIN);

/// One member's hibernation in one group.
pub(crate) struct Hibernation {
    /// The hibernate entry this member applied last, while no other entry
    /// was applied after it (the state machine sets it).
    applied: watch::Sender<Option<LogId<u64>>>,
    leader: parking_lot::Mutex<LeaderSleep>,
    /// Wakes the leader's side of [`sleep_when_idle`].
    leader_woken: tokio::sync::Notify,
    follower: parking_lot::Mutex<FollowerSleep>,
}

#[derive(Default)]
struct LeaderSleep {
    /// The term in which this member, leading, stopped its heartbeats.
    asleep_in: Option<u64>,
    /// Changes so far: the group is idle only while this stays the same.
    stirs: u64,
}

#[derive(Default)]
struct FollowerSleep {
    /// The hibernate entry at which this member, following, stopped its
    /// election timer.
    asleep_at: Option<LogId<u64>>,
    /// A hibernate entry this member woke from because its leader did not
    /// answer: it does not fall asleep at it again.
    woken_from: Option<LogId<u64>>,
    /// When this member last asked its leader whether it leads.
    probed: Option<Instant>,
}

impl Hibernation {
    pub(crate) fn new() -> Arc<Hibernation> {
        Arc::new(Hibernation {
            applied: watch::Sender::new(None),
            leader: parking_lot::Mutex::default(),
            leader_woken: tokio::sync::Notify::new(),
            follower: parking_lot::Mutex::default(),
        })
    }

    /// The state machine applied entries up to `last`, a hibernate entry or
    /// not.
    pub(crate) fn applied(&self, last: LogId<u64>, hibernate: bool) {
        let now = hibernate.then_some(last);
        self.applied.send_if_modified(|applied| {
            let changed = *applied != now;
            *applied = now;
            changed
        });
    }

    /// The last entry applied, if it is a hibernate entry.
    pub(crate) fn last_hibernate(&self) -> Option<LogId<u64>> {
        *self.applied.borrow()
    }

    /// Whether this member's part of the group sleeps.
    pub(crate) fn asleep(&self) -> bool {
        self.leader.lock().asleep_in.is_some() || self.follower.lock().asleep_at.is_some()
    }

    /// A change is about to be appended: the leader's heartbeats go on, and
    /// the idle clock starts again.
    pub(crate) fn stir_leader(&self, raft: &Raft<TypeConfig>) {
        let mut leader = self.leader.lock();
        leader.stirs += 1;
        if leader.asleep_in.take().is_some() {
            set_awake(raft, true);
            self.leader_woken.notify_one();
        }
    }

    /// Stops the leader's heartbeats in `term`, unless the group was
    /// stirred since `stirs` (its hibernate entry was appended then).
    fn sleep_leader(&self, raft: &Raft<TypeConfig>, term: u64, stirs: u64) -> bool {
        let mut leader = self.leader.lock();
        if leader.stirs != stirs {
            return false;
        }
        leader.asleep_in = Some(term);
        set_awake(raft, false);
        true
    }

    /// Heartbeats go on again on a member that no longer leads in the term
    /// it fell asleep in (it may lead again, in another).
    fn wake_leader_unless_in(&self, raft: &Raft<TypeConfig>, term: Option<u64>) {
        let mut leader = self.leader.lock();
        if leader.asleep_in.is_some() && leader.asleep_in != term {
            leader.asleep_in = None;
            set_awake(raft, true);
        }
    }
}

/// Turns this member's timers on or off: openraft's tick, which drives
/// both a leader's heartbeats and a follower's election timeout, and each
/// of those (a leader does not stand for election, a follower sends no
/// heartbeats, so one switch serves both sides).
fn set_awake(raft: &Raft<TypeConfig>, awake: bool) {
    let runtime = raft.runtime_config();
    runtime.heartbeat(awake);
    runtime.elect(awake);
    runtime.tick(awake);
}

impl MetaService {
    /// A caller reached this member, which does not lead: if it sleeps, its
    /// leader may be lost, which nobody else notices while the group
    /// sleeps. It asks the leader whether it still leads, and stands for
    /// election if it does not say so.
    pub(crate) fn stir_follower(&self) {
        let hibernation = self.hibernation.clone();
        let slept = {
            let mut follower = hibernation.follower.lock();
            let Some(slept) = follower.asleep_at else {
                return;
            };
            if follower
                .probed
                .is_some_and(|probed| probed.elapsed() < PROBE_INTERVAL)
            {
                return;
            }
            follower.probed = Some(Instant::now());
            slept
        };
        let (raft, transport, group) = (self.raft.clone(), self.transport.clone(), self.group);
        tokio::spawn(async move {
            let leader = slept.leader_id.node_id;
            let leading = match crate::address_of(&raft, Some(leader)) {
                Some(address) => leads_at(transport.as_ref(), &address, group).await,
                None => false,
            };
            if leading {
                return;
            }
            {
                let mut follower = hibernation.follower.lock();
                // Not if it woke meanwhile, or fell asleep at another entry.
                if follower.asleep_at != Some(slept) {
                    return;
                }
                follower.asleep_at = None;
                follower.woken_from = Some(slept);
                set_awake(&raft, true);
            }
            tracing::info!(%group, leader, "a hibernating group's leader does not answer: electing");
            if let Err(err) = raft.trigger().elect().await {
                tracing::warn!(%group, error = %err, "election not started");
            }
        });
    }
}

/// Whether the member at `address` answers that it leads `group`.
async fn leads_at(transport: &dyn RaftTransport, address: &str, group: GroupId) -> bool {
    let answer = crate::network::probe(transport, address, group, PROBE_WAIT).await;
    answer.is_some_and(|answer| answer.leading)
}

/// A follower's side: its election timer goes off when it applies a
/// hibernate entry of the leader it follows, and on again when a later
/// entry is applied or the term or the leader changes.
pub(crate) async fn follow(service: Weak<MetaService>) {
    let (mut applied, mut metrics, id) = match service.upgrade() {
        // Server metrics change with the vote, state and leader only, not
        // with every entry.
        Some(service) => (
            service.hibernation.applied.subscribe(),
            service.raft.server_metrics(),
            service.id,
        ),
        None => return,
    };
    // Judged at once too: a member restarted while its group sleeps
    // starts with its hibernate entry applied and its leader known.
    let mut changed = true;
    while changed {
        let Some(service) = service.upgrade() else {
            return;
        };
        let hibernate_entry = *applied.borrow_and_update();
        let seen = {
            let metrics = metrics.borrow_and_update();
            Seen {
                state: metrics.state,
                term: metrics.vote.leader_id.term,
                leader: metrics.current_leader,
            }
        };
        judge(&service, id, hibernate_entry, seen);
        drop(service);
        changed = tokio::select! {
            changed = applied.changed() => changed.is_ok(),
            changed = metrics.changed() => changed.is_ok(),
        };
    }
}

/// What a follower sees of its group.
struct Seen {
    state: ServerState,
    term: u64,
    leader: Option<u64>,
}

/// Turns member `id`'s timers off or on, as [`follow`] says.
fn judge(service: &MetaService, id: u64, hibernate_entry: Option<LogId<u64>>, seen: Seen) {
    let mut follower = service.hibernation.follower.lock();
    if let Some(slept) = follower.asleep_at
        && (hibernate_entry != Some(slept)
            || seen.term != slept.leader_id.term
            || seen.leader != Some(slept.leader_id.node_id))
    {
        follower.asleep_at = None;
        set_awake(&service.raft, true);
    }
    // Asleep again at once at a later hibernate entry (the leader may
    // write one while its followers sleep at another: restarted in place).
    if follower.asleep_at.is_none()
        && let Some(entry) = hibernate_entry
    {
        let writer = entry.leader_id.node_id;
        if seen.state == ServerState::Follower
            && writer != id
            && seen.term == entry.leader_id.term
            && seen.leader == Some(writer)
            && follower.woken_from != Some(entry)
        {
            follower.asleep_at = Some(entry);
            set_awake(&service.raft, false);
        }
    }
}

/// What must stay the same for a leader's group to be idle.
#[derive(Clone, Copy, PartialEq, Eq)]
struct LeaderState {
    term: u64,
    /// The last entry's index.
    last: Option<u64>,
    /// [`LeaderSleep::stirs`].
    stirs: u64,
}

/// What [`sleep_when_idle`] waits for before it looks again.
enum Next {
    /// Its next tick, the first at once (awake, leading).
    Tick,
    /// A change of vote, state or leader (not leading).
    LeaderChange,
    /// Anything (asleep, leading): a stir, or the leader's metrics, which
    /// change as its log grows.
    Anything,
}

/// The leader's side: once nothing was appended for `idle`, and every
/// follower holds the whole log, it appends a hibernate entry, then stops
/// its timers once every follower holds that too. Asleep, it wakes when
/// stirred, when its log grows (a change appended without a stir) or when
/// it no longer leads in the term it fell asleep in.
pub(crate) async fn sleep_when_idle(service: Weak<MetaService>, idle: Duration) {
    let (mut server_metrics, mut metrics, hibernation) = match service.upgrade() {
        Some(service) => (
            service.raft.server_metrics(),
            service.raft.metrics(),
            service.hibernation.clone(),
        ),
        None => return,
    };
    let mut ticker = tokio::time::interval(Duration::from_millis(HEARTBEAT));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The leader's state when it was last seen to change, and since when.
    let mut unchanged: Option<(LeaderState, Instant)> = None;
    let mut next = Next::Tick;
    loop {
        let open = match next {
            Next::Tick => {
                ticker.tick().await;
                true
            }
            Next::LeaderChange => server_metrics.changed().await.is_ok(),
            Next::Anything => tokio::select! {
                changed = server_metrics.changed() => changed.is_ok(),
                changed = metrics.changed() => changed.is_ok(),
                () = hibernation.leader_woken.notified() => true,
            },
        };
        let Some(service) = service.upgrade().filter(|_| open) else {
            return;
        };
        let raft = &service.raft;
        // Judged by the server metrics, which openraft sends before the
        // others: what woke this loop is there.
        let (state, term) = {
            let server = server_metrics.borrow_and_update();
            (server.state, server.vote.leader_id.term)
        };
        let leading = state == ServerState::Leader;
        hibernation.wake_leader_unless_in(raft, leading.then_some(term));
        if !leading {
            unchanged = None;
            next = Next::LeaderChange;
            continue;
        }
        let seen = metrics.borrow_and_update().clone();
        if seen.state != ServerState::Leader || seen.current_term != term {
            // The other metrics trail by a moment.
            next = Next::Tick;
            continue;
        }
        let last = seen.last_log_index;
        // The last entry is a hibernate entry of this term, applied here.
        let hibernate_last = hibernation
            .last_hibernate()
            .filter(|entry| Some(entry.index) == last && entry.leader_id.term == seen.current_term);
        let (asleep, stirs) = {
            let leader = hibernation.leader.lock();
            (leader.asleep_in.is_some(), leader.stirs)
        };
        if asleep {
            if hibernate_last.is_none() {
                // Appended to without a stir (a membership change found
                // done, say, or a stir that lost the race with this sleep).
                hibernation.stir_leader(raft);
                next = Next::Tick;
            } else {
                next = Next::Anything;
            }
            continue;
        }
        next = Next::Tick;
        let state = LeaderState {
            term: seen.current_term,
            last,
            stirs,
        };
        let since = match unchanged {
            Some((before, since)) if before == state => since,
            _ => {
                let now = Instant::now();
                unchanged = Some((state, now));
                now
            }
        };
        let applied = seen.last_applied.map(|log_id| log_id.index);
        let followers_hold_all = seen.replication.as_ref().is_some_and(|matched| {
            matched
                .values()
                .all(|log_id| log_id.map(|log_id| log_id.index) == last)
        });
        // Not before every member keeps its timers off for a hibernate
        // entry (`versions.rs`).
        let understood = service.versions.group() >= crate::versions::HIBERNATION;
        if applied != last || !followers_hold_all || since.elapsed() < idle || !understood {
            continue;
        }
        if hibernate_last.is_some() {
            // Every follower holds it: they sleep, or will once they apply
            // it. Not if stirred since `stirs` was read.
            if hibernation.sleep_leader(raft, seen.current_term, stirs) {
                tracing::debug!(group = %service.group, "group hibernating");
                next = Next::Anything;
            }
            continue;
        }
        let written =
            tokio::time::timeout(QUORUM_WAIT, raft.client_write(MetaEntry::hibernate())).await;
        match written {
            // The idle clock goes on across the entry: the group sleeps as
            // soon as every follower holds it.
            Ok(Ok(written)) => {
                let state = LeaderState {
                    last: Some(written.log_id.index),
                    ..state
                };
                unchanged = Some((state, since));
            }
            Ok(Err(err)) => tracing::debug!(error = %err, "hibernate entry not appended"),
            Err(_) => tracing::debug!("hibernate entry not committed in time"),
        }
    }
}
