//! The live rules through the tokio runtime, without sockets: paused time, in-memory streams.

use std::time::Duration;

use livecache::core::{Queue, Resync, StreamStatus, TraceKind, Version};
use livecache::{Api, MAX_BUFFERED};

/// R33: a stream that floods an entry before its first data holds at most `MAX_BUFFERED`
/// messages. Unversioned, the message past the bound fails the stream — what it held is applied
/// after the data, then the entry's status is `Failed` with the reason. Versioned, the buffer is
/// dropped instead and the stream goes on; once the data lands the entry resyncs (a refetch),
/// stale until its snapshot, and ends up with every message.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn r33_a_flood_before_the_first_data_is_bounded() {
    let api = Api::builder().build();
    let flood = api
        .query::<(), Vec<u64>>("flood")
        .query_fn(|()| async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok(vec![])
        })
        .on_cache_entry_added(|(), entry| async move {
            let messages = futures::stream::iter(0..=MAX_BUFFERED as u64);
            entry.stream(messages, |list, n| list.push(n)).await;
            Ok(())
        })
        .build()
        .expect("a new endpoint");
    let sub = flood.subscribe(()).expect("a key");
    sub.loaded().await.expect("loads");
    tokio::time::sleep(Duration::from_millis(1)).await;
    let state = sub.state();
    assert_eq!(
        state.data().map(Vec::len),
        Some(MAX_BUFFERED),
        "what it held is applied"
    );
    let error = format!("more than {MAX_BUFFERED} messages arrived before the first data");
    assert_eq!(state.stream, StreamStatus::Failed { error });

    // Versioned: the buffer is dropped, the stream goes on, the entry resyncs by refetching.
    let total = MAX_BUFFERED as u64 + 10;
    let fetches = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = std::sync::Arc::clone(&fetches);
    let versioned = api
        .query::<(), Vec<u64>>("versioned")
        .query_fn_versioned(move |()| {
            let n = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                // The first snapshot is empty; the resync's has every message.
                Ok(if n == 0 {
                    (vec![], Version::new(0))
                } else {
                    ((1..=total).collect(), Version::new(total))
                })
            }
        })
        .on_cache_entry_added(move |(), entry| async move {
            let messages = futures::stream::iter(1..=total);
            entry
                .stream_versioned(messages, |n| Version::new(*n), |list, n| list.push(n))
                .await;
            Ok(())
        })
        .build()
        .expect("a new endpoint");
    let sub = versioned.subscribe(()).expect("a key");
    sub.loaded().await.expect("loads");
    tokio::task::yield_now().await;
    let kinds: Vec<TraceKind> = api.trace().into_iter().map(|e| e.kind).collect();
    let overflowed = kinds.iter().position(|k| {
        matches!(
            k,
            TraceKind::QueueOverflowed {
                queue: Queue::Buffered,
                ..
            }
        )
    });
    let resynced = kinds.iter().position(|k| {
        matches!(
            k,
            TraceKind::ResyncStarted {
                policy: Resync::Refetch,
                ..
            }
        )
    });
    assert!(
        overflowed.is_some() && resynced > overflowed,
        "the buffer overflowed, then a resync started: {kinds:?}"
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let state = sub.state();
    assert_eq!(
        fetches.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "one resync"
    );
    assert_eq!(state.data().map(Vec::len), Some(total as usize));
    assert_eq!(state.watermark, Some(Version::new(total)));
    // The resync is over; the source's own end shows (the in-memory stream ran out).
    assert!(
        matches!(state.stream, StreamStatus::Ended { .. }),
        "{:?}",
        state.stream
    );
}

