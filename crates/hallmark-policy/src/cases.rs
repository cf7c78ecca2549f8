//! Policy test tables: (evidence, request) -> expected (decision, TTL), run
//! without a server by `hallmark policy test` and by the corpus tests.
//!
//! A case is decided by [`crate::decide`], the server's own decision: this
//! module only fills a case's defaults and compares the verdict with what the
//! case expects.

use hallmark_core::{Class, Entry, SelectorSet, SpiffeId, Ttl};
use serde::Deserialize;

use crate::decision::Decision::{Allowed, Denied};
use crate::{Action, ActiveException, Classes, DecidedBy, Evidence, IssuanceRequest, PolicyEngine, Verdict, decide};

/// A file of cases.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    /// The cases.
    pub cases: Vec<Case>,
}

/// One case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Shown on mismatch.
    pub name: String,
    /// `issue_x509`, `renew`, `issue_jwt` or `issue_wit`.
    pub action: String,
    /// For `issue_jwt`.
    #[serde(default)]
    pub audience: Option<String>,
    /// The entry the workload matched.
    pub entry: CaseEntry,
    /// What attestation proved.
    #[serde(default)]
    pub evidence: CaseEvidence,
    /// Active exceptions.
    #[serde(default)]
    pub exceptions: Vec<CaseException>,
    /// Unix seconds of the decision (default 1700000000).
    #[serde(default)]
    pub now: Option<i64>,
    /// What must come out.
    pub expect: Expect,
}

/// The entry of a case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseEntry {
    /// Entry id (default `e1`).
    #[serde(default)]
    pub id: Option<String>,
    /// SPIFFE ID.
    pub spiffe_id: String,
    /// Owner (default `team`).
    #[serde(default)]
    pub owner: Option<String>,
    /// Class (default machine).
    #[serde(default)]
    pub class: Option<String>,
    /// X.509 TTL (default 1h).
    #[serde(default)]
    pub x509_ttl: Option<String>,
    /// JWT TTL (default 5m).
    #[serde(default)]
    pub jwt_ttl: Option<String>,
}

/// Evidence of a case.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseEvidence {
    /// Workload selectors.
    #[serde(default)]
    pub selectors: Vec<String>,
    /// Agent ID.
    #[serde(default)]
    pub node_id: Option<String>,
    /// Node attestation type (default join_token).
    #[serde(default)]
    pub node_attestation: Option<String>,
    /// Node selectors.
    #[serde(default)]
    pub node_selectors: Vec<String>,
}

/// An exception of a case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseException {
    /// Rule name.
    pub rule: String,
    /// Rule value.
    pub value: String,
    /// Unix seconds (default: a day after `now`).
    #[serde(default)]
    pub expires_at: Option<i64>,
}

/// The expected outcome.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// `allow` or `deny`.
    pub decision: String,
    /// The issued TTL, for allowed cases (e.g. `15m`).
    #[serde(default)]
    pub ttl: Option<String>,
}

/// One case's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The case name.
    pub name: String,
    /// What came out, e.g. `allow 15m` or `deny [policy-id]`.
    pub got: String,
    /// What was expected.
    pub expected: String,
    /// Equal?
    pub pass: bool,
}

fn case_err(name: &str, e: impl std::fmt::Display) -> String {
    format!("case `{name}`: {e}")
}

/// A case's request, built once and owned, so [`decide`] can borrow it.
struct CaseRequest {
    action: Action,
    audience: Option<String>,
    entry: Entry,
    evidence: Evidence,
    exceptions: Vec<ActiveException>,
    now: i64,
    trust_domain: String,
}

