//! `hallmark login`: a person signs in at their organisation's OpenID
//! provider and receives a short-lived X.509 certificate for their SPIFFE
//! ID (issue 19; the wire contract is the admin API's `/v1/login/start`
//! and `/v1/login`).
//!
//! The steps, numbered as in [`run`]:
//! 1. `POST /v1/login/start`: the Hallmark server names the provider, the
//!    client ID and scopes, and a nonce it remembers for this login.
//! 2. The provider's discovery document, over HTTPS.
//! 3. Sign-in, by the authorization code flow with PKCE through a loopback
//!    redirect ([`loopback`]) or by the device flow ([`device`]); the
//!    result is an ID token carrying the server's nonce.
//! 4. A P-256 key and a CSR made here; the key never leaves this machine.
//! 5. `POST /v1/login` with the ID token and the CSR; the server checks the
//!    token (issuer, audience, signature, nonce, expiry) and decides.
//! 6. The answer checked against the CSR, and `key.pem`, `cert.pem` and
//!    `bundle.pem` replaced together in the output directory.
//! 7. A summary (or `--json`).
//!
//! What is secret here, and where it goes: the ID token goes only to the
//! Hallmark server; the authorization code and PKCE verifier only to the
//! provider's token endpoint; the private key only into a file of mode 0600
//! created with that mode. None is printed or logged (they are held as
//! [`oidc::Secret`], whose `Debug` hides them). The nonce comes from the
//! server and is single use, so an ID token captured from another login
//! (or another application of the same provider) cannot be replayed here.

mod device;
mod loopback;
mod oidc;

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use clap::Args;
use hallmark_core::{Ttl, now_unix};
use hyper::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::Conn;
use crate::client::Client;
use oidc::{AuthRequest, Pkce, Provider, Secret};

/// The longest a sign-in may take, whatever the provider allows.
const SIGN_IN_LIMIT: Duration = Duration::from_secs(10 * 60);

/// `hallmark login --help`: the flows, for the person running it.
pub const LONG_ABOUT: &str = "\
Sign in as a person at your organisation's identity provider (OpenID Connect) and receive a \
short-lived X.509 certificate for your SPIFFE ID, written to --out: key.pem (mode 0600; made on \
this machine and never sent anywhere), cert.pem (the certificate chain, yours first) and \
bundle.pem (the trust domain's CA certificates). Use them as a client certificate, e.g. \
`curl --cert cert.pem --key key.pem --cacert bundle.pem URL`.

No admin token is needed: the identity provider's ID token proves who you are. The Hallmark server \
(--server, HALLMARK_SERVER) names the provider and gives this login a one-time nonce; then you sign \
in by one of two flows:

Browser (authorization code with PKCE, RFC 7636 and RFC 8252): the default when a browser can be \
opened: $BROWSER (one program, given the URL), else xdg-open when $DISPLAY or $WAYLAND_DISPLAY is \
set. hallmark listens on 127.0.0.1 on a random port for the provider's redirect, and prints the \
sign-in URL to stderr in case no browser opens.

Device (RFC 8628): with --device, or when no browser can be opened (over SSH, in a container). \
hallmark prints `To sign in, open URL and enter the code CODE` to stderr; open the URL on any \
device, check the code and sign in, and hallmark continues by itself.

Either way the sign-in must be completed within 10 minutes (sooner if the provider or the server \
says so). The ID token is sent only to the Hallmark server and is never printed or stored. Running \
login again replaces the three files.";

/// Flags of `hallmark login`.
#[derive(Args)]
pub struct LoginArgs {
    /// Which of the server's identity providers for people to sign in at
    /// [default: the only one configured].
    #[arg(long, value_name = "NAME")]
    issuer: Option<String>,
    /// Use the device flow (a URL and a code to enter on any device) even
    /// when a browser could be opened here.
    #[arg(long)]
    device: bool,
    /// How long the certificate should live (e.g. 1h); the server caps it
    /// [default: the server's, 8h unless configured].
    #[arg(long, value_name = "DURATION")]
    ttl: Option<String>,
    /// Ask for break-glass (emergency) access; the server decides whether
    /// it is allowed, and records it.
    #[arg(long)]
    break_glass: bool,
    /// PEM file of the CA certificate(s) the identity provider's HTTPS
    /// certificate chains to; when given, only these are trusted [default:
    /// the public web roots compiled into hallmark].
    #[arg(long, value_name = "FILE")]
    issuer_ca: Option<PathBuf>,
    /// Directory for key.pem, cert.pem and bundle.pem, created with mode
    /// 0700 [default: $XDG_CONFIG_HOME/hallmark/login, or
    /// $HOME/.config/hallmark/login].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// What `hallmark login` reads from its environment, read once at the start.
struct Environment {
    /// `$BROWSER`: a program to open the sign-in URL with.
    browser: Option<OsString>,
    /// `$DISPLAY` or `$WAYLAND_DISPLAY` is set: `xdg-open` can open a browser.
    display: bool,
    xdg_config_home: Option<PathBuf>,
    home: Option<PathBuf>,
}

impl Environment {
    fn from_process() -> Self {
        let set = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        Self {
            browser: set("BROWSER"),
            display: set("DISPLAY").is_some() || set("WAYLAND_DISPLAY").is_some(),
            xdg_config_home: set("XDG_CONFIG_HOME").map(PathBuf::from),
            home: set("HOME").map(PathBuf::from),
        }
    }

