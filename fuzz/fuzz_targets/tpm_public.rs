//! TPM 2.0 evidence as an agent sends it: marshaled TPM2B_PUBLICs for the EK
//! and the AK. The server parses, hashes, checks and makes a credential, or
//! refuses; it never panics.
#![no_main]
use hallmark_proto::node::TpmEvidence;
use hallmark_server::node_attest::AttestError;
use hallmark_server::node_attest::tpm::{TpmAttestorConfig, TpmVerifier, ek_public_key_hash};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The input is an EK public area and an AK public area, one after the
    // other (a TPM2B carries its own length); when it does not split, both
    // are the whole input.
    let split = data.get(..2).map(|s| usize::from(u16::from_be_bytes([s[0], s[1]])) + 2).unwrap_or(0);
    let (ek, ak) = if split <= data.len() { data.split_at(split) } else { (data, data) };
    let Ok(hash) = ek_public_key_hash(ek) else { return };
    // The EK is on the allow-list, so the check goes on to the AK and
    // MakeCredential.
    let verifier = TpmVerifier::new(&TpmAttestorConfig { ek_ca_dir: None, ek_hashes: vec![hash] }).unwrap();
    let ev = TpmEvidence { ek_cert: Vec::new(), ek_public: ek.to_vec(), ak_public: ak.to_vec() };
    match verifier.begin(&ev, 0) {
        Ok((challenge, pending)) => {
            assert!(!challenge.id_object.is_empty() && !challenge.encrypted_secret.is_empty());
            let refused = verifier.finish(pending, b"not the secret");
            assert!(matches!(refused, Err(AttestError::Refused(_))), "a wrong answer is refused");
        }
        Err(AttestError::Malformed(_) | AttestError::Refused(_)) => {}
        Err(e) => panic!("unexpected error: {e}"),
    }
});
