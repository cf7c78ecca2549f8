//! Selectors: the `type:key:value` facts that attestors produce and entries require.

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
    // Type and key are always one of the known ones: no allocation each.
    kind: &'static str,
    key: &'static str,
    value: String,
}

impl Selector {
    /// Builds a selector, checking type, key and value.
    pub fn new(kind: &str, key: &str, value: &str) -> Result<Self, SelectorError> {
        let bad = |why| SelectorError::Value(format!("{kind}:{key}:{value}"), why);
        let Some((known_kind, keys)) = KNOWN.iter().find(|(k, _)| *k == kind) else {
            return Err(SelectorError::UnknownType(kind.to_owned()));
        };
        let Some(known_key) = keys.iter().find(|k| **k == key) else {
            return Err(SelectorError::UnknownKey {
                kind: kind.to_owned(),
                key: key.to_owned(),
                known: keys.join(", "),
            });
        };
        if value.is_empty() {
            return Err(bad("value is empty"));
        }
        if value.len() > MAX_SELECTOR_VALUE_LEN {
            return Err(bad("value is longer than 4096 bytes"));
        }
        if value.chars().any(char::is_control) {
            return Err(bad("value has a control character"));
        }
        match key {
            "uid" | "gid" | "supplementary_gid" if value.parse::<u32>().is_err() => {
                return Err(bad("value must be a decimal number"));
            }
            "sha256" if value.len() != 64 || !value.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) => {
                return Err(bad("value must be 64 lowercase hex digits"));
            }
            "path" if !value.starts_with('/') => {
                return Err(bad("value must be an absolute path"));
            }
            _ => {}
        }
        Ok(Self { kind: known_kind, key: known_key, value: value.to_owned() })
    }

    /// The selector type, e.g. `unix`.
    pub fn kind(&self) -> &str {
        self.kind
    }

    /// The key within the type, e.g. `uid`.
    pub fn key(&self) -> &str {
        self.key
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

/// A sorted, duplicate-free set of selectors. A sorted vector rather than a
/// tree: sets are small (a handful per entry), built once and read often,
/// and a registry holds a million of them, so compactness matters.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SelectorSet(Vec<Selector>);

impl SelectorSet {
    /// An empty set.
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// Adds `s`; false when it was already there.
    pub fn insert(&mut self, s: Selector) -> bool {
        match self.0.binary_search(&s) {
            Ok(_) => false,
            Err(at) => {
                self.0.insert(at, s);
                true
            }
        }
    }

    /// Removes `s`; false when it was not there.
    pub fn remove(&mut self, s: &Selector) -> bool {
        match self.0.binary_search(s) {
            Ok(at) => {
                self.0.remove(at);
                true
            }
            Err(_) => false,
        }
    }

    /// Whether `s` is in the set.
    pub fn contains(&self, s: &Selector) -> bool {
        self.0.binary_search(s).is_ok()
    }

    /// Whether every selector here is also in `other` (both sorted: one pass).
    pub fn is_subset(&self, other: &SelectorSet) -> bool {
        let mut theirs = other.0.iter();
        'mine: for s in &self.0 {
            for t in theirs.by_ref() {
                match t.cmp(s) {
                    std::cmp::Ordering::Less => {}
                    std::cmp::Ordering::Equal => continue 'mine,
                    std::cmp::Ordering::Greater => return false,
                }
            }
            return false;
        }
        true
    }

    /// The selectors, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Selector> {
        self.0.iter()
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<Selector> for SelectorSet {
    fn from_iter<I: IntoIterator<Item = Selector>>(iter: I) -> Self {
        let mut v: Vec<Selector> = iter.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        v.shrink_to_fit();
        Self(v)
    }
}

impl<const N: usize> From<[Selector; N]> for SelectorSet {
    fn from(a: [Selector; N]) -> Self {
        a.into_iter().collect()
    }
}

impl<'a> IntoIterator for &'a SelectorSet {
    type Item = &'a Selector;
    type IntoIter = std::slice::Iter<'a, Selector>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl IntoIterator for SelectorSet {
    type Item = Selector;
    type IntoIter = std::vec::IntoIter<Selector>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl fmt::Debug for SelectorSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(&self.0).finish()
    }
}

impl serde::Serialize for SelectorSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for SelectorSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Vec::<Selector>::deserialize(d)?.into_iter().collect())
    }
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
    fn sets_are_sorted_and_subsets_are_exact() {
        let set = |v: &[&str]| v.iter().map(|s| s.parse::<Selector>().unwrap()).collect::<SelectorSet>();
        let w = set(&["unix:uid:1", "unix:gid:2", "unix:path:/x", "unix:gid:2"]);
        assert_eq!(w.len(), 3, "duplicates are dropped");
        assert!(w.iter().zip(w.iter().skip(1)).all(|(a, b)| a < b), "sorted");
        assert!(set(&["unix:uid:1", "unix:path:/x"]).is_subset(&w));
        assert!(set(&[]).is_subset(&w));
        assert!(!set(&["unix:uid:1", "unix:uid:3"]).is_subset(&w));
        assert!(!set(&["unix:user:a"]).is_subset(&set(&[])));
        let mut m = SelectorSet::new();
        assert!(m.insert("unix:uid:1".parse().unwrap()) && !m.insert("unix:uid:1".parse().unwrap()));
        assert!(m.contains(&"unix:uid:1".parse().unwrap()));
        let json = serde_json::to_string(&w).unwrap();
        assert_eq!(serde_json::from_str::<SelectorSet>(&json).unwrap(), w);
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
