//! Restart without loss (Kafka mode): snapshots in Redis and the plan of
//! where each pipeline epoch starts.
//!
//! - **Snapshots**: every `redis.snapshot_every_ticks` ticks the pipeline
//!   takes a consistent image (see [`crate::pipeline::snapshot`]); a thread
//!   splits it per input partition (the Kafka partition `p` of both input
//!   topics, and the cells of the regions keyed to `p`), encodes each part
//!   and stores them in one Redis transaction. A part is
//!   `postcard(Header) ++ postcard(PipelineImage)`; the header carries the
//!   format version and a fingerprint of everything the image depends on
//!   (core config, model version, partition count). A part of another
//!   format or fingerprint, or one that does not decode, is ignored with a
//!   log line; nothing is applied before every needed part decoded.
//! - **Plan**: an epoch restores the newest tick for which *every* owned
//!   partition has a usable part (instances snapshot the same ticks, so a
//!   partition taken over from a dead instance restores too) and reads
//!   each partition from the part's offset. Without one it rewinds: from
//!   the newest durable tick in the commit metadata it computes the oldest
//!   event time that can still count at the next tick (longest window +
//!   lateness + out-of-orderness + future skew), reads from the first
//!   record with that timestamp (offsets-for-times) and fires, but does not
//!   publish, the ticks already published (through the newest tick on the
//!   prices topic), so no (cell, tick) gets a second, different version.
//!   The rebuilt windows are exact from the first published tick on; the
//!   multipliers restart from 1.0, so prices may differ from an
//!   uninterrupted run's until the step limits catch up. Without commits it
//!   reads the whole log (exact).
//!
//! Modules: `plan` ([`EpochPlan`], [`EpochStart`], the snapshot search),
//! `codec` (the part encoding and the versioned config [`fingerprint`]),
//! `writer` (the [`SnapshotWriter`] thread). The Redis price sink is
//! [`crate::sinks::redis`]; the store is [`crate::redis`].
//!
//! From the Kafka adapter this module uses `kafka::consumer::{HaltInfo,
//! Committed, StartAt}` (what an epoch owns and has committed, and where
//! it reads from) and
//! `kafka::partition_for_key` (which partition holds a cell's region).

use primetime_core::{Config, Tick};

use crate::kafka::consumer::{HaltInfo, StartAt};
use crate::redis::RedisStore;

mod codec;
mod plan;
mod writer;

pub use codec::{FINGERPRINT_VERSION, SNAPSHOT_FORMAT, decode_part, encode_parts, fingerprint};
pub use plan::{EpochPlan, EpochStart};
pub use writer::{SnapshotWriter, WriterOptions};

/// Plans an epoch for what `info` says is owned (see the module docs).
/// `last_published` reads the newest tick on the prices topic (asked only
/// for a rewind). Blocking (Redis, Kafka).
pub fn plan_epoch(
    info: &HaltInfo,
    per_topic: u32,
    store: Option<&RedisStore>,
    group: &str,
    core: &Config,
    fingerprint: u64,
    last_published: &dyn Fn() -> Option<i64>,
) -> EpochPlan {
    if let Some(plan) =
        store.and_then(|s| plan::plan_restore(info, per_topic, s, group, fingerprint))
    {
        return plan;
    }
    let durable = info.committed.iter().filter_map(|c| c.durable_tick).max();
    let any_commit = info.committed.iter().any(|c| c.offset.is_some());
    match durable {
        Some(d) if any_commit => {
            let from_ms = rewind_time(core, Tick(d));
            // Ticks after the durable one may be on the topic too (published,
            // not yet committed): none of them is published again.
            let through = last_published().map_or(d, |t| t.max(d));
            EpochPlan {
                positions: info
                    .assigned
                    .iter()
                    .map(|&i| (i, StartAt::Time(from_ms)))
                    .collect(),
                start: EpochStart::Rewind {
                    from_ms,
                    publish_from: Tick(through + 1),
                },
            }
        }
        _ => EpochPlan {
            positions: Default::default(),
            start: if any_commit {
                EpochStart::Committed
            } else {
                EpochStart::Fresh
            },
        },
    }
}

