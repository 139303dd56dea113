//! The streaming-updates guide, end to end, in one process, with versioned messages over one
//! shared WebSocket.
//!
//! A chat server (axum, 127.0.0.1, ephemeral port) serves each channel's history over HTTP and
//! its messages over a WebSocket of topics. Message ids are versions: the history comes with
//! its watermark, the id of the newest message posted when it was read. The client `Api` has
//! the guide's `getMessages` endpoint, versioned: the history comes from
//! `GET /history/{channel}`, and the entry's lifecycle takes its channel's topic from one
//! `SharedConnection` (the stream status `connecting`, then `live`), keeps the messages that
//! pass `is_message`, and appends each message it has not seen yet to the cached list.
//!
//! Two channels are subscribed while the server holds their history back; a message posted
//! then reaches the client twice — on the socket before the history, and inside the history —
//! and is shown exactly once (the socket's copy is at the history's watermark: a duplicate,
//! dropped). More messages appear live in the right entry; malformed frames are skipped; the
//! server restarts — both entries read `reconnecting`, then the socket is back, every topic is
//! subscribed again and every entry resyncs, and the message posted while the server was down
//! is shown once; then the subscriptions are dropped and, after the (short) grace period, each
//! entry is removed and the socket closed.
//!
//! Run with `cargo run --example chat`. It exits by itself within seconds.

mod server;

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use livecache::core::{ConnectionConfig, StreamStatus, TraceKind, Version};
use livecache::http::HttpQuery;
use livecache::ws::shared::{JsonFraming, SharedConnection};
use livecache::{Api, BoxError, Subscription};
use server::{Channel, ChatServer, History, Message, Outgoing};

/// How long unused entries are kept (RTK's 60 s, shortened for the example).
const GRACE: Duration = Duration::from_millis(300);
/// The most any step may take before the example gives up.
const STEP: Duration = Duration::from_secs(5);

/// The guide's `isMessage`: a message must have a user and some text.
fn is_message(message: &Message) -> bool {
    !message.user_name.is_empty() && !message.text.trim().is_empty()
}

