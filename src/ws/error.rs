//! What can go wrong with a WebSocket message stream, and which of it ends the stream.

use super::*;
use crate::Cause;

/// Why a frame was skipped, or why the stream ended.
///
/// ```
/// use livecache::StreamError;
/// use livecache::ws::WsError;
/// assert!(!WsError::NotJson("expected value".into()).is_fatal());
/// assert!(WsError::Closed { code: 1000, reason: "bye".into() }.is_fatal());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WsError {
    /// Connecting failed (fatal): how, and the error below (R40).
    #[error("websocket connect failed ({failure}): {cause}")]
    Connect {
        /// How it failed.
        failure: ConnectFailure,
        /// The error below: the I/O error, the TLS error, the handshake's.
        #[source]
        cause: Cause,
    },
    /// Connecting (the TCP connection and the handshake) took longer than the connect timeout
    /// (fatal); the attempt is abandoned and its socket closed.
    #[error("websocket connect timed out after {0:?}")]
    Timeout(Duration),
    /// A frame, text or binary, is not UTF-8 (skipped).
    #[error("frame is not UTF-8")]
    NotUtf8,
    /// A frame is not JSON (skipped).
    #[error("frame is not JSON: {0}")]
    NotJson(String),
    /// A frame is JSON but not a message (skipped).
    #[error("frame does not match the message schema: {0}")]
    Schema(String),
    /// A message failed validation (skipped).
    #[error("message failed validation")]
    Invalid,
    /// A frame exceeds the size limit (skipped).
    #[error("frame of {size} bytes exceeds the {limit}-byte limit")]
    TooLarge {
        /// The frame's payload size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The server does not read, and more than the write limit
    /// ([`Connect::max_write_buffer_bytes`]) of replies — pongs, the close frame — waits for it
    /// (fatal): the stream ends and the socket is closed.
    #[error(
        "the server is not reading: {unsent} bytes of replies wait to be sent, over the \
         {limit}-byte write limit"
    )]
    Backlog {
        /// The bytes waiting.
        unsent: usize,
        /// The limit.
        limit: usize,
    },
    /// A frame or message over the connection's hard limit ([`hard_message_limit`]) was refused
    /// before it was received whole (fatal): the stream ends and the socket is closed.
    #[error(
        "message of {size} bytes refused before it was received: over the connection's \
         {limit}-byte hard limit"
    )]
    Refused {
        /// The size announced by the frame's header (or reached by a fragmented message).
        size: usize,
        /// The hard limit.
        limit: usize,
    },
    /// The server closed the connection (fatal).
    #[error("server closed the connection ({code}{}{reason})", if reason.is_empty() { "" } else { ": " })]
    Closed {
        /// The close code (1005 when the server sent none).
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// The connection failed (fatal): a protocol error, a reset.
    #[error("websocket failed: {cause}")]
    Failed {
        /// The error below.
        #[source]
        cause: Cause,
    },
}

impl StreamError for WsError {
    fn is_fatal(&self) -> bool {
        matches!(
            self,
            WsError::Connect { .. }
                | WsError::Timeout(_)
                | WsError::Refused { .. }
                | WsError::Backlog { .. }
                | WsError::Closed { .. }
                | WsError::Failed { .. }
        )
    }
}

/// How connecting to a WebSocket failed (R40).
///
/// ```
/// use livecache::ws::ConnectFailure;
/// assert_eq!(ConnectFailure::Refused.to_string(), "connection refused");
/// assert_eq!(ConnectFailure::Status(401).to_string(), "the server answered 401");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnectFailure {
    /// The URL is not a `ws://` or `wss://` URL with a host, or it is `wss://` in a build
    /// without the `tls` feature.
    Url,
    /// Nothing listens at the address.
    Refused,
    /// The connection could not be made otherwise (DNS, unreachable, reset while connecting).
    Connect,
    /// TLS failed: the server's certificate was refused, or the TLS handshake failed.
    Tls,
    /// The server answered the upgrade request with this HTTP status instead of switching
    /// protocols.
    Status(u16),
    /// The WebSocket handshake failed otherwise (not a WebSocket server, a bad answer).
    Handshake,
}

impl fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectFailure::Url => f.write_str("bad URL"),
            ConnectFailure::Refused => f.write_str("connection refused"),
            ConnectFailure::Connect => f.write_str("could not connect"),
            ConnectFailure::Tls => f.write_str("TLS failed"),
            ConnectFailure::Status(status) => write!(f, "the server answered {status}"),
            ConnectFailure::Handshake => f.write_str("handshake failed"),
        }
    }
}
