//! Unit tests of details the model comparison does not observe: small public behaviours (texts,
//! conversions, predicates) and effects the harness only drains. Each pins a change that a
//! mutation of the code made without any other core test failing.

use std::time::Duration;

use crate::core::cache::{Cache, CacheConfig, Effect, EndpointId, LifetimeId, RequestId};
use crate::core::config::{EndpointConfig, Keep, Refetch};
use crate::core::key::CacheKey;
use crate::core::patch::{Patch, PatchSet};
use crate::core::status::{Phase, Status};
use crate::core::trace::HandlerOutcome;

fn effects(cache: &mut Cache<Vec<u8>>) -> Vec<Effect<Vec<u8>>> {
    std::iter::from_fn(|| cache.poll_effect()).collect()
}

#[test]
fn endpoint_names_and_emptiness_are_reported() {
    let mut cache: Cache<Vec<u8>> = Cache::new(CacheConfig::default());
    assert!(cache.is_empty());
    assert_eq!(cache.endpoint_name(EndpointId(0)), None);
    let a = cache.add_endpoint("alpha", EndpointConfig::default());
    let Ok(a) = a else {
        panic!("a new name is accepted");
    };
    assert_eq!(cache.endpoint_name(a), Some("alpha"));
    assert!(cache.is_empty());
    let key = CacheKey::verbatim("alpha(1)");
    assert_eq!(cache.upsert(0, a, &key, vec![1]), Ok(()));
    assert!(!cache.is_empty());
}

/// An endpoint's configuration reads back as given; an id the cache did not give out reads as
/// the default.
#[test]
fn an_endpoint_reads_back_its_configuration() {
    let mut cache: Cache<Vec<u8>> = Cache::new(CacheConfig::default());
    let config = EndpointConfig {
        keep: Some(Keep::seconds(7.0)),
        has_lifecycle: true,
        versions: Some(crate::core::config::Versioning::default()),
        stream_failure_rejects: true,
        ..EndpointConfig::default()
    };
    let Ok(ep) = cache.add_endpoint("configured", config) else {
        panic!("a new name is accepted");
    };
    let read = cache.endpoint(ep);
    assert_eq!(read.keep, config.keep);
    assert!(read.has_lifecycle && read.stream_failure_rejects);
    assert_eq!(read.versions, config.versions);
    let unknown = cache.endpoint(EndpointId(9));
    assert_eq!(unknown.keep, EndpointConfig::default().keep);
    assert!(!unknown.has_lifecycle && unknown.versions.is_none());
}

/// A patch on a Streaming entry is a visible change: subscribers are told (the data's version
/// moves on; a bump that left it equal would notify no one).
#[test]
fn a_patch_on_a_streaming_entry_notifies_its_subscribers() {
    let mut cache: Cache<Vec<u8>> = Cache::new(CacheConfig::default());
    let Ok(ep) = cache.add_endpoint("a", EndpointConfig::default()) else {
        panic!("a new name is accepted");
    };
    let key = CacheKey::verbatim("a(1)");
    assert_eq!(cache.upsert(0, ep, &key, vec![1]), Ok(()));
    assert_eq!(cache.stream_attached(1, LifetimeId(1), 0), Ok(()));
    assert_eq!(cache.entry(&key).map(|e| e.phase), Some(Phase::Streaming));
    effects(&mut cache);
    for (at, value) in [(2, 7), (3, 8)] {
        let patch: Patch = serde_json::from_value(serde_json::json!([
            { "op": "add", "path": "/-", "value": value }
        ]))
        .unwrap_or_else(|e| panic!("a valid patch: {e}"));
        assert_eq!(cache.patch_query_data(at, &key, &patch), Ok(()));
        assert_eq!(effects(&mut cache), [Effect::Notify { key: key.clone() }]);
    }
}

