//! The state machine: a local store that applies the log's calls in order.
//!
//! What has been applied is recorded in the store itself, in the same batch
//! as each applied change (the marker: the last whole entry's log id, how
//! many calls of the next one are applied, and the membership), so a
//! member that restarts neither repeats nor skips a call. Calls that
//! changed nothing leave no marker; applying them again after a restart
//! changes nothing again.
//!
//! Snapshots are the replica's export: a checkpoint of it
//! ([`Store::checkpoint_replica`], the marker inside) taken while no entry
//! is being applied, written out as a file by the builder's own task while
//! entries go on being applied, and kept in the directory beside the
//! log's, so the log can be purged up to it. A member that lacks purged
//! entries receives one into a file of its own and installs it
//! ([`Store::import_replica`]). Neither side holds a snapshot in memory:
//! openraft sends and receives it in chunks of a few MiB. A member that
//! crashed in the middle of an install starts empty and is sent a snapshot
//! again.

use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use openraft::BasicNode;
use openraft::storage::RaftStateMachine;
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use strata_store::{ApplyContext, ReplicaCheckpoint, Store, Tally};
use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

use crate::hibernation::Hibernation;
use crate::versions::{LogVersions, admit};
use crate::{MetaAnswer, MetaEntry, TypeConfig};

type StorageResult<T> = Result<T, StorageError<u64>>;

pub(crate) struct StateMachine {
    /// This member's id.
    id: u64,
    store: Store,
    applied: Marker,
    snapshots: SnapshotFiles,
    /// Told whether the last entry applied was a hibernate entry.
    hibernation: Arc<Hibernation>,
    /// Told the group's log version.
    versions: Arc<LogVersions>,
    /// See [`Shared::follows_root`].
    follows_root: bool,
    /// See [`Shared::failure`].
    failure: ApplyFailure,
}

/// Why the state machine last refused to apply an entry, which stops the
/// member: its own words, which openraft's core may not pass on (it can
/// see the worker's channel close first, and say only that).
pub(crate) type ApplyFailure = Arc<parking_lot::Mutex<Option<String>>>;

/// What a group's state machine shares with its [`crate::MetaService`].
pub(crate) struct Shared {
    pub(crate) hibernation: Arc<Hibernation>,
    pub(crate) versions: Arc<LogVersions>,
    /// The group is an index group of this member's root, in the same
    /// database, and waits for its split (`Tuning::index_groups_follow_root`).
    pub(crate) follows_root: bool,
    /// Told why an apply failed.
    pub(crate) failure: ApplyFailure,
}

/// What the store records of the log.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Marker {
    /// The last entry whose calls are all applied.
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    /// The entry after it when only its first calls are applied: its id
    /// and how many. A member that stops in between applies the others
    /// at its restart, not those again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    partial: Option<(LogId<u64>, usize)>,
    /// `last_applied` is a hibernate entry (`hibernation.rs`): a follower
    /// restarted while its group sleeps falls asleep again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    hibernate: bool,
    /// The group's log version (`versions.rs`): the last raised.
    #[serde(default, skip_serializing_if = "crate::is_zero")]
    log_version: u32,
}

impl Marker {
    /// Tells `hibernation` whether the last entry applied is a hibernate
    /// entry, and `versions` the group's log version.
    fn tell(&self, hibernation: &Hibernation, versions: &LogVersions) {
        if let Some(last) = self.last_applied {
            hibernation.applied(last, self.hibernate);
        }
        versions.set_group(self.log_version);
    }
}

fn state_error(why: impl ToString) -> StorageError<u64> {
    StorageIOError::write_state_machine(openraft::AnyError::error(why)).into()
}

fn snapshot_error(why: impl ToString) -> StorageError<u64> {
    StorageIOError::read_snapshot(None, openraft::AnyError::error(why)).into()
}

