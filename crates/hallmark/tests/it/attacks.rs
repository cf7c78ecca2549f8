//! Attacks on workload attestation and on how the server authenticates
//! agents, with real processes:
//!
//! - a Workload API connection whose process has exited gets nothing, even
//!   once another process (one an entry matches) holds the same PID;
//! - a process is attested by the executable it is running, not by the file
//!   now at that path;
//! - a process of another uid cannot get root's entry, even by naming it,
//!   while it does get its own;
//! - the socket is open to everyone (attestation decides): `up`'s default
//!   socket inside its data directory is reached by another uid, which gets
//!   PermissionDenied or its own SVID; the directories on the way let no one
//!   else list them, every private key, token and database file is 0600, and
//!   an existing directory the socket is put in keeps its mode;
//! - an agent presenting another agent's SVID, an SVID for another agent's
//!   identity signed by a foreign CA, or its own revoked SVID gets nothing,
//!   while the real agent keeps working.
//!
//! - a connection is refused once the process that opened it executes
//!   another program (connect, hand the connection on, exec a pinned binary);
//! - a process in another mount namespace gets no `unix:path` selector (a
//!   bind mount there can make any path name any binary);
//! - one uid opening connections by the thousand does not keep another uid
//!   from its SVID;
//! - one uid running executables that never finish reading (a FUSE
//!   filesystem that stops answering) holds at most 4 of the agent's
//!   threads, even when its clients give up and try again, and keeps no one
//!   else from their SVIDs.
//!
//! The client processes are this test binary (or a copy of it elsewhere)
//! re-executed to run [`helper_hold_connection`]: it connects, says which
//! descriptor holds the connection, then exits or execs on request. The test
//! takes a duplicate of that descriptor with `pidfd_getfd`, so it can keep
//! asking on the connection after the process that opened it has gone or
//! changed. A copy of the test binary at another path is a workload of its
//! own: same digest, another path; with bytes appended, another digest.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hallmark_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use hallmark_proto::workload::{JwtsvidRequest, X509svidRequest};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::harness::*;
use crate::separate::{Deployment, join_agent, wait_for_svid};

/// Tells a re-executed test binary to act as [`helper_hold_connection`]; the
/// value is the Workload API socket path.
const HELPER_ENV: &str = "HALLMARK_ATTACKS_HELPER_SOCKET";

/// Not a test: the client process of the attacks below (see the module
/// documentation). Does nothing unless `HALLMARK_ATTACKS_HELPER_SOCKET` is set.
/// Connects to that socket, prints `HELPER_FD=<n>`, then reads one line from
/// stdin: `exec PATH ARGS...` replaces this process with PATH; anything else
/// (or end of input) exits.
#[test]
#[ignore = "the client process of the attacks tests; runs only when re-executed by them"]
fn helper_hold_connection() {
    use std::os::fd::AsRawFd;
    let Ok(socket) = std::env::var(HELPER_ENV) else { return };
    let stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    println!("HELPER_FD={}", stream.as_raw_fd());
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    if let ["exec", program, args @ ..] = words.as_slice() {
        let err = Command::new(program).args(args).exec();
        panic!("exec {program}: {err}");
    }
    drop(stream);
    std::process::exit(0);
}

/// Tells a re-executed test binary to stay alive for a minute, doing
/// nothing (see [`helper_sleep`]).
const SLEEP_ENV: &str = "HALLMARK_ATTACKS_SLEEP";

