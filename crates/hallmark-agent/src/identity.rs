//! The agent's own identity, and the files a restarted agent resumes from.
//!
//! The node's SVID chain and key, and the authority that signed it, are kept
//! in the data directory (the key 0600), beside the last bundle received, so
//! that an agent restarted while its SVID is valid needs no new join token.
//! How the identity is obtained and renewed is [`crate::renewal`]'s part.

use std::path::Path;

use hallmark_ca::keys::{read_secret_file, write_secret_file};
use hallmark_ca::{Bundle, svid};
use hallmark_core::{SpiffeId, TrustDomain};

use crate::error::{AgentError, io_err};

/// The agent's private key file (PKCS#8 DER, mode 0600) in its data directory.
pub const IDENTITY_KEY: &str = "agent.key.der";
const IDENTITY_CHAIN: &str = "agent.chain.pem";
const IDENTITY_AUTHORITY: &str = "agent.authority";
const BUNDLE_FILE: &str = "bundle.json";

/// The agent's own identity.
#[derive(Clone)]
pub struct AgentIdentity {
    /// Its SPIFFE ID.
    pub id: SpiffeId,
    /// Its SVID chain, leaf first.
    pub chain: Vec<Vec<u8>>,
    /// Its key (PKCS#8).
    pub key: Vec<u8>,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// The authority that signed it (empty when not known, e.g. after a restart).
    pub authority_id: String,
}

impl AgentIdentity {
    /// The identity a chain (leaf first) and its key make, as the server signed it.
    pub(crate) fn from_chain(chain: Vec<Vec<u8>>, key: Vec<u8>, authority_id: String) -> Result<Self, AgentError> {
        let leaf = chain.first().ok_or_else(|| AgentError::Attestation("empty agent SVID chain".into()))?;
        let info = svid::parse_leaf(leaf).map_err(|e| AgentError::Attestation(e.to_string()))?;
        Ok(Self {
            id: info.spiffe_id,
            not_before: info.not_before,
            not_after: info.not_after,
            chain,
            key,
            authority_id,
        })
    }

    /// Writes the identity to `dir` (key 0600).
    pub fn save(&self, dir: &Path) -> Result<(), AgentError> {
        write_secret_file(&dir.join(IDENTITY_KEY), &self.key).map_err(|e| AgentError::Io(e.to_string()))?;
        let p = dir.join(IDENTITY_CHAIN);
        std::fs::write(&p, svid::to_pem(&self.chain)).map_err(|e| io_err(&p, e))?;
        let p = dir.join(IDENTITY_AUTHORITY);
        std::fs::write(&p, &self.authority_id).map_err(|e| io_err(&p, e))
    }

    /// Reads a stored identity, if any.
    pub fn load(dir: &Path) -> Result<Option<Self>, AgentError> {
        let (kp, cp) = (dir.join(IDENTITY_KEY), dir.join(IDENTITY_CHAIN));
        if !kp.exists() || !cp.exists() {
            return Ok(None);
        }
        let key = read_secret_file(&kp).map_err(|e| AgentError::Io(e.to_string()))?;
        let chain = std::fs::read_to_string(&cp).map_err(|e| io_err(&cp, e))?;
        let chain = svid::pem_certs(&chain).map_err(|e| io_err(&cp, e))?;
        // Which authority signed it: known from the server; absent in older data directories.
        let authority = std::fs::read_to_string(dir.join(IDENTITY_AUTHORITY)).unwrap_or_default();
        Self::from_chain(chain, key, authority.trim().to_owned()).map(Some)
    }
}

/// Stores a bundle where a restarted agent will find it.
pub fn save_bundle(dir: &Path, b: &Bundle) -> Result<(), AgentError> {
    let doc = b.to_spiffe_json().map_err(|e| AgentError::Io(e.to_string()))?;
    let p = dir.join(BUNDLE_FILE);
    std::fs::write(&p, doc.to_string()).map_err(|e| io_err(&p, e))
}

/// The bundle stored by [`save_bundle`], if there is a readable one.
pub(crate) fn load_bundle(dir: &Path, td: &TrustDomain) -> Option<Bundle> {
    let text = std::fs::read_to_string(dir.join(BUNDLE_FILE)).ok()?;
    Bundle::from_spiffe_json(td, &text).ok()
}
