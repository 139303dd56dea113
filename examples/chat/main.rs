//! The streaming-updates guide, end to end, in one process.
//!
//! A chat server (axum, 127.0.0.1, ephemeral port) serves each channel's history over HTTP and
//! broadcasts new messages over a WebSocket. The client `Api` has the guide's `getMessages`
//! endpoint: the history comes from `GET /messages/{channel}`, and the entry's lifecycle opens a
//! WebSocket, keeps the messages of its own channel that pass `is_message`, and appends them to
//! the cached list. Two channels are subscribed; a few messages are posted and appear live in
//! the right entry; a malformed frame is skipped; then the subscriptions are dropped and, after
//! the (short) grace period, each entry is removed and its socket closed with a close frame.
//!
//! Run with `cargo run --example chat`. It exits by itself within seconds.

mod server;

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use livecache::http::HttpQuery;
use livecache::{Api, BoxError, Subscription, ws};
use server::{Channel, ChatServer, Message, Outgoing};

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
    let ws_url = server.ws_url();
    let api = Api::builder().keep_unused_data_for(GRACE).build();
    let get_messages = api
        .query::<Channel, Vec<Message>>("getMessages")
        .query_fn(http.get_json(|channel: &Channel| format!("messages/{}", channel.as_str())))
        .on_cache_entry_added(move |channel, entry| {
            let ws_url = ws_url.clone();
            async move {
                // Open the socket when the entry is created, before its history arrives:
                // messages that come first are buffered, not lost. If the entry is removed
                // while connecting (a server that never answers, say), give up at once.
                let connect = ws::connect::<Message>(ws_url)
                    .validate(is_message)
                    .filter(move |message| message.channel == channel);
                let Some(socket) = entry.until_removed(connect).await else {
                    return Ok(());
                };
                let socket = socket?;
                // Append every message of this channel until the entry is removed; then the
                // socket is dropped and closed with a close frame.
                let end = entry
                    .try_stream(socket, |messages, message| messages.push(message))
                    .await;
                println!("  {} stream ended: {}", label(channel), end.reason);
                Ok(())
            }
        })
        .build()?;

    // ----- two components subscribe -----
    let redux = get_messages.subscribe(Channel::Redux)?;
    let general = get_messages.subscribe(Channel::General)?;
    let printers = [
        printer(Channel::Redux, &redux),
        printer(Channel::General, &general),
    ];
    for sub in [&redux, &general] {
        tokio::time::timeout(STEP, sub.loaded()).await??;
    }
    if !server.wait_open(2, STEP).await {
        return Err("the two sockets did not connect".into());
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
    wait_for_len(&redux, 3).await?;
    wait_for_len(&general, 2).await?;

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

/// Print each channel's messages as they arrive, until its entry is gone.
fn printer(channel: Channel, sub: &Subscription<Vec<Message>>) -> tokio::task::JoinHandle<()> {
    let mut changes = Box::pin(sub.changes());
    tokio::spawn(async move {
        let mut shown = 0;
        while let Some(state) = changes.next().await {
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
