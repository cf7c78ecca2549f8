//! Writing credential files so that a reader never sees half of one: each
//! file is written in full to a temporary file in the same directory (with
//! its final mode from the moment it exists), flushed to disk, and renamed
//! over the old one; then the directory itself is flushed. A rename within
//! one directory is atomic, so a reader opens either the old file or the new.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;

/// Mode of files holding a private key or a bearer token.
pub const SECRET_MODE: u32 = 0o600;
/// Mode of files holding only certificates.
pub const PUBLIC_MODE: u32 = 0o644;

/// Writes `bytes` to `dir/name` atomically with `mode`.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let path = dir.join(name);
    // Hidden, per process, and never one of the names the helper writes.
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

/// Removes `dir/name`; a file already gone is not an error.
pub fn remove(dir: &Path, name: &str) -> anyhow::Result<()> {
    let path = dir.join(name);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn files_are_replaced_whole_with_their_mode() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(dir.path(), "svid.key", b"one", SECRET_MODE).unwrap();
        write_atomic(dir.path(), "svid.key", b"two", SECRET_MODE).unwrap();
        write_atomic(dir.path(), "svid.pem", b"cert", PUBLIC_MODE).unwrap();
        assert_eq!(std::fs::read(dir.path().join("svid.key")).unwrap(), b"two");
        let mode = |n: &str| std::fs::metadata(dir.path().join(n)).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode("svid.key"), mode("svid.pem")), (0o600, 0o644));
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2, "no temporary file left behind: {names:?}");
        remove(dir.path(), "svid.key").unwrap();
        remove(dir.path(), "svid.key").unwrap();
        assert!(!dir.path().join("svid.key").exists());
    }
}
