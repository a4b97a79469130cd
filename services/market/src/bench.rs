//! The experiment: every (scenario, policy) over the same seeds (common
//! random numbers), runs × metrics tables ([`ndarray`]), paired bootstrap
//! intervals of differences, the calibration gates and issue 15's
//! targets, each with its verdict.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ndarray::{Array1, Array2, Axis};
use primetime_model::OnnxModel;
use primetime_sim::rng::Rng;
use serde::Serialize;

use crate::MarketError;
use crate::metrics::{METRICS, col, measure};
use crate::policy::PolicyKind;
use crate::run::{RunOutcome, RunSpec, run};
use crate::scenario::{Scenario, Timeline};

/// The fixed multipliers tried for [`PolicyKind::BestFixed`].
pub const FIXED_GRID: [f64; 5] = [1.0, 1.1, 1.2, 1.3, 1.5];
/// Seeds of the grid search, disjoint from the evaluation seeds.
const TUNING_SEED_BASE: u64 = 10_000;
/// Bootstrap resamples per interval.
const RESAMPLES: usize = 2_000;
/// Seed of the bootstrap's resampling (fixed: the report is reproducible).
const BOOTSTRAP_SEED: u64 = 0xB007;

/// What to run.
#[derive(Clone)]
pub struct BenchOptions {
    /// Evaluation seeds are `1..=seeds`.
    pub seeds: u64,
    /// Seeds of the best-fixed grid search.
    pub tuning_seeds: u64,
    pub timeline: Timeline,
    /// Worker threads (runs are independent; results are merged in a fixed
    /// order, so the output does not depend on this).
    pub threads: usize,
    pub model: Option<Arc<OnnxModel>>,
    /// A candidate model run beside `model` as [`PolicyKind::Candidate`]
    /// (the same runs otherwise), with its own target verdicts.
    pub candidate: Option<Arc<OnnxModel>>,
    pub scenarios: Vec<Scenario>,
    pub policies: Vec<PolicyKind>,
}

/// One (scenario, policy): seeds × [`METRICS`].
pub type Table = Array2<f64>;

/// A paired difference's mean and bootstrap 95 % interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    pub mean: f64,
    pub lo: f64,
    pub hi: f64,
}

/// A verdict with its figure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    pub name: String,
    pub figure: String,
    pub pass: bool,
}

/// Everything the benchmark found.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub seeds: u64,
    pub timeline: Timeline,
    pub best_fixed: f64,
    /// Mean completed trips on the normal day per grid value (tuning seeds).
    pub grid: Vec<(f64, f64)>,
    pub metrics: Vec<&'static str>,
    /// `scenario/policy` → per-seed rows.
    pub runs: BTreeMap<String, Vec<Vec<f64>>>,
    /// `scenario/policy` → metric means.
    pub means: BTreeMap<String, Vec<f64>>,
    /// `scenario/policy/baseline` → per-metric paired intervals.
    pub differences: BTreeMap<String, Vec<Interval>>,
    pub gates: Vec<Check>,
    pub targets: Vec<Check>,
    /// The same targets for the candidate model (empty without one).
    pub candidate_targets: Vec<Check>,
}

/// Runs `specs` on `threads` threads; each run's metrics in `specs` order.
pub fn run_many(specs: &[RunSpec], threads: usize) -> Result<Vec<Vec<f64>>, MarketError> {
    run_each(specs, threads, |o| measure(&o).to_vec())
}