    /// Where the files go without `--out`. A relative `XDG_CONFIG_HOME` is
    /// ignored, as the XDG Base Directory specification says.
    fn default_out_dir(&self) -> anyhow::Result<PathBuf> {
        let base = match (&self.xdg_config_home, &self.home) {
            (Some(xdg), _) if xdg.is_absolute() => xdg.clone(),
            (_, Some(home)) => home.join(".config"),
            _ => bail!("neither XDG_CONFIG_HOME nor HOME is set: pass --out DIR"),
        };
        Ok(base.join("hallmark").join("login"))
    }

    /// Whether a browser can be opened on this machine.
    fn can_open_browser(&self) -> bool {
        self.browser.is_some() || self.display
    }
}

/// `POST /v1/login/start`'s answer.
#[derive(Deserialize)]
struct Start {
    login_id: String,
    issuer_name: String,
    issuer: String,
    client_id: String,
    scopes: Vec<String>,
    nonce: String,
    expires_at: i64,
    /// The longest certificate the server gives a person, when it says.
    #[serde(default)]
    max_ttl: Option<String>,
}

/// `POST /v1/login`'s request.
#[derive(Serialize)]
struct LoginRequest<'a> {
    login_id: &'a str,
    /// The ID token, as the provider issued it.
    id_token: &'a str,
    /// The CSR, DER in standard base64.
    csr: String,
    /// Left out when not asked for: the server's default applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl: Option<&'a str>,
    break_glass: bool,
}

/// The fields of `POST /v1/login`'s answer this command checks; the whole
/// answer is printed with `--json`.
#[derive(Deserialize)]
struct Issued {
    spiffe_id: String,
    not_after: i64,
    certificate_chain: String,
    trust_bundle: String,
    #[serde(default)]
    break_glass: bool,
}

