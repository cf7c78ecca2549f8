//! TPM 2.0 node attestation, the server's half: a node proves that it holds
//! a real TPM by activating a credential that only that TPM can open.
//!
//! The threat: anyone can send public keys. What a node cannot fake is the
//! private half of its endorsement key (EK), made inside the TPM from a seed
//! that never leaves it, and vouched for by the TPM maker's certificate (or
//! listed by the operator). The check, all in software here:
//!
//! 1. Parse the EK's and the attestation key's (AK) public areas, strictly:
//!    anything malformed is [`AttestError::Malformed`], never a panic.
//! 2. Trust the EK: its certificate chains to a CA in `ek_ca_dir` and holds
//!    the same public key, or the key's hash is on the `ek_hashes` list.
//! 3. Check the AK is a restricted signing key that cannot leave its TPM
//!    (`fixedTPM`, `fixedParent`, `sensitiveDataOrigin`), and compute its
//!    Name, which binds every one of those attributes.
//! 4. MakeCredential (TPM 2.0 Part 1 §24, Part 3 §12.6): wrap a fresh random
//!    secret for the EK, bound to the AK's Name. A TPM releases it in
//!    ActivateCredential only if it holds that EK's private key *and* has the
//!    object with that Name loaded: the AK is in the same TPM as the EK.
//! 5. The node answers with the secret; [`TpmVerifier::finish`] compares it
//!    in constant time and says what was proved.
//!
//! The EK public-key hash, the node's name here, is the SHA-256 of the DER
//! `SubjectPublicKeyInfo` of the EK public key, in its canonical form
//! (`rsaEncryption` with NULL parameters; `id-ecPublicKey` with the named
//! curve and an uncompressed point). From an EK certificate:
//! `openssl x509 -in ek.pem -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum`.
//!
//! Supported: RSA EKs (the TCG EK Credential Profile's template L-1, RSA 2048
//! with SHA-256 and AES-128-CFB), AKs of any key type with the SHA-256 name
//! algorithm. ECC EKs are refused for now. PCR quotes are not checked.

use std::fmt;
use std::path::{Path, PathBuf};

use aws_lc_rs::cipher::{AES_128, AES_256, EncryptionContext, StreamingEncryptingKey, UnboundCipherKey};
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::rsa::{OAEP_SHA256_MGF1SHA256, OaepPublicEncryptingKey, PublicEncryptingKey};
use aws_lc_rs::{constant_time, digest, hmac, rand, signature};
use hallmark_proto::node::{TpmChallenge, TpmEvidence};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::RSAPublicKey;

use super::{AttestError, NodeProof};

/// The `tpm` node attestor's settings: the table of a `[[node_attestor]]`
/// with `type = "tpm"`. At least one of the two ways to trust an EK must be
/// given.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TpmAttestorConfig {
    /// A directory of CA certificates (PEM, several per file allowed, or DER)
    /// that issue EK certificates: TPM makers' roots and intermediates. Every
    /// certificate in it is trusted as an issuer; an EK certificate must be
    /// signed by one of them.
    pub ek_ca_dir: Option<PathBuf>,
    /// EK public-key hashes allowed without an EK certificate: lowercase or
    /// uppercase hex SHA-256 of the EK public key's DER
    /// `SubjectPublicKeyInfo` (see [`ek_public_key_hash`]).
    #[serde(default)]
    pub ek_hashes: Vec<String>,
}

/// The server's TPM 2.0 node attestor: checks evidence, makes the
/// credential challenge, checks the answer. Built once from the
/// configuration; the state of one attestation lives in a [`TpmPending`].
#[derive(Debug)]
pub struct TpmVerifier {
    cas: Vec<CaCert>,
    ek_hashes: Vec<[u8; 32]>,
}

/// What [`TpmVerifier::begin`] leaves for [`TpmVerifier::finish`]: the secret
/// the node must give back and what it will have proved. Kept by the one
/// `Attest` stream that made it; its `Debug` does not show the secret.
pub struct TpmPending {
    secret: [u8; SECRET_LEN],
    ek_hash: String,
    expires_at: Option<i64>,
    /// Why the EK is not trusted, when it is not.
    untrusted: Option<String>,
}

impl fmt::Debug for TpmPending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TpmPending")
            .field("ek_hash", &self.ek_hash)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The credential's size: the AK's name digest size (SHA-256), the most
/// ActivateCredential accepts.
const SECRET_LEN: usize = 32;
/// The longest marshaled TPM2B_PUBLIC accepted (a TPMT_PUBLIC with an RSA
/// 4096 key and a SHA-512 policy is under 700 bytes).
const MAX_PUBLIC_LEN: usize = 1024;
/// The longest EK certificate accepted.
const MAX_EK_CERT_LEN: usize = 16 * 1024;
/// How many CA certificates a chain may climb through in `ek_ca_dir`.
const MAX_CHAIN_DEPTH: usize = 8;

impl TpmVerifier {
    /// Builds the verifier: loads every certificate in `ek_ca_dir` and
    /// parses the hash allow-list.
    ///
    /// # Errors
    /// A message naming the problem when neither `ek_ca_dir` nor `ek_hashes`
    /// is given, the directory cannot be read, holds no certificate or a file
    /// that is not a CA certificate, or a hash is not 64 hex digits.
    pub fn new(cfg: &TpmAttestorConfig) -> Result<Self, String> {
        if cfg.ek_ca_dir.is_none() && cfg.ek_hashes.is_empty() {
            return Err("tpm node attestor: set `ek_ca_dir` (EK certificate CAs) or `ek_hashes` (allowed EK public-key hashes), or both".into());
        }
        let cas = match &cfg.ek_ca_dir {
            Some(dir) => load_ca_dir(dir)?,
            None => Vec::new(),
        };
        let ek_hashes = cfg
            .ek_hashes
            .iter()
            .map(|h| {
                let mut out = [0u8; 32];
                hex::decode_to_slice(h, &mut out).map_err(|_| {
                    format!("tpm node attestor: `ek_hashes` entry `{h}` is not a SHA-256 in hex (64 hex digits)")
                })?;
                Ok(out)
            })
            .collect::<Result<_, String>>()?;
        Ok(Self { cas, ek_hashes })
    }