/// Runs `specs` on `threads` threads and keeps `keep(outcome)` of each, in
/// `specs` order whatever the scheduling.
pub fn run_each<T: Send>(
    specs: &[RunSpec],
    threads: usize,
    keep: impl Fn(RunOutcome) -> T + Sync,
) -> Result<Vec<T>, MarketError> {
    let next = AtomicUsize::new(0);
    // One slot per spec, filled by whichever worker ran it: the merge
    // order is the specs' order, whatever the scheduling.
    let slots: Mutex<Vec<Option<Result<T, MarketError>>>> =
        Mutex::new((0..specs.len()).map(|_| None).collect());
    // Runs are independent and CPU-bound: one worker per core, each taking
    // the next run (work stealing by an atomic counter).
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(spec) = specs.get(i) else { break };
                    let result = run(spec).map(&keep);
                    if let Ok(mut slots) = slots.lock() {
                        slots[i] = Some(result);
                    }
                }
            });
        }
    });
    let slots = slots.into_inner().unwrap_or_default();
    slots
        .into_iter()
        .map(|s| s.unwrap_or(Err(MarketError::Lost)))
        .collect()
}

fn key(s: Scenario, p: PolicyKind) -> String {
    format!("{}/{}", s.name(), p.name())
}

/// The grid search of the best fixed multiplier: the value with the most
/// completed trips on the normal day.
fn tune_fixed(opts: &BenchOptions) -> Result<(f64, Vec<(f64, f64)>), MarketError> {
    let mut specs = Vec::new();
    for &m in &FIXED_GRID {
        for s in 0..opts.tuning_seeds {
            let mut spec = RunSpec::new(
                Scenario::Normal,
                PolicyKind::BestFixed,
                TUNING_SEED_BASE + s,
                opts.timeline,
            );
            spec.fixed = m;
            specs.push(spec);
        }
    }
    let rows = run_many(&specs, opts.threads)?;
    let n = opts.tuning_seeds.max(1) as usize;
    let completed = col("completed");
    let grid: Vec<(f64, f64)> = FIXED_GRID
        .iter()
        .zip(rows.chunks(n))
        .map(|(m, rows)| {
            (
                *m,
                rows.iter().map(|r| r[completed]).sum::<f64>() / n as f64,
            )
        })
        .collect();
    let best = grid.iter().fold(
        (1.0, f64::NEG_INFINITY),
        |b, g| if g.1 > b.1 { *g } else { b },
    );
    Ok((best.0, grid))
}

/// Runs the whole experiment.
pub fn bench(opts: &BenchOptions) -> Result<BenchReport, MarketError> {
    let (best_fixed, grid) = tune_fixed(opts)?;
    let mut specs = Vec::new();
    let candidate = opts.candidate.as_ref().map(|_| PolicyKind::Candidate);
    for &s in &opts.scenarios {
        for &p in opts.policies.iter().chain(candidate.iter()) {
            for seed in 1..=opts.seeds {
                let mut spec = RunSpec::new(s, p, seed, opts.timeline);
                spec.fixed = best_fixed;
                spec.model = if p == PolicyKind::Candidate {
                    opts.candidate.clone()
                } else {
                    opts.model.clone()
                };
                specs.push(spec);
            }
        }
    }
    let rows = run_many(&specs, opts.threads)?;
    let n = opts.seeds as usize;
    let mut tables: BTreeMap<(Scenario, PolicyKind), Table> = BTreeMap::new();
    for (i, chunk) in rows.chunks(n.max(1)).enumerate() {
        let spec = &specs[i * n];
        let flat: Vec<f64> = chunk.iter().flatten().copied().collect();
        let table = Array2::from_shape_vec((chunk.len(), METRICS.len()), flat)
            .map_err(|_| MarketError::Lost)?;
        tables.insert((spec.scenario, spec.policy), table);
    }
    Ok(report(opts, best_fixed, grid, &tables))
}

