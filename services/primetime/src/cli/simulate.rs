//! `primetime simulate`: the city simulator's output as an event log, the
//! model's training set, or live records published into Kafka.

use super::args::{SimulateArgs, apply_sim_args, load, parse};
use crate::config::{ConfigErrors, Overrides};

pub(super) fn run_simulate(args: &SimulateArgs) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    let minutes: Option<u32> = parse("minutes", &Some(args.minutes.clone()), &mut problems);
    let rate: Option<f64> = parse("rate", &args.rate, &mut problems);
    if rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        problems.push("rate: must be > 0 records per second".to_owned());
    }
    let base = load(
        args.config.as_ref(),
        Overrides {
            kafka_brokers: args.kafka.clone(),
            create_topics: args.create_topics,
            ..Overrides::default()
        },
        Vec::new(),
    )?;
    let mut sim = base.sim;
    apply_sim_args(&mut sim, &args.sim, &mut problems);
    if let Err(e) = primetime_sim::Simulator::new(sim.clone()) {
        problems.extend(crate::config::sim_problems(&e));
    }
    let Some(minutes) = minutes.filter(|_| problems.is_empty()) else {
        return Err(ConfigErrors(problems).into());
    };
    let started = std::time::Instant::now();
    if args.kafka.is_some() {
        if base.kafka.create_topics {
            crate::kafka::create_topics(&base.kafka)?;
        }
        // Live input starts now unless the config pins the simulated clock
        // (logs and datasets keep the fixed default start: reproducible).
        if sim.start_ms == primetime_sim::SimConfig::default().start_ms {
            sim.start_ms = crate::wall_clock::wall_clock_ms();
        }
        let s = super::publish::publish_simulation(&base.kafka, sim, minutes, rate)?;
        eprintln!(
            "published {} records ({minutes} simulated minutes) to {} in {:.1} s ({:.0} records/s)",
            s.records,
            base.kafka.brokers,
            s.seconds,
            s.records as f64 / s.seconds.max(1e-9)
        );
        return Ok(());
    }
    if let Some(path) = &args.dataset {
        let file = std::fs::File::create(path)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
        let s = crate::dataset::write_dataset(sim, &base.core, minutes, file)?;
        eprintln!(
            "wrote {} dataset rows ({} ticks, {} records, {minutes} simulated minutes) to {} in {:.1} s",
            s.rows,
            s.ticks,
            s.records,
            path.display(),
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    let Some(out) = &args.out else {
        return Err(ConfigErrors(vec!["simulate: --out or --dataset is required".into()]).into());
    };
    let file = std::fs::File::create(out)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", out.display()))?;
    let records = primetime_sim::write_log(sim, minutes, std::io::BufWriter::new(file))?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "wrote {records} records ({minutes} simulated minutes) to {} in {secs:.1} s",
        out.display()
    );
    Ok(())
}
