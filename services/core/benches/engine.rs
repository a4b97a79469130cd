//! Engine throughput on one core for a realistic mix (issue #2 target:
//! ≥ 1.2 M events/s on one core of the 2-core CI machine).
//!
//! Workload: 100 k res-8 cells (a contiguous disk around San Francisco),
//! popularity Zipf(s = 1) over a shuffled ranking; 360 k drivers, one based
//! in every cell and the rest in Zipf-chosen cells, ten available-driver
//! pings per ride request (requests Zipf over cells);
//! lat/lng input (H3 indexing is measured); 16 partitions keyed by region;
//! 100 k events per second of event time (one tick per 1 M events), small
//! out-of-orderness and ingest delays. The engine runs at steady state: it
//! is warmed with six minutes of event time first, so the 5-minute windows,
//! the dedup sets and all 100 k cells are full before measuring.
//!
//! The timed loop pushes records from a 1 M-record pool, shifting their
//! times by one pool span per cycle and rewriting the first 8 characters of
//! each event id so ids stay unique; that rewrite (~10 ns) is included.
//!
//! Run: `cargo bench -p primetime-core --bench engine`

use std::hint::black_box;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use h3o::{CellIndex, LatLng, Resolution};
use primetime_core::{
    Config, Engine, IngestTime, RawDemandEvent, RawDriverLocation, RawRecord, shard_of,
};

const CELLS: u32 = 100_000;
const DRIVERS: usize = 360_000;
const POOL: usize = 1_000_000;
const EVENTS_PER_SECOND: i64 = 100_000;
const PARTITIONS: u32 = 16;
const T0: i64 = 1_800_000_000_000;

/// SplitMix64: a small, seeded, dependency-free generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

struct Item {
    partition: u32,
    /// Event time before the device's clock jitter, relative to the cycle.
    base_ms: i64,
    jitter_ms: i64,
    ingest_offset: i64,
    record: RawRecord,
}

struct Workload {
    pool: Vec<Item>,
    span_ms: i64,
}

fn workload() -> Workload {
    let mut rng = Rng(7);
    let center = LatLng::new(37.7749, -122.4194)
        .expect("valid")
        .to_cell(Resolution::Eight);
    let mut cells: Vec<CellIndex> = center.grid_disk::<Vec<_>>(183);
    cells.truncate(CELLS as usize);
    // Shuffle so popularity is not tied to distance from the centre.
    for i in (1..cells.len()).rev() {
        cells.swap(i, rng.below(i + 1));
    }
    let harmonic: f64 = (1..=CELLS).map(|k| 1.0 / f64::from(k)).sum();
    let mut cdf = Vec::with_capacity(CELLS as usize);
    let mut acc = 0.0;
    for k in 1..=CELLS {
        acc += 1.0 / f64::from(k) / harmonic;
        cdf.push(acc);
    }
    let zipf = |rng: &mut Rng| -> usize {
        let u = rng.unit();
        cdf.partition_point(|&c| c < u).min(cdf.len() - 1)
    };
    let centers: Vec<(f64, f64)> = cells
        .iter()
        .map(|c| {
            let ll = LatLng::from(*c);
            (ll.lat(), ll.lng())
        })
        .collect();
    let partition_of: Vec<u32> = cells
        .iter()
        .map(|c| {
            let region = primetime_core::CellId::from_u64(u64::from(*c)).expect("cell");
            let geo = primetime_core::Geo::new(8, 5).expect("geo");
            shard_of(geo.region_of(region), PARTITIONS as usize) as u32
        })
        .collect();
    // One driver based in every cell, the rest where popularity puts them.
    let homes: Vec<usize> = (0..DRIVERS)
        .map(|d| {
            if d < CELLS as usize {
                d
            } else {
                zipf(&mut rng)
            }
        })
        .collect();
    let span_ms = POOL as i64 * 1_000 / EVENTS_PER_SECOND;
    let mut pool = Vec::with_capacity(POOL);
    for i in 0..POOL {
        let base = i as i64 * 1_000 / EVENTS_PER_SECOND;
        // Devices are up to 1 s out of order; ingest 0-500 ms later.
        let jitter_ms = rng.below(1_000) as i64;
        let event_time = T0 + base - jitter_ms;
        let ingest_offset = base + rng.below(500) as i64;
        let jitter = |rng: &mut Rng| (rng.unit() - 0.5) * 0.001;
        let event_id = format!("{:08x}{:08x}", 0, i);
        let (cell, record) = if i % 11 == 10 {
            let cell = zipf(&mut rng);
            let (lat, lng) = centers[cell];
            let record = RawRecord::Demand(RawDemandEvent {
                event_id,
                rider_id: format!("rider-{}", rng.below(1_000_000)),
                event_time_ms: event_time,
                lat: lat + jitter(&mut rng),
                lng: lng + jitter(&mut rng),
                kind: 1,
            });
            (cell, record)
        } else {
            let driver = rng.below(DRIVERS);
            let cell = homes[driver];
            let (lat, lng) = centers[cell];
            let record = RawRecord::Driver(RawDriverLocation {
                event_id,
                driver_id: format!("driver-{driver}"),
                event_time_ms: event_time,
                lat: lat + jitter(&mut rng),
                lng: lng + jitter(&mut rng),
                status: 1,
            });
            (cell, record)
        };
        pool.push(Item {
            partition: partition_of[cell],
            base_ms: base,
            jitter_ms,
            ingest_offset,
            record,
        });
    }
    Workload { pool, span_ms }
}

