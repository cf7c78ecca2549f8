//! `hallmark up`: server and agent in one process on an embedded SQLite store.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use hallmark_agent::config::{AgentSettings, Bootstrap};
use hallmark_agent::{AgentIdentity, save_bundle};
use hallmark_ca::keys::{new_key_and_csr, write_secret_file};
use hallmark_core::{TrustDomain, Ttl, now_unix};
use hallmark_server::config::ServerSettings;

/// Flags of `hallmark up`.
#[derive(Args)]
pub struct UpArgs {
    /// Directory for everything: datastore, keys, socket, env file.
    #[arg(long)]
    data_dir: PathBuf,
    /// Trust domain.
    #[arg(long, default_value = "example.org")]
    trust_domain: String,
    /// Admin API address.
    #[arg(long, default_value = "127.0.0.1:8081")]
    admin_listen: String,
    /// Agent API address (the embedded agent uses it too).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Workload API socket (default DIR/agent/public/api.sock).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// The embedded agent's /live, /ready, /metrics address.
    #[arg(long, default_value = "127.0.0.1:0")]
    agent_health_listen: String,
}

/// Runs server and agent until interrupted.
pub async fn run(a: UpArgs) -> anyhow::Result<()> {
    let td = TrustDomain::new(&a.trust_domain).context("--trust-domain")?;
    let dir = std::path::absolute(&a.data_dir).with_context(|| a.data_dir.display().to_string())?;
    hallmark_server::ensure_private_dir(&dir)?;
    // An exposed agent key stops the start before anything serves; it is never silently replaced.
    hallmark_ca::keys::refuse_exposed_secret_file(&dir.join("agent").join(hallmark_agent::IDENTITY_KEY))?;
    // So does an exposed admin token, before any listener opens.
    hallmark_ca::keys::refuse_exposed_secret_file(&dir.join("admin-token"))?;
    let ttl = |s: &str| Ttl::parse(s).context("built-in default");
    let settings = ServerSettings {
        trust_domain: td.clone(),
        data_dir: dir.join("server"),
        datastore: format!("sqlite://{}", dir.join("hallmark.db").display()),
        listen: a.listen.clone(),
        admin_listen: a.admin_listen.clone(),
        ca_ttl: ttl("24h")?,
        upstream: None,
        default_x509_ttl: ttl("1h")?,
        default_jwt_ttl: ttl("5m")?,
        agent_svid_ttl: ttl("1h")?,
        join_token_ttl: ttl("10m")?,
        jwt_issuer: None,
        classes: hallmark_policy::Classes::default(),
        inventory_retention: ttl("30d")?,
    };
    let server = hallmark_server::start(settings).await?;
    let state = server.state.clone();

    // The embedded agent has a stable identity, so entries parented to it
    // survive restarts; it is attested in-process (the caller is this process).
    let agent_id = td.workload_id(&["hallmark", "agent", "local"])?;
    if let Ok(mut p) = state.default_parent.write() {
        *p = Some(agent_id.clone());
    }
    let agent_dir = dir.join("agent");
    hallmark_server::ensure_private_dir(&agent_dir)?;
    let resumable = AgentIdentity::load(&agent_dir)
        .ok()
        .flatten()
        .is_some_and(|i| i.not_after > now_unix() + 60 && i.id == agent_id);
    if !resumable {
        let kc = new_key_and_csr(Some(&agent_id))?;
        let (signed, authority_id) =
            state.attest_local(&agent_id, &kc.csr_der).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let id = AgentIdentity {
            id: agent_id.clone(),
            chain: signed.chain,
            key: kc.key_pkcs8,
            not_before: signed.not_before,
            not_after: signed.not_after,
            authority_id,
        };
        id.save(&agent_dir)?;
        tracing::info!(agent = %agent_id, "embedded agent attested in-process");
    }
    let bundle = state.authorities.bundle().borrow().as_ref().clone();
    save_bundle(&agent_dir, &bundle)?;
    let socket_path = a.socket.unwrap_or_else(|| agent_dir.join("public").join("api.sock"));
    let agent = hallmark_agent::start(AgentSettings {
        trust_domain: td,
        server_address: server.agent_addr.to_string(),
        data_dir: agent_dir,
        socket_path: socket_path.clone(),
        join_token: None,
        bootstrap: Bootstrap::None,
        health_listen: Some(a.agent_health_listen.clone()),
    })
    .await?;
    let health = agent.inner.health_addr.read().ok().and_then(|a| *a).map(|a| a.to_string()).unwrap_or_default();

    let token = state.ensure_admin_token(&dir.join("admin-token")).await?;
    let env = format!(
        "export SPIFFE_ENDPOINT_SOCKET=unix://{}\nexport HALLMARK_SERVER=http://{}\nexport HALLMARK_TOKEN={}\n\
         export HALLMARK_AGENT_HEALTH=http://{}\nexport HALLMARK_AGENT_API={}\nexport HALLMARK_DATA_DIR={}\n",
        socket_path.display(),
        server.admin_addr,
        token,
        health,
        server.agent_addr,
        dir.display()
    );
    // The env file holds an admin credential.
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
