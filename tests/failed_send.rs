//! No price lost on a failed send (issue 16), on Apache Kafka: the prices
//! topic first refuses every record (its `max.message.bytes` is below the
//! size of any record batch), so every price fails at the broker. The
//! service keeps firing ticks, but none with a price becomes durable, so
//! the consumer commits no input offset past them; once the topic takes records again, the same
//! prices are published, the offsets reach the ends of the logs, and the
//! prices topic equals the reference engine.
//!
//! With Redis snapshots on, a snapshot is stored only once every tick up
//! to it is acknowledged: a service killed (`kill -9`) while the topic
//! refuses restores a tick before the refused ones, and publishes them.
//!
//! And a service asked to stop (SIGTERM) while the topic refuses: it exits
//! within [`STOP_WITHIN`] with status 1 naming the ticks never
//! acknowledged (the documented rule: 0 only when every fired tick's prices
//! were acknowledged), commits nothing past them, and the next start
//! publishes them.

mod common;

use std::time::{Duration, Instant};

use common::{Topics, publish, published_without_conflicts, reference, tick, write_config};
use primetime_e2e::{
    Broker, Record, Service, TestRedis, create_topic, eventually, read_topic, set_topic_configs,
    unique,
};

/// A broker whose prices topic refuses every record, `minutes` of the
/// simulated city published to its inputs, and the reference engine's
/// answer for them.
struct Refusing {
    broker: Broker,
    dir: tempfile::TempDir,
    topics: Topics,
    group: String,
    config: std::path::PathBuf,
    inputs: Vec<(String, Vec<Record>)>,
    expected: common::Reference,
}

impl Refusing {
    fn start(group: &str, minutes: u32) -> Self {
        let broker = Broker::start();
        let dir = tempfile::tempdir().expect("temp dir");
        let topics = Topics::new();
        let group = unique(group);
        let config = write_config(dir.path(), &broker.addr, &topics, &group, minutes, 1_500);
        // Smaller than a record batch's header: every produce is refused
        // with MESSAGE_TOO_LARGE, a permanent error librdkafka does not retry.
        create_topic(
            &broker.addr,
            &topics.prices,
            2,
            &[("cleanup.policy", "compact"), ("max.message.bytes", "64")],
        );
        publish(&broker, &config, minutes);
        let inputs: Vec<(String, Vec<Record>)> = [&topics.drivers, &topics.demand]
            .iter()
            .map(|t| ((*t).clone(), read_topic(&broker.addr, t)))
            .collect();
        let expected = reference(&config, &topics, &inputs);
        Self {
            broker,
            dir,
            topics,
            group,
            config,
            inputs,
            expected,
        }
    }
}

#[test]
fn a_refused_price_is_not_committed_past_and_is_published_after_recovery() {
    let Refusing {
        broker,
        dir,
        topics,
        group,
        config,
        inputs,
        expected,
    } = Refusing::start("failed-send-group", 4);

    let mut service = Service::start(&config, &dir.path().join("service.log"), &[]);
    let fired = eventually(Duration::from_secs(120), || {
        tick(&service).filter(|&t| t >= expected.last_data_tick)
    });
    assert!(
        fired.is_some(),
        "ticks did not reach {}; log:\n{}",
        expected.last_data_tick,
        service.log_text()
    );
    let refused = eventually(Duration::from_secs(30), || {
        service
            .log_text()
            .contains("kafka delivery failed")
            .then_some(())
    });
    assert!(
        refused.is_some(),
        "no send failed; log:\n{}",
        service.log_text()
    );
    // Every tick with a decision was refused: commits may cover only the
    // empty ticks before the first decision, never a refused one.
    std::thread::sleep(Duration::from_secs(3));
    let first_decision = first_decision(&expected);
    assert_nothing_committed_or_published_past(&broker, &topics, &group, first_decision);
    eprintln!(
        "ticks fired to {} with every price refused: nothing published, no commit past tick {}",
        expected.last_data_tick,
        first_decision - 1
    );

    // The broker takes records again: the refused ticks are sent again.
    accept_prices(&broker, &topics);
    if let Err(e) =
        common::wait_committed_to_end(&broker, &topics, &group, &inputs, Duration::from_secs(120))
    {
        panic!("{e}; log:\n{}", service.log_text());
    }
    let (got, records) = published_without_conflicts(&broker, &topics.prices);
    common::assert_equals_reference(&got, &expected, || service.log_text());
    eprintln!(
        "after recovery: {} decisions up to tick {} equal the reference ({records} price records)",
        expected.decisions.len(),
        expected.last_data_tick
    );
    let status = service.terminate();
    assert!(status.success(), "exit status {status}");
}

