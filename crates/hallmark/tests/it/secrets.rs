//! Secrets hygiene, with real processes:
//!
//! - `hallmark up`, `hallmark server` and `hallmark agent` refuse to start
//!   when a private key file (CA key, JWT key, agent key) may be read by its
//!   group or by others: they exit non-zero at once, naming the file and
//!   `chmod 600`, never serve, and never replace the key with a new one;
//! - no private key (the authorities', the agent's, or a workload's
//!   X.509-SVID key) appears in the process log at debug level, the audit
//!   chain, the agent's health and metrics, admin API bodies (errors
//!   included), CLI output, the datastore, or the Workload API's fields other
//!   than the SVID's own key field.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hallmark_proto::workload::{
    JwtBundlesRequest, JwtsvidRequest, ValidateJwtsvidRequest, X509BundlesRequest, X509svidRequest, X509svidResponse,
};

use crate::harness::*;
use crate::separate::{join_agent, start_server_with};

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The private key files in a directory of authority keys (`*.key.pem`).
fn key_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".key.pem"))
        .collect();
    v.sort();
    v
}

/// Starts `cmd`, which must stop within 20 s with a failure naming `key` and
/// `chmod 600`.
fn assert_start_refused(cmd: Command, log: &Path, key: &Path, mode: u32) {
    let started = Instant::now();
    let mut p = Proc::spawn(cmd, log);
    let what = format!("a start with {} at mode {mode:o} to stop", key.display());
    let status = wait_for(&what, 20, || p.child.try_wait().unwrap());
    let out = p.log();
    assert!(!status.success(), "started with {} at mode {mode:o}:\n{out}", key.display());
    assert!(
        out.contains(&key.display().to_string()) && out.contains("chmod 600"),
        "the refusal names the file and the fix:\n{out}"
    );
    println!("mode {mode:o}: refused in {:?}: {}", started.elapsed(), out.lines().last().unwrap_or(""));
}

#[tokio::test(flavor = "multi_thread")]
async fn up_refuses_to_start_with_a_private_key_others_may_read() {
    let mut up = Up::start();
    let bundle_before = up.cli(&["bundle", "show"]).stdout;
    up.proc.kill();
    let data = up.dir.path().join("data");
    let authority_keys = || [key_files(&data.join("server/keys/x509")), key_files(&data.join("server/keys/jwt"))];
    let before = authority_keys();
    assert!(before.iter().all(|k| k.len() == 1), "{before:?}");
    let keys = [before[0][0].clone(), before[1][0].clone(), data.join("agent/agent.key.der"), data.join("admin-token")];
    for key in &keys {
        for mode in [0o640, 0o604] {
            chmod(key, mode);
            std::fs::remove_file(data.join("env")).unwrap_or_default();
            let mut cmd = Command::new(bin());
            cmd.args(["up", "--data-dir"]).arg(&data).args(["--admin-listen", "127.0.0.1:0"]);
            assert_start_refused(cmd, &up.dir.path().join(format!("refused-{}.log", rand_tag())), key, mode);
            assert!(!data.join("env").exists(), "never served: no env file written");
            assert_eq!(authority_keys(), before, "no authority was put in place of the refused one");
            chmod(key, 0o600);
        }
    }
    // With the modes repaired, it starts again on the same authorities.
    let Up { dir, proc, .. } = up;
    drop(proc);
    let up = Up::start_in(dir);
    assert_eq!(up.cli(&["bundle", "show"]).stdout, bundle_before);
}

