//! `primetime-load`: load scenarios against the real `primetime` binary.
//! Each scenario states its goal, prints the measured figures with PASS or
//! FAIL, and writes them to `load-tests/results/<scenario>.json` in one
//! shared shape ([`results`]); `report` turns every such file into the
//! table of BENCHMARKS.md.
//!
//! Run in release: `cargo run --release -p primetime-load-tests -- <scenario>`.
//! The `primetime` binary is built by the harness (`primetime_e2e::service_binary`)
//! in the same profile and `CARGO_TARGET_DIR` as this crate.
//!
//! Modules:
//! - [`http`]: the HTTP API under closed- and open-loop load ([`loadgen`]
//!   is the load generator);
//! - [`tick_latency`]: watermark past a tick's end → prices on HTTP and on
//!   the prices topic;
//! - [`kafka`]: `firehose` (drain a backlog) and `overload` (input faster
//!   than a CPU-throttled service), with the shared config helpers;
//! - [`ramp`]: live Kafka input at rising rates, the highest sustained;
//! - [`scale`]: 3 M (or more) active cells, time per tick, bytes per cell,
//!   snapshot pause and size;
//! - [`replay_cores`]: `replay` on 2 cores and on 1, the second core's gain;
//! - [`fetch_probe`]: which fetch limits the broker honours;
//! - [`report`]: BENCHMARKS.md's table from the result files;
//! - [`results`], [`util`]: the result shape and `/proc` helpers.

mod fetch_probe;
mod http;
mod kafka;
mod loadgen;
mod ramp;
mod replay_cores;
mod report;
mod results;
mod scale;
mod tick_latency;
mod util;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "primetime-load", about = "primetime load scenarios")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// HTTP API: maximum rate (closed loop), then latency at 50 % and 80 %
    /// of it (open loop, HDR histogram), single and batch prices.
    Http(http::HttpArgs),
    /// Tick latency: watermark past a tick's end to its prices on HTTP and
    /// on the prices topic (Kafka mode, live input).
    TickLatency(tick_latency::TickArgs),
    /// Kafka firehose: drain a simulated backlog; events/s and peak RSS.
    Firehose(kafka::LoadArgs),
    /// Kafka ramp: live input at rising rates until the backlog grows;
    /// the highest sustained input rate.
    Ramp(ramp::RampArgs),
    /// Overload: publish into Kafka faster than a CPU-throttled service
    /// takes it; resident memory must stay bounded.
    Overload(kafka::OverloadArgs),
    /// Scale: 3 M (or `--cells N`) active cells — time per tick (ONNX
    /// model, guardrails, commit, 2 threads), resident memory per active
    /// cell, and a snapshot cut's pause and size.
    Scale(scale::ScaleArgs),
    /// Which fetch size limits the Kafka broker honours (raw Fetch
    /// requests).
    FetchProbe(fetch_probe::ProbeArgs),
    /// Replay on 2 cores and on 1 (taskset): events/s, CPU used, the rate
    /// from the second core; decisions must be identical.
    ReplayCores(replay_cores::ReplayCoresArgs),
    /// Regenerate the table of BENCHMARKS.md from load-tests/results/*.json.
    Report,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().scenario {
        Scenario::Http(a) => http::run(&a),
        Scenario::TickLatency(a) => tick_latency::run(&a),
        Scenario::Firehose(a) => kafka::firehose(&a),
        Scenario::Ramp(a) => ramp::run(&a),
        Scenario::Overload(a) => kafka::overload(&a),
        Scenario::Scale(a) => scale::run(&a),
        Scenario::FetchProbe(a) => fetch_probe::run(&a),
        Scenario::ReplayCores(a) => replay_cores::run(&a),
        Scenario::Report => report::run(),
    }
}
