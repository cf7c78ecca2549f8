//! AI-agent tasks: a unit of agent work with an objective and a scope.
//!
//! A task is started for an entry bound to tasks (`bind: task`) and for one
//! process instance and its descendants. What it may get tokens for is its
//! scope: audiences, each with optional actions, some of them only after a
//! person approves. Every credential minted for a task process carries the
//! task ([`TaskClaim`] in JWT-SVIDs); ending the task, or changing its
//! objective, revokes them all.
//!
//! This module holds the rules for a task's inputs; the store keeps tasks
//! and the server enforces them at issuance.

use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::check_audience;

/// Longest objective, in bytes.
pub const MAX_OBJECTIVE_LEN: usize = 4096;
/// Most items in one task's scope.
pub const MAX_SCOPE_ITEMS: usize = 64;
/// Most actions on one scope item.
pub const MAX_ACTIONS: usize = 32;
/// Longest on-behalf-of subject, in bytes.
pub const MAX_SUBJECT_LEN: usize = 256;

/// Why a task's input is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    /// The objective is empty, too long, or has control characters other
    /// than newlines and tabs.
    #[error("the objective must be 1-{MAX_OBJECTIVE_LEN} bytes with no control characters but newlines and tabs")]
    Objective,
    /// A scope item's audience is not a valid JWT audience.
    #[error("scope: {0}")]
    Audience(#[from] crate::AudienceError),
    /// A scope item's action is not a lowercase word.
    #[error(
        "scope `{0}`: actions are a comma-separated list of lowercase words (a-z, 0-9, `_`, `-`), at most {MAX_ACTIONS}"
    )]
    Actions(String),
    /// No scope, too much scope, or one audience twice.
    #[error("a task needs 1-{MAX_SCOPE_ITEMS} scope items, each audience once")]
    ScopeSize,
    /// An approval names an audience outside the scope.
    #[error("`{0}` is not in the task's scope")]
    NotInScope(String),
    /// The on-behalf-of subject is empty, too long or has control characters.
    #[error("the on-behalf-of subject must be 1-{MAX_SUBJECT_LEN} bytes with no control characters")]
    Subject,
}

/// One item of a task's scope: an audience (a tool, an API) the task may get
/// tokens for, the actions it may take there (none listed: the tool
/// decides), and whether a person must approve it first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeItem {
    /// The JWT audience.
    pub audience: String,
    /// The actions, for the tool to check (the `task.scope` claim).
    #[serde(default)]
    pub actions: Vec<String>,
    /// Whether tokens for it wait for `hallmark task approve`.
    #[serde(default)]
    pub approval: bool,
    /// Who approved it, under the current objective.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    /// When, unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_at: Option<i64>,
}

impl ScopeItem {
    /// Whether tokens for this audience may be minted now: no approval
    /// needed, or given.
    pub fn cleared(&self) -> bool {
        !self.approval || self.approved_by.is_some()
    }
}

fn is_action(a: &str) -> bool {
    let mut chars = a.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// `AUD[:ACTIONS]`: what follows the last `:` is a list of actions when it
/// is a comma-separated list of lowercase words (`tool://search:read,write`);
/// otherwise the whole text is the audience (`https://api.example:8443`).
impl FromStr for ScopeItem {
    type Err = TaskError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (audience, actions) = match s.rsplit_once(':') {
            Some((aud, acts)) if !aud.is_empty() && !acts.is_empty() && acts.split(',').all(is_action) => {
                (aud, acts.split(',').map(str::to_owned).collect::<Vec<_>>())
            }
            _ => (s, Vec::new()),
        };
        check_audience(audience)?;
        if actions.len() > MAX_ACTIONS {
            return Err(TaskError::Actions(s.escape_debug().take(64).collect()));
        }
        let mut unique = actions.clone();
        unique.sort();
        unique.dedup();
        Ok(Self {
            audience: audience.to_owned(),
            actions: unique,
            approval: false,
            approved_by: None,
            approved_at: None,
        })
    }
}

