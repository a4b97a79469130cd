//! Load-aware placement in the actor pipeline: the source routes by a
//! [`Placement`] table, shards count what each region costs them, and
//! regions move between shards only between two ticks.
//!
//! How a move keeps every decision (the same pause as a snapshot cut):
//! 1. after firing tick `k` (a multiple of the interval) the clock asks the
//!    source for its moves, with the costs of the ticks since the last
//!    plan, and waits for the answer before tick `k+1`;
//! 2. the source, between two polls (every batch sent), plans the moves
//!    from those costs; for each, it enqueues an [`Extract`] behind the
//!    batches of the old shard and waits for the region's cells, enqueues
//!    them as an [`Import`] in the new shard, and only then routes the
//!    region's events to the new shard;
//! 3. the clock adds what the move made boundary (the moved cells, and the
//!    old shard's cells next to them) to the tick `k` boundary view, so
//!    tick `k+1` reads every neighbour it read before the move.
//!
//! So a region is owned by exactly one shard at every tick, and its cells
//! (windows, pending buckets, last summary) move with it. Each shard tracks
//! only which regions it owns; moves reach the two shards concerned.
//!
//! Costs ([`ShardCosts`]): each shard counts, per region, the events it
//! applies by the tick of their bucket, and the cells it prices at each
//! tick; with each tick's report it hands over the counts of that tick
//! (events of buckets up to it). Both are functions of the input alone:
//! every event of bucket `k` is applied before tick `k` fires, whichever
//! shard applied it (the clock sums the regions over shards), so the costs,
//! the moves and the decisions are the same on every run. A cost weighs
//! the two by [`DEFAULT_WEIGHTS`], calibrated on measured shard CPU.
//!
//! Placement is per pipeline: with other instances (the Kafka exchange) or
//! a closed-loop input (lockstep) it is refused at start (see
//! [`super::Pipeline::start`]). Moves are planned only while the source
//! runs: after the end of a finite input the last ticks fire as placed.
//!
//! [`Extract`]: super::shard::Extract
//! [`Import`]: super::shard::Import

use std::sync::Arc;

use primetime_core::placement::{CostWeights, DEFAULT_MAX_RATIO, RegionLoad};
use primetime_core::record::ValidEvent;
use primetime_core::snapshot::CellImage;
use primetime_core::time::bucket_of;
use primetime_core::{CellId, Geo, Move, Multiplier, Placement, RegionId, Summary, Tick, TickRow};
use rustc_hash::FxHashMap;

use super::shard::BoundaryView;

/// Shard CPU per event applied and per cell priced at a tick (embedded
/// ONNX model), calibrated with the skewed benchmark (`cargo run --release
/// -p primetime --example skewed_placement`, 2 shards, hash placement):
/// each shard's thread CPU (schedstat) against the events and cell-ticks
/// the reference engine counts for its regions, two equations solved for
/// the two weights. Fifteen runs of different shapes (2–7.8 M events,
/// 54–222 k cell-ticks) on a 2-core machine shared with other builds gave
/// 16–35 ns per event (mean 27) and 0.66–1.63 µs per cell-tick (mean
/// 1.24); rounded to 30 ns and 1.2 µs. A cell-tick weighs about 40 events,
/// so shard CPU follows active cells, and a region with half the events is
/// far from half its shard's work.
pub const DEFAULT_WEIGHTS: CostWeights = CostWeights {
    per_event_ns: 30,
    per_cell_tick_ns: 1_200,
};

/// When and how regions are rebalanced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlacementOptions {
    /// Plan moves after every tick that is a multiple of this (> 0), from
    /// the costs of the ticks since the last plan.
    pub every_ticks: i64,
    /// No shard above this × the mean load (where a region split is not
    /// needed).
    pub max_ratio: f64,
    /// How events and priced cells add up to a region's cost.
    pub weights: CostWeights,
    /// Testing: ignore the load and move every other region to the next
    /// shard at every plan (many moves, none needed).
    pub force_moves: bool,
}

impl Default for PlacementOptions {
    fn default() -> Self {
        Self {
            every_ticks: 6,
            max_ratio: DEFAULT_MAX_RATIO,
            weights: DEFAULT_WEIGHTS,
            force_moves: false,
        }
    }
}

