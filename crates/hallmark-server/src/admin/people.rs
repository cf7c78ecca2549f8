//! Admin API: people's logins (`/v1/login/start`, `/v1/login`, which need
//! no admin token: the ID token authenticates the person), help-desk
//! recovery (`/v1/people/recoveries`) and break-glass grants
//! (`/v1/people/break-glass`). The rules live in [`crate::human`].

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::error::ApiError;
use super::guard::JsonObject;
use crate::human::{LoginCertificate, LoginError, LoginRequest, LoginStart};
use crate::state::ServerState;

impl From<LoginError> for ApiError {
    fn from(e: LoginError) -> Self {
        match e {
            LoginError::BadRequest(m) => Self::bad(m),
            LoginError::Unauthenticated(m) => Self(StatusCode::UNAUTHORIZED, m),
            LoginError::Forbidden(m) => Self::forbidden(m),
            LoginError::NotFound(m) => Self::not_found(m),
            LoginError::Busy(m) => Self(StatusCode::SERVICE_UNAVAILABLE, m),
            LoginError::Server(e) => Self::internal("login failed", &e),
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartRequest {
    #[serde(default)]
    issuer: Option<String>,
}

/// `POST /v1/login/start` `{"issuer": NAME}`: a nonce for a login.
pub(crate) async fn start(
    State(s): State<Arc<ServerState>>,
    body: Result<JsonObject<StartRequest>, ApiError>,
) -> Result<Json<LoginStart>, ApiError> {
    let JsonObject(r) = body?;
    Ok(Json(s.start_login(r.issuer.as_deref()).await?))
}

/// `POST /v1/login`: an ID token and a CSR for a person's certificate.
pub(crate) async fn login(
    State(s): State<Arc<ServerState>>,
    body: Result<JsonObject<LoginRequest>, ApiError>,
) -> Result<Json<LoginCertificate>, ApiError> {
    let JsonObject(r) = body?;
    Ok(Json(s.login(&r).await?))
}
