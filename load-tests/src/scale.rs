//! `scale`: 3 M active cells. Runs the `tick_3m` example (the service's
//! shard code on 3 M cells, 2 shards on 2 threads, ONNX model) and samples
//! its memory. Goals: a steady tick < 1 s; resident memory per active cell
//! < 1 KiB (the state kept between ticks: windows, summaries, neighbour
//! slots, the model; measured right after the cells are built, and at the
//! peak, which adds a tick's feature rows and decisions).

use std::io::BufRead as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use primetime_e2e::repo_root;

use crate::results::{Figure, LoadAvg, RunResult};
use crate::util::{load_1m, rss_bytes, verdict};

pub fn run() -> anyhow::Result<()> {
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
    let load_before = load_1m();
    let mut child = std::process::Command::new(target.join("release/examples/tick_3m"))
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
    let per_cell_peak = peak.load(Ordering::Relaxed) as f64 / cells as f64;
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
    let mut result = RunResult::new(
        "scale",
        "cargo run --release -p primetime-load-tests -- scale".into(),
    );
    result.load_1m = Some(LoadAvg {
        before: load_before,
        after: load_1m(),
    });
    result.note = Some(format!(
        "the tick_3m example: {cells} active cells, 2 shards on 2 threads, ONNX model, \
         guardrails, commit; ticks {ticks:?} s; RSS sampled every 20 ms"
    ));
    result.figures = figures(cells, &ticks, steady_median, per_cell_state, per_cell_peak);
    result.write()?;
    Ok(())
}

fn figures(
    cells: u64,
    ticks: &[f64],
    steady: f64,
    per_cell: f64,
    per_cell_peak: f64,
) -> Vec<Figure> {
    let m = cells as f64 / 1e6;
    vec![
        Figure::goal(
            format!(
                "scale: steady tick of {m:.0} M active cells, 2 shards on 2 threads (median of ticks 1..)"
            ),
            steady,
            "s",
            "< 1 s",
            steady < 1.0,
        ),
        Figure::info(
            "scale: first tick after start (first touch of the tick's memory)",
            ticks.first().copied().unwrap_or(f64::NAN),
            "s",
        ),
        Figure::info(
            "scale: cells priced per second in a steady tick",
            (cells as f64 / steady).round(),
            "cells/s",
        ),
        Figure::goal(
            "scale: resident bytes per active cell between ticks",
            per_cell.round(),
            "bytes",
            "< 1024 bytes",
            per_cell < 1024.0,
        ),
        Figure::info(
            "scale: resident bytes per active cell at the peak of a tick",
            per_cell_peak.round(),
            "bytes",
        ),
    ]
}
