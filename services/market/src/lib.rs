//! `primetime-market`: the closed-loop market benchmark (issue 15, DESIGN
//! §7a). The city simulator with its closed loop on is priced, in
//! lockstep, by the reference engine or a baseline; the simulator's
//! outcome log is read into metrics; seeds and policies are compared with
//! paired bootstrap intervals after calibration gates.
//!
//! Modules:
//! - [`scenario`]: the five days and their windows;
//! - [`policy`]: the six policies;
//! - [`run`]: one run, the lockstep loop ([`run::run`]);
//! - [`metrics`]: one run's outcome metrics;
//! - [`bench`]: the experiment: seeds, tables, bootstrap, gates, targets;
//! - [`quality`]: the `QUALITY.md` table.

#![forbid(unsafe_code)]

pub mod bench;
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
}
