//! A message stream attached to one entry lifetime (R21), as a sans-IO machine: it decides, for
//! each thing that happens to the attachment, whether a message is applied now or held, what is
//! applied when the first data lands, and how and when the attachment ends. It holds the held
//! messages (of any type `M`) but does no I/O and applies nothing itself: its driver (the
//! runtime's stream task, the model harness) carries each decision out on the [`Cache`].
//!
//! The rule it states: messages are applied in arrival order, each exactly once. Messages that
//! arrive before the lifetime's first data are held and applied, in order, right after it lands;
//! a stream that ends or fails before then still has what it delivered applied, and the
//! attachment ends with that reason after them. Removal ends the attachment; messages still held
//! are dropped with the entry.
//!
//! [`Cache`]: crate::core::Cache
//!
//! ```
//! # use livecache::core::LifetimeId;
//! use livecache::core::{Attachment, Finish, Received};
//! use livecache::core::{StreamEndReason};
//!
//! let mut stream: Attachment<u32> = Attachment::before_data(LifetimeId(1));
//! assert_eq!(stream.message(1), Received::Held);            // no data yet: held
//! assert_eq!(stream.finish(Finish::Ended), None);            // ends before the data: remembered
//! assert!(!stream.wants_items());
//! let first = stream.data_loaded();                          // the first data lands
//! assert_eq!(first.held, vec![1]);                           // apply these, in order,
//! assert_eq!(first.then_end, Some(StreamEndReason::StreamEnded)); // then end
//! stream.applied(1);
//! let end = stream.end(StreamEndReason::StreamEnded);
//! assert_eq!((end.applied, end.skipped), (1, 0));
//! ```

use std::collections::VecDeque;
use std::fmt;

use crate::core::cache::{HandlerId, LifetimeId};
use crate::core::version::Version;

/// Why a stream attachment ended.
///
/// ```
/// use livecache::core::StreamEndReason;
/// assert_eq!(StreamEndReason::EntryRemoved.to_string(), "entry removed");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamEndReason {
    /// The entry was removed: the stream was dropped (its connection closed).
    EntryRemoved,
    /// The entry was removed before its first data; held messages were dropped with it.
    RemovedBeforeLoaded,
    /// The stream ended by itself (e.g. the server closed the connection cleanly).
    StreamEnded,
    /// The stream failed with a fatal error.
    StreamFailed(String),
    /// The apply function panicked; the entry keeps what it had changed.
    ApplyPanicked(String),
    /// The lifecycle handler that attached the stream was restarted (R30): the stream was
    /// dropped with it (messages it held before the first data too); the entry lives on.
    HandlerRestarted,
}

impl fmt::Display for StreamEndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamEndReason::EntryRemoved => f.write_str("entry removed"),
            StreamEndReason::RemovedBeforeLoaded => {
                f.write_str("entry removed before its data loaded")
            }
            StreamEndReason::StreamEnded => f.write_str("stream ended"),
            StreamEndReason::StreamFailed(e) => write!(f, "stream failed: {e}"),
            StreamEndReason::ApplyPanicked(m) => write!(f, "apply panicked: {m}"),
            StreamEndReason::HandlerRestarted => f.write_str("handler restarted"),
        }
    }
}

/// How a stream attachment ended, with its counts. Also recorded as `stream_ended` in the trace.
///
/// ```
/// use livecache::core::{StreamEnd, StreamEndReason};
/// let end = StreamEnd { reason: StreamEndReason::StreamEnded, applied: 3, skipped: 1 };
/// assert_eq!(end.applied + end.skipped, 4);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamEnd {
    /// Why it ended.
    pub reason: StreamEndReason,
    /// Messages applied to the entry.
    pub applied: u64,
    /// Items skipped (non-fatal stream errors).
    pub skipped: u64,
}

/// How the stream itself finished.
///
/// ```
/// use livecache::core::Finish;
/// assert_ne!(Finish::Ended, Finish::Failed("reset".into()));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finish {
    /// It ended by itself.
    Ended,
    /// It failed with a fatal error, displayed.
    Failed(String),
}

