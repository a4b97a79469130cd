//! The tick coordinator: fires `Tick(k)` on every shard, in order, once
//! the service watermark passes the end of bucket `k`.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use actix::Addr;
use futures_util::future::join_all;
use primetime_core::{CellId, Summary, Tick, Watermark, time::bucket_of};
use tokio::sync::watch;

use super::exchange::BoundaryExchange;
use super::lockstep::Lockstep;
use super::shard::{BoundaryView, FireTick, ShardActor};
use super::snapshot::{CutRequest, PipelineImage, SnapshotOptions};
use super::source::Progress;
use crate::metrics::Metrics;
use crate::sinks::Sink;

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
    /// The next tick to fire (`None` before the first event).
    next_tick: Option<Tick>,
    active_cells: usize,
    boundary: Arc<BoundaryView>,
    summary: ClockSummary,
    exchange: Option<Arc<dyn BoundaryExchange>>,
    /// Through which tick this instance's stats are published.
    covered: Option<Tick>,
    snapshots: Option<ClockSnapshots>,
    /// Ticks before this fire (rebuilding state) but are not published.
    publish_from: Option<Tick>,
    lockstep: Option<Arc<Lockstep>>,
    controls: Option<Arc<dyn crate::controls::Controls>>,
    /// The source's progress, watched while the sink's hand-off is full:
    /// a source that stops (the service stopping) ends the wait.
    source_rx: Option<watch::Receiver<Progress>>,
    /// A tick was left unpublished because the source stopped: the clock
    /// ends (it must never fire that tick again: the shards applied it).
    halted: bool,
    placement: Option<super::placement::ClockPlacement>,
}

/// The clock's side of consistent snapshots: when to cut, and the channel
/// on which it asks the source for its half of a cut.
pub(super) struct ClockSnapshots {
    pub options: SnapshotOptions,
    pub cuts: std::sync::mpsc::Sender<CutRequest>,
}

/// How a clock runs, beyond its shards, sink and metrics.
pub(super) struct ClockOptions {
    pub bucket_ms: i64,
    /// Other instances own some partitions: wait for their tick `k-1`
    /// stats before firing `k`, and publish this instance's.
    pub exchange: Option<Arc<dyn BoundaryExchange>>,
    /// Restored state: start after this tick.
    pub start: Option<ClockStart>,
    pub snapshots: Option<ClockSnapshots>,
    /// Fire, but do not publish, ticks before this one.
    pub publish_from: Option<Tick>,
    /// A closed-loop input's lockstep: told each tick's decisions and
    /// each settled watermark.
    pub lockstep: Option<Arc<Lockstep>>,
    /// Operator controls: the set for each tick is taken just before it
    /// fires (which also stamps later records after it); a tick waits
    /// until the log can answer for it.
    pub controls: Option<Arc<dyn crate::controls::Controls>>,
    /// Load-aware placement: ask the source for moves between ticks.
    pub placement: Option<super::placement::ClockPlacement>,
}

/// Where a restored clock starts: after `tick`, with the boundary
/// summaries of that tick.
pub(super) struct ClockStart {
    pub tick: Tick,
    pub boundary: BoundaryView,
}

impl<S: Sink> Clock<S> {
    pub(super) fn new(
        shards: Vec<Addr<ShardActor>>,
        sink: S,
        metrics: Arc<Metrics>,
        options: ClockOptions,
    ) -> Self {
        let (next_tick, covered, boundary) = match options.start {
            Some(s) => (Some(s.tick.next()), Some(s.tick), s.boundary),
            None => (None, None, BoundaryView::default()),
        };
        Self {
            shards,
            sink,
            metrics,
            bucket_ms: options.bucket_ms,
            next_tick,
            active_cells: 0,
            boundary: Arc::new(boundary),
            summary: ClockSummary::default(),
            exchange: options.exchange,
            covered,
            snapshots: options.snapshots,
            publish_from: options.publish_from,
            lockstep: options.lockstep,
            controls: options.controls,
            source_rx: None,
            halted: false,
            placement: options.placement,
        }
    }

