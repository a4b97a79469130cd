//! API keys and rate limits (OWASP API Top 10 2023: API4, unrestricted
//! resource consumption; API6, unrestricted access to sensitive flows).
//!
//! Optional: with no key configured (the embedded default) every route is
//! open, as before. With keys, every `/v1/*` route needs one
//! (`Authorization: Bearer <key>` or `x-api-key: <key>`) with the route's
//! scope (`read`: prices, cells, history; `quote`: quotes and redeem;
//! `admin`: `/v1/status`, and every other scope); each key has its own
//! token bucket. Health, readiness, metrics, the OpenAPI document and the
//! map page stay open.
//!
//! Keys are configured as the hex SHA-256 of the key (`printf %s "$KEY" |
//! sha256sum`), never in clear; a presented key is hashed and compared
//! with every configured hash in constant time, without stopping at a
//! match, so timing tells nothing about which hash (or how much of one)
//! matched.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

/// What a route needs of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Quote,
    /// Operators: `/v1/status`; implies every other scope.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Quote => "quote",
            Self::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// `[auth]` in the configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Empty (the default): no key needed anywhere.
    pub keys: Vec<ApiKeyConfig>,
}

/// One API key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// A name for logs and metrics (1 to 64 of `A-Za-z0-9_.-`).
    pub id: String,
    /// Hex SHA-256 of the key (64 hex digits).
    pub sha256: String,
    /// At least one of `read`, `quote`, `admin`.
    pub scopes: Vec<Scope>,
    /// Sustained requests per second. Default 100.
    #[serde(default = "default_rate")]
    pub rate_per_s: f64,
    /// Requests allowed at once above the rate (the bucket's size).
    /// Default 200.
    #[serde(default = "default_burst")]
    pub burst: u32,
}

fn default_rate() -> f64 {
    100.0
}

fn default_burst() -> u32 {
    200
}

impl AuthConfig {
    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Every problem, prefixed `auth.`.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        for (i, k) in self.keys.iter().enumerate() {
            let id_ok = (1..=64).contains(&k.id.len())
                && k.id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            if !id_ok {
                p.push(format!(
                    "auth.keys[{i}].id: 1 to 64 of A-Za-z0-9_.-, got {:?}",
                    k.id
                ));
            }
            if parse_hash(&k.sha256).is_none() {
                p.push(format!(
                    "auth.keys[{i}].sha256: must be 64 hex digits (the SHA-256 of the key)"
                ));
            }
            if k.scopes.is_empty() {
                p.push(format!(
                    "auth.keys[{i}].scopes: at least one of read, quote, admin"
                ));
            }
            if !(k.rate_per_s.is_finite() && k.rate_per_s > 0.0 && k.rate_per_s <= 1e6) {
                p.push(format!(
                    "auth.keys[{i}].rate_per_s: must be in (0, 1000000], got {}",
                    k.rate_per_s
                ));
            }
            if k.burst == 0 {
                p.push(format!("auth.keys[{i}].burst: must be at least 1"));
            }
            if self.keys[..i].iter().any(|o| o.id == k.id) {
                p.push(format!("auth.keys[{i}].id: {:?} repeated", k.id));
            }
            if self.keys[..i]
                .iter()
                .any(|o| o.sha256.eq_ignore_ascii_case(&k.sha256))
            {
                p.push(format!("auth.keys[{i}].sha256: repeated"));
            }
        }
        p
    }
}

fn parse_hash(hex_text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut out).ok()?;
    Some(out)
}

/// The hex SHA-256 of a key, as configured.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No key sent.
    Missing,
    /// A key matching no configured hash.
    Invalid,
    /// A valid key without the route's scope.
    Scope(Scope),
    /// The key's bucket is empty: retry after this many seconds.
    Limited { retry_after_s: u64 },
}

impl Denied {
    const ALL: [&'static str; 4] = ["missing", "invalid", "scope", "rate_limited"];

    fn index(self) -> usize {
        match self {
            Self::Missing => 0,
            Self::Invalid => 1,
            Self::Scope(_) => 2,
            Self::Limited { .. } => 3,
        }
    }
}

struct Bucket {
    tokens: f64,
    last_ms: i64,
}

struct KeyState {
    hash: [u8; 32],
    scopes: u8,
    rate_per_ms: f64,
    burst: f64,
    /// Held for a refill-and-take (a few float operations); contended only
    /// by concurrent requests of the same key.
    bucket: Mutex<Bucket>,
}

/// The configured keys and their buckets; checks requests.
pub struct Auth {
    keys: Vec<KeyState>,
    denied: [AtomicU64; Denied::ALL.len()],
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Auth({} keys)", self.keys.len())
    }
}

/// Longest key accepted (longer ones are invalid without being hashed).
const MAX_KEY_LEN: usize = 256;

impl Auth {
    /// Keys whose hash does not parse are skipped (validation reports
    /// them before this is built).
    pub fn new(config: &AuthConfig) -> Self {
        let keys = config
            .keys
            .iter()
            .filter_map(|k| {
                Some(KeyState {
                    hash: parse_hash(&k.sha256)?,
                    scopes: k.scopes.iter().fold(0, |m, s| m | s.bit()),
                    rate_per_ms: k.rate_per_s / 1000.0,
                    burst: f64::from(k.burst.max(1)),
                    bucket: Mutex::new(Bucket {
                        tokens: f64::from(k.burst.max(1)),
                        last_ms: i64::MIN,
                    }),
                })
            })
            .collect();
        Self {
            keys,
            denied: Default::default(),
        }
    }

