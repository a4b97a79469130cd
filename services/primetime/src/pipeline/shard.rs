//! `ShardActor`: owns the cells of the regions hashed to it, applies event
//! batches and prices its cells when told to fire a tick.
//!
//! Each shard runs on its own `Arbiter` thread: a tick over many cells is
//! CPU work that must not run on the HTTP reactor.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use actix::{Actor, AsyncContext as _, Context, Handler, Message, MessageResult};
use primetime_core::placement::RegionLoad;
use primetime_core::record::ValidEvent;
use primetime_core::snapshot::CellImage;
use primetime_core::{
    CellId, Geo, Move, Placement, Policy, PolicyParams, PriceDecision, PriceModel, RegionId, Shard,
    Summary, Tick, TickPricer, TickRow,
};
use rustc_hash::FxHashMap;

use super::placement::ShardCosts;
use super::{ActiveCell, ActiveCells, BoundaryExchange};
use crate::metrics::Metrics;

/// Validated, admitted events for one shard (effective times).
#[derive(Message)]
#[rtype(result = "()")]
pub struct EventBatch {
    pub events: Vec<ValidEvent>,
}

/// A snapshot barrier: export the cells (every batch the source sent
/// before it has been applied) and send them on `reply`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Barrier {
    pub reply: tokio::sync::oneshot::Sender<Vec<primetime_core::snapshot::CellImage>>,
}

/// The next slice of a running snapshot export (sent to itself, so event
/// batches and ticks run between slices).
#[derive(Message)]
#[rtype(result = "()")]
struct ExportStep;

/// Cells exported per [`ExportStep`]: the longest a snapshot holds the
/// shard up (unless a tick or move comes first, which finishes the
/// export). ~300 ns a cell at 10 M cells: ~6 ms; slices of 50 k took up to
/// 105 ms on a machine shared with builds, so 20 k keeps them < 100 ms.
const EXPORT_STEP_CELLS: usize = 20_000;

/// A region moving away (between two ticks, see [`super::placement`]):
/// remove its cells and send them on `reply`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Extract {
    pub moves: Vec<Move>,
    pub reply: tokio::sync::oneshot::Sender<Extracted>,
}

/// The cells of moving regions, and the summaries of the cells staying
/// here that are next to them (boundary cells from now on).
#[derive(Debug, Default)]
pub struct Extracted {
    pub cells: Vec<CellImage>,
    pub neighbours: Vec<(CellId, Summary)>,
}

/// A region moving here: its cells, as [`Extract`] returned them.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Import {
    pub moves: Vec<Move>,
    pub cells: Vec<CellImage>,
}

/// The tick `k-1` summaries of every boundary cell of every shard.
#[derive(Debug, Default, Clone)]
pub struct BoundaryView {
    pub summaries: FxHashMap<CellId, Summary>,
}

/// Fire tick `tick`: close windows, price, commit.
#[derive(Message)]
#[rtype(result = "TickReport")]
pub struct FireTick {
    pub tick: Tick,
    pub boundary: Arc<BoundaryView>,
    /// The operator controls to price this tick with (`None`: none).
    pub controls: Option<Arc<primetime_core::ControlSet>>,
}

/// What one shard produced for a tick.
#[derive(Debug)]
pub struct TickReport {
    /// Changed prices, sorted by cell.
    pub decisions: Vec<PriceDecision>,
    /// Boundary cells' summaries after this tick.
    pub boundary: Vec<(CellId, Summary)>,
    pub active_cells: usize,
    pub model_failed: bool,
    /// With load-aware placement: this tick's load per region (sorted).
    pub costs: Vec<(RegionId, RegionLoad)>,
}

/// What every shard of a pipeline shares (cloned into each).
#[derive(Clone)]
pub struct ShardSetup {
    /// Number of shards: a region belongs to `shard_of(region, shards)`
    /// unless the placement moved it.
    pub shards: usize,
    pub geo: Geo,
    /// Guardrails each shard's pricer applies.
    pub policy: PolicyParams,
    pub model: Arc<dyn PriceModel + Send + Sync>,
    /// Mailbox capacity: a full mailbox pauses the source.
    pub mailbox: usize,
    pub metrics: Arc<Metrics>,
    /// Where to publish the active cells after each tick (for the map).
    pub active: Option<Arc<dyn ActiveCells>>,
    /// Set when other instances own some regions.
    pub exchange: Option<Arc<dyn BoundaryExchange>>,
    /// Load-aware placement: count each region's load, by bucket of this
    /// width and region of this resolution (`None`: no placement, nothing
    /// counted).
    pub count_costs: Option<(i64, u8)>,
}

pub struct ShardActor {
    index: usize,
    shard: Shard,
    pricer: TickPricer,
    setup: ShardSetup,
    rows: Vec<TickRow>,
    /// Which regions are this shard's: the hash, updated by the moves
    /// that reach this shard (moves between two other shards do not
    /// change what this one owns).
    placement: Placement,
    costs: Option<ShardCosts>,
    /// Where the running snapshot export's image goes.
    export_reply: Option<tokio::sync::oneshot::Sender<Vec<CellImage>>>,
}

impl ShardActor {
    pub fn new(index: usize, shard: Shard, setup: ShardSetup) -> Self {
        Self {
            index,
            shard,
            pricer: TickPricer::new(Policy::new(setup.policy), setup.model.version()),
            placement: Placement::new(setup.shards),
            costs: setup
                .count_costs
                .map(|(bucket_ms, res)| ShardCosts::new(setup.geo, bucket_ms, res)),
            setup,
            rows: Vec::new(),
            export_reply: None,
        }
    }

