//! SPIFFE IDs and trust domains (SPIFFE-ID standard, see shared SPIFFE.md §2).

use std::fmt;
use std::str::FromStr;

/// Longest SPIFFE ID we accept or generate, in bytes.
pub const MAX_SPIFFE_ID_LEN: usize = 2048;
/// Longest trust domain name, in bytes.
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// Why a string is not a valid SPIFFE ID or trust domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpiffeIdError {
    /// The string does not start with `spiffe://`.
    #[error("invalid SPIFFE ID `{0}`: scheme must be `spiffe://`")]
    Scheme(String),
    /// The trust domain is empty.
    #[error("invalid SPIFFE ID `{0}`: trust domain is empty")]
    EmptyTrustDomain(String),
    /// The trust domain has a character outside `[a-z0-9.-_]`.
    #[error("invalid trust domain `{0}`: only lowercase letters, digits, `.`, `-` and `_` are allowed")]
    TrustDomainChar(String),
    /// The trust domain is longer than 255 bytes.
    #[error("invalid trust domain `{0}`: longer than 255 bytes")]
    TrustDomainTooLong(String),
    /// The path has an empty segment (`//` or a trailing `/`).
    #[error("invalid SPIFFE ID `{0}`: path has an empty segment or a trailing `/`")]
    EmptySegment(String),
    /// The path has a `.` or `..` segment.
    #[error("invalid SPIFFE ID `{0}`: path has a `.` or `..` segment")]
    DotSegment(String),
    /// The path has a character outside `[a-zA-Z0-9.-_]`.
    #[error("invalid SPIFFE ID `{0}`: path segments allow only letters, digits, `.`, `-` and `_`")]
    PathChar(String),
    /// The whole ID is longer than 2048 bytes.
    #[error("invalid SPIFFE ID: longer than 2048 bytes")]
    TooLong,
    /// A workload ID was required but the ID has no path.
    #[error("invalid SPIFFE ID `{0}`: a workload ID must have a path")]
    NoPath(String),
    /// The ID belongs to another trust domain than the one expected.
    #[error("SPIFFE ID `{id}` is not in trust domain `{expected}`")]
    WrongTrustDomain {
        /// The ID given.
        id: String,
        /// The trust domain it had to be in.
        expected: String,
    },
}

/// A trust domain name: non-empty, lowercase `[a-z0-9.-_]`, at most 255 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Parses a bare trust domain name (`example.org`) or its ID form (`spiffe://example.org`).
    pub fn new(s: &str) -> Result<Self, SpiffeIdError> {
        let name = s.strip_prefix("spiffe://").unwrap_or(s);
        check_trust_domain(name, s)?;
        Ok(Self(name.to_owned()))
    }

    /// The trust domain name, e.g. `example.org`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The trust domain's own SPIFFE ID, `spiffe://<name>` (no path).
    pub fn id(&self) -> SpiffeId {
        SpiffeId { uri: format!("spiffe://{}", self.0), td_len: self.0.len() }
    }

    /// Builds a workload ID in this trust domain from path segments, each checked.
    pub fn workload_id(&self, segments: &[&str]) -> Result<SpiffeId, SpiffeIdError> {
        SpiffeId::new(&format!("spiffe://{}/{}", self.0, segments.join("/")))
    }

    /// The SPIFFE ID every Hallmark server presents to agents:
    /// `spiffe://<td>/hallmark/server`.
    pub fn server_id(&self) -> SpiffeId {
        let uri = format!("spiffe://{}/{RESERVED_SEGMENT}/server", self.0);
        SpiffeId { uri, td_len: self.0.len() }
    }

    /// An agent's SPIFFE ID, `spiffe://<td>/hallmark/agent/<segments…>`:
    /// `["local"]` for `hallmark up`'s embedded agent, `["join_token", ID]`
    /// for an agent attested by a join token.
    pub fn agent_id(&self, segments: &[&str]) -> Result<SpiffeId, SpiffeIdError> {
        SpiffeId::new(&format!("spiffe://{}/{RESERVED_SEGMENT}/agent/{}", self.0, segments.join("/")))
    }

    /// `hallmark up`'s embedded agent: `spiffe://<td>/hallmark/agent/local`.
    pub fn local_agent_id(&self) -> SpiffeId {
        let uri = format!("spiffe://{}/{RESERVED_SEGMENT}/agent/local", self.0);
        SpiffeId { uri, td_len: self.0.len() }
    }

    /// An agent attested by the join token whose id (the first 16 hex digits
    /// of its hash) is `token_id`: `spiffe://<td>/hallmark/agent/join_token/<id>`.
    pub fn join_token_agent_id(&self, token_id: &str) -> Result<SpiffeId, SpiffeIdError> {
        self.agent_id(&["join_token", token_id])
    }
}

