//! `primetime simulate --kafka`: publishes the simulator into the input
//! topics, keyed and partitioned as the service expects (a dev tool, not
//! part of the Kafka adapter).

use std::time::{Duration, Instant};

use rdkafka::producer::{BaseRecord, Producer};

use crate::kafka::KafkaConfig;
use crate::kafka::producer::{DeliveryCounter, producer, send_retrying};

/// What [`publish_simulation`] did.
#[derive(Debug, Clone, Copy)]
pub struct PublishSummary {
    pub records: u64,
    pub seconds: f64,
}

/// Publishes `minutes` of the simulator into the input topics, keyed by
/// region (its H3 index), Kafka timestamp = the simulator's ingest time.
/// `rate`: records per second (None = as fast as the broker takes them).
pub fn publish_simulation(
    config: &KafkaConfig,
    sim_config: primetime_sim::SimConfig,
    minutes: u32,
    rate: Option<f64>,
) -> anyhow::Result<PublishSummary> {
    // One sim partition per region, so each record knows its region.
    let probe = primetime_sim::Simulator::new(sim_config.clone())
        .map_err(|e| anyhow::anyhow!("simulator: {e}"))?;
    let regions: Vec<String> = probe.regions().iter().map(ToString::to_string).collect();
    let mut sim = primetime_sim::Simulator::new(primetime_sim::SimConfig {
        partitions: regions.len().max(1) as u32,
        ..sim_config
    })
    .map_err(|e| anyhow::anyhow!("simulator: {e}"))?;
    let counter = DeliveryCounter::default();
    let producer = producer(config, counter.clone())?;
    let end_ms = sim.now_ms() + i64::from(minutes) * 60_000;
    let started = Instant::now();
    let mut buf = Vec::new();
    let mut records = 0u64;
    while sim.now_ms() < end_ms {
        buf.clear();
        sim.advance_to((sim.now_ms() + 1_000).min(end_ms), &mut buf);
        for r in &buf {
            let topic = match r.topic {
                primetime_proto::Topic::DriverLocations => &config.topics.driver_locations,
                primetime_proto::Topic::Demand => &config.topics.demand,
            };
            let key = regions.get(r.partition as usize).map_or("", String::as_str);
            send_retrying(
                &producer,
                BaseRecord::to(topic)
                    .key(key)
                    .payload(&r.payload)
                    .timestamp(r.ingest_time_ms),
            )?;
            records += 1;
            if let Some(rate) = rate {
                let due = records as f64 / rate;
                let ahead = due - started.elapsed().as_secs_f64();
                if ahead > 0.001 {
                    std::thread::sleep(Duration::from_secs_f64(ahead));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120))?;
    if counter.failures() > 0 {
        anyhow::bail!("{} records could not be delivered", counter.failures());
    }
    Ok(PublishSummary {
        records,
        seconds: started.elapsed().as_secs_f64(),
    })
}
