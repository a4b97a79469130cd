//! `replay-cores`: does `replay` grow with cores? (issue 19)
//!
//! Writes one simulated event log, then prices it with `primetime replay`
//! pinned to both cores (`taskset -c 0,1`) and to one (`taskset -c 0`),
//! alternating, `--runs` times each; the median run of each counts. For
//! each: the pipeline's events/s (what `replay` prints: start to the last
//! tick), the process's CPU time and the cores it used (CPU time over wall
//! time, the partition pre-scan included). The decisions must be
//! byte-identical on one and two cores. Goals: >= 2.0 M events/s on two
//! cores, and >= 1.6x the one-core rate.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::Context as _;

use crate::results::{Figure, RunResult};
use crate::util::{verdict, with_load};

#[derive(clap::Args)]
pub struct ReplayCoresArgs {
    /// Simulated minutes in the log.
    #[arg(long, default_value_t = 34)]
    pub minutes: u32,
    /// Simulated drivers.
    #[arg(long, default_value_t = 20_000)]
    pub drivers: u32,
    /// Demand sessions per simulated second.
    #[arg(long, default_value_t = 40.0)]
    pub demand_per_s: f64,
    /// Runs per core count (the median counts).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
}

const GOAL_RATE: f64 = 2_000_000.0;
const GOAL_SPEEDUP: f64 = 1.6;

/// One replay run.
#[derive(Debug, Clone, Copy)]
struct Run {
    events_per_s: f64,
    wall_s: f64,
    cpu_s: f64,
}

impl Run {
    fn cores(&self) -> f64 {
        self.cpu_s / self.wall_s.max(1e-9)
    }
}

pub fn run(a: &ReplayCoresArgs) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    anyhow::ensure!(
        cores >= 2,
        "replay-cores needs 2 cores, this machine has {cores}"
    );
    let bin = primetime_e2e::service_binary();
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("events.log");
    let t = Instant::now();
    let out = Command::new(&bin)
        .args(["simulate", "--out"])
        .arg(&log)
        .args(["--minutes", &a.minutes.to_string()])
        .args(["--drivers", &a.drivers.to_string()])
        .args(["--demand-per-s", &a.demand_per_s.to_string()])
        .output()
        .context("run primetime simulate")?;
    anyhow::ensure!(
        out.status.success(),
        "simulate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "replay-cores: {} ({:.1} s)",
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .chain(String::from_utf8_lossy(&out.stdout).lines())
            .find(|l| l.starts_with("wrote "))
            .unwrap_or("log written")
            .trim(),
        t.elapsed().as_secs_f64()
    );
    let mut two = Vec::new();
    let mut one = Vec::new();
    let ((), load) = with_load(|| ());
    let mut records = 0;
    for i in 0..a.runs.max(1) {
        for (cpus, runs) in [("0,1", &mut two), ("0", &mut one)] {
            let (run, n) = replay(&bin, &log, &dir.path().join(format!("{cpus}.jsonl")), cpus)?;
            println!(
                "  run {i}, cpus {cpus}: {:.0} events/s, wall {:.2} s, cpu {:.2} s ({:.2} cores)",
                run.events_per_s,
                run.wall_s,
                run.cpu_s,
                run.cores()
            );
            records = n;
            runs.push(run);
        }
    }
    let identical =
        std::fs::read(dir.path().join("0,1.jsonl"))? == std::fs::read(dir.path().join("0.jsonl"))?;
    let load = crate::results::LoadAvg {
        before: load.before,
        after: crate::util::load_1m(),
    };
    report(a, records, &median(two), &median(one), identical, load)
}

