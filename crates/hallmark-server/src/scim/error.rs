//! SCIM errors (RFC 7644 §3.12): a status, an optional `scimType` and a
//! one-line detail, answered as `urn:ietf:params:scim:api:messages:2.0:Error`
//! with the status as a string. Every failure a SCIM handler meets becomes
//! one here: the datastore's, the admin API's authentication and role
//! checks, a bad filter, a bad body.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use hallmark_store::StoreError;
use serde_json::json;

use super::filter::FilterError;
use crate::admin::ApiError;
use crate::error::ServerError;

/// The SCIM error message schema.
pub const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
/// The media type of every SCIM answer.
pub const SCIM_JSON: &str = "application/scim+json";

/// A SCIM error.
#[derive(Debug)]
pub struct ScimError {
    /// HTTP status.
    pub status: StatusCode,
    /// `scimType` (RFC 7644 Table 9), for 400 and 409.
    pub scim_type: Option<&'static str>,
    /// What went wrong, in one line.
    pub detail: String,
}

impl ScimError {
    fn new(status: StatusCode, scim_type: Option<&'static str>, detail: impl ToString) -> Self {
        Self { status, scim_type, detail: detail.to_string() }
    }

    /// 400 `invalidValue`.
    pub fn invalid_value(detail: impl ToString) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Some("invalidValue"), detail)
    }

    /// 400 `invalidSyntax`.
    pub fn invalid_syntax(detail: impl ToString) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Some("invalidSyntax"), detail)
    }

    /// 400 `invalidFilter`.
    pub fn invalid_filter(detail: impl ToString) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Some("invalidFilter"), detail)
    }

    /// 400 `invalidPath`.
    pub fn invalid_path(detail: impl ToString) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Some("invalidPath"), detail)
    }

    /// 400 `noTarget`.
    pub fn no_target(detail: impl ToString) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Some("noTarget"), detail)
    }

    /// 400 `mutability`.
    pub fn mutability(detail: impl ToString) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Some("mutability"), detail)
    }

    /// 404.
    pub fn not_found(detail: impl ToString) -> Self {
        Self::new(StatusCode::NOT_FOUND, None, detail)
    }

    /// 409 `uniqueness`.
    pub fn uniqueness(detail: impl ToString) -> Self {
        Self::new(StatusCode::CONFLICT, Some("uniqueness"), detail)
    }

    /// 412: the resource changed since the version the client named.
    pub fn precondition(detail: impl ToString) -> Self {
        Self::new(StatusCode::PRECONDITION_FAILED, None, detail)
    }

    /// 501.
    pub fn not_implemented(detail: impl ToString) -> Self {
        Self::new(StatusCode::NOT_IMPLEMENTED, None, detail)
    }

    /// 500 for a failure the client cannot act on: logged with its cause,
    /// answered without it.
    pub fn internal(what: &'static str, cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "{what}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, None, what)
    }
}

impl IntoResponse for ScimError {
    fn into_response(self) -> Response {
        let mut body = json!({ "schemas": [ERROR], "status": self.status.as_u16().to_string(), "detail": self.detail });
        if let (Some(t), Some(o)) = (self.scim_type, body.as_object_mut()) {
            o.insert("scimType".into(), json!(t));
        }
        let mut r = (self.status, [(header::CONTENT_TYPE, SCIM_JSON)], body.to_string()).into_response();
        // For the record of refused calls (401, 403), as the admin API's errors.
        r.extensions_mut().insert(crate::admin::ErrorMessage(self.detail));
        r
    }
}

impl From<StoreError> for ScimError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) => Self::not_found(e),
            StoreError::Duplicate(_) => Self::uniqueness(e),
            other => Self::internal("internal datastore error", &other),
        }
    }
}

impl From<ApiError> for ScimError {
    fn from(e: ApiError) -> Self {
        let scim_type = (e.0 == StatusCode::BAD_REQUEST).then_some("invalidValue");
        Self::new(e.0, scim_type, e.1)
    }
}

impl From<FilterError> for ScimError {
    fn from(e: FilterError) -> Self {
        Self::invalid_filter(e)
    }
}

/// A revocation that failed after the person's change was written: the
/// change stands, the client is told to retry (a retried write revokes
/// again).
pub fn revocation_failed(e: &ServerError) -> ScimError {
    ScimError::internal("the change was stored but revoking the person's credentials failed; retry the request", e)
}
