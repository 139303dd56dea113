//! WebSocket message streams (SPEC R22), on async-tungstenite's tokio runtime. Feature `ws`, on
//! by default.
//!
//! [`connect`] opens a socket whose text and binary frames are decoded from JSON into a message
//! type `M`, optionally validated (the streaming guide's `isMessage`) and filtered (its channel
//! check). The result is a [`WsStream`]: a `Stream` of `Result<M, WsError>` to attach to a cache
//! entry with [`EntryHandle::try_stream`](crate::EntryHandle::try_stream).
//!
//! A frame (text or binary) that is not UTF-8, not JSON, not a value of `M`, fails validation
//! or exceeds the size limit is **skipped**: counted in [`WsStats`], yielded as a non-fatal
//! [`WsError`] (which the attachment traces as `stream_skipped` with the reason), never a
//! panic, never applied. (tungstenite would fail the whole connection on a text frame that is
//! not UTF-8, so the connection's transport hands text frames to it as binary ones, and the
//! decoder checks UTF-8 on every frame.) Pings
//! are answered (by tungstenite). A close frame from the server ends the stream with a fatal
//! [`WsError::Closed`]. Dropping the stream — which the attachment does when the entry is
//! removed — closes the socket with a close frame (a short task finishes the handshake).
//!
//! Against a hostile server: connecting is bounded by a connect timeout
//! ([`DEFAULT_CONNECT_TIMEOUT`]); a frame far over the size limit — over
//! [`hard_message_limit`], twice it plus 4 KiB — is refused from its header, before its payload
//! is buffered, and ends the stream ([`WsError::Refused`]); a server that does not read cannot
//! make the replies to its pings pile up: past [`DEFAULT_MAX_WRITE_BUFFER_BYTES`] waiting, the
//! stream ends ([`WsError::Backlog`]).
//!
//! Only `ws://` URLs: no TLS backend is enabled.
//!
//! ```no_run
//! # async fn run() -> Result<(), livecache::ws::WsError> {
//! #[derive(serde::Deserialize)]
//! struct Message { channel: String, text: String }
//!
//! let socket = livecache::ws::connect::<Message>("ws://127.0.0.1:8080/ws")
//!     .validate(|m| !m.text.is_empty())
//!     .filter(|m| m.channel == "redux")
//!     .await?;
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use async_tungstenite::WebSocketStream;
use async_tungstenite::tokio::{TokioAdapter, client_async_with_config};
use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::error::UrlError;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use futures::{Stream, StreamExt};
use serde::de::{DeserializeOwned, IgnoredAny};

use crate::runtime::StreamError;

mod transport;
use transport::{Backlog, Transport};

/// The socket under a [`WsStream`].
type Socket = WebSocketStream<TokioAdapter<Transport>>;

/// The default largest frame payload decoded, in bytes (1 MiB). Larger frames are skipped, up to
/// the connection's hard limit ([`hard_message_limit`]); [`Connect::max_message_bytes`] sets
/// another limit.
///
/// ```
/// assert_eq!(livecache::ws::DEFAULT_MAX_MESSAGE_BYTES, 1_048_576);
/// ```
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1 << 20;

/// How long [`Connect::open`] may take by default — the TCP connection and the WebSocket
/// handshake together — before it fails with [`WsError::Timeout`] (10 s).
///
/// ```
/// assert_eq!(livecache::ws::DEFAULT_CONNECT_TIMEOUT.as_secs(), 10);
/// ```
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The connection's hard limit for a decode limit of `max_message_bytes`: twice it plus 4 KiB.
///
/// A frame (or a fragmented message) over `max_message_bytes` but within the hard limit is
/// received and skipped ([`WsError::TooLarge`]); the stream goes on. A frame over the hard
/// limit is refused from its header, before its payload is buffered: at most one read buffer
/// of it is ever received, and the stream ends with the fatal [`WsError::Refused`] (its socket
/// is closed). A fragmented message is refused as soon as its fragments add up to more.
///
/// ```
/// assert_eq!(livecache::ws::hard_message_limit(4096), 12_288);
/// assert_eq!(livecache::ws::hard_message_limit(usize::MAX), usize::MAX);
/// ```
pub fn hard_message_limit(max_message_bytes: usize) -> usize {
    max_message_bytes.saturating_mul(2).saturating_add(4096)
}

