//! Regression tests of the hardening issue's core items, one per item, named after it. Bounded
//! in count and size; nothing here asserts a wall-clock time.

use livecache::core::{
    Cache, CacheKey, Effect, EndpointConfig, HandlerOutcome, LifetimeId, Refetch, RequestId,
    StreamEnd, StreamEndReason, StreamStatus, TRACE_TEXT_CAP, TraceEvent, TraceKind,
};
use livecache_model::{Config, KeyRef, Model, Op, trace_text};

use crate::common::{CoreUnderTest, compare};

/// The texts an event holds that a peer controls.
fn text_of(kind: &TraceKind) -> Option<&str> {
    match kind {
        TraceKind::RequestRejected { error, .. } => Some(error),
        TraceKind::StreamSkipped { reason, .. } | TraceKind::StreamEnded { reason, .. } => {
            Some(reason)
        }
        TraceKind::StreamStatusChanged {
            status: StreamStatus::Failed { error: text },
            ..
        } => Some(text),
        TraceKind::LifecycleEnded {
            outcome:
                HandlerOutcome::Failed { error: text } | HandlerOutcome::Panicked { message: text },
            ..
        } => Some(text),
        _ => None,
    }
}

fn text_bytes(trace: &[TraceEvent]) -> usize {
    trace
        .iter()
        .filter_map(|e| text_of(&e.kind))
        .map(str::len)
        .sum()
}

/// Each kept text is at most the cap; a cut one is a prefix of `original` (on a char boundary)
/// followed by the marker with `original`'s length.
fn assert_bounded(text: &str, original: &str) {
    assert!(text.len() <= TRACE_TEXT_CAP, "{} bytes kept", text.len());
    if original.len() <= TRACE_TEXT_CAP {
        assert_eq!(text, original);
        return;
    }
    let marker = format!("…[truncated, {} bytes]", original.len());
    let Some(prefix) = text.strip_suffix(&marker) else {
        panic!("no marker in {:?}", &text[text.len().saturating_sub(40)..]);
    };
    assert!(original.starts_with(prefix));
    assert!(
        prefix.len() + marker.len() + 4 > TRACE_TEXT_CAP,
        "cut no shorter than needed"
    );
}

