//! `primetime simulate --dataset FILE`: the training set of the pricing
//! model — per cell and tick, the core's feature row (the serving code
//! path: the reference `Engine` over the simulated records) and the
//! simulator's market-clearing multiplier at the tick's end as the target.

use std::collections::HashMap;
use std::io::Write;

use primetime_core::{CellId, Config, Engine, FEATURE_NAMES, IngestTime, Tick};
use primetime_sim::{SimConfig, Simulator};

/// Rows written and ticks covered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DatasetSummary {
    pub rows: u64,
    pub ticks: u64,
    pub records: u64,
}

/// Simulates `minutes` and writes the CSV
/// `tick,cell,<FEATURE_NAMES...>,target` to `out`. Rows of cells outside
/// the simulated city (trips crossing its edge) have no target and are
/// skipped. `prev_multiplier` comes from the formula-priced run.
pub fn write_dataset<W: Write>(
    sim_config: SimConfig,
    core: &Config,
    minutes: u32,
    out: W,
) -> anyhow::Result<DatasetSummary> {
    let mut sim = Simulator::new(sim_config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut engine = Engine::with_formula(core.clone(), sim.partitions(), 1)?;
    engine.record_rows();
    let cap = engine_cap(core);
    let cells = sim.cells();
    let bucket = core.bucket_ms;
    let end = sim.now_ms() + i64::from(minutes) * 60_000;
    let mut out = std::io::BufWriter::new(out);
    writeln!(out, "tick,cell,{},target", FEATURE_NAMES.join(","))?;
    let mut targets: HashMap<(i64, CellId), f64> = HashMap::new();
    let mut records = Vec::new();
    let mut summary = DatasetSummary::default();
    let mut next_end = (sim.now_ms().div_euclid(bucket) + 1) * bucket;
    loop {
        let until = next_end.min(end);
        sim.advance_to(until, &mut records);
        if until == next_end {
            // The world as it is at the end of bucket k = tick k.
            let k = next_end / bucket - 1;
            for &c in &cells {
                targets.insert((k, c), sim.clearing_multiplier(c, cap));
            }
            next_end += bucket;
        }
        for r in records.drain(..) {
            summary.records += 1;
            match primetime_proto::decode(r.topic, &r.payload) {
                Ok(record) => {
                    let _ =
                        engine.push(r.partition, r.offset, IngestTime(r.ingest_time_ms), &record);
                }
                Err(_) => engine.push_malformed(r.partition, r.offset),
            }
        }
        if until >= end {
            engine.finish();
        }
        let rows = engine.take_rows();
        let mut last_tick = None;
        for (Tick(k), row) in rows {
            if last_tick != Some(k) {
                summary.ticks += 1;
                last_tick = Some(k);
            }
            let Some(target) = targets.get(&(k, row.cell)) else {
                continue;
            };
            let f = row.features.to_row();
            write!(out, "{k},{}", row.cell)?;
            for v in f {
                write!(out, ",{v}")?;
            }
            writeln!(out, ",{target:.6}")?;
            summary.rows += 1;
        }
        if let Some(k) = last_tick {
            targets.retain(|(t, _), _| *t > k);
        }
        if until >= end {
            break;
        }
    }
    out.flush()?;
    Ok(summary)
}

fn engine_cap(core: &Config) -> f64 {
    core.policy
        .emergency_cap
        .map_or(core.policy.cap, |e| e.min(core.policy.cap))
}
