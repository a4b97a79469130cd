//! Restart without loss (Kafka mode): snapshots in Redis, the plan of
//! where each pipeline epoch starts, and the Redis price sink.
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
//! - **Price sink**: every decision goes to the Redis price table (newest
//!   tick wins, see [`crate::redis`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use primetime_core::{CellId, Config, Geo, PriceDecision, Tick};
use prost::Message as _;
use serde::{Deserialize, Serialize};

use crate::kafka::consumer::{HaltInfo, StartAt};
use crate::kafka::partition_for_key;
use crate::metrics::Metrics;
use crate::pipeline::{PipelineImage, Sink, SnapshotSink};
use crate::redis::{RedisStore, SnapshotPart, StoredPrice};

/// Version of the stored snapshot encoding.
pub const SNAPSHOT_FORMAT: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    format: u32,
    fingerprint: u64,
}

/// What a snapshot depends on: core config, model version and the input
/// partition count (FNV-1a of their description; stable across builds).
pub fn fingerprint(core: &Config, model_version: &str, per_topic: u32) -> u64 {
    let text = format!("{core:?}|{model_version}|{per_topic}");
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The Kafka partition (of each input topic) whose records carry `cell`.
fn partition_of(geo: &Geo, cell: CellId, per_topic: u32) -> u32 {
    partition_for_key(geo.region_of(cell).to_string().as_bytes(), per_topic)
}

/// Splits an image into one part per Kafka partition and encodes them.
pub fn encode_parts(
    image: &PipelineImage,
    geo: &Geo,
    per_topic: u32,
    fingerprint: u64,
) -> Result<Vec<SnapshotPart>, postcard::Error> {
    let mut parts: BTreeMap<u32, PipelineImage> = BTreeMap::new();
    let empty = |image: &PipelineImage| PipelineImage {
        tick: image.tick,
        watermark: image.watermark,
        min_bucket: image.min_bucket,
        partitions: Vec::new(),
        cells: Vec::new(),
    };
    for p in &image.partitions {
        parts
            .entry(p.partition % per_topic)
            .or_insert_with(|| empty(image))
            .partitions
            .push(p.clone());
    }
    for c in &image.cells {
        let Some(id) = CellId::from_u64(c.cell) else {
            continue;
        };
        // Cells of partitions with no input state here cannot be resumed
        // consistently; the part is incomplete and skipped below.
        if let Some(part) = parts.get_mut(&partition_of(geo, id, per_topic)) {
            part.cells.push(c.clone());
        }
    }
    let header = postcard::to_stdvec(&Header {
        format: SNAPSHOT_FORMAT,
        fingerprint,
    })?;
    let mut out = Vec::with_capacity(parts.len());
    for (partition, part) in parts {
        // A part needs both input topics' partition.
        if part.partitions.len() != 2 {
            continue;
        }
        let mut blob = header.clone();
        blob.extend(postcard::to_stdvec(&part)?);
        out.push(SnapshotPart { partition, blob });
    }
    Ok(out)
}

/// Decodes a part; `None` (with a log line) when it is of another format
/// or configuration, or damaged.
pub fn decode_part(
    bytes: &[u8],
    fingerprint: u64,
    partition: u32,
    tick: i64,
) -> Option<PipelineImage> {
    let (header, rest) = match postcard::take_from_bytes::<Header>(bytes) {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(partition, tick, error = %e, "snapshot ignored: unreadable header");
            return None;
        }
    };
    if header.format != SNAPSHOT_FORMAT {
        tracing::warn!(
            partition,
            tick,
            format = header.format,
            expected = SNAPSHOT_FORMAT,
            "snapshot ignored: another format"
        );
        return None;
    }
    if header.fingerprint != fingerprint {
        tracing::warn!(
            partition,
            tick,
            "snapshot ignored: taken with another configuration or model"
        );
        return None;
    }
    match postcard::from_bytes::<PipelineImage>(rest) {
        Ok(image) if image.tick == tick => Some(image),
        Ok(image) => {
            tracing::warn!(
                partition,
                tick,
                image_tick = image.tick,
                "snapshot ignored: tick mismatch"
            );
            None
        }
        Err(e) => {
            tracing::warn!(partition, tick, error = %e, "snapshot ignored: cannot decode");
            None
        }
    }
}

/// Hands snapshots to a thread that encodes and stores them.
pub struct SnapshotWriter {
    tx: std::sync::mpsc::SyncSender<PipelineImage>,
}

