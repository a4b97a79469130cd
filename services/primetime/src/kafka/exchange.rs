//! [`BoundaryExchange`] over the cell-stats topic: each instance publishes
//! a `CellStats` message per tick (keyed by instance) and reads everyone
//! else's on a thread of its own.
//!
//! Ownership: a partition belongs to the instance whose stats message most
//! recently listed it (one topic partition, so one total order). An instance
//! that just lost partitions announces its new list with its next message.
//! A partition nobody has claimed yet holds ticks back until someone does.
//!
//! Hand-overs: a stream that starts from a snapshot at tick `R` covers only
//! the ticks after `R`, so tick `R` (and earlier) of a partition it just
//! claimed is answered by the partition's previous claimant, which computed
//! it — possibly this instance itself in an earlier epoch, so its own
//! streams are read too. Only when no earlier claimant covers the tick
//! does the newest claim answer it (as if it had no boundary cell there).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use primetime_core::{CellId, RegionId, Summary, Tick};
use primetime_proto::v1;
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use rustc_hash::FxHashMap;
use tokio::sync::watch;

use super::consumer::Assignment;
use super::producer::{DeliveryCounter, producer, send_retrying};
use super::{KafkaConfig, KafkaError, partition_for_key};
use crate::pipeline::BoundaryExchange;

/// How far back a starting instance reads the stats topic.
const LOOKBACK: Duration = Duration::from_secs(600);

/// Ticks of stats kept behind the newest fired one: a pipeline epoch that
/// restarts from an older snapshot (after a rebalance) needs the other
/// instances' stats of the ticks it fires again. Sixty 10 s ticks, the
/// [`LOOKBACK`] a starting instance reads; the memory is boundary cells
/// only.
const RETAINED_TICKS: i64 = 60;

/// Claims remembered per partition, newest last: enough for the hand-overs
/// of a few rebalances in a row.
const CLAIM_HISTORY: usize = 8;

/// One instance's stream of stats (per pipeline epoch).
#[derive(Debug, Default)]
struct Stream {
    /// The stream covers the ticks after this one (its first message's
    /// `after_tick`; `None`: every tick before its first message, a fresh
    /// start).
    from: Option<i64>,
    /// Ticks up to this one are covered.
    covered: Option<i64>,
    /// Non-empty summaries by tick; a covered tick without an entry had no
    /// boundary cell.
    ticks: BTreeMap<i64, Vec<(CellId, Summary)>>,
}

#[derive(Debug, Default)]
struct State {
    /// Per pipeline partition: the (instance, epoch)s that claimed it,
    /// newest last.
    claims: Vec<Vec<(String, u32)>>,
    streams: FxHashMap<(String, u32), Stream>,
}

