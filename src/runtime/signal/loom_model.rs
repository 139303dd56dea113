//! The signal's protocol under loom: the interleavings of a sender, a notifier and receivers.
//!
//! Built only for the crate's own tests with `--cfg livecache_loom` (a cfg of this crate's own:
//! `--cfg loom` would switch tokio's internals to loom as well). The signal then runs on loom's
//! `AtomicU64` and `Arc`, and on the [`Notify`] below, a model of tokio's built on loom's
//! primitives, because tokio's own cannot run inside `loom::model`; the signal's code is the
//! same. Run it with its own target directory: a changed `RUSTFLAGS` rebuilds every dependency,
//! and sharing `target/` would throw the normal build away each time (docs/testing.md, "The
//! signal under loom"; loom itself is built optimised by the manifest's profile):
//!
//! ```sh
//! RUSTFLAGS="--cfg livecache_loom" CARGO_TARGET_DIR=target/loom \
//!     cargo test --lib runtime::signal::loom_model -- --nocapture
//! ```
//!
//! In that build the signal's other tests (`signal::tests`, on tokio's runtime) are left out, and
//! the crate's other tests cannot run: they use the signal outside `loom::model`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::{Acquire, Release};
use std::task::{Context, Poll, Waker};

use loom::sync::Mutex;
use loom::sync::atomic::AtomicUsize;

/// A model of the part of `tokio::sync::Notify` that the signal uses: `notified`, `enable` and
/// `notify_waiters`, with tokio's semantics and orderings (tokio 1.54, `sync/notify.rs`).
///
/// - `notify_waiters` completes exactly the `Notified` futures *created* before it (tokio's
///   "registering for notification is done by acquiring an instance of the `Notified` future"),
///   whether or not they were enabled or polled yet, and stores no permit: a future created after
///   it waits for the next call.
/// - As in tokio, a `Notified` reads the count of `notify_waiters` calls when it is created, with
///   an `Acquire` load and without the lock; `notify_waiters` increments it under the lock of the
///   waiter list with `Release` (tokio's weaker path); a poll compares it under that lock before
///   it registers its waker, and `notify_waiters` wakes the wakers it took from the list after
///   releasing the lock. (tokio's poll first compares without the lock too: that can only
///   return sooner what the locked comparison returns.)
#[derive(Debug, Default)]
pub(super) struct Notify {
    /// The `notify_waiters` calls so far; changed only under the `waiters` lock.
    calls: AtomicUsize,
    waiters: Mutex<Waiters>,
}

#[derive(Debug, Default)]
struct Waiters {
    next_id: usize,
    /// The enabled or polled futures not yet notified, with their waker once polled.
    list: Vec<(usize, Option<Waker>)>,
}

impl Notify {
    pub(super) fn notified(&self) -> Notified<'_> {
        Notified {
            notify: self,
            calls: self.calls.load(Acquire),
            id: None,
            done: false,
        }
    }

    pub(super) fn notify_waiters(&self) {
        let list = {
            let mut waiters = self.waiters.lock().unwrap();
            // One read-modify-write where tokio loads and then stores (the same while the lock
            // is held): loom's partial order reduction misses the race between another thread's
            // load and a store right after a load by the same thread (loom issue 166), which hid
            // the lost wake-up of a receiver that registers after saying `WAITING`.
            self.calls.fetch_add(1, Release);
            std::mem::take(&mut waiters.list)
        };
        for waker in list.into_iter().filter_map(|(_, waker)| waker) {
            waker.wake();
        }
    }
}

/// The model's `tokio::sync::Notified`.
#[derive(Debug)]
pub(super) struct Notified<'a> {
    notify: &'a Notify,
    /// The `notify_waiters` calls when this future was created.
    calls: usize,
    /// Its place in the waiter list once enabled or polled.
    id: Option<usize>,
    done: bool,
}

