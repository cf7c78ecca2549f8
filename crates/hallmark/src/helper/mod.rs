//! `hallmark helper`: for software that reads its certificate from files
//! (nginx, databases, daemons), what spiffe-helper is for SPIRE.
//!
//! It keeps a `FetchX509SVID` stream open on the Workload API and, at every
//! rotation, writes the SVID's chain, key and bundle (and JWT-SVIDs for
//! configured audiences) atomically to a directory ([`files`]), then tells
//! the reader ([`reload`]) and reports the delivery to the agent, which
//! records it in the server's inventory (`delivered_to`).
//!
//! Fail closed. When the agent is unreachable the files stay while they are
//! valid and are removed at their expiry; then the helper exits non-zero,
//! or, with `--health-listen`, stays up with `/ready` failing and keeps
//! reconnecting. When the agent answers PermissionDenied (this process has
//! no identity any more) the files are removed at once and the helper keeps
//! asking, as the SPIFFE Workload API says clients should. Every failure is
//! logged. Stopping the helper leaves the files; they expire by themselves.

mod files;
mod health;
mod reload;
mod settings;

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use hallmark_core::now_unix;
use hallmark_proto::agent::ReportDeliveryRequest;
use hallmark_proto::agent::delivery_client::DeliveryClient;
use hallmark_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use hallmark_proto::workload::{JwtsvidRequest, X509svid, X509svidRequest};
use tonic::transport::Channel;
use tonic::{Code, Status};

pub use settings::HelperArgs;
use settings::Settings;

use crate::api::{der_certs, request, split_pem};

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long `--once` keeps trying to reach the agent.
const ONCE_DEADLINE: Duration = Duration::from_secs(30);
/// Most credentials named in one delivery report (the agent's limit).
const REPORT_BATCH: usize = 16;

/// The X.509-SVID whose files are on disk.
struct WrittenX509 {
    serial: String,
    spiffe_id: String,
    not_after: i64,
    bundle: Vec<u8>,
}

/// A JWT-SVID whose file is on disk.
struct WrittenJwt {
    not_after: i64,
    refresh_at: i64,
}

/// Clients on the agent's socket.
struct Agent {
    workload: SpiffeWorkloadApiClient<Channel>,
    delivery: DeliveryClient<Channel>,
}

impl Agent {
    async fn connect(settings: &Settings) -> anyhow::Result<Self> {
        let ch = crate::api::channel(settings.socket.clone())
            .await
            .with_context(|| format!("agent socket {}", settings.socket.display()))?;
        Ok(Self { workload: SpiffeWorkloadApiClient::new(ch.clone()), delivery: DeliveryClient::new(ch) })
    }
}

/// The helper's state.
struct Helper {
    settings: Settings,
    readiness: health::Readiness,
    /// The last SVID the agent sent for us (written, or to be written).
    latest: Option<X509svid>,
    x509: Option<WrittenX509>,
    jwts: HashMap<String, WrittenJwt>,
    jwt_retry_at: i64,
    /// Serials and jtis written but not yet recorded by the agent.
    unreported: Vec<String>,
    report_retry_at: i64,
    /// What went wrong last, for `/ready`.
    problem: Option<String>,
    /// Files were removed because they expired while the agent was away.
    expired: bool,
}

/// Runs `hallmark helper`.
pub async fn run(args: HelperArgs) -> anyhow::Result<()> {
    let settings = Settings::new(args)?;
    std::fs::create_dir_all(&settings.dir).with_context(|| format!("cannot create {}", settings.dir.display()))?;
    let readiness = health::Readiness::new();
    if let Some(addr) = &settings.health_listen {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (--health-listen)"))?;
        tracing::info!(addr = %l.local_addr()?, "health endpoint: /live /ready");
        let r = readiness.clone();
        tokio::spawn(async move {
            if let Err(e) = health::serve(l, r).await {
                tracing::error!(error = %e, "health endpoint stopped");
            }
        });
    }
    let mut helper = Helper {
        settings,
        readiness,
        latest: None,
        x509: None,
        jwts: HashMap::new(),
        jwt_retry_at: 0,
        unreported: Vec::new(),
        report_retry_at: 0,
        problem: None,
        expired: false,
    };
    if helper.settings.once {
        return helper.once().await;
    }
    tokio::select! {
        r = helper.follow() => r,
        () = shutdown() => {
            tracing::info!("stopping; the files stay until they expire");
            Ok(())
        }
    }
}

