//! Guardrails between the model's raw output and a published multiplier
//! (DESIGN §5), and the fallback formula.
//!
//! Applied in this order, each recorded in the explanation when it changes
//! the value: non-finite output → fallback formula; minimum evidence (1.0,
//! and no smoothing); spatial smoothing with the neighbours' multipliers of
//! the previous tick;
//! maximum step per tick (up and down); clamp to `[1.0, cap]`; quantise to
//! 0.05. Quantisation never undoes the step limit or the clamp: it rounds
//! to the nearest 0.05 *inside* the allowed range.

use serde::{Deserialize, Serialize};

use crate::features::Features;

/// A published multiplier: an integer number of 0.05 steps (twentieths),
/// so equality and "did it change" are exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Multiplier(u32);

impl Multiplier {
    /// 1.0: no surge.
    pub const ONE: Multiplier = Multiplier(20);

    /// From a count of 0.05 steps; values below 1.0 are raised to 1.0.
    pub fn from_twentieths(n: u32) -> Self {
        Self(n.max(20))
    }

    pub fn twentieths(self) -> u32 {
        self.0
    }

    /// The multiplier as a number, e.g. `1.35`. `n / 20.0` is the double
    /// nearest to the decimal value, so it prints exactly.
    pub fn value(self) -> f64 {
        f64::from(self.0) / 20.0
    }
}

impl Serialize for Multiplier {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.value())
    }
}

/// Parameters of the fallback formula, used when no model is configured and
/// whenever the model fails or returns a non-finite value:
///
/// ```text
/// demand = requests_1m + check_weight * checks_1m
/// supply = supply + ring_weight * supply_ring
/// raw    = 1 + sensitivity * max(demand / max(supply, 1) - 1, 0)
/// ```
///
/// With the defaults a cell with twice as many requests per minute as
/// available drivers (and no help from its neighbours) prices at 1.5.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FallbackParams {
    /// Weight of a price check relative to a ride request. Default 0.1.
    pub check_weight: f64,
    /// Weight of the neighbours' summed supply. Default 1/6 (their mean).
    pub ring_weight: f64,
    /// Multiplier added per unit of excess demand ratio. Default 0.5.
    pub sensitivity: f64,
}

impl Default for FallbackParams {
    fn default() -> Self {
        Self {
            check_weight: 0.1,
            ring_weight: 1.0 / 6.0,
            sensitivity: 0.5,
        }
    }
}

impl FallbackParams {
    /// The fallback formula; finite for any finite, non-negative features.
    pub fn raw_multiplier(&self, f: &Features) -> f64 {
        let demand = f64::from(f.requests_1m) + self.check_weight * f64::from(f.checks_1m);
        let supply = f64::from(f.supply) + self.ring_weight * f64::from(f.supply_ring);
        let ratio = demand / supply.max(1.0);
        1.0 + self.sensitivity * (ratio - 1.0).max(0.0)
    }
}

/// Guardrail configuration (all multipliers as plain numbers).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyParams {
    /// Per-market cap. Default 3.0.
    pub cap: f64,
    /// Operator's emergency cap; when set, the effective cap is the lower
    /// of the two. It may be below a cell's current multiplier: the cap
    /// then wins over the step-down limit. Default none.
    pub emergency_cap: Option<f64>,
    /// Fewer ride requests than this in the long window → 1.0, without
    /// smoothing. At least 1, so that a cell without demand always returns
    /// to 1.0 and is evicted. Default 3.
    pub min_requests_5m: u32,
    /// Weight of the neighbours' mean multiplier (previous tick) in the
    /// smoothed value, in `[0, 1)`. Default 0.25.
    pub smoothing_weight: f64,
    /// Largest rise per tick. Default 0.5.
    pub max_step_up: f64,
    /// Largest fall per tick. Default 0.25.
    pub max_step_down: f64,
    pub fallback: FallbackParams,
}

impl Default for PolicyParams {
    fn default() -> Self {
        Self {
            cap: 3.0,
            emergency_cap: None,
            min_requests_5m: 3,
            smoothing_weight: 0.25,
            max_step_up: 0.5,
            max_step_down: 0.25,
            fallback: FallbackParams::default(),
        }
    }
}

