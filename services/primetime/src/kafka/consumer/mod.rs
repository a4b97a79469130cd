//! The Kafka source: a polling thread (`poller`) owns the group
//! consumer; the pipeline's source thread reads data events from a bounded
//! channel through [`KafkaInput`], and `serve` steers the polling thread
//! between epochs through [`KafkaSource`] with request/reply messages
//! ([`control`]).
//!
//! - Records carry their Kafka timestamp as ingest time (DESIGN §3).
//! - Backpressure: when the channel is full (the source is blocked on full
//!   shard mailboxes), the polling thread waits; librdkafka's bounded
//!   prefetch queue then stops fetching. A wait over a second pauses every
//!   assigned partition and keeps polling (rebalances, `max.poll.interval`)
//!   until there is room.
//! - Idleness ([`idleness`], pure): a partition is idle when it delivered
//!   no record for `idle_timeout` of wall time *and* it is at the end of
//!   its log (high watermark = next offset), or when it is not assigned
//!   here. A partition with a backlog is never idle, however slow the
//!   fetches. Idle flags travel with the records, so the source sees them
//!   in order.
//! - Epochs: `serve` runs one pipeline per assignment. Between two, it
//!   [`KafkaSource::halt`]s the polling thread (records still queued are
//!   dropped, partitions paused), plans where each partition starts (a
//!   snapshot's offsets, a rewind by time, or the committed offset) and
//!   [`KafkaSource::resume`]s it there. Each request carries its reply
//!   channel; while halted the data channel carries nothing. Any
//!   assignment change during an epoch ends it.
//! - Commits: the source hands over offsets that are safe (their effects
//!   are in a durably published tick); the polling thread commits them,
//!   with the durable tick as commit metadata (`durable_tick=K`), which a
//!   rewind after a crash reads to know what was published.

pub mod control;
pub mod idleness;
mod poller;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use primetime_core::{Reason, Tick, Watermark};

use self::control::Request;
pub use self::control::{Committed, ControlError, HaltInfo, Resumed, StartAt, StartOffset};
use self::idleness::IngestClock;
use self::poller::Poller;
use super::producer::DeadLetters;
use super::{KafkaConfig, KafkaError, PartitionMap};
use crate::metrics::Metrics;
use crate::pipeline::{CommitOffset, Input, InputRecord, Poll};

/// What the polling thread tells the source: data only (control replies
/// have their own channels).
#[derive(Debug)]
enum KafkaEvent {
    /// Records in partition order, and every partition's idle flag after
    /// them.
    Records {
        records: Vec<InputRecord>,
        idle: Vec<bool>,
    },
    /// The new assignment (pipeline input partitions).
    Assigned(Vec<u32>),
    /// Partitions taken away.
    Revoked(Vec<u32>),
    /// The consumer failed for good.
    Fatal(String),
}

/// The pipeline input partitions this instance owns, as of the last
/// rebalance the source (or, while halted, the poller) applied.
#[derive(Debug, Clone)]
pub struct Assignment(Arc<Mutex<Vec<bool>>>);