impl StateMachine {
    /// Opens the state machine over `store`, with its snapshot kept in
    /// `snapshot_dir` (created if missing). With `follows_root`, the group
    /// is an index group of the root in the same database: it applies calls,
    /// installs and takes snapshots only once that root recorded its index
    /// groups ([`Store::wait_for_root_split`]).
    pub(crate) async fn open(
        id: u64,
        store: Store,
        snapshot_dir: &Path,
        shared: Shared,
    ) -> Result<StateMachine, String> {
        let Shared {
            hibernation,
            versions,
            follows_root,
            failure,
        } = shared;
        if !snapshot_dir.exists() {
            std::fs::create_dir_all(snapshot_dir)
                .map_err(|err| format!("creating {}: {err}", snapshot_dir.display()))?;
            // The new directory's name, or a snapshot kept in it could be
            // lost with it.
            if let Some(parent) = snapshot_dir.parent() {
                sync_dir(parent)?;
            }
        }
        let interrupted = store
            .replica_import_interrupted()
            .await
            .map_err(|err| format!("reading the replica: {err}"))?;
        if interrupted {
            tracing::warn!("a snapshot install was cut short: the replica starts empty");
            store
                .wipe_replica()
                .await
                .map_err(|err| format!("wiping the replica: {err}"))?;
        }
        let applied = match store
            .applied_marker()
            .await
            .map_err(|err| format!("reading the applied marker: {err}"))?
        {
            None => {
                // The log would be applied again on top of what is there.
                let changed = store
                    .feed_since(0, 1)
                    .await
                    .map_err(|err| format!("reading the replica's feed: {err}"))?;
                if !changed.is_empty() {
                    return Err(
                        "the replica's database holds metadata that did not come from the \
                         replicated log (a gateway that held the metadata alone?): a member \
                         starts from an empty data directory"
                            .into(),
                    );
                }
                Marker::default()
            }
            Some(bytes) => serde_json::from_slice(&bytes)
                .map_err(|err| format!("undecodable applied marker: {err}"))?,
        };
        // A replica its group took to a newer version than this build
        // applies (a downgrade) would take entries it does not understand.
        admit(versions.runs(), applied.log_version)?;
        applied.tell(&hibernation, &versions);
        let snapshots = SnapshotFiles::new(snapshot_dir);
        snapshots.remove_leftovers().await?;
        Ok(StateMachine {
            id,
            store,
            applied,
            snapshots,
            hibernation,
            versions,
            follows_root,
            failure,
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>)> {
        Ok((self.applied.last_applied, self.applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<MetaAnswer>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // The whole batch is applied on one blocking thread: a hop per
        // call, to a thread that had to be woken, cost more than the call.
        let entries: Vec<_> = entries.into_iter().collect();
        let mut applier = Applier {
            id: self.id,
            runs: self.versions.runs(),
            store: self.store.clone(),
            applied: self.applied.clone(),
            follows_root: self.follows_root,
        };
        let applied = self
            .store
            .applying(move || async move {
                let answers = applier.apply(entries).await;
                (applier, answers)
            })
            .await
            .map_err(state_error);
        let answers = match applied {
            Ok((applier, answers)) => {
                // Kept even after a failure: it is what the replica holds.
                self.applied = applier.applied;
                answers
            }
            Err(err) => Err(err),
        };
        match &answers {
            Ok(_) => self.applied.tell(&self.hibernation, &self.versions),
            Err(err) => *self.failure.lock() = Some(err.to_string()),
        }
        answers
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        // Not of an index group's replica that its root's split is still
        // to seed: a member that installs it would hold neither.
        let ready = match self.follows_root {
            true => self.store.wait_for_root_split(false).await,
            false => Ok(()),
        };
        // Taken here, between two applies; the builder writes it out in a
        // task of its own while entries go on being applied.
        let checkpoint = match ready {
            Ok(()) => self
                .store
                .checkpoint_replica(self.snapshots.checkpoint_dir())
                .await
                .map_err(|err| err.to_string()),
            Err(err) => Err(err.to_string()),
        };
        SnapshotBuilder {
            last_log_id: self.applied.last_applied,
            membership: self.applied.membership.clone(),
            checkpoint: Some(checkpoint),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<SnapshotFile>> {
        let file = self.snapshots.receiving().await.map_err(state_error)?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<SnapshotFile>,
    ) -> StorageResult<()> {
        // Not while this member's root may still split into the replica.
        if self.follows_root {
            self.store
                .wait_for_root_split(false)
                .await
                .map_err(state_error)?;
        }
        // Checked before it replaces the snapshot kept: a damaged transfer
        // must not take the place of a good one. The same read sums the
        // file for its description.
        // (A duplicate of the file shares its offset: read from the start.)
        let mut check = snapshot
            .file
            .try_clone()
            .await
            .map_err(state_error)?
            .into_std()
            .await;
        check.rewind().map_err(state_error)?;
        let checked = self
            .store
            .check_replica_export(Tally::new(check))
            .await
            .map_err(state_error)?;
        // Kept first: once the replica is replaced, its snapshot must be
        // there to send on.
        let Some(kept) = self
            .snapshots
            .keep_received(meta, *snapshot, checked.sums())
            .await
            .map_err(state_error)?
        else {
            // Older than the one kept (openraft does not send such): the
            // replica is not rolled back, and nothing is wrong with it.
            tracing::info!(last = ?meta.last_log_id, "an older metadata snapshot is not installed");
            return Ok(());
        };
        self.store.import_replica(kept).await.map_err(state_error)?;
        // The replica brings the marker recorded with its last entry: a
        // snapshot taken at a hibernate entry leaves this member asleep,
        // and the group's log version comes with it.
        let recorded = match self.store.applied_marker().await.map_err(state_error)? {
            Some(bytes) => Some(serde_json::from_slice::<Marker>(&bytes).map_err(state_error)?),
            None => None,
        };
        let hibernate = recorded
            .as_ref()
            .is_some_and(|marker| marker.last_applied == meta.last_log_id && marker.hibernate);
        let log_version = recorded.map_or(0, |marker| marker.log_version);
        self.applied = Marker {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            partial: None,
            hibernate,
            log_version,
        };
        // Installed all the same (the snapshot kept must match the replica,
        // which a restart then refuses), and the member stops.
        admit(self.versions.runs(), log_version).map_err(state_error)?;
        self.applied.tell(&self.hibernation, &self.versions);
        tracing::info!(last = ?meta.last_log_id, "metadata snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        self.snapshots.load().await.map_err(snapshot_error)
    }
}

/// Applies entries to the replica, keeping the marker in step.
struct Applier {
    /// This member's id.
    id: u64,
    /// The newest log version this member applies.
    runs: u32,
    store: Store,
    applied: Marker,
    follows_root: bool,
}

impl Applier {
    async fn apply(&mut self, entries: Vec<Entry<TypeConfig>>) -> StorageResult<Vec<MetaAnswer>> {
        let mut answers = Vec::new();
        for entry in entries {
            match entry.payload {
                EntryPayload::Normal(MetaEntry {
                    calls,
                    hibernate,
                    needs,
                    activates,
                }) => {
                    // Not applied otherwise than the others apply it: the
                    // member stops (openraft takes a failed apply as fatal).
                    admit(self.runs, needs).map_err(state_error)?;
                    // Before any lock of the store is taken: the root's
                    // split takes the bucket lock.
                    if self.follows_root && !calls.is_empty() {
                        self.store
                            .wait_for_root_split(true)
                            .await
                            .map_err(state_error)?;
                    }
                    let log_version = if activates {
                        self.applied.log_version.max(needs)
                    } else {
                        self.applied.log_version
                    };
                    // The calls applied before a restart are not applied
                    // again (nobody waits for their answers any more).
                    let done = match self.applied.partial {
                        Some((log_id, done)) if log_id == entry.log_id => done,
                        _ => 0,
                    };
                    // Only the member that proposed the entry has callers
                    // waiting (a member that leads later was not asked).
                    let proposed_here = entry.log_id.leader_id.node_id == self.id;
                    let count = calls.len();
                    let mut answered = vec![Vec::new(); done.min(count)];
                    for (index, call) in calls.into_iter().enumerate().skip(done) {
                        let mut next = self.applied.clone();
                        next.hibernate = false;
                        next.log_version = log_version;
                        if index + 1 == count {
                            next.last_applied = Some(entry.log_id);
                            next.partial = None;
                        } else {
                            next.partial = Some((entry.log_id, index + 1));
                        }
                        let context = ApplyContext {
                            at_ms: call.at_ms,
                            nonce: call.nonce,
                            marker: serde_json::to_vec(&next).map_err(state_error)?,
                            answered: proposed_here,
                            signature: call.signature,
                            log_version,
                        };
                        // A failure of this member's own database is not
                        // the call's answer: the replica would no longer
                        // match the others, so the member stops.
                        let answer = self
                            .store
                            .apply_meta(call.call.as_bytes(), context)
                            .await
                            .map_err(state_error)?;
                        answered.push(answer);
                        self.applied = next;
                    }
                    if count == 0 {
                        // Recorded all the same: a snapshot names the
                        // entry it was taken after, and the log is purged
                        // up to it, so the replica must say it is applied.
                        self.record_applied(entry.log_id, hibernate, log_version)
                            .await?;
                    }
                    answers.push(MetaAnswer(answered));
                }
                // No call to apply, but not to be applied twice either.
                payload => {
                    if let EntryPayload::Membership(membership) = payload {
                        self.applied.membership =
                            StoredMembership::new(Some(entry.log_id), membership);
                    }
                    let log_version = self.applied.log_version;
                    self.record_applied(entry.log_id, false, log_version)
                        .await?;
                    answers.push(MetaAnswer::default());
                }
            }
        }
        Ok(answers)
    }

    /// Records `log_id`, an entry without calls, as applied, with the
    /// group's log version after it.
    async fn record_applied(
        &mut self,
        log_id: LogId<u64>,
        hibernate: bool,
        log_version: u32,
    ) -> StorageResult<()> {
        let next = Marker {
            last_applied: Some(log_id),
            partial: None,
            hibernate,
            log_version,
            membership: self.applied.membership.clone(),
        };
        let marker = serde_json::to_vec(&next).map_err(state_error)?;
        self.store
            .record_applied_marker(marker)
            .await
            .map_err(state_error)?;
        self.applied = next;
        Ok(())
    }
}

/// Builds a snapshot from a checkpoint taken when the builder was made.
pub(crate) struct SnapshotBuilder {
    last_log_id: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    checkpoint: Option<Result<ReplicaCheckpoint, String>>,
    snapshots: SnapshotFiles,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let checkpoint = self
            .checkpoint
            .take()
            .ok_or_else(|| snapshot_error("already built"))?
            .map_err(snapshot_error)?;
        let id = self
            .last_log_id
            .map_or_else(|| "empty".to_owned(), |log_id| log_id.to_string());
        let meta = SnapshotMeta {
            last_log_id: self.last_log_id,
            last_membership: self.membership.clone(),
            snapshot_id: format!("{id}-{:08x}", rand::random::<u32>()),
        };
        let file = self
            .snapshots
            .save(&meta, move |out| {
                checkpoint.export(out).map_err(|err| err.to_string())
            })
            .await
            .map_err(state_error)?;
        tracing::info!(last = ?meta.last_log_id, "metadata snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }
}

/// A snapshot's data as openraft reads, writes and seeks it: a file, and
/// where it is, so that a received one can be kept under its own name.
pub struct SnapshotFile {
    file: tokio::fs::File,
    path: PathBuf,
    /// A file being received is removed if it is dropped before it is
    /// kept: openraft drops one that another stream replaced, one older
    /// than what is committed, and one whose write failed.
    remove_unless_kept: bool,
}

impl Drop for SnapshotFile {
    fn drop(&mut self) {
        if self.remove_unless_kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl AsyncRead for SnapshotFile {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_read(cx, buf)
    }
}

impl AsyncWrite for SnapshotFile {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.file).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_shutdown(cx)
    }
}

impl AsyncSeek for SnapshotFile {
    fn start_seek(mut self: Pin<&mut Self>, position: std::io::SeekFrom) -> std::io::Result<()> {
        Pin::new(&mut self.file).start_seek(position)
    }

    fn poll_complete(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<u64>> {
        Pin::new(&mut self.file).poll_complete(cx)
    }
}

/// The kept snapshot, in the directory beside the log's: its data in a
/// file named by a random suffix (`data-…`), and its description
/// (`snapshot.meta`), which names that file with its length and CRC, so a
/// description always names whole data, and data damaged later is caught
/// when it is loaded. Files being received (`receiving-…`) and checkpoints
/// being exported (`checkpoint-…`) sit beside them until they are done.
#[derive(Clone)]
struct SnapshotFiles {
    dir: PathBuf,
    /// Held while the kept snapshot is replaced or opened, so that one
    /// being kept is never removed as a leftover of another.
    lock: Arc<tokio::sync::Mutex<()>>,
}

const SNAPSHOT_META: &str = "snapshot.meta";
/// The data file of the layout before `data-…` files.
const LEGACY_DATA: &str = "snapshot";
const DATA_PREFIX: &str = "data-";
const RECEIVING_PREFIX: &str = "receiving-";
const CHECKPOINT_PREFIX: &str = "checkpoint-";
/// Buffered between a snapshot file and the CRC over it.
const READ_BUFFER_BYTES: usize = 1 << 20;

#[derive(Serialize, Deserialize)]
struct SnapshotDescription {
    meta: SnapshotMeta<u64, BasicNode>,
    /// The data file's name in the directory.
    file: String,
    len: u64,
    crc32c: u32,
}

fn random_name(prefix: &str) -> String {
    format!("{prefix}{:016x}", rand::random::<u64>())
}

impl SnapshotFiles {
    fn new(dir: &Path) -> SnapshotFiles {
        SnapshotFiles {
            dir: dir.to_owned(),
            lock: Arc::default(),
        }
    }

    /// Where the next checkpoint goes: a name of its own, since one may be
    /// exported while the next is taken.
    fn checkpoint_dir(&self) -> PathBuf {
        self.dir.join(random_name(CHECKPOINT_PREFIX))
    }

    /// Removes what a crash left: files half received, checkpoints, and
    /// data no description names.
    async fn remove_leftovers(&self) -> Result<(), String> {
        let _held = self.lock.lock().await;
        let dir = self.dir.clone();
        blocking(move || remove_unnamed(&dir, true)).await
    }

    /// A new file for a snapshot to be received into.
    async fn receiving(&self) -> Result<SnapshotFile, String> {
        let path = self.dir.join(random_name(RECEIVING_PREFIX));
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(|err| format!("creating {}: {err}", path.display()))?;
        Ok(SnapshotFile {
            file,
            path,
            remove_unless_kept: true,
        })
    }

    /// Keeps a snapshot written by `write` as the current one, and opens it
    /// to be sent.
    async fn save(
        &self,
        meta: &SnapshotMeta<u64, BasicNode>,
        write: impl FnOnce(&mut Tally<&mut std::fs::File>) -> Result<(), String> + Send + 'static,
    ) -> Result<SnapshotFile, String> {
        let _held = self.lock.lock().await;
        let (dir, meta) = (self.dir.clone(), meta.clone());
        let (file, path) = blocking(move || {
            let name = random_name(DATA_PREFIX);
            let path = dir.join(&name);
            let fail = |err: std::io::Error| format!("writing {}: {err}", path.display());
            let mut file = std::fs::File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(fail)?;
            let mut written = Tally::new(&mut file);
            write(&mut written)?;
            let sums = written.sums();
            file.sync_all().map_err(fail)?;
            // Not kept when a newer snapshot came meanwhile: openraft is
            // handed this one anyway, and sends the newer kept one.
            keep(&dir, meta, name, sums)?;
            file.rewind().map_err(fail)?;
            Ok((file, path))
        })
        .await?;
        Ok(SnapshotFile {
            file: tokio::fs::File::from_std(file),
            path,
            remove_unless_kept: false,
        })
    }

    /// Keeps a received snapshot, whose length and CRC32C are `sums`, as
    /// the current one, and hands back its file, from its start, to be
    /// imported (`None`: it is older than the one kept, and was dropped).
    async fn keep_received(
        &self,
        meta: &SnapshotMeta<u64, BasicNode>,
        received: SnapshotFile,
        sums: (u64, u32),
    ) -> Result<Option<std::fs::File>, String> {
        let _held = self.lock.lock().await;
        let (dir, meta) = (self.dir.clone(), meta.clone());
        let file = received
            .file
            .try_clone()
            .await
            .map_err(|err| err.to_string())?;
        let mut file = file.into_std().await;
        blocking(move || {
            // Until it is renamed, dropping `received` removes the file.
            let mut received = received;
            let path = received.path.clone();
            let fail = |err: std::io::Error| format!("keeping {}: {err}", path.display());
            file.sync_all().map_err(fail)?;
            let name = random_name(DATA_PREFIX);
            std::fs::rename(&path, dir.join(&name)).map_err(fail)?;
            received.remove_unless_kept = false;
            drop(received);
            // Named by no description if this fails: removed at start.
            // An older snapshot than the one kept must not roll the
            // replica back.
            if !keep(&dir, meta, name, sums)? {
                return Ok(None);
            }
            file.rewind().map_err(fail)?;
            Ok(Some(file))
        })
        .await
    }

    async fn load(&self) -> Result<Option<Snapshot<TypeConfig>>, String> {
        // Read whole for its CRC each time it is to be sent (only to a
        // member behind the purged log): damage on disk is never sent.
        let _held = self.lock.lock().await;
        let dir = self.dir.clone();
        let loaded = blocking(move || {
            let Some(description) = read_description(&dir)? else {
                return Ok(None);
            };
            let path = dir.join(&description.file);
            let mut file = std::fs::File::open(&path)
                .map_err(|err| format!("opening {}: {err}", path.display()))?;
            let (len, crc32c) = len_and_crc(&mut file)?;
            if (len, crc32c) != (description.len, description.crc32c) {
                return Err(format!(
                    "the kept snapshot {} does not match its description",
                    path.display()
                ));
            }
            Ok(Some((description.meta, file, path)))
        })
        .await?;
        Ok(loaded.map(|(meta, file, path)| Snapshot {
            meta,
            snapshot: Box::new(SnapshotFile {
                file: tokio::fs::File::from_std(file),
                path,
                remove_unless_kept: false,
            }),
        }))
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| format!("snapshot file task: {err}"))?
}

/// Describes the synced data file `name`, of the length and CRC32C in
/// `sums`, as the current snapshot, and removes the data it replaces;
/// whether it did (not when a newer snapshot is kept: `name` is removed).
fn keep(
    dir: &Path,
    meta: SnapshotMeta<u64, BasicNode>,
    name: String,
    (len, crc32c): (u64, u32),
) -> Result<bool, String> {
    // A build from an older checkpoint that ends after a newer snapshot
    // was installed must not replace it: the log is purged up to that one.
    if let Some(kept) = read_description(dir)?
        && kept.meta.last_log_id > meta.last_log_id
    {
        tracing::info!(kept = ?kept.meta.last_log_id, built = ?meta.last_log_id,
            "a newer snapshot is kept: the older one is dropped");
        let _ = std::fs::remove_file(dir.join(&name));
        return Ok(false);
    }
    // The data's name is made durable before a description names it.
    sync_dir(dir)?;
    let description = SnapshotDescription {
        meta,
        file: name,
        len,
        crc32c,
    };
    let description = serde_json::to_vec(&description).map_err(|err| err.to_string())?;
    write_durably(dir, SNAPSHOT_META, &description)?;
    remove_unnamed(dir, false)?;
    Ok(true)
}

/// The length and CRC32C of `file` from its start, read a buffer at a
/// time; the file is left at its start.
fn len_and_crc(file: &mut std::fs::File) -> Result<(u64, u32), String> {
    let fail = |err: std::io::Error| format!("reading a snapshot: {err}");
    file.rewind().map_err(fail)?;
    let mut summed = Tally::new(std::io::BufReader::with_capacity(
        READ_BUFFER_BYTES,
        &mut *file,
    ));
    std::io::copy(&mut summed, &mut std::io::sink()).map_err(fail)?;
    let sums = summed.sums();
    file.rewind().map_err(fail)?;
    Ok(sums)
}

fn read_description(dir: &Path) -> Result<Option<SnapshotDescription>, String> {
    match std::fs::read(dir.join(SNAPSHOT_META)) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(description) => Ok(Some(description)),
            // The layout before data files had names of their own (its data
            // is `snapshot`) counts as none: the member that has it takes a
            // new snapshot with its next build.
            Err(_) if dir.join(LEGACY_DATA).exists() => {
                tracing::warn!("a snapshot of an earlier layout is dropped");
                Ok(None)
            }
            Err(err) => Err(format!("undecodable snapshot description: {err}")),
        },
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(format!("reading the snapshot's description: {err}")),
    }
}

/// Removes the data files the description does not name and, with
/// `unfinished`, what is being received or exported (only at start, when
/// nothing is).
fn remove_unnamed(dir: &Path, unfinished: bool) -> Result<(), String> {
    let named = read_description(dir)?.map(|description| description.file);
    let entries =
        std::fs::read_dir(dir).map_err(|err| format!("listing {}: {err}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|err| format!("listing {}: {err}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let leftover = (name.starts_with(DATA_PREFIX) && Some(&name) != named.as_ref())
            || (named.is_none() && (name == LEGACY_DATA || name == SNAPSHOT_META))
            || (unfinished
                && (name.starts_with(RECEIVING_PREFIX) || name.starts_with(CHECKPOINT_PREFIX)));
        if !leftover {
            continue;
        }
        let path = entry.path();
        let removed = match path.is_dir() {
            true => std::fs::remove_dir_all(&path),
            false => std::fs::remove_file(&path),
        };
        if let Err(err) = removed {
            tracing::warn!(path = %path.display(), "removing an old snapshot file: {err}");
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), String> {
    std::fs::File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|err| format!("syncing {}: {err}", dir.display()))
}

/// Writes `name` in `dir` through a temporary file, fsynced, then renamed
/// and the directory fsynced.
fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), String> {
    let tmp = dir.join(format!("{name}.tmp"));
    let fail = |err: std::io::Error| format!("writing {name}: {err}");
    let mut file = std::fs::File::create(&tmp).map_err(fail)?;
    file.write_all(bytes).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    std::fs::rename(&tmp, dir.join(name)).map_err(fail)?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
    use strata_pool::{LocalPool, LocalPoolConfig};
    use strata_store::{Store, StoreConfig};

    use super::*;
    use crate::LoggedCall;

    fn logged(call: serde_json::Value) -> LoggedCall {
        LoggedCall {
            call: call.to_string(),
            at_ms: 1_700_000_000_000,
            nonce: [7; 16],
            signature: None,
        }
    }

    fn create_bucket(name: &str) -> LoggedCall {
        logged(serde_json::json!({
            "op": "create_bucket", "account": "acct", "name": name,
            "region": "r1", "attrs": {}
        }))
    }

    fn local_pool(dir: &Path) -> Arc<LocalPool> {
        let config = LocalPoolConfig {
            dir: dir.join("pool"),
        };
        Arc::new(LocalPool::open(config).expect("pool"))
    }

    async fn open(dir: &Path, pool: &Arc<LocalPool>) -> (StateMachine, Store) {
        open_with(dir, pool, Hibernation::new()).await
    }

    /// Opens the state machine over the replica in `dir`, which an
    /// instance dropped a moment ago may still be letting go of.
    async fn open_with(
        dir: &Path,
        pool: &Arc<LocalPool>,
        hibernation: Arc<Hibernation>,
    ) -> (StateMachine, Store) {
        let (machine, store, _) = open_as(dir, pool, hibernation, crate::LOG_VERSION).await;
        (machine.expect("state machine"), store)
    }

    /// [`open_with`] as a member that runs log version `runs`, which may
    /// refuse; with the versions the state machine tells.
    async fn open_as(
        dir: &Path,
        pool: &Arc<LocalPool>,
        hibernation: Arc<Hibernation>,
        runs: u32,
    ) -> (Result<StateMachine, String>, Store, Arc<LogVersions>) {
        let versions = Arc::new(LogVersions::new(runs));
        let mut config = StoreConfig::new(dir.join("replica"));
        config.log_replica = true;
        let mut tries = 0;
        let store = loop {
            match Store::open(config.clone(), pool.clone()) {
                Ok(store) => break store,
                Err(err) if tries == 250 => panic!("replica: {err}"),
                Err(_) => tries += 1,
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        let snapshots = dir.join("snapshots");
        // A root store: it follows no root.
        let shared = Shared {
            hibernation,
            versions: versions.clone(),
            follows_root: false,
            failure: ApplyFailure::default(),
        };
        let machine = StateMachine::open(1, store.clone(), &snapshots, shared).await;
        (machine, store, versions)
    }

    /// Builds a snapshot of `source` and installs it in `target`, as
    /// openraft sends one; its description, once installed.
    async fn send_snapshot(
        source: &mut StateMachine,
        target: &mut StateMachine,
    ) -> StorageResult<SnapshotMeta<u64, BasicNode>> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

        let mut builder = source.get_snapshot_builder().await;
        builder.build_snapshot().await.expect("built");
        let mut sent = source
            .get_current_snapshot()
            .await
            .expect("loaded")
            .expect("a snapshot");
        let mut bytes = Vec::new();
        sent.snapshot.read_to_end(&mut bytes).await.expect("read");
        let mut received = target.begin_receiving_snapshot().await.expect("receiving");
        received.write_all(&bytes).await.expect("write");
        received.shutdown().await.expect("shutdown");
        target.install_snapshot(&sent.meta, received).await?;
        Ok(sent.meta)
    }

    /// A hibernate entry has no calls, but is recorded as applied all the
    /// same (a snapshot names the entry it was taken after, and the log is
    /// purged up to it); a member reopened after it knows that its group
    /// sleeps, until the next entry.
    #[tokio::test]
    async fn a_hibernate_entry_is_recorded_and_known_after_a_restart() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let pool = local_pool(dir.path());
        let hibernate = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), 2),
            payload: EntryPayload::Normal(MetaEntry::hibernate()),
        };
        {
            let hibernation = Hibernation::new();
            let (mut machine, _store) = open_with(dir.path(), &pool, hibernation.clone()).await;
            machine
                .apply([entry(1, vec![create_bucket("a")]), hibernate.clone()])
                .await
                .expect("applied");
            assert_eq!(hibernation.last_hibernate(), Some(hibernate.log_id));
        }
        let hibernation = Hibernation::new();
        let (mut machine, store) = open_with(dir.path(), &pool, hibernation.clone()).await;
        let (last_applied, _) = machine.applied_state().await.expect("applied state");
        assert_eq!(last_applied, Some(hibernate.log_id));
        assert_eq!(hibernation.last_hibernate(), Some(hibernate.log_id));

        machine
            .apply([entry(3, vec![create_bucket("b")])])
            .await
            .expect("applied");
        assert_eq!(hibernation.last_hibernate(), None);
        drop((machine, store));
        let hibernation = Hibernation::new();
        let (mut machine, _store) = open_with(dir.path(), &pool, hibernation.clone()).await;
        let (last_applied, _) = machine.applied_state().await.expect("applied state");
        assert_eq!(last_applied.map(|log_id| log_id.index), Some(3));
        assert_eq!(hibernation.last_hibernate(), None);
    }

    /// A snapshot taken at a hibernate entry leaves the member that
    /// installs it asleep, as the members that applied the entry are.
    #[tokio::test]
    async fn a_snapshot_taken_at_a_hibernate_entry_is_installed_asleep() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let pool = local_pool(dir.path());
        let (mut source, _source_store) = open(&dir.path().join("source"), &pool).await;
        let hibernate = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), 2),
            payload: EntryPayload::Normal(MetaEntry::hibernate()),
        };
        source
            .apply([entry(1, vec![create_bucket("a")]), hibernate.clone()])
            .await
            .expect("applied");
        let hibernation = Hibernation::new();
        let target_dir = dir.path().join("target");
        let (mut target, _target_store) = open_with(&target_dir, &pool, hibernation.clone()).await;
        let sent = send_snapshot(&mut source, &mut target).await.expect("sent");
        assert_eq!(sent.last_log_id, Some(hibernate.log_id));
        assert_eq!(hibernation.last_hibernate(), Some(hibernate.log_id));
    }

