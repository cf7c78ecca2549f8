//! `hallmark helper` with real nginx (Debian's package, installed by
//! scripts/test.sh): nginx serves mutual TLS on the files the helper writes
//! and is reloaded by the helper's SIGHUP at every rotation while curl keeps
//! connecting with another SVID; then the agent goes away and the helper
//! fails closed. Also: delivery reports reach the inventory only for
//! credentials the reporting process holds.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

/// The nginx `server` block from the README's helper section: the test runs
/// exactly what the README shows, with the directory and port replaced.
fn readme_server_block() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let start = readme.find("```nginx\n").expect("README has an nginx example") + "```nginx\n".len();
    let len = readme[start..].find("```").unwrap();
    readme[start..start + len].to_owned()
}

fn nginx_config(dir: &Path, svid_dir: &Path, port: u16) -> String {
    let server = readme_server_block()
        .replace("/etc/hallmark/svid", &svid_dir.display().to_string())
        .replace("listen 8443 ssl", &format!("listen 127.0.0.1:{port} ssl"));
    assert!(server.contains(&format!("127.0.0.1:{port}")), "the README block listens on 8443");
    let d = dir.display();
    // A private nginx: its own prefix, PID file, logs and temporary paths.
    format!(
        "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log notice;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n access_log {d}/access.log;\n client_body_temp_path {d}/tmp/body;\n proxy_temp_path {d}/tmp/proxy;\n\
         fastcgi_temp_path {d}/tmp/fastcgi;\n uwsgi_temp_path {d}/tmp/uwsgi;\n scgi_temp_path {d}/tmp/scgi;\n\
         {server}}}\n"
    )
}

/// One HTTPS request with curl over mutual TLS; returns (success, body, the
/// server certificate's expiry as curl printed it).
fn curl(port: u16, bundle: &Path, client: &Path) -> (bool, String, Option<String>) {
    // curl opens a combined file twice, for the certificate and then for the
    // key: a rotation between the two gives it one SVID's certificate and the
    // next one's key ("unable to set private key file"). The helper replaces
    // the file whole, so one read of it is one SVID: curl gets that copy.
    let snapshot = client.with_extension("snapshot.pem");
    std::fs::write(&snapshot, std::fs::read(client).unwrap_or_default()).unwrap();
    let out = Command::new("curl")
        .args(["-sS", "-v", "--fail", "--max-time", "10", "--cacert"])
        .arg(bundle)
        .arg("--cert")
        .arg(&snapshot)
        .arg(format!("https://localhost:{port}/"))
        .output()
        .expect("curl is installed by the test script");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let expiry =
        stderr.lines().find_map(|l| l.trim_start_matches(['*', ' ']).strip_prefix("expire date: ")).map(String::from);
    let body = String::from_utf8_lossy(&out.stdout).to_string();
    (out.status.success(), if out.status.success() { body } else { stderr }, expiry)
}

fn nginx_bin() -> Option<PathBuf> {
    let found = ["/usr/sbin/nginx", "/usr/bin/nginx"].into_iter().map(PathBuf::from).find(|p| p.exists());
    if found.is_none() {
        assert!(std::env::var("CI").is_err(), "CI must have nginx (scripts/test.sh installs it)");
        eprintln!("nginx not installed: test skipped (scripts/test.sh installs it)");
    }
    found
}

/// nginx's master process, stopped with SIGTERM when dropped (even when the
/// test fails): the master then stops its workers. SIGKILL would leave the
/// workers running, still holding the port.
struct Nginx(Proc);

impl Drop for Nginx {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.0.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("nginx did not stop on SIGTERM; killing it:\n{}", self.0.log());
    }
}

