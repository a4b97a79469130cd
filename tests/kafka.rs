//! Kafka end to end, on a real broker (DESIGN §6, issue 5): a simulated
//! log with every kind of noise goes into the input topics; the service
//! consumes it; the prices topic equals the reference `Engine` on exactly
//! what the broker holds, the dead-letter topic holds exactly the rejected
//! records but duplicates, and offsets are committed to the end.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{PARTITIONS, Topics, dead_letters, publish, published, reference, write_config};
use primetime_e2e::{Broker, Record, Service, eventually, read_topic, unique};

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
        let joined = eventually(Duration::from_secs(150), || {
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
    if let Err(e) =
        common::wait_committed_to_end(&broker, &topics, &group, &inputs, Duration::from_secs(120))
    {
        panic!("{e} after 120 s; log:\n{}", logs(&services));
    }

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

    check_quote_audit(&broker, &topics, &services[0]);

    for service in &mut services {
        let status = service.terminate();
        assert!(
            status.success(),
            "exit status {status}; log:\n{}",
            service.log_text()
        );
    }
}

/// A quote issued and redeemed over HTTP lands in the quotes topic: two
/// records keyed by its id, `kind` issued then redeemed.
fn check_quote_audit(broker: &Broker, topics: &Topics, service: &Service) {
    let (status, body) = service
        .post("/v1/quotes", r#"{"lat": 37.7786, "lng": -122.3893}"#)
        .expect("POST /v1/quotes");
    assert_eq!(status, 200, "{body}");
    let quote: serde_json::Value = serde_json::from_str(&body).expect("quote json");
    let id = quote["quote_id"].as_str().expect("quote_id").to_owned();
    let redeem = format!(r#"{{"quote_id": "{id}"}}"#);
    let (status, body) = service
        .post("/v1/quotes/redeem", &redeem)
        .expect("POST /v1/quotes/redeem");
    assert_eq!(status, 200, "{body}");
    let kinds = eventually(Duration::from_secs(30), || {
        let kinds: Vec<String> = read_topic(&broker.addr, &topics.quotes)
            .into_iter()
            .filter(|r| r.key.as_deref() == Some(id.as_bytes()))
            .filter_map(|r| {
                r.headers
                    .iter()
                    .find(|(k, _)| k == "kind")
                    .map(|(_, v)| v.clone())
            })
            .collect();
        (kinds.len() == 2).then_some(kinds)
    })
    .expect("the quote's two audit records on the quotes topic");
    assert_eq!(kinds, ["issued", "redeemed"]);
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
