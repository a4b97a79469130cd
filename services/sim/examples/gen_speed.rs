//! Measures generation speed: `cargo run --release -p primetime-sim
//! --example gen_speed [minutes]` simulates the default city (60 minutes
//! unless given) and prints records per second of wall time.

use std::time::Instant;

use primetime_sim::{SimConfig, Simulator};

fn main() {
    let minutes: i64 = std::env::args()
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or(60);
    let mut sim = match Simulator::new(SimConfig::default()) {
        Ok(sim) => sim,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(64);
        }
    };
    let end = sim.now_ms() + minutes * 60_000;
    let mut batch = Vec::new();
    let mut records = 0u64;
    let mut bytes = 0u64;
    let started = Instant::now();
    while sim.now_ms() < end {
        let until = (sim.now_ms() + 10_000).min(end);
        sim.advance_to(until, &mut batch);
        records += batch.len() as u64;
        bytes += batch.iter().map(|r| r.payload.len() as u64).sum::<u64>();
        batch.clear();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{records} records ({:.0} per simulated minute, {:.1} bytes each) in {secs:.2} s: {:.2} M records/s",
        records as f64 / minutes as f64,
        bytes as f64 / records as f64,
        records as f64 / secs / 1e6
    );
}
