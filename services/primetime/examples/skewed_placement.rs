//! The skewed benchmark of issue 19: a log where one region carries about
//! half the events, replayed on 2 shards with the hash placement and with
//! load-aware placement (the service's model, `embedded` ONNX); prints
//! events/s, each shard's CPU time and its share of the mean, PASS/FAIL for
//! "no shard above 1.3× the mean" after placement, and checks that both
//! runs decide the same.
//!
//! It also calibrates the placement's cost weights: the reference engine
//! counts each region's events and priced cell-ticks, and the hash run's
//! two shard CPU times give two equations in the cost per event and per
//! cell-tick (compare with `DEFAULT_WEIGHTS`, which the placed run uses
//! unless `SKEWED_WEIGHTS=<ns per event>,<ns per cell-tick>` is set).
//!
//! The log is two simulated cities merged by ingest time: a wide city (30
//! km, 3,000 drivers: 17 regions, sparse) and, on partitions of their own,
//! a crowd with 4,000 demand sessions/s packed into a 6 km circle inside
//! one region — a stadium that never empties. That region has ~93 % of the
//! events but ~12 % of the priced cell-ticks: shard CPU follows cells (a
//! cell-tick costs ~40 events, see `DEFAULT_WEIGHTS`), so it takes that
//! many events for one region to push its shard above 1.3× the mean.
//!
//! Run: `cargo run --release -p primetime --example skewed_placement`
//! (`SKEWED_MINUTES`, default 6, sets the simulated time;
//! the log's shape: see [`Shape`].)
//!
//! Per-shard CPU is read from `/proc/self/task/*/schedstat` (Linux): the
//! shards are the actix arbiter threads, started in shard order (so by
//! ascending thread id).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use primetime::config::ServiceConfig;
use primetime::pipeline::placement::DEFAULT_WEIGHTS;
use primetime::pipeline::{
    CollectSink, Input, InputRecord, PipelineOptions, PlacementOptions, Poll,
};
use primetime::replay;
use primetime_core::placement::{CostWeights, DEFAULT_MAX_RATIO, RegionLoad};
use primetime_core::{Engine, IngestTime, Placement, PriceModel, RawRecord, RegionId};
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

/// The log's shape (environment: `SKEWED_CITY_KM`, `SKEWED_CITY_DRIVERS`,
/// `SKEWED_CROWD_KM`, `SKEWED_CROWD_DEMAND`).
struct Shape {
    city_km: f64,
    city_drivers: u32,
    crowd_km: f64,
    crowd_demand: f64,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The city and the crowd, the crowd on partitions after the city's: a
/// circle of `radius_km` around the centre of one region (inside it up to
/// ~7 km, the region's inner radius).
fn skewed_log(minutes: i64, shape: &Shape) -> anyhow::Result<(Vec<InputRecord>, u32)> {
    let geo = ServiceConfig::default().core.geo();
    let region = geo
        .cell_of(37.70, -122.39)
        .map(|c| geo.region_of(c))
        .ok_or_else(|| anyhow::anyhow!("no cell at the crowd's place"))?;
    let (center_lat, center_lng) = primetime_core::CellId::from_u64(region.as_u64())
        .map(|c| c.center())
        .ok_or_else(|| anyhow::anyhow!("region {region} is not an H3 cell"))?;
    let city = SimConfig {
        drivers: shape.city_drivers,
        radius_km: shape.city_km,
        demand_per_s: 12.0,
        noise: Noise::default(),
        stadium: None,
        ..SimConfig::default()
    };
    let crowd = SimConfig {
        seed: 11,
        // A crowd waiting for cars: surge decisions to compare.
        demand_per_s: shape.crowd_demand,
        // The city partitions by area: a 1 km crowd fills one partition,
        // and an empty one would hold the watermark back to the end.
        partitions: 1,
        radius_km: shape.crowd_km,
        center_lat,
        center_lng,
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
    /// CPU seconds of each shard thread, in shard order.
    shards: Vec<f64>,
    /// (thread name, CPU seconds) of the other threads that ran.
    others: Vec<(String, f64)>,
}

fn run(
    log: &[InputRecord],
    partitions: u32,
    model: &Arc<dyn PriceModel + Send + Sync>,
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
    replay::run_with_options(&config, options, input, sink.clone(), Arc::clone(model))?;
    let seconds = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let last = sampler.join().map_err(|_| anyhow::anyhow!("sampler"))?;
    let mut threads: Vec<(u32, String, f64)> = last
        .into_iter()
        .filter(|(tid, _)| !before.contains_key(tid))
        .map(|(tid, (name, cpu))| (tid, name, cpu))
        .collect();
    threads.sort_by_key(|t| t.0);
    let (shards, others): (Vec<_>, Vec<_>) = threads
        .into_iter()
        .partition(|t| t.1.starts_with("actix-rt|system"));
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
        shards: shards.into_iter().map(|t| t.2).collect(),
        others: others.into_iter().map(|t| (t.1, t.2)).collect(),
    })
}

