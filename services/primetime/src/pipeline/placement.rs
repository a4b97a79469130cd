//! Load-aware placement in the actor pipeline: the source routes by a
//! [`Placement`] table, counts accepted events per region, and moves
//! regions between shards only between two ticks.
//!
//! How a move keeps every decision (the same pause as a snapshot cut):
//! 1. after firing tick `k` (a multiple of the interval) the clock asks the
//!    source for its moves and waits for the answer before tick `k+1`;
//! 2. the source, between two polls (every batch sent), plans the moves
//!    from the costs since the last plan; for each, it enqueues an
//!    [`Extract`] behind the batches of the old shard and waits for the
//!    region's cells, enqueues them as an [`Import`] in the new shard, and
//!    only then routes the region's events to the new shard;
//! 3. the clock adds what the move made boundary (the moved cells, and the
//!    old shard's cells next to them) to the tick `k` boundary view, so
//!    tick `k+1` reads every neighbour it read before the move.
//!
//! So a region is owned by exactly one shard at every tick, and its cells
//! (windows, pending buckets, last summary) move with it. Each shard tracks
//! only which regions it owns; moves reach the two shards concerned.
//!
//! Costs are the events the source routed to each region since the last
//! plan (the source sees every event's region already; counting there
//! costs one hash-map increment per event and no message).
//!
//! Placement is per pipeline: with other instances (the Kafka exchange) or
//! a closed-loop input (lockstep) it is refused at start (see
//! [`super::Pipeline::start`]). Moves are planned only while the source
//! runs: after the end of a finite input the last ticks fire as placed.
//!
//! [`Extract`]: super::shard::Extract
//! [`Import`]: super::shard::Import

use std::sync::Arc;

use primetime_core::placement::DEFAULT_MAX_RATIO;
use primetime_core::snapshot::CellImage;
use primetime_core::{CellId, Move, Multiplier, Placement, RegionId, Summary, Tick};
use rustc_hash::FxHashMap;

use super::shard::BoundaryView;

/// When and how regions are rebalanced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlacementOptions {
    /// Plan moves after every tick that is a multiple of this (> 0), from
    /// the events accepted since the last plan.
    pub every_ticks: i64,
    /// No shard above this × the mean load (where a region split is not
    /// needed).
    pub max_ratio: f64,
    /// Testing: ignore the load and move every other region to the next
    /// shard at every plan (many moves, none needed).
    pub force_moves: bool,
}

impl Default for PlacementOptions {
    fn default() -> Self {
        Self {
            every_ticks: 6,
            max_ratio: DEFAULT_MAX_RATIO,
            force_moves: false,
        }
    }
}

/// The clock's request for moves after `tick`.
pub(super) struct MoveRequest {
    pub tick: Tick,
    pub reply: tokio::sync::oneshot::Sender<MoveDone>,
}

/// What the moves made boundary: summaries (as of the tick) to add to the
/// boundary view.
pub(super) struct MoveDone {
    pub summaries: Vec<(CellId, Summary)>,
}

/// The clock's side: when to ask, and where.
pub(super) struct ClockPlacement {
    pub every_ticks: i64,
    /// Unbounded, but the clock sends one request at a time and waits.
    pub requests: std::sync::mpsc::Sender<MoveRequest>,
}

impl ClockPlacement {
    /// After tick `k`: asks the source for its moves and adds what they
    /// made boundary to `boundary` (the view tick `k+1` reads).
    pub(super) async fn after_tick(&self, k: Tick, boundary: &mut Arc<BoundaryView>) {
        if self.every_ticks <= 0 || k.0 % self.every_ticks != 0 {
            return;
        }
        let (reply, rx) = tokio::sync::oneshot::channel();
        if self.requests.send(MoveRequest { tick: k, reply }).is_err() {
            return;
        }
        // An error: the source stopped (end of input): nothing moved.
        let Ok(done) = rx.await else { return };
        if !done.summaries.is_empty() {
            Arc::make_mut(boundary).summaries.extend(done.summaries);
        }
    }
}

/// The source's side: the table it routes by, the costs since the last
/// plan, and the clock's requests.
pub(super) struct SourcePlacement {
    pub table: Placement,
    costs: FxHashMap<RegionId, u64>,
    options: PlacementOptions,
    pub requests: std::sync::mpsc::Receiver<MoveRequest>,
}

impl SourcePlacement {
    pub(super) fn new(
        shards: usize,
        options: PlacementOptions,
        requests: std::sync::mpsc::Receiver<MoveRequest>,
    ) -> Self {
        Self {
            table: Placement::new(shards),
            costs: FxHashMap::default(),
            options,
            requests,
        }
    }

    /// The shard of an accepted event's region (counted as its cost).
    pub(super) fn route(&mut self, region: RegionId) -> usize {
        *self.costs.entry(region).or_default() += 1;
        self.table.shard_of(region)
    }

    /// The moves for the costs since the last plan; starts a new period.
    pub(super) fn plan(&mut self) -> Vec<Move> {
        let mut costs: Vec<(RegionId, u64)> = self.costs.drain().collect();
        costs.sort_unstable();
        let n = self.table.shards();
        if !self.options.force_moves {
            return self.table.rebalance(&costs, self.options.max_ratio);
        }
        if n < 2 {
            return Vec::new();
        }
        costs
            .iter()
            .step_by(2)
            .map(|&(region, _)| {
                let from = self.table.shard_of(region);
                Move {
                    region,
                    from,
                    to: (from + 1) % n,
                }
            })
            .collect()
    }
}

/// A moved cell's summary as of the last fired tick (from its image).
pub(super) fn summary_of(image: &CellImage) -> Option<(CellId, Summary)> {
    Some((
        CellId::from_u64(image.cell)?,
        Summary {
            supply: image.supply,
            requests_5m: image.requests_5m,
            multiplier: Multiplier::from_twentieths(image.multiplier),
        },
    ))
}
