//! The streaming-updates guide, end to end, in one process, with versioned messages.
//!
//! A chat server (axum, 127.0.0.1, ephemeral port) serves each channel's history over HTTP and
//! broadcasts new messages over a WebSocket. Message ids are versions: the history comes with
//! its watermark, the id of the newest message posted when it was read. The client `Api` has
//! the guide's `getMessages` endpoint, versioned: the history comes from
//! `GET /history/{channel}`, and the entry's lifecycle opens a WebSocket (its stream status
//! `connecting`, then `live`), keeps the messages of its own channel that pass `is_message`, and
//! appends each message it has not seen yet to the cached list.
//!
//! Two channels are subscribed while the server holds their history back; a message posted
//! then reaches the client twice — on the socket before the history, and inside the history —
//! and is shown exactly once (the socket's copy is at the history's watermark: a duplicate,
//! dropped). More messages appear live in the right entry; a malformed frame is skipped; the
//! server closes #redux's socket and that entry's status leaves `live`; then the subscriptions
//! are dropped and, after the (short) grace period, each entry is removed and its socket closed.
//!
//! Run with `cargo run --example chat`. It exits by itself within seconds.

mod server;

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use livecache::core::{StreamStatus, TraceKind, Version};
use livecache::http::HttpQuery;
use livecache::{Api, BoxError, Subscription, ws};
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

    // ----- the client: RTK's streaming-updates guide in Rust -----
    let http = HttpQuery::with_timeout(&server.http_url(), STEP)?;
    let history = http.get_json(|channel: &Channel| format!("history/{}", channel.as_str()));
    let ws_url = server.ws_url();
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
            let url = format!("{ws_url}?channel={}", channel.as_str());
            async move {
                // Open the socket when the entry is created, before its history arrives:
                // messages that come first are held, not lost. The entry's stream status is
                // `connecting` meanwhile (`failed` if it cannot connect); if the entry is
                // removed while connecting, give up at once.
                let connect = ws::connect::<Message>(url)
                    .validate(is_message)
                    .filter(move |message| message.channel == channel);
                let Some(socket) = entry.open_source(connect).await else {
                    return Ok(());
                };
                let socket = socket?;
                // Append each message of this channel not seen yet (its id above the
                // entry's watermark) until the entry is removed; then the socket is dropped
                // and closed with a close frame.
                let end = entry
                    .try_stream_versioned(
                        socket,
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
    if !server.wait_open(2, STEP).await {
        return Err("the two sockets did not connect".into());
    }
    // Posted now, it goes out on the sockets at once (held: no history yet) and is in the
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
    let shown = redux
        .state()
        .data()
        .map_or(0, |list| list.iter().filter(|m| m.id == both.id).count());
    println!(
        "message {} came in the history and on the socket; the socket's copy was a duplicate \
         (stream_stale): shown {shown} time(s)",
        both.id
    );
    if shown != 1 {
        return Err(format!("message {} shown {shown} times, not once", both.id).into());
    }

    // ----- messages arrive live; a malformed frame is skipped -----
    server.post(Channel::Redux, "dan", "RTK Query streaming, in Rust!");
    server.post(Channel::General, "lenz", "hi all");
    server.send(Outgoing::Text(
        "{\"id\": 99, \"channel\": \"redux\", \"text\": ".into(),
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

    // ----- the server closes #redux's socket: its entry says so -----
    server.send(Outgoing::CloseChannel(Channel::Redux));
    let mut changes = Box::pin(redux.changes());
    tokio::time::timeout(STEP, async {
        while let Some(state) = changes.next().await {
            if !state.stream.is_live() {
                return;
            }
        }
    })
    .await?;
    println!(
        "#redux is {}; #general is {}",
        redux.state().stream,
        general.state().stream
    );

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

/// Print each channel's messages as they arrive, and its stream status when it changes, until
/// its entry is gone.
fn printer(channel: Channel, sub: &Subscription<Vec<Message>>) -> tokio::task::JoinHandle<()> {
    let mut changes = Box::pin(sub.changes());
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
    let mut changes = Box::pin(sub.changes());
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
