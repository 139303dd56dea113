//! End-to-end tests of message streams over real WebSockets (SPEC R21, R22) and of the HTTP
//! query function, against the chat example's server (axum on 127.0.0.1, an ephemeral port).
//!
//! Real sockets, real time: every wait is bounded (`tokio::time::timeout`, a few seconds at
//! most) and fails with what it was waiting for. Each test starts its own server, so the frames
//! one test broadcasts never reach another test's sockets.
//!
//! The client side is the chat example's: the history comes from `GET /messages/{channel}`
//! through [`HttpQuery`], and each entry's lifecycle opens a socket (`ws::connect`, validated
//! like the guide's `isMessage`, filtered to its channel, frames capped at [`MAX_BYTES`]) and
//! attaches it with `try_stream`. The handler hands the socket's counters and the attachment's
//! [`StreamEnd`] to the test through a [`Probe`].
//!
//! Run with the timings printed: `cargo test --test it ws_e2e:: -- --nocapture`.

#[path = "../../examples/chat/server.rs"]
pub(crate) mod server;

use crate::common::waits::{STEP, TestResult, serve_http, within};
use std::fmt::Debug;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use livecache::core::Status;
use livecache::core::{HandlerOutcome, RemoveCause, TraceEvent, TraceKind};
use livecache::core::{StreamEnd, StreamEndReason};
use livecache::http::{HttpError, HttpMeta, HttpQuery};
use livecache::ws::{self, WsCounts, WsStats};
use livecache::{Api, Data, Endpoint, QueryError, Subscription};
use serde::{Deserialize, Serialize};
use server::{Channel, ChatServer, Message, Outgoing};

/// The sockets' frame size limit: larger frames are skipped.
const MAX_BYTES: usize = 256;
/// How long unused entries are kept when a test does not care.
const KEEP_LONG: Duration = Duration::from_secs(60);

// ===== helpers =====

/// Poll `done` every few milliseconds until it holds, failing after `limit`.
async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(limit, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "timed out after {limit:?} waiting for {what}"
    );
}

