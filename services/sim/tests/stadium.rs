//! The default simulation surges the stadium cell in the reference engine.

use primetime_core::{Config, Engine, IngestTime};
use primetime_proto::decode;
use primetime_sim::{SimConfig, Simulator};

#[test]
fn stadium_cell_surges_within_the_first_minute() {
    let config = SimConfig::default();
    let start = config.start_ms;
    let mut sim = Simulator::new(config).expect("valid config");
    let stadium = sim.stadium_cell().expect("a stadium by default");
    let mut engine =
        Engine::with_formula(Config::default(), sim.partitions(), 1).expect("valid engine");

    // Records up to 90 s so that every partition's watermark passes the
    // ticks of the first minute.
    let mut records = Vec::new();
    sim.advance_to(start + 90_000, &mut records);
    for r in &records {
        match decode(r.topic, &r.payload) {
            Ok(raw) => {
                let _ = engine.push(r.partition, r.offset, IngestTime(r.ingest_time_ms), &raw);
            }
            Err(_) => engine.push_malformed(r.partition, r.offset),
        }
    }
    let bucket_ms = engine.config().bucket_ms;
    let decisions = engine.take_decisions();
    let surge = decisions
        .iter()
        .filter(|d| d.cell == stadium && d.tick.end_ms(bucket_ms) <= start + 60_000)
        .map(|d| d.multiplier.value())
        .fold(1.0, f64::max);
    assert!(
        surge > 1.0,
        "stadium cell not surging in the first minute; decisions there: {:?}",
        decisions
            .iter()
            .filter(|d| d.cell == stadium)
            .map(|d| (d.tick, d.multiplier.value()))
            .collect::<Vec<_>>()
    );
    // The rest of the city is calm at the start: the stadium is the peak.
    let elsewhere = decisions
        .iter()
        .filter(|d| d.cell != stadium && d.tick.end_ms(bucket_ms) <= start + 60_000)
        .map(|d| d.multiplier.value())
        .fold(1.0, f64::max);
    assert!(elsewhere <= surge, "{elsewhere} > {surge}");
}

#[test]
fn without_the_stadium_its_cell_stays_calm() {
    let config = SimConfig {
        stadium: None,
        ..SimConfig::default()
    };
    let start = config.start_ms;
    let mut sim = Simulator::new(config).expect("valid config");
    assert_eq!(sim.stadium_cell(), None);
    let stadium = Simulator::new(SimConfig::default())
        .expect("valid config")
        .stadium_cell()
        .expect("a stadium by default");
    let mut engine =
        Engine::with_formula(Config::default(), sim.partitions(), 1).expect("valid engine");
    let mut records = Vec::new();
    sim.advance_to(start + 90_000, &mut records);
    for r in &records {
        let raw = decode(r.topic, &r.payload).expect("no noise");
        let _ = engine.push(r.partition, r.offset, IngestTime(r.ingest_time_ms), &raw);
    }
    assert!(
        engine
            .take_decisions()
            .iter()
            .all(|d| d.cell != stadium || d.multiplier.value() == 1.0)
    );
}
