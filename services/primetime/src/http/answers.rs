//! What the JSON API answers, as types: each handler serializes one of
//! these, and the OpenAPI document describes them from the same types.

use std::collections::BTreeMap;

use primetime_core::{CellId, Tick};
use serde::Serialize;
use utoipa::ToSchema;

/// The price of one location or cell.
#[derive(Debug, Serialize, ToSchema)]
pub struct PriceAnswer<'a> {
    /// H3 index (hex) of the cell at the price resolution.
    #[schema(value_type = String, example = "8828308281fffff")]
    pub cell: CellId,
    #[schema(minimum = 1.0)]
    pub multiplier: f64,
    /// `false`: no decision exists for the cell (never surged, or settled
    /// back at 1.0 long ago); the multiplier is then 1.0.
    pub priced: bool,
    /// Tick since which this multiplier applies (`null` when unpriced).
    #[schema(value_type = Option<i64>)]
    pub since_tick: Option<Tick>,
    /// The newest fired tick: the answer is current as of its end.
    #[schema(value_type = Option<i64>)]
    pub tick: Option<Tick>,
    pub model_version: &'a str,
    /// No tick published within `stale_after_ms`, or the shared price
    /// table could not be read (answered from memory).
    pub stale: bool,
    /// `GET /v1/price?at=` only: the time asked; `tick` is then the tick
    /// in force at it and `stale` is `false` (the past does not go stale).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<i64>,
    /// The operator controls (ids, `GET /v1/controls`) that decided this
    /// multiplier; absent when none changed it (and for `at=` answers,
    /// whose history keeps only the multiplier).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub controls: Vec<u64>,
}

/// A cell's price with its centre and the decision's explanation.
#[derive(Debug, Serialize, ToSchema)]
pub struct CellAnswer<'a> {
    #[serde(flatten)]
    pub price: PriceAnswer<'a>,
    pub lat: f64,
    pub lng: f64,
    /// Features, raw model output, guardrails (`null` when unpriced).
    #[schema(value_type = Option<Object>)]
    pub explanation: serde_json::Value,
}

/// The answer of `POST /v1/prices`: one price per location, in order.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchAnswer<'a> {
    pub prices: Vec<PriceAnswer<'a>>,
    #[schema(value_type = Option<i64>)]
    pub tick: Option<Tick>,
    pub model_version: &'a str,
    pub stale: bool,
}

/// One cell for the map: price, centre and boundary (6 decimals, ~0.1 m).
#[derive(Debug, Serialize, ToSchema)]
pub struct MapCell {
    #[schema(value_type = String)]
    pub cell: CellId,
    pub multiplier: f64,
    pub priced: bool,
    #[schema(value_type = Option<i64>)]
    pub since_tick: Option<Tick>,
    pub lat: f64,
    pub lng: f64,
    /// Vertices as `[lat, lng]`.
    pub boundary: Vec<[f64; 2]>,
}

/// The answer of `GET /v1/cells`: priced cells (most expensive first),
/// then active cells without a decision, at most `max_bbox_cells`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CellsAnswer<'a> {
    pub cells: Vec<MapCell>,
    /// More cells matched than were answered.
    pub truncated: bool,
    #[schema(value_type = Option<i64>)]
    pub tick: Option<Tick>,
    pub model_version: &'a str,
    pub stale: bool,
}

/// The answer of `GET /healthz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: &'static str,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadyState {
    Ready,
    NotReady,
}

/// The answer of `GET /readyz` (200 when ready, 503 otherwise).
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness<'a> {
    pub status: ReadyState,
    /// Why the service is not ready (empty when ready).
    pub reasons: Vec<&'static str>,
    /// What works in a degraded way (ready all the same).
    pub degraded: Vec<&'static str>,
    #[schema(value_type = Option<i64>)]
    pub tick: Option<Tick>,
    pub model_version: &'a str,
    pub stale: bool,
}

/// The answer of `GET /v1/status`: watermark, lag, throughput, rejects.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceStatus<'a> {
    #[schema(value_type = Option<i64>)]
    pub tick: Option<Tick>,
    pub model_version: &'a str,
    pub stale: bool,
    /// Service watermark, ms since the Unix epoch (`null` before data).
    pub watermark_ms: Option<i64>,
    pub watermark_lag_ms: Option<i64>,
    pub events_accepted: u64,
    /// Rejected records by reason.
    pub rejected: BTreeMap<&'static str, u64>,
    pub active_cells: u64,
    pub model_fallback: bool,
    pub priced_cells: usize,
    /// `null` when not consuming from Kafka.
    pub kafka_assigned_partitions: Option<i64>,
    pub ticks_fired: u64,
}

