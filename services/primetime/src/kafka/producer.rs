//! Producers: prices ([`KafkaSink`]), dead letters ([`DeadLetters`]) and
//! the simulator publisher ([`publish_simulation`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::time::{Duration, Instant};

use primetime_core::{PriceDecision, Reason, Tick};
use primetime_proto::v1;
use prost::Message as _;
use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext};

use super::{KafkaConfig, KafkaError};
use crate::metrics::Metrics;
use crate::pipeline::{InputRecord, Sink};

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

pub(super) fn producer(
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
pub(super) fn send_retrying<K, P>(
    p: &ThreadedProducer<DeliveryCounter>,
    mut record: BaseRecord<'_, K, P>,
) -> Result<(), KafkaError>
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    loop {
        match p.send(record) {
            Ok(()) => return Ok(()),
            Err((RdError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
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
        source_topic: &str,
        source_partition: i32,
        record: &InputRecord,
        reason: Reason,
        detail: &str,
    ) -> Result<(), KafkaError> {
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
        let (tx, rx) = mpsc::sync_channel(256);
        let durable_tick = Arc::new(AtomicI64::new(i64::MIN));
        let durable = Arc::clone(&durable_tick);
        let topic = config.topics.prices.clone();
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

/// The wire form of a decision.
pub fn price_update(d: &PriceDecision, tick_end_ms: i64) -> v1::PriceUpdate {
    v1::PriceUpdate {
        cell: d.cell.to_string(),
        tick: d.tick.0,
        tick_end_ms,
        multiplier: d.multiplier.value(),
        model_version: d.model_version.to_string(),
        explanation: serde_json::to_string(&d.explanation).unwrap_or_default(),
    }
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

/// What [`publish_simulation`] did.
#[derive(Debug, Clone, Copy)]
pub struct PublishSummary {
    pub records: u64,
    pub seconds: f64,
}

/// Publishes `minutes` of the simulator into the input topics, keyed by
/// region (its H3 index), Kafka timestamp = the simulator's ingest time.
/// `rate`: records per second (None = as fast as the broker takes them).
pub fn publish_simulation(
    config: &KafkaConfig,
    sim_config: primetime_sim::SimConfig,
    minutes: u32,
    rate: Option<f64>,
) -> anyhow::Result<PublishSummary> {
    // One sim partition per region, so each record knows its region.
    let probe = primetime_sim::Simulator::new(sim_config.clone())
        .map_err(|e| anyhow::anyhow!("simulator: {e}"))?;
    let regions: Vec<String> = probe.regions().iter().map(ToString::to_string).collect();
    let mut sim = primetime_sim::Simulator::new(primetime_sim::SimConfig {
        partitions: regions.len().max(1) as u32,
        ..sim_config
    })
    .map_err(|e| anyhow::anyhow!("simulator: {e}"))?;
    let counter = DeliveryCounter::default();
    let producer = producer(config, counter.clone())?;
    let end_ms = sim.now_ms() + i64::from(minutes) * 60_000;
    let started = Instant::now();
    let mut buf = Vec::new();
    let mut records = 0u64;
    while sim.now_ms() < end_ms {
        buf.clear();
        sim.advance_to((sim.now_ms() + 1_000).min(end_ms), &mut buf);
        for r in &buf {
            let topic = match r.topic {
                primetime_proto::Topic::DriverLocations => &config.topics.driver_locations,
                primetime_proto::Topic::Demand => &config.topics.demand,
            };
            let key = regions.get(r.partition as usize).map_or("", String::as_str);
            send_retrying(
                &producer,
                BaseRecord::to(topic)
                    .key(key)
                    .payload(&r.payload)
                    .timestamp(r.ingest_time_ms),
            )?;
            records += 1;
            if let Some(rate) = rate {
                let due = records as f64 / rate;
                let ahead = due - started.elapsed().as_secs_f64();
                if ahead > 0.001 {
                    std::thread::sleep(Duration::from_secs_f64(ahead));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120))?;
    if counter.failures() > 0 {
        anyhow::bail!("{} records could not be delivered", counter.failures());
    }
    Ok(PublishSummary {
        records,
        seconds: started.elapsed().as_secs_f64(),
    })
}
