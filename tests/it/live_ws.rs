//! The live rules end to end over real WebSockets, against the chat example's server (axum on
//! 127.0.0.1, an ephemeral port): a versioned endpoint whose history comes with its watermark
//! (`GET /history/{channel}`) and whose socket messages carry their id as their version.
//!
//! Real sockets, real time: every wait is bounded and fails with what it was waiting for. Each
//! test starts its own server.

use std::time::Duration;

use crate::ws_e2e::server::{Channel, ChatServer, History, Message, Outgoing};
use futures::{FutureExt, StreamExt};
use livecache::core::{StreamStatus, TraceKind, Version};
use livecache::http::HttpQuery;
use livecache::{Api, BoxError, Endpoint, Subscription, ws};

use crate::common::waits::STEP;

/// The chat example's versioned `getMessages` endpoint, against `server`.
fn get_messages(api: &Api, server: &ChatServer) -> Endpoint<Channel, Vec<Message>> {
    let http = HttpQuery::with_timeout(&server.http_url(), STEP).expect("a loopback URL");
    let history = http.get_json(|channel: &Channel| format!("history/{}", channel.as_str()));
    let ws_url = server.ws_url();
    api.query::<Channel, Vec<Message>>("getMessages")
        .query_fn_versioned(move |channel| {
            history(channel).map(|read: Result<History, BoxError>| {
                read.map(|h| (h.messages, Version::new(h.watermark)))
            })
        })
        .on_cache_entry_added(move |channel, entry| {
            let url = format!("{ws_url}?channel={}", channel.as_str());
            async move {
                let connect =
                    ws::connect::<Message>(url).filter(move |message| message.channel == channel);
                let Some(socket) = entry.open_source(connect).await else {
                    return Ok(());
                };
                entry
                    .try_stream_versioned(
                        socket?,
                        |message| Version::new(message.id),
                        |messages, message| messages.push(message),
                    )
                    .await;
                Ok(())
            }
        })
        .build()
        .expect("a new endpoint")
}

