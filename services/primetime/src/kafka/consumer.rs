//! The Kafka source: a polling thread owns the group consumer; the
//! pipeline's source thread reads typed events from a bounded channel.
//!
//! - Records carry their Kafka timestamp as ingest time (DESIGN §3).
//! - Backpressure: when the channel is full (the source is blocked on full
//!   shard mailboxes), the polling thread waits; librdkafka's bounded
//!   prefetch queue then stops fetching. A wait over a second pauses every
//!   assigned partition and keeps polling (rebalances, `max.poll.interval`)
//!   until there is room.
//! - Idleness: a partition is idle when it delivered no record for
//!   `idle_timeout` of wall time during which the consumer was not paused
//!   *and* it is at the end of its log (high watermark = next offset), or
//!   when it is not assigned here. A partition with a backlog is never
//!   idle, however slow the fetches. Idle flags travel with the records,
//!   so the source sees them in order.
//! - Epochs: `serve` runs one pipeline per assignment. Between two, it
//!   [`KafkaSource::halt`]s the polling thread (records still queued are
//!   dropped, partitions paused), plans where each partition starts (a
//!   snapshot's offsets, a rewind by time, or the committed offset) and
//!   [`KafkaSource::resume`]s it there. Any assignment change during an
//!   epoch ends it.
//! - Commits: the source hands over offsets that are safe (their effects
//!   are in a durably published tick); the polling thread commits them,
//!   with the durable tick as commit metadata (`durable_tick=K`), which a
//!   rewind after a crash reads to know what was published.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use primetime_core::{Reason, Tick, Watermark};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::producer::DeadLetters;
use super::{KafkaConfig, KafkaError, PartitionMap};
use crate::metrics::Metrics;
use crate::pipeline::{Input, InputRecord, Poll};

/// What the polling thread tells the source.
#[derive(Debug)]
enum KafkaEvent {
    /// Records in partition order, and every partition's idle flag after
    /// them.
    Records {
        records: Vec<InputRecord>,
        idle: Vec<bool>,
    },
    /// The new assignment (pipeline partition numbers).
    Assigned(Vec<u32>),
    /// Partitions taken away.
    Revoked(Vec<u32>),
    /// The consumer failed for good.
    Fatal(String),
    /// Halted for epoch `generation` (again, if the assignment changed
    /// while halted).
    Halted(u64, HaltInfo),
    /// Resumed for epoch `generation` at these offsets.
    Started(u64, Vec<(u32, i64)>),
}

/// What a halted consumer owns and has committed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HaltInfo {
    /// Assigned pipeline partitions.
    pub assigned: Vec<u32>,
    /// Per assigned partition: the committed offset and the durable tick
    /// of that commit (its metadata), when there are.
    pub committed: Vec<(u32, Option<i64>, Option<i64>)>,
}

/// Where an epoch starts reading a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// This offset (a snapshot's).
    Offset(i64),
    /// The group's committed offset (the log start without one).
    Committed,
    /// The first record with a timestamp at or after this (ms), but no
    /// later than the committed offset: a rewind.
    Time(i64),
}

/// Result of [`KafkaSource::resume`].
#[derive(Debug)]
pub enum Resumed {
    /// Reading from these offsets.
    Started(Vec<(u32, i64)>),
    /// The assignment changed while halted: plan again.
    Replan(HaltInfo),
}

/// What `serve` asks of the polling thread.
#[derive(Debug)]
enum Control {
    Halt(u64),
    Start(u64, std::collections::BTreeMap<u32, StartAt>),
}

/// Rebalance callbacks run inside `poll` on the polling thread; they only
/// queue what happened.
#[derive(Default)]
struct GroupContext {
    rebalances: Mutex<Vec<RebalanceNote>>,
}

