//! Property tests for the invariants DESIGN §1 names: determinism,
//! independence from partition interleaving and shard count, and bounds on
//! every multiplier (finite, within `[1.0, cap]`, multiples of 0.05, per-tick
//! step limits) — also under a hostile model that returns NaN, ±∞ and huge
//! values.

use primetime_core::{
    CellId, Config, Engine, FeatureRow, Geo, IngestTime, ModelError, PolicyParams, PriceDecision,
    PriceModel, RawDemandEvent, RawDriverLocation, RawRecord,
};
use proptest::prelude::*;

const T0: i64 = 1_800_000_000_000;

/// Cells used by generated events: a stadium cell, its six neighbours, and
/// a pair straddling a region boundary.
fn cells() -> Vec<CellId> {
    let geo = Geo::new(8, 5).expect("geo");
    let stadium: CellId = "88283082adfffff".parse().expect("cell");
    let mut out = vec![stadium];
    out.extend_from_slice(geo.neighbours(stadium).as_slice());
    out.push("8828309545fffff".parse().expect("cell"));
    out.push("8828309093fffff".parse().expect("cell"));
    out
}

#[derive(Debug, Clone)]
struct Gen {
    /// Milliseconds after the previous record of the partition.
    gap_ms: i64,
    /// Device clock error: negative = the record is late.
    skew_ms: i64,
    /// Ingest delay after the event time.
    delay_ms: i64,
    cell: usize,
    kind: u8,
    who: u8,
    /// Reuse the id of an earlier record of this partition (duplicate).
    dup_of: Option<usize>,
    /// A bad device clock far in the future or past.
    wild_clock: Option<bool>,
    status: i32,
}

fn gen_record() -> impl Strategy<Value = Gen> {
    (
        0i64..4_000,
        prop_oneof![6 => Just(0i64), 3 => -70_000i64..0, 1 => 0i64..8_000],
        0i64..3_000,
        0usize..9,
        0u8..10,
        0u8..6,
        prop::option::weighted(0.05, 0usize..1_000),
        prop::option::weighted(0.02, any::<bool>()),
        prop_oneof![8 => Just(1i32), 1 => Just(2i32), 1 => 0i32..5],
    )
        .prop_map(
            |(gap_ms, skew_ms, delay_ms, cell, kind, who, dup_of, wild_clock, status)| Gen {
                gap_ms,
                skew_ms,
                delay_ms,
                cell,
                kind,
                who,
                dup_of,
                wild_clock,
                status,
            },
        )
}

type Item = (u32, IngestTime, RawRecord);

/// Turns generated specs into one record sequence per partition.
fn build(partitions: &[Vec<Gen>]) -> Vec<Vec<Item>> {
    let cells = cells();
    partitions
        .iter()
        .enumerate()
        .map(|(p, gens)| {
            let mut t = T0;
            let mut ids: Vec<String> = Vec::new();
            let mut out = Vec::new();
            for (i, g) in gens.iter().enumerate() {
                t += g.gap_ms;
                let ingest = t + g.delay_ms;
                let event_time = match g.wild_clock {
                    Some(true) => t + 365 * 86_400_000,
                    Some(false) => t - 365 * 86_400_000,
                    None => t + g.skew_ms,
                };
                let id = match g.dup_of {
                    Some(j) if !ids.is_empty() => ids[j % ids.len()].clone(),
                    _ => format!("p{p}-e{i}"),
                };
                ids.push(id.clone());
                let (lat, lng) = cells[g.cell].center();
                let record = if g.kind < 6 {
                    RawRecord::Driver(RawDriverLocation {
                        event_id: id,
                        driver_id: format!("d{}-{}", g.cell, g.who),
                        event_time_ms: event_time,
                        lat,
                        lng,
                        status: g.status,
                    })
                } else {
                    RawRecord::Demand(RawDemandEvent {
                        event_id: id,
                        rider_id: format!("r{}", g.who),
                        event_time_ms: event_time,
                        lat,
                        lng,
                        kind: if g.kind < 9 { 1 } else { 2 },
                    })
                };
                out.push((p as u32, IngestTime(ingest), record));
            }
            out
        })
        .collect()
}