fn report(
    opts: &BenchOptions,
    best_fixed: f64,
    grid: Vec<(f64, f64)>,
    tables: &BTreeMap<(Scenario, PolicyKind), Table>,
) -> BenchReport {
    let mut runs = BTreeMap::new();
    let mut means = BTreeMap::new();
    let mut differences = BTreeMap::new();
    for (&(s, p), t) in tables {
        runs.insert(key(s, p), t.outer_iter().map(|r| r.to_vec()).collect());
        let mean = t
            .mean_axis(Axis(0))
            .unwrap_or_else(|| Array1::zeros(METRICS.len()));
        means.insert(key(s, p), mean.to_vec());
        for base in [PolicyKind::Flat, PolicyKind::RatioGuardrails] {
            if base == p {
                continue;
            }
            if let Some(b) = tables.get(&(s, base)) {
                let diffs: Vec<Interval> = (0..METRICS.len())
                    .map(|m| paired_interval(t, b, m))
                    .collect();
                differences.insert(format!("{}/{}", key(s, p), base.name()), diffs);
            }
        }
        // The emergency cap against the same policy uncapped.
        if s == Scenario::NyeCapped {
            if let Some(b) = tables.get(&(Scenario::NewYearsEve, p)) {
                let diffs: Vec<Interval> = (0..METRICS.len())
                    .map(|m| paired_interval(t, b, m))
                    .collect();
                differences.insert(format!("{}/uncapped", key(s, p)), diffs);
            }
        }
    }
    let view = View { tables };
    BenchReport {
        seeds: opts.seeds,
        timeline: opts.timeline,
        best_fixed,
        grid,
        metrics: METRICS.to_vec(),
        runs,
        means,
        differences,
        gates: gates(&view),
        targets: targets(&view, PolicyKind::Model),
        candidate_targets: if opts.candidate.is_some() {
            targets(&view, PolicyKind::Candidate)
        } else {
            Vec::new()
        },
    }
}

/// Mean and bootstrap 95 % interval of `a − b` in metric `m`, paired by
/// seed (row).
pub fn paired_interval(a: &Table, b: &Table, m: usize) -> Interval {
    let d: Vec<f64> = a
        .column(m)
        .iter()
        .zip(b.column(m).iter())
        .map(|(x, y)| x - y)
        .collect();
    if d.is_empty() {
        return Interval {
            mean: 0.0,
            lo: 0.0,
            hi: 0.0,
        };
    }
    let n = d.len();
    let mean = d.iter().sum::<f64>() / n as f64;
    let mut rng = Rng::new(BOOTSTRAP_SEED, m as u64);
    let mut resampled: Vec<f64> = (0..RESAMPLES)
        .map(|_| (0..n).map(|_| d[rng.below(n as u64) as usize]).sum::<f64>() / n as f64)
        .collect();
    resampled.sort_by(f64::total_cmp);
    Interval {
        mean,
        lo: resampled[(RESAMPLES as f64 * 0.025) as usize],
        hi: resampled[(RESAMPLES as f64 * 0.975) as usize - 1],
    }
}

/// Read access to the tables by name.
struct View<'a> {
    tables: &'a BTreeMap<(Scenario, PolicyKind), Table>,
}

impl View<'_> {
    fn mean(&self, s: Scenario, p: PolicyKind, metric: &str) -> Option<f64> {
        let t = self.tables.get(&(s, p))?;
        let c = col(metric);
        (c < METRICS.len() && t.nrows() > 0).then(|| t.column(c).mean().unwrap_or(0.0))
    }

    fn diff(&self, s: Scenario, p: PolicyKind, base: PolicyKind, metric: &str) -> Option<Interval> {
        let (a, b) = (self.tables.get(&(s, p))?, self.tables.get(&(s, base))?);
        let c = col(metric);
        (c < METRICS.len()).then(|| paired_interval(a, b, c))
    }
}

fn check(name: impl Into<String>, figure: Option<(String, bool)>) -> Check {
    let (figure, pass) = figure.unwrap_or_else(|| ("not run".to_owned(), false));
    Check {
        name: name.into(),
        figure,
        pass,
    }
}

