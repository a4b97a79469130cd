//! [`BoundaryExchange`] over the cell-stats topic: each instance publishes
//! a `CellStats` message per tick (keyed by instance) and reads everyone
//! else's on a thread of its own.
//!
//! A stream (one instance's messages in one pipeline epoch) lists the
//! partitions it owns; its cells at tick `t` are the summaries of its
//! cells next to regions it does *not* own. So a stream `S` answers for
//! partition `p` at tick `t`, on behalf of an instance owning `O`, only
//! when all of these hold ([`Stream::answers`]):
//! - `S` claimed `p` (it computed `p`'s cells);
//! - `S` covers `t`: it started before `t` (a stream restored from the
//!   snapshot at `R` first publishes `R` itself) and has published `t`;
//! - `S` owns none of `O`: then every cell of `p` next to a region of `O`
//!   was a boundary cell for `S`, so none is missing.
//!
//! Every such stream holds the same summaries (the pipeline is exact), so
//! any one will do; the newest claim is preferred. When none qualifies the
//! tick waits — whatever order the messages arrive in, and however late
//! this instance's reader catches up with the topic after a rebalance, a
//! stream computed under another ownership (the previous owner's, or this
//! instance's own earlier epoch's) is never read as "no boundary cell
//! here". Only a hand-over that cannot be served exactly (the instances
//! restored different snapshot ticks) waits longer than [`PATIENCE`]; then
//! the nearest claim answers, with a warning (liveness over exactness).

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

/// How long (wall time, liveness only) a tick waits for a stream that can
/// answer it exactly before the nearest claim answers instead: new epochs
/// publish their restored tick within seconds of a rebalance; on 2 cores
/// under a load average of 30 the e2e tests saw ordinary waits for another
/// instance's tick of up to 19 s.
const PATIENCE: Duration = Duration::from_secs(60);

