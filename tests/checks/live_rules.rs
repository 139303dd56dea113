//! One or more trace tests per live-entry rule of `docs/spec.md` (R24–R30, R33, R34), driven through
//! the sans-IO core.
//!
//! Each test plays a short scenario on a chat room whose messages carry versions (message `n`
//! appends `"m{n}"`, so a snapshot at watermark `w` is `m1..m{w}` and the data shows at a glance
//! which messages were applied, and in which order), asserts what the rule states on the data,
//! the watermark, the stream status, each message's [`Delivery`] and the drained effects, and
//! then snapshots the whole trace (`tests/it/snapshots/it__live_rules__rNN_*.snap`). The
//! snapshots were checked by hand against the rules; a change to one is a change of behaviour and
//! needs the same review.
//!
//! The scenarios drive the core the way the runtime's stream task does: the lifecycle's stream
//! attaches once the entry has data (`stream_attached`), each message goes in with
//! `stream_message`, and the source's health with `stream_status` / `stream_ended`.

use livecache::core::{
    Attachment, Cache, CacheConfig, Delivery, Draft, Effect, EndpointConfig, HandlerId,
    HandlerOutcome, Keep, LifetimeId, Patches, Recording, RequestEvent, RequestId, RequestReason,
    RestartRefused, Resync, StreamEnd, StreamEndReason, StreamStatus, SubscriptionId,
    UpdateRefused, Version, Versioning,
};
use livecache::core::{CacheKey, Refetch, TraceKind, default_key};

type Data = Vec<String>;
type Core = Cache<Data>;

/// The lifetime of the chat room's first (and only) entry in every scenario.
const ROOM: LifetimeId = LifetimeId(1);

/// A core recording events with patches, with the default keep time.
fn new_cache() -> Core {
    Cache::new(CacheConfig {
        keep: Keep::default(),
        recording: Recording::EventsWithPatches,
    })
}

/// A versioned endpoint with an `on_cache_entry_added` handler (its stream).
fn versioned(contiguous: bool, resync: Resync, max_queued: usize) -> EndpointConfig {
    EndpointConfig {
        keep: None,
        has_lifecycle: true,
        versions: Some(Versioning {
            contiguous,
            resync,
            max_queued,
        }),
        stream_failure_rejects: false,
        retry: None,
    }
}

/// An endpoint with a handler and no versions, as in v1.
fn unversioned() -> EndpointConfig {
    EndpointConfig {
        keep: None,
        has_lifecycle: true,
        versions: None,
        stream_failure_rejects: false,
        retry: None,
    }
}

fn key(endpoint: &str, arg: &str) -> CacheKey {
    default_key(endpoint, &arg).expect("a string argument always serialises")
}

fn room() -> CacheKey {
    key("chat", "redux")
}

/// The room's messages `m1..=m{n}`: a snapshot at watermark `n`.
fn up_to(n: u64) -> Data {
    (1..=n).map(|i| format!("m{i}")).collect()
}