/// `assigned` (else revoked) and the (topic, partition)s concerned.
type RebalanceNote = (bool, Vec<(String, i32)>);

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let (assigned, list) = match rebalance {
            Rebalance::Assign(tpl) => (true, tpl),
            Rebalance::Revoke(tpl) => (false, tpl),
            Rebalance::Error(e) => {
                tracing::warn!(error = %e, "rebalance error");
                return;
            }
        };
        let parts = list
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        match self.rebalances.lock() {
            Ok(mut q) => q.push((assigned, parts)),
            Err(p) => p.into_inner().push((assigned, parts)),
        }
    }

    fn commit_callback(&self, result: rdkafka::error::KafkaResult<()>, _: &TopicPartitionList) {
        if let Err(e) = result {
            tracing::warn!(error = %e, "offset commit failed");
        }
    }
}

/// The partitions (pipeline numbering) this instance owns, as of the last
/// rebalance event the source read.
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
    events_rx: Mutex<Receiver<KafkaEvent>>,
    commits: Mutex<Vec<(u32, i64)>>,
    stop: Arc<AtomicBool>,
    /// The current assignment, as of the last event the source read.
    assigned: Assignment,
    rebalanced: AtomicBool,
    idle_timeout: Duration,
    durable_tick: Arc<AtomicI64>,
    dead_letters: Mutex<DeadLetters>,
    metrics: Arc<Metrics>,
    control: Mutex<Option<Control>>,
    generation: AtomicU64,
}

