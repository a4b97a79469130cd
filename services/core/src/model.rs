//! The seam between the engine and a pricing model (DESIGN §5).
//!
//! The engine calls [`PriceModel::predict`] once per tick with the feature
//! rows of every active cell. Implementations live outside the core (the
//! ONNX model in `primetime-model`); the core ships [`FormulaModel`], the
//! fallback formula as a model, used when none is configured.

use thiserror::Error;

use crate::features::{FeatureRow, Features};
use crate::policy::FallbackParams;

/// A model failed for a whole batch. The engine then prices the batch with
/// the fallback formula and marks every decision `fallback`.
#[derive(Debug, Error)]
#[error("model {version} failed: {message}")]
pub struct ModelError {
    pub version: String,
    pub message: String,
}

/// Turns feature rows into raw multipliers.
///
/// Contract: the output for a row depends on that row only (never on the
/// rest of the batch or on earlier calls). Shards batch rows differently,
/// so this is what keeps results independent of the deployment.
pub trait PriceModel {
    /// Version string carried by every decision (`model_version`).
    fn version(&self) -> &str;

    /// Writes exactly one raw multiplier per row into `out` (cleared first).
    /// Non-finite values are allowed; the policy replaces them.
    fn predict(&self, rows: &[FeatureRow], out: &mut Vec<f32>) -> Result<(), ModelError>;
}

/// The fallback formula of [`FallbackParams`] as a model.
#[derive(Debug, Clone, Default)]
pub struct FormulaModel {
    params: FallbackParams,
}

impl FormulaModel {
    /// Version string of the formula model.
    pub const VERSION: &'static str = "formula-v1";

    pub fn new(params: FallbackParams) -> Self {
        Self { params }
    }
}

impl PriceModel for FormulaModel {
    fn version(&self) -> &str {
        Self::VERSION
    }

    fn predict(&self, rows: &[FeatureRow], out: &mut Vec<f32>) -> Result<(), ModelError> {
        out.clear();
        out.extend(rows.iter().map(|r| {
            let f = Features {
                supply: r[0] as u32,
                requests_1m: r[1] as u32,
                requests_5m: r[2] as u32,
                checks_1m: r[3] as u32,
                supply_ring: r[4] as u32,
                requests_5m_ring: r[5] as u32,
                prev_multiplier: f64::from(r[6]),
            };
            self.params.raw_multiplier(&f) as f32
        }));
        Ok(())
    }
}

impl<M: PriceModel + ?Sized> PriceModel for Box<M> {
    fn version(&self) -> &str {
        (**self).version()
    }

    fn predict(&self, rows: &[FeatureRow], out: &mut Vec<f32>) -> Result<(), ModelError> {
        (**self).predict(rows, out)
    }
}

impl<M: PriceModel + ?Sized> PriceModel for std::sync::Arc<M> {
    fn version(&self) -> &str {
        (**self).version()
    }

    fn predict(&self, rows: &[FeatureRow], out: &mut Vec<f32>) -> Result<(), ModelError> {
        (**self).predict(rows, out)
    }
}
