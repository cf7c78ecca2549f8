//! mTLS between agents and servers, authorized by SPIFFE ID.
//!
//! Both verifiers read the trust anchors through a [`SharedAnchors`] handle, so
//! a bundle change applies to the next handshake with no restart.

use std::fmt;
use std::sync::{Arc, RwLock};

use hallmark_core::SpiffeId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, Error as TlsError, SignatureScheme};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::svid;
use crate::x509::SvidProfile;

/// The handshake-signature methods every verifier shares: they delegate to
/// the provider's algorithms, held in the named field.
macro_rules! delegate_signature_checks {
    ($provider:tt) => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, TlsError> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.$provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, TlsError> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.$provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.$provider.signature_verification_algorithms.supported_schemes()
        }
    };
}

/// Trust anchors (DER) shared between the bundle owner and the TLS verifiers.
pub type SharedAnchors = Arc<RwLock<Vec<Vec<u8>>>>;

/// The one crypto provider Hallmark uses: aws-lc-rs.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Verifies `chain` (leaf first) against `anchors` for the given usage and
/// returns the leaf's SPIFFE ID.
pub fn verify_chain(
    chain: &[CertificateDer<'_>],
    anchors: &[Vec<u8>],
    now: UnixTime,
    usage: webpki::KeyUsage,
    algs: &WebPkiSupportedAlgorithms,
) -> Result<SpiffeId, TlsError> {
    let (leaf, intermediates) = chain.split_first().ok_or(TlsError::NoCertificatesPresented)?;
    let anchor_ders: Vec<CertificateDer<'_>> = anchors.iter().map(|a| CertificateDer::from(a.as_slice())).collect();
    let trust: Vec<_> = anchor_ders.iter().filter_map(|a| webpki::anchor_from_trusted_cert(a).ok()).collect();
    if trust.is_empty() {
        return Err(TlsError::General("no trust anchors".into()));
    }
    let ee = webpki::EndEntityCert::try_from(leaf).map_err(|e| TlsError::General(format!("bad certificate: {e}")))?;
    ee.verify_for_usage(algs.all, &trust, intermediates, now, usage, None, None)
        .map_err(|e| TlsError::General(format!("certificate does not verify: {e}")))?;
    let info = svid::parse_leaf(leaf.as_ref()).map_err(|e| TlsError::General(e.to_string()))?;
    Ok(info.spiffe_id)
}

/// Verifies an X.509-SVID chain (DER, leaf first) against a bundle's X.509
/// authorities at `now` (unix seconds): what a relying party does. Returns the
/// SPIFFE ID, or why the chain is not valid.
pub fn verify_svid(chain: &[Vec<u8>], anchors: &[Vec<u8>], now: i64) -> Result<SpiffeId, TlsError> {
    let chain: Vec<CertificateDer<'_>> = chain.iter().map(|c| CertificateDer::from(c.as_slice())).collect();
    let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(u64::try_from(now).unwrap_or(0)));
    let algs = provider().signature_verification_algorithms;
    verify_chain(&chain, anchors, now, webpki::KeyUsage::client_auth(), &algs)
}

/// The SPIFFE ID of a DER leaf, without verifying it (for already-verified peers).
pub fn peer_id(leaf: &[u8]) -> Option<SpiffeId> {
    let (_, cert) = X509Certificate::from_der(leaf).ok()?;
    svid::spiffe_id_of(&cert).ok()
}

/// Client-side verifier: the server must present a server certificate
/// ([`SvidProfile::Server`]) chaining to the current bundle and carrying
/// exactly the expected SPIFFE ID. Host names are not consulted.
pub struct ServerIdVerifier {
    anchors: SharedAnchors,
    expected: SpiffeId,
    provider: Arc<CryptoProvider>,
}

impl ServerIdVerifier {
    /// Verifies servers against `anchors`, accepting only `expected`.
    pub fn new(anchors: SharedAnchors, expected: SpiffeId) -> Self {
        Self { anchors, expected, provider: provider() }
    }
}

impl fmt::Debug for ServerIdVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerIdVerifier({})", self.expected)
    }
}

