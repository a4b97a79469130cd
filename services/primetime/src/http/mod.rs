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
use crate::table::{ActiveView, PriceTable};

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
    /// Active cells per shard, for the map (cells without a decision).
    pub active: Arc<ActiveView>,
    pub metrics: Arc<Metrics>,
    pub geo: Geo,
    pub limits: Limits,
    pub now_ms: Arc<dyn Fn() -> i64 + Send + Sync>,
    /// Set in Kafka mode with Redis: the shared price table.
    pub remote: Arc<std::sync::OnceLock<RemotePrices>>,
}

/// The shared Redis price table, for cells this instance does not own
/// (or does not know completely after a restart).
#[derive(Clone)]
pub struct RemotePrices {
    pub store: crate::redis::RedisStore,
    /// Whether this instance owns (prices) the cell now.
    pub owned: Arc<dyn Fn(primetime_core::CellId) -> bool + Send + Sync>,
    /// The in-memory table holds every owned cell's current decision
    /// (false after a restore or rewind: cells unchanged since are only in
    /// Redis).
    pub complete: Arc<std::sync::atomic::AtomicBool>,
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

/// `GET /`: the live map for operators — one self-contained page (no CDN,
/// no tiles, no network beyond this service): hexagons of the visible
/// area coloured by multiplier, refreshed every 2 s from `/v1/cells?bbox=`,
/// pan and zoom, click for the explanation, watermark/lag/events/rejects
/// from `/v1/status` in the header.
async fn index() -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("cache-control", "no-cache"))
        .body(MAP_HTML)
}

const MAP_HTML: &str = include_str!("map.html");
