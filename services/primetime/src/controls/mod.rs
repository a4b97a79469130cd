//! Operator controls as the service sees them (DESIGN §6a, issue 18): the
//! [`Controls`] seam through which HTTP appends to and reads the control
//! log and the tick clock takes the [`ControlSet`] of each tick it fires.
//! The rules themselves (types, validation, overlaps, stamps) are in
//! [`primetime_core::controls`].
//!
//! - [`memory`]: the embedded default's in-memory log ([`ControlLog`]);
//! - the Kafka mode's log is an adapter, `crate::kafka::controls`, behind
//!   the same trait: the pipeline imports neither.
//!
//! The seam's contract, whatever the log: `for_tick(k)` answers only once
//! every record that can apply at tick `k` is in the set it returns, and a
//! record appended after it answered for `k` is stamped after `k`. So every
//! instance that fires `k` prices it under the same controls, and replaying
//! the stamped records reproduces it.

mod memory;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use primetime_core::{Control, ControlId, ControlRecord, ControlSet, LogError, Tick};
use thiserror::Error;
use tokio::sync::watch;

pub use memory::ControlLog;

/// What an append became.
#[derive(Debug, Clone, PartialEq)]
pub enum Appended {
    /// In the log, applied to this instance's set.
    Applied(ControlRecord),
    /// Acknowledged by the log but not yet read back here (Kafka mode,
    /// a slow reader): `offset` in the controls topic, and the tick it is
    /// stamped with when the broker's append time is known.
    Pending { offset: i64, tick: Option<Tick> },
}

/// Why an append failed.
#[derive(Debug, Clone, Error)]
pub enum AppendError {
    /// The log refused the record; nothing changed.
    #[error(transparent)]
    Refused(#[from] LogError),
    /// The log could not be written (the broker is unreachable); nothing
    /// was recorded, the same request may succeed later.
    #[error("the control log is unavailable: {0}")]
    Unavailable(String),
}

/// The control log behind HTTP and the tick clock (see the module doc).
pub trait Controls: Send + Sync + std::fmt::Debug {
    /// Appends `control`; `recorded_at` is the wall time of the request
    /// (a log with its own trusted time, Kafka's, records that instead).
    fn issue(
        &self,
        control: Control,
        recorded_at: i64,
    ) -> BoxFuture<'_, Result<Appended, AppendError>>;

    /// Appends the revocation of `id`.
    fn revoke(
        &self,
        id: ControlId,
        recorded_at: i64,
        author: String,
        reason: String,
    ) -> BoxFuture<'_, Result<Appended, AppendError>>;

    /// The set as read so far (the API's listings).
    fn snapshot(&self) -> Arc<ControlSet>;

    /// For the clock, before it fires `tick`: the set to price it with, or
    /// `None` while records that may apply at `tick` can still be unread
    /// (the clock waits for [`Self::subscribe`] and asks again).
    fn for_tick(&self, tick: Tick) -> Option<Arc<ControlSet>>;

    /// Changes when [`Self::for_tick`] may have become ready; `None` when
    /// it always is.
    fn subscribe(&self) -> Option<watch::Receiver<u64>> {
        None
    }
}

impl Controls for ControlLog {
    fn issue(
        &self,
        control: Control,
        recorded_at: i64,
    ) -> BoxFuture<'_, Result<Appended, AppendError>> {
        let r = ControlLog::issue(self, control, recorded_at);
        Box::pin(std::future::ready(
            r.map(Appended::Applied).map_err(AppendError::from),
        ))
    }

    fn revoke(
        &self,
        id: ControlId,
        recorded_at: i64,
        author: String,
        reason: String,
    ) -> BoxFuture<'_, Result<Appended, AppendError>> {
        let r = ControlLog::revoke(self, id, recorded_at, author, reason);
        Box::pin(std::future::ready(
            r.map(Appended::Applied).map_err(AppendError::from),
        ))
    }

    fn snapshot(&self) -> Arc<ControlSet> {
        ControlLog::snapshot(self)
    }

    fn for_tick(&self, tick: Tick) -> Option<Arc<ControlSet>> {
        Some(ControlLog::for_tick(self, tick))
    }
}

/// Reads a control log written as JSON lines of stamped records (`GET
/// /v1/controls/log`, one [`ControlRecord`] per line), for `replay
/// --controls`. Blank lines are skipped; a bad line is an error naming it.
pub fn read_records(text: &str) -> Result<Vec<ControlRecord>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("line {}: {e}", i + 1)))
        .collect()
}