impl From<Finish> for StreamEndReason {
    fn from(finish: Finish) -> Self {
        match finish {
            Finish::Ended => StreamEndReason::StreamEnded,
            Finish::Failed(error) => StreamEndReason::StreamFailed(error),
        }
    }
}

/// What to do with a message that arrived ([`Attachment::message`]).
///
/// ```
/// # use livecache::core::LifetimeId;
/// use livecache::core::{Attachment, Received};
/// let mut live: Attachment<&str> = Attachment::live(LifetimeId(1));
/// assert_eq!(live.message("hi"), Received::Apply("hi"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "an Apply is the driver's to carry out"]
pub enum Received<M> {
    /// Apply it to the entry now.
    Apply(M),
    /// Held until the first data lands (nothing to do now).
    Held,
    /// Dropped: the stream finished before the first data, or it overflowed what may be held
    /// ([`Overflow::Fail`]; the attachment then ends after the first data, failed).
    Dropped,
}

/// What the first data's landing asks of the driver ([`Attachment::data_loaded`]).
///
/// ```
/// # use livecache::core::LifetimeId;
/// use livecache::core::Attachment;
/// let mut stream: Attachment<u8> = Attachment::before_data(LifetimeId(1));
/// let _ = stream.message(7);
/// let first = stream.data_loaded();
/// assert_eq!((first.held, first.then_end), (vec![7], None));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "the held messages are the driver's to apply"]
pub struct FirstData<M> {
    /// The messages held before the data, to apply now, in this order (report the count with
    /// `Cache::stream_attached`, then apply them).
    pub held: Vec<M>,
    /// If the stream finished while they were held: end the attachment with this reason once
    /// they are applied.
    pub then_end: Option<StreamEndReason>,
    /// Held messages were dropped ([`Overflow::Resync`]): once these are applied, report it with
    /// `Cache::stream_lost`, and the entry resyncs.
    pub lost: bool,
}

impl<M> Received<M> {
    /// The message to apply now, if any.
    ///
    /// ```
    /// use livecache::core::Received;
    /// assert_eq!(Received::Apply(1).into_apply(), Some(1));
    /// assert_eq!(Received::<u8>::Held.into_apply(), None);
    /// ```
    pub fn into_apply(self) -> Option<M> {
        match self {
            Received::Apply(message) => Some(message),
            Received::Held | Received::Dropped => None,
        }
    }
}

#[derive(Clone, Debug)]
enum Stage<M> {
    /// Attached before the lifetime's first data: messages are held. Boxed: an attachment
    /// spends most of its life live, and one is kept per streaming entry.
    BeforeData(Box<Holding<M>>),
    /// The lifetime has data: messages are applied as they come.
    Live,
}

/// What an attachment keeps before the first data.
#[derive(Clone, Debug)]
struct Holding<M> {
    held: VecDeque<M>,
    finished: Option<StreamEndReason>,
    /// Held messages were dropped ([`Overflow::Resync`]).
    lost: bool,
    /// The most messages held, and what a message past it does (R33).
    max_held: usize,
    overflow: Overflow,
}

/// One stream attached to one entry lifetime (R21), as a sans-IO machine: it decides whether a
/// message is applied now or held, what is applied when the first data lands, and how the
/// attachment ends; its driver (the runtime's stream task, the model harness) carries each
/// decision out on the [`Cache`](crate::core::Cache).
///
/// Messages are applied in arrival order, each exactly once. Messages that arrive before the
/// lifetime's first data are held and applied, in order, right after it lands; a stream that
/// ends or fails before then still has what it delivered applied, and the attachment ends with
/// that reason after them. Removal ends the attachment; messages still held are dropped with the
/// entry.
///
/// ```
/// # use livecache::core::LifetimeId;
/// use livecache::core::{Attachment, Received};
/// use livecache::core::StreamEndReason;
/// let mut stream: Attachment<u8> = Attachment::before_data(LifetimeId(3));
/// let _ = stream.message(1);
/// stream.skipped();                                    // a bad frame: counted
/// assert_eq!(stream.removed(), StreamEndReason::RemovedBeforeLoaded); // held message dropped
/// ```
#[derive(Clone, Debug)]
pub struct Attachment<M> {
    handler: HandlerId,
    stage: Stage<M>,
    applied: u64,
    skipped: u64,
}

