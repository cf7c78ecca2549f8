//! Which container and pod a process runs in, from `/proc/PID/cgroup`.
//!
//! The cgroup file is written by the kernel: a process can change what it
//! says only by moving itself into another cgroup, which needs write access
//! to the cgroup hierarchy. Mount tables (`/proc/PID/mountinfo`) are never
//! read for this: any process that can make a mount namespace (an
//! unprivileged user namespace is enough) can bind-mount a path that names
//! any container.
//!
//! Every runtime names the cgroup of a container after its 64-hex-digit id:
//! `docker-ID.scope` (Docker, systemd driver), `/docker/ID` (Docker,
//! cgroupfs), `cri-containerd-ID.scope` (containerd), `crio-ID.scope`
//! (CRI-O), `libpod-ID.scope` or `libpod-ID` (podman), and a bare `ID` under
//! a Kubernetes pod's cgroup. A pod's cgroup is `pod<UID>` (cgroupfs driver)
//! or `…-pod<UID with _ for ->.slice` (systemd driver).
//!
//! Nested clusters (kind: Kubernetes nodes that are themselves containers)
//! put the node's container id before the pod: only what follows the pod
//! segment names the workload's container. Anywhere else, a path naming two
//! different containers is ambiguous and gives no container at all.
//!
//! A process in a delegated subtree (`user@UID.service`, where systemd lets
//! a user create cgroups) can name its cgroups as it likes: such facts are
//! marked [`CgroupFacts::delegated`] for the attestor to judge.

use std::fmt;

/// The container runtime that named a cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// Docker Engine.
    Docker,
    /// containerd (its CRI plugin).
    Containerd,
    /// CRI-O.
    CriO,
    /// podman.
    Podman,
}

impl Runtime {
    /// The `container:runtime` selector value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Docker => "docker",
            Self::Containerd => "containerd",
            Self::CriO => "cri-o",
            Self::Podman => "podman",
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A container a process runs in, as its cgroup names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRef {
    /// The full 64-hex-digit container id.
    pub id: String,
    /// The runtime, when the cgroup's name says which.
    pub runtime: Option<Runtime>,
}

/// What a process's cgroup file says about where it runs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CgroupFacts {
    /// The container, if any.
    pub container: Option<ContainerRef>,
    /// The Kubernetes pod's UID (with dashes), if any.
    pub pod_uid: Option<String>,
    /// True when a cgroup naming the container or pod lies in a subtree
    /// delegated to a user, who could have named it.
    pub delegated: bool,
}

/// Why a cgroup file gives no facts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CgroupError {
    /// Two different containers are named.
    #[error("the cgroup file names two containers ({0} and {1}); no container selectors")]
    TwoContainers(String, String),
    /// Two different pods are named.
    #[error("the cgroup file names two pods ({0} and {1}); no pod selectors")]
    TwoPods(String, String),
    /// A line is not `ID:CONTROLLERS:PATH`.
    #[error("unparsable cgroup line `{0}`")]
    Line(String),
}

/// Parses `/proc/PID/cgroup` (cgroup v1, v2 or both).
pub fn parse_cgroup(text: &str) -> Result<CgroupFacts, CgroupError> {
    let mut facts = CgroupFacts::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(_), Some(path)) = (fields.next(), fields.next(), fields.next()) else {
            return Err(CgroupError::Line(line.chars().take(200).collect()));
        };
        let here = parse_path(path)?;
        if here.container.is_none() && here.pod_uid.is_none() {
            continue;
        }
        facts.delegated |= here.delegated;
        if let Some(c) = here.container {
            match &mut facts.container {
                Some(known) if known.id != c.id => return Err(CgroupError::TwoContainers(known.id.clone(), c.id)),
                Some(known) => known.runtime = known.runtime.or(c.runtime),
                None => facts.container = Some(c),
            }
        }
        if let Some(p) = here.pod_uid {
            match &facts.pod_uid {
                Some(known) if *known != p => return Err(CgroupError::TwoPods(known.clone(), p)),
                _ => facts.pod_uid = Some(p),
            }
        }
    }
    Ok(facts)
}

/// The facts one cgroup path gives.
fn parse_path(path: &str) -> Result<CgroupFacts, CgroupError> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let delegated = segments.iter().any(|s| *s == "user.slice" || (s.starts_with("user@") && s.ends_with(".service")));
    // The last pod segment; containers before it belong to the node (kind).
    let pod_at = segments.iter().rposition(|s| pod_uid(s).is_some());
    let pod_uid = pod_at.and_then(|i| segments.get(i)).and_then(|s| pod_uid(s));
    let from = pod_at.map_or(0, |i| i + 1);
    let mut container: Option<ContainerRef> = None;
    for (i, segment) in segments.iter().enumerate().skip(from) {
        let previous = i.checked_sub(1).and_then(|p| segments.get(p)).copied();
        let Some(c) = container_in(segment, previous) else { continue };
        match &container {
            Some(known) if known.id != c.id => return Err(CgroupError::TwoContainers(known.id.clone(), c.id)),
            Some(_) => {}
            None => container = Some(c),
        }
    }
    Ok(CgroupFacts { container, pod_uid, delegated })
}