/// `hallmark login`.
pub async fn run(args: LoginArgs, conn: &Conn) -> anyhow::Result<()> {
    let env = Environment::from_process();
    // Everything that can be checked before the person signs in is, so a
    // mistake does not cost them a sign-in.
    if let Some(ttl) = &args.ttl {
        Ttl::parse(ttl).context("--ttl")?;
    }
    let out = match &args.out {
        Some(dir) => dir.clone(),
        None => env.default_out_dir()?,
    };
    prepare_out_dir(&out)?;
    let http = oidc::http_client(args.issuer_ca.as_deref())?;
    // Never the admin token: this route needs none, and a person's login
    // must not carry an operator's credential along.
    let server = Client::new(conn.server.clone(), None)?;

    // 1. The server names the provider and this login's nonce.
    let start = start(&server, args.issuer.as_deref()).await?;

    // 2. The provider's endpoints.
    let hint =
        if args.issuer_ca.is_none() { " (for a private identity provider, pass its CA with --issuer-ca)" } else { "" };
    let provider = Provider::discover(http, &start.issuer, hint).await?;

    // 3. Sign-in, within the server's login lifetime and our own limit.
    // The server's expiry is read through our clock; kept to between one
    // and ten minutes so that clock skew neither ends the wait at once nor
    // stretches it.
    let server_left = u64::try_from(start.expires_at.saturating_sub(now_unix())).unwrap_or(0).clamp(60, 600);
    let deadline = Instant::now() + SIGN_IN_LIMIT.min(Duration::from_secs(server_left));
    note_ttl_cap(args.ttl.as_deref(), start.max_ttl.as_deref());
    let scope = start.scopes.join(" ");
    // The device flow when asked for, or when no browser can be opened;
    // without one at the provider, the URL is printed for a browser the
    // person finds themselves.
    let can_open = env.can_open_browser();
    let id_token = match provider.device_authorization_endpoint.clone() {
        Some(endpoint) if args.device || !can_open => {
            device::sign_in(&provider, &endpoint, &start.client_id, &scope, &start.nonce, deadline).await?
        }
        None if args.device => bail!(
            "the identity provider `{}` offers no device flow (no device_authorization_endpoint); run without --device",
            start.issuer
        ),
        _ => browser_sign_in(&provider, &start, &scope, &env, can_open, deadline).await?,
    };

    // 4. The key is made here and stays here.
    let key = hallmark_ca::keys::new_key_and_csr(None)?;

    // 5. The server checks the ID token and issues.
    let request = LoginRequest {
        login_id: &start.login_id,
        id_token: id_token.expose(),
        csr: base64::engine::general_purpose::STANDARD.encode(&key.csr_der),
        ttl: args.ttl.as_deref(),
        break_glass: args.break_glass,
    };
    let body = serde_json::to_value(&request)?;
    let reply = server.send(Method::POST, "/v1/login", Some(&body), None).await?;
    let answer = reply.json().context("the Hallmark server refused the login")?;
    let issued: Issued =
        serde_json::from_value(answer.clone()).context("the Hallmark server's login answer is not as expected")?;

    // 6. Only a certificate for our key and the ID the server names is kept.
    check_issued(&issued, &key.csr_der)?;
    let files = OutFiles::new(&out);
    let key_pem = pem::encode(&pem::Pem::new("PRIVATE KEY", key.key_pkcs8.clone()));
    replace_together(
        &out,
        &[
            (KEY_FILE, key_pem.as_bytes(), SECRET_MODE),
            (CERT_FILE, with_final_newline(&issued.certificate_chain).as_bytes(), PUBLIC_MODE),
            (BUNDLE_FILE, with_final_newline(&issued.trust_bundle).as_bytes(), PUBLIC_MODE),
        ],
    )?;

    // 7. The answer without its PEM bodies (they are in the files).
    let mut shown = answer;
    if let Some(map) = shown.as_object_mut() {
        map.remove("certificate_chain");
        map.remove("trust_bundle");
        map.insert("issuer_name".into(), json!(start.issuer_name));
        map.insert("key_file".into(), json!(files.key));
        map.insert("cert_file".into(), json!(files.cert));
        map.insert("bundle_file".into(), json!(files.bundle));
    }
    crate::commands::emit(conn, &shown, |_| {
        println!("Signed in at {} as {}", start.issuer_name, issued.spiffe_id);
        println!("Valid until {}", hallmark_core::time::rfc3339_relative(issued.not_after, now_unix()));
        if issued.break_glass {
            println!("Break-glass: yes");
        }
        println!("  key     {}  (private, mode 0600)", files.key.display());
        println!("  cert    {}", files.cert.display());
        println!("  bundle  {}", files.bundle.display());
    })
}

/// Step 1: `POST /v1/login/start`.
async fn start(server: &Client, issuer: Option<&str>) -> anyhow::Result<Start> {
    let body = match issuer {
        Some(name) => json!({ "issuer": name }),
        None => json!({}),
    };
    let reply = server.send(Method::POST, "/v1/login/start", Some(&body), None).await?;
    // A server without the route answers 404 with no JSON error.
    if reply.status == StatusCode::NOT_FOUND && serde_json::from_slice::<Value>(&reply.body).is_err() {
        bail!(
            "the Hallmark server at {} has no login route (/v1/login/start): is it older than `hallmark login`?",
            server.authority()
        );
    }
    let answer = reply.json().context("the Hallmark server cannot start a login")?;
    serde_json::from_value(answer).context("the Hallmark server's /v1/login/start answer is not as expected")
}

/// Says so before the sign-in when `--ttl` asks for more than the server
/// gives: it caps the lifetime rather than refusing, and the person should
/// not learn it only from the expiry printed at the end.
fn note_ttl_cap(asked: Option<&str>, max: Option<&str>) {
    let (Some(asked), Some(max)) = (asked, max) else { return };
    if let (Ok(a), Ok(m)) = (Ttl::parse(asked), Ttl::parse(max))
        && a.secs() > m.secs()
    {
        eprintln!(
            "note: --ttl {asked} is more than this server gives a person ({max}); the certificate will live {max}"
        );
    }
}

