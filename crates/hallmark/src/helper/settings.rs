//! `hallmark helper` settings: flags and an optional TOML file, parsed and
//! checked in one place before anything runs. A flag overrides the file.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, bail};
use clap::Args;
use hallmark_core::SpiffeId;
use nix::sys::signal::Signal;
use serde::Deserialize;

/// Flags of `hallmark helper`.
#[derive(Args, Debug, Default)]
#[command(after_long_help = HELP_EXAMPLE)]
pub struct HelperArgs {
    /// TOML file with any of the settings below (flags given too win).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Workload API socket: unix:///path, unix:/path or /path (default: $SPIFFE_ENDPOINT_SOCKET).
    #[arg(long, env = "SPIFFE_ENDPOINT_SOCKET")]
    socket: Option<String>,
    /// Directory to write the files to (created if missing).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Certificate chain file name, leaf first, PEM [default: svid.pem].
    #[arg(long)]
    cert_file: Option<String>,
    /// Private key file name, PKCS#8 PEM, mode 0600 [default: svid.key].
    #[arg(long)]
    key_file: Option<String>,
    /// Trust bundle file name, PEM [default: bundle.pem].
    #[arg(long)]
    bundle_file: Option<String>,
    /// Also write the key and chain together to this file name (mode 0600),
    /// for software that wants one file; it changes in a single rename.
    #[arg(long)]
    combined_file: Option<String>,
    /// Which of this process's SVIDs to write (default: the default, first one).
    #[arg(long)]
    spiffe_id: Option<String>,
    /// Also keep a JWT-SVID for this audience in AUDIENCE.jwt (mode 0600),
    /// renewed at half its life; repeatable. The config file can name the file.
    #[arg(long = "jwt-audience")]
    jwt_audience: Vec<String>,
    /// Signal to send on every rotation to the process in --pid-file (HUP, USR1, ...).
    #[arg(long)]
    reload_signal: Option<String>,
    /// File holding the PID to signal (nginx: its `pid` directive).
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Command to run (with `sh -c`) after every rotation, once the files are in place.
    #[arg(long)]
    reload_cmd: Option<String>,
    /// Serve /live and /ready here (e.g. 127.0.0.1:8090). /ready is 200 only while
    /// valid files are in place. With it, the helper stays up when files expire
    /// (reporting 503) and keeps reconnecting; without it, it exits non-zero then.
    #[arg(long)]
    health_listen: Option<String>,
    /// Write the files once, run the reload, and exit (0 on success).
    #[arg(long)]
    once: bool,
}

const HELP_EXAMPLE: &str = "\
Files: DIR/svid.pem (chain), DIR/svid.key (0600), DIR/bundle.pem, optionally a combined file and
AUDIENCE.jwt files; each written to a temporary file in DIR and renamed into place.

The helper keeps a FetchX509SVID stream open and rewrites the files at every rotation, then signals
and/or runs the reload command. It reports each delivery to the agent, so `hallmark credential list`
shows `delivered_to=files:DIR`. When the agent is unreachable the files stay while valid and are
removed when they expire (fail closed); when the agent answers PermissionDenied they are removed at
once and the helper keeps asking.

Example (nginx):
  hallmark helper --dir /etc/nginx/svid --reload-signal HUP --pid-file /run/nginx.pid \\
      --health-listen 127.0.0.1:8090

Config file (--config helper.toml), same names as the flags:
  socket = \"unix:///run/hallmark/api.sock\"
  dir = \"/etc/nginx/svid\"
  combined_file = \"svid_combined.pem\"
  reload_signal = \"HUP\"
  pid_file = \"/run/nginx.pid\"
  health_listen = \"127.0.0.1:8090\"
  [[jwt]]
  audience = \"db\"
  file = \"db-token\"";

/// The TOML form; every key optional, unknown keys refused.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    socket: Option<String>,
    dir: Option<PathBuf>,
    cert_file: Option<String>,
    key_file: Option<String>,
    bundle_file: Option<String>,
    combined_file: Option<String>,
    spiffe_id: Option<String>,
    #[serde(default)]
    jwt: Vec<JwtConfig>,
    reload_signal: Option<String>,
    pid_file: Option<PathBuf>,
    reload_cmd: Option<String>,
    health_listen: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct JwtConfig {
    audience: String,
    file: Option<String>,
}

/// A JWT-SVID to keep on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtFile {
    /// Its audience.
    pub audience: String,
    /// File name in the directory.
    pub file: String,
}

