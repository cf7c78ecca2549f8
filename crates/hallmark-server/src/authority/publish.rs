//! What every server publishes: the CRLs this server signs and the bundle
//! built from every server's authorities.

use std::collections::HashSet;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hallmark_ca::{AuthorityStatus, Bundle, JwtAuthority, RevokedSerial, X509Authority};
use hallmark_core::now_unix;
use hallmark_store::AuthorityState;

use super::{Authorities, Local, ca_err, lock_err};
use crate::error::ServerError;

/// How long a CRL is valid; it is re-signed at half of that, or on any revocation.
const CRL_VALIDITY_SECS: i64 = 2 * 3600;

impl Authorities {
    /// Signs a fresh CRL for every X.509 authority this server holds (the
    /// workload CAs and the human issuing authority), listing
    /// the revoked serials it signed that have not expired, and stores it for
    /// every server to publish.
    pub async fn refresh_crls(&self) -> Result<(), ServerError> {
        let now = now_unix();
        let (revoked, _) = self.store.live_revocations(now).await?;
        let cas: Vec<Local<X509Authority>> = {
            let keys = self.keys.read().map_err(|_| lock_err())?;
            keys.x509.iter().chain(&keys.human).cloned().collect()
        };
        let number = u64::try_from(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0),
        )
        .unwrap_or(u64::MAX);
        for ca in cas.iter().filter(|c| c.not_after > now) {
            let list: Vec<RevokedSerial> = revoked
                .iter()
                .filter(|r| r.kind == hallmark_core::RevocationKind::X509 && r.authority_id == ca.id)
                .map(|r| RevokedSerial { serial: r.id.clone(), revoked_at: r.at })
                .collect();
            let der = ca.key.sign_crl(&list, number, now, now + CRL_VALIDITY_SECS).map_err(ca_err)?;
            self.store.set_authority_crl(&ca.id, &STANDARD.encode(der)).await?;
        }
        *self.crl_signed_at.write().map_err(|_| lock_err())? = now;
        Ok(())
    }

    /// Re-signs the CRLs when half their validity has passed.
    pub async fn refresh_crls_if_due(&self) -> Result<(), ServerError> {
        let last = *self.crl_signed_at.read().map_err(|_| lock_err())?;
        if now_unix() - last >= CRL_VALIDITY_SECS / 2 {
            self.refresh_crls().await?;
            self.refresh_bundle().await?;
        }
        Ok(())
    }

    /// The current CRL (DER) of authority `id`, if its holder has signed one.
    pub async fn crl(&self, id: &str) -> Result<Option<Vec<u8>>, ServerError> {
        let Some(row) = self.store.authority(id).await? else { return Ok(None) };
        Ok(row.crl.and_then(|c| STANDARD.decode(c).ok()))
    }

    /// Rebuilds the bundle from every server's published authorities: prepared,
    /// active and old ones (not revoked, not expired), with the CRLs and the
    /// tainted and revoked ids agents act on.
    pub async fn refresh_bundle(&self) -> Result<(), ServerError> {
        let now = now_unix();
        let (rows, sequence) = self.store.authorities(now).await?;
        let mut b = Bundle {
            trust_domain: self.td.clone(),
            x509_authorities: Vec::new(),
            jwt_authorities: Vec::new(),
            sequence,
            refresh_hint: hallmark_ca::bundle::DEFAULT_REFRESH_HINT,
            status: AuthorityStatus::default(),
        };
        let mut tainted = HashSet::new();
        // The anchors this server trusts for its agents' mTLS: the workload
        // CAs only. The human issuing authority is published for relying
        // parties but never authenticates an agent.
        let mut agent_anchors: Vec<Vec<u8>> = Vec::new();
        for r in rows {
            if r.state == AuthorityState::Revoked {
                b.status.revoked.push(r.id.clone());
                continue;
            }
            if r.tainted_at.is_some() && tainted.insert(r.id.clone()) {
                b.status.tainted.push(r.id.clone());
            }
            match r.kind.as_str() {
                kind @ ("x509" | "human") => {
                    match STANDARD.decode(&r.public) {
                        Ok(der) => {
                            if kind == "x509" && !agent_anchors.contains(&der) {
                                agent_anchors.push(der.clone());
                            }
                            if !b.x509_authorities.contains(&der) {
                                b.x509_authorities.push(der);
                            }
                        }
                        Err(_) => tracing::warn!(authority = %r.id, "published X.509 authority is not base64; ignored"),
                    }
                    if let Some(crl) = r.crl.as_deref().and_then(|c| STANDARD.decode(c).ok()) {
                        b.status.crls.push(crl);
                    }
                }
                "jwt" => {
                    let jwk = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&r.public).ok();
                    match jwk.as_ref().and_then(JwtAuthority::from_jwk) {
                        Some(a) => b.jwt_authorities.push(a),
                        None => {
                            tracing::warn!(authority = %r.id, "published JWT authority is not a usable JWK; ignored")
                        }
                    }
                }
                other => tracing::warn!(kind = other, "unknown authority kind; ignored"),
            }
        }
        if b.x509_authorities.is_empty() || b.jwt_authorities.is_empty() {
            return Err(ServerError::EmptyBundle);
        }
        *self.anchors.write().map_err(|_| lock_err())? = agent_anchors;
        self.bundle_tx.send_if_modified(|cur| {
            if **cur == b {
                false
            } else {
                *cur = Arc::new(b);
                true
            }
        });
        Ok(())
    }
}