/// The calibration gates (issue 15), on flat pricing, and the drivers'
/// response to prices (on ratio + guardrails, the service's default).
fn gates(v: &View<'_>) -> Vec<Check> {
    use PolicyKind::{Flat, RatioGuardrails};
    use Scenario::{NewYearsEve, Normal, Stadium};
    let normal_eta = v.mean(Normal, Flat, "median_eta_min");
    vec![
        check(
            "normal day, flat: utilisation 45-55 % (Cramer & Krueger)",
            v.mean(Normal, Flat, "utilisation")
                .map(|u| (format!("{:.1} %", 100.0 * u), (0.45..=0.55).contains(&u))),
        ),
        check(
            "normal day, flat: median pickup ETA 2-4 min",
            normal_eta.map(|e| (format!("{e:.2} min"), (2.0..=4.0).contains(&e))),
        ),
        check(
            "New Year's Eve, flat: >= 25 % of requests unfulfilled (Hall, Kendrick & Nosko)",
            v.mean(NewYearsEve, Flat, "peak_fulfilment")
                .map(|f| (format!("{:.1} %", 100.0 * (1.0 - f)), 1.0 - f >= 0.25)),
        ),
        check(
            "New Year's Eve, flat: median ETA >= 2.5 x the normal day's",
            v.mean(NewYearsEve, Flat, "peak_median_eta_min")
                .zip(normal_eta)
                .map(|(e, n)| (format!("{e:.2} min = {:.2} x", e / n), e >= 2.5 * n)),
        ),
        check(
            "stadium, ratio+guardrails: prices account for 10-60 % of repositioning where a surge is in sight (Lu, Frazier & Kislev)",
            v.mean(Stadium, RatioGuardrails, "price_move_share")
                .map(|p| (format!("{:.1} %", 100.0 * p), (0.10..=0.60).contains(&p))),
        ),
    ]
}

/// Issue 15's targets for `model` (+ guardrails): [`PolicyKind::Model`]
/// or [`PolicyKind::Candidate`].
fn targets(v: &View<'_>, model: PolicyKind) -> Vec<Check> {
    let mut out = Vec::new();
    peak_targets(v, model, &mut out);
    guardrail_targets(v, model, &mut out);
    gap_targets(v, model, &mut out);
    normal_day_targets(v, model, &mut out);
    out
}

/// A paired difference of shares in percentage points, with its interval.
fn pts(i: Interval) -> String {
    format!(
        "{:+.1} pts [{:+.1}, {:+.1}]",
        100.0 * i.mean,
        100.0 * i.lo,
        100.0 * i.hi
    )
}

/// The two peaks (New Year's Eve, the stadium): fulfilment and ETA.
fn peak_targets(v: &View<'_>, model: PolicyKind, out: &mut Vec<Check>) {
    use PolicyKind::{Flat, RatioGuardrails};
    use Scenario::{NewYearsEve, Normal, Stadium};
    let normal_eta = v.mean(Normal, model, "median_eta_min");
    for s in [NewYearsEve, Stadium] {
        let n = s.name();
        out.push(check(
            format!("{n}: model fulfilment at the peak >= flat + 15 pts"),
            v.diff(s, model, Flat, "peak_fulfilment")
                .map(|i| (pts(i), i.mean >= 0.15)),
        ));
        out.push(check(
            format!("{n}: model fulfilment at the peak >= 90 %"),
            v.mean(s, model, "peak_fulfilment")
                .map(|f| (format!("{:.1} %", 100.0 * f), f >= 0.9)),
        ));
        out.push(check(
            format!("{n}: model median ETA at the peak <= 1.5 x the normal day's"),
            v.mean(s, model, "peak_median_eta_min")
                .zip(normal_eta)
                .map(|(e, n)| (format!("{e:.2} min = {:.2} x", e / n), e <= 1.5 * n)),
        ));
        out.push(check(
            format!("{n}: model p90 ETA in the spike's first 10 min <= 0.9 x ratio+guardrails"),
            v.mean(s, model, "spike_p90_eta_min")
                .zip(v.mean(s, RatioGuardrails, "spike_p90_eta_min"))
                .map(|(a, b)| (format!("{a:.2} vs {b:.2} min"), a <= 0.9 * b)),
        ));
    }
}