    /// Fires ticks as the watermark advances; returns after end of input
    /// once no cell is active any more.
    pub(super) async fn run(
        mut self,
        progress_rx: watch::Receiver<Progress>,
    ) -> anyhow::Result<ClockSummary> {
        let lockstep = self.lockstep.clone();
        let result = self.run_until_done(progress_rx).await;
        if let Some(l) = lockstep {
            // Whatever ended the clock, a waiting input must not hang.
            l.close();
        }
        result
    }

    async fn run_until_done(
        &mut self,
        mut progress_rx: watch::Receiver<Progress>,
    ) -> anyhow::Result<ClockSummary> {
        let mut stats_rx = self.exchange.as_ref().map(|x| x.subscribe());
        let mut controls_rx = self.controls.as_ref().and_then(|c| c.subscribe());
        self.source_rx = Some(progress_rx.clone());
        self.publish_restored();
        loop {
            let progress = *progress_rx.borrow_and_update();
            if let Some(rx) = &mut stats_rx {
                rx.borrow_and_update();
            }
            if let Some(rx) = &mut controls_rx {
                rx.borrow_and_update();
            }
            self.fire_ready(progress).await?;
            if self.halted {
                return Ok(self.summary);
            }
            if let Some(l) = &self.lockstep {
                l.settled(progress.watermark);
            }
            if progress.finished {
                self.sink.finish()?;
                tracing::info!(
                    ticks = self.summary.ticks,
                    decisions = self.summary.decisions,
                    "clock finished"
                );
                return Ok(self.summary);
            }
            let stopped = tokio::select! {
                r = progress_rx.changed() => r.is_err(),
                // Other instances' stats: a waiting tick may be ready.
                _ = changed(&mut stats_rx) => false,
                // The control log read further: a waiting tick may be ready.
                _ = changed(&mut controls_rx) => false,
            };
            if stopped {
                // The source stopped without reporting the end (it failed,
                // or the service is stopping); errors are reported by the
                // source's own handle.
                return Ok(self.summary);
            }
        }
    }

    /// A clock restored at tick `R` with other instances: publishes the
    /// restored boundary cells for `R` under the current ownership, so an
    /// instance that took over a partition answers for it at `R` (the
    /// previous owner published `R` only relative to what it owned).
    fn publish_restored(&mut self) {
        let (Some(x), Some(r)) = (&self.exchange, self.covered) else {
            return;
        };
        if self.summary.ticks > 0 {
            return;
        }
        let mut cells: Vec<(CellId, Summary)> = self
            .boundary
            .summaries
            .iter()
            .map(|(c, s)| (*c, *s))
            .collect();
        cells.sort_unstable_by_key(|(c, _)| *c);
        x.publish(Some(Tick(r.0 - 1)), r, &cells);
    }

    async fn fire_ready(&mut self, progress: Progress) -> anyhow::Result<()> {
        let wm = progress.watermark;
        if wm == Watermark::MIN {
            return Ok(());
        }
        loop {
            let Some(k) = self.next_tick.or(progress.min_bucket.map(Tick)) else {
                return Ok(());
            };
            if k.end_ms(self.bucket_ms) > wm.0 {
                break;
            }
            let foreign = match &self.exchange {
                Some(x) => match x.foreign(Tick(k.0 - 1)) {
                    Some(cells) => cells,
                    // Wait for the other instances' stats of tick k-1.
                    None => {
                        tracing::debug!(tick = k.0, "waiting for other instances' cell stats");
                        break;
                    }
                },
                None => Vec::new(),
            };
            let controls = match &self.controls {
                Some(log) => match log.for_tick(k) {
                    Some(set) => Some(set),
                    None => {
                        tracing::debug!(tick = k.0, "waiting for the control log");
                        break;
                    }
                },
                None => None,
            };
            if !self.fire(k, foreign, controls).await? {
                // Stopping: tick k stays unpublished, so never durable.
                self.halted = true;
                return Ok(());
            }
            self.next_tick = Some(k.next());
            self.snapshot(k).await;
            if let Some(p) = &mut self.placement {
                p.after_tick(k, &mut self.boundary).await;
            }
            if self.active_cells == 0 {
                if wm == Watermark::MAX {
                    return Ok(());
                }
                // Nothing is active: empty ticks would change nothing. Every
                // event not yet applied lies at or after the watermark.
                self.next_tick = Some(k.next().max(Tick(bucket_of(wm.0, self.bucket_ms))));
            }
        }
        self.publish_idle_coverage(progress);
        Ok(())
    }

