//! Golden scenarios: event sequences stored as data in `tests/golden/*.json`
//! and the decisions they must produce in `*.expected.json`.
//!
//! Each scenario runs with 1, 3 and 7 shards; all runs must equal the
//! expected file. `PRIMETIME_BLESS=1 cargo test -p primetime-core --test
//! golden` rewrites the expected files — review the diff before committing.
//!
//! Scenario format (times in ms relative to `T0`):
//! ```json
//! { "description": "...", "partitions": 1, "config": { /* Config overrides */ },
//!   "equivalent_without": ["tag"],   // output must equal the run without these events
//!   "events": [ { "p": 0, "t": 0, "delay": 0, "type": "request|check|driver|checkpoint",
//!                 "cell": "88283082adfffff" | "lat": 0, "lng": 0, "status": "available",
//!                 "id": "e{i}", "who": "d1", "repeat": 1, "every_ms": 0, "tag": "x",
//!                 "name": "checkpoint name" } ] }
//! ```
//! Events arrive in order of ingest time (`t + delay`), ties in file order.
//! A checkpoint records the number of active cells at that point.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use primetime_core::{
    CellId, Config, Engine, IngestTime, PriceDecision, RawDemandEvent, RawDriverLocation, RawRecord,
};
use serde::Deserialize;
use serde_json::{Value, json};

