//! Workload keys, CSRs, and files that hold secrets.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use hallmark_core::SpiffeId;
use rcgen::{CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};

use crate::CaError;

/// A freshly generated EC P-256 key (PKCS#8 DER) and a CSR for `id` signed by it.
pub struct KeyAndCsr {
    /// The private key, PKCS#8 DER. Never logged.
    pub key_pkcs8: Vec<u8>,
    /// The PKCS#10 request, DER, carrying the requested ID (if any) as its only URI SAN.
    pub csr_der: Vec<u8>,
}

impl std::fmt::Debug for KeyAndCsr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyAndCsr").field("key_pkcs8", &"<redacted>").finish_non_exhaustive()
    }
}

/// Generates an EC P-256 key locally and a CSR asking for `id`, or for no
/// identity at all when the server assigns it (node attestation).
pub fn new_key_and_csr(id: Option<&SpiffeId>) -> Result<KeyAndCsr, CaError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| CaError::Key(e.to_string()))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    if let Some(id) = id {
        let uri = id.as_str().try_into().map_err(|_| CaError::Cert(format!("`{id}` is not an IA5 string")))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
    }
    let csr = params.serialize_request(&key)?;
    Ok(KeyAndCsr { key_pkcs8: key.serialize_der(), csr_der: csr.der().to_vec() })
}

/// Writes `bytes` to `path` with mode 0600, atomically (write a temporary file, then rename).
pub fn write_secret_file(path: &Path, bytes: &[u8]) -> Result<(), CaError> {
    let io = |source| CaError::Io { path: path.display().to_string(), source };
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)
}

/// Reads a file that holds a secret, refusing it if group or others may read it.
pub fn read_secret_file(path: &Path) -> Result<Vec<u8>, CaError> {
    let io = |source| CaError::Io { path: path.display().to_string(), source };
    let meta = std::fs::metadata(path).map_err(io)?;
    check_private_mode(path, &meta)?;
    std::fs::read(path).map_err(io)
}

/// Refuses a secret file that group or others may read, before anything
/// starts; a file that does not exist is not refused here.
pub fn refuse_exposed_secret_file(path: &Path) -> Result<(), CaError> {
    match std::fs::metadata(path) {
        Ok(meta) => check_private_mode(path, &meta),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(CaError::Io { path: path.display().to_string(), source }),
    }
}

fn check_private_mode(path: &Path, meta: &std::fs::Metadata) -> Result<(), CaError> {
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(CaError::Key(format!(
            "{}: has mode {mode:o}; a file holding a private key or token must not be readable by group or others (chmod 600)",
            path.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_files_are_0600_and_refused_when_open() {
        let dir = std::env::temp_dir().join(format!("hallmark-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("k.pem");
        write_secret_file(&p, b"secret").unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(read_secret_file(&p).unwrap(), b"secret");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_secret_file(&p).unwrap_err().to_string();
        assert!(err.contains("644") && !err.contains("secret\""), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
