//! Handlers of the JSON API (DESIGN §6), each with its OpenAPI operation
//! (`#[utoipa::path]`): parameters from `params.rs`, answers from
//! `answers.rs`, every status it can answer.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;

use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt as _;
use primetime_core::{CellId, Tick};
use serde_json::Value;

use super::answers::{
    BatchAnswer, CellAnswer, CellsAnswer, ErrorBody, Health, MapCell, PriceAnswer, Readiness,
    ReadyState, ServiceStatus,
};
use super::error::ApiError;
use super::lookup::{Decision, Found};
use super::params::{
    BatchRequest, CellParam, CellPath, CellsQuery, PriceQuery, coordinate, coordinate_named,
};
use super::{AppState, MAX_BATCH, Scope};

/// Freshness of the answers, read once per request.
pub(super) struct Status {
    pub tick: Option<Tick>,
    pub model_version: std::sync::Arc<String>,
    pub stale: bool,
}

pub(super) fn status(state: &AppState) -> Status {
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

fn answer_found<'a>(cell: CellId, found: &'a Found, s: &'a Status) -> PriceAnswer<'a> {
    let (multiplier, since_tick, model_version, controls) = match &found.decision {
        Some(Decision::Table(p)) => (
            p.decision.multiplier.value(),
            p.decision.tick,
            p.decision.model_version.as_ref(),
            p.decision
                .explanation
                .controls
                .iter()
                .map(|c| c.0)
                .collect(),
        ),
        Some(Decision::Shared(d)) => (
            d.multiplier,
            d.tick,
            d.model_version.as_str(),
            d.explanation["controls"]
                .as_array()
                .map(|ids| ids.iter().filter_map(serde_json::Value::as_u64).collect())
                .unwrap_or_default(),
        ),
        None => {
            return PriceAnswer {
                cell,
                multiplier: 1.0,
                priced: false,
                since_tick: None,
                tick: s.tick,
                model_version: s.model_version.as_str(),
                stale: s.stale || found.degraded,
                at: None,
                controls: Vec::new(),
            };
        }
    };
    PriceAnswer {
        cell,
        multiplier,
        priced: true,
        since_tick: Some(since_tick),
        tick: s.tick,
        model_version,
        stale: s.stale || found.degraded,
        at: None,
        controls,
    }
}

pub(super) fn cell_at(
    state: &AppState,
    lat: f64,
    lng: f64,
    field: &str,
) -> Result<CellId, ApiError> {
    state
        .geo
        .cell_of(lat, lng)
        .ok_or_else(|| ApiError::field(field, "is not a valid location"))
}

/// The multiplier at a location.
#[utoipa::path(get, path = "/v1/price", params(PriceQuery),
    responses(
        (status = 200, description = "The price (1.0 with `priced: false` when unpriced)", body = PriceAnswer),
        (status = 400, description = "Missing or invalid `lat`/`lng`/`at`, or an unreadable query string", body = ErrorBody),
        (status = 410, description = "`at` lies before the retained history (`outside_retention`)", body = ErrorBody),
        (status = 422, description = "`at` lies after what this instance knows of the cell (`not_yet_known`, retryable): its newest fired tick, or for a cell another instance prices, the tick through which that instance's acknowledged prices have been read from the prices topic here; never the last value known", body = ErrorBody),
    ))]
pub async fn price(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.authorize(&req, Scope::Read)?;
    let q = PriceQuery::from_request(&req)?;
    let cell = cell_at(&state, q.lat, q.lng, "lat")?;
    if let Some(at) = q.at {
        return super::history::price_at(&state, cell, at);
    }
    let s = status(&state);
    let found = state.prices.lookup(&[cell]).await;
    let found = found.first().cloned().unwrap_or_default();
    Ok(HttpResponse::Ok().json(answer_found(cell, &found, &s)))
}

/// Reads the body up to `limit` bytes.
pub(super) async fn read_body(
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::BytesMut, ApiError> {
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
    Ok(body)
}

/// Multipliers at up to 1,000 locations, in order.
#[utoipa::path(post, path = "/v1/prices",
    request_body(content = BatchRequest, content_type = "application/json",
        description = "At most 1,000 locations; the body at most `max_body_bytes` (set at run time)"),
    responses(
        (status = 200, description = "One price per location, in order", body = BatchAnswer),
        (status = 400, description = "Invalid JSON, or a missing or invalid location field", body = ErrorBody),
        (status = 413, description = "Body above `max_body_bytes`, or more than 1,000 locations", body = ErrorBody),
    ))]
pub async fn prices(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&req, Scope::Read)?;
    let body = read_body(payload, state.limits.max_body_bytes).await?;
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
    let found = state.prices.lookup(&cells).await;
    let prices: Vec<PriceAnswer> = cells
        .iter()
        .zip(&found)
        .map(|(c, f)| answer_found(*c, f, &s))
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

/// A cell's decision with its explanation.
#[utoipa::path(get, path = "/v1/cells/{cell}", params(CellPath),
    responses(
        (status = 200, description = "The price and explanation (`null` when unpriced)", body = CellAnswer),
        (status = 400, description = "Not an H3 index at the price resolution", body = ErrorBody),
        (status = 404, description = "An index of the right shape that names no H3 cell", body = ErrorBody),
    ))]