    /// Checks a node's evidence and makes its challenge: the credential
    /// only the TPM holding this EK and this AK can activate. `now` is unix
    /// seconds, for the EK certificate's validity.
    ///
    /// # Errors
    /// [`AttestError::Malformed`] when a public area or the certificate does
    /// not parse; [`AttestError::Refused`] when the EK is not trusted, the
    /// keys are of a kind not supported, or the AK may leave its TPM.
    pub fn begin(&self, ev: &TpmEvidence, now: i64) -> Result<(TpmChallenge, TpmPending), AttestError> {
        // 1. Parse both public areas.
        let ek = Public::parse(&ev.ek_public, "ek_public")?;
        let ak = Public::parse(&ev.ak_public, "ak_public")?;
        let ek_key = EkKey::from_public(&ek)?;
        let ek_spki = ek.key.spki();
        let ek_hash = digest::digest(&digest::SHA256, &ek_spki);

        // 2. Trust the EK: by its certificate, else by the allow-list (an
        // operator's explicit word for this one EK, so it also stands when
        // the certificate does not check out).
        let listed = self.ek_hashes.iter().any(|h| h.as_slice() == ek_hash.as_ref());
        let by_cert = if ev.ek_cert.is_empty() {
            Err(refused("the TPM sent no EK certificate and its EK public-key hash is not in `ek_hashes`"))
        } else if self.cas.is_empty() {
            Err(refused(
                "no `ek_ca_dir` to check the EK certificate with, and the EK public-key hash is not in `ek_hashes`",
            ))
        } else {
            self.check_ek_cert(&ev.ek_cert, &ek_spki, now)
        };
        // An EK no longer trusted still gets its challenge: only the TPM
        // holding it can answer, and its answer then proves that the node
        // we know by this EK is no longer trusted (see `finish`). Anyone
        // else who sends this EK (it is public) cannot answer.
        let (expires_at, untrusted) = match by_cert {
            Ok(not_after) => (Some(not_after), None),
            Err(_) if listed => (None, None),
            Err(AttestError::Refused(why)) => (None, Some(why)),
            Err(e) => return Err(e),
        };

        // 3. The AK: restricted signing, bound to its TPM; its Name.
        let ak_name = ak.ak_name()?;

        // 4. MakeCredential.
        let mut secret = [0u8; SECRET_LEN];
        rand::fill(&mut secret).map_err(|_| unavailable("no randomness for the TPM credential"))?;
        let challenge = ek_key.make_credential(&ak_name, &secret)?;
        let pending = TpmPending { secret, ek_hash: hex::encode(ek_hash), expires_at, untrusted };
        Ok((challenge, pending))
    }

    /// Checks the node's answer, the secret its TPM released, and says what
    /// was proved.
    ///
    /// # Errors
    /// [`AttestError::Refused`] when the secret is not the one made in
    /// [`TpmVerifier::begin`].
    pub fn finish(&self, pending: TpmPending, secret: &[u8]) -> Result<NodeProof, AttestError> {
        // 5. The answer, compared in constant time (the length is public).
        constant_time::verify_slices_are_equal(&pending.secret, secret).map_err(|_| {
            refused("the TPM's credential answer is wrong: this TPM does not hold the EK and AK it sent")
        })?;
        if let Some(why) = pending.untrusted {
            return Err(AttestError::Untrusted { agent_path: vec!["tpm".to_owned(), pending.ek_hash], why });
        }
        Ok(NodeProof {
            attestor: "tpm",
            agent_path: vec!["tpm".to_owned(), pending.ek_hash.clone()],
            selectors: vec![format!("tpm:ek:sha256:{}", pending.ek_hash)],
            evidence_expires_at: pending.expires_at,
        })
    }

    /// Checks the EK certificate: signed by a CA of `ek_ca_dir` (and that
    /// CA by its own issuer when that is in the directory too), all valid
    /// at `now`, for the EK's key. Returns the certificate's `notAfter`.
    fn check_ek_cert(&self, der: &[u8], ek_spki: &[u8], now: i64) -> Result<i64, AttestError> {
        if der.len() > MAX_EK_CERT_LEN {
            return Err(malformed(format!("ek_cert is {} bytes, more than {MAX_EK_CERT_LEN}", der.len())));
        }
        let (rest, cert) =
            X509Certificate::from_der(der).map_err(|e| malformed(format!("ek_cert is not a DER certificate: {e}")))?;
        if !rest.is_empty() {
            return Err(malformed("ek_cert has bytes after the certificate"));
        }
        let leaf = CertFacts::from_cert(&cert).map_err(|e| malformed(format!("ek_cert: {e}")))?;
        if leaf.spki != ek_spki {
            return Err(refused("the EK certificate is for another key than ek_public"));
        }
        leaf.check_time(now, "the EK certificate")?;
        let mut child = &leaf;
        for depth in 0..MAX_CHAIN_DEPTH {
            let issuer = self.cas.iter().find(|ca| ca.facts.subject == child.issuer && child.signed_by(&ca.facts));
            let Some(issuer) = issuer else {
                if depth == 0 {
                    return Err(refused(format!(
                        "the EK certificate's issuer `{}` is not a CA in `ek_ca_dir` (or its signature does not verify)",
                        leaf.issuer_text
                    )));
                }
                let missing = !self.cas.iter().any(|ca| ca.facts.subject == child.issuer);
                if missing {
                    // The chain ends at a CA the operator put in the directory.
                    return Ok(leaf.not_after);
                }
                return Err(refused(format!(
                    "the CA `{}` in `ek_ca_dir` is not signed by its issuer `{}` from there",
                    child.subject_text, child.issuer_text
                )));
            };
            issuer.facts.check_time(now, &format!("the EK CA `{}`", issuer.path.display()))?;
            if issuer.facts.subject == issuer.facts.issuer {
                return Ok(leaf.not_after);
            }
            child = &issuer.facts;
        }
        Err(refused(format!("the EK certificate chain is longer than {MAX_CHAIN_DEPTH} CAs")))
    }
}

/// The EK public-key hash of a marshaled TPM2B_PUBLIC, lowercase hex: the
/// SHA-256 of the DER `SubjectPublicKeyInfo` of its public key, the form
/// `ek_hashes` lists and the `tpm:ek:sha256:` selector carries.
///
/// # Errors
/// [`AttestError::Malformed`] when `ek_public` does not parse.
pub fn ek_public_key_hash(ek_public: &[u8]) -> Result<String, AttestError> {
    let ek = Public::parse(ek_public, "ek_public")?;
    Ok(hex::encode(digest::digest(&digest::SHA256, &ek.key.spki())))
}

