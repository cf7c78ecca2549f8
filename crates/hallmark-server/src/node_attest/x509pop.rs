//! x509pop: the node proves possession of the key of a node certificate that
//! chains to a configured CA.
//!
//! 1. The agent sends its certificate chain (leaf first). The server verifies
//!    it against the configured CAs at this moment (signatures, validity,
//!    CA constraints); a chain that does not verify is refused before any
//!    challenge.
//! 2. The server sends 32 fresh random bytes. The agent signs
//!    `"hallmark-x509pop-v1:" || nonce || SHA-256(csr)` with the node key, so
//!    the answer is good for this exchange and this agent key only: a captured
//!    exchange replayed on another stream answers a nonce that is not asked.
//! 3. The server checks the signature with the leaf's public key.
//!
//! The agent is `spiffe://TD/hallmark/agent/x509pop/<SHA-1 of the leaf DER>`.

use std::path::PathBuf;

use aws_lc_rs::digest;
use hallmark_ca::x509pop::signed_message;
use hallmark_proto::node::X509PopEvidence;
use rustls::pki_types::{CertificateDer, TrustAnchor, UnixTime};
use serde::Deserialize;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::{AttestError, NodeProof};

/// Most certificates a chain may hold.
const MAX_CHAIN: usize = 8;
/// Largest certificate accepted, bytes.
const MAX_CERT_LEN: usize = 16 * 1024;

/// The `[[node_attestor]] type = "x509pop"` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct X509PopConfig {
    /// PEM file of the CA certificates node certificates must chain to
    /// (each one a trust anchor).
    pub ca_bundle_path: PathBuf,
}

/// Verifies x509pop evidence.
pub struct X509PopVerifier {
    /// The configured CAs, parsed once.
    anchors: Vec<TrustAnchor<'static>>,
    /// Each anchor's lowercase hex SHA-1 (of its DER certificate), in the same order.
    fingerprints: Vec<String>,
}

/// A chain verified at `begin`, waiting for the node's signature.
#[derive(Debug)]
pub struct X509PopPending {
    leaf: Vec<u8>,
    /// What the node must sign: the nonce and the CSR sent with the chain.
    expected: Vec<u8>,
    /// What the chain proves, or why it does not verify.
    proof: Result<NodeProof, String>,
}

/// Lowercase hex SHA-1 of `der`: the fingerprint x509pop names certificates by.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, der))
}

