//! The people section of the reports: what to act on about people's
//! certificates, apart from the machines' OWASP NHI findings, with each live
//! certificate's approval signal (a login decided by policy, or a
//! break-glass grant and who gave it).

use std::collections::HashMap;

use hallmark_core::{Class, now_unix};
use hallmark_store::CredentialFilter;
use serde::Serialize;

use crate::error::ServerError;
use crate::reports::Finding;
use crate::state::ServerState;

/// A recovery request open longer than this is a finding: the person is
/// locked out, or someone forgot to close it.
const RECOVERY_STALE_SECS: i64 = 24 * 3600;

/// A live certificate of a person and how it was approved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PersonCertificate {
    /// The serial.
    pub serial: String,
    /// The person's SPIFFE ID.
    pub spiffe_id: String,
    /// Unix seconds.
    pub not_after: i64,
    /// `login` (an OpenID Connect login decided by policy) or `break-glass`.
    pub approval: String,
    /// For break-glass: the grant and who gave it.
    pub approved_by: Option<String>,
}

/// The people section of a report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PeopleSection {
    /// Something to act on.
    pub findings: Vec<Finding>,
    /// Every live certificate of a person, with its approval signal.
    pub certificates: Vec<PersonCertificate>,
}

impl ServerState {
    /// The people section: break-glass uses nobody reviewed, recoveries open
    /// for over a day, and live certificates of people who left (which the
    /// leaver's revocation should have ended).
    pub async fn people_section(&self) -> Result<PeopleSection, ServerError> {
        let now = now_unix();
        let mut out = PeopleSection::default();
        let uses = self.store.break_glass_uses(false).await?;
        for u in uses.iter().filter(|u| u.reviewed_at.is_none()) {
            out.findings.push(Finding {
                check: "break_glass_unreviewed",
                subject: u.id.clone(),
                detail: format!(
                    "{} used break-glass grant {} at {} (certificate {}); nobody has reviewed it \
                     (`hallmark human break-glass review {} --note ...`)",
                    u.subject,
                    u.grant_id,
                    hallmark_core::time::rfc3339(u.used_at),
                    u.credential,
                    u.id
                ),
                nhi: "",
                asi: None,
            });
        }
        for r in self.store.recoveries(None, true).await? {
            if now - r.requested_at > RECOVERY_STALE_SECS {
                out.findings.push(Finding {
                    check: "recovery_stale",
                    subject: r.id.clone(),
                    detail: format!(
                        "recovery of {} open since {} ({:?}): the person cannot sign in until it is approved or cancelled",
                        r.subject,
                        hallmark_core::time::rfc3339(r.requested_at),
                        r.state
                    ),
                    nhi: "",
                    asi: None,
                });
            }
        }
        let grants: HashMap<String, String> =
            self.store.break_glass_grants().await?.into_iter().map(|g| (g.id.clone(), g.granted_by)).collect();
        let glass: HashMap<String, String> = uses
            .into_iter()
            .map(|u| {
                let by = grants.get(&u.grant_id).cloned().unwrap_or_default();
                (u.credential, format!("grant {} by {by}", u.grant_id))
            })
            .collect();
        let live =
            self.store.credentials(&CredentialFilter { live_at: Some(now), ..Default::default() }, 1_000_000).await?;
        for c in live.into_iter().filter(|c| c.class == Class::Human.as_str()) {
            if let Some(pid) = &c.person_id
                && let Some(p) = self.store.person(pid).await?
                && p.has_left()
            {
                out.findings.push(Finding {
                    check: "person_left_certificate_live",
                    subject: c.id.clone(),
                    detail: format!(
                        "{} has left but certificate {} is live: revoke it (`hallmark revoke --person {pid}`)",
                        c.spiffe_id, c.id
                    ),
                    nhi: "",
                    asi: None,
                });
            }
            let approved_by = glass.get(&c.id).cloned();
            out.certificates.push(PersonCertificate {
                serial: c.id,
                spiffe_id: c.spiffe_id,
                not_after: c.not_after,
                approval: if approved_by.is_some() { "break-glass" } else { "login" }.into(),
                approved_by,
            });
        }
        Ok(out)
    }
}
