//! Message streams attached by a lifecycle (R21, R22).

use std::fmt;

use super::*;
use crate::core::attachment::{StreamEnd, StreamEndReason};
use crate::core::data::CacheData;
use crate::core::entry::any::AnyEntry;
use crate::core::key::CacheKey;
use crate::core::stream_status::StreamStatus;
use crate::core::trace::{TraceKind, bound_text};

impl<D, E> Cache<D, E>
where
    D: CacheData,
    E: fmt::Display,
{
    /// A message stream starts applying messages to `lifetime`'s entry (R21): a Loaded entry
    /// becomes Streaming. `buffered` messages that arrived before the first data follow.
    ///
    /// ```
    /// # use livecache::core::LifetimeId;
    /// use livecache::core::{Cache, EndpointConfig, Phase, UpdateRefused, CacheKey};
    /// let mut cache: Cache<Vec<u32>> = Cache::new(Default::default());
    /// let ep = cache.add_endpoint("a", EndpointConfig::default())?;
    /// let key = CacheKey::verbatim("a(1)");
    /// cache.upsert(0, ep, &key, vec![])?;
    /// cache.stream_attached(1, LifetimeId(1), 0)?;
    /// assert_eq!(cache.entry(&key).map(|e| e.phase), Some(Phase::Streaming));
    /// assert_eq!(cache.stream_attached(1, LifetimeId(9), 0), Err(UpdateRefused::NotLive));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stream_attached(
        &mut self,
        now: u64,
        handler: impl Into<HandlerId>,
        buffered: usize,
    ) -> Result<(), UpdateRefused> {
        let handler = handler.into();
        let lifetime = handler.lifetime.0;
        self.advance(now);
        let Some(key) = self.entries.key_of_handler(handler).cloned() else {
            return Err(UpdateRefused::NotLive);
        };
        let attached = self.entries.transition(&key, |mut slot| {
            let attached = match slot.entry {
                AnyEntry::Loaded(e) => {
                    slot.entry = AnyEntry::Streaming(e.start_streaming());
                    Ok(())
                }
                streaming @ AnyEntry::Streaming(_) => {
                    slot.entry = streaming;
                    Ok(())
                }
                loading @ AnyEntry::Loading(_) => {
                    slot.entry = loading;
                    Err(UpdateRefused::NotLoaded)
                }
            };
            (slot, attached)
        });
        attached.unwrap_or(Err(UpdateRefused::NotLive))?;
        self.record(
            self.now,
            &key,
            TraceKind::StreamAttached { lifetime, buffered },
        );
        self.set_source(&key, lifetime, StreamStatus::Live);
        self.notify(&key);
        Ok(())
    }

    /// A stream item was skipped (a bad frame): recorded with the reason (R22).
    ///
    /// ```
    /// # use livecache::core::LifetimeId;
    /// use livecache::core::{Cache, CacheKey};
    /// let mut cache: Cache<u32> = Cache::new(Default::default());
    /// cache.stream_skipped(0, &CacheKey::verbatim("a(1)"), LifetimeId(1), "not JSON".into());
    /// assert_eq!(cache.trace().len(), 1);
    /// ```
    pub fn stream_skipped(
        &mut self,
        now: u64,
        key: &CacheKey,
        lifetime: LifetimeId,
        reason: String,
    ) {
        let lifetime = lifetime.0;
        self.advance(now);
        let reason = bound_text(reason);
        self.record(self.now, key, TraceKind::StreamSkipped { lifetime, reason });
    }

    /// A stream attachment ended (R21): recorded with the reason and its counts, whether or not
    /// the entry lives. A live entry's stream status says how it ended (R28): `Ended` when the
    /// stream ended by itself, `Failed` when it failed or its apply function panicked.
    ///
    /// ```
    /// # use livecache::core::LifetimeId;
    /// use livecache::core::{Cache, CacheKey, StreamEnd, StreamEndReason};
    /// let mut cache: Cache<u32> = Cache::new(Default::default());
    /// let end = StreamEnd { reason: StreamEndReason::StreamEnded, applied: 3, skipped: 1 };
    /// cache.stream_ended(0, &CacheKey::verbatim("a(1)"), LifetimeId(1), &end);
    /// assert_eq!(cache.trace().len(), 1);
    /// ```
    pub fn stream_ended(
        &mut self,
        now: u64,
        key: &CacheKey,
        handler: impl Into<HandlerId>,
        end: &StreamEnd,
    ) {
        let handler = handler.into();
        let lifetime = handler.lifetime.0;
        self.advance(now);
        let reason = end.reason.to_string();
        self.record(
            self.now,
            key,
            TraceKind::StreamEnded {
                lifetime,
                reason: bound_text(reason.clone()),
                applied: end.applied,
                skipped: end.skipped,
            },
        );
        let status = match &end.reason {
            StreamEndReason::StreamEnded => StreamStatus::Ended {
                reason: bound_text(reason),
            },
            StreamEndReason::StreamFailed(error) => StreamStatus::Failed {
                error: bound_text(error.clone()),
            },
            StreamEndReason::ApplyPanicked(_) => StreamStatus::Failed {
                error: bound_text(reason),
            },
            _ => return,
        };
        // A stream of a restarted handler no longer speaks for the entry's source (R30).
        if self.entries.key_of_handler(handler) == Some(key) {
            self.set_source(key, lifetime, status);
        }
    }
}
