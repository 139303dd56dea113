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

use std::future::Future;
use std::time::Duration;

use livecache::core::{HandlerOutcome, TraceKind};
use livecache::ws::{self, WsError};
use livecache::{Api, BoxError};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

type TestResult = Result<(), BoxError>;

/// The most any single wait may take (on the paused clock).
const STEP: Duration = Duration::from_secs(5);

/// Await `future`, failing (not hanging) after [`STEP`].
async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(STEP, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {STEP:?} waiting for {what}"),
    }
}

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
