//! The closed-loop market through the actor pipeline (DESIGN §7a): riders
//! see the pipeline's prices in lockstep with its ticks, so the whole loop
//! is a pure function of (config, seed, model) — the same outcome for 1 or
//! 7 shards, and twice the same.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use primetime::config::ServiceConfig;
use primetime::inputs::SimInput;
use primetime::pipeline::{CollectSink, Lockstep, PipelineOptions};
use primetime::replay;
use primetime_sim::{MarketConfig, MarketLog, SimConfig, Simulator};

/// A small closed-loop city with the stadium crowd two minutes in.
fn city() -> SimConfig {
    let mut sim = SimConfig {
        seed: 21,
        drivers: 900,
        demand_per_s: 3.0,
        market: Some(MarketConfig::default()),
        ..SimConfig::default()
    };
    if let Some(stadium) = &mut sim.stadium {
        stadium.starts_after_ms = 120_000;
        stadium.riders = 2_500;
    }
    sim
}

/// Runs `minutes` of the closed loop with `shards` shards, as fast as the
/// machine allows; the market log and every published decision (JSON).
fn run(shards: usize, minutes: i64) -> (MarketLog, Vec<String>) {
    run_city(city(), shards, minutes)
}

fn run_city(sim_config: SimConfig, shards: usize, minutes: i64) -> (MarketLog, Vec<String>) {
    let sim = Simulator::new(sim_config).expect("valid city");
    let end = sim.now_ms() + minutes * 60_000;
    let config = ServiceConfig {
        shards,
        ..ServiceConfig::default()
    };
    let lockstep = Arc::new(Lockstep::default());
    let outcome = Arc::new(Mutex::new(None));
    let input = SimInput::new(sim, 1e9, Arc::new(AtomicBool::new(false)))
        .closed_loop(Arc::clone(&lockstep), config.core.bucket_ms)
        .ending_at(end, Arc::clone(&outcome));
    let options = PipelineOptions {
        lockstep: Some(lockstep),
        ..PipelineOptions::sized(shards, config.mailbox, config.batch_size)
    };
    let sink = CollectSink::default();
    let model = primetime::model::choose("embedded", config.core.policy.fallback).model;
    replay::run_with_options(&config, options, input, sink.clone(), model).expect("closed loop");
    let log = outcome
        .lock()
        .expect("outcome")
        .take()
        .expect("the input kept the market log");
    let decisions = sink
        .0
        .lock()
        .expect("decisions")
        .iter()
        .map(|d| serde_json::to_string(d).expect("json"))
        .collect();
    (log, decisions)
}

#[test]
fn the_closed_loop_is_the_same_for_1_and_7_shards_and_twice() {
    let (one, one_decisions) = run(1, 12);
    // Not vacuous: prices moved, riders saw them, rides happened.
    let surged = one
        .price_changes
        .iter()
        .flatten()
        .filter(|(_, m)| *m > 1.0)
        .count();
    assert!(surged > 0, "the stadium crowd surged some cell");
    assert!(
        one.rides.iter().any(|r| r.multiplier > 1.0),
        "a rider paid a surge"
    );
    assert!(one.rides.iter().filter(|r| r.wait_ms.is_some()).count() > 100);
    assert!(!one_decisions.is_empty());

    let (seven, seven_decisions) = run(7, 12);
    assert_eq!(one_decisions, seven_decisions, "decisions: 1 vs 7 shards");
    assert!(one == seven, "market outcome: 1 vs 7 shards");
    let (again, _) = run(1, 12);
    assert!(one == again, "market outcome: the same run twice");
}

/// The service's closed loop (actor pipeline, 2 shards, lockstep through
/// the source and clock) and the market benchmark's (the reference engine,
/// one thread) are the same loop: identical outcomes for the benchmark's
/// stadium city priced by the model.
#[test]
fn the_service_loop_equals_the_benchmark_loop() {
    use primetime_market::{PolicyKind, RunSpec, Scenario, Timeline, run as bench_run};
    let timeline = Timeline {
        warmup_ms: 0,
        measure_ms: 10 * 60_000,
        cooldown_ms: 0,
    };
    let mut spec = RunSpec::new(Scenario::Stadium, PolicyKind::Model, 3, timeline);
    spec.model = Some(std::sync::Arc::new(
        primetime_model::embedded().expect("the embedded model"),
    ));
    let bench = bench_run(&spec).expect("benchmark run");
    let minutes = timeline.total_ms() / 60_000;
    let (service, decisions) = run_city(bench.setup.sim.clone(), 2, minutes);
    assert!(!decisions.is_empty(), "the service priced");
    assert!(
        bench.log.rides.iter().any(|r| r.multiplier > 1.0),
        "riders paid a surge"
    );
    assert!(
        bench.log == service,
        "the service's and the benchmark's loops differ"
    );
}

/// The embedded default's city (what `cargo run --release` serves): the
/// stadium crowd surges its cell, drivers are drawn in (the idle drivers
/// around it rise), and the surge fades back toward 1.0 while the service
/// keeps running — the story the map tells (issue 15).
#[test]
fn the_embedded_city_surges_and_the_surge_fades_as_drivers_arrive() {
    let sim = ServiceConfig::default().sim;
    let stadium = sim
        .stadium
        .clone()
        .expect("the embedded city has a stadium");
    let cell = primetime_core::Geo::new(8, 5)
        .expect("resolutions")
        .cell_of(stadium.lat, stadium.lng)
        .expect("the stadium's cell")
        .to_string();
    let (_log, decisions) = run_city(sim, 2, 30);
    // (minute, multiplier, idle drivers in the cell + its ring) per change
    // of the stadium cell's price.
    let mut path: Vec<(f64, f64, f64)> = Vec::new();
    let mut first_tick = None;
    for d in &decisions {
        let v: serde_json::Value = serde_json::from_str(d).expect("json");
        if v["cell"].as_str() != Some(cell.as_str()) {
            continue;
        }
        let tick = v["tick"].as_i64().expect("tick");
        let t0 = *first_tick.get_or_insert(tick);
        let f = &v["explanation"]["features"];
        let idle = f["supply"].as_f64().expect("supply") + f["supply_ring"].as_f64().expect("ring");
        path.push((
            (tick - t0) as f64 / 6.0,
            v["multiplier"].as_f64().expect("multiplier"),
            idle,
        ));
    }
    eprintln!("stadium cell (minute, multiplier, idle in reach): {path:?}");
    let peak = path
        .iter()
        .position(|p| p.1 >= 2.0)
        .expect("the crowd surges the stadium cell to 2.0 or more");
    assert!(
        path[peak].0 <= 2.0,
        "the surge shows within 2 minutes: {:?}",
        path[peak]
    );
    let faded = peak
        + path[peak..]
            .iter()
            .position(|p| p.1 <= 1.2)
            .expect("the surge fades back to 1.2 or less");
    assert!(
        path[faded].0 <= 25.0,
        "faded by minute 25: {:?}",
        path[faded]
    );
    // Drivers arrived: around the fade, more drivers idle in reach than at
    // the surge's lowest.
    let lowest = path[peak..faded]
        .iter()
        .map(|p| p.2)
        .fold(f64::INFINITY, f64::min);
    assert!(
        path[faded].2 >= lowest + 10.0,
        "drivers drawn in: {} idle in reach at the fade vs {lowest} during the surge",
        path[faded].2
    );
    // And it stays calm once the crowd is gone.
    assert!(
        path[faded..].iter().all(|p| p.1 <= 1.5),
        "no second surge: {:?}",
        &path[faded..]
    );
}
