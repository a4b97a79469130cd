//! Quotes and redeem over HTTP: valid, expired (409 + a fresh quote),
//! tampered, rotated and unknown keys, redeem twice, counters and audit.

#[macro_use]
mod support;

use std::sync::atomic::Ordering;

use actix_web::http::StatusCode;
use actix_web::{App, test};
use primetime::http;
use primetime::quotes::{AuditKind, QuoteConfig, RedeemOutcome};
use serde_json::{Value, json};
use support::*;

fn quote_body() -> String {
    json!({"lat": STADIUM.0, "lng": STADIUM.1, "rider_id": "rider-7"}).to_string()
}

fn redeem_body(id: &Value) -> String {
    json!({ "quote_id": id }).to_string()
}

#[actix_web::test]
async fn quote_then_redeem_twice_is_the_same_answer() {
    let f = fixture();
    let app = app!(f.state);
    let (status, quote) = post!(app, "/v1/quotes", quote_body());
    assert_eq!(status, StatusCode::OK, "{quote}");
    assert_eq!(quote["cell"], f.last.cell.to_string());
    assert_eq!(quote["multiplier"], f.last.multiplier.value());
    assert_eq!(quote["since_tick"], f.last.tick.0);
    assert_eq!(quote["model_version"], f.last.model_version.as_ref());
    assert_eq!(quote["issued_at"], 1_000_500);
    assert_eq!(quote["expires_at"], 1_000_500 + 120_000);
    assert_eq!(quote["rider_id"], "rider-7");
    assert_eq!(
        quote["confirmation_required"],
        f.last.multiplier.value() >= 2.0
    );
    let id = &quote["quote_id"];
    assert!(id.as_str().is_some_and(|s| s.starts_with("q1.k1.")), "{id}");

    f.now.store(1_000_500 + 119_999, Ordering::Relaxed);
    let (status, first) = post!(app, "/v1/quotes/redeem", redeem_body(id));
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["honoured"], true);
    assert_eq!(first["multiplier"], quote["multiplier"]);
    assert_eq!(first["quote_id"], *id);
    let (status, second) = post!(app, "/v1/quotes/redeem", redeem_body(id));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first, second, "redeem is idempotent");

    let q = &f.state.quotes.metrics;
    assert_eq!(q.issued.load(Ordering::Relaxed), 1);
    assert_eq!(q.redeemed_count(RedeemOutcome::Honoured), 2);
    let events = f.audit.events();
    assert_eq!(events.len(), 3);
    assert_eq!(events[0].kind, AuditKind::Issued);
    assert_eq!(
        events[2].kind,
        AuditKind::Redeemed {
            outcome: RedeemOutcome::Honoured
        }
    );
    let (_, metrics) = {
        let resp =
            test::call_service(&app, test::TestRequest::get().uri("/metrics").to_request()).await;
        (resp.status(), test::read_body(resp).await)
    };
    let text = String::from_utf8_lossy(&metrics);
    assert!(text.contains("primetime_quotes_issued_total 1"), "{text}");
    assert!(
        text.contains("primetime_quotes_redeemed_total{outcome=\"honoured\"} 2"),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"));
}

#[actix_web::test]
async fn expired_quote_answers_409_with_a_fresh_quote() {
    let f = fixture();
    let app = app!(f.state);
    let (_, quote) = post!(app, "/v1/quotes", quote_body());
    f.now.store(1_000_500 + 120_000, Ordering::Relaxed);
    for _ in 0..2 {
        let (status, body) = post!(app, "/v1/quotes/redeem", redeem_body(&quote["quote_id"]));
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["error"]["code"], "quote_expired");
        assert_eq!(body["error"]["field"], "quote_id");
        assert_eq!(body["error"]["retryable"], false);
        let fresh = &body["quote"];
        assert_ne!(fresh["quote_id"], quote["quote_id"]);
        assert_eq!(fresh["cell"], quote["cell"]);
        assert_eq!(fresh["rider_id"], "rider-7");
        assert_eq!(fresh["issued_at"], 1_000_500 + 120_000);
        // The fresh quote redeems.
        let (status, ok) = post!(app, "/v1/quotes/redeem", redeem_body(&fresh["quote_id"]));
        assert_eq!(status, StatusCode::OK, "{ok}");
    }
    let q = &f.state.quotes.metrics;
    assert_eq!(q.redeemed_count(RedeemOutcome::Expired), 2);
    assert_eq!(q.issued.load(Ordering::Relaxed), 3);
}