/// Data-loaded is resolved only for an endpoint with a lifecycle handler (nobody waits on
/// the others).
#[test]
fn data_loaded_is_resolved_only_for_endpoints_with_a_handler() {
    let mut cache: Cache<Vec<u8>> = Cache::new(CacheConfig::default());
    let with = cache.add_endpoint(
        "with",
        EndpointConfig {
            keep: None,
            has_lifecycle: true,
            ..EndpointConfig::default()
        },
    );
    let without = cache.add_endpoint("without", EndpointConfig::default());
    let (Ok(with), Ok(without)) = (with, without) else {
        panic!("two new names are accepted");
    };
    for (ep, name, handler) in [(with, "with(1)", true), (without, "without(1)", false)] {
        let key = CacheKey::verbatim(name);
        assert!(cache.subscribe(0, ep, &key, Refetch::IfMissing).is_ok());
        let request = effects(&mut cache).into_iter().find_map(|e| match e {
            Effect::StartRequest { request, .. } => Some(request),
            _ => None,
        });
        cache.fulfil(1, &key, request.unwrap_or(RequestId(0)), vec![1]);
        let resolved = effects(&mut cache)
            .iter()
            .any(|e| matches!(e, Effect::ResolveDataLoaded { .. }));
        assert_eq!(resolved, handler, "{name}");
    }
}

/// Attaching a stream moves a Loaded entry to Streaming; a Loading one has no data to stream
/// into, and an ended lifetime is not live.
#[test]
fn stream_attached_moves_loaded_to_streaming_and_refuses_the_rest() {
    use crate::core::cache::UpdateRefused;
    let mut cache: Cache<Vec<u8>> = Cache::new(CacheConfig::default());
    let Ok(ep) = cache.add_endpoint("a", EndpointConfig::default()) else {
        panic!("a new name is accepted");
    };
    let loading = CacheKey::verbatim("a(1)");
    assert!(cache.subscribe(0, ep, &loading, Refetch::IfMissing).is_ok());
    assert_eq!(
        cache.stream_attached(1, LifetimeId(1), 0),
        Err(UpdateRefused::NotLoaded)
    );
    assert_eq!(cache.entry(&loading).map(|e| e.phase), Some(Phase::Loading));
    let loaded = CacheKey::verbatim("a(2)");
    assert_eq!(cache.upsert(2, ep, &loaded, vec![1]), Ok(()));
    assert_eq!(cache.entry(&loaded).map(|e| e.phase), Some(Phase::Loaded));
    assert_eq!(cache.stream_attached(3, LifetimeId(2), 0), Ok(()));
    assert_eq!(
        cache.entry(&loaded).map(|e| e.phase),
        Some(Phase::Streaming)
    );
    assert!(cache.remove(4, &loaded));
    assert_eq!(
        cache.stream_attached(5, LifetimeId(2), 0),
        Err(UpdateRefused::NotLive)
    );
}

#[test]
fn keep_seconds_are_milliseconds_times_a_thousand() {
    assert_eq!(Keep::seconds(2.0), Keep::For(2_000));
    assert_eq!(Keep::seconds(0.5), Keep::For(500));
    assert_eq!(Keep::seconds(60.0), Keep::For(60_000));
}

#[test]
fn a_duration_refetches_data_at_least_that_old() {
    assert_eq!(
        Refetch::from(Duration::from_millis(1_500)),
        Refetch::IfOlderThan(1_500)
    );
    assert_eq!(
        Refetch::from(Duration::from_secs(3)),
        Refetch::IfOlderThan(3_000)
    );
}

#[test]
fn a_cache_key_equals_its_text() {
    let key = CacheKey::verbatim("a(1)");
    assert!(key == *"a(1)");
    assert!(key != *"a(2)");
    let (same, other) = (String::from("a(1)"), String::from("a(2)"));
    assert!(key == same);
    assert!(key != other);
}

