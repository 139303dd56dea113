//! One WebSocket shared by many entries (R31), reconnected with backoff and kept honest by a
//! heartbeat (R32). The decisions are the sans-IO [`Connection`](crate::core::Connection)'s; a
//! tokio task carries them out over async-tungstenite.
//!
//! Build a [`SharedConnection`] once, next to the api; in each entry's lifecycle handler, take
//! the entry's [`Topic`] — a stream of its messages — and attach it like any other stream. The
//! first topic opens the socket, each one is subscribed on it, a topic whose entry is removed is
//! unsubscribed, and the socket closes `linger_ms` after the last one. When the socket drops,
//! every entry reads `Reconnecting { attempt, since, last_error }`; once it is back every topic
//! is subscribed again and every entry resyncs (a refetch, with the rebase of R27 for a
//! versioned one), `Resyncing` until its snapshot lands, then `Live`.
//!
//! ```no_run
//! # async fn run() -> Result<(), livecache::Error> {
//! use livecache::core::Version;
//! use livecache::ws::shared::{JsonFraming, SharedConnection};
//!
//! #[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]
//! struct Message { id: u64, text: String }
//!
//! let api = livecache::Api::builder().build();
//! let connection = SharedConnection::builder("ws://127.0.0.1:8080/ws", JsonFraming::<Message>::new())
//!     .spawn()?;
//! let chat = api
//!     .query::<String, Vec<Message>>("chat")
//!     .query_fn_versioned(|_room: String| async { Ok((Vec::new(), Version::new(0))) })
//!     .on_cache_entry_added(move |room, entry| {
//!         let topic = connection.topic(&entry, room);
//!         async move {
//!             entry.try_stream_versioned(topic, |m| Version::new(m.id), |list, m| list.push(m)).await;
//!             Ok(())
//!         }
//!     })
//!     .build()?;
//! # drop(chat); Ok(()) }
//! ```

mod connector;
mod driver;
mod framing;
mod source;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use futures::Stream;
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};

pub use connector::{Connector, TcpConnector};
pub use framing::{Framing, Inbound, JsonFraming};

use crate::core::ConnectionConfig;
use crate::runtime::feed::EntryInlet;
use crate::runtime::source_link::SourceLink;
use crate::runtime::{EntryHandle, Error, HandleState, StreamError};
use crate::ws::target::TlsChoice;

/// How many messages of one topic may wait for its entry by default: past it, a versioned entry
/// drops them and resyncs, an unversioned one fails (R33).
///
/// ```
/// assert_eq!(livecache::ws::shared::DEFAULT_INBOUND_CAPACITY, 1_024);
/// ```
pub const DEFAULT_INBOUND_CAPACITY: usize = 1_024;

/// The auth hook: runs before every (re)connect and gives the request headers, or refuses (the
/// refusal is fatal: every entry `Failed`).
pub type AuthHook =
    Arc<dyn Fn() -> BoxFuture<'static, Result<Vec<(String, String)>, String>> + Send + Sync>;

/// Which connection errors are fatal (see [`SharedBuilder::fatal_when`]).
pub type FatalWhen = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Why a topic's stream yields an error.
///
/// ```
/// use livecache::StreamError;
/// use livecache::ws::shared::SharedError;
/// assert!(SharedError::Overflow { capacity: 8 }.is_fatal());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SharedError {
    /// More messages of an unversioned topic arrived than its entry took in time: some were
    /// dropped, and nothing can recover them (R33).
    #[error("more than {capacity} messages waited for the entry: some were dropped")]
    Overflow {
        /// The bound.
        capacity: usize,
    },
    /// The connection is not open (a send through [`TopicSender`]).
    #[error("the shared connection is not open")]
    NotConnected,
    /// The connection's task has ended.
    #[error("the shared connection has ended")]
    Ended,
    /// A frame for the topic could not be read ([`Inbound::Bad`]): skipped, the stream goes on.
    #[error("{0}")]
    Skipped(String),
}

impl StreamError for SharedError {
    fn is_fatal(&self) -> bool {
        matches!(self, SharedError::Overflow { .. } | SharedError::Ended)
    }
}

