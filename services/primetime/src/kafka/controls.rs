//! The operator-control log of Kafka mode (DESIGN §6a, issue 18): the
//! one-partition controls topic (`primetime.controls.v1`), written by any
//! instance's `POST`/`DELETE /v1/controls` and read by every instance's own
//! reader thread, behind [`crate::controls::Controls`].
//!
//! # The stamp rule (why every instance applies a control at the same tick)
//!
//! A topic record is a request (issue a control, or revoke one), JSON. Its
//! time `T` is the broker's (the topic is created with
//! `message.timestamp.type=LogAppendTime`); the reader uses `T' = max(T,
//! every earlier record's T')`, so times never decrease along the log even
//! if the broker's clock steps back or the topic keeps producer times.
//! - Ids: the n-th accepted issue request gets id `n` (1, 2, …): a function
//!   of the log's prefix, the same on every instance.
//! - Stamp: a record with time `T'` is stamped with the first tick whose
//!   end is after `T'` (`floor(T' / bucket_ms)`), and an issued control
//!   never earlier than the first tick whose end reaches its `from`. Its
//!   `recorded_at` is `T'`. Refusals (revoking twice, a window that ends
//!   before its stamp) are decided by the same prefix, so identical too.
//! - Firing: before tick `k` (end `E`) fires, every record with `T' < E`
//!   (all those stamped `<= k`) must have been read. The reader knows that
//!   once it has read a record with `T' >= E` (times never decrease), or
//!   has read up to a high watermark fetched at a wall time `W` with
//!   `W - controls_skew_ms >= E`: a record appended after the fetch carries
//!   a broker time of at least `W - skew` as long as the broker's clock is
//!   no further behind this host's than the margin (which also covers
//!   replication delay).
//! - Cost: in a backlog or replay (event time far behind the wall clock)
//!   one fetch covers every tick up to the present; live, at most one
//!   fetch per tick (the clock asks once the tick is due, a few seconds
//!   after its end given the out-of-orderness allowance).
//! - Late: a record read after a tick it is stamped with already fired here
//!   (the skew assumption broken) is still applied, from its stamp, and
//!   logged as an error: this instance's fired ticks may then differ from
//!   the log's replay.
//!
//! Replay: `GET /v1/controls/log` gives the stamped records;
//! `primetime replay --controls` applies them (see [`crate::controls`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use primetime_core::time::bucket_of;
use primetime_core::{Control, ControlId, ControlRecord, ControlSet, Tick};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Message, OwnedHeaders, Timestamp};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};

use super::{KafkaConfig, KafkaError};
use crate::controls::{AppendError, Appended, Controls};
use crate::wall_clock::wall_clock_ms;

/// How long the reader's poll waits: the longest a due tick waits for the
/// reader to notice it (control records themselves wake it at once).
const POLL: Duration = Duration::from_millis(20);

/// A fetch that cannot cover a due tick yet (the wall clock is not far
/// enough past its end) is repeated at most this often.
const REFETCH: Duration = Duration::from_millis(200);

/// How long an append waits for its own record to be read back before it
/// answers "pending".
const READ_BACK: Duration = Duration::from_secs(5);

/// Outcomes kept for appends waiting on their read-back.
const OUTCOMES: usize = 1024;

/// A record of the controls topic: what an operator asked for. Ids and
/// stamps are not in it: every reader derives them (module doc).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum Request {
    Issue {
        control: Control,
        /// The wall time of the HTTP request (audit only).
        requested_at: i64,
    },
    Revoke {
        id: ControlId,
        author: String,
        reason: String,
        requested_at: i64,
    },
}

/// The stamp of a record with (non-decreasing) time `t`: the first tick
/// whose end is after `t`, and for an issued control never before the
/// first tick whose end reaches its `from`.
pub fn stamp(t: i64, from: Option<i64>, bucket_ms: i64) -> Tick {
    let by_time = bucket_of(t, bucket_ms);
    let by_window = from.map_or(i64::MIN, |f| {
        // end (k + 1) * b >= f  <=>  k >= ceil(f / b) - 1
        f.div_euclid(bucket_ms) + i64::from(f.rem_euclid(bucket_ms) != 0) - 1
    });
    Tick(by_time.max(by_window))
}

/// What the reader has read, under one lock.
#[derive(Debug)]
struct ReadState {
    /// Copied on write: the clock and HTTP hold earlier versions.
    set: Arc<ControlSet>,
    /// Every record with a time below this has been read.
    known_until: i64,
    /// The next offset to read.
    next_offset: i64,
    /// The time of the newest record read (`T'`, module doc).
    last_time: i64,
    /// The outcome of recent offsets, for appends awaiting their record.
    outcomes: VecDeque<(i64, Result<ControlRecord, AppendError>)>,
}