/// What an attachment does with a message that arrives before the first data when it already
/// holds as many as it may (R33): no flood grows memory without bound.
///
/// ```
/// use livecache::core::Overflow;
/// assert_ne!(Overflow::Fail, Overflow::Resync);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// The message is dropped and the stream fails (what it held is still applied after the
    /// first data, then the attachment ends `Failed`): for an unversioned entry, whose lost
    /// messages nothing can recover.
    Fail,
    /// The held messages are dropped and the stream goes on; once the first data lands the
    /// entry resyncs ([`FirstData::lost`], `Cache::stream_lost`): for a versioned entry.
    Resync,
}

impl<M> Attachment<M> {
    /// A stream attached before `lifetime` has its first data (through an `EntryHandle<BeforeData, _>`).
    ///
    /// ```
    /// # use livecache::core::LifetimeId;
    /// let stream = livecache::core::Attachment::<u8>::before_data(LifetimeId(2));
    /// assert_eq!((stream.lifetime(), stream.held()), (LifetimeId(2), 0));
    /// ```
    pub fn before_data(handler: impl Into<HandlerId>) -> Self {
        Attachment::before_data_bounded(handler, usize::MAX, Overflow::Fail)
    }

    /// [`Attachment::before_data`], holding at most `max_held` messages before the first data;
    /// `overflow` says what a message past that does (R33).
    ///
    /// ```
    /// # use livecache::core::LifetimeId;
    /// use livecache::core::{Attachment, Overflow, Received};
    /// let mut stream: Attachment<u8> = Attachment::before_data_bounded(LifetimeId(1), 2, Overflow::Fail);
    /// let (_, _) = (stream.message(1), stream.message(2));
    /// assert_eq!(stream.message(3), Received::Dropped);     // the stream fails…
    /// assert!(!stream.wants_items());
    /// let first = stream.data_loaded();
    /// assert_eq!(first.held, vec![1, 2]);                    // …after what it held is applied
    /// assert!(first.then_end.is_some());
    /// ```
    pub fn before_data_bounded(
        handler: impl Into<HandlerId>,
        max_held: usize,
        overflow: Overflow,
    ) -> Self {
        Attachment {
            handler: handler.into(),
            stage: Stage::BeforeData(Box::new(Holding {
                held: VecDeque::new(),
                finished: None,
                lost: false,
                max_held,
                overflow,
            })),
            applied: 0,
            skipped: 0,
        }
    }

    /// A stream attached once `lifetime` has data (through an `EntryHandle<WithData, _>`).
    ///
    /// ```
    /// # use livecache::core::LifetimeId;
    /// let stream = livecache::core::Attachment::<u8>::live(LifetimeId(2));
    /// assert!(stream.wants_items());
    /// ```
    pub fn live(handler: impl Into<HandlerId>) -> Self {
        Attachment {
            handler: handler.into(),
            stage: Stage::Live,
            applied: 0,
            skipped: 0,
        }
    }

    /// The lifetime the stream is attached to.
    ///
    /// ```
    /// # use livecache::core::LifetimeId;
    /// assert_eq!(livecache::core::Attachment::<u8>::live(LifetimeId(4)).lifetime(), LifetimeId(4));
    /// ```
    pub fn lifetime(&self) -> LifetimeId {
        self.handler.lifetime
    }

    /// The lifecycle handler that attached the stream (R30).
    ///
    /// ```
    /// # use livecache::core::{HandlerId, LifetimeId};
    /// let handler = HandlerId { lifetime: LifetimeId(4), generation: 1 };
    /// assert_eq!(livecache::core::Attachment::<u8>::live(handler).handler(), handler);
    /// ```
    pub fn handler(&self) -> HandlerId {
        self.handler
    }

    /// How many messages are held, waiting for the first data.
    ///
    /// ```
    /// # use livecache::core::LifetimeId;
    /// let mut stream = livecache::core::Attachment::before_data(LifetimeId(1));
    /// let _ = stream.message('a');
    /// assert_eq!(stream.held(), 1);
    /// ```
    pub fn held(&self) -> usize {
        match &self.stage {
            Stage::BeforeData(holding) => holding.held.len(),
            Stage::Live => 0,
        }
    }

