//! Container evidence with real containers: podman on runc, images made
//! offline with `podman import`, the container runtime asked over podman's
//! Docker Engine API socket (`podman system service`), the Workload API
//! socket's directory bind-mounted into each container.
//!
//! Two images with different digests run the same client binary (the one
//! under test, bind-mounted with the host's /usr): each container gets only
//! its own entry's SVID, and a container whose image matches no entry gets
//! PermissionDenied. Two forgeries get nothing: a host process that moved
//! itself into a cgroup named after a running container, and a process
//! whose mount table (mountinfo) names a container.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::harness::*;

fn podman(args: &[&str]) -> Output {
    Command::new("podman").arg("--runtime").arg("runc").args(args).output().unwrap()
}

/// Containers, images and cgroups made by the test, removed even when it fails.
#[derive(Default)]
struct Cleanup {
    containers: Vec<String>,
    images: Vec<String>,
    cgroups: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = podman(&["rm", "-f", "-t", "0", c]);
        }
        for i in &self.images {
            let _ = podman(&["rmi", "-f", i]);
        }
        for dir in self.cgroups.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// An image whose root file system holds only `marker` (and the mount
/// points the containers use): made with `podman import`. Returns its digest.
fn import_image(work: &Path, tag: &str, marker: &str) -> String {
    let root = work.join(format!("rootfs-{marker}"));
    for d in ["usr", "etc", "tmp", "proc", "sys", "dev", "hallmark", "bin-under-test"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
    std::os::unix::fs::symlink("usr/lib64", root.join("lib64")).unwrap();
    std::fs::write(root.join("etc/image-marker"), marker).unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/nonexistent\n").unwrap();
    let tar = work.join(format!("{marker}.tar"));
    let out = Command::new("tar").arg("-C").arg(&root).arg("-cf").arg(&tar).arg(".").output().unwrap();
    assert!(out.status.success(), "tar: {}", String::from_utf8_lossy(&out.stderr));
    let out = podman(&["import", "-q", &tar.display().to_string(), tag]);
    assert!(out.status.success(), "podman import: {}", String::from_utf8_lossy(&out.stderr));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let id = if id.starts_with("sha256:") { id } else { format!("sha256:{id}") };
    assert!(hallmark_core::is_image_digest(&id), "{id}");
    id
}

/// `podman run` arguments that give a container the client under test and
/// the Workload API socket's directory.
fn run_args(name: &str, socket_dir: &Path) -> Vec<String> {
    let bin_dir = Path::new(bin()).parent().unwrap().display().to_string();
    [
        "run",
        "--name",
        name,
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        "--network",
        "none",
        "-v",
        "/usr:/usr:ro",
        "-v",
        &format!("{bin_dir}:/bin-under-test:ro"),
        "-v",
        &format!("{}:/hallmark", socket_dir.display()),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Runs `hallmark api fetch-x509` in a new container of `image`.
fn fetch_in_container(cleanup: &mut Cleanup, image: &str, socket_dir: &Path, socket_file: &str) -> Output {
    let name = format!("hallmark-wl-{}", rand_tag());
    cleanup.containers.push(name.clone());
    let exe = format!("/bin-under-test/{}", Path::new(bin()).file_name().unwrap().to_string_lossy());
    let socket = format!("unix:///hallmark/{socket_file}");
    let mut args = run_args(&name, socket_dir);
    args.extend([image, &exe, "api", "fetch-x509", "--socket", &socket, "--json"].map(String::from));
    podman(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn spiffe_ids(out: &Output) -> Vec<String> {
    assert!(out.status.success(), "fetch failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array().unwrap().iter().map(|s| s["spiffe_id"].as_str().unwrap().to_owned()).collect()
}

fn refused(out: &Output) -> bool {
    !out.status.success() && denied(&String::from_utf8_lossy(&out.stderr))
}

#[test]
fn containers_are_told_apart_by_image_digest_and_forgeries_get_nothing() {
    if Command::new("podman").arg("--version").output().is_err() {
        assert!(std::env::var("CI").is_err(), "CI installs podman and runc (scripts/test.sh)");
        eprintln!("podman not installed: container evidence test skipped (scripts/test.sh installs it)");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let mut cleanup = Cleanup::default();
    let tag = rand_tag();
    let images: Vec<(String, String)> = ["a", "b", "c"]
        .iter()
        .map(|m| {
            let name = format!("localhost/hallmark-wl-{m}:{tag}");
            cleanup.images.push(name.clone());
            let digest = import_image(work.path(), &name, m);
            (name, digest)
        })
        .collect();
    assert!(images[0].1 != images[1].1 && images[1].1 != images[2].1, "three different digests");

    // podman's Docker Engine API, as the agent asks it.
    let api_socket = work.path().join("podman.sock");
    let mut service = Command::new("podman");
    service
        .args(["--runtime", "runc", "system", "service", "--time=0"])
        .arg(format!("unix://{}", api_socket.display()));
    let _service = Proc::spawn(service, &work.path().join("podman-service.log"));
    wait_for("podman's API socket", 30, || api_socket.exists().then_some(()));

    let up = Up::start_with(
        tempfile::tempdir().unwrap(),
        &["--container-runtime-socket", &api_socket.display().to_string()],
    );
    let socket_path = PathBuf::from(up.socket().trim_start_matches("unix://"));
    let socket_dir = socket_path.parent().unwrap().to_path_buf();
    let socket_file = socket_path.file_name().unwrap().to_string_lossy().into_owned();

    // A tag alone is refused: tags move, digests do not.
    up.ensure_owner("team-test");
    let out = up.cli(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/tag-only",
        "--owner",
        "team-test",
        "--selector",
        &format!("container:image:{}", images[0].0),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pin the digest"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    up.create_entry("spiffe://example.org/app-a", &["--selector", &format!("container:image_digest:{}", images[0].1)]);
    up.create_entry(
        "spiffe://example.org/app-b",
        &[
            "--selector",
            &format!("container:image_digest:{}", images[1].1),
            "--selector",
            &format!("container:image:{}", images[1].0),
            "--selector",
            "container:runtime:podman",
        ],
    );

    let a = fetch_in_container(&mut cleanup, &images[0].0, &socket_dir, &socket_file);
    assert_eq!(spiffe_ids(&a), vec!["spiffe://example.org/app-a"]);
    let b = fetch_in_container(&mut cleanup, &images[1].0, &socket_dir, &socket_file);
    assert_eq!(spiffe_ids(&b), vec!["spiffe://example.org/app-b"]);
    let c = fetch_in_container(&mut cleanup, &images[2].0, &socket_dir, &socket_file);
    assert!(refused(&c), "image c matches no entry: {}", String::from_utf8_lossy(&c.stderr));

    // The evidence the server saw names the container.
    let creds = up.cli_json(&["credential", "list"]);
    assert!(creds.to_string().contains("app-a"), "{creds}");

    // A long-running container of image a, whose id the forgeries claim.
    let name = format!("hallmark-wl-{}", rand_tag());
    cleanup.containers.push(name.clone());
    let mut args = run_args(&name, &socket_dir);
    args.insert(1, "-d".into());
    args.extend([images[0].0.as_str(), "/usr/bin/sleep", "300"].map(String::from));
    let out = podman(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "podman run -d: {}", String::from_utf8_lossy(&out.stderr));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(id.len(), 64, "{id}");
    let host_socket = up.socket();

    // Forgery 1: a host process (root here) that moves itself into a
    // cgroup named after that container. Its cgroup file names the
    // container; its mount namespace is the host's, not the container's.
    let forged = Path::new("/sys/fs/cgroup/pids").join(format!("hallmark-forged-{}", rand_tag()));
    let leaf = forged.join(format!("libpod-{id}"));
    if std::fs::create_dir_all(&leaf).is_ok() {
        cleanup.cgroups.push(forged.clone());
        cleanup.cgroups.push(leaf.clone());
        let script = format!(
            "echo $$ > {}/cgroup.procs && exec {} api fetch-x509 --socket {host_socket} --json",
            leaf.display(),
            bin()
        );
        let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
        assert!(refused(&out), "forged cgroup: {}", String::from_utf8_lossy(&out.stderr));
        let log = up.proc.log();
        assert!(log.contains("not in that container's mount namespace"), "the agent says why:\n{log}");
    } else {
        assert!(std::env::var("CI").is_err(), "CI runs as root with cgroup v1 pids hierarchy writable");
        eprintln!("cannot create a cgroup here: the forged-cgroup case is skipped");
    }

    // Forgery 2: a process in a mount namespace of its own whose mount table
    // names the container (a bind mount from a path with its id). Hallmark
    // never reads mountinfo: nothing.
    let fake = work.path().join(format!("overlay-containers/{id}/userdata"));
    std::fs::create_dir_all(&fake).unwrap();
    std::fs::write(fake.join("hostname"), "forged\n").unwrap();
    let script = format!(
        "mount --bind {}/hostname /etc/hostname && grep -q {id} /proc/self/mountinfo && exec {} api fetch-x509 --socket {host_socket} --json",
        fake.display(),
        bin()
    );
    let out = Command::new("unshare").args(["-m", "sh", "-c", &script]).output().unwrap();
    assert!(refused(&out), "forged mountinfo: {}", String::from_utf8_lossy(&out.stderr));
}
