//! Prices at a past time: `GET /v1/price?at=` (its history branch) and
//! `GET /v1/cells/{cell}/history`, over the table's per-cell
//! [`crate::history::History`]. Before the retained history: 410
//! `outside_retention` (never a guess); after what this instance knows of
//! the cell (its newest fired tick, or for a cell another instance prices
//! the tick through which that instance's prices are proved read from the
//! prices topic: see `crate::history`): 422 `not_yet_known` (retryable),
//! never the last value known here.

use actix_web::{HttpRequest, HttpResponse, web};
use primetime_core::{CellId, Tick};

use super::answers::{ErrorBody, HistoryAnswer, HistoryEntry, PriceAnswer};
use super::error::ApiError;
use super::params::{CellParam, CellPath, HistoryQuery};
use super::{AppState, Scope};
use crate::history::{Change, HistoryError};

fn history_error(field: &'static str, e: HistoryError) -> ApiError {
    match e {
        HistoryError::Outside { retained_from_ms } => ApiError::OutsideRetention {
            field,
            message: match retained_from_ms {
                Some(ms) => format!("before the retained history, which starts at {ms} ms"),
                None => "before the retained history".to_owned(),
            },
        },
        HistoryError::NotYet { known_until_ms } => ApiError::NotYetKnown {
            field,
            message: match known_until_ms {
                Some(ms) => format!("not yet known here: decisions are known up to {ms} ms"),
                None => "not yet known here: no decision is known yet".to_owned(),
            },
        },
    }
}

/// `GET /v1/price?lat=&lng=&at=`: the decision in force at `at`.
pub(super) fn price_at(state: &AppState, cell: CellId, at: i64) -> Result<HttpResponse, ApiError> {
    let history = state.table.history();
    let change = history.at(cell, at).map_err(|e| history_error("at", e))?;
    let tick = Tick(at.div_euclid(history.bucket_ms()) - 1);
    let current = state.table.model_version();
    let (multiplier, priced, since_tick, model_version) = match &change {
        Some(c) => (
            f64::from(c.twentieths) / 20.0,
            true,
            Some(c.tick),
            &*c.model_version,
        ),
        None => (1.0, false, None, current.as_str()),
    };
    Ok(HttpResponse::Ok().json(PriceAnswer {
        cell,
        multiplier,
        priced,
        since_tick,
        tick: Some(tick),
        model_version,
        stale: false,
        at: Some(at),
        controls: Vec::new(),
    }))
}

fn entry(change: Option<Change>, bucket_ms: i64) -> HistoryEntry {
    match change {
        Some(c) => HistoryEntry {
            multiplier: f64::from(c.twentieths) / 20.0,
            priced: true,
            since_tick: Some(c.tick.0),
            since_ms: Some(c.tick.end_ms(bucket_ms)),
            model_version: Some(c.model_version.to_string()),
        },
        None => HistoryEntry {
            multiplier: 1.0,
            priced: false,
            since_tick: None,
            since_ms: None,
            model_version: None,
        },
    }
}

/// A cell's decisions between two times: the one in force at `from`, then
/// every change up to `to`.
#[utoipa::path(get, path = "/v1/cells/{cell}/history", params(CellPath, HistoryQuery),
    responses(
        (status = 200, description = "The decision in force at `from` and the changes after it", body = HistoryAnswer),
        (status = 400, description = "Not an H3 index at the price resolution, or a missing or invalid `from`/`to`", body = ErrorBody),
        (status = 404, description = "An index of the right shape that names no H3 cell", body = ErrorBody),
        (status = 410, description = "`from` lies before the retained history (`outside_retention`)", body = ErrorBody),
        (status = 422, description = "`from` lies after what this instance knows of the cell (`not_yet_known`, retryable): its newest fired tick, or for a cell another instance prices, the tick through which that instance's acknowledged prices have been read from the prices topic here; never the last value known", body = ErrorBody),
    ))]
pub async fn cell_history(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&req, Scope::Read)?;
    let path = CellPath::from_request(&req);
    let cell = match path.parse(&state.geo)? {
        CellParam::Cell(cell) => cell,
        CellParam::NoSuchCell => {
            return Err(ApiError::NotFound(format!("no H3 cell {}", path.cell)));
        }
    };
    let q = HistoryQuery::from_request(&req)?;
    let history = state.table.history();
    let known_until_ms = history.known_until_ms(cell);
    let to = match (q.to, known_until_ms) {
        (Some(to), Some(k)) => to.min(k),
        (None, Some(k)) => k,
        (to, None) => to.unwrap_or(q.from),
    }
    .max(q.from);
    let (at_from, changes) = history
        .range(cell, q.from, to)
        .map_err(|e| history_error("from", e))?;
    let bucket = history.bucket_ms();
    Ok(HttpResponse::Ok().json(HistoryAnswer {
        cell,
        from: q.from,
        to,
        at_from: entry(at_from, bucket),
        changes: changes
            .into_iter()
            .map(|c| entry(Some(c), bucket))
            .collect(),
        known_until_ms,
        retained_from_ms: history.retained_from_ms(),
    }))
}
