//! The change signal of one entry lifetime: a version bumped on every visible change, closed
//! when the lifetime ends.
//!
//! It has the semantics of the `tokio::sync::watch::channel(u64)` it replaces (a version per
//! receiver; `changed` returns `Ok` for an unseen version before it reports the close; a receiver
//! made by `subscribe` has seen the current version; `mark_changed` as in watch; the same
//! cooperative budgeting), at a fraction of the cost per change: one `Notify`
//! where watch has eight, and no value behind a lock (nobody reads one).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

/// The lowest bit of the state: the sender is gone. The version is in the other bits.
const CLOSED: u64 = 1;
/// One version step.
const STEP: u64 = 2;

#[derive(Debug, Default)]
struct Shared {
    state: AtomicU64,
    changed: Notify,
}

impl Shared {
    fn load(&self) -> u64 {
        self.state.load(Ordering::Acquire)
    }
}

/// The lifetime's side: bumps the version; dropping it closes the signal.
#[derive(Debug)]
pub(crate) struct Sender(Arc<Shared>);

/// The receivers were closed: the sender is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Closed;

impl Sender {
    pub(crate) fn new() -> Sender {
        Sender(Arc::default())
    }

    /// A visible change: wakes every receiver waiting in `changed`.
    pub(crate) fn send(&self) {
        self.0.state.fetch_add(STEP, Ordering::Release);
        self.0.changed.notify_waiters();
    }

    /// A receiver that has seen the current version.
    pub(crate) fn subscribe(&self) -> Receiver {
        Receiver {
            version: self.0.load() & !CLOSED,
            shared: Arc::clone(&self.0),
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.0.state.fetch_or(CLOSED, Ordering::Release);
        self.0.changed.notify_waiters();
    }
}

/// A reader's side: the version it has seen.
#[derive(Clone, Debug)]
pub(crate) struct Receiver {
    shared: Arc<Shared>,
    version: u64,
}

impl Receiver {
    /// Wait for a version this receiver has not seen, and mark it seen; `Err(Closed)` once the
    /// sender is gone and every version was seen.
    pub(crate) async fn changed(&mut self) -> Result<(), Closed> {
        tokio::task::coop::cooperative(changed(&self.shared, &mut self.version)).await
    }

    /// Make the current version unseen, so that `changed` returns at once.
    pub(crate) fn mark_changed(&mut self) {
        self.version = self.version.wrapping_sub(STEP);
    }
}

async fn changed(shared: &Shared, version: &mut u64) -> Result<(), Closed> {
    loop {
        // Ask for the wake-up first, then look: a change in between is not missed.
        let notified = shared.changed.notified();
        let state = shared.load();
        let current = state & !CLOSED;
        if *version != current {
            *version = current;
            return Ok(());
        }
        if state & CLOSED != 0 {
            return Err(Closed);
        }
        notified.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::time::timeout;

    const SHORT: Duration = Duration::from_millis(20);

    #[tokio::test]
    async fn a_subscriber_sees_later_versions_only() {
        let tx = Sender::new();
        tx.send();
        let mut rx = tx.subscribe();
        assert!(
            timeout(SHORT, rx.changed()).await.is_err(),
            "nothing unseen"
        );
        tx.send();
        tx.send();
        assert_eq!(rx.changed().await, Ok(()));
        assert!(
            timeout(SHORT, rx.changed()).await.is_err(),
            "both versions seen at once"
        );
    }

    #[tokio::test]
    async fn mark_changed_makes_changed_return_at_once() {
        let tx = Sender::new();
        let mut rx = tx.subscribe();
        rx.mark_changed();
        assert_eq!(rx.changed().await, Ok(()));
        assert!(timeout(SHORT, rx.changed()).await.is_err());
    }

    #[tokio::test]
    async fn an_unseen_version_comes_before_the_close() {
        let tx = Sender::new();
        let mut rx = tx.subscribe();
        tx.send();
        drop(tx);
        assert_eq!(rx.changed().await, Ok(()));
        assert_eq!(rx.changed().await, Err(Closed));
    }

    #[tokio::test]
    async fn waiters_are_woken_by_a_change_and_by_the_close() {
        let tx = Sender::new();
        let mut rx = tx.subscribe();
        let waiting = tokio::spawn(async move {
            let first = rx.changed().await;
            let second = rx.changed().await;
            (first, second)
        });
        tokio::task::yield_now().await;
        tx.send();
        tokio::task::yield_now().await;
        drop(tx);
        let woken = timeout(Duration::from_secs(5), waiting).await;
        assert_eq!(woken.ok().and_then(Result::ok), Some((Ok(()), Err(Closed))));
    }
}
