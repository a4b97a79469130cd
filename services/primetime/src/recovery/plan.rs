//! Where a pipeline epoch starts: [`EpochPlan`] and [`EpochStart`], and
//! the search for a snapshot every owned partition can restore (the
//! group's newest common one first).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use primetime_core::Tick;

use super::codec::decode_part;
use crate::kafka::consumer::{HaltInfo, StartAt};
use crate::metrics::Metrics;
use crate::pipeline::PipelineImage;
use crate::redis::{RedisStore, SnapshotsByPartition};

/// Where an epoch starts, and why.
#[derive(Debug)]
pub struct EpochPlan {
    /// Where each owned partition is read from; a partition not listed
    /// starts at its committed offset (or the log start without one).
    pub positions: BTreeMap<u32, StartAt>,
    pub start: EpochStart,
}

/// How an epoch starts (see [`super`]'s docs).
#[derive(Debug, Clone)]
pub enum EpochStart {
    /// Restored from the newest snapshot every owned partition has; each
    /// partition is read from the snapshot's offset.
    Snapshot { image: Arc<PipelineImage> },
    /// No usable snapshot: rebuilt from the log from `from_ms`
    /// (offsets-for-times); ticks before `publish_from` fire but are not
    /// published again.
    Rewind { from_ms: i64, publish_from: Tick },
    /// Offsets were committed but no durable tick: read from the committed
    /// offsets.
    Committed,
    /// Nothing committed: every owned partition is read from its log
    /// start, so the in-memory table will hold every owned cell's current
    /// decision.
    Fresh,
}

impl EpochPlan {
    /// The image to restore before the first record.
    pub fn restore(&self) -> Option<Arc<PipelineImage>> {
        match &self.start {
            EpochStart::Snapshot { image } => Some(Arc::clone(image)),
            EpochStart::Rewind { .. } | EpochStart::Committed | EpochStart::Fresh => None,
        }
    }

    /// The first tick to publish; earlier ones are rebuilt silently.
    pub fn publish_from(&self) -> Option<Tick> {
        match self.start {
            EpochStart::Rewind { publish_from, .. } => Some(publish_from),
            EpochStart::Snapshot { .. } | EpochStart::Committed | EpochStart::Fresh => None,
        }
    }

    /// Every owned partition is read from its log start: the in-memory
    /// table will hold every owned cell's current decision.
    pub fn complete(&self) -> bool {
        match self.start {
            EpochStart::Fresh => true,
            EpochStart::Snapshot { .. } | EpochStart::Rewind { .. } | EpochStart::Committed => {
                false
            }
        }
    }
}

impl EpochStart {
    /// The name in logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Snapshot { .. } => "snapshot",
            Self::Rewind { .. } => "rewind",
            Self::Committed => "committed",
            Self::Fresh => "fresh",
        }
    }

    /// The `primetime_pipeline_starts_total` counter this start counts in
    /// (`from="snapshot"`, `"rewind"` or `"fresh"`: a start from committed
    /// offsets counts as fresh, as it always has).
    pub fn starts_counter<'m>(&self, metrics: &'m Metrics) -> &'m AtomicU64 {
        match self {
            Self::Snapshot { .. } => &metrics.starts_from_snapshot,
            Self::Rewind { .. } => &metrics.starts_rewound,
            Self::Committed | Self::Fresh => &metrics.starts_fresh,
        }
    }
}

impl fmt::Display for EpochStart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The restore plan from the newest snapshot every owned partition can
/// use; `None` when there is none (or Redis cannot be read).
pub(super) fn plan_restore(
    info: &HaltInfo,
    per_topic: u32,
    store: &RedisStore,
    group: &str,
    fingerprint: u64,
) -> Option<EpochPlan> {
    if info.assigned.is_empty() {
        return None;
    }
    let mut wanted: Vec<u32> = info.assigned.iter().map(|i| i % per_topic).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let group_parts: Vec<u32> = (0..per_topic).collect();
    let stored = match store.get_snapshots(group, &group_parts) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read snapshots; rebuilding from the log");
            return None;
        }
    };
    for tick in restore_ticks(&stored, &wanted, &group_parts) {
        if let Some(plan) = restore_at(info, &stored, &wanted, tick, fingerprint) {
            return Some(plan);
        }
    }
    tracing::info!(partitions = ?wanted, "no usable snapshot common to every owned partition");
    None
}

