//! What an x509pop node signs to prove it holds its node key: shared by the
//! server that checks it and the agent that signs it.

use aws_lc_rs::digest;

/// Domain separation: the node key signs nothing else with this prefix.
pub const SIGNED_PREFIX: &[u8] = b"hallmark-x509pop-v1:";

/// `"hallmark-x509pop-v1:" || nonce || SHA-256(csr)`: an answer good for one
/// exchange (the server's fresh nonce) and one agent key (the CSR sent with
/// the evidence).
pub fn signed_message(nonce: &[u8], csr: &[u8]) -> Vec<u8> {
    let mut m = SIGNED_PREFIX.to_vec();
    m.extend_from_slice(nonce);
    m.extend_from_slice(digest::digest(&digest::SHA256, csr).as_ref());
    m
}
