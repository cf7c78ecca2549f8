//! The probe workload: this process, attested by the drill's agent like any
//! workload. It keeps an X.509-SVID stream open (reconnecting as a SPIFFE
//! client must), records every message, and every 50 ms records whether what
//! it holds is a valid SVID: unexpired and chaining to the bundle it holds.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hallmark_proto::workload::X509svidRequest;
use tokio::task::JoinHandle;

use super::report::now_ms;
use crate::api::{connect, der_certs, request};

/// An SVID the probe held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Its SPIFFE ID.
    pub spiffe_id: String,
    /// Serial (hex), as the inventory names it.
    pub serial: String,
    /// Unix seconds.
    pub not_after: i64,
    /// The leaf's authority key identifier (hex): which authority signed it.
    pub issuer: String,
    /// DER chain, leaf first.
    pub chain: Vec<Vec<u8>>,
}

/// A stream message or the stream's end, as received.
#[derive(Debug, Clone)]
pub struct Message {
    /// Unix milliseconds.
    pub at_ms: i64,
    /// The SVIDs in it; empty when the stream ended with an error.
    pub svids: Vec<Held>,
    /// The status that ended the stream, if it ended.
    pub error: Option<String>,
}

/// What the probe held at one instant.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Unix milliseconds.
    pub at_ms: i64,
    /// The default SVID held, if any.
    pub held: Option<Held>,
    /// Whether it was valid at that instant (unexpired, chaining to the held bundle).
    pub valid: bool,
}

#[derive(Default)]
struct State {
    current: Option<(Held, Vec<Vec<u8>>)>,
    messages: Vec<Message>,
    samples: Vec<Sample>,
}

/// A running probe.
pub struct Probe {
    state: Arc<Mutex<State>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Probe {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn authority_key_id(leaf: &[u8]) -> String {
    use x509_parser::extensions::ParsedExtension;
    let Ok((_, c)) = x509_parser::parse_x509_certificate(leaf) else { return String::new() };
    c.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => a.key_identifier.as_ref().map(|k| hex::encode(k.0)),
            _ => None,
        })
        .unwrap_or_default()
}

fn held(chain_der: &[u8]) -> Option<Held> {
    let chain: Vec<Vec<u8>> = der_certs(chain_der).ok()?.into_iter().map(<[u8]>::to_vec).collect();
    let first = chain.first()?;
    let leaf = hallmark_ca::svid::parse_leaf(first).ok()?;
    let issuer = authority_key_id(first);
    Some(Held { spiffe_id: leaf.spiffe_id.to_string(), serial: leaf.serial, not_after: leaf.not_after, issuer, chain })
}