#[tokio::test(flavor = "multi_thread")]
async fn server_and_agent_refuse_to_start_with_a_private_key_others_may_read() {
    let mut dep = start_server_with(None, "");
    let (mut agent, _, _) = join_agent(&dep, "a");
    agent.kill();
    dep.server.kill();
    let server_keys = dep.dir.path().join("server/keys");
    let authority_keys = || [key_files(&server_keys.join("x509")), key_files(&server_keys.join("jwt"))];
    let before = authority_keys();
    assert!(before.iter().all(|k| k.len() == 1), "{before:?}");
    for key in [&before[0][0], &before[1][0]] {
        for mode in [0o640, 0o604] {
            chmod(key, mode);
            let mut cmd = Command::new(bin());
            cmd.args(["server", "--config"]).arg(dep.dir.path().join("server.toml"));
            assert_start_refused(cmd, &dep.dir.path().join(format!("refused-{}.log", rand_tag())), key, mode);
            assert_eq!(authority_keys(), before, "no authority was put in place of the refused one");
            chmod(key, 0o600);
        }
    }
    dep.start_server_again();

    let agent_key = dep.dir.path().join("a/data/agent.key.der");
    let agent_cmd = || {
        let mut cmd = Command::new(bin());
        cmd.args(["agent", "--config"]).arg(dep.dir.path().join("a/agent.toml"));
        cmd
    };
    for mode in [0o640, 0o604] {
        chmod(&agent_key, mode);
        assert_start_refused(
            agent_cmd(),
            &dep.dir.path().join(format!("refused-{}.log", rand_tag())),
            &agent_key,
            mode,
        );
        chmod(&agent_key, 0o600);
    }
    // With the mode repaired, the agent resumes with its stored SVID.
    let agent = Proc::spawn(agent_cmd(), &dep.dir.path().join("a-again.log"));
    wait_for("the agent to resume", 30, || agent.log().contains("using stored agent SVID").then_some(()));
}

/// Everything gathered from the running system, by where it came from.
#[derive(Default)]
struct Gathered {
    parts: Vec<(String, Vec<u8>)>,
}

impl Gathered {
    fn add(&mut self, source: impl Into<String>, bytes: impl Into<Vec<u8>>) {
        self.parts.push((source.into(), bytes.into()));
    }

    /// Runs a CLI command against `up`, keeping its stdout and stderr.
    fn cli(&mut self, up: &Up, args: &[&str]) -> Output {
        let out = up.cli(args);
        self.add(format!("stdout of {args:?}"), out.stdout.clone());
        self.add(format!("stderr of {args:?}"), out.stderr.clone());
        out
    }

    /// Keeps every field of an X.509-SVID response except the SVIDs' own
    /// private keys (delivered there by design); returns those keys.
    fn x509_response(&mut self, source: &str, r: &X509svidResponse) -> Vec<Vec<u8>> {
        for s in &r.svids {
            self.add(format!("{source}: spiffe_id, hint"), format!("{} {}", s.spiffe_id, s.hint));
            self.add(format!("{source}: x509_svid"), s.x509_svid.clone());
            self.add(format!("{source}: bundle"), s.bundle.clone());
        }
        for (i, crl) in r.crl.iter().enumerate() {
            self.add(format!("{source}: crl {i}"), crl.clone());
        }
        for (td, b) in &r.federated_bundles {
            self.add(format!("{source}: federated bundle {td}"), b.clone());
        }
        r.svids.iter().map(|s| s.x509_svid_key.clone()).collect()
    }
}

/// One HTTP/1.0 request (so the body is never chunked); returns status and body.
fn http(method: &str, url: &str, token: Option<&str>, body: &str) -> (u16, Vec<u8>) {
    let rest = url.strip_prefix("http://").unwrap();
    let (authority, path) = rest.split_once('/').map(|(a, p)| (a, format!("/{p}"))).unwrap();
    let mut s = std::net::TcpStream::connect(authority).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {authority}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let status = String::from_utf8_lossy(&buf[..split]).split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, buf[split + 4..].to_vec())
}

fn with_header<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("workload.spiffe.io", "true".parse().unwrap());
    r
}

/// Strings and bytes that would show one private key (PKCS#8 DER) leaked.
struct Needles {
    key: String,
    items: Vec<(String, Vec<u8>)>,
}

