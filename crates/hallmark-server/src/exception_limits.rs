//! What an exception can actually grant. No credential outlives the authority
//! that signs it, so an exception asking for more than the signing authority
//! has left is capped at issuance; the requester and the approver are told so
//! (a `warnings` list in the response) instead of finding out later.

use axum::Json;
use hallmark_core::Ttl;
use hallmark_core::time::relative;
use hallmark_store::ExceptionRecord;

use crate::ServerState;

/// Warnings about `x`: its value exceeds what the active X.509 authority or
/// JWT key has left to live, or what any authority under `ca.ttl` ever has.
pub fn warnings(s: &ServerState, x: &ExceptionRecord, now: i64) -> Vec<String> {
    let Ok(value) = Ttl::parse(&x.value) else { return Vec::new() };
    let want = i64::try_from(value.secs()).unwrap_or(i64::MAX);
    // A new authority is prepared at half its predecessor's life and activated
    // at five sixths of it: it starts signing with two thirds of `ca.ttl` left.
    let ca_ttl = i64::try_from(s.settings.ca_ttl.secs()).unwrap_or(i64::MAX);
    let longest = ca_ttl / 3 * 2;
    let mut out = Vec::new();
    let mut left: Vec<(&str, i64)> = Vec::new();
    if let Ok(ca) = s.authorities.x509() {
        left.push(("X.509 authority", ca.not_after()));
    }
    if x.rule == "ttl_above_class_max"
        && let Ok(na) = s.authorities.jwt_not_after()
    {
        left.push(("JWT key", na));
    }
    for (what, not_after) in left {
        if want > not_after - now {
            out.push(format!(
                "credentials cannot outlive the authority that signs them: the active {what} expires {}, so \
                 `{}` is capped at that for now; with `ca.ttl = \"{}\"` no credential ever lives longer than {} \
                 (raise `ca.ttl` in the server configuration to at least {} for `{}` to take effect)",
                relative(not_after, now),
                x.value,
                s.settings.ca_ttl,
                Ttl::from_secs(u64::try_from(longest).unwrap_or(1)).map(|t| t.to_string()).unwrap_or_default(),
                Ttl::from_secs(value.secs().saturating_mul(3) / 2).map(|t| t.to_string()).unwrap_or_default(),
                x.value
            ));
            break;
        }
    }
    out
}

/// `x` as the API answers it: the record, and `warnings` when it cannot take
/// full effect.
pub fn with_warnings(s: &ServerState, x: ExceptionRecord) -> Json<serde_json::Value> {
    let warnings = warnings(s, &x, hallmark_core::now_unix());
    for w in &warnings {
        tracing::warn!(exception = %x.id, entry = %x.entry_id, "{w}");
    }
    let mut v = serde_json::to_value(x).unwrap_or_default();
    v["warnings"] = serde_json::json!(warnings);
    Json(v)
}
