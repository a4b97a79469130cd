//! `primetime replay`: prices an event log through the same actor pipeline
//! as `serve`, as fast as possible, writing every decision as a JSON line.
//! Deterministic: the output is a pure function of the log and config.

use std::fmt;
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use primetime_core::{PriceModel, RejectCounts};

use crate::config::ServiceConfig;
use crate::inputs::LogInput;
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, PipelineOptions, Sink};
pub use crate::sinks::jsonl::JsonlSink;

/// Totals of a replay, printed by the CLI.
#[derive(Debug, Clone)]
pub struct ReplaySummary {
    pub records: u64,
    pub accepted: u64,
    pub rejected: RejectCounts,
    pub ticks: u64,
    pub decisions: u64,
    pub seconds: f64,
}

impl fmt::Display for ReplaySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rejected: Vec<String> = self
            .rejected
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| format!("{r}={n}"))
            .collect();
        write!(
            f,
            "replayed {} records ({} accepted, rejected: {}) in {:.2} s = {:.0} events/s; {} ticks, {} decisions",
            self.records,
            self.accepted,
            if rejected.is_empty() {
                "none".to_owned()
            } else {
                rejected.join(" ")
            },
            self.seconds,
            self.records as f64 / self.seconds.max(1e-9),
            self.ticks,
            self.decisions
        )
    }
}

/// Replays `input` into `out`.
pub fn replay(config: &ServiceConfig, input: &Path, out: &Path) -> anyhow::Result<ReplaySummary> {
    let input = LogInput::open(input)?;
    let file = File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let sink = JsonlSink::new(BufWriter::with_capacity(1 << 20, file))
        .context("starting the decisions writer")?;
    let choice = crate::model::choose(&config.model, config.core.policy.fallback);
    run(config, input, sink, choice.model)
}

/// Replays any input into any sink (used by tests).
pub fn run<I, S>(
    config: &ServiceConfig,
    input: I,
    sink: S,
    model: Arc<dyn PriceModel + Send + Sync>,
) -> anyhow::Result<ReplaySummary>
where
    I: crate::pipeline::Input + 'static,
    S: Sink + 'static,
{
    let options = PipelineOptions {
        ingest_workers: config.ingest_workers,
        placement: config.placement.options(),
        ..PipelineOptions::sized(config.shards, config.mailbox, config.batch_size)
    };
    run_with_options(config, options, input, sink, model)
}

/// [`run`] with explicit pipeline options (snapshots, restore; tests).
pub fn run_with_options<I, S>(
    config: &ServiceConfig,
    options: PipelineOptions,
    input: I,
    sink: S,
    model: Arc<dyn PriceModel + Send + Sync>,
) -> anyhow::Result<ReplaySummary>
where
    I: crate::pipeline::Input + 'static,
    S: Sink + 'static,
{
    let metrics = Arc::new(Metrics::new(config.shards));
    let core = config.core.clone();
    let started = Instant::now();
    let (source, clock) = actix_rt::System::new().block_on(async move {
        Pipeline::start(&core, &options, model, input, sink, metrics)?
            .wait()
            .await
    })?;
    Ok(ReplaySummary {
        records: source.records,
        accepted: source.accepted,
        rejected: source.rejected,
        ticks: clock.ticks,
        decisions: clock.decisions,
        seconds: started.elapsed().as_secs_f64(),
    })
}
