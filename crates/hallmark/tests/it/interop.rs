//! The Workload API against the SPIFFE clients people use, each as a real
//! process over the real socket, on `hallmark up` and on a separate
//! `hallmark server` + `hallmark agent`:
//!
//! - py-spiffe (PyPI `spiffe`) on grpcio, with grpcio's default `:authority`
//!   (the percent-encoded socket path);
//! - plain grpcio with `:authority` set to the raw socket path, as grpc-java
//!   sends it;
//! - @grpc/grpc-js (Node);
//! - the Rust `spiffe` crate.
//!
//! Each fetches X.509-SVIDs, the X.509 bundles, a JWT-SVID and the JWT
//! bundles, and validates the JWT-SVID through ValidateJWTSVID; this test then
//! checks what each received against the rules and against the others. The
//! client scripts and their pinned packages are in `tests/interop/`;
//! `scripts/test.sh` installs them (Python packages into `.venv`, npm packages
//! into `tests/interop/node_modules`) and sets `HALLMARK_INTEROP=1`, and then
//! a missing client fails the test. Run by hand without them, these tests
//! say so and skip.
//!
//! Also here, needing no client but this one: requests whose `:authority` is
//! the raw path, the percent-encoded path, or missing, written byte by byte.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use spiffe::JwtSvid;

use crate::harness::*;
use crate::separate::{join_agent_on_default_socket, start_server_with};
use crate::up::pem_cert;

const ID: &str = "spiffe://example.org/interop";

/// Where the interop clients live, when they are installed.
struct Clients {
    root: PathBuf,
    python: PathBuf,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The installed clients; `None` (skip) when they are missing and this is
/// not a run of `scripts/test.sh` or CI, which must have them.
fn clients() -> Option<Clients> {
    let root = repo_root();
    let python = root.join(".venv/bin/python");
    let mut missing = Vec::new();
    let py = Command::new(&python).args(["-c", "import spiffe, grpc, grpc_tools"]).output();
    if !py.is_ok_and(|o| o.status.success()) {
        missing.push(format!("{} with spiffe, grpcio, grpcio-tools", python.display()));
    }
    if !Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success()) {
        missing.push("node".to_owned());
    }
    if !root.join("tests/interop/node_modules/@grpc/grpc-js/package.json").exists() {
        missing.push("tests/interop/node_modules (@grpc/grpc-js, @grpc/proto-loader)".to_owned());
    }
    if missing.is_empty() {
        return Some(Clients { root, python });
    }
    let required = std::env::var("HALLMARK_INTEROP").is_ok_and(|v| v == "1") || std::env::var("CI").is_ok();
    assert!(!required, "interop clients missing (scripts/test.sh installs them): {}", missing.join("; "));
    println!("skipped: interop clients missing ({}); scripts/test.sh installs them", missing.join("; "));
    None
}

impl Clients {
    /// Runs one client script against `socket`; returns its report.
    fn run(&self, program: &Path, args: &[&str], socket: &str) -> Value {
        let dir = self.root.join("tests/interop");
        let out = Command::new(program)
            .args(args)
            .current_dir(&dir)
            .env("SPIFFE_ENDPOINT_SOCKET", socket)
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{} {args:?} failed:\n{stderr}", program.display());
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {stderr}"))
    }

    /// Every client's report, named.
    async fn all(&self, socket: &str) -> Vec<(&'static str, String, Value)> {
        let proto = self.root.join("proto");
        let proto = proto.to_str().unwrap();
        let mut reports = Vec::new();
        for (name, program, args) in [
            ("py-spiffe", self.python.as_path(), vec!["py_spiffe_client.py", "interop-py-spiffe"]),
            ("grpcio, raw path authority", self.python.as_path(), vec!["grpcio_client.py", proto, "interop-grpcio"]),
            ("@grpc/grpc-js", Path::new("node"), vec!["grpc_js_client.js", proto, "interop-grpc-js"]),
        ] {
            let audience = args.last().unwrap().to_string();
            reports.push((name, audience, self.run(program, &args, socket)));
        }
        reports.push(("rust spiffe", "interop-rust".to_owned(), rust_report(socket, "interop-rust").await));
        reports
    }
}

