//! `hallmark api ...`: a Workload API client for operators (what a workload
//! on this node would receive), like `spire-agent api fetch`.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;
use hallmark_core::now_unix;
use hallmark_core::time::rfc3339_relative;
use hallmark_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use hallmark_proto::workload::{
    JwtBundlesRequest, JwtsvidRequest, ValidateJwtsvidRequest, WitBundlesRequest, WitsvidRequest, X509BundlesRequest,
    X509svidRequest,
};
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
    /// Fetch this process's WIT-SVIDs (first message of the stream). The
    /// private keys are never printed: `--write` puts them in files (0600).
    FetchWit {
        /// Workload API socket (default: $SPIFFE_ENDPOINT_SOCKET).
        #[arg(long, env = "SPIFFE_ENDPOINT_SOCKET")]
        socket: String,
        /// Only this SPIFFE ID.
        #[arg(long)]
        spiffe_id: Option<String>,
        /// Write wit.N.jwt and wit.N.jwk (its private key, mode 0600) to this directory.
        #[arg(long)]
        write: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check a JWT-SVID as a relying party would (ValidateJWTSVID): its
    /// signature against the trust bundle, expiry, revocation and audience.
    ValidateJwt {
        /// Workload API socket (default: $SPIFFE_ENDPOINT_SOCKET).
        #[arg(long, env = "SPIFFE_ENDPOINT_SOCKET")]
        socket: String,
        /// The audience the token must carry.
        #[arg(long)]
        audience: String,
        /// The token.
        #[arg(long)]
        svid: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Follow this process's X.509-SVIDs: print each update the Workload API
    /// pushes (first at once, then every renewal, revocation or change).
    Watch {
        /// Workload API socket (default: $SPIFFE_ENDPOINT_SOCKET).
        #[arg(long, env = "SPIFFE_ENDPOINT_SOCKET")]
        socket: String,
        /// Stop after this many updates (default: until interrupted).
        #[arg(long)]
        count: Option<u64>,
        /// Print each update as one line of JSON.
        #[arg(long)]
        json: bool,
    },
    /// Fetch the trust bundles: X.509 authorities (PEM) or the JWT keys (JWKS).
    FetchBundle {
        /// Workload API socket (default: $SPIFFE_ENDPOINT_SOCKET).
        #[arg(long, env = "SPIFFE_ENDPOINT_SOCKET")]
        socket: String,
        /// x509 (PEM certificates), jwt or wit (JWKS per trust domain).
        #[arg(long, default_value = "x509", value_parser = ["x509", "jwt", "wit"])]
        kind: String,
        /// Write bundle.pem (x509), bundle.jwks.json (jwt) or bundle.wit.jwks.json (wit) to this
        /// directory instead of stdout.
        #[arg(long)]
        write: Option<PathBuf>,
    },
}

/// A protobuf `Struct` (the claims ValidateJWTSVID returns) as JSON.
fn struct_json(s: &prost_types::Struct) -> serde_json::Value {
    serde_json::Value::Object(s.fields.iter().map(|(k, v)| (k.clone(), value_json(v))).collect())
}

fn value_json(v: &prost_types::Value) -> serde_json::Value {
    use prost_types::value::Kind;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::NumberValue(n)) => json!(n),
        Some(Kind::StringValue(s)) => json!(s),
        Some(Kind::BoolValue(b)) => json!(b),
        Some(Kind::StructValue(s)) => struct_json(s),
        Some(Kind::ListValue(l)) => serde_json::Value::Array(l.values.iter().map(value_json).collect()),
    }
}