impl Assignment {
    pub fn flags(&self) -> Vec<bool> {
        match self.0.lock() {
            Ok(a) => a.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn owned(&self) -> Vec<u32> {
        self.flags()
            .iter()
            .enumerate()
            .filter(|(_, x)| **x)
            .map(|(i, _)| i as u32)
            .collect()
    }

    pub fn is_owned(&self, partition: u32) -> bool {
        self.0
            .lock()
            .map(|a| a.get(partition as usize).copied().unwrap_or(false))
            .unwrap_or(false)
    }

    fn set(&self, parts: &[u32], value: bool) {
        let mut a = match self.0.lock() {
            Ok(a) => a,
            Err(p) => p.into_inner(),
        };
        for &p in parts {
            if let Some(x) = a.get_mut(p as usize) {
                *x = value;
            }
        }
    }
}

/// State shared by the polling thread and every epoch's [`KafkaInput`].
struct Shared {
    map: PartitionMap,
    /// Behind a lock only because `Receiver` is not `Sync`: one reader at
    /// a time (the epoch's input, or `serve` between epochs).
    events_rx: Mutex<Receiver<KafkaEvent>>,
    /// Safe offsets waiting for the polling thread to commit them; a lock
    /// held for a push or a take.
    commits: Mutex<Vec<CommitOffset>>,
    stop: Arc<AtomicBool>,
    /// The current assignment, as of the last event the source read.
    assigned: Assignment,
    rebalanced: AtomicBool,
    idle_timeout: Duration,
    durable_tick: Arc<AtomicI64>,
    /// The source thread sends, the commit path flushes: one user at a time.
    dead_letters: Mutex<DeadLetters>,
    metrics: Arc<Metrics>,
}

/// The running consumer: its polling thread and what each pipeline epoch
/// needs to read from it.
pub struct KafkaSource {
    shared: Arc<Shared>,
    /// Capacity 1: `serve` is the only requester and waits for each reply.
    control_tx: SyncSender<Request>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KafkaSource {
    /// Joins the group and starts polling. `durable_tick` is the newest
    /// tick the price sink has durably published (`i64::MIN`: none).
    pub fn start(
        config: &KafkaConfig,
        stop: Arc<AtomicBool>,
        durable_tick: Arc<AtomicI64>,
        dead_letters: DeadLetters,
        metrics: Arc<Metrics>,
    ) -> Result<Self, KafkaError> {
        let consumer = poller::group_consumer(config)?;
        let map = PartitionMap::discover(&consumer, &config.topics)?;
        rdkafka::consumer::Consumer::subscribe(&consumer, &[&map.driver_locations, &map.demand])?;
        // Bounded: a full channel is the backpressure that pauses fetching.
        let (events_tx, events_rx) = mpsc::sync_channel(config.channel_batches);
        let (control_tx, control_rx) = mpsc::sync_channel(1);
        let n = map.total() as usize;
        let idle_timeout = Duration::from_millis(config.idle_timeout_ms);
        let shared = Arc::new(Shared {
            map: map.clone(),
            events_rx: Mutex::new(events_rx),
            commits: Mutex::new(Vec::new()),
            stop,
            assigned: Assignment(Arc::new(Mutex::new(vec![false; n]))),
            rebalanced: AtomicBool::new(false),
            idle_timeout,
            durable_tick,
            dead_letters: Mutex::new(dead_letters),
            metrics,
        });
        let poller = Poller::new(consumer, events_tx, control_rx, Arc::clone(&shared));
        // One thread owns the consumer: librdkafka wants one poller, and
        // rebalance callbacks run inside its `poll`.
        let thread = std::thread::Builder::new()
            .name("primetime-kafka-poll".into())
            .spawn(move || poller.run())
            .map_err(|error| KafkaError::Io {
                what: "starting the polling thread",
                error,
            })?;
        tracing::info!(partitions = n, group = %config.group_id, "kafka consumer started");
        Ok(Self {
            shared,
            control_tx,
            thread: Some(thread),
        })
    }

    pub fn partition_map(&self) -> &PartitionMap {
        &self.shared.map
    }

    /// Stops delivering records before a new epoch: drops what is queued
    /// for the old one, pauses the partitions and reports what this
    /// instance owns and has committed. Blocking (broker round trips).
    pub fn halt(&self) -> anyhow::Result<HaltInfo> {
        let (request, reply) = Request::halt();
        self.request(request)?;
        // The poller may be waiting for room in the data channel: read
        // (and drop) the old epoch's events until the reply comes.
        let events = self.events()?;
        let info = loop {
            match reply.try_recv() {
                Ok(info) => break info,
                Err(TryRecvError::Disconnected) => anyhow::bail!("kafka polling thread stopped"),
                Err(TryRecvError::Empty) => {}
            }
            self.check_stop()?;
            match events.recv_timeout(Duration::from_millis(10)) {
                Ok(event) => self.between_epochs(event)?,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    anyhow::bail!("kafka polling thread stopped")
                }
            }
        };
        // Whatever is still queued was sent before the reply (a halted
        // poller sends nothing): the old epoch's.
        while let Ok(event) = events.try_recv() {
            self.between_epochs(event)?;
        }
        Ok(info)
    }

    /// Resumes after [`Self::halt`], every assigned partition from its
    /// [`StartAt`] (`Committed` for those not in `positions`).
    pub fn resume(&self, positions: BTreeMap<u32, StartAt>) -> anyhow::Result<Resumed> {
        let (request, reply) = Request::resume(positions);
        self.request(request)?;
        // A halted poller never waits on the data channel, so the reply
        // comes without reading it (what follows it is the new epoch's).
        loop {
            self.check_stop()?;
            match reply.recv_timeout(Duration::from_millis(100)) {
                Ok(resumed) => return Ok(resumed?),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    anyhow::bail!("kafka polling thread stopped")
                }
            }
        }
    }

    fn request(&self, request: Request) -> anyhow::Result<()> {
        self.control_tx
            .send(request)
            .map_err(|_| anyhow::anyhow!("kafka polling thread stopped"))
    }

    fn events(&self) -> anyhow::Result<std::sync::MutexGuard<'_, Receiver<KafkaEvent>>> {
        self.shared
            .events_rx
            .lock()
            .map_err(|_| anyhow::anyhow!("kafka channel poisoned"))
    }

