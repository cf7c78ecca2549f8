//! TPM 2.0 node attestation, the agent's half (the `tpm` feature): the
//! evidence the node's TPM gives, and the answer to the server's challenge.
//!
//! The node proves it holds a real TPM by activating a credential the server
//! made for the TPM's endorsement key (EK), bound to an attestation key (AK)
//! made here. Only the TPM holding that EK's private key, with that exact AK
//! loaded, releases the secret (TPM2_ActivateCredential); the server checks
//! the EK by its maker's certificate or an allow-list.
//!
//! 1. [`TpmNode::evidence`]: read the RSA EK certificate from its NV index
//!    (when the TPM has one), recreate the EK from the TCG template L-1
//!    (RSA 2048), create and load an AK under it; send the EK certificate and
//!    both public areas.
//! 2. [`TpmNode::activate`]: ActivateCredential with that AK and EK, giving
//!    the secret back to the server.
//!
//! The EK and AK are transient objects, flushed when the [`TpmNode`] is
//! dropped or [`TpmNode::evidence`] is called again; nothing is written to
//! the TPM.

use std::str::FromStr;

use hallmark_proto::node::{TpmChallenge, TpmEvidence};
use tss_esapi::Context;
use tss_esapi::abstraction::nv;
use tss_esapi::abstraction::{AsymmetricAlgorithmSelection, ak, ek};
use tss_esapi::attributes::SessionAttributesBuilder;
use tss_esapi::constants::SessionType;
use tss_esapi::handles::{AuthHandle, KeyHandle, NvIndexTpmHandle, ObjectHandle, SessionHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, SignatureSchemeAlgorithm};
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{EncryptedSecret, IdObject, SymmetricDefinition};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::Marshall;

/// The NV index of the RSA 2048 EK certificate (TCG EK Credential Profile
/// §2.2.1.4).
const RSA_EK_CERT_NV_INDEX: u32 = 0x01C0_0002;

/// Why the TPM could not give evidence or answer a challenge.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TpmError {
    /// The TCTI string is not one the TSS knows, or the TPM behind it could
    /// not be reached.
    #[error("cannot open the TPM at `{tcti}` (e.g. `device:/dev/tpmrm0`, `swtpm:host=127.0.0.1,port=2321`): {source}")]
    Open {
        /// The TCTI string as given.
        tcti: String,
        /// What the TSS said.
        #[source]
        source: tss_esapi::Error,
    },
    /// A TPM command failed.
    #[error("TPM {step} failed: {source}")]
    Command {
        /// What was being done.
        step: &'static str,
        /// What the TSS or the TPM said.
        #[source]
        source: tss_esapi::Error,
    },
    /// [`TpmNode::activate`] before [`TpmNode::evidence`]: no AK to activate with.
    #[error("no attestation key yet: the TPM's evidence must be made before the challenge is answered")]
    NoKeys,
    /// The server's challenge is not a pair of marshaled TPM2Bs.
    #[error("malformed TPM challenge: {0}")]
    Challenge(&'static str),
}

/// The node's TPM, opened for attestation.
pub struct TpmNode {
    ctx: Context,
    /// The EK and the AK under it, once [`TpmNode::evidence`] made them.
    keys: Option<(KeyHandle, KeyHandle)>,
}

impl std::fmt::Debug for TpmNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TpmNode").field("has_keys", &self.keys.is_some()).finish_non_exhaustive()
    }
}

fn cmd(step: &'static str) -> impl FnOnce(tss_esapi::Error) -> TpmError {
    move |source| TpmError::Command { step, source }
}

impl TpmNode {
    /// Opens the TPM behind a TCTI string: `device:/dev/tpmrm0` (the kernel's
    /// resource manager), `swtpm:host=…,port=…`, `mssim:…` or `tabrmd:…`.
    ///
    /// # Errors
    /// [`TpmError::Open`] when the string does not parse or the TPM is out of reach.
    pub fn open(tcti: &str) -> Result<Self, TpmError> {
        let open_err = |source| TpmError::Open { tcti: tcti.to_owned(), source };
        let conf = TctiNameConf::from_str(tcti).map_err(open_err)?;
        let ctx = Context::new(conf).map_err(open_err)?;
        Ok(Self { ctx, keys: None })
    }

