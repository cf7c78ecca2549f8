//! The server's signing authorities: loaded from (or created in) the data
//! directory, rotated at half life, and published to the shared bundle.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hallmark_ca::keys::{read_secret_file, write_secret_file};
use hallmark_ca::tls::SharedAnchors;
use hallmark_ca::{Bundle, JwtAuthority, JwtKey, X509Authority, svid};
use hallmark_core::{TrustDomain, now_unix};
use hallmark_store::{AuthorityRow, Store};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::ServerError;
use crate::config::ServerSettings;

/// The active X.509 CA and JWT key, and the bundle everyone trusts.
pub struct Authorities {
    td: TrustDomain,
    dir: PathBuf,
    ttl_secs: u64,
    upstream: Option<(PathBuf, PathBuf)>,
    store: Store,
    x509: RwLock<Arc<X509Authority>>,
    jwt: RwLock<Arc<JwtKey>>,
    jwt_not_after: RwLock<i64>,
    anchors: SharedAnchors,
    bundle_tx: watch::Sender<Arc<Bundle>>,
}

const X509_KEY: &str = "x509-ca.key.pem";
const X509_CHAIN: &str = "x509-ca.chain.pem";
const JWT_KEY: &str = "jwt.key.pem";
const JWT_META: &str = "jwt.not_after";

fn lock_err() -> ServerError {
    ServerError::Internal("authority lock poisoned".into())
}

impl Authorities {
    /// Loads the authorities from `DATA_DIR/keys`, creating them on first start
    /// (or when expired), and publishes them.
    pub async fn load_or_create(s: &ServerSettings, store: Store) -> Result<Arc<Self>, ServerError> {
        let dir = s.data_dir.join("keys");
        std::fs::create_dir_all(&dir).map_err(|e| ServerError::Io(format!("{}: {e}", dir.display())))?;
        let now = now_unix();
        let x509 = match load_x509(&dir)? {
            Some(ca) if ca.not_after() > now + 60 => ca,
            _ => new_x509(&s.trust_domain, s.ca_ttl.secs(), s.upstream.as_ref(), &dir, now)?,
        };
        let (jwt, jwt_not_after) = match load_jwt(&dir)? {
            Some((k, na)) if na > now + 60 => (k, na),
            _ => new_jwt(&dir, now, s.ca_ttl.secs())?,
        };
        let initial = Bundle {
            trust_domain: s.trust_domain.clone(),
            x509_authorities: x509.anchors().to_vec(),
            jwt_authorities: vec![jwt.authority()],
            sequence: 0,
            refresh_hint: hallmark_ca::bundle::DEFAULT_REFRESH_HINT,
        };
        let (bundle_tx, _) = watch::channel(Arc::new(initial));
        let me = Arc::new(Self {
            td: s.trust_domain.clone(),
            dir,
            ttl_secs: s.ca_ttl.secs(),
            upstream: s.upstream.clone(),
            store,
            anchors: Arc::new(RwLock::new(x509.anchors().to_vec())),
            x509: RwLock::new(Arc::new(x509)),
            jwt: RwLock::new(Arc::new(jwt)),
            jwt_not_after: RwLock::new(jwt_not_after),
            bundle_tx,
        });
        me.publish().await?;
        me.refresh_bundle().await?;
        Ok(me)
    }

    /// The X.509 CA currently signing.
    pub fn x509(&self) -> Result<Arc<X509Authority>, ServerError> {
        Ok(self.x509.read().map_err(|_| lock_err())?.clone())
    }

    /// The JWT key currently signing.
    pub fn jwt(&self) -> Result<Arc<JwtKey>, ServerError> {
        Ok(self.jwt.read().map_err(|_| lock_err())?.clone())
    }

    /// Expiry of the current JWT key; no token may outlive it.
    pub fn jwt_not_after(&self) -> Result<i64, ServerError> {
        Ok(*self.jwt_not_after.read().map_err(|_| lock_err())?)
    }

    /// Trust anchors for mTLS verification; always the current bundle's.
    pub fn anchors(&self) -> SharedAnchors {
        self.anchors.clone()
    }

    /// The current bundle, and a way to wait for the next one.
    pub fn bundle(&self) -> watch::Receiver<Arc<Bundle>> {
        self.bundle_tx.subscribe()
    }

    async fn publish(&self) -> Result<(), ServerError> {
        let ca = self.x509()?;
        for anchor in ca.anchors() {
            let id = hex::encode(Sha256::digest(anchor));
            let not_after =
                svid::not_after(anchor).map_err(|e| ServerError::Internal(e.to_string()))?.min(ca.not_after());
            let row = AuthorityRow { id, kind: "x509".into(), public: STANDARD.encode(anchor), not_after };
            self.store.publish_authority(&row).await?;
        }
        let jwt = self.jwt()?;
        let not_after = *self.jwt_not_after.read().map_err(|_| lock_err())?;
        let public = serde_json::Value::Object(jwt.authority().jwk().clone()).to_string();
        let row = AuthorityRow { id: jwt.kid().to_owned(), kind: "jwt".into(), public, not_after };
        self.store.publish_authority(&row).await?;
        Ok(())
    }

