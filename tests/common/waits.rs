//! Waiting in loopback tests: every wait is bounded and fails with what it waited for, and a
//! loopback HTTP server is one call.

use std::future::Future;
use std::time::Duration;

/// The result of a test that may fail with any error.
pub type TestResult = Result<(), livecache::BoxError>;

/// The most any single wait may take.
pub const STEP: Duration = Duration::from_secs(5);

/// Await `future`, failing (not hanging) after [`STEP`].
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(STEP, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {STEP:?} waiting for {what}"),
    }
}

/// Serve `app` on a loopback port chosen by the system; abort the handle to stop.
pub async fn serve_http(
    app: axum::Router,
) -> std::io::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let serving = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, serving))
}