/// The container one path segment names, given the segment before it.
fn container_in(segment: &str, previous: Option<&str>) -> Option<ContainerRef> {
    let name = segment.strip_suffix(".scope").unwrap_or(segment);
    // conmon, the runtime's monitor process, has a cgroup of its own named
    // after the container; it is not the container.
    if name.starts_with("libpod-conmon-") || name.starts_with("crio-conmon-") {
        return None;
    }
    let prefixed = [
        ("docker-", Runtime::Docker),
        ("cri-containerd-", Runtime::Containerd),
        ("crio-", Runtime::CriO),
        ("libpod-", Runtime::Podman),
    ];
    let (id, runtime) = match prefixed.iter().find_map(|(p, r)| name.strip_prefix(p).map(|id| (id, Some(*r)))) {
        Some(found) => found,
        None if previous == Some("docker") => (name, Some(Runtime::Docker)),
        None => (name, None),
    };
    is_container_id(id).then(|| ContainerRef { id: id.to_owned(), runtime })
}

/// Whether `s` is a full container id: 64 lowercase hex digits.
fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The pod UID a segment names: `pod<UID>` or `…-pod<UID_>.slice`.
fn pod_uid(segment: &str) -> Option<String> {
    let name = segment.strip_suffix(".slice").unwrap_or(segment);
    let at = if name.starts_with("pod") { Some(0) } else { name.rfind("-pod").map(|i| i + 1) }?;
    let uid = name.get(at + 3..)?.replace('_', "-");
    let well_formed = uid.len() == 36
        && uid.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    well_formed.then(|| uid.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test vector: a cgroup file and what it must give.
    struct Vector {
        title: String,
        expect: String,
        text: String,
    }

    /// The vectors in `tests/data/cgroup_vectors.txt`: blocks that start
    /// with `== TITLE`, then `expect: …`, then the file's lines.
    fn vectors() -> Vec<Vector> {
        let data = include_str!("../tests/data/cgroup_vectors.txt");
        let mut out: Vec<Vector> = Vec::new();
        for line in data.lines() {
            if let Some(title) = line.strip_prefix("== ") {
                out.push(Vector { title: title.to_owned(), expect: String::new(), text: String::new() });
            } else if let Some(v) = out.last_mut() {
                if let Some(e) = line.strip_prefix("expect: ") {
                    v.expect = e.to_owned();
                } else if !line.starts_with('#') {
                    v.text.push_str(line);
                    v.text.push('\n');
                }
            }
        }
        out
    }

    /// The outcome in the vectors' notation.
    fn describe(r: &Result<CgroupFacts, CgroupError>) -> String {
        match r {
            Err(CgroupError::TwoContainers(..)) => "refused: two containers".into(),
            Err(CgroupError::TwoPods(..)) => "refused: two pods".into(),
            Err(CgroupError::Line(_)) => "refused: line".into(),
            Ok(f) => {
                let mut parts = Vec::new();
                if let Some(c) = &f.container {
                    parts.push(format!("container={}", c.id));
                    parts.push(format!("runtime={}", c.runtime.map_or("unknown", Runtime::as_str)));
                }
                if let Some(p) = &f.pod_uid {
                    parts.push(format!("pod={p}"));
                }
                if f.delegated {
                    parts.push("delegated".into());
                }
                if parts.is_empty() { "none".into() } else { parts.join(" ") }
            }
        }
    }

    #[test]
    fn vectors_give_what_they_expect() {
        let all = vectors();
        assert!(all.len() >= 20, "the vector file has {} vectors", all.len());
        for v in all {
            assert!(!v.expect.is_empty(), "{}: no expect line", v.title);
            assert_eq!(describe(&parse_cgroup(&v.text)), v.expect, "{}", v.title);
        }
    }

    #[test]
    fn pod_segments() {
        let uid = "2f0c2b0c-6f4e-4a37-9b0e-3f7c1d2a9e11";
        assert_eq!(pod_uid(&format!("pod{uid}")).as_deref(), Some(uid));
        let systemd = format!("kubepods-burstable-pod{}.slice", uid.replace('-', "_"));
        assert_eq!(pod_uid(&systemd).as_deref(), Some(uid));
        assert_eq!(pod_uid("podman"), None);
        assert_eq!(pod_uid("kubepods-pod.slice"), None);
        assert_eq!(pod_uid("pod2f0c2b0c-6f4e-4a37-9b0e-3f7c1d2a9e1x"), None);
    }
}