/// Every scenario: the model's fulfilment and price reversals against
/// ratio+guardrails'.
fn guardrail_targets(v: &View<'_>, model: PolicyKind, out: &mut Vec<Check>) {
    use PolicyKind::RatioGuardrails;
    for s in Scenario::DAYS {
        let n = s.name();
        out.push(check(
            format!("{n}: model fulfilment not below ratio+guardrails by > 1 pt (95 % interval)"),
            v.diff(s, model, RatioGuardrails, "fulfilment_requests")
                .map(|i| (pts(i), i.lo >= -0.01)),
        ));
        out.push(check(
            format!("{n}: model reversals per cell-hour <= half of ratio+guardrails'"),
            v.mean(s, model, "reversals_per_cell_hour")
                .zip(v.mean(s, RatioGuardrails, "reversals_per_cell_hour"))
                .map(|(a, b)| (format!("{a:.2} vs {b:.2}"), a <= 0.5 * b)),
        ));
    }
}

/// The stressed scenarios: the share of the completed-trip gap between flat
/// pricing and the oracle that the model closes.
fn gap_targets(v: &View<'_>, model: PolicyKind, out: &mut Vec<Check>) {
    use PolicyKind::{Flat, Oracle};
    use Scenario::{NewYearsEve, Outage, Stadium, SupplyShock};
    for s in [NewYearsEve, Stadium, SupplyShock, Outage] {
        let completed = |p| v.mean(s, p, "completed");
        out.push(check(
            format!(
                "{}: model closes >= 60 % of the completed-trip gap flat -> oracle",
                s.name()
            ),
            completed(model)
                .zip(completed(Flat))
                .zip(completed(Oracle))
                .map(|((m, f), o)| {
                    let gap = o - f;
                    if gap <= 0.0 {
                        (format!("no gap: oracle {o:.0} vs flat {f:.0} trips"), false)
                    } else {
                        let closed = (m - f) / gap;
                        (
                            format!("{:.0} % of {gap:.0} trips", 100.0 * closed),
                            closed >= 0.6,
                        )
                    }
                }),
        ));
    }
}

/// The normal day: the model's mean multiplier paid, and its completed
/// trips against the best fixed price's.
fn normal_day_targets(v: &View<'_>, model: PolicyKind, out: &mut Vec<Check>) {
    use PolicyKind::BestFixed;
    use Scenario::Normal;
    out.push(check(
        "normal: model mean multiplier paid <= 1.10",
        v.mean(Normal, model, "mean_multiplier_paid")
            .map(|m| (format!("{m:.3}"), m <= 1.10)),
    ));
    out.push(check(
        "normal: model completed trips within 1 % of the best fixed price",
        v.mean(Normal, model, "completed")
            .zip(v.mean(Normal, BestFixed, "completed"))
            .map(|(m, b)| {
                let d = (m - b) / b.max(1.0);
                (format!("{:+.2} %", 100.0 * d), d.abs() <= 0.01)
            }),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paired_intervals_cover_a_constant_difference_exactly() {
        let a = Array2::from_shape_fn((20, METRICS.len()), |(i, j)| (i * 7 + j) as f64);
        let b = a.mapv(|v| v - 0.25);
        let i = paired_interval(&a, &b, 3);
        assert_eq!((i.mean, i.lo, i.hi), (0.25, 0.25, 0.25));
    }

    #[test]
    fn paired_intervals_are_reproducible_and_ordered() {
        let a = Array2::from_shape_fn((20, METRICS.len()), |(i, _)| ((i * 37) % 11) as f64);
        let b = Array2::zeros((20, METRICS.len()));
        let x = paired_interval(&a, &b, 0);
        assert_eq!(x, paired_interval(&a, &b, 0));
        assert!(x.lo < x.mean && x.mean < x.hi, "{x:?}");
    }
}