/// The clock's request for moves after `tick`, with the costs of the
/// ticks since the last request (sorted by region).
pub(super) struct MoveRequest {
    pub tick: Tick,
    pub costs: Vec<(RegionId, u64)>,
    pub reply: tokio::sync::oneshot::Sender<MoveDone>,
}

/// What the moves made boundary: summaries (as of the tick) to add to the
/// boundary view.
pub(super) struct MoveDone {
    pub summaries: Vec<(CellId, Summary)>,
}

/// The clock's side: when to ask, where, and the costs the shards
/// reported since the last request.
pub(super) struct ClockPlacement {
    pub every_ticks: i64,
    pub weights: CostWeights,
    /// Unbounded, but the clock sends one request at a time and waits.
    pub requests: std::sync::mpsc::Sender<MoveRequest>,
    pub loads: FxHashMap<RegionId, RegionLoad>,
}

impl ClockPlacement {
    /// Adds a shard's tick report (regions counted by several shards, as
    /// around a move, add up).
    pub(super) fn add(&mut self, costs: Vec<(RegionId, RegionLoad)>) {
        for (region, load) in costs {
            self.loads.entry(region).or_default().add(load);
        }
    }

    /// After tick `k`: asks the source for its moves and adds what they
    /// made boundary to `boundary` (the view tick `k+1` reads).
    pub(super) async fn after_tick(&mut self, k: Tick, boundary: &mut Arc<BoundaryView>) {
        if self.every_ticks <= 0 || k.0 % self.every_ticks != 0 {
            return;
        }
        let w = self.weights;
        let mut costs: Vec<(RegionId, u64)> =
            self.loads.drain().map(|(r, l)| (r, w.cost(l))).collect();
        costs.sort_unstable();
        let (reply, rx) = tokio::sync::oneshot::channel();
        let request = MoveRequest {
            tick: k,
            costs,
            reply,
        };
        if self.requests.send(request).is_err() {
            return;
        }
        // An error: the source stopped (end of input): nothing moved.
        let Ok(done) = rx.await else { return };
        if !done.summaries.is_empty() {
            Arc::make_mut(boundary).summaries.extend(done.summaries);
        }
    }
}

/// A shard's cost counts per region (see the module doc): events by the
/// tick of their bucket, priced cells by tick.
#[derive(Debug)]
pub(super) struct ShardCosts {
    geo: Geo,
    bucket_ms: i64,
    /// An H3 index shifted right by this keeps the digits down to the
    /// region's resolution: one key per region, without computing the
    /// parent for every event.
    region_shift: u32,
    /// (bucket, region key) → (a cell of the region, events applied); a
    /// bucket's entries leave with the report of the tick that closes it.
    events: FxHashMap<(i64, u64), (CellId, u64)>,
}

/// The current run of events of one region and bucket in a batch.
struct Run {
    key: (i64, u64),
    cell: CellId,
    /// The bucket's time range.
    from: i64,
    to: i64,
    n: u64,
}

impl ShardCosts {
    pub(super) fn new(geo: Geo, bucket_ms: i64, region_resolution: u8) -> Self {
        Self {
            geo,
            bucket_ms,
            // H3: 3 bits per resolution digit, the finest (15) lowest.
            region_shift: 3 * u32::from(15u8.saturating_sub(region_resolution)),
            events: FxHashMap::default(),
        }
    }

    /// Counts a batch: events of one region and bucket come in runs, which
    /// cost a shift and two compares per event and one map update each.
    pub(super) fn count(&mut self, events: &[ValidEvent]) {
        let mut run: Option<Run> = None;
        for e in events {
            let (t, region) = (e.time.0, e.cell.as_u64() >> self.region_shift);
            if let Some(r) = &mut run
                && r.key.1 == region
                && (r.from..r.to).contains(&t)
            {
                r.n += 1;
                continue;
            }
            let bucket = bucket_of(t, self.bucket_ms);
            let from = bucket.saturating_mul(self.bucket_ms);
            let next = Run {
                key: (bucket, region),
                cell: e.cell,
                from,
                to: from.saturating_add(self.bucket_ms),
                n: 1,
            };
            if let Some(done) = run.replace(next) {
                self.add(done);
            }
        }
        if let Some(done) = run {
            self.add(done);
        }
    }

