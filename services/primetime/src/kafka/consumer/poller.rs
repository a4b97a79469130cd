//! The polling thread: owns the group consumer, turns what it polls into
//! data events for the source, carries out `serve`'s control requests
//! between polls, commits safe offsets, and asks the broker the one
//! question the idleness rules need (is a quiet partition at the end of
//! its log?).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::control::{Committed, ControlError, HaltInfo, Request, Resumed, StartAt, StartOffset};
use super::idleness::Idleness;
use super::{KafkaEvent, Shared, set_assigned};
use crate::kafka::{InputSource, KafkaConfig, KafkaError, PartitionMap, TopicPartition};
use crate::pipeline::InputRecord;

/// Records per channel message.
const BATCH: usize = 4096;

/// How long a full channel is waited on before the partitions are paused.
const PAUSE_AFTER: Duration = Duration::from_secs(1);

/// Seek attempts at an epoch start (a fetcher not started yet refuses one).
const SEEK_ATTEMPTS: u32 = 50;

/// A rebalance as the callback saw it.
#[derive(Debug)]
struct RebalanceNote {
    /// Assigned, else revoked.
    assigned: bool,
    partitions: Vec<TopicPartition>,
}

/// Rebalance callbacks run inside `poll` on the polling thread; they only
/// queue what happened.
#[derive(Default)]
pub(super) struct GroupContext {
    /// Filled by the callback, taken by the same thread after each poll:
    /// never contended.
    rebalances: Mutex<Vec<RebalanceNote>>,
}

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
        let partitions = list
            .elements()
            .iter()
            .map(|e| TopicPartition {
                topic: e.topic().to_owned(),
                partition: e.partition(),
            })
            .collect();
        let note = RebalanceNote {
            assigned,
            partitions,
        };
        match self.rebalances.lock() {
            Ok(mut q) => q.push(note),
            Err(p) => p.into_inner().push(note),
        }
    }

    fn commit_callback(&self, result: rdkafka::error::KafkaResult<()>, _: &TopicPartitionList) {
        if let Err(e) = result {
            tracing::warn!(error = %e, "offset commit failed");
        }
    }
}

/// The group consumer's settings a user may override in `[kafka.client]`
/// (every other one is the service's: offsets, assignment and sessions
/// are part of its correctness).
const FETCH_TUNING: [&str; 6] = [
    "fetch.wait.max.ms",
    "fetch.min.bytes",
    "fetch.max.bytes",
    "max.partition.fetch.bytes",
    "queued.min.messages",
    "queued.max.messages.kbytes",
];

/// The group consumer (not subscribed yet).
pub(super) fn group_consumer(
    config: &KafkaConfig,
) -> Result<BaseConsumer<GroupContext>, KafkaError> {
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
        // Bounded prefetch: librdkafka stops fetching a partition once its
        // queue holds this many messages or this many KiB (32 MiB per
        // partition, the memory bound under overload).
        .set("queued.min.messages", "100000")
        .set("queued.max.messages.kbytes", "32768")
        // Bounded fetches (Kafka's own defaults are 50 MiB / 1 MiB). One
        // fetch per broker is in flight: a hot partition (the default
        // city's partition 0 has 80 % of the records) gets at most
        // `max.partition.fetch.bytes` per round trip. On Apache Kafka 4.1
        // beside the service on 2 cores, a backlog drained at 52 k
        // events/s with 1 MiB (and the 500 ms wait below), 349 k with
        // 8 MiB and 411 k with 16 MiB (BENCHMARKS.md, firehose).
        .set("fetch.max.bytes", "16777216")
        .set("max.partition.fetch.bytes", "16777216")
        // With every other partition at the end of its log and the hot
        // one's queue full, the one fetch in flight asks only for empty
        // partitions, and the broker holds it this long (default 500 ms)
        // while the queue drains: it bounds that stall.
        .set("fetch.wait.max.ms", "50");
    if !config.instance_id.is_empty() {
        cc.set("group.instance.id", &config.instance_id);
    }
    // The fetch and prefetch sizes above suit one broker on the same
    // machine; a user's `[kafka.client]` values for them win.
    for (k, v) in config
        .client
        .iter()
        .filter(|(k, _)| FETCH_TUNING.contains(&k.as_str()))
    {
        cc.set(k, v);
    }
    Ok(cc.create_with_context(GroupContext::default())?)
}

