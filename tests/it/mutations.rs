//! R39, mutations: a function not cached by key, with `on_query_started` for optimistic updates
//! (update, await the result, undo on failure) and tags its result invalidates (R38).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use livecache::core::Tag;
use livecache::{Api, BoxError};

#[tokio::test(start_paused = true)]
async fn r39_an_optimistic_update_shows_at_once_rolls_back_on_failure_and_invalidates_on_success()
-> Result<(), BoxError> {
    let api = Api::builder().build();
    let fetches = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&fetches);
    let likes = api
        .query::<u32, u32>("likes")
        .provides_tags(|post, _| vec![Tag::id("Post", post)])
        .query_fn(move |_post: u32| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Ok(10) }
        })
        .build()?;
    let server_ok = Arc::new(AtomicBool::new(false));
    let seen_during = Arc::new(AtomicU32::new(0));
    let like = api
        .mutation::<u32, ()>("like")
        .mutation_fn({
            let (server_ok, likes, seen_during) = (
                Arc::clone(&server_ok),
                likes.clone(),
                Arc::clone(&seen_during),
            );
            move |post: u32| {
                // What a reader sees while the request runs: the optimistic value.
                let seen = likes.state(&post).ok().and_then(|s| s.data().copied());
                seen_during.store(seen.unwrap_or(0), Ordering::SeqCst);
                let ok = server_ok.load(Ordering::SeqCst);
                async move { if ok { Ok(()) } else { Err("500".into()) } }
            }
        })
        .on_query_started({
            let likes = likes.clone();
            move |post, fulfilled| {
                let likes = likes.clone();
                async move {
                    let change = likes.update_query_data(&post, |n| *n += 1)?;
                    if fulfilled.await.is_err() {
                        change.undo()?;
                    }
                    Ok(())
                }
            }
        })
        .invalidates_tags(|post, result| {
            if result.is_ok() {
                vec![Tag::id("Post", post)]
            } else {
                vec![]
            }
        })
        .build()?;
    let sub = likes.subscribe(1)?;
    sub.settled().await.map_err(|e| e.to_string())?;
    // The server refuses: the optimistic +1 was visible during the request, then rolled back;
    // nothing is invalidated.
    assert!(like.mutate(1).await.is_err());
    assert_eq!(seen_during.load(Ordering::SeqCst), 11);
    assert_eq!(sub.state().data(), Some(&10));
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    // The server accepts: the update stays and the post's tag is invalidated (a refetch).
    server_ok.store(true, Ordering::SeqCst);
    assert!(like.mutate(1).await.is_ok());
    assert!(sub.state().is_fetching);
    sub.settled().await.map_err(|e| e.to_string())?;
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
    Ok(())
}

#[tokio::test]
async fn r39_a_mutation_without_a_function_is_an_error() {
    let api = Api::builder().build();
    let built = api.mutation::<u32, u32>("nothing").build();
    assert!(matches!(built, Err(livecache::Error::Unsupported { .. })));
}
