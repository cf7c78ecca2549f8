//! Drops `:authority` from every request a Workload API client sends, before
//! the HTTP/2 server sees it.
//!
//! Over a Unix socket the authority means nothing, and clients send what
//! they like: grpc-c (Python, C++, Ruby, PHP, C#; grpcio since 1.57) the
//! percent-encoded socket path, grpc-java the raw path, grpc-swift a
//! URL-encoded one. hyper's h2 parses `:authority` as a URI authority and
//! resets the stream (PROTOCOL_ERROR) when it is none of those, so those
//! clients could get nothing. The agent neither checks nor uses the
//! authority, so it removes it: a request without `:authority` is valid
//! HTTP/2, and h2 then builds the request URI from `:path` alone (it keeps
//! `:scheme` only beside an authority).
//!
//! [`Rewriter`] reads the client-to-server byte stream: the connection
//! preface, then frames. Every frame passes through unchanged, byte for byte,
//! except header blocks (HEADERS and its CONTINUATION frames): each is
//! decoded with the connection's HPACK state ([`crate::hpack`]), its
//! `:authority` fields dropped, and the rest encoded again as static table
//! references and literals that never touch the server's dynamic table
//! ([`hpack::encode_literal`]), in frames of at most 16 384 bytes
//! (the size every HTTP/2 peer must accept). Padding is dropped; END_STREAM
//! and the priority fields are kept. Server-to-client bytes are not touched.
//!
//! Input that is not HTTP/2 ends the connection: a wrong preface, a frame
//! other than CONTINUATION inside a header block, PUSH_PROMISE from a client,
//! bad padding, a header block that does not decode. Memory is bounded: a
//! header block may take at most [`MAX_HEADER_BLOCK`] bytes on the wire and
//! [`MAX_HEADER_LIST`] decoded, the dynamic table at most what h2 advertises
//! ([`HEADER_TABLE_SIZE`]); everything else streams through.
//!
//! Only the Workload API (a Unix socket) goes through this; the admin API and
//! the agent API keep h2's strict checks.

use crate::hpack::{self, HpackError};

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Largest header block accepted on the wire (HEADERS + CONTINUATION payloads).
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;
/// Largest decoded header list (octets plus 32 per field, as
/// SETTINGS_MAX_HEADER_LIST_SIZE counts). Above the server's own limit
/// (16 KiB in hyper), so between the two the server's answer stands.
pub const MAX_HEADER_LIST: usize = 64 * 1024;
/// SETTINGS_HEADER_TABLE_SIZE the server advertises: h2's default, which
/// tonic leaves alone. A client's encoder may use this much, and no more.
pub const HEADER_TABLE_SIZE: usize = 4096;
/// The largest frame written: SETTINGS_MAX_FRAME_SIZE's initial value, which
/// every HTTP/2 endpoint accepts.
const MAX_FRAME: usize = 16_384;

const FRAME_HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const PUSH_PROMISE: u8 = 0x5;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// What a HEADERS frame may carry besides its block fragment: the pad length
/// octet, the priority fields and up to 255 octets of padding.
const HEADERS_OVERHEAD: usize = 1 + 5 + 255;

/// Why a client's HTTP/2 stream was refused; the connection ends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RewriteError {
    /// The first 24 bytes are not the HTTP/2 preface.
    #[error("not an HTTP/2 connection preface")]
    BadPreface,
    /// A frame that may not come where it came.
    #[error("{what} (frame type {frame_type:#x} on stream {stream})")]
    Protocol {
        /// What was wrong.
        what: &'static str,
        /// The frame's type.
        frame_type: u8,
        /// The frame's stream.
        stream: u32,
    },
    /// A header block larger than [`MAX_HEADER_BLOCK`] on the wire.
    #[error("header block on stream {stream} is larger than {MAX_HEADER_BLOCK} bytes")]
    HeaderBlockTooLarge {
        /// The stream.
        stream: u32,
    },
    /// A header block that does not decode.
    #[error("header block on stream {stream}: {source}")]
    Hpack {
        /// The stream.
        stream: u32,
        /// Why.
        source: HpackError,
    },
    /// Bytes fed after an error.
    #[error("the connection was already refused")]
    AlreadyRefused,
}

