//! Prints a run's minute-by-minute driver series (calibration aid):
//! `cargo run --release -p primetime-market --example trace -- SCENARIO POLICY [SEED] [short]`.

use std::sync::Arc;

use primetime_market::{PolicyKind, RunSpec, Scenario, Timeline, run};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let scenario = Scenario::parse(args.get(1).map_or("normal", String::as_str))
        .ok_or_else(|| anyhow::anyhow!("unknown scenario"))?;
    let policy = PolicyKind::parse(args.get(2).map_or("flat", String::as_str))
        .ok_or_else(|| anyhow::anyhow!("unknown policy"))?;
    let seed = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1);
    let timeline = if args.get(4).is_some_and(|s| s == "short") {
        Timeline::SHORT
    } else {
        Timeline::FULL
    };
    let mut spec = RunSpec::new(scenario, policy, seed, timeline);
    if policy == PolicyKind::Model {
        spec.model = Some(Arc::new(primetime_model::load(std::path::Path::new(
            "models/primetime-v1.onnx",
        ))?));
    }
    let out = run(&spec)?;
    println!("min online idle% enroute% trip% earn/h ons offs sessions decisions price_moves/exp");
    for (i, m) in out.log.minutes.iter().enumerate() {
        let online = (m.idle_ms + m.en_route_ms + m.on_trip_ms) as f64;
        println!(
            "{i:3} {:6.0} {:5.1} {:5.1} {:5.1} {:6.1} {:4} {:4} {:5} {:5} {:.3}",
            online / 60_000.0,
            100.0 * m.idle_ms as f64 / online,
            100.0 * m.en_route_ms as f64 / online,
            100.0 * m.on_trip_ms as f64 / online,
            m.earnings / (online / 3.6e6),
            m.log_ons,
            m.log_offs,
            m.sessions,
            m.decisions,
            m.price_moves / m.expected_moves.max(1e-9)
        );
    }
    Ok(())
}