#[test]
fn with_redis_snapshots_a_refused_price_survives_a_kill_9() {
    let Refusing {
        broker,
        dir,
        topics,
        group,
        config,
        inputs,
        expected,
    } = Refusing::start("refused-snapshot-group", 4);
    let first_decision = first_decision(&expected);
    // Held for the test: a private Redis unless PRIMETIME_TEST_REDIS is set.
    let redis = TestRedis::start();
    let prefix = unique("refused-snapshots");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str(&format!(
        "[redis]\nurl = \"{}\"\nkey_prefix = \"{prefix}\"\nsnapshot_every_ticks = 1\nsnapshot_keep = 4\n",
        redis.url
    ));
    std::fs::write(&config, text).expect("config");

    let mut service = Service::start(&config, &dir.path().join("service-1.log"), &[]);
    let refused = eventually(Duration::from_secs(120), || {
        let fired = tick(&service).is_some_and(|t| t >= expected.last_data_tick);
        (fired && service.log_text().contains("kafka delivery failed")).then_some(())
    });
    assert!(
        refused.is_some(),
        "ticks did not reach {} with refused prices; log:\n{}",
        expected.last_data_tick,
        service.log_text()
    );
    // Long enough for snapshots of the fired ticks to be stored, were
    // they not held back.
    std::thread::sleep(Duration::from_secs(3));
    let stored = snapshot_ticks(&redis.url, &prefix, &group);
    assert!(
        stored.iter().all(|&t| t < first_decision),
        "snapshots stored at ticks {stored:?}, at or after the refused tick {first_decision}"
    );
    service.kill9();
    assert_nothing_committed_or_published_past(&broker, &topics, &group, first_decision);
    eprintln!(
        "kill -9 with every price refused: snapshots only at ticks {stored:?} (before the \
         refused tick {first_decision}), no commit past tick {}",
        first_decision - 1
    );

    accept_prices(&broker, &topics);
    let mut service = Service::start(&config, &dir.path().join("service-2.log"), &[]);
    restarted_publishes_everything(&broker, &topics, &group, &inputs, &expected, &service);
    let status = service.terminate();
    assert!(status.success(), "exit status {status}");
}

/// The ticks of the snapshots stored in Redis for `group`, every partition.
fn snapshot_ticks(url: &str, prefix: &str, group: &str) -> Vec<i64> {
    let mut c = redis::Client::open(url)
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
        .expect("redis connection");
    let mut ticks: Vec<i64> = (0..common::PARTITIONS)
        .flat_map(|p| {
            redis::cmd("ZRANGE")
                .arg(format!("{prefix}:snap:{group}:{p}"))
                .arg(0)
                .arg(-1)
                .query::<Vec<i64>>(&mut c)
                .expect("ZRANGE")
        })
        .collect();
    ticks.sort_unstable();
    ticks.dedup();
    ticks
}

/// How long a service asked to stop may take while the broker refuses its
/// prices: the publisher's 5 s grace, plus draining HTTP, the exchange and
/// the consumer on a loaded machine.
const STOP_WITHIN: Duration = Duration::from_secs(10);

