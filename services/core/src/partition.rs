//! Per-partition event-time state: watermark, late-record re-timing and
//! duplicate detection (DESIGN §3).
//!
//! Everything here depends only on the order of records *inside* one
//! partition, which is what makes results independent of how partitions
//! interleave on arrival.

use crate::dedup::DedupSet;
use crate::record::{Reason, ValidEvent};
use crate::time::{EventTime, Watermark};

/// Time parameters a partition needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionParams {
    pub max_out_of_orderness_ms: i64,
    pub max_lateness_ms: i64,
}

impl PartitionParams {
    /// How long an accepted event id is remembered, in event time measured
    /// on the partition's maximum: `max_out_of_orderness + max_lateness`.
    /// Any copy arriving after that is rejected as `late` anyway (see
    /// [`PartitionState::admit`]), so this horizon makes dedup exact.
    pub fn dedup_horizon_ms(&self) -> i64 {
        self.max_out_of_orderness_ms + self.max_lateness_ms
    }
}

/// Watermark and dedup state of one input partition.
///
/// # Memory bound
/// The dedup set remembers one key per event accepted while the
/// partition's maximum event time advanced by at most
/// [`PartitionParams::dedup_horizon_ms`] plus one sweep interval (65 s +
/// 30 s by default), in 16-byte slots at a load factor of 1/4 to 1/2: 32–64
/// bytes per key. At 20 k events/s on a partition that is ~1.9 M keys,
/// 60–120 MB. It never grows with run length, only with event rate.
#[derive(Debug, Clone)]
pub struct PartitionState {
    params: PartitionParams,
    /// Maximum accepted event time; `None` before the first accepted event.
    max_event: Option<i64>,
    /// Offset of the last record seen (accepted or not).
    last_offset: Option<i64>,
    /// Accepted event keys → the partition maximum when they were accepted.
    /// Expired entries are ignored on lookup and swept out periodically,
    /// so the hot path costs one table probe.
    seen: DedupSet,
    /// When the partition maximum passes this, expired entries are swept.
    next_sweep: i64,
}

impl PartitionState {
    pub fn new(params: PartitionParams) -> Self {
        Self {
            params,
            max_event: None,
            last_offset: None,
            seen: DedupSet::new(),
            next_sweep: i64::MIN,
        }
    }

    /// `max accepted event time − max_out_of_orderness`; monotonic.
    pub fn watermark(&self) -> Watermark {
        match self.max_event {
            None => Watermark::MIN,
            Some(m) => Watermark(m.saturating_sub(self.params.max_out_of_orderness_ms)),
        }
    }

    /// Raises the watermark to at least `wm` (never lowers it): a partition
    /// that comes back from idle starts from `max(wm_p, service watermark)`
    /// (DESIGN §3), so none of its records can land in a fired tick. Later
    /// records behind `wm` are re-timed or rejected as `late` as usual.
    pub fn raise_watermark(&mut self, wm: Watermark) {
        if wm == Watermark::MIN || wm <= self.watermark() {
            return;
        }
        let max = wm.0.saturating_add(self.params.max_out_of_orderness_ms);
        self.max_event = Some(self.max_event.map_or(max, |m| m.max(max)));
    }

    /// The offset of the last record passed to [`Self::admit`] or
    /// [`Self::observe_offset`].
    pub fn last_offset(&self) -> Option<i64> {
        self.last_offset
    }

    /// Records that `offset` was consumed without reaching `admit` (e.g. a
    /// record rejected by the validator).
    pub fn observe_offset(&mut self, offset: i64) {
        self.last_offset = Some(offset);
    }

    /// Reads the dedup slot `key` will probe, so a later [`Self::admit`]
    /// finds it in cache. Returns what it read (to be `black_box`ed).
    pub fn touch(&self, key: crate::EventKey) -> u64 {
        self.seen.touch(key)
    }

    /// Number of remembered event ids (for metrics and tests).
    pub fn dedup_len(&self) -> usize {
        self.seen.len()
    }

    /// Applies the order-dependent checks to a validated event, in order:
    /// `duplicate` (same key already accepted within the horizon), `late`
    /// (more than `max_lateness` behind the watermark). An event behind the
    /// watermark but within `max_lateness` is re-timed to the watermark: it
    /// lands in the bucket holding the watermark, which cannot have been
    /// ticked yet. Returns the event with its effective time.
    pub fn admit(&mut self, offset: i64, mut event: ValidEvent) -> Result<ValidEvent, Reason> {
        self.last_offset = Some(offset);
        let wm = self.watermark();
        let cutoff = self.max_event.map_or(i64::MIN, |m| {
            m.saturating_sub(self.params.dedup_horizon_ms())
        });
        if event.time.0 < wm.0 {
            if event.time.0 < wm.0.saturating_sub(self.params.max_lateness_ms) {
                // A late copy of a remembered event is still a duplicate.
                return Err(match self.seen.get(event.key) {
                    Some(at) if at >= cutoff => Reason::Duplicate,
                    _ => Reason::Late,
                });
            }
            event.time = EventTime(wm.0);
        }
        let max = self.max_event.map_or(event.time.0, |m| m.max(event.time.0));
        if self.seen.check_insert(event.key, max, cutoff) {
            return Err(Reason::Duplicate);
        }
        self.max_event = Some(max);
        if max >= self.next_sweep {
            self.sweep(max);
        }
        Ok(event)
    }