    /// Rebuilds the bundle from every server's published authorities.
    pub async fn refresh_bundle(&self) -> Result<(), ServerError> {
        let now = now_unix();
        let (rows, sequence) = self.store.authorities(now).await?;
        let mut b = Bundle {
            trust_domain: self.td.clone(),
            x509_authorities: Vec::new(),
            jwt_authorities: Vec::new(),
            sequence,
            refresh_hint: hallmark_ca::bundle::DEFAULT_REFRESH_HINT,
        };
        for r in rows {
            match r.kind.as_str() {
                "x509" => match STANDARD.decode(&r.public) {
                    Ok(der) if !b.x509_authorities.contains(&der) => b.x509_authorities.push(der),
                    Ok(_) => {}
                    Err(_) => {
                        tracing::warn!(authority = %r.id, "published X.509 authority is not base64; ignored")
                    }
                },
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
            return Err(ServerError::Internal("bundle would be empty; refusing to publish it".into()));
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

    /// Replaces an authority that has passed half its life. The old one stays
    /// in the bundle until it expires, so everything it signed keeps validating.
    pub async fn rotate_if_due(&self) -> Result<bool, ServerError> {
        let now = now_unix();
        let half = i64::try_from(self.ttl_secs / 2).unwrap_or(i64::MAX);
        let mut rotated = false;
        if self.x509()?.not_after() - now < half {
            let ca = new_x509(&self.td, self.ttl_secs, self.upstream.as_ref(), &self.dir, now)?;
            tracing::info!(not_after = ca.not_after(), "rotated X.509 CA");
            *self.x509.write().map_err(|_| lock_err())? = Arc::new(ca);
            rotated = true;
        }
        if *self.jwt_not_after.read().map_err(|_| lock_err())? - now < half {
            let (k, na) = new_jwt(&self.dir, now, self.ttl_secs)?;
            tracing::info!(kid = k.kid(), "rotated JWT key");
            *self.jwt.write().map_err(|_| lock_err())? = Arc::new(k);
            *self.jwt_not_after.write().map_err(|_| lock_err())? = na;
            rotated = true;
        }
        if rotated {
            self.publish().await?;
            self.refresh_bundle().await?;
        }
        Ok(rotated)
    }
}

fn io(path: &Path, e: impl std::fmt::Display) -> ServerError {
    ServerError::Io(format!("{}: {e}", path.display()))
}

fn load_x509(dir: &Path) -> Result<Option<X509Authority>, ServerError> {
    let (kp, cp) = (dir.join(X509_KEY), dir.join(X509_CHAIN));
    if !kp.exists() || !cp.exists() {
        return Ok(None);
    }
    let key = read_secret_file(&kp).map_err(|e| ServerError::Ca(e.to_string()))?;
    let key = String::from_utf8(key).map_err(|e| io(&kp, e))?;
    let chain = std::fs::read_to_string(&cp).map_err(|e| io(&cp, e))?;
    let chain = svid::pem_certs(&chain).map_err(|e| io(&cp, e))?;
    X509Authority::from_parts(&key, chain).map(Some).map_err(|e| io(&kp, e))
}

fn new_x509(
    td: &TrustDomain,
    ttl: u64,
    upstream: Option<&(PathBuf, PathBuf)>,
    dir: &Path,
    now: i64,
) -> Result<X509Authority, ServerError> {
    let ca = match upstream {
        None => X509Authority::generate_self_signed(td, ttl, now),
        Some((cert, key)) => {
            let chain = std::fs::read_to_string(cert).map_err(|e| io(cert, e))?;
            let key_bytes = read_secret_file(key).map_err(|e| ServerError::Ca(e.to_string()))?;
            let key_pem = String::from_utf8(key_bytes).map_err(|e| io(key, e))?;
            X509Authority::generate_intermediate(td, ttl, now, &chain, &key_pem)
        }
    }
    .map_err(|e| ServerError::Ca(e.to_string()))?;
    write_secret_file(&dir.join(X509_KEY), ca.key_pem().as_bytes()).map_err(|e| ServerError::Ca(e.to_string()))?;
    let cp = dir.join(X509_CHAIN);
    std::fs::write(&cp, ca.chain_pem()).map_err(|e| io(&cp, e))?;
    Ok(ca)
}

fn load_jwt(dir: &Path) -> Result<Option<(JwtKey, i64)>, ServerError> {
    let (kp, mp) = (dir.join(JWT_KEY), dir.join(JWT_META));
    if !kp.exists() || !mp.exists() {
        return Ok(None);
    }
    let key = read_secret_file(&kp).map_err(|e| ServerError::Ca(e.to_string()))?;
    let key = JwtKey::from_pem(&String::from_utf8_lossy(&key)).map_err(|e| io(&kp, e))?;
    let na = std::fs::read_to_string(&mp).map_err(|e| io(&mp, e))?;
    let na: i64 = na.trim().parse().map_err(|e| io(&mp, e))?;
    Ok(Some((key, na)))
}

fn new_jwt(dir: &Path, now: i64, ttl: u64) -> Result<(JwtKey, i64), ServerError> {
    let key = JwtKey::generate().map_err(|e| ServerError::Ca(e.to_string()))?;
    let not_after = now + i64::try_from(ttl).unwrap_or(i64::MAX / 2);
    write_secret_file(&dir.join(JWT_KEY), key.to_pem().as_bytes()).map_err(|e| ServerError::Ca(e.to_string()))?;
    let mp = dir.join(JWT_META);
    std::fs::write(&mp, not_after.to_string()).map_err(|e| io(&mp, e))?;
    Ok((key, not_after))
}
