//! Operator controls and the price history on Kafka (issues 18 and 17),
//! on a real broker:
//! - two instances in one group; a cap over the city POSTed to one of
//!   them before a stadium surge: both read the same stamped record, and
//!   the prices topic (both instances' cells) equals the reference engine
//!   fed the same records and that record — the cap applies at the same
//!   tick everywhere, and every decision it changed names it
//!   (`control_ids`, and the explanation's `controls`);
//! - an instance restarted after pricing a backlog answers prices at a
//!   past time from the prices topic (`GET /v1/price?at=`,
//!   `/v1/cells/{cell}/history`) as the reference engine decided them.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{
    Decisions, PARTITIONS, Reference, Topics, assert_equals_reference, publish,
    published_without_conflicts, reference, write_config,
};
use primetime_core::{ControlRecord, Engine, IngestTime};
use primetime_e2e::{Broker, Record, Service, eventually, read_topic, repo_root, unique};
use prost::Message as _;
use serde_json::{Value, json};

const STADIUM: (f64, f64) = (37.7786, -122.3893);

/// The common config with its own controls topic and a long session
/// timeout; simulated time moved to
/// `start_ms` when given (with the stadium crowd arriving 20 s in).
fn configure(config: &Path, controls_topic: &str, start_ms: Option<i64>) {
    let mut text = std::fs::read_to_string(config).expect("config");
    // A loaded machine (the broker's coordinator answering late) must not
    // expire members: every rebalance restarts the epochs.
    text = text.replace("session_timeout_ms = 6000", "session_timeout_ms = 30000");
    text = text.replace(
        "[kafka.topics]\n",
        &format!("[kafka.topics]\ncontrols = \"{controls_topic}\"\n"),
    );
    if let Some(start) = start_ms {
        let line = text
            .lines()
            .find(|l| l.starts_with("start_ms = "))
            .expect("start_ms line")
            .to_owned();
        text = text.replace(&line, &format!("start_ms = {start}"));
        text = text.replace("starts_after_ms = 60000", "starts_after_ms = 20000");
    }
    std::fs::write(config, text).expect("write config");
}

fn inputs(broker: &Broker, topics: &Topics) -> Vec<(String, Vec<Record>)> {
    [&topics.drivers, &topics.demand]
        .iter()
        .map(|t| ((*t).clone(), read_topic(&broker.addr, t)))
        .collect()
}

/// The reference engine's decisions up to `last_tick` with the control
/// log applied first.
fn controlled_reference(
    config: &Path,
    topics: &Topics,
    inputs: &[(String, Vec<Record>)],
    log: &[ControlRecord],
    last_tick: i64,
) -> Decisions {
    let service =
        primetime::config::ServiceConfig::load(Some(config), &Default::default()).expect("config");
    let model = primetime_model::load(&repo_root().join("models/primetime-v1.onnx"))
        .expect("the model loads");
    let mut engine =
        Engine::new(service.core.clone(), 2 * PARTITIONS as u32, 1, model).expect("engine");
    for r in log {
        engine.apply_control(r.clone()).expect("the log applies");
    }
    for (ti, (topic, records)) in inputs.iter().enumerate() {
        let kind = if *topic == topics.drivers {
            primetime_proto::Topic::DriverLocations
        } else {
            primetime_proto::Topic::Demand
        };
        for r in records {
            let partition = ti as u32 * PARTITIONS as u32 + r.partition as u32;
            match primetime_proto::decode(kind, &r.payload) {
                Ok(record) => {
                    let ingest = IngestTime(r.timestamp.expect("timestamp"));
                    let _ = engine.push(partition, r.offset, ingest, &record);
                }
                Err(_) => engine.push_malformed(partition, r.offset),
            }
        }
    }
    engine.finish();
    engine
        .take_decisions()
        .into_iter()
        .filter(|d| d.tick.0 <= last_tick)
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
        .collect()
}

