//! The loopback redirect of the authorization code flow (RFC 8252, sections
//! 7.3 and 8.3): `hallmark login` listens on `127.0.0.1` on a port the
//! system picks, and the identity provider sends the person's browser back
//! to `http://127.0.0.1:PORT/callback?code=…&state=…`.
//!
//! Anything on this machine can connect to that port, and any web page the
//! person has open can make the browser request it. So a request counts only
//! when its `state` is the one this login sent (a forged redirect cannot
//! know it), and other requests are answered and ignored rather than ending
//! the login: a stray or hostile request must neither slip in a code nor
//! cut the person's sign-in short. With the right `state`, the provider's
//! `iss` (RFC 9207) must name the provider this login started at, which
//! stops a mix-up with another provider. `127.0.0.1` rather than
//! `localhost` so that no name resolution decides where the code goes
//! (RFC 8252 section 8.3).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::oidc::{Secret, constant_time_eq, oauth_error, printable};

/// The redirect path the provider registers for the CLI (any port).
const CALLBACK_PATH: &str = "/callback";
/// The most of a request's head read: a redirect's URL is well under this.
const MAX_HEAD: usize = 16 * 1024;
/// How long one connection may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 32;

/// What a redirect must match to be this login's.
#[derive(Debug)]
pub(crate) struct Expect {
    /// The `state` sent with the authorization request.
    pub(crate) state: String,
    /// The provider's issuer, for `iss`.
    pub(crate) issuer: String,
    /// Refuse a redirect without `iss` (the provider said it always sends one).
    pub(crate) require_iss: bool,
}

/// What one request to the loopback listener was.
#[derive(Debug, PartialEq)]
pub(crate) enum Callback {
    /// This login's authorization code.
    Code(Secret),
    /// Not a request for the redirect path (a browser's `/favicon.ico`).
    OtherPath,
    /// A redirect without this login's `state`: another sign-in's, or forged.
    ForeignState,
    /// The provider's error response for this login (RFC 6749 section 4.1.2.1).
    Refused { error: String, description: Option<String> },
    /// A redirect with this login's `state` that cannot be used.
    Malformed(String),
}

/// Judges a request for `target` (the request line's path and query).
pub(crate) fn parse_callback(target: &str, expect: &Expect) -> Callback {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path != CALLBACK_PATH {
        return Callback::OtherPath;
    }
    let params = parse_query(query);
    let all = |name: &str| params.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect::<Vec<_>>();
    match all("state").as_slice() {
        [state] if constant_time_eq(state, &expect.state) => {}
        _ => return Callback::ForeignState,
    }
    // RFC 6749 section 3.1: no parameter may appear twice.
    let one = |name: &str| match all(name).as_slice() {
        [] => Ok(None),
        [v] => Ok(Some((*v).to_owned())),
        _ => Err(Callback::Malformed(format!("carries `{name}` more than once"))),
    };
    let read = || -> Result<Callback, Callback> {
        match one("iss")? {
            Some(iss) if iss != expect.issuer => {
                return Err(Callback::Malformed(format!(
                    "names issuer `{}`, not `{}` where this login started",
                    printable(&iss),
                    expect.issuer
                )));
            }
            None if expect.require_iss => {
                return Err(Callback::Malformed("has no `iss` though the provider says it always sends one".into()));
            }
            _ => {}
        }
        if let Some(error) = one("error")? {
            return Ok(Callback::Refused { error, description: one("error_description")? });
        }
        match one("code")? {
            Some(code) if !code.is_empty() => Ok(Callback::Code(Secret::new(code))),
            _ => Err(Callback::Malformed("carries no authorization code".into())),
        }
    };
    read().unwrap_or_else(|bad| bad)
}

