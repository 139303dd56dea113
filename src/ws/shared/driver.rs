//! The shared connection's tokio task: carries out what the sans-IO
//! [`Connection`](crate::core::Connection) decides — opening and closing sockets, sending
//! frames, telling entries their status and asking them to resync — and tells it what happened.
//! It decides nothing itself.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::http::HeaderValue;
use async_tungstenite::tungstenite::http::header::HeaderName;
use async_tungstenite::tungstenite::{Error as WsProtocolError, Message};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{AuthHook, Command, Connector, FatalWhen, Framing, Inbound, Inlet, SharedError};
use crate::core::{ConnEffect, Connection, ConnectionConfig, Frame, Version};
use crate::runtime::feed::panic_message;
use crate::runtime::source_link::SourceLink;
use crate::ws::target::{Socket, TlsChoice, handshake};
use crate::ws::transport::Transport;
use crate::ws::{ConnectFailure, WsError};

/// How long a closing socket may take to finish its close handshake.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// How many frames the driver hands on in a row before it lets the entries' tasks run (so a
/// flood does not fill a topic's queue, `inbound_capacity`, while its entry waits its turn).
const FRAME_BURST: u32 = 32;

/// What may wait unsent for a peer that does not read (as `ws::connect`'s default).
const MAX_UNSENT: usize = 64 * 1024;

/// Where to connect: the URL's host and port, and the URL itself for the request.
pub(super) struct Target {
    url: String,
    at: crate::ws::target::Target,
    tls: TlsChoice,
}

impl Target {
    /// Read a `ws://` or `wss://` URL.
    pub(super) fn parse(url: &str, tls: TlsChoice) -> Result<Target, String> {
        let (_, at) = crate::ws::target::Target::parse(url).map_err(|e| format!("{url}: {e}"))?;
        Ok(Target {
            url: url.to_owned(),
            at,
            tls,
        })
    }
}

/// What the task is started with.
pub(super) struct Parts<F, C> {
    pub(super) target: Target,
    pub(super) framing: F,
    pub(super) connector: C,
    pub(super) config: ConnectionConfig,
    pub(super) headers: Vec<(String, String)>,
    pub(super) auth: Option<AuthHook>,
    pub(super) fatal: Option<FatalWhen>,
    pub(super) fatal_codes: Vec<u16>,
}

/// An attempt's outcome: the socket, or the error and whether it is fatal.
type Attempt<S> = BoxFuture<'static, Result<Socket<S>, (String, bool)>>;

/// One entry on a topic.
struct Subscriber<M> {
    id: u64,
    link: SourceLink,
    inlet: Inlet<M>,
}

impl<M> Subscriber<M> {
    /// Hand `message` to the entry: queued for its handler (one too far behind overflows, R33),
    /// or applied by its feed. `false` once a fed entry's attachment has ended.
    fn take(&mut self, message: Result<M, SharedError>) -> bool {
        match &mut self.inlet {
            Inlet::Queue { tx, overflowed } => {
                if tx.try_send(message).is_err()
                    && !overflowed.swap(true, Ordering::AcqRel)
                    && self.link.is_versioned()
                {
                    // A versioned entry recovers what was dropped by resyncing.
                    self.link.resync();
                    overflowed.store(false, Ordering::Release);
                }
                true
            }
            Inlet::Feed(feed) => match message {
                Ok(message) => feed.message(message),
                Err(SharedError::Skipped(reason)) => feed.skipped(reason),
                // The driver hands a feed nothing else.
                Err(_) => true,
            },
        }
    }
}

struct Driver<F: Framing, C: Connector> {
    parts: Parts<F, C>,
    machine: Connection<String>,
    start: Instant,
    socket: Option<(u64, Socket<C::Stream>)>,
    attempt: Option<(u64, Attempt<C::Stream>)>,
    /// In order: the driver does the same thing in the same order every run (a simulation
    /// replays from its seed).
    topics: BTreeMap<String, Vec<Subscriber<F::Message>>>,
    /// Topics asked to resync on the current socket, until their entries are no longer
    /// resyncing (then the machine is told, for its retry count's reset).
    resyncing: BTreeSet<String>,
    /// Topics to resync once the server acknowledges their subscription.
    awaiting_ack: BTreeSet<String>,
    /// On the current socket: the version each topic's resubscription after the reconnect asked
    /// the server to replay from, until its entry's resume (which it answers) comes; and the
    /// topics whose latest subscription the server acknowledged.
    resumed: BTreeMap<String, Option<Version>>,
    acked: BTreeSet<String>,
    /// Entries (by id) whose resume waits for their topic's acknowledgement.
    resume_waits: BTreeMap<String, Vec<u64>>,
    /// The topic of each entry the driver feeds, by id.
    fed: BTreeMap<u64, String>,
}

