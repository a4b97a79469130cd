//! [`BoundaryExchange`] over the cell-stats topic: each instance publishes
//! a `CellStats` message per tick (keyed by instance) and reads everyone
//! else's on a thread of its own.
//!
//! Ownership: a partition belongs to the instance whose stats message most
//! recently listed it (one topic partition, so one total order). An instance
//! that just lost partitions announces its new list with its next message.
//! A partition nobody has claimed yet holds ticks back until someone does.

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

/// One instance's stream of stats (per pipeline epoch).
#[derive(Debug, Default)]
struct Stream {
    /// Ticks up to this one are covered.
    covered: Option<i64>,
    /// Non-empty summaries by tick; a covered tick without an entry had no
    /// boundary cell.
    ticks: BTreeMap<i64, Vec<(CellId, Summary)>>,
}

#[derive(Debug, Default)]
struct State {
    /// Per pipeline partition: the (instance, epoch) that claimed it last.
    claims: Vec<Option<(String, u32)>>,
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
        let tpl = consumer.offsets_for_times(tpl, Duration::from_secs(10))?;
        consumer.assign(&tpl)?;
        let state = Arc::new(Mutex::new(State {
            claims: vec![None; (per_topic * 2) as usize],
            streams: FxHashMap::default(),
        }));
        let (changed_tx, changed_rx) = watch::channel(0u64);
        let stop = Arc::new(AtomicBool::new(false));
        let reader = Reader {
            consumer,
            me: instance.clone(),
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
        for (p, claim) in state.claims.iter().enumerate() {
            if owned.get(p).copied().unwrap_or(false) {
                continue;
            }
            let claim = claim.as_ref()?;
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
        if let Ok(mut state) = self.state.lock() {
            for s in state.streams.values_mut() {
                s.ticks = s.ticks.split_off(&tick.0);
            }
        }
    }
}

struct Reader {
    consumer: BaseConsumer,
    me: String,
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
            if stats.instance == self.me || stats.group != self.group {
                continue;
            }
            self.apply(stats);
            version += 1;
            self.changed_tx.send_replace(version);
        }
    }

    fn apply(&self, stats: v1::CellStats) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let key = (stats.instance, stats.epoch);
        for &p in &stats.partitions {
            if let Some(c) = state.claims.get_mut(p as usize) {
                *c = Some(key.clone());
            }
        }
        let cells: Vec<(CellId, Summary)> = stats
            .cells
            .iter()
            .filter_map(primetime_proto::summary_of)
            .collect();
        let stream = state.streams.entry(key).or_default();
        stream.covered = Some(stream.covered.map_or(stats.tick, |c| c.max(stats.tick)));
        if !cells.is_empty() {
            stream.ticks.insert(stats.tick, cells);
        }
    }
}