fn malformed(msg: impl Into<String>) -> AttestError {
    AttestError::Malformed(msg.into())
}

fn refused(msg: impl Into<String>) -> AttestError {
    AttestError::Refused(msg.into())
}

fn unavailable(msg: impl Into<String>) -> AttestError {
    AttestError::Unavailable(msg.into())
}

// ---------------------------------------------------------------------------
// TPM wire structures (TPM 2.0 Part 2), big-endian, every length checked.

/// TPM_ALG_ID values used here (Part 2 §6.3).
mod alg {
    pub(super) const RSA: u16 = 0x0001;
    pub(super) const KEYEDHASH: u16 = 0x0008;
    pub(super) const SHA256: u16 = 0x000B;
    pub(super) const NULL: u16 = 0x0010;
    pub(super) const AES: u16 = 0x0006;
    pub(super) const ECC: u16 = 0x0023;
    pub(super) const SYMCIPHER: u16 = 0x0025;
    pub(super) const CFB: u16 = 0x0043;
    pub(super) const XOR: u16 = 0x000A;
    pub(super) const ECDAA: u16 = 0x001A;
}

/// TPMA_OBJECT bits (Part 2 §8.3).
mod attr {
    pub(super) const FIXED_TPM: u32 = 1 << 1;
    pub(super) const FIXED_PARENT: u32 = 1 << 4;
    pub(super) const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    pub(super) const RESTRICTED: u32 = 1 << 16;
    pub(super) const DECRYPT: u32 = 1 << 17;
    pub(super) const SIGN: u32 = 1 << 18;
}

/// TPM_ECC_CURVE NIST P-256 (Part 2 §6.4).
const TPM_ECC_NIST_P256: u16 = 0x0003;

/// A cursor over marshaled TPM bytes: every read is checked, so a short
/// buffer is an error, never an out-of-bounds index.
struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, what }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], AttestError> {
        let (head, tail) = self
            .buf
            .split_at_checked(n)
            .ok_or_else(|| malformed(format!("{} is truncated (wanted {n} more bytes)", self.what)))?;
        self.buf = tail;
        Ok(head)
    }

    fn u16(&mut self) -> Result<u16, AttestError> {
        let b = self.take(2)?;
        let mut a = [0u8; 2];
        a.copy_from_slice(b);
        Ok(u16::from_be_bytes(a))
    }

    fn u32(&mut self) -> Result<u32, AttestError> {
        let b = self.take(4)?;
        let mut a = [0u8; 4];
        a.copy_from_slice(b);
        Ok(u32::from_be_bytes(a))
    }

    /// A TPM2B: a u16 size then that many bytes, at most `max`.
    fn tpm2b(&mut self, max: usize, field: &str) -> Result<&'a [u8], AttestError> {
        let n = usize::from(self.u16()?);
        if n > max {
            return Err(malformed(format!("{}: {field} is {n} bytes, more than {max}", self.what)));
        }
        self.take(n)
    }

    fn end(self) -> Result<(), AttestError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(malformed(format!("{} has {} bytes after its end", self.what, self.buf.len())))
        }
    }
}

/// A public key as a TPM holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PublicKey {
    /// An RSA key: the modulus (big-endian, as the TPM gives it) and the
    /// exponent (the TPM's 0 already turned into 65537).
    Rsa { modulus: Vec<u8>, exponent: u32 },
    /// An ECC key on a TPM curve, with its coordinates as given.
    Ecc { curve: u16, x: Vec<u8>, y: Vec<u8> },
    /// A symmetric or keyed-hash object: its `unique` digest.
    Other,
}

/// TPMT_SYM_DEF_OBJECT: the symmetric algorithm of a storage key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SymDef {
    alg: u16,
    key_bits: u16,
    mode: u16,
}

/// A parsed TPMT_PUBLIC, with the exact bytes it was parsed from (its Name
/// is a digest of them).
#[derive(Debug)]
struct Public<'a> {
    tpmt: &'a [u8],
    kind: u16,
    name_alg: u16,
    attributes: u32,
    symmetric: Option<SymDef>,
    /// RSA key size in bits, from the parameters.
    rsa_bits: u16,
    key: PublicKey,
}

impl<'a> Public<'a> {
    /// Parses a marshaled TPM2B_PUBLIC, all of `buf` and nothing else.
    fn parse(buf: &'a [u8], what: &'static str) -> Result<Self, AttestError> {
        if buf.len() > MAX_PUBLIC_LEN + 2 {
            return Err(malformed(format!("{what} is {} bytes, more than {}", buf.len(), MAX_PUBLIC_LEN + 2)));
        }
        let mut outer = Reader::new(buf, what);
        let tpmt = outer.tpm2b(MAX_PUBLIC_LEN, "TPMT_PUBLIC")?;
        outer.end()?;
        if tpmt.is_empty() {
            return Err(malformed(format!("{what} is empty")));
        }
        let mut r = Reader::new(tpmt, what);
        let kind = r.u16()?;
        let name_alg = r.u16()?;
        let attributes = r.u32()?;
        let _auth_policy = r.tpm2b(64, "authPolicy")?;
        let mut symmetric = None;
        let mut rsa_bits = 0;
        let key = match kind {
            alg::RSA => {
                symmetric = sym_def_object(&mut r)?;
                let scheme = r.u16()?;
                if scheme != alg::NULL {
                    // Every RSA scheme but RSAES (no details) names a hash.
                    if scheme != 0x0015 {
                        let _hash = r.u16()?;
                    }
                }
                rsa_bits = r.u16()?;
                let exponent = match r.u32()? {
                    0 => 65_537,
                    e => e,
                };
                let modulus = r.tpm2b(512, "RSA modulus")?.to_vec();
                PublicKey::Rsa { modulus, exponent }
            }
            alg::ECC => {
                symmetric = sym_def_object(&mut r)?;
                let scheme = r.u16()?;
                if scheme != alg::NULL {
                    let _hash = r.u16()?;
                    if scheme == alg::ECDAA {
                        let _count = r.u16()?;
                    }
                }
                let curve = r.u16()?;
                let kdf = r.u16()?;
                if kdf != alg::NULL {
                    let _hash = r.u16()?;
                }
                let x = r.tpm2b(128, "ECC x")?.to_vec();
                let y = r.tpm2b(128, "ECC y")?.to_vec();
                PublicKey::Ecc { curve, x, y }
            }
            alg::KEYEDHASH => {
                let scheme = r.u16()?;
                if scheme != alg::NULL {
                    let _hash = r.u16()?;
                    if scheme == alg::XOR {
                        let _kdf = r.u16()?;
                    }
                }
                let _unique = r.tpm2b(64, "unique")?;
                PublicKey::Other
            }
            alg::SYMCIPHER => {
                symmetric = sym_def_object(&mut r)?;
                let _unique = r.tpm2b(64, "unique")?;
                PublicKey::Other
            }
            other => return Err(malformed(format!("{what}: unknown object type 0x{other:04x}"))),
        };
        r.end()?;
        Ok(Self { tpmt, kind, name_alg, attributes, symmetric, rsa_bits, key })
    }

