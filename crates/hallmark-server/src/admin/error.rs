//! The admin API's error: a status and a one-line message, answered as
//! `{"error": "..."}`. Every failure a handler meets becomes one here, in one
//! place: what the datastore, the authorities and revocation report, and the
//! framework's own rejections.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hallmark_store::{ExceptionError, JoinTokenRevokeError, StoreError};
use serde_json::json;

use crate::authority::AuthorityError;
use crate::error::ServerError;

/// An API error: a status and a one-line message.
#[derive(Debug)]
pub struct ApiError(pub(crate) StatusCode, pub(crate) String);

/// The message of an [`ApiError`], kept on its response for the record of
/// refused calls.
#[derive(Debug, Clone)]
pub(crate) struct ErrorMessage(pub(crate) String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.0, Json(json!({ "error": self.1 }))).into_response();
        r.extensions_mut().insert(ErrorMessage(self.1));
        r
    }
}

impl ApiError {
    /// 400: the request is wrong, and `msg` says how.
    pub(crate) fn bad(msg: impl ToString) -> Self {
        Self(StatusCode::BAD_REQUEST, msg.to_string())
    }

    /// 403: the caller may not do this, and `msg` says why.
    pub(crate) fn forbidden(msg: impl ToString) -> Self {
        Self(StatusCode::FORBIDDEN, msg.to_string())
    }

    /// 404: `msg` names what does not exist.
    pub(crate) fn not_found(msg: impl ToString) -> Self {
        Self(StatusCode::NOT_FOUND, msg.to_string())
    }

    /// 409: the request conflicts with the stored state, as `msg` says.
    pub(crate) fn conflict(msg: impl ToString) -> Self {
        Self(StatusCode::CONFLICT, msg.to_string())
    }

    /// 500 for a failure the caller cannot act on: `what` is logged with
    /// its cause and answered without it.
    pub(crate) fn internal(what: &'static str, cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "{what}");
        Self(StatusCode::INTERNAL_SERVER_ERROR, what.to_owned())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) => Self::not_found(e),
            StoreError::PersonOnWorkloadPath(_) => Self::bad(e),
            StoreError::Duplicate(_) | StoreError::Conflict { .. } | StoreError::HeldByOtherOwner { .. } => {
                Self::conflict(e)
            }
            other => {
                tracing::error!(error = %other, "datastore error");
                Self(StatusCode::INTERNAL_SERVER_ERROR, "internal datastore error".into())
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        Self(r.status(), r.body_text().replace('\n', " "))
    }
}

impl From<AuthorityError> for ApiError {
    fn from(e: AuthorityError) -> Self {
        match e {
            AuthorityError::NotFound(m) => Self::not_found(m),
            AuthorityError::Refused(m) => Self::conflict(m),
            AuthorityError::Server(e) => Self::internal("authority operation failed", &e),
        }
    }
}

impl From<JoinTokenRevokeError> for ApiError {
    fn from(e: JoinTokenRevokeError) -> Self {
        match e {
            JoinTokenRevokeError::NotFound(_) => Self::not_found(e),
            JoinTokenRevokeError::Used(_) => Self::conflict(e),
            JoinTokenRevokeError::Store(e) => e.into(),
        }
    }
}

impl From<ExceptionError> for ApiError {
    fn from(e: ExceptionError) -> Self {
        match e {
            ExceptionError::SelfApproval(_) => Self::forbidden(e),
            ExceptionError::State { .. } => Self::conflict(e),
        }
    }
}

/// A failed revocation as the API reports it: datastore outcomes (404, 409)
/// as they are, anything else logged and answered 500.
pub(crate) fn revocation(e: ServerError) -> ApiError {
    match e {
        ServerError::Store(e) => e.into(),
        other => ApiError::internal("revocation failed", &other),
    }
}
