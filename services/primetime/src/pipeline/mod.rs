//! The actor pipeline of DESIGN §2: source thread → shard actors → clock.
//!
//! - [`source`]: a dedicated thread that polls an [`Input`] (the embedded
//!   simulator, an event log), decodes, validates, tracks per-partition
//!   watermarks and dedup, and sends event batches to the shard owning each
//!   event's region; it reports the service watermark to the clock.
//! - [`shard`]: `ShardActor`s, one `Arbiter` thread each, holding the
//!   windows of their cells and pricing them on `FireTick`.
//! - [`clock`]: the tick coordinator; fires `Tick(k)` on every shard once
//!   the service watermark passes it, exchanges boundary-cell summaries
//!   between ticks and hands each tick's decisions to a [`Sink`].
//! - [`exchange`]: the same exchange across instances that split the input
//!   partitions ([`BoundaryExchange`], over Kafka in `serve`).
//!
//! Ordering argument (why this equals the reference `Engine`): the source
//! enqueues a batch into a shard's FIFO mailbox *before* it publishes the
//! watermark that lets the clock fire a tick, and the clock enqueues
//! `FireTick` after reading that watermark — so every event a tick must
//! count is applied before the tick; events enqueued later lie in later
//! buckets (the watermark rule of DESIGN §3).

pub mod clock;
pub mod exchange;
pub mod shard;
pub mod snapshot;
pub mod source;

use std::sync::Arc;

use actix::{Actor, Addr, Arbiter};
use primetime_core::{Config, Policy, PriceDecision, PriceModel, Shard, Tick, TickPricer};
use tokio::sync::watch;

pub use crate::sinks::Sink;
pub use clock::ClockSummary;
pub use exchange::BoundaryExchange;
use shard::ShardActor;
pub use snapshot::{PipelineImage, SnapshotOptions, SnapshotSink};
pub use source::{Input, InputRecord, Poll, SourceSummary};

use crate::metrics::Metrics;

/// How the pipeline is sized.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    pub shards: usize,
    pub mailbox: usize,
    pub batch_size: usize,
    /// Shards publish their active cells here after every tick (the map).
    pub active: Option<Arc<crate::table::ActiveView>>,
    /// Other instances own some partitions: exchange boundary cells.
    pub exchange: Option<Arc<dyn BoundaryExchange>>,
    /// Take consistent snapshots.
    pub snapshots: Option<SnapshotOptions>,
    /// Start from this image instead of empty (the input must deliver
    /// each partition from the image's offset).
    pub restore: Option<Arc<PipelineImage>>,
    /// Fire, but do not publish, ticks before this one (rebuilding state
    /// from a rewound input).
    pub publish_from: Option<Tick>,
}

impl PipelineOptions {
    /// A pipeline of this size, and nothing else: no map view, no
    /// exchange, no snapshots, an empty start, every tick published.
    pub fn sized(shards: usize, mailbox: usize, batch_size: usize) -> Self {
        Self {
            shards,
            mailbox,
            batch_size,
            active: None,
            exchange: None,
            snapshots: None,
            restore: None,
            publish_from: None,
        }
    }
}

/// A running pipeline.
pub struct Pipeline {
    pub clock: tokio::task::JoinHandle<anyhow::Result<ClockSummary>>,
    pub source: std::thread::JoinHandle<anyhow::Result<SourceSummary>>,
    arbiters: Vec<Arbiter>,
}

