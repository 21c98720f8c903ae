//! Latency samples and exact percentiles.
//!
//! Every completed request is kept as one `u32` of microseconds, and
//! percentiles are read off the sorted samples. That is exact and needs no
//! dependency; it costs 4 bytes per operation, about 8 MB for a 10 s phase at
//! 200 000 ops/s, which is fine for the bounded phases this tool runs. A
//! streaming histogram (HdrHistogram) would only pay off for hour-long runs.

use std::time::Duration;

/// The latencies of one phase, in microseconds, in completion order until
/// [`LatencySamples::sorted`] is called.
#[derive(Debug, Default, Clone)]
pub struct LatencySamples {
    micros: Vec<u32>,
}

impl LatencySamples {
    /// Records one request. Latencies above `u32::MAX` µs (71 minutes) are
    /// clamped rather than wrapped.
    pub fn record(&mut self, latency: Duration) {
        let micros = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        self.micros.push(micros);
    }

    /// Moves the samples of `other` into `self`.
    pub fn merge(&mut self, mut other: LatencySamples) {
        self.micros.append(&mut other.micros);
    }

    pub fn len(&self) -> usize {
        self.micros.len()
    }

    pub fn is_empty(&self) -> bool {
        self.micros.is_empty()
    }

    /// Sorts the samples once so that several percentiles can be read.
    pub fn sorted(mut self) -> SortedLatencies {
        self.micros.sort_unstable();
        SortedLatencies {
            micros: self.micros,
        }
    }
}

/// Latencies in ascending order.
#[derive(Debug, Clone)]
pub struct SortedLatencies {
    micros: Vec<u32>,
}

impl SortedLatencies {
    /// The `percent`-th percentile by the nearest-rank method: the smallest
    /// sample such that at least `percent`% of all samples are less than or
    /// equal to it. `None` when there are no samples; `percent` is clamped to
    /// `0..=100`, and 0 gives the minimum.
    pub fn percentile(&self, percent: f64) -> Option<Duration> {
        let micros = nearest_rank(&self.micros, percent)?;
        Some(Duration::from_micros(u64::from(micros)))
    }
}

fn nearest_rank(sorted: &[u32], percent: f64) -> Option<u32> {
    let count = sorted.len();
    if count == 0 {
        return None;
    }
    let percent = if percent.is_nan() {
        0.0
    } else {
        percent.clamp(0.0, 100.0)
    };
    // rank = ceil(p/100 * n), 1-based; rank 0 (p = 0) means the minimum. The
    // product is at most `count`, so the float-to-int conversion cannot
    // saturate in a way that matters.
    let rank = (percent / 100.0 * count as f64).ceil() as usize;
    let index = rank.clamp(1, count) - 1;
    sorted.get(index).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(samples: &[u32], percent: f64, expected: Option<u32>) {
        let mut recorded = LatencySamples::default();
        for &micros in samples {
            recorded.record(Duration::from_micros(u64::from(micros)));
        }
        let actual = recorded.sorted().percentile(percent);
        let expected = expected.map(|micros| Duration::from_micros(u64::from(micros)));
        assert_eq!(actual, expected, "p{percent} of {samples:?}");
    }

    #[test]
    fn percentiles() {
        check(&[], 50.0, None);
        check(&[7], 0.0, Some(7));
        check(&[7], 50.0, Some(7));
        check(&[7], 100.0, Some(7));
        // Unsorted input: recording order must not matter.
        check(&[30, 10, 20], 50.0, Some(20));
        check(&[30, 10, 20], 0.0, Some(10));
        check(&[30, 10, 20], 100.0, Some(30));
        // Nearest rank on 1..=100: p50 is the 50th value, p99 the 99th.
        let hundred: Vec<u32> = (1..=100).collect();
        check(&hundred, 50.0, Some(50));
        check(&hundred, 99.0, Some(99));
        check(&hundred, 99.5, Some(100));
        check(&hundred, 1.0, Some(1));
        // Ten samples: p50 -> rank 5, p99 -> rank ceil(9.9) = 10.
        let ten = [10, 20, 30, 40, 50, 60, 70, 80, 90, 1000];
        check(&ten, 50.0, Some(50));
        check(&ten, 99.0, Some(1000));
        check(&ten, 90.0, Some(90));
        // Out-of-range requests are clamped, never a panic.
        check(&ten, 150.0, Some(1000));
        check(&ten, -5.0, Some(10));
        check(&ten, f64::NAN, Some(10));
        // Duplicates.
        check(&[5, 5, 5, 9], 75.0, Some(5));
        check(&[5, 5, 5, 9], 76.0, Some(9));
    }

    #[test]
    fn merge_and_clamp() {
        let mut first = LatencySamples::default();
        first.record(Duration::from_micros(3));
        let mut second = LatencySamples::default();
        second.record(Duration::from_secs(10_000_000));
        second.record(Duration::from_micros(1));
        first.merge(second);
        assert_eq!(first.len(), 3);
        let sorted = first.sorted();
        assert_eq!(sorted.percentile(0.0), Some(Duration::from_micros(1)));
        assert_eq!(
            sorted.percentile(100.0),
            Some(Duration::from_micros(u64::from(u32::MAX)))
        );
    }
}
