//! Service configuration: defaults, an optional TOML file
//! (`deny_unknown_fields`), then environment (`PRIMETIME_*`) and flags —
//! flags win. Read once into [`ServiceConfig`]; every invalid value is
//! reported, then the process exits with status 64.

use std::net::SocketAddr;
use std::path::Path;

use primetime_sim::SimConfig;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The model used unless configured otherwise (relative to the working
/// directory: the repository root for `cargo run`).
pub const DEFAULT_MODEL: &str = crate::model::EMBEDDED;

/// Exit status for invalid configuration or usage (`EX_USAGE`).
pub const EXIT_USAGE: i32 = 64;

/// Everything `serve` and `replay` need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// HTTP listen address. Default `127.0.0.1:8080`.
    pub http_addr: String,
    /// HTTP worker threads. Default: cores − 1, at least 2. Leaving a core
    /// to the pipeline pays on larger machines; below 2 workers one slow
    /// request (a batch of 1,000 locations) holds up every other, and on 2
    /// cores a second worker carried 1.8× the batch requests (BENCHMARKS.md
    /// note 3).
    pub http_workers: usize,
    /// Cell shard actors. Default: the number of CPU cores.
    pub shards: usize,
    /// Bounded mailbox of each shard, in event batches. Default 64.
    pub mailbox: usize,
    /// Events per batch sent to a shard. Default 4096.
    pub batch_size: usize,
    /// Threads that decode and validate input records in parallel (the
    /// per-partition watermark, dedup and routing stay on the source
    /// thread, in order). Default: the number of CPU cores; 1..=256.
    /// Decisions do not depend on it.
    pub ingest_workers: usize,
    /// HTTP answers are `stale` when no tick was published for this long
    /// (wall clock). Default 30 s.
    pub stale_after_ms: i64,
    /// Largest `POST /v1/prices` body. Default 256 KiB.
    pub max_body_bytes: usize,
    /// Most cells returned by `GET /v1/cells?bbox=`. Default 20 000.
    pub max_bbox_cells: usize,
    /// Embedded simulator speed (sim seconds per wall second). Default 1.
    pub sim_speed: f64,
    /// The ONNX pricing model (its card `<stem>.card.json` next to it).
    /// Default `embedded` (the model built into the binary,
    /// `models/primetime-v1`, usable from any directory); a path loads
    /// that file; empty = the formula. A model
    /// that cannot be loaded is logged and the service runs in fallback
    /// mode: the formula prices, every decision is marked `fallback`.
    pub model: String,
    /// Time model, windows and guardrails (the pricing core).
    pub core: primetime_core::Config,
    /// Kafka input and output; `brokers` empty (the default) = embedded
    /// mode.
    pub kafka: crate::kafka::KafkaConfig,
    /// Redis: the shared price table and snapshots; `url` empty (the
    /// default) = none. Used in Kafka mode.
    pub redis: crate::redis::RedisConfig,
    /// The embedded city simulator (source when no Kafka is configured).
    /// Default: the simulator's defaults, with a bigger stadium crowd
    /// (4,000 riders) leaving 2 s after start, so a fresh `serve` shows a
    /// surge within ~20 s.
    pub sim: SimConfig,
    /// Quotes: lifetime, confirmation threshold, signing keys.
    pub quotes: crate::quotes::QuoteConfig,
    /// Prices at a past time: retention and per-cell bound of the history.
    pub history: crate::history::HistoryConfig,
    /// API keys (hashed) with scopes and rate limits; none (the default) =
    /// every route open.
    pub auth: crate::auth::AuthConfig,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            http_addr: "127.0.0.1:8080".to_owned(),
            http_workers: std::thread::available_parallelism()
                .map_or(2, |n| n.get().saturating_sub(1).max(2)),
            shards: std::thread::available_parallelism().map_or(2, |n| n.get()),
            mailbox: 64,
            batch_size: 4096,
            ingest_workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            stale_after_ms: 30_000,
            max_body_bytes: 256 * 1024,
            max_bbox_cells: 20_000,
            sim_speed: 1.0,
            model: DEFAULT_MODEL.to_owned(),
            core: primetime_core::Config::default(),
            kafka: crate::kafka::KafkaConfig::default(),
            redis: crate::redis::RedisConfig::default(),
            sim: embedded_sim(),
            quotes: crate::quotes::QuoteConfig::default(),
            history: crate::history::HistoryConfig::default(),
            auth: crate::auth::AuthConfig::default(),
        }
    }
}