async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// `exp`, `iat` and `jti` of a JWT-SVID (read, not verified: it came from the agent).
#[expect(
    clippy::indexing_slicing,
    reason = "serde_json::Value read by key: a missing key reads as Null, never a panic"
)]
fn jwt_claims(token: &str) -> anyhow::Result<(i64, i64, String)> {
    let payload = token.split('.').nth(1).context("JWT-SVID is not a compact JWS")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).context("JWT-SVID payload")?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).context("JWT-SVID payload")?;
    let exp = v["exp"].as_i64().context("JWT-SVID has no `exp`")?;
    let iat = v["iat"].as_i64().unwrap_or_else(now_unix);
    Ok((exp, iat, v["jti"].as_str().unwrap_or_default().to_owned()))
}

impl Helper {
    /// Follows the agent until told to stop: one stream after another,
    /// reconnecting with backoff, doing the time-based duties every second.
    async fn follow(&mut self) -> anyhow::Result<()> {
        let mut backoff = Duration::from_millis(200);
        loop {
            match Agent::connect(&self.settings).await {
                Ok(mut agent) => match agent.workload.fetch_x509svid(request(X509svidRequest {})).await {
                    Ok(resp) => {
                        let mut stream = resp.into_inner();
                        let mut tick = tokio::time::interval(Duration::from_secs(1));
                        loop {
                            tokio::select! {
                                msg = stream.message() => match msg {
                                    Ok(Some(m)) => {
                                        backoff = Duration::from_millis(200);
                                        self.latest = m.svids.into_iter().find(|s| {
                                            self.settings.spiffe_id.as_ref().is_none_or(|id| s.spiffe_id == id.as_str())
                                        });
                                        if self.latest.is_none() {
                                            self.withdraw(&format!(
                                                "the agent serves this process no SVID for {}",
                                                self.settings.spiffe_id.as_ref().map(|i| i.as_str()).unwrap_or("-")
                                            ));
                                        }
                                        self.duties(Some(&mut agent)).await?;
                                    }
                                    Ok(None) => {
                                        self.failed("the agent ended the X.509-SVID stream".into());
                                        break;
                                    }
                                    Err(s) => {
                                        self.refused(&s);
                                        break;
                                    }
                                },
                                _ = tick.tick() => self.duties(Some(&mut agent)).await?,
                            }
                        }
                    }
                    Err(s) => self.refused(&s),
                },
                Err(e) => self.failed(format!("{e:#}")),
            }
            // Reconnect after the backoff; expiry goes on meanwhile.
            let until = tokio::time::Instant::now() + backoff;
            while tokio::time::Instant::now() < until {
                self.duties(None).await?;
                tokio::time::sleep(Duration::from_secs(1).min(until - tokio::time::Instant::now())).await;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// `--once`: write the files, run the reload, exit.
    async fn once(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + ONCE_DEADLINE;
        let mut agent = loop {
            match Agent::connect(&self.settings).await {
                Ok(a) => break a,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!(error = %format!("{e:#}"), "agent not reachable yet; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let mut stream =
            agent.workload.fetch_x509svid(request(X509svidRequest {})).await.map_err(crate::api::status)?.into_inner();
        let m = stream.message().await.map_err(crate::api::status)?.context("the agent ended the stream at once")?;
        self.latest =
            m.svids.into_iter().find(|s| self.settings.spiffe_id.as_ref().is_none_or(|id| s.spiffe_id == id.as_str()));
        if self.latest.is_none() {
            anyhow::bail!("the agent serves this process no SVID with the requested SPIFFE ID");
        }
        self.duties(Some(&mut agent)).await?;
        if self.x509.is_none() {
            anyhow::bail!("no SVID written: {}", self.problem.as_deref().unwrap_or("unknown reason"));
        }
        if let Some(j) = self.settings.jwts.iter().find(|j| !self.jwts.contains_key(&j.audience)) {
            anyhow::bail!("no JWT-SVID written for audience `{}` (see the log above)", j.audience);
        }
        Ok(())
    }

    /// Everything that depends on the time or on what arrived: write what is
    /// new, remove what expired, renew JWT-SVIDs, report deliveries, and
    /// update readiness. Fails only when the helper must exit.
    async fn duties(&mut self, agent: Option<&mut Agent>) -> anyhow::Result<()> {
        let now = now_unix();
        self.expire(now);
        if self.write_latest(now) {
            reload::after_rotation(&self.settings).await;
        }
        if let Some(agent) = agent {
            if self.refresh_jwts(agent, now).await {
                reload::after_rotation(&self.settings).await;
            }
            self.report(agent, now).await;
        }
        let missing_jwt = self.settings.jwts.iter().find(|j| !self.jwts.contains_key(&j.audience));
        let reason = match (&self.x509, missing_jwt) {
            (None, _) => Some(format!(
                "no valid SVID files in {}{}",
                self.settings.dir.display(),
                self.problem.as_ref().map(|p| format!(" ({p})")).unwrap_or_default()
            )),
            (Some(_), Some(j)) => Some(format!("no JWT-SVID for audience `{}`", j.audience)),
            (Some(_), None) => None,
        };
        self.readiness.set(reason);
        if self.expired && self.settings.health_listen.is_none() {
            anyhow::bail!(
                "the SVID files in {} expired before the agent sent a replacement and were removed; \
                 exiting (with --health-listen the helper stays up and reports not ready instead)",
                self.settings.dir.display()
            );
        }
        Ok(())
    }

    /// Writes the latest SVID if it is new; true when files changed.
    fn write_latest(&mut self, now: i64) -> bool {
        let Some(svid) = &self.latest else { return false };
        let leaf = match der_certs(&svid.x509_svid).and_then(|c| {
            let first = c.first().context("empty chain")?;
            Ok(hallmark_ca::svid::parse_leaf(first)?)
        }) {
            Ok(l) => l,
            Err(e) => {
                self.failed(format!("the agent sent an unusable SVID: {e:#}"));
                return false;
            }
        };
        if leaf.not_after <= now
            || self.x509.as_ref().is_some_and(|w| w.serial == leaf.serial && w.bundle == svid.bundle)
        {
            return false;
        }
        if let Err(e) = self.write_x509(svid) {
            self.failed(format!("{e:#}"));
            return false;
        }
        tracing::info!(
            spiffe_id = %svid.spiffe_id,
            serial = %leaf.serial,
            not_after = leaf.not_after,
            dir = %self.settings.dir.display(),
            "wrote SVID files"
        );
        if self.x509.as_ref().is_none_or(|w| w.spiffe_id != svid.spiffe_id) {
            // JWT-SVIDs follow the identity written: a new one means new tokens.
            self.jwts.clear();
            self.jwt_retry_at = 0;
        }
        self.x509 = Some(WrittenX509 {
            serial: leaf.serial.clone(),
            spiffe_id: svid.spiffe_id.clone(),
            not_after: leaf.not_after,
            bundle: svid.bundle.clone(),
        });
        self.problem = None;
        self.expired = false;
        self.queue_report(leaf.serial);
        true
    }

    fn write_x509(&self, svid: &X509svid) -> anyhow::Result<()> {
        let (s, dir) = (&self.settings, &self.settings.dir);
        let chain = split_pem(&svid.x509_svid)?;
        let key = pem::encode(&pem::Pem::new("PRIVATE KEY", svid.x509_svid_key.clone()));
        files::write_atomic(dir, &s.bundle_file, split_pem(&svid.bundle)?.as_bytes(), files::PUBLIC_MODE)?;
        files::write_atomic(dir, &s.key_file, key.as_bytes(), files::SECRET_MODE)?;
        files::write_atomic(dir, &s.cert_file, chain.as_bytes(), files::PUBLIC_MODE)?;
        if let Some(name) = &s.combined_file {
            files::write_atomic(dir, name, format!("{key}{chain}").as_bytes(), files::SECRET_MODE)?;
        }
        Ok(())
    }

    /// Removes whatever has expired.
    fn expire(&mut self, now: i64) {
        if let Some(w) = self.x509.as_ref().filter(|w| w.not_after <= now) {
            tracing::error!(
                serial = %w.serial,
                dir = %self.settings.dir.display(),
                "the SVID expired before the agent sent a replacement; removing its files (fail closed)"
            );
            self.remove_x509_files();
            self.expired = true;
        }
        let gone: Vec<String> =
            self.jwts.iter().filter(|(_, j)| j.not_after <= now).map(|(aud, _)| aud.clone()).collect();
        for aud in gone {
            tracing::error!(audience = %aud, "the JWT-SVID expired before it could be renewed; removing its file");
            self.remove_jwt(&aud);
        }
    }

    fn remove_x509_files(&mut self) {
        let s = &self.settings;
        let names = [Some(&s.cert_file), Some(&s.key_file), Some(&s.bundle_file), s.combined_file.as_ref()];
        for name in names.into_iter().flatten() {
            if let Err(e) = files::remove(&s.dir, name) {
                tracing::error!(error = %format!("{e:#}"), "cannot remove a credential file");
            }
        }
        self.x509 = None;
        self.latest = None;
    }

    fn remove_jwt(&mut self, audience: &str) {
        if let Some(j) = self.settings.jwts.iter().find(|j| j.audience == audience)
            && let Err(e) = files::remove(&self.settings.dir, &j.file)
        {
            tracing::error!(error = %format!("{e:#}"), "cannot remove a JWT-SVID file");
        }
        self.jwts.remove(audience);
    }

    /// The agent says this process has no identity (now): take everything away.
    fn withdraw(&mut self, why: &str) {
        if self.x509.is_some() || !self.jwts.is_empty() {
            tracing::error!(reason = why, dir = %self.settings.dir.display(), "identity withdrawn; removing the files");
        }
        self.remove_x509_files();
        for aud in self.jwts.keys().cloned().collect::<Vec<_>>() {
            self.remove_jwt(&aud);
        }
        self.problem = Some(why.to_owned());
    }

    fn refused(&mut self, s: &Status) {
        // The agent withdraws an SVID the second it expires: that is expiry, not a denial.
        self.expire(now_unix());
        if s.code() == Code::PermissionDenied {
            self.withdraw(&format!("the agent refused: {}", s.message()));
        } else {
            self.failed(format!("Workload API: {:?}: {}", s.code(), s.message()));
        }
    }

    fn failed(&mut self, problem: String) {
        tracing::warn!(problem = %problem, "retrying");
        self.problem = Some(problem);
    }

    /// Fetches the JWT-SVIDs that are missing or past half their life; true
    /// when a file changed.
    async fn refresh_jwts(&mut self, agent: &mut Agent, now: i64) -> bool {
        let Some(spiffe_id) = self.x509.as_ref().map(|w| w.spiffe_id.clone()) else { return false };
        if self.jwt_retry_at > now {
            return false;
        }
        let mut changed = false;
        for j in self.settings.jwts.clone() {
            if self.jwts.get(&j.audience).is_some_and(|w| w.refresh_at > now) {
                continue;
            }
            let req = JwtsvidRequest { audience: vec![j.audience.clone()], spiffe_id: spiffe_id.clone() };
            let token = match agent.workload.fetch_jwtsvid(request(req)).await {
                Ok(r) => r.into_inner().svids.into_iter().next().map(|s| s.svid),
                Err(s) => {
                    tracing::error!(audience = %j.audience, code = ?s.code(), status = %s.message(), "cannot fetch a JWT-SVID");
                    if s.code() == Code::PermissionDenied {
                        self.remove_jwt(&j.audience);
                    }
                    self.jwt_retry_at = now + 5;
                    continue;
                }
            };
            let written = token.context("the agent returned no JWT-SVID").and_then(|t| {
                let (exp, iat, jti) = jwt_claims(&t)?;
                files::write_atomic(&self.settings.dir, &j.file, t.as_bytes(), files::SECRET_MODE)?;
                Ok((exp, iat, jti))
            });
            match written {
                Ok((exp, iat, jti)) => {
                    tracing::info!(audience = %j.audience, file = %j.file, exp, "wrote JWT-SVID");
                    let refresh_at = (iat + (exp - iat) / 2).max(now + 1);
                    self.jwts.insert(j.audience.clone(), WrittenJwt { not_after: exp, refresh_at });
                    if !jti.is_empty() {
                        self.queue_report(jti);
                    }
                    changed = true;
                }
                Err(e) => {
                    tracing::error!(audience = %j.audience, error = %format!("{e:#}"), "cannot write a JWT-SVID");
                    self.jwt_retry_at = now + 5;
                }
            }
        }
        changed
    }

    fn queue_report(&mut self, id: String) {
        self.unreported.push(id);
        // Only the newest matter: older ones are superseded (and the agent no longer holds them).
        let excess = self.unreported.len().saturating_sub(REPORT_BATCH);
        self.unreported.drain(..excess);
        self.report_retry_at = 0;
    }

    /// Tells the agent which credentials went to files, so the inventory shows it.
    async fn report(&mut self, agent: &mut Agent, now: i64) {
        if self.unreported.is_empty() || self.report_retry_at > now {
            return;
        }
        let req = ReportDeliveryRequest { credential_ids: self.unreported.clone(), target: self.settings.target() };
        match agent.delivery.report_delivery(request(req)).await {
            Ok(r) => {
                tracing::info!(recorded = r.into_inner().recorded, target = %self.settings.target(), "delivery recorded in the inventory");
                self.unreported.clear();
            }
            Err(s) if matches!(s.code(), Code::Unavailable | Code::Internal | Code::DeadlineExceeded) => {
                tracing::warn!(code = ?s.code(), status = %s.message(), "delivery not recorded yet; will report again");
                self.report_retry_at = now + 5;
            }
            Err(s) => {
                // Unimplemented (an older agent), or the agent no longer holds them: nothing to retry.
                tracing::error!(code = ?s.code(), status = %s.message(), "delivery not recorded");
                self.unreported.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn jwt_claims_are_read() {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let token = format!("{}.{}.sig", b64("{}"), b64(r#"{"exp":200,"iat":100,"jti":"j1"}"#));
        assert_eq!(super::jwt_claims(&token).unwrap(), (200, 100, "j1".to_owned()));
        assert!(super::jwt_claims("nodots").is_err());
    }
}