    /// The TPM's evidence: its RSA EK certificate if it has one, the EK's
    /// public area (template L-1) and a new AK's, as marshaled TPM2B_PUBLICs.
    ///
    /// # Errors
    /// [`TpmError::Command`] when a TPM command fails.
    pub fn evidence(&mut self) -> Result<TpmEvidence, TpmError> {
        self.flush_keys();
        let ek_cert = self.ek_cert()?;
        let rsa2048 = AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048);
        let ek = ek::create_ek_object_2(&mut self.ctx, rsa2048, None).map_err(cmd("creating the EK"))?;
        let made =
            ak::create_ak(&mut self.ctx, ek, HashingAlgorithm::Sha256, SignatureSchemeAlgorithm::RsaSsa, None, None)
                .map_err(cmd("creating the AK"));
        let made = match made {
            Ok(m) => m,
            Err(e) => {
                self.flush(ek.into());
                return Err(e);
            }
        };
        let ak_public = made.out_public.clone();
        let ak = match ak::load_ak(&mut self.ctx, ek, None, made.out_private, made.out_public) {
            Ok(ak) => ak,
            Err(e) => {
                self.flush(ek.into());
                return Err(cmd("loading the AK")(e));
            }
        };
        self.keys = Some((ek, ak));
        let (ek_public, _, _) = self.ctx.read_public(ek).map_err(cmd("reading the EK public area"))?;
        Ok(TpmEvidence {
            ek_cert,
            ek_public: tpm2b(&ek_public.marshall().map_err(cmd("marshaling the EK public area"))?),
            ak_public: tpm2b(&ak_public.marshall().map_err(cmd("marshaling the AK public area"))?),
        })
    }

    /// Answers the server's challenge: ActivateCredential with the AK and EK
    /// of the last [`TpmNode::evidence`], giving the secret the server wrapped.
    ///
    /// # Errors
    /// [`TpmError::NoKeys`] before [`TpmNode::evidence`];
    /// [`TpmError::Challenge`] when the challenge is not marshaled TPM2Bs;
    /// [`TpmError::Command`] when the TPM refuses (the credential was made
    /// for another TPM or another AK).
    pub fn activate(&mut self, ch: &TpmChallenge) -> Result<Vec<u8>, TpmError> {
        let (ek, ak) = self.keys.ok_or(TpmError::NoKeys)?;
        let id_object = IdObject::try_from(tpm2b_contents(&ch.id_object).ok_or(TpmError::Challenge("id_object"))?)
            .map_err(|_| TpmError::Challenge("id_object is too large"))?;
        let secret = EncryptedSecret::try_from(
            tpm2b_contents(&ch.encrypted_secret).ok_or(TpmError::Challenge("encrypted_secret"))?,
        )
        .map_err(|_| TpmError::Challenge("encrypted_secret is too large"))?;

        // The EK's policy (template L-1) is PolicySecret(TPM_RH_ENDORSEMENT):
        // a policy session that has shown the endorsement hierarchy's auth.
        let session = self
            .ctx
            .start_auth_session(
                None,
                None,
                None,
                SessionType::Policy,
                SymmetricDefinition::AES_128_CFB,
                HashingAlgorithm::Sha256,
            )
            .map_err(cmd("starting the EK policy session"))?
            .ok_or(TpmError::Command {
                step: "starting the EK policy session",
                source: tss_esapi::Error::WrapperError(tss_esapi::WrapperErrorKind::WrongValueFromTpm),
            })?;
        let (attrs, mask) = SessionAttributesBuilder::new().with_decrypt(true).with_encrypt(true).build();
        let digest = self.ctx.execute_with_temporary_object(SessionHandle::from(session).into(), |ctx, _| {
            ctx.tr_sess_set_attributes(session, attrs, mask)?;
            let policy = PolicySession::try_from(session)?;
            ctx.execute_with_nullauth_session(|ctx| {
                ctx.policy_secret(
                    policy,
                    AuthHandle::Endorsement,
                    Default::default(),
                    Default::default(),
                    Default::default(),
                    None,
                )
            })?;
            // The AK's auth is empty (password session); the EK's is the policy.
            ctx.execute_with_sessions((Some(AuthSession::Password), Some(session), None), |ctx| {
                ctx.activate_credential(ak, ek, id_object, secret)
            })
        });
        Ok(digest.map_err(cmd("activating the credential"))?.value().to_vec())
    }

    /// The RSA EK certificate from its NV index, or empty when the TPM has
    /// none there.
    fn ek_cert(&mut self) -> Result<Vec<u8>, TpmError> {
        let index = NvIndexTpmHandle::new(RSA_EK_CERT_NV_INDEX).map_err(cmd("naming the EK certificate index"))?;
        let present = nv::list(&mut self.ctx)
            .map_err(cmd("listing NV indices"))?
            .iter()
            .any(|(public, _)| public.nv_index() == index);
        if !present {
            return Ok(Vec::new());
        }
        ek::retrieve_ek_pubcert(&mut self.ctx, AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048))
            .map_err(cmd("reading the EK certificate"))
    }

    fn flush_keys(&mut self) {
        if let Some((ek, ak)) = self.keys.take() {
            self.flush(ak.into());
            self.flush(ek.into());
        }
    }

    /// Flushes a transient object; a failure only leaves it to the resource
    /// manager, which flushes what a closed connection left.
    fn flush(&mut self, handle: ObjectHandle) {
        if let Err(e) = self.ctx.flush_context(handle) {
            tracing::debug!(error = %e, "flushing a TPM object failed");
        }
    }
}

impl Drop for TpmNode {
    fn drop(&mut self) {
        self.flush_keys();
    }
}

/// `b` with its u16 size in front (a TPM2B). TPM structures are far under
/// 64 KiB; a longer one would be cut to a size the server refuses.
fn tpm2b(b: &[u8]) -> Vec<u8> {
    let mut out = u16::try_from(b.len()).unwrap_or(u16::MAX).to_be_bytes().to_vec();
    out.extend_from_slice(b);
    out
}

/// The contents of a marshaled TPM2B that is exactly `b`.
fn tpm2b_contents(b: &[u8]) -> Option<Vec<u8>> {
    let (size, rest) = b.split_first_chunk::<2>()?;
    (usize::from(u16::from_be_bytes(*size)) == rest.len()).then(|| rest.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tpm2b_round_trips_and_rejects_wrong_sizes() {
        assert_eq!(tpm2b_contents(&tpm2b(b"abc")), Some(b"abc".to_vec()));
        assert_eq!(tpm2b_contents(&[0, 0]), Some(Vec::new()));
        assert_eq!(tpm2b_contents(&[0]), None);
        assert_eq!(tpm2b_contents(&[0, 2, 1]), None);
        assert_eq!(tpm2b_contents(&[0, 1, 1, 2]), None);
    }
}
