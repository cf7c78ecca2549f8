//! The server's signing authorities and their lifecycle.
//!
//! Each kind (the X.509 CA and the JWT key) moves through
//! `prepared` (published in the bundle, not yet signing) -> `active` (signing)
//! -> `old` (still published, so what it signed keeps validating) -> expired.
//! Rotation is scheduled: the next authority is prepared at half the active
//! one's life and activated at five sixths of it, so relying parties have
//! trusted it for a sixth of a lifetime (hours, with the default 24h) before
//! anything is signed by it, and nothing the old one signed outlives it.
//! Operators can force each step (`hallmark ca prepare | activate`), taint a
//! non-active authority (agents re-issue everything it signed under the active
//! one) and then revoke it (it leaves the bundle).
//!
//! Private keys live in `DATA_DIR/keys/{x509,jwt}/` at mode 0600, one file per
//! authority; the datastore holds the public halves, states, taints and CRLs,
//! shared by every server on it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hallmark_ca::keys::{read_secret_file, refuse_exposed_secret_file, write_secret_file};
use hallmark_ca::tls::SharedAnchors;
use hallmark_ca::{
    AuthorityStatus, Bundle, CaError, JwtAuthority, JwtKey, RevokedSerial, X509Authority, authority_id, svid,
};
use hallmark_core::{TrustDomain, now_unix};
use hallmark_store::{AuthorityRow, AuthorityState, Store, StoreError};
use tokio::sync::watch;

use crate::config::ServerSettings;
use crate::error::ServerError;

/// The two kinds of signing authority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The X.509 CA.
    X509,
    /// The JWT signing key.
    Jwt,
}

impl Kind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::X509 => "x509",
            Self::Jwt => "jwt",
        }
    }

    /// Parses `x509` or `jwt`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "x509" => Some(Self::X509),
            "jwt" => Some(Self::Jwt),
            _ => None,
        }
    }
}

/// Why an authority operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    /// No such authority (or none in the state asked for).
    #[error("{0}")]
    NotFound(String),
    /// The authority is not in a state that allows this.
    #[error("{0}")]
    Refused(String),
    /// A server-side failure.
    #[error(transparent)]
    Server(#[from] ServerError),
}

impl From<StoreError> for AuthorityError {
    fn from(e: StoreError) -> Self {
        Self::Server(e.into())
    }
}

/// An authority whose private key this server holds.
struct Local<K> {
    id: String,
    key: Arc<K>,
    state: AuthorityState,
    not_before: i64,
    not_after: i64,
}

impl<K> Clone for Local<K> {
    fn clone(&self) -> Self {
        Self {
            id: self.id.clone(),
            key: self.key.clone(),
            state: self.state,
            not_before: self.not_before,
            not_after: self.not_after,
        }
    }
}

/// The active authority's validity (not_before, not_after) and the prepared one's id.
struct KindSummary {
    active: Option<(i64, i64)>,
    prepared: Option<String>,
}

#[derive(Default)]
struct LocalKeys {
    x509: Vec<Local<X509Authority>>,
    jwt: Vec<Local<JwtKey>>,
}

fn active<K>(list: &[Local<K>]) -> Option<&Local<K>> {
    list.iter().find(|l| l.state == AuthorityState::Active)
}

fn in_state<K>(list: &[Local<K>], state: AuthorityState) -> Option<&Local<K>> {
    list.iter().find(|l| l.state == state)
}

/// Life fraction at which the next authority is prepared.
const PREPARE_AT: f64 = 0.5;
/// Life fraction at which the prepared authority is activated.
const ACTIVATE_AT: f64 = 5.0 / 6.0;
/// An active authority this close to expiry (or a tenth of its lifetime,
/// when that is shorter) is replaced at once.
const MIN_REMAINING_SECS: i64 = 60;
/// How long a CRL is valid; it is re-signed at half of that, or on any revocation.
const CRL_VALIDITY_SECS: i64 = 2 * 3600;

/// The signing authorities and the bundle everyone trusts.
pub struct Authorities {
    td: TrustDomain,
    dir: PathBuf,
    ttl_secs: u64,
    upstream: Option<(PathBuf, PathBuf)>,
    store: Store,
    server_id: String,
    keys: RwLock<LocalKeys>,
    anchors: SharedAnchors,
    bundle_tx: watch::Sender<Arc<Bundle>>,
    /// When each own CRL was last signed, to re-sign before it lapses.
    crl_signed_at: RwLock<i64>,
}