    /// Whether the driver should keep reading the stream: not once it finished before the
    /// first data (what it delivered waits for the data).
    ///
    /// ```
    /// # use livecache::core::LifetimeId;
    /// use livecache::core::{Attachment, Finish};
    /// let mut stream: Attachment<u8> = Attachment::before_data(LifetimeId(1));
    /// let _ = stream.finish(Finish::Failed("reset".into()));
    /// assert!(!stream.wants_items());
    /// ```
    pub fn wants_items(&self) -> bool {
        match &self.stage {
            Stage::BeforeData(holding) => holding.finished.is_none(),
            Stage::Live => true,
        }
    }

    /// A message arrived: apply it now, or it is held until the first data.
    ///
    /// ```
    /// # use livecache::core::LifetimeId;
    /// use livecache::core::{Attachment, Received};
    /// let mut stream: Attachment<u8> = Attachment::before_data(LifetimeId(1));
    /// assert_eq!(stream.message(5), Received::Held);
    /// ```
    pub fn message(&mut self, message: M) -> Received<M> {
        match &mut self.stage {
            Stage::BeforeData(holding) => {
                let Holding {
                    held,
                    finished,
                    lost,
                    max_held,
                    overflow,
                } = &mut **holding;
                if finished.is_some() {
                    return Received::Dropped;
                }
                if held.len() >= *max_held {
                    match overflow {
                        Overflow::Fail => {
                            let error = format!(
                                "more than {} messages arrived before the first data",
                                max_held
                            );
                            *finished = Some(StreamEndReason::StreamFailed(error));
                            return Received::Dropped;
                        }
                        Overflow::Resync => {
                            held.clear();
                            *lost = true;
                        }
                    }
                }
                held.push_back(message);
                Received::Held
            }
            Stage::Live => Received::Apply(message),
        }
    }

    /// An item was skipped (a non-fatal stream error): counted. The driver records its reason
    /// with `Cache::stream_skipped`.
    ///
    /// ```
    /// # use livecache::core::LifetimeId;
    /// let mut stream = livecache::core::Attachment::<u8>::live(LifetimeId(1));
    /// stream.skipped();
    /// assert_eq!(stream.end(livecache::core::StreamEndReason::StreamEnded).skipped, 1);
    /// ```
    pub fn skipped(&mut self) {
        self.skipped = self.skipped.saturating_add(1);
    }

    /// `count` messages were applied to the entry.
    ///
    /// ```
    /// # use livecache::core::LifetimeId;
    /// let mut stream = livecache::core::Attachment::<u8>::live(LifetimeId(1));
    /// stream.applied(2);
    /// assert_eq!(stream.end(livecache::core::StreamEndReason::StreamEnded).applied, 2);
    /// ```
    pub fn applied(&mut self, count: u64) {
        self.applied = self.applied.saturating_add(count);
    }

    /// The stream finished. Before the first data the reason is remembered (the held messages
    /// still wait for the data) and `None` is returned; once live, the attachment ends now with
    /// the returned reason.
    ///
    /// ```
    /// # use livecache::core::LifetimeId;
    /// use livecache::core::{Attachment, Finish};
    /// use livecache::core::StreamEndReason;
    /// let mut live: Attachment<u8> = Attachment::live(LifetimeId(1));
    /// assert_eq!(live.finish(Finish::Ended), Some(StreamEndReason::StreamEnded));
    /// ```
    #[must_use = "Some(reason): the attachment ends now"]
    pub fn finish(&mut self, finish: Finish) -> Option<StreamEndReason> {
        match &mut self.stage {
            Stage::BeforeData(holding) => {
                holding.finished.get_or_insert(finish.into());
                None
            }
            Stage::Live => Some(finish.into()),
        }
    }