impl X509PopVerifier {
    /// Loads the CA bundle; an unreadable file, or one with no usable CA
    /// certificate, is an error naming it.
    pub fn new(cfg: &X509PopConfig) -> Result<Self, String> {
        let path = &cfg.ca_bundle_path;
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let ders = hallmark_ca::svid::pem_certs(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let (mut anchors, mut fingerprints) = (Vec::new(), Vec::new());
        for der in ders {
            let cert = CertificateDer::from(der.as_slice());
            let anchor = webpki::anchor_from_trusted_cert(&cert)
                .map_err(|e| format!("{}: a certificate is not a usable CA: {e}", path.display()))?;
            anchors.push(anchor.to_owned());
            fingerprints.push(fingerprint(&der));
        }
        Ok(Self { anchors, fingerprints })
    }

    /// Verifies the chain at `now` and makes the challenge.
    pub fn begin(&self, ev: &X509PopEvidence, csr: &[u8], now: i64) -> Result<(Vec<u8>, X509PopPending), AttestError> {
        let (leaf, intermediates) =
            ev.chain.split_first().ok_or_else(|| AttestError::Malformed("x509pop: the chain is empty".into()))?;
        if ev.chain.len() > MAX_CHAIN || ev.chain.iter().any(|c| c.len() > MAX_CERT_LEN) {
            return Err(AttestError::Malformed(format!(
                "x509pop: at most {MAX_CHAIN} certificates of {MAX_CERT_LEN} bytes each"
            )));
        }
        // A chain that does not verify still gets its challenge: only the
        // holder of the leaf's key can answer, and its answer then proves
        // that the node we know by this leaf is no longer trusted (see
        // `finish`). Anyone else sending the (public) leaf cannot answer.
        let proof = match self.verify_chain(leaf, intermediates, now) {
            Ok(p) => Ok(p),
            Err(AttestError::Refused(why)) => Err(why),
            Err(e) => return Err(e),
        };
        let nonce: [u8; 32] = rand::random();
        let pending = X509PopPending { leaf: leaf.clone(), expected: signed_message(&nonce, csr), proof };
        Ok((nonce.to_vec(), pending))
    }

    /// Checks the node's signature over the challenge.
    pub fn finish(&self, pending: X509PopPending, signature: &[u8]) -> Result<NodeProof, AttestError> {
        let leaf = CertificateDer::from(pending.leaf.as_slice());
        let ee = webpki::EndEntityCert::try_from(&leaf)
            .map_err(|e| AttestError::Malformed(format!("x509pop: node certificate: {e}")))?;
        let msg = pending.expected;
        let algs = [
            webpki::aws_lc_rs::ECDSA_P256_SHA256,
            webpki::aws_lc_rs::ECDSA_P384_SHA384,
            webpki::aws_lc_rs::ED25519,
            webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256,
        ];
        if algs.iter().any(|alg| ee.verify_signature(*alg, &msg, signature).is_ok()) {
            pending.proof.map_err(|why| AttestError::Untrusted {
                agent_path: vec!["x509pop".to_owned(), fingerprint(&pending.leaf)],
                why,
            })
        } else {
            Err(AttestError::Refused(
                "x509pop: the signature over the challenge does not verify with the node certificate's key".into(),
            ))
        }
    }

    /// Verifies `leaf` through `intermediates` to a configured CA at `now`,
    /// and reads its selectors.
    fn verify_chain(&self, leaf: &[u8], intermediates: &[Vec<u8>], now: i64) -> Result<NodeProof, AttestError> {
        let leaf_der = CertificateDer::from(leaf);
        let ee = webpki::EndEntityCert::try_from(&leaf_der)
            .map_err(|e| AttestError::Malformed(format!("x509pop: node certificate: {e}")))?;
        let inter: Vec<CertificateDer<'_>> = intermediates.iter().map(|c| CertificateDer::from(c.as_slice())).collect();
        let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(u64::try_from(now).unwrap_or(0)));
        let algs = rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms;
        let path = ee
            .verify_for_usage(algs.all, &self.anchors, &inter, at, webpki::KeyUsage::client_auth(), None, None)
            .map_err(|e| AttestError::Refused(format!("x509pop: the node certificate does not verify: {e}")))?;
        // Fingerprints of every CA on the verified path: the anchor and the
        // intermediates that were used.
        let anchor = path.anchor();
        let mut selectors: Vec<String> = self
            .anchors
            .iter()
            .zip(&self.fingerprints)
            .filter(|(a, _)| a.subject_public_key_info == anchor.subject_public_key_info && a.subject == anchor.subject)
            .map(|(_, fp)| format!("x509pop:ca:fingerprint:{fp}"))
            .collect();
        selectors.extend(
            path.intermediate_certificates().map(|c| format!("x509pop:ca:fingerprint:{}", fingerprint(&c.der()))),
        );
        let (_, cert) = X509Certificate::from_der(leaf)
            .map_err(|e| AttestError::Malformed(format!("x509pop: node certificate: {e}")))?;
        for cn in cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok()) {
            selectors.push(format!("x509pop:subject:cn:{cn}"));
        }
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => selectors.push(format!("x509pop:san:dns:{d}")),
                    GeneralName::URI(u) => selectors.push(format!("x509pop:san:uri:{u}")),
                    GeneralName::IPAddress(ip) => {
                        if let Some(addr) = ip_text(ip) {
                            selectors.push(format!("x509pop:san:ip:{addr}"));
                        }
                    }
                    _ => {}
                }
            }
        }
        // Only what a selector can hold (no control characters, bounded).
        selectors.retain(|s| s.parse::<hallmark_core::Selector>().is_ok());
        selectors.sort();
        selectors.dedup();
        Ok(NodeProof {
            attestor: "x509pop",
            agent_path: vec!["x509pop".to_owned(), fingerprint(leaf)],
            selectors,
            evidence_expires_at: Some(cert.validity().not_after.timestamp()),
        })
    }
}

