//! Shared by the end-to-end tests: topics, the service config, publishing
//! a simulated noisy log, the reference engine on what the broker holds,
//! and reading the prices and dead-letter topics back.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use primetime_core::{Engine, IngestTime, Reason};
use primetime_e2e::{Broker, Record, read_topic, repo_root, unique};
use prost::Message as _;

/// (cell, tick) → (multiplier, model version, explanation JSON).
pub type Decisions = BTreeMap<(String, i64), (f64, String, String)>;

pub const PARTITIONS: i32 = 4;

pub struct Topics {
    pub drivers: String,
    pub demand: String,
    pub prices: String,
    pub dlq: String,
    pub stats: String,
    pub quotes: String,
}

impl Topics {
    pub fn new() -> Self {
        let p = unique("e2e");
        Self {
            drivers: format!("{p}.drivers"),
            demand: format!("{p}.demand"),
            prices: format!("{p}.prices"),
            dlq: format!("{p}.dlq"),
            stats: format!("{p}.cell-stats"),
            quotes: format!("{p}.quotes"),
        }
    }
}

/// A service config for these topics: a small noisy city whose `minutes`
/// end 30 s ago (a backlog the service catches up on).
pub fn write_config(
    dir: &Path,
    brokers: &str,
    topics: &Topics,
    group: &str,
    minutes: u32,
    idle_timeout_ms: u64,
) -> PathBuf {
    let start_ms = (primetime::wall_clock::wall_clock_ms() - i64::from(minutes) * 60_000 - 30_000)
        / 1000
        * 1000;
    let text = format!(
        r#"shards = 2
[kafka]
brokers = "{brokers}"
group_id = "{group}"
idle_timeout_ms = {idle_timeout_ms}
session_timeout_ms = 6000
input_partitions = {PARTITIONS}
prices_partitions = 2
[kafka.topics]
driver_locations = "{}"
demand = "{}"
prices = "{}"
dlq = "{}"
cell_stats = "{}"
quotes = "{}"
[sim]
start_ms = {start_ms}
drivers = 800
demand_per_s = 4.0
[sim.noise]
duplicate = 0.02
out_of_order = 0.05
late = 0.02
bad_clock = 0.01
malformed = 0.01
[sim.stadium]
lat = 37.7786
lng = -122.3893
starts_after_ms = 60000
duration_ms = 240000
riders = 3000
"#,
        topics.drivers, topics.demand, topics.prices, topics.dlq, topics.stats, topics.quotes
    );
    let path = dir.join("primetime.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

pub fn publish(broker: &Broker, config: &Path, minutes: u32) {
    let status = std::process::Command::new(primetime_e2e::service_binary())
        .args(["simulate", "--config"])
        .arg(config)
        .args(["--kafka", &broker.addr, "--create-topics", "--minutes"])
        .arg(minutes.to_string())
        .current_dir(repo_root())
        .env("PRIMETIME_LOG", "warn")
        .status()
        .expect("run primetime simulate");
    assert!(status.success(), "primetime simulate --kafka failed");
}

/// (topic, partition, offset) → reason, of every rejected record but
/// duplicates; and the reference decisions as (cell, tick) → update.
pub struct Reference {
    pub dead: BTreeMap<(String, i32, i64), String>,
    pub decisions: BTreeMap<(String, i64), (f64, String, String)>,
    pub rejected: BTreeMap<String, u64>,
    /// Every tick up to this one holds data of some partition: once the
    /// offsets are committed to the end, its decisions are all durable.
    pub last_data_tick: i64,
}

pub fn reference(config: &Path, topics: &Topics, inputs: &[(String, Vec<Record>)]) -> Reference {
    let service =
        primetime::config::ServiceConfig::load(Some(config), &Default::default()).expect("config");
    let model = primetime_model::load(&repo_root().join("models/primetime-v1.onnx"))
        .expect("the model loads");
    let mut engine =
        Engine::new(service.core.clone(), 2 * PARTITIONS as u32, 1, model).expect("engine");
    let mut dead = BTreeMap::new();
    let mut rejected = BTreeMap::new();
    for (ti, (topic, records)) in inputs.iter().enumerate() {
        let kind = if *topic == topics.drivers {
            primetime_proto::Topic::DriverLocations
        } else {
            primetime_proto::Topic::Demand
        };
        for r in records {
            let partition = ti as u32 * PARTITIONS as u32 + r.partition as u32;
            let reason = match primetime_proto::decode(kind, &r.payload) {
                Ok(record) => engine
                    .push(
                        partition,
                        r.offset,
                        IngestTime(r.timestamp.expect("timestamp")),
                        &record,
                    )
                    .err(),
                Err(_) => {
                    engine.push_malformed(partition, r.offset);
                    Some(Reason::Malformed)
                }
            };
            if let Some(reason) = reason {
                *rejected.entry(reason.as_str().to_owned()).or_default() += 1;
                if reason != Reason::Duplicate {
                    dead.insert(
                        (topic.clone(), r.partition, r.offset),
                        reason.as_str().to_owned(),
                    );
                }
            }
        }
    }
    let ooo = service.core.max_out_of_orderness_ms;
    let last_data_tick = (0..2 * PARTITIONS as u32)
        .filter_map(|p| engine.partition(p))
        .filter(|p| p.watermark().0 > i64::MIN)
        .map(|p| (p.watermark().0 + ooo).div_euclid(service.core.bucket_ms))
        .max()
        .expect("some data");
    engine.finish();
    let decisions = engine
        .take_decisions()
        .into_iter()
        .map(|d| {
            (
                (d.cell.to_string(), d.tick.0),
                (
                    d.multiplier.value(),
                    d.model_version.to_string(),
                    serde_json::to_string(&d.explanation).expect("json"),
                ),
            )
        })
        .filter(|((_, tick), _)| *tick <= last_data_tick)
        .collect();
    Reference {
        dead,
        decisions,
        rejected,
        last_data_tick,
    }
}

/// The latest update per (cell, tick) on the prices topic.
pub fn published(broker: &Broker, topic: &str) -> BTreeMap<(String, i64), (f64, String, String)> {
    let mut out = BTreeMap::new();
    for r in read_topic(&broker.addr, topic) {
        let u =
            primetime_proto::v1::PriceUpdate::decode(r.payload.as_slice()).expect("a PriceUpdate");
        assert_eq!(r.key.as_deref(), Some(u.cell.as_bytes()), "keyed by cell");
        let header = r.headers.iter().find(|(k, _)| k == "model-version");
        assert_eq!(
            header.map(|(_, v)| v.as_str()),
            Some(u.model_version.as_str()),
            "model version header"
        );
        out.insert(
            (u.cell, u.tick),
            (u.multiplier, u.model_version, u.explanation),
        );
    }
    out
}

pub fn dead_letters(
    broker: &Broker,
    topic: &str,
    inputs: &[(String, Vec<Record>)],
) -> BTreeMap<(String, i32, i64), String> {
    let mut out = BTreeMap::new();
    for r in read_topic(&broker.addr, topic) {
        let h = |k: &str| {
            r.headers
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("dead letter without header {k}"))
        };
        let key = (
            h("source-topic"),
            h("source-partition").parse::<i32>().expect("partition"),
            h("source-offset").parse::<i64>().expect("offset"),
        );
        // The original payload, byte for byte.
        let original = inputs
            .iter()
            .find(|(t, _)| *t == key.0)
            .and_then(|(_, rs)| {
                rs.iter()
                    .find(|x| x.partition == key.1 && x.offset == key.2)
            })
            .expect("dead letter points at an input record");
        assert_eq!(r.payload, original.payload, "dead letter payload");
        assert!(
            out.insert(key.clone(), h("reason")).is_none(),
            "dead letter {key:?} written twice"
        );
    }
    out
}

/// Starts `primetime simulate --kafka` publishing `minutes` at `rate`
/// records per second, in the background.
pub fn publish_live(
    broker: &Broker,
    config: &Path,
    minutes: u32,
    rate: u32,
) -> std::process::Child {
    std::process::Command::new(primetime_e2e::service_binary())
        .args(["simulate", "--config"])
        .arg(config)
        .args(["--kafka", &broker.addr, "--create-topics", "--minutes"])
        .arg(minutes.to_string())
        .args(["--rate", &rate.to_string()])
        .current_dir(repo_root())
        .env("PRIMETIME_LOG", "warn")
        .spawn()
        .expect("run primetime simulate")
}

/// Every update on the prices topic by (cell, tick); panics on a
/// conflicting version (one (cell, tick) with two different updates).
pub fn published_without_conflicts(broker: &Broker, topic: &str) -> (Decisions, usize) {
    let mut out: Decisions = BTreeMap::new();
    let mut records = 0;
    for r in read_topic(&broker.addr, topic) {
        records += 1;
        let u =
            primetime_proto::v1::PriceUpdate::decode(r.payload.as_slice()).expect("a PriceUpdate");
        let value = (u.multiplier, u.model_version, u.explanation);
        if let Some(before) = out.insert((u.cell.clone(), u.tick), value.clone()) {
            assert_eq!(
                before, value,
                "conflicting versions of ({}, {})",
                u.cell, u.tick
            );
        }
    }
    (out, records)
}

/// The status endpoint as JSON.
pub fn status(service: &primetime_e2e::Service) -> Option<serde_json::Value> {
    let (code, body) = service.get("/v1/status")?;
    (code == 200).then(|| serde_json::from_str(&body).ok())?
}

/// The last fired tick.
pub fn tick(service: &primetime_e2e::Service) -> Option<i64> {
    status(service)?["tick"].as_i64()
}

/// Waits up to `timeout` until the group's input offsets are committed to
/// the ends of the logs `inputs` were read from (every record's effects
/// durably published); otherwise says where they stand.
pub fn wait_committed_to_end(
    broker: &Broker,
    topics: &Topics,
    group: &str,
    inputs: &[(String, Vec<Record>)],
    timeout: std::time::Duration,
) -> Result<(), String> {
    let ends = log_ends(inputs);
    let commits = || input_commits(broker, topics, group);
    primetime_e2e::eventually(timeout, || (commits() == ends).then_some(()))
        .ok_or_else(|| format!("committed offsets {:?} != ends {ends:?}", commits()))
}

/// Per input topic, per partition: the offset after its last record
/// (-1 for an empty partition): where commits end once all is processed.
pub fn log_ends(inputs: &[(String, Vec<Record>)]) -> Vec<Vec<i64>> {
    inputs
        .iter()
        .map(|(_, rs)| {
            (0..PARTITIONS)
                .map(|p| {
                    rs.iter()
                        .filter(|r| r.partition == p)
                        .map(|r| r.offset + 1)
                        .max()
                        .unwrap_or(-1)
                })
                .collect()
        })
        .collect()
}

/// The group's committed offsets on both input topics.
pub fn input_commits(broker: &Broker, topics: &Topics, group: &str) -> Vec<Vec<i64>> {
    [&topics.drivers, &topics.demand]
        .iter()
        .map(|t| primetime_e2e::committed(&broker.addr, group, t, PARTITIONS))
        .collect()
}

/// Panics unless `got`, up to the reference's last data tick, holds
/// exactly the reference decisions (naming the first that differ).
pub fn assert_equals_reference(got: &Decisions, expected: &Reference, logs: impl Fn() -> String) {
    let got: Decisions = got
        .iter()
        .filter(|((_, t), _)| *t <= expected.last_data_tick)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let differing: Vec<_> = expected
        .decisions
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .chain(
            got.keys()
                .filter(|k| !expected.decisions.contains_key(*k))
                .cloned(),
        )
        .take(6)
        .collect();
    assert!(
        differing.is_empty(),
        "{} published vs {} reference decisions; first differing (cell, tick): {differing:?}; logs:\n{}",
        got.len(),
        expected.decisions.len(),
        logs()
    );
}