impl CaseRequest {
    /// Fills a case's defaults: entry `e1` owned by `team` on a test agent
    /// attested by join token, at 1700000000, exceptions valid for a day.
    fn new(c: &Case) -> Result<Self, String> {
        let n = c.name.as_str();
        let action: Action = c.action.parse().map_err(|e| case_err(n, e))?;
        let class: Class = c.entry.class.as_deref().unwrap_or("machine").parse().map_err(|e| case_err(n, e))?;
        let ttl = |v: &Option<String>, d: &str| Ttl::parse(v.as_deref().unwrap_or(d)).map_err(|e| case_err(n, e));
        let spiffe_id = SpiffeId::new(&c.entry.spiffe_id).map_err(|e| case_err(n, e))?;
        let selectors: SelectorSet =
            c.evidence.selectors.iter().map(|s| s.parse()).collect::<Result<_, _>>().map_err(|e| case_err(n, e))?;
        let entry = Entry {
            id: c.entry.id.clone().unwrap_or_else(|| "e1".into()),
            spiffe_id,
            parent_id: SpiffeId::new("spiffe://policy.test/hallmark/agent/test").map_err(|e| case_err(n, e))?,
            selectors: selectors.clone(),
            owner: c.entry.owner.clone().unwrap_or_else(|| "team".into()),
            class,
            x509_ttl: ttl(&c.entry.x509_ttl, "1h")?,
            jwt_ttl: ttl(&c.entry.jwt_ttl, "5m")?,
            dns_names: Vec::new(),
            hint: None,
            recovery: false,
            bind: hallmark_core::Bind::None,
            revision: 1,
            created_at: 0,
            updated_at: 0,
            revoked_at: None,
        };
        let now = c.now.unwrap_or(1_700_000_000);
        let evidence = Evidence {
            selectors,
            node_id: c.evidence.node_id.clone().unwrap_or_else(|| "spiffe://policy.test/hallmark/agent/test".into()),
            node_attestation: c.evidence.node_attestation.clone().unwrap_or_else(|| "join_token".into()),
            node_selectors: c.evidence.node_selectors.clone(),
            process: None,
        };
        let exceptions = c
            .exceptions
            .iter()
            .enumerate()
            .map(|(i, x)| {
                Ok(ActiveException {
                    id: format!("x{i}"),
                    rule: x.rule.parse().map_err(|e| case_err(n, e))?,
                    value: x.value.clone(),
                    expires_at: x.expires_at.unwrap_or(now + 86_400),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let trust_domain = entry.spiffe_id.trust_domain_name().to_owned();
        Ok(Self { action, audience: c.audience.clone(), entry, evidence, exceptions, now, trust_domain })
    }
}

/// The verdict for one case: the case's request put to [`decide`], the
/// decision the server makes for the same request.
pub fn verdict(engine: &PolicyEngine, classes: &Classes, case: &Case) -> Result<Verdict, String> {
    let r = CaseRequest::new(case)?;
    Ok(decide(
        engine,
        &IssuanceRequest {
            action: r.action,
            entry: &r.entry,
            audience: r.audience.as_deref(),
            evidence: &r.evidence,
            exceptions: &r.exceptions,
            now: r.now,
            classes,
            trust_domain: &r.trust_domain,
            task: None,
        },
    ))
}

/// Runs every case against `engine` with the given class rules. A case whose
/// decision cannot be made (the server would fail closed) is an error here:
/// a test table is the place to hear about it.
pub fn run(engine: &PolicyEngine, classes: &Classes, file: &CaseFile) -> Result<Vec<Outcome>, String> {
    let mut out = Vec::new();
    for c in &file.cases {
        let n = c.name.as_str();
        let v = verdict(engine, classes, c)?;
        let got = match (&v.decision, &v.decided_by) {
            (_, DecidedBy::EvaluationFailed { error }) => return Err(case_err(n, error)),
            (Allowed { ttl_secs }, _) => {
                format!("allow {}", Ttl::from_secs(*ttl_secs).map(|t| t.to_string()).unwrap_or_else(|_| "0s".into()))
            }
            (Denied { .. }, DecidedBy::ClassRule { class, path }) => {
                format!("deny [class {class} does not allow {path}]")
            }
            (Denied { .. }, _) => format!("deny [{}]", v.policy_ids.join(", ")),
        };
        let expected = match (c.expect.decision.as_str(), &c.expect.ttl) {
            ("allow", Some(t)) => format!("allow {}", Ttl::parse(t).map_err(|e| case_err(n, e))?),
            ("allow", None) => "allow".to_owned(),
            ("deny", _) => "deny".to_owned(),
            (o, _) => return Err(case_err(n, format!("expect.decision must be allow or deny, not `{o}`"))),
        };
        let pass = got == expected
            || (expected == "allow" && got.starts_with("allow "))
            || (expected == "deny" && got.starts_with("deny"));
        out.push(Outcome { name: c.name.clone(), got, expected, pass });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_expectation_is_reported() {
        let engine = PolicyEngine::compile(r#"@max_ttl("15m") permit(principal, action, resource);"#, 1).unwrap();
        let file: CaseFile = serde_json::from_str(
            r#"{"cases": [
                {"name": "right", "action": "issue_x509", "entry": {"spiffe_id": "spiffe://t/a"}, "expect": {"decision": "allow", "ttl": "15m"}},
                {"name": "wrong ttl", "action": "issue_x509", "entry": {"spiffe_id": "spiffe://t/a"}, "expect": {"decision": "allow", "ttl": "16m"}},
                {"name": "wrong decision", "action": "issue_x509", "entry": {"spiffe_id": "spiffe://t/a"}, "expect": {"decision": "deny"}}
            ]}"#,
        )
        .unwrap();
        let out = run(&engine, &Classes::default(), &file).unwrap();
        assert_eq!(out.iter().map(|o| o.pass).collect::<Vec<_>>(), vec![true, false, false]);
        assert_eq!(out[1].got, "allow 15m");
    }
}
