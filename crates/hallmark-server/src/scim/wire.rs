//! What a SCIM request carries and a SCIM answer looks like: the caller
//! (an admin token whose role may provision), the body (a JSON object,
//! bounded by the router's body limit and by the JSON parser's nesting
//! limit, with no NUL character), the list parameters, the base URL the
//! `meta.location`s are built on, and answers as `application/scim+json`
//! with `ETag` and `Location` where they belong.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::error::{SCIM_JSON, ScimError};
use crate::admin::Admin;
use crate::admin::roles::Perm;
use crate::state::ServerState;

/// The ListResponse message schema.
pub const LIST: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
/// Most resources one page holds (the ServiceProviderConfig's `maxResults`).
pub const MAX_RESULTS: usize = 1000;
/// Deepest JSON nesting a body may have. The JSON parser refuses beyond
/// 128 levels by itself; nothing SCIM defines goes deeper than four.
const MAX_NESTING: usize = 32;

/// An authenticated caller whose role may provision (`scim`, or any role
/// granted every permission). 401 and 403 are SCIM errors.
#[derive(Debug)]
pub struct Caller(pub Admin);

impl Caller {
    /// The admin identity's name, the actor of audit records.
    pub fn name(&self) -> &str {
        &self.0.token.name
    }
}

impl FromRequestParts<Arc<ServerState>> for Caller {
    type Rejection = ScimError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<ServerState>) -> Result<Self, ScimError> {
        let admin = Admin::from_request_parts(parts, state).await?;
        admin.may(Perm::Scim)?;
        Ok(Self(admin))
    }
}

/// A SCIM request body: a JSON object.
#[derive(Debug)]
pub struct Body(pub Map<String, Value>);

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn holds_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(holds_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ScimError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ScimError> {
        let media = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let essence = media.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        if essence != SCIM_JSON && essence != "application/json" {
            return Err(ScimError {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                scim_type: None,
                detail: format!("the body must be {SCIM_JSON} (or application/json), not `{media}`"),
            });
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|r| ScimError {
            status: r.status(),
            scim_type: None,
            detail: r.body_text().replace('\n', " "),
        })?;
        // serde_json stops at 128 levels of nesting with an error, never
        // overflowing the stack; the walks below are bounded by that.
        let value: Value =
            serde_json::from_slice(&bytes).map_err(|e| ScimError::invalid_syntax(format!("invalid JSON: {e}")))?;
        if depth(&value) > MAX_NESTING {
            return Err(ScimError::invalid_syntax(format!("the body is nested deeper than {MAX_NESTING} levels")));
        }
        if holds_nul(&value) {
            return Err(ScimError::invalid_value("a string in the body contains a NUL character"));
        }
        match value {
            Value::Object(o) => Ok(Self(o)),
            _ => Err(ScimError::invalid_syntax("the body must be a JSON object")),
        }
    }
}

/// The list parameters of a query (RFC 7644 §3.4.2), from the URL or a
/// `.search` body.
#[derive(Debug, Default, Clone)]
pub struct ListParams {
    /// `filter`.
    pub filter: Option<String>,
    /// `startIndex`, from 1.
    pub start: usize,
    /// `count`.
    pub count: usize,
    /// `attributes`.
    pub attributes: Vec<String>,
    /// `excludedAttributes`.
    pub excluded: Vec<String>,
}