fn needles(key_name: &str, pkcs8: &[u8]) -> Needles {
    use aws_lc_rs::encoding::AsBigEndian;
    let pair =
        aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(&aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8)
            .unwrap();
    let scalar = pair.private_key().as_be_bytes().unwrap().as_ref().to_vec();
    assert_eq!(scalar.len(), 32);
    let at = pkcs8.windows(32).position(|w| w == scalar.as_slice()).expect("the scalar is in the PKCS#8 document");
    let mut items: Vec<(String, Vec<u8>)> = vec![
        ("raw private scalar".into(), scalar.clone()),
        ("raw PKCS#8 DER".into(), pkcs8.to_vec()),
        ("hex of the scalar".into(), hex::encode(&scalar).into_bytes()),
        ("HEX of the scalar".into(), hex::encode_upper(&scalar).into_bytes()),
        ("base64 of the PKCS#8 DER".into(), STANDARD.encode(pkcs8).into_bytes()),
    ];
    // The scalar in base64 or base64url at any alignment (a JWK `d`, an
    // SEC1 or PKCS#8 document encoded whole): 27 bytes from offset 0, 1 or 2.
    for k in 0..3 {
        let part = &scalar[k..k + 27];
        items.push((format!("base64 of the scalar from byte {k}"), STANDARD.encode(part).into_bytes()));
        items.push((format!("base64url of the scalar from byte {k}"), URL_SAFE_NO_PAD.encode(part).into_bytes()));
    }
    // Rust's Debug of the bytes, as a careless `?key` in a log line would print them.
    let debug = format!("{:?}", &scalar[..12]);
    items.push(("Debug of the scalar's bytes".into(), debug.trim_matches(['[', ']']).as_bytes().to_vec()));
    // The PEM body lines that hold part of the scalar (the others hold only
    // the fixed header or the public key, which may rightly appear).
    let b64 = STANDARD.encode(pkcs8);
    for (i, line) in b64.as_bytes().chunks(64).enumerate() {
        let (start, end) = (i * 48, i * 48 + 48);
        if start < at + 32 && at < end {
            items.push((format!("PEM body line {}", i + 1), line.to_vec()));
        }
    }
    Needles { key: key_name.to_owned(), items }
}