/// Wait (at most [`STEP`]) until `actual()` equals `expected`, then assert it (so a mismatch
/// prints both).
async fn wait_eq<V: PartialEq + Debug>(what: &str, mut actual: impl FnMut() -> V, expected: V) {
    let _ = tokio::time::timeout(STEP, async {
        while actual() != expected {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(actual(), expected, "{what}");
}

/// Wait for the subscription's data to satisfy `done`; returns that data.
async fn wait_data<T: Data + Debug>(
    what: &str,
    sub: &Subscription<T>,
    mut done: impl FnMut(&T) -> bool,
) -> Arc<T> {
    let mut changes = Box::pin(sub.changes());
    let found = tokio::time::timeout(STEP, async {
        while let Some(state) = changes.next().await {
            if let Some(data) = state.data
                && done(&data)
            {
                return Some(data);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(data)) => data,
        Ok(None) => panic!("{what}: the entry was removed while waiting"),
        Err(_) => panic!(
            "{what}: timed out after {STEP:?}; data now {:?}",
            sub.state().data()
        ),
    }
}

/// Wait for the subscription's status to become `status`.
async fn wait_status<T: Data>(what: &str, sub: &Subscription<T>, status: Status) {
    wait_until(what, STEP, || sub.state().status == status).await;
}

/// The guide's `isMessage`: a user and some text.
fn is_message(message: &Message) -> bool {
    !message.user_name.is_empty() && !message.text.trim().is_empty()
}

fn server_counts(server: &ChatServer) -> [usize; 5] {
    let o = server.observed();
    [
        o.connected.load(Ordering::SeqCst),
        o.open.load(Ordering::SeqCst),
        o.close_frames.load(Ordering::SeqCst),
        o.dropped_without_close.load(Ordering::SeqCst),
        o.pongs.load(Ordering::SeqCst),
    ]
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

// ----- the trace -----

fn lifetime_of(kind: &TraceKind) -> Option<u64> {
    match kind {
        TraceKind::EntryAdded { lifetime, .. }
        | TraceKind::LifecycleStarted { lifetime }
        | TraceKind::DataLoaded { lifetime, .. }
        | TraceKind::EntryRemoved { lifetime, .. }
        | TraceKind::StreamAttached { lifetime, .. }
        | TraceKind::StreamSkipped { lifetime, .. }
        | TraceKind::StreamEnded { lifetime, .. }
        | TraceKind::LifecycleEnded { lifetime, .. } => Some(*lifetime),
        _ => None,
    }
}

/// The events of one lifetime (those that name it).
fn of_lifetime(trace: &[TraceEvent], lifetime: u64) -> Vec<TraceKind> {
    trace
        .iter()
        .filter(|e| lifetime_of(&e.kind) == Some(lifetime))
        .map(|e| e.kind.clone())
        .collect()
}

/// The lifetimes added for `key`, in order.
fn lifetimes_of_key(trace: &[TraceEvent], key: &str) -> Vec<u64> {
    trace
        .iter()
        .filter(|e| e.key == key)
        .filter_map(|e| match e.kind {
            TraceKind::EntryAdded { lifetime, .. } => Some(lifetime),
            _ => None,
        })
        .collect()
}

/// `buffered` of each `stream_attached` of the lifetime.
fn attached(trace: &[TraceEvent], lifetime: u64) -> Vec<usize> {
    of_lifetime(trace, lifetime)
        .into_iter()
        .filter_map(|k| match k {
            TraceKind::StreamAttached { buffered, .. } => Some(buffered),
            _ => None,
        })
        .collect()
}

/// The reasons of each `stream_skipped` of the lifetime, in order.
fn skipped_reasons(trace: &[TraceEvent], lifetime: u64) -> Vec<String> {
    of_lifetime(trace, lifetime)
        .into_iter()
        .filter_map(|k| match k {
            TraceKind::StreamSkipped { reason, .. } => Some(reason),
            _ => None,
        })
        .collect()
}

/// `(reason, applied, skipped)` of each `stream_ended` of the lifetime.
fn stream_ends(trace: &[TraceEvent], lifetime: u64) -> Vec<(String, u64, u64)> {
    of_lifetime(trace, lifetime)
        .into_iter()
        .filter_map(|k| match k {
            TraceKind::StreamEnded {
                reason,
                applied,
                skipped,
                ..
            } => Some((reason, applied, skipped)),
            _ => None,
        })
        .collect()
}

/// How each lifecycle handler of the lifetime ended.
fn outcomes(trace: &[TraceEvent], lifetime: u64) -> Vec<HandlerOutcome> {
    of_lifetime(trace, lifetime)
        .into_iter()
        .filter_map(|k| match k {
            TraceKind::LifecycleEnded { outcome, .. } => Some(outcome),
            _ => None,
        })
        .collect()
}

/// The causes of each `entry_removed` of the lifetime.
fn removals(trace: &[TraceEvent], lifetime: u64) -> Vec<RemoveCause> {
    of_lifetime(trace, lifetime)
        .into_iter()
        .filter_map(|k| match k {
            TraceKind::EntryRemoved { cause, .. } => Some(cause),
            _ => None,
        })
        .collect()
}

/// Lifecycle updates recorded under `key`.
/// The updates of `key` recorded, a batch's `updated { count }` counting for its count (R34).
fn lifecycle_updates(trace: &[TraceEvent], key: &str) -> usize {
    trace
        .iter()
        .filter(|e| e.key == key)
        .map(|e| match e.kind {
            TraceKind::Updated { count, .. } => count as usize,
            _ => 0,
        })
        .sum()
}

// ----- the chat client -----

/// What the lifecycle handlers hand to the test: each socket's counters and each attachment's
/// end, with the channel and lifetime they belong to.
#[derive(Default)]
struct Probe {
    sockets: Mutex<Vec<(Channel, u64, Arc<WsStats>)>>,
    ends: Mutex<Vec<(Channel, u64, StreamEnd)>>,
}

impl Probe {
    /// The counters of the lifetime's socket, once it is connected.
    fn counts(&self, lifetime: u64) -> Option<WsCounts> {
        self.sockets
            .lock()
            .expect("probe lock")
            .iter()
            .find(|(_, l, _)| *l == lifetime)
            .map(|(_, _, stats)| stats.snapshot())
    }

    /// How the lifetime's attachment ended, once it has.
    fn end(&self, lifetime: u64) -> Option<StreamEnd> {
        self.ends
            .lock()
            .expect("probe lock")
            .iter()
            .find(|(_, l, _)| *l == lifetime)
            .map(|(_, _, end)| end.clone())
    }

    fn ends(&self) -> Vec<(Channel, u64, StreamEnd)> {
        self.ends.lock().expect("probe lock").clone()
    }
}

/// A chat server and the example's client on it.
struct Chat {
    server: ChatServer,
    api: Api,
    messages: Endpoint<Channel, Vec<Message>>,
    probe: Arc<Probe>,
}

impl Chat {
    async fn start(keep: Duration) -> Chat {
        let server = within("the server to start", ChatServer::start())
            .await
            .expect("the chat server starts");
        let http = HttpQuery::with_timeout(&server.http_url(), STEP).expect("a base URL");
        let api = Api::builder().keep_unused_data_for(keep).build();
        let probe = Arc::new(Probe::default());
        let url = server.ws_url();
        let handler_probe = Arc::clone(&probe);
        let messages = api
            .query::<Channel, Vec<Message>>("getMessages")
            .query_fn(http.get_json(|c: &Channel| format!("messages/{}", c.as_str())))
            .on_cache_entry_added(move |channel, entry| {
                let url = url.clone();
                let probe = Arc::clone(&handler_probe);
                async move {
                    // As docs/streaming-updates.md writes it: the connection raced against the
                    // entry's removal.
                    let connect = ws::connect::<Message>(url)
                        .validate(is_message)
                        .filter(move |m| m.channel == channel)
                        .max_message_bytes(MAX_BYTES);
                    let Some(socket) = entry.until_removed(connect).await else {
                        return Ok(());
                    };
                    let socket = socket?;
                    let lifetime = entry.lifetime();
                    probe.sockets.lock().expect("probe lock").push((
                        channel,
                        lifetime.0,
                        socket.stats(),
                    ));
                    let end = entry
                        .try_stream(socket, |list, message| list.push(message))
                        .await;
                    probe
                        .ends
                        .lock()
                        .expect("probe lock")
                        .push((channel, lifetime.0, end));
                    Ok(())
                }
            })
            .build()
            .expect("the endpoint");
        Chat {
            server,
            api,
            messages,
            probe,
        }
    }

    fn key(&self, channel: Channel) -> String {
        self.messages
            .key(&channel)
            .expect("a key")
            .as_str()
            .to_owned()
    }

    /// The lifetime `channel`'s entry has now (its last `entry_added`).
    fn lifetime(&self, channel: Channel) -> u64 {
        *lifetimes_of_key(&self.api.trace(), &self.key(channel))
            .last()
            .expect("the entry was added")
    }

    /// Wait until the lifetime's socket is connected; its counters then.
    async fn connected(&self, lifetime: u64) -> WsCounts {
        wait_until("the handler to connect its socket", STEP, || {
            self.probe.counts(lifetime).is_some()
        })
        .await;
        self.probe.counts(lifetime).expect("connected")
    }

    async fn wait_open(&self, open: usize) {
        assert!(
            self.server.wait_open(open, STEP).await,
            "the server should see {open} open sockets; it sees {:?} [connected, open, \
             close frames, dropped, pongs]",
            server_counts(&self.server)
        );
    }

    /// Wait until the lifetime's handler has ended; its attachment's end.
    async fn ended(&self, lifetime: u64) -> StreamEnd {
        wait_until("the lifecycle handler to end", STEP, || {
            !outcomes(&self.api.trace(), lifetime).is_empty()
        })
        .await;
        self.probe.end(lifetime).expect("the attachment ended")
    }
}

// ===== R21 / R22: ordered, exactly once, filtered =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r21_r22_channel_messages_appended_in_order_exactly_once_other_channel_filtered()
-> TestResult {
    let chat = Chat::start(KEEP_LONG).await;
    let redux = chat.messages.subscribe(Channel::Redux)?;
    let general = chat.messages.subscribe(Channel::General)?;
    let redux_history = within("redux history", redux.loaded()).await?;
    let general_history = within("general history", general.loaded()).await?;
    assert_eq!(
        redux_history
            .iter()
            .map(|m| (m.channel, m.text.as_str()))
            .collect::<Vec<_>>(),
        [(Channel::Redux, "Welcome to #redux!")]
    );
    assert_eq!(
        general_history
            .iter()
            .map(|m| (m.channel, m.text.as_str()))
            .collect::<Vec<_>>(),
        [(Channel::General, "Welcome to #general!")]
    );
    chat.wait_open(2).await;
    let (redux_life, general_life) = (
        chat.lifetime(Channel::Redux),
        chat.lifetime(Channel::General),
    );
    chat.connected(redux_life).await;
    chat.connected(general_life).await;

    // Interleaved posts, then a last one per channel: the stream applies in order, so once the
    // last one is in, any duplicate of an earlier one would already be too.
    let s = &chat.server;
    let posted = [
        s.post(Channel::Redux, "dan", "r1"),
        s.post(Channel::General, "lenz", "g1"),
        s.post(Channel::Redux, "mark", "r2"),
        s.post(Channel::General, "phry", "g2"),
        s.post(Channel::Redux, "dan", "r3"),
        s.post(Channel::Redux, "test", "last redux"),
        s.post(Channel::General, "test", "last general"),
    ];
    let expect = |history: &[Message], channel: Channel| -> Vec<Message> {
        history
            .iter()
            .cloned()
            .chain(posted.iter().filter(|m| m.channel == channel).cloned())
            .collect()
    };
    let redux_expected = expect(&redux_history, Channel::Redux);
    let general_expected = expect(&general_history, Channel::General);
    assert_eq!((redux_expected.len(), general_expected.len()), (5, 4));

    let last_redux = redux_expected.last().cloned();
    let redux_data = wait_data("the last redux message", &redux, |d| {
        d.last() == last_redux.as_ref()
    })
    .await;
    let last_general = general_expected.last().cloned();
    let general_data = wait_data("the last general message", &general, |d| {
        d.last() == last_general.as_ref()
    })
    .await;
    assert_eq!(
        *redux_data, redux_expected,
        "redux: history + its messages, in order, once"
    );
    assert_eq!(
        *general_data, general_expected,
        "general: history + its messages, in order, once"
    );

    // The sockets: every frame decoded, the other channel's filtered, nothing skipped.
    let redux_counts = WsCounts {
        messages: 4,
        filtered: 3,
        ..WsCounts::default()
    };
    let general_counts = WsCounts {
        messages: 3,
        filtered: 4,
        ..WsCounts::default()
    };
    wait_eq(
        "redux socket counts",
        || chat.probe.counts(redux_life),
        Some(redux_counts),
    )
    .await;
    wait_eq(
        "general socket counts",
        || chat.probe.counts(general_life),
        Some(general_counts),
    )
    .await;

    // Attached once each. Nothing was posted before the data loaded, but a message posted
    // after it can still be buffered: the attachment may poll the data (not there yet), then
    // the socket (already holding the message). It is then applied right after the data.
    let trace = chat.api.trace();
    assert_eq!(attached(&trace, redux_life).len(), 1, "attached once");
    assert_eq!(attached(&trace, general_life).len(), 1, "attached once");
    assert_eq!(lifecycle_updates(&trace, &chat.key(Channel::Redux)), 4);
    assert_eq!(lifecycle_updates(&trace, &chat.key(Channel::General)), 3);
    assert!(skipped_reasons(&trace, redux_life).is_empty());

    // Removal ends both attachments: the counts confirm each message was applied exactly once.
    chat.api.reset();
    let redux_end = chat.ended(redux_life).await;
    let general_end = chat.ended(general_life).await;
    assert_eq!(
        (redux_end.reason, redux_end.applied, redux_end.skipped),
        (StreamEndReason::EntryRemoved, 4, 0)
    );
    assert_eq!(
        (general_end.reason, general_end.applied, general_end.skipped),
        (StreamEndReason::EntryRemoved, 3, 0)
    );
    chat.wait_open(0).await;
    Ok(())
}

// ===== R21: a message between connecting and the first data is not lost (RTK #3354) =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r21_message_between_socket_open_and_first_data_is_buffered_not_lost() -> TestResult {
    let chat = Chat::start(KEEP_LONG).await;
    // The history as it is before the test posts anything (`loaded()` below may already show
    // the buffered message applied on top of it).
    let get_history = HttpQuery::with_timeout(&chat.server.http_url(), STEP)?
        .get_json::<(), Vec<Message>>(|()| "messages/redux".into());
    let history = within("the history, fetched directly", get_history(())).await?;
    assert_eq!(history.len(), 1, "the seeded welcome message");

    let gate = chat.server.hold_history();
    let redux = chat.messages.subscribe(Channel::Redux)?;
    // The history snapshot is taken (without the message below), the socket is open.
    assert!(
        chat.server.wait_history_held(1, STEP).await,
        "the history request reached the server"
    );
    chat.wait_open(1).await;
    let lifetime = chat.lifetime(Channel::Redux);
    chat.connected(lifetime).await;
    let early = chat
        .server
        .post(Channel::Redux, "dan", "sent before the history arrived");
    // The socket has decoded it (into the attachment's buffer): the entry has no data yet.
    wait_eq(
        "the early message decoded",
        || chat.probe.counts(lifetime).map(|c| c.messages),
        Some(1),
    )
    .await;
    assert!(redux.state().data().is_none(), "no data before the history");
    assert!(attached(&chat.api.trace(), lifetime).is_empty());

    gate.notify_one();
    within("the history", redux.loaded()).await?;
    let last = chat.server.post(Channel::Redux, "test", "after loading");
    let data = wait_data("the message after loading", &redux, |d| {
        d.last() == Some(&last)
    })
    .await;
    let expected: Vec<Message> = history
        .iter()
        .cloned()
        .chain([early.clone(), last.clone()])
        .collect();
    assert_eq!(
        *data, expected,
        "history, the early message once, then the later one"
    );

    let trace = chat.api.trace();
    assert_eq!(
        attached(&trace, lifetime),
        [1],
        "stream_attached with buffered: 1"
    );
    chat.api.reset();
    let end = chat.ended(lifetime).await;
    assert_eq!(
        (end.reason, end.applied, end.skipped),
        (StreamEndReason::EntryRemoved, 2, 0)
    );
    Ok(())
}

// ===== R22: malformed frames are skipped, counted and traced; the stream goes on =====

/// A kind of bad frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bad {
    NotUtf8,
    NotJson,
    Schema,
    Invalid,
    TooLarge,
}

const BAD_KINDS: [Bad; 5] = [
    Bad::NotUtf8,
    Bad::NotJson,
    Bad::Schema,
    Bad::Invalid,
    Bad::TooLarge,
];
/// Frames of each bad kind sent.
const ROUNDS: usize = 3;

/// How a skip reason must read: exactly, or starting with a prefix (serde's message follows).
#[derive(Debug)]
enum Reason {
    Exact(String),
    Prefix(&'static str),
}

impl Reason {
    fn matches(&self, reason: &str) -> bool {
        match self {
            Reason::Exact(text) => reason == text,
            Reason::Prefix(prefix) => reason.starts_with(prefix),
        }
    }
}

fn json(message: &Message) -> String {
    serde_json::to_string(message).expect("a message serialises")
}

/// The `round`-th frame of a bad kind (each round a different variant), and the reason it must
/// be skipped with.
fn bad_frame(kind: Bad, round: usize) -> (Outgoing, Reason) {
    let id = 900 + round as u64;
    let redux = |user: &str, text: &str| Message {
        id,
        channel: Channel::Redux,
        user_name: user.into(),
        text: text.into(),
    };
    match kind {
        Bad::NotUtf8 => (
            Outgoing::Binary(vec![b'"', 0xff, 0xfe, round as u8, b'"']),
            Reason::Exact("frame is not UTF-8".into()),
        ),
        Bad::NotJson => {
            let text = [
                "{\"id\": 99, \"channel\": \"redux\", \"text\": ",
                "<html>not json</html>",
                "not json at all",
            ][round % 3];
            (
                Outgoing::Text(text.into()),
                Reason::Prefix("frame is not JSON: "),
            )
        }
        Bad::Schema => {
            let text = [
                format!(r#"{{"id":{id},"channel":"redux","text":"no userName"}}"#),
                format!(r#"{{"id":{id},"channel":"random","userName":"x","text":"y"}}"#),
                "42".to_string(),
            ][round % 3]
                .clone();
            (
                Outgoing::Text(text),
                Reason::Prefix("frame does not match the message schema: "),
            )
        }
        Bad::Invalid => {
            let message =
                [redux("", "no author"), redux("mark", "   "), redux("", "")][round % 3].clone();
            (
                Outgoing::Text(json(&message)),
                Reason::Exact("message failed validation".into()),
            )
        }
        Bad::TooLarge => {
            // A valid message but for its size: only the limit rejects it.
            let payload = json(&redux("mark", &"x".repeat(MAX_BYTES)));
            let reason = Reason::Exact(format!(
                "frame of {} bytes exceeds the {MAX_BYTES}-byte limit",
                payload.len()
            ));
            let frame = if round == 1 {
                Outgoing::Binary(payload.into_bytes())
            } else {
                Outgoing::Text(payload)
            };
            (frame, reason)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r22_malformed_frames_of_each_kind_skipped_counted_traced_stream_goes_on() -> TestResult {
    let chat = Chat::start(KEEP_LONG).await;
    let redux = chat.messages.subscribe(Channel::Redux)?;
    let history = within("the history", redux.loaded()).await?;
    chat.wait_open(1).await;
    let lifetime = chat.lifetime(Channel::Redux);
    chat.connected(lifetime).await;

    // Each round: every bad kind, each followed by a valid message; a valid binary frame; a
    // message of the other channel.
    let mut expected: Vec<Message> = history.to_vec();
    let mut reasons = Vec::new();
    for round in 0..ROUNDS {
        for kind in BAD_KINDS {
            let (frame, reason) = bad_frame(kind, round);
            chat.server.send(frame);
            reasons.push((kind, reason));
            expected.push(chat.server.post(
                Channel::Redux,
                "dan",
                &format!("valid after {kind:?} #{round}"),
            ));
        }
        let binary = Message {
            id: 10_000 + round as u64,
            channel: Channel::Redux,
            user_name: "bin".into(),
            text: format!("valid binary frame #{round}"),
        };
        chat.server
            .send(Outgoing::Binary(json(&binary).into_bytes()));
        expected.push(binary);
        chat.server.post(Channel::General, "lenz", "not for redux");
    }
    let valid = (expected.len() - history.len()) as u64;

    let last = expected.last().cloned();
    let data = wait_data("the last valid message", &redux, |d| {
        d.last() == last.as_ref()
    })
    .await;
    assert_eq!(*data, expected, "exactly the valid messages, in order");
    let rounds = ROUNDS as u64;
    let counts = WsCounts {
        messages: valid,
        filtered: rounds,
        not_utf8: rounds,
        not_json: rounds,
        schema: rounds,
        invalid: rounds,
        too_large: rounds,
        control: 0,
    };
    wait_eq(
        "the socket's counts",
        || chat.probe.counts(lifetime),
        Some(counts),
    )
    .await;

    // One stream_skipped per bad frame, in the order sent, with its kind's reason.
    let skipped = skipped_reasons(&chat.api.trace(), lifetime);
    assert_eq!(skipped.len(), reasons.len(), "skipped: {skipped:#?}");
    for ((kind, reason), got) in reasons.iter().zip(&skipped) {
        assert!(
            reason.matches(got),
            "{kind:?}: expected {reason:?}, traced {got:?}"
        );
    }

    // The stream goes on.
    let later = chat.server.post(Channel::Redux, "mark", "still streaming");
    let data = wait_data("a later valid message", &redux, |d| {
        d.last() == Some(&later)
    })
    .await;
    expected.push(later);
    assert_eq!(*data, expected);
    assert_eq!(
        chat.probe
            .counts(lifetime)
            .map(|c| (c.messages, c.skipped())),
        Some((valid + 1, 5 * rounds))
    );

    chat.api.reset();
    let end = chat.ended(lifetime).await;
    assert_eq!(
        (end.reason, end.applied, end.skipped),
        (StreamEndReason::EntryRemoved, valid + 1, 5 * rounds)
    );
    assert_eq!(
        stream_ends(&chat.api.trace(), lifetime),
        [("entry removed".to_string(), valid + 1, 5 * rounds)]
    );
    assert_eq!(
        outcomes(&chat.api.trace(), lifetime),
        [HandlerOutcome::Finished]
    );
    Ok(())
}

// ===== R22: pings are answered =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r22_server_ping_answered_with_pong() -> TestResult {
    let chat = Chat::start(KEEP_LONG).await;
    let redux = chat.messages.subscribe(Channel::Redux)?;
    let history = within("the history", redux.loaded()).await?;
    chat.wait_open(1).await;
    let lifetime = chat.lifetime(Channel::Redux);
    chat.connected(lifetime).await;
    let pongs = || chat.server.observed().pongs.load(Ordering::SeqCst);
    assert_eq!(pongs(), 0);
    // One at a time: tungstenite keeps only the latest pong it has not sent yet.
    for n in 1..=2 {
        chat.server.send(Outgoing::Ping);
        wait_eq("the server to receive a pong", pongs, n).await;
    }
    wait_eq(
        "pings counted as control frames",
        || chat.probe.counts(lifetime).map(|c| c.control),
        Some(2),
    )
    .await;
    // Pings are not messages: the entry only gets the message posted after them.
    let after = chat.server.post(Channel::Redux, "dan", "after the pings");
    let data = wait_data("the message after the pings", &redux, |d| {
        d.last() == Some(&after)
    })
    .await;
    let expected: Vec<Message> = history.iter().cloned().chain([after]).collect();
    assert_eq!(*data, expected);
    assert_eq!(
        chat.probe.counts(lifetime),
        Some(WsCounts {
            messages: 1,
            control: 2,
            ..WsCounts::default()
        })
    );
    Ok(())
}

// ===== R21 / R22: removal closes the socket with a close frame =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r22_close_frame_for_every_entry_removed_by_remove_reset_and_expiry() -> TestResult {
    let chat = Chat::start(Duration::from_millis(150)).await;
    let closes = || chat.server.observed().close_frames.load(Ordering::SeqCst);

    // remove
    let sub = chat.messages.subscribe(Channel::Redux)?;
    within("redux history", sub.loaded()).await?;
    chat.wait_open(1).await;
    let removed = chat.lifetime(Channel::Redux);
    assert_eq!(closes(), 0);
    assert!(chat.messages.remove(&Channel::Redux)?);
    chat.wait_open(0).await;
    assert_eq!(closes(), 1, "remove: one close frame");
    drop(sub);

    // reset
    let subs = [
        chat.messages.subscribe(Channel::Redux)?,
        chat.messages.subscribe(Channel::General)?,
    ];
    for sub in &subs {
        within("history", sub.loaded()).await?;
    }
    chat.wait_open(2).await;
    let reset = [
        chat.lifetime(Channel::Redux),
        chat.lifetime(Channel::General),
    ];
    assert_eq!(closes(), 1);
    chat.api.reset();
    chat.wait_open(0).await;
    assert_eq!(closes(), 3, "reset: one close frame per entry");
    drop(subs);

    // expiry after the keep time
    let sub = chat.messages.subscribe(Channel::General)?;
    within("general history", sub.loaded()).await?;
    chat.wait_open(1).await;
    let expired = chat.lifetime(Channel::General);
    assert_eq!(closes(), 3);
    drop(sub);
    chat.wait_open(0).await;
    assert_eq!(closes(), 4, "expiry: one close frame");

    let [connected, open, close_frames, dropped, _] = server_counts(&chat.server);
    assert_eq!((connected, open, close_frames, dropped), (4, 0, 4, 0));

    let cases = [
        (removed, RemoveCause::Removed),
        (reset[0], RemoveCause::Reset),
        (reset[1], RemoveCause::Reset),
        (expired, RemoveCause::Expired),
    ];
    for (lifetime, cause) in cases {
        let end = chat.ended(lifetime).await;
        assert_eq!(
            end.reason,
            StreamEndReason::EntryRemoved,
            "lifetime {lifetime}"
        );
        let trace = chat.api.trace();
        assert_eq!(removals(&trace, lifetime), [cause], "lifetime {lifetime}");
        assert_eq!(
            stream_ends(&trace, lifetime),
            [("entry removed".to_string(), 0, 0)],
            "lifetime {lifetime}"
        );
        assert_eq!(outcomes(&trace, lifetime), [HandlerOutcome::Finished]);
    }
    assert_eq!(chat.probe.ends().len(), 4);
    assert!(chat.api.is_empty());
    assert_eq!(chat.api.in_flight(), (0, 0));
    Ok(())
}

// ===== R21 / R22: the server ends the connection =====

/// Subscribe to #redux, post one message, let the server end the connection with `how`; the
/// attachment's end, and the data and status before and after.
async fn server_ends_connection(how: Outgoing) -> (StreamEnd, String) {
    let chat = Chat::start(KEEP_LONG).await;
    let redux = chat.messages.subscribe(Channel::Redux).expect("subscribed");
    let history = within("the history", redux.loaded()).await.expect("loaded");
    chat.wait_open(1).await;
    let lifetime = chat.lifetime(Channel::Redux);
    chat.connected(lifetime).await;
    let live = chat.server.post(Channel::Redux, "dan", "before the end");
    let before = wait_data("the live message", &redux, |d| d.last() == Some(&live)).await;
    let expected: Vec<Message> = history.iter().cloned().chain([live]).collect();
    assert_eq!(*before, expected);
    let status_before = redux.state().status;
    assert_eq!(status_before, Status::Fulfilled);

    chat.server.send(how);
    let end = chat.ended(lifetime).await;
    chat.wait_open(0).await;

    // The handler ended cleanly; the entry is still there, with its data and status.
    let trace = chat.api.trace();
    assert_eq!(outcomes(&trace, lifetime), [HandlerOutcome::Finished]);
    let ends = stream_ends(&trace, lifetime);
    assert_eq!(ends.len(), 1, "one stream_ended: {ends:?}");
    let (reason, applied, skipped) = ends[0].clone();
    assert_eq!(reason, end.reason.to_string());
    assert_eq!((applied, skipped), (1, 0));
    assert_eq!((end.applied, end.skipped), (1, 0));
    assert!(
        removals(&trace, lifetime).is_empty(),
        "the entry was not removed"
    );
    let state = redux.state();
    assert_eq!(state.status, status_before);
    assert_eq!(state.data(), Some(&expected));
    assert_eq!(chat.api.len(), 1);
    assert_eq!(
        chat.api.in_flight(),
        (0, 1),
        "no request; the lifetime is tracked"
    );
    let [connected, _, close_frames, _, _] = server_counts(&chat.server);
    assert_eq!((connected, close_frames), (1, 0));
    (end, reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r21_server_drops_connection_stream_fails_entry_keeps_data() {
    let (end, reason) = server_ends_connection(Outgoing::Drop).await;
    assert!(
        matches!(&end.reason, StreamEndReason::StreamFailed(e) if e.starts_with("websocket failed: ")),
        "a connection dropped without a close frame fails the stream: {:?}",
        end.reason
    );
    assert!(
        reason.starts_with("stream failed: websocket failed: "),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r22_server_close_frame_ends_stream_entry_keeps_data() {
    let (end, reason) = server_ends_connection(Outgoing::Close).await;
    assert_eq!(
        end.reason,
        StreamEndReason::StreamFailed(
            ws::WsError::Closed {
                code: 1005,
                reason: String::new()
            }
            .to_string()
        )
    );
    assert_eq!(reason, "stream failed: server closed the connection (1005)");
}

// ===== R21: a rejected first fetch; removal before the data =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r21_rejected_first_fetch_leaves_data_loaded_pending_removal_closes_socket() -> TestResult {
    let chat = Chat::start(KEEP_LONG).await;
    chat.server.fail_history(Channel::Redux);
    let redux = chat.messages.subscribe(Channel::Redux)?;
    wait_status(
        "the history request to be rejected",
        &redux,
        Status::Rejected,
    )
    .await;
    let state = redux.state();
    assert!(state.data().is_none());
    let error: QueryError = state.error.clone().expect("a rejected entry has its error");
    assert_eq!(
        error.downcast_ref::<HttpError>(),
        Some(&HttpError::Status {
            status: 503,
            body: "history unavailable".into()
        })
    );

    // The socket is open; a message arrives and waits in the buffer (no data to apply it to).
    chat.wait_open(1).await;
    let lifetime = chat.lifetime(Channel::Redux);
    chat.connected(lifetime).await;
    chat.server
        .post(Channel::Redux, "dan", "buffered, never applied");
    wait_eq(
        "the message decoded",
        || chat.probe.counts(lifetime).map(|c| c.messages),
        Some(1),
    )
    .await;
    let trace = chat.api.trace();
    let kinds = of_lifetime(&trace, lifetime);
    assert!(
        !kinds.iter().any(|k| matches!(
            k,
            TraceKind::DataLoaded { .. } | TraceKind::StreamAttached { .. }
        )),
        "data_loaded pending, no stream_attached: {kinds:#?}"
    );
    assert!(
        outcomes(&trace, lifetime).is_empty(),
        "the handler still waits"
    );
    assert_eq!(redux.state().status, Status::Rejected);
    assert!(redux.state().data().is_none());

    // Removing the entry ends the attachment and closes the socket with a close frame.
    assert!(chat.messages.remove(&Channel::Redux)?);
    chat.wait_open(0).await;
    let [connected, open, close_frames, dropped, _] = server_counts(&chat.server);
    assert_eq!((connected, open, close_frames, dropped), (1, 0, 1, 0));
    let end = chat.ended(lifetime).await;
    assert_eq!(
        (end.reason, end.applied, end.skipped),
        (StreamEndReason::RemovedBeforeLoaded, 0, 0)
    );
    let trace = chat.api.trace();
    assert_eq!(
        stream_ends(&trace, lifetime),
        [("entry removed before its data loaded".to_string(), 0, 0)]
    );
    assert_eq!(outcomes(&trace, lifetime), [HandlerOutcome::Finished]);
    assert!(attached(&trace, lifetime).is_empty());
    assert_eq!(removals(&trace, lifetime), [RemoveCause::Removed]);
    Ok(())
}

// ===== R21 / R22: a thousand entries streaming at once =====

/// A message for one room, or for every room (`room: None`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct RoomMessage {
    room: Option<u32>,
    id: u64,
    text: String,
}

/// Entries streaming at once.
const ROOMS: u32 = 1_000;

/// The process's soft limit of open files, where `/proc` tells it.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line.split_whitespace().nth(3)?;
    if soft == "unlimited" {
        Some(u64::MAX)
    } else {
        soft.parse().ok()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r21_r22_thousand_entries_stream_concurrently_then_all_sockets_close() -> TestResult {
    // A client and a server socket per entry, plus some slack.
    let needed = 2 * u64::from(ROOMS) + 200;
    if let Some(limit) = open_files_limit() {
        assert!(
            limit >= needed,
            "this test needs about {needed} open files; the soft limit is {limit} \
             (raise it with `ulimit -n {needed}`)"
        );
    }
    let started = Instant::now();
    let server = within("the server to start", ChatServer::start()).await?;
    let baseline = alive_tasks();

    let api = Api::builder().build();
    let url = server.ws_url();
    let ended = Arc::new(AtomicUsize::new(0));
    let handler_ended = Arc::clone(&ended);
    let rooms = api
        .query::<u32, Vec<RoomMessage>>("room")
        .query_fn(|room: u32| async move {
            Ok(vec![RoomMessage {
                room: Some(room),
                id: 0,
                text: format!("welcome to room {room}"),
            }])
        })
        .on_cache_entry_added(move |room, entry| {
            let url = url.clone();
            let ended = Arc::clone(&handler_ended);
            async move {
                let socket = ws::connect::<RoomMessage>(url)
                    .filter(move |m| m.room.is_none_or(|r| r == room))
                    .await;
                let end = match socket {
                    Ok(socket) => Ok(entry.try_stream(socket, |list, m| list.push(m)).await),
                    Err(e) => Err(e),
                };
                ended.fetch_add(1, Ordering::SeqCst);
                end?;
                Ok(())
            }
        })
        .build()?;

    let subs = (0..ROOMS)
        .map(|room| rooms.subscribe(room))
        .collect::<Result<Vec<_>, _>>()?;
    for sub in &subs {
        within("every room's data", sub.loaded()).await?;
    }
    assert!(
        server
            .wait_open(ROOMS as usize, Duration::from_secs(15))
            .await,
        "all sockets open; the server sees {:?} [connected, open, close frames, dropped, \
         pongs]; handlers ended early: {}",
        server_counts(&server),
        ended.load(Ordering::SeqCst)
    );
    let connected_in = started.elapsed();

    // Three broadcasts, one message for room 7, one for a room nobody watches.
    let message = |id: u64, room: Option<u32>| RoomMessage {
        room,
        id,
        text: format!("message {id}"),
    };
    let sent = [
        message(1, None),
        message(2, Some(7)),
        message(3, None),
        message(4, Some(ROOMS + 5)),
        message(5, None),
    ];
    for m in &sent {
        server.send(Outgoing::Text(serde_json::to_string(m)?));
    }
    let expected = |room: u32| -> Vec<RoomMessage> {
        let welcome = RoomMessage {
            room: Some(room),
            id: 0,
            text: format!("welcome to room {room}"),
        };
        std::iter::once(welcome)
            .chain(
                sent.iter()
                    .filter(|m| m.room.is_none_or(|r| r == room))
                    .cloned(),
            )
            .collect()
    };
    let complete = || {
        subs.iter()
            .zip(0..)
            .filter(|(sub, room)| sub.state().data() == Some(&expected(*room)))
            .count()
    };
    wait_eq("every room to have its messages", complete, ROOMS as usize).await;
    let delivered_in = started.elapsed();
    let trace = api.trace();
    let attached = trace
        .iter()
        .filter(|e| matches!(e.kind, TraceKind::StreamAttached { .. }))
        .count();
    assert_eq!(attached, ROOMS as usize);

    // Remove every entry: every socket closes with a close frame, nothing is left.
    api.reset();
    assert!(
        server.wait_open(0, Duration::from_secs(10)).await,
        "every socket closed; the server sees {:?}",
        server_counts(&server)
    );
    let [connected, open, close_frames, dropped, _] = server_counts(&server);
    assert_eq!(
        (connected, open, close_frames, dropped),
        (ROOMS as usize, 0, ROOMS as usize, 0),
        "[connected, open, close frames, dropped without close]"
    );
    wait_eq(
        "every handler to end",
        || ended.load(Ordering::SeqCst),
        ROOMS as usize,
    )
    .await;
    assert!(api.is_empty());
    assert_eq!(api.in_flight(), (0, 0));
    let trace = api.trace();
    let removed_ends = trace
        .iter()
        .filter(|e| {
            matches!(&e.kind, TraceKind::StreamEnded { reason, applied, .. }
                if reason == "entry removed" && (*applied == 3 || *applied == 4))
        })
        .count();
    let finished = trace
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                TraceKind::LifecycleEnded {
                    outcome: HandlerOutcome::Finished,
                    ..
                }
            )
        })
        .count();
    assert_eq!((removed_ends, finished), (ROOMS as usize, ROOMS as usize));
    let closed_in = started.elapsed();

    drop(subs);
    drop(rooms);
    drop(api);
    wait_until(
        "the runtime's tasks to come back to the baseline",
        STEP,
        || alive_tasks() == baseline,
    )
    .await;
    assert_eq!(alive_tasks(), baseline);
    println!(
        "ws_e2e: {ROOMS} entries: all loaded and connected in {connected_in:?}, messages \
         delivered at {delivered_in:?}, all closed at {closed_in:?}, tasks back to baseline at \
         {:?}",
        started.elapsed()
    );
    Ok(())
}

// ===== the HTTP query function =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_meta_status_and_headers_reach_data_loaded() -> TestResult {
    let server = within("the server to start", ChatServer::start()).await?;
    let http = HttpQuery::with_timeout(&server.http_url(), STEP)?;
    let api = Api::builder().build();
    let seen: Arc<Mutex<Vec<Option<HttpMeta>>>> = Arc::default();
    let handler_seen = Arc::clone(&seen);
    let messages = api
        .query::<Channel, Vec<Message>>("getMessages")
        .query_fn_with_meta(
            http.get_json_with_meta(|c: &Channel| format!("messages/{}", c.as_str())),
        )
        .on_cache_entry_added(move |_channel, entry| {
            let seen = Arc::clone(&handler_seen);
            async move {
                if let Ok((_entry, first)) = entry.data_loaded().await {
                    let meta = first.meta.as_deref().cloned();
                    seen.lock().expect("seen lock").push(meta);
                }
                Ok(())
            }
        })
        .build()?;
    let sub = messages.subscribe(Channel::General)?;
    let data = within("the history", sub.loaded()).await?;
    assert_eq!(
        data.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
        ["Welcome to #general!"]
    );
    wait_until("the handler to see the meta", STEP, || {
        !seen.lock().expect("seen lock").is_empty()
    })
    .await;
    let seen = seen.lock().expect("seen lock").clone();
    assert_eq!(seen.len(), 1);
    let meta = seen[0].clone().expect("data_loaded has the query's meta");
    assert_eq!(meta.status, 200);
    assert_eq!(meta.header("Content-Type"), Some("application/json"));
    let length: usize = meta
        .header("content-length")
        .and_then(|l| l.parse().ok())
        .expect("a content length");
    assert_eq!(length, serde_json::to_string(&*data)?.len());
    Ok(())
}

/// Wait for the endpoint's entry to be rejected; its error as an [`HttpError`].
async fn rejected_with<T: Data>(sub: &Subscription<T>) -> HttpError {
    wait_status("the request to be rejected", sub, Status::Rejected).await;
    let error = sub.state().error.expect("a rejected entry has its error");
    error
        .downcast_ref::<HttpError>()
        .cloned()
        .unwrap_or_else(|| panic!("not an HttpError: {error:?}"))
}

/// An endpoint whose argument is the path GET from `base` (the api lives as long as it).
fn get_path(base: &str) -> Result<Endpoint<String, Vec<Message>>, livecache::BoxError> {
    let http = HttpQuery::with_timeout(base, STEP)?;
    let api = Api::builder().build();
    Ok(api
        .query::<String, Vec<Message>>("get")
        .query_fn(http.get_json(|path: &String| path.clone()))
        .build()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_body_not_json_is_decode_error() -> TestResult {
    let app = axum::Router::new()
        .route("/plain", axum::routing::get(|| async { "hello, not json" }))
        .route(
            "/object",
            axum::routing::get(|| async { axum::Json(serde_json::json!({ "not": "a list" })) }),
        );
    let (addr, serving) = serve_http(app).await?;
    let get = get_path(&format!("http://{addr}/"))?;
    let plain = get.subscribe("plain".into())?;
    let object = get.subscribe("object".into())?;
    let missing = get.subscribe("missing".into())?;
    let (plain, object, missing) = (
        rejected_with(&plain).await,
        rejected_with(&object).await,
        rejected_with(&missing).await,
    );
    assert!(
        matches!(&plain, HttpError::Decode { cause } if cause.to_string().contains("expected")
            && cause.get().downcast_ref::<serde_json::Error>().is_some()),
        "{plain:?}"
    );
    assert!(matches!(object, HttpError::Decode { .. }), "{object:?}");
    assert!(
        matches!(missing, HttpError::Status { status: 404, .. }),
        "{missing:?}"
    );
    serving.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_path_leaving_the_base_origin_is_url_error() -> TestResult {
    let app = axum::Router::new().route(
        "/api/messages",
        axum::routing::get(|| async { axum::Json(Vec::<Message>::new()) }),
    );
    let (addr, serving) = serve_http(app).await?;
    let get = get_path(&format!("http://{addr}/api/"))?;
    // Another host, a scheme-relative host, another port, another scheme: refused, not sent.
    let port = addr.port().wrapping_add(1).max(1);
    for path in [
        "http://example.invalid/api/messages".to_owned(),
        "//example.invalid/api/messages".to_owned(),
        format!("http://127.0.0.1:{port}/api/messages"),
        format!("https://{addr}/api/messages"),
    ] {
        let sub = get.subscribe(path.clone())?;
        let error = rejected_with(&sub).await;
        assert!(
            matches!(&error, HttpError::Url(e) if e.contains("origin")),
            "{path}: {error:?}"
        );
    }
    // Within the origin, a path resolves like a link, `..` included.
    let sub = get.subscribe("../api/messages".into())?;
    assert_eq!(sub.loaded().await.ok().as_deref(), Some(&Vec::new()));
    serving.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r40_http_unreachable_base_url_is_a_refused_request_error_with_its_cause() -> TestResult {
    // A port that was just free: nothing listens there any more.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    drop(listener);
    let get = get_path(&format!("http://{addr}/"))?;
    let sub = get.subscribe("messages/redux".into())?;
    let error = rejected_with(&sub).await;
    assert_eq!(
        error.kind(),
        livecache::http::HttpErrorKind::Request(livecache::http::RequestFailure::Refused),
        "{error:?}"
    );
    // The cause is kept: the transport's error, below it an I/O error saying refused.
    let source = std::error::Error::source(&error).ok_or("a source")?;
    let refused = std::iter::successors(Some(source), |e| e.source()).any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
    });
    assert!(refused, "{error:?}");
    Ok(())
}

/// Only in a build without the `tls` feature (CI runs it so: `--no-default-features`).
#[test]
#[cfg(not(feature = "tls"))]
fn r40_without_tls_https_is_a_tls_error_that_says_so() {
    let error = livecache::http::HttpQuery::new("https://127.0.0.1/").map(|_| ());
    assert!(
        matches!(&error, Err(e) if e.kind() == livecache::http::HttpErrorKind::Tls
            && e.to_string().contains("`tls` feature")),
        "{error:?}"
    );
}

/// Only in a build without the `tls` feature (CI runs it so: `--no-default-features`).
#[tokio::test]
#[cfg(not(feature = "tls"))]
async fn r40_without_tls_wss_is_a_url_error_that_says_so() {
    let error = livecache::ws::connect::<u64>("wss://127.0.0.1:1/")
        .open()
        .await;
    assert!(
        matches!(&error, Err(livecache::ws::WsError::Connect { failure: livecache::ws::ConnectFailure::Url, cause })
            if cause.to_string().contains("`tls` feature")),
        "{error:?}"
    );
}