/// A task's scope from `--scope` items, with the audiences in `approve`
/// marked as needing approval. Each audience appears once; every audience
/// to approve must be in the scope.
pub fn parse_scope(items: &[String], approve: &[String]) -> Result<Vec<ScopeItem>, TaskError> {
    let mut scope: Vec<ScopeItem> = items.iter().map(|s| s.parse()).collect::<Result<_, _>>()?;
    if scope.is_empty() || scope.len() > MAX_SCOPE_ITEMS {
        return Err(TaskError::ScopeSize);
    }
    let mut auds: Vec<&str> = scope.iter().map(|i| i.audience.as_str()).collect();
    auds.sort_unstable();
    if auds.windows(2).any(|w| w.first() == w.get(1)) {
        return Err(TaskError::ScopeSize);
    }
    for a in approve {
        let item = scope.iter_mut().find(|i| &i.audience == a).ok_or_else(|| TaskError::NotInScope(a.clone()))?;
        item.approval = true;
    }
    Ok(scope)
}

/// Checks an objective: recorded as given, hashed for the credentials.
pub fn check_objective(text: &str) -> Result<(), TaskError> {
    let bad = |c: char| c.is_control() && c != '\n' && c != '\t';
    if text.trim().is_empty() || text.len() > MAX_OBJECTIVE_LEN || text.chars().any(bad) {
        return Err(TaskError::Objective);
    }
    Ok(())
}

/// Checks the subject a task acts for (a person's e-mail or SPIFFE ID).
pub fn check_subject(subject: &str) -> Result<(), TaskError> {
    if subject.is_empty() || subject.len() > MAX_SUBJECT_LEN || subject.chars().any(char::is_control) {
        return Err(TaskError::Subject);
    }
    Ok(())
}

/// SHA-256 (hex) of an objective: what credentials carry instead of the text.
pub fn objective_sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The scope of one audience as a credential states it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimScope {
    /// The audience.
    pub aud: String,
    /// The actions allowed there (empty: the tool decides).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<String>,
}

/// The `task` claim of a task's JWT-SVIDs (the JWT-SVID standard allows
/// claims beyond its own): which task, under which objective, and the scope
/// of the token's audiences.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskClaim {
    /// The task's id.
    pub id: String,
    /// SHA-256 (hex) of the objective the token was decided under.
    pub objective_sha256: String,
    /// The scope items of the token's audiences.
    pub scope: Vec<ClaimScope>,
    /// The subject the task acts for, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(s: &str) -> ScopeItem {
        s.parse().unwrap()
    }

    #[test]
    fn actions_follow_the_last_colon_only_when_they_are_words() {
        assert_eq!(item("tool://search:read,write").audience, "tool://search");
        assert_eq!(item("tool://search:write,read").actions, ["read", "write"]);
        assert_eq!(item("https://api.example:8443").audience, "https://api.example:8443");
        assert!(item("https://api.example:8443").actions.is_empty());
        assert_eq!(item("db").audience, "db");
        assert_eq!(item("spiffe://td/tool:Read").audience, "spiffe://td/tool:Read");
        assert!("".parse::<ScopeItem>().is_err());
        assert!("a\u{1}b".parse::<ScopeItem>().is_err());
    }

    #[test]
    fn scope_needs_unique_audiences_and_approvals_inside_it() {
        let scope = parse_scope(&["a:read".into(), "b".into()], &["b".into()]).unwrap();
        assert!(scope[0].cleared() && !scope[1].cleared());
        assert_eq!(parse_scope(&["a".into(), "a:read".into()], &[]), Err(TaskError::ScopeSize));
        assert_eq!(parse_scope(&[], &[]), Err(TaskError::ScopeSize));
        assert_eq!(parse_scope(&["a".into()], &["c".into()]), Err(TaskError::NotInScope("c".into())));
    }

    #[test]
    fn objectives_and_subjects() {
        assert!(check_objective("summarise the tickets\nand file a report").is_ok());
        assert!(check_objective("  ").is_err());
        assert!(check_objective("a\u{7}").is_err());
        assert!(check_objective(&"x".repeat(MAX_OBJECTIVE_LEN + 1)).is_err());
        assert_eq!(objective_sha256("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert!(check_subject("alice@example.org").is_ok());
        assert!(check_subject("").is_err());
    }
}
