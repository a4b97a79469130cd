//! Every endpoint and error case of the HTTP API, on actix's test service
//! with a price table filled by hand.

#[macro_use]
mod support;

use std::sync::atomic::Ordering;

use actix_web::http::StatusCode;
use actix_web::{App, test};
use primetime::http;
use serde_json::{Value, json};
use support::*;

#[actix_web::test]
async fn price_of_a_surging_and_an_unpriced_location() {
    let f = fixture();
    let app = app!(f.state);
    let (status, body) = get!(
        app,
        &format!("/v1/price?lat={}&lng={}", STADIUM.0, STADIUM.1)
    );
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["multiplier"], f.last.multiplier.value());
    assert_eq!(body["priced"], true);
    assert_eq!(body["since_tick"], f.last.tick.0);
    assert_eq!(body["tick"], f.last.tick.0);
    assert_eq!(body["model_version"], "formula-v1");
    assert_eq!(body["stale"], false);
    assert_eq!(body["cell"], f.last.cell.to_string());

    let (status, body) = get!(app, "/v1/price?lat=48.8566&lng=2.3522");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["multiplier"], 1.0);
    assert_eq!(body["priced"], false);
    assert_eq!(body["since_tick"], Value::Null);
    assert_eq!(body["tick"], f.last.tick.0);
}

#[actix_web::test]
async fn price_rejects_bad_coordinates_naming_the_field() {
    let f = fixture();
    let app = app!(f.state);
    for (uri, field) in [
        ("/v1/price?lng=1", "lat"),
        ("/v1/price?lat=1", "lng"),
        ("/v1/price?lat=abc&lng=1", "lat"),
        ("/v1/price?lat=91&lng=1", "lat"),
        ("/v1/price?lat=NaN&lng=1", "lat"),
        ("/v1/price?lat=inf&lng=1", "lat"),
        ("/v1/price?lat=1&lng=-180.5", "lng"),
        ("/v1/price?lat=1&lng=1e400", "lng"),
    ] {
        let (status, body) = get!(app, uri);
        assert_field_error(status, &body, field);
    }
    let (status, _) = get!(app, "/v1/price?lat=%ZZ");
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[actix_web::test]
async fn stale_when_no_tick_was_published_recently() {
    let f = fixture();
    let app = app!(f.state);
    f.now.store(1_000_000 + 30_001, Ordering::Relaxed);
    let (_, body) = get!(app, "/v1/price?lat=1&lng=1");
    assert_eq!(body["stale"], true);
    let (status, body) = get!(app, "/readyz");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["status"], "not_ready");
}

#[actix_web::test]
async fn batch_prices_in_order_with_limits() {
    let f = fixture();
    let app = app!(f.state);
    let body =
        json!({"locations": [{"lat": STADIUM.0, "lng": STADIUM.1}, {"lat": 0.5, "lng": 0.5}]});
    let (status, resp) = post!(app, "/v1/prices", body.to_string().into_bytes());
    assert_eq!(status, StatusCode::OK);
    let prices = resp["prices"].as_array().unwrap();
    assert_eq!(prices.len(), 2);
    assert_eq!(prices[0]["multiplier"], f.last.multiplier.value());
    assert_eq!(prices[1]["priced"], false);
    assert_eq!(resp["tick"], f.last.tick.0);

    let thousand: Vec<Value> = (0..1000)
        .map(|i| json!({"lat": 10.0 + f64::from(i) * 1e-3, "lng": 1.0}))
        .collect();
    let (status, resp) = post!(
        app,
        "/v1/prices",
        json!({"locations": thousand}).to_string().into_bytes()
    );
    assert_eq!(status, StatusCode::OK);
    assert_eq!(resp["prices"].as_array().unwrap().len(), 1000);

    let too_many: Vec<Value> = (0..1001).map(|_| json!({"lat": 1, "lng": 1})).collect();
    let (status, resp) = post!(
        app,
        "/v1/prices",
        json!({"locations": too_many}).to_string().into_bytes()
    );
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{resp}");
    assert_eq!(resp["error"]["code"], "too_large");

    let huge = vec![b' '; 64 * 1024 + 1];
    let (status, resp) = post!(app, "/v1/prices", huge);
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{resp}");

    let (status, resp) = post!(app, "/v1/prices", b"{not json".to_vec());
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(resp["error"]["code"], "invalid_body");

    let (status, resp) = post!(app, "/v1/prices", b"{}".to_vec());
    assert_field_error(status, &resp, "locations");
    let (status, resp) = post!(app, "/v1/prices", br#"{"locations": 3}"#.to_vec());
    assert_field_error(status, &resp, "locations");
    let (status, resp) = post!(
        app,
        "/v1/prices",
        br#"{"locations": [{"lat": 1, "lng": 1}, {"lat": "x", "lng": 1}]}"#.to_vec()
    );
    assert_field_error(status, &resp, "locations[1].lat");
    let (status, resp) = post!(
        app,
        "/v1/prices",
        br#"{"locations": [{"lat": 1, "lng": 200}]}"#.to_vec()
    );
    assert_field_error(status, &resp, "locations[0].lng");
}

#[actix_web::test]
async fn cell_with_explanation_and_errors() {
    let f = fixture();
    let app = app!(f.state);
    let (status, body) = get!(app, &format!("/v1/cells/{}", f.last.cell));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["multiplier"], f.last.multiplier.value());
    let explanation = &body["explanation"];
    assert_eq!(
        explanation["features"]["supply"],
        f.last.explanation.features.supply
    );
    assert!(explanation["guardrails"].is_array());
    assert!(explanation["raw"].is_number());
    assert_eq!(explanation["previous"], f.last.explanation.previous.value());

    // A valid price cell that was never priced.
    let (status, body) = get!(app, "/v1/cells/881fb46621fffff");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["priced"], false);
    assert_eq!(body["explanation"], Value::Null);

    for bad in ["nope", "85283083fffffff", "8f283082adfffff0000"] {
        let (status, body) = get!(app, &format!("/v1/cells/{bad}"));
        assert_field_error(status, &body, "cell");
    }
}

