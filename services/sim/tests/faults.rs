//! Injected faults: rates, ground-truth labels, and how the core sees them.

use std::collections::{HashMap, HashSet};

use primetime_core::record::Validator;
use primetime_core::{Geo, IngestTime, Reason};
use primetime_proto::decode;
use primetime_sim::{Label, Noise, SimConfig, SimRecord, Simulator};

const MINUTES: i64 = 4;

fn run(noise: Noise) -> Vec<SimRecord> {
    let config = SimConfig {
        drivers: 1_000,
        noise,
        ..SimConfig::default()
    };
    let mut sim = Simulator::new(config).expect("valid config");
    let mut out = Vec::new();
    sim.advance_to(sim.now_ms() + MINUTES * 60_000, &mut out);
    out
}

fn counts(records: &[SimRecord]) -> HashMap<Label, usize> {
    let mut counts = HashMap::new();
    for r in records {
        *counts.entry(r.label).or_insert(0) += 1;
    }
    counts
}

fn noisy() -> Noise {
    Noise {
        duplicate: 0.05,
        out_of_order: 0.05,
        late: 0.05,
        bad_clock: 0.05,
        malformed: 0.05,
    }
}

#[test]
fn without_noise_every_record_is_clean_and_valid() {
    let records = run(Noise::default());
    let validator = Validator::new(Geo::new(8, 5).expect("geo"), 30_000, 600_000);
    let mut ids = HashSet::new();
    for r in &records {
        assert_eq!(r.label, Label::Clean);
        let raw = decode(r.topic, &r.payload).expect("clean payloads decode");
        let delay = r.ingest_time_ms - raw.event_time_ms();
        assert!((20..=400).contains(&delay), "{delay}");
        assert_eq!(
            validator.validate(IngestTime(r.ingest_time_ms), &raw).err(),
            None
        );
        assert!(ids.insert(raw.event_id().to_owned()), "repeated event id");
    }
}

#[test]
fn each_label_appears_at_its_rate() {
    let records = run(noisy());
    let counts = counts(&records);
    let n = records.len() as f64;
    assert!(n > 50_000.0, "{n}");
    // Records whose ingest is delayed past the end of the run are not
    // emitted: with generation times uniform over the run, a fault adding
    // a mean delay `d` keeps a share 1 - d / run of its records.
    let run_s = (MINUTES * 60) as f64;
    let kept = |label: Label| match label {
        Label::Late => 1.0 - 65.0 / run_s,
        Label::Duplicate => 1.0 - 10.25 / run_s,
        _ => 1.0,
    };
    // A duplicate adds a record, so shares are relative to 1 + its rate.
    let total = 1.0 + 0.05 * kept(Label::Duplicate);
    for label in &Label::ALL[1..] {
        let expected = 0.05 * kept(*label) / total;
        let share = counts.get(label).copied().unwrap_or(0) as f64 / n;
        assert!(
            (share - expected).abs() < 0.1 * expected,
            "{label}: {share} vs {expected}"
        );
    }
}

#[test]
fn only_configured_faults_appear() {
    let records = run(Noise {
        late: 0.1,
        ..Noise::default()
    });
    let by_label = counts(&records);
    let mut labels: Vec<Label> = by_label.keys().copied().collect();
    labels.sort();
    assert_eq!(labels, [Label::Clean, Label::Late]);
    let share = by_label[&Label::Late] as f64 / records.len() as f64;
    // Late records due after the end of the run are missing (see above).
    let expected = 0.1 * (1.0 - 65.0 / (MINUTES * 60) as f64);
    assert!((share - expected).abs() < 0.1 * expected, "{share}");
}

#[test]
fn faults_are_what_their_labels_say() {
    let records = run(noisy());
    let validator = Validator::new(Geo::new(8, 5).expect("geo"), 30_000, 600_000);
    let mut seen: HashMap<String, &SimRecord> = HashMap::new();
    let mut bad_clock = (0, 0);
    for r in &records {
        let decoded = decode(r.topic, &r.payload);
        if r.label == Label::Malformed {
            assert!(decoded.is_err(), "malformed payload decodes");
            continue;
        }
        let raw = decoded.expect("only malformed payloads fail to decode");
        let ingest = IngestTime(r.ingest_time_ms);
        let lag = r.ingest_time_ms - raw.event_time_ms();
        match r.label {
            Label::Clean => assert!((20..=400).contains(&lag), "{lag}"),
            Label::OutOfOrder => assert!((520..=4_400).contains(&lag), "{lag}"),
            Label::Late => assert!((10_000..=120_000).contains(&lag), "{lag}"),
            Label::BadClock => match validator.validate(ingest, &raw) {
                Err(Reason::Future) => bad_clock.0 += 1,
                Err(Reason::TooOld) => bad_clock.1 += 1,
                other => panic!("bad clock record validated as {other:?}"),
            },
            Label::Duplicate => {
                let first = seen
                    .get(raw.event_id())
                    .expect("a duplicate repeats an earlier event id");
                assert_eq!(first.payload, r.payload);
                assert_eq!(first.partition, r.partition);
                let gap = r.ingest_time_ms - first.ingest_time_ms;
                assert!((500..=20_000).contains(&gap), "{gap}");
            }
            Label::Malformed => unreachable!(),
        }
        if r.label != Label::Duplicate {
            assert!(
                seen.insert(raw.event_id().to_owned(), r).is_none(),
                "an original event id is repeated"
            );
        }
    }
    // Both directions of bad clock occur.
    assert!(bad_clock.0 > 100 && bad_clock.1 > 100, "{bad_clock:?}");
}

#[test]
fn noise_does_not_change_the_world() {
    // The world and the noise draw from separate streams: every clean
    // record of a noisy run is a record of the noise-free run.
    let clean: HashSet<(i64, u32, Vec<u8>)> = run(Noise::default())
        .into_iter()
        .map(|r| (r.ingest_time_ms, r.partition, r.payload))
        .collect();
    let noisy = run(noisy());
    let mut matched = 0;
    for r in noisy.iter().filter(|r| r.label == Label::Clean) {
        assert!(clean.contains(&(r.ingest_time_ms, r.partition, r.payload.clone())));
        matched += 1;
    }
    assert!(matched as f64 > 0.7 * clean.len() as f64);
}
