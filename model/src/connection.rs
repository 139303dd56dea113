//! The shared connection (R31, R32), stated plainly: what each event does to one connection of
//! topics, and what the driver is asked to do. `docs/semantics.md`, "The shared connection",
//! says the same in prose. The deadlines are not stored: each is derived from when something
//! happened (the last frame heard, the time the socket opened), and found by a linear look at
//! all of them.

use std::collections::BTreeMap;

use livecache::core::{ConnEffect, ConnState, ConnectionConfig, Frame, StreamStatus};
use serde::{Deserialize, Serialize};

/// A topic of the connection alphabet.
pub type TopicId = u8;

/// The error text of a refused attempt ([`ConnEvent::ConnectFailed`]).
pub const REFUSED: &str = "connection refused";
/// The error text of a socket that closed ([`ConnEvent::Closed`]).
pub const RESET: &str = "connection reset";

/// One event of the connection alphabet; each happens at the model's time, after the `Late`
/// time let pass before it (the deadlines strictly before it firing first).
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConnEvent {
    /// An entry needs the topic.
    Attach {
        /// The topic.
        topic: TopicId,
    },
    /// The entry of the topic was removed.
    Detach {
        /// The topic.
        topic: TopicId,
    },
    /// The socket of `epoch` connected.
    Connected {
        /// The epoch.
        epoch: u64,
    },
    /// The attempt of `epoch` failed ([`REFUSED`]).
    ConnectFailed {
        /// The epoch.
        epoch: u64,
        /// Whether the error is marked fatal.
        fatal: bool,
    },
    /// The socket of `epoch` closed ([`RESET`]).
    Closed {
        /// The epoch.
        epoch: u64,
        /// Whether the error is marked fatal.
        fatal: bool,
    },
    /// A frame arrived on the socket of `epoch`.
    Received {
        /// The epoch.
        epoch: u64,
    },
    /// The topic's entry finished its resync.
    Resynced {
        /// The topic.
        topic: TopicId,
    },
    /// The application asks to reconnect now.
    ReconnectNow,
    /// Time passes by `ms` and the due deadlines fire (the driver's timer).
    Advance {
        /// Milliseconds.
        ms: u64,
    },
    /// Time passes by `ms` with no timer: the next event comes that much later.
    Late {
        /// Milliseconds.
        ms: u64,
    },
}

/// Where the connection is, with what each place needs to know.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    Connecting {
        epoch: u64,
        attempt: u32,
        started: u64,
    },
    Open {
        epoch: u64,
    },
    Lingering {
        epoch: u64,
        until: u64,
    },
    Backoff {
        attempt: u32,
        until: u64,
    },
    Failed {
        error: String,
    },
}

/// The model of one shared connection.
#[derive(Clone, Debug)]
pub struct ConnectionModel {
    config: ConnectionConfig,
    now: u64,
    late: u64,
    epochs: u64,
    phase: Phase,
    /// Failed attempts or lost connections in a row since the connection was stable.
    failures: u32,
    /// When the connection went down, while it is down.
    down_since: Option<u64>,
    last_error: String,
    /// Each topic: subscribed on some socket before; resync asked and not done.
    topics: BTreeMap<TopicId, (bool, bool)>,
    told: Option<StreamStatus>,
    /// While a socket is open (or lingering): when it opened, when a frame was last heard,
    /// the next ping, and whether it has lasted `stable_after`.
    opened: u64,
    heard: u64,
    next_ping: Option<u64>,
    stable: bool,
    rng: fastrand::Rng,
    effects: Vec<ConnEffect<TopicId>>,
}

impl ConnectionModel {
    /// A model with no topics.
    pub fn new(config: ConnectionConfig) -> Self {
        ConnectionModel {
            config,
            now: 0,
            late: 0,
            epochs: 0,
            phase: Phase::Idle,
            failures: 0,
            down_since: None,
            last_error: String::new(),
            topics: BTreeMap::new(),
            told: None,
            opened: 0,
            heard: 0,
            next_ping: None,
            stable: false,
            rng: fastrand::Rng::with_seed(config.seed),
            effects: Vec::new(),
        }
    }

    /// The time of the next event (the model's clock plus any `Late` time).
    pub fn now(&self) -> u64 {
        self.now.saturating_add(self.late)
    }