/// An IP SAN's octets as text.
fn ip_text(octets: &[u8]) -> Option<String> {
    match octets.len() {
        4 => <[u8; 4]>::try_from(octets).ok().map(|o| std::net::Ipv4Addr::from(o).to_string()),
        16 => <[u8; 16]>::try_from(octets).ok().map(|o| std::net::Ipv6Addr::from(o).to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use hallmark_proto::node::X509PopEvidence;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};

    use super::*;

    struct TestCa {
        issuer: Issuer<'static, KeyPair>,
        pem: String,
        der: Vec<u8>,
    }

    fn ca(name: &str) -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = p.self_signed(&key).unwrap();
        TestCa { pem: cert.pem(), der: cert.der().to_vec(), issuer: Issuer::new(p, key) }
    }

    fn node(ca: &TestCa, cn: &str, not_after: time::OffsetDateTime) -> (Vec<u8>, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["node-1.example.org".to_owned()]).unwrap();
        p.subject_alt_names.push(SanType::IpAddress("10.0.0.7".parse().unwrap()));
        p.distinguished_name.push(DnType::CommonName, cn);
        p.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
        p.not_after = not_after;
        (p.signed_by(&key, &ca.issuer).unwrap().der().to_vec(), key)
    }

    fn verifier(ca: &TestCa) -> (X509PopVerifier, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, &ca.pem).unwrap();
        (X509PopVerifier::new(&X509PopConfig { ca_bundle_path: path }).unwrap(), dir)
    }

    fn sign(key: &KeyPair, msg: &[u8]) -> Vec<u8> {
        let pkcs8 = key.serialize_der();
        let kp = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &pkcs8,
        )
        .unwrap();
        kp.sign(&aws_lc_rs::rand::SystemRandom::new(), msg).unwrap().as_ref().to_vec()
    }

    fn later() -> time::OffsetDateTime {
        time::OffsetDateTime::now_utc() + time::Duration::days(1)
    }

    #[test]
    fn a_node_with_its_key_is_attested_with_its_selectors() {
        let ca = ca("node ca");
        let (v, _d) = verifier(&ca);
        let (leaf, key) = node(&ca, "node-1", later());
        let ev = X509PopEvidence { chain: vec![leaf.clone()] };
        let now = hallmark_core::now_unix();
        let (nonce, pending) = v.begin(&ev, b"csr", now).unwrap();
        assert_eq!(nonce.len(), 32);
        let proof = v.finish(pending, &sign(&key, &signed_message(&nonce, b"csr"))).unwrap();
        assert_eq!(proof.agent_path, vec!["x509pop".to_owned(), fingerprint(&leaf)]);
        assert_eq!(
            proof.selectors,
            vec![
                format!("x509pop:ca:fingerprint:{}", fingerprint(&ca.der)),
                "x509pop:san:dns:node-1.example.org".to_owned(),
                "x509pop:san:ip:10.0.0.7".to_owned(),
                "x509pop:subject:cn:node-1".to_owned(),
            ]
        );
    }

    #[test]
    fn another_ca_an_expired_certificate_and_a_wrong_answer_are_refused() {
        let ca1 = ca("node ca");
        let other = ca("other ca");
        let (v, _d) = verifier(&ca1);
        let now = hallmark_core::now_unix();
        // A chain that does not verify is still challenged: its holder's
        // answer proves it untrusted (the server revokes a node it knows by
        // it); anyone else's answer is a plain refusal, so the public
        // certificate alone cannot get a node revoked.
        let (foreign, foreign_key) = node(&other, "node-2", later());
        let (expired, expired_key) = node(&ca1, "node-3", time::OffsetDateTime::now_utc() - time::Duration::minutes(5));
        for (leaf, key, says) in [(foreign, foreign_key, "does not verify"), (expired, expired_key, "expired")] {
            let ev = X509PopEvidence { chain: vec![leaf.clone()] };
            let (nonce, pending) = v.begin(&ev, b"csr", now).unwrap();
            match v.finish(pending, &sign(&key, &signed_message(&nonce, b"csr"))) {
                Err(AttestError::Untrusted { agent_path, why }) => {
                    assert_eq!(agent_path, vec!["x509pop".to_owned(), fingerprint(&leaf)]);
                    assert!(why.to_lowercase().contains(says), "{why}");
                }
                other => panic!("{other:?}"),
            }
            let (nonce, pending) = v.begin(&ev, b"csr", now).unwrap();
            let stranger = KeyPair::generate().unwrap();
            let e = v.finish(pending, &sign(&stranger, &signed_message(&nonce, b"csr"))).unwrap_err();
            assert!(matches!(e, AttestError::Refused(_)), "{e}");
        }
        let (leaf, key) = node(&ca1, "node-1", later());
        let ev = X509PopEvidence { chain: vec![leaf] };
        // The signature over another CSR, or another nonce, is refused.
        let (nonce, pending) = v.begin(&ev, b"csr", now).unwrap();
        let e = v.finish(pending, &sign(&key, &signed_message(&nonce, b"other csr"))).unwrap_err();
        assert!(matches!(e, AttestError::Refused(_)), "{e}");
        let (nonce1, _) = v.begin(&ev, b"csr", now).unwrap();
        let (_, pending2) = v.begin(&ev, b"csr", now).unwrap();
        let replayed = sign(&key, &signed_message(&nonce1, b"csr"));
        assert!(matches!(v.finish(pending2, &replayed), Err(AttestError::Refused(_))));
        // Another key's signature.
        let (_, pending3) = v.begin(&ev, b"csr", now).unwrap();
        let stranger = KeyPair::generate().unwrap();
        assert!(matches!(v.finish(pending3, &sign(&stranger, b"x")), Err(AttestError::Refused(_))));
    }

    #[test]
    fn malformed_chains_are_refused_without_panic() {
        let ca = ca("node ca");
        let (v, _d) = verifier(&ca);
        let now = hallmark_core::now_unix();
        for chain in [vec![], vec![vec![]], vec![vec![0x30, 0x03, 1, 2, 3]], vec![vec![0u8; MAX_CERT_LEN + 1]]] {
            assert!(v.begin(&X509PopEvidence { chain }, b"csr", now).is_err());
        }
    }
}
