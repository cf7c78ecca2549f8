//! Governance reports: expiring, orphaned, drifting and over-privileged
//! identities, mapped to the OWASP Non-Human Identities Top 10 (2025).

use std::collections::{HashMap, HashSet};

use hallmark_core::{Ttl, now_unix};
use hallmark_store::CredentialFilter;
use serde::Serialize;

use crate::{ServerError, ServerState};

/// The report kinds.
pub const KINDS: &[&str] = &["expiring", "orphans", "exceptions", "drift", "rotation", "compliance"];

/// The OWASP NHI Top 10 (2025) items.
pub const NHI: &[(&str, &str)] = &[
    ("NHI1", "Improper Offboarding"),
    ("NHI2", "Secret Leakage"),
    ("NHI3", "Vulnerable Third-Party NHI"),
    ("NHI4", "Insecure Authentication"),
    ("NHI5", "Overprivileged NHI"),
    ("NHI6", "Insecure Cloud Deployment Configurations"),
    ("NHI7", "Long-Lived Secrets"),
    ("NHI8", "Environment Isolation"),
    ("NHI9", "NHI Reuse"),
    ("NHI10", "Human Use of NHI"),
];

/// An approval by an admin identity younger than this is a finding.
const NEW_ADMIN_SECS: i64 = 7 * 86_400;

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Which check found it, e.g. `credential_expiring`.
    pub check: &'static str,
    /// What it is about: an entry id, serial/jti, exception id, CA.
    pub subject: String,
    /// The evidence, in one line.
    pub detail: String,
    /// The OWASP NHI item it falls under.
    pub nhi: &'static str,
}

/// Report parameters.
#[derive(Debug, Clone, Copy)]
pub struct ReportParams {
    /// Window for "expiring soon", seconds.
    pub within: i64,
    /// An entry with no credential issued for this long is "unused", seconds.
    pub unused_for: i64,
}

impl ServerState {
    /// Builds report `kind`.
    pub async fn report(&self, kind: &str, p: ReportParams) -> Result<Vec<Finding>, ServerError> {
        let now = now_unix();
        Ok(match kind {
            "expiring" => self.expiring(now, p).await?,
            "orphans" => self.orphans(now).await?,
            "exceptions" => self.exception_findings(now, p).await?,
            "drift" => self.drift(now, p).await?,
            "rotation" => self.rotation(now).await?,
            "compliance" => {
                let mut all = Vec::new();
                for k in ["expiring", "orphans", "exceptions", "drift", "rotation"] {
                    all.extend(Box::pin(self.report(k, p)).await?);
                }
                all.extend(self.reuse_and_privilege().await?);
                all
            }
            other => return Err(ServerError::Internal(format!("unknown report `{other}`"))),
        })
    }

    async fn live_credentials(&self, now: i64) -> Result<Vec<hallmark_store::Credential>, ServerError> {
        Ok(self.store.credentials(&CredentialFilter { live_at: Some(now), ..Default::default() }, 1_000_000).await?)
    }

    async fn expiring(&self, now: i64, p: ReportParams) -> Result<Vec<Finding>, ServerError> {
        let mut out = Vec::new();
        for c in self.live_credentials(now).await? {
            if c.not_after <= now.saturating_add(p.within) {
                out.push(Finding {
                    check: "credential_expiring",
                    subject: c.id.clone(),
                    detail: format!(
                        "{} {} of {} (owner {}) expires in {}s",
                        c.kind,
                        c.id,
                        c.spiffe_id,
                        c.owner,
                        c.not_after - now
                    ),
                    nhi: "NHI7",
                });
            }
        }
        let ca = self.authorities.x509()?;
        if ca.not_after() <= now.saturating_add(p.within) {
            out.push(Finding {
                check: "ca_expiring",
                subject: "x509-ca".into(),
                detail: format!("the active X.509 CA expires in {}s", ca.not_after() - now),
                nhi: "NHI7",
            });
        }
        let jwt_na = self.authorities.jwt_not_after()?;
        if jwt_na <= now.saturating_add(p.within) {
            out.push(Finding {
                check: "ca_expiring",
                subject: self.authorities.jwt()?.kid().to_owned(),
                detail: format!("the active JWT signing key expires in {}s", jwt_na - now),
                nhi: "NHI7",
            });
        }
        Ok(out)
    }

