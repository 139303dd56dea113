//! One trace test per rule of `docs/spec.md` (R1–R21), driven through the sans-IO core.
//!
//! Each test plays a short, realistic scenario (RTK Query's timings: default keep 60 s, checked
//! at 59 s present / 61 s gone; an api keep of 29 s; an endpoint keep of 35 s; keep 0; keep
//! never), asserts what the rule states on entries, drained effects and return values, and then
//! snapshots the whole trace (`tests/it/snapshots/it__rule_traces__rNN_*.snap`). The snapshots
//! were checked by hand against `docs/spec.md` and `docs/semantics.md`; a change to one is a change of
//! behaviour and needs the same review.
//!
//! Rules at the core level: R12/R13/R14/R17 are observed through the effects the core queues for
//! the runtime (`StartLifecycle`, `ResolveDataLoaded`, `EntryRemoved { loaded }` and their order);
//! R16 is `Cache::lifecycle_ended` with a failed or panicked outcome; R21 drives the core's
//! stream `Attachment` beside the cache and carries out its decisions the way the runtime's
//! stream task does.

use std::time::Duration;

use livecache::core::{Attachment, Finish, Received, StreamEndReason};
use livecache::core::{
    Cache, CacheConfig, Effect, EndpointConfig, Keep, LifetimeId, MAX_KEEP_MS, PatchError, Patches,
    Phase, Refetch, RequestId, Status, SubscriptionId, UpdateRefused as UpdateError,
};
use livecache::core::{CacheKey, default_key};
use livecache::core::{HandlerOutcome, Recording, TraceEvent, TraceKind, UpdateSource};
use livecache::core::{Patch, PatchSet};
use serde_json::json;

type Data = Vec<String>;
type Core = Cache<Data>;

/// A core recording events with patches, with the api keep time `keep`.
fn new_cache(keep: Keep) -> Core {
    Cache::new(CacheConfig {
        keep,
        recording: Recording::EventsWithPatches,
    })
}

/// An endpoint with an `on_cache_entry_added` handler and the api's keep time.
fn with_lifecycle() -> EndpointConfig {
    EndpointConfig {
        keep: None,
        has_lifecycle: true,
        versions: None,
        stream_failure_rejects: false,
        retry: None,
    }
}

/// An endpoint without a handler, with its own keep time (`None`: the api's).
fn plain(keep: Option<Keep>) -> EndpointConfig {
    EndpointConfig {
        keep,
        has_lifecycle: false,
        versions: None,
        stream_failure_rejects: false,
        retry: None,
    }
}

fn key(endpoint: &str, arg: &str) -> CacheKey {
    default_key(endpoint, &arg).expect("a string argument always serialises")
}

