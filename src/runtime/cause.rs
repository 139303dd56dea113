//! The underlying error of a transport error, kept whole (R40).

use std::fmt;
use std::sync::Arc;

use super::BoxError;

/// The underlying error of a transport error — an HTTP query's, a WebSocket's, TLS — kept whole
/// (R40): its display is the error's, its
/// `source()` the error's own source, and [`Cause::get`] gives the error itself to downcast.
/// Two causes are equal when they display alike.
///
/// ```
/// use livecache::Cause;
/// let cause = Cause::new(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"));
/// assert!(cause.get().downcast_ref::<std::io::Error>().is_some());
/// assert_eq!(cause.to_string(), "refused");
/// ```
#[derive(Clone)]
pub struct Cause(Arc<dyn std::error::Error + Send + Sync + 'static>);

impl Cause {
    /// Keep `error`.
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Cause {
        Cause(Arc::new(error))
    }

    /// A cause that is only a message.
    pub fn message(message: impl Into<String>) -> Cause {
        Cause(Arc::from(BoxError::from(message.into())))
    }

    /// The error itself.
    pub fn get(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Cause) -> bool {
        self.to_string() == other.to_string()
    }
}

impl Eq for Cause {}
