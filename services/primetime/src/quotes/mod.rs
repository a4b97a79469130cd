//! Quotes a ride backend can honour: issuing signed quotes, verifying them
//! at redeem time, their counters and their audit trail.
//!
//! - `token.rs`: the signed token (HMAC-SHA256, key id inside) and the
//!   keyring (sign with the first key, verify with any: rotation);
//! - `audit.rs`: [`QuoteAudit`], where every issued and redeemed quote is
//!   recorded (a no-op in the embedded default; the Kafka topic
//!   `primetime.quotes.v1` implements it in Kafka mode).
//!
//! A quote is valid from `issued_at` until `expires_at` (exclusive) by this
//! instance's wall clock. Redeeming is a pure function of the token and the
//! time: the same token redeemed twice while valid gets the same answer, on
//! any instance with the key; no store of redeemed quotes exists, so a
//! backend uses the `quote_id` as its own idempotency key.

mod audit;
mod token;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::{Deserialize, Serialize};

pub use audit::{AuditEvent, AuditKind, MemoryAudit, NoAudit, QuoteAudit, RedeemOutcome};
pub use token::{Claims, Key, Keyring, MAX_TOKEN_LEN, TokenError};

/// `[quotes]` in the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuoteConfig {
    /// How long a quote can be redeemed. Default 120 s (as Uber's
    /// `fare_id`).
    pub ttl_ms: i64,
    /// `confirmation_required` when the multiplier is at or above this.
    /// Default 2.0.
    pub confirmation_threshold: f64,
    /// Signing keys; the first signs, all verify (rotation: add the new
    /// key first, drop the old one once its quotes have expired). Empty
    /// (the default): a random key made at start; quotes then neither
    /// survive a restart nor verify on another instance.
    pub keys: Vec<KeyConfig>,
}

/// One signing key in the configuration.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Written into every token (1 to 32 of `A-Za-z0-9_-`).
    pub id: String,
    /// At least 32 bytes, used as they are (e.g. 64 hex digits from
    /// `openssl rand -hex 32`).
    pub secret: String,
}

impl std::fmt::Debug for KeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyConfig({}, <secret>)", self.id)
    }
}

impl Default for QuoteConfig {
    fn default() -> Self {
        Self {
            ttl_ms: 120_000,
            confirmation_threshold: 2.0,
            keys: Vec::new(),
        }
    }
}

/// Shortest accepted signing secret.
pub const MIN_SECRET_BYTES: usize = 32;

impl QuoteConfig {
    /// Every problem, prefixed `quotes.`.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !(1_000..=86_400_000).contains(&self.ttl_ms) {
            p.push(format!(
                "quotes.ttl_ms: must be in 1000..=86400000, got {}",
                self.ttl_ms
            ));
        }
        if !(self.confirmation_threshold.is_finite() && self.confirmation_threshold >= 1.0) {
            p.push(format!(
                "quotes.confirmation_threshold: must be >= 1.0, got {}",
                self.confirmation_threshold
            ));
        }
        for (i, k) in self.keys.iter().enumerate() {
            let id_ok = (1..=32).contains(&k.id.len())
                && k.id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !id_ok {
                p.push(format!(
                    "quotes.keys[{i}].id: 1 to 32 of A-Za-z0-9_-, got {:?}",
                    k.id
                ));
            }
            if k.secret.len() < MIN_SECRET_BYTES {
                p.push(format!(
                    "quotes.keys[{i}].secret: at least {MIN_SECRET_BYTES} bytes"
                ));
            }
            if self.keys[..i].iter().any(|o| o.id == k.id) {
                p.push(format!("quotes.keys[{i}].id: {:?} repeated", k.id));
            }
        }
        p
    }

    /// The keyring: the configured keys, or one random key (logged: such
    /// quotes verify only on this process).
    pub fn keyring(&self) -> Keyring {
        let keys: Vec<Key> = self
            .keys
            .iter()
            .map(|k| Key {
                id: k.id.clone(),
                secret: k.secret.as_bytes().to_vec(),
            })
            .collect();
        if let Some(ring) = Keyring::new(keys) {
            return ring;
        }
        let secret: [u8; 32] = rand::random();
        tracing::warn!(
            "quotes: no signing key configured ([quotes] keys); using a random key made at start: \
             quotes will not survive a restart nor verify on another instance"
        );
        Keyring::new(vec![Key {
            id: "ephemeral".to_owned(),
            secret: secret.to_vec(),
        }])
        .unwrap_or_else(|| unreachable!("one key given"))
    }
}

