//! The command line's arguments: taken as text and parsed after all are
//! read, so that every invalid value is reported at once, then turned into
//! [`ServiceConfig`] overrides.

use std::path::PathBuf;

use clap::Args;

use crate::config::{ConfigErrors, Overrides, ServiceConfig};

/// Values are taken as text and parsed after all are read, so that every
/// invalid one is reported at once.
#[derive(Debug, Clone, Default, Args)]
pub(super) struct ServeArgs {
    /// TOML configuration file (unknown keys are errors).
    #[arg(long, env = "PRIMETIME_CONFIG")]
    pub(super) config: Option<PathBuf>,
    /// HTTP listen address [default: 127.0.0.1:8080].
    #[arg(long, env = "PRIMETIME_HTTP_ADDR")]
    pub(super) http_addr: Option<String>,
    /// Cell shard actors [default: number of cores].
    #[arg(long, env = "PRIMETIME_SHARDS")]
    pub(super) shards: Option<String>,
    /// HTTP worker threads [default: cores - 1, at least 2].
    #[arg(long, env = "PRIMETIME_HTTP_WORKERS")]
    pub(super) http_workers: Option<String>,
    /// Embedded simulator speed, sim seconds per wall second [default: 1].
    #[arg(long, env = "PRIMETIME_SIM_SPEED")]
    pub(super) sim_speed: Option<String>,
    /// Embedded simulator seed [default: 7].
    #[arg(long, env = "PRIMETIME_SEED")]
    pub(super) seed: Option<String>,
    /// ONNX model: "embedded" (the default: primetime-v1, built into the binary), a file path, or "" for the formula.
    #[arg(long, env = "PRIMETIME_MODEL")]
    pub(super) model: Option<String>,
    /// Kafka brokers (host:port,…): consume the input topics, publish
    /// prices and dead letters there instead of running the simulator.
    #[arg(long, env = "PRIMETIME_KAFKA")]
    pub(super) kafka: Option<String>,
    /// Kafka consumer group [default: primetime].
    #[arg(long, env = "PRIMETIME_KAFKA_GROUP")]
    pub(super) group: Option<String>,
    /// Create missing Kafka topics at start (prices compacted).
    #[arg(long, env = "PRIMETIME_CREATE_TOPICS")]
    pub(super) create_topics: bool,
    /// Static Kafka group membership id (kafka.instance_id): a restart
    /// with the same id takes its partitions back without a rebalance.
    #[arg(long, env = "PRIMETIME_KAFKA_INSTANCE_ID")]
    pub(super) instance_id: Option<String>,
    /// Redis URL (redis://host:port/db), with --kafka: the shared price
    /// table and snapshots for fast restarts.
    #[arg(long, env = "PRIMETIME_REDIS")]
    pub(super) redis: Option<String>,
    /// Load-aware placement of regions on shards: "off" (the default),
    /// "on", or the rebalance period in ticks (on); one instance only.
    #[arg(long, env = "PRIMETIME_PLACEMENT")]
    pub(super) placement: Option<String>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("output").required(true).args(["out", "dataset", "kafka"])))]
pub(super) struct SimulateArgs {
    /// Write the event log (length-delimited protobuf) here.
    #[arg(long)]
    pub(super) out: Option<PathBuf>,
    /// Write the model's training set (CSV: tick, cell, features, target)
    /// here instead of a log.
    #[arg(long)]
    pub(super) dataset: Option<PathBuf>,
    /// Publish into Kafka (brokers host:port,…): the input topics, keyed
    /// by region, Kafka timestamp = ingest time. Simulated time starts at
    /// the wall clock unless the config file sets `[sim] start_ms`.
    #[arg(long)]
    pub(super) kafka: Option<String>,
    /// With --kafka: records per second (default: as fast as possible).
    #[arg(long, requires = "kafka")]
    pub(super) rate: Option<String>,
    /// With --kafka: create missing topics first.
    #[arg(long, requires = "kafka")]
    pub(super) create_topics: bool,
    /// Minutes of simulated time.
    #[arg(long, default_value = "30")]
    pub(super) minutes: String,
    #[command(flatten)]
    pub(super) sim: SimArgs,
    /// TOML configuration file; its `[sim]` table is the base.
    #[arg(long, env = "PRIMETIME_CONFIG")]
    pub(super) config: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Args)]
pub(super) struct SimArgs {
    /// Seed.
    #[arg(long)]
    pub(super) seed: Option<String>,
    /// Drivers.
    #[arg(long)]
    pub(super) drivers: Option<String>,
    /// Baseline demand sessions per second.
    #[arg(long)]
    pub(super) demand_per_s: Option<String>,
    /// Input partitions.
    #[arg(long)]
    pub(super) partitions: Option<String>,
    /// Probability per record of a duplicate.
    #[arg(long)]
    pub(super) noise_duplicate: Option<String>,
    /// Probability per record of small out-of-orderness.
    #[arg(long)]
    pub(super) noise_out_of_order: Option<String>,
    /// Probability per record of a late delivery.
    #[arg(long)]
    pub(super) noise_late: Option<String>,
    /// Probability per record of a device clock hours to years off.
    #[arg(long)]
    pub(super) noise_bad_clock: Option<String>,
    /// Probability per record of a payload that is not protobuf.
    #[arg(long)]
    pub(super) noise_malformed: Option<String>,
    /// Shortcut: every noise probability at once.
    #[arg(long)]
    pub(super) noise: Option<String>,
}