/// Merges the partitions in the order `choices` dictates, keeping each
/// partition's own order.
fn interleave(parts: &[Vec<Item>], choices: &[u8]) -> Vec<(i64, Item)> {
    let mut pos = vec![0usize; parts.len()];
    let mut out = Vec::new();
    let mut c = 0;
    loop {
        let open: Vec<usize> = (0..parts.len())
            .filter(|&p| pos[p] < parts[p].len())
            .collect();
        if open.is_empty() {
            return out;
        }
        let pick = open[choices.get(c).copied().unwrap_or(0) as usize % open.len()];
        c += 1;
        out.push((pos[pick] as i64, parts[pick][pos[pick]].clone()));
        pos[pick] += 1;
    }
}

/// A model that is a deterministic function of its row and returns every
/// kind of garbage: NaN, ±∞, negative, huge, tiny.
struct HostileModel;

impl PriceModel for HostileModel {
    fn version(&self) -> &str {
        "hostile"
    }

    fn predict(&self, rows: &[FeatureRow], out: &mut Vec<f32>) -> Result<(), ModelError> {
        out.clear();
        out.extend(rows.iter().map(|r| {
            let h = r.iter().fold(0u32, |a, v| a.rotate_left(5) ^ v.to_bits());
            match h % 7 {
                0 => f32::NAN,
                1 => f32::INFINITY,
                2 => f32::NEG_INFINITY,
                3 => -5.0,
                4 => 1e30,
                5 => 1.0 + (h % 300) as f32 / 100.0,
                _ => r[1] / (r[0] + 1.0),
            }
        }));
        Ok(())
    }
}

fn run_with<M: PriceModel>(
    config: &Config,
    n_partitions: u32,
    shards: usize,
    model: M,
    input: &[(i64, Item)],
) -> (String, Vec<PriceDecision>) {
    let mut engine = Engine::new(config.clone(), n_partitions, shards, model).expect("config");
    for (offset, (p, ingest, record)) in input {
        let _ = engine.push(*p, *offset, *ingest, record);
    }
    engine.finish();
    let decisions = engine.take_decisions();
    // The output: decisions and what was accepted or rejected. The number
    // of ticks fired is not part of it: ticks over no active cell are
    // skipped, and which empty ticks exist may depend on arrival order
    // (they never produce a decision).
    let stats = engine.stats();
    let text =
        serde_json::to_string(&(&decisions, stats.accepted, stats.rejected, stats.decisions))
            .expect("json");
    (text, decisions)
}

fn policy_strategy() -> impl Strategy<Value = PolicyParams> {
    (
        1.0f64..5.0,
        0.05f64..1.5,
        0.05f64..1.5,
        0.0f64..0.95,
        1u32..6,
    )
        .prop_map(|(cap, up, down, w, min)| PolicyParams {
            cap,
            max_step_up: up,
            max_step_down: down,
            smoothing_weight: w,
            min_requests_5m: min,
            ..PolicyParams::default()
        })
}

