//! People's SPIFFE IDs: the template an OpenID Connect issuer's claims are
//! rendered into (`spiffe://TD/human/{email}`).
//!
//! Every person's ID is under `/human/` ([`crate::HUMAN_SEGMENT`]), and no
//! registration entry may hold one, so the two tracks cannot meet: a
//! workload never gets a person's ID and a login never gets a workload's.
//!
//! Rendering is injective, so two people never share an ID: each
//! placeholder becomes whole path segments of characters a SPIFFE path
//! allows, and a value that does not fit is refused rather than rewritten
//! (rewriting `a+b` to `a_b` would give it to whoever owns `a_b`).

use crate::{SpiffeId, TrustDomain};

/// The placeholders a template may use: claims the issuer vouches for.
/// `preferred_username` is not one: OpenID Connect Core 5.7 says it is
/// neither unique nor stable, and people can often change it.
const PLACEHOLDERS: &[&str] = &["{email}", "{sub}"];

/// Longest claim value rendered.
const MAX_VALUE_LEN: usize = 255;

/// Why a template was refused, or a person's claims could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HumanTemplateError {
    /// The template is not `spiffe://TD/human/...` in this trust domain.
    #[error("template `{0}` must start with `spiffe://{1}/human/` (people's IDs live under /human/)")]
    Prefix(String, String),
    /// Not exactly one placeholder, or an unknown one.
    #[error("template `{0}` must use exactly one of {{email}} or {{sub}}, as a whole path segment at its end")]
    Placeholder(String),
    /// The ID token lacks the claim the template uses.
    #[error("the ID token has no `{0}` claim, which the SPIFFE ID template uses")]
    MissingClaim(&'static str),
    /// The claim's value cannot form SPIFFE ID path segments.
    #[error(
        "`{claim}` value cannot form a SPIFFE ID: only letters, digits, `.`, `-` and `_` may appear (and `@` once in an email), at most 255 characters"
    )]
    Unfit {
        /// The claim.
        claim: &'static str,
    },
}

/// A validated `spiffe_id` template of an OpenID Connect issuer for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HumanIdTemplate {
    /// Everything before the placeholder, `spiffe://TD/human/...` ending in `/`.
    prefix: String,
    /// Which claim.
    claim: &'static str,
}

/// The claims of a verified ID token a template may read.
#[derive(Debug, Clone, Copy, Default)]
pub struct HumanClaims<'a> {
    /// `sub`.
    pub sub: &'a str,
    /// `email`.
    pub email: Option<&'a str>,
    /// `preferred_username`.
    pub preferred_username: Option<&'a str>,
}

impl HumanIdTemplate {
    /// Parses `text` for trust domain `td`: `spiffe://TD/human/[SEGMENTS/]{claim}`.
    pub fn parse(text: &str, td: &TrustDomain) -> Result<Self, HumanTemplateError> {
        let base = format!("spiffe://{td}/human/");
        if !text.starts_with(&base) {
            return Err(HumanTemplateError::Prefix(text.to_owned(), td.to_string()));
        }
        let bad = || HumanTemplateError::Placeholder(text.to_owned());
        let (prefix, last) = text.rsplit_once('/').ok_or_else(bad)?;
        let claim = PLACEHOLDERS.iter().find(|p| **p == last).ok_or_else(bad)?;
        // The fixed part must be a valid ID on its own (no placeholder, no
        // empty segment).
        if prefix.contains('{') || prefix.contains('}') {
            return Err(bad());
        }
        SpiffeId::new(prefix).map_err(|_| bad())?;
        Ok(Self { prefix: format!("{prefix}/"), claim: claim.trim_matches(|c| c == '{' || c == '}') })
    }

    /// Whether the template renders the email (then `email_verified` must be true).
    pub fn uses_email(&self) -> bool {
        self.claim == "email"
    }

