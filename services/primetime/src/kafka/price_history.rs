//! The price history's restore in Kafka mode (issue 17): at start, the
//! prices topic (compacted, keyed by cell) is read from its start up to
//! the end it had then, and every `PriceUpdate` goes into
//! [`crate::history::History::restore_compacted`], so `GET /v1/price?at=`
//! and `/v1/cells/{cell}/history` answer for times before the restart.
//!
//! The topic, not Redis, is the source: Redis holds only each cell's
//! current price, the topic holds every cell's changes (all instances')
//! until compaction removes the older ones — so after a restart a cell's
//! history starts at its oldest record still on the topic (see
//! `restore_compacted`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use primetime_proto::v1::PriceUpdate;
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::{KafkaConfig, KafkaError};
use crate::history::{History, RestoreStats};

/// Reads the prices topic into `history`; returns what was restored.
/// Stops early (restoring what it read) when `stop` is set. Blocking.
pub fn restore_history(
    config: &KafkaConfig,
    history: &History,
    stop: &AtomicBool,
) -> Result<RestoreStats, KafkaError> {
    let topic = &config.topics.prices;
    let mut cc = config.client_config();
    cc.set("group.id", format!("{}-history", config.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    let consumer: BaseConsumer = cc.create()?;
    let mut tpl = TopicPartitionList::new();
    // Per partition: the offset of the last record to read.
    let mut last = std::collections::HashMap::new();
    for p in super::topic_partitions(&consumer, topic)? {
        let (low, high) = super::controls::watermarks_retrying(&consumer, topic, p)?;
        if high > low {
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
            last.insert(p, high - 1);
        }
    }
    let mut restore = history.restore_compacted();
    if !last.is_empty() {
        consumer.assign(&tpl)?;
    }
    while !last.is_empty() && !stop.load(Ordering::Relaxed) {
        let m = match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "reading the prices topic for the history");
                continue;
            }
            None => continue,
        };
        let (p, offset) = (m.partition(), m.offset());
        if let Ok(mut u) = PriceUpdate::decode(m.payload().unwrap_or_default()) {
            // Only the multiplier, tick and model are kept.
            u.explanation = String::new();
            restore.add(&u);
        }
        if last.get(&p).is_some_and(|&end| offset >= end) {
            last.remove(&p);
        }
    }
    Ok(restore.finish())
}