/// The first path segment of the identities Hallmark uses for itself (its
/// servers and agents). No registration entry may hold an ID under it, in
/// any letter case.
pub const RESERVED_SEGMENT: &str = "hallmark";

/// The first path segment of every person's SPIFFE ID (`spiffe://TD/human/...`).
pub const HUMAN_SEGMENT: &str = "human";

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// A SPIFFE ID that obeys every rule of the SPIFFE-ID standard.
///
/// The scheme must be exactly `spiffe` (lowercase), as go-spiffe also requires:
/// IDs are compared byte for byte, so accepting other spellings would let two
/// strings name one identity.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    uri: String,
    td_len: usize,
}

impl SpiffeId {
    /// Parses and checks a SPIFFE ID.
    pub fn new(s: &str) -> Result<Self, SpiffeIdError> {
        if s.len() > MAX_SPIFFE_ID_LEN {
            return Err(SpiffeIdError::TooLong);
        }
        let rest = s.strip_prefix("spiffe://").ok_or_else(|| SpiffeIdError::Scheme(s.to_owned()))?;
        let (td, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        check_trust_domain(td, s)?;
        if !path.is_empty() {
            for seg in path[1..].split('/') {
                if seg.is_empty() {
                    return Err(SpiffeIdError::EmptySegment(s.to_owned()));
                }
                if seg == "." || seg == ".." {
                    return Err(SpiffeIdError::DotSegment(s.to_owned()));
                }
                if !seg.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')) {
                    return Err(SpiffeIdError::PathChar(s.to_owned()));
                }
            }
        }
        Ok(Self { uri: s.to_owned(), td_len: td.len() })
    }

    /// Parses a SPIFFE ID that must name a workload: it has a path and is in `td`.
    pub fn workload_in(s: &str, td: &TrustDomain) -> Result<Self, SpiffeIdError> {
        let id = Self::new(s)?;
        if id.path().is_empty() {
            return Err(SpiffeIdError::NoPath(s.to_owned()));
        }
        if id.trust_domain_name() != td.as_str() {
            return Err(SpiffeIdError::WrongTrustDomain { id: s.to_owned(), expected: td.to_string() });
        }
        Ok(id)
    }

    /// The whole ID as a URI string.
    pub fn as_str(&self) -> &str {
        &self.uri
    }

    /// The trust domain name.
    pub fn trust_domain_name(&self) -> &str {
        &self.uri["spiffe://".len().."spiffe://".len() + self.td_len]
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> TrustDomain {
        TrustDomain(self.trust_domain_name().to_owned())
    }

    /// The path, starting with `/`, or empty for a trust domain ID.
    pub fn path(&self) -> &str {
        &self.uri["spiffe://".len() + self.td_len..]
    }

    /// True for the IDs Hallmark keeps for itself: those whose first path
    /// segment is `hallmark`, in any letter case (so that no entry can hold
    /// an ID a person would read as the server's or an agent's).
    pub fn is_reserved(&self) -> bool {
        let first = self.path().trim_start_matches('/').split('/').next().unwrap_or_default();
        first.eq_ignore_ascii_case(RESERVED_SEGMENT)
    }

    /// True for a person's ID: the first path segment is `human`, in any
    /// letter case. Only `hallmark login` issues these, under the human
    /// issuing authority; no registration entry may hold one.
    pub fn is_human(&self) -> bool {
        let first = self.path().trim_start_matches('/').split('/').next().unwrap_or_default();
        first.eq_ignore_ascii_case(HUMAN_SEGMENT)
    }

    /// True for an agent's ID: `/hallmark/agent/` followed by at least one segment.
    pub fn is_agent(&self) -> bool {
        self.path().strip_prefix("/hallmark/agent/").is_some_and(|rest| !rest.is_empty())
    }
}

fn check_trust_domain(td: &str, whole: &str) -> Result<(), SpiffeIdError> {
    if td.is_empty() {
        return Err(SpiffeIdError::EmptyTrustDomain(whole.to_owned()));
    }
    if td.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(SpiffeIdError::TrustDomainTooLong(td.to_owned()));
    }
    if !td.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')) {
        return Err(SpiffeIdError::TrustDomainChar(td.to_owned()));
    }
    Ok(())
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({})", self.uri)
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl serde::Serialize for SpiffeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.uri)
    }
}

