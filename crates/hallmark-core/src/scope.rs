//! What an owner may register: SPIFFE-ID path scopes and the nodes its
//! entries may name as parent. A trust-admin sets them; an `owner:NAME` token
//! may register only inside them, and every entry of an owner with path
//! scopes lies under one of them, whoever registers it.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{SpiffeId, TrustDomain};

/// Most path scopes or node patterns one owner may have.
pub const MAX_SCOPES: usize = 64;

/// Why a scope was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScopeError {
    /// A path scope that is not `/` or a valid SPIFFE-ID path.
    #[error("invalid path scope `{0}`: `/` or a SPIFFE-ID path such as `/billing/` is expected")]
    Path(String),
    /// A path scope under Hallmark's own `/hallmark/`.
    #[error("path scope `{0}` is reserved: paths under `/hallmark/` name Hallmark's own servers and agents")]
    Reserved(String),
    /// A node pattern that is not `*`, an agent ID, or an agent-ID prefix ending in `/*`.
    #[error(
        "invalid node `{0}`: `*`, an agent's SPIFFE ID, or a prefix of agent IDs ending in `/*` (e.g. `spiffe://TD/hallmark/agent/join_token/*`) is expected"
    )]
    Node(String),
    /// Too many scopes.
    #[error("too many {0} (at most {MAX_SCOPES})")]
    TooMany(&'static str),
}

/// A SPIFFE-ID path prefix, matched by whole segments: `/billing` covers
/// `/billing` and `/billing/api`, not `/billing2`. `/` covers every path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PathScope(String);

impl PathScope {
    /// Parses `/`, `/billing` or `/billing/` (a trailing `/` is dropped).
    pub fn parse(s: &str, td: &TrustDomain) -> Result<Self, ScopeError> {
        let bad = || ScopeError::Path(s.to_owned());
        if s == "/" {
            return Ok(Self("/".into()));
        }
        let trimmed = s.strip_suffix('/').unwrap_or(s);
        if !trimmed.starts_with('/') {
            return Err(bad());
        }
        let id = SpiffeId::new(&format!("spiffe://{td}{trimmed}")).map_err(|_| bad())?;
        if id.is_reserved() {
            return Err(ScopeError::Reserved(s.to_owned()));
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// True when `id`'s path lies under this scope.
    pub fn covers(&self, id: &SpiffeId) -> bool {
        self.covers_path(id.path())
    }

    fn covers_path(&self, path: &str) -> bool {
        self.0 == "/" || path == self.0 || path.strip_prefix(self.0.as_str()).is_some_and(|rest| rest.starts_with('/'))
    }

    /// True when the two scopes share a path: one lies under the other.
    pub fn overlaps(&self, other: &PathScope) -> bool {
        self.covers_path(&other.0) || other.covers_path(&self.0)
    }

    /// The scope as written back (`/billing`, or `/`).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PathScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The nodes an owner's entries may name as parent: every node (`*`), one
/// agent's SPIFFE ID, or every agent ID under a prefix (`…/join_token/*`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeScope {
    /// Any node.
    Any,
    /// Exactly this agent.
    Agent(SpiffeId),
    /// Every agent whose ID starts with this (which ends in `/`).
    Prefix(String),
}

impl NodeScope {
    /// Parses `*`, an agent ID, or an agent-ID prefix ending in `/*`, in `td`.
    pub fn parse(s: &str, td: &TrustDomain) -> Result<Self, ScopeError> {
        let bad = || ScopeError::Node(s.to_owned());
        if s == "*" {
            return Ok(Self::Any);
        }
        if let Some(prefix) = s.strip_suffix("/*") {
            // The prefix itself must be a valid ID under the agents' path.
            let id = SpiffeId::workload_in(prefix, td).map_err(|_| bad())?;
            let under_agents = id.path() == "/hallmark/agent" || id.is_agent();
            return if under_agents { Ok(Self::Prefix(format!("{prefix}/"))) } else { Err(bad()) };
        }
        let id = SpiffeId::workload_in(s, td).map_err(|_| bad())?;
        if id.is_agent() { Ok(Self::Agent(id)) } else { Err(bad()) }
    }

    /// True when an entry may name `parent`.
    pub fn allows(&self, parent: &SpiffeId) -> bool {
        match self {
            Self::Any => true,
            Self::Agent(id) => id == parent,
            Self::Prefix(p) => parent.as_str().starts_with(p.as_str()),
        }
    }
}

impl fmt::Display for NodeScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Agent(id) => write!(f, "{id}"),
            Self::Prefix(p) => write!(f, "{p}*"),
        }
    }
}

