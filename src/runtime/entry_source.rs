//! A source that feeds an endpoint's entries itself, with no lifecycle handler: the public,
//! typed face of [`crate::runtime::feed`].

use std::sync::Arc;

use crate::core::Version;
use crate::runtime::feed::{Attached, EntryInlet, SourceStart};

/// How a source attaches one entry: its argument, what the runtime gives it, and the inlet its
/// messages go through. Called under the cache's lock.
pub(crate) type AttachSource<A, Msg> =
    Arc<dyn Fn(&A, SourceStart, Box<dyn EntryInlet<Msg>>) -> Attached + Send + Sync>;

/// How a versioned source reads a message's version.
pub(crate) type VersionOf<Msg> = Arc<dyn Fn(&Msg) -> Version + Send + Sync>;

/// A source of messages of type `Msg` that feeds every entry of an endpoint (by its argument, an
/// `A`) from its own task, in place of a lifecycle handler ([`EndpointBuilder::stream_from`],
/// which says how a message changes the data): each entry's messages are held until its first
/// data and then applied by the same rules as a stream a handler attaches (R21; R24–R26 on a
/// versioned endpoint), the entry's stream status is the source's (R28), and removal or a
/// restart (R30) ends the attachment. No task, future or queue is kept per entry, so a
/// streaming entry costs little more than its data.
///
/// A shared WebSocket connection makes one per endpoint (`SharedConnection::source` and
/// `SharedConnection::source_versioned`, with the `ws` feature):
///
/// ```no_run
/// # #[cfg(feature = "ws")]
/// # async fn run() -> Result<(), livecache::Error> {
/// use livecache::core::Version;
/// use livecache::ws::shared::{JsonFraming, SharedConnection};
/// #[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]
/// struct Quote { id: u64, price: f64 }
/// let api = livecache::Api::builder().build();
/// let connection = SharedConnection::builder("ws://127.0.0.1:8080/ws", JsonFraming::<Quote>::new())
///     .spawn()?;
/// let quotes = api
///     .query::<String, Vec<Quote>>("quotes")
///     .query_fn_versioned(|_symbol: String| async { Ok((Vec::new(), Version::new(0))) })
///     .stream_from(
///         connection.source_versioned(|symbol: &String| format!("quotes/{symbol}"), |q| Version::new(q.id)),
///         |list, quote| list.push(quote),
///     )
///     .build()?;
/// let sub = quotes.subscribe("ACME".into())?;
/// # drop(sub); Ok(()) }
/// ```
///
/// [`EndpointBuilder::stream_from`]: crate::EndpointBuilder::stream_from
pub struct EntrySource<A, Msg> {
    pub(crate) attach: AttachSource<A, Msg>,
    /// How the source reads a message's version, if it is versioned (R24).
    pub(crate) version: Option<VersionOf<Msg>>,
}

impl<A, Msg> EntrySource<A, Msg> {
    #[cfg_attr(not(feature = "ws"), allow(dead_code))]
    pub(crate) fn new(attach: AttachSource<A, Msg>, version: Option<VersionOf<Msg>>) -> Self {
        EntrySource { attach, version }
    }
}

impl<A, Msg> Clone for EntrySource<A, Msg> {
    fn clone(&self) -> Self {
        EntrySource {
            attach: Arc::clone(&self.attach),
            version: self.version.clone(),
        }
    }
}

impl<A, Msg> std::fmt::Debug for EntrySource<A, Msg> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntrySource")
            .field("versioned", &self.version.is_some())
            .finish()
    }
}