fn label(channel: Channel) -> String {
    format!("#{}", channel.as_str())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("chat example failed: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), BoxError> {
    let server = ChatServer::start().await?;
    println!("chat server on http://{}", server.addr);

    // ----- the client: RTK's streaming-updates guide in Rust, on one shared socket -----
    let http = HttpQuery::with_timeout(&server.http_url(), STEP)?;
    let history = http.get_json(|channel: &Channel| format!("history/{}", channel.as_str()));
    let connection = SharedConnection::builder(
        server.topics_url(),
        // The server acknowledges subscriptions: after a reconnect, an entry resyncs once its
        // subscription is taken, so no message falls between its snapshot and the socket.
        JsonFraming::<Message>::new()
            .validate(is_message)
            .acknowledged(),
    )
    .config(ConnectionConfig {
        backoff_base_ms: 50,
        backoff_cap_ms: 500,
        heartbeat_ms: Some(1_000),
        idle_timeout_ms: 3_000,
        stable_after_ms: 500,
        linger_ms: 100,
        ..ConnectionConfig::default()
    })
    .spawn()?;
    let api = Api::builder().keep_unused_data_for(GRACE).build();
    let get_messages = api
        .query::<Channel, Vec<Message>>("getMessages")
        // The history with its watermark: messages up to it are in the snapshot.
        .query_fn_versioned(move |channel| {
            history(channel).map(|read: Result<History, BoxError>| {
                read.map(|h| (h.messages, Version::new(h.watermark)))
            })
        })
        .on_cache_entry_added(move |channel, entry| {
            // The entry's channel is a topic of the one shared socket: subscribed when the
            // entry is created, before its history arrives (messages that come first are
            // held, not lost), unsubscribed when it is removed.
            let topic = connection.topic(&entry, channel.as_str());
            async move {
                // Append each message not seen yet (its id above the entry's watermark) until
                // the entry is removed. The connection reports the entry's stream status, and
                // resyncs it after a reconnect.
                let end = entry
                    .try_stream_versioned(
                        topic,
                        |message| Version::new(message.id),
                        |messages, message| messages.push(message),
                    )
                    .await;
                println!("  {} stream ended: {}", label(channel), end.reason);
                Ok(())
            }
        })
        .build()?;

    // ----- two components subscribe; the server holds their history back -----
    let gate = server.delay_history();
    let redux = get_messages.subscribe(Channel::Redux)?;
    let general = get_messages.subscribe(Channel::General)?;
    let printers = [
        printer(Channel::Redux, &redux),
        printer(Channel::General, &general),
    ];
    for channel in [Channel::Redux, Channel::General] {
        if !server.wait_subscribed(channel, 1, STEP).await {
            return Err(format!("{} was not subscribed", label(channel)).into());
        }
    }
    // Posted now, it goes out on the socket at once (held: no history yet) and is in the
    // history the server then sends: the client receives it twice.
    let both = server.post(Channel::Redux, "ada", "sent while the history loads");
    gate.add_permits(2);
    for sub in [&redux, &general] {
        tokio::time::timeout(STEP, sub.loaded()).await??;
    }
    // The socket's copy is at or below the history's watermark: dropped as a duplicate.
    let version = Version::new(both.id);
    let duplicate = |event: &livecache::core::TraceEvent| matches!(event.kind, TraceKind::StreamStale { version: v, .. } if v == version);
    tokio::time::timeout(STEP, async {
        while !api.trace().iter().any(duplicate) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await?;
    let shown = count(&redux, both.id);
    println!(
        "message {} came in the history and on the socket; the socket's copy was a duplicate \
         (stream_stale): shown {shown} time(s)",
        both.id
    );
    if shown != 1 {
        return Err(format!("message {} shown {shown} times, not once", both.id).into());
    }

    // ----- messages arrive live; malformed frames are skipped -----
    server.post(Channel::Redux, "dan", "RTK Query streaming, in Rust!");
    server.post(Channel::General, "lenz", "hi all");
    server.send(Outgoing::Text(
        r#"{"topic":"redux","message":{"id":99,"channel":"redux","text":"no author field"}}"#
            .into(),
    ));
    server.send(Outgoing::Text(
        "{\"id\":100,\"channel\":\"redux\",\"userName\":\"\",\"text\":\"no author\"}".into(),
    ));
    server.post(
        Channel::Redux,
        "mark",
        "no message lost between connect and load",
    );
    wait_for_len(&redux, 4).await?;
    wait_for_len(&general, 2).await?;

    // ----- the server restarts: both entries reconnect on one socket and resync -----
    let mut statuses = redux.changes();
    server.restart(Duration::from_millis(300));
    let missed = server.post(Channel::Redux, "ada", "posted while the server restarts");
    let mut reconnecting = false;
    tokio::time::timeout(STEP, async {
        while let Some(state) = statuses.next().await {
            reconnecting |= matches!(state.stream, StreamStatus::Reconnecting { .. });
            if reconnecting && state.stream.is_live() {
                return;
            }
        }
    })
    .await?;
    wait_for_len(&redux, 5).await?;
    let once = count(&redux, missed.id);
    println!(
        "the server restarted; message {} was posted while it was down and is shown {once} \
         time(s) (the resync brought it); #redux is {}, #general is {}",
        missed.id,
        redux.state().stream,
        general.state().stream
    );
    if !reconnecting || once != 1 {
        return Err("the restart was not survived with every message once".into());
    }

    // ----- the components unmount -----
    drop((redux, general));
    for printer in printers {
        printer.await?;
    }
    println!("subscriptions dropped; entries kept for {GRACE:?}");
    tokio::time::timeout(STEP, async {
        while !api.is_empty() || server.observed().open.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await?;
    let observed = server.observed();
    println!(
        "server saw {} connections, {} close frames, {} dropped without a close frame",
        observed.connected.load(Ordering::SeqCst),
        observed.close_frames.load(Ordering::SeqCst),
        observed.dropped_without_close.load(Ordering::SeqCst),
    );

    println!("\nlifecycle trace:");
    for event in api.trace() {
        println!("  {event}");
    }
    Ok(())
}

/// How many times message `id` is in the subscription's data.
fn count(sub: &Subscription<Vec<Message>>, id: u64) -> usize {
    sub.state()
        .data()
        .map_or(0, |list| list.iter().filter(|m| m.id == id).count())
}

/// Print each channel's messages as they arrive, and its stream status when it changes, until
/// its entry is gone.
fn printer(channel: Channel, sub: &Subscription<Vec<Message>>) -> tokio::task::JoinHandle<()> {
    let mut changes = sub.changes();
    tokio::spawn(async move {
        let mut shown = 0;
        let mut status = StreamStatus::Idle;
        while let Some(state) = changes.next().await {
            if state.stream != status && state.status != livecache::core::Status::Uninitialized {
                status = state.stream.clone();
                println!("{:<9} stream: {status}", label(channel));
            }
            let Some(messages) = state.data() else {
                continue;
            };
            for message in messages.iter().skip(shown) {
                println!(
                    "{:<9} {:>6}: {}",
                    label(channel),
                    message.user_name,
                    message.text
                );
            }
            shown = shown.max(messages.len());
        }
    })
}

async fn wait_for_len(sub: &Subscription<Vec<Message>>, len: usize) -> Result<(), BoxError> {
    let mut changes = sub.changes();
    tokio::time::timeout(STEP, async {
        while let Some(state) = changes.next().await {
            if state.data().map_or(0, Vec::len) >= len {
                return;
            }
        }
    })
    .await?;
    Ok(())
}
