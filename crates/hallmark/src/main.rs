//! `hallmark`: the server, the agent, `up` (both in one process), and the admin CLI.

mod api;
mod bench;
mod chaos;
mod client;
mod commands;
mod drill;
mod governance;
mod helper;
mod human;
mod lifecycle;
mod local;
mod login;
mod ops;
mod table;
mod task;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// mimalloc instead of the system allocator: a policy decision is dominated by
/// Cedar's small allocations, and glibc malloc/free were a quarter of its
/// instructions (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Hallmark: verified, short-lived, governed workload identities (SPIFFE).
#[derive(Parser)]
#[command(name = "hallmark", version, about, long_about = None, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format for long-running commands.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Where the admin commands find the server.
#[derive(Args, Clone)]
pub struct Conn {
    /// Admin API URL, e.g. http://127.0.0.1:8081.
    #[arg(long, env = "HALLMARK_SERVER", global = true)]
    server: Option<String>,
    /// Admin bearer token.
    #[arg(long, env = "HALLMARK_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (signing authorities, registry, agent API, admin API).
    Server {
        /// Server configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Run an agent (Workload API for this node).
    Agent {
        /// Agent configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Run server and agent in one process on an embedded SQLite datastore.
    ///
    /// Writes DIR/env with SPIFFE_ENDPOINT_SOCKET, HALLMARK_SERVER and
    /// HALLMARK_TOKEN, so `source DIR/env` makes every other command work.
    /// Running it again on the same DIR resumes with the same CA, entries and tokens.
    Up(up::UpArgs),
    /// Sign in as a person at the identity provider and receive a short-lived
    /// X.509 certificate (key.pem, cert.pem, bundle.pem); no admin token needed.
    #[command(long_about = login::LONG_ABOUT)]
    Login {
        #[command(flatten)]
        args: login::LoginArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// Manage registration entries.
    Entry {
        #[command(subcommand)]
        cmd: commands::EntryCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// Manage join tokens for node attestation.
    Token {
        #[command(subcommand)]
        cmd: commands::TokenCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// Keep this process's SVID (and JWT-SVIDs) in files for software that reads
    /// certificates from disk, renewed at every rotation; reload that software
    /// with a signal or a command (like SPIRE's spiffe-helper).
    Helper(helper::HelperArgs),
    /// Ask the local Workload API what this process would receive.
    Api {
        #[command(subcommand)]
        cmd: api::ApiCmd,
    },
    /// Manage the Cedar policy that decides every issuance.
    Policy {
        #[command(subcommand)]
        cmd: governance::PolicyCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// Request, approve, revoke and list expiring exceptions.
    Exception {
        #[command(subcommand)]
        cmd: governance::ExceptionCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// Governance reports: expiring, orphans, exceptions, drift, rotation, compliance.
    Report {
        #[command(flatten)]
        args: governance::ReportArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// The inventory of every credential issued.
    Credential {
        #[command(subcommand)]
        cmd: governance::CredentialCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// Verify and export the tamper-evident audit chain.
    Audit {
        #[command(subcommand)]
        cmd: governance::AuditCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// Accountable owners of entries.
    Owner {
        #[command(subcommand)]
        cmd: governance::OwnerCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// Admin identities.
    Admin {
        #[command(subcommand)]
        cmd: governance::AdminCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// AI-agent tasks: run a command as a task (credentials for its scope
    /// only, ended and revoked with it), approve, re-aim, end and list them.
    Task {
        #[command(subcommand)]
        cmd: task::TaskCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// People's recovery after a lost device (file, verify, approve by a
    /// second admin) and break-glass grants (grant, revoke, list, review uses).
    #[command(long_about = human::LONG_ABOUT)]
    Human {
        #[command(subcommand)]
        cmd: human::HumanCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// Revoke in one step: a credential, an entry, an owner's entries, a node,
    /// a task, every task of an agent's entry, or a person's credentials.
    Revoke {
        #[command(flatten)]
        args: lifecycle::RevokeArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// Revoked credentials not yet expired.
    Revocation {
        #[command(subcommand)]
        cmd: lifecycle::RevocationCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// Signing authorities: show, prepare, activate, taint, revoke.
    Ca {
        #[command(subcommand)]
        cmd: lifecycle::CaCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// Run a failure or response drill and write evidence (Markdown and JSON);
    /// exits non-zero when a control did not hold.
    Drill(drill::DrillArgs),
    /// Measure a scenario on this machine (see BENCHMARKS.md).
    Bench {
        #[command(subcommand)]
        cmd: bench::BenchCmd,
    },
    /// Crash the server, the agent or PostgreSQL under load, many times, and
    /// check that nothing received was lost and everything recovers by itself.
    Chaos(chaos::Args),
    /// Attested nodes.
    Node {
        #[command(subcommand)]
        cmd: lifecycle::NodeCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// Exit 0 when the agent (default, HALLMARK_AGENT_HEALTH) or the server is
    /// ready, else 1 with the reason: for systemd, container health checks and scripts.
    Healthcheck(ops::HealthcheckArgs),
    /// Check configuration files without starting anything.
    Config {
        #[command(subcommand)]
        cmd: ops::ConfigCmd,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page, or write one for every command into a directory.
    Man {
        /// Write hallmark.1, hallmark-entry.1, ... here instead.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Show the trust bundle.
    Bundle {
        #[command(subcommand)]
        cmd: commands::BundleCmd,
        #[command(flatten)]
        conn: Conn,
    },
}

/// Whether log lines may carry ANSI colour: only on a terminal, and never
/// when `NO_COLOR` is set to anything but the empty string (no-color.org).
fn log_colour() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HALLMARK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(log_colour());
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Lets a long-running server or agent hold as many open files as the system
/// allows it (the hard limit): every Workload API connection holds two (the
/// socket and the caller's pidfd), and the default soft limit of 1 024 would
/// refuse clients long before memory runs short.
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(error = %e, soft, hard, "cannot raise the open file limit");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the open file limit"),
    }
}

/// Ends the process quietly when stdout is a closed pipe (`hallmark entry
/// list | head -1`). Rust ignores SIGPIPE, so a write to a closed pipe fails
/// with EPIPE and `println!` panics with "failed printing to stdout"; a reader
/// that stopped reading is no error, so exit 0 with nothing on stderr instead.
/// Every other panic keeps the default report.
fn exit_quietly_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        let epipe = format!("(os error {})", nix::libc::EPIPE);
        if msg.starts_with("failed printing to stdout") && msg.contains(&epipe) {
            std::process::exit(0);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    exit_quietly_on_closed_stdout();
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    // A standalone agent runs on the threads its configuration says
    // (`worker_threads`); every other command on one per core.
    if let Command::Agent { config } = &cli.command {
        match commands::agent_settings(config) {
            Ok(settings) => runtime.worker_threads(settings.worker_threads),
            Err(e) => return print_error(&e),
        };
    }
    let rt = match runtime.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Server { config } => {
                init_logging(cli.log_format);
                raise_open_file_limit();
                commands::run_server(&config).await
            }
            Command::Agent { config } => {
                init_logging(cli.log_format);
                raise_open_file_limit();
                commands::run_agent(&config).await
            }
            Command::Up(args) => {
                init_logging(cli.log_format);
                raise_open_file_limit();
                up::run(args).await
            }
            Command::Helper(args) => {
                init_logging(cli.log_format);
                helper::run(args).await
            }
            Command::Login { args, conn } => login::run(args, &conn).await,
            Command::Entry { cmd, conn } => commands::entry(cmd, &conn).await,
            Command::Token { cmd, conn } => commands::token(cmd, &conn).await,
            Command::Bundle { cmd, conn } => commands::bundle(cmd, &conn).await,
            Command::Api { cmd } => api::run(cmd).await,
            Command::Policy { cmd, conn } => governance::policy(cmd, &conn).await,
            Command::Exception { cmd, conn } => governance::exception(cmd, &conn).await,
            Command::Admin { cmd, conn } => governance::admin(cmd, &conn).await,
            Command::Owner { cmd, conn } => governance::owner(cmd, &conn).await,
            Command::Audit { cmd, conn } => governance::audit(cmd, &conn).await,
            Command::Credential { cmd, conn } => governance::credential(cmd, &conn).await,
            Command::Report { args, conn } => governance::report(args, &conn).await,
            Command::Task { cmd, conn } => task::task(cmd, &conn).await,
            Command::Human { cmd, conn } => human::human(cmd, &conn).await,
            Command::Revoke { args, conn } => lifecycle::revoke(args, &conn).await,
            Command::Revocation { cmd, conn } => lifecycle::revocation(cmd, &conn).await,
            Command::Ca { cmd, conn } => lifecycle::ca(cmd, &conn).await,
            Command::Node { cmd, conn } => lifecycle::node(cmd, &conn).await,
            Command::Drill(args) => drill::run(args).await,
            Command::Bench { cmd } => bench::run(cmd).await,
            Command::Chaos(args) => chaos::run(args).await,
            Command::Healthcheck(args) => ops::healthcheck(args).await,
            Command::Config { cmd } => ops::config(cmd),
            Command::Completions { shell } => {
                ops::completions(shell);
                Ok(())
            }
            Command::Man { out } => ops::man(out.as_deref()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => print_error(&e),
    }
}

/// Prints `e` with its causes on one line, as every command's error.
fn print_error(e: &anyhow::Error) -> ExitCode {
    let chain: Vec<String> = e.chain().map(ToString::to_string).collect();
    eprintln!("error: {}", chain.join(": "));
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    /// Every command's flags are well-formed (clap checks names, conflicts, defaults).
    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