fn lock_err() -> ServerError {
    ServerError::LockPoisoned("authority")
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ServerError {
    move |source| ServerError::Io { path: path.to_owned(), source }
}

fn not_utf8(path: &Path) -> impl FnOnce(std::string::FromUtf8Error) -> ServerError {
    move |source| ServerError::NotUtf8 { path: path.to_owned(), source }
}

fn bad_file(path: &Path) -> impl FnOnce(CaError) -> ServerError {
    move |source| ServerError::AuthorityFile { path: path.to_owned(), source }
}

/// A key file's failure is the CA's, as any other key failure.
fn ca_err(e: impl Into<CaError>) -> ServerError {
    ServerError::Ca(e.into())
}

/// This server's stable id (not secret), created on first start.
fn server_id(data_dir: &Path) -> Result<String, ServerError> {
    let p = data_dir.join("server-id");
    match std::fs::read_to_string(&p) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
        _ => {
            let id = hallmark_store::random_hex::<8>();
            std::fs::write(&p, &id).map_err(io(&p))?;
            Ok(id)
        }
    }
}

impl Authorities {
    /// Loads this server's authorities (keys from `DATA_DIR/keys`, states from
    /// the datastore), creates an active one of each kind when there is none
    /// usable, and publishes the bundle.
    pub async fn load_or_create(s: &ServerSettings, store: Store) -> Result<Arc<Self>, ServerError> {
        let dir = s.data_dir.join("keys");
        // Key directories are 0700 even inside a private data directory: the
        // key files are 0600 on their own, and no one else may list them.
        for d in [dir.clone(), dir.join("x509"), dir.join("jwt")] {
            crate::private_dir::ensure_private_dir(&d)?;
        }
        let server_id = server_id(&s.data_dir)?;
        let (tx, _) = watch::channel(Arc::new(Bundle {
            trust_domain: s.trust_domain.clone(),
            x509_authorities: Vec::new(),
            jwt_authorities: Vec::new(),
            sequence: 0,
            refresh_hint: hallmark_ca::bundle::DEFAULT_REFRESH_HINT,
            status: AuthorityStatus::default(),
        }));
        let me = Arc::new(Self {
            td: s.trust_domain.clone(),
            dir,
            ttl_secs: s.ca_ttl.secs(),
            upstream: s.upstream.clone(),
            store,
            server_id,
            keys: RwLock::new(LocalKeys::default()),
            anchors: Arc::new(RwLock::new(Vec::new())),
            bundle_tx: tx,
            crl_signed_at: RwLock::new(0),
        });
        me.load().await?;
        me.rotate_if_due().await?;
        me.refresh_crls().await?;
        me.refresh_bundle().await?;
        Ok(me)
    }

    /// This server's id, as recorded with the authorities it holds.
    pub fn server_id(&self) -> &str {
        &self.server_id
    }

