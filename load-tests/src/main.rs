//! `primetime-load`: load scenarios against the real `primetime` binary.
//! Each scenario states its goal, prints the measured figure with PASS or
//! FAIL, and writes its figures to `load-tests/results/<scenario>.json`
//! (what BENCHMARKS.md is updated from).
//!
//! Run in release: `cargo run --release -p primetime-load-tests -- <scenario>`.
//!
//! - `firehose`: Kafka in, prices out. A simulated backlog of millions of
//!   records sits in the input topics; the service drains it as fast as it
//!   can. Goal: ≥ 400 k events/s sustained on this 2-core machine. The
//!   backlog is an unbounded overload (far more than 3× what the service
//!   takes per second is available at once), so the peak resident memory
//!   while draining is the memory under overload: it must stay bounded
//!   (goal < 1 GiB) — backpressure pauses the partitions instead of
//!   buffering.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use primetime_e2e::{Broker, Service, repo_root, service_binary, unique};

#[derive(Parser)]
#[command(name = "primetime-load", about = "primetime load scenarios")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Kafka firehose: drain a simulated backlog; events/s and peak RSS.
    Firehose(FirehoseArgs),
    /// Overload: publish into Kafka faster than the running service takes
    /// it; resident memory must stay flat while the backlog grows.
    Overload(FirehoseArgs),
    /// Scale: 3 M active cells — time per tick (ONNX model, guardrails,
    /// commit, 2 threads) and resident memory per active cell.
    Scale,
}

#[derive(clap::Args)]
struct FirehoseArgs {
    /// Simulated minutes in the backlog.
    #[arg(long, default_value_t = 10)]
    minutes: u32,
    /// Simulated drivers (volume knob).
    #[arg(long, default_value_t = 60_000)]
    drivers: u32,
    /// Simulated demand sessions per second (volume knob).
    #[arg(long, default_value_t = 1_200.0)]
    demand_per_s: f64,
    /// Partitions per input topic.
    #[arg(long, default_value_t = 8)]
    partitions: u32,
    /// Goal, events per second.
    #[arg(long, default_value_t = 400_000.0)]
    goal: f64,
    /// Goal, peak resident memory of the service in MiB.
    #[arg(long, default_value_t = 1024.0)]
    max_rss_mib: f64,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.scenario {
        Scenario::Firehose(a) => firehose(&a),
        Scenario::Overload(a) => overload(&a),
        Scenario::Scale => scale(),
    }
}

/// A service config with unique topics for a scenario; returns the topic
/// prefix and the file.
fn write_config(
    broker: &Broker,
    dir: &std::path::Path,
    a: &FirehoseArgs,
    name: &str,
) -> anyhow::Result<(String, PathBuf)> {
    let prefix = unique(name);
    let start_ms = clock::now_ms() - i64::from(a.minutes) * 60_000 - 60_000;
    let config = dir.join("primetime.toml");
    std::fs::write(
        &config,
        format!(
            r#"[kafka]
brokers = "{brokers}"
group_id = "{prefix}"
input_partitions = {partitions}
idle_timeout_ms = 3000
session_timeout_ms = 6000
[kafka.topics]
driver_locations = "{prefix}.drivers"
demand = "{prefix}.demand"
prices = "{prefix}.prices"
dlq = "{prefix}.dlq"
cell_stats = "{prefix}.cell-stats"
[kafka.client]
# noida-db answers fetches without honouring fetch.max.bytes (a 3-minute
# backlog came back as one 125 MB response); real Kafka brokers do.
"receive.message.max.bytes" = "1000000000"
[sim]
start_ms = {start_ms}
drivers = {drivers}
demand_per_s = {demand}
"#,
            brokers = broker.addr,
            partitions = a.partitions,
            drivers = a.drivers,
            demand = a.demand_per_s,
        ),
    )?;
    Ok((prefix, config))
}

