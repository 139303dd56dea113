//! R31, R32: the shared connection's machine (`core::Connection`) agrees with its reference model
//! (`livecache_model::ConnectionModel`) on random event sequences: topics attaching and
//! detaching, sockets connecting, failing, closing (fatally or not) and going silent, frames
//! arriving on the current socket and on earlier ones, resyncs done, `reconnect_now`, time
//! passing with and without a timer, under configurations whose times are short enough for every
//! timer to meet every other (and with or without `max_attempts` and the heartbeat). After every
//! event the two must agree on what it returned, every effect asked (in order), the state, the
//! retry count, the topics and the next deadline. The jitter's seed is drawn too, and printed
//! with a failing case (it is part of the configuration). 1 000 cases by default;
//! `PROPTEST_CASES` for more.

use livecache::core::ConnectionConfig;
use livecache_check::connection::{ConnectionUnderTest, step};
use livecache_model::{ConnEvent, ConnectionModel};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, FileFailurePersistence};

/// How an event names a socket: the current one (the last handed out), the one before it, or
/// any number up to one past it.
#[derive(Clone, Copy, Debug)]
enum EpochSel {
    Current,
    Previous,
    Any(u64),
}

impl EpochSel {
    fn resolve(self, epochs: u64) -> u64 {
        match self {
            EpochSel::Current => epochs,
            EpochSel::Previous => epochs.saturating_sub(1),
            EpochSel::Any(n) => n % (epochs + 2),
        }
    }
}

/// An event before its epoch is resolved against the model.
#[derive(Clone, Copy, Debug)]
enum Sel {
    Attach(u8),
    Detach(u8),
    Connected(EpochSel),
    ConnectFailed(EpochSel, bool),
    Closed(EpochSel, bool),
    Received(EpochSel),
    Resynced(u8),
    ReconnectNow,
    Advance(u64),
    Late(u64),
}

impl Sel {
    fn event(self, epochs: u64) -> ConnEvent {
        match self {
            Sel::Attach(topic) => ConnEvent::Attach { topic },
            Sel::Detach(topic) => ConnEvent::Detach { topic },
            Sel::Connected(e) => ConnEvent::Connected {
                epoch: e.resolve(epochs),
            },
            Sel::ConnectFailed(e, fatal) => ConnEvent::ConnectFailed {
                epoch: e.resolve(epochs),
                fatal,
            },
            Sel::Closed(e, fatal) => ConnEvent::Closed {
                epoch: e.resolve(epochs),
                fatal,
            },
            Sel::Received(e) => ConnEvent::Received {
                epoch: e.resolve(epochs),
            },
            Sel::Resynced(topic) => ConnEvent::Resynced { topic },
            Sel::ReconnectNow => ConnEvent::ReconnectNow,
            Sel::Advance(ms) => ConnEvent::Advance { ms },
            Sel::Late(ms) => ConnEvent::Late { ms },
        }
    }
}

fn epoch() -> impl Strategy<Value = EpochSel> {
    prop_oneof![
        6 => Just(EpochSel::Current),
        1 => Just(EpochSel::Previous),
        1 => any::<u64>().prop_map(EpochSel::Any),
    ]
}

/// Steps of time around the short configuration's times.
fn ms() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        0u64..400,
        Just(100),
        Just(150),
        Just(200),
        Just(300),
        Just(450),
        Just(500),
        Just(5_000),
    ]
}

fn sel() -> impl Strategy<Value = Sel> {
    let topic = 0u8..4;
    prop_oneof![
        4 => topic.clone().prop_map(Sel::Attach),
        2 => topic.clone().prop_map(Sel::Detach),
        4 => epoch().prop_map(Sel::Connected),
        2 => (epoch(), prop::bool::weighted(0.15)).prop_map(|(e, f)| Sel::ConnectFailed(e, f)),
        3 => (epoch(), prop::bool::weighted(0.1)).prop_map(|(e, f)| Sel::Closed(e, f)),
        3 => epoch().prop_map(Sel::Received),
        2 => topic.prop_map(Sel::Resynced),
        1 => Just(Sel::ReconnectNow),
        5 => ms().prop_map(Sel::Advance),
        1 => ms().prop_map(Sel::Late),
    ]
}

