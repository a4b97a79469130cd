//! `POST /v1/quotes` and `POST /v1/quotes/redeem`: quotes a ride backend
//! can honour (see [`crate::quotes`] for the token and its keys).

use actix_web::{HttpRequest, HttpResponse, web};
use primetime_core::CellId;

use super::answers::{ErrorBody, QuoteAnswer, QuoteTerms, RedeemAnswer};
use super::api::{cell_at, read_body, status};
use super::error::ApiError;
use super::lookup::Decision;
use super::params::{QuoteRequest, RedeemRequest};
use super::{AppState, Scope};
use crate::quotes::{AuditEvent, AuditKind, Claims, RedeemOutcome, TokenError};

/// Issues a quote for a location: a signed promise of its multiplier until
/// `expires_at`.
#[utoipa::path(post, path = "/v1/quotes",
    request_body(content = QuoteRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The quote; redeem its `quote_id` before `expires_at`", body = QuoteAnswer),
        (status = 400, description = "Invalid JSON, or a missing or invalid field", body = ErrorBody),
        (status = 413, description = "Body above `max_body_bytes`", body = ErrorBody),
    ))]
pub async fn issue(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&req, Scope::Quote)?;
    let body = read_body(payload, state.limits.max_body_bytes).await?;
    let q = QuoteRequest::parse(&body)?;
    let cell = cell_at(&state, q.lat, q.lng, "lat")?;
    let quote = quote_cell(&state, cell, q.rider_id, q.session_id).await;
    Ok(HttpResponse::Ok().json(quote))
}

/// Prices `cell` now and signs the quote (counted and audited).
async fn quote_cell(
    state: &AppState,
    cell: CellId,
    rider_id: Option<String>,
    session_id: Option<String>,
) -> QuoteAnswer {
    let s = status(state);
    let found = state.prices.lookup(&[cell]).await;
    let found = found.first().cloned().unwrap_or_default();
    let (twentieths, since_tick, model_version) = match &found.decision {
        Some(Decision::Table(p)) => (
            p.decision.multiplier.twentieths(),
            Some(p.decision.tick.0),
            p.decision.model_version.to_string(),
        ),
        Some(Decision::Shared(d)) => (
            // A shared decision's multiplier is a multiple of 0.05 (the
            // policy's unit) written as f64: back to twentieths exactly.
            (d.multiplier * 20.0)
                .round()
                .clamp(20.0, f64::from(u16::MAX)) as u32,
            Some(d.tick.0),
            d.model_version.clone(),
        ),
        None => (20, None, s.model_version.to_string()),
    };
    let now = (state.now_ms)();
    let desk = &state.quotes;
    let claims = Claims {
        cell: cell.as_u64(),
        twentieths,
        since_tick,
        tick: s.tick.map(|t| t.0),
        model_version,
        issued_at: now,
        expires_at: now.saturating_add(desk.ttl_ms),
        rider_id,
        session_id,
        nonce: rand::random(),
    };
    let quote_id = desk.keyring.sign(&claims);
    desk.metrics
        .issued
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let terms = terms(state, cell, quote_id, &claims);
    desk.audit.record(AuditEvent {
        kind: AuditKind::Issued,
        quote_id: terms.quote_id.clone(),
        at_ms: now,
        claims: Some(claims),
    });
    QuoteAnswer {
        terms,
        stale: s.stale || found.degraded,
    }
}

fn terms(state: &AppState, cell: CellId, quote_id: String, c: &Claims) -> QuoteTerms {
    QuoteTerms {
        quote_id,
        cell,
        multiplier: f64::from(c.twentieths) / 20.0,
        priced: c.since_tick.is_some(),
        since_tick: c.since_tick,
        tick: c.tick,
        model_version: c.model_version.clone(),
        issued_at: c.issued_at,
        expires_at: c.expires_at,
        confirmation_required: state.quotes.confirmation_required(c.twentieths),
        rider_id: c.rider_id.clone(),
        session_id: c.session_id.clone(),
    }
}

/// Redeems a quote: 200 with the honoured multiplier while it is valid
/// (the same answer however often), 409 with a fresh quote once expired.
#[utoipa::path(post, path = "/v1/quotes/redeem",
    request_body(content = RedeemRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Valid: charge `multiplier` (idempotent: the same answer while valid)", body = RedeemAnswer),
        (status = 400, description = "Invalid JSON, a missing `quote_id`, or a malformed, altered, forged or unknown-key quote (`invalid_quote`, `unknown_quote_key`)", body = ErrorBody),
        (status = 409, description = "Expired (`quote_expired`): `quote` is a fresh quote for the same cell", body = ErrorBody),
        (status = 413, description = "Body above `max_body_bytes`", body = ErrorBody),
    ))]
pub async fn redeem(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&req, Scope::Quote)?;
    let body = read_body(payload, state.limits.max_body_bytes).await?;
    let quote_id = RedeemRequest::parse(&body)?.quote_id;
    let now = (state.now_ms)();
    let desk = &state.quotes;
    let verified = desk.keyring.verify(&quote_id);
    let cell = verified
        .as_ref()
        .ok()
        .and_then(|c| CellId::from_u64(c.cell));
    let (outcome, result) = match (verified, cell) {
        (Ok(claims), Some(cell)) if now < claims.expires_at => {
            let terms = terms(&state, cell, quote_id.clone(), &claims);
            (RedeemOutcome::Honoured, Ok((claims, terms)))
        }
        (Ok(claims), Some(cell)) => {
            let fresh = quote_cell(
                &state,
                cell,
                claims.rider_id.clone(),
                claims.session_id.clone(),
            )
            .await;
            let err = ApiError::QuoteExpired {
                expired_at: claims.expires_at,
                fresh: Box::new(fresh),
            };
            (RedeemOutcome::Expired, Err((Some(claims), err)))
        }
        // Signed by us but naming no cell: cannot happen unless a key
        // leaked; refused like a forgery.
        (Ok(_), None) | (Err(TokenError::Invalid), _) => (
            RedeemOutcome::Invalid,
            Err((
                None,
                ApiError::InvalidQuote(TokenError::Invalid.to_string()),
            )),
        ),
        (Err(e @ TokenError::UnknownKey(_)), _) => (
            RedeemOutcome::UnknownKey,
            Err((None, ApiError::UnknownQuoteKey(e.to_string()))),
        ),
    };
    desk.metrics.redeemed(outcome);
    let claims = match &result {
        Ok((c, _)) | Err((Some(c), _)) => Some(c.clone()),
        Err((None, _)) => None,
    };
    desk.audit.record(AuditEvent {
        kind: AuditKind::Redeemed { outcome },
        quote_id,
        at_ms: now,
        claims,
    });
    match result {
        Ok((_, terms)) => Ok(HttpResponse::Ok().json(RedeemAnswer {
            terms,
            honoured: true,
        })),
        Err((_, e)) => Err(e),
    }
}
