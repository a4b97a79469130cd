//! `scale`: 3 M active cells (`--cells N` for more: issue 19 asks 10 M).
//! Runs the `tick_3m` example (the service's shard code, 2 shards on 2
//! threads, ONNX model) and samples its memory. Goals: a steady tick < 1 s;
//! resident memory per active cell < 1 KiB at 3 M, < 500 B from 10 M on
//! (the state kept between ticks: windows, summaries, neighbour slots, the
//! model; measured right after the cells are built, and at the peak of the
//! ticks, which adds a tick's feature rows and decisions); a snapshot cut
//! pausing the shards < 100 ms, and the size of its Redis values.

use std::io::BufRead as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use primetime_e2e::repo_root;

use crate::results::{Figure, LoadAvg, RunResult};
use crate::util::{load_1m, rss_bytes, verdict};

/// The example's default, so `scale` without flags stays comparable.
const DEFAULT_CELLS: u64 = 3_000_000;

#[derive(clap::Args)]
pub struct ScaleArgs {
    /// Active cells (the result file is `scale.json` at the default,
    /// `scale-<N>m.json` otherwise).
    #[arg(long, default_value_t = DEFAULT_CELLS)]
    cells: u64,
}

/// Resident bytes per active cell allowed between ticks: issue 4's 1 KiB
/// at 3 M cells, issue 19's 500 B from 10 M cells on.
fn memory_goal(cells: u64) -> f64 {
    if cells >= 10_000_000 { 500.0 } else { 1024.0 }
}

/// The snapshot cut's longest allowed pause of a shard (issue 19).
const PAUSE_GOAL_MS: f64 = 100.0;

