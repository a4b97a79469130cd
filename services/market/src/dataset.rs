//! The closed-loop training set of the pricing model (issue 15, part 3):
//! runs of the benchmark's scenarios priced by a *mix* of behaviour
//! policies, so the rows show what prices do (riders who saw a high price
//! did not request; drivers moved toward it), with the oracle's clearing
//! multiplier as the target.
//!
//! - **Rows**: the core's feature rows of every active cell at every fired
//!   tick ([`primetime_core::Engine::record_rows`], the serving code path).
//! - **Target**: the clearing multiplier of the row's cell at the moment
//!   the tick's decision reaches the riders (the end of the bucket whose
//!   records fired it), from the simulator's true expected demand, the
//!   riders' elasticity and the idle supply in reach, unrounded in
//!   `[1, cap]` ([`primetime_sim::Simulator::clearing_multiplier_with`]):
//!   what the oracle policy would show there and then.
//! - **Behaviour**: each (scenario, seed) run is priced by one of
//!   [`Behaviour::ALL`], chosen by `(seed + scenario) mod 5`, so every
//!   scenario sees every behaviour over five seeds. `Explore` multiplies
//!   the current model's output by a factor in `[1/1.5, 1.5]` drawn from a
//!   hash of the row: prices then vary for the same state, which is what
//!   lets a model learn the price's own effect on the features.
//! - **Seeds**: from [`TRAINING_SEED_BASE`], disjoint from the benchmark's
//!   evaluation seeds (1..=20) and its tuning seeds, so the benchmark
//!   judges the model on days it never saw.
//! - **CSV**: the `models/train` contract (`tick,cell,<7 features>,target`).
//!   `tick` is `run × 100000 + ticks since the run's first tick`, so
//!   `train.py`'s split of the last 20 % of ticks holds out whole runs
//!   (the last ones, which cover every scenario and behaviour).

use std::io::Write;
use std::sync::Arc;

use primetime_core::{
    CellId, FEATURE_NAMES, FeatureRow, FormulaModel, ModelError, PolicyParams, PriceModel,
};
use primetime_model::OnnxModel;

use crate::policy::{BoxedModel, RatioModel, raw_policy};
use crate::scenario::{Scenario, Timeline};
use crate::{MarketError, PolicyKind, RunSpec};

/// First training seed: far from the evaluation seeds (1..) and the
/// tuning seeds of the best fixed price.
pub const TRAINING_SEED_BASE: u64 = 100_000;

/// Ticks per run in the CSV's `tick` encoding (a 2-hour run has ~900).
const TICKS_PER_RUN: i64 = 100_000;

/// How a training run is priced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// 1.0 through the guardrails (the engine runs, so rows exist).
    Flat,
    /// The raw demand/supply ratio, capped.
    Ratio,
    /// The fallback formula through the guardrails.
    RatioGuardrails,
    /// The current model through the guardrails.
    Model,
    /// The current model × a hashed factor in `[1/1.5, 1.5]`, through the
    /// guardrails.
    Explore,
}

impl Behaviour {
    pub const ALL: [Behaviour; 5] = [
        Behaviour::Flat,
        Behaviour::Ratio,
        Behaviour::RatioGuardrails,
        Behaviour::Model,
        Behaviour::Explore,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Behaviour::Flat => "flat",
            Behaviour::Ratio => "ratio",
            Behaviour::RatioGuardrails => "ratio_guardrails",
            Behaviour::Model => "model",
            Behaviour::Explore => "explore",
        }
    }

    /// The engine's model and guardrails for this behaviour.
    pub fn pricing(
        self,
        defaults: PolicyParams,
        model: &Arc<OnnxModel>,
    ) -> (BoxedModel, PolicyParams) {
        match self {
            Behaviour::Flat => (Box::new(FlatModel), defaults),
            Behaviour::Ratio => (Box::new(RatioModel), raw_policy(defaults.cap)),
            Behaviour::RatioGuardrails => {
                (Box::new(FormulaModel::new(defaults.fallback)), defaults)
            }
            Behaviour::Model => (Box::new(Arc::clone(model)), defaults),
            Behaviour::Explore => (
                Box::new(ExploreModel {
                    inner: Arc::clone(model),
                    spread: 1.5,
                }),
                defaults,
            ),
        }
    }
}

/// 1.0 for every row.
#[derive(Debug, Clone, Copy, Default)]
pub struct FlatModel;

impl PriceModel for FlatModel {
    fn version(&self) -> &str {
        "flat"
    }

    fn predict(&self, rows: &[FeatureRow], out: &mut Vec<f32>) -> Result<(), ModelError> {
        out.clear();
        out.resize(rows.len(), 1.0);
        Ok(())
    }
}

/// The inner model's output times `spread^u`, `u` in `[-1, 1]` from a hash
/// of the row's bits: a pure function of the row (shard-independent).
#[derive(Debug, Clone)]
pub struct ExploreModel {
    pub inner: Arc<OnnxModel>,
    pub spread: f32,
}

impl PriceModel for ExploreModel {
    fn version(&self) -> &str {
        "explore"
    }

