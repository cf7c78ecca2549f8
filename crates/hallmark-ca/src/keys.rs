//! Workload keys, CSRs, and files that hold secrets.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hallmark_core::SpiffeId;
use rcgen::{CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};

use crate::CaError;

/// Why a file holding a secret (a key, a token) could not be read or
/// written. Every variant names the file; none holds its contents.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretFileError {
    /// The file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The file belongs to another user.
    #[error(
        "{}: belongs to uid {owner}, not to this user (uid {me}); a file holding a private key or token must be this user's",
        path.display()
    )]
    NotOwned {
        /// The file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The running user.
        me: u32,
    },
    /// Group or others may read the file.
    #[error(
        "{}: has mode {mode:o}; a file holding a private key or token must not be readable by group or others (chmod 600)",
        path.display()
    )]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

impl SecretFileError {
    /// The file concerned.
    pub fn path(&self) -> &Path {
        match self {
            Self::Io { path, .. } | Self::NotOwned { path, .. } | Self::Exposed { path, .. } => path,
        }
    }
}

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
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CaError::x509("generate a workload key"))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    if let Some(id) = id {
        let uri = id.as_str().try_into().map_err(|source| CaError::NotIa5 {
            what: "SPIFFE ID",
            value: id.to_string(),
            source,
        })?;
        params.subject_alt_names = vec![SanType::URI(uri)];
    }
    let csr = params.serialize_request(&key).map_err(CaError::x509("build the CSR"))?;
    Ok(KeyAndCsr { key_pkcs8: key.serialize_der(), csr_der: csr.der().to_vec() })
}

/// Writes `bytes` to `path` with mode 0600, atomically (write a temporary file, then rename).
pub fn write_secret_file(path: &Path, bytes: &[u8]) -> Result<(), SecretFileError> {
    let io = |source| SecretFileError::Io { path: path.to_owned(), source };
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)
}

/// Reads a file that holds a secret, refusing it if group or others may read it.
pub fn read_secret_file(path: &Path) -> Result<Vec<u8>, SecretFileError> {
    let io = |source| SecretFileError::Io { path: path.to_owned(), source };
    let meta = std::fs::metadata(path).map_err(io)?;
    check_private_mode(path, &meta)?;
    std::fs::read(path).map_err(io)
}

/// Refuses a secret file that group or others may read, before anything
/// starts; a file that does not exist is not refused here.
pub fn refuse_exposed_secret_file(path: &Path) -> Result<(), SecretFileError> {
    match std::fs::metadata(path) {
        Ok(meta) => check_private_mode(path, &meta),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(SecretFileError::Io { path: path.to_owned(), source }),
    }
}

/// Refuses a data or key directory (or a file in one) that another user
/// could have prepared or can change, the way OpenSSH's StrictModes does:
///
/// - the path itself, when it exists, must belong to the running user and
///   not be writable by group or others;
/// - every directory above it must belong to root or the running user and
///   not be writable by group or others, except a root-owned sticky
///   directory such as `/tmp` (where others cannot rename or remove what is
///   ours).
///
/// Otherwise a user who pre-created the directory (or can write a parent)
/// could replace what Hallmark later reads or sources: keys, the database,
/// the env file.
pub fn check_trusted_path(path: &Path) -> Result<(), CaError> {
    let me = nix::unistd::geteuid().as_raw();
    let unsafe_path = |p: &Path, why: String| CaError::UnsafePath(format!("{}: {why}", p.display()));
    let absolute =
        std::path::absolute(path).map_err(|source| CaError::Io { path: path.display().to_string(), source })?;
    // The path itself, then each existing directory above it (a path not
    // created yet is judged by where it will be created).
    // `own` holds while looking at the path itself; once a component is
    // missing, the first existing directory is where it will be created: a
    // parent (so `/tmp/new` is judged by `/tmp`'s sticky-root rule).
    let mut own = true;
    for p in absolute.ancestors() {
        let meta = match std::fs::metadata(p) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && own => {
                own = false;
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(CaError::Io { path: p.display().to_string(), source }),
        };
        let mode = meta.permissions().mode();
        let writable_by_others = mode & 0o022 != 0;
        if own {
            if meta.uid() != me {
                return Err(unsafe_path(
                    p,
                    format!(
                        "belongs to uid {}, not to this user (uid {me}); a data or key directory must be this user's",
                        meta.uid()
                    ),
                ));
            }
            if writable_by_others {
                return Err(unsafe_path(
                    p,
                    format!("mode {:o} lets group or others write it (chmod go-w)", mode & 0o7777),
                ));
            }
            own = false;
            continue;
        }
        if meta.uid() != 0 && meta.uid() != me {
            return Err(unsafe_path(
                p,
                format!(
                    "a parent directory belongs to uid {}: only root or this user (uid {me}) may own it",
                    meta.uid()
                ),
            ));
        }
        let sticky_root = mode & 0o1000 != 0 && meta.uid() == 0;
        if writable_by_others && !sticky_root {
            return Err(unsafe_path(
                p,
                format!("a parent directory with mode {:o} lets group or others write it (chmod go-w)", mode & 0o7777),
            ));
        }
    }
    Ok(())
}

fn check_private_mode(path: &Path, meta: &std::fs::Metadata) -> Result<(), SecretFileError> {
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(SecretFileError::NotOwned { path: path.to_owned(), owner: meta.uid(), me });
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretFileError::Exposed { path: path.to_owned(), mode });
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

    #[test]
    fn trusted_paths_follow_strict_modes() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("data");
        // Not created yet: judged by its parents (the tempdir, under /tmp).
        check_trusted_path(&dir).unwrap();
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        check_trusted_path(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).unwrap();
        check_trusted_path(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = check_trusted_path(&dir).unwrap_err().to_string();
        assert!(err.contains("777") && err.contains("go-w"), "{err}");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        // A parent others may write (without the sticky bit of /tmp).
        std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = check_trusted_path(&dir.join("keys")).unwrap_err().to_string();
        assert!(err.contains("parent") && err.contains("777"), "{err}");
        std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        if nix::unistd::geteuid().is_root() {
            // Root owns the sticky tempdir here: accepted, like /tmp, and so
            // is a directory not created yet right under it (`/tmp/new`).
            check_trusted_path(&dir).unwrap();
            check_trusted_path(&base.path().join("new").join("keys")).unwrap();
            // A directory another user owns.
            let theirs = base.path().join("theirs");
            std::fs::create_dir(&theirs).unwrap();
            std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
            let err = check_trusted_path(&theirs).unwrap_err().to_string();
            assert!(err.contains("uid 65534"), "{err}");
            let err = check_trusted_path(&theirs.join("data")).unwrap_err().to_string();
            assert!(err.contains("uid 65534"), "{err}");
            let key = dir.join("k");
            write_secret_file(&key, b"x").unwrap();
            std::os::unix::fs::chown(&key, Some(65534), None).unwrap();
            assert!(read_secret_file(&key).unwrap_err().to_string().contains("uid 65534"));
        }
    }
}
