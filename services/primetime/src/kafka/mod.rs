//! Kafka in and out (DESIGN §6, §7), on `rdkafka`. This file owns the
//! `[kafka]` config, the adapter's errors and topic administration
//! (creation, partition discovery, the last published tick).
//!
//! - [`consumer`]: one consumer in the group on its own polling thread;
//!   records, idleness and rebalances reach the pipeline's source as data
//!   events over a bounded channel ([`consumer::KafkaInput`]); `serve`
//!   halts and resumes it between epochs with request/reply messages
//!   ([`consumer::KafkaSource`]). Offsets are committed only for records
//!   whose effects are in a durably published tick.
//! - [`partitioning`]: Kafka's murmur2 partitioner and the map between
//!   pipeline input partitions and Kafka topic-partitions.
//! - [`producer`]: producer set-up and delivery counting for every writer,
//!   and dead letters. The prices topic's writer is the price sink,
//!   [`crate::sinks::kafka`]; the simulator publisher is
//!   [`crate::cli::publish`].
//! - [`exchange`]: boundary-cell stats between instances of one group
//!   over the cell-stats topic ([`exchange::KafkaExchange`]).
//! - [`controls`]: the operator-control log on the controls topic
//!   ([`controls::KafkaControls`]), stamped by the broker's append time.
//! - [`price_history`]: the price history restored from the prices topic
//!   at start.
//!
//! Topic layout: the two input topics are keyed by region and must have the
//! same partition count, so that the range assignor hands partition `i` of
//! both to the same instance (a region's supply and demand meet in one
//! process). Input records must be keyed by their region's H3 index (hex
//! string at `region_resolution`) and partitioned with Kafka's default
//! (Java) murmur2 partitioner, so every instance can tell which partition —
//! and so which instance — owns a region ([`partition_for_key`]). Pipeline
//! input partition numbers are `topic_index × P + partition` with driver
//! locations first ([`PartitionMap`]).

pub mod consumer;
pub mod controls;
pub mod exchange;
pub mod partitioning;
pub mod price_history;
pub mod producer;
pub mod quote_audit;

pub use partitioning::{InputSource, PartitionMap, TopicPartition, murmur2, partition_for_key};

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Topic names (DESIGN §6 defaults).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Topics {
    pub driver_locations: String,
    pub demand: String,
    pub prices: String,
    pub dlq: String,
    /// Boundary-cell stats between instances (one partition, kept 1 h).
    pub cell_stats: String,
    /// The quotes' audit trail (issued and redeemed quotes, JSON).
    pub quotes: String,
    /// The operator-control log (one partition, `LogAppendTime`, kept
    /// forever: control ids are positions in it).
    pub controls: String,
}

impl Default for Topics {
    fn default() -> Self {
        Self {
            driver_locations: "primetime.driver-locations.v1".to_owned(),
            demand: "primetime.demand.v1".to_owned(),
            prices: "primetime.prices.v1".to_owned(),
            dlq: "primetime.dlq.v1".to_owned(),
            cell_stats: "primetime.cell-stats.v1".to_owned(),
            quotes: "primetime.quotes.v1".to_owned(),
            controls: "primetime.controls.v1".to_owned(),
        }
    }
}

/// `[kafka]` in the config file. Empty `brokers` = embedded mode (the
/// built-in simulator, no Kafka).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `host:port[,host:port…]`; empty = no Kafka.
    pub brokers: String,
    /// Consumer group: instances in one group split the input partitions.
    pub group_id: String,
    pub topics: Topics,
    /// Create missing topics at start (prices compacted).
    pub create_topics: bool,
    /// Partitions of created input topics (and the dead-letter topic).
    pub input_partitions: i32,
    /// Partitions of a created prices topic.
    pub prices_partitions: i32,
    pub replication_factor: i32,
    /// A partition with no records for this long (wall time, while the
    /// consumer is not paused by backpressure) is idle (DESIGN §3).
    pub idle_timeout_ms: u64,
    /// Consumer group session timeout (≥ 6000 for most brokers).
    pub session_timeout_ms: u32,
    /// Static group membership (`group.instance.id`, KIP-345): an instance
    /// restarted with the same id takes its partitions back at once, with
    /// no rebalance (e.g. the pod name of a StatefulSet). Empty = dynamic
    /// membership: a restart waits for the broker to expire the old member.
    pub instance_id: String,
    /// Record batches buffered between the polling thread and the source;
    /// when full, the consumer pauses its partitions.
    pub channel_batches: usize,
    /// Extra librdkafka properties for every client (e.g. security). The
    /// group consumer's fetch sizes (`fetch.wait.max.ms`, `fetch.min.bytes`,
    /// `fetch.max.bytes`, `max.partition.fetch.bytes`, `queued.min.messages`,
    /// `queued.max.messages.kbytes`) given here replace the service's; its
    /// other settings (offsets, assignment, sessions) cannot be replaced.
    pub client: BTreeMap<String, String>,
    /// How far the broker's clock may lag this host's (plus replication
    /// delay): a tick ending at `E` fires only once the controls topic was
    /// read to a high watermark fetched after `E + controls_skew_ms`
    /// (see [`controls`]).
    pub controls_skew_ms: u64,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: String::new(),
            group_id: "primetime".to_owned(),
            topics: Topics::default(),
            create_topics: false,
            input_partitions: 8,
            prices_partitions: 8,
            replication_factor: 1,
            idle_timeout_ms: 10_000,
            session_timeout_ms: 10_000,
            instance_id: String::new(),
            channel_batches: 16,
            client: BTreeMap::new(),
            controls_skew_ms: 2_000,
        }
    }
}