/// Pushes `n` records continuing the cyclic stream at `*pos`.
fn push_n(
    engine: &mut Engine,
    w: &mut Workload,
    pos: &mut u64,
    n: u64,
    offsets: &mut [i64],
    outcomes: &mut Vec<Result<(), primetime_core::Reason>>,
) {
    let end = *pos + n;
    while *pos < end {
        let cycle = *pos / POOL as u64;
        let shift = cycle as i64 * w.span_ms;
        let id_prefix = format!("{:08x}", cycle as u32);
        let from = (*pos % POOL as u64) as usize;
        let to = (from as u64 + (end - *pos)).min(POOL as u64) as usize;
        for item in &mut w.pool[from..to] {
            let t = T0 + item.base_ms + shift - item.jitter_ms;
            let id = match &mut item.record {
                RawRecord::Driver(r) => {
                    r.event_time_ms = t;
                    &mut r.event_id
                }
                RawRecord::Demand(r) => {
                    r.event_time_ms = t;
                    &mut r.event_id
                }
            };
            id.replace_range(0..8, &id_prefix);
        }
        let batch = w.pool[from..to].iter().map(|item| {
            let p = item.partition as usize;
            let offset = offsets[p];
            offsets[p] += 1;
            (
                item.partition,
                offset,
                IngestTime(T0 + item.ingest_offset + shift),
                &item.record,
            )
        });
        outcomes.clear();
        engine.push_batch(batch, outcomes);
        black_box(&outcomes);
        *pos += (to - from) as u64;
    }
}

fn bench_engine(c: &mut Criterion) {
    let mut w = workload();
    let mut engine = Engine::with_formula(Config::default(), PARTITIONS, 1).expect("config");
    let mut offsets = vec![0i64; PARTITIONS as usize];
    let mut pos = 0u64;
    let mut outcomes = Vec::new();
    let warm = Instant::now();
    // Six minutes of event time: windows, dedup sets and cells at steady state.
    let warm_events = 360 * EVENTS_PER_SECOND as u64;
    push_n(
        &mut engine,
        &mut w,
        &mut pos,
        warm_events,
        &mut offsets,
        &mut outcomes,
    );
    let secs = warm.elapsed().as_secs_f64();
    let stats = engine.stats();
    eprintln!(
        "warm-up: {warm_events} events in {secs:.2} s = {:.2} M events/s; active cells {}; ticks {}; rejected {}; decisions {}",
        warm_events as f64 / secs / 1e6,
        engine.active_cells(),
        stats.ticks_fired,
        stats.rejected.total(),
        stats.decisions,
    );

    let chunk = 10_000u64;
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(chunk));
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("push_100k_cells_zipf", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            push_n(
                &mut engine,
                &mut w,
                &mut pos,
                iters * chunk,
                &mut offsets,
                &mut outcomes,
            );
            start.elapsed()
        })
    });
    group.finish();
    let stats = engine.stats();
    eprintln!(
        "after: active cells {}; ticks {}; accepted {}; rejected {:?}",
        engine.active_cells(),
        stats.ticks_fired,
        stats.accepted,
        stats
            .rejected
            .iter()
            .filter(|(_, n)| *n > 0)
            .collect::<Vec<_>>()
    );
}

criterion_group!(benches, bench_engine);
criterion_main!(benches);