#[test]
fn a_patch_set_is_empty_only_without_patches_either_way() {
    assert!(PatchSet::default().is_empty());
    let set = PatchSet::between(&serde_json::json!([1]), &serde_json::json!([1, 2]));
    assert!(!set.is_empty());
}

#[test]
fn statuses_and_handler_outcomes_read_as_words() {
    let statuses = [
        Status::Uninitialized,
        Status::Pending,
        Status::Fulfilled,
        Status::Rejected,
    ];
    let texts: Vec<String> = statuses.iter().map(ToString::to_string).collect();
    assert_eq!(texts, ["uninitialized", "pending", "fulfilled", "rejected"]);
    assert_eq!(HandlerOutcome::Finished.to_string(), "finished");
    let failed = HandlerOutcome::Failed {
        error: "refused".into(),
    };
    assert_eq!(failed.to_string(), "failed: refused");
    let panicked = HandlerOutcome::Panicked {
        message: "boom".into(),
    };
    assert_eq!(panicked.to_string(), "panicked: boom");
}

/// Notifications coalesce while undrained: a second change of the same key right after its
/// notification adds none, a change of another key adds its own.
#[test]
fn back_to_back_notifications_coalesce_per_key() {
    let mut cache: Cache<Vec<u8>> = Cache::new(CacheConfig::default());
    let Ok(ep) = cache.add_endpoint("a", EndpointConfig::default()) else {
        panic!("a new name is accepted");
    };
    let (one, two) = (CacheKey::verbatim("a(1)"), CacheKey::verbatim("a(2)"));
    assert!(cache.upsert(0, ep, &one, vec![1]).is_ok());
    assert!(cache.upsert(1, ep, &one, vec![2]).is_ok());
    assert!(cache.upsert(2, ep, &two, vec![3]).is_ok());
    assert_eq!(
        effects(&mut cache),
        [Effect::Notify { key: one }, Effect::Notify { key: two }]
    );
}

/// A batch inside a batch is part of it: the consecutive updates of one entry across both are
/// one `updated { count }` (R34), and after the outermost ends nothing folds any more.
#[test]
fn a_nested_batch_folds_with_its_outer_batch() {
    use crate::core::cache::Patches;
    use crate::core::trace::TraceKind;
    let mut cache: Cache<Vec<u8>> = Cache::new(CacheConfig::default());
    let Ok(ep) = cache.add_endpoint("a", EndpointConfig::default()) else {
        panic!("a new name is accepted");
    };
    let key = CacheKey::verbatim("a(1)");
    assert_eq!(cache.upsert(0, ep, &key, vec![]), Ok(()));
    let push = |cache: &mut Cache<Vec<u8>>, n: u8| {
        let pushed = cache.update_cached(0, LifetimeId(1), Patches::NotWanted, |d| d.push(n));
        assert!(pushed.is_ok());
    };
    push(&mut cache, 0); // Loaded → Streaming: outside any batch
    let before = cache.trace().len();
    cache.batch(|cache| {
        push(cache, 1);
        cache.batch(|cache| push(cache, 2));
        push(cache, 3);
    });
    push(&mut cache, 4); // after the batch: an event of its own
    let counts: Vec<u32> = cache.trace()[before..]
        .iter()
        .filter_map(|e| match e.kind {
            TraceKind::Updated { count, .. } => Some(count),
            _ => None,
        })
        .collect();
    assert_eq!(counts, [3, 1]);
}

#[test]
fn a_cache_key_reads_as_its_text() {
    let key = CacheKey::verbatim("a(1)");
    let text: &str = key.as_ref();
    assert_eq!(text, "a(1)");
}

