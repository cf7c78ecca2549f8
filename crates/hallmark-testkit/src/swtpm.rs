//! Software TPMs for tests: `swtpm` instances manufactured by `swtpm_setup`
//! with EK certificates from a local CA (`swtpm_localca`) made in a
//! temporary directory, so nothing outside it is touched. Fails, never
//! skips, when the tools are missing: the test runner installs them.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What to install when a tool is missing.
pub const PACKAGES: &str = "install the Debian packages `swtpm`, `swtpm-tools` and `libtss2-tcti-swtpm0` (apt-get install swtpm swtpm-tools libtss2-tcti-swtpm0)";

/// Fails the test, naming the packages, when a swtpm tool is missing.
pub fn require_tools() {
    for tool in ["swtpm", "swtpm_setup", "swtpm_localca"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        assert!(found, "`{tool}` is not installed: the TPM tests need a software TPM; {PACKAGES}");
    }
}

/// A local EK CA (swtpm_localca's state) in a temporary directory, shared by
/// the TPMs one test manufactures.
pub struct LocalCa {
    dir: tempfile::TempDir,
}

impl LocalCa {
    /// A fresh CA directory (the CA itself is made with the first TPM).
    #[expect(clippy::new_without_default, reason = "it writes files: not a default")]
    pub fn new() -> Self {
        require_tools();
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        std::fs::create_dir(&ca).unwrap();
        let d = ca.display();
        std::fs::write(
            dir.path().join("swtpm-localca.conf"),
            format!(
                "statedir = {d}\nsigningkey = {d}/signkey.pem\nissuercert = {d}/issuercert.pem\ncertserial = {d}/certserial\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("swtpm-localca.options"),
            "--platform-manufacturer Hallmark\n--platform-version 2.1\n--platform-model test\n",
        )
        .unwrap();
        let t = dir.path().display();
        std::fs::write(
            dir.path().join("swtpm_setup.conf"),
            format!(
                "create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = {t}/swtpm-localca.conf\ncreate_certs_tool_options = {t}/swtpm-localca.options\nactive_pcr_banks = sha256\n"
            ),
        )
        .unwrap();
        Self { dir }
    }

    /// A directory holding only the CA's certificates (issuer and root), the
    /// verifier's `ek_ca_dir`. Valid once a TPM was manufactured.
    pub fn trust_dir(&self) -> PathBuf {
        let trust = self.dir.path().join("trust");
        if !trust.exists() {
            std::fs::create_dir(&trust).unwrap();
            for f in ["issuercert.pem", "swtpm-localca-rootca-cert.pem"] {
                std::fs::copy(self.dir.path().join("ca").join(f), trust.join(f)).unwrap();
            }
        }
        trust
    }

    /// Manufactures a TPM (EK, EK certificate signed by this CA) and starts it.
    pub fn tpm(&self, name: &str) -> Swtpm {
        let state = self.dir.path().join(name);
        std::fs::create_dir(&state).unwrap();
        let out = Command::new("swtpm_setup")
            .args(["--tpm2", "--create-ek-cert", "--create-platform-cert", "--tpmstate"])
            .arg(&state)
            .arg("--config")
            .arg(self.dir.path().join("swtpm_setup.conf"))
            .output()
            .unwrap_or_else(|e| panic!("running swtpm_setup: {e}; {PACKAGES}"));
        assert!(
            out.status.success(),
            "swtpm_setup failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Swtpm::start(&state)
    }
}

/// A running `swtpm`, killed on drop.
pub struct Swtpm {
    child: Child,
    port: u16,
}

impl Swtpm {
    /// Starts swtpm on TPM state `state` (already manufactured).
    pub fn start(state: &Path) -> Self {
        // swtpm's TCTI wants the control port right after the command port.
        for _ in 0..20 {
            let Some(port) = free_port_pair() else { continue };
            let mut child = Command::new("swtpm")
                .args(["socket", "--tpm2", "--flags", "not-need-init,startup-clear", "--tpmstate"])
                .arg(format!("dir={}", state.display()))
                .arg("--server")
                .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
                .arg("--ctrl")
                .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("starting swtpm: {e}; {PACKAGES}"));
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    break; // lost the ports to someone else: try others
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Self { child, port };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("swtpm did not start");
    }

    /// The TCTI that reaches it.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two consecutive free ports on the loopback, the first returned.
fn free_port_pair() -> Option<u16> {
    let a = TcpListener::bind("127.0.0.1:0").ok()?;
    let port = a.local_addr().ok()?.port();
    let _b = TcpListener::bind(("127.0.0.1", port.checked_add(1)?)).ok()?;
    Some(port)
}