pub async fn cell(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.authorize(&req, Scope::Read)?;
    let path = CellPath::from_request(&req);
    let cell = match path.parse(&state.geo)? {
        CellParam::Cell(cell) => cell,
        CellParam::NoSuchCell => {
            return Err(ApiError::NotFound(format!("no H3 cell {}", path.cell)));
        }
    };
    let s = status(&state);
    let found = state.prices.lookup(&[cell]).await;
    let found = found.first().cloned().unwrap_or_default();
    let explanation = match &found.decision {
        Some(Decision::Table(p)) => {
            serde_json::to_value(&p.decision.explanation).unwrap_or(Value::Null)
        }
        Some(Decision::Shared(d)) => d.explanation.clone(),
        None => Value::Null,
    };
    let (lat, lng) = cell.center();
    Ok(HttpResponse::Ok().json(CellAnswer {
        price: answer_found(cell, &found, &s),
        lat,
        lng,
        explanation,
    }))
}

/// Priced cells whose centre lies in a bounding box (most expensive first),
/// then active cells without a decision.
#[utoipa::path(get, path = "/v1/cells", params(CellsQuery),
    responses(
        (status = 200, description = "Cells in view, at most `max_bbox_cells`", body = CellsAnswer),
        (status = 400, description = "Missing or invalid `bbox` (or min above max)", body = ErrorBody),
    ))]
pub async fn cells(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.authorize(&req, Scope::Read)?;
    let b = CellsQuery::from_request(&req)?.bbox()?;
    let limit = state.limits.max_bbox_cells;
    let (priced, mut truncated) = state
        .table
        .in_bbox(b.min_lat, b.min_lng, b.max_lat, b.max_lng, limit);
    let s = status(&state);
    let mut cells: Vec<MapCell> = priced
        .iter()
        .map(|c| {
            let d = &c.decision;
            map_cell(d.cell, d.multiplier.value(), true, Some(d.tick))
        })
        .collect();
    // Active cells without a decision: drawn at 1.0 so the map shows where
    // the market is live, not only where it surges.
    for a in state
        .active
        .in_bbox(b.min_lat, b.min_lng, b.max_lat, b.max_lng)
    {
        if state.table.get(a.cell).is_some() {
            continue;
        }
        if cells.len() >= limit {
            truncated = true;
            break;
        }
        cells.push(map_cell(a.cell, 1.0, false, None));
    }
    Ok(HttpResponse::Ok().json(CellsAnswer {
        cells,
        truncated,
        tick: s.tick,
        model_version: s.model_version.as_str(),
        stale: s.stale,
    }))
}

/// One cell for the map: price, centre and boundary (6 decimals, ~0.1 m).
fn map_cell(cell: CellId, multiplier: f64, priced: bool, since_tick: Option<Tick>) -> MapCell {
    let round = |v: f64| (v * 1e6).round() / 1e6;
    let (lat, lng) = cell.center();
    MapCell {
        cell,
        multiplier,
        priced,
        since_tick,
        lat: round(lat),
        lng: round(lng),
        boundary: cell
            .boundary()
            .into_iter()
            .map(|(a, b)| [round(a), round(b)])
            .collect(),
    }
}

/// Liveness: the process serves requests.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "Alive", body = Health)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

/// Readiness: prices are being published and are fresh.
#[utoipa::path(get, path = "/readyz",
    responses(
        (status = 200, description = "Ready (possibly degraded)", body = Readiness),
        (status = 503, description = "Not ready, with reasons", body = Readiness),
    ))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let s = status(&state);
    let mut reasons = Vec::new();
    let mut degraded: Vec<&str> = Vec::new();
    if state.metrics.model_fallback() {
        degraded.push("model: fallback formula (see logs)");
    }
    degraded.extend(state.prices.degraded());
    if s.tick.is_none() {
        reasons.push("no tick fired yet");
    } else if s.stale {
        reasons.push("no tick published within stale_after_ms");
    }
    let ready = reasons.is_empty();
    let body = Readiness {
        status: if ready {
            ReadyState::Ready
        } else {
            ReadyState::NotReady
        },
        reasons,
        degraded,
        tick: s.tick,
        model_version: s.model_version.as_str(),
        stale: s.stale,
    };
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics",
    responses((status = 200, description = "OpenMetrics text exposition", body = String,
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8")))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(crate::metrics::CONTENT_TYPE)
        .body(render_metrics(&state))
}

/// The service's exposition with the quote counters before its `# EOF`.
fn render_metrics(state: &AppState) -> String {
    let mut out = state.metrics.render((state.now_ms)());
    let eof = out.rfind("# EOF").unwrap_or(out.len());
    out.truncate(eof);
    state.quotes.render_metrics(&mut out);
    state.auth.render(&mut out);
    out.push_str("# EOF\n");
    out
}

/// Watermark, lag, throughput and rejects, for the map header and
/// operators.
#[utoipa::path(get, path = "/v1/status", responses((status = 200, description = "Status", body = ServiceStatus)))]
pub async fn service_status(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&req, Scope::Admin)?;
    let s = status(&state);
    let now = (state.now_ms)();
    let m = &state.metrics;
    let wm = m.watermark_ms.load(Relaxed);
    let wm = (wm != i64::MIN && wm != i64::MAX).then_some(wm);
    let rejected: BTreeMap<&'static str, u64> =
        m.rejected().iter().map(|(r, n)| (r.as_str(), n)).collect();
    let assigned = m.assigned_partitions.load(Relaxed);
    Ok(HttpResponse::Ok().json(ServiceStatus {
        tick: s.tick,
        model_version: s.model_version.as_str(),
        stale: s.stale,
        watermark_ms: wm,
        watermark_lag_ms: wm.map(|w| now - w),
        events_accepted: m.accepted.load(Relaxed),
        rejected,
        active_cells: m.active_cells.load(Relaxed),
        model_fallback: m.model_fallback(),
        priced_cells: state.table.len(),
        kafka_assigned_partitions: (assigned >= 0).then_some(assigned),
        ticks_fired: m.ticks_fired.load(Relaxed),
    }))
}

/// Unknown paths: a JSON 404 like every other error.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(req.path().to_owned()))
}
