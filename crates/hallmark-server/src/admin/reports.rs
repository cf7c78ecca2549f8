//! Admin API: governance reports, `/v1/reports/{kind}` (expiring, orphans,
//! exceptions, drift, rotation, compliance; see [`crate::reports`]).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use hallmark_core::now_unix;
use serde::Deserialize;
use serde_json::json;

use super::auth::Admin;
use super::error::ApiError;
use super::roles::Perm;
use crate::state::ServerState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReportQuery {
    /// Seconds; default one day.
    #[serde(default)]
    within: Option<i64>,
    /// Seconds; default 30 days.
    #[serde(default)]
    unused_for: Option<i64>,
}

/// `GET /v1/reports/{kind}`: every owner's findings; not for an owner role.
pub(crate) async fn report(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    Path(kind): Path<String>,
    q: Result<Query<ReportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    who.may(Perm::ReadEntries)?;
    if who.owner_scope().is_some() {
        return Err(ApiError::forbidden("reports cover every owner; they need trust-admin, operator or auditor"));
    }
    let Query(q) = q.map_err(|e| ApiError::bad(e.body_text()))?;
    let kind: crate::reports::ReportKind = kind.parse().map_err(ApiError::not_found)?;
    let within = q.within.unwrap_or(86_400);
    let unused_for = q.unused_for.unwrap_or(30 * 86_400);
    if within < 0 || unused_for < 0 {
        return Err(ApiError::bad("within and unused_for must not be negative"));
    }
    let params = crate::reports::ReportParams { within, unused_for };
    let crate::reports::Report { findings, notes, people } =
        s.report(kind, params).await.map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let mut body = json!({ "kind": kind.as_str(), "generated_at": now_unix(), "findings": findings, "notes": notes });
    if let Some(people) = people {
        super::guard::set_field(&mut body, "people", json!(people));
    }
    if kind == crate::reports::ReportKind::Compliance {
        let items: Vec<serde_json::Value> = crate::reports::NHI
            .iter()
            .map(|(id, title)| {
                let n = findings.iter().filter(|f| f.nhi == *id).count();
                json!({ "id": id, "title": title, "findings": n })
            })
            .collect();
        super::guard::set_field(&mut body, "nhi", json!(items));
    }
    if matches!(kind, crate::reports::ReportKind::Compliance | crate::reports::ReportKind::Tasks) {
        let items: Vec<serde_json::Value> = crate::reports::ASI
            .iter()
            .map(|(id, title)| {
                let n = findings.iter().filter(|f| f.asi == Some(*id)).count();
                json!({ "id": id, "title": title, "findings": n })
            })
            .collect();
        super::guard::set_field(&mut body, "asi", json!(items));
    }
    Ok(Json(body))
}