impl Notified<'_> {
    /// As tokio's: puts the future in the waiter list (without a waker); `true` if it was
    /// notified already.
    pub(super) fn enable(self: Pin<&mut Self>) -> bool {
        self.get_mut().poll_with(None).is_ready()
    }

    fn poll_with(&mut self, waker: Option<&Waker>) -> Poll<()> {
        if self.done {
            return Poll::Ready(());
        }
        let mut waiters = self.notify.waiters.lock().unwrap();
        if self.notify.calls.load(Acquire) != self.calls {
            self.done = true;
            if let Some(id) = self.id.take() {
                waiters.list.retain(|(other, _)| *other != id);
            }
            return Poll::Ready(());
        }
        let waker = waker.cloned();
        match self.id {
            Some(id) => {
                if let Some(waker) = waker
                    && let Some(entry) = waiters.list.iter_mut().find(|(other, _)| *other == id)
                {
                    entry.1 = Some(waker);
                }
            }
            None => {
                let id = waiters.next_id;
                waiters.next_id += 1;
                waiters.list.push((id, waker));
                self.id = Some(id);
            }
        }
        Poll::Pending
    }
}

impl Future for Notified<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.get_mut().poll_with(Some(cx.waker()))
    }
}

impl Drop for Notified<'_> {
    /// As tokio's: a future in the waiter list leaves it.
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let mut waiters = self.notify.waiters.lock().unwrap();
            waiters.list.retain(|(other, _)| *other != id);
        }
    }
}

mod tests {
    use super::super::{Closed, Receiver, STEP, Sender};
    use loom::future::block_on;
    use loom::thread;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    use std::time::Instant;

    /// Runs `model` in every interleaving with at most `preemptions` preemptions (`None`: no
    /// bound; `LOOM_MAX_PREEMPTIONS` replaces a bound, to go deeper) and prints how many there
    /// were. A receiver that is never woken makes loom report a deadlock; a failed assertion
    /// panics in the interleaving that broke it.
    ///
    /// The bounds keep the whole check to seconds: the two-thread models run unbounded, the
    /// three-thread ones as far as a few seconds each allow (each extra preemption multiplies
    /// their interleavings by about 5; most concurrency bugs need only one or two).
    fn check(name: &str, preemptions: Option<usize>, model: impl Fn() + Sync + Send + 'static) {
        let mut builder = loom::model::Builder::new();
        let from_env = builder.preemption_bound;
        builder.preemption_bound = preemptions.map(|bound| from_env.unwrap_or(bound));
        let bound = builder.preemption_bound;
        let runs = std::sync::Arc::new(AtomicUsize::new(0));
        let counted = std::sync::Arc::clone(&runs);
        let start = Instant::now();
        builder.check(move || {
            counted.fetch_add(1, Relaxed);
            model();
        });
        eprintln!(
            "loom: {name}: {} interleavings (preemption bound {bound:?}) in {:.2} s",
            runs.load(Relaxed),
            start.elapsed().as_secs_f64()
        );
    }

    /// `changed` until the receiver has seen `last`, with the sender alive all along (so only a
    /// send can wake it): every return is `Ok` for a version it had not seen, none beyond `last`.
    fn wait_for(rx: &mut Receiver, last: u64) {
        block_on(async {
            while rx.version != last {
                let before = rx.version;
                assert_eq!(rx.changed().await, Ok(()), "closed before version {last}");
                assert!(
                    before < rx.version && rx.version <= last,
                    "Ok without a new version: {before} then {}",
                    rx.version
                );
            }
        });
    }

    /// `changed` until the close: `Ok` only for versions it had not seen, in order, none beyond
    /// `last`; the close only once it has seen `last`. Returns the versions it saw.
    fn until_closed(rx: &mut Receiver, last: u64) -> Vec<u64> {
        block_on(async {
            let mut seen = Vec::new();
            let mut before = rx.version;
            while rx.changed().await == Ok(()) {
                assert!(
                    before < rx.version && rx.version <= last,
                    "Ok without a new version: {before} then {}",
                    rx.version
                );
                before = rx.version;
                seen.push(before);
            }
            assert_eq!(rx.version, last, "closed before every version was seen");
            assert_eq!(rx.changed().await, Err(Closed), "the close is for good");
            seen
        })
    }

