//! Commands for running Hallmark as a service: `healthcheck` (for systemd,
//! container health checks and scripts), `config check`, and the shell
//! completions and man pages generated from the CLI definition.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, CommandFactory, Subcommand};
use hyper::Method;
use serde_json::json;

use crate::client::Client;

/// `hallmark healthcheck`: exits 0 when the agent or server is ready.
#[derive(Args)]
pub struct HealthcheckArgs {
    /// The agent's health endpoint, e.g. http://127.0.0.1:8089 (its
    /// `health_listen`; `source DIR/env` from `up` sets it).
    #[arg(long, env = "HALLMARK_AGENT_HEALTH")]
    agent: Option<String>,
    /// Check the server instead: its admin API, e.g. http://127.0.0.1:8081.
    #[arg(long)]
    server: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `hallmark config ...`
#[derive(Subcommand)]
pub enum ConfigCmd {
    /// Check a server or agent configuration file as `hallmark server` or
    /// `hallmark agent` would at start (every key, with environment
    /// overrides), without starting anything; exits non-zero naming the
    /// first bad key.
    Check {
        /// The TOML file.
        file: PathBuf,
        /// server or agent [default: agent when the file sets `server_address`].
        #[arg(long, value_parser = ["server", "agent"])]
        kind: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `hallmark healthcheck`
pub async fn healthcheck(a: HealthcheckArgs) -> anyhow::Result<()> {
    let (what, url) = match (a.agent, a.server) {
        (_, Some(s)) => ("server", s),
        (Some(h), None) => ("agent", h),
        (None, None) => match std::env::var("HALLMARK_SERVER") {
            Ok(s) => ("server", s),
            Err(_) => bail!("nothing to check: pass --agent URL or --server URL (or set HALLMARK_AGENT_HEALTH)"),
        },
    };
    let reply = Client::new(Some(url.clone()), None)?.send(Method::GET, "/ready", None, None).await?;
    let body = String::from_utf8_lossy(&reply.body).trim().to_owned();
    let ready = reply.status.is_success();
    if a.json {
        println!(
            "{}",
            json!({ "target": what, "url": url, "ready": ready, "status": reply.status.as_u16(), "detail": body })
        );
    } else if ready {
        println!("{what} at {url} is ready");
    }
    if !ready {
        bail!("{what} at {url} is not ready: {body}");
    }
    Ok(())
}

/// `hallmark config ...`
pub fn config(cmd: ConfigCmd) -> anyhow::Result<()> {
    let ConfigCmd::Check { file, kind, json } = cmd;
    let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read config {}", file.display()))?;
    let kind = match kind {
        Some(k) => k,
        None => {
            let table: toml::Table = toml::from_str(&text).with_context(|| file.display().to_string())?;
            if table.contains_key("server_address") { "agent".into() } else { "server".into() }
        }
    };
    let env = crate::commands::env_map();
    let summary = if kind == "agent" {
        let s = hallmark_agent::config::AgentConfig::parse(&text, &env)
            .and_then(|c| c.validate())
            .with_context(|| file.display().to_string())?;
        json!({
            "kind": "agent",
            "trust_domain": s.trust_domain.as_str(),
            "server_address": s.server_address,
            "data_dir": s.data_dir,
            "socket_path": s.socket_path,
            "health_listen": s.health_listen,
            "container_runtime_socket": s.container_runtime_socket,
            "kubelet_url": s.kubelet.as_ref().map(|k| k.url.clone()),
            "worker_threads": s.worker_threads,
        })
    } else {
        let s = hallmark_server::config::ServerConfig::parse(&text, &env)
            .and_then(|c| c.validate())
            .with_context(|| file.display().to_string())?;
        json!({
            "kind": "server",
            "trust_domain": s.trust_domain.as_str(),
            "data_dir": s.data_dir,
            "datastore": redact_password(&s.datastore),
            "listen": s.listen,
            "admin_listen": s.admin_listen,
            "ca_ttl": s.ca_ttl.to_string(),
            "jwt_issuer": s.jwt_issuer,
            "classes": {
                "machine": s.classes.machine.max_ttl.to_string(),
                "agent": s.classes.agent.max_ttl.to_string(),
                "human": s.classes.human.max_ttl.to_string(),
            },
        })
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&json!({ "file": file, "valid": true, "settings": summary }))?);
    } else {
        println!("{}: a valid {kind} configuration", file.display());
        if let Some(map) = summary.as_object() {
            for (k, v) in map.iter().filter(|(k, _)| *k != "kind") {
                println!(
                    "  {k:<15} {}",
                    if v.is_string() { v.as_str().unwrap_or("").to_owned() } else { v.to_string() }
                );
            }
        }
    }
    Ok(())
}

/// A datastore URL without its password, for display.
fn redact_password(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, rest)), Some(_)) => match rest.split_once('@') {
            Some((userinfo, host)) if userinfo.contains(':') => {
                let user = userinfo.split(':').next().unwrap_or("");
                format!("{scheme}://{user}:***@{host}")
            }
            _ => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}

/// `hallmark completions SHELL`: the completion script, to stdout.
pub fn completions(shell: clap_complete::Shell) {
    let mut cmd = crate::Cli::command();
    clap_complete::generate(shell, &mut cmd, "hallmark", &mut std::io::stdout());
}

/// `hallmark man [--out DIR]`: `hallmark.1` to stdout, or a page for every
/// command (`hallmark.1`, `hallmark-entry.1`, `hallmark-entry-create.1`, ...) into DIR.
pub fn man(out: Option<&Path>) -> anyhow::Result<()> {
    let cmd = crate::Cli::command();
    match out {
        None => {
            let mut buf = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut buf)?;
            std::io::stdout().write_all(&buf)?;
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
            let mut n = 0;
            write_pages(cmd, "hallmark", dir, &mut n)?;
            eprintln!("wrote {n} man pages to {}", dir.display());
        }
    }
    Ok(())
}

fn write_pages(cmd: clap::Command, name: &str, dir: &Path, n: &mut usize) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone()).title(name.to_uppercase()).render(&mut buf)?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, buf).with_context(|| path.display().to_string())?;
    *n += 1;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub.clone(), &format!("{name}-{}", sub.get_name()), dir, n)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn datastore_passwords_are_not_shown() {
        assert_eq!(super::redact_password("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(super::redact_password("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(super::redact_password("sqlite:///x/y.db"), "sqlite:///x/y.db");
    }
}
