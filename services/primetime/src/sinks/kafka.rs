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
//!
//! Shutdown: once every sink is gone the publisher keeps trying for
//! [`SHUTDOWN_GRACE`], then gives up; [`PricePublisher::shutdown`] names
//! the ticks never acknowledged, and the service exits with status 1
//! saying so (they are not durable: the next start publishes them). A
//! refusing or unreachable broker therefore cannot hold a stopping service
//! longer than the grace.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::mpsc::{self, OwnedPermit, Receiver, Sender};

use primetime_core::{PriceDecision, Tick};
use prost::Message as _;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, PurgeConfig, ThreadedProducer};

use super::Sink;
use crate::kafka::producer::{DeliveryCounter, producer, send_retrying_until};
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
    /// Ends with the ticks it never got acknowledged, if any.
    thread: Option<std::thread::JoinHandle<Option<Unpublished>>>,
    durable_tick: Arc<AtomicI64>,
    sink: Option<KafkaSink>,
}

impl PricePublisher {
    pub fn start(config: &KafkaConfig, metrics: Arc<Metrics>) -> Result<Self, KafkaError> {
        let counter = DeliveryCounter::default();
        let producer = producer(config, counter.clone())?;
        let (tx, rx) = mpsc::channel(QUEUED_TICKS);
        let durable_tick = Arc::new(AtomicI64::new(i64::MIN));
        let run = PublishLoop {
            producer,
            counter,
            topic: config.topics.prices.clone(),
            rx,
            durable: Arc::clone(&durable_tick),
            metrics,
            pending: VecDeque::new(),
            closing: None,
            retry: RETRY_FIRST,
        };
        // Its own thread: flushes wait for the broker, never the reactor.
        let thread = std::thread::Builder::new()
            .name("primetime-kafka-publish".into())
            .spawn(move || publish_loop(run))
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
    /// must be gone for this to return); returns within
    /// [`SHUTDOWN_GRACE`] (plus one attempt's sends) of the last sink
    /// going. `Err`: ticks the broker never acknowledged (non-durable:
    /// nothing was committed past them, the next start publishes them).
    pub fn shutdown(mut self) -> Result<(), KafkaError> {
        self.sink = None;
        let unpublished = match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(u)) => u,
            Some(Err(_)) => {
                return Err(KafkaError::Delivery(
                    "prices (the publisher thread panicked)".into(),
                ));
            }
            None => None,
        };
        match unpublished {
            Some(Unpublished { first, last }) => Err(KafkaError::Unpublished { first, last }),
            None => Ok(()),
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

/// How long the publisher keeps trying, once the sinks are gone (the
/// service is stopping), to publish what is still unacknowledged: a
/// broker that refuses or is unreachable cannot hold the exit longer. The
/// ticks left then stay non-durable (no offset covering them was
/// committed) and the next start publishes them again.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The ticks a stopped publisher never got acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unpublished {
    pub first: i64,
    pub last: i64,
}

/// The publisher thread's state: what is pending, and when it gives up.
struct PublishLoop {
    producer: ThreadedProducer<DeliveryCounter>,
    counter: DeliveryCounter,
    topic: String,
    rx: Receiver<TickBatch>,
    durable: Arc<AtomicI64>,
    metrics: Arc<Metrics>,
    pending: VecDeque<TickBatch>,
    /// Every sink is gone: give up at this instant.
    closing: Option<Instant>,
    retry: Duration,
}

/// The slices in which the publisher waits (flushes, back-offs), so it
/// notices within one that the sinks are gone.
const WAIT_SLICE: Duration = Duration::from_millis(250);

/// Publishes ticks in order. Every tick stays pending until all its records
/// are acknowledged; a failed send or delivery keeps it (and every later
/// tick) pending and non-durable, and the whole pending run is sent again
/// after a back-off (a re-sent (cell, tick) is the same key and version).
/// The durable tick only ever moves to the end of a run acknowledged whole,
/// so the consumer never commits past a price that is not on the topic.
/// Once the sinks are gone it tries for [`SHUTDOWN_GRACE`] more, then
/// returns what was never acknowledged.
fn publish_loop(mut run: PublishLoop) -> Option<Unpublished> {
    loop {
        if run.pending.is_empty() {
            // The publisher's own thread: waiting here blocks no reactor.
            match run.rx.blocking_recv() {
                Some(batch) => run.pending.push_back(batch),
                None => break,
            }
        }
        run.take_queued();
        if run.publish_pending() {
            continue;
        }
        if run.closing.is_some_and(|d| Instant::now() >= d) {
            return run.give_up();
        }
        run.back_off();
    }
    let _ = run.flush_within(SHUTDOWN_GRACE);
    None
}

impl PublishLoop {
    /// Everything queued joins the pending run (up to [`PENDING_TICKS`]).
    fn take_queued(&mut self) {
        while self.pending.len() < PENDING_TICKS {
            match self.rx.try_recv() {
                Ok(batch) => self.pending.push_back(batch),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        self.note_closing();
    }

    /// Every sink is gone (the service is stopping): the grace starts.
    fn note_closing(&mut self) -> bool {
        if self.closing.is_none() && self.rx.is_closed() {
            self.closing = Some(Instant::now() + SHUTDOWN_GRACE);
            return true;
        }
        false
    }

    /// What is left of the grace, or `within` before the sinks are gone.
    fn left(&self, within: Duration) -> Duration {
        self.closing.map_or(within, |d| {
            d.saturating_duration_since(Instant::now()).min(within)
        })
    }

    /// One attempt at the pending run; `true` when it was acknowledged
    /// whole (and is durable now).
    fn publish_pending(&mut self) -> bool {
        let last = self.pending.back().map_or(i64::MIN, |b| b.tick.0);
        match self.publish_run() {
            Ok(records) => {
                let m = &self.metrics;
                m.prices_published.fetch_add(records, Ordering::Relaxed);
                self.durable.fetch_max(last, Ordering::AcqRel);
                self.pending.clear();
                self.retry = RETRY_FIRST;
                true
            }
            Err(e) => {
                let first = self.pending.front().map_or(i64::MIN, |b| b.tick.0);
                tracing::error!(
                    error = %e, first_tick = first, last_tick = last,
                    retry_in_ms = self.retry.as_millis() as u64,
                    "prices not published: the ticks stay non-durable and are sent again"
                );
                false
            }
        }
    }

    /// Sends every record of the pending run and waits for their
    /// acknowledgements; the number of records, or why some were not
    /// taken. A send that fails stops the run, but what was already
    /// enqueued is flushed first, so its late delivery reports cannot
    /// count against the next run.
    fn publish_run(&mut self) -> Result<u64, KafkaError> {
        let before = self.counter.failures();
        let mut records = 0u64;
        let mut sent = Ok(());
        'run: for batch in &self.pending {
            for d in &batch.decisions {
                sent = send_price(self, batch.tick_end_ms, d);
                if sent.is_err() {
                    break 'run;
                }
                records += 1;
            }
        }
        let flushed = self.flush_within(FLUSH_TIMEOUT);
        sent?;
        flushed?;
        let failed = self.counter.failures() - before;
        if failed > 0 {
            return Err(KafkaError::Delivery(format!(
                "{failed} of {records} prices to {}",
                self.topic
            )));
        }
        Ok(records)
    }

    /// Flushes in slices, for at most `within` (less what is left of the
    /// grace); a flush cut short by the sinks going returns its timeout.
    fn flush_within(&mut self, within: Duration) -> Result<(), KafkaError> {
        let started = Instant::now();
        loop {
            let left = self.left(within.saturating_sub(started.elapsed()));
            match self.producer.flush(left.min(WAIT_SLICE)) {
                Ok(()) => return Ok(()),
                Err(e) if left <= WAIT_SLICE || self.note_closing() => return Err(e.into()),
                Err(_) => {}
            }
        }
    }

    /// Waits before the next attempt (doubling), in slices, ending early
    /// when the sinks go or the grace ends.
    fn back_off(&mut self) {
        let until = Instant::now() + self.left(self.retry);
        while Instant::now() < until && !self.note_closing() {
            std::thread::sleep(WAIT_SLICE.min(until.saturating_duration_since(Instant::now())));
        }
        self.retry = (self.retry * 2).min(RETRY_MAX);
    }

    /// Stops trying: what is pending or still queued was never
    /// acknowledged; librdkafka's copies are dropped, so the final flush
    /// cannot wait on them.
    fn give_up(mut self) -> Option<Unpublished> {
        let first = self.pending.front().map(|b| b.tick.0);
        let mut last = self.pending.back().map(|b| b.tick.0);
        while let Ok(batch) = self.rx.try_recv() {
            last = Some(batch.tick.0);
        }
        self.pending.clear();
        self.producer
            .purge(PurgeConfig::default().queue().inflight());
        let _ = self.producer.flush(WAIT_SLICE);
        let unpublished = Unpublished {
            first: first?,
            last: last?,
        };
        tracing::error!(
            first_tick = unpublished.first,
            last_tick = unpublished.last,
            "giving up at shutdown: these ticks were never durable (nothing committed past them)"
        );
        Some(unpublished)
    }
}

fn send_price(run: &PublishLoop, tick_end_ms: i64, d: &PriceDecision) -> Result<(), KafkaError> {
    let update = price_update(d, tick_end_ms);
    let payload = update.encode_to_vec();
    let headers = OwnedHeaders::new().insert(Header {
        key: "model-version",
        value: Some(&*d.model_version),
    });
    send_retrying_until(
        &run.producer,
        BaseRecord::to(&run.topic)
            .key(&update.cell)
            .payload(&payload)
            .timestamp(tick_end_ms)
            .headers(headers),
        run.closing,
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
