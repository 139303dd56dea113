//! R38, tags: an endpoint declares the tags its entries provide (from argument and data);
//! invalidating tags refetches every subscribed entry providing one and marks unsubscribed ones
//! to refetch on their next subscribe; a lifecycle (a stream message) can invalidate; an
//! endpoint lists its live entries. The model comparison (property tests, the exhaustive
//! check's tags alphabet, the `lifecycle_ops` fuzz body) covers the decisions at large.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use livecache::core::{
    Cache, CacheKey, EndpointConfig, Refetch, RequestId, RequestReason, Tag, TraceKind,
};
use livecache::{Api, BoxError};

use crate::common::waits::within;

fn started(cache: &Cache<u32>, key: &str) -> Vec<RequestReason> {
    cache
        .trace()
        .iter()
        .filter(|e| e.key.as_str() == key)
        .filter_map(|e| match e.kind {
            TraceKind::RequestStarted { reason, .. } => Some(reason),
            _ => None,
        })
        .collect()
}

#[test]
fn r38_invalidation_refetches_subscribed_entries_and_marks_unsubscribed_ones() {
    let mut cache: Cache<u32> = Cache::new(Default::default());
    let ep = cache
        .add_endpoint("post", EndpointConfig::default())
        .expect("a new endpoint");
    let (list, one, two) = (
        CacheKey::verbatim("post(list)"),
        CacheKey::verbatim("post(1)"),
        CacheKey::verbatim("post(2)"),
    );
    cache
        .subscribe(0, ep, &list, Refetch::IfMissing)
        .expect("subscribed");
    let sub_one = cache
        .subscribe(0, ep, &one, Refetch::IfMissing)
        .expect("subscribed");
    cache.upsert(0, ep, &two, 2).expect("upserted"); // unsubscribed
    for (key, request) in [(&list, 1), (&one, 2)] {
        cache.fulfil(1, key, RequestId(request), 0);
    }
    cache.provide_tags(1, &list, [Tag::kind("Post")]);
    cache.provide_tags(1, &one, [Tag::id("Post", 1)]);
    cache.provide_tags(1, &two, [Tag::id("Post", 2)]);
    // An id reaches its own tag only (not the list's tag of the whole kind).
    assert_eq!(cache.invalidate(2, &[Tag::id("Post", 1)]), 1);
    assert_eq!(
        started(&cache, "post(1)"),
        [RequestReason::Load, RequestReason::Invalidation]
    );
    assert_eq!(started(&cache, "post(list)"), [RequestReason::Load]);
    // A kind reaches every tag of it: the list refetches, post(1) joins its request in flight,
    // post(2) (no subscriber) is marked and keeps its data.
    assert_eq!(cache.invalidate(3, &[Tag::kind("Post")]), 3);
    assert_eq!(
        started(&cache, "post(list)"),
        [RequestReason::Load, RequestReason::Invalidation]
    );
    assert!(
        cache
            .trace()
            .iter()
            .any(|e| e.key.as_str() == "post(1)"
                && e.kind == TraceKind::RequestJoined { request: 3 })
    );
    let marked = cache.entry(&two).expect("kept");
    assert_eq!(
        (marked.invalidated, marked.data, marked.in_flight),
        (true, Some(&2), None)
    );
    // Subscribing to it refetches even with `IfMissing`, and answers the mark.
    cache
        .subscribe(4, ep, &two, Refetch::IfMissing)
        .expect("subscribed");
    assert_eq!(started(&cache, "post(2)"), [RequestReason::Mount]);
    assert!(!cache.entry(&two).expect("live").invalidated);
    // A kind nobody provides reaches nothing.
    assert_eq!(cache.invalidate(5, &[Tag::kind("User")]), 0);
    assert!(cache.unsubscribe(6, sub_one));
    assert_eq!(cache.keys_of(ep).len(), 3);
}

#[tokio::test(start_paused = true)]
async fn r38_the_runtime_provides_tags_from_data_and_invalidates_from_the_api_and_a_lifecycle()
-> Result<(), BoxError> {
    let api = Api::builder().build();
    let fetches = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&fetches);
    // A post's data names its author: the entry provides the post and its author.
    let posts = api
        .query::<u32, (u32, String)>("post")
        .provides_tags(|id, (author, _)| vec![Tag::id("Post", id), Tag::id("User", author)])
        .query_fn(move |id: u32| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move { Ok((id * 10, format!("post {id}"))) }
        })
        .build()?;
    let users = api
        .query::<u32, u32>("user")
        .query_fn(|id: u32| async move { Ok(id) })
        .on_cache_entry_added(|id, entry| async move {
            let Ok((entry, _)) = entry.data_loaded().await else {
                return Ok(());
            };
            // The user's stream says the user changed: their posts are out of date.
            entry.invalidate_tags([Tag::id("User", id)]);
            Ok(())
        })
        .build()?;
    let one = posts.subscribe(1)?;
    let two = posts.subscribe(2)?;
    within("post 1 settled", one.settled()).await?;
    within("post 2 settled", two.settled()).await?;
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
    assert_eq!(api.invalidate_tags([Tag::id("Post", 2)]), 1);
    within("post 2 settled", two.settled()).await?;
    assert_eq!(fetches.load(Ordering::SeqCst), 3);
    // User 10 wrote post 1: its stream invalidates it.
    let _user = users.subscribe(10)?;
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    within("post 1 settled", one.settled()).await?;
    assert_eq!(fetches.load(Ordering::SeqCst), 4);
    let keys: Vec<String> = posts.cached_keys().iter().map(|k| k.to_string()).collect();
    assert_eq!(keys, ["post(1)", "post(2)"]);
    Ok(())
}
