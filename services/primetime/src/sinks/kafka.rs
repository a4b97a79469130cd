//! The Kafka price sink: each fired tick's decisions go to the prices
//! topic (keyed by cell, `model-version` header) from a publisher thread
//! of their own ([`PricePublisher`]); a tick whose records are all
//! acknowledged becomes the durable tick, what the consumer may commit up
//! to (DESIGN §7).
//!
//! Back-pressure: [`KafkaSink::publish`] hands the tick over a bounded
//! channel (256 ticks); a full channel (the broker not keeping up for
//! minutes) blocks the clock there. The publisher thread waits on a full
//! librdkafka queue, never the reactor.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::time::Duration;

use primetime_core::{PriceDecision, Tick};
use prost::Message as _;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};

use super::Sink;
use crate::kafka::producer::{DeliveryCounter, producer, send_retrying};
use crate::kafka::{KafkaConfig, KafkaError};
use crate::metrics::Metrics;
use primetime_proto::price_update;

/// Ticks queued between the clock and the publisher thread: minutes of
/// ticks, so only a broker outage makes the clock wait.
const QUEUED_TICKS: usize = 256;

/// A fired tick on its way to the publisher thread.
struct TickBatch {
    tick: Tick,
    tick_end_ms: i64,
    decisions: Vec<PriceDecision>,
}

/// Publishes each tick's decisions to the prices topic (keyed by cell,
/// `model-version` header) from its own thread; after a tick's records are
/// acknowledged, it becomes the durable tick (what the consumer may commit
/// up to). Re-publishing a (cell, tick) after a restart writes the same
/// key and version: consumers keep the newest tick per cell.
#[derive(Clone)]
pub struct KafkaSink {
    tx: SyncSender<TickBatch>,
}

/// The publisher thread behind [`KafkaSink`]s.
pub struct PricePublisher {
    thread: Option<std::thread::JoinHandle<()>>,
    durable_tick: Arc<AtomicI64>,
    sink: Option<KafkaSink>,
}

impl PricePublisher {
    pub fn start(config: &KafkaConfig, metrics: Arc<Metrics>) -> Result<Self, KafkaError> {
        let counter = DeliveryCounter::default();
        let producer = producer(config, counter.clone())?;
        let (tx, rx) = mpsc::sync_channel(QUEUED_TICKS);
        let durable_tick = Arc::new(AtomicI64::new(i64::MIN));
        let durable = Arc::clone(&durable_tick);
        let topic = config.topics.prices.clone();
        // Its own thread: flushes wait for the broker, never the reactor.
        let thread = std::thread::Builder::new()
            .name("primetime-kafka-publish".into())
            .spawn(move || publish_loop(&producer, &counter, &topic, &rx, &durable, &metrics))
            .map_err(|error| KafkaError::Io {
                what: "starting the publisher thread",
                error,
            })?;
        Ok(Self {
            thread: Some(thread),
            durable_tick,
            sink: Some(KafkaSink { tx }),
        })
    }

    pub fn sink(&self) -> Option<KafkaSink> {
        self.sink.clone()
    }

    /// Newest tick whose prices are acknowledged (`i64::MIN`: none).
    pub fn durable_tick(&self) -> Arc<AtomicI64> {
        Arc::clone(&self.durable_tick)
    }

    /// Publishes what is queued, then stops (sinks of running pipelines
    /// must be gone for this to return).
    pub fn shutdown(mut self) {
        self.sink = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn publish_loop(
    producer: &ThreadedProducer<DeliveryCounter>,
    counter: &DeliveryCounter,
    topic: &str,
    rx: &Receiver<TickBatch>,
    durable: &AtomicI64,
    metrics: &Metrics,
) {
    let mut failures = counter.failures();
    while let Ok(first) = rx.recv() {
        // Everything queued goes out before one flush.
        let mut last = first.tick;
        let mut n = 0u64;
        let mut next = Some(first);
        while let Some(batch) = next {
            last = batch.tick;
            for d in &batch.decisions {
                if let Err(e) = send_price(producer, topic, batch.tick_end_ms, d) {
                    tracing::error!(error = %e, tick = batch.tick.0, "cannot publish price");
                }
                n += 1;
            }
            next = rx.try_recv().ok();
        }
        if let Err(e) = producer.flush(Duration::from_secs(60)) {
            tracing::error!(error = %e, "prices not acknowledged");
            continue;
        }
        let now = counter.failures();
        if now != failures {
            // Not durable: the consumer must not commit past these ticks.
            failures = now;
            tracing::error!(tick = last.0, "prices of a tick failed to deliver");
            continue;
        }
        metrics.prices_published.fetch_add(n, Ordering::Relaxed);
        durable.fetch_max(last.0, Ordering::AcqRel);
    }
    let _ = producer.flush(Duration::from_secs(30));
}

fn send_price(
    producer: &ThreadedProducer<DeliveryCounter>,
    topic: &str,
    tick_end_ms: i64,
    d: &PriceDecision,
) -> Result<(), KafkaError> {
    let update = price_update(d, tick_end_ms);
    let payload = update.encode_to_vec();
    let headers = OwnedHeaders::new().insert(Header {
        key: "model-version",
        value: Some(&*d.model_version),
    });
    send_retrying(
        producer,
        BaseRecord::to(topic)
            .key(&update.cell)
            .payload(&payload)
            .timestamp(tick_end_ms)
            .headers(headers),
    )
}

impl Sink for KafkaSink {
    fn publish(
        &mut self,
        tick: Tick,
        tick_end_ms: i64,
        decisions: &[PriceDecision],
    ) -> anyhow::Result<()> {
        // Empty ticks are sent too: they advance the durable tick.
        self.tx
            .send(TickBatch {
                tick,
                tick_end_ms,
                decisions: decisions.to_vec(),
            })
            .map_err(|_| anyhow::anyhow!("kafka publisher stopped"))
    }
}
