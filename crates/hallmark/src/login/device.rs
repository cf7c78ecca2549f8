//! The device authorization grant (RFC 8628), for a terminal with no
//! browser (over SSH, in a container): the provider gives a short user code
//! and a URL; the person opens the URL on any device, enters the code and
//! signs in there, while `hallmark login` polls the token endpoint.
//!
//! The polling rules are the RFC's (section 3.5): wait `interval` seconds
//! (5 when the provider gives none) between polls, add 5 seconds at each
//! `slow_down`, back off when the provider cannot be reached, and stop at
//! `expired_token`, `access_denied` or when the device code expires. They
//! are kept in [`Poller`], apart from the waiting and the requests, so that
//! they can be checked without a provider or a clock.

use std::time::Duration;

use anyhow::{Context, bail};
use hallmark_http::{Answer, HttpError, HttpsUrl};
use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;

use super::oidc::{Provider, Secret, TokenAnswer, oauth_error, printable, token_answer};

/// The grant type of a device code poll.
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// The wait between polls when the provider names none (RFC 8628 section 3.2).
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// What each `slow_down` adds to the wait (RFC 8628 section 3.5).
const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);
/// The longest wait between polls, however often the provider says to slow
/// down or cannot be reached.
const MAX_INTERVAL: Duration = Duration::from_secs(60);

/// The device authorization answer (RFC 8628 section 3.2).
#[derive(Deserialize)]
struct DeviceAuthorization {
    device_code: String,
    user_code: String,
    /// `verification_url` is what some providers (Google) call it.
    #[serde(alias = "verification_url")]
    verification_uri: String,
    #[serde(default)]
    verification_uri_complete: Option<String>,
    expires_in: u64,
    #[serde(default)]
    interval: Option<u64>,
}

/// Runs the device flow at `endpoint` and returns the ID token, or fails at
/// `deadline` at the latest (earlier when the device code expires sooner).
pub(crate) async fn sign_in(
    provider: &Provider,
    endpoint: &HttpsUrl,
    client_id: &str,
    scope: &str,
    nonce: &str,
    deadline: Instant,
) -> anyhow::Result<Secret> {
    // The nonce is not part of RFC 8628; providers that accept OpenID
    // Connect parameters at this endpoint put it in the ID token, which
    // the Hallmark server requires.
    let form = [("client_id", client_id), ("scope", scope), ("nonce", nonce)];
    let answer =
        provider.post(endpoint, &form).await.with_context(|| format!("cannot start the device flow at {endpoint}"))?;
    if !answer.is_success() {
        let error = answer.body.get("error").and_then(Value::as_str).unwrap_or("no OAuth error given");
        let description = answer.body.get("error_description").and_then(Value::as_str).map(str::to_owned);
        bail!(
            "the identity provider refused to start the device flow (HTTP {}): {}",
            answer.status,
            oauth_error(error, &description)
        );
    }
    let auth: DeviceAuthorization =
        serde_json::from_value(answer.body).context("the identity provider's device authorization answer")?;
    let device_code = Secret::new(auth.device_code);
    let shown = auth.verification_uri_complete.unwrap_or(auth.verification_uri);
    // The person types a password at this URL: only HTTPS is offered.
    let url = HttpsUrl::parse(&shown).context("the identity provider's verification URL")?;
    eprintln!("To sign in, open {url} and enter the code {}", printable(&auth.user_code));
    let deadline = deadline.min(Instant::now() + Duration::from_secs(auth.expires_in));
    let mut poller = Poller::new(auth.interval, deadline);
    loop {
        let wait = poller.next_wait(Instant::now())?;
        tokio::time::sleep(wait).await;
        let form = [("grant_type", DEVICE_GRANT), ("device_code", device_code.expose()), ("client_id", client_id)];
        let answer = provider.post(provider.token_endpoint(), &form).await;
        if let Poll::Token(id_token) = poller.on_answer(answer)? {
            return Ok(id_token);
        }
    }
}

/// What to do after a poll.
#[derive(Debug, PartialEq)]
pub(crate) enum Poll {
    /// Signed in: the ID token.
    Token(Secret),
    /// Not yet: poll again after [`Poller::next_wait`].
    Again,
}

/// The polling state: the wait between polls and when to give up.
#[derive(Debug)]
pub(crate) struct Poller {
    interval: Duration,
    deadline: Instant,
}

impl Poller {
    /// Polls every `interval` seconds (the provider's; at least one second,
    /// five when absent) until `deadline`.
    pub(crate) fn new(interval: Option<u64>, deadline: Instant) -> Self {
        let interval =
            interval.map_or(DEFAULT_INTERVAL, Duration::from_secs).clamp(Duration::from_secs(1), MAX_INTERVAL);
        Self { interval, deadline }
    }

    /// How long to wait before the next poll, or why there is none: a poll
    /// that would come after the deadline would only be told the code
    /// expired.
    pub(crate) fn next_wait(&self, now: Instant) -> anyhow::Result<Duration> {
        if now + self.interval > self.deadline {
            bail!(
                "the sign-in was not completed in time (the device code expired, or 10 minutes passed); run \
                 `hallmark login` again"
            );
        }
        Ok(self.interval)
    }

