//! Unix workload attestation from kernel facts.
//!
//! The caller's process is pinned with a pidfd taken from the socket
//! (SO_PEERPIDFD) at accept time, for the same process the socket's peer
//! credentials name. `/proc/<pid>` is read only while that pidfd shows the
//! process alive, and checked again afterwards: a PID can be recycled only
//! once its process has exited, so a recycled PID can never lend another
//! process its identity. Where the kernel gives no pidfd, the process's start
//! time, read at accept time, plays that part: a PID naming a process that
//! started later is not the caller.
//!
//! Every call is attested afresh (a process can change uid or executable
//! between calls); what is cached is only what cannot change for a given
//! file or id: an executable's digest by (device, inode, size, times), and a
//! uid's or gid's name for a few seconds. The evidence made from a call's
//! facts (the selectors and their digest) is kept too, keyed by every fact
//! it is made from as read at that call (uid, gid, groups, the executable's
//! file identity and path, the namespaces), so a call whose facts are all
//! the same is given the same evidence without building it again: nothing
//! in it is taken from an earlier call but the names (as the name cache
//! would give them) and the digest of the very same file.
//!
//! The caller's `/proc/<pid>` directory and its `status` file are opened
//! once, when the connection is accepted ([`ProcDir`]), and every call reads
//! through them. The directory holds the process itself, not its number:
//! once that process has exited, reads through it fail even if the number
//! has gone to another process. It also spares each call the walk from
//! `/proc` for every file and the open and close of `status`, which were
//! most of the agent's own work per call.
//!
//! A connection belongs to the program that opened it. The executable's
//! identity (device, inode, size, times) is read when the connection is
//! accepted, and a request on it is refused once the process runs another
//! executable: otherwise a process could connect, hand the connection to a
//! helper (or keep it across `fork`), then exec a binary that an entry
//! pins by digest, and the helper would be served that entry. What remains
//! is inherent to Unix-socket peer credentials: a descriptor passed to
//! another process (SCM_RIGHTS, or inherited across fork) still speaks for
//! the process that connected, as long as that process runs the same
//! executable; and an exec in the microseconds between `connect` and the
//! agent's `accept` is not seen.
//!
//! `unix:path` names the executable as the kernel shows it from the agent's
//! mount namespace. A process in another mount namespace can make any path
//! name any binary (a bind mount in an unprivileged user namespace), so its
//! path selector is left out: entries for such workloads pin the digest.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hallmark_core::{NAMESPACE_KINDS, Selector, SelectorSet};
use rustix::fs::{AtFlags, Mode, OFlags, Statx, StatxFlags};
use sha2::{Digest, Sha256};

use crate::cgroup::{CgroupError, CgroupFacts, parse_cgroup};
use crate::evidence::Evidence;

/// Why a caller could not be attested.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttestError {
    /// The kernel gave no peer credentials.
    #[error("no peer credentials on the connection")]
    NoCredentials,
    /// The process exited (or its PID was recycled) during attestation.
    #[error("the calling process exited during attestation")]
    Exited,
    /// The process runs another executable than the one that connected.
    #[error("the calling process has executed another program since it connected; connect again")]
    Executed,
    /// /proc could not be read or parsed.
    #[error("cannot read process facts: {0}")]
    Proc(String),
}

/// The identity facts the kernel reports for a connecting process.
#[derive(Debug, Clone)]
pub struct Caller {
    /// PID at connect time.
    pub pid: i32,
    /// A pidfd pinning that process, when the kernel supports SO_PEERPIDFD.
    pub pidfd: Option<Arc<OwnedFd>>,
    /// The process's start time (clock ticks since boot) when the connection
    /// was accepted. Without a pidfd it pins the process (`None`, unreadable:
    /// the caller is refused); with one, it is only recorded with the
    /// caller's evidence (`process`).
    pub start_time: Option<u64>,
    /// The executable the process ran when the connection was accepted
    /// (`None` when it could not be read: the caller is refused).
    pub exe: Option<ExeIdentity>,
    /// Its `/proc` entries, opened when the connection was accepted (`None`
    /// when they could not be: the caller is refused).
    proc: Option<Arc<ProcDir>>,
    /// The uid the socket's peer credentials gave at accept: whose share of
    /// the agent's work the caller's calls count against (`None` for a
    /// caller not taken from a socket).
    pub uid: Option<u32>,
}

impl Caller {
    /// The caller on a connection just accepted from `pid`: pinned by `pidfd`
    /// when the kernel gave one, else by the start time /proc shows now, and
    /// bound to the executable it runs now.
    pub fn new(pid: i32, pidfd: Option<OwnedFd>) -> Self {
        let proc = ProcDir::open(pid).ok();
        let start_time = proc.as_ref().and_then(|p| p.start_time().ok());
        let exe = proc.as_ref().and_then(|p| p.exe_stat().ok()).map(|m| ExeIdentity::of(&m));
        Self { pid, pidfd: pidfd.map(Arc::new), start_time, exe, proc: proc.map(Arc::new), uid: None }
    }

