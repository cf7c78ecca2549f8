//! Private directories: the data directory and the key directories in it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::ServerError;

/// Creates the data directory with mode 0700.
/// A directory another user owns or may write (or one of its parents) is
/// refused: see [`hallmark_ca::keys::check_trusted_path`].
pub fn ensure_private_dir(dir: &Path) -> Result<(), ServerError> {
    hallmark_ca::keys::check_trusted_path(dir).map_err(ServerError::UntrustedDir)?;
    let io = |source| ServerError::Io { path: dir.to_owned(), source };
    std::fs::create_dir_all(dir).map_err(io)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    // Again, now that it exists: another user may have created it first.
    hallmark_ca::keys::check_trusted_path(dir).map_err(ServerError::UntrustedDir)
}