fn msgs(items: &[&str]) -> Data {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// The recipe of message `text`: append it.
fn push(text: String) -> impl Fn(&mut Draft<'_, Data>) + Send + Sync + 'static {
    move |d: &mut Draft<'_, Data>| d.push(text.clone())
}

/// Message `n` (`"m{n}"`, version `n`) from the room's stream, at `at`.
fn send(cache: &mut Core, at: u64, n: u64) -> Result<Delivery, UpdateRefused> {
    cache.stream_message(at, ROOM, Version::new(n), push(format!("m{n}")))
}

/// The effects queued, request events for the lifecycle aside (R29's, pinned in
/// `r29_…` tests; here they would only repeat each request's start and end).
fn drain(cache: &mut Core) -> Vec<Effect<Data>> {
    std::iter::from_fn(|| cache.poll_effect())
        .filter(|e| !matches!(e, Effect::RequestEvent { .. }))
        .collect()
}

fn notify(key: &CacheKey) -> Effect<Data> {
    Effect::Notify { key: key.clone() }
}

fn start_request(key: &CacheKey, request: u64) -> Effect<Data> {
    Effect::StartRequest {
        key: key.clone(),
        request: RequestId(request),
    }
}

fn start_lifecycle(key: &CacheKey, lifetime: u64) -> Effect<Data> {
    Effect::StartLifecycle {
        key: key.clone(),
        lifetime: LifetimeId(lifetime),
    }
}

fn resume(key: &CacheKey, from: u64) -> Effect<Data> {
    Effect::Resume {
        key: key.clone(),
        lifetime: ROOM,
        from: Some(Version::new(from)),
    }
}

fn data(cache: &Core, key: &CacheKey) -> Option<Data> {
    cache.entry(key).and_then(|e| e.data.cloned())
}

fn watermark(cache: &Core, key: &CacheKey) -> Option<Version> {
    cache.entry(key).and_then(|e| e.watermark)
}

fn stream(cache: &Core, key: &CacheKey) -> StreamStatus {
    cache.entry(key).expect("the entry is live").stream
}

fn v(n: u64) -> Option<Version> {
    Some(Version::new(n))
}

/// The event names (`entry_added`, `stream_held`, …) recorded for `key`, in order.
fn names(cache: &Core, key: &CacheKey) -> Vec<String> {
    cache
        .trace()
        .iter()
        .filter(|e| e.key == key.as_str())
        .map(|e| {
            let json = serde_json::to_value(&e.kind).expect("trace kinds serialise");
            json["event"]
                .as_str()
                .expect("tagged with `event`")
                .to_owned()
        })
        .collect()
}

/// The event names recorded after the first `from` events.
fn names_since(cache: &Core, key: &CacheKey, from: usize) -> Vec<String> {
    names(cache, key).split_off(from)
}

fn count(cache: &Core, name: &str) -> usize {
    cache
        .trace()
        .iter()
        .filter(|e| serde_json::to_value(&e.kind).expect("serialises")["event"] == name)
        .count()
}

/// The room on an endpoint `config`: subscribed at 0, its first request fulfilled at 100 with
/// the snapshot `m1..m{w}` at watermark `w`, its stream attached at 100 (`Live`). The effects
/// of the set-up are checked and drained.
fn live_room(config: EndpointConfig, w: u64) -> (Core, CacheKey, SubscriptionId) {
    let mut cache = new_cache();
    let chat = cache
        .add_endpoint("chat", config)
        .expect("endpoint names are distinct");
    let room = room();
    let sub = cache
        .subscribe(0, chat, &room, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    assert_eq!(stream(&cache, &room), StreamStatus::Idle);
    cache.fulfil_versioned(100, &room, RequestId(1), up_to(w), Version::new(w));
    cache
        .stream_attached(100, ROOM, 0)
        .expect("the entry has data");
    let effects = drain(&mut cache);
    assert_eq!(
        effects[..2],
        [start_lifecycle(&room, 1), start_request(&room, 1)]
    );
    assert_eq!(effects.last(), Some(&notify(&room)));
    assert_eq!(data(&cache, &room), Some(up_to(w)));
    assert_eq!(watermark(&cache, &room), v(w));
    assert_eq!(stream(&cache, &room), StreamStatus::Live);
    (cache, room, sub)
}

// ===== R24: watermarks; stale and duplicate messages =====

#[test]
fn r24_watermark_set_by_snapshots_and_advanced_by_each_applied_message() {
    let config = versioned(false, Resync::Refetch, 10_000);
    let (mut cache, room, _) = live_room(config, 3);

    // each applied message advances the watermark to its version and notifies
    assert_eq!(send(&mut cache, 200, 4), Ok(Delivery::Applied));
    assert_eq!(watermark(&cache, &room), v(4));
    assert_eq!(drain(&mut cache), [notify(&room)]);
    assert_eq!(send(&mut cache, 300, 5), Ok(Delivery::Applied));
    assert_eq!(watermark(&cache, &room), v(5));
    assert_eq!(drain(&mut cache), [notify(&room)]);
    // not contiguous: a message further ahead applies too
    assert_eq!(send(&mut cache, 400, 8), Ok(Delivery::Applied));
    assert_eq!(watermark(&cache, &room), v(8));
    assert_eq!(
        data(&cache, &room),
        Some(msgs(&["m1", "m2", "m3", "m4", "m5", "m8"]))
    );
    assert_eq!(drain(&mut cache), [notify(&room)]);

    // an upsert that carries a watermark sets it
    let chat = cache.entry(&room).expect("live").endpoint;
    cache
        .upsert_versioned(500, chat, &room, up_to(10), Version::new(10))
        .expect("the key is this endpoint's");
    assert_eq!(watermark(&cache, &room), v(10));
    assert_eq!(data(&cache, &room), Some(up_to(10)));
    assert_eq!(drain(&mut cache), [notify(&room)]);
    assert_eq!(send(&mut cache, 600, 10), Ok(Delivery::Stale));
    assert_eq!(send(&mut cache, 700, 11), Ok(Delivery::Applied));
    assert_eq!(data(&cache, &room), Some(up_to(11)));
    assert_eq!(watermark(&cache, &room), v(11));
    assert_eq!(stream(&cache, &room), StreamStatus::Live);

    assert_eq!(count(&cache, "watermark_set"), 2);
    assert_eq!(count(&cache, "stream_stale"), 1);
    let entry = cache.entry(&room).expect("live");
    assert_eq!(entry.stale_messages, 1, "the stale message is counted");
    insta::assert_yaml_snapshot!(
        "r24_watermark_set_by_snapshots_and_advanced_by_each_applied_message",
        cache.trace()
    );
}

#[test]
fn r24_stale_and_duplicate_messages_are_dropped_traced_and_notify_no_one() {
    let config = versioned(false, Resync::Refetch, 10_000);
    let (mut cache, room, _) = live_room(config, 3);

    // below the watermark (stale) and at it (a duplicate of what the snapshot holds)
    let traced = cache.trace().len();
    assert_eq!(send(&mut cache, 200, 2), Ok(Delivery::Stale));
    assert_eq!(send(&mut cache, 210, 3), Ok(Delivery::Stale));
    assert_eq!(data(&cache, &room), Some(up_to(3)));
    assert_eq!(watermark(&cache, &room), v(3));
    assert_eq!(drain(&mut cache), [], "a dropped message notifies no one");
    assert_eq!(cache.trace().len(), traced + 2);

    // applied once; sent again, it is a duplicate
    assert_eq!(send(&mut cache, 300, 4), Ok(Delivery::Applied));
    assert_eq!(drain(&mut cache), [notify(&room)]);
    assert_eq!(send(&mut cache, 310, 4), Ok(Delivery::Stale));
    assert_eq!(send(&mut cache, 320, 1), Ok(Delivery::Stale));
    assert_eq!(drain(&mut cache), []);
    assert_eq!(data(&cache, &room), Some(up_to(4)));
    assert_eq!(watermark(&cache, &room), v(4));
    assert_eq!(stream(&cache, &room), StreamStatus::Live);

    assert_eq!(
        names_since(&cache, &room, traced),
        [
            "stream_stale",
            "stream_stale",
            "updated",
            "stream_stale",
            "stream_stale"
        ]
    );
    assert_eq!(count(&cache, "updated"), 1);
    insta::assert_yaml_snapshot!(
        "r24_stale_and_duplicate_messages_are_dropped_traced_and_notify_no_one",
        cache.trace()
    );
}

#[test]
fn r24_a_message_equal_to_one_held_is_a_duplicate() {
    let config = versioned(true, Resync::Resume, 10_000);
    let (mut cache, room, _) = live_room(config, 3);

    // 6 is past a gap (4 and 5 are missing): held
    assert_eq!(send(&mut cache, 200, 6), Ok(Delivery::Held));
    assert_eq!(
        drain(&mut cache),
        [resume(&room, 4), notify(&room)],
        "the resync asks the source to replay from 4"
    );
    // 6 again: dropped, nothing queued, nothing changed
    let traced = cache.trace().len();
    assert_eq!(send(&mut cache, 210, 6), Ok(Delivery::Stale));
    assert_eq!(drain(&mut cache), []);
    assert_eq!(names_since(&cache, &room, traced), ["stream_stale"]);
    assert_eq!(data(&cache, &room), Some(up_to(3)));
    assert_eq!(watermark(&cache, &room), v(3));
    assert_eq!(
        stream(&cache, &room),
        StreamStatus::Resyncing { since_ms: 200 }
    );

    // the gap closes: the one held 6 is applied once
    assert_eq!(send(&mut cache, 300, 4), Ok(Delivery::Applied));
    assert_eq!(send(&mut cache, 310, 5), Ok(Delivery::Applied));
    assert_eq!(data(&cache, &room), Some(up_to(6)));
    assert_eq!(watermark(&cache, &room), v(6));
    assert_eq!(stream(&cache, &room), StreamStatus::Live);
    assert_eq!(count(&cache, "updated"), 3);
    insta::assert_yaml_snapshot!(
        "r24_a_message_equal_to_one_held_is_a_duplicate",
        cache.trace()
    );
}

#[test]
fn r24_without_a_watermark_any_version_applies_and_sets_it() {
    let mut cache = new_cache();
    let chat = cache
        .add_endpoint("chat", versioned(true, Resync::Refetch, 10_000))
        .expect("endpoint names are distinct");
    let room = room();
    cache
        .subscribe(0, chat, &room, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    // a plain fulfil carries no watermark
    cache.fulfil(100, &room, RequestId(1), msgs(&["hello"]));
    cache
        .stream_attached(100, ROOM, 0)
        .expect("the entry has data");
    drain(&mut cache);
    assert_eq!(watermark(&cache, &room), None);

    // even on a contiguous endpoint: no watermark, no gap; the first message sets it
    assert_eq!(send(&mut cache, 200, 42), Ok(Delivery::Applied));
    assert_eq!(watermark(&cache, &room), v(42));
    assert_eq!(drain(&mut cache), [notify(&room)]);
    assert_eq!(send(&mut cache, 300, 43), Ok(Delivery::Applied));
    assert_eq!(send(&mut cache, 400, 41), Ok(Delivery::Stale));
    assert_eq!(data(&cache, &room), Some(msgs(&["hello", "m42", "m43"])));
    assert_eq!(watermark(&cache, &room), v(43));
    assert_eq!(stream(&cache, &room), StreamStatus::Live);
    assert_eq!(count(&cache, "watermark_set"), 0);
    assert_eq!(count(&cache, "resync_started"), 0);
    insta::assert_yaml_snapshot!(
        "r24_without_a_watermark_any_version_applies_and_sets_it",
        cache.trace()
    );
}

#[test]
fn r24_pair_versions_order_by_major_then_minor() {
    let mut cache = new_cache();
    let chat = cache
        .add_endpoint("chat", versioned(false, Resync::Refetch, 10_000))
        .expect("endpoint names are distinct");
    let room = room();
    // a Redis stream: ids `ms-seq`
    cache
        .upsert_versioned(0, chat, &room, msgs(&["a"]), Version::pair(1_700, 3))
        .expect("the key is this endpoint's");
    cache
        .stream_attached(0, ROOM, 0)
        .expect("the entry has data");
    drain(&mut cache);
    let mut send_id = |at: u64, ms: u64, seq: u64, text: &str| {
        cache.stream_message(at, ROOM, Version::pair(ms, seq), push(text.to_owned()))
    };
    assert_eq!(send_id(100, 1_700, 2, "old"), Ok(Delivery::Stale));
    assert_eq!(send_id(200, 1_700, 4, "b"), Ok(Delivery::Applied));
    assert_eq!(send_id(300, 1_701, 0, "c"), Ok(Delivery::Applied));
    assert_eq!(send_id(400, 1_700, 9, "late"), Ok(Delivery::Stale));
    assert_eq!(data(&cache, &room), Some(msgs(&["a", "b", "c"])));
    assert_eq!(watermark(&cache, &room), Some(Version::pair(1_701, 0)));
    insta::assert_yaml_snapshot!("r24_pair_versions_order_by_major_then_minor", cache.trace());
}

#[test]
fn r24_unversioned_endpoint_refuses_versioned_messages_and_keeps_v1_behaviour() {
    let mut cache = new_cache();
    let chat = cache
        .add_endpoint("chat", unversioned())
        .expect("endpoint names are distinct");
    let room = room();
    cache
        .subscribe(0, chat, &room, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    cache.fulfil(100, &room, RequestId(1), up_to(1));
    cache
        .stream_attached(100, ROOM, 0)
        .expect("the entry has data");
    drain(&mut cache);

    let traced = cache.trace().len();
    assert_eq!(send(&mut cache, 200, 2), Err(UpdateRefused::NotVersioned));
    assert_eq!(data(&cache, &room), Some(up_to(1)));
    assert_eq!(drain(&mut cache), []);
    assert_eq!(
        cache.trace().len(),
        traced,
        "a refused message records nothing"
    );

    // v1 updates apply as before, without a watermark
    cache
        .update_cached(300, ROOM, Patches::NotWanted, |d| d.push("m2".into()))
        .expect("the entry has data");
    assert_eq!(data(&cache, &room), Some(up_to(2)));
    assert_eq!(drain(&mut cache), [notify(&room)]);
    // a watermark given to an unversioned endpoint is not kept: the snapshot wins, as in v1
    cache
        .upsert_versioned(400, chat, &room, msgs(&["x"]), Version::new(9))
        .expect("the key is this endpoint's");
    assert_eq!(data(&cache, &room), Some(msgs(&["x"])));
    assert_eq!(watermark(&cache, &room), None);
    assert_eq!(stream(&cache, &room), StreamStatus::Live);
    assert_eq!(count(&cache, "watermark_set"), 0);
    insta::assert_yaml_snapshot!(
        "r24_unversioned_endpoint_refuses_versioned_messages_and_keeps_v1_behaviour",
        cache.trace()
    );
}

#[test]
fn r24_messages_are_refused_before_data_and_after_the_lifetime_ended() {
    let mut cache = new_cache();
    let chat = cache
        .add_endpoint("chat", versioned(false, Resync::Refetch, 10_000))
        .expect("endpoint names are distinct");
    let room = room();
    cache
        .subscribe(0, chat, &room, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    assert_eq!(send(&mut cache, 50, 1), Err(UpdateRefused::NotLoaded));
    cache.fulfil_versioned(100, &room, RequestId(1), up_to(1), Version::new(1));
    assert_eq!(send(&mut cache, 150, 2), Ok(Delivery::Applied));
    assert!(cache.remove(200, &room));
    assert_eq!(send(&mut cache, 250, 3), Err(UpdateRefused::NotLive));
    // a new lifetime of the key: the old lifetime's messages still go nowhere
    cache
        .upsert_versioned(300, chat, &room, up_to(2), Version::new(2))
        .expect("the key is this endpoint's");
    assert_eq!(cache.entry(&room).map(|e| e.lifetime), Some(LifetimeId(2)));
    assert_eq!(send(&mut cache, 350, 3), Err(UpdateRefused::NotLive));
    assert_eq!(data(&cache, &room), Some(up_to(2)));
    assert_eq!(count(&cache, "updated"), 1);
    insta::assert_yaml_snapshot!(
        "r24_messages_are_refused_before_data_and_after_the_lifetime_ended",
        cache.trace()
    );
}

// ===== R25: the pre-load buffer in version order =====

/// Messages `arrived` (versions, in arrival order) held by an attachment before the first data;
/// the snapshot at `w` lands; the held messages come back in version order, each applied with
/// `stream_message`. Returns each one's version and delivery.
fn preload(
    cache: &mut Core,
    room: &CacheKey,
    arrived: &[u64],
    w: u64,
) -> Vec<(u64, Result<Delivery, UpdateRefused>)> {
    let mut attachment: Attachment<u64> = Attachment::before_data(ROOM);
    for &n in arrived {
        assert_eq!(attachment.message(n), livecache::core::Received::Held);
    }
    cache.fulfil_versioned(100, room, RequestId(1), up_to(w), Version::new(w));
    let first = attachment.data_loaded_in_order(|n| Some(Version::new(*n)));
    cache
        .stream_attached(100, ROOM, first.held.len())
        .expect("the entry has data");
    first
        .held
        .into_iter()
        .map(|n| (n, send(cache, 100, n)))
        .collect()
}

#[test]
fn r25_preload_buffer_applies_in_version_order_skipping_those_at_or_below_the_snapshot() {
    let mut cache = new_cache();
    let chat = cache
        .add_endpoint("chat", versioned(false, Resync::Refetch, 10_000))
        .expect("endpoint names are distinct");
    let room = room();
    cache
        .subscribe(0, chat, &room, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    drain(&mut cache);

    // out of order, one already in the snapshot, one below it, one sent twice
    let delivered = preload(&mut cache, &room, &[5, 2, 6, 4, 3, 5], 3);
    assert_eq!(
        delivered,
        [
            (2, Ok(Delivery::Stale)),
            (3, Ok(Delivery::Stale)),
            (4, Ok(Delivery::Applied)),
            (5, Ok(Delivery::Applied)),
            (5, Ok(Delivery::Stale)),
            (6, Ok(Delivery::Applied)),
        ]
    );
    // every message above 3 applied exactly once, in order
    assert_eq!(data(&cache, &room), Some(up_to(6)));
    assert_eq!(watermark(&cache, &room), v(6));
    assert_eq!(stream(&cache, &room), StreamStatus::Live);
    assert_eq!(count(&cache, "updated"), 3);
    assert_eq!(count(&cache, "stream_stale"), 3);
    insta::assert_yaml_snapshot!(
        "r25_preload_buffer_applies_in_version_order_skipping_those_at_or_below_the_snapshot",
        cache.trace()
    );
}

#[test]
fn r25_contiguous_preload_buffer_in_version_order_needs_no_resync() {
    let mut cache = new_cache();
    let chat = cache
        .add_endpoint("chat", versioned(true, Resync::Refetch, 10_000))
        .expect("endpoint names are distinct");
    let room = room();
    cache
        .subscribe(0, chat, &room, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    drain(&mut cache);

    // in arrival order 6 would be a gap after 3; in version order there is none
    let delivered = preload(&mut cache, &room, &[6, 4, 5], 3);
    assert_eq!(
        delivered,
        [
            (4, Ok(Delivery::Applied)),
            (5, Ok(Delivery::Applied)),
            (6, Ok(Delivery::Applied)),
        ]
    );
    assert_eq!(data(&cache, &room), Some(up_to(6)));
    assert_eq!(watermark(&cache, &room), v(6));
    assert_eq!(stream(&cache, &room), StreamStatus::Live);
    assert!(
        !drain(&mut cache)
            .iter()
            .any(|e| matches!(e, Effect::StartRequest { .. } | Effect::Resume { .. })),
        "no resync"
    );
    assert_eq!(count(&cache, "stream_held"), 0);
    assert_eq!(count(&cache, "resync_started"), 0);
    insta::assert_yaml_snapshot!(
        "r25_contiguous_preload_buffer_in_version_order_needs_no_resync",
        cache.trace()
    );
}

// ===== R26: gaps on a contiguous endpoint =====

#[test]
fn r26_gap_holds_the_message_and_resyncs_by_refetch_whose_snapshot_closes_it() {
    let config = versioned(true, Resync::Refetch, 10_000);
    let (mut cache, room, _) = live_room(config, 3);

    // 5 is past the gap (4 is missing): held, not applied; a refetch starts
    let traced = cache.trace().len();
    assert_eq!(send(&mut cache, 200, 5), Ok(Delivery::Held));
    assert_eq!(data(&cache, &room), Some(up_to(3)));
    assert_eq!(watermark(&cache, &room), v(3));
    assert_eq!(
        stream(&cache, &room),
        StreamStatus::Resyncing { since_ms: 200 }
    );
    assert_eq!(
        cache.entry(&room).map(|e| e.in_flight),
        Some(Some(RequestId(2)))
    );
    assert_eq!(drain(&mut cache), [start_request(&room, 2), notify(&room)]);
    assert_eq!(
        names_since(&cache, &room, traced),
        [
            "stream_held",
            "resync_started",
            "request_started",
            "stream_status_changed"
        ]
    );
    // another one past the gap: held too; the resync under way is not started again
    let traced = cache.trace().len();
    assert_eq!(send(&mut cache, 300, 6), Ok(Delivery::Held));
    assert_eq!(drain(&mut cache), []);
    assert_eq!(names_since(&cache, &room, traced), ["stream_held"]);

    // the snapshot (taken at 5) closes the gap: held 5 is stale, held 6 applies
    cache.fulfil_versioned(400, &room, RequestId(2), up_to(5), Version::new(5));
    assert_eq!(data(&cache, &room), Some(up_to(6)));
    assert_eq!(watermark(&cache, &room), v(6));
    assert_eq!(stream(&cache, &room), StreamStatus::Live);
    assert_eq!(drain(&mut cache), [notify(&room)]);
    insta::assert_yaml_snapshot!(
        "r26_gap_holds_the_message_and_resyncs_by_refetch_whose_snapshot_closes_it",
        cache.trace()
    );
}

#[test]
fn r26_gap_resyncs_by_resume_and_the_missing_messages_close_it() {
    let config = versioned(true, Resync::Resume, 10_000);
    let (mut cache, room, _) = live_room(config, 3);

    assert_eq!(send(&mut cache, 200, 6), Ok(Delivery::Held));
    assert_eq!(
        stream(&cache, &room),
        StreamStatus::Resyncing { since_ms: 200 }
    );
    assert_eq!(drain(&mut cache), [resume(&room, 4), notify(&room)]);
    assert_eq!(cache.entry(&room).and_then(|e| e.in_flight), None);
    assert_eq!(send(&mut cache, 210, 5), Ok(Delivery::Held));
    assert_eq!(drain(&mut cache), [], "one resync at a time");

    // the source replays from 4: the held messages apply after it, in order
    assert_eq!(send(&mut cache, 300, 4), Ok(Delivery::Applied));
    assert_eq!(data(&cache, &room), Some(up_to(6)));
    assert_eq!(watermark(&cache, &room), v(6));
    assert_eq!(stream(&cache, &room), StreamStatus::Live);
    assert_eq!(drain(&mut cache), [notify(&room)]);
    // the replay goes on past what was held: duplicates, dropped
    assert_eq!(send(&mut cache, 310, 5), Ok(Delivery::Stale));
    assert_eq!(send(&mut cache, 320, 6), Ok(Delivery::Stale));
    // the source says it is done: nothing changes, nothing is recorded
    let traced = cache.trace().len();
    cache.resync_done(330, ROOM).expect("the lifetime is live");
    assert_eq!(cache.trace().len(), traced);
    assert_eq!(drain(&mut cache), []);
    assert_eq!(send(&mut cache, 400, 7), Ok(Delivery::Applied));
    assert_eq!(data(&cache, &room), Some(up_to(7)));
    insta::assert_yaml_snapshot!(
        "r26_gap_resyncs_by_resume_and_the_missing_messages_close_it",
        cache.trace()
    );
}

#[test]
fn r26_gap_during_a_refetch_joins_the_request_in_flight() {
    let config = versioned(true, Resync::Refetch, 10_000);
    let (mut cache, room, sub) = live_room(config, 3);

    assert!(cache.refetch(200, sub));
    assert_eq!(drain(&mut cache), [start_request(&room, 2), notify(&room)]);
    let traced = cache.trace().len();
    assert_eq!(send(&mut cache, 300, 5), Ok(Delivery::Held));
    assert_eq!(
        names_since(&cache, &room, traced),
        [
            "stream_held",
            "resync_started",
            "request_joined",
            "stream_status_changed"
        ]
    );
    assert_eq!(drain(&mut cache), [notify(&room)], "no second request");
    assert_eq!(
        cache.entry(&room).and_then(|e| e.in_flight),
        Some(RequestId(2))
    );

    // 4 arrives before the snapshot: the gap closes, back to live
    assert_eq!(send(&mut cache, 400, 4), Ok(Delivery::Applied));
    assert_eq!(data(&cache, &room), Some(up_to(5)));
    assert_eq!(stream(&cache, &room), StreamStatus::Live);
    // the snapshot was taken at 4: 5 is re-applied onto it (R27)
    cache.fulfil_versioned(500, &room, RequestId(2), up_to(4), Version::new(4));
    assert_eq!(data(&cache, &room), Some(up_to(5)));
    assert_eq!(watermark(&cache, &room), v(5));
    assert_eq!(stream(&cache, &room), StreamStatus::Live);
    insta::assert_yaml_snapshot!(
        "r26_gap_during_a_refetch_joins_the_request_in_flight",
        cache.trace()
    );
}

#[test]
fn r26_snapshot_past_the_held_messages_drops_them_as_stale() {
    let config = versioned(true, Resync::Refetch, 10_000);
    let (mut cache, room, _) = live_room(config, 3);

    assert_eq!(send(&mut cache, 200, 5), Ok(Delivery::Held));
    assert_eq!(send(&mut cache, 210, 6), Ok(Delivery::Held));
    drain(&mut cache);
    let traced = cache.trace().len();
    cache.fulfil_versioned(300, &room, RequestId(2), up_to(7), Version::new(7));
    assert_eq!(data(&cache, &room), Some(up_to(7)));
    assert_eq!(watermark(&cache, &room), v(7));
    assert_eq!(stream(&cache, &room), StreamStatus::Live);
    assert_eq!(
        names_since(&cache, &room, traced),
        [
            "request_fulfilled",
            "watermark_set",
            "stream_stale",
            "stream_stale",
            "stream_status_changed"
        ]
    );
    assert_eq!(drain(&mut cache), [notify(&room)]);
    assert_eq!(count(&cache, "updated"), 0, "no held message was applied");
    insta::assert_yaml_snapshot!(
        "r26_snapshot_past_the_held_messages_drops_them_as_stale",
        cache.trace()
    );
}

#[test]
fn r26_snapshot_short_of_the_held_messages_leaves_a_gap_and_resyncs_again() {
    let config = versioned(true, Resync::Refetch, 10_000);
    let (mut cache, room, _) = live_room(config, 3);

    assert_eq!(send(&mut cache, 200, 6), Ok(Delivery::Held));
    assert_eq!(send(&mut cache, 210, 7), Ok(Delivery::Held));
    assert_eq!(drain(&mut cache), [start_request(&room, 2), notify(&room)]);

    // the snapshot was taken at 4: 5 is still missing, another refetch starts
    let traced = cache.trace().len();
    cache.fulfil_versioned(300, &room, RequestId(2), up_to(4), Version::new(4));
    assert_eq!(data(&cache, &room), Some(up_to(4)));
    assert_eq!(watermark(&cache, &room), v(4));
    assert_eq!(
        stream(&cache, &room),
        StreamStatus::Resyncing { since_ms: 200 }
    );
    assert_eq!(
        cache.entry(&room).and_then(|e| e.in_flight),
        Some(RequestId(3))
    );
    assert_eq!(
        names_since(&cache, &room, traced),
        [
            "request_fulfilled",
            "watermark_set",
            "resync_started",
            "request_started"
        ]
    );
    assert_eq!(drain(&mut cache), [start_request(&room, 3), notify(&room)]);

    // the next snapshot, at 6, drops held 6 and applies held 7
    cache.fulfil_versioned(400, &room, RequestId(3), up_to(6), Version::new(6));
    assert_eq!(data(&cache, &room), Some(up_to(7)));
    assert_eq!(watermark(&cache, &room), v(7));
    assert_eq!(stream(&cache, &room), StreamStatus::Live);
    insta::assert_yaml_snapshot!(
        "r26_snapshot_short_of_the_held_messages_leaves_a_gap_and_resyncs_again",
        cache.trace()
    );
}

// ===== R27: the refetch rebase =====

#[test]
fn r27_messages_applied_during_a_refetch_are_reapplied_onto_its_snapshot() {
    let config = versioned(false, Resync::Refetch, 10_000);
    let (mut cache, room, sub) = live_room(config, 2);

    assert!(cache.refetch(200, sub));
    drain(&mut cache);
    // applied at once while the request runs (and kept)
    for (at, n) in [(300, 3), (310, 4), (320, 5)] {
        assert_eq!(send(&mut cache, at, n), Ok(Delivery::Applied));
    }
    assert_eq!(data(&cache, &room), Some(up_to(5)));
    assert_eq!(watermark(&cache, &room), v(5));

    // the snapshot was taken at 3: 4 and 5 are re-applied onto it, in order
    let traced = cache.trace().len();
    cache.fulfil_versioned(400, &room, RequestId(2), up_to(3), Version::new(3));
    assert_eq!(data(&cache, &room), Some(up_to(5)));
    assert_eq!(watermark(&cache, &room), v(5));
    assert_eq!(stream(&cache, &room), StreamStatus::Live);
    assert_eq!(
        names_since(&cache, &room, traced),
        ["request_fulfilled", "watermark_set"]
    );
    assert_eq!(drain(&mut cache), [notify(&room)]);

    // the log went with the request: a snapshot past every message re-applies nothing
    assert!(cache.refetch(500, sub));
    assert_eq!(send(&mut cache, 600, 6), Ok(Delivery::Applied));
    cache.fulfil_versioned(700, &room, RequestId(3), up_to(6), Version::new(6));
    assert_eq!(data(&cache, &room), Some(up_to(6)));
    assert_eq!(watermark(&cache, &room), v(6));
    insta::assert_yaml_snapshot!(
        "r27_messages_applied_during_a_refetch_are_reapplied_onto_its_snapshot",
        cache.trace()
    );
}

#[test]
fn r27_upsert_with_a_watermark_during_a_refetch_is_rebased_too() {
    let config = versioned(false, Resync::Refetch, 10_000);
    let (mut cache, room, sub) = live_room(config, 2);
    let chat = cache.entry(&room).expect("live").endpoint;

    assert!(cache.refetch(200, sub));
    assert_eq!(send(&mut cache, 300, 3), Ok(Delivery::Applied));
    assert_eq!(send(&mut cache, 310, 4), Ok(Delivery::Applied));
    // an upsert at 3 while the request runs: 4 is re-applied onto it; the log stays for the
    // request
    cache
        .upsert_versioned(400, chat, &room, up_to(3), Version::new(3))
        .expect("the key is this endpoint's");
    assert_eq!(data(&cache, &room), Some(up_to(4)));
    assert_eq!(watermark(&cache, &room), v(4));
    assert_eq!(
        cache.entry(&room).and_then(|e| e.in_flight),
        Some(RequestId(2))
    );
    // the request's own snapshot, taken at 2: 3 and 4 are re-applied onto it
    cache.fulfil_versioned(500, &room, RequestId(2), up_to(2), Version::new(2));
    assert_eq!(data(&cache, &room), Some(up_to(4)));
    assert_eq!(watermark(&cache, &room), v(4));
    insta::assert_yaml_snapshot!(
        "r27_upsert_with_a_watermark_during_a_refetch_is_rebased_too",
        cache.trace()
    );
}

#[test]
fn r27_rejected_refetch_drops_the_kept_messages_and_keeps_the_data() {
    let config = versioned(false, Resync::Refetch, 10_000);
    let (mut cache, room, sub) = live_room(config, 2);

    assert!(cache.refetch(200, sub));
    assert_eq!(send(&mut cache, 300, 3), Ok(Delivery::Applied));
    cache.reject(400, &room, RequestId(2), "offline".to_owned());
    assert_eq!(data(&cache, &room), Some(up_to(3)));
    assert_eq!(watermark(&cache, &room), v(3));
    assert_eq!(stream(&cache, &room), StreamStatus::Live);

    // the next refetch's snapshot comes from a replica behind by one (at 2), older than the 3
    // the data had when the request started: rebased, it would lose 3 (only 4 was kept for
    // this request). It is stale: the data stays, whole.
    assert!(cache.refetch(500, sub));
    assert_eq!(send(&mut cache, 600, 4), Ok(Delivery::Applied));
    cache.fulfil_versioned(700, &room, RequestId(3), up_to(2), Version::new(2));
    assert_eq!(data(&cache, &room), Some(up_to(4)));
    assert_eq!(watermark(&cache, &room), v(4));
    assert_eq!(stream(&cache, &room), StreamStatus::Live);
    insta::assert_yaml_snapshot!(
        "r27_rejected_refetch_drops_the_kept_messages_and_keeps_the_data",
        cache.trace()
    );
}

#[test]
fn r27_plain_fulfil_on_a_versioned_entry_lets_the_snapshot_win() {
    let config = versioned(false, Resync::Refetch, 10_000);
    let (mut cache, room, sub) = live_room(config, 2);

    assert!(cache.refetch(200, sub));
    drain(&mut cache);
    assert_eq!(send(&mut cache, 300, 3), Ok(Delivery::Applied));
    let traced = cache.trace().len();
    cache.fulfil(400, &room, RequestId(2), msgs(&["snapshot"]));
    assert_eq!(data(&cache, &room), Some(msgs(&["snapshot"])));
    assert_eq!(watermark(&cache, &room), v(3), "the watermark is unchanged");
    assert_eq!(names_since(&cache, &room, traced), ["request_fulfilled"]);
    assert_eq!(drain(&mut cache), [notify(&room)]);
    // messages go on from the watermark
    assert_eq!(send(&mut cache, 500, 3), Ok(Delivery::Stale));
    assert_eq!(send(&mut cache, 510, 4), Ok(Delivery::Applied));
    assert_eq!(data(&cache, &room), Some(msgs(&["snapshot", "m4"])));
    insta::assert_yaml_snapshot!(
        "r27_plain_fulfil_on_a_versioned_entry_lets_the_snapshot_win",
        cache.trace()
    );
}

// ===== R28: the stream status =====

#[test]
fn r28_status_is_idle_until_something_live_happens_then_follows_the_source() {
    let mut cache = new_cache();
    let chat = cache
        .add_endpoint("chat", versioned(false, Resync::Refetch, 10_000))
        .expect("endpoint names are distinct");
    let room = room();
    cache
        .subscribe(0, chat, &room, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    drain(&mut cache);
    assert_eq!(stream(&cache, &room), StreamStatus::Idle);

    // the handler connects before the data
    cache
        .stream_status(50, ROOM, StreamStatus::Connecting)
        .expect("the lifetime is live");
    assert_eq!(stream(&cache, &room), StreamStatus::Connecting);
    assert_eq!(drain(&mut cache), [notify(&room)]);
    // the same again: no change, no event
    let traced = cache.trace().len();
    cache
        .stream_status(60, ROOM, StreamStatus::Connecting)
        .expect("the lifetime is live");
    assert_eq!(cache.trace().len(), traced);
    assert_eq!(drain(&mut cache), []);

    cache.fulfil_versioned(100, &room, RequestId(1), up_to(3), Version::new(3));
    assert_eq!(stream(&cache, &room), StreamStatus::Connecting);
    drain(&mut cache);
    cache
        .stream_attached(100, ROOM, 0)
        .expect("the entry has data");
    assert_eq!(stream(&cache, &room), StreamStatus::Live);
    assert_eq!(drain(&mut cache), [notify(&room)]);

    let lost = StreamStatus::Reconnecting {
        attempt: 1,
        since_ms: 200,
        last_error: "connection reset".into(),
    };
    cache
        .stream_status(200, ROOM, lost.clone())
        .expect("the lifetime is live");
    assert_eq!(stream(&cache, &room), lost);
    assert_eq!(drain(&mut cache), [notify(&room)]);
    let again = StreamStatus::Reconnecting {
        attempt: 2,
        since_ms: 200,
        last_error: "timed out".into(),
    };
    cache
        .stream_status(300, ROOM, again.clone())
        .expect("the lifetime is live");
    assert_eq!(stream(&cache, &room), again);
    assert_eq!(drain(&mut cache), [notify(&room)]);
    cache
        .stream_status(400, ROOM, StreamStatus::Live)
        .expect("the lifetime is live");
    assert_eq!(stream(&cache, &room), StreamStatus::Live);
    assert_eq!(drain(&mut cache), [notify(&room)]);

    assert_eq!(count(&cache, "stream_status_changed"), 5);
    assert_eq!(
        cache.stream_status(500, LifetimeId(9), StreamStatus::Live),
        Err(UpdateRefused::NotLive)
    );
    insta::assert_yaml_snapshot!(
        "r28_status_is_idle_until_something_live_happens_then_follows_the_source",
        cache.trace()
    );
}

#[test]
fn r28_a_stream_that_ends_or_fails_says_so() {
    let mut cache = new_cache();
    let chat = cache
        .add_endpoint("chat", unversioned())
        .expect("endpoint names are distinct");
    let room = room();
    cache
        .subscribe(0, chat, &room, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    cache.fulfil(100, &room, RequestId(1), up_to(1));
    cache
        .stream_attached(100, ROOM, 0)
        .expect("the entry has data");
    drain(&mut cache);
    assert_eq!(stream(&cache, &room), StreamStatus::Live);
    let traced = cache.trace().len();

    let ended = StreamEnd {
        reason: StreamEndReason::StreamEnded,
        applied: 0,
        skipped: 0,
    };
    cache.stream_ended(200, &room, ROOM, &ended);
    assert_eq!(
        stream(&cache, &room),
        StreamStatus::Ended {
            reason: "stream ended".into()
        }
    );
    assert_eq!(drain(&mut cache), [notify(&room)]);

    // the handler attaches a new stream, which fails
    cache
        .stream_attached(300, ROOM, 0)
        .expect("the entry has data");
    assert_eq!(stream(&cache, &room), StreamStatus::Live);
    assert_eq!(drain(&mut cache), [notify(&room)]);
    let failed = StreamEnd {
        reason: StreamEndReason::StreamFailed("connection reset".into()),
        applied: 0,
        skipped: 0,
    };
    cache.stream_ended(400, &room, ROOM, &failed);
    assert_eq!(
        stream(&cache, &room),
        StreamStatus::Failed {
            error: "connection reset".into()
        }
    );
    assert_eq!(drain(&mut cache), [notify(&room)]);
    assert_eq!(
        names_since(&cache, &room, traced),
        [
            "stream_ended",
            "stream_status_changed",
            "stream_attached",
            "stream_status_changed",
            "stream_ended",
            "stream_status_changed"
        ]
    );
    insta::assert_yaml_snapshot!("r28_a_stream_that_ends_or_fails_says_so", cache.trace());
}

#[test]
fn r28_resyncing_shows_over_a_well_source_and_the_sources_trouble_over_resyncing() {
    let config = versioned(true, Resync::Resume, 10_000);
    let (mut cache, room, _) = live_room(config, 3);

    assert_eq!(send(&mut cache, 300, 5), Ok(Delivery::Held));
    let resyncing = StreamStatus::Resyncing { since_ms: 300 };
    assert_eq!(stream(&cache, &room), resyncing);
    assert_eq!(drain(&mut cache), [resume(&room, 4), notify(&room)]);

    // the source's trouble shows over the resync…
    let lost = StreamStatus::Reconnecting {
        attempt: 1,
        since_ms: 400,
        last_error: "timed out".into(),
    };
    cache
        .stream_status(400, ROOM, lost.clone())
        .expect("the lifetime is live");
    assert_eq!(stream(&cache, &room), lost);
    assert_eq!(drain(&mut cache), [notify(&room)]);
    // …and once it is well again, the resync under way shows, stale since the gap
    cache
        .stream_status(500, ROOM, StreamStatus::Connecting)
        .expect("the lifetime is live");
    assert_eq!(stream(&cache, &room), resyncing);
    assert_eq!(drain(&mut cache), [notify(&room)]);
    let traced = cache.trace().len();
    cache
        .stream_status(600, ROOM, StreamStatus::Live)
        .expect("the lifetime is live");
    assert_eq!(stream(&cache, &room), resyncing);
    assert_eq!(
        cache.trace().len(),
        traced,
        "still resyncing: no change, no event"
    );
    assert_eq!(drain(&mut cache), []);

    // the gap closes: what the source said
    assert_eq!(send(&mut cache, 700, 4), Ok(Delivery::Applied));
    assert_eq!(stream(&cache, &room), StreamStatus::Live);
    assert_eq!(data(&cache, &room), Some(up_to(5)));
    assert_eq!(drain(&mut cache), [notify(&room)]);

    // a new gap, then the source fails: failed shows over it
    assert_eq!(send(&mut cache, 800, 7), Ok(Delivery::Held));
    assert_eq!(
        stream(&cache, &room),
        StreamStatus::Resyncing { since_ms: 800 }
    );
    assert_eq!(drain(&mut cache), [resume(&room, 6), notify(&room)]);
    let failed = StreamEnd {
        reason: StreamEndReason::StreamFailed("gone".into()),
        applied: 2,
        skipped: 0,
    };
    cache.stream_ended(900, &room, ROOM, &failed);
    assert_eq!(
        stream(&cache, &room),
        StreamStatus::Failed {
            error: "gone".into()
        }
    );
    assert_eq!(drain(&mut cache), [notify(&room)]);
    assert_eq!(count(&cache, "stream_status_changed"), 7);
    insta::assert_yaml_snapshot!(
        "r28_resyncing_shows_over_a_well_source_and_the_sources_trouble_over_resyncing",
        cache.trace()
    );
}

// ===== R33: bounded queues =====

#[test]
fn r33_held_queue_past_its_bound_is_dropped_and_the_entry_waits_for_a_snapshot() {
    let config = versioned(true, Resync::Refetch, 2);
    let (mut cache, room, _) = live_room(config, 3);

    assert_eq!(send(&mut cache, 200, 5), Ok(Delivery::Held));
    assert_eq!(drain(&mut cache), [start_request(&room, 2), notify(&room)]);
    assert_eq!(send(&mut cache, 210, 6), Ok(Delivery::Held));
    // a third held message is past the bound of 2: the queue is dropped, the resync starts again
    // (joining the refetch under way)
    let traced = cache.trace().len();
    assert_eq!(send(&mut cache, 220, 7), Ok(Delivery::Held));
    assert_eq!(
        names_since(&cache, &room, traced),
        [
            "stream_held",
            "queue_overflowed",
            "resync_started",
            "request_joined"
        ]
    );
    assert_eq!(drain(&mut cache), []);
    assert_eq!(
        stream(&cache, &room),
        StreamStatus::Resyncing { since_ms: 200 }
    );

    // 4 arrives: it applies, but with 5–7 dropped the entry still waits for a snapshot
    assert_eq!(send(&mut cache, 300, 4), Ok(Delivery::Applied));
    assert_eq!(data(&cache, &room), Some(up_to(4)));
    assert_eq!(watermark(&cache, &room), v(4));
    assert_eq!(
        stream(&cache, &room),
        StreamStatus::Resyncing { since_ms: 200 }
    );
    assert_eq!(count(&cache, "stream_status_changed"), 2);

    cache.fulfil_versioned(400, &room, RequestId(2), up_to(7), Version::new(7));
    assert_eq!(data(&cache, &room), Some(up_to(7)));
    assert_eq!(watermark(&cache, &room), v(7));
    assert_eq!(stream(&cache, &room), StreamStatus::Live);
    assert_eq!(cache.entry(&room).and_then(|e| e.in_flight), None);
    insta::assert_yaml_snapshot!(
        "r33_held_queue_past_its_bound_is_dropped_and_the_entry_waits_for_a_snapshot",
        cache.trace()
    );
}

#[test]
fn r33_held_overflow_with_resume_waits_for_resync_done_or_an_upsert() {
    let config = versioned(true, Resync::Resume, 2);
    let (mut cache, room, _) = live_room(config, 3);
    let chat = cache.entry(&room).expect("live").endpoint;

    assert_eq!(send(&mut cache, 200, 5), Ok(Delivery::Held));
    assert_eq!(send(&mut cache, 210, 6), Ok(Delivery::Held));
    assert_eq!(drain(&mut cache), [resume(&room, 4), notify(&room)]);
    assert_eq!(send(&mut cache, 220, 7), Ok(Delivery::Held));
    assert_eq!(drain(&mut cache), [resume(&room, 4)], "asked again");
    assert_eq!(count(&cache, "queue_overflowed"), 1);

    // the source replays 4–7: all apply, but the entry waits for the source to say it is done
    for (at, n) in [(300, 4), (310, 5), (320, 6), (330, 7)] {
        assert_eq!(send(&mut cache, at, n), Ok(Delivery::Applied));
    }
    assert_eq!(data(&cache, &room), Some(up_to(7)));
    assert_eq!(
        stream(&cache, &room),
        StreamStatus::Resyncing { since_ms: 200 }
    );
    cache.resync_done(400, ROOM).expect("the lifetime is live");
    assert_eq!(stream(&cache, &room), StreamStatus::Live);
    assert_eq!(drain(&mut cache), [notify(&room)]);

    // again, and this time an upsert with a watermark ends the wait
    assert_eq!(send(&mut cache, 500, 9), Ok(Delivery::Held));
    assert_eq!(send(&mut cache, 510, 10), Ok(Delivery::Held));
    assert_eq!(send(&mut cache, 520, 11), Ok(Delivery::Held));
    assert_eq!(
        drain(&mut cache),
        [resume(&room, 8), notify(&room), resume(&room, 8)]
    );
    assert_eq!(
        stream(&cache, &room),
        StreamStatus::Resyncing { since_ms: 500 }
    );
    cache
        .upsert_versioned(600, chat, &room, up_to(11), Version::new(11))
        .expect("the key is this endpoint's");
    assert_eq!(data(&cache, &room), Some(up_to(11)));
    assert_eq!(watermark(&cache, &room), v(11));
    assert_eq!(stream(&cache, &room), StreamStatus::Live);
    assert_eq!(count(&cache, "queue_overflowed"), 2);
    insta::assert_yaml_snapshot!(
        "r33_held_overflow_with_resume_waits_for_resync_done_or_an_upsert",
        cache.trace()
    );
}

#[test]
fn r33_rebase_log_past_its_bound_is_dropped_and_another_refetch_follows_the_snapshot() {
    let config = versioned(false, Resync::Refetch, 2);
    let (mut cache, room, sub) = live_room(config, 2);

    assert!(cache.refetch(200, sub));
    drain(&mut cache);
    assert_eq!(send(&mut cache, 300, 3), Ok(Delivery::Applied));
    assert_eq!(send(&mut cache, 310, 4), Ok(Delivery::Applied));
    assert_eq!(stream(&cache, &room), StreamStatus::Live);
    // the third kept message is past the bound of 2: the log is dropped (the message applies)
    let traced = cache.trace().len();
    assert_eq!(send(&mut cache, 320, 5), Ok(Delivery::Applied));
    assert_eq!(
        names_since(&cache, &room, traced),
        ["updated", "queue_overflowed", "stream_status_changed"]
    );
    assert_eq!(data(&cache, &room), Some(up_to(5)));
    assert_eq!(
        stream(&cache, &room),
        StreamStatus::Resyncing { since_ms: 320 }
    );

    // the snapshot, taken at 3, cannot be rebased: it lands as it is and another refetch starts
    let traced = cache.trace().len();
    cache.fulfil_versioned(400, &room, RequestId(2), up_to(3), Version::new(3));
    assert_eq!(data(&cache, &room), Some(up_to(3)));
    assert_eq!(watermark(&cache, &room), v(3));
    assert_eq!(
        stream(&cache, &room),
        StreamStatus::Resyncing { since_ms: 320 }
    );
    assert_eq!(
        cache.entry(&room).and_then(|e| e.in_flight),
        Some(RequestId(3))
    );
    assert_eq!(
        names_since(&cache, &room, traced),
        [
            "request_fulfilled",
            "watermark_set",
            "resync_started",
            "request_started"
        ]
    );
    assert!(drain(&mut cache).contains(&start_request(&room, 3)));

    // this request's log stays within the bound: its snapshot, at 5, is rebased and ends it
    assert_eq!(send(&mut cache, 500, 6), Ok(Delivery::Applied));
    cache.fulfil_versioned(600, &room, RequestId(3), up_to(5), Version::new(5));
    assert_eq!(data(&cache, &room), Some(up_to(6)));
    assert_eq!(watermark(&cache, &room), v(6));
    assert_eq!(stream(&cache, &room), StreamStatus::Live);
    assert_eq!(cache.entry(&room).and_then(|e| e.in_flight), None);
    insta::assert_yaml_snapshot!(
        "r33_rebase_log_past_its_bound_is_dropped_and_another_refetch_follows_the_snapshot",
        cache.trace()
    );
}

// ===== R29: the lifecycle is told of requests, and refetches through its handle =====

/// The request events queued for the lifecycle, as (request, reason when started).
fn request_events(cache: &mut Core) -> Vec<RequestEvent> {
    std::iter::from_fn(|| cache.poll_effect())
        .filter_map(|e| match e {
            Effect::RequestEvent { event, .. } => Some(event),
            _ => None,
        })
        .collect()
}

#[test]
fn r29_the_lifecycle_is_told_of_each_request_started_with_why_and_how_it_settled() {
    let mut cache = new_cache();
    let chat = cache
        .add_endpoint("chat", versioned(true, Resync::Refetch, 100))
        .expect("a new name");
    let room = room();
    let sub = cache
        .subscribe(0, chat, &room, Refetch::IfMissing)
        .expect("the endpoint's key");
    let started = |request, reason| RequestEvent::Started {
        request: RequestId(request),
        reason,
    };
    assert_eq!(
        request_events(&mut cache),
        [started(1, RequestReason::Load)]
    );
    cache.reject(10, &room, RequestId(1), "offline".into());
    let rejected = RequestEvent::Rejected {
        request: RequestId(1),
    };
    assert_eq!(request_events(&mut cache), [rejected]);
    // No data yet: a mount loads.
    cache
        .prefetch(20, chat, &room, Refetch::IfMissing)
        .expect("the endpoint's key");
    assert_eq!(
        request_events(&mut cache),
        [started(2, RequestReason::Load)]
    );
    cache.fulfil_versioned(30, &room, RequestId(2), up_to(1), Version::new(1));
    let fulfilled = RequestEvent::Fulfilled {
        request: RequestId(2),
    };
    assert_eq!(request_events(&mut cache), [fulfilled]);
    // With data: a mount that asks for fresh data, an explicit refetch, a resync.
    let _again = cache
        .subscribe(40, chat, &room, Refetch::Always)
        .expect("the endpoint's key");
    assert_eq!(
        request_events(&mut cache),
        [started(3, RequestReason::Mount)]
    );
    cache.fulfil_versioned(50, &room, RequestId(3), up_to(1), Version::new(1));
    assert!(cache.refetch(60, sub));
    let events = request_events(&mut cache);
    assert_eq!(events[1..], [started(4, RequestReason::Refetch)]);
    cache.fulfil_versioned(70, &room, RequestId(4), up_to(1), Version::new(1));
    assert_eq!(send(&mut cache, 80, 3), Ok(Delivery::Held));
    let events = request_events(&mut cache);
    assert_eq!(events[1..], [started(5, RequestReason::Resync)]);
    insta::assert_yaml_snapshot!(
        "r29_the_lifecycle_is_told_of_each_request_started_with_why_and_how_it_settled",
        cache.trace()
    );
}

#[test]
fn r29_an_endpoint_without_a_handler_queues_no_request_events() {
    let mut cache = new_cache();
    let plain = cache
        .add_endpoint(
            "plain",
            EndpointConfig {
                has_lifecycle: false,
                ..EndpointConfig::default()
            },
        )
        .expect("a new name");
    let key = key("plain", "x");
    cache
        .subscribe(0, plain, &key, Refetch::IfMissing)
        .expect("the endpoint's key");
    cache.fulfil(1, &key, RequestId(1), vec![]);
    assert_eq!(request_events(&mut cache), []);
}

#[test]
fn r29_the_lifecycle_refetches_its_own_entry_joining_a_request_in_flight() {
    let mut cache = new_cache();
    let chat = cache
        .add_endpoint("chat", unversioned())
        .expect("a new name");
    let room = room();
    cache
        .upsert(0, chat, &room, msgs(&["hello"]))
        .expect("the endpoint's key");
    let _ = drain(&mut cache);
    assert!(cache.refetch_lifetime(10, ROOM));
    assert_eq!(
        cache.entry(&room).and_then(|e| e.in_flight),
        Some(RequestId(1))
    );
    let started = RequestEvent::Started {
        request: RequestId(1),
        reason: RequestReason::Refetch,
    };
    assert_eq!(request_events(&mut cache), [started]);
    // A second one joins the first.
    assert!(cache.refetch_lifetime(20, ROOM));
    assert_eq!(
        cache.entry(&room).and_then(|e| e.in_flight),
        Some(RequestId(1))
    );
    assert_eq!(request_events(&mut cache), []);
    // An ended lifetime's handle refetches nothing (R7a).
    assert!(cache.remove(30, &room));
    assert!(!cache.refetch_lifetime(40, ROOM));
    insta::assert_yaml_snapshot!(
        "r29_the_lifecycle_refetches_its_own_entry_joining_a_request_in_flight",
        cache.trace()
    );
}

// ===== R34: a burst is one batch, traced as one update =====

#[test]
fn r34_a_burst_is_traced_as_one_update_with_its_count() {
    let mut cache = Cache::new(CacheConfig {
        keep: Keep::default(),
        recording: Recording::Events,
    });
    let chat = cache
        .add_endpoint("chat", versioned(false, Resync::Refetch, 100))
        .expect("a new name");
    let room = room();
    cache
        .upsert_versioned(0, chat, &room, up_to(1), Version::new(1))
        .expect("the key is this endpoint's");
    let _ = cache.stream_attached(0, ROOM, 0);
    // A burst: 2, 3, a duplicate of 3, then 4 and 5.
    let delivered = cache.batch(|cache| {
        [2, 3, 3, 4, 5]
            .map(|n| send(cache, 10, n))
            .into_iter()
            .collect::<Vec<_>>()
    });
    assert_eq!(
        delivered,
        [
            Ok(Delivery::Applied),
            Ok(Delivery::Applied),
            Ok(Delivery::Stale),
            Ok(Delivery::Applied),
            Ok(Delivery::Applied)
        ]
    );
    assert_eq!(data(&cache, &room), Some(up_to(5)));
    let counts: Vec<(String, u32)> = cache
        .trace()
        .into_iter()
        .filter(|e| e.at_ms == 10)
        .map(|e| match e.kind {
            TraceKind::Updated { count, .. } => ("updated".to_owned(), count),
            other => (other.to_string(), 0),
        })
        .collect();
    // Two runs of updates, the duplicate between them.
    assert_eq!(counts[0], ("updated".to_owned(), 2));
    assert!(counts[1].0.starts_with("stream_stale"));
    assert_eq!(counts[2], ("updated".to_owned(), 2));
    assert_eq!(counts.len(), 3);
    // Outside a batch each update is its own event.
    assert_eq!(send(&mut cache, 20, 6), Ok(Delivery::Applied));
    assert_eq!(send(&mut cache, 20, 7), Ok(Delivery::Applied));
    let singles = cache.trace().iter().filter(|e| e.at_ms == 20).count();
    assert_eq!(singles, 2);
    insta::assert_yaml_snapshot!(
        "r34_a_burst_is_traced_as_one_update_with_its_count",
        cache.trace()
    );
}

#[test]
fn r34_recording_patches_keeps_one_event_per_update_in_a_batch() {
    let mut cache = new_cache();
    let chat = cache
        .add_endpoint("chat", unversioned())
        .expect("a new name");
    let room = room();
    cache
        .upsert(0, chat, &room, msgs(&[]))
        .expect("the key is this endpoint's");
    cache.batch(|cache| {
        for n in 0..3 {
            let _ = cache.update_cached(1, ROOM, Patches::NotWanted, push(format!("m{n}")));
        }
    });
    let updates: Vec<u32> = cache
        .trace()
        .into_iter()
        .filter_map(|e| match e.kind {
            TraceKind::Updated { count, .. } => Some(count),
            _ => None,
        })
        .collect();
    assert_eq!(updates, [1, 1, 1]);
}

// ===== R30: restart =====

/// The room's handler of `generation`.
fn handler(generation: u32) -> HandlerId {
    HandlerId {
        lifetime: ROOM,
        generation,
    }
}

#[test]
fn r30_restart_keeps_data_subscribers_and_watermark_and_refuses_the_old_handle() {
    let config = versioned(true, Resync::Refetch, 10);
    let (mut cache, room, _) = live_room(config, 3);
    assert_eq!(send(&mut cache, 110, 4), Ok(Delivery::Applied));
    let _ = drain(&mut cache);

    let new = cache
        .restart(200, &room)
        .expect("the endpoint has a handler");
    assert_eq!(new, handler(1));
    assert_eq!(
        drain(&mut cache),
        [
            Effect::RestartLifecycle {
                key: room.clone(),
                handler: new
            },
            // The entry has data: the new handler's data-loaded resolves at once, without a
            // request (so without meta).
            Effect::ResolveDataLoaded {
                lifetime: ROOM,
                request: None,
                data: up_to(4)
            },
            notify(&room),
        ]
    );
    let entry = cache.entry(&room).expect("the entry lives on");
    assert_eq!(
        (entry.lifetime, entry.handler, entry.subscribers),
        (ROOM, new, 1)
    );
    assert_eq!(data(&cache, &room), Some(up_to(4)));
    assert_eq!(watermark(&cache, &room), v(4));
    // The source was the old handler's: nothing is live until the new one's reports.
    assert_eq!(stream(&cache, &room), StreamStatus::Idle);

    // Every way the old handler's handle could reach the entry is refused (R7a within one
    // lifetime).
    assert_eq!(send(&mut cache, 210, 5), Err(UpdateRefused::NotLive));
    let update = cache.update_cached(210, ROOM, Patches::NotWanted, |d| d.clear());
    assert_eq!(update, Err(UpdateRefused::NotLive));
    assert_eq!(
        cache.stream_status(210, ROOM, StreamStatus::Live),
        Err(UpdateRefused::NotLive)
    );
    assert!(!cache.refetch_lifetime(210, ROOM));
    assert!(cache.lifetime_place(ROOM).is_none());

    // Its stream ends with it; the entry's status is not its to say any more.
    let end = StreamEnd {
        reason: StreamEndReason::HandlerRestarted,
        applied: 1,
        skipped: 0,
    };
    cache.stream_ended(220, &room, ROOM, &end);
    cache.lifecycle_ended(220, &room, ROOM, HandlerOutcome::Finished);
    assert_eq!(stream(&cache, &room), StreamStatus::Idle);
    assert_eq!(data(&cache, &room), Some(up_to(4)));

    // The new handler's stream goes on from the watermark the entry kept.
    cache
        .stream_attached(300, new, 0)
        .expect("the new handler's handle");
    assert_eq!(stream(&cache, &room), StreamStatus::Live);
    let message = cache.stream_message(310, new, Version::new(5), push("m5".into()));
    assert_eq!(message, Ok(Delivery::Applied));
    assert_eq!(data(&cache, &room), Some(up_to(5)));
    // A second restart: generation 2; handler 1 is refused in turn.
    assert_eq!(cache.restart(400, &room), Ok(handler(2)));
    let stale = cache.stream_message(410, new, Version::new(6), push("m6".into()));
    assert_eq!(stale, Err(UpdateRefused::NotLive));
    cache.lifecycle_ended(420, &room, new, HandlerOutcome::Finished);
    insta::assert_yaml_snapshot!(
        "r30_restart_keeps_data_subscribers_and_watermark_and_refuses_the_old_handle",
        cache.trace()
    );
}

#[test]
fn r30_an_old_handlers_place_updates_nothing_once_the_new_handler_streams() {
    // The default recording: updates through a place take the streaming hot path.
    let mut cache: Cache<Vec<String>> = Cache::new(Default::default());
    let config = EndpointConfig {
        has_lifecycle: true,
        ..EndpointConfig::default()
    };
    let ep = cache.add_endpoint("room", config).expect("a new endpoint");
    let room = CacheKey::verbatim("room(1)");
    cache
        .upsert(0, ep, &room, vec!["m0".into()])
        .expect("upserted");
    cache
        .stream_attached(10, ROOM, 0)
        .expect("the handler's handle");
    let old_place = cache.lifetime_place(ROOM).expect("the handler's place");
    let new = cache
        .restart(20, &room)
        .expect("the endpoint has a handler");
    cache
        .stream_attached(30, new, 0)
        .expect("the new handler's handle");
    let new_place = cache.lifetime_place(new).expect("the new handler's place");
    assert_eq!(data(&cache, &room), Some(vec!["m0".to_owned()]));
    // The old handler's place, kept from before the restart, finds nothing on any path.
    let placed = cache.update_cached_deferring_notify(40, old_place, |d| d.clear());
    assert_eq!(placed, Err(UpdateRefused::NotLive));
    let placed = cache.update_cached_at(40, old_place, Patches::NotWanted, |d| d.clear());
    assert_eq!(placed, Err(UpdateRefused::NotLive));
    assert_eq!(data(&cache, &room), Some(vec!["m0".to_owned()]));
    // The new handler's place updates the entry.
    let placed = cache.update_cached_deferring_notify(50, new_place, |d| d.push("m1".into()));
    assert!(placed.is_ok());
    assert_eq!(
        data(&cache, &room),
        Some(vec!["m0".to_owned(), "m1".to_owned()])
    );
}

#[test]
fn r30_restart_during_a_resync_asks_the_new_handler_to_resume() {
    let config = versioned(true, Resync::Resume, 10);
    let (mut cache, room, _) = live_room(config, 3);
    // A gap: message 5 is held, the old source asked to resume from 4.
    assert_eq!(send(&mut cache, 110, 5), Ok(Delivery::Held));
    assert_eq!(drain(&mut cache), [resume(&room, 4), notify(&room)]);
    assert_eq!(
        stream(&cache, &room),
        StreamStatus::Resyncing { since_ms: 110 }
    );

    // That source is gone with its handler: the new one is asked again.
    let new = cache.restart(200, &room).expect("a handler");
    let effects = drain(&mut cache);
    assert_eq!(
        effects,
        [
            Effect::RestartLifecycle {
                key: room.clone(),
                handler: new
            },
            Effect::ResolveDataLoaded {
                lifetime: ROOM,
                request: None,
                data: up_to(3)
            },
            resume(&room, 4),
        ]
    );
    // Still resyncing (the held message waits for its gap), over an idle source.
    assert_eq!(
        stream(&cache, &room),
        StreamStatus::Resyncing { since_ms: 110 }
    );
    cache.stream_attached(210, new, 0).expect("the new handle");
    let replayed = cache.stream_message(220, new, Version::new(4), push("m4".into()));
    assert_eq!(replayed, Ok(Delivery::Applied));
    // The held message followed: the gap closed, the entry is live again.
    assert_eq!(data(&cache, &room), Some(up_to(5)));
    assert_eq!(stream(&cache, &room), StreamStatus::Live);
    insta::assert_yaml_snapshot!(
        "r30_restart_during_a_resync_asks_the_new_handler_to_resume",
        cache.trace()
    );
}

#[test]
fn r30_restart_before_the_first_data_gives_the_first_data_to_the_new_handler() {
    let mut cache = new_cache();
    let chat = cache
        .add_endpoint("chat", unversioned())
        .expect("a new name");
    let room = room();
    cache
        .subscribe(0, chat, &room, Refetch::IfMissing)
        .expect("the endpoint's key");
    let _ = drain(&mut cache);
    let new = cache.restart(10, &room).expect("a handler");
    // No data yet: only the restart; the old handler's data-loaded is the runtime's to fail.
    assert_eq!(
        drain(&mut cache),
        [Effect::RestartLifecycle {
            key: room.clone(),
            handler: new
        }]
    );
    cache.fulfil(20, &room, RequestId(1), msgs(&["hello"]));
    let effects = drain(&mut cache);
    assert!(effects.contains(&Effect::ResolveDataLoaded {
        lifetime: ROOM,
        request: Some(RequestId(1)),
        data: msgs(&["hello"])
    }));
    // The old handler cannot update the data it never got; the new one can.
    let old = cache.update_cached(30, ROOM, Patches::NotWanted, |d| d.clear());
    assert_eq!(old, Err(UpdateRefused::NotLive));
    let ok = cache.update_cached(30, new, Patches::NotWanted, |d| d.push("hi".into()));
    assert_eq!(ok, Ok(None));
    assert_eq!(data(&cache, &room), Some(msgs(&["hello", "hi"])));
    insta::assert_yaml_snapshot!(
        "r30_restart_before_the_first_data_gives_the_first_data_to_the_new_handler",
        cache.trace()
    );
}

#[test]
fn r30_only_an_entry_with_a_handler_restarts() {
    let mut cache = new_cache();
    let plain = EndpointConfig {
        has_lifecycle: false,
        ..unversioned()
    };
    let list = cache.add_endpoint("list", plain).expect("a new name");
    let key = key("list", "all");
    assert_eq!(cache.restart(0, &key), Err(RestartRefused::NotLive));
    cache.upsert(0, list, &key, msgs(&["a"])).expect("its key");
    assert_eq!(cache.restart(1, &key), Err(RestartRefused::NoHandler));
    assert_eq!(
        cache.entry(&key).map(|e| e.handler),
        Some(HandlerId::from(LifetimeId(1)))
    );
    assert_eq!(count(&cache, "lifecycle_restarted"), 0);
}

#[test]
fn r28_a_failed_stream_rejects_the_query_on_an_endpoint_that_chooses_it() {
    use livecache::core::Status;
    let plain = versioned(false, Resync::Refetch, 10);
    let rejecting = EndpointConfig {
        stream_failure_rejects: true,
        ..plain
    };
    for (config, expected) in [(plain, Status::Fulfilled), (rejecting, Status::Rejected)] {
        let (mut cache, room, _) = live_room(config, 2);
        let failed = StreamStatus::Failed {
            error: "connection reset".into(),
        };
        cache
            .stream_status(200, ROOM, failed.clone())
            .expect("the room is live");
        let entry = cache.entry(&room).expect("live");
        assert_eq!((entry.status, &entry.stream), (expected, &failed));
        // The data and the request's own outcome stay; nothing failed but the stream.
        assert_eq!(entry.data, Some(&up_to(2)));
        assert_eq!(entry.error, None);
        // A live stream again: the requests' status again.
        cache
            .stream_status(300, ROOM, StreamStatus::Live)
            .expect("the room is live");
        let entry = cache.entry(&room).expect("live");
        assert_eq!(entry.status, Status::Fulfilled);
        // `Ended` is not a failure: it rejects nothing.
        let ended = StreamStatus::Ended {
            reason: "bye".into(),
        };
        cache.stream_status(400, ROOM, ended).expect("live");
        assert_eq!(
            cache.entry(&room).map(|e| e.status),
            Some(Status::Fulfilled)
        );
    }
}

// ===== R32 (the entry's side): a source that reconnected resyncs its entry =====

#[test]
fn r32_a_reconnected_source_resyncs_its_entry_by_its_policy() {
    // Refetch: stale until the refetched snapshot lands; messages meanwhile are rebased.
    let (mut cache, room, _) = live_room(versioned(true, Resync::Refetch, 10), 3);
    cache.source_resync(200, ROOM).expect("the room is live");
    assert_eq!(
        stream(&cache, &room),
        StreamStatus::Resyncing { since_ms: 200 }
    );
    let effects = drain(&mut cache);
    assert!(effects.contains(&start_request(&room, 2)));
    assert_eq!(send(&mut cache, 210, 4), Ok(Delivery::Applied));
    cache.fulfil_versioned(300, &room, RequestId(2), up_to(5), Version::new(5));
    assert_eq!(stream(&cache, &room), StreamStatus::Live);
    assert_eq!(data(&cache, &room), Some(up_to(5)));
    insta::assert_yaml_snapshot!(
        "r32_a_reconnected_source_resyncs_its_entry_by_its_policy",
        cache.trace()
    );

    // Resume: the source is asked to replay from the watermark's next version.
    let (mut cache, room, _) = live_room(versioned(true, Resync::Resume, 10), 3);
    assert_eq!(cache.resume_from(ROOM), Some(Version::new(4)));
    cache.source_resync(200, ROOM).expect("the room is live");
    assert_eq!(drain(&mut cache), [resume(&room, 4), notify(&room)]);
    cache.resync_done(250, ROOM).expect("live");
    assert_eq!(stream(&cache, &room), StreamStatus::Live);

    // Unversioned: a refetch, its reason `resync`.
    let mut cache = new_cache();
    let chat = cache
        .add_endpoint("chat", unversioned())
        .expect("a new name");
    let room = self::room();
    cache
        .upsert(0, chat, &room, msgs(&["hi"]))
        .expect("its key");
    let _ = drain(&mut cache);
    cache.source_resync(10, ROOM).expect("live");
    assert_eq!(
        cache.entry(&room).and_then(|e| e.in_flight),
        Some(RequestId(1))
    );
    let last = cache.trace().pop().map(|e| e.kind);
    assert_eq!(
        last,
        Some(TraceKind::RequestStarted {
            request: 1,
            reason: RequestReason::Resync
        })
    );
    // A restarted handler's source is not the entry's any more (R30).
    let new = cache
        .restart(20, &room)
        .expect("the endpoint has a handler");
    assert_eq!(cache.source_resync(30, ROOM), Err(UpdateRefused::NotLive));
    assert_eq!(cache.source_resync(30, new), Ok(()));
}