/// See the module docs.
pub struct KafkaExchange {
    instance: String,
    group: String,
    epoch: AtomicU32,
    producer: ThreadedProducer<DeliveryCounter>,
    topic: String,
    per_topic: u32,
    assignment: Assignment,
    state: Arc<Mutex<State>>,
    changed_rx: watch::Receiver<u64>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for KafkaExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaExchange")
            .field("instance", &self.instance)
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl KafkaExchange {
    /// Starts reading the stats topic (from [`LOOKBACK`] ago).
    pub fn start(
        config: &KafkaConfig,
        per_topic: u32,
        assignment: Assignment,
    ) -> Result<Self, KafkaError> {
        let instance = format!(
            "{}-{}-{:x}",
            hostname(),
            std::process::id(),
            crate::wall_clock::wall_clock_ms()
        );
        let topic = config.topics.cell_stats.clone();
        let mut cc = config.client_config();
        cc.set("group.id", format!("primetime-stats-{instance}"))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false");
        let consumer: BaseConsumer = cc.create()?;
        let partitions = super::topic_partitions(&consumer, &topic)?;
        let since = crate::wall_clock::wall_clock_ms() - LOOKBACK.as_millis() as i64;
        let mut tpl = TopicPartitionList::new();
        for &p in &partitions {
            tpl.add_partition_offset(&topic, p, Offset::Offset(since))?;
        }
        let tpl = offsets_for_times_retrying(&consumer, tpl)?;
        consumer.assign(&tpl)?;
        let state = Arc::new(Mutex::new(State {
            claims: vec![Vec::new(); (per_topic * 2) as usize],
            streams: FxHashMap::default(),
        }));
        let (changed_tx, changed_rx) = watch::channel(0u64);
        let stop = Arc::new(AtomicBool::new(false));
        let reader = Reader {
            consumer,
            group: config.group_id.clone(),
            state: Arc::clone(&state),
            changed_tx,
            stop: Arc::clone(&stop),
        };
        let thread = std::thread::Builder::new()
            .name("primetime-kafka-stats".into())
            .spawn(move || reader.run())
            .map_err(|error| KafkaError::Io {
                what: "starting the stats reader",
                error,
            })?;
        tracing::info!(instance = %instance, topic = %topic, "boundary exchange started");
        Ok(Self {
            instance,
            group: config.group_id.clone(),
            epoch: AtomicU32::new(0),
            producer: producer(config, DeliveryCounter::default())?,
            topic,
            per_topic,
            assignment,
            state,
            changed_rx,
            stop,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// A new pipeline epoch (after a rebalance): a new stream.
    pub fn set_epoch(&self, epoch: u32) {
        self.epoch.store(epoch, Ordering::SeqCst);
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Stops the reader thread.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let handle = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = handle {
            let _ = t.join();
        }
        let _ = rdkafka::producer::Producer::flush(&self.producer, Duration::from_secs(5));
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "primetime".to_owned())
}

/// `offsets_for_times`, retried for up to 30 s: a topic created a moment
/// ago answers "not leader" while its leader is elected.
fn offsets_for_times_retrying(
    consumer: &BaseConsumer,
    tpl: TopicPartitionList,
) -> Result<TopicPartitionList, KafkaError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match consumer.offsets_for_times(tpl.clone(), Duration::from_secs(10)) {
            Ok(found) => return Ok(found),
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "stats topic offsets not ready, retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

impl BoundaryExchange for KafkaExchange {
    fn publish(&self, after: Option<Tick>, tick: Tick, cells: &[(CellId, Summary)]) {
        let msg = v1::CellStats {
            instance: self.instance.clone(),
            group: self.group.clone(),
            epoch: self.epoch.load(Ordering::SeqCst),
            partitions: self.assignment.owned(),
            after_tick: after.map(|t| t.0),
            tick: tick.0,
            cells: cells
                .iter()
                .map(|(c, s)| primetime_proto::cell_summary(*c, s))
                .collect(),
        };
        let payload = msg.encode_to_vec();
        // Enqueue only (librdkafka sends from its own thread); a full queue
        // waits briefly, which bounds memory when the broker is down.
        if let Err(e) = send_retrying(
            &self.producer,
            BaseRecord::to(&self.topic)
                .key(&self.instance)
                .payload(&payload),
        ) {
            tracing::error!(error = %e, tick = tick.0, "cannot publish cell stats");
        }
    }

    fn foreign(&self, tick: Tick) -> Option<Vec<(CellId, Summary)>> {
        let owned = self.assignment.flags();
        let state = self.state.lock().ok()?;
        let mut streams: Vec<&(String, u32)> = Vec::new();
        let mut by_partition = Vec::new();
        for (p, claims) in state.claims.iter().enumerate() {
            if owned.get(p).copied().unwrap_or(false) {
                continue;
            }
            let claim = state.answering(claims, tick.0)?;
            by_partition.push((p, claim));
            if !streams.contains(&claim) {
                streams.push(claim);
            }
        }
        let mut cells = Vec::new();
        for key in streams {
            let stream = state.streams.get(key)?;
            if stream.covered.is_none_or(|c| c < tick.0) {
                return None;
            }
            if let Some(c) = stream.ticks.get(&tick.0) {
                cells.extend_from_slice(c);
            }
        }
        tracing::debug!(tick = tick.0, answering = ?by_partition, cells = cells.len(), "foreign stats");
        Some(cells)
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed_rx.clone()
    }

    fn is_foreign(&self, region: RegionId) -> bool {
        let p = partition_for_key(region.to_string().as_bytes(), self.per_topic);
        !self.assignment.is_owned(p)
    }

    fn forget_before(&self, tick: Tick) {
        // A new epoch may restart from a snapshot a few ticks back and ask
        // for those ticks again: keep as many as a starting instance reads.
        let keep_from = tick.0.saturating_sub(RETAINED_TICKS);
        if let Ok(mut state) = self.state.lock() {
            for s in state.streams.values_mut() {
                s.ticks = s.ticks.split_off(&keep_from);
            }
        }
    }
}

impl State {
    /// One stats message: its partitions' newest claim and its stream's
    /// coverage and cells.
    fn apply(&mut self, stats: v1::CellStats) {
        let key = (stats.instance, stats.epoch);
        for &p in &stats.partitions {
            if let Some(claims) = self.claims.get_mut(p as usize) {
                if claims.last() != Some(&key) {
                    claims.retain(|k| *k != key);
                    claims.push(key.clone());
                    if claims.len() > CLAIM_HISTORY {
                        claims.remove(0);
                    }
                }
            }
        }
        let cells: Vec<(CellId, Summary)> = stats
            .cells
            .iter()
            .filter_map(primetime_proto::summary_of)
            .collect();
        let stream = self.streams.entry(key).or_insert_with(|| Stream {
            from: stats.after_tick,
            ..Stream::default()
        });
        stream.covered = Some(stream.covered.map_or(stats.tick, |c| c.max(stats.tick)));
        if !cells.is_empty() {
            stream.ticks.insert(stats.tick, cells);
        }
    }

    /// The claim whose stream answers for a partition at `tick`: the
    /// newest one that covers it or will (it started before `tick`), else
    /// the newest one; `None` while nobody has claimed the partition.
    fn answering<'a>(&self, claims: &'a [(String, u32)], tick: i64) -> Option<&'a (String, u32)> {
        let started_before = |key: &(String, u32)| {
            self.streams
                .get(key)
                .is_some_and(|s| s.from.is_none_or(|f| f < tick))
        };
        claims
            .iter()
            .rev()
            .find(|k| started_before(k))
            .or_else(|| claims.last())
    }
}

struct Reader {
    consumer: BaseConsumer,
    group: String,
    state: Arc<Mutex<State>>,
    changed_tx: watch::Sender<u64>,
    stop: Arc<AtomicBool>,
}

impl Reader {
    fn run(self) {
        let mut version = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            let Some(result) = self.consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let m = match result {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "cell stats poll error");
                    continue;
                }
            };
            let stats = match v1::CellStats::decode(m.payload().unwrap_or_default()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, offset = m.offset(), "bad cell stats message");
                    continue;
                }
            };
            // Its own earlier epochs answer for partitions it handed over
            // (see the module docs); its current one only for partitions
            // it owns, which it never asks about.
            if stats.group != self.group {
                continue;
            }
            self.apply(stats);
            version += 1;
            self.changed_tx.send_replace(version);
        }
    }

    fn apply(&self, stats: v1::CellStats) {
        tracing::debug!(
            instance = %stats.instance,
            epoch = stats.epoch,
            partitions = ?stats.partitions,
            after = ?stats.after_tick,
            tick = stats.tick,
            cells = stats.cells.len(),
            "cell stats read"
        );
        if let Ok(mut state) = self.state.lock() {
            state.apply(stats);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(
        instance: &str,
        epoch: u32,
        partitions: &[u32],
        after: Option<i64>,
        tick: i64,
    ) -> v1::CellStats {
        v1::CellStats {
            instance: instance.into(),
            group: "g".into(),
            epoch,
            partitions: partitions.to_vec(),
            after_tick: after,
            tick,
            cells: Vec::new(),
        }
    }

    fn answering(state: &State, partition: usize, tick: i64) -> Option<(String, u32)> {
        state.answering(&state.claims[partition], tick).cloned()
    }

    #[test]
    fn a_partition_handed_over_at_a_snapshot_is_answered_by_its_previous_claimant_up_to_it() {
        let mut state = State {
            claims: vec![Vec::new(); 4],
            streams: FxHashMap::default(),
        };
        assert_eq!(answering(&state, 2, 10), None, "nobody claimed it yet");
        // b owns partition 2 from the start and runs ahead to tick 12.
        state.apply(stats("b", 1, &[2], None, 10));
        state.apply(stats("b", 1, &[2], Some(10), 12));
        // c takes it over from the snapshot at tick 10: its stream covers
        // ticks after 10 only.
        state.apply(stats("c", 3, &[2, 3], Some(10), 11));
        let b = Some(("b".to_owned(), 1));
        let c = Some(("c".to_owned(), 3));
        assert_eq!(answering(&state, 2, 10), b, "tick 10 is b's");
        assert_eq!(answering(&state, 2, 11), c);
        assert_eq!(
            answering(&state, 2, 12),
            c,
            "the newest claim, once it covers"
        );
        // No earlier claimant for partition 3: the newest claim answers.
        assert_eq!(answering(&state, 3, 10), c);
    }

    #[test]
    fn claims_are_remembered_newest_last_and_bounded() {
        let mut state = State {
            claims: vec![Vec::new(); 1],
            streams: FxHashMap::default(),
        };
        for e in 0..(CLAIM_HISTORY as u32 + 3) {
            state.apply(stats("a", e, &[0], Some(i64::from(e)), i64::from(e) + 1));
            state.apply(stats(
                "a",
                e,
                &[0],
                Some(i64::from(e) + 1),
                i64::from(e) + 2,
            ));
        }
        assert_eq!(state.claims[0].len(), CLAIM_HISTORY);
        assert_eq!(
            state.claims[0].last().map(|k| k.1),
            Some(CLAIM_HISTORY as u32 + 2)
        );
    }
}