#[test]
fn stream_statuses_say_whether_live_hold_their_texts_and_display() {
    use crate::core::stream_status::StreamStatus;
    let reconnecting = StreamStatus::Reconnecting {
        attempt: 2,
        since_ms: 30,
        last_error: "reset".into(),
    };
    let cases = [
        (StreamStatus::Idle, false, None, "idle"),
        (StreamStatus::Connecting, false, None, "connecting"),
        (StreamStatus::Live, true, None, "live"),
        (
            reconnecting,
            false,
            Some("reset"),
            "reconnecting (attempt 2, stale since 30 ms): reset",
        ),
        (
            StreamStatus::Resyncing { since_ms: 5 },
            false,
            None,
            "resyncing (stale since 5 ms)",
        ),
        (
            StreamStatus::Ended {
                reason: "bye".into(),
            },
            false,
            Some("bye"),
            "ended: bye",
        ),
        (
            StreamStatus::Failed {
                error: "boom".into(),
            },
            false,
            Some("boom"),
            "failed: boom",
        ),
    ];
    for (status, live, text, shown) in cases {
        assert_eq!(status.is_live(), live, "{status:?}");
        assert_eq!(status.text(), text, "{status:?}");
        assert_eq!(status.to_string(), shown);
    }
}

#[test]
fn versions_convert_parse_and_report_errors_exactly() {
    use crate::core::version::Version;
    assert_eq!(Version::pair(4, 5).parts(), (4, 5));
    assert_eq!(Version::from(7u64), Version::new(7));
    assert_eq!(Version::from(7u64).parts(), (0, 7));
    let error = "12-x".parse::<Version>().err().map(|e| e.to_string());
    assert_eq!(
        error.as_deref(),
        Some("not a version (n or major-minor): \"12-x\"")
    );
    // A long text is cut to 64 bytes, back to a character boundary: 31 two-byte characters.
    let long = format!("x{}", "é".repeat(40));
    let error = long.parse::<Version>().err().map(|e| e.to_string());
    let kept = format!("x{}", "é".repeat(31));
    assert_eq!(
        error,
        Some(format!("not a version (n or major-minor): {kept:?}"))
    );
    // JSON that is neither a number nor a text says what a version is.
    let wrong = serde_json::from_str::<Version>("true")
        .err()
        .map(|e| e.to_string());
    assert!(
        wrong
            .as_deref()
            .is_some_and(|e| e.contains("a version: a number, or the text \"major-minor\"")),
        "{wrong:?}"
    );
}

/// A connection configuration that cannot work is refused, each with its reason (R32).
#[test]
fn connection_configurations_that_cannot_work_are_refused() {
    use crate::core::connection::{Connection, ConnectionConfig, ConnectionConfigError};
    let ok = ConnectionConfig::default();
    assert_eq!(ok.validate(), Ok(()));
    let cases = [
        (
            ConnectionConfig {
                backoff_base_ms: 0,
                ..ok
            },
            ConnectionConfigError::ZeroBackoff,
        ),
        (
            ConnectionConfig {
                backoff_cap_ms: 10,
                ..ok
            },
            ConnectionConfigError::CapBelowBase,
        ),
        (
            ConnectionConfig {
                connect_timeout_ms: 0,
                ..ok
            },
            ConnectionConfigError::ZeroConnectTimeout,
        ),
        (
            ConnectionConfig {
                heartbeat_ms: Some(0),
                ..ok
            },
            ConnectionConfigError::ZeroHeartbeat,
        ),
        (
            ConnectionConfig {
                idle_timeout_ms: 10_000,
                ..ok
            },
            ConnectionConfigError::IdleTimeoutTooShort,
        ),
    ];
    for (config, error) in cases {
        assert_eq!(config.validate(), Err(error));
        assert!(Connection::<u8>::new(config).is_err());
    }
    // The bounds themselves are allowed: a cap equal to the base, no heartbeat.
    let flat = ConnectionConfig {
        backoff_cap_ms: ok.backoff_base_ms,
        heartbeat_ms: None,
        idle_timeout_ms: 1,
        ..ok
    };
    assert_eq!(flat.validate(), Ok(()));
}