/// The default read buffer of a connection, in bytes (4 KiB; tungstenite's own default is
/// 128 KiB). The buffer is allocated when the connection opens and filled by every read, so it
/// is most of a quiet socket's memory; a frame larger than it is still received (the buffer
/// grows for it, up to the hard limit). See [`Connect::read_buffer_bytes`].
///
/// ```
/// assert_eq!(livecache::ws::DEFAULT_READ_BUFFER_BYTES, 4096);
/// ```
pub const DEFAULT_READ_BUFFER_BYTES: usize = 4 * 1024;

/// The default write buffer target of a connection, in bytes (0: every reply — a pong, the
/// close frame — is written at once; tungstenite's own default batches 128 KiB). A client that
/// only receives has nothing to batch. See [`Connect::write_buffer_bytes`].
///
/// ```
/// assert_eq!(livecache::ws::DEFAULT_WRITE_BUFFER_BYTES, 0);
/// ```
pub const DEFAULT_WRITE_BUFFER_BYTES: usize = 0;

/// The default bound on what waits to be written to a server that does not read, in bytes
/// (64 KiB): past it the stream ends with [`WsError::Backlog`]. See
/// [`Connect::max_write_buffer_bytes`].
///
/// ```
/// assert_eq!(livecache::ws::DEFAULT_MAX_WRITE_BUFFER_BYTES, 65_536);
/// ```
pub const DEFAULT_MAX_WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// The smallest read buffer a connection is given, whatever [`Connect::read_buffer_bytes`]
/// asks for.
const MIN_READ_BUFFER_BYTES: usize = 256;

/// How long a dropped stream waits for the server to answer its close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

type Check<M> = Arc<dyn Fn(&M) -> bool + Send + Sync>;

/// Start connecting to a WebSocket; await it (or call [`Connect::open`]) to connect.
///
/// ```
/// let connect = livecache::ws::connect::<serde_json::Value>("ws://127.0.0.1:9/")
///     .max_message_bytes(64 * 1024);
/// ```
pub fn connect<M: DeserializeOwned>(url: impl Into<String>) -> Connect<M> {
    Connect {
        url: url.into(),
        validate: None,
        filter: None,
        max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        read_buffer_bytes: DEFAULT_READ_BUFFER_BYTES,
        write_buffer_bytes: DEFAULT_WRITE_BUFFER_BYTES,
        max_write_buffer_bytes: DEFAULT_MAX_WRITE_BUFFER_BYTES,
    }
}

/// A WebSocket connection being set up: validation, filter and size limit, then `.await`.
///
/// ```no_run
/// # async fn run() -> Result<(), livecache::ws::WsError> {
/// use serde_json::Value;
/// let connect = livecache::ws::connect::<Value>("ws://127.0.0.1:8080/ws")
///     .filter(|m: &Value| m["channel"] == "redux");
/// let socket = connect.await?; // or `connect.open().await?`
/// # Ok(()) }
/// ```
pub struct Connect<M> {
    url: String,
    validate: Option<Check<M>>,
    filter: Option<Check<M>>,
    max_message_bytes: usize,
    connect_timeout: Duration,
    read_buffer_bytes: usize,
    write_buffer_bytes: usize,
    max_write_buffer_bytes: usize,
}

