//! Selectors: the `type:key:value` facts that attestors produce and entries require.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// Longest selector value accepted, in bytes.
pub const MAX_SELECTOR_VALUE_LEN: usize = 4096;

/// The selector types and the keys each one knows. An entry may only name these.
const KNOWN: &[(&str, &[&str])] = &[("unix", &["uid", "gid", "user", "group", "path", "sha256", "supplementary_gid"])];

/// Why a string is not a valid selector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SelectorError {
    /// Not of the form `type:key:value`.
    #[error("invalid selector `{0}`: expected `type:key:value`")]
    Form(String),
    /// The type is not one Hallmark's attestors produce.
    #[error("unknown selector type `{0}` (known: unix)")]
    UnknownType(String),
    /// The key is not one this type has.
    #[error("unknown selector key `{key}` for type `{kind}` (known: {known})")]
    UnknownKey {
        /// Selector type.
        kind: String,
        /// The key given.
        key: String,
        /// The keys this type knows.
        known: String,
    },
    /// The value is malformed for its key.
    #[error("invalid selector `{0}`: {1}")]
    Value(String, &'static str),
}

/// One attested fact, `type:key:value` (for example `unix:uid:1000`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Selector {
    kind: String,
    key: String,
    value: String,
}

impl Selector {
    /// Builds a selector, checking type, key and value.
    pub fn new(kind: &str, key: &str, value: &str) -> Result<Self, SelectorError> {
        let whole = format!("{kind}:{key}:{value}");
        let Some((_, keys)) = KNOWN.iter().find(|(k, _)| *k == kind) else {
            return Err(SelectorError::UnknownType(kind.to_owned()));
        };
        if !keys.contains(&key) {
            return Err(SelectorError::UnknownKey {
                kind: kind.to_owned(),
                key: key.to_owned(),
                known: keys.join(", "),
            });
        }
        if value.is_empty() {
            return Err(SelectorError::Value(whole, "value is empty"));
        }
        if value.len() > MAX_SELECTOR_VALUE_LEN {
            return Err(SelectorError::Value(whole, "value is longer than 4096 bytes"));
        }
        if value.chars().any(char::is_control) {
            return Err(SelectorError::Value(whole, "value has a control character"));
        }
        match key {
            "uid" | "gid" | "supplementary_gid" if value.parse::<u32>().is_err() => {
                return Err(SelectorError::Value(whole, "value must be a decimal number"));
            }
            "sha256" if value.len() != 64 || !value.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) => {
                return Err(SelectorError::Value(whole, "value must be 64 lowercase hex digits"));
            }
            "path" if !value.starts_with('/') => {
                return Err(SelectorError::Value(whole, "value must be an absolute path"));
            }
            _ => {}
        }
        Ok(Self { kind: kind.to_owned(), key: key.to_owned(), value: value.to_owned() })
    }

    /// The selector type, e.g. `unix`.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The key within the type, e.g. `uid`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The value, e.g. `1000`.
    pub fn value(&self) -> &str {
        &self.value
    }
}

impl FromStr for Selector {
    type Err = SelectorError;
    /// Parses `type:key:value`; the value may itself contain `:`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(t), Some(k), Some(v)) if !t.is_empty() && !k.is_empty() => Self::new(t, k, v),
            _ => Err(SelectorError::Form(s.to_owned())),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.kind, self.key, self.value)
    }
}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Selector({self})")
    }
}

impl serde::Serialize for Selector {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Selector {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A sorted, duplicate-free set of selectors.
pub type SelectorSet = BTreeSet<Selector>;

/// SHA-256 hex over the canonical form of a selector set (sorted,
/// newline-terminated): the digest under which evidence is cached and recorded.
pub fn evidence_digest(s: &SelectorSet) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for sel in s {
        h.update(sel.to_string().as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse() {
        let s: Selector = "unix:uid:1000".parse().unwrap();
        assert_eq!((s.kind(), s.key(), s.value()), ("unix", "uid", "1000"));
        let p: Selector = "unix:path:/opt/a:b".parse().unwrap();
        assert_eq!(p.value(), "/opt/a:b");
        assert_eq!(p.to_string(), "unix:path:/opt/a:b");
    }

    #[test]
    fn refuses() {
        for bad in [
            "",
            "unix",
            "unix:uid",
            "unix:uid:",
            ":uid:1",
            "k8s:ns:default",
            "unix:pid:1",
            "unix:uid:abc",
            "unix:uid:-1",
            "unix:sha256:ABCD",
            "unix:path:relative",
            "unix:user:a\nb",
        ] {
            assert!(bad.parse::<Selector>().is_err(), "{bad:?} accepted");
        }
        let err = "k8s:ns:x".parse::<Selector>().unwrap_err().to_string();
        assert!(err.contains("`k8s`"), "{err}");
    }
}
