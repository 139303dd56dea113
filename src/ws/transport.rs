//! The TCP transport under a WebSocket connection. It bounds what waits to be written to a
//! server that does not read: tungstenite queues a pong for every ping and keeps whatever the
//! socket does not take in its write buffer, which has no bound by default — a server that
//! sends pings and never reads would grow the client's memory by about 130 bytes a ping, for
//! ever. tungstenite hands its whole write buffer to every write; when the socket cannot take
//! it and it is over the limit, the write fails with [`Backlog`], which ends the stream with
//! [`WsError::Backlog`](super::WsError::Backlog).

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TCP stream whose writes fail once more than `max_unsent` bytes wait for a peer that does
/// not read.
#[derive(Debug)]
pub(crate) struct Transport {
    tcp: TcpStream,
    max_unsent: usize,
}

impl Transport {
    pub(crate) fn new(tcp: TcpStream, max_unsent: usize) -> Self {
        Transport { tcp, max_unsent }
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

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Transport {
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
