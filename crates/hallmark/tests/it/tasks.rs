//! Issue 18: AI agents get credentials for a task, not a role. Real
//! processes throughout: `hallmark up`, `hallmark task run` starting a shell
//! as the task's process, and `hallmark api` (a real Workload API client)
//! run by that shell as the agent's tool calls. The test feeds the shell
//! audiences through a named pipe and reads what each call got.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use serde_json::Value;

use crate::harness::*;

const AGENT: &str = "spiffe://example.org/agent/triage";

/// The script the task runs: for each line read from the pipe, one tool
/// call (`x509` fetches the X.509-SVID, anything else a JWT-SVID for that
/// audience), its answer in `NAME.out` / `NAME.err` and `NAME.done` last.
const SCRIPT: &str = r#"
bin="$1"; dir="$2"; n=0
while IFS= read -r aud; do
  n=$((n + 1))
  if [ "$aud" = x509 ]; then
    "$bin" api fetch-x509 --write "$dir/x509.$n" --json > "$dir/$n.out" 2> "$dir/$n.err"
  else
    "$bin" api fetch-jwt --audience "$aud" --spiffe-id "$3" --json > "$dir/$n.out" 2> "$dir/$n.err"
  fi
  echo $? > "$dir/$n.done"
done < "$dir/calls"
"#;

/// A task running [`SCRIPT`] under `hallmark task run`.
struct TaskRun {
    child: Child,
    dir: PathBuf,
    calls: Option<std::fs::File>,
    n: usize,
}

/// What one tool call got: the token (or the X.509 output) or the error.
type Call = Result<String, String>;

impl TaskRun {
    fn start(up: &Up, entry: &str, extra: &[&str]) -> (TaskRun, String) {
        Self::start_as(up, &up.env["HALLMARK_TOKEN"], entry, extra)
    }

    /// [`TaskRun::start`] by the admin identity holding `token`.
    fn start_as(up: &Up, token: &str, entry: &str, extra: &[&str]) -> (TaskRun, String) {
        let dir = up.dir.path().join(format!("task-{}", rand_tag()));
        std::fs::create_dir(&dir).unwrap();
        nix::unistd::mkfifo(&dir.join("calls"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let mut args = vec!["task", "run", "--entry", entry];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", "/bin/sh", "-c", SCRIPT, "task-script", bin()]);
        let child = Command::new(bin())
            .args(&args)
            .arg(&dir)
            .arg(AGENT)
            .envs(&up.env)
            .env("HALLMARK_TOKEN", token)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("task-run.log")).unwrap())
            .spawn()
            .unwrap();
        // The pipe opens once the script has opened it: the task is running.
        let calls = wait_for("the task's script to start", 30, || {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new().write(true).custom_flags(nix::libc::O_NONBLOCK).open(dir.join("calls")).ok()
        });
        let log = wait_for("task run to name its task", 10, || {
            std::fs::read_to_string(dir.join("task-run.log")).ok().filter(|l| l.contains(": running"))
        });
        let id = log.split_whitespace().nth(1).unwrap().trim_end_matches(':').to_owned();
        (TaskRun { child, dir, calls: Some(calls), n: 0 }, id)
    }

    /// One tool call by the task's process.
    fn call(&mut self, what: &str) -> Call {
        self.n += 1;
        let calls = self.calls.as_mut().unwrap();
        writeln!(calls, "{what}").unwrap();
        calls.flush().unwrap();
        let done = self.dir.join(format!("{}.done", self.n));
        let code = wait_for("the tool call", 30, || std::fs::read_to_string(&done).ok().filter(|s| s.ends_with('\n')));
        let out = std::fs::read_to_string(self.dir.join(format!("{}.out", self.n))).unwrap();
        let err = std::fs::read_to_string(self.dir.join(format!("{}.err", self.n))).unwrap();
        if code.trim() != "0" {
            return Err(err);
        }
        if what == "x509" {
            return Ok(std::fs::read_to_string(self.dir.join(format!("x509.{}/svid.0.pem", self.n))).unwrap());
        }
        let v: Value = serde_json::from_str(&out).unwrap();
        Ok(v[0]["svid"].as_str().unwrap().to_owned())
    }

    /// Ends the script (its pipe closes), and waits for `task run` to end the task.
    fn finish(mut self) -> String {
        self.calls = None;
        let status = self.child.wait().unwrap();
        let log = std::fs::read_to_string(self.dir.join("task-run.log")).unwrap();
        assert!(status.success(), "{log}");
        log
    }
}

