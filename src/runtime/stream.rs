//! Attaching a message stream to an entry (SPEC R21): messages are applied in arrival order,
//! each exactly once; messages that arrive before the first data are buffered and applied right
//! after it lands; when the entry is removed the stream is dropped.

use std::convert::Infallible;
use std::fmt;
use std::future::poll_fn;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;

use futures::{Stream, StreamExt};

use crate::core::CacheKey;
use crate::core::Draft;
use crate::core::{Attachment, Finish, Version};
use crate::core::{StreamEnd, StreamEndReason};
use crate::runtime::applier::{
    Applier, Plain, Refusal, Versioned, deliver_counted, land_first_data,
};
use crate::runtime::driver::Shared;
use crate::runtime::ending::{Ended, Ending};
use crate::runtime::erased::Data;
use crate::runtime::lifecycle::{BeforeData, EntryHandle, HandleState, WithData};

/// An error a message stream can yield: either it only skipped an item (a bad frame) and goes
/// on, or the stream has failed and the attachment ends.
///
/// ```
/// use livecache::StreamError;
/// #[derive(Debug)]
/// enum FeedError { BadLine(String), Disconnected }
/// impl std::fmt::Display for FeedError {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         match self { FeedError::BadLine(l) => write!(f, "bad line {l:?}"), FeedError::Disconnected => f.write_str("disconnected") }
///     }
/// }
/// impl StreamError for FeedError {
///     fn is_fatal(&self) -> bool { matches!(self, FeedError::Disconnected) }
/// }
/// assert!(!FeedError::BadLine("x".into()).is_fatal());
/// ```
pub trait StreamError: fmt::Display {
    /// `true`: the stream failed and the attachment ends. `false`: the item was skipped and the
    /// stream goes on (counted and traced with this error as the reason).
    fn is_fatal(&self) -> bool;
}

impl StreamError for Infallible {
    fn is_fatal(&self) -> bool {
        match *self {}
    }
}

/// The most messages applied under one lock acquisition.
const BURST: usize = 256;

/// The most messages a stream attached before the first data holds until the data lands (R33).
///
/// ```
/// assert_eq!(livecache::MAX_BUFFERED, 10_000);
/// ```
pub const MAX_BUFFERED: usize = 10_000;

/// An attachment's decisions ([`Attachment`], the core's) and what it needs to record its events.
struct Recorder<Msg> {
    shared: Arc<Shared>,
    key: CacheKey,
    attachment: Attachment<Msg>,
    /// The handler's end signal: says whether it was restarted (R30) or its entry removed.
    ending: Arc<Ending>,
}

impl<Msg> Recorder<Msg> {
    fn new<S: HandleState, T, M>(
        handle: &EntryHandle<S, T, M>,
        attachment: Attachment<Msg>,
    ) -> Recorder<Msg> {
        Recorder {
            shared: Arc::clone(&handle.shared),
            key: handle.key.clone(),
            attachment,
            ending: Arc::clone(&handle.ending),
        }
    }

    /// Why the stream ends now that its handler's entry is gone for it: the handler was
    /// restarted (R30), or the entry was removed (before or after its first data).
    fn gone(&mut self) -> StreamEndReason {
        match self.ending.why() {
            Some(Ended::Restarted) => StreamEndReason::HandlerRestarted,
            _ => self.attachment.removed(),
        }
    }

    fn skip(&mut self, reason: String) {
        self.attachment.skipped();
        let (key, lifetime) = (&self.key, self.attachment.lifetime());
        self.shared
            .with(|state, now| state.cache.stream_skipped(now, key, lifetime, reason));
    }

    fn end(self, reason: StreamEndReason) -> StreamEnd {
        let Recorder {
            shared,
            key,
            attachment,
            ..
        } = self;
        let handler = attachment.handler();
        let end = attachment.end(reason);
        shared.with(|state, now| state.cache.stream_ended(now, &key, handler, &end));
        end
    }
}

