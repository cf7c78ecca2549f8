//! Hallmark's signing authorities and the credential formats they produce.
//!
//! - [`x509`]: the X.509 CA (self-signed, or an intermediate under an upstream
//!   root) that turns a verified CSR into an X.509-SVID.
//! - [`jwt`]: the ES256 JWT signing key, JWT-SVID minting and validation.
//! - [`wit`]: WIT-SVIDs (workload identity tokens binding a workload's key),
//!   their keys as JWKs, and the WIT bundle.
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
pub mod wit;
pub mod x509;
pub mod x509pop;

pub use bundle::{AuthorityStatus, Bundle, JwtAuthority};
pub use jwt::{JwtClaims, JwtError, JwtKey, MintClaims, Typ};
pub use wit::{EcPublicJwk, JwkError, WitClaims, WitKey};
pub use x509::{CaPurpose, RevokedSerial, SignedSvid, X509Authority, authority_id};

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
    /// A certificate could not be parsed (DER).
    #[error("cannot parse the {what}: {source}")]
    Certificate {
        /// Which certificate: "certificate", "CA certificate", ...
        what: &'static str,
        /// x509-parser's error.
        #[source]
        source: X509ParseError,
    },
    /// A certificate breaks a SPIFFE rule (its URI SAN, or the X509-SVID leaf rules).
    #[error(transparent)]
    Svid(#[from] svid::SvidError),
    /// PEM text could not be parsed.
    #[error("cannot read the {what} PEM: {source}")]
    Pem {
        /// What the PEM should hold.
        what: &'static str,
        /// The PEM parser's error.
        #[source]
        source: pem::PemError,
    },
    /// PEM text holds no `CERTIFICATE` block.
    #[error("no CERTIFICATE block in PEM")]
    NoCertificateInPem,
    /// A PEM block has another label than the one expected.
    #[error("{what}: a `{expected}` block is expected, not `{found}`")]
    PemLabel {
        /// What the PEM should hold.
        what: &'static str,
        /// The label expected.
        expected: &'static str,
        /// The label found.
        found: String,
    },
    /// A certificate chain is empty.
    #[error("empty {what} chain")]
    EmptyChain {
        /// Which chain: "CA", "upstream".
        what: &'static str,
    },
    /// A key could not be generated or loaded, or a certificate, CSR or CRL
    /// could not be built or signed (rcgen).
    #[error("cannot {action}: {source}")]
    X509 {
        /// What was being done, e.g. "load the CA key", "sign the SVID".
        action: &'static str,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
    /// A private key is not the EC P-256 PKCS#8 key expected.
    #[error("{what} is not an EC P-256 PKCS#8 key: {source}")]
    KeyRejected {
        /// Which key: "the JWT key", "the audit key".
        what: &'static str,
        /// aws-lc's reason.
        #[source]
        source: aws_lc_rs::error::KeyRejected,
    },
    /// A public key is not the P-256 key expected.
    #[error("{what} is not {expected}")]
    PublicKey {
        /// Which key.
        what: &'static str,
        /// What it should be.
        expected: &'static str,
    },
    /// The CA key is not the key of the CA certificate.
    #[error("CA key does not match the CA certificate")]
    KeyMismatch,
    /// A cryptographic operation failed (aws-lc says no more than that).
    #[error("cannot {action}")]
    Crypto {
        /// What was being done, e.g. "sign a JWT".
        action: &'static str,
        /// aws-lc's error.
        #[source]
        source: aws_lc_rs::error::Unspecified,
    },
    /// A name to be put in a certificate is not an IA5 (ASCII) string.
    #[error("{what} `{value}` is not an IA5 string")]
    NotIa5 {
        /// Which name: "SPIFFE ID", "DNS name", "trust domain".
        what: &'static str,
        /// The name.
        value: String,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
    /// A lifetime does not fit a certificate's validity.
    #[error("{what} out of range")]
    TtlOutOfRange {
        /// Which lifetime: "TTL", "CA TTL".
        what: &'static str,
        /// The conversion's error.
        #[source]
        source: std::num::TryFromIntError,
    },
    /// A unix time is outside what a certificate can hold.
    #[error("time {unix} out of range: {source}")]
    TimeOutOfRange {
        /// The unix time, seconds.
        unix: i64,
        /// The time crate's error.
        #[source]
        source: time::error::ComponentRange,
    },
    /// A revoked serial is not hex.
    #[error("serial `{serial}` is not hex")]
    SerialNotHex {
        /// The serial.
        serial: String,
        /// The decoder's error.
        #[source]
        source: hex::FromHexError,
    },
    /// A SPIFFE bundle is not JSON.
    #[error("bundle is not JSON: {0}")]
    BundleNotJson(#[source] serde_json::Error),
    /// A SPIFFE bundle has no `keys` array.
    #[error("bundle has no `keys` array")]
    BundleNoKeys,
    /// A bundle's `x5c` entry is not base64.
    #[error("x5c is not base64: {0}")]
    X5cNotBase64(#[source] base64::DecodeError),
    /// An authority's key is of a type or curve a JWK cannot carry here.
    #[error("unsupported {what} in authority")]
    UnsupportedAuthorityKey {
        /// "EC curve" or "key type".
        what: &'static str,
    },
    /// What went wrong with the content of a file.
    #[error("{}: {source}", path.display())]
    InFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        #[source]
        source: Box<CaError>,
    },
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

/// The error x509-parser returns for a certificate that does not parse.
pub type X509ParseError = x509_parser::nom::Err<x509_parser::error::X509Error>;

impl CaError {
    /// `rcgen`'s error while doing `action`, as a [`CaError::X509`].
    pub(crate) fn x509(action: &'static str) -> impl FnOnce(rcgen::Error) -> Self {
        move |source| Self::X509 { action, source }
    }

    /// aws-lc's error while doing `action`, as a [`CaError::Crypto`].
    pub(crate) fn crypto(action: &'static str) -> impl FnOnce(aws_lc_rs::error::Unspecified) -> Self {
        move |source| Self::Crypto { action, source }
    }

    /// x509-parser's error while parsing `what`, as a [`CaError::Certificate`].
    pub(crate) fn certificate(what: &'static str) -> impl FnOnce(X509ParseError) -> Self {
        move |source| Self::Certificate { what, source }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn errors_keep_their_source_and_say_what_failed() {
        let e = svid::not_after(b"not DER").unwrap_err();
        assert!(matches!(e, CaError::Certificate { what: "certificate", .. }), "{e:?}");
        assert!(e.source().is_some());
        assert!(e.to_string().starts_with("cannot parse the certificate: "), "{e}");
        assert!(!e.is_bad_csr());
        let e = JwtKey::from_pkcs8(b"junk").unwrap_err();
        assert!(matches!(e, CaError::KeyRejected { .. }) && e.source().is_some(), "{e:?}");
        let e = svid::pem_certs("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").unwrap_err();
        assert!(matches!(e, CaError::NoCertificateInPem), "{e:?}");
    }
}