impl SnapshotWriter {
    pub fn start(
        store: RedisStore,
        group: String,
        geo: Geo,
        per_topic: u32,
        fingerprint: u64,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        // One waiting image at most: a writer that falls behind skips
        // snapshots rather than queueing memory.
        let (tx, rx) = std::sync::mpsc::sync_channel::<PipelineImage>(1);
        std::thread::Builder::new()
            .name("primetime-snapshots".into())
            .spawn(move || {
                for image in rx {
                    match encode_parts(&image, &geo, per_topic, fingerprint) {
                        Ok(parts) => {
                            let bytes: usize = parts.iter().map(|part| part.blob.len()).sum();
                            metrics.snapshots_taken.fetch_add(1, Relaxed);
                            metrics.snapshot_bytes.store(bytes as u64, Relaxed);
                            tracing::debug!(
                                tick = image.tick,
                                parts = parts.len(),
                                bytes,
                                cells = image.cells.len(),
                                "snapshot taken"
                            );
                            store.put_snapshot(&group, image.tick, parts);
                        }
                        Err(e) => {
                            tracing::error!(tick = image.tick, error = %e, "cannot encode snapshot")
                        }
                    }
                }
            })?;
        Ok(Self { tx })
    }
}

impl SnapshotSink for SnapshotWriter {
    fn write(&self, image: PipelineImage) {
        if let Err(std::sync::mpsc::TrySendError::Full(image)) = self.tx.try_send(image) {
            tracing::warn!(
                tick = image.tick,
                "snapshot skipped: the previous one is still being written"
            );
        }
    }
}

