//! Hallmark's signing authorities and the credential formats they produce.
//!
//! - [`x509`]: the X.509 CA (self-signed, or an intermediate under an upstream
//!   root) that turns a verified CSR into an X.509-SVID.
//! - [`jwt`]: the ES256 JWT signing key, JWT-SVID minting and validation.
//! - [`bundle`]: the trust bundle as PEM and as a SPIFFE bundle (JWKS).
//! - [`svid`]: reading SPIFFE IDs and checking SPIFFE rules on certificates.
//! - [`tls`]: rustls verifiers that authorize agents and servers by SPIFFE ID.
//! - [`keys`]: generating workload keys and CSRs, and key files at mode 0600.

pub mod audit_key;
pub mod bundle;
pub mod jwt;
pub mod keys;
pub mod svid;
pub mod tls;
pub mod x509;

pub use bundle::{AuthorityStatus, Bundle, JwtAuthority};
pub use jwt::{JwtClaims, JwtError, JwtKey};
pub use x509::{RevokedSerial, SignedSvid, X509Authority, authority_id};

/// Errors from the CA layer. Messages are one line and never contain key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// The CSR could not be parsed or its signature does not verify.
    #[error("invalid CSR: {0}")]
    Csr(#[source] rcgen::Error),
    /// The CSR asks for more than one identity.
    #[error("invalid CSR: more than one URI SAN requested")]
    CsrUriSans,
    /// The CSR asks for an identity other than the one being issued.
    #[error("CSR requests `{requested}` but the entry is `{entry}`")]
    CsrIdentity {
        /// What the CSR asked for.
        requested: String,
        /// What the entry grants.
        entry: String,
    },
    /// Certificate generation or parsing failed.
    #[error("certificate error: {0}")]
    Cert(String),
    /// A key could not be generated or loaded.
    #[error("key error: {0}")]
    Key(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A file holding a key could not be read or written, or is exposed.
    #[error(transparent)]
    SecretFile(#[from] keys::SecretFileError),
    /// A data or key path another user could have prepared or can change.
    #[error("{0}")]
    UnsafePath(String),
    /// The authority has expired or will expire before the SVID could be useful.
    #[error("signing authority expires at {0}; refusing to issue")]
    AuthorityExpired(i64),
}

impl CaError {
    /// Whether the request was at fault: a CSR that is malformed or asks for
    /// another identity. Every other error is the authority's (expired, a
    /// key or certificate failure, a file), which the requester cannot fix.
    pub fn is_bad_csr(&self) -> bool {
        matches!(self, Self::Csr(_) | Self::CsrUriSans | Self::CsrIdentity { .. })
    }
}

impl From<rcgen::Error> for CaError {
    fn from(e: rcgen::Error) -> Self {
        Self::Cert(e.to_string())
    }
}
