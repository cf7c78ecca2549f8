//! `hallmark up`: server and agent in one process on an embedded SQLite store.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use hallmark_agent::config::{AgentConfig, AgentSettings};
use hallmark_agent::{AgentIdentity, save_bundle};
use hallmark_ca::keys::{new_key_and_csr, write_secret_file};
use hallmark_core::now_unix;
use hallmark_server::config::{ServerConfig, ServerSettings};

/// Flags of `hallmark up`.
#[derive(Args)]
pub struct UpArgs {
    /// Directory for everything: datastore, keys, socket, env file.
    #[arg(long)]
    data_dir: PathBuf,
    /// Server configuration (TOML, as for `hallmark server`): classes, `ca.ttl`,
    /// `jwt_issuer`, default TTLs and the rest. `data_dir` is this command's
    /// --data-dir; flags given here win over the file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Trust domain [default: example.org, or the file's `trust_domain`].
    #[arg(long)]
    trust_domain: Option<String>,
    /// Admin API address [default: 127.0.0.1:8081, or the file's `admin_listen`].
    #[arg(long)]
    admin_listen: Option<String>,
    /// Agent API address; the embedded agent uses it too [default: 127.0.0.1:0
    /// (any free port), or the file's `listen`].
    #[arg(long)]
    listen: Option<String>,
    /// Workload API socket (default DIR/agent/public/api.sock).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// The embedded agent's /live, /ready, /metrics address.
    #[arg(long, default_value = "127.0.0.1:0")]
    agent_health_listen: String,
    /// The container runtime's Docker Engine API socket (Docker's
    /// /run/docker.sock, or podman's: `podman system service
    /// unix:///run/podman/podman.sock`): workloads in containers get
    /// `container:*` selectors. Off by default.
    #[arg(long, value_name = "SOCKET")]
    container_runtime_socket: Option<PathBuf>,
}

/// The server settings `up` runs with, through the same parsing and
/// validation as `hallmark server --config`: the file (if any), then `up`'s
/// own layout under `dir` and its defaults, then the flags given.
fn server_settings(a: &UpArgs, dir: &Path) -> anyhow::Result<ServerSettings> {
    let mut table = match &a.config {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
            let t: toml::Table = toml::from_str(&text).with_context(|| path.display().to_string())?;
            if t.contains_key("data_dir") {
                bail!(
                    "{}: `data_dir` is set by `up --data-dir` (server files go to DIR/server); remove it",
                    path.display()
                );
            }
            t
        }
        None => toml::Table::new(),
    };
    let mut set = |key: &str, flag: &Option<String>, default: &str| match flag {
        Some(v) => {
            table.insert(key.to_owned(), v.clone().into());
        }
        None => {
            table.entry(key).or_insert_with(|| default.into());
        }
    };
    set("trust_domain", &a.trust_domain, "example.org");
    set("admin_listen", &a.admin_listen, "127.0.0.1:8081");
    set("listen", &a.listen, "127.0.0.1:0");
    table.insert("data_dir".into(), dir.join("server").display().to_string().into());
    table.entry("datastore").or_insert_with(|| format!("sqlite://{}", dir.join("hallmark.db").display()).into());
    let text = toml::to_string(&table).context("cannot restate the configuration")?;
    let source = a.config.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "hallmark up".into());
    ServerConfig::parse(&text, &crate::commands::env_map()).and_then(|c| c.validate()).context(source)
}

/// The embedded agent's settings, through the same validation as `hallmark
/// agent --config`: it talks to the server of this process, keeps its files
/// in DIR/agent, and trusts the bundle the server wrote there (no bootstrap).
fn agent_settings(
    td: &hallmark_core::TrustDomain,
    server_address: &str,
    agent_dir: &Path,
    socket_path: &Path,
    health_listen: &str,
    container_runtime_socket: Option<&Path>,
) -> anyhow::Result<AgentSettings> {
    AgentConfig {
        trust_domain: td.to_string(),
        server_address: server_address.to_owned(),
        data_dir: agent_dir.to_path_buf(),
        socket_path: Some(socket_path.to_path_buf()),
        join_token: None,
        node_attestor: None,
        trust_bundle_path: None,
        insecure_bootstrap: false,
        health_listen: Some(health_listen.to_owned()),
        max_connections_per_uid: None,
        container_runtime_socket: container_runtime_socket.map(Path::to_path_buf),
        kubelet_url: None,
        kubelet_ca_path: None,
        kubelet_token_path: None,
        worker_threads: None,
    }
    .validate()
    .context("hallmark up: the embedded agent's settings")
}

