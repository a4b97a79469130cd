//! Fault injection: which fault a record gets and how it is applied.

use serde::{Deserialize, Serialize};

use crate::config::Noise;
use crate::rng::Rng;

/// Ground truth of a [`SimRecord`](crate::SimRecord): the fault injected
/// into it, if any. For tests and dashboards; the payload itself carries no
/// trace of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Label {
    /// As generated: event time = action time, ingest 20–400 ms later.
    Clean,
    /// A second copy of an earlier record (same payload, same event id),
    /// 0.5–20 s later in ingest order. The first copy is `Clean`.
    Duplicate,
    /// Event time moved back 0.5–4 s.
    OutOfOrder,
    /// Ingested 10–120 s after its event time.
    Late,
    /// Event time off by ± 2 hours .. 2 years.
    BadClock,
    /// Payload is not valid protobuf for its topic.
    Malformed,
}

impl Label {
    /// Every label, in declaration order.
    pub const ALL: [Label; 6] = [
        Label::Clean,
        Label::Duplicate,
        Label::OutOfOrder,
        Label::Late,
        Label::BadClock,
        Label::Malformed,
    ];

    /// Stable snake_case name, as in the config's `noise` table.
    pub fn as_str(self) -> &'static str {
        match self {
            Label::Clean => "clean",
            Label::Duplicate => "duplicate",
            Label::OutOfOrder => "out_of_order",
            Label::Late => "late",
            Label::BadClock => "bad_clock",
            Label::Malformed => "malformed",
        }
    }
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

const TWO_HOURS_MS: f64 = 2.0 * 3_600_000.0;
const TWO_YEARS_MS: f64 = 2.0 * 365.25 * 86_400_000.0;

/// The fault draw: one uniform per record against the cumulative rates, so
/// a record gets at most one fault and each label's share is its rate.
#[derive(Debug, Clone)]
pub(crate) struct Faults {
    /// Cumulative rates for Duplicate, OutOfOrder, Late, BadClock,
    /// Malformed.
    cumulative: [f64; 5],
    active: bool,
}

impl Faults {
    pub fn new(noise: &Noise) -> Self {
        let mut cumulative = [0.0; 5];
        let mut sum = 0.0;
        for (c, (_, rate)) in cumulative.iter_mut().zip(noise.rates()) {
            sum += rate;
            *c = sum;
        }
        Self {
            cumulative,
            active: noise.is_active(),
        }
    }

    /// Draws the fault of one record. Draws nothing when no rate is set,
    /// and only from the noise stream otherwise, so noise never changes the
    /// simulated world.
    #[inline]
    pub fn draw(&self, rng: &mut Rng) -> Label {
        if !self.active {
            return Label::Clean;
        }
        let u = rng.uniform();
        const FAULTS: [Label; 5] = [
            Label::Duplicate,
            Label::OutOfOrder,
            Label::Late,
            Label::BadClock,
            Label::Malformed,
        ];
        for (c, label) in self.cumulative.iter().zip(FAULTS) {
            if u < *c {
                return label;
            }
        }
        Label::Clean
    }
}

/// Event-time shift of a bad device clock: ± 2 h .. 2 years, log-uniform.
pub(crate) fn bad_clock_offset_ms(rng: &mut Rng) -> i64 {
    let magnitude = TWO_HOURS_MS * ((TWO_YEARS_MS / TWO_HOURS_MS).ln() * rng.uniform()).exp();
    let magnitude = magnitude as i64;
    if rng.chance(0.5) {
        magnitude
    } else {
        -magnitude
    }
}

/// Replaces a valid payload by bytes that no protobuf decoder accepts for
/// either input message. Field 1 of both messages is the non-empty string
/// `event_id`, which every variant breaks:
/// - truncated inside the event id (the length prefix overruns the buffer);
/// - field 1 tagged with the invalid wire type 7;
/// - field 1 sent as a varint instead of a length-delimited string.
pub(crate) fn corrupt(payload: &mut Vec<u8>, rng: &mut Rng) {
    match rng.below(3) {
        0 => {
            // [0x0a, len, id...]: keep the tag, the length and half the id.
            let id_len = payload.get(1).copied().unwrap_or(0) as usize;
            payload.truncate(2 + id_len / 2);
            if payload.len() < 2 {
                payload.clear();
                payload.extend_from_slice(&[0x0a, 0x05, b'x']);
            }
        }
        1 => {
            if let Some(first) = payload.first_mut() {
                *first = 0x0f;
            }
        }
        _ => {
            payload.clear();
            payload.extend_from_slice(&[0x08, 0x96, 0x01]);
            payload.extend_from_slice(b"not protobuf");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use primetime_proto::{Topic, decode};

    #[test]
    fn no_noise_draws_nothing() {
        let faults = Faults::new(&Noise::default());
        let mut rng = Rng::new(1, 1);
        let before = rng.clone().next_u64();
        assert_eq!(faults.draw(&mut rng), Label::Clean);
        assert_eq!(rng.next_u64(), before);
    }

    #[test]
    fn bad_clock_is_far_off() {
        let mut rng = Rng::new(3, 3);
        for _ in 0..10_000 {
            let off = bad_clock_offset_ms(&mut rng).abs() as f64;
            assert!(
                (TWO_HOURS_MS..=TWO_YEARS_MS * 1.0001).contains(&off),
                "{off}"
            );
        }
    }

    #[test]
    fn corrupted_payloads_never_decode() {
        use primetime_core::{RawDemandEvent, RawDriverLocation, RawRecord};
        let mut rng = Rng::new(5, 5);
        let records = [
            RawRecord::Driver(RawDriverLocation {
                event_id: "7-1a".into(),
                driver_id: "drv-3".into(),
                event_time_ms: 1_800_000_000_000,
                lat: 37.7,
                lng: -122.4,
                status: 1,
            }),
            RawRecord::Demand(RawDemandEvent {
                event_id: "7-1b".into(),
                rider_id: "rider-9".into(),
                event_time_ms: 1_800_000_000_000,
                lat: 37.7,
                lng: -122.4,
                kind: 2,
            }),
        ];
        for _ in 0..300 {
            for record in &records {
                let (topic, mut payload) = primetime_proto::encode(record);
                corrupt(&mut payload, &mut rng);
                for t in [topic, Topic::DriverLocations, Topic::Demand] {
                    assert!(decode(t, &payload).is_err(), "{payload:?}");
                }
            }
        }
    }
}
