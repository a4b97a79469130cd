//! Input payloads to and from the core's raw records.

use std::fmt;

use primetime_core::{RawDemandEvent, RawDriverLocation, RawRecord};
use prost::Message;

use crate::v1;

/// The input stream a payload belongs to; selects the message type that
/// [`decode`] expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    /// Payloads are [`v1::DriverLocation`].
    DriverLocations,
    /// Payloads are [`v1::DemandEvent`].
    Demand,
}

impl Topic {
    /// Fully qualified name of the protobuf message carried on this topic.
    pub fn message_name(self) -> &'static str {
        match self {
            Topic::DriverLocations => "primetime.v1.DriverLocation",
            Topic::Demand => "primetime.v1.DemandEvent",
        }
    }

    /// Maps the log's `primetime.v1.Topic` enum number; `0` (unspecified) and
    /// unknown numbers are `None`.
    pub fn from_wire(value: i32) -> Option<Self> {
        match v1::Topic::try_from(value) {
            Ok(v1::Topic::DriverLocations) => Some(Topic::DriverLocations),
            Ok(v1::Topic::Demand) => Some(Topic::Demand),
            Ok(v1::Topic::Unspecified) | Err(_) => None,
        }
    }

    /// The log's `primetime.v1.Topic` enum number.
    pub fn to_wire(self) -> i32 {
        match self {
            Topic::DriverLocations => v1::Topic::DriverLocations as i32,
            Topic::Demand => v1::Topic::Demand as i32,
        }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Topic::DriverLocations => "driver-locations",
            Topic::Demand => "demand",
        })
    }
}

/// A payload that is not a valid protobuf message of its topic's type. The
/// record is rejected as `Reason::Malformed`; the message is suitable for a
/// dead letter's `detail`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The protobuf decoder failed.
    #[error("cannot decode {topic} payload as {}: {error}", topic.message_name())]
    Protobuf {
        topic: Topic,
        error: prost::DecodeError,
    },
}

/// Decodes one input payload of `topic` into an unvalidated record. Only the
/// protobuf encoding is checked here; field values (ids, coordinates, enum
/// numbers, times) are left to the core's validator.
pub fn decode(topic: Topic, payload: &[u8]) -> Result<RawRecord, DecodeError> {
    let wrap = |error| DecodeError::Protobuf { topic, error };
    Ok(match topic {
        Topic::DriverLocations => v1::DriverLocation::decode(payload).map_err(wrap)?.into(),
        Topic::Demand => v1::DemandEvent::decode(payload).map_err(wrap)?.into(),
    })
}

/// Encodes a record as the payload of its input topic.
pub fn encode(record: &RawRecord) -> (Topic, Vec<u8>) {
    match record {
        RawRecord::Driver(r) => (
            Topic::DriverLocations,
            v1::DriverLocation::from(r).encode_to_vec(),
        ),
        RawRecord::Demand(r) => (Topic::Demand, v1::DemandEvent::from(r).encode_to_vec()),
    }
}

/// Keeps `status` as the raw enum number, known or not.
impl From<v1::DriverLocation> for RawDriverLocation {
    fn from(m: v1::DriverLocation) -> Self {
        RawDriverLocation {
            event_id: m.event_id,
            driver_id: m.driver_id,
            event_time_ms: m.event_time_ms,
            lat: m.lat,
            lng: m.lng,
            status: m.status,
        }
    }
}

/// Keeps `kind` as the raw enum number, known or not.
impl From<v1::DemandEvent> for RawDemandEvent {
    fn from(m: v1::DemandEvent) -> Self {
        RawDemandEvent {
            event_id: m.event_id,
            rider_id: m.rider_id,
            event_time_ms: m.event_time_ms,
            lat: m.lat,
            lng: m.lng,
            kind: m.kind,
        }
    }
}

impl From<v1::DriverLocation> for RawRecord {
    fn from(m: v1::DriverLocation) -> Self {
        RawRecord::Driver(m.into())
    }
}

impl From<v1::DemandEvent> for RawRecord {
    fn from(m: v1::DemandEvent) -> Self {
        RawRecord::Demand(m.into())
    }
}

