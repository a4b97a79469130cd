//! The output is a pure function of the config and the final `until_ms`.

use primetime_sim::{Noise, SimConfig, SimRecord, Simulator};

fn config(seed: u64) -> SimConfig {
    SimConfig {
        seed,
        drivers: 400,
        demand_per_s: 3.0,
        noise: Noise {
            duplicate: 0.02,
            out_of_order: 0.02,
            late: 0.02,
            bad_clock: 0.02,
            malformed: 0.02,
        },
        ..SimConfig::default()
    }
}

fn run_chunked(config: SimConfig, until_ms: i64, chunk_ms: i64) -> Vec<SimRecord> {
    let mut sim = Simulator::new(config).expect("valid config");
    let mut out = Vec::new();
    let mut t = sim.now_ms();
    while t < until_ms {
        t = (t + chunk_ms).min(until_ms);
        sim.advance_to(t, &mut out);
        assert_eq!(sim.now_ms(), t);
    }
    out
}

#[test]
fn same_config_same_output_however_chunked() {
    let c = config(7);
    let until = c.start_ms + 1_000_000;
    let once = run_chunked(c.clone(), until, i64::MAX / 4);
    let per_second = run_chunked(c.clone(), until, 1_000);
    let odd = run_chunked(c.clone(), until, 7_777);
    let tiny = run_chunked(c.clone(), c.start_ms + 30_000, 13);
    assert!(once.len() > 50_000, "{}", once.len());
    assert!(once == per_second, "1 call vs 1000 calls of 1 s differ");
    assert!(once == odd, "1 call vs calls of 7.777 s differ");
    assert!(
        once[..tiny.len()] == tiny[..],
        "a prefix run must be a prefix of the longer run"
    );
    assert_eq!(run_chunked(c, until, i64::MAX / 4), once, "a rerun differs");
}

#[test]
fn until_in_the_past_emits_nothing() {
    let c = config(7);
    let mut sim = Simulator::new(c.clone()).expect("valid config");
    let mut out = Vec::new();
    sim.advance_to(c.start_ms + 10_000, &mut out);
    let n = out.len();
    sim.advance_to(c.start_ms + 5_000, &mut out);
    sim.advance_to(c.start_ms + 10_000, &mut out);
    assert_eq!(out.len(), n);
    assert_eq!(sim.now_ms(), c.start_ms + 10_000);
    assert!(
        out.iter()
            .all(|r| r.ingest_time_ms >= c.start_ms && r.ingest_time_ms < c.start_ms + 10_000)
    );
}

#[test]
fn different_seeds_differ() {
    let a = config(7);
    let until = a.start_ms + 20_000;
    let x = run_chunked(a, until, 20_000);
    let y = run_chunked(config(8), until, 20_000);
    assert!(!x.is_empty() && !y.is_empty());
    assert_ne!(x, y);
    // Not only the event-id prefix: the payloads' positions differ too.
    let decoded = |r: &[SimRecord]| -> Vec<(f64, f64)> {
        r.iter()
            .filter_map(|r| primetime_proto::decode(r.topic, &r.payload).ok())
            .map(|r| r.lat_lng())
            .take(100)
            .collect()
    };
    assert_ne!(decoded(&x), decoded(&y));
}

#[test]
fn simulator_can_move_to_another_thread() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<Simulator>();
    assert_send::<SimRecord>();
}