/// Every private key file in a data directory, as (name, PKCS#8 DER).
fn key_files_in(data: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![data.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let name = p.strip_prefix(data).unwrap().display().to_string();
            if p.is_dir() {
                todo.push(p);
            } else if name.ends_with(".key.pem") {
                out.push((name, pem::parse(std::fs::read(&p).unwrap()).unwrap().into_contents()));
            } else if name.ends_with(".key.der") {
                out.push((name, std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

/// Fetches X.509-SVIDs until the first one's serial is not `not_serial`.
async fn fetch_x509(up: &Up, not_serial: Option<&str>) -> X509svidResponse {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut c = raw_client(&up.socket()).await;
        if let Ok(r) = c.fetch_x509svid(with_header(X509svidRequest {})).await
            && let Ok(Some(msg)) = r.into_inner().message().await
            && let Some(s) = msg.svids.first()
            && Some(serial_of(&s.x509_svid).as_str()) != not_serial
        {
            return msg;
        }
        assert!(Instant::now() < deadline, "no (new) X.509-SVID within 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_private_key_material_in_logs_audit_metrics_or_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut cmd = Command::new(bin());
    cmd.args(["up", "--data-dir"]).arg(&data).args(["--admin-listen", "127.0.0.1:0"]).env("HALLMARK_LOG", "debug");
    let proc = Proc::spawn(cmd, &dir.path().join("up.log"));
    let text = wait_for("hallmark up to write its env file", 60, || {
        std::fs::read_to_string(data.join("env")).ok().filter(|t| t.lines().count() >= 3)
    });
    let up = Up { env: parse_env(&text), proc, dir };
    let mut got = Gathered::default();
    let mut workload_keys: Vec<Vec<u8>> = Vec::new();

    // Issue: an X.509-SVID and a JWT-SVID, bundles, validation.
    let uid = format!("unix:uid:{}", my_uid());
    let entry =
        got.cli(&up, &["entry", "create", "--spiffe-id", "spiffe://example.org/s", "--selector", &uid, "--owner", "x"]);
    assert!(!entry.status.success(), "no such owner yet: an error path");
    let entry = up.create_entry("spiffe://example.org/s", &["--selector", &uid]);
    let entry_id = entry["id"].as_str().unwrap().to_owned();
    let first = fetch_x509(&up, None).await;
    workload_keys.extend(got.x509_response("FetchX509SVID", &first));
    let serial = serial_of(&first.svids[0].x509_svid);
    let mut c = raw_client(&up.socket()).await;
    let jwt = c
        .fetch_jwtsvid(with_header(JwtsvidRequest { audience: vec!["db".into()], spiffe_id: String::new() }))
        .await
        .unwrap()
        .into_inner();
    got.add("FetchJWTSVID", format!("{jwt:?}"));
    let token = jwt.svids[0].svid.clone();
    let b = c.fetch_x509_bundles(with_header(X509BundlesRequest {})).await.unwrap().into_inner().message().await;
    got.add("FetchX509Bundles", format!("{b:?}"));
    let b = c.fetch_jwt_bundles(with_header(JwtBundlesRequest {})).await.unwrap().into_inner().message().await;
    got.add("FetchJWTBundles", format!("{b:?}"));
    let v =
        c.validate_jwtsvid(with_header(ValidateJwtsvidRequest { audience: "db".into(), svid: token.clone() })).await;
    got.add("ValidateJWTSVID", format!("{v:?}"));
    // Workload API error paths.
    let bad = [
        ValidateJwtsvidRequest { audience: "db".into(), svid: "not.a.jwt".into() },
        ValidateJwtsvidRequest { audience: "other".into(), svid: token.clone() },
    ];
    for r in bad {
        let e = c.validate_jwtsvid(with_header(r)).await.unwrap_err();
        got.add("ValidateJWTSVID error", format!("{e:?}"));
    }
    let e = c
        .fetch_jwtsvid(with_header(JwtsvidRequest { audience: vec!["a\u{1}".into()], spiffe_id: String::new() }))
        .await
        .unwrap_err();
    got.add("FetchJWTSVID error", format!("{e:?}"));
    let e = c.fetch_x509svid(X509svidRequest {}).await.err().unwrap();
    got.add("FetchX509SVID without header", format!("{e:?}"));
    got.cli(&up, &["api", "fetch-x509", "--json"]);
    got.cli(&up, &["api", "fetch-jwt", "--audience", "cli"]);

    // Rotate both authorities; the new ones sign from now on.
    for kind in ["x509", "jwt"] {
        for step in ["prepare", "activate"] {
            let out = got.cli(&up, &["ca", step, "--kind", kind]);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
    }
    let out = got.cli(&up, &["ca", "activate", "--kind", "x509"]);
    assert!(!out.status.success(), "nothing prepared: an error path");
    got.cli(&up, &["ca", "prepare", "--kind", "bogus"]);
    got.cli(&up, &["ca", "show"]);
    let jwt_after = c
        .fetch_jwtsvid(with_header(JwtsvidRequest { audience: vec!["after".into()], spiffe_id: String::new() }))
        .await
        .unwrap()
        .into_inner();
    got.add("FetchJWTSVID after rotation", format!("{jwt_after:?}"));

    // Revoke the X.509-SVID and the JWT; the workload gets a replacement.
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap();
    for (flag, value) in [("--serial", serial.as_str()), ("--jti", claims["jti"].as_str().unwrap())] {
        let out = got.cli(&up, &["revoke", flag, value, "--reason", "secrets test"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    got.cli(&up, &["revoke", "--serial", "zz-not-hex", "--reason", "bad"]);
    let replaced = fetch_x509(&up, Some(&serial)).await;
    workload_keys.extend(got.x509_response("FetchX509SVID after revocation", &replaced));

    // The node API, as the agent, with a bad CSR and an unknown entry.
    let agent_dir = data.join("agent");
    let chain =
        hallmark_ca::svid::pem_certs(&std::fs::read_to_string(agent_dir.join("agent.chain.pem")).unwrap()).unwrap();
    let key = std::fs::read(agent_dir.join("agent.key.der")).unwrap();
    let bundle = String::from_utf8(got.cli(&up, &["bundle", "show"]).stdout).unwrap();
    let anchors: hallmark_ca::tls::SharedAnchors =
        Arc::new(RwLock::new(hallmark_ca::svid::pem_certs(&bundle).unwrap()));
    let trust = hallmark_agent::server_conn::Trust::Mtls {
        anchors,
        server_id: hallmark_core::SpiffeId::new("spiffe://example.org/hallmark/server").unwrap(),
        chain,
        key,
    };
    let mut node = hallmark_agent::server_conn::channel(&up.env["HALLMARK_AGENT_API"], trust).unwrap();
    let r = node
        .sign_x509_svids(hallmark_proto::node::SignX509SvidsRequest {
            requests: vec![hallmark_proto::node::SvidRequest {
                entry_id: entry_id.clone(),
                csr: b"not a certificate signing request".to_vec(),
                evidence: vec![uid.clone()],
                renewal: false,
                process: None,
                lineage: Vec::new(),
            }],
        })
        .await;
    let r = format!("{r:?}");
    assert!(r.contains("error: \"") && !r.contains("error: \"\""), "a bad CSR is refused: {r}");
    got.add("SignX509SVIDs with a bad CSR", r);
    let r = node
        .mint_jwt_svid(hallmark_proto::node::MintJwtSvidRequest {
            entry_id: "no-such-entry".into(),
            audience: vec!["db".into()],
            evidence: vec![uid.clone()],
            process: None,
            lineage: Vec::new(),
        })
        .await;
    got.add("MintJWTSVID for an unknown entry", format!("{r:?}"));

    // The admin API: error bodies, and what it lists.
    let server = up.env["HALLMARK_SERVER"].clone();
    let admin = up.env["HALLMARK_TOKEN"].clone();
    let ok = Some(admin.as_str());
    let authorities = up.cli_json(&["ca", "show"]);
    let active_id = authorities["authorities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["state"] == "active")
        .and_then(|a| a["id"].as_str())
        .unwrap()
        .to_owned();
    let errors: Vec<(&str, String, Option<&str>, &str)> = vec![
        ("GET", "/v1/entries".into(), None, ""),
        ("GET", "/v1/entries".into(), Some("wrong-token"), ""),
        ("POST", "/v1/entries".into(), ok, "{not json"),
        (
            "POST",
            "/v1/entries".into(),
            ok,
            r#"{"spiffe_id":"spiffe://example.org/../x","selectors":["unix:uid:0"],"owner":"team-test"}"#,
        ),
        (
            "POST",
            "/v1/entries".into(),
            ok,
            r#"{"spiffe_id":"spiffe://example.org/y","selectors":["nope:x:y"],"owner":"team-test"}"#,
        ),
        ("GET", "/v1/entries/no-such-entry".into(), ok, ""),
        ("POST", "/v1/authorities/prepare".into(), ok, r#"{"kind":"bogus"}"#),
        ("POST", "/v1/authorities/activate".into(), ok, r#"{"kind":"jwt"}"#),
        ("POST", format!("/v1/authorities/{active_id}/taint"), ok, ""),
        ("POST", format!("/v1/authorities/{active_id}/revoke"), ok, ""),
        ("POST", "/v1/revocations".into(), ok, r#"{"serial":"zz"}"#),
        ("PUT", "/v1/policy".into(), ok, "permit("),
        ("GET", "/v1/crl/no-such-authority".into(), ok, ""),
        ("GET", "/v1/reports/no-such-report".into(), ok, ""),
        ("POST", "/v1/join-tokens".into(), ok, r#"{"ttl":"0s"}"#),
    ];
    for (method, path, token, body) in &errors {
        let (status, resp) = http(method, &format!("{server}{path}"), *token, body);
        assert!(status >= 400, "{method} {path} is an error path: {status} {}", String::from_utf8_lossy(&resp));
        got.add(format!("admin API {method} {path} ({status})"), resp);
    }
    for path in [
        "/v1/authorities",
        "/v1/bundle",
        "/bundle",
        "/v1/credentials",
        "/v1/audit",
        "/v1/audit/verify",
        "/v1/nodes",
        "/v1/policy",
        "/v1/revocations",
        "/v1/reports/compliance",
        "/ready",
    ] {
        let (status, resp) = http("GET", &format!("{server}{path}"), ok, "");
        got.add(format!("admin API GET {path} ({status})"), resp);
    }

    // Audit, inventory, the agent's health and metrics.
    let audit = got.cli(&up, &["audit", "export"]);
    assert!(audit.status.success() && !audit.stdout.is_empty());
    got.cli(&up, &["audit", "verify"]);
    got.cli(&up, &["credential", "list"]);
    // The evidence a credential was issued on: attested facts only.
    let shown = got.cli(&up, &["credential", "show", &serial, "--json"]);
    assert!(String::from_utf8_lossy(&shown.stdout).contains("\"pid\""), "the evidence is shown");
    let health = up.env["HALLMARK_AGENT_HEALTH"].clone();
    for path in ["/metrics", "/ready", "/live"] {
        let (status, body) = http_get(&format!("{health}{path}"));
        assert_eq!(status, 200, "{path}");
        got.add(format!("agent health {path}"), body);
    }
    // The datastore holds public halves only.
    for f in ["hallmark.db", "hallmark.db-wal"] {
        if let Ok(bytes) = std::fs::read(data.join(f)) {
            got.add(format!("datastore file {f}"), bytes);
        }
    }
    let log = std::fs::read(&up.proc.log).unwrap();
    assert!(String::from_utf8_lossy(&log).contains("DEBUG"), "the log is at debug level");
    got.add("the process log (debug)", log);

    // Every private key there is, and the workload's.
    let mut keys: Vec<Needles> = key_files_in(&data).iter().map(|(name, der)| needles(name, der)).collect();
    let names: Vec<&str> = keys.iter().map(|k| k.key.as_str()).collect();
    assert!(names.iter().filter(|n| n.starts_with("server/keys/x509/")).count() >= 2, "{names:?}");
    assert!(names.iter().filter(|n| n.starts_with("server/keys/jwt/")).count() >= 2, "{names:?}");
    assert!(names.contains(&"agent/agent.key.der"), "{names:?}");
    assert_eq!(workload_keys.len(), 2);
    for (i, k) in workload_keys.iter().enumerate() {
        keys.push(needles(&format!("workload X.509-SVID key {i}"), k));
    }

    let mut found = Vec::new();
    let mut scanned = 0usize;
    for (source, bytes) in &got.parts {
        scanned += bytes.len();
        if bytes.windows(11).any(|w| w == b"PRIVATE KEY") {
            found.push(format!("\"PRIVATE KEY\" in {source}"));
        }
        for k in &keys {
            for (what, needle) in &k.items {
                if bytes.windows(needle.len()).any(|w| w == needle.as_slice()) {
                    found.push(format!("{} ({what}) in {source}", k.key));
                }
            }
        }
    }
    let needle_count: usize = keys.iter().map(|k| k.items.len()).sum();
    println!(
        "scanned {scanned} bytes from {} sources for {} private keys ({needle_count} patterns)",
        got.parts.len(),
        keys.len()
    );
    assert!(found.is_empty(), "private key material found:\n{}", found.join("\n"));
}
