//! Lifecycle classes: each has its own TTL ceiling, renewal point and allowed
//! issuance paths. Only `human` may ever have a recovery path.

use std::fmt;
use std::str::FromStr;

use hallmark_core::{Class, Ttl};
use serde::Deserialize;

/// A way a credential can be issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IssuancePath {
    /// X.509-SVIDs through the agent.
    X509,
    /// JWT-SVIDs through the agent.
    Jwt,
    /// Help-desk recovery (humans only; built by a later capability).
    Recovery,
}

impl fmt::Display for IssuancePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::X509 => "x509",
            Self::Jwt => "jwt",
            Self::Recovery => "recovery",
        })
    }
}

/// A name that is no issuance path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown issuance path `{0}` (x509, jwt, recovery)")]
pub struct UnknownIssuancePath(pub String);

impl FromStr for IssuancePath {
    type Err = UnknownIssuancePath;
    fn from_str(s: &str) -> Result<Self, UnknownIssuancePath> {
        match s {
            "x509" => Ok(Self::X509),
            "jwt" => Ok(Self::Jwt),
            "recovery" => Ok(Self::Recovery),
            o => Err(UnknownIssuancePath(o.to_owned())),
        }
    }
}

/// The rules of one lifecycle class.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassRules {
    /// No credential of this class lives longer, unless an exception says so.
    pub max_ttl: Ttl,
    /// Fraction of a credential's life after which it is renewed (0 < r < 1).
    pub renew_fraction: f64,
    /// How credentials of this class may be issued.
    pub paths: Vec<IssuancePath>,
}

impl ClassRules {
    /// Whether `path` is allowed.
    pub fn allows(&self, path: IssuancePath) -> bool {
        self.paths.contains(&path)
    }
}

/// The rules of all three classes.
#[derive(Debug, Clone, PartialEq)]
pub struct Classes {
    /// Services and jobs.
    pub machine: ClassRules,
    /// AI agents.
    pub agent: ClassRules,
    /// People.
    pub human: ClassRules,
}

/// Why a class configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassConfigError {
    /// A machine or agent class was given the recovery path.
    #[error("class `{0}` cannot have the recovery path: only `human` may ever be recovered")]
    Recovery(&'static str),
    /// The renewal fraction (configured as `renew_at`) out of range.
    #[error("class `{0}`: renew_at must be between 0 and 1 (exclusive)")]
    RenewFraction(&'static str),
}

impl Default for Classes {
    fn default() -> Self {
        let ttl = |s| Ttl::from_secs(s).unwrap_or(Ttl::MIN);
        Self {
            machine: ClassRules {
                max_ttl: ttl(24 * 3600),
                renew_fraction: 0.5,
                paths: vec![IssuancePath::X509, IssuancePath::Jwt],
            },
            agent: ClassRules {
                max_ttl: ttl(3600),
                renew_fraction: 0.5,
                paths: vec![IssuancePath::X509, IssuancePath::Jwt],
            },
            // People: certificates from `hallmark login` only (no JWT-SVIDs,
            // never through the Workload API), for a working day at most.
            human: ClassRules {
                max_ttl: ttl(8 * 3600),
                renew_fraction: 0.5,
                paths: vec![IssuancePath::X509, IssuancePath::Recovery],
            },
        }
    }
}

impl Classes {
    /// The rules of `class`.
    pub fn rules(&self, class: Class) -> &ClassRules {
        match class {
            Class::Machine => &self.machine,
            Class::Agent => &self.agent,
            Class::Human => &self.human,
        }
    }

    /// Checks the invariants: recovery for humans only, renewal point in (0, 1).
    pub fn validate(&self) -> Result<(), ClassConfigError> {
        for (name, r) in [("machine", &self.machine), ("agent", &self.agent), ("human", &self.human)] {
            if !(r.renew_fraction > 0.0 && r.renew_fraction < 1.0) {
                return Err(ClassConfigError::RenewFraction(name));
            }
            if name != "human" && r.allows(IssuancePath::Recovery) {
                return Err(ClassConfigError::Recovery(name));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_is_for_humans_only() {
        let mut c = Classes::default();
        assert!(c.validate().is_ok());
        c.machine.paths.push(IssuancePath::Recovery);
        assert_eq!(c.validate(), Err(ClassConfigError::Recovery("machine")));
        let mut c = Classes::default();
        c.agent.renew_fraction = 1.0;
        assert!(c.validate().is_err());
    }
}
