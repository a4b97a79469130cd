//! Time to price one tick of 3 M (or `--cells N`) active cells on 2 cores
//! (issue #4 target: < 1 s; issue #19: 10 M cells < 1 s): two shards, each
//! on its own thread as in the service, each firing the tick — close
//! windows, feature rows, the ONNX model (`models/primetime-v1.onnx`),
//! guardrails, commit. Then a snapshot cut as the service makes it: each
//! shard exports its cells on its own thread (the time the shards'
//! ticks wait), and the image is encoded into the Redis parts (off the
//! tick path, in the service's writer thread).
//!
//! Run: `cargo run --release -p primetime --example tick_3m -- [--cells N] [model.onnx]`
//!
//! With `TICK_3M_DIGEST=1` it also prints, outside the timed part, a digest
//! of each tick's decisions (sorted by cell, serialised as JSON), to check
//! that an optimisation changes no decision. With `TICK_3M_PHASES=1`, each
//! shard prints how long each step of its tick took.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use h3o::{LatLng, Resolution};

// The service's allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use primetime::pipeline::PipelineImage;
use primetime::pipeline::snapshot::SourcePartitionImage;
use primetime_core::record::{Signal, ValidEvent};
use primetime_core::snapshot::PartitionImage;
use primetime_core::{
    CellId, Config, DemandKind, DriverId, DriverStatus, EventKey, EventTime, Policy, PriceDecision,
    PriceModel, Shard, Tick, TickPricer, TickRow, shard_of,
};

/// Shards, each on its own thread: the 2 cores of the target machine.
const SHARDS: usize = 2;
/// Kafka partitions per input topic the snapshot is split by (the
/// service's default topics).
const PER_TOPIC: u32 = 8;
/// Cells per slice of an incremental snapshot export (as the service's
/// shard actor).
const EXPORT_STEP_CELLS: usize = 20_000;
/// The first event time (ms).
const T0: i64 = 1_800_000_000_000;

type Model = Arc<dyn PriceModel + Send + Sync>;

struct Args {
    cells: usize,
    model: String,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        cells: 3_000_000,
        model: "models/primetime-v1.onnx".to_owned(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        if a == "--cells" {
            let n = it.next().context("--cells needs a number")?;
            args.cells = n.parse().with_context(|| format!("--cells {n}"))?;
        } else {
            args.model = a;
        }
    }
    Ok(args)
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let model: Model = Arc::new(primetime_model::load(std::path::Path::new(&args.model))?);
    let config = Config::default();
    let started = Instant::now();
    let (mut shards, cells) = build(&config, args.cells)?;
    let sizes: Vec<usize> = shards.iter().map(Shard::len).collect();
    // Resident pages (`statm`'s second field; 4 KiB pages on x86-64).
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096);
    eprintln!(
        "built {cells} active cells in {:.1} s (shards {sizes:?}; resident {rss} bytes, {} per cell)",
        started.elapsed().as_secs_f64(),
        rss / cells.max(1) as u64
    );
    let digest = std::env::var_os("TICK_3M_DIGEST").is_some();
    let phases = std::env::var_os("TICK_3M_PHASES").is_some();
    // What each shard actor keeps between ticks (as `ShardActor`): its
    // feature-row buffer and its pricer.
    let mut state: Vec<(Vec<TickRow>, TickPricer)> = shards
        .iter()
        .map(|_| {
            let pricer = TickPricer::new(Policy::new(config.policy), model.version());
            (Vec::new(), pricer)
        })
        .collect();
    let first = Tick(T0 / config.bucket_ms);
    for round in 0..3 {
        let tick = Tick(first.0 + round);
        let started = Instant::now();
        let results = run_tick(&mut shards, &mut state, &model, tick, digest, phases);
        let elapsed = started.elapsed().as_secs_f64();
        let decisions: usize = results.iter().map(|r| r.1).sum();
        let per_shard = |f: fn(&ShardResult) -> f64| -> Vec<f64> {
            results
                .iter()
                .map(|r| (f(r) * 1000.0).round() / 1000.0)
                .collect()
        };
        println!(
            "tick {round}: {cells} active cells priced in {elapsed:.3} s on {SHARDS} threads ({decisions} decisions; per shard {:?} s; CPU per shard {:?} s)",
            per_shard(|r| r.2),
            per_shard(|r| r.3),
        );
        if digest {
            print_digest(round, &results)?;
        }
    }
    snapshot(&config, &mut shards, Tick(first.0 + 2))
}

