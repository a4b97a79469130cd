//! API errors: one variant per failure, each mapped to one HTTP status and
//! a JSON body [`ErrorBody`] `{"error": {"status", "code", "field",
//! "message"}}`.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpResponse, ResponseError};
use thiserror::Error;

use super::answers::{ErrorBody, ErrorDetail};

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
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::InvalidField { .. } | Self::InvalidBody(_) | Self::Read(_) => {
                StatusCode::BAD_REQUEST
            }
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let field = match self {
            Self::InvalidField { field, .. } => Some(field.as_str()),
            _ => None,
        };
        let mut response = HttpResponse::build(self.status_code());
        if let Self::MethodNotAllowed { allow, .. } = self {
            response.insert_header((header::ALLOW, *allow));
        }
        response.json(ErrorBody {
            error: ErrorDetail {
                status: self.status_code().as_u16(),
                code: self.code(),
                field,
                message: self.to_string(),
            },
        })
    }
}