impl KafkaConfig {
    pub fn enabled(&self) -> bool {
        !self.brokers.trim().is_empty()
    }

    /// Problems, prefixed `kafka.`.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !self.enabled() {
            return p;
        }
        if self.group_id.trim().is_empty() {
            p.push("kafka.group_id: must not be empty".to_owned());
        }
        let t = &self.topics;
        for (name, v) in [
            ("driver_locations", &t.driver_locations),
            ("demand", &t.demand),
            ("prices", &t.prices),
            ("dlq", &t.dlq),
            ("cell_stats", &t.cell_stats),
            ("quotes", &t.quotes),
            ("controls", &t.controls),
        ] {
            if v.trim().is_empty() {
                p.push(format!("kafka.topics.{name}: must not be empty"));
            }
        }
        if t.driver_locations == t.demand {
            p.push("kafka.topics: driver_locations and demand must differ".to_owned());
        }
        for (name, v) in [
            ("input_partitions", self.input_partitions),
            ("prices_partitions", self.prices_partitions),
            ("replication_factor", self.replication_factor),
        ] {
            if v < 1 {
                p.push(format!("kafka.{name}: must be at least 1, got {v}"));
            }
        }
        if self.idle_timeout_ms == 0 {
            p.push("kafka.idle_timeout_ms: must be > 0".to_owned());
        }
        if self.session_timeout_ms < 1000 {
            p.push(format!(
                "kafka.session_timeout_ms: must be at least 1000, got {}",
                self.session_timeout_ms
            ));
        }
        if self.controls_skew_ms > 600_000 {
            p.push(format!(
                "kafka.controls_skew_ms: at most 600000, got {}",
                self.controls_skew_ms
            ));
        }
        if self.channel_batches == 0 {
            p.push("kafka.channel_batches: must be at least 1".to_owned());
        }
        p
    }

    /// Common client settings: brokers plus the user's extra properties.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.brokers.trim());
        c.set("client.id", "primetime");
        for (k, v) in &self.client {
            c.set(k, v);
        }
        c
    }
}

/// Kafka failures the service reports (the binary wraps them in `anyhow`).
#[derive(Debug, Error)]
pub enum KafkaError {
    #[error("kafka client: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error("creating topic {topic}: {error}")]
    CreateTopic { topic: String, error: String },
    #[error("topic {0} does not exist (start with --create-topics, or create it)")]
    MissingTopic(String),
    #[error("{what}: {error}")]
    Io {
        what: &'static str,
        error: std::io::Error,
    },
    #[error("{0} could not be delivered")]
    Delivery(String),
    /// The service stopped before the broker acknowledged these ticks'
    /// prices: they are not durable, no input offset covering them was
    /// committed, and the next start publishes them again.
    #[error(
        "the prices of ticks {first}..={last} were never acknowledged (nothing was committed past them; the next start publishes them)"
    )]
    Unpublished { first: i64, last: i64 },
    #[error(
        "input topics must have the same partition count (co-partitioned by region): {driver_locations} has {a}, {demand} has {b}"
    )]
    NotCoPartitioned {
        driver_locations: String,
        demand: String,
        a: usize,
        b: usize,
    },
}

