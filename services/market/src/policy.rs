//! The pricing policies the benchmark compares, and the one model only it
//! needs (the raw demand/supply ratio).

use std::sync::Arc;

use primetime_core::{FeatureRow, FormulaModel, ModelError, PolicyParams, PriceModel};
use primetime_model::OnnxModel;
use serde::Serialize;

/// A pricing policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    /// 1.0 everywhere, always.
    Flat,
    /// One multiplier everywhere, always: the best of a grid on the normal
    /// day ([`crate::bench::FIXED_GRID`]).
    BestFixed,
    /// `clip(requests_1m / max(supply, 1), 1, cap)` per cell and tick, no
    /// guardrails but the cap and the 0.05 grid.
    Ratio,
    /// The core's fallback formula through the core's guardrails
    /// ([`FormulaModel`] + [`primetime_core::Policy`] at their defaults):
    /// what the service does without a model.
    RatioGuardrails,
    /// The ONNX model through the same guardrails.
    Model,
    /// A candidate model through the same guardrails, judged beside
    /// [`PolicyKind::Model`] (`--candidate`; not in [`PolicyKind::ALL`]).
    Candidate,
    /// The clearing multiplier from the simulator's true expected demand,
    /// the riders' elasticity and the idle supply, through the same cap:
    /// perfect knowledge ([`primetime_sim::Simulator::oracle_prices`]).
    Oracle,
}

impl PolicyKind {
    pub const ALL: [PolicyKind; 6] = [
        PolicyKind::Flat,
        PolicyKind::BestFixed,
        PolicyKind::Ratio,
        PolicyKind::RatioGuardrails,
        PolicyKind::Model,
        PolicyKind::Oracle,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::Flat => "flat",
            PolicyKind::BestFixed => "best_fixed",
            PolicyKind::Ratio => "ratio",
            PolicyKind::RatioGuardrails => "ratio_guardrails",
            PolicyKind::Model => "model_guardrails",
            PolicyKind::Candidate => "candidate_guardrails",
            PolicyKind::Oracle => "oracle",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .chain([PolicyKind::Candidate])
            .find(|x| x.name() == s)
    }

    /// Whether the policy prices through the engine (and so depends on the
    /// records and the shard count at all).
    pub fn uses_engine(self) -> bool {
        matches!(
            self,
            PolicyKind::Ratio
                | PolicyKind::RatioGuardrails
                | PolicyKind::Model
                | PolicyKind::Candidate
        )
    }
}

/// The raw ratio as a model: `requests_1m / max(supply, 1)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RatioModel;

impl PriceModel for RatioModel {
    fn version(&self) -> &str {
        "ratio-raw"
    }

    fn predict(&self, rows: &[FeatureRow], out: &mut Vec<f32>) -> Result<(), ModelError> {
        out.clear();
        out.extend(rows.iter().map(|r| r[1] / r[0].max(1.0)));
        Ok(())
    }
}

/// Guardrails that do nothing but cap and round: no smoothing, any step,
/// evidence of one request in 5 minutes (the least the core accepts).
pub fn raw_policy(cap: f64) -> PolicyParams {
    PolicyParams {
        cap,
        min_requests_5m: 1,
        smoothing_weight: 0.0,
        max_step_up: cap,
        max_step_down: cap,
        ..PolicyParams::default()
    }
}

/// A model the engine can own, shared between threads where it is big.
pub type BoxedModel = Box<dyn PriceModel + Send + Sync>;

/// The model and guardrails of an engine-priced policy; `None` for the
/// others (and for [`PolicyKind::Model`] without a model).
pub fn engine_pricing(
    kind: PolicyKind,
    defaults: PolicyParams,
    onnx: Option<&Arc<OnnxModel>>,
) -> Option<(BoxedModel, PolicyParams)> {
    match kind {
        PolicyKind::Ratio => Some((Box::new(RatioModel), raw_policy(defaults.cap))),
        PolicyKind::RatioGuardrails => {
            Some((Box::new(FormulaModel::new(defaults.fallback)), defaults))
        }
        PolicyKind::Model | PolicyKind::Candidate => {
            onnx.map(|m| (Box::new(Arc::clone(m)) as BoxedModel, defaults))
        }
        PolicyKind::Flat | PolicyKind::BestFixed | PolicyKind::Oracle => None,
    }
}
