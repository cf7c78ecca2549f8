//! Admin API: what relying parties fetch without a token: the trust bundle
//! (`/bundle`, the SPIFFE bundle document; `/v1/bundle`, PEM or JWKS) and
//! each authority's CRL (`/v1/crl/{id}`).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::error::ApiError;
use crate::authority::AuthorityError;
use crate::state::ServerState;

/// `GET /bundle`: the SPIFFE bundle document.
pub(crate) async fn spiffe_bundle(State(s): State<Arc<ServerState>>) -> Result<Response, ApiError> {
    let b = s.authorities.bundle().borrow().clone();
    let doc = b.to_spiffe_json().map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(doc).into_response())
}

#[derive(Deserialize)]
pub(crate) struct BundleQuery {
    #[serde(default)]
    format: Option<String>,
}

/// `GET /v1/bundle?format=pem|jwks`
pub(crate) async fn bundle(
    State(s): State<Arc<ServerState>>,
    Query(q): Query<BundleQuery>,
) -> Result<Response, ApiError> {
    match q.format.as_deref().unwrap_or("pem") {
        "pem" => {
            let b = s.authorities.bundle().borrow().clone();
            Ok(([(header::CONTENT_TYPE, "application/x-pem-file")], b.x509_pem()).into_response())
        }
        "jwks" => spiffe_bundle(State(s)).await,
        other => Err(ApiError::bad(format!("unknown bundle format `{other}` (pem, jwks)"))),
    }
}

/// `GET /v1/crl/{id}`: the authority's current CRL, DER. Public, like the bundle.
pub(crate) async fn crl(State(s): State<Arc<ServerState>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    match s.authorities.crl(&id).await.map_err(AuthorityError::Server)? {
        Some(der) => Ok(([(header::CONTENT_TYPE, "application/pkix-crl")], der).into_response()),
        None => Err(ApiError::not_found(format!("no CRL for authority `{id}`"))),
    }
}
