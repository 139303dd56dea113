//! The shared connection's sans-IO machine (R31, R32): many topics over one socket, reconnected
//! with backoff, kept honest by a heartbeat. It decides; a driver opens and closes sockets, sends
//! frames, keeps time and tells it what happened.
//!
//! # Driving contract
//!
//! Every call takes the current time in milliseconds (a clock that never goes back; a smaller
//! time is taken as the last one). Before an event at `now`, the deadlines that fell strictly
//! before it fire first, stamped with their own time; [`Connection::handle_timeout`] fires those
//! due at `now` too. After each call the driver drains [`Connection::poll_effect`] and sleeps
//! until [`Connection::poll_timeout`]. What it reports carries the epoch the machine gave the
//! socket ([`ConnEffect::Connect`]); a report of an earlier epoch is ignored, and a message that
//! arrived on one is dropped ([`Connection::received`] says so).
//!
//! ```
//! use livecache::core::{Connection, ConnectionConfig, ConnEffect, Frame, StreamStatus};
//! let mut conn: Connection<&str> = Connection::new(ConnectionConfig::default())?;
//! conn.attach(0, "redux");
//! let effects: Vec<_> = std::iter::from_fn(|| conn.poll_effect()).collect();
//! assert_eq!(effects[0], ConnEffect::Connect { epoch: 1 });
//! conn.connected(20, 1);
//! let subscribe = ConnEffect::Send { epoch: 1, frame: Frame::Subscribe { topic: "redux" } };
//! let effects: Vec<_> = std::iter::from_fn(|| conn.poll_effect()).collect();
//! assert!(effects.contains(&subscribe));
//! // The socket drops: the topic is `Reconnecting`, and a retry is due within the backoff.
//! conn.closed(1_000, 1, "reset by peer".into(), false);
//! let status = std::iter::from_fn(|| conn.poll_effect()).find_map(|e| match e {
//!     ConnEffect::Status { status, .. } => Some(status),
//!     _ => None,
//! });
//! assert!(matches!(status, Some(StreamStatus::Reconnecting { attempt: 1, since_ms: 1_000, .. })));
//! assert!(conn.poll_timeout().is_some_and(|at| at <= 1_000 + 500));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config;
mod effect;

use std::collections::{BTreeMap, VecDeque};

pub use config::{ConnectionConfig, ConnectionConfigError};
pub use effect::{ConnEffect, ConnState, Frame};

use crate::core::stream_status::StreamStatus;
use crate::core::trace::bound_text;

/// One topic's part in the connection.
#[derive(Clone, Debug, Default)]
struct Topic {
    /// It was subscribed on some socket already: a new socket means it may have missed
    /// messages, so it resyncs (R32).
    subscribed_before: bool,
    /// It was resubscribed on the current socket and has not reported its resync done.
    resync_pending: bool,
}

/// The shared connection's state machine (R31, R32), generic over the topic type (a topic is
/// what one entry subscribes to: a channel name, a Redis stream key).
///
/// See the module documentation for the driving contract.
#[derive(Clone, Debug)]
pub struct Connection<T> {
    config: ConnectionConfig,
    state: ConnState,
    now: u64,
    /// The last epoch handed out (epochs start at 1).
    epoch: u64,
    /// Failed attempts (or lost connections) in a row since the connection was last stable.
    retries: u32,
    /// When the connection was lost (or its first attempt failed), while it is not back.
    since_ms: Option<u64>,
    last_error: String,
    rng: fastrand::Rng,
    topics: BTreeMap<T, Topic>,
    /// What every attached topic was last told, so an unchanged status is not repeated.
    told: Option<StreamStatus>,
    /// Timers (absolute milliseconds), each meaningful in one state.
    connect_deadline: Option<u64>,
    ping_at: Option<u64>,
    idle_deadline: Option<u64>,
    stable_at: Option<u64>,
    /// The open connection has lasted `stable_after`; the count resets once no resync is
    /// pending.
    stable: bool,
    effects: VecDeque<ConnEffect<T>>,
}

/// The timers, in the order they fire when due at the same time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    Connect,
    Backoff,
    Linger,
    Idle,
    Ping,
    Stable,
}

