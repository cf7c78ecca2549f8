//! Selectors: the `type:key:value` facts that attestors produce and entries require.

use std::fmt;
use std::str::FromStr;

/// Longest selector value accepted, in bytes.
pub const MAX_SELECTOR_VALUE_LEN: usize = 4096;

/// The selector types and the keys each one knows. An entry may only name these.
///
/// - `unix`: kernel facts of the calling process (`ns` is `KIND:INODE` of one
///   of its namespaces; `host_ns` names a namespace kind it shares with the agent).
/// - `container`: the container the process runs in, from `/proc/PID/cgroup`
///   and the container runtime's API.
/// - `k8s`: the pod the container belongs to, from the kubelet.
///
/// Node selectors (what a node attestor proved about the agent's node):
/// - `node`: `node:attestation:ATTESTOR`, for every node.
/// - `x509pop`: the node certificate (`subject:cn:CN`, `ca:fingerprint:SHA1`,
///   `san:dns:NAME`, `san:uri:URI`, `san:ip:ADDR`).
/// - `tpm`: the TPM (`ek:sha256:HEX` of the EK public key, `pcr:N:HEX`).
/// - `k8s_psat`: the agent pod's projected service-account token.
const KNOWN: &[(&str, &[&str])] = &[
    ("unix", &["uid", "gid", "user", "group", "path", "sha256", "supplementary_gid", "ns", "host_ns"]),
    ("container", &["id", "image_digest", "image", "label", "name", "runtime"]),
    ("k8s", &["ns", "sa", "pod-uid", "pod-name", "pod-label", "container-name", "container-image"]),
    ("node", &["attestation"]),
    ("x509pop", &["subject", "ca", "san"]),
    ("tpm", &["ek", "pcr"]),
    ("k8s_psat", &["cluster", "agent_ns", "agent_sa", "agent_node_name", "agent_pod_uid"]),
];

/// The selector types that describe a node rather than a workload: entries
/// name them with `--node-selector`, never as workload selectors.
pub const NODE_KINDS: &[&str] = &["node", "x509pop", "tpm", "k8s_psat"];

/// The namespace kinds `unix:ns` and `unix:host_ns` speak of.
pub const NAMESPACE_KINDS: &[&str] = &["pid", "mnt", "net", "user", "cgroup"];

/// Whether `v` is `sha256:` and 64 lowercase hex digits: an image digest.
pub fn is_image_digest(v: &str) -> bool {
    v.strip_prefix("sha256:").is_some_and(is_sha256_hex)
}

/// Whether `v` is 64 lowercase hex digits.
fn is_sha256_hex(v: &str) -> bool {
    is_hex(v, 64)
}