/// Halted between epochs: records polled are dropped.
#[derive(Debug, Clone, Copy)]
struct Halted {
    /// The assignment changed since the halt's reply: the plan `serve` is
    /// making is for the old one.
    replan: bool,
}

pub(super) struct Poller {
    consumer: BaseConsumer<GroupContext>,
    map: PartitionMap,
    events_tx: SyncSender<KafkaEvent>,
    control_rx: Receiver<Request>,
    shared: Arc<Shared>,
    idleness: Idleness,
    /// Offset after the last record delivered, per input partition.
    next_offset: Vec<Option<i64>>,
    assigned: Vec<bool>,
    /// Records polled while waiting to send: the start of the next batch.
    carry: Vec<InputRecord>,
    halted: Option<Halted>,
}

impl Poller {
    pub(super) fn new(
        consumer: BaseConsumer<GroupContext>,
        events_tx: SyncSender<KafkaEvent>,
        control_rx: Receiver<Request>,
        shared: Arc<Shared>,
    ) -> Self {
        let n = shared.map.total() as usize;
        Self {
            consumer,
            map: shared.map.clone(),
            events_tx,
            control_rx,
            idleness: Idleness::new(n, shared.idle_timeout, Instant::now()),
            shared,
            next_offset: vec![None; n],
            assigned: vec![false; n],
            carry: Vec::new(),
            halted: None,
        }
    }

    pub(super) fn run(mut self) {
        let mut batch: Vec<InputRecord> = Vec::with_capacity(BATCH);
        let mut last_idle = vec![true; self.assigned.len()];
        while !self.shared.stop.load(Ordering::Relaxed) {
            self.commit_pending(CommitMode::Async);
            if !self.serve_control(&mut batch) {
                return;
            }
            batch.append(&mut self.carry);
            if self.halted.is_some() {
                // Nothing polled while halted belongs to any epoch.
                batch.clear();
            }
            if let Err(fatal) = self.poll_batch(&mut batch) {
                let _ = self.events_tx.send(KafkaEvent::Fatal(fatal));
                return;
            }
            // Rebalances: flush records first so order is kept.
            let rebalances = self.take_rebalances();
            let idle = self.idle_flags();
            // A halted poller sends nothing: `serve` reads only replies.
            if self.halted.is_none() && (!batch.is_empty() || idle != last_idle) {
                let event = KafkaEvent::Records {
                    records: std::mem::replace(&mut batch, Vec::with_capacity(BATCH)),
                    idle: idle.clone(),
                };
                if !self.send(event) {
                    return;
                }
                last_idle = idle;
            }
            for note in rebalances {
                if !self.rebalance(&note) {
                    return;
                }
            }
        }
        // The last commit waits for the broker's answer.
        self.commit_pending(CommitMode::Sync);
    }

