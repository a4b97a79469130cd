//! The HTTP tests' fixture: a price table filled by hand with real engine
//! decisions, the app state over it, and request macros.
#![allow(dead_code, unused_macros)] // each test file uses part of it

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use actix_web::http::StatusCode;

use primetime::http::{self, AppState, Limits};
use primetime::metrics::Metrics;
use primetime::quotes::{KeyConfig, MemoryAudit, QuoteAudit, QuoteConfig, QuoteDesk};
use primetime::table::PriceTable;
use primetime_core::{
    Config, Engine, IngestTime, PriceDecision, RawDemandEvent, RawDriverLocation, RawRecord,
};
use serde_json::Value;

pub const STADIUM: (f64, f64) = (37.7786, -122.3893);

/// Real decisions from the engine: 40 requests against 2 drivers.
pub fn decisions() -> Vec<PriceDecision> {
    let mut engine = Engine::with_formula(Config::default(), 1, 1).unwrap();
    let t0 = 1_800_000_000_000i64;
    let mut offset = 0;
    let mut push = |engine: &mut Engine, r: RawRecord, t: i64| {
        let _ = engine.push(0, offset, IngestTime(t), &r);
        offset += 1;
    };
    for i in 0..60 {
        let t = t0 + i * 2_000;
        for d in 0..2 {
            push(
                &mut engine,
                RawRecord::Driver(RawDriverLocation {
                    event_id: format!("p{i}-{d}"),
                    driver_id: format!("d{d}"),
                    event_time_ms: t,
                    lat: STADIUM.0,
                    lng: STADIUM.1,
                    status: 1,
                }),
                t,
            );
        }
        if i < 40 {
            push(
                &mut engine,
                RawRecord::Demand(RawDemandEvent {
                    event_id: format!("r{i}"),
                    rider_id: format!("rider{i}"),
                    event_time_ms: t,
                    lat: STADIUM.0,
                    lng: STADIUM.1,
                    kind: 1,
                }),
                t,
            );
        }
    }
    engine.take_decisions()
}

pub struct Fixture {
    pub state: AppState,
    pub now: Arc<AtomicI64>,
    pub last: PriceDecision,
    pub audit: Arc<MemoryAudit>,
}

pub fn fixture() -> Fixture {
    fixture_with(&quote_config())
}

/// Two signing keys: `k1` signs, `k0` (older) still verifies.
pub fn quote_config() -> QuoteConfig {
    QuoteConfig {
        keys: vec![key("k1"), key("k0")],
        ..QuoteConfig::default()
    }
}

pub fn key(id: &str) -> KeyConfig {
    KeyConfig {
        id: id.to_owned(),
        secret: format!("{id}: a test secret of at least 32 bytes"),
    }
}

pub fn fixture_with(quotes: &QuoteConfig) -> Fixture {
    let table = Arc::new(PriceTable::new("formula-v1"));
    let decisions = decisions();
    let last = decisions
        .last()
        .cloned()
        .expect("the engine surged the stadium");
    assert!(last.multiplier.value() > 1.0);
    table.publish(last.tick, last.tick.end_ms(10_000), 1_000_000, &decisions);
    fixture_over(table, quotes, last)
}

/// The app state over `table` (filled by the caller); `last` is what the
/// tests compare with.
pub fn fixture_over(table: Arc<PriceTable>, quotes: &QuoteConfig, last: PriceDecision) -> Fixture {
    let now = Arc::new(AtomicI64::new(1_000_500));
    let audit = Arc::new(MemoryAudit::new(1000));
    let clock = Arc::clone(&now);
    let state = AppState {
        prices: Arc::clone(&table) as Arc<dyn http::PriceLookup>,
        table,
        active: Arc::new(primetime::table::ActiveView::new(2)),
        metrics: Arc::new(Metrics::new(2)),
        geo: Config::default().geo(),
        limits: Limits {
            max_body_bytes: 64 * 1024,
            max_bbox_cells: 100,
            stale_after_ms: 30_000,
        },
        now_ms: Arc::new(move || clock.load(Ordering::Relaxed)),
        quotes: Arc::new(QuoteDesk::new(
            quotes,
            Arc::clone(&audit) as Arc<dyn QuoteAudit>,
        )),
        auth: Arc::new(primetime::auth::Auth::open()),
    };
    Fixture {
        state,
        now,
        last,
        audit,
    }
}

macro_rules! app {
    ($state:expr) => {{
        let state = $state.clone();
        test::init_service(App::new().configure(move |c| http::configure(c, state))).await
    }};
}

macro_rules! get {
    ($app:expr, $uri:expr) => {{
        let resp =
            test::call_service(&$app, test::TestRequest::get().uri(&$uri).to_request()).await;
        let status = resp.status();
        let body = test::read_body(resp).await;
        (
            status,
            serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null),
        )
    }};
}

macro_rules! post {
    ($app:expr, $uri:expr, $body:expr) => {{
        let req = test::TestRequest::post()
            .uri($uri)
            .insert_header(("content-type", "application/json"))
            .set_payload($body)
            .to_request();
        let resp = test::call_service(&$app, req).await;
        let status = resp.status();
        let body = test::read_body(resp).await;
        (
            status,
            serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null),
        )
    }};
}

pub fn assert_field_error(status: StatusCode, body: &Value, field: &str) {
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], field, "{body}");
    assert_eq!(body["error"]["status"], 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(field)),
        "{body}"
    );
}
