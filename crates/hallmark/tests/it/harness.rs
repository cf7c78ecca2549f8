//! Starting and driving real `hallmark` processes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_hallmark")
}

/// Polls `f` until it returns `Some`, up to `secs`; fails the test with `what` otherwise.
pub fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed when dropped; its output goes to `log`.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(mut cmd: Command, log: &Path) -> Proc {
        let out = std::fs::File::create(log).unwrap();
        let err = out.try_clone().unwrap();
        let child = cmd.stdout(out).stderr(err).stdin(Stdio::null()).spawn().unwrap();
        Proc { child, log: log.to_owned() }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls `f` until it returns `Some`, up to `secs`. Fails at once if the
    /// process exits first, and either way the failure shows its log, so
    /// that a process that crashed or hung says which.
    pub fn wait_until<T>(&mut self, what: &str, secs: u64, mut f: impl FnMut(&Proc) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = f(self) {
                return v;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited ({status}) before {what}; its log:\n{}", self.log.display(), self.log());
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; {} so far:\n{}",
                self.log.display(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits up to `secs` for a line of the log starting with `prefix` and
    /// returns the rest of it (see [`Proc::wait_until`]).
    pub fn wait_for_line(&mut self, prefix: &str, secs: u64) -> String {
        self.wait_until(&format!("printing {prefix:?}"), secs, |p| {
            p.log().lines().find_map(|l| l.strip_prefix(prefix).map(str::to_owned))
        })
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `hallmark up` in a temporary directory.
pub struct Up {
    pub proc: Proc,
    pub dir: tempfile::TempDir,
    pub env: HashMap<String, String>,
}

impl Up {
    pub fn start() -> Up {
        Self::start_in(tempfile::tempdir().unwrap())
    }

    /// Starts (or resumes) `up` on an existing directory.
    pub fn start_in(dir: tempfile::TempDir) -> Up {
        Self::start_with(dir, &[])
    }

    /// [`Up::start_in`] with more `up` flags.
    pub fn start_with(dir: tempfile::TempDir, extra: &[&str]) -> Up {
        let data = dir.path().join("data");
        let _ = std::fs::remove_file(data.join("env"));
        let mut cmd = Command::new(bin());
        cmd.args(["up", "--data-dir"]).arg(&data).args(["--admin-listen", "127.0.0.1:0"]).args(extra);
        let mut proc = Proc::spawn(cmd, &dir.path().join(format!("up-{}.log", rand_tag())));
        let env_file = data.join("env");
        let text = proc.wait_until("writing its env file", 60, |_| {
            std::fs::read_to_string(&env_file).ok().filter(|t| t.lines().count() >= 3)
        });
        let env = parse_env(&text);
        Up { proc, dir, env }
    }

    pub fn socket(&self) -> String {
        self.env["SPIFFE_ENDPOINT_SOCKET"].clone()
    }

    /// Runs a CLI command with this deployment's environment.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin()).args(args).envs(&self.env).output().unwrap()
    }

    /// Runs a CLI command that must succeed with `--json`; returns its JSON.
    pub fn cli_json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.cli(&all);
        assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Creates an owner if it does not exist yet.
    pub fn ensure_owner(&self, name: &str) {
        let out = self.cli(&["owner", "create", name, "--contact", &format!("{name}@example.org")]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() || err.contains("already exists"), "{err}");
    }

    pub fn create_entry(&self, spiffe_id: &str, extra: &[&str]) -> Value {
        self.ensure_owner("team-test");
        let mut args = vec!["entry", "create", "--spiffe-id", spiffe_id, "--owner", "team-test"];
        args.extend_from_slice(extra);
        self.cli_json(&args)
    }

    pub async fn client(&self) -> spiffe::WorkloadApiClient {
        spiffe::WorkloadApiClient::connect_to(self.socket()).await.unwrap()
    }
}

/// The variables `hallmark up`'s env file sets; `"$(cat 'FILE')"` is read
/// from FILE, as the shell would.
pub fn parse_env(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = match v.strip_prefix("\"$(cat '").and_then(|f| f.strip_suffix("')\"")) {
                Some(file) => std::fs::read_to_string(file.replace(r"'\''", "'")).unwrap_or_default().trim().to_owned(),
                None => match v.strip_prefix('\'').and_then(|q| q.strip_suffix('\'')) {
                    Some(quoted) => quoted.replace(r"'\''", "'"),
                    None => v.to_owned(),
                },
            };
            (k.to_owned(), v)
        })
        .collect()
}

pub fn rand_tag() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// The value of the Prometheus sample `name` in a `/metrics` body.
pub fn metric(body: &[u8], name: &str) -> Option<i64> {
    String::from_utf8_lossy(body)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")).map(|v| v.trim().parse().unwrap()))
}

pub fn my_uid() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap().split_whitespace().next().unwrap().to_owned()
}

pub fn sha256_file(p: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(p).unwrap()))
}