fn lock(s: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Probe {
    /// Starts watching the Workload API at `socket` (`unix:///...`).
    pub fn start(socket: String) -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let s = state.clone();
        let stream = tokio::spawn(async move {
            loop {
                let Ok(mut client) = connect(&socket).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let error = match client.fetch_x509svid(request(X509svidRequest {})).await {
                    Ok(resp) => {
                        let mut stream = resp.into_inner();
                        loop {
                            match stream.message().await {
                                Ok(Some(m)) => {
                                    let svids: Vec<Held> = m.svids.iter().filter_map(|x| held(&x.x509_svid)).collect();
                                    let bundle = m
                                        .svids
                                        .first()
                                        .and_then(|x| der_certs(&x.bundle).ok())
                                        .map(|v| v.into_iter().map(<[u8]>::to_vec).collect())
                                        .unwrap_or_default();
                                    let mut g = lock(&s);
                                    g.current = svids.first().cloned().map(|h| (h, bundle));
                                    g.messages.push(Message { at_ms: now_ms(), svids, error: None });
                                }
                                Ok(None) => break "stream ended".to_owned(),
                                Err(e) => break format!("{:?}: {}", e.code(), e.message()),
                            }
                        }
                    }
                    Err(e) => format!("{:?}: {}", e.code(), e.message()),
                };
                {
                    // Per the Workload API: on an error, stop using what was received.
                    let mut g = lock(&s);
                    if g.current.is_some() || g.messages.last().is_none_or(|m| m.error.is_none()) {
                        g.messages.push(Message { at_ms: now_ms(), svids: Vec::new(), error: Some(error) });
                    }
                    g.current = None;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let s = state.clone();
        let sampler = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let mut g = lock(&s);
                let at_ms = now_ms();
                let (held, valid) = match &g.current {
                    Some((h, bundle)) => {
                        let ok = hallmark_ca::tls::verify_svid(&h.chain, bundle, at_ms / 1000).is_ok();
                        (Some(h.clone()), ok)
                    }
                    None => (None, false),
                };
                g.samples.push(Sample { at_ms, held, valid });
            }
        });
        Self { state, tasks: vec![stream, sampler] }
    }

    /// The SVID held now.
    pub fn current(&self) -> Option<Held> {
        lock(&self.state).current.as_ref().map(|(h, _)| h.clone())
    }

    /// Waits up to `secs` for a message (after `after_ms`) that satisfies
    /// `f`; returns when it arrived.
    pub async fn wait_message(&self, secs: u64, after_ms: i64, f: impl Fn(&Message) -> bool) -> Option<i64> {
        let deadline = now_ms() + i64::try_from(secs).unwrap_or(60) * 1000;
        while now_ms() < deadline {
            if let Some(m) = lock(&self.state).messages.iter().rev().take_while(|m| m.at_ms >= after_ms).find(|m| f(m))
            {
                return Some(m.at_ms);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        None
    }

    /// Every message received so far.
    pub fn messages(&self) -> Vec<Message> {
        lock(&self.state).messages.clone()
    }

    /// Every sample so far.
    pub fn samples(&self) -> Vec<Sample> {
        lock(&self.state).samples.clone()
    }

    /// Waits up to `secs` for a held SVID matching `f`; returns when it arrived.
    pub async fn wait_for(&self, secs: u64, f: impl Fn(&Held) -> bool) -> Option<(i64, Held)> {
        let deadline = now_ms() + i64::try_from(secs).unwrap_or(60) * 1000;
        while now_ms() < deadline {
            if let Some(h) = self.current().filter(|h| f(h)) {
                return Some((now_ms(), h));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// Waits up to `secs` until nothing matching `f` is held; returns when.
    pub async fn wait_until_gone(&self, secs: u64, f: impl Fn(&Held) -> bool) -> Option<i64> {
        let deadline = now_ms() + i64::try_from(secs).unwrap_or(60) * 1000;
        while now_ms() < deadline {
            if !self.current().is_some_and(|h| f(&h)) {
                return Some(now_ms());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }
}

/// Messages that served an SVID already expired when they arrived.
pub fn expired_served(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .flat_map(|m| m.svids.iter().filter(move |h| h.not_after * 1000 <= m.at_ms).map(move |h| (m.at_ms, h)))
        .map(|(at, h)| {
            format!("serial {} (not after {}) at {at} ms", h.serial, hallmark_core::time::rfc3339(h.not_after))
        })
        .collect()
}

/// Windows (start ms, length ms) during which the probe held no valid SVID,
/// between `from` and `to`.
pub fn gaps(samples: &[Sample], from: i64, to: i64) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut start: Option<i64> = None;
    for s in samples.iter().filter(|s| s.at_ms >= from && s.at_ms <= to) {
        match (s.valid, start) {
            (false, None) => start = Some(s.at_ms),
            (true, Some(b)) => {
                out.push((b, s.at_ms - b));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(b) = start {
        out.push((b, to - b));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: i64, valid: bool) -> Sample {
        Sample { at_ms, held: None, valid }
    }

    #[test]
    fn gaps_are_the_invalid_windows() {
        let s = vec![sample(0, true), sample(50, false), sample(100, false), sample(150, true), sample(200, false)];
        assert_eq!(gaps(&s, 0, 300), vec![(50, 100), (200, 100)]);
        assert!(gaps(&s, 0, 40).is_empty());
    }

    #[test]
    fn expired_means_past_not_after_when_received() {
        let h = Held {
            spiffe_id: "spiffe://example.org/x".into(),
            serial: "01".into(),
            not_after: 10,
            issuer: String::new(),
            chain: Vec::new(),
        };
        let m = |at_ms| Message { at_ms, svids: vec![h.clone()], error: None };
        assert!(expired_served(&[m(9_999)]).is_empty());
        assert_eq!(expired_served(&[m(10_000)]).len(), 1);
    }
}
