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
    CellId, Geo, PriceDecision, PriceModel, Shard, Summary, Tick, TickPricer, TickRow, shard_of,
};
use rustc_hash::FxHashMap;

use crate::metrics::Metrics;
use crate::table::{ActiveCell, ActiveView};

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

pub struct ShardActor {
    index: usize,
    shards: usize,
    geo: Geo,
    shard: Shard,
    pricer: TickPricer,
    model: Arc<dyn PriceModel + Send + Sync>,
    mailbox: usize,
    metrics: Arc<Metrics>,
    /// Where to publish the active cells after each tick (for the map).
    active: Option<Arc<ActiveView>>,
    rows: Vec<TickRow>,
    /// Set when other instances own some regions.
    exchange: Option<Arc<dyn super::BoundaryExchange>>,
}

impl ShardActor {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        index: usize,
        shards: usize,
        geo: Geo,
        shard: Shard,
        pricer: TickPricer,
        model: Arc<dyn PriceModel + Send + Sync>,
        mailbox: usize,
        metrics: Arc<Metrics>,
        active: Option<Arc<ActiveView>>,
    ) -> Self {
        Self {
            index,
            shards,
            geo,
            shard,
            pricer,
            model,
            mailbox,
            metrics,
            active,
            rows: Vec::new(),
            exchange: None,
        }
    }

    pub fn with_exchange(mut self, exchange: Option<Arc<dyn super::BoundaryExchange>>) -> Self {
        self.exchange = exchange;
        self
    }
}

impl Actor for ShardActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Bounded: the source sees `Full` and pauses instead of queueing
        // without limit.
        ctx.set_mailbox_capacity(self.mailbox);
    }
}

impl Handler<EventBatch> for ShardActor {
    type Result = ();

    fn handle(&mut self, batch: EventBatch, _: &mut Context<Self>) {
        for event in &batch.events {
            self.shard.apply(event);
        }
        self.metrics.mailbox_depth[self.index].fetch_sub(1, Relaxed);
    }
}

impl Handler<Barrier> for ShardActor {
    type Result = ();

    fn handle(&mut self, barrier: Barrier, _: &mut Context<Self>) {
        self.metrics.mailbox_depth[self.index].fetch_sub(1, Relaxed);
        // The clock may have given up on the snapshot: nothing to do.
        let _ = barrier.reply.send(self.shard.export());
    }
}

impl Handler<FireTick> for ShardActor {
    type Result = MessageResult<FireTick>;

    fn handle(&mut self, msg: FireTick, _: &mut Context<Self>) -> Self::Result {
        let tick = msg.tick;
        self.shard.close_tick(tick);
        self.rows.clear();
        let boundary = &msg.boundary;
        self.shard
            .feature_rows(|c| boundary.summaries.get(&c).copied(), &mut self.rows);
        let mut decisions = Vec::new();
        let priced = self
            .pricer
            .price(self.model.as_ref(), tick, &self.rows, &mut decisions);
        self.shard.commit(tick, priced.changed);
        decisions.sort_unstable_by_key(|d| d.cell);
        let boundary = match &self.exchange {
            Some(x) => {
                // Cells next to another shard's or another instance's
                // regions; ownership per region is looked up once a tick.
                let (geo, me, n) = (self.geo, self.index, self.shards);
                let owner = std::cell::RefCell::new(FxHashMap::default());
                self.shard.boundary_summaries(|c| {
                    let r = geo.region_of(c);
                    *owner
                        .borrow_mut()
                        .entry(r)
                        .or_insert_with(|| shard_of(r, n) != me || x.is_foreign(r))
                })
            }
            None if self.shards == 1 => Vec::new(),
            None => {
                let (geo, me, n) = (self.geo, self.index, self.shards);
                self.shard
                    .boundary_summaries(|c| shard_of(geo.region_of(c), n) != me)
            }
        };
        if let Some(view) = &self.active {
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
        MessageResult(TickReport {
            decisions,
            boundary,
            active_cells: self.shard.len(),
            model_failed: priced.model_failed,
        })
    }
}