/// Where the connection's task queues a topic's messages for one entry. futures' bounded
/// channel: it allocates as messages come, where tokio's allocates a block of 32 slots up front
/// for every entry on the connection.
type TopicTx<M> = futures::channel::mpsc::Sender<Result<M, SharedError>>;

/// How the driver hands an entry its topic's messages.
enum Inlet<M> {
    /// Queued for the entry's lifecycle handler, which streams its [`Topic`]; `overflowed` is
    /// set when the queue was full (R33).
    Queue {
        tx: TopicTx<M>,
        overflowed: Arc<AtomicBool>,
    },
    /// Applied into the entry by the driver's own task ([`SharedConnection::source`]).
    Feed(Box<dyn EntryInlet<M>>),
}

/// What the driver is asked by the handles.
enum Command<M> {
    Attach {
        topic: String,
        id: u64,
        link: SourceLink,
        inlet: Inlet<M>,
    },
    /// An entry the driver feeds ([`SharedConnection::source`]): its topic is `topic_of()`,
    /// computed in the driver's task (never under the cache's lock).
    AttachFed {
        topic_of: Box<dyn FnOnce() -> String + Send>,
        id: u64,
        link: SourceLink,
        feed: Box<dyn EntryInlet<M>>,
    },
    /// The entry `id` is gone (`restarted`: its lifecycle restarted, R30); on `topic`, or, for
    /// an entry the driver feeds, on the topic it was attached to.
    Detach {
        topic: Option<String>,
        id: u64,
        restarted: bool,
    },
    /// The first data of the entry `id`, one the driver feeds, landed.
    Loaded {
        id: u64,
    },
    Send {
        topic: String,
        text: String,
        reply: oneshot::Sender<Result<(), SharedError>>,
    },
    ReconnectNow,
    /// The core asks the entry `id` to resume from `from` (R26, R32); on `topic`, or, for an
    /// entry the driver feeds, on the topic it was attached to.
    Resume {
        topic: Option<String>,
        id: u64,
        from: Option<crate::core::Version>,
    },
}

/// A WebSocket shared by many entries (R31, R32). Cheap to clone; the connection's task ends
/// when every clone and every [`Topic`] is dropped.
pub struct SharedConnection<F: Framing> {
    commands: mpsc::UnboundedSender<Command<F::Message>>,
    ids: Arc<AtomicU64>,
    capacity: usize,
}

impl<F: Framing> Clone for SharedConnection<F> {
    fn clone(&self) -> Self {
        SharedConnection {
            commands: self.commands.clone(),
            ids: Arc::clone(&self.ids),
            capacity: self.capacity,
        }
    }
}

/// Builds a [`SharedConnection`].
pub struct SharedBuilder<F, C = TcpConnector> {
    url: String,
    framing: F,
    connector: C,
    config: ConnectionConfig,
    headers: Vec<(String, String)>,
    auth: Option<AuthHook>,
    fatal: Option<FatalWhen>,
    fatal_codes: Vec<u16>,
    capacity: usize,
    tls: TlsChoice,
}