/// Wait (at most [`STEP`]) until the subscription's state satisfies `done`.
async fn wait_state(
    what: &str,
    sub: &Subscription<Vec<Message>>,
    mut done: impl FnMut(&livecache::QueryState<Vec<Message>>) -> bool,
) {
    if done(&sub.state()) {
        return;
    }
    let mut changes = Box::pin(sub.changes());
    let found = tokio::time::timeout(STEP, async {
        while let Some(state) = changes.next().await {
            if done(&state) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        found.ok(),
        Some(true),
        "waiting for {what}: {:?}",
        sub.state()
    );
}

/// R24, R25 end to end: a message posted while the history is held back reaches the client on
/// its socket and inside the history; it is shown exactly once, the socket's copy dropped as a
/// duplicate (`stream_stale` at its version), and the entry's status goes `connecting`, `live`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r25_a_message_in_both_the_snapshot_and_the_stream_is_shown_once() {
    let server = ChatServer::start().await.expect("a loopback server");
    let gate = server.delay_history();
    let api = Api::builder().build();
    let chat = get_messages(&api, &server);
    let redux = chat.subscribe(Channel::Redux).expect("a key");
    assert!(server.wait_open(1, STEP).await, "the socket connects");
    wait_state("connecting", &redux, |s| {
        s.stream == StreamStatus::Connecting
    })
    .await;
    let both = server.post(Channel::Redux, "ada", "sent while the history loads");
    gate.add_permits(1);
    let version = Version::new(both.id);
    let stale = |api: &Api| {
        api.trace()
            .iter()
            .any(|e| matches!(e.kind, TraceKind::StreamStale { version: v, .. } if v == version))
    };
    let waited = tokio::time::timeout(STEP, async {
        while !stale(&api) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "the socket's copy is dropped as stale: {:?}",
        api.trace()
    );
    let state = redux.state();
    let ids: Vec<u64> = state
        .data()
        .map_or(Vec::new(), |l| l.iter().map(|m| m.id).collect());
    assert_eq!(
        ids.iter().filter(|id| **id == both.id).count(),
        1,
        "{ids:?}"
    );
    assert_eq!(state.watermark, Some(version));
    assert_eq!(state.stream, StreamStatus::Live);
    assert_eq!(state.stale_messages, 1, "the socket's copy is counted");
    // A message after the history: applied once, the watermark follows it.
    let later = server.post(Channel::Redux, "dan", "after");
    wait_state("the later message", &redux, |s| {
        s.watermark == Some(Version::new(later.id))
    })
    .await;
    let ids: Vec<u64> = redux
        .state()
        .data()
        .map_or(Vec::new(), |l| l.iter().map(|m| m.id).collect());
    assert_eq!(ids, [1, both.id, later.id]);
}

/// R28 end to end: the server closing one channel's socket takes that entry's status out of
/// `live` (the other channel's stays `live`); subscribers are woken with the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r28_a_socket_closed_by_the_server_leaves_its_entry_not_live() {
    let server = ChatServer::start().await.expect("a loopback server");
    let api = Api::builder().build();
    let chat = get_messages(&api, &server);
    let redux = chat.subscribe(Channel::Redux).expect("a key");
    let general = chat.subscribe(Channel::General).expect("a key");
    for sub in [&redux, &general] {
        wait_state("live", sub, |s| s.stream == StreamStatus::Live).await;
    }
    server.send(Outgoing::CloseChannel(Channel::Redux));
    wait_state("not live", &redux, |s| {
        !s.stream.is_live() && s.stream != StreamStatus::Idle
    })
    .await;
    assert!(
        matches!(
            redux.state().stream,
            StreamStatus::Ended { .. } | StreamStatus::Failed { .. }
        ),
        "{:?}",
        redux.state().stream
    );
    assert_eq!(general.state().stream, StreamStatus::Live);
}

/// R30 over a real socket: a restart closes the old handler's socket (with a close frame) and
/// the new handler opens its own; the entry stays, goes live again, and a message posted after
/// the restart is shown once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r30_restart_closes_the_old_socket_and_the_new_handler_opens_its_own() {
    use std::sync::atomic::Ordering;
    let server = ChatServer::start().await.expect("a loopback server");
    let api = Api::builder().build();
    let chat = get_messages(&api, &server);
    let redux = chat.subscribe(Channel::Redux).expect("a key");
    wait_state("live", &redux, |s| s.stream == StreamStatus::Live).await;
    assert!(server.wait_open(1, STEP).await, "one socket open");
    let before = redux.state().data().map_or(0, Vec::len);
    let observed = server.observed();
    assert_eq!(observed.connected.load(Ordering::SeqCst), 1);

    assert!(chat.restart(&Channel::Redux).expect("a handler"));
    // The old socket closes with a close frame; the new one connects and goes live.
    let reconnected = async {
        while observed.connected.load(Ordering::SeqCst) < 2
            || observed.close_frames.load(Ordering::SeqCst) < 1
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(STEP, reconnected)
        .await
        .expect("the old socket closed and a new one connected");
    assert!(server.wait_open(1, STEP).await, "one socket open again");
    wait_state("live again", &redux, |s| s.stream == StreamStatus::Live).await;
    assert_eq!(
        redux.state().data().map_or(0, Vec::len),
        before,
        "data kept"
    );

    let posted = server.post(Channel::Redux, "ada", "after the restart");
    wait_state("the new message", &redux, |s| {
        s.data()
            .is_some_and(|d| d.iter().any(|m| m.id == posted.id))
    })
    .await;
    let data = redux.state().data().cloned().unwrap_or_default();
    assert_eq!(data.iter().filter(|m| m.id == posted.id).count(), 1);
    assert_eq!(data.len(), before + 1);
}