fn helper(up: &Up, dir: &Path, name: &str, args: &[&str]) -> Proc {
    let mut cmd = Command::new(bin());
    cmd.arg("helper").arg("--dir").arg(dir.join(name)).args(args).envs(&up.env);
    Proc::spawn(cmd, &dir.join(format!("helper-{name}.log")))
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_serves_mutual_tls_across_rotations_then_the_helper_fails_closed() {
    let Some(nginx) = nginx_bin() else { return };
    let mut up = Up::start();
    let uid = format!("unix:uid:{}", my_uid());
    // Both helpers run as this uid: each picks its own identity with --spiffe-id.
    up.create_entry(
        "spiffe://example.org/nginx",
        &["--selector", &uid, "--x509-ttl", "24s", "--dns-name", "localhost"],
    );
    up.create_entry("spiffe://example.org/client", &["--selector", &uid, "--x509-ttl", "30s"]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("tmp")).unwrap();
    let health = free_local_port();
    let mut server_helper = helper(
        &up,
        d,
        "nginx",
        &[
            "--spiffe-id",
            "spiffe://example.org/nginx",
            "--reload-signal",
            "HUP",
            "--pid-file",
            &d.join("nginx.pid").display().to_string(),
            "--health-listen",
            &format!("127.0.0.1:{health}"),
        ],
    );
    let mut client_helper =
        helper(&up, d, "client", &["--spiffe-id", "spiffe://example.org/client", "--combined-file", "client.pem"]);
    let (svid_dir, client_pem) = (d.join("nginx"), d.join("client/client.pem"));
    let ready = format!("http://127.0.0.1:{health}/ready");
    wait_for("the helpers' first files", 60, || {
        (svid_dir.join("svid.key").exists() && client_pem.exists() && http_get(&ready).0 == 200).then_some(())
    });
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode(svid_dir.join("svid.key")), mode(client_pem.clone())), (0o600, 0o600), "keys are 0600");
    assert_eq!(mode(svid_dir.join("svid.pem")), 0o644);
    openssl_verify(&svid_dir.join("bundle.pem"), &svid_dir.join("svid.pem"));

    let port = free_local_port();
    std::fs::write(d.join("nginx.conf"), nginx_config(d, &svid_dir, port)).unwrap();
    let mut cmd = Command::new(&nginx);
    cmd.arg("-p").arg(d).arg("-e").arg(d.join("error.log")).arg("-c").arg(d.join("nginx.conf"));
    let _nginx = Nginx(Proc::spawn(cmd, &d.join("nginx.out")));
    let bundle = svid_dir.join("bundle.pem");
    wait_for("nginx to serve mutual TLS", 30, || curl(port, &bundle, &client_pem).0.then_some(()));

    // Rotations while a client keeps connecting: every handshake must succeed.
    let started = Instant::now();
    let (mut ok, mut failures, mut server_certs) = (0, Vec::new(), BTreeSet::new());
    while server_certs.len() < 4 {
        assert!(started.elapsed() < Duration::from_secs(150), "too few rotations seen: {server_certs:?}");
        let (success, body, expiry) = curl(port, &bundle, &client_pem);
        if success && body.contains("client SUCCESS") {
            ok += 1;
        } else {
            failures.push(body);
        }
        server_certs.extend(expiry);
        std::thread::sleep(Duration::from_millis(50));
    }
    let reloads = std::fs::read_to_string(d.join("error.log")).unwrap().matches("(SIGHUP) received").count();
    eprintln!(
        "{ok} mutual-TLS requests over {:?}, {} server certificates seen, {reloads} nginx reloads, {} failed",
        started.elapsed(),
        server_certs.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "handshakes failed across rotations: {failures:#?}\nhelper log:\n{}\nnginx log:\n{}\nwarnings of `up`:\n{}",
        server_helper.log(),
        std::fs::read_to_string(d.join("error.log")).unwrap_or_default(),
        up.proc.log().lines().filter(|l| l.contains("WARN") || l.contains("ERROR")).collect::<Vec<_>>().join("\n")
    );
    assert!(reloads >= 3, "the helper reloaded nginx at each rotation ({reloads} reloads)");

    // The inventory shows where each helper delivered its SVIDs.
    let creds = up.cli_json(&["credential", "list"]);
    let delivered = |id: &str, dir: &Path| {
        creds["credentials"].as_array().unwrap().iter().any(|c| {
            c["spiffe_id"] == id && c["kind"] == "x509" && c["delivered_to"] == format!("files:{}", dir.display())
        })
    };
    assert!(delivered("spiffe://example.org/nginx", &svid_dir), "{creds:#}");
    assert!(delivered("spiffe://example.org/client", &d.join("client")), "{creds:#}");
    let table = String::from_utf8(up.cli(&["credential", "list"]).stdout).unwrap();
    assert!(table.contains("DELIVERED TO") && table.contains(&format!("files:{}", svid_dir.display())), "{table}");

    // Fail closed: the agent goes away. Files stay while valid, then go, and
    // the helper says so: /ready fails (with --health-listen), or it exits
    // non-zero (without).
    let stopped = Instant::now();
    up.proc.kill();
    wait_for("the nginx SVID files to be removed at expiry", 40, || {
        (!svid_dir.join("svid.pem").exists() && !svid_dir.join("svid.key").exists() && !bundle.exists()).then_some(())
    });
    let removed_after = stopped.elapsed();
    let (status, body) = http_get(&ready);
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("no valid SVID files"));
    assert!(server_helper.child.try_wait().unwrap().is_none(), "with --health-listen the helper stays up");
    let exit = wait_for("the client helper to exit", 45, || client_helper.child.try_wait().unwrap());
    assert!(!exit.success(), "the helper without a health endpoint exits non-zero");
    assert!(!client_pem.exists());
    let log = server_helper.log();
    assert!(log.contains("removing its files (fail closed)"), "{log}");
    assert!(client_helper.log().contains("expired before the agent sent a replacement"));
    eprintln!("files removed {removed_after:?} after the agent stopped (SVID lifetime 24 s)");

    // The agent comes back (same data directory, same socket): the helper
    // writes new files, is ready again, and nginx serves them after its signal.
    let up = Up::start_in(up.dir);
    wait_for("the helper to write files again", 60, || {
        (svid_dir.join("svid.key").exists() && http_get(&ready).0 == 200).then_some(())
    });
    let out = Command::new(bin())
        .args(["helper", "--once", "--spiffe-id", "spiffe://example.org/client", "--combined-file", "client.pem"])
        .arg("--dir")
        .arg(d.join("client2"))
        .envs(&up.env)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for("nginx to serve the new certificate", 30, || {
        curl(port, &bundle, &d.join("client2/client.pem")).0.then_some(())
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn delivery_reports_reach_the_inventory_only_from_the_holder() {
    use hallmark_proto::agent::ReportDeliveryRequest;
    use hallmark_proto::agent::delivery_client::DeliveryClient;
    use hallmark_proto::workload::X509svidRequest;

    let up = Up::start();
    let mut workload = raw_client(&up.socket()).await;
    let mut delivery = DeliveryClient::new(raw_channel(&up.socket()).await);
    let with_header = with_security_header::<ReportDeliveryRequest>;
    let report = |ids: &[&str]| ReportDeliveryRequest {
        credential_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
        target: "files:/srv/app/svid".into(),
    };

    // No entry matches this process yet: no identity, nothing to report.
    let e = delivery.report_delivery(with_header(report(&["00ff"]))).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");

    up.create_entry("spiffe://example.org/app", &["--selector", &format!("unix:uid:{}", my_uid())]);
    let mut stream = workload.fetch_x509svid(with_security_header(X509svidRequest {})).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    let serial = serial_of(&first.svids[0].x509_svid);

    // Without the security header: InvalidArgument, as on the Workload API.
    let e = delivery.report_delivery(tonic::Request::new(report(&[&serial]))).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    // A serial this process does not hold, or a bad target: refused, nothing recorded.
    let e = delivery.report_delivery(with_header(report(&[&serial, "0123abcd"]))).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("0123abcd"));
    let mut bad = report(&[&serial]);
    bad.target = "no colon".into();
    let e = delivery.report_delivery(with_header(bad)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    let shown = |up: &Up| -> Value {
        let v = up.cli_json(&["credential", "list"]);
        v["credentials"].as_array().unwrap().iter().find(|c| c["id"] == serial.as_str()).unwrap().clone()
    };
    assert!(shown(&up)["delivered_to"].is_null());

    // Its own serial: recorded, listed and audited.
    let r = delivery.report_delivery(with_header(report(&[&serial]))).await.unwrap().into_inner();
    assert_eq!(r.recorded, 1);
    assert_eq!(shown(&up)["delivered_to"], "files:/srv/app/svid");
    let audit = up.cli(&["audit", "export"]);
    let audit = String::from_utf8_lossy(&audit.stdout);
    assert!(audit.lines().any(|l| l.contains("\"deliver\"") && l.contains(&serial)), "{audit}");
    drop(stream);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_helper_keeps_jwt_svids_and_a_combined_file_and_once_mode_exits() {
    let up = Up::start();
    let entry = up.create_entry(
        "spiffe://example.org/db-client",
        &["--selector", &format!("unix:uid:{}", my_uid()), "--jwt-ttl", "8s"],
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = |args: &[&str]| Command::new(bin()).arg("helper").args(args).envs(&up.env).output().unwrap();

    // --once: every file, the reload command, then exit 0.
    let once = d.join("once");
    let marker = d.join("reloaded");
    let out = run(&[
        "--once",
        "--dir",
        &once.display().to_string(),
        "--combined-file",
        "all.pem",
        "--jwt-audience",
        "db",
        "--reload-cmd",
        &format!("touch {}", marker.display()),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(marker.exists(), "the reload command ran");
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    for (name, want) in
        [("svid.pem", 0o644), ("svid.key", 0o600), ("bundle.pem", 0o644), ("all.pem", 0o600), ("db.jwt", 0o600)]
    {
        assert_eq!(mode(once.join(name)), want, "{name}");
    }
    let combined = std::fs::read_to_string(once.join("all.pem")).unwrap();
    assert!(combined.starts_with("-----BEGIN PRIVATE KEY-----") && combined.contains("BEGIN CERTIFICATE"));
    let token = std::fs::read_to_string(once.join("db.jwt")).unwrap();
    let claims = |t: &str| -> Value {
        use base64::Engine;
        let payload = t.split('.').nth(1).unwrap();
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
    };
    assert_eq!(claims(&token)["sub"], "spiffe://example.org/db-client");
    assert_eq!(claims(&token)["aud"], serde_json::json!(["db"]));
    let creds = up.cli_json(&["credential", "list"]);
    let jti = claims(&token)["jti"].as_str().unwrap().to_owned();
    let row = creds["credentials"].as_array().unwrap().iter().find(|c| c["id"] == jti.as_str()).unwrap().clone();
    assert_eq!(row["delivered_to"], format!("files:{}", once.display()), "the JWT-SVID's delivery is recorded");

    // Bad settings and an identity this process does not have: one line, non-zero.
    let out =
        run(&["--once", "--dir", &d.join("x").display().to_string(), "--spiffe-id", "spiffe://example.org/not-mine"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("no SVID"), "{err}");
    let out =
        Command::new(bin()).args(["helper", "--dir", "/tmp/x"]).env_remove("SPIFFE_ENDPOINT_SOCKET").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("SPIFFE_ENDPOINT_SOCKET") && err.lines().count() == 1, "{err}");

    // Following the agent: the JWT-SVID is renewed at half its life (8 s).
    let mut follower = helper(&up, d, "follow", &["--jwt-audience", "db"]);
    let jwt = d.join("follow/db.jwt");
    let first = wait_for("the first JWT-SVID", 30, || std::fs::read_to_string(&jwt).ok());
    let renewed = wait_for("a renewed JWT-SVID", 30, || std::fs::read_to_string(&jwt).ok().filter(|t| *t != first));
    assert!(claims(&renewed)["exp"].as_i64() > claims(&first)["exp"].as_i64());
    // The entry is deleted: the agent answers PermissionDenied, the files go
    // at once, and the helper stays, asking again.
    let out = up.cli(&["entry", "delete", entry["id"].as_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for("the files to be removed", 15, || {
        (!d.join("follow/svid.key").exists() && !jwt.exists() && !d.join("follow/svid.pem").exists()).then_some(())
    });
    assert!(follower.child.try_wait().unwrap().is_none(), "the helper keeps asking");
    assert!(follower.log().contains("identity withdrawn; removing the files"));
    follower.kill();
}