#[test]
fn a_frame_names_its_topic() {
    use crate::core::connection::Frame;
    assert_eq!(Frame::Subscribe { topic: 3 }.topic(), Some(&3));
    assert_eq!(Frame::Unsubscribe { topic: 4 }.topic(), Some(&4));
    assert_eq!(Frame::<u8>::Ping.topic(), None);
}

/// A failed stream's status text counts against the trace's byte budget like any other text.
#[test]
fn a_failed_stream_status_counts_its_text() {
    use crate::core::stream_status::StreamStatus;
    use crate::core::trace::TraceKind;
    let error = "connection reset by peer".to_owned();
    let failed = TraceKind::StreamStatusChanged {
        lifetime: 1,
        status: StreamStatus::Failed {
            error: error.clone(),
        },
    };
    assert_eq!(failed.text_len(), error.len());
    let live = TraceKind::StreamStatusChanged {
        lifetime: 1,
        status: StreamStatus::Live,
    };
    assert_eq!(live.text_len(), 0);
}

/// An update event that stands for one update leaves its count out of the JSON, and reads back
/// as one; a batch's count is written and read back.
#[test]
fn an_update_counts_one_unless_written() {
    use crate::core::trace::{TraceKind, UpdateSource};
    for count in [1, 3] {
        let kind = TraceKind::Updated {
            source: UpdateSource::Lifecycle,
            patches: None,
            count,
        };
        let json = serde_json::to_value(&kind).expect("serialisable");
        assert_eq!(json.get("count").is_some(), count != 1, "{json}");
        let back: TraceKind = serde_json::from_value(json).expect("readable");
        assert_eq!(back, kind);
    }
}

/// Each request reason reads as its word, as it is serialised.
#[test]
fn request_reasons_read_as_words() {
    use crate::core::trace::RequestReason;
    let reasons = [
        (RequestReason::Load, "load"),
        (RequestReason::Mount, "mount"),
        (RequestReason::Refetch, "refetch"),
        (RequestReason::Resync, "resync"),
        (RequestReason::Poll, "poll"),
        (RequestReason::Invalidation, "invalidation"),
    ];
    for (reason, word) in reasons {
        assert_eq!(reason.to_string(), word);
        assert_eq!(serde_json::to_value(reason).ok(), Some(word.into()));
    }
}

/// An update event reads as its source, with its count only for a batch; each live queue reads
/// as its name.
#[test]
fn update_events_and_queues_read_as_words() {
    use crate::core::trace::{Queue, TraceKind, UpdateSource};
    let update = |count| TraceKind::Updated {
        source: UpdateSource::Lifecycle,
        patches: None,
        count,
    };
    assert_eq!(update(1).to_string(), "updated source=lifecycle");
    assert_eq!(update(3).to_string(), "updated source=lifecycle count=3");
    let queues = [
        (Queue::Held, "held"),
        (Queue::Rebase, "rebase"),
        (Queue::Buffered, "buffered"),
    ];
    for (queue, word) in queues {
        assert_eq!(queue.to_string(), word);
        assert_eq!(serde_json::to_value(queue).ok(), Some(word.into()));
    }
}

/// A cache with one entry of an endpoint with a handler (lifetime 1), its stream attached at 1 ms.
fn streaming_room() -> (Cache<Vec<u8>>, CacheKey) {
    let mut cache: Cache<Vec<u8>> = Cache::new(CacheConfig::default());
    let config = EndpointConfig {
        has_lifecycle: true,
        ..EndpointConfig::default()
    };
    let Ok(ep) = cache.add_endpoint("room", config) else {
        panic!("a new name is accepted");
    };
    let key = CacheKey::verbatim("room(1)");
    assert_eq!(cache.upsert(0, ep, &key, vec![1]), Ok(()));
    assert_eq!(cache.stream_attached(1, LifetimeId(1), 0), Ok(()));
    (cache, key)
}

