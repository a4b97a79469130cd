//! Consistent snapshots of a running pipeline, and restoring one.
//!
//! A snapshot is a cut through the pipeline after tick `k`: every shard's
//! cells with exactly the records before the source's per-partition
//! offsets applied, and every tick up to `k` fired. How the cut is made
//! (a barrier, as in Chandy–Lamport / Flink):
//! 1. after firing tick `k` (`k` a multiple of the snapshot interval) the
//!    clock asks the source for a cut and waits for its answer;
//! 2. the source, between two polls, enqueues a [`shard::Barrier`] in every
//!    shard mailbox behind the batches it already sent, and answers with
//!    its partitions' state and next offsets;
//! 3. only then does the clock go on to tick `k+1`, so each mailbox holds
//!    the barrier before `FireTick(k+1)`; each shard cuts its cells when it
//!    reaches the barrier and exports them in slices of 20 k cells between
//!    its later messages (`Shard::begin_export`: a cell is copied before
//!    any change to it, and a tick or a region move finishes the export
//!    first), so a cut of millions of cells never holds a shard up for
//!    more than one slice; a task hands the whole image to the
//!    [`SnapshotSink`].
//!
//! Restoring an image and reading every partition from its offset gives
//! the decisions of a pipeline that never stopped (the core property test
//! `restoring_an_exported_image_anywhere_changes_no_decision`, and the
//! crash tests in `tests/`).
//!
//! [`shard::Barrier`]: super::shard::Barrier

use primetime_core::Tick;
use primetime_core::snapshot::{CellImage, PartitionImage};
use serde::{Deserialize, Serialize};

/// One input partition at the cut.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePartitionImage {
    /// Pipeline partition number.
    pub partition: u32,
    /// The first offset *not* reflected in the image: where to resume.
    pub next_offset: i64,
    pub state: PartitionImage,
    /// The commit tracker's marks: `(bucket, offset)`.
    pub marks: Vec<(i64, i64)>,
    pub max_bucket: Option<i64>,
    pub committed: Option<i64>,
    /// The newest ingest time of the records before `next_offset` (ms):
    /// where a restored epoch's ingest clock starts (Kafka idleness).
    pub max_ingest_ms: Option<i64>,
}

/// A pipeline after tick `tick`, cut at the partitions' offsets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineImage {
    /// The last tick fired; the restored pipeline fires `tick + 1` next.
    pub tick: Tick,
    /// The service watermark at the cut (ms).
    pub watermark: i64,
    /// The oldest bucket of any accepted event before the cut.
    pub min_bucket: Option<i64>,
    /// Partitions whose position was known at the cut (the assigned ones).
    pub partitions: Vec<SourcePartitionImage>,
    pub cells: Vec<CellImage>,
}

impl PipelineImage {
    /// Several images of the same tick (e.g. one per Kafka partition, from
    /// different instances) as one. `None` when they are of different
    /// ticks or list a partition twice.
    pub fn merge(parts: Vec<PipelineImage>) -> Option<PipelineImage> {
        let mut it = parts.into_iter();
        let mut out = it.next()?;
        for p in it {
            if p.tick != out.tick {
                return None;
            }
            out.watermark = out.watermark.min(p.watermark);
            out.min_bucket = match (out.min_bucket, p.min_bucket) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            out.partitions.extend(p.partitions);
            out.cells.extend(p.cells);
        }
        let mut seen = std::collections::HashSet::new();
        if !out.partitions.iter().all(|p| seen.insert(p.partition)) {
            return None;
        }
        Some(out)
    }
}

/// Where snapshots go. Called on the clock's reactor: must not block
/// (hand the image to a thread).
pub trait SnapshotSink: Send + Sync {
    fn write(&self, image: PipelineImage);
}

/// When to snapshot and where to.
#[derive(Clone)]
pub struct SnapshotOptions {
    /// After every tick that is a multiple of this (> 0). Instances of one
    /// group use the same interval, so their snapshots share ticks.
    pub every_ticks: i64,
    pub sink: std::sync::Arc<dyn SnapshotSink>,
}

impl std::fmt::Debug for SnapshotOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotOptions")
            .field("every_ticks", &self.every_ticks)
            .finish_non_exhaustive()
    }
}

/// The clock's request for a cut after `tick`.
pub(super) struct CutRequest {
    pub tick: Tick,
    pub reply: tokio::sync::oneshot::Sender<SourceCut>,
}

/// The source's half of a snapshot; the shards' halves arrive on
/// `cells`.
pub(super) struct SourceCut {
    pub watermark: i64,
    pub min_bucket: Option<i64>,
    pub partitions: Vec<SourcePartitionImage>,
    pub cells: Vec<tokio::sync::oneshot::Receiver<Vec<CellImage>>>,
}
