//! Engine configuration with documented defaults.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::geo::Geo;
use crate::partition::PartitionParams;
use crate::policy::PolicyParams;
use crate::window::WindowParams;

/// Everything that decides results. Two runs with equal `Config`, model and
/// input per partition produce identical decisions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// H3 resolution of price cells. Default 8 (~0.74 km²).
    pub price_resolution: u8,
    /// H3 resolution of regions (Kafka key, shard ownership). Default 5.
    pub region_resolution: u8,
    /// Bucket (and tick) length. Default 10 s.
    pub bucket_ms: i64,
    /// Watermark lag behind a partition's newest event. Default 5 s.
    pub max_out_of_orderness_ms: i64,
    /// Records up to this far behind the watermark are re-timed to it;
    /// older ones are rejected `late`. Default 60 s.
    pub max_lateness_ms: i64,
    /// Event time may exceed ingest time by this much; more is `future`.
    /// Default 30 s.
    pub max_future_skew_ms: i64,
    /// Event time may trail ingest time by this much; more is `too_old`.
    /// Default 10 min.
    pub max_event_delay_ms: i64,
    /// Window for `supply` (distinct available drivers). Default 60 s.
    pub supply_horizon_ms: i64,
    /// Window for `requests_1m` and `checks_1m`. Default 60 s.
    pub short_window_ms: i64,
    /// Window for `requests_5m`. Default 300 s.
    pub long_window_ms: i64,
    /// Guardrails and the fallback formula.
    pub policy: PolicyParams,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            price_resolution: 8,
            region_resolution: 5,
            bucket_ms: 10_000,
            max_out_of_orderness_ms: 5_000,
            max_lateness_ms: 60_000,
            max_future_skew_ms: 30_000,
            max_event_delay_ms: 600_000,
            supply_horizon_ms: 60_000,
            short_window_ms: 60_000,
            long_window_ms: 300_000,
            policy: PolicyParams::default(),
        }
    }
}

/// Every problem found in a [`Config`], as `field: message` lines.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("invalid configuration:\n{}", .problems.iter().map(|(f, m)| format!("  {f}: {m}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    pub problems: Vec<(String, String)>,
}

impl Config {
    /// Checks every field and reports all problems at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems: Vec<(String, String)> = Vec::new();
        let mut bad = |f: &str, m: String| problems.push((f.to_owned(), m));
        if let Err(e) = Geo::new(self.price_resolution, self.region_resolution) {
            bad("price_resolution/region_resolution", e.to_string());
        }
        if self.bucket_ms <= 0 {
            bad("bucket_ms", format!("must be > 0, got {}", self.bucket_ms));
        }
        for (name, v) in [
            ("max_out_of_orderness_ms", self.max_out_of_orderness_ms),
            ("max_lateness_ms", self.max_lateness_ms),
            ("max_future_skew_ms", self.max_future_skew_ms),
            ("max_event_delay_ms", self.max_event_delay_ms),
        ] {
            if !(0..=86_400_000).contains(&v) {
                bad(name, format!("must be in [0, 1 day], got {v}"));
            }
        }
        for (name, v) in [
            ("supply_horizon_ms", self.supply_horizon_ms),
            ("short_window_ms", self.short_window_ms),
            ("long_window_ms", self.long_window_ms),
        ] {
            if self.bucket_ms > 0 && (v <= 0 || v % self.bucket_ms != 0) {
                bad(
                    name,
                    format!(
                        "must be a positive multiple of bucket_ms ({}), got {v}",
                        self.bucket_ms
                    ),
                );
            }
        }
        if self.long_window_ms < self.short_window_ms.max(self.supply_horizon_ms) {
            bad(
                "long_window_ms",
                "must be at least short_window_ms and supply_horizon_ms".to_owned(),
            );
        }
        for (f, m) in self.policy.problems() {
            bad(f, m);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems })
        }
    }

    /// The geography of a validated config.
    pub fn geo(&self) -> Geo {
        Geo::new(self.price_resolution, self.region_resolution).expect("validated config")
    }

    pub fn partition_params(&self) -> PartitionParams {
        PartitionParams {
            max_out_of_orderness_ms: self.max_out_of_orderness_ms,
            max_lateness_ms: self.max_lateness_ms,
        }
    }

    pub fn window_params(&self) -> WindowParams {
        WindowParams {
            bucket_ms: self.bucket_ms,
            supply_buckets: self.supply_horizon_ms / self.bucket_ms,
            short_buckets: self.short_window_ms / self.bucket_ms,
            long_buckets: self.long_window_ms / self.bucket_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn every_problem_is_reported() {
        let c = Config {
            bucket_ms: 7_000,
            max_lateness_ms: -1,
            region_resolution: 9,
            ..Config::default()
        };
        let err = c.validate().unwrap_err();
        let fields: Vec<_> = err.problems.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "price_resolution/region_resolution",
                "max_lateness_ms",
                "supply_horizon_ms",
                "short_window_ms",
                "long_window_ms"
            ]
        );
        assert!(
            err.to_string()
                .contains("max_lateness_ms: must be in [0, 1 day], got -1")
        );
    }
}