impl<M: DeserializeOwned + Send + 'static> Connect<M> {
    /// Reject decoded messages for which `valid` is false: they are skipped and counted as
    /// invalid (the streaming guide's `isMessage`).
    ///
    /// ```
    /// let c = livecache::ws::connect::<String>("ws://127.0.0.1:9/").validate(|m| !m.is_empty());
    /// ```
    pub fn validate(mut self, valid: impl Fn(&M) -> bool + Send + Sync + 'static) -> Self {
        self.validate = Some(Arc::new(valid));
        self
    }

    /// Keep only the messages for which `keep` is true (the guide's channel check). Filtered
    /// messages are counted, not skipped: they are not errors.
    ///
    /// ```
    /// let c = livecache::ws::connect::<String>("ws://127.0.0.1:9/").filter(|m| m.starts_with('#'));
    /// ```
    pub fn filter(mut self, keep: impl Fn(&M) -> bool + Send + Sync + 'static) -> Self {
        self.filter = Some(Arc::new(keep));
        self
    }

    /// The largest frame payload decoded, in bytes (default 1 MiB). Larger frames are skipped
    /// ([`WsError::TooLarge`]) up to the hard limit, twice this plus 4 KiB; a frame over the
    /// hard limit is refused before it is buffered and ends the stream ([`WsError::Refused`]).
    /// See [`hard_message_limit`].
    ///
    /// ```
    /// let c = livecache::ws::connect::<String>("ws://127.0.0.1:9/").max_message_bytes(4096);
    /// ```
    pub fn max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    /// How long connecting may take — the TCP connection and the WebSocket handshake
    /// together — before [`Connect::open`] fails with [`WsError::Timeout`] (default
    /// [`DEFAULT_CONNECT_TIMEOUT`], 10 s). In a lifecycle handler, also race the connection
    /// against the entry's removal with
    /// [`EntryHandle::until_removed`](crate::EntryHandle::until_removed), so that removing the
    /// entry ends the attempt at once.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let c = livecache::ws::connect::<String>("ws://127.0.0.1:9/")
    ///     .connect_timeout(Duration::from_secs(3));
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The connection's read buffer, in bytes (default [`DEFAULT_READ_BUFFER_BYTES`], 4 KiB;
    /// at least 256). Allocated when the connection opens and filled by every read: a larger
    /// buffer reads a fast stream in fewer system calls, a smaller one keeps many quiet sockets
    /// cheap (docs/performance.md, "Memory per WebSocket").
    ///
    /// ```
    /// let c = livecache::ws::connect::<String>("ws://127.0.0.1:9/").read_buffer_bytes(64 * 1024);
    /// assert_eq!(c.limits().read_buffer_bytes, 64 * 1024);
    /// ```
    pub fn read_buffer_bytes(mut self, bytes: usize) -> Self {
        self.read_buffer_bytes = bytes;
        self
    }

    /// How many bytes of replies (pongs, the close frame) the connection buffers before it
    /// writes them out (default [`DEFAULT_WRITE_BUFFER_BYTES`], 0: at once).
    ///
    /// ```
    /// let c = livecache::ws::connect::<String>("ws://127.0.0.1:9/").write_buffer_bytes(1024);
    /// assert_eq!(c.limits().write_buffer_bytes, 1024);
    /// ```
    pub fn write_buffer_bytes(mut self, bytes: usize) -> Self {
        self.write_buffer_bytes = bytes;
        self
    }

    /// The most bytes that may wait to be written to the server (default
    /// [`DEFAULT_MAX_WRITE_BUFFER_BYTES`], 64 KiB). The client writes only replies — a pong
    /// for every ping, the close frame — but a server that sends pings and never reads would
    /// otherwise make them pile up without bound. When the socket takes nothing and more than
    /// this waits, the stream ends with the fatal [`WsError::Backlog`] and the socket is
    /// closed.
    ///
    /// ```
    /// let c = livecache::ws::connect::<String>("ws://127.0.0.1:9/").max_write_buffer_bytes(8192);
    /// assert_eq!(c.limits().max_write_buffer_bytes, 8192);
    /// ```
    pub fn max_write_buffer_bytes(mut self, bytes: usize) -> Self {
        self.max_write_buffer_bytes = bytes;
        self
    }

    /// The buffer sizes and limits the connection will be opened with.
    ///
    /// ```
    /// use livecache::ws;
    /// let limits = ws::connect::<String>("ws://127.0.0.1:9/").max_message_bytes(4096).limits();
    /// assert_eq!(limits.read_buffer_bytes, ws::DEFAULT_READ_BUFFER_BYTES);
    /// assert_eq!(limits.hard_message_bytes, ws::hard_message_limit(4096));
    /// ```
    pub fn limits(&self) -> WsLimits {
        WsLimits::of(
            &self.websocket_config(),
            self.max_message_bytes,
            self.max_write_buffer_bytes,
        )
    }

    /// The protocol layer's configuration: buffer sizes, and the hard limit on frames and
    /// messages (tungstenite's own, a fatal error checked on a frame's header before its
    /// payload is buffered), a little above ours (a skipped frame). The write buffer's own
    /// bound is a backstop above the transport's (which ends the stream with a reason; at
    /// tungstenite's, a pong would be dropped silently).
    fn websocket_config(&self) -> WebSocketConfig {
        let hard_limit = hard_message_limit(self.max_message_bytes);
        let write_backstop = self
            .max_write_buffer_bytes
            .saturating_add(self.write_buffer_bytes)
            .saturating_add(4096);
        WebSocketConfig::default()
            .read_buffer_size(self.read_buffer_bytes.max(MIN_READ_BUFFER_BYTES))
            .write_buffer_size(self.write_buffer_bytes)
            .max_write_buffer_size(write_backstop)
            .max_message_size(Some(hard_limit))
            .max_frame_size(Some(hard_limit))
    }

    /// Connect: the TCP connection and the WebSocket handshake, within the connect timeout.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons the attempt and closes its socket; nothing is left running.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// // nothing listens on port 9 here
    /// let refused = livecache::ws::connect::<String>("ws://127.0.0.1:9/").open().await;
    /// assert!(matches!(refused, Err(livecache::ws::WsError::Connect(_))));
    /// # }
    /// ```
    pub async fn open(self) -> Result<WsStream<M>, WsError> {
        let config = self.websocket_config();
        let connecting = connect_socket(&self.url, self.max_write_buffer_bytes, config);
        let socket = tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .map_err(|_elapsed| WsError::Timeout(self.connect_timeout))?
            .map_err(|e| WsError::Connect(e.to_string()))?;
        let decoder = Decoder {
            validate: self.validate,
            filter: self.filter,
            max_message_bytes: self.max_message_bytes,
            stats: Arc::default(),
        };
        let limits = WsLimits::of(
            socket.get_config(),
            decoder.max_message_bytes,
            socket.get_ref().get_ref().max_unsent(),
        );
        Ok(WsStream {
            limits,
            socket: Some(socket),
            decoder,
        })
    }
}