    fn has(&self, bits: u32) -> bool {
        self.attributes & bits == bits
    }

    /// The AK's Name, after checking it is an attestation key that cannot
    /// leave its TPM: nameAlg (SHA-256) then the digest of its TPMT_PUBLIC.
    fn ak_name(&self) -> Result<Vec<u8>, AttestError> {
        if !matches!(self.key, PublicKey::Rsa { .. } | PublicKey::Ecc { .. }) {
            return Err(refused("the AK is not an asymmetric key"));
        }
        if self.name_alg != alg::SHA256 {
            return Err(refused(format!("the AK's name algorithm is 0x{:04x}, not SHA-256", self.name_alg)));
        }
        let needed = attr::FIXED_TPM | attr::FIXED_PARENT | attr::SENSITIVE_DATA_ORIGIN | attr::RESTRICTED | attr::SIGN;
        if !self.has(needed) || self.has(attr::DECRYPT) {
            return Err(refused(format!(
                "the AK's attributes 0x{:08x} are not those of an attestation key (fixedTPM, fixedParent, sensitiveDataOrigin, restricted, sign; not decrypt)",
                self.attributes
            )));
        }
        let mut name = alg::SHA256.to_be_bytes().to_vec();
        name.extend_from_slice(digest::digest(&digest::SHA256, self.tpmt).as_ref());
        Ok(name)
    }
}

/// TPMT_SYM_DEF_OBJECT: an algorithm, then key bits and mode unless NULL.
fn sym_def_object(r: &mut Reader<'_>) -> Result<Option<SymDef>, AttestError> {
    let alg = r.u16()?;
    if alg == alg::NULL {
        return Ok(None);
    }
    let key_bits = r.u16()?;
    let mode = r.u16()?;
    Ok(Some(SymDef { alg, key_bits, mode }))
}

impl PublicKey {
    /// The DER `SubjectPublicKeyInfo` of the key, canonical (what
    /// `openssl pkey -pubin -outform DER` writes). Empty for non-asymmetric
    /// objects, which never get this far as an EK.
    fn spki(&self) -> Vec<u8> {
        match self {
            Self::Rsa { modulus, exponent } => rsa_spki(modulus, &exponent.to_be_bytes()),
            Self::Ecc { curve, x, y } => {
                let Some((oid, len)) = ecc_curve(*curve) else { return Vec::new() };
                let mut point = vec![0x04];
                point.extend(left_pad(x, len));
                point.extend(left_pad(y, len));
                ec_spki(oid, &point)
            }
            Self::Other => Vec::new(),
        }
    }
}

/// A curve's DER OID (content bytes) and coordinate length.
fn ecc_curve(curve: u16) -> Option<(&'static [u8], usize)> {
    match curve {
        // 1.2.840.10045.3.1.7
        TPM_ECC_NIST_P256 => Some((&[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07], 32)),
        // 1.3.132.0.34
        0x0004 => Some((&[0x2B, 0x81, 0x04, 0x00, 0x22], 48)),
        _ => None,
    }
}

/// `b` left-padded with zeros to `len` bytes (as is when already longer).
fn left_pad(b: &[u8], len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len.saturating_sub(b.len())];
    v.extend_from_slice(b);
    v
}

// ---------------------------------------------------------------------------
// A little DER, enough to write SubjectPublicKeyInfo.

fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        let significant = bytes.get(skip..).unwrap_or_default();
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(content);
    out
}

/// A DER INTEGER of an unsigned big-endian number: no leading zeros, and
/// one zero when the top bit is set.
fn der_uint(b: &[u8]) -> Vec<u8> {
    let skip = b.iter().take_while(|x| **x == 0).count();
    let trimmed = b.get(skip..).unwrap_or_default();
    let mut content = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.first().is_none_or(|x| x & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(trimmed);
    der_tlv(0x02, &content)
}

fn bit_string(b: &[u8]) -> Vec<u8> {
    let mut content = vec![0u8];
    content.extend_from_slice(b);
    der_tlv(0x03, &content)
}

/// rsaEncryption, 1.2.840.113549.1.1.1.
const OID_RSA_ENCRYPTION: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01];
/// id-ecPublicKey, 1.2.840.10045.2.1.
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];

fn rsa_spki(modulus: &[u8], exponent: &[u8]) -> Vec<u8> {
    let mut alg = der_tlv(0x06, OID_RSA_ENCRYPTION);
    alg.extend_from_slice(&[0x05, 0x00]);
    let mut rsa_key = der_uint(modulus);
    rsa_key.extend(der_uint(exponent));
    let mut spki = der_tlv(0x30, &alg);
    spki.extend(bit_string(&der_tlv(0x30, &rsa_key)));
    der_tlv(0x30, &spki)
}

fn ec_spki(curve_oid: &[u8], point: &[u8]) -> Vec<u8> {
    let mut alg = der_tlv(0x06, OID_EC_PUBLIC_KEY);
    alg.extend(der_tlv(0x06, curve_oid));
    let mut spki = der_tlv(0x30, &alg);
    spki.extend(bit_string(point));
    der_tlv(0x30, &spki)
}

// ---------------------------------------------------------------------------
// The EK and MakeCredential (Part 1 §24, Part 3 §12.6).

/// An EK the server can make a credential for.
struct EkKey {
    rsa: OaepPublicEncryptingKey,
    sym: SymDef,
}

