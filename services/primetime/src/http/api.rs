//! Handlers of the JSON API (DESIGN §6).

use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt as _;
use primetime_core::{CellId, Tick};
use serde::Serialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::{AppState, MAX_BATCH};
use crate::table::PricedCell;
use std::sync::Arc;

/// The price of one location or cell.
#[derive(Debug, Serialize)]
pub struct PriceAnswer<'a> {
    pub cell: CellId,
    pub multiplier: f64,
    /// `false`: no decision exists for the cell (never surged, or settled
    /// back at 1.0 long ago); the multiplier is then 1.0.
    pub priced: bool,
    /// Tick since which this multiplier applies (`null` when unpriced).
    pub since_tick: Option<Tick>,
    /// The newest fired tick: the answer is current as of its end.
    pub tick: Option<Tick>,
    pub model_version: &'a str,
    pub stale: bool,
}

struct Status {
    tick: Option<Tick>,
    model_version: std::sync::Arc<String>,
    stale: bool,
}

fn status(state: &AppState) -> Status {
    let now = (state.now_ms)();
    let stale = state
        .table
        .last_publish_wall_ms()
        .is_none_or(|t| now.saturating_sub(t) > state.limits.stale_after_ms);
    Status {
        tick: state.table.last_tick(),
        model_version: state.table.model_version(),
        stale,
    }
}

/// A decision read back from the shared Redis table.
struct RemoteDecision {
    multiplier: f64,
    tick: Tick,
    model_version: String,
    explanation: Value,
}

/// Where a cell's answer comes from.
enum Found<'a> {
    Local(Option<&'a PricedCell>),
    /// `None`: Redis has no decision for the cell (it is at 1.0).
    Remote(Option<&'a RemoteDecision>),
    /// Redis was needed but failed: the local answer, marked stale.
    Degraded(Option<&'a PricedCell>),
}

/// Decisions for `cells`: from memory, or from Redis for cells another
/// instance owns (or that memory may lack after a restart). A Redis that
/// fails degrades to the memory answer marked stale: never an error.
struct Lookup {
    local: Vec<Option<Arc<PricedCell>>>,
    /// Per cell: `None` = answered locally; `Some(Ok(d))` from Redis;
    /// `Some(Err(()))` Redis failed.
    remote: Vec<Option<Result<Option<RemoteDecision>, ()>>>,
}

impl Lookup {
    fn found(&self, i: usize) -> Found<'_> {
        let local = self.local[i].as_deref();
        match &self.remote[i] {
            None => Found::Local(local),
            Some(Ok(d)) => Found::Remote(d.as_ref()),
            Some(Err(())) => Found::Degraded(local),
        }
    }
}

async fn lookup(state: &AppState, cells: &[CellId]) -> Lookup {
    let local: Vec<_> = cells.iter().map(|c| state.table.get(*c)).collect();
    let mut remote: Vec<Option<Result<Option<RemoteDecision>, ()>>> =
        (0..cells.len()).map(|_| None).collect();
    let Some(r) = state.remote.get() else {
        return Lookup { local, remote };
    };
    let complete = r.complete.load(std::sync::atomic::Ordering::Relaxed);
    let wanted: Vec<usize> = (0..cells.len())
        .filter(|&i| !(r.owned)(cells[i]) || (local[i].is_none() && !complete))
        .collect();
    if wanted.is_empty() {
        return Lookup { local, remote };
    }
    let keys: Vec<String> = wanted.iter().map(|&i| cells[i].to_string()).collect();
    let store = r.store.clone();
    // Blocking Redis I/O off the reactor.
    let read = web::block(move || store.get_prices(&keys)).await;
    match read {
        Ok(Ok(prices)) => {
            for (&i, p) in wanted.iter().zip(prices) {
                remote[i] = Some(Ok(p.and_then(|p| decode_remote(&p.payload))));
            }
        }
        _ => {
            for &i in &wanted {
                remote[i] = Some(Err(()));
            }
        }
    }
    Lookup { local, remote }
}

fn decode_remote(payload: &[u8]) -> Option<RemoteDecision> {
    use prost::Message as _;
    let u = primetime_proto::v1::PriceUpdate::decode(payload).ok()?;
    Some(RemoteDecision {
        multiplier: u.multiplier,
        tick: Tick(u.tick),
        model_version: u.model_version,
        explanation: serde_json::from_str(&u.explanation).unwrap_or(Value::Null),
    })
}

fn answer_found<'a>(cell: CellId, found: &Found<'a>, s: &'a Status) -> PriceAnswer<'a> {
    match found {
        Found::Local(p) => answer(cell, *p, s),
        Found::Degraded(p) => PriceAnswer {
            stale: true,
            ..answer(cell, *p, s)
        },
        Found::Remote(None) => answer(cell, None, s),
        Found::Remote(Some(d)) => PriceAnswer {
            cell,
            multiplier: d.multiplier,
            priced: true,
            since_tick: Some(d.tick),
            tick: s.tick,
            model_version: &d.model_version,
            stale: s.stale,
        },
    }
}

fn answer<'a>(cell: CellId, priced: Option<&'a PricedCell>, s: &'a Status) -> PriceAnswer<'a> {
    match priced {
        Some(p) => PriceAnswer {
            cell,
            multiplier: p.decision.multiplier.value(),
            priced: true,
            since_tick: Some(p.decision.tick),
            tick: s.tick,
            model_version: &p.decision.model_version,
            stale: s.stale,
        },
        None => PriceAnswer {
            cell,
            multiplier: 1.0,
            priced: false,
            since_tick: None,
            tick: s.tick,
            model_version: s.model_version.as_str(),
            stale: s.stale,
        },
    }
}

fn query_pairs(req: &HttpRequest) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str(req.query_string())
        .map_err(|e| ApiError::Read(format!("query string: {e}")))
}

fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Result<&'a str, ApiError> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| ApiError::field(name, "is required"))
}

fn coordinate(field: &str, value: Option<f64>, limit: f64) -> Result<f64, ApiError> {
    coordinate_named(|| field.to_owned(), value, limit)
}

/// As [`coordinate`], naming the field only when the value is bad (batch
/// fields are named by index: no string built per valid location).
fn coordinate_named(
    field: impl FnOnce() -> String,
    value: Option<f64>,
    limit: f64,
) -> Result<f64, ApiError> {
    match value {
        Some(v) if v.is_finite() && (-limit..=limit).contains(&v) => Ok(v),
        _ => Err(ApiError::field(
            field(),
            format!("must be a number in [-{limit}, {limit}]"),
        )),
    }
}

fn cell_at(state: &AppState, lat: f64, lng: f64, field: &str) -> Result<CellId, ApiError> {
    state
        .geo
        .cell_of(lat, lng)
        .ok_or_else(|| ApiError::field(field, "is not a valid location"))
}

/// `GET /v1/price?lat=&lng=`
pub async fn price(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let pairs = query_pairs(&req)?;
    let lat = coordinate("lat", param(&pairs, "lat")?.parse().ok(), 90.0)?;
    let lng = coordinate("lng", param(&pairs, "lng")?.parse().ok(), 180.0)?;
    let cell = cell_at(&state, lat, lng, "lat")?;
    let s = status(&state);
    let found = lookup(&state, &[cell]).await;
    Ok(HttpResponse::Ok().json(answer_found(cell, &found.found(0), &s)))
}

