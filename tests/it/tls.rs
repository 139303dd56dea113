//! R40: `https://` and `wss://` with the default features, and the kinds of a WebSocket's
//! connect failures. The servers are axum on loopback ports behind a TLS front
//! (`common::tls`) whose self-signed certificate only the test's own client configuration
//! trusts: with it the connection works, with the default roots it fails as TLS, not as
//! anything else.

use std::time::Duration;

use axum::extract::ws::{Message as AxumMessage, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::routing::get;
use futures::StreamExt;
use livecache::http::{HttpError, HttpErrorKind, HttpQuery};
use livecache::tls::rustls;
use livecache::ws::{ConnectFailure, WsError};
use livecache::{Api, BoxError};
use serde_json::{Value, json};

use crate::common::tls::TlsFront;
use crate::common::waits::{TestResult, serve_http, within};

/// An app with a JSON document at `/doc`, a WebSocket at `/ws` that sends three numbers and
/// waits, and an upgrade refused with 403 at `/forbidden`.
fn app() -> axum::Router {
    async fn stream(upgrade: WebSocketUpgrade) -> axum::response::Response {
        upgrade.on_upgrade(|mut socket| async move {
            for n in 1..=3u64 {
                if socket
                    .send(AxumMessage::Text(n.to_string().into()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            while let Some(Ok(_)) = socket.recv().await {}
        })
    }
    axum::Router::new()
        .route(
            "/doc",
            get(|| async { axum::Json(json!({"secure": true})) }),
        )
        .route("/ws", get(stream))
        .route("/forbidden", get(|| async { StatusCode::FORBIDDEN }))
}

/// Whether a rustls error is somewhere below `error`: through `source()`, and into the error an
/// `io::Error` wraps (which its `source()` skips).
fn rustls_below(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |e| {
        match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        }
    })
    .any(|e| e.is::<rustls::Error>())
}

#[tokio::test]
async fn r40_https_query_reaches_a_tls_server_and_an_untrusted_certificate_is_a_tls_error()
-> TestResult {
    let (backend, serving) = serve_http(app()).await?;
    let front = TlsFront::start(backend).await;
    let base = format!("https://{}/", front.addr);

    let trusting = HttpQuery::with_tls(&base, front.trusted.clone())?;
    let api = Api::builder().build();
    let doc = api
        .query::<(), Value>("doc")
        .query_fn(trusting.get_json(|(): &()| "doc".to_owned()))
        .build()?;
    let read = within("the https query", doc.subscribe(())?.settled())
        .await
        .map_err(|e| e.to_string())?;
    assert_eq!(*read, json!({"secure": true}));

    // The default roots (Mozilla's) do not include the test's certificate.
    let get = HttpQuery::new(&base)?.get_json::<(), Value>(|(): &()| "doc".to_owned());
    let error: BoxError = match within("the refused https query", get(())).await {
        Ok(value) => panic!("an untrusted certificate was accepted: {value}"),
        Err(error) => error,
    };
    let error = error.downcast::<HttpError>().map_err(|e| e.to_string())?;
    assert_eq!(error.kind(), HttpErrorKind::Tls, "{error}");
    assert!(
        rustls_below(&*error),
        "the rustls error is kept below: {error:?}"
    );
    serving.abort();
    Ok(())
}

#[tokio::test]
async fn r40_wss_stream_through_tls_and_an_untrusted_certificate_is_a_tls_connect_failure()
-> TestResult {
    let (backend, serving) = serve_http(app()).await?;
    let front = TlsFront::start(backend).await;
    let url = format!("wss://{}/ws", front.addr);

    let stream = within(
        "the wss connection",
        livecache::ws::connect::<u64>(&url)
            .tls(front.trusted.clone())
            .open(),
    )
    .await?;
    let got: Vec<Option<u64>> =
        within("three messages", stream.take(3).map(|m| m.ok()).collect()).await;
    let got: Vec<u64> = got.into_iter().flatten().collect();
    assert_eq!(got, [1, 2, 3]);

    let refused = within(
        "the refused wss connection",
        livecache::ws::connect::<u64>(&url).open(),
    )
    .await
    .err();
    match refused {
        Some(WsError::Connect {
            failure: ConnectFailure::Tls,
            cause,
        }) => assert!(
            rustls_below(cause.get()),
            "the rustls error is kept below: {cause:?}"
        ),
        other => panic!("expected a TLS connect failure, got {other:?}"),
    }
    serving.abort();
    Ok(())
}

#[tokio::test]
async fn r40_websocket_connect_failures_have_a_kind_and_keep_their_cause() -> TestResult {
    let (addr, serving) = serve_http(app()).await?;
    let connect = |url: String| async move {
        within(
            &format!("connecting to {url}"),
            livecache::ws::connect::<u64>(url)
                .connect_timeout(Duration::from_secs(5))
                .open(),
        )
        .await
        .err()
        .map(|e| match e {
            WsError::Connect { failure, cause } => (failure, cause),
            other => panic!("expected a connect failure, got {other:?}"),
        })
    };

    // Refused: a port nothing listens on any more.
    let closed = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let closed_addr = closed.local_addr()?;
    drop(closed);
    let (failure, cause) = connect(format!("ws://{closed_addr}/"))
        .await
        .expect("refused");
    assert_eq!(failure, ConnectFailure::Refused);
    let io = cause
        .get()
        .downcast_ref::<std::io::Error>()
        .expect("the I/O error");
    assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);

    // The server answers the upgrade with a status.
    let (failure, _) = connect(format!("ws://{addr}/forbidden"))
        .await
        .expect("403");
    assert_eq!(failure, ConnectFailure::Status(403));

    // Not an HTTP server at all: the handshake fails.
    let garbage = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let garbage_addr = garbage.local_addr()?;
    let talking = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        if let Ok((mut tcp, _)) = garbage.accept().await {
            let _ = tcp.write_all(b"SSH-2.0-OpenSSH\r\n\r\n").await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    });
    let (failure, _) = connect(format!("ws://{garbage_addr}/"))
        .await
        .expect("garbage");
    assert_eq!(failure, ConnectFailure::Handshake);
    talking.abort();

    // Not a WebSocket URL.
    let (failure, _) = connect("http://127.0.0.1:1/".to_owned())
        .await
        .expect("bad URL");
    assert_eq!(failure, ConnectFailure::Url);
    serving.abort();
    Ok(())
}