/// Shared by the handle (HTTP, the clock) and the reader thread.
#[derive(Debug)]
struct Shared {
    /// Held to apply one record or to clone the set, never across I/O.
    state: Mutex<ReadState>,
    /// The end of the newest tick the clock waits for: the reader fetches
    /// a high watermark while this is beyond `known_until`.
    wanted_until: AtomicI64,
    /// The newest tick handed to the clock (late records are detected
    /// against it).
    fired_through: AtomicI64,
    bucket_ms: i64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, ReadState> {
        // Applying a record checks before it mutates: a panic cannot leave
        // the set half-changed, so poisoning is ignored.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Delivery: each append waits on its own acknowledgement.
struct Acks;

/// An acknowledged record's offset and, when the broker returned it, its
/// append time.
type Ack = Result<(i64, Option<i64>), String>;

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = Box<oneshot::Sender<Ack>>;

    fn delivery(&self, result: &DeliveryResult<'_>, reply: Self::DeliveryOpaque) {
        let ack = match result {
            Ok(m) => Ok((
                m.offset(),
                match m.timestamp() {
                    Timestamp::LogAppendTime(t) => Some(t),
                    _ => None,
                },
            )),
            Err((e, _)) => Err(e.to_string()),
        };
        // The request may have gone (client disconnected): nothing to tell.
        let _ = reply.send(ack);
    }
}

/// See the module doc.
pub struct KafkaControls {
    producer: ThreadedProducer<Acks>,
    topic: String,
    shared: Arc<Shared>,
    /// Bumped whenever the reader read a record or learnt more.
    changed_rx: watch::Receiver<u64>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for KafkaControls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaControls")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl KafkaControls {
    /// Starts reading the controls topic from its beginning (it must
    /// exist: `--create-topics` creates it). Broker round trips: call off
    /// the reactor.
    pub fn start(config: &KafkaConfig, bucket_ms: i64) -> Result<Self, KafkaError> {
        let topic = config.topics.controls.clone();
        let mut cc = config.client_config();
        cc.set("group.id", format!("{}-controls", config.group_id))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            // Records are read as soon as they are appended.
            .set("fetch.wait.max.ms", "10");
        let consumer: BaseConsumer = cc.create()?;
        let partitions = super::topic_partitions(&consumer, &topic)?;
        if partitions != [0] {
            tracing::warn!(topic = %topic, ?partitions, "the controls topic should have one partition; reading partition 0 only");
        }
        let (low, _) = watermarks_retrying(&consumer, &topic, 0)?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, Offset::Offset(low))?;
        consumer.assign(&tpl)?;
        let bucket_ms = bucket_ms.max(1);
        let shared = Arc::new(Shared {
            state: Mutex::new(ReadState {
                set: Arc::new(ControlSet::new(bucket_ms)),
                known_until: i64::MIN,
                next_offset: low,
                last_time: i64::MIN,
                outcomes: VecDeque::new(),
            }),
            wanted_until: AtomicI64::new(i64::MIN),
            fired_through: AtomicI64::new(i64::MIN),
            bucket_ms,
        });
        let (changed_tx, changed_rx) = watch::channel(0u64);
        let stop = Arc::new(AtomicBool::new(false));
        let reader = Reader {
            consumer,
            topic: topic.clone(),
            shared: Arc::clone(&shared),
            changed_tx,
            stop: Arc::clone(&stop),
            skew_ms: i64::try_from(config.controls_skew_ms).unwrap_or(i64::MAX),
            pending: None,
            last_fetch: None,
            warned_producer_time: false,
        };
        // A thread of its own: librdkafka's poll blocks, and the clock must
        // not depend on the reactor to learn about controls.
        let thread = std::thread::Builder::new()
            .name("primetime-kafka-controls".into())
            .spawn(move || reader.run())
            .map_err(|error| KafkaError::Io {
                what: "starting the controls reader",
                error,
            })?;
        let mut pc = config.client_config();
        pc.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "0")
            // An operator waits for the answer: fail (503) within 10 s.
            .set("message.timeout.ms", "10000");
        tracing::info!(topic = %topic, from_offset = low, "control log reader started");
        Ok(Self {
            producer: pc.create_with_context(Acks)?,
            topic,
            shared,
            changed_rx,
            stop,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Stops the reader thread and flushes the producer.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let handle = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = handle {
            let _ = t.join();
        }
        let _ = self.producer.flush(Duration::from_secs(5));
    }

    /// Writes `request`, waits for the broker's acknowledgement, then for
    /// this instance's reader to read it back.
    async fn append(&self, request: Request) -> Result<Appended, AppendError> {
        let payload =
            serde_json::to_vec(&request).map_err(|e| AppendError::Unavailable(e.to_string()))?;
        let (op, from) = match &request {
            Request::Issue { control, .. } => ("issue", Some(control.from)),
            Request::Revoke { .. } => ("revoke", None),
        };
        let (tx, rx) = oneshot::channel();
        let record = BaseRecord::<(), [u8], _>::with_opaque_to(&self.topic, Box::new(tx))
            .partition(0)
            .payload(payload.as_slice())
            .headers(OwnedHeaders::new().insert(Header {
                key: "op",
                value: Some(op),
            }));
        // Enqueueing never blocks; a full queue is an answer (503).
        self.producer
            .send(record)
            .map_err(|(e, _)| AppendError::Unavailable(e.to_string()))?;
        let (offset, time) = rx
            .await
            .map_err(|_| AppendError::Unavailable("the producer stopped".to_owned()))?
            .map_err(AppendError::Unavailable)?;
        let mut changed = self.changed_rx.clone();
        let read_back = async {
            loop {
                if let Some(outcome) = self.outcome(offset) {
                    return outcome;
                }
                if changed.changed().await.is_err() {
                    return Err(AppendError::Unavailable(
                        "the control log reader stopped".to_owned(),
                    ));
                }
            }
        };
        match tokio::time::timeout(READ_BACK, read_back).await {
            Ok(r) => r.map(Appended::Applied),
            Err(_) => Ok(Appended::Pending {
                offset,
                tick: time.map(|t| stamp(t, from, self.shared.bucket_ms)),
            }),
        }
    }

    /// The outcome of the record at `offset`, once read.
    fn outcome(&self, offset: i64) -> Option<Result<ControlRecord, AppendError>> {
        let s = self.shared.lock();
        if s.next_offset <= offset {
            return None;
        }
        let found = s.outcomes.iter().find(|(o, _)| *o == offset);
        Some(match found {
            Some((_, r)) => r.clone(),
            None => Err(AppendError::Unavailable(format!(
                "record {offset} was read but its outcome is no longer kept; see GET /v1/controls"
            ))),
        })
    }
}

impl Controls for KafkaControls {
    fn issue(
        &self,
        control: Control,
        recorded_at: i64,
    ) -> BoxFuture<'_, Result<Appended, AppendError>> {
        Box::pin(self.append(Request::Issue {
            control,
            requested_at: recorded_at,
        }))
    }

