//! Telling the software that reads the files to load them again: a signal to
//! the process named by a PID file (nginx reloads its certificates on
//! SIGHUP), a command, or both. A failure is logged and does not stop the
//! helper: the files are in place, and the next rotation tries again.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::settings::read_pid;

/// How long a reload command may run before it is killed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Sends `signal` to the process in `pid_file`.
pub fn signal(signal: Signal, pid_file: &Path) -> anyhow::Result<i32> {
    let pid = read_pid(pid_file)?;
    kill(Pid::from_raw(pid), signal)
        .map_err(|e| anyhow::anyhow!("cannot send {signal} to process {pid} (from {}): {e}", pid_file.display()))?;
    Ok(pid)
}

/// Runs `cmd` with `sh -c`, its output going to the helper's own, and
/// waits for it (at most a minute).
pub async fn command(cmd: &str) -> anyhow::Result<()> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot run reload command `{cmd}`: {e}"))?;
    match tokio::time::timeout(COMMAND_TIMEOUT, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => anyhow::bail!("reload command `{cmd}` failed: {status}"),
        Ok(Err(e)) => anyhow::bail!("reload command `{cmd}`: {e}"),
        Err(_) => anyhow::bail!("reload command `{cmd}` still running after {COMMAND_TIMEOUT:?}; killed"),
    }
}

/// Runs every configured reload, logging each outcome.
pub async fn after_rotation(settings: &super::Settings) {
    if let Some((sig, pid_file)) = &settings.signal {
        match signal(*sig, pid_file) {
            Ok(pid) => tracing::info!(%sig, pid, "signalled the reader of the files"),
            Err(e) => tracing::error!(error = %e, "reload signal failed"),
        }
    }
    if let Some(cmd) = &settings.reload_cmd {
        match command(cmd).await {
            Ok(()) => tracing::info!(cmd, "reload command succeeded"),
            Err(e) => tracing::error!(error = %e, "reload command failed"),
        }
    }
}
