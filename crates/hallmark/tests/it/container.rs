//! The container image (packaging/container): built from the binary under
//! test with podman (FROM scratch, offline), run with runc, and used: the
//! admin API from the host, a workload inside the container, the health probe.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::harness::*;

fn podman(args: &[&str]) -> std::process::Output {
    Command::new("podman").arg("--runtime").arg("runc").args(args).output().unwrap()
}

/// Removes the container and image even when the test fails.
struct Cleanup(String, String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = podman(&["rm", "-f", &self.0]);
        let _ = podman(&["rmi", "-f", &self.1]);
    }
}

#[test]
fn the_container_image_runs_hallmark_up() {
    if Command::new("podman").arg("--version").output().is_err() {
        assert!(std::env::var("CI").is_err(), "CI installs podman and runc (scripts/test.sh)");
        eprintln!("podman not installed: container test skipped (scripts/test.sh installs it)");
        return;
    }
    let tag = format!("localhost/hallmark-test:{}", rand_tag());
    let name = format!("hallmark-test-{}", rand_tag());
    let _cleanup = Cleanup(name.clone(), tag.clone());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/container/build.sh");
    let out = Command::new(&script).arg(bin()).arg(&tag).output().unwrap();
    assert!(out.status.success(), "build.sh: {}", String::from_utf8_lossy(&out.stderr));

    let data = tempfile::tempdir().unwrap();
    // The image's user (uid 65532) owns its data directory, and no one else
    // may write it: the server refuses a data directory that another user
    // owns or that group or others can write.
    std::os::unix::fs::chown(data.path(), Some(65532), Some(65532)).unwrap();
    std::fs::set_permissions(data.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let health = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let volume = format!("{}:/var/lib/hallmark", data.path().display());
    let (admin_listen, health_listen) = (format!("127.0.0.1:{admin}"), format!("127.0.0.1:{health}"));
    let out = podman(&[
        "run",
        "-d",
        "--name",
        &name,
        "--no-healthcheck",
        "--network",
        "host",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        "-v",
        &volume,
        &tag,
        "up",
        "--data-dir",
        "/var/lib/hallmark/d",
        "--admin-listen",
        &admin_listen,
        "--listen",
        "127.0.0.1:0",
        "--agent-health-listen",
        &health_listen,
    ]);
    assert!(out.status.success(), "podman run: {}", String::from_utf8_lossy(&out.stderr));
    let env_file = data.path().join("d/env");
    let env = wait_for("the container's env file", 60, || {
        std::fs::read_to_string(&env_file).ok().filter(|t| t.contains("HALLMARK_DATA_DIR")).map(|t| parse_env(&t))
    });
    // The env file reads the token from its path inside the container; the
    // host finds it under the volume.
    let mut env = env;
    let token = std::fs::read_to_string(data.path().join("d/admin-token")).unwrap();
    env.insert("HALLMARK_TOKEN".into(), token.trim().to_owned());
    let cli = |args: &[&str]| Command::new(bin()).args(args).envs(&env).output().unwrap();
    let ready = cli(&["healthcheck", "--server", &env["HALLMARK_SERVER"]]);
    assert!(ready.status.success(), "{}", String::from_utf8_lossy(&ready.stderr));

    // A workload inside the container (the image's user, uid 65532) gets an identity registered from the host.
    for args in [
        vec!["owner", "create", "ops", "--contact", "ops@example.org"],
        vec![
            "entry",
            "create",
            "--spiffe-id",
            "spiffe://example.org/in-container",
            "--selector",
            "unix:uid:65532",
            "--owner",
            "ops",
        ],
    ] {
        let out = cli(&args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let socket = "unix:///var/lib/hallmark/d/agent/public/api.sock";
    let svids: Value = wait_for("an SVID inside the container", 30, || {
        let out =
            podman(&["exec", &name, "/usr/local/bin/hallmark", "api", "fetch-x509", "--socket", socket, "--json"]);
        out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap())
    });
    assert_eq!(svids[0]["spiffe_id"], "spiffe://example.org/in-container", "{svids}");
    // The binary is the image's health probe.
    let probe = podman(&[
        "exec",
        &name,
        "/usr/local/bin/hallmark",
        "healthcheck",
        "--agent",
        &format!("http://{health_listen}"),
    ]);
    assert!(probe.status.success(), "{}", String::from_utf8_lossy(&probe.stderr));
    // Runs unprivileged: every file it wrote belongs to the image's user.
    let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(data.path().join("d/admin-token")).unwrap());
    assert_eq!(uid, 65532);
    let logs = podman(&["logs", &name]);
    assert!(!String::from_utf8_lossy(&logs.stderr).contains('\u{1b}'), "no colour codes in container logs");
}
