//! The price history in Kafka mode (issue 17): at start the prices topic
//! (compacted, keyed by cell) is read from its start up to the end it had
//! then into [`crate::history::History::restore_compacted`]; then the same
//! thread keeps tailing it (every partition, every instance's decisions)
//! into [`crate::history::History::record_update`], so `GET
//! /v1/price?at=` and `/v1/cells/{cell}/history` answer for every cell,
//! the cells other instances price included.
//!
//! The topic, not Redis, is the source: Redis holds only each cell's
//! current price, the topic holds every cell's changes (all instances')
//! until compaction removes the older ones — so after a restart a cell's
//! history starts at its oldest record still on the topic (see
//! `restore_compacted`).
//!
//! How far the tail is proved to have read ([`Frontier`]), per input
//! partition: each instance commits its input offsets with its durable
//! tick as metadata (`durable_tick=K`: its prices through tick K are
//! acknowledged by the broker). Each round the tail reads those committed
//! ticks first, then the prices topic's end (high watermarks), then reads
//! up to that end: every price acknowledged before the end was taken —
//! so through K for each input partition — is then in the history, and
//! the partition's frontier moves to K. A cell of that partition is
//! answered up to its frontier (see [`crate::history::Reach`]); later
//! times answer 422 `not_yet_known`, never the last value read. A tail
//! that is behind or cannot read (broker down) leaves the frontier where
//! it was, so answers stop there too. An input partition that gets no
//! records commits nothing new: its cells' frontier waits for its next
//! commit (too cautious, never wrong).
//!
//! Memory: the tail does not commit (its own consumer group, never
//! joined), decodes one record at a time and keeps only the multiplier,
//! tick and model of each; librdkafka's prefetch queue is capped at
//! [`PREFETCH_KBYTES`].

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use primetime_core::Tick;
use primetime_proto::v1::PriceUpdate;
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::{KafkaConfig, KafkaError};
use crate::history::{History, RestoreStats};

/// librdkafka's prefetch queue for the tail (per partition): enough for
/// thousands of 100-byte records per fetch, small next to the history.
const PREFETCH_KBYTES: &str = "4096";

/// A round of the tail after it reached the end: how long it keeps
/// recording before it asks the committed ticks and the end again (a
/// broker round trip per partition, so not on every poll).
const ROUND: Duration = Duration::from_millis(500);

/// How long one committed-offsets request may wait for the coordinator.
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(5);

/// Per input partition, the newest tick through which the prices of
/// whoever owns it are in the history (`i64::MIN`: none proved yet).
/// Written by the tail thread, read by HTTP handlers.
#[derive(Debug)]
pub struct Frontier {
    through: Box<[AtomicI64]>,
}

impl Frontier {
    pub fn new(per_topic: u32) -> Self {
        Self {
            through: (0..per_topic).map(|_| AtomicI64::new(i64::MIN)).collect(),
        }
    }

    /// The tick through which `partition`'s prices are read, if any.
    pub fn through(&self, partition: u32) -> Option<Tick> {
        let t = self
            .through
            .get(partition as usize)?
            .load(Ordering::Acquire);
        (t != i64::MIN).then_some(Tick(t))
    }

    fn advance(&self, durable: &[Option<i64>]) {
        for (slot, d) in self.through.iter().zip(durable) {
            if let Some(d) = d {
                slot.fetch_max(*d, Ordering::AcqRel);
            }
        }
    }

    fn min_through(&self) -> Option<i64> {
        let min = self
            .through
            .iter()
            .map(|t| t.load(Ordering::Acquire))
            .min()?;
        (min != i64::MIN).then_some(min)
    }
}

/// Restores the history from the prices topic, calls `restored` with what
/// was restored, then tails the topic until `stop` is set. Blocking: run
/// it on a thread of its own.
pub fn restore_and_tail(
    config: &KafkaConfig,
    history: &History,
    frontier: &Frontier,
    stop: &AtomicBool,
    restored: impl FnOnce(RestoreStats),
) -> Result<(), KafkaError> {
    let tail = Tail::start(config, frontier.through.len() as u32)?;
    let durable = tail.durable_ticks();
    let marks = tail.high_marks()?;
    let mut restore = history.restore_compacted();
    let complete = tail.read_until(&marks, Duration::ZERO, stop, &mut |u| restore.add(u));
    restored(restore.finish());
    if !complete {
        return Ok(());
    }
    tail.proved(history, frontier, &durable);
    while !stop.load(Ordering::Relaxed) {
        let durable = tail.durable_ticks();
        let marks = match tail.high_marks() {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "price history tail: cannot read the topic's end");
                std::thread::sleep(ROUND);
                continue;
            }
        };
        let record = &mut |u: &PriceUpdate| {
            history.record_update(u);
        };
        if tail.read_until(&marks, ROUND, stop, record) {
            tail.proved(history, frontier, &durable);
        }
    }
    Ok(())
}

/// The tail's two consumers.
struct Tail {
    /// Reads the prices topic; its own group, never joined nor committed.
    prices: BaseConsumer,
    /// Asks the service's group for its committed offsets (and their
    /// durable ticks); never subscribes, so it never joins the group.
    group: BaseConsumer,
    topic: String,
    inputs: [String; 2],
    per_topic: u32,
    /// The last committed-offsets request failed: the next failure is not
    /// logged again (one line per outage, not one per round).
    failing: Cell<bool>,
}