/// The TCP connection (to a `ws://` URL's host and port, 80 by default) and the handshake, on a
/// [`Transport`] that bounds what waits to be written.
async fn connect_socket(
    url: &str,
    max_unsent: usize,
    config: WebSocketConfig,
) -> Result<Socket, async_tungstenite::tungstenite::Error> {
    use async_tungstenite::tungstenite::Error;
    let request = url.into_client_request()?;
    let uri = request.uri();
    match uri.scheme_str() {
        Some("ws") => {}
        Some("wss") => return Err(Error::Url(UrlError::TlsFeatureNotEnabled)),
        _ => return Err(Error::Url(UrlError::UnsupportedUrlScheme)),
    }
    let host = uri.host().ok_or(Error::Url(UrlError::NoHostName))?;
    // An IPv6 literal keeps its brackets in a URI, not in a socket address.
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
    let transport = Transport::new(tcp, max_unsent);
    let (socket, _response) = client_async_with_config(request, transport, Some(config)).await?;
    Ok(socket)
}

impl<M: DeserializeOwned + Send + 'static> IntoFuture for Connect<M> {
    type Output = Result<WsStream<M>, WsError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.open())
    }
}

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

/// Counters of what a [`WsStream`] received, shared with the stream (read them while it runs).
///
/// ```
/// let stats = livecache::ws::WsStats::default();
/// assert_eq!(stats.snapshot().skipped(), 0);
/// ```
#[derive(Debug, Default)]
pub struct WsStats {
    messages: AtomicU64,
    filtered: AtomicU64,
    not_utf8: AtomicU64,
    not_json: AtomicU64,
    schema: AtomicU64,
    invalid: AtomicU64,
    too_large: AtomicU64,
    control: AtomicU64,
}

