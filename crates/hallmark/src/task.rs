//! `hallmark task ...`: AI-agent tasks. `task run` starts a command as a
//! task: the task is created on the server, the command's process is bound
//! to it *before* the command runs (it waits at a gate until the binding is
//! recorded), and the task ends, revoking everything issued for it, when
//! the command exits. No secret is handed to the process: the agent knows
//! it, and its descendants, by PID and start time.

use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use hallmark_core::now_unix;
use hyper::Method;
use serde_json::{Value, json};

use crate::Conn;
use crate::client::encode;
use crate::commands::{client, emit as print};
use crate::table::{Table, text, time_rel};

/// What a task is: shared by `task run` and `task start`.
#[derive(Args, Debug, Clone)]
pub struct TaskSpec {
    /// The agent's entry (created with `--bind task`).
    #[arg(long)]
    entry: String,
    /// What the agent is to do (recorded; credentials carry its SHA-256).
    #[arg(long)]
    objective: String,
    /// An audience (tool, API) the task may get tokens for, with optional
    /// actions after the last `:` (`tool://search:read,write`). Repeat it.
    #[arg(long = "scope", value_name = "AUD[:ACTIONS]", required = true)]
    scope: Vec<String>,
    /// A scope audience that waits for `hallmark task approve` by the entry's
    /// owner or a trust-admin. Repeat it.
    #[arg(long = "approve", value_name = "AUD")]
    approve: Vec<String>,
    /// The person (or service) the task acts for: in its tokens as
    /// `task.on_behalf_of`, and in the policy context.
    #[arg(long, value_name = "SUBJECT")]
    on_behalf_of: Option<String>,
    /// Most the task may live (at most 24h); its credentials never outlive it.
    #[arg(long, default_value = "30m")]
    ttl: String,
    /// End the task at its first request outside its scope.
    #[arg(long)]
    revoke_on_breach: bool,
}