/// The task: until every handle is gone.
pub(super) async fn run<F, C>(
    parts: Parts<F, C>,
    mut commands: mpsc::UnboundedReceiver<Command<F::Message>>,
) where
    F: Framing,
    F::Message: Clone,
    C: Connector,
{
    let Ok(machine) = Connection::new(parts.config) else {
        return;
    };
    let mut driver = Driver {
        parts,
        machine,
        start: Instant::now(),
        socket: None,
        attempt: None,
        topics: BTreeMap::new(),
        resyncing: BTreeSet::new(),
        awaiting_ack: BTreeSet::new(),
        resumed: BTreeMap::new(),
        acked: BTreeSet::new(),
        resume_waits: BTreeMap::new(),
        fed: BTreeMap::new(),
    };
    // Frames handled in a row since the driver last let other tasks run.
    let mut burst = 0;
    loop {
        driver.carry_out().await;
        driver.check_resyncs();
        driver.carry_out().await;
        let deadline = driver
            .machine
            .poll_timeout()
            .map(|ms| driver.start + Duration::from_millis(ms));
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let frame = async {
            match driver.socket.as_mut() {
                Some((epoch, socket)) => (*epoch, socket.next().await),
                None => std::future::pending().await,
            }
        };
        let attempt = async {
            match driver.attempt.as_mut() {
                Some((epoch, attempt)) => (*epoch, attempt.await),
                None => std::future::pending().await,
            }
        };
        // Biased, in this order: the same run takes the same branches (a simulation replays
        // from its seed), and a flood of frames cannot hold back the handles' commands.
        tokio::select! {
            biased;
            command = commands.recv() => match command {
                Some(command) => driver.command(command).await,
                None => break,
            },
            (epoch, frame) = frame => {
                driver.frame(epoch, frame);
                burst += 1;
                if burst == FRAME_BURST {
                    // A socket that always has a frame ready would fill the topics' queues
                    // before their entries ran: they get their turn first.
                    burst = 0;
                    tokio::task::yield_now().await;
                }
            }
            (epoch, outcome) = attempt => driver.attempted(epoch, outcome),
            () = sleep => {
                let now = driver.now();
                driver.machine.handle_timeout(now);
            }
        }
    }
    // Every handle is gone: close the socket.
    if let Some((_, mut socket)) = driver.socket.take() {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.close(None)).await;
    }
}