/// The same report as the scripts print, from the Rust `spiffe` crate.
async fn rust_report(socket: &str, audience: &str) -> Value {
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    let client = spiffe::WorkloadApiClient::connect_to(socket).await.unwrap();
    let svids = client.fetch_all_x509_svids().await.unwrap();
    let bundles = client.fetch_x509_bundles().await.unwrap();
    let jwt = client.fetch_jwt_svid([audience], None).await.unwrap();
    let jwt_bundles = client.fetch_jwt_bundles().await.unwrap();
    let validated = client.validate_jwt_token(audience, jwt.token()).await.unwrap();
    json!({
        "client": "rust spiffe 0.19",
        "x509_svids": svids.iter().map(|s| json!({
            "spiffe_id": s.spiffe_id().to_string(),
            "chain": s.cert_chain().iter().map(|c| b64(c.as_bytes())).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "x509_bundles": bundles.iter().map(|(td, b)| {
            (td.to_string(), json!(b64(&b.authorities().iter().flat_map(|c| c.as_bytes().to_vec()).collect::<Vec<_>>())))
        }).collect::<serde_json::Map<_, _>>(),
        "jwt_svids": [{"spiffe_id": jwt.spiffe_id().to_string(), "token": jwt.token()}],
        "jwt_bundles": jwt_bundles.iter().map(|(td, b)| {
            let mut kids: Vec<String> = b.jwt_authorities().map(|a| a.key_id().to_owned()).collect();
            kids.sort();
            (td.to_string(), json!(kids))
        }).collect::<serde_json::Map<_, _>>(),
        "validated": validated.spiffe_id().to_string(),
    })
}

/// Concatenated DER certificates, one by one.
fn split_der(mut der: &[u8]) -> Vec<Vec<u8>> {
    let mut certs = Vec::new();
    while !der.is_empty() {
        let (rest, _) = x509_parser::parse_x509_certificate(der).unwrap();
        certs.push(der[..der.len() - rest.len()].to_vec());
        der = rest;
    }
    certs
}

fn b64_decode(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap()).unwrap()
}

/// The value for trust domain `example.org` in a bundle map, whichever way
/// the client names it (`example.org` or `spiffe://example.org`).
fn for_trust_domain<'a>(map: &'a Value, what: &str) -> &'a Value {
    let map = map.as_object().unwrap_or_else(|| panic!("{what}: not a map"));
    assert_eq!(map.len(), 1, "{what}: one trust domain, ours: {map:?}");
    let (td, v) = map.iter().next().unwrap();
    assert_eq!(td.trim_start_matches("spiffe://"), "example.org", "{what}");
    v
}