    /// Polls once (waiting briefly), then drains what is already fetched
    /// into `batch`. `Err`: the consumer failed for good.
    fn poll_batch(&mut self, batch: &mut Vec<InputRecord>) -> Result<(), String> {
        let mut wait = Duration::from_millis(20);
        while batch.len() < BATCH {
            match self.consumer.poll(wait) {
                Some(Ok(m)) => {
                    let record = to_record(&self.map, &m);
                    self.take(record, batch);
                }
                Some(Err(e)) if is_fatal(&e) => return Err(e.to_string()),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "kafka poll error");
                    break;
                }
                None => break,
            }
            // Drain what is already fetched without waiting.
            wait = Duration::ZERO;
        }
        Ok(())
    }

    /// A polled record joins the batch, unless halted.
    fn take(&mut self, record: Option<InputRecord>, batch: &mut Vec<InputRecord>) {
        if let Some(r) = record {
            if self.halted.is_none() {
                self.delivered(&r);
                batch.push(r);
            }
        }
    }

    /// Every input partition's idle flag now, asking the broker about
    /// quiet partitions whose end of log is not confirmed yet.
    fn idle_flags(&mut self) -> Vec<bool> {
        let now = Instant::now();
        for i in self.idleness.due_for_end_check(now) {
            // Quiet, but is it at the end of its log? A partition with a
            // backlog is never idle.
            let at_end = self.at_end(i);
            self.idleness.end_of_log(i, at_end, Instant::now());
        }
        self.idleness.flags(Instant::now())
    }

    /// Applies a rebalance and tells the source (or, halted, the shared
    /// assignment directly). False: stop.
    fn rebalance(&mut self, note: &RebalanceNote) -> bool {
        let indices: Vec<u32> = note
            .partitions
            .iter()
            .filter_map(|tp| self.map.index(&tp.topic, tp.partition))
            .collect();
        let now = Instant::now();
        for &i in &indices {
            self.assigned[i as usize] = note.assigned;
            self.idleness.set_assigned(i, note.assigned, now);
            // Consumption restarts from the committed offset.
            self.next_offset[i as usize] = None;
        }
        tracing::info!(assigned = note.assigned, partitions = ?indices, "rebalance");
        if let Some(halted) = &mut self.halted {
            // The plan being made is for the old assignment.
            halted.replan = true;
            set_assigned(&self.shared, &indices, note.assigned);
            self.pause_assigned();
            return true;
        }
        self.send(if note.assigned {
            KafkaEvent::Assigned(indices)
        } else {
            KafkaEvent::Revoked(indices)
        })
    }

    /// Carries out `serve`'s request, if any. False: stop.
    fn serve_control(&mut self, batch: &mut Vec<InputRecord>) -> bool {
        let request = match self.control_rx.try_recv() {
            Ok(r) => r,
            Err(TryRecvError::Empty) => return true,
            Err(TryRecvError::Disconnected) => return false,
        };
        // A reply nobody waits for any more (`serve` stopping) is dropped.
        match request {
            Request::Halt(reply) => {
                batch.clear();
                self.carry.clear();
                self.halted = Some(Halted { replan: false });
                self.pause_assigned();
                let _ = reply.try_send(self.halt_info());
            }
            Request::Resume { positions, reply } => {
                let answer = match self.halted {
                    None => {
                        tracing::warn!("resume for an epoch that is not halted");
                        Err(ControlError::NotHalted)
                    }
                    Some(Halted { replan: true }) => {
                        self.halted = Some(Halted { replan: false });
                        Ok(Resumed::Replan(self.halt_info()))
                    }
                    Some(Halted { replan: false }) => {
                        let offsets = self.start_at(&positions);
                        self.halted = None;
                        Ok(Resumed::Started(offsets))
                    }
                };
                let _ = reply.try_send(answer);
            }
        }
        true
    }

    fn assigned_tpl(&self) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for (i, _) in self.assigned.iter().enumerate().filter(|(_, a)| **a) {
            let s = self.map.source(i as u32);
            tpl.add_partition(s.topic, s.partition);
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
            let s = self.map.source(i);
            let elem = answer
                .as_ref()
                .ok()
                .and_then(|c| c.find_partition(s.topic, s.partition));
            let offset = match elem.as_ref().map(|e| e.offset()) {
                Some(Offset::Offset(o)) => Some(o),
                _ => None,
            };
            let tick = elem
                .as_ref()
                .and_then(|e| e.metadata().strip_prefix("durable_tick="))
                .and_then(|t| t.parse().ok());
            committed.push(Committed::new(i, offset, tick));
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
    fn start_at(&mut self, positions: &BTreeMap<u32, StartAt>) -> Vec<StartOffset> {
        let info = self.halt_info();
        let committed: HashMap<u32, Option<i64>> = info
            .committed
            .iter()
            .map(|c| (c.partition, c.offset))
            .collect();
        let offsets: Vec<StartOffset> = info
            .assigned
            .iter()
            .map(|&i| {
                let at = positions.get(&i).copied().unwrap_or(StartAt::Committed);
                let committed = committed.get(&i).copied().flatten();
                StartOffset {
                    partition: i,
                    offset: self.start_offset(self.map.source(i), at, committed),
                }
            })
            .collect();
        let mut tpl = TopicPartitionList::new();
        for o in &offsets {
            let s = self.map.source(o.partition);
            if let Err(e) = tpl.add_partition_offset(s.topic, s.partition, Offset::Offset(o.offset))
            {
                tracing::warn!(error = %e, "bad start offset");
            }
        }
        if tpl.count() > 0 {
            self.seek(tpl);
            if let Err(e) = self.consumer.resume(&self.assigned_tpl()) {
                tracing::warn!(error = %e, "cannot resume partitions");
            }
        }
        let now = Instant::now();
        for o in &offsets {
            self.idleness.reset(o.partition, now);
            self.next_offset[o.partition as usize] = Some(o.offset);
        }
        tracing::info!(partitions = offsets.len(), ?offsets, "epoch starts");
        offsets
    }

    /// The offset `at` means for one partition (`committed`: the group's
    /// committed offset, if any).
    fn start_offset(&self, s: InputSource<'_>, at: StartAt, committed: Option<i64>) -> i64 {
        let committed_or_low = committed.unwrap_or_else(|| {
            self.consumer
                .fetch_watermarks(s.topic, s.partition, Duration::from_secs(10))
                .map(|(low, _)| low)
                .unwrap_or(0)
        });
        match at {
            StartAt::Offset(o) => o,
            StartAt::Committed => committed_or_low,
            StartAt::Time(ms) => match self.offset_for_time(s, ms) {
                Some(o) => o.min(committed_or_low),
                // No record that recent: nothing to rewind over.
                None => committed_or_low,
            },
        }
    }

    /// The first offset with a timestamp at or after `ms`, if any.
    fn offset_for_time(&self, s: InputSource<'_>, ms: i64) -> Option<i64> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(s.topic, s.partition, Offset::Offset(ms))
            .ok()?;
        let found = self
            .consumer
            .offsets_for_times(tpl, Duration::from_secs(10))
            .ok()?;
        match found.find_partition(s.topic, s.partition)?.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        }
    }

    /// Seeks `tpl`'s partitions to their offsets. A partition whose fetcher
    /// is not started yet refuses a seek for a moment: retried (records
    /// polled meanwhile are dropped; the poller is halted).
    fn seek(&self, tpl: TopicPartitionList) {
        let mut pending = tpl;
        for attempt in 0..SEEK_ATTEMPTS {
            match self
                .consumer
                .seek_partitions(pending.clone(), Duration::from_secs(1))
            {
                Ok(result) => {
                    let mut failed = TopicPartitionList::new();
                    for e in result.elements() {
                        if let Err(err) = e.error() {
                            tracing::debug!(topic = e.topic(), partition = e.partition(), error = %err, attempt, "seek failed, retrying");
                            let _ =
                                failed.add_partition_offset(e.topic(), e.partition(), e.offset());
                        }
                    }
                    if failed.count() == 0 {
                        return;
                    }
                    pending = failed;
                }
                Err(e) => tracing::debug!(error = %e, attempt, "seek failed, retrying"),
            }
            let _ = self.consumer.poll(Duration::from_millis(50));
        }
        tracing::error!(
            partitions = pending.count(),
            "cannot seek partitions; they start from their fetch position"
        );
    }

    fn delivered(&mut self, r: &InputRecord) {
        self.idleness.record(r.partition, Instant::now());
        if let Some(next) = self.next_offset.get_mut(r.partition as usize) {
            *next = Some(r.offset + 1);
        }
    }

    /// Whether input partition `index` has nothing left to deliver: its
    /// high watermark is at the offset after the last delivered record (or,
    /// with none delivered yet, at the group's committed offset or the log
    /// start). A broker round trip, made at most once per idle timeout per
    /// quiet partition.
    fn at_end(&self, index: u32) -> bool {
        let s = self.map.source(index);
        let Ok((low, high)) =
            self.consumer
                .fetch_watermarks(s.topic, s.partition, Duration::from_secs(5))
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
        tpl.add_partition(s.topic, s.partition);
        match self.consumer.committed_offsets(tpl, Duration::from_secs(5)) {
            Ok(c) => matches!(
                c.find_partition(s.topic, s.partition).map(|e| e.offset()),
                Some(Offset::Offset(o)) if o >= high
            ),
            Err(_) => false,
        }
    }

    fn take_rebalances(&self) -> Vec<RebalanceNote> {
        match self.consumer.context().rebalances.lock() {
            Ok(mut q) => std::mem::take(&mut *q),
            Err(_) => Vec::new(),
        }
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
                        paused = self.pause_for_stall();
                    }
                    self.poll_while_paused();
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

    /// Pauses every assigned partition for a stalled source; returns them.
    fn pause_for_stall(&self) -> Option<TopicPartitionList> {
        let tpl = self.consumer.assignment().ok()?;
        if let Err(e) = self.consumer.pause(&tpl) {
            tracing::warn!(error = %e, "cannot pause partitions");
        }
        self.shared
            .metrics
            .kafka_pauses
            .fetch_add(1, Ordering::Relaxed);
        Some(tpl)
    }

    /// One poll while paused. Paused partitions deliver nothing; anything
    /// fetched before the pause took effect goes first into the next batch
    /// (whatever event is waiting: never dropped, or its offset would be
    /// committed unprocessed).
    fn poll_while_paused(&mut self) {
        self.commit_pending(CommitMode::Async);
        if let Some(Ok(m)) = self.consumer.poll(Duration::from_millis(10)) {
            if let Some(r) = to_record(&self.map, &m) {
                self.delivered(&r);
                self.carry.push(r);
            }
        }
    }

    fn commit_pending(&mut self, mode: CommitMode) {
        let pending = match self.shared.commits.lock() {
            Ok(mut c) => std::mem::take(&mut *c),
            Err(_) => return,
        };
        if pending.is_empty() {
            return;
        }
        // Newest offset per partition (a list may not repeat one).
        let pending: BTreeMap<u32, i64> = pending.into_iter().fold(BTreeMap::new(), |mut m, c| {
            let e = m.entry(c.partition).or_insert(c.offset);
            *e = (*e).max(c.offset);
            m
        });
        // Every commit follows a durable tick at least this new: what a
        // rewind after a crash must not publish again.
        let durable = self.shared.durable_tick.load(Ordering::Acquire);
        let mut tpl = TopicPartitionList::new();
        for (index, offset) in pending {
            let s = self.map.source(index);
            if let Err(e) = tpl.add_partition_offset(s.topic, s.partition, Offset::Offset(offset)) {
                tracing::warn!(error = %e, "bad commit offset");
            }
            if durable != i64::MIN {
                if let Some(mut e) = tpl.find_partition(s.topic, s.partition) {
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
fn to_record(map: &PartitionMap, m: &BorrowedMessage<'_>) -> Option<InputRecord> {
    let index = map.index(m.topic(), m.partition())?;
    Some(InputRecord {
        partition: index,
        offset: m.offset(),
        ingest_time_ms: m
            .timestamp()
            .to_millis()
            .unwrap_or_else(crate::wall_clock::wall_clock_ms),
        topic: map.source(index).kind,
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
