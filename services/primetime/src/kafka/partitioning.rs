//! Which Kafka partition holds what: Kafka's default partitioner
//! ([`murmur2`], [`partition_for_key`]) and the map between the pipeline's
//! input partitions and Kafka topic-partitions ([`PartitionMap`]).
//!
//! "Partition" means three things in this service; this module keeps two of
//! them apart by type:
//! - a Kafka topic-partition: [`TopicPartition`] (owned) or
//!   [`InputSource`] (borrowed, with the input kind);
//! - the pipeline's input partition: a plain `u32`, `0..PartitionMap::total()`,
//!   driver locations first (`topic_index × P + partition`).
//!
//! (The third, a region's partition, is [`partition_for_key`] of its H3
//! index: a Kafka partition number shared by both input topics.)

use super::{KafkaError, Topics, topic_partitions};

/// A partition of a named topic, as Kafka numbers it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

/// Where a pipeline input partition is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputSource<'a> {
    pub topic: &'a str,
    /// Which input the topic carries.
    pub kind: primetime_proto::Topic,
    /// The Kafka partition within `topic`.
    pub partition: i32,
}

/// Kafka's default partitioner (Java client, librdkafka `murmur2_random`
/// for non-empty keys): `(murmur2(key) & 0x7fffffff) % partitions`.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

/// Kafka's murmur2 (seed `0x9747b28c`), as in the Java client's `Utils`.
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// How pipeline input partitions map to Kafka topic-partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMap {
    pub driver_locations: String,
    pub demand: String,
    /// Partitions per input topic.
    pub per_topic: u32,
}

impl PartitionMap {
    /// Number of pipeline input partitions (both topics).
    pub fn total(&self) -> u32 {
        self.per_topic * 2
    }

    /// The pipeline input partition of `partition` in `topic`, if it is an
    /// input.
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

    /// Topic, input kind and Kafka partition of a pipeline input partition.
    pub fn source(&self, index: u32) -> InputSource<'_> {
        if index < self.per_topic {
            InputSource {
                topic: &self.driver_locations,
                kind: primetime_proto::Topic::DriverLocations,
                partition: index as i32,
            }
        } else {
            InputSource {
                topic: &self.demand,
                kind: primetime_proto::Topic::Demand,
                partition: (index - self.per_topic) as i32,
            }
        }
    }

    /// Reads the input topics' partition counts from the cluster.
    pub fn discover<C: rdkafka::consumer::ConsumerContext, T: rdkafka::consumer::Consumer<C>>(
        consumer: &T,
        topics: &Topics,
    ) -> Result<Self, KafkaError> {
        let count = |topic: &str| topic_partitions(consumer, topic).map(|p| p.len());
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
    fn murmur2_matches_the_java_client() {
        // Kafka's own UtilsTest vectors (signed ints in Java).
        for (key, want) in [
            ("21", -973_932_308_i32),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            ("abc", 479_470_107),
        ] {
            assert_eq!(murmur2(key.as_bytes()) as i32, want, "{key}");
        }
    }

    #[test]
    fn partition_map_round_trips() {
        let m = PartitionMap {
            driver_locations: "d".into(),
            demand: "m".into(),
            per_topic: 3,
        };
        assert_eq!(m.total(), 6);
        for i in 0..6 {
            let s = m.source(i);
            assert_eq!(m.index(s.topic, s.partition), Some(i));
        }
        assert_eq!(m.index("d", 3), None);
        assert_eq!(m.index("x", 0), None);
        assert_eq!(m.index("m", -1), None);
    }

    #[test]
    fn partition_map_puts_driver_locations_first() {
        let m = PartitionMap {
            driver_locations: "d".into(),
            demand: "m".into(),
            per_topic: 3,
        };
        let s = m.source(4);
        assert_eq!(
            (s.topic, s.kind, s.partition),
            ("m", primetime_proto::Topic::Demand, 1)
        );
        assert_eq!(m.source(2).kind, primetime_proto::Topic::DriverLocations);
    }

    #[test]
    fn partition_for_key_is_in_range() {
        for n in [1, 3, 8] {
            for key in ["a", "851f9a7ffffffff", ""] {
                assert!(partition_for_key(key.as_bytes(), n) < n);
            }
        }
        assert_eq!(partition_for_key(b"x", 0), 0, "no partitions acts as one");
    }
}