/// Scenario time zero: 2027-01-15T08:00:00Z, a multiple of the bucket.
const T0: i64 = 1_800_000_000_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Scenario {
    description: String,
    #[serde(default = "one")]
    partitions: u32,
    #[serde(default)]
    config: Config,
    #[serde(default)]
    equivalent_without: Vec<String>,
    events: Vec<EventSpec>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventSpec {
    #[serde(default)]
    p: u32,
    #[serde(default)]
    t: i64,
    #[serde(default)]
    delay: i64,
    #[serde(rename = "type")]
    kind: String,
    cell: Option<String>,
    lat: Option<f64>,
    lng: Option<f64>,
    status: Option<String>,
    id: Option<String>,
    who: Option<String>,
    #[serde(default = "one")]
    repeat: u32,
    #[serde(default)]
    every_ms: i64,
    tag: Option<String>,
    name: Option<String>,
}

#[derive(Debug, Clone)]
enum Input {
    Record {
        p: u32,
        ingest: i64,
        record: RawRecord,
        tag: Option<String>,
    },
    Checkpoint {
        ingest: i64,
        name: String,
    },
}

impl Input {
    fn ingest(&self) -> i64 {
        match self {
            Input::Record { ingest, .. } | Input::Checkpoint { ingest, .. } => *ingest,
        }
    }
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn load(name: &str) -> Scenario {
    let path = golden_dir().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn expand(s: &Scenario) -> Vec<Input> {
    let mut out = Vec::new();
    let mut seq = 0u64;
    for spec in &s.events {
        for i in 0..spec.repeat {
            let t = spec.t + i64::from(i) * spec.every_ms;
            let ingest = T0 + t + spec.delay;
            let subst = |s: &str| s.replace("{i}", &i.to_string());
            if spec.kind == "checkpoint" {
                out.push(Input::Checkpoint {
                    ingest,
                    name: spec.name.clone().expect("checkpoint name"),
                });
                continue;
            }
            seq += 1;
            let (lat, lng) = match (&spec.cell, spec.lat, spec.lng) {
                (Some(c), _, _) => c.parse::<CellId>().expect("scenario cell").center(),
                (None, Some(lat), Some(lng)) => (lat, lng),
                _ => panic!("event needs `cell` or `lat`+`lng`: {spec:?}"),
            };
            let event_id = spec
                .id
                .as_deref()
                .map_or_else(|| format!("auto-{}-{seq}", spec.p), subst);
            let who = spec
                .who
                .as_deref()
                .map_or_else(|| format!("who-{seq}"), subst);
            let record = match spec.kind.as_str() {
                "driver" => RawRecord::Driver(RawDriverLocation {
                    event_id,
                    driver_id: who,
                    event_time_ms: T0 + t,
                    lat,
                    lng,
                    status: match spec.status.as_deref().unwrap_or("available") {
                        "available" => 1,
                        "on_trip" => 2,
                        "offline" => 3,
                        other => other.parse().expect("status name or number"),
                    },
                }),
                "request" | "check" => RawRecord::Demand(RawDemandEvent {
                    event_id,
                    rider_id: who,
                    event_time_ms: T0 + t,
                    lat,
                    lng,
                    kind: if spec.kind == "request" { 1 } else { 2 },
                }),
                other => panic!("unknown event type {other}"),
            };
            out.push(Input::Record {
                p: spec.p,
                ingest,
                record,
                tag: spec.tag.clone(),
            });
        }
    }
    // Arrival order: ingest time, ties in file order (stable sort).
    out.sort_by_key(Input::ingest);
    out
}

struct Outcome {
    decisions: Vec<PriceDecision>,
    json: Value,
}

fn run(s: &Scenario, inputs: &[Input], shards: usize, skip_tags: &[String]) -> Outcome {
    let mut engine =
        Engine::with_formula(s.config.clone(), s.partitions, shards).expect("valid config");
    let mut offsets = vec![0i64; s.partitions as usize];
    let mut checkpoints = BTreeMap::new();
    for input in inputs {
        match input {
            Input::Record {
                p,
                ingest,
                record,
                tag,
            } => {
                if tag.as_ref().is_some_and(|t| skip_tags.contains(t)) {
                    continue;
                }
                let offset = offsets[*p as usize];
                offsets[*p as usize] += 1;
                let _ = engine.push(*p, offset, IngestTime(*ingest), record);
            }
            Input::Checkpoint { name, .. } => {
                checkpoints.insert(name.clone(), engine.active_cells());
            }
        }
    }
    engine.finish();
    let decisions = engine.take_decisions();
    let stats = engine.stats();
    let rejected: BTreeMap<_, _> = stats
        .rejected
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| (r.as_str(), n))
        .collect();
    let json = json!({
        "accepted": stats.accepted,
        "rejected": rejected,
        "checkpoints": checkpoints,
        "decisions": decisions,
    });
    Outcome { decisions, json }
}

/// Runs a scenario with 1, 3 and 7 shards, checks all against the expected
/// file and any `equivalent_without` claims, returns the 1-shard outcome.
fn check(name: &str) -> Outcome {
    let s = load(name);
    assert!(!s.description.is_empty());
    let inputs = expand(&s);
    let base = run(&s, &inputs, 1, &[]);
    for shards in [3, 7] {
        let other = run(&s, &inputs, shards, &[]);
        assert_eq!(
            other.json, base.json,
            "{name}: {shards} shards differ from 1 shard"
        );
    }
    if !s.equivalent_without.is_empty() {
        let without = run(&s, &inputs, 1, &s.equivalent_without);
        assert_eq!(
            without.json["decisions"], base.json["decisions"],
            "{name}: events tagged {:?} changed the decisions",
            s.equivalent_without
        );
    }
    let expected_path = golden_dir().join(format!("{name}.expected.json"));
    let actual = serde_json::to_string_pretty(&base.json).expect("json") + "\n";
    if std::env::var_os("PRIMETIME_BLESS").is_some() {
        std::fs::write(&expected_path, &actual).expect("write expected");
    } else {
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run with PRIMETIME_BLESS=1 to create)",
                expected_path.display()
            )
        });
        let expected: Value = serde_json::from_str(&expected).expect("expected json");
        assert_eq!(
            base.json,
            expected,
            "{name}: output differs from {}",
            expected_path.display()
        );
    }
    base
}

fn cell(hex: &str) -> CellId {
    hex.parse().expect("cell")
}

fn multipliers_of(o: &Outcome, c: CellId) -> Vec<(i64, f64)> {
    o.decisions
        .iter()
        .filter(|d| d.cell == c)
        .map(|d| (d.tick.0, d.multiplier.value()))
        .collect()
}

const STADIUM: &str = "88283082adfffff";

#[test]
fn demand_spike_in_one_cell_surges_that_cell() {
    let o = check("demand_spike");
    let stadium = multipliers_of(&o, cell(STADIUM));
    let peak = stadium.iter().map(|(_, m)| *m).fold(1.0, f64::max);
    assert!(peak >= 1.5, "stadium should surge, got {stadium:?}");
    // The quiet cell next door sees the surge only through smoothing, if
    // at all, and never as much.
    let quiet = multipliers_of(&o, cell("8828308053fffff"));
    assert!(quiet.iter().all(|(_, m)| *m < peak), "{quiet:?}");
    // Prices never change by more than the step limits between ticks.
    let mut prev = 1.0;
    for (_, m) in &stadium {
        assert!(
            *m - prev <= 0.5 + 1e-9 && prev - *m <= 0.25 + 1e-9,
            "{stadium:?}"
        );
        prev = *m;
    }
}