/// R29 through the runtime: the handler hears of its entry's requests (started with why,
/// fulfilled) and refetches through its handle, holding no endpoint: once the last subscriber
/// is gone for the keep time the entry is removed and the handler's `removed()` resolves — no
/// reference cycle keeps it alive.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn r29_a_handler_hears_of_requests_and_refetches_through_its_handle() {
    use futures::StreamExt;
    use livecache::core::{RequestEvent, RequestReason};
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::sync::{Arc, Mutex};

    let api = Api::builder()
        .keep_unused_data_for(Duration::from_secs(1))
        .build();
    let fetches = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&fetches);
    let heard: Arc<Mutex<Vec<RequestEvent>>> = Arc::default();
    let told = Arc::clone(&heard);
    let ended = Arc::new(AtomicBool::new(false));
    let done = Arc::clone(&ended);
    let counter = api
        .query::<(), u32>("counter")
        .query_fn(move |()| {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move { Ok(n) }
        })
        .on_cache_entry_added(move |(), entry| {
            let (told, done) = (Arc::clone(&told), Arc::clone(&done));
            async move {
                let mut events = Box::pin(entry.request_events());
                let Ok((entry, _)) = entry.data_loaded().await else {
                    return Ok(());
                };
                entry.refetch()?;
                let listen = async {
                    while let Some(event) = events.next().await {
                        if let Ok(mut heard) = told.lock() {
                            heard.push(event);
                        }
                    }
                };
                tokio::select! {
                    _ = entry.removed() => {}
                    () = listen => {}
                }
                done.store(true, Ordering::SeqCst);
                Ok(())
            }
        })
        .build()
        .expect("a new endpoint");
    let sub = counter.subscribe(()).expect("a key");
    sub.loaded().await.expect("loads");
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(sub.state().data(), Some(&1), "the handler's refetch ran");
    let reasons: Vec<Option<RequestReason>> = heard
        .lock()
        .map(|h| {
            h.iter()
                .map(|e| match e {
                    RequestEvent::Started { reason, .. } => Some(*reason),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        reasons,
        [
            Some(RequestReason::Load),
            None,
            Some(RequestReason::Refetch),
            None
        ],
        "started (load), fulfilled, started (refetch), fulfilled"
    );
    drop(sub);
    drop(counter);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(api.is_empty(), "the entry is removed");
    assert!(
        ended.load(Ordering::SeqCst),
        "the handler ended with its entry"
    );
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
}

/// R30: `restart(arg)` ends the running handler — its `removed()` resolves with `Restarted`,
/// its stream ends (traced `handler restarted`), its handle is refused — and starts the
/// endpoint's handler again on the same entry: same lifetime, data, subscriber and watermark;
/// the new handler's data-loaded resolves at once with the data, and its stream goes on from
/// the watermark the entry kept.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn r30_restart_ends_the_handler_and_its_stream_and_starts_a_new_one_on_the_same_entry() {
    use futures::channel::mpsc;
    use livecache::core::{HandlerOutcome, StreamEndReason};
    use livecache::{EntryHandle, UpdateError, WithData};
    use std::sync::{Arc, Mutex};

    type Feed = mpsc::UnboundedSender<u64>;
    /// What each handler left behind: its feed, its loaded handle, how its `removed()` ended.
    #[derive(Default)]
    struct Seen {
        feeds: Vec<Feed>,
        handles: Vec<EntryHandle<WithData, Vec<u64>>>,
        ended: Vec<livecache::Ended>,
        stream_ends: Vec<StreamEndReason>,
        first_data: Vec<Vec<u64>>,
    }
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let api = Api::builder().build();
    let shared = Arc::clone(&seen);
    let feed = api
        .query::<(), Vec<u64>>("feed")
        .query_fn_versioned(|()| async { Ok((vec![1, 2], Version::new(2))) })
        .on_cache_entry_added(move |(), entry| {
            let seen = Arc::clone(&shared);
            async move {
                let (tx, rx) = mpsc::unbounded();
                let Ok((entry, first)) = entry.data_loaded().await else {
                    return Ok(());
                };
                {
                    let mut seen = seen.lock().expect("not poisoned");
                    seen.feeds.push(tx);
                    seen.handles.push(entry.clone());
                    seen.first_data.push((*first.data).clone());
                }
                let ended = entry.clone();
                let end = entry
                    .stream_versioned(rx, |n| Version::new(*n), |list, n| list.push(n))
                    .await;
                let why = ended.removed().await;
                let mut seen = seen.lock().expect("not poisoned");
                seen.stream_ends.push(end.reason);
                seen.ended.push(why);
                Ok(())
            }
        })
        .build()
        .expect("a new endpoint");
    let sub = feed.subscribe(()).expect("a key");
    sub.loaded().await.expect("loads");
    tokio::task::yield_now().await;
    let first_feed = seen.lock().expect("not poisoned").feeds[0].clone();
    first_feed.unbounded_send(3).expect("the stream reads");
    tokio::task::yield_now().await;
    assert_eq!(sub.state().data(), Some(&vec![1, 2, 3]));
    assert_eq!(sub.state().watermark, Some(Version::new(3)));

    assert!(feed.restart(&()).expect("the endpoint has a handler"));
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
    {
        let seen = seen.lock().expect("not poisoned");
        assert_eq!(seen.ended, [livecache::Ended::Restarted]);
        assert_eq!(seen.stream_ends, [StreamEndReason::HandlerRestarted]);
        // The new handler got the data the entry kept, at once.
        assert_eq!(seen.first_data, [vec![1, 2], vec![1, 2, 3]]);
        assert_eq!(seen.handles[1].handler().generation, 1);
        assert_eq!(seen.handles[0].lifetime(), seen.handles[1].lifetime());
        // The old handle can do nothing more.
        assert!(seen.handles[0].is_removed());
        let refused = seen.handles[0].update_cached_data(|list| list.clear());
        assert_eq!(refused, Err(UpdateError::EntryRemoved));
    }
    // The old stream is gone (its receiver dropped); the new one goes on from watermark 3.
    assert!(first_feed.unbounded_send(4).is_err());
    let second_feed = seen.lock().expect("not poisoned").feeds[1].clone();
    second_feed.unbounded_send(3).expect("reads"); // stale: at the watermark
    second_feed.unbounded_send(4).expect("reads");
    tokio::task::yield_now().await;
    let state = sub.state();
    assert_eq!(state.data(), Some(&vec![1, 2, 3, 4]));
    assert_eq!(state.stream, StreamStatus::Live);

    let kinds: Vec<TraceKind> = api.trace().into_iter().map(|e| e.kind).collect();
    assert!(kinds.contains(&TraceKind::LifecycleRestarted {
        lifetime: 1,
        generation: 1,
        loaded: true
    }));
    assert!(kinds.iter().any(|k| matches!(
        k,
        TraceKind::StreamEnded { reason, applied: 1, .. } if reason == "handler restarted"
    )));
    assert!(kinds.contains(&TraceKind::LifecycleEnded {
        lifetime: 1,
        generation: 0,
        outcome: HandlerOutcome::Finished
    }));
    // Removal ends the second handler the usual way.
    drop(sub);
    assert!(feed.remove(&()).expect("a key"));
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
    let seen = seen.lock().expect("not poisoned");
    let removed = [livecache::Ended::Restarted, livecache::Ended::Removed];
    assert_eq!(seen.ended, removed);
    let ends = [
        StreamEndReason::HandlerRestarted,
        StreamEndReason::EntryRemoved,
    ];
    assert_eq!(seen.stream_ends, ends);
}