/// Where an epoch starts.
#[derive(Debug, Default)]
pub struct EpochPlan {
    pub positions: BTreeMap<u32, StartAt>,
    pub restore: Option<Arc<PipelineImage>>,
    pub publish_from: Option<Tick>,
    /// "snapshot", "rewind" or "fresh".
    pub how: &'static str,
    /// Every owned partition is read from its log start: the in-memory
    /// table will hold every owned cell's current decision.
    pub complete: bool,
}

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
    if let Some(plan) = store.and_then(|s| plan_restore(info, per_topic, s, group, fingerprint)) {
        return plan;
    }
    let durable = info.committed.iter().filter_map(|&(_, _, t)| t).max();
    let any_commit = info.committed.iter().any(|&(_, o, _)| o.is_some());
    match durable {
        Some(d) if any_commit => {
            let from = rewind_time(core, Tick(d));
            // Ticks after the durable one may be on the topic too (published,
            // not yet committed): none of them is published again.
            let through = last_published().map_or(d, |t| t.max(d));
            EpochPlan {
                positions: info
                    .assigned
                    .iter()
                    .map(|&i| (i, StartAt::Time(from)))
                    .collect(),
                restore: None,
                publish_from: Some(Tick(through + 1)),
                how: "rewind",
                complete: false,
            }
        }
        _ => EpochPlan {
            how: "fresh",
            complete: !any_commit,
            ..EpochPlan::default()
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

fn plan_restore(
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
    let stored = match store.get_snapshots(group, &wanted) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read snapshots; rebuilding from the log");
            return None;
        }
    };
    // Ticks every wanted partition has, newest first.
    let mut common: Option<Vec<i64>> = None;
    for p in &wanted {
        let ticks: Vec<i64> = stored
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
    for tick in common {
        let mut parts = Vec::with_capacity(wanted.len());
        for p in &wanted {
            let blob = stored
                .get(p)
                .and_then(|v| v.iter().find(|s| s.tick == tick))
                .map(|s| s.blob.as_slice())?;
            match decode_part(blob, fingerprint, *p, tick) {
                Some(img) => parts.push(img),
                None => break,
            }
        }
        if parts.len() != wanted.len() {
            continue;
        }
        let Some(image) = PipelineImage::merge(parts) else {
            continue;
        };
        let offsets: HashMap<u32, i64> = image
            .partitions
            .iter()
            .map(|p| (p.partition, p.next_offset))
            .collect();
        if !info.assigned.iter().all(|i| offsets.contains_key(i)) {
            continue;
        }
        // Only owned partitions' state (a part lists both topics' p).
        let mut image = image;
        image
            .partitions
            .retain(|p| info.assigned.contains(&p.partition));
        return Some(EpochPlan {
            positions: image
                .partitions
                .iter()
                .map(|p| (p.partition, StartAt::Offset(p.next_offset)))
                .collect(),
            restore: Some(Arc::new(image)),
            publish_from: None,
            how: "snapshot",
            complete: false,
        });
    }
    tracing::info!(partitions = ?wanted, "no usable snapshot common to every owned partition");
    None
}

/// Writes every decision into the Redis price table.
pub struct RedisPriceSink {
    store: RedisStore,
}

impl RedisPriceSink {
    pub fn new(store: RedisStore) -> Self {
        Self { store }
    }
}

impl Sink for RedisPriceSink {
    fn publish(
        &mut self,
        _tick: Tick,
        tick_end_ms: i64,
        decisions: &[PriceDecision],
    ) -> anyhow::Result<()> {
        if decisions.is_empty() {
            return Ok(());
        }
        let prices = decisions
            .iter()
            .map(|d| StoredPrice {
                cell: d.cell.to_string(),
                tick: d.tick.0,
                payload: crate::kafka::producer::price_update(d, tick_end_ms).encode_to_vec(),
            })
            .collect();
        // Queued, never blocking: while Redis is down the newest price per
        // cell waits and is written when it returns.
        self.store.put_prices(prices);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::snapshot::SourcePartitionImage;
    use primetime_core::snapshot::{CellImage, PartitionImage};

    fn image(per_topic: u32, geo: &Geo) -> PipelineImage {
        let cell = geo.cell_of(37.7786, -122.3893).expect("cell");
        let p = partition_of(geo, cell, per_topic);
        let part = |partition| SourcePartitionImage {
            partition,
            next_offset: 42,
            state: PartitionImage {
                max_event: Some(1_000),
                last_offset: Some(41),
                seen: vec![(7, 1_000)],
                next_sweep: 31_000,
            },
            marks: vec![(0, 40)],
            max_bucket: Some(0),
            committed: Some(10),
        };
        PipelineImage {
            tick: 99,
            watermark: 995_000,
            min_bucket: Some(90),
            partitions: vec![part(p), part(p + per_topic)],
            cells: vec![CellImage {
                cell: cell.as_u64(),
                buckets: Vec::new(),
                supply: 3,
                requests_5m: 9,
                multiplier: 30,
            }],
        }
    }

    #[test]
    fn parts_round_trip_and_other_formats_or_configs_are_ignored() {
        let geo = Config::default().geo();
        let img = image(4, &geo);
        let parts = encode_parts(&img, &geo, 4, 77).expect("encode");
        assert_eq!(parts.len(), 1, "one Kafka partition holds the cell");
        let SnapshotPart {
            partition: p,
            blob: bytes,
        } = &parts[0];
        assert_eq!(decode_part(bytes, 77, *p, 99).as_ref(), Some(&img));
        assert_eq!(decode_part(bytes, 78, *p, 99), None, "another config");
        assert_eq!(decode_part(bytes, 77, *p, 98), None, "another tick");
        assert_eq!(
            decode_part(&bytes[..bytes.len() / 2], 77, *p, 99),
            None,
            "damaged"
        );
        let mut other_format = postcard::to_stdvec(&Header {
            format: SNAPSHOT_FORMAT + 1,
            fingerprint: 77,
        })
        .expect("header");
        other_format.extend(postcard::to_stdvec(&img).expect("image"));
        assert_eq!(
            decode_part(&other_format, 77, *p, 99),
            None,
            "another format"
        );
    }

    #[test]
    fn a_part_without_both_input_topics_is_not_stored() {
        let geo = Config::default().geo();
        let mut img = image(4, &geo);
        img.partitions.pop();
        assert!(encode_parts(&img, &geo, 4, 1).expect("encode").is_empty());
    }

    #[test]
    fn the_fingerprint_follows_config_model_and_partitions() {
        let c = Config::default();
        let f = fingerprint(&c, "m1", 8);
        assert_eq!(f, fingerprint(&c, "m1", 8));
        assert_ne!(f, fingerprint(&c, "m2", 8));
        assert_ne!(f, fingerprint(&c, "m1", 4));
        let other = Config {
            max_lateness_ms: 1_000,
            ..Config::default()
        };
        assert_ne!(f, fingerprint(&other, "m1", 8));
    }

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
            committed: vec![(0, Some(10), Some(100)), (4, Some(3), Some(98))],
        };
        let plan = plan_epoch(&info, 4, None, "g", &c, 1, &|| Some(103));
        assert_eq!(plan.how, "rewind");
        assert_eq!(plan.publish_from, Some(Tick(104)));
        assert_eq!(plan.positions.len(), 2);
        assert!(!plan.complete);
        let fresh = HaltInfo {
            assigned: vec![0, 4],
            committed: vec![(0, None, None), (4, None, None)],
        };
        let plan = plan_epoch(&fresh, 4, None, "g", &c, 1, &|| None);
        assert_eq!(
            (plan.how, plan.publish_from, plan.complete),
            ("fresh", None, true)
        );
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
            committed: vec![(0, Some(10), Some(100)), (4, Some(3), Some(100))],
        };
        let c = Config::default();
        let started = std::time::Instant::now();
        let plan = plan_epoch(&info, 4, Some(&store), "g", &c, 1, &|| None);
        assert_eq!(plan.how, "rewind");
        assert_eq!(plan.publish_from, Some(Tick(101)));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        store.shutdown();
    }
}