    /// Apply one event: what it returned (false for the time events) and the effects asked.
    pub fn apply(&mut self, event: &ConnEvent) -> (bool, Vec<ConnEffect<TopicId>>) {
        self.effects.clear();
        let result = match event {
            ConnEvent::Late { ms } => {
                self.late = self.late.saturating_add(*ms);
                false
            }
            ConnEvent::Advance { ms } => {
                let to = self.now().saturating_add(*ms);
                self.late = 0;
                self.fire_until(to, true);
                false
            }
            other => {
                let at = self.now();
                self.late = 0;
                self.fire_until(at, false);
                self.event(other)
            }
        };
        (result, std::mem::take(&mut self.effects))
    }

    /// The state as the implementation names it.
    pub fn state(&self) -> ConnState {
        match &self.phase {
            Phase::Idle => ConnState::Idle,
            Phase::Connecting { epoch, attempt, .. } => ConnState::Connecting {
                epoch: *epoch,
                attempt: *attempt,
            },
            Phase::Open { epoch } => ConnState::Open { epoch: *epoch },
            Phase::Lingering { epoch, until } => ConnState::Lingering {
                epoch: *epoch,
                until_ms: *until,
            },
            Phase::Backoff { attempt, until } => ConnState::Backoff {
                attempt: *attempt,
                until_ms: *until,
            },
            Phase::Failed { error } => ConnState::Failed {
                error: error.clone(),
            },
        }
    }

    /// Failed attempts in a row since the connection was last stable.
    pub fn retries(&self) -> u32 {
        self.failures
    }

    /// The attached topics.
    pub fn topics(&self) -> Vec<TopicId> {
        self.topics.keys().copied().collect()
    }

    /// The earliest deadline.
    pub fn next_deadline(&self) -> Option<u64> {
        self.deadlines().into_iter().map(|(at, _)| at).min()
    }

    /// The last epoch handed out.
    pub fn epochs(&self) -> u64 {
        self.epochs
    }

    // ===== Time =====

    /// Every deadline that is armed, with its rank (ties fire in rank order): the attempt's
    /// timeout, the end of the backoff, the end of the linger, the idle deadline, the next
    /// ping, the stable mark.
    fn deadlines(&self) -> Vec<(u64, u8)> {
        let mut all = Vec::new();
        match &self.phase {
            Phase::Connecting { started, .. } => {
                all.push((started.saturating_add(self.config.connect_timeout_ms), 0));
            }
            Phase::Backoff { until, .. } => all.push((*until, 1)),
            Phase::Lingering { until, .. } => all.push((*until, 2)),
            _ => {}
        }
        if matches!(self.phase, Phase::Open { .. } | Phase::Lingering { .. }) {
            all.push((self.heard.saturating_add(self.config.idle_timeout_ms), 3));
            if let Some(at) = self.next_ping {
                all.push((at, 4));
            }
            if !self.stable {
                all.push((self.opened.saturating_add(self.config.stable_after_ms), 5));
            }
        }
        all
    }

    /// Fire, in order, the deadlines before `to` (at or before it, if `inclusive`), each at its
    /// own time; then the clock is `to`.
    fn fire_until(&mut self, to: u64, inclusive: bool) {
        let to = to.max(self.now);
        loop {
            let due = self
                .deadlines()
                .into_iter()
                .filter(|(at, _)| *at < to || (inclusive && *at == to))
                .min();
            let Some((at, rank)) = due else { break };
            self.now = at;
            self.fire(rank, to);
        }
        self.now = to;
    }

    /// Fire the deadline of `rank`, due at the model's time, while the driver's time is `to`.
    fn fire(&mut self, rank: u8, to: u64) {
        match (rank, self.phase.clone()) {
            (0, Phase::Connecting { epoch, .. }) => {
                self.effects.push(ConnEffect::Close { epoch });
                let error = format!("no connection after {} ms", self.config.connect_timeout_ms);
                self.attempt_failed(error, false);
            }
            (1, Phase::Backoff { attempt, .. }) => {
                // The retry starts when the driver makes it, a late wake-up included.
                self.now = to;
                self.open_socket(attempt);
            }
            (2, Phase::Lingering { epoch, .. }) => {
                self.effects.push(ConnEffect::Close { epoch });
                self.idle();
            }
            (3, Phase::Open { epoch }) => {
                self.effects.push(ConnEffect::Close { epoch });
                let error = format!("nothing received for {} ms", self.config.idle_timeout_ms);
                self.connection_lost(error, false);
            }
            (3, Phase::Lingering { epoch, .. }) => {
                self.effects.push(ConnEffect::Close { epoch });
                self.idle();
            }
            (4, Phase::Open { epoch } | Phase::Lingering { epoch, .. }) => {
                self.effects.push(ConnEffect::Send {
                    epoch,
                    frame: Frame::Ping,
                });
                // One ping when the driver wakes late, the next a heartbeat after it.
                self.next_ping = self.config.heartbeat_ms.map(|ms| to.saturating_add(ms));
            }
            (5, Phase::Open { .. } | Phase::Lingering { .. }) => {
                self.stable = true;
                self.maybe_stable();
            }
            _ => {}
        }
    }