/// `hallmark task ...`
#[derive(Subcommand)]
pub enum TaskCmd {
    /// Run COMMAND as a task: bound to the task (with its descendants) before
    /// it starts, and the task ends when it exits. Exits with its status.
    Run {
        #[command(flatten)]
        spec: TaskSpec,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Bind a task to a process already running on this host (by PID), then
    /// wait for it to exit and end the task (unless `--detach`).
    Start {
        #[command(flatten)]
        spec: TaskSpec,
        /// The process (as this host's PID namespace sees it, as the agent does).
        #[arg(long)]
        pid: i32,
        /// Return once bound; the task ends with `task end`, `revoke --task`
        /// or its lifetime.
        #[arg(long)]
        detach: bool,
    },
    /// Give a task a new objective: every credential it holds is revoked at
    /// once; new ones are decided (and approved) under the new objective.
    Update {
        /// Task id.
        id: String,
        /// The new objective.
        #[arg(long)]
        objective: String,
    },
    /// Approve a scope item that waits for a person (the entry's owner or a
    /// trust-admin; never the identity that started the task).
    Approve {
        /// Task id.
        id: String,
        /// The audience to approve.
        #[arg(long, value_name = "AUD")]
        scope: String,
    },
    /// End a task: everything issued for it is revoked.
    End {
        /// Task id.
        id: String,
        /// Why (recorded).
        #[arg(long, default_value = "task ended")]
        reason: String,
    },
    /// List running tasks (`--all`: ended ones too).
    List {
        /// Only this entry's.
        #[arg(long)]
        entry: Option<String>,
        /// Ended tasks too.
        #[arg(long)]
        all: bool,
    },
    /// Show a task and the credentials issued for it.
    Show {
        /// Task id.
        id: String,
    },
}

fn print_task(v: &Value) {
    let now = now_unix();
    let s = |k: &str| text(v, k);
    println!("Task ID       : {}", s("id"));
    println!("Entry         : {}", s("entry_id"));
    println!("State         : {}", s("state"));
    println!("Objective     : {}", s("objective"));
    println!("Objective hash: {}", s("objective_sha256"));
    for item in v["scope"].as_array().into_iter().flatten() {
        let actions: Vec<&str> = item["actions"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let approval = match (item["approval"].as_bool(), item["approved_by"].as_str()) {
            (Some(true), Some(by)) => format!(" (approved by {by})"),
            (Some(true), None) => " (waits for approval)".to_owned(),
            _ => String::new(),
        };
        let actions = if actions.is_empty() { String::new() } else { format!(" [{}]", actions.join(",")) };
        println!("Scope         : {}{actions}{approval}", text(item, "audience"));
    }
    if let Some(who) = v["on_behalf_of"].as_str() {
        println!("On behalf of  : {who}");
    }
    if let Some(p) = v["process"].as_object() {
        println!(
            "Process       : pid {} on {}",
            p.get("pid").cloned().unwrap_or_default(),
            text(&v["process"], "node_id")
        );
    }
    println!("Started by    : {}", s("created_by"));
    println!("Expires       : {}", time_rel(v, "expires_at", now));
    println!("Breaches      : {}", v["breaches"].as_i64().unwrap_or(0));
    if v["ended_at"].is_i64() {
        println!("Ended         : {} ({})", time_rel(v, "ended_at", now), s("end_reason"));
    }
}

fn print_with_revoked(v: &Value) {
    print_task(&v["task"]);
    let n = v["revoked"].as_array().map(Vec::len).unwrap_or(0);
    println!("Revoked now   : {n} credential(s)");
}

/// `hallmark task ...`
pub async fn task(cmd: TaskCmd, conn: &Conn) -> anyhow::Result<()> {
    match cmd {
        TaskCmd::Run { spec, command } => run(conn, &spec, &command).await,
        TaskCmd::Start { spec, pid, detach } => start(conn, &spec, pid, detach).await,
        TaskCmd::Update { id, objective } => {
            hallmark_core::check_objective(&objective)?;
            let body = json!({ "objective": objective });
            let v =
                client(conn)?.json(Method::POST, &format!("/v1/tasks/{}/objective", encode(&id)), Some(&body)).await?;
            print(conn, &v, print_with_revoked)
        }
        TaskCmd::Approve { id, scope } => {
            let body = json!({ "scope": scope });
            let v =
                client(conn)?.json(Method::POST, &format!("/v1/tasks/{}/approve", encode(&id)), Some(&body)).await?;
            print(conn, &v, print_task)
        }
        TaskCmd::End { id, reason } => {
            let v = end(conn, &id, &reason).await?;
            print(conn, &v, print_with_revoked)
        }
        TaskCmd::List { entry, all } => {
            let mut q = vec![format!("all={all}")];
            if let Some(e) = entry {
                q.push(format!("entry={}", encode(&e)));
            }
            let v = client(conn)?.json(Method::GET, &format!("/v1/tasks?{}", q.join("&")), None).await?;
            print(conn, &v, |v| {
                let now = now_unix();
                let mut t = Table::new(&["TASK ID", "ENTRY", "STATE", "SCOPE", "EXPIRES", "BREACHES", "OBJECTIVE"]);
                for x in v["tasks"].as_array().into_iter().flatten() {
                    let scope: Vec<&str> =
                        x["scope"].as_array().into_iter().flatten().filter_map(|i| i["audience"].as_str()).collect();
                    let objective: String = text(x, "objective").chars().take(40).collect();
                    t.row(vec![
                        text(x, "id"),
                        text(x, "entry_id"),
                        text(x, "state"),
                        scope.join(","),
                        time_rel(x, "expires_at", now),
                        x["breaches"].as_i64().unwrap_or(0).to_string(),
                        objective,
                    ]);
                }
                t.print_or("no tasks");
            })
        }
        TaskCmd::Show { id } => {
            let v = client(conn)?.json(Method::GET, &format!("/v1/tasks/{}", encode(&id)), None).await?;
            print(conn, &v, |v| {
                print_task(&v["task"]);
                let now = now_unix();
                let mut t = Table::new(&["KIND", "SERIAL / JTI", "AUDIENCE", "EXPIRES", "REVOKED"]);
                for c in v["credentials"].as_array().into_iter().flatten() {
                    let revoked = if c["revoked_at"].is_i64() { text(c, "revoke_reason") } else { String::new() };
                    t.row(vec![
                        text(c, "kind"),
                        text(c, "id"),
                        text(c, "audience"),
                        time_rel(c, "not_after", now),
                        revoked,
                    ]);
                }
                t.print_or("no credentials issued for this task yet");
            })
        }
    }
}

/// Creates the task on the server; returns its id.
async fn create(conn: &Conn, spec: &TaskSpec) -> anyhow::Result<String> {
    hallmark_core::check_objective(&spec.objective)?;
    hallmark_core::parse_scope(&spec.scope, &spec.approve)?;
    let body = json!({
        "entry_id": spec.entry,
        "objective": spec.objective,
        "scope": spec.scope,
        "approve": spec.approve,
        "on_behalf_of": spec.on_behalf_of,
        "ttl": spec.ttl,
        "revoke_on_breach": spec.revoke_on_breach,
    });
    let v = client(conn)?.json(Method::POST, "/v1/tasks", Some(&body)).await?;
    v.get("id").and_then(Value::as_str).map(str::to_owned).context("the server's answer names no task id")
}

/// Binds task `id` to process `pid`, whose start time is read here.
async fn bind(conn: &Conn, id: &str, pid: i32) -> anyhow::Result<Value> {
    let start_ticks = start_ticks(pid).with_context(|| format!("process {pid} is not running"))?;
    let body = json!({ "pid": pid, "start_ticks": start_ticks });
    client(conn)?.json(Method::POST, &format!("/v1/tasks/{}/process", encode(id)), Some(&body)).await
}

async fn end(conn: &Conn, id: &str, reason: &str) -> anyhow::Result<Value> {
    let body = json!({ "reason": reason });
    client(conn)?.json(Method::POST, &format!("/v1/tasks/{}/end", encode(id)), Some(&body)).await
}

/// The start time (clock ticks since boot, `/proc/PID/stat` field 22) of `pid`.
fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    hallmark_agent::attest::parse_stat_starttime(&stat)
}

/// A private directory holding the gate a command waits at (a named pipe
/// it reads one line from), so it can be bound to a task before it runs.
pub(crate) struct Gate {
    dir: PathBuf,
    fifo: PathBuf,
}

impl Gate {
    pub(crate) fn new() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("hallmark-task-{}", hallmark_store::random_hex::<8>()));
        std::fs::DirBuilder::new().mode(0o700).create(&dir).with_context(|| format!("{}", dir.display()))?;
        let fifo = dir.join("gate");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR)
            .with_context(|| format!("mkfifo {}", fifo.display()))?;
        Ok(Self { dir, fifo })
    }

    /// Lets the command run. The pipe opens once the command waits at it;
    /// one that never does (it died first) is an error after 10 s, not a hang.
    pub(crate) fn open(&self) -> anyhow::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let opened = std::fs::OpenOptions::new().write(true).custom_flags(nix::libc::O_NONBLOCK).open(&self.fifo);
            match opened {
                Ok(mut f) => {
                    f.write_all(b"go\n")?;
                    return Ok(());
                }
                // ENXIO: nobody reads it yet.
                Err(e) if e.raw_os_error() == Some(nix::libc::ENXIO) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(e).context("the command never reached its gate"),
            }
        }
    }

    /// The named pipe.
    pub(crate) fn path(&self) -> &Path {
        &self.fifo
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `hallmark task run ... -- COMMAND`
async fn run(conn: &Conn, spec: &TaskSpec, command: &[String]) -> anyhow::Result<()> {
    let id = create(conn, spec).await?;
    // From here on, every way out ends the task: nothing it was issued may
    // outlive this command.
    let status = match start_and_wait(conn, &id, command).await {
        Ok(status) => status,
        Err(e) => {
            let _ = end_retrying(conn, &id, "task run failed before its process ended").await;
            return Err(e.context(format!("task {id}: ended")));
        }
    };
    let reason = match (status.code(), std::os::unix::process::ExitStatusExt::signal(&status)) {
        (Some(code), _) => format!("task process exited (status {code})"),
        (None, Some(sig)) => format!("task process ended by signal {sig}"),
        (None, None) => "task process ended".to_owned(),
    };
    end_retrying(conn, &id, &reason)
        .await
        .with_context(|| format!("task {id}: the process exited, but ending the task failed"))?;
    eprintln!("task {id}: ended ({reason}); its credentials are revoked");
    // The command's status, as a shell reports it (128 + N for signal N).
    match (status.code(), std::os::unix::process::ExitStatusExt::signal(&status)) {
        (Some(0), _) => Ok(()),
        (Some(code), _) => std::process::exit(code),
        (None, Some(sig)) => std::process::exit(128 + sig),
        (None, None) => std::process::exit(1),
    }
}

/// Ends task `id`, trying again for up to 10 s (a server restarting).
async fn end_retrying(conn: &Conn, id: &str, reason: &str) -> anyhow::Result<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match end(conn, id, reason).await {
            Ok(v) => return Ok(v),
            Err(_) if std::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(500)).await,
            Err(e) => return Err(e),
        }
    }
}

