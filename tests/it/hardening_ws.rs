//! The WebSocket source against a hostile peer: one regression test per item of the hardening
//! issue, named after it (`hardening_NN_…`).
//!
//! Each test performs the attack against its own loopback server on port 0 — a raw
//! `tokio::net::TcpListener`, with the handshake answered by async-tungstenite's server side
//! where the attack needs an open WebSocket, and then raw frames written on the TCP socket — and
//! asserts the bound or the containment. Everything is bounded in count, and in time by tokio's
//! paused clock (`start_paused`: the runtime jumps to the next timer when it has nothing else to
//! do), so no test depends on the machine's speed.
//!
//! Run them with `cargo test --test it hardening_ws`.

use crate::common::waits::{TestResult, within};
use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use livecache::core::{HandlerOutcome, TraceKind};
use livecache::ws::{self, WsError};
use livecache::{Api, BoxError, StreamError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// What a loopback server saw of one connection.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// The client's whole upgrade request arrived (the server does not answer it).
    Request,
    /// The client closed the connection: a read returned 0 (or failed).
    Closed,
}

/// A server that accepts every connection, reads the WebSocket upgrade request and never
/// answers it. Returns its `ws://` URL and what it sees.
async fn silent_server() -> std::io::Result<(String, mpsc::UnboundedReceiver<Seen>)> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let url = format!("ws://{}/ws", listener.local_addr()?);
    let (seen, events) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(read_until_closed(socket, seen.clone()));
        }
    });
    Ok((url, events))
}

async fn read_until_closed(mut socket: TcpStream, seen: mpsc::UnboundedSender<Seen>) {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = seen.send(Seen::Closed);
                return;
            }
            Ok(n) => {
                let complete = request.windows(4).any(|w| w == b"\r\n\r\n");
                request.extend_from_slice(&buf[..n]);
                if !complete && request.windows(4).any(|w| w == b"\r\n\r\n") {
                    let _ = seen.send(Seen::Request);
                }
            }
        }
    }
}

/// Sends `()` when dropped: put in a handler's future, it tells when the handler has ended
/// (returned, failed, panicked or been dropped).
struct DropSignal(mpsc::UnboundedSender<()>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

/// An endpoint, and the receiver its handlers' [`DropSignal`]s send to.
type GuideEndpoint = (
    livecache::Endpoint<(), Vec<u64>>,
    mpsc::UnboundedReceiver<()>,
);

/// The endpoint of the streaming guide, its handler written as docs/streaming-updates.md shows:
/// `ws::connect(..)` raced against the removal with `until_removed`, then `try_stream`. The
/// connect timeout is an hour, so that only the removal can end the attempt in these tests.
fn guide_endpoint(api: &Api, url: String) -> Result<GuideEndpoint, BoxError> {
    let (ended_tx, ended) = mpsc::unbounded_channel();
    let endpoint = api
        .query::<(), Vec<u64>>("messages")
        .query_fn(|()| async { Ok(Vec::new()) })
        .on_cache_entry_added(move |(), entry| {
            let url = url.clone();
            let signal = DropSignal(ended_tx.clone());
            async move {
                let _signal = signal;
                let connect = ws::connect::<u64>(url).connect_timeout(Duration::from_secs(3600));
                let Some(socket) = entry.until_removed(connect).await else {
                    return Ok(());
                };
                let socket = socket?;
                entry
                    .try_stream(socket, |list, message| list.push(message))
                    .await;
                Ok(())
            }
        })
        .build()?;
    Ok((endpoint, ended))
}

fn lifecycle_outcomes(api: &Api) -> Vec<HandlerOutcome> {
    api.trace()
        .into_iter()
        .filter_map(|e| match e.kind {
            TraceKind::LifecycleEnded { outcome, .. } => Some(outcome),
            _ => None,
        })
        .collect()
}

// ----- raw frames -----

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const PING: u8 = 0x9;

/// An unmasked frame header (a server's): FIN and opcode, then the payload length in its
/// 7-bit, 16-bit or 64-bit form.
fn header(opcode: u8, fin: bool, len: u64) -> Vec<u8> {
    let mut bytes = vec![if fin { 0x80 | opcode } else { opcode }];
    match len {
        0..=125 => bytes.push(len as u8),
        126..=0xffff => {
            bytes.push(126);
            bytes.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            bytes.push(127);
            bytes.extend_from_slice(&len.to_be_bytes());
        }
    }
    bytes
}

/// A whole unmasked frame.
fn frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut bytes = header(opcode, fin, payload.len() as u64);
    bytes.extend_from_slice(payload);
    bytes
}