impl PolicyParams {
    /// Problems with these parameters, each as `(field, message)`.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let finite_at_least = |v: f64, min: f64| v.is_finite() && v >= min;
        if !finite_at_least(self.cap, 1.0) {
            out.push((
                "policy.cap",
                format!("must be a number >= 1.0, got {}", self.cap),
            ));
        }
        if let Some(e) = self.emergency_cap {
            if !finite_at_least(e, 1.0) {
                out.push((
                    "policy.emergency_cap",
                    format!("must be a number >= 1.0, got {e}"),
                ));
            }
        }
        if self.min_requests_5m < 1 {
            out.push(("policy.min_requests_5m", "must be at least 1".to_owned()));
        }
        if !(self.smoothing_weight.is_finite() && (0.0..1.0).contains(&self.smoothing_weight)) {
            out.push((
                "policy.smoothing_weight",
                format!("must be in [0, 1), got {}", self.smoothing_weight),
            ));
        }
        for (name, v) in [
            ("policy.max_step_up", self.max_step_up),
            ("policy.max_step_down", self.max_step_down),
        ] {
            if !finite_at_least(v, 0.05) {
                out.push((
                    name,
                    format!("must be a number >= 0.05 (one quantum), got {v}"),
                ));
            }
        }
        let fb = &self.fallback;
        for (name, v) in [
            ("policy.fallback.check_weight", fb.check_weight),
            ("policy.fallback.ring_weight", fb.ring_weight),
            ("policy.fallback.sensitivity", fb.sensitivity),
        ] {
            if !finite_at_least(v, 0.0) {
                out.push((name, format!("must be a finite number >= 0, got {v}")));
            }
        }
        out
    }
}

/// A guardrail that may change a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Guardrail {
    /// The model's output was not finite: the fallback formula was used.
    NonFinite,
    /// Too little demand evidence: 1.0.
    MinEvidence,
    /// Blended with the neighbours' previous multipliers.
    Smoothing,
    /// Limited to `max_step_up` above the previous multiplier.
    StepUp,
    /// Limited to `max_step_down` below the previous multiplier.
    StepDown,
    /// Raised to 1.0.
    Floor,
    /// Lowered to the cap (market or emergency).
    Cap,
    /// Rounded to a multiple of 0.05.
    Quantise,
}

/// One guardrail's change to the value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Adjustment {
    pub guardrail: Guardrail,
    /// `null` in JSON when the model output was NaN or infinite.
    pub before: f64,
    pub after: f64,
}

/// At most one adjustment per guardrail step; stored inline so pricing a
/// cell that is not published allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Adjustments {
    items: [Option<Adjustment>; 6],
    len: usize,
}

/// Where [`Policy`] records the guardrails it applies.
trait Record {
    fn push(&mut self, guardrail: Guardrail, before: f64, after: f64);
}

/// Records nothing: for [`Policy::multiplier`].
struct Discard;

impl Record for Discard {
    #[inline(always)]
    fn push(&mut self, _: Guardrail, _: f64, _: f64) {}
}

impl Record for Adjustments {
    fn push(&mut self, guardrail: Guardrail, before: f64, after: f64) {
        Adjustments::push(self, guardrail, before, after);
    }
}

impl Adjustments {
    fn push(&mut self, guardrail: Guardrail, before: f64, after: f64) {
        // Bit-level comparison so that NaN -> x is recorded and x -> x not.
        if before.to_bits() != after.to_bits() && self.len < self.items.len() {
            self.items[self.len] = Some(Adjustment {
                guardrail,
                before,
                after,
            });
            self.len += 1;
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = Adjustment> + '_ {
        self.items[..self.len].iter().flatten().copied()
    }

    /// Number of adjustments recorded.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn contains(&self, g: Guardrail) -> bool {
        self.iter().any(|a| a.guardrail == g)
    }
}

/// The policy's verdict for one cell at one tick.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    pub multiplier: Multiplier,
    /// The value the guardrails started from (model output, or formula when
    /// there is no model).
    pub raw: f64,
    /// The formula replaced a failed or non-finite model output.
    pub fallback: bool,
    pub adjustments: Adjustments,
}

