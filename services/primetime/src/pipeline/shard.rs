//! `ShardActor`: owns the cells of the regions hashed to it, applies event
//! batches and prices its cells when told to fire a tick.
//!
//! Each shard runs on its own `Arbiter` thread: a tick over many cells is
//! CPU work that must not run on the HTTP reactor.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use actix::{Actor, Context, Handler, Message, MessageResult};
use primetime_core::record::ValidEvent;
use primetime_core::{
    CellId, Geo, Policy, PolicyParams, PriceDecision, PriceModel, Shard, Summary, Tick, TickPricer,
    TickRow, shard_of,
};
use rustc_hash::FxHashMap;

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
}

/// What every shard of a pipeline shares (cloned into each).
#[derive(Clone)]
pub struct ShardSetup {
    /// Number of shards: a region belongs to `shard_of(region, shards)`.
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
}

pub struct ShardActor {
    index: usize,
    shard: Shard,
    pricer: TickPricer,
    setup: ShardSetup,
    rows: Vec<TickRow>,
}

impl ShardActor {
    pub fn new(index: usize, shard: Shard, setup: ShardSetup) -> Self {
        Self {
            index,
            shard,
            pricer: TickPricer::new(Policy::new(setup.policy), setup.model.version()),
            setup,
            rows: Vec::new(),
        }
    }

    /// The summaries of this shard's cells that another shard or instance
    /// reads as neighbours at the next tick.
    fn boundary(&self) -> Vec<(CellId, Summary)> {
        let (geo, me, n) = (self.setup.geo, self.index, self.setup.shards);
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
                        .or_insert_with(|| shard_of(r, n) != me || x.is_foreign(r))
                })
            }
            None if n == 1 => Vec::new(),
            None => self
                .shard
                .boundary_summaries(|c| shard_of(geo.region_of(c), n) != me),
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
        self.setup.metrics.mailbox_depth[self.index].fetch_sub(1, Relaxed);
    }
}

impl Handler<Barrier> for ShardActor {
    type Result = ();

    fn handle(&mut self, barrier: Barrier, _: &mut Context<Self>) {
        self.setup.metrics.mailbox_depth[self.index].fetch_sub(1, Relaxed);
        // The clock may have given up on the snapshot: nothing to do.
        let _ = barrier.reply.send(self.shard.export());
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
        self.rows.clear();
        let boundary = &msg.boundary;
        self.shard
            .feature_rows(|c| boundary.summaries.get(&c).copied(), &mut self.rows);
        let mut decisions = Vec::new();
        let priced = self
            .pricer
            .price(self.setup.model.as_ref(), tick, &self.rows, &mut decisions);
        self.shard.commit(tick, priced.changed);
        decisions.sort_unstable_by_key(|d| d.cell);
        let boundary = self.boundary();
        self.publish_active();
        MessageResult(TickReport {
            decisions,
            boundary,
            active_cells: self.shard.len(),
            model_failed: priced.model_failed,
        })
    }
}
