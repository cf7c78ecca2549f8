//! The issuance path, top to bottom: authenticate the agent, find the entry it
//! is entitled to, decide, sign, record, return.
//!
//! Policy decisions (Cedar) and the inventory/audit records slot into the
//! marked steps; nothing here caches an earlier "allowed".

use hallmark_ca::SignedSvid;
use hallmark_ca::x509::SvidTemplate;
use hallmark_core::{Entry, SpiffeId, now_unix};
use hallmark_store::{JoinTokenError, hash_secret};

use crate::{ServerError, ServerState};

/// Most audiences one JWT-SVID may carry.
pub const MAX_AUDIENCES: usize = 32;
/// Longest audience value, in bytes.
pub const MAX_AUDIENCE_LEN: usize = 512;
/// Most X.509-SVIDs signed in one request.
pub const MAX_BATCH: usize = 1000;

/// Why an issuance was refused.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The entry does not exist.
    #[error("entry `{0}` not found")]
    NoEntry(String),
    /// The entry exists but is not served by the calling agent.
    #[error("agent `{agent}` is not entitled to entry `{entry}`")]
    NotEntitled {
        /// The caller.
        agent: String,
        /// The entry.
        entry: String,
    },
    /// The request itself is malformed (bad CSR, bad audience).
    #[error("{0}")]
    BadRequest(String),
    /// Node attestation failed.
    #[error("{0}")]
    Attestation(#[from] JoinTokenError),
    /// A server-side failure.
    #[error(transparent)]
    Server(#[from] ServerError),
}

impl From<hallmark_store::StoreError> for IssueError {
    fn from(e: hallmark_store::StoreError) -> Self {
        Self::Server(e.into())
    }
}

/// The stable, non-secret id of a join token, used in the agent's SPIFFE ID.
pub fn join_token_id(token: &str) -> String {
    hash_secret(token)[..16].to_owned()
}

impl ServerState {
    /// Loads the entry and checks that `agent` may serve it.
    async fn entitled_entry(&self, agent: &SpiffeId, entry_id: &str) -> Result<Entry, IssueError> {
        let entry = self.store.entry(entry_id).await?.ok_or_else(|| IssueError::NoEntry(entry_id.to_owned()))?;
        if &entry.parent_id != agent {
            return Err(IssueError::NotEntitled { agent: agent.to_string(), entry: entry_id.to_owned() });
        }
        Ok(entry)
    }

    /// Signs an X.509-SVID for `entry_id` from the agent's CSR.
    pub async fn issue_x509(&self, agent: &SpiffeId, entry_id: &str, csr: &[u8]) -> Result<SignedSvid, IssueError> {
        // 1. The entry exists and belongs to the calling agent.
        let entry = self.entitled_entry(agent, entry_id).await?;
        // 2. Decide: the entry's TTL, cut short by the authority's own expiry in the signer.
        let ttl_secs = entry.x509_ttl.secs();
        // 3. Sign: the CSR signature is verified and may ask for no other identity.
        let ca = self.authorities.x509()?;
        let template = SvidTemplate {
            csr_der: csr,
            spiffe_id: &entry.spiffe_id,
            dns_names: &entry.dns_names,
            ttl_secs,
            now: now_unix(),
        };
        let signed = ca.sign_svid(&template).map_err(|e| IssueError::BadRequest(e.to_string()))?;
        // 4. Record.
        tracing::debug!(entry = %entry.id, spiffe_id = %entry.spiffe_id, serial = %signed.serial, "issued X.509-SVID");
        Ok(signed)
    }

    /// Mints a JWT-SVID for `entry_id` and `audience`; returns (token, expiry).
    pub async fn issue_jwt(
        &self,
        agent: &SpiffeId,
        entry_id: &str,
        audience: &[String],
    ) -> Result<(String, i64), IssueError> {
        if audience.is_empty() {
            return Err(IssueError::BadRequest("at least one audience is required".into()));
        }
        if audience.len() > MAX_AUDIENCES {
            return Err(IssueError::BadRequest(format!("at most {MAX_AUDIENCES} audiences")));
        }
        if audience.iter().any(|a| a.is_empty() || a.len() > MAX_AUDIENCE_LEN || a.chars().any(char::is_control)) {
            return Err(IssueError::BadRequest(format!(
                "each audience must be 1-{MAX_AUDIENCE_LEN} bytes with no control characters"
            )));
        }
        // 1. The entry exists and belongs to the calling agent.
        let entry = self.entitled_entry(agent, entry_id).await?;
        // 2. Decide the lifetime; a token never outlives the key that signs it.
        let now = now_unix();
        let key = self.authorities.jwt()?;
        let exp =
            (now + i64::try_from(entry.jwt_ttl.secs()).unwrap_or(i64::MAX / 2)).min(self.authorities.jwt_not_after()?);
        // 3. Sign.
        let mut jti = [0u8; 16];
        rand::Rng::fill(&mut rand::rng(), &mut jti);
        let jti = hex::encode(jti);
        let token = key
            .mint(&entry.spiffe_id, audience, now, exp, &jti, self.settings.jwt_issuer.as_deref())
            .map_err(|e| ServerError::Ca(e.to_string()))?;
        // 4. Record.
        tracing::debug!(entry = %entry.id, spiffe_id = %entry.spiffe_id, %jti, "issued JWT-SVID");
        Ok((token, exp))
    }

    /// Node attestation by join token: verifies the CSR, burns the token, and
    /// signs the agent SVID. The CSR is checked before the token is consumed,
    /// so a malformed request does not waste a token.
    pub async fn attest_join_token(&self, token: &str, csr: &[u8]) -> Result<(SpiffeId, SignedSvid), IssueError> {
        let agent_id = self
            .settings
            .trust_domain
            .workload_id(&["hallmark", "agent", "join_token", &join_token_id(token)])
            .map_err(|e| ServerError::Internal(e.to_string()))?;
        let signed = self.sign_agent(&agent_id, csr)?;
        self.store.consume_join_token(&hash_secret(token), agent_id.as_str(), now_unix()).await??;
        self.store.upsert_node(agent_id.as_str(), "join_token", &signed.serial, signed.not_after).await?;
        tracing::info!(agent = %agent_id, "node attested with join token");
        Ok((agent_id, signed))
    }

    /// Signs an agent SVID for the agent embedded in this process (`hallmark up`).
    /// The caller is this process, so no attestation evidence is exchanged.
    pub async fn attest_local(&self, agent_id: &SpiffeId, csr: &[u8]) -> Result<SignedSvid, IssueError> {
        let signed = self.sign_agent(agent_id, csr)?;
        self.store.upsert_node(agent_id.as_str(), "local", &signed.serial, signed.not_after).await?;
        Ok(signed)
    }

    /// Renews an authenticated agent's SVID.
    pub async fn renew_agent(&self, agent: &SpiffeId, csr: &[u8]) -> Result<SignedSvid, IssueError> {
        let signed = self.sign_agent(agent, csr)?;
        self.store.upsert_node(agent.as_str(), "join_token", &signed.serial, signed.not_after).await?;
        Ok(signed)
    }

    fn sign_agent(&self, agent: &SpiffeId, csr: &[u8]) -> Result<SignedSvid, IssueError> {
        let ca = self.authorities.x509()?;
        let t = SvidTemplate {
            csr_der: csr,
            spiffe_id: agent,
            dns_names: &[],
            ttl_secs: self.settings.agent_svid_ttl.secs(),
            now: now_unix(),
        };
        let signed = ca.sign_svid(&t).map_err(|e| IssueError::BadRequest(e.to_string()))?;
        Ok(signed)
    }
}