/// One instance's stream of stats (per pipeline epoch).
#[derive(Debug, Default)]
struct Stream {
    /// The stream covers the ticks after this one (its first message's
    /// `after_tick`; `None`: every tick before its first message, a fresh
    /// start).
    from: Option<i64>,
    /// Ticks up to this one are covered.
    covered: Option<i64>,
    /// Every partition the stream listed (its epoch's assignment; a
    /// revocation at the epoch's end only removes some): its boundary
    /// cells are relative to these.
    owned: Vec<u32>,
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
    /// For which tick and since when (wall ms) no exact answer came, since
    /// the last one or the epoch's start; a lock the clock's task takes
    /// once per check (and `serve` between epochs).
    waiting: Mutex<Option<(i64, i64)>>,
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
        let state = Arc::new(Mutex::new(State::new((per_topic * 2) as usize)));
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
            waiting: Mutex::new(None),
        })
    }

    /// A new pipeline epoch (after a rebalance): a new stream, and a new
    /// wait for exact answers.
    pub fn set_epoch(&self, epoch: u32) {
        self.epoch.store(epoch, Ordering::SeqCst);
        if let Ok(mut w) = self.waiting.lock() {
            *w = None;
        }
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

    /// An exact answer came: any wait is over.
    fn waiting_ends(&self) {
        if let Ok(mut w) = self.waiting.lock() {
            if let Some((tick, since)) = w.take() {
                let waited_ms = crate::wall_clock::wall_clock_ms() - since;
                tracing::debug!(tick, waited_ms, "exact boundary stats arrived");
            }
        }
    }

    /// No exact answer for `tick`: whether the wait has lasted longer than
    /// [`PATIENCE`] (it starts now if it had not started).
    fn patience_lost(&self, tick: i64) -> bool {
        let now = crate::wall_clock::wall_clock_ms();
        let Ok(mut w) = self.waiting.lock() else {
            return false;
        };
        let (_, since) = *w.get_or_insert((tick, now));
        now - since > PATIENCE.as_millis() as i64
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
        let answer = match state.exact_answer(&owned, tick.0) {
            Some(cells) => {
                self.waiting_ends();
                cells
            }
            None if self.patience_lost(tick.0) => {
                let (cells, streams) = state.nearest_answer(&owned, tick.0)?;
                tracing::warn!(
                    tick = tick.0,
                    streams = ?streams,
                    "no exact boundary stats after a hand-over: the nearest claims answer \
                     (ring features may differ from an uninterrupted run)"
                );
                cells
            }
            None => return None,
        };
        Some(answer)
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

impl Stream {
    /// See the module docs: `self` answers at `tick` for an instance owning
    /// `asking` (pipeline partition flags).
    fn answers(&self, tick: i64, asking: &[bool]) -> bool {
        self.from.is_none_or(|f| f < tick)
            && self.covered.is_some_and(|c| c >= tick)
            && !self
                .owned
                .iter()
                .any(|&p| asking.get(p as usize).copied().unwrap_or(false))
    }
}

/// Which stream answers which partition (logs).
type Answering<'a> = Vec<(usize, &'a (String, u32))>;

impl State {
    fn new(partitions: usize) -> Self {
        Self {
            claims: vec![Vec::new(); partitions],
            streams: FxHashMap::default(),
        }
    }

    /// One stats message: its partitions' newest claim and its stream's
    /// coverage, ownership and cells.
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
        for p in stats.partitions {
            if let Err(i) = stream.owned.binary_search(&p) {
                stream.owned.insert(i, p);
            }
        }
        stream.covered = Some(stream.covered.map_or(stats.tick, |c| c.max(stats.tick)));
        if !cells.is_empty() {
            stream.ticks.insert(stats.tick, cells);
        }
    }

    /// The newest claim of `partition` that answers exactly at `tick` for
    /// an instance owning `asking`; `None`: wait.
    fn answering(&self, partition: usize, tick: i64, asking: &[bool]) -> Option<&(String, u32)> {
        self.claims.get(partition)?.iter().rev().find(|k| {
            self.streams
                .get(*k)
                .is_some_and(|s| s.answers(tick, asking))
        })
    }

    /// Every partition not in `asking`, answered exactly at `tick`; `None`
    /// while one is not.
    fn exact_answer(&self, asking: &[bool], tick: i64) -> Option<Vec<(CellId, Summary)>> {
        let mut by_partition: Answering<'_> = Vec::new();
        for p in 0..self.claims.len() {
            if !asking.get(p).copied().unwrap_or(false) {
                by_partition.push((p, self.answering(p, tick, asking)?));
            }
        }
        let cells = self.cells_of(&by_partition, tick);
        tracing::debug!(tick, answering = ?by_partition, cells = cells.len(), "foreign stats");
        Some(cells)
    }

    /// After [`PATIENCE`]: the exact answer where there is one, else the
    /// newest claim that started before `tick` and covers it (whatever it
    /// owns), else the newest claim that covers it; `None` while a
    /// partition has no covering claim at all.
    fn nearest_answer(
        &self,
        asking: &[bool],
        tick: i64,
    ) -> Option<(Vec<(CellId, Summary)>, Answering<'_>)> {
        let mut by_partition: Answering<'_> = Vec::new();
        for (p, claims) in self.claims.iter().enumerate() {
            if asking.get(p).copied().unwrap_or(false) {
                continue;
            }
            let covering = |k: &&(String, u32), started: bool| {
                self.streams.get(*k).is_some_and(|s| {
                    s.covered.is_some_and(|c| c >= tick)
                        && (!started || s.from.is_none_or(|f| f < tick))
                })
            };
            let claim = self
                .answering(p, tick, asking)
                .or_else(|| claims.iter().rev().find(|k| covering(k, true)))
                .or_else(|| claims.iter().rev().find(|k| covering(k, false)))?;
            by_partition.push((p, claim));
        }
        let cells = self.cells_of(&by_partition, tick);
        Some((cells, by_partition))
    }

    /// The cells the answering streams published at `tick` (each stream
    /// once).
    fn cells_of(&self, by_partition: &Answering<'_>, tick: i64) -> Vec<(CellId, Summary)> {
        let mut seen: Vec<&(String, u32)> = Vec::new();
        let mut cells = Vec::new();
        for &(_, key) in by_partition {
            if seen.contains(&key) {
                continue;
            }
            seen.push(key);
            if let Some(c) = self.streams.get(key).and_then(|s| s.ticks.get(&tick)) {
                cells.extend_from_slice(c);
            }
        }
        cells
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

    /// Seven distinct H3 cells (a cell and its ring), as test cell ids.
    fn cells() -> Vec<CellId> {
        let centre = h3o::CellIndex::try_from(0x0882_8308_2adf_ffff_u64).expect("an H3 cell");
        centre
            .grid_disk::<Vec<_>>(1)
            .into_iter()
            .map(|c| CellId::from_u64(u64::from(c)).expect("an H3 cell"))
            .collect()
    }

    fn summary(cell: CellId, supply: u32) -> v1::CellSummary {
        primetime_proto::cell_summary(
            cell,
            &Summary {
                supply,
                ..Summary::default()
            },
        )
    }

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

    fn with_cells(mut s: v1::CellStats, cells: &[(CellId, u32)]) -> v1::CellStats {
        s.cells = cells.iter().map(|&(c, n)| summary(c, n)).collect();
        s
    }

    fn flags(owned: &[usize], n: usize) -> Vec<bool> {
        (0..n).map(|p| owned.contains(&p)).collect()
    }

    fn answering(
        state: &State,
        partition: usize,
        tick: i64,
        asking: &[bool],
    ) -> Option<(String, u32)> {
        state.answering(partition, tick, asking).cloned()
    }

    fn sorted(mut cells: Vec<(CellId, Summary)>) -> Vec<(CellId, u32)> {
        cells.sort_unstable_by_key(|(c, _)| *c);
        cells.into_iter().map(|(c, s)| (c, s.supply)).collect()
    }

    #[test]
    fn a_partition_handed_over_at_a_snapshot_is_answered_by_its_previous_claimant_up_to_it() {
        let mut state = State::new(4);
        // d owns partition 0 and asks about the others.
        let d = flags(&[0], 4);
        assert_eq!(answering(&state, 2, 10, &d), None, "nobody claimed it yet");
        // b owns partition 2 from the start and reaches tick 10.
        state.apply(stats("b", 1, &[2], None, 9));
        state.apply(stats("b", 1, &[2], Some(9), 10));
        // c takes it over from the snapshot at tick 10: its stream starts
        // with the restored tick 10 itself, then 11.
        state.apply(stats("c", 3, &[2, 3], Some(9), 10));
        state.apply(stats("c", 3, &[2, 3], Some(10), 11));
        let b = Some(("b".to_owned(), 1));
        let c = Some(("c".to_owned(), 3));
        assert_eq!(answering(&state, 2, 9, &d), b, "tick 9 is b's");
        assert_eq!(
            answering(&state, 2, 10, &d),
            c,
            "the newest claim that covers"
        );
        assert_eq!(answering(&state, 2, 11, &d), c);
        assert_eq!(answering(&state, 2, 12, &d), None, "nobody covers 12 yet");
        assert_eq!(answering(&state, 3, 10, &d), c);
        assert_eq!(
            answering(&state, 3, 9, &d),
            None,
            "c's stream starts after 9 and nobody else claimed 3: wait, never 'no cells'"
        );
    }

    /// Before a rebalance a owns {0, 1} and b {2, 3}; after it, a owns
    /// {0}, b {2} and c {1, 3}, all restored from the snapshot at tick 10.
    /// The old streams' tick-10 cells are relative to the old ownership
    /// (a never listed its cells next to partition 1's regions: they were
    /// its own), so c must be answered by the new streams. Whatever order
    /// c's reader sees the messages in, every answer is the exact one or
    /// "wait".
    #[test]
    fn whatever_order_the_messages_arrive_in_a_hand_over_is_answered_exactly_or_not_yet() {
        let cell = cells();
        let (a0, a0_next_to_1, b2, b2_next_to_3) = (cell[0], cell[1], cell[2], cell[3]);
        let messages = [
            with_cells(stats("a", 1, &[0, 1], None, 10), &[(a0, 5)]),
            with_cells(stats("b", 1, &[2, 3], None, 10), &[(b2, 7)]),
            with_cells(
                stats("a", 2, &[0], Some(9), 10),
                &[(a0, 5), (a0_next_to_1, 6)],
            ),
            with_cells(
                stats("b", 2, &[2], Some(9), 10),
                &[(b2, 7), (b2_next_to_3, 8)],
            ),
            // c's own new stream (it never asks about its own partitions).
            stats("c", 1, &[1, 3], Some(9), 10),
        ];
        let mut exact = vec![(a0, 5), (a0_next_to_1, 6), (b2, 7), (b2_next_to_3, 8)];
        exact.sort_unstable_by_key(|(c, _)| *c);
        let c_owns = flags(&[1, 3], 4);
        let mut orders = 0;
        for order in permutations(messages.len()) {
            let mut state = State::new(4);
            for &i in &order {
                state.apply(messages[i].clone());
                if let Some(got) = state.exact_answer(&c_owns, 10) {
                    assert_eq!(sorted(got), exact, "order {order:?}, after message {i}");
                }
            }
            let got = state.exact_answer(&c_owns, 10).map(sorted);
            assert_eq!(
                got,
                Some(exact.clone()),
                "order {order:?}, every message read"
            );
            orders += 1;
        }
        assert_eq!(orders, 120);
    }

    /// A previous owner whose ownership does not touch the asker's answers
    /// at once (its cells next to the asker's regions were boundary cells).
    #[test]
    fn a_previous_owner_owning_none_of_the_askers_partitions_answers_exactly() {
        let cell = cells();
        let mut state = State::new(4);
        state.apply(with_cells(
            stats("b", 1, &[2, 3], None, 10),
            &[(cell[2], 7)],
        ));
        let a_owns = flags(&[0, 1], 4);
        assert_eq!(
            state.exact_answer(&a_owns, 10).map(sorted),
            Some(vec![(cell[2], 7)])
        );
        // b's own later epoch (restored at 10, now owning 2 only) too.
        state.apply(with_cells(
            stats("b", 2, &[2], Some(9), 10),
            &[(cell[2], 7)],
        ));
        state.apply(with_cells(stats("e", 1, &[3], Some(9), 10), &[]));
        assert_eq!(answering(&state, 2, 10, &a_owns), Some(("b".to_owned(), 2)));
        assert_eq!(answering(&state, 3, 10, &a_owns), Some(("e".to_owned(), 1)));
    }

    /// After [`PATIENCE`] a hand-over nobody can answer exactly (the new
    /// owner restored a newer snapshot) takes the nearest claim.
    #[test]
    fn the_nearest_claim_answers_what_no_stream_can_answer_exactly() {
        let cell = cells();
        let mut state = State::new(4);
        state.apply(with_cells(
            stats("a", 1, &[0, 1], None, 10),
            &[(cell[0], 5)],
        ));
        state.apply(stats("a", 2, &[0], Some(12), 13));
        let c_owns = flags(&[1, 2, 3], 4);
        assert_eq!(state.exact_answer(&c_owns, 10), None);
        let (cells, streams) = state.nearest_answer(&c_owns, 10).expect("a covering claim");
        assert_eq!(sorted(cells), vec![(cell[0], 5)]);
        assert_eq!(streams, vec![(0, &("a".to_owned(), 1))]);
        // Nobody ever covers 11 exactly: the newest claim, with no cells.
        let (cells, streams) = state.nearest_answer(&c_owns, 11).expect("a claim");
        assert!(cells.is_empty());
        assert_eq!(streams, vec![(0, &("a".to_owned(), 2))]);
        // A partition nobody claimed still waits.
        let b_owns = flags(&[2], 4);
        assert!(
            state.nearest_answer(&b_owns, 10).is_none(),
            "3 is unclaimed"
        );
    }

    #[test]
    fn claims_are_remembered_newest_last_and_bounded() {
        let mut state = State::new(1);
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

    /// Every order of `0..n` (Heap's algorithm).
    fn permutations(n: usize) -> Vec<Vec<usize>> {
        fn heap(k: usize, items: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
            if k <= 1 {
                out.push(items.clone());
                return;
            }
            for i in 0..k {
                heap(k - 1, items, out);
                let j = if k % 2 == 0 { i } else { 0 };
                items.swap(j, k - 1);
            }
        }
        let mut out = Vec::new();
        heap(n, &mut (0..n).collect(), &mut out);
        out
    }
}
