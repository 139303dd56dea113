//! The shared connection end to end (R31, R32): the tokio driver over a real loopback socket,
//! against a small topic server speaking the JSON framing (`{"type":"subscribe","topic":T}` in,
//! `{"topic":T,"message":M}` out), with a history per topic for the entries' snapshots. Real
//! time with short settings; every wait is bounded.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{Message as AxumMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::routing::get;
use futures::{SinkExt, StreamExt};
use livecache::core::{ConnectionConfig, Resync, StreamStatus, Version, Versioning};
use livecache::ws::shared::{JsonFraming, SharedConnection};
use livecache::{Api, Endpoint, Subscription};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, broadcast};

use crate::common::waits::{STEP, serve_http, within};
use futures::FutureExt;
use livecache::BoxError;
use livecache::http::HttpQuery;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Msg {
    id: u64,
    text: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct History {
    messages: Vec<Msg>,
    watermark: u64,
}

/// What the server does and saw.
#[derive(Default)]
struct Hub {
    next_id: Mutex<u64>,
    history: Mutex<BTreeMap<String, Vec<Msg>>>,
    /// Every subscribe and unsubscribe frame received, in order.
    frames: Mutex<Vec<String>>,
    connections: AtomicUsize,
    open: AtomicUsize,
    /// Subscriptions that asked to resume from a version.
    resumes: AtomicUsize,
    /// Requests of a topic's history (the entries' snapshots).
    snapshots: AtomicUsize,
    changed: Notify,
}

#[derive(Clone)]
enum Out {
    Publish(String, Msg),
    DropAll,
    /// Every socket is closed with this close code.
    CloseAll(u16),
    /// These messages of a topic, sent back to back (not kept in its history).
    Burst(String, Vec<Msg>),
    /// A frame for a topic whose message does not read (not kept in its history).
    Unreadable(String),
}

#[derive(Clone)]
struct Server {
    hub: Arc<Hub>,
    out: broadcast::Sender<Out>,
    addr: std::net::SocketAddr,
}

impl Server {
    async fn start() -> Server {
        let hub = Arc::new(Hub::default());
        let (out, _) = broadcast::channel(1024);
        let state = (Arc::clone(&hub), out.clone());
        let app = axum::Router::new()
            .route("/ws", get(upgrade))
            .route("/history/{topic}", get(history))
            .with_state(state);
        let (addr, _serving) = serve_http(app).await.expect("a loopback port");
        Server { hub, out, addr }
    }

    fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Post a message to `topic`: into its history, and to the subscribed sockets.
    fn publish(&self, topic: &str, text: &str) -> Msg {
        let msg = {
            let mut next = self.hub.next_id.lock().expect("not poisoned");
            *next += 1;
            Msg {
                id: *next,
                text: text.into(),
            }
        };
        self.hub
            .history
            .lock()
            .expect("not poisoned")
            .entry(topic.into())
            .or_default()
            .push(msg.clone());
        let _ = self.out.send(Out::Publish(topic.into(), msg.clone()));
        msg
    }

    fn frames(&self) -> Vec<String> {
        self.hub.frames.lock().expect("not poisoned").clone()
    }

    /// Wait until the server has read an unsubscription of `topic`.
    async fn wait_unsubscribed(&self, topic: &str) {
        within("the unsubscribe", async {
            while !self
                .frames()
                .iter()
                .any(|f| f.contains("unsubscribe") && f.contains(topic))
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
    }

    /// Wait until the server has taken the subscriptions of `topics` (a message published
    /// before would reach no socket: the snapshot/subscription race of any such protocol).
    async fn wait_subscribed(&self, topics: &[&str]) {
        self.wait_subscribed_times(topics, 1).await;
    }

    /// Wait until each of `topics` was subscribed `times` times (once per socket).
    async fn wait_subscribed_times(&self, topics: &[&str], times: usize) {
        within("the subscriptions", async {
            loop {
                let changed = self.hub.changed.notified();
                let frames = self.frames();
                let subscribed = |t: &&str| {
                    let topic = format!("\"{t}\"");
                    let n = frames
                        .iter()
                        .filter(|f| f.contains("\"subscribe\"") && f.contains(&topic))
                        .count();
                    n >= times
                };
                if topics.iter().all(subscribed) {
                    return;
                }
                changed.await;
            }
        })
        .await;
    }

    async fn wait_open(&self, open: usize) {
        within(&format!("{open} open sockets"), async {
            loop {
                let changed = self.hub.changed.notified();
                if self.hub.open.load(Ordering::SeqCst) == open {
                    return;
                }
                changed.await;
            }
        })
        .await;
    }
}

type HubState = (Arc<Hub>, broadcast::Sender<Out>);

async fn history(
    State((hub, _)): State<HubState>,
    Path(topic): Path<String>,
) -> axum::Json<History> {
    hub.snapshots.fetch_add(1, Ordering::SeqCst);
    let messages = hub
        .history
        .lock()
        .expect("not poisoned")
        .get(&topic)
        .cloned()
        .unwrap_or_default();
    let watermark = *hub.next_id.lock().expect("not poisoned");
    axum::Json(History {
        messages,
        watermark,
    })
}

async fn upgrade(
    ws: WebSocketUpgrade,
    State((hub, out)): State<HubState>,
) -> axum::response::Response {
    ws.on_upgrade(move |socket| serve(socket, hub, out.subscribe()))
}

async fn serve(socket: WebSocket, hub: Arc<Hub>, mut out: broadcast::Receiver<Out>) {
    hub.connections.fetch_add(1, Ordering::SeqCst);
    hub.open.fetch_add(1, Ordering::SeqCst);
    hub.changed.notify_waiters();
    let (mut tx, mut rx) = socket.split();
    let mut topics: BTreeSet<String> = BTreeSet::new();
    loop {
        tokio::select! {
            incoming = rx.next() => match incoming {
                Some(Ok(AxumMessage::Text(text))) => {
                    let frame: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                    let topic = frame["topic"].as_str().unwrap_or_default().to_owned();
                    match frame["type"].as_str() {
                        Some("subscribe") => {
                            topics.insert(topic.clone());
                            // Asked to resume: the topic's history from that version is
                            // replayed, then the subscription acknowledged (R32).
                            if let Some(from) = frame["from"].as_u64() {
                                hub.resumes.fetch_add(1, Ordering::SeqCst);
                                let replay: Vec<Msg> = hub.history.lock().expect("not poisoned")
                                    .get(&topic).into_iter().flatten()
                                    .filter(|m| m.id >= from).cloned().collect();
                                for msg in replay {
                                    let frame = serde_json::json!({ "topic": topic, "message": msg });
                                    if tx.send(AxumMessage::Text(frame.to_string().into())).await.is_err() {
                                        break;
                                    }
                                }
                            }
                            let ack = serde_json::json!({ "type": "subscribed", "topic": topic });
                            if tx.send(AxumMessage::Text(ack.to_string().into())).await.is_err() {
                                break;
                            }
                        }
                        Some("unsubscribe") => { topics.remove(&topic); }
                        _ => {}
                    }
                    hub.frames.lock().expect("not poisoned").push(text.to_string());
                    hub.changed.notify_waiters();
                }
                Some(Ok(AxumMessage::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            command = out.recv() => match command {
                Ok(Out::Publish(topic, msg)) if topics.contains(&topic) => {
                    let frame = serde_json::json!({ "topic": topic, "message": msg }).to_string();
                    if tx.send(AxumMessage::Text(frame.into())).await.is_err() {
                        break;
                    }
                }
                Ok(Out::DropAll) => break,
                Ok(Out::Burst(topic, msgs)) if topics.contains(&topic) => {
                    for msg in msgs {
                        let frame = serde_json::json!({ "topic": topic, "message": msg }).to_string();
                        if tx.feed(AxumMessage::Text(frame.into())).await.is_err() {
                            break;
                        }
                    }
                    if tx.flush().await.is_err() {
                        break;
                    }
                }
                Ok(Out::Unreadable(topic)) if topics.contains(&topic) => {
                    let frame = serde_json::json!({ "topic": topic, "message": "not a message" }).to_string();
                    if tx.send(AxumMessage::Text(frame.into())).await.is_err() {
                        break;
                    }
                }
                Ok(Out::CloseAll(code)) => {
                    let frame = axum::extract::ws::CloseFrame { code, reason: "token revoked".into() };
                    let _ = tx.send(AxumMessage::Close(Some(frame))).await;
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            },
        }
    }
    hub.open.fetch_sub(1, Ordering::SeqCst);
    hub.changed.notify_waiters();
}

/// Short settings, so reconnects take milliseconds.
fn quick() -> ConnectionConfig {
    ConnectionConfig {
        backoff_base_ms: 10,
        backoff_cap_ms: 100,
        max_attempts: None,
        connect_timeout_ms: 2_000,
        heartbeat_ms: Some(200),
        idle_timeout_ms: 1_000,
        stable_after_ms: 300,
        linger_ms: 100,
        seed: 7,
    }
}

/// A versioned endpoint whose snapshot is the server's history of the topic, streaming the
/// topic's messages over `connection`.
fn messages(
    api: &Api,
    server: &Server,
    connection: &SharedConnection<JsonFraming<Msg>>,
    fed: Fed,
) -> Endpoint<String, Vec<Msg>> {
    let http =
        HttpQuery::with_timeout(&format!("http://{}", server.addr), STEP).expect("a loopback URL");
    messages_from(api, &http, connection, Resync::Refetch, fed)
}

/// How an entry gets its topic's messages: a lifecycle handler streams its `Topic`, or the
/// connection's own task feeds it (`SharedConnection::source_versioned`). Every test of the
/// shared connection's behaviour runs both.
#[derive(Clone, Copy, Debug)]
enum Fed {
    ByHandler,
    ByConnection,
}

const BOTH: [Fed; 2] = [Fed::ByHandler, Fed::ByConnection];

/// [`messages`], its snapshots read through `http`, resyncing by `resync`, fed as `fed` says.
fn messages_from(
    api: &Api,
    http: &HttpQuery,
    connection: &SharedConnection<JsonFraming<Msg>>,
    resync: Resync,
    fed: Fed,
) -> Endpoint<String, Vec<Msg>> {
    let history = http.get_json(|topic: &String| format!("history/{topic}"));
    let connection = connection.clone();
    let builder = api
        .query::<String, Vec<Msg>>("messages")
        .keep_unused_data_for(Duration::ZERO)
        .versioning(Versioning {
            resync,
            ..Versioning::default()
        })
        .query_fn_versioned(move |topic| {
            history(topic).map(|read: Result<History, BoxError>| {
                read.map(|h| (h.messages, Version::new(h.watermark)))
            })
        });
    let builder = match fed {
        Fed::ByHandler => builder.on_cache_entry_added(move |topic, entry| {
            let topic = connection.topic(&entry, topic);
            async move {
                entry
                    .try_stream_versioned(topic, |m| Version::new(m.id), |list, m| list.push(m))
                    .await;
                Ok(())
            }
        }),
        Fed::ByConnection => builder.stream_from(
            connection.source_versioned(|topic: &String| topic.clone(), |m| Version::new(m.id)),
            |list, m| list.push(m),
        ),
    };
    builder.build().expect("a new endpoint")
}

async fn wait_state(
    what: &str,
    sub: &Subscription<Vec<Msg>>,
    mut done: impl FnMut(&livecache::QueryState<Vec<Msg>>) -> bool,
) {
    within(what, async {
        let mut changes = Box::pin(sub.changes());
        loop {
            if done(&sub.state()) {
                return;
            }
            if changes.next().await.is_none() {
                panic!("the entry went while waiting for {what}");
            }
        }
    })
    .await;
}

/// Wait until `sub`'s data holds `msg`.
async fn wait_message(what: &str, sub: &Subscription<Vec<Msg>>, msg: &Msg) {
    wait_state(what, sub, |s| s.data().is_some_and(|d| d.contains(msg))).await;
}

/// Wait, on an entry's `changes`, until it has read `Reconnecting` and then `Live` again.
/// Whether it read `Reconnecting` (`false`: the changes ended first).
async fn wait_reconnected(
    changes: &mut (impl futures::Stream<Item = livecache::QueryState<Vec<Msg>>> + Unpin),
) -> bool {
    within("reconnecting, then live again", async {
        let mut reconnecting = false;
        while let Some(state) = changes.next().await {
            reconnecting |= matches!(state.stream, StreamStatus::Reconnecting { .. });
            if reconnecting && state.stream == StreamStatus::Live {
                break;
            }
        }
        reconnecting
    })
    .await
}

fn ids(sub: &Subscription<Vec<Msg>>) -> Vec<u64> {
    sub.state()
        .data()
        .map_or(Vec::new(), |list| list.iter().map(|m| m.id).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r31_entries_share_one_socket_each_gets_its_topic_and_the_last_leaving_closes_it() {
    for fed in BOTH {
        r31_entries_share_one_socket_each_gets_its_topic_and_the_last_leaving_closes_it_fed(fed)
            .await;
    }
}

async fn r31_entries_share_one_socket_each_gets_its_topic_and_the_last_leaving_closes_it_fed(
    fed: Fed,
) {
    let server = Server::start().await;
    let api = Api::builder().build();
    let connection =
        SharedConnection::builder(server.url(), JsonFraming::<Msg>::new().acknowledged())
            .config(quick())
            .spawn()
            .expect("a runtime");
    let endpoint = messages(&api, &server, &connection, fed);
    let redux = endpoint.subscribe("redux".into()).expect("a key");
    let general = endpoint.subscribe("general".into()).expect("a key");
    for sub in [&redux, &general] {
        wait_state("live", sub, |s| s.stream == StreamStatus::Live).await;
    }
    server.wait_open(1).await;
    assert_eq!(
        server.hub.connections.load(Ordering::SeqCst),
        1,
        "one socket for both"
    );
    server.wait_subscribed(&["general", "redux"]).await;
    let a = server.publish("redux", "hello redux");
    let b = server.publish("general", "hello general");
    wait_message("redux's message", &redux, &a).await;
    wait_message("general's message", &general, &b).await;
    assert_eq!(ids(&redux), [a.id], "only its own topic");
    assert_eq!(ids(&general), [b.id]);

    // An entry removed (keep 0): its topic is unsubscribed; the socket stays for the other.
    drop(redux);
    server.wait_unsubscribed("redux").await;
    assert_eq!(server.hub.open.load(Ordering::SeqCst), 1);
    // The last one: the socket closes after its linger.
    drop(general);
    server.wait_open(0).await;
    assert_eq!(
        server.hub.connections.load(Ordering::SeqCst),
        1,
        "never reopened"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r32_a_dropped_socket_is_reconnected_every_entry_resyncs_and_nothing_is_lost_or_doubled() {
    for fed in BOTH {
        r32_a_dropped_socket_is_reconnected_every_entry_resyncs_and_nothing_is_lost_or_doubled_fed(
            fed,
        )
        .await;
    }
}

async fn r32_a_dropped_socket_is_reconnected_every_entry_resyncs_and_nothing_is_lost_or_doubled_fed(
    fed: Fed,
) {
    let server = Server::start().await;
    let api = Api::builder().build();
    let connection =
        SharedConnection::builder(server.url(), JsonFraming::<Msg>::new().acknowledged())
            .config(quick())
            .spawn()
            .expect("a runtime");
    let endpoint = messages(&api, &server, &connection, fed);
    let redux = endpoint.subscribe("redux".into()).expect("a key");
    let general = endpoint.subscribe("general".into()).expect("a key");
    for sub in [&redux, &general] {
        wait_state("live", sub, |s| s.stream == StreamStatus::Live).await;
    }
    server.wait_subscribed(&["general", "redux"]).await;
    let first = server.publish("redux", "before");
    wait_message("the first message", &redux, &first).await;

    // The server drops every socket; messages posted meanwhile reach no socket.
    let mut statuses = Box::pin(redux.changes());
    let _ = server.out.send(Out::DropAll);
    let missed = server.publish("redux", "while down");
    let missed_general = server.publish("general", "while down too");
    let saw_reconnecting = wait_reconnected(&mut statuses).await;
    assert!(saw_reconnecting, "the entry said it was reconnecting");
    // The resync's refetch brought what the socket missed, once.
    wait_message("the missed message", &redux, &missed).await;
    wait_message("general's missed message", &general, &missed_general).await;
    server.wait_subscribed_times(&["general", "redux"], 2).await;
    let after = server.publish("redux", "after");
    wait_message("the message after", &redux, &after).await;
    assert_eq!(
        ids(&redux),
        [first.id, missed.id, after.id],
        "in order, none twice"
    );
    assert!(
        server.hub.connections.load(Ordering::SeqCst) >= 2,
        "it reconnected"
    );
    server.wait_open(1).await;
}

/// R40 with R32: a shared connection to a `wss://` URL, its snapshots from `https://`; a dropped
/// socket is reconnected through TLS, and nothing is lost.
#[cfg(feature = "tls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r40_a_shared_connection_over_wss_streams_and_reconnects_through_tls() {
    let server = Server::start().await;
    let front = crate::common::tls::TlsFront::start(server.addr).await;
    let api = Api::builder().build();
    let url = format!("wss://{}/ws", front.addr);
    let connection = SharedConnection::builder(url, JsonFraming::<Msg>::new().acknowledged())
        .config(quick())
        .tls(front.trusted.clone())
        .spawn()
        .expect("a runtime");
    let https = HttpQuery::with_tls(&format!("https://{}", front.addr), front.trusted.clone())
        .expect("a loopback URL");
    let endpoint = messages_from(
        &api,
        &https,
        &connection,
        Resync::Refetch,
        Fed::ByConnection,
    );
    let redux = endpoint.subscribe("redux".into()).expect("a key");
    wait_state("live", &redux, |s| s.stream == StreamStatus::Live).await;
    server.wait_subscribed(&["redux"]).await;
    let first = server.publish("redux", "over TLS");
    wait_message("the first message", &redux, &first).await;

    let _ = server.out.send(Out::DropAll);
    let missed = server.publish("redux", "while down");
    server.wait_subscribed_times(&["redux"], 2).await;
    wait_message("the missed message", &redux, &missed).await;
    let after = server.publish("redux", "after");
    wait_message("the message after", &redux, &after).await;
    assert_eq!(
        ids(&redux),
        [first.id, missed.id, after.id],
        "in order, none twice"
    );
}

/// R32 with R26: an endpoint that resyncs by resuming. After a dropped socket the topic is
/// resubscribed from the entry's next version, the server replays what the entry missed, and
/// the entry is `Live` again with every message once, in order — and no snapshot is fetched
/// again. With a framing whose server acknowledges subscriptions (the replay comes first) and
/// with one whose server does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r32_a_resuming_entry_is_replayed_what_it_missed_and_fetches_no_snapshot() {
    for (acknowledged, fed) in [true, false].into_iter().flat_map(|a| BOTH.map(|f| (a, f))) {
        let server = Server::start().await;
        let api = Api::builder().build();
        let framing = if acknowledged {
            JsonFraming::<Msg>::new().acknowledged()
        } else {
            JsonFraming::<Msg>::new()
        };
        let connection = SharedConnection::builder(server.url(), framing)
            .config(quick())
            .spawn()
            .expect("a runtime");
        let http = HttpQuery::with_timeout(&format!("http://{}", server.addr), STEP)
            .expect("a loopback URL");
        let endpoint = messages_from(&api, &http, &connection, Resync::Resume, fed);
        let redux = endpoint.subscribe("redux".into()).expect("a key");
        wait_state("live", &redux, |s| s.stream == StreamStatus::Live).await;
        server.wait_subscribed(&["redux"]).await;
        let first = server.publish("redux", "before");
        wait_message("the first message", &redux, &first).await;

        let mut statuses = Box::pin(redux.changes());
        let _ = server.out.send(Out::DropAll);
        let missed = server.publish("redux", "while down");
        let missed_too = server.publish("redux", "while down too");
        let saw_reconnecting = wait_reconnected(&mut statuses).await;
        assert!(saw_reconnecting, "the entry said it was reconnecting");
        wait_message("the missed messages", &redux, &missed_too).await;
        let after = server.publish("redux", "after");
        wait_message("the message after", &redux, &after).await;
        assert_eq!(
            ids(&redux),
            [first.id, missed.id, missed_too.id, after.id],
            "in order, none twice (acknowledged: {acknowledged}, {fed:?})"
        );
        assert_eq!(
            redux.state().stream,
            StreamStatus::Live,
            "acknowledged: {acknowledged}, {fed:?}"
        );
        assert_eq!(
            server.hub.snapshots.load(Ordering::SeqCst),
            1,
            "resumed, not refetched (acknowledged: {acknowledged}, {fed:?})"
        );
        // One subscription from a version, the reconnect's: the entry's resume after it is
        // answered by that replay, even when part of it was applied before the resume came.
        assert_eq!(
            server.hub.resumes.load(Ordering::SeqCst),
            1,
            "one replay asked (acknowledged: {acknowledged}, {fed:?})"
        );
    }
}

/// R32: a close code the user marks fatal ends the connection for good — every entry `Failed`
/// with the code and reason, nothing reconnects — where any other close is retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r32_a_close_code_marked_fatal_fails_every_entry_and_is_not_retried() {
    for fed in BOTH {
        r32_a_close_code_marked_fatal_fails_every_entry_and_is_not_retried_fed(fed).await;
    }
}

async fn r32_a_close_code_marked_fatal_fails_every_entry_and_is_not_retried_fed(fed: Fed) {
    let server = Server::start().await;
    let api = Api::builder().build();
    let connection =
        SharedConnection::builder(server.url(), JsonFraming::<Msg>::new().acknowledged())
            .config(quick())
            .fatal_close_codes([4001])
            .spawn()
            .expect("a runtime");
    let endpoint = messages(&api, &server, &connection, fed);
    let redux = endpoint.subscribe("redux".into()).expect("a key");
    wait_state("live", &redux, |s| s.stream == StreamStatus::Live).await;
    server.wait_subscribed(&["redux"]).await;

    // Another close code is retried.
    let _ = server.out.send(Out::CloseAll(4000));
    server.wait_subscribed_times(&["redux"], 2).await;
    wait_state("live again", &redux, |s| s.stream == StreamStatus::Live).await;
    assert_eq!(server.hub.connections.load(Ordering::SeqCst), 2);

    let _ = server.out.send(Out::CloseAll(4001));
    wait_state(
        "failed",
        &redux,
        |s| matches!(&s.stream, StreamStatus::Failed { error } if error.contains("4001")),
    )
    .await;
    // Well past every backoff bound of `quick()`: no attempt was made.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        server.hub.connections.load(Ordering::SeqCst),
        2,
        "not reconnected"
    );
    assert!(matches!(redux.state().stream, StreamStatus::Failed { .. }));
}

/// R33 with R31: a burst on an unversioned topic, bigger than its queue, on a single-threaded
/// runtime. The connection hands frames on a few at a time and lets the entry run between, so a
/// flood that the entry keeps up with is not an overflow: every message arrives, in order, and
/// the entry stays `Live`.
#[tokio::test]
async fn r33_a_burst_larger_than_the_queue_reaches_an_entry_that_keeps_up() {
    const BURST: u64 = 3_000;
    let server = Server::start().await;
    let api = Api::builder().build();
    let connection = SharedConnection::builder(server.url(), JsonFraming::<Msg>::new())
        .config(quick())
        .inbound_capacity(256)
        .spawn()
        .expect("a runtime");
    let plain = api
        .query::<String, Vec<Msg>>("plain")
        .query_fn(|_topic: String| async { Ok(Vec::new()) })
        .on_cache_entry_added(move |topic, entry| {
            let topic = connection.topic(&entry, topic);
            async move {
                entry.try_stream(topic, |list, m| list.push(m)).await;
                Ok(())
            }
        })
        .build()
        .expect("a new endpoint");
    let flood = plain.subscribe("flood".into()).expect("a key");
    wait_state("live", &flood, |s| s.stream == StreamStatus::Live).await;
    server.wait_subscribed(&["flood"]).await;
    let burst: Vec<Msg> = (1..=BURST)
        .map(|id| Msg {
            id,
            text: String::new(),
        })
        .collect();
    let _ = server.out.send(Out::Burst("flood".into(), burst));
    wait_state("the whole burst", &flood, |s| {
        s.data().is_some_and(|d| d.len() as u64 == BURST) || s.stream != StreamStatus::Live
    })
    .await;
    assert_eq!(flood.state().stream, StreamStatus::Live, "not an overflow");
    assert_eq!(ids(&flood), (1..=BURST).collect::<Vec<_>>());
}

/// R31 with R21, R30, R33: an unversioned endpoint fed by the connection's task
/// (`SharedConnection::source`, no handler). Messages that arrive before the entry's first data
/// are held and applied right after it, in order; a frame that does not read is skipped and
/// counted, the data untouched; a burst larger than a handler's queue reaches the entry whole
/// (nothing waits in a queue); a restart attaches the entry again (the old attachment ends
/// `handler restarted`) and messages keep coming, each once; removal unsubscribes the topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r31_an_entry_fed_by_the_connection_holds_skips_takes_bursts_and_is_attached_again_after_a_restart()
 {
    const BURST: u64 = 3_000;
    let server = Server::start().await;
    let api = Api::builder().build();
    let connection =
        SharedConnection::builder(server.url(), JsonFraming::<Msg>::new().acknowledged())
            .config(quick())
            .inbound_capacity(64)
            .spawn()
            .expect("a runtime");
    // The first request waits until the test lets it answer.
    let release = Arc::new(Notify::new());
    let gate = Arc::clone(&release);
    let first = Msg {
        id: 0,
        text: "snapshot".into(),
    };
    let snapshot = first.clone();
    let plain = api
        .query::<String, Vec<Msg>>("plain")
        .keep_unused_data_for(Duration::ZERO)
        .query_fn(move |_topic: String| {
            let (gate, snapshot) = (Arc::clone(&gate), snapshot.clone());
            async move {
                gate.notified().await;
                Ok(vec![snapshot])
            }
        })
        .stream_from(
            connection.source(|topic: &String| topic.clone()),
            |list, m| list.push(m),
        )
        .build()
        .expect("a new endpoint");
    let sub = plain.subscribe("plain".into()).expect("a key");
    server.wait_subscribed(&["plain"]).await;
    let early = [
        server.publish("plain", "early 1"),
        server.publish("plain", "early 2"),
    ];
    // Let them reach the client (loopback: well within this), held until the data.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        sub.state().data().is_none(),
        "nothing applied before the data"
    );
    release.notify_one();
    wait_message("the held messages", &sub, &early[1]).await;
    assert_eq!(
        ids(&sub),
        [first.id, early[0].id, early[1].id],
        "held, then in order"
    );

    // A frame that does not read: skipped and counted; the stream goes on.
    let _ = server.out.send(Out::Unreadable("plain".into()));
    let after_bad = server.publish("plain", "after the bad frame");
    wait_message("the message after the bad frame", &sub, &after_bad).await;
    let skipped = api
        .trace()
        .iter()
        .filter(|e| matches!(e.kind, livecache::core::TraceKind::StreamSkipped { .. }))
        .count();
    assert_eq!(skipped, 1, "the bad frame is counted");

    // A burst far larger than a handler's queue (64): nothing waits in a queue, nothing lost.
    let burst: Vec<Msg> = (1_000..1_000 + BURST)
        .map(|id| Msg {
            id,
            text: String::new(),
        })
        .collect();
    let last = burst.last().cloned().expect("a burst");
    let _ = server.out.send(Out::Burst("plain".into(), burst));
    wait_message("the whole burst", &sub, &last).await;
    assert_eq!(sub.state().data().map(Vec::len), Some(4 + BURST as usize));
    assert_eq!(sub.state().stream, StreamStatus::Live, "not an overflow");

    // A restart: the old attachment ends, a new one takes the topic; no message twice.
    assert!(
        plain.restart(&"plain".into()).expect("the owner"),
        "restarted"
    );
    let restarted = within("the old attachment's end", async {
        loop {
            let ended = api.trace().into_iter().any(|e| {
                matches!(&e.kind, livecache::core::TraceKind::StreamEnded { reason, .. } if reason == "handler restarted")
            });
            if ended {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(restarted);
    let after_restart = server.publish("plain", "after the restart");
    wait_message("the message after the restart", &sub, &after_restart).await;
    let data = sub.state().data().cloned().unwrap_or_default();
    assert_eq!(
        data.iter().filter(|m| m.id == after_restart.id).count(),
        1,
        "once"
    );
    assert_eq!(data.len(), 5 + BURST as usize);

    // Removal (keep 0): the topic is unsubscribed and the socket closes after its linger.
    drop(sub);
    server.wait_unsubscribed("plain").await;
    server.wait_open(0).await;
}

/// R31 with R16, R28: user code a fed endpoint gives the connection — the topic of an argument,
/// the version of a message — runs in the connection's task; a panic there fails that entry's
/// stream, loudly, and nothing else: the connection goes on feeding every other entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r31_a_panic_in_a_fed_endpoints_code_fails_only_its_entry() {
    let server = Server::start().await;
    let api = Api::builder().build();
    let connection =
        SharedConnection::builder(server.url(), JsonFraming::<Msg>::new().acknowledged())
            .config(quick())
            .spawn()
            .expect("a runtime");
    let topics = api
        .query::<String, Vec<Msg>>("topics")
        .query_fn_versioned(|_topic: String| async { Ok((Vec::new(), Version::new(0))) })
        .stream_from(
            connection.source_versioned(
                |topic: &String| {
                    assert_ne!(topic, "unnamed", "no topic for this one");
                    topic.clone()
                },
                |m: &Msg| {
                    assert_ne!(m.text, "boom", "no version for this one");
                    Version::new(m.id)
                },
            ),
            |list, m| list.push(m),
        )
        .build()
        .expect("a new endpoint");
    let fine = topics.subscribe("fine".into()).expect("a key");
    let doomed = topics.subscribe("doomed".into()).expect("a key");
    let unnamed = topics.subscribe("unnamed".into()).expect("a key");
    wait_state("the unnamed entry failed", &unnamed, |s| {
        matches!(&s.stream, StreamStatus::Failed { error } if error.contains("topic function panicked"))
    })
    .await;
    for sub in [&fine, &doomed] {
        wait_state("live", sub, |s| s.stream == StreamStatus::Live).await;
    }
    server.wait_subscribed(&["doomed", "fine"]).await;
    let _ = server.publish("doomed", "boom");
    wait_state("the doomed entry failed", &doomed, |s| {
        matches!(&s.stream, StreamStatus::Failed { error } if error.contains("version function panicked"))
    })
    .await;
    let after = server.publish("fine", "still here");
    wait_message("the other entry's message", &fine, &after).await;
    assert_eq!(fine.state().stream, StreamStatus::Live);
}
