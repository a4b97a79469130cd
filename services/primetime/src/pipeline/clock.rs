//! The tick coordinator: fires `Tick(k)` on every shard, in order, once
//! the service watermark passes the end of bucket `k`.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use actix::Addr;
use futures_util::future::join_all;
use primetime_core::{PriceDecision, Tick, Watermark, time::bucket_of};
use tokio::sync::watch;

use super::shard::{BoundaryView, FireTick, ShardActor};
use super::source::Progress;
use crate::metrics::Metrics;

/// Where each tick's decisions go (price table, Kafka, a file).
pub trait Sink: Send {
    /// Called once per fired tick, in tick order, with that tick's changed
    /// prices sorted by cell (possibly none).
    fn publish(
        &mut self,
        tick: Tick,
        tick_end_ms: i64,
        decisions: &[PriceDecision],
    ) -> anyhow::Result<()>;

    /// Called once after the last tick (flush buffers).
    fn finish(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Both sinks, in order (e.g. the price table, then Kafka).
impl<A: Sink, B: Sink> Sink for (A, B) {
    fn publish(
        &mut self,
        tick: Tick,
        tick_end_ms: i64,
        decisions: &[PriceDecision],
    ) -> anyhow::Result<()> {
        self.0.publish(tick, tick_end_ms, decisions)?;
        self.1.publish(tick, tick_end_ms, decisions)
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        self.0.finish()?;
        self.1.finish()
    }
}

/// Totals of a finished clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClockSummary {
    pub ticks: u64,
    pub decisions: u64,
    pub model_failures: u64,
}

pub(super) struct Clock<S> {
    shards: Vec<Addr<ShardActor>>,
    sink: S,
    metrics: Arc<Metrics>,
    bucket_ms: i64,
    next_tick: Option<i64>,
    active_cells: usize,
    boundary: Arc<BoundaryView>,
    summary: ClockSummary,
}

impl<S: Sink> Clock<S> {
    pub(super) fn new(
        shards: Vec<Addr<ShardActor>>,
        sink: S,
        metrics: Arc<Metrics>,
        bucket_ms: i64,
    ) -> Self {
        Self {
            shards,
            sink,
            metrics,
            bucket_ms,
            next_tick: None,
            active_cells: 0,
            boundary: Arc::new(BoundaryView::default()),
            summary: ClockSummary::default(),
        }
    }

    /// Fires ticks as the watermark advances; returns after end of input
    /// once no cell is active any more.
    pub(super) async fn run(
        mut self,
        mut progress_rx: watch::Receiver<Progress>,
    ) -> anyhow::Result<ClockSummary> {
        loop {
            let progress = *progress_rx.borrow_and_update();
            self.fire_ready(progress).await?;
            if progress.finished {
                self.sink.finish()?;
                tracing::info!(
                    ticks = self.summary.ticks,
                    decisions = self.summary.decisions,
                    "clock finished"
                );
                return Ok(self.summary);
            }
            if progress_rx.changed().await.is_err() {
                // The source stopped without reporting the end (it failed);
                // its error is reported by its own handle.
                return Ok(self.summary);
            }
        }
    }

    async fn fire_ready(&mut self, progress: Progress) -> anyhow::Result<()> {
        let wm = progress.watermark;
        if wm == Watermark::MIN {
            return Ok(());
        }
        loop {
            let Some(k) = self.next_tick.or(progress.min_bucket) else {
                return Ok(());
            };
            if Tick(k).end_ms(self.bucket_ms) > wm.0 {
                return Ok(());
            }
            self.fire(Tick(k)).await?;
            self.next_tick = Some(k + 1);
            if self.active_cells == 0 {
                if wm == Watermark::MAX {
                    return Ok(());
                }
                // Nothing is active: empty ticks would change nothing. Every
                // event not yet applied lies at or after the watermark.
                self.next_tick = Some((k + 1).max(bucket_of(wm.0, self.bucket_ms)));
            }
        }
    }

    async fn fire(&mut self, tick: Tick) -> anyhow::Result<()> {
        let started = Instant::now();
        let requests = self.shards.iter().map(|s| {
            s.send(FireTick {
                tick,
                boundary: Arc::clone(&self.boundary),
            })
        });
        let reports = join_all(requests).await;
        let mut decisions = Vec::new();
        let mut boundary = BoundaryView::default();
        let mut active = 0;
        let mut failed = false;
        for report in reports {
            let report =
                report.map_err(|e| anyhow::anyhow!("shard unavailable at tick {}: {e}", tick.0))?;
            decisions.extend(report.decisions);
            boundary.summaries.extend(report.boundary);
            active += report.active_cells;
            failed |= report.model_failed;
        }
        decisions.sort_unstable_by_key(|d| d.cell);
        self.sink
            .publish(tick, tick.end_ms(self.bucket_ms), &decisions)?;
        self.boundary = Arc::new(boundary);
        self.active_cells = active;
        self.summary.ticks += 1;
        self.summary.decisions += decisions.len() as u64;
        if failed {
            self.summary.model_failures += 1;
            self.metrics.model_failures.fetch_add(1, Relaxed);
        }
        let m = &self.metrics;
        m.ticks_fired.fetch_add(1, Relaxed);
        m.last_tick.store(tick.0, Relaxed);
        m.active_cells.store(active as u64, Relaxed);
        m.decisions_published
            .fetch_add(decisions.len() as u64, Relaxed);
        m.observe_tick(started.elapsed().as_secs_f64());
        tracing::debug!(
            tick = tick.0,
            decisions = decisions.len(),
            active_cells = active,
            "tick fired"
        );
        Ok(())
    }
}
