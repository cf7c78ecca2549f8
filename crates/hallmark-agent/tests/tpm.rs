//! TPM 2.0 node attestation end to end against software TPMs: the agent's
//! [`TpmNode`] talks to `swtpm` instances, manufactured by `swtpm_setup` with
//! EK certificates from a local CA made in a temporary directory; the
//! server's [`TpmVerifier`] checks their evidence and answers. Proves the
//! server's software MakeCredential is what a real TPM activates.
//!
//! Needs the Debian packages `swtpm`, `swtpm-tools` and
//! `libtss2-tcti-swtpm0` (and `libtss2-dev` to build); fails, not skips,
//! without them. Run: `cargo nextest run -p hallmark-agent --features tpm --test tpm`.
#![cfg(feature = "tpm")]
// Integration tests: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::time::{SystemTime, UNIX_EPOCH};

use hallmark_agent::tpm::TpmNode;
use hallmark_server::node_attest::AttestError;
use hallmark_server::node_attest::tpm::{TpmAttestorConfig, TpmVerifier, ek_public_key_hash};

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

use hallmark_testkit::swtpm::{LocalCa, Swtpm};

fn open(t: &Swtpm) -> TpmNode {
    TpmNode::open(&t.tcti()).unwrap()
}

fn ca_verifier(ca: &LocalCa) -> TpmVerifier {
    TpmVerifier::new(&TpmAttestorConfig { ek_ca_dir: Some(ca.trust_dir()), ek_hashes: vec![] }).unwrap()
}

fn hash_verifier(hash: &str) -> TpmVerifier {
    TpmVerifier::new(&TpmAttestorConfig { ek_ca_dir: None, ek_hashes: vec![hash.to_owned()] }).unwrap()
}

#[test]
fn a_tpm_with_an_ek_certificate_attests_and_a_wrong_secret_is_refused() {
    let ca = LocalCa::new();
    let swtpm = ca.tpm("a");
    let verifier = ca_verifier(&ca);
    let mut node = open(&swtpm);

    let ev = node.evidence().unwrap();
    assert!(!ev.ek_cert.is_empty(), "swtpm_setup stored an EK certificate");
    let hash = ek_public_key_hash(&ev.ek_public).unwrap();
    let (challenge, pending) = verifier.begin(&ev, now()).unwrap();
    let secret = node.activate(&challenge).unwrap();
    let proof = verifier.finish(pending, &secret).unwrap();
    assert_eq!(proof.attestor, "tpm");
    assert_eq!(proof.agent_path, vec!["tpm".to_owned(), hash.clone()]);
    assert_eq!(proof.selectors, vec![format!("tpm:ek:sha256:{hash}")]);
    // swtpm_localca's EK certificates run to 9999-12-31T23:59:59Z.
    assert_eq!(proof.evidence_expires_at, Some(253_402_300_799));

    // The hash is the SHA-256 of the certificate's SubjectPublicKeyInfo, as
    // `openssl x509 -pubkey | openssl pkey -pubin -outform DER | sha256sum` says.
    let (_, cert) = x509_parser::parse_x509_certificate(&ev.ek_cert).unwrap();
    let spki_hash = <sha2::Sha256 as sha2::Digest>::digest(cert.public_key().raw);
    assert_eq!(hex::encode(spki_hash), hash);

    // (e) A wrong secret, and the right one for an earlier challenge.
    let (challenge, pending) = verifier.begin(&ev, now()).unwrap();
    let mut wrong = node.activate(&challenge).unwrap();
    wrong[0] ^= 0x80;
    assert!(matches!(verifier.finish(pending, &wrong), Err(AttestError::Refused(_))));
    let (_, pending) = verifier.begin(&ev, now()).unwrap();
    assert!(matches!(verifier.finish(pending, &secret), Err(AttestError::Refused(_))), "a replayed answer");

    // The certificate must be valid now: the TPM is still challenged (only
    // it can answer), and its answer proves its EK is no longer trusted.
    let why = untrusted(&verifier, &ev, &mut node, 0, &hash);
    assert!(why.to_lowercase().contains("valid"), "{why}");
}