    /// Reads this server's live authorities from the datastore and their keys from disk.
    async fn load(&self) -> Result<(), ServerError> {
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
                Some(Kind::X509) => match self.read_x509(&r.id) {
                    Ok(ca) => keys.x509.push(Local {
                        id: r.id.clone(),
                        key: Arc::new(ca),
                        state: r.state,
                        not_before: r.not_before,
                        not_after: r.not_after,
                    }),
                    Err(e) => tracing::warn!(authority = %r.id, error = %e, "X.509 authority key unusable; not loaded"),
                },
                Some(Kind::Jwt) => match self.read_jwt(&r.id) {
                    Ok(k) => keys.jwt.push(Local {
                        id: r.id.clone(),
                        key: Arc::new(k),
                        state: r.state,
                        not_before: r.not_before,
                        not_after: r.not_after,
                    }),
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

    fn read_x509(&self, id: &str) -> Result<X509Authority, ServerError> {
        let (kp, cp) = (self.key_path(Kind::X509, id, "key.pem"), self.key_path(Kind::X509, id, "chain.pem"));
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
    fn forget_key(&self, kind: Kind, id: &str) {
        for suffix in ["key.pem", "chain.pem"] {
            let p = self.key_path(kind, id, suffix);
            if let Err(e) = std::fs::remove_file(&p)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %p.display(), error = %e, "cannot remove retired authority key");
            }
        }
    }

    /// The X.509 CA currently signing.
    pub fn x509(&self) -> Result<Arc<X509Authority>, ServerError> {
        let keys = self.keys.read().map_err(|_| lock_err())?;
        active(&keys.x509).map(|l| l.key.clone()).ok_or(ServerError::NoActiveAuthority("X.509 authority"))
    }

    /// The JWT key currently signing.
    pub fn jwt(&self) -> Result<Arc<JwtKey>, ServerError> {
        let keys = self.keys.read().map_err(|_| lock_err())?;
        active(&keys.jwt).map(|l| l.key.clone()).ok_or(ServerError::NoActiveAuthority("JWT key"))
    }

    /// Expiry of the active JWT key; no token may outlive it.
    pub fn jwt_not_after(&self) -> Result<i64, ServerError> {
        let keys = self.keys.read().map_err(|_| lock_err())?;
        active(&keys.jwt).map(|l| l.not_after).ok_or(ServerError::NoActiveAuthority("JWT key"))
    }

    /// Trust anchors for mTLS verification; always the current bundle's.
    pub fn anchors(&self) -> SharedAnchors {
        self.anchors.clone()
    }

    /// The current bundle, and a way to wait for the next one.
    pub fn bundle(&self) -> watch::Receiver<Arc<Bundle>> {
        self.bundle_tx.subscribe()
    }

    /// Every authority in the datastore that has not expired, with its state.
    pub async fn list(&self) -> Result<Vec<AuthorityRow>, ServerError> {
        Ok(self.store.authorities(now_unix()).await?.0)
    }

    /// Generates a new authority of `kind`, writes its key (0600) and
    /// publishes it in `state`.
    async fn generate(&self, kind: Kind, state: AuthorityState, now: i64) -> Result<AuthorityRow, ServerError> {
        let row = match kind {
            Kind::X509 => {
                let ca = match &self.upstream {
                    None => X509Authority::generate_self_signed(&self.td, self.ttl_secs, now),
                    Some((cert, key)) => {
                        let chain = std::fs::read_to_string(cert).map_err(io(cert))?;
                        let key_bytes = read_secret_file(key).map_err(ca_err)?;
                        let key_pem = String::from_utf8(key_bytes).map_err(not_utf8(key))?;
                        X509Authority::generate_intermediate(&self.td, self.ttl_secs, now, &chain, &key_pem)
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
                self.keys.write().map_err(|_| lock_err())?.x509.push(local);
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

    fn set_local_states(&self, kind: Kind, id: &str) -> Result<(), ServerError> {
        let mut keys = self.keys.write().map_err(|_| lock_err())?;
        fn promote<K>(list: &mut [Local<K>], id: &str) {
            for l in list.iter_mut() {
                if l.id == id {
                    l.state = AuthorityState::Active;
                } else if l.state == AuthorityState::Active {
                    l.state = AuthorityState::Old;
                }
            }
        }
        match kind {
            Kind::X509 => promote(&mut keys.x509, id),
            Kind::Jwt => promote(&mut keys.jwt, id),
        }
        Ok(())
    }

    /// This server's authorities that will not be replaced in time by
    /// themselves, each as (subject, why): an active authority expiring
    /// within `within` seconds whose scheduled successor is overdue, and an
    /// upstream CA certificate (which Hallmark cannot renew) expiring within
    /// `within`. An authority rotating on schedule is not listed.
    pub fn renewal_gaps(&self, now: i64, within: i64) -> Result<Vec<(String, String)>, ServerError> {
        // The maintenance task runs every 5 s; a step later than this has stalled.
        const STALLED_AFTER: i64 = 60;
        let mut out = Vec::new();
        for kind in [Kind::X509, Kind::Jwt] {
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

    /// How many authorities of `kind` this server holds keys for.
    fn held(&self, kind: Kind) -> Result<usize, ServerError> {
        let keys = self.keys.read().map_err(|_| lock_err())?;
        Ok(match kind {
            Kind::X509 => keys.x509.len(),
            Kind::Jwt => keys.jwt.len(),
        })
    }

    /// This server's active and prepared authority of `kind`.
    fn local_summary(&self, kind: Kind) -> Result<KindSummary, ServerError> {
        let keys = self.keys.read().map_err(|_| lock_err())?;
        fn pick<K>(list: &[Local<K>]) -> KindSummary {
            KindSummary {
                active: active(list).map(|a| (a.not_before, a.not_after)),
                prepared: in_state(list, AuthorityState::Prepared).map(|p| p.id.clone()),
            }
        }
        Ok(match kind {
            Kind::X509 => pick(&keys.x509),
            Kind::Jwt => pick(&keys.jwt),
        })
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
        if row.kind == Kind::X509.as_str() {
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
        for kind in [Kind::X509, Kind::Jwt] {
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
                .collect();
            keys.x509.retain(|l| l.not_after > now);
            keys.jwt.retain(|l| l.not_after > now);
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

    /// Signs a fresh CRL for every X.509 authority this server holds, listing
    /// the revoked serials it signed that have not expired, and stores it for
    /// every server to publish.
    pub async fn refresh_crls(&self) -> Result<(), ServerError> {
        let now = now_unix();
        let (revoked, _) = self.store.live_revocations(now).await?;
        let cas: Vec<Local<X509Authority>> = self.keys.read().map_err(|_| lock_err())?.x509.clone();
        let number = u64::try_from(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0),
        )
        .unwrap_or(u64::MAX);
        for ca in cas.iter().filter(|c| c.not_after > now) {
            let list: Vec<RevokedSerial> = revoked
                .iter()
                .filter(|r| r.kind == "x509" && r.authority_id == ca.id)
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
        for r in rows {
            if r.state == AuthorityState::Revoked {
                b.status.revoked.push(r.id.clone());
                continue;
            }
            if r.tainted_at.is_some() && tainted.insert(r.id.clone()) {
                b.status.tainted.push(r.id.clone());
            }
            match r.kind.as_str() {
                "x509" => {
                    match STANDARD.decode(&r.public) {
                        Ok(der) if !b.x509_authorities.contains(&der) => b.x509_authorities.push(der),
                        Ok(_) => {}
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
        *self.anchors.write().map_err(|_| lock_err())? = b.x509_authorities.clone();
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
