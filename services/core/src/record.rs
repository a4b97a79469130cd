//! Decoded input records and their validation.
//!
//! A [`RawRecord`] is what a decoder (protobuf, JSON, the simulator) hands to
//! the core: every field as it arrived, untrusted. [`Validator::validate`]
//! turns it into a [`ValidEvent`] or names the [`Reason`] it was rejected.
//! Time checks against the trusted ingest time (`future`, `too_old`) live here
//! too; the order-dependent ones (`late`, `duplicate`) belong to the
//! partition, see [`crate::partition`].

use serde::{Deserialize, Serialize};

use crate::geo::{CellId, Geo};
use crate::time::{EventTime, IngestTime};
use crate::{DriverId, EventKey};

/// Driver status as carried on the wire (`primetime.v1.DriverStatus`).
/// Only `Available` drivers count as supply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriverStatus {
    Available,
    OnTrip,
    Offline,
}

impl DriverStatus {
    /// Maps the protobuf enum number; `0` (unspecified) and unknown numbers
    /// are `None`.
    pub fn from_wire(value: i32) -> Option<Self> {
        match value {
            1 => Some(Self::Available),
            2 => Some(Self::OnTrip),
            3 => Some(Self::Offline),
            _ => None,
        }
    }

    /// The protobuf enum number.
    pub fn to_wire(self) -> i32 {
        match self {
            Self::Available => 1,
            Self::OnTrip => 2,
            Self::Offline => 3,
        }
    }
}

/// Demand event kind as carried on the wire (`primetime.v1.DemandKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DemandKind {
    RideRequest,
    /// A price check / app open: weaker demand signal than a request.
    PriceCheck,
}

impl DemandKind {
    /// Maps the protobuf enum number; `0` (unspecified) and unknown numbers
    /// are `None`.
    pub fn from_wire(value: i32) -> Option<Self> {
        match value {
            1 => Some(Self::RideRequest),
            2 => Some(Self::PriceCheck),
            _ => None,
        }
    }

    /// The protobuf enum number.
    pub fn to_wire(self) -> i32 {
        match self {
            Self::RideRequest => 1,
            Self::PriceCheck => 2,
        }
    }
}

/// A driver location ping, fields as received.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawDriverLocation {
    pub event_id: String,
    pub driver_id: String,
    pub event_time_ms: i64,
    pub lat: f64,
    pub lng: f64,
    /// Wire enum number, see [`DriverStatus::from_wire`].
    pub status: i32,
}

/// A rider demand signal, fields as received.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawDemandEvent {
    pub event_id: String,
    pub rider_id: String,
    pub event_time_ms: i64,
    pub lat: f64,
    pub lng: f64,
    /// Wire enum number, see [`DemandKind::from_wire`].
    pub kind: i32,
}

/// One decoded, not yet validated input record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RawRecord {
    Driver(RawDriverLocation),
    Demand(RawDemandEvent),
}

impl RawRecord {
    /// The record's event id as received.
    pub fn event_id(&self) -> &str {
        match self {
            Self::Driver(r) => &r.event_id,
            Self::Demand(r) => &r.event_id,
        }
    }

    /// The record's device timestamp as received.
    pub fn event_time_ms(&self) -> i64 {
        match self {
            Self::Driver(r) => r.event_time_ms,
            Self::Demand(r) => r.event_time_ms,
        }
    }

    /// The record's coordinates as received (`lat`, `lng`).
    pub fn lat_lng(&self) -> (f64, f64) {
        match self {
            Self::Driver(r) => (r.lat, r.lng),
            Self::Demand(r) => (r.lat, r.lng),
        }
    }
}

/// Why a record was not counted. Every rejection has exactly one reason, a
/// counter and (in the Kafka service) a dead-letter record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The payload could not be decoded at all (set by the decoder).
    Malformed,
    /// Latitude or longitude not finite or outside [-90, 90] / [-180, 180].
    InvalidCoordinates,
    /// An enum field (driver status, demand kind) is unspecified or unknown.
    UnknownEnum,
    /// `event_id`, `driver_id` or `rider_id` is empty.
    EmptyId,
    /// Event time more than `max_future_skew` after the ingest time.
    Future,
    /// Event time more than `max_event_delay` before the ingest time.
    TooOld,
    /// Event time more than `max_lateness` behind its partition's watermark.
    Late,
    /// Same `event_id` already accepted on this partition within the
    /// dedup horizon.
    Duplicate,
}

