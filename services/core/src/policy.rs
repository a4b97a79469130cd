//! Guardrails between the model's raw output and a published multiplier
//! (DESIGN §5), and the fallback formula.
//!
//! Applied in this order, each recorded in the explanation when it changes
//! the value: non-finite output → fallback formula; minimum evidence (1.0,
//! and no smoothing); spatial smoothing with the neighbours' multipliers of
//! the previous tick; operator controls ([`crate::controls`]); maximum
//! step per tick (up and down); clamp to `[1.0, cap]`; quantise to 0.05.
//! Quantisation never undoes the step limit or the clamp: it rounds to the
//! nearest 0.05 *inside* the allowed range.
//!
//! Controls come after the model and smoothing (they override what the
//! market computed, including the neighbours' influence) and before the
//! step limits and quantisation (so a floor still rises at the step-up
//! rate and every published value is a multiple of 0.05). A control cap
//! below the current price wins over the step-down limit, like the
//! emergency cap; a force is exact (no step limits, market cap still
//! applies); a freeze keeps the previous tick's multiplier.

use serde::{Deserialize, Serialize};

use crate::controls::Effect;
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
    /// An operator's control forced the multiplier.
    ControlForce,
    /// An operator's control froze the multiplier at the previous tick's.
    ControlFreeze,
    /// Raised to an operator's control floor.
    ControlFloor,
    /// Lowered to an operator's control cap (also when the cap wins over
    /// the step-down limit).
    ControlCap,
}

impl Guardrail {
    /// Whether this step is an operator control's.
    pub fn is_control(self) -> bool {
        matches!(
            self,
            Self::ControlForce | Self::ControlFreeze | Self::ControlFloor | Self::ControlCap
        )
    }
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
    items: [Option<Adjustment>; 8],
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
        self.decide_controlled(features, raw, neighbour_multiplier, prev, None)
    }

    /// [`Self::decide`] under the operator controls' `effect` on the cell.
    pub fn decide_controlled(
        &self,
        features: &Features,
        raw: Option<f64>,
        neighbour_multiplier: f64,
        prev: Multiplier,
        effect: Option<&Effect>,
    ) -> Verdict {
        let mut adj = Adjustments::default();
        let (multiplier, raw, fallback) =
            self.apply(features, raw, neighbour_multiplier, prev, effect, &mut adj);
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
        self.multiplier_controlled(features, raw, neighbour_multiplier, prev, None)
    }

    /// `decide_controlled(..).multiplier`, without recording.
    pub fn multiplier_controlled(
        &self,
        features: &Features,
        raw: Option<f64>,
        neighbour_multiplier: f64,
        prev: Multiplier,
        effect: Option<&Effect>,
    ) -> Multiplier {
        self.apply(
            features,
            raw,
            neighbour_multiplier,
            prev,
            effect,
            &mut Discard,
        )
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
        effect: Option<&Effect>,
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

        let mut cap_q = self.cap_q;
        let mut cap_guardrail = Guardrail::Cap;
        if let Some(effect) = effect {
            match control_step(effect, prev, v, adj) {
                Step::Exact(q) => return self.exact(q, v, raw_value, fallback, adj),
                Step::Bounded { value, cap } => {
                    v = value;
                    if let Some(c) = cap.filter(|&c| c < cap_q) {
                        cap_q = c;
                        cap_guardrail = Guardrail::ControlCap;
                    }
                }
            }
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

        let cap = f64::from(cap_q) / 20.0;
        if v < 1.0 {
            adj.push(Guardrail::Floor, v, 1.0);
            v = 1.0;
        } else if v > cap {
            adj.push(cap_guardrail, v, cap);
            v = cap;
        }

        // Round to the nearest step inside [lo, hi] ∩ [1, cap]; the cap wins
        // when an emergency or control cap is below the previous multiplier.
        let mut q = (v * 20.0).round() as u32;
        q = q.clamp(prev.0.saturating_sub(self.down_q), prev.0 + self.up_q);
        q = q.clamp(20, cap_q);
        let m = Multiplier(q);
        adj.push(Guardrail::Quantise, v, m.value());

        (m, raw_value, fallback)
    }

    /// The end of the guardrails for a force or a freeze: `q` exactly,
    /// within `[1.0, market cap]`, without step limits.
    #[inline(always)]
    fn exact<R: Record>(
        &self,
        q: u32,
        v: f64,
        raw_value: f64,
        fallback: bool,
        adj: &mut R,
    ) -> (Multiplier, f64, bool) {
        let m = Multiplier(q.clamp(20, self.cap_q));
        if m.0 < q {
            adj.push(Guardrail::Cap, v, m.value());
        }
        (m, raw_value, fallback)
    }
}

/// What the control step leaves for the remaining guardrails.
enum Step {
    /// Force or freeze: this many twentieths, no step limits.
    Exact(u32),
    /// The value after floor and cap, and the control cap (twentieths) for
    /// the final clamp (so that it wins over the step-down limit).
    Bounded { value: f64, cap: Option<u32> },
}