/// Runs `primetime replay` pinned to `cpus`; the run and the records read.
fn replay(bin: &Path, log: &Path, out: &Path, cpus: &str) -> anyhow::Result<(Run, u64)> {
    let before = children_cpu_s();
    let t = Instant::now();
    let output = Command::new("taskset")
        .args(["-c", cpus])
        .arg(bin)
        .args(["replay", "--input"])
        .arg(log)
        .arg("--out")
        .arg(out)
        .output()
        .context("run taskset (util-linux) with primetime replay")?;
    let wall_s = t.elapsed().as_secs_f64();
    let cpu_s = children_cpu_s() - before;
    // The summary line goes to stderr, with the logs.
    let stdout = String::from_utf8_lossy(&output.stdout) + String::from_utf8_lossy(&output.stderr);
    anyhow::ensure!(
        output.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (records, events_per_s) = parse_replayed(&stdout)
        .with_context(|| format!("replay did not print its rate: {stdout}"))?;
    Ok((
        Run {
            events_per_s,
            wall_s,
            cpu_s,
        },
        records,
    ))
}

/// `replayed N records (...) in S s = R events/s; ...` → (N, R).
fn parse_replayed(stdout: &str) -> Option<(u64, f64)> {
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("replayed "))?;
    let records = line.split_whitespace().nth(1)?.parse().ok()?;
    let rate = line
        .split(" = ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((records, rate))
}

/// User + system CPU seconds of every waited-for child so far.
fn children_cpu_s() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage, RUSAGE_CHILDREN is a valid who.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) } != 0 {
        return f64::NAN;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

/// The run with the median rate.
fn median(mut runs: Vec<Run>) -> Run {
    runs.sort_by(|a, b| a.events_per_s.total_cmp(&b.events_per_s));
    runs[runs.len() / 2]
}

fn report(
    a: &ReplayCoresArgs,
    records: u64,
    two: &Run,
    one: &Run,
    identical: bool,
    load: crate::results::LoadAvg,
) -> anyhow::Result<()> {
    let speedup = two.events_per_s / one.events_per_s.max(1e-9);
    let ok_rate = two.events_per_s >= GOAL_RATE;
    let ok_speedup = speedup >= GOAL_SPEEDUP;
    println!(
        "replay-cores: 2 cores {:.0} events/s ({:.2} cores used), 1 core {:.0} events/s \
         ({:.2} cores used): {speedup:.2}x from the second core -> {}; 2-core rate -> {}; \
         decisions identical: {identical}",
        two.events_per_s,
        two.cores(),
        one.events_per_s,
        one.cores(),
        verdict(ok_speedup),
        verdict(ok_rate)
    );
    let log = format!(
        "{records} events, {} simulated minutes of {} drivers and {} demand sessions/s",
        a.minutes, a.drivers, a.demand_per_s
    );
    let mut r = RunResult::new(
        "replay-cores",
        format!(
            "cargo run --release -p primetime-load-tests -- replay-cores --runs {}",
            a.runs
        ),
    );
    r.load_1m = Some(load);
    r.figures = vec![
        Figure::goal(
            format!(
                "replay on 2 cores (taskset -c 0,1), {log}: median of {} runs",
                a.runs
            ),
            two.events_per_s.round(),
            "events/s",
            ">= 2,000,000 events/s",
            ok_rate,
        ),
        Figure::info("replay on 2 cores: CPU used", round2(two.cores()), "cores"),
        Figure::info(
            "replay on 1 core (taskset -c 0), same log",
            one.events_per_s.round(),
            "events/s",
        ),
        Figure::info("replay on 1 core: CPU used", round2(one.cores()), "cores"),
        Figure::goal(
            "replay: rate from the second core (2 cores / 1 core)",
            round2(speedup),
            "x",
            ">= 1.6x",
            ok_speedup,
        ),
        Figure::goal(
            "replay: decisions on 1 and 2 cores byte-identical",
            f64::from(u8::from(identical)),
            "1 = yes",
            "1",
            identical,
        ),
    ];
    r.note = Some(
        "events/s is replay's own figure (pipeline start to the last tick); cores = the \
         process's CPU time over its wall time, the partition pre-scan included"
            .to_owned(),
    );
    r.write()?;
    anyhow::ensure!(identical, "decisions differ between 1 and 2 cores");
    Ok(())
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_replays_summary_line() {
        let out = "x\nreplayed 6045394 records (6045394 accepted, rejected: none) in 3.02 s = \
                   2001229 events/s; 241 ticks, 27445 decisions\n";
        assert_eq!(parse_replayed(out), Some((6_045_394, 2_001_229.0)));
        assert_eq!(parse_replayed("nothing"), None);
    }
}
