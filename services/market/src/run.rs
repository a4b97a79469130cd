//! One closed-loop run: the simulator and the reference engine in
//! lockstep, one thread, a pure function of its [`RunSpec`].
//!
//! The lockstep contract (DESIGN §7a): the simulator is stepped to the end
//! of bucket `b`; its records (every record ingested before that instant)
//! go into the engine in ingest order; every tick that fired is taken and
//! its decisions are given to the simulator
//! ([`Simulator::observe_prices`]) before it steps into bucket `b + 1`.
//! Riders in bucket `b + 1` therefore see the newest tick the pipeline has
//! fired, exactly as a rider of the live service sees the newest published
//! price (ticks fire once every partition's watermark passes them, so the
//! newest fired tick trails the simulated clock by one or two buckets).

use std::sync::Arc;

use primetime_core::{CellId, Config, Engine, IngestTime, RawRecord, Reason};
use primetime_model::OnnxModel;
use primetime_sim::{MarketLog, SimRecord, Simulator};

use crate::MarketError;
use crate::policy::{BoxedModel, PolicyKind, engine_pricing};
use crate::scenario::{Scenario, ScenarioSetup, Timeline, setup};

/// Everything a run depends on.
#[derive(Clone)]
pub struct RunSpec {
    pub scenario: Scenario,
    pub policy: PolicyKind,
    pub seed: u64,
    pub timeline: Timeline,
    /// Engine shards (results do not depend on it; tested).
    pub shards: usize,
    /// The multiplier of [`PolicyKind::BestFixed`].
    pub fixed: f64,
    /// The model of [`PolicyKind::Model`].
    pub model: Option<Arc<OnnxModel>>,
    /// The engine's configuration (its policy is the guardrails).
    pub engine: Config,
}

impl RunSpec {
    pub fn new(scenario: Scenario, policy: PolicyKind, seed: u64, timeline: Timeline) -> Self {
        Self {
            scenario,
            policy,
            seed,
            timeline,
            shards: 1,
            fixed: 1.0,
            model: None,
            engine: Config::default(),
        }
    }
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub setup: ScenarioSetup,
    pub log: MarketLog,
    /// Price decisions the engine made (0 for policies without it).
    pub decisions: u64,
}

/// Prices as the simulator should see them: the policy's, unless the
/// outage forces 1.0.
struct Prices {
    /// The policy's newest multiplier per cell (engine policies).
    published: Vec<(CellId, f64)>,
    index: std::collections::HashMap<CellId, usize>,
}

impl Prices {
    fn new(cells: &[CellId]) -> Self {
        Self {
            published: cells.iter().map(|c| (*c, 1.0)).collect(),
            index: cells.iter().enumerate().map(|(i, c)| (*c, i)).collect(),
        }
    }

    fn set(&mut self, cell: CellId, m: f64) {
        if let Some(&i) = self.index.get(&cell) {
            self.published[i].1 = m;
        }
    }
}

/// Runs one closed loop to the end of its timeline.
pub fn run(spec: &RunSpec) -> Result<RunOutcome, MarketError> {
    let setup = setup(spec.scenario, spec.seed, spec.timeline);
    let mut sim = Simulator::new(setup.sim.clone())?;
    let mut feed = engine_for(spec, &sim)?.map(EngineFeed::new);
    let bucket_ms = spec.engine.bucket_ms;
    let start = sim.now_ms();
    let end = start + spec.timeline.total_ms();
    let cells = sim.cells();
    let mut prices = Prices::new(&cells);
    let fixed = match spec.policy {
        PolicyKind::BestFixed => spec.fixed,
        _ => 1.0,
    };
    for p in &mut prices.published {
        p.1 = fixed;
    }
    let mut records: Vec<SimRecord> = Vec::new();
    let mut decisions = 0u64;
    let mut forced = false;
    let mut t = start;
    while t < end {
        if let Some(feed) = feed.as_mut() {
            decisions += feed.take_decisions(&mut prices);
        } else if spec.policy == PolicyKind::Oracle {
            for (c, m) in sim.oracle_prices(spec.engine.policy.cap) {
                prices.set(c, m);
            }
        }
        let outage = setup.outage.is_some_and(|(a, b)| (a..b).contains(&t));
        if outage {
            // The outage shows 1.0 everywhere once, when it starts.
            if !forced {
                let ones: Vec<(CellId, f64)> = cells.iter().map(|c| (*c, 1.0)).collect();
                sim.observe_prices(&ones);
                forced = true;
            }
        } else {
            forced = false;
            sim.observe_prices(&prices.published);
        }
        let next = (t.div_euclid(bucket_ms) + 1) * bucket_ms;
        sim.advance_to(next.min(end), &mut records);
        match feed.as_mut() {
            Some(feed) => feed.push(&mut records),
            None => records.clear(),
        }
        t = next;
    }
    let log = sim.market_log().cloned().ok_or(MarketError::OpenLoop)?;
    Ok(RunOutcome {
        setup,
        log,
        decisions,
    })
}

/// The reference engine pricing with the spec's policy, or `None` for the
/// policies priced without it (the model policy without a model is an
/// error).
fn engine_for(spec: &RunSpec, sim: &Simulator) -> Result<Option<Engine<BoxedModel>>, MarketError> {
    match engine_pricing(spec.policy, spec.engine.policy, spec.model.as_ref()) {
        Some((model, policy)) => {
            let config = Config {
                policy,
                ..spec.engine.clone()
            };
            Ok(Some(Engine::new(
                config,
                sim.partitions(),
                spec.shards,
                model,
            )?))
        }
        None if spec.policy == PolicyKind::Model => Err(MarketError::NoModel),
        None => Ok(None),
    }
}

/// The engine with its per-bucket buffers, reused across buckets.
struct EngineFeed {
    engine: Engine<BoxedModel>,
    decoded: Vec<(u32, i64, IngestTime, RawRecord)>,
    outcomes: Vec<Result<(), Reason>>,
}

impl EngineFeed {
    fn new(engine: Engine<BoxedModel>) -> Self {
        Self {
            engine,
            decoded: Vec::new(),
            outcomes: Vec::new(),
        }
    }

    /// Moves the fired ticks' decisions into `prices`; returns how many.
    fn take_decisions(&mut self, prices: &mut Prices) -> u64 {
        let mut taken = 0;
        for d in self.engine.take_decisions() {
            prices.set(d.cell, d.multiplier.value());
            taken += 1;
        }
        taken
    }

    /// Decodes and pushes one bucket's records (draining `records`); an
    /// undecodable one counts as malformed at its offset.
    fn push(&mut self, records: &mut Vec<SimRecord>) {
        self.decoded.clear();
        for r in records.drain(..) {
            match primetime_proto::decode(r.topic, &r.payload) {
                Ok(raw) => {
                    self.decoded
                        .push((r.partition, r.offset, IngestTime(r.ingest_time_ms), raw))
                }
                Err(_) => self.engine.push_malformed(r.partition, r.offset),
            }
        }
        self.outcomes.clear();
        self.engine.push_batch(
            self.decoded.iter().map(|(p, o, i, r)| (*p, *o, *i, r)),
            &mut self.outcomes,
        );
    }
}
