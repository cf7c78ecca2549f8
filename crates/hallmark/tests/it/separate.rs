//! `hallmark server` and `hallmark agent` as separate processes joined by a
//! single-use join token, on SQLite and on PostgreSQL.

use std::collections::HashMap;
use std::process::Command;

use crate::harness::*;

pub struct Deployment {
    pub server: Proc,
    pub dir: tempfile::TempDir,
    pub env: HashMap<String, String>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start_server(datastore: Option<String>) -> Deployment {
    start_server_with(datastore, "")
}

pub fn start_server_with(datastore: Option<String>, extra_config: &str) -> Deployment {
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let mut cfg = format!(
        "trust_domain = \"example.org\"\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n",
        dir.path().join("server").display()
    );
    if let Some(ds) = datastore {
        cfg.push_str(&format!("datastore = \"{ds}\"\n"));
    }
    cfg.push_str(extra_config);
    std::fs::write(dir.path().join("server.toml"), cfg).unwrap();
    let mut cmd = Command::new(bin());
    cmd.args(["server", "--config"]).arg(dir.path().join("server.toml"));
    let server = Proc::spawn(cmd, &dir.path().join("server.log"));
    let token_file = dir.path().join("server/admin-token");
    let token =
        wait_for("server admin token", 60, || std::fs::read_to_string(&token_file).ok().filter(|t| !t.is_empty()));
    let env = HashMap::from([
        ("HALLMARK_SERVER".to_owned(), format!("http://127.0.0.1:{admin}")),
        ("HALLMARK_TOKEN".to_owned(), token.trim().to_owned()),
        ("HALLMARK_AGENT_PORT".to_owned(), port.to_string()),
    ]);
    Deployment { server, dir, env }
}

impl Deployment {
    /// Creates an owner.
    pub fn owner(&self, name: &str) {
        let out = self.cli(&["owner", "create", name, "--contact", &format!("{name}@example.org")]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    /// Registers `spiffe_id` for processes of this test's uid on agent
    /// `parent`, owned by `ops` (which must exist); returns the entry.
    pub fn entry_for_me(&self, spiffe_id: &str, parent: &str, extra: &[&str]) -> serde_json::Value {
        let uid = format!("unix:uid:{}", my_uid());
        let mut args =
            vec!["entry", "create", "--spiffe-id", spiffe_id, "--selector", &uid, "--parent", parent, "--owner", "ops"];
        args.extend_from_slice(extra);
        args.push("--json");
        let out = self.cli(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The setup of a test whose own process is the workload: owner `ops`,
    /// an entry `spiffe_id` for this test's uid on the agent `agent_id`
    /// ([`Deployment::entry_for_me`]), a Workload API client on the agent's
    /// `socket`, and the entry's SVID once the agent serves it (a panic with
    /// the agent's and the server's logs if it never does).
    pub async fn serve_me(
        &self,
        spiffe_id: &str,
        agent: &Proc,
        agent_id: &str,
        socket: &std::path::Path,
    ) -> (spiffe::WorkloadApiClient, spiffe::X509Svid) {
        self.owner("ops");
        self.entry_for_me(spiffe_id, agent_id, &[]);
        let client = spiffe::WorkloadApiClient::connect_to(format!("unix://{}", socket.display())).await.unwrap();
        let svid = wait_for_svid(&client).await.unwrap_or_else(|| {
            panic!("{spiffe_id} never served\nagent log:\n{}\nserver log:\n{}", agent.log(), self.server.log())
        });
        (client, svid)
    }

    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin()).args(args).envs(&self.env).output().unwrap()
    }

    /// Starts the server again after [`Proc::kill`] on `self.server`.
    pub fn start_server_again(&mut self) {
        let mut cmd = Command::new(bin());
        cmd.args(["server", "--config"]).arg(self.dir.path().join("server.toml"));
        self.server = Proc::spawn(cmd, &self.dir.path().join(format!("server-{}.log", rand_tag())));
        let url = format!("{}/ready", self.env["HALLMARK_SERVER"]);
        wait_for("the server to answer again", 60, || {
            std::panic::catch_unwind(|| http_get(&url).0).ok().filter(|s| *s == 200)
        });
    }

    /// An agent configuration whose socket is `NAME/api.sock`.
    fn agent_config(&self, name: &str, token: &str) -> std::path::PathBuf {
        self.agent_config_with(name, token, &self.socket_line(name))
    }

    fn socket_line(&self, name: &str) -> String {
        format!("socket_path = \"{}\"\n", self.dir.path().join(name).join("api.sock").display())
    }

    /// An agent configuration with data in `NAME/data` and `extra` lines;
    /// without a `socket_path` among them, the socket is the default.
    fn agent_config_with(&self, name: &str, token: &str, extra: &str) -> std::path::PathBuf {
        let d = self.dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        let cfg = format!(
            "trust_domain = \"example.org\"\nserver_address = \"127.0.0.1:{}\"\ndata_dir = \"{}\"\njoin_token = \"{token}\"\ntrust_bundle_path = \"{}\"\n",
            self.env["HALLMARK_AGENT_PORT"],
            d.join("data").display(),
            self.dir.path().join("bundle.pem").display()
        ) + extra;
        let p = d.join("agent.toml");
        std::fs::write(&p, cfg).unwrap();
        p
    }
}

/// Starts an agent joined with a fresh token; returns it, its ID and its socket.
pub fn join_agent(dep: &Deployment, name: &str) -> (Proc, String, std::path::PathBuf) {
    join_agent_with(dep, name, "")
}

/// [`join_agent`] with more agent configuration.
pub fn join_agent_with(dep: &Deployment, name: &str, extra: &str) -> (Proc, String, std::path::PathBuf) {
    let socket = dep.dir.path().join(format!("{name}/api.sock"));
    join_agent_configured(dep, name, &(dep.socket_line(name) + extra), socket)
}

/// [`join_agent`] with no `socket_path`: the socket is the default, `NAME/data/public/api.sock`.
pub fn join_agent_on_default_socket(dep: &Deployment, name: &str) -> (Proc, String, std::path::PathBuf) {
    let socket = dep.dir.path().join(format!("{name}/data/public/api.sock"));
    join_agent_configured(dep, name, "", socket)
}

fn join_agent_configured(
    dep: &Deployment,
    name: &str,
    config: &str,
    socket: std::path::PathBuf,
) -> (Proc, String, std::path::PathBuf) {
    let bundle = dep.cli(&["bundle", "show"]);
    std::fs::write(dep.dir.path().join("bundle.pem"), &bundle.stdout).unwrap();
    let out = dep.cli(&["token", "create", "--json"]);
    let tok: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut cmd = Command::new(bin());
    cmd.args(["agent", "--config"]).arg(dep.agent_config_with(name, tok["token"].as_str().unwrap(), config));
    let agent = Proc::spawn(cmd, &dep.dir.path().join(format!("{name}.log")));
    wait_for("agent socket", 60, || socket.exists().then_some(()));
    (agent, tok["agent_id"].as_str().unwrap().to_owned(), socket)
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_svid_renews_itself_before_expiry() {
    let dep = start_server_with(None, "agent_svid_ttl = \"16s\"\n");
    let (agent, agent_id, socket) = join_agent(&dep, "renew");
    let chain_file = dep.dir.path().join("renew/data/agent.chain.pem");
    let first = std::fs::read(&chain_file).unwrap();
    // Past the first agent SVID's expiry, the agent must still be able to talk to the server.
    tokio::time::sleep(std::time::Duration::from_secs(20)).await;
    assert_ne!(std::fs::read(&chain_file).unwrap(), first, "agent SVID was renewed and stored");
    let (_client, svid) = dep.serve_me("spiffe://example.org/late", &agent, &agent_id, &socket).await;
    assert_eq!(svid.spiffe_id().to_string(), "spiffe://example.org/late");
}

pub async fn wait_for_svid(client: &spiffe::WorkloadApiClient) -> Option<spiffe::X509Svid> {
    for _ in 0..300 {
        if let Ok(s) = client.fetch_x509_svid().await {
            return Some(s);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    None
}

async fn join_and_fetch(datastore: Option<String>) {
    let dep = start_server(datastore);
    let bundle = dep.cli(&["bundle", "show"]);
    assert!(bundle.status.success(), "{}", String::from_utf8_lossy(&bundle.stderr));
    std::fs::write(dep.dir.path().join("bundle.pem"), &bundle.stdout).unwrap();
    let out = dep.cli(&["token", "create", "--ttl", "10m", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tok: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (token, agent_id) = (tok["token"].as_str().unwrap(), tok["agent_id"].as_str().unwrap());
    assert!(agent_id.starts_with("spiffe://example.org/hallmark/agent/join_token/"));
    assert!(!agent_id.contains(token), "the agent ID does not reveal the token");

    let mut cmd = Command::new(bin());
    cmd.args(["agent", "--config"]).arg(dep.agent_config("a1", token));
    let agent = Proc::spawn(cmd, &dep.dir.path().join("agent1.log"));
    let socket = dep.dir.path().join("a1/api.sock");
    wait_for("agent socket", 60, || socket.exists().then_some(()));

    let (client, svid) = dep.serve_me("spiffe://example.org/svc", &agent, agent_id, &socket).await;
    assert_eq!(svid.spiffe_id().to_string(), "spiffe://example.org/svc");
    let jwt = client.fetch_jwt_svid(["aud1"], None).await.unwrap();
    assert_eq!(jwt.spiffe_id().to_string(), "spiffe://example.org/svc");

    // The token is single-use: a second agent presenting it is refused.
    let mut cmd = Command::new(bin());
    cmd.args(["agent", "--config"]).arg(dep.agent_config("a2", token));
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already been used"), "{err}");
    // An unknown token is refused too.
    let mut cmd = Command::new(bin());
    cmd.args(["agent", "--config"]).arg(dep.agent_config("a3", "not-a-token"));
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid"));
    drop(agent);
}

#[tokio::test(flavor = "multi_thread")]
async fn server_and_agent_joined_by_token_on_sqlite() {
    join_and_fetch(None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn server_and_agent_joined_by_token_on_postgres() {
    let Some(url) = postgres_db("hm_it_join") else { return };
    join_and_fetch(Some(url)).await;
}