impl<F: Framing> SharedConnection<F>
where
    F::Message: Clone,
{
    /// A builder for a connection to `url` (`ws://`) with `framing`.
    ///
    /// ```
    /// use livecache::ws::shared::{JsonFraming, SharedConnection};
    /// let builder = SharedConnection::builder("ws://127.0.0.1:8080/ws", JsonFraming::<u64>::new());
    /// # drop(builder);
    /// ```
    pub fn builder(url: impl Into<String>, framing: F) -> SharedBuilder<F> {
        SharedBuilder {
            url: url.into(),
            framing,
            connector: TcpConnector,
            config: ConnectionConfig::default(),
            headers: Vec::new(),
            auth: None,
            fatal: None,
            capacity: DEFAULT_INBOUND_CAPACITY,
            fatal_codes: Vec::new(),
            tls: TlsChoice::default(),
        }
    }

    /// The entry's topic: attach it to the shared connection and get its messages, to stream
    /// into the entry ([`EntryHandle::stream_versioned`], [`EntryHandle::try_stream`], …). The
    /// connection reports the entry's source status (`Connecting`, `Live`, `Reconnecting`,
    /// `Failed`) and resyncs it after a reconnect. Dropping the stream — the attachment does
    /// when the entry is removed — detaches the topic (unsubscribed; the socket closes after
    /// its linger when it was the last).
    ///
    /// ```no_run
    /// # async fn run(entry: livecache::EntryHandle<livecache::WithData, Vec<u64>>) {
    /// use livecache::ws::shared::{JsonFraming, SharedConnection};
    /// let connection = SharedConnection::builder("ws://127.0.0.1:8080/ws", JsonFraming::<u64>::new())
    ///     .spawn()
    ///     .expect("inside a tokio runtime");
    /// let topic = connection.topic(&entry, "numbers");
    /// entry.try_stream(topic, |list, n| list.push(n)).await;
    /// # }
    /// ```
    pub fn topic<S: HandleState, T: crate::Data, M>(
        &self,
        entry: &EntryHandle<S, T, M>,
        topic: impl Into<String>,
    ) -> Topic<F::Message> {
        let topic = topic.into();
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        // futures' bounded channel holds its buffer and one slot per sender.
        let (tx, rx) = futures::channel::mpsc::channel(self.capacity.max(1) - 1);
        let overflowed = Arc::new(AtomicBool::new(false));
        let link = entry.source_link();
        let versioned = link.is_versioned();
        // The core's resumes of the entry reach the driver while the topic lives (R26, R32);
        // only an endpoint that resyncs by resuming is ever asked.
        let alive = Arc::new(());
        if link.resumes() {
            link.on_resume(source::resume_hook(
                &alive,
                &self.commands,
                Some(topic.clone()),
                id,
            ));
        }
        let attached = self.commands.send(Command::Attach {
            topic: topic.clone(),
            id,
            link,
            inlet: Inlet::Queue {
                tx,
                overflowed: Arc::clone(&overflowed),
            },
        });
        Topic {
            topic,
            id,
            rx,
            overflowed,
            versioned,
            capacity: self.capacity,
            ended: attached.is_err(),
            reported: false,
            commands: self.commands.clone(),
            _alive: alive,
        }
    }

    /// Reconnect now (the application saw the network change, R32).
    ///
    /// ```no_run
    /// # fn run(connection: livecache::ws::shared::SharedConnection<livecache::ws::shared::JsonFraming<u64>>) {
    /// connection.reconnect_now();
    /// # }
    /// ```
    pub fn reconnect_now(&self) {
        let _ = self.commands.send(Command::ReconnectNow);
    }
}