    /// The caller, connected as `uid` (the socket's peer credentials).
    pub fn connected_as(self, uid: u32) -> Self {
        Self { uid: Some(uid), ..self }
    }
}

/// A process's `/proc/<pid>` directory and its `status` file, opened once
/// for a connection (four descriptors in all with its socket and pidfd).
/// The directory refers to the process, not to its number: once the
/// process has exited, every read through it fails, even after its number
/// is given to another process.
#[derive(Debug)]
pub struct ProcDir {
    /// `/proc/<pid>`, opened as a path only (`O_PATH`): a base for `*at` calls.
    dir: OwnedFd,
    /// `/proc/<pid>/status`, read again from its start at each call: a read
    /// at offset 0 makes the kernel write it afresh.
    status: File,
    /// The inode of its PID namespace, read once: a process's own PID
    /// namespace is fixed for its life (`unshare` and `setns` change only
    /// its future children's), unlike its other namespaces.
    pid_ns: Option<u64>,
}

/// The longest `status` file read: its `Groups` line with the kernel's
/// maximum of 65 536 groups is under 720 KiB.
const MAX_STATUS: usize = 1 << 20;

impl ProcDir {
    /// Opens `/proc/<pid>` and its `status` file.
    pub fn open(pid: i32) -> std::io::Result<Self> {
        let dir = rustix::fs::open(
            format!("/proc/{pid}").as_str(),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let status = File::from(rustix::fs::openat(&dir, "status", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?);
        let pid_ns = read_namespace(&dir, "pid");
        Ok(Self { dir, status, pid_ns })
    }

    /// The `status` file's text, written by the kernel at this read. A
    /// read shorter than the buffer holds all of it; a longer file (a
    /// process with thousands of supplementary groups) is read again from
    /// the start into a larger buffer, so the text is from one writing.
    fn status(&self) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; PROC_READ];
        loop {
            let n = self.status.read_at(&mut buf, 0)?;
            if n < buf.len() {
                buf.truncate(n);
                return Ok(buf);
            }
            if buf.len() >= MAX_STATUS {
                return Err(std::io::Error::other("status file too long"));
            }
            buf.resize(buf.len() * 2, 0);
        }
    }

    /// A file in the directory, read whole.
    fn read(&self, name: &str) -> std::io::Result<Vec<u8>> {
        let file = File::from(rustix::fs::openat(&self.dir, name, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?);
        read_whole(file)
    }

    /// The process's start time (clock ticks since boot).
    fn start_time(&self) -> Result<u64, AttestError> {
        let stat = self.read("stat").map_err(|_| AttestError::Exited)?;
        parse_stat_starttime(&String::from_utf8_lossy(&stat)).ok_or_else(|| AttestError::Proc("unparsable stat".into()))
    }

    /// Where the `exe` link points, as the agent's mount namespace sees it.
    fn exe_path(&self) -> std::io::Result<PathBuf> {
        let link = rustix::fs::readlinkat(&self.dir, "exe", Vec::new())?;
        Ok(PathBuf::from(OsStr::from_bytes(link.as_bytes())))
    }

    /// The executable file's status: the file the `exe` link names, as
    /// `fstat` of it opened would show it, in one call. From what the kernel
    /// holds (`AT_STATX_DONT_SYNC`): an executable on a FUSE or network
    /// filesystem whose server stops answering would otherwise hold the
    /// agent's thread, and with it every other caller's call.
    fn exe_stat(&self) -> std::io::Result<Statx> {
        let flags = AtFlags::STATX_DONT_SYNC;
        Ok(rustix::fs::statx(&self.dir, "exe", flags, StatxFlags::BASIC_STATS | StatxFlags::BTIME)?)
    }

    /// The executable file, opened to be hashed.
    fn open_exe(&self) -> std::io::Result<File> {
        Ok(File::from(rustix::fs::openat(&self.dir, "exe", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?))
    }

    /// The inode of namespace `kind` (`ns/<kind>`), if readable: read now,
    /// but for the PID namespace, which cannot change.
    fn namespace(&self, kind: &str) -> Option<u64> {
        if kind == "pid" {
            return self.pid_ns;
        }
        read_namespace(&self.dir, kind)
    }
}

/// The inode of namespace `kind` of the process whose /proc directory is `dir`.
fn read_namespace(dir: &OwnedFd, kind: &str) -> Option<u64> {
    let link = rustix::fs::readlinkat(dir, format!("ns/{kind}").as_str(), Vec::new()).ok()?;
    parse_namespace_link(&String::from_utf8_lossy(link.as_bytes()), kind)
}

/// The status of a file opened, as [`ProcDir::exe_stat`] gives it.
fn stat_of(file: &File) -> std::io::Result<Statx> {
    let flags = AtFlags::EMPTY_PATH | AtFlags::STATX_DONT_SYNC;
    Ok(rustix::fs::statx(file, "", flags, StatxFlags::BASIC_STATS | StatxFlags::BTIME)?)
}

/// Start time (clock ticks since boot) of process `pid`.
pub(crate) fn start_time(pid: i32) -> Result<u64, AttestError> {
    let stat = read_proc(&format!("/proc/{pid}/stat")).map_err(|_| AttestError::Exited)?;
    parse_stat_starttime(&String::from_utf8_lossy(&stat)).ok_or_else(|| AttestError::Proc("unparsable stat".into()))
}

/// What a /proc file is read into at first: a `status` file (the largest
/// read per call) is about 1.5 KiB.
const PROC_READ: usize = 4096;

/// Reads a /proc file whole. Its size shows as 0, so `fs::read_to_string`
/// asks for it (a `statx`) and then reads in steps growing from 32 bytes:
/// seven `read`s for a `status` file. Into a page, it takes one `read`, and
/// one more that sees the end. A longer file (a `status` with thousands of
/// supplementary groups) is still read whole: the buffer grows.
fn read_proc(path: &str) -> std::io::Result<Vec<u8>> {
    read_whole(File::open(path)?)
}

/// A /proc file opened, read whole (see [`read_proc`]).
fn read_whole(mut file: File) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(PROC_READ);
    file.read_to_end(&mut buf)?;
    Ok(buf)
}

/// The inode of namespace `kind` of `/proc/<which>`, if readable.
pub(crate) fn namespace_inode(which: &str, kind: &str) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/{which}/ns/{kind}")).ok()?;
    parse_namespace_link(&link.to_string_lossy(), kind)
}

