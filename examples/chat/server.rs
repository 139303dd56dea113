//! The chat server of the streaming example, on axum: `GET /messages/{channel}` serves a
//! channel's history as JSON, `GET /history/{channel}` the same with its watermark (the id of
//! the newest message posted when the history was read: message ids are versions), `GET /ws` is
//! a WebSocket that broadcasts every new message (of every channel) to every client; a client may
//! name its channel (`/ws?channel=redux`) so the server can close that channel's sockets alone.
//! `GET /topics` is one WebSocket for every channel, in the shared connection's JSON framing
//! (`{"type":"subscribe","topic":"redux"}` in, `{"topic":"redux","message":{…}}` out);
//! `restart` drops every socket and refuses new ones for a while, as a server restarting would.
//! Tests drive it too: they send malformed frames, pings and closes through it and read what it
//! observed (close frames, dropped connections).
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::ws::{Message as Frame, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore, broadcast};

/// A chat channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Redux,
    General,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Redux => "redux",
            Channel::General => "general",
        }
    }

    fn parse(s: &str) -> Option<Channel> {
        match s {
            "redux" => Some(Channel::Redux),
            "general" => Some(Channel::General),
            _ => None,
        }
    }
}

/// A chat message, as the streaming guide has it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub id: u64,
    pub channel: Channel,
    pub user_name: String,
    pub text: String,
}

/// What the server sends its WebSocket clients.
#[derive(Clone, Debug)]
pub enum Outgoing {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
    /// A ping.
    Ping,
    /// A close frame, then the connection ends.
    Close,
    /// Drop the connection without a close frame.
    Drop,
    /// A close frame to the sockets that named this channel, then their connections end.
    CloseChannel(Channel),
    /// Every connection drops without a close frame (the server restarts).
    Restart,
}

/// A channel's history with its watermark: every message with a larger id was posted after it
/// was read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub messages: Vec<Message>,
    pub watermark: u64,
}

/// What the server saw of its WebSocket clients.
#[derive(Debug, Default)]
pub struct Observed {
    pub connected: AtomicUsize,
    pub open: AtomicUsize,
    pub close_frames: AtomicUsize,
    pub dropped_without_close: AtomicUsize,
    pub pongs: AtomicUsize,
}

struct Shared {
    history: Mutex<HashMap<Channel, Vec<Message>>>,
    next_id: AtomicU64,
    outgoing: broadcast::Sender<Outgoing>,
    observed: Arc<Observed>,
    /// When set, a history request takes its snapshot, then waits for this before answering.
    history_gate: Mutex<Option<Arc<Notify>>>,
    /// When set, a history request waits for a permit of this before taking its snapshot.
    snapshot_gate: Mutex<Option<Arc<Semaphore>>>,
    /// Channels whose history requests fail with 503.
    failing: Mutex<Vec<Channel>>,
    connection_changed: Notify,
    /// History requests that took their snapshot and reached the gate (for tests).
    history_held: AtomicUsize,
    history_held_changed: Notify,
    /// Until this instant, WebSocket upgrades are refused with 503 (a restart under way).
    refusing_until: Mutex<Option<tokio::time::Instant>>,
    /// Subscribe frames received on `/topics`, per channel.
    subscribes: Mutex<HashMap<Channel, usize>>,
}