    fn check_stop(&self) -> anyhow::Result<()> {
        if self.shared.stop.load(Ordering::Relaxed) {
            anyhow::bail!("stopping");
        }
        Ok(())
    }

    /// An event read while halting: records of the old epoch are dropped,
    /// assignment changes applied.
    fn between_epochs(&self, event: KafkaEvent) -> anyhow::Result<()> {
        match event {
            KafkaEvent::Records { .. } => Ok(()),
            KafkaEvent::Assigned(parts) => {
                set_assigned(&self.shared, &parts, true);
                Ok(())
            }
            KafkaEvent::Revoked(parts) => {
                set_assigned(&self.shared, &parts, false);
                Ok(())
            }
            KafkaEvent::Fatal(e) => anyhow::bail!("kafka consumer failed: {e}"),
        }
    }

    /// The input for the epoch just resumed: `start` are the offsets
    /// [`Self::resume`] reported.
    pub fn input(&self, start: Vec<StartOffset>) -> KafkaInput {
        self.shared.rebalanced.store(false, Ordering::SeqCst);
        let idle = self.shared.assigned.flags().iter().map(|x| !x).collect();
        KafkaInput {
            shared: Arc::clone(&self.shared),
            idle,
            ingest_clock: IngestClock::default(),
            start: start.into_iter().map(|s| (s.partition, s.offset)).collect(),
        }
    }

    /// The last epoch ended because the assignment changed.
    pub fn rebalanced(&self) -> bool {
        self.shared.rebalanced.load(Ordering::SeqCst)
    }