/// Parses a namespace link's text, `KIND:[INODE]`.
pub fn parse_namespace_link(text: &str, kind: &str) -> Option<u64> {
    text.strip_prefix(kind)?.strip_prefix(":[")?.strip_suffix(']')?.parse().ok()
}

/// What attestation found about a process: its `unix:*` evidence, and
/// where it runs, for the container and pod attestors to look up.
#[derive(Debug, Clone)]
pub struct ProcessFacts {
    /// Its pid.
    pub pid: i32,
    /// Its `unix:*` selectors and their digest; shared with other calls whose
    /// facts were all the same.
    pub evidence: Arc<Evidence>,
    /// What its cgroup file says, or why it says nothing usable (nothing
    /// when the attestor does not read cgroup files).
    pub cgroup: Result<CgroupFacts, CgroupError>,
    /// Its mount namespace's inode, read while it was pinned.
    pub mount_ns: Option<u64>,
}

/// Parsed `/proc/<pid>/status` fields we use.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProcStatus {
    /// Real uid.
    pub uid: u32,
    /// Real gid.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

/// The start of a `status` file up to the end of its `Groups` line: all
/// that [`parse_status`] reads (the kernel writes `Uid` and `Gid` before
/// it), without the forty lines after it. The whole text when it has no
/// `Groups` line.
fn status_head(text: &[u8]) -> &[u8] {
    const GROUPS: &[u8] = b"\nGroups:";
    let Some(at) = text.windows(GROUPS.len()).position(|w| w == GROUPS) else { return text };
    let line_start = at + 1;
    match text.get(line_start..).and_then(|rest| rest.iter().position(|b| *b == b'\n')) {
        Some(end) => text.get(..line_start + end + 1).unwrap_or(text),
        None => text,
    }
}

/// Parses `/proc/<pid>/status`. Small and strict so that it can be fuzzed.
pub fn parse_status(text: &str) -> Result<ProcStatus, AttestError> {
    let mut uid = None;
    let mut gid = None;
    let mut groups = Vec::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let first = || v.split_whitespace().next().and_then(|x| x.parse::<u32>().ok());
        match k {
            "Uid" => uid = first(),
            "Gid" => gid = first(),
            "Groups" => {
                for g in v.split_whitespace() {
                    groups.push(g.parse().map_err(|_| AttestError::Proc(format!("bad Groups entry `{g}`")))?);
                }
                // The kernel writes Uid and Gid before Groups, and the forty
                // lines after it say nothing read here.
                if uid.is_some() && gid.is_some() {
                    break;
                }
            }
            _ => {}
        }
    }
    match (uid, gid) {
        (Some(uid), Some(gid)) => Ok(ProcStatus { uid, gid, groups }),
        _ => Err(AttestError::Proc("status has no Uid/Gid".into())),
    }
}

