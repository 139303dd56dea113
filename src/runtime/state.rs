//! What a reader sees of an entry.

use std::sync::Arc;

use crate::core::CacheKey;
use crate::core::LifetimeId;
use crate::core::{Phase, Status, StreamStatus, Version};
use crate::runtime::driver::State;
use crate::runtime::erased::{Data, ErasedData};
use crate::runtime::error::QueryError;

/// A snapshot of one entry: RTK's query state, with the data shared (an `Arc`), never copied
/// per read.
///
/// ```
/// use livecache::{QueryState, core::Status};
/// let state: QueryState<Vec<String>> = QueryState::uninitialized();
/// assert!(state.is_uninitialized());
/// assert_eq!(state.status, Status::Uninitialized);
/// assert!(state.data().is_none());
/// ```
#[derive(Debug)]
pub struct QueryState<T> {
    /// RTK's status: `Uninitialized` for an absent entry (or one whose lifetime ended).
    pub status: Status,
    /// The lifecycle phase, for a live entry.
    pub phase: Option<Phase>,
    /// The data, if any: kept while a refetch is pending or after it failed.
    pub data: Option<Arc<T>>,
    /// The last error, until a fulfil or an upsert clears it.
    pub error: Option<QueryError>,
    /// Whether a request is in flight.
    pub is_fetching: bool,
    /// When the data was last fulfilled or upserted, in milliseconds on the api's clock.
    pub fulfilled_at_ms: Option<u64>,
    /// The health of the entry's live source (R28): `Idle` without a stream, `Live` while one
    /// is attached and current, `Resyncing` while messages are missing, `Ended` or `Failed`
    /// once it stopped. Every change is a change of the state ([`Subscription::changes`]).
    ///
    /// [`Subscription::changes`]: crate::Subscription::changes
    pub stream: StreamStatus,
    /// The version of the newest change the data reflects, on a versioned endpoint (R24).
    pub watermark: Option<Version>,
    /// How many messages the entry's streams delivered that were dropped as stale or as
    /// duplicates (R24): already in the snapshot, or seen before.
    pub stale_messages: u64,
}

impl<T> Clone for QueryState<T> {
    fn clone(&self) -> Self {
        QueryState {
            status: self.status,
            phase: self.phase,
            data: self.data.clone(),
            error: self.error.clone(),
            is_fetching: self.is_fetching,
            fulfilled_at_ms: self.fulfilled_at_ms,
            stream: self.stream.clone(),
            watermark: self.watermark,
            stale_messages: self.stale_messages,
        }
    }
}

impl<T> QueryState<T> {
    /// The state of an absent entry.
    ///
    /// ```
    /// assert!(livecache::QueryState::<u8>::uninitialized().is_uninitialized());
    /// ```
    pub fn uninitialized() -> Self {
        QueryState {
            status: Status::Uninitialized,
            phase: None,
            data: None,
            error: None,
            is_fetching: false,
            fulfilled_at_ms: None,
            stream: StreamStatus::Idle,
            watermark: None,
            stale_messages: 0,
        }
    }

    /// The data, borrowed.
    ///
    /// ```
    /// assert_eq!(livecache::QueryState::<u8>::uninitialized().data(), None);
    /// ```
    pub fn data(&self) -> Option<&T> {
        self.data.as_deref()
    }

    /// RTK's `isUninitialized`: no entry.
    ///
    /// ```
    /// assert!(livecache::QueryState::<u8>::uninitialized().is_uninitialized());
    /// ```
    pub fn is_uninitialized(&self) -> bool {
        self.status == Status::Uninitialized
    }

    /// RTK's `isLoading`: a request is running and there is no data yet.
    ///
    /// ```
    /// assert!(!livecache::QueryState::<u8>::uninitialized().is_loading());
    /// ```
    pub fn is_loading(&self) -> bool {
        self.is_fetching && self.data.is_none()
    }

    /// RTK's `isSuccess`: the last request (or an upsert) succeeded.
    ///
    /// ```
    /// assert!(!livecache::QueryState::<u8>::uninitialized().is_success());
    /// ```
    pub fn is_success(&self) -> bool {
        self.status == Status::Fulfilled
    }

    /// RTK's `isError`: the last request failed.
    ///
    /// ```
    /// assert!(!livecache::QueryState::<u8>::uninitialized().is_error());
    /// ```
    pub fn is_error(&self) -> bool {
        self.status == Status::Rejected
    }
}

/// The state of `key` as seen by a reader of `lifetime` (the key's current lifetime when
/// `None`). Which lifetime a reader may see is the core's decision (R7a): a reader of an ended
/// lifetime sees `Uninitialized`.
pub(crate) fn read_state<T: Data>(
    state: &State,
    key: &CacheKey,
    lifetime: Option<LifetimeId>,
) -> QueryState<T> {
    let entry = match lifetime {
        Some(lifetime) => state.cache.lifetime_entry(lifetime),
        None => state.cache.entry(key),
    };
    let Some(entry) = entry else {
        return QueryState::uninitialized();
    };
    QueryState {
        status: entry.status,
        phase: Some(entry.phase),
        data: entry.data.and_then(ErasedData::get::<T>),
        // A query rejected by its stream's failure (R28, `stream_failure_rejects`) without a
        // failed request reads the stream's error.
        error: match (&entry.error, entry.status, &entry.stream) {
            (None, Status::Rejected, StreamStatus::Failed { error }) => {
                Some(QueryError::new(error.clone()))
            }
            (error, ..) => error.cloned(),
        },
        is_fetching: entry.in_flight.is_some(),
        fulfilled_at_ms: entry.fulfilled_at,
        stream: entry.stream,
        watermark: entry.watermark,
        stale_messages: entry.stale_messages,
    }
}