/// A snapshot of [`WsStats`].
///
/// ```
/// let counts = livecache::ws::WsCounts { not_json: 2, schema: 1, ..Default::default() };
/// assert_eq!(counts.skipped(), 3);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WsCounts {
    /// Messages yielded.
    pub messages: u64,
    /// Messages dropped by the filter.
    pub filtered: u64,
    /// Frames, text or binary, that are not UTF-8.
    pub not_utf8: u64,
    /// Frames that are not JSON.
    pub not_json: u64,
    /// Frames that are JSON but not a message.
    pub schema: u64,
    /// Messages that failed validation.
    pub invalid: u64,
    /// Frames over the size limit.
    pub too_large: u64,
    /// Ping, pong and raw frames (answered or ignored).
    pub control: u64,
}

impl WsCounts {
    /// Frames skipped, for any reason.
    ///
    /// ```
    /// assert_eq!(livecache::ws::WsCounts { too_large: 1, ..Default::default() }.skipped(), 1);
    /// ```
    pub fn skipped(&self) -> u64 {
        [self.not_json, self.schema, self.invalid, self.too_large]
            .into_iter()
            .fold(self.not_utf8, u64::saturating_add)
    }
}

impl WsStats {
    /// The counters now.
    ///
    /// ```
    /// assert_eq!(livecache::ws::WsStats::default().snapshot(), Default::default());
    /// ```
    pub fn snapshot(&self) -> WsCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WsCounts {
            messages: get(&self.messages),
            filtered: get(&self.filtered),
            not_utf8: get(&self.not_utf8),
            not_json: get(&self.not_json),
            schema: get(&self.schema),
            invalid: get(&self.invalid),
            too_large: get(&self.too_large),
            control: get(&self.control),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Turns frame payloads into messages: size limit, UTF-8, JSON, schema, validation, filter —
/// counting every outcome. [`WsStream`] uses one; it is public so that frames from another
/// transport (or a fuzzer) go through exactly the same checks.
///
/// ```
/// use livecache::ws::{Decoder, WsError};
/// let decoder = Decoder::<Vec<u8>>::new(16);
/// assert_eq!(decoder.decode(b"[1, 2]", false), Some(Ok(vec![1, 2])));
/// assert!(matches!(decoder.decode(b"[1,", false), Some(Err(WsError::NotJson(_)))));
/// assert!(matches!(decoder.decode(&[0xff], true), Some(Err(WsError::NotUtf8))));
/// assert_eq!(decoder.stats().snapshot().skipped(), 2);
/// ```
pub struct Decoder<M> {
    validate: Option<Check<M>>,
    filter: Option<Check<M>>,
    max_message_bytes: usize,
    stats: Arc<WsStats>,
}

impl<M: DeserializeOwned> Decoder<M> {
    /// A decoder with a size limit and no validation or filter.
    ///
    /// ```
    /// let decoder = livecache::ws::Decoder::<String>::new(1024);
    /// ```
    pub fn new(max_message_bytes: usize) -> Self {
        Decoder {
            validate: None,
            filter: None,
            max_message_bytes,
            stats: Arc::default(),
        }
    }

    /// Skip messages for which `valid` is false (counted as invalid).
    ///
    /// ```
    /// let d = livecache::ws::Decoder::<u8>::new(8).with_validation(|n| *n < 10);
    /// assert!(d.decode(b"12", false).is_some_and(|r| r.is_err()));
    /// ```
    pub fn with_validation(mut self, valid: impl Fn(&M) -> bool + Send + Sync + 'static) -> Self {
        self.validate = Some(Arc::new(valid));
        self
    }

    /// Drop messages for which `keep` is false (counted as filtered, not an error).
    ///
    /// ```
    /// let d = livecache::ws::Decoder::<u8>::new(8).with_filter(|n| n % 2 == 0);
    /// assert_eq!(d.decode(b"3", false), None);
    /// ```
    pub fn with_filter(mut self, keep: impl Fn(&M) -> bool + Send + Sync + 'static) -> Self {
        self.filter = Some(Arc::new(keep));
        self
    }

    /// The decoder's counters.
    ///
    /// ```
    /// let d = livecache::ws::Decoder::<u8>::new(8);
    /// d.decode(b"1", false);
    /// assert_eq!(d.stats().snapshot().messages, 1);
    /// ```
    pub fn stats(&self) -> Arc<WsStats> {
        Arc::clone(&self.stats)
    }

    /// Decode one data frame's payload. `binary`: the payload is not known to be UTF-8, so it
    /// is checked (a [`WsStream`] passes `true` for every frame: text frames reach it as
    /// binary, so that one that is not UTF-8 is skipped rather than failing the connection).
    /// `None`: the message was filtered out. Never panics.
    ///
    /// ```
    /// let d = livecache::ws::Decoder::<u8>::new(2);
    /// assert!(matches!(d.decode(b"100", false), Some(Err(livecache::ws::WsError::TooLarge { .. }))));
    /// ```
    pub fn decode(&self, payload: &[u8], binary: bool) -> Option<Result<M, WsError>> {
        let stats = &self.stats;
        if payload.len() > self.max_message_bytes {
            bump(&stats.too_large);
            return Some(Err(WsError::TooLarge {
                size: payload.len(),
                limit: self.max_message_bytes,
            }));
        }
        if binary && std::str::from_utf8(payload).is_err() {
            bump(&stats.not_utf8);
            return Some(Err(WsError::NotUtf8));
        }
        let message: M = match serde_json::from_slice(payload) {
            Ok(message) => message,
            // serde stops at the first error, a type error before a syntax error or the other
            // way round, so its category does not tell the two apart; on this (rare) path, a
            // second parse that only checks the syntax does.
            Err(e) => match serde_json::from_slice::<IgnoredAny>(payload) {
                Ok(_) => {
                    bump(&stats.schema);
                    return Some(Err(WsError::Schema(e.to_string())));
                }
                Err(syntax) => {
                    bump(&stats.not_json);
                    return Some(Err(WsError::NotJson(syntax.to_string())));
                }
            },
        };
        if self.validate.as_ref().is_some_and(|valid| !valid(&message)) {
            bump(&stats.invalid);
            return Some(Err(WsError::Invalid));
        }
        if self.filter.as_ref().is_some_and(|keep| !keep(&message)) {
            bump(&stats.filtered);
            return None;
        }
        bump(&stats.messages);
        Some(Ok(message))
    }
}

/// A connected WebSocket decoding messages of type `M`. See the module docs.
///
/// ```no_run
/// use futures::StreamExt;
/// # async fn run() -> Result<(), livecache::ws::WsError> {
/// let mut socket = livecache::ws::connect::<serde_json::Value>("ws://127.0.0.1:8080/ws").await?;
/// while let Some(item) = socket.next().await {
///     match item {
///         Ok(message) => println!("{message}"),
///         Err(skipped) if !livecache::StreamError::is_fatal(&skipped) => continue,
///         Err(fatal) => return Err(fatal),
///     }
/// }
/// println!("{} frames skipped", socket.stats().snapshot().skipped());
/// # Ok(()) }
/// ```
pub struct WsStream<M> {
    /// As the connection holds them.
    limits: WsLimits,
    socket: Option<Socket>,
    decoder: Decoder<M>,
}

impl<M: DeserializeOwned> WsStream<M> {
    /// The stream's counters, shared: read them while it runs or after it is gone.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), livecache::ws::WsError> {
    /// let socket = livecache::ws::connect::<String>("ws://127.0.0.1:8080/").await?;
    /// let stats = socket.stats();
    /// drop(socket);
    /// println!("{:?}", stats.snapshot());
    /// # Ok(()) }
    /// ```
    pub fn stats(&self) -> Arc<WsStats> {
        self.decoder.stats()
    }

    /// The buffer sizes and limits the connection runs with, read from its protocol layer
    /// when it opened.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), livecache::ws::WsError> {
    /// let socket = livecache::ws::connect::<String>("ws://127.0.0.1:8080/")
    ///     .read_buffer_bytes(16 * 1024)
    ///     .await?;
    /// assert_eq!(socket.limits().read_buffer_bytes, 16 * 1024);
    /// # Ok(()) }
    /// ```
    pub fn limits(&self) -> WsLimits {
        self.limits
    }
}

/// A connection's buffer sizes and size limits: what [`Connect::limits`] will open it with, or
/// what an open [`WsStream::limits`] runs with.
///
/// ```
/// let limits = livecache::ws::connect::<String>("ws://127.0.0.1:9/").limits();
/// assert_eq!(limits.max_message_bytes, livecache::ws::DEFAULT_MAX_MESSAGE_BYTES);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WsLimits {
    /// The read buffer, allocated when the connection opens and filled by every read.
    pub read_buffer_bytes: usize,
    /// Replies are buffered up to this many bytes before they are written (0: at once).
    pub write_buffer_bytes: usize,
    /// The most bytes that may wait for a server that does not read.
    pub max_write_buffer_bytes: usize,
    /// The decode limit: larger frames are skipped.
    pub max_message_bytes: usize,
    /// The hard limit: a larger frame or message is refused before it is buffered, and ends
    /// the stream.
    pub hard_message_bytes: usize,
}

impl WsLimits {
    fn of(config: &WebSocketConfig, max_message_bytes: usize, max_unsent: usize) -> Self {
        WsLimits {
            read_buffer_bytes: config.read_buffer_size,
            write_buffer_bytes: config.write_buffer_size,
            max_write_buffer_bytes: max_unsent,
            max_message_bytes,
            hard_message_bytes: config
                .max_frame_size
                .unwrap_or(usize::MAX)
                .min(config.max_message_size.unwrap_or(usize::MAX)),
        }
    }
}

impl<M: DeserializeOwned> Stream for WsStream<M> {
    type Item = Result<M, WsError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let Some(socket) = self.socket.as_mut() else {
                return Poll::Ready(None);
            };
            let frame = match ready!(socket.poll_next_unpin(cx)) {
                None => {
                    self.socket = None;
                    return Poll::Ready(None);
                }
                Some(Err(e)) => {
                    self.socket = None;
                    return Poll::Ready(Some(Err(failure(e))));
                }
                Some(Ok(frame)) => frame,
            };
            let decoded = match frame {
                Message::Text(text) => self.decoder.decode(text.as_bytes(), false),
                Message::Binary(bytes) => self.decoder.decode(&bytes, true),
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {
                    bump(&self.decoder.stats.control);
                    None
                }
                Message::Close(frame) => {
                    let (code, reason) = frame.map_or((1005, String::new()), |f| {
                        (u16::from(f.code), f.reason.as_str().to_owned())
                    });
                    // Keep the socket: dropping the stream completes the close handshake.
                    return Poll::Ready(Some(Err(WsError::Closed { code, reason })));
                }
            };
            if let Some(item) = decoded {
                return Poll::Ready(Some(item));
            }
        }
    }
}