/// Checks one client's report: the SVID's rules and chain (openssl too), the
/// bundles equal to the Rust client's, the JWT-SVID verified independently.
async fn check(name: &str, audience: &str, report: &Value, socket: &str) {
    println!("{name}: {}", report["client"]);
    let rust = spiffe::WorkloadApiClient::connect_to(socket).await.unwrap();
    let bundle = rust.fetch_x509_bundles().await.unwrap();
    let (_, ours) = bundle.iter().next().unwrap();
    let authorities: Vec<Vec<u8>> = ours.authorities().iter().map(|c| c.as_bytes().to_vec()).collect();

    // X.509-SVID: our ID, every rule, and a chain openssl verifies against the bundle.
    let svid = &report["x509_svids"][0];
    assert_eq!(svid["spiffe_id"], ID, "{name}");
    let chain: Vec<Vec<u8>> = svid["chain"].as_array().unwrap().iter().map(b64_decode).collect();
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
    let issuer = authorities
        .iter()
        .chain(chain.iter().skip(1))
        .find(|c| x509_parser::parse_x509_certificate(c).unwrap().1.subject() == leaf.issuer())
        .unwrap_or_else(|| panic!("{name}: no issuer of the SVID in the chain or bundle"));
    check_x509_svid_rules(&chain[0], issuer, ID);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("leaf.pem"), chain.iter().map(|c| pem_cert(c)).collect::<String>()).unwrap();
    std::fs::write(dir.path().join("bundle.pem"), authorities.iter().map(|c| pem_cert(c)).collect::<String>()).unwrap();
    openssl_verify(&dir.path().join("bundle.pem"), &dir.path().join("leaf.pem"));

    // The X.509 bundle: the same authorities the Rust client gets (a set:
    // py-spiffe keeps them in its own order).
    let mut got = split_der(&b64_decode(for_trust_domain(&report["x509_bundles"], name)));
    got.sort();
    let mut want = authorities.clone();
    want.sort();
    assert_eq!(got, want, "{name}: X.509 bundle");

    // JWT bundle: the same key ids; JWT-SVID: ours, verified with that bundle.
    let jwt_bundles = rust.fetch_jwt_bundles().await.unwrap();
    let (_, jb) = jwt_bundles.iter().next().unwrap();
    let mut kids: Vec<String> = jb.jwt_authorities().map(|a| a.key_id().to_owned()).collect();
    kids.sort();
    assert_eq!(for_trust_domain(&report["jwt_bundles"], name), &json!(kids), "{name}: JWT bundle");
    let jwt = &report["jwt_svids"][0];
    assert_eq!(jwt["spiffe_id"], ID, "{name}");
    let verified = JwtSvid::parse_and_validate(jwt["token"].as_str().unwrap(), &jwt_bundles, &[audience])
        .unwrap_or_else(|e| panic!("{name}: JWT-SVID does not verify: {e}"));
    assert_eq!(verified.spiffe_id().to_string(), ID, "{name}");
    assert_eq!(verified.audience(), [audience.to_owned()], "{name}");
    // ValidateJWTSVID, as the client called it.
    assert_eq!(report["validated"], ID, "{name}: ValidateJWTSVID");
}

async fn every_client_against(socket: &str, clients: &Clients) {
    // Each client asks until the entry's SVID exists (the first X.509 call waits for issuance).
    let rust = spiffe::WorkloadApiClient::connect_to(socket).await.unwrap();
    wait_for_svid_async(&rust).await;
    for (name, audience, report) in clients.all(socket).await {
        check(name, &audience, &report, socket).await;
    }
}

