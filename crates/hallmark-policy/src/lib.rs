//! Hallmark's decision point.
//!
//! - [`decision`]: where policy decides. [`decide`] takes one
//!   [`IssuanceRequest`] and returns its [`Verdict`]: the class gate, Cedar,
//!   failing closed and the lifetime, in that order. The server and
//!   `hallmark policy test` both call it, and nothing else decides.
//!   [`decide_exchange`] decides a token exchange (RFC 8693,
//!   `exchange_token`) the same way, from the policies naming that action.
//! - [`engine`]: Cedar policies validated against Hallmark's schema and
//!   indexed by scope.
//! - [`lifecycle`]: lifecycle classes (machine, agent, human) with their TTL
//!   ceilings, renewal points and allowed issuance paths.
//! - [`exception`]: recorded, expiring permissions to break one rule.
//! - [`cases`]: policy test tables (`hallmark policy test`).
//!
//! The lifetime of a credential is the least of the entry's TTL, the class
//! maximum (raised only by an active exception) and every determining permit's
//! `@max_ttl`.

pub mod cases;
pub mod decision;
pub mod engine;
pub mod exception;
pub mod lifecycle;

pub use decision::{
    Action, ActionError, DecidedBy, Decision, Evidence, ExchangeRequest, IssuanceRequest, LoginRequest, SubjectKind,
    TaskFacts, Verdict, decide, decide_exchange, decide_login,
};
pub use engine::{PolicyEngine, PolicyError};
pub use exception::{ActiveException, ExceptionRule, ExceptionRuleError};
pub use lifecycle::{ClassRules, Classes, IssuancePath, UnknownIssuancePath};

/// The schema every policy is validated against (shipped, documented in the README).
pub const SCHEMA: &str = include_str!("schema.cedarschema");

/// The policy in force when none has been set.
pub const DEFAULT_POLICY: &str = include_str!("default.cedar");
