//! Time to price one tick of 3 M active cells on 2 cores (issue #4 target:
//! < 1 s): two shards of 1.5 M cells, each on its own thread as in the
//! service, each firing the tick — close windows, feature rows, the ONNX
//! model (`models/primetime-v1.onnx`), guardrails, commit.
//!
//! Run: `cargo run --release -p primetime --example tick_3m`
//!
//! With `TICK_3M_DIGEST=1` it also prints, outside the timed part, a digest
//! of each tick's decisions (sorted by cell, serialised as JSON), to check
//! that an optimisation changes no decision. With `TICK_3M_PHASES=1`, each
//! shard prints how long each step of its tick took.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Instant;

use h3o::{LatLng, Resolution};

// The service's allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use primetime_core::record::{Signal, ValidEvent};
use primetime_core::{
    CellId, Config, DemandKind, DriverId, DriverStatus, EventKey, EventTime, Policy, PriceDecision,
    PriceModel, Shard, Tick, TickPricer, TickRow, shard_of,
};

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "models/primetime-v1.onnx".to_owned());
    let model: Arc<dyn PriceModel + Send + Sync> =
        Arc::new(primetime_model::load(std::path::Path::new(&path))?);
    let config = Config::default();
    let geo = config.geo();
    let centre = LatLng::new(37.7749, -122.4194)?.to_cell(Resolution::Eight);
    let started = Instant::now();
    let cells: Vec<CellId> = centre
        .grid_disk::<Vec<_>>(1_000)
        .into_iter()
        .filter_map(|c| CellId::from_u64(u64::from(c)))
        .collect();
    let cells = &cells[..3_000_000.min(cells.len())];
    let n = 2;
    let mut shards: Vec<Shard> = (0..n)
        .map(|_| Shard::new(geo, config.window_params()))
        .collect();
    // Every cell active: two drivers and three requests in bucket 0, a
    // price check in each of buckets 0..=4.
    let t0 = 1_800_000_000_000i64;
    for (i, &cell) in cells.iter().enumerate() {
        let shard = &mut shards[shard_of(geo.region_of(cell), n)];
        let ev = |t: i64, signal| ValidEvent {
            key: EventKey(i as u64),
            time: EventTime(t),
            cell,
            signal,
        };
        for d in 0..2u64 {
            shard.apply(&ev(
                t0,
                Signal::Driver {
                    driver: DriverId(i as u64 * 2 + d),
                    status: DriverStatus::Available,
                },
            ));
        }
        for r in 0..(3 + i % 7) as i64 {
            shard.apply(&ev(t0 + r * 1_000, Signal::Demand(DemandKind::RideRequest)));
        }
        shard.apply(&ev(t0 + 1_000, Signal::Demand(DemandKind::PriceCheck)));
    }
    let sizes: Vec<usize> = shards.iter().map(Shard::len).collect();
    eprintln!(
        "built {} active cells in {:.1} s (shards {sizes:?})",
        cells.len(),
        started.elapsed().as_secs_f64()
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
    let tick = Tick(t0 / config.bucket_ms);
    for round in 0..3 {
        let tick = Tick(tick.0 + round);
        let started = Instant::now();
        // (decisions kept for the digest, their count, shard time)
        type ShardResult = (Option<Vec<PriceDecision>>, usize, f64);
        let results: Vec<ShardResult> = std::thread::scope(|scope| {
            let handles: Vec<_> = shards
                .iter_mut()
                .zip(&mut state)
                .map(|(shard, (rows, pricer))| {
                    let model = Arc::clone(&model);
                    scope.spawn(move || {
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
                        if phases {
                            eprintln!(
                                "  shard of {} cells, ms: close {close}, features {features}, \
                                 price {price}, commit {commit}, drop {drop}",
                                shard.len()
                            );
                        }
                        (decisions, n, elapsed)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("shard thread"))
                .collect()
        });
        let elapsed = started.elapsed().as_secs_f64();
        let decisions: usize = results.iter().map(|r| r.1).sum();
        println!(
            "tick {round}: {} active cells priced in {:.3} s on {n} threads ({decisions} decisions; per shard {:?} s)",
            cells.len(),
            elapsed,
            results
                .iter()
                .map(|r| (r.2 * 1000.0).round() / 1000.0)
                .collect::<Vec<_>>()
        );
        if digest {
            let mut all: Vec<&PriceDecision> =
                results.iter().flat_map(|r| r.0.iter().flatten()).collect();
            all.sort_unstable_by_key(|d| d.cell);
            let mut h = std::collections::hash_map::DefaultHasher::new();
            for d in all {
                serde_json::to_vec(d)?.hash(&mut h);
            }
            println!("tick {round}: digest {:016x}", h.finish());
        }
    }
    Ok(())
}
