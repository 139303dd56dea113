//! Regression tests of the hardening issue's core items, one per item, named after it. Bounded
//! in count and size; nothing here asserts a wall-clock time.

use livecache::core::{
    Cache, CacheKey, Effect, EndpointConfig, HandlerOutcome, LifetimeId, Refetch, RequestId,
    TRACE_TEXT_CAP, TraceEvent, TraceKind,
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
            cache.stream_ended(now, &key, LifetimeId(1), body.clone(), n, n);
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
