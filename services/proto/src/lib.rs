//! Protobuf wire types of primetime and their bridge to `primetime-core`.
//!
//! This crate provides:
//!
//! - [`v1`]: the prost-generated messages of `proto/primetime/v1/`:
//!   [`v1::DriverLocation`], [`v1::DemandEvent`] (inputs),
//!   [`v1::PriceUpdate`], [`v1::DeadLetter`] (outputs) and
//!   [`v1::LogRecord`] (event-log framing), plus their enums. Generated at
//!   build time with protox and prost-build; no system `protoc` is needed.
//! - Conversions between the input messages and the core's untrusted
//!   [`RawRecord`](primetime_core::RawRecord) types, in both directions.
//!   Enum fields stay raw `i32`s, so unknown numbers reach the core's
//!   validator and are rejected there (`Reason::UnknownEnum`).
//! - [`Topic`], [`decode`] and [`encode`]: payload bytes of an input topic to
//!   a [`RawRecord`](primetime_core::RawRecord) and back, with
//!   [`DecodeError`] for payloads that are not valid protobuf.
//! - [`LogWriter`], [`LogReader`] and [`LogEntry`]: the length-delimited
//!   event-log file format (`primetime simulate --out`, `primetime replay`),
//!   with [`LogError`] for broken framing. Logged payloads are kept raw,
//!   malformed ones included.

mod convert;
mod decision;
mod log;

/// Generated protobuf types of package `primetime.v1`.
#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/primetime.v1.rs"));
}

pub use convert::{DecodeError, Topic, decode, encode};
pub use decision::{cell_summary, price_update, summary_of};
pub use log::{LogEntry, LogError, LogReader, LogWriter, MAX_LOG_ENTRY_LEN};
