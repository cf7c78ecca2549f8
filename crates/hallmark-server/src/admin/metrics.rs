//! `GET /metrics`: the Prometheus text exposition of the server's
//! [`Metrics`](crate::metrics::Metrics) and the gauges read when scraped.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::metrics::CLASSES;
use crate::state::ServerState;
use hallmark_core::CredentialKind;

/// The Prometheus text exposition of `s`'s metrics.
pub fn render(s: &ServerState) -> String {
    let m = &s.metrics;
    let now = hallmark_core::now_unix();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP hallmark_server_credentials_issued_total Credentials issued (X.509 first issues and renewals, JWTs, WITs), by class.\n\
         # TYPE hallmark_server_credentials_issued_total counter"
    );
    for (class, row) in CLASSES.iter().zip(&m.issued) {
        for (kind, c) in CredentialKind::ALL.iter().zip(row) {
            let _ = writeln!(
                out,
                "hallmark_server_credentials_issued_total{{class=\"{class}\",kind=\"{kind}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP hallmark_server_issuance_denied_total Issuances denied by class rules or policy, by class.\n\
         # TYPE hallmark_server_issuance_denied_total counter"
    );
    for (class, c) in CLASSES.iter().zip(&m.denied) {
        let _ =
            writeln!(out, "hallmark_server_issuance_denied_total{{class=\"{class}\"}} {}", c.load(Ordering::Relaxed));
    }
    m.decision.render(&mut out, "hallmark_server_decision_seconds", "Time to decide one issuance by policy.");
    s.audit.append_latency().render(
        &mut out,
        "hallmark_server_audit_append_seconds",
        "Time to append one group-committed batch to the audit chain.",
    );
    let gauge = |out: &mut String, name: &str, help: &str, v: i64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    };
    gauge(
        &mut out,
        "hallmark_server_connected_agents",
        "Agents with an entry sync stream open on this server.",
        i64::try_from(s.changes.connected_agents()).unwrap_or(i64::MAX),
    );
    gauge(
        &mut out,
        "hallmark_server_registry_entries",
        "Registration entries in this server's registry.",
        i64::try_from(s.registry.len()).unwrap_or(i64::MAX),
    );
    let _ = writeln!(
        out,
        "# HELP hallmark_server_authority_expiry_seconds Seconds until the active signing authority of each kind expires.\n\
         # TYPE hallmark_server_authority_expiry_seconds gauge"
    );
    if let Ok(ca) = s.authorities.x509() {
        let _ = writeln!(out, "hallmark_server_authority_expiry_seconds{{kind=\"x509\"}} {}", ca.not_after() - now);
    }
    if let Ok(na) = s.authorities.jwt_not_after() {
        let _ = writeln!(out, "hallmark_server_authority_expiry_seconds{{kind=\"jwt\"}} {}", na - now);
    }
    out
}

/// `GET /metrics`
pub(crate) async fn serve(
    axum::extract::State(s): axum::extract::State<std::sync::Arc<ServerState>>,
) -> impl axum::response::IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], render(&s))
}
