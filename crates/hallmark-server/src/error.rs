//! The server's error type.

use std::path::PathBuf;
use std::sync::Arc;

use hallmark_ca::CaError;
use hallmark_ca::keys::SecretFileError;
use hallmark_store::StoreError;

/// Server failures. One line each; never carries key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A file or directory operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// A listening address could not be bound or read back.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address, as configured.
        addr: String,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// The agent API stopped serving.
    #[error("agent API: {0}")]
    AgentApi(#[source] tonic::transport::Error),
    /// A data or key directory another user could have prepared or can
    /// change ([`hallmark_ca::keys::check_trusted_path`]).
    #[error("{0}")]
    UntrustedDir(#[source] CaError),
    /// A file holding a secret (the bootstrap admin token) could not be
    /// read or written, or is exposed; the message names the file.
    #[error(transparent)]
    SecretFile(#[from] SecretFileError),
    /// The datastore failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A signing authority failed.
    #[error("CA: {0}")]
    Ca(#[from] CaError),
    /// An authority's key or chain file does not hold what it should.
    #[error("{}: {source}", path.display())]
    AuthorityFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: CaError,
    },
    /// A key file is not UTF-8 PEM.
    #[error("{}: {source}", path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        #[source]
        source: std::string::FromUtf8Error,
    },
    /// No authority of a kind is active.
    #[error("CA: no active {0}")]
    NoActiveAuthority(&'static str),
    /// A new X.509 authority came without a trust anchor.
    #[error("CA: CA has no anchor")]
    NoAnchor,
    /// A public key in `audit_trusted_keys` could not be read.
    #[error("CA: audit_trusted_keys: {0}")]
    AuditTrustedKey(#[source] CaError),
    /// A public key kept with an audit checkpoint does not parse.
    #[error("internal: {0}")]
    CheckpointKey(#[source] CaError),
    /// The server's own TLS key or configuration was refused by rustls.
    #[error("CA: {0}")]
    Tls(#[source] rustls::Error),
    /// The agent's SPIFFE ID could not be formed from the trust domain.
    #[error("internal: {0}")]
    AgentId(#[source] hallmark_core::SpiffeIdError),
    /// A lock was poisoned by a panicking thread.
    #[error("internal: {0} lock poisoned")]
    LockPoisoned(&'static str),
    /// The audit appender has stopped.
    #[error("internal: audit appender stopped")]
    AuditStopped,
    /// The datastore refused an audit record's group commit.
    #[error("internal: audit record not committed: {0}")]
    AuditNotCommitted(#[source] Arc<StoreError>),
    /// A policy the server relies on does not compile.
    #[error("internal: {what} no longer compiles: {source}")]
    Policy {
        /// Which policy: "the default policy", "stored policy v3".
        what: String,
        /// Why not.
        #[source]
        source: hallmark_policy::PolicyError,
    },
    /// The datastore holds no policy right after the default was stored.
    #[error("internal: no policy after storing the default")]
    NoPolicy,
    /// A bundle without any authority would lock every agent out.
    #[error("internal: bundle would be empty; refusing to publish it")]
    EmptyBundle,
    /// A server task panicked or was cancelled.
    #[error("internal: server task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
}