/// Creates the topics that do not exist yet: inputs and dead letters with
/// `input_partitions`, prices compacted with `prices_partitions`, the
/// one-partition cell-stats and controls topics. Existing topics are left
/// as they are.
pub fn create_topics(config: &KafkaConfig) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = config.client_config().create()?;
    let t = &config.topics;
    let repl = || TopicReplication::Fixed(config.replication_factor);
    let topics = [
        NewTopic::new(&t.driver_locations, config.input_partitions, repl()),
        NewTopic::new(&t.demand, config.input_partitions, repl()),
        NewTopic::new(&t.dlq, config.input_partitions, repl()),
        NewTopic::new(&t.prices, config.prices_partitions, repl()).set("cleanup.policy", "compact"),
        // One partition: a total order of every instance's stats; kept an
        // hour (starting instances read the last ten minutes).
        NewTopic::new(&t.cell_stats, 1, repl())
            .set("cleanup.policy", "delete")
            .set("retention.ms", "3600000"),
        // An audit trail: kept by the broker's retention, never compacted.
        NewTopic::new(&t.quotes, config.input_partitions, repl()).set("cleanup.policy", "delete"),
        // The control log: one partition (one order for every instance),
        // the broker's append time (non-decreasing, one clock: the stamp
        // of every record), never deleted (ids are positions in it).
        NewTopic::new(&t.controls, 1, repl())
            .set("cleanup.policy", "delete")
            .set("retention.ms", "-1")
            .set("message.timestamp.type", "LogAppendTime"),
    ];
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|error| KafkaError::Io {
            what: "creating the admin runtime",
            error,
        })?;
    let results = rt.block_on(admin.create_topics(topics.iter(), &opts))?;
    tracing::debug!(
        asked = topics.len(),
        answered = results.len(),
        "create topics"
    );
    for r in results {
        match r {
            Ok(topic) => tracing::info!(topic = %topic, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaError::CreateTopic {
                    topic,
                    error: code.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// The partition ids of `topic`. A topic created a moment ago may take a
/// few seconds to appear in the metadata, or answer "not leader" while its
/// leader is elected: both are retried for up to 30 s, then the last error
/// is returned.
pub fn topic_partitions<
    C: rdkafka::consumer::ConsumerContext,
    T: rdkafka::consumer::Consumer<C>,
>(
    consumer: &T,
    topic: &str,
) -> Result<Vec<i32>, KafkaError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let err = match consumer.fetch_metadata(Some(topic), Duration::from_secs(10)) {
            Ok(md) => match md.topics().first() {
                Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                    return Ok(t.partitions().iter().map(|p| p.id()).collect());
                }
                _ => KafkaError::MissingTopic(topic.to_owned()),
            },
            Err(e) => e.into(),
        };
        if std::time::Instant::now() >= deadline {
            return Err(err);
        }
        tracing::debug!(topic, error = %err, "topic metadata not ready, retrying");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The newest tick on the prices topic: the last record of every
/// partition, decoded. A rewind must not publish a tick up to this one
/// again (it may have published it from complete state). `None` when the
/// topic is empty or cannot be read within a few seconds.
pub fn last_published_tick(config: &KafkaConfig) -> Option<i64> {
    use prost::Message as _;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let mut cc = config.client_config();
    cc.set("group.id", format!("{}-probe", config.group_id))
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = cc.create().ok()?;
    let topic = &config.topics.prices;
    let mut tpl = rdkafka::TopicPartitionList::new();
    let mut wanted = 0;
    for p in topic_partitions(&consumer, topic).ok()? {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(5))
            .ok()?;
        if high > low {
            tpl.add_partition_offset(topic, p, rdkafka::Offset::Offset(high - 1))
                .ok()?;
            wanted += 1;
        }
    }
    if wanted == 0 {
        return None;
    }
    consumer.assign(&tpl).ok()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (mut seen, mut newest) = (std::collections::HashSet::new(), None::<i64>);
    while seen.len() < wanted && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            seen.insert(m.partition());
            if let Ok(u) = primetime_proto::v1::PriceUpdate::decode(m.payload().unwrap_or_default())
            {
                newest = Some(newest.map_or(u.tick, |n| n.max(u.tick)));
            }
        }
    }
    if seen.len() < wanted {
        tracing::warn!(topic = %topic, "cannot read the last price of every partition");
    }
    newest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_config_has_no_problems_and_enabled_checks_fields() {
        assert!(KafkaConfig::default().problems().is_empty());
        let c = KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            group_id: " ".into(),
            input_partitions: 0,
            ..KafkaConfig::default()
        };
        let p = c.problems().join("\n");
        assert!(p.contains("kafka.group_id"), "{p}");
        assert!(p.contains("kafka.input_partitions"), "{p}");
    }
}