fn check_bounds(config: &Config, decisions: &[PriceDecision]) -> Result<(), TestCaseError> {
    let p = &config.policy;
    let mut last: std::collections::HashMap<CellId, (i64, f64)> = Default::default();
    for d in decisions {
        let m = d.multiplier.value();
        prop_assert!(m.is_finite());
        prop_assert!(m >= 1.0 && m <= p.cap + 1e-9, "{m} outside [1, {}]", p.cap);
        prop_assert!(
            ((m * 20.0).round() - m * 20.0).abs() < 1e-9,
            "{m} is not a multiple of 0.05"
        );
        let (prev_tick, prev) = last.get(&d.cell).copied().unwrap_or((i64::MIN, 1.0));
        prop_assert!(
            d.tick.0 > prev_tick,
            "one decision per cell and tick, in tick order"
        );
        prop_assert!(m != prev, "only changes are published");
        prop_assert_eq!(d.explanation.previous.value(), prev);
        prop_assert!(
            m - prev <= p.max_step_up + 1e-9,
            "step up {prev} -> {m} exceeds {}",
            p.max_step_up
        );
        prop_assert!(
            prev - m <= p.max_step_down + 1e-9,
            "step down {prev} -> {m} exceeds {}",
            p.max_step_down
        );
        last.insert(d.cell, (d.tick.0, m));
    }
    // finish() fires ticks until every cell is back at 1.0 and evicted, so
    // the last published value of every cell is 1.0.
    for (cell, (_, m)) in last {
        prop_assert_eq!(m, 1.0, "cell {} ends at {}", cell, m);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn same_input_same_output_for_every_interleaving_and_shard_count(
        parts in prop::collection::vec(prop::collection::vec(gen_record(), 0..250), 1..4),
        choices_a in prop::collection::vec(any::<u8>(), 800),
        choices_b in prop::collection::vec(any::<u8>(), 800),
        shards in 2usize..8,
        policy in policy_strategy(),
    ) {
        let config = Config { policy, ..Config::default() };
        let n = parts.len() as u32;
        let items = build(&parts);
        let a = interleave(&items, &choices_a);
        let b = interleave(&items, &choices_b);
        let formula = || primetime_core::FormulaModel::new(config.policy.fallback);
        let (base, decisions) = run_with(&config, n, 1, formula(), &a);
        let (again, _) = run_with(&config, n, 1, formula(), &a);
        prop_assert_eq!(&base, &again, "same input twice");
        let (other_order, _) = run_with(&config, n, 1, formula(), &b);
        prop_assert_eq!(&base, &other_order, "another interleaving");
        let (sharded, _) = run_with(&config, n, shards, formula(), &b);
        prop_assert_eq!(&base, &sharded, "{} shards", shards);
        check_bounds(&config, &decisions)?;
    }

    #[test]
    fn hostile_model_output_stays_within_bounds(
        parts in prop::collection::vec(prop::collection::vec(gen_record(), 0..250), 1..3),
        choices in prop::collection::vec(any::<u8>(), 500),
        policy in policy_strategy(),
    ) {
        let config = Config { policy, ..Config::default() };
        let n = parts.len() as u32;
        let input = interleave(&build(&parts), &choices);
        let (base, decisions) = run_with(&config, n, 1, HostileModel, &input);
        let (sharded, _) = run_with(&config, n, 3, HostileModel, &input);
        prop_assert_eq!(&base, &sharded);
        check_bounds(&config, &decisions)?;
        for d in &decisions {
            let raw = d.explanation.raw;
            prop_assert_eq!(d.explanation.fallback, !raw.is_finite());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// A snapshot (export, serialise, import into a fresh engine with
    /// another shard count) at any point between two records, then the
    /// rest of the input: the same decisions as never stopping.
    #[test]
    fn restoring_an_exported_image_anywhere_changes_no_decision(
        parts in prop::collection::vec(prop::collection::vec(gen_record(), 0..250), 1..4),
        choices in prop::collection::vec(any::<u8>(), 800),
        cut in 0.0f64..1.0,
        shards in 1usize..5,
    ) {
        let config = Config::default();
        let n = parts.len() as u32;
        let input = interleave(&build(&parts), &choices);
        let formula = || primetime_core::FormulaModel::new(config.policy.fallback);
        let (_, whole) = run_with(&config, n, 1, formula(), &input);
        let at = (cut * input.len() as f64) as usize;
        let mut first = Engine::new(config.clone(), n, 2, formula()).expect("config");
        for (offset, (p, ingest, record)) in &input[..at] {
            let _ = first.push(*p, *offset, *ingest, record);
        }
        let mut decisions = first.take_decisions();
        let json = serde_json::to_string(&first.export()).expect("serialise");
        let image: primetime_core::snapshot::EngineImage =
            serde_json::from_str(&json).expect("deserialise");
        let mut second = Engine::new(config.clone(), n, shards, formula()).expect("config");
        second.import(&image).expect("import");
        // The same partition state (dedup tables may differ in layout).
        let sorted = |img: &primetime_core::snapshot::EngineImage| {
            img.partitions
                .iter()
                .map(|p| {
                    let mut seen = p.seen.clone();
                    seen.sort_unstable();
                    (p.max_event, p.last_offset, p.next_sweep, seen)
                })
                .collect::<Vec<_>>()
        };
        prop_assert_eq!(sorted(&second.export()), sorted(&image));
        for (offset, (p, ingest, record)) in &input[at..] {
            let _ = second.push(*p, *offset, *ingest, record);
        }
        second.finish();
        decisions.extend(second.take_decisions());
        prop_assert_eq!(decisions, whole);
    }
}