    /// The summaries of this shard's cells that another shard or instance
    /// reads as neighbours at the next tick.
    fn boundary(&self) -> Vec<(CellId, Summary)> {
        let (geo, me, n) = (self.setup.geo, self.index, self.setup.shards);
        let placement = &self.placement;
        match &self.setup.exchange {
            Some(x) => {
                // Cells next to another shard's or another instance's
                // regions; ownership per region is looked up once a tick.
                let owner = std::cell::RefCell::new(FxHashMap::default());
                self.shard.boundary_summaries(|c| {
                    let r = geo.region_of(c);
                    *owner
                        .borrow_mut()
                        .entry(r)
                        .or_insert_with(|| placement.shard_of(r) != me || x.is_foreign(r))
                })
            }
            None if n == 1 => Vec::new(),
            None => self
                .shard
                .boundary_summaries(|c| placement.shard_of(geo.region_of(c)) != me),
        }
    }

    /// Publishes this shard's active cells with their centres (the map).
    fn publish_active(&self) {
        let Some(view) = &self.setup.active else {
            return;
        };
        let cells = self
            .shard
            .cell_ids()
            .map(|cell| {
                let (lat, lng) = cell.center();
                ActiveCell {
                    cell,
                    lat: lat as f32,
                    lng: lng as f32,
                }
            })
            .collect();
        view.replace(self.index, cells);
    }
}

impl Actor for ShardActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Bounded: the source sees `Full` and pauses instead of queueing
        // without limit.
        ctx.set_mailbox_capacity(self.setup.mailbox);
    }
}

impl Handler<EventBatch> for ShardActor {
    type Result = ();

    fn handle(&mut self, batch: EventBatch, _: &mut Context<Self>) {
        for event in &batch.events {
            self.shard.apply(event);
        }
        if let Some(costs) = &mut self.costs {
            costs.count(&batch.events);
        }
        self.setup.metrics.mailbox_depth[self.index].fetch_sub(1, Relaxed);
    }
}

impl Handler<Barrier> for ShardActor {
    type Result = ();

    fn handle(&mut self, barrier: Barrier, ctx: &mut Context<Self>) {
        self.setup.metrics.mailbox_depth[self.index].fetch_sub(1, Relaxed);
        // A previous export still running is finished and sent first.
        self.step_export(usize::MAX);
        // The cut is now; the cells are copied in slices between the
        // messages that follow (`Shard::begin_export`).
        self.shard.begin_export();
        self.export_reply = Some(barrier.reply);
        ctx.notify(ExportStep);
    }
}

impl Handler<ExportStep> for ShardActor {
    type Result = ();

    fn handle(&mut self, _: ExportStep, ctx: &mut Context<Self>) {
        if self.step_export(EXPORT_STEP_CELLS) {
            ctx.notify(ExportStep);
        }
    }
}

impl ShardActor {
    /// Exports up to `cells` more cells; sends the image when complete.
    /// Whether the export still runs.
    fn step_export(&mut self, cells: usize) -> bool {
        match self.shard.export_step(cells) {
            Some(images) => {
                // The clock may have given up on the snapshot: nothing to do.
                if let Some(reply) = self.export_reply.take() {
                    let _ = reply.send(images);
                }
                false
            }
            None => self.shard.exporting(),
        }
    }
}

impl Handler<Extract> for ShardActor {
    type Result = ();

    fn handle(&mut self, msg: Extract, _: &mut Context<Self>) {
        self.setup.metrics.mailbox_depth[self.index].fetch_sub(1, Relaxed);
        let geo = self.setup.geo;
        let moving: rustc_hash::FxHashSet<_> = msg.moves.iter().map(|m| m.region).collect();
        let cells = self.shard.extract(|c| moving.contains(&geo.region_of(c)));
        for &m in &msg.moves {
            self.placement.apply(m);
        }
        let neighbours = self
            .shard
            .boundary_summaries(|c| moving.contains(&geo.region_of(c)));
        // The source waits for the answer; it is gone only when stopping.
        let _ = msg.reply.send(Extracted { cells, neighbours });
    }
}

impl Handler<Import> for ShardActor {
    type Result = ();

    fn handle(&mut self, msg: Import, _: &mut Context<Self>) {
        self.setup.metrics.mailbox_depth[self.index].fetch_sub(1, Relaxed);
        for &m in &msg.moves {
            self.placement.apply(m);
        }
        // The cells come from another shard's `extract`: distinct cells of
        // regions this shard did not own, so this cannot fail unless the
        // move protocol is broken.
        if let Err(e) = self.shard.import(&msg.cells) {
            tracing::error!(shard = self.index, error = %e, "moved region's cells refused");
        }
    }
}

impl Handler<FireTick> for ShardActor {
    type Result = MessageResult<FireTick>;

    fn handle(&mut self, msg: FireTick, _: &mut Context<Self>) -> Self::Result {
        let tick = msg.tick;
        if let Some(controls) = msg.controls {
            self.pricer.set_controls(controls);
        }
        self.shard.close_tick(tick);
        // The tick finished a running export: its image goes now.
        self.step_export(0);
        self.rows.clear();
        let boundary = &msg.boundary;
        self.shard
            .feature_rows(|c| boundary.summaries.get(&c).copied(), &mut self.rows);
        let mut decisions = Vec::new();
        let priced = self
            .pricer
            .price(self.setup.model.as_ref(), tick, &self.rows, &mut decisions);
        self.shard.commit(tick, priced.changed);
        let costs = match &mut self.costs {
            Some(c) => c.take(tick, &self.rows),
            None => Vec::new(),
        };
        decisions.sort_unstable_by_key(|d| d.cell);
        let boundary = self.boundary();
        self.publish_active();
        MessageResult(TickReport {
            decisions,
            boundary,
            active_cells: self.shard.len(),
            model_failed: priced.model_failed,
            costs,
        })
    }
}
