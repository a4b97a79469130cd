//! Prices at a past time over HTTP: `at=` inside and outside the retention
//! and after the newest tick, a cell's history between two times, and the
//! history after a restart (restored from the prices topic's updates).

#[macro_use]
mod support;

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{App, test};
use primetime::history::{History, HistoryConfig};
use primetime::http;
use primetime::table::PriceTable;
use primetime_core::{Multiplier, PriceDecision, Tick};
use serde_json::Value;
use support::*;

const B: i64 = 10_000;
/// The first tick published.
const T0: i64 = 180_000_000;

/// Changes of the stadium cell: (tick, twentieths).
const CHANGES: [(i64, u32); 3] = [(T0 + 5, 30), (T0 + 20, 45), (T0 + 40, 20)];

fn decision(template: &PriceDecision, tick: i64, twentieths: u32) -> PriceDecision {
    PriceDecision {
        tick: Tick(tick),
        multiplier: Multiplier::from_twentieths(twentieths),
        ..template.clone()
    }
}

/// A table with a 10-minute (60-tick) history over ticks T0..=T0+last.
fn table(template: &PriceDecision, last: i64) -> Arc<PriceTable> {
    let config = HistoryConfig {
        retention_ms: 60 * B,
        ..HistoryConfig::default()
    };
    let table = Arc::new(PriceTable::with_history("v9", History::new(B, &config)));
    for t in T0..=T0 + last {
        let decisions: Vec<PriceDecision> = CHANGES
            .iter()
            .filter(|c| c.0 == t)
            .map(|&(tick, tw)| decision(template, tick, tw))
            .collect();
        table.publish(Tick(t), Tick(t).end_ms(B), 0, &decisions);
    }
    table
}

fn price_at(at: i64) -> String {
    format!("/v1/price?lat={}&lng={}&at={at}", STADIUM.0, STADIUM.1)
}

fn end(tick: i64) -> i64 {
    Tick(tick).end_ms(B)
}

#[actix_web::test]
async fn price_at_a_time_inside_and_outside_the_retention() {
    let template = fixture().last;
    let f = fixture_over(table(&template, 50), &quote_config(), template.clone());
    let app = app!(f.state);
    for (at, multiplier, since) in [
        (end(T0), 1.0, None),
        (end(T0 + 5) - 1, 1.0, None),
        (end(T0 + 5), 1.5, Some(T0 + 5)),
        (end(T0 + 30) + 1234, 2.25, Some(T0 + 20)),
        (end(T0 + 50), 1.0, Some(T0 + 40)),
    ] {
        let (status, body) = get!(app, price_at(at));
        assert_eq!(status, StatusCode::OK, "{at}: {body}");
        assert_eq!(body["multiplier"], multiplier, "{at}: {body}");
        assert_eq!(body["since_tick"], since.map_or(Value::Null, Value::from));
        assert_eq!(body["at"], at);
        assert_eq!(body["cell"], template.cell.to_string());
        assert_eq!(body["stale"], false);
    }
    // Before the first tick the history saw: 410, not a guess.
    let (status, body) = get!(app, price_at(end(T0) - 1));
    assert_eq!(status, StatusCode::GONE, "{body}");
    assert_eq!(body["error"]["code"], "outside_retention");
    assert_eq!(body["error"]["field"], "at");
    assert_eq!(body["error"]["retryable"], false);
    // After the newest tick: 422, retryable.
    let (status, body) = get!(app, price_at(end(T0 + 51)));
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "not_yet_known");
    assert_eq!(body["error"]["retryable"], true);
    for bad in ["-1", "1.5", "x", "253402300800000"] {
        let (status, body) = get!(
            app,
            format!("/v1/price?lat={}&lng={}&at={bad}", STADIUM.0, STADIUM.1)
        );
        assert_field_error(status, &body, "at");
    }

    // 60 ticks of retention: once tick T0+100 fired, T0+39 is gone but the
    // change in force at the horizon (T0+20's... then T0+40's) still answers.
    let f = fixture_over(table(&template, 100), &quote_config(), template);
    let app = app!(f.state);
    let (status, _) = get!(app, price_at(end(T0 + 39)));
    assert_eq!(status, StatusCode::GONE);
    let (status, body) = get!(app, price_at(end(T0 + 40)));
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["multiplier"], 1.0);
}

