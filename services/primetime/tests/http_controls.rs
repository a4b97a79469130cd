//! Operator controls over HTTP (issue 18): issue (201 with id and first
//! tick), list (all, or in force at `active_at`), revoke (a record; twice
//! is refused), bad input (400 naming the field, nothing applied), and who
//! may call: loopback only without keys, the `admin` scope with keys.

#[macro_use]
mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::http::{Method, StatusCode};
use actix_web::{App, test};
use primetime::auth::{ApiKeyConfig, Auth, AuthConfig, Scope, hash_key};
use primetime::controls::ControlLog;
use primetime::http;
use serde_json::{Value, json};
use support::*;

const LOOPBACK: &str = "127.0.0.1:40000";
const REMOTE: &str = "203.0.113.7:40000";

macro_rules! controls_app {
    ($state:expr, $log:expr) => {{
        let state = $state.clone();
        let log = Arc::clone(&$log);
        test::init_service(App::new().configure(move |c| {
            http::configure(c, state);
            http::configure_controls(c, log);
        }))
        .await
    }};
}

/// A request from `peer` with an optional key and JSON body.
macro_rules! call {
    ($app:expr, $method:expr, $uri:expr, $peer:expr, $key:expr, $body:expr) => {{
        let mut req = test::TestRequest::default()
            .method($method)
            .uri(&$uri)
            .peer_addr($peer.parse::<SocketAddr>().expect("addr"));
        if let Some(k) = $key {
            req = req.insert_header(("x-api-key", k));
        }
        let body: Option<Value> = $body;
        if let Some(b) = body {
            req = req
                .insert_header(("content-type", "application/json"))
                .set_payload(b.to_string());
        }
        let resp = test::call_service(&$app, req.to_request()).await;
        let status = resp.status();
        let body = test::read_body(resp).await;
        (
            status,
            serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null),
        )
    }};
}

/// The fixture's event time: the end of its last tick.
fn now(f: &Fixture) -> i64 {
    f.last.tick.end_ms(10_000)
}

fn cap_body(f: &Fixture) -> Value {
    json!({
        "area": {"cells": [f.last.cell.to_string()]},
        "kind": "cap",
        "multiplier": 1.5,
        "from": now(f),
        "to": now(f) + 3_600_000,
        "reason": "stadium crush",
        "author": "ops@example"
    })
}

#[actix_web::test]
async fn issue_list_and_revoke_on_loopback() {
    let f = fixture();
    let log = Arc::new(ControlLog::new(10_000));
    let app = controls_app!(f.state, log);
    let none: Option<&str> = None;
    let (status, body) = call!(
        app,
        Method::POST,
        "/v1/controls",
        LOOPBACK,
        none,
        Some(cap_body(&f))
    );
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["id"], 1);
    assert_eq!(body["kind"], "cap");
    assert_eq!(body["multiplier"], 1.5);
    assert_eq!(body["author"], "ops@example");
    assert!(body["revoked_from_tick"].is_null());
    let ring = body["outline"][0].as_array().map(Vec::len).unwrap_or(0);
    assert!(ring >= 6, "one hexagon for the map: {body}");
    assert_eq!(log.snapshot().records().len(), 1);

    let (status, body) = call!(app, Method::GET, "/v1/controls", LOOPBACK, none, None);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["controls"].as_array().map(Vec::len), Some(1));
    let at = format!("/v1/controls?active_at={}", now(&f) + 60_000);
    let (_, body) = call!(app, Method::GET, at, LOOPBACK, none, None);
    assert_eq!(body["controls"].as_array().map(Vec::len), Some(1), "{body}");
    let later = format!("/v1/controls?active_at={}", now(&f) + 7_200_000);
    let (_, body) = call!(app, Method::GET, later, LOOPBACK, none, None);
    assert_eq!(body["controls"].as_array().map(Vec::len), Some(0), "{body}");
    let (status, body) = call!(
        app,
        Method::GET,
        "/v1/controls?active_at=x",
        LOOPBACK,
        none,
        None
    );
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let uri = "/v1/controls/1?author=ops&reason=over";
    let (status, body) = call!(app, Method::DELETE, uri, LOOPBACK, none, None);
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["revoked_from_tick"].is_i64(), "{body}");
    let (status, body) = call!(app, Method::DELETE, uri, LOOPBACK, none, None);
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = call!(app, Method::DELETE, "/v1/controls/99", LOOPBACK, none, None);
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call!(app, Method::DELETE, "/v1/controls/x", LOOPBACK, none, None);
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = call!(app, Method::PUT, "/v1/controls", LOOPBACK, none, None);
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    // The log: the issue and the revocation, nothing else.
    assert_eq!(log.snapshot().records().len(), 2);
}