/// A server that accepts one connection, answers its upgrade (async-tungstenite's server
/// side), then hands the raw TCP socket to `attack`, which writes frames by hand. Returns the
/// server's `ws://` URL.
async fn raw_server<F, Fut>(attack: F) -> std::io::Result<String>
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let url = format!("ws://{}/ws", listener.local_addr()?);
    tokio::spawn(async move {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let Ok(socket) = async_tungstenite::tokio::accept_async(tcp).await else {
            return;
        };
        attack(socket.into_inner().into_inner()).await;
    });
    Ok(url)
}

/// Read until the peer closes (a read returns 0 or fails); how many bytes were read.
async fn drain_until_closed(tcp: &mut TcpStream) -> usize {
    let mut read = 0;
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = tcp.read(&mut buf).await {
        read += n;
    }
    read
}

/// Everything a stream yields up to its end or its first fatal error, as an attachment reads
/// it (each wait bounded).
async fn collect<M>(mut socket: ws::WsStream<M>) -> Vec<Result<M, WsError>>
where
    M: serde::de::DeserializeOwned,
{
    let mut items = Vec::new();
    while let Some(item) = within("the stream's next item", socket.next()).await {
        let fatal = item.as_ref().is_err_and(StreamError::is_fatal);
        items.push(item);
        if fatal {
            break;
        }
    }
    items
}

// ===== 2. a server that never answers the upgrade =====

/// Removing the entry ends a handler stuck connecting to a server that accepted the TCP
/// connection but never answers the upgrade: the handler returns (`lifecycle_ended finished`),
/// and the server sees the socket closed — long before the connect timeout.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn hardening_02_never_answered_upgrade_ends_with_the_entry_removed() -> TestResult {
    let (url, mut server) = silent_server().await?;
    let api = Api::builder().build();
    let (endpoint, mut ended) = guide_endpoint(&api, url)?;
    let sub = endpoint.subscribe(())?;
    within("the data", sub.loaded()).await?;
    assert_eq!(
        within("the upgrade request", server.recv()).await,
        Some(Seen::Request)
    );

    let start = Instant::now();
    assert!(endpoint.remove(&())?, "the entry was there");
    assert_eq!(within("the handler to end", ended.recv()).await, Some(()));
    assert_eq!(
        within("the server to see the socket closed", server.recv()).await,
        Some(Seen::Closed)
    );
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "ended by the removal, not a timeout"
    );
    tokio::task::yield_now().await;
    assert_eq!(lifecycle_outcomes(&api), [HandlerOutcome::Finished]);
    Ok(())
}