/// Parses the `Pid:` line of `/proc/self/fdinfo/<pidfd>`: the PID the pidfd
/// refers to, or `None` once that process has exited.
pub fn parse_pidfd_fdinfo(text: &str) -> Option<i32> {
    text.lines().find_map(|l| l.strip_prefix("Pid:")).and_then(|v| v.trim().parse::<i32>().ok()).filter(|p| *p > 0)
}

/// Parses field 22 (start time, clock ticks since boot) of `/proc/<pid>/stat`.
/// The command name (field 2) may contain spaces and parentheses, so fields
/// are counted from the last `)`.
pub fn parse_stat_starttime(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Identity of an executable file's content: the digest cache's key. Any
/// change to the file changes its ctime, which no user can set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FileKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileKey {
    fn of(m: &Statx) -> Self {
        Self {
            dev: device(m),
            ino: m.stx_ino,
            size: m.stx_size,
            mtime: (m.stx_mtime.tv_sec, i64::from(m.stx_mtime.tv_nsec)),
            ctime: (m.stx_ctime.tv_sec, i64::from(m.stx_ctime.tv_nsec)),
        }
    }
}

/// A file's device, its major and minor numbers in one.
fn device(m: &Statx) -> u64 {
    (u64::from(m.stx_dev_major) << 32) | u64::from(m.stx_dev_minor)
}

/// Which executable file a process runs: what binds a connection to the
/// program that opened it. Not the ctime, which changes when the running
/// file is renamed over or unlinked, though the program has not changed;
/// the birth time (where the filesystem records it) tells a new file that
/// reuses a freed inode number apart. A running executable's content cannot
/// be written (ETXTBSY), so the file is its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExeIdentity {
    dev: u64,
    ino: u64,
    size: u64,
    /// Seconds and nanoseconds.
    born: Option<(i64, u32)>,
}

impl ExeIdentity {
    fn of(m: &Statx) -> Self {
        let born = StatxFlags::from_bits_retain(m.stx_mask)
            .contains(StatxFlags::BTIME)
            .then_some((m.stx_btime.tv_sec, m.stx_btime.tv_nsec));
        Self { dev: device(m), ino: m.stx_ino, size: m.stx_size, born }
    }
}

/// How many namespace kinds a process is asked for ([`NAMESPACE_KINDS`]).
const NAMESPACES: usize = NAMESPACE_KINDS.len();

/// Every fact a call's `unix:*` selectors are made from, as read at that
/// call, but the names of its uid and gid (looked up from the uid and gid):
/// the key under which the evidence made from them is kept.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Facts {
    /// Real uid, gid and supplementary groups.
    status: ProcStatus,
    /// The executable's file identity, under which its digest is cached.
    exe: FileKey,
    /// The executable's path, when the process shares the agent's mount
    /// namespace (else it gets no `unix:path`).
    path: Option<PathBuf>,
    /// The inode of each namespace, in [`NAMESPACE_KINDS`] order; `None`
    /// where unreadable.
    namespaces: [Option<u64>; NAMESPACES],
}

/// Evidence made from [`Facts`], and until when it may be given again.
#[derive(Debug, Clone)]
struct Made {
    evidence: Arc<Evidence>,
    /// When the oldest name in it is [`NAME_TTL`] old: the names are then
    /// looked up again, as the name cache alone would have them.
    until: Instant,
}

/// Attests callers; caches executable digests by file identity, and the
/// evidence made from a call's facts by those facts.
#[derive(Debug, Default, Clone)]
pub struct UnixAttestor {
    digests: Arc<Mutex<HashMap<FileKey, String>>>,
    names: Arc<Mutex<NameCache>>,
    made: Arc<Mutex<HashMap<Facts, Made>>>,
    /// The agent's own mount namespace's inode, when readable.
    own_mount_ns: Option<u64>,
    /// The agent's own namespaces (kind, inode): the host's, when the agent
    /// runs on the host as it should.
    own_namespaces: Vec<(&'static str, u64)>,
    /// Whether callers' cgroup files are read: only the container and pod
    /// attestors use them.
    reads_cgroup: bool,
}

/// Names of uids and gids, as recently looked up.
type NameCache = HashMap<NameKey, LookedUpName>;

/// A uid or a gid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum NameKey {
    /// A user id.
    User(u32),
    /// A group id.
    Group(u32),
}

/// The name of a uid or gid, as looked up.
#[derive(Debug, Clone)]
struct LookedUpName {
    /// Its name; `None` when it has none.
    name: Option<String>,
    /// When it was looked up.
    at: Instant,
}

/// How long a uid's or gid's name is reused before it is looked up again.
const NAME_TTL: Duration = Duration::from_secs(10);