/// A frame's 9-byte header (RFC 9113 §4.1).
#[derive(Debug, Clone, Copy)]
struct FrameHeader {
    len: usize,
    kind: u8,
    flags: u8,
    stream: u32,
}

impl FrameHeader {
    fn parse(b: [u8; FRAME_HEADER_LEN]) -> Self {
        let [l0, l1, l2, kind, flags, s0, s1, s2, s3] = b;
        Self {
            len: usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2),
            kind,
            flags,
            // The reserved bit is ignored on receipt (§4.1).
            stream: u32::from_be_bytes([s0 & 0x7f, s1, s2, s3]),
        }
    }

    fn protocol(&self, what: &'static str) -> RewriteError {
        RewriteError::Protocol { what, frame_type: self.kind, stream: self.stream }
    }
}

/// Appends a frame header; `len` is at most [`MAX_FRAME`], so it fits 24 bits.
fn write_frame_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    let [_, l0, l1, l2] = (len.min(MAX_FRAME) as u32).to_be_bytes();
    out.extend_from_slice(&[l0, l1, l2, kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
}

/// What the HEADERS frame that opened a block said, besides its fragment.
#[derive(Debug, Clone, Copy)]
struct BlockStart {
    stream: u32,
    end_stream: bool,
    /// Stream dependency and weight, when the HEADERS frame carried them.
    priority: Option<[u8; 5]>,
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Reading the preface; `matched` bytes of it so far.
    Preface { matched: usize },
    /// Reading a frame header; `have` bytes of it so far, in `head`.
    FrameHeader { have: usize },
    /// Copying a frame's payload through; `remaining` bytes to go.
    PassThrough { remaining: usize },
    /// Collecting a HEADERS or CONTINUATION payload into `payload`.
    HeaderFrame(FrameHeader),
    /// Refused; nothing more is read.
    Failed,
}

/// The client-to-server rewriter of one Workload API connection (see the
/// module documentation). Sans I/O: bytes in, bytes out.
#[derive(Debug)]
pub struct Rewriter {
    state: State,
    head: [u8; FRAME_HEADER_LEN],
    /// The payload of the header frame being read.
    payload: Vec<u8>,
    /// The block's start and fragments so far, while CONTINUATION frames are due.
    open: Option<(BlockStart, Vec<u8>)>,
    hpack: hpack::Decoder,
    /// The re-encoded block, before it is cut into frames.
    encoded: Vec<u8>,
}

impl Default for Rewriter {
    fn default() -> Self {
        Self::new()
    }
}

impl Rewriter {
    /// A rewriter for a new connection: it expects the preface first.
    pub fn new() -> Self {
        Self {
            state: State::Preface { matched: 0 },
            head: [0; FRAME_HEADER_LEN],
            payload: Vec::new(),
            open: None,
            hpack: hpack::Decoder::new(HEADER_TABLE_SIZE),
            encoded: Vec::new(),
        }
    }

    /// Whether the whole connection preface has arrived.
    pub fn preface_complete(&self) -> bool {
        !matches!(self.state, State::Preface { .. })
    }

    /// Rewrites `input`, the next bytes from the client, appending what the
    /// server should read to `out`. Bytes of an incomplete frame header or
    /// header frame are held until the rest arrives. After an error every
    /// call fails: the connection must end.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), RewriteError> {
        let result = self.feed_inner(&mut input, out);
        if result.is_err() {
            self.state = State::Failed;
            self.payload = Vec::new();
            self.open = None;
        }
        result
    }

    fn feed_inner(&mut self, input: &mut &[u8], out: &mut Vec<u8>) -> Result<(), RewriteError> {
        loop {
            match self.state {
                State::Failed => return Err(RewriteError::AlreadyRefused),
                State::Preface { matched } => {
                    if input.is_empty() {
                        return Ok(());
                    }
                    let want = PREFACE.get(matched..).unwrap_or_default();
                    let n = want.len().min(input.len());
                    let (got, rest) = input.split_at(n);
                    if want.get(..n) != Some(got) {
                        return Err(RewriteError::BadPreface);
                    }
                    out.extend_from_slice(got);
                    *input = rest;
                    self.state = match matched + n {
                        m if m == PREFACE.len() => State::FrameHeader { have: 0 },
                        m => State::Preface { matched: m },
                    };
                }
                State::FrameHeader { have } => {
                    let n = (FRAME_HEADER_LEN - have).min(input.len());
                    let (chunk, rest) = input.split_at(n);
                    if let Some(dst) = self.head.get_mut(have..have + n) {
                        dst.copy_from_slice(chunk);
                    }
                    *input = rest;
                    if have + n < FRAME_HEADER_LEN {
                        self.state = State::FrameHeader { have: have + n };
                        return Ok(());
                    }
                    let header = FrameHeader::parse(self.head);
                    self.state = self.on_frame_header(header)?;
                    if let State::PassThrough { .. } = self.state {
                        out.extend_from_slice(&self.head);
                    }
                }
                State::PassThrough { remaining: 0 } => self.state = State::FrameHeader { have: 0 },
                State::PassThrough { remaining } => {
                    if input.is_empty() {
                        return Ok(());
                    }
                    let (chunk, rest) = input.split_at(remaining.min(input.len()));
                    out.extend_from_slice(chunk);
                    *input = rest;
                    self.state = State::PassThrough { remaining: remaining - chunk.len() };
                }
                State::HeaderFrame(header) => {
                    let n = (header.len - self.payload.len()).min(input.len());
                    let (chunk, rest) = input.split_at(n);
                    self.payload.extend_from_slice(chunk);
                    *input = rest;
                    if self.payload.len() < header.len {
                        return Ok(());
                    }
                    let payload = std::mem::take(&mut self.payload);
                    self.on_header_frame(header, &payload, out)?;
                    self.payload = reuse(payload);
                    self.state = State::FrameHeader { have: 0 };
                }
            }
        }
    }

    /// Decides what a frame is: passed through, or part of a header block.
    fn on_frame_header(&mut self, h: FrameHeader) -> Result<State, RewriteError> {
        if let Some((start, _)) = &self.open {
            // RFC 9113 §6.10: nothing but CONTINUATION of the same stream inside a block.
            if h.kind != CONTINUATION || h.stream != start.stream {
                return Err(h.protocol("expected CONTINUATION of the open header block"));
            }
        }
        let limit = match (h.kind, &self.open) {
            (HEADERS, _) => MAX_HEADER_BLOCK + HEADERS_OVERHEAD,
            (CONTINUATION, Some((_, fragment))) => MAX_HEADER_BLOCK.saturating_sub(fragment.len()),
            (CONTINUATION, None) => return Err(h.protocol("CONTINUATION without a header block")),
            (PUSH_PROMISE, _) => return Err(h.protocol("PUSH_PROMISE from a client")),
            _ => return Ok(State::PassThrough { remaining: h.len }),
        };
        if h.stream == 0 {
            return Err(h.protocol("header block on stream 0"));
        }
        if h.len > limit {
            return Err(RewriteError::HeaderBlockTooLarge { stream: h.stream });
        }
        Ok(State::HeaderFrame(h))
    }

    /// Takes a HEADERS or CONTINUATION payload; rewrites the block once
    /// END_HEADERS ends it. A block in one HEADERS frame (the usual case) is
    /// rewritten from the payload without being copied.
    fn on_header_frame(&mut self, h: FrameHeader, payload: &[u8], out: &mut Vec<u8>) -> Result<(), RewriteError> {
        let ends = h.flags & END_HEADERS != 0;
        if h.kind == HEADERS {
            let (fragment, priority) = split_headers_payload(&h, payload)?;
            if fragment.len() > MAX_HEADER_BLOCK {
                return Err(RewriteError::HeaderBlockTooLarge { stream: h.stream });
            }
            let start = BlockStart { stream: h.stream, end_stream: h.flags & END_STREAM != 0, priority };
            if ends {
                return self.rewrite_block(start, fragment, out);
            }
            self.open = Some((start, fragment.to_vec()));
            return Ok(());
        }
        let Some((_, fragment)) = self.open.as_mut() else {
            return Err(h.protocol("CONTINUATION without a header block"));
        };
        fragment.extend_from_slice(payload);
        if !ends {
            return Ok(());
        }
        match self.open.take() {
            Some((start, fragment)) => self.rewrite_block(start, &fragment, out),
            None => Ok(()),
        }
    }

    /// Decodes the block, drops `:authority`, and writes the rest as a HEADERS
    /// frame and as many CONTINUATION frames as it takes.
    fn rewrite_block(&mut self, start: BlockStart, fragment: &[u8], out: &mut Vec<u8>) -> Result<(), RewriteError> {
        let mut encoded = std::mem::take(&mut self.encoded);
        encoded.clear();
        self.hpack
            .decode(fragment, MAX_HEADER_LIST, |field| {
                if field.name != b":authority" {
                    hpack::encode_literal(&mut encoded, field);
                }
            })
            .map_err(|source| RewriteError::Hpack { stream: start.stream, source })?;

        let priority = start.priority.as_ref().map_or(&[][..], |p| &p[..]);
        let mut flags = if start.end_stream { END_STREAM } else { 0 };
        if !priority.is_empty() {
            flags |= PRIORITY;
        }
        let (first, mut rest) = encoded.split_at(encoded.len().min(MAX_FRAME - priority.len()));
        if rest.is_empty() {
            flags |= END_HEADERS;
        }
        write_frame_header(out, priority.len() + first.len(), HEADERS, flags, start.stream);
        out.extend_from_slice(priority);
        out.extend_from_slice(first);
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(rest.len().min(MAX_FRAME));
            rest = tail;
            let flags = if rest.is_empty() { END_HEADERS } else { 0 };
            write_frame_header(out, chunk.len(), CONTINUATION, flags, start.stream);
            out.extend_from_slice(chunk);
        }
        self.encoded = reuse(encoded);
        Ok(())
    }
}

