//! `hallmark login` (issue 19) end to end against a real OpenID provider:
//! node-oidc-provider (`tests/interop/oidc_provider.mjs`, an OpenID
//! Certified implementation) over HTTPS under a test CA made here, named as
//! the people's issuer in `hallmark up`'s configuration. The person is
//! played by `tests/interop/oidc_browser.mjs` (as `$BROWSER`: login form,
//! consent, then the loopback redirect) or `oidc_device.mjs` (the device
//! flow's verification page). The certificate that comes back is checked
//! as a relying party would: its SPIFFE ID, client-only EKU, the key in
//! `key.pem` (mode 0600) and `openssl verify` against `bundle.pem`.
//!
//! The server's refusals are met with genuine tokens of the same provider
//! (and of a second one Hallmark does not know), each wrong in one way:
//! `tests/interop/oidc_token.mjs` gets them for a nonce the test asked for,
//! and the test presents them to `POST /v1/login` itself; then the same
//! cases again through `hallmark login`, with `tests/interop/login_proxy.mjs`
//! in front of the server to steer it, which must write no file.
//!
//! Node.js and `tests/interop/node_modules/oidc-provider` are needed; a run
//! without them skips, except under `scripts/test.sh` or CI
//! (`HALLMARK_INTEROP=1` or `CI`), where it fails.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

const ALICE: &str = "spiffe://example.org/human/example.com/alice";
const CAROL: &str = "spiffe://example.org/human/example.com/carol";

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop")
}

/// True when `node` and the provider package are here; otherwise false
/// (skip) with the reason printed, or a failure when they are required.
fn provider_available() -> bool {
    let node = Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    let package = interop_dir().join("node_modules/oidc-provider/package.json").is_file();
    if node && package {
        return true;
    }
    let why = if node {
        "tests/interop/node_modules/oidc-provider is missing (npm ci --prefix tests/interop)"
    } else {
        "node is not on PATH"
    };
    let required = std::env::var("HALLMARK_INTEROP").is_ok_and(|v| v == "1") || std::env::var("CI").is_ok();
    assert!(!required, "{why}; scripts/test.sh installs it");
    println!("skipped: {why}; scripts/test.sh installs it");
    false
}

