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
//! - [`placement`]: load-aware region → shard routing; regions move
//!   between shards only between two ticks, with their cells.
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
pub mod lockstep;
pub mod placement;
pub mod shard;
pub mod snapshot;
pub mod source;

use std::sync::Arc;

use actix::{Actor, Addr, Arbiter};
use primetime_core::{Config, PriceModel, Shard, Tick};
use tokio::sync::watch;

pub use crate::sinks::{CollectSink, Sink};
pub use clock::ClockSummary;
pub use exchange::BoundaryExchange;
pub use lockstep::{Lockstep, Round};
pub use placement::PlacementOptions;
use shard::ShardActor;
pub use snapshot::{PipelineImage, SnapshotOptions, SnapshotSink};
pub use source::{CommitOffset, Input, InputRecord, Poll, SourceSummary};

use crate::metrics::Metrics;

/// An active cell (window state or a multiplier above 1.0) with its centre.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActiveCell {
    pub cell: primetime_core::CellId,
    pub lat: f32,
    pub lng: f32,
}

/// Where each shard publishes its active cells after every tick (the
/// map's view; HTTP's table implements it). Called on the shard's thread:
/// it must be cheap and never block.
pub trait ActiveCells: Send + Sync + std::fmt::Debug {
    /// Replaces shard `shard`'s cells with `cells`.
    fn replace(&self, shard: usize, cells: Vec<ActiveCell>);
}

/// How the pipeline is sized.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    pub shards: usize,
    pub mailbox: usize,
    pub batch_size: usize,
    /// Threads that decode and validate records in parallel (the
    /// order-dependent steps stay on the source thread). Results do not
    /// depend on it.
    pub ingest_workers: usize,
    /// Shards publish their active cells here after every tick (the map).
    pub active: Option<Arc<dyn ActiveCells>>,
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
    /// A closed-loop input waits on this for each round's decisions.
    pub lockstep: Option<Arc<Lockstep>>,
    /// Operator controls: each tick prices under the log's set for it.
    pub controls: Option<Arc<dyn crate::controls::Controls>>,
    /// Load-aware placement of regions on shards (`None`: the hash).
    pub placement: Option<PlacementOptions>,
}

