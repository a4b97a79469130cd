//! Producer plumbing shared by every Kafka writer: construction
//! ([`producer`]: idempotent, acks=all, murmur2 partitioner), delivery
//! counting ([`DeliveryCounter`]), enqueueing with back-off
//! ([`send_retrying`]), and the dead-letter producer ([`DeadLetters`]).
//! The price sink is [`crate::sinks::kafka`]; the simulator publisher is
//! [`crate::cli::publish`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use primetime_core::Reason;
use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext};

use super::{InputSource, KafkaConfig, KafkaError};
use crate::metrics::Metrics;
use crate::pipeline::InputRecord;

/// Counts failed deliveries (after librdkafka's own retries).
#[derive(Clone, Default)]
pub struct DeliveryCounter(Arc<AtomicU64>);

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.0.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "kafka delivery failed");
        }
    }
}

impl DeliveryCounter {
    pub fn failures(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A producer with the service's delivery guarantees.
pub fn producer(
    config: &KafkaConfig,
    counter: DeliveryCounter,
) -> Result<ThreadedProducer<DeliveryCounter>, KafkaError> {
    let mut cc: ClientConfig = config.client_config();
    cc.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .set("partitioner", "murmur2_random");
    Ok(cc.create_with_context(counter)?)
}

/// Enqueues, waiting (on the calling thread, never the reactor) while
/// librdkafka's queue is full.
pub fn send_retrying<K, P>(
    p: &ThreadedProducer<DeliveryCounter>,
    record: BaseRecord<'_, K, P>,
) -> Result<(), KafkaError>
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    send_retrying_until(p, record, None)
}

/// [`send_retrying`], but a queue still full at `deadline` fails the send
/// (a stopping service does not wait on a broker that is gone).
pub fn send_retrying_until<K, P>(
    p: &ThreadedProducer<DeliveryCounter>,
    mut record: BaseRecord<'_, K, P>,
    deadline: Option<std::time::Instant>,
) -> Result<(), KafkaError>
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    loop {
        match p.send(record) {
            Ok(()) => return Ok(()),
            Err((e @ RdError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                    return Err(e.into());
                }
                record = r;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

/// Dead letters: the original payload to the DLQ topic with headers
/// `reason`, `source-topic`, `source-partition`, `source-offset`, `detail`.
pub struct DeadLetters {
    producer: ThreadedProducer<DeliveryCounter>,
    counter: DeliveryCounter,
    topic: String,
    unflushed: bool,
    metrics: Arc<Metrics>,
}

impl DeadLetters {
    pub fn new(config: &KafkaConfig, metrics: Arc<Metrics>) -> Result<Self, KafkaError> {
        let counter = DeliveryCounter::default();
        Ok(Self {
            producer: producer(config, counter.clone())?,
            counter,
            topic: config.topics.dlq.clone(),
            unflushed: false,
            metrics,
        })
    }

    pub fn send(
        &mut self,
        source: InputSource<'_>,
        record: &InputRecord,
        reason: Reason,
        detail: &str,
    ) -> Result<(), KafkaError> {
        let (source_topic, source_partition) = (source.topic, source.partition);
        let partition = source_partition.to_string();
        let offset = record.offset.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "reason",
                value: Some(reason.as_str()),
            })
            .insert(Header {
                key: "source-topic",
                value: Some(source_topic),
            })
            .insert(Header {
                key: "source-partition",
                value: Some(&partition),
            })
            .insert(Header {
                key: "source-offset",
                value: Some(&offset),
            })
            .insert(Header {
                key: "detail",
                value: Some(detail),
            });
        let key = format!("{source_topic}/{source_partition}/{}", record.offset);
        send_retrying(
            &self.producer,
            BaseRecord::to(&self.topic)
                .key(&key)
                .payload(&record.payload)
                .timestamp(record.ingest_time_ms)
                .headers(headers),
        )?;
        self.unflushed = true;
        self.metrics.dead_letters.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Waits until every dead letter sent so far is acknowledged.
    pub fn flush(&mut self) -> Result<(), KafkaError> {
        if !self.unflushed {
            return Ok(());
        }
        let before = self.counter.failures();
        self.producer.flush(Duration::from_secs(30))?;
        if self.counter.failures() != before {
            return Err(KafkaError::Delivery(format!(
                "dead letters to {}",
                self.topic
            )));
        }
        self.unflushed = false;
        Ok(())
    }
}
