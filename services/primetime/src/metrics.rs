//! Process metrics: the atomics every part of the service bumps (the hot
//! paths only do relaxed atomic adds) and their exposition for `/metrics`.
//!
//! The exposition is encoded by `prometheus-client` (OpenMetrics text) from
//! a [`Collector`] that reads the atomics at scrape time, so the fields stay
//! plain atomics. Sample names, types, labels and help texts are those of
//! the hand-written Prometheus text format this replaced; OpenMetrics names
//! a counter's family without `_total` in `# TYPE`/`# HELP` lines, its
//! samples keep it.

use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use primetime_core::{Reason, RejectCounts};

/// Upper bounds (seconds) of the tick-duration histogram buckets.
const TICK_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Renders more metric families into the exposition, after the service's
/// own and before the OpenMetrics `# EOF`; each family's descriptor comes
/// from [`family`].
pub struct ExtraMetrics(pub Box<dyn Fn(&mut String) + Send + Sync>);

impl std::fmt::Debug for ExtraMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExtraMetrics")
    }
}

/// Writes one metric family's HELP and TYPE lines for an [`ExtraMetrics`]
/// renderer, in OpenMetrics form: a counter's family is named without the
/// `_total` its samples carry.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let name = match kind {
        "counter" => counter_family(name),
        _ => name,
    };
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

    /// The exposition (OpenMetrics text, [`CONTENT_TYPE`]) encoded by
    /// prometheus-client from these atomics as they are now, then the
    /// [`ExtraMetrics`] families; `now_ms` is the wall clock, used only for
    /// the watermark lag.
    pub fn render(self: &Arc<Self>, now_ms: i64) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Scrape {
            metrics: Arc::clone(self),
            now_ms,
        }));
        let mut out = String::with_capacity(8192);
        // Writing into a `String` cannot fail; an encoder error would only
        // come from a value out of its range (a gauge above `i64::MAX`).
        if let Err(e) = encode_registry(&mut out, &registry) {
            tracing::warn!(error = %e, "metrics: encoding failed");
        }
        if let Some(extra) = self.extra.get() {
            (extra.0)(&mut out);
        }
        let _ = encode_eof(&mut out);
        out
    }

    /// The tick histogram as prometheus-client wants it: per-bucket (not
    /// cumulative) counts, `+Inf` last. The atomics are cumulative and read
    /// one by one while ticks may be observed, so a bucket can read below
    /// the one before it: clamped, the encoded series stays monotonic.
    fn tick_histogram(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let count = self.tick_count.load(Relaxed);
        let mut below = 0;
        let mut buckets = Vec::with_capacity(TICK_BUCKETS.len() + 1);
        for (le, n) in TICK_BUCKETS.iter().zip(&self.tick_buckets) {
            let cumulative = n.load(Relaxed).max(below);
            buckets.push((*le, cumulative - below));
            below = cumulative;
        }
        buckets.push((f64::MAX, count.saturating_sub(below)));
        let sum = self.tick_sum_us.load(Relaxed) as f64 / 1e6;
        (sum, count, buckets)
    }
}

/// One scrape: the metrics and the wall clock of the request.
#[derive(Debug)]
struct Scrape {
    metrics: Arc<Metrics>,
    now_ms: i64,
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        self.encode_pipeline(&mut enc)?;
        self.encode_outputs(&mut enc)
    }
}

