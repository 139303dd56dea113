//! Resuming a source that replays (R26, R32): the entry's handle hears each resume the core asks
//! of its source, tells where to replay from, and reports the replay done.

use futures::Stream;
use tokio::sync::watch;

use crate::core::Version;
use crate::runtime::erased::Data;
use crate::runtime::error::EntryRemoved;
use crate::runtime::lifecycle::{EntryHandle, HandleState};

impl<S: HandleState, T: Data, M> EntryHandle<S, T, M> {
    /// The resumes the core asks of this entry's source (R26, R32): on an endpoint that
    /// resyncs by [`Resync::Resume`](crate::Resync::Resume), each resync — a gap in contiguous
    /// versions, a queue that overflowed, a source that reconnected
    /// ([`resync_source`](EntryHandle::resync_source)) — yields the first version to replay
    /// (`None`: past the last version). The source replays from there, then reports
    /// [`resync_done`](EntryHandle::resync_done); meanwhile the entry reads `Resyncing`. Only
    /// the newest request waits to be read. The stream ends when the entry goes. A shared
    /// connection (`livecache::ws::shared`) does all this itself.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// use futures::StreamExt;
    /// use livecache::{Resync, StreamStatus, Version, Versioning};
    /// let feed = api
    ///     .query::<(), Vec<u64>>("feed")
    ///     .versioning(Versioning { resync: Resync::Resume, ..Versioning::default() })
    ///     .query_fn_versioned(|()| async { Ok((vec![1, 2], Version::new(2))) })
    ///     .on_cache_entry_added(|(), entry| async move {
    ///         let mut resumes = entry.resume_requests();
    ///         let Ok((entry, _)) = entry.data_loaded().await else { return Ok(()) };
    ///         entry.report_stream_status(StreamStatus::Live)?;
    ///         entry.resync_source()?; // the source reconnected: what did it miss?
    ///         if let Some(from) = resumes.next().await {
    ///             assert_eq!(from, Some(Version::new(3)));
    ///             // ... the source replays from version 3, then:
    ///             entry.resync_done()?;
    ///         }
    ///         entry.removed().await;
    ///         Ok(())
    ///     })
    ///     .build()?;
    /// let sub = feed.subscribe(())?;
    /// sub.loaded().await.ok();
    /// for _ in 0..4 { tokio::task::yield_now().await; }
    /// assert_eq!(sub.state().stream, StreamStatus::Live);
    /// # Ok(()) }
    /// ```
    pub fn resume_requests(&self) -> impl Stream<Item = Option<Version>> + Send + Unpin + 'static {
        let (tx, rx) = watch::channel(None::<Option<Version>>);
        let lifetime = self.place.lifetime();
        self.shared
            .lock()
            .add_resume_hook(lifetime, Box::new(move |from| tx.send(Some(from)).is_ok()));
        Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            rx.changed().await.ok()?;
            let from = (*rx.borrow_and_update())?;
            Some((from, rx))
        }))
    }

    /// The version a source resuming this entry replays from (R32): the watermark's next on an
    /// endpoint that resyncs by [`Resync::Resume`](crate::Resync::Resume) (version 0 without a
    /// watermark); `None` for any other endpoint, or once the entry is gone.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// use livecache::{Resync, Version, Versioning};
    /// let feed = api
    ///     .query::<(), Vec<u64>>("feed")
    ///     .versioning(Versioning { resync: Resync::Resume, ..Versioning::default() })
    ///     .query_fn_versioned(|()| async { Ok((vec![7], Version::new(7))) })
    ///     .on_cache_entry_added(|(), entry| async move {
    ///         let Ok((entry, _)) = entry.data_loaded().await else { return Ok(()) };
    ///         assert_eq!(entry.resume_from(), Some(Version::new(8)));
    ///         Ok(())
    ///     })
    ///     .build()?;
    /// feed.subscribe(())?.loaded().await.ok();
    /// # Ok(()) }
    /// ```
    pub fn resume_from(&self) -> Option<Version> {
        self.shared.lock().cache.resume_from(self.place.handler())
    }

    /// The source replayed what a resume asked for (R26): the resync ends, and the entry reads
    /// `Live` again (messages held for a gap still wait for it to close). See
    /// [`resume_requests`](EntryHandle::resume_requests).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// let n = api
    ///     .query::<(), u32>("n")
    ///     .query_fn(|()| async { Ok(1) })
    ///     .on_cache_entry_added(|(), entry| async move {
    ///         entry.resync_done()?; // nothing was resyncing: nothing changes
    ///         Ok(())
    ///     })
    ///     .build()?;
    /// n.subscribe(())?.loaded().await.ok();
    /// # Ok(()) }
    /// ```
    pub fn resync_done(&self) -> Result<(), EntryRemoved> {
        let handler = self.place.handler();
        self.shared.with_lifetime(&self.hint(), |state, now| {
            let done = state.cache.resync_done(now, handler);
            (done.map_err(|_| EntryRemoved), false)
        })
    }
}
