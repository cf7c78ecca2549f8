//! The pod attestor against a kubelet stand-in: no Kubernetes cluster can
//! run on the machines these tests run on, so a local HTTPS server
//! (`hallmark_testkit::localhost_tls`) answers `GET /pods` with pod
//! lists in the kubelet's format (tests/data/kubelet) and checks the bearer
//! token, as the kubelet's secure port does.

// Integration tests: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hallmark_agent::kubelet::{KubeletAttestor, KubeletError, KubeletSettings};
use hallmark_testkit::localhost_tls::ca_and_server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const POD: &str = "5d1c6b1e-7a3f-4c2e-9f11-2b9e0c8d4a70";
const APP: &str = "4a3d2b1c0f9e8d7c6b5a49382716051a2b3c4d5e6f708192a3b4c5d6e7f80912";
const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.service-account-token.sig";

fn recorded(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/data/kubelet/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// Serves `/pods`: `answers[i]` for the i-th request (the last one after),
/// 401 without the right token. Returns the port and the request count.
async fn kubelet(config: rustls::ServerConfig, answers: Vec<Vec<u8>>) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let Ok(mut tls) = acceptor.accept(tcp).await else { continue };
            let n = seen.fetch_add(1, Ordering::SeqCst);
            let body = answers.get(n).or(answers.last()).cloned().unwrap_or_default();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => request.extend_from_slice(&buf[..k]),
                }
            }
            let request = String::from_utf8_lossy(&request).to_ascii_lowercase();
            let authorized = request.starts_with("get /pods ")
                && request.contains(&format!("authorization: bearer {}", TOKEN.to_ascii_lowercase()));
            let (status, body) = if authorized { ("200 OK", body) } else { ("401 Unauthorized", b"{}".to_vec()) };
            let head = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = tls.write_all(head.as_bytes()).await;
            let _ = tls.write_all(&body).await;
            let _ = tls.shutdown().await;
        }
    });
    (port, count)
}

struct Files {
    _dir: tempfile::TempDir,
    settings: KubeletSettings,
}

fn files(port: u16, ca_pem: &str, token: &str) -> Files {
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.crt");
    let token_path = dir.path().join("token");
    std::fs::write(&ca_path, ca_pem).unwrap();
    std::fs::write(&token_path, format!("{token}\n")).unwrap();
    let settings = KubeletSettings { url: format!("https://localhost:{port}"), ca_path, token_path };
    Files { _dir: dir, settings }
}

#[tokio::test]
async fn pod_facts_after_the_container_is_listed() {
    let (ca, server) = ca_and_server();
    // The first two answers were taken while the container was being created.
    let answers = vec![recorded("pods-starting.json"), recorded("pods-starting.json"), recorded("pods.json")];
    let (port, count) = kubelet(server, answers).await;
    let f = files(port, &ca, TOKEN);
    let attestor = KubeletAttestor::new(f.settings.clone()).unwrap();
    let got: Vec<String> = attestor.selectors(POD, APP).await.unwrap().iter().map(ToString::to_string).collect();
    assert_eq!(count.load(Ordering::SeqCst), 3, "asked again until the container was listed");
    for want in ["k8s:ns:payments", "k8s:sa:api", "k8s:container-name:api", "k8s:pod-label:app:api"] {
        assert!(got.iter().any(|g| g == want), "{want} missing from {got:?}");
    }
    // Reused within its lifetime: no new request.
    attestor.selectors(POD, APP).await.unwrap();
    assert_eq!(count.load(Ordering::SeqCst), 3);
    // A container the kubelet never lists: refused after the retries.
    let err = attestor.selectors(POD, &"e".repeat(64)).await.unwrap_err();
    assert!(matches!(err, KubeletError::NotListed { .. }), "{err}");
}

#[tokio::test]
async fn wrong_token_wrong_ca_and_bad_settings_are_refused() {
    let (ca, server) = ca_and_server();
    let (port, _) = kubelet(server, vec![recorded("pods.json")]).await;
    let f = files(port, &ca, "not-the-token");
    let err = KubeletAttestor::new(f.settings.clone()).unwrap().selectors(POD, APP).await.unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");

    // A kubelet whose certificate another CA signed.
    let (other_ca, _) = ca_and_server();
    let f = files(port, &other_ca, TOKEN);
    let err = KubeletAttestor::new(f.settings.clone()).unwrap().selectors(POD, APP).await.unwrap_err();
    assert!(matches!(err, KubeletError::Request { .. }), "{err}");

    // Settings that cannot work are refused when the agent starts.
    let mut s = files(port, &ca, TOKEN).settings;
    s.url = format!("http://localhost:{port}");
    assert!(KubeletAttestor::new(s.clone()).unwrap_err().to_string().contains("https://"));
    s.url = format!("https://localhost:{port}");
    s.ca_path = "/nonexistent/ca.crt".into();
    assert!(KubeletAttestor::new(s).unwrap_err().to_string().contains("/nonexistent/ca.crt"));
}
