//! `primetime-market`: the market benchmark's command line (the thin
//! edge: parse, run, print, write).
//!
//! - `primetime-market [bench] [--short] [--seeds N] …`: the benchmark;
//!   gates first, then targets, then the outcome table; JSON and
//!   `QUALITY.md` written. `--short` (3 seeds, 20 minutes) also checks
//!   determinism and fails (exit 1) when a calibration gate fails.
//! - `primetime-market run --scenario S --policy P --seed N`: one run's
//!   metrics as JSON.
//! - `primetime-market speed`: one 2-hour normal day priced by the model,
//!   on one thread, timed.
//! - `primetime-market dataset --out FILE`: the closed-loop training set
//!   of the model ([`primetime_market::dataset`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use primetime_market::bench::{BenchOptions, BenchReport, bench, run_many};
use primetime_market::metrics::{METRICS, col, measure};
use primetime_market::quality::{Provenance, markdown};
use primetime_market::{PolicyKind, RunSpec, Scenario, Timeline, run};

#[derive(Parser)]
#[command(about = "The closed-loop market benchmark (issue 15)")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    bench: BenchArgs,
}

#[derive(Subcommand)]
enum Command {
    /// The benchmark (the default).
    Bench(BenchArgs),
    /// One run, its metrics as JSON.
    Run {
        #[arg(long, default_value = "normal")]
        scenario: String,
        #[arg(long, default_value = "flat")]
        policy: String,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long)]
        short: bool,
        #[arg(long, default_value_t = 1.0)]
        fixed: f64,
        #[arg(long, default_value = "embedded")]
        model: PathBuf,
    },
    /// The closed-loop training set (CSV for models/train/train.py).
    Dataset {
        #[arg(long)]
        out: PathBuf,
        /// Training seeds per scenario (5 = every behaviour once).
        #[arg(long, default_value_t = 5)]
        seeds: u64,
        /// The current model (behaviours `model` and `explore`).
        #[arg(long, default_value = "embedded")]
        model: PathBuf,
        #[arg(long)]
        threads: Option<usize>,
        #[arg(long)]
        short: bool,
    },
    /// Times one 2-hour normal day priced by the model, on one thread.
    Speed {
        #[arg(long, default_value = "embedded")]
        model: PathBuf,
    },
}

