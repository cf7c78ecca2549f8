//! Request hygiene for the admin API, applied to every route before its
//! handler: input no handler should have to think about is refused here with
//! a 4xx, and every error the framework produces itself (a malformed query
//! string or path segment) leaves as the API's JSON error shape.

use axum::Json;
use axum::body::to_bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Refuses a NUL character in the path or query (`%00`). No identifier, name
/// or text Hallmark stores may hold one, and PostgreSQL cannot store one in a
/// text column at all: without this check the same request would succeed on
/// SQLite and fail with a datastore error on PostgreSQL. Bodies are checked
/// by [`JsonObject`].
pub(crate) async fn refuse_nul_in_uri(req: Request, next: Next) -> Response {
    if req.uri().to_string().to_ascii_lowercase().contains("%00") {
        return ApiError::bad("the request path or query contains a NUL character").into_response();
    }
    next.run(req).await
}

/// Gives plain-text error responses (the framework's own rejections of a
/// query string or path segment) the API's `{"error": "..."}` shape.
pub(crate) async fn json_errors(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let plain = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    if !(res.status().is_client_error() && plain) {
        return res;
    }
    let status = res.status();
    let text = match to_bytes(res.into_body(), 64 * 1024).await {
        Ok(b) => String::from_utf8_lossy(&b).replace('\n', " "),
        Err(_) => status.canonical_reason().unwrap_or("bad request").to_owned(),
    };
    ApiError(status, text).into_response()
}

/// A JSON request body of type `T`, which must be a JSON object. Derived
/// deserializers would also take an array and fill the fields in order
/// (`["name", "role"]` as an admin-token request); the API documents objects
/// only, so anything else is 422. No request type has a field that is an
/// array of arrays, so a nested array is refused the same way: it could only
/// be an entry of a batch given as an array. A NUL character in any string is
/// 400, as in the URI.
pub(crate) struct JsonObject<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonObject<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let Json(value) = Json::<serde_json::Value>::from_request(req, state).await?;
        let shape = |msg: &str| ApiError(StatusCode::UNPROCESSABLE_ENTITY, msg.to_owned());
        if !value.is_object() {
            return Err(shape("the request body must be a JSON object"));
        }
        if nested_array(&value) {
            return Err(shape("the request body has an array where an object or a string belongs"));
        }
        if holds_nul(&value) {
            return Err(ApiError::bad("a string in the request body contains a NUL character"));
        }
        serde_json::from_value(value)
            .map(JsonObject)
            .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, format!("invalid request body: {e}")))
    }
}

fn nested_array(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Array(a) => a.iter().any(|x| x.is_array() || nested_array(x)),
        serde_json::Value::Object(o) => o.values().any(nested_array),
        _ => false,
    }
}

fn holds_nul(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(a) => a.iter().any(holds_nul),
        serde_json::Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

/// Adds `key` to a record serialized as a JSON object (what the handlers
/// answer with: the stored record plus a field computed for the answer).
/// Anything but an object is left as it is.
pub(crate) fn set_field(record: &mut serde_json::Value, key: &str, value: serde_json::Value) {
    if let Some(fields) = record.as_object_mut() {
        fields.insert(key.to_owned(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_arrays_inside_arrays() {
        let v: serde_json::Value = serde_json::from_str(r#"{"entries":[["a",null]]}"#).unwrap();
        assert!(nested_array(&v));
        let v: serde_json::Value = serde_json::from_str(r#"{"entries":[{"selectors":["a"]}]}"#).unwrap();
        assert!(!nested_array(&v));
    }

    #[test]
    fn finds_nul_in_nested_strings_and_keys() {
        let v: serde_json::Value = serde_json::from_str(r#"{"a":[1,{"b":"x\u0000"}]}"#).unwrap();
        assert!(holds_nul(&v));
        let v: serde_json::Value = serde_json::from_str(r#"{"a\u0000":1}"#).unwrap();
        assert!(holds_nul(&v));
        // An escaped backslash followed by the text u0000 is not a NUL.
        let v: serde_json::Value = serde_json::from_str(r#"{"a":"\\u0000"}"#).unwrap();
        assert!(!holds_nul(&v));
    }
}