/// Dropping the api (its last handle) ends the same stuck handler, and closes its socket.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn hardening_02_never_answered_upgrade_ends_with_the_api_dropped() -> TestResult {
    let (url, mut server) = silent_server().await?;
    let api = Api::builder().build();
    let (endpoint, mut ended) = guide_endpoint(&api, url)?;
    let sub = endpoint.subscribe(())?;
    within("the data", sub.loaded()).await?;
    assert_eq!(
        within("the upgrade request", server.recv()).await,
        Some(Seen::Request)
    );

    let start = Instant::now();
    drop((sub, endpoint, api));
    assert_eq!(within("the handler to end", ended.recv()).await, Some(()));
    assert_eq!(
        within("the server to see the socket closed", server.recv()).await,
        Some(Seen::Closed)
    );
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "ended by the api's drop, not a timeout"
    );
    // Nothing of the api is left running: the handler's task and the api's timer are gone;
    // only the server's accept loop is alive.
    within("the api's tasks to end", async {
        while tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
            > 1
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    Ok(())
}

/// Without the race, `ws::connect` alone gives up after its connect timeout (TCP connection and
/// handshake together) with `WsError::Timeout`, and closes the socket.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn hardening_02_connect_timeout_bounds_a_never_answered_upgrade() -> TestResult {
    let (url, mut server) = silent_server().await?;
    let start = Instant::now();
    let timeout = Duration::from_secs(10);
    let opened = tokio::time::timeout(
        Duration::from_secs(60),
        ws::connect::<u64>(url).connect_timeout(timeout).open(),
    )
    .await?;
    assert_eq!(opened.err(), Some(WsError::Timeout(timeout)));
    assert!(start.elapsed() >= timeout);
    assert_eq!(
        WsError::Timeout(timeout).to_string(),
        "websocket connect timed out after 10s"
    );
    assert_eq!(
        within("the upgrade request", server.recv()).await,
        Some(Seen::Request)
    );
    assert_eq!(
        within("the server to see the socket closed", server.recv()).await,
        Some(Seen::Closed)
    );
    // The default is the documented one.
    assert_eq!(ws::DEFAULT_CONNECT_TIMEOUT, Duration::from_secs(10));
    Ok(())
}

// ===== 4. a server that sends pings and never reads =====

/// A server sends up to 200,000 pings of 125 bytes and never reads: each would queue a
/// 131-byte pong. With a 16 KiB write limit the stream ends with `WsError::Backlog` once the
/// socket takes nothing more and the pongs waiting pass the limit — by at most one pong — and
/// the socket is closed (the server's writes then fail). Before, the pongs piled up without
/// bound and the stream never ended.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn hardening_04_pings_never_read_end_the_stream_at_the_write_limit() -> TestResult {
    const PINGS: usize = 200_000;
    const BATCH: usize = 500;
    const LIMIT: usize = 16 * 1024;
    const PONG: usize = 2 + 4 + 125; // header, mask, payload
    let (sent_tx, sent) = oneshot::channel();
    let url = raw_server(move |mut tcp| async move {
        let batch: Vec<u8> = (0..BATCH)
            .flat_map(|_| frame(PING, true, &[b'p'; 125]))
            .collect();
        let mut pings = 0;
        while pings < PINGS && tcp.write_all(&batch).await.is_ok() {
            pings += BATCH;
        }
        let _ = sent_tx.send(pings);
        // Never read; hold the socket until the test ends.
        std::future::pending::<()>().await;
    })
    .await?;

    let socket = ws::connect::<u64>(url)
        .max_write_buffer_bytes(LIMIT)
        .open()
        .await?;
    assert_eq!(socket.limits().max_write_buffer_bytes, LIMIT);
    let stats = socket.stats();
    let items = collect(socket).await;
    let [Err(WsError::Backlog { unsent, limit })] = items.as_slice() else {
        panic!("expected the stream to end with a backlog, got {items:?}");
    };
    assert_eq!(*limit, LIMIT);
    assert!(
        (LIMIT + 1..=LIMIT + PONG).contains(unsent),
        "{unsent} bytes waiting: over the limit by at most one pong"
    );
    let pings = within("the server to stop sending", sent).await?;
    assert!(
        pings < PINGS,
        "the server's writes failed once the socket closed"
    );
    println!("hardening_04: {pings} pings sent; the stream ended with {unsent} bytes waiting");
    assert!(stats.snapshot().control > 0);
    assert_eq!(
        items[0].as_ref().err().map(ToString::to_string),
        Some(format!(
            "the server is not reading: {unsent} bytes of replies wait to be sent, over the \
             {LIMIT}-byte write limit"
        ))
    );
    Ok(())
}

