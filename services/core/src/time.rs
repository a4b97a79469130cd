//! Time: event and ingest timestamps, buckets and ticks (DESIGN §3).
//!
//! All timestamps are `i64` milliseconds since the Unix epoch, UTC. Nothing
//! in the core reads a clock; time only arrives in records.

use serde::{Deserialize, Serialize};

/// A device timestamp (untrusted until validated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EventTime(pub i64);

/// The trusted timestamp a record got on ingestion (Kafka record timestamp
/// or the simulator's registration time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IngestTime(pub i64);

/// A watermark: no more events with an earlier (un-re-timed) time are
/// expected. `Watermark::MIN` before any data, `Watermark::MAX` at end of
/// input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Watermark(pub i64);

impl Watermark {
    pub const MIN: Watermark = Watermark(i64::MIN);
    pub const MAX: Watermark = Watermark(i64::MAX);
}

/// Tick `k` is the end of bucket `k`: `(k + 1) * bucket_ms`. A tick is the
/// version of every decision made at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Tick(pub i64);

impl Tick {
    /// The event time at which this tick closes (exclusive end of bucket).
    pub fn end_ms(self, bucket_ms: i64) -> i64 {
        self.0.saturating_add(1).saturating_mul(bucket_ms)
    }

    pub fn next(self) -> Tick {
        Tick(self.0 + 1)
    }
}

/// The bucket holding event time `t`.
pub fn bucket_of(t: i64, bucket_ms: i64) -> i64 {
    t.div_euclid(bucket_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_floor_towards_minus_infinity() {
        assert_eq!(bucket_of(0, 10_000), 0);
        assert_eq!(bucket_of(9_999, 10_000), 0);
        assert_eq!(bucket_of(10_000, 10_000), 1);
        assert_eq!(bucket_of(-1, 10_000), -1);
        assert_eq!(Tick(0).end_ms(10_000), 10_000);
    }
}