/// The operator-control guardrail: force > freeze > floor, then cap (the
/// cap wins over a higher floor). Records what it changes.
#[inline(always)]
fn control_step<R: Record>(effect: &Effect, prev: Multiplier, v: f64, adj: &mut R) -> Step {
    if let Some((m, _)) = effect.force {
        adj.push(Guardrail::ControlForce, v, m.value());
        return Step::Exact(m.0);
    }
    if effect.freeze.is_some() {
        adj.push(Guardrail::ControlFreeze, v, prev.value());
        return Step::Exact(prev.0);
    }
    let mut v = v;
    if let Some((floor, _)) = effect.floor {
        if v < floor.value() {
            adj.push(Guardrail::ControlFloor, v, floor.value());
            v = floor.value();
        }
    }
    if let Some((cap, _)) = effect.cap {
        if v > cap.value() {
            adj.push(Guardrail::ControlCap, v, cap.value());
            v = cap.value();
        }
    }
    Step::Bounded {
        value: v,
        cap: effect.cap.map(|(c, _)| c.0),
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

    fn effect(f: impl FnOnce(&mut Effect)) -> Effect {
        let mut e = Effect::default();
        f(&mut e);
        e
    }

    fn kinds(v: &Verdict) -> Vec<Guardrail> {
        v.adjustments.iter().map(|a| a.guardrail).collect()
    }

    #[test]
    fn control_cap_wins_over_step_down_and_is_named() {
        use crate::controls::ControlId;
        let p = Policy::new(PolicyParams::default());
        let cap = effect(|e| e.cap = Some((Multiplier(30), ControlId(1))));
        let v = p.decide_controlled(&busy(), Some(3.0), 1.0, Multiplier(60), Some(&cap));
        assert_eq!(v.multiplier.value(), 1.5);
        assert!(kinds(&v).starts_with(&[Guardrail::Smoothing, Guardrail::ControlCap]));
        assert!(kinds(&v).contains(&Guardrail::StepDown));
        // The step-down limit would say 2.75; the control cap wins.
        assert_eq!(kinds(&v).iter().filter(|g| g.is_control()).count(), 2);
        // A cap above the value changes nothing.
        let high = effect(|e| e.cap = Some((Multiplier(60), ControlId(1))));
        let free = p.decide(&busy(), Some(1.2), 1.0, Multiplier::ONE);
        let capped = p.decide_controlled(&busy(), Some(1.2), 1.0, Multiplier::ONE, Some(&high));
        assert_eq!(free, capped);
    }

    #[test]
    fn control_floor_rises_at_the_step_up_rate_and_a_lower_cap_wins() {
        use crate::controls::ControlId;
        let p = Policy::new(PolicyParams::default());
        let floor = effect(|e| e.floor = Some((Multiplier(50), ControlId(1))));
        let v = p.decide_controlled(&busy(), Some(1.0), 1.0, Multiplier::ONE, Some(&floor));
        assert_eq!(v.multiplier.value(), 1.5);
        assert_eq!(kinds(&v), [Guardrail::ControlFloor, Guardrail::StepUp]);
        let both = effect(|e| {
            e.floor = Some((Multiplier(50), ControlId(1)));
            e.cap = Some((Multiplier(24), ControlId(2)));
        });
        let v = p.decide_controlled(&busy(), Some(1.0), 1.0, Multiplier::ONE, Some(&both));
        assert_eq!(v.multiplier.value(), 1.2);
    }

    #[test]
    fn force_is_exact_and_freeze_holds() {
        use crate::controls::ControlId;
        let p = Policy::new(PolicyParams::default());
        let force = effect(|e| e.force = Some((Multiplier(45), ControlId(1))));
        let v = p.decide_controlled(&busy(), Some(1.0), 1.0, Multiplier::ONE, Some(&force));
        assert_eq!(v.multiplier.value(), 2.25);
        let quiet = Features {
            requests_5m: 0,
            ..busy()
        };
        let v = p.decide_controlled(&quiet, Some(5.0), 1.0, Multiplier(70), Some(&force));
        assert_eq!(v.multiplier.value(), 2.25);
        // Above the market cap, the market cap applies.
        let huge = effect(|e| e.force = Some((Multiplier(200), ControlId(1))));
        let v = p.decide_controlled(&busy(), Some(1.0), 1.0, Multiplier::ONE, Some(&huge));
        assert_eq!(v.multiplier.value(), 3.0);
        let freeze = effect(|e| e.freeze = Some(ControlId(2)));
        for raw in [1.0, 9.0, f64::NAN] {
            let v = p.decide_controlled(&busy(), Some(raw), 2.0, Multiplier(37), Some(&freeze));
            assert_eq!(v.multiplier, Multiplier(37));
            assert!(kinds(&v).contains(&Guardrail::ControlFreeze));
        }
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
