//! One or more tests per rule of the shared connection (R31, R32), driven through its sans-IO
//! machine (`core::Connection`) as a driver would: each event at its time, every effect drained
//! into a log line. Each test asserts what its rule states, then snapshots the whole log
//! (`tests/it/snapshots/it__connection_rules__*.snap`), reviewed by hand against the rules.

use livecache::core::{ConnEffect, ConnState, Connection, ConnectionConfig, Frame, StreamStatus};

/// Short times, so the scenarios read at a glance; a fixed seed.
fn config() -> ConnectionConfig {
    ConnectionConfig {
        backoff_base_ms: 100,
        backoff_cap_ms: 800,
        max_attempts: None,
        connect_timeout_ms: 1_000,
        heartbeat_ms: Some(2_000),
        idle_timeout_ms: 5_000,
        stable_after_ms: 3_000,
        linger_ms: 500,
        seed: 42,
    }
}

/// A connection and the log of what it asked for.
struct Driven {
    conn: Connection<&'static str>,
    log: Vec<String>,
}

impl Driven {
    fn new(config: ConnectionConfig) -> Self {
        Driven {
            conn: Connection::new(config).expect("a valid configuration"),
            log: Vec::new(),
        }
    }

    /// Drain the effects into the log under `what` happened at `at`; return them.
    fn drain(&mut self, at: u64, what: &str) -> Vec<ConnEffect<&'static str>> {
        let effects: Vec<_> = std::iter::from_fn(|| self.conn.poll_effect()).collect();
        self.log.push(format!("{at:>6} ms  {what}"));
        for effect in &effects {
            self.log.push(format!("           -> {}", line(effect)));
        }
        effects
    }

    /// Fire the deadlines up to `at` and drain.
    fn tick(&mut self, at: u64) -> Vec<ConnEffect<&'static str>> {
        self.conn.handle_timeout(at);
        self.drain(at, "timer")
    }

    /// The time at which the connection's next deadline falls.
    fn next(&self) -> u64 {
        self.conn.poll_timeout().expect("a deadline is armed")
    }
}

fn line(effect: &ConnEffect<&str>) -> String {
    match effect {
        ConnEffect::Connect { epoch } => format!("connect epoch={epoch}"),
        ConnEffect::Close { epoch } => format!("close epoch={epoch}"),
        ConnEffect::Send { epoch, frame } => match frame {
            Frame::Subscribe { topic } => format!("send epoch={epoch} subscribe {topic}"),
            Frame::Unsubscribe { topic } => format!("send epoch={epoch} unsubscribe {topic}"),
            Frame::Ping => format!("send epoch={epoch} ping"),
        },
        ConnEffect::Resync { topic } => format!("resync {topic}"),
        ConnEffect::Status { topic, status } => format!("status {topic}: {status}"),
        other => format!("{other:?}"),
    }
}

fn count(effects: &[ConnEffect<&str>], pred: impl Fn(&ConnEffect<&str>) -> bool) -> usize {
    effects.iter().filter(|e| pred(e)).count()
}