impl Scrape {
    /// Input, watermark and tick families.
    fn encode_pipeline(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let m = &self.metrics;
        counter(
            enc,
            "primetime_events_accepted_total",
            "Input records accepted into the windows.",
            m.accepted.load(Relaxed),
        )?;
        let rejected: Vec<(String, u64)> = Reason::ALL
            .iter()
            .map(|r| (r.as_str().to_owned(), m.rejected[r.index()].load(Relaxed)))
            .collect();
        let help = "Input records rejected, by reason.";
        labelled_counter(
            enc,
            "primetime_events_rejected_total",
            help,
            "reason",
            &rejected,
        )?;
        let wm = m.watermark_ms.load(Relaxed);
        let wm = (wm != i64::MIN && wm != i64::MAX).then_some(wm);
        let help = "Service watermark, ms since the Unix epoch.";
        gauge(enc, "primetime_watermark_ms", help, wm)?;
        let lag = wm.map(|wm| (self.now_ms - wm) as f64 / 1000.0);
        let help = "Wall clock minus service watermark.";
        gauge(enc, "primetime_watermark_lag_seconds", help, lag)?;
        let t = m.last_tick.load(Relaxed);
        let help = "Number of the last fired tick.";
        gauge(
            enc,
            "primetime_last_tick",
            help,
            (t != i64::MIN).then_some(t),
        )?;
        let ticks = m.ticks_fired.load(Relaxed);
        counter(enc, "primetime_ticks_total", "Ticks fired.", ticks)?;
        let (sum, count, buckets) = m.tick_histogram();
        enc.encode_descriptor(
            "primetime_tick_duration_seconds",
            "Time to price one tick across all shards.",
            None,
            MetricType::Histogram,
        )?
        .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        let help = "Cells with window state or a multiplier above 1.0.";
        gauge(
            enc,
            "primetime_active_cells",
            help,
            Some(m.active_cells.load(Relaxed)),
        )
    }

    /// Model, mailbox, Kafka and snapshot families, in today's order.
    fn encode_outputs(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let m = &self.metrics;
        for (name, help, v) in [
            (
                "primetime_decisions_published_total",
                "Price decisions published.",
                &m.decisions_published,
            ),
            (
                "primetime_model_failures_total",
                "Tick batches the model failed (priced by the formula).",
                &m.model_failures,
            ),
        ] {
            counter(enc, name, help, v.load(Relaxed))?;
        }
        let help = "1 when the configured model failed to load and the fallback formula prices.";
        let fallback = m.model_fallback.load(Relaxed);
        gauge(enc, "primetime_model_fallback", help, Some(fallback))?;
        let mut depth = enc.encode_descriptor(
            "primetime_mailbox_depth",
            "Event batches waiting in each shard's mailbox.",
            None,
            MetricType::Gauge,
        )?;
        for (i, d) in m.mailbox_depth.iter().enumerate() {
            let labels = [("shard", i.to_string())];
            depth
                .encode_family(&labels)?
                .encode_gauge(&d.load(Relaxed).max(0))?;
        }
        for (name, help, v) in [
            (
                "primetime_backpressure_waits_total",
                "Times the source waited on a full shard mailbox.",
                &m.backpressure_waits,
            ),
            (
                "primetime_kafka_pauses_total",
                "Times the Kafka consumer paused its partitions for backpressure.",
                &m.kafka_pauses,
            ),
            (
                "primetime_dead_letters_total",
                "Rejected records written to the dead-letter topic.",
                &m.dead_letters,
            ),
            (
                "primetime_prices_published_total",
                "Price updates acknowledged by Kafka.",
                &m.prices_published,
            ),
            (
                "primetime_ticks_suppressed_total",
                "Ticks fired but not published while rebuilding state after a rewind.",
                &m.ticks_suppressed,
            ),
            (
                "primetime_snapshots_taken_total",
                "Consistent pipeline snapshots handed to the store.",
                &m.snapshots_taken,
            ),
        ] {
            counter(enc, name, help, v.load(Relaxed))?;
        }
        self.encode_recovery(enc)
    }

    /// Kafka assignment, pipeline starts and snapshot size.
    fn encode_recovery(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let m = &self.metrics;
        gauge(
            enc,
            "primetime_kafka_assigned_partitions",
            "Kafka input partitions owned by this instance (-1: not on Kafka).",
            Some(m.assigned_partitions.load(Relaxed)),
        )?;
        let starts: Vec<(String, u64)> = [
            ("snapshot", &m.starts_from_snapshot),
            ("rewind", &m.starts_rewound),
            ("fresh", &m.starts_fresh),
        ]
        .into_iter()
        .map(|(from, v)| (from.to_owned(), v.load(Relaxed)))
        .collect();
        let help = "Pipeline starts by where their state came from.";
        labelled_counter(
            enc,
            "primetime_pipeline_starts_total",
            help,
            "from",
            &starts,
        )?;
        let bytes = m.snapshot_bytes.load(Relaxed);
        let help = "Encoded size of the last snapshot.";
        gauge(enc, "primetime_snapshot_bytes", help, Some(bytes))
    }
}

