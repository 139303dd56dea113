//! `connection_events`: arbitrary event sequences through the shared connection's machine and
//! its reference model (R31, R32).

use arbitrary::{Arbitrary, Unstructured};
use livecache::core::ConnectionConfig;
use livecache_model::{ConnEvent, ConnectionModel};

use crate::connection::{ConnectionUnderTest, step};

/// The longest event sequence one input drives.
const MAX_EVENTS: usize = 128;

/// How an event names a socket: the current one, the one before, or any up to one past it.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum EpochSel {
    Current,
    Previous,
    Any(u8),
}

impl EpochSel {
    fn resolve(self, epochs: u64) -> u64 {
        match self {
            EpochSel::Current => epochs,
            EpochSel::Previous => epochs.saturating_sub(1),
            EpochSel::Any(n) => u64::from(n) % (epochs + 2),
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum EventSel {
    Attach(u8),
    Detach(u8),
    Connected(EpochSel),
    ConnectFailed(EpochSel, bool),
    Closed(EpochSel, bool),
    Received(EpochSel),
    Resynced(u8),
    ReconnectNow,
    Advance(u16),
    Late(u16),
}

impl EventSel {
    fn event(self, epochs: u64) -> ConnEvent {
        match self {
            EventSel::Attach(t) => ConnEvent::Attach { topic: t % 5 },
            EventSel::Detach(t) => ConnEvent::Detach { topic: t % 5 },
            EventSel::Connected(e) => ConnEvent::Connected {
                epoch: e.resolve(epochs),
            },
            EventSel::ConnectFailed(e, fatal) => ConnEvent::ConnectFailed {
                epoch: e.resolve(epochs),
                fatal,
            },
            EventSel::Closed(e, fatal) => ConnEvent::Closed {
                epoch: e.resolve(epochs),
                fatal,
            },
            EventSel::Received(e) => ConnEvent::Received {
                epoch: e.resolve(epochs),
            },
            EventSel::Resynced(t) => ConnEvent::Resynced { topic: t % 5 },
            EventSel::ReconnectNow => ConnEvent::ReconnectNow,
            EventSel::Advance(ms) => ConnEvent::Advance { ms: u64::from(ms) },
            EventSel::Late(ms) => ConnEvent::Late { ms: u64::from(ms) },
        }
    }
}

/// A configuration whose times are small enough to meet: each picked in a short range, then
/// made valid (the cap at least the base, the idle deadline past the heartbeat).
#[derive(Arbitrary, Debug)]
struct ConfigSel {
    base: u8,
    cap: u16,
    max_attempts: Option<u8>,
    connect_timeout: u16,
    heartbeat: Option<u8>,
    idle_extra: u16,
    stable_after: u16,
    linger: u16,
    seed: u64,
}

impl ConfigSel {
    fn config(&self) -> ConnectionConfig {
        let base = u64::from(self.base).max(1);
        let heartbeat = self.heartbeat.map(|ms| u64::from(ms).max(1));
        ConnectionConfig {
            backoff_base_ms: base,
            backoff_cap_ms: base.max(u64::from(self.cap)),
            max_attempts: self.max_attempts.map(|n| u32::from(n % 6)),
            connect_timeout_ms: u64::from(self.connect_timeout).max(1),
            heartbeat_ms: heartbeat,
            idle_timeout_ms: heartbeat.unwrap_or(0) + u64::from(self.idle_extra).max(1),
            stable_after_ms: u64::from(self.stable_after),
            linger_ms: u64::from(self.linger),
            seed: self.seed,
        }
    }
}

/// The fuzz body: decode a configuration and up to `MAX_EVENTS` events, apply each to the model
/// and the machine, and compare them after every event.
///
/// # Panics
///
/// On any difference between the model and the machine: that is the finding.
pub fn connection_events(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(config) = ConfigSel::arbitrary(&mut u) else {
        return;
    };
    let config = config.config();
    if config.validate().is_err() {
        return;
    }
    let mut model = ConnectionModel::new(config);
    let mut machine = ConnectionUnderTest::new(config);
    for i in 0..MAX_EVENTS {
        let Ok(sel) = EventSel::arbitrary(&mut u) else {
            break;
        };
        let event = sel.event(model.epochs());
        if let Err(diff) = step(i, &event, &mut model, &mut machine) {
            panic!("seed {}: {diff}", config.seed);
        }
    }
}