/// What a connection error means for the stream (always fatal).
fn failure(error: async_tungstenite::tungstenite::Error) -> WsError {
    use async_tungstenite::tungstenite::Error;
    use async_tungstenite::tungstenite::error::CapacityError;
    if let Error::Io(io) = &error
        && let Some(backlog) = io.get_ref().and_then(|e| e.downcast_ref::<Backlog>())
    {
        return WsError::Backlog {
            unsent: backlog.unsent,
            limit: backlog.limit,
        };
    }
    match error {
        Error::Capacity(CapacityError::MessageTooLong { size, max_size }) => WsError::Refused {
            size,
            limit: max_size,
        },
        other => WsError::Failed(other.to_string()),
    }
}

impl<M> Drop for WsStream<M> {
    /// Close the socket with a close frame. Drop cannot wait, so a short task sends the frame and
    /// waits (at most a second) for the server's answer; outside a tokio runtime the socket is
    /// only dropped.
    fn drop(&mut self) {
        let Some(mut socket) = self.socket.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let handshake = async {
                let _ = socket.close(None).await;
                while let Some(Ok(_)) = socket.next().await {}
            };
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, handshake).await;
        });
    }
}

impl<M> fmt::Debug for WsStream<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsStream")
            .field("open", &self.socket.is_some())
            .field("stats", &self.decoder.stats.snapshot())
            .finish()
    }
}
