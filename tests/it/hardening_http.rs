//! Regression tests of the hardening issue's HTTP and key items, each named after its item
//! (`hardening_NN_…`), and of a prefetch behaviour docs/api.md states. The servers are axum on loopback ports chosen by the system; every request
//! count is small and every wait bounded (a few seconds at most), failing with what it waited for.

use crate::common::waits::{STEP, TestResult, serve_http, within};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use livecache::core::{KeyError, Refetch, Status};
use livecache::http::{HttpError, HttpQuery};
use livecache::{Api, Data, Endpoint, Subscription};
use serde_json::{Value, json};

// ===== helpers =====

/// Wait until the subscription's entry is in `status` and no request is in flight.
async fn wait_settled<T: Data>(sub: &Subscription<T>, status: Status) {
    within(&format!("status {status:?}"), async {
        loop {
            let state = sub.state();
            if state.status == status && !state.is_fetching {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// Wait for the entry to be rejected; its error as an [`HttpError`].
async fn rejected_with<T: Data>(sub: &Subscription<T>) -> HttpError {
    wait_settled(sub, Status::Rejected).await;
    let error = sub.state().error.expect("a rejected entry has its error");
    error
        .downcast_ref::<HttpError>()
        .cloned()
        .unwrap_or_else(|| panic!("not an HttpError: {error:?}"))
}

/// An endpoint whose argument is the path GET (as JSON) through `http`; the api lives as long
/// as the endpoint.
fn get_path(http: &HttpQuery) -> Result<Endpoint<String, Value>, livecache::BoxError> {
    let api = Api::builder().build();
    Ok(api
        .query::<String, Value>("get")
        .query_fn(http.get_json(|path: &String| path.clone()))
        .build()?)
}

/// A `302 Found` to `location`.
fn found(location: String) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
}

// ===== item 3: redirects to another origin =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hardening_03_cross_origin_redirect_is_refused_never_requested_same_origin_followed()
-> TestResult {
    // Server B: another port of the same host; counts every request it gets.
    let b_hits = Arc::new(AtomicUsize::new(0));
    let app_b = axum::Router::new()
        .fallback(|State(hits): State<Arc<AtomicUsize>>| async move {
            hits.fetch_add(1, Ordering::SeqCst);
            axum::Json(json!("from B"))
        })
        .with_state(Arc::clone(&b_hits));
    let (b, serving_b) = serve_http(app_b).await?;

    // Server A: the base URL. `/to/{n}` redirects to target n; `/hop/{n}` redirects n times
    // within A before answering.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let a = listener.local_addr()?;
    let targets = Arc::new(vec![
        format!("http://{b}/data"),                    // another port
        format!("http://localhost:{}/data", b.port()), // another host (by name)
        format!("https://{a}/data"),                   // another scheme
        "/data".to_owned(),                            // the same origin
    ]);
    let a_hits = Arc::new(AtomicUsize::new(0));
    let app_a = axum::Router::new()
        .route(
            "/to/{n}",
            axum::routing::get(
                |State((targets, _)): State<(Arc<Vec<String>>, Arc<AtomicUsize>)>,
                 Path(n): Path<usize>| async move { found(targets[n].clone()) },
            ),
        )
        .route(
            "/hop/{n}",
            axum::routing::get(
                |State((_, hits)): State<(Arc<Vec<String>>, Arc<AtomicUsize>)>,
                 Path(n): Path<usize>| async move {
                    hits.fetch_add(1, Ordering::SeqCst);
                    match n.checked_sub(1) {
                        Some(next) => found(format!("/hop/{next}")),
                        None => axum::Json(json!("hopped")).into_response(),
                    }
                },
            ),
        )
        .route(
            "/data",
            axum::routing::get(|| async { axum::Json(json!("from A")) }),
        )
        .with_state((Arc::clone(&targets), Arc::clone(&a_hits)));
    let serving_a = tokio::spawn(async move {
        let _ = axum::serve(listener, app_a).await;
    });

    let http = HttpQuery::with_timeout(&format!("http://{a}/"), STEP)?;
    let get = get_path(&http)?;

    // Another port, another host, another scheme: refused with the redirect error, and the
    // target never requested.
    for n in 0..3 {
        let sub = get.subscribe(format!("to/{n}"))?;
        let error = rejected_with(&sub).await;
        assert!(
            matches!(&error, HttpError::Redirect(e) if e.contains("origin") && e.contains(&targets[n])),
            "redirect to {}: {error:?}",
            targets[n]
        );
        assert!(error.to_string().starts_with("HTTP redirect refused: "));
        assert_eq!(sub.state().data, None, "nothing cached from {}", targets[n]);
    }
    assert_eq!(
        b_hits.load(Ordering::SeqCst),
        0,
        "server B was never requested"
    );

    // A redirect within the origin is followed.
    let sub = get.subscribe("to/3".into())?;
    let data = within("the same-origin redirect", sub.loaded()).await?;
    assert_eq!(*data, json!("from A"));

    // Up to MAX_REDIRECTS of them; one more is refused (after MAX_REDIRECTS + 1 requests).
    let max = livecache::http::MAX_REDIRECTS;
    let sub = get.subscribe(format!("hop/{max}"))?;
    let data = within("the redirect chain", sub.loaded()).await?;
    assert_eq!(*data, json!("hopped"));
    assert_eq!(a_hits.swap(0, Ordering::SeqCst), max + 1);
    let sub = get.subscribe(format!("hop/{}", max + 1))?;
    let error = rejected_with(&sub).await;
    assert!(
        matches!(&error, HttpError::Redirect(e) if e.contains(&format!("more than {max}"))),
        "{error:?}"
    );
    assert_eq!(a_hits.load(Ordering::SeqCst), max + 1);
    assert_eq!(b_hits.load(Ordering::SeqCst), 0);

    serving_a.abort();
    serving_b.abort();
    Ok(())
}

// ===== item 10: keys of non-finite numbers =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hardening_10_non_finite_arguments_refused_as_key_errors_by_the_runtime() -> TestResult {
    let api = Api::builder().build();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let near = api
        .query::<Option<f64>, String>("near")
        .query_fn(move |at: Option<f64>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move { Ok(format!("{at:?}")) }
        })
        .build()?;
    let nested = api
        .query::<Vec<(u8, Option<f64>)>, u8>("nested")
        .query_fn(|_| async { Ok(0) })
        .build()?;

    // NaN, +inf and -inf, bare and nested: every operation that keys the argument refuses it
    // with the key error, and nothing is requested or cached.
    for (value, text) in [
        (f64::NAN, "NaN"),
        (f64::INFINITY, "inf"),
        (f64::NEG_INFINITY, "-inf"),
    ] {
        let refused = |result: Result<(), livecache::Error>, path: &str| match result {
            Err(livecache::Error::Key(KeyError::NonFinite {
                path: p, value: v, ..
            })) => assert_eq!((p.as_str(), v.as_str()), (path, text)),
            other => panic!("{value}: expected a key error, got {other:?}"),
        };
        refused(near.subscribe(Some(value)).map(drop), "");
        refused(near.prefetch(Some(value), Refetch::IfMissing), "");
        refused(near.state(&Some(value)).map(drop), "");
        refused(near.key(&Some(value)).map(drop), "");
        refused(near.upsert_query_data(Some(value), "x".into()), "");
        refused(near.remove(&Some(value)).map(drop), "");
        let arg = vec![(1, Some(0.5)), (2, Some(value))];
        refused(nested.subscribe(arg.clone()).map(drop), "/1/1");
        refused(nested.prefetch(arg, Refetch::IfMissing), "/1/1");
    }
    assert!(api.is_empty(), "nothing was cached for a refused key");
    assert_eq!(calls.load(Ordering::SeqCst), 0, "nothing was requested");

    // None still keys as `name(undefined)`, finite floats as before, and each is its own entry.
    let none = near.subscribe(None)?;
    assert_eq!(none.key().as_str(), "near(undefined)");
    let one = near.subscribe(Some(1.5))?;
    assert_eq!(one.key().as_str(), "near(1.5)");
    assert_eq!(near.key(&Some(-0.0))?.as_str(), "near(0)");
    assert_eq!(
        nested.key(&vec![(1, None), (2, Some(1e21))])?.as_str(),
        "nested([[1,null],[2,1e+21]])"
    );
    let none_data = within("None's data", none.loaded()).await?;
    let one_data = within("1.5's data", one.loaded()).await?;
    assert_eq!(
        (none_data.as_str(), one_data.as_str()),
        ("None", "Some(1.5)")
    );
    Ok(())
}

// ===== item 8: response body size =====

/// A JSON string of exactly `len` bytes (`len >= 2`): `"aaa…"`.
fn json_string(len: usize) -> Vec<u8> {
    let mut body = vec![b'a'; len];
    body[0] = b'"';
    body[len - 1] = b'"';
    body
}

/// A response whose body is `body`, sent in chunks of 8 KiB with no `Content-Length`.
fn chunked(body: Vec<u8>) -> Response {
    let chunks: Vec<Result<axum::body::Bytes, std::convert::Infallible>> = body
        .chunks(8 * 1024)
        .map(|c| Ok(axum::body::Bytes::copy_from_slice(c)))
        .collect();
    let response = axum::body::Body::from_stream(futures::stream::iter(chunks)).into_response();
    assert!(!response.headers().contains_key(header::CONTENT_LENGTH));
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hardening_08_body_over_the_limit_is_refused_and_the_entry_keeps_its_data() -> TestResult {
    const LIMIT: usize = 64 * 1024;
    // `/declared/{n}`: an n-byte JSON string with its Content-Length; `/chunked/{n}`: the same,
    // streamed without one; `/grows`: a small list first, then a 1 MiB JSON string, streamed.
    let hits = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new()
        .route(
            "/declared/{n}",
            axum::routing::get(|Path(n): Path<usize>| async move { json_string(n) }),
        )
        .route(
            "/chunked/{n}",
            axum::routing::get(|Path(n): Path<usize>| async move { chunked(json_string(n)) }),
        )
        .route(
            "/grows",
            axum::routing::get(|State(hits): State<Arc<AtomicUsize>>| async move {
                if hits.fetch_add(1, Ordering::SeqCst) == 0 {
                    axum::Json(json!(["small"])).into_response()
                } else {
                    chunked(json_string(1024 * 1024))
                }
            }),
        )
        .with_state(Arc::clone(&hits));
    let (addr, serving) = serve_http(app).await?;
    let http = HttpQuery::with_timeout(&format!("http://{addr}/"), STEP)?.with_body_limit(LIMIT);
    assert_eq!(http.body_limit(), LIMIT);
    let get = get_path(&http)?;

    // Exactly the limit is accepted, declared or streamed; one byte more is refused either way.
    for how in ["declared", "chunked"] {
        let sub = get.subscribe(format!("{how}/{LIMIT}"))?;
        let data = within("a body of exactly the limit", sub.loaded()).await?;
        assert_eq!(data.as_str().map(str::len), Some(LIMIT - 2), "{how}");
        let sub = get.subscribe(format!("{how}/{}", LIMIT + 1))?;
        let error = rejected_with(&sub).await;
        assert_eq!(error, HttpError::BodyTooLarge { limit: LIMIT }, "{how}");
        assert_eq!(
            error.to_string(),
            format!("HTTP response body larger than the limit of {LIMIT} bytes")
        );
        assert_eq!(sub.state().data, None);
    }

    // An entry with data: the refetch's oversized body is refused, and the entry loses nothing
    // already cached (the same data, fulfilled at the same time).
    let sub = get.subscribe("grows".into())?;
    let before = within("the small first body", sub.loaded()).await?;
    assert_eq!(*before, json!(["small"]));
    let fulfilled = sub.state().fulfilled_at_ms;
    sub.refetch()?;
    let error = rejected_with(&sub).await;
    assert_eq!(error, HttpError::BodyTooLarge { limit: LIMIT });
    let after = sub.state();
    assert!(
        after.data.as_ref().is_some_and(|d| Arc::ptr_eq(d, &before)),
        "the cached data is kept: {:?}",
        after.data
    );
    assert_eq!(after.fulfilled_at_ms, fulfilled);
    assert_eq!(hits.load(Ordering::SeqCst), 2);

    // The default limit is the documented one.
    let default = HttpQuery::new(&format!("http://{addr}/"))?;
    assert_eq!(default.body_limit(), livecache::http::DEFAULT_BODY_LIMIT);
    serving.abort();
    Ok(())
}

// ===== docs/api.md, prefetch: the keep time runs from the prefetch =====

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn prefetch_whose_request_outlasts_the_keep_time_is_removed_before_loaded() -> TestResult {
    let api = Api::builder()
        .keep_unused_data_for(Duration::from_secs(1))
        .build();
    let finished = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&finished);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = Arc::new(std::sync::Mutex::new(Some(tx)));
    let slow = api
        .query::<u32, u32>("slow")
        .query_fn(move |n: u32| {
            let counted = Arc::clone(&counted);
            async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                counted.fetch_add(1, Ordering::SeqCst);
                Ok(n)
            }
        })
        .on_cache_entry_added(move |_n, entry| {
            let tx = tx.lock().ok().and_then(|mut tx| tx.take());
            async move {
                let loaded = entry.data_loaded().await.map(drop);
                if let Some(tx) = tx {
                    let _ = tx.send(loaded);
                }
                Ok(())
            }
        })
        .build()?;
    slow.prefetch(1, Refetch::IfMissing)?;
    let loaded = within("the lifecycle's data_loaded", rx).await?;
    assert_eq!(loaded, Err(livecache::RemovedBeforeLoaded));
    assert!(api.is_empty());
    assert_eq!(api.in_flight(), (0, 0), "the request was aborted");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(finished.load(Ordering::SeqCst), 0);
    Ok(())
}

// ===== R40: the request's method, headers, auth, and the caller's own client =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r40_http_query_sends_its_method_headers_and_auth_through_any_client() -> TestResult {
    use axum::http::HeaderMap;
    async fn echo(method: axum::http::Method, headers: HeaderMap) -> axum::Json<Value> {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        axum::Json(json!({
            "method": method.as_str(),
            "auth": header("authorization"),
            "version": header("x-api-version"),
        }))
    }
    let app = axum::Router::new().route("/echo", axum::routing::any(echo));
    let (addr, serving) = serve_http(app).await?;
    let base = format!("http://{addr}/");
    let own = livecache::http::client_builder()?.build()?;
    for http in [HttpQuery::new(&base)?, HttpQuery::with_client(own, &base)?] {
        let http = http
            .with_method(livecache::http::reqwest::Method::POST)
            .with_header("x-api-version", "2")?
            .with_bearer_auth("s3cret")?;
        let api = Api::builder().build();
        let echo = api
            .query::<(), Value>("echo")
            .query_fn(http.get_json(|(): &()| "echo".to_owned()))
            .build()?;
        let seen = within("the echo", echo.subscribe(())?.settled())
            .await
            .map_err(|e| e.to_string())?;
        assert_eq!(
            *seen,
            json!({"method": "POST", "auth": "Bearer s3cret", "version": "2"})
        );
    }
    assert!(HttpQuery::new(&base)?.with_header("bad name", "x").is_err());
    serving.abort();
    Ok(())
}