    /// Reads one poll's answer (RFC 8628 section 3.5).
    pub(crate) fn on_answer(&mut self, answer: Result<Answer<Value>, HttpError>) -> anyhow::Result<Poll> {
        let answer = match answer {
            Ok(a) => a,
            // RFC 8628 section 3.5: on a connection timeout, poll less often.
            Err(HttpError::Io(_) | HttpError::Timeout(_)) => {
                self.interval = (self.interval * 2).min(MAX_INTERVAL);
                return Ok(Poll::Again);
            }
            Err(HttpError::Status(s)) if s >= 500 => {
                self.interval = (self.interval * 2).min(MAX_INTERVAL);
                return Ok(Poll::Again);
            }
            Err(e) => return Err(anyhow::Error::new(e).context("cannot read the identity provider's token answer")),
        };
        match token_answer(answer)? {
            TokenAnswer::IdToken(t) => Ok(Poll::Token(t)),
            TokenAnswer::Error { error, description } => match error.as_str() {
                "authorization_pending" => Ok(Poll::Again),
                "slow_down" => {
                    self.interval = (self.interval + SLOW_DOWN_STEP).min(MAX_INTERVAL);
                    Ok(Poll::Again)
                }
                "expired_token" => {
                    bail!("the device code expired before the sign-in was completed; run `hallmark login` again")
                }
                "access_denied" => bail!("the sign-in was declined at the identity provider (access_denied)"),
                _ => bail!("the identity provider refused the device code: {}", oauth_error(&error, &description)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn error(code: &str) -> Result<Answer<Value>, HttpError> {
        Ok(Answer { status: 400, body: json!({ "error": code }) })
    }

    #[test]
    fn pending_polls_again_at_the_same_interval() {
        let now = Instant::now();
        let mut p = Poller::new(Some(2), now + Duration::from_secs(60));
        assert_eq!(p.on_answer(error("authorization_pending")).unwrap(), Poll::Again);
        assert_eq!(p.next_wait(now).unwrap(), Duration::from_secs(2));
        let done = Ok(Answer { status: 200, body: json!({ "id_token": "h.p.s", "token_type": "Bearer" }) });
        assert_eq!(p.on_answer(done).unwrap(), Poll::Token(Secret::new("h.p.s".into())));
    }

    #[test]
    fn slow_down_adds_five_seconds_each_time() {
        let now = Instant::now();
        let mut p = Poller::new(None, now + Duration::from_secs(600));
        assert_eq!(p.next_wait(now).unwrap(), Duration::from_secs(5));
        assert_eq!(p.on_answer(error("slow_down")).unwrap(), Poll::Again);
        assert_eq!(p.next_wait(now).unwrap(), Duration::from_secs(10));
        p.on_answer(error("slow_down")).unwrap();
        assert_eq!(p.next_wait(now).unwrap(), Duration::from_secs(15));
        p.on_answer(error("authorization_pending")).unwrap();
        assert_eq!(p.next_wait(now).unwrap(), Duration::from_secs(15), "pending keeps the slowed interval");
    }

    #[test]
    fn expired_and_denied_end_the_login() {
        let mut p = Poller::new(Some(1), Instant::now() + Duration::from_secs(60));
        let expired = p.on_answer(error("expired_token")).unwrap_err().to_string();
        assert!(expired.contains("expired") && expired.contains("hallmark login"), "{expired}");
        let denied = p.on_answer(error("access_denied")).unwrap_err().to_string();
        assert!(denied.contains("declined"), "{denied}");
        let other = p
            .on_answer(Ok(Answer { status: 400, body: json!({"error": "invalid_grant", "error_description": "gone"}) }))
            .unwrap_err()
            .to_string();
        assert!(other.contains("invalid_grant (gone)"), "{other}");
        let not_json = p.on_answer(Err(HttpError::Status(403))).unwrap_err();
        assert!(format!("{not_json:#}").contains("403"), "{not_json:#}");
    }

    #[test]
    fn unreachable_provider_means_polling_less_often() {
        let now = Instant::now();
        let mut p = Poller::new(Some(5), now + Duration::from_secs(600));
        assert_eq!(p.on_answer(Err(HttpError::Timeout(Duration::from_secs(15)))).unwrap(), Poll::Again);
        assert_eq!(p.next_wait(now).unwrap(), Duration::from_secs(10));
        assert_eq!(p.on_answer(Err(HttpError::Status(503))).unwrap(), Poll::Again);
        assert_eq!(p.next_wait(now).unwrap(), Duration::from_secs(20));
        for _ in 0..10 {
            p.on_answer(error("slow_down")).unwrap();
        }
        assert_eq!(p.next_wait(now).unwrap(), MAX_INTERVAL);
    }

    #[test]
    fn no_poll_after_the_deadline() {
        let now = Instant::now();
        let p = Poller::new(Some(5), now + Duration::from_secs(12));
        assert!(p.next_wait(now).is_ok());
        assert!(p.next_wait(now + Duration::from_secs(7)).is_ok());
        let late = p.next_wait(now + Duration::from_secs(8)).unwrap_err().to_string();
        assert!(late.contains("not completed in time"), "{late}");
        assert_eq!(Poller::new(Some(0), now).interval, Duration::from_secs(1), "an interval of 0 is read as 1 s");
    }
}
