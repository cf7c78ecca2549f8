//! Governance reports: expiring, orphaned, drifting and over-privileged
//! identities, mapped to the OWASP Non-Human Identities Top 10 (2025), and
//! AI-agent tasks, mapped to the OWASP Top 10 for Agentic Applications
//! (2026) as well.

use std::collections::{HashMap, HashSet};

use hallmark_core::time::{rfc3339, rfc3339_relative};
use hallmark_core::{CredentialKind, Ttl, now_unix};
use hallmark_store::CredentialFilter;
use serde::Serialize;

use crate::error::ServerError;
use crate::state::ServerState;

/// A report `GET /v1/reports/{kind}` builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKind {
    /// Credentials and authorities expiring with no renewal to replace them.
    Expiring,
    /// Identities nobody owns any more (or whose owner's person left), or
    /// that nothing uses.
    Orphans,
    /// Exceptions beyond their class, approved by a new admin, pending or ending.
    Exceptions,
    /// What runs differs from what is registered.
    Drift,
    /// Authorities whose rotation stalled.
    Rotation,
    /// AI-agent tasks: scope breaches, tasks whose agent has no owner,
    /// tasks past their lifetime.
    Tasks,
    /// People: break-glass uses not reviewed, stale recoveries, live
    /// certificates of people who left; and every live certificate of a
    /// person with its approval signal.
    People,
    /// Every finding above and reuse and privilege, mapped to the OWASP NHI
    /// Top 10, with people in a section of their own.
    Compliance,
}

impl ReportKind {
    /// Every kind, in the order the compliance report runs them (itself last).
    pub const ALL: [Self; 8] = [
        Self::Expiring,
        Self::Orphans,
        Self::Exceptions,
        Self::Drift,
        Self::Rotation,
        Self::Tasks,
        Self::People,
        Self::Compliance,
    ];

    /// The name in the URL and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Expiring => "expiring",
            Self::Orphans => "orphans",
            Self::Exceptions => "exceptions",
            Self::Drift => "drift",
            Self::Rotation => "rotation",
            Self::Tasks => "tasks",
            Self::People => "people",
            Self::Compliance => "compliance",
        }
    }
}

/// A name that is no report kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown report `{0}` (expiring, orphans, exceptions, drift, rotation, tasks, people, compliance)")]
pub struct UnknownReport(pub String);

impl std::str::FromStr for ReportKind {
    type Err = UnknownReport;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| UnknownReport(s.to_owned()))
    }
}

impl std::fmt::Display for ReportKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The OWASP Top 10 for Agentic Applications (2026) items the task
/// findings fall under.
pub const ASI: &[(&str, &str)] = &[
    ("ASI01", "Agent Goal Hijack"),
    ("ASI02", "Tool Misuse and Exploitation"),
    ("ASI03", "Identity and Privilege Abuse"),
    ("ASI10", "Rogue Agents"),
];

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
    /// The OWASP NHI item it falls under ("" for a finding about people,
    /// which the NHI Top 10 does not cover).
    #[serde(skip_serializing_if = "no_nhi")]
    pub nhi: &'static str,
    /// The OWASP Top 10 for Agentic Applications item, for a task finding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asi: Option<&'static str>,
}

fn no_nhi(nhi: &&'static str) -> bool {
    nhi.is_empty()
}

/// Report parameters.
#[derive(Debug, Clone, Copy)]
pub struct ReportParams {
    /// Window for "expiring soon", seconds.
    pub within: i64,
    /// An entry with no credential issued for this long is "unused", seconds.
    pub unused_for: i64,
}

/// A report: findings, each something to act on, and notes, for information
/// only (a pending exception, say); `--fail-on-findings` looks only at findings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Something to act on.
    pub findings: Vec<Finding>,
    /// Worth knowing, nothing to act on.
    pub notes: Vec<Finding>,
    /// People (the `people` and `compliance` reports): their findings and
    /// live certificates, apart from the machines'.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub people: Option<crate::human::PeopleSection>,
}