/// Most cached digests; the cache is cleared beyond this.
const MAX_CACHED_DIGESTS: usize = 4096;

/// Most kept evidence sets (about 2 KiB each); the cache is cleared beyond
/// this. Any local user can make new facts (a process in a new namespace),
/// so this bounds what they can make the agent hold; once cleared, a call
/// costs what it costs without the cache.
const MAX_MADE: usize = 1024;

impl UnixAttestor {
    /// A new attestor with an empty digest cache.
    pub fn new() -> Self {
        let own_mount_ns = namespace_inode("self", "mnt");
        if own_mount_ns.is_none() {
            tracing::warn!("cannot read this process's mount namespace; no workload gets `unix:path` selectors");
        }
        let own_namespaces =
            NAMESPACE_KINDS.iter().filter_map(|kind| Some((*kind, namespace_inode("self", kind)?))).collect();
        Self { own_mount_ns, own_namespaces, ..Self::default() }
    }

    /// This attestor, reading callers' cgroup files too (for the container
    /// and pod attestors; otherwise [`ProcessFacts::cgroup`] says nothing).
    pub fn reading_cgroups(self) -> Self {
        Self { reads_cgroup: true, ..self }
    }

    /// Produces the caller's `unix:*` selectors and where it runs. Blocking:
    /// call from a blocking task.
    pub fn attest(&self, caller: &Caller) -> Result<ProcessFacts, AttestError> {
        self.attest_with(caller, true)?.ok_or_else(|| AttestError::Proc("executable digest unavailable".into()))
    }

    /// [`UnixAttestor::attest`] without reading the executable: `None` when
    /// its digest is not cached yet (call `attest` off the async runtime
    /// then). Everything else is a handful of /proc reads.
    pub fn attest_cached(&self, caller: &Caller) -> Result<Option<ProcessFacts>, AttestError> {
        self.attest_with(caller, false)
    }

    fn attest_with(&self, caller: &Caller, may_hash: bool) -> Result<Option<ProcessFacts>, AttestError> {
        let pid = caller.pid;
        if pid <= 0 {
            return Err(AttestError::NoCredentials);
        }
        let Some(proc) = caller.proc.as_deref() else { return Err(AttestError::Exited) };
        let pinned = self.check_pinned(caller, proc)?;
        let status = proc.status().map_err(|_| AttestError::Exited)?;
        // The command name may hold any byte but a newline: it cannot make
        // or hide the Uid, Gid or Groups lines, so a non-UTF-8 name is only
        // replaced.
        let status = parse_status(&String::from_utf8_lossy(status_head(&status)))?;
        let path = proc.exe_path().map_err(|e| AttestError::Proc(format!("exe: {e}")))?;
        let meta = proc.exe_stat().map_err(|e| AttestError::Proc(format!("exe: {e}")))?;
        if caller.exe != Some(ExeIdentity::of(&meta)) {
            return Err(AttestError::Executed);
        }
        // Read while the process is pinned: a path seen from the agent's own
        // mount namespace, or none.
        let mut namespaces = [None; NAMESPACES];
        for (inode, kind) in namespaces.iter_mut().zip(NAMESPACE_KINDS) {
            *inode = proc.namespace(kind);
        }
        let mount_ns =
            NAMESPACE_KINDS.iter().zip(namespaces).find_map(|(kind, inode)| (*kind == "mnt").then_some(inode));
        let mount_ns = mount_ns.flatten();
        let same_mount_ns = self.own_mount_ns.is_some() && mount_ns == self.own_mount_ns;
        // The kernel's word on which container and pod; never mountinfo.
        let cgroup = if self.reads_cgroup {
            let text = proc.read("cgroup").map_err(|_| AttestError::Exited)?;
            parse_cgroup(&String::from_utf8_lossy(&text))
        } else {
            Ok(CgroupFacts::default())
        };
        let facts = Facts { status, exe: FileKey::of(&meta), path: same_mount_ns.then_some(path), namespaces };
        let evidence = match self.made_before(&facts) {
            Some(evidence) => evidence,
            None => {
                let Some(digest) = self.digest(proc, facts.exe, may_hash)? else { return Ok(None) };
                self.make(facts, &digest)
            }
        };
        let again = self.check_pinned(caller, proc)?;
        if again != pinned {
            return Err(AttestError::Exited);
        }
        Ok(Some(ProcessFacts { pid, evidence, cgroup, mount_ns }))
    }

    /// The evidence made from `facts` before, while its names are fresh.
    fn made_before(&self, facts: &Facts) -> Option<Arc<Evidence>> {
        let made = self.made.lock().ok()?.get(facts).cloned()?;
        (Instant::now() < made.until).then_some(made.evidence)
    }