/// Runs server and agent until interrupted.
pub async fn run(a: UpArgs) -> anyhow::Result<()> {
    let dir = std::path::absolute(&a.data_dir).with_context(|| a.data_dir.display().to_string())?;
    let settings = server_settings(&a, &dir)?;
    let td = settings.trust_domain.clone();
    let agent_dir = dir.join("agent");
    let socket_path = a.socket.clone().unwrap_or_else(|| agent_dir.join("public").join("api.sock"));
    // Every uid must reach the socket: DIR and DIR/agent are 0711 when it lies
    // beneath them (0700 otherwise), DIR/server stays 0700, and every file
    // holding a secret is 0600 on its own.
    hallmark_agent::dir_mode::ensure_private_dir(&dir, &socket_path)?;
    // An exposed agent key stops the start before anything serves; it is never silently replaced.
    hallmark_ca::keys::refuse_exposed_secret_file(&dir.join("agent").join(hallmark_agent::IDENTITY_KEY))?;
    // So does an exposed admin token, before any listener opens.
    hallmark_ca::keys::refuse_exposed_secret_file(&dir.join("admin-token"))?;
    let server = hallmark_server::start(settings).await?;
    let state = server.state.clone();

    // The embedded agent has a stable identity, so entries parented to it
    // survive restarts; it is attested in-process (the caller is this process).
    let agent_id = td.local_agent_id();
    if let Ok(mut p) = state.default_parent.write() {
        *p = Some(agent_id.clone());
    }
    hallmark_agent::dir_mode::ensure_private_dir(&agent_dir, &socket_path)?;
    let resumable = AgentIdentity::load(&agent_dir)
        .ok()
        .flatten()
        .is_some_and(|i| i.not_after > now_unix() + 60 && i.id == agent_id);
    if !resumable {
        let kc = new_key_and_csr(Some(&agent_id))?;
        let issued = state.attest_local(&agent_id, &kc.csr_der).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let id = AgentIdentity {
            id: issued.agent_id,
            chain: issued.svid.chain,
            key: kc.key_pkcs8,
            not_before: issued.svid.not_before,
            not_after: issued.svid.not_after,
            authority_id: issued.authority_id,
        };
        id.save(&agent_dir)?;
        tracing::info!(agent = %agent_id, "embedded agent attested in-process");
    }
    let bundle = state.authorities.bundle().borrow().as_ref().clone();
    save_bundle(&agent_dir, &bundle)?;
    let agent = hallmark_agent::start(agent_settings(
        &td,
        &server.agent_addr.to_string(),
        &agent_dir,
        &socket_path,
        &a.agent_health_listen,
        a.container_runtime_socket.as_deref(),
    )?)
    .await?;
    let health = agent.inner.health_addr.read().ok().and_then(|a| *a).map(|a| a.to_string()).unwrap_or_default();

    let token_file = dir.join("admin-token");
    state.ensure_admin_token(&token_file).await?;
    // The token is read from its file when the env file is sourced, so a
    // rotated bootstrap token (`hallmark admin token rotate bootstrap`) is
    // picked up, and the token itself is never printed.
    let env = format!(
        "export SPIFFE_ENDPOINT_SOCKET=unix://{}\nexport HALLMARK_SERVER=http://{}\nexport HALLMARK_TOKEN=\"$(cat {})\"\n\
         export HALLMARK_AGENT_HEALTH=http://{}\nexport HALLMARK_AGENT_API={}\nexport HALLMARK_DATA_DIR={}\n",
        socket_path.display(),
        server.admin_addr,
        shell_quote(&token_file.display().to_string()),
        health,
        server.agent_addr,
        shell_quote(&dir.display().to_string())
    );
    write_secret_file(&dir.join("env"), env.as_bytes())?;
    print!("{env}");
    println!("# written to {}; run: source {}", dir.join("env").display(), dir.join("env").display());
    tracing::info!("hallmark up: server and agent running");
    tokio::select! {
        r = server.wait() => r?,
        r = agent.wait() => r?,
        _ = tokio::signal::ctrl_c() => tracing::info!("shutting down"),
    }
    Ok(())
}

/// `s` as one single-quoted shell word.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn shell_quote() {
        assert_eq!(super::shell_quote("/a b/c"), "'/a b/c'");
        assert_eq!(super::shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn the_embedded_agent_is_validated_like_any_agent() {
        let td = hallmark_core::TrustDomain::new("example.org").unwrap();
        let dir = std::path::Path::new("/srv/hm/agent");
        let sock = dir.join("public/api.sock");
        let s = super::agent_settings(&td, "127.0.0.1:8443", dir, &sock, "127.0.0.1:0", None).unwrap();
        assert_eq!(s.socket_path, sock);
        assert!(matches!(s.bootstrap, hallmark_agent::config::Bootstrap::None));
        let err =
            format!("{:#}", super::agent_settings(&td, "127.0.0.1:8443", dir, &sock, "localhost", None).unwrap_err());
        assert!(err.contains("health_listen") && err.contains("localhost"), "{err}");
    }
}