/// The running consumer: its polling thread and what each pipeline epoch
/// needs to read from it.
pub struct KafkaSource {
    shared: Arc<Shared>,
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
        let mut cc = config.client_config();
        cc.set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "range")
            .set("session.timeout.ms", config.session_timeout_ms.to_string())
            // The rebalance timeout: a member killed with -9 never leaves,
            // and the rebalance that replaces it waits for it this long
            // (librdkafka's default is 5 min). The polling thread polls
            // every few milliseconds, so a short one is safe.
            .set(
                "max.poll.interval.ms",
                (config.session_timeout_ms.saturating_mul(2))
                    .max(10_000)
                    .to_string(),
            )
            .set("enable.partition.eof", "false")
            // Bounded prefetch (librdkafka keeps up to 100 k messages per
            // partition by default): memory under overload stays flat.
            .set("queued.min.messages", "20000")
            .set("queued.max.messages.kbytes", "32768")
            // Bounded fetches (Kafka's own defaults are 50 MiB / 1 MiB).
            .set("fetch.max.bytes", "16777216")
            .set("max.partition.fetch.bytes", "1048576");
        if !config.instance_id.is_empty() {
            cc.set("group.instance.id", &config.instance_id);
        }
        let consumer: BaseConsumer<GroupContext> =
            cc.create_with_context(GroupContext::default())?;
        let map = PartitionMap::discover(&consumer, &config.topics)?;
        consumer.subscribe(&[&map.driver_locations, &map.demand])?;
        let (events_tx, events_rx) = mpsc::sync_channel(config.channel_batches);
        let n = map.total() as usize;
        let shared = Arc::new(Shared {
            map: map.clone(),
            events_rx: Mutex::new(events_rx),
            commits: Mutex::new(Vec::new()),
            stop: Arc::clone(&stop),
            assigned: Assignment(Arc::new(Mutex::new(vec![false; n]))),
            rebalanced: AtomicBool::new(false),
            idle_timeout: Duration::from_millis(config.idle_timeout_ms),
            durable_tick,
            dead_letters: Mutex::new(dead_letters),
            metrics: Arc::clone(&metrics),
            control: Mutex::new(None),
            generation: AtomicU64::new(0),
        });
        let poller = Poller {
            consumer,
            map,
            events_tx,
            shared: Arc::clone(&shared),
            idle_timeout: Duration::from_millis(config.idle_timeout_ms),
            quiet: vec![Duration::ZERO; n],
            next_offset: vec![None; n],
            caught_up: vec![false; n],
            assigned: vec![false; n],
            metrics,
            carry: Vec::new(),
            halted: None,
        };
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
        let generation = self.shared.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.control(Control::Halt(generation))?;
        match self.wait_for(generation)? {
            KafkaEvent::Halted(_, info) => Ok(info),
            other => anyhow::bail!("unexpected event while halting: {other:?}"),
        }
    }

    /// Resumes after [`Self::halt`], every assigned partition from its
    /// [`StartAt`] (`Committed` for those not in `positions`).
    pub fn resume(
        &self,
        positions: std::collections::BTreeMap<u32, StartAt>,
    ) -> anyhow::Result<Resumed> {
        let generation = self.shared.generation.load(Ordering::SeqCst);
        self.control(Control::Start(generation, positions))?;
        match self.wait_for(generation)? {
            KafkaEvent::Started(_, offsets) => Ok(Resumed::Started(offsets)),
            KafkaEvent::Halted(_, info) => Ok(Resumed::Replan(info)),
            other => anyhow::bail!("unexpected event while resuming: {other:?}"),
        }
    }

    fn control(&self, c: Control) -> anyhow::Result<()> {
        *self
            .shared
            .control
            .lock()
            .map_err(|_| anyhow::anyhow!("kafka control poisoned"))? = Some(c);
        Ok(())
    }

    /// Reads the channel up to this generation's `Halted` or `Started`,
    /// dropping records (of the old epoch) and applying assignment changes.
    fn wait_for(&self, generation: u64) -> anyhow::Result<KafkaEvent> {
        let rx = self
            .shared
            .events_rx
            .lock()
            .map_err(|_| anyhow::anyhow!("kafka channel poisoned"))?;
        loop {
            if self.shared.stop.load(Ordering::Relaxed) {
                anyhow::bail!("stopping");
            }
            let event = match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(e) => e,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    anyhow::bail!("kafka polling thread stopped")
                }
            };
            match event {
                KafkaEvent::Records { .. } => {}
                KafkaEvent::Assigned(parts) => set_assigned(&self.shared, &parts, true),
                KafkaEvent::Revoked(parts) => set_assigned(&self.shared, &parts, false),
                KafkaEvent::Fatal(e) => anyhow::bail!("kafka consumer failed: {e}"),
                KafkaEvent::Halted(g, _) | KafkaEvent::Started(g, _) if g == generation => {
                    return Ok(event);
                }
                KafkaEvent::Halted(..) | KafkaEvent::Started(..) => {}
            }
        }
    }

    /// The input for the epoch just resumed: `start` are the offsets
    /// [`Self::resume`] reported.
    pub fn input(&self, start: Vec<(u32, i64)>) -> KafkaInput {
        self.shared.rebalanced.store(false, Ordering::SeqCst);
        let idle = self.shared.assigned.flags().iter().map(|x| !x).collect();
        KafkaInput {
            shared: Arc::clone(&self.shared),
            idle,
            ingest_clock: None,
            start: start.into_iter().collect(),
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

struct Poller {
    consumer: BaseConsumer<GroupContext>,
    map: PartitionMap,
    events_tx: SyncSender<KafkaEvent>,
    shared: Arc<Shared>,
    idle_timeout: Duration,
    /// Unpaused wall time since each partition's last record.
    quiet: Vec<Duration>,
    /// Offset after the last record delivered, per partition.
    next_offset: Vec<Option<i64>>,
    /// Confirmed at the end of the log since the last record.
    caught_up: Vec<bool>,
    assigned: Vec<bool>,
    metrics: Arc<Metrics>,
    /// Records polled while waiting to send: the start of the next batch.
    carry: Vec<InputRecord>,
    /// Halted for this epoch generation: records are dropped.
    halted: Option<u64>,
}

/// Records per channel message.
const BATCH: usize = 4096;

/// How long a full channel is waited on before the partitions are paused.
const PAUSE_AFTER: Duration = Duration::from_secs(1);

impl Poller {
    fn run(mut self) {
        let mut batch: Vec<InputRecord> = Vec::with_capacity(BATCH);
        let mut last_idle = vec![true; self.quiet.len()];
        let mut last = Instant::now();
        while !self.shared.stop.load(Ordering::Relaxed) {
            self.commit_pending();
            if !self.serve_control(&mut batch) {
                return;
            }
            batch.append(&mut self.carry);
            if self.halted.is_some() {
                // Nothing polled while halted belongs to any epoch.
                batch.clear();
            }
            let msg = self.consumer.poll(Duration::from_millis(20));
            let now = Instant::now();
            let elapsed = now - last;
            last = now;
            for q in &mut self.quiet {
                *q += elapsed;
            }
            match msg {
                Some(Ok(m)) => {
                    if let Some(r) = to_record(&self.map, &m) {
                        if self.halted.is_none() {
                            self.delivered(&r);
                            batch.push(r);
                        }
                    }
                    // Drain what is already fetched without waiting.
                    while batch.len() < BATCH {
                        match self.consumer.poll(Duration::ZERO) {
                            Some(Ok(m)) => {
                                if let Some(r) = to_record(&self.map, &m) {
                                    if self.halted.is_none() {
                                        self.delivered(&r);
                                        batch.push(r);
                                    }
                                }
                            }
                            Some(Err(e)) => {
                                tracing::warn!(error = %e, "kafka poll error");
                                break;
                            }
                            None => break,
                        }
                    }
                }
                Some(Err(e)) => {
                    if is_fatal(&e) {
                        let _ = self.events_tx.send(KafkaEvent::Fatal(e.to_string()));
                        return;
                    }
                    tracing::warn!(error = %e, "kafka poll error");
                }
                None => {}
            }
            // Rebalances: flush records first so order is kept.
            let rebalances = self.shared_context_rebalances().unwrap_or_default();
            for i in 0..self.quiet.len() {
                if self.assigned[i] && self.quiet[i] >= self.idle_timeout && !self.caught_up[i] {
                    // Quiet, but is it at the end of its log? A partition
                    // with a backlog is never idle.
                    if self.at_end(i as u32) {
                        self.caught_up[i] = true;
                    } else {
                        self.quiet[i] = Duration::ZERO;
                    }
                }
            }
            let idle: Vec<bool> = (0..self.quiet.len())
                .map(|i| {
                    !self.assigned[i] || (self.quiet[i] >= self.idle_timeout && self.caught_up[i])
                })
                .collect();
            if !batch.is_empty() || idle != last_idle {
                let event = KafkaEvent::Records {
                    records: std::mem::replace(&mut batch, Vec::with_capacity(BATCH)),
                    idle: idle.clone(),
                };
                if !self.send(event) {
                    return;
                }
                last_idle = idle;
            }
            for (assigned, parts) in rebalances {
                let indices: Vec<u32> = parts
                    .iter()
                    .filter_map(|(t, p)| self.map.index(t, *p))
                    .collect();
                for &i in &indices {
                    self.assigned[i as usize] = assigned;
                    self.quiet[i as usize] = Duration::ZERO;
                    self.caught_up[i as usize] = false;
                    // Consumption restarts from the committed offset.
                    self.next_offset[i as usize] = None;
                }
                tracing::info!(assigned, partitions = ?indices, "rebalance");
                let event = if assigned {
                    KafkaEvent::Assigned(indices)
                } else {
                    KafkaEvent::Revoked(indices)
                };
                if !self.send(event) {
                    return;
                }
                if let Some(generation) = self.halted {
                    // The plan being made is for the old assignment.
                    self.pause_assigned();
                    let info = self.halt_info();
                    if !self.send(KafkaEvent::Halted(generation, info)) {
                        return;
                    }
                }
            }
        }
        // The last commit waits for the broker's answer.
        self.commit_pending_mode(CommitMode::Sync);
    }

    /// Carries out `serve`'s request, if any. False: stop.
    fn serve_control(&mut self, batch: &mut Vec<InputRecord>) -> bool {
        let control = match self.shared.control.lock() {
            Ok(mut c) => c.take(),
            Err(_) => return false,
        };
        match control {
            None => true,
            Some(Control::Halt(generation)) => {
                batch.clear();
                self.carry.clear();
                self.halted = Some(generation);
                self.pause_assigned();
                let info = self.halt_info();
                self.send(KafkaEvent::Halted(generation, info))
            }
            Some(Control::Start(generation, positions)) => {
                if self.halted != Some(generation) {
                    tracing::warn!(generation, "resume for an epoch that is not halted");
                    return true;
                }
                let offsets = self.start_at(&positions);
                self.halted = None;
                self.send(KafkaEvent::Started(generation, offsets))
            }
        }
    }

    fn assigned_tpl(&self) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for (i, _) in self.assigned.iter().enumerate().filter(|(_, a)| **a) {
            let (topic, _, partition) = self.map.source(i as u32);
            tpl.add_partition(topic, partition);
        }
        tpl
    }

    fn pause_assigned(&self) {
        let tpl = self.assigned_tpl();
        if tpl.count() > 0 {
            if let Err(e) = self.consumer.pause(&tpl) {
                tracing::warn!(error = %e, "cannot pause partitions");
            }
        }
    }

    /// The assignment with committed offsets and their durable ticks.
    fn halt_info(&self) -> HaltInfo {
        let assigned: Vec<u32> = (0..self.assigned.len() as u32)
            .filter(|&i| self.assigned[i as usize])
            .collect();
        let mut committed = Vec::with_capacity(assigned.len());
        let answer = self
            .consumer
            .committed_offsets(self.assigned_tpl(), Duration::from_secs(10));
        for &i in &assigned {
            let (topic, _, partition) = self.map.source(i);
            let elem = answer
                .as_ref()
                .ok()
                .and_then(|c| c.find_partition(topic, partition));
            let offset = match elem.as_ref().map(|e| e.offset()) {
                Some(Offset::Offset(o)) => Some(o),
                _ => None,
            };
            let tick = elem
                .as_ref()
                .and_then(|e| e.metadata().strip_prefix("durable_tick="))
                .and_then(|t| t.parse().ok());
            committed.push((i, offset, tick));
        }
        if let Err(e) = &answer {
            tracing::warn!(error = %e, "cannot read committed offsets");
        }
        HaltInfo {
            assigned,
            committed,
        }
    }

    /// Seeks every assigned partition to its start and resumes fetching.
    /// Returns the offsets.
    fn start_at(
        &mut self,
        positions: &std::collections::BTreeMap<u32, StartAt>,
    ) -> Vec<(u32, i64)> {
        let info = self.halt_info();
        let committed: std::collections::HashMap<u32, Option<i64>> =
            info.committed.iter().map(|&(i, o, _)| (i, o)).collect();
        let mut offsets = Vec::new();
        for &i in &info.assigned {
            let (topic, _, partition) = self.map.source(i);
            let low = || {
                self.consumer
                    .fetch_watermarks(topic, partition, Duration::from_secs(10))
                    .map(|(low, _)| low)
                    .unwrap_or(0)
            };
            let committed_or_low = committed.get(&i).copied().flatten().unwrap_or_else(low);
            let target = match positions.get(&i).copied().unwrap_or(StartAt::Committed) {
                StartAt::Offset(o) => o,
                StartAt::Committed => committed_or_low,
                StartAt::Time(ms) => {
                    let mut tpl = TopicPartitionList::new();
                    let found = tpl
                        .add_partition_offset(topic, partition, Offset::Offset(ms))
                        .ok()
                        .and_then(|()| {
                            self.consumer
                                .offsets_for_times(tpl, Duration::from_secs(10))
                                .ok()
                        })
                        .and_then(|r| r.find_partition(topic, partition).map(|e| e.offset()));
                    match found {
                        Some(Offset::Offset(o)) => o.min(committed_or_low),
                        // No record that recent: nothing to rewind over.
                        _ => committed_or_low,
                    }
                }
            };
            offsets.push((i, target));
        }
        let mut tpl = TopicPartitionList::new();
        for &(i, o) in &offsets {
            let (topic, _, partition) = self.map.source(i);
            if let Err(e) = tpl.add_partition_offset(topic, partition, Offset::Offset(o)) {
                tracing::warn!(error = %e, "bad start offset");
            }
        }
        if tpl.count() > 0 {
            // A partition whose fetcher is not started yet refuses a seek
            // for a moment: retry (records polled meanwhile are dropped).
            let mut pending = tpl;
            for attempt in 0..50 {
                match self
                    .consumer
                    .seek_partitions(pending.clone(), Duration::from_secs(1))
                {
                    Ok(result) => {
                        let mut failed = TopicPartitionList::new();
                        for e in result.elements() {
                            if let Err(err) = e.error() {
                                tracing::debug!(topic = e.topic(), partition = e.partition(), error = %err, attempt, "seek failed, retrying");
                                let _ = failed.add_partition_offset(
                                    e.topic(),
                                    e.partition(),
                                    e.offset(),
                                );
                            }
                        }
                        if failed.count() == 0 {
                            break;
                        }
                        pending = failed;
                    }
                    Err(e) => tracing::debug!(error = %e, attempt, "seek failed, retrying"),
                }
                let _ = self.consumer.poll(Duration::from_millis(50));
                if attempt == 49 {
                    tracing::error!(
                        partitions = pending.count(),
                        "cannot seek partitions; they start from their fetch position"
                    );
                }
            }
            if let Err(e) = self.consumer.resume(&self.assigned_tpl()) {
                tracing::warn!(error = %e, "cannot resume partitions");
            }
        }
        for &(i, o) in &offsets {
            let i = i as usize;
            self.quiet[i] = Duration::ZERO;
            self.caught_up[i] = false;
            self.next_offset[i] = Some(o);
        }
        tracing::info!(partitions = offsets.len(), ?offsets, "epoch starts");
        offsets
    }

    fn delivered(&mut self, r: &InputRecord) {
        let i = r.partition as usize;
        self.quiet[i] = Duration::ZERO;
        self.caught_up[i] = false;
        self.next_offset[i] = Some(r.offset + 1);
    }

    /// Whether partition `index` has nothing left to deliver: its high
    /// watermark is at the offset after the last delivered record (or, with
    /// none delivered yet, at the group's committed offset or the log
    /// start). A broker round trip, made at most once per idle timeout per
    /// quiet partition.
    fn at_end(&self, index: u32) -> bool {
        let (topic, _, partition) = self.map.source(index);
        let Ok((low, high)) =
            self.consumer
                .fetch_watermarks(topic, partition, Duration::from_secs(5))
        else {
            return false;
        };
        if high <= low {
            return true;
        }
        if let Some(next) = self.next_offset[index as usize] {
            return next >= high;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, partition);
        match self.consumer.committed_offsets(tpl, Duration::from_secs(5)) {
            Ok(c) => matches!(
                c.find_partition(topic, partition).map(|e| e.offset()),
                Some(Offset::Offset(o)) if o >= high
            ),
            Err(_) => false,
        }
    }

    fn shared_context_rebalances(&self) -> Option<Vec<RebalanceNote>> {
        let ctx = self.consumer.context();
        let mut q = ctx.rebalances.lock().ok()?;
        Some(std::mem::take(&mut *q))
    }

    /// Sends, waiting while the channel is full. A short wait does not
    /// poll: librdkafka's bounded prefetch queue then stops fetching by
    /// itself, and nothing is thrown away. A wait longer than
    /// [`PAUSE_AFTER`] pauses every assigned partition (pausing purges
    /// librdkafka's prefetched messages, which are fetched again on resume,
    /// so it is kept for real stalls) and keeps polling, so group
    /// membership and rebalances are served however long the stall.
    /// Returns false when the source is gone or a stop was requested.
    fn send(&mut self, mut event: KafkaEvent) -> bool {
        let mut paused: Option<TopicPartitionList> = None;
        let waiting_since = Instant::now();
        let result = loop {
            match self.events_tx.try_send(event) {
                Ok(()) => break true,
                Err(TrySendError::Disconnected(_)) => break false,
                Err(TrySendError::Full(e)) => {
                    event = e;
                    if self.shared.stop.load(Ordering::Relaxed) {
                        break false;
                    }
                    if waiting_since.elapsed() < PAUSE_AFTER {
                        std::thread::sleep(Duration::from_millis(1));
                        continue;
                    }
                    if paused.is_none() {
                        if let Ok(tpl) = self.consumer.assignment() {
                            if let Err(e) = self.consumer.pause(&tpl) {
                                tracing::warn!(error = %e, "cannot pause partitions");
                            }
                            self.metrics
                                .kafka_pauses
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            paused = Some(tpl);
                        }
                    }
                    // Paused partitions deliver nothing; anything fetched
                    // before the pause took effect goes first into the next
                    // batch (whatever event is waiting here: never dropped,
                    // or its offset would be committed unprocessed).
                    self.commit_pending();
                    if let Some(Ok(m)) = self.consumer.poll(Duration::from_millis(10)) {
                        if let Some(r) = to_record(&self.map, &m) {
                            self.delivered(&r);
                            self.carry.push(r);
                        }
                    }
                }
            }
        };
        if let Some(tpl) = paused {
            if let Err(e) = self.consumer.resume(&tpl) {
                tracing::warn!(error = %e, "cannot resume partitions");
            }
        }
        result
    }

    fn commit_pending(&mut self) {
        self.commit_pending_mode(CommitMode::Async);
    }

    fn commit_pending_mode(&mut self, mode: CommitMode) {
        let pending = match self.shared.commits.lock() {
            Ok(mut c) => std::mem::take(&mut *c),
            Err(_) => return,
        };
        if pending.is_empty() {
            return;
        }
        // Newest offset per partition (a list may not repeat one).
        let pending: std::collections::BTreeMap<u32, i64> =
            pending
                .into_iter()
                .fold(std::collections::BTreeMap::new(), |mut m, (i, o)| {
                    let e = m.entry(i).or_insert(o);
                    *e = (*e).max(o);
                    m
                });
        // Every commit follows a durable tick at least this new: what a
        // rewind after a crash must not publish again.
        let durable = self.shared.durable_tick.load(Ordering::Acquire);
        let mut tpl = TopicPartitionList::new();
        for (index, offset) in pending {
            let (topic, _, partition) = self.map.source(index);
            if let Err(e) = tpl.add_partition_offset(topic, partition, Offset::Offset(offset)) {
                tracing::warn!(error = %e, "bad commit offset");
            }
            if durable != i64::MIN {
                if let Some(mut e) = tpl.find_partition(topic, partition) {
                    e.set_metadata(format!("durable_tick={durable}"));
                }
            }
        }
        if let Err(e) = self.consumer.commit(&tpl, mode) {
            tracing::warn!(error = %e, "offset commit failed");
        }
    }
}

/// A consumed message as a pipeline record (`None`: not an input topic).
/// The Kafka timestamp is the ingest time; a record without one gets the
/// wall clock at consumption.
fn to_record(map: &PartitionMap, m: &rdkafka::message::BorrowedMessage<'_>) -> Option<InputRecord> {
    let index = map.index(m.topic(), m.partition())?;
    let (_, topic, _) = map.source(index);
    Some(InputRecord {
        partition: index,
        offset: m.offset(),
        ingest_time_ms: m.timestamp().to_millis().unwrap_or_else(wall_ms),
        topic,
        payload: m.payload().unwrap_or_default().to_vec(),
    })
}

fn is_fatal(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::error::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(C::Fatal | C::Authentication | C::GroupAuthorizationFailed)
    )
}

