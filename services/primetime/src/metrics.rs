//! Process metrics in the Prometheus text format, hand-rolled on atomics:
//! the hot paths only do relaxed atomic adds.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use primetime_core::{Reason, RejectCounts};

/// Upper bounds (seconds) of the tick-duration histogram buckets.
const TICK_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Renders more metric families into the exposition.
pub struct ExtraMetrics(pub Box<dyn Fn(&mut String) + Send + Sync>);

impl std::fmt::Debug for ExtraMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExtraMetrics")
    }
}

/// Writes one metric family's HELP and TYPE lines.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Every metric the service exports.
#[derive(Debug)]
pub struct Metrics {
    pub accepted: AtomicU64,
    rejected: [AtomicU64; Reason::ALL.len()],
    /// Service watermark, ms since the epoch (`i64::MIN` before any data).
    pub watermark_ms: AtomicI64,
    /// Last fired tick, `i64::MIN` before the first.
    pub last_tick: AtomicI64,
    pub ticks_fired: AtomicU64,
    tick_buckets: [AtomicU64; TICK_BUCKETS.len()],
    tick_count: AtomicU64,
    tick_sum_us: AtomicU64,
    pub active_cells: AtomicU64,
    pub decisions_published: AtomicU64,
    pub model_failures: AtomicU64,
    /// Event batches queued per shard mailbox.
    pub mailbox_depth: Vec<AtomicI64>,
    /// Times the source waited on a full shard mailbox.
    pub backpressure_waits: AtomicU64,
    /// Times the Kafka consumer paused its partitions (backpressure).
    pub kafka_pauses: AtomicU64,
    /// Rejected records written to the dead-letter topic.
    pub dead_letters: AtomicU64,
    /// Price updates acknowledged by Kafka.
    pub prices_published: AtomicU64,
    /// Kafka input partitions owned by this instance (−1: not on Kafka).
    pub assigned_partitions: AtomicI64,
    /// Ticks fired but not published while rebuilding after a rewind.
    pub ticks_suppressed: AtomicU64,
    /// Pipeline starts by how they got their state: from a snapshot, by
    /// rewinding the input, from the log start (or committed offsets).
    pub starts_from_snapshot: AtomicU64,
    pub starts_rewound: AtomicU64,
    pub starts_fresh: AtomicU64,
    /// Snapshots handed to the store (encoded size of the last one).
    pub snapshots_taken: AtomicU64,
    pub snapshot_bytes: AtomicU64,
    /// More families (e.g. the Redis store's), rendered after these.
    pub extra: std::sync::OnceLock<ExtraMetrics>,
    /// 1 when the configured model could not be loaded and the formula
    /// prices (fallback mode).
    model_fallback: AtomicU64,
}

impl Metrics {
    pub fn new(shards: usize) -> Self {
        Self {
            accepted: AtomicU64::new(0),
            rejected: Default::default(),
            watermark_ms: AtomicI64::new(i64::MIN),
            last_tick: AtomicI64::new(i64::MIN),
            ticks_fired: AtomicU64::new(0),
            tick_buckets: Default::default(),
            tick_count: AtomicU64::new(0),
            tick_sum_us: AtomicU64::new(0),
            active_cells: AtomicU64::new(0),
            decisions_published: AtomicU64::new(0),
            model_failures: AtomicU64::new(0),
            mailbox_depth: (0..shards).map(|_| AtomicI64::new(0)).collect(),
            backpressure_waits: AtomicU64::new(0),
            kafka_pauses: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            prices_published: AtomicU64::new(0),
            assigned_partitions: AtomicI64::new(-1),
            ticks_suppressed: AtomicU64::new(0),
            starts_from_snapshot: AtomicU64::new(0),
            starts_rewound: AtomicU64::new(0),
            starts_fresh: AtomicU64::new(0),
            snapshots_taken: AtomicU64::new(0),
            snapshot_bytes: AtomicU64::new(0),
            extra: std::sync::OnceLock::new(),
            model_fallback: AtomicU64::new(0),
        }
    }

