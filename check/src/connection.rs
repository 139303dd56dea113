//! Drives the shared connection's machine (`livecache::core::Connection`) with the model's
//! connection alphabet ([`ConnEvent`]) and compares the two after every event: what the event
//! returned, every effect asked for (in order), the state, the retry count, the topics and the
//! next deadline.

use livecache::core::{ConnEffect, ConnState, Connection, ConnectionConfig};
use livecache_model::{ConnEvent, ConnectionModel, REFUSED, RESET, TopicId};

/// The machine, with the clock the model's `Late` events move.
#[derive(Clone, Debug)]
pub struct ConnectionUnderTest {
    machine: Connection<TopicId>,
    now: u64,
    late: u64,
}

/// What one event did, as compared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// What the event returned (false for the time events).
    pub result: bool,
    /// The effects, in order.
    pub effects: Vec<ConnEffect<TopicId>>,
    /// The state after it.
    pub state: ConnState,
    /// The retry count after it.
    pub retries: u32,
    /// The attached topics after it.
    pub topics: Vec<TopicId>,
    /// The next deadline after it.
    pub next_deadline: Option<u64>,
}

impl ConnectionUnderTest {
    /// A machine with `config`.
    ///
    /// # Panics
    ///
    /// If `config` is not valid (the checks use valid ones).
    pub fn new(config: ConnectionConfig) -> Self {
        ConnectionUnderTest {
            machine: Connection::new(config).expect("a valid configuration"),
            now: 0,
            late: 0,
        }
    }

    /// The machine itself.
    pub fn machine(&self) -> &Connection<TopicId> {
        &self.machine
    }

    /// Apply one event as a driver would.
    pub fn apply(&mut self, event: &ConnEvent) -> Outcome {
        let at = self.now.saturating_add(self.late);
        let m = &mut self.machine;
        let result = match *event {
            ConnEvent::Late { ms } => {
                self.late = self.late.saturating_add(ms);
                false
            }
            ConnEvent::Advance { ms } => {
                m.handle_timeout(at.saturating_add(ms));
                false
            }
            ConnEvent::Attach { topic } => m.attach(at, topic),
            ConnEvent::Detach { topic } => m.detach(at, &topic),
            ConnEvent::Connected { epoch } => m.connected(at, epoch),
            ConnEvent::ConnectFailed { epoch, fatal } => {
                m.connect_failed(at, epoch, REFUSED.to_owned(), fatal)
            }
            ConnEvent::Closed { epoch, fatal } => m.closed(at, epoch, RESET.to_owned(), fatal),
            ConnEvent::Received { epoch } => m.received(at, epoch),
            ConnEvent::Resynced { topic } => m.resynced(at, &topic),
            ConnEvent::ReconnectNow => m.reconnect_now(at),
        };
        if !matches!(event, ConnEvent::Late { .. }) {
            self.now = match event {
                ConnEvent::Advance { ms } => at.saturating_add(*ms),
                _ => at,
            };
            self.late = 0;
        }
        self.outcome(result)
    }

    fn outcome(&mut self, result: bool) -> Outcome {
        let effects = std::iter::from_fn(|| self.machine.poll_effect()).collect();
        Outcome {
            result,
            effects,
            state: self.machine.state().clone(),
            retries: self.machine.retries(),
            topics: self.machine.topics().copied().collect(),
            next_deadline: self.machine.poll_timeout(),
        }
    }
}

/// The model's outcome of `event`, shaped as the machine's.
pub fn model_outcome(model: &mut ConnectionModel, event: &ConnEvent) -> Outcome {
    let (result, effects) = model.apply(event);
    Outcome {
        result,
        effects,
        state: model.state(),
        retries: model.retries(),
        topics: model.topics(),
        next_deadline: model.next_deadline(),
    }
}

/// Apply `event` to both and compare.
///
/// # Errors
///
/// A description of the first difference.
pub fn step(
    step: usize,
    event: &ConnEvent,
    model: &mut ConnectionModel,
    machine: &mut ConnectionUnderTest,
) -> Result<Outcome, String> {
    let expected = model_outcome(model, event);
    let got = machine.apply(event);
    if expected != got {
        return Err(format!(
            "step {step} {event:?}:\n model:   {expected:?}\n machine: {got:?}"
        ));
    }
    Ok(got)
}
