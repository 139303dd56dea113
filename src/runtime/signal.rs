//! The change signal of one entry lifetime: a version bumped on every visible change, closed
//! when the lifetime ends.
//!
//! It has the semantics of the `tokio::sync::watch::channel(u64)` it replaces (a version per
//! receiver; `changed` returns `Ok` for an unseen version before it reports the close; a receiver
//! made by `subscribe` has seen the current version; `mark_changed` as in watch; the same
//! cooperative budgeting), at a fraction of the cost per change: one `Notify`
//! where watch has eight, and no value behind a lock (nobody reads one). A change wakes the
//! `Notify` only when a receiver has said it is waiting (the `WAITING` bit), so a burst of
//! changes to an entry whose subscribers are already woken costs one atomic add each.
//!
//! That protocol is checked under loom, in the interleavings of a sender, a notifier and
//! receivers: `loom_model`, built with `--cfg livecache_loom` (docs/testing.md).

use std::pin::pin;
use std::sync::atomic::Ordering;

// Under the loom model of the protocol (`loom_model`: the crate's own tests built with
// `--cfg livecache_loom`) the atomic state and the `Arc` are loom's and the `Notify` a model of
// tokio's built on loom's primitives, so that loom can run the interleavings. Every other build
// uses std's and tokio's, as before.
#[cfg(all(test, livecache_loom))]
use self::loom_model::Notify;
#[cfg(all(test, livecache_loom))]
use loom::sync::{Arc, atomic::AtomicU64};
#[cfg(not(all(test, livecache_loom)))]
use std::sync::{Arc, atomic::AtomicU64};
#[cfg(not(all(test, livecache_loom)))]
use tokio::sync::Notify;

#[cfg(all(test, livecache_loom))]
mod loom_model;

/// The lowest bit of the state: the sender is gone. The version is in the bits above `WAITING`.
const CLOSED: u64 = 1;
/// Set by a receiver about to sleep; the next change clears it and wakes the `Notify`.
const WAITING: u64 = 2;
/// One version step.
const STEP: u64 = 4;

#[derive(Debug, Default)]
struct Shared {
    state: AtomicU64,
    changed: Notify,
}

impl Shared {
    fn load(&self) -> u64 {
        self.state.load(Ordering::Acquire)
    }

    fn send(&self) {
        // Wake only if a receiver said it is waiting: with nobody waiting (every subscriber
        // already woken, not yet run) a change costs one atomic add.
        let before = self.state.fetch_add(STEP, Ordering::AcqRel);
        if before & WAITING != 0 {
            self.state.fetch_and(!WAITING, Ordering::AcqRel);
            self.changed.notify_waiters();
        }
    }
}

/// The lifetime's side: bumps the version; dropping it closes the signal.
#[derive(Debug)]
pub(crate) struct Sender(Arc<Shared>);

/// Announces changes like the [`Sender`] it came from, for a holder that should not have to look
/// the sender up; dropping it closes nothing.
#[derive(Clone, Debug)]
pub(crate) struct Notifier(Arc<Shared>);

impl Notifier {
    /// As [`Sender::send`].
    pub(crate) fn send(&self) {
        self.0.send();
    }
}

/// The receivers were closed: the sender is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Closed;

impl Sender {
    pub(crate) fn new() -> Sender {
        Sender(Arc::default())
    }

    /// A visible change: wakes every receiver waiting in `changed`.
    pub(crate) fn send(&self) {
        self.0.send();
    }

    /// A handle that announces changes too but cannot close the signal.
    pub(crate) fn notifier(&self) -> Notifier {
        Notifier(Arc::clone(&self.0))
    }

    /// A receiver that has seen the current version.
    pub(crate) fn subscribe(&self) -> Receiver {
        Receiver {
            version: self.0.load() & !(CLOSED | WAITING),
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
        if let Some(result) = seen(shared.load(), version) {
            return result;
        }
        // Register for the wake-up, then say so (`WAITING`) and look again: a sender either
        // changed the state before that `fetch_or` (seen here) or sees the flag and wakes us.
        let mut notified = pin!(shared.changed.notified());
        notified.as_mut().enable();
        if let Some(result) = seen(shared.state.fetch_or(WAITING, Ordering::AcqRel), version) {
            return result;
        }
        notified.await;
    }
}

/// `Some` when `state` has a version unseen by `version` (then seen) or is closed.
fn seen(state: u64, version: &mut u64) -> Option<Result<(), Closed>> {
    let current = state & !(CLOSED | WAITING);
    if *version != current {
        *version = current;
        Some(Ok(()))
    } else if state & CLOSED != 0 {
        Some(Err(Closed))
    } else {
        None
    }
}

// On tokio's runtime, so not under the loom model (whose atomics work only inside `loom::model`).
#[cfg(all(test, not(livecache_loom)))]
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

    /// No lost wake-up when a send races a receiver going to sleep: on two threads, receivers
    /// that keep waiting all see the last version (a lost one would leave a receiver asleep).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_sends_never_leave_a_receiver_asleep() {
        const SENDS: u64 = 20_000;
        let tx = Sender::new();
        let receivers: Vec<_> = (0..4)
            .map(|_| {
                let mut rx = tx.subscribe();
                tokio::spawn(async move {
                    while rx.version != SENDS * STEP {
                        if rx.changed().await.is_err() {
                            return false;
                        }
                    }
                    true
                })
            })
            .collect();
        for i in 0..SENDS {
            tx.send();
            if i % 64 == 0 {
                tokio::task::yield_now().await;
            }
        }
        for receiver in receivers {
            let saw_last = timeout(Duration::from_secs(10), receiver).await;
            assert!(
                matches!(saw_last, Ok(Ok(true))),
                "a receiver missed the last version"
            );
        }
        drop(tx);
    }
}
