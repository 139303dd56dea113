//! How a lifecycle handler learns that its entry is gone for it: removed (R14), or its handler
//! restarted (R30).

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Semaphore;

/// Why a lifecycle handler's entry is gone for it: what
/// [`EntryHandle::removed`](crate::EntryHandle::removed) resolves with.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), livecache::Error> {
/// use livecache::{Api, Ended};
/// let api = Api::builder().build();
/// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
/// let feed = api
///     .query::<u32, u32>("feed")
///     .query_fn(|n: u32| async move { Ok(n) })
///     .on_cache_entry_added(move |_n, entry| {
///         let tx = tx.clone();
///         async move {
///             let _ = tx.send(entry.removed().await);
///             Ok(())
///         }
///     })
///     .build()?;
/// let sub = feed.subscribe(1)?;
/// sub.loaded().await.ok();
/// feed.restart(&1)?;                      // the first handler ends, a second starts
/// assert_eq!(rx.recv().await, Some(Ended::Restarted));
/// feed.remove(&1)?;                       // the second one sees the removal
/// assert_eq!(rx.recv().await, Some(Ended::Removed));
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Ended {
    /// The entry left the cache (RTK's `cacheEntryRemoved`, R14).
    Removed,
    /// The endpoint's [`restart`](crate::Endpoint::restart) replaced this handler with a new
    /// one on the same entry (R30).
    Restarted,
}

/// One handler's end signal: a semaphore that never has permits, closed at the end, so any
/// number of waiters wake at once; and why it ended.
#[derive(Debug)]
pub(crate) struct Ending {
    closed: Semaphore,
    restarted: AtomicBool,
}

impl Ending {
    pub(crate) fn new() -> Self {
        Ending {
            closed: Semaphore::new(0),
            restarted: AtomicBool::new(false),
        }
    }

    /// End it (once: a later call changes nothing). Called under the api's lock, so two ends
    /// never race.
    pub(crate) fn end(&self, why: Ended) {
        if self.closed.is_closed() {
            return;
        }
        self.restarted
            .store(why == Ended::Restarted, Ordering::Release);
        self.closed.close();
    }

    /// Whether it has ended.
    pub(crate) fn is_ended(&self) -> bool {
        self.closed.is_closed()
    }

    /// Why it ended, if it has.
    pub(crate) fn why(&self) -> Option<Ended> {
        self.is_ended().then(|| {
            if self.restarted.load(Ordering::Acquire) {
                Ended::Restarted
            } else {
                Ended::Removed
            }
        })
    }

    /// Wait for the end.
    pub(crate) async fn wait(&self) -> Ended {
        // No permit is ever added: the acquisition ends only with the close.
        let _ = self.closed.acquire().await;
        self.why().unwrap_or(Ended::Removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_end_decides_why() {
        let ending = Ending::new();
        assert_eq!(ending.why(), None);
        ending.end(Ended::Restarted);
        ending.end(Ended::Removed);
        assert_eq!(ending.wait().await, Ended::Restarted);
        let removed = Ending::new();
        removed.end(Ended::Removed);
        assert_eq!(removed.wait().await, Ended::Removed);
    }
}