/// Prints the run; returns the busiest shard's CPU over the mean.
fn report(label: &str, events: usize, r: &Run) -> f64 {
    println!(
        "{label}: {events} events in {:.2} s = {:.0} events/s",
        r.seconds,
        events as f64 / r.seconds
    );
    let mean = r.shards.iter().sum::<f64>() / r.shards.len().max(1) as f64;
    let mut worst = 0.0f64;
    for (i, cpu) in r.shards.iter().enumerate() {
        let ratio = cpu / mean.max(1e-9);
        worst = worst.max(ratio);
        println!("  shard {i}: {cpu:.3} CPU s ({ratio:.2}x the mean)");
    }
    let mut others = r.others.clone();
    others.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (name, cpu) in others.iter().filter(|t| t.1 >= 0.01) {
        println!("  {name}: {cpu:.3} CPU s");
    }
    worst
}

/// Each region's events and priced cell-ticks over the whole log, from
/// the reference engine (the same model, so the same cells stay active).
fn region_loads(
    log: &[InputRecord],
    partitions: u32,
    model: &Arc<dyn PriceModel + Send + Sync>,
) -> anyhow::Result<HashMap<RegionId, RegionLoad>> {
    let core = ServiceConfig::default().core;
    let geo = core.geo();
    let mut engine = Engine::new(core, partitions, 1, Arc::clone(model))?;
    engine.record_rows();
    let mut loads: HashMap<RegionId, RegionLoad> = HashMap::new();
    let add_rows = |engine: &mut Engine<_>, loads: &mut HashMap<RegionId, RegionLoad>| {
        for (_, row) in engine.take_rows() {
            loads.entry(geo.region_of(row.cell)).or_default().cell_ticks += 1;
        }
    };
    for (i, r) in log.iter().enumerate() {
        match primetime_proto::decode(r.topic, &r.payload) {
            Ok(record) => {
                let at = match &record {
                    RawRecord::Driver(d) => (d.lat, d.lng),
                    RawRecord::Demand(d) => (d.lat, d.lng),
                };
                let ingest = IngestTime(r.ingest_time_ms);
                if engine.push(r.partition, r.offset, ingest, &record).is_ok()
                    && let Some(c) = geo.cell_of(at.0, at.1)
                {
                    loads.entry(geo.region_of(c)).or_default().events += 1;
                }
            }
            Err(_) => engine.push_malformed(r.partition, r.offset),
        }
        if i % 100_000 == 0 {
            add_rows(&mut engine, &mut loads);
        }
    }
    engine.finish();
    add_rows(&mut engine, &mut loads);
    Ok(loads)
}

/// Per shard (hash placement on 2 shards): events and cell-ticks.
fn hash_loads(loads: &HashMap<RegionId, RegionLoad>) -> Vec<RegionLoad> {
    let hash = Placement::new(2);
    let mut out = vec![RegionLoad::default(); 2];
    for (&r, &l) in loads {
        out[hash.shard_of(r)].add(l);
    }
    out
}

