//! Group commit on the leader: the changes that arrive while an entry is
//! being committed wait and go into the next entry together, so that
//! concurrent changes share one append, one fsync on each member and one
//! message to each follower, instead of queueing for one each.

use std::collections::VecDeque;
use std::sync::Arc;

use openraft::Raft;
use openraft::error::{ClientWriteError, RaftError};
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::{LoggedCall, MetaEntry, QUORUM_WAIT, Routed, TypeConfig};

/// A batch stops growing at this many bytes of encoded calls (it always
/// takes at least one): with `max_payload_entries` (32) entries per
/// message, a message of batches stays under half of what a member
/// accepts (64 MiB).
const BATCH_BYTES: usize = 1 << 20;

/// What a call may take in an entry's JSON: its text as a JSON string
/// (each quote escaped) and its clock and nonce.
fn encoded_len(call: &LoggedCall) -> usize {
    2 * call.call.len() + 160
}

pub(crate) struct Batcher {
    /// This member's id.
    id: u64,
    raft: Raft<TypeConfig>,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Waiting>,
    /// Whether a task is committing batches (it takes every call queued
    /// before it finds the queue empty).
    committing: bool,
}

struct Waiting {
    call: LoggedCall,
    /// The log version a member must run to apply the call.
    needs: u32,
    answer: oneshot::Sender<Routed>,
}

impl Batcher {
    pub(crate) fn new(id: u64, raft: Raft<TypeConfig>) -> Arc<Batcher> {
        Arc::new(Batcher {
            id,
            raft,
            queue: Mutex::new(Queue::default()),
        })
    }

    /// Logs `call`, which needs log version `needs`, in the next entry:
    /// its answer once a majority has the entry and it is applied here, or
    /// why there is none.
    pub(crate) async fn write(self: &Arc<Self>, call: LoggedCall, needs: u32) -> Routed {
        let (answer, answered) = oneshot::channel();
        let start = {
            let mut queue = self.queue.lock();
            queue.waiting.push_back(Waiting {
                call,
                needs,
                answer,
            });
            !std::mem::replace(&mut queue.committing, true)
        };
        if start {
            // A task of its own: a caller that hangs up must not stop the
            // commit that the other callers wait for.
            tokio::spawn(self.clone().commit_queued());
        }
        // The batch ahead of this call's and its own each wait at most
        // QUORUM_WAIT for a majority; a caller never waits much longer.
        match tokio::time::timeout(2 * QUORUM_WAIT, answered).await {
            Ok(Ok(routed)) => routed,
            Ok(Err(_)) => {
                Routed::Unavailable("the metadata commit stopped; outcome unknown".into())
            }
            Err(_) => Routed::Unavailable(
                "the metadata service did not commit the change in time; outcome unknown".into(),
            ),
        }
    }

    async fn commit_queued(self: Arc<Self>) {
        let mut stopped = StoppedShort {
            batcher: &self,
            finished: false,
        };
        loop {
            let batch = {
                let mut queue = self.queue.lock();
                if queue.waiting.is_empty() {
                    queue.committing = false;
                    stopped.finished = true;
                    return;
                }
                let mut bytes = 0;
                let mut batch = Vec::new();
                while let Some(next) = queue.waiting.front() {
                    let len = encoded_len(&next.call);
                    if !batch.is_empty() && bytes + len > BATCH_BYTES {
                        break;
                    }
                    bytes += len;
                    batch.extend(queue.waiting.pop_front());
                }
                batch
            };
            self.commit(batch).await;
        }
    }

    async fn commit(&self, batch: Vec<Waiting>) {
        // The entry needs what the newest of its calls needs.
        let needs = batch.iter().map(|waiting| waiting.needs).max().unwrap_or(0);
        let (calls, answers): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|waiting| (waiting.call, waiting.answer))
            .unzip();
        // Leadership may have moved while these calls waited: nothing was
        // done with them yet, so their callers can go to the new leader.
        if !crate::leads(&self.raft) {
            let leader = self.raft.current_leader().await.filter(|id| *id != self.id);
            let address = crate::address_of(&self.raft, leader);
            for answer in answers {
                let _ = answer.send(Routed::NotLeader(address.clone()));
            }
            return;
        }
        let entry = MetaEntry {
            needs,
            ..MetaEntry::of(calls)
        };
        let written = tokio::time::timeout(QUORUM_WAIT, self.raft.client_write(entry)).await;
        let why = match written {
            Ok(Ok(written)) => {
                // One answer per call (the state machine's); a missing one
                // drops its sender, which its caller reports.
                for (answer, bytes) in answers.into_iter().zip(written.data.0) {
                    let _ = answer.send(Routed::Answer(bytes));
                }
                return;
            }
            Err(_) => "no majority of the metadata service confirmed the change in time; \
                       outcome unknown"
                .to_string(),
            // Leadership may have moved after the entry was appended: it
            // may still commit, so the calls must not be sent elsewhere.
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                "metadata leadership changed while the call was in flight; outcome unknown".into()
            }
            Ok(Err(err)) => format!("metadata log: {err}"),
        };
        for answer in answers {
            let _ = answer.send(Routed::Unavailable(why.clone()));
        }
    }
}

/// Ends a commit task that stopped short (a panic): the calls still queued
/// are refused rather than left waiting, and the next call starts a task.
struct StoppedShort<'a> {
    batcher: &'a Batcher,
    /// Set when the task ends with nothing left to commit.
    finished: bool,
}

impl Drop for StoppedShort<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let mut queue = self.batcher.queue.lock();
        queue.committing = false;
        for waiting in queue.waiting.drain(..) {
            let _ = waiting.answer.send(Routed::Unavailable(
                "the metadata commit stopped; outcome unknown".into(),
            ));
        }
    }
}