/// Not a test: a process that only lives, for PID-reuse victims. Does
/// nothing unless `HALLMARK_ATTACKS_SLEEP` is set.
#[test]
#[ignore = "a victim process of the attacks tests; runs only when re-executed by them"]
fn helper_sleep() {
    if std::env::var_os(SLEEP_ENV).is_some() {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// Arguments that make a test binary run only [`helper_hold_connection`].
const HELPER_ARGS: [&str; 4] = ["attacks::helper_hold_connection", "--exact", "--ignored", "--nocapture"];

/// A running [`helper_hold_connection`] process, killed when dropped.
struct Helper {
    child: Child,
    stdin: ChildStdin,
    _stdout: BufReader<ChildStdout>,
    /// The descriptor number of its Workload API connection, in its own table.
    fd: i32,
}

impl Helper {
    fn spawn(socket: &str) -> Helper {
        Self::spawn_as(&std::env::current_exe().unwrap(), socket)
    }

    /// The helper run from `program`, a copy of this test binary.
    fn spawn_as(program: &Path, socket: &str) -> Helper {
        let mut cmd = Command::new(program);
        cmd.args(HELPER_ARGS);
        Self::spawn_with(cmd, socket)
    }

    /// The helper as `cmd` runs it (which must end up running [`HELPER_ARGS`]).
    fn spawn_with(mut cmd: Command, socket: &str) -> Helper {
        let path = socket.strip_prefix("unix://").unwrap();
        let mut child = cmd
            .env(HELPER_ENV, path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let fd = loop {
            let mut line = String::new();
            assert!(stdout.read_line(&mut line).unwrap() > 0, "the helper ended without connecting");
            if let Some(n) = line.trim().strip_prefix("HELPER_FD=") {
                break n.parse().unwrap();
            }
        };
        Helper { child, stdin, _stdout: stdout, fd }
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    /// A duplicate of the helper's Workload API connection, taken through a pidfd.
    fn steal_connection(&self) -> std::os::unix::net::UnixStream {
        use rustix::process::{Pid, PidfdFlags, PidfdGetfdFlags, pidfd_getfd, pidfd_open};
        let pidfd = pidfd_open(Pid::from_child(&self.child), PidfdFlags::empty()).unwrap();
        let fd = pidfd_getfd(&pidfd, self.fd, PidfdGetfdFlags::empty()).unwrap();
        std::os::unix::net::UnixStream::from(fd)
    }

    /// A Workload API client on the helper's own connection ([`held_client`]).
    async fn client(&self) -> WorkloadClient {
        held_client(self.steal_connection()).await
    }

    /// Replaces the helper with `program` and waits until the kernel shows it running.
    fn exec(&mut self, program: &Path, args: &[&str]) {
        writeln!(self.stdin, "exec {} {}", program.display(), args.join(" ")).unwrap();
        self.stdin.flush().unwrap();
        wait_for_exe(self.pid(), program);
    }

    /// Makes the helper exit, reaps it and returns the PID it had (free again now).
    fn exit(mut self) -> i32 {
        writeln!(self.stdin, "exit").unwrap();
        self.stdin.flush().unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "helper: {status}");
        self.pid()
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `/proc/PID/exe` names `program`.
fn wait_for_exe(pid: i32, program: &Path) {
    wait_for(&format!("process {pid} to run {}", program.display()), 20, || {
        (std::fs::read_link(format!("/proc/{pid}/exe")).ok()? == program).then_some(())
    });
}

/// Copies an executable to `to` (mode 0755).
fn copy_exe(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

type WorkloadClient = SpiffeWorkloadApiClient<Channel>;

/// A Workload API client over an already connected stream: the connector
/// hands out that one stream, and never opens another connection.
async fn held_client(stream: std::os::unix::net::UnixStream) -> WorkloadClient {
    stream.set_nonblocking(true).unwrap();
    let slot = Arc::new(Mutex::new(Some(tokio::net::UnixStream::from_std(stream).unwrap())));
    let channel = Endpoint::from_static("http://workload")
        .connect_with_connector(tower::service_fn(move |_| {
            let held = slot.lock().unwrap().take();
            async move {
                held.map(hyper_util::rt::TokioIo::new)
                    .ok_or_else(|| std::io::Error::other("the held connection is closed; no other is opened"))
            }
        }))
        .await
        .unwrap();
    SpiffeWorkloadApiClient::new(channel)
}

fn with_header<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("workload.spiffe.io", "true".parse().unwrap());
    r
}

/// The SPIFFE IDs of the X.509-SVIDs in the first message of FetchX509SVID.
async fn x509_ids(c: &mut WorkloadClient) -> Result<Vec<String>, Status> {
    let mut stream = c.fetch_x509svid(with_header(X509svidRequest {})).await?.into_inner();
    let first = tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .map_err(|_| Status::deadline_exceeded("no first message within 30 s"))??
        .ok_or_else(|| Status::aborted("the stream ended with no message"))?;
    assert!(first.svids.iter().all(|s| !s.x509_svid.is_empty() && !s.x509_svid_key.is_empty()));
    Ok(first.svids.into_iter().map(|s| s.spiffe_id).collect())
}

/// The SPIFFE IDs of the JWT-SVIDs FetchJWTSVID returns for audience `db`.
async fn jwt_ids(c: &mut WorkloadClient) -> Result<Vec<String>, Status> {
    let req = JwtsvidRequest { audience: vec!["db".into()], spiffe_id: String::new() };
    let r = c.fetch_jwtsvid(with_header(req)).await?.into_inner();
    assert!(r.svids.iter().all(|s| !s.svid.is_empty()));
    Ok(r.svids.into_iter().map(|s| s.spiffe_id).collect())
}

/// Both fetches serve `id`, and only it.
async fn assert_served(c: &mut WorkloadClient, id: &str, what: &str) {
    assert_eq!(x509_ids(c).await.unwrap(), vec![id], "{what}: FetchX509SVID");
    assert_eq!(jwt_ids(c).await.unwrap(), vec![id], "{what}: FetchJWTSVID");
}

/// Both fetches fail with a refusal: no SVID of either kind comes back.
async fn assert_served_nothing(c: &mut WorkloadClient, what: &str) {
    let refused = |s: &Status| matches!(s.code(), Code::PermissionDenied | Code::Unavailable);
    match x509_ids(c).await {
        Ok(ids) => panic!("{what}: X.509-SVIDs served: {ids:?}"),
        Err(s) => assert!(refused(&s), "{what}: FetchX509SVID: {s:?}"),
    }
    match jwt_ids(c).await {
        Ok(ids) => panic!("{what}: JWT-SVIDs served: {ids:?}"),
        Err(s) => {
            assert!(refused(&s), "{what}: FetchJWTSVID: {s:?}");
            println!("{what}: refused with {:?}: {}", s.code(), s.message());
        }
    }
}

/// Starts `program` (a copy of this test binary) as [`helper_sleep`] so that
/// it gets PID `pid`, by setting the last PID the kernel handed out to
/// `pid - 1` just before each try (other processes fork concurrently, so it
/// may take a few). `Err` says why it could not.
fn spawn_with_pid(pid: i32, program: &Path) -> Result<Killed, String> {
    const TRIES: usize = 200;
    for _ in 0..TRIES {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string())
            .map_err(|e| format!("cannot write /proc/sys/kernel/ns_last_pid (needs root): {e}"))?;
        let child = Command::new(program)
            .args(["attacks::helper_sleep", "--exact", "--ignored"])
            .env(SLEEP_ENV, "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let child = Killed(child);
        if i32::try_from(child.0.id()).ok() == Some(pid) {
            return Ok(child);
        }
    }
    Err(format!("other processes took PID {pid} first {TRIES} times in a row"))
}

/// A copy of this test binary at `to`: a workload with the test binary's
/// digest and a path of its own.
fn copy_of_this_binary(to: &Path) {
    copy_exe(&std::env::current_exe().unwrap(), to);
}

/// A copy of this test binary at `to` with bytes appended: it runs the same,
/// but its digest is its own.
fn variant_of_this_binary(to: &Path) {
    copy_of_this_binary(to);
    let mut f = std::fs::OpenOptions::new().append(true).open(to).unwrap();
    f.write_all(b"hallmark attacks test: another digest").unwrap();
}

const VICTIM: &str = "spiffe://example.org/victim";

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_whose_process_exited_gets_nothing_even_when_its_pid_is_reused() {
    let up = Up::start();
    let bin_dir = tempfile::tempdir().unwrap();
    let victim = bin_dir.path().join("victim");
    variant_of_this_binary(&victim);
    up.create_entry(
        VICTIM,
        &[
            "--selector",
            &format!("unix:uid:{}", my_uid()),
            "--selector",
            &format!("unix:sha256:{}", sha256_file(&victim)),
            "--selector",
            &format!("unix:path:{}", victim.display()),
        ],
    );

    // Control: a process running the victim's executable, asking on the
    // connection it opened, is served the victim's entry. So the entry
    // matches what /proc shows for any process running it.
    let control = Helper::spawn_as(&victim, &up.socket());
    let mut client = control.client().await;
    assert_served(&mut client, VICTIM, "the victim's own connection").await;
    drop(control);

    // The process that opened the connection has exited (its PID is free).
    let gone = Helper::spawn(&up.socket());
    let mut client = gone.client().await;
    let pid = gone.exit();
    assert_served_nothing(&mut client, &format!("connection of exited PID {pid}")).await;

    // The process that opened the connection has exited and the victim now
    // holds its PID: an agent trusting /proc/PID would serve the victim's SVID.
    let gone = Helper::spawn(&up.socket());
    let held = gone.steal_connection();
    let pid = gone.exit();
    match spawn_with_pid(pid, &victim) {
        Ok(victim_proc) => {
            wait_for_exe(pid, &victim);
            let mut client = held_client(held).await;
            assert_served_nothing(&mut client, &format!("connection of PID {pid}, now the victim's")).await;
            assert_eq!(std::fs::read_link(format!("/proc/{pid}/exe")).unwrap(), victim, "the victim held the PID");
            drop(victim_proc);
        }
        Err(why) => println!("PID reuse part skipped: {why}"),
    }
}

const PINNED: &str = "spiffe://example.org/pinned-to-sleep";

/// Security issue 12: a process connects, keeps the connection (here: the
/// test takes a duplicate, as a forked child or an SCM_RIGHTS receiver
/// would hold it), then execs a binary an entry pins by digest. The
/// connection stays the connecting program's: it is refused, not served
/// the pinned entry; a connection the pinned program opened itself would be.
#[tokio::test(flavor = "multi_thread")]
async fn a_connection_is_refused_once_its_process_executes_another_program() {
    let up = Up::start();
    let dir = tempfile::tempdir().unwrap();
    let sleep = dir.path().join("sleep");
    copy_exe(Path::new("/usr/bin/sleep"), &sleep);
    up.create_entry(PINNED, &["--selector", &format!("unix:sha256:{}", sha256_file(&sleep))]);

    let mut attacker = Helper::spawn(&up.socket());
    let mut held = attacker.client().await;
    // The agent has accepted the connection: this program matches no entry.
    assert_served_nothing(&mut held, "the connecting program").await;
    attacker.exec(&sleep, &["60"]);
    for _ in 0..2 {
        match jwt_ids(&mut held).await {
            Ok(ids) => panic!("served {ids:?} on a connection opened by another program"),
            Err(s) => {
                assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
                assert!(s.message().contains("executed another program"), "{s:?}");
            }
        }
        match x509_ids(&mut held).await {
            Ok(ids) => panic!("served {ids:?} on a connection opened by another program"),
            Err(s) => assert!(s.message().contains("executed another program"), "{s:?}"),
        }
    }
}

const OLD: &str = "spiffe://example.org/running-executable";
const NEW: &str = "spiffe://example.org/file-now-at-the-path";

#[tokio::test(flavor = "multi_thread")]
async fn a_process_is_attested_by_the_executable_it_runs_not_the_file_now_at_its_path() {
    let up = Up::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("workload");
    let replacement = dir.path().join("workload.new");
    variant_of_this_binary(&path);
    copy_of_this_binary(&replacement);
    let (old_sha, new_sha) = (sha256_file(&path), sha256_file(&replacement));
    assert_ne!(old_sha, new_sha);
    up.create_entry(OLD, &["--selector", &format!("unix:sha256:{old_sha}")]);
    // The replacement is this test binary's digest: pinned to its path too,
    // so that only the file now at the path matches, not the test itself.
    up.create_entry(
        NEW,
        &["--selector", &format!("unix:sha256:{new_sha}"), "--selector", &format!("unix:path:{}", path.display())],
    );

    let running = Helper::spawn_as(&path, &up.socket());
    let mut held = running.client().await;
    assert_eq!(x509_ids(&mut held).await.unwrap(), vec![OLD]);

    // Replace the file at the path while the process runs the old one.
    std::fs::rename(&replacement, &path).unwrap();
    assert_eq!(sha256_file(&path), new_sha);
    let link = std::fs::read_link(format!("/proc/{}/exe", running.pid())).unwrap();
    assert_eq!(link, PathBuf::from(format!("{} (deleted)", path.display())), "the kernel's view of the old file");
    for _ in 0..2 {
        assert_served(&mut held, OLD, "attested by what runs").await;
    }

    // Control: a process running the new file is served the new entry.
    let fresh = Helper::spawn_as(&path, &up.socket());
    let mut fresh_client = fresh.client().await;
    assert_served(&mut fresh_client, NEW, "a process running the new file").await;
    assert_eq!(x509_ids(&mut held).await.unwrap(), vec![OLD], "still only the old entry");
}

const BILLING: &str = "spiffe://example.org/billing-by-path";

/// Security issue 12: in a mount namespace of its own, a process can put any
/// binary at any path. Its `unix:path` is not evidence: an entry selecting
/// by path alone is not served to it, while the real file at that path, run
/// in the agent's namespace, is.
#[tokio::test(flavor = "multi_thread")]
async fn a_path_seen_in_another_mount_namespace_is_not_evidence() {
    if my_uid() != "0" || Command::new("unshare").arg("--version").output().is_err() {
        println!("skipped: needs root and unshare(1) to make a mount namespace");
        return;
    }
    let up = Up::start();
    let dir = tempfile::tempdir().unwrap();
    let billing = dir.path().join("billing");
    let impostor = dir.path().join("impostor");
    copy_of_this_binary(&billing);
    variant_of_this_binary(&impostor);
    up.create_entry(
        BILLING,
        &["--selector", &format!("unix:uid:{}", my_uid()), "--selector", &format!("unix:path:{}", billing.display())],
    );
    // Control: the real binary at the path, in the agent's namespace.
    let real = Helper::spawn_as(&billing, &up.socket());
    let mut client = real.client().await;
    assert_eq!(x509_ids(&mut client).await.unwrap(), vec![BILLING]);
    drop(real);

    // The impostor bind-mounted over the path in a private mount namespace.
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount --bind "$1" "$2" && p="$2" && shift 2 && exec "$p" "$@""#)
        .arg("sh")
        .arg(&impostor)
        .arg(&billing)
        .args(HELPER_ARGS);
    let impostor_proc = Helper::spawn_with(cmd, &up.socket());
    let link = std::fs::read_link(format!("/proc/{}/exe", impostor_proc.pid())).unwrap();
    println!("the impostor's executable as the host sees it: {}", link.display());
    let mut client = impostor_proc.client().await;
    assert_served_nothing(&mut client, "a binary bind-mounted at the entry's path in another mount namespace").await;
}

/// `hallmark up` with `extra` flags; its data directory is `dir/data`.
fn start_up_in(dir: tempfile::TempDir, extra: &[&OsStr]) -> Up {
    let extra: Vec<&str> = extra.iter().map(|a| a.to_str().unwrap()).collect();
    Up::start_with(dir, &extra)
}

/// A directory every user may enter (0755) holding a copy of the CLI, for
/// tests that run it as uid 65534; `None` (skip) unless this runs as root.
fn open_dir_with_cli() -> Option<(tempfile::TempDir, PathBuf)> {
    if my_uid() != "0" {
        println!("skipped: running a process as uid 65534 needs root");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let cli = dir.path().join("hallmark");
    copy_exe(Path::new(bin()), &cli);
    Some((dir, cli))
}

const ROOT_ONLY: &str = "spiffe://example.org/root-only";
const NOBODY: &str = "spiffe://example.org/nobody";

#[tokio::test(flavor = "multi_thread")]
async fn another_uid_cannot_get_an_entry_of_root_even_by_naming_it() {
    let Some((shared, cli)) = open_dir_with_cli() else { return };
    // Everything uid 65534 needs is in a 0755 directory: the binary and the socket.
    let socket = shared.path().join("sock").join("api.sock");
    let up = start_up_in(tempfile::tempdir().unwrap(), &[OsStr::new("--socket"), socket.as_os_str()]);
    assert_eq!(mode(&up.dir.path().join("data")), 0o700);
    assert_eq!(mode(socket.parent().unwrap()), 0o755, "the directory the agent made for the socket");
    up.create_entry(ROOT_ONLY, &["--selector", "unix:uid:0"]);

    // Control: root is served its entry by the same command.
    let out = up.cli(&["api", "fetch-jwt", "--audience", "x", "--spiffe-id", ROOT_ONLY]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(ROOT_ONLY));

    let as_nobody = |args: &[&str]| {
        Command::new(&cli)
            .args(args)
            .env_clear()
            .env("SPIFFE_ENDPOINT_SOCKET", format!("unix://{}", socket.display()))
            .current_dir(shared.path())
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
    };
    let refused = |args: &[&str]| {
        let out = as_nobody(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} as uid 65534 succeeded: {}", String::from_utf8_lossy(&out.stdout));
        assert!(err.contains("PermissionDenied"), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?} printed: {}", String::from_utf8_lossy(&out.stdout));
    };
    let fetch_root_jwt: &[&str] = &["api", "fetch-jwt", "--audience", "x", "--spiffe-id", ROOT_ONLY];
    refused(fetch_root_jwt);
    refused(&["api", "fetch-x509", "--json"]);

    // Control: an entry for uid 65534 is served to the same commands, and
    // still never root's.
    up.create_entry(NOBODY, &["--selector", "unix:uid:65534"]);
    let out = wait_for("the uid 65534 entry to be served", 30, || {
        Some(as_nobody(&["api", "fetch-x509", "--json"])).filter(|o| o.status.success())
    });
    let svids: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = svids.as_array().unwrap().iter().map(|s| s["spiffe_id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![NOBODY]);
    let out = as_nobody(&["api", "fetch-jwt", "--audience", "x"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let ids: Vec<&str> = text.lines().map(|l| l.split('\t').next().unwrap()).collect();
    assert_eq!(ids, vec![NOBODY], "{text}");
    refused(fetch_root_jwt);
}

const FLOOD_VICTIM: &str = "spiffe://example.org/nobody-under-flood";

/// Security issue 12: one local user opens over ten thousand idle Workload
/// API connections (each would hold a socket and a pidfd in the agent: more
/// than its descriptor limit). Another uid still gets its SVID, and the admin
/// API (in the same `up` process) still answers, while the flood holds.
#[tokio::test(flavor = "multi_thread")]
async fn one_uid_flooding_the_workload_api_starves_no_one_else() {
    if my_uid() != "0" {
        println!("skipped: running a process as uid 65534 needs root");
        return;
    }
    let shared = tempfile::tempdir().unwrap();
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let cli = shared.path().join("hallmark");
    copy_exe(Path::new(bin()), &cli);
    let socket = shared.path().join("sock").join("api.sock");
    let up = start_up_in(tempfile::tempdir().unwrap(), &[OsStr::new("--socket"), socket.as_os_str()]);
    up.create_entry(FLOOD_VICTIM, &["--selector", "unix:uid:65534"]);
    let as_nobody = |args: &[&str]| {
        Command::new("/usr/bin/timeout")
            .arg("20")
            .arg(&cli)
            .args(args)
            .env_clear()
            .env("SPIFFE_ENDPOINT_SOCKET", format!("unix://{}", socket.display()))
            .current_dir(shared.path())
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
    };
    wait_for("uid 65534 to be served before the flood", 30, || {
        Some(as_nobody(&["api", "fetch-jwt", "--audience", "x"])).filter(|o| o.status.success())
    });
    let agent_pid = up.proc.child.id();
    let limit = std::fs::read_to_string(format!("/proc/{agent_pid}/limits")).unwrap();
    println!("{}", limit.lines().find(|l| l.starts_with("Max open files")).unwrap_or_default());

    // The flood: idle connections from this uid (root), held open.
    let mut flood = Vec::new();
    for _ in 0..10_500 {
        match std::os::unix::net::UnixStream::connect(&socket) {
            Ok(c) => flood.push(c),
            Err(e) => panic!("connect failed after {} connections: {e}", flood.len()),
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let held = std::fs::read_dir(format!("/proc/{agent_pid}/fd")).unwrap().count();
    println!("the agent holds {held} descriptors with {} flooding connections open", flood.len());

    // Another uid: served (`timeout`: a starved agent never accepts, and
    // the client would wait for ever).
    let out = as_nobody(&["api", "fetch-jwt", "--audience", "x"]);
    assert!(out.status.success(), "uid 65534 during the flood: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(FLOOD_VICTIM));
    // The admin API, in the same process: answers.
    let list = up.cli(&["entry", "list", "--json"]);
    assert!(list.status.success(), "admin API during the flood: {}", String::from_utf8_lossy(&list.stderr));
    // Most of the flood was closed at once: the agent kept its descriptors.
    let alive = flood
        .iter()
        .filter(|c| {
            c.set_nonblocking(true).unwrap();
            let mut b = [0u8; 1];
            // A closed connection reads end of file; an open idle one would block.
            !matches!(std::io::Read::read(&mut &**c, &mut b), Ok(0))
        })
        .count();
    println!("{alive} of {} flooding connections still open", flood.len());
    assert!(alive < flood.len(), "the agent closed connections over the per-uid limit");
    assert!(log_mentions(&up, "connection limit reached"), "the limit is logged");
    drop(flood);
}

const HASHED_BEFORE: &str = "spiffe://example.org/nobody-hashed-before";
const ROOT_BESIDE: &str = "spiffe://example.org/root-beside-stuck-reads";

/// One local user (uid 65534) runs executables whose files never finish
/// reading, as on a FUSE filesystem whose server stops answering (here one
/// this test serves: `stuck_fs`). The agent reads an executable in full to
/// hash it, so each such call holds a thread of its blocking pool in the
/// kernel. The user's clients give up and try again with more: the reads
/// still hold their slots, so the user never has more than 4 stuck at once,
/// and the new callers wait without reading. Meanwhile the same user's
/// workload hashed before is served, and so is another uid's new workload.
/// When the filesystem answers (an error), every stuck caller is refused.
#[tokio::test(flavor = "multi_thread")]
async fn executables_that_never_finish_reading_hold_four_of_their_uids_threads_and_no_one_elses() {
    let Some((shared, cli)) = open_dir_with_cli() else { return };
    if !Path::new("/dev/fuse").exists() {
        println!("skipped: no /dev/fuse");
        return;
    }
    let mount = shared.path().join("fuse");
    std::fs::create_dir(&mount).unwrap();
    let stuck = crate::stuck_fs::StuckFs::mount(&cli, 8, &mount).unwrap();
    let socket = shared.path().join("sock").join("api.sock");
    let up = start_up_in(tempfile::tempdir().unwrap(), &[OsStr::new("--socket"), socket.as_os_str()]);
    up.create_entry(HASHED_BEFORE, &["--selector", "unix:uid:65534"]);
    up.create_entry(ROOT_BESIDE, &["--selector", "unix:uid:0"]);
    // `timeout` for the calls that must be answered: a starved agent would
    // keep them waiting for ever.
    let as_nobody = |program: &Path, timeout: bool| {
        let mut cmd = if timeout { Command::new("/usr/bin/timeout") } else { Command::new(program) };
        if timeout {
            cmd.arg("30").arg(program);
        }
        cmd.args(["api", "fetch-jwt", "--audience", "x"])
            .env_clear()
            .env("SPIFFE_ENDPOINT_SOCKET", format!("unix://{}", socket.display()))
            .current_dir(shared.path())
            .uid(65534)
            .gid(65534);
        cmd
    };
    let served = |out: std::process::Output, id: &str, what: &str| {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(text.starts_with(id), "{what}: {text}");
    };
    wait_for("uid 65534 to be served before the attack", 30, || {
        Some(as_nobody(&cli, true).output().unwrap()).filter(|o| o.status.success())
    });

    // Four stuck callers, then their clients give up (killed: the agent
    // sees the connections close and drops the calls).
    let log = |i: u64| shared.path().join(format!("stuck-{i}.log"));
    let first: Vec<Proc> = (0..4).map(|i| Proc::spawn(as_nobody(&stuck.file(i), false), &log(i))).collect();
    wait_for("four reads of the executables to be stuck", 60, || (stuck.held() == 4).then_some(()));
    drop(first);
    // Four more from the same uid: their reads would be stuck too, were
    // the given-up calls' slots given back.
    let mut second: Vec<Proc> = (4..8).map(|i| Proc::spawn(as_nobody(&stuck.file(i), false), &log(i))).collect();
    let metrics = format!("{}/metrics", up.env["HALLMARK_AGENT_HEALTH"]);
    let gauge = |name: &str| metric(&http_get(&metrics).1, name);
    wait_for("the four new callers to wait for a slot", 60, || {
        (gauge("hallmark_agent_executable_reads_waiting") == Some(4)).then_some(())
    });
    assert_eq!(gauge("hallmark_agent_executables_being_read"), Some(4));
    assert_eq!(stuck.held(), 4, "uid 65534 has more than 4 executables being read");
    assert!(second.iter_mut().all(|p| p.child.try_wait().unwrap().is_none()), "the new callers wait their turn");

    // The same uid's workload hashed before: served, it takes no slot.
    served(as_nobody(&cli, true).output().unwrap(), HASHED_BEFORE, "uid 65534, hashed before, beside its stuck reads");
    // Another uid's workload, never hashed: served.
    let fresh = shared.path().join("hallmark-root");
    copy_exe(Path::new(bin()), &fresh);
    let out = Command::new("/usr/bin/timeout")
        .arg("30")
        .arg(&fresh)
        .args(["api", "fetch-jwt", "--audience", "x"])
        .env_clear()
        .env("SPIFFE_ENDPOINT_SOCKET", format!("unix://{}", socket.display()))
        .output()
        .unwrap();
    served(out, ROOT_BESIDE, "root, a new executable, beside uid 65534's stuck reads");
    assert_eq!(stuck.held(), 4);

    // The filesystem answers at last (EIO): every stuck caller is refused.
    stuck.release();
    for p in &mut second {
        let status = wait_for("a stuck caller to be answered", 60, || p.child.try_wait().unwrap());
        let text = p.log();
        assert!(!status.success(), "a caller whose executable cannot be read was served: {text}");
        assert!(text.contains("PermissionDenied"), "{text}");
    }
}

fn log_mentions(up: &Up, what: &str) -> bool {
    up.proc.log().contains(what)
}

#[tokio::test(flavor = "multi_thread")]
async fn another_uid_reaches_the_default_socket_of_up_and_nothing_else() {
    // DIR's own parent is open to all, as /var/lib is; the binary is there too.
    let Some((dir, cli)) = open_dir_with_cli() else { return };
    let up = start_up_in(dir, &[]);
    let data = up.dir.path().join("data");
    let socket = data.join("agent/public/api.sock");
    assert_eq!(up.socket(), format!("unix://{}", socket.display()), "no --socket: the default");
    let as_nobody = |program: &Path, args: &[&str]| {
        Command::new(program)
            .args(args)
            .env_clear()
            .env("SPIFFE_ENDPOINT_SOCKET", up.socket())
            .current_dir(up.dir.path())
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
    };

    // No entry for uid 65534: the socket answers, and the answer is PermissionDenied.
    let out = as_nobody(&cli, &["api", "fetch-x509", "--json"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("PermissionDenied"), "{err}");
    assert!(!err.contains("os error 13"), "the socket itself was out of reach: {err}");

    // With an entry, its own SVID (and a JWT-SVID), never another's.
    up.create_entry(ROOT_ONLY, &["--selector", "unix:uid:0"]);
    up.create_entry(NOBODY, &["--selector", "unix:uid:65534"]);
    let out = wait_for("the uid 65534 entry to be served", 30, || {
        Some(as_nobody(&cli, &["api", "fetch-x509", "--json"])).filter(|o| o.status.success())
    });
    let svids: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = svids.as_array().unwrap().iter().map(|s| s["spiffe_id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![NOBODY]);
    let out = as_nobody(&cli, &["api", "fetch-jwt", "--audience", "x"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(NOBODY));

    // The same uid can pass through DIR but not list it, nor read what holds secrets.
    let ls = as_nobody(Path::new("ls"), &[data.to_str().unwrap()]);
    assert!(!ls.status.success(), "uid 65534 listed DIR: {}", String::from_utf8_lossy(&ls.stdout));
    for secret in ["hallmark.db", "admin-token", "env", "agent/agent.key.der", "server"] {
        let p = data.join(secret);
        let cat = as_nobody(Path::new("cat"), &[p.to_str().unwrap()]);
        assert!(!cat.status.success(), "uid 65534 read {secret}");
        assert!(String::from_utf8_lossy(&cat.stderr).contains("Permission denied"), "{secret}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_socket_is_open_to_all_and_the_data_and_keys_to_no_one_else() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // An existing data directory open to others is tightened on start.
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let up = start_up_in(dir, &[]);
    let socket = PathBuf::from(up.socket().strip_prefix("unix://").unwrap());
    assert_eq!(socket, data.join("agent/public/api.sock"), "the default socket");
    assert_eq!(mode(&socket), 0o777, "attestation decides who gets what, not the socket's mode");
    // Every directory on the socket's path lets every user through; those
    // holding private files let no one else list them.
    assert_eq!(mode(socket.parent().unwrap()), 0o755);
    for d in ["data", "data/agent"] {
        assert_eq!(mode(&up.dir.path().join(d)), 0o711, "{d}: traversable, not listable");
    }
    for d in ["data/server", "data/server/keys", "data/server/keys/x509", "data/server/keys/jwt"] {
        assert_eq!(mode(&up.dir.path().join(d)), 0o700, "{d}");
    }

    // Every file holding a private key, a credential or the database: by
    // name, or by content. Whatever else others could read by name is public.
    let mut secret_files = Vec::new();
    let mut readable_by_others = Vec::new();
    let mut todo = vec![data.clone()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if meta.is_dir() {
                if p != socket.parent().unwrap() {
                    assert_eq!(mode(&p) & 0o066, 0, "{}: no one else may list or change it", p.display());
                }
                todo.push(p);
            } else if meta.is_file() {
                let by_name = name.ends_with(".key.pem")
                    || name.ends_with(".key.der")
                    || name == "admin-token"
                    || name == "env"
                    || name.starts_with("hallmark.db");
                let by_content = std::fs::read(&p).unwrap().windows(11).any(|w| w == b"PRIVATE KEY");
                let rel = p.strip_prefix(&data).unwrap().display().to_string();
                if by_name || by_content {
                    assert_eq!(mode(&p), 0o600, "{}", p.display());
                    secret_files.push(rel);
                } else if mode(&p) & 0o004 != 0 {
                    readable_by_others.push(rel);
                }
            }
        }
    }
    let names = &secret_files;
    println!("private files (all 0600): {names:?}");
    println!("public files others may read by name: {readable_by_others:?}");
    let has = |pred: &dyn Fn(&str) -> bool| names.iter().any(|n| pred(n));
    assert!(has(&|n| n.starts_with("server/keys/x509/") && n.ends_with(".key.pem")), "X.509 CA key: {names:?}");
    assert!(has(&|n| n.starts_with("server/keys/jwt/") && n.ends_with(".key.pem")), "JWT key: {names:?}");
    assert!(has(&|n| n == "agent/agent.key.der"), "agent key: {names:?}");
    assert!(has(&|n| n == "admin-token"), "admin token: {names:?}");
    assert!(has(&|n| n == "env"), "env file (holds the admin token): {names:?}");
    assert!(has(&|n| n == "hallmark.db"), "database: {names:?}");
    // Readable by name: certificates, the bundle and identifiers, nothing else.
    for f in &readable_by_others {
        let public = f.ends_with(".chain.pem")
            || f.ends_with("bundle.json")
            || f.ends_with("agent.authority")
            || f.ends_with("server-id");
        assert!(public, "{f} is readable by others and not known to be public");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_socket_in_an_existing_directory_leaves_that_directory_alone() {
    // Like /tmp: sticky and writable by all. Making it 0755 would break every other user.
    let shared = tempfile::tempdir().unwrap();
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let socket = shared.path().join("api.sock");
    let up = start_up_in(tempfile::tempdir().unwrap(), &[OsStr::new("--socket"), socket.as_os_str()]);
    assert_eq!(up.socket(), format!("unix://{}", socket.display()));
    assert_eq!(mode(&socket), 0o777);
    assert_eq!(mode(shared.path()), 0o1777, "the agent changed the mode of a directory it did not create");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `hallmark server` on SQLite, logging at debug level (failed TLS handshakes are debug).
fn start_server_logging_debug() -> Deployment {
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let cfg = format!(
        "trust_domain = \"example.org\"\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n",
        dir.path().join("server").display()
    );
    std::fs::write(dir.path().join("server.toml"), cfg).unwrap();
    let mut cmd = Command::new(bin());
    cmd.args(["server", "--config"]).arg(dir.path().join("server.toml")).env("HALLMARK_LOG", "debug");
    let server = Proc::spawn(cmd, &dir.path().join("server.log"));
    let token_file = dir.path().join("server/admin-token");
    let token =
        wait_for("server admin token", 60, || std::fs::read_to_string(&token_file).ok().filter(|t| !t.is_empty()));
    let env = std::collections::HashMap::from([
        ("HALLMARK_SERVER".to_owned(), format!("http://127.0.0.1:{admin}")),
        ("HALLMARK_TOKEN".to_owned(), token.trim().to_owned()),
        ("HALLMARK_AGENT_PORT".to_owned(), port.to_string()),
    ]);
    Deployment { server, dir, env }
}

/// Starts the agent `name` (joined earlier by [`join_agent`]) again on its data directory.
fn restart_agent(dep: &Deployment, name: &str) -> Proc {
    let mut cmd = Command::new(bin());
    cmd.args(["agent", "--config"]).arg(dep.dir.path().join(name).join("agent.toml"));
    Proc::spawn(cmd, &dep.dir.path().join(format!("{name}-{}.log", rand_tag())))
}

async fn agent_client(socket: &Path) -> spiffe::WorkloadApiClient {
    spiffe::WorkloadApiClient::connect_to(format!("unix://{}", socket.display())).await.unwrap()
}

/// For `secs` seconds, the agent at `socket` serves no SVID (or is not there at all).
async fn serves_nothing_for(socket: &Path, secs: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if let Ok(c) = spiffe::WorkloadApiClient::connect_to(format!("unix://{}", socket.display())).await
            && let Ok(svid) = c.fetch_x509_svid().await
        {
            panic!("{what}: the agent served {}", svid.spiffe_id());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const ON_A: &str = "spiffe://example.org/on-a";
const ON_B: &str = "spiffe://example.org/on-b";
const ON_C: &str = "spiffe://example.org/on-c";

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_with_another_agents_a_foreign_or_a_revoked_svid_gets_nothing() {
    let dep = start_server_logging_debug();
    let (a, a_id, a_socket) = join_agent(&dep, "a");
    let (mut b, b_id, b_socket) = join_agent(&dep, "b");
    let (mut c, c_id, c_socket) = join_agent(&dep, "c");
    dep.owner("ops");
    for (id, parent) in [(ON_A, &a_id), (ON_B, &b_id), (ON_C, &c_id)] {
        dep.entry_for_me(id, parent, &[]);
    }
    let a_client = agent_client(&a_socket).await;
    for (client, id) in
        [(&a_client, ON_A), (&agent_client(&b_socket).await, ON_B), (&agent_client(&c_socket).await, ON_C)]
    {
        let svid = wait_for_svid(client).await.unwrap_or_else(|| panic!("{id} never served\n{}", dep.server.log()));
        assert_eq!(svid.spiffe_id().to_string(), id);
    }
    b.kill();
    let b_data = dep.dir.path().join("b/data");

    // 1. B starts with A's SVID and its own key. rustls refuses that pair
    // locally (the certificate's key is not B's), so B never reaches the
    // server with it: B stops at start, saying so, and serves nothing.
    std::fs::copy(dep.dir.path().join("a/data/agent.chain.pem"), b_data.join("agent.chain.pem")).unwrap();
    let mut b_as_a = restart_agent(&dep, "b");
    let status = wait_for("B with A's SVID to stop", 30, || b_as_a.child.try_wait().unwrap());
    assert!(!status.success());
    let log = b_as_a.log();
    assert!(log.contains("TLS") && log.contains("KeyMismatch"), "B says why it stopped:\n{log}");
    serves_nothing_for(&b_socket, 1, "B with A's SVID").await;

    // 2. B starts with a valid-looking SVID for A's identity, signed by a
    // foreign CA of the same trust domain name, and its key. Were the chain
    // not checked against the server's bundle, B would pass as A (a known,
    // unbanned node) and serve A's entry.
    let td = hallmark_core::TrustDomain::new("example.org").unwrap();
    let now = hallmark_core::now_unix();
    let foreign = hallmark_ca::X509Authority::generate_self_signed(&td, 3600, now).unwrap();
    let a_spiffe_id = hallmark_core::SpiffeId::new(&a_id).unwrap();
    let kc = hallmark_ca::keys::new_key_and_csr(Some(&a_spiffe_id)).unwrap();
    let template = hallmark_ca::x509::SvidTemplate {
        csr_der: &kc.csr_der,
        spiffe_id: &a_spiffe_id,
        dns_names: &[],
        ttl_secs: 3600,
        now,
        profile: hallmark_ca::x509::SvidProfile::Agent,
        task_id: None,
        person_name: None,
    };
    let forged = foreign.sign_svid(&template).unwrap();
    hallmark_ca::keys::write_secret_file(&b_data.join("agent.key.der"), &kc.key_pkcs8).unwrap();
    std::fs::write(b_data.join("agent.chain.pem"), hallmark_ca::svid::to_pem(&forged.chain)).unwrap();
    let server_log_before = dep.server.log().len();
    let forger = restart_agent(&dep, "b");
    wait_for("the forger to start as A", 30, || {
        let log = forger.log();
        (log.contains("using stored agent SVID") && log.contains(&a_id)).then_some(())
    });
    serves_nothing_for(&b_socket, 5, "B with a foreign SVID for A").await;
    assert!(forger.log().contains("cannot open entry sync"), "the forger was refused:\n{}", forger.log());
    let server_log = dep.server.log();
    let new_lines = &server_log[server_log_before..];
    assert!(new_lines.contains("TLS handshake failed"), "the server refused the handshake:\n{new_lines}");
    drop(forger);

    // 3. C is banned, then restarted with its (revoked) SVID still on disk.
    let out = dep.cli(&["revoke", "--node", &c_id, "--reason", "attacks test"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    c.kill();
    let c_again = restart_agent(&dep, "c");
    wait_for("the banned agent to start", 30, || {
        let log = c_again.log();
        (log.contains("using stored agent SVID") && log.contains(&c_id)).then_some(())
    });
    serves_nothing_for(&c_socket, 5, "C with its revoked SVID").await;
    assert!(c_again.log().contains("is banned"), "C was refused as banned:\n{}", c_again.log());

    // A kept working throughout: its SVID, and a JWT minted by the server now.
    assert_eq!(a_client.fetch_x509_svid().await.unwrap().spiffe_id().to_string(), ON_A);
    let jwt = a_client.fetch_jwt_svid(["after-the-attacks"], None).await.unwrap();
    assert_eq!(jwt.spiffe_id().to_string(), ON_A);
    assert!(a.log().contains("agent ready"), "{}", a.log());
}