impl<T: Data, M: Send + Sync + 'static> EntryHandle<BeforeData, T, M> {
    /// Attach a stream of messages before the first data (R21): messages that arrive while the
    /// entry is loading are buffered and applied, in order, right after the first data lands, so
    /// none sent between connecting and loading is lost. Runs until the entry is removed (the
    /// stream is then dropped) or the stream ends.
    ///
    /// The buffer is bounded (R33): it holds at most [`MAX_BUFFERED`] messages. A message past
    /// that fails the stream — what it holds is applied after the data, then the attachment
    /// ends `Failed` (its stream status says so) — since nothing can tell an unversioned entry
    /// what it missed. (A versioned stream drops its buffer instead, and the entry resyncs:
    /// [`EntryHandle::stream_versioned`].)
    ///
    /// # Cancel safety
    ///
    /// Dropping the future ends the attachment at once: the stream is dropped (closing its
    /// connection) with the messages buffered before the first data; messages already applied
    /// stay applied (each burst is applied under one lock, never half). No `stream_ended` event
    /// is recorded for an attachment dropped this way.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// let ticks = api
    ///     .query::<(), Vec<u32>>("ticks")
    ///     .query_fn(|()| async {
    ///         tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    ///         Ok(vec![0])
    ///     })
    ///     .on_cache_entry_added(|(), entry| async move {
    ///         // these arrive before the first data: buffered, then applied in order
    ///         let messages = futures::stream::iter([1, 2, 3]);
    ///         entry.stream(messages, |ticks, n| ticks.push(n)).await;
    ///         Ok(())
    ///     })
    ///     .build()?;
    /// let sub = ticks.subscribe(())?;
    /// sub.loaded().await.ok();
    /// tokio::task::yield_now().await;
    /// assert_eq!(sub.state().data(), Some(&vec![0, 1, 2, 3]));
    /// # Ok(()) }
    /// ```
    pub async fn stream<S, F>(self, stream: S, apply: F) -> StreamEnd
    where
        S: Stream + Send,
        S::Item: Send,
        F: FnMut(&mut Draft<'_, T>, S::Item) + Send,
    {
        self.try_stream(stream.map(Ok::<_, Infallible>), apply)
            .await
    }

    /// [`EntryHandle::stream`] for a stream of `Result`s: a non-fatal error skips the item
    /// (counted and traced with its reason), a fatal one ends the attachment.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future ends the attachment at once: the stream is dropped (closing its
    /// connection) with the messages buffered before the first data; messages already applied
    /// stay applied (each burst is applied under one lock, never half). No `stream_ended` event
    /// is recorded for an attachment dropped this way.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// use livecache::core::StreamEndReason;
    /// use livecache::StreamError;
    /// #[derive(Debug)]
    /// struct BadLine;
    /// impl std::fmt::Display for BadLine {
    ///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str("bad line") }
    /// }
    /// impl StreamError for BadLine { fn is_fatal(&self) -> bool { false } }
    /// let (tx, rx) = tokio::sync::oneshot::channel();
    /// let tx = std::sync::Mutex::new(Some(tx));
    /// let feed = api
    ///     .query::<(), Vec<u32>>("feed")
    ///     .query_fn(|()| async { Ok(vec![]) })
    ///     .on_cache_entry_added(move |(), entry| {
    ///         let tx = tx.lock().ok().and_then(|mut t| t.take());
    ///         async move {
    ///             let items = futures::stream::iter([Ok(1), Err(BadLine), Ok(2)]);
    ///             let end = entry.try_stream(items, |list, n| list.push(n)).await;
    ///             tx.map(|tx| tx.send(end));
    ///             Ok(())
    ///         }
    ///     })
    ///     .build()?;
    /// let _sub = feed.subscribe(())?;
    /// let end = rx.await.expect("the handler reports");
    /// assert_eq!((end.reason, end.applied, end.skipped), (StreamEndReason::StreamEnded, 2, 1));
    /// # Ok(()) }
    /// ```
    pub async fn try_stream<S, Msg, E, F>(self, stream: S, apply: F) -> StreamEnd
    where
        S: Stream<Item = Result<Msg, E>> + Send,
        Msg: Send,
        E: StreamError + Send,
        F: FnMut(&mut Draft<'_, T>, Msg) + Send,
    {
        self.attach(stream, Plain(apply)).await
    }

    /// [`EntryHandle::stream`] for a versioned endpoint (R24–R26): `version` reads each
    /// message's version. Messages that arrive before the first data are held and applied after
    /// it in version order; from then on a message at or below the entry's watermark is a
    /// duplicate, dropped (traced `stream_stale`); one past a gap, on a contiguous endpoint, is
    /// held while the entry resyncs (its stream status `Resyncing`); every other one is applied
    /// with `apply` exactly once. `apply` takes the message by value: in the common case (the
    /// next message, nothing held, no request in flight) it moves into the data with no copy. A
    /// message the core keeps — held past a gap, or logged while a request is in flight, since
    /// a refetch's snapshot is rebased by applying again what was applied while it ran (R27) —
    /// is cloned for each application, so `apply` must give the same change each time.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// use livecache::core::Version;
    /// let chat = api
    ///     .query::<(), Vec<u64>>("chat")
    ///     .query_fn_versioned(|()| async { Ok((vec![1, 2], Version::new(2))) })
    ///     .on_cache_entry_added(|(), entry| async move {
    ///         // 2 is in the snapshot already, 3 and 4 are new; 3 arrives twice
    ///         let messages = futures::stream::iter([4, 2, 3, 3]);
    ///         entry
    ///             .stream_versioned(messages, |n| Version::new(*n), |list, n| list.push(n))
    ///             .await;
    ///         Ok(())
    ///     })
    ///     .build()?;
    /// let sub = chat.subscribe(())?;
    /// sub.loaded().await.ok();
    /// tokio::task::yield_now().await;
    /// assert_eq!(sub.state().data(), Some(&vec![1, 2, 3, 4]));
    /// # Ok(()) }
    /// ```
    pub async fn stream_versioned<S, V, F>(self, stream: S, version: V, apply: F) -> StreamEnd
    where
        S: Stream + Send,
        S::Item: Clone + Send + Sync + 'static,
        V: Fn(&S::Item) -> Version + Send,
        F: Fn(&mut Draft<'_, T>, S::Item) + Send + Sync + 'static,
    {
        self.try_stream_versioned(stream.map(Ok::<_, Infallible>), version, apply)
            .await
    }

    /// [`EntryHandle::stream_versioned`] for a stream of `Result`s, as
    /// [`EntryHandle::try_stream`] is for [`EntryHandle::stream`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// use livecache::core::Version;
    /// let feed = api
    ///     .query::<(), Vec<u64>>("feed")
    ///     .query_fn_versioned(|()| async { Ok((vec![], Version::new(0))) })
    ///     .on_cache_entry_added(|(), entry| async move {
    ///         let items = futures::stream::iter([Ok::<u64, std::convert::Infallible>(1)]);
    ///         entry.try_stream_versioned(items, |n| Version::new(*n), |l, n| l.push(n)).await;
    ///         Ok(())
    ///     })
    ///     .build()?;
    /// let sub = feed.subscribe(())?;
    /// sub.loaded().await.ok();
    /// tokio::task::yield_now().await;
    /// assert_eq!(sub.state().data(), Some(&vec![1]));
    /// # Ok(()) }
    /// ```
    pub async fn try_stream_versioned<S, Msg, E, V, F>(
        self,
        stream: S,
        version: V,
        apply: F,
    ) -> StreamEnd
    where
        S: Stream<Item = Result<Msg, E>> + Send,
        Msg: Clone + Send + Sync + 'static,
        E: StreamError + Send,
        V: Fn(&Msg) -> Version + Send,
        F: Fn(&mut Draft<'_, T>, Msg) + Send + Sync + 'static,
    {
        self.attach(stream, Versioned::new(version, apply)).await
    }

    async fn attach<S, Msg, E, A>(self, stream: S, apply: A) -> StreamEnd
    where
        S: Stream<Item = Result<Msg, E>> + Send,
        Msg: Send,
        E: StreamError + Send,
        A: Applier<T, Msg> + Send,
    {
        let handler = self.place.handler();
        let attachment = Attachment::before_data_bounded(handler, MAX_BUFFERED, apply.overflow());
        let mut recorder = Recorder::new(&self, attachment);
        let mut stream = pin!(stream);
        let mut loaded = pin!(self.data_loaded());
        let handle = loop {
            tokio::select! {
                biased;
                result = &mut loaded => match result {
                    Ok((handle, _first)) => break handle,
                    Err(_) => {
                        let reason = recorder.gone();
                        return recorder.end(reason);
                    }
                },
                item = stream.next(), if recorder.attachment.wants_items() => match item {
                    None => {
                        let _ = recorder.attachment.finish(Finish::Ended);
                    }
                    Some(Ok(message)) => {
                        // Before the data every message is held: nothing to apply now.
                        let _ = recorder.attachment.message(message);
                    }
                    Some(Err(error)) if error.is_fatal() => {
                        let _ = recorder.attachment.finish(Finish::Failed(error.to_string()));
                    }
                    Some(Err(error)) => recorder.skip(error.to_string()),
                },
            }
            // A stream that is always ready must still let the query (and others) run.
            tokio::task::coop::consume_budget().await;
        };
        handle.run(stream, apply, recorder).await
    }
}

impl<T: Data, M> EntryHandle<WithData, T, M> {
    /// Attach a stream of messages to the loaded entry (R21): each message is applied with
    /// `apply`, in arrival order, exactly once; the entry is Streaming. Runs until the entry is
    /// removed — the stream is then dropped, closing its connection — or the stream ends.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future ends the attachment at once: the stream is dropped (closing its
    /// connection); messages already applied stay applied (each burst is applied under one lock,
    /// never half). No `stream_ended` event is recorded for an attachment dropped this way.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// let log = api
    ///     .query::<(), Vec<String>>("log")
    ///     .query_fn(|()| async { Ok(vec!["start".to_string()]) })
    ///     .on_cache_entry_added(|(), entry| async move {
    ///         let Ok((entry, _)) = entry.data_loaded().await else { return Ok(()) };
    ///         let lines = futures::stream::iter(["a", "b"]);
    ///         entry.stream(lines, |log, line| log.push(line.to_string())).await;
    ///         Ok(())
    ///     })
    ///     .build()?;
    /// let sub = log.subscribe(())?;
    /// sub.loaded().await.ok();
    /// for _ in 0..4 { tokio::task::yield_now().await; }
    /// assert_eq!(sub.state().data().map(Vec::len), Some(3));
    /// # Ok(()) }
    /// ```
    pub async fn stream<S, F>(&self, stream: S, apply: F) -> StreamEnd
    where
        S: Stream + Send,
        S::Item: Send,
        F: FnMut(&mut Draft<'_, T>, S::Item) + Send,
    {
        self.try_stream(stream.map(Ok::<_, Infallible>), apply)
            .await
    }

    /// [`EntryHandle::stream`] for a stream of `Result`s: a non-fatal error skips the item
    /// (counted and traced with its reason), a fatal one ends the attachment.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future ends the attachment at once: the stream is dropped (closing its
    /// connection); messages already applied stay applied (each burst is applied under one lock,
    /// never half). No `stream_ended` event is recorded for an attachment dropped this way.
    ///
    /// ```
    /// fn attach(entry: &livecache::EntryHandle<livecache::WithData, Vec<u8>>) -> impl std::future::Future + '_ {
    ///     let items = futures::stream::iter([Ok::<u8, std::convert::Infallible>(1)]);
    ///     entry.try_stream(items, |list, b| list.push(b))
    /// }
    /// ```
    pub async fn try_stream<S, Msg, E, F>(&self, stream: S, apply: F) -> StreamEnd
    where
        S: Stream<Item = Result<Msg, E>> + Send,
        Msg: Send,
        E: StreamError + Send,
        F: FnMut(&mut Draft<'_, T>, Msg) + Send,
    {
        let recorder = Recorder::new(self, Attachment::live(self.place.handler()));
        self.run(pin!(stream), Plain(apply), recorder).await
    }

    /// [`EntryHandle::stream_versioned`] on the loaded entry: each message is dropped as stale,
    /// held past a gap, or applied exactly once (R24–R26).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// use livecache::core::Version;
    /// let chat = api
    ///     .query::<(), Vec<u64>>("chat")
    ///     .query_fn_versioned(|()| async { Ok((vec![1], Version::new(1))) })
    ///     .on_cache_entry_added(|(), entry| async move {
    ///         let Ok((entry, _)) = entry.data_loaded().await else { return Ok(()) };
    ///         let messages = futures::stream::iter([1, 2]);
    ///         entry.stream_versioned(messages, |n| Version::new(*n), |l, n| l.push(n)).await;
    ///         Ok(())
    ///     })
    ///     .build()?;
    /// let sub = chat.subscribe(())?;
    /// sub.loaded().await.ok();
    /// for _ in 0..4 { tokio::task::yield_now().await; }
    /// assert_eq!(sub.state().data(), Some(&vec![1, 2]));
    /// # Ok(()) }
    /// ```
    pub async fn stream_versioned<S, V, F>(&self, stream: S, version: V, apply: F) -> StreamEnd
    where
        S: Stream + Send,
        S::Item: Clone + Send + Sync + 'static,
        V: Fn(&S::Item) -> Version + Send,
        F: Fn(&mut Draft<'_, T>, S::Item) + Send + Sync + 'static,
    {
        self.try_stream_versioned(stream.map(Ok::<_, Infallible>), version, apply)
            .await
    }

    /// [`EntryHandle::try_stream`] for a versioned endpoint, as
    /// [`EntryHandle::stream_versioned`] (on the loaded handle).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// use livecache::core::Version;
    /// let feed = api
    ///     .query::<(), Vec<u64>>("feed")
    ///     .query_fn_versioned(|()| async { Ok((vec![], Version::new(0))) })
    ///     .on_cache_entry_added(|(), entry| async move {
    ///         let Ok((entry, _)) = entry.data_loaded().await else { return Ok(()) };
    ///         let items = futures::stream::iter([Ok::<u64, std::convert::Infallible>(1)]);
    ///         entry.try_stream_versioned(items, |n| Version::new(*n), |l, n| l.push(n)).await;
    ///         Ok(())
    ///     })
    ///     .build()?;
    /// let sub = feed.subscribe(())?;
    /// sub.loaded().await.ok();
    /// for _ in 0..4 { tokio::task::yield_now().await; }
    /// assert_eq!(sub.state().data(), Some(&vec![1]));
    /// # Ok(()) }
    /// ```
    pub async fn try_stream_versioned<S, Msg, E, V, F>(
        &self,
        stream: S,
        version: V,
        apply: F,
    ) -> StreamEnd
    where
        S: Stream<Item = Result<Msg, E>> + Send,
        Msg: Clone + Send + Sync + 'static,
        E: StreamError + Send,
        V: Fn(&Msg) -> Version + Send,
        F: Fn(&mut Draft<'_, T>, Msg) + Send + Sync + 'static,
    {
        let recorder = Recorder::new(self, Attachment::live(self.place.handler()));
        let apply = Versioned::new(version, apply);
        self.run(pin!(stream), apply, recorder).await
    }

    async fn run<S, Msg, E, A>(
        &self,
        mut stream: std::pin::Pin<&mut S>,
        mut apply: A,
        mut recorder: Recorder<Msg>,
    ) -> StreamEnd
    where
        S: Stream<Item = Result<Msg, E>> + Send,
        E: StreamError,
        A: Applier<T, Msg>,
    {
        let landed = land_first_data(&self.destination(), &mut apply, &mut recorder.attachment);
        match landed {
            Ok(None) => {}
            Ok(Some(reason)) | Err(Refusal::Ends(reason)) => return recorder.end(reason),
            Err(Refusal::Gone) => {
                let reason = recorder.gone();
                return recorder.end(reason);
            }
        }
        let mut burst: Vec<Msg> = Vec::new();
        let mut removed = pin!(self.removed());
        loop {
            let first = tokio::select! {
                biased;
                _ = &mut removed => {
                    let reason = recorder.gone();
                    return recorder.end(reason);
                }
                item = stream.next() => item,
            };
            // What ended the burst, if not a pending stream: `Some(None)` the end of the
            // stream, `Some(Some(error))` an error item.
            let mut tail: Option<Option<E>> = None;
            match first {
                Some(Ok(message)) => {
                    burst.extend(recorder.attachment.message(message).into_apply())
                }
                Some(Err(error)) => tail = Some(Some(error)),
                None => tail = Some(None),
            }
            // Take every message that is already there (a burst read from one socket buffer):
            // they are applied under one lock acquisition and wake subscribers once.
            while tail.is_none() && burst.len() < BURST {
                match poll_fn(|cx| Poll::Ready(stream.as_mut().poll_next(cx))).await {
                    Poll::Ready(Some(Ok(message))) => {
                        burst.extend(recorder.attachment.message(message).into_apply());
                    }
                    Poll::Ready(Some(Err(error))) => tail = Some(Some(error)),
                    Poll::Ready(None) => tail = Some(None),
                    Poll::Pending => break,
                }
            }
            if let Err(reason) = self.apply_burst(&mut burst, &mut apply, &mut recorder) {
                return recorder.end(reason);
            }
            let finish = match tail {
                None => None,
                Some(None) => Some(Finish::Ended),
                Some(Some(error)) if error.is_fatal() => Some(Finish::Failed(error.to_string())),
                Some(Some(error)) => {
                    recorder.skip(error.to_string());
                    None
                }
            };
            if let Some(reason) = finish.and_then(|finish| recorder.attachment.finish(finish)) {
                return recorder.end(reason);
            }
            // A stream that is always ready must still let other tasks run.
            tokio::task::coop::consume_budget().await;
        }
    }

    /// Apply the messages of `burst` in order (emptying it) under one lock acquisition.
    fn apply_burst<Msg>(
        &self,
        burst: &mut Vec<Msg>,
        apply: &mut impl Applier<T, Msg>,
        recorder: &mut Recorder<Msg>,
    ) -> Result<(), StreamEndReason> {
        if burst.is_empty() {
            return Ok(());
        }
        let to = self.destination();
        match deliver_counted(&to, apply, &mut recorder.attachment, burst.drain(..)) {
            Ok(()) => Ok(()),
            Err(Refusal::Ends(reason)) => Err(reason),
            Err(Refusal::Gone) => Err(recorder.gone()),
        }
    }
}