/// Every cell active: two drivers and 3..=9 requests in bucket 0, a
/// price check in bucket 0. Cells: the `N` nearest to central San
/// Francisco at resolution 8.
fn build(config: &Config, n: usize) -> anyhow::Result<(Vec<Shard>, usize)> {
    let geo = config.geo();
    let centre = LatLng::new(37.7749, -122.4194)?.to_cell(Resolution::Eight);
    // A disk of radius k holds 3k(k+1)+1 cells.
    let mut k = 0u32;
    while 3 * u64::from(k) * (u64::from(k) + 1) + 1 < n as u64 {
        k += 1;
    }
    let mut cells: Vec<CellId> = centre
        .grid_disk::<Vec<_>>(k)
        .into_iter()
        .filter_map(|c| CellId::from_u64(u64::from(c)))
        .collect();
    cells.truncate(n);
    let mut shards: Vec<Shard> = (0..SHARDS)
        .map(|_| Shard::new(geo, config.window_params()))
        .collect();
    for (i, &cell) in cells.iter().enumerate() {
        let shard = &mut shards[shard_of(geo.region_of(cell), SHARDS)];
        let ev = |t: i64, signal| ValidEvent {
            key: EventKey(i as u64),
            time: EventTime(t),
            cell,
            signal,
        };
        for d in 0..2u64 {
            shard.apply(&ev(
                T0,
                Signal::Driver {
                    driver: DriverId(i as u64 * 2 + d),
                    status: DriverStatus::Available,
                },
            ));
        }
        for r in 0..(3 + i % 7) as i64 {
            shard.apply(&ev(T0 + r * 1_000, Signal::Demand(DemandKind::RideRequest)));
        }
        shard.apply(&ev(T0 + 1_000, Signal::Demand(DemandKind::PriceCheck)));
    }
    Ok((shards, cells.len()))
}

/// (decisions kept for the digest, their count, shard time, shard CPU time)
type ShardResult = (Option<Vec<PriceDecision>>, usize, f64, f64);

/// The calling thread's time on a CPU (s), from `/proc/thread-self/schedstat`
/// (ns): on a machine shared with other work, what the tick costs apart
/// from waiting for a core. 0 where unreadable.
fn thread_cpu_s() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |ns| ns / 1e9)
}

/// One tick on every shard, each on its own thread.
fn run_tick(
    shards: &mut [Shard],
    state: &mut [(Vec<TickRow>, TickPricer)],
    model: &Model,
    tick: Tick,
    digest: bool,
    phases: bool,
) -> Vec<ShardResult> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = shards
            .iter_mut()
            .zip(state.iter_mut())
            .map(|(shard, (rows, pricer))| {
                let model = Arc::clone(model);
                scope.spawn(move || {
                    let cpu = thread_cpu_s();
                    let t = Instant::now();
                    let mut lap = {
                        let mut last = t;
                        move || {
                            let now = Instant::now();
                            let ms = (now - last).as_secs_f64() * 1e3;
                            last = now;
                            ms.round() as u32
                        }
                    };
                    shard.close_tick(tick);
                    let close = lap();
                    rows.clear();
                    shard.feature_rows(|_| None, rows);
                    let features = lap();
                    let mut decisions = Vec::new();
                    let priced = pricer.price(model.as_ref(), tick, rows, &mut decisions);
                    let price = lap();
                    shard.commit(tick, priced.changed);
                    let commit = lap();
                    // Dropped here (timed) unless digesting.
                    let n = decisions.len();
                    let decisions = digest.then_some(decisions);
                    let drop = lap();
                    let elapsed = t.elapsed().as_secs_f64();
                    let cpu = thread_cpu_s() - cpu;
                    if phases {
                        eprintln!(
                            "  shard of {} cells, ms: close {close}, features {features}, \
                             price {price}, commit {commit}, drop {drop}",
                            shard.len()
                        );
                    }
                    (decisions, n, elapsed, cpu)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("shard thread"))
            .collect()
    })
}

