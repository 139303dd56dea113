//! The TCP transport under a WebSocket connection. It bounds what waits to be written to a
//! server that does not read: tungstenite queues a pong for every ping and keeps whatever the
//! socket does not take in its write buffer, which has no bound by default — a server that
//! sends pings and never reads would grow the client's memory by about 130 bytes a ping, for
//! ever. tungstenite hands its whole write buffer to every write; when the socket cannot take
//! it and it is over the limit, the write fails with [`Backlog`], which ends the stream with
//! [`WsError::Backlog`](super::WsError::Backlog).
//!
//! It also hands every text frame to tungstenite as a binary frame. tungstenite fails the whole
//! connection on a text frame that is not UTF-8 (at the protocol level, before the decoder sees
//! it); as a binary frame, it reaches the decoder, which checks UTF-8 on every frame and skips
//! one that is not ([`WsError::NotUtf8`](super::WsError::NotUtf8)), as it always did binary
//! ones. To find the frames, the transport follows the server's bytes: the HTTP response to the
//! upgrade up to its blank line, then each frame's header, skipping its payload.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use std::task::ready;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A stream (TCP by default; any connection a [`Connector`](super::shared::Connector) opens)
/// whose writes fail once more than `max_unsent` bytes wait for a peer that does not read.
#[derive(Debug)]
pub(crate) struct Transport<S = TcpStream> {
    tcp: S,
    max_unsent: usize,
    incoming: Frames,
}

impl<S> Transport<S> {
    pub(crate) fn new(tcp: S, max_unsent: usize) -> Self {
        Transport {
            tcp,
            max_unsent,
            incoming: Frames::default(),
        }
    }

    /// The most bytes that may wait for the peer.
    pub(crate) fn max_unsent(&self) -> usize {
        self.max_unsent
    }
}

/// Why a write failed: the peer does not read, and more than the limit waits for it.
#[derive(Debug)]
pub(crate) struct Backlog {
    pub(crate) unsent: usize,
    pub(crate) limit: usize,
}

impl fmt::Display for Backlog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} bytes wait for a peer that does not read (limit {})",
            self.unsent, self.limit
        )
    }
}

impl std::error::Error for Backlog {}

impl<S: AsyncRead + Unpin> AsyncRead for Transport<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.tcp).poll_read(cx, buf))?;
        if let Some(new) = buf.filled_mut().get_mut(before..) {
            this.incoming.text_as_binary(new);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Transport<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.tcp).poll_write(cx, buf) {
            // `buf` is everything the protocol layer has buffered: the peer takes none of it.
            Poll::Pending if buf.len() > this.max_unsent => {
                Poll::Ready(Err(io::Error::other(Backlog {
                    unsent: buf.len(),
                    limit: this.max_unsent,
                })))
            }
            other => other,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

const OPCODE_TEXT: u8 = 0x1;
const OPCODE_BINARY: u8 = 0x2;
/// The longest frame header: 2 bytes, a 64-bit length, a mask.
const MAX_HEADER: usize = 14;

/// Where the server's byte stream is.
#[derive(Debug)]
enum Frames {
    /// In the HTTP response to the upgrade, which ends with an empty line; line ends are
    /// `\r\n` or a bare `\n`, as the handshake's parser (httparse) accepts them.
    Response(Line),
    /// In a frame header: its bytes so far.
    Header { bytes: [u8; MAX_HEADER], len: usize },
    /// In a frame's payload: the bytes left.
    Payload(u64),
}

/// Where the HTTP response is, as far as finding its end goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Line {
    /// Within a line.
    Within,
    /// At the start of a line (just after a line end).
    Start,
    /// At the start of a line, after a `\r`.
    StartCr,
}

impl Default for Frames {
    fn default() -> Self {
        Frames::Response(Line::Within)
    }
}

impl Frames {
    /// Follow `data`, the next bytes from the server, turning the opcode of each text frame
    /// that starts in it into binary's. Continuation frames are left alone: they belong to the
    /// message their first frame began, now binary.
    fn text_as_binary(&mut self, data: &mut [u8]) {
        let mut at = 0;
        while let Some(byte) = data.get_mut(at) {
            match self {
                Frames::Response(line) => {
                    at += 1;
                    *line = match (*line, *byte) {
                        (Line::Start | Line::StartCr, b'\n') => {
                            // The empty line: the frames begin.
                            *self = Frames::header();
                            continue;
                        }
                        (Line::Start, b'\r') => Line::StartCr,
                        (_, b'\n') => Line::Start,
                        _ => Line::Within,
                    };
                }
                Frames::Header { bytes, len } => {
                    if *len == 0 && *byte & 0x0f == OPCODE_TEXT {
                        *byte = (*byte & 0xf0) | OPCODE_BINARY;
                    }
                    if let Some(slot) = bytes.get_mut(*len) {
                        *slot = *byte;
                    }
                    *len += 1;
                    at += 1;
                    match payload_len(bytes.get(..*len).unwrap_or(bytes)) {
                        Some(0) => *self = Frames::header(),
                        Some(n) => *self = Frames::Payload(n),
                        None => {}
                    }
                }
                Frames::Payload(left) => {
                    let available = u64::try_from(data.len() - at).unwrap_or(u64::MAX);
                    let skip = (*left).min(available);
                    at += usize::try_from(skip).unwrap_or(usize::MAX);
                    *left -= skip;
                    if *left == 0 {
                        *self = Frames::header();
                    }
                }
            }
        }
    }