/// `POST /v1/prices` with `{"locations": [{"lat": .., "lng": ..}, ...]}`
/// (at most 1,000).
pub async fn prices(
    state: web::Data<AppState>,
    mut payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let limit = state.limits.max_body_bytes;
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::Read(e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::TooLarge(format!(
                "request body exceeds {limit} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    // Fast path: the typed shape. Only a body that does not fit it is
    // parsed again as a generic value, to name the offending field.
    let cells = match serde_json::from_slice::<BatchRequest>(&body) {
        Ok(batch) if batch.locations.len() <= MAX_BATCH => {
            let mut cells = Vec::with_capacity(batch.locations.len());
            for (i, loc) in batch.locations.iter().enumerate() {
                let lat = coordinate_named(|| format!("locations[{i}].lat"), Some(loc.lat), 90.0)?;
                let lng = coordinate_named(|| format!("locations[{i}].lng"), Some(loc.lng), 180.0)?;
                cells.push(cell_at(&state, lat, lng, "locations")?);
            }
            cells
        }
        _ => batch_cells_slow(&state, &body)?,
    };
    let s = status(&state);
    let found = lookup(&state, &cells).await;
    let prices: Vec<PriceAnswer> = cells
        .iter()
        .enumerate()
        .map(|(i, c)| answer_found(*c, &found.found(i), &s))
        .collect();
    // Typed, not a `json!` value: that built a map per answer (about a
    // fifth of the service's perf samples under the HTTP load scenario).
    Ok(HttpResponse::Ok().json(BatchAnswer {
        prices,
        tick: s.tick,
        model_version: s.model_version.as_str(),
        stale: s.stale,
    }))
}

/// The answer of `POST /v1/prices`.
#[derive(Serialize)]
struct BatchAnswer<'a> {
    prices: Vec<PriceAnswer<'a>>,
    tick: Option<Tick>,
    model_version: &'a str,
    stale: bool,
}

#[derive(serde::Deserialize)]
struct BatchRequest {
    locations: Vec<Location>,
}

#[derive(serde::Deserialize)]
struct Location {
    lat: f64,
    lng: f64,
}

/// The batch's cells, validating a body of unexpected shape field by field.
fn batch_cells_slow(state: &AppState, body: &[u8]) -> Result<Vec<CellId>, ApiError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::InvalidBody(e.to_string()))?;
    let locations = value
        .get("locations")
        .ok_or_else(|| ApiError::field("locations", "is required"))?
        .as_array()
        .ok_or_else(|| ApiError::field("locations", "must be an array"))?;
    if locations.len() > MAX_BATCH {
        return Err(ApiError::TooLarge(format!(
            "{} locations; at most {MAX_BATCH} per request",
            locations.len()
        )));
    }
    let mut cells = Vec::with_capacity(locations.len());
    for (i, loc) in locations.iter().enumerate() {
        let lat_field = format!("locations[{i}].lat");
        let lng_field = format!("locations[{i}].lng");
        let lat = coordinate(&lat_field, loc.get("lat").and_then(Value::as_f64), 90.0)?;
        let lng = coordinate(&lng_field, loc.get("lng").and_then(Value::as_f64), 180.0)?;
        cells.push(cell_at(state, lat, lng, &lat_field)?);
    }
    Ok(cells)
}

/// `GET /v1/cells/{cell}`: the current decision with its explanation.
pub async fn cell(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let text = path.into_inner();
    let cell = state
        .geo
        .parse_cell(&text)
        .map_err(|e| ApiError::field("cell", e.to_string()))?;
    let s = status(&state);
    let looked = lookup(&state, &[cell]).await;
    let found = looked.found(0);
    let explanation = match &found {
        Found::Local(p) | Found::Degraded(p) => p
            .map(|p| serde_json::to_value(&p.decision.explanation).unwrap_or(Value::Null))
            .unwrap_or(Value::Null),
        Found::Remote(d) => d.map(|d| d.explanation.clone()).unwrap_or(Value::Null),
    };
    let (lat, lng) = cell.center();
    let mut body = serde_json::to_value(answer_found(cell, &found, &s))
        .map_err(|e| ApiError::Read(e.to_string()))?;
    if let Value::Object(map) = &mut body {
        map.insert("explanation".into(), explanation);
        map.insert("lat".into(), json!(lat));
        map.insert("lng".into(), json!(lng));
    }
    Ok(HttpResponse::Ok().json(body))
}

