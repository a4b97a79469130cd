//! The feature contract between the core and the model (DESIGN §4).
//!
//! The column order is part of the model contract: it is written in the
//! model card and checked when a model is loaded.

use serde::{Deserialize, Serialize};

/// Number of feature columns.
pub const FEATURE_COUNT: usize = 7;

/// Column names, in model input order.
pub const FEATURE_NAMES: [&str; FEATURE_COUNT] = [
    "supply",
    "requests_1m",
    "requests_5m",
    "checks_1m",
    "supply_ring",
    "requests_5m_ring",
    "prev_multiplier",
];

/// One model input row, `float32[7]` in [`FEATURE_NAMES`] order.
pub type FeatureRow = [f32; FEATURE_COUNT];

/// The features of one cell at one tick, by name.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Features {
    /// Distinct available drivers seen in the cell in the supply horizon.
    pub supply: u32,
    /// Ride requests in the short window (60 s).
    pub requests_1m: u32,
    /// Ride requests in the long window (300 s).
    pub requests_5m: u32,
    /// Price checks / app opens in the short window.
    pub checks_1m: u32,
    /// `supply` summed over the k-ring-1 neighbours at the previous tick.
    pub supply_ring: u32,
    /// `requests_5m` summed over the neighbours at the previous tick.
    pub requests_5m_ring: u32,
    /// The cell's multiplier before this tick.
    pub prev_multiplier: f64,
}

impl Features {
    /// The model input row. Counts above 2^24 lose precision in `f32`; that
    /// is far above any per-cell count.
    pub fn to_row(&self) -> FeatureRow {
        [
            self.supply as f32,
            self.requests_1m as f32,
            self.requests_5m as f32,
            self.checks_1m as f32,
            self.supply_ring as f32,
            self.requests_5m_ring as f32,
            self.prev_multiplier as f32,
        ]
    }
}