/// Runs `primetime simulate --kafka` on `config`; returns records published.
fn publish(broker: &Broker, config: &std::path::Path, minutes: u32) -> anyhow::Result<u64> {
    let out = std::process::Command::new(service_binary())
        .args(["simulate", "--config"])
        .arg(config)
        .args(["--kafka", &broker.addr, "--create-topics", "--minutes"])
        .arg(minutes.to_string())
        .current_dir(repo_root())
        .env("PRIMETIME_LOG", "warn")
        .output()
        .context("run primetime simulate --kafka")?;
    anyhow::ensure!(
        out.status.success(),
        "simulate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr
        .split_whitespace()
        .skip_while(|w| *w != "published")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .context("simulate did not say how many records it published")
}

fn overload(a: &FirehoseArgs) -> anyhow::Result<()> {
    println!(
        "overload: goal: resident memory stays bounded (< {:.0} MiB, and not growing with the \
         backlog) while Kafka input arrives faster than the service takes it",
        a.max_rss_mib
    );
    let broker = Broker::start();
    let dir = tempfile::tempdir()?;
    let (_, config) = write_config(&broker, dir.path(), a, "overload")?;
    publish(&broker, &config, 0)?; // creates the topics
    let log = dir.path().join("service.log");
    let service = Service::start(&config, &log, &[]);
    let pid = service.child.id();
    let all = 2 * i64::from(a.partitions);
    let joined = primetime_e2e::eventually(Duration::from_secs(60), || {
        let (status, body) = service.get("/v1/status")?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (status == 200 && v["kafka_assigned_partitions"].as_i64() == Some(all)).then_some(())
    });
    anyhow::ensure!(
        joined.is_some(),
        "service did not join; log {}",
        log.display()
    );
    let (minutes, broker_addr, cfg) = (a.minutes, broker.addr.clone(), config.clone());
    let t0 = Instant::now();
    let publisher = std::thread::spawn(move || {
        let b = Broker::external(&broker_addr);
        let n = publish(&b, &cfg, minutes);
        (n, t0.elapsed().as_secs_f64())
    });
    let mut samples: Vec<(f64, u64, u64)> = Vec::new();
    while !publisher.is_finished() {
        std::thread::sleep(Duration::from_millis(500));
        let n = processed(&service).unwrap_or(0);
        samples.push((t0.elapsed().as_secs_f64(), n, rss_bytes(pid).unwrap_or(0)));
    }
    let (published, publish_secs) = publisher
        .join()
        .map_err(|_| anyhow::anyhow!("publisher panicked"))?;
    let published = published?;
    let taken = samples.last().map_or(0, |s| s.1);
    let offered = published as f64 / publish_secs;
    let drained = taken as f64 / publish_secs;
    let half = samples.len() / 2;
    let peak =
        |s: &[(f64, u64, u64)]| s.iter().map(|x| x.2).max().unwrap_or(0) as f64 / 1_048_576.0;
    let (first_half, second_half) = (peak(&samples[..half]), peak(&samples[half..]));
    let peak_all = first_half.max(second_half);
    let backlog = published.saturating_sub(taken);
    let ok = peak_all < a.max_rss_mib && second_half < first_half * 1.25 + 64.0;
    println!(
        "overload: offered {offered:.0} records/s for {publish_secs:.1} s, the service took \
         {drained:.0}/s ({:.1}x overload); backlog left in Kafka {backlog} records",
        offered / drained.max(1.0)
    );
    println!(
        "overload: peak RSS {first_half:.0} MiB in the first half, {second_half:.0} MiB in the \
         second half -> {}",
        verdict(ok)
    );
    let path = write_result(
        "overload",
        &serde_json::json!({
            "scenario": "overload",
            "date": today_utc(),
            "machine": machine(),
            "command": format!("cargo run --release -p primetime-load-tests -- overload --minutes {}", a.minutes),
            "offered_records_per_s": offered.round(),
            "taken_records_per_s": drained.round(),
            "overload_factor": (offered / drained.max(1.0) * 10.0).round() / 10.0,
            "backlog_records": backlog,
            "peak_rss_mib_first_half": first_half.round(),
            "peak_rss_mib_second_half": second_half.round(),
            "pass": ok,
        }),
    )?;
    println!("wrote {}", path.display());
    Ok(())
}

/// Runs the `tick_3m` example (the service's shard code on 3 M cells) and
/// samples its memory. Goals: a steady tick < 1 s; resident memory per
/// active cell < 1 KiB (the state kept between ticks: windows, summaries,
/// neighbour slots, the model; measured right after the cells are built,
/// and at the peak, which adds a tick's feature rows and decisions).
fn scale() -> anyhow::Result<()> {
    use std::io::BufRead as _;
    println!(
        "scale: goal: a tick of 3 M active cells < 1 s on 2 threads; resident memory < 1 KiB per active cell"
    );
    let status =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "build",
                "--quiet",
                "--release",
                "-p",
                "primetime",
                "--example",
                "tick_3m",
            ])
            .current_dir(repo_root())
            .status()
            .context("cargo build --example tick_3m")?;
    anyhow::ensure!(status.success(), "building the tick_3m example failed");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target"));
    let mut child = std::process::Command::new(target.join("release/examples/tick_3m"))
        .current_dir(repo_root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("start tick_3m")?;
    let pid = child.id();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = {
        let peak = std::sync::Arc::clone(&peak);
        std::thread::spawn(move || {
            while let Some(rss) = rss_bytes(pid) {
                peak.fetch_max(rss, std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let stderr = child.stderr.take().context("stderr")?;
    let mut cells = 0u64;
    let mut state_rss = 0u64;
    for line in std::io::BufReader::new(stderr).lines() {
        let line = line?;
        if let Some(rest) = line.strip_prefix("built ") {
            cells = rest
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            state_rss = rss_bytes(pid).unwrap_or(0);
            break;
        }
    }
    let stdout = child.stdout.take().context("stdout")?;
    let mut ticks: Vec<f64> = Vec::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        println!("  {line}");
        if let Some(secs) = line
            .split(" priced in ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|x| x.parse::<f64>().ok())
        {
            ticks.push(secs);
        }
    }
    let status = child.wait()?;
    let _ = sampler.join();
    anyhow::ensure!(
        status.success() && cells > 0 && !ticks.is_empty(),
        "tick_3m failed"
    );
    let mut steady: Vec<f64> = ticks.iter().skip(1).copied().collect();
    steady.sort_by(f64::total_cmp);
    let steady_median = steady.get(steady.len() / 2).copied().unwrap_or(ticks[0]);
    let per_cell_state = state_rss as f64 / cells as f64;
    let per_cell_peak = peak.load(std::sync::atomic::Ordering::Relaxed) as f64 / cells as f64;
    let ok_tick = steady_median < 1.0;
    let ok_mem = per_cell_state < 1024.0;
    println!(
        "scale: steady tick {steady_median:.3} s (first {:.3} s) for {cells} cells -> {}",
        ticks[0],
        verdict(ok_tick)
    );
    println!(
        "scale: {per_cell_state:.0} bytes resident per active cell between ticks, \
         {per_cell_peak:.0} at the peak of a tick -> {}",
        verdict(ok_mem)
    );
    let path = write_result(
        "scale",
        &serde_json::json!({
            "scenario": "scale",
            "date": today_utc(),
            "machine": machine(),
            "command": "cargo run --release -p primetime-load-tests -- scale",
            "active_cells": cells,
            "tick_seconds": ticks,
            "steady_tick_seconds": steady_median,
            "bytes_per_cell_between_ticks": per_cell_state.round(),
            "bytes_per_cell_peak": per_cell_peak.round(),
            "pass_tick": ok_tick,
            "pass_memory": ok_mem,
        }),
    )?;
    println!("wrote {}", path.display());
    Ok(())
}

/// Resident set size of a process, bytes.
fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU time (user + system) a process used so far, seconds (clock ticks of
/// 1/100 s, Linux's USER_HZ).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the line.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Records the service has taken (accepted + rejected).
fn processed(service: &Service) -> Option<u64> {
    let (status, body) = service.get("/v1/status")?;
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let accepted = v["events_accepted"].as_u64()?;
    let rejected: u64 = v["rejected"]
        .as_object()?
        .values()
        .filter_map(serde_json::Value::as_u64)
        .sum();
    Some(accepted + rejected)
}

fn write_result(name: &str, value: &serde_json::Value) -> anyhow::Result<PathBuf> {
    let dir = repo_root().join("load-tests/results");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(value)? + "\n")?;
    Ok(path)
}

fn machine() -> serde_json::Value {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0);
    serde_json::json!({ "cores": cores, "memory_gib": (mem_kib as f64 / 1_048_576.0).round() })
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}

fn firehose(a: &FirehoseArgs) -> anyhow::Result<()> {
    println!(
        "firehose: goal >= {:.0} events/s sustained through the service (Kafka in, prices out), \
         peak RSS < {:.0} MiB while draining an unbounded backlog",
        a.goal, a.max_rss_mib
    );
    let broker = Broker::start();
    let dir = tempfile::tempdir()?;
    let (prefix, config) = write_config(&broker, dir.path(), a, "firehose")?;
    println!(
        "publishing the backlog ({} simulated minutes) ...",
        a.minutes
    );
    let started = Instant::now();
    let published = publish(&broker, &config, a.minutes)?;
    println!(
        "published {published} records in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Baseline: how fast this broker hands the backlog to a bare consumer
    // on this machine (no decoding, no pricing) — the ceiling.
    let t = Instant::now();
    let mut bare = 0u64;
    for topic in ["drivers", "demand"] {
        bare += primetime_e2e::read_topic(&broker.addr, &format!("{prefix}.{topic}")).len() as u64;
    }
    let bare_rate = bare as f64 / t.elapsed().as_secs_f64();
    println!("baseline: a bare rdkafka consumer reads {bare_rate:.0} records/s from this broker");

    let log = dir.path().join("service.log");
    let service = Service::start(&config, &log, &[]);
    let pid = service.child.id();
    let t0 = Instant::now();
    let mut samples: Vec<(f64, u64, f64)> = Vec::new();
    let mut peak_rss = 0u64;
    let deadline = Duration::from_secs(600);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        peak_rss = peak_rss.max(rss_bytes(pid).unwrap_or(0));
        if let Some(n) = processed(&service) {
            samples.push((
                t0.elapsed().as_secs_f64(),
                n,
                cpu_seconds(pid).unwrap_or(0.0),
            ));
            if samples.len() % 10 == 0 {
                println!("  {:>5.1} s: {n} records", t0.elapsed().as_secs_f64());
            }
            if n >= published {
                break;
            }
        }
        if t0.elapsed() >= deadline {
            let kept = dir.keep();
            anyhow::bail!(
                "backlog not drained in {deadline:?}; service log in {}",
                kept.display()
            );
        }
    }
    // Sustained: from the first sample with progress to the last, so the
    // start-up (model load, group join) is not counted.
    let first = samples
        .iter()
        .find(|(_, n, _)| *n > 0)
        .copied()
        .context("no progress")?;
    let last = *samples.last().context("no samples")?;
    let rate = (last.1 - first.1) as f64 / (last.0 - first.0).max(1e-9);
    let rss_mib = peak_rss as f64 / 1_048_576.0;
    // The service's own cost, whatever the broker beside it takes.
    let cpu = (last.2 - first.2).max(1e-9);
    let per_cpu_second = (last.1 - first.1) as f64 / cpu;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let ok_rate = rate >= a.goal;
    let ok_rss = rss_mib < a.max_rss_mib;
    println!(
        "firehose: {rate:.0} events/s sustained over {:.1} s ({} records) -> {}",
        last.0 - first.0,
        last.1 - first.1,
        verdict(ok_rate)
    );
    println!(
        "firehose: the service used {:.2} cores for it: {per_cpu_second:.0} events per CPU-second \
         (the broker on the same machine took the rest)",
        cpu / (last.0 - first.0).max(1e-9)
    );
    println!(
        "firehose: peak RSS {rss_mib:.0} MiB while draining {published} records -> {}",
        verdict(ok_rss)
    );
    let path = write_result(
        "firehose",
        &serde_json::json!({
            "scenario": "firehose",
            "date": today_utc(),
            "machine": machine(),
            "command": "cargo run --release -p primetime-load-tests -- firehose",
            "published_records": published,
            "events_per_s": rate.round(),
            "bare_consumer_records_per_s": bare_rate.round(),
            "service_cores_used": (cpu / (last.0 - first.0).max(1e-9) * 100.0).round() / 100.0,
            "events_per_service_cpu_second": per_cpu_second.round(),
            "projected_events_per_s_on_all_cores": (per_cpu_second * cores).round(),
            "goal_events_per_s": a.goal,
            "pass_rate": ok_rate,
            "peak_rss_mib": rss_mib.round(),
            "goal_rss_mib": a.max_rss_mib,
            "pass_rss": ok_rss,
        }),
    )?;
    println!("wrote {}", path.display());
    drop(service);
    Ok(())
}

/// Today's date (UTC) as YYYY-MM-DD.
fn today_utc() -> String {
    let days = clock::now_ms().div_euclid(86_400_000);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}")
}

mod clock {
    /// Wall clock, ms since the Unix epoch.
    pub fn now_ms() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }
}
