//! The history's memory at 3 M cells, measured (not asserted: it prints).
//!
//! ```text
//! cargo test -p primetime --test history_memory -- --ignored --nocapture
//! ```
//!
//! 3 M cells at resolution 8, each changing `CHANGES` times (a surge up and
//! back down in steps), published tick by tick as the clock does; prints
//! the history's own count of bytes and the process's resident-set growth.

#[macro_use]
mod support;

use h3o::{CellIndex, Resolution};
use primetime::history::{History, HistoryConfig};
use primetime_core::{CellId, Multiplier, PriceDecision, Tick};

const CELLS: usize = 3_000_000;
const CHANGES: u32 = 4;
const CHUNK: usize = 100_000;

fn rss_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[test]
#[ignore = "measurement: 3 M cells (about a minute in a debug build)"]
fn history_memory_at_3m_cells() {
    let template = support::fixture().last;
    let cells: Vec<CellId> = CellIndex::base_cells()
        .flat_map(|b| b.children(Resolution::Eight))
        .take(CELLS)
        .filter_map(|c| CellId::from_u64(u64::from(c)))
        .collect();
    assert_eq!(cells.len(), CELLS);
    let history = History::new(10_000, &HistoryConfig::default());
    let rss0 = rss_bytes().unwrap_or(0);
    for step in 0..CHANGES {
        let tick = Tick(180_000_000 + i64::from(step));
        // 1.0 → 1.5 → 2.0 → 1.5 → ...: every cell changes at every step.
        let twentieths = [30, 40, 30, 20][step as usize % 4];
        for chunk in cells.chunks(CHUNK) {
            let decisions: Vec<PriceDecision> = chunk
                .iter()
                .map(|&cell| PriceDecision {
                    cell,
                    tick,
                    multiplier: Multiplier::from_twentieths(twentieths),
                    ..template.clone()
                })
                .collect();
            history.publish(tick, &decisions);
        }
    }
    let rss1 = rss_bytes().unwrap_or(0);
    let (n, bytes) = history.footprint();
    let config = HistoryConfig::default();
    println!(
        "history at {n} cells x {CHANGES} changes: {:.0} MiB counted ({:.1} B/cell), \
         resident set +{:.0} MiB ({:.1} B/cell); bound at {} changes/cell: {:.2} GiB",
        bytes as f64 / 1048576.0,
        bytes as f64 / n as f64,
        rss1.saturating_sub(rss0) as f64 / 1048576.0,
        rss1.saturating_sub(rss0) as f64 / n as f64,
        config.max_changes_per_cell,
        (n * (48 + 8 * config.max_changes_per_cell)) as f64 / 1073741824.0,
    );
    assert_eq!(n, CELLS);
}
