//! The model card: `<name>.card.json` next to `<name>.onnx`.
//!
//! Only the fields the service relies on are read; everything else the
//! trainer writes (dataset, metrics, training parameters) is ignored, so
//! cards can grow without breaking older services.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::LoadError;
use primetime_core::FEATURE_NAMES;

/// The fields of a model card that loading checks.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ModelCard {
    /// Version carried by every decision priced with this model.
    pub version: String,
    /// Feature columns in model input order; must equal
    /// [`FEATURE_NAMES`].
    pub feature_order: Vec<String>,
    /// Lowercase hex sha256 of the exact `.onnx` bytes.
    pub sha256: String,
    /// The multiplier cap the model was trained for (informational; the
    /// policy's cap is configuration).
    pub cap: f64,
}

/// Where the card of the model at `model` lives: `<dir>/<stem>.card.json`.
pub fn card_path(model: &Path) -> PathBuf {
    model.with_extension("card.json")
}

impl ModelCard {
    /// Reads and validates the card at `path`. The feature order is checked
    /// separately ([`ModelCard::check_feature_order`]) so that its error
    /// names both orders.
    pub fn read(path: &Path) -> Result<Self, LoadError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LoadError::MissingCard {
                    path: path.to_owned(),
                });
            }
            Err(e) => {
                return Err(LoadError::Io {
                    path: path.to_owned(),
                    source: e,
                });
            }
        };
        Self::parse(&text).map_err(|message| LoadError::InvalidCard {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses and validates card JSON; the error is a human-readable reason.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut card: ModelCard = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if card.version.trim().is_empty() {
            return Err("`version` is empty".into());
        }
        let sha = card.sha256.trim().to_ascii_lowercase();
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "`sha256` must be 64 hex digits, got {:?}",
                card.sha256
            ));
        }
        card.sha256 = sha;
        if !(card.cap.is_finite() && card.cap >= 1.0) {
            return Err(format!(
                "`cap` must be a finite number >= 1, got {}",
                card.cap
            ));
        }
        Ok(card)
    }

    /// The card's feature order must be the engine's, name for name.
    pub fn check_feature_order(&self, card_path: &Path) -> Result<(), LoadError> {
        if self
            .feature_order
            .iter()
            .map(String::as_str)
            .eq(FEATURE_NAMES)
        {
            Ok(())
        } else {
            Err(LoadError::FeatureOrder {
                path: card_path.to_owned(),
                card: self.feature_order.clone(),
                expected: FEATURE_NAMES.iter().map(|s| (*s).to_owned()).collect(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "8077a70e07f2c1191a778e8153de06f8e48420a4094736de88cbb7debc8a4943";

    fn json(extra: &str) -> String {
        format!(
            r#"{{"version": "v1", "feature_order": {order}, "sha256": "{SHA}", "cap": 3.0{extra}}}"#,
            order = serde_json::to_string(&FEATURE_NAMES).unwrap_or_default(),
        )
    }

    #[test]
    fn parses_and_ignores_unknown_fields() {
        let card = ModelCard::parse(&json(r#", "dataset": {"seed": 7}, "heldout": [1, 2]"#))
            .expect("valid card");
        assert_eq!(card.version, "v1");
        assert_eq!(card.sha256, SHA);
        assert_eq!(card.cap, 3.0);
        assert!(card.check_feature_order(Path::new("x.card.json")).is_ok());
    }

    #[test]
    fn requires_the_four_fields() {
        for field in ["version", "feature_order", "sha256", "cap"] {
            let mut v: serde_json::Value = serde_json::from_str(&json("")).expect("json");
            v.as_object_mut().map(|o| o.remove(field));
            let err = ModelCard::parse(&v.to_string()).expect_err(field);
            assert!(err.contains(field), "{field}: {err}");
        }
    }

    #[test]
    fn rejects_bad_values() {
        let bad_sha = json("").replace(SHA, "abc");
        assert!(ModelCard::parse(&bad_sha).unwrap_err().contains("sha256"));
        let bad_cap = json("").replace("3.0", "0.5");
        assert!(ModelCard::parse(&bad_cap).unwrap_err().contains("cap"));
        let empty_version = json("").replace("\"v1\"", "\" \"");
        assert!(
            ModelCard::parse(&empty_version)
                .unwrap_err()
                .contains("version")
        );
    }

    #[test]
    fn uppercase_sha_is_normalised() {
        let card = ModelCard::parse(&json("").replace(SHA, &SHA.to_uppercase())).expect("card");
        assert_eq!(card.sha256, SHA);
    }

    #[test]
    fn card_path_is_next_to_the_model() {
        assert_eq!(
            card_path(Path::new("models/primetime-v1.onnx")),
            PathBuf::from("models/primetime-v1.card.json")
        );
    }
}