    /// The `unix:*` evidence of a process whose facts are `facts` and whose
    /// executable's SHA-256 is `digest`; kept for the next call with the
    /// same facts.
    fn make(&self, facts: Facts, digest: &str) -> Arc<Evidence> {
        let user = self.name(NameKey::User(facts.status.uid));
        let group = self.name(NameKey::Group(facts.status.gid));
        let mut set = SelectorSet::new();
        let mut add = |k: &str, v: &str| {
            if let Ok(s) = Selector::new("unix", k, v) {
                set.insert(s);
            }
        };
        add("uid", &facts.status.uid.to_string());
        add("gid", &facts.status.gid.to_string());
        for g in &facts.status.groups {
            add("supplementary_gid", &g.to_string());
        }
        if let Some(u) = &user.name {
            add("user", u);
        }
        if let Some(g) = &group.name {
            add("group", g);
        }
        if let Some(path) = &facts.path {
            add("path", &path.to_string_lossy());
        }
        add("sha256", digest);
        for (kind, inode) in NAMESPACE_KINDS.iter().zip(facts.namespaces) {
            let Some(inode) = inode else { continue };
            add("ns", &format!("{kind}:{inode}"));
            if self.own_namespaces.contains(&(*kind, inode)) {
                add("host_ns", kind);
            }
        }
        let evidence = Arc::new(Evidence::new(set));
        let oldest = user.at.min(group.at);
        // Not kept at all in the (impossible) case that the clock overflows.
        let until = oldest.checked_add(NAME_TTL).unwrap_or(oldest);
        let made = Made { evidence: evidence.clone(), until };
        if let Ok(mut m) = self.made.lock() {
            if m.len() >= MAX_MADE {
                m.clear();
            }
            m.insert(facts, made);
        }
        evidence
    }

    /// The name of a uid (or gid), looked up at most every [`NAME_TTL`],
    /// and when it was.
    fn name(&self, key: NameKey) -> LookedUpName {
        let now = Instant::now();
        if let Some(cached) = self.names.lock().ok().and_then(|m| m.get(&key).cloned())
            && now.duration_since(cached.at) < NAME_TTL
        {
            return cached;
        }
        let name = match key {
            NameKey::Group(gid) => nix::unistd::Group::from_gid(gid.into()).ok().flatten().map(|g| g.name),
            NameKey::User(uid) => nix::unistd::User::from_uid(uid.into()).ok().flatten().map(|u| u.name),
        };
        if let Ok(mut m) = self.names.lock() {
            if m.len() >= MAX_CACHED_DIGESTS {
                m.clear();
            }
            m.insert(key, LookedUpName { name: name.clone(), at: now });
        }
        LookedUpName { name, at: now }
    }