    async fn orphans(&self, now: i64) -> Result<Vec<Finding>, ServerError> {
        let active: HashSet<String> =
            self.store.owners().await?.into_iter().filter(|o| o.active).map(|o| o.name).collect();
        let mut out = Vec::new();
        let mut orphaned = HashSet::new();
        for e in self.store.entries(None).await? {
            if !active.contains(&e.owner) {
                orphaned.insert(e.id.clone());
                out.push(Finding {
                    check: "orphan_entry",
                    subject: e.id.clone(),
                    detail: format!("{} has no active owner (`{}`)", e.spiffe_id, e.owner),
                    nhi: "NHI1",
                });
            }
        }
        for c in self.live_credentials(now).await? {
            if orphaned.contains(&c.entry_id) {
                out.push(Finding {
                    check: "orphan_credential",
                    subject: c.id.clone(),
                    detail: format!("live {} {} issued to orphaned entry {}", c.kind, c.id, c.entry_id),
                    nhi: "NHI1",
                });
            }
        }
        Ok(out)
    }

    async fn exception_findings(&self, now: i64, p: ReportParams) -> Result<Vec<Finding>, ServerError> {
        let mut out = Vec::new();
        let admins: HashMap<String, hallmark_store::AdminToken> =
            self.store.admin_tokens().await?.into_iter().map(|t| (t.name.clone(), t)).collect();
        for x in self.store.exceptions().await? {
            // An approver made shortly before approving: the two-person rule
            // may have been met by an identity created for the purpose. (The
            // bootstrap identity, which nobody created, is not one.)
            if let (Some(by), Some(at)) = (&x.approved_by, x.approved_at)
                && let Some(t) = admins.get(by)
                && t.created_by.is_some()
                && at - t.created_at < NEW_ADMIN_SECS
            {
                out.push(Finding {
                    check: "approved_by_new_admin",
                    subject: x.id.clone(),
                    detail: format!(
                        "{} = {} on entry {} approved by `{by}`, an admin identity created {}s before the approval by `{}`",
                        x.rule,
                        x.value,
                        x.entry_id,
                        at - t.created_at,
                        t.created_by.as_deref().unwrap_or_default()
                    ),
                    nhi: "NHI4",
                });
            }
            let (check, detail) = match x.state(now) {
                "active" if x.expires_at <= now.saturating_add(p.within) => (
                    "exception_expiring",
                    format!("{} = {} on entry {} expires in {}s", x.rule, x.value, x.entry_id, x.expires_at - now),
                ),
                "active" => (
                    "exception_active",
                    format!(
                        "{} = {} on entry {}, approved by {}",
                        x.rule,
                        x.value,
                        x.entry_id,
                        x.approved_by.clone().unwrap_or_default()
                    ),
                ),
                "expired" if x.approved_at.is_some() => (
                    "exception_expired",
                    format!("{} = {} on entry {} expired at {}", x.rule, x.value, x.entry_id, x.expires_at),
                ),
                "pending" => {
                    ("exception_pending", format!("{} = {} on entry {} awaits approval", x.rule, x.value, x.entry_id))
                }
                _ => continue,
            };
            out.push(Finding { check, subject: x.id.clone(), detail, nhi: "NHI7" });
        }
        Ok(out)
    }