/// Validated settings.
#[derive(Debug)]
pub struct Settings {
    /// Path of the Workload API socket.
    pub socket: PathBuf,
    /// Absolute directory the files go to.
    pub dir: PathBuf,
    /// File names in `dir`.
    pub cert_file: String,
    /// Key file name.
    pub key_file: String,
    /// Bundle file name.
    pub bundle_file: String,
    /// Combined key + chain file name.
    pub combined_file: Option<String>,
    /// Which SVID to write; `None`: the default one.
    pub spiffe_id: Option<SpiffeId>,
    /// JWT-SVIDs to keep.
    pub jwts: Vec<JwtFile>,
    /// Signal and PID file to notify at rotation.
    pub signal: Option<(Signal, PathBuf)>,
    /// Command to run at rotation.
    pub reload_cmd: Option<String>,
    /// Health endpoint address.
    pub health_listen: Option<String>,
    /// Write once and exit.
    pub once: bool,
}

/// A socket given as `unix:///path`, `unix:/path` or `/path`.
pub fn socket_path(s: &str) -> anyhow::Result<PathBuf> {
    let path = s.strip_prefix("unix://").or_else(|| s.strip_prefix("unix:")).unwrap_or(s);
    if !path.starts_with('/') {
        bail!("socket `{s}` must be unix:///absolute/path (or an absolute path)");
    }
    Ok(PathBuf::from(path))
}

/// A file name inside the directory: no separators, not `.` or `..`.
fn file_name(what: &str, name: String) -> anyhow::Result<String> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.chars().any(char::is_control) {
        bail!("{what} `{}` must be a plain file name inside --dir", name.escape_debug());
    }
    Ok(name)
}

/// The default file name for an audience's JWT-SVID: the audience with
/// anything but letters, digits, `.`, `-` and `_` replaced by `_`.
pub fn jwt_file_name(audience: &str) -> String {
    let safe: String =
        audience.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect();
    format!("{}.jwt", safe.trim_start_matches('.'))
}

/// `HUP`, `SIGHUP` or `hup` as a signal.
fn parse_signal(s: &str) -> anyhow::Result<Signal> {
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") { up } else { format!("SIG{up}") };
    Signal::from_str(&name).map_err(|_| anyhow::anyhow!("reload signal `{s}` is not a signal name (e.g. HUP, USR1)"))
}

impl Settings {
    /// Parses and checks everything: the file (if any), then the flags over it.
    pub fn new(args: HelperArgs) -> anyhow::Result<Self> {
        let file = match &args.config {
            Some(p) => {
                let text = std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
                toml::from_str::<FileConfig>(&text).map_err(|e| {
                    anyhow::anyhow!("{}: {}", p.display(), e.message().lines().next().unwrap_or("invalid TOML"))
                })?
            }
            None => FileConfig::default(),
        };
        Self::merge(args, file)
    }

    fn merge(a: HelperArgs, f: FileConfig) -> anyhow::Result<Self> {
        let socket = a
            .socket
            .or(f.socket)
            .context("no Workload API socket: set --socket, `socket` in the config file, or SPIFFE_ENDPOINT_SOCKET")?;
        let dir = a.dir.or(f.dir).context("no directory to write to: set --dir (or `dir` in the config file)")?;
        let dir = std::path::absolute(&dir).with_context(|| format!("--dir `{}`", dir.display()))?;
        let spiffe_id = a
            .spiffe_id
            .or(f.spiffe_id)
            .map(|s| SpiffeId::new(&s).map_err(|e| anyhow::anyhow!("--spiffe-id: {e}")))
            .transpose()?;
        let mut jwts: Vec<JwtFile> = Vec::new();
        let configured = f.jwt.into_iter().map(|j| (j.file.unwrap_or_else(|| jwt_file_name(&j.audience)), j.audience));
        let flagged = a.jwt_audience.into_iter().map(|aud| (jwt_file_name(&aud), aud));
        for (file, audience) in configured.chain(flagged) {
            hallmark_core::check_audience(&audience).map_err(|e| anyhow::anyhow!("JWT {e}"))?;
            if jwts.iter().any(|j| j.audience == audience) {
                continue;
            }
            jwts.push(JwtFile { audience, file: file_name("JWT file", file)? });
        }
        let cert_file = file_name("--cert-file", a.cert_file.or(f.cert_file).unwrap_or_else(|| "svid.pem".into()))?;
        let key_file = file_name("--key-file", a.key_file.or(f.key_file).unwrap_or_else(|| "svid.key".into()))?;
        let bundle_file =
            file_name("--bundle-file", a.bundle_file.or(f.bundle_file).unwrap_or_else(|| "bundle.pem".into()))?;
        let combined_file = a.combined_file.or(f.combined_file).map(|n| file_name("--combined-file", n)).transpose()?;
        let mut names: Vec<&str> = vec![&cert_file, &key_file, &bundle_file];
        names.extend(combined_file.as_deref());
        names.extend(jwts.iter().map(|j| j.file.as_str()));
        for (i, n) in names.iter().enumerate() {
            if names.iter().take(i).any(|m| m == n) {
                bail!("file name `{n}` is used twice; give each file its own name");
            }
        }
        let signal = match (a.reload_signal.or(f.reload_signal), a.pid_file.or(f.pid_file)) {
            (Some(s), Some(p)) => Some((parse_signal(&s)?, p)),
            (None, None) => None,
            _ => bail!("--reload-signal and --pid-file go together"),
        };
        let health_listen = a.health_listen.or(f.health_listen);
        if let Some(addr) = &health_listen {
            addr.parse::<std::net::SocketAddr>()
                .map_err(|_| anyhow::anyhow!("--health-listen `{addr}` must be IP:PORT (e.g. 127.0.0.1:8090)"))?;
        }
        Ok(Self {
            socket: socket_path(&socket)?,
            dir,
            cert_file,
            key_file,
            bundle_file,
            combined_file,
            spiffe_id,
            jwts,
            signal,
            reload_cmd: a.reload_cmd.or(f.reload_cmd).filter(|c| !c.trim().is_empty()),
            health_listen,
            once: a.once,
        })
    }