/// `GET /v1/cells?bbox=minLng,minLat,maxLng,maxLat`: priced cells in view.
pub async fn cells(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let pairs = query_pairs(&req)?;
    let raw = param(&pairs, "bbox")?;
    let bad = || {
        ApiError::field(
            "bbox",
            "must be minLng,minLat,maxLng,maxLat with min <= max, in degrees",
        )
    };
    let parts: Vec<f64> = raw
        .split(',')
        .map(|p| p.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    let [min_lng, min_lat, max_lng, max_lat] = parts[..] else {
        return Err(bad());
    };
    let ok_lat = |v: f64| v.is_finite() && (-90.0..=90.0).contains(&v);
    let ok_lng = |v: f64| v.is_finite() && (-180.0..=180.0).contains(&v);
    if !(ok_lat(min_lat)
        && ok_lat(max_lat)
        && ok_lng(min_lng)
        && ok_lng(max_lng)
        && min_lat <= max_lat
        && min_lng <= max_lng)
    {
        return Err(bad());
    }
    let limit = state.limits.max_bbox_cells;
    let (priced, mut truncated) = state
        .table
        .in_bbox(min_lat, min_lng, max_lat, max_lng, limit);
    let s = status(&state);
    let mut cells: Vec<Value> = priced
        .iter()
        .map(|c| {
            let d = &c.decision;
            map_cell(d.cell, d.multiplier.value(), true, Some(d.tick))
        })
        .collect();
    // Active cells without a decision: drawn at 1.0 so the map shows where
    // the market is live, not only where it surges.
    for a in state.active.in_bbox(min_lat, min_lng, max_lat, max_lng) {
        if state.table.get(a.cell).is_some() {
            continue;
        }
        if cells.len() >= limit {
            truncated = true;
            break;
        }
        cells.push(map_cell(a.cell, 1.0, false, None));
    }
    Ok(HttpResponse::Ok().json(json!({
        "cells": cells,
        "truncated": truncated,
        "tick": s.tick,
        "model_version": s.model_version.as_str(),
        "stale": s.stale,
    })))
}

/// One cell for the map: price, centre and boundary (6 decimals, ~0.1 m).
fn map_cell(cell: CellId, multiplier: f64, priced: bool, since_tick: Option<Tick>) -> Value {
    let round = |v: f64| (v * 1e6).round() / 1e6;
    let (lat, lng) = cell.center();
    let boundary: Vec<[f64; 2]> = cell
        .boundary()
        .into_iter()
        .map(|(a, b)| [round(a), round(b)])
        .collect();
    json!({
        "cell": cell,
        "multiplier": multiplier,
        "priced": priced,
        "since_tick": since_tick,
        "lat": round(lat),
        "lng": round(lng),
        "boundary": boundary,
    })
}

/// `GET /healthz`: the process serves requests.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// `GET /readyz`: prices are being published and are fresh.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let s = status(&state);
    let mut reasons = Vec::new();
    let mut degraded: Vec<&str> = Vec::new();
    if state.metrics.model_fallback() {
        degraded.push("model: fallback formula (see logs)");
    }
    if state.remote.get().is_some_and(|r| !r.store.is_up()) {
        degraded.push(
            "redis: unreachable (prices and snapshots queued until it returns; other instances' cells answered from memory, marked stale)",
        );
    }
    if s.tick.is_none() {
        reasons.push("no tick fired yet");
    } else if s.stale {
        reasons.push("no tick published within stale_after_ms");
    }
    let body = json!({
        "status": if reasons.is_empty() { "ready" } else { "not_ready" },
        "reasons": reasons,
        "degraded": degraded,
        "tick": s.tick,
        "model_version": s.model_version.as_str(),
        "stale": s.stale,
    });
    if reasons.is_empty() {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(crate::metrics::CONTENT_TYPE)
        .body(state.metrics.render((state.now_ms)()))
}

/// `GET /v1/status`: watermark, lag, throughput and rejects, for the map
/// header and operators.
pub async fn service_status(state: web::Data<AppState>) -> HttpResponse {
    let s = status(&state);
    let now = (state.now_ms)();
    let m = &state.metrics;
    let wm = m.watermark_ms.load(std::sync::atomic::Ordering::Relaxed);
    let wm = (wm != i64::MIN && wm != i64::MAX).then_some(wm);
    let rejected: serde_json::Map<String, Value> = m
        .rejected()
        .iter()
        .map(|(r, n)| (r.as_str().to_owned(), json!(n)))
        .collect();
    HttpResponse::Ok().json(json!({
        "tick": s.tick,
        "model_version": s.model_version.as_str(),
        "stale": s.stale,
        "watermark_ms": wm,
        "watermark_lag_ms": wm.map(|w| now - w),
        "events_accepted": m.accepted.load(std::sync::atomic::Ordering::Relaxed),
        "rejected": rejected,
        "active_cells": m.active_cells.load(std::sync::atomic::Ordering::Relaxed),
        "model_fallback": m.model_fallback(),
        "priced_cells": state.table.len(),
        "kafka_assigned_partitions": match m.assigned_partitions.load(std::sync::atomic::Ordering::Relaxed) {
            n if n < 0 => Value::Null,
            n => json!(n),
        },
        "ticks_fired": m.ticks_fired.load(std::sync::atomic::Ordering::Relaxed),
    }))
}

/// Unknown paths: a JSON 404 like every other error.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(req.path().to_owned()))
}