    // ===== Events =====

    fn event(&mut self, event: &ConnEvent) -> bool {
        match *event {
            ConnEvent::Attach { topic } => self.attach(topic),
            ConnEvent::Detach { topic } => self.detach(topic),
            ConnEvent::Connected { epoch } => {
                if !matches!(self.phase, Phase::Connecting { epoch: e, .. } if e == epoch) {
                    return false;
                }
                // R32: every topic is subscribed again at once; one that was subscribed on an
                // earlier socket may have missed messages and resyncs.
                self.phase = Phase::Open { epoch };
                self.down_since = None;
                self.opened = self.now;
                self.heard = self.now;
                self.next_ping = self
                    .config
                    .heartbeat_ms
                    .map(|ms| self.now.saturating_add(ms));
                self.stable = false;
                let topics: Vec<TopicId> = self.topics.keys().copied().collect();
                for topic in topics {
                    self.subscribe(epoch, topic);
                }
                self.tell_all();
                true
            }
            ConnEvent::ConnectFailed { epoch, fatal } => {
                if !matches!(self.phase, Phase::Connecting { epoch: e, .. } if e == epoch) {
                    return false;
                }
                self.attempt_failed(REFUSED.to_owned(), fatal);
                true
            }
            ConnEvent::Closed { epoch, fatal } => match self.phase {
                Phase::Open { epoch: e } if e == epoch => {
                    self.connection_lost(RESET.to_owned(), fatal);
                    true
                }
                Phase::Lingering { epoch: e, .. } if e == epoch => {
                    self.idle();
                    true
                }
                Phase::Connecting { epoch: e, .. } if e == epoch => {
                    self.attempt_failed(RESET.to_owned(), fatal);
                    true
                }
                _ => false,
            },
            ConnEvent::Received { epoch } => match self.phase {
                Phase::Open { epoch: e } | Phase::Lingering { epoch: e, .. } if e == epoch => {
                    self.heard = self.now;
                    true
                }
                // A frame of an earlier socket is dropped.
                _ => false,
            },
            ConnEvent::Resynced { topic } => match self.topics.get_mut(&topic) {
                Some((_, pending @ true)) => {
                    *pending = false;
                    self.maybe_stable();
                    true
                }
                _ => false,
            },
            ConnEvent::ReconnectNow => self.reconnect_now(),
            ConnEvent::Advance { .. } | ConnEvent::Late { .. } => false,
        }
    }

    fn attach(&mut self, topic: TopicId) -> bool {
        if self.topics.contains_key(&topic) {
            return false;
        }
        if matches!(self.phase, Phase::Idle | Phase::Failed { .. }) {
            self.failures = 0;
            self.down_since = None;
            self.open_socket(0);
        }
        self.topics.insert(topic, (false, false));
        match self.phase {
            Phase::Open { epoch } => self.subscribe(epoch, topic),
            Phase::Lingering { epoch, .. } => {
                self.phase = Phase::Open { epoch };
                self.subscribe(epoch, topic);
            }
            _ => {}
        }
        let status = self.status();
        self.told = Some(status.clone());
        self.effects.push(ConnEffect::Status { topic, status });
        true
    }

    fn detach(&mut self, topic: TopicId) -> bool {
        if self.topics.remove(&topic).is_none() {
            return false;
        }
        let none_left = self.topics.is_empty();
        match self.phase.clone() {
            Phase::Open { epoch } => {
                self.effects.push(ConnEffect::Send {
                    epoch,
                    frame: Frame::Unsubscribe { topic },
                });
                if none_left {
                    let until = self.now.saturating_add(self.config.linger_ms);
                    self.phase = Phase::Lingering { epoch, until };
                } else {
                    self.maybe_stable();
                }
            }
            Phase::Connecting { epoch, .. } if none_left => {
                self.effects.push(ConnEffect::Close { epoch });
                self.idle();
            }
            Phase::Backoff { .. } | Phase::Failed { .. } if none_left => self.idle(),
            _ => {}
        }
        true
    }

