//! The audit trail of quotes: [`QuoteAudit`] receives every issued and
//! redeemed quote. The embedded default records nothing ([`NoAudit`]);
//! tests keep events in memory ([`MemoryAudit`]); Kafka mode is meant to
//! write them to `primetime.quotes.v1` (implemented by the Kafka adapter).

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

use super::token::Claims;

/// How a redeem ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RedeemOutcome {
    Honoured = 0,
    Expired = 1,
    Invalid = 2,
    UnknownKey = 3,
}

impl RedeemOutcome {
    pub const ALL: [RedeemOutcome; 4] = [
        Self::Honoured,
        Self::Expired,
        Self::Invalid,
        Self::UnknownKey,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Honoured => "honoured",
            Self::Expired => "expired",
            Self::Invalid => "invalid",
            Self::UnknownKey => "unknown_key",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum AuditKind {
    Issued,
    Redeemed { outcome: RedeemOutcome },
}

/// One audit record: what happened to which quote, when (wall clock, ms).
/// `claims` is `None` for tokens that did not verify (never trusted).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEvent {
    #[serde(flatten)]
    pub kind: AuditKind,
    pub quote_id: String,
    pub at_ms: i64,
    pub claims: Option<Claims>,
}

/// Where quote events go. Called on the HTTP worker: an implementation
/// must not block (queue and return; a full queue drops and counts).
pub trait QuoteAudit: Send + Sync {
    fn record(&self, event: AuditEvent);

    /// Events this trail could not take (counted in `/metrics`).
    fn dropped(&self) -> u64 {
        0
    }
}

/// Records nothing (the embedded default: counters only).
#[derive(Debug, Default)]
pub struct NoAudit;

impl QuoteAudit for NoAudit {
    fn record(&self, _event: AuditEvent) {}
}

/// Keeps the newest `capacity` events in memory (tests, debugging).
#[derive(Debug)]
pub struct MemoryAudit {
    capacity: usize,
    /// Held only to push or copy out; never across an await.
    events: Mutex<VecDeque<AuditEvent>>,
}

impl MemoryAudit {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            events: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
        }
    }

    pub fn events(&self) -> Vec<AuditEvent> {
        self.events
            .lock()
            .map(|e| e.iter().cloned().collect())
            .unwrap_or_default()
    }
}

impl QuoteAudit for MemoryAudit {
    fn record(&self, event: AuditEvent) {
        if let Ok(mut events) = self.events.lock() {
            if events.len() >= self.capacity {
                events.pop_front();
            }
            events.push_back(event);
        }
    }
}