// ===== 7. max_message_bytes bounds memory =====

/// With a 4,096-byte limit, a frame somewhat over it is still skipped and the stream goes on,
/// but a frame whose header announces 64 MiB is refused from its header: the stream ends with
/// `WsError::Refused` while the server has sent only 64 KiB of it, and the socket is closed.
/// (Before, the hard limit was 64 MiB: the client waited to receive the frame whole.)
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn hardening_07_frame_over_the_hard_limit_refused_before_it_is_received() -> TestResult {
    const LIMIT: usize = 4096;
    const HUGE: u64 = 64 << 20;
    const SENT_OF_HUGE: usize = 64 * 1024;
    let (sent_tx, sent) = oneshot::channel();
    let url = raw_server(move |mut tcp| async move {
        let mut bytes = frame(TEXT, true, b"1");
        bytes.extend(frame(TEXT, true, "x".repeat(5000).as_bytes()));
        bytes.extend(frame(TEXT, true, b"2"));
        bytes.extend(header(BINARY, true, HUGE));
        bytes.extend(vec![b' '; SENT_OF_HUGE]);
        let written = tcp.write_all(&bytes).await.map(|()| bytes.len());
        // Hold the connection, never sending the rest, until the client closes it.
        drain_until_closed(&mut tcp).await;
        let _ = sent_tx.send(written.ok());
    })
    .await?;

    let socket = ws::connect::<u64>(url)
        .max_message_bytes(LIMIT)
        .open()
        .await?;
    let hard = ws::hard_message_limit(LIMIT);
    assert_eq!(hard, 2 * LIMIT + 4096);
    let items = collect(socket).await;
    assert_eq!(
        items,
        [
            Ok(1),
            Err(WsError::TooLarge {
                size: 5000,
                limit: LIMIT
            }),
            Ok(2),
            Err(WsError::Refused {
                size: HUGE as usize,
                limit: hard
            }),
        ]
    );
    let sent = within("the server to see the socket closed", sent).await?;
    let sent = sent.ok_or("the server's writes failed")?;
    assert!(
        (sent as u64) < HUGE / 100,
        "refused after the server sent {sent} bytes of a {HUGE}-byte frame"
    );
    assert_eq!(
        items
            .last()
            .and_then(|i| i.as_ref().err())
            .map(ToString::to_string),
        Some(format!(
            "message of {HUGE} bytes refused before it was received: over the connection's \
             {hard}-byte hard limit"
        ))
    );
    Ok(())
}

// ===== 12. memory per socket =====

/// The read and write buffer sizes set on `Connect` reach the connection's protocol layer (read
/// back from the open connection), and the defaults are the lean ones (docs/performance.md,
/// "Memory per WebSocket": the read buffer is most of a quiet socket's memory).
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn hardening_12_buffer_sizes_reach_the_connection_config() -> TestResult {
    let hold = |mut tcp: TcpStream| async move {
        drain_until_closed(&mut tcp).await;
    };

    let defaults = ws::connect::<u64>("ws://127.0.0.1:9/").limits();
    assert_eq!(
        (defaults.read_buffer_bytes, defaults.write_buffer_bytes),
        (
            ws::DEFAULT_READ_BUFFER_BYTES,
            ws::DEFAULT_WRITE_BUFFER_BYTES
        )
    );
    assert_eq!(
        (defaults.read_buffer_bytes, defaults.write_buffer_bytes),
        (4096, 0)
    );
    let socket = ws::connect::<u64>(raw_server(hold).await?).open().await?;
    assert_eq!(
        socket.limits(),
        defaults,
        "the defaults reach the connection"
    );

    let connect = ws::connect::<u64>(raw_server(hold).await?)
        .read_buffer_bytes(2048)
        .write_buffer_bytes(512)
        .max_message_bytes(1000);
    let planned = connect.limits();
    assert_eq!(
        (
            planned.read_buffer_bytes,
            planned.write_buffer_bytes,
            planned.max_message_bytes,
            planned.hard_message_bytes
        ),
        (2048, 512, 1000, ws::hard_message_limit(1000))
    );
    let socket = connect.open().await?;
    assert_eq!(
        socket.limits(),
        planned,
        "the configured sizes reach the connection"
    );

    // A read buffer too small to hold a frame header is raised to the minimum.
    let tiny = ws::connect::<u64>("ws://127.0.0.1:9/").read_buffer_bytes(0);
    assert_eq!(tiny.limits().read_buffer_bytes, 256);
    Ok(())
}