    fn revoke(
        &self,
        id: ControlId,
        recorded_at: i64,
        author: String,
        reason: String,
    ) -> BoxFuture<'_, Result<Appended, AppendError>> {
        Box::pin(self.append(Request::Revoke {
            id,
            author,
            reason,
            requested_at: recorded_at,
        }))
    }

    fn snapshot(&self) -> Arc<ControlSet> {
        Arc::clone(&self.shared.lock().set)
    }

    fn for_tick(&self, tick: Tick) -> Option<Arc<ControlSet>> {
        let end = tick.end_ms(self.shared.bucket_ms);
        self.shared.wanted_until.fetch_max(end, Ordering::SeqCst);
        let s = self.shared.lock();
        if s.known_until < end {
            return None;
        }
        self.shared
            .fired_through
            .fetch_max(tick.0, Ordering::SeqCst);
        Some(Arc::clone(&s.set))
    }

    fn subscribe(&self) -> Option<watch::Receiver<u64>> {
        Some(self.changed_rx.clone())
    }
}

/// A partition's watermarks, retried for up to 30 s: a topic created a
/// moment ago answers "not leader" while its leader is elected.
pub(super) fn watermarks_retrying(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
) -> Result<(i64, i64), KafkaError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)) {
            Ok(w) => return Ok(w),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(topic, error = %e, "watermarks not ready, retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The reader thread: applies records in offset order and learns how far
/// the log is known (module doc).
struct Reader {
    consumer: BaseConsumer,
    topic: String,
    shared: Arc<Shared>,
    changed_tx: watch::Sender<u64>,
    stop: Arc<AtomicBool>,
    skew_ms: i64,
    /// A fetched high watermark and the wall time before the fetch.
    pending: Option<(i64, i64)>,
    last_fetch: Option<Instant>,
    warned_producer_time: bool,
}

impl Reader {
    fn run(mut self) {
        while !self.stop.load(Ordering::Relaxed) {
            match self.consumer.poll(POLL) {
                Some(Ok(m)) => {
                    let time = match m.timestamp() {
                        Timestamp::LogAppendTime(t) => Some(t),
                        Timestamp::CreateTime(t) => {
                            if !self.warned_producer_time {
                                self.warned_producer_time = true;
                                tracing::warn!(topic = %self.topic, "the controls topic keeps producer times: create it with message.timestamp.type=LogAppendTime");
                            }
                            Some(t)
                        }
                        Timestamp::NotAvailable => None,
                    };
                    let (offset, payload) = (m.offset(), m.payload().unwrap_or_default().to_vec());
                    drop(m);
                    self.apply(offset, time, &payload);
                }
                Some(Err(e)) => tracing::warn!(error = %e, "reading the control log"),
                None => {}
            }
            self.catch_up();
        }
    }

    fn bump(&self) {
        self.changed_tx.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Applies the record at `offset` (module doc: ids, stamps, refusals).
    fn apply(&mut self, offset: i64, time: Option<i64>, payload: &[u8]) {
        let bucket_ms = self.shared.bucket_ms;
        let mut s = self.shared.lock();
        let t = time.map_or(s.last_time, |t| t.max(s.last_time));
        s.last_time = t;
        let outcome = match serde_json::from_slice::<Request>(payload) {
            Err(e) => {
                tracing::error!(offset, error = %e, "malformed control record skipped");
                Err(AppendError::Unavailable(format!(
                    "malformed control record: {e}"
                )))
            }
            Ok(Request::Issue { control, .. }) => {
                let tick = stamp(t, Some(control.from), bucket_ms);
                Arc::make_mut(&mut s.set)
                    .issue(control, tick, t)
                    .map_err(AppendError::from)
            }
            Ok(Request::Revoke {
                id, author, reason, ..
            }) => {
                let tick = stamp(t, None, bucket_ms);
                Arc::make_mut(&mut s.set)
                    .revoke(id, tick, t, author, reason)
                    .map_err(AppendError::from)
            }
        };
        match &outcome {
            Ok(r) => {
                let fired = self.shared.fired_through.load(Ordering::SeqCst);
                if r.tick().0 <= fired {
                    tracing::error!(
                        offset,
                        id = r.id().0,
                        tick = r.tick().0,
                        fired,
                        "late control record: a tick it is stamped with already fired here (broker clock skew beyond kafka.controls_skew_ms?)"
                    );
                } else {
                    tracing::info!(
                        offset,
                        id = r.id().0,
                        tick = r.tick().0,
                        "control record applied"
                    );
                }
            }
            Err(AppendError::Refused(e)) => {
                tracing::info!(offset, error = %e, "control record refused");
            }
            Err(_) => {}
        }
        s.known_until = s.known_until.max(t);
        s.next_offset = offset + 1;
        s.outcomes.push_back((offset, outcome));
        while s.outcomes.len() > OUTCOMES {
            s.outcomes.pop_front();
        }
        drop(s);
        self.bump();
    }

    /// While the clock waits for a tick beyond what is known: fetch the
    /// high watermark (wall time first) and, once read up to it, know
    /// every record older than that wall time minus the skew margin.
    fn catch_up(&mut self) {
        loop {
            let known = {
                let mut s = self.shared.lock();
                if let Some((high, wall)) = self.pending {
                    if s.next_offset >= high {
                        self.pending = None;
                        let covered = wall.saturating_sub(self.skew_ms);
                        if covered > s.known_until {
                            s.known_until = covered;
                            drop(s);
                            self.bump();
                            continue;
                        }
                    }
                }
                s.known_until
            };
            let wanted = self.shared.wanted_until.load(Ordering::SeqCst);
            if wanted <= known || self.pending.is_some() {
                return;
            }
            let wall = wall_clock_ms();
            let covers = wall.saturating_sub(self.skew_ms);
            let recent = self.last_fetch.is_some_and(|f| f.elapsed() < REFETCH);
            if covers <= known || (covers < wanted && recent) {
                return;
            }
            self.last_fetch = Some(Instant::now());
            match self
                .consumer
                .fetch_watermarks(&self.topic, 0, Duration::from_secs(5))
            {
                Ok((_, high)) => self.pending = Some((high, wall)),
                Err(e) => {
                    tracing::warn!(error = %e, "control log high watermark");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_stamped_with_the_first_tick_ending_after_it_and_not_before_its_window() {
        let b = 10_000;
        // Tick k ends at (k + 1) * b: a record at 25 s is in tick 2 (ends 30 s).
        assert_eq!(stamp(25_000, None, b), Tick(2));
        // Exactly at a tick's end: that tick has ended, the next one gets it.
        assert_eq!(stamp(30_000, None, b), Tick(3));
        // A window from 70 s: the first tick whose end reaches it is 6.
        assert_eq!(stamp(25_000, Some(70_000), b), Tick(6));
        assert_eq!(stamp(25_000, Some(70_001), b), Tick(7));
        // A window that opened earlier does not move the stamp back.
        assert_eq!(stamp(25_000, Some(0), b), Tick(2));
    }

    #[test]
    fn requests_round_trip_as_json() {
        let r = Request::Revoke {
            id: ControlId(3),
            author: "ops".into(),
            reason: "over".into(),
            requested_at: 5,
        };
        let json = serde_json::to_string(&r).expect("json");
        assert!(json.contains(r#""op":"revoke""#), "{json}");
        assert_eq!(serde_json::from_str::<Request>(&json).expect("back"), r);
    }
}