impl Pipeline {
    /// Starts shards (each on its own arbiter), the clock (a task on the
    /// current actix system) and the source thread. Must be called inside
    /// a running actix `System`.
    pub fn start<I, S>(
        core: &Config,
        options: &PipelineOptions,
        model: Arc<dyn PriceModel + Send + Sync>,
        input: I,
        sink: S,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self>
    where
        I: Input + 'static,
        S: Sink + 'static,
    {
        core.validate()?;
        let geo = primetime_core::Geo::new(core.price_resolution, core.region_resolution)?;
        let n = options.shards.max(1);
        let mut arbiters = Vec::with_capacity(n);
        let mut addrs: Vec<Addr<ShardActor>> = Vec::with_capacity(n);
        let mut shards: Vec<Shard> = (0..n)
            .map(|_| Shard::new(geo, core.window_params()))
            .collect();
        let mut start = None;
        if let Some(img) = &options.restore {
            let mut per_shard = vec![Vec::new(); n];
            for c in &img.cells {
                let shard = match primetime_core::CellId::from_u64(c.cell) {
                    Some(id) => primetime_core::shard_of(geo.region_of(id), n),
                    None => anyhow::bail!("snapshot cell {:#x} is not an H3 cell", c.cell),
                };
                per_shard[shard].push(c.clone());
            }
            let mut boundary = shard::BoundaryView::default();
            for (i, (shard, cells)) in shards.iter_mut().zip(&per_shard).enumerate() {
                shard.import(cells)?;
                boundary
                    .summaries
                    .extend(shard.boundary_summaries(|c| {
                        primetime_core::shard_of(geo.region_of(c), n) != i
                    }));
            }
            start = Some(clock::ClockStart {
                tick: Tick(img.tick),
                boundary,
            });
        }
        for (i, shard) in shards.into_iter().enumerate() {
            let arbiter = Arbiter::new();
            let pricer = TickPricer::new(Policy::new(core.policy), model.version());
            let (model, metrics, mailbox) =
                (Arc::clone(&model), Arc::clone(&metrics), options.mailbox);
            let active = options.active.clone();
            let exchange = options.exchange.clone();
            let addr = ShardActor::start_in_arbiter(&arbiter.handle(), move |_| {
                ShardActor::new(i, n, geo, shard, pricer, model, mailbox, metrics, active)
                    .with_exchange(exchange)
            });
            arbiters.push(arbiter);
            addrs.push(addr);
        }
        let (progress_tx, progress_rx) = watch::channel(source::Progress::default());
        let (snapshots, cuts) = match &options.snapshots {
            Some(s) => {
                let (tx, rx) = std::sync::mpsc::channel();
                (Some((s.clone(), tx)), Some(rx))
            }
            None => (None, None),
        };
        let clock = clock::Clock::new(
            addrs.clone(),
            sink,
            Arc::clone(&metrics),
            core.bucket_ms,
            options.exchange.clone(),
            start,
            snapshots,
            options.publish_from,
        );
        let clock = actix_rt::spawn(clock.run(progress_rx));
        let src = source::Source::new(
            core,
            geo,
            addrs,
            options.batch_size,
            metrics,
            progress_tx,
            cuts,
            options.restore.as_deref(),
        );
        let source = std::thread::Builder::new()
            .name("primetime-source".into())
            .spawn(move || src.run(input))?;
        Ok(Self {
            clock,
            source,
            arbiters,
        })
    }

    /// Waits for end of input and the last tick, then stops the shards.
    pub async fn wait(self) -> anyhow::Result<(SourceSummary, ClockSummary)> {
        let clock = self
            .clock
            .await
            .map_err(|e| anyhow::anyhow!("clock task failed: {e}"))??;
        let source = match self.source.join() {
            Ok(r) => r?,
            Err(_) => anyhow::bail!("source thread panicked"),
        };
        for a in &self.arbiters {
            a.stop();
        }
        Ok((source, clock))
    }
}

/// A sink that keeps every decision in memory (tests, small replays).
#[derive(Debug, Default, Clone)]
pub struct CollectSink(pub Arc<std::sync::Mutex<Vec<PriceDecision>>>);

impl Sink for CollectSink {
    fn publish(
        &mut self,
        _tick: Tick,
        _tick_end_ms: i64,
        decisions: &[PriceDecision],
    ) -> anyhow::Result<()> {
        match self.0.lock() {
            Ok(mut v) => v.extend_from_slice(decisions),
            Err(p) => p.into_inner().extend_from_slice(decisions),
        }
        Ok(())
    }
}
