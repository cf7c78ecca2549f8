//! Refusals into the audit chain, counted rather than copied.
//!
//! Every refusal is recorded: an admin call without a valid token (401), an
//! admin call the caller's role does not allow (403), a node attestation with
//! a bad join token. But whoever can reach a listener can cause them, so
//! writing one record per refusal would let anyone grow the chain without
//! limit. Refusals are counted in one-second windows instead: one record per
//! (kind, source, caller) per window, with the count, the first subject seen
//! and every reason, each field cut to a bounded length; at most
//! [`MAX_KEYS`] such records per window, the rest folded into one overflow
//! record. However fast refusals come, the chain grows by at most
//! `MAX_KEYS + 1` records a second, each under a few kilobytes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::json;

/// Most records one window writes (plus one for the overflow).
pub const MAX_KEYS: usize = 64;
/// Longest subject, caller or source kept, in bytes.
pub const MAX_FIELD: usize = 256;
/// Most distinct reasons kept per record.
const MAX_REASONS: usize = 8;

/// What kind of refusal: the audit action it is recorded under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RefusalKind {
    /// An admin API call with no valid credential (401).
    AdminAuth,
    /// An admin API call the caller's role may not make (403).
    AdminForbidden,
    /// A node attestation refused (bad, used or expired join token).
    NodeAttestation,
}

impl RefusalKind {
    /// The audit action.
    pub fn action(self) -> &'static str {
        match self {
            Self::AdminAuth => "admin_auth",
            Self::AdminForbidden => "admin_forbidden",
            Self::NodeAttestation => "attest_node",
        }
    }
}

/// One refusal, as seen.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// Its kind.
    pub kind: RefusalKind,
    /// Where it came from: the peer address.
    pub source: String,
    /// Who, when known (an admin identity's name), else `unknown`.
    pub actor: String,
    /// What was asked for: a path, an agent ID.
    pub subject: String,
    /// Why it was refused, in a few words.
    pub reason: String,
}

#[derive(Debug, Default)]
struct Tally {
    count: u64,
    subject: String,
    reasons: Vec<String>,
    first_at: i64,
}

#[derive(Debug, Default)]
struct Window {
    by_key: BTreeMap<(RefusalKind, String, String), Tally>,
    overflow: u64,
}

/// Counts refusals and writes them to the audit chain once a second.
#[derive(Debug, Clone, Default)]
pub struct Refusals {
    window: Arc<Mutex<Window>>,
}

/// `s` cut to at most [`MAX_FIELD`] bytes, on a character boundary, with
/// control characters replaced.
pub fn bounded(s: &str) -> String {
    let mut end = s.len().min(MAX_FIELD);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let cut: String = s.get(..end).unwrap_or_default().chars().map(|c| if c.is_control() { '?' } else { c }).collect();
    if end < s.len() { format!("{cut}…") } else { cut }
}

impl Refusals {
    /// Counts one refusal; it reaches the chain within a second.
    pub fn note(&self, r: Refusal) {
        let Ok(mut w) = self.window.lock() else { return };
        let key = (r.kind, bounded(&r.source), bounded(&r.actor));
        if !w.by_key.contains_key(&key) && w.by_key.len() >= MAX_KEYS {
            w.overflow += 1;
            return;
        }
        let t = w.by_key.entry(key).or_default();
        if t.count == 0 {
            t.subject = bounded(&r.subject);
            t.first_at = hallmark_core::now_unix();
        }
        t.count += 1;
        if t.reasons.len() < MAX_REASONS && !t.reasons.iter().any(|x| x == &r.reason) {
            t.reasons.push(bounded(&r.reason));
        }
    }

    /// Takes the window's tallies as audit events, each made by `event`
    /// (actor, action, subject, outcome, details).
    pub(crate) fn drain(
        &self,
        event: impl Fn(&str, &str, &str, &str, serde_json::Value) -> hallmark_store::AuditEvent,
    ) -> Vec<hallmark_store::AuditEvent> {
        let Ok(mut w) = self.window.lock() else { return Vec::new() };
        let w = std::mem::take(&mut *w);
        let mut events: Vec<_> = w
            .by_key
            .into_iter()
            .map(|((kind, source, actor), t)| {
                let details =
                    json!({ "source": source, "count": t.count, "reasons": t.reasons, "first_at": t.first_at });
                event(&actor, kind.action(), &t.subject, "refused", details)
            })
            .collect();
        if w.overflow > 0 {
            let details =
                json!({ "count": w.overflow, "reasons": ["more sources in one second than are recorded one by one"] });
            events.push(event("unknown", "refusals_overflow", "-", "refused", details));
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(source: &str, subject: &str) -> Refusal {
        Refusal {
            kind: RefusalKind::AdminAuth,
            source: source.into(),
            actor: "unknown".into(),
            subject: subject.into(),
            reason: "no token".into(),
        }
    }

    #[test]
    fn fields_are_bounded() {
        assert_eq!(bounded("short"), "short");
        let long = "é".repeat(1000);
        let b = bounded(&long);
        assert!(b.len() <= MAX_FIELD + "…".len(), "{}", b.len());
        assert!(b.ends_with('…'));
        assert_eq!(bounded("a\nb\u{0}"), "a?b?");
    }

    #[test]
    fn a_flood_is_counted_in_bounded_records() {
        let r = Refusals::default();
        for i in 0..10_000 {
            r.note(refusal("127.0.0.1:1", &format!("/v1/{}", "x".repeat(60_000 + i))));
        }
        for i in 0..1000 {
            r.note(refusal(&format!("10.0.0.{i}:2"), "/v1/entries"));
        }
        let w = r.window.lock().unwrap();
        assert_eq!(w.by_key.len(), MAX_KEYS);
        assert_eq!(w.overflow, 1000 - (MAX_KEYS as u64 - 1));
        let (_, first) = w.by_key.iter().find(|((_, s, _), _)| s == "127.0.0.1:1").unwrap();
        assert_eq!(first.count, 10_000);
        assert!(first.subject.len() <= MAX_FIELD + 3);
    }
}