pub fn run(args: &ScaleArgs) -> anyhow::Result<()> {
    let goal = memory_goal(args.cells);
    println!(
        "scale: goal: a tick of {} M active cells < 1 s on 2 threads; resident memory < {goal} B per active cell; \
         a snapshot cut pauses the shards < {PAUSE_GOAL_MS} ms",
        args.cells as f64 / 1e6
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
    let load_before = load_1m();
    let mut child = std::process::Command::new(target.join("release/examples/tick_3m"))
        .args(["--cells", &args.cells.to_string()])
        .current_dir(repo_root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("start tick_3m")?;
    let pid = child.id();
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let peak = Arc::clone(&peak);
        std::thread::spawn(move || {
            while let Some(rss) = rss_bytes(pid) {
                peak.fetch_max(rss, Ordering::Relaxed);
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
    let out = read_output(stdout, &peak)?;
    let status = child.wait()?;
    let _ = sampler.join();
    anyhow::ensure!(
        status.success() && cells > 0 && !out.ticks.is_empty(),
        "tick_3m failed"
    );
    let ticks = &out.ticks;
    let mut steady: Vec<f64> = ticks.iter().skip(1).copied().collect();
    steady.sort_by(f64::total_cmp);
    let steady_median = steady.get(steady.len() / 2).copied().unwrap_or(ticks[0]);
    let m = Measured {
        cells,
        steady: steady_median,
        per_cell: state_rss as f64 / cells as f64,
        per_cell_peak: out.tick_peak as f64 / cells as f64,
    };
    let ok_tick = m.steady < 1.0;
    println!(
        "scale: steady tick {steady_median:.3} s (first {:.3} s) for {cells} cells -> {}",
        ticks[0],
        verdict(ok_tick)
    );
    println!(
        "scale: {:.0} bytes resident per active cell between ticks, \
         {:.0} at the peak of a tick -> {}",
        m.per_cell,
        m.per_cell_peak,
        verdict(m.per_cell < goal)
    );
    println!(
        "scale: snapshot cut paused the shards {:.1} ms (in one piece {:.0} ms) -> {}; {} bytes in Redis values, largest {}",
        out.pause_ms,
        out.whole_ms,
        verdict(out.pause_ms < PAUSE_GOAL_MS),
        out.snapshot_bytes,
        out.largest_value
    );
    let name = if cells == DEFAULT_CELLS {
        "scale".to_owned()
    } else {
        format!("scale-{}m", cells / 1_000_000)
    };
    let command = if cells == DEFAULT_CELLS {
        "cargo run --release -p primetime-load-tests -- scale".to_owned()
    } else {
        format!("cargo run --release -p primetime-load-tests -- scale --cells {cells}")
    };
    let mut result = RunResult::new(&name, command);
    result.load_1m = Some(LoadAvg {
        before: load_before,
        after: load_1m(),
    });
    result.note = Some(format!(
        "the tick_3m example: {cells} active cells, 2 shards on 2 threads, ONNX model, \
         guardrails, commit; ticks {ticks:?} s; RSS sampled every 20 ms; then a snapshot \
         cut (each shard exports on its own thread; encoded into one Redis value per \
         Kafka partition, 8 per topic)"
    ));
    result.figures = figures(&m, ticks);
    let mut cpu: Vec<f64> = out.tick_cpu.iter().skip(1).copied().collect();
    cpu.sort_by(f64::total_cmp);
    if let Some(&c) = cpu.get(cpu.len() / 2) {
        println!("scale: steady tick, busiest shard's CPU time {c:.3} s");
        result.figures.push(Figure::info(
            "scale: steady tick, CPU time of the busiest shard thread (median of ticks 1..)",
            c,
            "s",
        ));
    }
    result.figures.extend(snapshot_figures(&out));
    result.write()?;
    Ok(())
}

/// What the example printed on stdout.
#[derive(Default)]
struct Output {
    ticks: Vec<f64>,
    /// Per tick, the CPU time of its busiest shard thread (s): the tick
    /// apart from waiting for a core when other work shares the machine.
    tick_cpu: Vec<f64>,
    /// Peak RSS before the snapshot cut: the ticks' peak.
    tick_peak: u64,
    pause_ms: f64,
    /// The export in one piece, as the barrier did before slicing.
    whole_ms: f64,
    snapshot_bytes: u64,
    largest_value: u64,
}

fn read_output(stdout: impl std::io::Read, peak: &AtomicU64) -> anyhow::Result<Output> {
    let mut out = Output::default();
    let number = |s: &str| s.split_whitespace().next().and_then(|x| x.parse().ok());
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        println!("  {line}");
        if let Some(secs) = line.split(" priced in ").nth(1).and_then(number) {
            out.ticks.push(secs);
        }
        if let Some(list) = line.split("CPU per shard [").nth(1) {
            let longest = list
                .split(']')
                .next()
                .unwrap_or("")
                .split(", ")
                .filter_map(|x| x.parse::<f64>().ok())
                .fold(0.0, f64::max);
            out.tick_cpu.push(longest);
        }
        if line.starts_with("snapshot: cut") {
            out.tick_peak = peak.load(Ordering::Relaxed);
        }
        if let Some(ms) = line.split(" paused the shards ").nth(1).and_then(number) {
            out.pause_ms = ms;
        }
        if let Some(ms) = line
            .split("snapshot: in one piece ")
            .nth(1)
            .and_then(number)
        {
            out.whole_ms = ms;
        }
        if let Some(bytes) = line.split("snapshot: encoded ").nth(1).and_then(number) {
            out.snapshot_bytes = bytes as u64;
        }
        if let Some(bytes) = line.split("(largest ").nth(1).and_then(number) {
            out.largest_value = bytes as u64;
        }
    }
    if out.tick_peak == 0 {
        out.tick_peak = peak.load(Ordering::Relaxed);
    }
    Ok(out)
}

struct Measured {
    cells: u64,
    steady: f64,
    per_cell: f64,
    per_cell_peak: f64,
}

fn figures(m: &Measured, ticks: &[f64]) -> Vec<Figure> {
    let millions = m.cells as f64 / 1e6;
    let goal = memory_goal(m.cells);
    vec![
        Figure::goal(
            format!(
                "scale: steady tick of {millions:.0} M active cells, 2 shards on 2 threads (median of ticks 1..)"
            ),
            m.steady,
            "s",
            "< 1 s",
            m.steady < 1.0,
        ),
        Figure::info(
            "scale: first tick after start (first touch of the tick's memory)",
            ticks.first().copied().unwrap_or(f64::NAN),
            "s",
        ),
        Figure::info(
            "scale: cells priced per second in a steady tick",
            (m.cells as f64 / m.steady).round(),
            "cells/s",
        ),
        Figure::goal(
            "scale: resident bytes per active cell between ticks",
            m.per_cell.round(),
            "bytes",
            &format!("< {goal} bytes"),
            m.per_cell < goal,
        ),
        Figure::info(
            "scale: resident bytes per active cell at the peak of a tick",
            m.per_cell_peak.round(),
            "bytes",
        ),
    ]
}

fn snapshot_figures(out: &Output) -> Vec<Figure> {
    vec![
        Figure::goal(
            "scale: snapshot cut, longest pause of a shard (one slice of its export)",
            (out.pause_ms * 10.0).round() / 10.0,
            "ms",
            &format!("< {PAUSE_GOAL_MS} ms"),
            out.pause_ms < PAUSE_GOAL_MS,
        ),
        Figure::info(
            "scale: snapshot cut, export of a shard in one piece (the pause before slicing)",
            out.whole_ms.round(),
            "ms",
        ),
        Figure::info(
            "scale: snapshot size, all Redis values (one per Kafka partition, 8 per topic)",
            out.snapshot_bytes as f64,
            "bytes",
        ),
        Figure::info(
            "scale: snapshot size, largest Redis value",
            out.largest_value as f64,
            "bytes",
        ),
    ]
}