impl<F: Framing, C: Connector> SharedBuilder<F, C>
where
    F::Message: Clone,
{
    /// The connection's timing: backoff, heartbeat, idle deadline, linger, the jitter's seed.
    ///
    /// ```
    /// use livecache::core::ConnectionConfig;
    /// use livecache::ws::shared::{JsonFraming, SharedConnection};
    /// let builder = SharedConnection::builder("ws://127.0.0.1:1/", JsonFraming::<u64>::new())
    ///     .config(ConnectionConfig { linger_ms: 5_000, ..ConnectionConfig::default() });
    /// # drop(builder);
    /// ```
    pub fn config(mut self, config: ConnectionConfig) -> Self {
        self.config = config;
        self
    }

    /// A header sent with every connect request.
    ///
    /// ```
    /// use livecache::ws::shared::{JsonFraming, SharedConnection};
    /// let builder = SharedConnection::builder("ws://127.0.0.1:1/", JsonFraming::<u64>::new())
    ///     .header("x-client", "livecache");
    /// # drop(builder);
    /// ```
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The auth hook: runs before every (re)connect; its headers go with the request, and its
    /// refusal fails every entry (a fatal error, R32).
    ///
    /// ```
    /// use livecache::ws::shared::{JsonFraming, SharedConnection};
    /// let builder = SharedConnection::builder("ws://127.0.0.1:1/", JsonFraming::<u64>::new())
    ///     .auth(|| async { Ok(vec![("authorization".into(), "Bearer fresh".into())]) });
    /// # drop(builder);
    /// ```
    pub fn auth<H, Fut>(mut self, hook: H) -> Self
    where
        H: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<(String, String)>, String>> + Send + 'static,
    {
        self.auth = Some(Arc::new(move || Box::pin(hook())));
        self
    }

    /// Which connection errors are fatal (no retry: every entry `Failed`), besides an auth
    /// refusal, a handshake answered 401 or 403, and the close codes of
    /// [`fatal_close_codes`](SharedBuilder::fatal_close_codes). `fatal` is asked of every
    /// failure's text: a failed attempt's, a broken socket's, a close frame's
    /// (`closed by the server: CODE REASON`).
    ///
    /// ```
    /// use livecache::ws::shared::{JsonFraming, SharedConnection};
    /// let builder = SharedConnection::builder("ws://127.0.0.1:1/", JsonFraming::<u64>::new())
    ///     .fatal_when(|error| error.contains("410"));
    /// # drop(builder);
    /// ```
    pub fn fatal_when(mut self, fatal: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        self.fatal = Some(Arc::new(fatal));
        self
    }

    /// Close codes that end the connection for good (R32): a close frame with one of them
    /// makes every entry `Failed` with its code and reason, and nothing reconnects — a server
    /// saying "your token is revoked" (say 4001) is not retried. None by default: a close is
    /// retried like any other loss.
    ///
    /// ```
    /// use livecache::ws::shared::{JsonFraming, SharedConnection};
    /// let builder = SharedConnection::builder("ws://127.0.0.1:1/", JsonFraming::<u64>::new())
    ///     .fatal_close_codes([1008, 4001]);
    /// # drop(builder);
    /// ```
    pub fn fatal_close_codes(mut self, codes: impl IntoIterator<Item = u16>) -> Self {
        self.fatal_codes = codes.into_iter().collect();
        self
    }

    /// How many messages of one topic may wait for its entry (R33;
    /// [`DEFAULT_INBOUND_CAPACITY`]).
    ///
    /// ```
    /// use livecache::ws::shared::{JsonFraming, SharedConnection};
    /// let builder = SharedConnection::builder("ws://127.0.0.1:1/", JsonFraming::<u64>::new())
    ///     .inbound_capacity(64);
    /// # drop(builder);
    /// ```
    pub fn inbound_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// Open the transport with `connector` instead of TCP (a simulated network, in tests).
    ///
    /// ```
    /// use livecache::ws::shared::{JsonFraming, SharedConnection, TcpConnector};
    /// let builder = SharedConnection::builder("ws://127.0.0.1:1/", JsonFraming::<u64>::new())
    ///     .connector(TcpConnector);
    /// # drop(builder);
    /// ```
    pub fn connector<D: Connector>(self, connector: D) -> SharedBuilder<F, D> {
        SharedBuilder {
            url: self.url,
            framing: self.framing,
            connector,
            config: self.config,
            headers: self.headers,
            auth: self.auth,
            fatal: self.fatal,
            fatal_codes: self.fatal_codes,
            capacity: self.capacity,
            tls: self.tls,
        }
    }

    /// The TLS configuration for a `wss://` URL (R40; feature `tls`): a private root, a client
    /// certificate. Without it, [`default_client_config`](crate::tls::default_client_config).
    ///
    /// ```
    /// use livecache::ws::shared::{JsonFraming, SharedConnection};
    /// let config = livecache::tls::default_client_config()?;
    /// let builder = SharedConnection::builder("wss://127.0.0.1:1/", JsonFraming::<u64>::new())
    ///     .tls(config);
    /// # drop(builder);
    /// # Ok::<(), livecache::tls::rustls::Error>(())
    /// ```
    #[cfg(feature = "tls")]
    pub fn tls(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls.config = Some(config);
        self
    }

    /// Start the connection's task (on the current tokio runtime). Nothing connects until the
    /// first topic is attached. Refused: a configuration that does not validate
    /// ([`Error::Unsupported`]), no runtime ([`Error::NoRuntime`]), a URL that is not `ws://`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// use livecache::ws::shared::{JsonFraming, SharedConnection};
    /// let connection = SharedConnection::builder("ws://127.0.0.1:1/", JsonFraming::<u64>::new())
    ///     .spawn()?;
    /// # drop(connection);
    /// let bad = SharedConnection::builder("http://example.com/", JsonFraming::<u64>::new()).spawn();
    /// assert!(bad.is_err());
    /// # Ok(()) }
    /// ```
    pub fn spawn(self) -> Result<SharedConnection<F>, Error> {
        let unsupported = |what: String| Error::Unsupported {
            name: "shared connection".into(),
            what,
        };
        self.config
            .validate()
            .map_err(|error| unsupported(error.to_string()))?;
        let target = driver::Target::parse(&self.url, self.tls).map_err(unsupported)?;
        let handle = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let (commands, rx) = mpsc::unbounded_channel();
        let parts = driver::Parts {
            target,
            framing: self.framing,
            connector: self.connector,
            config: self.config,
            headers: self.headers,
            auth: self.auth,
            fatal: self.fatal,
            fatal_codes: self.fatal_codes,
        };
        handle.spawn(driver::run(parts, rx));
        Ok(SharedConnection {
            commands,
            ids: Arc::new(AtomicU64::new(1)),
            capacity: self.capacity,
        })
    }
}

