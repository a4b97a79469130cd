//! No price lost on a failed send (issue 16), on Apache Kafka: the prices
//! topic first refuses every record (its `max.message.bytes` is below the
//! size of any record batch), so every price fails at the broker. The
//! service keeps firing ticks, but none with a price becomes durable, so
//! the consumer commits no input offset past them; once the topic takes records again, the same
//! prices are published, the offsets reach the ends of the logs, and the
//! prices topic equals the reference engine.

mod common;

use std::time::Duration;

use common::{Topics, publish, published_without_conflicts, reference, tick, write_config};
use primetime_e2e::{
    Broker, Record, Service, create_topic, eventually, read_topic, set_topic_configs, unique,
};

#[test]
fn a_refused_price_is_not_committed_past_and_is_published_after_recovery() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let topics = Topics::new();
    let group = unique("failed-send-group");
    let minutes = 4;
    let config = write_config(dir.path(), &broker.addr, &topics, &group, minutes, 1_500);
    // Smaller than a record batch's header: every produce is refused with
    // MESSAGE_TOO_LARGE, a permanent error librdkafka does not retry.
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
    let first_decision = expected
        .decisions
        .keys()
        .map(|(_, t)| *t)
        .min()
        .expect("some decisions");
    for t in [&topics.drivers, &topics.demand] {
        for (p, (offset, durable)) in
            primetime_e2e::commits(&broker.addr, &group, t, common::PARTITIONS)
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
    eprintln!(
        "ticks fired to {} with every price refused: nothing published, no commit past tick {}",
        expected.last_data_tick,
        first_decision - 1
    );

    // The broker takes records again: the refused ticks are sent again.
    set_topic_configs(
        &broker.addr,
        &topics.prices,
        &[
            ("cleanup.policy", "compact"),
            ("max.message.bytes", "1048588"),
        ],
    );
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
