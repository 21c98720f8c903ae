//! Phases: N workers, each with one request in flight, issuing one operation
//! against a shared key space until the clock runs out.
//!
//! Keys are `<prefix><index>` with the index zero-padded to ten digits, so
//! that name order is index order. That lets a LIST phase ask for any page
//! (`start-after` / `marker` = the key before it) without parsing responses,
//! and lets a DELETE phase remove exactly the keys a PUT phase wrote.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use tokio::task::JoinSet;

use crate::body::PatternSource;
use crate::report::PhaseStats;
use crate::target::{HttpClient, ObjectRequest, Target, exchange};

/// What a phase does to each key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// Upload fresh keys, extending the key space.
    Put,
    /// Download keys of the key space, round-robin.
    Get,
    /// Read the metadata of keys of the key space, round-robin.
    Head,
    /// List pages of the key space (`--list-limit` keys each), round-robin.
    List,
    /// Delete keys of the key space, oldest first, each once.
    Delete,
}

impl fmt::Display for Operation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Operation::Put => "put",
            Operation::Get => "get",
            Operation::Head => "head",
            Operation::List => "list",
            Operation::Delete => "delete",
        };
        formatter.write_str(name)
    }
}

/// The keys known to exist: indices `first..end`. PUT and fill phases extend
/// `end`; DELETE phases advance `first`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeySpace {
    pub first: u64,
    pub end: u64,
}

impl KeySpace {
    pub fn len(&self) -> u64 {
        self.end - self.first
    }

    pub fn is_empty(&self) -> bool {
        self.first >= self.end
    }
}

/// The object key for `index`.
pub fn object_key(prefix: &str, index: u64) -> String {
    format!("{prefix}{index:010}")
}

/// Everything a phase's workers share.
pub struct Phase {
    pub client: HttpClient,
    pub target: Arc<Target>,
    pub source: PatternSource,
    pub op: Operation,
    pub prefix: String,
    pub size: u64,
    pub list_limit: u32,
    pub keys: KeySpace,
    pub order: KeyOrder,
    pub concurrency: usize,
    /// No new request starts after this instant; `None` runs until `order`
    /// is exhausted.
    pub deadline: Option<Instant>,
    pub request_timeout: Duration,
}

/// How tickets (0, 1, 2, … handed out to workers in turn) map to indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrder {
    /// Index `start + ticket`, each once, until `end` if there is one.
    Once { start: u64, end: Option<u64> },
    /// Index `start + ticket % len`, forever.
    Cycle { start: u64, len: u64 },
}

impl KeyOrder {
    pub fn index(&self, ticket: u64) -> Option<u64> {
        match *self {
            KeyOrder::Once { start, end } => {
                let index = start.checked_add(ticket)?;
                match end {
                    Some(end) if index >= end => None,
                    _ => Some(index),
                }
            }
            KeyOrder::Cycle { start, len } => {
                if len == 0 {
                    return None;
                }
                start.checked_add(ticket % len)
            }
        }
    }
}

/// The outcome of a phase: merged counters, wall time from the first request
/// to the last answer, and how many tickets were taken (for PUT and DELETE,
/// the number of keys created or removed, successfully or not).
#[derive(Debug)]
pub struct PhaseOutcome {
    pub stats: PhaseStats,
    pub elapsed: Duration,
    pub tickets_taken: u64,
}

/// Runs one phase with `phase.concurrency` workers.
pub async fn run_phase(phase: Phase) -> anyhow::Result<PhaseOutcome> {
    let phase = Arc::new(phase);
    let tickets = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..phase.concurrency {
        workers.spawn(worker(Arc::clone(&phase), Arc::clone(&tickets)));
    }
    let mut stats = PhaseStats::default();
    while let Some(worker_stats) = workers.join_next().await {
        stats.merge(worker_stats.context("a worker panicked")?);
    }
    let elapsed = started.elapsed();
    let tickets_issued = tickets.load(Ordering::Relaxed);
    // Workers that found the order exhausted also took a ticket.
    let tickets_taken = match phase.order {
        KeyOrder::Once {
            start,
            end: Some(end),
        } => tickets_issued.min(end.saturating_sub(start)),
        _ => tickets_issued,
    };
    Ok(PhaseOutcome {
        stats,
        elapsed,
        tickets_taken,
    })
}

