//! Restarting an entry's lifecycle handler (R30), as plainly as possible.

use livecache::core::{StreamStatus, TraceKind};

use super::{Model, StreamDue};
use crate::KeyRef;

impl Model {
    /// `Restart`: the entry's handler is replaced (R30). Only an entry whose endpoint has a
    /// handler. The new handler's data-loaded resolves at once if the entry has data
    /// (`loaded`). The old handler's stream ends after the op's events; the entry's source was
    /// its, so the stream status goes back to `Idle`; a resync under way is asked again (of
    /// the new source, or by the request in flight, or a new one).
    pub(super) fn restart(&mut self, key_ref: KeyRef) -> bool {
        let key = self.config.key(key_ref);
        if !self.has_lifecycle(key_ref) {
            return false;
        }
        let spec = self.versions(&key);
        let Some(entry) = self.entries.get_mut(&key) else {
            return false;
        };
        entry.handler += 1;
        let (lifetime, generation) = (entry.lifetime, entry.handler);
        let loaded = entry.phase.has_data();
        let stale = entry.live.stale_since.is_some();
        let stream = entry.stream.take();
        self.record(
            &key,
            TraceKind::LifecycleRestarted {
                lifetime,
                generation,
                loaded,
            },
        );
        self.set_source(&key, lifetime, StreamStatus::Idle);
        if let (true, Some(spec)) = (stale, spec) {
            self.resync(&key, lifetime, spec);
        }
        if let Some(stream) = stream {
            self.due.push(StreamDue::Restarted {
                key,
                lifetime,
                stream,
            });
        }
        true
    }
}