    /// With no active cell, the ticks before the next one to fire (and
    /// before the watermark) are empty here: say so, so other instances
    /// need not wait for ticks this one skips.
    fn publish_idle_coverage(&mut self, progress: Progress) {
        let Some(x) = &self.exchange else { return };
        if self.active_cells > 0 || progress.watermark == Watermark::MIN {
            return;
        }
        let next = self
            .next_tick
            .map(|t| t.0)
            .or(progress.min_bucket)
            .unwrap_or(i64::MAX);
        let end = next
            .min(bucket_of(progress.watermark.0, self.bucket_ms))
            .saturating_sub(1);
        if self.covered.is_none_or(|c| end > c.0) {
            x.publish(self.covered, Tick(end), &[]);
            self.covered = Some(Tick(end));
        }
    }

    /// After tick `k` (a multiple of the interval): a consistent cut (see
    /// [`super::snapshot`]). Waits for the source's half only; the shards'
    /// cells are collected by a task while the next ticks fire.
    async fn snapshot(&mut self, k: Tick) {
        let Some(ClockSnapshots { options, cuts }) = &self.snapshots else {
            return;
        };
        if options.every_ticks <= 0 || k.0 % options.every_ticks != 0 {
            return;
        }
        let (reply, rx) = tokio::sync::oneshot::channel();
        if cuts.send(CutRequest { tick: k, reply }).is_err() {
            return;
        }
        // An error: the source stopped (end of input or shutdown).
        let Ok(cut) = rx.await else { return };
        let sink = Arc::clone(&options.sink);
        actix_rt::spawn(async move {
            let mut cells = Vec::new();
            for rx in cut.cells {
                match rx.await {
                    Ok(c) => cells.extend(c),
                    // A shard stopped: the pipeline is ending.
                    Err(_) => return,
                }
            }
            sink.write(PipelineImage {
                tick: k,
                watermark: cut.watermark,
                min_bucket: cut.min_bucket,
                partitions: cut.partitions,
                cells,
            });
        });
    }

    /// Fires `tick`; `false` when the source stopped while the sink's
    /// hand-off was full (see [`Self::sink_ready`]): nothing was published.
    async fn fire(
        &mut self,
        tick: Tick,
        foreign: Vec<(CellId, Summary)>,
        controls: Option<Arc<primetime_core::ControlSet>>,
    ) -> anyhow::Result<bool> {
        let started = Instant::now();
        let view = if foreign.is_empty() {
            Arc::clone(&self.boundary)
        } else {
            let mut view = (*self.boundary).clone();
            view.summaries.extend(foreign);
            Arc::new(view)
        };
        let requests = self.shards.iter().map(|s| {
            s.send(FireTick {
                tick,
                boundary: Arc::clone(&view),
                controls: controls.clone(),
            })
        });
        let reports = join_all(requests).await;
        let mut decisions = Vec::new();
        let mut cells = Vec::new();
        let mut active = 0;
        let mut failed = false;
        for report in reports {
            let report =
                report.map_err(|e| anyhow::anyhow!("shard unavailable at tick {}: {e}", tick.0))?;
            decisions.extend(report.decisions);
            cells.extend(report.boundary);
            active += report.active_cells;
            failed |= report.model_failed;
            if let Some(p) = &mut self.placement {
                p.add(report.costs);
            }
        }
        if let Some(x) = &self.exchange {
            x.publish(self.covered, tick, &cells);
            self.covered = Some(tick);
            x.forget_before(Tick(tick.0 - 1));
        }
        let boundary = BoundaryView {
            summaries: cells.into_iter().collect(),
        };
        decisions.sort_unstable_by_key(|d| d.cell);
        if self.publish_from.is_some_and(|f| tick < f) {
            // Rebuilding state after a rewind: these ticks were published
            // before, from complete state; publishing them again from the
            // rebuilt (partial) state would conflict.
            self.metrics
                .ticks_suppressed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            decisions.clear();
        } else {
            if let Some(l) = &self.lockstep {
                l.fired(&decisions);
            }
            if !self.sink_ready().await? {
                return Ok(false);
            }
            self.sink
                .publish(tick, tick.end_ms(self.bucket_ms), &decisions)?;
        }
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
        Ok(true)
    }

