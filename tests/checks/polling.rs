//! R37, polling: a subscription may ask for an interval; the entry refetches every minimum
//! interval of its current subscribers, one interval after each request settles, as ordinary
//! requests whose reason (`poll`) the lifecycle hears of. The model comparison (property tests,
//! the exhaustive check's polling alphabet, the `lifecycle_ops` fuzz body) covers the rule at
//! large; these tests pin it by example, on the core and through the runtime.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use livecache::core::{
    Cache, CacheKey, EndpointConfig, Refetch, RequestId, RequestReason, TraceKind,
};
use livecache::{Api, BoxError, RequestEvent};

fn poll_starts(cache: &Cache<u32>) -> Vec<(u64, u64)> {
    cache
        .trace()
        .iter()
        .filter_map(|e| match &e.kind {
            TraceKind::RequestStarted {
                request,
                reason: RequestReason::Poll,
            } => Some((e.at_ms, *request)),
            _ => None,
        })
        .collect()
}

#[test]
fn r37_an_entry_polls_at_the_minimum_interval_of_its_subscribers_after_each_settle() {
    let mut cache: Cache<u32> = Cache::new(Default::default());
    let ep = cache
        .add_endpoint("price", EndpointConfig::default())
        .expect("a new endpoint");
    let key = CacheKey::verbatim("price(1)");
    let slow = cache
        .subscribe(0, ep, &key, Refetch::IfMissing)
        .expect("subscribed");
    let fast = cache
        .subscribe(0, ep, &key, Refetch::IfMissing)
        .expect("subscribed");
    assert!(cache.set_polling(0, slow, Some(1_000)));
    // No poll while the first request is in flight.
    assert_eq!(cache.entry(&key).and_then(|e| e.poll_deadline), None);
    cache.fulfil(100, &key, RequestId(1), 1);
    assert_eq!(cache.entry(&key).and_then(|e| e.poll_deadline), Some(1_100));
    // A shorter interval arms the poll sooner.
    assert!(cache.set_polling(200, fast, Some(400)));
    assert_eq!(cache.entry(&key).and_then(|e| e.poll_deadline), Some(600));
    cache.handle_timeout(600);
    assert_eq!(poll_starts(&cache), vec![(600, 2)]);
    cache.fulfil(650, &key, RequestId(2), 2);
    assert_eq!(cache.entry(&key).and_then(|e| e.poll_deadline), Some(1_050));
    // The fast subscriber leaves: the armed poll stays; the next is one slow interval after
    // its request settles.
    assert!(cache.unsubscribe(700, fast));
    cache.handle_timeout(1_050);
    cache.reject(1_060, &key, RequestId(3), "down".into());
    assert_eq!(cache.entry(&key).and_then(|e| e.poll_deadline), Some(2_060));
    // Stopping the last polling subscription disarms it.
    assert!(cache.set_polling(1_100, slow, None));
    assert_eq!(cache.entry(&key).and_then(|e| e.poll_deadline), None);
    assert_eq!(cache.poll_timeout(), None);
    assert_eq!(poll_starts(&cache), vec![(600, 2), (1_050, 3)]);
}

#[test]
fn r37_a_poll_asked_for_again_at_the_same_instant_keeps_its_turn_among_deadlines_due_then() {
    // Deadlines due at the same instant fall due in the order they were armed. Asking for the
    // same poll again (a second subscriber with the same interval, in the same millisecond)
    // finds it armed for that very instant and leaves it as it is: it keeps its turn before
    // another entry's poll armed after it.
    let mut cache: Cache<u32> = Cache::new(Default::default());
    let ep = cache
        .add_endpoint("price", EndpointConfig::default())
        .expect("a new endpoint");
    let (a, b) = (
        CacheKey::verbatim("price(1)"),
        CacheKey::verbatim("price(2)"),
    );
    for key in [&a, &b] {
        cache.upsert(0, ep, key, 1).expect("upserted");
    }
    let subscribe = |cache: &mut Cache<u32>, key: &CacheKey| {
        cache
            .subscribe(0, ep, key, Refetch::IfMissing)
            .expect("subscribed")
    };
    let (a1, b1, a2) = (
        subscribe(&mut cache, &a),
        subscribe(&mut cache, &b),
        subscribe(&mut cache, &a),
    );
    assert!(cache.set_polling(0, a1, Some(100)));
    assert!(cache.set_polling(0, b1, Some(100)));
    assert!(cache.set_polling(0, a2, Some(100)));
    cache.handle_timeout(100);
    let polled: Vec<_> = cache
        .trace()
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                TraceKind::RequestStarted {
                    reason: RequestReason::Poll,
                    ..
                }
            )
        })
        .map(|e| (e.at_ms, e.key.to_string()))
        .collect();
    assert_eq!(
        polled,
        vec![(100, a.to_string()), (100, b.to_string())],
        "polls due at the same instant start in the order armed"
    );
}

#[tokio::test(start_paused = true)]
async fn r37_the_runtime_polls_while_subscribed_and_the_lifecycle_hears_each_poll()
-> Result<(), BoxError> {
    let api = Api::builder().build();
    let calls = Arc::new(AtomicU32::new(0));
    let reasons: Arc<Mutex<Vec<RequestReason>>> = Arc::default();
    let (counted, heard) = (Arc::clone(&calls), Arc::clone(&reasons));
    let ticker = api
        .query::<(), u32>("ticker")
        .query_fn(move |()| {
            let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok(n)
            }
        })
        .on_cache_entry_added(move |(), entry| {
            let heard = Arc::clone(&heard);
            async move {
                use futures::StreamExt;
                let mut events = entry.request_events();
                while let Some(event) = events.next().await {
                    if let RequestEvent::Started { reason, .. } = event
                        && let Ok(mut heard) = heard.lock()
                    {
                        heard.push(reason);
                    }
                }
                Ok(())
            }
        })
        .build()?;
    let sub = ticker.subscribe(())?;
    sub.poll_every(Some(Duration::from_secs(1)))?;
    // Requests at 0, 1.1 s, 2.2 s (each takes 100 ms; the next poll is 1 s after it settles).
    tokio::time::sleep(Duration::from_millis(2_250)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(sub.state().data.as_deref(), Some(&2));
    drop(sub);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "no polling once unsubscribed"
    );
    let heard = reasons.lock().map(|r| r.clone()).unwrap_or_default();
    assert_eq!(
        heard,
        vec![
            RequestReason::Load,
            RequestReason::Poll,
            RequestReason::Poll
        ]
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn r37_subscribers_see_each_poll_start_even_when_the_data_stays_equal() -> Result<(), BoxError>
{
    use futures::StreamExt;
    let api = Api::builder().build();
    let constant = api
        .query::<(), u32>("constant")
        .query_fn(|()| async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok(1)
        })
        .build()?;
    let sub = constant.subscribe(())?;
    sub.poll_every(Some(Duration::from_secs(1)))?;
    sub.settled().await.map_err(|e| e.to_string())?;
    let mut changes = sub.changes();
    let _current = changes.next().await;
    // The poll at 1.1 s starts a request: a change, though the data it brings is equal.
    let fetching = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(state) = changes.next().await {
            if state.is_fetching {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(fetching, Ok(true), "the poll's start was notified");
    Ok(())
}
