//! The HTTP API (actix-web): routes, shared state, limits.
//!
//! Unpriced cells answer `multiplier: 1.0, priced: false` with status 200
//! (never 404): a ride backend can quote any valid location the same way.
//! Invalid input answers 400 with a JSON error naming the field; bodies
//! over `max_body_bytes` and batches over 1,000 locations answer 413.

mod api;
mod error;
mod openapi;

use std::sync::Arc;

use actix_web::web;
use primetime_core::Geo;

pub use error::ApiError;

use crate::metrics::Metrics;
use crate::table::PriceTable;

/// Most locations in one `POST /v1/prices`.
pub const MAX_BATCH: usize = 1_000;

/// Request limits and freshness threshold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_bbox_cells: usize,
    pub stale_after_ms: i64,
}

/// What handlers share. `now_ms` is the wall clock (injectable for tests);
/// it is used only for staleness and lag, never for prices.
#[derive(Clone)]
pub struct AppState {
    pub table: Arc<PriceTable>,
    pub metrics: Arc<Metrics>,
    pub geo: Geo,
    pub limits: Limits,
    pub now_ms: Arc<dyn Fn() -> i64 + Send + Sync>,
}

/// Wall clock in ms since the Unix epoch.
pub fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Registers every route on an actix-web app.
pub fn configure(cfg: &mut web::ServiceConfig, state: AppState) {
    cfg.app_data(web::Data::new(state))
        .route("/", web::get().to(index))
        .route("/v1/price", web::get().to(api::price))
        .route("/v1/prices", web::post().to(api::prices))
        .route("/v1/cells", web::get().to(api::cells))
        .route("/v1/cells/{cell}", web::get().to(api::cell))
        .route("/v1/status", web::get().to(api::service_status))
        .route("/healthz", web::get().to(api::healthz))
        .route("/readyz", web::get().to(api::readyz))
        .route("/metrics", web::get().to(api::metrics))
        .route("/openapi.json", web::get().to(openapi::openapi))
        .default_service(web::to(api::not_found));
}

/// `GET /`: a landing page pointing at the API.
async fn index() -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(INDEX_HTML)
}

const INDEX_HTML: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>primetime</title></head>
<body style="font-family: sans-serif; max-width: 48rem; margin: 2rem auto">
<h1>primetime</h1>
<p>Live surge prices per H3 cell. Try:</p>
<ul>
<li><a href="/v1/cells?bbox=-122.55,37.65,-122.30,37.85">/v1/cells?bbox=-122.55,37.65,-122.30,37.85</a> &mdash; priced cells in San Francisco</li>
<li><a href="/v1/price?lat=37.7786&amp;lng=-122.3893">/v1/price?lat=37.7786&amp;lng=-122.3893</a> &mdash; the stadium</li>
<li><a href="/v1/status">/v1/status</a>, <a href="/metrics">/metrics</a>, <a href="/openapi.json">/openapi.json</a></li>
</ul></body></html>
"#;