    /// The lost wake-up: a receiver going to sleep while two sends race it (the first one
    /// clears `WAITING`, the second must see it set again) is woken by a send, not by a close.
    #[test]
    fn a_send_wakes_a_waiting_receiver() {
        check("a_send_wakes_a_waiting_receiver", None, || {
            let tx = Sender::new();
            let mut rx = tx.subscribe();
            let receiver = thread::spawn(move || wait_for(&mut rx, 2 * STEP));
            tx.send();
            tx.send();
            receiver.join().unwrap();
        });
    }

    /// Two receivers going to sleep at once, one send: `WAITING` is one bit for both, and the
    /// send that clears it must wake both.
    #[test]
    fn one_send_wakes_two_waiting_receivers() {
        check("one_send_wakes_two_waiting_receivers", Some(3), || {
            let tx = Sender::new();
            let receivers: Vec<_> = (0..2)
                .map(|_| {
                    let mut rx = tx.subscribe();
                    thread::spawn(move || wait_for(&mut rx, STEP))
                })
                .collect();
            tx.send();
            for receiver in receivers {
                receiver.join().unwrap();
            }
        });
    }

    /// The close wakes a waiting receiver, and only after it has returned `Ok` for the last
    /// version (sent just before the close).
    #[test]
    fn the_close_comes_after_every_version() {
        check("the_close_comes_after_every_version", None, || {
            let tx = Sender::new();
            let mut rx = tx.subscribe();
            let receiver = thread::spawn(move || until_closed(&mut rx, STEP));
            tx.send();
            drop(tx);
            assert_eq!(receiver.join().unwrap(), [STEP]);
        });
    }

    /// A `Notifier` on its own thread and the `Sender` both send, racing each other and the
    /// receiver (two senders can both see `WAITING` and clear it); then the sender closes.
    #[test]
    fn a_notifier_and_the_sender_race() {
        check("a_notifier_and_the_sender_race", Some(3), || {
            let tx = Sender::new();
            let mut rx = tx.subscribe();
            let notifier = tx.notifier();
            let receiver = thread::spawn(move || until_closed(&mut rx, 2 * STEP));
            let other = thread::spawn(move || notifier.send());
            tx.send();
            other.join().unwrap();
            drop(tx);
            let seen = receiver.join().unwrap();
            assert_eq!(seen.last(), Some(&(2 * STEP)));
        });
    }

    /// `subscribe` gives a receiver that has seen the current version, while another receiver
    /// waits; `mark_changed` makes `changed` return `Ok` at once, for the version it has or a
    /// newer one, and never twice for the same version.
    #[test]
    fn subscribe_and_mark_changed_while_sending() {
        check("subscribe_and_mark_changed_while_sending", Some(2), || {
            let tx = Sender::new();
            let mut first = tx.subscribe();
            let waiting = thread::spawn(move || until_closed(&mut first, 2 * STEP));
            tx.send();
            let mut late = tx.subscribe();
            assert_eq!(
                late.version, STEP,
                "a subscriber has seen the current version"
            );
            let marked = thread::spawn(move || {
                late.mark_changed();
                let mut seen = vec![block_on(late.changed()).map(|()| late.version)];
                seen.extend(until_closed(&mut late, 2 * STEP).into_iter().map(Ok));
                seen
            });
            tx.send();
            drop(tx);
            let marked = marked.join().unwrap();
            assert!(
                marked == [Ok(STEP), Ok(2 * STEP)] || marked == [Ok(2 * STEP)],
                "{marked:?}"
            );
            assert_eq!(waiting.join().unwrap().last(), Some(&(2 * STEP)));
        });
    }
}