    fn header() -> Self {
        Frames::Header {
            bytes: [0; MAX_HEADER],
            len: 0,
        }
    }
}

/// The payload length a frame header announces, once `header` holds all of it (its length
/// bytes and its mask, if any); `None` before.
fn payload_len(header: &[u8]) -> Option<u64> {
    let second = *header.get(1)?;
    let short = second & 0x7f;
    let extended = match short {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 == 0 { 0 } else { 4 };
    if header.len() < 2 + extended + mask {
        return None;
    }
    let mut len = [0u8; 8];
    match extended {
        0 => return Some(u64::from(short)),
        n => len[8 - n..].copy_from_slice(header.get(2..2 + n)?),
    }
    Some(u64::from_be_bytes(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESPONSE: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";

    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut bytes = vec![first];
        match payload.len() {
            n @ 0..=125 => bytes.push(n as u8),
            n @ 126..=0xffff => {
                bytes.push(126);
                bytes.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                bytes.push(127);
                bytes.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        bytes.extend_from_slice(payload);
        bytes
    }

    /// The stream, fed in chunks of `chunk` bytes.
    fn rewritten(stream: &[u8], chunk: usize) -> Vec<u8> {
        let mut frames = Frames::default();
        let mut out = stream.to_vec();
        for piece in out.chunks_mut(chunk) {
            frames.text_as_binary(piece);
        }
        out
    }

    /// Text frames (whole or the first of a fragmented message; any length form) become
    /// binary; binary, continuation and control frames, payloads that look like headers, and
    /// the HTTP response are untouched — however the bytes are split.
    #[test]
    fn text_frames_become_binary_and_nothing_else_changes() {
        let big = vec![0x81; 300];
        let huge = vec![0x81; 70_000];
        let parts: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (frame(0x81, b"1"), frame(0x82, b"1")),
            (frame(0x81, &[0xff, 0xfe]), frame(0x82, &[0xff, 0xfe])),
            (frame(0x82, b"\x81\x01x"), frame(0x82, b"\x81\x01x")),
            (frame(0x89, b"ping"), frame(0x89, b"ping")),
            (frame(0x01, b"3"), frame(0x02, b"3")),
            (frame(0x80, b"\xff"), frame(0x80, b"\xff")),
            (frame(0x81, &big), frame(0x82, &big)),
            (frame(0x81, &huge), frame(0x82, &huge)),
            (frame(0x81, b""), frame(0x82, b"")),
            (frame(0x88, &[0x03, 0xe8]), frame(0x88, &[0x03, 0xe8])),
        ];
        let mut stream = RESPONSE.to_vec();
        let mut expected = RESPONSE.to_vec();
        for (sent, seen) in &parts {
            stream.extend_from_slice(sent);
            expected.extend_from_slice(seen);
        }
        for chunk in [1, 2, 3, 7, 64, 4096, stream.len()] {
            assert_eq!(rewritten(&stream, chunk), expected, "in chunks of {chunk}");
        }
    }

    /// A response whose lines end with a bare `\n` (which the handshake's parser accepts) ends
    /// at its empty line too; a `\r\n\r\n` inside a frame's payload later changes nothing.
    #[test]
    fn response_with_bare_line_feeds_ends_at_its_empty_line() {
        for response in [
            &b"HTTP/1.1 101 Switching Protocols\nUpgrade: websocket\n\n"[..],
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\n",
            b"HTTP/1.1 101 Switching Protocols\nUpgrade: websocket\n\r\n",
        ] {
            let mut stream = response.to_vec();
            stream.extend_from_slice(&frame(0x82, b"\r\n\r\n\x81\x01"));
            stream.extend_from_slice(&frame(0x81, b"x"));
            let mut expected = response.to_vec();
            expected.extend_from_slice(&frame(0x82, b"\r\n\r\n\x81\x01"));
            expected.extend_from_slice(&frame(0x82, b"x"));
            for chunk in [1, 5, stream.len()] {
                assert_eq!(rewritten(&stream, chunk), expected, "in chunks of {chunk}");
            }
        }
    }

    /// A masked header's mask is skipped like its length bytes.
    #[test]
    fn masked_header_is_followed_to_its_end() {
        let mut stream = RESPONSE.to_vec();
        stream.extend_from_slice(&[0x81, 0x82, 0x81, 0x81, 0x81, 0x81, b'a', b'b']);
        stream.extend_from_slice(&frame(0x81, b"c"));
        let out = rewritten(&stream, 1);
        let frames = &out[RESPONSE.len()..];
        assert_eq!(frames[0], 0x82);
        assert_eq!(
            &frames[1..8],
            &stream[RESPONSE.len() + 1..RESPONSE.len() + 8]
        );
        assert_eq!(frames[8], 0x82);
    }
}
