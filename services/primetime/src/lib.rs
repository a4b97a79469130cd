//! The `primetime` service: actors, sources, sinks, HTTP and CLI around the
//! pure `primetime-core` (DESIGN §2, §6, §7).
//!
//! Modules:
//! - [`cli`]: the command line (`serve`, `simulate`, `replay`);
//! - [`config`]: typed configuration from flags, environment and file;
//! - [`pipeline`]: source thread → shard actors → tick clock;
//! - [`inputs`]: pipeline inputs (embedded simulator, event log);
//! - [`kafka`]: Kafka source, partitioning, producers, dead letters,
//!   boundary exchange (the price sink is [`sinks::kafka`]);
//! - [`dataset`]: the model's training set from the simulator;
//! - [`recovery`]: snapshots in Redis, epoch plans (restore, rewind);
//! - [`redis`]: the Redis price table (newest tick wins) and snapshots;
//! - [`sinks`]: the `Sink` trait (where ticks' decisions go) and its contract;
//! - [`wall_clock`]: the one place the wall clock is read;
//! - [`table`]: the in-memory price table HTTP reads lock-free;
//! - [`http`]: the actix-web API;
//! - [`metrics`]: Prometheus metrics;
//! - [`model`]: the ONNX model or, when it cannot load, fallback mode;
//! - [`serve`], [`replay`]: the two pipeline-running commands;

pub mod cli;
pub mod config;
pub mod dataset;
pub mod http;
pub mod inputs;
pub mod kafka;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod recovery;
pub mod redis;
pub mod replay;
pub mod serve;
pub mod sinks;
pub mod table;
pub mod wall_clock;

/// Logs to stderr; filter with `PRIMETIME_LOG` (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PRIMETIME_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