    /// The lifetime's first data landed: the attachment is live. Returns the held messages to
    /// apply now, in arrival order, and whether to end after them. Called on a live attachment,
    /// it returns nothing to do.
    ///
    /// ```
    /// # use livecache::core::LifetimeId;
    /// use livecache::core::Attachment;
    /// let mut stream: Attachment<u8> = Attachment::before_data(LifetimeId(1));
    /// let (_, _) = (stream.message(1), stream.message(2));
    /// assert_eq!(stream.data_loaded().held, vec![1, 2]);
    /// assert!(stream.data_loaded().held.is_empty());
    /// ```
    pub fn data_loaded(&mut self) -> FirstData<M> {
        match std::mem::replace(&mut self.stage, Stage::Live) {
            Stage::BeforeData(holding) => FirstData {
                held: holding.held.into(),
                then_end: holding.finished,
                lost: holding.lost,
            },
            Stage::Live => FirstData {
                held: Vec::new(),
                then_end: None,
                lost: false,
            },
        }
    }

    /// As [`Attachment::data_loaded`], for a versioned endpoint (R25): the held messages come
    /// in version order (`version` reads a message's; those without one first, each group in
    /// arrival order). Applied through `Cache::stream_message`, those at or below the snapshot's
    /// watermark are then dropped as stale, and every one above it is applied exactly once.
    ///
    /// ```
    /// # use livecache::core::LifetimeId;
    /// use livecache::core::{Attachment, Version};
    /// let mut stream: Attachment<u64> = Attachment::before_data(LifetimeId(1));
    /// for n in [3, 1, 2] {
    ///     let _ = stream.message(n);
    /// }
    /// let first = stream.data_loaded_in_order(|n| Some(Version::new(*n)));
    /// assert_eq!(first.held, vec![1, 2, 3]);
    /// ```
    pub fn data_loaded_in_order(
        &mut self,
        version: impl Fn(&M) -> Option<Version>,
    ) -> FirstData<M> {
        let mut first = self.data_loaded();
        first.held.sort_by_key(|message| version(message));
        first
    }

    /// The entry was removed: the attachment ends, dropping any held messages. The reason says
    /// whether it had ever had data.
    ///
    /// ```
    /// # use livecache::core::LifetimeId;
    /// use livecache::core::{Attachment, StreamEndReason};
    /// assert_eq!(Attachment::<u8>::live(LifetimeId(1)).removed(), StreamEndReason::EntryRemoved);
    /// ```
    pub fn removed(&mut self) -> StreamEndReason {
        match std::mem::replace(&mut self.stage, Stage::Live) {
            Stage::BeforeData(_) => StreamEndReason::RemovedBeforeLoaded,
            Stage::Live => StreamEndReason::EntryRemoved,
        }
    }

    /// End the attachment with `reason`, giving its counts (record it with
    /// `Cache::stream_ended`).
    ///
    /// ```
    /// # use livecache::core::LifetimeId;
    /// use livecache::core::{Attachment, StreamEndReason};
    /// let end = Attachment::<u8>::live(LifetimeId(1)).end(StreamEndReason::StreamEnded);
    /// assert_eq!((end.applied, end.skipped), (0, 0));
    /// ```
    pub fn end(self, reason: StreamEndReason) -> StreamEnd {
        StreamEnd {
            reason,
            applied: self.applied,
            skipped: self.skipped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn r21_held_messages_come_back_in_arrival_order_then_the_finish() {
        let mut stream: Attachment<u32> = Attachment::before_data(LifetimeId(1));
        for n in 0..5 {
            assert_eq!(stream.message(n), Received::Held);
        }
        assert_eq!(
            stream.finish(Finish::Failed("reset".into())),
            None,
            "before the data a finish waits for the held messages"
        );
        // A second finish does not replace the first reason.
        assert_eq!(stream.finish(Finish::Ended), None);
        let first = stream.data_loaded();
        assert_eq!(first.held, vec![0, 1, 2, 3, 4]);
        assert_eq!(
            first.then_end,
            Some(StreamEndReason::StreamFailed("reset".into()))
        );
        assert_eq!(stream.message(9), Received::Apply(9), "live after the data");
    }

    #[test]
    fn r21_removal_before_the_data_drops_what_is_held() {
        let mut stream: Attachment<u32> = Attachment::before_data(LifetimeId(1));
        let _ = stream.message(1);
        stream.skipped();
        assert_eq!(stream.removed(), StreamEndReason::RemovedBeforeLoaded);
        assert_eq!(stream.held(), 0);
        let end = stream.end(StreamEndReason::RemovedBeforeLoaded);
        assert_eq!((end.applied, end.skipped), (0, 1));
    }
}