    /// Awaits the sink's slot for the next tick; `false` when the source
    /// stopped without finishing first (the service is stopping while the
    /// sink's bounded hand-off is full, e.g. a broker refusing prices): the
    /// tick is then never handed over, so it never becomes durable and the
    /// next start fires it again. A finished source (end of input) still
    /// gets every tick.
    async fn sink_ready(&mut self) -> anyhow::Result<bool> {
        let Some(mut source_rx) = self.source_rx.clone() else {
            self.sink.ready().await?;
            return Ok(true);
        };
        let stopped = async move {
            while source_rx.changed().await.is_ok() {}
            if source_rx.borrow().finished {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            // A sink with room takes the tick even when the source has
            // stopped meanwhile.
            biased;
            ready = self.sink.ready() => ready.map(|()| true),
            () = stopped => {
                tracing::info!("source stopped while the sink was full: the tick is left unpublished");
                Ok(false)
            }
        }
    }
}

/// Resolves when `rx` changes; never when there is none, or once its
/// sender is gone (nothing more can change).
async fn changed<T>(rx: &mut Option<watch::Receiver<T>>) {
    match rx {
        Some(r) => {
            if r.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use primetime_core::{FormulaModel, PriceDecision};
    use primetime_sim::{SimConfig, SimRecord, Simulator};

    use super::*;
    use crate::pipeline::{Input, InputRecord, Poll};

    /// Delivers its records, then reports a stop (the service stopping),
    /// never the end of input.
    struct StoppingInput {
        records: std::vec::IntoIter<InputRecord>,
        partitions: u32,
    }

    impl Input for StoppingInput {
        fn partitions(&self) -> u32 {
            self.partitions
        }

        fn poll(&mut self, out: &mut Vec<InputRecord>) -> anyhow::Result<Poll> {
            out.extend(self.records.by_ref().take(2_000));
            Ok(if self.records.len() == 0 {
                Poll::Stop
            } else {
                Poll::More
            })
        }
    }

    /// Takes one tick, then is never ready again (a hand-off that stays
    /// full: the broker refusing every price).
    #[derive(Clone, Default)]
    struct FullAfterOne(Arc<AtomicU64>);

    impl Sink for FullAfterOne {
        async fn ready(&mut self) -> anyhow::Result<()> {
            if self.0.load(Ordering::SeqCst) >= 1 {
                std::future::pending::<()>().await;
            }
            Ok(())
        }

        fn publish(&mut self, _: Tick, _: i64, _: &[PriceDecision]) -> anyhow::Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[test]
    fn a_source_that_stops_ends_a_clock_waiting_on_a_full_sink() {
        let mut sim = Simulator::new(SimConfig::default()).expect("sim config");
        let mut records = Vec::new();
        let end = sim.now_ms() + 4 * 60_000;
        sim.advance_to(end, &mut records);
        let input = StoppingInput {
            records: records
                .into_iter()
                .map(SimRecord::into_log_entry)
                .collect::<Vec<_>>()
                .into_iter(),
            partitions: sim.partitions(),
        };
        let config = crate::config::ServiceConfig::default();
        let sink = FullAfterOne::default();
        let published = Arc::clone(&sink.0);
        let model = Arc::new(FormulaModel::new(config.core.policy.fallback));
        let options = crate::pipeline::PipelineOptions::sized(2, 4, 512);
        let waited = actix_rt::System::new().block_on(async move {
            let pipeline = crate::pipeline::Pipeline::start(
                &config.core,
                &options,
                model,
                input,
                sink,
                Arc::new(Metrics::new(2)),
            )?;
            let wait = pipeline.wait();
            anyhow::Ok(tokio::time::timeout(std::time::Duration::from_secs(20), wait).await)
        });
        let (_, clock) = waited
            .expect("pipeline starts")
            .expect("the clock ends once the source stopped, though the sink is full")
            .expect("no pipeline error");
        assert_eq!(published.load(Ordering::SeqCst), 1, "one tick handed over");
        assert_eq!(
            clock.ticks, 1,
            "the tick waiting for the sink is not counted"
        );
    }
}
