//! The runtime's error types: small, separate, each with a documented variant per reason.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use crate::core::{CacheKey, KeyError};

/// A boxed error: what query functions and lifecycle handlers return, so that `?` converts any
/// error and `Ok(..)` needs no annotation.
///
/// ```
/// fn parse(s: &str) -> Result<u32, livecache::BoxError> { Ok(s.parse()?) }
/// assert!(parse("x").is_err());
/// ```
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// The error a query function returned, shared (cheap to clone) with every reader of the entry.
///
/// Downcast it to the query function's own error type to inspect it.
///
/// ```
/// use livecache::QueryError;
/// let e = QueryError::new(std::io::Error::other("offline"));
/// assert_eq!(e.to_string(), "offline");
/// assert!(e.downcast_ref::<std::io::Error>().is_some());
/// ```
#[derive(Clone)]
pub struct QueryError(Arc<dyn StdError + Send + Sync + 'static>);

impl QueryError {
    /// Wrap an error.
    ///
    /// ```
    /// let e = livecache::QueryError::new("no such channel");
    /// assert_eq!(e.to_string(), "no such channel");
    /// ```
    pub fn new(error: impl Into<BoxError>) -> Self {
        QueryError(Arc::from(error.into()))
    }

    /// The wrapped error as `E`, if it is one.
    ///
    /// ```
    /// let e = livecache::QueryError::new(std::fmt::Error);
    /// assert!(e.downcast_ref::<std::fmt::Error>().is_some());
    /// ```
    pub fn downcast_ref<E: StdError + 'static>(&self) -> Option<&E> {
        self.0.downcast_ref::<E>()
    }
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl StdError for QueryError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0.source()
    }
}

impl PartialEq for QueryError {
    /// Two query errors are equal when they are the same error (shared), not when they print
    /// alike.
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Why an endpoint, a subscription or an outside update could not be made.
///
/// ```
/// use livecache::Error;
/// let e = Error::DuplicateEndpoint { name: "getMessages".into() };
/// assert_eq!(e.to_string(), "an endpoint named getMessages already exists");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The argument could not be turned into a cache key.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Two endpoints of one api cannot share a name: their keys would collide.
    #[error("an endpoint named {name} already exists")]
    DuplicateEndpoint {
        /// The name.
        name: String,
    },
    /// A custom key serialiser gave a key that an entry of another endpoint already has.
    #[error("the cache key {key} belongs to an entry of endpoint {owner}")]
    KeyInUse {
        /// The key.
        key: CacheKey,
        /// The endpoint whose entry has it.
        owner: String,
    },
    /// `Api::try_build` was called outside a tokio runtime.
    #[error("livecache needs a tokio runtime: build the api inside one")]
    NoRuntime,
    /// `patch_query_data` failed; the data is unchanged.
    #[error(transparent)]
    Patch(#[from] crate::core::PatchError),
    /// An update failed.
    #[error(transparent)]
    Update(#[from] UpdateError),
    /// A restart was refused: the endpoint has no lifecycle handler (R30).
    #[error(transparent)]
    Restart(#[from] crate::core::RestartRefused),
    /// The endpoint asks for something this runtime does not do yet.
    #[error("endpoint {name}: {what}")]
    Unsupported {
        /// The endpoint.
        name: String,
        /// What it asked for, and what to do instead.
        what: String,
    },
}

/// Why an update through a lifecycle handle or `update_query_data` failed.
///
/// ```
/// assert_eq!(livecache::UpdateError::EntryRemoved.to_string(), "the cache entry was removed");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpdateError {
    /// The entry's lifetime has ended (R14): nothing was changed.
    #[error("the cache entry was removed")]
    EntryRemoved,
    /// The recipe panicked; the panic does not reach the cache's other users. Through
    /// `update_query_data` and `update_cached_data_with_patches` the update is atomic: the data
    /// is what it was, nobody is notified, no `updated` is traced. Through `update_cached_data`
    /// (the streaming hot path, which keeps no copy of the data) what the recipe changed before
    /// panicking is kept and subscribers are notified.
    #[error("the update recipe panicked: {message}")]
    RecipePanicked {
        /// The panic message, when it was a string.
        message: String,
    },
    /// The data could not be serialised to compute patches; nothing was changed.
    #[error("the data could not be serialised for patches: {0}")]
    Serialize(String),
    /// The data type's own code panicked: its `Serialize` computing patches (the data is what
    /// it was before the update), or its `PartialEq` comparing upserted data with the cached
    /// (the upsert took effect, the data counted as changed). The panic was contained: the entry
    /// keeps its lifetime and `data_panicked` is traced under its key.
    #[error("{message}")]
    DataPanicked {
        /// What panicked, and the panic message when it was a string.
        message: String,
    },
    /// A versioned message for an endpoint that declares no versions; nothing was changed.
    #[error("the endpoint declares no versions")]
    NotVersioned,
}

/// The entry was removed before its first data arrived: what `data_loaded` yields then (R13).
///
/// ```
/// assert_eq!(livecache::RemovedBeforeLoaded.to_string(), "the cache entry was removed before its data loaded");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the cache entry was removed before its data loaded")]
pub struct RemovedBeforeLoaded;

/// The entry this handle or subscription belongs to has been removed (R7a, R14).
///
/// ```
/// assert_eq!(livecache::EntryRemoved.to_string(), "the cache entry was removed");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the cache entry was removed")]
pub struct EntryRemoved;

/// Why [`Subscription::settled`](crate::Subscription::settled) gave no data (R35).
///
/// ```
/// let failed = livecache::NotSettled::Rejected(livecache::QueryError::new("500 Internal Server Error"));
/// assert_eq!(failed.to_string(), "the query failed: 500 Internal Server Error");
/// assert!(matches!(livecache::NotSettled::from(livecache::EntryRemoved), livecache::NotSettled::Removed(_)));
/// ```
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotSettled {
    /// The query settled with this error (its cause is the error's `source()`).
    #[error("the query failed: {0}")]
    Rejected(QueryError),
    /// The entry was removed before it settled.
    #[error(transparent)]
    Removed(#[from] EntryRemoved),
}

/// The message of a caught panic, when it was a string.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

impl From<crate::core::NameTaken> for Error {
    fn from(taken: crate::core::NameTaken) -> Self {
        Error::DuplicateEndpoint { name: taken.name }
    }
}

impl From<crate::core::UpsertError> for Error {
    fn from(error: crate::core::UpsertError) -> Self {
        match error {
            crate::core::UpsertError::KeyInUse(in_use) => in_use.into(),
            crate::core::UpsertError::DataPanicked { message } => {
                Error::Update(UpdateError::DataPanicked { message })
            }
        }
    }
}

impl From<crate::core::KeyInUse> for Error {
    fn from(in_use: crate::core::KeyInUse) -> Self {
        Error::KeyInUse {
            key: in_use.key,
            owner: in_use.owner,
        }
    }
}