async fn wait_for_svid_async(client: &spiffe::WorkloadApiClient) {
    for _ in 0..300 {
        if client.fetch_x509_svid().await.is_ok_and(|s| s.spiffe_id().to_string() == ID) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no SVID for {ID} within 30 s");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_client_works_against_up() {
    let Some(clients) = clients() else { return };
    let up = Up::start();
    up.create_entry(ID, &["--selector", &format!("unix:uid:{}", my_uid())]);
    every_client_against(&up.socket(), &clients).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_client_works_against_a_separate_server_and_agent() {
    let Some(clients) = clients() else { return };
    let dep = start_server_with(None, "");
    // The agent's own default socket, DATA_DIR/public/api.sock, reachable
    // through a data directory no one else may list.
    let (agent, agent_id, socket) = join_agent_on_default_socket(&dep, "interop");
    let data = socket.parent().unwrap().parent().unwrap();
    let mode =
        |p: &Path| std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions()) & 0o7777;
    assert_eq!(mode(data), 0o711, "the agent's data directory, above its default socket");
    assert_eq!(mode(socket.parent().unwrap()), 0o755);
    assert_eq!(mode(&socket), 0o777);
    dep.owner("interop");
    let uid = format!("unix:uid:{}", my_uid());
    let args = ["entry", "create", "--spiffe-id", ID, "--selector", &uid, "--parent", &agent_id, "--owner", "interop"];
    let out = dep.cli(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    every_client_against(&format!("unix://{}", socket.display()), &clients).await;
    drop(agent);
}

// ---- Requests written byte by byte, with each kind of `:authority` ----

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let [_, a, b, c] = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut f = vec![a, b, c, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK literal header field without indexing, literal name, plain strings.
fn literal(block: &mut Vec<u8>, name: &str, value: &str) {
    for s in [name, value] {
        assert!(s.len() < 127, "short strings only");
    }
    block.push(0);
    for s in [name, value] {
        block.push(u8::try_from(s.len()).unwrap());
        block.extend_from_slice(s.as_bytes());
    }
}

/// One FetchJWTSVID call on a fresh connection, with `authority` (or none);
/// returns the frames the server sent on stream 1 as (type, payload).
fn raw_fetch_jwt(socket_path: &str, authority: Option<&str>) -> Vec<(u8, Vec<u8>)> {
    let mut s = UnixStream::connect(socket_path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut block = Vec::new();
    literal(&mut block, ":method", "POST");
    literal(&mut block, ":scheme", "http");
    literal(&mut block, ":path", "/SpiffeWorkloadAPI/FetchJWTSVID");
    if let Some(a) = authority {
        literal(&mut block, ":authority", a);
    }
    literal(&mut block, "content-type", "application/grpc");
    literal(&mut block, "te", "trailers");
    literal(&mut block, "workload.spiffe.io", "true");
    // JWTSVIDRequest { audience: ["raw"] }, in a gRPC length-prefixed message.
    let msg = [0x0a, 3, b'r', b'a', b'w'];
    let mut data = vec![0, 0, 0, 0, 5];
    data.extend(msg);
    let mut out = PREFACE.to_vec();
    out.extend(frame(0x4, 0, 0, &[]));
    out.extend(frame(0x1, 0x4, 1, &block));
    out.extend(frame(0x0, 0x1, 1, &data));
    s.write_all(&out).unwrap();
    let mut got = Vec::new();
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed before the call ended; got {got:?}");
        buf.extend_from_slice(&chunk[..n]);
        while buf.len() >= 9 {
            let len = usize::from(buf[0]) << 16 | usize::from(buf[1]) << 8 | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            let (kind, flags) = (buf[3], buf[4]);
            let stream = u32::from_be_bytes([buf[5] & 0x7f, buf[6], buf[7], buf[8]]);
            let payload = buf[9..9 + len].to_vec();
            buf.drain(..9 + len);
            if kind == 0x4 && flags & 0x1 == 0 {
                s.write_all(&frame(0x4, 0x1, 0, &[])).unwrap(); // SETTINGS ACK
            }
            if stream != 1 {
                continue;
            }
            got.push((kind, payload));
            // RST_STREAM, or HEADERS with END_STREAM (the trailers), ends the call.
            if kind == 0x3 || (kind == 0x1 && flags & 0x1 != 0) {
                return got;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn any_authority_or_none_is_answered_not_reset() {
    let up = Up::start();
    up.create_entry(ID, &["--selector", &format!("unix:uid:{}", my_uid())]);
    let socket = up.socket();
    let path = socket.strip_prefix("unix://").unwrap();
    let percent_encoded = path.trim_start_matches('/').replace('/', "%2F");
    for (how, authority) in [
        ("grpc-c: percent-encoded path", Some(percent_encoded.as_str())),
        ("grpc-java: raw path", Some(path)),
        ("grpc-go and tonic: localhost", Some("localhost")),
        ("none", None),
    ] {
        let frames = raw_fetch_jwt(path, authority);
        let kinds: Vec<u8> = frames.iter().map(|f| f.0).collect();
        assert!(!kinds.contains(&0x3), "{how}: stream reset: {kinds:?}");
        assert_eq!(kinds.first(), Some(&0x1), "{how}: response headers first: {kinds:?}");
        let data: Vec<u8> = frames.iter().filter(|f| f.0 == 0x0).flat_map(|f| f.1.clone()).collect();
        // A JWT-SVID in the answer (its header starts `eyJ`), for our SPIFFE ID.
        let text = String::from_utf8_lossy(&data);
        assert!(text.contains(ID) && text.contains("eyJ"), "{how}: no JWT-SVID in the answer: {text:?}");
    }
}
