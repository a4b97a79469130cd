//! The operator-control routes (admin scope, issue 18): `POST
//! /v1/controls` appends a control to the log, `GET /v1/controls` lists
//! the log (optionally only what is in force at `active_at`), `DELETE
//! /v1/controls/{id}` appends a revocation, `GET /v1/controls/log` gives
//! the stamped records as JSON lines (the audit trail, and `replay
//! --controls`' input). The log is a [`crate::controls::Controls`] (the
//! in-memory log, or Kafka's controls topic), registered as app data by
//! the wiring; without it these routes answer 404.
//!
//! In Kafka mode an append answers once the broker acknowledged the record
//! and this instance read it back (normally milliseconds): 201 with the
//! control, its id and its first tick. If the read-back takes longer than
//! a few seconds the answer is 202 with the record's offset (and its tick
//! when the broker's append time is known); `GET /v1/controls` shows it
//! once read.
//!
//! Who may call them: with API keys configured, a key with the `admin`
//! scope; with none (the embedded default) only a peer on the loopback
//! address — an open admin route on a public interface would let anyone
//! cap prices. (Behind a reverse proxy on the same host every peer is
//! loopback: configure keys there.)

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};
use primetime_core::controls::{Action, Area, AreaSpec, Entry};
use primetime_core::{ControlId, ControlKind, ControlLimits, ControlSpec, LogError};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::answers::ErrorBody;
use super::api::read_body;
use super::{ApiError, AppState, Scope};
use crate::controls::{AppendError, Appended, Controls};

/// The body of `POST /v1/controls`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ControlBody {
    pub area: AreaBody,
    /// `cap`, `freeze`, `floor` or `force`.
    #[schema(value_type = String, pattern = "^(cap|freeze|floor|force)$")]
    pub kind: ControlKind,
    /// Multiple of 0.05 in [1.0, 100]; required except for `freeze`.
    #[schema(minimum = 1.0, maximum = 100.0)]
    pub multiplier: Option<f64>,
    /// Window start, event-time ms (inclusive); at most 24 h ago.
    pub from: i64,
    /// Window end, event-time ms (exclusive); at most 90 days ahead.
    pub to: i64,
    /// Why (1 to 1,000 bytes).
    #[schema(min_length = 1, max_length = 1000)]
    pub reason: String,
    /// Who (1 to 1,000 bytes).
    #[schema(min_length = 1, max_length = 1000)]
    pub author: String,
}

/// Exactly one of `cells` (H3 cells at any resolution; finer ones stand
/// for their price cell) or `bbox` (`[minLng, minLat, maxLng, maxLat]`; a
/// price cell is inside when its centre is).
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AreaBody {
    pub cells: Option<Vec<String>>,
    pub bbox: Option<Vec<f64>>,
}

/// A control with its log records: who, why, when, and the ticks it
/// applies from and (once revoked) until.
#[derive(Debug, Serialize, ToSchema)]
pub struct ControlAnswer {
    pub id: u64,
    pub area: AreaBody,
    pub kind: &'static str,
    /// `null` for a freeze.
    pub multiplier: Option<f64>,
    pub from: i64,
    pub to: i64,
    pub reason: String,
    pub author: String,
    /// Applies from this tick on (the first not yet fired when issued).
    pub from_tick: i64,
    /// Revoked: no longer applies from this tick on.
    pub revoked_from_tick: Option<i64>,
    /// The area's outline for the map: one ring of `[lat, lng]` per listed
    /// cell, or the bbox's four corners.
    pub outline: Vec<Vec<[f64; 2]>>,
}

/// Controls, by id.
#[derive(Debug, Serialize, ToSchema)]
pub struct ControlList {
    pub controls: Vec<ControlAnswer>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only the controls in force at the tick ending at or after this
    /// event time (ms).
    pub active_at: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RevokeQuery {
    /// Who revokes (default `api`).
    pub author: Option<String>,
    /// Why (default `revoked`).
    pub reason: Option<String>,
}

/// The admin check: a key with the `admin` scope, or, with no keys
/// configured, a loopback peer; then the log, if the wiring has one.
fn admin<'a>(req: &'a HttpRequest, state: &AppState) -> Result<&'a Arc<dyn Controls>, ApiError> {
    if state.auth.enabled() {
        state.authorize(req, Scope::Admin)?;
    } else if !req.peer_addr().is_some_and(|a| a.ip().is_loopback()) {
        return Err(ApiError::InsufficientScope("admin"));
    }
    req.app_data::<web::Data<Arc<dyn Controls>>>()
        .map(|d| d.get_ref())
        .ok_or_else(|| ApiError::NotFound("operator controls are not enabled".to_owned()))
}