/// Starts `command` held at a gate, binds task `id` to it, lets it run and
/// waits for it.
async fn start_and_wait(conn: &Conn, id: &str, command: &[String]) -> anyhow::Result<std::process::ExitStatus> {
    let gate = Gate::new()?;
    // The shell waits at the gate, then becomes the command (`exec` keeps the
    // PID and the start time), so the task is bound before the command runs.
    let mut child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg("IFS= read -r _ < \"$0\" && exec \"$@\"")
        .arg(gate.path())
        .args(command)
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", command.join(" ")))?;
    let pid = child.id().and_then(|p| i32::try_from(p).ok()).context("the command has no PID")?;
    bind(conn, id, pid).await.context("cannot bind the task to its process")?;
    gate.open().context("cannot open the gate for the command")?;
    drop(gate);
    eprintln!("task {id}: running `{}` as pid {pid}", command.join(" "));
    wait_child(&mut child).await
}

/// Waits for the command, passing on Ctrl-C and SIGTERM to it (a terminal
/// already sends Ctrl-C to it too): the task must end after it, not before.
async fn wait_child(child: &mut tokio::process::Child) -> anyhow::Result<std::process::ExitStatus> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let pass_on = |child: &tokio::process::Child, sig: nix::sys::signal::Signal| {
        if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
        }
    };
    loop {
        tokio::select! {
            status = child.wait() => return Ok(status?),
            // A terminal's Ctrl-C reaches the command too; one sent with
            // `kill` to this process alone is passed on.
            _ = int.recv() => pass_on(child, nix::sys::signal::Signal::SIGINT),
            _ = term.recv() => pass_on(child, nix::sys::signal::Signal::SIGTERM),
            _ = hup.recv() => pass_on(child, nix::sys::signal::Signal::SIGHUP),
        }
    }
}