impl<T: Ord + Clone> Connection<T> {
    /// A connection with no topics, `Idle`; `config` is checked first.
    ///
    /// ```
    /// use livecache::core::{Connection, ConnectionConfig};
    /// let bad = ConnectionConfig { backoff_cap_ms: 1, ..ConnectionConfig::default() };
    /// assert!(Connection::<u8>::new(bad).is_err());
    /// ```
    pub fn new(config: ConnectionConfig) -> Result<Self, ConnectionConfigError> {
        config.validate()?;
        Ok(Connection {
            config,
            state: ConnState::Idle,
            now: 0,
            epoch: 0,
            retries: 0,
            since_ms: None,
            last_error: String::new(),
            rng: fastrand::Rng::with_seed(config.seed),
            topics: BTreeMap::new(),
            told: None,
            connect_deadline: None,
            ping_at: None,
            idle_deadline: None,
            stable_at: None,
            stable: false,
            effects: VecDeque::new(),
        })
    }

    /// Where the connection is.
    ///
    /// ```
    /// # use livecache::core::{ConnState, Connection, ConnectionConfig};
    /// let mut conn: Connection<u8> = Connection::new(ConnectionConfig::default())?;
    /// conn.attach(0, 1);
    /// assert_eq!(conn.state(), &ConnState::Connecting { epoch: 1, attempt: 0 });
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn state(&self) -> &ConnState {
        &self.state
    }