impl Drop for TaskRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn claims(token: &str) -> Value {
    use base64::Engine;
    let body = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(body).unwrap()).unwrap()
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

fn validate(up: &Up, token: &str, aud: &str) -> std::process::Output {
    up.cli(&["api", "validate-jwt", "--audience", aud, "--svid", token])
}

fn task(up: &Up, id: &str) -> Value {
    up.cli_json(&["task", "show", id])
}

/// Runs the CLI as another admin identity.
fn as_admin(up: &Up, token: &str, args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .env("HALLMARK_SERVER", &up.env["HALLMARK_SERVER"])
        .env("HALLMARK_TOKEN", token)
        .output()
        .unwrap()
}

fn new_admin(up: &Up, name: &str, role: &str) -> String {
    let out = up.cli(&["admin", "token", "create", "--role", role, "--name", name]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().last().unwrap().to_owned()
}

fn agent_entry(up: &Up) -> String {
    let me = format!("unix:uid:{}", my_uid());
    let e = up.create_entry(AGENT, &["--selector", &me, "--bind", "task", "--class", "agent"]);
    assert_eq!(e["bind"], "task");
    e["id"].as_str().unwrap().to_owned()
}

/// `hallmark task start --pid PID --detach` for `entry`, scope `wiki`, with `extra` flags.
fn start_detached(up: &Up, entry: &str, pid: &str, extra: &[&str]) -> Value {
    let mut args = vec!["task", "start", "--entry", entry, "--objective", "watch", "--scope", "wiki"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--pid", pid, "--detach"]);
    up.cli_json(&args)
}

fn pem_subject(pem: &str) -> (String, String) {
    use x509_parser::pem::parse_x509_pem;
    let (_, p) = parse_x509_pem(pem.as_bytes()).unwrap();
    let cert = p.parse_x509().unwrap();
    (cert.subject().to_string(), hex::encode(cert.raw_serial()))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_gets_only_its_scope_and_loses_everything_when_its_objective_changes_or_it_ends() {
    let up = Up::start();
    let entry = agent_entry(&up);

    // Outside a task, the agent's entry gives nothing: no standing role.
    let out = up.cli(&["api", "fetch-jwt", "--audience", "tickets", "--spiffe-id", AGENT]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no running task"), "{out:?}");
    // A task for an entry not bound to tasks is refused with what to do.
    let plain = up.create_entry("spiffe://example.org/plain", &["--selector", "unix:uid:4242"]);
    let refused = up.cli(&[
        "task",
        "start",
        "--entry",
        plain["id"].as_str().unwrap(),
        "--objective",
        "x",
        "--scope",
        "a",
        "--pid",
        &std::process::id().to_string(),
    ]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--bind task"), "{refused:?}");

    // Tasks are started by an automation's identity (alice), approved by a person.
    let alice = new_admin(&up, "alice", "trust-admin");
    let objective = "triage the open tickets";
    let (mut run, id) = TaskRun::start_as(
        &up,
        &alice,
        &entry,
        &[
            "--objective",
            objective,
            "--scope",
            "tickets:read,comment",
            "--scope",
            "mail",
            "--approve",
            "mail",
            "--on-behalf-of",
            "alice@example.org",
            "--ttl",
            "10m",
        ],
    );

    // A token in scope carries the task: id, objective hash, the scope of
    // its audience, on whose behalf, and `act` naming the agent.
    let token = run.call("tickets").unwrap();
    let c = claims(&token);
    assert_eq!(c["sub"], AGENT);
    assert_eq!(c["task"]["id"], id.as_str());
    assert_eq!(c["task"]["objective_sha256"], sha256_hex(objective));
    assert_eq!(c["task"]["scope"], serde_json::json!([{ "aud": "tickets", "actions": ["comment", "read"] }]));
    assert_eq!(c["task"]["on_behalf_of"], "alice@example.org");
    assert_eq!(c["act"]["sub"], AGENT);
    let v = validate(&up, &token, "tickets");
    assert!(v.status.success(), "{v:?}");

    // The X.509-SVID names the task in its subject; the URI SAN is the entry's.
    let pem = run.call("x509").unwrap();
    let (subject, serial) = pem_subject(&pem);
    assert!(subject.contains(&format!("OU=task:{id}")), "{subject}");

    // An audience waiting for approval is refused until a person approves.
    let pending = run.call("mail").unwrap_err();
    assert!(pending.contains("pending approval"), "{pending}");
    // Not by the identity that started the task, nor by another owner.
    let own = as_admin(&up, &alice, &["task", "approve", &id, "--scope", "mail"]);
    assert!(String::from_utf8_lossy(&own.stderr).contains("second person"), "{own:?}");
    up.ensure_owner("team-other");
    let stranger = new_admin(&up, "olivia", "owner:team-other");
    let theirs = as_admin(&up, &stranger, &["task", "approve", &id, "--scope", "mail"]);
    assert!(!theirs.status.success(), "another owner approved: {theirs:?}");
    let owner = new_admin(&up, "tess", "owner:team-test");
    let approved = as_admin(&up, &owner, &["task", "approve", &id, "--scope", "mail", "--json"]);
    assert!(approved.status.success(), "{approved:?}");
    let mail = run.call("mail").unwrap();
    assert_eq!(claims(&mail)["task"]["scope"][0]["aud"], "mail");

    // Outside the scope: refused and recorded as a breach of the task.
    let breach = run.call("payments").unwrap_err();
    assert!(breach.contains("scope breach"), "{breach}");
    assert_eq!(task(&up, &id)["task"]["breaches"], 1);
    assert_eq!(task(&up, &id)["task"]["state"], "active", "no --revoke-on-breach: the task goes on");
    let report = up.cli_json(&["report", "tasks"]);
    let f = report["findings"].as_array().unwrap().iter().find(|f| f["check"] == "task_scope_breach").unwrap();
    assert_eq!(f["asi"], "ASI02");

    // A new objective: everything the task holds is revoked within a second,
    // the approval is withdrawn, and what comes next is decided anew.
    let changed = Instant::now();
    let v = up.cli_json(&["task", "update", &id, "--objective", "close the duplicate tickets"]);
    // Its two JWT-SVIDs (the X.509-SVIDs ended with the processes that held them).
    assert_eq!(v["revoked"].as_array().unwrap().len(), 2, "{v}");
    let why = wait_for("ValidateJWTSVID to refuse the old token", 5, || {
        let out = validate(&up, &token, "tickets");
        (!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).into_owned())
    });
    eprintln!("objective change: old token refused after {:?}", changed.elapsed());
    assert!(why.contains("revoked"), "{why}");
    let fresh = run.call("tickets").unwrap();
    assert_eq!(claims(&fresh)["task"]["objective_sha256"], sha256_hex("close the duplicate tickets"));
    assert!(run.call("mail").unwrap_err().contains("pending approval"), "approval is per objective");
    let listed = up.cli_json(&["credential", "list", "--task", &id]);
    let jwts = listed["credentials"].as_array().unwrap().iter().filter(|c| c["kind"] == "jwt").count();
    assert_eq!(jwts, 3, "{listed}");
    assert!(crl_serials(&up).contains(&serial), "the X.509-SVID ended with its process: on the CRL");

    // The process exits: the task ends and everything it was issued is revoked.
    let log = run.finish();
    assert!(log.contains("ended"), "{log}");
    let shown = task(&up, &id);
    assert_eq!(shown["task"]["state"], "ended");
    assert!(shown["task"]["end_reason"].as_str().unwrap().contains("exited"), "{shown}");
    for c in shown["credentials"].as_array().unwrap() {
        assert!(!c["revoked_at"].is_null(), "{c}");
    }
    assert!(!validate(&up, &fresh, "tickets").status.success());
    let crl = crl_serials(&up);
    assert!(crl.contains(&serial), "the task's X.509 serial is on the CRL");

    // Every step is in the audit chain.
    let audit = String::from_utf8_lossy(&up.cli(&["audit", "export"]).stdout).into_owned();
    for action in ["task_start", "task_bind", "task_approve", "task_breach", "task_objective"] {
        assert!(audit.contains(&format!("\"{action}\"")), "{action} not recorded");
    }
    assert!(audit.lines().any(|l| l.contains("pending approval") && l.contains(&id)));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_breach_ends_a_strict_task_and_revoke_agent_entry_ends_every_task() {
    let up = Up::start();
    let entry = agent_entry(&up);
    let (mut run, id) =
        TaskRun::start(&up, &entry, &["--objective", "summarise", "--scope", "wiki", "--revoke-on-breach"]);
    let token = run.call("wiki").unwrap();
    assert!(run.call("hr-records").unwrap_err().contains("scope breach"));
    wait_for("the task to end", 5, || (task(&up, &id)["task"]["state"] == "ended").then_some(()));
    assert!(!validate(&up, &token, "wiki").status.success(), "its token is revoked");
    let after = run.call("wiki").unwrap_err();
    assert!(after.contains("no running task"), "{after}");
    drop(run);

    // Two tasks of one agent at once; one command ends both.
    let (mut one, first) = TaskRun::start(&up, &entry, &["--objective", "a", "--scope", "wiki"]);
    let (mut two, second) = TaskRun::start(&up, &entry, &["--objective", "b", "--scope", "wiki"]);
    let t1 = one.call("wiki").unwrap();
    let t2 = two.call("wiki").unwrap();
    assert_ne!(claims(&t1)["task"]["id"], claims(&t2)["task"]["id"], "each process gets its own task's token");
    let out = up.cli(&["revoke", "--agent-entry", &entry, "--reason", "incident 42"]);
    assert!(out.status.success(), "{out:?}");
    for (t, tok) in [(&first, &t1), (&second, &t2)] {
        assert_eq!(task(&up, t)["task"]["state"], "ended");
        assert_eq!(task(&up, t)["task"]["end_reason"], "incident 42");
        wait_for("the token refused", 5, || (!validate(&up, tok, "wiki").status.success()).then_some(()));
    }
    // The entry stays: a new task may start.
    let (mut three, _) = TaskRun::start(&up, &entry, &["--objective", "c", "--scope", "wiki"]);
    assert!(three.call("wiki").is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn task_start_binds_a_running_process_and_the_lifetime_ends_a_task() {
    let up = Up::start();
    let entry = agent_entry(&up);
    // A process started elsewhere, bound by PID; `--detach` returns at once.
    let mut sleeper = Command::new("sleep").arg("300").spawn().unwrap();
    let pid = sleeper.id().to_string();
    let v = start_detached(&up, &entry, &pid, &["--ttl", "2s"]);
    let id = v["id"].as_str().unwrap().to_owned();
    assert_eq!(v["state"], "active");
    assert_eq!(v["process"]["pid"].as_i64().unwrap().to_string(), pid);
    // Its owner leaves: the running task is a finding until someone takes it over.
    let out = up.cli(&["owner", "deactivate", "team-test"]);
    assert!(out.status.success(), "{out:?}");
    let report = up.cli_json(&["report", "tasks"]);
    let f = report["findings"].as_array().unwrap().iter().find(|f| f["check"] == "task_without_owner").unwrap();
    assert_eq!(
        (f["subject"].as_str(), f["asi"].as_str(), f["nhi"].as_str()),
        (Some(id.as_str()), Some("ASI03"), Some("NHI1"))
    );
    let shown = String::from_utf8_lossy(&up.cli(&["task", "show", &id]).stdout).into_owned();
    assert!(shown.contains(&format!("pid {pid}")) && shown.contains("Scope         : wiki"), "{shown}");
    // Its lifetime runs out: the sweep ends it.
    wait_for("the lifetime to end the task", 10, || {
        let t = task(&up, &id);
        (t["task"]["state"] == "ended").then_some(t)
    });
    assert_eq!(task(&up, &id)["task"]["end_reason"], "task lifetime ran out");
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let listed = up.cli_json(&["task", "list", "--all"]);
    assert!(listed["tasks"].as_array().unwrap().iter().any(|t| t["id"] == id.as_str()));
    assert!(up.cli_json(&["task", "list"])["tasks"].as_array().unwrap().is_empty(), "no running task left");
}

/// `POST /v1/token` with curl (form-encoded); returns (status, body).
fn exchange(up: &Up, subject: &str, actor: &str, audience: &str) -> (u16, Value) {
    const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
    let url = format!("{}/v1/token", up.env["HALLMARK_SERVER"]);
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-o", "-", "-w", "\n%{http_code}"]).arg(&url);
    for (k, v) in [
        ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
        ("subject_token", subject),
        ("subject_token_type", JWT),
        ("actor_token", actor),
        ("actor_token_type", JWT),
        ("audience", audience),
    ] {
        cmd.arg("--data-urlencode").arg(format!("{k}={v}"));
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.parse().unwrap(), serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tasks_agent_exchanges_tokens_only_for_its_scope_and_they_end_with_the_task() {
    const TOKEN_AUD: &str = "spiffe://example.org/hallmark/token";
    const USER: &str = "spiffe://example.org/user/alice";
    let up = Up::start();
    let entry = agent_entry(&up);
    up.create_entry(USER, &["--selector", &format!("unix:uid:{}", my_uid())]);
    let policy = up.dir.path().join("policy.cedar");
    std::fs::write(
        &policy,
        "@id(\"default-allow\") permit(principal, action, resource);\n\
         @id(\"agents-act\") permit(principal, action == Action::\"exchange_token\", resource);\n",
    )
    .unwrap();
    let set = up.cli(&["policy", "set", policy.to_str().unwrap()]);
    assert!(set.status.success(), "{set:?}");
    let (mut run, id) = TaskRun::start(
        &up,
        &entry,
        &["--objective", "act for alice", "--scope", TOKEN_AUD, "--scope", "tickets:read", "--on-behalf-of", USER],
    );
    // The task's JWT-SVID for the endpoint is the actor (its `act` names
    // itself: no earlier actor); a user's JWT-SVID is the subject.
    let actor = run.call(TOKEN_AUD).unwrap();
    assert_eq!(claims(&actor)["act"]["sub"], AGENT);
    let out = up.cli(&["api", "fetch-jwt", "--audience", TOKEN_AUD, "--spiffe-id", USER, "--json"]);
    assert!(out.status.success(), "{out:?}");
    let subject = serde_json::from_slice::<Value>(&out.stdout).unwrap()[0]["svid"].as_str().unwrap().to_owned();

    // In scope: the token speaks for the user, acted by the agent, and carries the task for its audience.
    let (status, body) = exchange(&up, &subject, &actor, "tickets");
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap();
    let c = claims(token);
    assert_eq!((c["sub"].as_str(), c["act"]["sub"].as_str()), (Some(USER), Some(AGENT)));
    assert!(c["act"]["act"].is_null(), "the task's own `act` is no earlier actor: {c}");
    assert_eq!(c["task"]["id"], id.as_str());
    assert_eq!(c["task"]["scope"], serde_json::json!([{ "aud": "tickets", "actions": ["read"] }]));
    // Outside the scope: refused as a breach of the task, as the Workload API would.
    let (status, body) = exchange(&up, &subject, &actor, "payments");
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_target")), "{body}");
    assert!(body["error_description"].as_str().unwrap().contains("scope breach"), "{body}");
    assert_eq!(task(&up, &id)["task"]["breaches"], 1);
    // An agent cannot delegate to itself.
    let (status, _) = exchange(&up, &actor, &actor, "tickets");
    assert_eq!(status, 400);

    // The task ends: the exchanged token is revoked with everything else.
    let jti = c["jti"].as_str().unwrap().to_owned();
    up.cli_json(&["task", "end", &id]);
    let shown = up.cli_json(&["credential", "show", &jti]);
    assert!(!shown["credential"]["revoked_at"].is_null(), "{shown}");
    let (status, body) = exchange(&up, &subject, &actor, "tickets");
    assert_eq!(status, 401, "a revoked actor token: {body}");
}

/// A process already running, which asked before any task held it, gets its
/// X.509-SVID within seconds of being bound (`task start --pid`), and again
/// when a new task takes it after the first ended: a task refusal is asked
/// again after 3 s, not the 30 s policy back-off. The process is a shell
/// that keeps a `hallmark api watch` running (one ends when its only SVID
/// is withdrawn); each watch asks before its task is bound.
#[tokio::test(flavor = "multi_thread")]
async fn a_running_process_bound_later_gets_its_x509_within_seconds() {
    use std::io::BufRead;
    let up = Up::start();
    let entry = agent_entry(&up);
    let mut shell = Command::new("/bin/sh")
        .args(["-c", "while :; do \"$0\" api watch --json; sleep 0.2; done", bin()])
        .envs(&up.env)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = shell.id().to_string();
    let mut lines = std::io::BufReader::new(shell.stdout.take().unwrap()).lines();
    for round in 0..2 {
        // The watch asks with no task (refused), then its shell is bound.
        std::thread::sleep(std::time::Duration::from_secs(2));
        let v = start_detached(&up, &entry, &pid, &[]);
        let id = v["id"].as_str().unwrap().to_owned();
        let bound = Instant::now();
        let line: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        let waited = bound.elapsed();
        assert!(line["svids"].as_array().is_some_and(|s| !s.is_empty()), "round {round}: {line}");
        assert!(waited < std::time::Duration::from_secs(15), "round {round}: waited {waited:?}");
        eprintln!("round {round}: X.509-SVID {waited:?} after the task was bound");
        up.cli_json(&["task", "end", &id]);
    }
    let _ = shell.kill();
    let _ = shell.wait();
}
