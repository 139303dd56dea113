//! R36, retries: an endpoint with a retry policy runs a failed request again after an
//! exponential backoff with jitter, up to its count; meanwhile the request stays in flight and
//! the status `Pending`; `Rejected` shows the last error; retries stop when the entry goes. The
//! model comparison (property tests, the exhaustive check's retry alphabet, the `lifecycle_ops`
//! fuzz body) covers the rule at large; these tests pin it by example.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use livecache::core::{
    Cache, CacheKey, EndpointConfig, Refetch, RequestId, RetryPolicy, Status, TraceKind,
};
use livecache::{Api, BoxError, NotSettled};

fn policy(max_retries: u32) -> RetryPolicy {
    RetryPolicy {
        max_retries,
        base_ms: 100,
        max_ms: 1_000,
        jitter_percent: 0,
        seed: 0,
    }
}

fn retrying(cache: &Cache<u32>) -> Vec<(u64, u32, u64, String)> {
    cache
        .trace()
        .iter()
        .filter_map(|e| match &e.kind {
            TraceKind::RequestRetrying {
                attempt,
                delay_ms,
                error,
                ..
            } => Some((e.at_ms, *attempt, *delay_ms, error.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn r36_a_failed_request_is_retried_with_backoff_pending_meanwhile_then_rejected_with_the_last_error()
 {
    let mut cache: Cache<u32> = Cache::new(Default::default());
    let ep = cache
        .add_endpoint(
            "quote",
            EndpointConfig {
                retry: Some(policy(2)),
                ..EndpointConfig::default()
            },
        )
        .expect("a new endpoint");
    let key = CacheKey::verbatim("quote(1)");
    cache
        .subscribe(0, ep, &key, Refetch::IfMissing)
        .expect("subscribed");
    let request = RequestId(1);
    cache.reject(10, &key, request, "503 first".into());
    let entry = cache.entry(&key).expect("an entry");
    assert_eq!(
        (entry.status, entry.in_flight, entry.retry_deadline),
        (Status::Pending, Some(request), Some(110))
    );
    cache.handle_timeout(110);
    assert!(cache.trace().iter().any(|e| e.kind
        == TraceKind::RequestRetried {
            request: 1,
            attempt: 1
        }
        && e.at_ms == 110));
    cache.reject(120, &key, request, "503 second".into());
    assert_eq!(cache.entry(&key).and_then(|e| e.retry_deadline), Some(320));
    cache.handle_timeout(320);
    cache.reject(330, &key, request, "503 third".into());
    let entry = cache.entry(&key).expect("an entry");
    assert_eq!(
        (
            entry.status,
            entry.error,
            entry.in_flight,
            entry.retry_deadline
        ),
        (Status::Rejected, Some(&"503 third".to_string()), None, None)
    );
    assert_eq!(
        retrying(&cache),
        vec![
            (10, 1, 100, "503 first".into()),
            (120, 2, 200, "503 second".into())
        ]
    );
}

#[test]
fn r36_a_failure_not_worth_retrying_rejects_at_once_and_removal_stops_retries() {
    let mut cache: Cache<u32> = Cache::new(Default::default());
    let ep = cache
        .add_endpoint(
            "quote",
            EndpointConfig {
                retry: Some(policy(3)),
                ..EndpointConfig::default()
            },
        )
        .expect("a new endpoint");
    let (a, b) = (
        CacheKey::verbatim("quote(1)"),
        CacheKey::verbatim("quote(2)"),
    );
    cache
        .subscribe(0, ep, &a, Refetch::IfMissing)
        .expect("subscribed");
    cache.reject_retryable(1, &a, RequestId(1), "404".into(), false);
    assert_eq!(cache.entry(&a).map(|e| e.status), Some(Status::Rejected));
    cache
        .subscribe(2, ep, &b, Refetch::IfMissing)
        .expect("subscribed");
    cache.reject(3, &b, RequestId(2), "503".into());
    assert_eq!(cache.poll_timeout(), Some(103));
    cache.remove(4, &b);
    assert_eq!(cache.poll_timeout(), None, "the retry went with the entry");
}

#[tokio::test(start_paused = true)]
async fn r36_the_runtime_retries_what_retry_if_accepts_and_settles_with_the_result()
-> Result<(), BoxError> {
    let api = Api::builder().build();
    let calls = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&calls);
    let quotes = api
        .query::<String, u32>("quote")
        .retry(policy(3))
        .retry_if(|error| !error.to_string().contains("404"))
        .query_fn(move |symbol: String| {
            let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                match symbol.as_str() {
                    "GONE" => Err("404 Not Found".into()),
                    _ if n < 3 => Err("503 Service Unavailable".into()),
                    _ => Ok(n),
                }
            }
        })
        .build()?;
    let flaky = quotes.subscribe("ACME".into())?;
    let started = tokio::time::Instant::now();
    assert_eq!(*flaky.settled().await.map_err(|e| e.to_string())?, 3);
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(300),
        "100 + 200 ms of backoff"
    );
    let before = calls.load(Ordering::SeqCst);
    let gone = quotes.subscribe("GONE".into())?;
    let settled = gone.settled().await;
    assert!(matches!(&settled, Err(NotSettled::Rejected(e)) if e.to_string().contains("404")));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        before + 1,
        "a 404 is not retried"
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn r36_retries_stop_when_the_entry_is_removed() -> Result<(), BoxError> {
    let api = Api::builder().build();
    let calls = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&calls);
    let down = api
        .query::<(), u32>("down")
        .retry(policy(5))
        .query_fn(move |()| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Err::<u32, BoxError>("503".into()) }
        })
        .build()?;
    let sub = down.subscribe(())?;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the first try and one retry"
    );
    assert_eq!(sub.state().status, Status::Pending);
    down.remove(&())?;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2, "no retry after removal");
    Ok(())
}
