//! Exceptions: recorded, approved, expiring permissions to break one rule.

use std::fmt;
use std::str::FromStr;

use hallmark_core::Ttl;

use crate::IssuancePath;

/// The rules an exception may lift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExceptionRule {
    /// Credentials (X.509 and JWT) may live up to `value` beyond the class maximum.
    TtlAboveClassMax,
    /// A legacy workload's X.509 certificate may live up to `value`.
    LongLivedCertificate,
}

impl ExceptionRule {
    /// The rule's name as stored and shown to policies.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TtlAboveClassMax => "ttl_above_class_max",
            Self::LongLivedCertificate => "long_lived_certificate",
        }
    }

    /// Checks a value for this rule; both rules take a duration.
    pub fn check_value(self, value: &str) -> Result<Ttl, String> {
        Ttl::parse(value).map_err(|e| format!("rule `{}` needs a duration value: {e}", self.as_str()))
    }
}

impl fmt::Display for ExceptionRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ExceptionRule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ttl_above_class_max" => Ok(Self::TtlAboveClassMax),
            "long_lived_certificate" => Ok(Self::LongLivedCertificate),
            o => Err(format!("unknown exception rule `{o}` (ttl_above_class_max, long_lived_certificate)")),
        }
    }
}

/// An approved exception in force at the time of a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveException {
    /// Exception id.
    pub id: String,
    /// The rule.
    pub rule: ExceptionRule,
    /// Its value, as recorded.
    pub value: String,
    /// Unix seconds.
    pub expires_at: i64,
}

impl ActiveException {
    /// The TTL ceiling this exception allows for `path`, if it raises one.
    pub fn raised_ceiling(&self, path: IssuancePath) -> Option<u64> {
        let applies = match self.rule {
            ExceptionRule::TtlAboveClassMax => matches!(path, IssuancePath::X509 | IssuancePath::Jwt),
            ExceptionRule::LongLivedCertificate => path == IssuancePath::X509,
        };
        if !applies {
            return None;
        }
        self.rule.check_value(&self.value).ok().map(Ttl::secs)
    }
}
