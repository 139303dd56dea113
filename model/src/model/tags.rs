//! Tags and invalidation (R38), as plainly as possible: an entry provides a set of tags; an
//! invalidation reaches every entry providing a tag it names (a kind alone names all of that
//! kind), in key order: a subscribed one refetches or joins its request, an unsubscribed one is
//! marked to refetch when next subscribed or prefetched.

use livecache::core::{RequestReason, Tag, TraceKind};

use super::Model;
use crate::KeyRef;

/// Whether invalidating `named` reaches an entry providing `provided`, stated here rather than
/// taken from the crate (`Tag::reaches`), so that the model checks it: the same kind, and either
/// no id named or the same id.
fn reaches(named: &Tag, provided: &Tag) -> bool {
    named.kind == provided.kind && (named.id.is_none() || named.id == provided.id)
}

impl Model {
    /// `ProvideTags`: the entry of `key` provides `tags` from now on. Whether it is live.
    pub(super) fn provide_tags(&mut self, key_ref: KeyRef, tags: &[Tag]) -> bool {
        let key = self.config.key(key_ref);
        let Some(entry) = self.entries.get_mut(&key) else {
            return false;
        };
        let mut provided = tags.to_vec();
        provided.sort();
        provided.dedup();
        entry.tags = provided;
        true
    }

    /// `Invalidate`: every entry providing a tag one of `tags` reaches.
    pub(super) fn invalidate(&mut self, tags: &[Tag]) {
        let reached: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.tags.iter().any(|p| tags.iter().any(|t| reaches(t, p))))
            .map(|(k, _)| k.clone())
            .collect();
        for key in reached {
            let Some(entry) = self.entries.get_mut(&key) else {
                continue;
            };
            let subscribed = !entry.subscriptions.is_empty();
            if !subscribed {
                entry.invalidated = true;
            }
            let in_flight = entry.in_flight;
            self.record(&key, TraceKind::Invalidated { subscribed });
            if subscribed {
                match in_flight {
                    Some(request) => self.record(&key, TraceKind::RequestJoined { request }),
                    None => self.start_request(&key, RequestReason::Invalidation),
                }
            }
        }
    }
}
