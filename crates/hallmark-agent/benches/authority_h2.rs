//! The whole cost of dropping `:authority`, the HTTP/2 server's side
//! included: gRPC-shaped calls from h2's client (the HTTP/2 stack under
//! tonic, which names every repeated field from its dynamic table) to h2's
//! server, in one thread over an in-memory pipe, with the server reading
//! through [`ClientStream`] or straight from the pipe. The difference is the
//! rewrite plus the server decoding literals where it used to look fields up
//! in its own dynamic table.
//!
//! `cargo bench -p hallmark-agent --bench authority_h2`
//!
//! Rounds alternate between the two and the fastest round of each counts,
//! which keeps other processes on a shared machine out of the figure.

#![expect(clippy::unwrap_used, reason = "a benchmark stops at its first failure")]

use std::time::{Duration, Instant};

use bytes::Bytes;
use hallmark_agent::client_stream::{ClientStream, PREFACE_TIMEOUT};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};

/// The allocator the `hallmark` binary uses.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CALLS: u32 = 20_000;
const ROUNDS: usize = 5;

async fn serve<T: AsyncRead + AsyncWrite + Unpin>(io: T) {
    let mut conn = h2::server::handshake(io).await.unwrap();
    while let Some(r) = conn.accept().await {
        let (req, mut respond) = r.unwrap();
        let mut body = req.into_body();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            body.flow_control().release_capacity(chunk.len()).unwrap();
        }
        let response = http::Response::builder().header("content-type", "application/grpc").body(()).unwrap();
        let mut send = respond.send_response(response, false).unwrap();
        send.send_data(Bytes::from_static(&[0, 0, 0, 0, 3, 0x0a, 1, b'x']), false).unwrap();
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        send.send_trailers(trailers).unwrap();
    }
}

/// `CALLS` calls, one after another; returns the time per call.
async fn round(rewrite: bool) -> Duration {
    let (client_io, server_io): (DuplexStream, DuplexStream) = tokio::io::duplex(64 * 1024);
    let server = if rewrite {
        tokio::spawn(serve(ClientStream::new(server_io, PREFACE_TIMEOUT)))
    } else {
        tokio::spawn(serve(server_io))
    };
    let (client, conn) = h2::client::handshake(client_io).await.unwrap();
    let conn = tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let t = Instant::now();
    for _ in 0..CALLS {
        let request = http::Request::builder()
            .method("POST")
            .uri("http://localhost/SpiffeWorkloadAPI/FetchJWTSVID")
            .header("te", "trailers")
            .header("content-type", "application/grpc")
            .header("user-agent", "tonic/0.14.9")
            .header("workload.spiffe.io", "true")
            .body(())
            .unwrap();
        let (response, mut send) = client.send_request(request, false).unwrap();
        send.send_data(Bytes::from_static(&[0, 0, 0, 0, 7, 0x0a, 5, b'b', b'e', b'n', b'c', b'h']), true).unwrap();
        let mut body = response.await.unwrap().into_body();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            body.flow_control().release_capacity(chunk.len()).unwrap();
        }
        body.trailers().await.unwrap();
        client = client.ready().await.unwrap();
    }
    let per_call = t.elapsed() / CALLS;
    drop(client);
    conn.abort();
    server.abort();
    per_call
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let (mut plain, mut rewritten) = (Duration::MAX, Duration::MAX);
    for _ in 0..ROUNDS {
        plain = plain.min(round(false).await);
        rewritten = rewritten.min(round(true).await);
    }
    let extra = rewritten.saturating_sub(plain);
    println!("| h2 client to h2 server, one thread | fastest of {ROUNDS} rounds of {CALLS} calls |\n|---|---:|");
    println!("| server reads the pipe (before) | {} ns per call |", plain.as_nanos());
    println!("| server reads through ClientStream (`:authority` dropped) | {} ns per call |", rewritten.as_nanos());
    println!(
        "| difference | {} ns per call ({:.1}%) |",
        extra.as_nanos(),
        100.0 * extra.as_secs_f64() / plain.as_secs_f64()
    );
}
