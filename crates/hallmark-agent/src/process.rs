//! The process facts sent with a workload's evidence: which process
//! instance asked (its PID and start time), so that an auditor can name the
//! very process a credential was issued to. They travel beside the
//! selectors, never among them: no entry can require a PID.
//!
//! The start time is the one read when the connection was accepted. An
//! attestation that succeeds has since confirmed that the same process is
//! still the caller (by its pidfd, or by that very start time), so the PID
//! named that process when its start time was read.

use std::sync::OnceLock;

use hallmark_core::ProcessInstance;

use crate::attest::Caller;

/// When the node booted and how fast its process clock ticks: what turns a
/// start time in ticks since boot into unix seconds.
#[derive(Debug, Clone, Copy)]
struct BootClock {
    /// Unix seconds (`btime` in `/proc/stat`).
    boot_time: i64,
    /// Clock ticks a second (`CLK_TCK`).
    ticks_per_sec: u64,
}

/// The caller's process instance; `None` when its start time or the node's
/// boot clock could not be read.
pub(crate) fn process_instance(caller: &Caller) -> Option<ProcessInstance> {
    let pid = u32::try_from(caller.pid).ok()?;
    let ticks = caller.start_time?;
    let clock = boot_clock()?;
    let started_at = clock.boot_time.checked_add(i64::try_from(ticks / clock.ticks_per_sec).ok()?)?;
    ProcessInstance::new(pid, ticks, started_at).ok()
}

/// The boot clock, read once: the boot time does not change while the node runs.
fn boot_clock() -> Option<BootClock> {
    static CLOCK: OnceLock<Option<BootClock>> = OnceLock::new();
    *CLOCK.get_or_init(|| {
        let clock = read_boot_clock();
        if clock.is_none() {
            tracing::warn!("cannot read the boot time or CLK_TCK; workloads' process facts are not recorded");
        }
        clock
    })
}

fn read_boot_clock() -> Option<BootClock> {
    let boot_time = parse_btime(&std::fs::read_to_string("/proc/stat").ok()?)?;
    let ticks_per_sec = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|t| u64::try_from(t).ok())
        .filter(|t| *t > 0)?;
    Some(BootClock { boot_time, ticks_per_sec })
}

/// The `btime` line of `/proc/stat`: when the node booted, unix seconds.
fn parse_btime(stat: &str) -> Option<i64> {
    stat.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok()).filter(|t| *t > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_time_parsing() {
        assert_eq!(parse_btime("cpu  1 2 3\nintr 5\nbtime 1767225600\nprocesses 9\n"), Some(1_767_225_600));
        assert_eq!(parse_btime("cpu 1\n"), None);
        assert_eq!(parse_btime("btime x\n"), None);
    }

    #[test]
    fn this_process_started_before_now_and_after_boot() {
        let me = Caller::new(std::process::id() as i32, None);
        let p = process_instance(&me).unwrap();
        assert_eq!(p.pid(), std::process::id());
        let now = hallmark_core::now_unix();
        assert!(p.started_at() <= now && p.started_at() > now - 3600, "{p:?} at {now}");
        assert_eq!(Some(p.start_ticks()), me.start_time);
    }
}