impl Tail {
    /// Both consumers, every prices partition assigned from its start.
    fn start(config: &KafkaConfig, per_topic: u32) -> Result<Self, KafkaError> {
        let topic = config.topics.prices.clone();
        let mut cc = config.client_config();
        cc.set("group.id", format!("{}-history", config.group_id))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("queued.max.messages.kbytes", PREFETCH_KBYTES);
        let prices: BaseConsumer = cc.create()?;
        let mut tpl = TopicPartitionList::new();
        for p in super::topic_partitions(&prices, &topic)? {
            tpl.add_partition_offset(&topic, p, Offset::Beginning)?;
        }
        prices.assign(&tpl)?;
        let mut gc = config.client_config();
        gc.set("group.id", &config.group_id)
            .set("enable.auto.commit", "false");
        Ok(Self {
            prices,
            group: gc.create()?,
            topic,
            inputs: [
                config.topics.driver_locations.clone(),
                config.topics.demand.clone(),
            ],
            per_topic,
            failing: Cell::new(false),
        })
    }

    /// Per input partition, the durable tick its last commit carried (the
    /// newer of the two input topics'); `None` for all when the group
    /// cannot be asked now.
    fn durable_ticks(&self) -> Vec<Option<i64>> {
        let mut durable = vec![None; self.per_topic as usize];
        let mut tpl = TopicPartitionList::new();
        for topic in &self.inputs {
            for p in 0..self.per_topic as i32 {
                tpl.add_partition(topic, p);
            }
        }
        let committed = match self.group.committed_offsets(tpl, COMMITTED_TIMEOUT) {
            Ok(c) => {
                if self.failing.replace(false) {
                    tracing::info!("price history tail: committed offsets read again");
                }
                c
            }
            Err(e) => {
                if !self.failing.replace(true) {
                    tracing::warn!(error = %e, "price history tail: cannot read committed offsets (the frontier waits)");
                }
                return durable;
            }
        };
        for e in committed.elements() {
            let tick = e
                .metadata()
                .strip_prefix("durable_tick=")
                .and_then(|t| t.parse::<i64>().ok());
            if let (Some(slot), Some(t)) = (durable.get_mut(e.partition() as usize), tick) {
                *slot = Some(slot.map_or(t, |s: i64| s.max(t)));
            }
        }
        durable
    }

    /// The prices topic's end now, per partition (next offset).
    fn high_marks(&self) -> Result<HashMap<i32, i64>, KafkaError> {
        let mut marks = HashMap::new();
        for p in super::topic_partitions(&self.prices, &self.topic)? {
            let (_, high) = super::controls::watermarks_retrying(&self.prices, &self.topic, p)?;
            marks.insert(p, high);
        }
        Ok(marks)
    }

    /// Feeds records to `record` until every partition is read up to its
    /// mark and at least `min` has passed; `false` when stopped first.
    fn read_until(
        &self,
        marks: &HashMap<i32, i64>,
        min: Duration,
        stop: &AtomicBool,
        record: &mut dyn FnMut(&PriceUpdate),
    ) -> bool {
        let started = Instant::now();
        let mut behind: HashMap<i32, i64> = marks.clone();
        self.drop_reached(&mut behind);
        while !stop.load(Ordering::Relaxed) {
            if behind.is_empty() && started.elapsed() >= min {
                return true;
            }
            let m = match self.prices.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "reading the prices topic for the history");
                    continue;
                }
                None => {
                    // Idle: positions skip offsets compaction removed.
                    self.drop_reached(&mut behind);
                    continue;
                }
            };
            if let Ok(mut u) = PriceUpdate::decode(m.payload().unwrap_or_default()) {
                // Only the multiplier, tick and model are kept.
                u.explanation = String::new();
                record(&u);
            }
            if behind
                .get(&m.partition())
                .is_some_and(|&end| m.offset() + 1 >= end)
            {
                behind.remove(&m.partition());
            }
        }
        false
    }

    /// Removes the partitions whose position has reached their mark.
    fn drop_reached(&self, behind: &mut HashMap<i32, i64>) {
        let Ok(positions) = self.prices.position() else {
            return;
        };
        behind.retain(|&p, &mut end| {
            let at = match positions.find_partition(&self.topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                // Never fetched yet: at the start, so only an empty
                // partition (end 0 or at its low mark) is reached.
                _ => return end > 0 && !self.empty(p),
            };
            at < end
        });
    }

    fn empty(&self, p: i32) -> bool {
        matches!(
            self.prices
                .fetch_watermarks(&self.topic, p, Duration::from_secs(5)),
            Ok((low, high)) if low >= high
        )
    }

    /// The prices up to `durable` are in the history: move the frontier.
    fn proved(&self, history: &History, frontier: &Frontier, durable: &[Option<i64>]) {
        frontier.advance(durable);
        if let Some(min) = frontier.min_through() {
            // Nothing restored from before: answers start where proved.
            history.cover_from(Tick(min));
        }
    }
}