// ===== 5. a text frame that is not UTF-8 =====

/// Valid, not-UTF-8 text, valid, a fragmented text message whose continuation is not UTF-8,
/// valid: every valid message is yielded, each bad one skipped as `NotUtf8` and counted; the
/// stream goes on to the server's close frame. (Before, tungstenite failed the connection at
/// the first bad text frame.)
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn hardening_05_text_frame_not_utf8_is_skipped_and_the_stream_goes_on() -> TestResult {
    const CONTINUATION: u8 = 0x0;
    const CLOSE: u8 = 0x8;
    let url = raw_server(|mut tcp| async move {
        let mut bytes = frame(TEXT, true, b"1");
        bytes.extend(frame(TEXT, true, &[b'1', 0xff, 0xfe]));
        bytes.extend(frame(TEXT, true, b"2"));
        bytes.extend(frame(TEXT, false, b"3"));
        bytes.extend(frame(CONTINUATION, true, &[0xc3]));
        bytes.extend(frame(TEXT, true, b"4"));
        bytes.extend(frame(CLOSE, true, b"\x03\xe8done"));
        let _ = tcp.write_all(&bytes).await;
        drain_until_closed(&mut tcp).await;
    })
    .await?;

    let socket = ws::connect::<u64>(url).open().await?;
    let stats = socket.stats();
    let items = collect(socket).await;
    assert_eq!(
        items,
        [
            Ok(1),
            Err(WsError::NotUtf8),
            Ok(2),
            Err(WsError::NotUtf8),
            Ok(4),
            Err(WsError::Closed {
                code: 1000,
                reason: "done".into()
            }),
        ]
    );
    let counts = stats.snapshot();
    assert_eq!(
        (counts.messages, counts.not_utf8, counts.skipped()),
        (3, 2, 2)
    );
    Ok(())
}

/// The same through a cache entry, its handler as the streaming guide writes it: both valid
/// messages are applied, the bad frame is skipped and traced, the entry keeps streaming.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn hardening_05_text_frame_not_utf8_skipped_by_the_attachment() -> TestResult {
    let url = raw_server(|mut tcp| async move {
        let mut bytes = frame(TEXT, true, b"1");
        bytes.extend(frame(TEXT, true, &[0xff]));
        bytes.extend(frame(TEXT, true, b"2"));
        let _ = tcp.write_all(&bytes).await;
        drain_until_closed(&mut tcp).await;
    })
    .await?;
    let api = Api::builder().build();
    let (endpoint, _ended) = guide_endpoint(&api, url)?;
    let sub = endpoint.subscribe(())?;
    within("the data", sub.loaded()).await?;
    within("both valid messages", async {
        while sub.state().data() != Some(&vec![1, 2]) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    let trace = api.trace();
    let skipped: Vec<_> = trace
        .iter()
        .filter_map(|e| match &e.kind {
            TraceKind::StreamSkipped { reason, .. } => Some(reason.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(skipped, ["frame is not UTF-8"]);
    assert!(
        !trace
            .iter()
            .any(|e| matches!(e.kind, TraceKind::StreamEnded { .. })),
        "the stream goes on"
    );
    Ok(())
}