    /// No keys: every route open.
    pub fn open() -> Self {
        Self::new(&AuthConfig::default())
    }

    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Whether `presented` may use a route needing `scope` now (wall clock
    /// `now_ms`); takes a token from the key's bucket when it may.
    pub fn check(&self, presented: Option<&str>, scope: Scope, now_ms: i64) -> Result<(), Denied> {
        if self.keys.is_empty() {
            return Ok(());
        }
        let result = self.check_keyed(presented, scope, now_ms);
        if let Err(d) = result {
            self.denied[d.index()].fetch_add(1, Relaxed);
        }
        result
    }

    fn check_keyed(
        &self,
        presented: Option<&str>,
        scope: Scope,
        now_ms: i64,
    ) -> Result<(), Denied> {
        let key = presented.ok_or(Denied::Missing)?;
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(Denied::Invalid);
        }
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        // Every hash compared, the match selected without branching.
        let mut found = 0u32.ct_eq(&1);
        let mut index = 0u32;
        for (i, k) in self.keys.iter().enumerate() {
            let hit = k.hash.ct_eq(&digest);
            index.conditional_assign(&(i as u32), hit);
            found |= hit;
        }
        if !bool::from(found) {
            return Err(Denied::Invalid);
        }
        let k = &self.keys[index as usize];
        if k.scopes & (scope.bit() | Scope::Admin.bit()) == 0 {
            return Err(Denied::Scope(scope));
        }
        take_token(k, now_ms)
    }

    /// Refusals by reason, in OpenMetrics text (before the `# EOF`).
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        crate::metrics::family(
            out,
            "primetime_api_denied_total",
            "counter",
            "Requests refused by API key checks, by reason (none while no key is configured).",
        );
        for (reason, n) in Denied::ALL.iter().zip(&self.denied) {
            let _ = writeln!(
                out,
                "primetime_api_denied_total{{reason=\"{reason}\"}} {}",
                n.load(Relaxed)
            );
        }
    }
}

/// Refills the bucket for the time since its last use and takes a token.
fn take_token(k: &KeyState, now_ms: i64) -> Result<(), Denied> {
    let Ok(mut b) = k.bucket.lock() else {
        return Ok(());
    };
    if b.last_ms != i64::MIN {
        let elapsed = now_ms.saturating_sub(b.last_ms).max(0) as f64;
        b.tokens = (b.tokens + elapsed * k.rate_per_ms).min(k.burst);
    }
    b.last_ms = now_ms;
    if b.tokens >= 1.0 {
        b.tokens -= 1.0;
        return Ok(());
    }
    let wait_ms = (1.0 - b.tokens) / k.rate_per_ms;
    Err(Denied::Limited {
        retry_after_s: (wait_ms / 1000.0).ceil().max(1.0) as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AuthConfig {
        AuthConfig {
            keys: vec![
                ApiKeyConfig {
                    id: "backend".into(),
                    sha256: hash_key("secret-b"),
                    scopes: vec![Scope::Read, Scope::Quote],
                    rate_per_s: 2.0,
                    burst: 3,
                },
                ApiKeyConfig {
                    id: "ops".into(),
                    sha256: hash_key("secret-o").to_uppercase(),
                    scopes: vec![Scope::Admin],
                    rate_per_s: 100.0,
                    burst: 100,
                },
            ],
        }
    }

    #[test]
    fn keys_scopes_and_buckets() {
        assert!(config().problems().is_empty(), "{:?}", config().problems());
        let auth = Auth::new(&config());
        assert!(Auth::open().check(None, Scope::Admin, 0).is_ok());
        assert_eq!(auth.check(None, Scope::Read, 0), Err(Denied::Missing));
        assert_eq!(
            auth.check(Some("nope"), Scope::Read, 0),
            Err(Denied::Invalid)
        );
        assert_eq!(
            auth.check(Some("secret-b"), Scope::Admin, 0),
            Err(Denied::Scope(Scope::Admin))
        );
        assert!(
            auth.check(Some("secret-o"), Scope::Quote, 0).is_ok(),
            "admin implies quote"
        );
        // Burst 3 (the scope refusal took no token), then 2/s.
        for _ in 0..3 {
            assert!(auth.check(Some("secret-b"), Scope::Read, 1_000).is_ok());
        }
        assert_eq!(
            auth.check(Some("secret-b"), Scope::Read, 1_000),
            Err(Denied::Limited { retry_after_s: 1 })
        );
        assert!(auth.check(Some("secret-b"), Scope::Quote, 1_500).is_ok());
        let mut text = String::new();
        auth.render(&mut text);
        assert!(text.contains("primetime_api_denied_total{reason=\"rate_limited\"} 1"));
    }

    #[test]
    fn config_problems_are_listed() {
        let mut c = config();
        c.keys[1].id = "backend".into();
        c.keys[1].sha256 = "xyz".into();
        c.keys[1].scopes.clear();
        c.keys[1].rate_per_s = 0.0;
        c.keys[1].burst = 0;
        let text = c.problems().join("\n");
        for needle in ["repeated", "sha256", "scopes", "rate_per_s", "burst"] {
            assert!(text.contains(needle), "{needle}: {text}");
        }
    }
}