#[derive(Debug, Args)]
pub(super) struct ReplayArgs {
    /// Event log to price.
    #[arg(long)]
    pub(super) input: PathBuf,
    /// Where to write decisions (JSON lines).
    #[arg(long)]
    pub(super) out: PathBuf,
    /// Cell shard actors [default: number of cores]; results do not depend on it.
    #[arg(long, env = "PRIMETIME_SHARDS")]
    pub(super) shards: Option<String>,
    /// ONNX model: "embedded" (the default: primetime-v1, built into the binary), a file path, or "" for the formula.
    #[arg(long, env = "PRIMETIME_MODEL")]
    pub(super) model: Option<String>,
    /// TOML configuration file.
    #[arg(long, env = "PRIMETIME_CONFIG")]
    pub(super) config: Option<PathBuf>,
    /// Operator controls to apply: the control log as JSON lines of
    /// stamped records (`GET /v1/controls/log`); each applies from the
    /// tick it is stamped with, as it did live.
    #[arg(long)]
    pub(super) controls: Option<PathBuf>,
    /// Load-aware placement of regions on shards: "off" (the default),
    /// "on", or the rebalance period in ticks (on); one instance only.
    #[arg(long, env = "PRIMETIME_PLACEMENT")]
    pub(super) placement: Option<String>,
}

pub(super) fn parse<T: std::str::FromStr>(
    name: &str,
    value: &Option<String>,
    problems: &mut Vec<String>,
) -> Option<T> {
    let v = value.as_deref()?;
    match v.parse() {
        Ok(x) => Some(x),
        Err(_) => {
            problems.push(format!("{name}: cannot parse {v:?}"));
            None
        }
    }
}

pub(super) fn load(
    config: Option<&PathBuf>,
    overrides: Overrides,
    mut problems: Vec<String>,
) -> Result<ServiceConfig, ConfigErrors> {
    match ServiceConfig::load(config.map(PathBuf::as_path), &overrides) {
        Ok(c) if problems.is_empty() => Ok(c),
        Ok(_) => Err(ConfigErrors(problems)),
        Err(e) => {
            problems.extend(e.0);
            Err(ConfigErrors(problems))
        }
    }
}

pub(super) fn serve_config(args: &ServeArgs) -> Result<ServiceConfig, ConfigErrors> {
    let mut problems = Vec::new();
    let overrides = Overrides {
        http_addr: args.http_addr.clone(),
        shards: parse("shards", &args.shards, &mut problems),
        http_workers: parse("http_workers", &args.http_workers, &mut problems),
        sim_speed: parse("sim_speed", &args.sim_speed, &mut problems),
        seed: parse("seed", &args.seed, &mut problems),
        model: args.model.clone(),
        kafka_brokers: args.kafka.clone(),
        kafka_group: args.group.clone(),
        create_topics: args.create_topics,
        redis_url: args.redis.clone(),
        kafka_instance_id: args.instance_id.clone(),
        placement: parse("placement", &args.placement, &mut problems),
    };
    let config = load(args.config.as_ref(), overrides, problems)?;
    let serve_only = config.serve_problems();
    if serve_only.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(serve_only))
    }
}

pub(super) fn apply_sim_args(
    sim: &mut primetime_sim::SimConfig,
    a: &SimArgs,
    problems: &mut Vec<String>,
) {
    if let Some(v) = parse("seed", &a.seed, problems) {
        sim.seed = v;
    }
    if let Some(v) = parse("drivers", &a.drivers, problems) {
        sim.drivers = v;
    }
    if let Some(v) = parse("demand_per_s", &a.demand_per_s, problems) {
        sim.demand_per_s = v;
    }
    if let Some(v) = parse("partitions", &a.partitions, problems) {
        sim.partitions = v;
    }
    if let Some(v) = parse::<f64>("noise", &a.noise, problems) {
        sim.noise.duplicate = v;
        sim.noise.out_of_order = v;
        sim.noise.late = v;
        sim.noise.bad_clock = v;
        sim.noise.malformed = v;
    }
    let n = &mut sim.noise;
    for (name, value, slot) in [
        ("noise_duplicate", &a.noise_duplicate, &mut n.duplicate),
        (
            "noise_out_of_order",
            &a.noise_out_of_order,
            &mut n.out_of_order,
        ),
        ("noise_late", &a.noise_late, &mut n.late),
        ("noise_bad_clock", &a.noise_bad_clock, &mut n.bad_clock),
        ("noise_malformed", &a.noise_malformed, &mut n.malformed),
    ] {
        if let Some(v) = parse(name, value, problems) {
            *slot = v;
        }
    }
}