/// `hallmark task start --pid PID ...`
async fn start(conn: &Conn, spec: &TaskSpec, pid: i32, detach: bool) -> anyhow::Result<()> {
    if pid <= 1 {
        bail!("--pid must name a process other than init");
    }
    let Some(started) = start_ticks(pid) else { bail!("process {pid} is not running") };
    let id = create(conn, spec).await?;
    let v = match bind(conn, &id, pid).await {
        Ok(v) => v,
        Err(e) => {
            let _ = end(conn, &id, "could not bind the task to its process").await;
            return Err(e.context(format!("task {id}: cannot bind it to process {pid}")));
        }
    };
    if start_ticks(pid) != Some(started) {
        let _ = end(conn, &id, "the process exited while the task was bound").await;
        bail!("process {pid} exited while task {id} was being bound; the task is ended");
    }
    if detach {
        return print(conn, &v, print_task);
    }
    eprintln!("task {id}: bound to pid {pid}; ends when it exits (or when this command is interrupted)");
    let reason = tokio::select! {
        () = async {
            while start_ticks(pid) == Some(started) && !zombie(pid) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        } => "task process exited",
        _ = tokio::signal::ctrl_c() => "task start interrupted",
    };
    let v = end_retrying(conn, &id, reason).await?;
    print(conn, &v, print_with_revoked)
}

/// Whether `pid` has exited but not been reaped.
fn zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').and_then(|i| s.get(i + 1..)).and_then(|r| r.trim_start().chars().next()))
        .is_some_and(|c| matches!(c, 'Z' | 'X'))
}
