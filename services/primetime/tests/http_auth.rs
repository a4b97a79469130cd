//! API keys over HTTP: missing, invalid, wrong scope, over the limit (429
//! with `Retry-After`), both headers, open operational routes, and the
//! OpenAPI document's security when keys are configured.

#[macro_use]
mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use actix_web::http::StatusCode;
use actix_web::{App, test};
use primetime::auth::{ApiKeyConfig, Auth, AuthConfig, Scope, hash_key};
use primetime::http;
use serde_json::{Value, json};
use support::*;

fn keyed() -> Fixture {
    let mut f = fixture();
    f.state.auth = Arc::new(Auth::new(&AuthConfig {
        keys: vec![
            ApiKeyConfig {
                id: "reader".into(),
                sha256: hash_key("read-key"),
                scopes: vec![Scope::Read],
                rate_per_s: 1.0,
                burst: 3,
            },
            ApiKeyConfig {
                id: "backend".into(),
                sha256: hash_key("backend-key"),
                scopes: vec![Scope::Read, Scope::Quote],
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
    f
}

fn price_uri() -> String {
    format!("/v1/price?lat={}&lng={}", STADIUM.0, STADIUM.1)
}

/// Status, body and `Retry-After` of a request with `headers`.
macro_rules! call {
    ($app:expr, $req:expr, $headers:expr) => {{
        let mut req = $req;
        for (name, value) in $headers {
            req = req.insert_header((name, value));
        }
        let resp = test::call_service(&$app, req.to_request()).await;
        let status = resp.status();
        let retry = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = test::read_body(resp).await;
        (
            status,
            serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null),
            retry,
        )
    }};
}

#[actix_web::test]
async fn missing_invalid_and_valid_keys() {
    let f = keyed();
    let app = app!(f.state);
    let get = || test::TestRequest::get().uri(&price_uri());
    let none: [(&str, &str); 0] = [];
    let (status, body, _) = call!(app, get(), none);
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "missing_api_key");
    assert_eq!(body["error"]["retryable"], false);
    assert!(body["error"]["field"].is_null());
    for headers in [
        [("authorization", "Bearer wrong")],
        [("x-api-key", "read-key ")],
        [("authorization", "Basic read-key")],
    ] {
        let (status, body, _) = call!(app, get(), headers);
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{headers:?}");
        assert_ne!(body["error"]["code"], "", "{body}");
    }
    for headers in [
        [("authorization", "Bearer backend-key")],
        [("authorization", "bearer backend-key")],
        [("x-api-key", "backend-key")],
    ] {
        let (status, body, _) = call!(app, get(), headers);
        assert_eq!(status, StatusCode::OK, "{headers:?}: {body}");
    }
    // Operational routes stay open.
    for uri in ["/healthz", "/readyz", "/metrics", "/openapi.json", "/"] {
        let (status, _, _) = call!(app, test::TestRequest::get().uri(uri), none);
        assert_ne!(status, StatusCode::UNAUTHORIZED, "{uri}");
    }
}

#[actix_web::test]
async fn scopes_per_route() {
    let f = keyed();
    let app = app!(f.state);
    let quote = || {
        test::TestRequest::post()
            .uri("/v1/quotes")
            .insert_header(("content-type", "application/json"))
            .set_payload(json!({"lat": STADIUM.0, "lng": STADIUM.1}).to_string())
    };
    let (status, body, _) = call!(app, quote(), [("x-api-key", "read-key")]);
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "insufficient_scope");
    let (status, _, _) = call!(app, quote(), [("x-api-key", "backend-key")]);
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = call!(app, quote(), [("x-api-key", "ops-key")]);
    assert_eq!(status, StatusCode::OK, "admin implies every scope");
    let status_req = || test::TestRequest::get().uri("/v1/status");
    let (status, _, _) = call!(app, status_req(), [("x-api-key", "backend-key")]);
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = call!(app, status_req(), [("x-api-key", "ops-key")]);
    assert_eq!(status, StatusCode::OK);
}

#[actix_web::test]
async fn over_the_limit_answers_429_with_retry_after() {
    let f = keyed();
    let app = app!(f.state);
    let get = || test::TestRequest::get().uri(&price_uri());
    for _ in 0..3 {
        let (status, _, _) = call!(app, get(), [("x-api-key", "read-key")]);
        assert_eq!(status, StatusCode::OK);
    }
    let (status, body, retry) = call!(app, get(), [("x-api-key", "read-key")]);
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(body["error"]["retryable"], true);
    assert_eq!(retry.as_deref(), Some("1"));
    // Another key has its own bucket; a second later one token is back.
    let (status, _, _) = call!(app, get(), [("x-api-key", "backend-key")]);
    assert_eq!(status, StatusCode::OK);
    f.now.fetch_add(1_000, Ordering::Relaxed);
    let (status, _, _) = call!(app, get(), [("x-api-key", "read-key")]);
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = call!(app, get(), [("x-api-key", "read-key")]);
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let resp =
        test::call_service(&app, test::TestRequest::get().uri("/metrics").to_request()).await;
    let text = String::from_utf8(test::read_body(resp).await.to_vec()).unwrap();
    assert!(
        text.contains("primetime_api_denied_total{reason=\"rate_limited\"} 2"),
        "{text}"
    );
}

#[actix_web::test]
async fn openapi_requires_keys_only_when_configured() {
    let open = fixture();
    let app = app!(open.state);
    let (_, doc) = get!(app, "/openapi.json");
    assert!(doc["components"]["securitySchemes"].is_null());
    assert!(doc["paths"]["/v1/price"]["get"]["responses"]["401"].is_null());

    let f = keyed();
    let app = app!(f.state);
    let (_, doc) = get!(app, "/openapi.json");
    assert_eq!(
        doc["components"]["securitySchemes"]["api_key"]["name"],
        "x-api-key"
    );
    for (path, method) in [
        ("/v1/price", "get"),
        ("/v1/prices", "post"),
        ("/v1/quotes", "post"),
        ("/v1/quotes/redeem", "post"),
        ("/v1/cells/{cell}/history", "get"),
        ("/v1/status", "get"),
    ] {
        let op = &doc["paths"][path][method];
        assert_eq!(op["security"].as_array().map(Vec::len), Some(2), "{path}");
        for status in ["401", "403", "429"] {
            assert!(op["responses"][status].is_object(), "{path} {status}");
        }
    }
    assert!(doc["paths"]["/healthz"]["get"]["security"].is_null());
    let _ = http::MAX_BATCH;
}