/// Item 1: the trace was bounded in events, not bytes — 200 frames quoting 1 MB each were all
/// kept. Now every text a peer controls is cut to `TRACE_TEXT_CAP` bytes with a marker giving its
/// original length, and the texts held stay within the byte budget however many are recorded;
/// the model cuts alike, so the core and the model still agree event by event.
#[test]
fn hardening_01_trace_texts_are_cut_and_held_within_a_byte_budget() {
    const BUDGET: usize = 64 * 1024;
    let mut cache: Cache<u32> = Cache::new(Default::default());
    cache.set_trace_byte_budget(BUDGET);
    let ep = cache
        .add_endpoint("ws", EndpointConfig::default())
        .expect("a new name");
    let key = CacheKey::verbatim("ws(1)");
    // A schema error quoting a 1 MB string, a multibyte body, an ASCII body.
    let frame = format!(
        "invalid type: string \"{}\", expected u32",
        "a".repeat(1 << 20)
    );
    let body = "é€😀".repeat(40_000);
    let mut now = 0;
    for n in 0..200u64 {
        now += 1;
        cache.stream_skipped(now, &key, LifetimeId(1), frame.clone());
        if n % 20 == 0 {
            let end = StreamEnd {
                reason: StreamEndReason::StreamFailed(body.clone()),
                applied: n,
                skipped: n,
            };
            cache.stream_ended(now, &key, LifetimeId(1), &end);
            cache.lifecycle_ended(
                now,
                &key,
                LifetimeId(1),
                HandlerOutcome::Failed {
                    error: body.clone(),
                },
            );
            cache.lifecycle_ended(
                now,
                &key,
                LifetimeId(1),
                HandlerOutcome::Panicked {
                    message: frame.clone(),
                },
            );
            // A rejected request whose error displays as the body.
            cache
                .subscribe(now, ep, &key, Refetch::Always)
                .expect("the endpoint's key");
            let request = std::iter::from_fn(|| cache.poll_effect())
                .find_map(|e| match e {
                    Effect::StartRequest { request, .. } => Some(request),
                    _ => None,
                })
                .unwrap_or(RequestId(0));
            cache.reject(now, &key, request, body.clone());
        }
        assert!(cache.trace_text_bytes() <= BUDGET, "at {n}");
    }
    let trace = cache.trace();
    assert!(text_bytes(&trace) <= BUDGET);
    assert!(text_bytes(&trace) <= cache.trace_text_bytes());
    assert!(trace.iter().filter_map(|e| text_of(&e.kind)).count() >= BUDGET / 2 / TRACE_TEXT_CAP);
    assert_eq!(
        trace.last().map(|e| e.at_ms),
        Some(now),
        "the newest are kept"
    );
    for event in &trace {
        match &event.kind {
            TraceKind::StreamSkipped { reason, .. } => assert_bounded(reason, &frame),
            TraceKind::LifecycleEnded {
                outcome: HandlerOutcome::Panicked { message },
                ..
            } => assert_bounded(message, &frame),
            // The stream's end gives its reason ("stream failed: " and the error).
            TraceKind::StreamEnded { reason, .. } => {
                assert_bounded(reason, &format!("stream failed: {body}"));
            }
            kind => {
                if let Some(text) = text_of(kind) {
                    assert_bounded(text, &body);
                }
            }
        }
    }
    // The entry's own error is the caller's data: whole.
    assert_eq!(cache.entry(&key).and_then(|e| e.error), Some(&body));
    // Taking the trace releases the texts.
    let taken = cache.take_trace();
    assert_eq!(taken, trace);
    assert_eq!(cache.trace_text_bytes(), 0);

    // Short texts are kept as they are, and a budget lowered below what is held drops the
    // oldest at once.
    cache.stream_skipped(now, &key, LifetimeId(1), "not JSON".into());
    assert_eq!(cache.trace_text_bytes(), "not JSON".len());

    // The model applies the same rule in its own code, on chars of every width and on the
    // boundary lengths, and the core agrees with it event by event.
    for text in [
        String::new(),
        "x".repeat(TRACE_TEXT_CAP),
        "x".repeat(TRACE_TEXT_CAP + 1),
        "é".repeat(TRACE_TEXT_CAP),
        "€".repeat(TRACE_TEXT_CAP),
        format!("a{}", "😀".repeat(TRACE_TEXT_CAP)),
        body.clone(),
    ] {
        let mut cache: Cache<u32> = Cache::new(Default::default());
        cache.stream_skipped(0, &key, LifetimeId(1), text.clone());
        let TraceKind::StreamSkipped { reason, .. } = &cache.trace()[0].kind else {
            panic!("one stream_skipped");
        };
        assert_eq!(reason, &trace_text(&text));
        assert_bounded(reason, &text);
    }
    let config = Config::standard(false);
    let (mut model, mut core) = (Model::new(config.clone()), CoreUnderTest::new(&config));
    let a = KeyRef {
        endpoint: 0,
        arg: 1,
    };
    let ops = [
        Op::Subscribe {
            key: a,
            refetch: Refetch::IfMissing,
        },
        Op::Reject {
            key: a,
            request: 1,
            error: body.clone(),
        },
    ];
    for (step, op) in ops.iter().enumerate() {
        let (m, c) = (model.apply(op), core.apply(op));
        if let Err(difference) = compare(step, op, &m, &c, &model, &core) {
            panic!("core and model disagree: {difference}");
        }
    }
    assert!(
        core.trace()
            .iter()
            .any(|e| matches!(&e.kind, TraceKind::RequestRejected { error, .. } if error.len() <= TRACE_TEXT_CAP && error.ends_with("bytes]")))
    );
}

/// Data whose `PartialEq` panics when either side has `bomb` set (user code, like a recipe).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct EqBomb {
    items: Vec<u32>,
    bomb: bool,
}

impl PartialEq for EqBomb {
    fn eq(&self, other: &Self) -> bool {
        assert!(!(self.bomb || other.bomb), "eq bomb");
        self.items == other.items
    }
}

/// Data whose `Serialize` panics when `bomb` is set.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
struct SerBomb {
    items: Vec<u32>,
    bomb: bool,
}

impl serde::Serialize for SerBomb {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        assert!(!self.bomb, "serialize bomb");
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("SerBomb", 2)?;
        s.serialize_field("items", &self.items)?;
        s.serialize_field("bomb", &self.bomb)?;
        s.end()
    }
}

fn count(trace: &[TraceEvent], key: &str, pick: impl Fn(&TraceKind) -> bool) -> usize {
    trace
        .iter()
        .filter(|e| e.key == key && pick(&e.kind))
        .count()
}