    fn add(&mut self, run: Run) {
        self.events.entry(run.key).or_insert((run.cell, 0)).1 += run.n;
    }

    /// The loads of tick `tick`: the events of buckets up to it and the
    /// cells priced (`rows`), sorted by region.
    pub(super) fn take(&mut self, tick: Tick, rows: &[TickRow]) -> Vec<(RegionId, RegionLoad)> {
        let mut loads: FxHashMap<RegionId, RegionLoad> = FxHashMap::default();
        let geo = self.geo;
        self.events.retain(|&(bucket, _), &mut (cell, n)| {
            if bucket > tick.0 {
                return true;
            }
            loads.entry(geo.region_of(cell)).or_default().events += n;
            false
        });
        for row in rows {
            loads
                .entry(self.geo.region_of(row.cell))
                .or_default()
                .cell_ticks += 1;
        }
        let mut out: Vec<(RegionId, RegionLoad)> = loads.into_iter().collect();
        out.sort_unstable_by_key(|&(r, _)| r);
        out
    }
}

/// The source's side: the table it routes by, and the clock's requests.
pub(super) struct SourcePlacement {
    pub table: Placement,
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
            options,
            requests,
        }
    }

    /// The shard of an accepted event's region.
    pub(super) fn route(&self, region: RegionId) -> usize {
        self.table.shard_of(region)
    }

    /// The moves for `costs` (a [`MoveRequest`]'s).
    pub(super) fn plan(&self, costs: &[(RegionId, u64)]) -> Vec<Move> {
        let n = self.table.shards();
        if !self.options.force_moves {
            return self.table.rebalance(costs, self.options.max_ratio);
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

#[cfg(test)]
mod tests {
    use primetime_core::record::{DemandKind, Signal};
    use primetime_core::{EventKey, EventTime, Features, Multiplier};

    use super::*;

    fn event(geo: Geo, lat: f64, t: i64) -> ValidEvent {
        ValidEvent {
            key: EventKey(t as u64),
            time: EventTime(t),
            cell: geo.cell_of(lat, -122.42).expect("cell"),
            signal: Signal::Demand(DemandKind::RideRequest),
        }
    }

    #[test]
    fn events_count_by_the_tick_of_their_bucket_and_cells_by_tick() {
        let geo = Geo::new(8, 5).expect("geo");
        let mut costs = ShardCosts::new(geo, 10_000, 5);
        let (a, b) = (37.77, 37.0);
        let (ra, rb) = (
            geo.region_of(event(geo, a, 0).cell),
            geo.region_of(event(geo, b, 0).cell),
        );
        // Bucket 0: two events of a, one of b; bucket 1: one of a.
        costs.count(&[event(geo, a, 1), event(geo, a, 2), event(geo, b, 3)]);
        costs.count(&[event(geo, a, 10_001)]);
        let row = TickRow {
            cell: event(geo, a, 0).cell,
            features: Features::default(),
            neighbour_multiplier: 1.0,
            prev: Multiplier::ONE,
        };
        let mut first = costs.take(Tick(0), std::slice::from_ref(&row));
        first.sort_unstable_by_key(|&(r, _)| r);
        let mut want = vec![
            (
                ra,
                RegionLoad {
                    events: 2,
                    cell_ticks: 1,
                },
            ),
            (
                rb,
                RegionLoad {
                    events: 1,
                    cell_ticks: 0,
                },
            ),
        ];
        want.sort_unstable_by_key(|&(r, _)| r);
        assert_eq!(first, want);
        assert_eq!(
            costs.take(Tick(1), &[]),
            vec![(
                ra,
                RegionLoad {
                    events: 1,
                    cell_ticks: 0
                }
            )]
        );
        assert!(costs.take(Tick(2), &[]).is_empty());
        let w = CostWeights {
            per_event_ns: 3,
            per_cell_tick_ns: 100,
        };
        assert_eq!(
            w.cost(RegionLoad {
                events: 2,
                cell_ticks: 1
            }),
            106
        );
    }
}
