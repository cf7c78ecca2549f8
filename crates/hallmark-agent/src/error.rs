//! The agent's error type, shared by every module that can stop the agent
//! or one of its tasks.

use std::path::Path;

/// Agent failures; one line each, never with key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// File or socket trouble.
    #[error("{0}")]
    Io(String),
    /// TLS setup failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// Node attestation failed or is impossible.
    #[error("node attestation: {0}")]
    Attestation(String),
    /// The server refused or failed a call.
    #[error("server: {0}")]
    Server(String),
    /// The kubelet settings cannot be used.
    #[error(transparent)]
    Kubelet(#[from] crate::kubelet::KubeletError),
}

/// A file or socket error, naming the path.
pub(crate) fn io_err(p: &Path, e: impl std::fmt::Display) -> AgentError {
    AgentError::Io(format!("{}: {e}", p.display()))
}
