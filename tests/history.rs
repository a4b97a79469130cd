//! Prices at a past time with several instances (issue 17): two instances
//! in one group split the input partitions; each tails the prices topic,
//! so each answers `GET /v1/price?at=` and `/v1/cells/{cell}/history` for
//! the cells the other one prices, equal to what the prices topic says.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{PARTITIONS, Topics, publish, published, write_config};
use primetime_e2e::{Broker, Record, Service, eventually, read_topic, unique};
use serde_json::Value;

const BUCKET_MS: i64 = 10_000;

fn assigned_partitions(service: &Service) -> Option<i64> {
    common::status(service)?["kafka_assigned_partitions"].as_i64()
}

fn logs(services: &[Service]) -> String {
    services
        .iter()
        .map(Service::log_text)
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// Changes of one cell on the topic (a decision equal to the one before
/// it is not a change), oldest first: (tick, multiplier).
fn changes_of(
    topic: &BTreeMap<(String, i64), (f64, String, String)>,
    cell: &str,
) -> Vec<(i64, f64)> {
    let mut out: Vec<(i64, f64)> = Vec::new();
    for ((c, t), (m, _, _)) in topic.range((cell.to_owned(), i64::MIN)..) {
        if c != cell {
            break;
        }
        if out.last().is_none_or(|&(_, prev)| prev != *m) {
            out.push((*t, *m));
        }
    }
    out
}

/// The multiplier the changes put in force at `at_ms` (1.0 before any).
fn in_force(changes: &[(i64, f64)], at_ms: i64) -> (Option<i64>, f64) {
    changes
        .iter()
        .rev()
        .find(|(t, _)| (t + 1) * BUCKET_MS <= at_ms)
        .map_or((None, 1.0), |&(t, m)| (Some(t), m))
}

/// Up to `per_partition` cells per input partition with the most changes:
/// with the partitions split, every instance gets cells it does not own.
fn probe_cells(
    topic: &BTreeMap<(String, i64), (f64, String, String)>,
    geo: &primetime_core::Geo,
    per_partition: usize,
) -> Vec<(String, u32)> {
    let mut by_partition: BTreeMap<u32, Vec<(usize, String)>> = BTreeMap::new();
    let cells: std::collections::BTreeSet<&String> = topic.keys().map(|(c, _)| c).collect();
    for cell in cells {
        let id = geo.parse_cell(cell).expect("an H3 cell");
        let region = geo.region_of(id).to_string();
        let p = primetime::kafka::partition_for_key(region.as_bytes(), PARTITIONS as u32);
        let n = changes_of(topic, cell).len();
        by_partition.entry(p).or_default().push((n, cell.clone()));
    }
    by_partition
        .into_iter()
        .flat_map(|(p, mut cells)| {
            cells.sort_by_key(|c| std::cmp::Reverse(c.0));
            cells
                .into_iter()
                .take(per_partition)
                .map(move |(_, c)| (c, p))
        })
        .collect()
}

/// `/v1/cells/{cell}/history` from `from` to `to`, once the instance
/// knows the cell through `to` (a 422 or an earlier `known_until_ms` is
/// the tail still behind: asked again).
fn history(service: &Service, cell: &str, from: i64, to: i64) -> Option<Vec<(Option<i64>, f64)>> {
    let path = format!("/v1/cells/{cell}/history?from={from}&to={to}");
    let body = eventually(Duration::from_secs(90), || {
        let (status, body) = service.get(&path)?;
        let v: Value = serde_json::from_str(&body).ok()?;
        (status == 200 && v["known_until_ms"].as_i64().is_some_and(|k| k >= to)).then_some(v)
    })?;
    Some(
        std::iter::once(&body["at_from"])
            .chain(body["changes"].as_array()?)
            .map(|c| {
                (
                    c["since_tick"].as_i64(),
                    c["multiplier"].as_f64().unwrap_or(f64::NAN),
                )
            })
            .collect(),
    )
}

#[test]
fn each_instance_answers_past_prices_of_the_cells_the_other_prices() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let topics = Topics::new();
    let group = unique("e2e-history2");
    let minutes = 3;
    // Both instances join before the data arrives: a long idle timeout
    // keeps their empty partitions from going idle before the records.
    let config = write_config(dir.path(), &broker.addr, &topics, &group, minutes, 20_000);
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
    assert_eq!(
        joined,
        Some(vec![PARTITIONS as i64; 2]),
        "instances did not split the partitions; logs:\n{}",
        logs(&services)
    );
    publish(&broker, &config, minutes);
    let inputs: Vec<(String, Vec<Record>)> = [&topics.drivers, &topics.demand]
        .iter()
        .map(|t| ((*t).clone(), read_topic(&broker.addr, t)))
        .collect();
    let expected = common::reference(&config, &topics, &inputs);
    if let Err(e) =
        common::wait_committed_to_end(&broker, &topics, &group, &inputs, Duration::from_secs(180))
    {
        panic!("{e}; logs:\n{}", logs(&services));
    }

    let topic = published(&broker, &topics.prices);
    let service =
        primetime::config::ServiceConfig::load(Some(&config), &Default::default()).expect("config");
    let geo = service.core.geo();
    let cells = probe_cells(&topic, &geo, 3);
    // The range assignor gives each of the two instances a contiguous half
    // of the partitions (4 of the 8 partitions of the two topics each):
    // probed cells in both halves are cells each instance does not own.
    let partitions: std::collections::BTreeSet<u32> = cells.iter().map(|(_, p)| *p).collect();
    let half = PARTITIONS as u32 / 2;
    assert!(
        partitions.iter().any(|&p| p < half) && partitions.iter().any(|&p| p >= half),
        "probed cells in both halves of the partitions: {cells:?}"
    );
    let first_tick = topic.keys().map(|(_, t)| *t).min().expect("prices");
    // A few ticks into the data (both instances had started pricing), to
    // the end of the data.
    let from = (first_tick + 4) * BUCKET_MS + BUCKET_MS + 1;
    let to = (expected.last_data_tick + 1) * BUCKET_MS;
    let mut compared = 0;
    for (i, s) in services.iter().enumerate() {
        for (cell, _) in &cells {
            let changes = changes_of(&topic, cell);
            let (since, m) = in_force(&changes, from);
            let mut want = vec![(since, m)];
            want.extend(
                changes
                    .iter()
                    .filter(|(t, _)| (t + 1) * BUCKET_MS > from && (t + 1) * BUCKET_MS <= to)
                    .map(|&(t, m)| (Some(t), m)),
            );
            let got = history(s, cell, from, to).unwrap_or_else(|| {
                panic!(
                    "instance {i}: no history of {cell} known through {to}; logs:\n{}",
                    logs(&services)
                )
            });
            assert_eq!(got, want, "instance {i}: history of {cell}");

            // The price in force in the middle of every change's tick.
            let (lat, lng) = geo.parse_cell(cell).expect("cell").center();
            for &(t, _) in changes.iter().filter(|(t, _)| (t + 1) * BUCKET_MS > from) {
                let at = (t + 1) * BUCKET_MS + BUCKET_MS / 2;
                if at > to {
                    continue;
                }
                let (status, body) = s
                    .get(&format!("/v1/price?lat={lat}&lng={lng}&at={at}"))
                    .expect("GET /v1/price?at=");
                assert_eq!(status, 200, "instance {i}, {cell} at {at}: {body}");
                let v: Value = serde_json::from_str(&body).expect("json");
                assert_eq!(
                    v["multiplier"].as_f64(),
                    Some(in_force(&changes, at).1),
                    "instance {i}, {cell} at {at}: {body}"
                );
                compared += 1;
            }
        }
    }
    eprintln!(
        "{} cells over {} partitions, {compared} prices at a past time: both instances = the prices topic",
        cells.len(),
        partitions.len()
    );
    for s in &mut services {
        assert!(s.terminate().success(), "exit; log:\n{}", s.log_text());
    }
}