/// Writes the input topics as an event log (pipeline partition numbers
/// as in Kafka mode), runs `primetime replay --controls` on it, and reads
/// its decisions back, the explanation re-serialised as Kafka's.
fn replay_with_controls(
    dir: &Path,
    config: &Path,
    topics: &Topics,
    inputs: &[(String, Vec<Record>)],
    control_log: &str,
) -> Decisions {
    let events = dir.join("events.log");
    let mut w = primetime_proto::LogWriter::new(std::io::BufWriter::new(
        std::fs::File::create(&events).expect("event log"),
    ));
    for (ti, (topic, records)) in inputs.iter().enumerate() {
        let kind = if *topic == topics.drivers {
            primetime_proto::Topic::DriverLocations
        } else {
            primetime_proto::Topic::Demand
        };
        for r in records {
            w.write(&primetime_proto::LogEntry {
                partition: ti as u32 * PARTITIONS as u32 + r.partition as u32,
                offset: r.offset,
                ingest_time_ms: r.timestamp.expect("timestamp"),
                topic: kind,
                payload: r.payload.clone(),
            })
            .expect("write entry");
        }
    }
    w.flush().expect("flush");
    drop(w);
    let controls = dir.join("controls.jsonl");
    std::fs::write(&controls, control_log).expect("controls file");
    let out = dir.join("replayed.jsonl");
    let status = std::process::Command::new(primetime_e2e::service_binary())
        .args(["replay", "--config"])
        .arg(config)
        .arg("--input")
        .arg(&events)
        .arg("--controls")
        .arg(&controls)
        .arg("--out")
        .arg(&out)
        .current_dir(repo_root())
        .env("PRIMETIME_LOG", "warn")
        .status()
        .expect("run primetime replay");
    assert!(status.success(), "primetime replay --controls failed");
    std::fs::read_to_string(&out)
        .expect("replayed decisions")
        .lines()
        .map(|l| {
            let d: Value = serde_json::from_str(l).expect("a decision");
            let key = (
                d["cell"].as_str().expect("cell").to_owned(),
                d["tick"].as_i64().expect("tick"),
            );
            (key, d)
        })
        .map(|(key, d)| {
            (
                key,
                (
                    d["multiplier"].as_f64().expect("multiplier"),
                    d["model_version"].as_str().expect("model").to_owned(),
                    d["explanation"].to_string(),
                ),
            )
        })
        .collect()
}

fn assigned_partitions(service: &Service) -> Option<i64> {
    let v = common::status(service)?;
    v["kafka_assigned_partitions"].as_i64()
}

fn logs(services: &[Service]) -> String {
    services
        .iter()
        .map(Service::log_text)
        .collect::<Vec<_>>()
        .join("\n---\n")
}