/// Keeps a buffer for the next frame unless one large block grew it: a
/// connection should not hold 64 KiB for its whole life because of one request.
fn reuse(mut buf: Vec<u8>) -> Vec<u8> {
    if buf.capacity() > MAX_FRAME {
        return Vec::new();
    }
    buf.clear();
    buf
}

/// Splits a HEADERS payload (RFC 9113 §6.2) into its block fragment and
/// priority fields, checking the padding.
fn split_headers_payload<'p>(h: &FrameHeader, payload: &'p [u8]) -> Result<(&'p [u8], Option<[u8; 5]>), RewriteError> {
    let mut body = payload;
    if h.flags & PADDED != 0 {
        let (&pad, rest) = body.split_first().ok_or_else(|| h.protocol("PADDED HEADERS frame without a pad length"))?;
        let keep =
            rest.len().checked_sub(usize::from(pad)).ok_or_else(|| h.protocol("padding longer than the frame"))?;
        body = rest.get(..keep).unwrap_or_default();
    }
    let mut priority = None;
    if h.flags & PRIORITY != 0 {
        let (fields, rest) =
            body.split_first_chunk::<5>().ok_or_else(|| h.protocol("HEADERS frame too short for its priority"))?;
        priority = Some(*fields);
        body = rest;
    }
    Ok((body, priority))
}

#[cfg(test)]
mod tests;
