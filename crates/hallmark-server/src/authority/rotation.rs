//! Scheduled rotation and the operator's steps: prepare, activate, taint,
//! revoke; and the renewal gaps `hallmark doctor` reports.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hallmark_ca::authority_id;
use hallmark_core::now_unix;
use hallmark_store::{AuthorityRow, AuthorityState};

use super::{Authorities, AuthorityError, Kind, KindSummary, lock_err};
use crate::error::ServerError;

/// Life fraction at which the next authority is prepared.
const PREPARE_AT: f64 = 0.5;
/// Life fraction at which the prepared authority is activated.
const ACTIVATE_AT: f64 = 5.0 / 6.0;
/// An active authority this close to expiry (or a tenth of its lifetime,
/// when that is shorter) is replaced at once.
const MIN_REMAINING_SECS: i64 = 60;

impl Authorities {
    /// This server's authorities that will not be replaced in time by
    /// themselves, each as (subject, why): an active authority expiring
    /// within `within` seconds whose scheduled successor is overdue, and an
    /// upstream CA certificate (which Hallmark cannot renew) expiring within
    /// `within`. An authority rotating on schedule is not listed.
    pub fn renewal_gaps(&self, now: i64, within: i64) -> Result<Vec<(String, String)>, ServerError> {
        // The maintenance task runs every 5 s; a step later than this has stalled.
        const STALLED_AFTER: i64 = 60;
        let mut out = Vec::new();
        for kind in super::KINDS {
            let subject = format!("{}-authority", kind.as_str());
            let KindSummary { active, prepared } = self.local_summary(kind)?;
            let Some((nb, na)) = active else {
                out.push((subject, format!("this server has no active {} authority", kind.as_str())));
                continue;
            };
            if na > now.saturating_add(within) {
                continue;
            }
            let life = (na - nb).max(1) as f64;
            let (step, due) = match prepared {
                None => ("prepared", nb + (life * PREPARE_AT) as i64),
                Some(_) => ("activated", nb + (life * ACTIVATE_AT) as i64),
            };
            if now > due + STALLED_AFTER {
                out.push((
                    subject,
                    format!(
                        "the active {} authority expires at {} and its successor, due to be {step} at {}, is not: \
                         scheduled rotation has stalled (see the server log)",
                        kind.as_str(),
                        hallmark_core::time::rfc3339(na),
                        hallmark_core::time::rfc3339(due)
                    ),
                ));
            }
        }
        if self.upstream.is_some() {
            let ca = self.x509()?;
            for anchor in ca.anchors() {
                let Ok((_, cert)) = x509_parser::parse_x509_certificate(anchor) else { continue };
                let na = cert.validity().not_after.timestamp();
                if na <= now.saturating_add(within) {
                    out.push((
                        "upstream-ca".to_owned(),
                        format!(
                            "the upstream CA certificate `{}` expires at {}; Hallmark cannot renew it: \
                             replace `ca.upstream_cert` and `ca.upstream_key` before then",
                            cert.subject(),
                            hallmark_core::time::rfc3339(na)
                        ),
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Prepares the next authority of `kind`: published in the bundle, not yet
    /// signing. Refused while one is already prepared.
    pub async fn prepare(&self, kind: Kind) -> Result<AuthorityRow, AuthorityError> {
        if let Some(p) = self.local_summary(kind)?.prepared {
            return Err(AuthorityError::Refused(format!(
                "{} authority `{p}` is already prepared; activate it first",
                kind.as_str()
            )));
        }
        let row = self.generate(kind, AuthorityState::Prepared, now_unix()).await?;
        tracing::info!(kind = kind.as_str(), authority = %row.id, not_after = row.not_after, "prepared authority");
        self.refresh_bundle().await?;
        Ok(row)
    }

    /// Makes the prepared authority of `kind` the active one; the previous
    /// active one becomes old and stays in the bundle until it expires.
    pub async fn activate(&self, kind: Kind) -> Result<AuthorityRow, AuthorityError> {
        let id = self.local_summary(kind)?.prepared.ok_or_else(|| {
            AuthorityError::NotFound(format!(
                "no prepared {} authority on this server; run `hallmark ca prepare` first",
                kind.as_str()
            ))
        })?;
        self.store.activate_authority(&id).await?;
        self.set_local_states(kind, &id)?;
        tracing::info!(kind = kind.as_str(), authority = %id, "activated authority");
        self.refresh_crls().await?;
        self.refresh_bundle().await?;
        self.store.authority(&id).await?.ok_or_else(|| AuthorityError::NotFound(format!("authority `{id}`")))
    }

    /// Taints a prepared or old authority: agents re-issue everything it signed
    /// under the active one. The active authority cannot be tainted.
    pub async fn taint(&self, id: &str) -> Result<AuthorityRow, AuthorityError> {
        let row =
            self.store.authority(id).await?.ok_or_else(|| AuthorityError::NotFound(format!("authority `{id}`")))?;
        match (row.state, row.tainted_at) {
            (AuthorityState::Active, _) => {
                return Err(AuthorityError::Refused(format!(
                    "authority `{id}` is active; prepare and activate another before tainting it"
                )));
            }
            (AuthorityState::Revoked, _) => {
                return Err(AuthorityError::Refused(format!("authority `{id}` is already revoked")));
            }
            (_, Some(_)) => return Err(AuthorityError::Refused(format!("authority `{id}` is already tainted"))),
            _ => {}
        }
        if !self.store.taint_authority(id, now_unix()).await? {
            return Err(AuthorityError::Refused(format!("authority `{id}` changed state; look again")));
        }
        tracing::warn!(authority = %id, kind = %row.kind, "authority tainted; agents re-issue what it signed");
        self.refresh_bundle().await?;
        self.store.authority(id).await?.ok_or_else(|| AuthorityError::NotFound(format!("authority `{id}`")))
    }

    /// Revokes a tainted, non-active authority: it leaves the bundle and
    /// nothing it signed validates any more; its key file is removed.
    pub async fn revoke(&self, id: &str) -> Result<AuthorityRow, AuthorityError> {
        let row =
            self.store.authority(id).await?.ok_or_else(|| AuthorityError::NotFound(format!("authority `{id}`")))?;
        if row.state == AuthorityState::Active {
            return Err(AuthorityError::Refused(format!(
                "authority `{id}` is active; prepare, activate and taint before revoking"
            )));
        }
        if row.state == AuthorityState::Revoked {
            return Err(AuthorityError::Refused(format!("authority `{id}` is already revoked")));
        }
        if row.tainted_at.is_none() {
            return Err(AuthorityError::Refused(format!(
                "authority `{id}` is not tainted; taint it first so that what it signed is re-issued"
            )));
        }
        if row.kind == Kind::X509.as_str() || row.kind == Kind::Human.as_str() {
            let anchor = STANDARD.decode(&row.public).unwrap_or_default();
            if authority_id(&anchor) != row.id {
                return Err(AuthorityError::Refused(format!(
                    "authority `{id}` is an intermediate under the upstream root, which is what the bundle publishes; \
                     it stays tainted (nothing it signed is renewed by it), revoke it at the upstream CA"
                )));
            }
        }
        if !self.store.revoke_authority(id).await? {
            return Err(AuthorityError::Refused(format!("authority `{id}` changed state; look again")));
        }
        if let Some(kind) = Kind::parse(&row.kind) {
            let mut keys = self.keys.write().map_err(|_| lock_err())?;
            keys.x509.retain(|l| l.id != id);
            keys.jwt.retain(|l| l.id != id);
            keys.human.retain(|l| l.id != id);
            drop(keys);
            self.forget_key(kind, id);
        }
        tracing::warn!(authority = %id, kind = %row.kind, "authority revoked; removed from the bundle");
        self.refresh_bundle().await?;
        self.store.authority(id).await?.ok_or_else(|| AuthorityError::NotFound(format!("authority `{id}`")))
    }

    /// Scheduled rotation for both kinds: prepare at half life, activate at
    /// five sixths; replace at once an active authority that is missing or
    /// about to expire. Returns whether anything changed.
    pub async fn rotate_if_due(&self) -> Result<bool, ServerError> {
        let mut changed = false;
        for kind in super::KINDS {
            let now = now_unix();
            let KindSummary { active, prepared } = self.local_summary(kind)?;
            let min_remaining = MIN_REMAINING_SECS.min(i64::try_from(self.ttl_secs / 10).unwrap_or(i64::MAX));
            let Some((nb, na)) = active.filter(|(_, na)| na - now > min_remaining) else {
                // No usable active authority: use the prepared one, or make one now.
                let first = active.is_none() && prepared.is_none() && self.held(kind)? == 0;
                let id = match prepared {
                    Some(p) => p,
                    None => self.generate(kind, AuthorityState::Prepared, now).await?.id,
                };
                self.store.activate_authority(&id).await?;
                self.set_local_states(kind, &id)?;
                match active {
                    None if first => {
                        tracing::info!(kind = kind.as_str(), authority = %id, "created the first authority")
                    }
                    None => tracing::warn!(
                        kind = kind.as_str(),
                        authority = %id,
                        "every earlier authority had expired; created and activated a new one"
                    ),
                    Some((_, na)) => tracing::warn!(
                        kind = kind.as_str(),
                        authority = %id,
                        expires_in_secs = na - now,
                        "the active authority was about to expire; activated its successor at once"
                    ),
                }
                changed = true;
                continue;
            };
            let life = (na - nb).max(1) as f64;
            let age = (now - nb) as f64 / life;
            match prepared {
                None if age >= PREPARE_AT => {
                    let row = self.generate(kind, AuthorityState::Prepared, now).await?;
                    tracing::info!(kind = kind.as_str(), authority = %row.id, "prepared next authority (scheduled)");
                    changed = true;
                }
                Some(id) if age >= ACTIVATE_AT => {
                    self.store.activate_authority(&id).await?;
                    self.set_local_states(kind, &id)?;
                    tracing::info!(kind = kind.as_str(), authority = %id, "activated next authority (scheduled)");
                    changed = true;
                }
                _ => {}
            }
        }
        // Keys of authorities that have expired are never needed again.
        let now = now_unix();
        let expired: Vec<(Kind, String)> = {
            let mut keys = self.keys.write().map_err(|_| lock_err())?;
            let gone = keys
                .x509
                .iter()
                .filter(|l| l.not_after <= now)
                .map(|l| (Kind::X509, l.id.clone()))
                .chain(keys.jwt.iter().filter(|l| l.not_after <= now).map(|l| (Kind::Jwt, l.id.clone())))
                .chain(keys.human.iter().filter(|l| l.not_after <= now).map(|l| (Kind::Human, l.id.clone())))
                .collect();
            keys.x509.retain(|l| l.not_after > now);
            keys.jwt.retain(|l| l.not_after > now);
            keys.human.retain(|l| l.not_after > now);
            gone
        };
        for (kind, id) in expired {
            self.forget_key(kind, &id);
        }
        if changed {
            self.refresh_crls().await?;
            self.refresh_bundle().await?;
        }
        Ok(changed)
    }
}
