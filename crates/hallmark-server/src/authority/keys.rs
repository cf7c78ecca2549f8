//! Authority key files on disk (`DATA_DIR/keys/{x509,jwt,human}/`, mode 0600),
//! loading them at start, generating new authorities and removing retired keys.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hallmark_ca::keys::{read_secret_file, refuse_exposed_secret_file, write_secret_file};
use hallmark_ca::{CaError, CaPurpose, JwtKey, X509Authority, svid};
use hallmark_core::now_unix;
use hallmark_store::{AuthorityRow, AuthorityState};

use super::{Authorities, Kind, Local, LocalKeys, ca_err, io, lock_err};
use crate::error::ServerError;

fn not_utf8(path: &Path) -> impl FnOnce(std::string::FromUtf8Error) -> ServerError {
    move |source| ServerError::NotUtf8 { path: path.to_owned(), source }
}

fn bad_file(path: &Path) -> impl FnOnce(CaError) -> ServerError {
    move |source| ServerError::AuthorityFile { path: path.to_owned(), source }
}

/// The in-memory record of a loaded authority.
fn local<K>(r: &AuthorityRow, key: K) -> Local<K> {
    Local { id: r.id.clone(), key: Arc::new(key), state: r.state, not_before: r.not_before, not_after: r.not_after }
}

impl Authorities {
    /// Reads this server's live authorities from the datastore and their keys from disk.
    pub(super) async fn load(&self) -> Result<(), ServerError> {
        let now = now_unix();
        let (rows, _) = self.store.authorities(now).await?;
        let mut keys = LocalKeys::default();
        for r in rows.iter().filter(|r| r.server_id == self.server_id && r.state != AuthorityState::Revoked) {
            // A key file others may read stops the start: skipping it as
            // unusable would put a new authority in its place and serve on.
            if let Some(kind) = Kind::parse(&r.kind) {
                refuse_exposed_secret_file(&self.key_path(kind, &r.id, "key.pem")).map_err(ca_err)?;
            }
            match Kind::parse(&r.kind) {
                Some(kind @ (Kind::X509 | Kind::Human)) => match (self.read_x509(kind, &r.id), keys.x509_of(kind)) {
                    (Ok(ca), Some(list)) => list.push(local(r, ca)),
                    (Ok(_), None) => {}
                    (Err(e), _) => {
                        tracing::warn!(authority = %r.id, kind = kind.as_str(), error = %e, "X.509 authority key unusable; not loaded")
                    }
                },
                Some(Kind::Jwt) => match self.read_jwt(&r.id) {
                    Ok(k) => keys.jwt.push(local(r, k)),
                    Err(e) => tracing::warn!(authority = %r.id, error = %e, "JWT key unusable; not loaded"),
                },
                None => tracing::warn!(kind = %r.kind, "unknown authority kind; ignored"),
            }
        }
        *self.keys.write().map_err(|_| lock_err())? = keys;
        Ok(())
    }

    fn key_path(&self, kind: Kind, id: &str, suffix: &str) -> PathBuf {
        self.dir.join(kind.as_str()).join(format!("{id}.{suffix}"))
    }

    fn read_x509(&self, kind: Kind, id: &str) -> Result<X509Authority, ServerError> {
        let (kp, cp) = (self.key_path(kind, id, "key.pem"), self.key_path(kind, id, "chain.pem"));
        let key = read_secret_file(&kp).map_err(ca_err)?;
        let key = String::from_utf8(key).map_err(not_utf8(&kp))?;
        let chain = std::fs::read_to_string(&cp).map_err(io(&cp))?;
        let chain = svid::pem_certs(&chain).map_err(bad_file(&cp))?;
        X509Authority::from_parts(&key, chain).map_err(bad_file(&kp))
    }

    fn read_jwt(&self, id: &str) -> Result<JwtKey, ServerError> {
        let kp = self.key_path(Kind::Jwt, id, "key.pem");
        let key = read_secret_file(&kp).map_err(ca_err)?;
        JwtKey::from_pem(&String::from_utf8_lossy(&key)).map_err(bad_file(&kp))
    }

    /// Removes the key files of an authority that will never sign again.
    pub(super) fn forget_key(&self, kind: Kind, id: &str) {
        for suffix in ["key.pem", "chain.pem"] {
            let p = self.key_path(kind, id, suffix);
            if let Err(e) = std::fs::remove_file(&p)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %p.display(), error = %e, "cannot remove retired authority key");
            }
        }
    }

    /// Generates a new authority of `kind`, writes its key (0600) and
    /// publishes it in `state`.
    pub(super) async fn generate(
        &self,
        kind: Kind,
        state: AuthorityState,
        now: i64,
    ) -> Result<AuthorityRow, ServerError> {
        let row = match kind {
            Kind::X509 | Kind::Human => {
                let purpose = if kind == Kind::Human { CaPurpose::People } else { CaPurpose::Workloads };
                let ca = match &self.upstream {
                    None => X509Authority::generate_self_signed_for(&self.td, purpose, self.ttl_secs, now),
                    Some((cert, key)) => {
                        let chain = std::fs::read_to_string(cert).map_err(io(cert))?;
                        let key_bytes = read_secret_file(key).map_err(ca_err)?;
                        let key_pem = String::from_utf8(key_bytes).map_err(not_utf8(key))?;
                        X509Authority::generate_intermediate_for(
                            &self.td,
                            purpose,
                            self.ttl_secs,
                            now,
                            &chain,
                            &key_pem,
                        )
                    }
                }
                .map_err(ca_err)?;
                let id = ca.id();
                write_secret_file(&self.key_path(kind, &id, "key.pem"), ca.key_pem().as_bytes()).map_err(ca_err)?;
                let cp = self.key_path(kind, &id, "chain.pem");
                std::fs::write(&cp, ca.chain_pem()).map_err(io(&cp))?;
                let anchor = ca.anchors().first().cloned().ok_or(ServerError::NoAnchor)?;
                let row = AuthorityRow {
                    id: id.clone(),
                    kind: kind.as_str().into(),
                    public: STANDARD.encode(&anchor),
                    server_id: self.server_id.clone(),
                    state,
                    not_before: ca.not_before().map_err(ca_err)?,
                    not_after: ca.not_after(),
                    tainted_at: None,
                    crl: None,
                };
                let local =
                    Local { id, key: Arc::new(ca), state, not_before: row.not_before, not_after: row.not_after };
                if let Some(list) = self.keys.write().map_err(|_| lock_err())?.x509_of(kind) {
                    list.push(local);
                }
                row
            }
            Kind::Jwt => {
                let key = JwtKey::generate().map_err(ca_err)?;
                let id = key.kid().to_owned();
                write_secret_file(&self.key_path(kind, &id, "key.pem"), key.to_pem().as_bytes()).map_err(ca_err)?;
                let not_after = now + i64::try_from(self.ttl_secs).unwrap_or(i64::MAX / 2);
                let row = AuthorityRow {
                    id: id.clone(),
                    kind: kind.as_str().into(),
                    public: serde_json::Value::Object(key.authority().jwk().clone()).to_string(),
                    server_id: self.server_id.clone(),
                    state,
                    not_before: now,
                    not_after,
                    tainted_at: None,
                    crl: None,
                };
                let local = Local { id, key: Arc::new(key), state, not_before: now, not_after };
                self.keys.write().map_err(|_| lock_err())?.jwt.push(local);
                row
            }
        };
        self.store.publish_authority(&row).await?;
        Ok(row)
    }
}
