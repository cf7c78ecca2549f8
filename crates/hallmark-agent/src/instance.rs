//! Process instances: what SVIDs of a `bind: process` entry belong to.
//!
//! A PID alone names a process only until it exits: the kernel hands the
//! number out again. A process *instance* is the PID with the process's
//! start time (clock ticks since boot, `/proc/<pid>/stat` field 22), which
//! no later process with that PID can share; a restarted program is a new
//! instance. The start time is read while the caller is pinned (its pidfd,
//! or without one the start time read at accept: see [`crate::attest`])
//! and the pin is checked again afterwards, so the instance is the caller's.
//!
//! [`wait_exit`] resolves when the instance has exited: with a pidfd, when
//! it becomes readable (the kernel's exit notification, through tokio's
//! reactor, no polling); without one, by looking at `/proc` every
//! [`POLL_EVERY`] for the PID gone, reused, or a zombie.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::attest::{AttestError, Caller, parse_stat_starttime};

/// How often an instance with no pidfd is looked at.
pub const POLL_EVERY: Duration = Duration::from_millis(50);

/// One run of one process: its PID and start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcessInstance {
    /// The PID.
    pub pid: i32,
    /// Start time, clock ticks since boot.
    pub start_time: u64,
}

impl std::fmt::Display for ProcessInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} (started at tick {})", self.pid, self.start_time)
    }
}

/// A caller's process instance and what pins it, for watching its end.
#[derive(Debug, Clone)]
pub struct Process {
    /// Which instance.
    pub instance: ProcessInstance,
    /// Its pidfd, when the kernel gave one (SO_PEERPIDFD).
    pub pidfd: Option<Arc<OwnedFd>>,
}

/// What the status line of `/proc/<pid>/stat` says of a process.
fn stat_of(pid: i32) -> Option<(u64, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let start = parse_stat_starttime(&stat)?;
    let state = stat.rfind(')').and_then(|i| stat.get(i + 1..)).and_then(|r| r.trim_start().chars().next())?;
    Some((start, state))
}

/// Most ancestors [`lineage`] reads.
pub const MAX_LINEAGE: usize = 64;

/// The parent PID in the status line of `/proc/<pid>/stat` (field 4).
fn parse_stat_ppid(stat: &str) -> Option<i32> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The ancestors of `instance`, parent first, as `(pid, start time)`, up to
/// [`MAX_LINEAGE`] and not including PID 1: which task's process tree the
/// instance is in (`bind: task`). Empty when the instance has ended (its PID
/// now names another process). An ancestor that exits while this reads
/// ends the list there; a PID reused in that moment has a start time no
/// task root shares, so it matches nothing.
pub fn lineage(instance: ProcessInstance) -> Vec<(i32, u64)> {
    let mut out = Vec::new();
    let read = |pid: i32| -> Option<(u64, i32)> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        Some((parse_stat_starttime(&stat)?, parse_stat_ppid(&stat)?))
    };
    let Some((start, mut parent)) = read(instance.pid) else { return out };
    if start != instance.start_time {
        return out;
    }
    while parent > 1 && out.len() < MAX_LINEAGE {
        let Some((start, grandparent)) = read(parent) else { break };
        out.push((parent, start));
        parent = grandparent;
    }
    out
}

/// Whether a pidfd shows its process exited (readable), without waiting.
fn pidfd_exited(fd: &OwnedFd) -> bool {
    let mut fds = [nix::poll::PollFd::new(fd.as_fd(), nix::poll::PollFlags::POLLIN)];
    !matches!(nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO), Ok(0))
}

/// The process instance of `caller`, while it is still the process that
/// connected. Fails when it has exited (or, without a pidfd, its PID names
/// a later process).
pub fn identify(caller: &Caller) -> Result<Process, AttestError> {
    // With a pidfd, the start time read when the connection was accepted
    // (no /proc read per call): the pidfd, checked below, says the process
    // is still that one. Without one, /proc is read and compared with it.
    let start_time = match (&caller.pidfd, caller.start_time) {
        (Some(_), Some(t)) => t,
        _ => stat_of(caller.pid).ok_or(AttestError::Exited)?.0,
    };
    match &caller.pidfd {
        // Read while pinned: the pidfd still open and not readable means the
        // PID was not reused while /proc was read.
        Some(fd) if pidfd_exited(fd) => return Err(AttestError::Exited),
        Some(_) => {}
        None if caller.start_time != Some(start_time) => return Err(AttestError::Exited),
        None => {}
    }
    Ok(Process { instance: ProcessInstance { pid: caller.pid, start_time }, pidfd: caller.pidfd.clone() })
}

/// Whether `instance` has exited, from `/proc` (a zombie has exited).
fn gone(instance: ProcessInstance) -> bool {
    match stat_of(instance.pid) {
        Some((start, state)) => start != instance.start_time || matches!(state, 'Z' | 'X'),
        None => true,
    }
}

/// Whether `p` is still running, without waiting.
pub fn alive(p: &Process) -> bool {
    match &p.pidfd {
        Some(fd) => !pidfd_exited(fd),
        None => !gone(p.instance),
    }
}

/// `fd` registered with tokio's reactor for readability.
#[expect(
    deprecated,
    reason = "the replacement, `register_with_interest`, is `unsafe` (forbidden here) only because a type's raw fd \
              may change or close under it; an `OwnedFd` owns its fd and closes it only when the `AsyncFd` drops it, \
              after deregistering"
)]
fn registered(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    AsyncFd::with_interest(fd, Interest::READABLE)
}

/// Resolves once `p` has exited.
pub async fn wait_exit(p: &Process) {
    if let Some(fd) = &p.pidfd {
        // A descriptor of its own: epoll registers each one once, and the
        // connection's pidfd may be watched by another call's task too.
        match fd.try_clone().and_then(registered) {
            Ok(watched) => {
                // Readable once, on exit; an error is an exit too (the
                // process cannot be watched any longer, so it is let go).
                let _ = watched.readable().await;
                return;
            }
            Err(e) => tracing::warn!(error = %e, instance = %p.instance, "cannot watch a pidfd; polling /proc"),
        }
    }
    while !gone(p.instance) {
        tokio::time::sleep(POLL_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without a pidfd: the exit of a child is seen while it is still a
    /// zombie (not reaped), and an exited caller has no instance. The pidfd
    /// path is exercised with real workloads by the integration tests
    /// (`crates/hallmark/tests/it/bind.rs`).
    #[tokio::test]
    async fn an_exit_is_seen_by_proc() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        let caller = Caller::new(pid, None);
        let p = identify(&caller).unwrap();
        assert_eq!(p.instance.pid, pid);
        let waiting = tokio::spawn({
            let p = p.clone();
            async move { wait_exit(&p).await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiting.is_finished(), "still running");
        child.kill().unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap();
        child.wait().unwrap();
        assert!(identify(&caller).is_err(), "an exited caller has no instance");
        assert!(!alive(&p));
    }

    /// With a pidfd (this process's own, from a socket pair): identified
    /// while alive, and the start time is the one /proc shows.
    #[test]
    fn a_pinned_caller_is_identified() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let pidfd: Option<OwnedFd> = nix::sys::socket::getsockopt(&a, nix::sys::socket::sockopt::PeerPidfd).ok();
        let me = std::process::id() as i32;
        let p = identify(&Caller::new(me, pidfd)).unwrap();
        assert_eq!(p.instance.start_time, stat_of(me).unwrap().0);
        assert!(!gone(p.instance));
        assert!(gone(ProcessInstance { pid: me, start_time: p.instance.start_time + 1 }), "a later process");
    }
}