/// How long past its renewal point (beyond the server's jitter) a credential
/// may be before it counts as not renewed: the agent retries every few
/// seconds. A tenth of the lifetime for credentials shorter than five minutes.
fn renewal_grace(life: i64) -> i64 {
    (life / 10).clamp(1, 30)
}

/// Whether a denial recorded for `c`'s entry also refuses `c`'s renewal:
/// same kind of credential and, for a JWT-SVID, one of its audiences.
fn denial_blocks(d: &hallmark_store::DenialRecord, c: &hallmark_store::Credential) -> bool {
    match c.kind {
        CredentialKind::X509 => matches!(d.action.as_str(), "issue_x509" | "renew"),
        CredentialKind::Jwt => {
            d.action == "issue_jwt"
                && match (&c.audience, &d.audience) {
                    (Some(have), Some(denied)) => have.split(',').any(|a| a == denied),
                    // A JWT recorded before audiences were: any JWT denial counts.
                    (None, _) => true,
                    (Some(_), None) => false,
                }
        }
        CredentialKind::Wit => d.action == "issue_wit",
    }
}

impl ServerState {
    /// Builds report `kind`.
    pub async fn report(&self, kind: ReportKind, p: ReportParams) -> Result<Report, ServerError> {
        let now = now_unix();
        let findings = match kind {
            ReportKind::Expiring => self.expiring(now, p).await?,
            ReportKind::Orphans => self.orphans(now).await?,
            ReportKind::Exceptions => return self.exception_findings(now, p).await,
            ReportKind::Drift => self.drift(now, p).await?,
            ReportKind::Rotation => self.rotation(now).await?,
            ReportKind::Tasks => self.task_findings(now).await?,
            ReportKind::People => {
                return Ok(Report { people: Some(self.people_section().await?), ..Report::default() });
            }
            ReportKind::Compliance => {
                let mut all = Report::default();
                for k in ReportKind::ALL.into_iter().filter(|k| *k != ReportKind::Compliance) {
                    let r = Box::pin(self.report(k, p)).await?;
                    all.findings.extend(r.findings);
                    all.notes.extend(r.notes);
                    if r.people.is_some() {
                        all.people = r.people;
                    }
                }
                all.findings.extend(self.reuse_and_privilege().await?);
                all.findings.extend(self.join_token_served().await?);
                return Ok(all);
            }
        };
        Ok(Report { findings, notes: Vec::new(), people: None })
    }

    async fn live_credentials(&self, now: i64) -> Result<Vec<hallmark_store::Credential>, ServerError> {
        Ok(self.store.credentials(&CredentialFilter { live_at: Some(now), ..Default::default() }, 1_000_000).await?)
    }

