//! A workload's evidence as the agent holds it: the selectors attestation
//! produced and their digest ([`evidence_digest`]), the key under which the
//! cache holds what that evidence was given.
//!
//! The digest is computed once, when the evidence is made, and travels with
//! the selectors: every cache look-up of a call (its JWT-SVIDs per entry and
//! audience, its X.509-SVIDs, its interest) used to hash the selectors' text
//! again. The two cannot disagree: the fields are private and only
//! [`Evidence::new`] sets them.

use hallmark_core::{SelectorSet, evidence_digest};

/// Selectors and their digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    selectors: SelectorSet,
    digest: String,
}

impl Evidence {
    /// The evidence `selectors`, with their digest.
    pub fn new(selectors: SelectorSet) -> Self {
        let digest = evidence_digest(&selectors);
        Self { selectors, digest }
    }

    /// The selectors, what entries match.
    pub fn selectors(&self) -> &SelectorSet {
        &self.selectors
    }

    /// [`evidence_digest`] of the selectors.
    pub fn digest(&self) -> &str {
        &self.digest
    }
}

impl From<SelectorSet> for Evidence {
    fn from(selectors: SelectorSet) -> Self {
        Self::new(selectors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_the_selectors_digest() {
        let s: SelectorSet = ["unix:uid:1000", "unix:gid:100"].iter().map(|s| s.parse().unwrap()).collect();
        let e = Evidence::new(s.clone());
        assert_eq!(e.digest(), evidence_digest(&s));
        assert_eq!(e.selectors(), &s);
    }
}
