//! Choosing the pricing model: the ONNX model when it loads, otherwise the
//! fallback formula with every decision marked `fallback`. The default is
//! the model built into the binary ([`EMBEDDED`]).

use std::path::Path;
use std::sync::Arc;

use primetime_core::{FeatureRow, FormulaModel, ModelError, PriceModel};

/// The model the pipeline uses and how it came to be.
pub struct ModelChoice {
    pub model: Arc<dyn PriceModel + Send + Sync>,
    /// Why the configured model is not used (`None`: it is, or none was
    /// configured).
    pub fallback_reason: Option<String>,
}

/// Stands in for a model that failed to load: every batch "fails", so the
/// policy prices with the formula and marks each decision `fallback`.
#[derive(Debug)]
pub struct FailedModel {
    reason: String,
}

impl FailedModel {
    /// Version carried by decisions made in fallback mode.
    pub const VERSION: &'static str = "fallback-formula-v1";
}

impl PriceModel for FailedModel {
    fn version(&self) -> &str {
        Self::VERSION
    }

    fn predict(&self, _rows: &[FeatureRow], out: &mut Vec<f32>) -> Result<(), ModelError> {
        out.clear();
        Err(ModelError {
            version: Self::VERSION.to_owned(),
            message: self.reason.clone(),
        })
    }
}

/// The `model` setting that names the model built into the binary.
pub const EMBEDDED: &str = "embedded";

/// Loads `path` ([`EMBEDDED`]: the model built into the binary; empty: the
/// formula, by choice). A load failure is logged and gives fallback mode,
/// never an error: pricing must go on.
pub fn choose(path: &str, fallback: primetime_core::policy::FallbackParams) -> ModelChoice {
    if path.is_empty() {
        return ModelChoice {
            model: Arc::new(FormulaModel::new(fallback)),
            fallback_reason: None,
        };
    }
    let loaded = if path == EMBEDDED {
        primetime_model::embedded()
    } else {
        primetime_model::load(Path::new(path))
    };
    match loaded {
        Ok(model) => {
            tracing::info!(path, version = model.version(), "model loaded");
            ModelChoice {
                model: Arc::new(model),
                fallback_reason: None,
            }
        }
        Err(e) => {
            let reason = e.to_string();
            tracing::warn!(path, error = %reason, "model unavailable: pricing with the fallback formula");
            ModelChoice {
                model: Arc::new(FailedModel {
                    reason: reason.clone(),
                }),
                fallback_reason: Some(reason),
            }
        }
    }
}