impl EkKey {
    /// Checks the EK is a restricted decryption key of a supported kind.
    fn from_public(ek: &Public<'_>) -> Result<Self, AttestError> {
        if ek.kind == alg::ECC {
            return Err(refused("ECC endorsement keys are not supported yet; use the TPM's RSA 2048 EK"));
        }
        let PublicKey::Rsa { modulus, exponent } = &ek.key else {
            return Err(refused("the EK is not an RSA key"));
        };
        if ek.name_alg != alg::SHA256 {
            return Err(refused(format!("the EK's name algorithm is 0x{:04x}, not SHA-256", ek.name_alg)));
        }
        if !ek.has(attr::RESTRICTED | attr::DECRYPT | attr::FIXED_TPM | attr::FIXED_PARENT) || ek.has(attr::SIGN) {
            return Err(refused(format!(
                "the EK's attributes 0x{:08x} are not those of an endorsement key (fixedTPM, fixedParent, restricted, decrypt; not sign)",
                ek.attributes
            )));
        }
        let sym = match ek.symmetric {
            Some(s) if s.alg == alg::AES && s.mode == alg::CFB && matches!(s.key_bits, 128 | 256) => s,
            _ => return Err(refused("the EK's symmetric algorithm is not AES-128-CFB or AES-256-CFB")),
        };
        if !matches!(ek.rsa_bits, 2048 | 3072 | 4096) || modulus.len() != usize::from(ek.rsa_bits / 8) {
            return Err(refused(format!(
                "the EK's RSA key is {} bits with a {}-byte modulus; expected 2048, 3072 or 4096 bits",
                ek.rsa_bits,
                modulus.len()
            )));
        }
        let key = PublicEncryptingKey::from_der(&rsa_spki(modulus, &exponent.to_be_bytes()))
            .map_err(|e| refused(format!("the EK's RSA key is not usable: {e}")))?;
        let rsa = OaepPublicEncryptingKey::new(key).map_err(|_| refused("the EK's RSA key is not usable for OAEP"))?;
        Ok(Self { rsa, sym })
    }

    /// TPM2_MakeCredential in software: `credential` wrapped for this EK and
    /// bound to `name`.
    fn make_credential(&self, name: &[u8], credential: &[u8]) -> Result<TpmChallenge, AttestError> {
        let internal = |what: &str| unavailable(format!("making the TPM credential: {what} failed"));

        // The seed, as large as the EK's name digest, encrypted to the EK
        // with OAEP and the label "IDENTITY" (its terminating zero included,
        // Part 1 §11.4.10.2 / B.10.3).
        let mut seed = [0u8; 32];
        rand::fill(&mut seed).map_err(|_| internal("randomness"))?;
        let mut encrypted = vec![0u8; self.rsa.ciphertext_size()];
        let encrypted = self
            .rsa
            .encrypt(&OAEP_SHA256_MGF1SHA256, &seed, &mut encrypted, Some(b"IDENTITY\0"))
            .map_err(|_| internal("RSA-OAEP"))?
            .to_vec();

        // Part 1 §24.4: symKey = KDFa(nameAlg, seed, "STORAGE", name, "", bits).
        let sym_key =
            kdf_a(&seed, b"STORAGE", name, &[], usize::from(self.sym.key_bits / 8)).ok_or_else(|| internal("KDFa"))?;
        let cipher = if self.sym.key_bits == 128 { &AES_128 } else { &AES_256 };
        let key = UnboundCipherKey::new(cipher, &sym_key).map_err(|_| internal("the AES key"))?;
        let mut enc =
            StreamingEncryptingKey::less_safe_cfb128(key, EncryptionContext::Iv128(FixedLength::from([0u8; 16])))
                .map_err(|_| internal("AES-CFB"))?;
        // The credential is encrypted as a TPM2B_DIGEST, zero IV (§24.4).
        let mut plain =
            u16::try_from(credential.len()).map_err(|_| internal("the credential size"))?.to_be_bytes().to_vec();
        plain.extend_from_slice(credential);
        let mut enc_identity = vec![0u8; plain.len() + 16];
        let n = enc.update(&plain, &mut enc_identity).map_err(|_| internal("AES-CFB"))?.written().len();
        let mut tail = [0u8; 16];
        let (_, fin) = enc.finish(&mut tail).map_err(|_| internal("AES-CFB"))?;
        let tail_len = fin.written().len();
        enc_identity.truncate(n);
        enc_identity.extend_from_slice(tail.get(..tail_len).unwrap_or_default());
        if enc_identity.len() != plain.len() {
            return Err(internal("AES-CFB length"));
        }

        // Part 1 §24.5: outerHMAC = HMAC(KDFa(nameAlg, seed, "INTEGRITY", "", "", digest bits), encIdentity || name).
        let hmac_key = kdf_a(&seed, b"INTEGRITY", &[], &[], 32).ok_or_else(|| internal("KDFa"))?;
        let mut ctx = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, &hmac_key));
        ctx.update(&enc_identity);
        ctx.update(name);
        let outer_hmac = ctx.sign();

        // TPM2B_ID_OBJECT: TPM2B_DIGEST integrityHMAC, then encIdentity (no size of its own).
        let mut id_object = tpm2b(outer_hmac.as_ref());
        id_object.extend_from_slice(&enc_identity);
        Ok(TpmChallenge { id_object: tpm2b(&id_object), encrypted_secret: tpm2b(&encrypted) })
    }
}

/// `b` with its u16 size in front. Every caller's buffer is far under 64 KiB.
fn tpm2b(b: &[u8]) -> Vec<u8> {
    let mut out = u16::try_from(b.len()).unwrap_or(u16::MAX).to_be_bytes().to_vec();
    out.extend_from_slice(b);
    out
}

/// KDFa with SHA-256 (Part 1 §11.4.10.2): counter-mode HMAC over
/// `i || label || 0 || context_u || context_v || bits`, cut to `len` bytes.
fn kdf_a(key: &[u8], label: &[u8], context_u: &[u8], context_v: &[u8], len: usize) -> Option<Vec<u8>> {
    let bits = u32::try_from(len.checked_mul(8)?).ok()?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut out = Vec::with_capacity(len + 32);
    let mut counter: u32 = 1;
    while out.len() < len {
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(&counter.to_be_bytes());
        ctx.update(label);
        ctx.update(&[0]);
        ctx.update(context_u);
        ctx.update(context_v);
        ctx.update(&bits.to_be_bytes());
        out.extend_from_slice(ctx.sign().as_ref());
        counter = counter.checked_add(1)?;
    }
    out.truncate(len);
    Some(out)
}

