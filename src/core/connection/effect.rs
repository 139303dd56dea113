//! What the shared connection asks of its driver, and the states it is in (R31, R32).

use crate::core::stream_status::StreamStatus;

/// What a [`Connection`](super::Connection) asks its driver to do. `epoch` names the socket:
/// each attempt to connect gets a new one, and the driver tags what it reports with it.
///
/// ```
/// use livecache::core::{Connection, ConnectionConfig, ConnEffect};
/// let mut connection: Connection<String> = Connection::new(ConnectionConfig::default())?;
/// connection.attach(0, "chat/redux".to_string());
/// assert_eq!(connection.poll_effect(), Some(ConnEffect::Connect { epoch: 1 }));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnEffect<T> {
    /// Open a socket (running the auth hook first), then report `connected` or
    /// `connect_failed` under this epoch.
    Connect {
        /// The attempt's epoch.
        epoch: u64,
    },
    /// Close this epoch's socket with a close frame, or abandon the attempt to open it.
    Close {
        /// The epoch.
        epoch: u64,
    },
    /// Send a frame on this epoch's socket.
    Send {
        /// The epoch.
        epoch: u64,
        /// What to send.
        frame: Frame<T>,
    },
    /// The topic was subscribed again on a new socket: messages may have been missed, so its
    /// entry resyncs by its policy (R32), then the driver reports `resynced`.
    Resync {
        /// The topic.
        topic: T,
    },
    /// The topic's entry's source status (R28): `Connecting`, `Live`, `Reconnecting { .. }` or
    /// `Failed { .. }`.
    Status {
        /// The topic.
        topic: T,
        /// Its source's status now.
        status: StreamStatus,
    },
}

/// A frame the connection sends; the driver's framing turns it into a message.
///
/// ```
/// let frame = livecache::core::Frame::Subscribe { topic: "chat/redux" };
/// assert_eq!(frame.topic(), Some(&"chat/redux"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame<T> {
    /// Start receiving the topic's messages.
    Subscribe {
        /// The topic.
        topic: T,
    },
    /// Stop receiving them.
    Unsubscribe {
        /// The topic.
        topic: T,
    },
    /// A heartbeat; the peer's answer (or any frame) proves the connection alive.
    Ping,
}

impl<T> Frame<T> {
    /// The topic the frame is about, if any.
    ///
    /// ```
    /// assert_eq!(livecache::core::Frame::<u8>::Ping.topic(), None);
    /// ```
    pub fn topic(&self) -> Option<&T> {
        match self {
            Frame::Subscribe { topic } | Frame::Unsubscribe { topic } => Some(topic),
            Frame::Ping => None,
        }
    }
}

/// Where a [`Connection`](super::Connection) is.
///
/// ```
/// use livecache::core::{ConnState, Connection, ConnectionConfig};
/// let connection: Connection<u8> = Connection::new(ConnectionConfig::default())?;
/// assert_eq!(connection.state(), &ConnState::Idle);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// No entry needs it and no socket is open.
    Idle,
    /// A socket is being opened: the first (`attempt` 0) or retry `attempt`.
    Connecting {
        /// The socket's epoch.
        epoch: u64,
        /// 0 for a first connect, else the retry's number (1, 2, …).
        attempt: u32,
    },
    /// The socket is open and entries use it.
    Open {
        /// The socket's epoch.
        epoch: u64,
    },
    /// The socket is open but no entry needs it; it closes at `until_ms`.
    Lingering {
        /// The socket's epoch.
        epoch: u64,
        /// When it closes.
        until_ms: u64,
    },
    /// Waiting before retry `attempt`, until `until_ms`.
    Backoff {
        /// The retry it waits for (1, 2, …).
        attempt: u32,
        /// When it connects again.
        until_ms: u64,
    },
    /// It gave up (too many attempts, or an error marked fatal); an entry attaching, or
    /// [`reconnect_now`](super::Connection::reconnect_now), starts again.
    Failed {
        /// Why.
        error: String,
    },
}