#[test]
fn a_surge_that_ends_publishes_the_first_one_after_it() {
    let o = check("surge_ends");
    let s = multipliers_of(&o, cell(STADIUM));
    let first_surge = s.iter().position(|(_, m)| *m > 1.0).expect("a surge");
    let end = s[first_surge..]
        .iter()
        .position(|(_, m)| *m == 1.0)
        .expect("the surge ends")
        + first_surge;
    // The 1.0 is published while drivers are still pinging, i.e. before
    // the end of input (ticks up to 180_000_059 carry data).
    assert!(s[end].0 < T0 / 10_000 + 60, "{s:?}");
    assert_eq!(s.last().map(|x| x.1), Some(1.0));
    assert_eq!(
        s.iter().filter(|(_, m)| *m == 1.0).count(),
        1,
        "exactly one end-of-surge decision: {s:?}"
    );
}

#[test]
fn late_records_are_retimed_into_an_open_bucket_or_rejected() {
    let o = check("late_records");
    assert_eq!(o.json["rejected"]["late"], 1);
    // The re-timed requests count: with them the cell surges, and the
    // `without` run (tag `retimed`) must differ.
    let s = load("late_records");
    let inputs = expand(&s);
    let without = run(&s, &inputs, 1, &["retimed".to_owned()]);
    assert_ne!(
        without.json["decisions"], o.json["decisions"],
        "re-timed records must be counted"
    );
    let tick_of_retimed = o
        .decisions
        .iter()
        .find(|d| d.explanation.features.requests_1m >= 8)
        .map(|d| d.tick.0)
        .expect("re-timed requests counted in one bucket");
    // They were due at t=0..9s (bucket T0) but arrive when the watermark
    // is at 45 s, so they land in bucket T0+4.
    assert!(tick_of_retimed >= T0 / 10_000 + 4, "{tick_of_retimed}");
}

#[test]
fn records_a_year_off_are_rejected_and_change_nothing() {
    let o = check("bad_clocks");
    assert_eq!(o.json["rejected"]["future"], 1);
    assert_eq!(o.json["rejected"]["too_old"], 1);
    assert!(!o.decisions.is_empty());
}

#[test]
fn duplicates_are_dropped_and_change_nothing() {
    let o = check("duplicates");
    assert_eq!(o.json["rejected"]["duplicate"], 12);
}

#[test]
fn idle_cells_are_evicted_at_one() {
    let o = check("idle_eviction");
    let c = &o.json["checkpoints"];
    assert_eq!(c["both_active"], 2);
    assert_eq!(
        c["a_still_in_window"], 2,
        "a's requests are still in the 5 m window"
    );
    assert_eq!(
        c["a_evicted"], 1,
        "a is idle at 1.0 after its window emptied"
    );
}

#[test]
fn neighbour_features_cross_region_and_shard_boundaries() {
    let a = cell("8828309545fffff");
    let b = cell("8828309093fffff");
    let geo = primetime_core::Geo::new(8, 5).expect("geo");
    assert_ne!(
        geo.region_of(a),
        geo.region_of(b),
        "the pair must straddle a region boundary"
    );
    assert!(
        [3, 7]
            .iter()
            .any(|&n| primetime_core::shard_of(geo.region_of(a), n)
                != primetime_core::shard_of(geo.region_of(b), n)),
        "some shard count must split the pair"
    );
    let o = check("region_boundary");
    let from_b = o
        .decisions
        .iter()
        .filter(|d| d.cell == a)
        .map(|d| d.explanation.features.requests_5m_ring)
        .max()
        .expect("a is priced");
    assert!(
        from_b >= 20,
        "a sees b's requests through the ring feature: {from_b}"
    );
    let a_supply_ring = o
        .decisions
        .iter()
        .filter(|d| d.cell == b)
        .map(|d| d.explanation.features.supply_ring)
        .max();
    assert!(
        a_supply_ring.is_some_and(|s| s >= 2),
        "b sees a's drivers: {a_supply_ring:?}"
    );
}