/// `k=v&…` with percent-escapes and `+` decoded (an escape that is not one
/// is kept as it is).
fn parse_query(query: &str) -> Vec<(String, String)> {
    fn decode(text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            let hex = || {
                let pair = bytes.get(i + 1..i + 3)?;
                u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()
            };
            match b {
                b'+' => out.push(b' '),
                b'%' if hex().is_some() => {
                    out.extend(hex());
                    i += 2;
                }
                other => out.push(other),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// The listening socket and the redirect URI that names it.
pub(crate) struct Loopback {
    listener: TcpListener,
    redirect_uri: String,
}

impl Loopback {
    /// Listens on `127.0.0.1` on a port the system picks.
    pub(crate) async fn bind() -> anyhow::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("cannot listen on 127.0.0.1 for the identity provider's redirect")?;
        let port = listener.local_addr()?.port();
        Ok(Self { listener, redirect_uri: format!("http://127.0.0.1:{port}{CALLBACK_PATH}") })
    }

    /// `http://127.0.0.1:PORT/callback`.
    pub(crate) fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// Waits until `deadline` for the redirect that carries this login's
    /// `state`, and returns its code. Each request is answered with a small
    /// page saying what happened; the listener closes when this returns.
    pub(crate) async fn wait(self, expect: Expect, deadline: Instant) -> anyhow::Result<Secret> {
        let expect = Arc::new(expect);
        let (tx, mut rx) = mpsc::channel::<Callback>(MAX_CONNECTIONS);
        // Dropped on return, which ends every connection still being served.
        let mut serving = JoinSet::new();
        let timeout = tokio::time::sleep_until(deadline);
        tokio::pin!(timeout);
        loop {
            tokio::select! {
                () = &mut timeout => {
                    bail!("the sign-in was not completed in time: no redirect from the identity provider reached \
                           {}; run `hallmark login` again", self.redirect_uri);
                }
                // A connection served (or timed out) makes room for the next.
                Some(_) = serving.join_next(), if !serving.is_empty() => {}
                accepted = self.listener.accept(), if serving.len() < MAX_CONNECTIONS => {
                    // A failed accept (a connection reset before it was
                    // taken) concerns that connection only.
                    if let Ok((stream, _)) = accepted {
                        serving.spawn(serve(stream, Arc::clone(&expect), tx.clone()));
                    }
                }
                Some(callback) = rx.recv() => match callback {
                    Callback::Code(code) => return Ok(code),
                    Callback::OtherPath => {}
                    Callback::ForeignState => eprintln!(
                        "warning: ignored a request to {} whose state is not this sign-in's (an earlier attempt's \
                         page, or a forgery); still waiting",
                        self.redirect_uri
                    ),
                    Callback::Refused { error, description } => {
                        bail!("the identity provider refused the sign-in: {}", oauth_error(&error, &description))
                    }
                    Callback::Malformed(why) => bail!("the identity provider's redirect {why}"),
                },
            }
        }
    }
}

/// Reads one request from `stream`, answers it, and reports what it was.
/// The page is written before the report, so the person's browser shows it
/// even when the report ends the login (and this task with it).
async fn serve(mut stream: TcpStream, expect: Arc<Expect>, tx: mpsc::Sender<Callback>) {
    let answered = tokio::time::timeout(READ_TIMEOUT, async {
        let head = read_head(&mut stream).await?;
        let callback = match request_target(&head) {
            Some(target) => parse_callback(target, &expect),
            None => Callback::OtherPath,
        };
        stream.write_all(page(&callback).as_bytes()).await?;
        stream.shutdown().await?;
        Ok::<_, std::io::Error>(callback)
    })
    .await;
    if let Ok(Ok(callback)) = answered {
        let _ = tx.send(callback).await;
    }
}

/// The request line and headers, up to the blank line.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend(chunk.iter().take(n));
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            return Ok(String::from_utf8_lossy(&buf).into_owned());
        }
        if buf.len() > MAX_HEAD {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "request head too large"));
        }
    }
}

/// The target of a `GET` request line (`GET /callback?… HTTP/1.1`).
fn request_target(head: &str) -> Option<&str> {
    let line = head.lines().next()?;
    let mut parts = line.split(' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("GET"), Some(target), Some(version)) if version.starts_with("HTTP/1.") => Some(target),
        _ => None,
    }
}