fn panicked_with(error: &livecache::Error, what: &str) -> bool {
    matches!(error, livecache::Error::Update(livecache::UpdateError::DataPanicked { message })
        if message.contains(what))
        || matches!(error, livecache::Error::Patch(livecache::core::PatchError::DataPanicked { message })
        if message.contains(what))
}

/// Item 6: a panic in the data type's own `PartialEq` or `Serialize` took the entry away
/// silently (no `entry_removed`, its lifetime still counted, `removed()` never resolving), and
/// `update_query_data` let the `Serialize` panic reach its caller. Now each is contained: a clear
/// error (`UpdateError::DataPanicked`, `PatchError::DataPanicked`), `data_panicked` traced, the
/// entry still there in its lifetime, and its removal as usual.
#[tokio::test(start_paused = true)]
async fn hardening_06_a_panicking_partial_eq_or_serialize_is_contained() {
    use livecache::core::Patch;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    let api = livecache::Api::builder().build();
    // --- PartialEq: the second fetch returns data whose comparison panics.
    let fetches = Arc::new(AtomicU32::new(0));
    let eq_removed = Arc::new(AtomicBool::new(false));
    let eq = {
        let (fetches, removed) = (Arc::clone(&fetches), Arc::clone(&eq_removed));
        api.query::<u32, EqBomb>("eq")
            .query_fn(move |n: u32| {
                let fetch = fetches.fetch_add(1, Ordering::SeqCst);
                async move {
                    Ok(EqBomb {
                        items: vec![n, fetch],
                        bomb: fetch > 0,
                    })
                }
            })
            .on_cache_entry_added(move |_n, entry| {
                let removed = Arc::clone(&removed);
                async move {
                    let Ok((entry, _)) = entry.data_loaded().await else {
                        return Ok(());
                    };
                    entry.removed().await;
                    removed.store(true, Ordering::SeqCst);
                    Ok(())
                }
            })
            .build()
            .expect("a new endpoint")
    };
    let sub = eq.subscribe(1).expect("a key");
    sub.loaded().await.expect("loaded");
    sub.refetch().expect("live");
    tokio::task::yield_now().await;
    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    // The result was applied: the new data stored, counted as changed, the request settled.
    let state = sub.state();
    assert!(state.is_success() && !state.is_fetching, "{state:?}");
    assert_eq!(state.data().map(|d| d.items.clone()), Some(vec![1, 1]));
    let trace = api.trace();
    assert_eq!(
        count(
            &trace,
            "eq(1)",
            |k| matches!(k, TraceKind::DataPanicked { message } if message.contains("PartialEq") && message.contains("eq bomb"))
        ),
        1
    );
    assert!(trace.iter().any(|e| matches!(
        e.kind,
        TraceKind::RequestFulfilled {
            request: 2,
            data_changed: true
        }
    )));
    // An upsert of data whose comparison panics: a clear error; the upsert took effect.
    let upserted = eq.upsert_query_data(
        1,
        EqBomb {
            items: vec![7],
            bomb: true,
        },
    );
    assert!(
        upserted
            .as_ref()
            .is_err_and(|e| panicked_with(e, "PartialEq")),
        "{upserted:?}"
    );
    assert_eq!(
        eq.state(&1).expect("a key").data().map(|d| d.items.clone()),
        Some(vec![7])
    );
    // A patch whose result compares with a panic: an error, the data unchanged.
    let patch: Patch =
        serde_json::from_str(r#"[{"op": "replace", "path": "/items/0", "value": 8}]"#)
            .expect("a patch");
    let patched = eq.patch_query_data(&1, &patch);
    assert!(
        patched
            .as_ref()
            .is_err_and(|e| panicked_with(e, "PartialEq")),
        "{patched:?}"
    );
    assert_eq!(
        eq.state(&1).expect("a key").data().map(|d| d.items.clone()),
        Some(vec![7])
    );
    // Still the one lifetime: never removed, its handler still waiting.
    let trace = api.trace();
    assert_eq!(
        count(&trace, "eq(1)", |k| matches!(
            k,
            TraceKind::EntryAdded { .. }
        )),
        1
    );
    assert_eq!(
        count(&trace, "eq(1)", |k| matches!(
            k,
            TraceKind::EntryRemoved { .. }
        )),
        0
    );
    assert_eq!(api.len(), 1);
    assert_eq!(api.in_flight(), (0, 1));
    assert!(!eq_removed.load(Ordering::SeqCst));

    // --- Serialize: patches of data whose serialisation panics.
    let (handler_tx, handler_rx) = tokio::sync::oneshot::channel();
    let handler_tx = Arc::new(std::sync::Mutex::new(Some(handler_tx)));
    let ser_removed = Arc::new(AtomicBool::new(false));
    let ser = {
        let removed = Arc::clone(&ser_removed);
        api.query::<u32, SerBomb>("ser")
            .query_fn(|n: u32| async move {
                Ok(SerBomb {
                    items: vec![n],
                    bomb: false,
                })
            })
            .on_cache_entry_added(move |_n, entry| {
                let (removed, tx) = (Arc::clone(&removed), Arc::clone(&handler_tx));
                async move {
                    let Ok((entry, _)) = entry.data_loaded().await else {
                        return Ok(());
                    };
                    let result = entry.update_cached_data_with_patches(|d| {
                        d.items.clear();
                        d.bomb = true;
                    });
                    let data = entry.cache_entry().data().cloned();
                    if let Some(tx) = tx.lock().ok().and_then(|mut tx| tx.take()) {
                        let _ = tx.send((result, data));
                    }
                    entry.removed().await;
                    removed.store(true, Ordering::SeqCst);
                    Ok(())
                }
            })
            .build()
            .expect("a new endpoint")
    };
    let before = SerBomb {
        items: vec![2],
        bomb: false,
    };
    ser.upsert_query_data(2, before.clone()).expect("upserted");
    // Bounded on the paused clock: a handler that died without reporting fails, not hangs.
    let (result, data) = tokio::time::timeout(std::time::Duration::from_secs(60), handler_rx)
        .await
        .expect("the handler reports in time")
        .expect("the handler reports");
    assert!(
        matches!(&result, Err(livecache::UpdateError::DataPanicked { message }) if message.contains("Serialize")),
        "{result:?}"
    );
    assert_eq!(data.as_ref(), Some(&before), "the data is what it was");
    // `update_query_data`: the panic no longer reaches the caller.
    let updated = ser.update_query_data(&2, |d| {
        d.items.push(3);
        d.bomb = true;
    });
    assert!(
        updated
            .as_ref()
            .is_err_and(|e| panicked_with(e, "serialize bomb")),
        "{:?}",
        updated.err()
    );
    assert_eq!(ser.state(&2).expect("a key").data(), Some(&before));
    // Data that panics already before the recipe: patches are recorded as the recipe changes
    // the data, so the recipe runs; its change cannot be recorded and is undone.
    let bombed = SerBomb {
        items: vec![4],
        bomb: true,
    };
    ser.upsert_query_data(2, bombed.clone()).expect("upserted");
    let ran = AtomicBool::new(false);
    let updated = ser.update_query_data(&2, |d| {
        ran.store(true, Ordering::SeqCst);
        d.items.clear();
    });
    assert!(updated.is_err() && ran.load(Ordering::SeqCst));
    assert_eq!(ser.state(&2).expect("a key").data(), Some(&bombed));
    let patched = ser.patch_query_data(&2, &patch);
    assert!(
        patched
            .as_ref()
            .is_err_and(|e| panicked_with(e, "Serialize")),
        "{patched:?}"
    );
    assert_eq!(ser.state(&2).expect("a key").data(), Some(&bombed));
    let trace = api.trace();
    assert_eq!(
        count(&trace, "ser(2)", |k| matches!(
            k,
            TraceKind::DataPanicked { .. }
        )),
        4
    );
    assert_eq!(
        count(&trace, "ser(2)", |k| matches!(k, TraceKind::Updated { .. })),
        0
    );
    assert_eq!(
        count(&trace, "ser(2)", |k| matches!(
            k,
            TraceKind::EntryRemoved { .. }
        )),
        0
    );
    assert_eq!(api.in_flight(), (0, 2));

    // Removal as usual: both handlers' `removed()` resolve, nothing is left.
    drop(sub);
    assert!(eq.remove(&1).expect("a key"));
    assert!(ser.remove(&2).expect("a key"));
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
    assert!(eq_removed.load(Ordering::SeqCst) && ser_removed.load(Ordering::SeqCst));
    assert_eq!((api.len(), api.in_flight()), (0, (0, 0)));
    let trace = api.trace();
    for key in ["eq(1)", "ser(2)"] {
        assert_eq!(
            count(&trace, key, |k| matches!(k, TraceKind::EntryRemoved { .. })),
            1
        );
        assert_eq!(
            count(&trace, key, |k| matches!(
                k,
                TraceKind::LifecycleEnded {
                    outcome: HandlerOutcome::Finished,
                    ..
                }
            )),
            1,
            "{key}"
        );
    }
}

/// Item 9: a panicking `update_query_data` recipe kept its partial change (after `clear()` the
/// data was gone) and returned no patches to undo it. An update is atomic: on a panic the data
/// is what it was, nobody is notified, and no `updated` is traced — through the runtime
/// (`update_query_data`, `update_cached_data_with_patches`) and through the core (whose caller
/// gets the panic back, the entry in place).
#[tokio::test(start_paused = true)]
async fn hardening_09_a_panicking_update_recipe_changes_nothing() {
    use futures::{FutureExt, StreamExt};
    use std::sync::Arc;

    fn clear_then_panic(list: &mut livecache::core::Draft<'_, Vec<u32>>) {
        list.clear();
        panic!("recipe bomb");
    }

    let api = livecache::Api::builder().build();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = Arc::new(std::sync::Mutex::new(Some(tx)));
    let list = api
        .query::<u32, Vec<u32>>("list")
        .query_fn(|n: u32| async move { Ok(vec![n]) })
        .on_cache_entry_added(move |_n, entry| {
            let tx = Arc::clone(&tx);
            async move {
                let Ok((entry, _)) = entry.data_loaded().await else {
                    return Ok(());
                };
                let result = entry.update_cached_data_with_patches(clear_then_panic);
                let data = entry.cache_entry().data().cloned();
                if let Some(tx) = tx.lock().ok().and_then(|mut tx| tx.take()) {
                    let _ = tx.send((result, data));
                }
                entry.removed().await;
                Ok(())
            }
        })
        .build()
        .expect("a new endpoint");
    list.upsert_query_data(1, vec![1, 2, 3]).expect("upserted");
    let (result, data) = tokio::time::timeout(std::time::Duration::from_secs(60), rx)
        .await
        .expect("the handler reports in time")
        .expect("the handler reports");
    assert!(
        matches!(&result, Err(livecache::UpdateError::RecipePanicked { message }) if message == "recipe bomb"),
        "{result:?}"
    );
    assert_eq!(data, Some(vec![1, 2, 3]));

    let sub = list.subscribe(1).expect("a key");
    let mut changes = Box::pin(sub.changes());
    let first = changes.next().await.expect("the current state");
    assert_eq!(first.data(), Some(&vec![1, 2, 3]));
    let updated = list.update_query_data(&1, clear_then_panic);
    assert!(
        matches!(&updated, Err(livecache::Error::Update(livecache::UpdateError::RecipePanicked { message })) if message == "recipe bomb"),
        "{:?}",
        updated.err()
    );
    let state = sub.state();
    assert_eq!(state.data(), Some(&vec![1, 2, 3]));
    assert_eq!(
        state.phase,
        Some(livecache::core::Phase::Loaded),
        "not even the phase moved"
    );
    tokio::task::yield_now().await;
    assert!(
        changes.next().now_or_never().is_none(),
        "no change was announced"
    );
    let trace = api.trace();
    assert_eq!(
        count(&trace, "list(1)", |k| matches!(
            k,
            TraceKind::Updated { .. }
        )),
        0
    );
    // The entry goes on: a later update applies and can be undone.
    let change = list
        .update_query_data(&1, |l| l.push(4))
        .expect("an update");
    assert_eq!(
        list.state(&1).expect("a key").data(),
        Some(&vec![1, 2, 3, 4])
    );
    change.undo().expect("undone");
    assert_eq!(list.state(&1).expect("a key").data(), Some(&vec![1, 2, 3]));

    // The core: the caller's panic comes back, the entry and its data stay as they were.
    let mut cache: Cache<Vec<u32>> = Cache::new(Default::default());
    let ep = cache
        .add_endpoint("list", EndpointConfig::default())
        .expect("a new name");
    let key = CacheKey::verbatim("list(1)");
    cache.upsert(0, ep, &key, vec![1, 2, 3]).expect("upserted");
    while cache.poll_effect().is_some() {}
    let trace_before = cache.trace_len();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        cache.update_query_data(1, &key, clear_then_panic)
    }));
    assert!(
        outcome.is_err(),
        "the recipe's panic goes on to the core's caller"
    );
    let entry = cache.entry(&key).map(|e| (e.data.cloned(), e.phase));
    assert_eq!(
        entry,
        Some((Some(vec![1, 2, 3]), livecache::core::Phase::Loaded))
    );
    assert_eq!(cache.trace_len(), trace_before, "nothing recorded");
    assert!(!cache.has_effects(), "no notification");
}
