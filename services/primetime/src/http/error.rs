//! API errors: one variant per failure, each mapped to one HTTP status and
//! a JSON body [`ErrorBody`] `{"error": {"status", "code", "field",
//! "message", "retryable"}}`. `retryable` says whether the same request can
//! succeed unchanged (after `Retry-After` when the answer carries it).

use actix_web::http::{StatusCode, header};
use actix_web::{HttpResponse, ResponseError};
use thiserror::Error;

use super::answers::{ErrorBody, ErrorDetail, QuoteAnswer};

#[derive(Debug, Error)]
pub enum ApiError {
    /// A parameter or body field is missing or invalid.
    #[error("{field}: {message}")]
    InvalidField { field: String, message: String },
    /// The body is not JSON of the expected shape.
    #[error("invalid JSON body: {0}")]
    InvalidBody(String),
    /// Body larger than the configured limit, or a batch above 1,000.
    #[error("{0}")]
    TooLarge(String),
    /// The request could not be read.
    #[error("cannot read request: {0}")]
    Read(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// A known path asked with a method it does not serve; `allow` lists
    /// the ones it does (the `Allow` header).
    #[error("method {method} not allowed; allowed: {allow}")]
    MethodNotAllowed { method: String, allow: &'static str },
    /// A quote token that is malformed, altered or forged.
    #[error("quote_id: {0}")]
    InvalidQuote(String),
    /// A quote signed with a key this instance does not hold.
    #[error("quote_id: {0}")]
    UnknownQuoteKey(String),
    /// The quote expired; the answer carries a fresh one.
    #[error("quote_id: the quote expired at {expired_at} ms; a fresh quote is attached")]
    QuoteExpired {
        expired_at: i64,
        fresh: Box<QuoteAnswer>,
    },
    /// `at`/`from` lies before what the history retains: never a guess.
    #[error("{field}: {message}")]
    OutsideRetention {
        field: &'static str,
        message: String,
    },
    /// `at` lies after what this instance knows of the cell (its newest
    /// fired tick, or another instance's prices proved read): the decision
    /// in force then is not known here yet.
    #[error("{field}: {message}")]
    NotYetKnown {
        field: &'static str,
        message: String,
    },
    /// No API key on a `/v1/*` route while keys are configured.
    #[error("an API key is required (Authorization: Bearer <key>, or x-api-key)")]
    MissingKey,
    /// An API key that matches no configured key.
    #[error("the API key is not valid")]
    InvalidKey,
    /// A valid key without the scope the route needs.
    #[error("the API key lacks the {0:?} scope")]
    InsufficientScope(&'static str),
    /// The key's token bucket is empty.
    #[error("rate limit exceeded; retry after {retry_after_s} s")]
    RateLimited { retry_after_s: u64 },
    /// A backing log (Kafka's control topic) cannot be written now;
    /// nothing was recorded.
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidField {
            field: field.into(),
            message: message.into(),
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::InvalidField { .. } => "invalid_field",
            Self::InvalidBody(_) => "invalid_body",
            Self::TooLarge(_) => "too_large",
            Self::Read(_) => "bad_request",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::InvalidQuote(_) => "invalid_quote",
            Self::UnknownQuoteKey(_) => "unknown_quote_key",
            Self::QuoteExpired { .. } => "quote_expired",
            Self::OutsideRetention { .. } => "outside_retention",
            Self::NotYetKnown { .. } => "not_yet_known",
            Self::MissingKey => "missing_api_key",
            Self::InvalidKey => "invalid_api_key",
            Self::InsufficientScope(_) => "insufficient_scope",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable(_) => "unavailable",
        }
    }

    fn field_name(&self) -> Option<&str> {
        match self {
            Self::InvalidField { field, .. } => Some(field.as_str()),
            Self::InvalidQuote(_) | Self::UnknownQuoteKey(_) | Self::QuoteExpired { .. } => {
                Some("quote_id")
            }
            Self::OutsideRetention { field, .. } | Self::NotYetKnown { field, .. } => Some(field),
            _ => None,
        }
    }

    /// Whether the same request, unchanged, can succeed later: only when
    /// what blocks it passes with time (a rate limit, a tick not fired yet).
    /// An expired quote never becomes valid again (the 409 carries a fresh
    /// one to redeem instead).
    fn retryable(&self) -> bool {
        matches!(
            self,
            Self::NotYetKnown { .. } | Self::RateLimited { .. } | Self::Unavailable(_)
        )
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::InvalidField { .. }
            | Self::InvalidBody(_)
            | Self::Read(_)
            | Self::InvalidQuote(_)
            | Self::UnknownQuoteKey(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::QuoteExpired { .. } => StatusCode::CONFLICT,
            Self::OutsideRetention { .. } => StatusCode::GONE,
            Self::NotYetKnown { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::MissingKey | Self::InvalidKey => StatusCode::UNAUTHORIZED,
            Self::InsufficientScope(_) => StatusCode::FORBIDDEN,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        match self {
            Self::MethodNotAllowed { allow, .. } => {
                response.insert_header((header::ALLOW, *allow));
            }
            Self::MissingKey | Self::InvalidKey => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            Self::RateLimited { retry_after_s } => {
                response.insert_header((header::RETRY_AFTER, retry_after_s.to_string()));
            }
            _ => {}
        }
        let quote = match self {
            Self::QuoteExpired { fresh, .. } => Some(fresh.as_ref()),
            _ => None,
        };
        response.json(ErrorBody {
            error: ErrorDetail {
                status: self.status_code().as_u16(),
                code: self.code(),
                field: self.field_name(),
                message: self.to_string(),
                retryable: self.retryable(),
            },
            quote,
        })
    }
}
