//! The closed loop: deterministic, priced by what it observes, and a
//! no-op for the open loop.

use primetime_core::CellId;
use primetime_sim::{MarketConfig, MarketLog, SimConfig, Simulator};

fn config(seed: u64) -> SimConfig {
    SimConfig {
        seed,
        drivers: 600,
        demand_per_s: 1.0,
        market: Some(MarketConfig::default()),
        ..SimConfig::default()
    }
}

/// Runs 10 minutes, observing `price` everywhere every 10 s, advancing in
/// chunks of `chunk_ms` inside each 10 s.
fn run(config: SimConfig, price: f64, chunk_ms: i64) -> (Vec<primetime_sim::SimRecord>, MarketLog) {
    let mut sim = Simulator::new(config).expect("valid config");
    let cells: Vec<(CellId, f64)> = sim.cells().into_iter().map(|c| (c, price)).collect();
    let end = sim.now_ms() + 600_000;
    let mut out = Vec::new();
    while sim.now_ms() < end {
        sim.observe_prices(&cells);
        let bucket_end = sim.now_ms() + 10_000;
        while sim.now_ms() < bucket_end {
            let next = (sim.now_ms() + chunk_ms).min(bucket_end);
            sim.advance_to(next, &mut out);
        }
    }
    let log = sim.market_log().expect("closed loop").clone();
    (out, log)
}

#[test]
fn closed_loop_is_deterministic_however_chunked() {
    let (a, log_a) = run(config(3), 1.5, 10_000);
    let (b, log_b) = run(config(3), 1.5, 1_000);
    assert!(a == b, "records differ by chunking");
    assert_eq!(log_a, log_b);
    assert!(!log_a.rides.is_empty());
    let (c, _) = run(config(4), 1.5, 10_000);
    assert!(a != c, "seeds must matter");
}

#[test]
fn riders_see_the_price() {
    let (_, cheap) = run(config(5), 1.0, 10_000);
    let (_, dear) = run(config(5), 3.0, 10_000);
    let sessions = |l: &MarketLog| l.minutes.iter().map(|m| m.sessions).sum::<u64>();
    // Common random numbers: the same riders arrive whatever the price.
    assert_eq!(sessions(&cheap), sessions(&dear));
    let (n1, n3) = (cheap.rides.len() as f64, dear.rides.len() as f64);
    // p(3) / p(1) = 3^-0.6 ≈ 0.52.
    assert!((n3 / n1 - 0.52).abs() < 0.08, "{n1} {n3}");
    assert!(dear.rides.iter().all(|r| r.multiplier == 3.0));
    let surged = dear.price_changes.iter().filter(|c| !c.is_empty()).count();
    assert_eq!(surged, dear.cells.len());
}

#[test]
fn pickups_take_time_and_drivers_split_their_time() {
    let (_, log) = run(config(6), 1.0, 10_000);
    let served: Vec<_> = log.rides.iter().filter(|r| r.wait_ms.is_some()).collect();
    assert!(!served.is_empty());
    assert!(served.iter().all(|r| r.pickup_ms >= 60_000));
    let total = |f: fn(&primetime_sim::MinuteStats) -> u64| log.minutes.iter().map(f).sum::<u64>();
    assert!(total(|m| m.en_route_ms) > 0 && total(|m| m.on_trip_ms) > 0);
    assert!(total(|m| m.idle_ms) > 0 && total(|m| m.offline_ms) > 0);
    // Every driver is in exactly one state at every step.
    for m in &log.minutes {
        assert_eq!(
            m.idle_ms + m.en_route_ms + m.on_trip_ms + m.offline_ms,
            600 * 60_000
        );
    }
}

#[test]
fn the_open_loop_ignores_prices() {
    let open = SimConfig {
        market: None,
        ..config(7)
    };
    let (a, _) = {
        let mut sim = Simulator::new(open.clone()).expect("valid");
        let mut out = Vec::new();
        sim.advance_to(sim.now_ms() + 120_000, &mut out);
        (out, ())
    };
    let mut sim = Simulator::new(open).expect("valid");
    assert!(sim.market_log().is_none());
    let cells: Vec<(CellId, f64)> = sim.cells().into_iter().map(|c| (c, 3.0)).collect();
    let mut out = Vec::new();
    sim.observe_prices(&cells);
    sim.advance_to(sim.now_ms() + 120_000, &mut out);
    assert!(a == out);
}

#[test]
fn the_oracle_is_capped_and_on_the_grid() {
    let mut sim = Simulator::new(config(8)).expect("valid");
    let mut out = Vec::new();
    sim.advance_to(sim.now_ms() + 120_000, &mut out);
    let prices = sim.oracle_prices(3.0);
    assert_eq!(prices.len(), sim.cells().len());
    for (_, m) in prices {
        assert!((1.0..=3.0).contains(&m), "{m}");
        assert_eq!((m * 20.0).round(), m * 20.0);
    }
}
