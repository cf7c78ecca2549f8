//! Shared by the admin API tests: a server, one raw HTTP/1.1 call, and the
//! record of a fixture written straight to the store.

use hallmark_server::ServerState;
use hallmark_server::audit::Change;
use hallmark_store::Recorder;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.1 request with a JSON body; returns (status, body).
pub async fn call(addr: &str, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> (u16, Value) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    call_raw(addr, method, path, token, "application/json", body.as_bytes()).await
}

/// One HTTP/1.1 request with any body bytes and content type; returns
/// (status, body as JSON, or Null when it is not JSON).
pub async fn call_raw(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: &[u8],
) -> (u16, Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    // The server may answer (413) and close before reading a large body.
    let _ = s.write_all(body).await;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf);
    let status: u16 = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// A server for trust domain `example.org` on loopback ports, its data in
/// `dir`, on SQLite unless `datastore` names one.
pub async fn start_server(dir: &std::path::Path, datastore: Option<&str>) -> hallmark_server::RunningServer {
    start_server_with(dir, datastore, "").await
}

/// As [`start_server`], with `extra` TOML (tables) appended to the configuration.
pub async fn start_server_with(
    dir: &std::path::Path,
    datastore: Option<&str>,
    extra: &str,
) -> hallmark_server::RunningServer {
    let ds = datastore.map(|d| format!("datastore = \"{d}\"\n")).unwrap_or_default();
    let cfg = format!(
        "trust_domain = \"example.org\"\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{ds}{extra}",
        dir.display()
    );
    let settings = hallmark_server::config::ServerConfig::parse(&cfg, &Default::default()).unwrap().validate().unwrap();
    hallmark_server::start(settings).await.unwrap()
}

/// How a fixture written straight to the store is recorded: as the server
/// records a change, signed, so the chain stays whole.
pub fn fixture<T: ?Sized>(st: &ServerState) -> Recorder<'_, T> {
    st.record_change("test", "fixture", |_| Change::new("fixture", Value::Null))
}