fn msgs(items: &[&str]) -> Data {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// The effects queued, request events for the lifecycle aside (R29's, pinned by the live
/// rules' `r29_…` tests; here they would only repeat each request's start and end).
fn drain(cache: &mut Core) -> Vec<Effect<Data>> {
    std::iter::from_fn(|| cache.poll_effect())
        .filter(|e| !matches!(e, Effect::RequestEvent { .. }))
        .collect()
}

/// The effects other than `Notify`, in order.
fn without_notify(effects: &[Effect<Data>]) -> Vec<Effect<Data>> {
    effects
        .iter()
        .filter(|e| !matches!(e, Effect::Notify { .. }))
        .cloned()
        .collect()
}

/// The event names (`entry_added`, `subscribed`, …) recorded for `key`, in order.
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

fn count(cache: &Core, name: &str) -> usize {
    cache
        .trace()
        .iter()
        .filter(|e| serde_json::to_value(&e.kind).expect("serialises")["event"] == name)
        .count()
}

fn last_event(cache: &Core) -> TraceEvent {
    cache
        .trace()
        .last()
        .cloned()
        .expect("something was recorded")
}

fn patch(value: serde_json::Value) -> Patch {
    serde_json::from_value(value).expect("a valid RFC 6902 document")
}

fn start_lifecycle(key: &CacheKey, lifetime: u64) -> Effect<Data> {
    Effect::StartLifecycle {
        key: key.clone(),
        lifetime: LifetimeId(lifetime),
    }
}

fn start_request(key: &CacheKey, request: u64) -> Effect<Data> {
    Effect::StartRequest {
        key: key.clone(),
        request: RequestId(request),
    }
}

fn abort(key: &CacheKey, request: u64) -> Effect<Data> {
    Effect::AbortRequest {
        key: key.clone(),
        request: RequestId(request),
    }
}

fn data_loaded(lifetime: u64, request: Option<u64>, data: &[&str]) -> Effect<Data> {
    Effect::ResolveDataLoaded {
        lifetime: LifetimeId(lifetime),
        request: request.map(RequestId),
        data: msgs(data),
    }
}

fn removed(key: &CacheKey, lifetime: u64, loaded: bool) -> Effect<Data> {
    Effect::EntryRemoved {
        key: key.clone(),
        lifetime: LifetimeId(lifetime),
        loaded,
    }
}

fn notify(key: &CacheKey) -> Effect<Data> {
    Effect::Notify { key: key.clone() }
}

/// SPEC R4's invariant: zero subscribers ⇔ a removal deadline is armed (finite keep time).
fn assert_unused_iff_armed(cache: &Core, key: &CacheKey) {
    let entry = cache.entry(key).expect("entry is live");
    assert_eq!(
        entry.subscribers == 0,
        entry.removal_deadline.is_some(),
        "{key}: subscribers={} deadline={:?}",
        entry.subscribers,
        entry.removal_deadline
    );
}

// ===== Subscriptions and removal =====

#[test]
fn r01_subscribe_to_absent_key_adds_entry_starts_lifecycle_then_request() {
    let mut cache = new_cache(Keep::default());
    let chat = cache
        .add_endpoint("getMessages", with_lifecycle())
        .expect("endpoint names are distinct");
    let users = cache
        .add_endpoint("getUser", plain(None))
        .expect("endpoint names are distinct");
    let room = key("getMessages", "redux");
    let ada = key("getUser", "ada");

    assert!(cache.entry(&room).is_none());
    let sub = cache
        .subscribe(0, chat, &room, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    assert_eq!(sub, SubscriptionId(1));
    let entry = cache.entry(&room).expect("subscribing creates the entry");
    assert_eq!(entry.lifetime, LifetimeId(1));
    assert_eq!(entry.phase, Phase::Loading);
    assert_eq!(entry.status, Status::Pending);
    assert_eq!(entry.in_flight, Some(RequestId(1)));
    assert_eq!(entry.subscribers, 1);
    assert_eq!(entry.removal_deadline, None);
    assert_eq!(entry.data, None);
    // the handler starts before the request, so it can open its stream first
    assert_eq!(
        drain(&mut cache),
        [
            start_lifecycle(&room, 1),
            start_request(&room, 1),
            notify(&room)
        ]
    );

    // an endpoint without a handler: the request only
    cache
        .subscribe(10, users, &ada, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    assert_eq!(
        cache.entry(&ada).map(|e| e.in_flight),
        Some(Some(RequestId(2)))
    );
    assert_eq!(drain(&mut cache), [start_request(&ada, 2), notify(&ada)]);

    cache.fulfil(120, &room, RequestId(1), msgs(&["hello"]));
    assert_eq!(cache.entry(&room).map(|e| e.phase), Some(Phase::Loaded));

    assert_eq!(
        names(&cache, &room),
        [
            "entry_added",
            "subscribed",
            "lifecycle_started",
            "request_started",
            "request_fulfilled",
            "data_loaded"
        ]
    );
    assert_eq!(
        names(&cache, &ada),
        ["entry_added", "subscribed", "request_started"]
    );
    insta::assert_yaml_snapshot!(
        "r01_subscribe_to_absent_key_adds_entry_starts_lifecycle_then_request",
        cache.trace()
    );
}

#[test]
fn r02_subscribe_to_present_key_adds_subscriber_cancels_removal_requests_only_when_asked() {
    let mut cache = new_cache(Keep::default());
    let chat = cache
        .add_endpoint("getMessages", with_lifecycle())
        .expect("endpoint names are distinct");
    let room = key("getMessages", "redux");

    let first = cache
        .subscribe(0, chat, &room, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    cache.fulfil(100, &room, RequestId(1), msgs(&["hello"]));
    drain(&mut cache);

    // a cache hit: one more subscriber, no request, no new lifecycle
    let second = cache
        .subscribe(1_000, chat, &room, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    let entry = cache.entry(&room).expect("live");
    assert_eq!(
        (entry.subscribers, entry.in_flight, entry.lifetime),
        (2, None, LifetimeId(1))
    );
    // nothing a subscriber can see changed: no notification
    assert_eq!(drain(&mut cache), []);

    // a pending removal is cancelled by a new subscriber
    assert!(cache.unsubscribe(2_000, first));
    assert!(cache.unsubscribe(2_000, second));
    assert_eq!(cache.poll_timeout(), Some(62_000));
    drain(&mut cache);
    cache
        .subscribe(30_000, chat, &room, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    let entry = cache.entry(&room).expect("live");
    assert_eq!(
        (entry.subscribers, entry.removal_deadline, entry.in_flight),
        (1, None, None)
    );
    assert_eq!(cache.poll_timeout(), None);
    assert_eq!(
        drain(&mut cache),
        [],
        "a cancelled removal is not visible to subscribers"
    );
    cache.handle_timeout(62_000);
    assert_eq!(cache.entry(&room).map(|e| e.lifetime), Some(LifetimeId(1)));

    // force_refetch / refetch_on_mount_or_arg_change: true
    cache
        .subscribe(63_000, chat, &room, Refetch::Always)
        .expect("the key is this endpoint's");
    let entry = cache.entry(&room).expect("live");
    assert_eq!(entry.status, Status::Pending);
    assert_eq!(entry.data, Some(&msgs(&["hello"])));
    assert_eq!(drain(&mut cache), [start_request(&room, 2), notify(&room)]);
    cache.fulfil(63_100, &room, RequestId(2), msgs(&["hello", "again"]));

    // refetch_on_mount_or_arg_change: 10 (seconds): 9.9 s old → no request; 10 s old → request
    cache
        .subscribe(73_000, chat, &room, Refetch::IfOlderThan(10_000))
        .expect("the key is this endpoint's");
    assert_eq!(cache.entry(&room).map(|e| e.in_flight), Some(None));
    cache
        .subscribe(73_100, chat, &room, Refetch::IfOlderThan(10_000))
        .expect("the key is this endpoint's");
    assert_eq!(
        cache.entry(&room).map(|e| e.in_flight),
        Some(Some(RequestId(3)))
    );
    assert_eq!(cache.entry(&room).map(|e| e.subscribers), Some(4));

    assert_eq!(count(&cache, "lifecycle_started"), 1);
    assert_eq!(count(&cache, "entry_added"), 1);
    assert_eq!(count(&cache, "removal_cancelled"), 1);
    insta::assert_yaml_snapshot!(
        "r02_subscribe_to_present_key_adds_subscriber_cancels_removal_requests_only_when_asked",
        cache.trace()
    );
}

#[test]
fn r03_request_in_flight_is_joined_never_duplicated() {
    let mut cache = new_cache(Keep::default());
    let chat = cache
        .add_endpoint("getMessages", with_lifecycle())
        .expect("endpoint names are distinct");
    let room = key("getMessages", "redux");

    let a = cache
        .subscribe(0, chat, &room, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    drain(&mut cache);

    // a forced refetch while request 1 is in flight joins it
    let b = cache
        .subscribe(10, chat, &room, Refetch::Always)
        .expect("the key is this endpoint's");
    assert_eq!(drain(&mut cache), []);
    assert_eq!(
        last_event(&cache).kind,
        TraceKind::RequestJoined { request: 1 }
    );
    assert!(cache.refetch(20, a));
    cache
        .prefetch(30, chat, &room, Refetch::Always)
        .expect("the key is this endpoint's");
    let effects = drain(&mut cache);
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::StartRequest { .. })),
        "{effects:?}"
    );
    assert_eq!(
        cache.entry(&room).map(|e| e.in_flight),
        Some(Some(RequestId(1)))
    );
    assert_eq!(count(&cache, "request_joined"), 3);
    assert_eq!(count(&cache, "request_started"), 1);

    // one result serves both subscribers
    cache.fulfil(100, &room, RequestId(1), msgs(&["hello"]));
    let entry = cache.entry(&room).expect("live");
    assert_eq!((entry.status, entry.in_flight), (Status::Fulfilled, None));
    assert_eq!(cache.subscriptions_of(&room), [a, b]);
    drain(&mut cache);

    // once settled, a refetch starts a new request
    assert!(cache.refetch(200, b));
    assert_eq!(drain(&mut cache)[..1], [start_request(&room, 2)]);
    insta::assert_yaml_snapshot!(
        "r03_request_in_flight_is_joined_never_duplicated",
        cache.trace()
    );
}

#[test]
fn r04_last_unsubscribe_schedules_removal_after_keep_time() {
    // --- the default: 60 s, counted from the last unsubscribe or a later settle ---
    assert_eq!(Keep::default(), Keep::For(60_000));
    let mut cache = new_cache(Keep::default());
    let chat = cache
        .add_endpoint("getMessages", plain(None))
        .expect("endpoint names are distinct");
    let room = key("getMessages", "redux");
    let lobby = key("getMessages", "lobby");

    let sub = cache
        .subscribe(0, chat, &room, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    cache.fulfil(150, &room, RequestId(1), msgs(&["hello"]));
    assert_unused_iff_armed(&cache, &room);
    assert!(cache.unsubscribe(1_000, sub));
    assert_unused_iff_armed(&cache, &room);
    assert_eq!(
        cache.entry(&room).map(|e| e.removal_deadline),
        Some(Some(61_000))
    );
    assert_eq!(cache.poll_timeout(), Some(61_000));
    cache.handle_timeout(60_000); // 59 s after the unsubscribe
    assert!(cache.entry(&room).is_some());
    cache.handle_timeout(62_000); // 61 s after
    assert!(cache.entry(&room).is_none());
    assert_eq!(last_event(&cache).at_ms, 61_000, "stamped at its deadline");

    // a request that settles with zero subscribers re-arms from the settle time
    let sub = cache
        .subscribe(100_000, chat, &lobby, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    assert!(cache.unsubscribe(100_010, sub));
    assert_eq!(
        cache.entry(&lobby).map(|e| e.removal_deadline),
        Some(Some(160_010))
    );
    cache.fulfil(105_000, &lobby, RequestId(2), msgs(&["hi"]));
    assert_eq!(
        cache.entry(&lobby).map(|e| e.removal_deadline),
        Some(Some(165_000))
    );
    assert_unused_iff_armed(&cache, &lobby);
    cache.handle_timeout(164_000);
    assert!(cache.entry(&lobby).is_some());
    cache.handle_timeout(165_000);
    assert!(cache.entry(&lobby).is_none());
    insta::assert_yaml_snapshot!("r04_default_keep_60s_rearmed_on_settle", cache.trace());

    // --- api keep 29 s; endpoint overrides: 35 s, 0, never, clamped ---
    assert_eq!(Keep::seconds(-5.0), Keep::For(0));
    assert_eq!(Keep::seconds(f64::INFINITY), Keep::Never);
    assert_eq!(Keep::from(Duration::MAX), Keep::For(MAX_KEEP_MS));
    let mut cache = new_cache(Keep::For(29_000));
    let posts = cache
        .add_endpoint("getPosts", plain(None))
        .expect("endpoint names are distinct");
    let user = cache
        .add_endpoint("getUser", plain(Some(Keep::For(35_000))))
        .expect("endpoint names are distinct");
    let flash = cache
        .add_endpoint("getFlash", plain(Some(Keep::seconds(0.0))))
        .expect("endpoint names are distinct");
    let config = cache
        .add_endpoint("getConfig", plain(Some(Keep::Never)))
        .expect("endpoint names are distinct");
    let archive = cache
        .add_endpoint("getArchive", plain(Some(Keep::from(Duration::MAX))))
        .expect("endpoint names are distinct");
    let keys = [
        (flash, key("getFlash", "x")),
        (posts, key("getPosts", "x")),
        (user, key("getUser", "x")),
        (config, key("getConfig", "x")),
        (archive, key("getArchive", "x")),
    ];
    let subs: Vec<SubscriptionId> = keys
        .iter()
        .map(|(ep, k)| {
            cache
                .subscribe(0, *ep, k, Refetch::IfMissing)
                .expect("the key is this endpoint's")
        })
        .collect();
    for (request, (_, k)) in (1..).zip(&keys) {
        cache.fulfil(100, k, RequestId(request), msgs(&["x"]));
    }
    let [flash_key, posts_key, user_key, config_key, archive_key] = keys.map(|(_, k)| k);

    // keep 0: never removed inside the unsubscribe, nor by another event at the same instant
    assert!(cache.unsubscribe(1_000, subs[0]));
    assert_eq!(
        cache.entry(&flash_key).map(|e| e.removal_deadline),
        Some(Some(1_000))
    );
    for sub in &subs[1..] {
        assert!(cache.unsubscribe(1_000, *sub));
    }
    assert!(cache.entry(&flash_key).is_some());
    let deadline = |cache: &Core, k: &CacheKey| cache.entry(k).and_then(|e| e.removal_deadline);
    assert_eq!(deadline(&cache, &posts_key), Some(30_000));
    assert_eq!(deadline(&cache, &user_key), Some(36_000));
    assert_eq!(deadline(&cache, &config_key), None);
    assert_eq!(deadline(&cache, &archive_key), Some(1_000 + 2_147_482_647));
    // … only the next timer tick removes it
    cache.handle_timeout(1_000);
    assert!(cache.entry(&flash_key).is_none());

    cache.handle_timeout(29_000); // api 29 s: present 28 s after
    assert!(cache.entry(&posts_key).is_some());
    cache.handle_timeout(31_000); // gone 30 s after
    assert!(cache.entry(&posts_key).is_none());
    cache.handle_timeout(35_000); // endpoint 35 s overrides: present 34 s after
    assert!(cache.entry(&user_key).is_some());
    cache.handle_timeout(37_000); // gone 36 s after
    assert!(cache.entry(&user_key).is_none());
    cache.handle_timeout(2_147_483_646);
    assert!(cache.entry(&archive_key).is_some());
    cache.handle_timeout(2_147_483_647);
    assert!(cache.entry(&archive_key).is_none());
    // keep never: still here, no timer left
    assert!(cache.entry(&config_key).is_some());
    assert_eq!(cache.poll_timeout(), None);
    insta::assert_yaml_snapshot!(
        "r04_api_keep_29s_endpoint_35s_zero_never_clamped",
        cache.trace()
    );
}

#[test]
fn r05_expiry_aborts_request_and_removes_entry_stale_timer_spares_recreated_entry() {
    let mut cache = new_cache(Keep::default());
    let chat = cache
        .add_endpoint("getMessages", with_lifecycle())
        .expect("endpoint names are distinct");
    let room = key("getMessages", "redux");
    let lobby = key("getMessages", "lobby");

    let sub = cache
        .subscribe(0, chat, &room, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    cache.fulfil(100, &room, RequestId(1), msgs(&["hello"]));
    assert!(cache.refetch(30_000, sub)); // request 2, still running at expiry
    assert!(cache.unsubscribe(30_500, sub));
    cache.handle_timeout(89_500); // 59 s later
    assert_eq!(
        cache.entry(&room).map(|e| e.in_flight),
        Some(Some(RequestId(2)))
    );
    drain(&mut cache);
    cache.handle_timeout(91_500); // 61 s later
    assert!(cache.entry(&room).is_none());
    assert_eq!(
        drain(&mut cache),
        [abort(&room, 2), removed(&room, 1, true), notify(&room)]
    );
    let tail: Vec<String> = cache.trace()[cache.trace().len() - 2..]
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        tail,
        [
            "90500ms getMessages(\"redux\") request_aborted request=2",
            "90500ms getMessages(\"redux\") entry_removed lifetime=1 cause=expired loaded=true",
        ]
    );
    // the aborted request's late result does not bring the entry back
    cache.fulfil(92_000, &room, RequestId(2), msgs(&["late"]));
    assert!(cache.entry(&room).is_none());

    // the old deadline (160 s) of a removed lifetime never removes the re-created entry
    cache
        .prefetch(100_000, chat, &lobby, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    assert_eq!(cache.poll_timeout(), Some(160_000));
    assert!(cache.remove(110_000, &lobby));
    cache
        .prefetch(120_000, chat, &lobby, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    assert_eq!(cache.poll_timeout(), Some(180_000));
    drain(&mut cache);
    cache.handle_timeout(160_000);
    let entry = cache.entry(&lobby).expect("the re-created entry survives");
    assert_eq!(
        (entry.lifetime, entry.in_flight),
        (LifetimeId(3), Some(RequestId(4)))
    );
    assert_eq!(drain(&mut cache), []);
    cache.handle_timeout(180_000);
    assert!(cache.entry(&lobby).is_none());
    assert_eq!(
        drain(&mut cache),
        [abort(&lobby, 4), removed(&lobby, 3, false), notify(&lobby)]
    );
    insta::assert_yaml_snapshot!(
        "r05_expiry_aborts_request_and_removes_entry_stale_timer_spares_recreated_entry",
        cache.trace()
    );
}

#[test]
fn r06_prefetch_schedules_removal_cache_hit_does_not_extend_it() {
    let mut cache = new_cache(Keep::default());
    let chat = cache
        .add_endpoint("getMessages", plain(None))
        .expect("endpoint names are distinct");
    let room = key("getMessages", "redux");
    let lobby = key("getMessages", "lobby");

    cache
        .prefetch(0, chat, &room, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    let entry = cache.entry(&room).expect("prefetch creates the entry");
    assert_eq!(
        (entry.subscribers, entry.removal_deadline, entry.in_flight),
        (0, Some(60_000), Some(RequestId(1)))
    );
    assert_eq!(drain(&mut cache), [start_request(&room, 1), notify(&room)]);

    // re-armed when its request settles
    cache.fulfil(2_000, &room, RequestId(1), msgs(&["hello"]));
    assert_eq!(
        cache.entry(&room).map(|e| e.removal_deadline),
        Some(Some(62_000))
    );

    // a cache hit without a subscription: no request, lifetime not extended, nothing recorded
    drain(&mut cache);
    let before = cache.trace().len();
    cache
        .prefetch(30_000, chat, &room, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    assert_eq!(cache.trace().len(), before);
    assert_eq!(
        cache.entry(&room).map(|e| e.removal_deadline),
        Some(Some(62_000))
    );
    assert!(
        !drain(&mut cache)
            .iter()
            .any(|e| matches!(e, Effect::StartRequest { .. }))
    );
    cache.handle_timeout(61_000);
    assert!(cache.entry(&room).is_some());
    cache.handle_timeout(62_000);
    assert!(cache.entry(&room).is_none());

    // a prefetch whose request never settles is still collected (RTK leaks it)
    cache
        .prefetch(100_000, chat, &lobby, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    drain(&mut cache);
    cache.handle_timeout(160_000);
    assert!(cache.entry(&lobby).is_none());
    assert_eq!(
        drain(&mut cache),
        [abort(&lobby, 2), removed(&lobby, 2, false), notify(&lobby)]
    );
    assert!(cache.is_empty());
    insta::assert_yaml_snapshot!(
        "r06_prefetch_schedules_removal_cache_hit_does_not_extend_it",
        cache.trace()
    );
}

#[test]
fn r07_remove_and_reset_remove_entries_now_and_cancel_timers() {
    let mut cache = new_cache(Keep::default());
    let chat = cache
        .add_endpoint("getMessages", with_lifecycle())
        .expect("endpoint names are distinct");
    let a = key("getMessages", "a");
    let b = key("getMessages", "b");
    let c = key("getMessages", "c");

    cache
        .subscribe(0, chat, &a, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    cache.fulfil(100, &a, RequestId(1), msgs(&["hi"]));
    let sub_b = cache
        .subscribe(100, chat, &b, Refetch::IfMissing)
        .expect("the key is this endpoint's"); // request 2 in flight
    cache
        .prefetch(100, chat, &c, Refetch::IfMissing)
        .expect("the key is this endpoint's"); // request 3, deadline 60.1 s
    drain(&mut cache);

    assert!(cache.remove(1_000, &a));
    assert!(cache.entry(&a).is_none());
    assert!(cache.subscriptions_of(&a).is_empty());
    assert_eq!(drain(&mut cache), [removed(&a, 1, true), notify(&a)]);
    assert!(!cache.remove(1_500, &a));
    assert_eq!(drain(&mut cache), []);

    cache.reset(2_000);
    assert!(cache.is_empty());
    assert_eq!(cache.poll_timeout(), None);
    assert_eq!(
        drain(&mut cache),
        [
            abort(&b, 2),
            removed(&b, 2, false),
            notify(&b),
            abort(&c, 3),
            removed(&c, 3, false),
            notify(&c),
        ]
    );
    // no timer survives the reset; old subscriptions are inert
    let before = cache.trace().len();
    cache.handle_timeout(60_100);
    assert!(!cache.unsubscribe(60_100, sub_b));
    assert_eq!(cache.trace().len(), before);

    // the api is usable after reset; ids are never reused
    cache
        .subscribe(61_000, chat, &b, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    assert_eq!(cache.entry(&b).map(|e| e.lifetime), Some(LifetimeId(4)));
    assert_eq!(
        drain(&mut cache),
        [start_lifecycle(&b, 4), start_request(&b, 4), notify(&b)]
    );
    insta::assert_yaml_snapshot!(
        "r07_remove_and_reset_remove_entries_now_and_cancel_timers",
        cache.trace()
    );
}

#[test]
fn r07a_stale_handles_never_touch_another_lifetime_of_the_key() {
    let mut cache = new_cache(Keep::default());
    let chat = cache
        .add_endpoint("getMessages", with_lifecycle())
        .expect("endpoint names are distinct");
    let room = key("getMessages", "redux");

    let old = cache
        .subscribe(0, chat, &room, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    cache.fulfil(100, &room, RequestId(1), msgs(&["hello"]));
    assert!(cache.remove(1_000, &room));
    let new = cache
        .subscribe(2_000, chat, &room, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    cache.fulfil(2_100, &room, RequestId(2), msgs(&["fresh"]));
    drain(&mut cache);
    let before = cache.trace().len();

    // the first lifetime's subscription, handle and request do nothing to the second lifetime
    assert!(!cache.unsubscribe(3_000, old));
    assert!(!cache.refetch(3_000, old));
    assert_eq!(
        cache.update_cached(3_000, LifetimeId(1), Patches::Wanted, |d| d
            .push("stale".into())),
        Err(UpdateError::NotLive)
    );
    cache.fulfil(3_000, &room, RequestId(1), msgs(&["late"]));
    let entry = cache.entry(&room).expect("second lifetime is live");
    assert_eq!(entry.lifetime, LifetimeId(2));
    assert_eq!(entry.subscribers, 1);
    assert_eq!(entry.removal_deadline, None);
    assert_eq!(entry.in_flight, None);
    assert_eq!(entry.data, Some(&msgs(&["fresh"])));
    assert_eq!(cache.subscriptions_of(&room), [new]);
    assert_eq!(drain(&mut cache), []);
    assert_eq!(
        cache.trace()[before..]
            .iter()
            .map(|e| e.kind.clone())
            .collect::<Vec<_>>(),
        [TraceKind::ResultIgnored { request: 1 }],
        "only the late result is recorded, as ignored"
    );

    // unsubscribing twice does not restart the timer
    assert!(cache.unsubscribe(4_000, new));
    assert_eq!(cache.poll_timeout(), Some(64_000));
    assert!(!cache.unsubscribe(10_000, new));
    assert_eq!(cache.poll_timeout(), Some(64_000));
    cache.handle_timeout(64_000);
    assert!(cache.entry(&room).is_none());
    insta::assert_yaml_snapshot!(
        "r07a_stale_handles_never_touch_another_lifetime_of_the_key",
        cache.trace()
    );
}

// ===== Requests =====

#[test]
fn r08_matching_fulfil_stores_data_clears_error_resolves_data_loaded_once() {
    let mut cache = new_cache(Keep::default());
    let chat = cache
        .add_endpoint("getMessages", with_lifecycle())
        .expect("endpoint names are distinct");
    let room = key("getMessages", "redux");

    let sub = cache
        .subscribe(0, chat, &room, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    cache.reject(100, &room, RequestId(1), "offline".to_owned());
    assert_eq!(
        cache.entry(&room).and_then(|e| e.error.cloned()),
        Some("offline".to_owned())
    );
    assert!(cache.refetch(200, sub));
    drain(&mut cache);

    cache.fulfil(300, &room, RequestId(2), msgs(&["hello"]));
    let entry = cache.entry(&room).expect("live");
    assert_eq!(entry.status, Status::Fulfilled);
    assert_eq!(entry.error, None);
    assert_eq!(entry.fulfilled_at, Some(300));
    assert_eq!(entry.phase, Phase::Loaded);
    assert_eq!(entry.data, Some(&msgs(&["hello"])));
    assert_eq!(
        drain(&mut cache),
        [data_loaded(1, Some(2), &["hello"]), notify(&room)]
    );

    // equal data: not replaced, not reported as changed, data_loaded not resolved again
    assert!(cache.refetch(1_000, sub));
    cache.fulfil(1_100, &room, RequestId(3), msgs(&["hello"]));
    assert_eq!(
        last_event(&cache).kind,
        TraceKind::RequestFulfilled {
            request: 3,
            data_changed: false
        }
    );
    assert_eq!(cache.entry(&room).and_then(|e| e.fulfilled_at), Some(1_100));
    assert!(
        !drain(&mut cache)
            .iter()
            .any(|e| matches!(e, Effect::ResolveDataLoaded { .. }))
    );

    // new data replaces the old
    assert!(cache.refetch(2_000, sub));
    cache.fulfil(2_100, &room, RequestId(4), msgs(&["hello", "world"]));
    assert_eq!(
        cache.entry(&room).and_then(|e| e.data.cloned()),
        Some(msgs(&["hello", "world"]))
    );
    assert!(
        !drain(&mut cache)
            .iter()
            .any(|e| matches!(e, Effect::ResolveDataLoaded { .. }))
    );
    assert_eq!(count(&cache, "data_loaded"), 1);
    insta::assert_yaml_snapshot!(
        "r08_matching_fulfil_stores_data_clears_error_resolves_data_loaded_once",
        cache.trace()
    );
}

#[test]
fn r09_matching_reject_stores_error_keeps_data_leaves_data_loaded_pending() {
    let mut cache = new_cache(Keep::default());
    let chat = cache
        .add_endpoint("getMessages", with_lifecycle())
        .expect("endpoint names are distinct");
    let room = key("getMessages", "redux");
    let lobby = key("getMessages", "lobby");

    // after data: stale-while-revalidate
    let sub = cache
        .subscribe(0, chat, &room, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    cache.fulfil(100, &room, RequestId(1), msgs(&["hello"]));
    assert!(cache.refetch(1_000, sub));
    drain(&mut cache);
    cache.reject(1_200, &room, RequestId(2), "HTTP 500".to_owned());
    let entry = cache.entry(&room).expect("live");
    assert_eq!(entry.status, Status::Rejected);
    assert_eq!(entry.error, Some(&"HTTP 500".to_owned()));
    assert_eq!(entry.data, Some(&msgs(&["hello"])));
    assert_eq!(entry.phase, Phase::Loaded);
    assert_eq!(entry.fulfilled_at, Some(100));
    assert_eq!(entry.in_flight, None);
    assert_eq!(drain(&mut cache), [notify(&room)]);

    // before data: data_loaded stays pending until a request fulfils
    let sub = cache
        .subscribe(2_000, chat, &lobby, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    drain(&mut cache);
    cache.reject(2_100, &lobby, RequestId(3), "timeout".to_owned());
    let entry = cache.entry(&lobby).expect("live");
    assert_eq!(
        (entry.phase, entry.status, entry.data),
        (Phase::Loading, Status::Rejected, None)
    );
    assert_eq!(drain(&mut cache), [notify(&lobby)]);
    assert!(cache.refetch(2_200, sub));
    let entry = cache.entry(&lobby).expect("live");
    assert_eq!(entry.status, Status::Pending);
    assert_eq!(
        entry.error,
        Some(&"timeout".to_owned()),
        "only a fulfil clears the error"
    );
    drain(&mut cache);
    cache.fulfil(2_300, &lobby, RequestId(4), msgs(&["welcome"]));
    assert_eq!(
        drain(&mut cache),
        [data_loaded(2, Some(4), &["welcome"]), notify(&lobby)]
    );
    assert_eq!(cache.entry(&lobby).and_then(|e| e.error), None);
    insta::assert_yaml_snapshot!(
        "r09_matching_reject_stores_error_keeps_data_leaves_data_loaded_pending",
        cache.trace()
    );
}

#[test]
fn r10_stale_or_absent_results_are_ignored_and_never_recreate_entries() {
    let mut cache = new_cache(Keep::default());
    let chat = cache
        .add_endpoint("getMessages", with_lifecycle())
        .expect("endpoint names are distinct");
    let room = key("getMessages", "redux");
    let ghost = key("getMessages", "ghost");

    cache
        .subscribe(0, chat, &room, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    assert!(cache.remove(500, &room)); // request 1 aborted
    cache
        .subscribe(600, chat, &room, Refetch::IfMissing)
        .expect("the key is this endpoint's"); // lifetime 2, request 2
    drain(&mut cache);

    cache.fulfil(700, &room, RequestId(1), msgs(&["late"]));
    cache.reject(710, &room, RequestId(1), "late error".to_owned());
    let entry = cache.entry(&room).expect("live");
    assert_eq!(entry.lifetime, LifetimeId(2));
    assert_eq!(entry.phase, Phase::Loading);
    assert_eq!(entry.status, Status::Pending);
    assert_eq!(entry.in_flight, Some(RequestId(2)));
    assert_eq!(entry.data, None);
    assert_eq!(entry.error, None);
    assert_eq!(drain(&mut cache), []);

    cache.fulfil(800, &room, RequestId(2), msgs(&["fresh"]));
    drain(&mut cache);
    // a duplicate result of a request that already settled
    cache.fulfil(900, &room, RequestId(2), msgs(&["again"]));
    assert_eq!(
        cache.entry(&room).and_then(|e| e.data.cloned()),
        Some(msgs(&["fresh"]))
    );
    // a result for a key that is not in the cache does not create it
    cache.fulfil(1_000, &ghost, RequestId(99), msgs(&["boo"]));
    assert!(cache.entry(&ghost).is_none());
    assert_eq!(cache.len(), 1);
    assert_eq!(drain(&mut cache), []);

    let ignored: Vec<(u64, u64)> = cache
        .trace()
        .iter()
        .filter_map(|e| match e.kind {
            TraceKind::ResultIgnored { request } => Some((e.at_ms, request)),
            _ => None,
        })
        .collect();
    assert_eq!(ignored, [(700, 1), (710, 1), (900, 2), (1_000, 99)]);
    insta::assert_yaml_snapshot!(
        "r10_stale_or_absent_results_are_ignored_and_never_recreate_entries",
        cache.trace()
    );
}

#[test]
fn r11_refetch_goes_pending_with_data_kept_no_new_lifecycle() {
    let mut cache = new_cache(Keep::default());
    let chat = cache
        .add_endpoint("getMessages", with_lifecycle())
        .expect("endpoint names are distinct");
    let room = key("getMessages", "redux");

    let sub = cache
        .subscribe(0, chat, &room, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    cache.fulfil(100, &room, RequestId(1), msgs(&["hello"]));
    drain(&mut cache);

    assert!(cache.refetch(5_000, sub));
    let entry = cache.entry(&room).expect("live");
    assert_eq!(entry.status, Status::Pending);
    assert_eq!(entry.data, Some(&msgs(&["hello"])));
    assert_eq!(entry.phase, Phase::Loaded);
    assert_eq!(entry.in_flight, Some(RequestId(2)));
    assert_eq!(drain(&mut cache), [start_request(&room, 2), notify(&room)]);

    cache
        .subscribe(6_000, chat, &room, Refetch::Always)
        .expect("the key is this endpoint's"); // joins request 2
    cache.fulfil(6_100, &room, RequestId(2), msgs(&["hello", "world"]));
    assert_eq!(drain(&mut cache), [notify(&room)]);

    // forced by a subscription
    cache
        .subscribe(7_000, chat, &room, Refetch::Always)
        .expect("the key is this endpoint's");
    let entry = cache.entry(&room).expect("live");
    assert_eq!(
        (entry.status, entry.in_flight),
        (Status::Pending, Some(RequestId(3)))
    );
    assert_eq!(entry.data, Some(&msgs(&["hello", "world"])));
    assert_eq!(drain(&mut cache), [start_request(&room, 3), notify(&room)]);
    cache.fulfil(7_100, &room, RequestId(3), msgs(&["hello", "world", "!"]));
    assert_eq!(drain(&mut cache), [notify(&room)]);

    assert_eq!(count(&cache, "lifecycle_started"), 1);
    assert_eq!(count(&cache, "data_loaded"), 1);
    insta::assert_yaml_snapshot!(
        "r11_refetch_goes_pending_with_data_kept_no_new_lifecycle",
        cache.trace()
    );
}

// ===== The lifecycle handler =====

#[test]
fn r12_lifecycle_starts_once_per_lifetime_and_again_after_recreation() {
    let mut cache = new_cache(Keep::default());
    let chat = cache
        .add_endpoint("getMessages", with_lifecycle())
        .expect("endpoint names are distinct");
    let users = cache
        .add_endpoint("getUser", plain(None))
        .expect("endpoint names are distinct");
    let room = key("getMessages", "redux");
    let lobby = key("getMessages", "lobby");
    let news = key("getMessages", "news");
    let ada = key("getUser", "ada");
    let mut effects = Vec::new();

    let s1 = cache
        .subscribe(0, chat, &room, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    let s2 = cache
        .subscribe(10, chat, &room, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    cache.fulfil(100, &room, RequestId(1), msgs(&["hello"]));
    assert!(cache.refetch(200, s1));
    cache.fulfil(300, &room, RequestId(2), msgs(&["hello", "world"]));
    assert!(cache.unsubscribe(1_000, s1));
    assert!(cache.unsubscribe(1_000, s2));
    cache.handle_timeout(61_000);
    assert!(cache.entry(&room).is_none());
    effects.extend(drain(&mut cache));
    let started: Vec<_> = effects
        .iter()
        .filter(|e| matches!(e, Effect::StartLifecycle { .. }))
        .cloned()
        .collect();
    assert_eq!(started, [start_lifecycle(&room, 1)]);

    // re-created: a fresh lifetime and handler; prefetch and upsert create entries too
    cache
        .subscribe(70_000, chat, &room, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    cache
        .prefetch(70_000, chat, &lobby, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    cache
        .upsert(70_000, chat, &news, msgs(&["breaking"]))
        .expect("the key is this endpoint's");
    cache
        .subscribe(70_000, users, &ada, Refetch::IfMissing)
        .expect("the key is this endpoint's"); // no handler
    effects.extend(drain(&mut cache));
    let started: Vec<_> = effects
        .iter()
        .filter(|e| matches!(e, Effect::StartLifecycle { .. }))
        .cloned()
        .collect();
    assert_eq!(
        started,
        [
            start_lifecycle(&room, 1),
            start_lifecycle(&room, 2),
            start_lifecycle(&lobby, 3),
            start_lifecycle(&news, 4),
        ]
    );
    assert_eq!(cache.entry(&ada).map(|e| e.lifetime), Some(LifetimeId(5)));
    assert!(!names(&cache, &ada).contains(&"lifecycle_started".to_owned()));
    insta::assert_yaml_snapshot!(
        "r12_lifecycle_starts_once_per_lifetime_and_again_after_recreation",
        cache.trace()
    );
}

#[test]
fn r13_data_loaded_resolves_with_first_data_or_reports_removed_before_loaded() {
    let mut cache = new_cache(Keep::default());
    let chat = cache
        .add_endpoint("getMessages", with_lifecycle())
        .expect("endpoint names are distinct");
    let room = key("getMessages", "redux");
    let lobby = key("getMessages", "lobby");
    let general = key("getMessages", "general");
    let mut effects = Vec::new();

    cache
        .subscribe(0, chat, &room, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    let lobby_sub = cache
        .subscribe(0, chat, &lobby, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    effects.extend(drain(&mut cache));
    cache.fulfil(100, &room, RequestId(1), msgs(&["hello"]));
    assert_eq!(
        drain(&mut cache),
        [data_loaded(1, Some(1), &["hello"]), notify(&room)]
    );

    // removed (expired) while its first request is still running
    assert!(cache.unsubscribe(200, lobby_sub));
    effects.extend(drain(&mut cache));
    cache.handle_timeout(60_200);
    assert_eq!(
        drain(&mut cache),
        [abort(&lobby, 2), removed(&lobby, 2, false), notify(&lobby)]
    );

    // removed after a rejected first request: still "removed before loaded"
    cache
        .subscribe(61_000, chat, &general, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    cache.reject(61_100, &general, RequestId(3), "offline".to_owned());
    effects.extend(drain(&mut cache));
    assert!(cache.remove(61_200, &general));
    assert_eq!(
        drain(&mut cache),
        [removed(&general, 3, false), notify(&general)]
    );
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::ResolveDataLoaded { .. })),
        "no data_loaded for lifetimes that never loaded: {effects:?}"
    );

    // the loaded one reports loaded on removal
    assert!(cache.remove(62_000, &room));
    assert_eq!(drain(&mut cache), [removed(&room, 1, true), notify(&room)]);
    insta::assert_yaml_snapshot!(
        "r13_data_loaded_resolves_with_first_data_or_reports_removed_before_loaded",
        cache.trace()
    );
}

#[test]
fn r14_entry_removed_resolves_once_after_the_entry_left_the_cache() {
    let mut cache = new_cache(Keep::default());
    let chat = cache
        .add_endpoint("getMessages", with_lifecycle())
        .expect("endpoint names are distinct");
    let room = key("getMessages", "redux");

    let sub = cache
        .subscribe(0, chat, &room, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    cache.fulfil(100, &room, RequestId(1), msgs(&["hello"]));
    assert_eq!(
        cache.update_cached(200, LifetimeId(1), Patches::NotWanted, |d| d
            .push("hi".into())),
        Ok(None)
    );
    assert!(cache.unsubscribe(1_000, sub));
    drain(&mut cache);

    cache.handle_timeout(61_000);
    let effects = drain(&mut cache);
    assert_eq!(effects, [removed(&room, 1, true), notify(&room)]);
    // when the runtime sees EntryRemoved the entry is already gone: reads say Uninitialized,
    // updates through handles that outlived it fail
    assert!(cache.entry(&room).is_none());
    assert_eq!(cache.key_of_lifetime(LifetimeId(1)), None);
    assert!(cache.subscriptions_of(&room).is_empty());
    assert_eq!(
        cache.update_cached(61_000, LifetimeId(1), Patches::Wanted, |d| d
            .push("too late".into())),
        Err(UpdateError::NotLive)
    );

    // it happens once: nothing more for lifetime 1
    assert!(!cache.remove(62_000, &room));
    cache.reset(63_000);
    cache.handle_timeout(200_000);
    assert_eq!(drain(&mut cache), []);
    assert_eq!(count(&cache, "entry_removed"), 1);
    insta::assert_yaml_snapshot!(
        "r14_entry_removed_resolves_once_after_the_entry_left_the_cache",
        cache.trace()
    );
}

#[test]
fn r15_update_cached_data_applies_once_with_invertible_patches() {
    let mut cache = new_cache(Keep::default());
    let chat = cache
        .add_endpoint("getMessages", with_lifecycle())
        .expect("endpoint names are distinct");
    let room = key("getMessages", "redux");

    cache
        .subscribe(0, chat, &room, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    // not before data
    assert_eq!(
        cache.update_cached(50, LifetimeId(1), Patches::Wanted, |d| d
            .push("early".into())),
        Err(UpdateError::NotLoaded)
    );
    cache.fulfil(100, &room, RequestId(1), msgs(&["hello"]));
    drain(&mut cache);

    let set = cache
        .update_cached(200, LifetimeId(1), Patches::Wanted, |d| {
            d.push("a".into());
            d.push("b".into());
        })
        .expect("live and loaded")
        .expect("patches asked for");
    let entry = cache.entry(&room).expect("live");
    assert_eq!(entry.data, Some(&msgs(&["hello", "a", "b"])));
    assert_eq!(entry.phase, Phase::Streaming);
    assert_eq!(drain(&mut cache), [notify(&room)], "notified once");
    assert_eq!(
        serde_json::to_value(&set.patches).expect("serialises"),
        json!([
            {"op": "add", "path": "/1", "value": "a"},
            {"op": "add", "path": "/2", "value": "b"}
        ])
    );
    let mut doc = json!(["hello", "a", "b"]);
    json_patch::patch(&mut doc, &set.inverse_patches).expect("inverse applies");
    assert_eq!(doc, json!(["hello"]));
    json_patch::patch(&mut doc, &set.patches).expect("forward applies");
    assert_eq!(doc, json!(["hello", "a", "b"]));

    let set = cache
        .update_cached(300, LifetimeId(1), Patches::Wanted, |d| {
            d[0] = "hello, world".into()
        })
        .expect("live")
        .expect("patches");
    assert_eq!(
        serde_json::to_value(&set.patches).expect("serialises"),
        json!([{"op": "replace", "path": "/0", "value": "hello, world"}])
    );

    // a recipe that changes nothing: empty patches, no event, nobody notified
    let before = cache.trace().len();
    drain(&mut cache);
    assert_eq!(
        cache.update_cached(400, LifetimeId(1), Patches::Wanted, |d| assert_eq!(
            d.len(),
            3
        )),
        Ok(Some(PatchSet::default()))
    );
    assert_eq!(
        cache.update_cached(500, LifetimeId(1), Patches::NotWanted, |d| assert_eq!(
            d.len(),
            3
        )),
        Ok(None)
    );
    assert_eq!(cache.trace().len(), before);
    assert_eq!(drain(&mut cache), []);
    assert_eq!(
        cache.update_cached(600, LifetimeId(1), Patches::NotWanted, |d| d
            .push("c".into())),
        Ok(None)
    );

    // with default recording and no patches asked for, none are computed
    let mut quiet: Core = Cache::new(CacheConfig::default());
    let ep = quiet
        .add_endpoint("getMessages", with_lifecycle())
        .expect("endpoint names are distinct");
    quiet
        .subscribe(0, ep, &room, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    quiet.fulfil(100, &room, RequestId(1), msgs(&["hello"]));
    assert_eq!(
        quiet.update_cached(200, LifetimeId(1), Patches::NotWanted, |d| d
            .push("a".into())),
        Ok(None)
    );
    assert_eq!(
        last_event(&quiet).kind,
        TraceKind::Updated {
            source: UpdateSource::Lifecycle,
            patches: None,
            count: 1,
        }
    );
    insta::assert_yaml_snapshot!(
        "r15_update_cached_data_applies_once_with_invertible_patches",
        cache.trace()
    );
}

#[test]
fn r16_failed_or_panicked_handler_is_traced_under_its_key_and_disturbs_nothing() {
    let mut cache = new_cache(Keep::default());
    let chat = cache
        .add_endpoint("getMessages", with_lifecycle())
        .expect("endpoint names are distinct");
    let a = key("getMessages", "a");
    let b = key("getMessages", "b");

    let sub_a = cache
        .subscribe(0, chat, &a, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    cache
        .subscribe(0, chat, &b, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    cache.fulfil(100, &a, RequestId(1), msgs(&["hello a"]));
    cache.fulfil(100, &b, RequestId(2), msgs(&["hello b"]));
    drain(&mut cache);
    let view = |cache: &Core, k: &CacheKey| {
        let e = cache.entry(k).expect("live");
        (
            e.lifetime,
            e.phase,
            e.status,
            e.data.cloned(),
            e.subscribers,
            e.removal_deadline,
        )
    };
    let a_before = view(&cache, &a);
    let b_before = view(&cache, &b);

    let failed = HandlerOutcome::Failed {
        error: "socket refused".to_owned(),
    };
    cache.lifecycle_ended(500, &a, LifetimeId(1), failed.clone());
    assert_eq!(
        last_event(&cache),
        TraceEvent {
            at_ms: 500,
            key: a.clone(),
            kind: TraceKind::LifecycleEnded {
                lifetime: 1,
                generation: 0,
                outcome: failed
            },
        }
    );
    assert_eq!(drain(&mut cache), []);
    assert_eq!(view(&cache, &a), a_before);
    assert_eq!(view(&cache, &b), b_before);

    // the other entry carries on: its handler still updates it
    assert!(
        cache
            .update_cached(600, LifetimeId(2), Patches::NotWanted, |d| d
                .push("still streaming".into()))
            .is_ok()
    );
    assert_eq!(drain(&mut cache), [notify(&b)]);
    let panicked = HandlerOutcome::Panicked {
        message: "index out of bounds".to_owned(),
    };
    cache.lifecycle_ended(700, &b, LifetimeId(2), panicked.clone());
    assert_eq!(
        last_event(&cache).kind,
        TraceKind::LifecycleEnded {
            lifetime: 2,
            generation: 0,
            outcome: panicked
        }
    );
    assert_eq!(drain(&mut cache), []);
    assert_eq!(cache.len(), 2);
    assert_eq!(
        cache.entry(&b).and_then(|e| e.data.cloned()),
        Some(msgs(&["hello b", "still streaming"]))
    );

    // the first entry keeps working too: refetch, settle
    assert!(cache.refetch(800, sub_a));
    assert_eq!(drain(&mut cache), [start_request(&a, 3), notify(&a)]);
    cache.fulfil(900, &a, RequestId(3), msgs(&["hello a", "again"]));
    assert_eq!(view(&cache, &a).2, Status::Fulfilled);
    insta::assert_yaml_snapshot!(
        "r16_failed_or_panicked_handler_is_traced_under_its_key_and_disturbs_nothing",
        cache.trace()
    );
}

#[test]
fn r17_per_entry_order_handler_request_data_loaded_updates_removed() {
    let mut cache = new_cache(Keep::default());
    let chat = cache
        .add_endpoint("getMessages", with_lifecycle())
        .expect("endpoint names are distinct");
    let room = key("getMessages", "redux");
    let lobby = key("getMessages", "lobby");
    let news = key("getMessages", "news");
    let mut effects = Vec::new();

    // a full lifetime
    let sub = cache
        .subscribe(0, chat, &room, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    effects.extend(drain(&mut cache));
    cache.fulfil(100, &room, RequestId(1), msgs(&["hello"]));
    effects.extend(drain(&mut cache));
    for (at, text) in [(200, "a"), (300, "b")] {
        cache
            .update_cached(at, LifetimeId(1), Patches::NotWanted, |d| {
                d.push(text.into())
            })
            .expect("loaded");
        effects.extend(drain(&mut cache));
    }
    assert!(cache.unsubscribe(400, sub));
    cache.handle_timeout(60_400);
    effects.extend(drain(&mut cache));
    assert_eq!(
        without_notify(&effects),
        [
            start_lifecycle(&room, 1),
            start_request(&room, 1),
            data_loaded(1, Some(1), &["hello"]),
            removed(&room, 1, true),
        ]
    );
    // updates notify between data_loaded and entry_removed
    let notifies: Vec<usize> = effects
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e, Effect::Notify { .. }))
        .map(|(i, _)| i)
        .collect();
    let loaded_at = effects
        .iter()
        .position(|e| matches!(e, Effect::ResolveDataLoaded { .. }))
        .expect("loaded");
    let removed_at = effects
        .iter()
        .position(|e| matches!(e, Effect::EntryRemoved { .. }))
        .expect("removed");
    assert_eq!(
        notifies
            .iter()
            .filter(|&&i| loaded_at < i && i < removed_at)
            .count(),
        3,
        "fulfil and two updates (an unsubscribe changes nothing a subscriber sees): {effects:?}"
    );
    assert_eq!(
        names(&cache, &room),
        [
            "entry_added",
            "subscribed",
            "lifecycle_started",
            "request_started",
            "request_fulfilled",
            "data_loaded",
            "updated",
            "updated",
            "unsubscribed",
            "removal_scheduled",
            "entry_removed",
        ]
    );

    // a lifetime removed before its data: the request is aborted before entry_removed
    cache
        .subscribe(70_000, chat, &lobby, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    assert!(cache.remove(70_100, &lobby));
    assert_eq!(
        without_notify(&drain(&mut cache)),
        [
            start_lifecycle(&lobby, 2),
            start_request(&lobby, 2),
            abort(&lobby, 2),
            removed(&lobby, 2, false),
        ]
    );

    // a lifetime created by an upsert: handler, then data_loaded (no request), then removed
    cache
        .upsert(80_000, chat, &news, msgs(&["breaking"]))
        .expect("the key is this endpoint's");
    cache.handle_timeout(140_000);
    assert_eq!(
        without_notify(&drain(&mut cache)),
        [
            start_lifecycle(&news, 3),
            data_loaded(3, None, &["breaking"]),
            removed(&news, 3, true),
        ]
    );
    insta::assert_yaml_snapshot!(
        "r17_per_entry_order_handler_request_data_loaded_updates_removed",
        cache.trace()
    );
}

// ===== Updates from outside the lifecycle =====

#[test]
fn r18_update_query_data_skips_missing_data_and_returns_undoable_patches() {
    let mut cache = new_cache(Keep::default());
    let chat = cache
        .add_endpoint("getMessages", with_lifecycle())
        .expect("endpoint names are distinct");
    let room = key("getMessages", "redux");
    let ghost = key("getMessages", "ghost");

    // absent entry: the recipe is not called
    let mut called = false;
    let set = cache.update_query_data(0, &ghost, |_| called = true);
    assert_eq!(set, Ok(PatchSet::default()));
    assert!(!called);
    assert!(cache.entry(&ghost).is_none());

    // entry without data: the recipe is not called either
    cache
        .subscribe(0, chat, &room, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    drain(&mut cache);
    let set = cache.update_query_data(50, &room, |_| called = true);
    assert_eq!(set, Ok(PatchSet::default()));
    assert!(!called);
    assert_eq!(drain(&mut cache), []);

    cache.fulfil(100, &room, RequestId(1), msgs(&["hello"]));
    drain(&mut cache);

    // an optimistic update
    let optimistic = cache
        .update_query_data(200, &room, |d| d.push("draft".into()))
        .expect("serialisable");
    assert_eq!(
        serde_json::to_value(&optimistic).expect("serialises"),
        json!({
            "patches": [{"op": "add", "path": "/1", "value": "draft"}],
            "inverse_patches": [{"op": "remove", "path": "/1"}]
        })
    );
    let entry = cache.entry(&room).expect("live");
    assert_eq!(entry.data, Some(&msgs(&["hello", "draft"])));
    assert_eq!(entry.phase, Phase::Streaming);
    assert_eq!(drain(&mut cache), [notify(&room)]);

    // the stream adds a message, then the optimistic change is undone on the data of that time
    cache
        .update_cached(300, LifetimeId(1), Patches::NotWanted, |d| {
            d.push("from server".into())
        })
        .expect("loaded");
    cache
        .patch_query_data(400, &room, &optimistic.inverse_patches)
        .expect("undo applies");
    assert_eq!(
        cache.entry(&room).and_then(|e| e.data.cloned()),
        Some(msgs(&["hello", "from server"]))
    );

    // a recipe that changes nothing: empty patches, no event
    let before = cache.trace().len();
    let set = cache.update_query_data(500, &room, |d| assert_eq!(d.len(), 2));
    assert_eq!(set, Ok(PatchSet::default()));
    assert_eq!(cache.trace().len(), before);

    let sources: Vec<UpdateSource> = cache
        .trace()
        .iter()
        .filter_map(|e| match e.kind {
            TraceKind::Updated { source, .. } => Some(source),
            _ => None,
        })
        .collect();
    assert_eq!(
        sources,
        [
            UpdateSource::UpdateQueryData,
            UpdateSource::Lifecycle,
            UpdateSource::PatchQueryData
        ]
    );
    insta::assert_yaml_snapshot!(
        "r18_update_query_data_skips_missing_data_and_returns_undoable_patches",
        cache.trace()
    );
}

#[test]
fn r19_patch_query_data_applies_atomically_or_errs_leaving_data_unchanged() {
    let mut cache = new_cache(Keep::default());
    let chat = cache
        .add_endpoint("getMessages", plain(None))
        .expect("endpoint names are distinct");
    let room = key("getMessages", "redux");
    let ghost = key("getMessages", "ghost");
    let add = patch(json!([{"op": "add", "path": "/-", "value": "!"}]));

    assert_eq!(
        cache.patch_query_data(0, &ghost, &add),
        Err(PatchError::NoEntry)
    );
    cache
        .subscribe(0, chat, &room, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    assert_eq!(
        cache.patch_query_data(10, &room, &add),
        Err(PatchError::NoData)
    );
    cache.fulfil(100, &room, RequestId(1), msgs(&["hello", "world"]));
    drain(&mut cache);

    let good = patch(json!([
        {"op": "replace", "path": "/0", "value": "hi"},
        {"op": "add", "path": "/-", "value": "!"}
    ]));
    assert_eq!(cache.patch_query_data(200, &room, &good), Ok(()));
    let entry = cache.entry(&room).expect("live");
    assert_eq!(entry.data, Some(&msgs(&["hi", "world", "!"])));
    assert_eq!(entry.phase, Phase::Streaming);
    assert_eq!(drain(&mut cache), [notify(&room)]);
    let before = cache.trace().len();

    let unchanged = || Some(msgs(&["hi", "world", "!"]));
    // a bad path
    let bad_path = patch(json!([{"op": "remove", "path": "/7"}]));
    assert!(matches!(
        cache.patch_query_data(300, &room, &bad_path),
        Err(PatchError::Apply(_))
    ));
    assert_eq!(
        cache.entry(&room).and_then(|e| e.data.cloned()),
        unchanged()
    );
    // a failing `test` after an operation that did apply: all or nothing
    let failed_test = patch(json!([
        {"op": "add", "path": "/-", "value": "x"},
        {"op": "test", "path": "/0", "value": "hello"}
    ]));
    assert!(matches!(
        cache.patch_query_data(400, &room, &failed_test),
        Err(PatchError::Apply(_))
    ));
    assert_eq!(
        cache.entry(&room).and_then(|e| e.data.cloned()),
        unchanged()
    );
    // a result that is not a Vec<String>
    let wrong_type = patch(json!([{"op": "replace", "path": "", "value": {"not": "a list"}}]));
    assert!(matches!(
        cache.patch_query_data(500, &room, &wrong_type),
        Err(PatchError::Schema(_))
    ));
    assert_eq!(
        cache.entry(&room).and_then(|e| e.data.cloned()),
        unchanged()
    );
    // a patch that changes nothing
    let no_change = patch(json!([{"op": "test", "path": "/0", "value": "hi"}]));
    assert_eq!(cache.patch_query_data(600, &room, &no_change), Ok(()));

    assert_eq!(cache.trace().len(), before, "failed patches record nothing");
    assert_eq!(drain(&mut cache), [], "and notify no one");
    insta::assert_yaml_snapshot!(
        "r19_patch_query_data_applies_atomically_or_errs_leaving_data_unchanged",
        cache.trace()
    );
}

#[test]
fn r20_upsert_creates_loaded_entry_or_replaces_data_and_schedules_removal_when_unused() {
    let mut cache = new_cache(Keep::default());
    let chat = cache
        .add_endpoint("getMessages", with_lifecycle())
        .expect("endpoint names are distinct");
    let news = key("getMessages", "news");
    let room = key("getMessages", "redux");

    cache
        .upsert(0, chat, &news, msgs(&["breaking"]))
        .expect("the key is this endpoint's");
    let entry = cache.entry(&news).expect("upsert creates the entry");
    assert_eq!(entry.lifetime, LifetimeId(1));
    assert_eq!(entry.phase, Phase::Loaded);
    assert_eq!(entry.status, Status::Fulfilled);
    assert_eq!(entry.in_flight, None, "no request");
    assert_eq!(entry.fulfilled_at, Some(0));
    assert_eq!(
        (entry.subscribers, entry.removal_deadline),
        (0, Some(60_000))
    );
    assert_eq!(
        drain(&mut cache),
        [
            start_lifecycle(&news, 1),
            data_loaded(1, None, &["breaking"]),
            notify(&news)
        ]
    );

    // replace: no second data_loaded; zero subscribers → re-armed
    cache
        .upsert(10_000, chat, &news, msgs(&["breaking", "update"]))
        .expect("the key is this endpoint's");
    assert_eq!(
        cache.entry(&news).and_then(|e| e.data.cloned()),
        Some(msgs(&["breaking", "update"]))
    );
    assert_eq!(
        cache.entry(&news).and_then(|e| e.removal_deadline),
        Some(70_000)
    );
    assert_eq!(drain(&mut cache), [notify(&news)]);
    cache
        .upsert(20_000, chat, &news, msgs(&["breaking", "update"]))
        .expect("the key is this endpoint's");
    assert_eq!(
        last_event(&cache).kind,
        TraceKind::RemovalScheduled {
            deadline_ms: 80_000
        }
    );
    assert!(
        !drain(&mut cache)
            .iter()
            .any(|e| matches!(e, Effect::ResolveDataLoaded { .. }))
    );

    // with a subscriber: no removal scheduled; a cache hit starts no request
    cache
        .subscribe(30_000, chat, &news, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    cache
        .upsert(40_000, chat, &news, msgs(&["x"]))
        .expect("the key is this endpoint's");
    let entry = cache.entry(&news).expect("live");
    assert_eq!(
        (entry.subscribers, entry.removal_deadline, entry.in_flight),
        (1, None, None)
    );
    drain(&mut cache);

    // upsert while the first request runs: data_loaded without meta; the request still lands
    cache
        .subscribe(50_000, chat, &room, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    drain(&mut cache);
    cache
        .upsert(50_100, chat, &room, msgs(&["cached"]))
        .expect("the key is this endpoint's");
    let entry = cache.entry(&room).expect("live");
    assert_eq!(
        (entry.phase, entry.in_flight),
        (Phase::Loaded, Some(RequestId(1)))
    );
    assert_eq!(
        drain(&mut cache),
        [data_loaded(2, None, &["cached"]), notify(&room)]
    );
    cache.fulfil(50_200, &room, RequestId(1), msgs(&["fetched"]));
    assert_eq!(
        cache.entry(&room).and_then(|e| e.data.cloned()),
        Some(msgs(&["fetched"]))
    );
    assert_eq!(drain(&mut cache), [notify(&room)]);
    assert_eq!(count(&cache, "data_loaded"), 2);
    insta::assert_yaml_snapshot!(
        "r20_upsert_creates_loaded_entry_or_replaces_data_and_schedules_removal_when_unused",
        cache.trace()
    );
}

// ===== Streaming =====

/// Apply `messages` to `lifetime`'s entry in order, as the runtime's stream task does; count them.
fn apply_messages(cache: &mut Core, at: u64, lifetime: u64, messages: Vec<String>) -> u64 {
    let mut applied = 0;
    for message in messages {
        cache
            .update_cached(at, LifetimeId(lifetime), Patches::NotWanted, |d| {
                d.push(message)
            })
            .expect("the entry has data");
        applied += 1;
    }
    applied
}

/// End `stream` with `reason` and record it, as the runtime's stream task does.
fn end_stream(
    cache: &mut Core,
    at: u64,
    key: &CacheKey,
    stream: Attachment<String>,
    reason: StreamEndReason,
) {
    let lifetime = stream.lifetime();
    let end = stream.end(reason);
    cache.stream_ended(at, key, lifetime, &end);
}

#[test]
fn r21_stream_holds_messages_before_data_applies_them_in_order_then_ends() {
    let mut cache = new_cache(Keep::default());
    let chat = cache
        .add_endpoint("getMessages", with_lifecycle())
        .expect("endpoint names are distinct");
    let room = key("getMessages", "redux");
    let lobby = key("getMessages", "lobby");

    // the handler connects before the first data: what arrives is held, in order
    cache
        .subscribe(0, chat, &room, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    assert_eq!(drain(&mut cache)[0], start_lifecycle(&room, 1));
    let mut stream: Attachment<String> = Attachment::before_data(LifetimeId(1));
    assert_eq!(stream.message("hi".into()), Received::Held);
    // a bad frame is counted and traced at once, before the data too
    stream.skipped();
    cache.stream_skipped(30, &room, LifetimeId(1), "not JSON".into());
    assert_eq!(stream.message("there".into()), Received::Held);
    // the socket fails before the data: remembered, nothing more is read
    assert_eq!(
        stream.finish(Finish::Failed("connection reset".into())),
        None
    );
    assert!(!stream.wants_items());
    assert_eq!(stream.held(), 2);
    assert_eq!(cache.entry(&room).map(|e| e.phase), Some(Phase::Loading));
    assert_eq!(
        count(&cache, "updated"),
        0,
        "nothing applied before the data"
    );

    // the first data lands: the held messages are applied right after it, then the stream ends
    cache.fulfil(100, &room, RequestId(1), msgs(&["hello"]));
    let effects = drain(&mut cache);
    assert!(effects.contains(&data_loaded(1, Some(1), &["hello"])));
    let first = stream.data_loaded();
    assert_eq!(first.held, msgs(&["hi", "there"]));
    assert_eq!(
        first.then_end,
        Some(StreamEndReason::StreamFailed("connection reset".into()))
    );
    cache
        .stream_attached(100, LifetimeId(1), first.held.len())
        .expect("the entry has data");
    let applied = apply_messages(&mut cache, 100, 1, first.held);
    stream.applied(applied);
    let reason = first.then_end.expect("the stream failed");
    end_stream(&mut cache, 100, &room, stream, reason);
    let entry = cache.entry(&room).expect("live");
    assert_eq!(entry.phase, Phase::Streaming);
    assert_eq!(entry.data, Some(&msgs(&["hello", "hi", "there"])));

    // attached once the entry has data: live at once, each message applied as it arrives
    let mut stream: Attachment<String> = Attachment::live(LifetimeId(1));
    let first = stream.data_loaded();
    assert!(first.held.is_empty() && first.then_end.is_none());
    cache
        .stream_attached(200, LifetimeId(1), 0)
        .expect("the entry has data");
    let Received::Apply(message) = stream.message("later".into()) else {
        panic!("a live attachment applies at once");
    };
    let applied = apply_messages(&mut cache, 300, 1, vec![message]);
    stream.applied(applied);
    // removal ends the attachment, after the removal's own events
    assert!(cache.remove(400, &room));
    assert!(drain(&mut cache).contains(&removed(&room, 1, true)));
    let reason = stream.removed();
    assert_eq!(reason, StreamEndReason::EntryRemoved);
    end_stream(&mut cache, 400, &room, stream, reason);

    // removed before its first data: the held messages are dropped with the entry
    cache
        .subscribe(500, chat, &lobby, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    drain(&mut cache);
    let mut stream: Attachment<String> = Attachment::before_data(LifetimeId(2));
    assert_eq!(stream.message("lost".into()), Received::Held);
    assert!(cache.remove(600, &lobby));
    assert!(drain(&mut cache).contains(&removed(&lobby, 2, false)));
    let reason = stream.removed();
    assert_eq!(reason, StreamEndReason::RemovedBeforeLoaded);
    assert_eq!(stream.held(), 0);
    end_stream(&mut cache, 600, &lobby, stream, reason);

    assert_eq!(
        names(&cache, &room),
        [
            "entry_added",
            "subscribed",
            "lifecycle_started",
            "request_started",
            "stream_skipped",
            "request_fulfilled",
            "data_loaded",
            "stream_attached",
            "stream_status_changed",
            "updated",
            "updated",
            "stream_ended",
            "stream_status_changed",
            "stream_attached",
            "stream_status_changed",
            "updated",
            "entry_removed",
            "stream_ended",
        ]
    );
    assert_eq!(count(&cache, "updated"), 3, "\"lost\" was never applied");
    insta::assert_yaml_snapshot!(
        "r21_stream_holds_messages_before_data_applies_them_in_order_then_ends",
        cache.trace()
    );
}