/// Short times, so that every timer meets every other; with or without a heartbeat and a limit.
fn connection_config() -> impl Strategy<Value = ConnectionConfig> {
    (
        any::<u64>(),
        prop::option::of(0u32..4),
        prop::option::of(Just(200u64)),
        prop::sample::select(vec![100u64, 1]),
    )
        .prop_map(
            |(seed, max_attempts, heartbeat_ms, base)| ConnectionConfig {
                backoff_base_ms: base,
                backoff_cap_ms: 1_000,
                max_attempts,
                connect_timeout_ms: 500,
                heartbeat_ms,
                idle_timeout_ms: 450,
                stable_after_ms: 300,
                linger_ms: 150,
                seed,
            },
        )
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/connection_equivalence.txt",
        ))),
        ..ProptestConfig::default()
    })]

    /// R31, R32: the machine and the model agree after every event.
    #[test]
    fn r31_r32_connection_agrees_with_model(
        config in connection_config(),
        sels in prop::collection::vec(sel(), 1..80),
    ) {
        let mut model = ConnectionModel::new(config);
        let mut machine = ConnectionUnderTest::new(config);
        for (i, sel) in sels.iter().enumerate() {
            let event = sel.event(model.epochs());
            if let Err(diff) = step(i, &event, &mut model, &mut machine) {
                prop_assert!(false, "seed {}: {diff}", config.seed);
            }
        }
    }
}

/// The random sequences reach every rule the comparison is meant to check: a plain retry, a
/// retry after a lost connection, giving up (spent and fatal), an attempt timed out, a socket
/// silent past the idle deadline, a ping, a resync asked, the retry count reset by a stable
/// connection, lingering and closing after it, a frame of an earlier socket dropped, and
/// `reconnect_now` acting. (A sequence generator that stopped reaching one would make the
/// property test above pass for nothing.)
#[test]
fn r31_r32_random_events_reach_every_connection_rule() {
    use livecache::core::{ConnEffect, ConnState, Frame};
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    use std::collections::BTreeMap;

    let mut runner = TestRunner::deterministic();
    let strategy = (connection_config(), prop::collection::vec(sel(), 1..80));
    let mut seen: BTreeMap<&str, u32> = BTreeMap::new();
    for _ in 0..300 {
        let Ok(tree) = strategy.new_tree(&mut runner) else {
            continue;
        };
        let (config, sels) = tree.current();
        let mut model = ConnectionModel::new(config);
        let mut machine = ConnectionUnderTest::new(config);
        let mut retries = 0;
        for (i, sel) in sels.iter().enumerate() {
            let event = sel.event(model.epochs());
            let before = machine.machine().state().clone();
            let Ok(outcome) = step(i, &event, &mut model, &mut machine) else {
                panic!("the property test finds this: {event:?}");
            };
            let mut mark = |what| *seen.entry(what).or_default() += 1;
            match (&before, &outcome.state) {
                (ConnState::Open { .. }, ConnState::Backoff { .. }) => mark("lost, then backoff"),
                (ConnState::Connecting { .. }, ConnState::Backoff { .. }) => mark("retry"),
                (_, ConnState::Failed { error }) if error.starts_with("gave up") => mark("gave up"),
                (
                    ConnState::Connecting { .. } | ConnState::Open { .. },
                    ConnState::Failed { .. },
                ) => mark("fatal"),
                (ConnState::Open { .. }, ConnState::Lingering { .. }) => mark("linger"),
                (ConnState::Lingering { .. }, ConnState::Idle) => mark("linger ended"),
                (ConnState::Lingering { .. }, ConnState::Open { .. }) => mark("reused"),
                _ => {}
            }
            for effect in &outcome.effects {
                match effect {
                    ConnEffect::Send {
                        frame: Frame::Ping, ..
                    } => mark("ping"),
                    ConnEffect::Resync { .. } => mark("resync"),
                    _ => {}
                }
            }
            if let ConnEvent::Advance { .. } = event {
                if matches!(before, ConnState::Connecting { .. })
                    && matches!(outcome.state, ConnState::Backoff { .. })
                {
                    mark("attempt timed out");
                }
                if matches!(before, ConnState::Open { .. })
                    && matches!(outcome.state, ConnState::Backoff { .. })
                {
                    mark("idle deadline");
                }
            }
            if let (ConnEvent::Received { .. }, false) = (&event, outcome.result) {
                mark("frame of another socket dropped");
            }
            if let (ConnEvent::ReconnectNow, true) = (&event, outcome.result) {
                mark("reconnect now");
            }
            if retries > 0
                && outcome.retries == 0
                && matches!(outcome.state, ConnState::Open { .. })
            {
                mark("count reset when stable");
            }
            retries = outcome.retries;
        }
    }
    let wanted = [
        "attempt timed out",
        "count reset when stable",
        "fatal",
        "frame of another socket dropped",
        "gave up",
        "idle deadline",
        "linger",
        "linger ended",
        "lost, then backoff",
        "ping",
        "reconnect now",
        "resync",
        "retry",
        "reused",
    ];
    for what in wanted {
        assert!(
            seen.get(what).is_some_and(|n| *n > 0),
            "never reached: {what} ({seen:?})"
        );
    }
}