/// The guardrail policy, with its limits precomputed in 0.05 steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    params: PolicyParams,
    cap_q: u32,
    up_q: u32,
    down_q: u32,
}

impl Policy {
    /// Expects parameters without [`PolicyParams::problems`].
    pub fn new(params: PolicyParams) -> Self {
        let cap = params
            .emergency_cap
            .map_or(params.cap, |e| e.min(params.cap));
        // The small epsilon keeps e.g. 0.15 * 20 = 2.9999999999999996 at 3.
        let steps = |v: f64| ((v * 20.0) + 1e-9).floor().max(0.0) as u32;
        Self {
            params,
            cap_q: steps(cap).max(20),
            up_q: steps(params.max_step_up).max(1),
            down_q: steps(params.max_step_down).max(1),
        }
    }

    pub fn params(&self) -> &PolicyParams {
        &self.params
    }

    /// The effective cap (the lower of market and emergency cap, rounded
    /// down to 0.05).
    pub fn cap(&self) -> Multiplier {
        Multiplier(self.cap_q)
    }

    /// Applies every guardrail to `raw` (the model's output, `None` when
    /// the model failed for this batch).
    pub fn decide(
        &self,
        features: &Features,
        raw: Option<f64>,
        neighbour_multiplier: f64,
        prev: Multiplier,
    ) -> Verdict {
        let mut adj = Adjustments::default();
        let (multiplier, raw, fallback) =
            self.apply(features, raw, neighbour_multiplier, prev, &mut adj);
        Verdict {
            multiplier,
            raw,
            fallback,
            adjustments: adj,
        }
    }

    /// `decide(..).multiplier`, without recording the guardrails (the same
    /// code, so always the same value).
    pub fn multiplier(
        &self,
        features: &Features,
        raw: Option<f64>,
        neighbour_multiplier: f64,
        prev: Multiplier,
    ) -> Multiplier {
        self.apply(features, raw, neighbour_multiplier, prev, &mut Discard)
            .0
    }

    /// The guardrails, in order; returns the multiplier, the raw value and
    /// whether the formula replaced the model.
    #[inline(always)]
    fn apply<R: Record>(
        &self,
        features: &Features,
        raw: Option<f64>,
        neighbour_multiplier: f64,
        prev: Multiplier,
        adj: &mut R,
    ) -> (Multiplier, f64, bool) {
        let formula = || self.params.fallback.raw_multiplier(features);
        let (raw_value, mut v, fallback) = match raw {
            Some(r) if r.is_finite() => (r, r, false),
            Some(r) => {
                let f = formula();
                adj.push(Guardrail::NonFinite, r, f);
                (r, f, true)
            }
            None => {
                let f = formula();
                (f, f, true)
            }
        };

        // Without evidence the target is 1.0, final: smoothing must not hold
        // an idle cell above 1.0 (a cluster of idle cells at 1.05 would
        // otherwise sustain itself through rounding and never be evicted).
        let evidence = features.requests_5m >= self.params.min_requests_5m;
        if !evidence {
            adj.push(Guardrail::MinEvidence, v, 1.0);
            v = 1.0;
        }

        let w = self.params.smoothing_weight;
        if evidence && w > 0.0 {
            let smoothed = (1.0 - w) * v + w * neighbour_multiplier;
            adj.push(Guardrail::Smoothing, v, smoothed);
            v = smoothed;
        }

        let prev_v = prev.value();
        let hi = f64::from(prev.0 + self.up_q) / 20.0;
        let lo = f64::from(prev.0.saturating_sub(self.down_q)) / 20.0;
        if v > hi {
            adj.push(Guardrail::StepUp, v, hi);
            v = hi;
        } else if v < lo {
            adj.push(Guardrail::StepDown, v, lo);
            v = lo;
        }
        debug_assert!(prev_v.is_finite());

        let cap = f64::from(self.cap_q) / 20.0;
        if v < 1.0 {
            adj.push(Guardrail::Floor, v, 1.0);
            v = 1.0;
        } else if v > cap {
            adj.push(Guardrail::Cap, v, cap);
            v = cap;
        }

        // Round to the nearest step inside [lo, hi] ∩ [1, cap]; the cap wins
        // when an emergency cap is below the previous multiplier.
        let mut q = (v * 20.0).round() as u32;
        q = q.clamp(prev.0.saturating_sub(self.down_q), prev.0 + self.up_q);
        q = q.clamp(20, self.cap_q);
        let m = Multiplier(q);
        adj.push(Guardrail::Quantise, v, m.value());

        (m, raw_value, fallback)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busy() -> Features {
        Features {
            supply: 2,
            requests_1m: 8,
            requests_5m: 20,
            checks_1m: 10,
            ..Features::default()
        }
    }

    #[test]
    fn fallback_formula_matches_its_documentation() {
        let fb = FallbackParams::default();
        let f = Features {
            supply: 4,
            requests_1m: 8,
            ..Features::default()
        };
        assert!((fb.raw_multiplier(&f) - 1.5).abs() < 1e-12);
        assert_eq!(fb.raw_multiplier(&Features::default()), 1.0);
    }

    #[test]
    fn guardrails_apply_in_order_and_are_recorded() {
        let p = Policy::new(PolicyParams::default());
        // Raw 2.9 from 1.0: smoothing (neighbours at 1.0) → 2.425, step up
        // to 1.5.
        let v = p.decide(&busy(), Some(2.9), 1.0, Multiplier::ONE);
        assert_eq!(v.multiplier.value(), 1.5);
        let kinds: Vec<_> = v.adjustments.iter().map(|a| a.guardrail).collect();
        assert_eq!(kinds, vec![Guardrail::Smoothing, Guardrail::StepUp]);
        assert!(!v.fallback);
    }

    #[test]
    fn non_finite_output_falls_back_to_the_formula() {
        let p = Policy::new(PolicyParams {
            smoothing_weight: 0.0,
            ..PolicyParams::default()
        });
        for raw in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let v = p.decide(&busy(), Some(raw), 1.0, Multiplier::ONE);
            assert!(v.fallback);
            assert!(v.adjustments.contains(Guardrail::NonFinite));
            assert!(v.multiplier.value() >= 1.0);
        }
    }