#[actix_web::test]
async fn bad_input_names_the_field_and_applies_nothing() {
    let f = fixture();
    let log = Arc::new(ControlLog::new(10_000));
    let app = controls_app!(f.state, log);
    let none: Option<&str> = None;
    let cases: Vec<(&str, Value)> = vec![
        ("multiplier", json!(0.5)),
        ("area.cells", json!({"cells": []})),
        ("area.cells[0]", json!({"cells": ["not-a-cell"]})),
        ("area.bbox", json!({"bbox": [1.0, 2.0]})),
        ("to", json!(now(&f) + 400 * 86_400_000i64)),
        ("from", json!(now(&f) - 3 * 86_400_000i64)),
        ("reason", json!("")),
    ];
    for (field, value) in cases {
        let mut body = cap_body(&f);
        let key = if field.starts_with("area") {
            "area"
        } else {
            field
        };
        body[key] = value;
        let (status, answer) = call!(
            app,
            Method::POST,
            "/v1/controls",
            LOOPBACK,
            none,
            Some(body)
        );
        assert_field_error(status, &answer, field);
    }
    let mut body = cap_body(&f);
    body["color"] = json!("red");
    let (status, _) = call!(
        app,
        Method::POST,
        "/v1/controls",
        LOOPBACK,
        none,
        Some(body)
    );
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(log.snapshot().records().is_empty());
}

#[actix_web::test]
async fn without_keys_only_loopback_peers_are_admins() {
    let f = fixture();
    let log = Arc::new(ControlLog::new(10_000));
    let app = controls_app!(f.state, log);
    let none: Option<&str> = None;
    let (status, _) = call!(
        app,
        Method::POST,
        "/v1/controls",
        REMOTE,
        none,
        Some(cap_body(&f))
    );
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call!(app, Method::GET, "/v1/controls", REMOTE, none, None);
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(log.snapshot().records().is_empty());
    // No peer address is not loopback; without a control log the routes
    // answer 404.
    let plain = app!(f.state);
    let (status, _) = get!(plain, "/v1/controls");
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "no peer address: not loopback"
    );
    let (status, _) = call!(plain, Method::GET, "/v1/controls", LOOPBACK, none, None);
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[actix_web::test]
async fn with_keys_the_admin_scope_is_needed_from_anywhere() {
    let mut f = fixture();
    f.state.auth = Arc::new(Auth::new(&AuthConfig {
        keys: vec![
            ApiKeyConfig {
                id: "reader".into(),
                sha256: hash_key("read-key"),
                scopes: vec![Scope::Read],
                rate_per_s: 1000.0,
                burst: 1000,
            },
            ApiKeyConfig {
                id: "ops".into(),
                sha256: hash_key("ops-key"),
                scopes: vec![Scope::Admin],
                rate_per_s: 1000.0,
                burst: 1000,
            },
        ],
    }));
    let log = Arc::new(ControlLog::new(10_000));
    let app = controls_app!(f.state, log);
    let none: Option<&str> = None;
    let (status, _) = call!(
        app,
        Method::POST,
        "/v1/controls",
        LOOPBACK,
        none,
        Some(cap_body(&f))
    );
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = call!(
        app,
        Method::POST,
        "/v1/controls",
        REMOTE,
        Some("read-key"),
        Some(cap_body(&f))
    );
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = call!(
        app,
        Method::POST,
        "/v1/controls",
        REMOTE,
        Some("ops-key"),
        Some(cap_body(&f))
    );
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[actix_web::test]
async fn the_map_draws_controls_and_names_them_in_the_cell_panel() {
    let f = fixture();
    let app = app!(f.state);
    let resp = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
    let page = String::from_utf8(test::read_body(resp).await.to_vec()).expect("utf-8");
    for needle in [
        "/v1/controls?active_at=",
        "id=\"controls\"",
        "detail-controls",
    ] {
        assert!(page.contains(needle), "{needle}");
    }
}

#[actix_web::test]
async fn the_openapi_document_lists_the_control_routes() {
    let doc = http::openapi_document(8, &fixture().state.limits, false);
    assert!(doc.pointer("/paths/~1v1~1controls/post").is_some());
    assert!(doc.pointer("/paths/~1v1~1controls/get").is_some());
    assert!(doc.pointer("/paths/~1v1~1controls~1{id}/delete").is_some());
}