    /// Credentials and authorities that will expire with no renewal to
    /// replace them. A short-lived credential renewing on schedule, and an
    /// authority rotating by itself, are healthy and not listed.
    async fn expiring(&self, now: i64, p: ReportParams) -> Result<Vec<Finding>, ServerError> {
        let mut out = Vec::new();
        let horizon = now.saturating_add(p.within);
        let live = self.live_credentials(now).await?;
        let soon: Vec<_> = live.iter().filter(|c| c.not_after <= horizon).collect();
        if !soon.is_empty() {
            let entries: HashMap<String, hallmark_core::Entry> =
                self.store.entries(None).await?.into_iter().map(|e| (e.id.clone(), e)).collect();
            let oldest = soon.iter().map(|c| c.issued_at).min().unwrap_or(now);
            let denials = self.store.denials_since(oldest).await?;
            for c in &soon {
                let why = match entries.get(&c.entry_id) {
                    None => Some("its entry was deleted".to_owned()),
                    Some(e) if e.revoked_at.is_some() => Some("its entry was revoked".to_owned()),
                    Some(_) => denials
                        .iter()
                        .rev()
                        .find(|d| d.entry_id == c.entry_id && d.at >= c.issued_at && denial_blocks(d, c))
                        // Issued again since that denial: renewal works again.
                        .filter(|d| {
                            !live.iter().any(|n| {
                                n.entry_id == c.entry_id
                                    && n.kind == c.kind
                                    && n.issued_at > d.at
                                    && denial_blocks(d, n)
                            })
                        })
                        .map(|d| format!("its renewal was denied at {} by {}", rfc3339(d.at), d.reason)),
                };
                let Some(why) = why else { continue };
                out.push(Finding {
                    check: "credential_expiring",
                    subject: c.id.clone(),
                    detail: format!(
                        "{} {} of {} (owner {}) expires at {} and cannot be renewed: {why}",
                        c.kind,
                        c.id,
                        c.spiffe_id,
                        c.owner,
                        rfc3339_relative(c.not_after, now)
                    ),
                    nhi: "NHI7",
                    asi: None,
                });
            }
        }
        for (subject, detail) in self.authorities.renewal_gaps(now, p.within)? {
            out.push(Finding { check: "ca_expiring", subject, detail, nhi: "NHI7", asi: None });
        }
        Ok(out)
    }