/// Step 3 by the browser: the authorization code flow with PKCE and a
/// loopback redirect. The URL is always printed, and opened when a browser
/// can be (`can_open`).
async fn browser_sign_in(
    provider: &Provider,
    start: &Start,
    scope: &str,
    env: &Environment,
    can_open: bool,
    deadline: Instant,
) -> anyhow::Result<Secret> {
    let loopback = loopback::Loopback::bind().await?;
    let redirect_uri = loopback.redirect_uri().to_owned();
    let pkce = Pkce::new()?;
    let state = oidc::random_token(32)?;
    let url = provider.authorization_url(&AuthRequest {
        client_id: &start.client_id,
        redirect_uri: &redirect_uri,
        scope,
        state: &state,
        nonce: &start.nonce,
        code_challenge: &pkce.challenge,
    });
    if can_open {
        eprintln!("Opening a browser to sign in at {}. If none opens, visit:\n  {url}", start.issuer_name);
        open_browser(env, &url);
    } else {
        eprintln!(
            "No browser can be opened here and the identity provider has no device flow. Visit this URL in a \
             browser on this machine (the provider redirects to {redirect_uri}):\n  {url}"
        );
    }
    let expect = loopback::Expect { state, issuer: provider.issuer.clone(), require_iss: provider.iss_in_response };
    let code = loopback.wait(expect, deadline).await?;
    provider.redeem_code(&start.client_id, &code, &redirect_uri, &pkce.verifier).await
}

/// Starts `$BROWSER URL`, else `xdg-open URL`, without waiting for it. Its
/// output goes to stderr: stdout is this command's answer (`--json`).
fn open_browser(env: &Environment, url: &str) {
    let program = env.browser.clone().unwrap_or_else(|| "xdg-open".into());
    let to_stderr =
        || std::io::stderr().as_fd().try_clone_to_owned().map(Stdio::from).unwrap_or_else(|_| Stdio::null());
    let spawned = tokio::process::Command::new(&program)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(to_stderr())
        .stderr(to_stderr())
        .spawn();
    if let Err(e) = spawned {
        eprintln!(
            "warning: cannot start the browser `{}`: {e}; open the URL above yourself",
            program.to_string_lossy()
        );
    }
}

/// Step 6: the chain's leaf must hold the key of our CSR and name the
/// SPIFFE ID the server reports; the bundle must hold certificates.
fn check_issued(issued: &Issued, csr_der: &[u8]) -> anyhow::Result<()> {
    use x509_parser::prelude::FromDer;
    let chain = hallmark_ca::svid::pem_certs(&issued.certificate_chain).context("certificate_chain")?;
    hallmark_ca::svid::pem_certs(&issued.trust_bundle).context("trust_bundle")?;
    let leaf_der = chain.first().context("certificate_chain is empty")?;
    let leaf = hallmark_ca::svid::parse_leaf(leaf_der).context("the issued certificate")?;
    if leaf.spiffe_id.as_str() != issued.spiffe_id {
        bail!("the issued certificate names `{}`, not `{}` as the server says", leaf.spiffe_id, issued.spiffe_id);
    }
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(leaf_der)
        .map_err(|e| anyhow::anyhow!("the issued certificate: {e}"))?;
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(csr_der)
        .map_err(|e| anyhow::anyhow!("our own CSR: {e}"))?;
    if cert.public_key().raw != csr.certification_request_info.subject_pki.raw {
        bail!("the issued certificate is not for the key made by this login; nothing was written");
    }
    Ok(())
}

/// The file names in the output directory.
const KEY_FILE: &str = "key.pem";
const CERT_FILE: &str = "cert.pem";
const BUNDLE_FILE: &str = "bundle.pem";
/// Mode of the private key file.
const SECRET_MODE: u32 = 0o600;
/// Mode of the certificate files.
const PUBLIC_MODE: u32 = 0o644;

/// The three files' paths.
struct OutFiles {
    key: PathBuf,
    cert: PathBuf,
    bundle: PathBuf,
}

impl OutFiles {
    fn new(dir: &Path) -> Self {
        Self { key: dir.join(KEY_FILE), cert: dir.join(CERT_FILE), bundle: dir.join(BUNDLE_FILE) }
    }
}

/// Creates `dir` (mode 0700) if needed, and refuses one that another user
/// owns or may write, where the key could be swapped or read.
fn prepare_out_dir(dir: &Path) -> anyhow::Result<()> {
    hallmark_ca::keys::check_trusted_path(dir).context("--out")?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    hallmark_ca::keys::check_trusted_path(dir).context("--out")?;
    Ok(())
}

