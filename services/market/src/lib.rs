//! `primetime-market`: the closed-loop market benchmark (issue 15, DESIGN
//! §7a). The city simulator with its closed loop on is priced, in
//! lockstep, by the reference engine or a baseline; the simulator's
//! outcome log is read into metrics; seeds and policies are compared with
//! paired bootstrap intervals after calibration gates.
//!
//! Modules:
//! - [`scenario`]: the five days and their windows;
//! - [`policy`]: the six policies;
//! - [`mod@run`]: one run, the lockstep loop ([`run()`]);
//! - [`metrics`]: one run's outcome metrics;
//! - [`mod@bench`]: the experiment: seeds, tables, bootstrap, gates, targets;
//! - [`quality`]: the `QUALITY.md` table;
//! - [`dataset`]: the closed-loop training set of the model.

//! # Running the closed loop elsewhere (the service's embedded mode)
//!
//! The loop is the simulator's, not this crate's: build a [`Simulator`]
//! from a `SimConfig` with `market: Some(MarketConfig::default())`, then
//! for every bucket `b` (the engine's `bucket_ms`, 10 s): call
//! `sim.advance_to(end of bucket b, &mut records)`, give the records to the
//! pricing pipeline in order, let it fire every tick those records make
//! fire (the service watermark's ticks), and pass the decisions of those
//! ticks — only the changes are needed — to
//! `sim.observe_prices(&[(cell, multiplier)])` before advancing into
//! bucket `b + 1`. Prices apply from the simulator's current time; a run
//! is a pure function of the config, the seed and the prices observed
//! and when, so a pipeline equivalent to the reference engine gives the
//! same outcomes as [`run()`] whatever its shard count (tested in
//! `tests/lockstep.rs`). Wall-clock pacing between buckets changes
//! nothing. [`Simulator::market_log`] has the outcomes; [`metrics::measure`]
//! reads them.
//!
//! [`Simulator`]: primetime_sim::Simulator
//! [`Simulator::market_log`]: primetime_sim::Simulator::market_log

#![forbid(unsafe_code)]

pub mod bench;
pub mod dataset;
pub mod metrics;
pub mod policy;
pub mod quality;
pub mod run;
pub mod scenario;

pub use policy::PolicyKind;
pub use run::{RunOutcome, RunSpec, run};
pub use scenario::{Scenario, Timeline};

/// Why a run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MarketError {
    #[error(transparent)]
    Sim(#[from] primetime_sim::SimError),
    #[error(transparent)]
    Engine(#[from] primetime_core::ConfigError),
    #[error("the model policy needs a model (--model)")]
    NoModel,
    #[error("the simulator ran without its closed loop")]
    OpenLoop,
    #[error("a run's result was lost (a worker thread panicked)")]
    Lost,
    #[error("the scenario's control was refused: {0}")]
    Control(#[from] primetime_core::LogError),
}
