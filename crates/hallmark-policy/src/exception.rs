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
    pub fn check_value(self, value: &str) -> Result<Ttl, ExceptionRuleError> {
        Ttl::parse(value).map_err(|source| ExceptionRuleError::Value { rule: self, source })
    }
}

impl fmt::Display for ExceptionRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an exception's rule or value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExceptionRuleError {
    /// Not a rule an exception may lift.
    #[error("unknown exception rule `{0}` (ttl_above_class_max, long_lived_certificate)")]
    Unknown(String),
    /// The value is not the duration the rule takes.
    #[error("rule `{rule}` needs a duration value: {source}")]
    Value {
        /// The rule.
        rule: ExceptionRule,
        /// Why the duration was refused.
        #[source]
        source: hallmark_core::TtlError,
    },
}

impl FromStr for ExceptionRule {
    type Err = ExceptionRuleError;
    fn from_str(s: &str) -> Result<Self, ExceptionRuleError> {
        match s {
            "ttl_above_class_max" => Ok(Self::TtlAboveClassMax),
            "long_lived_certificate" => Ok(Self::LongLivedCertificate),
            o => Err(ExceptionRuleError::Unknown(o.to_owned())),
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
