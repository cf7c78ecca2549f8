//! Modes of the directories that hold private files and, maybe, the Workload
//! API socket.
//!
//! The socket is for every local process (0777): attestation decides what
//! each caller gets, not file modes. So every directory on the socket's path
//! must let every user through. A data directory that holds the socket (the
//! default, `DATA_DIR/public/api.sock`, and `hallmark up`'s
//! `DIR/agent/public/api.sock`) is therefore 0711: others may pass through
//! to a name they know, but not list it, and the files in it that hold
//! secrets (keys, tokens, the database) are 0600 on their own. A data
//! directory the socket is not under stays 0700.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::AgentError;

/// The mode of a private directory through which others reach the socket.
pub const TRAVERSABLE: u32 = 0o711;
/// The mode of a private directory the socket is not under.
pub const PRIVATE: u32 = 0o700;

/// The mode `dir` should have: [`TRAVERSABLE`] when `socket` lies beneath
/// it, [`PRIVATE`] otherwise.
pub fn private_dir_mode(dir: &Path, socket: &Path) -> u32 {
    let (Ok(dir), Ok(socket)) = (std::path::absolute(dir), std::path::absolute(socket)) else {
        return PRIVATE;
    };
    if socket.starts_with(&dir) { TRAVERSABLE } else { PRIVATE }
}

/// Creates `dir` if needed and gives it [`private_dir_mode`], tightening or
/// opening an existing one. A directory another user owns or may write (or
/// one of its parents) is refused first: see
/// [`hallmark_ca::keys::check_trusted_path`].
pub fn ensure_private_dir(dir: &Path, socket: &Path) -> Result<(), AgentError> {
    hallmark_ca::keys::check_trusted_path(dir).map_err(|e| AgentError::Io(e.to_string()))?;
    let err = |e: std::io::Error| AgentError::Io(format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(err)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(private_dir_mode(dir, socket))).map_err(err)?;
    // Again, now that it exists: another user may have created it first.
    hallmark_ca::keys::check_trusted_path(dir).map_err(|e| AgentError::Io(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_directories_above_the_socket_are_traversable() {
        let d = Path::new("/var/lib/hallmark");
        assert_eq!(private_dir_mode(d, Path::new("/var/lib/hallmark/agent/public/api.sock")), TRAVERSABLE);
        assert_eq!(private_dir_mode(d, Path::new("/run/hallmark/api.sock")), PRIVATE);
        assert_eq!(private_dir_mode(d, Path::new("/var/lib/hallmark-other/api.sock")), PRIVATE, "a prefix of a name");
        assert_eq!(private_dir_mode(Path::new("data"), Path::new("data/public/api.sock")), TRAVERSABLE);
    }

    #[test]
    fn an_existing_directory_is_given_the_mode() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("data");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&d, &t.path().join("elsewhere.sock")).unwrap();
        assert_eq!(std::fs::metadata(&d).unwrap().permissions().mode() & 0o7777, PRIVATE);
        ensure_private_dir(&d, &d.join("public/api.sock")).unwrap();
        assert_eq!(std::fs::metadata(&d).unwrap().permissions().mode() & 0o7777, TRAVERSABLE);
    }
}