    async fn drift(&self, now: i64, p: ReportParams) -> Result<Vec<Finding>, ServerError> {
        let entries = self.store.entries(None).await?;
        let mut out = Vec::new();
        let all_creds = self.store.credentials(&CredentialFilter::default(), 1_000_000).await?;
        let mut last_issued: HashMap<&str, i64> = HashMap::new();
        for c in &all_creds {
            let t = last_issued.entry(c.entry_id.as_str()).or_insert(0);
            *t = (*t).max(c.issued_at);
        }
        for e in &entries {
            let max = self.settings.classes.rules(e.class).max_ttl;
            let exceptions = self.store.active_exceptions(&e.id, now).await?;
            for (what, ttl) in [("x509", e.x509_ttl), ("jwt", e.jwt_ttl)] {
                let raised = exceptions
                    .iter()
                    .any(|x| x.rule == "ttl_above_class_max" || (what == "x509" && x.rule == "long_lived_certificate"));
                if ttl > max && !raised {
                    out.push(Finding {
                        check: "ttl_above_class_max",
                        subject: e.id.clone(),
                        detail: format!(
                            "{} {what} TTL {ttl} exceeds the {} class maximum {max} with no active exception",
                            e.spiffe_id, e.class
                        ),
                        nhi: "NHI7",
                    });
                }
            }
            let last = last_issued.get(e.id.as_str()).copied().unwrap_or(e.created_at);
            if now - last > p.unused_for {
                out.push(Finding {
                    check: "unused_entry",
                    subject: e.id.clone(),
                    detail: format!(
                        "{} has had no credential issued for {}",
                        e.spiffe_id,
                        Ttl::from_secs(u64::try_from(now - last).unwrap_or(1))
                            .map(|t| t.to_string())
                            .unwrap_or_default()
                    ),
                    nhi: "NHI1",
                });
            }
        }
        let ids: HashSet<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        for c in all_creds.iter().filter(|c| c.not_after > now && c.revoked_at.is_none()) {
            if !ids.contains(c.entry_id.as_str()) {
                out.push(Finding {
                    check: "live_after_entry_deleted",
                    subject: c.id.clone(),
                    detail: format!(
                        "{} {} of {} is live until {} but its entry {} was deleted",
                        c.kind, c.id, c.spiffe_id, c.not_after, c.entry_id
                    ),
                    nhi: "NHI1",
                });
            }
        }
        Ok(out)
    }

    async fn rotation(&self, now: i64) -> Result<Vec<Finding>, ServerError> {
        let mut out = Vec::new();
        for c in self.live_credentials(now).await? {
            let class: hallmark_core::Class = c.class.parse().unwrap_or_default();
            let renew_at = self.settings.classes.rules(class).renew_at;
            let due = c.issued_at + ((c.not_after - c.issued_at) as f64 * renew_at) as i64;
            if now > due {
                out.push(Finding {
                    check: "rotation_overdue",
                    subject: c.id.clone(),
                    detail: format!(
                        "live {} {} of {} is past its {} renewal point by {}s",
                        c.kind,
                        c.id,
                        c.spiffe_id,
                        c.class,
                        now - due
                    ),
                    nhi: "NHI7",
                });
            }
        }
        Ok(out)
    }

    /// Checks only the compliance report runs: shared identities and root-only selection.
    async fn reuse_and_privilege(&self) -> Result<Vec<Finding>, ServerError> {
        let entries = self.store.entries(None).await?;
        let mut by_id: HashMap<String, Vec<&str>> = HashMap::new();
        for e in &entries {
            by_id.entry(e.spiffe_id.to_string()).or_default().push(e.id.as_str());
        }
        let mut out = Vec::new();
        for (id, list) in by_id.iter().filter(|(_, l)| l.len() > 1) {
            out.push(Finding {
                check: "shared_identity",
                subject: id.clone(),
                detail: format!("{id} is registered by {} entries ({})", list.len(), list.join(", ")),
                nhi: "NHI9",
            });
        }
        for e in &entries {
            let root_only = e.selectors.iter().all(|s| {
                s.kind() == "unix"
                    && matches!(
                        (s.key(), s.value()),
                        ("uid", "0") | ("gid", "0") | ("user", "root") | ("group", "root")
                    )
            });
            if root_only {
                out.push(Finding {
                    check: "root_only_selection",
                    subject: e.id.clone(),
                    detail: format!(
                        "{} is granted to any process running as root (selectors only name uid/gid 0)",
                        e.spiffe_id
                    ),
                    nhi: "NHI5",
                });
            }
        }
        Ok(out)
    }
}