    /// The claim the template renders.
    pub fn claim(&self) -> &'static str {
        self.claim
    }

    /// The fixed part, `spiffe://TD/human/...` ending in `/`: two issuers
    /// whose prefixes are the same or nested could render the same ID.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The person's SPIFFE ID. `{email}` `local@domain` becomes
    /// `domain/local`, lowercased; `{sub}` is one segment as given.
    pub fn render(&self, c: &HumanClaims<'_>) -> Result<SpiffeId, HumanTemplateError> {
        let unfit = || HumanTemplateError::Unfit { claim: self.claim };
        let path = match self.claim {
            "email" => {
                let email = c.email.ok_or(HumanTemplateError::MissingClaim("email"))?.to_ascii_lowercase();
                let (local, domain) = email.split_once('@').ok_or_else(unfit)?;
                if !fits(local) || !fits(domain) || email.len() > MAX_VALUE_LEN {
                    return Err(unfit());
                }
                format!("{domain}/{local}")
            }
            _ => one_segment(c.sub).ok_or_else(unfit)?,
        };
        let id = SpiffeId::new(&format!("{}{path}", self.prefix)).map_err(|_| unfit())?;
        if !id.is_human() {
            return Err(unfit());
        }
        Ok(id)
    }
}

/// A path segment of SPIFFE's characters, not `.` or `..`.
fn fits(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.len() <= MAX_VALUE_LEN
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

fn one_segment(s: &str) -> Option<String> {
    fits(s).then(|| s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn td() -> TrustDomain {
        "example.org".parse().unwrap()
    }

    fn email(e: &str) -> HumanClaims<'_> {
        HumanClaims { sub: "x", email: Some(e), preferred_username: None }
    }

    #[test]
    fn email_renders_as_domain_then_local_part() {
        let t = HumanIdTemplate::parse("spiffe://example.org/human/{email}", &td()).unwrap();
        assert!(t.uses_email());
        let id = t.render(&email("Alice@Example.com")).unwrap();
        assert_eq!(id.as_str(), "spiffe://example.org/human/example.com/alice");
        assert!(id.is_human());
    }

    #[test]
    fn values_that_do_not_fit_are_refused_not_rewritten() {
        let t = HumanIdTemplate::parse("spiffe://example.org/human/{email}", &td()).unwrap();
        for bad in ["a+b@example.com", "a@b@example.com", "noatsign", "@example.com", "a@", "../x@y", "a b@x.org"] {
            assert!(t.render(&email(bad)).is_err(), "{bad}");
        }
        assert_eq!(
            t.render(&HumanClaims { sub: "x", email: None, preferred_username: None }),
            Err(HumanTemplateError::MissingClaim("email"))
        );
        let sub = HumanIdTemplate::parse("spiffe://example.org/human/corp/{sub}", &td()).unwrap();
        assert!(!sub.uses_email());
        let ok = sub.render(&HumanClaims { sub: "248289761001", ..Default::default() }).unwrap();
        assert_eq!(ok.as_str(), "spiffe://example.org/human/corp/248289761001");
        for bad in ["", ".", "..", "a/b", "a%2fb", &"x".repeat(256)] {
            assert!(sub.render(&HumanClaims { sub: bad, ..Default::default() }).is_err(), "{bad}");
        }
    }

    #[test]
    fn templates_must_stay_under_human_with_one_trailing_placeholder() {
        for bad in [
            "spiffe://example.org/people/{email}",
            "spiffe://other.org/human/{email}",
            "spiffe://example.org/human/",
            "spiffe://example.org/human/{email}/x",
            "spiffe://example.org/human/{name}",
            "spiffe://example.org/human/{preferred_username}",
            "spiffe://example.org/human/{sub}{email}",
            "spiffe://example.org/human/{sub}/{email}",
            "spiffe://example.org/human//{email}",
        ] {
            assert!(HumanIdTemplate::parse(bad, &td()).is_err(), "{bad}");
        }
        let t = HumanIdTemplate::parse("spiffe://example.org/human/idp-a/{sub}", &td()).unwrap();
        assert_eq!(t.prefix(), "spiffe://example.org/human/idp-a/");
        let id = t.render(&HumanClaims { sub: "alice", email: None, preferred_username: Some("bob") }).unwrap();
        assert_eq!(id.as_str(), "spiffe://example.org/human/idp-a/alice");
    }
}