/// The ticks to try restoring, best first: those every partition of the
/// group has a snapshot of, newest first, then those only every owned
/// partition has. After a rebalance every instance then restores the same
/// tick (as long as they read the same snapshots): an instance restored at
/// an older tick than a neighbour's would need boundary stats of ticks
/// the neighbour's new epoch never fires, and its old epoch published
/// relative to the old ownership (see [`crate::kafka::exchange`]).
fn restore_ticks(stored: &SnapshotsByPartition, wanted: &[u32], group: &[u32]) -> Vec<Tick> {
    let mut ticks = common_ticks(stored, group);
    let owned: Vec<Tick> = common_ticks(stored, wanted)
        .into_iter()
        .filter(|t| !ticks.contains(t))
        .collect();
    ticks.extend(owned);
    ticks
}

/// Ticks every wanted partition has a snapshot of, newest first.
fn common_ticks(stored: &SnapshotsByPartition, wanted: &[u32]) -> Vec<Tick> {
    let mut common: Option<Vec<Tick>> = None;
    for p in wanted {
        let ticks: Vec<Tick> = stored
            .get(p)
            .map(|v| v.iter().map(|s| s.tick).collect())
            .unwrap_or_default();
        common = Some(match common {
            None => ticks,
            Some(c) => c.into_iter().filter(|t| ticks.contains(t)).collect(),
        });
    }
    let mut common = common.unwrap_or_default();
    common.sort_unstable_by(|a, b| b.cmp(a));
    common
}

/// The plan restoring the snapshot at `tick`, if every wanted part
/// decodes and the merged image covers every assigned partition.
fn restore_at(
    info: &HaltInfo,
    stored: &SnapshotsByPartition,
    wanted: &[u32],
    tick: Tick,
    fingerprint: u64,
) -> Option<EpochPlan> {
    let mut parts = Vec::with_capacity(wanted.len());
    for p in wanted {
        let blob = stored
            .get(p)
            .and_then(|v| v.iter().find(|s| s.tick == tick))
            .map(|s| s.blob.as_slice())?;
        parts.push(decode_part(blob, fingerprint, *p, tick)?);
    }
    let mut image = PipelineImage::merge(parts)?;
    let offsets: HashMap<u32, i64> = image
        .partitions
        .iter()
        .map(|p| (p.partition, p.next_offset))
        .collect();
    if !info.assigned.iter().all(|i| offsets.contains_key(i)) {
        return None;
    }
    // Only owned partitions' state (a part lists both topics' p).
    image
        .partitions
        .retain(|p| info.assigned.contains(&p.partition));
    Some(EpochPlan {
        positions: image
            .partitions
            .iter()
            .map(|p| (p.partition, StartAt::Offset(p.next_offset)))
            .collect(),
        start: EpochStart::Snapshot {
            image: Arc::new(image),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::StoredSnapshot;

    fn stored(parts: &[(u32, &[i64])]) -> SnapshotsByPartition {
        parts
            .iter()
            .map(|&(p, ticks)| {
                let snaps = ticks
                    .iter()
                    .map(|&t| StoredSnapshot {
                        tick: Tick(t),
                        blob: Vec::new(),
                    })
                    .collect();
                (p, snaps)
            })
            .collect()
    }

    #[test]
    fn the_groups_newest_common_tick_comes_before_newer_ticks_of_the_owned_partitions() {
        // a (partitions 0, 1) reached the snapshot at 24, b (2, 3) only 21.
        let s = stored(&[
            (0, &[24, 21, 18]),
            (1, &[24, 21, 18]),
            (2, &[21, 18, 15]),
            (3, &[21, 18, 15]),
        ]);
        let ticks = |wanted: &[u32]| restore_ticks(&s, wanted, &[0, 1, 2, 3]);
        assert_eq!(ticks(&[0]), vec![Tick(21), Tick(18), Tick(24)]);
        assert_eq!(ticks(&[1, 2]), vec![Tick(21), Tick(18)]);
        // A partition without any snapshot: the owned ones' ticks alone.
        let s = stored(&[(0, &[24, 21]), (1, &[24])]);
        assert_eq!(
            restore_ticks(&s, &[0], &[0, 1, 2]),
            vec![Tick(24), Tick(21)]
        );
    }
}
