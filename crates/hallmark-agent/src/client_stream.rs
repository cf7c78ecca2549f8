//! A Workload API connection as the HTTP/2 server reads it.
//!
//! Reads: the client's bytes go through the [`Rewriter`] (which drops
//! `:authority`, see [`crate::authority`]) before the server sees them, and a
//! client that has not sent the whole connection preface within the preface
//! timeout is cut off, so a process that connects and says nothing (or half a
//! preface) does not hold a descriptor and a task for ever. Refused input ends
//! the read side with an error; the server then drops the connection.
//! Writes go to the socket untouched.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::authority::Rewriter;

/// How long a new Workload API connection may take to send the whole HTTP/2
/// client preface before it is closed.
pub const PREFACE_TIMEOUT: Duration = Duration::from_secs(10);

/// Rewritten bytes kept between reads are dropped back to nothing above this,
/// so an idle connection holds no large buffer.
const KEEP_CAPACITY: usize = 16 * 1024;

/// A client connection whose reads go through the authority rewriter.
pub struct ClientStream<S> {
    io: S,
    rewriter: Rewriter,
    /// Rewritten bytes not yet handed to the server, from `sent` on.
    out: Vec<u8>,
    sent: usize,
    /// Runs until the preface is complete; then dropped.
    preface_deadline: Option<Pin<Box<Sleep>>>,
    /// The read side was refused: only end-of-stream from now on.
    refused: bool,
}

impl<S> ClientStream<S> {
    /// Wraps a freshly accepted connection; the preface clock starts now.
    /// Must be called within a Tokio runtime.
    pub fn new(io: S, preface_timeout: Duration) -> Self {
        Self {
            io,
            rewriter: Rewriter::new(),
            out: Vec::new(),
            sent: 0,
            preface_deadline: Some(Box::pin(tokio::time::sleep(preface_timeout))),
            refused: false,
        }
    }

    /// Ends the read side with `kind`; later reads see end-of-stream.
    fn refuse(&mut self, kind: io::ErrorKind, why: String) -> Poll<io::Result<()>> {
        tracing::debug!(reason = %why, "workload API connection closed");
        self.refused = true;
        self.out = Vec::new();
        self.sent = 0;
        Poll::Ready(Err(io::Error::new(kind, why)))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ClientStream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            if let Some(pending) = this.out.get(this.sent..).filter(|p| !p.is_empty()) {
                let n = pending.len().min(buf.remaining());
                buf.put_slice(pending.get(..n).unwrap_or_default());
                this.sent += n;
                if this.sent == this.out.len() {
                    this.sent = 0;
                    this.out.clear();
                    if this.out.capacity() > KEEP_CAPACITY {
                        this.out = Vec::new();
                    }
                }
                return Poll::Ready(Ok(()));
            }
            if this.refused {
                return Poll::Ready(Ok(()));
            }
            if let Some(deadline) = this.preface_deadline.as_mut() {
                if this.rewriter.preface_complete() {
                    this.preface_deadline = None;
                } else if deadline.as_mut().poll(cx).is_ready() {
                    return this.refuse(io::ErrorKind::TimedOut, "no complete HTTP/2 preface in time".into());
                }
            }
            // Read into the server's buffer, then replace what was read by its rewrite.
            let before = buf.filled().len();
            ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
            let result = this.rewriter.feed(buf.filled().get(before..).unwrap_or_default(), &mut this.out);
            let eof = buf.filled().len() == before;
            buf.set_filled(before);
            if let Err(e) = result {
                return this.refuse(io::ErrorKind::InvalidData, format!("refused HTTP/2 input: {e}"));
            }
            if eof {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ClientStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixStream;

    use super::*;
    use crate::authority::PREFACE;

    const TIMEOUT: Duration = Duration::from_millis(300);

    /// A real socket pair: the client end, and the server end wrapped.
    fn pair() -> (UnixStream, ClientStream<UnixStream>) {
        let (client, server) = UnixStream::pair().unwrap();
        (client, ClientStream::new(server, TIMEOUT))
    }

    /// Reads until the wrapped end errors or ends; returns what it read and how it ended.
    async fn read_to_end(s: &mut ClientStream<UnixStream>) -> (Vec<u8>, io::Result<()>) {
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            match s.read(&mut buf).await {
                Ok(0) => return (got, Ok(())),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => return (got, Err(e)),
            }
        }
    }

    #[tokio::test]
    async fn a_client_that_sends_nothing_or_half_a_preface_is_cut_off() {
        for sent in [&b""[..], &PREFACE[..12]] {
            let (mut client, mut server) = pair();
            client.write_all(sent).await.unwrap();
            let t = Instant::now();
            let (got, end) = read_to_end(&mut server).await;
            assert_eq!(got, sent, "what arrived is handed on");
            assert_eq!(end.unwrap_err().kind(), io::ErrorKind::TimedOut);
            assert!(t.elapsed() >= TIMEOUT - Duration::from_millis(20), "{:?}", t.elapsed());
            // Then only end-of-stream.
            assert_eq!(server.read(&mut [0u8; 8]).await.unwrap(), 0);
        }
    }

    #[tokio::test]
    async fn a_complete_preface_stops_the_clock() {
        let (mut client, mut server) = pair();
        client.write_all(PREFACE).await.unwrap();
        let mut got = vec![0u8; PREFACE.len()];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(got, PREFACE);
        // Well past the timeout, the connection still waits for the client.
        let waited = tokio::time::timeout(TIMEOUT * 3, server.read(&mut [0u8; 8])).await;
        assert!(waited.is_err(), "the read was still pending: {waited:?}");
        // And the client can still talk.
        let settings = [0, 0, 0, 4, 0, 0, 0, 0, 0];
        client.write_all(&settings).await.unwrap();
        let mut got = [0u8; 9];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(got, settings);
    }

    #[tokio::test]
    async fn refused_input_ends_the_read_side_and_writes_pass_through() {
        let (mut client, mut server) = pair();
        client.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let (got, end) = read_to_end(&mut server).await;
        assert!(got.is_empty());
        assert_eq!(end.unwrap_err().kind(), io::ErrorKind::InvalidData);
        server.write_all(b"server bytes").await.unwrap();
        let mut back = [0u8; 12];
        client.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"server bytes");
    }

    #[tokio::test]
    async fn the_server_reads_the_rewrite_in_buffers_of_any_size() {
        let (mut client, mut server) = pair();
        // A HEADERS frame holding only `:authority: x` (literal without indexing, indexed name 1).
        let headers = [0, 0, 3, 1, 4, 0, 0, 0, 1, 0x01, 0x01, b'x'];
        let mut input = PREFACE.to_vec();
        input.extend(headers);
        client.write_all(&input).await.unwrap();
        drop(client);
        let (got, end) = read_to_end(&mut server).await;
        end.unwrap();
        let mut want = PREFACE.to_vec();
        want.extend([0, 0, 0, 1, 4, 0, 0, 0, 1]);
        assert_eq!(got, want, "the same HEADERS frame, now empty");
    }
}
