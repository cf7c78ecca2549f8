//! Hallmark's decision point.
//!
//! - [`engine`]: Cedar policies validated against Hallmark's schema, indexed
//!   by scope, and the decision for one issuance request.
//! - [`lifecycle`]: lifecycle classes (machine, agent, human) with their TTL
//!   ceilings, renewal points and allowed issuance paths.
//! - [`exception`]: recorded, expiring permissions to break one rule.
//! - [`cases`]: policy test tables (`hallmark policy test`).
//!
//! The lifetime of a credential is the least of the entry's TTL, the class
//! maximum (raised only by an active exception) and every determining permit's
//! `@max_ttl`.

pub mod cases;
pub mod engine;
pub mod exception;
pub mod lifecycle;

pub use engine::{Action, Decision, DecisionRequest, Evidence, PolicyEngine, PolicyError};
pub use exception::{ActiveException, ExceptionRule};
pub use lifecycle::{ClassRules, Classes, IssuancePath};

/// The schema every policy is validated against (shipped, documented in the README).
pub const SCHEMA: &str = include_str!("schema.cedarschema");

/// The policy in force when none has been set.
pub const DEFAULT_POLICY: &str = include_str!("default.cedar");

/// The lifetime to issue: the least of the entry's TTL, the class ceiling
/// (raised by exceptions for this credential kind), and the decision's cap.
pub fn effective_ttl(
    entry_ttl: u64,
    rules: &ClassRules,
    path: IssuancePath,
    exceptions: &[ActiveException],
    decision_cap: Option<u64>,
) -> u64 {
    let ceiling = exceptions.iter().filter_map(|e| e.raised_ceiling(path)).fold(rules.max_ttl.secs(), u64::max);
    let ttl = entry_ttl.min(ceiling);
    decision_cap.map_or(ttl, |cap| ttl.min(cap))
}