/// One decision of a cell's history.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryEntry {
    #[schema(minimum = 1.0)]
    pub multiplier: f64,
    /// `false`: no decision (1.0).
    pub priced: bool,
    /// The tick that decided it (`null` when unpriced).
    pub since_tick: Option<i64>,
    /// In force from this time (the tick's end), ms since the Unix epoch.
    pub since_ms: Option<i64>,
    pub model_version: Option<String>,
}

/// The answer of `GET /v1/cells/{cell}/history`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryAnswer {
    #[schema(value_type = String, example = "8828308281fffff")]
    pub cell: CellId,
    pub from: i64,
    /// The end asked, capped at `known_until_ms`, and at least `from`.
    pub to: i64,
    /// The decision in force at `from`.
    pub at_from: HistoryEntry,
    /// Every change after `from` up to `to`, oldest first.
    pub changes: Vec<HistoryEntry>,
    /// Decisions of this cell are known here up to this time: the end of
    /// the newest fired tick, or for a cell another instance prices, of
    /// the tick through which its prices are proved read from the topic.
    pub known_until_ms: Option<i64>,
    /// The earliest time the history answers for any cell.
    pub retained_from_ms: Option<i64>,
}

/// What a quote promises (issued, or honoured at redeem).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QuoteTerms {
    /// The signed token to redeem; opaque to clients (at most 1,024
    /// characters).
    pub quote_id: String,
    #[schema(value_type = String, example = "8828308281fffff")]
    pub cell: CellId,
    #[schema(minimum = 1.0)]
    pub multiplier: f64,
    /// `false`: no decision existed for the cell (the multiplier is 1.0).
    pub priced: bool,
    /// Tick since which the multiplier applied when quoted.
    pub since_tick: Option<i64>,
    /// The newest fired tick when quoted.
    pub tick: Option<i64>,
    pub model_version: String,
    /// When the quote was issued, ms since the Unix epoch.
    pub issued_at: i64,
    /// Redeemable until this instant (exclusive), ms since the Unix epoch.
    pub expires_at: i64,
    /// The multiplier is at or above the configured threshold: show the
    /// rider the multiplier and have it confirmed before booking.
    pub confirmation_required: bool,
    pub rider_id: Option<String>,
    pub session_id: Option<String>,
}

/// The answer of `POST /v1/quotes` (and the fresh quote of a 409).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QuoteAnswer {
    #[serde(flatten)]
    pub terms: QuoteTerms,
    /// As in `GET /v1/price`: the price may be out of date.
    pub stale: bool,
}

/// The answer of a valid `POST /v1/quotes/redeem`: the quote's terms (the
/// same answer however often it is redeemed while valid).
#[derive(Debug, Serialize, ToSchema)]
pub struct RedeemAnswer {
    #[serde(flatten)]
    pub terms: QuoteTerms,
    /// Always `true`: charge `multiplier`.
    pub honoured: bool,
}

/// Every error: `{"error": {...}}`; a 409 on redeem adds `quote`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody<'a> {
    pub error: ErrorDetail<'a>,
    /// 409 `quote_expired` only: a fresh quote for the same cell.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quote: Option<&'a QuoteAnswer>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail<'a> {
    /// The HTTP status, repeated.
    pub status: u16,
    /// Machine-readable reason: `invalid_field`, `invalid_body`,
    /// `too_large`, `bad_request`, `not_found`, `method_not_allowed`,
    /// `invalid_quote`, `unknown_quote_key`, `quote_expired`,
    /// `outside_retention`, `not_yet_known`, `missing_api_key`,
    /// `invalid_api_key`, `insufficient_scope`, `rate_limited`.
    pub code: &'static str,
    /// The offending parameter or body field, when there is one.
    pub field: Option<&'a str>,
    pub message: String,
    /// Whether the same request can succeed if retried unchanged (later:
    /// after `Retry-After` when that header is sent). `false`: change the
    /// request first.
    pub retryable: bool,
}
