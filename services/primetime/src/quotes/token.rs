//! Quote tokens: what a quote promises, signed with HMAC-SHA256 so that any
//! instance holding the key verifies it without a shared store.
//!
//! Form: `q1.<key id>.<claims>.<signature>`, where `claims` is the
//! base64url (no padding) of the claims' JSON and `signature` the base64url
//! of HMAC-SHA256(key, `q1.<key id>.<claims>`). The key id is signed too:
//! swapping it for another key's id breaks the signature.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use thiserror::Error;

/// The token format's version prefix.
const VERSION: &str = "q1";

/// Longest token accepted: bounds the work a forged one can cause (claims
/// with a 128-character rider and session id stay far below it).
pub const MAX_TOKEN_LEN: usize = 1024;

/// What a quote promises. Short field names keep tokens short; the answer
/// types spell them out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// H3 cell (u64 index).
    #[serde(rename = "c")]
    pub cell: u64,
    /// Multiplier in twentieths (the policy's exact unit).
    #[serde(rename = "m")]
    pub twentieths: u32,
    /// Tick since which the multiplier applies (`None`: unpriced).
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    pub since_tick: Option<i64>,
    /// Newest fired tick when issued.
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    pub tick: Option<i64>,
    #[serde(rename = "v")]
    pub model_version: String,
    /// Wall clock, ms since the Unix epoch.
    #[serde(rename = "i")]
    pub issued_at: i64,
    #[serde(rename = "e")]
    pub expires_at: i64,
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    pub rider_id: Option<String>,
    #[serde(rename = "x", default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Random: two quotes of the same cell at the same millisecond differ.
    #[serde(rename = "n")]
    pub nonce: u64,
}

/// One signing key.
#[derive(Clone)]
pub struct Key {
    pub id: String,
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({}, <{} bytes>)", self.id, self.secret.len())
    }
}

/// Why a token was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not a token of this form, or its signature does not match.
    #[error("not a valid quote (malformed, altered or forged)")]
    Invalid,
    /// Signed with a key this instance does not hold (retired, or another
    /// deployment's).
    #[error("quote signed with unknown key {0:?}")]
    UnknownKey(String),
}

/// Signs with the first key, verifies with any: rotation adds the new key
/// first and keeps the old one until its quotes have expired.
#[derive(Debug, Clone)]
pub struct Keyring {
    keys: Vec<Key>,
}

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
    match HmacSha256::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    }
}

impl Keyring {
    /// `keys` must not be empty (the first signs).
    pub fn new(keys: Vec<Key>) -> Option<Self> {
        (!keys.is_empty()).then_some(Self { keys })
    }

    /// The id of the signing key.
    pub fn signing_id(&self) -> &str {
        self.keys.first().map_or("", |k| k.id.as_str())
    }

    pub fn sign(&self, claims: &Claims) -> String {
        let Some(key) = self.keys.first() else {
            return String::new();
        };
        // Serialising a struct of numbers and strings cannot fail.
        let json = serde_json::to_vec(claims).unwrap_or_default();
        let signed = format!("{VERSION}.{}.{}", key.id, B64.encode(json));
        let mut m = mac(&key.secret);
        m.update(signed.as_bytes());
        let sig = B64.encode(m.finalize().into_bytes());
        format!("{signed}.{sig}")
    }

    /// The claims of a token signed by one of the keys. The signature is
    /// checked (in constant time, by `hmac`) before the claims are parsed.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Invalid);
        }
        let (signed, sig) = token.rsplit_once('.').ok_or(TokenError::Invalid)?;
        let mut parts = signed.splitn(3, '.');
        let (Some(VERSION), Some(kid), Some(claims)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Invalid);
        };
        let key = self
            .keys
            .iter()
            .find(|k| k.id == kid)
            .ok_or_else(|| TokenError::UnknownKey(kid.chars().take(64).collect()))?;
        let sig = B64.decode(sig).map_err(|_| TokenError::Invalid)?;
        let mut m = mac(&key.secret);
        m.update(signed.as_bytes());
        m.verify_slice(&sig).map_err(|_| TokenError::Invalid)?;
        let json = B64.decode(claims).map_err(|_| TokenError::Invalid)?;
        serde_json::from_slice(&json).map_err(|_| TokenError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            cell: 0x8828308281fffff,
            twentieths: 42,
            since_tick: Some(7),
            tick: Some(9),
            model_version: "v1".into(),
            issued_at: 1_000,
            expires_at: 121_000,
            rider_id: Some("r1".into()),
            session_id: None,
            nonce: 5,
        }
    }

    fn ring(ids: &[&str]) -> Keyring {
        Keyring::new(
            ids.iter()
                .map(|id| Key {
                    id: (*id).into(),
                    secret: format!("secret of {id} ..............................").into_bytes(),
                })
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn round_trip_and_rotation() {
        let old = ring(&["k1"]);
        let token = old.sign(&claims());
        assert!(token.starts_with("q1.k1."));
        assert_eq!(old.verify(&token).unwrap(), claims());
        // k2 signs now; k1's quotes still verify.
        let rotated = ring(&["k2", "k1"]);
        assert_eq!(rotated.verify(&token).unwrap(), claims());
        assert!(rotated.sign(&claims()).starts_with("q1.k2."));
        // k1 retired.
        assert_eq!(
            ring(&["k2"]).verify(&token),
            Err(TokenError::UnknownKey("k1".into()))
        );
    }

    #[test]
    fn tampering_is_refused() {
        let keys = ring(&["k1", "k2"]);
        let token = keys.sign(&claims());
        let (signed, sig) = token.rsplit_once('.').unwrap();
        let mut forged = claims();
        forged.twentieths = 20;
        let forged_claims = B64.encode(serde_json::to_vec(&forged).unwrap());
        let parts: Vec<&str> = signed.split('.').collect();
        for bad in [
            format!("{}.{}.{forged_claims}.{sig}", parts[0], parts[1]),
            format!("q1.k2.{}.{sig}", parts[2]),
            format!("{signed}.{}", B64.encode([0u8; 32])),
            format!("{signed}x.{sig}"),
            "q1.k1".to_owned(),
            String::new(),
            "x".repeat(MAX_TOKEN_LEN + 1),
        ] {
            assert_eq!(keys.verify(&bad), Err(TokenError::Invalid), "{bad}");
        }
    }
}