/// An owner's scopes: where its entries' SPIFFE IDs lie and which nodes they
/// may name. Empty lists mean "none given": see [`OwnerScopes::check`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnerScopes {
    /// SPIFFE-ID path scopes.
    pub paths: Vec<PathScope>,
    /// Nodes entries may name as parent.
    pub nodes: Vec<NodeScope>,
}

/// Why an entry falls outside its owner's scopes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OutOfScope {
    /// The owner has no path scopes, and the caller is confined to them.
    #[error(
        "owner `{owner}` has no SPIFFE-ID path scopes, so its token may register nothing (a trust-admin sets them: `hallmark owner update {owner} --path /PREFIX/`)"
    )]
    NoPaths {
        /// The owner.
        owner: String,
    },
    /// The owner has no node list, and the caller is confined to it.
    #[error(
        "owner `{owner}` may use no nodes, so its token may register nothing (a trust-admin sets them: `hallmark owner update {owner} --node AGENT_ID`)"
    )]
    NoNodes {
        /// The owner.
        owner: String,
    },
    /// The SPIFFE ID is under none of the owner's path scopes.
    #[error("SPIFFE ID `{id}` is outside owner `{owner}`'s path scopes ({scopes})")]
    Path {
        /// The ID.
        id: String,
        /// The owner.
        owner: String,
        /// Its scopes, comma-separated.
        scopes: String,
    },
    /// The parent is none of the nodes the owner may use.
    #[error("owner `{owner}` may not use node `{parent}` (its nodes: {nodes})")]
    Node {
        /// The parent named.
        parent: String,
        /// The owner.
        owner: String,
        /// Its node patterns, comma-separated.
        nodes: String,
    },
}

fn joined<T: fmt::Display>(items: &[T]) -> String {
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

impl OwnerScopes {
    /// Parses path scopes and node patterns as given by a trust-admin.
    pub fn parse(paths: &[String], nodes: &[String], td: &TrustDomain) -> Result<Self, ScopeError> {
        if paths.len() > MAX_SCOPES {
            return Err(ScopeError::TooMany("path scopes"));
        }
        if nodes.len() > MAX_SCOPES {
            return Err(ScopeError::TooMany("nodes"));
        }
        let mut s = Self {
            paths: paths.iter().map(|p| PathScope::parse(p, td)).collect::<Result<_, _>>()?,
            nodes: nodes.iter().map(|n| NodeScope::parse(n, td)).collect::<Result<_, _>>()?,
        };
        s.paths.sort();
        s.paths.dedup();
        s.nodes.sort();
        s.nodes.dedup();
        Ok(s)
    }

    /// Checks an entry of `owner` with this SPIFFE ID and parent.
    ///
    /// - Path scopes, when the owner has any, bind every entry of the owner,
    ///   whoever registers it.
    /// - The node list, when the owner has one, binds every entry too.
    /// - A caller `confined` to the owner (an `owner:NAME` token) needs both:
    ///   with no path scopes or no node list, it may register nothing.
    pub fn check(&self, owner: &str, id: &SpiffeId, parent: &SpiffeId, confined: bool) -> Result<(), OutOfScope> {
        if confined && self.paths.is_empty() {
            return Err(OutOfScope::NoPaths { owner: owner.to_owned() });
        }
        if confined && self.nodes.is_empty() {
            return Err(OutOfScope::NoNodes { owner: owner.to_owned() });
        }
        if !self.paths.is_empty() && !self.paths.iter().any(|p| p.covers(id)) {
            return Err(OutOfScope::Path { id: id.to_string(), owner: owner.to_owned(), scopes: joined(&self.paths) });
        }
        if !self.nodes.is_empty() && !self.nodes.iter().any(|n| n.allows(parent)) {
            return Err(OutOfScope::Node {
                parent: parent.to_string(),
                owner: owner.to_owned(),
                nodes: joined(&self.nodes),
            });
        }
        Ok(())
    }
}

/// Scopes as stored and sent over the admin API: plain strings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeLists {
    /// Path scopes.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Node patterns.
    #[serde(default)]
    pub nodes: Vec<String>,
}