/// Replaces the files of `dir` as one set: each is first written in full to
/// a hidden temporary file (created with its final mode, so a key is never
/// readable by others, not even for a moment) and flushed; only then are
/// they renamed over the old ones, one right after the other, and the
/// directory flushed. A failure before the renames leaves the old set
/// untouched.
fn replace_together(dir: &Path, files: &[(&str, &[u8], u32)]) -> anyhow::Result<()> {
    let temp = |name: &str| dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let stage = |name: &str, bytes: &[u8], mode: u32| -> std::io::Result<()> {
        let path = temp(name);
        let _ = std::fs::remove_file(&path);
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&path)?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    let cleanup = || {
        for (name, _, _) in files {
            let _ = std::fs::remove_file(temp(name));
        }
    };
    for (name, bytes, mode) in files {
        if let Err(e) = stage(name, bytes, *mode) {
            cleanup();
            return Err(e).with_context(|| format!("cannot write {}", dir.join(name).display()));
        }
    }
    for (name, _, _) in files {
        if let Err(e) = std::fs::rename(temp(name), dir.join(name)) {
            cleanup();
            return Err(e).with_context(|| format!("cannot replace {}", dir.join(name).display()));
        }
    }
    std::fs::File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("cannot flush {}", dir.display()))
}

fn with_final_newline(pem: &str) -> String {
    if pem.ends_with('\n') { pem.to_owned() } else { format!("{pem}\n") }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn env(xdg: Option<&str>, home: Option<&str>) -> Environment {
        Environment {
            browser: None,
            display: false,
            xdg_config_home: xdg.map(PathBuf::from),
            home: home.map(PathBuf::from),
        }
    }

    #[test]
    fn default_directory_follows_xdg() {
        let dir = |e: Environment| e.default_out_dir().map(|p| p.display().to_string());
        assert_eq!(dir(env(Some("/x/cfg"), Some("/home/a"))).unwrap(), "/x/cfg/hallmark/login");
        assert_eq!(dir(env(Some("relative"), Some("/home/a"))).unwrap(), "/home/a/.config/hallmark/login");
        assert_eq!(dir(env(None, Some("/home/a"))).unwrap(), "/home/a/.config/hallmark/login");
        assert!(dir(env(None, None)).unwrap_err().to_string().contains("--out"));
    }

    #[test]
    fn files_are_replaced_as_a_set_with_their_modes() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("a").join("login");
        prepare_out_dir(&dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        for round in ["one", "two"] {
            replace_together(&dir, &[(KEY_FILE, round.as_bytes(), SECRET_MODE), (CERT_FILE, b"cert", PUBLIC_MODE)])
                .unwrap();
        }
        assert_eq!(std::fs::read(dir.join(KEY_FILE)).unwrap(), b"two");
        assert_eq!((mode(&dir.join(KEY_FILE)), mode(&dir.join(CERT_FILE))), (0o600, 0o644));
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2, "no temporary file left: {names:?}");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(prepare_out_dir(&dir).unwrap_err().to_string().contains("--out"));
    }

    /// A chain and bundle as a server would answer: a test CA (rcgen, so
    /// that the test does not depend on how the server signs) certifying the
    /// CSR's key for `id` with a person's certificate profile.
    fn issue(csr_der: &[u8], id: &str) -> (String, String) {
        use rcgen::{
            BasicConstraints, CertificateParams, CertificateSigningRequestParams, ExtendedKeyUsagePurpose, IsCa,
            Issuer, KeyPair, KeyUsagePurpose, SanType,
        };
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::from_ca_cert_der(ca.der(), &ca_key).unwrap();
        let mut csr = CertificateSigningRequestParams::from_der(&csr_der.to_vec().into()).unwrap();
        csr.params.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
        csr.params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        csr.params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let leaf = csr.signed_by(&issuer).unwrap();
        (leaf.pem(), ca.pem())
    }

    #[test]
    fn issued_certificates_must_be_for_our_key_and_id() {
        let ours = hallmark_ca::keys::new_key_and_csr(None).unwrap();
        let other = hallmark_ca::keys::new_key_and_csr(None).unwrap();
        let (chain, bundle) = issue(&ours.csr_der, "spiffe://example.org/human/example.com/alice");
        let issued = |id: &str, chain: &str| Issued {
            spiffe_id: id.into(),
            not_after: 0,
            certificate_chain: chain.into(),
            trust_bundle: bundle.clone(),
            break_glass: false,
        };
        check_issued(&issued("spiffe://example.org/human/example.com/alice", &chain), &ours.csr_der).unwrap();
        let wrong_id = check_issued(&issued("spiffe://example.org/human/example.com/bob", &chain), &ours.csr_der);
        assert!(wrong_id.unwrap_err().to_string().contains("not `spiffe://example.org/human/example.com/bob`"));
        let wrong_key = check_issued(&issued("spiffe://example.org/human/example.com/alice", &chain), &other.csr_der);
        assert!(wrong_key.unwrap_err().to_string().contains("not for the key"));
        assert!(check_issued(&issued("spiffe://example.org/human/example.com/alice", ""), &ours.csr_der).is_err());
    }
}