impl<'de> serde::Deserialize<'de> for SpiffeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The conformance corpus: one SPIFFE ID per line, `ok` or `err` first.
    #[test]
    fn corpus() {
        let corpus = include_str!("../tests/data/spiffe_ids.txt");
        let mut n = 0;
        for line in corpus.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')) {
            let (verdict, id) = line.split_once(' ').unwrap_or((line, ""));
            let id = id.replace("<LONG>", &"a".repeat(2036));
            let got = SpiffeId::new(&id);
            match verdict {
                "ok" => assert!(got.is_ok(), "expected {id:?} to be accepted, got {got:?}"),
                "err" => assert!(got.is_err(), "expected {id:?} to be refused"),
                other => panic!("bad corpus verdict {other}"),
            }
            n += 1;
        }
        assert!(n > 30);
    }

    #[test]
    fn parts() {
        let id = SpiffeId::new("spiffe://example.org/ns/prod/web").unwrap();
        assert_eq!(id.trust_domain_name(), "example.org");
        assert_eq!(id.path(), "/ns/prod/web");
        let td = SpiffeId::new("spiffe://example.org").unwrap();
        assert_eq!(td.path(), "");
        let td = TrustDomain::new("example.org").unwrap();
        assert!(SpiffeId::workload_in("spiffe://example.org", &td).is_err());
        assert!(SpiffeId::workload_in("spiffe://other.org/x", &td).is_err());
        assert!(SpiffeId::workload_in("spiffe://example.org/x", &td).is_ok());
        assert_eq!(td.workload_id(&["hallmark", "agent"]).unwrap().as_str(), "spiffe://example.org/hallmark/agent");
    }

    #[test]
    fn reserved_and_agent_ids() {
        let td = TrustDomain::new("example.org").unwrap();
        assert_eq!(td.server_id().as_str(), "spiffe://example.org/hallmark/server");
        assert_eq!(SpiffeId::new(td.server_id().as_str()).unwrap(), td.server_id());
        let local = td.local_agent_id();
        assert_eq!(local.as_str(), "spiffe://example.org/hallmark/agent/local");
        assert_eq!(SpiffeId::new(local.as_str()).unwrap(), local);
        let joined = td.join_token_agent_id("0123456789abcdef").unwrap();
        assert_eq!(joined.as_str(), "spiffe://example.org/hallmark/agent/join_token/0123456789abcdef");
        assert!(joined.is_agent());
        assert!(local.is_agent() && local.is_reserved());
        for id in ["/hallmark", "/hallmark/server", "/HallMark/x", "/HALLMARK/agent/local", "/hallmark/agent"] {
            let id = SpiffeId::new(&format!("spiffe://example.org{id}")).unwrap();
            assert!(id.is_reserved(), "{id}");
        }
        for id in ["/hallmarks", "/web/hallmark", "/hallmark-agent", "/x"] {
            let id = SpiffeId::new(&format!("spiffe://example.org{id}")).unwrap();
            assert!(!id.is_reserved(), "{id}");
            assert!(!id.is_agent(), "{id}");
        }
        assert!(!SpiffeId::new("spiffe://example.org/hallmark/agent").unwrap().is_agent());
        assert!(!td.server_id().is_agent());
        assert!(!td.id().is_reserved());
    }
}
