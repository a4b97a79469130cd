//! Command line: `serve` (default), `simulate`, `replay`.
//!
//! - `args`: the flags of each command and their parsing into config;
//! - `simulate`: the simulator's log, dataset or Kafka output;
//! - [`publish`]: `simulate --kafka`, the simulator as a Kafka producer (a
//!   dev and load-test tool, not the service's adapter).

mod args;
pub mod publish;
mod simulate;

use clap::{Parser, Subcommand};

use crate::config::{ConfigErrors, EXIT_USAGE, Overrides};
use args::{ReplayArgs, ServeArgs, SimulateArgs, load, parse, serve_config};

#[derive(Debug, Parser)]
#[command(
    name = "primetime",
    version,
    about = "Realtime dynamic pricing per H3 cell",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service (the default): embedded simulator, HTTP API.
    Serve(ServeArgs),
    /// Write a simulated event log (length-delimited protobuf).
    Simulate(SimulateArgs),
    /// Price an event log deterministically; decisions as JSON lines.
    Replay(ReplayArgs),
}

/// Parses the command line, runs the command, returns the exit status.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => EXIT_USAGE,
            };
        }
    };
    crate::init_tracing();
    let result = match cli.command {
        None => run_serve(&cli.serve),
        Some(Command::Serve(args)) => run_serve(&args),
        Some(Command::Simulate(args)) => simulate::run_simulate(&args),
        Some(Command::Replay(args)) => run_replay(&args),
    };
    match result {
        Ok(()) => 0,
        Err(e) => match e.downcast_ref::<ConfigErrors>() {
            Some(c) => {
                eprintln!("{c}");
                EXIT_USAGE
            }
            None => {
                eprintln!("error: {e:#}");
                1
            }
        },
    }
}

fn run_serve(args: &ServeArgs) -> anyhow::Result<()> {
    let config = serve_config(args)?;
    crate::serve::serve(config)
}

fn run_replay(args: &ReplayArgs) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    let overrides = Overrides {
        shards: parse("shards", &args.shards, &mut problems),
        model: args.model.clone(),
        placement: parse("placement", &args.placement, &mut problems),
        ..Overrides::default()
    };
    let config = load(args.config.as_ref(), overrides, problems)?;
    let summary = match &args.controls {
        None => crate::replay::replay(&config, &args.input, &args.out)?,
        Some(path) => replay_with_controls(&config, args, path)?,
    };
    eprintln!("{summary}");
    Ok(())
}

/// `replay --controls`: the same replay, each tick priced under the
/// control log's set for it (the records' stamps, never the replay's
/// time), so decisions equal the live ones byte for byte.
fn replay_with_controls(
    config: &crate::config::ServiceConfig,
    args: &ReplayArgs,
    path: &std::path::Path,
) -> anyhow::Result<crate::replay::ReplaySummary> {
    use std::io::BufWriter;
    use std::sync::Arc;

    use anyhow::Context as _;

    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let records = crate::controls::read_records(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let log = crate::controls::ControlLog::from_records(config.core.bucket_ms, records)
        .with_context(|| format!("{}: the control log does not apply", path.display()))?;
    let input = crate::inputs::LogInput::open(&args.input)?;
    let out = &args.out;
    let file =
        std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let sink = crate::replay::JsonlSink::new(BufWriter::with_capacity(1 << 20, file))
        .context("starting the decisions writer")?;
    let model = crate::model::choose(&config.model, config.core.policy.fallback).model;
    let options = crate::pipeline::PipelineOptions {
        ingest_workers: config.ingest_workers,
        controls: Some(Arc::new(log)),
        placement: config.placement.options(),
        ..crate::pipeline::PipelineOptions::sized(config.shards, config.mailbox, config.batch_size)
    };
    crate::replay::run_with_options(config, options, input, sink, model)
}