fn names(v: &str) -> Vec<String> {
    v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// A number parameter: non-numbers are 400; startIndex below 1 counts as
/// 1, a negative count as 0, and a count above [`MAX_RESULTS`] as that
/// (RFC 7644 §3.4.2.4).
fn number(name: &str, v: &str) -> Result<i64, ScimError> {
    v.trim().parse::<i64>().map_err(|_| ScimError::invalid_value(format!("`{name}` must be an integer, not `{v}`")))
}

impl ListParams {
    /// From the query string.
    pub fn from_query(query: Option<&str>) -> Result<Self, ScimError> {
        let mut p = Self { start: 1, count: MAX_RESULTS, ..Default::default() };
        for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match k.as_ref() {
                "filter" => p.filter = Some(v.into_owned()),
                "startIndex" => p.start = usize::try_from(number(&k, &v)?.max(1)).unwrap_or(1),
                "count" => p.count = usize::try_from(number(&k, &v)?.clamp(0, MAX_RESULTS as i64)).unwrap_or(0),
                "attributes" => p.attributes = names(&v),
                "excludedAttributes" => p.excluded = names(&v),
                // sortBy and sortOrder: sorting is not offered (the
                // ServiceProviderConfig says so); anything else is ignored.
                _ => {}
            }
        }
        Ok(p)
    }

    /// From a `POST .search` body (RFC 7644 §3.4.3).
    pub fn from_search(body: &Map<String, Value>) -> Result<Self, ScimError> {
        let mut p = Self { start: 1, count: MAX_RESULTS, ..Default::default() };
        let list = |v: &Value| -> Result<Vec<String>, ScimError> {
            match v {
                Value::Array(a) => a
                    .iter()
                    .map(|x| {
                        x.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| ScimError::invalid_value("attribute names are strings"))
                    })
                    .collect(),
                Value::String(s) => Ok(names(s)),
                Value::Null => Ok(Vec::new()),
                _ => Err(ScimError::invalid_value("attribute names are strings")),
            }
        };
        for (k, v) in body {
            match (k.as_str(), v) {
                ("filter", Value::String(f)) => p.filter = Some(f.clone()),
                ("startIndex", Value::Number(n)) => {
                    p.start = usize::try_from(n.as_i64().unwrap_or(1).max(1)).unwrap_or(1)
                }
                ("count", Value::Number(n)) => {
                    p.count = usize::try_from(n.as_i64().unwrap_or(0).clamp(0, MAX_RESULTS as i64)).unwrap_or(0)
                }
                ("attributes", v) => p.attributes = list(v)?,
                ("excludedAttributes", v) => p.excluded = list(v)?,
                (_, Value::Null) | ("schemas" | "sortBy" | "sortOrder", _) => {}
                (k, _) => return Err(ScimError::invalid_value(format!("`{k}` has the wrong type"))),
            }
        }
        Ok(p)
    }

    /// The page of `all` these parameters ask for, as a ListResponse.
    pub fn page(&self, all: Vec<Value>) -> Response {
        let total = all.len();
        let items: Vec<Value> = all.into_iter().skip(self.start.saturating_sub(1)).take(self.count).collect();
        let body = json!({
            "schemas": [LIST],
            "totalResults": total,
            "startIndex": self.start,
            "itemsPerPage": items.len(),
            "Resources": items,
        });
        scim_json(StatusCode::OK, &body)
    }
}

/// `body` as `application/scim+json`.
pub fn scim_json(status: StatusCode, body: &Value) -> Response {
    (status, [(header::CONTENT_TYPE, SCIM_JSON)], body.to_string()).into_response()
}

/// A resource answer: its `meta.version` as `ETag`, and for a creation its
/// `meta.location` as `Location`.
pub fn resource(status: StatusCode, body: &Value) -> Response {
    let mut r = scim_json(status, body);
    let meta = |k: &str| body.get("meta").and_then(|m| m.get(k)).and_then(Value::as_str).map(str::to_owned);
    if let Some(v) = meta("version").and_then(|v| v.parse().ok()) {
        r.headers_mut().insert(header::ETAG, v);
    }
    if status == StatusCode::CREATED
        && let Some(l) = meta("location").and_then(|v| v.parse().ok())
    {
        r.headers_mut().insert(header::LOCATION, l);
    }
    r
}

/// The weak ETag of version `n`: `W/"n"`.
pub fn etag(n: i64) -> String {
    format!("W/\"{n}\"")
}

/// 412 unless `If-Match` (when given) names version `n` or is `*`.
pub fn check_if_match(headers: &HeaderMap, n: i64) -> Result<(), ScimError> {
    let Some(want) = headers.get(header::IF_MATCH) else { return Ok(()) };
    let want = want.to_str().unwrap_or_default();
    let current = etag(n);
    let strong = format!("\"{n}\"");
    if want.split(',').map(str::trim).any(|t| t == "*" || t == current || t == strong) {
        Ok(())
    } else {
        Err(ScimError::precondition(format!("the resource is at version {current}, not {want}")))
    }
}

/// The base URL resources are located under: `http://HOST/scim/v2`, or
/// `https://` behind a proxy that says so. A Host header that is no host
/// name (with port) is replaced by `localhost`: it only ever shapes the
/// caller's own answer.
pub fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty() && h.len() <= 255 && h.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        })
        .unwrap_or("localhost");
    let https =
        headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("https"));
    format!("{}://{host}/scim/v2", if https { "https" } else { "http" })
}