#[derive(Args, Clone)]
struct BenchArgs {
    /// 3 seeds, 20 measured minutes; checks determinism and the gates.
    #[arg(long)]
    short: bool,
    /// Evaluation seeds (default 20; 3 with --short).
    #[arg(long)]
    seeds: Option<u64>,
    /// Worker threads (default: the machine's cores).
    #[arg(long)]
    threads: Option<usize>,
    /// The ONNX model: "embedded" (primetime-v1, built into the binary) or
    /// a file path.
    #[arg(long, default_value = "embedded")]
    model: PathBuf,
    /// Where the JSON report goes (default: services/market/results/full.json
    /// for the full run, target/market/short.json with --short).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Where the generated table goes (default: QUALITY.md for the full
    /// run, target/market/QUALITY-short.md with --short).
    #[arg(long)]
    quality: Option<PathBuf>,
    /// A model card (`models/<version>.card.json`) to record the model's
    /// benchmark outcomes in, under `market_benchmark` (the card is
    /// rewritten with its keys in alphabetical order).
    #[arg(long)]
    card: Option<PathBuf>,
    /// A candidate ONNX model, run beside `--model` on the same runs and
    /// judged by the same targets.
    #[arg(long)]
    candidate: Option<PathBuf>,
    /// The candidate's card, to record its outcomes in.
    #[arg(long, requires = "candidate")]
    candidate_card: Option<PathBuf>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Bench(args)) => run_bench(&args),
        None => run_bench(&cli.bench),
        Some(Command::Run {
            scenario,
            policy,
            seed,
            short,
            fixed,
            model,
        }) => {
            let scenario = Scenario::parse(&scenario).context("unknown scenario")?;
            let policy = PolicyKind::parse(&policy).context("unknown policy")?;
            let timeline = if short {
                Timeline::SHORT
            } else {
                Timeline::FULL
            };
            let mut spec = RunSpec::new(scenario, policy, seed, timeline);
            spec.fixed = fixed;
            if policy == PolicyKind::Model {
                spec.model = Some(load(&model)?);
            }
            let started = Instant::now();
            let outcome = run(&spec)?;
            let secs = started.elapsed().as_secs_f64();
            let mut obj = serde_json::Map::new();
            for (name, v) in METRICS.iter().zip(measure(&outcome)) {
                obj.insert((*name).to_owned(), serde_json::json!(v));
            }
            obj.insert("wall_s".to_owned(), serde_json::json!(secs));
            obj.insert("decisions".to_owned(), serde_json::json!(outcome.decisions));
            println!("{}", serde_json::to_string_pretty(&obj)?);
            Ok(())
        }
        Some(Command::Dataset {
            out,
            seeds,
            model,
            threads,
            short,
        }) => {
            let opts = primetime_market::dataset::DatasetOptions {
                seeds,
                scenarios: Scenario::DAYS.to_vec(),
                timeline: if short {
                    Timeline::SHORT
                } else {
                    Timeline::FULL
                },
                threads: threads.unwrap_or_else(cores),
                model: load(&model)?,
            };
            let started = Instant::now();
            if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let file = std::fs::File::create(&out)
                .with_context(|| format!("creating {}", out.display()))?;
            let (runs, rows) = primetime_market::dataset::write_dataset(&opts, file)?;
            println!(
                "wrote {rows} rows of {runs} closed-loop runs to {} in {:.1} s",
                out.display(),
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Some(Command::Speed { model }) => {
            let mut spec = RunSpec::new(
                Scenario::Normal,
                PolicyKind::Model,
                1,
                Timeline {
                    warmup_ms: 0,
                    measure_ms: 7_200_000,
                    cooldown_ms: 0,
                },
            );
            spec.model = Some(load(&model)?);
            let started = Instant::now();
            let outcome = run(&spec)?;
            println!(
                "one 2-hour normal day (default city, {} drivers), model + guardrails, one thread: {:.2} s ({} decisions)",
                spec_drivers(),
                started.elapsed().as_secs_f64(),
                outcome.decisions
            );
            Ok(())
        }
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn spec_drivers() -> u32 {
    primetime_market::scenario::DRIVER_POOL
}

/// `embedded` (the model the binaries carry) or a model file.
fn load(path: &Path) -> Result<Arc<primetime_model::OnnxModel>> {
    let model = if path == Path::new("embedded") {
        primetime_model::embedded()
    } else {
        primetime_model::load(path)
    };
    Ok(Arc::new(model.with_context(|| {
        format!("loading the model {}", path.display())
    })?))
}

fn run_bench(args: &BenchArgs) -> Result<()> {
    let opts = bench_options(args)?;
    let started = Instant::now();
    let report = bench(&opts)?;
    let wall_s = started.elapsed().as_secs_f64();
    print_verdicts(&report);
    let written = write_results(args, &report, opts.threads, wall_s)?;
    let cards = [
        (&args.card, PolicyKind::Model, &report.targets),
        (
            &args.candidate_card,
            PolicyKind::Candidate,
            &report.candidate_targets,
        ),
    ];
    for (card, policy, targets) in cards {
        if let Some(card) = card {
            record_in_card(card, &report, policy, targets, &written.json)?;
            println!("recorded {} outcomes in {}", policy.name(), card.display());
        }
    }
    println!(
        "{} runs in {wall_s:.1} s on {} threads; wrote {} and {}",
        opts.seeds as usize
            * opts.scenarios.len()
            * (opts.policies.len() + usize::from(opts.candidate.is_some())),
        opts.threads,
        written.json.display(),
        written.quality.display()
    );
    if args.short {
        check_determinism(&opts)?;
        if let Some(g) = report.gates.iter().find(|g| !g.pass) {
            bail!("calibration gate failed: {} ({})", g.name, g.figure);
        }
    }
    Ok(())
}

/// The benchmark's options from the flags: the short version runs fewer
/// seeds and a shorter timeline; every scenario and policy, with the model.
fn bench_options(args: &BenchArgs) -> Result<BenchOptions> {
    let timeline = if args.short {
        Timeline::SHORT
    } else {
        Timeline::FULL
    };
    let seeds = args.seeds.unwrap_or(if args.short { 3 } else { 20 });
    let threads = args.threads.unwrap_or_else(cores);
    Ok(BenchOptions {
        seeds,
        tuning_seeds: if args.short { 2 } else { 5 },
        timeline,
        threads,
        model: Some(load(&args.model)?),
        candidate: args.candidate.as_deref().map(load).transpose()?,
        scenarios: Scenario::ALL.to_vec(),
        policies: PolicyKind::ALL.to_vec(),
    })
}

/// Prints each gate's and target's verdict, and the best fixed multiplier.
fn print_verdicts(report: &BenchReport) {
    println!("calibration gates:");
    for g in &report.gates {
        println!("  {} {}: {}", verdict(g.pass), g.name, g.figure);
    }
    println!("targets (model + guardrails):");
    for t in &report.targets {
        println!("  {} {}: {}", verdict(t.pass), t.name, t.figure);
    }
    if !report.candidate_targets.is_empty() {
        println!("targets (candidate + guardrails):");
        for t in &report.candidate_targets {
            println!("  {} {}: {}", verdict(t.pass), t.name, t.figure);
        }
    }
    println!(
        "best fixed multiplier: {} (grid {:?})",
        report.best_fixed, report.grid
    );
}

/// Where [`write_results`] wrote the report.
struct Written {
    json: PathBuf,
    quality: PathBuf,
}

/// Writes the report as JSON and as the markdown quality table, with its
/// provenance, to the flags' paths or the version's defaults.
fn write_results(
    args: &BenchArgs,
    report: &BenchReport,
    threads: usize,
    wall_s: f64,
) -> Result<Written> {
    let command = if args.short {
        "cargo run --release -p primetime-market -- --short"
    } else {
        "cargo run --release -p primetime-market"
    };
    let json = args.json.clone().unwrap_or_else(|| {
        PathBuf::from(if args.short {
            "target/market/short.json"
        } else {
            "services/market/results/full.json"
        })
    });
    let json_name = json.display().to_string();
    let machine = machine(threads);
    let date = today();
    let table = markdown(
        report,
        &Provenance {
            command,
            machine: &machine,
            date: &date,
            wall_s,
            json: &json_name,
        },
    );
    write(&json, &serde_json::to_string_pretty(report)?)?;
    let quality = args.quality.clone().unwrap_or_else(|| {
        if args.short {
            PathBuf::from("target/market/QUALITY-short.md")
        } else {
            PathBuf::from("QUALITY.md")
        }
    });
    write(&quality, &table)?;
    Ok(Written { json, quality })
}

/// Writes the model's benchmark outcomes into its card: every target's
/// verdict and, per scenario, the model's mean outcomes (the full table is
/// in the JSON report the card names).
fn record_in_card(
    card: &Path,
    report: &BenchReport,
    policy: PolicyKind,
    targets: &[primetime_market::bench::Check],
    json: &Path,
) -> Result<()> {
    let text =
        std::fs::read_to_string(card).with_context(|| format!("reading {}", card.display()))?;
    let mut value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", card.display()))?;
    let shown = [
        "fulfilment_requests",
        "completed",
        "median_eta_min",
        "p90_eta_min",
        "mean_multiplier_paid",
        "reversals_per_cell_hour",
        "peak_fulfilment",
        "spike_p90_eta_min",
    ];
    let mut scenarios = serde_json::Map::new();
    for s in Scenario::ALL {
        let key = format!("{}/{}", s.name(), policy.name());
        if let Some(means) = report.means.get(&key) {
            let m: serde_json::Map<String, serde_json::Value> = shown
                .iter()
                .map(|name| ((*name).to_owned(), serde_json::json!(means[col(name)])))
                .collect();
            scenarios.insert(s.name().to_owned(), serde_json::Value::Object(m));
        }
    }
    let passed = targets.iter().filter(|t| t.pass).count();
    let section = serde_json::json!({
        "command": "cargo run --release -p primetime-market -- --model M [--candidate C] --card M.card.json [--candidate-card C.card.json]",
        "policy": policy.name(),
        "date": today(),
        "seeds": report.seeds,
        "report": json.display().to_string(),
        "targets_passed": format!("{passed} of {}", targets.len()),
        "targets": targets,
        "model_means": scenarios,
    });
    let obj = value
        .as_object_mut()
        .context("the card is not a JSON object")?;
    obj.insert("market_benchmark".to_owned(), section);
    write(card, &(serde_json::to_string_pretty(&value)? + "\n"))
}

/// The same runs on 1 and on 2 threads, with 1 and 7 engine shards, give
/// the same metrics.
fn check_determinism(opts: &BenchOptions) -> Result<()> {
    let mut specs = Vec::new();
    for shards in [1, 7] {
        let mut spec = RunSpec::new(Scenario::Stadium, PolicyKind::Model, 1, opts.timeline);
        spec.model = opts.model.clone();
        spec.shards = shards;
        specs.push(spec);
    }
    let a = run_many(&specs, 1)?;
    let b = run_many(&specs, 2)?;
    if a != b || a[0] != a[1] {
        bail!("determinism check failed: {a:?} vs {b:?}");
    }
    println!("determinism: identical metrics for 1 and 7 shards, 1 and 2 threads");
    Ok(())
}

fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "FAIL" }
}

fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// The CPU model and core count, for the report.
fn machine(threads: usize) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{cores} cores ({cpu}), {threads} threads")
}

/// Today's UTC date (report metadata only; no result depends on it).
fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}
