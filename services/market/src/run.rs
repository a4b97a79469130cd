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

use primetime_core::controls::{Action, Area};
use primetime_core::{CellId, Config, Control, Engine, IngestTime, Multiplier, RawRecord, Reason};
use primetime_model::OnnxModel;
use primetime_sim::{MarketLog, SimRecord, Simulator};

use crate::MarketError;
use crate::dataset::{Behaviour, DatasetRow};
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
    /// The model of [`PolicyKind::Model`] (or of [`PolicyKind::Candidate`]).
    pub model: Option<Arc<OnnxModel>>,
    /// The engine's configuration (its policy is the guardrails).
    pub engine: Config,
    /// A training run's behaviour policy instead of `policy`'s pricing
    /// (the dataset: [`crate::dataset`]).
    pub behaviour: Option<Behaviour>,
    /// Record the feature rows and the oracle's target (the dataset).
    pub record: bool,
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
            behaviour: None,
            record: false,
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
    /// The training rows, when the spec asked to record them.
    pub rows: Vec<DatasetRow>,
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
    if let Some(feed) = feed.as_mut() {
        if spec.record {
            feed.engine.record_rows();
        }
        if let Some(cap) = setup.emergency_cap {
            feed.engine
                .issue_control(emergency_control(cap, sim.cells()), sim.now_ms())?;
        }
    }
    let mut rows = Vec::new();
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
        if feed.is_none() {
            // Policies priced without the engine obey the cap by clipping.
            let capped = setup
                .emergency_cap
                .filter(|(a, b, _)| (*a..*b).contains(&t));
            let ceiling = capped.map_or(f64::INFINITY, |c| c.2);
            if spec.policy == PolicyKind::BestFixed {
                for p in &mut prices.published {
                    p.1 = fixed.min(ceiling);
                }
            } else if capped.is_some() {
                for p in &mut prices.published {
                    p.1 = p.1.min(ceiling);
                }
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
            Some(feed) => {
                feed.push(&mut records);
                if spec.record {
                    record_rows(&mut feed.engine, &sim, spec, &mut rows);
                }
            }
            None => records.clear(),
        }
        t = next;
    }
    let log = sim.market_log().cloned().ok_or(MarketError::OpenLoop)?;
    Ok(RunOutcome {
        setup,
        log,
        decisions,
        rows,
    })
}

/// The scenario's emergency cap as an operator control over every city
/// cell (issue 18's `Cap`).
fn emergency_control((from, to, cap): (i64, i64, f64), cells: Vec<CellId>) -> Control {
    Control {
        area: Area::Cells(cells),
        action: Action::Cap(Multiplier::from_twentieths((cap * 20.0).round() as u32)),
        from,
        to,
        reason: "declared emergency (market benchmark)".to_owned(),
        author: "primetime-market".to_owned(),
    }
}

/// Takes the rows of the ticks that just fired and gives each the clearing
/// multiplier of its cell now, when the riders start to see the decision
/// (rows of cells outside the simulated city have no target: skipped).
fn record_rows(
    engine: &mut Engine<BoxedModel>,
    sim: &Simulator,
    spec: &RunSpec,
    rows: &mut Vec<DatasetRow>,
) {
    let elasticity = sim
        .config()
        .market
        .as_ref()
        .map_or(primetime_sim::DEMAND_ELASTICITY, |m| m.elasticity);
    let cap = spec.engine.policy.cap;
    for (tick, row) in engine.take_rows() {
        if !sim.in_city(row.cell) {
            continue;
        }
        rows.push(DatasetRow {
            tick: tick.0,
            cell: row.cell,
            features: row.features.to_row(),
            target: sim.clearing_multiplier_with(row.cell, cap, elasticity),
        });
    }
}

/// The reference engine pricing with the spec's policy, or `None` for the
/// policies priced without it (the model policy without a model is an
/// error).
fn engine_for(spec: &RunSpec, sim: &Simulator) -> Result<Option<Engine<BoxedModel>>, MarketError> {
    let pricing = match (spec.behaviour, spec.model.as_ref()) {
        (Some(b), Some(model)) => Some(b.pricing(spec.engine.policy, model)),
        (Some(_), None) => return Err(MarketError::NoModel),
        (None, _) => engine_pricing(spec.policy, spec.engine.policy, spec.model.as_ref()),
    };
    match pricing {
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
        None if matches!(spec.policy, PolicyKind::Model | PolicyKind::Candidate) => {
            Err(MarketError::NoModel)
        }
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
