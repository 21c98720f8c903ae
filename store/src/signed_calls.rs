//! Signed metadata changes applied once, across restarts and members.
//!
//! A gateway's `ReplayGuard` remembers the signatures it took in memory
//! only: a captured call sent again to another member of a replicated
//! service (after a change of leader), or to the same after a restart,
//! would apply a second time — a delete replayed over the object written
//! since. And a change's sender signs each attempt anew: an attempt that
//! a member refused because it did not lead, captured, could be applied
//! beside the one the leader took. So every attempt of one change carries
//! the same nonce, the store keeps the [`CallSignature`] of every change
//! it applies, by that nonce, in the batch that applies it, and refuses
//! one it holds. In a replicated service the record is part of the
//! replicated state: every member decides alike, from the log alone (the
//! entry's clock, never the member's own).
//!
//! Records are kept [`RETAINED_SECS`] past their signature, then pruned a
//! minute's worth at a time, by a second index ordered by time. How far
//! pruning went is itself a record ([`PRUNED_BELOW`]), so every replica
//! prunes in the same batches and holds the same records. A change signed
//! more than [`LATE_SECS`] before the clock that applies it is refused
//! (its record may be pruned). A leader whose clock jumped far ahead
//! prunes records early, but refuses nothing it should take.

use strata_pool::wire::{CallSignature, MAX_CLOCK_SKEW_SECS};

use crate::error::{Result, StoreError};
use crate::keys::CF_DEFAULT;
use crate::space::Batch;
use crate::store::Inner;

/// Key prefix (default column family) of a taken change, by its id; the
/// value is the second it was signed in.
const TAKEN_PREFIX: &[u8] = b"signed-call/";
/// Key prefix of the same records by the second they were signed in
/// (big-endian, so they sort by age), then the id: what pruning walks.
const TAKEN_BY_TIME_PREFIX: &[u8] = b"signed-call-at/";
/// Key of the second below which records were pruned (big-endian).
const PRUNED_BELOW: &[u8] = b"signed-calls-pruned-below";
/// How late after its signature a call may still be applied: members
/// refuse calls signed further than [`MAX_CLOCK_SKEW_SECS`] from their
/// clock, and the leader's batching and quorum wait add seconds.
const LATE_SECS: u64 = MAX_CLOCK_SKEW_SECS + 60;
/// How long a record is kept: well past [`LATE_SECS`], so that a leader
/// whose clock is behind the one before by up to ten minutes still finds
/// every call it could accept.
const RETAINED_SECS: u64 = 3 * MAX_CLOCK_SKEW_SECS;
/// Prunes happen when their boundary moved at least this far.
const PRUNE_STEP_SECS: u64 = 60;
/// Records one batch deletes at most (a minute of 10,000 signed changes
/// a second is 600,000).
const MAX_PRUNED_PER_BATCH: usize = 20_000;

fn taken_key(id: &[u8; 16]) -> Vec<u8> {
    [TAKEN_PREFIX, id].concat()
}

fn taken_by_time_key(signed_at: u64, id: &[u8]) -> Vec<u8> {
    [TAKEN_BY_TIME_PREFIX, &signed_at.to_be_bytes(), id].concat()
}

impl Inner {
    /// Refuses a call taken before, or too late after its signature to
    /// tell (`now_secs`: the applied entry's clock, or this store's own
    /// when it is the only service). `Db` is this store's failure; any
    /// other error is the call's answer.
    pub(crate) fn check_signed_call(&self, call: &CallSignature, now_secs: u64) -> Result<()> {
        if call.signed_at.saturating_add(LATE_SECS) < now_secs {
            return Err(StoreError::InvalidArgument(
                "this signed call is too old to be taken (it may be a replay)".into(),
            ));
        }
        if self
            .space()
            .get_pinned(CF_DEFAULT, &taken_key(&call.id))?
            .is_some()
        {
            return Err(StoreError::InvalidArgument(
                "this signed call was taken before (a replay)".into(),
            ));
        }
        Ok(())
    }