/// Counters of issued and redeemed quotes, rendered into `/metrics`.
#[derive(Debug, Default)]
pub struct QuoteMetrics {
    pub issued: AtomicU64,
    /// By [`RedeemOutcome`], in its order.
    redeemed: [AtomicU64; RedeemOutcome::ALL.len()],
}

impl QuoteMetrics {
    pub fn redeemed(&self, outcome: RedeemOutcome) {
        self.redeemed[outcome as usize].fetch_add(1, Relaxed);
    }

    pub fn redeemed_count(&self, outcome: RedeemOutcome) -> u64 {
        self.redeemed[outcome as usize].load(Relaxed)
    }

    /// The families in OpenMetrics text (before the `# EOF`).
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        crate::metrics::family(
            out,
            "primetime_quotes_issued_total",
            "counter",
            "Quotes issued (POST /v1/quotes and fresh quotes of expired redeems).",
        );
        let _ = writeln!(
            out,
            "primetime_quotes_issued_total {}",
            self.issued.load(Relaxed)
        );
        crate::metrics::family(
            out,
            "primetime_quotes_redeemed_total",
            "counter",
            "Quote redeems by outcome.",
        );
        for o in RedeemOutcome::ALL {
            let _ = writeln!(
                out,
                "primetime_quotes_redeemed_total{{outcome=\"{}\"}} {}",
                o.as_str(),
                self.redeemed_count(o)
            );
        }
    }
}

/// What the quote routes share: keys, terms, counters, audit.
pub struct QuoteDesk {
    pub keyring: Keyring,
    pub ttl_ms: i64,
    pub confirmation_threshold: f64,
    pub metrics: QuoteMetrics,
    pub audit: Arc<dyn QuoteAudit>,
}

impl QuoteDesk {
    pub fn new(config: &QuoteConfig, audit: Arc<dyn QuoteAudit>) -> Self {
        Self {
            keyring: config.keyring(),
            ttl_ms: config.ttl_ms,
            confirmation_threshold: config.confirmation_threshold,
            metrics: QuoteMetrics::default(),
            audit,
        }
    }

    /// The quote families and the audit trail's drops, in OpenMetrics text
    /// (before the `# EOF`).
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        self.metrics.render(out);
        crate::metrics::family(
            out,
            "primetime_quote_audit_dropped_total",
            "counter",
            "Quote audit records the trail could not take (its queue was full).",
        );
        let _ = writeln!(
            out,
            "primetime_quote_audit_dropped_total {}",
            self.audit.dropped()
        );
    }

    /// Whether a multiplier (in twentieths) needs the rider's confirmation.
    pub fn confirmation_required(&self, twentieths: u32) -> bool {
        f64::from(twentieths) / 20.0 >= self.confirmation_threshold - 1e-9
    }
}

impl std::fmt::Debug for QuoteDesk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuoteDesk")
            .field("key", &self.keyring.signing_id())
            .field("ttl_ms", &self.ttl_ms)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_problems_are_listed() {
        assert!(QuoteConfig::default().problems().is_empty());
        let c = QuoteConfig {
            ttl_ms: 0,
            confirmation_threshold: 0.5,
            keys: vec![
                KeyConfig {
                    id: "a b".into(),
                    secret: "short".into(),
                },
                KeyConfig {
                    id: "a b".into(),
                    secret: "x".repeat(32),
                },
            ],
        };
        let text = c.problems().join("\n");
        for needle in [
            "ttl_ms",
            "confirmation_threshold",
            "keys[0].id",
            "keys[0].secret",
            "keys[1].id: \"a b\" repeated",
        ] {
            assert!(text.contains(needle), "{needle} in {text}");
        }
    }

    #[test]
    fn without_keys_a_random_one_signs() {
        let a = QuoteConfig::default().keyring();
        let b = QuoteConfig::default().keyring();
        let claims = Claims {
            cell: 1,
            twentieths: 20,
            since_tick: None,
            tick: None,
            model_version: String::new(),
            issued_at: 0,
            expires_at: 1,
            rider_id: None,
            session_id: None,
            nonce: 0,
        };
        let token = a.sign(&claims);
        assert!(a.verify(&token).is_ok());
        assert_eq!(b.verify(&token), Err(TokenError::Invalid));
    }
}