/// A stream whose apply function panicked leaves its entry `Failed`, saying why.
#[test]
fn a_stream_whose_apply_panicked_leaves_its_entry_failed() {
    use crate::core::attachment::{StreamEnd, StreamEndReason};
    use crate::core::stream_status::StreamStatus;
    let (mut cache, key) = streaming_room();
    let end = StreamEnd {
        reason: StreamEndReason::ApplyPanicked("index out of bounds".into()),
        applied: 3,
        skipped: 0,
    };
    cache.stream_ended(2, &key, LifetimeId(1), &end);
    let stream = cache.entry(&key).map(|e| e.stream);
    let Some(StreamStatus::Failed { error }) = stream else {
        panic!("the entry's stream failed: {stream:?}");
    };
    assert!(error.contains("index out of bounds"), "{error}");
}

/// An update whose notification is handed to the caller is not also queued as an effect.
#[test]
fn a_deferred_notification_is_not_also_queued() {
    use crate::core::cache::Notify;
    let (mut cache, _) = streaming_room();
    let Some(place) = cache.lifetime_place(LifetimeId(1)) else {
        panic!("the lifetime is live");
    };
    let _ = effects(&mut cache);
    let deferred = cache.update_cached_deferring_notify(2, place, |d| d.push(2));
    assert_eq!(deferred, Ok(Notify::Caller));
    let queued = effects(&mut cache);
    assert!(
        !queued.iter().any(|e| matches!(e, Effect::Notify { .. })),
        "{queued:?}"
    );
}

/// A draft records patches exactly when the update wants them (the runtime's typed recipe asks,
/// to record through the typed layer), and its recorder reads as where it is.
#[test]
fn a_draft_records_only_when_patches_are_wanted() {
    use crate::core::cache::Patches;
    let mut cache: Cache<Vec<u8>> = Cache::new(CacheConfig::default());
    let Ok(ep) = cache.add_endpoint("a", EndpointConfig::default()) else {
        panic!("a new name is accepted");
    };
    let key = CacheKey::verbatim("a(1)");
    assert_eq!(cache.upsert(0, ep, &key, vec![]), Ok(()));
    for (patches, wanted) in [(Patches::NotWanted, false), (Patches::Wanted, true)] {
        let mut seen = None;
        let updated = cache.update_cached(0, LifetimeId(1), patches, |d| {
            seen = Some(d.is_recording());
            d.push(1);
        });
        assert!(updated.is_ok());
        assert_eq!(seen, Some(wanted), "patches wanted: {wanted}");
    }
    let mut described = String::new();
    let updated = cache.update_cached(0, LifetimeId(1), Patches::Wanted, |d| {
        described = format!("{d:?}");
        d.push(2);
    });
    assert!(updated.is_ok());
    assert!(described.contains("Recorder"), "{described}");
}

/// Consecutive updates in a batch fold into one event only while they come from the same
/// source: a change from outside between a handler's updates is an event of its own (R34).
#[test]
fn a_batch_folds_updates_of_one_source_only() {
    use crate::core::cache::Patches;
    use crate::core::trace::{TraceKind, UpdateSource};
    let mut cache: Cache<Vec<u8>> = Cache::new(CacheConfig::default());
    let Ok(ep) = cache.add_endpoint("a", EndpointConfig::default()) else {
        panic!("a new name is accepted");
    };
    let key = CacheKey::verbatim("a(1)");
    assert_eq!(cache.upsert(0, ep, &key, vec![]), Ok(()));
    let before = cache.trace().len();
    cache.batch(|cache| {
        let handler = |cache: &mut Cache<Vec<u8>>, n: u8| {
            let pushed = cache.update_cached(0, LifetimeId(1), Patches::NotWanted, |d| d.push(n));
            assert!(pushed.is_ok());
        };
        let outside = |cache: &mut Cache<Vec<u8>>, n: u8| {
            assert!(cache.update_query_data(0, &key, |d| d.push(n)).is_ok());
        };
        handler(cache, 1);
        outside(cache, 2);
        handler(cache, 3);
        handler(cache, 4);
        outside(cache, 5);
    });
    let updates: Vec<(UpdateSource, u32)> = cache.trace()[before..]
        .iter()
        .filter_map(|e| match e.kind {
            TraceKind::Updated { source, count, .. } => Some((source, count)),
            _ => None,
        })
        .collect();
    let (handler, outside) = (UpdateSource::Lifecycle, UpdateSource::UpdateQueryData);
    assert_eq!(
        updates,
        [(handler, 1), (outside, 1), (handler, 2), (outside, 1)]
    );
}