impl ServerCertVerifier for ServerIdVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        let mut chain = vec![end_entity.clone()];
        chain.extend(intermediates.iter().cloned());
        let anchors = self.anchors.read().map_err(|_| TlsError::General("bundle lock poisoned".into()))?.clone();
        let id = verify_chain(
            &chain,
            &anchors,
            now,
            webpki::KeyUsage::server_auth(),
            &self.provider.signature_verification_algorithms,
        )?;
        if id != self.expected {
            return Err(TlsError::General(format!("server presented `{id}`, expected `{}`", self.expected)));
        }
        // The server's own certificate profile (serverAuth only): a workload
        // SVID, which has clientAuth too, never passes as the server, even one
        // carrying the server's ID.
        let profile = svid::parse_leaf(end_entity.as_ref()).map_err(|e| TlsError::General(e.to_string()))?.profile;
        if profile != Some(SvidProfile::Server) {
            return Err(TlsError::General(format!(
                "server presented `{id}` in a certificate that is not a server certificate (its extended key usages are not serverAuth alone)"
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    delegate_signature_checks!(provider);
}

/// A verifier for the one moment an agent has no bundle yet and the operator
/// chose `insecure_bootstrap`: any server certificate is accepted. The join
/// token is still single-use, and the agent pins the bundle it receives.
#[derive(Debug)]
pub struct InsecureBootstrapVerifier(Arc<CryptoProvider>);

impl Default for InsecureBootstrapVerifier {
    fn default() -> Self {
        Self(provider())
    }
}

impl ServerCertVerifier for InsecureBootstrapVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        Ok(ServerCertVerified::assertion())
    }

    delegate_signature_checks!(0);
}

/// Server-side verifier: a client certificate is optional (node attestation
/// happens before the agent has one) but, when presented, must chain to the
/// current bundle and carry a SPIFFE ID in our trust domain. Which IDs may do
/// what is decided per RPC from the verified ID.
pub struct AgentClientVerifier {
    anchors: SharedAnchors,
    provider: Arc<CryptoProvider>,
}

impl AgentClientVerifier {
    /// Verifies clients against `anchors`.
    pub fn new(anchors: SharedAnchors) -> Self {
        Self { anchors, provider: provider() }
    }
}

impl fmt::Debug for AgentClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AgentClientVerifier")
    }
}

impl ClientCertVerifier for AgentClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, TlsError> {
        let mut chain = vec![end_entity.clone()];
        chain.extend(intermediates.iter().cloned());
        let anchors = self.anchors.read().map_err(|_| TlsError::General("bundle lock poisoned".into()))?.clone();
        verify_chain(
            &chain,
            &anchors,
            now,
            webpki::KeyUsage::client_auth(),
            &self.provider.signature_verification_algorithms,
        )?;
        Ok(ClientCertVerified::assertion())
    }

    delegate_signature_checks!(provider);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::X509Authority;
    use crate::keys::new_key_and_csr;
    use crate::x509::SvidTemplate;
    use hallmark_core::TrustDomain;

    #[test]
    fn verify_chain_checks_anchor_and_returns_id() {
        let td = TrustDomain::new("example.org").unwrap();
        let now = hallmark_core::now_unix();
        let ca = X509Authority::generate_self_signed(&td, 3600, now).unwrap();
        let other = X509Authority::generate_self_signed(&td, 3600, now).unwrap();
        let id = SpiffeId::new("spiffe://example.org/x").unwrap();
        let s = crate::x509::test_support::sign_workload(&ca, &id, 60, now);
        let chain: Vec<CertificateDer<'_>> = s.chain.iter().map(|c| CertificateDer::from(c.as_slice())).collect();
        let algs = provider().signature_verification_algorithms;
        let t = UnixTime::now();
        assert_eq!(verify_chain(&chain, ca.anchors(), t, webpki::KeyUsage::client_auth(), &algs).unwrap(), id);
        assert!(verify_chain(&chain, other.anchors(), t, webpki::KeyUsage::client_auth(), &algs).is_err());
        assert!(verify_chain(&chain, &[], t, webpki::KeyUsage::client_auth(), &algs).is_err());
    }

    /// The server verifier takes only a server certificate with the server's
    /// ID: a workload SVID or an agent SVID carrying that ID is refused.
    #[test]
    fn server_verifier_wants_the_server_profile() {
        let td = TrustDomain::new("example.org").unwrap();
        let now = hallmark_core::now_unix();
        let ca = X509Authority::generate_self_signed(&td, 3600, now).unwrap();
        let id = td.server_id();
        let verifier = ServerIdVerifier::new(Arc::new(RwLock::new(ca.anchors().to_vec())), id.clone());
        let name = ServerName::try_from("hallmark-server").unwrap();
        for (profile, ok) in [(SvidProfile::Server, true), (SvidProfile::Workload, false), (SvidProfile::Agent, false)]
        {
            let kc = new_key_and_csr(Some(&id)).unwrap();
            let t = SvidTemplate {
                csr_der: &kc.csr_der,
                spiffe_id: &id,
                dns_names: &[],
                ttl_secs: 60,
                now,
                profile,
                task_id: None,
                person_name: None,
            };
            let s = ca.sign_svid(&t).unwrap();
            assert_eq!(svid::parse_leaf(&s.chain[0]).unwrap().profile, Some(profile));
            let leaf = CertificateDer::from(s.chain[0].as_slice());
            let got = verifier.verify_server_cert(&leaf, &[], &name, &[], UnixTime::now());
            assert_eq!(got.is_ok(), ok, "{profile:?}: {got:?}");
        }
    }
}