    /// Where deliveries are recorded as going.
    pub fn target(&self) -> String {
        format!("files:{}", self.dir.display())
    }
}

/// Reads a PID file: one positive number.
pub fn read_pid(path: &Path) -> anyhow::Result<i32> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read PID file {}", path.display()))?;
    text.trim().parse::<i32>().ok().filter(|p| *p > 0).with_context(|| {
        format!("PID file {} holds `{}`, not a process id", path.display(), text.trim().escape_debug())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> HelperArgs {
        HelperArgs { socket: Some("unix:///run/api.sock".into()), dir: Some("/tmp/svid".into()), ..Default::default() }
    }

    #[test]
    fn defaults_and_overrides() {
        let s = Settings::merge(args(), FileConfig::default()).unwrap();
        assert_eq!(s.socket, PathBuf::from("/run/api.sock"));
        assert_eq!(
            (s.cert_file.as_str(), s.key_file.as_str(), s.bundle_file.as_str()),
            ("svid.pem", "svid.key", "bundle.pem")
        );
        assert_eq!(s.target(), "files:/tmp/svid");
        let file: FileConfig = toml::from_str(
            "cert_file = \"a.pem\"\nreload_signal = \"hup\"\npid_file = \"/run/nginx.pid\"\n[[jwt]]\naudience = \"db\"\nfile = \"db-token\"\n",
        )
        .unwrap();
        let mut a = args();
        a.cert_file = Some("b.pem".into());
        a.jwt_audience = vec!["https://x.example/api".into(), "db".into()];
        let s = Settings::merge(a, file).unwrap();
        assert_eq!(s.cert_file, "b.pem", "a flag wins over the file");
        assert_eq!(s.signal, Some((Signal::SIGHUP, PathBuf::from("/run/nginx.pid"))));
        assert_eq!(
            s.jwts,
            vec![
                JwtFile { audience: "db".into(), file: "db-token".into() },
                JwtFile { audience: "https://x.example/api".into(), file: "https___x.example_api.jwt".into() },
            ]
        );
    }

    /// The error for the default flags changed by `edit`.
    fn refused(edit: impl Fn(&mut HelperArgs)) -> String {
        let mut a = args();
        edit(&mut a);
        Settings::merge(a, FileConfig::default()).unwrap_err().to_string()
    }

    #[test]
    fn bad_settings_are_named() {
        assert!(refused(|a| a.socket = Some("relative/api.sock".into())).contains("relative/api.sock"));
        assert!(refused(|a| a.cert_file = Some("../x.pem".into())).contains("../x.pem"));
        assert!(refused(|a| a.key_file = Some("svid.pem".into())).contains("used twice"));
        assert!(refused(|a| a.spiffe_id = Some("spiffe://Bad/x".into())).contains("--spiffe-id"));
        assert!(refused(|a| a.health_listen = Some("localhost".into())).contains("localhost"));
        assert!(refused(|a| a.pid_file = Some("/p".into())).contains("go together"));
        let e = refused(|a| {
            a.reload_signal = Some("NOPE".into());
            a.pid_file = Some("/p".into());
        });
        assert!(e.contains("NOPE"), "{e}");
        let e = Settings::merge(HelperArgs::default(), FileConfig::default()).unwrap_err().to_string();
        assert!(e.contains("SPIFFE_ENDPOINT_SOCKET"), "{e}");
        assert!(toml::from_str::<FileConfig>("colour = 1").is_err(), "unknown keys are refused");
    }
}
