//! Kafka end to end, on a real broker (DESIGN §6, issue 5): a simulated
//! log with every kind of noise goes into the input topics; the service
//! consumes it; the prices topic equals the reference `Engine` on exactly
//! what the broker holds, the dead-letter topic holds exactly the rejected
//! records but duplicates, and offsets are committed to the end.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use primetime_core::{Engine, IngestTime, Reason};
use primetime_e2e::{
    Broker, Record, Service, committed, eventually, read_topic, repo_root, unique,
};
use prost::Message as _;

const PARTITIONS: i32 = 4;

struct Topics {
    drivers: String,
    demand: String,
    prices: String,
    dlq: String,
    stats: String,
}

impl Topics {
    fn new() -> Self {
        let p = unique("e2e");
        Self {
            drivers: format!("{p}.drivers"),
            demand: format!("{p}.demand"),
            prices: format!("{p}.prices"),
            dlq: format!("{p}.dlq"),
            stats: format!("{p}.cell-stats"),
        }
    }
}

/// A service config for these topics: a small noisy city whose `minutes`
/// end 30 s ago (a backlog the service catches up on).
fn write_config(
    dir: &Path,
    brokers: &str,
    topics: &Topics,
    group: &str,
    minutes: u32,
    idle_timeout_ms: u64,
) -> PathBuf {
    let start_ms =
        (primetime::http::wall_clock_ms() - i64::from(minutes) * 60_000 - 30_000) / 1000 * 1000;
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
[kafka.client]
# noida-db answers fetches without honouring fetch.max.bytes.
"receive.message.max.bytes" = "1000000000"
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
        topics.drivers, topics.demand, topics.prices, topics.dlq, topics.stats
    );
    let path = dir.join("primetime.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

fn publish(broker: &Broker, config: &Path, minutes: u32) {
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
struct Reference {
    dead: BTreeMap<(String, i32, i64), String>,
    decisions: BTreeMap<(String, i64), (f64, String, String)>,
    rejected: BTreeMap<String, u64>,
    /// Every tick up to this one holds data of some partition: once the
    /// offsets are committed to the end, its decisions are all durable.
    last_data_tick: i64,
}

fn reference(config: &Path, topics: &Topics, inputs: &[(String, Vec<Record>)]) -> Reference {
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
fn published(broker: &Broker, topic: &str) -> BTreeMap<(String, i64), (f64, String, String)> {
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

fn dead_letters(
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

/// Runs `instances` services in one group on a published noisy log and
/// checks prices, dead letters and commits against the reference engine.
/// With several instances, they join the group before the data arrives.
fn scenario(instances: usize) {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let topics = Topics::new();
    let group = unique("e2e-group");
    let minutes = 8;
    // Several instances join before the data arrives, so their partitions
    // start out empty: a long idle timeout keeps them from going idle
    // before the first records (idleness is the one place where arrival
    // timing may change results, DESIGN §3).
    let idle_timeout_ms = if instances > 1 { 20_000 } else { 1_500 };
    let config = write_config(
        dir.path(),
        &broker.addr,
        &topics,
        &group,
        minutes,
        idle_timeout_ms,
    );
    let mut services = Vec::new();
    if instances > 1 {
        for i in 0..instances {
            let log = dir.path().join(format!("service-{i}.log"));
            services.push(Service::start(&config, &log, &["--create-topics"]));
        }
        let all = 2 * PARTITIONS as i64;
        let joined = eventually(Duration::from_secs(60), || {
            let counts: Vec<i64> = services
                .iter()
                .map(|s| assigned_partitions(s).unwrap_or(-1))
                .collect();
            (counts.iter().all(|&n| n > 0) && counts.iter().sum::<i64>() == all).then_some(counts)
        });
        let logs: Vec<String> = services.iter().map(Service::log_text).collect();
        let counts = joined.unwrap_or_else(|| {
            panic!(
                "instances did not split the partitions; logs:\n{}",
                logs.join("\n---\n")
            )
        });
        eprintln!("{instances} instances own {counts:?} partitions");
    }
    publish(&broker, &config, minutes);

    let inputs: Vec<(String, Vec<Record>)> = [&topics.drivers, &topics.demand]
        .iter()
        .map(|t| ((*t).clone(), read_topic(&broker.addr, t)))
        .collect();
    let total: usize = inputs.iter().map(|(_, r)| r.len()).sum();
    // Keyed by region, partitioned like the Java client: what instances rely
    // on to know who owns a region.
    for (_, records) in &inputs {
        for r in records {
            let key = r.key.as_deref().expect("keyed by region");
            assert_eq!(
                primetime::kafka::partition_for_key(key, PARTITIONS as u32),
                r.partition as u32,
                "murmur2 partition of key {:?}",
                String::from_utf8_lossy(key)
            );
        }
    }
    assert!(total > 100_000, "only {total} records published");
    let expected = reference(&config, &topics, &inputs);
    eprintln!(
        "published {total} records; reference: {} decisions, rejected {:?}",
        expected.decisions.len(),
        expected.rejected
    );
    for reason in ["malformed", "future", "too_old", "late", "duplicate"] {
        assert!(
            expected.rejected.get(reason).copied().unwrap_or(0) > 0,
            "the noisy log has no {reason} records"
        );
    }
    assert!(
        expected.decisions.values().any(|(m, _, _)| *m > 1.0),
        "the reference run has no surge"
    );

    if instances == 1 {
        services.push(Service::start(
            &config,
            &dir.path().join("service.log"),
            &[],
        ));
    }
    let logs = |services: &[Service]| -> String {
        services
            .iter()
            .map(Service::log_text)
            .collect::<Vec<_>>()
            .join("\n---\n")
    };

    // Offsets: every record is in a durably published tick once the
    // watermark passed the data, so they are committed to the end.
    let ends: Vec<Vec<i64>> = inputs
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
        .collect();
    let commits = || -> Vec<Vec<i64>> {
        [&topics.drivers, &topics.demand]
            .iter()
            .map(|t| committed(&broker.addr, &group, t, PARTITIONS))
            .collect()
    };
    let done = eventually(Duration::from_secs(120), || {
        (commits() == ends).then_some(())
    });
    assert!(
        done.is_some(),
        "committed offsets {:?} != ends {ends:?} after 120 s; log:\n{}",
        commits(),
        logs(&services)
    );

    let got: BTreeMap<_, _> = published(&broker, &topics.prices)
        .into_iter()
        .filter(|((_, tick), _)| *tick <= expected.last_data_tick)
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
        "{} service vs {} engine decisions; first differing (cell, tick): {differing:?}",
        got.len(),
        expected.decisions.len()
    );
    assert_eq!(
        got.len(),
        expected.decisions.len(),
        "decision count up to tick {} (service vs engine)",
        expected.last_data_tick
    );
    for (key, want) in &expected.decisions {
        assert_eq!(got.get(key), Some(want), "decision {key:?}");
    }

    let dead = dead_letters(&broker, &topics.dlq, &inputs);
    assert_eq!(dead, expected.dead, "dead letters");
    eprintln!(
        "service = engine: {} decisions up to tick {}, {} dead letters",
        got.len(),
        expected.last_data_tick,
        dead.len()
    );

    for service in &mut services {
        let status = service.terminate();
        assert!(
            status.success(),
            "exit status {status}; log:\n{}",
            service.log_text()
        );
    }
}

fn assigned_partitions(service: &Service) -> Option<i64> {
    let (status, body) = service.get("/v1/status")?;
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["kafka_assigned_partitions"].as_i64()
}

#[test]
fn prices_and_dead_letters_equal_the_reference_engine() {
    scenario(1);
}

#[test]
fn two_instances_in_one_group_price_like_one() {
    scenario(2);
}
