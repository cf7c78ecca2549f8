//! The kinds of issued credential and of revocation-log record, as the
//! inventory, the revocation log, the admin API and the CLI name them.
//!
//! Both are stored and serialised as their lowercase names (`x509`, `jwt`,
//! `wit`, `node`), so the JSON API and the database keep exactly those strings.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The kind of an issued credential in the inventory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CredentialKind {
    /// An X.509-SVID, named by its serial (hex).
    X509,
    /// A JWT-SVID, named by its `jti`.
    Jwt,
    /// A WIT-SVID (a workload identity token binding the workload's key),
    /// named by its `jti`.
    Wit,
}

/// An unknown credential kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown credential kind `{0}` (known: x509, jwt, wit)")]
pub struct CredentialKindError(pub String);

impl CredentialKind {
    /// Every kind, in the order metrics and listings show them.
    pub const ALL: [Self; 3] = [Self::X509, Self::Jwt, Self::Wit];

    /// The name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::X509 => "x509",
            Self::Jwt => "jwt",
            Self::Wit => "wit",
        }
    }
}

impl fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CredentialKind {
    type Err = CredentialKindError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| CredentialKindError(s.to_owned()))
    }
}

/// The kind of a revocation-log record: what its `id` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RevocationKind {
    /// An X.509-SVID serial.
    X509,
    /// A token's `jti`: a JWT-SVID's or a WIT-SVID's (see the
    /// `From<CredentialKind>` below).
    Jwt,
    /// An agent's SPIFFE ID: the node is banned.
    Node,
}

/// An unknown revocation kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown revocation kind `{0}` (known: x509, jwt, node)")]
pub struct RevocationKindError(pub String);

impl RevocationKind {
    /// Every kind.
    pub const ALL: [Self; 3] = [Self::X509, Self::Jwt, Self::Node];

    /// The name as stored, shown and sent to agents.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::X509 => "x509",
            Self::Jwt => "jwt",
            Self::Node => "node",
        }
    }
}

impl fmt::Display for RevocationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RevocationKind {
    type Err = RevocationKindError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| RevocationKindError(s.to_owned()))
    }
}

/// Revoking a credential logs a record of its kind. A WIT-SVID is logged
/// as `jwt`: the log names tokens by `jti`, and agents (old ones included)
/// drop and refuse every token whose `jti` a `jwt` record names, whichever
/// token kind it is; a kind of its own would be one more name every agent
/// must learn before a revoked WIT stops being served.
impl From<CredentialKind> for RevocationKind {
    fn from(k: CredentialKind) -> Self {
        match k {
            CredentialKind::X509 => Self::X509,
            CredentialKind::Jwt | CredentialKind::Wit => Self::Jwt,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_kinds_round_trip_as_their_names() {
        for (k, name) in CredentialKind::ALL.into_iter().zip(["x509", "jwt", "wit"]) {
            assert_eq!(k.as_str(), name);
            assert_eq!(k.to_string(), name);
            assert_eq!(name.parse::<CredentialKind>(), Ok(k));
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<CredentialKind>(&format!("\"{name}\"")).unwrap(), k);
        }
        for bad in ["", "X509", "node", "jwt ", "x.509"] {
            let err = bad.parse::<CredentialKind>().unwrap_err();
            assert_eq!(err, CredentialKindError(bad.to_owned()));
            assert!(err.to_string().contains(&format!("`{bad}`")), "{err}");
            assert!(serde_json::from_str::<CredentialKind>(&format!("\"{bad}\"")).is_err());
        }
    }

    #[test]
    fn revocation_kinds_round_trip_as_their_names() {
        for (k, name) in RevocationKind::ALL.into_iter().zip(["x509", "jwt", "node"]) {
            assert_eq!(k.as_str(), name);
            assert_eq!(k.to_string(), name);
            assert_eq!(name.parse::<RevocationKind>(), Ok(k));
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<RevocationKind>(&format!("\"{name}\"")).unwrap(), k);
        }
        for bad in ["", "Node", "entry", "owner"] {
            let err = bad.parse::<RevocationKind>().unwrap_err();
            assert!(err.to_string().contains(&format!("`{bad}`")), "{err}");
        }
    }

    #[test]
    fn a_credential_is_revoked_under_its_own_kind_and_a_wit_as_a_jwt() {
        for k in [CredentialKind::X509, CredentialKind::Jwt] {
            assert_eq!(RevocationKind::from(k).as_str(), k.as_str());
        }
        assert_eq!(RevocationKind::from(CredentialKind::Wit), RevocationKind::Jwt, "named by jti, dropped by jti");
    }
}
