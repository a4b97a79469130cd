//! The skewed benchmark of issue 19: a log where one region carries about
//! half the events, replayed on 2 shards with the hash placement and with
//! load-aware placement; prints events/s, each shard's CPU time and its
//! share of the events, and checks that both runs decide the same.
//!
//! The log is two simulated cities merged by ingest time: the default city
//! (many regions) and, on partitions of their own, a crowd of the same
//! size packed into a 1 km circle (one region) — a stadium that never
//! empties.
//!
//! Run: `cargo run --release -p primetime --example skewed_placement`
//! (`SKEWED_MINUTES`, default 10, sets the simulated time.)
//!
//! Per-shard CPU is read from `/proc/self/task/*/schedstat` (Linux): the
//! shards are the actix arbiter threads.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use primetime::config::ServiceConfig;
use primetime::pipeline::{
    CollectSink, Input, InputRecord, PipelineOptions, PlacementOptions, Poll,
};
use primetime::replay;
use primetime_core::placement::DEFAULT_MAX_RATIO;
use primetime_core::{FormulaModel, Placement, PriceModel, RawRecord, RegionId};
use primetime_sim::{Noise, SimConfig, Simulator};

// The service's allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A finite in-memory input, delivered in chunks.
struct VecInput {
    records: std::vec::IntoIter<InputRecord>,
    partitions: u32,
}

impl Input for VecInput {
    fn partitions(&self) -> u32 {
        self.partitions
    }

    fn poll(&mut self, out: &mut Vec<InputRecord>) -> anyhow::Result<Poll> {
        out.extend(self.records.by_ref().take(4_096));
        Ok(if self.records.len() == 0 {
            Poll::End
        } else {
            Poll::More
        })
    }
}

fn simulate(config: SimConfig, minutes: i64) -> anyhow::Result<(Vec<InputRecord>, u32)> {
    let mut sim = Simulator::new(config)?;
    let mut out = Vec::new();
    let end = sim.now_ms() + minutes * 60_000;
    sim.advance_to(end, &mut out);
    let entries = out.into_iter().map(|r| r.into_log_entry()).collect();
    Ok((entries, sim.partitions()))
}

/// The city and the crowd, the crowd on partitions after the city's.
fn skewed_log(minutes: i64) -> anyhow::Result<(Vec<InputRecord>, u32)> {
    let city = SimConfig {
        drivers: 6_000,
        demand_per_s: 12.0,
        noise: Noise::default(),
        stadium: None,
        ..SimConfig::default()
    };
    let crowd = SimConfig {
        seed: 11,
        // A crowd waiting for cars: surge decisions to compare.
        demand_per_s: 150.0,
        // The city partitions by area: a 1 km crowd fills one partition,
        // and an empty one would hold the watermark back to the end.
        partitions: 1,
        radius_km: 1.0,
        center_lat: 37.70,
        center_lng: -122.39,
        ..city.clone()
    };
    let (mut log, parts) = simulate(city, minutes)?;
    let (crowd, crowd_parts) = simulate(crowd, minutes)?;
    log.extend(crowd.into_iter().map(|mut r| {
        r.partition += parts;
        r
    }));
    // Stable: each partition keeps its own order.
    log.sort_by_key(|r| r.ingest_time_ms);
    Ok((log, parts + crowd_parts))
}

/// CPU seconds of every live thread, by thread id, with its name (from
/// `schedstat`: nanoseconds on the CPU, finer than `stat`'s 10 ms ticks).
fn thread_cpu() -> HashMap<u32, (String, f64)> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let path = entry.path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(path.join("schedstat")).unwrap_or_default();
        let Some(ns) = stat
            .split_whitespace()
            .next()
            .and_then(|f| f.parse::<f64>().ok())
        else {
            continue;
        };
        out.insert(tid, (name.trim().to_string(), ns / 1e9));
    }
    out
}

struct Run {
    seconds: f64,
    decisions: Vec<String>,
    /// (thread name, CPU seconds) of the threads that ran during the run.
    threads: Vec<(String, f64)>,
}

