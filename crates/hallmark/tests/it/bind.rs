//! Issue 16: credentials that end with their process (`entry create --bind
//! process`), through real processes. A workload process (`hallmark api`,
//! a real Workload API client) gets an X.509-SVID or a JWT-SVID of a bound
//! entry; when it exits, the agent withdraws it and the server revokes it:
//! the serial goes on the CRL, ValidateJWTSVID refuses the jti, and the
//! inventory says "ended with its process". A restarted process, and a
//! second process at once, get their own; an unbound entry is untouched.
//! The timings printed are for reading, not asserted beyond a generous
//! bound (BENCHMARKS.md has the measured figures).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

/// A workload process following its X.509-SVIDs (`hallmark api watch`).
struct Workload {
    child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Workload {
    fn start(up: &Up) -> Workload {
        let mut child = Command::new(bin())
            .args(["api", "watch", "--json"])
            .envs(&up.env)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Workload { child, lines }
    }

    /// The serial of each SPIFFE ID in `want`, from the first update that has them all.
    fn serials(&mut self, want: &[&str]) -> Vec<String> {
        for line in self.lines.by_ref() {
            let v: Value = serde_json::from_str(&line.unwrap()).unwrap();
            let of = |id: &str| {
                v["svids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|s| s["spiffe_id"] == id)
                    .map(|s| s["serial"].as_str().unwrap().to_owned())
            };
            if let Some(all) = want.iter().map(|id| of(id)).collect::<Option<Vec<_>>>() {
                return all;
            }
        }
        panic!("the workload's stream ended before it held {want:?}");
    }

    /// Kills the process and reaps it: the moment it is gone.
    fn end(mut self) -> Instant {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        Instant::now()
    }
}

/// The inventory row of credential `id`.
fn credential(up: &Up, id: &str) -> Value {
    up.cli_json(&["credential", "show", id])["credential"].clone()
}

fn ended_with_its_process(up: &Up, id: &str) -> bool {
    let c = credential(up, id);
    !c["revoked_at"].is_null() && c["revoke_reason"] == "ended with its process"
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bound_credential_ends_with_its_process() {
    let up = Up::start();
    let me = format!("unix:uid:{}", my_uid());
    let job = up.create_entry("spiffe://example.org/job", &["--selector", &me, "--bind", "process"]);
    assert_eq!(job["bind"], "process");
    let shown = String::from_utf8_lossy(&up.cli(&["entry", "show", job["id"].as_str().unwrap()]).stdout).to_string();
    assert!(shown.contains("Bind         : process"), "{shown}");
    let web = up.create_entry("spiffe://example.org/web", &["--selector", &me]);
    assert_eq!(web["bind"], "none");
    let both = ["spiffe://example.org/job", "spiffe://example.org/web"];

    // Two processes at once: each its own bound SVID; the unbound one is shared.
    let mut first = Workload::start(&up);
    let mut second = Workload::start(&up);
    let [job1, web1] = <[String; 2]>::try_from(first.serials(&both)).unwrap();
    let [job2, web2] = <[String; 2]>::try_from(second.serials(&both)).unwrap();
    assert_ne!(job1, job2, "two processes under one bound entry never share a credential");
    assert_eq!(web1, web2, "the unbound entry is held per evidence, as before");

    // The first exits: its bound SVID is revoked, nothing else.
    let exited = first.end();
    wait_for("the bound serial revoked", 10, || ended_with_its_process(&up, &job1).then_some(()));
    eprintln!("X.509: revoked {:?} after its process exited", exited.elapsed());
    assert!(exited.elapsed() < Duration::from_secs(10));
    wait_for("the CRL to list the serial", 10, || crl_serials(&up).contains(&job1).then_some(()));
    assert!(credential(&up, &web1)["revoked_at"].is_null(), "the unbound credential is unaffected");
    assert!(credential(&up, &job2)["revoked_at"].is_null(), "the other process keeps its own");
    let listed = String::from_utf8_lossy(&up.cli(&["credential", "list"]).stdout).to_string();
    assert!(listed.lines().any(|l| l.contains(&job1) && l.contains("revoked: ended with its process")), "{listed}");

    // A restarted process is a new instance: a new credential.
    let mut again = Workload::start(&up);
    let [job3, web3] = <[String; 2]>::try_from(again.serials(&both)).unwrap();
    assert!(job3 != job1 && job3 != job2, "a new instance gets a new credential");
    assert_eq!(web3, web1);
    second.end();
    again.end();
    wait_for("both revoked", 10, || {
        (ended_with_its_process(&up, &job2) && ended_with_its_process(&up, &job3)).then_some(())
    });
    assert!(credential(&up, &web1)["revoked_at"].is_null());

    // A JWT-SVID: the process that fetched it exits, its jti is refused.
    let out = Command::new(bin())
        .args(["api", "fetch-jwt", "--audience", "db", "--spiffe-id", "spiffe://example.org/job", "--json"])
        .envs(&up.env)
        .output()
        .unwrap();
    let exited = Instant::now();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = serde_json::from_slice::<Value>(&out.stdout).unwrap()[0]["svid"].as_str().unwrap().to_owned();
    let refused = wait_for("ValidateJWTSVID to refuse the jti", 10, || {
        let v = up.cli(&["api", "validate-jwt", "--audience", "db", "--svid", &token]);
        (!v.status.success()).then(|| String::from_utf8_lossy(&v.stderr).to_string())
    });
    eprintln!("JWT: refused {:?} after its process exited", exited.elapsed());
    assert!(refused.contains("revoked"), "{refused}");
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    let jti = claims["jti"].as_str().unwrap();
    assert!(ended_with_its_process(&up, jti));

    // Recorded like every revocation, by the agent that saw the process end.
    let audit = String::from_utf8_lossy(&up.cli(&["audit", "export"]).stdout).to_string();
    for id in [job1.as_str(), jti] {
        assert!(
            audit.lines().any(|l| l.contains("\"revoke\"") && l.contains(id) && l.contains("ended with its process")),
            "{id} not in the audit export"
        );
    }
}