impl<F, C> Driver<F, C>
where
    F: Framing,
    F::Message: Clone,
    C: Connector,
{
    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    async fn command(&mut self, command: Command<F::Message>) {
        let now = self.now();
        match command {
            Command::Attach {
                topic,
                id,
                link,
                inlet,
            } => self.attach(now, topic, Subscriber { id, link, inlet }),
            Command::AttachFed {
                topic_of,
                id,
                link,
                mut feed,
            } => match catch_unwind(AssertUnwindSafe(topic_of)) {
                Ok(topic) => {
                    self.fed.insert(id, topic.clone());
                    let inlet = Inlet::Feed(feed);
                    self.attach(now, topic, Subscriber { id, link, inlet });
                }
                Err(payload) => {
                    let error =
                        format!("the topic function panicked: {}", panic_message(&*payload));
                    feed.failed(error);
                }
            },
            Command::Detach {
                topic,
                id,
                restarted,
            } => {
                let Some(topic) = topic.or_else(|| self.fed.get(&id).cloned()) else {
                    return;
                };
                if let Some(Subscriber {
                    inlet: Inlet::Feed(mut feed),
                    ..
                }) = self.detach(&topic, id)
                {
                    feed.detached(restarted);
                }
            }
            Command::Loaded { id } => {
                let Some(topic) = self.fed.get(&id).cloned() else {
                    return;
                };
                let ended = self
                    .topics
                    .get_mut(&topic)
                    .and_then(|subs| subs.iter_mut().find(|s| s.id == id))
                    .is_some_and(|subscriber| match &mut subscriber.inlet {
                        Inlet::Feed(feed) => !feed.data_loaded(),
                        Inlet::Queue { .. } => false,
                    });
                if ended {
                    self.detach(&topic, id);
                }
            }
            Command::Send { topic, text, reply } => {
                let open = self.topics.contains_key(&topic) && self.is_open();
                let result = match (open, self.socket.as_mut()) {
                    (true, Some((_, socket))) => socket
                        .send(Message::text(text))
                        .await
                        .map_err(|_| SharedError::NotConnected),
                    _ => Err(SharedError::NotConnected),
                };
                let _ = reply.send(result);
            }
            Command::ReconnectNow => {
                self.machine.reconnect_now(now);
            }
            Command::Resume { topic, id, from } => {
                if let Some(topic) = topic.or_else(|| self.fed.get(&id).cloned()) {
                    self.resume(topic, id, from).await;
                }
            }
        }
    }

    /// The entry `id` on `topic` is to resume from `from` (R26, R32): the server is asked to
    /// replay from there — unless the topic's resubscription after a reconnect just asked the
    /// same or from earlier (this is the entry's resync for it) — and the entry's resync ends once the replay is
    /// done: when the server acknowledges the subscription (a framing that acknowledges: the
    /// server replays first), else at once (a gap still waits for its messages). Closed: the
    /// reconnect resubscribes from the entry's next version and resyncs it.
    async fn resume(&mut self, topic: String, id: u64, from: Option<Version>) {
        if !self.topics.contains_key(&topic) || !self.is_open() {
            return;
        }
        let acknowledges = self.parts.framing.acknowledges_subscriptions();
        // The resubscription after the reconnect asked the server to replay from a version: a
        // replay from there covers a resume from any later one (an entry fed by the driver may
        // have applied part of the replay before its resume comes; what it has is stale).
        let asked = from.is_none()
            || (self.resumed.remove(&topic).flatten())
                .zip(from)
                .is_some_and(|(asked, from)| asked <= from);
        if !asked {
            let frame = Message::text(self.parts.framing.subscribe(&topic, from));
            if let Some((_, socket)) = self.socket.as_mut() {
                // A failed send: the socket reports its end when read.
                let _ = socket.send(frame).await;
            }
            self.acked.remove(&topic);
        }
        if !acknowledges || from.is_none() || self.acked.contains(&topic) {
            self.resumed_by(&topic, &[id]);
        } else {
            self.resume_waits.entry(topic).or_default().push(id);
        }
    }

    /// The replay the entries `ids` on `topic` waited for is done.
    fn resumed_by(&self, topic: &str, ids: &[u64]) {
        let Some(subscribers) = self.topics.get(topic) else {
            return;
        };
        for subscriber in subscribers.iter().filter(|s| ids.contains(&s.id)) {
            subscriber.link.resync_done();
        }
    }

    fn is_open(&self) -> bool {
        matches!(
            self.machine.state(),
            crate::core::ConnState::Open { .. } | crate::core::ConnState::Lingering { .. }
        )
    }

    /// The status a topic attached now would be told (the machine's, as it tells topics).
    fn status_now(&self) -> crate::core::StreamStatus {
        use crate::core::{ConnState, StreamStatus};
        match self.machine.state() {
            ConnState::Open { .. } | ConnState::Lingering { .. } => StreamStatus::Live,
            ConnState::Failed { error } => StreamStatus::Failed {
                error: error.clone(),
            },
            _ => StreamStatus::Connecting,
        }
    }

    /// A frame (or the end) of the socket of `epoch`.
    fn frame(&mut self, epoch: u64, frame: Option<Result<Message, WsProtocolError>>) {
        let now = self.now();
        let text = match frame {
            None => {
                self.socket = None;
                self.machine
                    .closed(now, epoch, "the connection ended".into(), false);
                return;
            }
            Some(Err(error)) => {
                self.socket = None;
                let error = error.to_string();
                let fatal = self.is_fatal(&error);
                self.machine.closed(now, epoch, error, fatal);
                return;
            }
            Some(Ok(Message::Close(frame))) => {
                let code = frame.as_ref().map(|f| u16::from(f.code));
                let reason = frame.map_or_else(
                    || "closed by the server".to_owned(),
                    |f| format!("closed by the server: {} {}", u16::from(f.code), f.reason),
                );
                let fatal = code.is_some_and(|code| self.parts.fatal_codes.contains(&code))
                    || self.is_fatal(&reason);
                self.machine.closed(now, epoch, reason, fatal);
                return;
            }
            Some(Ok(Message::Text(text))) => text.to_string(),
            Some(Ok(Message::Binary(bytes))) => match String::from_utf8(bytes.to_vec()) {
                Ok(text) => text,
                Err(_) => {
                    // Not a frame of the protocol; it still proves the socket alive.
                    self.machine.received(now, epoch);
                    return;
                }
            },
            Some(Ok(_)) => {
                // A ping or a pong: alive.
                self.machine.received(now, epoch);
                return;
            }
        };
        if !self.machine.received(now, epoch) {
            // An earlier socket's frame (R32): dropped.
            return;
        }
        match self.parts.framing.decode(&text) {
            Inbound::Message { topic, message } => self.deliver(&topic, Ok(message)),
            Inbound::Bad {
                topic: Some(topic),
                reason,
            } => self.deliver(&topic, Err(SharedError::Skipped(reason))),
            Inbound::Subscribed { topic } => {
                self.acked.insert(topic.clone());
                if let Some(ids) = self.resume_waits.remove(&topic) {
                    self.resumed_by(&topic, &ids);
                }
                if self.awaiting_ack.remove(&topic)
                    && let Some(subscribers) = self.topics.get(&topic)
                {
                    for subscriber in subscribers {
                        subscriber.link.resync();
                    }
                }
            }
            Inbound::Bad { topic: None, .. } | Inbound::Control => {}
        }
    }

    /// Hand `message` to every entry on `topic`; one that is too far behind overflows (R33); a
    /// fed entry whose attachment ended is detached.
    fn deliver(&mut self, topic: &str, message: Result<F::Message, SharedError>) {
        let Some((last, others)) = self.topics.get_mut(topic).and_then(|s| s.split_last_mut())
        else {
            return;
        };
        let mut ended = Vec::new();
        // Each entry but the last gets a copy; the last, the message itself.
        for subscriber in others {
            if !subscriber.take(message.clone()) {
                ended.push(subscriber.id);
            }
        }
        if !last.take(message) {
            ended.push(last.id);
        }
        for id in ended {
            self.detach(topic, id);
        }
    }

    /// Put `subscriber` on `topic`; the first entry on a topic attaches it to the machine.
    fn attach(&mut self, now: u64, topic: String, subscriber: Subscriber<F::Message>) {
        let status = self.status_now();
        let subscribers = self.topics.entry(topic.clone()).or_default();
        let first = subscribers.is_empty();
        if first {
            // Most topics have one entry: no room is kept for more until they come.
            subscribers.reserve_exact(1);
        }
        subscribers.push(subscriber);
        if first {
            self.machine.attach(now, topic);
        } else if let Some(subscriber) = subscribers.last() {
            // Another entry on a topic already attached: it learns the status now.
            subscriber.link.report(status);
        }
    }

    /// Take the entry `id` off `topic`; the topic is detached from the machine with its last
    /// entry (unsubscribed; the socket closes after its linger when it was the last topic).
    fn detach(&mut self, topic: &str, id: u64) -> Option<Subscriber<F::Message>> {
        let now = self.now();
        self.fed.remove(&id);
        let subscribers = self.topics.get_mut(topic)?;
        let at = subscribers.iter().position(|s| s.id == id)?;
        let subscriber = subscribers.remove(at);
        if subscribers.is_empty() {
            self.topics.remove(topic);
            self.resyncing.remove(topic);
            self.awaiting_ack.remove(topic);
            self.resumed.remove(topic);
            self.acked.remove(topic);
            self.resume_waits.remove(topic);
            self.machine.detach(now, &topic.to_owned());
        }
        Some(subscriber)
    }

    fn attempted(&mut self, epoch: u64, outcome: Result<Socket<C::Stream>, (String, bool)>) {
        self.attempt = None;
        // Acknowledgements of an earlier socket's subscriptions will not come.
        self.awaiting_ack.clear();
        self.resumed.clear();
        self.acked.clear();
        self.resume_waits.clear();
        let now = self.now();
        match outcome {
            Ok(socket) => {
                if self.machine.connected(now, epoch) {
                    self.socket = Some((epoch, socket));
                }
            }
            Err((error, fatal)) => {
                let fatal = fatal || self.is_fatal(&error);
                self.machine.connect_failed(now, epoch, error, fatal);
            }
        }
    }

    fn is_fatal(&self, error: &str) -> bool {
        self.parts.fatal.as_ref().is_some_and(|fatal| fatal(error))
    }

    /// Entries asked to resync that are not resyncing any more: the machine is told.
    fn check_resyncs(&mut self) {
        if self.resyncing.is_empty() {
            return;
        }
        let now = self.now();
        let done: Vec<String> = self
            .resyncing
            .iter()
            .filter(|topic| {
                !self.awaiting_ack.contains(*topic)
                    && self
                        .topics
                        .get(*topic)
                        .is_none_or(|subs| subs.iter().all(|s| !s.link.resyncing()))
            })
            .cloned()
            .collect();
        for topic in done {
            self.resyncing.remove(&topic);
            self.machine.resynced(now, &topic);
        }
    }

    /// Carry out every effect the machine queued.
    async fn carry_out(&mut self) {
        let effects: Vec<ConnEffect<String>> =
            std::iter::from_fn(|| self.machine.poll_effect()).collect();
        for (i, effect) in effects.iter().enumerate() {
            match effect {
                ConnEffect::Connect { epoch } => {
                    self.attempt = Some((*epoch, self.open()));
                }
                ConnEffect::Close { epoch } => {
                    if self.attempt.as_ref().is_some_and(|(e, _)| e == epoch) {
                        self.attempt = None;
                    }
                    if self.socket.as_ref().is_some_and(|(e, _)| e == epoch)
                        && let Some((_, mut socket)) = self.socket.take()
                    {
                        let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.close(None)).await;
                    }
                }
                ConnEffect::Send { epoch, frame } => {
                    let text = match frame {
                        Frame::Subscribe { topic } => {
                            // A topic resubscribed after a reconnect resumes from its entry's
                            // next version, if its endpoint resumes (the core says which).
                            let resyncs = effects[i..].iter().any(
                                |e| matches!(e, ConnEffect::Resync { topic: t } if t == topic),
                            );
                            let from = resyncs
                                .then(|| self.topics.get(topic))
                                .flatten()
                                .and_then(|subs| subs.first())
                                .and_then(|s| s.link.resume_from());
                            self.acked.remove(topic);
                            if from.is_some() {
                                self.resumed.insert(topic.clone(), from);
                            }
                            Some(Message::text(self.parts.framing.subscribe(topic, from)))
                        }
                        Frame::Unsubscribe { topic } => {
                            Some(Message::text(self.parts.framing.unsubscribe(topic)))
                        }
                        Frame::Ping => Some(Message::Ping(Vec::new().into())),
                    };
                    if let (Some(text), Some((e, socket))) = (text, self.socket.as_mut())
                        && e == epoch
                        && socket.send(text).await.is_err()
                    {
                        // The socket failed under the send: it reports its end when read.
                    }
                }
                ConnEffect::Resync { topic } => {
                    if let Some(subscribers) = self.topics.get(topic) {
                        if self.parts.framing.acknowledges_subscriptions() {
                            // After the server's acknowledgement: no message can fall between
                            // the snapshot and the subscription.
                            self.awaiting_ack.insert(topic.clone());
                        } else {
                            for subscriber in subscribers {
                                subscriber.link.resync();
                            }
                        }
                        self.resyncing.insert(topic.clone());
                    }
                }
                ConnEffect::Status { topic, status } => {
                    if let Some(subscribers) = self.topics.get(topic) {
                        for subscriber in subscribers {
                            subscriber.link.report(status.clone());
                        }
                    }
                }
            }
        }
    }

    /// An attempt to open a socket: the auth hook, the transport, the WebSocket handshake.
    fn open(&self) -> Attempt<C::Stream> {
        let target = &self.parts.target;
        let connecting = self
            .parts
            .connector
            .connect(&target.at.host, target.at.port);
        let url = target.url.clone();
        let at = target.at.clone();
        let tls = target.tls.clone();
        let headers = self.parts.headers.clone();
        let auth = self.parts.auth.clone();
        async move {
            let mut headers = headers;
            if let Some(auth) = auth {
                match auth().await {
                    Ok(more) => headers.extend(more),
                    Err(refused) => return Err((format!("auth refused: {refused}"), true)),
                }
            }
            let mut request = url
                .into_client_request()
                .map_err(|e| (e.to_string(), true))?;
            for (name, value) in headers {
                let name = HeaderName::try_from(name.as_str())
                    .map_err(|e| (format!("bad header name {name:?}: {e}"), true))?;
                let value = HeaderValue::try_from(value.as_str())
                    .map_err(|e| (format!("bad header value: {e}"), true))?;
                request.headers_mut().insert(name, value);
            }
            let stream = connecting.await.map_err(|e| (e.to_string(), false))?;
            let not_fatal = |e: WsError| (e.to_string(), false);
            let stream = at.secure(stream, &tls).await.map_err(not_fatal)?;
            let transport = Transport::new(stream, MAX_UNSENT);
            match handshake(request, transport, None).await {
                Ok(socket) => Ok(socket),
                Err(WsError::Connect {
                    failure: ConnectFailure::Status(status),
                    ..
                }) => {
                    let fatal = status == 401 || status == 403;
                    Err((format!("the server answered {status}"), fatal))
                }
                Err(error) => Err(not_fatal(error)),
            }
        }
        .boxed()
    }
}