    fn predict(&self, rows: &[FeatureRow], out: &mut Vec<f32>) -> Result<(), ModelError> {
        self.inner.predict(rows, out)?;
        for (m, row) in out.iter_mut().zip(rows) {
            let mut h = 0xcbf2_9ce4_8422_2325u64;
            for v in row {
                h = (h ^ u64::from(v.to_bits())).wrapping_mul(0x0000_0100_0000_01b3);
            }
            let u = (h >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
            *m *= self.spread.powf(u as f32);
        }
        Ok(())
    }
}

/// One training row: its run-encoded tick, cell, features and target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DatasetRow {
    pub tick: i64,
    pub cell: CellId,
    pub features: FeatureRow,
    pub target: f64,
}

/// Which runs make the dataset.
#[derive(Debug, Clone)]
pub struct DatasetOptions {
    /// Seeds per scenario.
    pub seeds: u64,
    pub scenarios: Vec<Scenario>,
    pub timeline: Timeline,
    pub threads: usize,
    /// The current model (behaviours `Model` and `Explore`).
    pub model: Arc<OnnxModel>,
}

/// One training run's spec: run `index` of the dataset.
pub fn training_spec(opts: &DatasetOptions, index: usize) -> RunSpec {
    let n = opts.scenarios.len().max(1);
    let (seed_i, scenario_i) = (index / n, index % n);
    let seed = TRAINING_SEED_BASE + seed_i as u64;
    let behaviour = Behaviour::ALL[(seed_i + scenario_i) % Behaviour::ALL.len()];
    let mut spec = RunSpec::new(
        opts.scenarios[scenario_i],
        PolicyKind::Model,
        seed,
        opts.timeline,
    );
    spec.model = Some(Arc::clone(&opts.model));
    spec.behaviour = Some(behaviour);
    spec.record = true;
    spec
}

/// Runs every training run on `opts.threads` threads and writes the CSV
/// to `out` in run order (the same bytes whatever the thread count).
/// Returns (runs, rows).
pub fn write_dataset<W: Write>(
    opts: &DatasetOptions,
    out: W,
) -> Result<(usize, u64), DatasetError> {
    let specs: Vec<RunSpec> = (0..opts.seeds as usize * opts.scenarios.len())
        .map(|i| training_spec(opts, i))
        .collect();
    let runs = crate::bench::run_each(&specs, opts.threads, |o| o.rows)?;
    let mut out = std::io::BufWriter::new(out);
    writeln!(out, "tick,cell,{},target", FEATURE_NAMES.join(","))?;
    let mut written = 0u64;
    for (i, rows) in runs.iter().enumerate() {
        let first = rows.first().map_or(0, |r| r.tick);
        for r in rows {
            let tick = i as i64 * TICKS_PER_RUN + (r.tick - first);
            write!(out, "{tick},{}", r.cell)?;
            for v in r.features {
                write!(out, ",{v}")?;
            }
            writeln!(out, ",{:.6}", r.target)?;
            written += 1;
        }
    }
    out.flush()?;
    Ok((runs.len(), written))
}

/// Why the dataset could not be written.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error(transparent)]
    Run(#[from] MarketError),
    #[error("writing the dataset: {0}")]
    Io(#[from] std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_sees_every_behaviour_within_five_seeds() {
        let opts = DatasetOptions {
            seeds: 5,
            scenarios: Scenario::DAYS.to_vec(),
            timeline: Timeline::SHORT,
            threads: 1,
            model: Arc::new(primetime_model::embedded().unwrap()),
        };
        for (si, s) in Scenario::DAYS.iter().enumerate() {
            let mut seen: Vec<&str> = (0..5)
                .map(|seed| training_spec(&opts, seed * Scenario::DAYS.len() + si))
                .map(|spec| {
                    assert_eq!(spec.scenario, *s);
                    assert!(spec.seed >= TRAINING_SEED_BASE);
                    spec.behaviour.unwrap().name()
                })
                .collect();
            seen.sort_unstable();
            seen.dedup();
            assert_eq!(seen.len(), 5, "{s:?}: {seen:?}");
        }
    }

    #[test]
    fn explore_stays_within_its_spread_and_is_a_function_of_the_row() {
        let model = Arc::new(primetime_model::embedded().unwrap());
        let explore = ExploreModel {
            inner: Arc::clone(&model),
            spread: 1.5,
        };
        let rows: Vec<FeatureRow> = (0..200)
            .map(|i| [i as f32, (i % 17) as f32, 3.0, 9.0, 2.0, 5.0, 1.0])
            .collect();
        let (mut a, mut b, mut base) = (Vec::new(), Vec::new(), Vec::new());
        explore.predict(&rows, &mut a).unwrap();
        explore.predict(&rows, &mut b).unwrap();
        model.predict(&rows, &mut base).unwrap();
        assert_eq!(a, b);
        let mut moved = 0;
        for (x, m) in a.iter().zip(&base) {
            let r = x / m;
            assert!((1.0 / 1.5 - 1e-4..=1.5 + 1e-4).contains(&r), "{r}");
            moved += usize::from((r - 1.0).abs() > 0.05);
        }
        assert!(moved > 100, "only {moved} rows explored");
    }
}
