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
use std::task::{Context, Poll, ready};
use std::time::Duration;

use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;

use crate::runtime::StreamError;

mod decoder;
mod error;
mod secure;
pub mod shared;
mod stats;
pub(crate) mod target;
pub(crate) mod transport;

pub use decoder::Decoder;
pub use error::{ConnectFailure, WsError};
use stats::bump;
pub use stats::{WsCounts, WsStats};
use target::{Target, TlsChoice};
use transport::{Backlog, Transport};

/// The socket under a [`WsStream`].
type Socket = target::Socket<tokio::net::TcpStream>;

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
        tls: TlsChoice::default(),
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
    tls: TlsChoice,
}

impl<M: DeserializeOwned + Send + 'static> Connect<M> {
    /// The TLS configuration for a `wss://` URL (R40; feature `tls`): a private root, a client
    /// certificate. Without it, [`default_client_config`](crate::tls::default_client_config).
    ///
    /// ```
    /// let config = livecache::tls::default_client_config()?;
    /// let c = livecache::ws::connect::<String>("wss://127.0.0.1:9/").tls(config);
    /// # Ok::<(), livecache::tls::rustls::Error>(())
    /// ```
    #[cfg(feature = "tls")]
    pub fn tls(mut self, config: std::sync::Arc<rustls::ClientConfig>) -> Self {
        self.tls.config = Some(config);
        self
    }

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
    /// use livecache::ws::{ConnectFailure, WsError};
    /// assert!(matches!(refused, Err(WsError::Connect { failure: ConnectFailure::Refused, .. })));
    /// # }
    /// ```
    pub async fn open(self) -> Result<WsStream<M>, WsError> {
        let config = self.websocket_config();
        let connecting = connect_socket(&self.url, &self.tls, self.max_write_buffer_bytes, config);
        let socket = tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .map_err(|_elapsed| WsError::Timeout(self.connect_timeout))??;
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

/// The connection (to the URL's host and port), TLS for `wss://`, and the handshake, on a
/// [`Transport`] that bounds what waits to be written.
async fn connect_socket(
    url: &str,
    tls: &TlsChoice,
    max_unsent: usize,
    config: WebSocketConfig,
) -> Result<Socket, WsError> {
    let (request, target) = Target::parse(url)?;
    let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(Target::unreachable)?;
    let stream = target.secure(tcp, tls).await?;
    target::handshake(request, Transport::new(stream, max_unsent), Some(config)).await
}

impl<M: DeserializeOwned + Send + 'static> IntoFuture for Connect<M> {
    type Output = Result<WsStream<M>, WsError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.open())
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
        other => WsError::Failed {
            cause: crate::Cause::new(other),
        },
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