/// The provider's HTTPS: a throwaway CA (`ca.pem`) and a certificate for
/// the IP address 127.0.0.1 under it (`idp.pem`, `idp.key`).
fn test_pki(dir: &Path) -> PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.distinguished_name.push(DnType::CommonName, "hallmark login test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::from_ca_cert_der(ca.der(), &ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into())];
    params.distinguished_name.push(DnType::CommonName, "127.0.0.1");
    let leaf = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("idp.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("idp.key"), key.serialize_pem()).unwrap();
    dir.join("ca.pem")
}

/// The provider and `hallmark up` naming it as the people's issuer `corp`.
struct World {
    // Fields drop in order: `up` (and the directory) first, then the provider.
    up: Up,
    _idp: Proc,
    ca: PathBuf,
    /// The provider's issuer URL, `https://127.0.0.1:PORT`.
    issuer: String,
}

/// An `oidc_provider.mjs` on a free port with the certificate `test_pki`
/// made in `dir`, logging to `dir/{name}.log`; returns it and its issuer.
fn start_provider(dir: &Path, name: &str) -> (Proc, String) {
    let mut cmd = Command::new("node");
    cmd.arg(interop_dir().join("oidc_provider.mjs"))
        .args(["--port", "0", "--cert"])
        .arg(dir.join("idp.pem"))
        .arg("--key")
        .arg(dir.join("idp.key"));
    let mut idp = Proc::spawn(cmd, &dir.join(format!("{name}.log")));
    // Loading oidc-provider and making an RSA key is quick when idle, but the
    // suite runs beside nginx, podman and PostgreSQL on two cores: 60 s.
    let issuer = idp.wait_for_line("READY ", 60);
    assert!(issuer.starts_with("https://127.0.0.1:"), "{issuer}");
    (idp, issuer)
}

fn start_world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let ca = test_pki(dir.path());
    let (idp, issuer) = start_provider(dir.path(), "idp");

    // The people's issuer, in the server configuration keys of issue 19.
    let people = format!(
        "[[people.oidc_issuer]]\nname = \"corp\"\nissuer = \"{issuer}\"\nclient_id = \"hallmark-cli\"\n\
         ca_file = \"{}\"\nspiffe_id = \"spiffe://example.org/human/{{email}}\"\n",
        ca.display()
    );
    // Checked first, so that a server that does not take these keys fails
    // here at once with its reason rather than as `up` never starting.
    let check = dir.path().join("check.toml");
    std::fs::write(
        &check,
        format!("trust_domain = \"example.org\"\ndata_dir = \"{}\"\n{people}", dir.path().join("check").display()),
    )
    .unwrap();
    let out = Command::new(bin()).args(["config", "check", "--kind", "server"]).arg(&check).output().unwrap();
    assert!(
        out.status.success(),
        "the server refuses the people issuer configuration: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = dir.path().join("up.toml");
    std::fs::write(&config, people).unwrap();
    let up = Up::start_with(dir, &["--config", config.to_str().unwrap()]);
    World { up, _idp: idp, ca, issuer }
}

/// A `$BROWSER` for the tests: one executable, as `hallmark login` runs it.
fn browser_wrapper(dir: &Path) -> PathBuf {
    let path = dir.join("browser.sh");
    std::fs::write(
        &path,
        format!("#!/bin/sh\nexec node '{}' \"$@\"\n", interop_dir().join("oidc_browser.mjs").display()),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A finished `hallmark login`.
struct Ran {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` (stdout and stderr piped) for at most `secs`; `on_line` sees
/// each stderr line as it comes, and may act on it (the device flow's URL).
fn run(mut cmd: Command, secs: u64, mut on_line: impl FnMut(&str)) -> Ran {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let stdout = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).unwrap();
        s
    });
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut lines = Vec::new();
    let status = loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => {
                on_line(&line);
                lines.push(line);
                continue;
            }
            Err(mpsc::RecvTimeoutError::Timeout | mpsc::RecvTimeoutError::Disconnected) => {}
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("hallmark login still running after {secs} s; stderr so far:\n{}", lines.join("\n"));
        }
    };
    lines.extend(rx.iter());
    Ran { status, stdout: stdout.join().unwrap(), stderr: lines.join("\n") }
}

/// `hallmark login` against `world`, with no admin token in its
/// environment (a person has none), no display, and the test CA for Node.
fn login(world: &World, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.arg("login")
        .arg("--issuer-ca")
        .arg(&world.ca)
        .args(args)
        .envs(&world.up.env)
        .env_remove("HALLMARK_TOKEN")
        .env_remove("BROWSER")
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .env("NODE_EXTRA_CA_CERTS", &world.ca);
    cmd
}

/// Whether `text` holds something shaped like a compact JWS: `eyJ` (a
/// base64url JSON header) then base64url, a dot, base64url and a dot.
/// Random base64url (a state, a nonce) never has the dots.
fn holds_jwt(text: &str) -> bool {
    let b64 = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    text.match_indices("eyJ").any(|(at, _)| {
        let mut rest = &text[at..];
        for _ in 0..2 {
            let run = rest.find(|c: char| !b64(c)).unwrap_or(rest.len());
            if run == 0 || !rest[run..].starts_with('.') {
                return false;
            }
            rest = &rest[run + 1..];
        }
        true
    })
}

#[test]
fn jwt_shapes_are_recognised() {
    assert!(holds_jwt("token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln end"));
    assert!(!holds_jwt("state=eyJ_T3g5S1VbPfzE9SF1KZsR14dSiWBtRhfOm8tBKSS0&nonce=x"));
    assert!(!holds_jwt("eyJ. nothing"));
}

/// Neither the ID token nor the authorization code is ever shown.
fn assert_no_secrets(ran: &Ran) {
    for text in [&ran.stdout, &ran.stderr] {
        assert!(!holds_jwt(text), "a JWT was printed:\n{text}");
        // `user_code=` in the device flow's URL is meant to be shown.
        assert!(!text.contains("?code=") && !text.contains("&code="), "an authorization code was printed:\n{text}");
    }
}

/// The files of a successful login for `want`: modes, the certificate's
/// SPIFFE ID and client-only EKU, the key matching it, and the chain
/// verifying against the bundle with openssl.
fn check_login_files(ran: &Ran, out: &Path, want: &str) -> Value {
    assert!(ran.status.success(), "hallmark login failed:\n{}", ran.stderr);
    assert_no_secrets(ran);
    let json: Value = serde_json::from_str(&ran.stdout).unwrap();
    assert_eq!(json["spiffe_id"], want, "{json}");
    assert!(json.get("certificate_chain").is_none() && json.get("trust_bundle").is_none(), "{json}");
    for (field, name) in [("key_file", "key.pem"), ("cert_file", "cert.pem"), ("bundle_file", "bundle.pem")] {
        assert_eq!(json[field].as_str().map(PathBuf::from), Some(out.join(name)), "{json}");
    }
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(out), 0o700, "the output directory");
    assert_eq!(mode(&out.join("key.pem")), 0o600, "key.pem");
    let mut names: Vec<String> =
        std::fs::read_dir(out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["bundle.pem", "cert.pem", "key.pem"], "no temporary file left behind");

    let chain = pem::parse_many(std::fs::read(out.join("cert.pem")).unwrap()).unwrap();
    let (_, leaf) = x509_parser::parse_x509_certificate(chain[0].contents()).unwrap();
    let uris: Vec<String> = leaf
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => Some((*u).to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(uris, [want]);
    let eku = leaf.extended_key_usage().unwrap().expect("an EKU extension").value;
    assert!(eku.client_auth && !eku.server_auth && !eku.any && eku.other.is_empty(), "clientAuth only: {eku:?}");
    assert!(!leaf.is_ca());

    // The key written is the certificate's.
    let key = pem::parse(std::fs::read(out.join("key.pem")).unwrap()).unwrap();
    assert_eq!(key.tag(), "PRIVATE KEY");
    let pubkey = |args: &[&str], file: &str| {
        let o = Command::new("openssl").args(args).arg(out.join(file)).output().expect("openssl");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        o.stdout
    };
    assert_eq!(
        pubkey(&["pkey", "-pubout", "-in"], "key.pem"),
        pubkey(&["x509", "-noout", "-pubkey", "-in"], "cert.pem")
    );
    openssl_verify(&out.join("bundle.pem"), &out.join("cert.pem"));
    json
}

/// The browser flow: a refused person gets the server's reason and no
/// files; alice gets her certificate; signing in again replaces the files.
#[test]
fn login_in_the_browser_writes_a_verifiable_client_certificate() {
    if !provider_available() {
        return;
    }
    let world = start_world();
    let browser = browser_wrapper(world.up.dir.path());
    let out = world.up.dir.path().join("login");
    let as_user = |user: &str| {
        let mut cmd = login(&world, &["--out", out.to_str().unwrap(), "--json"]);
        cmd.env("BROWSER", &browser).env("OIDC_TEST_USER", user);
        run(cmd, 60, |_| {})
    };

    // bob's email is not verified: the server's 401 reason is shown as it
    // is, and nothing is written.
    let bob = as_user("bob");
    assert!(!bob.status.success(), "bob was let in: {}", bob.stdout);
    assert!(bob.stderr.contains("ID token") && bob.stderr.contains("email_verified"), "{}", bob.stderr);
    assert_no_secrets(&bob);
    assert!(!out.join("key.pem").exists());

    let first = as_user("alice");
    let json = check_login_files(&first, &out, ALICE);
    assert!(json["not_after"].as_i64().unwrap() > hallmark_core::now_unix());
    let key_before = std::fs::read(out.join("key.pem")).unwrap();
    let again = as_user("alice");
    check_login_files(&again, &out, ALICE);
    assert_ne!(std::fs::read(out.join("key.pem")).unwrap(), key_before, "a new key at each login");
}

/// The device flow: the CLI prints the verification URL and code, the
/// person completes it elsewhere, the CLI's polls pick the ID token up.
#[test]
fn login_by_device_code_writes_a_verifiable_client_certificate() {
    if !provider_available() {
        return;
    }
    let world = start_world();
    let out = world.up.dir.path().join("device-login");
    let cmd = login(&world, &["--device", "--out", out.to_str().unwrap(), "--json"]);
    let ca = world.ca.clone();
    let mut driver = None;
    let ran = run(cmd, 60, |line| {
        let Some(rest) = line.strip_prefix("To sign in, open ") else { return };
        let (url, code) = rest.split_once(" and enter the code ").expect("URL and code");
        assert!(!code.is_empty() && url.starts_with("https://127.0.0.1:"), "{line}");
        // The person, on another device: run while the CLI keeps polling.
        driver = Some(
            Command::new("node")
                .arg(interop_dir().join("oidc_device.mjs"))
                .args([url, "carol"])
                .env("NODE_EXTRA_CA_CERTS", &ca)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
    });
    let driver = driver.expect("hallmark login printed `To sign in, open URL and enter the code CODE`");
    let person = driver.wait_with_output().unwrap();
    assert!(person.status.success(), "oidc_device.mjs: {}", String::from_utf8_lossy(&person.stderr));
    check_login_files(&ran, &out, CAROL);
}

// ---- Refused ID tokens (issue 19's 401s), with a real provider's tokens ----

/// A genuine ID token of the provider at `issuer` for `client` and `nonce`,
/// signed in as `user`: `tests/interop/oidc_token.mjs` runs the
/// authorization code flow itself, with no `hallmark login` in between.
fn id_token(world: &World, issuer: &str, client: &str, nonce: &str, user: &str) -> String {
    let out = Command::new("node")
        .arg(interop_dir().join("oidc_token.mjs"))
        .args([issuer, client, nonce, user])
        .env("NODE_EXTRA_CA_CERTS", &world.ca)
        .output()
        .unwrap();
    assert!(out.status.success(), "oidc_token.mjs: {}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(holds_jwt(&token), "oidc_token.mjs printed no JWT");
    token
}

/// A claim of `token`'s payload (not verified: for the test's own timing).
fn claim(token: &str, name: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap();
    serde_json::from_slice::<Value>(&bytes).unwrap()[name].clone()
}

/// `POST {HALLMARK_SERVER}{path}` with curl, JSON in and out, with no admin
/// token (these routes need none); returns the status and the answer.
fn post_json(world: &World, path: &str, body: &Value) -> (u16, Value) {
    use std::io::Write;
    let url = format!("{}{path}", world.up.env["HALLMARK_SERVER"]);
    let mut child = Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-H", "content-type: application/json"])
        .args(["--data-binary", "@-"])
        .arg(&url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl is installed by the test script");
    // On stdin rather than in the arguments: the ID token is a secret.
    child.stdin.take().unwrap().write_all(body.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let (answer, status) = text.rsplit_once('\n').unwrap();
    (status.parse().unwrap(), serde_json::from_str(answer).unwrap_or(Value::Null))
}

/// `POST /v1/login/start` for the only issuer: (login_id, nonce).
fn start_login(world: &World) -> (String, String) {
    let (status, start) = post_json(world, "/v1/login/start", &serde_json::json!({}));
    assert_eq!(status, 200, "{start}");
    assert_eq!(start["issuer"], world.issuer.as_str(), "{start}");
    assert_eq!(start["client_id"], "hallmark-cli", "{start}");
    (start["login_id"].as_str().unwrap().to_owned(), start["nonce"].as_str().unwrap().to_owned())
}

/// A CSR for a new P-256 key, as `hallmark login` sends it: DER, standard
/// base64, no SAN.
fn csr() -> String {
    use base64::Engine;
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap().serialize_request(&key).unwrap();
    base64::engine::general_purpose::STANDARD.encode(csr.der())
}

/// `POST /v1/login` with `token` for `login_id`: (status, answer).
fn present(world: &World, login_id: &str, token: &str) -> (u16, Value) {
    post_json(world, "/v1/login", &serde_json::json!({ "login_id": login_id, "id_token": token, "csr": csr() }))
}

/// `POST /v1/login` that must be refused with 401 and no certificate;
/// returns the server's reason.
fn refused(world: &World, login_id: &str, token: &str) -> String {
    let (status, answer) = present(world, login_id, token);
    assert_eq!(status, 401, "{answer}");
    assert!(answer.get("certificate_chain").is_none(), "{answer}");
    let error = answer["error"].as_str().unwrap_or_default().to_owned();
    assert!(!holds_jwt(&error), "the refusal quotes the token: {error}");
    error
}

/// Each kind of ID token the server must not take, each a genuine token
/// of a real provider that differs from a good one in one way only: another
/// issuer, another audience, expired, or already used. The server says which
/// (401), and a login it refused is used up.
#[test]
fn login_refuses_another_issuer_audience_expired_and_replayed_id_tokens() {
    if !provider_available() {
        return;
    }
    let world = start_world();
    // A second provider, with the same test CA but an issuer Hallmark does
    // not know, and its own signing keys.
    let (_other_idp, other_issuer) = start_provider(world.up.dir.path(), "other-idp");
    assert_ne!(other_issuer, world.issuer);

    // 1. Another issuer, for the right client and nonce.
    let (login_id, nonce) = start_login(&world);
    let token = id_token(&world, &other_issuer, "hallmark-cli", &nonce, "alice");
    let error = refused(&world, &login_id, &token);
    assert!(
        error.starts_with("ID token:") && error.contains(&other_issuer) && error.contains(&world.issuer),
        "{error}"
    );

    // 2. Another client of the right issuer (audience `other-app`), with
    // the login's nonce.
    let (login_id, nonce) = start_login(&world);
    let token = id_token(&world, &world.issuer, "other-app", &nonce, "alice");
    assert_eq!(claim(&token, "aud"), "other-app");
    let error = refused(&world, &login_id, &token);
    assert!(error.starts_with("ID token:") && error.contains("audience") && error.contains("hallmark-cli"), "{error}");
    // The refused login is used up: not even the right token opens it now.
    let good = id_token(&world, &world.issuer, "hallmark-cli", &nonce, "alice");
    let error = refused(&world, &login_id, &good);
    assert!(error.contains("already used"), "{error}");

    // 3. Expired: `hallmark-cli-short`'s ID tokens live 2 s. Its audience
    // is wrong too, but the expiry is checked first and named.
    let (login_id, nonce) = start_login(&world);
    let token = id_token(&world, &world.issuer, "hallmark-cli-short", &nonce, "alice");
    let exp = claim(&token, "exp").as_i64().unwrap();
    assert!(exp - claim(&token, "iat").as_i64().unwrap() <= 2, "a short-lived token");
    wait_for("the ID token to expire", 10, || (hallmark_core::now_unix() > exp).then_some(()));
    let error = refused(&world, &login_id, &token);
    assert!(error.starts_with("ID token:") && error.contains("expired"), "{error}");

    // 4. Replayed: a token that just signed alice in, presented again.
    let (login_id, nonce) = start_login(&world);
    let token = id_token(&world, &world.issuer, "hallmark-cli", &nonce, "alice");
    let (status, issued) = present(&world, &login_id, &token);
    assert_eq!(status, 200, "{issued}");
    assert_eq!(issued["spiffe_id"], ALICE, "{issued}");
    // Its own login again: that login is used.
    let error = refused(&world, &login_id, &token);
    assert!(error.contains(&login_id) && error.contains("already used"), "{error}");
    // A new login: the token carries the old login's nonce.
    let (login_id, _) = start_login(&world);
    let error = refused(&world, &login_id, &token);
    assert!(error.starts_with("ID token:") && error.contains("nonce"), "{error}");
}

/// `tests/interop/login_proxy.mjs` between `hallmark login` and the server,
/// with `args` (what it changes); returns it and its `http://` URL.
fn start_proxy(world: &World, name: &str, args: &[&str]) -> (Proc, String) {
    let mut cmd = Command::new("node");
    cmd.arg(interop_dir().join("login_proxy.mjs")).arg("--target").arg(&world.up.env["HALLMARK_SERVER"]).args(args);
    let mut proxy = Proc::spawn(cmd, &world.up.dir.path().join(format!("proxy-{name}.log")));
    let url = proxy.wait_for_line("READY ", 60);
    (proxy, url)
}

/// The refusals of the test above, met by `hallmark login` itself: the
/// person signs in (`$BROWSER`) through a man in the middle that steers the
/// CLI to another issuer or client, holds the login back until the token
/// has expired, or swaps in a used token. Each time the CLI fails with the
/// server's reason, prints no token, and writes no file.
#[test]
fn login_through_the_cli_writes_nothing_when_the_server_refuses() {
    if !provider_available() {
        return;
    }
    let world = start_world();
    let dir = world.up.dir.path();
    let (_other_idp, other_issuer) = start_provider(dir, "other-idp");
    let browser = browser_wrapper(dir);
    let refused_through = |name: &str, proxy_args: &[&str], want: &[&str]| {
        let (proxy, url) = start_proxy(&world, name, proxy_args);
        let out = dir.join(format!("login-{name}"));
        let mut cmd = login(&world, &["--out", out.to_str().unwrap(), "--json"]);
        cmd.env("BROWSER", &browser).env("OIDC_TEST_USER", "alice").env("HALLMARK_SERVER", &url);
        let ran = run(cmd, 60, |_| {});
        let log = proxy.log();
        assert!(!ran.status.success(), "{name}: let in: {}\n{log}", ran.stdout);
        assert!(log.contains("POST /v1/login -> 401"), "{name}: the server did not refuse it:\n{log}");
        for w in want {
            assert!(ran.stderr.contains(w), "{name}: no `{w}` in:\n{}\n{log}", ran.stderr);
        }
        assert_no_secrets(&ran);
        assert!(ran.stdout.trim().is_empty(), "{name}: {}", ran.stdout);
        // `hallmark login` makes the directory before signing in; it stays empty.
        let left: Vec<_> =
            std::fs::read_dir(&out).map(|d| d.map(|e| e.unwrap().file_name()).collect()).unwrap_or_default();
        assert!(left.is_empty(), "{name}: files written: {left:?}");
    };

    // 1. The CLI is sent to another issuer, signs in there for the right
    // nonce, and hands that token over.
    refused_through("issuer", &["--start-set", &format!("issuer={other_issuer}")], &["ID token", &other_issuer]);
    // 2. It signs in as the client `other-app`.
    refused_through("audience", &["--start-set", "client_id=other-app"], &["ID token", "audience"]);
    // 3. As `hallmark-cli-short` (2 s tokens), and the login arrives 3 s later.
    refused_through(
        "expired",
        &["--start-set", "client_id=hallmark-cli-short", "--login-delay", "3000"],
        &["ID token", "expired"],
    );

    // 4. A token that has already signed alice in, swapped into the CLI's
    // login: with its login's id, and with the CLI's own.
    let (used_login, nonce) = start_login(&world);
    let used = id_token(&world, &world.issuer, "hallmark-cli", &nonce, "alice");
    let (status, issued) = present(&world, &used_login, &used);
    assert_eq!(status, 200, "{issued}");
    let token_file = dir.join("used-token");
    std::fs::write(&token_file, &used).unwrap();
    let token_arg = format!("id_token=@{}", token_file.display());
    refused_through(
        "replayed-login",
        &["--login-set", &format!("login_id={used_login}"), "--login-set", &token_arg],
        &["already used"],
    );
    // Only the token swapped: the rest of this sign-in reaches the server
    // as the CLI sent it, and the nonce is what it refuses.
    refused_through("replayed-nonce", &["--login-set", &token_arg], &["ID token", "nonce"]);
}

/// The human issuing authority's id, as `ca show` lists it.
fn human_ca(world: &World) -> String {
    let list = world.up.cli_json(&["ca", "show"]);
    let a = list["authorities"].as_array().unwrap().iter().find(|a| a["kind"] == "human" && a["state"] == "active");
    a.unwrap_or_else(|| panic!("no active human authority: {list}"))["id"].as_str().unwrap().to_owned()
}

/// `curl` to a TLS server with the person's certificate; whether the
/// handshake and request succeeded.
fn tls_with(world: &World, port: u16, out: &Path) -> bool {
    Command::new("curl")
        .args(["-sS", "--max-time", "5", "--cacert"])
        .arg(&world.ca)
        .arg("--cert")
        .arg(out.join("cert.pem"))
        .arg("--key")
        .arg(out.join("key.pem"))
        .arg(format!("https://127.0.0.1:{port}/"))
        .output()
        .unwrap()
        .status
        .success()
}

/// `openssl s_server` requiring a client certificate of the trust domain
/// (the bundle `hallmark login` wrote), checked against the human
/// authority's CRL as served now: a TLS server that uses the CRL.
fn tls_server(world: &World, out: &Path, ca: &str, name: &str) -> (Proc, u16) {
    let dir = world.up.dir.path();
    let (status, der) = http_get(&format!("{}/v1/crl/{ca}", world.up.env["HALLMARK_SERVER"]));
    assert_eq!(status, 200);
    let crl = dir.join(format!("{name}.crl.pem"));
    std::fs::write(&crl, pem::encode(&pem::Pem::new("X509 CRL", der))).unwrap();
    let port = free_local_port();
    let mut cmd = Command::new("openssl");
    cmd.args(["s_server", "-accept", &port.to_string(), "-www", "-Verify", "1", "-verify_return_error", "-crl_check"])
        .arg("-cert")
        .arg(dir.join("idp.pem"))
        .arg("-key")
        .arg(dir.join("idp.key"))
        .arg("-CAfile")
        .arg(out.join("bundle.pem"))
        .arg("-CRL")
        .arg(&crl);
    let p = Proc::spawn(cmd, &dir.join(format!("{name}.log")));
    wait_for("openssl s_server to listen", 10, || std::net::TcpStream::connect(("127.0.0.1", port)).ok());
    (p, port)
}

/// Issue 19, end to end: alice, provisioned over SCIM, signs in with the
/// real OpenID provider and uses her certificate with a TLS server that
/// checks the human authority's CRL. She leaves (SCIM `active: false`):
/// within a second `openssl verify -crl_check` refuses her certificate, a
/// TLS server loading the CRL refuses her handshake, and she cannot sign in
/// again.
#[test]
fn a_leavers_certificate_is_refused_by_the_crl_and_a_tls_server() {
    use crate::scim::{curl, scim_url, token, verify_against_crl};
    if !provider_available() {
        return;
    }
    let world = start_world();
    let scim = token(&world.up, "scim", "idp");
    let user = r#"{"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "alice@example.com",
                   "emails": [{"value": "alice@example.com", "primary": true}], "active": true}"#;
    let (status, alice, _) = curl("POST", &scim_url(&world.up, "/Users"), Some(&scim), Some(user));
    assert_eq!(status, 201, "{alice}");
    let alice_id = alice["id"].as_str().unwrap().to_owned();

    let browser = browser_wrapper(world.up.dir.path());
    let out = world.up.dir.path().join("login");
    let sign_in = || {
        let mut cmd = login(&world, &["--out", out.to_str().unwrap(), "--json"]);
        cmd.env("BROWSER", &browser).env("OIDC_TEST_USER", "alice");
        run(cmd, 60, |_| {})
    };
    let json = check_login_files(&sign_in(), &out, ALICE);
    let serial = json["serial"].as_str().unwrap().to_owned();
    let c = world.up.cli_json(&["credential", "show", &serial]);
    assert_eq!(c["credential"]["person_id"], alice_id.as_str(), "the certificate is alice's: {c}");

    let ca = human_ca(&world);
    let (ok, said) =
        verify_against_crl(&world.up, world.up.dir.path(), &ca, &out.join("bundle.pem"), &out.join("cert.pem"));
    assert!(ok, "valid before alice leaves: {said}");
    let (before, port) = tls_server(&world, &out, &ca, "tls-before");
    assert!(tls_with(&world, port, &out), "the TLS server takes alice's certificate before she leaves");
    drop(before);

    let patch = r#"{"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [{"op": "replace", "path": "active", "value": false}]}"#;
    let started = std::time::Instant::now();
    let (status, body, _) =
        curl("PATCH", &scim_url(&world.up, &format!("/Users/{alice_id}")), Some(&scim), Some(patch));
    assert_eq!(status, 200, "{body}");
    let refused_after = loop {
        let (ok, said) =
            verify_against_crl(&world.up, world.up.dir.path(), &ca, &out.join("bundle.pem"), &out.join("cert.pem"));
        if !ok {
            assert!(said.contains("revoked"), "{said}");
            break started.elapsed();
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "the CRL still accepts alice: {said}");
    };
    let (_after, port) = tls_server(&world, &out, &ca, "tls-after");
    assert!(!tls_with(&world, port, &out), "the TLS server refuses a leaver's certificate by the CRL");
    let tls_after = started.elapsed();
    println!(
        "leaver: openssl verify refuses after {refused_after:?}; a TLS server with the new CRL after {tls_after:?}"
    );
    assert!(refused_after < std::time::Duration::from_secs(1), "the CRL took {refused_after:?}");

    let again = sign_in();
    assert!(!again.status.success(), "a leaver signed in again: {}", again.stdout);
    assert!(again.stderr.contains("has left"), "{}", again.stderr);
}