/// The embedded default's city: the market benchmark's calibrated city
/// (5,000 drivers, 3 rider sessions/s: on a normal day drivers carry a
/// rider about half their online time and pickups take 2–4 minutes,
/// `QUALITY.md`'s gates) with its closed loop, and a stadium crowd of
/// 2,000 riders released over 5 minutes from two seconds in: the map shows
/// a surge at once, drivers drawn toward it, and the surge fading
/// (`tests/closed_loop.rs` checks that story).
fn embedded_sim() -> SimConfig {
    let mut sim = SimConfig {
        drivers: 5_000,
        demand_per_s: 3.0,
        market: Some(primetime_sim::MarketConfig::default()),
        ..SimConfig::default()
    };
    if let Some(stadium) = &mut sim.stadium {
        stadium.starts_after_ms = 2_000;
        stadium.riders = 2_000;
        stadium.duration_ms = 300_000;
    }
    sim
}

/// Every problem found, one per line.
#[derive(Debug, Error)]
#[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<String>);

/// Overrides from flags and environment (clap fills these).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub http_addr: Option<String>,
    pub shards: Option<usize>,
    pub http_workers: Option<usize>,
    pub sim_speed: Option<f64>,
    pub seed: Option<u64>,
    pub model: Option<String>,
    pub kafka_brokers: Option<String>,
    pub kafka_group: Option<String>,
    pub create_topics: bool,
    pub redis_url: Option<String>,
    pub kafka_instance_id: Option<String>,
}

impl ServiceConfig {
    /// Defaults, then the file (if any), then the overrides; validated.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigErrors> {
        let mut config = match file {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        if let Some(v) = &overrides.http_addr {
            config.http_addr.clone_from(v);
        }
        if let Some(v) = overrides.shards {
            config.shards = v;
        }
        if let Some(v) = overrides.http_workers {
            config.http_workers = v;
        }
        if let Some(v) = overrides.sim_speed {
            config.sim_speed = v;
        }
        if let Some(v) = overrides.seed {
            config.sim.seed = v;
        }
        if let Some(v) = &overrides.model {
            config.model.clone_from(v);
        }
        if let Some(v) = &overrides.kafka_brokers {
            config.kafka.brokers.clone_from(v);
        }
        if let Some(v) = &overrides.kafka_group {
            config.kafka.group_id.clone_from(v);
        }
        if overrides.create_topics {
            config.kafka.create_topics = true;
        }
        if let Some(v) = &overrides.kafka_instance_id {
            config.kafka.instance_id.clone_from(v);
        }
        if let Some(v) = &overrides.redis_url {
            config.redis.url.clone_from(v);
        }
        config.validate()?;
        Ok(config)
    }