    /// Fails when the caller's process has exited. With a pidfd, one poll: a
    /// pidfd becomes readable when its process exits. Without one (older
    /// kernels), the process start time must still be the one read when the
    /// connection was accepted.
    fn check_pinned(&self, caller: &Caller, proc: &ProcDir) -> Result<u64, AttestError> {
        match &caller.pidfd {
            Some(fd) => {
                let mut fds = [nix::poll::PollFd::new(fd.as_fd(), nix::poll::PollFlags::POLLIN)];
                match nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO) {
                    Ok(0) => Ok(0),
                    Ok(_) => Err(AttestError::Exited),
                    Err(e) => Err(AttestError::Proc(format!("pidfd: {e}"))),
                }
            }
            // Without a pidfd, the process start time tells a recycled PID apart.
            None => {
                let now = proc.start_time()?;
                match caller.start_time {
                    Some(at_accept) if at_accept == now => Ok(now),
                    _ => Err(AttestError::Exited),
                }
            }
        }
    }

    /// The SHA-256 of the executable `proc` runs, whose file is `key`: from
    /// the cache, or (when `may_hash`) read in full.
    fn digest(&self, proc: &ProcDir, key: FileKey, may_hash: bool) -> Result<Option<String>, AttestError> {
        if let Some(d) = self.digests.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return Ok(Some(d));
        }
        if !may_hash {
            return Ok(None);
        }
        let mut exe = proc.open_exe().map_err(|e| AttestError::Proc(format!("exe: {e}")))?;
        // What is hashed must be the file the key names: a process that
        // executed another program since the key was read is refused, as
        // it is once it has connected.
        let opened = stat_of(&exe).map_err(|e| AttestError::Proc(format!("exe: {e}")))?;
        if FileKey::of(&opened) != key {
            return Err(AttestError::Executed);
        }
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = exe.read(&mut buf).map_err(|e| AttestError::Proc(format!("exe: {e}")))?;
            if n == 0 {
                break;
            }
            h.update(buf.get(..n).unwrap_or_default());
        }
        let d = hex::encode(h.finalize());
        if let Ok(mut c) = self.digests.lock() {
            if c.len() >= MAX_CACHED_DIGESTS {
                c.clear();
            }
            c.insert(key, d.clone());
        }
        Ok(Some(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_parsing() {
        let s = "Name:\tx\nUid:\t1000\t1000\t1000\t1000\nGid:\t100\t100\t100\t100\nGroups:\t4 24 27 \n";
        assert_eq!(parse_status(s).unwrap(), ProcStatus { uid: 1000, gid: 100, groups: vec![4, 24, 27] });
        assert!(parse_status("Name: x\n").is_err());
        assert!(parse_status("Uid:\tx\nGid:\t1\n").is_err());
        assert!(parse_status("Uid:\t1\nGid:\t1\nGroups:\tz\n").is_err());
    }

    #[test]
    fn fdinfo_and_stat_parsing() {
        assert_eq!(parse_pidfd_fdinfo("pos:\t0\nflags:\t02\nPid:\t4242\nNSpid:\t4242\n"), Some(4242));
        assert_eq!(parse_pidfd_fdinfo("Pid:\t-1\n"), None);
        assert_eq!(parse_pidfd_fdinfo(""), None);
        let stat = "123 (a b) c)) S 1 123 123 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 200";
        assert_eq!(parse_stat_starttime(stat), Some(987_654));
        assert_eq!(parse_stat_starttime("garbage"), None);
    }

    /// The identity of `/bin/sh`, an executable this test process does not run.
    fn sh_identity() -> ExeIdentity {
        let sh = File::open("/bin/sh").unwrap();
        ExeIdentity::of(&stat_of(&sh).unwrap())
    }

    /// Reads through a process's /proc directory fail once it has exited,
    /// and its status is written afresh at every read.
    #[test]
    fn a_proc_dir_reads_only_its_own_process() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        let dir = ProcDir::open(pid).unwrap();
        let first = parse_status(&String::from_utf8_lossy(&dir.status().unwrap())).unwrap();
        assert_eq!(parse_status(&String::from_utf8_lossy(&dir.status().unwrap())).unwrap(), first);
        assert!(dir.exe_path().unwrap().ends_with("sleep"));
        assert!(dir.namespace("mnt").is_some());
        assert_eq!(dir.namespace("pid"), namespace_inode(&pid.to_string(), "pid"));
        assert_eq!(dir.start_time().unwrap(), start_time(pid).unwrap());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(dir.status().is_err());
        assert!(dir.exe_stat().is_err());
        assert!(dir.namespace("mnt").is_none());
        assert!(dir.start_time().is_err());
    }

    /// A status file longer than the first buffer (a process in 3 000
    /// supplementary groups) is read whole. Setting groups takes root.
    #[test]
    fn a_long_status_is_read_whole() {
        if !nix::unistd::getuid().is_root() {
            eprintln!("skipped: setting 3 000 supplementary groups takes root");
            return;
        }
        let groups: Vec<String> = (1..=3000).map(|g| g.to_string()).collect();
        let mut child = std::process::Command::new("setpriv")
            .arg("--groups")
            .arg(groups.join(","))
            .args(["sleep", "30"])
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        // setpriv sets the groups, then executes sleep.
        let deadline = Instant::now() + Duration::from_secs(10);
        let dir = loop {
            let dir = ProcDir::open(pid).unwrap();
            if dir.exe_path().unwrap().ends_with("sleep") {
                break dir;
            }
            assert!(Instant::now() < deadline, "setpriv did not execute sleep");
            std::thread::sleep(Duration::from_millis(10));
        };
        let text = dir.status().unwrap();
        assert!(text.len() > PROC_READ, "{} bytes", text.len());
        let status = parse_status(&String::from_utf8_lossy(&text)).unwrap();
        assert_eq!(status.groups, (1..=3000).collect::<Vec<u32>>());
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn attests_this_process() {
        let me = std::process::id() as i32;
        let a = UnixAttestor::new().reading_cgroups();
        let facts = a.attest(&Caller::new(me, None)).unwrap();
        let set = facts.evidence.selectors().clone();
        let uid = nix::unistd::getuid().as_raw().to_string();
        assert!(set.iter().any(|s| s.key() == "uid" && s.value() == uid));
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let want = hex::encode(Sha256::digest(&exe));
        assert!(set.iter().any(|s| s.key() == "sha256" && s.value() == want));
        assert_eq!(facts.evidence.digest(), hallmark_core::evidence_digest(&set));
        // Cached by file identity: the second call gives the same answer.
        assert_eq!(a.attest(&Caller::new(me, None)).unwrap().evidence.selectors(), &set);
        assert_eq!(a.digests.lock().unwrap().len(), 1);
        assert!(a.attest(&Caller::new(0, None)).is_err());
        // Without a pidfd, a process that started after the connection was
        // accepted (a recycled PID) is not the caller; nor is an unknown one.
        let recycled = Caller { start_time: Some(1), ..Caller::new(me, None) };
        assert_eq!(a.attest(&recycled).unwrap_err(), AttestError::Exited);
        let unknown = Caller { start_time: None, ..Caller::new(me, None) };
        assert_eq!(a.attest(&unknown).unwrap_err(), AttestError::Exited);
        let unopened = Caller { proc: None, ..Caller::new(me, None) };
        assert_eq!(a.attest(&unopened).unwrap_err(), AttestError::Exited);
        // A connection opened by another executable than the one running now.
        let mut other = Caller::new(me, None);
        other.exe = Some(sh_identity());
        assert_eq!(a.attest(&other).unwrap_err(), AttestError::Executed);
        other.exe = None;
        assert_eq!(a.attest(&other).unwrap_err(), AttestError::Executed);
        // The test runs in the agent's (its own) mount namespace: it has a path.
        assert!(set.iter().any(|s| s.key() == "path"));
        // Its namespaces, each shared with the "agent" (itself).
        let own_pid_ns = namespace_inode("self", "pid").unwrap();
        assert!(set.iter().any(|s| s.key() == "ns" && s.value() == format!("pid:{own_pid_ns}")));
        for kind in ["pid", "mnt", "net", "user"] {
            assert!(set.iter().any(|s| s.key() == "host_ns" && s.value() == kind), "{kind}: {set:?}");
        }
        assert_eq!(facts.mount_ns, namespace_inode("self", "mnt"));
        assert!(facts.cgroup.is_ok(), "{:?}", facts.cgroup);
    }

    /// The evidence made from a call's facts is given again to a call whose
    /// facts are all the same, until its names are due to be looked up
    /// again; each call still reads the facts (an exec is still seen).
    #[test]
    fn evidence_is_kept_by_facts() {
        let me = std::process::id() as i32;
        let a = UnixAttestor::new();
        let first = a.attest(&Caller::new(me, None)).unwrap().evidence;
        let second = a.attest_cached(&Caller::new(me, None)).unwrap().unwrap().evidence;
        assert!(Arc::ptr_eq(&first, &second), "same facts, same evidence");
        assert_eq!(a.made.lock().unwrap().len(), 1);
        let mut other = Caller::new(me, None);
        other.exe = Some(sh_identity());
        assert_eq!(a.attest_cached(&other).unwrap_err(), AttestError::Executed, "facts are read on every call");
        // Once its names are due, it is made again (equal, but new).
        for made in a.made.lock().unwrap().values_mut() {
            made.until = Instant::now();
        }
        let third = a.attest_cached(&Caller::new(me, None)).unwrap().unwrap().evidence;
        assert!(!Arc::ptr_eq(&first, &third));
        assert_eq!(first, third);
        // Other facts, other evidence: a key differing in one namespace.
        let key = a.made.lock().unwrap().keys().next().cloned().unwrap();
        let mut moved = key.clone();
        moved.namespaces[0] = Some(1);
        assert!(a.made_before(&key).is_some());
        assert!(a.made_before(&moved).is_none());
    }

    #[test]
    fn status_parsing_stops_after_the_groups_line() {
        let s = "Uid:\t1\t1\t1\t1\nGid:\t2\t2\t2\t2\nGroups:\t3\nNStgid:\t9\nUid:\t0\t0\t0\t0\n";
        assert_eq!(parse_status(s).unwrap(), ProcStatus { uid: 1, gid: 2, groups: vec![3] });
        assert_eq!(status_head(s.as_bytes()), b"Uid:\t1\t1\t1\t1\nGid:\t2\t2\t2\t2\nGroups:\t3\n");
        assert_eq!(status_head(b"Uid:\t1\nGid:\t2\n"), b"Uid:\t1\nGid:\t2\n");
        assert_eq!(status_head(b"Uid:\t1\nGroups:\t3"), b"Uid:\t1\nGroups:\t3");
        // The part it keeps parses as the whole does.
        let whole = std::fs::read("/proc/self/status").unwrap();
        let head = status_head(&whole);
        assert!(head.len() < whole.len());
        assert_eq!(
            parse_status(&String::from_utf8_lossy(head)).unwrap(),
            parse_status(&String::from_utf8_lossy(&whole)).unwrap()
        );
    }

    #[test]
    fn namespace_links() {
        assert_eq!(parse_namespace_link("pid:[4026531836]", "pid"), Some(4_026_531_836));
        assert_eq!(parse_namespace_link("pid:[4026531836]", "mnt"), None);
        assert_eq!(parse_namespace_link("pid:4026531836", "pid"), None);
        assert_eq!(parse_namespace_link("pid:[x]", "pid"), None);
    }
}
