//! The audit key: signs the audit chain's head, so that whoever can write the
//! datastore but does not hold this key cannot rewrite the chain unseen.
//!
//! An ECDSA P-256 key in a PKCS#8 file (mode 0600) beside the server's other
//! keys, never in the datastore. Signatures are ASN.1 DER over SHA-256, as
//! `openssl dgst -sha256 -verify` checks them; the public key is published as
//! PEM (`PUBLIC KEY`), and its id is the first 16 hex digits of the SHA-256
//! of its SubjectPublicKeyInfo.

use std::path::Path;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair, UnparsedPublicKey,
};
use sha2::{Digest, Sha256};

use crate::CaError;
use crate::keys::{read_secret_file, write_secret_file};

/// DER prefix of a P-256 SubjectPublicKeyInfo, before the 65-byte point:
/// SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING }.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
    0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// A public audit key: checks signatures made with its private half.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditPublicKey {
    /// The uncompressed P-256 point.
    point: Vec<u8>,
    id: String,
}

impl AuditPublicKey {
    fn from_point(point: Vec<u8>) -> Result<Self, CaError> {
        if point.len() != 65 || point.first() != Some(&0x04) {
            return Err(CaError::PublicKey { what: "an audit public key", expected: "an uncompressed P-256 point" });
        }
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(&point);
        let id = hex::encode(Sha256::digest(&spki)).chars().take(16).collect();
        Ok(Self { point, id })
    }

    /// Parses a PEM `PUBLIC KEY` (SubjectPublicKeyInfo of a P-256 key).
    pub fn from_pem(text: &str) -> Result<Self, CaError> {
        let block = pem::parse(text).map_err(|source| CaError::Pem { what: "audit public key", source })?;
        if block.tag() != "PUBLIC KEY" {
            return Err(CaError::PemLabel {
                what: "audit public key",
                expected: "PUBLIC KEY",
                found: block.tag().to_owned(),
            });
        }
        let point = block
            .contents()
            .strip_prefix(P256_SPKI_PREFIX.as_slice())
            .ok_or(CaError::PublicKey { what: "an audit public key", expected: "a P-256 SubjectPublicKeyInfo" })?;
        Self::from_point(point.to_vec())
    }

    /// Reads a PEM public key file.
    pub fn read(path: &Path) -> Result<Self, CaError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| CaError::Io { path: path.display().to_string(), source })?;
        Self::from_pem(&text).map_err(|e| CaError::InFile { path: path.to_owned(), source: Box::new(e) })
    }

    /// The key's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The key as PEM `PUBLIC KEY`.
    pub fn to_pem(&self) -> String {
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(&self.point);
        pem::encode(&pem::Pem::new("PUBLIC KEY", spki))
    }

    /// True when `signature` (DER) is this key's over `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &self.point).verify(message, signature).is_ok()
    }
}

/// The private audit key.
pub struct AuditKey {
    pair: EcdsaKeyPair,
    public: AuditPublicKey,
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditKey({})", self.public.id)
    }
}

impl AuditKey {
    /// Loads the key at `path`, or makes one there (mode 0600, in a 0700
    /// directory) on first start. A file others may read is refused.
    pub fn load_or_create(path: &Path) -> Result<Self, CaError> {
        if path.exists() {
            return Self::from_pkcs8(&read_secret_file(path)?)
                .map_err(|e| CaError::InFile { path: path.to_owned(), source: Box::new(e) });
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| CaError::Io { path: dir.display().to_string(), source })?;
        }
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new())
            .map_err(CaError::crypto("generate the audit key"))?;
        write_secret_file(path, pkcs8.as_ref())?;
        Self::from_pkcs8(pkcs8.as_ref())
    }

    fn from_pkcs8(der: &[u8]) -> Result<Self, CaError> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der)
            .map_err(|source| CaError::KeyRejected { what: "the audit key", source })?;
        let public = AuditPublicKey::from_point(pair.public_key().as_ref().to_vec())?;
        Ok(Self { pair, public })
    }

    /// Its public half.
    pub fn public(&self) -> &AuditPublicKey {
        &self.public
    }

    /// Signs `message`; the signature is DER.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, CaError> {
        let sig = self.pair.sign(&SystemRandom::new(), message).map_err(CaError::crypto("sign with the audit key"))?;
        Ok(sig.as_ref().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys").join("audit.key");
        let key = AuditKey::load_or_create(&path).unwrap();
        let sig = key.sign(b"head").unwrap();
        assert!(key.public().verifies(b"head", &sig));
        assert!(!key.public().verifies(b"other head", &sig));
        let again = AuditKey::load_or_create(&path).unwrap();
        assert_eq!(again.public(), key.public(), "the same key after a restart");
        let pem = key.public().to_pem();
        let parsed = AuditPublicKey::from_pem(&pem).unwrap();
        assert_eq!(&parsed, key.public());
        assert_eq!(parsed.id().len(), 16);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let other = AuditKey::load_or_create(&dir.path().join("other.key")).unwrap();
        assert!(!other.public().verifies(b"head", &sig));
        assert!(AuditPublicKey::from_pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").is_err());
    }
}
