//! `primetime-core`: the pure pricing core of primetime — time model,
//! windows, features and guardrails (DESIGN §1–§5). No I/O, no async
//! runtime, no clock reads: time only arrives inside records.
//!
//! Modules, in data-flow order:
//! - [`record`]: decoded input records, validation, rejection reasons;
//! - [`geo`]: H3 price cells, regions, neighbours;
//! - [`time`]: event/ingest time, watermarks, buckets and ticks;
//! - [`partition`]: per-partition watermark, late-record re-timing, dedup;
//! - [`dedup`]: the partition's expiring set of event keys;
//! - [`window`]: per-cell bucketed windows of one shard, tick steps;
//! - [`features`]: the 7-column feature contract with the model;
//! - [`model`]: the [`PriceModel`] seam and the formula model;
//! - [`controls`]: operator controls as log records, overlap rules;
//! - [`policy`]: guardrails, quantisation, the fallback formula;
//! - [`engine`]: the single-threaded reference [`Engine`];
//! - [`placement`]: region → shard, and load-aware rebalancing of it;
//! - [`snapshot`]: plain images of cell and partition state (snapshots);
//! - [`config`]: [`Config`] with documented defaults.

#![forbid(unsafe_code)]

pub mod config;
pub mod controls;
pub mod dedup;
pub mod engine;
pub mod features;
pub mod geo;
pub mod model;
pub mod partition;
pub mod placement;
pub mod policy;
pub mod record;
pub mod snapshot;
pub mod time;
pub mod window;

use serde::{Deserialize, Serialize};

pub use config::{Config, ConfigError};
pub use controls::{
    Control, ControlId, ControlKind, ControlLimits, ControlRecord, ControlSet, ControlSpec,
    InvalidControl, LogError,
};
pub use engine::{Engine, EngineStats, Explanation, PriceDecision, Priced, TickPricer, shard_of};
pub use features::{FEATURE_COUNT, FEATURE_NAMES, FeatureRow, Features};
pub use geo::{CellId, Geo, RegionId};
pub use model::{FormulaModel, ModelError, PriceModel};
pub use partition::PartitionState;
pub use placement::{Move, Placement};
pub use policy::{Guardrail, Multiplier, Policy, PolicyParams};
pub use record::{
    DemandKind, DriverStatus, RawDemandEvent, RawDriverLocation, RawRecord, Reason, RejectCounts,
    Validator,
};
pub use time::{EventTime, IngestTime, Tick, Watermark};
pub use window::{Shard, Summary, TickRow};

/// A driver, as the 64-bit XXH3 hash of the external driver id. Distinct
/// supply counts compare these; two drivers colliding in one cell within a
/// minute is ~n²/2⁶⁵ — negligible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DriverId(pub u64);

impl DriverId {
    pub fn from_external(id: &str) -> Self {
        Self(xxhash_rust::xxh3::xxh3_64(id.as_bytes()))
    }
}

/// An event id, as the 64-bit XXH3 hash of the external id: what dedup
/// remembers. A false duplicate needs a collision with one of the ids
/// remembered on the same partition: with 500 k remembered ids that is
/// 500 k / 2⁶⁴ ≈ 3·10⁻¹⁴ per event — one lost event in ~10 years at
/// 100 k events/s. 64 rather than 128 bits halves the dedup table, the
/// largest per-event memory access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventKey(pub u64);

impl EventKey {
    pub fn of(event_id: &str) -> Self {
        Self(xxhash_rust::xxh3::xxh3_64(event_id.as_bytes()))
    }
}
