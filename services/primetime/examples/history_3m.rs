//! The price history's memory at 3 M cells, and its restore from a prices
//! topic of 3 M cells (issue 17), measured; prints figures, asserts
//! nothing.
//!
//! Run: `cargo run --release -p primetime --example history_3m`
//!
//! Each phase runs in a child process of its own (this program run with
//! the phase's name), so each peak resident set (`VmHWM`) is its own:
//! - `fill-1`, `fill-10`: 3 M resolution-8 cells, each changing 1 or 10
//!   times (10 s ticks a minute apart, 1.0 → 1.5 → 2.0 → …), recorded as
//!   the tail records the prices topic; prints the history's own count
//!   and the resident-set growth, per cell.
//! - `restore-1`, `restore-10`: the same records as a compacted prices
//!   topic read at start: each one encoded as the protobuf
//!   `PriceUpdate` the topic holds (with a 400-byte explanation, which the
//!   restore drops), decoded and fed to `History::restore_compacted`, in
//!   tick order; prints the time and the peak resident set. The broker
//!   and librdkafka's fetch are not included (`kafka/price_history.rs`
//!   caps its prefetch queue at 4 MiB a partition).

use std::process::Command;
use std::time::Instant;

use h3o::{CellIndex, Resolution};
use primetime::history::{History, HistoryConfig};
use primetime_core::{CellId, Tick};
use primetime_proto::v1::PriceUpdate;
use prost::Message as _;

// The service's allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CELLS: usize = 3_000_000;
const BUCKET_MS: i64 = 10_000;
/// A tick in 2027; changes one minute (6 ticks) apart.
const FIRST_TICK: i64 = 180_000_000;
const TICKS_BETWEEN: i64 = 6;

/// `VmRSS` and `VmHWM` of this process, bytes.
fn memory() -> (usize, usize) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<usize>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn cells() -> Vec<CellId> {
    CellIndex::base_cells()
        .flat_map(|b| b.children(Resolution::Eight))
        .take(CELLS)
        .filter_map(|c| CellId::from_u64(u64::from(c)))
        .collect()
}

/// The `step`-th change of every cell: up in steps of 0.5 to 2.0, back.
fn update(cell: CellId, step: usize) -> PriceUpdate {
    let tick = FIRST_TICK + step as i64 * TICKS_BETWEEN;
    PriceUpdate {
        cell: cell.to_string(),
        tick,
        tick_end_ms: Tick(tick).end_ms(BUCKET_MS),
        multiplier: [1.5, 2.0, 1.5, 1.0][step % 4],
        model_version: "primetime-v1".into(),
        explanation: "x".repeat(400),
        control_ids: Vec::new(),
    }
}

const MIB: f64 = 1_048_576.0;

fn fill(changes: usize) {
    let cells = cells();
    let history = History::new(BUCKET_MS, &HistoryConfig::default());
    let (rss0, _) = memory();
    let started = Instant::now();
    for step in 0..changes {
        for &cell in &cells {
            let mut u = update(cell, step);
            u.explanation = String::new();
            history.record_update(&u);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let (rss1, _) = memory();
    let (n, bytes) = history.footprint();
    let grown = rss1.saturating_sub(rss0);
    println!(
        "fill-{changes}: {n} cells x {changes} changes in {seconds:.1} s: \
         {:.0} MiB counted ({:.1} B/cell), resident set +{:.0} MiB ({:.1} B/cell)",
        bytes as f64 / MIB,
        bytes as f64 / n as f64,
        grown as f64 / MIB,
        grown as f64 / n as f64,
    );
}

fn restore(changes: usize) {
    let cells = cells();
    let history = History::new(BUCKET_MS, &HistoryConfig::default());
    let (rss0, hwm0) = memory();
    let started = Instant::now();
    let mut restore = history.restore_compacted();
    let mut wire = Vec::with_capacity(1024);
    let mut records = 0u64;
    for step in 0..changes {
        for &cell in &cells {
            wire.clear();
            update(cell, step).encode(&mut wire).unwrap_or_default();
            // As `kafka/price_history.rs` does with each record.
            if let Ok(mut u) = PriceUpdate::decode(wire.as_slice()) {
                u.explanation = String::new();
                restore.add(&u);
                records += 1;
            }
        }
    }
    let stats = restore.finish();
    let seconds = started.elapsed().as_secs_f64();
    let (rss1, hwm1) = memory();
    println!(
        "restore-{changes}: {records} records of {} cells in {seconds:.1} s \
         ({:.0} k records/s, applied {}, skipped {}): peak resident set {:.0} MiB \
         (+{:.0} MiB over the cells list), after {:.0} MiB (+{:.0} MiB)",
        cells.len(),
        records as f64 / seconds / 1000.0,
        stats.applied,
        stats.skipped,
        hwm1 as f64 / MIB,
        hwm1.saturating_sub(hwm0.max(rss0)) as f64 / MIB,
        rss1 as f64 / MIB,
        rss1.saturating_sub(rss0) as f64 / MIB,
    );
}

fn main() -> anyhow::Result<()> {
    match std::env::args().nth(1).as_deref() {
        Some("fill-1") => fill(1),
        Some("fill-10") => fill(10),
        Some("restore-1") => restore(1),
        Some("restore-10") => restore(10),
        Some(other) => anyhow::bail!("unknown phase {other}"),
        None => {
            let me = std::env::current_exe()?;
            let config = HistoryConfig::default();
            println!(
                "history bound: {} changes per cell, retention {} h",
                config.max_changes_per_cell,
                config.retention_ms / 3_600_000
            );
            for phase in ["fill-1", "fill-10", "restore-1", "restore-10"] {
                let status = Command::new(&me).arg(phase).status()?;
                anyhow::ensure!(status.success(), "{phase} failed: {status}");
            }
        }
    }
    Ok(())
}