fn answer(e: &Entry) -> ControlAnswer {
    let c = &e.control;
    let (area, outline) = match &c.area {
        Area::Cells(cells) => (
            AreaBody {
                cells: Some(cells.iter().map(ToString::to_string).collect()),
                bbox: None,
            },
            cells
                .iter()
                .map(|cell| {
                    cell.boundary()
                        .into_iter()
                        .map(|(la, ln)| [la, ln])
                        .collect()
                })
                .collect(),
        ),
        Area::Bbox(b) => {
            let [w, s, e, n] = *b;
            (
                AreaBody {
                    cells: None,
                    bbox: Some(b.to_vec()),
                },
                vec![vec![[s, w], [s, e], [n, e], [n, w]]],
            )
        }
    };
    let (kind, multiplier) = match c.action {
        Action::Cap(m) => ("cap", Some(m.value())),
        Action::Floor(m) => ("floor", Some(m.value())),
        Action::Force(m) => ("force", Some(m.value())),
        Action::Freeze => ("freeze", None),
    };
    ControlAnswer {
        id: e.id.0,
        area,
        kind,
        multiplier,
        from: c.from,
        to: c.to,
        reason: c.reason.clone(),
        author: c.author.clone(),
        from_tick: e.from_tick.0,
        revoked_from_tick: e.revoked_from.map(|t| t.0),
        outline,
    }
}

fn log_error(e: AppendError) -> ApiError {
    match e {
        AppendError::Refused(LogError::Unknown(id)) => {
            ApiError::NotFound(format!("no control {id}"))
        }
        AppendError::Refused(e @ LogError::Ended(_)) => ApiError::field("to", e.to_string()),
        AppendError::Refused(other) => ApiError::field("id", other.to_string()),
        AppendError::Unavailable(m) => ApiError::Unavailable(m),
    }
}

/// The answer to an append: the control (201 for an issue, 200 for a
/// revocation), or 202 with where the record is while not yet read back.
fn appended(log: &dyn Controls, a: Appended, created: bool) -> Result<HttpResponse, ApiError> {
    let record = match a {
        Appended::Applied(r) => r,
        Appended::Pending { offset, tick } => {
            return Ok(HttpResponse::Accepted().json(PendingAnswer {
                offset,
                tick: tick.map(|t| t.0),
            }));
        }
    };
    let set = log.snapshot();
    let entry = set
        .get(record.id())
        .ok_or_else(|| ApiError::NotFound(format!("no control {}", record.id())))?;
    Ok(match created {
        true => HttpResponse::Created().json(answer(entry)),
        false => HttpResponse::Ok().json(answer(entry)),
    })
}

/// A record the log acknowledged but this instance has not read back yet
/// (Kafka mode; see the module doc).
#[derive(Debug, Serialize, ToSchema)]
pub struct PendingAnswer {
    /// Its offset in the controls topic.
    pub offset: i64,
    /// The tick it applies from, when the broker's append time is known.
    pub tick: Option<i64>,
}

/// Issues an operator control (admin).
#[utoipa::path(post, path = "/v1/controls",
    request_body(content = ControlBody, content_type = "application/json"),
    responses(
        (status = 201, description = "The control, with its id and first tick", body = ControlAnswer),
        (status = 202, description = "Recorded (Kafka mode) but not yet read back", body = PendingAnswer),
        (status = 400, description = "Invalid JSON or an invalid field (named); nothing was applied", body = ErrorBody),
        (status = 403, description = "Not an admin (no keys configured: not a loopback peer)", body = ErrorBody),
        (status = 413, description = "Body above `max_body_bytes`", body = ErrorBody),
    ))]