#[actix_web::test]
async fn a_cells_history_between_two_times() {
    let template = fixture().last;
    let f = fixture_over(table(&template, 50), &quote_config(), template.clone());
    let app = app!(f.state);
    let cell = template.cell;
    let (status, body) = get!(
        app,
        format!(
            "/v1/cells/{cell}/history?from={}&to={}",
            end(T0 + 10),
            end(T0 + 45)
        )
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["at_from"]["multiplier"], 1.5);
    assert_eq!(body["at_from"]["since_ms"], end(T0 + 5));
    let changes: Vec<(f64, i64)> = body["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["multiplier"].as_f64().unwrap(),
                c["since_tick"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(changes, [(2.25, T0 + 20), (1.0, T0 + 40)]);
    assert_eq!(body["known_until_ms"], end(T0 + 50));
    assert_eq!(body["retained_from_ms"], end(T0));
    // `to` defaults to (and is capped at) the newest tick's end.
    let (_, body) = get!(app, format!("/v1/cells/{cell}/history?from={}", end(T0)));
    assert_eq!(body["to"], end(T0 + 50));
    assert_eq!(body["at_from"]["priced"], false);
    assert_eq!(body["changes"].as_array().unwrap().len(), 3);

    for (query, status, field) in [
        ("to=5".to_owned(), 400, "from"),
        (format!("from={}", end(T0) - 1), 410, "from"),
        (format!("from={}", end(T0 + 60)), 422, "from"),
    ] {
        let (s, body) = get!(app, format!("/v1/cells/{cell}/history?{query}"));
        assert_eq!(s.as_u16(), status, "{query}: {body}");
        assert_eq!(body["error"]["field"], field, "{query}");
    }
    // `to` before `from`: the range is empty, the decision at `from` stands.
    let (s, body) = get!(
        app,
        format!(
            "/v1/cells/{cell}/history?from={}&to={}",
            end(T0 + 30),
            end(T0 + 8)
        )
    );
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["at_from"]["multiplier"], 2.25);
    assert_eq!(body["to"], end(T0 + 30));
    assert_eq!(body["changes"].as_array().map(Vec::len), Some(0));
    let (s, _) = get!(app, "/v1/cells/nope/history?from=0");
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[actix_web::test]
async fn history_after_a_restart_is_restored_from_price_updates() {
    let template = fixture().last;
    let before = fixture_over(table(&template, 50), &quote_config(), template.clone());
    // What the prices topic holds: one PriceUpdate per decision.
    let updates: Vec<_> = CHANGES
        .iter()
        .map(|&(t, tw)| primetime_proto::price_update(&decision(&template, t, tw), end(t)))
        .collect();
    // The restarted process restores, then publishes from T0+51 on.
    let config = HistoryConfig {
        retention_ms: 60 * B,
        ..HistoryConfig::default()
    };
    let restarted = Arc::new(PriceTable::with_history("v9", History::new(B, &config)));
    let stats = restarted.history().restore(&updates, Tick(T0));
    assert_eq!(stats.applied, 3);
    restarted.publish(Tick(T0 + 51), end(T0 + 51), 0, &[]);
    let after = fixture_over(restarted, &quote_config(), template);
    let before_app = app!(before.state);
    let after_app = app!(after.state);
    for t in T0..=T0 + 50 {
        let (s1, b1) = get!(before_app, price_at(end(t) + 7));
        let (s2, b2) = get!(after_app, price_at(end(t) + 7));
        assert_eq!(s1, StatusCode::OK);
        assert_eq!((s1, &b1["multiplier"]), (s2, &b2["multiplier"]), "tick {t}");
    }
    let (s, _) = get!(after_app, price_at(end(T0) - 1));
    assert_eq!(s, StatusCode::GONE);
    let _ = http::MAX_BATCH;
}