#[test]
fn sigterm_while_the_broker_refuses_prices_stops_in_bounded_time_and_commits_nothing_past_them() {
    let Refusing {
        broker,
        dir,
        topics,
        group,
        config,
        inputs,
        expected,
    } = Refusing::start("refused-stop-group", 3);
    let first_decision = first_decision(&expected);

    let mut service = Service::start(&config, &dir.path().join("service-1.log"), &[]);
    let refused = eventually(Duration::from_secs(120), || {
        let fired = tick(&service).is_some_and(|t| t >= expected.last_data_tick);
        (fired && service.log_text().contains("kafka delivery failed")).then_some(())
    });
    assert!(
        refused.is_some(),
        "ticks did not reach {} with refused prices; log:\n{}",
        expected.last_data_tick,
        service.log_text()
    );
    let asked = Instant::now();
    let status = service.terminate();
    let took = asked.elapsed();
    let log = service.log_text();
    assert!(
        took < STOP_WITHIN,
        "SIGTERM to exit took {took:?} (over {STOP_WITHIN:?}); log:\n{log}"
    );
    assert_eq!(
        status.code(),
        Some(1),
        "exit status {status}: 1 when prices were never acknowledged; log:\n{log}"
    );
    assert!(
        log.contains("were never acknowledged"),
        "the exit names the unacknowledged ticks; log:\n{log}"
    );
    assert_nothing_committed_or_published_past(&broker, &topics, &group, first_decision);
    eprintln!(
        "SIGTERM with every price refused: exit status 1 after {:.2} s, no commit past tick {}",
        took.as_secs_f64(),
        first_decision - 1
    );

    // The next start, once the topic takes records, publishes them all.
    accept_prices(&broker, &topics);
    let mut service = Service::start(&config, &dir.path().join("service-2.log"), &[]);
    restarted_publishes_everything(&broker, &topics, &group, &inputs, &expected, &service);
    let status = service.terminate();
    assert!(status.success(), "exit status {status}");
}

/// The prices topic takes records again (Kafka's default size limit).
fn accept_prices(broker: &Broker, topics: &Topics) {
    set_topic_configs(
        &broker.addr,
        &topics.prices,
        &[
            ("cleanup.policy", "compact"),
            ("max.message.bytes", "1048588"),
        ],
    );
}

/// The first tick with a decision in the reference.
fn first_decision(expected: &common::Reference) -> i64 {
    expected
        .decisions
        .keys()
        .map(|(_, t)| *t)
        .min()
        .expect("some decisions")
}

/// Commits cover at most the empty ticks before `first_decision` (never a
/// refused one), and the prices topic holds nothing.
fn assert_nothing_committed_or_published_past(
    broker: &Broker,
    topics: &Topics,
    group: &str,
    first_decision: i64,
) {
    for t in [&topics.drivers, &topics.demand] {
        for (p, (offset, durable)) in
            primetime_e2e::commits(&broker.addr, group, t, common::PARTITIONS)
                .into_iter()
                .enumerate()
        {
            assert!(
                offset == -1 || durable.is_some_and(|d| d < first_decision),
                "{t}/{p} committed at {offset} for durable tick {durable:?}, past the \
                 refused tick {first_decision}"
            );
        }
    }
    assert!(
        read_topic(&broker.addr, &topics.prices).is_empty(),
        "the prices topic took a record"
    );
}

/// A restarted service publishes every decision: offsets reach the ends
/// and the prices topic equals the reference.
fn restarted_publishes_everything(
    broker: &Broker,
    topics: &Topics,
    group: &str,
    inputs: &[(String, Vec<Record>)],
    expected: &common::Reference,
    service: &Service,
) {
    if let Err(e) =
        common::wait_committed_to_end(broker, topics, group, inputs, Duration::from_secs(120))
    {
        panic!("{e}; log:\n{}", service.log_text());
    }
    let (got, records) = published_without_conflicts(broker, &topics.prices);
    common::assert_equals_reference(&got, expected, || service.log_text());
    eprintln!(
        "after the restart: {} decisions up to tick {} equal the reference ({records} price records)",
        expected.decisions.len(),
        expected.last_data_tick
    );
}
