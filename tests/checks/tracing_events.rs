//! R41: every trace event is also a `tracing` event (target `livecache`), with the key as a
//! field, failures at `WARN` — emitted where the trace records, so the two never disagree.

use std::sync::{Arc, Mutex};

use livecache::core::{
    Cache, CacheKey, EndpointConfig, LifetimeId, Patches, Refetch, RequestId, TraceEvent,
};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// One `tracing` event as seen by [`Collect`].
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    level: Level,
    event: String,
    key: String,
}

/// A subscriber that keeps every `livecache` event's level, `event` and `key` fields.
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<Seen>>>);

#[derive(Default)]
struct Fields {
    event: String,
    key: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "event" => self.event = value.to_owned(),
            "key" => self.key = value.to_owned(),
            _ => {}
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "event" => self.event = format!("{value:?}"),
            "key" => self.key = format!("{value:?}"),
            _ => {}
        }
    }
}

impl Subscriber for Collect {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target() == "livecache"
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        if let Ok(mut seen) = self.0.lock() {
            seen.push(Seen {
                level: *event.metadata().level(),
                event: fields.event,
                key: fields.key,
            });
        }
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

fn name_of(event: &TraceEvent) -> String {
    serde_json::to_value(&event.kind)
        .ok()
        .and_then(|v| v.get("event").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_default()
}

/// Run the test named `name` alone in a child process of this test binary (where `child_var`
/// is set): `tracing`'s level filter is process-wide and other tests' threads registering and
/// dropping subscribers race with it, so an exact count of events is only reliable alone.
/// Whether this is the child.
fn alone_in_a_child(name: &str, child_var: &str) -> bool {
    if std::env::var_os(child_var).is_some() {
        return true;
    }
    let exe = std::env::current_exe().expect("the test binary");
    let status = std::process::Command::new(exe)
        .args(["--exact", name, "--test-threads=1"])
        .env(child_var, "1")
        .status()
        .expect("the child test runs");
    assert!(status.success(), "{name} failed in its own process");
    false
}

#[test]
fn r41_every_trace_event_is_a_tracing_event_with_its_key_and_failures_at_warn() {
    if !alone_in_a_child(
        "tracing_events::r41_every_trace_event_is_a_tracing_event_with_its_key_and_failures_at_warn",
        "LIVECACHE_R41_CHILD",
    ) {
        return;
    }
    let collect = Collect::default();
    let seen = Arc::clone(&collect.0);
    let trace = tracing::subscriber::with_default(collect, || {
        let mut cache: Cache<Vec<u32>> = Cache::new(Default::default());
        let ep = cache
            .add_endpoint("feed", EndpointConfig::default())
            .expect("a new endpoint");
        let (ok, bad) = (CacheKey::verbatim("feed(1)"), CacheKey::verbatim("feed(2)"));
        cache
            .subscribe(0, ep, &ok, Refetch::IfMissing)
            .expect("subscribed");
        cache.fulfil(1, &ok, RequestId(1), vec![1]);
        let _ = cache.update_cached(2, LifetimeId(1), Patches::NotWanted, |d| d.push(2));
        let _ = cache.update_cached(3, LifetimeId(1), Patches::NotWanted, |d| d.push(3));
        cache
            .subscribe(4, ep, &bad, Refetch::IfMissing)
            .expect("subscribed");
        cache.reject(
            5,
            &bad,
            RequestId(2),
            "500 Internal Server Error".to_string(),
        );
        cache.trace().to_vec()
    });
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    let expected: Vec<Seen> = trace
        .iter()
        .map(|e| {
            let event = name_of(e);
            let level = match event.as_str() {
                "request_rejected" => Level::WARN,
                "updated" => Level::TRACE,
                _ => Level::DEBUG,
            };
            Seen {
                level,
                event,
                key: e.key.to_string(),
            }
        })
        .collect();
    assert!(
        expected.iter().any(|s| s.level == Level::WARN) && expected.len() > 6,
        "{expected:?}"
    );
    assert_eq!(seen, expected);
}

#[test]
fn r41_recording_off_emits_nothing() {
    let collect = Collect::default();
    let seen = Arc::clone(&collect.0);
    tracing::subscriber::with_default(collect, || {
        let mut cache: Cache<Vec<u32>> = Cache::new(livecache::core::CacheConfig {
            recording: livecache::core::Recording::Off,
            ..Default::default()
        });
        let ep = cache
            .add_endpoint("feed", EndpointConfig::default())
            .expect("a new endpoint");
        let key = CacheKey::verbatim("feed(1)");
        cache
            .subscribe(0, ep, &key, Refetch::IfMissing)
            .expect("subscribed");
        cache.reject(1, &key, RequestId(1), "down".to_string());
    });
    assert_eq!(seen.lock().map(|s| s.len()).unwrap_or(1), 0);
}