    pub fn set_model_fallback(&self, fallback: bool) {
        self.model_fallback.store(u64::from(fallback), Relaxed);
    }

    pub fn model_fallback(&self) -> bool {
        self.model_fallback.load(Relaxed) == 1
    }

    pub fn reject(&self, reason: Reason) {
        self.rejected[reason.index()].fetch_add(1, Relaxed);
    }

    pub fn rejected(&self) -> RejectCounts {
        let mut c = RejectCounts::default();
        for r in Reason::ALL {
            c.0[r.index()] = self.rejected[r.index()].load(Relaxed);
        }
        c
    }

    pub fn observe_tick(&self, seconds: f64) {
        for (i, le) in TICK_BUCKETS.iter().enumerate() {
            if seconds <= *le {
                self.tick_buckets[i].fetch_add(1, Relaxed);
            }
        }
        self.tick_count.fetch_add(1, Relaxed);
        self.tick_sum_us.fetch_add((seconds * 1e6) as u64, Relaxed);
    }

    /// The Prometheus text exposition; `now_ms` is the wall clock, used
    /// only for the watermark lag.
    pub fn render(&self, now_ms: i64) -> String {
        let mut out = String::with_capacity(4096);
        fn metric(out: &mut String, name: &str, kind: &str, help: &str) {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        }
        metric(
            &mut out,
            "primetime_events_accepted_total",
            "counter",
            "Input records accepted into the windows.",
        );
        let _ = writeln!(
            out,
            "primetime_events_accepted_total {}",
            self.accepted.load(Relaxed)
        );
        metric(
            &mut out,
            "primetime_events_rejected_total",
            "counter",
            "Input records rejected, by reason.",
        );
        for r in Reason::ALL {
            let _ = writeln!(
                out,
                "primetime_events_rejected_total{{reason=\"{}\"}} {}",
                r.as_str(),
                self.rejected[r.index()].load(Relaxed)
            );
        }
        let wm = self.watermark_ms.load(Relaxed);
        metric(
            &mut out,
            "primetime_watermark_ms",
            "gauge",
            "Service watermark, ms since the Unix epoch.",
        );
        metric(
            &mut out,
            "primetime_watermark_lag_seconds",
            "gauge",
            "Wall clock minus service watermark.",
        );
        if wm != i64::MIN && wm != i64::MAX {
            let _ = writeln!(out, "primetime_watermark_ms {wm}");
            let _ = writeln!(
                out,
                "primetime_watermark_lag_seconds {:.3}",
                (now_ms - wm) as f64 / 1000.0
            );
        }
        metric(
            &mut out,
            "primetime_last_tick",
            "gauge",
            "Number of the last fired tick.",
        );
        let t = self.last_tick.load(Relaxed);
        if t != i64::MIN {
            let _ = writeln!(out, "primetime_last_tick {t}");
        }
        metric(&mut out, "primetime_ticks_total", "counter", "Ticks fired.");
        let _ = writeln!(
            out,
            "primetime_ticks_total {}",
            self.ticks_fired.load(Relaxed)
        );
        metric(
            &mut out,
            "primetime_tick_duration_seconds",
            "histogram",
            "Time to price one tick across all shards.",
        );
        for (i, le) in TICK_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "primetime_tick_duration_seconds_bucket{{le=\"{le}\"}} {}",
                self.tick_buckets[i].load(Relaxed)
            );
        }
        let count = self.tick_count.load(Relaxed);
        let _ = writeln!(
            out,
            "primetime_tick_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "primetime_tick_duration_seconds_sum {:.6}",
            self.tick_sum_us.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "primetime_tick_duration_seconds_count {count}");
        metric(
            &mut out,
            "primetime_active_cells",
            "gauge",
            "Cells with window state or a multiplier above 1.0.",
        );
        let _ = writeln!(
            out,
            "primetime_active_cells {}",
            self.active_cells.load(Relaxed)
        );
        metric(
            &mut out,
            "primetime_decisions_published_total",
            "counter",
            "Price decisions published.",
        );
        let _ = writeln!(
            out,
            "primetime_decisions_published_total {}",
            self.decisions_published.load(Relaxed)
        );
        metric(
            &mut out,
            "primetime_model_failures_total",
            "counter",
            "Tick batches the model failed (priced by the formula).",
        );
        let _ = writeln!(
            out,
            "primetime_model_failures_total {}",
            self.model_failures.load(Relaxed)
        );
        metric(
            &mut out,
            "primetime_model_fallback",
            "gauge",
            "1 when the configured model failed to load and the fallback formula prices.",
        );
        let _ = writeln!(
            out,
            "primetime_model_fallback {}",
            self.model_fallback.load(Relaxed)
        );
        metric(
            &mut out,
            "primetime_mailbox_depth",
            "gauge",
            "Event batches waiting in each shard's mailbox.",
        );
        for (i, d) in self.mailbox_depth.iter().enumerate() {
            let _ = writeln!(
                out,
                "primetime_mailbox_depth{{shard=\"{i}\"}} {}",
                d.load(Relaxed).max(0)
            );
        }
        metric(
            &mut out,
            "primetime_backpressure_waits_total",
            "counter",
            "Times the source waited on a full shard mailbox.",
        );
        let _ = writeln!(
            out,
            "primetime_backpressure_waits_total {}",
            self.backpressure_waits.load(Relaxed)
        );
        for (name, help, v) in [
            (
                "primetime_kafka_pauses_total",
                "Times the Kafka consumer paused its partitions for backpressure.",
                &self.kafka_pauses,
            ),
            (
                "primetime_dead_letters_total",
                "Rejected records written to the dead-letter topic.",
                &self.dead_letters,
            ),
            (
                "primetime_prices_published_total",
                "Price updates acknowledged by Kafka.",
                &self.prices_published,
            ),
            (
                "primetime_ticks_suppressed_total",
                "Ticks fired but not published while rebuilding state after a rewind.",
                &self.ticks_suppressed,
            ),
            (
                "primetime_snapshots_taken_total",
                "Consistent pipeline snapshots handed to the store.",
                &self.snapshots_taken,
            ),
        ] {
            metric(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", v.load(Relaxed));
        }
        metric(
            &mut out,
            "primetime_kafka_assigned_partitions",
            "gauge",
            "Kafka input partitions owned by this instance (-1: not on Kafka).",
        );
        let _ = writeln!(
            out,
            "primetime_kafka_assigned_partitions {}",
            self.assigned_partitions.load(Relaxed)
        );
        metric(
            &mut out,
            "primetime_pipeline_starts_total",
            "counter",
            "Pipeline starts by where their state came from.",
        );
        for (from, v) in [
            ("snapshot", &self.starts_from_snapshot),
            ("rewind", &self.starts_rewound),
            ("fresh", &self.starts_fresh),
        ] {
            let _ = writeln!(
                out,
                "primetime_pipeline_starts_total{{from=\"{from}\"}} {}",
                v.load(Relaxed)
            );
        }
        metric(
            &mut out,
            "primetime_snapshot_bytes",
            "gauge",
            "Encoded size of the last snapshot.",
        );
        let _ = writeln!(
            out,
            "primetime_snapshot_bytes {}",
            self.snapshot_bytes.load(Relaxed)
        );
        if let Some(extra) = self.extra.get() {
            (extra.0)(&mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_values() {
        let m = Metrics::new(2);
        m.reject(Reason::Late);
        m.observe_tick(0.003);
        m.watermark_ms.store(1_000, Relaxed);
        let text = m.render(3_000);
        assert!(text.contains("primetime_events_rejected_total{reason=\"late\"} 1"));
        assert!(text.contains("primetime_tick_duration_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("primetime_tick_duration_seconds_bucket{le=\"0.0025\"} 0"));
        assert!(text.contains("primetime_watermark_lag_seconds 2.000"));
        assert!(text.contains("primetime_mailbox_depth{shard=\"1\"} 0"));
        assert!(text.contains("primetime_model_fallback 0"));
    }
}
