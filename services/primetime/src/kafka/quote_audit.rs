//! The quotes' audit trail on Kafka (`primetime.quotes.v1`): every issued
//! and redeemed quote as a JSON record keyed by its quote id, with a
//! `kind` header (`issued` or `redeemed`).
//!
//! Called on HTTP workers, so it never waits: a record goes into
//! librdkafka's bounded queue and is sent by librdkafka's own thread; a
//! full queue (a broker down for long) drops the record and counts it in
//! `primetime_quote_audit_dropped_total` — an answer to a rider is never
//! held up by the audit trail.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer as _, ThreadedProducer};

use super::producer::DeliveryCounter;
use super::{KafkaConfig, KafkaError};
use crate::quotes::{AuditEvent, AuditKind, QuoteAudit};

/// Records kept in librdkafka's queue before new ones are dropped.
const QUEUED_RECORDS: &str = "100000";

/// Writes quote events to the quotes topic.
pub struct KafkaQuoteAudit {
    producer: ThreadedProducer<DeliveryCounter>,
    topic: String,
    dropped: AtomicU64,
}

impl KafkaQuoteAudit {
    pub fn start(config: &KafkaConfig) -> Result<Self, KafkaError> {
        let mut cc = config.client_config();
        cc.set("acks", "all")
            .set("linger.ms", "20")
            .set("compression.type", "lz4")
            .set("queue.buffering.max.messages", QUEUED_RECORDS);
        Ok(Self {
            producer: cc.create_with_context(DeliveryCounter::default())?,
            topic: config.topics.quotes.clone(),
            dropped: AtomicU64::new(0),
        })
    }

    /// Sends what is queued (shutdown), waiting at most `timeout`.
    pub fn flush(&self, timeout: std::time::Duration) {
        let _ = self.producer.flush(timeout);
    }
}

impl QuoteAudit for KafkaQuoteAudit {
    fn record(&self, event: AuditEvent) {
        let kind = match event.kind {
            AuditKind::Issued => "issued",
            AuditKind::Redeemed { .. } => "redeemed",
        };
        let Ok(payload) = serde_json::to_vec(&event) else {
            self.dropped.fetch_add(1, Relaxed);
            return;
        };
        let headers = OwnedHeaders::new().insert(Header {
            key: "kind",
            value: Some(kind),
        });
        let record = BaseRecord::to(&self.topic)
            .key(&event.quote_id)
            .payload(&payload)
            .timestamp(event.at_ms)
            .headers(headers);
        if let Err((e, _)) = self.producer.send(record) {
            let n = self.dropped.fetch_add(1, Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(error = %e, dropped = n, "quote audit records dropped");
            }
        }
    }

    fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }
}