    /// The partitions this instance owns (shared, kept current).
    pub fn assignment(&self) -> Assignment {
        self.shared.assigned.clone()
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn set_assigned(shared: &Shared, parts: &[u32], value: bool) {
    shared.assigned.set(parts, value);
    shared
        .metrics
        .assigned_partitions
        .store(shared.assigned.owned().len() as i64, Ordering::Relaxed);
}

/// One pipeline epoch's view of the consumer ([`Input`]).
pub struct KafkaInput {
    shared: Arc<Shared>,
    idle: Vec<bool>,
    ingest_clock: IngestClock,
    /// Where this epoch started each assigned partition.
    start: HashMap<u32, i64>,
}

impl KafkaInput {
    /// An epoch restored from a snapshot whose records' newest ingest time
    /// was `newest_ingest_ms`: the ingest clock starts there, as if that
    /// record had just been read. So a restored epoch at the end of every
    /// log fires its remaining ticks once every partition is idle, as the
    /// epoch before the restart would have, instead of holding until new
    /// input.
    pub fn resumed_at(mut self, newest_ingest_ms: i64) -> Self {
        self.ingest_clock.observe(newest_ingest_ms, Instant::now());
        self
    }

    fn end_epoch(&self) -> Poll {
        tracing::info!("partition assignment changed: restarting the pipeline");
        self.shared.rebalanced.store(true, Ordering::SeqCst);
        Poll::Stop
    }

    /// The next data event; `Ok(None)` when none came for a while.
    fn next_event(&self) -> anyhow::Result<Option<KafkaEvent>> {
        let rx = self
            .shared
            .events_rx
            .lock()
            .map_err(|_| anyhow::anyhow!("kafka channel poisoned"))?;
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(e) => Ok(Some(e)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => anyhow::bail!("kafka polling thread stopped"),
        }
    }
}

impl Input for KafkaInput {
    fn partitions(&self) -> u32 {
        self.shared.map.total()
    }

    fn poll(&mut self, out: &mut Vec<InputRecord>) -> anyhow::Result<Poll> {
        if self.shared.stop.load(Ordering::Relaxed) {
            return Ok(Poll::Stop);
        }
        let event = match self.next_event() {
            Ok(Some(e)) => e,
            Ok(None) => return Ok(Poll::More),
            Err(_) if self.shared.stop.load(Ordering::Relaxed) => return Ok(Poll::Stop),
            Err(e) => return Err(e),
        };
        match event {
            KafkaEvent::Records { records, idle } => {
                if let Some(max) = records.iter().map(|r| r.ingest_time_ms).max() {
                    self.ingest_clock.observe(max, Instant::now());
                }
                out.extend(records);
                self.idle = idle;
                Ok(Poll::More)
            }
            // The epoch was planned for the old assignment (snapshots,
            // offsets): plan again.
            KafkaEvent::Assigned(parts) => {
                set_assigned(&self.shared, &parts, true);
                Ok(self.end_epoch())
            }
            KafkaEvent::Revoked(parts) => {
                set_assigned(&self.shared, &parts, false);
                Ok(self.end_epoch())
            }
            KafkaEvent::Fatal(e) => anyhow::bail!("kafka consumer failed: {e}"),
        }
    }

    fn start_offset(&self, partition: u32) -> Option<i64> {
        self.start.get(&partition).copied()
    }

    fn is_idle(&self, partition: u32) -> bool {
        self.idle.get(partition as usize).copied().unwrap_or(true)
    }

    /// The ingest clock ([`IngestClock`]): the newest ingest time seen plus
    /// the wall time since it arrived, minus the idle timeout. `None`
    /// before the first record (hold).
    fn idle_watermark(&self) -> Option<Watermark> {
        self.ingest_clock
            .watermark(self.shared.idle_timeout, Instant::now())
    }

    fn dead_letter(
        &mut self,
        record: &InputRecord,
        reason: Reason,
        detail: &str,
    ) -> anyhow::Result<()> {
        let source = self.shared.map.source(record.partition);
        let mut dl = self
            .shared
            .dead_letters
            .lock()
            .map_err(|_| anyhow::anyhow!("dead-letter producer poisoned"))?;
        dl.send(source, record, reason, detail)?;
        Ok(())
    }

    fn durable_tick(&self) -> Option<Tick> {
        match self.shared.durable_tick.load(Ordering::Acquire) {
            i64::MIN => None,
            t => Some(Tick(t)),
        }
    }

    fn commit(&mut self, offsets: &[CommitOffset]) -> anyhow::Result<()> {
        // Dead letters of the committed records must be delivered first.
        self.shared
            .dead_letters
            .lock()
            .map_err(|_| anyhow::anyhow!("dead-letter producer poisoned"))?
            .flush()?;
        let mut c = self
            .shared
            .commits
            .lock()
            .map_err(|_| anyhow::anyhow!("commit queue poisoned"))?;
        c.extend_from_slice(offsets);
        Ok(())
    }
}
