//! The store's own counters and gauges ([`RedisStats`]), updated by its
//! threads and reads, and their Prometheus families.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};

use super::RedisStore;

/// Counters and gauges of the store, read by the metrics exporter.
#[derive(Debug, Default)]
pub struct RedisStats {
    /// The last operation succeeded (false until the first one does).
    pub up: AtomicBool,
    /// Cells sent through the price script, including those it left
    /// unchanged because Redis held a newer or equal tick (counter).
    pub price_cells_written: AtomicU64,
    /// Same (cell, tick) already stored or queued with another payload; the
    /// first one is kept (counter).
    pub price_conflicts: AtomicU64,
    /// Cells queued or being written, not yet written (gauge).
    pub pending_cells: AtomicU64,
    /// Failed price write round trips, plus price keys skipped because they
    /// hold another type (counter).
    pub write_errors: AtomicU64,
    /// Failed reads, including those refused fast while Redis is down
    /// (counter).
    pub read_errors: AtomicU64,
    /// Snapshots (all partitions of one group at one tick) written (counter).
    pub snapshots_written: AtomicU64,
    /// Failed snapshot write attempts (counter).
    pub snapshot_errors: AtomicU64,
    /// Total blob bytes of the last snapshot written (gauge).
    pub last_snapshot_bytes: AtomicU64,
    /// Tick of the last snapshot written (gauge).
    pub last_snapshot_tick: AtomicI64,
}

/// The Redis store's metric families.
pub fn render_redis_metrics(store: &RedisStore, out: &mut String) {
    let s = store.stats();
    let family = crate::metrics::family;
    family(
        out,
        "primetime_redis_up",
        "gauge",
        "1 when the last Redis operation succeeded; 0 = degraded (prices and snapshots queued).",
    );
    let _ = writeln!(out, "primetime_redis_up {}", u8::from(s.up.load(Relaxed)));
    for (name, kind, help, v) in [
        (
            "primetime_redis_price_cells_written_total",
            "counter",
            "Cells sent through the newest-tick-wins price script.",
            &s.price_cells_written,
        ),
        (
            "primetime_redis_price_conflicts_total",
            "counter",
            "Writes of a stored (cell, tick) with another payload (kept the first).",
            &s.price_conflicts,
        ),
        (
            "primetime_redis_pending_cells",
            "gauge",
            "Cells queued for the Redis price table, not yet written.",
            &s.pending_cells,
        ),
        (
            "primetime_redis_write_errors_total",
            "counter",
            "Failed Redis price writes.",
            &s.write_errors,
        ),
        (
            "primetime_redis_read_errors_total",
            "counter",
            "Failed Redis reads (HTTP answers then come from memory, marked stale).",
            &s.read_errors,
        ),
        (
            "primetime_redis_snapshots_written_total",
            "counter",
            "Snapshots written to Redis.",
            &s.snapshots_written,
        ),
        (
            "primetime_redis_snapshot_errors_total",
            "counter",
            "Failed snapshot writes.",
            &s.snapshot_errors,
        ),
    ] {
        family(out, name, kind, help);
        let _ = writeln!(out, "{name} {}", v.load(Relaxed));
    }
}
