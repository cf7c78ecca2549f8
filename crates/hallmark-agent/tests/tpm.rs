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

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hallmark_agent::tpm::TpmNode;
use hallmark_server::node_attest::AttestError;
use hallmark_server::node_attest::tpm::{TpmAttestorConfig, TpmVerifier, ek_public_key_hash};

const PACKAGES: &str = "install the Debian packages `swtpm`, `swtpm-tools` and `libtss2-tcti-swtpm0` (apt-get install swtpm swtpm-tools libtss2-tcti-swtpm0)";

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Fails the test, naming the packages, when a swtpm tool is missing.
fn require_tools() {
    for tool in ["swtpm", "swtpm_setup", "swtpm_localca"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        assert!(found, "`{tool}` is not installed: the TPM tests need a software TPM; {PACKAGES}");
    }
}

/// A local EK CA (swtpm_localca's state) in a temporary directory, shared by
/// the TPMs one test manufactures.
struct LocalCa {
    dir: tempfile::TempDir,
}

impl LocalCa {
    fn new() -> Self {
        require_tools();
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        std::fs::create_dir(&ca).unwrap();
        let d = ca.display();
        std::fs::write(
            dir.path().join("swtpm-localca.conf"),
            format!(
                "statedir = {d}\nsigningkey = {d}/signkey.pem\nissuercert = {d}/issuercert.pem\ncertserial = {d}/certserial\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("swtpm-localca.options"),
            "--platform-manufacturer Hallmark\n--platform-version 2.1\n--platform-model test\n",
        )
        .unwrap();
        let t = dir.path().display();
        std::fs::write(
            dir.path().join("swtpm_setup.conf"),
            format!(
                "create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = {t}/swtpm-localca.conf\ncreate_certs_tool_options = {t}/swtpm-localca.options\nactive_pcr_banks = sha256\n"
            ),
        )
        .unwrap();
        Self { dir }
    }

    /// A directory holding only the CA's certificates (issuer and root), the
    /// verifier's `ek_ca_dir`. Valid once a TPM was manufactured.
    fn trust_dir(&self) -> PathBuf {
        let trust = self.dir.path().join("trust");
        if !trust.exists() {
            std::fs::create_dir(&trust).unwrap();
            for f in ["issuercert.pem", "swtpm-localca-rootca-cert.pem"] {
                std::fs::copy(self.dir.path().join("ca").join(f), trust.join(f)).unwrap();
            }
        }
        trust
    }

    /// Manufactures a TPM (EK, EK certificate signed by this CA) and starts it.
    fn tpm(&self, name: &str) -> Swtpm {
        let state = self.dir.path().join(name);
        std::fs::create_dir(&state).unwrap();
        let out = Command::new("swtpm_setup")
            .args(["--tpm2", "--create-ek-cert", "--create-platform-cert", "--tpmstate"])
            .arg(&state)
            .arg("--config")
            .arg(self.dir.path().join("swtpm_setup.conf"))
            .output()
            .unwrap_or_else(|e| panic!("running swtpm_setup: {e}; {PACKAGES}"));
        assert!(
            out.status.success(),
            "swtpm_setup failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Swtpm::start(&state)
    }
}

/// A running `swtpm`, killed on drop.
struct Swtpm {
    child: Child,
    port: u16,
}

impl Swtpm {
    fn start(state: &Path) -> Self {
        // swtpm's TCTI wants the control port right after the command port.
        for _ in 0..20 {
            let Some(port) = free_port_pair() else { continue };
            let mut child = Command::new("swtpm")
                .args(["socket", "--tpm2", "--flags", "not-need-init,startup-clear", "--tpmstate"])
                .arg(format!("dir={}", state.display()))
                .arg("--server")
                .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
                .arg("--ctrl")
                .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("starting swtpm: {e}; {PACKAGES}"));
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    break; // lost the ports to someone else: try others
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Self { child, port };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("swtpm did not start");
    }

    fn open(&self) -> TpmNode {
        TpmNode::open(&format!("swtpm:host=127.0.0.1,port={}", self.port)).unwrap()
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two consecutive free ports on the loopback, the first returned.
fn free_port_pair() -> Option<u16> {
    let a = TcpListener::bind("127.0.0.1:0").ok()?;
    let port = a.local_addr().ok()?.port();
    let _b = TcpListener::bind(("127.0.0.1", port.checked_add(1)?)).ok()?;
    Some(port)
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
    let mut node = swtpm.open();

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

    // The certificate must be valid now.
    assert!(matches!(verifier.begin(&ev, 0), Err(AttestError::Refused(_))));
}

#[test]
fn the_allow_list_alone_trusts_listed_eks_only() {
    let ca = LocalCa::new();
    let swtpm = ca.tpm("a");
    let mut node = swtpm.open();
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
    let Err(AttestError::Refused(msg)) = other.begin(&ev, now()) else { panic!("an unlisted EK was not refused") };
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
    let Err(AttestError::Refused(msg)) = wrong_ca.begin(&ev, now()) else { panic!("an untrusted EK was not refused") };
    assert!(msg.contains("not a CA in `ek_ca_dir`"), "{msg}");
}

#[test]
fn another_tpm_cannot_answer_the_challenge() {
    let ca = LocalCa::new();
    let (tpm_a, tpm_b) = (ca.tpm("a"), ca.tpm("b"));
    let verifier = ca_verifier(&ca);
    let (mut a, mut b) = (tpm_a.open(), tpm_b.open());
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