fn statuses(effects: &[ConnEffect<&'static str>]) -> Vec<(&'static str, StreamStatus)> {
    effects
        .iter()
        .filter_map(|e| match e {
            ConnEffect::Status { topic, status } => Some((*topic, status.clone())),
            _ => None,
        })
        .collect()
}

// ===== R31: one socket for many topics =====

#[test]
fn r31_topics_share_one_socket_subscribed_on_attach_unsubscribed_on_detach_closed_after_linger() {
    let mut d = Driven::new(config());
    d.conn.attach(0, "redux");
    d.conn.attach(0, "general");
    let opening = d.drain(0, "attach redux, general");
    // One socket for both.
    assert_eq!(
        count(&opening, |e| matches!(e, ConnEffect::Connect { .. })),
        1
    );
    d.conn.connected(30, 1);
    let open = d.drain(30, "connected epoch=1");
    let subscribed: Vec<_> = open
        .iter()
        .filter_map(|e| match e {
            ConnEffect::Send {
                frame: Frame::Subscribe { topic },
                ..
            } => Some(*topic),
            _ => None,
        })
        .collect();
    assert_eq!(subscribed, ["general", "redux"], "all subscribed at once");
    assert!(
        statuses(&open)
            .iter()
            .all(|(_, s)| *s == StreamStatus::Live)
    );

    // A topic attaching to the open socket is subscribed on it; none is resynced (nothing was
    // missed on this socket).
    d.conn.attach(100, "rust");
    let rust = d.drain(100, "attach rust");
    assert!(rust.contains(&ConnEffect::Send {
        epoch: 1,
        frame: Frame::Subscribe { topic: "rust" }
    }));
    assert_eq!(count(&rust, |e| matches!(e, ConnEffect::Resync { .. })), 0);

    // Entries removed: each topic unsubscribed; with the last, the socket lingers.
    d.conn.detach(200, &"redux");
    d.conn.detach(210, &"general");
    d.conn.detach(220, &"rust");
    let gone = d.drain(220, "detach redux, general, rust");
    assert_eq!(
        count(&gone, |e| matches!(
            e,
            ConnEffect::Send {
                frame: Frame::Unsubscribe { .. },
                ..
            }
        )),
        3
    );
    assert_eq!(
        d.conn.state(),
        &ConnState::Lingering {
            epoch: 1,
            until_ms: 720
        }
    );
    // An entry back within the linger reuses the socket: no new connection.
    d.conn.attach(400, "redux");
    let back = d.drain(400, "attach redux (within the linger)");
    assert_eq!(count(&back, |e| matches!(e, ConnEffect::Connect { .. })), 0);
    assert_eq!(d.conn.state(), &ConnState::Open { epoch: 1 });
    d.conn.detach(450, &"redux");
    d.drain(450, "detach redux");
    // The linger runs out: the socket closes, with a close frame.
    let at = d.next();
    assert_eq!(at, 950);
    let closed = d.tick(at);
    assert_eq!(closed, [ConnEffect::Close { epoch: 1 }]);
    assert_eq!(d.conn.state(), &ConnState::Idle);
    assert_eq!(d.conn.poll_timeout(), None, "nothing left to do");
    insta::assert_snapshot!(d.log.join("\n"));
}

#[test]
fn r31_the_last_topic_leaving_stops_the_attempts() {
    let mut d = Driven::new(config());
    d.conn.attach(0, "redux");
    d.drain(0, "attach redux");
    d.conn.connect_failed(10, 1, "refused".into(), false);
    d.drain(10, "connect failed epoch=1");
    assert!(matches!(d.conn.state(), ConnState::Backoff { .. }));
    // The entry goes while the connection waits to retry: no retry comes.
    d.conn.detach(20, &"redux");
    d.drain(20, "detach redux");
    assert_eq!(d.conn.state(), &ConnState::Idle);
    assert_eq!(d.conn.poll_timeout(), None);
    // And while an attempt is under way: it is abandoned.
    d.conn.attach(30, "general");
    d.drain(30, "attach general");
    d.conn.detach(40, &"general");
    let abandoned = d.drain(40, "detach general");
    assert_eq!(abandoned, [ConnEffect::Close { epoch: 2 }]);
    assert_eq!(d.conn.poll_timeout(), None);
    insta::assert_snapshot!(d.log.join("\n"));
}

// ===== R32: reconnect =====

#[test]
fn r32_backoff_is_full_jitter_within_its_bound_and_the_count_resets_only_when_stable_and_resynced()
{
    let mut d = Driven::new(config());
    d.conn.attach(0, "redux");
    d.drain(0, "attach redux");
    d.conn.connected(10, 1);
    d.drain(10, "connected epoch=1");
    d.conn.closed(1_000, 1, "reset by peer".into(), false);
    let lost = d.drain(1_000, "closed epoch=1");
    assert_eq!(
        statuses(&lost),
        [(
            "redux",
            StreamStatus::Reconnecting {
                attempt: 1,
                since_ms: 1_000,
                last_error: "reset by peer".into()
            }
        )]
    );
    // Five failed retries: each waits within min(cap, base · 2^n) of the failure.
    let mut failed_at = 1_000;
    for n in 0..5u32 {
        let ConnState::Backoff { attempt, until_ms } = d.conn.state().clone() else {
            panic!("backing off");
        };
        assert_eq!(attempt, n + 1);
        let bound = (100u64 << n).min(800);
        assert!(
            until_ms - failed_at <= bound,
            "retry {attempt} waits {} ms, bound {bound}",
            until_ms - failed_at
        );
        d.tick(until_ms);
        let epoch = u64::from(n) + 2;
        assert_eq!(
            d.conn.state(),
            &ConnState::Connecting {
                epoch,
                attempt: n + 1
            }
        );
        failed_at = until_ms + 5;
        d.conn
            .connect_failed(failed_at, epoch, "refused".into(), false);
        d.drain(failed_at, &format!("connect failed epoch={epoch}"));
    }
    assert_eq!(d.conn.retries(), 6);
    let ConnState::Backoff { until_ms, .. } = d.conn.state().clone() else {
        panic!("backing off");
    };
    d.tick(until_ms);
    d.conn.connected(until_ms + 5, 7);
    let back = d.drain(until_ms + 5, "connected epoch=7");
    // Subscribed again, and resynced: it may have missed messages.
    assert!(back.contains(&ConnEffect::Resync { topic: "redux" }));
    // Stable for `stable_after`, but the resync is not done: the count stays.
    let stable_at = until_ms + 5 + 3_000;
    d.conn.handle_timeout(stable_at);
    d.drain(stable_at, "timer (stable)");
    assert_eq!(d.conn.retries(), 6, "a resync is pending");
    d.conn.resynced(stable_at + 100, &"redux");
    d.drain(stable_at + 100, "resynced redux");
    assert_eq!(d.conn.retries(), 0, "stable and resynced");
    insta::assert_snapshot!(d.log.join("\n"));
}

#[test]
fn r32_a_server_that_accepts_then_fails_does_not_escape_the_backoff() {
    let mut d = Driven::new(config());
    d.conn.attach(0, "redux");
    d.drain(0, "attach redux");
    let mut at = 0;
    for epoch in 1..=4u64 {
        if epoch > 1 {
            at = d.next();
            d.tick(at);
        }
        d.conn.connected(at + 1, epoch);
        d.drain(at + 1, &format!("connected epoch={epoch}"));
        at += 50; // fails well before `stable_after`
        d.conn.closed(at, epoch, "reset".into(), false);
        d.drain(at, &format!("closed epoch={epoch}"));
        assert_eq!(d.conn.retries(), u32::try_from(epoch).unwrap_or(u32::MAX));
    }
    let ConnState::Backoff { attempt, .. } = d.conn.state() else {
        panic!("backing off");
    };
    assert_eq!(*attempt, 4, "the bound keeps growing");
    insta::assert_snapshot!(d.log.join("\n"));
}

#[test]
fn r32_a_silent_socket_is_closed_at_its_idle_deadline_frames_and_pings_keep_it() {
    let mut d = Driven::new(config());
    d.conn.attach(0, "redux");
    d.drain(0, "attach redux");
    d.conn.connected(0, 1);
    d.drain(0, "connected epoch=1");
    // Pings every 2 s; the peer's frames move the deadline.
    let pings = d.tick(2_000);
    assert_eq!(
        pings,
        [ConnEffect::Send {
            epoch: 1,
            frame: Frame::Ping
        }]
    );
    assert!(d.conn.received(2_010, 1));
    d.drain(2_010, "received epoch=1 (a pong)");
    d.tick(4_000);
    d.tick(6_000);
    // Half-open: nothing more arrives. 5 s after the last frame the socket is closed and the
    // entry reconnects.
    let at = d.next();
    assert_eq!(at, 7_010);
    let dead = d.tick(at);
    assert_eq!(dead.first(), Some(&ConnEffect::Close { epoch: 1 }));
    assert!(statuses(&dead).iter().any(|(_, s)| matches!(
        s,
        StreamStatus::Reconnecting { attempt: 1, last_error, .. } if last_error == "nothing received for 5000 ms"
    )));
    insta::assert_snapshot!(d.log.join("\n"));
}

#[test]
fn r32_max_attempts_and_fatal_errors_end_in_failed_for_every_topic_loudly() {
    let limited = ConnectionConfig {
        max_attempts: Some(2),
        ..config()
    };
    let mut d = Driven::new(limited);
    d.conn.attach(0, "redux");
    d.conn.attach(0, "general");
    d.drain(0, "attach redux, general");
    d.conn.connect_failed(10, 1, "refused".into(), false);
    d.drain(10, "connect failed epoch=1");
    for epoch in 2..=3u64 {
        let at = d.next();
        d.tick(at);
        d.conn
            .connect_failed(at + 10, epoch, "refused".into(), false);
        d.drain(at + 10, &format!("connect failed epoch={epoch}"));
    }
    let failed = StreamStatus::Failed {
        error: "gave up after 2 attempts: refused".into(),
    };
    assert_eq!(
        d.conn.state(),
        &ConnState::Failed {
            error: "gave up after 2 attempts: refused".into()
        }
    );
    assert_eq!(d.conn.poll_timeout(), None, "no more attempts");
    // reconnect_now starts again (the application knows the network is back).
    assert!(d.conn.reconnect_now(5_000));
    let again = d.drain(5_000, "reconnect now");
    assert!(
        statuses(&again)
            .iter()
            .all(|(_, s)| *s == StreamStatus::Connecting)
    );
    // A fatal error (an auth refusal, say) fails every topic at once, without retrying.
    d.conn
        .connect_failed(5_010, 4, "401 unauthorized".into(), true);
    let fatal = d.drain(5_010, "connect failed epoch=4 (fatal)");
    let expected = StreamStatus::Failed {
        error: "401 unauthorized".into(),
    };
    assert_eq!(
        statuses(&fatal),
        [("general", expected.clone()), ("redux", expected)]
    );
    assert_ne!(failed, StreamStatus::Live);
    insta::assert_snapshot!(d.log.join("\n"));
}

#[test]
fn r32_frames_of_an_earlier_socket_are_dropped_and_reconnect_now_reconnects_at_once() {
    let mut d = Driven::new(config());
    d.conn.attach(0, "redux");
    d.drain(0, "attach redux");
    d.conn.connected(10, 1);
    d.drain(10, "connected epoch=1");
    assert!(d.conn.reconnect_now(100));
    let now = d.drain(100, "reconnect now");
    assert_eq!(
        now[..2],
        [
            ConnEffect::Close { epoch: 1 },
            ConnEffect::Connect { epoch: 2 }
        ]
    );
    // A frame still in flight on the old socket: dropped.
    assert!(!d.conn.received(110, 1));
    d.drain(110, "received epoch=1 (dropped)");
    // A late report of the old socket changes nothing either.
    assert!(!d.conn.closed(120, 1, "eof".into(), false));
    d.drain(120, "closed epoch=1 (ignored)");
    assert!(d.conn.connected(130, 2));
    let back = d.drain(130, "connected epoch=2");
    assert!(back.contains(&ConnEffect::Resync { topic: "redux" }));
    assert!(d.conn.received(140, 2));
    d.drain(140, "received epoch=2");
    insta::assert_snapshot!(d.log.join("\n"));
}