fn run(
    log: &[InputRecord],
    partitions: u32,
    placement: Option<PlacementOptions>,
) -> anyhow::Result<Run> {
    // Short mailboxes keep the source near the shards' pace (as a live
    // input does): routing decided long before a tick cannot follow a
    // move, and a source that ran to the end of the log takes no more.
    let config = ServiceConfig {
        shards: 2,
        mailbox: 4,
        batch_size: 1024,
        ..ServiceConfig::default()
    };
    let model: Arc<dyn PriceModel + Send + Sync> =
        Arc::new(FormulaModel::new(config.core.policy.fallback));
    let options = PipelineOptions {
        placement,
        ..PipelineOptions::sized(config.shards, config.mailbox, config.batch_size)
    };
    let before = thread_cpu();
    // Threads end with the run: sample their CPU until it is over.
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut last = HashMap::new();
            while !done.load(Ordering::Relaxed) {
                last.extend(thread_cpu());
                std::thread::sleep(Duration::from_millis(20));
            }
            last
        })
    };
    let sink = CollectSink::default();
    // Copied before the clock starts: not part of the run.
    let owned: Vec<InputRecord> = log.to_vec();
    let input = VecInput {
        records: owned.into_iter(),
        partitions,
    };
    let started = Instant::now();
    replay::run_with_options(&config, options, input, sink.clone(), model)?;
    let seconds = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let last = sampler.join().map_err(|_| anyhow::anyhow!("sampler"))?;
    let mut threads: Vec<(String, f64)> = last
        .into_iter()
        .filter(|(tid, _)| !before.contains_key(tid))
        .map(|(_, t)| t)
        .collect();
    threads.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)));
    let decisions = sink
        .0
        .lock()
        .map_err(|_| anyhow::anyhow!("sink lock"))?
        .iter()
        .map(serde_json::to_string)
        .collect::<Result<_, _>>()?;
    Ok(Run {
        seconds,
        decisions,
        threads,
    })
}

fn report(label: &str, events: usize, r: &Run) {
    println!(
        "{label}: {events} events in {:.2} s = {:.0} events/s",
        r.seconds,
        events as f64 / r.seconds
    );
    let shards: Vec<f64> = r
        .threads
        .iter()
        .filter(|(n, _)| n.starts_with("actix-rt|system"))
        .map(|t| t.1)
        .collect();
    let mean = shards.iter().sum::<f64>() / shards.len().max(1) as f64;
    for (i, cpu) in shards.iter().enumerate() {
        println!(
            "  shard thread {i} (busiest first): {cpu:.3} CPU s ({:.2}x the mean)",
            cpu / mean.max(1e-9)
        );
    }
    for (name, cpu) in r.threads.iter().filter(|(n, _)| !n.starts_with("actix-rt")) {
        println!("  {name}: {cpu:.3} CPU s");
    }
}

/// Each shard's share of the whole log's events under the hash and after
/// the rule's moves for these costs (what the live rule approaches as it
/// plans from the events of the last ticks).
fn shares(per_region: &HashMap<RegionId, u64>) {
    let costs: Vec<(RegionId, u64)> = per_region.iter().map(|(&r, &c)| (r, c)).collect();
    let hash = Placement::new(2);
    let mut placed = hash.clone();
    let moves = hash.rebalance(&costs, DEFAULT_MAX_RATIO);
    for &m in &moves {
        placed.apply(m);
    }
    for (label, p) in [("hash", &hash), ("rule", &placed)] {
        let loads = p.loads(&costs);
        let mean = loads.iter().sum::<u64>() as f64 / loads.len() as f64;
        let ratios: Vec<String> = loads
            .iter()
            .map(|&l| format!("{:.2}x", l as f64 / mean.max(1.0)))
            .collect();
        println!("events per shard / mean, {label}: {}", ratios.join(" "));
    }
    println!("the rule moves {} region(s)", moves.len());
}

fn main() -> anyhow::Result<()> {
    let minutes = std::env::var("SKEWED_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(10);
    let (log, partitions) = skewed_log(minutes)?;
    let geo = ServiceConfig::default().core.geo();
    let mut per_region: HashMap<RegionId, u64> = HashMap::new();
    for r in &log {
        let at = match primetime_proto::decode(r.topic, &r.payload) {
            Ok(RawRecord::Driver(d)) => (d.lat, d.lng),
            Ok(RawRecord::Demand(d)) => (d.lat, d.lng),
            Err(_) => continue,
        };
        if let Some(c) = geo.cell_of(at.0, at.1) {
            *per_region.entry(geo.region_of(c)).or_default() += 1;
        }
    }
    let top = per_region.values().max().copied().unwrap_or(0);
    let located: u64 = per_region.values().sum();
    println!(
        "log: {} records on {partitions} partitions; {} regions; the busiest region has {:.0}% of the events",
        log.len(),
        per_region.len(),
        100.0 * top as f64 / located.max(1) as f64
    );
    shares(&per_region);
    let hash = run(&log, partitions, None)?;
    report("hash placement", log.len(), &hash);
    let placed = run(&log, partitions, Some(PlacementOptions::default()))?;
    report("load-aware placement", log.len(), &placed);
    println!(
        "same decisions: {} ({} decisions)",
        hash.decisions == placed.decisions,
        hash.decisions.len()
    );
    Ok(())
}