/// The HTTP answer for `callback`: a short page for the person, never
/// echoing the code; no caching and no referrer, so the redirect's URL goes
/// nowhere else.
fn page(callback: &Callback) -> String {
    let (status, text) = match callback {
        Callback::Code(_) => ("200 OK", "Signed in. You can close this tab and return to the terminal.".to_owned()),
        Callback::Refused { error, .. } => (
            "200 OK",
            format!("The identity provider refused the sign-in ({}). Return to the terminal.", printable(error)),
        ),
        Callback::ForeignState => (
            "400 Bad Request",
            "This redirect does not belong to the waiting hallmark login (its state does not match).".to_owned(),
        ),
        Callback::Malformed(_) => {
            ("400 Bad Request", "This redirect cannot be used; see the terminal for why.".to_owned())
        }
        Callback::OtherPath => ("404 Not Found", "Not found.".to_owned()),
    };
    let body = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>hallmark login</title></head>\
         <body><p>{}</p></body></html>\n",
        escape_html(&text)
    );
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nReferrer-Policy: no-referrer\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expect() -> Expect {
        Expect { state: "s-123".into(), issuer: "https://idp.example".into(), require_iss: true }
    }

    #[test]
    fn the_code_of_this_login_is_taken() {
        let cb = parse_callback("/callback?code=c%2Fd+e&state=s-123&iss=https%3A%2F%2Fidp.example", &expect());
        assert_eq!(cb, Callback::Code(Secret::new("c/d e".into())));
        assert!(!format!("{cb:?}").contains("c/d"), "the code is never shown: {cb:?}");
        // Without RFC 9207 support, `iss` may be absent.
        let lax = Expect { require_iss: false, ..expect() };
        assert_eq!(parse_callback("/callback?state=s-123&code=x", &lax), Callback::Code(Secret::new("x".into())));
    }

    #[test]
    fn another_state_is_ignored_not_fatal() {
        let e = expect();
        for target in [
            "/callback?code=x&state=s-124&iss=https%3A%2F%2Fidp.example",
            "/callback?code=x&iss=https%3A%2F%2Fidp.example",
            "/callback?code=x&state=s-123&state=s-123",
            "/callback?code=x&state=S-123",
            "/callback?error=access_denied&state=other",
        ] {
            assert_eq!(parse_callback(target, &e), Callback::ForeignState, "{target}");
        }
        assert_eq!(parse_callback("/favicon.ico", &e), Callback::OtherPath);
        assert_eq!(parse_callback("/callbackx?state=s-123&code=x", &e), Callback::OtherPath);
    }

    #[test]
    fn the_providers_error_is_reported() {
        let cb = parse_callback(
            "/callback?error=access_denied&error_description=End-User+aborted+interaction&state=s-123\
             &iss=https%3A%2F%2Fidp.example",
            &expect(),
        );
        assert_eq!(
            cb,
            Callback::Refused {
                error: "access_denied".into(),
                description: Some("End-User aborted interaction".into())
            }
        );
    }

    #[test]
    fn unusable_redirects_are_refused() {
        let e = expect();
        let malformed = |target: &str| match parse_callback(target, &e) {
            Callback::Malformed(why) => why,
            other => panic!("{target}: {other:?}"),
        };
        assert!(malformed("/callback?state=s-123&iss=https%3A%2F%2Fidp.example").contains("no authorization code"));
        assert!(malformed("/callback?state=s-123&code=&iss=https%3A%2F%2Fidp.example").contains("no authorization"));
        assert!(malformed("/callback?state=s-123&code=x&iss=https%3A%2F%2Fevil.example").contains("evil.example"));
        assert!(malformed("/callback?state=s-123&code=x").contains("no `iss`"));
        assert!(
            malformed("/callback?state=s-123&code=x&code=y&iss=https%3A%2F%2Fidp.example").contains("more than once")
        );
    }

    #[test]
    fn request_lines_and_pages() {
        assert_eq!(request_target("GET /callback?a=b HTTP/1.1\r\nHost: x\r\n\r\n"), Some("/callback?a=b"));
        assert_eq!(request_target("POST /callback HTTP/1.1\r\n\r\n"), None);
        assert_eq!(request_target("GET /callback\r\n\r\n"), None);
        let p = page(&Callback::Refused { error: "<script>".into(), description: None });
        assert!(p.contains("&lt;script&gt;") && !p.contains("<script>"), "{p}");
        assert!(!page(&Callback::Code(Secret::new("the-code".into()))).contains("the-code"));
        assert_eq!(
            parse_query("a=%41%zz&b&=c&"),
            vec![("a".to_owned(), "A%zz".to_owned()), ("b".to_owned(), String::new()), (String::new(), "c".to_owned())]
        );
    }

    /// The listener takes the redirect with the right state, after ignoring
    /// a stray request and one with another state, while a silent
    /// connection stays open.
    #[tokio::test]
    async fn the_listener_waits_for_this_logins_redirect() {
        let lb = Loopback::bind().await.unwrap();
        let uri = lb.redirect_uri().to_owned();
        let addr = uri.trim_start_matches("http://").trim_end_matches("/callback").to_owned();
        let get = |target: &'static str| {
            let addr = addr.clone();
            async move {
                let mut s = TcpStream::connect(&addr).await.unwrap();
                s.write_all(format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await.unwrap();
                let mut answer = String::new();
                s.read_to_string(&mut answer).await.unwrap();
                answer
            }
        };
        let waiting =
            tokio::spawn(lb.wait(Expect { require_iss: false, ..expect() }, Instant::now() + Duration::from_secs(10)));
        // A browser's speculative connection that sends nothing holds up no other.
        let _silent = TcpStream::connect(&addr).await.unwrap();
        assert!(get("/favicon.ico").await.starts_with("HTTP/1.1 404"));
        assert!(get("/callback?code=evil&state=guess").await.starts_with("HTTP/1.1 400"));
        assert!(get("/callback?code=good&state=s-123").await.starts_with("HTTP/1.1 200"));
        assert_eq!(waiting.await.unwrap().unwrap(), Secret::new("good".into()));
    }

    #[tokio::test]
    async fn the_listener_gives_up_at_the_deadline() {
        let lb = Loopback::bind().await.unwrap();
        let err = lb.wait(expect(), Instant::now() + Duration::from_millis(50)).await.unwrap_err().to_string();
        assert!(err.contains("not completed in time"), "{err}");
    }
}
