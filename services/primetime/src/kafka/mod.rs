//! Kafka in and out (DESIGN §6, §7), on `rdkafka`.
//!
//! - [`consumer`]: one consumer in the group on its own polling thread;
//!   records, idleness and rebalances reach the pipeline's source as typed
//!   events over a bounded channel ([`consumer::KafkaInput`]). Offsets are
//!   committed only for records whose effects are in a durably published
//!   tick.
//! - [`producer`]: the prices topic (idempotent producer on its own thread,
//!   [`producer::KafkaSink`]), dead letters, and the simulator publisher
//!   behind `primetime simulate --kafka`.
//!
//! Topic layout: the two input topics are keyed by region and must have the
//! same partition count, so that the range assignor hands partition `i` of
//! both to the same instance (a region's supply and demand meet in one
//! process). Pipeline partition numbers are `topic_index × P + partition`
//! with driver locations first.

pub mod consumer;
pub mod producer;

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
}

impl Default for Topics {
    fn default() -> Self {
        Self {
            driver_locations: "primetime.driver-locations.v1".to_owned(),
            demand: "primetime.demand.v1".to_owned(),
            prices: "primetime.prices.v1".to_owned(),
            dlq: "primetime.dlq.v1".to_owned(),
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
    /// Record batches buffered between the polling thread and the source;
    /// when full, the consumer pauses its partitions.
    pub channel_batches: usize,
    /// Extra librdkafka properties for every client (e.g. security).
    pub client: BTreeMap<String, String>,
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
            channel_batches: 16,
            client: BTreeMap::new(),
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
/// `input_partitions`, prices compacted with `prices_partitions`. Existing
/// topics are left as they are.
pub fn create_topics(config: &KafkaConfig) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = config.client_config().create()?;
    let t = &config.topics;
    let repl = || TopicReplication::Fixed(config.replication_factor);
    let topics = [
        NewTopic::new(&t.driver_locations, config.input_partitions, repl()),
        NewTopic::new(&t.demand, config.input_partitions, repl()),
        NewTopic::new(&t.dlq, config.input_partitions, repl()),
        NewTopic::new(&t.prices, config.prices_partitions, repl()).set("cleanup.policy", "compact"),
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

/// How pipeline partition numbers map to (topic, Kafka partition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMap {
    pub driver_locations: String,
    pub demand: String,
    /// Partitions per input topic.
    pub per_topic: u32,
}

impl PartitionMap {
    pub fn total(&self) -> u32 {
        self.per_topic * 2
    }

    /// The pipeline partition of `partition` in `topic`, if it is an input.
    pub fn index(&self, topic: &str, partition: i32) -> Option<u32> {
        let p = u32::try_from(partition)
            .ok()
            .filter(|&p| p < self.per_topic)?;
        if topic == self.driver_locations {
            Some(p)
        } else if topic == self.demand {
            Some(self.per_topic + p)
        } else {
            None
        }
    }

    /// Topic name, kind and Kafka partition of a pipeline partition.
    pub fn source(&self, index: u32) -> (&str, primetime_proto::Topic, i32) {
        if index < self.per_topic {
            (
                &self.driver_locations,
                primetime_proto::Topic::DriverLocations,
                index as i32,
            )
        } else {
            (
                &self.demand,
                primetime_proto::Topic::Demand,
                (index - self.per_topic) as i32,
            )
        }
    }

    /// Reads the input topics' partition counts from the cluster.
    pub fn discover<C: rdkafka::consumer::ConsumerContext, T: rdkafka::consumer::Consumer<C>>(
        consumer: &T,
        topics: &Topics,
    ) -> Result<Self, KafkaError> {
        let count = |topic: &str| -> Result<usize, KafkaError> {
            let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
            match md.topics().first() {
                Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                    Ok(t.partitions().len())
                }
                _ => Err(KafkaError::MissingTopic(topic.to_owned())),
            }
        };
        let a = count(&topics.driver_locations)?;
        let b = count(&topics.demand)?;
        if a != b {
            return Err(KafkaError::NotCoPartitioned {
                driver_locations: topics.driver_locations.clone(),
                demand: topics.demand.clone(),
                a,
                b,
            });
        }
        Ok(Self {
            driver_locations: topics.driver_locations.clone(),
            demand: topics.demand.clone(),
            per_topic: a as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_map_round_trips() {
        let m = PartitionMap {
            driver_locations: "d".into(),
            demand: "m".into(),
            per_topic: 3,
        };
        assert_eq!(m.total(), 6);
        for i in 0..6 {
            let (topic, _, p) = m.source(i);
            assert_eq!(m.index(topic, p), Some(i));
        }
        assert_eq!(m.index("d", 3), None);
        assert_eq!(m.index("x", 0), None);
        assert_eq!(m.index("m", -1), None);
    }

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