impl Reason {
    /// Every reason, in counter order.
    pub const ALL: [Reason; 8] = [
        Reason::Malformed,
        Reason::InvalidCoordinates,
        Reason::UnknownEnum,
        Reason::EmptyId,
        Reason::Future,
        Reason::TooOld,
        Reason::Late,
        Reason::Duplicate,
    ];

    /// Stable label used in metrics, dead-letter headers and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::InvalidCoordinates => "invalid_coordinates",
            Reason::UnknownEnum => "unknown_enum",
            Reason::EmptyId => "empty_id",
            Reason::Future => "future",
            Reason::TooOld => "too_old",
            Reason::Late => "late",
            Reason::Duplicate => "duplicate",
        }
    }

    /// Index into [`RejectCounts`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Rejection counters, one per [`Reason`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectCounts(pub [u64; Reason::ALL.len()]);

impl RejectCounts {
    pub fn add(&mut self, reason: Reason) {
        self.0[reason.index()] += 1;
    }

    pub fn get(&self, reason: Reason) -> u64 {
        self.0[reason.index()]
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    pub fn merge(&mut self, other: &RejectCounts) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a += b;
        }
    }

    /// `(reason, count)` pairs in [`Reason::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (Reason, u64)> + '_ {
        Reason::ALL.iter().map(|r| (*r, self.get(*r)))
    }
}

/// What a valid event contributes to the windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// A driver ping; only `Available` pings count as supply.
    Driver {
        driver: DriverId,
        status: DriverStatus,
    },
    Demand(DemandKind),
}

/// A record that passed field and clock validation. Its time is still the
/// device's; the partition may re-time it (see [`crate::partition`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidEvent {
    pub key: EventKey,
    pub time: EventTime,
    pub cell: CellId,
    pub signal: Signal,
}

/// Field and clock validation of [`RawRecord`]s. Stateless apart from the
/// H3 indexer cache, so one per source thread.
#[derive(Debug, Clone)]
pub struct Validator {
    geo: Geo,
    max_future_skew_ms: i64,
    max_event_delay_ms: i64,
}

impl Validator {
    pub fn new(geo: Geo, max_future_skew_ms: i64, max_event_delay_ms: i64) -> Self {
        Self {
            geo,
            max_future_skew_ms,
            max_event_delay_ms,
        }
    }

    pub fn geo(&self) -> &Geo {
        &self.geo
    }

    /// Checks, in this order: empty ids, enum values, coordinates, then the
    /// event time against the trusted ingest time (`future`, `too_old`).
    pub fn validate(&self, ingest: IngestTime, record: &RawRecord) -> Result<ValidEvent, Reason> {
        let (event_id, time_ms, lat, lng, signal) = match record {
            RawRecord::Driver(r) => {
                if r.event_id.is_empty() || r.driver_id.is_empty() {
                    return Err(Reason::EmptyId);
                }
                let status = DriverStatus::from_wire(r.status).ok_or(Reason::UnknownEnum)?;
                let signal = Signal::Driver {
                    driver: DriverId::from_external(&r.driver_id),
                    status,
                };
                (&r.event_id, r.event_time_ms, r.lat, r.lng, signal)
            }
            RawRecord::Demand(r) => {
                if r.event_id.is_empty() || r.rider_id.is_empty() {
                    return Err(Reason::EmptyId);
                }
                let kind = DemandKind::from_wire(r.kind).ok_or(Reason::UnknownEnum)?;
                (
                    &r.event_id,
                    r.event_time_ms,
                    r.lat,
                    r.lng,
                    Signal::Demand(kind),
                )
            }
        };
        let cell = self
            .geo
            .cell_of(lat, lng)
            .ok_or(Reason::InvalidCoordinates)?;
        // Saturating: a hostile i64::MIN/MAX timestamp must not overflow.
        if time_ms > ingest.0.saturating_add(self.max_future_skew_ms) {
            return Err(Reason::Future);
        }
        if time_ms < ingest.0.saturating_sub(self.max_event_delay_ms) {
            return Err(Reason::TooOld);
        }
        Ok(ValidEvent {
            key: EventKey::of(event_id),
            time: EventTime(time_ms),
            cell,
            signal,
        })
    }
}
