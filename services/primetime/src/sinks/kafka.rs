//! The Kafka price sink: each fired tick's decisions go to the prices
//! topic (keyed by cell, `model-version` header) from a publisher thread
//! of their own ([`PricePublisher`]); a tick whose records are all
//! acknowledged becomes the durable tick, what the consumer may commit up
//! to (DESIGN §7).
//!
//! No price is lost on a failed send: a tick becomes durable only once
//! every record of it and of every earlier tick is acknowledged; one that
//! fails (refused by librdkafka or by the broker) stays pending with all
//! later ticks and is sent again after a back-off, so the consumer never
//! commits offsets past it ([`publish_loop`]).
//!
//! Back-pressure: [`KafkaSink::publish`] hands the tick over a bounded
//! channel (256 ticks); a full channel (the broker not keeping up, or
//! refusing, for minutes) blocks the clock there. The publisher thread
//! waits on a full librdkafka queue, never the reactor.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::mpsc::{self, OwnedPermit, Receiver, Sender};

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

/// How long one run of ticks may wait for its acknowledgements; then it
/// counts as failed and is sent again.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

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
///
/// Back-pressure is asynchronous: [`Sink::ready`] awaits a slot in the
/// bounded channel to the publisher thread (the clock's task waits, the
/// reactor does not), and `publish` fills it without waiting.
pub struct KafkaSink {
    tx: Sender<TickBatch>,
    /// The slot `ready` reserved for the next tick.
    permit: Option<OwnedPermit<TickBatch>>,
}

impl Clone for KafkaSink {
    /// A clone shares the channel but not a reserved slot.
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            permit: None,
        }
    }
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
        let (tx, mut rx) = mpsc::channel(QUEUED_TICKS);
        let durable_tick = Arc::new(AtomicI64::new(i64::MIN));
        let durable = Arc::clone(&durable_tick);
        let topic = config.topics.prices.clone();
        // Its own thread: flushes wait for the broker, never the reactor.
        let thread = std::thread::Builder::new()
            .name("primetime-kafka-publish".into())
            .spawn(move || publish_loop(&producer, &counter, &topic, &mut rx, &durable, &metrics))
            .map_err(|error| KafkaError::Io {
                what: "starting the publisher thread",
                error,
            })?;
        Ok(Self {
            thread: Some(thread),
            durable_tick,
            sink: Some(KafkaSink { tx, permit: None }),
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

/// Ticks held by the publisher thread until acknowledged: with the channel,
/// at most twice [`QUEUED_TICKS`] ticks in memory while the broker refuses
/// them; then the channel fills and the clock waits.
const PENDING_TICKS: usize = QUEUED_TICKS;

/// Waits between attempts at ticks the broker did not take: from the first
/// to the last, doubling.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Attempts at what is still unacknowledged once the sinks are gone
/// (shutdown); after them the ticks stay non-durable, so no offset covering
/// them was committed and the next start publishes them again.
const ATTEMPTS_AT_SHUTDOWN: u32 = 3;

/// Publishes ticks in order. Every tick stays pending until all its records
/// are acknowledged; a failed send or delivery keeps it (and every later
/// tick) pending and non-durable, and the whole pending run is sent again
/// after a back-off (a re-sent (cell, tick) is the same key and version).
/// The durable tick only ever moves to the end of a run acknowledged whole,
/// so the consumer never commits past a price that is not on the topic.
fn publish_loop(
    producer: &ThreadedProducer<DeliveryCounter>,
    counter: &DeliveryCounter,
    topic: &str,
    rx: &mut Receiver<TickBatch>,
    durable: &AtomicI64,
    metrics: &Metrics,
) {
    let mut pending: VecDeque<TickBatch> = VecDeque::new();
    let mut closed = false;
    let mut retry = RETRY_FIRST;
    let mut attempts_after_close = 0;
    loop {
        if pending.is_empty() {
            // The publisher's own thread: waiting here blocks no reactor.
            match rx.blocking_recv() {
                Some(batch) => pending.push_back(batch),
                None => break,
            }
        }
        // Everything queued goes out before one flush.
        while !closed && pending.len() < PENDING_TICKS {
            match rx.try_recv() {
                Ok(batch) => pending.push_back(batch),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => closed = true,
            }
        }
        let last = pending.back().map_or(i64::MIN, |b| b.tick.0);
        match publish_run(producer, counter, topic, &pending) {
            Ok(records) => {
                metrics
                    .prices_published
                    .fetch_add(records, Ordering::Relaxed);
                durable.fetch_max(last, Ordering::AcqRel);
                pending.clear();
                retry = RETRY_FIRST;
            }
            Err(e) => {
                let first = pending.front().map_or(i64::MIN, |b| b.tick.0);
                tracing::error!(
                    error = %e, first_tick = first, last_tick = last, retry_in_ms = retry.as_millis() as u64,
                    "prices not published: the ticks stay non-durable and are sent again"
                );
                if closed {
                    attempts_after_close += 1;
                    if attempts_after_close >= ATTEMPTS_AT_SHUTDOWN {
                        tracing::error!(
                            first_tick = first,
                            last_tick = last,
                            "giving up at shutdown: these ticks were never durable"
                        );
                        break;
                    }
                }
                std::thread::sleep(retry);
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
        if closed && pending.is_empty() {
            break;
        }
    }
    let _ = producer.flush(Duration::from_secs(30));
}

/// Sends every record of `pending` and waits for their acknowledgements;
/// the number of records, or why some were not taken. A send that fails
/// stops the run, but what was already enqueued is flushed first, so its
/// late delivery reports cannot count against the next run.
fn publish_run(
    producer: &ThreadedProducer<DeliveryCounter>,
    counter: &DeliveryCounter,
    topic: &str,
    pending: &VecDeque<TickBatch>,
) -> Result<u64, KafkaError> {
    let before = counter.failures();
    let mut records = 0u64;
    let mut sent = Ok(());
    'run: for batch in pending {
        for d in &batch.decisions {
            sent = send_price(producer, topic, batch.tick_end_ms, d);
            if sent.is_err() {
                break 'run;
            }
            records += 1;
        }
    }
    let flushed = producer.flush(FLUSH_TIMEOUT);
    sent?;
    flushed?;
    let failed = counter.failures() - before;
    if failed > 0 {
        return Err(KafkaError::Delivery(format!(
            "{failed} of {records} prices to {topic}"
        )));
    }
    Ok(records)
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
    async fn ready(&mut self) -> anyhow::Result<()> {
        if self.permit.is_none() {
            let permit = self
                .tx
                .clone()
                .reserve_owned()
                .await
                .map_err(|_| anyhow::anyhow!("kafka publisher stopped"))?;
            self.permit = Some(permit);
        }
        Ok(())
    }

    fn publish(
        &mut self,
        tick: Tick,
        tick_end_ms: i64,
        decisions: &[PriceDecision],
    ) -> anyhow::Result<()> {
        let permit = self
            .permit
            .take()
            .ok_or_else(|| anyhow::anyhow!("kafka sink: publish without ready"))?;
        // Empty ticks are sent too: they advance the durable tick.
        permit.send(TickBatch {
            tick,
            tick_end_ms,
            decisions: decisions.to_vec(),
        });
        Ok(())
    }
}