/// A change to a map is recorded at its key, whether the key is a string, a number or a
/// boolean (written as text, as serde_json writes map keys): only the changed value is written
/// as JSON, never the whole map (whose other values here cannot be), which a key that cannot be
/// a path token falls back to diffing.
#[test]
fn a_map_change_is_recorded_at_its_key_whatever_the_key_type() {
    use std::collections::BTreeMap;
    /// A value with no JSON form when it is 255.
    #[derive(Clone, Debug, PartialEq, serde::Deserialize)]
    struct Cell(u8);
    impl serde::Serialize for Cell {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            match self.0 {
                255 => Err(serde::ser::Error::custom("no JSON form")),
                n => s.serialize_u8(n),
            }
        }
    }
    fn recorded<K>(key: K, other: K, token: &str)
    where
        K: serde::Serialize + serde::de::DeserializeOwned + Ord + Clone + Send + Sync + 'static,
    {
        let mut cache: Cache<BTreeMap<K, Cell>> = Cache::new(CacheConfig::default());
        let Ok(ep) = cache.add_endpoint("a", EndpointConfig::default()) else {
            panic!("a new name is accepted");
        };
        let at = CacheKey::verbatim("a(1)");
        let before = BTreeMap::from([(key.clone(), Cell(1)), (other, Cell(255))]);
        assert_eq!(cache.upsert(0, ep, &at, before), Ok(()));
        let set = cache.update_query_data(0, &at, |map| {
            map.insert(key.clone(), Cell(2));
        });
        let expected =
            serde_json::json!([{ "op": "replace", "path": format!("/{token}"), "value": 2 }]);
        let patches = set
            .ok()
            .and_then(|set| serde_json::to_value(&set.patches).ok());
        assert_eq!(patches, Some(expected), "key {token}");
        let set = cache.update_query_data(0, &at, |map| {
            map.remove(&key);
        });
        let expected = serde_json::json!([{ "op": "remove", "path": format!("/{token}") }]);
        let patches = set
            .ok()
            .and_then(|set| serde_json::to_value(&set.patches).ok());
        assert_eq!(patches, Some(expected), "key {token}");
    }
    recorded(String::from("k"), String::from("z"), "k");
    recorded(7_u32, 9, "7");
    recorded(true, false, "true");
}