#[actix_web::test]
async fn cells_in_a_bounding_box() {
    let f = fixture();
    let app = app!(f.state);
    let (status, body) = get!(app, "/v1/cells?bbox=-122.55,37.65,-122.30,37.85");
    assert_eq!(status, StatusCode::OK);
    let cells = body["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 1);
    assert_eq!(cells[0]["cell"], f.last.cell.to_string());
    assert_eq!(body["truncated"], false);
    let (_, body) = get!(app, "/v1/cells?bbox=0,0,1,1");
    assert!(body["cells"].as_array().unwrap().is_empty());
    for bad in [
        "/v1/cells",
        "/v1/cells?bbox=1,2,3",
        "/v1/cells?bbox=a,b,c,d",
        "/v1/cells?bbox=1,1,0,0",
        "/v1/cells?bbox=0,0,1,100",
    ] {
        let (status, body) = get!(app, bad);
        assert_field_error(status, &body, "bbox");
    }
}

#[actix_web::test]
async fn health_ready_metrics_openapi_and_unknown_paths() {
    let f = fixture();
    let app = app!(f.state);
    let (status, body) = get!(app, "/healthz");
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    let (status, body) = get!(app, "/readyz");
    assert_eq!(status, StatusCode::OK, "{body}");

    let resp =
        test::call_service(&app, test::TestRequest::get().uri("/metrics").to_request()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let text = String::from_utf8(test::read_body(resp).await.to_vec()).unwrap();
    for family in [
        "primetime_events_rejected_total{reason=\"future\"}",
        "primetime_watermark_lag_seconds",
        "primetime_tick_duration_seconds_bucket",
        "primetime_active_cells",
        "primetime_mailbox_depth{shard=\"0\"}",
        "primetime_decisions_published_total",
    ] {
        assert!(text.contains(family), "{family} missing");
    }

    let (status, body) = get!(app, "/openapi.json");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["openapi"], "3.1.0");
    for path in [
        "/v1/price",
        "/v1/prices",
        "/v1/cells/{cell}",
        "/v1/cells",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(body["paths"][path].is_object(), "{path} undocumented");
    }

    let (status, body) = get!(app, "/v1/nope");
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
}

#[actix_web::test]
async fn map_page_is_self_contained_and_bbox_carries_boundaries() {
    let f = fixture();
    let app = app!(f.state);
    let resp = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let html = String::from_utf8(test::read_body(resp).await.to_vec()).unwrap();
    assert!(html.contains(r#"<svg id="map""#));
    for id in [
        "watermark",
        "lag",
        "events-per-s",
        "rejects",
        "details",
        "detail-multiplier",
        "detail-guardrails",
    ] {
        assert!(html.contains(&format!(r#"id="{id}""#)), "#{id} missing");
    }
    // No network beyond this service: no absolute URLs except the SVG
    // namespace, no external scripts or styles.
    let external: Vec<&str> = html
        .match_indices("http")
        .map(|(i, _)| &html[i..(i + 40).min(html.len())])
        .collect();
    assert!(
        external
            .iter()
            .all(|u| u.starts_with("http://www.w3.org/2000/svg")),
        "{external:?}"
    );
    assert!(!html.contains("src=\"//") && !html.contains("href=\"//"));

    let (_, body) = get!(app, "/v1/cells?bbox=-122.55,37.65,-122.30,37.85");
    let cell = &body["cells"][0];
    let boundary = cell["boundary"].as_array().unwrap();
    assert_eq!(boundary.len(), 6);
    for vertex in boundary {
        let (lat, lng) = (vertex[0].as_f64().unwrap(), vertex[1].as_f64().unwrap());
        assert!(
            (lat - STADIUM.0).abs() < 0.01 && (lng - STADIUM.1).abs() < 0.01,
            "{vertex}"
        );
    }
    assert_eq!(cell["priced"], true);
}

#[actix_web::test]
async fn unsupported_methods_answer_405_with_allow() {
    let f = fixture();
    let app = app!(f.state);
    for (method, uri, allow) in [
        (
            actix_web::http::Method::POST,
            "/v1/price?lat=1&lng=1",
            "GET",
        ),
        (
            actix_web::http::Method::DELETE,
            "/v1/cells/881fb46621fffff",
            "GET",
        ),
        (actix_web::http::Method::PUT, "/metrics", "GET"),
        (actix_web::http::Method::PATCH, "/", "GET"),
        (actix_web::http::Method::GET, "/v1/prices", "POST"),
    ] {
        let req = test::TestRequest::default()
            .method(method.clone())
            .uri(uri)
            .to_request();
        let resp = test::call_service(&app, req).await;
        assert_eq!(
            resp.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {uri}"
        );
        let header = resp
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(header.as_deref(), Some(allow), "{method} {uri}");
        let body: Value = serde_json::from_slice(&test::read_body(resp).await).unwrap();
        assert_eq!(body["error"]["code"], "method_not_allowed");
        assert_eq!(body["error"]["status"], 405);
    }
    // Unknown paths stay 404, whatever the method.
    let req = test::TestRequest::delete().uri("/v1/nope").to_request();
    let resp = test::call_service(&app, req).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[actix_web::test]
async fn openapi_states_the_validation_bounds_and_error_answers() {
    let f = fixture();
    let app = app!(f.state);
    let (status, doc) = get!(app, "/openapi.json");
    assert_eq!(status, StatusCode::OK);
    let param = |path: &str, name: &str| -> Value {
        let op = doc["paths"][path]
            .as_object()
            .and_then(|m| m.values().next().cloned())
            .unwrap_or(Value::Null);
        op["parameters"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == name).cloned())
            .unwrap_or_else(|| panic!("{path} {name} undocumented"))
    };
    let lat = param("/v1/price", "lat");
    assert_eq!(
        (
            lat["schema"]["minimum"].as_f64(),
            lat["schema"]["maximum"].as_f64()
        ),
        (Some(-90.0), Some(90.0))
    );
    let lng = param("/v1/price", "lng");
    assert_eq!(
        (
            lng["schema"]["minimum"].as_f64(),
            lng["schema"]["maximum"].as_f64()
        ),
        (Some(-180.0), Some(180.0))
    );
    let cell = param("/v1/cells/{cell}", "cell");
    assert_eq!(cell["in"], "path");
    assert_eq!(
        cell["schema"]["pattern"],
        "^88[0-9a-fA-F]{7}[13579bBdDfF][fF]{5}$"
    );
    let bbox = param("/v1/cells", "bbox");
    assert!(
        bbox["schema"]["pattern"]
            .as_str()
            .is_some_and(|p| p.starts_with('^') && p.matches(',').count() == 3)
    );
    assert_eq!(bbox["required"], true);

    let body = &doc["paths"]["/v1/prices"]["post"]["requestBody"]["description"];
    assert!(
        body.as_str().is_some_and(|d| d.contains("65536 bytes")),
        "{body}"
    );
    let batch = &doc["components"]["schemas"]["BatchRequest"];
    assert_eq!(batch["properties"]["locations"]["maxItems"], 1000);
    let location = &doc["components"]["schemas"]["Location"];
    assert_eq!(
        location["properties"]["lat"]["maximum"].as_f64(),
        Some(90.0)
    );
    assert_eq!(
        location["properties"]["lng"]["minimum"].as_f64(),
        Some(-180.0)
    );

    for (path, method, statuses) in [
        ("/v1/price", "get", &["200", "400"][..]),
        ("/v1/prices", "post", &["200", "400", "413"]),
        ("/v1/cells/{cell}", "get", &["200", "400", "404"]),
        ("/v1/cells", "get", &["200", "400"]),
        ("/readyz", "get", &["200", "503"]),
    ] {
        let responses = &doc["paths"][path][method]["responses"];
        for s in statuses {
            assert!(
                responses[s].is_object(),
                "{method} {path}: {s} undocumented"
            );
        }
        for s in statuses.iter().filter(|s| s.starts_with('4')) {
            assert_eq!(
                responses[s]["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorBody",
                "{method} {path} {s}"
            );
        }
    }
}

#[actix_web::test]
async fn cell_of_the_right_shape_that_is_no_h3_cell_is_not_found() {
    let f = fixture();
    let app = app!(f.state);
    // Base cell 127 (> 121): the shape of a resolution-8 index, no cell.
    let (status, body) = get!(app, "/v1/cells/88fe000001fffff");
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
}

#[actix_web::test]
async fn every_error_body_has_code_field_and_retryable() {
    let f = fixture();
    let app = app!(f.state);
    let price = |q: &str| format!("/v1/price?{q}");
    for uri in [
        price("lat=x&lng=1"),
        price("lat=1"),
        price("lat=1&lng=1&at=0"),
        price("lat=1&lng=1&at=253402300799999"),
        "/v1/cells/nope".to_owned(),
        "/v1/cells/8f2830828052d25".to_owned(),
        "/nowhere".to_owned(),
    ] {
        let (status, body) = get!(app, uri);
        let e = &body["error"];
        assert!(status.is_client_error(), "{uri}: {status}");
        assert_eq!(e["status"], status.as_u16(), "{uri}");
        assert!(
            e["code"].as_str().is_some_and(|c| !c.is_empty()),
            "{uri}: {body}"
        );
        assert!(
            e.get("field").is_some(),
            "{uri}: field is always present: {body}"
        );
        assert!(e["retryable"].is_boolean(), "{uri}: {body}");
        assert!(e["message"].is_string(), "{uri}: {body}");
    }
}

#[actix_web::test]
async fn openapi_covers_quotes_and_history() {
    let f = fixture();
    let app = app!(f.state);
    let (_, doc) = get!(app, "/openapi.json");
    let paths = &doc["paths"];
    for (path, method, statuses) in [
        ("/v1/quotes", "post", &["200", "400", "413"][..]),
        (
            "/v1/quotes/redeem",
            "post",
            &["200", "400", "409", "413"][..],
        ),
        (
            "/v1/cells/{cell}/history",
            "get",
            &["200", "400", "404", "410", "422"][..],
        ),
        ("/v1/price", "get", &["200", "400", "410", "422"][..]),
    ] {
        let op = &paths[path][method];
        for s in statuses {
            assert!(op["responses"][*s].is_object(), "{path} {s}");
        }
    }
    let history = &paths["/v1/cells/{cell}/history"]["get"]["parameters"];
    let cell = history
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "cell"))
        .expect("cell parameter");
    assert!(cell["schema"]["pattern"].is_string(), "{cell}");
    let at = paths["/v1/price"]["get"]["parameters"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "at"))
        .cloned()
        .expect("at parameter");
    assert_eq!(at["required"], false);
    assert_eq!(at["schema"]["minimum"], 0);
    let link = &paths["/v1/quotes"]["post"]["responses"]["200"]["links"]["redeem"];
    assert_eq!(
        link["operationId"],
        paths["/v1/quotes/redeem"]["post"]["operationId"]
    );
    assert_eq!(link["requestBody"]["quote_id"], "$response.body#/quote_id");
    let schemas = &doc["components"]["schemas"];
    assert!(schemas["ErrorDetail"]["properties"]["retryable"].is_object());
    assert!(schemas["ErrorBody"]["properties"]["quote"].is_object());
}
