//! `POST /v1/token`: OAuth 2.0 Token Exchange (RFC 8693). No admin token:
//! the caller authenticates with its `actor_token`, and
//! [`crate::token_exchange`] does everything else. Answers are RFC 8693
//! §2.2.1 JSON, errors RFC 6749 §5.2 JSON, both `Cache-Control: no-store`.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, to_bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::ErrorMessage;
use crate::state::ServerState;
use crate::token_exchange::{ExchangeError, MAX_BODY, parse_request};

/// `POST /v1/token`.
pub(crate) async fn exchange(State(s): State<Arc<ServerState>>, headers: HeaderMap, body: Body) -> Response {
    match answer(&s, &headers, body).await {
        Ok(exchanged) => no_store((StatusCode::OK, Json(exchanged)).into_response()),
        Err(e) => error(e),
    }
}

async fn answer(
    s: &ServerState,
    headers: &HeaderMap,
    body: Body,
) -> Result<crate::token_exchange::Exchanged, ExchangeError> {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    if !form {
        return Err(ExchangeError::InvalidRequest(
            "the body must be application/x-www-form-urlencoded (RFC 8693 §2.1)".into(),
        ));
    }
    let bytes = to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| ExchangeError::InvalidRequest(format!("the request body is over {MAX_BODY} bytes")))?;
    let request = parse_request(&bytes)?;
    s.exchange_token(&request).await
}

/// An RFC 6749 §5.2 error answer: 401 for a bad actor (the client), 500 for
/// the server's own failure (logged, not explained), 400 otherwise.
fn error(e: ExchangeError) -> Response {
    let (status, description) = match &e {
        ExchangeError::InvalidClient(_) => (StatusCode::UNAUTHORIZED, e.to_string()),
        ExchangeError::Server(cause) => {
            tracing::error!(error = %cause, "token exchange failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "the server failed; try again".to_owned())
        }
        _ => (StatusCode::BAD_REQUEST, e.to_string()),
    };
    let mut r = (status, Json(json!({"error": e.code(), "error_description": description}))).into_response();
    r.extensions_mut().insert(ErrorMessage(description));
    no_store(r)
}

/// RFC 6749 §5.1: token answers, and errors about them, are never cached.
fn no_store(mut r: Response) -> Response {
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}
