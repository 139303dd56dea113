//! Entries fed by the shared connection's own task (R31): an [`EntrySource`] for an endpoint,
//! in place of a lifecycle handler per entry holding a [`Topic`](super::Topic).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;

use super::{Command, SharedConnection};
use crate::core::{Resync, Version};
use crate::runtime::EntrySource;
use crate::runtime::entry_source::VersionOf;
use crate::runtime::feed::{Attached, AttachedSource, EntryInlet, ResumeHook, SourceStart};
use crate::ws::shared::Framing;

impl<F: Framing> SharedConnection<F>
where
    F::Message: Clone,
{
    /// Feed every entry of an endpoint from this connection, with no lifecycle handler
    /// ([`EndpointBuilder::stream_from`], which says how a message changes the data): the entry
    /// for `arg` takes the topic `topic_of(&arg)`, and the connection's task applies each of its
    /// messages in arrival order — held until the entry's first data (R21) — exactly as
    /// [`EntryHandle::try_stream`](crate::EntryHandle::try_stream) over
    /// [`SharedConnection::topic`] would, without a handler's task, future and queue per entry.
    /// The entry reads the connection's status (R28) and resyncs after a reconnect (R32); a
    /// frame that cannot be read is skipped and counted; removal unsubscribes the topic. Once
    /// the entry has data a message waits in no queue of its own (the connection's task applies
    /// it as it reads it), so the topic's queue bound does not apply; before the data, at most
    /// [`MAX_BUFFERED`](crate::MAX_BUFFERED) are held, as for a handler's stream (R33). The
    /// user's `topic_of` (and `version`) run in the connection's task, never under the cache's
    /// lock; a panic in one fails that entry's stream, loudly, and nothing else.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), livecache::Error> {
    /// use livecache::ws::shared::{JsonFraming, SharedConnection};
    /// let api = livecache::Api::builder().build();
    /// let connection = SharedConnection::builder("ws://127.0.0.1:8080/ws", JsonFraming::<u64>::new())
    ///     .spawn()?;
    /// let counters = api
    ///     .query::<String, Vec<u64>>("counter")
    ///     .query_fn(|_name: String| async { Ok(Vec::new()) })
    ///     .stream_from(connection.source(|name: &String| name.clone()), |list, n| list.push(n))
    ///     .build()?;
    /// # drop(counters); Ok(()) }
    /// ```
    ///
    /// [`EndpointBuilder::stream_from`]: crate::EndpointBuilder::stream_from
    pub fn source<A: Clone + Send + Sync + 'static>(
        &self,
        topic_of: impl Fn(&A) -> String + Send + Sync + 'static,
    ) -> EntrySource<A, F::Message> {
        self.feed_source(topic_of, None)
    }

    /// [`SharedConnection::source`] for a versioned endpoint (R24–R26, as
    /// [`EntryHandle::try_stream_versioned`](crate::EntryHandle::try_stream_versioned)):
    /// `version` reads each message's version; a message at or below the entry's watermark is
    /// dropped as stale, one past a gap is held while the entry resyncs, every other one is
    /// applied exactly once; an endpoint that resyncs by resuming has the server replay from
    /// its watermark.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), livecache::Error> {
    /// use livecache::core::Version;
    /// use livecache::ws::shared::{JsonFraming, SharedConnection};
    /// #[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    /// struct Message { id: u64, text: String }
    /// let api = livecache::Api::builder().build();
    /// let connection = SharedConnection::builder("ws://127.0.0.1:8080/ws", JsonFraming::<Message>::new())
    ///     .spawn()?;
    /// let chat = api
    ///     .query::<String, Vec<Message>>("chat")
    ///     .query_fn_versioned(|_room: String| async { Ok((Vec::new(), Version::new(0))) })
    ///     .stream_from(
    ///         connection.source_versioned(|room: &String| room.clone(), |m| Version::new(m.id)),
    ///         |list, m| list.push(m),
    ///     )
    ///     .build()?;
    /// # drop(chat); Ok(()) }
    /// ```
    pub fn source_versioned<A: Clone + Send + Sync + 'static>(
        &self,
        topic_of: impl Fn(&A) -> String + Send + Sync + 'static,
        version: impl Fn(&F::Message) -> Version + Send + Sync + 'static,
    ) -> EntrySource<A, F::Message> {
        self.feed_source(topic_of, Some(Arc::new(version)))
    }

    /// The source whose entry for `arg` takes the topic `topic_of(&arg)`.
    fn feed_source<A: Clone + Send + Sync + 'static>(
        &self,
        topic_of: impl Fn(&A) -> String + Send + Sync + 'static,
        version: Option<VersionOf<F::Message>>,
    ) -> EntrySource<A, F::Message> {
        let commands = self.commands.clone();
        let ids = Arc::clone(&self.ids);
        let topic_of = Arc::new(topic_of);
        let attach = move |arg: &A, start: SourceStart, feed: Box<dyn EntryInlet<F::Message>>| {
            let id = ids.fetch_add(1, Ordering::Relaxed);
            // The core's resumes of the entry reach the driver while the entry is attached
            // (R26, R32); only an endpoint that resyncs by resuming is ever asked.
            let resumes = start.versioning.map(|v| v.resync) == Some(Resync::Resume);
            let alive = resumes.then(|| Arc::new(()));
            let resume = alive
                .as_ref()
                .map(|alive| resume_hook(alive, &commands, None, id));
            // This runs under the cache's lock: the user's `topic_of` runs in the driver's task.
            let (topic_of, arg) = (Arc::clone(&topic_of), arg.clone());
            let _ = commands.send(Command::AttachFed {
                topic_of: Box::new(move || topic_of(&arg)),
                id,
                link: start.link(),
                feed,
            });
            Attached {
                source: Box::new(FedTopic {
                    id,
                    commands: commands.clone(),
                    _alive: alive,
                }),
                resume,
            }
        };
        EntrySource::new(Arc::new(attach), version)
    }
}

/// The hook that passes the core's resumes of the entry `id` on `topic` to the driver, while
/// `alive` lives and the driver runs.
pub(super) fn resume_hook<M: Send + 'static>(
    alive: &Arc<()>,
    commands: &mpsc::UnboundedSender<Command<M>>,
    topic: Option<String>,
    id: u64,
) -> ResumeHook {
    let (alive, commands) = (Arc::downgrade(alive), commands.downgrade());
    Box::new(move |from| {
        let (Some(_alive), Some(commands)) = (alive.upgrade(), commands.upgrade()) else {
            return false;
        };
        let topic = topic.clone();
        commands.send(Command::Resume { topic, id, from }).is_ok()
    })
}

/// The runtime's side of an entry fed by the connection: it passes the first data's landing and
/// the entry's end to the driver.
struct FedTopic<M> {
    id: u64,
    commands: mpsc::UnboundedSender<Command<M>>,
    /// While it lives, the entry's resumes reach the driver.
    _alive: Option<Arc<()>>,
}

impl<M: Send + 'static> AttachedSource for FedTopic<M> {
    fn data_loaded(&self) {
        let _ = self.commands.send(Command::Loaded { id: self.id });
    }

    fn detach(self: Box<Self>, restarted: bool) {
        let FedTopic { id, commands, .. } = *self;
        let _ = commands.send(Command::Detach {
            topic: None,
            id,
            restarted,
        });
    }
}
