//! Crash consistency: `hallmark chaos` kills the server or the agent with
//! SIGKILL under issuance and registration load (and restarts PostgreSQL
//! abruptly), several times, and after every crash checks that the audit
//! chain verifies, every credential a client received is in the inventory,
//! every acknowledged entry is stored whole and in the change log, every
//! stored change (entries, owners, policy versions, exceptions, admin
//! identities) and denial has its audit record, and the agent and its
//! workload recover by themselves. A few cycles here; the
//! figures in the README come from longer runs of the same command.

use std::process::Command;

use serde_json::Value;

use crate::harness::{bin, postgres_db};

fn chaos(args: &[&str]) -> Value {
    let out =
        Command::new(bin()).arg("chaos").args(args).args(["--max-interval-ms", "1000", "--json"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "hallmark chaos {args:?} failed:\n{}\n{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["violations"], serde_json::json!([]), "{v}");
    assert!(v["credentials_checked"].as_u64().unwrap() > 0, "the load issued nothing: {v}\n{stderr}");
    assert!(v["entries_checked"].as_u64().unwrap() > 0, "the load registered nothing: {v}\n{stderr}");
    assert!(v["changes_checked"].as_u64().unwrap() > 0, "no change was checked for its record: {v}\n{stderr}");
    v
}

#[test]
fn server_killed_under_load_loses_nothing_on_sqlite() {
    let v = chaos(&["--kill", "server", "--cycles", "4"]);
    assert_eq!(v["cycles"], 4);
}

#[test]
fn agent_killed_under_load_recovers_by_itself() {
    let v = chaos(&["--kill", "agent", "--cycles", "3"]);
    assert_eq!(v["cycles"], 3);
}

#[test]
fn server_killed_under_load_loses_nothing_on_postgres() {
    let Some(url) = postgres_db("chaos") else { return };
    let v = chaos(&["--kill", "server", "--cycles", "3", "--datastore", &url]);
    assert_eq!(v["cycles"], 3);
}

/// PostgreSQL itself crashes (immediate-mode restart) under load: a cluster
/// of its own, so the other tests' database stays up.
#[test]
fn postgres_restarted_under_load_loses_nothing() {
    // A cluster of its own, but only where the tests have PostgreSQL at all.
    if hallmark_testkit::postgres_server().is_none() {
        return;
    }
    let pg = OwnCluster::start();
    let restart = format!("{} -D {} -m immediate -w restart >/dev/null", pg.as_pg("pg_ctl"), pg.data);
    let v = chaos(&["--kill", "postgres", "--cycles", "3", "--datastore", &pg.url, "--postgres-restart", &restart]);
    assert_eq!(v["cycles"], 3);
}

/// A throwaway PostgreSQL cluster on a free port, run as the postgres user
/// when this test runs as root (PostgreSQL refuses root).
struct OwnCluster {
    bin: String,
    dir: String,
    data: String,
    url: String,
}

impl OwnCluster {
    fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .unwrap()
            .map(|e| e.unwrap().path().join("bin"))
            .filter(|p| p.join("initdb").exists())
            .max()
            .expect("PostgreSQL binaries under /usr/lib/postgresql");
        let dir = format!("/tmp/hallmark-chaos-pg-{}", crate::harness::rand_tag());
        std::fs::create_dir_all(&dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let c = OwnCluster {
            bin: bin.display().to_string(),
            data: format!("{dir}/data"),
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            dir,
        };
        if is_root() {
            assert!(Command::new("chown").args(["postgres:postgres", &c.dir]).status().unwrap().success());
        }
        let sh = |cmd: String| {
            let out = Command::new("sh").args(["-c", &cmd]).output().unwrap();
            assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
        };
        sh(format!("{} -D {} -U postgres --auth=trust -E UTF8 >/dev/null", c.as_pg("initdb"), c.data));
        sh(format!(
            "{} -D {} -l {}/log -w -o '-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off' start >/dev/null",
            c.as_pg("pg_ctl"),
            c.data,
            c.dir,
            c.dir
        ));
        c
    }

    /// A PostgreSQL program, run as the postgres user if this is root.
    fn as_pg(&self, program: &str) -> String {
        let path = format!("{}/{program}", self.bin);
        if is_root() { format!("runuser -u postgres -- {path}") } else { path }
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = Command::new("sh")
            .args(["-c", &format!("{} -D {} -m immediate stop", self.as_pg("pg_ctl"), self.data)])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    crate::harness::my_uid() == "0"
}