/// Begins at `at`, has the TPM answer, and expects the answer to prove an
/// EK that is not trusted (hash `hash`): returns why.
fn untrusted(
    v: &TpmVerifier,
    ev: &hallmark_proto::node::TpmEvidence,
    node: &mut TpmNode,
    at: i64,
    hash: &str,
) -> String {
    let (challenge, pending) = v.begin(ev, at).unwrap();
    match v.finish(pending, &node.activate(&challenge).unwrap()) {
        Err(AttestError::Untrusted { agent_path, why }) => {
            assert_eq!(agent_path, vec!["tpm".to_owned(), hash.to_owned()]);
            why
        }
        other => panic!("an untrusted EK was accepted or refused otherwise: {other:?}"),
    }
}

#[test]
fn the_allow_list_alone_trusts_listed_eks_only() {
    let ca = LocalCa::new();
    let swtpm = ca.tpm("a");
    let mut node = open(&swtpm);
    let ev = node.evidence().unwrap();
    let hash = ek_public_key_hash(&ev.ek_public).unwrap();

    // (d) Listed: accepted, with or without the certificate sent.
    let listed = hash_verifier(&hash);
    for ek_cert in [Vec::new(), ev.ek_cert.clone()] {
        let ev = hallmark_proto::node::TpmEvidence { ek_cert, ..ev.clone() };
        let (challenge, pending) = listed.begin(&ev, now()).unwrap();
        let proof = listed.finish(pending, &node.activate(&challenge).unwrap()).unwrap();
        assert_eq!(proof.selectors, vec![format!("tpm:ek:sha256:{hash}")]);
        assert_eq!(proof.evidence_expires_at, None);
    }

    // (b) Another hash listed, and no CA that issued this EK certificate.
    let other = hash_verifier(&"ab".repeat(32));
    let msg = untrusted(&other, &ev, &mut node, now(), &hash);
    assert!(msg.contains("ek_hashes"), "{msg}");

    let unrelated_ca = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, "swtpm-localca");
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(unrelated_ca.path().join("ca.pem"), cert.pem()).unwrap();
    let wrong_ca =
        TpmVerifier::new(&TpmAttestorConfig { ek_ca_dir: Some(unrelated_ca.path().into()), ek_hashes: vec![] })
            .unwrap();
    let msg = untrusted(&wrong_ca, &ev, &mut node, now(), &hash);
    assert!(msg.contains("not a CA in `ek_ca_dir`"), "{msg}");
}

#[test]
fn another_tpm_cannot_answer_the_challenge() {
    let ca = LocalCa::new();
    let (tpm_a, tpm_b) = (ca.tpm("a"), ca.tpm("b"));
    let verifier = ca_verifier(&ca);
    let (mut a, mut b) = (open(&tpm_a), open(&tpm_b));
    let ev_a = a.evidence().unwrap();
    let ev_b = b.evidence().unwrap();
    assert_ne!(ev_a.ek_public, ev_b.ek_public);

    // (c) B cannot activate A's credential.
    let (challenge_a, pending_a) = verifier.begin(&ev_a, now()).unwrap();
    let from_b = b.activate(&challenge_a);
    assert!(from_b.is_err(), "TPM B activated a credential made for TPM A");

    // B's answer to its own challenge does not answer A's.
    let (challenge_b, pending_b) = verifier.begin(&ev_b, now()).unwrap();
    let secret_b = b.activate(&challenge_b).unwrap();
    assert!(matches!(verifier.finish(pending_a, &secret_b), Err(AttestError::Refused(_))));
    verifier.finish(pending_b, &secret_b).unwrap();

    // A's EK with B's AK: A holds the EK but not the AK the credential names,
    // and B holds the AK but not the EK.
    let mixed = hallmark_proto::node::TpmEvidence { ak_public: ev_b.ak_public.clone(), ..ev_a.clone() };
    let (challenge, _pending) = verifier.begin(&mixed, now()).unwrap();
    assert!(a.activate(&challenge).is_err(), "TPM A activated a credential for an AK it does not hold");
    assert!(b.activate(&challenge).is_err(), "TPM B activated a credential for an EK it does not hold");
}
