//! Plain images of the pipeline's state, for snapshots (DESIGN §1.3: state
//! is a cache of the event log; a snapshot only makes recovery fast).
//!
//! An image holds exactly what later results depend on and nothing that is
//! derived: a cell's buckets and its summary as of the last fired tick
//! (neighbour links and slots are rebuilt on import), a partition's
//! maximum event time, last offset and remembered event keys. Importing an
//! image and feeding the records that follow gives the same decisions as
//! never stopping (tested in `tests/properties.rs`).

use serde::{Deserialize, Serialize};

/// One bucket of a cell's window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketImage {
    pub index: i64,
    pub requests: u32,
    pub checks: u32,
    /// Available drivers (sorted and unique once `closed`).
    pub drivers: Vec<u64>,
    pub closed: bool,
}

/// One active cell: its window and its summary as of the last fired tick.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellImage {
    /// The H3 index.
    pub cell: u64,
    pub buckets: Vec<BucketImage>,
    pub supply: u32,
    pub requests_5m: u32,
    /// The multiplier in twentieths (20 = 1.0).
    pub multiplier: u32,
}

/// One input partition's event-time state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionImage {
    pub max_event: Option<i64>,
    pub last_offset: Option<i64>,
    /// Remembered event keys with the partition maximum at acceptance.
    pub seen: Vec<(u64, i64)>,
    pub next_sweep: i64,
}

/// Why an image cannot be imported. Nothing is applied when this is
/// returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("cell {0:#x} is not an H3 cell of the price resolution")]
    BadCell(u64),
    #[error("cell {0:#x} appears twice")]
    DuplicateCell(u64),
    #[error("cell {0:#x}: buckets not in ascending order")]
    BucketOrder(u64),
}

/// The whole state of an [`crate::Engine`] between two records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineImage {
    pub partitions: Vec<PartitionImage>,
    pub cells: Vec<CellImage>,
    pub next_tick: Option<i64>,
    pub first_bucket: Option<i64>,
}
