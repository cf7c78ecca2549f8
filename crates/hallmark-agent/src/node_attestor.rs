//! The agent's side of node attestation with evidence the node holds
//! (x509pop, TPM 2.0, a Kubernetes projected service-account token): the
//! evidence to send, and the answer to the server's challenge.

use std::path::Path;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair};
use hallmark_proto::node as pb;
use pb::{attest_begin, challenge, challenge_response};

use crate::config::NodeAttestorConfig;
use crate::error::{AgentError, io_err};

/// A node prover for one attestation: it holds what it needs between the
/// evidence and the answer (the node key, the TPM session).
pub(crate) enum Prover {
    /// x509pop: the chain and the node key.
    X509pop { chain: Vec<Vec<u8>>, key: NodeKey },
    /// Kubernetes: the token, read now.
    K8sPsat { cluster: String, token: String },
    /// TPM 2.0: the TPM context (its calls block: they run off the runtime).
    #[cfg(feature = "tpm")]
    Tpm(Option<crate::tpm::TpmNode>),
}

impl Prover {
    /// Reads the attestor's files (or opens its TPM).
    pub(crate) fn open(cfg: &NodeAttestorConfig) -> Result<Self, AgentError> {
        match cfg {
            NodeAttestorConfig::X509pop { cert_path, key_path } => {
                let text = std::fs::read_to_string(cert_path).map_err(|e| io_err(cert_path, e))?;
                let chain = hallmark_ca::svid::pem_certs(&text).map_err(|e| io_err(cert_path, e))?;
                Ok(Self::X509pop { chain, key: NodeKey::load(key_path)? })
            }
            NodeAttestorConfig::K8sPsat { cluster, token_path } => {
                let token = std::fs::read_to_string(token_path).map_err(|e| io_err(token_path, e))?;
                Ok(Self::K8sPsat { cluster: cluster.clone(), token: token.trim().to_owned() })
            }
            #[cfg(feature = "tpm")]
            NodeAttestorConfig::Tpm { tcti } => Ok(Self::Tpm(Some(
                crate::tpm::TpmNode::open(tcti).map_err(|e| AgentError::Attestation(format!("tpm: {e}")))?,
            ))),
            #[cfg(not(feature = "tpm"))]
            NodeAttestorConfig::Tpm { .. } => Err(AgentError::Attestation(
                "this agent was built without TPM support: build it with `--features tpm` (needs libtss2)".into(),
            )),
        }
    }

    /// The first message's evidence.
    pub(crate) async fn evidence(&mut self) -> Result<attest_begin::Evidence, AgentError> {
        match self {
            Self::X509pop { chain, .. } => {
                Ok(attest_begin::Evidence::X509pop(pb::X509PopEvidence { chain: chain.clone() }))
            }
            Self::K8sPsat { cluster, token } => {
                Ok(attest_begin::Evidence::K8sPsat(pb::PsatEvidence { cluster: cluster.clone(), token: token.clone() }))
            }
            #[cfg(feature = "tpm")]
            Self::Tpm(t) => Ok(attest_begin::Evidence::Tpm(with_tpm(t, |n| n.evidence()).await?)),
        }
    }

    /// The answer to the server's challenge for the CSR sent with the evidence.
    pub(crate) async fn answer(
        &mut self,
        ch: challenge::Kind,
        csr: &[u8],
    ) -> Result<challenge_response::Kind, AgentError> {
        match (self, ch) {
            (Self::X509pop { key, .. }, challenge::Kind::X509popNonce(nonce)) => {
                Ok(challenge_response::Kind::X509popSignature(
                    key.sign(&hallmark_ca::x509pop::signed_message(&nonce, csr))?,
                ))
            }
            #[cfg(feature = "tpm")]
            (Self::Tpm(t), challenge::Kind::Tpm(c)) => {
                Ok(challenge_response::Kind::TpmSecret(with_tpm(t, move |n| n.activate(&c)).await?))
            }
            _ => Err(AgentError::Attestation("the server sent a challenge this attestor does not answer".into())),
        }
    }
}

/// Runs `f` on the TPM off the async runtime (TPM commands block, about a
/// second for the keys), and puts the TPM back for the next step.
#[cfg(feature = "tpm")]
async fn with_tpm<T: Send + 'static>(
    slot: &mut Option<crate::tpm::TpmNode>,
    f: impl FnOnce(&mut crate::tpm::TpmNode) -> Result<T, crate::tpm::TpmError> + Send + 'static,
) -> Result<T, AgentError> {
    let mut node =
        slot.take().ok_or_else(|| AgentError::Attestation("tpm: the TPM was lost by a failed step".into()))?;
    let (node, r) = tokio::task::spawn_blocking(move || {
        let r = f(&mut node);
        (node, r)
    })
    .await
    .map_err(|e| AgentError::Attestation(format!("tpm: {e}")))?;
    *slot = Some(node);
    r.map_err(|e| AgentError::Attestation(format!("tpm: {e}")))
}

/// An x509pop node key, whichever type its certificate has.
pub(crate) enum NodeKey {
    /// ECDSA P-256 or P-384 (ASN.1 DER signatures, SHA-256 / SHA-384).
    Ecdsa(EcdsaKeyPair),
    /// Ed25519.
    Ed25519(Ed25519KeyPair),
    /// RSA (PKCS#1 v1.5, SHA-256).
    Rsa(RsaKeyPair),
}

impl NodeKey {
    /// Reads a PKCS#8 PEM key; a key file others may read is refused.
    fn load(path: &Path) -> Result<Self, AgentError> {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|e| io_err(path, e))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(AgentError::Attestation(format!(
                "{}: the node key must be readable by its owner only (chmod 600)",
                path.display()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| io_err(path, e))?;
        let pem = pem::parse(&text).map_err(|e| io_err(path, e))?;
        if pem.tag() != "PRIVATE KEY" {
            return Err(AgentError::Attestation(format!(
                "{}: expected a PKCS#8 `PRIVATE KEY` (convert with `openssl pkcs8 -topk8 -nocrypt`)",
                path.display()
            )));
        }
        let der = pem.contents();
        if let Ok(k) = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, der) {
            return Ok(Self::Ecdsa(k));
        }
        if let Ok(k) = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P384_SHA384_ASN1_SIGNING, der) {
            return Ok(Self::Ecdsa(k));
        }
        if let Ok(k) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
            return Ok(Self::Ed25519(k));
        }
        RsaKeyPair::from_pkcs8(der).map(Self::Rsa).map_err(|_| {
            AgentError::Attestation(format!("{}: not an ECDSA P-256/P-384, Ed25519 or RSA key", path.display()))
        })
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, AgentError> {
        let failed = |_| AgentError::Attestation("cannot sign with the node key".into());
        let rng = SystemRandom::new();
        match self {
            Self::Ecdsa(k) => k.sign(&rng, msg).map(|s| s.as_ref().to_vec()).map_err(failed),
            Self::Ed25519(k) => Ok(k.sign(msg).as_ref().to_vec()),
            Self::Rsa(k) => {
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &rng, msg, &mut sig).map_err(failed)?;
                Ok(sig)
            }
        }
    }
}
