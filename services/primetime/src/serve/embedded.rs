//! The embedded default: the built-in city simulator as the pipeline's
//! input, prices into the in-memory table; no Kafka, no Redis. With the
//! simulator's market on (`[sim.market]`, the default) the loop is closed:
//! riders see the prices and drivers move toward them (DESIGN §7a).

use std::sync::Arc;

use primetime_sim::{SimConfig, Simulator};

use super::{Parts, pipeline_options};
use crate::config::ServiceConfig;
use crate::inputs::SimInput;
use crate::pipeline::{Lockstep, Pipeline};
use crate::sinks::table::TableSink;
use crate::wall_clock::wall_clock_ms;

/// Starts the simulator-fed pipeline (simulated time starts now); returns
/// it with the stadium's cell, if the city has one.
pub(super) fn start(
    config: &ServiceConfig,
    parts: &Parts,
) -> anyhow::Result<(Pipeline, Option<primetime_core::CellId>)> {
    let sim = Simulator::new(SimConfig {
        start_ms: wall_clock_ms(),
        ..config.sim.clone()
    })
    .map_err(|e| anyhow::anyhow!("simulator: {e}"))?;
    let stadium = sim.stadium_cell();
    let mut input = SimInput::new(sim, config.sim_speed, Arc::clone(&parts.stop));
    let mut options = pipeline_options(config, parts);
    let problems = config.serve_problems();
    if !problems.is_empty() {
        // `serve`'s arguments checked this already; a caller that built
        // the config in code gets the same refusal (exit 64).
        return Err(crate::config::ConfigErrors(problems).into());
    }
    options.placement = config.placement.options();
    if config.sim.market.is_some() {
        // The closed loop (the default): riders and drivers react to the
        // prices, in lockstep with the ticks.
        let lockstep = Arc::new(Lockstep::default());
        input = input.closed_loop(Arc::clone(&lockstep), config.core.bucket_ms);
        options.lockstep = Some(lockstep);
    }
    let pipeline = Pipeline::start(
        &config.core,
        &options,
        Arc::clone(&parts.model),
        input,
        TableSink::new(Arc::clone(&parts.table)),
        Arc::clone(&parts.metrics),
    )?;
    Ok((pipeline, stadium))
}