#[test]
fn two_instances_apply_a_posted_cap_at_the_same_tick() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let topics = Topics::new();
    let controls_topic = format!("{}.controls", topics.prices);
    let group = unique("e2e-controls");
    let minutes = 3;
    // Simulated time starts a little ahead of the wall clock: a control is
    // stamped by the broker's time, so it can only change ticks that end
    // after it was recorded (a backlog in the past is never re-priced).
    let start_ms = (primetime::wall_clock::wall_clock_ms() + 60_000) / 1000 * 1000;
    // No partition may go idle between joining and the first records
    // (idleness is the one place arrival timing may change results).
    let config = write_config(dir.path(), &broker.addr, &topics, &group, minutes, 60_000);
    configure(&config, &controls_topic, Some(start_ms));
    let mut services: Vec<Service> = (0..2)
        .map(|i| {
            let log = dir.path().join(format!("service-{i}.log"));
            Service::start(&config, &log, &["--create-topics"])
        })
        .collect();
    let all = 2 * PARTITIONS as i64;
    let joined = eventually(Duration::from_secs(150), || {
        let counts: Vec<i64> = services
            .iter()
            .map(|s| assigned_partitions(s).unwrap_or(-1))
            .collect();
        (counts.iter().all(|&n| n > 0) && counts.iter().sum::<i64>() == all).then_some(counts)
    });
    assert!(
        joined.is_some(),
        "instances did not split the partitions; logs:\n{}",
        logs(&services)
    );

    // A cap over the city from 90 s into the simulation, POSTed to one
    // instance before any record exists.
    let from = start_ms + 90_000;
    let body = json!({
        "area": {"bbox": [-123.0, 37.0, -122.0, 38.5]},
        "kind": "cap",
        "multiplier": 1.1,
        "from": from,
        "to": from + 3_600_000,
        "reason": "e2e emergency",
        "author": "e2e"
    });
    let (status, answer) = services[0]
        .post("/v1/controls", &body.to_string())
        .expect("POST /v1/controls");
    assert_eq!(status, 201, "{answer}; logs:\n{}", logs(&services));
    let answer: Value = serde_json::from_str(&answer).expect("json");
    assert_eq!(answer["id"], 1, "{answer}");
    // Stamped with the first tick whose end reaches `from`.
    let from_tick = (from + 9_999).div_euclid(10_000) - 1;
    assert_eq!(answer["from_tick"].as_i64(), Some(from_tick), "{answer}");
    // Both instances hold the same stamped record.
    let log_of = |s: &Service| {
        eventually(Duration::from_secs(30), || {
            let (status, body) = s.get("/v1/controls/log")?;
            (status == 200 && !body.trim().is_empty()).then_some(body)
        })
        .expect("the control log")
    };
    let log = log_of(&services[0]);
    assert_eq!(log_of(&services[1]), log, "both instances read one log");
    let records = primetime::controls::read_records(&log).expect("control records");
    assert_eq!(records.len(), 1, "{log}");

    publish(&broker, &config, minutes);
    let inputs = inputs(&broker, &topics);
    let baseline = reference(&config, &topics, &inputs);
    let controlled =
        controlled_reference(&config, &topics, &inputs, &records, baseline.last_data_tick);
    let named: Vec<&(String, i64)> = controlled
        .iter()
        .filter(|(_, (_, _, e))| e.contains(r#""controls":[1]"#))
        .map(|(k, _)| k)
        .collect();
    assert!(
        !named.is_empty() && controlled != baseline.decisions,
        "the cap changes no reference decision"
    );
    assert!(named.iter().all(|(_, t)| *t >= from_tick));
    eprintln!(
        "reference: {} decisions, {} changed by the cap from tick {from_tick}",
        controlled.len(),
        named.len()
    );

    // Ticks fire as the wall clock passes their end (the control log must
    // be known up to it): the data ends 3 minutes after `start_ms`.
    let last = baseline.last_data_tick;
    let caught_up = eventually(Duration::from_secs(420), || {
        services
            .iter()
            .all(|s| common::tick(s).is_some_and(|t| t >= last))
            .then_some(())
    });
    assert!(
        caught_up.is_some(),
        "ticks did not reach {last}; logs:\n{}",
        logs(&services)
    );
    let expected = Reference {
        decisions: controlled.clone(),
        ..baseline
    };
    let upto = |d: Decisions| -> Decisions {
        d.into_iter()
            .filter(|((_, t), _)| *t <= expected.last_data_tick)
            .collect()
    };
    // Published once acknowledged: a moment after the tick fired.
    let matched = eventually(Duration::from_secs(60), || {
        let (got, _) = published_without_conflicts(&broker, &topics.prices);
        (upto(got) == controlled).then_some(())
    });
    let (got, _) = published_without_conflicts(&broker, &topics.prices);
    if matched.is_none() {
        assert_equals_reference(&got, &expected, || logs(&services));
        assert_eq!(upto(got.clone()).len(), controlled.len(), "decision count");
    }

    // The prices topic names the control on exactly the changed decisions.
    let mut with_ids = 0;
    for r in read_topic(&broker.addr, &topics.prices) {
        let u = primetime_proto::v1::PriceUpdate::decode(r.payload.as_slice()).expect("update");
        if u.tick > expected.last_data_tick {
            continue;
        }
        let named = u.explanation.contains(r#""controls":[1]"#);
        assert_eq!(u.control_ids.is_empty(), !named, "({}, {})", u.cell, u.tick);
        if named {
            assert_eq!(u.control_ids, [1]);
            with_ids += 1;
        }
    }
    assert!(with_ids > 0, "no published decision names the control");
    eprintln!("prices topic = reference with the cap; {with_ids} updates name control 1");

    // `replay --controls` of the same records and the control log gives
    // the live decisions.
    let replayed = replay_with_controls(dir.path(), &config, &topics, &inputs, &log);
    // Both explanations through `Value`, so key order cannot differ.
    let normalised = |e: &str| {
        serde_json::from_str::<Value>(e)
            .expect("explanation json")
            .to_string()
    };
    let live: Decisions = got
        .into_iter()
        .filter(|((_, t), _)| *t <= expected.last_data_tick)
        .map(|(k, (m, v, e))| (k, (m, v, normalised(&e))))
        .collect();
    let replayed: Decisions = replayed
        .into_iter()
        .filter(|((_, t), _)| *t <= expected.last_data_tick)
        .collect();
    assert!(replayed == live, "replay --controls differs from live");
    eprintln!("replay --controls = live: {} decisions", live.len());

    for service in &mut services {
        let status = service.terminate();
        assert!(status.success(), "exit status {status}");
    }
}

#[test]
fn a_restarted_instance_answers_past_prices_from_the_prices_topic() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let topics = Topics::new();
    let group = unique("e2e-history");
    let minutes = 6;
    let config = write_config(dir.path(), &broker.addr, &topics, &group, minutes, 1_500);
    configure(&config, &format!("{}.controls", topics.prices), None);
    publish(&broker, &config, minutes);
    let inputs = inputs(&broker, &topics);
    let expected = reference(&config, &topics, &inputs);

    let mut first = Service::start(&config, &dir.path().join("service-1.log"), &[]);
    if let Err(e) =
        common::wait_committed_to_end(&broker, &topics, &group, &inputs, Duration::from_secs(120))
    {
        panic!("{e}; log:\n{}", first.log_text());
    }
    assert!(first.terminate().success());

    // The stadium cell's decisions, by tick.
    let service =
        primetime::config::ServiceConfig::load(Some(&config), &Default::default()).expect("config");
    let cell = service
        .core
        .geo()
        .cell_of(STADIUM.0, STADIUM.1)
        .expect("stadium cell")
        .to_string();
    let changes: Vec<(i64, f64)> = expected
        .decisions
        .iter()
        .filter(|((c, _), _)| *c == cell)
        .map(|((_, t), (m, _, _))| (*t, *m))
        .collect();
    let surge = changes
        .iter()
        .find(|(_, m)| *m > 1.0)
        .copied()
        .expect("the stadium surges");
    // A time one tick after the first surge decision took effect.
    let at = (surge.0 + 1) * 10_000 + 10_000 + 5;
    let in_force = changes
        .iter()
        .rev()
        .find(|(t, _)| (t + 1) * 10_000 <= at)
        .map(|(_, m)| *m)
        .expect("a decision in force");

    let restarted = Service::start(&config, &dir.path().join("service-2.log"), &[]);
    let path = format!("/v1/price?lat={}&lng={}&at={at}", STADIUM.0, STADIUM.1);
    let answer = eventually(Duration::from_secs(60), || {
        let (status, body) = restarted.get(&path)?;
        (status == 200).then_some(body)
    })
    .unwrap_or_else(|| panic!("no answer for {path}; log:\n{}", restarted.log_text()));
    let answer: Value = serde_json::from_str(&answer).expect("json");
    assert_eq!(answer["multiplier"].as_f64(), Some(in_force), "{answer}");
    assert_eq!(answer["at"].as_i64(), Some(at), "{answer}");

    let from = (changes[0].0 + 1) * 10_000;
    let to = (expected.last_data_tick + 1) * 10_000;
    let history = format!("/v1/cells/{cell}/history?from={from}&to={to}");
    let (status, body) = restarted.get(&history).expect("history");
    assert_eq!(status, 200, "{body}");
    let h: Value = serde_json::from_str(&body).expect("json");
    let got: Vec<(i64, f64)> = std::iter::once(&h["at_from"])
        .chain(h["changes"].as_array().expect("changes"))
        .map(|c| {
            (
                c["since_tick"].as_i64().expect("tick"),
                c["multiplier"].as_f64().expect("multiplier"),
            )
        })
        .collect();
    // The reference's changes (a decision equal to the one before it is
    // not a change).
    let mut want: Vec<(i64, f64)> = Vec::new();
    for &(t, m) in &changes {
        if want.last().is_none_or(|&(_, prev)| prev != m) {
            want.push((t, m));
        }
    }
    assert_eq!(got, want, "history of {cell} after a restart");
    eprintln!(
        "restarted: price at {at} = {in_force}, {} changes of {cell} restored",
        got.len()
    );
}