/// Whether `v` is `len` lowercase hex digits.
fn is_hex(v: &str, len: usize) -> bool {
    v.len() == len && v.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Why a string is not a valid selector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SelectorError {
    /// Not of the form `type:key:value`.
    #[error("invalid selector `{0}`: expected `type:key:value`")]
    Form(String),
    /// The type is not one Hallmark's attestors produce.
    #[error("unknown selector type `{0}` (known: unix, container, k8s; for nodes: node, x509pop, tpm, k8s_psat)")]
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
        check_value(known_kind, known_key, value).map_err(bad)?;
        Ok(Self { kind: known_kind, key: known_key, value: value.to_owned() })
    }

    /// The selector type, e.g. `unix`.
    pub fn kind(&self) -> &str {
        self.kind
    }

    /// Whether it describes a node (see [`NODE_KINDS`]) rather than a workload.
    pub fn is_node(&self) -> bool {
        NODE_KINDS.contains(&self.kind)
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

/// The rule each key's value follows, beyond being non-empty, short and
/// free of control characters.
fn check_value(kind: &str, key: &str, value: &str) -> Result<(), &'static str> {
    let namespace = |v: &str| {
        let (ns, inode) = v.split_once(':')?;
        (NAMESPACE_KINDS.contains(&ns) && inode.parse::<u64>().is_ok()).then_some(())
    };
    let label = |v: &str| v.split_once(':').is_some_and(|(k, _)| !k.is_empty());
    let pcr =
        |v: &str| v.split_once(':').is_some_and(|(i, h)| i.parse::<u8>().is_ok_and(|i| i < 24) && is_sha256_hex(h));
    let uid = |v: &str| v.len() == 36 && v.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit());
    match (kind, key) {
        ("unix", "uid" | "gid" | "supplementary_gid") if value.parse::<u32>().is_err() => {
            Err("value must be a decimal number")
        }
        ("unix", "sha256") if !is_sha256_hex(value) => Err("value must be 64 lowercase hex digits"),
        ("unix", "path") if !value.starts_with('/') => Err("value must be an absolute path"),
        ("unix", "ns") if namespace(value).is_none() => {
            Err("value must be KIND:INODE, KIND one of pid, mnt, net, user, cgroup")
        }
        ("unix", "host_ns") if !NAMESPACE_KINDS.contains(&value) => {
            Err("value must be one of pid, mnt, net, user, cgroup")
        }
        ("container", "id") if !is_sha256_hex(value) => Err("value must be the full 64-hex-digit container id"),
        ("container", "image_digest") | ("k8s", "container-image") if !is_image_digest(value) => {
            Err("value must be an image digest, sha256: and 64 lowercase hex digits")
        }
        ("container", "label") | ("k8s", "pod-label") if !label(value) => Err("value must be KEY:VALUE"),
        ("k8s", "pod-uid") | ("k8s_psat", "agent_pod_uid") if !uid(value) => {
            Err("value must be a pod UID (36 characters, hex digits and dashes)")
        }
        ("x509pop", "subject") if value.split_once(':').is_none_or(|(k, _)| k != "cn") => Err("value must be cn:NAME"),
        ("x509pop", "ca") if value.strip_prefix("fingerprint:").is_none_or(|h| !is_hex(h, 40)) => {
            Err("value must be fingerprint: and the CA certificate's SHA-1, 40 lowercase hex digits")
        }
        ("x509pop", "san") if value.split_once(':').is_none_or(|(k, _)| !matches!(k, "dns" | "uri" | "ip")) => {
            Err("value must be dns:NAME, uri:URI or ip:ADDRESS")
        }
        ("tpm", "ek") if value.strip_prefix("sha256:").is_none_or(|h| !is_sha256_hex(h)) => {
            Err("value must be sha256: and 64 lowercase hex digits (the EK public key's hash)")
        }
        ("node", "attestation") if !matches!(value, "join_token" | "local" | "x509pop" | "tpm" | "k8s_psat") => {
            Err("value must be join_token, local, x509pop, tpm or k8s_psat")
        }
        ("tpm", "pcr") if !pcr(value) => Err("value must be INDEX:HEX (a PCR index 0-23 and its SHA-256 value)"),
        _ => Ok(()),
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

impl Extend<Selector> for SelectorSet {
    fn extend<I: IntoIterator<Item = Selector>>(&mut self, iter: I) {
        for s in iter {
            self.insert(s);
        }
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
            "kube:ns:default",
            "unix:pid:1",
            "unix:ns:pid",
            "unix:ns:time:1",
            "unix:ns:ipc:1",
            "unix:ns:pid:x",
            "unix:host_ns:time",
            "container:id:abc",
            "container:image_digest:abc",
            "container:image_digest:sha256:ABC",
            "container:label:nocolon",
            "container:label::v",
            "k8s:pod-uid:123",
            "k8s:container-image:nginx:1.25",
            "unix:uid:abc",
            "unix:uid:-1",
            "unix:sha256:ABCD",
            "unix:path:relative",
            "unix:user:a\nb",
        ] {
            assert!(bad.parse::<Selector>().is_err(), "{bad:?} accepted");
        }
        let err = "kube:ns:x".parse::<Selector>().unwrap_err().to_string();
        assert!(err.contains("`kube`"), "{err}");
    }

    #[test]
    fn container_and_pod_selectors() {
        let hex = "a".repeat(64);
        for good in [
            format!("container:id:{hex}"),
            format!("container:image_digest:sha256:{hex}"),
            "container:image:localhost/app:1".to_owned(),
            "container:label:team:pay:ments".to_owned(),
            "container:label:empty:".to_owned(),
            "container:name:web".to_owned(),
            "container:runtime:podman".to_owned(),
            "unix:ns:pid:4026531836".to_owned(),
            "unix:host_ns:net".to_owned(),
            "k8s:ns:default".to_owned(),
            "k8s:pod-uid:2f0c2b0c-6f4e-4a37-9b0e-3f7c1d2a9e11".to_owned(),
            format!("k8s:container-image:sha256:{hex}"),
            "k8s:pod-label:app:web".to_owned(),
        ] {
            let s: Selector = good.parse().unwrap_or_else(|e| panic!("{good}: {e}"));
            assert_eq!(s.to_string(), good);
        }
    }
}