    /// The attached topics, in order.
    ///
    /// ```
    /// # use livecache::core::{Connection, ConnectionConfig};
    /// let mut conn: Connection<u8> = Connection::new(ConnectionConfig::default())?;
    /// conn.attach(0, 2);
    /// conn.attach(0, 1);
    /// assert_eq!(conn.topics().collect::<Vec<_>>(), [&1, &2]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn topics(&self) -> impl Iterator<Item = &T> {
        self.topics.keys()
    }

    /// Failed attempts in a row since the connection was last stable (R32).
    ///
    /// ```
    /// # use livecache::core::{Connection, ConnectionConfig};
    /// let conn: Connection<u8> = Connection::new(ConnectionConfig::default())?;
    /// assert_eq!(conn.retries(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// The next queued effect.
    ///
    /// ```
    /// # use livecache::core::{Connection, ConnectionConfig};
    /// let mut conn: Connection<u8> = Connection::new(ConnectionConfig::default())?;
    /// assert_eq!(conn.poll_effect(), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use = "an effect is the driver's to carry out; dropping it loses it"]
    pub fn poll_effect(&mut self) -> Option<ConnEffect<T>> {
        self.effects.pop_front()
    }

    /// The earliest deadline, if any: call [`Connection::handle_timeout`] then.
    ///
    /// ```
    /// # use livecache::core::{Connection, ConnectionConfig};
    /// let mut conn: Connection<u8> = Connection::new(ConnectionConfig::default())?;
    /// conn.attach(0, 1);
    /// assert_eq!(conn.poll_timeout(), Some(10_000));     // the connect timeout
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn poll_timeout(&self) -> Option<u64> {
        self.next_timer().map(|(at, _)| at)
    }

    /// Fire every deadline due at or before `now`.
    ///
    /// ```
    /// # use livecache::core::{ConnState, Connection, ConnectionConfig};
    /// let mut conn: Connection<u8> = Connection::new(ConnectionConfig::default())?;
    /// conn.attach(0, 1);
    /// conn.handle_timeout(10_000);                       // the attempt timed out
    /// assert!(matches!(conn.state(), ConnState::Backoff { attempt: 1, .. }));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn handle_timeout(&mut self, now: u64) {
        let now = now.max(self.now);
        while let Some((at, timer)) = self.next_timer().filter(|(at, _)| *at <= now) {
            self.now = at;
            self.fire(timer, now);
        }
        self.now = now;
    }

    /// An entry needs `topic` (R31). Returns whether it is new (an attached topic is counted
    /// once). An idle or failed connection connects; an open one subscribes the topic.
    ///
    /// ```
    /// # use livecache::core::{Connection, ConnectionConfig};
    /// let mut conn: Connection<u8> = Connection::new(ConnectionConfig::default())?;
    /// assert!(conn.attach(0, 1));
    /// assert!(!conn.attach(0, 1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn attach(&mut self, now: u64, topic: T) -> bool {
        self.advance(now);
        if self.topics.contains_key(&topic) {
            return false;
        }
        // An idle or failed connection starts (the topics already there are told so).
        if matches!(self.state, ConnState::Idle | ConnState::Failed { .. }) {
            self.retries = 0;
            self.since_ms = None;
            self.connect();
        }
        self.topics.insert(topic.clone(), Topic::default());
        match self.state {
            ConnState::Open { epoch } => self.subscribe(epoch, &topic),
            ConnState::Lingering { epoch, .. } => {
                self.state = ConnState::Open { epoch };
                self.subscribe(epoch, &topic);
            }
            _ => {}
        }
        // The new topic learns the status the others have (unchanged for them).
        let status = self.status();
        self.told = Some(status.clone());
        self.effects.push_back(ConnEffect::Status { topic, status });
        true
    }

    /// No entry needs `topic` any more (its entry was removed, R31). Returns whether it was
    /// attached. An open connection unsubscribes it; the last topic's going closes the
    /// connection, at once if it is not open, else after `linger_ms`.
    ///
    /// ```
    /// # use livecache::core::{ConnState, Connection, ConnectionConfig, ConnEffect};
    /// let mut conn: Connection<u8> = Connection::new(ConnectionConfig::default())?;
    /// conn.attach(0, 1);
    /// assert!(conn.detach(5, &1));
    /// assert_eq!(conn.state(), &ConnState::Idle);         // the attempt is abandoned
    /// assert!(std::iter::from_fn(|| conn.poll_effect()).any(|e| e == ConnEffect::Close { epoch: 1 }));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn detach(&mut self, now: u64, topic: &T) -> bool {
        self.advance(now);
        if self.topics.remove(topic).is_none() {
            return false;
        }
        let empty = self.topics.is_empty();
        match self.state.clone() {
            ConnState::Open { epoch } => {
                let frame = Frame::Unsubscribe {
                    topic: topic.clone(),
                };
                self.effects.push_back(ConnEffect::Send { epoch, frame });
                if empty {
                    // The heartbeat and its deadline go on: the socket may be used again.
                    let until_ms = self.now.saturating_add(self.config.linger_ms);
                    self.state = ConnState::Lingering { epoch, until_ms };
                } else {
                    self.check_stable();
                }
            }
            ConnState::Connecting { epoch, .. } if empty => {
                self.effects.push_back(ConnEffect::Close { epoch });
                self.go_idle();
            }
            ConnState::Backoff { .. } | ConnState::Failed { .. } if empty => self.go_idle(),
            _ => {}
        }
        true
    }

    /// The socket of `epoch` connected. Returns whether it is the current attempt (else it is
    /// ignored: the driver closes it). Every attached topic is subscribed, all at once; those
    /// that were subscribed on an earlier socket resync (R32).
    ///
    /// ```
    /// # use livecache::core::{ConnState, Connection, ConnectionConfig};
    /// let mut conn: Connection<u8> = Connection::new(ConnectionConfig::default())?;
    /// conn.attach(0, 1);
    /// assert!(!conn.connected(1, 7));                     // not its epoch
    /// assert!(conn.connected(1, 1));
    /// assert_eq!(conn.state(), &ConnState::Open { epoch: 1 });
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn connected(&mut self, now: u64, epoch: u64) -> bool {
        self.advance(now);
        if !matches!(self.state, ConnState::Connecting { epoch: e, .. } if e == epoch) {
            return false;
        }
        self.state = ConnState::Open { epoch };
        self.connect_deadline = None;
        self.since_ms = None;
        self.idle_deadline = Some(self.now.saturating_add(self.config.idle_timeout_ms));
        self.ping_at = self
            .config
            .heartbeat_ms
            .map(|ms| self.now.saturating_add(ms));
        self.stable_at = Some(self.now.saturating_add(self.config.stable_after_ms));
        self.stable = false;
        let topics: Vec<T> = self.topics.keys().cloned().collect();
        for topic in &topics {
            self.subscribe(epoch, topic);
        }
        self.tell_all();
        true
    }

    /// The attempt of `epoch` failed (refused, a handshake error, the auth hook refused). A
    /// `fatal` error (the user marks which: an auth refusal, chosen close codes) ends in
    /// `Failed` for every topic; another schedules a retry. Returns whether it was the current
    /// attempt.
    ///
    /// ```
    /// # use livecache::core::{ConnState, Connection, ConnectionConfig};
    /// let mut conn: Connection<u8> = Connection::new(ConnectionConfig::default())?;
    /// conn.attach(0, 1);
    /// assert!(conn.connect_failed(3, 1, "401 unauthorized".into(), true));
    /// assert_eq!(conn.state(), &ConnState::Failed { error: "401 unauthorized".into() });
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn connect_failed(&mut self, now: u64, epoch: u64, error: String, fatal: bool) -> bool {
        self.advance(now);
        if !matches!(self.state, ConnState::Connecting { epoch: e, .. } if e == epoch) {
            return false;
        }
        self.failed_attempt(error, fatal);
        true
    }

    /// The socket of `epoch` closed or errored. If it was the open connection, every topic is
    /// `Reconnecting` and a retry is scheduled (or `Failed`, if `fatal`); a lingering one is
    /// simply gone; a connecting one failed. Returns whether it was the current socket.
    ///
    /// ```
    /// # use livecache::core::{ConnState, Connection, ConnectionConfig};
    /// let mut conn: Connection<u8> = Connection::new(ConnectionConfig::default())?;
    /// conn.attach(0, 1);
    /// conn.connected(1, 1);
    /// assert!(conn.closed(2, 1, "eof".into(), false));
    /// assert!(matches!(conn.state(), ConnState::Backoff { attempt: 1, .. }));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn closed(&mut self, now: u64, epoch: u64, error: String, fatal: bool) -> bool {
        self.advance(now);
        match self.state {
            ConnState::Open { epoch: e } if e == epoch => {
                self.lost(error, fatal);
                true
            }
            ConnState::Lingering { epoch: e, .. } if e == epoch => {
                self.go_idle();
                true
            }
            ConnState::Connecting { epoch: e, .. } if e == epoch => {
                self.failed_attempt(error, fatal);
                true
            }
            _ => false,
        }
    }

    /// A frame (a message, a pong) arrived on the socket of `epoch`. Returns whether to take
    /// it: only from the current socket (R32's epochs); it also proves the socket alive, so the
    /// idle deadline moves.
    ///
    /// ```
    /// # use livecache::core::{Connection, ConnectionConfig};
    /// let mut conn: Connection<u8> = Connection::new(ConnectionConfig::default())?;
    /// conn.attach(0, 1);
    /// conn.connected(1, 1);
    /// assert!(conn.received(2, 1));
    /// assert!(!conn.received(2, 0));                       // an earlier socket's: dropped
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn received(&mut self, now: u64, epoch: u64) -> bool {
        self.advance(now);
        match self.state {
            ConnState::Open { epoch: e } | ConnState::Lingering { epoch: e, .. } if e == epoch => {
                self.idle_deadline = Some(self.now.saturating_add(self.config.idle_timeout_ms));
                true
            }
            _ => false,
        }
    }

    /// `topic`'s entry finished the resync a reconnect asked for ([`ConnEffect::Resync`]).
    /// Returns whether one was pending. Once none is and the connection has lasted
    /// `stable_after_ms`, the retry count resets.
    ///
    /// ```
    /// # use livecache::core::{Connection, ConnectionConfig};
    /// let mut conn: Connection<u8> = Connection::new(ConnectionConfig::default())?;
    /// assert!(!conn.resynced(0, &1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn resynced(&mut self, now: u64, topic: &T) -> bool {
        self.advance(now);
        let Some(state) = self.topics.get_mut(topic) else {
            return false;
        };
        if !std::mem::take(&mut state.resync_pending) {
            return false;
        }
        self.check_stable();
        true
    }

    /// Reconnect now (the application saw the network change, R32): an open connection is
    /// closed and a new one opened at once; a connection waiting to retry retries now; a failed
    /// one with topics starts again. Returns whether it did anything.
    ///
    /// ```
    /// # use livecache::core::{ConnState, Connection, ConnectionConfig};
    /// let mut conn: Connection<u8> = Connection::new(ConnectionConfig::default())?;
    /// conn.attach(0, 1);
    /// conn.connected(1, 1);
    /// assert!(conn.reconnect_now(5));
    /// assert_eq!(conn.state(), &ConnState::Connecting { epoch: 2, attempt: 1 });
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn reconnect_now(&mut self, now: u64) -> bool {
        self.advance(now);
        match self.state.clone() {
            ConnState::Open { epoch } => {
                self.effects.push_back(ConnEffect::Close { epoch });
                self.clear_open_timers();
                for state in self.topics.values_mut() {
                    state.resync_pending = false;
                }
                self.since_ms = Some(self.now);
                self.last_error = "reconnect requested".to_owned();
                self.connect_as(self.retries.saturating_add(1));
                true
            }
            ConnState::Backoff { attempt, .. } => {
                self.connect_as(attempt);
                true
            }
            ConnState::Failed { .. } if !self.topics.is_empty() => {
                self.retries = 0;
                self.since_ms = None;
                self.connect();
                true
            }
            _ => false,
        }
    }

    // ===== Steps =====

    /// Fire the deadlines strictly before `now`, then move the clock to it.
    fn advance(&mut self, now: u64) {
        let now = now.max(self.now);
        while let Some((at, timer)) = self.next_timer().filter(|(at, _)| *at < now) {
            self.now = at;
            self.fire(timer, now);
        }
        self.now = now;
    }

    /// The earliest armed timer (ties in [`Timer`] order).
    fn next_timer(&self) -> Option<(u64, Timer)> {
        let (backoff, linger) = match self.state {
            ConnState::Backoff { until_ms, .. } => (Some(until_ms), None),
            ConnState::Lingering { until_ms, .. } => (None, Some(until_ms)),
            _ => (None, None),
        };
        [
            (self.connect_deadline, Timer::Connect),
            (backoff, Timer::Backoff),
            (linger, Timer::Linger),
            (self.idle_deadline, Timer::Idle),
            (self.ping_at, Timer::Ping),
            (self.stable_at, Timer::Stable),
        ]
        .into_iter()
        .filter_map(|(at, timer)| at.map(|at| (at, timer)))
        .min_by_key(|(at, _)| *at)
    }

    /// Fire `timer`, due now (`self.now`), while the driver's own time is `driver_now` (later,
    /// if it woke late).
    fn fire(&mut self, timer: Timer, driver_now: u64) {
        match (timer, self.state.clone()) {
            (Timer::Connect, ConnState::Connecting { epoch, .. }) => {
                self.effects.push_back(ConnEffect::Close { epoch });
                let error = format!("no connection after {} ms", self.config.connect_timeout_ms);
                self.failed_attempt(error, false);
            }
            (Timer::Backoff, ConnState::Backoff { attempt, .. }) => {
                // The attempt starts when the driver makes it: its timeout runs from then.
                self.now = driver_now;
                self.connect_as(attempt);
            }
            (Timer::Linger, ConnState::Lingering { epoch, .. }) => {
                self.effects.push_back(ConnEffect::Close { epoch });
                self.go_idle();
            }
            (Timer::Idle, ConnState::Open { epoch }) => {
                self.effects.push_back(ConnEffect::Close { epoch });
                let error = format!("nothing received for {} ms", self.config.idle_timeout_ms);
                self.lost(error, false);
            }
            (Timer::Idle, ConnState::Lingering { epoch, .. }) => {
                self.effects.push_back(ConnEffect::Close { epoch });
                self.go_idle();
            }
            (Timer::Ping, ConnState::Open { epoch } | ConnState::Lingering { epoch, .. }) => {
                let frame = Frame::Ping;
                self.effects.push_back(ConnEffect::Send { epoch, frame });
                // The ping goes out when the driver sends it: one for a late wake-up, not one
                // for every interval missed.
                self.ping_at = self
                    .config
                    .heartbeat_ms
                    .map(|ms| driver_now.saturating_add(ms));
            }
            (Timer::Stable, ConnState::Open { .. } | ConnState::Lingering { .. }) => {
                self.stable_at = None;
                self.stable = true;
                self.check_stable();
            }
            // A timer armed for a state the connection has left: disarm it.
            (Timer::Connect, _) => self.connect_deadline = None,
            (Timer::Idle, _) => self.idle_deadline = None,
            (Timer::Ping, _) => self.ping_at = None,
            (Timer::Stable, _) => self.stable_at = None,
            (Timer::Backoff | Timer::Linger, _) => {}
        }
    }

    /// A first connect (attempt 0).
    fn connect(&mut self) {
        self.connect_as(0);
    }

    /// Open a new socket: a new epoch, the connect deadline armed.
    fn connect_as(&mut self, attempt: u32) {
        self.epoch = self.epoch.saturating_add(1);
        let epoch = self.epoch;
        self.state = ConnState::Connecting { epoch, attempt };
        self.connect_deadline = Some(self.now.saturating_add(self.config.connect_timeout_ms));
        self.effects.push_back(ConnEffect::Connect { epoch });
        self.tell_all();
    }

    /// Subscribe `topic` on the open socket; one subscribed on an earlier socket resyncs.
    fn subscribe(&mut self, epoch: u64, topic: &T) {
        let frame = Frame::Subscribe {
            topic: topic.clone(),
        };
        self.effects.push_back(ConnEffect::Send { epoch, frame });
        let Some(state) = self.topics.get_mut(topic) else {
            return;
        };
        if state.subscribed_before {
            state.resync_pending = true;
            let topic = topic.clone();
            self.effects.push_back(ConnEffect::Resync { topic });
        }
        state.subscribed_before = true;
    }

    /// The open connection was lost.
    fn lost(&mut self, error: String, fatal: bool) {
        self.clear_open_timers();
        self.since_ms = Some(self.now);
        for state in self.topics.values_mut() {
            state.resync_pending = false;
        }
        self.failed_attempt(error, fatal);
    }

    /// An attempt failed, or the connection was lost: retry after a backoff, or give up.
    fn failed_attempt(&mut self, error: String, fatal: bool) {
        self.connect_deadline = None;
        self.since_ms.get_or_insert(self.now);
        self.last_error = bound_text(error);
        self.retries = self.retries.saturating_add(1);
        let exhausted = self
            .config
            .max_attempts
            .is_some_and(|max| self.retries > max);
        if fatal || exhausted {
            let error = if fatal {
                self.last_error.clone()
            } else {
                let tries = self.retries.saturating_sub(1);
                bound_text(format!(
                    "gave up after {tries} attempts: {}",
                    self.last_error
                ))
            };
            self.state = ConnState::Failed { error };
            self.tell_all();
            return;
        }
        let bound = self.config.backoff_bound(self.retries.saturating_sub(1));
        let delay = self.rng.u64(0..=bound);
        let until_ms = self.now.saturating_add(delay);
        self.state = ConnState::Backoff {
            attempt: self.retries,
            until_ms,
        };
        self.tell_all();
    }

    fn go_idle(&mut self) {
        self.state = ConnState::Idle;
        self.connect_deadline = None;
        self.clear_open_timers();
        self.since_ms = None;
        self.retries = 0;
        self.told = None;
    }

    fn clear_open_timers(&mut self) {
        self.ping_at = None;
        self.idle_deadline = None;
        self.stable_at = None;
        self.stable = false;
    }

    /// The retry count resets once the connection is stable and no resync is pending.
    fn check_stable(&mut self) {
        if self.stable && self.topics.values().all(|t| !t.resync_pending) {
            self.retries = 0;
        }
    }

    /// The status every attached topic's source has now (R28, R32).
    fn status(&self) -> StreamStatus {
        match &self.state {
            ConnState::Idle | ConnState::Connecting { attempt: 0, .. } => StreamStatus::Connecting,
            ConnState::Connecting { attempt, .. } | ConnState::Backoff { attempt, .. } => {
                StreamStatus::Reconnecting {
                    attempt: *attempt,
                    since_ms: self.since_ms.unwrap_or(self.now),
                    last_error: self.last_error.clone(),
                }
            }
            ConnState::Open { .. } | ConnState::Lingering { .. } => StreamStatus::Live,
            ConnState::Failed { error } => StreamStatus::Failed {
                error: error.clone(),
            },
        }
    }

    /// Tell every attached topic the status, if it changed.
    fn tell_all(&mut self) {
        let status = self.status();
        if self.told.as_ref() == Some(&status) {
            return;
        }
        self.told = Some(status.clone());
        for topic in self.topics.keys() {
            self.effects.push_back(ConnEffect::Status {
                topic: topic.clone(),
                status: status.clone(),
            });
        }
    }
}