/// The weights two shards' CPU imply: `cpu_s = e_s × a + c_s × b`.
fn calibrate(per_shard: &[RegionLoad], cpu: &[f64]) -> Option<(f64, f64)> {
    let [l0, l1] = per_shard else { return None };
    let [t0, t1] = cpu else { return None };
    let (e0, c0, e1, c1) = (
        l0.events as f64,
        l0.cell_ticks as f64,
        l1.events as f64,
        l1.cell_ticks as f64,
    );
    let det = e0 * c1 - e1 * c0;
    if det.abs() < 1e-9 {
        return None;
    }
    Some(((t0 * c1 - t1 * c0) / det, (e0 * t1 - e1 * t0) / det))
}

/// Each shard's cost share under the hash and after the rule's moves for
/// the whole log's costs (what the live rule approaches as it plans from
/// the costs of the last ticks).
fn shares(loads: &HashMap<RegionId, RegionLoad>, weights: CostWeights) {
    let costs: Vec<(RegionId, u64)> = loads.iter().map(|(&r, &l)| (r, weights.cost(l))).collect();
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
        println!("cost per shard / mean, {label}: {}", ratios.join(" "));
    }
    println!("the rule moves {} region(s)", moves.len());
}

fn weights() -> CostWeights {
    let parsed = std::env::var("SKEWED_WEIGHTS").ok().and_then(|w| {
        let (e, c) = w.split_once(',')?;
        Some(CostWeights {
            per_event_ns: e.trim().parse().ok()?,
            per_cell_tick_ns: c.trim().parse().ok()?,
        })
    });
    parsed.unwrap_or(DEFAULT_WEIGHTS)
}

fn main() -> anyhow::Result<()> {
    let minutes = env_or("SKEWED_MINUTES", 6);
    let shape = Shape {
        city_km: env_or("SKEWED_CITY_KM", 30.0),
        city_drivers: env_or("SKEWED_CITY_DRIVERS", 3_000),
        crowd_km: env_or("SKEWED_CROWD_KM", 6.0),
        crowd_demand: env_or("SKEWED_CROWD_DEMAND", 4_000.0),
    };
    let weights = weights();
    let (log, partitions) = skewed_log(minutes, &shape)?;
    let config = ServiceConfig::default();
    let model = primetime::model::choose(&config.model, config.core.policy.fallback).model;
    println!("model: {}", model.version());
    let loads = region_loads(&log, partitions, &model)?;
    let total = loads.values().fold(RegionLoad::default(), |mut a, &l| {
        a.add(l);
        a
    });
    let busiest = loads
        .values()
        .max_by_key(|l| l.events)
        .copied()
        .unwrap_or_default();
    println!(
        "log: {} records on {partitions} partitions; {} regions; the busiest region has {:.0}% of the events and {:.1}% of the {} cell-ticks",
        log.len(),
        loads.len(),
        100.0 * busiest.events as f64 / total.events.max(1) as f64,
        100.0 * busiest.cell_ticks as f64 / total.cell_ticks.max(1) as f64,
        total.cell_ticks,
    );
    shares(&loads, weights);
    let hash = run(&log, partitions, &model, None)?;
    report("hash placement", log.len(), &hash);
    let per_shard = hash_loads(&loads);
    for (i, l) in per_shard.iter().enumerate() {
        println!(
            "  shard {i} under the hash: {} events, {} cell-ticks",
            l.events, l.cell_ticks
        );
    }
    match calibrate(&per_shard, &hash.shards) {
        Some((e, c)) => println!(
            "calibration from the hash run: {:.0} ns per event, {:.0} ns per cell-tick (in use: {}, {})",
            e * 1e9,
            c * 1e9,
            weights.per_event_ns,
            weights.per_cell_tick_ns
        ),
        None => println!("calibration: not solvable from this run"),
    }
    let options = PlacementOptions {
        weights,
        ..PlacementOptions::default()
    };
    let placed = run(&log, partitions, &model, Some(options))?;
    let worst = report("load-aware placement", log.len(), &placed);
    println!(
        "no shard above {DEFAULT_MAX_RATIO}x the mean CPU after placement: {} (busiest {worst:.2}x)",
        if worst <= DEFAULT_MAX_RATIO {
            "PASS"
        } else {
            "FAIL"
        }
    );
    println!(
        "same decisions: {} ({} decisions)",
        hash.decisions == placed.decisions,
        hash.decisions.len()
    );
    Ok(())
}
