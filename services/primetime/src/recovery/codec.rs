//! The stored snapshot encoding: an image split into one part per input
//! partition, each `postcard(Header) ++ postcard(PipelineImage)`, and the
//! configuration fingerprint in the header that decides whether a stored
//! part may be used.

use std::collections::BTreeMap;

use primetime_core::policy::FallbackParams;
use primetime_core::{CellId, Config, Geo, PolicyParams, Tick};
use serde::{Deserialize, Serialize};

use crate::kafka::partition_for_key;
use crate::pipeline::PipelineImage;
use crate::redis::SnapshotPart;

/// Version of the stored snapshot encoding.
/// 2: a source partition's image carries its newest ingest time.
pub const SNAPSHOT_FORMAT: u32 = 2;

/// Version of the fingerprint's encoding (the fields of [`fingerprint`]
/// and their order). Bump it when they change: old snapshots then stop
/// matching, as they must.
pub const FINGERPRINT_VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Header {
    pub(super) format: u32,
    pub(super) fingerprint: u64,
}

/// What a snapshot depends on: every field of the core config (each one
/// can change a decision), the model version and the input partition
/// count. An explicit encoding (fixed order, little-endian, prefixed by
/// [`FINGERPRINT_VERSION`]) hashed with 64-bit FNV-1a, so it is stable
/// across builds, platforms and `Debug` formats.
pub fn fingerprint(core: &Config, model_version: &str, per_topic: u32) -> u64 {
    // Destructured without `..`: a new config field does not compile here
    // until it is placed in the encoding (and the version bumped).
    let Config {
        price_resolution,
        region_resolution,
        bucket_ms,
        max_out_of_orderness_ms,
        max_lateness_ms,
        max_future_skew_ms,
        max_event_delay_ms,
        supply_horizon_ms,
        short_window_ms,
        long_window_ms,
        policy,
    } = core;
    let mut hash = Fnv1a::default();
    hash.u32(FINGERPRINT_VERSION);
    hash.bytes(&[*price_resolution, *region_resolution]);
    for ms in [
        bucket_ms,
        max_out_of_orderness_ms,
        max_lateness_ms,
        max_future_skew_ms,
        max_event_delay_ms,
        supply_horizon_ms,
        short_window_ms,
        long_window_ms,
    ] {
        hash.i64(*ms);
    }
    hash_policy(&mut hash, policy);
    hash.str(model_version);
    hash.u32(per_topic);
    hash.finish()
}

fn hash_policy(hash: &mut Fnv1a, policy: &PolicyParams) {
    let PolicyParams {
        cap,
        emergency_cap,
        min_requests_5m,
        smoothing_weight,
        max_step_up,
        max_step_down,
        fallback,
    } = policy;
    let FallbackParams {
        check_weight,
        ring_weight,
        sensitivity,
    } = fallback;
    hash.f64(*cap);
    match emergency_cap {
        None => hash.bytes(&[0]),
        Some(e) => {
            hash.bytes(&[1]);
            hash.f64(*e);
        }
    }
    hash.u32(*min_requests_5m);
    for v in [
        smoothing_weight,
        max_step_up,
        max_step_down,
        check_weight,
        ring_weight,
        sensitivity,
    ] {
        hash.f64(*v);
    }
}

/// 64-bit FNV-1a over the bytes written.
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }

    fn i64(&mut self, v: i64) {
        self.bytes(&v.to_le_bytes());
    }

    fn f64(&mut self, v: f64) {
        self.bytes(&v.to_bits().to_le_bytes());
    }

    /// Length-prefixed, so adjacent strings cannot run into each other.
    fn str(&mut self, s: &str) {
        self.bytes(&(s.len() as u64).to_le_bytes());
        self.bytes(s.as_bytes());
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The Kafka partition (of each input topic) whose records carry `cell`.
pub(super) fn partition_of(geo: &Geo, cell: CellId, per_topic: u32) -> u32 {
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
    tick: Tick,
) -> Option<PipelineImage> {
    // Logged as a plain number below.
    let wanted = tick;
    let tick = wanted.0;
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
        Ok(image) if image.tick == wanted => Some(image),
        Ok(image) => {
            tracing::warn!(
                partition,
                tick,
                image_tick = image.tick.0,
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
            max_ingest_ms: Some(1_700_000_000_000),
        };
        PipelineImage {
            tick: Tick(99),
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
        assert_eq!(decode_part(bytes, 77, *p, Tick(99)).as_ref(), Some(&img));
        assert_eq!(decode_part(bytes, 78, *p, Tick(99)), None, "another config");
        assert_eq!(decode_part(bytes, 77, *p, Tick(98)), None, "another tick");
        assert_eq!(
            decode_part(&bytes[..bytes.len() / 2], 77, *p, Tick(99)),
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
            decode_part(&other_format, 77, *p, Tick(99)),
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
        let mut policy = Config::default();
        policy.policy.emergency_cap = Some(3.0);
        assert_ne!(f, fingerprint(&policy, "m1", 8));
        policy.policy.emergency_cap = None;
        policy.policy.fallback.sensitivity = 0.75;
        assert_ne!(f, fingerprint(&policy, "m1", 8));
    }

    /// Pins the encoding: a change of this value makes every stored
    /// snapshot unusable, so it must come with a [`FINGERPRINT_VERSION`]
    /// bump (and a new pinned value), never by accident. The value was
    /// checked against an independent re-implementation of the encoding.
    #[test]
    fn the_fingerprint_of_the_default_config_is_pinned() {
        assert_eq!(FINGERPRINT_VERSION, 1);
        assert_eq!(
            fingerprint(&Config::default(), "primetime-v1", 8),
            0xff97_477b_8979_0f11
        );
    }
}