// ---------------------------------------------------------------------------
// EK certificates and their CAs.

/// A CA certificate from `ek_ca_dir`.
#[derive(Debug)]
struct CaCert {
    path: PathBuf,
    facts: CertFacts,
}

/// What the chain check needs from a certificate, owned.
#[derive(Debug)]
struct CertFacts {
    subject: Vec<u8>,
    issuer: Vec<u8>,
    subject_text: String,
    issuer_text: String,
    not_before: i64,
    not_after: i64,
    /// The canonical SubjectPublicKeyInfo (for comparing with the EK).
    spki: Vec<u8>,
    key: VerifyKey,
    tbs: Vec<u8>,
    sig_alg: String,
    signature: Vec<u8>,
}

/// A public key that can check a certificate signature.
#[derive(Debug)]
enum VerifyKey {
    /// RSAPublicKey DER.
    Rsa(Vec<u8>),
    /// An uncompressed point on P-256 (`false`) or P-384 (`true`).
    Ec {
        p384: bool,
        point: Vec<u8>,
    },
    Unsupported,
}

impl CertFacts {
    fn from_cert(cert: &X509Certificate<'_>) -> Result<Self, String> {
        let spki = cert.public_key();
        let alg = spki.algorithm.algorithm.to_id_string();
        let key_bytes: &[u8] = &spki.subject_public_key.data;
        let (key, canonical) = match alg.as_str() {
            // rsaEncryption, or id-RSAES-OAEP as some EK certificates say.
            "1.2.840.113549.1.1.1" | "1.2.840.113549.1.1.7" => {
                let (_, rsa) =
                    RSAPublicKey::from_der(key_bytes).map_err(|_| "the RSA public key does not parse".to_owned())?;
                (VerifyKey::Rsa(key_bytes.to_vec()), rsa_spki(rsa.modulus, rsa.exponent))
            }
            "1.2.840.10045.2.1" => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())
                    .map(|o| o.to_id_string())
                    .unwrap_or_default();
                let (p384, oid): (bool, &[u8]) = match curve.as_str() {
                    "1.2.840.10045.3.1.7" => (false, &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07]),
                    "1.3.132.0.34" => (true, &[0x2B, 0x81, 0x04, 0x00, 0x22]),
                    _ => return Err(format!("EC curve `{curve}` is not supported")),
                };
                (VerifyKey::Ec { p384, point: key_bytes.to_vec() }, ec_spki(oid, key_bytes))
            }
            _ => (VerifyKey::Unsupported, spki.raw.to_vec()),
        };
        if cert.signature_algorithm.algorithm != cert.tbs_certificate.signature.algorithm {
            return Err("the signature algorithm differs inside and outside the signed part".into());
        }
        Ok(Self {
            subject: cert.subject().as_raw().to_vec(),
            issuer: cert.issuer().as_raw().to_vec(),
            subject_text: cert.subject().to_string(),
            issuer_text: cert.issuer().to_string(),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            spki: canonical,
            key,
            tbs: cert.tbs_certificate.as_ref().to_vec(),
            sig_alg: cert.signature_algorithm.algorithm.to_id_string(),
            signature: cert.signature_value.data.to_vec(),
        })
    }

    fn check_time(&self, now: i64, what: &str) -> Result<(), AttestError> {
        if now < self.not_before {
            return Err(refused(format!("{what} is not valid yet (notBefore {})", self.not_before)));
        }
        if now > self.not_after {
            return Err(refused(format!("{what} has expired (notAfter {})", self.not_after)));
        }
        Ok(())
    }

    /// Whether `issuer`'s key verifies this certificate's signature.
    fn signed_by(&self, issuer: &CertFacts) -> bool {
        let alg: &'static dyn signature::VerificationAlgorithm = match (self.sig_alg.as_str(), &issuer.key) {
            ("1.2.840.113549.1.1.11", VerifyKey::Rsa(_)) => &signature::RSA_PKCS1_2048_8192_SHA256,
            ("1.2.840.113549.1.1.12", VerifyKey::Rsa(_)) => &signature::RSA_PKCS1_2048_8192_SHA384,
            ("1.2.840.113549.1.1.13", VerifyKey::Rsa(_)) => &signature::RSA_PKCS1_2048_8192_SHA512,
            ("1.2.840.10045.4.3.2", VerifyKey::Ec { p384: false, .. }) => &signature::ECDSA_P256_SHA256_ASN1,
            ("1.2.840.10045.4.3.2", VerifyKey::Ec { p384: true, .. }) => &signature::ECDSA_P384_SHA256_ASN1,
            ("1.2.840.10045.4.3.3", VerifyKey::Ec { p384: false, .. }) => &signature::ECDSA_P256_SHA384_ASN1,
            ("1.2.840.10045.4.3.3", VerifyKey::Ec { p384: true, .. }) => &signature::ECDSA_P384_SHA384_ASN1,
            _ => return false,
        };
        let key = match &issuer.key {
            VerifyKey::Rsa(k) => k,
            VerifyKey::Ec { point, .. } => point,
            VerifyKey::Unsupported => return false,
        };
        signature::UnparsedPublicKey::new(alg, key).verify(&self.tbs, &self.signature).is_ok()
    }
}

