//! R35, settling: `Subscription::settled()` gives the entry's first settled result — its data or
//! the error of the request that failed — so a failing query never leaves a caller waiting.

use std::time::Duration;

use livecache::http::HttpQuery;
use livecache::{Api, BoxError, NotSettled};
use serde_json::Value;

fn failing_or(value: u32) -> impl Fn(u32) -> futures::future::Ready<Result<u32, BoxError>> {
    move |n: u32| {
        futures::future::ready(if n == 0 {
            Err("500 Internal Server Error".into())
        } else {
            Ok(value * n)
        })
    }
}

#[tokio::test(start_paused = true)]
async fn r35_a_failing_query_settles_as_its_error_within_the_same_tick() -> Result<(), BoxError> {
    let api = Api::builder().build();
    let prices = api
        .query::<u32, u32>("price")
        .query_fn(failing_or(7))
        .build()?;
    let sub = prices.subscribe(0)?;
    let before = tokio::time::Instant::now();
    let settled = tokio::time::timeout(Duration::from_secs(60), sub.settled())
        .await
        .map_err(|_| "settled() did not settle")?;
    assert_eq!(tokio::time::Instant::now(), before, "no time passed");
    assert!(
        matches!(&settled, Err(NotSettled::Rejected(e)) if e.to_string() == "500 Internal Server Error"),
        "{settled:?}"
    );
    // `loaded()` by contrast keeps waiting for data that a later request may bring.
    let waited = tokio::time::timeout(Duration::from_secs(3600), sub.loaded()).await;
    assert!(waited.is_err(), "loaded() does not settle on an error");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn r35_data_settles_as_the_data_and_a_refetch_is_waited_for() -> Result<(), BoxError> {
    let api = Api::builder().build();
    let prices = api
        .query::<u32, u32>("price")
        .query_fn(failing_or(7))
        .build()?;
    let sub = prices.subscribe(3)?;
    assert_eq!(*sub.settled().await.map_err(|e| e.to_string())?, 21);
    // Settled and idle: at once.
    assert_eq!(*sub.settled().await.map_err(|e| e.to_string())?, 21);
    // A refetch in flight is waited for.
    sub.refetch()?;
    assert!(sub.state().is_fetching);
    assert_eq!(*sub.settled().await.map_err(|e| e.to_string())?, 21);
    assert!(!sub.state().is_fetching);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn r35_removal_ends_the_wait() -> Result<(), BoxError> {
    let api = Api::builder().build();
    let never = api
        .query::<u32, u32>("never")
        .query_fn(|_: u32| futures::future::pending::<Result<u32, BoxError>>())
        .build()?;
    let sub = never.subscribe(1)?;
    let waiting = sub.settled();
    never.remove(&1)?;
    let settled = tokio::time::timeout(Duration::from_secs(1), waiting)
        .await
        .expect("removal ends the wait");
    assert!(
        matches!(settled, Err(NotSettled::Removed(_))),
        "{settled:?}"
    );
    Ok(())
}

/// The same through HTTP: a server answering 500 gives a settled error, not a hang. (Real
/// sockets, so the clock is not paused: a paused clock would jump to the request timeout while
/// the runtime waits for the socket.)
#[tokio::test]
async fn r35_an_http_500_settles_as_the_error() -> Result<(), livecache::BoxError> {
    let app = axum::Router::new().route(
        "/{*path}",
        axum::routing::get(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "down") }),
    );
    let (addr, server) = crate::common::waits::serve_http(app).await?;
    let http = HttpQuery::new(&format!("http://{addr}/"))?;
    let api = Api::builder().build();
    let get = api
        .query::<String, Value>("get")
        .query_fn(http.get_json(|path: &String| path.clone()))
        .build()?;
    let sub = get.subscribe("quote".into())?;
    let settled = tokio::time::timeout(Duration::from_secs(30), sub.settled()).await?;
    assert!(
        matches!(&settled, Err(NotSettled::Rejected(e)) if e.to_string().contains("500")),
        "{settled:?}"
    );
    server.abort();
    Ok(())
}