fn wall_ms() -> i64 {
    crate::wall_clock::wall_clock_ms()
}

/// One pipeline epoch's view of the consumer ([`Input`]).
pub struct KafkaInput {
    shared: Arc<Shared>,
    idle: Vec<bool>,
    /// Newest ingest time read, and when.
    ingest_clock: Option<(i64, Instant)>,
    /// Where this epoch started each assigned partition.
    start: std::collections::HashMap<u32, i64>,
}

fn set_assigned(shared: &Shared, parts: &[u32], value: bool) {
    shared.assigned.set(parts, value);
    shared
        .metrics
        .assigned_partitions
        .store(shared.assigned.owned().len() as i64, Ordering::Relaxed);
}

impl KafkaInput {
    fn end_epoch(&self) -> Poll {
        tracing::info!("partition assignment changed: restarting the pipeline");
        self.shared.rebalanced.store(true, Ordering::SeqCst);
        Poll::Stop
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
        let event = {
            let rx = self
                .shared
                .events_rx
                .lock()
                .map_err(|_| anyhow::anyhow!("kafka channel poisoned"))?;
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(e) => e,
                Err(RecvTimeoutError::Timeout) => return Ok(Poll::More),
                Err(RecvTimeoutError::Disconnected) => {
                    if self.shared.stop.load(Ordering::Relaxed) {
                        return Ok(Poll::Stop);
                    }
                    anyhow::bail!("kafka polling thread stopped")
                }
            }
        };
        match event {
            KafkaEvent::Records { records, idle } => {
                if let Some(max) = records.iter().map(|r| r.ingest_time_ms).max() {
                    if self.ingest_clock.is_none_or(|(m, _)| max > m) {
                        self.ingest_clock = Some((max, Instant::now()));
                    }
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
            // Of an older epoch (cannot follow this epoch's start).
            KafkaEvent::Halted(..) | KafkaEvent::Started(..) => Ok(Poll::More),
        }
    }

    fn start_offset(&self, partition: u32) -> Option<i64> {
        self.start.get(&partition).copied()
    }

    fn is_idle(&self, partition: u32) -> bool {
        self.idle.get(partition as usize).copied().unwrap_or(true)
    }

    /// The ingest clock, run on by the wall clock: the newest ingest time
    /// seen plus the wall time since it arrived, minus the idle timeout.
    /// Live, that is `wall − idle_timeout`; on a backlog it starts from the
    /// backlog's own time, so old records are never made late by a
    /// wall-clock jump. `None` before the first record (hold).
    fn idle_watermark(&self) -> Option<Watermark> {
        let (max, at) = self.ingest_clock?;
        let timeout = i64::try_from(self.shared.idle_timeout.as_millis()).unwrap_or(i64::MAX);
        let since = i64::try_from(at.elapsed().as_millis()).unwrap_or(i64::MAX);
        Some(Watermark(max.saturating_add(since).saturating_sub(timeout)))
    }

    fn dead_letter(
        &mut self,
        record: &InputRecord,
        reason: Reason,
        detail: &str,
    ) -> anyhow::Result<()> {
        let (topic, _, partition) = self.shared.map.source(record.partition);
        let mut dl = self
            .shared
            .dead_letters
            .lock()
            .map_err(|_| anyhow::anyhow!("dead-letter producer poisoned"))?;
        dl.send(topic, partition, record, reason, detail)?;
        Ok(())
    }

    fn durable_tick(&self) -> Option<Tick> {
        match self.shared.durable_tick.load(Ordering::Acquire) {
            i64::MIN => None,
            t => Some(Tick(t)),
        }
    }

    fn commit(&mut self, offsets: &[(u32, i64)]) -> anyhow::Result<()> {
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