/// One entry's topic on a shared connection: a stream of its messages (see
/// [`SharedConnection::topic`]). An unversioned topic whose entry fell behind by more than the
/// inbound capacity yields [`SharedError::Overflow`] (fatal: the entry's stream fails, R33); a
/// versioned one resyncs instead. Dropping it detaches the topic.
pub struct Topic<M> {
    topic: String,
    id: u64,
    rx: futures::channel::mpsc::Receiver<Result<M, SharedError>>,
    overflowed: Arc<AtomicBool>,
    versioned: bool,
    capacity: usize,
    ended: bool,
    reported: bool,
    commands: mpsc::UnboundedSender<Command<M>>,
    /// While it lives, the entry's resumes reach the driver.
    _alive: Arc<()>,
}

impl<M> Topic<M> {
    /// The topic's name.
    ///
    /// ```no_run
    /// # fn run(topic: livecache::ws::shared::Topic<u64>) {
    /// println!("{}", topic.name());
    /// # }
    /// ```
    pub fn name(&self) -> &str {
        &self.topic
    }

    /// A sender of frames on the shared connection, for this topic's entry (R31): what the
    /// framing of your protocol makes of them is up to you.
    ///
    /// ```no_run
    /// # async fn run(topic: livecache::ws::shared::Topic<u64>) {
    /// let sender = topic.sender();
    /// sender.send(r#"{"type":"typing"}"#).await.ok();
    /// # }
    /// ```
    pub fn sender(&self) -> TopicSender<M> {
        TopicSender {
            topic: self.topic.clone(),
            commands: self.commands.clone(),
        }
    }
}

impl<M> Stream for Topic<M> {
    type Item = Result<M, SharedError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        if !this.versioned && !this.reported && this.overflowed.load(Ordering::Acquire) {
            this.reported = true;
            return Poll::Ready(Some(Err(SharedError::Overflow {
                capacity: this.capacity,
            })));
        }
        match Pin::new(&mut this.rx).poll_next(cx) {
            Poll::Ready(Some(item)) => Poll::Ready(Some(item)),
            Poll::Ready(None) => {
                this.ended = true;
                Poll::Ready(Some(Err(SharedError::Ended)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<M> Drop for Topic<M> {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Detach {
            topic: Some(std::mem::take(&mut self.topic)),
            id: self.id,
            restarted: false,
        });
    }
}

/// Sends frames on a shared connection for one topic's entry ([`Topic::sender`]).
pub struct TopicSender<M> {
    topic: String,
    commands: mpsc::UnboundedSender<Command<M>>,
}

impl<M> Clone for TopicSender<M> {
    fn clone(&self) -> Self {
        TopicSender {
            topic: self.topic.clone(),
            commands: self.commands.clone(),
        }
    }
}

impl<M> TopicSender<M> {
    /// Send `text` as a text frame on the open connection; `Err(NotConnected)` while it is not
    /// open, `Err(Ended)` once the connection's task is gone.
    ///
    /// ```no_run
    /// # async fn run(sender: livecache::ws::shared::TopicSender<u64>) {
    /// if let Err(error) = sender.send("hello").await {
    ///     eprintln!("not sent: {error}");
    /// }
    /// # }
    /// ```
    pub async fn send(&self, text: impl Into<String>) -> Result<(), SharedError> {
        let (reply, answer) = oneshot::channel();
        let sent = self.commands.send(Command::Send {
            topic: self.topic.clone(),
            text: text.into(),
            reply,
        });
        if sent.is_err() {
            return Err(SharedError::Ended);
        }
        answer.await.unwrap_or(Err(SharedError::Ended))
    }
}