fn print_digest(round: i64, results: &[ShardResult]) -> anyhow::Result<()> {
    let mut all: Vec<&PriceDecision> = results.iter().flat_map(|r| r.0.iter().flatten()).collect();
    all.sort_unstable_by_key(|d| d.cell);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for d in all {
        serde_json::to_vec(d)?.hash(&mut h);
    }
    println!("tick {round}: digest {:016x}", h.finish());
    Ok(())
}

/// A snapshot cut after `tick`, as the service makes it: every shard, on
/// its own thread, starts an incremental export at the barrier and copies
/// its cells in slices of `EXPORT_STEP_CELLS` between its other messages
/// (the longest slice is the longest pause its ticks can see); then the
/// writer encodes the image into one Redis value per Kafka partition. For
/// comparison, the export in one piece (what the barrier did before).
fn snapshot(config: &Config, shards: &mut [Shard], tick: Tick) -> anyhow::Result<()> {
    println!("snapshot: cut after tick {}", tick.0);
    // (images, whole export in one piece, longest slice, all slices) in s
    let exported: Vec<(Vec<_>, f64, f64, f64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = shards
            .iter_mut()
            .map(|shard| {
                scope.spawn(move || {
                    let t = Instant::now();
                    drop(std::hint::black_box(shard.export()));
                    let whole = t.elapsed().as_secs_f64();
                    let t = Instant::now();
                    shard.begin_export();
                    let mut longest = t.elapsed().as_secs_f64();
                    let all = Instant::now();
                    let images = loop {
                        let t = Instant::now();
                        let step = shard.export_step(EXPORT_STEP_CELLS);
                        longest = longest.max(t.elapsed().as_secs_f64());
                        if let Some(images) = step {
                            break images;
                        }
                    };
                    (images, whole, longest, all.elapsed().as_secs_f64())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("export thread"))
            .collect()
    });
    let ms = |f: fn(&(Vec<_>, f64, f64, f64)) -> f64| -> Vec<f64> {
        exported
            .iter()
            .map(|e| (f(e) * 1e4).round() / 10.0)
            .collect()
    };
    let (whole, longest, all) = (ms(|e| e.1), ms(|e| e.2), ms(|e| e.3));
    let pause = longest.iter().copied().fold(0.0, f64::max);
    println!(
        "snapshot: export paused the shards {pause:.1} ms at most (slices of {EXPORT_STEP_CELLS} cells; \
         per shard: longest slice {longest:?} ms, all slices {all:?} ms)"
    );
    println!(
        "snapshot: in one piece {:.1} ms (per shard {whole:?} ms)",
        whole.iter().copied().fold(0.0, f64::max)
    );
    let partition = |partition| SourcePartitionImage {
        partition,
        next_offset: 0,
        state: PartitionImage {
            max_event: Some(T0),
            last_offset: None,
            seen: Vec::new(),
            next_sweep: T0,
        },
        marks: Vec::new(),
        max_bucket: None,
        committed: None,
        max_ingest_ms: None,
    };
    let image = PipelineImage {
        tick,
        watermark: tick.end_ms(config.bucket_ms),
        min_bucket: Some(tick.0),
        partitions: (0..2 * PER_TOPIC).map(partition).collect(),
        cells: exported.into_iter().flat_map(|e| e.0).collect(),
    };
    let t = Instant::now();
    let parts = primetime::recovery::encode_parts(&image, &config.geo(), PER_TOPIC, 0)?;
    let encode = t.elapsed().as_secs_f64();
    let total: usize = parts.iter().map(|p| p.blob.len()).sum();
    let largest = parts.iter().map(|p| p.blob.len()).max().unwrap_or(0);
    println!(
        "snapshot: encoded {total} bytes in {} Redis values (largest {largest} bytes) in {encode:.3} s off the tick path",
        parts.len()
    );
    Ok(())
}