/// A running chat server.
#[derive(Clone)]
pub struct ChatServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl ChatServer {
    /// Start a server on 127.0.0.1, on an ephemeral port, with some history.
    pub async fn start() -> std::io::Result<ChatServer> {
        let (outgoing, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            history: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            outgoing,
            observed: Arc::default(),
            history_gate: Mutex::new(None),
            snapshot_gate: Mutex::new(None),
            failing: Mutex::new(Vec::new()),
            connection_changed: Notify::new(),
            history_held: AtomicUsize::new(0),
            history_held_changed: Notify::new(),
            refusing_until: Mutex::new(None),
            subscribes: Mutex::new(HashMap::new()),
        });
        let server = ChatServer {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            shared,
        };
        server.seed(Channel::Redux, "mark", "Welcome to #redux!");
        server.seed(Channel::General, "lenz", "Welcome to #general!");
        let app = Router::new()
            .route("/messages/{channel}", get(history))
            .route("/history/{channel}", get(versioned_history))
            .route("/ws", get(upgrade))
            .route("/topics", get(upgrade_topics))
            .with_state(Arc::clone(&server.shared));
        let listener = tokio::net::TcpListener::bind(server.addr).await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(ChatServer { addr, ..server })
    }

    pub fn http_url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// The shared connection's URL (`/topics`).
    pub fn topics_url(&self) -> String {
        format!("ws://{}/topics", self.addr)
    }

    /// Restart: every socket drops, and new ones are refused for `down`.
    pub fn restart(&self, down: std::time::Duration) {
        if let Ok(mut until) = self.shared.refusing_until.lock() {
            *until = Some(tokio::time::Instant::now() + down);
        }
        let _ = self.shared.outgoing.send(Outgoing::Restart);
    }

    /// How many subscribe frames `channel` has had on `/topics`.
    pub fn subscribes(&self, channel: Channel) -> usize {
        self.shared
            .subscribes
            .lock()
            .map(|s| s.get(&channel).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Wait until `channel` has had `n` subscribe frames (at most `timeout`).
    pub async fn wait_subscribed(
        &self,
        channel: Channel,
        n: usize,
        timeout: std::time::Duration,
    ) -> bool {
        tokio::time::timeout(timeout, async {
            loop {
                let notified = self.shared.connection_changed.notified();
                if self.subscribes(channel) >= n {
                    return;
                }
                notified.await;
            }
        })
        .await
        .is_ok()
    }

    fn seed(&self, channel: Channel, user: &str, text: &str) {
        self.store(channel, user, text);
    }

    /// A new message, numbered and stored under the history's lock: a history read sees every
    /// message up to its watermark and none after it.
    fn store(&self, channel: Channel, user: &str, text: &str) -> Message {
        let mut history = match self.shared.history.lock() {
            Ok(history) => history,
            Err(poisoned) => poisoned.into_inner(),
        };
        let message = Message {
            id: self.shared.next_id.fetch_add(1, Ordering::SeqCst),
            channel,
            user_name: user.to_string(),
            text: text.to_string(),
        };
        history.entry(channel).or_default().push(message.clone());
        message
    }

    /// Post a message: stored in the history and broadcast to every WebSocket client.
    pub fn post(&self, channel: Channel, user: &str, text: &str) -> Message {
        let message = self.store(channel, user, text);
        let json = serde_json::to_string(&message).unwrap_or_default();
        let _ = self.shared.outgoing.send(Outgoing::Text(json));
        message
    }

    /// Send anything to every WebSocket client (malformed frames, pings, closes).
    pub fn send(&self, frame: Outgoing) {
        let _ = self.shared.outgoing.send(frame);
    }

    /// What the server saw of its clients.
    pub fn observed(&self) -> &Observed {
        &self.shared.observed
    }

    /// From now on, history requests snapshot the history, then wait for the returned gate.
    pub fn hold_history(&self) -> Arc<Notify> {
        let gate = Arc::new(Notify::new());
        if let Ok(mut slot) = self.shared.history_gate.lock() {
            *slot = Some(Arc::clone(&gate));
        }
        gate
    }

    /// From now on, `GET /history/…` requests wait before reading the history until the
    /// returned gate is opened (`add_permits`).
    pub fn delay_history(&self) -> Arc<Semaphore> {
        let gate = Arc::new(Semaphore::new(0));
        if let Ok(mut slot) = self.shared.snapshot_gate.lock() {
            *slot = Some(Arc::clone(&gate));
        }
        gate
    }

    /// History requests for `channel` fail with 503 from now on.
    pub fn fail_history(&self, channel: Channel) {
        if let Ok(mut failing) = self.shared.failing.lock() {
            failing.push(channel);
        }
    }

    /// Wait until `open` WebSocket connections are open (at most `timeout`).
    pub async fn wait_open(&self, open: usize, timeout: std::time::Duration) -> bool {
        tokio::time::timeout(timeout, async {
            loop {
                let notified = self.shared.connection_changed.notified();
                if self.shared.observed.open.load(Ordering::SeqCst) == open {
                    return;
                }
                notified.await;
            }
        })
        .await
        .is_ok()
    }

    /// Wait until `held` history requests have taken their snapshot and are waiting at the
    /// [`ChatServer::hold_history`] gate (at most `timeout`).
    pub async fn wait_history_held(&self, held: usize, timeout: std::time::Duration) -> bool {
        tokio::time::timeout(timeout, async {
            loop {
                let notified = self.shared.history_held_changed.notified();
                if self.shared.history_held.load(Ordering::SeqCst) >= held {
                    return;
                }
                notified.await;
            }
        })
        .await
        .is_ok()
    }
}

async fn history(State(shared): State<Arc<Shared>>, Path(channel): Path<String>) -> Response {
    let Some(channel) = Channel::parse(&channel) else {
        return (StatusCode::NOT_FOUND, "no such channel").into_response();
    };
    if shared
        .failing
        .lock()
        .map(|f| f.contains(&channel))
        .unwrap_or(false)
    {
        return (StatusCode::SERVICE_UNAVAILABLE, "history unavailable").into_response();
    }
    let snapshot = shared
        .history
        .lock()
        .map(|h| h.get(&channel).cloned().unwrap_or_default())
        .unwrap_or_default();
    let gate = shared.history_gate.lock().ok().and_then(|g| g.clone());
    if let Some(gate) = gate {
        shared.history_held.fetch_add(1, Ordering::SeqCst);
        shared.history_held_changed.notify_waiters();
        gate.notified().await;
    }
    axum::Json(snapshot).into_response()
}

/// `GET /history/{channel}`: the history and its watermark, read together under the lock.
async fn versioned_history(
    State(shared): State<Arc<Shared>>,
    Path(channel): Path<String>,
) -> Response {
    let Some(channel) = Channel::parse(&channel) else {
        return (StatusCode::NOT_FOUND, "no such channel").into_response();
    };
    let gate = shared.snapshot_gate.lock().ok().and_then(|g| g.clone());
    if let Some(gate) = gate {
        // The permit goes back at once: an opened gate lets every request through.
        let _ = gate.acquire().await;
    }
    let history = {
        let history = match shared.history.lock() {
            Ok(history) => history,
            Err(poisoned) => poisoned.into_inner(),
        };
        History {
            messages: history.get(&channel).cloned().unwrap_or_default(),
            watermark: shared.next_id.load(Ordering::SeqCst) - 1,
        }
    };
    axum::Json(history).into_response()
}

async fn upgrade(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    let channel = params.get("channel").and_then(|c| Channel::parse(c));
    ws.on_upgrade(move |socket| client(socket, shared, channel))
}

/// Whether upgrades are refused now (a restart under way).
fn refusing(shared: &Shared) -> bool {
    let until = shared.refusing_until.lock().ok().and_then(|u| *u);
    until.is_some_and(|until| tokio::time::Instant::now() < until)
}

async fn upgrade_topics(State(shared): State<Arc<Shared>>, ws: WebSocketUpgrade) -> Response {
    if refusing(&shared) {
        return (StatusCode::SERVICE_UNAVAILABLE, "restarting").into_response();
    }
    ws.on_upgrade(move |socket| topics_client(socket, shared))
}

/// One `/topics` client: subscribes and unsubscribes channels; each posted message of a
/// subscribed channel goes out framed with its topic; a text that is not a message goes out as
/// it is (tests' and the example's malformed frames).
async fn topics_client(mut socket: WebSocket, shared: Arc<Shared>) {
    let observed = Arc::clone(&shared.observed);
    let mut outgoing = shared.outgoing.subscribe();
    let mut topics: Vec<Channel> = Vec::new();
    observed.connected.fetch_add(1, Ordering::SeqCst);
    observed.open.fetch_add(1, Ordering::SeqCst);
    shared.connection_changed.notify_waiters();
    loop {
        tokio::select! {
            frame = outgoing.recv() => {
                let sent = match frame {
                    Ok(Outgoing::Text(text)) => match serde_json::from_str::<Message>(&text) {
                        Ok(message) if topics.contains(&message.channel) => {
                            let topic = message.channel.as_str();
                            let framed = serde_json::json!({ "topic": topic, "message": message });
                            socket.send(Frame::Text(framed.to_string().into())).await
                        }
                        Ok(_) => Ok(()),
                        Err(_) => socket.send(Frame::Text(text.into())).await,
                    },
                    Ok(Outgoing::Restart | Outgoing::Drop) => break,
                    Ok(_) => Ok(()),
                    Err(broadcast::error::RecvError::Lagged(_)) => Ok(()),
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                if sent.is_err() {
                    observed.dropped_without_close.fetch_add(1, Ordering::SeqCst);
                    break;
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Frame::Text(text))) => {
                    let frame: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                    let channel = frame["topic"].as_str().and_then(Channel::parse);
                    match (frame["type"].as_str(), channel) {
                        (Some("subscribe"), Some(channel)) => {
                            topics.push(channel);
                            let topic = channel.as_str();
                            let ack = serde_json::json!({ "type": "subscribed", "topic": topic });
                            if socket.send(Frame::Text(ack.to_string().into())).await.is_err() {
                                break;
                            }
                            if let Ok(mut subscribes) = shared.subscribes.lock() {
                                *subscribes.entry(channel).or_default() += 1;
                            }
                            shared.connection_changed.notify_waiters();
                        }
                        (Some("unsubscribe"), Some(channel)) => topics.retain(|c| *c != channel),
                        _ => {}
                    }
                }
                Some(Ok(Frame::Close(_))) => {
                    observed.close_frames.fetch_add(1, Ordering::SeqCst);
                    break;
                }
                Some(Ok(Frame::Pong(_))) => {
                    observed.pongs.fetch_add(1, Ordering::SeqCst);
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    observed.dropped_without_close.fetch_add(1, Ordering::SeqCst);
                    break;
                }
            },
        }
    }
    observed.open.fetch_sub(1, Ordering::SeqCst);
    shared.connection_changed.notify_waiters();
}

async fn client(mut socket: WebSocket, shared: Arc<Shared>, channel: Option<Channel>) {
    let observed = Arc::clone(&shared.observed);
    let mut outgoing = shared.outgoing.subscribe();
    observed.connected.fetch_add(1, Ordering::SeqCst);
    observed.open.fetch_add(1, Ordering::SeqCst);
    shared.connection_changed.notify_waiters();
    loop {
        tokio::select! {
            frame = outgoing.recv() => {
                let sent = match frame {
                    Ok(Outgoing::Text(text)) => socket.send(Frame::Text(text.into())).await,
                    Ok(Outgoing::Binary(bytes)) => socket.send(Frame::Binary(bytes.into())).await,
                    Ok(Outgoing::Ping) => socket.send(Frame::Ping(Vec::new().into())).await,
                    Ok(Outgoing::CloseChannel(closed)) if Some(closed) != channel => Ok(()),
                    Ok(Outgoing::Close | Outgoing::CloseChannel(_)) => {
                        let _ = socket.send(Frame::Close(None)).await;
                        // wait for the client's answer, then end
                        while let Some(Ok(frame)) = socket.recv().await {
                            if matches!(frame, Frame::Close(_)) {
                                break;
                            }
                        }
                        break;
                    }
                    Ok(Outgoing::Drop | Outgoing::Restart) => break,
                    Err(broadcast::error::RecvError::Lagged(_)) => Ok(()),
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                if sent.is_err() {
                    observed.dropped_without_close.fetch_add(1, Ordering::SeqCst);
                    break;
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Frame::Close(_))) => {
                    observed.close_frames.fetch_add(1, Ordering::SeqCst);
                    break;
                }
                Some(Ok(Frame::Pong(_))) => {
                    observed.pongs.fetch_add(1, Ordering::SeqCst);
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    observed.dropped_without_close.fetch_add(1, Ordering::SeqCst);
                    break;
                }
            },
        }
    }
    observed.open.fetch_sub(1, Ordering::SeqCst);
    shared.connection_changed.notify_waiters();
}