    /// The group's log version is kept with the replica: after a restart,
    /// in a snapshot, and against a build that runs an earlier one, which
    /// refuses to start over it (a downgrade) and to apply an entry that
    /// needs a newer one.
    #[tokio::test]
    async fn a_groups_log_version_is_kept_and_refused_to_an_earlier_build() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let pool = local_pool(dir.path());
        let source_dir = dir.path().join("source");
        let raised = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), 2),
            payload: EntryPayload::Normal(MetaEntry::activating(1)),
        };
        {
            let (machine, _store, versions) =
                open_as(&source_dir, &pool, Hibernation::new(), 1).await;
            let mut machine = machine.expect("state machine");
            assert_eq!(versions.group(), 0, "a new group's version");
            machine
                .apply([entry(1, vec![create_bucket("a")]), raised.clone()])
                .await
                .expect("applied");
            assert_eq!(versions.group(), 1);
        }
        let (machine, source_store, versions) =
            open_as(&source_dir, &pool, Hibernation::new(), 1).await;
        let mut source = machine.expect("state machine");
        assert_eq!(versions.group(), 1, "after a restart");
        // A call after it keeps it (its marker is the one a snapshot
        // brings).
        source
            .apply([entry(3, vec![create_bucket("b")])])
            .await
            .expect("applied");

        // A snapshot brings it.
        let target_dir = dir.path().join("target");
        let (target, _target_store, versions) =
            open_as(&target_dir, &pool, Hibernation::new(), 1).await;
        let mut target = target.expect("state machine");
        send_snapshot(&mut source, &mut target).await.expect("sent");
        assert_eq!(versions.group(), 1, "installed from a snapshot");
        // Not to a member of an earlier build, which stops.
        let behind_dir = dir.path().join("behind");
        let (behind, _behind_store, earlier) =
            open_as(&behind_dir, &pool, Hibernation::new(), 0).await;
        let mut behind = behind.expect("state machine");
        let installed = send_snapshot(&mut source, &mut behind).await;
        assert!(installed.is_err(), "a newer group's snapshot installed");
        assert_eq!(earlier.group(), 0);
        drop((source, source_store, target));

        // An earlier build does not start over it.
        let (refused, _store, _) = open_as(&source_dir, &pool, Hibernation::new(), 0).await;
        let why = refused.err().expect("an earlier build refused");
        assert!(why.contains("runs log version 0"), "{why}");

        // Nor does it apply an entry that needs a newer one.
        let fresh_dir = dir.path().join("fresh");
        let (machine, store, _) = open_as(&fresh_dir, &pool, Hibernation::new(), 0).await;
        let mut machine = machine.expect("state machine");
        let newer = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), 2),
            payload: EntryPayload::Normal(MetaEntry {
                needs: 1,
                ..MetaEntry::of(vec![create_bucket("c")])
            }),
        };
        let applied = machine
            .apply([entry(1, vec![create_bucket("a")]), newer])
            .await;
        assert!(applied.is_err(), "an entry needing a newer build applied");
        let (last_applied, _) = machine.applied_state().await.expect("applied state");
        assert_eq!(last_applied.map(|log_id| log_id.index), Some(1));
        assert!(store.bucket("a").await.is_ok());
        assert!(store.bucket("c").await.is_err(), "its call was applied");
    }

    /// A member that stops between two calls of an entry applies the rest
    /// of it at its restart, and not the calls it had applied. The state
    /// a stop after the first call leaves is made by an entry whose second
    /// call changes nothing (and so records nothing).
    #[tokio::test]
    async fn an_entry_cut_short_is_applied_from_where_it_stopped() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let pool = local_pool(dir.path());
        let log_id = LogId::new(CommittedLeaderId::new(1, 1), 1);
        let entry = |calls| Entry {
            log_id,
            payload: EntryPayload::Normal(MetaEntry::of(calls)),
        };
        {
            let (mut machine, _store) = open(dir.path(), &pool).await;
            // The second creation is refused: it changes nothing.
            let answers = machine
                .apply([entry(vec![create_bucket("a"), create_bucket("a")])])
                .await
                .expect("applied");
            assert_eq!(answers[0].0.len(), 2);
        }
        let (mut machine, store) = open(dir.path(), &pool).await;
        let (last_applied, _) = machine.applied_state().await.expect("applied state");
        assert_eq!(last_applied, None, "the entry is not whole");
        assert_eq!(machine.applied.partial, Some((log_id, 1)));

        let answers = machine
            .apply([entry(vec![create_bucket("a"), create_bucket("b")])])
            .await
            .expect("applied");
        // Applied again, the first creation would have been refused.
        assert!(
            answers[0].0[0].is_empty(),
            "the first call was applied again"
        );
        let second: serde_json::Value =
            serde_json::from_slice(&answers[0].0[1]).expect("an answer");
        assert!(second["outcome"]["Ok"].is_object(), "{second}");
        // The answer names the change, for the caller's edge to purge.
        let events = second["events"].as_array().expect("events");
        assert!(events.len() == 1 && events[0]["bucket"] == "b", "{second}");
        assert!(store.bucket("b").await.is_ok());
        drop((machine, store));

        let (mut machine, _store) = open(dir.path(), &pool).await;
        let (last_applied, _) = machine.applied_state().await.expect("applied state");
        assert_eq!(last_applied, Some(log_id));
        assert_eq!(machine.applied.partial, None);
    }

    /// A signed call is applied once, whatever member it reaches and
    /// however much later in the log: sent again (a capture replayed after
    /// a change of leader), it is refused and changes nothing, at a restart
    /// too. So is one that changed nothing the first time, and one signed
    /// too long before the entry's clock.
    #[tokio::test]
    async fn a_signed_call_is_applied_once() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let pool = local_pool(dir.path());
        let at_ms = 1_700_000_000_000;
        let signed = |call: LoggedCall, id: u8, seconds_later: i64| LoggedCall {
            at_ms: at_ms + seconds_later * 1000,
            signature: Some(strata_store::CallSignature {
                signed_at: (at_ms / 1000) as u64,
                id: [id; 16],
            }),
            ..call
        };
        let delete_bucket =
            |name: &str| logged(serde_json::json!({"op": "delete_bucket", "name": name}));
        let outcome = |answer: &[u8]| -> serde_json::Value {
            serde_json::from_slice::<serde_json::Value>(answer).expect("an answer")["outcome"]
                .clone()
        };
        let replay_refused = |answer: &[u8]| {
            let outcome = outcome(answer);
            let why = outcome["Err"]["InvalidArgument"]
                .as_str()
                .unwrap_or_default();
            assert!(why.contains("replay"), "{outcome}");
        };
        {
            let (mut machine, store) = open(dir.path(), &pool).await;
            let answers = machine
                .apply([
                    entry(1, vec![signed(create_bucket("a"), 1, 0)]),
                    entry(2, vec![delete_bucket("a")]),
                    entry(3, vec![signed(create_bucket("a"), 1, 10)]),
                    // Refused the first time (it exists), so committing
                    // nothing: still taken.
                    entry(
                        4,
                        vec![create_bucket("b"), signed(create_bucket("b"), 2, 0)],
                    ),
                    entry(
                        5,
                        vec![delete_bucket("b"), signed(create_bucket("b"), 2, 20)],
                    ),
                    // Signed more than the window before the entry's clock.
                    entry(6, vec![signed(create_bucket("c"), 3, 400)]),
                    // A signature of its own: taken.
                    entry(7, vec![signed(create_bucket("d"), 4, 0)]),
                ])
                .await
                .expect("applied");
            assert!(outcome(&answers[0].0[0])["Ok"].is_object());
            replay_refused(&answers[2].0[0]);
            assert_eq!(outcome(&answers[3].0[1])["Err"], "BucketAlreadyOwnedByYou");
            replay_refused(&answers[4].0[1]);
            let too_old = outcome(&answers[5].0[0]);
            assert!(
                too_old["Err"]["InvalidArgument"]
                    .as_str()
                    .is_some_and(|why| why.contains("too old")),
                "{too_old}"
            );
            assert!(outcome(&answers[6].0[0])["Ok"].is_object());
            for absent in ["a", "b", "c"] {
                assert!(store.bucket(absent).await.is_err(), "{absent} exists");
            }
            assert!(store.bucket("d").await.is_ok());
        }
        // The records outlive the process.
        let (mut machine, store) = open(dir.path(), &pool).await;
        let answers = machine
            .apply([entry(8, vec![signed(create_bucket("a"), 1, 30)])])
            .await
            .expect("applied");
        replay_refused(&answers[0].0[0]);
        assert!(store.bucket("a").await.is_err());
    }

    /// An index group's replica applies no call before its member's root
    /// records the index groups: a root that lags behind its split would
    /// move older records over the group's changes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_index_groups_calls_wait_for_its_members_root() {
        let dir = tempfile::tempdir().unwrap();
        let pool = local_pool(dir.path());
        let (_root_machine, root) = open(dir.path(), &pool).await;
        let group = root.open_group(1, root.config().clone()).unwrap();
        let versions = Arc::new(LogVersions::new(crate::LOG_VERSION));
        let snapshots = dir.path().join("group-snapshots");
        let shared = Shared {
            hibernation: Hibernation::new(),
            versions,
            follows_root: true,
            failure: ApplyFailure::default(),
        };
        let mut machine = StateMachine::open(1, group.clone(), &snapshots, shared)
            .await
            .unwrap();
        let applying = tokio::spawn(async move {
            let applied = machine
                .apply(vec![entry(1, vec![create_bucket("b")])])
                .await;
            applied.map(|_| machine)
        });
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        assert!(
            !applying.is_finished(),
            "applied before the root recorded groups"
        );
        assert!(group.bucket("b").await.is_err());

        let recorded = root
            .serve_meta(br#"{"op": "record_index_groups", "count": 1}"#, None)
            .await;
        assert!(
            String::from_utf8_lossy(&recorded).contains("Ok"),
            "{recorded:?}"
        );
        let applied = tokio::time::timeout(std::time::Duration::from_secs(10), applying).await;
        assert!(
            matches!(applied, Ok(Ok(Ok(_)))),
            "the call stayed unapplied"
        );
        assert!(group.bucket("b").await.is_ok());
    }

    fn entry(index: u64, calls: Vec<LoggedCall>) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(MetaEntry::of(calls)),
        }
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("listing")
            .map(|entry| entry.expect("entry").file_name().to_string_lossy().into())
            .collect();
        names.sort();
        names
    }

    /// A snapshot goes through files all the way: built from a checkpoint
    /// of the replica (so an entry applied meanwhile is not in it), sent
    /// from its file a chunk at a time, received into a file of the other
    /// member's and installed from there. What a crash leaves beside the
    /// kept snapshot is removed at the next start, and a kept snapshot
    /// damaged on disk is refused rather than sent.
    #[tokio::test]
    async fn snapshots_are_built_sent_and_installed_through_files() {
        use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _, AsyncWriteExt as _};

        let dir = tempfile::tempdir().expect("temporary directory");
        let pool = local_pool(dir.path());
        let (source_dir, target_dir) = (dir.path().join("source"), dir.path().join("target"));
        let (mut source, _source_store) = open(&source_dir, &pool).await;
        source
            .apply([entry(1, vec![create_bucket("a"), create_bucket("b")])])
            .await
            .expect("applied");
        let mut builder = source.get_snapshot_builder().await;
        source
            .apply([entry(2, vec![create_bucket("c")])])
            .await
            .expect("applied");
        let built = builder.build_snapshot().await.expect("built");
        assert_eq!(built.meta.last_log_id.map(|id| id.index), Some(1));
        let snapshot_dir = source_dir.join("snapshots");
        let kept = names_in(&snapshot_dir);
        assert!(
            kept.len() == 2 && kept[0].starts_with(DATA_PREFIX) && kept[1] == SNAPSHOT_META,
            "{kept:?}"
        );

        let mut sent = source
            .get_current_snapshot()
            .await
            .expect("loaded")
            .expect("a snapshot");
        assert_eq!(sent.meta.snapshot_id, built.meta.snapshot_id);
        let (mut target, target_store) = open(&target_dir, &pool).await;
        // A transfer cut short is refused, and leaves nothing behind.
        let mut cut = target.begin_receiving_snapshot().await.expect("receiving");
        cut.write_all(b"STRATAR1\x01").await.expect("write");
        cut.shutdown().await.expect("shutdown");
        assert!(target.install_snapshot(&sent.meta, cut).await.is_err());
        assert!(names_in(&target_dir.join("snapshots")).is_empty());
        let mut received = target.begin_receiving_snapshot().await.expect("receiving");
        // As openraft sends it: chunks at offsets, the first one twice.
        let end = sent
            .snapshot
            .seek(std::io::SeekFrom::End(0))
            .await
            .expect("seek");
        let mut offset = 0;
        let mut first = true;
        while offset < end {
            sent.snapshot
                .seek(std::io::SeekFrom::Start(offset))
                .await
                .expect("seek");
            let mut chunk = vec![0; 64];
            let read = sent.snapshot.read(&mut chunk).await.expect("read");
            received
                .seek(std::io::SeekFrom::Start(offset))
                .await
                .expect("seek");
            received.write_all(&chunk[..read]).await.expect("write");
            if !std::mem::take(&mut first) {
                offset += read as u64;
            }
        }
        received.shutdown().await.expect("shutdown");
        target
            .install_snapshot(&sent.meta, received)
            .await
            .expect("installed");
        assert!(target_store.bucket("a").await.is_ok());
        assert!(target_store.bucket("b").await.is_ok());
        assert!(target_store.bucket("c").await.is_err(), "applied after it");
        let (last_applied, _) = target.applied_state().await.expect("applied state");
        assert_eq!(last_applied, built.meta.last_log_id);
        let target_snapshots = target_dir.join("snapshots");
        assert_eq!(names_in(&target_snapshots).len(), 2);

        // What a crash leaves is removed at start; the kept one stays.
        std::fs::write(target_snapshots.join("receiving-0"), b"half").expect("write");
        std::fs::write(target_snapshots.join("data-0"), b"unnamed").expect("write");
        std::fs::create_dir(target_snapshots.join("checkpoint-0")).expect("mkdir");
        drop((target, target_store));
        let (mut target, _target_store) = open(&target_dir, &pool).await;
        assert_eq!(names_in(&target_snapshots).len(), 2);
        let reloaded = target
            .get_current_snapshot()
            .await
            .expect("loaded")
            .expect("a snapshot");
        assert_eq!(reloaded.meta.snapshot_id, built.meta.snapshot_id);

        let data = target_snapshots.join(&names_in(&target_snapshots)[0]);
        let mut bytes = std::fs::read(&data).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&data, bytes).expect("write");
        assert!(target.get_current_snapshot().await.is_err());
    }

    /// A snapshot being received that openraft drops goes with it, and a
    /// snapshot of the layout before `data-…` files neither stops a member
    /// from starting nor stays.
    #[tokio::test]
    async fn abandoned_and_old_snapshot_files_are_removed() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let pool = local_pool(dir.path());
        let snapshots = dir.path().join("snapshots");
        std::fs::create_dir_all(&snapshots).expect("mkdir");
        std::fs::write(snapshots.join(LEGACY_DATA), b"STRATAR1").expect("write");
        std::fs::write(
            snapshots.join(SNAPSHOT_META),
            br#"{"meta":{"last_log_id":null,"last_membership":{"log_id":null,"membership":{"configs":[],"nodes":{}}},"snapshot_id":"x"},"len":8,"crc32c":1}"#,
        )
        .expect("write");
        let (mut machine, _store) = open(dir.path(), &pool).await;
        assert!(
            names_in(&snapshots).is_empty(),
            "{:?}",
            names_in(&snapshots)
        );
        assert!(
            machine
                .get_current_snapshot()
                .await
                .expect("load")
                .is_none()
        );

        let receiving = machine.begin_receiving_snapshot().await.expect("receiving");
        assert_eq!(names_in(&snapshots).len(), 1);
        drop(receiving);
        assert!(
            names_in(&snapshots).is_empty(),
            "{:?}",
            names_in(&snapshots)
        );
    }
}