    /// Entries served by nodes that proved themselves only with a join
    /// token: a bearer secret anyone who copied it could have used (NHI4).
    /// A node attestor (x509pop, TPM, PSAT) proves the node from what it
    /// holds; `policy` can forbid join-token nodes where it matters.
    async fn join_token_served(&self) -> Result<Vec<Finding>, ServerError> {
        let join_token_nodes: HashSet<String> = self
            .store
            .nodes()
            .await?
            .into_iter()
            .filter(|n| n.attestation_type == "join_token" && !n.banned)
            .map(|n| n.agent_id)
            .collect();
        if join_token_nodes.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self
            .store
            .entries(None)
            .await?
            .into_iter()
            .filter(|e| e.revoked_at.is_none() && join_token_nodes.contains(e.parent_id.as_str()))
            .map(|e| Finding {
                check: "served_by_join_token_node",
                subject: e.id.clone(),
                detail: format!(
                    "{} (owner {}) is served by node {}, which proved itself only with a join token (a bearer \
                     secret); attest it with x509pop, TPM or PSAT",
                    e.spiffe_id, e.owner, e.parent_id
                ),
                nhi: "NHI4",
                asi: None,
            })
            .collect())
    }

    /// AI-agent tasks: each with requests outside its scope (ASI02, NHI5),
    /// each running for an agent whose entry has no active owner (ASI03,
    /// NHI1), and each not ended past its lifetime (the sweep ends them within
    /// a second: one listed here means it is not running; ASI10, NHI7).
    async fn task_findings(&self, now: i64) -> Result<Vec<Finding>, ServerError> {
        let active: HashSet<String> =
            self.store.owners().await?.into_iter().filter(|o| o.active).map(|o| o.name).collect();
        let owners: HashMap<String, String> =
            self.store.entries(None).await?.into_iter().map(|e| (e.id, e.owner)).collect();
        let mut out = Vec::new();
        for t in self.store.tasks(None, false).await? {
            if t.breaches > 0 {
                let ended = match (&t.ended_at, &t.end_reason) {
                    (Some(_), Some(r)) => format!("; ended: {r}"),
                    _ => String::new(),
                };
                out.push(Finding {
                    check: "task_scope_breach",
                    subject: t.id.clone(),
                    detail: format!(
                        "task of entry {} asked {} time(s) for tokens outside its scope{ended}",
                        t.entry_id, t.breaches
                    ),
                    nhi: "NHI5",
                    asi: Some("ASI02"),
                });
            }
            if t.ended_at.is_some() {
                continue;
            }
            match owners.get(&t.entry_id) {
                Some(owner) if active.contains(owner) => {}
                owner => out.push(Finding {
                    check: "task_without_owner",
                    subject: t.id.clone(),
                    detail: format!(
                        "running task of entry {} has no active owner ({})",
                        t.entry_id,
                        owner.map_or("entry deleted".to_owned(), |o| format!("`{o}`"))
                    ),
                    nhi: "NHI1",
                    asi: Some("ASI03"),
                }),
            }
            if t.expires_at <= now {
                out.push(Finding {
                    check: "task_past_lifetime",
                    subject: t.id.clone(),
                    detail: format!(
                        "task of entry {} is not ended although its lifetime ran out {}",
                        t.entry_id,
                        rfc3339_relative(t.expires_at, now)
                    ),
                    nhi: "NHI7",
                    asi: Some("ASI10"),
                });
            }
        }
        Ok(out)
    }

    /// Entries with no active owner, entries whose owner's accountable
    /// person left ("owner left"), and the live credentials of both (NHI1).
    async fn orphans(&self, now: i64) -> Result<Vec<Finding>, ServerError> {
        let active: HashSet<String> =
            self.store.owners().await?.into_iter().filter(|o| o.active).map(|o| o.name).collect();
        // Owners whose accountable person left (SCIM): their machines keep
        // working, and stay findings until transferred to another owner.
        let left: HashMap<String, hallmark_store::OwnerPerson> =
            self.store.owner_people().await?.into_iter().filter(|l| l.left).map(|l| (l.owner.clone(), l)).collect();
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
                    asi: None,
                });
            } else if let Some(l) = left.get(&e.owner) {
                orphaned.insert(e.id.clone());
                let when = l.left_at.map(|t| format!(" at {}", rfc3339(t))).unwrap_or_default();
                out.push(Finding {
                    check: "owner_left",
                    subject: e.id.clone(),
                    detail: format!(
                        "owner left: {} is owned by `{}`, whose accountable person `{}` left{when}; transfer it \
                         (`hallmark owner transfer {} --to OWNER`)",
                        e.spiffe_id, e.owner, l.user_name, e.owner
                    ),
                    nhi: "NHI1",
                    asi: None,
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
                    asi: None,
                });
            }
        }
        Ok(out)
    }

    /// Active exceptions that let credentials live beyond their class
    /// maximum are findings (each is a rule broken until it expires); pending
    /// and soon-expiring ones are notes. An expired exception is the normal
    /// rule applying again, and is not listed.
    async fn exception_findings(&self, now: i64, p: ReportParams) -> Result<Report, ServerError> {
        let entries: HashMap<String, hallmark_core::Entry> =
            self.store.entries(None).await?.into_iter().map(|e| (e.id.clone(), e)).collect();
        let admins: HashMap<String, hallmark_store::AdminToken> =
            self.store.admin_tokens().await?.into_iter().map(|t| (t.name.clone(), t)).collect();
        let mut r = Report::default();
        for x in self.store.exceptions().await? {
            let state = x.state(now);
            let where_ = format!("{} = {} on entry {}", x.rule, x.value, x.entry_id);
            // An approver made shortly before approving: the two-person rule
            // may have been met by an identity created for the purpose. (The
            // bootstrap identity, which nobody created, is not one.)
            if let (Some(by), Some(at)) = (&x.approved_by, x.approved_at)
                && let Some(t) = admins.get(by)
                && let Some(creator) = &t.created_by
                && at - t.created_at < NEW_ADMIN_SECS
            {
                r.findings.push(Finding {
                    check: "approved_by_new_admin",
                    subject: x.id.clone(),
                    detail: format!(
                        "{where_} approved by `{by}`, an admin identity `{creator}` created {} before the approval",
                        hallmark_core::format_duration(std::time::Duration::from_secs(
                            u64::try_from(at - t.created_at).unwrap_or(0)
                        ))
                    ),
                    nhi: "NHI4",
                    asi: None,
                });
            }
            match state {
                "active" => {
                    let max = entries.get(&x.entry_id).map(|e| self.settings.classes.rules(e.class).max_ttl);
                    let value = Ttl::parse(&x.value).ok();
                    let beyond = match (value, max) {
                        (Some(v), Some(m)) => v > m,
                        _ => true,
                    };
                    let until = rfc3339_relative(x.expires_at, now);
                    let by = x.approved_by.clone().unwrap_or_default();
                    if beyond {
                        let class_max = max.map(|m| m.to_string()).unwrap_or_else(|| "?".into());
                        r.findings.push(Finding {
                            check: "exception_active",
                            subject: x.id.clone(),
                            detail: format!(
                                "{where_} lets credentials live beyond the class maximum {class_max} until {until} \
                                 (approved by {by})"
                            ),
                            nhi: "NHI7",
                            asi: None,
                        });
                    } else if x.expires_at <= now.saturating_add(p.within) {
                        r.notes.push(Finding {
                            check: "exception_expiring",
                            subject: x.id.clone(),
                            detail: format!("{where_} ends {until}; the normal rule applies again by itself"),
                            nhi: "NHI7",
                            asi: None,
                        });
                    }
                }
                "pending" => r.notes.push(Finding {
                    check: "exception_pending",
                    subject: x.id.clone(),
                    detail: format!("{where_} awaits approval (requested by {})", x.requested_by),
                    nhi: "NHI7",
                    asi: None,
                }),
                _ => {}
            }
        }
        Ok(r)
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
                        asi: None,
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
                    asi: None,
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
                        c.kind,
                        c.id,
                        c.spiffe_id,
                        rfc3339(c.not_after),
                        c.entry_id
                    ),
                    nhi: "NHI1",
                    asi: None,
                });
            }
        }
        Ok(out)
    }

    /// Live X.509-SVIDs past their renewal point (with the agent's jitter and
    /// a grace period) that nothing has replaced while the agent that must
    /// renew them is not connected to this server. A credential its agent
    /// renewed, or whose workload stopped asking (it expires, short-lived, by
    /// itself), is healthy.
    async fn rotation(&self, now: i64) -> Result<Vec<Finding>, ServerError> {
        let live = self.live_credentials(now).await?;
        // The newest issuance per (entry, node): an older one has been replaced.
        let mut newest: HashMap<(&str, &str), i64> = HashMap::new();
        for c in live.iter().filter(|c| c.kind == CredentialKind::X509) {
            let t = newest.entry((c.entry_id.as_str(), c.node_id.as_str())).or_insert(c.issued_at);
            *t = (*t).max(c.issued_at);
        }
        let mut out = Vec::new();
        for c in live.iter().filter(|c| c.kind == CredentialKind::X509) {
            if newest.get(&(c.entry_id.as_str(), c.node_id.as_str())).is_some_and(|t| *t > c.issued_at) {
                continue;
            }
            let class: hallmark_core::Class = c.class.parse().unwrap_or_default();
            // The server adds up to 5% jitter to the class's renewal point.
            let renew_fraction = self.settings.classes.rules(class).renew_fraction + 0.05;
            let life = c.not_after - c.issued_at;
            let renew_at = c.issued_at + (life as f64 * renew_fraction) as i64;
            let due = renew_at + renewal_grace(life);
            if now <= due || self.changes.connected(&c.node_id) {
                continue;
            }
            out.push(Finding {
                check: "rotation_overdue",
                subject: c.id.clone(),
                detail: format!(
                    "live {} {} of {} passed its {} renewal point at {} and was not renewed: its agent {} is not \
                     connected; it expires at {}",
                    c.kind,
                    c.id,
                    c.spiffe_id,
                    c.class,
                    rfc3339(renew_at),
                    c.node_id,
                    rfc3339_relative(c.not_after, now)
                ),
                nhi: "NHI7",
                asi: None,
            });
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
                asi: None,
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
                    asi: None,
                });
            }
        }
        Ok(out)
    }
}