/// A raw Workload API client (our generated code) for requests the `spiffe`
/// crate will not make, such as one without the security header.
pub async fn raw_client(
    socket: &str,
) -> hallmark_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient<tonic::transport::Channel> {
    hallmark_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient::new(raw_channel(socket).await)
}

/// A gRPC channel to the agent's socket (`unix:///path`), for any service served there.
pub async fn raw_channel(socket: &str) -> tonic::transport::Channel {
    let path = socket.strip_prefix("unix://").unwrap().to_owned();
    tonic::transport::Endpoint::from_static("http://workload")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .unwrap()
}

/// A request carrying the Workload API security header.
pub fn with_security_header<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("workload.spiffe.io", "true".parse().unwrap());
    r
}

/// A port free on 127.0.0.1 (for a moment).
pub fn free_local_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Checks every X509-SVID rule of the SPIFFE standard on a leaf and its
/// issuer, and that the leaf does not outlive the issuer.
pub fn check_x509_svid_rules(leaf_der: &[u8], ca_der: &[u8], want_id: &str) {
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    let (_, leaf) = x509_parser::parse_x509_certificate(leaf_der).unwrap();
    let mut uris = Vec::new();
    let mut saw_ku = false;
    let mut eku_ok = false;
    let mut san_critical = false;
    for ext in leaf.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                san_critical = ext.critical;
                for n in &san.general_names {
                    if let GeneralName::URI(u) = n {
                        uris.push(u.to_string());
                    }
                }
            }
            ParsedExtension::BasicConstraints(bc) => assert!(!bc.ca, "leaf must have cA=false"),
            ParsedExtension::KeyUsage(ku) => {
                assert!(ext.critical, "key usage must be critical");
                assert!(ku.digital_signature(), "digitalSignature must be set");
                assert!(!ku.key_cert_sign() && !ku.crl_sign(), "keyCertSign/cRLSign must not be set");
                saw_ku = true;
            }
            ParsedExtension::ExtendedKeyUsage(eku) => eku_ok = eku.server_auth && eku.client_auth,
            _ => {}
        }
    }
    assert_eq!(uris, vec![want_id.to_owned()], "exactly one URI SAN with the SPIFFE ID");
    assert!(saw_ku, "key usage extension present");
    assert!(eku_ok, "EKU serverAuth and clientAuth");
    if leaf.subject().iter().next().is_none() {
        assert!(san_critical, "empty subject requires a critical SAN");
    }
    let (_, ca) = x509_parser::parse_x509_certificate(ca_der).unwrap();
    assert!(ca.is_ca(), "signing certificate is a CA");
    let ca_ku = ca.key_usage().unwrap().unwrap().value;
    assert!(ca_ku.key_cert_sign(), "signing certificate has keyCertSign");
    for ext in ca.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            for n in &san.general_names {
                if let GeneralName::URI(u) = n {
                    assert!(!u.trim_start_matches("spiffe://").contains('/'), "CA SPIFFE ID has no path");
                }
            }
        }
    }
    assert!(leaf.validity().not_after <= ca.validity().not_after, "SVID never outlives its CA");
}

/// Runs `openssl verify` of `leaf` (PEM chain file) against `bundle` (PEM).
pub fn openssl_verify(bundle: &Path, leaf: &Path) {
    let out = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(bundle)
        .arg(leaf)
        .output()
        .expect("openssl is installed by the test script");
    assert!(
        out.status.success(),
        "openssl verify failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// True for a Workload API PermissionDenied as the `spiffe` crate reports it
/// (it names the "no identity issued" case `NoIdentityIssued`).
pub fn denied(err_debug: &str) -> bool {
    err_debug.contains("PermissionDenied") || err_debug.contains("NoIdentityIssued")
}

/// A fresh PostgreSQL database (one helper for every crate's tests).
pub use hallmark_testkit::postgres_db;

/// The serial number (hex) of a DER certificate, as the inventory names it.
pub fn serial_of(der: &[u8]) -> String {
    let (_, c) = x509_parser::parse_x509_certificate(der).unwrap();
    hex::encode(c.raw_serial())
}

/// One HTTP/1.1 GET; returns (status, body bytes).
pub fn http_get(url: &str) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (authority, path) = rest.split_once('/').map(|(a, p)| (a, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let mut s = std::net::TcpStream::connect(authority).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut body = buf[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else { return out };
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 4 + n..];
    }
}

/// The serials the active X.509 authority's CRL lists.
pub fn crl_serials(up: &Up) -> Vec<String> {
    use x509_parser::prelude::FromDer;
    let ca = up.cli_json(&["ca", "show"])["authorities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "x509" && a["state"] == "active")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, der) = http_get(&format!("{}/v1/crl/{ca}", up.env["HALLMARK_SERVER"]));
    assert_eq!(status, 200);
    let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(&der).unwrap();
    crl.iter_revoked_certificates().map(|r| hex::encode(r.raw_serial())).collect()
}
