//! What can go wrong with a WebSocket message stream, and which of it ends the stream.

use super::*;

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
    /// Connecting failed (fatal).
    #[error("websocket connect failed: {0}")]
    Connect(String),
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
    #[error("websocket failed: {0}")]
    Failed(String),
}

impl StreamError for WsError {
    fn is_fatal(&self) -> bool {
        matches!(
            self,
            WsError::Connect(_)
                | WsError::Timeout(_)
                | WsError::Refused { .. }
                | WsError::Backlog { .. }
                | WsError::Closed { .. }
                | WsError::Failed(_)
        )
    }
}
