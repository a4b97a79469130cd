//! Command line: `serve` (default), `simulate`, `replay`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{ConfigErrors, EXIT_USAGE, Overrides, ServiceConfig};

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

/// Values are taken as text and parsed after all are read, so that every
/// invalid one is reported at once.
#[derive(Debug, Clone, Default, Args)]
struct ServeArgs {
    /// TOML configuration file (unknown keys are errors).
    #[arg(long, env = "PRIMETIME_CONFIG")]
    config: Option<PathBuf>,
    /// HTTP listen address [default: 127.0.0.1:8080].
    #[arg(long, env = "PRIMETIME_HTTP_ADDR")]
    http_addr: Option<String>,
    /// Cell shard actors [default: number of cores].
    #[arg(long, env = "PRIMETIME_SHARDS")]
    shards: Option<String>,
    /// HTTP worker threads [default: cores - 1, at least 2].
    #[arg(long, env = "PRIMETIME_HTTP_WORKERS")]
    http_workers: Option<String>,
    /// Embedded simulator speed, sim seconds per wall second [default: 1].
    #[arg(long, env = "PRIMETIME_SIM_SPEED")]
    sim_speed: Option<String>,
    /// Embedded simulator seed [default: 7].
    #[arg(long, env = "PRIMETIME_SEED")]
    seed: Option<String>,
    /// ONNX model: "embedded" (the default: primetime-v1, built into the binary), a file path, or "" for the formula.
    #[arg(long, env = "PRIMETIME_MODEL")]
    model: Option<String>,
    /// Kafka brokers (host:port,…): consume the input topics, publish
    /// prices and dead letters there instead of running the simulator.
    #[arg(long, env = "PRIMETIME_KAFKA")]
    kafka: Option<String>,
    /// Kafka consumer group [default: primetime].
    #[arg(long, env = "PRIMETIME_KAFKA_GROUP")]
    group: Option<String>,
    /// Create missing Kafka topics at start (prices compacted).
    #[arg(long, env = "PRIMETIME_CREATE_TOPICS")]
    create_topics: bool,
    /// Static Kafka group membership id (kafka.instance_id): a restart
    /// with the same id takes its partitions back without a rebalance.
    #[arg(long, env = "PRIMETIME_KAFKA_INSTANCE_ID")]
    instance_id: Option<String>,
    /// Redis URL (redis://host:port/db), with --kafka: the shared price
    /// table and snapshots for fast restarts.
    #[arg(long, env = "PRIMETIME_REDIS")]
    redis: Option<String>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("output").required(true).args(["out", "dataset", "kafka"])))]
