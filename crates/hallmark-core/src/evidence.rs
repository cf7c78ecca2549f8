//! Workload evidence as it is recorded: the selectors attestation produced,
//! the process they were read from, and the digest that names the two in the
//! inventory and the audit chain.
//!
//! The digest is SHA-256 over a canonical text:
//!
//! ```text
//! unix:gid:1000\n            every selector, sorted, each ended by `\n`
//! unix:sha256:9f2c…\n
//! unix:uid:1000\n
//! \n                         then, when the process is known, an empty line
//! pid=4242\n                 and its facts, in this order
//! start_ticks=987654\n
//! started_at=1767225600\n
//! ```
//!
//! A selector is never empty and never holds a control character, so the
//! text of selectors alone never holds an empty line: evidence with process
//! facts can never have the digest of evidence without them. Evidence
//! without process facts (recorded before agents sent them, or from an agent
//! that does not) has exactly the digest it always had, so old records stay
//! verifiable and the agent's caches, keyed by the selectors' digest, are
//! unchanged.
//!
//! The process facts name one process instance, never a kind of workload:
//! they are not selectors, so no entry can require a pid.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::SelectorSet;

/// Why process facts are not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessInstanceError {
    /// PID 0 names no process.
    #[error("process id must not be 0")]
    ZeroPid,
    /// A start time the datastore cannot hold (beyond `i64`).
    #[error("process start time `{0}` (clock ticks since boot) is out of range")]
    StartTicks(u64),
    /// A start time before the epoch.
    #[error("process start time `{0}` (unix seconds) is before 1970")]
    StartedAt(i64),
}

/// One process instance: its PID, and when it started, which together tell
/// it apart from any later process given the same PID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawProcessInstance")]
pub struct ProcessInstance {
    pid: u32,
    start_ticks: u64,
    started_at: i64,
}

/// The fields as given, before [`ProcessInstance::new`] checks them.
#[derive(Deserialize)]
struct RawProcessInstance {
    pid: u32,
    start_ticks: u64,
    started_at: i64,
}

impl TryFrom<RawProcessInstance> for ProcessInstance {
    type Error = ProcessInstanceError;
    fn try_from(r: RawProcessInstance) -> Result<Self, Self::Error> {
        Self::new(r.pid, r.start_ticks, r.started_at)
    }
}

impl ProcessInstance {
    /// The process `pid`, started `start_ticks` clock ticks after boot (as
    /// `/proc/<pid>/stat` shows it), which is `started_at` in unix seconds.
    pub fn new(pid: u32, start_ticks: u64, started_at: i64) -> Result<Self, ProcessInstanceError> {
        if pid == 0 {
            return Err(ProcessInstanceError::ZeroPid);
        }
        // Stored as a signed 64-bit integer.
        if i64::try_from(start_ticks).is_err() {
            return Err(ProcessInstanceError::StartTicks(start_ticks));
        }
        if started_at < 0 {
            return Err(ProcessInstanceError::StartedAt(started_at));
        }
        Ok(Self { pid, start_ticks, started_at })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Start time in clock ticks since the node booted: exact, and with the
    /// PID unique on the node until it reboots.
    pub fn start_ticks(&self) -> u64 {
        self.start_ticks
    }

    /// Start time in unix seconds (the node's boot time plus the ticks; to
    /// the second).
    pub fn started_at(&self) -> i64 {
        self.started_at
    }
}

/// The canonical text of selectors given in order (a [`SelectorSet`] is
/// sorted): each one ended by `\n`.
pub fn canonical_selectors<T: std::fmt::Display>(selectors: impl IntoIterator<Item = T>) -> String {
    let mut text = String::new();
    for sel in selectors {
        text.push_str(&sel.to_string());
        text.push('\n');
    }
    text
}

/// The digest of evidence whose selectors have the canonical text
/// `canonical_selectors` (as [`canonical_selectors`] writes it, or as stored)
/// and which was read from `process` (see the module documentation).
pub fn evidence_digest_of(canonical_selectors: &str, process: Option<&ProcessInstance>) -> String {
    let mut h = Sha256::new();
    h.update(canonical_selectors.as_bytes());
    if let Some(p) = process {
        h.update(format!("\npid={}\nstart_ticks={}\nstarted_at={}\n", p.pid, p.start_ticks, p.started_at).as_bytes());
    }
    hex::encode(h.finalize())
}

/// SHA-256 hex over the canonical form of a selector set alone: the digest
/// under which the agent caches what a workload's evidence was given, and
/// which names evidence recorded without process facts.
pub fn evidence_digest(s: &SelectorSet) -> String {
    evidence_digest_of(&canonical_selectors(s), None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Selector;

    fn set(v: &[&str]) -> SelectorSet {
        v.iter().map(|s| s.parse::<Selector>().unwrap()).collect()
    }

    #[test]
    fn the_selectors_digest_is_unchanged() {
        // The digest Hallmark has always recorded: SHA-256 of the sorted
        // selectors, newline-terminated. Old records must still match it.
        let s = set(&["unix:uid:1000", "unix:gid:100"]);
        let want = hex::encode(Sha256::digest(b"unix:gid:100\nunix:uid:1000\n"));
        assert_eq!(evidence_digest(&s), want);
        assert_eq!(evidence_digest_of(&canonical_selectors(&s), None), want);
    }

    #[test]
    fn process_facts_change_the_digest_and_cannot_be_forged_by_selectors() {
        let s = set(&["unix:uid:1000"]);
        let p = ProcessInstance::new(42, 987_654, 1_767_225_600).unwrap();
        let with = evidence_digest_of(&canonical_selectors(&s), Some(&p));
        assert_ne!(with, evidence_digest(&s));
        let text = "unix:uid:1000\n\npid=42\nstart_ticks=987654\nstarted_at=1767225600\n";
        assert_eq!(with, hex::encode(Sha256::digest(text.as_bytes())));
        // Another process, or another start, is other evidence.
        let q = ProcessInstance::new(43, 987_654, 1_767_225_600).unwrap();
        assert_ne!(with, evidence_digest_of(&canonical_selectors(&s), Some(&q)));
        // No selector can spell the empty line that starts the process facts.
        assert!("".parse::<Selector>().is_err());
        assert!("unix:user:a\n\npid=42".parse::<Selector>().is_err());
    }

    #[test]
    fn process_facts_are_checked() {
        assert_eq!(ProcessInstance::new(0, 1, 1), Err(ProcessInstanceError::ZeroPid));
        assert!(ProcessInstance::new(1, u64::MAX, 1).is_err());
        assert!(ProcessInstance::new(1, 1, -1).is_err());
        let p = ProcessInstance::new(7, 8, 9).unwrap();
        let json = serde_json::to_value(p).unwrap();
        assert_eq!(json, serde_json::json!({ "pid": 7, "start_ticks": 8, "started_at": 9 }));
        assert_eq!(serde_json::from_value::<ProcessInstance>(json).unwrap(), p);
        assert!(
            serde_json::from_value::<ProcessInstance>(
                serde_json::json!({ "pid": 0, "start_ticks": 8, "started_at": 9 })
            )
            .is_err()
        );
    }
}