/// A counter family of one sample. `name` is the sample's name; OpenMetrics
/// names the family without its `_total` suffix (the encoder adds it back).
fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    enc.encode_descriptor(counter_family(name), help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&v, None)
}

/// A counter family with one label.
fn labelled_counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: &[(String, u64)],
) -> fmt::Result {
    let mut family =
        enc.encode_descriptor(counter_family(name), help, None, MetricType::Counter)?;
    for (value, n) in values {
        let labels = [(label, value.as_str())];
        family
            .encode_family(&labels)?
            .encode_counter::<NoLabelSet, _, u64>(n, None)?;
    }
    Ok(())
}

/// A gauge family; `None` writes the family without a sample (as today
/// before the first tick or watermark).
fn gauge<V: EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: Option<V>,
) -> fmt::Result {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    match v {
        Some(v) => family.encode_gauge(&v),
        None => Ok(()),
    }
}

fn counter_family(name: &str) -> &str {
    name.strip_suffix("_total").unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered() -> String {
        let m = Arc::new(Metrics::new(2));
        m.reject(Reason::Late);
        m.observe_tick(0.003);
        m.watermark_ms.store(1_000, Relaxed);
        m.render(3_000)
    }

    #[test]
    fn renders_every_family_with_values() {
        let text = rendered();
        assert!(text.contains("primetime_events_rejected_total{reason=\"late\"} 1"));
        assert!(text.contains("primetime_tick_duration_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("primetime_tick_duration_seconds_bucket{le=\"0.0025\"} 0"));
        assert!(text.contains("primetime_tick_duration_seconds_bucket{le=\"+Inf\"} 1"));
        // OpenMetrics writes floats in their shortest form (was `2.000`).
        assert!(text.contains("primetime_watermark_lag_seconds 2.0\n"));
        assert!(text.contains("primetime_mailbox_depth{shard=\"1\"} 0"));
        assert!(text.contains("primetime_model_fallback 0"));
        assert!(text.ends_with("# EOF\n"));
    }

    /// The family a sample line belongs to, by OpenMetrics suffix rules.
    fn owner<'a>(sample: &str, types: &'a [(String, String)]) -> Option<&'a str> {
        let name = sample.split(['{', ' ']).next()?;
        types.iter().find_map(|(family, kind)| {
            let suffixes: &[&str] = match kind.as_str() {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            let rest = name.strip_prefix(family.as_str())?;
            suffixes.contains(&rest).then_some(kind.as_str())
        })
    }

    #[test]
    fn exposition_parses_into_typed_families() {
        let m = Arc::new(Metrics::new(2));
        let _ = m.extra.set(ExtraMetrics(Box::new(|out| {
            family(
                out,
                "primetime_redis_write_errors_total",
                "counter",
                "Failed writes.",
            );
            out.push_str("primetime_redis_write_errors_total 3\n");
        })));
        m.last_tick.store(7, Relaxed);
        let text = m.render(0);
        let mut types: Vec<(String, String)> = Vec::new();
        let mut samples = 0;
        for line in text.lines() {
            if let Some(t) = line.strip_prefix("# TYPE ") {
                let (family, kind) = t.split_once(' ').expect("TYPE line has a kind");
                assert!(!types.iter().any(|(f, _)| f == family), "{family} twice");
                types.push((family.to_owned(), kind.to_owned()));
            } else if !line.starts_with('#') {
                assert!(owner(line, &types).is_some(), "untyped sample: {line}");
                let value = line.rsplit(' ').next().expect("a value");
                assert!(value.parse::<f64>().is_ok(), "{line}");
                samples += 1;
            }
        }
        assert!(samples > 30, "{samples} samples");
        for name in [
            "primetime_events_accepted_total",
            "primetime_events_rejected_total",
            "primetime_last_tick 7",
            "primetime_ticks_total",
            "primetime_tick_duration_seconds_sum",
            "primetime_tick_duration_seconds_count",
            "primetime_active_cells",
            "primetime_decisions_published_total",
            "primetime_kafka_assigned_partitions -1",
            "primetime_pipeline_starts_total{from=\"rewind\"} 0",
            "primetime_snapshot_bytes",
            "primetime_redis_write_errors_total 3",
        ] {
            assert!(text.contains(name), "{name} missing");
        }
        assert_eq!(text.lines().last(), Some("# EOF"));
    }
}
