//! `hallmark api ...`: a Workload API client for operators (what a workload
//! on this node would receive), like `spire-agent api fetch`.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;
use hallmark_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use hallmark_proto::workload::{JwtsvidRequest, X509svidRequest};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tonic::transport::{Channel, Endpoint};

/// `hallmark api ...`
#[derive(Subcommand)]
pub enum ApiCmd {
    /// Fetch this process's X.509-SVIDs (first message of the stream).
    FetchX509 {
        /// Workload API socket (default: $SPIFFE_ENDPOINT_SOCKET).
        #[arg(long, env = "SPIFFE_ENDPOINT_SOCKET")]
        socket: String,
        /// Write svid.N.pem, svid.N.key and bundle.pem to this directory (keys mode 0600).
        #[arg(long)]
        write: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Fetch JWT-SVIDs for an audience.
    FetchJwt {
        /// Workload API socket (default: $SPIFFE_ENDPOINT_SOCKET).
        #[arg(long, env = "SPIFFE_ENDPOINT_SOCKET")]
        socket: String,
        /// Audience; repeatable.
        #[arg(long = "audience", required = true)]
        audience: Vec<String>,
        /// Only this SPIFFE ID.
        #[arg(long)]
        spiffe_id: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn connect(socket: &str) -> anyhow::Result<SpiffeWorkloadApiClient<Channel>> {
    let path =
        socket.strip_prefix("unix://").with_context(|| format!("socket `{socket}` must be a unix:// URI"))?.to_owned();
    Ok(SpiffeWorkloadApiClient::new(channel(path.into()).await?))
}

/// A gRPC channel to the agent's socket at `path` (every service served there uses it).
pub(crate) async fn channel(path: PathBuf) -> anyhow::Result<Channel> {
    Endpoint::from_static("http://workload")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
        }))
        .await
        .context("cannot connect to the Workload API")
}

pub(crate) fn request<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("workload.spiffe.io", tonic::metadata::MetadataValue::from_static("true"));
    r
}

/// Runs an `api` command.
pub async fn run(cmd: ApiCmd) -> anyhow::Result<()> {
    match cmd {
        ApiCmd::FetchX509 { socket, write, json } => {
            let mut c = connect(&socket).await?;
            let mut stream = c.fetch_x509svid(request(X509svidRequest {})).await.map_err(status)?.into_inner();
            let msg = stream.message().await.map_err(status)?.context("stream ended with no message")?;
            let mut out = Vec::new();
            for (i, s) in msg.svids.iter().enumerate() {
                let leaf = hallmark_ca::svid::parse_leaf(first_cert(&s.x509_svid)?)?;
                out.push(json!({ "spiffe_id": s.spiffe_id, "hint": s.hint, "serial": leaf.serial, "not_after": leaf.not_after }));
                if let Some(dir) = &write {
                    std::fs::create_dir_all(dir)?;
                    std::fs::write(dir.join(format!("svid.{i}.pem")), split_pem(&s.x509_svid)?)?;
                    let key = pem::encode(&pem::Pem::new("PRIVATE KEY", s.x509_svid_key.clone()));
                    hallmark_ca::keys::write_secret_file(&dir.join(format!("svid.{i}.key")), key.as_bytes())?;
                    std::fs::write(dir.join("bundle.pem"), split_pem(&s.bundle)?)?;
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                for o in &out {
                    println!("SPIFFE ID : {}", o["spiffe_id"].as_str().unwrap_or(""));
                    println!("Serial    : {}", o["serial"].as_str().unwrap_or(""));
                    println!("Not after : {}", o["not_after"]);
                    if let Some(h) = o["hint"].as_str().filter(|h| !h.is_empty()) {
                        println!("Hint      : {h}");
                    }
                    println!();
                }
            }
            Ok(())
        }
        ApiCmd::FetchJwt { socket, audience, spiffe_id, json } => {
            let mut c = connect(&socket).await?;
            let r = c
                .fetch_jwtsvid(request(JwtsvidRequest { audience, spiffe_id: spiffe_id.unwrap_or_default() }))
                .await
                .map_err(status)?
                .into_inner();
            if json {
                let list: Vec<_> = r
                    .svids
                    .iter()
                    .map(|s| json!({ "spiffe_id": s.spiffe_id, "svid": s.svid, "hint": s.hint }))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for s in r.svids {
                    println!("{}\t{}", s.spiffe_id, s.svid);
                }
            }
            Ok(())
        }
    }
}

pub(crate) fn status(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", s.code(), s.message())
}

/// Splits concatenated DER certificates.
pub(crate) fn der_certs(mut der: &[u8]) -> anyhow::Result<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !der.is_empty() {
        let (rest, _) =
            x509_parser::parse_x509_certificate(der).map_err(|e| anyhow::anyhow!("bad certificate: {e}"))?;
        let len = der.len() - rest.len();
        out.push(&der[..len]);
        der = rest;
    }
    if out.is_empty() {
        bail!("no certificate");
    }
    Ok(out)
}

fn first_cert(der: &[u8]) -> anyhow::Result<&[u8]> {
    der_certs(der)?.into_iter().next().context("no certificate")
}

pub(crate) fn split_pem(der: &[u8]) -> anyhow::Result<String> {
    Ok(der_certs(der)?.into_iter().map(|c| pem::encode(&pem::Pem::new("CERTIFICATE", c.to_vec()))).collect())
}