async fn worker(phase: Arc<Phase>, tickets: Arc<AtomicU64>) -> PhaseStats {
    let mut stats = PhaseStats::default();
    loop {
        if phase
            .deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
        {
            break;
        }
        let ticket = tickets.fetch_add(1, Ordering::Relaxed);
        let Some(index) = phase.order.index(ticket) else {
            break;
        };
        match one_request(&phase, index).await {
            Ok((latency, bytes)) => {
                stats.ops += 1;
                stats.bytes += bytes;
                stats.latencies.record(latency);
            }
            Err(error) => {
                stats.errors += 1;
                if stats.first_error.is_none() {
                    stats.first_error = Some(format!("{error:#}"));
                }
            }
        }
    }
    stats
}

/// Builds, sends and checks one request; returns its latency and the payload
/// bytes it moved. For LIST, `index` is a page number.
async fn one_request(phase: &Phase, index: u64) -> anyhow::Result<(Duration, u64)> {
    let key;
    let start_after;
    let request = match phase.op {
        Operation::List => {
            let page_start = phase.keys.first + index * u64::from(phase.list_limit);
            start_after = (index > 0).then(|| object_key(&phase.prefix, page_start - 1));
            ObjectRequest::List {
                prefix: &phase.prefix,
                start_after: start_after.as_deref(),
                limit: phase.list_limit,
            }
        }
        Operation::Put => {
            key = object_key(&phase.prefix, index);
            ObjectRequest::Put {
                key: &key,
                size: phase.size,
                seed: index,
            }
        }
        Operation::Get => {
            key = object_key(&phase.prefix, index);
            ObjectRequest::Get { key: &key }
        }
        Operation::Head => {
            key = object_key(&phase.prefix, index);
            ObjectRequest::Head { key: &key }
        }
        Operation::Delete => {
            key = object_key(&phase.prefix, index);
            ObjectRequest::Delete { key: &key }
        }
    };
    let request = phase.target.build(request, &phase.source)?;
    // The clock starts once the request is built and signed: latency is the
    // server's and the network's, not the signer's.
    let started = Instant::now();
    let answer = tokio::time::timeout(phase.request_timeout, exchange(&phase.client, request))
        .await
        .map_err(|_elapsed| {
            anyhow::anyhow!("timed out after {}s", phase.request_timeout.as_secs_f64())
        })??;
    let latency = started.elapsed();
    if !answer.status.is_success() {
        anyhow::bail!("{} answered {}", phase.op, answer.status);
    }
    let bytes = match phase.op {
        Operation::Put => phase.size,
        Operation::Get => {
            if answer.body_len != phase.size {
                anyhow::bail!(
                    "get returned {} bytes, expected {}",
                    answer.body_len,
                    phase.size
                );
            }
            answer.body_len
        }
        Operation::List => answer.body_len,
        Operation::Head | Operation::Delete => 0,
    };
    Ok((latency, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(order: KeyOrder, tickets: &[u64], expected: &[Option<u64>]) {
        let actual: Vec<Option<u64>> = tickets.iter().map(|&ticket| order.index(ticket)).collect();
        assert_eq!(actual, expected, "{order:?}");
    }

    #[test]
    fn key_orders() {
        check(
            KeyOrder::Once {
                start: 5,
                end: None,
            },
            &[0, 1, 1000],
            &[Some(5), Some(6), Some(1005)],
        );
        check(
            KeyOrder::Once {
                start: 5,
                end: Some(7),
            },
            &[0, 1, 2, 3],
            &[Some(5), Some(6), None, None],
        );
        check(
            KeyOrder::Once {
                start: u64::MAX,
                end: None,
            },
            &[0, 1],
            &[Some(u64::MAX), None],
        );
        check(
            KeyOrder::Cycle { start: 10, len: 3 },
            &[0, 1, 2, 3, 7],
            &[Some(10), Some(11), Some(12), Some(10), Some(11)],
        );
        check(
            KeyOrder::Cycle { start: 10, len: 0 },
            &[0, 1],
            &[None, None],
        );
    }

    #[test]
    fn keys_sort_by_index() {
        let mut keys: Vec<String> = [0u64, 9, 10, 99, 1_000_000, 123]
            .iter()
            .map(|&index| object_key("p/", index))
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "p/0000000000",
                "p/0000000009",
                "p/0000000010",
                "p/0000000099",
                "p/0000000123",
                "p/0001000000"
            ]
        );
    }
}