#[actix_web::test]
async fn tampered_and_forged_quotes_answer_400() {
    let f = fixture();
    let app = app!(f.state);
    let (_, quote) = post!(app, "/v1/quotes", quote_body());
    let id = quote["quote_id"].as_str().unwrap().to_owned();
    let parts: Vec<&str> = id.split('.').collect();
    // Claims of another quote under this one's signature.
    let (_, other) = post!(
        app,
        "/v1/quotes",
        json!({"lat": 37.70, "lng": -122.45}).to_string()
    );
    let other_claims = other["quote_id"]
        .as_str()
        .unwrap()
        .split('.')
        .nth(2)
        .unwrap();
    for bad in [
        format!("{}.{}.{other_claims}.{}", parts[0], parts[1], parts[3]),
        format!("{}.k0.{}.{}", parts[0], parts[2], parts[3]),
        format!("{}x", id),
        "hello".to_owned(),
    ] {
        let (status, body) = post!(app, "/v1/quotes/redeem", redeem_body(&json!(bad)));
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "invalid_quote", "{bad}");
        assert_eq!(body["error"]["field"], "quote_id");
        assert_eq!(body["error"]["retryable"], false);
    }
    let (status, body) = post!(
        app,
        "/v1/quotes/redeem",
        redeem_body(&json!(format!("q1.k9.{}.{}", parts[2], parts[3])))
    );
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "unknown_quote_key", "{body}");
    assert_eq!(
        f.state
            .quotes
            .metrics
            .redeemed_count(RedeemOutcome::Invalid),
        4
    );
    assert!(f.audit.events().iter().all(|e| match e.kind {
        AuditKind::Redeemed { .. } => e.claims.is_none(),
        AuditKind::Issued => e.claims.is_some(),
    }));
}

#[actix_web::test]
async fn rotated_keys_verify_old_quotes_until_retired() {
    // Before the rotation only k0 signs.
    let before = fixture_with(&QuoteConfig {
        keys: vec![key("k0")],
        ..QuoteConfig::default()
    });
    let app = app!(before.state);
    let (_, quote) = post!(app, "/v1/quotes", quote_body());
    assert!(quote["quote_id"].as_str().unwrap().starts_with("q1.k0."));

    // After: k1 signs, k0 still verifies (another instance, same keys).
    let after = fixture();
    let app = app!(after.state);
    let (status, body) = post!(app, "/v1/quotes/redeem", redeem_body(&quote["quote_id"]));
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["multiplier"], quote["multiplier"]);

    // k0 retired.
    let retired = fixture_with(&QuoteConfig {
        keys: vec![key("k1")],
        ..QuoteConfig::default()
    });
    let app = app!(retired.state);
    let (status, body) = post!(app, "/v1/quotes/redeem", redeem_body(&quote["quote_id"]));
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "unknown_quote_key");
}

#[actix_web::test]
async fn quote_requests_are_validated_field_by_field() {
    let f = fixture();
    let app = app!(f.state);
    for (body, field) in [
        (json!({"lng": 1.0}), "lat"),
        (json!({"lat": 91.0, "lng": 1.0}), "lat"),
        (json!({"lat": 1.0, "lng": "x"}), "lng"),
        (json!({"lat": 1.0, "lng": 1.0, "rider_id": 5}), "rider_id"),
        (
            json!({"lat": 1.0, "lng": 1.0, "session_id": "s".repeat(129)}),
            "session_id",
        ),
        (json!({"lat": 1.0, "lng": 1.0, "rider_id": ""}), "rider_id"),
        (
            json!({"lat": 1.0, "lng": 1.0, "rider_id": "a\"b"}),
            "rider_id",
        ),
    ] {
        let (status, resp) = post!(app, "/v1/quotes", body.to_string());
        assert_field_error(status, &resp, field);
        assert_eq!(resp["error"]["retryable"], false);
    }
    // Two ids of full length still make a token that redeems.
    let long = json!({"lat": 1.0, "lng": 1.0, "rider_id": "r".repeat(128), "session_id": "s@-:.".repeat(25)});
    let (status, quote) = post!(app, "/v1/quotes", long.to_string());
    assert_eq!(status, StatusCode::OK, "{quote}");
    let (status, body) = post!(
        app,
        "/v1/quotes/redeem",
        json!({"quote_id": quote["quote_id"]}).to_string()
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, resp) = post!(app, "/v1/quotes", "[1]");
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(resp["error"]["code"], "invalid_body");
    for body in [json!({}), json!({"quote_id": ""}), json!({"quote_id": 3})] {
        let (status, resp) = post!(app, "/v1/quotes/redeem", body.to_string());
        assert_field_error(status, &resp, "quote_id");
    }
    let req = test::TestRequest::get().uri("/v1/quotes").to_request();
    let resp = test::call_service(&app, req).await;
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    let _ = http::MAX_BATCH;
}