/// Loads every certificate of `dir` (PEM, possibly several per file, or
/// DER); each must be a CA certificate.
fn load_ca_dir(dir: &Path) -> Result<Vec<CaCert>, String> {
    let shown = dir.display();
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("tpm node attestor: cannot read `ek_ca_dir` `{shown}`: {e}"))?;
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("tpm node attestor: cannot read `ek_ca_dir` `{shown}`: {e}"))?;
        let path = entry.path();
        if path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    let mut cas = Vec::new();
    for path in paths {
        let p = path.display();
        let bytes = std::fs::read(&path).map_err(|e| format!("tpm node attestor: cannot read `{p}`: {e}"))?;
        let ders: Vec<Vec<u8>> = if bytes.starts_with(b"-----") || bytes.windows(11).any(|w| w == b"-----BEGIN ") {
            let mut ders = Vec::new();
            for pem in x509_parser::pem::Pem::iter_from_buffer(&bytes) {
                let pem = pem.map_err(|e| format!("tpm node attestor: `{p}` is not valid PEM: {e}"))?;
                if pem.label == "CERTIFICATE" {
                    ders.push(pem.contents);
                }
            }
            ders
        } else {
            vec![bytes]
        };
        for der in ders {
            let (_, cert) = X509Certificate::from_der(&der)
                .map_err(|e| format!("tpm node attestor: `{p}` holds something that is not a certificate: {e}"))?;
            if !cert.is_ca() {
                return Err(format!(
                    "tpm node attestor: `{p}` is not a CA certificate (basicConstraints cA is not set)"
                ));
            }
            let facts = CertFacts::from_cert(&cert).map_err(|e| format!("tpm node attestor: `{p}`: {e}"))?;
            if matches!(facts.key, VerifyKey::Unsupported) {
                return Err(format!(
                    "tpm node attestor: `{p}`: the CA key type is not supported (RSA, P-256, P-384 are)"
                ));
            }
            cas.push(CaCert { path: path.clone(), facts });
        }
    }
    if cas.is_empty() {
        return Err(format!("tpm node attestor: `ek_ca_dir` `{shown}` holds no certificate"));
    }
    Ok(cas)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer as _;

    /// A TPMT_PUBLIC as the RSA EK template L-1 gives it, with `modulus`.
    fn rsa_tpmt(attributes: u32, modulus: &[u8]) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend(alg::RSA.to_be_bytes());
        t.extend(alg::SHA256.to_be_bytes());
        t.extend(attributes.to_be_bytes());
        t.extend(tpm2b(&[0x11; 32]));
        t.extend(alg::AES.to_be_bytes());
        t.extend(128u16.to_be_bytes());
        t.extend(alg::CFB.to_be_bytes());
        t.extend(alg::NULL.to_be_bytes());
        t.extend(2048u16.to_be_bytes());
        t.extend(0u32.to_be_bytes());
        t.extend(tpm2b(modulus));
        t
    }

    const EK_ATTRS: u32 = attr::FIXED_TPM
        | attr::FIXED_PARENT
        | attr::SENSITIVE_DATA_ORIGIN
        | (1 << 7)
        | attr::RESTRICTED
        | attr::DECRYPT;

    /// A real RSA 2048 modulus (aws-lc-rs makes the key).
    fn modulus() -> Vec<u8> {
        let key = aws_lc_rs::rsa::PrivateDecryptingKey::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let spki = key.public_key().as_der().unwrap();
        let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki.as_ref()).unwrap();
        let x509_parser::public_key::PublicKey::RSA(rsa) = spki.parsed().unwrap() else { panic!("not RSA") };
        rsa.modulus.iter().skip_while(|b| **b == 0).copied().collect()
    }

    fn ak_public() -> Vec<u8> {
        let mut t = Vec::new();
        t.extend(alg::ECC.to_be_bytes());
        t.extend(alg::SHA256.to_be_bytes());
        t.extend(
            (attr::FIXED_TPM | attr::FIXED_PARENT | attr::SENSITIVE_DATA_ORIGIN | attr::RESTRICTED | attr::SIGN)
                .to_be_bytes(),
        );
        t.extend(tpm2b(&[]));
        t.extend(alg::NULL.to_be_bytes());
        t.extend(0x0018u16.to_be_bytes()); // ECDSA
        t.extend(alg::SHA256.to_be_bytes());
        t.extend(TPM_ECC_NIST_P256.to_be_bytes());
        t.extend(alg::NULL.to_be_bytes());
        t.extend(tpm2b(&[1; 32]));
        t.extend(tpm2b(&[2; 32]));
        tpm2b(&t)
    }

    fn evidence(ek_public: Vec<u8>) -> TpmEvidence {
        TpmEvidence { ek_cert: Vec::new(), ek_public, ak_public: ak_public() }
    }

    fn verifier_for(hash: &str) -> TpmVerifier {
        TpmVerifier::new(&TpmAttestorConfig { ek_ca_dir: None, ek_hashes: vec![hash.to_owned()] }).unwrap()
    }

    #[test]
    fn kdf_a_matches_a_known_answer() {
        // One block: HMAC-SHA256 of 00000001 "TEST" 00 "U" "V" 00000100.
        let key = [0x0b; 32];
        let out = kdf_a(&key, b"TEST", b"U", b"V", 32).unwrap();
        let mut ctx = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, &key));
        ctx.update(&[0, 0, 0, 1]);
        ctx.update(b"TEST\0UV");
        ctx.update(&256u32.to_be_bytes());
        assert_eq!(out, ctx.sign().as_ref());
        // The length is part of the input: a shorter key is not a prefix.
        let short = kdf_a(&key, b"TEST", b"U", b"V", 16).unwrap();
        assert_eq!(short.len(), 16);
        assert_ne!(short, out[..16]);
    }

    #[test]
    fn spki_matches_aws_lc_for_rsa() {
        let key = aws_lc_rs::rsa::PrivateDecryptingKey::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let der = key.public_key().as_der().unwrap();
        let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(der.as_ref()).unwrap();
        let x509_parser::public_key::PublicKey::RSA(rsa) = spki.parsed().unwrap() else { panic!("not RSA") };
        let ours = PublicKey::Rsa { modulus: rsa.modulus.to_vec(), exponent: 65_537 }.spki();
        assert_eq!(ours, der.as_ref());
    }

    #[test]
    fn allow_list_accepts_and_answer_is_checked() {
        let ek_public = tpm2b(&rsa_tpmt(EK_ATTRS, &modulus()));
        let hash = ek_public_key_hash(&ek_public).unwrap();
        let v = verifier_for(&hash);
        let (challenge, pending) = v.begin(&evidence(ek_public.clone()), 0).unwrap();
        let mut r = Reader::new(&challenge.id_object, "id_object");
        let inner = r.tpm2b(1024, "x").unwrap();
        r.end().unwrap();
        // integrityHMAC (2 + 32) then the encrypted TPM2B_DIGEST (2 + 32).
        assert_eq!(inner.len(), 34 + 34);
        assert_eq!(challenge.encrypted_secret.len(), 2 + 256);
        let secret = pending.secret;
        let proof = v.finish(pending, &secret).unwrap();
        assert_eq!(proof.attestor, "tpm");
        assert_eq!(proof.agent_path, vec!["tpm".to_owned(), hash.clone()]);
        assert_eq!(proof.selectors, vec![format!("tpm:ek:sha256:{hash}")]);
        assert_eq!(proof.evidence_expires_at, None);

        let (_, pending) = v.begin(&evidence(ek_public.clone()), 0).unwrap();
        let mut wrong = pending.secret;
        wrong[0] ^= 1;
        assert!(matches!(v.finish(pending, &wrong), Err(AttestError::Refused(_))));
        let (_, pending) = v.begin(&evidence(ek_public), 0).unwrap();
        assert!(matches!(v.finish(pending, &[]), Err(AttestError::Refused(_))));
    }

    #[test]
    fn an_ek_not_listed_is_challenged_and_then_refused_as_untrusted() {
        let ek_public = tpm2b(&rsa_tpmt(EK_ATTRS, &modulus()));
        let v = verifier_for(&"00".repeat(32));
        // Challenged (only the TPM holding the EK can answer: the swtpm test
        // answers), and a wrong answer is refused as any other.
        let (_, pending) = v.begin(&evidence(ek_public), 0).unwrap();
        assert!(matches!(v.finish(pending, &[0; 32]), Err(AttestError::Refused(_))));
    }

    #[test]
    fn an_ak_that_can_leave_its_tpm_is_refused() {
        let ek_public = tpm2b(&rsa_tpmt(EK_ATTRS, &modulus()));
        let v = verifier_for(&ek_public_key_hash(&ek_public).unwrap());
        // The EK itself as the AK: a decryption key, not an attestation key.
        let ev = TpmEvidence { ek_cert: Vec::new(), ek_public: ek_public.clone(), ak_public: ek_public };
        assert!(matches!(v.begin(&ev, 0), Err(AttestError::Refused(_))));
    }

    #[test]
    fn an_ecc_ek_is_refused_clearly() {
        let mut ak = ak_public();
        // The AK's shape with EK attributes.
        let attrs = EK_ATTRS.to_be_bytes();
        ak.splice(6..10, attrs);
        let v = verifier_for(&ek_public_key_hash(&ak).unwrap());
        let Err(AttestError::Refused(msg)) = v.begin(&evidence(ak), 0) else { panic!("not refused") };
        assert!(msg.contains("ECC"), "{msg}");
    }

    #[test]
    fn malformed_publics_are_malformed() {
        let good = tpm2b(&rsa_tpmt(EK_ATTRS, &modulus()));
        let mut cases: Vec<Vec<u8>> = vec![
            Vec::new(),
            vec![0],
            vec![0, 0],
            vec![0xff, 0xff],
            good.get(..good.len() - 1).unwrap().to_vec(),
            [good.clone(), vec![0]].concat(),
            vec![0u8; 5000],
        ];
        // Wrong outer size, an unknown type, a modulus length past the end.
        let mut wrong_size = good.clone();
        wrong_size[1] = wrong_size[1].wrapping_add(1);
        cases.push(wrong_size);
        let mut wrong_type = good.clone();
        wrong_type[3] = 0x77;
        cases.push(wrong_type);
        let mut long_modulus = good.clone();
        let at = good.len() - 258;
        long_modulus[at] = 0x02;
        cases.push(long_modulus);
        for (i, case) in cases.into_iter().enumerate() {
            assert!(matches!(ek_public_key_hash(&case), Err(AttestError::Malformed(_))), "case {i}");
        }
        // Every truncation of a good public area is malformed, never a panic.
        for n in 0..good.len() {
            let cut = good.get(..n).unwrap();
            assert!(Public::parse(cut, "x").is_err(), "cut at {n}");
        }
    }

    #[test]
    fn ak_name_matches_the_tpms() {
        // An AK made by `tpm2_createak -G rsa -g sha256 -s rsassa` on swtpm,
        // and the Name the TPM gave it.
        let ak = hex::decode(concat!(
            "01180001000b00050072000000100014000b0800000000000100ae94ab7309564d0782196f934289d4e3d1e4834e75248078",
            "1def06ebf70c2cf88ed9f0e0cde4e6a2c2dfff016c90d17cbc5cda0372985205ab75e4e90ed7347d7b67d3df9646405998bf",
            "e85161f4a250b56a7063297bcc07cab0d786eb9e3db97eb3bf8e29ac4c6e2103ea8b2f125e73c8afa84b5b3c8bbe35d79df3",
            "56769430f6dc1ee62714e8dd9346d6e5f54b65148045442ec3df202843f2d2e8d8f0dd3378415ec750994cc3e1a4ba487845",
            "6285cfa56debafe851e0289de383d3de13d9dd72c1131c069f0e12d00aad54e75589aa8589e141f65a7c21b1cf4429d1cd0e",
            "7ca76690e297f05cfbfd324219a033d2d7370162dbc0e2bcf1265287638aa235",
        ))
        .unwrap();
        let name = Public::parse(&ak, "ak_public").unwrap().ak_name().unwrap();
        assert_eq!(hex::encode(name), "000b995c8839d4c4546e8d49cf2e707eb57502b124a894d9156c87f06ed159e20339");
    }

    #[test]
    fn config_needs_a_way_to_trust() {
        let err = TpmVerifier::new(&TpmAttestorConfig::default()).unwrap_err();
        assert!(err.contains("ek_ca_dir"), "{err}");
        let err = TpmVerifier::new(&TpmAttestorConfig { ek_ca_dir: None, ek_hashes: vec!["xyz".into()] }).unwrap_err();
        assert!(err.contains("`xyz`"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let err =
            TpmVerifier::new(&TpmAttestorConfig { ek_ca_dir: Some(dir.path().into()), ek_hashes: vec![] }).unwrap_err();
        assert!(err.contains("no certificate"), "{err}");
        let err =
            TpmVerifier::new(&TpmAttestorConfig { ek_ca_dir: Some(dir.path().join("missing")), ek_hashes: vec![] })
                .unwrap_err();
        assert!(err.contains("cannot read"), "{err}");
        let cfg: TpmAttestorConfig = toml::from_str("ek_hashes = []\nek_ca_dir = \"/x\"").unwrap();
        assert_eq!(cfg.ek_ca_dir.as_deref(), Some(Path::new("/x")));
        assert!(toml::from_str::<TpmAttestorConfig>("ek_hash = []").is_err());
    }
}
