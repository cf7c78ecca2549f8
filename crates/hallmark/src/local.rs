//! Hallmark processes started on this machine by `hallmark drill` and
//! `hallmark bench`: a throwaway server on SQLite (or a given datastore),
//! agents joined with fresh join tokens, and the probe workload's selectors.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context;
use hyper::Method;
use serde_json::json;
use tokio::process::{Child, Command};

use crate::client::Client;
use crate::drill::report::now_ms;

/// A `hallmark` process started from this executable; killed when dropped.
pub struct Spawned {
    child: Child,
    cmd: Vec<String>,
    log: PathBuf,
}

impl Spawned {
    /// Starts `hallmark ARGS`, output to `log`.
    pub fn start(args: &[&str], log: &Path) -> anyhow::Result<Self> {
        Self::start_with_env(args, &[], log)
    }

    /// [`Spawned::start`] with more environment.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)], log: &Path) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find this executable")?;
        // Appended to, so a restarted process's log follows the crashed one's.
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| log.display().to_string())?;
        let err = out.try_clone()?;
        let child = Command::new(exe)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start a hallmark process")?;
        Ok(Self { child, cmd: args.iter().map(|s| (*s).to_owned()).collect(), log: log.to_owned() })
    }

    /// Kills it (SIGKILL) and waits for it.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Kills it and starts it again with the same arguments.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill().await;
        let args: Vec<&str> = self.cmd.iter().map(String::as_str).collect();
        *self = Self::start(&args, &self.log.clone())?;
        Ok(())
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// A free loopback port (bound and released).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Polls `f` every 20 ms for up to `secs` seconds.
pub async fn wait<T>(secs: u64, mut f: impl AsyncFnMut() -> Option<T>) -> Option<T> {
    let deadline = now_ms() + i64::try_from(secs).unwrap_or(60) * 1000;
    while now_ms() < deadline {
        if let Some(v) = f().await {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// A plain HTTP GET (an agent's health endpoint): (status, body).
pub async fn health_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let c = Client::new(Some(format!("http://{addr}")), None).ok()?;
    let r = c.send(Method::GET, path, None, None).await.ok()?;
    Some((r.status.as_u16(), String::from_utf8_lossy(&r.body).into_owned()))
}

/// A server started by this process.
pub struct Server {
    /// The process.
    pub proc: Spawned,
    /// Its admin API, with the bootstrap token.
    pub admin: Client,
    /// Its admin API URL.
    pub url: String,
    /// Its agent API, `127.0.0.1:PORT`.
    pub agent_api: String,
}

impl Server {
    /// Starts `hallmark server` in `work/server` with trust domain
    /// `drill.hallmark.test`, SQLite unless `extra_config` names a datastore.
    pub async fn start(work: &Path, extra_config: &str) -> anyhow::Result<Self> {
        Self::start_with_env(work, extra_config, &[]).await
    }

    /// [`Server::start`] with more environment for the server process.
    pub async fn start_with_env(work: &Path, extra_config: &str, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let (port, admin_port) = (free_port()?, free_port()?);
        let cfg = format!(
            "trust_domain = \"drill.hallmark.test\"\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:{port}\"\n\
             admin_listen = \"127.0.0.1:{admin_port}\"\n{extra_config}",
            work.join("server").display(),
        );
        let config = work.join("server.toml");
        std::fs::write(&config, cfg)?;
        let proc = Spawned::start_with_env(
            &["server", "--config", &config.display().to_string()],
            env,
            &work.join("server.log"),
        )?;
        let token_file = work.join("server/admin-token");
        let token = wait(120, async || std::fs::read_to_string(&token_file).ok().filter(|t| !t.trim().is_empty()))
            .await
            .with_context(|| format!("the server did not start (see {})", work.join("server.log").display()))?;
        let url = format!("http://127.0.0.1:{admin_port}");
        let admin = Client::new(Some(url.clone()), Some(token.trim().to_owned()))?;
        Ok(Self { proc, admin, url, agent_api: format!("127.0.0.1:{port}") })
    }
}

/// An agent started by this process and joined with a fresh join token.
pub struct Agent {
    /// The process.
    pub proc: Spawned,
    /// Its SPIFFE ID.
    pub id: String,
    /// Its trust domain.
    pub trust_domain: String,
    /// Its `/live`, `/ready`, `/metrics` address.
    pub health: String,
    /// Its Workload API, `unix:///...`.
    pub socket: String,
}

fn trust_domain_of(bundle_pem: &str) -> anyhow::Result<String> {
    let first = pem::parse_many(bundle_pem)?.into_iter().next().context("the bundle holds no certificate")?;
    let (_, cert) = x509_parser::parse_x509_certificate(first.contents()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let id = hallmark_ca::svid::spiffe_id_of(&cert)?;
    Ok(id.trust_domain().to_string())
}

/// How a started agent's node proves itself.
pub enum NodeProof<'a> {
    /// A fresh join token, made through the admin API.
    JoinToken,
    /// A `[node_attestor]` table (TOML) for the agent's configuration.
    Attestor(&'a str),
}

impl Agent {
    /// Joins an agent named `name` (files under `work/name`) to the server
    /// administered by `admin` with a fresh join token, reaching its agent
    /// API at `server_address`; returns when the agent is ready.
    pub async fn join(admin: &Client, work: &Path, server_address: &str, name: &str) -> anyhow::Result<Self> {
        Self::start(admin, work, server_address, name, NodeProof::JoinToken).await
    }

    /// [`Agent::join`] with the node proving itself as `proof` says.
    #[expect(
        clippy::indexing_slicing,
        reason = "serde_json::Value read by key: a missing key reads as Null, never a panic"
    )]
    pub async fn start(
        admin: &Client,
        work: &Path,
        server_address: &str,
        name: &str,
        proof: NodeProof<'_>,
    ) -> anyhow::Result<Self> {
        let bundle = admin.send(Method::GET, "/v1/bundle?format=pem", None, None).await?;
        let bundle = String::from_utf8_lossy(&bundle.body).into_owned();
        let trust_domain = trust_domain_of(&bundle)?;
        let dir = work.join(name);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("bundle.pem"), &bundle)?;
        let (credential, attestor, token_agent) = match proof {
            NodeProof::JoinToken => {
                let tok = admin.json(Method::POST, "/v1/join-tokens", Some(&json!({ "ttl": "10m" }))).await?;
                let id = tok["agent_id"].as_str().context("no agent_id")?.to_owned();
                (format!("join_token = \"{}\"\n", tok["token"].as_str().unwrap_or("")), "", Some(id))
            }
            NodeProof::Attestor(table) => (String::new(), table, None),
        };
        let health = format!("127.0.0.1:{}", free_port()?);
        let socket = dir.join("api.sock");
        // Top-level keys first: the attestor's table ends the file.
        let cfg = format!(
            "trust_domain = \"{trust_domain}\"\nserver_address = \"{server_address}\"\ndata_dir = \"{}\"\n\
             socket_path = \"{}\"\n{credential}trust_bundle_path = \"{}\"\nhealth_listen = \"{health}\"\n{attestor}\n",
            dir.join("data").display(),
            socket.display(),
            dir.join("bundle.pem").display()
        );
        std::fs::write(dir.join("agent.toml"), cfg)?;
        let proc = Spawned::start(
            &["agent", "--config", &dir.join("agent.toml").display().to_string()],
            &dir.join("agent.log"),
        )?;
        wait(60, async || (health_get(&health, "/ready").await?.0 == 200).then_some(()))
            .await
            .with_context(|| format!("the agent did not become ready (see {})", dir.join("agent.log").display()))?;
        // An attested node's ID is what its evidence proved: its SVID says.
        let id = match token_agent {
            Some(id) => id,
            None => {
                let chain = std::fs::read_to_string(dir.join("data/agent.chain.pem"))?;
                let leaf = pem::parse_many(&chain)?.into_iter().next().context("the agent stored no SVID")?;
                hallmark_ca::svid::parse_leaf(leaf.contents())?.spiffe_id.to_string()
            }
        };
        Ok(Self { proc, id, trust_domain, health, socket: format!("unix://{}", socket.display()) })
    }
}

/// Creates owner `name` unless it exists.
pub async fn ensure_owner(admin: &Client, name: &str, description: &str) -> anyhow::Result<()> {
    let owner = json!({ "name": name, "contact": "operations@hallmark.invalid", "description": description });
    let r = admin.send(Method::POST, "/v1/owners", Some(&owner), None).await?;
    if !r.status.is_success() && r.status.as_u16() != 409 {
        r.json()?;
    }
    Ok(())
}

/// Selectors that match this very process and no other program: its uid and
/// the SHA-256 of its executable.
pub fn this_process_selectors() -> anyhow::Result<Vec<String>> {
    static DIGEST: OnceLock<String> = OnceLock::new();
    let digest = match DIGEST.get() {
        Some(d) => d.clone(),
        None => {
            let exe = std::env::current_exe()?;
            let d = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(std::fs::read(&exe)?));
            DIGEST.get_or_init(|| d).clone()
        }
    };
    let uid = std::fs::read_to_string("/proc/self/status")?
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .context("cannot read this process's uid")?
        .to_owned();
    Ok(vec![format!("unix:uid:{uid}"), format!("unix:sha256:{digest}")])
}