/// The oldest record timestamp (ingest time) whose event can still count
/// in tick `durable + 1`: its longest window, plus how far records can be
/// re-timed forward (lateness, out-of-orderness) and how far ahead of its
/// ingest time an event may claim to be.
pub fn rewind_time(core: &Config, durable: Tick) -> i64 {
    let w = core.window_params();
    let window_start = (durable.0 + 1 - w.long_buckets + 1) * core.bucket_ms;
    window_start - core.max_lateness_ms - core.max_out_of_orderness_ms - core.max_future_skew_ms
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::consumer::Committed;

    #[test]
    fn rewinds_cover_the_next_ticks_windows_and_skip_published_ticks() {
        let c = Config::default();
        // Tick 100 durable: tick 101 counts buckets 72..=101 (30 buckets
        // of 10 s); an event re-timed into bucket 72 may be 60 s late,
        // 5 s out of order and claim 30 s of future skew.
        assert_eq!(
            rewind_time(&c, Tick(100)),
            720_000 - 60_000 - 5_000 - 30_000
        );
        let info = HaltInfo {
            assigned: vec![0, 4],
            committed: vec![
                Committed::new(0, Some(10), Some(100)),
                Committed::new(4, Some(3), Some(98)),
            ],
        };
        let plan = plan_epoch(&info, 4, None, "g", &c, 1, &|| Some(103));
        assert!(
            matches!(plan.start, EpochStart::Rewind { .. }),
            "{}",
            plan.start
        );
        assert_eq!(plan.start.label(), "rewind");
        assert_eq!(plan.publish_from(), Some(Tick(104)));
        assert_eq!(plan.positions.len(), 2);
        assert!(!plan.complete());
        let fresh = HaltInfo {
            assigned: vec![0, 4],
            committed: vec![Committed::new(0, None, None), Committed::new(4, None, None)],
        };
        let plan = plan_epoch(&fresh, 4, None, "g", &c, 1, &|| None);
        assert!(matches!(plan.start, EpochStart::Fresh), "{}", plan.start);
        assert_eq!(
            (plan.start.label(), plan.publish_from(), plan.complete()),
            ("fresh", None, true)
        );
    }

    #[test]
    fn commits_without_a_durable_tick_start_from_the_committed_offsets() {
        let info = HaltInfo {
            assigned: vec![0, 4],
            committed: vec![
                Committed::new(0, Some(10), None),
                Committed::new(4, None, None),
            ],
        };
        let plan = plan_epoch(&info, 4, None, "g", &Config::default(), 1, &|| Some(7));
        assert!(
            matches!(plan.start, EpochStart::Committed),
            "{}",
            plan.start
        );
        assert!(plan.positions.is_empty());
        assert_eq!((plan.publish_from(), plan.complete()), (None, false));
        assert!(plan.restore().is_none());
    }

    #[test]
    fn redis_down_at_start_plans_from_kafka_alone() {
        let store = RedisStore::start(&crate::redis::RedisConfig {
            url: "redis://127.0.0.1:1".to_owned(),
            ..Default::default()
        })
        .expect("a down Redis is not an error");
        let info = HaltInfo {
            assigned: vec![0, 4],
            committed: vec![
                Committed::new(0, Some(10), Some(100)),
                Committed::new(4, Some(3), Some(100)),
            ],
        };
        let c = Config::default();
        let started = std::time::Instant::now();
        let plan = plan_epoch(&info, 4, Some(&store), "g", &c, 1, &|| None);
        assert!(
            matches!(plan.start, EpochStart::Rewind { .. }),
            "{}",
            plan.start
        );
        assert_eq!(plan.publish_from(), Some(Tick(101)));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        store.shutdown();
    }
}
