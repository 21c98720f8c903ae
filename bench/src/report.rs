//! The result of one phase, as one human-readable line or one JSON object.

use std::time::Duration;

use serde::Serialize;

use crate::latency::LatencySamples;
use crate::units::format_size;
use crate::workload::Operation;

/// Counters gathered by the workers of one phase, merged.
#[derive(Debug, Default)]
pub struct PhaseStats {
    /// Requests answered with the expected status (and, for GET, length).
    pub ops: u64,
    /// Requests that failed: transport error, timeout, unexpected status or
    /// short body. They are not in `ops` nor in the latencies.
    pub errors: u64,
    /// Payload bytes moved by successful requests: uploaded for PUT, received
    /// for GET and LIST, none for HEAD and DELETE.
    pub bytes: u64,
    pub latencies: LatencySamples,
    /// The first failure seen, to tell a misconfiguration from overload.
    pub first_error: Option<String>,
}

impl PhaseStats {
    pub fn merge(&mut self, other: PhaseStats) {
        self.ops += other.ops;
        self.errors += other.errors;
        self.bytes += other.bytes;
        self.latencies.merge(other.latencies);
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// One finished phase, ready to print.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    /// Names the target in comparisons (`swift`, `strata`); defaults to the
    /// protocol.
    pub label: String,
    pub op: Operation,
    /// Object size in bytes.
    pub size: u64,
    pub concurrency: usize,
    pub elapsed_s: f64,
    pub ops: u64,
    pub errors: u64,
    pub bytes: u64,
    pub ops_per_s: f64,
    /// Payload throughput in MB/s, 1 MB = 10^6 bytes.
    pub mb_per_s: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

impl PhaseReport {
    pub fn new(
        label: &str,
        op: Operation,
        size: u64,
        concurrency: usize,
        elapsed: Duration,
        stats: PhaseStats,
    ) -> Self {
        let elapsed_s = elapsed.as_secs_f64();
        let per_second = |count: f64| {
            if elapsed_s > 0.0 {
                count / elapsed_s
            } else {
                0.0
            }
        };
        let sorted = stats.latencies.sorted();
        let millis = |latency: Duration| latency.as_secs_f64() * 1e3;
        PhaseReport {
            label: label.to_owned(),
            op,
            size,
            concurrency,
            elapsed_s,
            ops: stats.ops,
            errors: stats.errors,
            bytes: stats.bytes,
            ops_per_s: per_second(stats.ops as f64),
            mb_per_s: per_second(stats.bytes as f64) / 1e6,
            p50_ms: sorted.percentile(50.0).map(millis),
            p99_ms: sorted.percentile(99.0).map(millis),
            first_error: stats.first_error,
        }
    }

    /// `swift put 4KiB c64: 52311 ops in 10.00s, 5231.1 ops/s, 21.4 MB/s, p50 11.20 ms, p99 35.00 ms, 0 errors`
    pub fn human_line(&self) -> String {
        let latency = |value: Option<f64>| match value {
            Some(millis) => format!("{millis:.2} ms"),
            None => "-".to_owned(),
        };
        let mut line = format!(
            "{} {} {} c{}: {} ops in {:.2}s, {:.1} ops/s, {:.1} MB/s, p50 {}, p99 {}, {} errors",
            self.label,
            self.op,
            format_size(self.size),
            self.concurrency,
            self.ops,
            self.elapsed_s,
            self.ops_per_s,
            self.mb_per_s,
            latency(self.p50_ms),
            latency(self.p99_ms),
            self.errors,
        );
        if let Some(first_error) = &self.first_error {
            line.push_str(" (first: ");
            line.push_str(first_error);
            line.push(')');
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(stats: PhaseStats, elapsed: Duration, expected_line: &str) {
        let report = PhaseReport::new("swift", Operation::Put, 4096, 64, elapsed, stats);
        assert_eq!(report.human_line(), expected_line);
    }

    #[test]
    fn lines() {
        let mut latencies = LatencySamples::default();
        for micros in [1000u64, 2000, 3000, 4000] {
            latencies.record(Duration::from_micros(micros));
        }
        check(
            PhaseStats {
                ops: 4,
                errors: 0,
                bytes: 4 * 4096,
                latencies,
                first_error: None,
            },
            Duration::from_secs(2),
            "swift put 4KiB c64: 4 ops in 2.00s, 2.0 ops/s, 0.0 MB/s, p50 2.00 ms, p99 4.00 ms, 0 errors",
        );
        check(
            PhaseStats {
                ops: 0,
                errors: 3,
                bytes: 0,
                latencies: LatencySamples::default(),
                first_error: Some("503 Service Unavailable".to_owned()),
            },
            Duration::ZERO,
            "swift put 4KiB c64: 0 ops in 0.00s, 0.0 ops/s, 0.0 MB/s, p50 -, p99 -, 3 errors (first: 503 Service Unavailable)",
        );
    }

    #[test]
    fn json_fields() {
        let report = PhaseReport::new(
            "strata",
            Operation::Get,
            1 << 20,
            1,
            Duration::from_secs(1),
            PhaseStats {
                ops: 1,
                bytes: 1 << 20,
                ..PhaseStats::default()
            },
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["label"], "strata");
        assert_eq!(json["op"], "get");
        assert_eq!(json["size"], 1 << 20);
        assert_eq!(json["mb_per_s"], 1.048576);
        assert_eq!(json["p50_ms"], serde_json::Value::Null);
        assert!(json.get("first_error").is_none());
    }
}