    fn reconnect_now(&mut self) -> bool {
        match self.phase.clone() {
            Phase::Open { epoch } => {
                self.effects.push(ConnEffect::Close { epoch });
                for (_, pending) in self.topics.values_mut() {
                    *pending = false;
                }
                self.down_since = Some(self.now);
                self.last_error = "reconnect requested".to_owned();
                self.open_socket(self.failures.saturating_add(1));
                true
            }
            Phase::Backoff { attempt, .. } => {
                self.open_socket(attempt);
                true
            }
            Phase::Failed { .. } if !self.topics.is_empty() => {
                self.failures = 0;
                self.down_since = None;
                self.open_socket(0);
                true
            }
            _ => false,
        }
    }

    // ===== Steps =====

    fn open_socket(&mut self, attempt: u32) {
        self.epochs += 1;
        let epoch = self.epochs;
        self.phase = Phase::Connecting {
            epoch,
            attempt,
            started: self.now,
        };
        self.effects.push(ConnEffect::Connect { epoch });
        self.tell_all();
    }

    fn subscribe(&mut self, epoch: u64, topic: TopicId) {
        self.effects.push(ConnEffect::Send {
            epoch,
            frame: Frame::Subscribe { topic },
        });
        if let Some((before, pending)) = self.topics.get_mut(&topic) {
            if *before {
                *pending = true;
                self.effects.push(ConnEffect::Resync { topic });
            }
            *before = true;
        }
    }

    fn connection_lost(&mut self, error: String, fatal: bool) {
        self.down_since = Some(self.now);
        for (_, pending) in self.topics.values_mut() {
            *pending = false;
        }
        self.attempt_failed(error, fatal);
    }

    /// R32: one more failure; give up if it is fatal or the retries are spent, else wait a
    /// delay drawn uniformly in `[0, min(cap, base · 2^n)]` before retry `n + 1`.
    fn attempt_failed(&mut self, error: String, fatal: bool) {
        self.down_since.get_or_insert(self.now);
        self.last_error = livecache_text(error);
        self.failures = self.failures.saturating_add(1);
        let spent = self
            .config
            .max_attempts
            .is_some_and(|max| self.failures > max);
        if fatal || spent {
            let error = if fatal {
                self.last_error.clone()
            } else {
                livecache_text(format!(
                    "gave up after {} attempts: {}",
                    self.failures - 1,
                    self.last_error
                ))
            };
            self.phase = Phase::Failed { error };
            self.tell_all();
            return;
        }
        let n = self.failures - 1;
        let bound = self
            .config
            .backoff_base_ms
            .saturating_mul(2u64.checked_pow(n).unwrap_or(u64::MAX))
            .min(self.config.backoff_cap_ms);
        let delay = self.rng.u64(0..=bound);
        self.phase = Phase::Backoff {
            attempt: self.failures,
            until: self.now.saturating_add(delay),
        };
        self.tell_all();
    }

    fn idle(&mut self) {
        self.phase = Phase::Idle;
        self.failures = 0;
        self.down_since = None;
        self.told = None;
        self.next_ping = None;
        self.stable = false;
    }

    /// R32: the count resets once the connection has lasted `stable_after` and no topic's
    /// resync is pending.
    fn maybe_stable(&mut self) {
        if self.stable && self.topics.values().all(|(_, pending)| !pending) {
            self.failures = 0;
        }
    }

    fn status(&self) -> StreamStatus {
        match &self.phase {
            Phase::Idle | Phase::Connecting { attempt: 0, .. } => StreamStatus::Connecting,
            Phase::Connecting { attempt, .. } | Phase::Backoff { attempt, .. } => {
                StreamStatus::Reconnecting {
                    attempt: *attempt,
                    since_ms: self.down_since.unwrap_or(self.now),
                    last_error: self.last_error.clone(),
                }
            }
            Phase::Open { .. } | Phase::Lingering { .. } => StreamStatus::Live,
            Phase::Failed { error } => StreamStatus::Failed {
                error: error.clone(),
            },
        }
    }

    fn tell_all(&mut self) {
        let status = self.status();
        if self.told.as_ref() == Some(&status) {
            return;
        }
        self.told = Some(status.clone());
        for topic in self.topics.keys() {
            self.effects.push(ConnEffect::Status {
                topic: *topic,
                status: status.clone(),
            });
        }
    }
}

/// A text as the core keeps texts a peer controls (cut to the trace's cap).
fn livecache_text(text: String) -> String {
    crate::trace_text(&text)
}