impl From<&OwnerScopes> for ScopeLists {
    fn from(s: &OwnerScopes) -> Self {
        Self {
            paths: s.paths.iter().map(ToString::to_string).collect(),
            nodes: s.nodes.iter().map(ToString::to_string).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn td() -> TrustDomain {
        TrustDomain::new("example.org").unwrap()
    }

    fn id(path: &str) -> SpiffeId {
        SpiffeId::new(&format!("spiffe://example.org{path}")).unwrap()
    }

    #[test]
    fn path_scopes_match_whole_segments() {
        let s = PathScope::parse("/billing/", &td()).unwrap();
        assert_eq!(s.as_str(), "/billing");
        assert!(s.covers(&id("/billing")) && s.covers(&id("/billing/api")));
        assert!(!s.covers(&id("/billing2")) && !s.covers(&id("/bill")) && !s.covers(&id("/x/billing")));
        let all = PathScope::parse("/", &td()).unwrap();
        assert!(all.covers(&id("/anything/at/all")));
        let api = PathScope::parse("/billing/api", &td()).unwrap();
        assert!(s.overlaps(&api) && api.overlaps(&s) && all.overlaps(&s));
        assert!(!s.overlaps(&PathScope::parse("/billing2", &td()).unwrap()));
        for bad in ["", "billing", "//", "/a//b", "/a b", "/..", "/hallmark", "/hallmark/x", "/HallMark/"] {
            assert!(PathScope::parse(bad, &td()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn node_scopes() {
        let agent = id("/hallmark/agent/join_token/abc");
        assert!(NodeScope::parse("*", &td()).unwrap().allows(&agent));
        assert!(NodeScope::parse(agent.as_str(), &td()).unwrap().allows(&agent));
        let p = NodeScope::parse("spiffe://example.org/hallmark/agent/join_token/*", &td()).unwrap();
        assert!(p.allows(&agent) && !p.allows(&id("/hallmark/agent/local")));
        let all_agents = NodeScope::parse("spiffe://example.org/hallmark/agent/*", &td()).unwrap();
        assert!(all_agents.allows(&agent) && all_agents.allows(&id("/hallmark/agent/local")));
        assert_eq!(p.to_string(), "spiffe://example.org/hallmark/agent/join_token/*");
        for bad in [
            "spiffe://example.org/web",
            "spiffe://other.org/hallmark/agent/x",
            "spiffe://example.org/hallmark/server",
            "spiffe://example.org/web/*",
            "spiffe://example.org/hallmark/*",
            "**",
            "",
        ] {
            assert!(NodeScope::parse(bad, &td()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn checks_bind_everyone_and_confine_owner_tokens() {
        let agent = id("/hallmark/agent/local");
        let other_agent = id("/hallmark/agent/join_token/x");
        let none = OwnerScopes::default();
        assert!(none.check("alpha", &id("/x"), &agent, false).is_ok(), "no scopes bind operators to nothing");
        assert!(matches!(none.check("alpha", &id("/x"), &agent, true), Err(OutOfScope::NoPaths { .. })));
        let s = OwnerScopes::parse(&["/billing/".into()], &[agent.to_string()], &td()).unwrap();
        assert!(s.check("alpha", &id("/billing/api"), &agent, true).is_ok());
        let e = s.check("alpha", &id("/beta/db"), &agent, false).unwrap_err();
        assert!(e.to_string().contains("/beta/db") && e.to_string().contains("/billing"), "{e}");
        let e = s.check("alpha", &id("/billing/api"), &other_agent, true).unwrap_err();
        assert!(e.to_string().contains("may not use node"), "{e}");
        let paths_only = OwnerScopes::parse(&["/billing".into()], &[], &td()).unwrap();
        assert!(matches!(paths_only.check("a", &id("/billing"), &agent, true), Err(OutOfScope::NoNodes { .. })));
        assert!(paths_only.check("a", &id("/billing"), &other_agent, false).is_ok());
    }
}