    /// The state as a plain image (snapshots).
    pub fn export(&self) -> crate::snapshot::PartitionImage {
        crate::snapshot::PartitionImage {
            max_event: self.max_event,
            last_offset: self.last_offset,
            seen: self.seen.entries().collect(),
            next_sweep: self.next_sweep,
        }
    }

    /// The state an [`Self::export`] image describes.
    pub fn import(params: PartitionParams, image: &crate::snapshot::PartitionImage) -> Self {
        Self {
            params,
            max_event: image.max_event,
            last_offset: image.last_offset,
            seen: DedupSet::from_entries(&image.seen),
            next_sweep: image.next_sweep,
        }
    }

    /// Drops expired keys. Runs each time the maximum advances by
    /// [`SWEEP_INTERVAL_MS`], so its cost is spread over the events since.
    fn sweep(&mut self, max: i64) {
        let cutoff = max.saturating_sub(self.params.dedup_horizon_ms());
        self.seen.sweep(cutoff);
        self.next_sweep = max.saturating_add(SWEEP_INTERVAL_MS);
    }
}

/// How often (in partition event time) expired dedup keys are swept.
pub const SWEEP_INTERVAL_MS: i64 = 30_000;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventKey;
    use crate::geo::Geo;
    use crate::record::{DemandKind, Signal};

    fn params() -> PartitionParams {
        PartitionParams {
            max_out_of_orderness_ms: 5_000,
            max_lateness_ms: 60_000,
        }
    }

    fn ev(id: &str, t: i64) -> ValidEvent {
        let cell = Geo::new(8, 5).unwrap().cell_of(37.77, -122.42).unwrap();
        ValidEvent {
            key: EventKey::of(id),
            time: EventTime(t),
            cell,
            signal: Signal::Demand(DemandKind::RideRequest),
        }
    }

    #[test]
    fn watermark_trails_max_and_late_records_are_retimed() {
        let mut p = PartitionState::new(params());
        assert_eq!(p.watermark(), Watermark::MIN);
        p.admit(0, ev("a", 100_000)).unwrap();
        assert_eq!(p.watermark(), Watermark(95_000));
        // Out of order but ahead of the watermark: kept as is.
        assert_eq!(p.admit(1, ev("b", 96_000)).unwrap().time, EventTime(96_000));
        // Behind the watermark, within lateness: re-timed to the watermark.
        assert_eq!(p.admit(2, ev("c", 40_000)).unwrap().time, EventTime(95_000));
        // Beyond lateness: rejected, watermark unchanged.
        assert_eq!(p.admit(3, ev("d", 34_999)), Err(Reason::Late));
        assert_eq!(p.watermark(), Watermark(95_000));
        assert_eq!(p.last_offset(), Some(3));
    }

    #[test]
    fn raised_watermark_retimes_records_behind_it_and_never_lowers() {
        let mut p = PartitionState::new(params());
        p.raise_watermark(Watermark(200_000));
        assert_eq!(p.watermark(), Watermark(200_000));
        // Behind the raised watermark, within lateness: re-timed onto it.
        assert_eq!(
            p.admit(0, ev("a", 150_000)).unwrap().time,
            EventTime(200_000)
        );
        assert_eq!(p.admit(1, ev("b", 139_999)), Err(Reason::Late));
        p.raise_watermark(Watermark(100_000));
        p.raise_watermark(Watermark::MIN);
        assert_eq!(p.watermark(), Watermark(200_000));
    }

    #[test]
    fn duplicates_are_caught_until_they_would_be_late_anyway() {
        let mut p = PartitionState::new(params());
        p.admit(0, ev("a", 100_000)).unwrap();
        assert_eq!(p.admit(1, ev("a", 100_000)), Err(Reason::Duplicate));
        // Advance the maximum past the horizon and the sweep interval: the
        // key is forgotten, and a copy of it is now late.
        p.admit(2, ev("z", 100_000 + 65_001 + SWEEP_INTERVAL_MS))
            .unwrap();
        assert_eq!(p.dedup_len(), 1);
        assert_eq!(p.admit(3, ev("a", 100_000)), Err(Reason::Late));
        // A late copy of a key still remembered is a duplicate.
        p.admit(4, ev("b", 175_001)).unwrap();
        p.admit(5, ev("y", 175_001 + 65_000)).unwrap();
        assert_eq!(p.admit(6, ev("b", 175_001)), Err(Reason::Duplicate));
    }

    #[test]
    fn rejected_records_do_not_enter_the_dedup_set() {
        let mut p = PartitionState::new(params());
        p.admit(0, ev("a", 200_000)).unwrap();
        assert_eq!(p.admit(1, ev("late", 1_000)), Err(Reason::Late));
        assert_eq!(p.dedup_len(), 1);
    }
}
