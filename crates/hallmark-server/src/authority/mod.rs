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
//!
//! The modules: this one holds the [`Authorities`] handle, its in-memory
//! state and the accessors; `keys` the key files on disk and new
//! authorities; `rotation` the schedule and the operator's steps (prepare,
//! activate, taint, revoke); `publish` the CRLs and the bundle. Each
//! child adds methods to [`Authorities`] and imports only from this module.

mod keys;
mod publish;
mod rotation;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use hallmark_ca::tls::SharedAnchors;
use hallmark_ca::{AuthorityStatus, Bundle, CaError, JwtKey, X509Authority};
use hallmark_core::{TrustDomain, now_unix};
use hallmark_store::{AuthorityRow, AuthorityState, Store, StoreError};
use tokio::sync::watch;

use crate::config::ServerSettings;
use crate::error::ServerError;

/// The kinds of signing authority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The X.509 CA of workloads (and of Hallmark's own servers and agents).
    X509,
    /// The JWT signing key.
    Jwt,
    /// The human issuing authority: an X.509 CA that signs only people's
    /// certificates (`hallmark login`). It is in the published bundle, so
    /// services can authenticate people, and never among the anchors the
    /// server trusts for its agents.
    Human,
}

/// Every kind, in the order they are rotated and listed.
pub const KINDS: [Kind; 3] = [Kind::X509, Kind::Jwt, Kind::Human];

impl Kind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::X509 => "x509",
            Self::Jwt => "jwt",
            Self::Human => "human",
        }
    }

    /// Parses `x509`, `jwt` or `human`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "x509" => Some(Self::X509),
            "jwt" => Some(Self::Jwt),
            "human" => Some(Self::Human),
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
    human: Vec<Local<X509Authority>>,
}

impl LocalKeys {
    /// The X.509 authorities of `kind` (workloads' or people's); `None` for JWT.
    fn x509_of(&mut self, kind: Kind) -> Option<&mut Vec<Local<X509Authority>>> {
        match kind {
            Kind::X509 => Some(&mut self.x509),
            Kind::Human => Some(&mut self.human),
            Kind::Jwt => None,
        }
    }
}

fn active<K>(list: &[Local<K>]) -> Option<&Local<K>> {
    list.iter().find(|l| l.state == AuthorityState::Active)
}

fn in_state<K>(list: &[Local<K>], state: AuthorityState) -> Option<&Local<K>> {
    list.iter().find(|l| l.state == state)
}

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
        for d in [dir.clone(), dir.join("x509"), dir.join("jwt"), dir.join("human")] {
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

    /// The X.509 CA currently signing.
    pub fn x509(&self) -> Result<Arc<X509Authority>, ServerError> {
        let keys = self.keys.read().map_err(|_| lock_err())?;
        active(&keys.x509).map(|l| l.key.clone()).ok_or(ServerError::NoActiveAuthority("X.509 authority"))
    }

    /// The human issuing authority currently signing (people's certificates).
    pub fn human(&self) -> Result<Arc<X509Authority>, ServerError> {
        let keys = self.keys.read().map_err(|_| lock_err())?;
        active(&keys.human).map(|l| l.key.clone()).ok_or(ServerError::NoActiveAuthority("human issuing authority"))
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
            Kind::Human => promote(&mut keys.human, id),
        }
        Ok(())
    }

    /// How many authorities of `kind` this server holds keys for.
    fn held(&self, kind: Kind) -> Result<usize, ServerError> {
        let keys = self.keys.read().map_err(|_| lock_err())?;
        Ok(match kind {
            Kind::X509 => keys.x509.len(),
            Kind::Jwt => keys.jwt.len(),
            Kind::Human => keys.human.len(),
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
            Kind::Human => pick(&keys.human),
        })
    }
}