    #[test]
    fn min_evidence_and_floor_and_cap() {
        let p = Policy::new(PolicyParams {
            smoothing_weight: 0.0,
            ..PolicyParams::default()
        });
        let quiet = Features {
            requests_5m: 2,
            ..busy()
        };
        let v = p.decide(&quiet, Some(2.0), 1.0, Multiplier::ONE);
        assert_eq!(v.multiplier, Multiplier::ONE);
        assert!(v.adjustments.contains(Guardrail::MinEvidence));
        let v = p.decide(&busy(), Some(0.2), 1.0, Multiplier::ONE);
        assert_eq!(v.multiplier, Multiplier::ONE);
        assert!(v.adjustments.contains(Guardrail::Floor));
        let v = p.decide(&busy(), Some(9.0), 1.0, Multiplier(58));
        assert_eq!(v.multiplier.value(), 3.0);
        assert!(v.adjustments.contains(Guardrail::Cap));
    }

    #[test]
    fn quantisation_never_breaks_an_odd_step_limit() {
        let p = Policy::new(PolicyParams {
            max_step_up: 0.33,
            smoothing_weight: 0.0,
            ..PolicyParams::default()
        });
        // 1.0 + 0.33 would round to 1.35; the step limit keeps it at 1.30.
        let v = p.decide(&busy(), Some(5.0), 1.0, Multiplier::ONE);
        assert_eq!(v.multiplier.value(), 1.3);
    }

    #[test]
    fn emergency_cap_wins_over_step_down() {
        let p = Policy::new(PolicyParams {
            emergency_cap: Some(1.5),
            ..PolicyParams::default()
        });
        let v = p.decide(&busy(), Some(3.0), 1.0, Multiplier(60));
        assert_eq!(v.multiplier.value(), 1.5);
    }

    #[test]
    fn invalid_params_are_all_reported() {
        let bad = PolicyParams {
            cap: 0.5,
            smoothing_weight: 1.0,
            max_step_up: f64::NAN,
            ..PolicyParams::default()
        };
        let fields: Vec<_> = bad.problems().into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            vec![
                "policy.cap",
                "policy.smoothing_weight",
                "policy.max_step_up"
            ]
        );
    }
}