/// The SVIDs of one Workload API X.509 message, as printed.
fn svid_summaries(msg: &hallmark_proto::workload::X509svidResponse) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut out = Vec::new();
    for s in &msg.svids {
        let leaf = hallmark_ca::svid::parse_leaf(first_cert(&s.x509_svid)?)?;
        out.push(
            json!({ "spiffe_id": s.spiffe_id, "hint": s.hint, "serial": leaf.serial, "not_after": leaf.not_after }),
        );
    }
    Ok(out)
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
#[expect(
    clippy::indexing_slicing,
    reason = "serde_json::Value read by key: a missing key reads as Null, never a panic"
)]
pub async fn run(cmd: ApiCmd) -> anyhow::Result<()> {
    match cmd {
        ApiCmd::FetchX509 { socket, write, json } => {
            let mut c = connect(&socket).await?;
            let mut stream = c.fetch_x509svid(request(X509svidRequest {})).await.map_err(status)?.into_inner();
            let msg = stream.message().await.map_err(status)?.context("stream ended with no message")?;
            let out = svid_summaries(&msg)?;
            for (i, s) in msg.svids.iter().enumerate() {
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
                    println!("Not after : {}", rfc3339_relative(o["not_after"].as_i64().unwrap_or(0), now_unix()));
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
        ApiCmd::FetchWit { socket, spiffe_id, write, json } => {
            let mut c = connect(&socket).await?;
            let req = WitsvidRequest { spiffe_id: spiffe_id.unwrap_or_default() };
            let mut stream = c.fetch_witsvid(request(req)).await.map_err(status)?.into_inner();
            let msg = stream.message().await.map_err(status)?.context("stream ended with no message")?;
            let mut out = Vec::new();
            for (i, s) in msg.svids.iter().enumerate() {
                if let Some(dir) = &write {
                    std::fs::create_dir_all(dir)?;
                    std::fs::write(dir.join(format!("wit.{i}.jwt")), &s.wit_svid)?;
                    hallmark_ca::keys::write_secret_file(&dir.join(format!("wit.{i}.jwk")), s.wit_svid_key.as_bytes())?;
                }
                let claims = jwt_claims(&s.wit_svid)?;
                out.push(json!({
                    "spiffe_id": s.spiffe_id,
                    "hint": s.hint,
                    "jti": claims["jti"],
                    "exp": claims["exp"],
                    "cnf": claims["cnf"],
                    "wit": s.wit_svid,
                }));
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                for o in &out {
                    println!("SPIFFE ID : {}", o["spiffe_id"].as_str().unwrap_or(""));
                    println!("JTI       : {}", o["jti"].as_str().unwrap_or(""));
                    println!("Not after : {}", rfc3339_relative(o["exp"].as_i64().unwrap_or(0), now_unix()));
                    if let Some(h) = o["hint"].as_str().filter(|h| !h.is_empty()) {
                        println!("Hint      : {h}");
                    }
                    println!("WIT       : {}", o["wit"].as_str().unwrap_or(""));
                    println!();
                }
            }
            Ok(())
        }
        ApiCmd::ValidateJwt { socket, audience, svid, json } => {
            let mut c = connect(&socket).await?;
            let r = c
                .validate_jwtsvid(request(ValidateJwtsvidRequest { audience, svid }))
                .await
                .map_err(|s| anyhow::anyhow!("the token is not valid: {}", s.message()))?
                .into_inner();
            let claims = r.claims.as_ref().map(struct_json).unwrap_or(serde_json::Value::Null);
            if json {
                println!("{}", serde_json::to_string_pretty(&json!({ "spiffe_id": r.spiffe_id, "claims": claims }))?);
            } else {
                println!("valid JWT-SVID of {}", r.spiffe_id);
                if let Some(exp) = claims["exp"].as_f64() {
                    println!("expires {}", rfc3339_relative(exp as i64, now_unix()));
                }
                println!("{}", serde_json::to_string_pretty(&claims)?);
            }
            Ok(())
        }
        ApiCmd::Watch { socket, count, json } => {
            let mut c = connect(&socket).await?;
            let mut stream = c.fetch_x509svid(request(X509svidRequest {})).await.map_err(status)?.into_inner();
            let mut seen = 0u64;
            while count.is_none_or(|n| seen < n) {
                let msg = match stream.message().await {
                    Ok(Some(m)) => m,
                    Ok(None) => bail!("the Workload API closed the stream"),
                    // A workload that loses every SVID gets PermissionDenied on its stream.
                    Err(s) => bail!("{:?}: {}", s.code(), s.message()),
                };
                seen += 1;
                let svids = svid_summaries(&msg)?;
                let now = now_unix();
                if json {
                    println!("{}", json!({ "at": now, "svids": svids }));
                } else {
                    let list: Vec<String> = svids
                        .iter()
                        .map(|s| {
                            format!(
                                "{} serial {} expires {}",
                                s["spiffe_id"].as_str().unwrap_or(""),
                                s["serial"].as_str().unwrap_or(""),
                                rfc3339_relative(s["not_after"].as_i64().unwrap_or(0), now)
                            )
                        })
                        .collect();
                    println!("{} update {seen}: {}", hallmark_core::time::rfc3339(now), list.join("; "));
                }
            }
            Ok(())
        }
        ApiCmd::FetchBundle { socket, kind, write } => {
            let mut c = connect(&socket).await?;
            let (name, text) = if kind == "wit" {
                let mut stream = c.fetch_wit_bundles(request(WitBundlesRequest {})).await.map_err(status)?.into_inner();
                let msg = stream.message().await.map_err(status)?.context("stream ended with no message")?;
                let mut doc = serde_json::Map::new();
                for (td, jwks) in msg.bundles {
                    let v: serde_json::Value = serde_json::from_str(&jwks).context("the WIT bundle is not JSON")?;
                    doc.insert(td, v);
                }
                ("bundle.wit.jwks.json", serde_json::to_string_pretty(&doc)? + "\n")
            } else if kind == "jwt" {
                let mut stream = c.fetch_jwt_bundles(request(JwtBundlesRequest {})).await.map_err(status)?.into_inner();
                let msg = stream.message().await.map_err(status)?.context("stream ended with no message")?;
                let mut doc = serde_json::Map::new();
                for (td, jwks) in msg.bundles {
                    let v: serde_json::Value = serde_json::from_slice(&jwks).context("the JWT bundle is not JSON")?;
                    doc.insert(td, v);
                }
                ("bundle.jwks.json", serde_json::to_string_pretty(&doc)? + "\n")
            } else {
                let mut stream =
                    c.fetch_x509_bundles(request(X509BundlesRequest {})).await.map_err(status)?.into_inner();
                let msg = stream.message().await.map_err(status)?.context("stream ended with no message")?;
                let mut pem = String::new();
                let mut tds: Vec<_> = msg.bundles.into_iter().collect();
                tds.sort();
                for (_, der) in tds {
                    pem.push_str(&split_pem(&der)?);
                }
                ("bundle.pem", pem)
            };
            match write {
                Some(dir) => {
                    std::fs::create_dir_all(&dir)?;
                    std::fs::write(dir.join(name), text)?;
                    eprintln!("wrote {}", dir.join(name).display());
                }
                None => print!("{text}"),
            }
            Ok(())
        }
    }
}

/// The claims of a compact JWS, unverified (to show what the agent sent).
fn jwt_claims(token: &str) -> anyhow::Result<serde_json::Value> {
    use base64::Engine;
    let body = token.split('.').nth(1).context("the token is not a compact JWS")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(body).context("the token is not base64url")?;
    serde_json::from_slice(&bytes).context("the token's claims are not JSON")
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
        let (cert, _) = der.split_at_checked(der.len() - rest.len()).context("bad certificate length")?;
        out.push(cert);
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
