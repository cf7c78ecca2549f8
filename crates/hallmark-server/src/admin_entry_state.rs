//! Admin API: an entry's lifecycle state. A revoked entry stays as a record
//! that says so, cannot be changed, and blocks a new entry with the same
//! identity until it is deleted; deleting an entry revokes what it issued.

use axum::http::StatusCode;
use hallmark_core::time::rfc3339;
use hallmark_core::{Entry, ValidEntrySpec};
use hallmark_store::RevokeTarget;

use crate::ServerState;
use crate::admin::{Admin, ApiError};

/// Reason recorded when credentials are revoked because their entry was deleted.
pub(crate) const DELETE_REASON: &str = "entry deleted";

/// 409 for a change to a revoked entry, saying how to register the identity again.
pub(crate) fn refuse_revoked(e: &Entry) -> Result<(), ApiError> {
    match e.revoked_at {
        None => Ok(()),
        Some(at) => Err(ApiError(
            StatusCode::CONFLICT,
            format!(
                "entry `{}` was revoked at {} and is kept only as a record, so it cannot be changed; \
                 to register {} again, delete it (`hallmark entry delete {}`) and create a new entry",
                e.id,
                rfc3339(at),
                e.spiffe_id,
                e.id
            ),
        )),
    }
}

/// The error for a create refused as a duplicate: when the existing entry is
/// a revoked record, says which and how to register the identity again.
pub(crate) async fn duplicate(s: &ServerState, spec: &ValidEntrySpec, msg: String) -> ApiError {
    let revoked = match s.store.entries(Some(spec.parent_id.as_str())).await {
        Ok(list) => list
            .into_iter()
            .find(|e| e.spiffe_id == spec.spiffe_id && e.selectors == spec.selectors && e.revoked_at.is_some()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot look up the revoked duplicate");
            None
        }
    };
    match revoked {
        Some(e) => ApiError(
            StatusCode::CONFLICT,
            format!(
                "entry `{}` with the same SPIFFE ID, parent and selectors was revoked at {} and is kept as a record; \
                 to register {} again, delete it (`hallmark entry delete {}`), then create this entry",
                e.id,
                rfc3339(e.revoked_at.unwrap_or_default()),
                e.spiffe_id,
                e.id
            ),
        ),
        None => ApiError(StatusCode::CONFLICT, hallmark_store::StoreError::Duplicate(msg).to_string()),
    }
}

/// Revokes the live credentials of entry `id`, which is about to be deleted,
/// exactly as `revoke --entry` does (one transaction, pushed to agents, swept
/// again two seconds later); returns the serials and jtis revoked.
pub(crate) async fn revoke_for_delete(
    s: &std::sync::Arc<ServerState>,
    who: &Admin,
    id: &str,
) -> Result<Vec<String>, ApiError> {
    let out = s
        .revoke(&RevokeTarget::Entry(id.to_owned()), DELETE_REASON, &who.token.name)
        .await
        .map_err(crate::admin_revocation::revocation_error)?;
    Ok(out.credentials)
}
