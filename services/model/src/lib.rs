//! `primetime-model`: the ONNX pricing model behind the core's
//! [`PriceModel`] seam (DESIGN §5).
//!
//! [`embedded`] builds the model the binary carries (`models/primetime-v1`,
//! included at build time); [`load`] reads `<name>.onnx` and its model card `<name>.card.json`,
//! checks them against each other and against the engine's feature contract,
//! and builds one fixed-shape tract plan (4096 rows; smaller batches are
//! padded, so a row's output never depends on its batch). Every check that fails is a
//! [`LoadError`] naming what is wrong; the service logs it and prices with
//! the fallback formula instead.
//!
//! Modules:
//! - [`card`]: the model card (JSON) and its validation;
//! - `onnx` (private): loading, interface checks, plans and batching —
//!   [`OnnxModel`].
//!
//! Inference is synchronous and CPU-bound: callers run it on a blocking pool,
//! never on the reactor.

#![forbid(unsafe_code)]

pub mod card;
mod onnx;

use std::path::PathBuf;

use thiserror::Error;

pub use card::{ModelCard, card_path};
pub use onnx::{EMBEDDED_NAME, MAX_BATCH, OnnxModel, embedded, load};
pub use primetime_core::{FEATURE_COUNT, FEATURE_NAMES, FeatureRow, ModelError, PriceModel};

/// Why a model could not be loaded. Each message names the file and the
/// fault, so that one log line tells an operator what to fix.
#[derive(Debug, Error)]
pub enum LoadError {
    #[error("model file {} not found", path.display())]
    MissingFile { path: PathBuf },

    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("model card {} not found (expected next to the model file)", path.display())]
    MissingCard { path: PathBuf },

    #[error("invalid model card {}: {message}", path.display())]
    InvalidCard { path: PathBuf, message: String },

    #[error(
        "model file {} has sha256 {actual}, but its card says {expected}",
        path.display()
    )]
    ShaMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },

    #[error(
        "model card {} lists features in the order {card:?}, but the engine \
         produces {expected:?}",
        path.display()
    )]
    FeatureOrder {
        path: PathBuf,
        card: Vec<String>,
        expected: Vec<String>,
    },

    #[error("model file {} is not a readable ONNX model: {message}", path.display())]
    Corrupt { path: PathBuf, message: String },

    #[error(
        "model {} has the wrong interface: {message} (expected one float32[N, 7] \
         input and one float32[N, 1] output)",
        path.display()
    )]
    WrongShape { path: PathBuf, message: String },

    #[error(
        "cannot build an inference plan for {} at batch size {batch}: {message}",
        path.display()
    )]
    Plan {
        path: PathBuf,
        batch: usize,
        message: String,
    },
}
