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
    /// Load-aware placement of regions on shards (`[placement]`). Default
    /// off.
    pub placement: PlacementConfig,
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
            placement: PlacementConfig::default(),
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

/// Load-aware placement (`[placement]`, `--placement`,
/// `PRIMETIME_PLACEMENT`): shards report what each region costs them
/// (events and priced cells, weighed as shard CPU), and every
/// `every_ticks` ticks regions move, between two ticks and with their
/// cells, so that no shard carries more than `max_ratio` × the mean.
/// Decisions do not depend on it. One instance only: `replay`, and
/// `serve` with the embedded simulator in open loop (no `[sim.market]`);
/// refused with Kafka (other instances read this one's boundary cells by
/// the hash) and with the closed-loop simulator (its lockstep with the
/// ticks cannot wait for moves).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlacementConfig {
    /// Default false.
    pub enabled: bool,
    /// Plan moves after every this many ticks, from their costs. Default
    /// 6 (a minute of 10 s buckets).
    pub every_ticks: i64,
    /// No shard above this × the mean cost (unless one region alone costs
    /// more). Default 1.3.
    pub max_ratio: f64,
}

impl Default for PlacementConfig {
    fn default() -> Self {
        let o = crate::pipeline::PlacementOptions::default();
        Self {
            enabled: false,
            every_ticks: o.every_ticks,
            max_ratio: o.max_ratio,
        }
    }
}

impl PlacementConfig {
    /// The pipeline's options (`None` when off).
    pub fn options(&self) -> Option<crate::pipeline::PlacementOptions> {
        self.enabled.then(|| crate::pipeline::PlacementOptions {
            every_ticks: self.every_ticks,
            max_ratio: self.max_ratio,
            ..crate::pipeline::PlacementOptions::default()
        })
    }

    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(1..=1_000_000).contains(&self.every_ticks) {
            problems.push(format!(
                "placement.every_ticks: must be in 1..=1000000, got {}",
                self.every_ticks
            ));
        }
        if !(self.max_ratio.is_finite() && self.max_ratio >= 1.0) {
            problems.push(format!(
                "placement.max_ratio: must be at least 1.0, got {}",
                self.max_ratio
            ));
        }
        problems
    }
}

/// `--placement` / `PRIMETIME_PLACEMENT`: `off`, `on` (every
/// `placement.every_ticks`), or a rebalance period in ticks (on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlacementFlag {
    Off,
    On,
    EveryTicks(i64),
}

impl std::str::FromStr for PlacementFlag {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s.trim() {
            "off" | "false" => Ok(Self::Off),
            "on" | "true" => Ok(Self::On),
            n => n.parse().map(Self::EveryTicks).map_err(|_| ()),
        }
    }
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
    pub placement: Option<PlacementFlag>,
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
        match overrides.placement {
            None => {}
            Some(PlacementFlag::Off) => config.placement.enabled = false,
            Some(PlacementFlag::On) => config.placement.enabled = true,
            Some(PlacementFlag::EveryTicks(n)) => {
                config.placement.enabled = true;
                config.placement.every_ticks = n;
            }
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
        problems.extend(self.placement.problems());
        if self.placement.enabled && self.kafka.enabled() {
            problems.push(
                "placement.enabled: load-aware placement runs in one instance only (replay, embedded serve), not with kafka.brokers: other instances read this one's boundary cells by the hash"
                    .to_owned(),
            );
        }
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

    /// Problems only `serve` has (after [`Self::validate`]): placement
    /// with the embedded simulator's closed loop, which runs in lockstep
    /// with the ticks and cannot wait for moves.
    pub fn serve_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.placement.enabled && !self.kafka.enabled() && self.sim.market.is_some() {
            problems.push(
                "placement.enabled: not with the embedded simulator's closed loop ([sim.market], the default): its lockstep with the ticks cannot wait for moves; give a [sim] table without [sim.market], or turn placement off"
                    .to_owned(),
            );
        }
        problems
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
    fn placement_from_file_and_flag_and_where_it_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("primetime.toml");
        std::fs::write(&path, "[placement]\nenabled = true\nevery_ticks = 3\n").unwrap();
        let c = ServiceConfig::load(Some(&path), &Overrides::default()).unwrap();
        assert_eq!(c.placement.options().map(|o| o.every_ticks), Some(3));
        let off = Overrides {
            placement: Some(PlacementFlag::Off),
            ..Overrides::default()
        };
        let c = ServiceConfig::load(Some(&path), &off).unwrap();
        assert_eq!(c.placement.options(), None, "the flag wins over the file");
        assert_eq!("12".parse(), Ok(PlacementFlag::EveryTicks(12)));
        assert_eq!("on".parse(), Ok(PlacementFlag::On));
        assert!("sometimes".parse::<PlacementFlag>().is_err());
        let zero = Overrides {
            placement: Some(PlacementFlag::EveryTicks(0)),
            ..Overrides::default()
        };
        let err = ServiceConfig::load(None, &zero).unwrap_err().to_string();
        assert!(err.contains("placement.every_ticks"), "{err}");
        // Kafka: refused for every command.
        let kafka = Overrides {
            placement: Some(PlacementFlag::On),
            kafka_brokers: Some("127.0.0.1:9092".into()),
            ..Overrides::default()
        };
        let err = ServiceConfig::load(None, &kafka).unwrap_err().to_string();
        assert!(err.contains("placement.enabled"), "{err}");
        // The default embedded city is a closed loop: serve refuses it,
        // replay (no simulator) takes it.
        let on = Overrides {
            placement: Some(PlacementFlag::On),
            ..Overrides::default()
        };
        let c = ServiceConfig::load(None, &on).unwrap();
        assert!(c.serve_problems()[0].contains("closed loop"));
        let open = ServiceConfig {
            sim: SimConfig::default(),
            ..c
        };
        assert!(open.serve_problems().is_empty());
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