struct SimulateArgs {
    /// Write the event log (length-delimited protobuf) here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write the model's training set (CSV: tick, cell, features, target)
    /// here instead of a log.
    #[arg(long)]
    dataset: Option<PathBuf>,
    /// Publish into Kafka (brokers host:port,…): the input topics, keyed
    /// by region, Kafka timestamp = ingest time. Simulated time starts at
    /// the wall clock unless the config file sets `[sim] start_ms`.
    #[arg(long)]
    kafka: Option<String>,
    /// With --kafka: records per second (default: as fast as possible).
    #[arg(long, requires = "kafka")]
    rate: Option<String>,
    /// With --kafka: create missing topics first.
    #[arg(long, requires = "kafka")]
    create_topics: bool,
    /// Minutes of simulated time.
    #[arg(long, default_value = "30")]
    minutes: String,
    #[command(flatten)]
    sim: SimArgs,
    /// TOML configuration file; its `[sim]` table is the base.
    #[arg(long, env = "PRIMETIME_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Args)]
struct SimArgs {
    /// Seed.
    #[arg(long)]
    seed: Option<String>,
    /// Drivers.
    #[arg(long)]
    drivers: Option<String>,
    /// Baseline demand sessions per second.
    #[arg(long)]
    demand_per_s: Option<String>,
    /// Input partitions.
    #[arg(long)]
    partitions: Option<String>,
    /// Probability per record of a duplicate.
    #[arg(long)]
    noise_duplicate: Option<String>,
    /// Probability per record of small out-of-orderness.
    #[arg(long)]
    noise_out_of_order: Option<String>,
    /// Probability per record of a late delivery.
    #[arg(long)]
    noise_late: Option<String>,
    /// Probability per record of a device clock hours to years off.
    #[arg(long)]
    noise_bad_clock: Option<String>,
    /// Probability per record of a payload that is not protobuf.
    #[arg(long)]
    noise_malformed: Option<String>,
    /// Shortcut: every noise probability at once.
    #[arg(long)]
    noise: Option<String>,
}

#[derive(Debug, Args)]
struct ReplayArgs {
    /// Event log to price.
    #[arg(long)]
    input: PathBuf,
    /// Where to write decisions (JSON lines).
    #[arg(long)]
    out: PathBuf,
    /// Cell shard actors [default: number of cores]; results do not depend on it.
    #[arg(long, env = "PRIMETIME_SHARDS")]
    shards: Option<String>,
    /// ONNX model: "embedded" (the default: primetime-v1, built into the binary), a file path, or "" for the formula.
    #[arg(long, env = "PRIMETIME_MODEL")]
    model: Option<String>,
    /// TOML configuration file.
    #[arg(long, env = "PRIMETIME_CONFIG")]
    config: Option<PathBuf>,
}

fn parse<T: std::str::FromStr>(
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

fn load(
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

fn serve_config(args: &ServeArgs) -> Result<ServiceConfig, ConfigErrors> {
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
    };
    load(args.config.as_ref(), overrides, problems)
}

fn apply_sim_args(sim: &mut primetime_sim::SimConfig, a: &SimArgs, problems: &mut Vec<String>) {
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
        Some(Command::Simulate(args)) => run_simulate(&args),
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

fn run_simulate(args: &SimulateArgs) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    let minutes: Option<u32> = parse("minutes", &Some(args.minutes.clone()), &mut problems);
    let rate: Option<f64> = parse("rate", &args.rate, &mut problems);
    if rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        problems.push("rate: must be > 0 records per second".to_owned());
    }
    let base = load(
        args.config.as_ref(),
        Overrides {
            kafka_brokers: args.kafka.clone(),
            create_topics: args.create_topics,
            ..Overrides::default()
        },
        Vec::new(),
    )?;
    let mut sim = base.sim;
    apply_sim_args(&mut sim, &args.sim, &mut problems);
    if let Err(e) = primetime_sim::Simulator::new(sim.clone()) {
        problems.extend(crate::config::sim_problems(&e));
    }
    let Some(minutes) = minutes.filter(|_| problems.is_empty()) else {
        return Err(ConfigErrors(problems).into());
    };
    let started = std::time::Instant::now();
    if args.kafka.is_some() {
        if base.kafka.create_topics {
            crate::kafka::create_topics(&base.kafka)?;
        }
        // Live input starts now unless the config pins the simulated clock
        // (logs and datasets keep the fixed default start: reproducible).
        if sim.start_ms == primetime_sim::SimConfig::default().start_ms {
            sim.start_ms = crate::wall_clock::wall_clock_ms();
        }
        let s = crate::sim_publish::publish_simulation(&base.kafka, sim, minutes, rate)?;
        eprintln!(
            "published {} records ({minutes} simulated minutes) to {} in {:.1} s ({:.0} records/s)",
            s.records,
            base.kafka.brokers,
            s.seconds,
            s.records as f64 / s.seconds.max(1e-9)
        );
        return Ok(());
    }
    if let Some(path) = &args.dataset {
        let file = std::fs::File::create(path)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
        let s = crate::dataset::write_dataset(sim, &base.core, minutes, file)?;
        eprintln!(
            "wrote {} dataset rows ({} ticks, {} records, {minutes} simulated minutes) to {} in {:.1} s",
            s.rows,
            s.ticks,
            s.records,
            path.display(),
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    let Some(out) = &args.out else {
        return Err(ConfigErrors(vec!["simulate: --out or --dataset is required".into()]).into());
    };
    let file = std::fs::File::create(out)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", out.display()))?;
    let records = primetime_sim::write_log(sim, minutes, std::io::BufWriter::new(file))?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "wrote {records} records ({minutes} simulated minutes) to {} in {secs:.1} s",
        out.display()
    );
    Ok(())
}

fn run_replay(args: &ReplayArgs) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    let overrides = Overrides {
        shards: parse("shards", &args.shards, &mut problems),
        model: args.model.clone(),
        ..Overrides::default()
    };
    let config = load(args.config.as_ref(), overrides, problems)?;
    let summary = crate::replay::replay(&config, &args.input, &args.out)?;
    eprintln!("{summary}");
    Ok(())
}
