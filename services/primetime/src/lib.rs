//! The `primetime` service: actors, sources, sinks, HTTP and CLI around the
//! pure `primetime-core` (DESIGN §2, §6, §7).
//!
//! Modules (ARCHITECTURE.md draws the tree):
//! - [`auth`]: API keys (hashed, scoped) and per-key rate limits;
//! - [`cli`]: the command line (`serve`, `simulate`, `replay`);
//! - [`config`]: typed configuration from flags, environment and file;
//! - [`controls`]: the operator-control log as HTTP and the clock see it
//!   (the `Controls` seam) and the embedded in-memory log (DESIGN §6a);
//! - [`pipeline`]: source thread → shard actors → tick clock, and the
//!   traits adapters plug into (it imports no adapter);
//! - [`sinks`]: the `Sink` trait, its contract, and every sink (table,
//!   Kafka, Redis, JSON lines);
//! - [`inputs`]: pipeline inputs (embedded simulator, event log);
//! - [`kafka`]: Kafka source, partitioning, producers, dead letters,
//!   boundary exchange, the control log, the price history's restore;
//! - [`redis`]: the Redis price table (newest tick wins) and snapshots;
//! - [`recovery`]: epoch plans (restore, rewind) and the snapshot codec;
//! - [`serve`]: the wiring of `serve` (embedded or Kafka epochs, HTTP);
//! - [`replay`]: an event log through the pipeline, decisions as JSON lines;
//! - [`dataset`]: the model's training set from the simulator;
//! - [`table`]: the in-memory price table HTTP reads lock-free;
//! - [`http`]: the actix-web API;
//! - [`quotes`]: signed quotes (tokens, keys, counters, audit trail);
//! - [`history`]: the per-cell history of price changes (prices at a past
//!   time);
//! - [`metrics`]: Prometheus metrics;
//! - [`model`]: the ONNX model or, when it cannot load, fallback mode;
//! - [`wall_clock`]: the one place the wall clock is read.

pub mod auth;
pub mod cli;
pub mod config;
pub mod controls;
pub mod dataset;
pub mod history;
pub mod http;
pub mod inputs;
pub mod kafka;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod quotes;
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