pub async fn issue(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let log = admin(&req, &state)?;
    let body = read_body(payload, state.limits.max_body_bytes).await?;
    let body: ControlBody =
        serde_json::from_slice(&body).map_err(|e| ApiError::InvalidBody(e.to_string()))?;
    let spec = ControlSpec {
        area: AreaSpec {
            cells: body.area.cells,
            bbox: body.area.bbox,
        },
        kind: body.kind,
        multiplier: body.multiplier,
        from: body.from,
        to: body.to,
        reason: body.reason,
        author: body.author,
    };
    // Windows are judged against the service's event time (the newest
    // fired tick), the wall clock before the first tick.
    let wall = (state.now_ms)();
    let now = state.table.last_tick_end_ms().unwrap_or(wall);
    let limits = ControlLimits::new(state.geo.price_resolution(), now);
    let control = spec.validate(&limits).map_err(|e| {
        let first = e.0.first().map_or("body", |f| f.field.as_str()).to_owned();
        ApiError::field(first, e.to_string())
    })?;
    let a = log.issue(control, wall).await.map_err(log_error)?;
    appended(log.as_ref(), a, true)
}

/// The control log (admin): every control with who, why and when, or only
/// those in force at `active_at`.
#[utoipa::path(get, path = "/v1/controls", params(ListQuery),
    responses(
        (status = 200, description = "Controls by id", body = ControlList),
        (status = 400, description = "Invalid parameter", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
    ))]
pub async fn list(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: Result<web::Query<ListQuery>, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let log = admin(&req, &state)?;
    let query = query.map_err(|e| ApiError::field("active_at", e.to_string()))?;
    let set = log.snapshot();
    let controls = match query.active_at {
        Some(at) => set.active_at(at).into_iter().map(answer).collect(),
        None => set.entries().map(answer).collect(),
    };
    Ok(HttpResponse::Ok().json(ControlList { controls }))
}

/// Revokes a control (admin): a revoking record, from the next tick on.
#[utoipa::path(delete, path = "/v1/controls/{id}",
    params(("id" = u64, Path, description = "Control id"), RevokeQuery),
    responses(
        (status = 200, description = "The revoked control", body = ControlAnswer),
        (status = 400, description = "Invalid id, or already revoked", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such control", body = ErrorBody),
        (status = 503, description = "The log cannot be written now (Kafka)", body = ErrorBody),
    ))]
pub async fn revoke(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: Result<web::Query<RevokeQuery>, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let log = admin(&req, &state)?;
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::field("id", format!("not a control id: {:?}", id.as_str())))?;
    let query = query.map_err(|e| ApiError::field("query", e.to_string()))?;
    let text = |v: Option<String>, default: &str| {
        v.filter(|s| !s.trim().is_empty() && s.len() <= 1_000)
            .unwrap_or_else(|| default.to_owned())
    };
    let wall = (state.now_ms)();
    let (author, reason) = (text(query.0.author, "api"), text(query.0.reason, "revoked"));
    // Checked here first so that an unknown or revoked id writes nothing
    // to a shared log; the log checks again in its own order.
    match log.snapshot().get(ControlId(id)) {
        None => return Err(ApiError::NotFound(format!("no control {id}"))),
        Some(e) if e.revoked_from.is_some() => {
            return Err(log_error(LogError::AlreadyRevoked(ControlId(id)).into()));
        }
        Some(_) => {}
    }
    let a = log
        .revoke(ControlId(id), wall, author, reason)
        .await
        .map_err(log_error)?;
    appended(log.as_ref(), a, false)
}

/// The control log's stamped records, oldest first, as JSON lines (admin):
/// the audit trail, and what `primetime replay --controls` reads.
#[utoipa::path(get, path = "/v1/controls/log",
    responses(
        (status = 200, description = "One control record per line", content_type = "application/x-ndjson", body = String),
        (status = 403, description = "Not an admin", body = ErrorBody),
    ))]
pub async fn log(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let log = admin(&req, &state)?;
    let set = log.snapshot();
    let mut out = String::new();
    for r in set.records() {
        // A record of numbers and strings always serialises.
        if let Ok(line) = serde_json::to_string(r) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    Ok(HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .body(out))
}