/// Inserting into and removing from a list is recorded at its index, writing only the value
/// inserted or removed as JSON (the list's other values here have none); an update that wants
/// no patches writes nothing as JSON at all.
#[test]
fn a_list_change_is_recorded_at_its_index_and_a_plain_one_writes_no_json() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static WRITTEN: AtomicUsize = AtomicUsize::new(0);
    /// A value with no JSON form when it is 255, counting every time it is written.
    #[derive(Clone, Debug, PartialEq, serde::Deserialize)]
    struct Cell(u8);
    impl serde::Serialize for Cell {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            WRITTEN.fetch_add(1, Ordering::SeqCst);
            match self.0 {
                255 => Err(serde::ser::Error::custom("no JSON form")),
                n => s.serialize_u8(n),
            }
        }
    }
    let mut cache: Cache<Vec<Cell>> = Cache::new(CacheConfig::default());
    let Ok(ep) = cache.add_endpoint("a", EndpointConfig::default()) else {
        panic!("a new name is accepted");
    };
    let at = CacheKey::verbatim("a(1)");
    assert_eq!(cache.upsert(0, ep, &at, vec![Cell(255), Cell(1)]), Ok(()));
    let patches =
        |set: Result<PatchSet, _>| set.ok().and_then(|s| serde_json::to_value(&s.patches).ok());
    let set = cache.update_query_data(0, &at, |list| list.insert(2, Cell(2)));
    let expected = serde_json::json!([{ "op": "add", "path": "/2", "value": 2 }]);
    assert_eq!(patches(set), Some(expected), "an insert at the end");
    let set = cache.update_query_data(0, &at, |list| {
        list.remove(1);
    });
    let expected = serde_json::json!([{ "op": "remove", "path": "/1" }]);
    assert_eq!(patches(set), Some(expected), "a removal");
    WRITTEN.store(0, Ordering::SeqCst);
    let plain = cache.update_cached(
        0,
        LifetimeId(1),
        crate::core::cache::Patches::NotWanted,
        |list| {
            list.insert(1, Cell(3));
            list.remove(1);
        },
    );
    assert!(plain.is_ok());
    assert_eq!(
        WRITTEN.load(Ordering::SeqCst),
        0,
        "a plain update writes no JSON"
    );
}

/// Updates fold into one event only for one key at one time: in a batch, updates of two
/// entries at the same millisecond stay events of their own (R34).
#[test]
fn a_batch_folds_updates_of_one_key_only() {
    use crate::core::cache::Patches;
    use crate::core::trace::TraceKind;
    let mut cache: Cache<Vec<u8>> = Cache::new(CacheConfig::default());
    let Ok(ep) = cache.add_endpoint("a", EndpointConfig::default()) else {
        panic!("a new name is accepted");
    };
    let (a, b) = (CacheKey::verbatim("a(1)"), CacheKey::verbatim("a(2)"));
    assert_eq!(cache.upsert(0, ep, &a, vec![]), Ok(()));
    assert_eq!(cache.upsert(0, ep, &b, vec![]), Ok(()));
    let before = cache.trace().len();
    cache.batch(|cache| {
        for lifetime in [1, 2, 2, 1] {
            let pushed =
                cache.update_cached(0, LifetimeId(lifetime), Patches::NotWanted, |d| d.push(0));
            assert!(pushed.is_ok());
        }
    });
    let updates: Vec<(String, u32)> = cache.trace()[before..]
        .iter()
        .filter_map(|e| match e.kind {
            TraceKind::Updated { count, .. } => Some((e.key.to_string(), count)),
            _ => None,
        })
        .collect();
    let expected = [("a(1)", 1), ("a(2)", 2), ("a(1)", 1)].map(|(k, n)| (k.to_owned(), n));
    assert_eq!(updates, expected);
}

/// Extending a list through the draft appends every item, recorded as one `add` each at the
/// end.
#[test]
fn extending_a_list_appends_each_item() {
    let mut cache: Cache<Vec<u8>> = Cache::new(CacheConfig::default());
    let Ok(ep) = cache.add_endpoint("a", EndpointConfig::default()) else {
        panic!("a new name is accepted");
    };
    let at = CacheKey::verbatim("a(1)");
    assert_eq!(cache.upsert(0, ep, &at, vec![1]), Ok(()));
    let set = cache.update_query_data(0, &at, |list| list.extend([2, 3]));
    let expected = serde_json::json!([
        { "op": "add", "path": "/1", "value": 2 },
        { "op": "add", "path": "/2", "value": 3 },
    ]);
    let patches = set.ok().and_then(|s| serde_json::to_value(&s.patches).ok());
    assert_eq!(patches, Some(expected));
    let data = cache.entry(&at).and_then(|e| e.data.cloned());
    assert_eq!(data, Some(vec![1, 2, 3]));
}