    /// Adds the record of `call` to `batch`, and the pruning of records
    /// older than [`RETAINED_SECS`] when it is due. Deterministic: the
    /// same batches on every replica applying the same entries.
    pub(crate) fn record_signed_call(
        &self,
        batch: &mut Batch<'_>,
        call: &CallSignature,
        now_secs: u64,
    ) -> Result<()> {
        batch.put(
            CF_DEFAULT,
            &taken_key(&call.id),
            call.signed_at.to_be_bytes(),
        )?;
        batch.put(CF_DEFAULT, &taken_by_time_key(call.signed_at, &call.id), [])?;
        let pruned_below = self.signed_calls_pruned_below()?;
        let prune_below = now_secs.saturating_sub(RETAINED_SECS);
        if prune_below >= pruned_below.saturating_add(PRUNE_STEP_SECS) {
            // The same records on every replica: the same deletions. From
            // where the last prune stopped, and at most a bounded number
            // of records per batch: a backlog goes over later batches.
            let end = taken_by_time_key(prune_below, &[]);
            let start = taken_by_time_key(pruned_below, &[]);
            let from = rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward);
            let mut reached = prune_below;
            let records = self.space().iter_below(CF_DEFAULT, from, Some(&end))?;
            for (pruned, item) in records.enumerate() {
                let (key, _) = item?;
                let (signed_at, id) = key
                    .get(TAKEN_BY_TIME_PREFIX.len()..)
                    .and_then(|rest| rest.split_first_chunk::<8>())
                    .and_then(|(at, id)| {
                        Some((u64::from_be_bytes(*at), <&[u8; 16]>::try_from(id).ok()?))
                    })
                    .ok_or_else(|| StoreError::Corrupt("a signed-call record's key".into()))?;
                if pruned == MAX_PRUNED_PER_BATCH {
                    // The rest of this second and after, next time.
                    reached = signed_at;
                    break;
                }
                batch.delete(CF_DEFAULT, &taken_key(id))?;
                batch.delete(CF_DEFAULT, &key)?;
            }
            batch.put(CF_DEFAULT, PRUNED_BELOW, reached.to_be_bytes())?;
        }
        Ok(())
    }

    fn signed_calls_pruned_below(&self) -> Result<u64> {
        Ok(match self.space().get_pinned(CF_DEFAULT, PRUNED_BELOW)? {
            Some(bytes) => <[u8; 8]>::try_from(bytes.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| {
                    StoreError::Corrupt("signed-calls prune mark is not 8 bytes".into())
                })?,
            None => 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use strata_pool::{LocalPool, LocalPoolConfig};

    use super::*;
    use crate::store::{Engine, Store, StoreConfig};

    fn records(inner: &Inner) -> usize {
        let from = rocksdb::IteratorMode::From(TAKEN_BY_TIME_PREFIX, rocksdb::Direction::Forward);
        inner
            .space()
            .iter(CF_DEFAULT, from)
            .expect("scan")
            .map_while(|item| item.ok())
            .take_while(|(key, _)| key.starts_with(TAKEN_BY_TIME_PREFIX))
            .count()
    }

    /// Records leave once [`RETAINED_SECS`] old, both keys of each, at most
    /// [`MAX_PRUNED_PER_BATCH`] a batch: a backlog goes over the next
    /// batches, each starting where the last stopped.
    #[test]
    fn records_are_pruned_a_bounded_batch_at_a_time() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let pool = LocalPool::open(LocalPoolConfig {
            dir: dir.path().join("pool"),
        })
        .expect("pool");
        let store =
            Store::open(StoreConfig::new(dir.path().join("meta")), Arc::new(pool)).expect("store");
        let Engine::Local(inner) = &store.engine else {
            panic!("a local store");
        };
        let t0 = 1_700_000_000;
        let call = |n: u32, signed_at: u64| CallSignature {
            signed_at,
            id: [n.to_be_bytes(), [0; 4], [0; 4], [1; 4]]
                .concat()
                .try_into()
                .expect("16 bytes"),
        };
        let record = |call: &CallSignature, now_secs: u64| {
            let mut batch = inner.batch();
            inner
                .record_signed_call(&mut batch, call, now_secs)
                .expect("recorded");
            batch.write(false).expect("written");
        };
        let backlog = MAX_PRUNED_PER_BATCH as u32 + 5_000;
        for n in 0..backlog {
            record(&call(n, t0), t0);
        }
        assert_eq!(records(inner), backlog as usize);
        assert!(inner.check_signed_call(&call(7, t0), t0).is_err(), "taken");

        // Old enough: a bounded batch, then the rest.
        let later = call(backlog, t0 + 1000);
        record(&later, t0 + 1000);
        assert_eq!(records(inner), backlog as usize + 1 - MAX_PRUNED_PER_BATCH);
        assert_eq!(inner.signed_calls_pruned_below().expect("mark"), t0);
        record(&call(backlog + 1, t0 + 1001), t0 + 1001);
        assert_eq!(records(inner), 2);
        assert_eq!(
            inner.signed_calls_pruned_below().expect("mark"),
            t0 + 1001 - RETAINED_SECS
        );
        // Both keys went; the recent records stay taken.
        assert!(
            inner
                .space()
                .get(CF_DEFAULT, &taken_key(&call(7, t0).id))
                .expect("read")
                .is_none()
        );
        assert!(inner.check_signed_call(&later, t0 + 1001).is_err());
    }
}