    fn from_file(path: &Path) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigErrors(vec![format!("config file {}: {e}", path.display())]))?;
        toml::from_str(&text)
            .map_err(|e| ConfigErrors(vec![format!("config file {}: {e}", path.display())]))
    }

    /// Checks every field; all problems at once.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut problems = Vec::new();
        if self.http_addr.parse::<SocketAddr>().is_err() {
            problems.push(format!(
                "http_addr: {:?} is not an address like 127.0.0.1:8080",
                self.http_addr
            ));
        }
        if !(1..=256).contains(&self.http_workers) {
            problems.push(format!(
                "http_workers: must be in 1..=256, got {}",
                self.http_workers
            ));
        }
        if !(1..=1024).contains(&self.shards) {
            problems.push(format!("shards: must be in 1..=1024, got {}", self.shards));
        }
        if self.mailbox == 0 {
            problems.push("mailbox: must be at least 1".to_owned());
        }
        if !(1..=256).contains(&self.ingest_workers) {
            problems.push(format!(
                "ingest_workers: must be in 1..=256, got {}",
                self.ingest_workers
            ));
        }
        if self.batch_size == 0 {
            problems.push("batch_size: must be at least 1".to_owned());
        }
        if self.stale_after_ms <= 0 {
            problems.push(format!(
                "stale_after_ms: must be > 0, got {}",
                self.stale_after_ms
            ));
        }
        if self.max_body_bytes < 1024 {
            problems.push(format!(
                "max_body_bytes: must be at least 1024, got {}",
                self.max_body_bytes
            ));
        }
        if self.max_bbox_cells == 0 {
            problems.push("max_bbox_cells: must be at least 1".to_owned());
        }
        if !(self.sim_speed.is_finite() && self.sim_speed > 0.0 && self.sim_speed <= 10_000.0) {
            problems.push(format!(
                "sim_speed: must be in (0, 10000], got {}",
                self.sim_speed
            ));
        }
        if let Err(e) = self.core.validate() {
            problems.extend(
                e.problems
                    .into_iter()
                    .map(|(f, m)| format!("core.{f}: {m}")),
            );
        }
        if let Err(e) = primetime_sim::Simulator::new(self.sim.clone()) {
            problems.extend(crate::config::sim_problems(&e));
        }
        problems.extend(self.kafka.problems());
        problems.extend(self.redis.problems());
        problems.extend(self.quotes.problems());
        problems.extend(self.history.problems());
        problems.extend(self.auth.problems());
        if self.redis.enabled() && !self.kafka.enabled() {
            problems.push(
                "redis.url: Redis is used in Kafka mode only (set kafka.brokers, or leave redis.url empty)"
                    .to_owned(),
            );
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(problems))
        }
    }

    pub fn socket_addr(&self) -> SocketAddr {
        self.http_addr
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8080)))
    }
}

/// The simulator's configuration problems, prefixed `sim.`.
pub fn sim_problems(e: &primetime_sim::SimError) -> Vec<String> {
    match e {
        primetime_sim::SimError::Config(problems) => {
            problems.iter().map(|p| format!("sim.{p}")).collect()
        }
        other => vec![format!("sim: {other}")],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        ServiceConfig::default().validate().unwrap();
    }

    #[test]
    fn file_overrides_and_unknown_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("primetime.toml");
        std::fs::write(
            &path,
            "shards = 3\n[core]\nbucket_ms = 5000\n[core.policy]\ncap = 2.5\n",
        )
        .unwrap();
        let c = ServiceConfig::load(
            Some(&path),
            &Overrides {
                shards: Some(5),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(c.shards, 5, "flags win over the file");
        assert_eq!(c.core.bucket_ms, 5000);
        assert_eq!(c.core.policy.cap, 2.5);

        std::fs::write(&path, "shardz = 3\n").unwrap();
        let err = ServiceConfig::load(Some(&path), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("unknown field `shardz`"), "{err}");
    }

    #[test]
    fn every_problem_is_listed() {
        let c = ServiceConfig {
            http_addr: "nope".into(),
            shards: 0,
            sim_speed: -1.0,
            core: primetime_core::Config {
                bucket_ms: 0,
                ..Default::default()
            },
            ..ServiceConfig::default()
        };
        let err = c.validate().unwrap_err();
        let text = err.to_string();
        for needle in ["http_addr", "shards", "sim_speed", "core.bucket_ms"] {
            assert!(text.contains(needle), "{needle} missing in {text}");
        }
    }
}