impl PipelineOptions {
    /// A pipeline of this size, and nothing else: no map view, no
    /// exchange, no snapshots, an empty start, every tick published.
    pub fn sized(shards: usize, mailbox: usize, batch_size: usize) -> Self {
        Self {
            shards,
            mailbox,
            batch_size,
            ingest_workers: 1,
            active: None,
            exchange: None,
            snapshots: None,
            restore: None,
            publish_from: None,
            lockstep: None,
            controls: None,
            placement: None,
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
        if options.lockstep.is_some() && options.exchange.is_some() {
            // A clock waiting for other instances' stats settles less than
            // the source published: a closed loop runs in one instance.
            anyhow::bail!("a closed-loop (lockstep) pipeline cannot exchange with other instances");
        }
        if options.placement.is_some() && options.exchange.is_some() {
            // Other instances compute boundary cells from the hash
            // ownership of this instance's shards: not moved yet.
            anyhow::bail!("load-aware placement runs in one instance only (no exchange)");
        }
        if options.placement.is_some() && options.lockstep.is_some() {
            // A closed-loop input waits in `poll` for the settled tick
            // while the clock would wait for the source's moves.
            anyhow::bail!("load-aware placement cannot run a closed-loop (lockstep) pipeline");
        }
        let geo = primetime_core::Geo::new(core.price_resolution, core.region_resolution)?;
        let n = options.shards.max(1);
        let mut shards: Vec<Shard> = (0..n)
            .map(|_| Shard::new(geo, core.window_params()))
            .collect();
        let exchange = options.exchange.as_deref();
        let start = options
            .restore
            .as_ref()
            .map(|img| restore_shards(img, geo, &mut shards, exchange))
            .transpose()?;
        let setup = shard::ShardSetup {
            shards: n,
            geo,
            policy: core.policy,
            model: Arc::clone(&model),
            mailbox: options.mailbox,
            metrics: Arc::clone(&metrics),
            active: options.active.clone(),
            exchange: options.exchange.clone(),
            count_costs: options
                .placement
                .map(|_| (core.bucket_ms, core.region_resolution)),
        };
        let (arbiters, addrs) = start_shards(shards, &setup);
        let (progress_tx, progress_rx) = watch::channel(source::Progress::default());
        let (snapshots, cuts) = snapshot_channel(options.snapshots.as_ref());
        let (clock_placement, source_placement) = placement_channel(options.placement, n);
        let clock_options = clock::ClockOptions {
            bucket_ms: core.bucket_ms,
            exchange: options.exchange.clone(),
            start,
            snapshots,
            publish_from: options.publish_from,
            lockstep: options.lockstep.clone(),
            controls: options.controls.clone(),
            placement: clock_placement,
        };
        let clock = clock::Clock::new(addrs.clone(), sink, Arc::clone(&metrics), clock_options);
        let clock = actix_rt::spawn(clock.run(progress_rx));
        let source_options = source::SourceOptions {
            geo,
            batch_size: options.batch_size,
            ingest_workers: options.ingest_workers,
            metrics,
            progress_tx,
            cuts,
            restore: options.restore.as_deref(),
            lockstep: options.lockstep.clone(),
            placement: source_placement,
        };
        let src = source::Source::new(core, addrs, source_options);
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

/// The clock's and the source's ends of the snapshot cut requests (none
/// without snapshots). Unbounded, but the clock sends at most one request
/// at a time and waits for its answer.
fn snapshot_channel(
    options: Option<&SnapshotOptions>,
) -> (
    Option<clock::ClockSnapshots>,
    Option<std::sync::mpsc::Receiver<snapshot::CutRequest>>,
) {
    let Some(options) = options else {
        return (None, None);
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let snapshots = clock::ClockSnapshots {
        options: options.clone(),
        cuts: tx,
    };
    (Some(snapshots), Some(rx))
}

/// The clock's and the source's ends of placement (none without it): the
/// clock asks for moves after a tick and waits for the answer.
fn placement_channel(
    options: Option<PlacementOptions>,
    shards: usize,
) -> (
    Option<placement::ClockPlacement>,
    Option<placement::SourcePlacement>,
) {
    let Some(options) = options else {
        return (None, None);
    };
    // Unbounded, but the clock sends one request at a time and waits.
    let (tx, rx) = std::sync::mpsc::channel();
    let clock = placement::ClockPlacement {
        every_ticks: options.every_ticks,
        weights: options.weights,
        requests: tx,
        loads: rustc_hash::FxHashMap::default(),
    };
    (
        Some(clock),
        Some(placement::SourcePlacement::new(shards, options, rx)),
    )
}

/// Imports an image's cells into the shards that own them (the shard count
/// may differ from the image's) and rebuilds the boundary summaries of its
/// tick: where the clock starts. With other instances, the cells next to
/// their regions count as boundary cells too (as after a fired tick), so
/// the clock can publish them for the restored tick under the new
/// ownership.
fn restore_shards(
    img: &PipelineImage,
    geo: primetime_core::Geo,
    shards: &mut [Shard],
    exchange: Option<&dyn BoundaryExchange>,
) -> anyhow::Result<clock::ClockStart> {
    let n = shards.len();
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
        boundary.summaries.extend(shard.boundary_summaries(|c| {
            let r = geo.region_of(c);
            primetime_core::shard_of(r, n) != i || exchange.is_some_and(|x| x.is_foreign(r))
        }));
    }
    Ok(clock::ClockStart {
        tick: img.tick,
        boundary,
    })
}

/// Starts each shard's actor on an arbiter (thread) of its own: a tick over
/// many cells is CPU work that must not share a thread with the reactor.
fn start_shards(
    shards: Vec<Shard>,
    setup: &shard::ShardSetup,
) -> (Vec<Arbiter>, Vec<Addr<ShardActor>>) {
    shards
        .into_iter()
        .enumerate()
        .map(|(i, shard)| {
            let arbiter = Arbiter::new();
            let setup = setup.clone();
            let addr = ShardActor::start_in_arbiter(&arbiter.handle(), move |_| {
                ShardActor::new(i, shard, setup)
            });
            (arbiter, addr)
        })
        .unzip()
}