impl From<&RawDriverLocation> for v1::DriverLocation {
    fn from(r: &RawDriverLocation) -> Self {
        v1::DriverLocation {
            event_id: r.event_id.clone(),
            driver_id: r.driver_id.clone(),
            event_time_ms: r.event_time_ms,
            lat: r.lat,
            lng: r.lng,
            status: r.status,
        }
    }
}

impl From<&RawDemandEvent> for v1::DemandEvent {
    fn from(r: &RawDemandEvent) -> Self {
        v1::DemandEvent {
            event_id: r.event_id.clone(),
            rider_id: r.rider_id.clone(),
            event_time_ms: r.event_time_ms,
            lat: r.lat,
            lng: r.lng,
            kind: r.kind,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn driver() -> RawDriverLocation {
        RawDriverLocation {
            event_id: "e-1".into(),
            driver_id: "d-42".into(),
            event_time_ms: 1_700_000_000_123,
            lat: 40.7128,
            lng: -74.006,
            status: 1,
        }
    }

    fn demand() -> RawDemandEvent {
        RawDemandEvent {
            event_id: "e-2".into(),
            rider_id: "r-7".into(),
            event_time_ms: -5,
            lat: -33.8688,
            lng: 151.2093,
            kind: 2,
        }
    }

    #[test]
    fn driver_round_trip() {
        let record = RawRecord::Driver(driver());
        let (topic, bytes) = encode(&record);
        assert_eq!(topic, Topic::DriverLocations);
        assert_eq!(decode(topic, &bytes).unwrap(), record);
    }

    #[test]
    fn demand_round_trip() {
        let record = RawRecord::Demand(demand());
        let (topic, bytes) = encode(&record);
        assert_eq!(topic, Topic::Demand);
        assert_eq!(decode(topic, &bytes).unwrap(), record);
    }

    #[test]
    fn extreme_values_round_trip() {
        let mut d = driver();
        d.event_time_ms = i64::MIN;
        d.lat = f64::INFINITY;
        d.lng = -0.0;
        d.status = 0;
        d.event_id.clear();
        let record = RawRecord::Driver(d);
        let (topic, bytes) = encode(&record);
        assert_eq!(decode(topic, &bytes).unwrap(), record);
    }

    #[test]
    fn unknown_enum_survives_as_raw_number() {
        let mut d = driver();
        d.status = 99;
        let (_, bytes) = encode(&RawRecord::Driver(d));
        match decode(Topic::DriverLocations, &bytes).unwrap() {
            RawRecord::Driver(r) => assert_eq!(r.status, 99),
            other => panic!("unexpected {other:?}"),
        }

        let mut e = demand();
        e.kind = -3;
        let (_, bytes) = encode(&RawRecord::Demand(e));
        match decode(Topic::Demand, &bytes).unwrap() {
            RawRecord::Demand(r) => assert_eq!(r.kind, -3),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn unknown_enum_is_rejected_by_core_validator() {
        use primetime_core::record::Validator;
        use primetime_core::{Geo, IngestTime, Reason};
        let mut d = driver();
        d.status = 7;
        let (topic, bytes) = encode(&RawRecord::Driver(d));
        let record = decode(topic, &bytes).unwrap();
        let validator = Validator::new(Geo::new(8, 3).unwrap(), 60_000, 3_600_000);
        assert_eq!(
            validator.validate(IngestTime(1_700_000_000_123), &record),
            Err(Reason::UnknownEnum)
        );
    }

    #[test]
    fn garbage_is_decode_error() {
        for garbage in [&b"not a protobuf"[..], &[0xff; 12], &[0x0a, 0x10, b'x']] {
            for topic in [Topic::DriverLocations, Topic::Demand] {
                let err = decode(topic, garbage).unwrap_err();
                let msg = err.to_string();
                assert!(msg.contains(topic.message_name()), "{msg}");
                assert!(matches!(err, DecodeError::Protobuf { topic: t, .. } if t == topic));
            }
        }
    }

    #[test]
    fn topic_wire_numbers() {
        for t in [Topic::DriverLocations, Topic::Demand] {
            assert_eq!(Topic::from_wire(t.to_wire()), Some(t));
        }
        assert_eq!(Topic::from_wire(0), None);
        assert_eq!(Topic::from_wire(3), None);
    }
}
