//! The in-memory price table the HTTP API reads: lock-free reads
//! (`papaya`), one writer (the clock) applying each tick's decisions. It is
//! HTTP's [`PriceLookup`] when this instance prices every cell. Every
//! published tick also goes into the per-cell [`History`].

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};

use arc_swap::ArcSwap;
use futures_util::future::BoxFuture;
use primetime_core::{CellId, PriceDecision, Tick};

use crate::history::History;
use crate::http::{Decision, Found, PriceLookup};
pub use crate::pipeline::ActiveCell;

/// Each shard's active cells as of its last tick, replaced whole per tick
/// (lock-free reads). Only `serve` keeps it, for the map.
#[derive(Debug)]
pub struct ActiveView {
    shards: Vec<ArcSwap<Vec<ActiveCell>>>,
}

impl crate::pipeline::ActiveCells for ActiveView {
    fn replace(&self, shard: usize, cells: Vec<ActiveCell>) {
        ActiveView::replace(self, shard, cells);
    }
}

impl ActiveView {
    pub fn new(shards: usize) -> Self {
        Self {
            shards: (0..shards)
                .map(|_| ArcSwap::from_pointee(Vec::new()))
                .collect(),
        }
    }

    pub fn replace(&self, shard: usize, cells: Vec<ActiveCell>) {
        if let Some(slot) = self.shards.get(shard) {
            slot.store(Arc::new(cells));
        }
    }

    /// Active cells whose centre lies in the box.
    pub fn in_bbox(
        &self,
        min_lat: f64,
        min_lng: f64,
        max_lat: f64,
        max_lng: f64,
    ) -> Vec<ActiveCell> {
        let mut out = Vec::new();
        for slot in &self.shards {
            let cells = slot.load();
            out.extend(cells.iter().filter(|c| {
                let (lat, lng) = (f64::from(c.lat), f64::from(c.lng));
                lat >= min_lat && lat <= max_lat && lng >= min_lng && lng <= max_lng
            }));
        }
        out
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.load().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A cell's current price: the decision that set it.
#[derive(Debug)]
pub struct PricedCell {
    pub decision: PriceDecision,
    /// Cell centre, cached for bounding-box queries.
    pub lat: f64,
    pub lng: f64,
}

/// Current prices and the pipeline's progress.
#[derive(Debug)]
pub struct PriceTable {
    cells: papaya::HashMap<CellId, Arc<PricedCell>>,
    /// Last fired tick (`i64::MIN` before the first).
    last_tick: AtomicI64,
    /// Wall clock (ms) when the last tick was published; staleness.
    last_publish_wall_ms: AtomicI64,
    /// Event-time end of the last fired tick.
    last_tick_end_ms: AtomicI64,
    model_version: ArcSwap<String>,
    /// Every change of every cell, for prices at a past time.
    history: History,
}

impl PriceTable {
    /// A table with the default history (24 h, 10 s ticks: the core's
    /// default bucket).
    pub fn new(model_version: &str) -> Self {
        let bucket_ms = primetime_core::Config::default().bucket_ms;
        Self::with_history(
            model_version,
            History::new(bucket_ms, &crate::history::HistoryConfig::default()),
        )
    }

    pub fn with_history(model_version: &str, history: History) -> Self {
        Self {
            history,
            cells: papaya::HashMap::new(),
            last_tick: AtomicI64::new(i64::MIN),
            last_publish_wall_ms: AtomicI64::new(i64::MIN),
            last_tick_end_ms: AtomicI64::new(i64::MIN),
            model_version: ArcSwap::from_pointee(model_version.to_owned()),
        }
    }

    /// Applies one tick's decisions (newest tick wins per cell, so a replay
    /// of an older tick changes nothing) and records progress.
    pub fn publish(&self, tick: Tick, tick_end_ms: i64, wall_ms: i64, decisions: &[PriceDecision]) {
        let cells = self.cells.pin();
        for d in decisions {
            let newer = cells
                .get(&d.cell)
                .is_none_or(|old| old.decision.tick <= d.tick);
            if newer {
                let (lat, lng) = d.cell.center();
                cells.insert(
                    d.cell,
                    Arc::new(PricedCell {
                        decision: d.clone(),
                        lat,
                        lng,
                    }),
                );
            }
        }
        self.history.publish(tick, decisions);
        self.last_tick.fetch_max(tick.0, Relaxed);
        self.last_tick_end_ms.fetch_max(tick_end_ms, Relaxed);
        self.last_publish_wall_ms.store(wall_ms, Relaxed);
    }

    /// Drops cells back at 1.0 since before `tick` (their answer is the same
    /// as an unpriced cell's), bounding memory by recent activity.
    pub fn forget_settled(&self, before: Tick) {
        let cells = self.cells.pin();
        cells.retain(|_, c| c.decision.multiplier.twentieths() > 20 || c.decision.tick >= before);
    }

    pub fn get(&self, cell: CellId) -> Option<Arc<PricedCell>> {
        self.cells.pin().get(&cell).cloned()
    }

    /// Priced cells whose centre lies in the box, at most `limit` (the most
    /// expensive first); the flag says whether more matched.
    pub fn in_bbox(
        &self,
        min_lat: f64,
        min_lng: f64,
        max_lat: f64,
        max_lng: f64,
        limit: usize,
    ) -> (Vec<Arc<PricedCell>>, bool) {
        let cells = self.cells.pin();
        let mut out: Vec<Arc<PricedCell>> = cells
            .values()
            .filter(|c| {
                c.lat >= min_lat && c.lat <= max_lat && c.lng >= min_lng && c.lng <= max_lng
            })
            .cloned()
            .collect();
        out.sort_by(|a, b| {
            b.decision
                .multiplier
                .cmp(&a.decision.multiplier)
                .then(a.decision.cell.cmp(&b.decision.cell))
        });
        let truncated = out.len() > limit;
        out.truncate(limit);
        (out, truncated)
    }

    /// The per-cell history of changes.
    pub fn history(&self) -> &History {
        &self.history
    }

    pub fn len(&self) -> usize {
        self.cells.pin().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn last_tick(&self) -> Option<Tick> {
        let t = self.last_tick.load(Relaxed);
        (t != i64::MIN).then_some(Tick(t))
    }

    pub fn last_tick_end_ms(&self) -> Option<i64> {
        let t = self.last_tick_end_ms.load(Relaxed);
        (t != i64::MIN).then_some(t)
    }

    pub fn last_publish_wall_ms(&self) -> Option<i64> {
        let t = self.last_publish_wall_ms.load(Relaxed);
        (t != i64::MIN).then_some(t)
    }

    pub fn model_version(&self) -> Arc<String> {
        self.model_version.load_full()
    }
}

/// Every cell from memory: this instance prices them all.
impl PriceLookup for PriceTable {
    fn lookup<'a>(&'a self, cells: &'a [CellId]) -> BoxFuture<'a, Vec<Found>> {
        let found = cells
            .iter()
            .map(|c| Found {
                decision: self.get(*c).map(Decision::Table),
                degraded: false,
            })
            .collect();
        Box::pin(std::future::ready(found))
    }
}
